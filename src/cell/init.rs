//! The cell's PID 1: builds the cell, starts the worker, then reaps and forwards signals.

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::signal::{SigSet, Signal};
use nix::unistd::Pid;

use super::{report, rootfs, worker, Spec, FORWARDED};
use crate::plan::NetMode;

/// The signals init keeps blocked and waits for: the forwarded ones and SIGCHLD.
pub fn blocked_in_init() -> SigSet {
    let mut s = super::forwarded_set();
    s.add(Signal::SIGCHLD);
    s
}

fn exit(code: i32) -> ! {
    // SAFETY: _exit ends the process without running atexit handlers or destructors,
    // which belong to the launcher this process was cloned from.
    unsafe { libc::_exit(code) }
}

/// The socketpair ends on which the cell passes fds out: the proxy listeners (init), the
/// pty master (init), the seccomp listener (the worker).
pub struct Socks {
    pub listen: Option<OwnedFd>,
    pub tty: Option<OwnedFd>,
    pub notify: Option<OwnedFd>,
}

/// Where init runs: the CPUs to put back once released, and whether it moves itself into
/// the cell's cgroup v1 directories at its second release (`Placement::SelfMove`).
pub struct Placing {
    pub spread: Option<super::Spread>,
    pub self_move: bool,
}

/// Entry point of the cloned child. Never returns.
pub fn main(
    spec: &Spec,
    Placing { spread, self_move }: Placing,
    prepared: Option<OwnedFd>,
    sync: OwnedFd,
    err: OwnedFd,
    status: OwnedFd,
    socks: Socks,
) -> ! {
    let Socks {
        listen: listen_sock,
        tty: tty_sock,
        notify: notify_sock,
    } = socks;
    // Die with the supervisor: a killed taskcell leaves nothing running. Without
    // namespaces (best effort) no PID namespace ends the command's descendants with
    // init, so init is told instead (SIGURG, blocked, taken by the wait loop): as the
    // subreaper of everything the command started it kills them all, removes the private
    // TMPDIR, then ends.
    let death = if spec.namespaces {
        libc::SIGKILL
    } else {
        let mut urg = SigSet::empty();
        urg.add(Signal::SIGURG);
        let _ = nix::sys::signal::pthread_sigmask(
            nix::sys::signal::SigmaskHow::SIG_BLOCK,
            Some(&urg),
            None,
        );
        libc::SIGURG
    };
    let launcher = nix::unistd::getppid();
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, death, 0, 0, 0);
    }
    if !spec.namespaces && nix::unistd::getppid() != launcher {
        // The supervisor died before the death signal was set.
        orphaned(spec);
    }
    // The identity map of the caller's ids, written by this process itself (allowed for
    // its own ids once setgroups is denied): no round trip to the supervisor, which would
    // cost a cross-CPU wake-up on every start.
    // Root-started cells get their maps from the supervisor (see spawn_with).
    if spec.namespaces && spec.host_ids.is_none() {
        // The supervisor is non-dumpable (it holds secret values), and so is this clone of
        // it; a non-dumpable process's /proc files belong to the host's root, so a plain
        // user could not open its own uid_map. Dumpable just for the write, and only
        // while nothing but this process is in the new user namespace.
        // SAFETY: prctl with integer arguments only.
        unsafe {
            libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0);
        }
        let maps = super::userns::write_maps_self(spec.process.uid, spec.process.gid);
        // SAFETY: as above.
        unsafe {
            libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        }
        if let Err(e) = maps {
            report(
                err.as_raw_fd(),
                125,
                &format!("cannot set up the cell's user namespace: {e}"),
            );
            exit(125);
        }
    }
    let mut go = [0u8; 1];
    let mut f = std::fs::File::from(sync);
    if !matches!(f.read(&mut go), Ok(1)) {
        // The supervisor died before releasing us.
        if !spec.namespaces {
            orphaned(spec);
        }
        exit(125);
    }
    // Moved to another CPU than the supervisor's by it before this release: the CPUs
    // this process was born with again, for everything it starts.
    if let Some(s) = spread {
        s.restore();
    }
    // Leave the launcher's process group: a Ctrl-C on the terminal reaches the supervisor,
    // which forwards it once; were init still in the foreground group, the command would
    // get it twice.
    let _ = nix::unistd::setsid();
    // Nothing in the cell may ptrace init (it holds capabilities in the cell's user
    // namespace until the worker is started). A clone of the non-dumpable supervisor is
    // non-dumpable already; said again here, as init's own guarantee.
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }

    if !spec.namespaces {
        // No PID namespace: become the subreaper of whatever the command starts, so that
        // it can be killed when the command ends (see wait_loop).
        // SAFETY: prctl with integer arguments only.
        unsafe {
            libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        }
    }
    // Root-started: the maps are written; from here on init is the cell's root (its
    // capabilities are the cell namespace's only) as the unprivileged host id, without
    // host root's supplementary groups. Every host path it binds was opened by the
    // supervisor (`prepared`).
    if spec.namespaces && spec.host_ids.is_some() {
        if let Err(e) = super::userns::become_ids(spec.process.uid, spec.process.gid) {
            report(
                err.as_raw_fd(),
                125,
                &format!("taking the cell's host ids: {e}"),
            );
            exit(125);
        }
        // A change of ids clears the parent-death signal: set it again (were the
        // supervisor gone already, the next read of the release socket ends this process).
        // SAFETY: prctl with integer arguments only.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        }
    }
    // The helper thread (after the last change of ids: it keeps init's credentials) for
    // the network namespace, made beside the root (see net::Making), and the Landlock
    // rules.
    let wants_netns = spec.namespaces && spec.net != NetMode::Host;
    let helper = if spec.namespaces || spec.landlock.is_some() {
        match super::Helper::start() {
            Ok(h) => Some(h),
            Err(e) => {
                report(
                    err.as_raw_fd(),
                    125,
                    &format!("starting init's helper thread: {e}"),
                );
                exit(125);
            }
        }
    } else {
        None
    };
    let netns = match (&helper, wants_netns) {
        (Some(h), true) => {
            match super::net::start(matches!(spec.net, NetMode::Loopback | NetMode::Proxy), h) {
                Ok(m) => Some(m),
                Err(f) => {
                    report(err.as_raw_fd(), f.code(), &f.message);
                    exit(125);
                }
            }
        }
        _ => None,
    };
    if spec.namespaces {
        if let Err(msg) = setup(spec, prepared.as_ref()) {
            report(err.as_raw_fd(), 125, &msg);
            exit(125);
        }
    }
    drop(prepared);
    // The staging root's detach, then the Landlock rules, by the helper beside what
    // follows and the worker's start: the detach needs the helper's capabilities, which
    // the Landlock job drops; the rules are needed later (the worker's restrict comes
    // 0.2 ms after its start, the detach was waited for with the rules queued first).
    let detaching = match (&helper, spec.namespaces) {
        (Some(h), true) => match rootfs::Detaching::start(h) {
            Ok(d) => Some(d),
            Err(e) => {
                report(err.as_raw_fd(), 125, &e.to_string());
                exit(125);
            }
        },
        _ => None,
    };
    let landlocking = match (spec.landlock.as_ref(), &helper) {
        (Some(r), Some(h)) => Some(super::confine::Landlocking::start(r, h)),
        _ => None,
    };
    let landlocking = match landlocking {
        Some(Ok(l)) => Some(l),
        Some(Err(msg)) => {
            report(err.as_raw_fd(), 125, &msg);
            exit(125);
        }
        None => None,
    };
    if let Some(m) = netns {
        if let Err(f) = m.enter() {
            report(err.as_raw_fd(), f.code(), &f.message);
            exit(125);
        }
    }
    if listen_sock.is_some() && !spec.namespaces {
        report(
            err.as_raw_fd(),
            125,
            "network mode `proxy` needs the cell's own network namespace, which this system does not allow (see `taskcell doctor`)",
        );
        exit(125);
    }
    if let Some(sock) = listen_sock {
        // Bound here, with the cell's network namespace and before any privilege is
        // dropped; served by the supervisor from outside.
        if let Err(msg) = super::net::pass_listeners(&spec.listen, spec.dns, &sock) {
            report(err.as_raw_fd(), 125, &msg);
            exit(125);
        }
    }

    // Interactive: a terminal from the cell's own devpts (so `tty`/ttyname() name it),
    // whose master goes to the supervisor; the worker opens the slave by path.
    let mut tty_path = None;
    if let (Some(sock), Some(size)) = (tty_sock, spec.pty) {
        let opened = super::pty::open(size.rows, size.cols).and_then(|(master, path)| {
            crate::cell::fdpass::send(&sock, &[master.as_raw_fd()])?;
            Ok(path)
        });
        match opened {
            Ok(path) => tty_path = Some(path),
            Err(e) => {
                report(
                    err.as_raw_fd(),
                    125,
                    &format!("allocating the cell's terminal: {e} (or run with --no-pty)"),
                );
                exit(125);
            }
        }
    }

    // The second release: the supervisor has put this process in the cell's cgroup, or
    // made it and sent its cgroup v1 `tasks` files (and their parents'), which this
    // process writes "0" to: one thread moving itself takes no threadgroup lock and
    // waits for no RCU grace period, as a move by pid does (5-10 ms on the dev VM). The
    // worker, forked next by this thread, and everything it starts are born inside.
    let sync = OwnedFd::from(f);
    let leave = match release(&sync, self_move) {
        Ok(leave) => leave,
        Err(msg) => {
            if let Some(msg) = msg {
                report(err.as_raw_fd(), 125, &msg);
            }
            if !spec.namespaces {
                orphaned(spec);
            }
            exit(125);
        }
    };
    drop(sync);
    let started = spawn_worker(
        spec,
        &err,
        &status,
        tty_path.as_deref(),
        notify_sock,
        detaching.as_ref(),
        landlocking.as_ref(),
    );
    // The worker has exec'd (after the detach was done) or failed: init is one thread again.
    drop(landlocking);
    if let Some(h) = helper {
        h.join();
    }
    if let Some(d) = detaching {
        d.finish();
    }
    let worker = match started {
        Ok(pid) => pid,
        Err(e) => {
            report(err.as_raw_fd(), 125, &format!("starting the worker: {e}"));
            exit(125);
        }
    };
    drop(err);
    let mut keep: Vec<RawFd> = leave.iter().map(|f| f.as_raw_fd()).collect();
    keep.push(status.as_raw_fd());
    if let Err(e) = drop_privileges(&keep) {
        // Init keeps running to report the worker's status; without the drop it would be
        // a privileged process inside the cell, so end the cell instead.
        let _ = nix::sys::signal::kill(worker, Signal::SIGKILL);
        eprintln!("taskcell: cell init could not drop its privileges: {e}");
        exit(125);
    }
    wait_loop(worker, status, leave, spec, launcher)
}

/// Wait for the second release; with `self_move`, move into the cell's cgroup v1
/// directories through the `tasks` files that come with it, and return their parents'
/// (to leave through at the end). Err(None): the supervisor is gone.
fn release(sync: &OwnedFd, self_move: bool) -> Result<Vec<OwnedFd>, Option<String>> {
    if !self_move {
        let mut go = [0u8; 1];
        return match nix::unistd::read(sync.as_raw_fd(), &mut go) {
            Ok(1) => Ok(Vec::new()),
            _ => Err(None),
        };
    }
    let (n, mut fds) = crate::cell::fdpass::recv_with(sync).map_err(|_| None)?;
    let leave = fds.split_off((n as usize).min(fds.len()));
    if fds.is_empty() {
        return Err(Some("cannot put the cell into its cgroup: no cgroup came with the release (run it again; `taskcell doctor` shows the cgroups)".into()));
    }
    for tasks in fds {
        if let Err(e) = nix::unistd::write(&tasks, b"0") {
            return Err(Some(format!("cannot put the cell into its cgroup: moving init: {e} (run it again; `taskcell doctor` shows the cgroups)")));
        }
    }
    Ok(leave)
}

/// What the worker's first function gets (through clone's one pointer argument).
struct WorkerStart<'a> {
    spec: &'a Spec,
    err: RawFd,
    status: RawFd,
    tty: Option<&'a std::path::Path>,
    notify: Option<RawFd>,
    /// The staging root's detach: the end to wait on.
    detach: Option<RawFd>,
    /// The Landlock ruleset a thread of init is filling.
    landlock: Option<&'a super::confine::Landlocking>,
}

/// The worker's stack size (it runs Rust code up to the execve: the Landlock ruleset, the
/// filter, argv and the environment).
const WORKER_STACK: usize = 1 << 20;

/// Start the worker as posix_spawn does: a child that shares this process's memory
/// (CLONE_VM) on a stack of its own while this process waits (CLONE_VFORK) until it has
/// exec'd or exited, so that nothing is copied for it and its execve has no address
/// space to tear down. Everything else (fd table, signal handlers, credentials, rlimits,
/// working directory) is its own, as after a fork. Returns the worker's pid.
fn spawn_worker(
    spec: &Spec,
    err: &OwnedFd,
    status: &OwnedFd,
    tty: Option<&std::path::Path>,
    notify: Option<OwnedFd>,
    detaching: Option<&rootfs::Detaching>,
    landlock: Option<&super::confine::Landlocking>,
) -> Result<Pid, String> {
    extern "C" fn entry(arg: *mut libc::c_void) -> libc::c_int {
        // SAFETY: `arg` points to the WorkerStart on spawn_worker's frame, which lives
        // until this child has exec'd or exited (CLONE_VFORK keeps the parent waiting).
        let w = unsafe { &*(arg as *const WorkerStart<'_>) };
        // The fds are this child's own copies (its own fd table): owning them here
        // closes nothing of init's. The status pipe is init's alone.
        // SAFETY: fds open in this child's table, owned by nothing else in it.
        let (err, notify, detached) = unsafe {
            libc::close(w.status);
            (
                OwnedFd::from_raw_fd(w.err),
                w.notify.map(|fd| OwnedFd::from_raw_fd(fd)),
                w.detach.map(|done| OwnedFd::from_raw_fd(done)),
            )
        };
        worker::main(w.spec, err, w.tty, notify, detached, w.landlock)
    }
    let stack = super::Stack::new(WORKER_STACK).map_err(|e| format!("its stack: {e}"))?;
    let start = WorkerStart {
        spec,
        err: err.as_raw_fd(),
        status: status.as_raw_fd(),
        tty,
        notify: notify.as_ref().map(|fd| fd.as_raw_fd()),
        detach: detaching.map(|d| d.done.as_raw_fd()),
        landlock,
    };
    // SAFETY: the stack is the top of its own mapping; `entry` never returns
    // (worker::main execs or _exits) and touches this thread's memory only while this
    // thread waits (CLONE_VFORK); `start` outlives the call. The only other thread (the
    // helper adding the Landlock rules and detaching the staging root) keeps running and
    // releases any lock it takes, as a thread does.
    let pid = unsafe {
        libc::clone(
            entry,
            stack.top(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            &start as *const WorkerStart<'_> as *mut libc::c_void,
        )
    };
    let e = std::io::Error::last_os_error();
    // The worker has exec'd or exited and left its stack.
    drop(stack);
    drop(notify);
    if pid < 0 {
        return Err(format!("clone: {e}"));
    }
    Ok(Pid::from_raw(pid))
}

fn setup(spec: &Spec, prepared: Option<&OwnedFd>) -> Result<(), String> {
    rootfs::execute(&spec.mounts, prepared, spec.tmpfs_size).map_err(|e| e.to_string())?;
    super::secrets::populate(&spec.secrets)?;
    nix::unistd::sethostname(&spec.process.hostname)
        .map_err(|e| format!("setting the hostname {:?}: {e}", spec.process.hostname))
}

/// After the worker started, init needs no privilege: drop every capability, set
/// no_new_privs and close every fd but `keep` (the status pipe, the cgroup `tasks` files
/// it leaves through at the end).
fn drop_privileges(keep: &[RawFd]) -> Result<(), String> {
    super::worker::drop_all_caps()?;
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(format!("no_new_privs: {}", std::io::Error::last_os_error()));
    }
    let mut keep: Vec<RawFd> = keep.iter().copied().filter(|fd| *fd >= 3).collect();
    keep.sort_unstable();
    let mut from = 3;
    for k in keep {
        if k > from {
            // SAFETY: closing a range of fds this process owns and does not use again.
            unsafe { libc::syscall(libc::SYS_close_range, from as u32, (k - 1) as u32, 0u32) };
        }
        from = k + 1;
    }
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_close_range, from as u32, u32::MAX, 0u32) };
    Ok(())
}

/// Init of the cell's PID namespace: SIGKILL every other process in it (a fork racing
/// the signal fails, the kernel guarantees that of kill(-1)) and reap them all, orphans
/// re-parented here included, until none is left (ECHILD).
fn kill_namespace() {
    // SAFETY: kill with pid -1 and a signal number only.
    unsafe {
        libc::kill(-1, libc::SIGKILL);
    }
    loop {
        let mut st: libc::c_int = 0;
        // SAFETY: waitpid writes the status into our local.
        let pid = unsafe { libc::waitpid(-1, &mut st, 0) };
        if pid < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return;
        }
    }
}

/// Without a PID namespace: SIGKILL every remaining child (orphans were re-parented to us
/// as the subreaper) until none is left.
fn kill_descendants() {
    for _ in 0..1000 {
        let me = std::process::id();
        let kids =
            std::fs::read_to_string(format!("/proc/{me}/task/{me}/children")).unwrap_or_default();
        let pids: Vec<i32> = kids
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        if pids.is_empty() {
            return;
        }
        for p in &pids {
            let _ = nix::sys::signal::kill(Pid::from_raw(*p), Signal::SIGKILL);
        }
        for p in &pids {
            let _ = nix::sys::wait::waitpid(Pid::from_raw(*p), None);
        }
    }
}

/// Without namespaces, the supervisor is gone (killed): end everything the command
/// started (init is their subreaper) and remove the private TMPDIR, then end.
fn orphaned(spec: &Spec) -> ! {
    kill_descendants();
    if let Some(tmp) = private_tmp(spec) {
        // remove_dir_all never follows a symlink (the tree was the cell's to write).
        let _ = std::fs::remove_dir_all(tmp);
    }
    exit(128 + libc::SIGKILL);
}

/// The private TMPDIR of a cell without namespaces (the spec's `TMPDIR`).
fn private_tmp(spec: &Spec) -> Option<&str> {
    if spec.namespaces {
        return None;
    }
    spec.process
        .env
        .iter()
        .find(|(k, _)| k == "TMPDIR")
        .map(|(_, v)| v.as_str())
        .filter(|v| v.starts_with('/'))
}

fn wait_loop(worker: Pid, status: OwnedFd, leave: Vec<OwnedFd>, spec: &Spec, launcher: Pid) -> ! {
    let namespaces = spec.namespaces;
    let mut set = blocked_in_init();
    if !namespaces {
        set.add(Signal::SIGURG);
    }
    loop {
        let sig = match set.wait() {
            Ok(s) => s,
            Err(_) => continue,
        };
        if sig == Signal::SIGURG && !namespaces {
            // The parent-death signal, or one from the cell (same user): only a
            // changed parent counts.
            if nix::unistd::getppid() != launcher {
                orphaned(spec);
            }
            continue;
        }
        if sig != Signal::SIGCHLD {
            if FORWARDED.contains(&sig) {
                let _ = nix::sys::signal::kill(worker, sig);
            }
            continue;
        }
        loop {
            let mut st: libc::c_int = 0;
            // SAFETY: waitpid writes the status into our local.
            let pid = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
            if pid == worker.as_raw() {
                let bytes = st.to_ne_bytes();
                // Everything else in the cell ends before the status is written: the
                // supervisor reads what the cell wrote as soon as it has the status,
                // while this process's exit tears the namespaces down.
                if namespaces {
                    kill_namespace();
                    // Alone in the cell's cgroup v1 hierarchies now: out of them (one
                    // thread moving itself), so that the supervisor removes them while
                    // this process's exit runs. A failure only delays their removal.
                    for tasks in &leave {
                        let _ = nix::unistd::write(tasks, b"0");
                    }
                }
                let _ = nix::unistd::write(&status, &bytes);
                // Exiting ends the PID namespace: the kernel kills whatever the command
                // left behind (daemons included).
                if !namespaces {
                    kill_descendants();
                }
                let code = if libc::WIFEXITED(st) {
                    libc::WEXITSTATUS(st)
                } else {
                    128 + libc::WTERMSIG(st)
                };
                exit(code);
            }
        }
    }
}
