//! The cell's root filesystem as data: the plan's paths → a list of [`MountOp`]s (pure,
//! unit-tested, printed by `explain`), executed by `cell::rootfs`.

use std::path::{Path, PathBuf};

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
    /// init fills it (`cell::secrets::populate` then makes it 0500 and read-only),
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

/// Parts of /proc through which the host's root (uid 0 inside when root started the cell
/// without a host id, the ids mapped 1:1) could change the host: the kernel checks many
/// of these by file mode only. Made read-only, as container runtimes do.
const PROC_READ_ONLY: &[&str] = &["/proc/irq", "/proc/bus", "/proc/fs"];
/// The sysctls: read-only wherever uid 0 inside is the cell's root, which owns the
/// sysctls of the cell's own namespaces (IPC, network, PID), as in a container.
const PROC_SYS: &str = "/proc/sys";
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

/// The last steps: /dev and the root made read-only once everything is in place.
pub fn seal_ops() -> [MountOp; 2] {
    [
        MountOp::RemountRo {
            path: "/dev".into(),
        },
        MountOp::RemountRo { path: "/".into() },
    ]
}

/// Who the cell's uid 0 is, for the parts of /proc it must not change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Root {
    /// The cell runs as another uid (a plain user's cell: the caller's own ids).
    None,
    /// The cell's root, an unprivileged host id on the host (root-started, `spec::ids`).
    Cell,
    /// The host's root (root-started with the identity map: no host id).
    Host,
}

/// The mount operations for a cell, up to the seal. Where the cell has a uid 0, /proc/sys
/// is read-only: it owns the sysctls of the cell's own namespaces. The other read-only
/// and masked parts of /proc are there only where that uid 0 is the host's root
/// ([`Root::Host`]): procfs checks many of them by file mode, and to those checks it is
/// the host's root. Any other cell's ids are an unprivileged user's on the host, whose
/// writes procfs refuses itself: a dozen mounts less to make and to tear down.
pub fn tree_ops(paths: &[PathRule], root: Root) -> Vec<MountOp> {
    let mut ops = fixed_ops(root);
    path_ops(paths, &mut ops);
    ops
}

/// What every cell gets whatever the plan says: /proc (parts of it read-only or masked,
/// see [`tree_ops`]), /dev with its nodes, /tmp.
fn fixed_ops(root: Root) -> Vec<MountOp> {
    let mut ops = Vec::new();
    ops.push(MountOp::Proc {
        path: "/proc".into(),
    });
    if root != Root::None {
        ops.push(MountOp::SelfRo {
            path: PROC_SYS.into(),
        });
    }
    if root == Root::Host {
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
    ops
}

/// The plan's paths (parents first): binds, tmpfs, hidden placeholders, symlinks
/// recreated on the cell's own tmpfs, and the self-binds that keep a protected path
/// from being moved away with its parent.
fn path_ops(paths: &[PathRule], ops: &mut Vec<MountOp>) {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole sequence for a cell whose root is the host's, without what the
    /// mechanisms bind (`spec::mounts` adds that before the seal).
    fn mount_ops(paths: &[PathRule]) -> Vec<MountOp> {
        let mut ops = tree_ops(paths, Root::Host);
        ops.extend(seal_ops());
        ops
    }

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
