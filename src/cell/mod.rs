//! The cell: a process tree in its own namespaces, built from a Plan.
//!
//! [`spawn`] clones the cell's init with every namespace in one `clone`, writes the
//! identity uid/gid map from outside, and releases it. Init (PID 1 of the cell) builds
//! the root filesystem ([`rootfs`]), sets the hostname, brings `lo` up if asked, forks
//! the worker ([`worker`]), drops its own privileges and then only reaps and forwards
//! signals ([`init`]). The worker drops everything and `execve`s the command.
//!
//! Failures inside the cell before `execve` are reported to the supervisor over a
//! close-on-exec pipe as `CODE\tMESSAGE` (125 setup, 126 not executable, 127 not found);
//! init reports the worker's raw wait status over a second pipe.

pub mod cgroup;
pub mod confine;
pub mod fdpass;
pub mod init;
pub mod net;
pub mod notify;
pub mod pty;
pub mod rootfs;
pub mod secrets;
pub mod userns;
pub mod worker;

use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::signal::{SigSet, Signal};
use nix::unistd::Pid;

pub use crate::spec::{Spec, TermSize};

/// Start a thread that runs on another CPU than the caller's. A new thread is queued on
/// its creator's CPU (on this 2-vCPU VM it waited there up to 1.3 ms, until the creator
/// blocked, while the other CPU idled) or runs there at once and makes the creator wait;
/// the threads started here exist to run beside their creator (the probes, init's
/// helper). Best effort: on one allowed CPU, or when the kernel refuses, the thread runs
/// where the kernel puts it.
///
/// The thread waits until its CPUs are set: a thread that had already ended would have
/// no thread id left, and `pthread_setaffinity_np` would then set the *caller's* CPUs
/// (a tid of 0 is the calling thread), pinning the caller and everything it starts
/// afterwards (the cell's command) to one CPU.
pub(crate) fn spawn_beside<F, T>(
    builder: std::thread::Builder,
    f: F,
) -> io::Result<std::thread::JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    spawn_beside_then(builder, f, || ())
}

/// [`spawn_beside`], with `before_placing` run between the thread's start and the setting
/// of its CPUs (tests widen that window with it).
fn spawn_beside_then<F, T>(
    builder: std::thread::Builder,
    f: F,
    before_placing: impl FnOnce(),
) -> io::Result<std::thread::JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    use std::os::unix::thread::JoinHandleExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    let Some(others) = others_than_here() else {
        return builder.spawn(f);
    };
    let placed = std::sync::Arc::new(AtomicBool::new(false));
    let placed_in = placed.clone();
    let t = builder.spawn(move || {
        while !placed_in.load(Ordering::Acquire) {
            std::thread::park();
        }
        f()
    })?;
    before_placing();
    // SAFETY: pthread_setaffinity_np reads the set for a thread that has not ended (it
    // waits for `placed`, and its JoinHandle is held, so it is neither joined nor
    // detached).
    unsafe {
        libc::pthread_setaffinity_np(
            t.as_pthread_t(),
            std::mem::size_of::<libc::cpu_set_t>(),
            &others,
        );
    }
    placed.store(true, Ordering::Release);
    t.thread().unpark();
    Ok(t)
}

/// A thread of init beside it (started by [`spawn_beside`]) that runs, in order, the work
/// init hands off: the network namespace while init builds the root ([`net::start`]),
/// then, once the root is built, the staging root's detach ([`rootfs::Detaching::start`])
/// and the Landlock rules ([`confine::Landlocking::start`]). One thread for all three:
/// each thread more cost init 0.06-0.1 ms to start (a stack to map, its first page
/// faults) on the path to the worker, and its start on the idle CPU a wake-up. The thread
/// keeps init's credentials from its start (after init's last change of ids); the
/// Landlock job drops its effective capabilities, so it comes last.
pub struct Helper {
    jobs: Option<std::sync::mpsc::Sender<Job>>,
    thread: std::thread::JoinHandle<()>,
}

type Job = Box<dyn FnOnce() + Send>;

impl Helper {
    pub fn start() -> io::Result<Helper> {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let thread = spawn_beside(
            std::thread::Builder::new()
                .name("helper".into())
                .stack_size(64 * 1024),
            move || {
                // A job that panics ends itself only: the thread lives until `jobs` is
                // dropped (its id stays valid for `run`), the job's captured ends tell
                // whoever waits on it.
                for job in queue {
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                }
            },
        )?;
        Ok(Helper {
            jobs: Some(jobs),
            thread,
        })
    }

    /// Queue `job` and let the thread run on the CPUs other than the caller's current one
    /// (the caller may have moved since the thread started; on the same CPU the two would
    /// take turns). False when the thread is gone, `job` then dropped without running.
    pub fn run(&self, job: impl FnOnce() + Send + 'static) -> bool {
        use std::os::unix::thread::JoinHandleExt;
        let Some(jobs) = &self.jobs else {
            return false;
        };
        if let Some(others) = others_than_here() {
            // SAFETY: the thread has not ended: it ends only once `jobs` is dropped (a
            // panicking job is caught), so its thread id is its own (an ended thread's
            // would be 0, the caller). The set is read for the call; a refusal leaves the
            // thread where it is.
            unsafe {
                libc::pthread_setaffinity_np(
                    self.thread.as_pthread_t(),
                    std::mem::size_of::<libc::cpu_set_t>(),
                    &others,
                );
            }
        }
        jobs.send(Box::new(job)).is_ok()
    }

    /// Wait for the jobs queued so far and end the thread.
    pub fn join(mut self) {
        drop(self.jobs.take());
        let _ = self.thread.join();
    }
}

/// The CPUs this thread may run on without the one it runs on now; None when there are
/// no others.
fn others_than_here() -> Option<libc::cpu_set_t> {
    cpus_here().map(|(_, others)| others)
}

/// The CPUs this thread may run on, and those without the one it runs on now; None when
/// there are no others.
fn cpus_here() -> Option<(libc::cpu_set_t, libc::cpu_set_t)> {
    // SAFETY: cpu_set_t is plain data; sched_getcpu and sched_getaffinity write only
    // into it.
    unsafe {
        let here = libc::sched_getcpu();
        let mut all: libc::cpu_set_t = std::mem::zeroed();
        if here < 0
            || libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut all) != 0
        {
            return None;
        }
        let mut others = all;
        libc::CPU_CLR(here as usize, &mut others);
        (libc::CPU_COUNT(&others) > 0).then_some((all, others))
    }
}

/// The cell's init started on another CPU than the supervisor's. A new process is queued
/// on its parent's CPU and waits there until the parent blocks (0.5 ms after the clone on
/// this 2-vCPU VM, the supervisor's work after the clone) while the other CPU idles. The
/// supervisor narrows init's CPUs to the others right after the clone ([`Spread::away`]);
/// init puts back the CPUs it was born with ([`Spread::restore`]) once released, before
/// anything of the cell exists, so the worker and the command get the supervisor's.
/// Best effort: on one allowed CPU, or when the kernel refuses, init stays where it is.
#[derive(Clone, Copy)]
pub struct Spread {
    /// The CPUs the supervisor may run on (init's, from its clone).
    all: libc::cpu_set_t,
    /// Those without the supervisor's current one.
    others: libc::cpu_set_t,
}

impl Spread {
    /// Before the clone: the CPUs, when there are others than this one.
    pub(crate) fn before_clone() -> Option<Spread> {
        cpus_here().map(|(all, others)| Spread { all, others })
    }

    /// In the supervisor, right after the clone: `init` (not released yet) may run on
    /// the other CPUs only, where it starts at once.
    pub(crate) fn away(&self, init: Pid) {
        // SAFETY: sched_setaffinity reads a set we own; a refusal only leaves init queued.
        unsafe {
            libc::sched_setaffinity(
                init.as_raw(),
                std::mem::size_of::<libc::cpu_set_t>(),
                &self.others,
            );
        }
    }

    /// In init, once released (the supervisor's [`Spread::away`] came before the
    /// release): its CPUs as they were at the clone.
    pub(crate) fn restore(&self) {
        // SAFETY: as above, for this process.
        unsafe {
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &self.all);
        }
    }
}

/// A kernel file (/proc, /sys) read whole: files that report size 0 and would otherwise
/// be read 32 bytes at a time at first (std's probe read), a system call each, on every
/// launch.
pub fn read_kernel_file(p: impl AsRef<std::path::Path>) -> io::Result<String> {
    let mut f = std::fs::File::open(p)?;
    // Not read_to_end: for a File it asks statx and lseek for a size hint first.
    let mut buf = vec![0u8; 16 * 1024];
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        match f.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(len);
    String::from_utf8(buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// The stack of a child started with `CLONE_VM` (the worker, the idmap helper): an
/// anonymous mapping with a guard page at the bottom (an overflow faults instead of
/// writing below it), unmapped on drop — only once its child has exec'd or exited.
#[derive(Debug)]
pub(crate) struct Stack {
    base: *mut libc::c_void,
    len: usize,
}

impl Stack {
    pub(crate) fn new(len: usize) -> io::Result<Stack> {
        // SAFETY: an anonymous private mapping; the result is checked.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the first page of the mapping made above.
        unsafe { libc::mprotect(base, 4096, libc::PROT_NONE) };
        Ok(Stack { base, len })
    }

    /// Where the child's stack pointer starts: the end of the mapping (stacks grow down;
    /// 16-byte aligned, as mmap returns pages).
    pub(crate) fn top(&self) -> *mut libc::c_void {
        // SAFETY: one past the end of the mapping, which `len` bytes long.
        unsafe { (self.base as *mut u8).add(self.len) as *mut libc::c_void }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`; its owner drops it only after the child that
        // ran on it has exec'd or exited.
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// Signals the supervisor forwards to the cell (and init to the worker).
pub const FORWARDED: &[Signal] = &[
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

pub fn forwarded_set() -> SigSet {
    let mut s = SigSet::empty();
    for sig in FORWARDED {
        s.add(*sig);
    }
    s
}

/// A cell that has been started.
#[derive(Debug)]
pub struct Cell {
    /// The cell's init, in the launcher's PID namespace.
    pub init: Pid,
    /// A pidfd for init (poll it to learn when the cell ended).
    pub pidfd: OwnedFd,
    /// Read end of the pipe on which init writes the worker's wait status.
    pub status: OwnedFd,
    /// The listening sockets init bound inside the cell (`Spec::listen`, same order).
    pub listeners: Vec<OwnedFd>,
    /// The master of the cell's terminal (`Spec::pty`).
    pub pty_master: Option<OwnedFd>,
    /// The seccomp listener of the container tier's `connect`s (`Spec::connect`), which
    /// the worker installed and passed out; served by [`notify::serve`].
    pub notify: Option<OwnedFd>,
}

/// The report code of init when the kernel refused the cell's network namespace (init's
/// thread makes it, see net::Making): turned into [`SpawnError::Clone`], as when the
/// clone itself is refused, so that the plan's fallback without namespaces applies.
pub(crate) const NETNS_REFUSED: i32 = 1125;

/// A failure reported by the cell before the command ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupFailure {
    /// 125 (taskcell), 126 (not executable) or 127 (not found).
    pub code: i32,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot create the cell's namespaces: {0}")]
    Clone(String),
    #[error("cannot put the cell into its cgroup: {0}")]
    Cgroup(String),
    #[error("cannot map the cell's ids to its host id: {0}")]
    Idmap(String),
    #[error("{0}")]
    Io(#[from] io::Error),
}

fn pipe_cloexec() -> io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)
}

/// Clone the cell. Must be called while the process is single-threaded: the child goes on
/// running this program's code without `exec` until the worker `execve`s.
///
/// Returns the running cell and, when the cell failed before `execve`, what it said.
pub fn spawn(spec: &Spec) -> Result<(Cell, Option<SetupFailure>), SpawnError> {
    spawn_with(spec, Placement::Outside, |_, _| Ok(AtRelease::default()))
}

/// How the cell's init gets into the cell's cgroup.
#[derive(Debug)]
pub enum Placement<'a> {
    /// `before_release` moves it (or there is no cgroup).
    Outside,
    /// Born there: clone3 with CLONE_INTO_CGROUP and this cgroup v2 directory (opened
    /// for reading); a plain clone when that is refused (`before_release` is told).
    CloneInto(std::os::fd::BorrowedFd<'a>),
    /// Init moves itself before it starts the worker, writing "0" to the cgroup v1 `tasks`
    /// files `before_release` returns (it makes the cgroup while init builds the root, see
    /// `CellCgroup::open_v1_tasks`); they come with the second release. Init moves out
    /// again through the parents' (`leave`) once everything else in the cell has ended.
    SelfMove,
}

/// What `before_release` gives init with its second release ([`Placement::SelfMove`]).
#[derive(Debug, Default)]
pub struct AtRelease {
    /// The `tasks` files of the cell's cgroup v1 directories, opened for writing.
    pub into: Vec<OwnedFd>,
    /// Those of their parents.
    pub leave: Vec<OwnedFd>,
}

/// [`spawn`], with `before_release` called with init's pid after the uid maps are written
/// and before the worker may start (the supervisor moves init into the cell's cgroup
/// there, or makes the cgroup init moves itself into, so the worker and everything it
/// starts are born inside it); it runs while init builds the cell's root. `placement`:
/// how init gets into the cell's cgroup other than by `before_release`; `before_release`
/// is told whether init is inside already (born there, or moving itself; false: a plain
/// `clone` was made after the kernel or a seccomp filter refused `clone3`).
pub fn spawn_with(
    spec: &Spec,
    placement: Placement<'_>,
    before_release: impl FnOnce(Pid, bool) -> Result<AtRelease, String>,
) -> Result<(Cell, Option<SetupFailure>), SpawnError> {
    let (into_cgroup, self_move) = match placement {
        Placement::Outside => (None, false),
        Placement::CloneInto(fd) => (Some(fd), false),
        Placement::SelfMove => (None, true),
    };
    // The releases: a byte, then a byte or (SelfMove) the `tasks` files to move through.
    let (sync_w, sync_r) = crate::cell::fdpass::pair()?;
    let (err_r, err_w) = pipe_cloexec()?;
    let (st_r, st_w) = pipe_cloexec()?;
    let lpair = if spec.listen.is_empty() {
        None
    } else {
        Some(crate::cell::fdpass::pair()?)
    };
    let tpair = match spec.pty {
        Some(_) => Some(crate::cell::fdpass::pair()?),
        None => None,
    };
    let npair = match spec.connect {
        Some(_) => Some(crate::cell::fdpass::pair()?),
        None => None,
    };

    // Root-started: the binds (idmapped where writable) are made by this (host root)
    // process after the clone, while init builds the rest of the root, and sent to it on
    // this socket (see rootfs::execute).
    let bpair = if spec.namespaces && spec.host_ids.is_some() {
        Some(crate::cell::fdpass::pair()?)
    } else {
        None
    };
    let mut flags = libc::CLONE_NEWUSER
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWCGROUP;
    if !spec.namespaces {
        // Best effort without user namespaces: a plain fork, confined by the worker's
        // Landlock, seccomp and no_new_privs only.
        flags = 0;
    }
    // No CLONE_NEWNET: init makes the network namespace in a thread beside its root
    // (net::Making), off this process's path.
    // Block the forwarded signals before the clone so that none is lost between the clone
    // and init's wait loop; the supervisor reads them from a signalfd.
    let mut old = SigSet::empty();
    nix::sys::signal::pthread_sigmask(
        nix::sys::signal::SigmaskHow::SIG_BLOCK,
        Some(&init::blocked_in_init()),
        Some(&mut old),
    )
    .map_err(io::Error::from)?;

    let spread = Spread::before_clone();
    let (ret, born_inside) = clone_cell(flags, into_cgroup);
    let inside = born_inside || self_move;
    if ret < 0 {
        let e = io::Error::last_os_error();
        let _ = nix::sys::signal::pthread_sigmask(
            nix::sys::signal::SigmaskHow::SIG_SETMASK,
            Some(&old),
            None,
        );
        return Err(SpawnError::Clone(userns::explain_clone_error(&e)));
    }
    if ret == 0 {
        // The cell's init. Never returns.
        drop(sync_w);
        drop(err_r);
        drop(st_r);
        let lsock = lpair.map(|(_, child)| child);
        let tsock = tpair.map(|(_, child)| child);
        let nsock = npair.map(|(_, child)| child);
        let socks = init::Socks {
            listen: lsock,
            tty: tsock,
            notify: nsock,
        };
        init::main(
            spec,
            init::Placing { spread, self_move },
            bpair.map(|(_, child)| child),
            sync_r,
            err_w,
            st_w,
            socks,
        );
    }
    let bsock = bpair.map(|(parent, _child)| parent);
    let lsock = lpair.map(|(parent, _child)| parent);
    let tsock = tpair.map(|(parent, _child)| parent);
    let nsock = npair.map(|(parent, _child)| parent);
    let pid = Pid::from_raw(ret as i32);
    if let Some(s) = &spread {
        s.away(pid);
    }
    drop(sync_r);
    drop(err_w);
    drop(st_w);

    let kill_child = || {
        let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(pid, None);
    };
    // A plain user's cell writes its own identity maps (see init::main).
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let pfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if pfd < 0 {
        let e = io::Error::last_os_error();
        kill_child();
        return Err(SpawnError::Io(io::Error::new(
            e.kind(),
            format!("pidfd_open for the cell's init: {e} (taskcell needs Linux 5.3 or later)"),
        )));
    }
    // SAFETY: pfd is a fresh fd we own.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pfd as RawFd) };
    // Root-started: init maps its ids to a host id other than its own, which only a
    // process with CAP_SETUID over the parent namespace (this one) may write.
    if let (Some(h), true) = (spec.host_ids, spec.namespaces) {
        let inner = (spec.process.uid, spec.process.gid);
        if let Err(e) = userns::write_maps(pid.as_raw(), inner, (h.uid, h.gid)) {
            kill_child();
            return Err(SpawnError::Idmap(e));
        }
    }
    // Release the child in two steps: it builds its root while `before_release` runs
    // (moving a process into a cgroup v1 hierarchy waits for an RCU grace period, several
    // milliseconds, which this overlaps with the mounts), and it forks the worker only
    // after the second byte, so the command never runs outside its cgroup.
    if let Err(e) = nix::unistd::write(&sync_w, b"g") {
        kill_child();
        return Err(SpawnError::Io(io::Error::from(e)));
    }
    // The binds, made while init mounts what comes before them; the helper children of
    // the idmaps are reaped once the cell is released.
    let mut reapers = Vec::new();
    if let Some(sock) = &bsock {
        // The cell's namespace, its maps written above: the idmap of the binds its ids
        // own (a helper's otherwise, see prepare_binds).
        let cell_userns = std::fs::File::open(format!("/proc/{}/ns/user", pid.as_raw()))
            .ok()
            .map(OwnedFd::from);
        match userns::prepare_binds(spec, cell_userns) {
            Ok(p) => {
                reapers = p.reapers;
                let fds: Vec<RawFd> = p.binds.iter().map(|t| t.as_raw_fd()).collect();
                for chunk in fds.chunks(crate::cell::fdpass::MAX_FDS) {
                    // A failed send is init gone (its own report is on the error pipe)
                    // or init told by the socket's end that the binds did not all come.
                    if crate::cell::fdpass::send(sock, chunk).is_err() {
                        break;
                    }
                }
            }
            Err(e) => {
                kill_child();
                return Err(SpawnError::Idmap(e));
            }
        }
    }
    drop(bsock);
    let at_release = match before_release(pid, inside) {
        Ok(a) => a,
        Err(e) => {
            kill_child();
            return Err(SpawnError::Cgroup(e));
        }
    };
    // A child whose setup failed has exited already; its report is on the error pipe.
    if self_move {
        let fds: Vec<RawFd> = (at_release.into.iter().chain(&at_release.leave))
            .map(|f| f.as_raw_fd())
            .collect();
        let _ = crate::cell::fdpass::send_with(&sync_w, at_release.into.len() as u32, &fds);
    } else {
        let _ = nix::unistd::write(&sync_w, b"w");
    }
    drop(at_release);
    drop(sync_w);
    drop(reapers);

    // Wait until the worker has exec'd (EOF) or reported a failure.
    let mut msg = Vec::new();
    let mut f = std::fs::File::from(err_r);
    let _ = f.read_to_end(&mut msg);
    let failure = parse_failure(&msg);
    if let Some(f) = failure.as_ref().filter(|f| f.code == NETNS_REFUSED) {
        kill_child();
        return Err(SpawnError::Clone(f.message.clone()));
    }
    let mut listeners = Vec::new();
    if let (Some(sock), None) = (&lsock, &failure) {
        listeners = crate::cell::fdpass::recv(sock)?;
        let want = spec.listen.len() + usize::from(spec.dns);
        if listeners.len() != want {
            kill_child();
            return Err(SpawnError::Io(io::Error::other(format!(
                "the cell passed {} of its {want} listening sockets",
                listeners.len(),
            ))));
        }
    }
    let mut pty_master = None;
    if let (Some(sock), None) = (&tsock, &failure) {
        pty_master = crate::cell::fdpass::recv(sock)?.into_iter().next();
        if pty_master.is_none() {
            kill_child();
            return Err(SpawnError::Io(io::Error::other(
                "the cell did not pass its terminal",
            )));
        }
    }
    let mut notify = None;
    if let (Some(sock), None) = (&nsock, &failure) {
        notify = crate::cell::fdpass::recv(sock)?.into_iter().next();
        if notify.is_none() {
            kill_child();
            return Err(SpawnError::Io(io::Error::other(
                "the cell did not pass its seccomp listener",
            )));
        }
    }
    Ok((
        Cell {
            init: pid,
            pidfd,
            status: st_r,
            listeners,
            pty_master,
            notify,
        },
        failure,
    ))
}

/// `struct clone_args` of clone3(2), up to `cgroup` (CLONE_ARGS_SIZE_VER2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// clone3(2)'s flag: the child starts in the cgroup v2 directory `CloneArgs::cgroup`.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Clone the cell's init with `flags` (namespaces), in fork semantics: returns the raw
/// result (the child's pid, 0 in the child, negative on failure with errno set) and
/// whether the child was born in `into_cgroup`. With a cgroup: clone3 with
/// CLONE_INTO_CGROUP first, and a plain clone when that is refused (clone3 unknown to
/// the kernel or filtered by a container's seccomp profile, the cgroup not taking
/// processes); a genuine namespace failure fails the plain clone too and is reported
/// from there.
fn clone_cell(flags: libc::c_int, into_cgroup: Option<std::os::fd::BorrowedFd<'_>>) -> (i64, bool) {
    if let Some(cg) = into_cgroup {
        let args = CloneArgs {
            flags: flags as u64 | CLONE_INTO_CGROUP,
            exit_signal: libc::SIGCHLD as u64,
            cgroup: cg.as_raw_fd() as u64,
            ..CloneArgs::default()
        };
        // SAFETY: clone3 without CLONE_VM and without a stack behaves like fork(): the
        // child gets a copy of the address space and continues here with 0. `args` is a
        // valid clone_args of the size passed, alive for the call. The caller guarantees
        // the process is single-threaded, so no lock is held by another thread.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &args as *const CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        if ret >= 0 {
            return (ret, true);
        }
        tracing::debug!(
            "clone3 into the cell's cgroup: {}; a plain clone, then a move",
            io::Error::last_os_error()
        );
    }
    // SAFETY: a raw clone without CLONE_VM behaves like fork(): the child gets a copy of
    // the address space and continues here with a return value of 0. The caller
    // guarantees the process is single-threaded, so no lock is held by another thread.
    let clone = |flags: libc::c_int| unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    let mut ret = clone(flags);
    if ret < 0
        && flags & libc::CLONE_NEWCGROUP != 0
        && io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL)
    {
        // gVisor (and other runtimes) refuse a cgroup namespace without a cgroup2 mount:
        // the cell goes without one (it then sees the cgroup paths of its own cgroup).
        tracing::debug!("clone with CLONE_NEWCGROUP: EINVAL; the cell gets no cgroup namespace");
        ret = clone(flags & !libc::CLONE_NEWCGROUP);
    }
    (ret, false)
}

fn parse_failure(msg: &[u8]) -> Option<SetupFailure> {
    if msg.is_empty() {
        return None;
    }
    let s = String::from_utf8_lossy(msg);
    let (code, message) = s.split_once('\t').unwrap_or(("125", &s));
    Some(SetupFailure {
        code: code.parse().unwrap_or(125),
        message: message.trim_end().to_string(),
    })
}

/// Write a failure report to the supervisor (from inside the cell).
pub(crate) fn report(fd: RawFd, code: i32, message: &str) {
    let line = format!("{code}\t{message}");
    // SAFETY: writing a buffer we own to an fd we hold; the result is best effort.
    unsafe {
        libc::write(fd, line.as_ptr().cast(), line.len());
    }
}

/// Read the worker's raw wait status that init sends before it exits.
pub fn read_status(cell: &Cell) -> Option<i32> {
    let mut buf = [0u8; 4];
    let n = nix::unistd::read(cell.status.as_raw_fd(), &mut buf).ok()?;
    (n == 4).then(|| i32::from_ne_bytes(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpus_of_this_thread() -> Vec<usize> {
        // SAFETY: cpu_set_t is plain data that sched_getaffinity fills in.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            assert_eq!(
                libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set),
                0
            );
            (0..libc::CPU_SETSIZE as usize)
                .filter(|&c| libc::CPU_ISSET(c, &set))
                .collect()
        }
    }

    /// The helper runs its jobs in order, and a job that panics ends only itself: the
    /// thread stays (its id is set again by every `run`, which must never be the id of an
    /// ended thread, the caller's own) and the next job runs.
    #[test]
    fn the_helper_runs_jobs_in_order_and_outlives_a_panicking_one() {
        let mine = cpus_of_this_thread();
        let h = Helper::start().expect("the helper");
        let (tx, rx) = std::sync::mpsc::channel();
        let t1 = tx.clone();
        assert!(h.run(move || t1.send(1).expect("send")));
        assert!(h.run(|| panic!("a job that panics")));
        let t3 = tx.clone();
        assert!(h.run(move || t3.send(3).expect("send")));
        let next = || rx.recv_timeout(std::time::Duration::from_secs(10));
        assert_eq!(next().expect("the first job"), 1);
        assert_eq!(next().expect("the job after the panic"), 3);
        assert!(h.run(move || tx.send(4).expect("send")));
        assert_eq!(next().expect("a job queued later"), 4);
        assert_eq!(cpus_of_this_thread(), mine, "the caller's CPUs changed");
        h.join();
    }

    /// A thread that ends before its creator sets its CPUs must not leave the creator
    /// pinned: `pthread_setaffinity_np` on an ended thread (thread id 0) set the
    /// caller's own CPUs, and a root-started cell's command then ran on one CPU in two
    /// launches of three. The thread also never runs on its creator's CPU.
    #[test]
    fn a_thread_started_beside_never_moves_its_caller() {
        let mine = cpus_of_this_thread();
        for i in 0..200 {
            // Every tenth: time enough for a thread that did not wait to end first.
            let pause = || std::thread::sleep(std::time::Duration::from_millis(2));
            let t = if i % 10 == 0 {
                spawn_beside_then(std::thread::Builder::new(), cpus_of_this_thread, pause)
            } else {
                spawn_beside(std::thread::Builder::new(), cpus_of_this_thread)
            }
            .expect("spawning a thread");
            let theirs = t.join().expect("the thread's CPUs");
            assert_eq!(cpus_of_this_thread(), mine, "the caller's CPUs changed");
            if mine.len() > 1 {
                assert_eq!(theirs.len(), mine.len() - 1, "{theirs:?} of {mine:?}");
                assert!(theirs.iter().all(|c| mine.contains(c)));
            }
        }
    }
}
