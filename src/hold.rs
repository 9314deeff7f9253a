//! Paths resolved once, then held: the file-descriptor mechanism under the cell's mounts.
//!
//! Every host path the cell gets is opened once, as an `O_PATH` fd, without following a
//! symlink in any component (`openat2` with `RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`,
//! or component by component with `O_NOFOLLOW` where `openat2` is missing). The mount is
//! then made from **that fd** (`open_tree(OPEN_TREE_CLONE)` → `mount_setattr` →
//! `move_mount`), onto a target that is also an fd opened without following symlinks. A
//! cell that swaps a directory for a symlink while another cell starts makes that start
//! fail; it never redirects a mount.
//!
//! The fds are opened in the cell's init, in the cell's own mount namespace: the kernel
//! refuses to clone a mount reached through an fd of another mount namespace.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

// Kernel ABI (linux/openat2.h, linux/mount.h, fcntl.h).
const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_NO_SYMLINKS: u64 = 0x04;
const OPEN_TREE_CLONE: u32 = 1;
const AT_RECURSIVE: u32 = 0x8000;
const MOVE_MOUNT_F_EMPTY_PATH: u32 = 0x04;
const MOVE_MOUNT_T_EMPTY_PATH: u32 = 0x40;
pub const MOUNT_ATTR_RDONLY: u64 = 0x01;
pub const MOUNT_ATTR_NOSUID: u64 = 0x02;
pub const MOUNT_ATTR_NODEV: u64 = 0x04;

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn cstr(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn owned(ret: libc::c_long) -> io::Result<OwnedFd> {
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
}

/// `openat(dir, name, flags)` for one path component.
pub fn openat(dir: RawFd, name: &OsStr, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let c = cstr(name)?;
    // SAFETY: openat reads a NUL-terminated name; the result is checked.
    owned(unsafe { libc::openat(dir, c.as_ptr(), flags | libc::O_CLOEXEC, mode) } as libc::c_long)
}

/// An `O_PATH` fd of `/` (or any absolute directory).
pub fn open_dir(p: &Path) -> io::Result<OwnedFd> {
    let c = cstr(p.as_os_str())?;
    // SAFETY: open reads a NUL-terminated path; the result is checked.
    owned(unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    } as libc::c_long)
}

fn fstat_mode(fd: RawFd) -> io::Result<u32> {
    // SAFETY: fstat fills a zeroed stat of our own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd is open; st is a valid out-pointer.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.st_mode)
}

fn is_link(mode: u32) -> bool {
    mode & libc::S_IFMT == libc::S_IFLNK
}

/// The target of the symlink `name` in `dir`.
pub fn readlinkat(dir: RawFd, name: &OsStr) -> io::Result<PathBuf> {
    let c = cstr(name)?;
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: readlinkat writes at most buf.len() bytes into buf.
    let n = unsafe { libc::readlinkat(dir, c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(PathBuf::from(OsStr::from_bytes(&buf)))
}

/// Only names (and the root): no `.` or `..`, so the path is its own normal form.
pub fn plain_components(p: &Path) -> bool {
    p.components()
        .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

fn names(p: &Path) -> Vec<&OsStr> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect()
}

/// The first symlink met walking `rel` (relative, or absolute = from `dir`) down from the
/// directory `dir`: (the link's path as `shown` + the components walked, its target).
pub fn first_symlink_at(
    dir: RawFd,
    rel: &Path,
    shown: &Path,
) -> io::Result<Option<(PathBuf, PathBuf)>> {
    // One openat2 that follows no symlink answers the common case (none, or the path
    // missing past its last link-free component); the walk below names a link it meets.
    match openat2_nofollow(dir, rel) {
        Ok(fd) if !is_link(fstat_mode(fd.as_raw_fd())?) => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Err(e),
        _ => {}
    }
    let mut cur: Option<OwnedFd> = None;
    let mut at = shown.to_path_buf();
    for name in names(rel) {
        let d = cur.as_ref().map_or(dir, |f| f.as_raw_fd());
        let fd = openat(d, name, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
        at.push(name);
        if is_link(fstat_mode(fd.as_raw_fd())?) {
            return Ok(Some((at, readlinkat(d, name)?)));
        }
        cur = Some(fd);
    }
    Ok(None)
}

/// The first symlink of the absolute path `p`, walking from `/`.
pub fn first_symlink(p: &Path) -> io::Result<Option<(PathBuf, PathBuf)>> {
    Ok(match path_kind(p)? {
        PathKind::Link { link, target } => Some((link, target)),
        PathKind::Dir | PathKind::NotDir => None,
    })
}

/// What lies at an absolute path, found without following any symlink.
#[derive(Debug, PartialEq, Eq)]
pub enum PathKind {
    Dir,
    NotDir,
    /// The first symlink on the way (the path up to it) and its target.
    Link {
        link: PathBuf,
        target: PathBuf,
    },
}

/// [`PathKind`] of the absolute path `p`: one `openat2` from the root that follows no
/// symlink for the common case, a walk by component when it meets one (to name it).
/// NotFound when a component is missing before any symlink.
pub fn path_kind(p: &Path) -> io::Result<PathKind> {
    let kind = |mode: u32| {
        if mode & libc::S_IFMT == libc::S_IFDIR {
            PathKind::Dir
        } else {
            PathKind::NotDir
        }
    };
    if p.is_absolute() {
        match openat2_nofollow_abs(p) {
            Ok(fd) => {
                let mode = fstat_mode(fd.as_raw_fd())?;
                if !is_link(mode) {
                    return Ok(kind(mode));
                }
                // openat2 refused a link before the last component and opened this one
                // (O_PATH | O_NOFOLLOW): the last component is the link, read from its fd.
                if plain_components(p) {
                    return Ok(PathKind::Link {
                        link: p.to_path_buf(),
                        target: readlinkat(fd.as_raw_fd(), OsStr::new(""))?,
                    });
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Err(e),
            _ => {}
        }
    }
    let root = open_dir(Path::new("/"))?;
    let mut cur: Option<OwnedFd> = None;
    let mut at = PathBuf::from("/");
    let mut mode = libc::S_IFDIR;
    for name in names(p) {
        let d = cur.as_ref().map_or(root.as_raw_fd(), |f| f.as_raw_fd());
        let fd = openat(d, name, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
        at.push(name);
        mode = fstat_mode(fd.as_raw_fd())?;
        if is_link(mode) {
            return Ok(PathKind::Link {
                link: at,
                target: readlinkat(d, name)?,
            });
        }
        cur = Some(fd);
    }
    Ok(kind(mode))
}

/// Open `rel` below `dir` as an `O_PATH` fd, following no symlink in any component
/// (nor a /proc magic link). A symlink met is an error that names it (as `shown` + the
/// components up to the link) and its target.
pub fn open_nofollow(dir: RawFd, rel: &Path, shown: &Path) -> io::Result<OwnedFd> {
    let rel_s = relative(rel);
    let fd = match openat2_nofollow(dir, &rel_s) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => walk_nofollow(dir, &rel_s, shown)?,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(symlink_error(dir, &rel_s, shown, e))
        }
        Err(e) => return Err(e),
    };
    // O_PATH | O_NOFOLLOW opens a final symlink itself.
    if is_link(fstat_mode(fd.as_raw_fd())?) {
        return Err(symlink_error(
            dir,
            &rel_s,
            shown,
            io::Error::from_raw_os_error(libc::ELOOP),
        ));
    }
    Ok(fd)
}

/// `rel`'s normal components below `dir` ("." for none).
fn relative(rel: &Path) -> PathBuf {
    let rel_s: PathBuf = names(rel).iter().collect();
    if rel_s.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        rel_s
    }
}

/// `openat2(dir, rel, O_PATH | O_NOFOLLOW, RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`:
/// ELOOP for a symlink in any component but the last (which O_NOFOLLOW opens itself),
/// ENOSYS before Linux 5.6.
fn openat2_nofollow(dir: RawFd, rel: &Path) -> io::Result<OwnedFd> {
    openat2_nofollow_c(dir, &cstr(relative(rel).as_os_str())?)
}

fn openat2_nofollow_c(dir: RawFd, c: &std::ffi::CStr) -> io::Result<OwnedFd> {
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_CLOEXEC | libc::O_NOFOLLOW) as u64,
        mode: 0,
        resolve: RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: openat2 reads the path and a properly sized open_how; the result is checked.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir,
            c.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    owned(ret)
}

/// [`openat2_nofollow`] of an absolute path from the process's root (no fd of `/` to open
/// and close first).
fn openat2_nofollow_abs(p: &Path) -> io::Result<OwnedFd> {
    openat2_nofollow_c(libc::AT_FDCWD, &cstr(p.as_os_str())?)
}

fn walk_nofollow(dir: RawFd, rel: &Path, shown: &Path) -> io::Result<OwnedFd> {
    let mut cur: Option<OwnedFd> = None;
    for name in names(rel) {
        let d = cur.as_ref().map_or(dir, |f| f.as_raw_fd());
        let fd = openat(d, name, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
        if is_link(fstat_mode(fd.as_raw_fd())?) {
            return Err(symlink_error(
                dir,
                rel,
                shown,
                io::Error::from_raw_os_error(libc::ELOOP),
            ));
        }
        cur = Some(fd);
    }
    match cur {
        Some(fd) => Ok(fd),
        None => openat(dir, OsStr::new("."), libc::O_PATH, 0),
    }
}

fn symlink_error(dir: RawFd, rel: &Path, shown: &Path, e: io::Error) -> io::Error {
    match first_symlink_at(dir, rel, shown) {
        Ok(Some((link, target))) => io::Error::other(format!(
            "{} is a symlink (to {}), and taskcell follows none here",
            link.display(),
            target.display()
        )),
        _ => e,
    }
}

/// Open (creating what is missing, mode 0755 / an empty 0644 file) the mount target `rel`
/// below the directory `base` (shown as `shown` in errors; the cell's new root, opened once
/// for every mount target in it), following no symlink: the place a mount goes is the place
/// that was meant.
pub fn open_target_in(
    base: &OwnedFd,
    shown: &Path,
    rel: &Path,
    is_dir: bool,
) -> io::Result<OwnedFd> {
    let parts = names(rel);
    if parts.is_empty() {
        return openat(base.as_raw_fd(), std::ffi::OsStr::new("."), libc::O_PATH, 0);
    }
    let mut cur: Option<OwnedFd> = None;
    let mut at = shown.to_path_buf();
    // Below a directory made here, nothing exists yet: each further one is made and
    // opened without looking first (init alone works in the cell's new root).
    let mut made = false;
    for (i, name) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let fd = cur.as_ref().map_or(base.as_raw_fd(), |c| c.as_raw_fd());
        let want_dir = !last || is_dir;
        let flags = libc::O_PATH | libc::O_NOFOLLOW;
        let mut missing = false;
        if want_dir {
            if made {
                let c = cstr(name)?;
                // SAFETY: mkdirat reads a NUL-terminated name.
                if unsafe { libc::mkdirat(fd, c.as_ptr(), 0o755) } != 0 {
                    let e = io::Error::last_os_error();
                    if e.raw_os_error() != Some(libc::EEXIST) {
                        return Err(e);
                    }
                    // Something is there after all: the careful way below.
                    made = false;
                }
            }
            // O_DIRECTORY with O_NOFOLLOW opens a directory and nothing else (a symlink
            // or a file fails and takes the checks below, which name it).
            match openat(fd, name, flags | libc::O_DIRECTORY, 0) {
                Ok(d) => {
                    at.push(name);
                    cur = Some(d);
                    continue;
                }
                Err(e) if made => return Err(e),
                Err(e) => missing = e.raw_os_error() == Some(libc::ENOENT),
            }
        }
        let first = if missing {
            Err(io::Error::from_raw_os_error(libc::ENOENT))
        } else {
            openat(fd, name, flags, 0)
        };
        let opened = match first {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                made = true;
                let c = cstr(name)?;
                if want_dir {
                    // SAFETY: mkdirat reads a NUL-terminated name.
                    if unsafe { libc::mkdirat(fd, c.as_ptr(), 0o755) } != 0 {
                        let e = io::Error::last_os_error();
                        if e.raw_os_error() != Some(libc::EEXIST) {
                            return Err(e);
                        }
                    }
                    openat(fd, name, flags, 0)?
                } else {
                    let f = openat(
                        fd,
                        name,
                        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
                        0o644,
                    )?;
                    drop(f);
                    openat(fd, name, flags, 0)?
                }
            }
            r => r?,
        };
        at.push(name);
        let mode = fstat_mode(opened.as_raw_fd())?;
        if is_link(mode) {
            return Err(io::Error::other(format!(
                "{} is a symlink (to {}), and taskcell mounts nothing through one",
                at.display(),
                readlinkat(fd, name)
                    .map(|t| t.display().to_string())
                    .unwrap_or_default()
            )));
        }
        if want_dir && mode & libc::S_IFMT != libc::S_IFDIR {
            return Err(io::Error::other(format!(
                "{} is not a directory",
                at.display()
            )));
        }
        cur = Some(opened);
    }
    cur.ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))
}

/// A detached, recursive copy of the mount tree at `src` (an fd of this mount namespace).
pub fn clone_tree(src: &OwnedFd) -> io::Result<OwnedFd> {
    let empty = c"";
    // SAFETY: open_tree reads an empty path and flags; the result is checked.
    owned(unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            src.as_raw_fd(),
            empty.as_ptr(),
            (OPEN_TREE_CLONE | libc::O_CLOEXEC as u32 | libc::AT_EMPTY_PATH as u32 | AT_RECURSIVE)
                as libc::c_uint,
        )
    })
}

/// Add mount attributes (`MOUNT_ATTR_*`) to every mount of the tree `tree`.
pub fn set_attr_recursive(tree: &OwnedFd, set: u64) -> io::Result<()> {
    set_attr_userns(tree, set, 0)
}

/// Make every mount of the detached tree `tree` idmapped by the user namespace `userns`
/// (`MOUNT_ATTR_IDMAP`; needs CAP_SYS_ADMIN over the filesystem, i.e. host root), with
/// the attributes `set` added.
pub fn set_attr_idmap(tree: &OwnedFd, set: u64, userns: &OwnedFd) -> io::Result<()> {
    set_attr_userns(tree, set | MOUNT_ATTR_IDMAP, userns.as_raw_fd() as u64)
}

pub const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

fn set_attr_userns(tree: &OwnedFd, set: u64, userns_fd: u64) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd,
    };
    let empty = c"";
    // SAFETY: mount_setattr reads an empty path and a properly sized mount_attr.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            (libc::AT_EMPTY_PATH as u32 | AT_RECURSIVE) as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Attach the detached tree `tree` onto the target fd `dst`.
pub fn move_onto(tree: &OwnedFd, dst: &OwnedFd) -> io::Result<()> {
    let empty = c"";
    // SAFETY: move_mount reads two empty paths; both fds are open.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            dst.as_raw_fd(),
            empty.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_nofollow_refuses_a_link_in_any_component_and_names_it() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("real/sub")).unwrap();
        std::os::unix::fs::symlink("real", d.path().join("link")).unwrap();
        std::os::unix::fs::symlink("real/sub", d.path().join("last")).unwrap();
        let dir = open_dir(d.path()).unwrap();
        let shown = Path::new("/x");
        assert!(open_nofollow(dir.as_raw_fd(), Path::new("real/sub"), shown).is_ok());
        for (p, link) in [("link/sub", "/x/link"), ("last", "/x/last")] {
            let e = open_nofollow(dir.as_raw_fd(), Path::new(p), shown).unwrap_err();
            assert!(e.to_string().contains(link), "{p}: {e}");
        }
    }

    #[test]
    fn path_kind_names_the_first_link_whether_last_or_on_the_way() {
        let d = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(d.path()).unwrap();
        std::fs::create_dir_all(base.join("real/sub")).unwrap();
        std::fs::write(base.join("real/file"), b"").unwrap();
        std::os::unix::fs::symlink("real", base.join("link")).unwrap();
        std::os::unix::fs::symlink("real/file", base.join("last")).unwrap();
        let link = |p: &str| match path_kind(&base.join(p)).unwrap() {
            PathKind::Link { link, target } => Some((link, target)),
            _ => None,
        };
        // The last component (one openat2, the target read from its fd).
        assert_eq!(
            link("last"),
            Some((base.join("last"), PathBuf::from("real/file")))
        );
        assert_eq!(
            link("link"),
            Some((base.join("link"), PathBuf::from("real")))
        );
        // On the way (openat2 refuses it; the walk finds it).
        assert_eq!(
            link("link/sub"),
            Some((base.join("link"), PathBuf::from("real")))
        );
        assert!(matches!(
            path_kind(&base.join("real/sub")),
            Ok(PathKind::Dir)
        ));
        assert!(matches!(
            path_kind(&base.join("real/file")),
            Ok(PathKind::NotDir)
        ));
        assert!(path_kind(&base.join("real/none")).is_err());
    }

    #[test]
    fn open_target_creates_dirs_and_files_but_never_through_a_link() {
        let d = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(d.path()).unwrap();
        let f = open_target_in(
            &open_dir(Path::new("/")).unwrap(),
            Path::new("/"),
            &base.join("a/b/file"),
            false,
        )
        .unwrap();
        drop(f);
        assert!(base.join("a/b/file").is_file());
        std::os::unix::fs::symlink("/etc", base.join("a/l")).unwrap();
        let e = open_target_in(
            &open_dir(Path::new("/")).unwrap(),
            Path::new("/"),
            &base.join("a/l/x"),
            true,
        )
        .unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
        assert!(!Path::new("/etc/x").exists());
    }
}
