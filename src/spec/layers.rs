//! Which layers a plan needs, which ones this kernel has, and what is lost without them.
//!
//! `run` is strict by default: when [`missing`] is not empty it refuses (exit 125) and
//! names each missing feature with its fix. With `--best-effort` (or `strict = false`) it
//! runs with what exists, prints one line per missing layer and records each in the audit
//! log. The one layer only known when the cell is cloned, user namespaces, is reported the
//! same way by the supervisor ([`no_userns`]).

use serde::Serialize;

use super::landlock::{ABI_SCOPES, ABI_TCP};
use crate::plan::{NetMode, Plan};

/// What the kernel offers (probed once per run by `cell::confine::kernel`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Kernel {
    /// Landlock ABI, or why there is none.
    pub landlock: Result<i32, String>,
    /// Seccomp filters returning errno, or why not.
    pub seccomp: Result<(), String>,
}

/// A layer the plan needs that cannot be enforced here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Missing {
    /// Short name: "landlock", "landlock-tcp", "landlock-scopes", "seccomp", "userns".
    pub layer: &'static str,
    /// What is missing and why.
    pub detail: String,
    /// How to get it.
    pub fix: String,
    /// What the cell does not promise without it.
    pub lost: String,
}

impl Missing {
    /// The line `run` prints when it refuses.
    pub fn refusal(&self) -> String {
        format!(
            "cannot enforce {}: {} (fix: {}; or run with --best-effort to accept: {})",
            self.layer, self.detail, self.fix, self.lost
        )
    }
    /// The line `run --best-effort` prints.
    pub fn degraded(&self) -> String {
        format!(
            "best effort: {} is not enforced: {}; lost: {}",
            self.layer, self.detail, self.lost
        )
    }
}

const NEWER_KERNEL: &str = "a newer kernel";

/// The layers `plan` needs that `k` lacks (user namespaces are checked at clone time).
pub fn missing(plan: &Plan, k: &Kernel) -> Vec<Missing> {
    let mut out = Vec::new();
    if let Err(why) = &k.seccomp {
        out.push(Missing {
            layer: "seccomp",
            detail: why.clone(),
            fix: "a kernel with CONFIG_SECCOMP_FILTER".into(),
            lost: "dangerous syscalls (mount, ptrace, bpf, io_uring, keyctl, TIOCSTI, ...) stay callable".into(),
        });
    }
    if !plan.security.landlock {
        return out;
    }
    match &k.landlock {
        Err(why) => out.push(Missing {
            layer: "landlock",
            detail: why.clone(),
            fix: "Linux 5.13+ with Landlock enabled (lsm=...,landlock)".into(),
            lost: "a second check of every file open and TCP port beneath the mount namespace"
                .into(),
        }),
        Ok(abi) => {
            let restricted_net = plan.net.mode != NetMode::Host && !plan.security.tcp_any_port;
            if restricted_net && *abi < ABI_TCP {
                out.push(Missing {
                    layer: "landlock-tcp",
                    detail: format!(
                        "Landlock ABI {abi} has no TCP rules (ABI {ABI_TCP}, Linux 6.7)"
                    ),
                    fix: NEWER_KERNEL.into(),
                    lost: "TCP ports are not restricted beneath the network namespace".into(),
                });
            }
            if *abi < ABI_SCOPES {
                out.push(Missing {
                    layer: "landlock-scopes",
                    detail: format!(
                        "Landlock ABI {abi} cannot scope signals and abstract unix sockets (ABI {ABI_SCOPES}, Linux 6.12)"
                    ),
                    fix: NEWER_KERNEL.into(),
                    lost: "signals and abstract unix sockets are confined only by the namespaces".into(),
                });
            }
        }
    }
    out
}

/// What a cell loses when it runs without user namespaces (and so without any namespace).
pub const NO_USERNS_LOST: &[&str] = &[
    "process isolation: the command sees the host's processes (Landlock still blocks signals to them on ABI 6+)",
    "network isolation: the cell shares the host's (the container's) network; with seccomp user notification (the container tier) only the proxy on 127.0.0.1 (or a loopback cell's declared ports) is reachable and UDP, raw and netlink sockets are refused; without it, Landlock TCP rules limit TCP bind/connect to the declared ports on ABI 4+ and UDP is not limited",
    "private /tmp and home: the host's /tmp and tmpfs paths are not granted; TMPDIR and HOME point to fresh private directories (with links to the paths the profile grants below the real home)",
    "protect below a write directory (e.g. .git/hooks) and hide below a write directory: Landlock cannot take rights away from a subpath (hidden paths below read directories stay unreadable)",
    "hostname, IPC and cgroup namespaces; the uid is the caller's real uid",
    "the PID namespace's end: background processes are killed by the cell's init (their subreaper) when the command ends",
];

/// The user-namespace layer, missing (`err` is the clone failure, already explained).
pub fn no_userns(err: &str) -> Missing {
    Missing {
        layer: "userns",
        detail: format!("user namespaces cannot be created ({err})"),
        fix: "allow unprivileged user namespaces (see `taskcell doctor`)".into(),
        lost: format!(
            "running without namespaces, confined by Landlock, seccomp, no_new_privs and a cleared environment only; lost: {}",
            NO_USERNS_LOST.join("; ")
        ),
    }
}

/// A root-started cell that cannot run as its own host id (no free id in the range, or
/// a write path on a filesystem that cannot be idmapped): best effort keeps the identity
/// map, strict refuses.
pub fn no_host_ids(why: &str) -> Missing {
    Missing {
        layer: "host-ids",
        detail: why.to_string(),
        fix: "put the workspace and write paths on a filesystem with idmapped mounts (ext4, xfs, btrfs, tmpfs on Linux 6.3+), or run taskcell as a plain user".into(),
        lost: "the cell's processes are host uid 0: root-only files under read paths and root-only /proc files are readable".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{resolve, Context, Overrides};
    use crate::profile::Profile;

    fn plan(net: NetMode, landlock: bool) -> Plan {
        let mut p = Profile::default();
        p.network.mode = net;
        p.security.landlock = landlock;
        let ctx = Context {
            cwd: "/tmp".into(),
            home: "/nonexistent-home".into(),
            tmp: "/tmp".into(),
            uid: 1000,
            gid: 1000,
            env: Default::default(),
            terminal: false,
        };
        resolve(&p, &Overrides::default(), &ctx, &["true".into()]).expect("plan")
    }

    fn kernel(abi: Result<i32, String>) -> Kernel {
        Kernel {
            landlock: abi,
            seccomp: Ok(()),
        }
    }

    fn layers(m: &[Missing]) -> Vec<&str> {
        m.iter().map(|m| m.layer).collect::<Vec<_>>()
    }

    #[test]
    fn everything_present_on_abi_6_and_later() {
        assert!(missing(&plan(NetMode::Loopback, true), &kernel(Ok(6))).is_empty());
        assert!(missing(&plan(NetMode::None, true), &kernel(Ok(7))).is_empty());
    }

    #[test]
    fn old_abis_name_each_missing_feature() {
        let m = missing(&plan(NetMode::Loopback, true), &kernel(Ok(3)));
        assert_eq!(layers(&m), vec!["landlock-tcp", "landlock-scopes"]);
        assert!(m[0].refusal().contains("Linux 6.7"), "{}", m[0].refusal());
        assert!(m[0].refusal().contains("--best-effort"));
        // Host network: TCP rules are not needed.
        let m = missing(&plan(NetMode::Host, true), &kernel(Ok(5)));
        assert_eq!(layers(&m), vec!["landlock-scopes"]);
    }

    #[test]
    fn no_landlock_and_no_seccomp() {
        let k = Kernel {
            landlock: Err("Landlock is not built into this kernel".into()),
            seccomp: Err("seccomp is not available".into()),
        };
        let m = missing(&plan(NetMode::None, true), &k);
        assert_eq!(layers(&m), vec!["seccomp", "landlock"]);
        assert!(m[1]
            .degraded()
            .starts_with("best effort: landlock is not enforced"));
        // A profile that turned Landlock off does not need it.
        let m = missing(&plan(NetMode::None, false), &k);
        assert_eq!(layers(&m), vec!["seccomp"]);
    }

    #[test]
    fn userns_line_says_what_is_lost() {
        let m = no_userns("ENOSPC");
        assert_eq!(m.layer, "userns");
        assert!(m.degraded().contains("process isolation"));
    }
}
