//! Terminating signals: blocked from taskcell's first instruction and read from a
//! signalfd, so that no signal whose default action ends a process can end the supervisor
//! between two steps (a secret fetched and not yet revoked, the cell running with nobody
//! to record its end). The supervisor turns each into the same orderly ending.
//!
//! Signals the launcher was started with as ignored (`nohup`, a background job of a
//! non-interactive shell) stay ignored. SIGPIPE stays ignored (Rust's runtime ignores it;
//! writes get EPIPE). Synchronous faults (SIGSEGV from a bad access) still end the
//! process: the kernel forces them through a blocked mask.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;

/// The blocked set, decided once at start (see [`block_at_start`]).
static SET: OnceLock<Set> = OnceLock::new();
/// A signalfd on [`SET`] that nobody reads: poll it to learn that one is pending.
static PENDING_FD: OnceLock<OwnedFd> = OnceLock::new();

/// A raw signal set (real-time signals included, which `nix::Signal` cannot name).
#[derive(Clone, Copy)]
pub struct Set(libc::sigset_t);

impl Set {
    fn empty() -> Set {
        // SAFETY: sigemptyset initialises the set we own.
        unsafe {
            let mut s: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut s);
            Set(s)
        }
    }

    pub fn add(&mut self, sig: i32) {
        // SAFETY: sigaddset on our set; an invalid or reserved number is ignored (EINVAL).
        unsafe {
            libc::sigaddset(&mut self.0, sig);
        }
    }

    pub fn contains(&self, sig: i32) -> bool {
        // SAFETY: sigismember only reads our set.
        unsafe { libc::sigismember(&self.0, sig) == 1 }
    }

    pub fn raw(&self) -> &libc::sigset_t {
        &self.0
    }
}

/// Every signal whose default action ends the process (terminate or core), real-time
/// signals included.
pub fn terminating_numbers() -> Vec<i32> {
    let mut v = vec![
        libc::SIGHUP,
        libc::SIGINT,
        libc::SIGQUIT,
        libc::SIGILL,
        libc::SIGTRAP,
        libc::SIGABRT,
        libc::SIGBUS,
        libc::SIGFPE,
        libc::SIGUSR1,
        libc::SIGSEGV,
        libc::SIGUSR2,
        libc::SIGALRM,
        libc::SIGTERM,
        libc::SIGSTKFLT,
        libc::SIGXCPU,
        libc::SIGXFSZ,
        libc::SIGVTALRM,
        libc::SIGPROF,
        libc::SIGIO,
        libc::SIGPWR,
        libc::SIGSYS,
    ];
    v.extend(libc::SIGRTMIN()..=libc::SIGRTMAX());
    v
}

fn is_ignored(sig: i32) -> bool {
    // SAFETY: sigaction with a null new action only reads the current disposition.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN
    }
}

/// Block every terminating signal that is not ignored, in the calling thread (call it
/// first in `main`, while single-threaded: every thread started later inherits the mask;
/// children started with `Command` get an empty mask, the cell's worker clears it).
/// Also opens the signalfd [`interrupted`] polls.
pub fn block_at_start() -> io::Result<()> {
    let mut set = Set::empty();
    for sig in terminating_numbers() {
        if !is_ignored(sig) {
            set.add(sig);
        }
    }
    // SAFETY: pthread_sigmask with a valid set; the old mask is not needed.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, set.raw(), std::ptr::null_mut()) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    let _ = SET.set(set);
    let fd = open_fd(&set)?;
    let _ = PENDING_FD.set(fd);
    Ok(())
}

/// Give the default dispositions back (commands other than `run`, which have nothing to
/// clean up and should end on a signal as any program does).
pub fn unblock() {
    if let Some(set) = SET.get() {
        // SAFETY: pthread_sigmask with a valid set.
        unsafe {
            libc::pthread_sigmask(libc::SIG_UNBLOCK, set.raw(), std::ptr::null_mut());
        }
    }
}

/// The set blocked at start (empty when [`block_at_start`] was not called).
pub fn blocked() -> Set {
    SET.get().copied().unwrap_or_else(Set::empty)
}

/// A close-on-exec, non-blocking signalfd for `set`.
pub fn open_fd(set: &Set) -> io::Result<OwnedFd> {
    // SAFETY: signalfd with -1 creates a new fd for a valid set.
    let fd = unsafe { libc::signalfd(-1, set.raw(), libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Read one signal from a signalfd made by [`open_fd`] (None: none pending).
pub fn read(fd: RawFd) -> Option<i32> {
    // SAFETY: signalfd_siginfo is plain data; read fills at most its size.
    unsafe {
        let mut info: libc::signalfd_siginfo = std::mem::zeroed();
        let n = libc::read(
            fd,
            (&mut info as *mut libc::signalfd_siginfo).cast(),
            std::mem::size_of::<libc::signalfd_siginfo>(),
        );
        (n == std::mem::size_of::<libc::signalfd_siginfo>() as isize)
            .then_some(info.ssi_signo as i32)
    }
}

/// A blocked terminating signal that is pending, without taking it (it stays pending for
/// the supervisor's wait loop).
pub fn pending() -> Option<i32> {
    let set = SET.get()?;
    // SAFETY: sigpending fills the set we own.
    let mut p = Set::empty();
    if unsafe { libc::sigpending(&mut p.0) } != 0 {
        return None;
    }
    terminating_numbers()
        .into_iter()
        .find(|s| set.contains(*s) && p.contains(*s))
}

/// The fd to poll next to a child's pipe: readable when a terminating signal is pending.
pub fn pending_fd() -> Option<RawFd> {
    PENDING_FD.get().map(|f| f.as_raw_fd())
}

/// Take a pending terminating signal (so that it is not handled twice).
pub fn take_pending() -> Option<i32> {
    let sig = pending()?;
    let mut one = Set::empty();
    one.add(sig);
    let fd = open_fd(&one).ok()?;
    read(fd.as_raw_fd())
}

/// A signal's name: `SIGTERM`, `SIGRTMIN+3`.
pub fn name(sig: i32) -> String {
    if (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&sig) {
        return format!("SIGRTMIN+{}", sig - libc::SIGRTMIN());
    }
    match nix::sys::signal::Signal::try_from(sig) {
        Ok(s) => s.as_str().to_string(),
        Err(_) => format!("signal {sig}"),
    }
}

/// The supervisor itself holds secret values: no core dump of it, and no ptrace or
/// /proc/PID/mem of it by the user's other processes.
pub fn harden_supervisor() {
    // SAFETY: getrlimit/setrlimit with a valid struct; prctl with integer arguments only.
    unsafe {
        // The soft limit only: the cell may still be given a `core` limit of its own.
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_CORE, &mut r) == 0 {
            r.rlim_cur = 0;
            libc::setrlimit(libc::RLIMIT_CORE, &r);
        }
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(name(libc::SIGTERM), "SIGTERM");
        assert_eq!(name(libc::SIGRTMIN() + 3), "SIGRTMIN+3");
        assert!(terminating_numbers().contains(&libc::SIGALRM));
        assert!(!terminating_numbers().contains(&libc::SIGCHLD));
        assert!(!terminating_numbers().contains(&libc::SIGPIPE));
    }
}
