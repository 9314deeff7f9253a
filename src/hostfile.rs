//! Files taskcell opens on the host for a cell (the audit log, `file:` secret sources):
//! never through a symlink in the last component, only regular files, and never inside
//! a path a cell can write (an earlier cell could have planted a symlink or swapped the
//! file there).
//!
//! The parent directory is opened once (`O_PATH`), its real location checked against the
//! cell-writable roots, and the file opened beneath that fd with `O_NOFOLLOW`, so what is
//! checked is what is opened.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::plan::{Access, Plan};

/// The host paths a cell of `plan` can write, resolved (symlinks followed).
pub fn writable_roots(plan: &Plan) -> Vec<PathBuf> {
    plan.paths
        .iter()
        .filter(|r| r.access == Access::Write)
        .map(|r| std::fs::canonicalize(&r.path).unwrap_or_else(|_| r.path.clone()))
        .collect()
}

/// The root of `roots` that `p` (resolved) lies in, if any.
pub fn inside<'a>(p: &Path, roots: &'a [PathBuf]) -> Option<&'a Path> {
    roots.iter().find(|r| p.starts_with(r)).map(|r| r.as_path())
}

/// How to open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Read,
    /// Append, created 0600 when missing.
    Append,
}

/// Open `path` as described in the module docs. `what` names the file in errors ("the
/// audit log", "secret TOKEN's file").
pub fn open(path: &Path, mode: Mode, roots: &[PathBuf], what: &str) -> Result<File, String> {
    let shown = crate::display::clean_path(path);
    let name = path
        .file_name()
        .ok_or_else(|| format!("{what} {shown}: not a file name"))?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let cparent = CString::new(parent.as_os_str().as_bytes())
        .map_err(|_| format!("{what} {shown}: a NUL byte in the path"))?;
    // SAFETY: open with a NUL-terminated path; the fd is ours.
    let dfd = unsafe {
        libc::open(
            cparent.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if dfd < 0 {
        let e = io::Error::last_os_error();
        return Err(format!("{what} {shown}: its directory: {e}"));
    }
    // SAFETY: a fresh fd we own.
    let dir = unsafe { OwnedFd::from_raw_fd(dfd) };
    let real = std::fs::read_link(format!("/proc/self/fd/{}", dir.as_raw_fd()))
        .map_err(|e| format!("{what} {shown}: resolving its directory: {e}"))?
        .join(name);
    if let Some(root) = inside(&real, roots) {
        return Err(format!(
            "{what} {shown} is inside {}, which the cell can write (a cell could replace it \
             with a link to any of your files); put it outside the cell's paths",
            crate::display::clean_path(root)
        ));
    }
    let cname = CString::new(name.as_bytes())
        .map_err(|_| format!("{what} {shown}: a NUL byte in the path"))?;
    let flags = libc::O_NOFOLLOW
        | libc::O_CLOEXEC
        | libc::O_NOCTTY
        | libc::O_NONBLOCK
        | match mode {
            Mode::Read => libc::O_RDONLY,
            Mode::Append => libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT,
        };
    // SAFETY: openat beneath a directory fd we hold, NUL-terminated name; fd ours.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), cname.as_ptr(), flags, 0o600) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ELOOP) {
            return Err(format!(
                "{what} {shown} is a symbolic link: refused (name the file it points to)"
            ));
        }
        return Err(format!("{what} {shown}: {e}"));
    }
    // SAFETY: a fresh fd we own.
    let f = unsafe { File::from_raw_fd(fd) };
    let m = f
        .metadata()
        .map_err(|e| format!("{what} {shown}: fstat: {e}"))?;
    if !m.file_type().is_file() {
        return Err(format!("{what} {shown} is not a regular file: refused"));
    }
    // Blocking again (O_NONBLOCK only kept a FIFO from hanging the open).
    // SAFETY: fcntl on our fd.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        if fl >= 0 {
            libc::fcntl(fd, libc::F_SETFL, fl & !libc::O_NONBLOCK);
        }
    }
    Ok(f)
}

/// A program taskcell runs on the host (a secret's provider command, its revoke
/// command): refused when its executable, or the script an interpreter (`sh`, `python3`,
/// ...) is given, lies inside one of `roots` (a cell could have rewritten what taskcell
/// will run outside it).
pub fn check_argv(argv: &[String], roots: &[PathBuf], what: &str) -> Result<(), String> {
    let mut names: Vec<PathBuf> = Vec::new();
    if let Some(prog) = argv.first() {
        if !prog.contains('/') {
            if let Some(path) = std::env::var_os("PATH") {
                if let Some(found) = std::env::split_paths(&path)
                    .map(|d| d.join(prog))
                    .find(|p| p.is_file())
                {
                    names.push(found);
                }
            }
        }
    }
    // An interpreter runs its first argument: a script there counts as the program (data
    // files a provider reads are not programs).
    let interpreter = argv.first().is_some_and(|p| {
        let base = p.rsplit('/').next().unwrap_or(p);
        [
            "sh", "bash", "dash", "zsh", "ksh", "python", "python3", "perl", "ruby", "node",
        ]
        .contains(&base)
    });
    if let Some(prog) = argv.first().filter(|p| p.contains('/')) {
        names.push(PathBuf::from(prog));
    }
    if interpreter {
        if let Some(script) = argv.iter().skip(1).find(|a| !a.starts_with('-')) {
            names.push(PathBuf::from(script));
        }
    }
    for n in names {
        let Ok(real) = std::fs::canonicalize(&n) else {
            continue;
        };
        if let Some(root) = inside(&real, roots) {
            return Err(format!(
                "{what} runs {}, which is inside {}, a path the cell can write (a cell could \
                 rewrite it to run anything as you); install it outside the cell's paths",
                crate::display::clean_path(&n),
                crate::display::clean_path(root)
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_fifos_and_writable_places_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().join("real");
        std::fs::write(&real, "x").unwrap();
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let e = open(&link, Mode::Append, &[], "the audit log").unwrap_err();
        assert!(e.contains("symbolic link"), "{e}");
        assert_eq!(std::fs::read_to_string(&real).unwrap(), "x");
        let fifo = d.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let e = open(&fifo, Mode::Read, &[], "f").unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
        let roots = vec![std::fs::canonicalize(d.path()).unwrap()];
        let e = open(&real, Mode::Read, &roots, "f").unwrap_err();
        assert!(e.contains("which the cell can write"), "{e}");
        assert!(open(&real, Mode::Read, &[], "f").is_ok());
        let new = d.path().join("new.log");
        assert!(open(&new, Mode::Append, &[], "f").is_ok());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&new).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let script = real.display().to_string();
        assert!(check_argv(&["sh".into(), script.clone()], &roots, "r").is_err());
        assert!(check_argv(&[script], &[], "r").is_ok());
        assert!(check_argv(&["sh".into(), "-c".into(), "x".into()], &roots, "r").is_ok());
        // A data file a provider reads is not a program.
        let sed = [
            "sed".into(),
            "-n".into(),
            "p".into(),
            real.display().to_string(),
        ];
        assert!(check_argv(&sed, &roots, "r").is_ok());
    }
}
