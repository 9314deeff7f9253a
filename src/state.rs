//! A small state file per running session, so that the next taskcell of the same user can
//! finish the job of one that was killed with SIGKILL: remove the files it left (the
//! control socket, the CA bundle), say in its audit log which revocations did not run,
//! and record its `session_end` with `"reason": "launcher killed"`.
//!
//! The file holds no secret value: names, paths, the launcher's pid and start time. It
//! lives in the user's control directory (`$XDG_RUNTIME_DIR/taskcell/state`, 0700).

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct State {
    pub session: String,
    pub pid: i32,
    /// The launcher's start time (field 22 of /proc/PID/stat): with the pid, one process.
    pub start: u64,
    pub audit_log: Option<PathBuf>,
    /// Files the session made that must not outlive it.
    pub files: Vec<PathBuf>,
    /// Secrets with a `revoke` command (names only).
    pub revoke: Vec<String>,
}

/// The state file of this process's session (None when none was made).
static CURRENT: Mutex<Option<(PathBuf, State)>> = Mutex::new(None);

fn dir(control_dir: &Path) -> PathBuf {
    control_dir.join("state")
}

/// The directory must be the user's own and closed to others (not a symlink).
fn private_dir(d: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(d)?;
    if !m.is_dir() || m.uid() != nix::unistd::geteuid().as_raw() || m.mode() & 0o022 != 0 {
        return Err(std::io::Error::other(format!(
            "{} is not a directory of this user closed to others",
            d.display()
        )));
    }
    Ok(())
}

fn write(path: &Path, st: &State) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)?;
    f.write_all(serde_json::to_string(st).unwrap_or_default().as_bytes())?;
    std::fs::rename(&tmp, path)
}

/// Record this session (call once, before any secret is fetched).
pub fn begin(control_dir: &Path, mut st: State) -> std::io::Result<()> {
    let d = dir(control_dir);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&d)?;
    private_dir(control_dir)?;
    private_dir(&d)?;
    st.pid = std::process::id() as i32;
    st.start = crate::cell::cgroup::start_time(st.pid).unwrap_or(0);
    let path = d.join(format!("{}.json", st.session));
    write(&path, &st)?;
    if let Ok(mut c) = CURRENT.lock() {
        *c = Some((path, st));
    }
    Ok(())
}

/// Add a file the session made (e.g. the CA bundle) to its state.
pub fn note_file(p: &Path) {
    if let Ok(mut c) = CURRENT.lock() {
        if let Some((path, st)) = c.as_mut() {
            st.files.push(p.to_path_buf());
            let _ = write(path, st);
        }
    }
}

/// Removes the state file when dropped: every return of `run` after [`begin`] (a SIGKILL
/// never drops it, which is the point).
pub struct Guard;

impl Drop for Guard {
    fn drop(&mut self) {
        end();
    }
}

/// The session ended in order: its state file goes.
pub fn end() {
    if let Ok(mut c) = CURRENT.lock() {
        if let Some((path, _)) = c.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Finish the sessions of launchers that were killed: returns what was done, one line
/// each (for stderr).
pub fn recover(control_dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if private_dir(control_dir).is_err() || private_dir(&dir(control_dir)).is_err() {
        return out;
    }
    let Ok(rd) = std::fs::read_dir(dir(control_dir)) else {
        return out;
    };
    for e in rd.flatten() {
        let path = e.path();
        if path.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let Ok(text) = crate::profile::read_profile_file(&path) else {
            continue;
        };
        let Ok(st) = serde_json::from_str::<State>(&text) else {
            let _ = std::fs::remove_file(&path);
            continue;
        };
        if crate::cell::cgroup::start_time(st.pid).is_some_and(|s| s == st.start) {
            continue; // still running
        }
        for f in &st.files {
            // remove_file never follows the last component.
            let _ = std::fs::remove_file(f);
        }
        if let Some(log) = &st.audit_log {
            let appended = std::fs::OpenOptions::new()
                .append(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(log);
            if let Ok(mut f) = appended {
                let mut lines = String::new();
                let rec = |event: &str, mut v: serde_json::Value| {
                    if let serde_json::Value::Object(m) = &mut v {
                        m.insert("ts".into(), crate::audit::rfc3339_now().into());
                        m.insert("event".into(), event.into());
                        m.insert("session".into(), st.session.clone().into());
                    }
                    format!("{v}\n")
                };
                for name in &st.revoke {
                    lines.push_str(&rec(
                        "secret_revoked",
                        serde_json::json!({
                            "name": name,
                            "ok": false,
                            "detail": "launcher killed: the revoke command needs the value, which died with it; revoke it by hand",
                        }),
                    ));
                }
                lines.push_str(&rec(
                    "session_end",
                    serde_json::json!({ "exit_code": null, "reason": "launcher killed", "recovered_by": std::process::id() }),
                ));
                let _ = f.write_all(lines.as_bytes());
            }
        }
        let mut msg = format!(
            "session {} ended with its launcher killed: its files were removed",
            st.session
        );
        if !st.revoke.is_empty() {
            msg.push_str(&format!(
                "; not revoked (revoke by hand): {}",
                st.revoke.join(", ")
            ));
        }
        out.push(msg);
        let _ = std::fs::remove_file(&path);
    }
    out
}
