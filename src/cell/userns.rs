//! User namespace: the identity map of the caller's ids (plain users), or, started as
//! root, the cell's ids mapped to one unprivileged host id with idmapped write binds.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Deny setgroups, then map the caller's uid and gid to themselves (files keep their
/// owner; `id` inside prints the caller's ids). The same as root and as a plain user.
/// Written by the cell's init for itself right after the clone (a process may map its
/// own ids in the user namespace it created).
pub fn write_maps_self(uid: u32, gid: u32) -> Result<(), String> {
    let w = |file: &str, data: String| -> Result<(), String> {
        std::fs::write(format!("/proc/self/{file}"), data.as_bytes())
            .map_err(|e| format!("writing {file}: {e}"))
    };
    w("setgroups", "deny".into())?;
    w("uid_map", format!("{uid} {uid} 1\n"))?;
    w("gid_map", format!("{gid} {gid} 1\n"))?;
    Ok(())
}

/// Read a sysctl as a trimmed string.
pub fn sysctl(path: &str) -> Option<String> {
    super::read_kernel_file(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Why user namespaces are not available, when the machine says so.
pub fn userns_restriction() -> Option<String> {
    if sysctl("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        return Some(
            "user.max_user_namespaces is 0 (raise it: sysctl -w user.max_user_namespaces=15000)"
                .into(),
        );
    }
    if sysctl("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0")
        && !nix::unistd::geteuid().is_root()
    {
        return Some("kernel.unprivileged_userns_clone is 0 (enable it: sysctl -w kernel.unprivileged_userns_clone=1)".into());
    }
    if sysctl("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1")
        && !nix::unistd::geteuid().is_root()
    {
        return Some("AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns=1; add an AppArmor profile for taskcell with `userns,` or set the sysctl to 0)".into());
    }
    None
}

/// Can this process create a user namespace? A child cloned with CLONE_NEWUSER that exits
/// at once (what `run` and `explain` ask before deciding the tier; `doctor` probes every
/// namespace). Err: why not, with the fix.
pub fn probe() -> Result<(), String> {
    // SAFETY: a raw clone without CLONE_VM behaves like fork(); the child only calls
    // _exit, which is async-signal-safe, so it is sound even with other threads running.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if ret == 0 {
        // SAFETY: leave the probe child at once, running nothing of the parent's.
        unsafe { libc::_exit(0) }
    }
    if ret < 0 {
        return Err(explain_clone_error(&io::Error::last_os_error()));
    }
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(ret as i32), None);
    Ok(())
}

/// [`probe`] only where it can fail for a reason the sysctls do not show: under a seccomp
/// filter (a container's policy) or in a nested user namespace. Elsewhere, the sysctls
/// (`userns_restriction`) decide without a clone on the launch path; should the cell's own
/// clone fail after all, `run` falls back as the plan allows.
pub fn probe_for_run() -> Result<(), String> {
    if let Some(why) = userns_restriction() {
        return Err(why);
    }
    // Under a seccomp filter (mode 2): one prctl instead of /proc/self/status's `Seccomp:`
    // line (generating that file costs ~25 µs). An error (no seccomp at all) is no filter.
    // SAFETY: prctl with integer arguments only.
    let filtered = unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) } > 0;
    if filtered || !in_initial_userns() {
        return probe();
    }
    Ok(())
}

/// Turn a clone failure into a sentence that says what to do.
pub fn explain_clone_error(e: &io::Error) -> String {
    let why = userns_restriction();
    match (e.raw_os_error(), why) {
        (_, Some(why)) => format!("{e}: {why}; `taskcell doctor` shows every layer"),
        (Some(libc::ENOSPC), None) => format!(
            "{e}: a namespace limit is reached (user.max_user_namespaces or a parent namespace's limit); run `taskcell doctor`"
        ),
        (Some(libc::EPERM), None) => format!(
            "{e}: user namespaces are not allowed here (a container's seccomp or AppArmor policy?); run `taskcell doctor`"
        ),
        _ => format!("{e}; run `taskcell doctor`"),
    }
}

/// Where the locks of allocated host ids live (one file per id, held with `flock` by the
/// supervisor of the cell that uses it; the kernel drops the lock when that process ends).
pub const ID_LOCK_DIR: &str = "/run/taskcell/ids";

/// A host uid/gid held for one cell until this is dropped.
#[derive(Debug)]
pub struct Lease {
    pub id: u32,
    _lock: std::fs::File,
}

/// Take the first id of `[start, start+count)` no other running cell holds (root only).
pub fn allocate(start: u32, count: u32) -> Result<Lease, String> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(ID_LOCK_DIR)
        .map_err(|e| format!("creating {ID_LOCK_DIR}: {e}"))?;
    for i in 0..count {
        let Some(id) = start
            .checked_add(i)
            .filter(|id| *id != 65534 && *id < u32::MAX)
        else {
            continue;
        };
        let path = format!("{ID_LOCK_DIR}/{id}");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| format!("opening {path}: {e}"))?;
        // SAFETY: flock on an fd we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(Lease { id, _lock: f });
        }
    }
    Err(format!(
        "all {count} host ids from {start} are in use by running cells (see {ID_LOCK_DIR})"
    ))
}

/// Map `inner` uid/gid of init's user namespace to `host` (written by the supervisor,
/// which as host root has CAP_SETUID/CAP_SETGID over the parent namespace: a process may
/// only map its own id). setgroups stays allowed so init can clear root's supplementary
/// groups before anything runs; only the one gid is mapped.
pub fn write_maps(pid: i32, inner: (u32, u32), host: (u32, u32)) -> Result<(), String> {
    let w = |file: &str, data: String| -> Result<(), String> {
        std::fs::write(format!("/proc/{pid}/{file}"), data.as_bytes())
            .map_err(|e| format!("writing {file} of the cell's init: {e}"))
    };
    w("uid_map", format!("{} {} 1\n", inner.0, host.0))?;
    w("gid_map", format!("{} {} 1\n", inner.1, host.1))?;
    Ok(())
}

/// Run as `inner` ids: no supplementary groups (root's would still open group-readable
/// files), then gid and uid. Host-side these are the cell's unprivileged host ids.
pub fn become_ids(uid: u32, gid: u32) -> Result<(), String> {
    nix::unistd::setgroups(&[]).map_err(|e| format!("clearing supplementary groups: {e}"))?;
    let g = nix::unistd::Gid::from_raw(gid);
    nix::unistd::setresgid(g, g, g).map_err(|e| format!("setresgid {gid}: {e}"))?;
    let u = nix::unistd::Uid::from_raw(uid);
    nix::unistd::setresuid(u, u, u).map_err(|e| format!("setresuid {uid}: {e}"))?;
    Ok(())
}

/// The idmap helper's stack: it only sits in one system call.
const HELPER_STACK: usize = 64 * 1024;

/// A user namespace whose only mapping sends `owner` (uid, gid) to `host`: the idmap of a
/// mount that shows the path's owner's files as the cell's host id and writes the cell's
/// files as the owner. Made by a short-lived child that sits in a new user namespace
/// while this process (host root) writes its maps and opens its namespace. The child
/// shares this process's memory (CLONE_VM, on a stack of its own): nothing is copied for
/// it, and this process takes no copy-on-write faults while it lives. It is killed before
/// this returns and reaped when the returned [`Reaper`] is dropped, so the caller does not
/// wait for its exit on the way to the cell's clone.
pub fn idmap_userns(owner: (u32, u32), host: (u32, u32)) -> Result<(OwnedFd, Reaper), String> {
    extern "C" fn sit(_: *mut libc::c_void) -> libc::c_int {
        loop {
            // SAFETY: ppoll with no fds, no timeout and no mask blocks until a signal; the
            // child waits for SIGKILL. Raw syscall, no libc state touched (the memory,
            // TLS included, is the parent's).
            unsafe {
                libc::syscall(
                    libc::SYS_ppoll,
                    std::ptr::null::<libc::pollfd>(),
                    0usize,
                    std::ptr::null::<libc::timespec>(),
                    std::ptr::null::<libc::sigset_t>(),
                    0usize,
                );
            }
        }
    }
    let stack = super::Stack::new(HELPER_STACK)
        .map_err(|e| format!("a stack for the helper of an idmapped mount: {e}"))?;
    // SAFETY: the child runs `sit` on the top of the mapping above (16-byte aligned, as
    // mmap returns pages), which stays mapped until the child is reaped (Reaper); `sit`
    // touches nothing but its own stack. The caller is single-threaded (spawn).
    let ret = unsafe {
        libc::clone(
            sit,
            stack.top(),
            libc::CLONE_NEWUSER | libc::CLONE_VM | libc::SIGCHLD,
            std::ptr::null_mut(),
        )
    };
    if ret < 0 {
        return Err(format!(
            "creating the user namespace of an idmapped mount: {}",
            io::Error::last_os_error()
        ));
    }
    let pid = ret;
    let made = (|| {
        let w = |file: &str, data: String| -> Result<(), String> {
            std::fs::write(format!("/proc/{pid}/{file}"), data.as_bytes())
                .map_err(|e| format!("writing {file} of an idmap namespace: {e}"))
        };
        w("uid_map", format!("{} {} 1\n", owner.0, host.0))?;
        w("gid_map", format!("{} {} 1\n", owner.1, host.1))?;
        let f = std::fs::File::open(format!("/proc/{pid}/ns/user"))
            .map_err(|e| format!("opening an idmap namespace: {e}"))?;
        Ok(OwnedFd::from(f))
    })();
    let p = nix::unistd::Pid::from_raw(pid);
    // Killed now (the open fd keeps the namespace), reaped later: its exit runs while
    // this process goes on.
    let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGKILL);
    let reaper = Reaper(Some((p, stack)));
    made.map(|ns| (ns, reaper))
}

/// A killed helper child, reaped (`waitpid`) on drop; then its stack is unmapped.
#[derive(Debug)]
pub struct Reaper(Option<(nix::unistd::Pid, super::Stack)>);

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Some((p, stack)) = self.0.take() {
            let _ = nix::sys::wait::waitpid(p, None);
            drop(stack);
        }
    }
}

/// What [`prepare_binds`] made: each bind as a detached tree, in the order of the spec's
/// binds, and the killed helper children to reap once the cell is released.
#[derive(Debug, Default)]
pub struct Prepared {
    pub binds: Vec<OwnedFd>,
    pub reapers: Vec<Reaper>,
}

/// Root-started: every bind of the spec, made here in the supervisor as a detached tree
/// that init moves into the cell's root, in the order of the ops. The writable ones are
/// idmapped (an idmapped mount needs CAP_SYS_ADMIN over the host filesystem, which the
/// cell's init lacks); the read-only ones are plain copies, made here because init runs
/// as the cell's unprivileged host id from its start and so cannot open what only root
/// may traverse.
///
/// `cell_userns`: the cell's own user namespace, whose maps (written by [`write_maps`]) send
/// the cell's ids to its host ids and nothing else: the idmap of a writable bind whose
/// owner is the cell's ids (the usual case: a root-started cell runs as the owner of its
/// workspace), without a helper namespace (whose child and maps cost 0.2 ms, and up to
/// 0.9 ms when the CPU is shared with the cell's network namespace being made).
pub fn prepare_binds(
    spec: &crate::spec::Spec,
    cell_userns: Option<OwnedFd>,
) -> Result<Prepared, String> {
    use crate::hold;
    use crate::spec::mounts::MountOp;
    use std::os::unix::fs::MetadataExt;
    let Some(host) = spec.host_ids else {
        return Ok(Prepared::default());
    };
    let root = hold::open_dir(std::path::Path::new("/")).map_err(|e| format!("opening /: {e}"))?;
    let mut nss: Vec<((u32, u32), OwnedFd)> = Vec::new();
    if let Some(ns) = cell_userns {
        nss.push(((spec.process.uid, spec.process.gid), ns));
    }
    let mut out = Prepared::default();
    for (i, op) in spec.mounts.iter().enumerate() {
        let MountOp::Bind { src, readonly, .. } = op else {
            continue;
        };
        let what = |e: &dyn std::fmt::Display| format!("binding {}: {e}", src.display());
        let rel = src.strip_prefix("/").unwrap_or(src);
        let held = hold::open_nofollow(root.as_raw_fd(), rel, std::path::Path::new("/"))
            .map_err(|e| what(&e))?;
        let tree = hold::clone_tree(&held).map_err(|e| what(&e))?;
        let mut attrs = hold::MOUNT_ATTR_NOSUID | hold::MOUNT_ATTR_NODEV;
        if *readonly {
            attrs |= hold::MOUNT_ATTR_RDONLY;
        }
        if !spec.idmapped.contains(&i) {
            hold::set_attr_recursive(&tree, attrs).map_err(|e| what(&e))?;
            out.binds.push(tree);
            continue;
        }
        // SAFETY: an O_PATH fd we own, borrowed as a File without taking it.
        let f =
            std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(held.as_raw_fd()) });
        let md = f.metadata().map_err(|e| what(&e))?;
        let owner = (md.uid(), md.gid());
        let ns = match nss.iter().position(|(o, _)| *o == owner) {
            Some(k) => k,
            None => {
                let (ns, reaper) = idmap_userns(owner, (host.uid, host.gid))?;
                out.reapers.push(reaper);
                nss.push((owner, ns));
                nss.len() - 1
            }
        };
        hold::set_attr_idmap(&tree, attrs, &nss[ns].1).map_err(|e| {
            what(&format!(
                "{e}: an idmapped mount failed (the filesystem may not support them)"
            ))
        })?;
        out.binds.push(tree);
    }
    Ok(out)
}

/// Whether `path`'s filesystem takes an idmapped mount to `host` (doctor, as root; the
/// caller must be single-threaded, e.g. a forked probe).
pub fn probe_idmap(path: &std::path::Path, host: u32) -> Result<(), String> {
    use crate::hold;
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let held = hold::open_dir(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let tree = hold::clone_tree(&held).map_err(|e| format!("open_tree: {e}"))?;
    let (ns, _reaper) = idmap_userns((md.uid(), md.gid()), (host, host))?;
    hold::set_attr_idmap(&tree, 0, &ns).map_err(|e| format!("mount_setattr(MOUNT_ATTR_IDMAP): {e}"))
}

/// Whether this process is in the initial user namespace (its uid_map is the identity of
/// every id). Root in a nested user namespace (`unshare -Ur`, a rootless container) is
/// not host root: it can neither write another id's map nor make idmapped mounts of the
/// host's filesystems, so a root-started cell's host ids do not apply there.
pub fn in_initial_userns() -> bool {
    super::read_kernel_file("/proc/self/uid_map").is_ok_and(|m| {
        let f: Vec<&str> = m.split_whitespace().collect();
        f == ["0", "0", "4294967295"]
    })
}
