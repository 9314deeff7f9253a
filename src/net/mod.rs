//! The network boundary of `proxy` mode, served by the supervisor from outside the cell.
//!
//! The cell has its own network namespace with `lo` only; its init binds the listeners
//! ([`crate::plan::net::ProxyPlan::listen_ports`]) on 127.0.0.1 inside and passes them here
//! ([`fdpass`]). Each accepted connection gets a thread: the HTTP proxy ([`proxy`]:
//! CONNECT and absolute-form requests), the SOCKS5 proxy ([`socks`]) and the port
//! forwards ([`forward`]). Every destination is checked by [`gate`]: the allowlist
//! ([`allowlist`]), approvals ([`approve`]), the supervisor's own DNS ([`resolve`]) and the
//! address classes that need a rule naming them. Bytes move with `splice(2)` ([`relay`]).
//! [`control`] is the per-session control socket (`taskcell sessions/approve/deny`),
//! [`connect`] the `taskcell connect HOST PORT` client used inside the cell.

pub mod approve;
pub mod connect;
pub mod control;
pub mod dns;
pub mod forward;
pub mod gate;
pub mod http;
pub mod inject;
pub mod learn;
pub mod proxy;
pub mod relay;
pub mod resolve;
pub mod socks;

use std::fs::File;
use std::io;
use std::net::TcpListener;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::plan::net::ProxyPlan;

/// Who runs the cell (for the control socket and the audit lines).
#[derive(Debug, Default)]
pub struct Session {
    pub id: String,
    pub profile: String,
    pub command: Vec<String>,
    /// The audit log (a second handle), if one is written.
    pub audit: Option<File>,
    /// Injected credentials (TLS interception for their hosts), if any.
    pub inject: Option<Arc<inject::Injector>>,
    /// Connections of this cell served at once (each holds a thread of taskcell's): at
    /// most [`MAX_CONNECTIONS`], and the cell's `processes` limit when it has one.
    pub max_connections: usize,
}

/// Connections served at once; beyond this, new ones are closed at once.
pub const MAX_CONNECTIONS: usize = 4096;
/// Time a client has to send its request head (HTTP) or handshake (SOCKS) (or the
/// plan's idle timeout, when shorter).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Time to connect to a destination.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a connection may stay open after one side has finished sending.
pub const HALF_OPEN_TIMEOUT: Duration = Duration::from_secs(60);

/// State shared by every connection of one cell.
pub struct Shared {
    pub plan: ProxyPlan,
    pub session: String,
    pub profile: String,
    pub command: Vec<String>,
    pub audit: crate::audit::Sink,
    pub approvals: approve::Approvals,
    pub active: AtomicUsize,
    pub max_connections: usize,
    pub inject: Option<Arc<inject::Injector>>,
    /// `--learn`: the host:port pairs connected to.
    pub learned: learn::Learned,
}

/// The running network service; dropping it removes the control socket.
pub struct NetService {
    pub shared: Arc<Shared>,
    control: Option<PathBuf>,
}

impl Drop for NetService {
    fn drop(&mut self) {
        if let Some(p) = &self.control {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Raise the supervisor's own soft fd limit to the hard one: every tunnel needs two
/// sockets and two pipes. The cell's limits are its own (it is already running).
fn raise_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

/// Start serving the listeners the cell passed (in `plan.listen_ports()` order).
pub fn start(
    plan: &ProxyPlan,
    listeners: Vec<OwnedFd>,
    session: &Session,
) -> io::Result<NetService> {
    raise_nofile();
    let audit = crate::audit::Sink::new(
        session.audit.as_ref().and_then(|f| f.try_clone().ok()),
        &session.id,
    );
    let shared = Arc::new(Shared {
        plan: plan.clone(),
        session: session.id.clone(),
        profile: session.profile.clone(),
        command: session.command.clone(),
        audit,
        approvals: approve::Approvals::default(),
        active: AtomicUsize::new(0),
        max_connections: session.max_connections.clamp(1, MAX_CONNECTIONS),
        inject: session.inject.clone(),
        learned: learn::Learned::default(),
    });
    // The launching user's terminal, when the cell does not use it (taskcell's stdin is
    // not a terminal): `ask` prompts there too.
    if plan.ask && plan.approval_command.is_none() && !nix::unistd::isatty(0).unwrap_or(false) {
        if let Ok(tty) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOCTTY)
            .open("/dev/tty")
        {
            shared.approvals.set_terminal(tty);
        }
    }
    let mut it = listeners.into_iter();
    let mut next = |what: &str| {
        it.next()
            .map(TcpListener::from)
            .ok_or_else(|| io::Error::other(format!("the cell passed no {what} listener")))
    };
    let http = next("HTTP proxy")?;
    let socks = next("SOCKS5 proxy")?;
    spawn_acceptor("taskcell-http", http, shared.clone(), |s, c| {
        proxy::serve(&s, c)
    });
    spawn_acceptor("taskcell-socks", socks, shared.clone(), |s, c| {
        socks::serve(&s, c)
    });
    for (i, f) in plan.forwards.iter().enumerate() {
        let l = next("forward")?;
        let f = f.clone();
        let _ = i;
        spawn_acceptor("taskcell-fwd", l, shared.clone(), move |s, c| {
            forward::serve(&s, &f, c)
        });
    }
    // The refusing resolver, when the cell bound one (last).
    if let Some(fd) = it.next() {
        let sock = std::net::UdpSocket::from(fd);
        let s = shared.clone();
        if let Err(e) = std::thread::Builder::new()
            .name("taskcell-dns".into())
            .spawn(move || dns::serve(s, sock))
        {
            tracing::warn!("cannot start the cell's resolver thread: {e}");
        }
    }
    let control = if !session.id.is_empty() {
        match control::start(shared.clone()) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!(
                    "no control socket for this session (taskcell approve will not reach it): {e}"
                );
                None
            }
        }
    } else {
        None
    };
    Ok(NetService { shared, control })
}

fn spawn_acceptor<F>(name: &str, l: TcpListener, shared: Arc<Shared>, handler: F)
where
    F: Fn(Arc<Shared>, std::net::TcpStream) + Send + Sync + Clone + 'static,
{
    let name = name.to_string();
    let thread_name = name.clone();
    let spawned = std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || loop {
            let (conn, _) = match l.accept() {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and the like: back off instead of spinning.
                    tracing::warn!("{thread_name}: accept: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            if shared.active.fetch_add(1, Ordering::SeqCst) >= shared.max_connections {
                shared.active.fetch_sub(1, Ordering::SeqCst);
                drop(conn);
                continue;
            }
            let _ = conn.set_nodelay(true);
            let s = shared.clone();
            let h = handler.clone();
            let r = std::thread::Builder::new()
                .name("taskcell-conn".into())
                .stack_size(256 * 1024)
                .spawn(move || {
                    let guard = ActiveGuard(s.clone());
                    h(s, conn);
                    drop(guard);
                });
            if let Err(e) = r {
                shared.active.fetch_sub(1, Ordering::SeqCst);
                tracing::warn!("{thread_name}: cannot start a connection thread: {e}");
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot start the {name} thread: {e}");
    }
}

struct ActiveGuard(Arc<Shared>);
impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}
