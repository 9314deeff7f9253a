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

/// `taskcell ARGS` under a seccomp filter that refuses what a runtime refuses
/// (taskcell-probe without-landlock / without-newcgroup: gVisor's answers).
fn under(what: &str, ws: &Ws, args: &[&str]) -> std::process::Output {
    let plain = taskcell(ws.path(), &[]);
    let mut c = std::process::Command::new(probe());
    c.current_dir(ws.path()).env_clear();
    for (k, v) in plain.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    c.arg(what)
        .arg(bin())
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("taskcell under a runtime's filter")
}

/// gVisor: Landlock answers ENOSYS. doctor and run say so and which tier remains
/// (`none`: the namespaces and seccomp, with --best-effort).
#[test]
fn landlock_enosys_leaves_the_none_tier_and_says_so() {
    let ws = Ws::new();
    let o = under("without-landlock", &ws, &["doctor"]);
    let out = stdout(&o);
    assert!(out.contains("\ntier: none"), "{out}");
    assert!(out.contains("ENOSYS"), "{out}");
    assert!(out.contains("gVisor"), "{out}");
    let o = under(
        "without-landlock",
        &ws,
        &["run", "-p", "build", "--", "true"],
    );
    assert_eq!(o.status.code(), Some(125));
    let e = stderr(&o);
    assert!(e.contains("gives the `none` tier"), "{e}");
    assert!(e.contains("ENOSYS"), "{e}");
    assert!(e.contains("--best-effort"), "{e}");
    let o = under(
        "without-landlock",
        &ws,
        &[
            "run",
            "-p",
            "build",
            "--best-effort",
            "--",
            "/bin/sh",
            "-c",
            "echo ran; hostname",
        ],
    );
    assert_eq!(ok(&o), "ran\ntaskcell\n", "{}", stderr(&o));
    assert!(
        stderr(&o).contains("landlock is not enforced"),
        "{}",
        stderr(&o)
    );
}

/// gVisor without a cgroup2 mount: clone with CLONE_NEWCGROUP fails with EINVAL; the
/// cell goes without a cgroup namespace, everything else as before.
#[test]
fn clone_newcgroup_einval_runs_the_full_tier_without_a_cgroup_namespace() {
    let ws = Ws::new();
    let o = under(
        "without-newcgroup",
        &ws,
        &[
            "run",
            "-p",
            "build",
            "--",
            "/bin/sh",
            "-c",
            "echo ran; hostname; readlink /proc/self/ns/cgroup",
        ],
    );
    let out = ok(&o);
    let mine = std::fs::read_link("/proc/self/ns/cgroup").expect("cgroup ns");
    assert_eq!(
        out,
        format!("ran\ntaskcell\n{}\n", mine.display()),
        "{}",
        stderr(&o)
    );
    let o = under("without-newcgroup", &ws, &["doctor"]);
    let out = stdout(&o);
    assert!(out.contains("all but the cgroup namespace"), "{out}");
    assert!(out.contains("\ntier: full"), "{out}");
}

/// A policy that allows the cell's clone but refuses the network namespace (made by a
/// thread of init, after the clone) counts as a refused clone: a strict plan stops
/// naming it and the tier it could run in; `--require container` runs there instead.
#[test]
fn a_refused_network_namespace_is_a_refused_clone() {
    use seccompiler::{BpfProgram, SeccompAction, SeccompFilter};
    use std::os::unix::process::CommandExt;
    // unshare(2) fails with EPERM; everything else is allowed.
    let filter = SeccompFilter::new(
        [(libc::SYS_unshare, vec![])].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        std::env::consts::ARCH.try_into().expect("arch"),
    )
    .expect("filter");
    let prog: BpfProgram = filter.try_into().expect("compile");
    let under_filter = |args: &[&str]| {
        let ws = Ws::new();
        let mut c = taskcell(ws.path(), args);
        let p = prog.clone();
        // SAFETY: between fork and exec only prctl and seccomp are called (no
        // allocation: the program was built before the fork).
        unsafe {
            c.pre_exec(move || {
                seccompiler::apply_filter(&p).map_err(|e| std::io::Error::other(e.to_string()))
            });
        }
        c.output().expect("taskcell")
    };
    let o = under_filter(&["run", "-p", "build", "--", "echo", "ran"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(125), "{err}");
    assert!(err.contains("network namespace"), "{err}");
    assert!(
        err.contains("without namespaces this machine gives"),
        "{err}"
    );
    assert!(!stdout(&o).contains("ran"), "{}", stdout(&o));
    let o = under_filter(&[
        "run",
        "-p",
        "build",
        "--require",
        "container",
        "--",
        "echo",
        "ran",
    ]);
    assert_eq!(stdout(&o).trim(), "ran", "{}", stderr(&o));
    assert!(stderr(&o).contains("container tier"), "{}", stderr(&o));
}
