//! The supervisor: starts the cell, forwards signals, enforces the timeout, waits, and
//! turns the ending into an exit code.

use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;

use crate::audit::Audit;
use crate::cell;
use crate::plan::{Access, Plan};
use crate::secrets::session::{SecretsError, Session};

pub use crate::outcome::{Ending, Outcome, EXIT_INIT_KILLED};

/// Without user namespaces (best effort): a private TMPDIR (0700) and, when the plan's home
/// is a private tmpfs, a private home inside it with links to the paths the plan grants
/// below the real home (e.g. `~/.cargo`), so tools find them as in a cell.
fn private_dirs(
    plan: &Plan,
) -> Result<(tempfile::TempDir, Option<std::path::PathBuf>), std::io::Error> {
    use std::os::unix::fs::PermissionsExt;
    let base = std::env::temp_dir();
    let tmp = tempfile::Builder::new()
        .prefix(&crate::state::private_tmp_prefix())
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
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o700))?;
    crate::state::note_private_tmp(tmp.path());
    if !crate::spec::home_is_private(plan) {
        return Ok((tmp, None));
    }
    let new_home = tmp.path().join("home");
    std::fs::create_dir(&new_home)?;
    for (link, target) in crate::spec::private_home_links(plan, &new_home) {
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if !link.exists() {
            std::os::unix::fs::symlink(&target, &link)?;
        }
    }
    Ok((tmp, Some(new_home)))
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Spawn(#[from] cell::SpawnError),
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    /// A terminating signal arrived before the command ran: what was fetched is revoked.
    #[error("stopped by {} before the command ran (secrets fetched so far were revoked)", crate::signals::name(*.0))]
    Stopped(i32),
}

impl RunError {
    /// The exit code: 128+N for a signal (as a shell reports it), else 125.
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Stopped(sig) => 128 + sig,
            _ => crate::EXIT_SETUP,
        }
    }
}

/// Run a plan's command in a cell and wait for it. Must be called while the process is
/// single-threaded.
pub fn run(plan: &Plan, audit: &mut Audit) -> Result<Outcome, RunError> {
    let tier = crate::plan::tier::decide(&cell::confine::machine(cell::userns::probe_for_run()));
    run_with(plan, &tier, audit, &mut |_| {})
}

/// [`run`], telling `degraded` about a layer that had to be left out (only when the plan
/// is not strict; a strict plan fails instead).
pub fn run_with(
    plan: &Plan,
    tier: &crate::plan::tier::TierReport,
    audit: &mut Audit,
    degraded: &mut dyn FnMut(&crate::spec::layers::Missing),
) -> Result<Outcome, RunError> {
    // Secrets are fetched now, just in time, before anything of the cell exists.
    // Whatever happens, the user's terminal is put back as it is now.
    let _term = crate::tty::TermGuard::save();
    let writable = crate::hostfile::writable_roots(plan);
    let mut secrets =
        match Session::prepare(&plan.secrets, &|k| std::env::var_os(k), &writable, audit) {
            Ok(s) => s,
            // A signal stopped a provider (or arrived while they ran): what was fetched has
            // been revoked by `prepare`.
            Err(e) => match crate::signals::pending() {
                Some(sig) => return Err(RunError::Stopped(sig)),
                None => return Err(e.into()),
            },
        };
    let mut handles = crate::spec::Handles::default();
    (handles.secrets, handles.stdio) = secrets.cell_parts();
    // Interactive: the command's own terminal, as large as the user's.
    if plan.process.pty {
        let ws = crate::tty::window_size(0);
        handles.pty = Some(cell::TermSize {
            rows: ws.map(|w| w.ws_row).filter(|r| *r > 0).unwrap_or(24),
            cols: ws.map(|w| w.ws_col).filter(|c| *c > 0).unwrap_or(80),
        });
    }
    // The cell never holds the user's terminal: without a pty, a terminal on stdin is
    // fed through a pipe, and terminal output goes through the relay (escapes filtered).
    let mut own_pipes = None;
    let mut stdin_pipe = None;
    if !plan.process.pty {
        if handles.stdio.is_none() && (isatty(1) || isatty(2)) {
            let p = crate::secrets::relay::Pipes::new()
                .map_err(|e| SecretsError(format!("creating the output relay pipes: {e}")))?;
            handles.stdio = Some((p.out_w.as_raw_fd(), p.err_w.as_raw_fd()));
            own_pipes = Some(p);
        }
        if isatty(0) {
            let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(|e| SecretsError(format!("creating the stdin pipe: {e}")))?;
            handles.stdin = Some(r.as_raw_fd());
            stdin_pipe = Some((r, w));
        }
    }
    // Injected credentials: the cell's CA and trust bundle, before the clone.
    let injector = match &plan.net.proxy {
        Some(p) if p.intercepts_any() => {
            let watched = secrets.watched_values();
            match crate::net::inject::Injector::new(
                p,
                secrets.take_injected(),
                watched,
                &audit.session,
            ) {
                Ok(i) => {
                    handles.ca_bundle = Some(i.bundle_path());
                    crate::state::note_file(&i.bundle_path());
                    Some(std::sync::Arc::new(i))
                }
                Err(e) => {
                    secrets.finish(audit, &[], &[], std::time::SystemTime::now());
                    return Err(SecretsError(format!("injected credentials: {e}")).into());
                }
            }
        }
        _ => None,
    };
    // A `proxy` cell's resolv.conf names its refusing resolver (kept until the clone).
    let _resolv = match &plan.net.proxy {
        Some(_) => match resolv_conf_file() {
            Ok(f) => {
                handles.resolv_conf = Some(f.path().to_path_buf());
                Some(f)
            }
            Err(e) => {
                secrets.finish(audit, &[], &[], std::time::SystemTime::now());
                return Err(cell::SpawnError::Io(e).into());
            }
        },
        None => None,
    };
    // The last moment a signal can stop the start without a cell to stop.
    if let Some(sig) = crate::signals::pending() {
        if let Some(i) = &injector {
            i.remove_bundle();
        }
        secrets.finish(audit, &[], &[], std::time::SystemTime::now());
        return Err(RunError::Stopped(sig));
    }
    let (enforcement, cgroup) = cell::cgroup::prepare(&plan.limits.resources, plan.limits.timeout);
    handles.limit_rlimits = enforcement.rlimits.clone();
    let (proxy, inject) = crate::spec::Offer::wanted(plan);
    let offer = cell::confine::offer(proxy, inject);
    // Started as root: the cell runs as one host id of the reserved range, held (flock)
    // until this function returns.
    let mut _lease = None;
    if let Some(r) = offer.host_ids.as_ref().map(|h| h.range) {
        match cell::userns::allocate(r.start, r.count) {
            Ok(l) => {
                handles.host_ids = Some(crate::spec::HostIds {
                    uid: l.id,
                    gid: l.id,
                });
                audit.record("host_ids", serde_json::json!({"uid": l.id, "gid": l.id}));
                _lease = Some(l);
            }
            Err(e) if plan.strict => {
                secrets.finish(audit, &[], &[], std::time::SystemTime::now());
                return Err(cell::SpawnError::Idmap(e).into());
            }
            Err(e) => degraded(&crate::spec::layers::no_host_ids(&e)),
        }
    }
    let mut spec = crate::spec::compile(plan, &offer, &handles);
    let since = std::time::SystemTime::now();
    let git_since = crate::leftover::start_time();
    let start = Instant::now();
    let add_to_cgroup = |pid| match &cgroup {
        Some(cg) => cg.add(pid),
        None => Ok(()),
    };
    // Without user namespaces and not strict: run without namespaces (the private TMPDIR
    // is kept until the cell has ended).
    let mut _private_tmp: Option<tempfile::TempDir> = None;
    let mut _tracking_cgroup: Option<cell::cgroup::CellCgroup> = None;
    // The probe found no user namespaces: straight to the cell without them (the
    // container tier, or none), without a clone that would fail.
    let mut spawned = if tier.userns {
        cell::spawn_with(&spec, add_to_cgroup)
    } else {
        Err(cell::SpawnError::Clone(
            tier.why.first().cloned().unwrap_or_default(),
        ))
    };
    if let (Err(cell::SpawnError::Idmap(msg)), false) = (&spawned, plan.strict) {
        // Best effort: a filesystem that cannot be idmapped gets today's identity map.
        degraded(&crate::spec::layers::no_host_ids(msg));
        if let Some(l) = &_lease {
            audit.record(
                "host_ids",
                serde_json::json!({"uid": 0, "gid": 0, "released": l.id}),
            );
        }
        _lease = None;
        handles.host_ids = None;
        spec = crate::spec::compile(plan, &offer, &handles);
        spawned = cell::spawn_with(&spec, add_to_cgroup);
    }
    let mut ran_in = crate::plan::tier::Tier::Full;
    let mut host_listeners: Vec<std::os::fd::OwnedFd> = Vec::new();
    let spawned = match spawned {
        // The tier left without namespaces is one the plan accepts.
        Err(cell::SpawnError::Clone(msg)) if tier.without_userns >= plan.security.require => {
            ran_in = tier.without_userns;
            degraded(&crate::spec::layers::no_userns(&msg));
            // The container tier's proxy listens on the supervisor's side, on ports the
            // kernel picks (the cell shares this network).
            if let (Some(p), true) = (&plan.net.proxy, offer.user_notif) {
                match bind_proxy_listeners(p.listen_ports().len()) {
                    Ok((fds, ports)) => {
                        handles.proxy_ports = Some(ports);
                        host_listeners = fds;
                    }
                    Err(e) => {
                        secrets.finish(audit, &[], &[], since);
                        return Err(cell::SpawnError::Io(e).into());
                    }
                }
            }
            match private_dirs(plan) {
                Ok((tmp, home)) => {
                    spec = crate::spec::without_namespaces(
                        plan,
                        &offer,
                        &handles,
                        tmp.path(),
                        home.as_deref(),
                        &cell::confine::list_dir,
                    );
                    _private_tmp = Some(tmp);
                    // No PID namespace ends what the command starts: a cgroup holds it
                    // (where one can be made), for a later start to kill after a SIGKILL.
                    if cgroup.is_none() {
                        _tracking_cgroup =
                            cell::cgroup::CellCgroup::tracking(&cell::cgroup::probe()).ok();
                    }
                    cell::spawn_with(&spec, |pid| match (&cgroup, &_tracking_cgroup) {
                        (Some(cg), _) => cg.add(pid),
                        (None, Some(t)) => {
                            // Tracking only: a cell that cannot be moved there still runs.
                            let _ = t.add(pid);
                            Ok(())
                        }
                        (None, None) => Ok(()),
                    })
                }
                Err(e) => Err(e.into()),
            }
        }
        Err(cell::SpawnError::Clone(msg)) => Err(cell::SpawnError::Clone(format!(
            "{msg}; without namespaces this machine gives the `{}` tier: pass {} to run there, confined by Landlock and seccomp only",
            tier.without_userns,
            if tier.without_userns == crate::plan::tier::Tier::Container { "--require container" } else { "--best-effort" }
        ))),
        other => other,
    };
    let relay_fds = secrets.after_spawn().or_else(|| {
        own_pipes.take().map(|p| {
            drop(p.out_w);
            drop(p.err_w);
            (p.out_r, p.err_r)
        })
    });
    if let Some((r, w)) = stdin_pipe.take() {
        drop(r);
        crate::tty::feed_stdin(w);
    }
    drop(_resolv);
    // The cell has bound the trust bundle (or failed): the host file is not needed.
    if let Some(i) = &injector {
        i.remove_bundle();
    }
    let (mut c, failure) = match spawned {
        Ok(x) => x,
        Err(e) => {
            secrets.finish(audit, &[], &[], since);
            return Err(e.into());
        }
    };
    if !host_listeners.is_empty() {
        c.listeners = std::mem::take(&mut host_listeners);
    }
    // Threads may start now: the cell is cloned. The container tier's connects.
    if let (Some(l), Some(rules)) = (c.notify.take(), spec.connect.clone()) {
        let sink = std::sync::Arc::new(crate::audit::Sink::new(audit.clone_file(), &audit.session));
        let refused: cell::notify::Refused = std::sync::Arc::new(move |v| {
            sink.record("connect_refused", v);
        });
        if let Err(e) = cell::notify::serve(l, rules, refused) {
            // Without its connect handler the cell's connects would hang: end it.
            let _ = nix::sys::signal::kill(c.init, Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(c.init, None);
            secrets.finish(audit, &[], &[], since);
            return Err(cell::SpawnError::Io(e).into());
        }
    }
    // The network proxy of a `proxy` cell.
    let session = crate::net::Session {
        // The proxy's threads count against the cell: no more connections at once than
        // the cell may have processes.
        max_connections: plan
            .limits
            .resources
            .processes
            .map_or(crate::net::MAX_CONNECTIONS, |p| {
                usize::try_from(p).unwrap_or(usize::MAX)
            }),
        id: audit.session.clone(),
        profile: plan.profile.clone(),
        command: plan.process.argv.clone(),
        audit: audit.clone_file(),
        inject: injector,
    };
    let _net = match (&plan.net.proxy, &failure) {
        (Some(p), None) => match crate::net::start(p, std::mem::take(&mut c.listeners), &session) {
            Ok(n) => Some(n),
            Err(e) => {
                // Without its proxy the cell must not run.
                let _ = nix::sys::signal::kill(c.init, Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(c.init, None);
                secrets.finish(audit, &[], &[], since);
                return Err(cell::SpawnError::Io(e).into());
            }
        },
        _ => None,
    };
    let redactor = secrets.redactor();
    let pty = c.pty_master.take();
    // Clipboard writes (OSC 52) reach the user's terminal only when the profile allows.
    crate::tty::allow_clipboard(plan.process.clipboard);
    // Network approvals for an interactive cell are asked on its terminal's bottom line.
    if let (Some(net), Some(master)) = (&_net, &pty) {
        net.shared.approvals.set_overlay(master.as_raw_fd());
    }
    // The user's terminal goes raw while the cell owns it (restored on every exit path).
    let _raw = match &pty {
        Some(_) if crate::tty::stdio_is_terminal() => crate::tty::RawMode::enter(0).ok(),
        _ => None,
    };
    // taskcell's own diagnostics would land in the cell's full-screen UI: queued until
    // it ends (and listed by `taskcell sessions` meanwhile).
    if _raw.is_some() {
        crate::display::hold_diagnostics();
    }
    // Threads may start now: the output relay, one per stream. Not scoped: a relay
    // stuck writing to a reader that stopped reading must not hold the ending back.
    let (tx, rx) = std::sync::mpsc::channel::<(i32, Vec<(String, u64)>)>();
    let mut relays: Vec<i32> = Vec::new();
    let mut input = None;
    let mut spawn_relay = |fd: i32, f: Box<dyn FnOnce() -> Vec<(String, u64)> + Send>| {
        let tx = tx.clone();
        let started = std::thread::Builder::new()
            .name(format!("relay-{fd}"))
            .spawn(move || {
                let _ = tx.send((fd, f()));
            });
        match started {
            Ok(_) => relays.push(fd),
            Err(e) => tracing::warn!("starting the output relay: {e}"),
        }
    };
    match (&pty, redactor, relay_fds) {
        (Some(master), r, _) => match crate::tty::Relay::new(master) {
            Ok(relay) => {
                let out = relay.output;
                spawn_relay(
                    1,
                    Box::new(move || match r {
                        Some(r) => crate::secrets::relay::relay(&r, out, 1),
                        None => crate::tty::copy_out(out, 1),
                    }),
                );
                input = Some(relay.input);
            }
            Err(e) => tracing::warn!("relaying the cell's terminal: {e}"),
        },
        (None, Some(r), Some((out_r, err_r))) => {
            let r2 = r.clone();
            spawn_relay(
                1,
                Box::new(move || crate::secrets::relay::relay(&r, out_r, 1)),
            );
            spawn_relay(
                2,
                Box::new(move || crate::secrets::relay::relay(&r2, err_r, 2)),
            );
        }
        // No secret to mask: a plain copy (to a terminal, with OSC 52 filtered).
        (None, None, Some((out_r, err_r))) => {
            spawn_relay(1, Box::new(move || crate::tty::copy_out(out_r, 1)));
            spawn_relay(2, Box::new(move || crate::tty::copy_out(err_r, 2)));
        }
        _ => {}
    }
    drop(tx);
    let input = input.and_then(|i| std::thread::Builder::new().spawn(move || i.run()).ok());
    let master = pty.as_ref().map(|m| m.as_raw_fd());
    let outcome = wait(
        plan,
        &spec.rlimits,
        c,
        failure,
        start,
        (enforcement, cgroup),
        master,
    );
    // The relays drain what the cell wrote. When the cell was stopped (timeout, signal)
    // they get until the timeout's end plus `grace` (at least half a second); a relay
    // still writing then has a reader that stopped reading: it is left behind.
    let forced = match &outcome {
        Ok(o) => o.timed_out || o.stopped_by.is_some(),
        Err(_) => true,
    };
    let drain_until = if forced {
        let end = plan
            .limits
            .timeout
            .and_then(|t| start.checked_add(t))
            .and_then(|t| t.checked_add(plan.limits.grace));
        let min = Instant::now() + Duration::from_millis(500);
        Some(end.map_or(min, |e| e.max(min)))
    } else {
        plan.limits
            .timeout
            .and_then(|t| start.checked_add(t))
            .and_then(|t| t.checked_add(plan.limits.grace))
    };
    let counts = drain_relays(&rx, &mut relays, drain_until);
    if !relays.is_empty() {
        drop_stuck_output(&relays);
    }
    if let Some(h) = input {
        if relays.is_empty() {
            let _ = h.join();
        }
    }
    drop(_raw);
    let held = crate::display::take_held();
    if !held.is_empty() {
        eprintln!("taskcell: while the cell ran:");
        for line in &held {
            eprintln!("  {line}");
        }
    }
    for text in crate::display::take_notices() {
        audit.record("notice", serde_json::json!({ "text": text }));
    }
    drop(_private_tmp);
    if let Some(net) = _net.as_ref().filter(|n| n.shared.plan.learn) {
        let rules = net.shared.learned.rules();
        let block = crate::net::learn::block(&rules);
        eprintln!("taskcell: --learn: the hosts this run connected to, for the profile:\n{block}");
        audit.record(
            "learned",
            serde_json::json!({ "allow": rules, "profile_block": block }),
        );
    }
    // Revocation and the leak scan run on every ending the supervisor survives.
    let roots: Vec<std::path::PathBuf> = plan
        .paths
        .iter()
        .filter(|r| r.access == Access::Write && r.symlink.is_none())
        .map(|r| r.path.clone())
        .collect();
    let f = secrets.finish(audit, &counts, &roots, since);
    let mut outcome = outcome?;
    outcome.tier = ran_in;
    outcome.leak_fail = f.leak_fail;
    outcome.scan_incomplete_fail = f.scan_incomplete_fail;
    // What the cell left for git outside to run: moved aside and reported.
    let protected: Vec<std::path::PathBuf> = plan
        .paths
        .iter()
        .filter(|r| r.access == Access::Protect)
        .map(|r| r.path.clone())
        .collect();
    let left = crate::leftover::check(&roots, &protected, &plan.home, git_since);
    for f in &left.findings {
        eprintln!("taskcell: {}", f.line());
        audit.record(
            "leftover",
            serde_json::json!({
                "path": f.path.display().to_string(),
                "what": f.what,
                "moved_to": f.moved_to.as_ref().map(|p| p.display().to_string()),
                "error": f.error,
            }),
        );
    }
    if let Some(why) = &left.incomplete {
        eprintln!("taskcell: warning: the check for git files the cell left was cut short: {why}");
    }
    outcome.leftover = !left.findings.is_empty();
    Ok(outcome)
}

/// `n` TCP listeners on 127.0.0.1 with ports the kernel picks (the container tier's
/// proxy and forwards), and their ports.
fn bind_proxy_listeners(n: usize) -> std::io::Result<(Vec<std::os::fd::OwnedFd>, Vec<u16>)> {
    let mut fds = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..n {
        let l = std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("binding the proxy's listener on 127.0.0.1: {e}"),
            )
        })?;
        ports.push(l.local_addr()?.port());
        fds.push(std::os::fd::OwnedFd::from(l));
    }
    Ok((fds, ports))
}

/// The host file bound over a `proxy` cell's /etc/resolv.conf (readable: the cell's
/// init binds it as the caller).
fn resolv_conf_file() -> std::io::Result<tempfile::NamedTempFile> {
    use std::io::Write;
    let mut f = tempfile::Builder::new()
        .prefix("taskcell-resolv-")
        .tempfile()?;
    f.write_all(crate::plan::net::RESOLV_CONF_TEXT.as_bytes())?;
    Ok(f)
}

/// Collect the relays' masked counts until each ended, `until` passed, or taskcell got a
/// terminating signal; `relays` keeps the fds of those still running.
fn drain_relays(
    rx: &std::sync::mpsc::Receiver<(i32, Vec<(String, u64)>)>,
    relays: &mut Vec<i32>,
    until: Option<Instant>,
) -> Vec<(String, u64)> {
    let mut counts = Vec::new();
    while !relays.is_empty() {
        let step = Duration::from_millis(100);
        let wait = match until {
            Some(u) => u.saturating_duration_since(Instant::now()).min(step),
            None => step,
        };
        match rx.recv_timeout(wait) {
            Ok((fd, c)) => {
                relays.retain(|r| *r != fd);
                counts.extend(c);
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                relays.clear();
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if until.is_some_and(|u| Instant::now() >= u) {
                    break;
                }
                if crate::signals::pending().is_some() {
                    break;
                }
            }
        }
    }
    counts
}

/// A relay is stuck writing to taskcell's stdout/stderr (nobody reads it): from here on
/// what taskcell would write there goes to /dev/null, so the ending (revocation, scan,
/// audit) never blocks on it. A stream that still takes output keeps it.
fn drop_stuck_output(stuck: &[i32]) {
    let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") else {
        return;
    };
    for fd in [1, 2] {
        // SAFETY: fds 1 and 2 are taskcell's own, open for the whole run.
        let bfd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let mut p = [PollFd::new(bfd, PollFlags::POLLOUT)];
        let writable = matches!(poll(&mut p, PollTimeout::ZERO), Ok(1))
            && p[0]
                .revents()
                .is_some_and(|r| r.contains(PollFlags::POLLOUT));
        if stuck.contains(&fd) || !writable {
            if fd == 1 && writable {
                eprintln!("taskcell: nobody reads taskcell's output: the rest of the cell's output is dropped");
            }
            // SAFETY: dup2 onto our own fd; the old file stays with the stuck writer.
            unsafe {
                libc::dup2(null.as_raw_fd(), fd);
            }
        }
    }
}

fn wait(
    plan: &Plan,
    rlimits: &[crate::plan::Rlimit],
    c: cell::Cell,
    failure: Option<cell::SetupFailure>,
    start: Instant,
    (enforcement, mut cgroup): (
        crate::plan::limits::Enforcement,
        Option<cell::cgroup::CellCgroup>,
    ),
    pty_master: Option<std::os::fd::RawFd>,
) -> Result<Outcome, RunError> {
    // The forwarded signals were blocked by spawn, every terminating one at start; read
    // them from a signalfd.
    let mut set = crate::signals::blocked();
    for sig in cell::FORWARDED {
        set.add(*sig as i32);
    }
    let sfd = crate::signals::open_fd(&set).map_err(cell::SpawnError::Io)?;

    let mut timed_out = false;
    // A terminating signal to taskcell: the cell is stopped (SIGTERM, SIGKILL after grace).
    let mut stopped_by: Option<i32> = None;
    let mut kill_at: Option<Instant> = None;
    let mut deadline = plan.limits.timeout.and_then(|t| start.checked_add(t));
    let mut killed = false;
    loop {
        let next = match (deadline, kill_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let timeout = match next {
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
            while let Some(signo) = crate::signals::read(sfd.as_raw_fd()) {
                let sig = Signal::try_from(signo).ok();
                match (sig, pty_master) {
                    // With its own terminal, the command learns of a resize from its
                    // terminal: copy the size, and the kernel signals the foreground.
                    (Some(Signal::SIGWINCH), Some(master)) => {
                        if let Some(ws) = crate::tty::window_size(0) {
                            let _ = crate::tty::set_window_size(master, &ws);
                        }
                    }
                    (
                        Some(Signal::SIGWINCH | Signal::SIGINT | Signal::SIGUSR1 | Signal::SIGUSR2),
                        _,
                    ) => {
                        // The command decides what these mean (an interrupted REPL goes on).
                        tracing::debug!("forwarding {} to the cell", crate::signals::name(signo));
                        let _ = nix::sys::signal::kill(c.init, sig);
                    }
                    _ => {
                        // Every other terminating signal ends the cell, in order: SIGTERM
                        // (or the signal itself when the command may handle it), SIGKILL
                        // after `grace`; then revocation and the end record as always.
                        let fwd = match sig {
                            Some(s @ (Signal::SIGTERM | Signal::SIGHUP | Signal::SIGQUIT)) => s,
                            _ => Signal::SIGTERM,
                        };
                        tracing::debug!(
                            "taskcell got {}: {fwd} to the cell",
                            crate::signals::name(signo)
                        );
                        let _ = nix::sys::signal::kill(c.init, fwd);
                        stopped_by.get_or_insert(signo);
                        if kill_at.is_none() {
                            kill_at = Some(
                                Instant::now()
                                    .checked_add(plan.limits.grace)
                                    .unwrap_or_else(Instant::now),
                            );
                        }
                    }
                }
            }
        }
        if exited {
            break;
        }
        if kill_at.is_some_and(|k| Instant::now() >= k) && !killed {
            killed = true;
            tracing::debug!("grace period over: SIGKILL to the cell");
            let _ = nix::sys::signal::kill(c.init, Signal::SIGKILL);
            kill_at = None;
            deadline = None;
        }
        if let Some(d) = deadline {
            if Instant::now() >= d {
                if !timed_out {
                    timed_out = true;
                    tracing::debug!("timeout: SIGTERM to the command");
                    let _ = nix::sys::signal::kill(c.init, Signal::SIGTERM);
                    // (Durations are at most MAX_DURATION; no overflow, and none would panic.)
                    deadline = Some(
                        Instant::now()
                            .checked_add(plan.limits.grace)
                            .unwrap_or_else(Instant::now),
                    );
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
    limit_hits.extend(crate::plan::limits::signal_hits(rlimits, signal, timeout));
    Ok(Outcome {
        ending,
        timed_out,
        duration,
        limit_hits,
        enforcement,
        leak_fail: false,
        scan_incomplete_fail: false,
        stopped_by,
        leftover: false,
        tier: crate::plan::tier::Tier::Full,
    })
}

fn isatty(fd: i32) -> bool {
    nix::unistd::isatty(fd).unwrap_or(false)
}
