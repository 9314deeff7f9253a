//! The import graph runs one way (issue 16.2): no cycle between the top-level modules
//! (folders and files of src/), the mechanism never imports the profile, the audit log
//! never imports the supervisor, the pure layers never import the mechanism. Read from
//! the sources (`crate::NAME` paths outside test modules), so a new import that breaks
//! the layering fails here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module → the top-level modules it names.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut stack = vec![src.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("reading src") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n != "bin") {
                    stack.push(p);
                }
                continue;
            }
            let rel = p.strip_prefix(&src).expect("below src");
            let name = rel.to_string_lossy();
            if !name.ends_with(".rs") || name == "lib.rs" || name == "main.rs" {
                continue;
            }
            if rel.file_name().is_some_and(|n| n == "tests.rs") {
                continue;
            }
            let top = rel
                .components()
                .next()
                .expect("component")
                .as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string();
            let text = std::fs::read_to_string(&p).expect("reading a source");
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            let edges = g.entry(top.clone()).or_default();
            for line in code.lines() {
                let line = line.split("//").next().unwrap_or("");
                for (i, _) in line.match_indices("crate::") {
                    let rest = &line[i + 7..];
                    let m: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if !m.is_empty() && m != top && m.chars().all(|c| !c.is_ascii_uppercase()) {
                        edges.insert(m);
                    }
                }
                // `use crate::{a::X, b}`
                if let Some(rest) = line.trim().strip_prefix("use crate::{") {
                    for part in rest.split(',') {
                        let m = part.trim().split("::").next().unwrap_or("").trim();
                        if !m.is_empty()
                            && m != top
                            && m.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                        {
                            edges.insert(m.to_string());
                        }
                    }
                }
            }
        }
    }
    g
}

fn reaches(g: &BTreeMap<String, BTreeSet<String>>, from: &str, to: &str) -> Option<Vec<String>> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![vec![from.to_string()]];
    while let Some(path) = stack.pop() {
        let last = path.last().expect("path").clone();
        for n in g.get(&last).into_iter().flatten() {
            if n == to {
                let mut p = path.clone();
                p.push(n.clone());
                return Some(p);
            }
            if seen.insert(n.clone()) {
                let mut p = path.clone();
                p.push(n.clone());
                stack.push(p);
            }
        }
    }
    None
}

#[test]
fn no_cycle_between_top_level_modules() {
    let g = graph();
    assert!(g.contains_key("spec") && g.contains_key("cell"), "{g:?}");
    for m in g.keys() {
        if let Some(p) = reaches(&g, m, m) {
            panic!("import cycle: {}", p.join(" → "));
        }
    }
}

#[test]
fn mechanism_never_imports_policy_it_should_not() {
    let g = graph();
    let no = |from: &str, to: &str| {
        assert!(
            !g.get(from).is_some_and(|e| e.contains(to)),
            "{from} imports {to}: {:?}",
            g.get(from)
        )
    };
    for m in ["cell", "net", "secrets", "tty", "audit", "outcome"] {
        no(m, "profile");
        no(m, "supervisor");
        no(m, "explain");
    }
    for m in ["profile", "plan", "spec"] {
        for mech in ["cell", "net", "secrets", "tty", "supervisor", "audit"] {
            if m == "plan" && mech == "tty" {
                // Context::from_process asks whether stdio is a terminal.
                continue;
            }
            no(m, mech);
        }
    }
    assert!(
        g.get("profile").is_some_and(|e| e.is_empty()),
        "profile: {:?}",
        g.get("profile")
    );
}
