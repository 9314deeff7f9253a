//! Landlock: what the command may open, execute, bind and connect to, and whom it may
//! signal. The rules are computed from the plan as plain data ([`Rules`], unit-tested,
//! printed by `explain`) by [`rules`], and applied by [`apply`] in the worker after
//! no_new_privs and right before seccomp.
//!
//! The handled rights are all filesystem rights of the best ABI the kernel has (up to the
//! newest the `landlock` crate knows); a path gets:
//! - `read` / `protect`: read files, list directories, execute;
//! - `write` (and the cell's private tmpfs paths): every filesystem right;
//! - device nodes (`/dev/null`, ..., `/dev/pts`): read, write, ioctl;
//! - anything else: nothing.
//!
//! TCP (ABI 4+), in `none`/`loopback` mode: bind and connect only to the declared ports.
//! Scopes (ABI 6+): no connecting to abstract unix sockets and no signals outside the
//! cell's Landlock domain.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::plan::{Access, NetMode, PathRule};

/// The newest ABI this code and the crate know.
pub const MAX_ABI: i32 = 10;
/// TCP bind/connect rules.
pub const ABI_TCP: i32 = 4;
/// Scopes: abstract unix sockets and signals.
pub const ABI_SCOPES: i32 = 6;

/// What a path rule grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// List directories only (the cell's own root).
    List,
    /// Read files, list directories, execute.
    Read,
    /// A device node or a directory of them: read, write, ioctl.
    Dev,
    /// Every filesystem right.
    Write,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Class::List => "list",
            Class::Read => "read",
            Class::Dev => "device",
            Class::Write => "write",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FsRule {
    pub path: PathBuf,
    pub class: Class,
    /// A fixed device path that may be absent on this machine (skipped then).
    pub optional: bool,
}

/// A complete Landlock ruleset as data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rules {
    /// The ABI the rights are taken from.
    pub abi: i32,
    pub fs: Vec<FsRule>,
    /// `Some(ports)`: TCP bind/connect handled, only these ports allowed. `None`: TCP is
    /// not restricted (host network, or the kernel has no TCP rules).
    pub tcp: Option<Vec<u16>>,
    /// The `tcp` ports may be bound only: connecting is refused on every port (the
    /// container tier, where the supervisor makes every TCP connect itself).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tcp_bind_only: bool,
    /// Abstract unix sockets and signals scoped to the cell.
    pub scopes: bool,
}

/// How the cell is built, which changes what exists at the fixed paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Namespaces and the cell's own root: `/`, `/tmp`, `/dev` are the cell's.
    Cell,
    /// No namespaces (best effort): the host's filesystem, `/tmp` is not granted; this
    /// private directory (TMPDIR) is.
    NoNamespaces { private_tmp: PathBuf },
}

const DEV_NODES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
    "/dev/ptmx",
    "/dev/pts",
];

/// What `rules` needs from the plan.
#[derive(Debug, Clone)]
pub struct Policy<'a> {
    pub paths: &'a [PathRule],
    pub net: NetMode,
    pub tcp_ports: &'a [u16],
    /// TCP not handled at all (`security.tcp_any_port`).
    pub tcp_any_port: bool,
    pub allow_userns: bool,
}

/// Compute the ruleset for a plan, for a kernel with Landlock ABI `abi` (>= 1).
pub fn rules(p: &Policy, mode: &Mode, abi: i32) -> Rules {
    let abi = abi.min(MAX_ABI);
    let mut fs: Vec<FsRule> = Vec::new();
    let mut add = |path: &str, class: Class, optional: bool| {
        fs.push(FsRule {
            path: PathBuf::from(path),
            class,
            optional,
        })
    };
    match mode {
        Mode::Cell => {
            // The cell's root holds only what the plan put there: listing it reveals
            // nothing. /tmp is the cell's private tmpfs.
            add("/", Class::List, false);
            add("/tmp", Class::Write, false);
        }
        Mode::NoNamespaces { .. } => {}
    }
    // Writing /proc is needed to map ids of a nested user namespace.
    add(
        "/proc",
        if p.allow_userns {
            Class::Write
        } else {
            Class::Read
        },
        false,
    );
    for d in DEV_NODES {
        add(d, Class::Dev, true);
    }
    add("/dev/shm", Class::Write, true);
    if let Mode::NoNamespaces { private_tmp } = mode {
        fs.push(FsRule {
            path: private_tmp.clone(),
            class: Class::Write,
            optional: false,
        });
    }
    for r in p.paths {
        if r.symlink.is_some() {
            // The link's target is a rule of its own.
            continue;
        }
        let class = match (r.access, mode) {
            (Access::Read | Access::Protect, _) => Class::Read,
            (Access::Write, _) => Class::Write,
            (Access::Tmpfs, Mode::Cell) => Class::Write,
            // Without a mount namespace a tmpfs path would be the host's directory.
            (Access::Tmpfs, Mode::NoNamespaces { .. }) => continue,
            // Hidden paths are empty placeholders inside a cell; without one, nothing is
            // granted for them (a parent's rule may still cover them: see explain).
            (Access::Hide, _) => continue,
        };
        fs.push(FsRule {
            path: r.path.clone(),
            class,
            optional: r.optional,
        });
    }
    let tcp =
        (p.net != NetMode::Host && !p.tcp_any_port && abi >= ABI_TCP).then(|| p.tcp_ports.to_vec());
    Rules {
        abi,
        fs,
        tcp,
        tcp_bind_only: false,
        scopes: abi >= ABI_SCOPES,
    }
}

/// Directory entries as (path, is_symlink); [`list_dir`] reads the real filesystem.
pub type Lister<'a> = &'a dyn Fn(&Path) -> Vec<(PathBuf, bool)>;

/// Without a mount namespace nothing replaces a hidden path, and Landlock cannot take
/// rights away below a granted directory. For a hidden path below a `read` directory, the
/// directory's rule is split instead: the directory and the ones leading to the hidden
/// path may only be listed, every other entry gets the read rule, the hidden path none.
/// (Symlinks get no rule of their own: the kernel checks their target.) Hidden paths below
/// a `write` directory cannot be split without losing the right to create files there;
/// they stay readable (explain says so).
pub fn split_for_hidden(r: &mut Rules, hidden: &[PathBuf], list: Lister) {
    let mut i = 0;
    while i < r.fs.len() {
        let parent = r.fs[i].clone();
        let below: Vec<PathBuf> = hidden
            .iter()
            .filter(|h| h.starts_with(&parent.path) && **h != parent.path)
            .cloned()
            .collect();
        if parent.class != Class::Read || below.is_empty() {
            i += 1;
            continue;
        }
        r.fs[i].class = Class::List;
        let mut add = Vec::new();
        split_dir(&parent.path, &below, list, &mut add);
        r.fs.splice(i + 1..i + 1, add.iter().cloned());
        i += 1 + add.len();
    }
}

fn split_dir(dir: &Path, hidden: &[PathBuf], list: Lister, out: &mut Vec<FsRule>) {
    for (e, is_link) in list(dir) {
        if hidden.contains(&e) || is_link {
            continue;
        }
        let leads: Vec<PathBuf> = hidden
            .iter()
            .filter(|h| h.starts_with(&e))
            .cloned()
            .collect();
        if leads.is_empty() {
            out.push(FsRule {
                path: e,
                class: Class::Read,
                optional: true,
            });
        } else {
            out.push(FsRule {
                path: e.clone(),
                class: Class::List,
                optional: true,
            });
            split_dir(&e, &leads, list, out);
        }
    }
}

/// One line per rule, for `explain`.
pub fn describe(r: &Rules) -> Vec<String> {
    let mut out = vec![format!("ABI {}", r.abi)];
    for f in &r.fs {
        out.push(format!("{:<7} {}", f.class.as_str(), f.path.display()));
    }
    match &r.tcp {
        Some(p) if r.tcp_bind_only => out.push(format!(
            "tcp     connect refused on every port (the supervisor makes each TCP connect); bind {}",
            if p.is_empty() {
                "refused on every port".to_string()
            } else {
                format!(
                    "only on port {}",
                    p.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", ")
                )
            }
        )),
        Some(p) if p.is_empty() => {
            out.push("tcp     bind and connect refused on every port".into())
        }
        Some(p) => out.push(format!(
            "tcp     bind and connect only on port {}",
            p.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        None => out.push("tcp     not restricted".into()),
    }
    if r.scopes {
        out.push("scope   no abstract unix sockets or signals outside the cell".into());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(path: &str, access: Access) -> PathRule {
        PathRule {
            path: path.into(),
            access,
            symlink: None,
            is_dir: true,
            optional: false,
        }
    }

    fn paths() -> Vec<PathRule> {
        vec![
            rule("/usr", Access::Read),
            PathRule {
                symlink: Some("usr/bin".into()),
                ..rule("/bin", Access::Read)
            },
            rule("/home/u", Access::Tmpfs),
            rule("/ws", Access::Write),
            rule("/ws/.git/hooks", Access::Protect),
            rule("/etc/shadow", Access::Hide),
        ]
    }

    /// The plain policy for `ps`: no TCP ports, no nested namespaces.
    fn policy(ps: &[PathRule], net: NetMode) -> Policy<'_> {
        Policy {
            paths: ps,
            net,
            tcp_ports: &[],
            tcp_any_port: false,
            allow_userns: false,
        }
    }

    fn find<'a>(r: &'a Rules, p: &str) -> Option<&'a FsRule> {
        r.fs.iter().find(|f| f.path == Path::new(p))
    }

    #[test]
    fn cell_mode_rules() {
        let ps = paths();
        let r = rules(
            &Policy {
                tcp_ports: &[8080],
                ..policy(&ps, NetMode::Loopback)
            },
            &Mode::Cell,
            7,
        );
        assert_eq!(r.abi, 7);
        assert_eq!(find(&r, "/").map(|f| f.class), Some(Class::List));
        assert_eq!(find(&r, "/tmp").map(|f| f.class), Some(Class::Write));
        assert_eq!(find(&r, "/proc").map(|f| f.class), Some(Class::Read));
        assert_eq!(find(&r, "/dev/null").map(|f| f.class), Some(Class::Dev));
        assert_eq!(find(&r, "/usr").map(|f| f.class), Some(Class::Read));
        assert_eq!(find(&r, "/ws").map(|f| f.class), Some(Class::Write));
        assert_eq!(
            find(&r, "/ws/.git/hooks").map(|f| f.class),
            Some(Class::Read)
        );
        assert_eq!(find(&r, "/home/u").map(|f| f.class), Some(Class::Write));
        assert!(find(&r, "/bin").is_none(), "symlinks get no rule");
        assert!(
            find(&r, "/etc/shadow").is_none(),
            "hidden paths get no rule"
        );
        assert_eq!(r.tcp, Some(vec![8080]));
        assert!(r.scopes);
    }

    #[test]
    fn no_namespace_mode_rules() {
        let ps = paths();
        let r = rules(
            &policy(&ps, NetMode::None),
            &Mode::NoNamespaces {
                private_tmp: "/tmp/taskcell-x".into(),
            },
            7,
        );
        assert!(find(&r, "/").is_none(), "the host's root is not listable");
        assert!(find(&r, "/tmp").is_none(), "the host's /tmp is not granted");
        assert!(
            find(&r, "/home/u").is_none(),
            "no tmpfs without a mount namespace"
        );
        assert_eq!(
            find(&r, "/tmp/taskcell-x").map(|f| f.class),
            Some(Class::Write)
        );
        assert_eq!(r.tcp, Some(vec![]));
    }

    #[test]
    fn hidden_paths_split_a_read_directory() {
        let ps = vec![rule("/etc", Access::Read), rule("/ws", Access::Write)];
        let mut r = rules(
            &policy(&ps, NetMode::None),
            &Mode::NoNamespaces {
                private_tmp: "/t".into(),
            },
            7,
        );
        let fake = |d: &Path| -> Vec<(PathBuf, bool)> {
            let names: &[(&str, bool)] = match d.to_str() {
                Some("/etc") => &[
                    ("passwd", false),
                    ("shadow", false),
                    ("ssh", false),
                    ("mtab", true),
                ],
                Some("/etc/ssh") => &[("key", false), ("ssh_config", false)],
                Some("/ws") => &[("secret", false)],
                _ => &[],
            };
            names.iter().map(|(n, l)| (d.join(n), *l)).collect()
        };
        split_for_hidden(
            &mut r,
            &[
                "/etc/shadow".into(),
                "/etc/ssh/key".into(),
                "/ws/secret".into(),
            ],
            &fake,
        );
        assert_eq!(find(&r, "/etc").map(|f| f.class), Some(Class::List));
        assert_eq!(find(&r, "/etc/passwd").map(|f| f.class), Some(Class::Read));
        assert_eq!(find(&r, "/etc/ssh").map(|f| f.class), Some(Class::List));
        assert_eq!(
            find(&r, "/etc/ssh/ssh_config").map(|f| f.class),
            Some(Class::Read)
        );
        assert!(find(&r, "/etc/shadow").is_none());
        assert!(find(&r, "/etc/ssh/key").is_none());
        assert!(
            find(&r, "/etc/mtab").is_none(),
            "symlinks: the target decides"
        );
        // A write directory is not split.
        assert_eq!(find(&r, "/ws").map(|f| f.class), Some(Class::Write));
    }

    #[test]
    fn abi_decides_tcp_and_scopes() {
        let ps = paths();
        let pol = |net| Policy {
            allow_userns: true,
            ..policy(&ps, net)
        };
        let old = rules(&pol(NetMode::Loopback), &Mode::Cell, 3);
        assert_eq!(old.tcp, None);
        assert!(!old.scopes);
        let any = rules(
            &Policy {
                tcp_any_port: true,
                ..pol(NetMode::Loopback)
            },
            &Mode::Cell,
            7,
        );
        assert_eq!(any.tcp, None);
        let host = rules(&pol(NetMode::Host), &Mode::Cell, 7);
        assert_eq!(host.tcp, None);
        assert_eq!(find(&host, "/proc").map(|f| f.class), Some(Class::Write));
        assert_eq!(rules(&pol(NetMode::None), &Mode::Cell, 99).abi, MAX_ABI);
    }

    #[test]
    fn describe_lists_everything() {
        let ps = paths();
        let r = rules(&policy(&ps, NetMode::None), &Mode::Cell, 7);
        let d = describe(&r).join("\n");
        assert!(d.contains("write   /ws"), "{d}");
        assert!(d.contains("refused on every port"), "{d}");
        assert!(d.contains("signals outside"), "{d}");
    }
}
