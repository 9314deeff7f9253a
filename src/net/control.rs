//! The per-session control socket: `$XDG_RUNTIME_DIR/taskcell/SESSION.sock` (directory
//! 0700, socket 0600; without XDG_RUNTIME_DIR, `/tmp/taskcell-UID`). Only the same user
//! (checked with `SO_PEERCRED`) may talk to it. One line in, the answer out:
//! `list` → `session ID\tPROFILE\tCOMMAND` then `pending HOST:PORT\tSECONDS` lines;
//! `approve HOST[:PORT]` / `deny HOST[:PORT]` → `ok N` or `error: ...`.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

use super::approve::parse_target;
use super::Shared;

/// Whether `d` is a directory of ours that nobody else can enter (not a symlink, owned
/// by us, no group/other permission).
fn is_private(d: &Path) -> bool {
    let uid = nix::unistd::geteuid().as_raw();
    std::fs::symlink_metadata(d)
        .map(|m| m.is_dir() && m.uid() == uid && m.mode() & 0o077 == 0)
        .unwrap_or(false)
}

/// The directory of the control sockets (from the plan), created 0700 and checked to be
/// ours. When someone else took it first (a squatter in /tmp), a fresh private directory
/// next to it (`NAME-XXXXXX`, which the clients also look at) is used instead.
pub fn dir(d: &Path) -> io::Result<PathBuf> {
    let d = d.to_path_buf();
    match std::fs::DirBuilder::new().mode(0o700).create(&d) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("creating {}: {e}", d.display()),
            ))
        }
    }
    if is_private(&d) {
        return Ok(d);
    }
    let (Some(parent), Some(name)) = (d.parent(), d.file_name()) else {
        return Err(io::Error::other(format!("{} is not ours", d.display())));
    };
    let fresh = tempfile::Builder::new()
        .prefix(&format!("{}-", name.to_string_lossy()))
        .tempdir_in(parent)
        .map_err(|e| io::Error::new(e.kind(), format!("{} is not ours (mode 0700, owned by us) and a fresh directory next to it failed: {e}", d.display())))?
        .keep();
    tracing::warn!(
        "{} is not a private directory of ours (someone else created it): the control socket is in {} instead",
        d.display(),
        fresh.display()
    );
    Ok(fresh)
}

/// The existing private directories where `dirs`' sockets may be (each of `dirs`, and
/// the `NAME-XXXXXX` fallbacks next to them). Nothing is created.
pub fn client_dirs(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for d in dirs {
        if is_private(d) {
            out.push(d.clone());
        }
        let (Some(parent), Some(name)) = (d.parent(), d.file_name()) else {
            continue;
        };
        let prefix = format!("{}-", name.to_string_lossy());
        if let Ok(rd) = std::fs::read_dir(parent) {
            let mut extra: Vec<PathBuf> = rd
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .map(|e| e.path())
                .filter(|p| is_private(p))
                .collect();
            extra.sort();
            out.extend(extra);
        }
    }
    out
}

fn socket_path(dir: &Path, session: &str) -> PathBuf {
    dir.join(format!("{session}.sock"))
}

/// Create the session's socket and serve it on a thread. Returns its path.
pub fn start(shared: Arc<Shared>) -> io::Result<PathBuf> {
    let d = dir(&shared.plan.control_dir)?;
    let path = socket_path(&d, &shared.session);
    let _ = std::fs::remove_file(&path);
    let l = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    std::thread::Builder::new()
        .name("taskcell-control".into())
        .spawn(move || {
            for c in l.incoming() {
                let Ok(c) = c else { continue };
                let s = shared.clone();
                let _ = std::thread::Builder::new()
                    .name("taskcell-ctl".into())
                    .stack_size(128 * 1024)
                    .spawn(move || handle(&s, c));
            }
        })?;
    Ok(path)
}

/// Whether process `pid` lives in our own PID and user namespaces (a process inside a
/// cell does not, so even a cell that could reach the socket is refused). Unreadable:
/// no.
fn same_namespaces(pid: i32) -> bool {
    ["pid", "user"].iter().all(|ns| {
        let mine = std::fs::read_link(format!("/proc/self/ns/{ns}"));
        let theirs = std::fs::read_link(format!("/proc/{pid}/ns/{ns}"));
        matches!((mine, theirs), (Ok(a), Ok(b)) if a == b)
    })
}

fn handle(shared: &Shared, mut c: UnixStream) {
    let me = nix::unistd::geteuid().as_raw();
    match getsockopt(&c, PeerCredentials) {
        Ok(cred) if cred.uid() == me && cred.pid() > 0 && same_namespaces(cred.pid()) => {}
        _ => {
            let _ = c.write_all(b"error: not your session\n");
            return;
        }
    }
    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
    let mut line = String::new();
    {
        let mut r = BufReader::new(&c).take(4096);
        if r.read_line(&mut line).is_err() {
            return;
        }
    }
    let out = answer(shared, line.trim());
    let _ = c.write_all(out.as_bytes());
}

fn answer(shared: &Shared, line: &str) -> String {
    let (cmd, arg) = line.split_once(' ').unwrap_or((line, ""));
    match cmd {
        "list" => {
            let mut s = format!(
                "session {}\t{}\t{}\n",
                shared.session,
                shared.profile,
                crate::display::clean(shared.command.join(" "))
            );
            for p in shared.approvals.pending() {
                // The host is the cell's word: masked and escaped.
                s.push_str(&format!(
                    "pending {}:{}\t{}\n",
                    crate::display::clean(&p.host),
                    p.port,
                    p.since.elapsed().as_secs()
                ));
            }
            for d in crate::display::recent() {
                s.push_str(&format!("notice {d}\n"));
            }
            s
        }
        "approve" | "deny" => match parse_target(arg.trim()) {
            Ok((h, p)) => {
                let by = format!("`taskcell {cmd}` (uid {})", nix::unistd::geteuid());
                let n = shared.approvals.answer(&h, p, cmd == "approve", &by);
                format!("ok {n}\n")
            }
            Err(e) => format!("error: {e}\n"),
        },
        _ => "error: unknown command (list, approve HOST[:PORT], deny HOST[:PORT])\n".into(),
    }
}

use std::io::Read;

/// Send one line to a session's socket (looked for in [`client_dirs`] of `dirs`) and
/// return the answer.
pub fn request(dirs: &[PathBuf], session: &str, line: &str) -> io::Result<String> {
    let found = client_dirs(dirs)
        .into_iter()
        .map(|d| socket_path(&d, session))
        .find(|p| p.exists());
    let Some(path) = found else {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "no running session {session:?} (looked in {}); list them with `taskcell sessions`",
                dirs.iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    };
    request_at(&path, line)
}

fn request_at(path: &Path, line: &str) -> io::Result<String> {
    let mut c = UnixStream::connect(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "{}: {e}; list the running sessions with `taskcell sessions`",
                path.display()
            ),
        )
    })?;
    c.set_read_timeout(Some(Duration::from_secs(10)))?;
    c.write_all(format!("{line}\n").as_bytes())?;
    c.shutdown(std::net::Shutdown::Write)?;
    let mut s = String::new();
    c.read_to_string(&mut s)?;
    Ok(s)
}

/// Every live session's `list` answer (stale sockets are skipped).
pub fn list_all(dirs: &[PathBuf]) -> io::Result<Vec<String>> {
    let mut socks: Vec<PathBuf> = Vec::new();
    for d in client_dirs(dirs) {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        socks.extend(
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".sock"))
                .map(|e| e.path()),
        );
    }
    socks.sort();
    Ok(socks
        .iter()
        .filter_map(|p| request_at(p, "list").ok())
        .collect())
}
