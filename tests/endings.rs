//! Every ending is clean: no panic on any input, bounded inputs, signals at any moment,
//! an absolute timeout, no harm to another cell. Each test is written as the attack.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;

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
