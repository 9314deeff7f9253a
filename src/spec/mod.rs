//! The compiler: a checked [`Plan`], what this machine offers ([`Offer`]) and the handles
//! made before the clone ([`Handles`]: memfds, relay pipes, the CA bundle, limits that
//! fell back to rlimits) → the [`Spec`] the cell executes: every mount op, Landlock rule,
//! seccomp program, fd and environment entry, in order.
//!
//! Pure: nothing here opens, mounts or probes. `run` executes the result; `explain` and
//! `run --dry-run` print the same result, compiled with [`Handles::planned`] (the only
//! difference is that the CA bundle's host file is not written yet).
//!
//! Each mechanism is asked for data (the secrets tmpfs, the binary `taskcell connect`
//! runs, the trust bundle); no mechanism adds to a spec itself.

pub mod ids;
pub mod landlock;
pub mod layers;
pub mod mounts;
pub mod seccomp;

use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

use crate::plan::net::{BINARY_IN_CELL, CA_BUNDLE_IN_CELL, RESOLV_CONF, SYSTEM_BUNDLE};
use crate::plan::secrets::{Delivery, MAX_VALUE, SECRETS_DIR};
use crate::plan::{Access, NetMode, Plan, ProcessPlan, Rlimit};
use landlock::{Class, FsRule};
use mounts::MountOp;

use layers::Kernel;

/// What the cell executes: everything it enforces, in order, as data.
#[derive(Debug, Clone)]
pub struct Spec {
    pub mounts: Vec<MountOp>,
    pub net: NetMode,
    pub process: ProcessPlan,
    pub rlimits: Vec<Rlimit>,
    /// Ports init binds on 127.0.0.1 inside the cell and passes to the supervisor
    /// (`proxy` mode: the proxy and forward listeners), in this order.
    pub listen: Vec<u16>,
    /// Also bind UDP 127.0.0.1:53 (the refusing resolver of a `proxy` cell) and pass it
    /// after the listeners.
    pub dns: bool,
    /// Secrets to deliver (each held in an inherited memfd; no value here).
    pub secrets: Vec<CellSecret>,
    /// Write ends of the stdout/stderr relay pipes, when output is masked.
    pub stdio: Option<(RawFd, RawFd)>,
    /// The command's stdin (a pipe the supervisor feeds), instead of taskcell's own.
    pub stdin: Option<RawFd>,
    /// Landlock rules the worker applies (None: Landlock off or unavailable).
    pub landlock: Option<landlock::Rules>,
    /// Compiled seccomp programs the worker installs last (None: unavailable).
    pub seccomp: Option<Vec<seccompiler::BpfProgram>>,
    /// false: no namespaces at all (the best-effort mode without user namespaces).
    pub namespaces: bool,
    /// `size=` of every writable tmpfs the cell mounts (/tmp, /dev/shm, a tmpfs home, the
    /// profile's `tmpfs` entries), in bytes; None: the kernel's default (half the RAM).
    pub tmpfs_size: Option<u64>,
    /// Interactive: init allocates a pseudo-terminal of this size in the cell's own
    /// devpts and passes its master to the supervisor; the worker makes the slave its
    /// controlling terminal and stdin/stdout/stderr.
    pub pty: Option<TermSize>,
    /// Root-started: the one host uid/gid the cell's ids (`process.uid/gid`) map to, and
    /// the indices in `mounts` of the binds made as idmapped mounts (that host id ↔ the
    /// bound path's owner: every writable bind). None: the identity map.
    pub host_ids: Option<HostIds>,
    pub idmapped: Vec<usize>,
    /// The container tier: every `connect` waits for the supervisor (the seccomp main
    /// program is installed with a listener, which the worker passes out), which connects
    /// TCP sockets itself to 127.0.0.1 on these ports, or refuses.
    pub connect: Option<ConnectRules>,
}

/// Where the supervisor connects a container-tier cell's TCP sockets: 127.0.0.1 (asked
/// as 127.0.0.1, ::1 or ::ffff:127.0.0.1) on one of `ports` (the proxy's own listeners,
/// or a `loopback` cell's declared ports), or any port with `any_port`. A port of `map`
/// (the full tier's fixed listener ports: 3128, 1080, forwards) is connected to the
/// supervisor's listener that stands for it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConnectRules {
    pub ports: Vec<u16>,
    pub any_port: bool,
    pub map: Vec<(u16, u16)>,
}

/// The host uid and gid a root-started cell runs as (allocated by the supervisor from
/// the offer's `ids::IdRange`, one per running cell).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct HostIds {
    pub uid: u32,
    pub gid: u32,
}

/// A terminal's size in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TermSize {
    pub rows: u16,
    pub cols: u16,
}

/// What this machine offers the compiler (probed once, before it runs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// Landlock ABI and seccomp.
    pub kernel: Kernel,
    /// The running taskcell binary, bound read-only at [`BINARY_IN_CELL`] in `proxy` mode
    /// (None: not a `proxy` cell, or the binary cannot be named).
    pub exe: Option<PathBuf>,
    /// The host has a system CA bundle at [`SYSTEM_BUNDLE`], over which the cell's trust
    /// bundle is bound when credentials are injected.
    pub system_bundle: bool,
    /// `proxy` mode and the host's /etc/resolv.conf is a regular file: the cell's own
    /// (naming its loopback resolver) is bound over it. A symlink (systemd-resolved's
    /// stub) dangles in the cell, and resolvers then ask 127.0.0.1 anyway.
    pub resolv_conf: bool,
    /// Seccomp user notification (and ADDFD): a cell without namespaces gets the
    /// container tier's network (supervisor-made connects).
    pub user_notif: bool,
    /// Root in the initial user namespace: the range a cell's unprivileged host id comes
    /// from (`spec::ids`). None: the identity map (a plain user, or root in a nested user
    /// namespace, which cannot map another id).
    pub host_ids: Option<ids::HostIdRange>,
}

impl Offer {
    /// What to ask the machine for `plan` (`cell::confine::offer`): the running binary
    /// (a `proxy` cell), a system CA bundle (injected credentials).
    pub fn wanted(plan: &Plan) -> (bool, bool) {
        let proxy = plan.net.proxy.as_ref();
        (proxy.is_some(), proxy.is_some_and(|p| p.intercepts_any()))
    }
}

/// Handles made before the clone, which the cell inherits or binds.
#[derive(Debug, Clone, Default)]
pub struct Handles {
    /// Secrets in their sealed memfds.
    pub secrets: Vec<CellSecret>,
    /// Write ends of the stdout/stderr relay pipes, when output is masked.
    pub stdio: Option<(RawFd, RawFd)>,
    /// Read end of the stdin pipe, when taskcell's stdin is a terminal and the cell has
    /// no pty (the cell never holds the user's terminal).
    pub stdin: Option<RawFd>,
    /// The cell's trust bundle on the host (system roots + the cell's CA), when
    /// credentials are injected.
    pub ca_bundle: Option<PathBuf>,
    /// The cell's resolv.conf on the host (`proxy` mode): `nameserver 127.0.0.1`, where
    /// init binds the refusing resolver.
    pub resolv_conf: Option<PathBuf>,
    /// The size of the cell's terminal (a `pty` plan).
    pub pty: Option<TermSize>,
    /// Resource limits enforced as rlimits ([`crate::plan::limits::Enforcement`]); the
    /// profile's raw `[limits.rlimits]` are set after them, so they win.
    pub limit_rlimits: Vec<Rlimit>,
    /// The host ids allocated for a root-started cell (see [`Spec::host_ids`]).
    pub host_ids: Option<HostIds>,
    /// The container tier's `proxy` cell: the ports of the listeners the supervisor bound
    /// on 127.0.0.1 (in `listen_ports()` order), instead of the cell binding them in its
    /// own network namespace.
    pub proxy_ports: Option<Vec<u16>>,
}

impl Handles {
    /// What `explain` shows in place of the handles `run` makes: no fds, the CA bundle by
    /// description, the limits as this machine would enforce them.
    pub fn planned(plan: &Plan, limit_rlimits: Vec<Rlimit>) -> Handles {
        let inject = plan.net.proxy.as_ref().is_some_and(|p| p.intercepts_any());
        Handles {
            ca_bundle: inject.then(|| PathBuf::from("(the cell's CA bundle, written at start)")),
            resolv_conf: plan
                .net
                .proxy
                .as_ref()
                .map(|_| PathBuf::from("(the cell's resolv.conf: nameserver 127.0.0.1)")),
            pty: plan.process.pty.then_some(TermSize { rows: 24, cols: 80 }),
            limit_rlimits,
            ..Handles::default()
        }
    }
}

/// How one secret reaches the command, with the memfd (inherited at clone) that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellSecret {
    pub name: String,
    /// The memfd, open in the supervisor before the clone (close-on-exec).
    pub memfd: RawFd,
    pub how: How,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum How {
    File { path: PathBuf },
    Fd { target: RawFd },
    Env { var: String },
}

impl How {
    /// None for a watch-only secret (not delivered).
    pub fn of(d: &Delivery) -> Option<How> {
        match d {
            Delivery::File { path, .. } => Some(How::File { path: path.clone() }),
            Delivery::Fd { fd, .. } => Some(How::Fd { target: *fd }),
            Delivery::Env { var } => Some(How::Env { var: var.clone() }),
            Delivery::None => None,
        }
    }
}

/// Compile the cell's spec (with namespaces).
pub fn compile(plan: &Plan, offer: &Offer, h: &Handles) -> Spec {
    let resolv = h.resolv_conf.as_deref().filter(|_| offer.resolv_conf);
    // Host ids only where the machine offers them (root in the initial user namespace).
    let host_ids = h.host_ids.filter(|_| offer.host_ids.is_some());
    let root = match (plan.process.uid, host_ids) {
        (0, None) => mounts::Root::Host,
        (0, Some(_)) => mounts::Root::Cell,
        _ => mounts::Root::None,
    };
    let mounts = mounts(plan, offer, root, h.ca_bundle.as_deref(), resolv);
    // Landlock must let the command read what the mechanisms bound.
    let mut extra = Vec::new();
    if secrets_tmpfs(plan).is_some() {
        extra.push(read_rule(SECRETS_DIR, false));
    }
    if plan.net.proxy.is_some() {
        extra.push(read_rule(BINARY_IN_CELL, true));
    }
    if h.ca_bundle.is_some() {
        extra.push(read_rule(CA_BUNDLE_IN_CELL, true));
        extra.push(read_rule(SYSTEM_BUNDLE, true));
    }
    Spec {
        listen: plan
            .net
            .proxy
            .as_ref()
            .map(|p| p.listen_ports())
            .unwrap_or_default(),
        net: plan.net.mode,
        dns: plan.net.proxy.is_some(),
        process: plan.process.clone(),
        rlimits: [h.limit_rlimits.clone(), plan.limits.rlimits.clone()].concat(),
        landlock: landlock_rules(plan, &offer.kernel, &landlock::Mode::Cell)
            .map(|r| with_rules(r, extra)),
        seccomp: seccomp_programs(plan, &offer.kernel),
        namespaces: true,
        // tmpfs pages are memory: without a cgroup nothing else would bound them, so each
        // writable tmpfs is at most the cell's memory limit.
        tmpfs_size: plan.limits.resources.memory,
        secrets: h.secrets.clone(),
        // Interactive: the command's own terminal; output from it is masked like pipes.
        stdio: if h.pty.is_some() { None } else { h.stdio },
        stdin: if h.pty.is_some() { None } else { h.stdin },
        pty: h.pty,
        idmapped: match host_ids {
            Some(_) => idmapped_binds(&mounts),
            None => Vec::new(),
        },
        host_ids,
        mounts,
        connect: None,
    }
}

/// The binds a root-started cell gets as idmapped mounts: every writable one (the
/// workspace, `write` paths and the parents bound for them), so what the cell creates
/// gets the path's owner and what it reads keeps its owner, and the read-only binds
/// inside them (protected git files, a linked worktree's `.git`), so their owners look
/// the same as their neighbours' (git refuses a repository whose files seem foreign).
/// Other read-only binds keep the host's ids, so root-only files stay closed to the
/// cell's unprivileged host id.
pub fn idmapped_binds(mounts: &[MountOp]) -> Vec<usize> {
    let writable: Vec<&std::path::Path> = mounts
        .iter()
        .filter_map(|m| match m {
            MountOp::Bind {
                path,
                readonly: false,
                ..
            } => Some(path.as_path()),
            _ => None,
        })
        .collect();
    mounts
        .iter()
        .enumerate()
        .filter(|(_, m)| match m {
            MountOp::Bind {
                readonly: false, ..
            } => true,
            MountOp::Bind {
                path,
                readonly: true,
                ..
            } => writable.iter().any(|w| path.starts_with(w)),
            _ => false,
        })
        .map(|(i, _)| i)
        .collect()
}

/// The cell's mount sequence: the plan's paths, then what the mechanisms need bound (the
/// secrets tmpfs, the `taskcell` binary, the trust bundle), then the root and /dev made
/// read-only. `root`: who the cell's uid 0 is (see [`mounts::tree_ops`]).
pub fn mounts(
    plan: &Plan,
    offer: &Offer,
    root: mounts::Root,
    ca_bundle: Option<&Path>,
    resolv_conf: Option<&Path>,
) -> Vec<MountOp> {
    let mut ops = mounts::tree_ops(&plan.paths, root);
    ops.extend(secrets_tmpfs(plan));
    if let Some(exe) = &offer.exe {
        ops.push(ro_file(exe, BINARY_IN_CELL));
    }
    if let Some(bundle) = ca_bundle {
        ops.push(ro_file(bundle, CA_BUNDLE_IN_CELL));
        // Over the system bundle only where there is one to replace.
        if offer.system_bundle {
            ops.push(ro_file(bundle, SYSTEM_BUNDLE));
        }
    }
    if let Some(r) = resolv_conf {
        ops.push(ro_file(r, RESOLV_CONF));
    }
    ops.extend(mounts::seal_ops());
    ops
}

fn ro_file(src: &Path, at: &str) -> MountOp {
    MountOp::Bind {
        src: src.to_path_buf(),
        path: PathBuf::from(at),
        readonly: true,
        is_dir: false,
    }
}

fn read_rule(path: &str, optional: bool) -> FsRule {
    FsRule {
        path: PathBuf::from(path),
        class: Class::Read,
        optional,
    }
}

fn with_rules(mut r: landlock::Rules, extra: Vec<FsRule>) -> landlock::Rules {
    r.fs.extend(extra);
    r
}

/// The private tmpfs for file-delivered secrets, if any is declared: sized for every
/// value at its largest, owned by the command's ids while init fills it.
pub fn secrets_tmpfs(plan: &Plan) -> Option<MountOp> {
    let n = plan
        .secrets
        .iter()
        .filter(|s| matches!(s.delivery, Delivery::File { .. }))
        .count();
    (n > 0).then(|| MountOp::SecretsTmpfs {
        path: SECRETS_DIR.into(),
        size: (n * MAX_VALUE + 64 * 1024) as u64,
        uid: plan.process.uid,
        gid: plan.process.gid,
    })
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

/// The plan's Landlock rules for kernel `k` (None: off, or the kernel has none; a strict
/// plan never gets here with Landlock missing).
pub fn landlock_rules(plan: &Plan, k: &Kernel, mode: &landlock::Mode) -> Option<landlock::Rules> {
    match (&k.landlock, plan.security.landlock) {
        (Ok(abi), true) => Some(landlock::rules(&landlock_policy(plan), mode, *abi)),
        _ => None,
    }
}

/// The plan's seccomp filter as rules (what `explain` prints and [`compile`] compiles).
pub fn seccomp_filter(plan: &Plan) -> seccomp::Filter {
    seccomp_filter_for(plan, false)
}

/// The filter, for the container tier (`container`) or a cell with namespaces.
pub fn seccomp_filter_for(plan: &Plan, container: bool) -> seccomp::Filter {
    seccomp::filter(&seccomp::Policy {
        net: Some(plan.net.mode),
        deny: &plan.security.seccomp_deny,
        allow: &plan.security.seccomp_allow,
        allow_userns: plan.security.allow_userns,
        container,
    })
}

/// The filter compiled to BPF (None: the kernel has no seccomp filters). A filter that
/// does not compile becomes an empty program, which the worker refuses to install: fail
/// closed.
fn seccomp_programs(plan: &Plan, k: &Kernel) -> Option<Vec<seccompiler::BpfProgram>> {
    seccomp_programs_for(plan, k, false)
}

fn seccomp_programs_for(
    plan: &Plan,
    k: &Kernel,
    container: bool,
) -> Option<Vec<seccompiler::BpfProgram>> {
    k.seccomp.as_ref().ok()?;
    Some(
        seccomp::compile(&seccomp_filter_for(plan, container)).unwrap_or_else(|e| {
            tracing::error!("{e}");
            vec![Vec::new()]
        }),
    )
}

/// The spec for running without namespaces (best effort, no user namespaces): no mounts,
/// `TMPDIR` the private directory `private_tmp`, `HOME` the private `new_home` when the
/// plan's home is a tmpfs, Landlock rules for the host's filesystem with hidden paths
/// carved out of their parents' rules (`list` reads a directory).
pub fn without_namespaces(
    plan: &Plan,
    offer: &Offer,
    h: &Handles,
    private_tmp: &Path,
    new_home: Option<&Path>,
    list: landlock::Lister,
) -> Spec {
    let mut spec = compile(plan, offer, h);
    spec.namespaces = false;
    spec.dns = false;
    spec.mounts.clear();
    spec.host_ids = None;
    spec.idmapped.clear();
    if let Some(new_home) = new_home {
        let home_str = plan.home.display().to_string();
        for (k, v) in spec.process.env.iter_mut() {
            if k == "HOME" && *v == home_str {
                *v = new_home.display().to_string();
            }
        }
    }
    spec.process.env.retain(|(k, _)| k != "TMPDIR");
    spec.process
        .env
        .push(("TMPDIR".into(), private_tmp.display().to_string()));
    spec.process.env.sort();
    let mode = landlock::Mode::NoNamespaces {
        private_tmp: private_tmp.to_path_buf(),
    };
    spec.landlock = landlock_rules(plan, &offer.kernel, &mode).map(|mut rules| {
        let hidden: Vec<PathBuf> = plan
            .paths
            .iter()
            .filter(|r| r.access == Access::Hide)
            .map(|r| r.path.clone())
            .collect();
        landlock::split_for_hidden(&mut rules, &hidden, list);
        rules
    });
    container_network(plan, offer, h, &mut spec);
    spec
}

/// The container tier's network, without a network namespace (when the kernel has seccomp
/// user notification and the plan is not `host`): no UDP/raw/netlink sockets, Landlock
/// refuses every TCP connect (binds only on the declared ports), and the supervisor
/// connects TCP sockets itself to the allowed loopback ports: a `proxy` cell's are the
/// listeners the supervisor bound (`Handles::proxy_ports`), which the cell's proxy
/// variables name instead of the full tier's fixed ports.
fn container_network(plan: &Plan, offer: &Offer, h: &Handles, spec: &mut Spec) {
    if !offer.user_notif || plan.net.mode == NetMode::Host || offer.kernel.seccomp.is_err() {
        return;
    }
    let listen = plan
        .net
        .proxy
        .as_ref()
        .map(|p| p.listen_ports())
        .unwrap_or_default();
    let declared: Vec<u16> = plan
        .security
        .tcp_ports
        .iter()
        .copied()
        .filter(|p| !listen.contains(p))
        .collect();
    let connect = match (&plan.net.proxy, &h.proxy_ports) {
        (Some(_), Some(ports)) => {
            // The proxy variables name the supervisor's listeners.
            for (_, v) in spec.process.env.iter_mut() {
                for (from, to) in listen.iter().zip(ports) {
                    *v = v.replace(&format!("127.0.0.1:{from}"), &format!("127.0.0.1:{to}"));
                }
            }
            spec.listen.clear();
            ConnectRules {
                ports: ports.clone(),
                any_port: false,
                map: listen.iter().copied().zip(ports.iter().copied()).collect(),
            }
        }
        // A proxy cell whose listeners were not bound by the supervisor: init refuses.
        (Some(_), None) => return,
        (None, _) => ConnectRules {
            ports: if plan.net.mode == NetMode::Loopback {
                declared.iter().copied().filter(|p| *p != 0).collect()
            } else {
                Vec::new()
            },
            any_port: plan.net.mode == NetMode::Loopback && plan.security.tcp_any_port,
            map: Vec::new(),
        },
    };
    spec.seccomp = seccomp_programs_for(plan, &offer.kernel, true);
    if let Some(rules) = spec
        .landlock
        .as_mut()
        .filter(|r| r.abi >= landlock::ABI_TCP)
    {
        rules.tcp = Some(declared);
        rules.tcp_bind_only = true;
    }
    spec.connect = Some(connect);
}

/// The links a private home (without a mount namespace) gets: for each path the plan
/// grants below the real home, (link below `new_home`, target).
pub fn private_home_links(plan: &Plan, new_home: &Path) -> Vec<(PathBuf, PathBuf)> {
    plan.paths
        .iter()
        .filter(|r| matches!(r.access, Access::Read | Access::Write | Access::Protect))
        .filter_map(|r| {
            let rel = r.path.strip_prefix(&plan.home).ok()?;
            (!rel.as_os_str().is_empty()).then(|| (new_home.join(rel), r.path.clone()))
        })
        .collect()
}

/// The plan's home is a private tmpfs (so without namespaces it becomes a directory in
/// the private TMPDIR).
pub fn home_is_private(plan: &Plan) -> bool {
    plan.paths
        .iter()
        .any(|r| r.access == Access::Tmpfs && r.path == plan.home)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::secrets::OnLeak;
    use crate::plan::secrets::{Provider, SecretPlan, DEFAULT_TIMEOUT};
    use crate::plan::{resolve, Context, NetMode, Overrides};
    use crate::profile::Profile;

    fn plan(net: NetMode) -> Plan {
        let mut p = Profile::default();
        p.network.mode = net;
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

    fn secret(name: &str, delivery: Delivery) -> SecretPlan {
        SecretPlan {
            name: name.into(),
            provider: Provider::Generate { bytes: 16 },
            delivery,
            revoke: None,
            revoke_needs_value: true,
            ttl: None,
            timeout: DEFAULT_TIMEOUT,
            mask: true,
            on_leak: OnLeak::Warn,
            inject: None,
        }
    }

    fn offer(exe: bool, system_bundle: bool) -> Offer {
        Offer {
            kernel: Kernel {
                landlock: Ok(6),
                seccomp: Ok(()),
            },
            exe: exe.then(|| PathBuf::from("/opt/bin/taskcell")),
            system_bundle,
            resolv_conf: false,
            user_notif: true,
            host_ids: None,
        }
    }

    #[test]
    fn secrets_tmpfs_only_with_file_delivery() {
        let mut p = plan(NetMode::None);
        p.secrets = vec![secret(
            "A",
            Delivery::Fd {
                fd: 3,
                var: "A_FD".into(),
            },
        )];
        assert_eq!(secrets_tmpfs(&p), None);
        let spec = compile(&p, &offer(false, false), &Handles::default());
        assert!(!spec
            .mounts
            .iter()
            .any(|o| matches!(o, MountOp::SecretsTmpfs { .. })));
        let rules = spec.landlock.expect("landlock");
        assert!(!rules.fs.iter().any(|r| r.path == Path::new(SECRETS_DIR)));
    }

    /// What the mechanisms need bound comes after the plan's paths and before the seal,
    /// in this order, each with a Landlock rule to read it.
    #[test]
    fn mechanism_mounts_before_the_seal_with_their_rules() {
        let mut p = plan(NetMode::None);
        p.secrets = vec![secret(
            "B",
            Delivery::File {
                path: "/run/secrets/B".into(),
                var: "B_FILE".into(),
            },
        )];
        let bundle = PathBuf::from("/tmp/bundle.pem");
        let h = Handles {
            ca_bundle: Some(bundle.clone()),
            ..Handles::default()
        };
        // Without a proxy there is no binary to bind even when it could be named.
        let off = offer(false, true);
        let spec = compile(&p, &off, &h);
        let n = spec.mounts.len();
        assert_eq!(
            spec.mounts[n - 5..],
            [
                MountOp::SecretsTmpfs {
                    path: "/run/secrets".into(),
                    size: (MAX_VALUE + 64 * 1024) as u64,
                    uid: 1000,
                    gid: 1000
                },
                ro_file(&bundle, CA_BUNDLE_IN_CELL),
                ro_file(&bundle, SYSTEM_BUNDLE),
                mounts::seal_ops()[0].clone(),
                mounts::seal_ops()[1].clone(),
            ]
        );
        assert_eq!(
            spec.mounts[..n - 5],
            mounts::tree_ops(&p.paths, mounts::Root::None)[..]
        );
        let fs = spec.landlock.expect("landlock").fs;
        for path in [SECRETS_DIR, CA_BUNDLE_IN_CELL, SYSTEM_BUNDLE] {
            assert!(
                fs.iter()
                    .any(|r| r.path == Path::new(path) && r.class == Class::Read),
                "{path}: {fs:?}"
            );
        }
        // No system bundle here: only the cell's own path.
        let spec = compile(&p, &offer(true, false), &h);
        assert!(!spec
            .mounts
            .iter()
            .any(|o| matches!(o, MountOp::Bind { path, .. } if path == Path::new(SYSTEM_BUNDLE))));
        assert!(spec
            .mounts
            .iter()
            .any(|o| matches!(o, MountOp::Bind { path, .. } if path == Path::new(BINARY_IN_CELL))));
    }

    #[test]
    fn pty_replaces_the_relay_pipes_and_limits_come_first() {
        let mut p = plan(NetMode::None);
        p.limits.rlimits = vec![Rlimit {
            name: "nofile",
            soft: 64,
            hard: 64,
        }];
        let mut h = Handles {
            stdio: Some((7, 8)),
            limit_rlimits: vec![Rlimit {
                name: "nofile",
                soft: 1024,
                hard: 1024,
            }],
            ..Handles::default()
        };
        let spec = compile(&p, &offer(false, false), &h);
        assert_eq!(spec.stdio, Some((7, 8)));
        assert_eq!(
            spec.rlimits.iter().map(|r| r.soft).collect::<Vec<_>>(),
            [1024, 64]
        );
        h.pty = Some(TermSize { rows: 24, cols: 80 });
        assert_eq!(compile(&p, &offer(false, false), &h).stdio, None);
    }

    #[test]
    fn without_namespaces_no_mounts_private_tmp_and_no_mechanism_rules() {
        let p = plan(NetMode::None);
        let spec = without_namespaces(
            &p,
            &offer(false, false),
            &Handles::default(),
            Path::new("/tmp/private"),
            None,
            &|_| Vec::new(),
        );
        assert!(!spec.namespaces && spec.mounts.is_empty());
        assert!(spec
            .process
            .env
            .contains(&("TMPDIR".into(), "/tmp/private".into())));
        let fs = spec.landlock.expect("landlock").fs;
        assert!(fs.iter().any(|r| r.path == Path::new("/tmp/private")));
        // The host's root is not the cell's own: no rule to list it.
        assert!(!fs.iter().any(|r| r.path == Path::new("/")));
    }
}
