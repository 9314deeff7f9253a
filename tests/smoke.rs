mod common;
use common::*;

#[test]
fn runs_a_command_in_a_cell() {
    let ws = Ws::new();
    let out = ok(&sh(ws.path(), "build", &[], "echo hello; hostname"));
    assert_eq!(out, "hello\ntaskcell\n");
}

/// The command runs on every CPU taskcell may run on: init is moved to the other CPUs for
/// its start (cell::Spread) and must give them back before the worker exists, and no
/// thread started beside its creator may narrow the creator's CPUs (cell::spawn_beside;
/// a probe thread that ended first pinned the supervisor, and so the command, to one CPU
/// in a third to two thirds of the launches).
#[test]
fn the_command_gets_every_cpu_taskcell_has() {
    let line = |status: &str| {
        status
            .lines()
            .find(|l| l.starts_with("Cpus_allowed_list:"))
            .map(|l| l.trim().to_string())
            .expect("a Cpus_allowed_list line")
    };
    let ws = Ws::new();
    let ours = line(&std::fs::read_to_string("/proc/self/status").expect("own status"));
    for _ in 0..20 {
        let out = ok(&sh(ws.path(), "build", &[], "cat /proc/self/status"));
        assert_eq!(line(&out), ours, "{out}");
    }
}

/// HOME=/ (a container's user without an entry in /etc/passwd) is refused with what to do,
/// not a tmpfs over the cell's root that fails later at "making /dev read-only".
#[test]
fn a_home_of_slash_is_refused_with_what_to_do() {
    let ws = Ws::new();
    let o = taskcell(ws.path(), &["run", "-p", "base", "--", "/bin/true"])
        .env("HOME", "/")
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("set HOME to a directory"),
        "{}",
        stderr(&o)
    );
    assert!(
        !stderr(&o).contains("making /dev read-only"),
        "{}",
        stderr(&o)
    );
}

/// A user /etc/passwd does not list, with HOME unset: taskcell looks the home up (in the
/// files only, src/names.rs) and ends with its own message. A statically linked taskcell
/// that let glibc load nsswitch.conf's modules crashed here (SIGSEGV in the systemd module).
#[test]
fn a_user_without_a_passwd_entry_gets_a_message_not_a_crash() {
    if !is_root() || !taskcell::cell::userns::in_initial_userns() {
        eprintln!("SKIPPED a_user_without_a_passwd_entry_gets_a_message_not_a_crash: needs root in the initial user namespace to run as an unlisted uid");
        return;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let Some(uid) = (40_000u32..60_000).find(|u| {
        !passwd
            .lines()
            .any(|l| l.split(':').nth(2) == Some(u.to_string().as_str()))
    }) else {
        eprintln!("SKIPPED a_user_without_a_passwd_entry_gets_a_message_not_a_crash: no free uid");
        return;
    };
    let ws = Ws::new();
    let id = uid.to_string();
    let o = match std::process::Command::new("setpriv")
        .args(["--reuid", &id, "--regid", &id, "--clear-groups", bin()])
        .args(["run", "-p", "base", "--", "/bin/true"])
        .current_dir(ws.path())
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            eprintln!(
                "SKIPPED a_user_without_a_passwd_entry_gets_a_message_not_a_crash: setpriv: {e}"
            );
            return;
        }
    };
    assert!(
        o.status.code().is_some(),
        "killed by a signal: {:?}\n{}",
        o.status,
        stderr(&o)
    );
    // No passwd entry and no HOME: the home is /, which the base profile's tmpfs refuses.
    assert!(
        stderr(&o).contains("set HOME to a directory"),
        "{}",
        stderr(&o)
    );
}
