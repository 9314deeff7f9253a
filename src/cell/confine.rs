//! Confinement below the namespaces, as the kernel offers it: probe Landlock and seccomp
//! once ([`kernel`]), apply the Spec's Landlock rules and seccomp programs in the worker.
//! The rules and programs themselves are data made by `spec::landlock`/`spec::seccomp`.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use seccompiler::BpfProgram;

use crate::plan::net::SYSTEM_BUNDLE;
use crate::spec::landlock::{Class, Rules};
use crate::spec::layers::Kernel;
use crate::spec::Offer;

/// What the kernel offers, probed once per process: its features do not change during a
/// run, and `run`, the spec and `explain` all ask (cheap: one syscall and one prctl).
pub fn kernel() -> Kernel {
    static ONCE: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| Kernel {
        landlock: landlock_abi(),
        seccomp: seccomp_available(),
    })
    .clone()
}

/// What the tier decision needs (`plan::tier::decide`): `userns` is the probe's answer
/// (`userns::probe` for `run`/`explain`, every namespace for `doctor`).
pub fn machine(userns: Result<(), String>) -> crate::plan::tier::Machine {
    let k = kernel();
    crate::plan::tier::Machine {
        userns,
        landlock: k.landlock,
        seccomp: k.seccomp,
        user_notif: user_notif_available(),
    }
}

/// The machine's facts `run` decides with (cgroups, user namespaces, Landlock, seccomp),
/// probed by a thread on another CPU while the main thread reads the profile and plans
/// (the probes are ~0.3 ms of files and system calls that need nothing from the plan).
pub struct Probing(Option<std::thread::JoinHandle<Probed>>);

/// What [`Probing`] found.
pub struct Probed {
    pub cgroups: crate::plan::limits::Machine,
    pub tier: crate::plan::tier::Machine,
}

fn probe_all() -> Probed {
    // The cached probes (cgroups, the kernel's layers, seccomp's user notification) fill
    // their caches here for the main thread's later calls.
    let _ = user_notif_available();
    Probed {
        cgroups: crate::cell::cgroup::machine(),
        tier: machine(crate::cell::userns::probe_for_run()),
    }
}

impl Probing {
    pub fn start() -> Probing {
        let t = super::spawn_beside(
            std::thread::Builder::new()
                .name("probe".into())
                .stack_size(256 * 1024),
            probe_all,
        )
        .ok();
        Probing(t)
    }

    /// The facts (probed here when the thread could not start or did not finish).
    pub fn finish(mut self) -> Probed {
        match self.0.take().map(|t| t.join()) {
            Some(Ok(p)) => p,
            _ => probe_all(),
        }
    }
}

impl Drop for Probing {
    /// Not finished (`run` ended before the probes were used): wait for the thread, so
    /// that no probe's child outlives taskcell.
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            let _ = t.join();
        }
    }
}

/// What this machine offers the compiler: the kernel's layers, the running binary (for a
/// `proxy` cell), whether there is a system CA bundle to bind the cell's over (`inject`).
pub fn offer(proxy: bool, inject: bool) -> Offer {
    Offer {
        kernel: kernel(),
        exe: proxy
            .then(|| std::fs::canonicalize("/proc/self/exe").ok())
            .flatten(),
        system_bundle: inject && Path::new(SYSTEM_BUNDLE).is_file(),
        resolv_conf: proxy
            && std::fs::symlink_metadata(crate::plan::net::RESOLV_CONF).is_ok_and(|m| m.is_file()),
        host_ids: host_id_range(),
        user_notif: user_notif_available().is_ok(),
    }
}

/// Root in the initial user namespace: the range root-started cells take their host id
/// from (`spec::ids::reserved` over /etc/subuid and /etc/subgid). None elsewhere: a plain
/// user, or root in a nested user namespace (`unshare -Ur`, a rootless container), which
/// can neither map another id nor idmap the host's filesystems.
pub fn host_id_range() -> Option<crate::spec::ids::HostIdRange> {
    if !nix::unistd::geteuid().is_root() || !crate::cell::userns::in_initial_userns() {
        return None;
    }
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let (subuid, subgid) = (read("/etc/subuid"), read("/etc/subgid"));
    // The user database (/etc/passwd: see crate::names) is read only when an entry names
    // its user by number.
    let numeric = [&subuid, &subgid]
        .into_iter()
        .flatten()
        .flat_map(|t| t.lines())
        .any(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()));
    let uid = numeric
        .then(|| {
            nix::unistd::User::from_name(crate::spec::ids::USER)
                .ok()
                .flatten()
        })
        .flatten()
        .map(|u| u.uid.as_raw());
    Some(crate::spec::ids::reserved(
        subuid.as_deref(),
        subgid.as_deref(),
        uid,
    ))
}

/// A directory's entries as (path, is_symlink), sorted (a `spec::landlock::Lister`).
pub fn list_dir(dir: &Path) -> Vec<(PathBuf, bool)> {
    let mut v: Vec<(PathBuf, bool)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| {
                    let link = e.file_type().map(|t| t.is_symlink()).unwrap_or(true);
                    (e.path(), link)
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The kernel's Landlock ABI version, or why there is none.
pub fn landlock_abi() -> Result<i32, String> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: the version query takes a NULL attr and size 0 and returns an integer.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if v < 0 {
        let e = std::io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::ENOSYS) => "Landlock is not implemented here (ENOSYS: a kernel without CONFIG_SECURITY_LANDLOCK, older than 5.13, or a runtime such as gVisor that does not implement it)".into(),
            Some(libc::EOPNOTSUPP) => "Landlock is built in but not enabled (add `landlock` to the lsm= kernel parameter)".into(),
            _ => format!("Landlock is not available: {e}"),
        });
    }
    Ok(v as i32)
}

fn to_abi(v: i32) -> landlock::ABI {
    use landlock::ABI;
    match v {
        i32::MIN..=0 => ABI::Unsupported,
        1 => ABI::V1,
        2 => ABI::V2,
        3 => ABI::V3,
        4 => ABI::V4,
        5 => ABI::V5,
        6 => ABI::V6,
        7 => ABI::V7,
        8 => ABI::V8,
        9 => ABI::V9,
        _ => ABI::V10,
    }
}

/// The Landlock ruleset of `r`, its rights handled, no rule added yet. Every handled
/// right must be enforced: anything less is an error (the caller decided earlier, from
/// the kernel's ABI, what to ask for).
fn create_ruleset(r: &Rules) -> Result<landlock::RulesetCreated, String> {
    use landlock::{
        Access, AccessFs, AccessNet, CompatLevel, Compatible, Ruleset, RulesetAttr, Scope,
    };
    let abi = to_abi(r.abi);
    let e = |what: &str, err: &dyn std::fmt::Display| format!("Landlock: {what}: {err}");
    let mut rs = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(abi))
        .map_err(|x| e("handling filesystem rights", &x))?;
    if r.tcp.is_some() {
        rs = rs
            .handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp)
            .map_err(|x| e("handling TCP rights", &x))?;
    }
    if r.scopes {
        rs = rs
            .scope(Scope::AbstractUnixSocket | Scope::Signal)
            .map_err(|x| e("scoping signals and abstract sockets", &x))?;
    }
    rs.create().map_err(|x| e("creating the ruleset", &x))
}

/// Add the rules of `r` to `c` (each path opened with the caller's credentials).
fn add_rules(
    mut c: landlock::RulesetCreated,
    r: &Rules,
) -> Result<landlock::RulesetCreated, String> {
    use landlock::{
        Access, AccessFs, AccessNet, BitFlags, NetPort, PathBeneath, PathFd, RulesetCreatedAttr,
    };
    let abi = to_abi(r.abi);
    let all = AccessFs::from_all(abi);
    let read = AccessFs::from_read(abi);
    let dev: BitFlags<AccessFs> = (AccessFs::ReadFile
        | AccessFs::ReadDir
        | AccessFs::WriteFile
        | AccessFs::Truncate
        | AccessFs::IoctlDev)
        & all;
    let e = |what: &str, err: &dyn std::fmt::Display| format!("Landlock: {what}: {err}");
    use std::os::fd::{AsFd, AsRawFd};
    for f in &r.fs {
        let fd = match PathFd::new(&f.path) {
            Ok(fd) => fd,
            Err(_) if f.optional && !f.path.exists() => continue,
            Err(x) => {
                return Err(format!(
                    "Landlock: cannot open {} for a rule: {x}",
                    f.path.display()
                ))
            }
        };
        let mut rights = match f.class {
            Class::List => BitFlags::from(AccessFs::ReadDir),
            Class::Read => read,
            Class::Dev => dev,
            Class::Write => all,
        };
        // The kind of what was opened (not a second lookup of the path).
        let is_dir = nix::sys::stat::fstat(fd.as_fd().as_raw_fd())
            .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
            .unwrap_or(false);
        if !is_dir {
            rights &= AccessFs::from_file(abi);
        }
        if rights.is_empty() {
            continue;
        }
        c = c
            .add_rule(PathBeneath::new(fd, rights))
            .map_err(|x| e(&format!("rule for {}", f.path.display()), &x))?;
    }
    if let Some(ports) = &r.tcp {
        let granted = if r.tcp_bind_only {
            BitFlags::from(AccessNet::BindTcp)
        } else {
            AccessNet::BindTcp | AccessNet::ConnectTcp
        };
        for p in ports {
            c = c
                .add_rule(NetPort::new(*p, granted))
                .map_err(|x| e(&format!("rule for TCP port {p}"), &x))?;
        }
    }
    Ok(c)
}

/// Restrict the calling process with `c` (no_new_privs must be set).
fn restrict(c: landlock::RulesetCreated) -> Result<(), String> {
    let st = c
        .restrict_self()
        .map_err(|x| format!("Landlock: restricting the process: {x}"))?;
    if st.ruleset != landlock::RulesetStatus::FullyEnforced {
        return Err(format!(
            "Landlock: the ruleset is only {:?} on this kernel",
            st.ruleset
        ));
    }
    Ok(())
}

/// A cell's Landlock ruleset, made by init before it starts the worker and filled by
/// init's helper thread (on the other CPU, [`super::Helper`]) while the worker starts:
/// its stdio, rlimits and capabilities. The worker waits for the rules
/// ([`Landlocking::restrict`]) and restricts itself with its own copy of the ruleset's fd
/// (made before its clone, so its fd table has one; rules added through any copy are in
/// the one ruleset). The worker shares init's memory (CLONE_VM), where the helper leaves
/// its result.
pub struct Landlocking {
    ruleset: landlock::RulesetCreated,
    added: std::sync::Arc<std::sync::OnceLock<Result<(), String>>>,
}

impl Landlocking {
    /// Create the ruleset and queue the adding of the rules on `helper`, as its last job
    /// (it drops the helper's capabilities). Call it once the cell's root is in place (the
    /// rules' paths are looked up in it).
    pub fn start(r: &Rules, helper: &super::Helper) -> Result<Landlocking, String> {
        let ruleset = create_ruleset(r)?;
        let filling = ruleset
            .try_clone()
            .map_err(|e| format!("Landlock: a second fd of the ruleset: {e}"))?;
        let added = std::sync::Arc::new(std::sync::OnceLock::new());
        let result = added.clone();
        let rules = r.clone();
        // A result even if the job is dropped unrun (the helper ended) or ends by a panic:
        // the worker waits for one.
        struct Said(std::sync::Arc<std::sync::OnceLock<Result<(), String>>>);
        impl Drop for Said {
            fn drop(&mut self) {
                let _ = self.0.set(Err(
                    "Landlock: the thread adding the rules ended without a result".into(),
                ));
            }
        }
        let said = Said(result);
        if !helper.run(move || {
            // The paths are opened as the worker would open them: without capabilities
            // (the helper's own credentials; init keeps its own).
            let r = caps::clear(None, caps::CapSet::Effective)
                .map_err(|e| format!("Landlock: dropping the capabilities of its thread: {e}"))
                .and_then(|()| add_rules(filling, &rules).map(drop));
            let _ = said.0.set(r);
        }) {
            return Err("Landlock: the thread that adds the rules has ended".into());
        }
        Ok(Landlocking { ruleset, added })
    }

    /// In the worker (no_new_privs set): wait for the rules, then restrict this process.
    pub fn restrict(&self) -> Result<(), String> {
        self.added.wait().clone()?;
        let own = self
            .ruleset
            .try_clone()
            .map_err(|e| format!("Landlock: the worker's fd of the ruleset: {e}"))?;
        restrict(own)
    }
}

/// Install the programs (no_new_privs must be set). Nothing may run after this but
/// `execve`.
pub fn apply_seccomp(programs: &[BpfProgram]) -> Result<(), String> {
    for p in programs {
        seccompiler::apply_filter(p).map_err(|e| format!("installing the seccomp filter: {e}"))?;
    }
    Ok(())
}

/// [`apply_seccomp`], the last program with a listener (SECCOMP_FILTER_FLAG_NEW_LISTENER):
/// its SECCOMP_RET_USER_NOTIF calls wait for whoever holds the returned fd.
pub fn apply_seccomp_with_listener(programs: &[BpfProgram]) -> Result<OwnedFd, String> {
    let Some((last, first)) = programs.split_last() else {
        return Err("installing the seccomp filter: no program".into());
    };
    apply_seccomp(first)?;
    if last.is_empty() {
        return Err("installing the seccomp filter: an empty program".into());
    }
    let prog = libc::sock_fprog {
        len: u16::try_from(last.len())
            .map_err(|_| "installing the seccomp filter: too long".to_string())?,
        filter: last.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `prog` points at `last`, which outlives the call; the kernel copies it.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
            &prog as *const libc::sock_fprog,
        )
    };
    if fd < 0 {
        return Err(format!(
            "installing the seccomp filter with a listener: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: a new fd the kernel returned to us.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) })
}

/// Whether the supervisor can make a container-tier cell's TCP sockets and `connect`s:
/// seccomp user notification (Linux 5.0) with its ADDFD ioctl, probed once.
pub fn user_notif_available() -> Result<(), String> {
    static ONCE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let actions = seccomp_actions();
        if !actions.contains("user_notif") {
            return Err(format!(
                "seccomp has no user notification here (actions: {}; needs Linux 5.0+)",
                actions.trim()
            ));
        }
        // SECCOMP_IOCTL_NOTIF_ADDFD with FLAG_SEND (Linux 5.14) installs the sockets the
        // supervisor makes: older than the Landlock ABI the tier needs (Linux 6.12), so
        // not probed apart; without it the cell's TCP socket() fails (closed).
        Ok(())
    })
    .clone()
}

/// The kernel's seccomp actions (`/proc/sys/kernel/seccomp/actions_avail`), read once.
fn seccomp_actions() -> &'static str {
    static ONCE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        super::read_kernel_file("/proc/sys/kernel/seccomp/actions_avail").unwrap_or_default()
    })
}

/// Whether this kernel can install filters returning errno.
pub fn seccomp_available() -> Result<(), String> {
    // SAFETY: PR_GET_SECCOMP takes no pointers.
    if unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) } < 0 {
        return Err(format!(
            "seccomp is not available: {} (needs a kernel with CONFIG_SECCOMP_FILTER)",
            std::io::Error::last_os_error()
        ));
    }
    let actions = seccomp_actions();
    if !actions.is_empty() && !actions.contains("errno") {
        return Err(format!(
            "seccomp cannot return errno here (actions: {})",
            actions.trim()
        ));
    }
    Ok(())
}
