//! Landlock and seccomp inside real cells (issue 3). The probe binary calls syscalls and
//! prints their errno; each test would fail if the layer it checks were gone (several run
//! the same thing with the layer turned off in the profile to show the difference).
mod common;
use common::*;

use std::collections::BTreeMap;
use std::os::linux::net::SocketAddrExt;
use std::path::Path;
use std::sync::OnceLock;

const EPERM: i32 = 1;
const EACCES: i32 = 13;
const ENOSYS: i32 = 38;

/// Write a profile file next to the workspace and return its path.
fn profile(ws: &Ws, name: &str, toml: &str) -> String {
    let p = ws.path().join(format!("{name}.toml"));
    std::fs::write(&p, toml).expect("writing profile");
    p.display().to_string()
}

/// Run the probe in a cell of `profile` with extra args; returns the raw output.
fn run_probe(ws: &Ws, profile: &str, extra: &[&str], probe_args: &[&str]) -> std::process::Output {
    let pd = probe_dir();
    let mut args = vec!["run", "-p", profile, "--read", &pd];
    args.extend_from_slice(extra);
    args.push("--");
    args.push(probe());
    args.extend_from_slice(probe_args);
    taskcell(ws.path(), &args)
        .output()
        .expect("running taskcell")
}

fn parse(out: &str) -> BTreeMap<String, i32> {
    out.lines()
        .filter_map(|l| {
            let (n, e) = l.split_once(' ')?;
            Some((n.to_string(), e.trim().parse().ok()?))
        })
        .collect()
}

/// Every call of the deny list, once, inside a `build` cell.
fn denied() -> &'static BTreeMap<String, i32> {
    static R: OnceLock<BTreeMap<String, i32>> = OnceLock::new();
    R.get_or_init(|| {
        let ws = Ws::new();
        parse(&ok(&run_probe(&ws, "build", &[], &["denied"])))
    })
}

/// The same calls in a cell whose profile gives every one of them back.
fn allowed_back() -> &'static BTreeMap<String, i32> {
    static R: OnceLock<BTreeMap<String, i32>> = OnceLock::new();
    R.get_or_init(|| {
        let ws = Ws::new();
        let names = taskcell::spec::seccomp::filter(&taskcell::spec::seccomp::Policy::default())
            .rules
            .iter()
            .map(|r| format!("{:?}", r.name))
            .collect::<Vec<_>>()
            .join(", ");
        let p = profile(
            &ws,
            "allowall",
            &format!(
                "extends = \"build\"\n[security]\nallow_userns = true\nseccomp.allow = [{names}, \"socket\"]\n"
            ),
        );
        parse(&ok(&run_probe(&ws, &p, &[], &["denied"])))
    })
}

/// Calls whose errno without the filter is EPERM anyway (capability checks come first in
/// the kernel): for these the errno alone cannot show the filter; the rest must differ.
const EPERM_ANYWAY: &[&str] = &[
    "clone-newns",
    "clone-newnet",
    "pivot_root",
    "move_mount",
    "fsopen",
    "fsmount",
    "fspick",
    "acct",
    "swapon",
    "swapoff",
    "reboot",
    "syslog",
    "settimeofday",
    "socket-packet",
];

fn check_denied(name: &str, want: i32) {
    let got = denied().get(name).copied();
    assert_eq!(
        got,
        Some(want),
        "{name}: errno {got:?} inside the cell, want {want}"
    );
    if !EPERM_ANYWAY.contains(&name) {
        let without = allowed_back().get(name).copied();
        assert!(
            without.is_some() && without != Some(want),
            "{name}: without the filter the errno should differ from {want}, got {without:?}"
        );
    }
}

macro_rules! denied_tests {
    ($($t:ident => $name:literal, $errno:expr;)*) => {
        $(
            #[test]
            fn $t() {
                check_denied($name, $errno);
            }
        )*
    };
}

#[cfg(target_arch = "x86_64")]
denied_tests! {
    seccomp_modify_ldt => "modify_ldt", EPERM;
}

denied_tests! {
    seccomp_mount => "mount", EPERM;
    seccomp_umount2 => "umount2", EPERM;
    seccomp_pivot_root => "pivot_root", EPERM;
    seccomp_move_mount => "move_mount", EPERM;
    seccomp_open_tree => "open_tree", EPERM;
    seccomp_fsopen => "fsopen", EPERM;
    seccomp_fsconfig => "fsconfig", EPERM;
    seccomp_fsmount => "fsmount", EPERM;
    seccomp_fspick => "fspick", EPERM;
    seccomp_mount_setattr => "mount_setattr", EPERM;
    seccomp_unshare => "unshare", EPERM;
    seccomp_setns => "setns", EPERM;
    seccomp_clone_newuser => "clone-newuser", EPERM;
    seccomp_clone_newns => "clone-newns", EPERM;
    seccomp_clone_newnet => "clone-newnet", EPERM;
    seccomp_clone3_enosys => "clone3", ENOSYS;
    seccomp_ptrace => "ptrace", EPERM;
    seccomp_process_vm_readv => "process_vm_readv", EPERM;
    seccomp_process_vm_writev => "process_vm_writev", EPERM;
    seccomp_pidfd_getfd => "pidfd_getfd", EPERM;
    seccomp_bpf => "bpf", EPERM;
    seccomp_perf_event_open => "perf_event_open", EPERM;
    seccomp_userfaultfd => "userfaultfd", EPERM;
    seccomp_io_uring_setup => "io_uring_setup", EPERM;
    seccomp_io_uring_enter => "io_uring_enter", EPERM;
    seccomp_io_uring_register => "io_uring_register", EPERM;
    seccomp_keyctl => "keyctl", EPERM;
    seccomp_add_key => "add_key", EPERM;
    seccomp_request_key => "request_key", EPERM;
    seccomp_kexec_load => "kexec_load", EPERM;
    seccomp_kexec_file_load => "kexec_file_load", EPERM;
    seccomp_init_module => "init_module", EPERM;
    seccomp_finit_module => "finit_module", EPERM;
    seccomp_delete_module => "delete_module", EPERM;
    seccomp_open_by_handle_at => "open_by_handle_at", EPERM;
    seccomp_name_to_handle_at => "name_to_handle_at", EPERM;
    seccomp_acct => "acct", EPERM;
    seccomp_swapon => "swapon", EPERM;
    seccomp_swapoff => "swapoff", EPERM;
    seccomp_reboot => "reboot", EPERM;
    seccomp_syslog => "syslog", EPERM;
    seccomp_quotactl => "quotactl", EPERM;
    seccomp_settimeofday => "settimeofday", EPERM;
    seccomp_clock_settime => "clock_settime", EPERM;
    seccomp_adjtimex => "adjtimex", EPERM;
    seccomp_clock_adjtime => "clock_adjtime", EPERM;
    seccomp_personality => "personality", EPERM;
    seccomp_ioctl_tiocsti => "ioctl-tiocsti", EPERM;
    seccomp_ioctl_tiocsti_high_bits => "ioctl-tiocsti-high", EPERM;
    seccomp_ioctl_tioclinux => "ioctl-tioclinux", EPERM;
    seccomp_ioctl_tiocsetd => "ioctl-tiocsetd", EPERM;
    seccomp_ioctl_tioccons => "ioctl-tioccons", EPERM;
    seccomp_socket_packet => "socket-packet", EPERM;
    seccomp_socket_vsock => "socket-vsock", EPERM;
    seccomp_socket_alg => "socket-alg", EPERM;
    seccomp_socket_netlink_audit => "socket-netlink-audit", EPERM;
    seccomp_socket_mptcp => "socket-mptcp", EPERM;
}

#[test]
fn seccomp_x32_abi() {
    // No profile key gives x32 back: compare with the probe run outside any cell.
    assert_eq!(denied().get("x32"), Some(&EPERM));
    let native = std::process::Command::new(probe())
        .args(["sys", "x32"])
        .output()
        .expect("probe");
    assert_ne!(String::from_utf8_lossy(&native.stdout), "x32 1\n");
}

#[test]
fn seccomp_leaves_ordinary_calls_alone() {
    let d = denied();
    for ok_call in [
        "clone-plain",
        "personality-query",
        "socket-netlink-route",
        "socket-inet",
        "socket-unix",
        "getppid",
    ] {
        assert_eq!(d.get(ok_call), Some(&0), "{ok_call} must succeed: {d:?}");
    }
    // An ordinary ioctl on a bad fd fails with EBADF, not with the filter's EPERM.
    assert_eq!(d.get("ioctl-tcgets"), Some(&9));
}

#[cfg(target_arch = "x86_64")]
#[test]
fn seccomp_kills_i386_abi_calls() {
    let ws = Ws::new();
    let o = run_probe(&ws, "build", &[], &["i386"]);
    // SIGSYS (31): the process is killed.
    assert_eq!(o.status.code(), Some(128 + 31), "{}", stderr(&o));
}

#[test]
fn seccomp_profile_deny_adds_a_call() {
    let ws = Ws::new();
    let p = profile(
        &ws,
        "denygetppid",
        "extends = \"build\"\n[security]\nseccomp.deny = [\"getppid\"]\n",
    );
    let out = ok(&run_probe(&ws, &p, &[], &["sys", "getppid"]));
    assert_eq!(out, "getppid 1\n");
    let out = ok(&run_probe(&ws, "build", &[], &["sys", "getppid"]));
    assert_eq!(out, "getppid 0\n");
}

#[test]
fn explain_prints_the_effective_lists() {
    let ws = Ws::new();
    let p = profile(
        &ws,
        "tuned",
        "extends = \"build\"\n[security]\nseccomp.deny = [\"chroot\"]\nseccomp.allow = [\"ptrace\"]\ntcp_ports = [8080]\n",
    );
    let out = ok(
        &taskcell(ws.path(), &["explain", "-p", &p, "--net", "loopback"])
            .output()
            .expect("explain"),
    );
    assert!(
        out.contains("chroot -> EPERM (denied by the profile)"),
        "{out}"
    );
    assert!(!out.contains("ptrace ->"), "{out}");
    assert!(out.contains("ioctl if arg1 == TIOCSTI"), "{out}");
    assert!(out.contains("bind and connect only on port 8080"), "{out}");
    assert!(out.contains("without user namespaces"), "{out}");
}

#[test]
fn bad_security_keys_name_their_line() {
    let ws = Ws::new();
    let p = profile(
        &ws,
        "bad",
        "extends = \"build\"\n\n[security]\nseccomp.deny = [\"nosuchcall\"]\n",
    );
    let o = taskcell(ws.path(), &["check", &p]).output().expect("check");
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("line 4") && e.contains("nosuchcall"), "{e}");
    let p = profile(&ws, "bad2", "[security]\ntcp_ports = [70000]\n");
    let o = taskcell(ws.path(), &["check", &p]).output().expect("check");
    let e = stderr(&o);
    assert!(e.contains("line 2") && e.contains("70000"), "{e}");
    let p = profile(&ws, "bad3", "[security]\nlandlok = true\n");
    let o = taskcell(ws.path(), &["check", &p]).output().expect("check");
    assert!(stderr(&o).contains("line 2"), "{}", stderr(&o));
}

// ---- Landlock ----

fn landlock_off(ws: &Ws) -> String {
    profile(
        ws,
        "nolandlock",
        "extends = \"build\"\n[security]\nlandlock = false\ntcp_ports = [0]\n",
    )
}

#[test]
fn landlock_refuses_writes_the_mounts_allow() {
    // /proc is mounted read-write in the cell; Landlock grants it read-only.
    let ws = Ws::new();
    let script = "echo 1000 > /proc/self/oom_score_adj && echo wrote";
    let o = sh(ws.path(), "build", &[], script);
    assert!(!o.status.success(), "{}", stdout(&o));
    assert!(stderr(&o).contains("Permission denied"), "{}", stderr(&o));
    let off = landlock_off(&ws);
    assert_eq!(ok(&sh(ws.path(), &off, &[], script)), "wrote\n");
}

#[test]
fn landlock_tcp_blocks_undeclared_loopback_port() {
    let ws = Ws::new();
    // Port 0 lets the cell bind an ephemeral port; connecting to it is still refused,
    // because that port is not declared.
    let p = profile(
        &ws,
        "eph",
        "extends = \"build\"\n[security]\ntcp_ports = [0]\n",
    );
    let out = ok(&run_probe(
        &ws,
        &p,
        &["--net", "loopback"],
        &["tcp-ephemeral"],
    ));
    assert_eq!(out, format!("bind 0 connect {EACCES}\n"));
    let off = landlock_off(&ws);
    let out = ok(&run_probe(
        &ws,
        &off,
        &["--net", "loopback"],
        &["tcp-ephemeral"],
    ));
    assert_eq!(out, "bind 0 connect 0\n");
}

#[test]
fn tcp_any_port_leaves_loopback_to_the_network_namespace() {
    // For test suites that bind an ephemeral port and connect to it.
    let ws = Ws::new();
    let p = profile(
        &ws,
        "anyport",
        "extends = \"build\"\n[security]\ntcp_any_port = true\n",
    );
    let out = ok(&run_probe(
        &ws,
        &p,
        &["--net", "loopback"],
        &["tcp-ephemeral"],
    ));
    assert_eq!(out, "bind 0 connect 0\n");
    // Filesystem rules stay: /proc is still read-only.
    let o = sh(ws.path(), &p, &[], "echo 1000 > /proc/self/oom_score_adj");
    assert!(!o.status.success());
}

#[test]
fn landlock_tcp_allows_declared_port_only() {
    let ws = Ws::new();
    let p = profile(
        &ws,
        "port",
        "extends = \"build\"\n[security]\ntcp_ports = [18777]\n",
    );
    let out = ok(&run_probe(
        &ws,
        &p,
        &["--net", "loopback"],
        &["tcp", "18777"],
    ));
    assert_eq!(out, "bind 0 connect 0\n");
    let out = ok(&run_probe(
        &ws,
        &p,
        &["--net", "loopback"],
        &["tcp", "18778"],
    ));
    assert_eq!(out, format!("bind {EACCES} connect -1\n"));
    let out = ok(&run_probe(
        &ws,
        &p,
        &["--net", "loopback"],
        &["connect", "18778"],
    ));
    assert_eq!(out, format!("{EACCES}\n"));
}

#[test]
fn landlock_signal_to_init_outside_the_domain_is_refused() {
    // PID 1 is the cell's init: same user, but outside the command's Landlock domain.
    let ws = Ws::new();
    let out = ok(&run_probe(&ws, "build", &[], &["kill", "1", "0"]));
    assert_eq!(out, format!("{EPERM}\n"));
    let off = landlock_off(&ws);
    let out = ok(&run_probe(&ws, &off, &[], &["kill", "1", "0"]));
    assert_eq!(out, "0\n");
    // Processes of the command itself can still be signalled.
    let out = ok(&sh(
        ws.path(),
        "build",
        &[],
        "sleep 5 & kill $! && wait $!; echo $?",
    ));
    assert_eq!(out, "143\n");
}

#[test]
fn landlock_scopes_abstract_unix_sockets() {
    // With the host network the abstract socket namespace is shared: only Landlock's
    // scope keeps the cell from connecting to a socket outside it.
    let ws = Ws::new();
    let name = format!("taskcell-test-{}", std::process::id());
    let addr =
        std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract addr");
    let _l = std::os::unix::net::UnixListener::bind_addr(&addr).expect("abstract listener");
    let out = ok(&run_probe(
        &ws,
        "build",
        &["--net", "host"],
        &["abstract", &name],
    ));
    assert_eq!(out, format!("{EPERM}\n"));
    let off = landlock_off(&ws);
    let out = ok(&run_probe(
        &ws,
        &off,
        &["--net", "host"],
        &["abstract", &name],
    ));
    assert_eq!(out, "0\n");
}

// ---- ordinary work under both layers ----

fn ordinary_work(profile: &str) {
    let ws = Ws::new();
    std::fs::write(ws.join("Makefile"), "all:\n\techo made > made.txt\n").expect("Makefile");
    let script = r#"set -e
echo sh-ok
git init -q repo && cd repo
git config user.email t@example.invalid && git config user.name t
echo hello > a.txt && git add a.txt && git commit -qm first && git log --oneline | wc -l
cd ..
make -s && cat made.txt
tar cf out.tar repo/a.txt && tar tf out.tar
find . -name a.txt
mkdir -p "$TMPDIR" 2>/dev/null || true; t=$(mktemp) && echo tmp-ok > "$t" && cat "$t"
"#;
    let out = ok(&sh(ws.path(), profile, &[], script));
    assert_eq!(
        out, "sh-ok\n1\nmade\nrepo/a.txt\n./repo/a.txt\ntmp-ok\n",
        "profile {profile}"
    );
    if Path::new("/usr/bin/python3").exists() {
        let out = ok(&sh(
            ws.path(),
            profile,
            &[],
            "/usr/bin/python3 -c 'import os, json; print(json.dumps(os.getcwd() != \"\"))'",
        ));
        assert_eq!(out, "true\n");
    }
}

#[test]
fn ordinary_work_in_build_profile() {
    ordinary_work("build");
}

#[test]
fn ordinary_work_in_agent_profile() {
    ordinary_work("agent");
}

#[test]
fn cargo_build_of_a_tiny_crate() {
    let home = std::env::var("HOME").unwrap_or_default();
    let cargo = Path::new(&home).join(".cargo/bin/cargo");
    if !is_root() || !cargo.exists() {
        eprintln!(
            "SKIPPED cargo_build_of_a_tiny_crate: cargo is only visible in a cell where the profile reads ~/.cargo and ~/.rustup of the user running the tests (root here); not as this user"
        );
        return;
    }
    for profile in ["build", "agent"] {
        let ws = Ws::new();
        std::fs::create_dir_all(ws.join("src")).expect("src");
        std::fs::write(
            ws.join("Cargo.toml"),
            "[package]\nname = \"tiny\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
        )
        .expect("Cargo.toml");
        std::fs::write(
            ws.join("src/main.rs"),
            "fn main() { println!(\"tiny ok\"); }\n",
        )
        .expect("main.rs");
        let path = format!("PATH={home}/.cargo/bin:/usr/local/bin:/usr/bin:/bin");
        let out = ok(&sh(
            ws.path(),
            profile,
            &["-e", &path],
            "cargo build -q --offline && ./target/debug/tiny",
        ));
        assert_eq!(out, "tiny ok\n", "profile {profile}");
    }
}

#[test]
fn no_set_uid_or_set_gid_file_can_be_created() {
    // `nosuid` holds inside the cell only: a set-uid file left in the workspace would run
    // with the caller's uid (root's, when root started the cell) for anyone outside.
    let ws = Ws::new();
    let out = ok(&sh(
        ws.path(),
        "build",
        &[],
        "cp /bin/true t && chmod 755 t && echo plain-chmod-ok; \
         chmod 4755 t 2>/dev/null && echo SUID-CHMOD; chmod g+s t 2>/dev/null && echo SGID-CHMOD; \
         mkdir -m 2775 d 2>/dev/null && echo SGID-MKDIR; mkdir -m 755 d2 && echo plain-mkdir-ok; \
         python3 -c '\nimport os\nfor name, mode in ((\"u\", 0o4755), (\"g\", 0o2755)):\n    try:\n        os.close(os.open(name, os.O_CREAT | os.O_WRONLY, mode)); print(\"CREATED\", name)\n    except PermissionError:\n        print(\"refused\", name)\ntry:\n    os.chmod(\"t\", 0o6755); print(\"CHMOD-PY\")\nexcept PermissionError:\n    print(\"refused chmod\")\nos.close(os.open(\"p\", os.O_CREAT | os.O_WRONLY, 0o644)); print(\"plain-open-ok\")\n'",
    ));
    for bad in [
        "SUID-CHMOD",
        "SGID-CHMOD",
        "SGID-MKDIR",
        "CREATED",
        "CHMOD-PY",
    ] {
        assert!(!out.contains(bad), "{bad}: {out}");
    }
    for good in [
        "plain-chmod-ok",
        "plain-mkdir-ok",
        "plain-open-ok",
        "refused u",
        "refused g",
        "refused chmod",
    ] {
        assert!(out.contains(good), "{good}: {out}");
    }
    // And nothing set-uid or set-gid is in the workspace on the host.
    use std::os::unix::fs::PermissionsExt;
    for e in std::fs::read_dir(ws.path()).unwrap().flatten() {
        let mode = e.metadata().unwrap().permissions().mode();
        assert_eq!(mode & 0o6000, 0, "{:?} has mode {mode:o}", e.path());
    }
}
