//! A small state file per running session, so that the next taskcell of the same user can
//! finish the job of one that was killed with SIGKILL: remove the files it left (the
//! control socket, the CA bundle), run the revocations that need no value, say in its
//! audit log which revocations could not run, and record its `session_end` with
//! `"reason": "launcher killed"`.
//!
//! The file holds no secret value: names, paths, revoke commands, the launcher's pid and
//! start time. It lives in the user's control directory (`$XDG_RUNTIME_DIR/taskcell/state`,
//! 0700). It is read as hostile input: a cell that sees the directory runs as the same
//! user and could forge one. So a recorded revoke command is never run as written: it
//! only says which secret of which session; what runs is the revoke command of the
//! *current* plan's secret of that name, and only when it is the same argv, also declared
//! `revoke_needs_value = false` (a forged file can pick the session id, 16 hex digits,
//! never the program or its arguments). A revocation no plan matches waits in the file.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::plan::secrets::SecretPlan;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct State {
    pub session: String,
    pub pid: i32,
    /// The launcher's start time (field 22 of /proc/PID/stat): with the pid, one process.
    pub start: u64,
    pub audit_log: Option<PathBuf>,
    /// Files the session made that must not outlive it.
    pub files: Vec<PathBuf>,
    /// Secrets whose `revoke` command reads the value (names only): they cannot run
    /// after a SIGKILL.
    pub revoke: Vec<String>,
    /// Secrets whose `revoke` command needs no value (`revoke_needs_value = false`):
    /// run by a later start whose plan has the same secret with the same argv.
    #[serde(default)]
    pub revoke_later: Vec<Pending>,
    /// The killed session's files were removed and its end recorded; only
    /// `revoke_later` is left.
    #[serde(default)]
    pub ended: bool,
    /// Without namespaces (best effort): the cell's private TMPDIR
    /// (`taskcell-tmp-PID-START-*` in the temporary directory).
    #[serde(default)]
    pub private_tmp: Option<PathBuf>,
}

/// A revocation that needs no value, as the profile declared it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Pending {
    pub name: String,
    /// The argv before `{session}` and `{name}` are replaced.
    pub argv: Vec<String>,
}

impl State {
    /// What to record about `secrets`' revocations (no values).
    /// Whether a later start would have anything to finish, were this session's launcher
    /// killed now: an audit log to close, files to remove, revocations, a private TMPDIR.
    /// A session with none of these gets no state file (its writing and removal are on the
    /// launch path of every cell).
    pub fn worth_keeping(&self) -> bool {
        self.audit_log.is_some()
            || !self.files.is_empty()
            || !self.revoke.is_empty()
            || !self.revoke_later.is_empty()
            || self.private_tmp.is_some()
    }

    pub fn revocations(mut self, secrets: &[SecretPlan]) -> State {
        for s in secrets {
            match &s.revoke {
                Some(argv) if !s.revoke_needs_value => self.revoke_later.push(Pending {
                    name: s.name.clone(),
                    argv: argv.clone(),
                }),
                Some(_) => self.revoke.push(s.name.clone()),
                None => {}
            }
        }
        self
    }
}

/// This process's session: its state, the file's path and whether it is written yet
/// (None before [`begin`]).
static CURRENT: Mutex<Option<Current>> = Mutex::new(None);

struct Current {
    control_dir: PathBuf,
    path: PathBuf,
    st: State,
    written: bool,
}

impl Current {
    /// Write the state file (the directories made and checked the first time).
    fn store(&mut self) -> std::io::Result<()> {
        if !self.written {
            let d = dir(&self.control_dir);
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&d)?;
            private_dir(&self.control_dir)?;
            private_dir(&d)?;
            self.st.pid = std::process::id() as i32;
            self.st.start = crate::cell::cgroup::start_time(self.st.pid).unwrap_or(0);
        }
        write(&self.path, &self.st)?;
        self.written = true;
        Ok(())
    }
}

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

/// Record this session (call once, before any secret is fetched). The file is written
/// now when the session has something a later start would finish
/// ([`State::worth_keeping`]), else first when [`note_file`] or [`note_private_tmp`]
/// gives it something.
pub fn begin(control_dir: &Path, st: State) -> std::io::Result<()> {
    let path = dir(control_dir).join(format!("{}.json", st.session));
    let mut cur = Current {
        control_dir: control_dir.to_path_buf(),
        path,
        st,
        written: false,
    };
    if cur.st.worth_keeping() {
        cur.store()?;
    }
    if let Ok(mut c) = CURRENT.lock() {
        *c = Some(cur);
    }
    Ok(())
}

/// Add a file the session made (e.g. the CA bundle) to its state.
pub fn note_file(p: &Path) {
    if let Ok(mut c) = CURRENT.lock() {
        if let Some(cur) = c.as_mut() {
            cur.st.files.push(p.to_path_buf());
            let _ = cur.store();
        }
    }
}

/// The name prefix of a private TMPDIR (best effort without namespaces): it names this
/// launcher (pid + start time), so a later start removes it only for a launcher that is
/// gone, never the directory of a live cell.
pub fn private_tmp_prefix() -> String {
    let me = std::process::id() as i32;
    let start = crate::cell::cgroup::start_time(me).unwrap_or(0);
    format!("taskcell-tmp-{me}-{start}-")
}

/// Record the session's private TMPDIR.
pub fn note_private_tmp(p: &Path) {
    if let Ok(mut c) = CURRENT.lock() {
        if let Some(cur) = c.as_mut() {
            cur.st.private_tmp = Some(p.to_path_buf());
            let _ = cur.store();
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
        if let Some(cur) = c.take().filter(|cur| cur.written) {
            let _ = std::fs::remove_file(cur.path);
        }
    }
}

/// Finish the sessions of launchers that were killed: returns what was done, one line
/// each (for stderr). `secrets` are the current plan's (the only revoke commands that may
/// run); `cell_writable` the host paths its cell could write (a revoke program there is
/// not run).
pub fn recover(
    control_dir: &Path,
    secrets: &[SecretPlan],
    cell_writable: &[PathBuf],
) -> Vec<String> {
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
        // Locked while it is handled: two starts never revoke the same secret twice.
        let Some((_lock, text)) = open_locked(&path) else {
            continue;
        };
        let Ok(mut st) = serde_json::from_str::<State>(&text) else {
            let _ = std::fs::remove_file(&path);
            continue;
        };
        if crate::cell::cgroup::start_time(st.pid).is_some_and(|s| s == st.start) {
            continue; // still running
        }
        // A state file is read as hostile: a cell that can see this directory (a
        // workspace of /tmp, say) runs as this user and could have written it. Only
        // taskcell's own files are removed, only a log that holds this session's
        // start record is appended to, and only the current plan's revoke commands run.
        if !is_session_id(&st.session) || path.file_stem() != Some(st.session.as_ref()) {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        let mut lines = String::new();
        let rec = |event: &str, mut v: serde_json::Value| {
            if let serde_json::Value::Object(m) = &mut v {
                m.insert("ts".into(), crate::audit::rfc3339_now().into());
                m.insert("event".into(), event.into());
                m.insert("session".into(), st.session.clone().into());
            }
            format!("{v}\n")
        };
        let mut msg = Vec::new();
        if !st.ended {
            for f in st.files.iter().filter(|f| is_own_file(f, &st.session)) {
                // remove_file never follows the last component.
                let _ = std::fs::remove_file(f);
            }
            // What the cell started, if it outlived the launcher and its init (a cgroup
            // named after this launcher's pid and start time), and its private TMPDIR.
            let killed = crate::cell::cgroup::kill_cells_of(st.pid, st.start);
            if killed > 0 {
                msg.push(format!("{killed} process(es) it left were killed"));
            }
            if let Some(t) = st
                .private_tmp
                .as_deref()
                .filter(|t| is_own_private_tmp(t, st.pid, st.start))
            {
                // remove_dir_all never follows a symlink.
                if std::fs::remove_dir_all(t).is_ok() {
                    msg.push(format!("its private TMPDIR {} was removed", t.display()));
                }
            }
            for name in &st.revoke {
                lines.push_str(&rec(
                    "secret_revoked",
                    serde_json::json!({
                        "name": name,
                        "ok": false,
                        "detail": "launcher killed: the revoke command needs the value, which died with it; revoke it by hand (or declare revoke_needs_value = false with a revoke command that works from {session})",
                    }),
                ));
            }
            msg.insert(
                0,
                format!(
                    "session {} ended with its launcher killed: its files were removed",
                    st.session
                ),
            );
            if !st.revoke.is_empty() {
                msg.push(format!(
                    "not revoked (revoke by hand): {}",
                    st.revoke.join(", ")
                ));
            }
        }
        let mut waiting = Vec::new();
        let mut done = Vec::new();
        for p in std::mem::take(&mut st.revoke_later) {
            let Some(plan) = secrets.iter().find(|s| {
                s.name == p.name && !s.revoke_needs_value && s.revoke.as_ref() == Some(&p.argv)
            }) else {
                waiting.push(p);
                continue;
            };
            let Some(argv) = plan.revoke.as_deref() else {
                continue;
            };
            let r = match crate::hostfile::check_argv(argv, cell_writable, "a missed revocation") {
                Err(e) => crate::secrets::revoke::Revocation {
                    name: p.name.clone(),
                    ok: false,
                    detail: e,
                },
                Ok(()) => crate::secrets::revoke::revoke(
                    &p.name,
                    &crate::secrets::revoke::substitute(argv, &st.session, &p.name),
                    None,
                    plan.timeout,
                    None,
                ),
            };
            done.push(format!(
                "{} ({})",
                p.name,
                if r.ok { "ok" } else { "failed" }
            ));
            lines.push_str(&rec(
                "secret_revoked",
                serde_json::json!({
                    "name": r.name,
                    "ok": r.ok,
                    "detail": format!("launcher killed; revoked at a later start: {}", r.detail),
                    "recovered_by": std::process::id(),
                }),
            ));
        }
        if !done.is_empty() {
            msg.push(format!(
                "missed revocation of session {} run: {}",
                st.session,
                done.join(", ")
            ));
        }
        if !waiting.is_empty() {
            let names: Vec<_> = waiting.iter().map(|p| p.name.as_str()).collect();
            msg.push(format!(
                "revocation of {} (session {}) waits for a start whose profile declares the same secret and revoke command",
                names.join(", "),
                st.session
            ));
            if !st.ended {
                for n in &names {
                    lines.push_str(&rec(
                        "secret_revoke_pending",
                        serde_json::json!({ "name": n, "detail": "launcher killed: the revoke command runs at the next start of a cell whose profile declares the same secret and revoke command" }),
                    ));
                }
            }
        }
        if !st.ended {
            lines.push_str(&rec(
                "session_end",
                serde_json::json!({ "exit_code": null, "reason": "launcher killed", "recovered_by": std::process::id() }),
            ));
        }
        append_to_log(&st, &lines);
        if !msg.is_empty() {
            out.push(msg.join("; "));
        }
        if waiting.is_empty() {
            let _ = std::fs::remove_file(&path);
        } else {
            st.ended = true;
            st.revoke_later = waiting;
            let _ = write(&path, &st);
        }
    }
    out
}

/// Largest state file read (a hostile one may be anything).
const MAX_STATE: u64 = 1 << 20;

/// Open a state file without following a link, lock it (LOCK_EX, not waiting) and read
/// it; None when it is locked by another start, was replaced meanwhile, or is not a
/// small regular file. The lock lasts as long as the returned file.
fn open_locked(path: &Path) -> Option<(nix::fcntl::Flock<std::fs::File>, String)> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    let meta = f.metadata().ok()?;
    if !meta.is_file() || meta.len() > MAX_STATE {
        let _ = std::fs::remove_file(path);
        return None;
    }
    let f = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).ok()?;
    // Replaced (renamed over) between the open and the lock: the next start reads the new one.
    let now = std::fs::symlink_metadata(path).ok()?;
    if now.ino() != meta.ino() || now.dev() != meta.dev() {
        return None;
    }
    let mut text = String::new();
    (&*f).take(MAX_STATE).read_to_string(&mut text).ok()?;
    Some((f, text))
}

/// Append `lines` to the killed session's audit log, when it is one that holds the
/// session's start record.
fn append_to_log(st: &State, lines: &str) {
    if lines.is_empty() {
        return;
    }
    let Some(log) = st
        .audit_log
        .as_deref()
        .filter(|l| log_started(l, &st.session))
    else {
        return;
    };
    let appended = std::fs::OpenOptions::new()
        .append(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(log);
    if let Ok(mut f) = appended {
        let _ = f.write_all(lines.as_bytes());
    }
}

/// A session id as `audit` makes them: 16 lowercase hex digits.
fn is_session_id(s: &str) -> bool {
    s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The files a session makes: its control socket (`SESSION.sock` in a `taskcell`
/// control directory) and its CA bundle (`taskcell-ca-*.crt` in the temporary directory).
/// Anything else named in a state file is not taskcell's to remove.
fn is_own_file(f: &Path, session: &str) -> bool {
    let (Some(name), Some(parent)) = (f.file_name().and_then(|n| n.to_str()), f.parent()) else {
        return false;
    };
    if !f.is_absolute()
        || f.components().any(|c| {
            !matches!(
                c,
                std::path::Component::RootDir | std::path::Component::Normal(_)
            )
        })
    {
        return false;
    }
    let parent_name = parent.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let socket = name == format!("{session}.sock") && parent_name.starts_with("taskcell");
    let bundle = name.starts_with("taskcell-ca-")
        && name.ends_with(".crt")
        && parent == std::env::temp_dir().as_path();
    socket || bundle
}

/// A private TMPDIR of the launcher `pid` started at `start`: `taskcell-tmp-PID-START-*`
/// directly in the temporary directory, a directory (not a link) of this user, 0700.
fn is_own_private_tmp(t: &Path, pid: i32, start: u64) -> bool {
    use std::os::unix::fs::MetadataExt;
    let prefix = format!("taskcell-tmp-{pid}-{start}-");
    let named = t.parent() == Some(std::env::temp_dir().as_path())
        && t.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(&prefix) && !n.contains('/'));
    named
        && std::fs::symlink_metadata(t).is_ok_and(|m| {
            m.is_dir() && m.uid() == nix::unistd::geteuid().as_raw() && m.mode() & 0o077 == 0
        })
}

/// How much of the end of an audit log is searched for a session's start record.
const LOG_TAIL: u64 = 8 << 20;

/// The log is a regular file (not a link) whose last [`LOG_TAIL`] bytes hold this
/// session's `session_start` record: the killed launcher wrote it, so the log is
/// taskcell's and the session's, not a file a forged state names.
fn log_started(log: &Path, session: &str) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(log)
    else {
        return false;
    };
    let Ok(meta) = f.metadata() else {
        return false;
    };
    if !meta.is_file() {
        return false;
    }
    let from = meta.len().saturating_sub(LOG_TAIL);
    if f.seek(SeekFrom::Start(from)).is_err() {
        return false;
    }
    let mut tail = Vec::new();
    if f.take(LOG_TAIL).read_to_end(&mut tail).is_err() {
        return false;
    }
    let needle = format!("\"session\":\"{session}\"");
    tail.split(|&b| b == b'\n')
        .filter(|l| l.windows(needle.len()).any(|w| w == needle.as_bytes()))
        .filter_map(|l| serde_json::from_slice::<serde_json::Value>(l).ok())
        .any(|v| v["event"] == "session_start" && v["session"] == session)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_taskcells_own_files_are_named_for_removal() {
        let s = "0123456789abcdef";
        assert!(is_own_file(
            Path::new("/run/user/1000/taskcell/0123456789abcdef.sock"),
            s
        ));
        assert!(is_own_file(
            Path::new("/tmp/taskcell-1000/0123456789abcdef.sock"),
            s
        ));
        let tmp = std::env::temp_dir().join("taskcell-ca-x1y2.crt");
        assert!(is_own_file(&tmp, s));
        for bad in [
            "/home/u/.bashrc",
            "/tmp/taskcell-1000/ffffffffffffffff.sock",
            "/tmp/taskcell-1000/../../home/u/0123456789abcdef.sock",
            "relative/taskcell/0123456789abcdef.sock",
            "/home/u/taskcell-ca-x.crt",
            "/home/u/0123456789abcdef.sock",
        ] {
            assert!(!is_own_file(Path::new(bad), s), "{bad}");
        }
        assert!(is_session_id(s));
        assert!(!is_session_id("../x"));
        assert!(!is_session_id("0123456789ABCDEF"));
    }

    /// A session with nothing a later start could finish writes no state file; it gets one
    /// the moment it has something (here a private TMPDIR), which its end removes.
    #[test]
    fn a_state_file_only_for_a_session_a_later_start_could_finish() {
        use std::os::unix::fs::PermissionsExt;
        let cdir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(cdir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let session = "0123456789abcdef".to_string();
        let file = dir(cdir.path()).join(format!("{session}.json"));
        let plain = State {
            session: session.clone(),
            ..Default::default()
        };
        assert!(!plain.worth_keeping());
        begin(cdir.path(), plain).unwrap();
        assert!(
            !file.exists(),
            "no state file for a session with nothing to finish"
        );
        note_private_tmp(Path::new("/tmp/taskcell-tmp-1-2-x"));
        let st: State = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        assert_eq!(st.pid, std::process::id() as i32);
        assert!(st.private_tmp.is_some());
        end();
        assert!(!file.exists());
        for st in [
            State {
                audit_log: Some("/var/log/a.jsonl".into()),
                ..Default::default()
            },
            State {
                files: vec!["/run/user/1/taskcell/x.sock".into()],
                ..Default::default()
            },
            State {
                revoke: vec!["TOKEN".into()],
                ..Default::default()
            },
        ] {
            assert!(st.worth_keeping(), "{st:?}");
        }
    }

    #[test]
    fn only_the_killed_launchers_own_private_tmpdir_is_removed() {
        use std::os::unix::fs::PermissionsExt;
        let base = std::env::temp_dir();
        let mine = tempfile::Builder::new()
            .prefix("taskcell-tmp-77-1234-")
            .tempdir_in(&base)
            .unwrap();
        std::fs::set_permissions(mine.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(is_own_private_tmp(mine.path(), 77, 1234));
        // Another launcher's (a live cell's), or this one's under another start time.
        assert!(!is_own_private_tmp(mine.path(), 77, 123));
        assert!(!is_own_private_tmp(mine.path(), 7, 1234));
        // Open to others: not one taskcell made.
        std::fs::set_permissions(mine.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(!is_own_private_tmp(mine.path(), 77, 1234));
        // A link named like one, pointing at the user's files.
        let link = base.join(format!("taskcell-tmp-77-1234-link{}", std::process::id()));
        let d = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(d.path(), &link).unwrap();
        assert!(!is_own_private_tmp(&link, 77, 1234));
        std::fs::remove_file(&link).unwrap();
        // Named right but elsewhere.
        let nested = mine.path().join("taskcell-tmp-77-1234-x");
        std::fs::create_dir(&nested).unwrap();
        assert!(!is_own_private_tmp(&nested, 77, 1234));
    }

    #[test]
    fn a_log_counts_only_with_the_sessions_start_record() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("audit.jsonl");
        let s = "0123456789abcdef";
        std::fs::write(&log, "export A=1\n").unwrap();
        assert!(!log_started(&log, s));
        std::fs::write(
            &log,
            format!("{{\"event\":\"session_end\",\"session\":\"{s}\"}}\n"),
        )
        .unwrap();
        assert!(!log_started(&log, s));
        std::fs::write(
            &log,
            format!("x\n{{\"event\":\"session_start\",\"session\":\"{s}\",\"ts\":\"t\"}}\n"),
        )
        .unwrap();
        assert!(log_started(&log, s));
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&log, &link).unwrap();
        assert!(!log_started(&link, s));
    }
}
