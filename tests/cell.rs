//! The foundation's boundaries, each tried from inside a real cell. Every test here would
//! fail if the boundary it names were gone.

mod common;

use std::io::Read;
use std::os::fd::AsRawFd;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

/// Processes on the host whose command line contains `marker`.
fn host_processes_with(marker: &str) -> Vec<u32> {
    let mut out = Vec::new();
    let me = std::process::id();
    for e in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(marker) && !cmd.contains("taskcell run") {
                out.push(pid);
            }
        }
    }
    out
}

/// Wait (bounded) until `f` is true; returns whether it became true.
fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

fn marker() -> String {
    format!("tcmark{}x{}", std::process::id(), rand_u32())
}

fn rand_u32() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    t ^ (std::process::id() << 16)
}

#[test]
fn canary_outside_the_boundary_is_not_there() {
    let ws = Ws::new();
    let outside = Ws::new();
    std::fs::write(outside.join("canary"), "secret-canary").unwrap();
    let canary = outside.join("canary");
    let o = sh(
        ws.path(),
        "build",
        &[],
        &format!("cat {} 2>&1; ls ~ 2>&1; echo end", canary.display()),
    );
    let out = ok(&o);
    assert!(!out.contains("secret-canary"), "{out}");
    assert!(out.contains("No such file"), "{out}");
    // The home directory exists but is empty.
    assert!(out.ends_with("end\n"), "{out}");
    assert_eq!(out.lines().count(), 2, "home should be empty: {out}");
}

#[test]
fn ssh_key_in_home_is_not_readable() {
    // The README's first example: `cat ~/.ssh/id_ed25519` fails.
    let ws = Ws::new();
    let home = Ws::new();
    std::fs::create_dir(home.join(".ssh")).unwrap();
    std::fs::write(home.join(".ssh/id_ed25519"), "PRIVATE KEY").unwrap();
    let o = taskcell(
        ws.path(),
        &[
            "run",
            "-p",
            "build",
            "--",
            "/bin/sh",
            "-c",
            "cat ~/.ssh/id_ed25519",
        ],
    )
    .env("HOME", home.path())
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(!stdout(&o).contains("PRIVATE"));
}

#[test]
fn writes_inside_workspace_succeed_and_outside_fail() {
    let ws = Ws::new();
    let o = sh(
        ws.path(),
        "build",
        &[],
        "echo data > inside.txt && echo wrote-inside; \
         for p in /usr/x /etc/x /x /root/../x; do touch $p 2>/dev/null && echo WROTE $p; done; \
         echo tmp > /tmp/t && echo wrote-tmp",
    );
    let out = ok(&o);
    assert!(out.contains("wrote-inside"), "{out}");
    assert!(out.contains("wrote-tmp"), "{out}");
    assert!(!out.contains("WROTE"), "{out}");
    assert_eq!(
        std::fs::read_to_string(ws.join("inside.txt")).unwrap(),
        "data\n"
    );
    // Files keep their owner: created with the caller's uid.
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(ws.join("inside.txt")).unwrap();
    assert_eq!(meta.uid(), nix::unistd::getuid().as_raw());
    // The private /tmp is gone with the cell.
    assert!(!std::path::Path::new("/tmp/t").exists());
}

#[test]
fn review_profile_makes_the_workspace_read_only() {
    let ws = Ws::new();
    std::fs::write(ws.join("f"), "x").unwrap();
    let o = sh(
        ws.path(),
        "review",
        &[],
        "cat f; echo y > f && echo WROTE; touch g && echo WROTE; true",
    );
    let out = ok(&o);
    assert_eq!(out, "x");
    assert!(
        stderr(&o).contains("Read-only file system"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn read_only_bind_stays_read_only() {
    let ws = Ws::new();
    let extra = Ws::new();
    std::fs::write(extra.join("f"), "ro").unwrap();
    let d = extra.path().display().to_string();
    let o = sh(
        ws.path(),
        "build",
        &["--read", &d],
        &format!(
            "cat {d}/f; echo; echo x > {d}/f && echo WROTE; touch {d}/new && echo WROTE; \
             mount -o remount,rw {d} 2>/dev/null && echo REMOUNTED; \
             mount -t tmpfs none {d} 2>/dev/null && echo MOUNTED; echo done"
        ),
    );
    let out = ok(&o);
    assert_eq!(out, "ro\ndone\n");
    assert_eq!(std::fs::read_to_string(extra.join("f")).unwrap(), "ro");
}

#[test]
fn git_hooks_and_config_protected_index_writable() {
    let ws = Ws::new();
    let git = |args: &[&str]| {
        let s = std::process::Command::new("git")
            .args(args)
            .current_dir(ws.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("git on the host");
        assert!(s.success());
    };
    git(&["init", "-q", "."]);
    let o = sh(
        ws.path(),
        "build",
        &[],
        "echo 'touch /tmp/pwned' > .git/hooks/pre-commit && echo HOOK; \
         echo '[core] hooksPath = /tmp' >> .git/config && echo CONFIG; \
         mv .git .git-old 2>/dev/null && echo MOVED-GIT; \
         mv .git/hooks .git/h2 2>/dev/null && echo MOVED-HOOKS; \
         rm -rf .git/hooks 2>/dev/null; ls .git/hooks >/dev/null && echo hooks-still-there; \
         touch .git/index && echo index-ok; \
         mkdir -p .git/refs/heads && touch .git/refs/heads/x && echo refs-ok",
    );
    let out = ok(&o);
    assert!(!out.contains("HOOK"), "{out}");
    assert!(!out.contains("CONFIG"), "{out}");
    assert!(!out.contains("MOVED"), "{out}");
    assert!(out.contains("hooks-still-there"), "{out}");
    assert!(out.contains("index-ok"), "{out}");
    assert!(out.contains("refs-ok"), "{out}");
    assert!(!ws.join(".git/hooks/pre-commit").exists());
    assert!(!std::fs::read_to_string(ws.join(".git/config"))
        .unwrap()
        .contains("hooksPath"));
}

#[test]
fn git_commit_works_inside() {
    let ws = Ws::new();
    let o = sh(
        ws.path(),
        "build",
        &[],
        "git init -q . && echo hi > a && git add a && \
         git -c user.name=t -c user.email=t@e commit -qm one && git log --oneline | wc -l",
    );
    assert_eq!(ok(&o).trim(), "1");
}

#[test]
fn proc_shows_only_the_cells_processes() {
    let ws = Ws::new();
    let m = marker();
    let mut outside = std::process::Command::new("sleep")
        .arg("30")
        .arg0_compat(&m)
        .spawn()
        .expect("start sleep");
    let o = sh(
        ws.path(),
        "build",
        &[],
        "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline; echo; done; echo pid1=$(cat /proc/1/comm)",
    );
    let _ = outside.kill();
    let _ = outside.wait();
    let out = ok(&o);
    assert!(!out.contains(&m), "outside process visible: {out}");
    assert!(out.contains("pid1=taskcell"), "{out}");
    let pids = std::fs::read_dir("/proc").unwrap().count();
    assert!(pids > 10, "sanity: the host has processes");
    // init, sh, and the short-lived readers: a handful at most.
    assert!(out.lines().count() <= 6, "{out}");
}

/// `Command::arg0`-free way to put a marker in a process's command line.
trait Arg0Compat {
    fn arg0_compat(&mut self, m: &str) -> &mut Self;
}
impl Arg0Compat for std::process::Command {
    fn arg0_compat(&mut self, m: &str) -> &mut Self {
        use std::os::unix::process::CommandExt;
        self.arg0(m)
    }
}

#[test]
fn no_network_interface_but_lo_and_lo_is_down() {
    let ws = Ws::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let o = sh(
        ws.path(),
        "build",
        &[],
        &format!(
            "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; \
             curl -s -m 5 http://127.0.0.1:{port}/ >/dev/null 2>&1; echo curl=$?"
        ),
    );
    let out = ok(&o);
    assert_eq!(out.lines().next(), Some("lo"), "{out}");
    assert_eq!(out.lines().count(), 2, "{out}");
    // lo is down: 127.0.0.1 is unreachable (curl 7: could not connect).
    assert!(out.contains("curl=7"), "{out}");
}

#[test]
fn loopback_mode_reaches_itself_but_not_the_host() {
    let ws = Ws::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    // Landlock lets a loopback cell bind and connect only to the ports its profile
    // declares (the cell's own network namespace: the port cannot collide).
    let prof = ws.join("lo.toml");
    std::fs::write(
        &prof,
        format!("extends = \"build\"\n[security]\ntcp_ports = [18080, {port}]\n"),
    )
    .unwrap();
    let o = sh(
        ws.path(),
        &prof.display().to_string(),
        &["--net", "loopback"],
        &format!(
            "curl -s -m 5 http://127.0.0.1:{port}/ >/dev/null 2>&1; echo host=$?; \
             python3 -c 'import socket; s=socket.socket(); s.bind((\"127.0.0.1\",18080)); s.listen(); \
             c=socket.create_connection(s.getsockname()); print(\"self=ok\")'"
        ),
    );
    let out = ok(&o);
    assert!(out.contains("host=7"), "{out}");
    assert!(out.contains("self=ok"), "{out}");
    // And the host's listener saw nothing.
    assert!(listener.accept().is_err());
}

#[test]
fn exit_codes_pass_through() {
    let ws = Ws::new();
    assert_eq!(sh(ws.path(), "build", &[], "exit 0").status.code(), Some(0));
    assert_eq!(sh(ws.path(), "build", &[], "exit 3").status.code(), Some(3));
    assert_eq!(
        sh(ws.path(), "build", &[], "exit 255").status.code(),
        Some(255)
    );
    // Killed by a signal: 128 + N.
    assert_eq!(
        sh(ws.path(), "build", &[], "kill -TERM $$").status.code(),
        Some(143)
    );
    assert_eq!(
        sh(ws.path(), "build", &[], "kill -KILL $$").status.code(),
        Some(137)
    );
}

#[test]
fn not_found_is_127_and_not_executable_is_126() {
    let ws = Ws::new();
    let o = taskcell(ws.path(), &["run", "--", "no-such-command-xyz"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(127));
    assert!(
        stderr(&o).contains("no-such-command-xyz: command not found"),
        "{}",
        stderr(&o)
    );
    std::fs::write(ws.join("script"), "#!/bin/sh\necho hi\n").unwrap();
    let o = taskcell(ws.path(), &["run", "--", "./script"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(126), "{}", stderr(&o));
    assert!(stderr(&o).contains("cannot execute"), "{}", stderr(&o));
}

#[test]
fn bad_input_gives_one_line_and_125() {
    let ws = Ws::new();
    let cases: &[(&[&str], &str)] = &[
        (
            &["run", "-w", "/nonexistent-ws", "--", "true"],
            "workspace /nonexistent-ws",
        ),
        (
            &["run", "-p", "no-such-profile", "--", "true"],
            "profile \"no-such-profile\" not found",
        ),
        (
            &["run", "--read", "/nonexistent-read", "--", "true"],
            "does not exist",
        ),
        (
            &["run", "-w", "/proc", "--", "true"],
            "cannot be a workspace",
        ),
    ];
    for (args, needle) in cases {
        let o = taskcell(ws.path(), args).output().unwrap();
        assert_eq!(o.status.code(), Some(125), "{args:?}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(e.contains(needle), "{args:?}: {e}");
        assert_eq!(e.lines().count(), 1, "{args:?}: {e}");
    }
}

#[test]
fn timeout_stops_the_command() {
    let ws = Ws::new();
    let start = Instant::now();
    let o = sh(ws.path(), "build", &["--timeout", "1s"], "sleep 30");
    assert_eq!(o.status.code(), Some(124), "{}", stderr(&o));
    assert!(stderr(&o).contains("timeout"), "{}", stderr(&o));
    assert!(start.elapsed() < Duration::from_secs(25));
}

#[test]
fn timeout_kills_a_command_that_ignores_sigterm() {
    let ws = Ws::new();
    let start = Instant::now();
    let o = sh(
        ws.path(),
        "build",
        &["--timeout", "1s"],
        "trap '' TERM; while :; do sleep 0.1; done",
    );
    assert_eq!(o.status.code(), Some(124), "{}", stderr(&o));
    assert!(start.elapsed() < Duration::from_secs(25));
}

#[test]
fn nothing_survives_a_sigkilled_taskcell() {
    let ws = Ws::new();
    let m = marker();
    let mut child = taskcell(
        ws.path(),
        &["run", "--", "/bin/sh", "-c", &format!("sleep 60; : {m}")],
    )
    .spawn()
    .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || !host_processes_with(&m)
            .is_empty()),
        "the cell's sleep never appeared"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = child.wait();
    assert!(
        wait_until(Duration::from_secs(10), || host_processes_with(&m)
            .is_empty()),
        "still running after taskcell was killed: {:?}",
        host_processes_with(&m)
    );
}

#[test]
fn no_daemon_survives_the_cell() {
    let ws = Ws::new();
    let m = marker();
    let o = sh(
        ws.path(),
        "build",
        &[],
        &format!(
            "(setsid sh -c 'touch daemon-up; sleep 60; : {m}' </dev/null >/dev/null 2>&1 &); \
             while [ ! -e daemon-up ]; do sleep 0.05; done; echo started"
        ),
    );
    assert!(ok(&o).contains("started"));
    assert!(ws.join("daemon-up").exists());
    assert!(
        wait_until(Duration::from_secs(5), || host_processes_with(&m)
            .is_empty()),
        "daemon survived: {:?}",
        host_processes_with(&m)
    );
}

#[test]
fn signals_are_forwarded_to_the_command() {
    let ws = Ws::new();
    let mut child = taskcell(
        ws.path(),
        &[
            "run",
            "--",
            "/bin/sh",
            "-c",
            "trap 'echo got-usr1; exit 7' USR1; echo ready; while :; do sleep 0.05; done",
        ],
    )
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut buf = [0u8; 6];
    stdout.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ready\n");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .unwrap();
    let status = child.wait().unwrap();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert_eq!(status.code(), Some(7), "{rest}");
    assert!(rest.contains("got-usr1"));
}

/// Field `n` (1-based, after the command name) of /proc/PID/stat.
fn stat_field(pid: u32, n: usize) -> Option<i64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &s[s.rfind(')')? + 2..];
    after.split(' ').nth(n - 3)?.parse().ok()
}

#[test]
fn the_cell_is_outside_the_terminals_process_group() {
    // A terminal sends Ctrl-C's SIGINT to its whole foreground process group. The
    // supervisor forwards it to the command; if the cell's init were in that group too,
    // the command would get it twice. Likewise the command must not be in it.
    use std::os::unix::process::CommandExt;
    let ws = Ws::new();
    let m = marker();
    let mut child = taskcell(
        ws.path(),
        &["run", "--", "/bin/sh", "-c", &format!("sleep 30; : {m}")],
    )
    .process_group(0)
    .spawn()
    .unwrap();
    let launcher = child.id();
    assert!(wait_until(Duration::from_secs(10), || {
        !host_processes_with(&m).is_empty()
    }));
    let children = std::fs::read_to_string(format!("/proc/{launcher}/task/{launcher}/children"))
        .unwrap_or_default();
    let init: u32 = children
        .split_whitespace()
        .next()
        .expect("the cell's init")
        .parse()
        .unwrap();
    let worker = host_processes_with(&m)[0];
    let launcher_pgrp = stat_field(launcher, 5).unwrap();
    assert_eq!(launcher_pgrp, launcher as i64);
    assert_ne!(
        stat_field(init, 5),
        Some(launcher_pgrp),
        "init is in the launcher's group"
    );
    assert_ne!(
        stat_field(worker, 5),
        Some(launcher_pgrp),
        "the command is in the launcher's group"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn inherited_fd_is_not_usable_inside() {
    let ws = Ws::new();
    let outside = Ws::new();
    std::fs::write(outside.join("canary"), "fd-canary").unwrap();
    let dir = std::fs::File::open(outside.path()).unwrap();
    let fd = dir.as_raw_fd();
    // Clear close-on-exec so taskcell inherits it, as a careless caller would leave it.
    nix::fcntl::fcntl(
        fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )
    .unwrap();
    let o = sh(
        ws.path(),
        "build",
        &[],
        &format!("cat /proc/self/fd/{fd}/canary 2>&1; ls /proc/self/fd | tr '\\n' ' '"),
    );
    drop(dir);
    let out = ok(&o);
    assert!(!out.contains("fd-canary"), "{out}");
    // Only 0, 1, 2 and the fd `ls` opens for /proc/self/fd.
    assert_eq!(
        out.lines().last().unwrap().split_whitespace().count(),
        4,
        "{out}"
    );
}

#[test]
fn environment_is_cleared() {
    let ws = Ws::new();
    let o = taskcell(ws.path(), &["run", "--env", "KEEP=1", "--", "/usr/bin/env"])
        .env("AWS_SECRET_ACCESS_KEY", "leak")
        .env("LANG", "C.UTF-8")
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    let out = ok(&o);
    assert!(!out.contains("AWS_SECRET"), "{out}");
    assert!(out.contains("KEEP=1"), "{out}");
    assert!(out.contains("LANG=C.UTF-8"), "{out}");
    assert!(out.contains("LC_ALL=C"), "{out}");
    assert!(out.contains("PATH="), "{out}");
    let home = std::env::var("HOME").unwrap_or_else(|_| "/nonexistent".into());
    assert!(out.contains(&format!("HOME={home}")), "{out}");
    let names: Vec<&str> = out.lines().filter_map(|l| l.split('=').next()).collect();
    for n in &names {
        assert!(
            // The build profile's package caches (taskcell's own, under ~/.cache/taskcell).
            [
                "PATH",
                "HOME",
                "LANG",
                "LC_ALL",
                "KEEP",
                "CARGO_HOME",
                "npm_config_cache",
                "PIP_CACHE_DIR",
                "YARN_CACHE_FOLDER",
            ]
            .contains(n),
            "unexpected variable {n}: {out}"
        );
    }
}

#[test]
fn no_capabilities_and_no_new_privs() {
    let ws = Ws::new();
    let out = ok(&sh(
        ws.path(),
        "build",
        &[],
        "grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs)' /proc/self/status",
    ));
    for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert!(
            out.contains(&format!("{cap}:\t0000000000000000")),
            "{cap} not zero: {out}"
        );
    }
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
}

#[test]
fn ids_inside_equal_the_callers() {
    let ws = Ws::new();
    let out = ok(&sh(
        ws.path(),
        "build",
        &[],
        "id -u; id -g; cat /proc/self/uid_map",
    ));
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], uid.to_string());
    assert_eq!(lines[1], gid.to_string());
    let map: Vec<&str> = lines[2].split_whitespace().collect();
    if uid == 0 {
        // Root-started: the caller's ids inside, one unprivileged host id outside
        // (tests/rootcells.rs).
        assert_eq!(map[0], "0");
        assert_ne!(map[1], "0", "{out}");
        assert_eq!(map[2], "1");
    } else {
        assert_eq!(map, vec![uid.to_string(), uid.to_string(), "1".into()]);
    }
}

#[test]
fn root_gains_nothing_inside() {
    // As root and as a plain user alike: no way to read a root-only file outside the plan,
    // change the hostname, or mount.
    let ws = Ws::new();
    let out = ok(&sh(
        ws.path(),
        "build",
        &[],
        "cat /etc/shadow | wc -c; hostname evil 2>/dev/null && echo HOSTNAME; \
         mount -t tmpfs x /tmp 2>/dev/null && echo MOUNT; \
         unshare -U true 2>/dev/null; echo done",
    ));
    assert!(out.starts_with("0\n"), "/etc/shadow must be hidden: {out}");
    assert!(!out.contains("HOSTNAME"), "{out}");
    assert!(!out.contains("MOUNT"), "{out}");
}

/// Try a sysctl and the IRQ affinity (each written back with the value it has, so
/// nothing changes even if the boundary were gone: root in a plain `unshare -Ur` writes
/// the second) and kernel state a container masks; prints what got through.
const PROC_PROBE: &str = "v=$(cat /proc/sys/kernel/printk_ratelimit); \
     echo $v > /proc/sys/kernel/printk_ratelimit && echo SYSCTL-WRITTEN; \
     v=$(cat /proc/irq/default_smp_affinity 2>/dev/null) && \
       { echo $v > /proc/irq/default_smp_affinity && echo IRQ-WRITTEN; }; \
     cat /proc/sys/kernel/printk_ratelimit >/dev/null && echo sysctl-readable; \
     [ -n \"$(head -c 1 /proc/timer_list 2>/dev/null)\" ] && echo TIMERS-VISIBLE; \
     ls /proc/acpi 2>/dev/null | grep -q . && echo ACPI-VISIBLE; echo done";

#[test]
fn host_kernel_settings_cannot_be_changed_from_proc() {
    // A root-started cell's uid 0 is an unprivileged host id: procfs refuses its writes to
    // the host's settings by file mode, and /proc/sys is read-only (the cell's root owns
    // the sysctls of its own namespaces). A plain user's cell is that user.
    let ws = Ws::new();
    let o = sh(ws.path(), "build", &[], PROC_PROBE);
    let out = ok(&o);
    assert!(!out.contains("SYSCTL-WRITTEN"), "{out}");
    assert!(!out.contains("IRQ-WRITTEN"), "{out}");
    assert!(out.contains("sysctl-readable"), "{out}");
    assert!(out.ends_with("done\n"), "{out}");
    // Landlock refuses the write too (the cell may only read /proc): the error says which
    // layer answered first.
    if is_root() {
        let err = stderr(&o);
        assert!(
            err.contains("printk_ratelimit: Read-only file system"),
            "{err}"
        );
    }
}

#[test]
fn kernel_state_is_masked_where_uid_0_is_the_host_root() {
    // Root in a nested user namespace gets no host id (it cannot map another): the cell's
    // uid 0 is the host's root, to which procfs's file-mode checks would give
    // kernel.core_pattern (a way out) and the kernel's state; /proc/sys, /proc/irq,
    // /proc/bus and /proc/fs are read-only and that state is masked.
    if !is_root() {
        println!("kernel_state_is_masked_where_uid_0_is_the_host_root: skipped: needs root");
        return;
    }
    let nested = std::process::Command::new("unshare")
        .args(["-Ur", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !nested {
        println!("kernel_state_is_masked_where_uid_0_is_the_host_root: skipped: no `unshare -Ur`");
        return;
    }
    // Sanity: the host shows timer_list content, so the check can see a leak.
    assert!(!std::fs::read_to_string("/proc/timer_list")
        .unwrap_or_default()
        .is_empty());
    let ws = Ws::new();
    let mut c = taskcell(ws.path(), &[]);
    c.args(["run", "-p", "build", "--", "/bin/sh", "-c", PROC_PROBE]);
    let mut u = std::process::Command::new("unshare");
    u.arg("-Ur")
        .arg(c.get_program())
        .args(c.get_args())
        .current_dir(ws.path())
        .env_clear()
        .envs(c.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))))
        .stdin(std::process::Stdio::null());
    let o = u.output().expect("running taskcell in unshare -Ur");
    let out = ok(&o);
    // Landlock refuses these writes too: the error says the mounts answered first.
    let err = stderr(&o);
    assert!(
        err.contains("printk_ratelimit: Read-only file system"),
        "{err}"
    );
    if std::path::Path::new("/proc/irq/default_smp_affinity").exists() {
        assert!(
            err.contains("default_smp_affinity: Read-only file system"),
            "{err}"
        );
    }
    assert!(out.contains("sysctl-readable"), "{out}");
    assert!(!out.contains("SYSCTL-WRITTEN"), "{out}");
    assert!(!out.contains("IRQ-WRITTEN"), "{out}");
    assert!(!out.contains("VISIBLE"), "{out}");
    assert!(out.ends_with("done\n"), "{out}");
}

#[test]
fn hostname_is_the_cells_own() {
    let ws = Ws::new();
    let host_before = nix::unistd::gethostname().unwrap();
    let out = ok(&sh(
        ws.path(),
        "build",
        &[],
        "hostname; cat /proc/sys/kernel/hostname",
    ));
    assert_eq!(out, "taskcell\ntaskcell\n");
    assert_eq!(nix::unistd::gethostname().unwrap(), host_before);
}

#[test]
fn profile_hostname_is_applied_without_changing_the_host() {
    let ws = Ws::new();
    std::fs::write(
        ws.join("p.toml"),
        "extends = \"build\"\nhostname = \"cell-x\"\n",
    )
    .unwrap();
    let host_before = nix::unistd::gethostname().unwrap();
    let p = ws.join("p.toml").display().to_string();
    let out = ok(&taskcell(ws.path(), &["run", "-p", &p, "--", "hostname"])
        .output()
        .unwrap());
    assert_eq!(out, "cell-x\n");
    assert_eq!(nix::unistd::gethostname().unwrap(), host_before);
}

#[test]
fn audit_log_records_start_and_end() {
    let ws = Ws::new();
    let log = ws.outside("audit.jsonl");
    let l = log.display().to_string();
    let o = taskcell(
        ws.path(),
        &[
            "run",
            "--audit-log",
            &l,
            "--timeout",
            "1s",
            "--",
            "/bin/sh",
            "-c",
            "exit 4",
        ],
    )
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(4));
    let text = std::fs::read_to_string(&log).unwrap();
    let all: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    // Root-started cells also record the host ids they ran as.
    let host_ids: Vec<&serde_json::Value> =
        all.iter().filter(|l| l["event"] == "host_ids").collect();
    assert_eq!(host_ids.len(), usize::from(is_root()), "{text}");
    for h in &host_ids {
        assert!(h["uid"].as_u64().is_some_and(|u| u > 0), "{text}");
    }
    // The profile's package caches are created (and recorded) on a home's first run.
    let lines: Vec<serde_json::Value> = all
        .into_iter()
        .filter(|l| l["event"] != "host_ids" && l["event"] != "created")
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0]["event"], "session_start");
    assert_eq!(lines[0]["profile"], "build");
    assert_eq!(lines[0]["plan_sha256"].as_str().unwrap().len(), 64);
    assert_eq!(lines[0]["command"][0], "/bin/sh");
    assert_eq!(lines[0]["boundary"]["network"], "none");
    assert_eq!(lines[1]["event"], "session_end");
    assert_eq!(lines[1]["exit_code"], 4);
    assert_eq!(lines[1]["timed_out"], false);
    assert_eq!(lines[0]["session"], lines[1]["session"]);
    // A timeout is recorded as such.
    let o = taskcell(
        ws.path(),
        &[
            "run",
            "--audit-log",
            &l,
            "--timeout",
            "1s",
            "--",
            "sleep",
            "20",
        ],
    )
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(124));
    let text = std::fs::read_to_string(&log).unwrap();
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["timed_out"], true);
    assert_eq!(last["signal"], 15);
}

#[test]
fn dry_run_prints_the_plan_and_runs_nothing() {
    let ws = Ws::new();
    let o = taskcell(
        ws.path(),
        &["run", "--dry-run", "--", "/bin/sh", "-c", "touch ran"],
    )
    .output()
    .unwrap();
    let out = ok(&o);
    assert!(out.contains("profile:   build"), "{out}");
    assert!(out.contains("mount sequence"), "{out}");
    assert!(!ws.join("ran").exists());
}

#[test]
fn explain_json_lists_every_path_and_flags_host_network() {
    let ws = Ws::new();
    let o = taskcell(
        ws.path(),
        &["explain", "-p", "agent", "--net", "host", "--json"],
    )
    .output()
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&ok(&o)).unwrap();
    let paths = v["plan"]["paths"].as_array().unwrap();
    let ws_real = std::fs::canonicalize(ws.path()).unwrap();
    assert!(paths
        .iter()
        .any(|p| p["path"] == ws_real.display().to_string() && p["access"] == "write"));
    assert!(paths
        .iter()
        .any(|p| p["path"] == "/usr" && p["access"] == "read"));
    assert!(v["warnings"][0].as_str().unwrap().contains("UNSAFE"));
}

#[test]
fn host_network_mode_shares_the_network() {
    let ws = Ws::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let o = sh(
        ws.path(),
        "build",
        &["--net", "host"],
        &format!("curl -s -m 5 http://127.0.0.1:{port}/ >/dev/null 2>&1; echo rc=$?"),
    );
    // The connection is accepted (the server never answers, so curl times out: 28) or
    // reset (52/56); what matters is that it is not "could not connect" (7).
    let out = ok(&o);
    assert!(!out.contains("rc=7"), "{out}");
    assert!(stderr(&o).contains("UNSAFE"), "{}", stderr(&o));
}

#[test]
fn check_reports_profile_errors_with_line_numbers() {
    let ws = Ws::new();
    let cases = [
        (
            "unknown.toml",
            "description = \"x\"\n\n[filesystem]\nreed = [\"/usr\"]\n",
            "line 4",
            "unknown field `reed`",
        ),
        (
            "type.toml",
            "description = \"x\"\n[network]\nmode = 3\n",
            "line 3",
            "invalid type",
        ),
        (
            "mode.toml",
            "[network]\nmode = \"wifi\"\n",
            "line 2",
            "not a mode",
        ),
        (
            "dur.toml",
            "[limits]\ntimeout = \"10 parsecs\"\n",
            "line 2",
            "limits.timeout",
        ),
    ];
    for (name, text, line, msg) in cases {
        std::fs::write(ws.join(name), text).unwrap();
        let f = ws.join(name).display().to_string();
        let o = taskcell(ws.path(), &["check", &f]).output().unwrap();
        assert_eq!(o.status.code(), Some(1), "{name}");
        let e = stderr(&o);
        assert!(e.contains(&format!("profile {f} {line}")), "{name}: {e}");
        assert!(e.contains(msg), "{name}: {e}");
    }
    // A missing path is an error of the run (paths are checked when the plan is made),
    // with the file and line of the entry.
    std::fs::write(
        ws.join("missing.toml"),
        "extends = \"build\"\n[filesystem]\nread = [\"/nonexistent-data\"]\n",
    )
    .unwrap();
    let f = ws.join("missing.toml").display().to_string();
    let o = taskcell(ws.path(), &["run", "-p", &f, "--", "true"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains(&format!(
            "profile {f} line 3: `read` path /nonexistent-data does not exist (mark it optional = true or create it)"
        )),
        "{}",
        stderr(&o)
    );
}

#[test]
fn extends_cycle_is_an_error() {
    let ws = Ws::new();
    let a = ws.join("a.toml");
    let b = ws.join("b.toml");
    std::fs::write(&a, format!("extends = \"{}\"\n", b.display())).unwrap();
    std::fs::write(&b, format!("extends = \"{}\"\n", a.display())).unwrap();
    let o = taskcell(ws.path(), &["check", &a.display().to_string()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("`extends` makes a cycle"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn builtin_profiles_check_and_list() {
    let ws = Ws::new();
    let o = taskcell(ws.path(), &["check", "base", "build", "review", "agent"])
        .output()
        .unwrap();
    ok(&o);
    let out = ok(&taskcell(ws.path(), &["profiles"]).output().unwrap());
    for p in ["base", "build", "review", "agent"] {
        assert!(out.lines().any(|l| l.starts_with(p)), "{out}");
    }
}

#[test]
fn user_profiles_come_from_xdg_config_home() {
    let ws = Ws::new();
    let cfg = Ws::new();
    std::fs::create_dir_all(cfg.join("taskcell/profiles")).unwrap();
    std::fs::write(
        cfg.join("taskcell/profiles/mine.toml"),
        "description = \"my own\"\nextends = \"review\"\nhostname = \"mine\"\n",
    )
    .unwrap();
    let out = ok(
        &taskcell(ws.path(), &["run", "-p", "mine", "--", "hostname"])
            .env("XDG_CONFIG_HOME", cfg.path())
            .output()
            .unwrap(),
    );
    assert_eq!(out, "mine\n");
    let list = ok(&taskcell(ws.path(), &["profiles"])
        .env("XDG_CONFIG_HOME", cfg.path())
        .output()
        .unwrap());
    assert!(list.contains("my own"), "{list}");
}

#[test]
fn doctor_reports_user_namespaces() {
    let ws = Ws::new();
    let o = taskcell(ws.path(), &["doctor", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let userns = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "user namespaces")
        .unwrap()
        .clone();
    // This suite runs where user namespaces work (the no-userns case is tests/no_userns.rs).
    assert_eq!(userns["ok"], true, "{v}");
}

#[test]
fn a_mount_below_a_read_only_path_is_read_only_too() {
    // A recursive bind carries the mounts below the bound path; each must be remounted
    // read-only, or it would be a writable hole in a read-only path.
    if !is_root() {
        eprintln!("SKIPPED a_mount_below_a_read_only_path_is_read_only_too: mounting on the host needs root");
        return;
    }
    let ws = Ws::new();
    let extra = Ws::new();
    std::fs::create_dir(extra.join("sub")).unwrap();
    let sub = extra.join("sub").display().to_string();
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "taskcell-test", &sub])
        .status()
        .unwrap();
    assert!(st.success(), "mount a tmpfs on the host");
    let d = extra.path().display().to_string();
    let o = sh(
        ws.path(),
        "build",
        &["--read", &d],
        &format!("touch {d}/sub/x 2>/dev/null && echo WROTE-SUBMOUNT; touch {d}/y 2>/dev/null && echo WROTE-TOP; grep -c ' {d}/sub ' /proc/self/mountinfo"),
    );
    let _ = std::process::Command::new("umount").arg(&sub).status();
    let out = ok(&o);
    assert!(!out.contains("WROTE"), "{out}");
    assert_eq!(
        out.trim(),
        "1",
        "the submount is visible in the cell: {out}"
    );
}

/// The host's root leaves the cell's mount namespace before the command runs. It hangs
/// below the staging root, which a thread of init detaches while the worker sets up its
/// process (the detach waits for an RCU grace period); the worker waits for it before its
/// `execve`. The command's very first look at its mount table, many times over, has one
/// mount on `/` and nothing of the staging or the host's root.
#[test]
fn the_host_root_is_gone_when_the_command_starts() {
    let ws = Ws::new();
    for _ in 0..20 {
        let o = taskcell(
            ws.path(),
            &[
                "run",
                "-p",
                "build",
                "--",
                "/bin/cat",
                "/proc/self/mountinfo",
            ],
        )
        .output()
        .expect("running taskcell");
        let table = ok(&o);
        let points: Vec<&str> = table.lines().filter_map(|l| l.split(' ').nth(4)).collect();
        assert_eq!(
            points.iter().filter(|p| **p == "/").count(),
            1,
            "one mount on / (the cell's root), not the staging root stacked on it:\n{table}"
        );
        assert!(
            !points
                .iter()
                .any(|p| p.starts_with("/oldroot") || p.starts_with("/newroot")),
            "nothing of the host's root or the staging root:\n{table}"
        );
    }
}
