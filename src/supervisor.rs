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
    /// Limits the cell ran into (OOM kill, pids exhausted, CPU time, timeout).
    pub limit_hits: Vec<crate::limits::Hit>,
    /// How the limits were enforced in the end (rlimits stand in when the cgroup could
    /// not be created after all).
    pub enforcement: crate::limits::Enforcement,
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
    let mut spec = Spec {
        mounts,
        listen,
        net: plan.net.mode,
        process: plan.process.clone(),
        rlimits: plan.limits.rlimits.clone(),
        landlock: None,
        seccomp: None,
        namespaces: true,
    };
    let kernel = crate::layers::Kernel::probe();
    crate::layers::add_to_spec(&mut spec, plan, &kernel, &crate::cell::landlock::Mode::Cell);
    if plan.net.proxy.is_some() {
        crate::net::cell_landlock(&mut spec);
    }
    spec
}

/// Run a plan's command in a cell and wait for it. Must be called while the process is
/// single-threaded.
pub fn run(plan: &Plan) -> Result<Outcome, cell::SpawnError> {
    run_with(plan, &mut |_| {})
}

/// [`run`], telling `degraded` about a layer that had to be left out (only when the plan
/// is not strict; a strict plan fails instead).
pub fn run_with(
    plan: &Plan,
    degraded: &mut dyn FnMut(&crate::layers::Missing),
) -> Result<Outcome, cell::SpawnError> {
    run_session(plan, degraded, &crate::net::Session::default())
}

/// [`run_with`], with the session's identity and audit log for the network proxy.
pub fn run_session(
    plan: &Plan,
    degraded: &mut dyn FnMut(&crate::layers::Missing),
    session: &crate::net::Session,
) -> Result<Outcome, cell::SpawnError> {
    let mut spec = spec_of(plan);
    let (enforcement, mut cgroup) =
        cell::cgroup::prepare(&plan.limits.resources, plan.limits.timeout);
    // The human limits first; the profile's raw `[limits.rlimits]` after them, so they win.
    spec.rlimits = [enforcement.rlimits.clone(), spec.rlimits].concat();
    let start = Instant::now();
    let add_to_cgroup = |pid| match &cgroup {
        Some(cg) => cg.add(pid),
        None => Ok(()),
    };
    // Without user namespaces and not strict: run without namespaces (the private TMPDIR
    // is kept until the cell has ended).
    let mut _private_tmp: Option<tempfile::TempDir> = None;
    let (mut c, failure) = match cell::spawn_with(&spec, add_to_cgroup) {
        Ok(x) => x,
        Err(cell::SpawnError::Clone(msg)) if !plan.strict => {
            degraded(&crate::layers::no_userns(&msg));
            let (plain, tmp) = crate::layers::no_namespace_spec(plan, spec.clone())?;
            _private_tmp = Some(tmp);
            spec = plain;
            cell::spawn_with(&spec, add_to_cgroup)?
        }
        Err(cell::SpawnError::Clone(msg)) => {
            return Err(cell::SpawnError::Clone(format!(
                "{msg}; or pass --best-effort to run without namespaces, confined by Landlock and seccomp only"
            )))
        }
        Err(e) => return Err(e),
    };
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
    let mut limit_hits = match cgroup.as_mut() {
        Some(cg) => {
            let h = cg.hits();
            if let Err(e) = cg.remove() {
                tracing::warn!("{e}");
            }
            h
        }
        None => Vec::new(),
    };
    let signal = match ending {
        Ending::Signaled(s) => Some(s),
        _ => None,
    };
    let timeout = plan
        .limits
        .timeout
        .filter(|_| timed_out)
        .map(|t| (t, plan.limits.grace));
    limit_hits.extend(crate::limits::signal_hits(&spec.rlimits, signal, timeout));
    Ok(Outcome {
        ending,
        timed_out,
        duration,
        limit_hits,
        enforcement,
    })
}
