//! Shared helpers for integration tests: every test starts real cells with the built
//! `taskcell` binary. The tests run as root and as a plain user (see .ci/run).
#![allow(dead_code)]

pub mod pty;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The test helper binary (`src/bin/taskcell-probe.rs`) run inside cells.
pub fn probe() -> &'static str {
    env!("CARGO_BIN_EXE_taskcell-probe")
}

/// The directory of [`probe`], for profiles that must read it.
pub fn probe_dir() -> String {
    Path::new(probe())
        .parent()
        .expect("probe dir")
        .display()
        .to_string()
}

/// Tests of a machine without user namespaces: CI runs them (`--ignored`) in a user
/// namespace where `user.max_user_namespaces` is 0 (.ci/run's no-userns step).
#[track_caller]
pub fn require_no_userns() {
    let v = std::fs::read_to_string("/proc/sys/user/max_user_namespaces").unwrap_or_default();
    assert_eq!(
        v.trim(),
        "0",
        "these tests need user.max_user_namespaces=0 (run by .ci/run's no-userns step)"
    );
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_taskcell")
}

/// A fresh workspace directory (under /tmp, readable by everyone so that tests also work
/// when run as a plain user).
pub struct Ws {
    pub dir: tempfile::TempDir,
    /// A directory next to the workspace, outside the cell (audit logs go there).
    pub out: tempfile::TempDir,
}

impl Ws {
    pub fn new() -> Ws {
        let dir = tempfile::Builder::new()
            .prefix("taskcell-test-")
            .tempdir_in("/tmp")
            .expect("creating a temporary workspace in /tmp");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod workspace");
        let out = tempfile::Builder::new()
            .prefix("taskcell-test-out-")
            .tempdir_in("/tmp")
            .expect("creating a temporary directory in /tmp");
        Ws { dir, out }
    }
    /// A path outside the workspace (the cell cannot write it): for audit logs.
    pub fn outside(&self, p: &str) -> PathBuf {
        self.out.path().join(p)
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn join(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
}

/// `taskcell` with the given arguments, run from `ws`, with a clean, predictable
/// environment (PATH, HOME and TMPDIR only).
pub fn taskcell(ws: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.current_dir(ws)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env(
            "HOME",
            std::env::var("HOME").unwrap_or_else(|_| "/nonexistent".into()),
        )
        .args(args)
        .stdin(Stdio::null());
    c
}

/// Run `sh -c SCRIPT` in a cell of `profile` with extra taskcell arguments.
pub fn sh(ws: &Path, profile: &str, extra: &[&str], script: &str) -> Output {
    let mut args = vec!["run", "-p", profile];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "/bin/sh", "-c", script]);
    taskcell(ws, &args).output().expect("running taskcell")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Assert success and return stdout; on failure show everything.
#[track_caller]
pub fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "taskcell failed: {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        stdout(o),
        stderr(o)
    );
    stdout(o)
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}
