//! Every ending is clean: no panic on any input, bounded inputs, signals at any moment,
//! an absolute timeout, no harm to another cell. Each test is written as the attack.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// `taskcell run -p PROFILE --audit-log LOG -- ARGV...` in `ws`, its output piped.
fn run_logged(
    ws: &std::path::Path,
    profile: &str,
    log: &std::path::Path,
    argv: &[&str],
) -> std::process::Command {
    let log = log.to_str().expect("a UTF-8 path");
    let mut args = vec!["run", "-p", profile, "--audit-log", log, "--"];
    args.extend_from_slice(argv);
    let mut c = taskcell(ws, &args);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

/// The first line the command of `c` writes (the `echo up` of a command that runs).
fn first_line(c: &mut Child) -> String {
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(c.stdout.as_mut().expect("stdout piped")),
        &mut line,
    )
    .expect("reading the command's first line");
    line
}

/// Wait for `c` at most `limit`; kill it and fail when it takes longer.
#[track_caller]
fn wait_bounded(mut c: Child, limit: Duration, what: &str) -> std::process::Output {
    let t = Instant::now();
    loop {
        match c.try_wait() {
            Ok(Some(_)) => return c.wait_with_output().expect("collecting output"),
            Ok(None) if t.elapsed() < limit => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = c.kill();
                let o = c.wait_with_output().expect("collecting output");
                panic!(
                    "{what}: still running after {limit:?}\nstderr:\n{}",
                    stderr(&o)
                );
            }
        }
    }
}

#[track_caller]
fn assert_one_line_error(o: &std::process::Output, code: i32, what: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "{what}: {err}");
    assert!(!err.contains("panicked"), "{what} panicked: {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "{what}: not one line: {err}"
    );
}

#[test]
fn huge_timeouts_and_sizes_on_the_command_line_are_one_line_usage_errors() {
    let ws = Ws::new();
    for args in [
        &["--timeout", "99999999999999999999d"][..],
        &["--timeout", "200000000000000d"],
        &["--timeout", "366d"],
        &["--memory", "99999999999999999999T"],
        &["--file-size", "2000T"],
        &["--processes", "99999999999999999999"],
        &["--cpu", "1e308"],
    ] {
        let mut a = vec!["run", "-p", "base"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["--", "/bin/true"]);
        let o = taskcell(ws.path(), &a).output().unwrap();
        let err = stderr(&o);
        // clap's usage error: exit 2, one error line plus its usage hint, no panic.
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(
            err.contains("maximum") || err.contains("too many"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn a_huge_grace_or_timeout_in_a_profile_is_refused_by_check() {
    let ws = Ws::new();
    for (key, val) in [
        ("grace", "99999999999d"),
        ("timeout", "200000000000000d"),
        ("timeout", "1e309"),
        ("memory", "\"9999999T\""),
    ] {
        let val = if val.starts_with('"') {
            val.to_string()
        } else {
            format!("{val:?}")
        };
        let p = ws.join("big.toml");
        std::fs::write(&p, format!("extends = \"base\"\n[limits]\n{key} = {val}\n")).unwrap();
        let o = taskcell(ws.path(), &["check", p.to_str().unwrap()])
            .output()
            .unwrap();
        assert_one_line_error(&o, 1, key);
        let o = taskcell(
            ws.path(),
            &["run", "-p", p.to_str().unwrap(), "--", "/bin/true"],
        )
        .output()
        .unwrap();
        assert_one_line_error(&o, 125, key);
    }
}

#[test]
fn a_profile_from_a_device_a_fifo_or_a_huge_file_is_refused_at_once() {
    let ws = Ws::new();
    // -p /dev/zero read 4.7 GB before.
    let c = taskcell(ws.path(), &["run", "-p", "/dev/zero", "--", "/bin/true"])
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let o = wait_bounded(c, Duration::from_secs(20), "-p /dev/zero");
    assert_one_line_error(&o, 125, "/dev/zero");
    assert!(stderr(&o).contains("device"), "{}", stderr(&o));

    // An `extends` to a FIFO hung forever (nobody ever writes to it).
    let fifo = ws.join("parent.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let child = ws.join("child.toml");
    std::fs::write(&child, format!("extends = {:?}\n", fifo.to_str().unwrap())).unwrap();
    let c = taskcell(ws.path(), &["check", child.to_str().unwrap()])
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let o = wait_bounded(c, Duration::from_secs(20), "extends a FIFO");
    assert_one_line_error(&o, 1, "FIFO");
    assert!(stderr(&o).contains("FIFO"), "{}", stderr(&o));

    // A regular file above 1 MiB, even when it is valid TOML (a comment).
    let big = ws.join("big.toml");
    let mut f = std::fs::File::create(&big).unwrap();
    f.write_all(b"extends = \"base\"\n").unwrap();
    f.write_all(&vec![b'#'; 1 << 20]).unwrap();
    drop(f);
    std::fs::set_permissions(&big, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = taskcell(ws.path(), &["check", big.to_str().unwrap()])
        .output()
        .unwrap();
    assert_one_line_error(&o, 1, "1 MiB");
    assert!(stderr(&o).contains("1024 KiB"), "{}", stderr(&o));
}

fn alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

/// Wait until `path` exists (a marker a process of the test writes), at most 20 s.
#[track_caller]
fn wait_for_file(path: &std::path::Path) -> String {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(20) {
        if let Ok(s) = std::fs::read_to_string(path) {
            if s.ends_with('\n') {
                return s;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("{} did not appear", path.display());
}

fn session_end(log: &std::path::Path) -> Option<serde_json::Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "session_end")
}

/// A profile with two secrets: A (fetched at once, revoked into `aux/revoked-A`) and,
/// with `slow_b`, B, whose provider writes its pid and sleeps.
fn two_secrets(ws: &Ws, aux: &Ws, slow_b: bool, extra: &str) -> std::path::PathBuf {
    let a = aux.path().display();
    let mut t = format!(
        "extends = \"base\"\n[limits]\ngrace = \"1s\"\n\
         [secrets.A]\nfrom = {{ command = [\"sh\", \"-c\", \"touch {a}/fetched-A; echo tok_5e1f0a9c77d24b31\"] }}\n\
         revoke = [\"sh\", \"-c\", \"cat > {a}/revoked-A.tmp && mv {a}/revoked-A.tmp {a}/revoked-A\"]\n"
    );
    if slow_b {
        t.push_str(&format!(
            "[secrets.B]\nfrom = {{ command = [\"sh\", \"-c\", \"echo $$ > {a}/b.pid; exec sleep 60\"] }}\n"
        ));
    }
    t.push_str(extra);
    let p = ws.join("two.toml");
    std::fs::write(&p, t).unwrap();
    p
}

const STOPPING: &[(i32, &str)] = &[
    (libc::SIGINT, "SIGINT"),
    (libc::SIGTERM, "SIGTERM"),
    (libc::SIGHUP, "SIGHUP"),
    (libc::SIGQUIT, "SIGQUIT"),
    (libc::SIGALRM, "SIGALRM"),
    (libc::SIGUSR2, "SIGUSR2"),
    (libc::SIGXCPU, "SIGXCPU"),
    (libc::SIGABRT, "SIGABRT"),
];

#[test]
fn a_signal_while_a_later_provider_runs_kills_it_and_revokes_the_first_secret() {
    let ws = Ws::new();
    let aux = Ws::new();
    let log = aux.join("audit.jsonl");
    let prof = two_secrets(&ws, &aux, true, "");
    for &(sig, name) in STOPPING {
        for f in ["fetched-A", "revoked-A", "b.pid", "audit.jsonl"] {
            let _ = std::fs::remove_file(aux.join(f));
        }
        let c = run_logged(ws.path(), prof.to_str().unwrap(), &log, &["/bin/true"])
            .spawn()
            .unwrap();
        let launcher = c.id() as i32;
        let provider: i32 = wait_for_file(&aux.join("b.pid")).trim().parse().unwrap();
        // The exact pid of taskcell, not of a shell around it.
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(launcher),
            nix::sys::signal::Signal::try_from(sig).unwrap(),
        )
        .unwrap();
        let o = wait_bounded(c, Duration::from_secs(20), name);
        assert_eq!(o.status.code(), Some(128 + sig), "{name}: {}", stderr(&o));
        assert!(stderr(&o).contains(name), "{name}: {}", stderr(&o));
        assert_eq!(
            std::fs::read_to_string(aux.join("revoked-A")).unwrap_or_default(),
            "tok_5e1f0a9c77d24b31",
            "{name}: the first secret was not revoked"
        );
        assert!(!alive(provider), "{name}: the provider {provider} survived");
        let end = session_end(&log).unwrap_or_else(|| panic!("{name}: no session_end"));
        assert!(
            end["reason"].as_str().unwrap_or_default().contains(name),
            "{name}: {end}"
        );
    }
}

#[test]
fn signals_at_every_moment_of_the_start_never_leave_a_secret_unrevoked() {
    let ws = Ws::new();
    let aux = Ws::new();
    let log = aux.join("audit.jsonl");
    let prof = two_secrets(&ws, &aux, false, "");
    let mut stopped_early = 0;
    for i in 0..40u64 {
        for f in ["fetched-A", "revoked-A", "audit.jsonl"] {
            let _ = std::fs::remove_file(aux.join(f));
        }
        let c = run_logged(
            ws.path(),
            prof.to_str().unwrap(),
            &log,
            &["/bin/sleep", "2"],
        )
        .spawn()
        .unwrap();
        let launcher = nix::unistd::Pid::from_raw(c.id() as i32);
        // From the exec to well after the clone: every 2 ms.
        std::thread::sleep(Duration::from_micros(i * 2000));
        let sig = [
            nix::sys::signal::Signal::SIGTERM,
            nix::sys::signal::Signal::SIGINT,
            nix::sys::signal::Signal::SIGHUP,
            nix::sys::signal::Signal::SIGALRM,
        ][i as usize % 4];
        nix::sys::signal::kill(launcher, sig).unwrap();
        let o = wait_bounded(c, Duration::from_secs(20), "random signal");
        use std::os::unix::process::ExitStatusExt;
        if o.status.signal().is_some() {
            // Killed before its first instruction (the dynamic loader ran): nothing was
            // fetched, so nothing is left to revoke.
            assert!(
                !log.exists(),
                "iteration {i}: killed after the audit log was opened"
            );
            stopped_early += 1;
            continue;
        }
        // taskcell held the value (a provider killed half-way gave none).
        let held = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("\"secret_delivered\"");
        if held {
            assert!(
                aux.join("revoked-A").exists(),
                "iteration {i} ({sig}): fetched, never revoked: {}",
                stderr(&o)
            );
            let end = session_end(&log);
            assert!(
                end.is_some(),
                "iteration {i}: no session_end: {}",
                stderr(&o)
            );
        }
        assert_eq!(
            o.status.code(),
            Some(128 + sig as i32),
            "iteration {i}: {}",
            stderr(&o)
        );
    }
    eprintln!("{stopped_early} of 40 signals arrived before taskcell's first instruction");
}

#[test]
fn terminating_signals_while_the_cell_runs_stop_it_in_order() {
    let ws = Ws::new();
    let aux = Ws::new();
    let log = aux.join("audit.jsonl");
    let prof = two_secrets(&ws, &aux, false, "");
    let rt = libc::SIGRTMIN() + 2;
    let mut sigs: Vec<(i32, String)> = STOPPING
        .iter()
        .filter(|(s, _)| ![libc::SIGINT, libc::SIGUSR2].contains(s))
        .map(|(s, n)| (*s, n.to_string()))
        .collect();
    sigs.push((rt, "SIGRTMIN+2".into()));
    for (sig, name) in sigs {
        for f in ["fetched-A", "revoked-A", "audit.jsonl"] {
            let _ = std::fs::remove_file(aux.join(f));
        }
        // A command that ignores every polite signal: only SIGKILL after grace ends it.
        let mut c = run_logged(
            ws.path(),
            prof.to_str().unwrap(),
            &log,
            &[
                "/bin/sh",
                "-c",
                "trap '' TERM HUP QUIT INT USR2 ALRM; echo up; exec sleep 60",
            ],
        )
        .spawn()
        .unwrap();
        let launcher = c.id() as i32;
        assert_eq!(first_line(&mut c), "up\n");
        // SAFETY: kill with a pid and a signal number (nix cannot name real-time ones).
        assert_eq!(unsafe { libc::kill(launcher, sig) }, 0);
        let o = wait_bounded(c, Duration::from_secs(20), &name);
        assert_eq!(o.status.code(), Some(128 + sig), "{name}: {}", stderr(&o));
        assert!(aux.join("revoked-A").exists(), "{name}: not revoked");
        let end = session_end(&log).unwrap_or_else(|| panic!("{name}: no session_end"));
        assert_eq!(end["reason"], format!("taskcell got {name}"), "{end}");
    }
}

#[test]
fn the_supervisor_cannot_be_dumped_or_traced() {
    let ws = Ws::new();
    let mut c = taskcell(
        ws.path(),
        &[
            "run",
            "-p",
            "base",
            "--secret",
            "T=generate:16",
            "--",
            "/bin/sh",
            "-c",
            "echo up; exec sleep 60",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let pid = c.id();
    assert_eq!(first_line(&mut c), "up\n");
    let status = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let core = status
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap()
        .split_whitespace()
        .nth(4)
        .unwrap()
        .to_string();
    // /proc/PID/mem of a non-dumpable process belongs to root and ptrace is refused.
    let owner = std::os::unix::fs::MetadataExt::uid(
        &std::fs::metadata(format!("/proc/{pid}/mem")).unwrap(),
    );
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = wait_bounded(c, Duration::from_secs(20), "dumpable");
    assert_eq!(core, "0", "RLIMIT_CORE of the supervisor");
    assert_eq!(
        owner, 0,
        "/proc/PID/mem of the supervisor is not root's: it is dumpable"
    );
}

#[test]
fn the_timeout_is_absolute_when_nobody_reads_the_masked_output() {
    let ws = Ws::new();
    let prof = ws.join("g.toml");
    std::fs::write(&prof, "extends = \"base\"\n[limits]\ngrace = \"1s\"\n").unwrap();
    for (what, script) in [
        ("a command that stops at SIGTERM", "yes"),
        ("a command that ignores SIGTERM", "trap '' TERM; yes"),
    ] {
        // stdout is a pipe the test never reads (a reader that stopped); stderr too.
        let c = taskcell(
            ws.path(),
            &[
                "run",
                "-p",
                prof.to_str().unwrap(),
                "--timeout",
                "2s",
                "--secret",
                "T=generate:16",
                "--",
                "/bin/sh",
                "-c",
                script,
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
        let t = Instant::now();
        let pid = c.id() as i32;
        // Bounded: 2 s timeout + 1 s grace + the drain; it hung forever before.
        let limit = Duration::from_secs(20);
        let mut c = c;
        let status = loop {
            if let Some(st) = c.try_wait().unwrap() {
                break st;
            }
            if t.elapsed() > limit {
                let _ = c.kill();
                panic!("{what}: taskcell {pid} still running after {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(status.code(), Some(124), "{what}");
    }
}

#[test]
fn the_stale_cgroup_cleanup_never_harms_a_live_cell_of_a_launcher_named_otherwise() {
    let ws = Ws::new();
    let aux = Ws::new();
    // The launcher through a symlink called `tc`: its /proc/PID/comm is "tc".
    let tc = aux.join("tc");
    std::os::unix::fs::symlink(bin(), &tc).unwrap();
    let mut first = std::process::Command::new(&tc)
        .current_dir(ws.path())
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env(
            "HOME",
            std::env::var("HOME").unwrap_or_else(|_| "/nonexistent".into()),
        )
        .args([
            "run",
            "-p",
            "base",
            "--processes",
            "64",
            "--",
            "/bin/sh",
            "-c",
            "cat /proc/self/cgroup; echo up; sleep 3; echo alive",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut head = String::new();
    {
        let mut r = std::io::BufReader::new(first.stdout.as_mut().unwrap());
        loop {
            let mut line = String::new();
            if std::io::BufRead::read_line(&mut r, &mut line).unwrap() == 0 || line == "up\n" {
                break;
            }
            head.push_str(&line);
        }
    }
    // Another taskcell starts (and cleans up stale cgroups) while the first cell runs.
    ok(&sh(ws.path(), "base", &["--processes", "64"], "true"));
    let o = wait_bounded(first, Duration::from_secs(20), "the first cell");
    assert!(
        o.status.success() && stdout(&o).contains("alive"),
        "the first cell was harmed (cgroup: {}): {:?} {}",
        head.contains("taskcell-"),
        o.status,
        stderr(&o)
    );
}

#[test]
fn an_audit_log_on_a_full_disk_is_an_error_before_anything_runs() {
    let ws = Ws::new();
    // /dev/full: every write fails with ENOSPC, as on a full disk.
    let o = taskcell(
        ws.path(),
        &[
            "run",
            "-p",
            "base",
            "--audit-log",
            "/dev/full",
            "--",
            "/bin/sh",
            "-c",
            "touch ran",
        ],
    )
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(
        !ws.join("ran").exists(),
        "the command ran without an audit log"
    );
}

/// The cell's init: the child of taskcell `pid`.
fn child_of(pid: u32) -> Option<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[test]
fn a_killed_cell_init_is_said_in_one_line_with_its_own_exit_code() {
    let ws = Ws::new();
    let aux = Ws::new();
    let log = aux.join("audit.jsonl");
    let mut c = run_logged(
        ws.path(),
        "base",
        &log,
        &["/bin/sh", "-c", "echo up; exec sleep 60"],
    )
    .spawn()
    .unwrap();
    assert_eq!(first_line(&mut c), "up\n");
    let init = child_of(c.id()).expect("the cell's init");
    // Someone (or the OOM killer) kills the cell's PID 1.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(init),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let o = wait_bounded(c, Duration::from_secs(20), "init killed");
    assert_eq!(o.status.code(), Some(121), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(
        err.lines().filter(|l| l.contains("init killed")).count(),
        1,
        "{err}"
    );
    let end = session_end(&log).expect("session_end");
    assert_eq!(end["reason"], "cell init killed", "{end}");
    assert_eq!(end["exit_code"], 121, "{end}");
}

#[test]
fn every_writable_tmpfs_is_bounded_by_the_memory_limit() {
    let ws = Ws::new();
    // Without a cgroup (a plain user) nothing else bounds what /tmp takes: 3 GiB went
    // into /tmp under --memory 256M before.
    let out = ok(&sh(
        ws.path(),
        "base",
        &["--memory", "64M"],
        "df -k /tmp /dev/shm | tail -n +2",
    ));
    let sizes: Vec<u64> = out
        .lines()
        .take(2)
        .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
        .collect();
    assert_eq!(sizes, vec![65536, 65536], "{out}");
    // Filling /tmp past it: ENOSPC (or, with a memory cgroup, the OOM killer first).
    let o = sh(
        ws.path(),
        "base",
        &["--memory", "64M"],
        "dd if=/dev/zero of=/tmp/fill bs=1M count=100 2>&1",
    );
    assert!(
        stdout(&o).contains("No space left on device") || o.status.code() == Some(121),
        "{:?} {} {}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
}

#[test]
fn after_a_sigkill_the_next_start_records_the_end_and_the_missed_revocation() {
    let ws = Ws::new();
    let aux = Ws::new();
    let run = aux.join("run");
    std::fs::create_dir(&run).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).unwrap();
    let log = aux.join("audit.jsonl");
    let prof = two_secrets(&ws, &aux, false, "");
    let mut c = run_logged(
        ws.path(),
        prof.to_str().unwrap(),
        &log,
        &["/bin/sh", "-c", "echo up; exec sleep 60"],
    )
    .env("XDG_RUNTIME_DIR", &run)
    .spawn()
    .unwrap();
    assert_eq!(first_line(&mut c), "up\n");
    // SIGKILL to taskcell's exact pid: it cannot revoke or record anything.
    c.kill().unwrap();
    c.wait().unwrap();
    assert!(session_end(&log).is_none());
    // The next start of the same user finishes the job.
    let o = taskcell(ws.path(), &["run", "-p", "base", "--", "/bin/true"])
        .env("XDG_RUNTIME_DIR", &run)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("launcher killed"), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("not revoked (revoke by hand): A"),
        "{}",
        stderr(&o)
    );
    let end = session_end(&log).expect("session_end written by the next start");
    assert_eq!(end["reason"], "launcher killed", "{end}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.lines()
            .any(|l| l.contains("\"secret_revoked\"") && l.contains("\"ok\":false")),
        "{text}"
    );
    // Nothing of the killed session is left in the state directory.
    let left: Vec<_> = std::fs::read_dir(run.join("taskcell/state"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// The state directory may be visible to a cell (a workspace of /tmp, say), which runs as
/// the same user: a state file it forges must not make the next start remove or append to
/// files of the user's.
#[test]
fn a_forged_state_file_removes_and_appends_to_nothing_of_the_users() {
    let ws = Ws::new();
    let aux = Ws::new();
    let run = aux.join("run");
    let state = run.join("taskcell/state");
    std::fs::create_dir_all(&state).unwrap();
    for d in [run.clone(), run.join("taskcell"), state.clone()] {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let victim = aux.join("bashrc");
    std::fs::write(&victim, "export KEEP=1\n").unwrap();
    let forged = serde_json::json!({
        "session": "0123456789abcdef",
        "pid": 999_999_999,
        "start": 1,
        "audit_log": victim,
        "files": [victim, aux.join("0123456789abcdef.sock")],
        "revoke": ["A"],
    });
    std::fs::write(state.join("0123456789abcdef.json"), forged.to_string()).unwrap();
    let o = taskcell(ws.path(), &["run", "-p", "base", "--", "/bin/true"])
        .env("XDG_RUNTIME_DIR", &run)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "export KEEP=1\n",
        "the forged state removed or appended to the user's file"
    );
    // The forged state itself is consumed, not kept for the next start.
    assert!(!state.join("0123456789abcdef.json").exists());
}

/// A profile whose secret A is revoked without its value: the provider labels what it
/// makes with `{session}` (here: a file named after it), the revoke command removes what
/// carries that label. Written into `ws` as `name`.
fn valueless_revoke(ws: &Ws, aux: &Ws, name: &str, revoke_cmd: &str) -> std::path::PathBuf {
    let a = aux.path().display();
    let t = format!(
        "extends = \"base\"\n\
         [secrets.A]\nfrom = {{ command = [\"sh\", \"-c\", \"touch {a}/issued-{{session}}; echo tok_9d2c41e07ab35f68\"] }}\n\
         revoke = [\"sh\", \"-c\", \"{revoke_cmd}\", \"revoke\", \"{{session}}\"]\n\
         revoke_needs_value = false\n"
    );
    let p = ws.join(name);
    std::fs::write(&p, t).unwrap();
    p
}

fn session_of(log: &std::path::Path) -> String {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "session_start")
        .and_then(|v| v["session"].as_str().map(String::from))
        .expect("a session_start record")
}

/// Start `prof` with a command that says "up" and sleeps; SIGKILL taskcell's exact pid
/// once the command is up. Returns the killed session's id.
fn run_and_sigkill(
    ws: &Ws,
    run: &std::path::Path,
    prof: &std::path::Path,
    log: &std::path::Path,
) -> String {
    let mut c = taskcell(
        ws.path(),
        &[
            "run",
            "-p",
            prof.to_str().unwrap(),
            "--audit-log",
            log.to_str().unwrap(),
            "--",
            "/bin/sh",
            "-c",
            "echo up; exec sleep 60",
        ],
    )
    .env("XDG_RUNTIME_DIR", run)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(c.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line, "up\n");
    c.kill().unwrap();
    c.wait().unwrap();
    assert!(session_end(log).is_none());
    session_of(log)
}

fn private_runtime_dir(aux: &Ws) -> std::path::PathBuf {
    let run = aux.join("run");
    std::fs::create_dir(&run).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).unwrap();
    run
}

/// A revoke command that needs no value runs after a SIGKILL of taskcell: not at a start
/// of another profile (which does not declare it), but at the next start whose profile
/// declares the same secret and revoke command; recorded in the killed session's log.
#[test]
fn after_a_sigkill_a_revocation_that_needs_no_value_runs_at_the_next_start_of_its_profile() {
    let ws = Ws::new();
    let aux = Ws::new();
    let run = private_runtime_dir(&aux);
    let log = aux.join("audit.jsonl");
    let a = aux.path().display().to_string();
    let prof = valueless_revoke(
        &ws,
        &aux,
        "p.toml",
        &format!("rm {a}/issued-$1 && echo gone $1"),
    );
    for round in 0..2 {
        let _ = std::fs::remove_file(&log);
        let session = run_and_sigkill(&ws, &run, &prof, &log);
        let issued = aux.join(&format!("issued-{session}"));
        assert!(issued.exists(), "the provider got {{session}}");
        if round == 0 {
            // Another profile does not declare A: the revocation waits, the end is recorded.
            let o = taskcell(ws.path(), &["run", "-p", "base", "--", "/bin/true"])
                .env("XDG_RUNTIME_DIR", &run)
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", stderr(&o));
            assert!(stderr(&o).contains("waits for a start"), "{}", stderr(&o));
            assert!(
                issued.exists(),
                "revoked by a profile that does not declare it"
            );
            assert_eq!(
                session_end(&log).expect("end recorded")["reason"],
                "launcher killed"
            );
        }
        let o = taskcell(
            ws.path(),
            &["run", "-p", prof.to_str().unwrap(), "--", "/bin/true"],
        )
        .env("XDG_RUNTIME_DIR", &run)
        .output()
        .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(
            stderr(&o).contains(&format!(
                "missed revocation of session {session} run: A (ok)"
            )),
            "{}",
            stderr(&o)
        );
        assert!(
            !issued.exists(),
            "round {round}: the missed revocation did not run"
        );
        let text = std::fs::read_to_string(&log).unwrap();
        let revoked: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["event"] == "secret_revoked" && v["session"] == session.as_str())
            .collect();
        assert_eq!(revoked.len(), 1, "{text}");
        assert_eq!(revoked[0]["ok"], true, "{text}");
        assert!(!text.contains("tok_9d2c41e07ab35f68"), "{text}");
        assert_eq!(
            text.lines()
                .filter(|l| l.contains("\"session_end\""))
                .count(),
            1,
            "{text}"
        );
        let left: Vec<_> = std::fs::read_dir(run.join("taskcell/state"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}

/// A cell that can write the state directory forges a state whose revoke command is its
/// own program: the next start never runs it, not even under the name of a secret its
/// profile declares; only the profile's own command would run.
#[test]
fn a_forged_state_file_never_makes_taskcell_run_a_program_the_profile_did_not_name() {
    let ws = Ws::new();
    let aux = Ws::new();
    let run = private_runtime_dir(&aux);
    let state = run.join("taskcell/state");
    std::fs::create_dir_all(&state).unwrap();
    for d in [run.join("taskcell"), state.clone()] {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let a = aux.path().display().to_string();
    let prof = valueless_revoke(&ws, &aux, "p.toml", &format!("echo $1 >> {a}/revoked"));
    let pwned = aux.join("pwned");
    let planted = |session: &str, argv: serde_json::Value| {
        let forged = serde_json::json!({
            "session": session,
            "pid": 999_999_999,
            "start": 1,
            "audit_log": null,
            "files": [],
            "revoke": [],
            "revoke_later": [{ "name": "A", "argv": argv }],
            "ended": true,
        });
        std::fs::write(state.join(format!("{session}.json")), forged.to_string()).unwrap();
    };
    let touch = serde_json::json!(["sh", "-c", format!("touch {}", pwned.display())]);
    planted("0123456789abcdef", touch.clone());
    // The profile's own argv, but a session id that is not one: removed, never run.
    planted(
        "0123456789abcde'",
        serde_json::json!([
            "sh",
            "-c",
            format!("echo $1 >> {a}/revoked"),
            "revoke",
            "{session}"
        ]),
    );
    let o = taskcell(
        ws.path(),
        &["run", "-p", prof.to_str().unwrap(), "--", "/bin/true"],
    )
    .env("XDG_RUNTIME_DIR", &run)
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        !pwned.exists(),
        "a forged state ran its own program: {}",
        stderr(&o)
    );
    // (`revoked` holds the session ids of the starts themselves: A is revoked at their end.)
    let revoked = || std::fs::read_to_string(aux.join("revoked")).unwrap_or_default();
    assert!(!revoked().contains("0123456789abcde"), "{}", stderr(&o));
    // The forged command matches no declared one: it waits, harmless, and is never run.
    assert!(state.join("0123456789abcdef.json").exists());
    assert!(!state.join("0123456789abcde'.json").exists());
    let o = taskcell(
        ws.path(),
        &["run", "-p", prof.to_str().unwrap(), "--", "/bin/true"],
    )
    .env("XDG_RUNTIME_DIR", &run)
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!pwned.exists());
    // A forged state that names the profile's own command only picks the session id:
    // the profile's command runs with it (never anything else).
    planted(
        "fedcba9876543210",
        serde_json::json!([
            "sh",
            "-c",
            format!("echo $1 >> {a}/revoked"),
            "revoke",
            "{session}"
        ]),
    );
    let o = taskcell(
        ws.path(),
        &["run", "-p", prof.to_str().unwrap(), "--", "/bin/true"],
    )
    .env("XDG_RUNTIME_DIR", &run)
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        revoked()
            .lines()
            .filter(|l| *l == "fedcba9876543210")
            .count(),
        1,
        "{}",
        revoked()
    );
    assert!(!revoked().contains("0123456789abcde"));
    assert!(!pwned.exists());
}

/// Whether `pid` runs (a zombie does not count: it is dead, waiting for its reaper).
fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rfind(')').is_some_and(|i| !s[i..].starts_with(") Z")))
        .unwrap_or(false)
}

/// Start a best-effort cell (no user namespaces) whose command leaves three descendants
/// behind — a background job, one in its own session (setsid) and one re-parented by a
/// double fork — and reports their pids and its TMPDIR; SIGKILL taskcell (and, with
/// `init_too`, the cell's init) by exact pid. Returns (descendants, TMPDIR).
fn best_effort_sigkill(ws: &Ws, run: &std::path::Path, init_too: bool) -> (Vec<i32>, String) {
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
            "sleep 300 & echo $! > pids; (setsid sleep 301 & echo $! >> pids); \
             (sh -c 'sleep 302 & echo $! >> pids' &); sleep 0.2; echo \"$TMPDIR\" > tmpdir; \
             touch \"$TMPDIR/left\"; echo up; exec sleep 60",
        ],
    )
    .env("XDG_RUNTIME_DIR", run)
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(c.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line, "up\n");
    let init = child_of(c.id()).expect("the cell's init");
    let pids: Vec<i32> = std::fs::read_to_string(ws.join("pids"))
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 3, "{pids:?}");
    let tmp = std::fs::read_to_string(ws.join("tmpdir"))
        .unwrap()
        .trim()
        .to_string();
    assert!(std::path::Path::new(&tmp).join("left").exists());
    // SIGKILL to exact pids: taskcell's, and its init's (a child of it, checked).
    c.kill().unwrap();
    if init_too {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(init),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    c.wait().unwrap();
    (pids, tmp)
}

/// Best effort (no user namespaces, so no PID namespace): a SIGKILLed taskcell leaves no
/// descendant of the command running and no private TMPDIR: init, the subreaper of all of
/// them, is told by its parent-death signal and ends them, then removes the TMPDIR.
#[test]
#[ignore = "run by .ci/run with user.max_user_namespaces=0"]
fn best_effort_a_sigkilled_taskcell_leaves_no_survivor_and_no_tmpdir() {
    require_no_userns();
    let ws = Ws::new();
    let aux = Ws::new();
    let run = private_runtime_dir(&aux);
    for _ in 0..5 {
        let (pids, tmp) = best_effort_sigkill(&ws, &run, false);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5)
            && (pids.iter().any(|p| running(*p)) || std::path::Path::new(&tmp).exists())
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        let left: Vec<_> = pids.iter().filter(|p| running(**p)).collect();
        for p in &pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*p),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        assert!(
            left.is_empty(),
            "survivors of the SIGKILLed taskcell: {left:?}"
        );
        assert!(!std::path::Path::new(&tmp).exists(), "{tmp} left behind");
    }
    // The next start records the end (each round's start recorded the one before).
    let o = taskcell(
        ws.path(),
        &["run", "-p", "build", "--best-effort", "--", "/bin/true"],
    )
    .env("XDG_RUNTIME_DIR", &run)
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stderr(&o).matches("launcher killed").count(),
        1,
        "{}",
        stderr(&o)
    );
}

/// Best effort, with the cell's init SIGKILLed too (nothing of taskcell can clean up):
/// the next start of the same user removes the private TMPDIR the state recorded, and
/// kills what is left in the cell's cgroup, where one could be made (named after the
/// killed launcher's pid and start time, so never another cell's).
#[test]
#[ignore = "run by .ci/run with user.max_user_namespaces=0"]
fn best_effort_after_taskcell_and_its_init_are_sigkilled_the_next_start_cleans_up() {
    require_no_userns();
    let ws = Ws::new();
    let aux = Ws::new();
    let run = private_runtime_dir(&aux);
    let (pids, tmp) = best_effort_sigkill(&ws, &run, true);
    // A live best-effort cell of another launcher, whose TMPDIR and processes must stay.
    let mut other = taskcell(
        ws.path(),
        &[
            "run",
            "-p",
            "build",
            "--best-effort",
            "--",
            "/bin/sh",
            "-c",
            "echo \"$TMPDIR\"; exec sleep 30",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let mut other_tmp = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(other.stdout.as_mut().unwrap()),
        &mut other_tmp,
    )
    .unwrap();
    let o = taskcell(
        ws.path(),
        &["run", "-p", "build", "--best-effort", "--", "/bin/true"],
    )
    .env("XDG_RUNTIME_DIR", &run)
    .output()
    .unwrap();
    let err = stderr(&o);
    let left: Vec<i32> = pids.iter().copied().filter(|p| running(*p)).collect();
    for p in &pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*p),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    assert!(o.status.success(), "{err}");
    assert!(err.contains("launcher killed"), "{err}");
    assert!(
        !std::path::Path::new(&tmp).exists(),
        "{tmp} left behind: {err}"
    );
    assert!(err.contains("private TMPDIR"), "{err}");
    if err.contains("were killed") {
        assert!(left.is_empty(), "survivors: {left:?}: {err}");
    } else {
        eprintln!(
            "NOTE: no cgroup could be made here; the survivors {left:?} were killed by the test"
        );
    }
    assert!(
        std::path::Path::new(other_tmp.trim()).exists(),
        "another cell's TMPDIR was removed"
    );
    assert!(
        other.try_wait().unwrap().is_none(),
        "another cell was harmed"
    );
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(other.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    other.wait().unwrap();
}
