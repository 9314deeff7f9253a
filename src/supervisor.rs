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
    // Whatever happens, the user's terminal is put back as it is now.
    let _term = crate::tty::TermGuard::save();
    let mut secrets = fetch_secrets(plan, audit)?;
    let mut handles = crate::spec::Handles::default();
    (handles.secrets, handles.stdio) = secrets.cell_parts();
    handles.pty = plan.process.pty.then(terminal_size);
    let BeforeClone {
        own_pipes,
        stdin_pipe,
        injector,
        resolv,
    } = before_clone(plan, audit, &mut secrets, &mut handles)?;
    let (mut enforcement, made) =
        cell::cgroup::prepare(&plan.limits.resources, plan.limits.timeout);
    let (cgroup, later) = match made {
        cell::cgroup::Made::None => (None, None),
        cell::cgroup::Made::Now(cg) => (Some(cg), None),
        cell::cgroup::Made::Later(l) => (None, Some(l)),
    };
    handles.limit_rlimits = enforcement.rlimits.clone();
    let (proxy, inject) = crate::spec::Offer::wanted(plan);
    let offer = cell::confine::offer(proxy, inject);
    // Started as root: the cell runs as one host id of the reserved range, held (flock)
    // until this function returns.
    let lease = match lease_host_ids(plan, &offer, audit, &mut handles, degraded) {
        Ok(l) => l,
        Err(e) => {
            secrets.finish(audit, &[], &[], std::time::SystemTime::now());
            return Err(e);
        }
    };
    let since = std::time::SystemTime::now();
    let git_since = crate::leftover::start_time();
    let start = Instant::now();
    let started = spawn_cell(
        plan,
        tier,
        &offer,
        &mut handles,
        (cgroup.as_ref(), later),
        lease,
        audit,
        degraded,
    );
    let relay_fds = secrets.after_spawn().or_else(|| {
        own_pipes.map(|p| {
            drop(p.out_w);
            drop(p.err_w);
            (p.out_r, p.err_r)
        })
    });
    if let Some((r, w)) = stdin_pipe {
        drop(r);
        crate::tty::feed_stdin(w);
    }
    drop(resolv);
    // The cell has bound the trust bundle (or failed): the host file is not needed.
    if let Some(i) = &injector {
        i.remove_bundle();
    }
    let Started {
        spec,
        cell: mut c,
        failure,
        private_tmp,
        tracking: _tracking,
        lease: _lease,
        ran_in,
        made,
        fallback,
    } = match started {
        Ok(x) => x,
        Err(e) => {
            secrets.finish(audit, &[], &[], since);
            return Err(e.into());
        }
    };
    // The cgroup made after the clone, or the rlimits that stood in when it could not be.
    let cgroup = cgroup.or(made);
    if let Some(e) = fallback {
        enforcement = e;
    }
    if let Err(e) = serve_connects(&spec, &mut c, audit) {
        secrets.finish(audit, &[], &[], since);
        return Err(e);
    }
    // The network proxy of a `proxy` cell.
    let net = match start_proxy(plan, audit, injector, &mut c, failure.is_some()) {
        Ok(n) => n,
        Err(e) => {
            secrets.finish(audit, &[], &[], since);
            return Err(e);
        }
    };
    let (pty, raw) = take_terminal(plan, net.as_ref(), &mut c);
    let mut relays = Relays::start(pty.as_ref(), secrets.redactor(), relay_fds);
    // The cgroups killed taskcells left are removed now, while the command runs: off the
    // start's path, where the supervisor's CPU is the one init's threads use.
    cell::cgroup::cleanup_stale(&cell::cgroup::probe());
    let master = pty.as_ref().map(|m| m.as_raw_fd());
    let (outcome, ended) = match wait(
        plan,
        &spec.rlimits,
        c,
        failure,
        start,
        (enforcement, cgroup),
        master,
        spec.namespaces,
    ) {
        Ok((o, ended)) => (Ok(o), ended),
        Err(e) => (Err(e), None),
    };
    let counts = relays.drain(plan, start, &outcome);
    drop(raw);
    report_held_diagnostics(audit);
    drop(private_tmp);
    if let Some(net) = net.as_ref().filter(|n| n.shared.plan.learn) {
        report_learned(net, audit);
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
    // taskcell's own package caches are left out of the walk for git's files: nothing
    // outside a cell runs git there (the leak scan above still reads them).
    let git_roots: Vec<std::path::PathBuf> = roots
        .iter()
        .filter(|r| !r.starts_with(&plan.cache))
        .cloned()
        .collect();
    outcome.leftover = check_leftovers(plan, &git_roots, audit, git_since);
    // Init's own exit (the namespaces' teardown) ran meanwhile; its cgroup goes now.
    if let Some(e) = ended {
        e.finish(&mut outcome);
    }
    Ok(outcome)
}

/// What is made for the cell before the clone besides the secrets: the output relay's and
/// stdin's pipes, the injector (CA and trust bundle), a `proxy` cell's resolv.conf.
struct BeforeClone {
    own_pipes: Option<crate::secrets::relay::Pipes>,
    stdin_pipe: Option<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)>,
    injector: Option<std::sync::Arc<crate::net::inject::Injector>>,
    resolv: Option<tempfile::NamedTempFile>,
}

/// Make [`BeforeClone`]'s parts into `handles`. On failure, or a terminating signal that
/// arrived meanwhile (the last moment one can stop the start without a cell to stop),
/// what was fetched is revoked.
fn before_clone(
    plan: &Plan,
    audit: &mut Audit,
    secrets: &mut Session,
    handles: &mut crate::spec::Handles,
) -> Result<BeforeClone, RunError> {
    let (own_pipes, stdin_pipe) = stdio_pipes(plan, handles)?;
    let fail = |secrets: &mut Session, audit: &mut Audit, e: RunError| {
        secrets.finish(audit, &[], &[], std::time::SystemTime::now());
        Err(e)
    };
    let injector = match start_injector(plan, secrets, audit, handles) {
        Ok(i) => i,
        Err(e) => return fail(secrets, audit, e),
    };
    // A `proxy` cell's resolv.conf names its refusing resolver (kept until the clone).
    let resolv = match plan
        .net
        .proxy
        .as_ref()
        .map(|_| resolv_conf_file())
        .transpose()
    {
        Ok(f) => f,
        Err(e) => return fail(secrets, audit, cell::SpawnError::Io(e).into()),
    };
    handles.resolv_conf = resolv.as_ref().map(|f| f.path().to_path_buf());
    if let Some(sig) = crate::signals::pending() {
        if let Some(i) = &injector {
            i.remove_bundle();
        }
        return fail(secrets, audit, RunError::Stopped(sig));
    }
    Ok(BeforeClone {
        own_pipes,
        stdin_pipe,
        injector,
        resolv,
    })
}

/// An interactive cell's terminal: its master, and the user's terminal in raw mode while
/// the cell owns it (restored when dropped, on every exit path).
fn take_terminal(
    plan: &Plan,
    net: Option<&crate::net::NetService>,
    c: &mut cell::Cell,
) -> (Option<std::os::fd::OwnedFd>, Option<crate::tty::RawMode>) {
    let pty = c.pty_master.take();
    // Clipboard writes (OSC 52) reach the user's terminal only when the profile allows.
    crate::tty::allow_clipboard(plan.process.clipboard);
    // Network approvals for an interactive cell are asked on its terminal's bottom line.
    if let (Some(net), Some(master)) = (net, &pty) {
        net.shared.approvals.set_overlay(master.as_raw_fd());
    }
    let raw = match &pty {
        Some(_) if crate::tty::stdio_is_terminal() => crate::tty::RawMode::enter(0).ok(),
        _ => None,
    };
    // taskcell's own diagnostics would land in the cell's full-screen UI: queued until
    // it ends (and listed by `taskcell sessions` meanwhile).
    if raw.is_some() {
        crate::display::hold_diagnostics();
    }
    (pty, raw)
}

/// Secrets are fetched now, just in time, before anything of the cell exists.
fn fetch_secrets(plan: &Plan, audit: &mut Audit) -> Result<Session, RunError> {
    // Resolved (realpath of each) only when a secret's source is checked against them.
    let writable = match plan.secrets.is_empty() {
        true => Vec::new(),
        false => crate::hostfile::writable_roots(plan),
    };
    match Session::prepare(&plan.secrets, &|k| std::env::var_os(k), &writable, audit) {
        Ok(s) => Ok(s),
        // A signal stopped a provider (or arrived while they ran): what was fetched has
        // been revoked by `prepare`.
        Err(e) => match crate::signals::pending() {
            Some(sig) => Err(RunError::Stopped(sig)),
            None => Err(e.into()),
        },
    }
}

/// Interactive: the command's own terminal, as large as the user's.
fn terminal_size() -> cell::TermSize {
    let ws = crate::tty::window_size(0);
    cell::TermSize {
        rows: ws.map(|w| w.ws_row).filter(|r| *r > 0).unwrap_or(24),
        cols: ws.map(|w| w.ws_col).filter(|c| *c > 0).unwrap_or(80),
    }
}

/// The output relay's pipes when taskcell made them itself, and the stdin pipe.
type StdioPipes = (
    Option<crate::secrets::relay::Pipes>,
    Option<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)>,
);

/// The cell never holds the user's terminal: without a pty, a terminal on stdin is fed
/// through a pipe, and terminal output goes through the relay (escapes filtered).
fn stdio_pipes(plan: &Plan, handles: &mut crate::spec::Handles) -> Result<StdioPipes, RunError> {
    let mut own_pipes = None;
    let mut stdin_pipe = None;
    if plan.process.pty {
        return Ok((own_pipes, stdin_pipe));
    }
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
    Ok((own_pipes, stdin_pipe))
}

/// Injected credentials: the cell's CA and trust bundle, made before the clone.
fn start_injector(
    plan: &Plan,
    secrets: &mut Session,
    audit: &Audit,
    handles: &mut crate::spec::Handles,
) -> Result<Option<std::sync::Arc<crate::net::inject::Injector>>, RunError> {
    let Some(p) = plan.net.proxy.as_ref().filter(|p| p.intercepts_any()) else {
        return Ok(None);
    };
    let watched = secrets.watched_values();
    let i = crate::net::inject::Injector::new(p, secrets.take_injected(), watched, &audit.session)
        .map_err(|e| SecretsError(format!("injected credentials: {e}")))?;
    handles.ca_bundle = Some(i.bundle_path());
    crate::state::note_file(&i.bundle_path());
    Ok(Some(std::sync::Arc::new(i)))
}

/// Started as root (in the initial user namespace): a host id of the reserved range for
/// the cell, recorded in the audit log. Without one, a strict plan fails and a best-effort
/// one runs with the identity map (`degraded` says so).
fn lease_host_ids(
    plan: &Plan,
    offer: &crate::spec::Offer,
    audit: &mut Audit,
    handles: &mut crate::spec::Handles,
    degraded: &mut dyn FnMut(&crate::spec::layers::Missing),
) -> Result<Option<cell::userns::Lease>, RunError> {
    let Some(r) = offer.host_ids.as_ref().map(|h| h.range) else {
        return Ok(None);
    };
    match cell::userns::allocate(r.start, r.count) {
        Ok(l) => {
            handles.host_ids = Some(crate::spec::HostIds {
                uid: l.id,
                gid: l.id,
            });
            audit.record("host_ids", serde_json::json!({"uid": l.id, "gid": l.id}));
            Ok(Some(l))
        }
        Err(e) if plan.strict => Err(cell::SpawnError::Idmap(e).into()),
        Err(e) => {
            degraded(&crate::spec::layers::no_host_ids(&e));
            Ok(None)
        }
    }
}

/// A started cell and what must live as long as it runs.
struct Started {
    /// The spec it runs.
    spec: crate::spec::Spec,
    cell: cell::Cell,
    failure: Option<cell::SetupFailure>,
    /// The private TMPDIR of a cell without namespaces (kept until the cell has ended).
    private_tmp: Option<tempfile::TempDir>,
    /// The cgroup that holds a cell without namespaces and without limits.
    tracking: Option<cell::cgroup::CellCgroup>,
    /// The host id's lease of a root-started cell.
    lease: Option<cell::userns::Lease>,
    /// The tier the cell runs in.
    ran_in: crate::plan::tier::Tier,
    /// The cell's cgroup when it was made after the clone (`cgroup::Made::Later`).
    made: Option<cell::cgroup::CellCgroup>,
    /// The enforcement when that cgroup could not be made (rlimits stand in).
    fallback: Option<crate::plan::limits::Enforcement>,
}

/// Compile the spec and clone the cell, with the fallbacks the plan allows: the identity
/// map when a filesystem cannot be idmapped (best effort), no namespaces when user
/// namespaces are not available and the tier left is one the plan accepts. Init is born
/// in the cell's cgroup where the kernel allows (cgroup v2); on cgroup v1 the cgroup is
/// made after the clone, while init builds the root, and init moves itself in before the
/// worker starts (rlimits stand in, and the cell is cloned again, when it cannot be
/// made); otherwise init is moved there by pid before the worker starts.
#[allow(clippy::too_many_arguments)]
fn spawn_cell(
    plan: &Plan,
    tier: &crate::plan::tier::TierReport,
    offer: &crate::spec::Offer,
    handles: &mut crate::spec::Handles,
    (cgroup, later): (
        Option<&cell::cgroup::CellCgroup>,
        Option<cell::cgroup::Later>,
    ),
    mut lease: Option<cell::userns::Lease>,
    audit: &mut Audit,
    degraded: &mut dyn FnMut(&crate::spec::layers::Missing),
) -> Result<Started, cell::SpawnError> {
    let v2_dir = cgroup.and_then(|cg| cg.open_v2_dir());
    // A cgroup v1 cell's cgroup is made after the clone, by `before_release` (while init
    // builds the root); what was made, or why it could not be, is kept here.
    let later = std::cell::RefCell::new(later);
    let made = std::cell::RefCell::new(None::<cell::cgroup::CellCgroup>);
    let unmade = std::cell::RefCell::new(None::<String>);
    let placement = || match (cgroup, &v2_dir) {
        (Some(_), Some(d)) => cell::Placement::CloneInto(d.as_fd()),
        _ if later.borrow().is_some() => cell::Placement::SelfMove,
        _ => cell::Placement::Outside,
    };
    let before_release = |pid, born_inside: bool| {
        if let Some(l) = later.borrow().as_ref() {
            let cg = l
                .make()
                .inspect_err(|why| *unmade.borrow_mut() = Some(why.clone()))?;
            let into = cg.open_v1_tasks().ok_or_else(|| {
                let why = format!("opening the tasks files of cgroup {}", cg.name);
                *unmade.borrow_mut() = Some(why.clone());
                why
            })?;
            let leave = cg.open_v1_parent_tasks().unwrap_or_default();
            *made.borrow_mut() = Some(cg);
            return Ok(cell::AtRelease { into, leave });
        }
        if let (Some(cg), false) = (cgroup, born_inside) {
            cg.add(pid)?;
        }
        Ok(cell::AtRelease::default())
    };
    // The cgroup made after the clone could not be: rlimits stand in (as when it cannot
    // be made before), the spec is compiled again with them and the cell cloned again.
    let mut fallback = None;
    let mut stand_in = |handles: &mut crate::spec::Handles| {
        let why = unmade.borrow_mut().take()?;
        let l = later.borrow_mut().take()?;
        let e = l.fallback(&why);
        handles.limit_rlimits = e.rlimits.clone();
        fallback = Some(e);
        Some(())
    };
    let mut spec = crate::spec::compile(plan, offer, handles);
    // The probe found no user namespaces: straight to the cell without them (the
    // container tier, or none), without a clone that would fail.
    let mut spawned = if tier.userns {
        cell::spawn_with(&spec, placement(), before_release)
    } else {
        Err(cell::SpawnError::Clone(
            tier.why.first().cloned().unwrap_or_default(),
        ))
    };
    if let (Err(cell::SpawnError::Cgroup(_)), Some(())) = (&spawned, stand_in(handles)) {
        spec = crate::spec::compile(plan, offer, handles);
        spawned = cell::spawn_with(&spec, placement(), before_release);
    }
    if let (Err(cell::SpawnError::Idmap(msg)), false) = (&spawned, plan.strict) {
        // Best effort: a filesystem that cannot be idmapped gets today's identity map.
        degraded(&crate::spec::layers::no_host_ids(msg));
        if let Some(l) = &lease {
            audit.record(
                "host_ids",
                serde_json::json!({"uid": 0, "gid": 0, "released": l.id}),
            );
        }
        lease = None;
        handles.host_ids = None;
        // A cgroup made for the failed clone goes with it; the next one makes its own.
        drop(made.borrow_mut().take());
        spec = crate::spec::compile(plan, offer, handles);
        spawned = cell::spawn_with(&spec, placement(), before_release);
    }
    let mut ran_in = crate::plan::tier::Tier::Full;
    let mut private_tmp = None;
    let mut tracking = None;
    let mut host_listeners = Vec::new();
    let (cell, failure) = match spawned {
        // The tier left without namespaces is one the plan accepts.
        Err(cell::SpawnError::Clone(msg)) if tier.without_userns >= plan.security.require => {
            ran_in = tier.without_userns;
            degraded(&crate::spec::layers::no_userns(&msg));
            // The container tier's proxy listens on the supervisor's side, on ports the
            // kernel picks (the cell shares this network).
            if let (Some(p), true) = (&plan.net.proxy, offer.user_notif) {
                let (fds, ports) = bind_proxy_listeners(p.listen_ports().len())?;
                handles.proxy_ports = Some(ports);
                host_listeners = fds;
            }
            // A cgroup v1 cell's cgroup, not made yet (the clone failed first): made now,
            // init is moved into it by pid.
            if let Some(l) = later.borrow_mut().take() {
                match l.make() {
                    Ok(cg) => *made.borrow_mut() = Some(cg),
                    Err(why) => {
                        let e = l.fallback(&why);
                        handles.limit_rlimits = e.rlimits.clone();
                        fallback = Some(e);
                    }
                }
            }
            let late = made.borrow_mut().take();
            let holder = cgroup.or(late.as_ref());
            let (tmp, home) = private_dirs(plan)?;
            spec = crate::spec::without_namespaces(
                plan,
                offer,
                handles,
                tmp.path(),
                home.as_deref(),
                &cell::confine::list_dir,
            );
            private_tmp = Some(tmp);
            // No PID namespace ends what the command starts: a cgroup holds it (where
            // one can be made), for a later start to kill after a SIGKILL.
            if holder.is_none() {
                tracking = cell::cgroup::CellCgroup::tracking(&cell::cgroup::probe()).ok();
            }
            let t = tracking.as_ref();
            let spawned = cell::spawn_with(&spec, cell::Placement::Outside, |pid, _| {
                match (holder, t) {
                    (Some(cg), _) => cg.add(pid)?,
                    // Tracking only: a cell that cannot be moved there still runs.
                    (None, Some(t)) => drop(t.add(pid)),
                    (None, None) => {}
                }
                Ok(cell::AtRelease::default())
            });
            *made.borrow_mut() = late;
            spawned
        }
        Err(cell::SpawnError::Clone(msg)) => Err(cell::SpawnError::Clone(format!(
            "{msg}; without namespaces this machine gives the `{}` tier: pass {} to run there, confined by Landlock and seccomp only",
            tier.without_userns,
            if tier.without_userns == crate::plan::tier::Tier::Container { "--require container" } else { "--best-effort" }
        ))),
        other => other,
    }?;
    let mut cell = cell;
    if !host_listeners.is_empty() {
        cell.listeners = host_listeners;
    }
    Ok(Started {
        spec,
        cell,
        failure,
        private_tmp,
        tracking,
        lease,
        ran_in,
        made: made.into_inner(),
        fallback,
    })
}

/// Threads may start now: the cell is cloned. The container tier's connects, answered
/// from the seccomp listener the worker passed out. Without its connect handler the
/// cell's connects would hang: it is ended when the handler cannot start.
fn serve_connects(
    spec: &crate::spec::Spec,
    c: &mut cell::Cell,
    audit: &Audit,
) -> Result<(), RunError> {
    let (Some(l), Some(rules)) = (c.notify.take(), spec.connect.clone()) else {
        return Ok(());
    };
    let sink = std::sync::Arc::new(crate::audit::Sink::new(audit.clone_file(), &audit.session));
    let refused: cell::notify::Refused = std::sync::Arc::new(move |v| {
        sink.record("connect_refused", v);
    });
    if let Err(e) = cell::notify::serve(l, rules, refused) {
        let _ = nix::sys::signal::kill(c.init, Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(c.init, None);
        return Err(cell::SpawnError::Io(e).into());
    }
    Ok(())
}

/// The network proxy of a `proxy` cell, serving the listeners init passed. Without its
/// proxy the cell must not run: it is killed when the proxy cannot start.
fn start_proxy(
    plan: &Plan,
    audit: &Audit,
    injector: Option<std::sync::Arc<crate::net::inject::Injector>>,
    c: &mut cell::Cell,
    failed: bool,
) -> Result<Option<crate::net::NetService>, RunError> {
    let Some(p) = plan.net.proxy.as_ref().filter(|_| !failed) else {
        return Ok(None);
    };
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
    match crate::net::start(p, std::mem::take(&mut c.listeners), &session) {
        Ok(n) => Ok(Some(n)),
        Err(e) => {
            let _ = nix::sys::signal::kill(c.init, Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(c.init, None);
            Err(cell::SpawnError::Io(e).into())
        }
    }
}

/// taskcell's diagnostics queued while the cell owned the screen, printed now; notices
/// go to the audit log.
fn report_held_diagnostics(audit: &mut Audit) {
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
}

/// `--learn`: the hosts this run connected to, as a profile block.
fn report_learned(net: &crate::net::NetService, audit: &mut Audit) {
    let rules = net.shared.learned.rules();
    let block = crate::net::learn::block(&rules);
    eprintln!("taskcell: --learn: the hosts this run connected to, for the profile:\n{block}");
    audit.record(
        "learned",
        serde_json::json!({ "allow": rules, "profile_block": block }),
    );
}

/// What the cell left for git outside to run: moved aside and reported. True when it
/// left something.
fn check_leftovers(
    plan: &Plan,
    roots: &[std::path::PathBuf],
    audit: &mut Audit,
    git_since: std::time::SystemTime,
) -> bool {
    let protected: Vec<std::path::PathBuf> = plan
        .paths
        .iter()
        .filter(|r| r.access == Access::Protect)
        .map(|r| r.path.clone())
        .collect();
    let left = crate::leftover::check(roots, &protected, &plan.home, git_since);
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
    !left.findings.is_empty()
}

/// The output relay threads, one per stream (or one for a pty), and the pty's input.
/// Not scoped: a relay stuck writing to a reader that stopped reading must not hold the
/// ending back.
struct Relays {
    rx: std::sync::mpsc::Receiver<(i32, Vec<(String, u64)>)>,
    /// The fds of the relays still running.
    running: Vec<i32>,
    input: Option<std::thread::JoinHandle<()>>,
}

impl Relays {
    /// Threads may start now: the cell is cloned.
    fn start(
        pty: Option<&std::os::fd::OwnedFd>,
        redactor: Option<std::sync::Arc<crate::secrets::redact::Redactor>>,
        relay_fds: Option<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)>,
    ) -> Relays {
        let (tx, rx) = std::sync::mpsc::channel::<(i32, Vec<(String, u64)>)>();
        let mut running: Vec<i32> = Vec::new();
        let mut input = None;
        let mut spawn_relay = |fd: i32, f: Box<dyn FnOnce() -> Vec<(String, u64)> + Send>| {
            let tx = tx.clone();
            let started = std::thread::Builder::new()
                .name(format!("relay-{fd}"))
                .spawn(move || {
                    let _ = tx.send((fd, f()));
                });
            match started {
                Ok(_) => running.push(fd),
                Err(e) => tracing::warn!("starting the output relay: {e}"),
            }
        };
        match (pty, redactor, relay_fds) {
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
        Relays { rx, running, input }
    }

    /// The relays drain what the cell wrote. When the cell was stopped (timeout, signal)
    /// they get until the timeout's end plus `grace` (at least half a second); a relay
    /// still writing then has a reader that stopped reading: it is left behind. Returns
    /// the masked counts.
    fn drain(
        &mut self,
        plan: &Plan,
        start: Instant,
        outcome: &Result<Outcome, RunError>,
    ) -> Vec<(String, u64)> {
        let forced = match outcome {
            Ok(o) => o.timed_out || o.stopped_by.is_some(),
            Err(_) => true,
        };
        let end = plan
            .limits
            .timeout
            .and_then(|t| start.checked_add(t))
            .and_then(|t| t.checked_add(plan.limits.grace));
        let drain_until = if forced {
            let min = Instant::now() + Duration::from_millis(500);
            Some(end.map_or(min, |e| e.max(min)))
        } else {
            end
        };
        let counts = drain_relays(&self.rx, &mut self.running, drain_until);
        if !self.running.is_empty() {
            drop_stuck_output(&self.running);
        }
        if let Some(h) = self.input.take() {
            if self.running.is_empty() {
                let _ = h.join();
            }
        }
        counts
    }
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

/// What is left of a cell whose command's status came before init's exit: init (being
/// torn down with the cell's namespaces, everything else in the cell already reaped by
/// it) and the cell's cgroup. [`Ended::finish`] reaps init and removes the cgroup once the
/// supervisor's own work after the cell is done, so that the kernel's teardown of the
/// namespaces runs alongside it instead of before it.
struct Ended {
    init: nix::unistd::Pid,
    cgroup: Option<cell::cgroup::CellCgroup>,
}

impl Ended {
    fn finish(mut self, outcome: &mut Outcome) {
        // Init has left its cgroup v1 hierarchies (see init::wait_loop): they go while its
        // exit tears the namespaces down; the limit hits are read first.
        let hits = self.cgroup.as_ref().map(|cg| cg.hits()).unwrap_or_default();
        if let Some(cg) = self.cgroup.as_mut() {
            cg.remove_emptied();
        }
        let _ = nix::sys::wait::waitpid(self.init, None);
        outcome.limit_hits.splice(0..0, hits);
        if let Some(cg) = self.cgroup.as_mut() {
            if let Err(e) = cg.remove() {
                tracing::warn!("{e}");
            }
        }
    }
}

/// The cgroup's limit hits, then the cgroup removed (its processes have all exited).
fn remove_cgroup(cgroup: Option<&mut cell::cgroup::CellCgroup>) -> Vec<crate::plan::limits::Hit> {
    match cgroup {
        Some(cg) => {
            let h = cg.hits();
            if let Err(e) = cg.remove() {
                tracing::warn!("{e}");
            }
            h
        }
        None => Vec::new(),
    }
}

#[allow(clippy::too_many_arguments)]
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
    namespaces: bool,
) -> Result<(Outcome, Option<Ended>), RunError> {
    // The forwarded signals were blocked by spawn, every terminating one at start; read
    // them from a signalfd.
    let mut set = crate::signals::blocked();
    for sig in cell::FORWARDED {
        set.add(*sig as i32);
    }
    let sfd = crate::signals::open_fd(&set).map_err(cell::SpawnError::Io)?;
    let mut stop = Stopper::new(plan, start);
    // With namespaces, init reaps everything in the cell before it writes the command's
    // status (see init::wait_loop): the status alone says the cell has ended.
    let mut status_ends = namespaces && failure.is_none();
    let mut early = false;
    loop {
        let mut fds = vec![
            PollFd::new(c.pidfd.as_fd(), PollFlags::POLLIN),
            PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
        ];
        if status_ends {
            fds.push(PollFd::new(c.status.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, stop.poll_timeout()) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                tracing::warn!("poll: {e}");
                continue;
            }
            Ok(_) => {}
        }
        let exited = fds[0].revents().is_some_and(|r| !r.is_empty());
        let signaled = fds[1].revents().is_some_and(|r| !r.is_empty());
        let status = fds.get(2).and_then(|f| f.revents());
        if signaled {
            while let Some(signo) = crate::signals::read(sfd.as_raw_fd()) {
                stop.on_signal(signo, c.init, pty_master);
            }
        }
        if exited {
            break;
        }
        match status {
            Some(r) if r.contains(PollFlags::POLLIN) => {
                early = true;
                break;
            }
            // Closed without a status (init was killed): its exit is what ends the wait.
            Some(r) if !r.is_empty() => status_ends = false,
            _ => {}
        }
        stop.on_clock(c.init);
    }
    if !early {
        let _ = nix::sys::wait::waitpid(c.init, None);
    }
    let duration = start.elapsed();
    let ending = ending_of(&c, failure);
    let ended = early.then(|| Ended {
        init: c.init,
        cgroup: cgroup.take(),
    });
    let mut limit_hits = remove_cgroup(cgroup.as_mut());
    let signal = match ending {
        Ending::Signaled(s) => Some(s),
        _ => None,
    };
    let timeout = plan
        .limits
        .timeout
        .filter(|_| stop.timed_out)
        .map(|t| (t, plan.limits.grace));
    limit_hits.extend(crate::plan::limits::signal_hits(rlimits, signal, timeout));
    Ok((
        Outcome {
            ending,
            timed_out: stop.timed_out,
            duration,
            limit_hits,
            enforcement,
            leak_fail: false,
            scan_incomplete_fail: false,
            stopped_by: stop.stopped_by,
            leftover: false,
            tier: crate::plan::tier::Tier::Full,
        },
        ended,
    ))
}

/// How the cell ended: its setup failure, or the worker's wait status init reported.
fn ending_of(c: &cell::Cell, failure: Option<cell::SetupFailure>) -> Ending {
    if let Some(f) = failure {
        return Ending::NotStarted {
            code: f.code,
            message: f.message,
        };
    }
    match cell::read_status(c) {
        Some(st) if libc::WIFEXITED(st) => Ending::Exited(libc::WEXITSTATUS(st)),
        Some(st) if libc::WIFSIGNALED(st) => Ending::Signaled(libc::WTERMSIG(st)),
        _ => Ending::Lost,
    }
}

/// The supervisor's side of stopping a cell while it waits: the timeout (SIGTERM to the
/// command, SIGKILL after `grace`), a terminating signal to taskcell (the same, in
/// order), and the signals the command decides about itself (forwarded).
struct Stopper {
    grace: Duration,
    timed_out: bool,
    /// A terminating signal to taskcell: the cell is stopped (SIGTERM, SIGKILL after grace).
    stopped_by: Option<i32>,
    kill_at: Option<Instant>,
    /// The timeout, then the end of its grace period.
    deadline: Option<Instant>,
    killed: bool,
}

impl Stopper {
    fn new(plan: &Plan, start: Instant) -> Stopper {
        Stopper {
            grace: plan.limits.grace,
            timed_out: false,
            stopped_by: None,
            kill_at: None,
            deadline: plan.limits.timeout.and_then(|t| start.checked_add(t)),
            killed: false,
        }
    }

    /// Now plus `grace` (durations are at most MAX_DURATION; no overflow, and none would
    /// panic).
    fn after_grace(&self) -> Instant {
        Instant::now()
            .checked_add(self.grace)
            .unwrap_or_else(Instant::now)
    }

    /// How long poll may sleep: until the next deadline, or forever.
    fn poll_timeout(&self) -> PollTimeout {
        let next = match (self.deadline, self.kill_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match next {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                PollTimeout::try_from(left.as_millis().min(i32::MAX as u128) as i32)
                    .unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::NONE,
        }
    }

    /// A signal taskcell got while the cell runs.
    fn on_signal(
        &mut self,
        signo: i32,
        init: nix::unistd::Pid,
        pty_master: Option<std::os::fd::RawFd>,
    ) {
        let sig = Signal::try_from(signo).ok();
        match (sig, pty_master) {
            // With its own terminal, the command learns of a resize from its
            // terminal: copy the size, and the kernel signals the foreground.
            (Some(Signal::SIGWINCH), Some(master)) => {
                if let Some(ws) = crate::tty::window_size(0) {
                    let _ = crate::tty::set_window_size(master, &ws);
                }
            }
            (Some(Signal::SIGWINCH | Signal::SIGINT | Signal::SIGUSR1 | Signal::SIGUSR2), _) => {
                // The command decides what these mean (an interrupted REPL goes on).
                tracing::debug!("forwarding {} to the cell", crate::signals::name(signo));
                let _ = nix::sys::signal::kill(init, sig);
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
                let _ = nix::sys::signal::kill(init, fwd);
                self.stopped_by.get_or_insert(signo);
                if self.kill_at.is_none() {
                    self.kill_at = Some(self.after_grace());
                }
            }
        }
    }

    /// The clock after each wake-up: the end of a grace period (SIGKILL) or the timeout
    /// (SIGTERM to the command, and the grace period starts).
    fn on_clock(&mut self, init: nix::unistd::Pid) {
        if self.kill_at.is_some_and(|k| Instant::now() >= k) && !self.killed {
            self.killed = true;
            tracing::debug!("grace period over: SIGKILL to the cell");
            let _ = nix::sys::signal::kill(init, Signal::SIGKILL);
            self.kill_at = None;
            self.deadline = None;
        }
        let Some(d) = self.deadline else {
            return;
        };
        if Instant::now() < d {
            return;
        }
        if !self.timed_out {
            self.timed_out = true;
            tracing::debug!("timeout: SIGTERM to the command");
            let _ = nix::sys::signal::kill(init, Signal::SIGTERM);
            self.deadline = Some(self.after_grace());
        } else if !self.killed {
            self.killed = true;
            tracing::debug!("grace period over: SIGKILL to the cell");
            let _ = nix::sys::signal::kill(init, Signal::SIGKILL);
            self.deadline = None;
        }
    }
}

fn isatty(fd: i32) -> bool {
    nix::unistd::isatty(fd).unwrap_or(false)
}
