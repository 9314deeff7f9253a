//! What a cell left behind that would run code outside it: found after the cell, moved
//! aside, reported.
//!
//! The plan protects (binds read-only) what git runs code from in the repositories that
//! exist at the start (`plan::git`). What the cell creates during the run cannot be
//! protected in advance: a new submodule's git directory under `.git/modules`, a
//! `commondir` or `config.worktree` that did not exist, a `.git` file pointing to a git
//! directory the cell crafted, a nested repository with a `core.fsmonitor`, a hook in an
//! in-repository `core.hooksPath`. After the cell has ended, the supervisor walks every
//! writable directory (by fd, following no symlink, bounded) and looks at these files;
//! any that changed during the run (its ctime, which the cell cannot set back, is after
//! the start) or that is a symlink is renamed to `NAME.taskcell-quarantine` in place,
//! which git never reads, and reported; taskcell then exits with [`EXIT_LEFTOVER`].

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::SystemTime;

use crate::hold;

/// taskcell's exit status when the cell left files git would run code from.
pub const EXIT_LEFTOVER: i32 = 122;

/// The suffix a quarantined file gets.
pub const QUARANTINE: &str = ".taskcell-quarantine";

/// At most this many directory entries are looked at (the walk is in the supervisor).
const MAX_ENTRIES: usize = 2_000_000;

/// One thing the cell left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub path: PathBuf,
    /// Why it matters, e.g. "a git hook".
    pub what: &'static str,
    /// Where it was moved (None: it could not be moved; the error says why).
    pub moved_to: Option<PathBuf>,
    pub error: Option<String>,
}

impl Finding {
    /// One line for the user.
    pub fn line(&self) -> String {
        match (&self.moved_to, &self.error) {
            (Some(to), _) => format!(
                "the cell left {} ({}, which git would run or follow outside the cell): moved to {} (review it before you restore it)",
                self.path.display(),
                self.what,
                to.display()
            ),
            (None, e) => format!(
                "the cell left {} ({}, which git would run or follow outside the cell) and it could not be moved aside: {} (remove it before you run git there)",
                self.path.display(),
                self.what,
                e.as_deref().unwrap_or("unknown error")
            ),
        }
    }
}

#[derive(Debug, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
    /// The walk stopped early (too many entries): what was not looked at.
    pub incomplete: Option<String>,
}

struct Walk {
    since: (i64, i64),
    home: PathBuf,
    roots: Vec<PathBuf>,
    /// Paths the cell had read-only: a change there came from outside the cell.
    protected: Vec<PathBuf>,
    entries: usize,
    report: Report,
}

struct Stat {
    mode: u32,
    ctime: (i64, i64),
}

fn cstr(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn lstatat(dir: RawFd, name: &OsStr) -> Option<Stat> {
    let c = cstr(name).ok()?;
    // SAFETY: fstatat fills a zeroed stat of ours; the name is NUL-terminated.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstatat(dir, c.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) } != 0 {
        return None;
    }
    Some(Stat {
        mode: st.st_mode,
        ctime: (st.st_ctime, st.st_ctime_nsec),
    })
}

fn is(mode: u32, kind: u32) -> bool {
    mode & libc::S_IFMT == kind
}

fn open_subdir(dir: RawFd, name: &OsStr) -> Option<OwnedFd> {
    hold::openat(
        dir,
        name,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
    )
    .ok()
}

fn list(dir: &OwnedFd) -> Vec<OsString> {
    let Ok(d) = hold::openat(
        dir.as_raw_fd(),
        OsStr::new("."),
        libc::O_RDONLY | libc::O_DIRECTORY,
        0,
    ) else {
        return Vec::new();
    };
    let Ok(mut d) = nix::dir::Dir::from_fd(std::os::fd::IntoRawFd::into_raw_fd(d)) else {
        return Vec::new();
    };
    d.iter()
        .flatten()
        .map(|e| OsStr::from_bytes(e.file_name().to_bytes()).to_os_string())
        .filter(|n| n != "." && n != "..")
        .collect()
}

/// One directory's subdirectories (not `.git`), whether it has a `.git` entry, and how
/// many entries it has.
fn scan_dir(dir: &OwnedFd) -> (Vec<OsString>, bool, usize) {
    let mut subdirs = Vec::new();
    let mut dotgit = false;
    let mut n = 0;
    let Ok(d) = hold::openat(
        dir.as_raw_fd(),
        OsStr::new("."),
        libc::O_RDONLY | libc::O_DIRECTORY,
        0,
    ) else {
        return (subdirs, dotgit, n);
    };
    let Ok(mut d) = nix::dir::Dir::from_fd(std::os::fd::IntoRawFd::into_raw_fd(d)) else {
        return (subdirs, dotgit, n);
    };
    for e in d.iter().flatten() {
        let name = e.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        n += 1;
        if name == b".git" {
            dotgit = true;
            continue;
        }
        let is_dir = match e.file_type() {
            Some(t) => t == nix::dir::Type::Directory,
            None => lstatat(dir.as_raw_fd(), OsStr::from_bytes(name))
                .is_some_and(|st| is(st.mode, libc::S_IFDIR)),
        };
        if is_dir {
            subdirs.push(OsStr::from_bytes(name).to_os_string());
        }
    }
    (subdirs, dotgit, n)
}

impl Walk {
    fn changed(&self, st: &Stat) -> bool {
        is(st.mode, libc::S_IFLNK) || st.ctime >= self.since
    }

    /// Move `name` in `dir` aside and record it.
    fn quarantine(&mut self, dir: RawFd, name: &OsStr, path: PathBuf, what: &'static str) {
        if self.protected.iter().any(|p| path.starts_with(p)) {
            return;
        }
        let mut err = None;
        for i in 0..100 {
            let mut new = name.to_os_string();
            new.push(QUARANTINE);
            if i > 0 {
                new.push(format!(".{i}"));
            }
            let (Ok(a), Ok(b)) = (cstr(name), cstr(&new)) else {
                break;
            };
            // SAFETY: renameat2 reads two NUL-terminated names relative to our dir fd.
            let r = unsafe {
                libc::renameat2(dir, a.as_ptr(), dir, b.as_ptr(), libc::RENAME_NOREPLACE)
            };
            if r == 0 {
                let moved = path.with_file_name(&new);
                self.report.findings.push(Finding {
                    path,
                    what,
                    moved_to: Some(moved),
                    error: None,
                });
                return;
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                err = Some(e.to_string());
                break;
            }
        }
        self.report.findings.push(Finding {
            path,
            what,
            moved_to: None,
            error: err.or(Some("no free name".into())),
        });
    }

    fn in_roots(&self, p: &Path) -> bool {
        self.roots.iter().any(|r| p.starts_with(r))
    }

    /// The sensitive files of the git directory `g` (an fd) at `path`, then its
    /// submodules and worktrees.
    fn gitdir(&mut self, g: &OwnedFd, path: &Path, depth: usize) {
        let fd = g.as_raw_fd();
        for (name, what) in [
            ("config", "a git config"),
            ("config.worktree", "a git worktree config"),
            ("commondir", "a git commondir"),
        ] {
            let n = OsStr::new(name);
            if let Some(st) = lstatat(fd, n) {
                // A config that `git init`/`clone` wrote names no program: left alone.
                let harmless = name.starts_with("config")
                    && is(st.mode, libc::S_IFREG)
                    && crate::plan::git::config_is_harmless(&path.join(name));
                if self.changed(&st) && !harmless {
                    self.quarantine(fd, n, path.join(name), what);
                }
            }
        }
        // The config is now the one git will read: what it names inside a writable path.
        if lstatat(fd, OsStr::new("config")).is_some() {
            let config = path.join("config");
            for v in crate::plan::git::config_paths(&config) {
                let work_tree = path.parent().unwrap_or(Path::new("/"));
                for t in [
                    crate::plan::git::resolve_config_path(&v, &config, &self.home),
                    crate::plan::normalize(&work_tree.join(&v)),
                ] {
                    if self.in_roots(&t) {
                        self.named(&t);
                    }
                }
            }
        }
        if let Some(hooks) = open_subdir(fd, OsStr::new("hooks")) {
            self.hooks(&hooks, &path.join("hooks"));
        } else if let Some(st) = lstatat(fd, OsStr::new("hooks")) {
            if is(st.mode, libc::S_IFLNK) {
                self.quarantine(
                    fd,
                    OsStr::new("hooks"),
                    path.join("hooks"),
                    "a git hooks link",
                );
            }
        }
        if depth > 8 {
            return;
        }
        for sub in ["modules", "worktrees"] {
            if let Some(m) = open_subdir(fd, OsStr::new(sub)) {
                self.gitdirs_below(&m, &path.join(sub), depth + 1);
            }
        }
    }

    /// Git directories below `modules/` or `worktrees/` (a directory with a HEAD).
    fn gitdirs_below(&mut self, dir: &OwnedFd, path: &Path, depth: usize) {
        if depth > 16 {
            return;
        }
        for name in list(dir) {
            let Some(sub) = open_subdir(dir.as_raw_fd(), &name) else {
                continue;
            };
            let p = path.join(&name);
            if lstatat(sub.as_raw_fd(), OsStr::new("HEAD")).is_some()
                || lstatat(sub.as_raw_fd(), OsStr::new("commondir")).is_some()
                || lstatat(sub.as_raw_fd(), OsStr::new("config")).is_some()
            {
                self.gitdir(&sub, &p, depth);
            } else {
                self.gitdirs_below(&sub, &p, depth + 1);
            }
        }
    }

    fn hooks(&mut self, dir: &OwnedFd, path: &Path) {
        for name in list(dir) {
            if name.as_bytes().ends_with(b".sample")
                || name.as_bytes().ends_with(QUARANTINE.as_bytes())
            {
                continue;
            }
            if let Some(st) = lstatat(dir.as_raw_fd(), &name) {
                if self.changed(&st) {
                    self.quarantine(dir.as_raw_fd(), &name, path.join(&name), "a git hook");
                }
            }
        }
    }

    /// A file or directory a git config names (include.path, core.hooksPath,
    /// core.fsmonitor) inside a writable path.
    fn named(&mut self, t: &Path) {
        let (Some(parent), Some(name)) = (t.parent(), t.file_name()) else {
            return;
        };
        let rel = parent.strip_prefix("/").unwrap_or(parent);
        let Ok(root) = hold::open_dir(Path::new("/")) else {
            return;
        };
        let Ok(p) = hold::open_nofollow(root.as_raw_fd(), rel, Path::new("/")) else {
            return;
        };
        let Ok(pd) = hold::openat(
            p.as_raw_fd(),
            OsStr::new("."),
            libc::O_RDONLY | libc::O_DIRECTORY,
            0,
        ) else {
            return;
        };
        let Some(st) = lstatat(pd.as_raw_fd(), name) else {
            return;
        };
        if is(st.mode, libc::S_IFDIR) {
            // A hooks directory.
            if let Some(d) = open_subdir(pd.as_raw_fd(), name) {
                self.hooks(&d, t);
            }
        } else if self.changed(&st) {
            self.quarantine(
                pd.as_raw_fd(),
                name,
                t.to_path_buf(),
                "a file a git config names",
            );
        }
    }

    /// Walk the directory `dir` at `path`. Directories are opened when their turn comes
    /// (a pending one holds only its parent's fd), so a wide tree costs few fds.
    fn tree(&mut self, dir: &OwnedFd, path: &Path) {
        let Ok(first) = hold::openat(
            dir.as_raw_fd(),
            OsStr::new("."),
            libc::O_RDONLY | libc::O_DIRECTORY,
            0,
        ) else {
            return;
        };
        let mut stack: Vec<(Rc<OwnedFd>, Option<OsString>, PathBuf)> =
            vec![(Rc::new(first), None, path.to_path_buf())];
        while let Some((parent, name, p)) = stack.pop() {
            let d = match name {
                None => parent,
                Some(n) => match open_subdir(parent.as_raw_fd(), &n) {
                    Some(fd) => Rc::new(fd),
                    None => continue,
                },
            };
            // Only `.git` entries are looked at closely; of the others only directories
            // are kept (their type from getdents, or one fstatat where the filesystem
            // does not give it), and files cost no allocation.
            let (subdirs, dotgit, n) = scan_dir(&d);
            self.entries += n;
            if self.entries > MAX_ENTRIES {
                self.report.incomplete = Some(format!(
                    "stopped after {MAX_ENTRIES} entries, in {}",
                    p.display()
                ));
                return;
            }
            for name in subdirs {
                let sub = p.join(&name);
                stack.push((d.clone(), Some(name), sub));
            }
            if dotgit {
                let name = OsStr::new(".git");
                let Some(st) = lstatat(d.as_raw_fd(), name) else {
                    continue;
                };
                let full = p.join(name);
                if is(st.mode, libc::S_IFDIR) {
                    if let Some(g) = open_subdir(d.as_raw_fd(), name) {
                        self.gitdir(&g, &full, 0);
                    }
                } else if self.changed(&st) {
                    self.quarantine(d.as_raw_fd(), name, full, "a .git file or link");
                }
            }
        }
    }
}

/// The time to give [`check`] as the start: the kernel's coarse clock, which file times
/// are taken from (a change after this has a ctime at or after it).
pub fn start_time() -> SystemTime {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into our timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) } != 0 {
        return SystemTime::now() - std::time::Duration::from_millis(20);
    }
    SystemTime::UNIX_EPOCH + std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Look at every writable directory `roots` after a cell that started at `since`
/// ([`start_time`]).
/// `protected`: the paths the cell had read-only inside them (changed only from outside,
/// so left alone).
pub fn check(roots: &[PathBuf], protected: &[PathBuf], home: &Path, since: SystemTime) -> Report {
    let d = since
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let mut w = Walk {
        since: (d.as_secs() as i64, d.subsec_nanos() as i64),
        home: home.to_path_buf(),
        roots: roots.to_vec(),
        protected: protected.to_vec(),
        entries: 0,
        report: Report::default(),
    };
    let Ok(root) = hold::open_dir(Path::new("/")) else {
        return w.report;
    };
    for r in roots {
        let rel = r.strip_prefix("/").unwrap_or(r);
        let Ok(p) = hold::open_nofollow(root.as_raw_fd(), rel, Path::new("/")) else {
            continue;
        };
        let Ok(dir) = hold::openat(
            p.as_raw_fd(),
            OsStr::new("."),
            libc::O_RDONLY | libc::O_DIRECTORY,
            0,
        ) else {
            continue;
        };
        // A writable git directory itself (a linked worktree's common directory).
        if lstatat(dir.as_raw_fd(), OsStr::new("HEAD")).is_some()
            && lstatat(dir.as_raw_fd(), OsStr::new("objects")).is_some()
        {
            w.gitdir(&dir, r, 0);
            continue;
        }
        w.tree(&dir, r);
    }
    w.report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_hooks_configs_and_dotgit_files_are_moved_aside_old_ones_stay() {
        let d = tempfile::tempdir().unwrap();
        let ws = std::fs::canonicalize(d.path()).unwrap();
        std::fs::create_dir_all(ws.join(".git/hooks")).unwrap();
        std::fs::create_dir_all(ws.join(".git/modules/sub/hooks")).unwrap();
        std::fs::write(ws.join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
        std::fs::write(ws.join(".git/config"), "[core]\n").unwrap();
        std::fs::write(ws.join(".git/hooks/pre-commit.sample"), "").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        let since = start_time();
        std::thread::sleep(std::time::Duration::from_millis(200));
        std::fs::write(ws.join(".git/hooks/post-checkout"), "#!/bin/sh\n").unwrap();
        std::fs::write(ws.join(".git/hooks/x.sample"), "").unwrap();
        // Changed from outside: the cell had it read-only.
        std::fs::write(ws.join(".git/hooks/pre-push"), "#!/bin/sh\n").unwrap();
        std::fs::write(ws.join(".git/modules/sub/HEAD"), "x\n").unwrap();
        std::fs::write(ws.join(".git/modules/sub/config"), "[core]\nfsmonitor=x\n").unwrap();
        std::fs::create_dir(ws.join("vendor")).unwrap();
        std::fs::write(ws.join("vendor/.git"), "gitdir: ../.git/modules/sub\n").unwrap();
        let r = check(
            std::slice::from_ref(&ws),
            &[ws.join(".git/hooks/pre-push")],
            Path::new("/nonexistent"),
            since,
        );
        let mut got: Vec<PathBuf> = r.findings.iter().map(|f| f.path.clone()).collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                ws.join(".git/hooks/post-checkout"),
                ws.join(".git/modules/sub/config"),
                ws.join("vendor/.git"),
            ]
        );
        assert!(ws.join(".git/config").exists());
        assert!(!ws.join("vendor/.git").exists());
        assert!(ws.join("vendor/.git.taskcell-quarantine").exists());
        assert!(r.incomplete.is_none());
    }
}
