//! Which layers a plan needs, which ones this kernel has, and what is lost without them.
//!
//! `run` is strict by default: when [`missing`] is not empty it refuses (exit 125) and
//! names each missing feature with its fix. With `--best-effort` (or `strict = false`) it
//! runs with what exists, prints one line per missing layer and records each in the audit
//! log. The one layer only known when the cell is cloned, user namespaces, is reported the
//! same way by the supervisor ([`no_userns`]).

use std::fmt::Write;

use serde::Serialize;

use crate::cell::landlock::{self, ABI_SCOPES, ABI_TCP};
use crate::cell::seccomp;
use crate::plan::{NetMode, Plan};

/// What the kernel offers (probed once per run; cheap: one syscall and one prctl).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Kernel {
    /// Landlock ABI, or why there is none.
    pub landlock: Result<i32, String>,
    /// Seccomp filters returning errno, or why not.
    pub seccomp: Result<(), String>,
}

impl Kernel {
    /// Probed once per process: the kernel's features do not change during a run, and
    /// `run`, the spec and `explain` all ask.
    pub fn probe() -> Kernel {
        static ONCE: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
        ONCE.get_or_init(|| Kernel {
            landlock: landlock::kernel_abi(),
            seccomp: seccomp::available(),
        })
        .clone()
    }
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
    "network isolation: the host's network is reachable (Landlock TCP rules still limit TCP bind/connect to the declared ports on ABI 4+; UDP is not limited)",
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

/// The `explain` section: the layers the cell gets.
pub fn explain(plan: &Plan) -> String {
    let k = Kernel::probe();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\nlandlock (what may be opened, bound, connected, signalled):"
    );
    if !plan.security.landlock {
        let _ = writeln!(s, "  off (security.landlock = false)");
    } else {
        match &k.landlock {
            Ok(abi) => {
                let r = landlock::rules(&landlock_policy(plan), &landlock::Mode::Cell, *abi);
                for l in landlock::describe(&r) {
                    let _ = writeln!(s, "  {l}");
                }
            }
            Err(e) => {
                let _ = writeln!(s, "  not available: {e}");
            }
        }
    }
    let _ = writeln!(s, "\nseccomp (default allow; refused syscalls):");
    for l in seccomp::describe(&seccomp::filter(&seccomp_policy(plan))) {
        let _ = writeln!(s, "  {l}");
    }
    let miss = missing(plan, &k);
    if !miss.is_empty() {
        let _ = writeln!(s, "\nmissing on this kernel:");
        for m in &miss {
            let _ = writeln!(s, "  {}: {} (fix: {})", m.layer, m.detail, m.fix);
        }
    }
    let _ = writeln!(
        s,
        "\nwithout user namespaces (only with --best-effort), these promises are lost:"
    );
    for l in NO_USERNS_LOST {
        let _ = writeln!(s, "  - {l}");
    }
    s
}

pub fn landlock_policy(plan: &Plan) -> landlock::Policy<'_> {
    landlock::Policy {
        paths: &plan.paths,
        net: plan.net.mode,
        tcp_ports: &plan.security.tcp_ports,
        tcp_any_port: plan.security.tcp_any_port,
        allow_userns: plan.security.allow_userns,
    }
}

pub fn seccomp_policy(plan: &Plan) -> seccomp::Policy<'_> {
    seccomp::Policy {
        net: Some(plan.net.mode),
        deny: &plan.security.seccomp_deny,
        allow: &plan.security.seccomp_allow,
        allow_userns: plan.security.allow_userns,
    }
}

/// Fill in the Landlock rules and seccomp programs of a cell's spec from the plan and the
/// kernel: a layer the kernel lacks is left out (`missing` reported it already; a strict
/// plan never gets here with something missing).
pub fn add_to_spec(spec: &mut crate::cell::Spec, plan: &Plan, k: &Kernel, mode: &landlock::Mode) {
    spec.landlock = match (&k.landlock, plan.security.landlock) {
        (Ok(abi), true) => Some(landlock::rules(&landlock_policy(plan), mode, *abi)),
        _ => None,
    };
    spec.seccomp = match &k.seccomp {
        // A filter that does not compile is installed as an empty program, which the
        // worker refuses to install: fail closed.
        Ok(()) => Some(
            seccomp::compile(&seccomp::filter(&seccomp_policy(plan))).unwrap_or_else(|e| {
                tracing::error!("{e}");
                vec![Vec::new()]
            }),
        ),
        Err(_) => None,
    };
}

/// The spec for running without namespaces: no mounts, a private TMPDIR, Landlock rules
/// for the host's filesystem.
pub fn no_namespace_spec(
    plan: &Plan,
    mut spec: crate::cell::Spec,
) -> Result<(crate::cell::Spec, tempfile::TempDir), std::io::Error> {
    let base = std::env::temp_dir();
    let tmp = tempfile::Builder::new()
        .prefix("taskcell-tmp-")
        .tempdir_in(&base)
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "creating the private TMPDIR in {}: {e} (set TMPDIR to a writable directory)",
                    base.display()
                ),
            )
        })?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o700))?;
    }
    spec.namespaces = false;
    spec.mounts.clear();
    private_home(plan, &mut spec, tmp.path())?;
    spec.process.env.retain(|(k, _)| k != "TMPDIR");
    spec.process
        .env
        .push(("TMPDIR".into(), tmp.path().display().to_string()));
    spec.process.env.sort();
    let k = Kernel::probe();
    let mode = landlock::Mode::NoNamespaces {
        private_tmp: tmp.path().to_path_buf(),
    };
    add_to_spec(&mut spec, plan, &k, &mode);
    if let Some(rules) = &mut spec.landlock {
        let hidden: Vec<std::path::PathBuf> = plan
            .paths
            .iter()
            .filter(|r| r.access == crate::plan::Access::Hide)
            .map(|r| r.path.clone())
            .collect();
        landlock::split_for_hidden(rules, &hidden, &landlock::list_dir);
    }
    Ok((spec, tmp))
}

/// Without a mount namespace the plan's private (tmpfs) home cannot be mounted: make it a
/// directory inside the private TMPDIR instead, point HOME at it, and link the paths the
/// plan grants below the real home (e.g. `~/.cargo`) into it, so tools find them as in a
/// cell.
fn private_home(
    plan: &Plan,
    spec: &mut crate::cell::Spec,
    tmp: &std::path::Path,
) -> Result<(), std::io::Error> {
    use crate::plan::Access;
    let home = &plan.home;
    if !plan
        .paths
        .iter()
        .any(|r| r.access == Access::Tmpfs && &r.path == home)
    {
        return Ok(());
    }
    let new_home = tmp.join("home");
    std::fs::create_dir(&new_home)?;
    for r in &plan.paths {
        if !matches!(r.access, Access::Read | Access::Write | Access::Protect) {
            continue;
        }
        let Ok(rel) = r.path.strip_prefix(home) else {
            continue;
        };
        if rel.as_os_str().is_empty() {
            continue;
        }
        let link = new_home.join(rel);
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if !link.exists() {
            std::os::unix::fs::symlink(&r.path, &link)?;
        }
    }
    let home_str = home.display().to_string();
    for (k, v) in spec.process.env.iter_mut() {
        if k == "HOME" && *v == home_str {
            *v = new_home.display().to_string();
        }
    }
    Ok(())
}

/// The cell's Landlock rules on this kernel (for `explain --json`); None when off or absent.
pub fn landlock_rules(plan: &Plan) -> Option<landlock::Rules> {
    let abi = landlock::kernel_abi().ok()?;
    plan.security
        .landlock
        .then(|| landlock::rules(&landlock_policy(plan), &landlock::Mode::Cell, abi))
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
