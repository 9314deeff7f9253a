//! The cell's root filesystem: the Spec's [`MountOp`]s (computed from the plan by
//! `spec::mounts`), executed by [`execute`] inside the cell's mount namespace.
//!
//! Execution follows bubblewrap's scheme: a tmpfs is mounted on `/tmp` (private to our
//! mount namespace) and becomes the root with `pivot_root`, the host's root staying
//! reachable at `/oldroot`; the new root is its directory `/newroot` bound onto itself
//! (the staging tmpfs is the root's filesystem too, as in bubblewrap), populated by
//! binding `/oldroot/X` onto `/newroot/X`; then `/newroot` becomes `/` through
//! `pivot_root(".", ".")` and the staging root, with the host's root below it, is detached
//! in one `umount2` by init's helper thread ([`Detaching`]): every unmount waits for an RCU
//! grace period (≈ 0.2 ms), which bubblewrap pays twice in a row and taskcell once, while
//! the worker sets up its process (the worker waits for it before its `execve`).

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::hold;

use crate::spec::mounts::MountOp;

/// Errors carry the op that failed, so the user sees which path could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("setting up the cell's filesystem: {what}: {err}")]
pub struct RootfsError {
    pub what: String,
    pub err: io::Error,
}

fn err(what: impl Into<String>) -> impl FnOnce(nix::Error) -> RootfsError {
    let what = what.into();
    move |e| RootfsError {
        what,
        err: io::Error::from(e),
    }
}

fn ioerr(what: impl Into<String>) -> impl FnOnce(io::Error) -> RootfsError {
    let what = what.into();
    move |e| RootfsError { what, err: e }
}

const NEWROOT: &str = "/newroot";
const OLDROOT: &str = "/oldroot";

fn under(prefix: &str, p: &Path) -> PathBuf {
    let rel = p.strip_prefix("/").unwrap_or(p);
    if rel.as_os_str().is_empty() {
        PathBuf::from(prefix)
    } else {
        Path::new(prefix).join(rel)
    }
}

/// Build the root and switch to it. Runs in the cell's init, in its own user and mount
/// namespace, before anything else of the cell runs.
///
/// `prepared`: root-started, the socket on which the supervisor sends every bind of `ops`
/// as a detached (idmapped where writable) tree, in the order of the ops, while this
/// builds the rest; they are received at the first bind and moved into place as they are.
/// `tmpfs_size`: the `size=` of every writable tmpfs (bytes), None for the default.
pub fn execute(
    ops: &[MountOp],
    prepared: Option<&OwnedFd>,
    tmpfs_size: Option<u64>,
) -> Result<(), RootfsError> {
    // Nothing we do here may propagate back to the host.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(err("making / private"))?;
    let base = "/tmp";
    mount(
        Some("tmpfs"),
        base,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755,size=1m"),
    )
    .map_err(err("mounting the staging tmpfs on /tmp"))?;
    for d in ["newroot", "oldroot"] {
        fs::create_dir(Path::new(base).join(d)).map_err(ioerr("creating staging dirs"))?;
    }
    nix::unistd::pivot_root(base, "/tmp/oldroot")
        .map_err(err("pivot_root to the staging tmpfs"))?;
    nix::unistd::chdir("/").map_err(err("chdir /"))?;
    // The cell's root: a directory of the staging tmpfs bound onto itself (a mount point
    // pivot_root can take; the staging mount goes, its filesystem stays for this bind),
    // as bubblewrap does: one tmpfs fewer to make and to tear down. Its mode does not
    // depend on the umask.
    fs::set_permissions(NEWROOT, fs::Permissions::from_mode(0o755))
        .map_err(ioerr("setting the mode of the cell's root"))?;
    mount(
        Some(NEWROOT),
        NEWROOT,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(err("binding the cell's root"))?;

    let oldroot = hold::open_dir(Path::new(OLDROOT)).map_err(ioerr("opening the host's root"))?;
    // Every mount target is opened below this (no walk from / through /newroot each time).
    let newroot = hold::open_dir(Path::new(NEWROOT)).map_err(ioerr("opening the new root"))?;
    let roots = Roots {
        old: &oldroot,
        new: &newroot,
    };
    let mut trees: Option<std::vec::IntoIter<OwnedFd>> = None;
    for op in ops {
        match (op, prepared) {
            (MountOp::Bind { path, is_dir, .. }, Some(sock)) => {
                let what = || format!("binding {} (idmapped)", path.display());
                if trees.is_none() {
                    let want = ops
                        .iter()
                        .filter(|o| matches!(o, MountOp::Bind { .. }))
                        .count();
                    trees = Some(receive_trees(sock, want)?.into_iter());
                }
                let tree = trees
                    .as_mut()
                    .and_then(|t| t.next())
                    .ok_or_else(|| RootfsError {
                        what: what(),
                        err: io::Error::other("the supervisor sent fewer trees than binds"),
                    })?;
                let dst = roots.target(path, *is_dir).map_err(ioerr(what()))?;
                hold::move_onto(&tree, &dst).map_err(ioerr(what()))?;
            }
            _ => apply(op, &roots, tmpfs_size)?,
        }
    }
    drop(newroot);
    drop(oldroot);

    // The host's root (mounted at /oldroot on the staging root) is detached together with
    // the staging root below, in one unmount.
    nix::unistd::chdir(NEWROOT).map_err(err("chdir /newroot"))?;
    nix::unistd::pivot_root(".", ".").map_err(err("pivot_root into the cell's root"))?;
    // The root tmpfs becomes read-only last (see RemountRo for "/" in ops, which is
    // applied here because it must follow the pivot). "/" is the new root even while the
    // staging root is still stacked on it: a lookup starts at the root without descending
    // into what is mounted on it (only `umount2(".")` below does, by design).
    if ops
        .iter()
        .any(|o| matches!(o, MountOp::RemountRo { path } if path == Path::new("/")))
    {
        remount(
            Path::new("/"),
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        )
        .map_err(err("making the cell's root read-only"))?;
    }
    // The staging root is detached by init's helper ([`Detaching::start`]).
    Ok(())
}

/// The staging root, with the host's root below it, being detached by init's helper
/// thread ([`super::Helper`], which shares init's working directory, the new root with the
/// staging root stacked on it: nothing in init changes directory until [`Detaching::finish`]).
/// The detach waits for an RCU grace period; the worker does its setup meanwhile and
/// waits on [`Detaching::done`] before its `execve`, so the command never sees the host's
/// root. Queued before the Landlock rules, whose job drops the helper's capabilities.
pub struct Detaching {
    /// Read end: one `i32`, 0 once the detach is done, else its errno.
    pub done: OwnedFd,
    /// The write end, held here (not by the helper) until [`Detaching::finish`]: a number
    /// the helper closed could be reused by init before the worker starts, and the worker
    /// would then close something else in place of its copy. The job always writes its
    /// word (a job dropped unrun or ended by a panic writes an error), so no reader waits
    /// for the end of the pipe.
    _write: OwnedFd,
}

impl Detaching {
    /// Queue the detach on `helper`. Call it once the cell's root is in place (after
    /// [`execute`]) and before any job that drops the helper's capabilities (it unmounts).
    pub fn start(helper: &super::Helper) -> Result<Detaching, RootfsError> {
        let (done, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(err("a pipe for detaching the staging root"))?;
        /// The job's word, written once: the detach's result, or EIO when the job ends
        /// without one.
        struct Word(Option<std::os::fd::RawFd>);
        impl Word {
            fn say(&mut self, code: i32) {
                if let Some(fd) = self.0.take() {
                    // SAFETY: the write end stays open in `Detaching` until the helper
                    // is joined (see Detaching::finish).
                    let w = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
                    let _ = nix::unistd::write(w, &code.to_ne_bytes());
                }
            }
        }
        impl Drop for Word {
            fn drop(&mut self) {
                self.say(libc::EIO);
            }
        }
        let mut word = Word(Some(w.as_raw_fd()));
        let queued = helper.run(move || {
            let r = umount2(".", MntFlags::MNT_DETACH);
            word.say(match r {
                Ok(()) => 0,
                Err(e) => e as i32,
            });
        });
        if !queued {
            return Err(RootfsError {
                what: "detaching the staging root".into(),
                err: io::Error::other("init's helper thread has ended"),
            });
        }
        Ok(Detaching { done, _write: w })
    }

    /// Once the helper is joined (after the worker has exec'd or failed): make `/` the
    /// working directory again.
    pub fn finish(self) {
        drop(self.done);
        let _ = nix::unistd::chdir("/");
    }
}

/// In the worker, before its `execve`: wait until the staging root is detached.
pub fn wait_detached(done: &OwnedFd) -> Result<(), String> {
    let mut buf = [0u8; 4];
    let mut got = 0;
    while got < buf.len() {
        match nix::unistd::read(done.as_raw_fd(), &mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("waiting for the staging root's detach: {e}")),
        }
    }
    if got < buf.len() {
        return Err("detaching the staging root: init's thread ended without a word".into());
    }
    match i32::from_ne_bytes(buf) {
        0 => Ok(()),
        e => Err(format!(
            "setting up the cell's filesystem: detaching the staging root: {}",
            nix::errno::Errno::from_raw(e)
        )),
    }
}

/// The `want` trees the supervisor sends on `sock` (one message per at most
/// `fdpass::MAX_FDS`), blocking until they are all here.
fn receive_trees(sock: &OwnedFd, want: usize) -> Result<Vec<OwnedFd>, RootfsError> {
    let mut trees = Vec::with_capacity(want);
    while trees.len() < want {
        let got =
            super::fdpass::recv(sock).map_err(ioerr("receiving the binds from the supervisor"))?;
        if got.is_empty() {
            return Err(RootfsError {
                what: "receiving the binds from the supervisor".into(),
                err: io::Error::other(format!(
                    "{} of {want} arrived before the supervisor stopped",
                    trees.len()
                )),
            });
        }
        trees.extend(got);
    }
    Ok(trees)
}

/// The host's root and the new root, opened once for the whole sequence.
struct Roots<'a> {
    old: &'a OwnedFd,
    new: &'a OwnedFd,
}

impl Roots<'_> {
    /// The mount target `path` of the cell's root (see [`hold::open_target_in`]).
    fn target(&self, path: &Path, is_dir: bool) -> io::Result<OwnedFd> {
        hold::open_target_in(self.new, Path::new(NEWROOT), path, is_dir)
    }
}

fn apply(op: &MountOp, roots: &Roots<'_>, tmpfs_size: Option<u64>) -> Result<(), RootfsError> {
    match op {
        MountOp::Proc { path } => {
            let dst = under(NEWROOT, path);
            mkdir_p(&dst)?;
            mount(
                Some("proc"),
                &dst,
                Some("proc"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                None::<&str>,
            )
            .map_err(err(
                "mounting a fresh /proc (is /proc on the host partly masked, as in some containers?)",
            ))?;
        }
        MountOp::Tmpfs {
            path,
            mode,
            readonly,
        } => {
            // The target may lie in a host directory bound earlier: opened without
            // following symlinks, then mounted on through the cwd.
            let dst = roots
                .target(path, true)
                .map_err(ioerr(format!("mounting a tmpfs on {}", path.display())))?;
            let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
            if *readonly {
                flags |= MsFlags::MS_RDONLY | MsFlags::MS_NOEXEC;
            }
            nix::unistd::fchdir(dst.as_raw_fd()).map_err(err("entering a mount target"))?;
            let mut opts = format!("mode={mode:o}");
            if let (Some(size), false) = (tmpfs_size, *readonly) {
                opts.push_str(&format!(",size={size}"));
            }
            let r = mount(
                Some("tmpfs"),
                ".",
                Some("tmpfs"),
                flags,
                Some(opts.as_str()),
            );
            nix::unistd::chdir("/").map_err(err("chdir /"))?;
            r.map_err(err(format!("mounting a tmpfs on {}", path.display())))?;
        }
        MountOp::Bind {
            src,
            path,
            readonly,
            is_dir,
        } => {
            // The one resolution of the host path that is used: opened beneath the host's
            // root without following any symlink, then mounted from that fd onto a target
            // opened the same way (see `hold`).
            let what = || format!("binding {}", path.display());
            let rel = src.strip_prefix("/").unwrap_or(src);
            let held = hold::open_nofollow(roots.old.as_raw_fd(), rel, Path::new("/"))
                .map_err(ioerr(what()))?;
            let tree = hold::clone_tree(&held).map_err(ioerr(what()))?;
            let mut attrs = hold::MOUNT_ATTR_NOSUID | hold::MOUNT_ATTR_NODEV;
            if *readonly {
                attrs |= hold::MOUNT_ATTR_RDONLY;
            }
            // Every mount of the copied tree, submounts included.
            hold::set_attr_recursive(&tree, attrs).map_err(ioerr(format!(
                "making {} {}",
                path.display(),
                if *readonly {
                    "read-only"
                } else {
                    "nosuid,nodev"
                }
            )))?;
            let dst = roots.target(path, *is_dir).map_err(ioerr(what()))?;
            hold::move_onto(&tree, &dst).map_err(ioerr(what()))?;
        }
        MountOp::Dev { src, path } => {
            let s = under(OLDROOT, src);
            let dst = under(NEWROOT, path);
            make_target(&dst, false)?;
            mount(Some(&s), &dst, None::<&str>, MsFlags::MS_BIND, None::<&str>)
                .map_err(err(format!("binding {}", path.display())))?;
        }
        MountOp::Devpts { path } => {
            let dst = under(NEWROOT, path);
            mkdir_p(&dst)?;
            mount(
                Some("devpts"),
                &dst,
                Some("devpts"),
                MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
                Some("newinstance,ptmxmode=0666,mode=620"),
            )
            .map_err(err("mounting a new devpts instance"))?;
        }
        MountOp::Symlink { target, path } => {
            let dst = under(NEWROOT, path);
            // The parent is made only when it is missing (one call for the usual case).
            let mut r = std::os::unix::fs::symlink(target, &dst);
            if let (Err(e), Some(parent)) = (&r, dst.parent()) {
                if e.kind() == io::ErrorKind::NotFound {
                    mkdir_p(parent)?;
                    r = std::os::unix::fs::symlink(target, &dst);
                }
            }
            r.map_err(ioerr(format!("creating symlink {}", path.display())))?;
        }
        MountOp::SecretsTmpfs {
            path,
            size,
            uid,
            gid,
        } => {
            let dst = under(NEWROOT, path);
            mkdir_p(&dst)?;
            let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
            let opts = format!("mode=0700,size={size},nr_inodes=1024,uid={uid},gid={gid}");
            // noswap (Linux 6.4+) keeps the values out of swap; older kernels refuse it.
            let first = mount(
                Some("tmpfs"),
                &dst,
                Some("tmpfs"),
                flags,
                Some(format!("{opts},noswap").as_str()),
            );
            if first.is_err() {
                mount(
                    Some("tmpfs"),
                    &dst,
                    Some("tmpfs"),
                    flags,
                    Some(opts.as_str()),
                )
                .map_err(err(format!(
                    "mounting the secrets tmpfs on {}",
                    path.display()
                )))?;
            }
        }
        MountOp::SelfRo { path } => {
            let dst = under(NEWROOT, path);
            if dst.exists() {
                mount(
                    Some(&dst),
                    &dst,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .map_err(err(format!("binding {}", path.display())))?;
                // A fresh procfs of the cell has nothing mounted below it.
                remount_ro(&dst, &path.display().to_string(), &[])?;
            }
        }
        MountOp::Mask { path } => {
            let dst = under(NEWROOT, path);
            match fs::symlink_metadata(&dst) {
                Ok(m) if m.is_dir() => mount(
                    Some("tmpfs"),
                    &dst,
                    Some("tmpfs"),
                    MsFlags::MS_RDONLY
                        | MsFlags::MS_NOSUID
                        | MsFlags::MS_NODEV
                        | MsFlags::MS_NOEXEC,
                    Some("mode=0555,size=4k"),
                )
                .map_err(err(format!("masking {}", path.display())))?,
                // A file reads as empty and swallows writes (/dev/null bound over it, as
                // runc masks paths): one mount, no read-only remount of each.
                Ok(_) => mount(
                    Some(&under(OLDROOT, Path::new("/dev/null"))),
                    &dst,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(err(format!("masking {}", path.display())))?,
                Err(_) => {}
            }
        }
        MountOp::RemountRo { path } => {
            // Only this mount (the tmpfs), not what is mounted below it.
            if path != Path::new("/") {
                remount(
                    &under(NEWROOT, path),
                    MsFlags::MS_RDONLY | MsFlags::MS_NOSUID,
                )
                .map_err(err(format!("making {} read-only", path.display())))?;
            }
        }
    }
    Ok(())
}

fn mkdir_p(p: &Path) -> Result<(), RootfsError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(p)
        .map_err(ioerr(format!("creating directory {}", p.display())))
}

fn make_target(dst: &Path, is_dir: bool) -> Result<(), RootfsError> {
    if is_dir {
        return mkdir_p(dst);
    }
    // An empty file to mount on (its mode is hidden by the mount): made in one call when
    // its directory exists, which is the usual case.
    let create = || {
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(dst)
    };
    match create() {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = dst.parent() {
                mkdir_p(parent)?;
            }
            create()
                .map(drop)
                .map_err(ioerr(format!("creating {}", dst.display())))
        }
        Err(e) => Err(ioerr(format!("creating {}", dst.display()))(e)),
    }
}

/// Flags that a remount in a user namespace must keep (the kernel locks them).
fn kept_flags(p: &Path) -> MsFlags {
    let mut out = MsFlags::empty();
    if let Ok(st) = nix::sys::statvfs::statvfs(p) {
        use nix::sys::statvfs::FsFlags;
        let f = st.flags();
        for (a, b) in [
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
            (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
            (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
        ] {
            if f.contains(a) {
                out |= b;
            }
        }
    }
    out
}

fn remount(p: &Path, add: MsFlags) -> nix::Result<()> {
    let flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | kept_flags(p) | add;
    mount(None::<&str>, p, None::<&str>, flags, None::<&str>)
}

/// Make `p` and every mount below it read-only (a recursive bind carries submounts, and
/// a remount only changes the top one).
fn remount_ro(p: &Path, what: &str, subs: &[PathBuf]) -> Result<(), RootfsError> {
    let ro = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    remount(p, ro).map_err(err(format!("making {what} read-only")))?;
    for sub in subs {
        // A submount may be gone or inaccessible; what cannot be remounted is an error,
        // since a writable hole in a read-only path breaks the promise.
        remount(sub, ro).map_err(err(format!(
            "making {} (a mount below {what}) read-only",
            sub.display()
        )))?;
    }
    Ok(())
}
