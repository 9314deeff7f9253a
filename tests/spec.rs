//! `explain` shows exactly what runs (issue 16.1): for every built-in profile, in `proxy`
//! mode with a file, an fd and an injected secret, the mounts `explain --json` lists are
//! exactly the mount points of the cell's /proc/self/mountinfo, every Landlock rule it
//! lists is usable in the cell, and every syscall refusal it lists is what the cell's
//! filter answers. A mount (or a rule) that `run` adds behind the compiler's back, or one
//! the compiler lists and `run` leaves out, fails here.
mod common;
use common::*;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;

const PROFILES: &[&str] = &[
    "base", "build", "review", "agent", "codex", "claude", "aider", "gemini",
];

/// Mount points of a mountinfo text (field 5, octal escapes undone).
fn mount_points(mountinfo: &str) -> BTreeSet<String> {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape)
        .collect()
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            out.push(u8::from_str_radix(&s[i + 1..i + 4], 8).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A profile extending `base` in `proxy` mode with one secret of each kind of delivery
/// that adds to the cell (file: a tmpfs; fd: an inherited memfd; inject: the trust
/// bundle). The values live in `vault`, outside the workspace.
fn profile(ws: &Ws, vault: &Ws, base: &str) -> String {
    for n in ["v1", "v2", "v3"] {
        std::fs::write(vault.join(n), format!("spec-test-value-{n}-0123456789")).expect("value");
    }
    let v = vault.path().display();
    let p = ws.join(&format!("spec-{base}.toml"));
    std::fs::write(
        &p,
        format!(
            r#"extends = "{base}"

[network]
mode = "proxy"

[secrets.SPEC_FILE]
from = {{ file = "{v}/v1" }}
deliver = "file"

[secrets.SPEC_FD]
from = {{ file = "{v}/v2" }}
deliver = "fd"
fd = 5

[secrets.SPEC_INJ]
from = {{ file = "{v}/v3" }}
deliver = "inject"
hosts = ["api.test"]
"#
        ),
    )
    .expect("profile");
    p.display().to_string()
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// errno names `explain` uses → numbers.
fn errno(name: &str) -> Option<i32> {
    Some(match name {
        "EPERM" => 1,
        "EACCES" => 13,
        "EINVAL" => 22,
        "ENOTTY" => 25,
        "ENOSYS" => 38,
        "EOPNOTSUPP" => 95,
        "EAFNOSUPPORT" => 97,
        _ => return None,
    })
}

/// The host's mount points (a recursive bind carries the ones below its source along).
fn host_mount_points() -> BTreeSet<String> {
    mount_points(&std::fs::read_to_string("/proc/self/mountinfo").expect("host mountinfo"))
}

/// Whether `point` in the cell is a host submount carried along by a recursive bind.
fn carried(point: &str, mounts: &[Value], host: &BTreeSet<String>) -> bool {
    mounts.iter().any(|m| {
        let (Some(t), Some(src)) = (m["target"].as_str(), m["source"].as_str()) else {
            return false;
        };
        if m["kind"] != "bind" {
            return false;
        }
        let Ok(rest) = Path::new(point).strip_prefix(t) else {
            return false;
        };
        !rest.as_os_str().is_empty()
            && host.contains(&Path::new(src).join(rest).display().to_string())
    })
}

fn check(base: &str) {
    let ws = Ws::new();
    let vault = Ws::new();
    let prof = profile(&ws, &vault, base);
    let pd = Path::new(probe())
        .parent()
        .expect("probe dir")
        .display()
        .to_string();
    let cell_args = ["-p", prof.as_str(), "--read", pd.as_str()];
    let mut args = vec!["explain", "--json"];
    args.extend_from_slice(&cell_args);
    let explained: Value =
        serde_json::from_str(&ok(&taskcell(ws.path(), &args).output().expect("explain")))
            .expect("explain --json is JSON");
    let mounts = explained["mounts"].as_array().expect("mounts").clone();
    for m in &mounts {
        for k in ["kind", "target", "source", "options"] {
            assert!(m.get(k).is_some(), "{base}: mount without {k}: {m}");
        }
    }
    let rules: Vec<(String, String)> = explained["landlock"]["fs"]
        .as_array()
        .map(|v| {
            v.iter()
                .map(|r| {
                    (
                        r["path"].as_str().expect("path").to_string(),
                        r["class"].as_str().expect("class").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let mut script = String::from("cat /proc/self/mountinfo; echo @@landlock\n");
    for (p, class) in &rules {
        let q = quote(p);
        // Use each rule as its class allows (open for reading; list a directory).
        let _ = class;
        script.push_str(&format!(
            "if [ ! -e {q} ]; then echo absent {q}; elif [ -d {q} ]; then ls -a {q} >/dev/null 2>&1 && echo ok {q} || echo denied {q}; elif [ -c {q} ]; then echo ok {q}; else head -c 0 {q} 2>/dev/null && echo ok {q} || echo denied {q}; fi\n"
        ));
    }
    script.push_str(&format!("echo @@seccomp; {} denied\n", quote(probe())));
    let mut run = vec!["run"];
    run.extend_from_slice(&cell_args);
    run.extend_from_slice(&["--", "/bin/sh", "-c", &script]);
    let out = ok(&taskcell(ws.path(), &run).output().expect("run"));
    let (mountinfo, rest) = out.split_once("@@landlock\n").expect("mountinfo section");
    let (landlock_out, seccomp_out) = rest.split_once("@@seccomp\n").expect("sections");

    // Mounts: what explain lists is what the cell has, and nothing else.
    let actual = mount_points(mountinfo);
    let mut listed: BTreeSet<String> = BTreeSet::from(["/".to_string()]);
    let mut if_present = BTreeSet::new();
    for m in &mounts {
        let kind = m["kind"].as_str().expect("kind");
        if kind == "symlink" || kind == "remount" {
            continue;
        }
        let t = m["target"].as_str().expect("target").to_string();
        let opts = m["options"].as_array().expect("options");
        if opts.iter().any(|o| o == "if-present") {
            if_present.insert(t);
        } else {
            listed.insert(t);
        }
    }
    for t in &listed {
        assert!(
            actual.contains(t),
            "{base}: explain lists a mount at {t} that the cell does not have\ncell: {actual:?}"
        );
    }
    let host = host_mount_points();
    for a in &actual {
        assert!(
            listed.contains(a) || if_present.contains(a) || carried(a, &mounts, &host),
            "{base}: the cell has a mount at {a} that explain does not list\nexplain: {listed:?}"
        );
    }
    for t in [
        "/run/taskcell/taskcell",
        "/run/taskcell/ca-certificates.crt",
        "/run/secrets",
    ] {
        assert!(
            listed.contains(t),
            "{base}: {t} missing from explain: {listed:?}"
        );
    }

    // Landlock: every rule explain lists is usable in the cell.
    for (p, _) in &rules {
        let q = quote(p);
        assert!(
            !landlock_out.contains(&format!("denied {q}\n")),
            "{base}: explain's Landlock rule for {p} does not hold in the cell:\n{landlock_out}"
        );
    }
    assert!(
        rules.is_empty()
            || landlock_out
                .lines()
                .filter(|l| l.starts_with("ok "))
                .count()
                >= 5,
        "{base}: {landlock_out}"
    );

    // Seccomp: every unconditional refusal explain lists that the probe can make is
    // answered with the errno explain names.
    let got: BTreeMap<&str, i32> = seccomp_out
        .lines()
        .filter_map(|l| {
            let (n, e) = l.split_once(' ')?;
            Some((n, e.trim().parse().ok()?))
        })
        .collect();
    let mut compared = 0;
    for line in explained["seccomp"].as_array().expect("seccomp") {
        let line = line.as_str().expect("line");
        let Some((name, rest)) = line.split_once(" -> ") else {
            continue;
        };
        let Some(e) = rest.split_whitespace().next().and_then(errno) else {
            continue;
        };
        if let Some(g) = got.get(name) {
            assert_eq!(
                *g, e,
                "{base}: explain says {line:?}; the cell's filter gave {g}"
            );
            compared += 1;
        }
    }
    assert!(
        compared >= 10,
        "{base}: only {compared} refusals compared:\n{seccomp_out}"
    );
}

#[test]
fn explain_lists_exactly_the_mounts_rules_and_filter_of_every_builtin_profile() {
    for p in PROFILES {
        check(p);
    }
}
