//! The cell's root filesystem: first computed as a list of [`MountOp`]s from the plan's
//! paths (pure; unit-tested; printed by `explain --mounts`), then executed by
//! [`execute`] inside the cell's mount namespace.
//!
//! Execution follows bubblewrap's scheme: a tmpfs is mounted on `/tmp` (private to our
//! mount namespace) and becomes the root with `pivot_root`, the host's root staying
//! reachable at `/oldroot`; the new root is a second tmpfs at `/newroot`, populated by
//! binding `/oldroot/X` onto `/newroot/X`; then `/oldroot` is detached and `/newroot`
//! becomes `/` through `pivot_root(".", ".")`.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::hold;

use crate::plan::{Access, PathRule};

/// One step in building the root. Paths are as seen inside the cell (absolute).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountOp {
    /// An empty tmpfs at `path` with `mode` (octal), read-only when `readonly`.
    Tmpfs {
        path: PathBuf,
        mode: u32,
        readonly: bool,
    },
    /// Bind the host's `src` at `path` (recursively), then make it read-only or not.
    Bind {
        src: PathBuf,
        path: PathBuf,
        readonly: bool,
        is_dir: bool,
    },
    /// A fresh procfs for the cell's PID namespace.
    Proc {
        path: PathBuf,
    },
    /// The host's device node `src` bound at `path` (null, zero, ...).
    Dev {
        src: PathBuf,
        path: PathBuf,
    },
    /// A new, private devpts instance.
    Devpts {
        path: PathBuf,
    },
    Symlink {
        target: PathBuf,
        path: PathBuf,
    },
    /// Remount `path` read-only (the root and `/dev` once they are populated).
    RemountRo {
        path: PathBuf,
    },
    /// The private tmpfs for file-delivered secrets: mode 0700 owned by `uid:gid` while
    /// init fills it (`secrets::deliver::populate` then makes it 0500 and read-only),
    /// nosuid,nodev,noexec, `noswap` where the kernel has it, at most `size` bytes.
    SecretsTmpfs {
        path: PathBuf,
        size: u64,
        uid: u32,
        gid: u32,
    },
    /// Bind a path of the new root onto itself read-only (parts of /proc); skipped when
    /// the kernel has no such path.
    SelfRo {
        path: PathBuf,
    },
    /// Hide a path of the new root under an empty file or directory (parts of /proc);
    /// skipped when the kernel has no such path.
    Mask {
        path: PathBuf,
    },
}

/// Parts of /proc through which uid 0 (the caller's uid when root started the cell,
/// since ids are mapped 1:1) could change the host: the kernel checks many of these by
/// file mode only. Made read-only, as container runtimes do.
const PROC_READ_ONLY: &[&str] = &["/proc/sys", "/proc/irq", "/proc/bus", "/proc/fs"];
/// Kernel state a cell has no business reading or triggering.
const PROC_MASKED: &[&str] = &[
    "/proc/sysrq-trigger",
    "/proc/kcore",
    "/proc/keys",
    "/proc/key-users",
    "/proc/kmsg",
    "/proc/timer_list",
    "/proc/sched_debug",
    "/proc/latency_stats",
    "/proc/acpi",
    "/proc/scsi",
    "/proc/asound",
];

const DEV_NODES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// Compute the full sequence of mount operations for a plan's paths, as for a cell
/// started by root (the cell's spec adds what the mechanisms bind before the seal:
/// `spec::mounts`).
pub fn mount_ops(paths: &[PathRule]) -> Vec<MountOp> {
    let mut ops = tree_ops(paths, 0);
    ops.extend(seal_ops());
    ops
}

/// The last steps: /dev and the root made read-only once everything is in place.
pub fn seal_ops() -> [MountOp; 2] {
    [
        MountOp::RemountRo {
            path: "/dev".into(),
        },
        MountOp::RemountRo { path: "/".into() },
    ]
}

/// The mount operations for a cell whose ids are `caller_uid`'s, up to the seal. The read-only and masked
/// parts of /proc are there because uid 0 inside is the host's root to procfs's
/// file-mode checks; for any other uid procfs refuses those writes itself, so they are
/// left out (a dozen mounts less on every start).
pub fn tree_ops(paths: &[PathRule], caller_uid: u32) -> Vec<MountOp> {
    let mut ops = Vec::new();
    ops.push(MountOp::Proc {
        path: "/proc".into(),
    });
    if caller_uid == 0 {
        for p in PROC_READ_ONLY {
            ops.push(MountOp::SelfRo { path: p.into() });
        }
        for p in PROC_MASKED {
            ops.push(MountOp::Mask { path: p.into() });
        }
    }
    ops.push(MountOp::Tmpfs {
        path: "/dev".into(),
        mode: 0o755,
        readonly: false,
    });
    for n in DEV_NODES {
        ops.push(MountOp::Dev {
            src: Path::new("/dev").join(n),
            path: Path::new("/dev").join(n),
        });
    }
    ops.push(MountOp::Devpts {
        path: "/dev/pts".into(),
    });
    ops.push(MountOp::Tmpfs {
        path: "/dev/shm".into(),
        mode: 0o1777,
        readonly: false,
    });
    for (link, target) in [
        ("/dev/ptmx", "pts/ptmx"),
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        ops.push(MountOp::Symlink {
            target: target.into(),
            path: link.into(),
        });
    }
    ops.push(MountOp::Tmpfs {
        path: "/tmp".into(),
        mode: 0o1777,
        readonly: false,
    });
    let mut binds: Vec<&PathRule> = Vec::new();
    let mut self_bound: Vec<PathBuf> = Vec::new();
    for r in paths {
        if let Some(target) = &r.symlink {
            // A symlink is only recreated where its parent is the cell's own tmpfs; inside
            // a bound directory the link is already there.
            let inside_bind = binds.iter().any(|b| r.path.starts_with(&b.path));
            if !inside_bind && matches!(r.access, Access::Read | Access::Write) {
                ops.push(MountOp::Symlink {
                    target: target.clone(),
                    path: r.path.clone(),
                });
            }
            continue;
        }
        if matches!(r.access, Access::Protect | Access::Hide) {
            // Inside a writable bind, a protected path could be moved away with its parent
            // (`mv .git .git-old`) and recreated writable. Renaming a mount point fails with
            // EBUSY, so every directory between the writable bind and the protected path
            // is made a mount point (bound onto itself, still writable).
            let parent_bind = binds
                .iter()
                .filter(|b| r.path.starts_with(&b.path) && b.path != r.path)
                .max_by_key(|b| b.path.components().count())
                .copied();
            if let Some(pb) = parent_bind.filter(|b| b.access == Access::Write) {
                let mut ancestors: Vec<&Path> = r
                    .path
                    .ancestors()
                    .skip(1)
                    .take_while(|a| *a != pb.path.as_path())
                    .collect();
                ancestors.reverse();
                for a in ancestors {
                    if !self_bound.iter().any(|p| p == a) {
                        ops.push(MountOp::Bind {
                            src: a.to_path_buf(),
                            path: a.to_path_buf(),
                            readonly: false,
                            is_dir: true,
                        });
                        self_bound.push(a.to_path_buf());
                    }
                }
            }
        }
        match r.access {
            Access::Read | Access::Protect => ops.push(MountOp::Bind {
                src: r.path.clone(),
                path: r.path.clone(),
                readonly: true,
                is_dir: r.is_dir,
            }),
            Access::Write => ops.push(MountOp::Bind {
                src: r.path.clone(),
                path: r.path.clone(),
                readonly: false,
                is_dir: r.is_dir,
            }),
            Access::Tmpfs => ops.push(MountOp::Tmpfs {
                path: r.path.clone(),
                mode: 0o755,
                readonly: false,
            }),
            Access::Hide => {
                if r.is_dir {
                    ops.push(MountOp::Tmpfs {
                        path: r.path.clone(),
                        mode: 0o555,
                        readonly: true,
                    })
                } else {
                    ops.push(MountOp::Bind {
                        src: "/dev/null".into(),
                        path: r.path.clone(),
                        readonly: true,
                        is_dir: false,
                    })
                }
            }
        }
        binds.push(r);
    }
    ops
}

/// Render the ops for `explain --mounts`.
pub fn describe(op: &MountOp) -> String {
    match op {
        MountOp::Tmpfs {
            path,
            mode,
            readonly,
        } => format!(
            "tmpfs    {} (mode {mode:o}{})",
            path.display(),
            if *readonly { ", read-only" } else { "" }
        ),
        MountOp::Bind {
            src,
            path,
            readonly,
            ..
        } => {
            let mode = if *readonly { "ro" } else { "rw" };
            if src == path {
                format!("bind-{mode}  {}", path.display())
            } else {
                format!("bind-{mode}  {} <- {}", path.display(), src.display())
            }
        }
        MountOp::Proc { path } => format!("proc     {}", path.display()),
        MountOp::Dev { path, .. } => format!("dev      {}", path.display()),
        MountOp::Devpts { path } => format!("devpts   {} (new instance)", path.display()),
        MountOp::Symlink { target, path } => {
            format!("symlink  {} -> {}", path.display(), target.display())
        }
        MountOp::RemountRo { path } => format!("remount  {} read-only", path.display()),
        MountOp::SecretsTmpfs { path, size, .. } => format!(
            "tmpfs    {} (secrets: 0500, files 0400, nosuid,nodev,noexec, noswap if allowed, {} KiB, read-only once filled)",
            path.display(),
            size / 1024
        ),
        MountOp::SelfRo { path } => format!("bind-ro  {} (if present)", path.display()),
        MountOp::Mask { path } => format!("mask     {} (if present)", path.display()),
    }
}

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
pub fn execute(ops: &[MountOp]) -> Result<(), RootfsError> {
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
    mount(
        Some("tmpfs"),
        NEWROOT,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    )
    .map_err(err("mounting the root tmpfs"))?;

    let oldroot = hold::open_dir(Path::new(OLDROOT)).map_err(ioerr("opening the host's root"))?;
    for op in ops {
        apply(op, &oldroot)?;
    }
    drop(oldroot);

    umount2(OLDROOT, MntFlags::MNT_DETACH).map_err(err("detaching the host's root"))?;
    nix::unistd::chdir(NEWROOT).map_err(err("chdir /newroot"))?;
    nix::unistd::pivot_root(".", ".").map_err(err("pivot_root into the cell's root"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(err("detaching the staging root"))?;
    nix::unistd::chdir("/").map_err(err("chdir /"))?;
    // The root tmpfs becomes read-only last (see RemountRo for "/" in ops, which is
    // applied here because it must follow the pivot).
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
    Ok(())
}

fn apply(op: &MountOp, oldroot: &OwnedFd) -> Result<(), RootfsError> {
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
            let dst = hold::open_target(&under(NEWROOT, path), true)
                .map_err(ioerr(format!("mounting a tmpfs on {}", path.display())))?;
            let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
            if *readonly {
                flags |= MsFlags::MS_RDONLY | MsFlags::MS_NOEXEC;
            }
            nix::unistd::fchdir(dst.as_raw_fd()).map_err(err("entering a mount target"))?;
            let r = mount(
                Some("tmpfs"),
                ".",
                Some("tmpfs"),
                flags,
                Some(format!("mode={mode:o}").as_str()),
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
            let held = hold::open_nofollow(oldroot.as_raw_fd(), rel, Path::new("/"))
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
            let dst = hold::open_target(&under(NEWROOT, path), *is_dir).map_err(ioerr(what()))?;
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
            if let Some(parent) = dst.parent() {
                mkdir_p(parent)?;
            }
            std::os::unix::fs::symlink(target, &dst)
                .map_err(ioerr(format!("creating symlink {}", path.display())))?;
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
                Ok(_) => {
                    mount(
                        Some(&under(OLDROOT, Path::new("/dev/null"))),
                        &dst,
                        None::<&str>,
                        MsFlags::MS_BIND,
                        None::<&str>,
                    )
                    .map_err(err(format!("masking {}", path.display())))?;
                    remount(
                        &dst,
                        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
                    )
                    .map_err(err(format!("masking {} read-only", path.display())))?;
                }
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
    if dst.exists() {
        return Ok(());
    }
    if let Some(parent) = dst.parent() {
        mkdir_p(parent)?;
    }
    let f = fs::File::create(dst).map_err(ioerr(format!("creating {}", dst.display())))?;
    let _ = f.set_permissions(fs::Permissions::from_mode(0o644));
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(p: &str, access: Access, is_dir: bool) -> PathRule {
        PathRule {
            path: p.into(),
            access,
            symlink: None,
            is_dir,
            optional: false,
        }
    }

    #[test]
    fn ops_start_with_proc_dev_tmp_and_end_with_read_only_root() {
        let ops = mount_ops(&[]);
        assert_eq!(
            ops[0],
            MountOp::Proc {
                path: "/proc".into()
            }
        );
        assert!(ops.contains(&MountOp::Tmpfs {
            path: "/tmp".into(),
            mode: 0o1777,
            readonly: false
        }));
        assert_eq!(ops.last(), Some(&MountOp::RemountRo { path: "/".into() }));
    }

    #[test]
    fn read_write_protect_hide_map_to_binds() {
        let ops = mount_ops(&[
            rule("/usr", Access::Read, true),
            rule("/w", Access::Write, true),
            rule("/w/.git/hooks", Access::Protect, true),
            rule("/etc/shadow", Access::Hide, false),
            rule("/home/u", Access::Tmpfs, true),
        ]);
        let user: Vec<_> = ops
            .iter()
            .filter(|o| match o {
                MountOp::Bind { path, .. } | MountOp::Tmpfs { path, .. } => {
                    !path.starts_with("/dev") && path != Path::new("/tmp")
                }
                _ => false,
            })
            .cloned()
            .collect();
        assert_eq!(
            user,
            vec![
                MountOp::Bind {
                    src: "/usr".into(),
                    path: "/usr".into(),
                    readonly: true,
                    is_dir: true
                },
                MountOp::Bind {
                    src: "/w".into(),
                    path: "/w".into(),
                    readonly: false,
                    is_dir: true
                },
                MountOp::Bind {
                    src: "/w/.git".into(),
                    path: "/w/.git".into(),
                    readonly: false,
                    is_dir: true
                },
                MountOp::Bind {
                    src: "/w/.git/hooks".into(),
                    path: "/w/.git/hooks".into(),
                    readonly: true,
                    is_dir: true
                },
                MountOp::Bind {
                    src: "/dev/null".into(),
                    path: "/etc/shadow".into(),
                    readonly: true,
                    is_dir: false
                },
                MountOp::Tmpfs {
                    path: "/home/u".into(),
                    mode: 0o755,
                    readonly: false
                },
            ]
        );
    }

    #[test]
    fn ancestors_of_protected_paths_become_mount_points() {
        let ops = mount_ops(&[
            rule("/w", Access::Write, true),
            rule("/w/.git/config", Access::Protect, false),
            rule("/w/.git/hooks", Access::Protect, true),
        ]);
        let git_binds = ops
            .iter()
            .filter(|o| matches!(o, MountOp::Bind { path, readonly: false, .. } if path == Path::new("/w/.git")))
            .count();
        assert_eq!(git_binds, 1, "{ops:#?}");
        let pos = |p: &str| {
            ops.iter()
                .position(|o| matches!(o, MountOp::Bind { path, .. } if path == Path::new(p)))
                .expect(p)
        };
        assert!(pos("/w") < pos("/w/.git"));
        assert!(pos("/w/.git") < pos("/w/.git/config"));
    }

    #[test]
    fn symlink_recreated_only_outside_binds() {
        let mut bin = rule("/bin", Access::Read, true);
        bin.symlink = Some("usr/bin".into());
        let mut inner = rule("/etc/resolv.conf", Access::Read, false);
        inner.symlink = Some("/run/x".into());
        let ops = mount_ops(&[rule("/etc", Access::Read, true), bin, inner]);
        assert!(ops.contains(&MountOp::Symlink {
            target: "usr/bin".into(),
            path: "/bin".into()
        }));
        assert!(!ops.iter().any(
            |o| matches!(o, MountOp::Symlink { path, .. } if path == Path::new("/etc/resolv.conf"))
        ));
    }
}
