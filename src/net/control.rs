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

/// The directory of the control sockets (from the plan, or `netplan::control_dir` for
/// the client commands), created 0700 and checked to be ours.
pub fn dir(d: &Path) -> io::Result<PathBuf> {
    let uid = nix::unistd::geteuid().as_raw();
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
    let m = std::fs::symlink_metadata(&d)?;
    if !m.is_dir() || m.uid() != uid || m.mode() & 0o077 != 0 {
        return Err(io::Error::other(format!(
            "{} is not a directory of ours with mode 0700 (remove it)",
            d.display()
        )));
    }
    Ok(d)
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

fn handle(shared: &Shared, mut c: UnixStream) {
    let me = nix::unistd::geteuid().as_raw();
    match getsockopt(&c, PeerCredentials) {
        Ok(cred) if cred.uid() == me => {}
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

/// Send one line to a session's socket and return the answer.
pub fn request(control_dir: &Path, session: &str, line: &str) -> io::Result<String> {
    let d = dir(control_dir)?;
    let path = socket_path(&d, session);
    let mut c = UnixStream::connect(&path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "no running session {session:?} ({}: {e}); list them with `taskcell sessions`",
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
pub fn list_all(control_dir: &Path) -> io::Result<Vec<String>> {
    let d = dir(control_dir)?;
    let mut names: Vec<String> = std::fs::read_dir(&d)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".sock"))
                .map(str::to_string)
        })
        .collect();
    names.sort();
    Ok(names
        .iter()
        .filter_map(|n| request(control_dir, n, "list").ok())
        .collect())
}
