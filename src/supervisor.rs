//! The supervisor: starts the cell, forwards signals, enforces the timeout, waits, and
//! turns the ending into an exit code.

use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::cell::{self, rootfs, Spec};
use crate::plan::Plan;

/// How a cell ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The command exited with this code.
    Exited(i32),
    /// The command was killed by this signal.
    Signaled(i32),
    /// taskcell or the kernel refused before the command ran (125/126/127).
    NotStarted { code: i32, message: String },
    /// The cell ended without reporting (its init was killed).
    Lost,
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub ending: Ending,
    pub timed_out: bool,
    pub duration: Duration,
}

impl Outcome {
    /// The exit code taskcell itself exits with.
    pub fn exit_code(&self) -> i32 {
        if self.timed_out {
            return 124;
        }
        match &self.ending {
            Ending::Exited(c) => *c,
            Ending::Signaled(s) => 128 + s,
            Ending::NotStarted { code, .. } => *code,
            Ending::Lost => 125,
        }
    }
}

/// The part of the plan the cell mechanism gets.
pub fn spec_of(plan: &Plan) -> Spec {
    let mut mounts = rootfs::mount_ops(&plan.paths);
    let mut listen = Vec::new();
    if let Some(p) = &plan.net.proxy {
        listen = p.listen_ports();
        crate::net::cell_mounts(&mut mounts);
    }
    Spec {
        mounts,
        net: plan.net.mode,
        process: plan.process.clone(),
        rlimits: plan.limits.rlimits.clone(),
        listen,
    }
}

/// Run a plan's command in a cell and wait for it. Must be called while the process is
/// single-threaded.
pub fn run(plan: &Plan) -> Result<Outcome, cell::SpawnError> {
    run_session(plan, &crate::net::Session::default())
}

/// [`run`], with the session's identity and audit log for the network proxy.
pub fn run_session(
    plan: &Plan,
    session: &crate::net::Session,
) -> Result<Outcome, cell::SpawnError> {
    let spec = spec_of(plan);
    let start = Instant::now();
    let (mut c, failure) = cell::spawn(&spec)?;
    // Threads may start now: the cell is cloned.
    let _net = match (&plan.net.proxy, &failure) {
        (Some(p), None) => Some(crate::net::start(
            p,
            std::mem::take(&mut c.listeners),
            session,
        )?),
        _ => None,
    };
    // The forwarded signals were blocked by spawn; read them from a signalfd.
    let sfd = SignalFd::with_flags(&cell::forwarded_set(), SfdFlags::SFD_CLOEXEC)
        .map_err(std::io::Error::from)?;

    let mut timed_out = false;
    let mut deadline = plan.limits.timeout.map(|t| start + t);
    let mut killed = false;
    loop {
        let timeout = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                PollTimeout::try_from(left.as_millis().min(i32::MAX as u128) as i32)
                    .unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::NONE,
        };
        let mut fds = [
            PollFd::new(c.pidfd.as_fd(), PollFlags::POLLIN),
            PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, timeout) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                tracing::warn!("poll: {e}");
                continue;
            }
            Ok(_) => {}
        }
        let exited = fds[0].revents().is_some_and(|r| !r.is_empty());
        let signaled = fds[1].revents().is_some_and(|r| !r.is_empty());
        if signaled {
            if let Ok(Some(info)) = sfd.read_signal() {
                if let Ok(sig) = Signal::try_from(info.ssi_signo as i32) {
                    tracing::debug!("forwarding {sig} to the cell");
                    let _ = nix::sys::signal::kill(c.init, sig);
                }
            }
        }
        if exited {
            break;
        }
        if let Some(d) = deadline {
            if Instant::now() >= d {
                if !timed_out {
                    timed_out = true;
                    tracing::debug!("timeout: SIGTERM to the command");
                    let _ = nix::sys::signal::kill(c.init, Signal::SIGTERM);
                    deadline = Some(Instant::now() + plan.limits.grace);
                } else if !killed {
                    killed = true;
                    tracing::debug!("grace period over: SIGKILL to the cell");
                    let _ = nix::sys::signal::kill(c.init, Signal::SIGKILL);
                    deadline = None;
                }
            }
        }
    }
    let _ = nix::sys::wait::waitpid(c.init, None);
    let duration = start.elapsed();
    let ending = if let Some(f) = failure {
        Ending::NotStarted {
            code: f.code,
            message: f.message,
        }
    } else {
        match cell::read_status(&c) {
            Some(st) if libc::WIFEXITED(st) => Ending::Exited(libc::WEXITSTATUS(st)),
            Some(st) if libc::WIFSIGNALED(st) => Ending::Signaled(libc::WTERMSIG(st)),
            _ => Ending::Lost,
        }
    };
    let _ = c.status.as_raw_fd();
    Ok(Outcome {
        ending,
        timed_out,
        duration,
    })
}
