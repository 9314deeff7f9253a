//! A machine without user namespaces. CI runs these (with --ignored) inside
//! `unshare -Ur sh -c 'echo 0 > /proc/sys/user/max_user_namespaces; ...'`; elsewhere they
//! are ignored, since they need that limit.
mod common;
use common::*;

const EPERM: i32 = 1;

#[test]
#[ignore = "run by .ci/run with user.max_user_namespaces=0"]
fn strict_run_refuses_with_125_and_says_why() {
    require_no_userns();
    let ws = Ws::new();
    let o = sh(ws.path(), "build", &[], "echo should-not-run");
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert_eq!(stdout(&o), "");
    let e = stderr(&o);
    assert!(e.contains("user.max_user_namespaces is 0"), "{e}");
    assert!(e.contains("sysctl -w user.max_user_namespaces"), "{e}");
    assert!(e.contains("--best-effort"), "{e}");
}

#[test]
#[ignore = "run by .ci/run with user.max_user_namespaces=0"]
fn doctor_fails_on_userns_and_names_what_is_lost() {
    require_no_userns();
    let ws = Ws::new();
    let o = taskcell(ws.path(), &["doctor"]).output().expect("doctor");
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(
        out.lines()
            .any(|l| l.starts_with("FAIL") && l.contains("user namespaces")),
        "{out}"
    );
    assert!(out.contains("--best-effort"), "{out}");
    assert!(out.contains("process isolation"), "{out}");
}

#[test]
#[ignore = "run by .ci/run with user.max_user_namespaces=0"]
fn best_effort_runs_and_records_the_missing_layer() {
    require_no_userns();
    let ws = Ws::new();
    let log = ws.outside("audit.jsonl");
    let o = sh(
        ws.path(),
        "build",
        &["--best-effort", "--audit-log", &log.display().to_string()],
        "echo ran; test -d \"$TMPDIR\" && echo tmp > \"$TMPDIR/x\" && cat \"$TMPDIR/x\"",
    );
    assert_eq!(ok(&o), "ran\ntmp\n");
    let e = stderr(&o);
    let lines: Vec<&str> = e.lines().filter(|l| l.contains("best effort")).collect();
    assert_eq!(lines.len(), 1, "{e}");
    assert!(lines[0].contains("userns"), "{e}");
    let audit = std::fs::read_to_string(&log).expect("audit log");
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"layer_missing\"") && l.contains("userns")),
        "{audit}"
    );
}

#[test]
#[ignore = "run by .ci/run with user.max_user_namespaces=0"]
fn landlock_denies_a_read_outside_the_plan() {
    require_no_userns();
    let ws = Ws::new();
    let outside = tempfile::Builder::new()
        .prefix("taskcell-outside-")
        .tempdir_in("/tmp")
        .expect("outside dir");
    let secret = outside.path().join("secret");
    std::fs::write(&secret, "top secret\n").expect("secret");
    std::fs::write(ws.join("inside"), "inside\n").expect("inside");
    let script = format!(
        "cat inside; cat {} || echo refused; ls /tmp >/dev/null 2>&1 || echo tmp-refused; cat /etc/shadow >/dev/null 2>&1 || echo shadow-refused; head -c 4 /etc/passwd; echo",
        secret.display()
    );
    let o = sh(ws.path(), "build", &["--best-effort"], &script);
    assert_eq!(
        ok(&o),
        "inside\nrefused\ntmp-refused\nshadow-refused\nroot\n"
    );
    assert!(stderr(&o).contains("Permission denied"), "{}", stderr(&o));
}

#[test]
#[ignore = "run by .ci/run with user.max_user_namespaces=0"]
fn signal_to_a_process_outside_the_cell_is_refused() {
    require_no_userns();
    let ws = Ws::new();
    // Same uid, visible (no PID namespace): only Landlock's signal scope stops it.
    let mut victim = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("sleep");
    let pid = victim.id().to_string();
    let pd = probe_dir();
    let o = taskcell(
        ws.path(),
        &[
            "run",
            "--best-effort",
            "--read",
            &pd,
            "--",
            probe(),
            "kill",
            &pid,
            "15",
        ],
    )
    .output()
    .expect("taskcell");
    assert_eq!(ok(&o), format!("{EPERM}\n"));
    assert!(
        victim.try_wait().expect("try_wait").is_none(),
        "the victim was killed"
    );
    let _ = victim.kill();
    let _ = victim.wait();
}

#[test]
#[ignore = "run by .ci/run with user.max_user_namespaces=0"]
fn seccomp_still_refuses_without_namespaces() {
    require_no_userns();
    let ws = Ws::new();
    let pd = probe_dir();
    let o = taskcell(
        ws.path(),
        &[
            "run",
            "--best-effort",
            "--read",
            &pd,
            "--",
            probe(),
            "sys",
            "mount",
            "ptrace",
            "unshare",
            "io_uring_setup",
            "ioctl-tiocsti",
            "socket-packet",
            "clone3",
            "getppid",
        ],
    )
    .output()
    .expect("taskcell");
    assert_eq!(
        ok(&o),
        "mount 1\nptrace 1\nunshare 1\nio_uring_setup 1\nioctl-tiocsti 1\nsocket-packet 1\nclone3 38\ngetppid 0\n"
    );
}

#[test]
#[ignore = "run by .ci/run with user.max_user_namespaces=0"]
fn ordinary_work_without_namespaces() {
    require_no_userns();
    let ws = Ws::new();
    std::fs::write(ws.join("Makefile"), "all:\n\techo made > made.txt\n").expect("Makefile");
    let script = r#"set -e
git init -q repo && cd repo
git config user.email t@example.invalid && git config user.name t
echo hello > a.txt && git add a.txt && git commit -qm first && git log --oneline | wc -l
cd ..
make -s && cat made.txt
tar cf out.tar repo/a.txt && tar tf out.tar
find . -name a.txt
t=$(mktemp) && echo tmp-ok > "$t" && cat "$t"
"#;
    for profile in ["build", "agent"] {
        // The agent profile's proxy needs a network namespace; without one, no network.
        let o = sh(
            ws.path(),
            profile,
            &["--best-effort", "--net", "none"],
            &format!("rm -rf repo; {script}"),
        );
        assert_eq!(
            ok(&o),
            "1\nmade\nrepo/a.txt\n./repo/a.txt\ntmp-ok\n",
            "profile {profile}"
        );
    }
}

#[test]
#[ignore = "run by .ci/run with user.max_user_namespaces=0"]
fn background_processes_die_with_the_command() {
    require_no_userns();
    let ws = Ws::new();
    let o = sh(
        ws.path(),
        "build",
        &["--best-effort"],
        "(sleep 300 & echo $! > bg.pid); echo started",
    );
    assert_eq!(ok(&o), "started\n");
    let pid: i32 = std::fs::read_to_string(ws.join("bg.pid"))
        .expect("bg.pid")
        .trim()
        .parse()
        .expect("pid");
    // The orphan was re-parented to the cell's init and killed when the command ended.
    let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false);
    assert!(!alive, "background process {pid} outlived the cell");
}

#[test]
#[ignore = "run by .ci/run with user.max_user_namespaces=0"]
fn best_effort_a_sigkilled_taskcell_leaves_no_command_running() {
    require_no_userns();
    let ws = Ws::new();
    let mut c = taskcell(
        ws.path(),
        &[
            "run",
            "-p",
            "build",
            "--best-effort",
            "--",
            "/bin/sh",
            "-c",
            "echo $$; exec sleep 60",
        ],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::null())
    .spawn()
    .expect("taskcell");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(c.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    let cmd: i32 = line.trim().parse().expect("the command's pid");
    // SIGKILL to taskcell's exact pid: nothing of it can clean up.
    c.kill().unwrap();
    c.wait().unwrap();
    let gone = (0..200).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(10));
        let st = std::fs::read_to_string(format!("/proc/{cmd}/stat")).unwrap_or_default();
        st.is_empty() || st.contains(") Z")
    });
    assert!(gone, "the command {cmd} survived its SIGKILLed taskcell");
}

#[test]
#[ignore = "run by .ci/run with user.max_user_namespaces=0"]
fn doctor_names_the_container_tier_and_how_to_get_full() {
    require_no_userns();
    let ws = Ws::new();
    let o = taskcell(ws.path(), &["doctor"]).output().expect("doctor");
    let out = stdout(&o);
    assert!(out.contains("\ntier: container"), "{out}");
    assert!(out.contains("why: no user namespaces"), "{out}");
    assert!(
        out.contains("to get full: Kubernetes: `hostUsers: false`"),
        "{out}"
    );
    assert!(out.contains("CLONE_NEWUSER"), "{out}");
    assert!(
        out.contains("kernel.apparmor_restrict_unprivileged_userns"),
        "{out}"
    );
    let o = taskcell(ws.path(), &["doctor", "--json"])
        .output()
        .expect("doctor");
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(v["tier"]["tier"], "container", "{v}");
}

#[test]
#[ignore = "run by .ci/run with user.max_user_namespaces=0"]
fn strict_refusal_names_the_tier_and_require_container_runs() {
    require_no_userns();
    let ws = Ws::new();
    let o = sh(ws.path(), "build", &[], "echo should-not-run");
    assert_eq!(o.status.code(), Some(125));
    let e = stderr(&o);
    assert!(e.contains("gives the `container` tier"), "{e}");
    assert!(e.contains("--require container"), "{e}");
    let log = ws.outside("audit.jsonl");
    let o = sh(
        ws.path(),
        "build",
        &[
            "--require",
            "container",
            "--audit-log",
            &log.display().to_string(),
        ],
        "echo ran",
    );
    assert_eq!(ok(&o), "ran\n");
    let audit = std::fs::read_to_string(&log).expect("audit log");
    let start = audit
        .lines()
        .find(|l| l.contains("\"session_start\""))
        .expect("session_start");
    assert!(start.contains("\"tier\":\"container\""), "{start}");
    assert!(start.contains("\"tier_required\":\"container\""), "{start}");
    let end = audit
        .lines()
        .find(|l| l.contains("\"session_end\""))
        .expect("session_end");
    assert!(end.contains("\"tier\":\"container\""), "{end}");
}

#[test]
#[ignore = "run by .ci/run with user.max_user_namespaces=0"]
fn explain_shows_the_container_tiers_filter_rules_and_no_mounts() {
    require_no_userns();
    let ws = Ws::new();
    let json = |args: &[&str]| -> serde_json::Value {
        let o = taskcell(ws.path(), args).output().expect("explain");
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_str(&stdout(&o)).expect("explain --json")
    };
    let has = |v: &serde_json::Value, what: &str| {
        v["seccomp"]
            .as_array()
            .expect("seccomp lines")
            .iter()
            .any(|l| l.as_str().unwrap_or_default().starts_with(what))
    };
    // What `run --require container` executes here: no mounts, the supervisor's connect.
    let c = json(&["explain", "-p", "agent", "--require", "container", "--json"]);
    assert_eq!(c["mounts"].as_array().map(Vec::len), Some(0), "{c}");
    assert!(has(&c, "connect -> the supervisor"), "{c}");
    assert!(has(&c, "sendto if arg3 has MSG_FASTOPEN"), "{c}");
    // Strict (the full tier, refused here): the spec with namespaces, as on a full host.
    let f = json(&["explain", "-p", "agent", "--json"]);
    assert!(!f["mounts"].as_array().expect("mounts").is_empty(), "{f}");
    assert!(!has(&f, "connect"), "{f}");
}
