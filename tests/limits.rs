//! Resource limits in real cells: a fork bomb, a runaway allocation, a file past the size
//! limit, a crash without a core file, and no cgroup left behind. Run as root (cgroups on
//! this host) and as a plain user (where no cgroup is delegated, the rlimit fallback is what
//! is tested; each test prints which).
mod common;
use common::*;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::Stdio;

use taskcell::cell::cgroup;

/// Which mechanism a cell gets here for processes: prints it, returns true for cgroups.
fn cgroup_mode(ws: &Ws) -> bool {
    let out = ok(&sh(
        ws.path(),
        "build",
        &["--processes", "64"],
        "cat /proc/self/cgroup",
    ));
    let cg = out.contains("taskcell-");
    if cg {
        println!(
            "mechanism: a cgroup per cell (uid {})",
            nix::unistd::getuid()
        );
    } else {
        println!(
            "mechanism: rlimit fallback — uid {} has no delegated cgroup, so RLIMIT_NPROC/RLIMIT_DATA stand in and no cgroup is created",
            nix::unistd::getuid()
        );
    }
    cg
}

/// The cell's cgroup name from its /proc/self/cgroup output.
fn cell_cgroup_name(out: &str) -> Option<String> {
    out.lines()
        .filter_map(|l| l.rsplit('/').next())
        .find(|n| n.starts_with("taskcell-"))
        .map(str::to_string)
}

/// Every directory of that cgroup that exists on the host.
fn cgroup_dirs(name: &str) -> Vec<PathBuf> {
    let p = cgroup::probe();
    p.places
        .values()
        .map(|pl| pl.parent.join(name))
        .filter(|d| d.exists())
        .collect()
}

const PY_FORKS: &str = r#"
import os, signal, sys, time
kids = []
err = None
for i in range(500):
    try:
        pid = os.fork()
    except OSError as e:
        err = e.errno
        break
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    kids.append(pid)
print("full", len(kids), err, flush=True)
deadline = time.time() + 60
while not os.path.exists("go") and time.time() < deadline:
    time.sleep(0.05)
for k in kids:
    os.kill(k, signal.SIGKILL)
for k in kids:
    os.waitpid(k, 0)
print("done", flush=True)
"#;

#[test]
fn fork_bomb_stops_at_the_limit_while_the_host_keeps_forking() {
    let ws = Ws::new();
    let cg = cgroup_mode(&ws);
    assert!(
        std::path::Path::new("/usr/bin/python3").exists(),
        "this test needs /usr/bin/python3"
    );
    let audit = ws.outside("audit.jsonl");
    let mut child = taskcell(
        ws.path(),
        &[
            "run",
            "-p",
            "build",
            "--write",
            ws.path().to_str().unwrap(),
            "--processes",
            "64",
            "--timeout",
            "120s",
            "--audit-log",
            audit.to_str().unwrap(),
            "--",
            "/usr/bin/python3",
            "-c",
            PY_FORKS,
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("starting taskcell");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().expect("a line").expect("reading");
    let parts: Vec<&str> = first.split_whitespace().collect();
    assert_eq!(parts[0], "full", "{first}");
    let forked: usize = parts[1].parse().unwrap();
    assert!(
        forked < 64,
        "the cell forked {forked} processes past a limit of 64"
    );
    assert!(forked > 10, "the cell could fork only {forked}: {first}");
    assert_eq!(
        parts[2],
        libc::EAGAIN.to_string(),
        "fork fails with EAGAIN: {first}"
    );

    // While the cell sits at its limit, a process outside forks more than the limit.
    let mut outside: Vec<std::process::Child> = (0..100)
        .map(|_| {
            std::process::Command::new("/bin/sleep")
                .arg("0.2")
                .spawn()
                .expect("forking outside the cell while the cell is at its limit")
        })
        .collect();
    for c in &mut outside {
        assert!(c.wait().expect("waiting").success());
    }
    println!("outside the cell: 100 processes forked while the cell was at its limit");

    std::fs::write(ws.join("go"), "").unwrap();
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let out = child.wait_with_output().expect("waiting for taskcell");
    let err = stderr(&out);
    assert!(out.status.success(), "{:?} {err}", out.status);
    assert_eq!(rest, ["done"], "the cell ended cleanly");
    if cg {
        assert!(
            err.contains("the cell hit its processes limit (64 processes and threads"),
            "{err}"
        );
        let log = std::fs::read_to_string(&audit).unwrap();
        assert!(
            log.lines()
                .any(|l| l.contains("\"limit_hit\"") && l.contains("64 processes")),
            "{log}"
        );
    } else {
        println!("rlimit fallback: RLIMIT_NPROC refuses the fork (EAGAIN); no counter to report");
    }
}

#[test]
fn shell_fork_bomb_ends_and_leaves_no_cgroup() {
    let ws = Ws::new();
    let cg = cgroup_mode(&ws);
    let out = sh(
        ws.path(),
        "build",
        &["--processes", "64", "--timeout", "30s"],
        "cat /proc/self/cgroup; b(){ b | b & }; b; sleep 2; echo survived",
    );
    let text = stdout(&out);
    // The bomb either starves the shell's own fork (it exits) or the shell survives; in
    // both cases the cell ended, and the kernel ended every process of the bomb with it.
    assert_ne!(
        out.status.code(),
        Some(124),
        "the cell hit the timeout: {}",
        stderr(&out)
    );
    if cg {
        let name = cell_cgroup_name(&text).expect("the cell had its own cgroup");
        assert!(cgroup_dirs(&name).is_empty(), "{name} left behind");
        assert!(stderr(&out).contains("processes limit"), "{}", stderr(&out));
    } else {
        assert!(cell_cgroup_name(&text).is_none());
    }
}

#[test]
fn allocation_past_the_memory_limit_is_killed_or_fails() {
    let ws = Ws::new();
    let cg = cgroup_mode(&ws);
    let script =
        "/usr/bin/python3 -c \"b = b'x' * (200 << 20); print('allocated', len(b))\"; echo rc=$?";
    let out = sh(ws.path(), "build", &["--memory", "64M"], script);
    let text = stdout(&out);
    assert!(
        !text.contains("allocated"),
        "200M allocated under a 64M limit: {text}"
    );
    assert!(text.contains("rc=") && !text.contains("rc=0"), "{text}");
    if cg {
        assert!(text.contains("rc=137"), "killed by the OOM killer: {text}");
        assert!(
            stderr(&out).contains("the cell hit its memory limit (64 MiB")
                && stderr(&out).contains("OOM killer"),
            "{}",
            stderr(&out)
        );
    } else {
        println!("rlimit fallback: RLIMIT_DATA made the allocation fail: {text}");
        assert!(text.contains("rc=1"), "{text}");
    }
    // The same allocation under a larger limit succeeds: it was the limit.
    let out = sh(ws.path(), "build", &["--memory", "1G"], script);
    assert!(
        stdout(&out).contains("allocated 209715200"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn head_into_tail_past_the_memory_limit() {
    let ws = Ws::new();
    cgroup_mode(&ws);
    let out = sh(
        ws.path(),
        "build",
        &["--memory", "32M"],
        "head -c 200M /dev/zero | tail | wc -c; echo \"rc=${?}\"",
    );
    let text = stdout(&out);
    let err = stderr(&out);
    // tail keeps the whole newline-free input in memory: it is killed or its allocation
    // fails, so the 200 MiB never come out (without the limit, wc prints 209715200). The
    // OOM killer may take the shell along with tail, so the cell either printed 0 or was
    // reported as having hit its memory limit.
    assert!(
        !text.contains("209715200"),
        "tail wrote output: {text} {err}"
    );
    assert!(
        text.starts_with("0\n") || err.contains("hit its memory limit"),
        "neither a failed tail nor a reported limit: {text} {err}"
    );
}

#[test]
fn a_file_past_the_size_limit_fails_with_efbig() {
    let ws = Ws::new();
    let out = sh(
        ws.path(),
        "build",
        &["--file-size", "1M"],
        "dd if=/dev/zero of=big bs=64k count=64; echo rc=$?",
    );
    let text = stdout(&out);
    let err = stderr(&out);
    assert!(text.contains("rc=1"), "{text} {err}");
    assert!(err.contains("File too large"), "EFBIG: {err}");
    assert_eq!(std::fs::metadata(ws.join("big")).unwrap().len(), 1 << 20);
    // Under a larger limit the same write works.
    let out = ok(&sh(
        ws.path(),
        "build",
        &["--file-size", "16M"],
        "dd if=/dev/zero of=big2 bs=64k count=64 2>/dev/null; echo rc=$?",
    ));
    assert_eq!(out, "rc=0\n");
    assert_eq!(std::fs::metadata(ws.join("big2")).unwrap().len(), 4 << 20);
}

fn cores_in(ws: &Ws) -> Vec<String> {
    std::fs::read_dir(ws.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("core"))
        .collect()
}

#[test]
fn no_core_file_after_a_crash() {
    let ws = Ws::new();
    let script = "grep 'core file' /proc/self/limits; sh -c 'kill -SEGV $$'; echo rc=$?";
    let out = sh(ws.path(), "build", &[], script);
    let text = stdout(&out);
    assert!(
        text.split_whitespace().collect::<Vec<_>>()[..6]
            == ["Max", "core", "file", "size", "0", "0"],
        "RLIMIT_CORE is 0 inside: {text}"
    );
    assert!(
        text.contains("rc=139"),
        "the child crashed with SIGSEGV: {text}"
    );
    assert!(
        cores_in(&ws).is_empty(),
        "core file written: {:?}",
        cores_in(&ws)
    );
    // Control: where the kernel writes cores to a file, allowing them makes one appear.
    let pattern = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap_or_default();
    if pattern.starts_with("core") {
        let out = sh(ws.path(), "build", &["--core", "64M"], script);
        assert!(stdout(&out).contains("rc=139"), "{}", stdout(&out));
        assert!(
            !cores_in(&ws).is_empty(),
            "control: with --core 64M a core file should appear"
        );
    } else {
        println!("core_pattern is {pattern:?}: the control run is skipped");
    }
}

#[test]
fn no_cgroup_left_after_a_normal_end_or_a_timeout() {
    let ws = Ws::new();
    if !cgroup_mode(&ws) {
        // Nothing to leave behind: the cell never had a cgroup of its own.
        let out = ok(&sh(ws.path(), "build", &[], "cat /proc/self/cgroup"));
        assert!(cell_cgroup_name(&out).is_none());
        println!("rlimit fallback: no cgroup is created, so none can be left behind");
        return;
    }
    let out = ok(&sh(
        ws.path(),
        "build",
        &["--processes", "100", "--memory", "256M", "--cpu", "1.5"],
        "cat /proc/self/cgroup",
    ));
    let name = cell_cgroup_name(&out).expect("the cell had its own cgroup");
    assert!(
        out.matches(name.as_str()).count() >= 3,
        "pids, memory and cpu: {out}"
    );
    assert!(cgroup_dirs(&name).is_empty(), "{name} left behind");
}

#[test]
fn a_timeout_is_reported_and_audited_and_leaves_no_cgroup() {
    let ws = Ws::new();
    let cg = cgroup_mode(&ws);
    let audit = ws.outside("audit.jsonl");
    let out = sh(
        ws.path(),
        "build",
        &["--timeout", "1s", "--audit-log", audit.to_str().unwrap()],
        "cat /proc/self/cgroup; exec sleep 30",
    );
    assert_eq!(out.status.code(), Some(124));
    match cell_cgroup_name(&stdout(&out)) {
        Some(name) => assert!(
            cgroup_dirs(&name).is_empty(),
            "{name} left behind after a timeout"
        ),
        None => assert!(!cg, "the cell had no cgroup of its own"),
    }
    assert!(
        stderr(&out).contains("the cell hit its timeout limit (1s"),
        "{}",
        stderr(&out)
    );
    let log = std::fs::read_to_string(&audit).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("\"limit_hit\"") && l.contains("\"timeout\"") && l.contains("1s")),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("\"event\":\"session_start\"")
                && l.contains(if cg { "pids.max" } else { "RLIMIT_NPROC" })),
        "{log}"
    );
}

/// The cell's cgroup is gone when taskcell returns, also when the command left processes
/// running: init ends them, moves itself out of the cgroup v1 hierarchies, and the
/// supervisor removes them while init's exit tears the namespaces down (or after it).
#[test]
fn the_cells_cgroup_is_gone_when_taskcell_returns() {
    let ws = Ws::new();
    if !cgroup_mode(&ws) {
        println!("rlimit fallback: no cgroup is created");
        return;
    }
    for script in [
        "cat /proc/self/cgroup",
        "cat /proc/self/cgroup; sleep 60 & sleep 60 & exit 3",
    ] {
        let o = sh(ws.path(), "build", &[], script);
        let text = stdout(&o);
        let name = cell_cgroup_name(&text).unwrap_or_else(|| panic!("no cgroup line: {text}"));
        assert!(
            cgroup_dirs(&name).is_empty(),
            "{name} left after the run: {:?}",
            cgroup_dirs(&name)
        );
    }
}

#[test]
fn a_killed_taskcell_leaves_a_cgroup_the_next_run_removes() {
    let ws = Ws::new();
    if !cgroup_mode(&ws) {
        println!("rlimit fallback: no cgroup is created, so a killed taskcell leaves none");
        return;
    }
    let mut child = taskcell(
        ws.path(),
        &[
            "run",
            "-p",
            "build",
            "--timeout",
            "60s",
            "--",
            "/bin/sh",
            "-c",
            "cat /proc/self/cgroup; exec sleep 60",
        ],
    )
    .stdout(Stdio::piped())
    .spawn()
    .expect("starting taskcell");
    let mut text = String::new();
    let mut r = BufReader::new(child.stdout.take().unwrap());
    while cell_cgroup_name(&text).is_none() {
        let mut l = String::new();
        assert!(r.read_line(&mut l).unwrap() > 0, "no cgroup line: {text}");
        text.push_str(&l);
    }
    let name = cell_cgroup_name(&text).unwrap();
    assert!(
        !cgroup_dirs(&name).is_empty(),
        "{name} exists while the cell runs"
    );
    child.kill().expect("SIGKILL to taskcell");
    child.wait().unwrap();
    println!(
        "after SIGKILL of taskcell: {} directories of {name} remain",
        cgroup_dirs(&name).len()
    );
    // The next run removes it (the killed taskcell's pid is gone).
    ok(&sh(ws.path(), "build", &[], "true"));
    assert!(
        cgroup_dirs(&name).is_empty(),
        "stale {name} not removed by the next run"
    );
}

#[test]
fn limits_in_profiles_are_checked_with_their_line() {
    let ws = Ws::new();
    let p = ws.join("bad.toml");
    std::fs::write(
        &p,
        "extends = \"base\"\n\n[limits]\nprocesses = 64\nmemory = \"4Q\"\n",
    )
    .unwrap();
    let out = taskcell(ws.path(), &["check", p.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("line 5") && err.contains("limits.memory"),
        "{err}"
    );
    let out = taskcell(ws.path(), &["run", "--cpu", "lots", "--", "true"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("cores"), "{}", stderr(&out));
    // Every built-in profile sets processes, memory and core.
    for prof in ["build", "agent", "review"] {
        let out = ok(&taskcell(ws.path(), &["explain", "-p", prof, "--json"])
            .output()
            .unwrap());
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let r = &v["plan"]["limits"]["resources"];
        assert!(r["processes"].as_u64().is_some(), "{prof}: {r}");
        assert!(r["memory"].as_u64().is_some(), "{prof}: {r}");
        assert_eq!(r["core"].as_u64(), Some(0), "{prof}: {r}");
    }
}

#[test]
fn cpu_share_is_a_cgroup_quota_or_a_cpu_time_budget() {
    let ws = Ws::new();
    if cgroup_mode(&ws) {
        // The values land in the cell's cgroup files (read from outside while it runs).
        let mut child = taskcell(
            ws.path(),
            &[
                "run",
                "-p",
                "build",
                "--write",
                ws.path().to_str().unwrap(),
                "--cpu",
                "1.5",
                "--memory",
                "300M",
                "--processes",
                "77",
                "--timeout",
                "60s",
                "--",
                "/bin/sh",
                "-c",
                "cat /proc/self/cgroup; echo end; while [ ! -e go ]; do sleep 0.05; done",
            ],
        )
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting taskcell");
        let mut text = String::new();
        let mut r = BufReader::new(child.stdout.take().unwrap());
        while !text.contains("end\n") {
            let mut l = String::new();
            assert!(r.read_line(&mut l).unwrap() > 0, "{text}");
            text.push_str(&l);
        }
        let name = cell_cgroup_name(&text).expect("the cell had its own cgroup");
        let p = cgroup::probe();
        let file = |ctrl: &str, f: &str| {
            std::fs::read_to_string(p.places[ctrl].parent.join(&name).join(f))
                .unwrap_or_default()
                .trim()
                .to_string()
        };
        let v1 = p.places["cpu"].version == taskcell::plan::limits::CgVersion::V1;
        if v1 {
            assert_eq!(file("cpu", "cpu.cfs_quota_us"), "150000");
            assert_eq!(file("memory", "memory.limit_in_bytes"), "314572800");
        } else {
            assert_eq!(file("cpu", "cpu.max"), "150000 100000");
            assert_eq!(file("memory", "memory.max"), "314572800");
        }
        assert_eq!(file("pids", "pids.max"), "77");
        std::fs::write(ws.join("go"), "").unwrap();
        assert!(child.wait().unwrap().success());
        assert!(cgroup_dirs(&name).is_empty());
    } else {
        // No cpu cgroup: 0.05 cores over a 20 s timeout is a budget of 1 CPU second per
        // process; a busy loop is stopped by SIGXCPU and the cell says so.
        println!("rlimit fallback: the CPU share becomes an RLIMIT_CPU budget");
        let out = sh(
            ws.path(),
            "build",
            &["--cpu", "0.05", "--timeout", "20s"],
            "grep 'cpu time' /proc/self/limits; exec /bin/sh -c 'while :; do :; done'",
        );
        let text = stdout(&out);
        assert!(text.contains("Max cpu time              1"), "{text}");
        assert_eq!(
            out.status.code(),
            Some(128 + libc::SIGXCPU),
            "{}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains("the cell hit its cpu limit (1 CPU seconds per process"),
            "{}",
            stderr(&out)
        );
    }
}
