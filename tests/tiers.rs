//! Tiers (issue 17): `doctor`, `explain` and the audit log name the tier this machine
//! gives; `require` / `--require` accept a lower one explicitly. The container tier
//! itself is tested where user namespaces are off (tests/no_userns.rs, run by .ci/run).
mod common;
use common::*;

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).expect("JSON")
}

fn records(log: &std::path::Path, event: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log)
        .expect("audit log")
        .lines()
        .map(json)
        .filter(|v| v["event"] == event)
        .collect()
}

/// This machine has user namespaces (the full tier), like every machine the suite runs
/// on outside .ci/run's no-userns step.
#[test]
fn doctor_names_the_full_tier_here() {
    let ws = Ws::new();
    let o = taskcell(ws.path(), &["doctor"]).output().expect("doctor");
    let out = stdout(&o);
    assert!(
        out.contains("\ntier: full (namespaces, Landlock, seccomp)"),
        "{out}"
    );
    let o = taskcell(ws.path(), &["doctor", "--json"])
        .output()
        .expect("doctor");
    let v = json(&stdout(&o));
    assert_eq!(v["tier"]["tier"], "full", "{v}");
    assert_eq!(v["tier"]["userns"], true, "{v}");
}

#[test]
fn session_start_and_end_record_the_tier() {
    let ws = Ws::new();
    let log = ws.outside("audit.jsonl");
    let o = sh(
        ws.path(),
        "build",
        &["--audit-log", &log.display().to_string()],
        "echo ran",
    );
    assert_eq!(ok(&o), "ran\n");
    let start = &records(&log, "session_start")[0];
    assert_eq!(start["tier"], "full", "{start}");
    assert_eq!(start["tier_required"], "full", "{start}");
    let end = &records(&log, "session_end")[0];
    assert_eq!(end["tier"], "full", "{end}");
}

#[test]
fn explain_shows_the_tier_and_what_is_required() {
    let ws = Ws::new();
    let o = taskcell(ws.path(), &["explain", "-p", "build"])
        .output()
        .expect("explain");
    let out = ok(&o);
    assert!(
        out.contains("tier: this machine gives `full`; the plan requires `full` (run starts here)"),
        "{out}"
    );
    for (args, want) in [
        (vec!["--require", "container"], "container"),
        (vec!["--best-effort"], "none"),
        (vec!["--require", "none"], "none"),
    ] {
        let mut a = vec!["explain", "--json", "-p", "build"];
        a.extend(args);
        let v = json(&ok(&taskcell(ws.path(), &a).output().expect("explain")));
        assert_eq!(v["tier_required"], want, "{a:?}");
        assert_eq!(v["tier"]["tier"], "full");
    }
}

#[test]
fn require_in_a_profile_and_a_bad_tier() {
    let ws = Ws::new();
    let prof = ws.outside("p.toml");
    std::fs::write(
        &prof,
        "extends = \"build\"\n[security]\nrequire = \"container\"\n",
    )
    .expect("profile");
    let p = prof.display().to_string();
    let v = json(&ok(&taskcell(ws.path(), &["explain", "--json", "-p", &p])
        .output()
        .expect("explain")));
    assert_eq!(v["tier_required"], "container");
    std::fs::write(
        &prof,
        "extends = \"build\"\n[security]\nrequire = \"partial\"\n",
    )
    .expect("profile");
    let o = taskcell(ws.path(), &["run", "-p", &p, "--", "true"])
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(125));
    let e = stderr(&o);
    assert!(
        e.contains("line 3") && e.contains("security.require"),
        "{e}"
    );
    let o = taskcell(ws.path(), &["run", "--require", "partial", "--", "true"])
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("is not a tier"), "{}", stderr(&o));
}
