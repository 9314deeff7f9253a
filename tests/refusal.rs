//! A machine without user namespaces: `run` refuses with a clear reason, `doctor` says why.
//!
//! These run only inside a user namespace whose `user.max_user_namespaces` is 0, which
//! .ci/run sets up (`unshare -Ur` + writing the sysctl there; the limit is per namespace
//! and leaves the machine alone). Run them with `--ignored` there.

mod common;
use common::*;

fn assert_no_userns_here() {
    let v = std::fs::read_to_string("/proc/sys/user/max_user_namespaces").unwrap_or_default();
    assert_eq!(
        v.trim(),
        "0",
        "these tests must run where user.max_user_namespaces is 0 (see .ci/run)"
    );
}

#[test]
#[ignore = "run by .ci/run inside a namespace with user.max_user_namespaces=0"]
fn run_refuses_with_a_clear_reason() {
    assert_no_userns_here();
    let ws = Ws::new();
    let o = taskcell(
        ws.path(),
        &["run", "-p", "build", "--", "/bin/sh", "-c", "touch ran"],
    )
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("user.max_user_namespaces is 0"), "{e}");
    assert!(e.contains("taskcell doctor"), "{e}");
    // One line of refusal (warnings, e.g. about limits, may precede it).
    let refusal: Vec<&str> = e
        .lines()
        .filter(|l| !l.starts_with("taskcell: warning"))
        .collect();
    assert_eq!(refusal.len(), 1, "{e}");
    assert!(!ws.join("ran").exists(), "the command must not have run");
}

#[test]
#[ignore = "run by .ci/run inside a namespace with user.max_user_namespaces=0"]
fn doctor_reports_the_missing_user_namespaces() {
    assert_no_userns_here();
    let ws = Ws::new();
    let o = taskcell(ws.path(), &["doctor"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    let line = out
        .lines()
        .find(|l| l.contains("user namespaces") && !l.contains("(mount"))
        .unwrap_or_default()
        .to_string();
    assert!(line.starts_with("FAIL"), "{out}");
    assert!(line.contains("user.max_user_namespaces is 0"), "{out}");
    assert!(out.contains("cannot start cells here"), "{out}");
}
