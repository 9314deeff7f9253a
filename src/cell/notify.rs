//! The container tier's `socket`s and `connect`s, answered by the supervisor (mechanism).
//!
//! Without a network namespace, Landlock restricts TCP by port but not by address. So
//! the cell's TCP sockets are the supervisor's, and their connects are made by the
//! supervisor, without the classic TOCTOU of user notifications (reading the cell's
//! sockaddr, then letting the kernel re-read it with CONTINUE), and without taking
//! anything from the cell (pidfd_getfd needs CAP_SYS_PTRACE under Docker's default
//! seccomp profile, so the default container or Kubernetes pod has none):
//!
//! 1. `socket(AF_INET|AF_INET6, SOCK_STREAM[|flags], 0|IPPROTO_TCP)` stops here (seccomp
//!    refuses every other inet socket by its register arguments). This process makes the
//!    socket, keeps it (by device and inode, in [`Made`]) and installs the same open file
//!    description in the cell with SECCOMP_IOCTL_NOTIF_ADDFD (+ FLAG_SEND: the cell's
//!    socket() returns the new fd number; SOCK_NONBLOCK/SOCK_CLOEXEC as asked).
//! 2. `connect(fd, ...)`: /proc/PID/fd/N is looked at (stat: device and inode). One of
//!    ours: the sockaddr is read once from the cell's memory to learn which port was
//!    asked for, and *this process* connects its own handle of that socket to 127.0.0.1
//!    on that port when the rules allow it (the answer is connect()'s own result: 0, or
//!    -errno such as EINPROGRESS for a non-blocking socket), else ECONNREFUSED and
//!    `refused` is told. The kernel never acts on the cell's fd number or sockaddr: a
//!    thread that rewrites the sockaddr or dup2()s another socket to that number
//!    afterwards changes nothing (at worst another socket of ours is connected, to an
//!    allowed address).
//! 3. Any other fd (unix sockets) gets CONTINUE: the kernel checks it as for any process.
//!    Should another thread swap one of our TCP sockets in at that number in between (or
//!    one that `connect(AF_UNSPEC)` disconnected again), the kernel's connect meets
//!    Landlock, which refuses TCP connect on every port in the container tier (the tier
//!    requires Landlock's TCP rules).
//!
//! A socket is held only until it is connected (for a non-blocking connect: until the
//! handshake is done), so that the cell's close() reaches the proxy; its (device, inode)
//! is then remembered to answer a second connect with EISCONN. The rest are dropped when
//! the cell's last process is gone, and sooner when they pile up: those no process has
//! open any more (by /proc/*/fd) are let go.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::spec::ConnectRules;

/// Told of each refused connect (what was asked, why), for the audit log.
pub type Refused = std::sync::Arc<dyn Fn(serde_json::Value) + Send + Sync>;

/// Serve the listener on a thread until the cell's last process is gone.
pub fn serve(listener: OwnedFd, rules: ConnectRules, refused: Refused) -> io::Result<()> {
    std::thread::Builder::new()
        .name("taskcell-connect".into())
        .spawn(move || {
            serve_loop(
                std::sync::Arc::new(listener),
                &rules,
                &refused,
                &std::sync::Arc::new(Made::default()),
            )
        })
        .map(|_| ())
}

fn serve_loop(
    listener: std::sync::Arc<OwnedFd>,
    rules: &ConnectRules,
    refused: &Refused,
    made: &std::sync::Arc<Made>,
) {
    let sizes = notif_sizes();
    loop {
        let mut p = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        match poll(&mut p, PollTimeout::NONE) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
            Ok(_) => {}
        }
        let ev = p[0].revents().unwrap_or(PollFlags::empty());
        if !ev.contains(PollFlags::POLLIN) {
            // POLLHUP: no process is left under the filter.
            return;
        }
        // The kernel's struct may be larger than libc's: a zeroed buffer of its size.
        let mut buf = vec![
            0u64;
            sizes
                .0
                .div_ceil(8)
                .max(std::mem::size_of::<libc::seccomp_notif>().div_ceil(8))
        ];
        // SAFETY: RECV writes at most the kernel's seccomp_notif size into `buf`, which is
        // at least that large and zeroed as the kernel requires.
        let r = unsafe {
            libc::ioctl(
                listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_RECV as _,
                buf.as_mut_ptr(),
            )
        };
        if r < 0 {
            match io::Error::last_os_error().raw_os_error() {
                // The caller died or was interrupted before we read it.
                Some(libc::ENOENT) | Some(libc::EINTR) => continue,
                _ => return,
            }
        }
        // SAFETY: the buffer holds a seccomp_notif (libc's prefix of the kernel's).
        let req: libc::seccomp_notif = unsafe { std::ptr::read(buf.as_ptr().cast()) };
        let held = listener.clone();
        let rules = rules.clone();
        let refused = refused.clone();
        let made = made.clone();
        // A blocking connect may wait (a full backlog): one thread per call, so one
        // slow connect holds no other back; inline when no thread can be made. Each
        // holds the listener open until it has answered.
        let job = move || {
            let fd = held.as_raw_fd();
            let (resp, after) = answer(fd, &req, &rules, &refused, &made);
            if let Some(resp) = resp {
                send(fd, &resp, sizes.1);
            }
            if let Some(after) = after {
                after();
            }
        };
        // socket() never waits (a socket and an ioctl): answered here, without a thread.
        if i64::from(req.data.nr) == libc::SYS_socket {
            job();
            continue;
        }
        let job = std::sync::Arc::new(std::sync::Mutex::new(Some(job)));
        let j2 = job.clone();
        let spawned = std::thread::Builder::new()
            .name("taskcell-connect-1".into())
            .spawn(move || {
                if let Some(f) = j2.lock().ok().and_then(|mut g| g.take()) {
                    f();
                }
            });
        if spawned.is_err() {
            if let Some(f) = job.lock().ok().and_then(|mut g| g.take()) {
                f();
            }
        }
    }
}

/// (notif size, resp size) as the kernel has them.
fn notif_sizes() -> (usize, usize) {
    let mut sizes = libc::seccomp_notif_sizes {
        seccomp_notif: 0,
        seccomp_notif_resp: 0,
        seccomp_data: 0,
    };
    // SAFETY: GET_NOTIF_SIZES writes the struct we own.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_GET_NOTIF_SIZES,
            0,
            &mut sizes as *mut libc::seccomp_notif_sizes,
        )
    };
    if r < 0 {
        return (
            std::mem::size_of::<libc::seccomp_notif>(),
            std::mem::size_of::<libc::seccomp_notif_resp>(),
        );
    }
    (
        usize::from(sizes.seccomp_notif),
        usize::from(sizes.seccomp_notif_resp),
    )
}

fn send(listener: RawFd, resp: &libc::seccomp_notif_resp, size: usize) {
    let mut buf = vec![
        0u64;
        size.max(std::mem::size_of::<libc::seccomp_notif_resp>())
            .div_ceil(8)
    ];
    // SAFETY: copying a plain struct into a zeroed buffer at least as large.
    unsafe {
        std::ptr::write(buf.as_mut_ptr().cast::<libc::seccomp_notif_resp>(), *resp);
    }
    // SAFETY: SEND reads the kernel's resp size from `buf`, which is at least that large.
    // An error (ENOENT: the caller is gone or was interrupted) needs no handling.
    unsafe {
        libc::ioctl(listener, libc::SECCOMP_IOCTL_NOTIF_SEND as _, buf.as_ptr());
    }
}

fn reply(id: u64, error: i32) -> libc::seccomp_notif_resp {
    libc::seccomp_notif_resp {
        id,
        val: 0,
        error: -error,
        flags: 0,
    }
}

/// Is notification `id` still pending (its caller alive, the pid not reused)?
fn still_pending(listener: RawFd, id: u64) -> bool {
    // SAFETY: ID_VALID reads the u64 we pass.
    unsafe { libc::ioctl(listener, libc::SECCOMP_IOCTL_NOTIF_ID_VALID as _, &id) == 0 }
}

/// What to do once the answer is sent (wait for a non-blocking connect to finish).
type After = Box<dyn FnOnce() + Send>;

fn answer(
    listener: RawFd,
    req: &libc::seccomp_notif,
    rules: &ConnectRules,
    refused: &Refused,
    made: &std::sync::Arc<Made>,
) -> (Option<libc::seccomp_notif_resp>, Option<After>) {
    if i64::from(req.data.nr) == libc::SYS_socket {
        return (make_socket(listener, req, made), None);
    }
    let (resp, after) = connect(listener, req, rules, refused, made);
    (Some(resp), after)
}

/// The sockets this process made for the cell, by (device, inode); each is held to make
/// its connects.
#[derive(Default)]
pub struct Made {
    socks: std::sync::Mutex<MadeSet>,
}

#[derive(Default)]
struct MadeSet {
    /// Not connected yet (or connecting): held, to make the connect.
    by_id: std::collections::HashMap<(u64, u64), std::sync::Arc<OwnedFd>>,
    /// Connected by this process: no longer held (the cell's close() must reach the
    /// proxy), remembered to answer a second connect with EISCONN.
    connected: std::collections::HashSet<(u64, u64)>,
    /// Let go of the unused ones when there are more than this.
    sweep_at: usize,
}

/// Sockets held at most (after letting go of the unused ones): beyond, socket() gets
/// EMFILE.
const MOST_HELD: usize = 65536;

impl Made {
    fn get(&self, id: (u64, u64)) -> Option<std::sync::Arc<OwnedFd>> {
        self.socks.lock().ok()?.by_id.get(&id).cloned()
    }

    /// Hold `sock`; false when too many are held (those no process has open any more are
    /// let go first).
    fn insert(&self, id: (u64, u64), sock: std::sync::Arc<OwnedFd>) -> bool {
        let Ok(mut set) = self.socks.lock() else {
            return false;
        };
        if set.by_id.len() + set.connected.len() >= set.sweep_at.max(256) {
            if let Some(open) = open_sockets() {
                set.by_id.retain(|(_, ino), _| open.contains(ino));
                set.connected.retain(|(_, ino)| open.contains(ino));
            }
            set.sweep_at = (set.by_id.len() + set.connected.len()) * 2;
        }
        if set.by_id.len() + set.connected.len() >= MOST_HELD {
            return false;
        }
        set.connected.remove(&id);
        set.by_id.insert(id, sock);
        true
    }

    /// The socket is connected: let go of it.
    fn settle(&self, id: (u64, u64)) {
        if let Ok(mut set) = self.socks.lock() {
            if set.by_id.remove(&id).is_some() {
                set.connected.insert(id);
            }
        }
    }

    fn is_connected(&self, id: (u64, u64)) -> bool {
        self.socks
            .lock()
            .map(|s| s.connected.contains(&id))
            .unwrap_or(false)
    }

    fn remove(&self, id: (u64, u64)) {
        if let Ok(mut set) = self.socks.lock() {
            set.by_id.remove(&id);
        }
    }

    /// How many are held.
    pub fn len(&self) -> usize {
        self.socks.lock().map(|s| s.by_id.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The inodes of every socket some process this one can look at has open (/proc/*/fd),
/// or None when /proc cannot be read (then nothing is let go). A socket only in flight
/// (SCM_RIGHTS) is let go too: its connect then meets Landlock (EACCES).
fn open_sockets() -> Option<std::collections::HashSet<u64>> {
    let mut out = std::collections::HashSet::new();
    // This process holds every one of them: not counted.
    let me = std::process::id().to_string();
    for p in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = p.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()) && *n != me)
        else {
            continue;
        };
        // Threads with their own fd table too (unshare(CLONE_FILES)).
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok();
        for t in tasks.into_iter().flatten().flatten() {
            let dir = t.path().join("fd");
            let fds = match std::fs::read_dir(&dir) {
                Ok(f) => f,
                // Gone meanwhile; another user's process; or one that is not dumpable
                // (the cell's init; a cell process that made itself so), whose connects
                // this process cannot serve anyway (it cannot look at its fds).
                Err(_) => continue,
            };
            for fd in fds.flatten() {
                if let Ok(target) = std::fs::read_link(fd.path()) {
                    let t = target.to_string_lossy();
                    if let Some(ino) = t
                        .strip_prefix("socket:[")
                        .and_then(|r| r.strip_suffix(']'))
                        .and_then(|n| n.parse().ok())
                    {
                        out.insert(ino);
                    }
                }
            }
        }
    }
    Some(out)
}

/// (device, inode) of an open file.
fn file_id(fd: RawFd) -> Option<(u64, u64)> {
    nix::sys::stat::fstat(fd)
        .ok()
        .map(|st| (st.st_dev, st.st_ino))
}

/// The cell's socket(): made here, held, installed in the cell (None: answered by the
/// ADDFD ioctl itself).
fn make_socket(
    listener: RawFd,
    req: &libc::seccomp_notif,
    made: &Made,
) -> Option<libc::seccomp_notif_resp> {
    let id = req.id;
    let (domain, ty, proto) = (
        req.data.args[0] as i32,
        req.data.args[1] as i32,
        req.data.args[2] as i32,
    );
    let flags = ty & !0xf;
    // The filter sends only these here; anything else is refused as the filter would.
    if !(domain == libc::AF_INET || domain == libc::AF_INET6)
        || ty & 0xf != libc::SOCK_STREAM
        || !(proto == 0 || proto == libc::IPPROTO_TCP)
    {
        return Some(reply(id, libc::EPERM));
    }
    if flags & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) != 0 {
        return Some(reply(id, libc::EINVAL));
    }
    // SAFETY: socket takes integers and returns a new fd or -1.
    let fd = unsafe {
        libc::socket(
            domain,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | (flags & libc::SOCK_NONBLOCK),
            proto,
        )
    };
    if fd < 0 {
        let e = io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::ENOMEM);
        return Some(reply(id, e));
    }
    // SAFETY: a new fd the kernel returned to us.
    let sock = std::sync::Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
    let Some(key) = file_id(sock.as_raw_fd()) else {
        return Some(reply(id, libc::ENOMEM));
    };
    // Held before the cell can name it: a connect right after socket() finds it.
    if !made.insert(key, sock.clone()) {
        return Some(reply(id, libc::EMFILE));
    }
    let add = libc::seccomp_notif_addfd {
        id,
        flags: libc::SECCOMP_ADDFD_FLAG_SEND as u32,
        srcfd: sock.as_raw_fd() as u32,
        newfd: 0,
        newfd_flags: if flags & libc::SOCK_CLOEXEC != 0 {
            libc::O_CLOEXEC as u32
        } else {
            0
        },
    };
    // SAFETY: ADDFD reads the struct we own; with FLAG_SEND it also answers the call
    // (the new fd number is socket()'s result).
    let r = unsafe { libc::ioctl(listener, libc::SECCOMP_IOCTL_NOTIF_ADDFD as _, &add) };
    if r >= 0 {
        return None;
    }
    made.remove(key);
    match io::Error::last_os_error().raw_os_error() {
        // The caller is gone (or was interrupted): nothing to answer.
        Some(libc::ENOENT) => None,
        // EMFILE (the cell's fd limit) and the like: the cell's socket() fails so.
        Some(e) => Some(reply(id, e)),
        None => Some(reply(id, libc::ENOMEM)),
    }
}

fn connect(
    listener: RawFd,
    req: &libc::seccomp_notif,
    rules: &ConnectRules,
    refused: &Refused,
    made: &std::sync::Arc<Made>,
) -> (libc::seccomp_notif_resp, Option<After>) {
    let id = req.id;
    let pid = req.pid as i32;
    let cell_fd = req.data.args[0] as i32;
    let deny = |errno: i32, why: &str, asked: Option<String>| {
        refused(serde_json::json!({
            "pid": pid,
            "fd": cell_fd,
            "to": asked,
            "why": why,
        }));
        reply(id, errno)
    };
    let carry_on = libc::seccomp_notif_resp {
        id,
        val: 0,
        error: 0,
        flags: libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
    };
    // Which open file is at that number (by the calling thread's fd table). Not ours
    // (unix sockets; or not readable: a cell process that made itself non-dumpable):
    // the kernel decides, see the module's comment for a swapped fd.
    let key = match nix::sys::stat::stat(format!("/proc/{pid}/fd/{cell_fd}").as_str()) {
        Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFSOCK => Some((st.st_dev, st.st_ino)),
        _ => None,
    };
    let held = key.and_then(|k| made.get(k));
    if !still_pending(listener, id) {
        return (reply(id, libc::ESRCH), None);
    }
    let (Some(key), Some(sock)) = (key, held) else {
        if key.is_some_and(|k| made.is_connected(k)) {
            return (reply(id, libc::EISCONN), None);
        }
        return (carry_on, None);
    };
    let port = match decide(listener, req, rules) {
        Ok(p) => p,
        Err((errno, why, asked)) => return (deny(errno, why, asked), None),
    };
    let domain = match nix::sys::socket::getsockname::<nix::sys::socket::SockaddrStorage>(
        sock.as_raw_fd(),
    ) {
        Ok(a) if a.as_sockaddr_in6().is_some() => libc::AF_INET6,
        Ok(_) => libc::AF_INET,
        Err(e) => return (reply(id, e as i32), None),
    };
    // This process connects the socket it made (the open file description the cell
    // holds) to the address it decided.
    let err = connect_loopback(sock.as_raw_fd(), domain, port);
    // Connected: let go of it (so the cell's close() reaches the proxy). Connecting: once
    // the answer is sent, wait for the handshake, then the same.
    let after: Option<After> = match err {
        0 | libc::EISCONN => {
            made.settle(key);
            None
        }
        libc::EINPROGRESS | libc::EALREADY => {
            let made = made.clone();
            Some(Box::new(move || {
                if wait_connected(&sock) {
                    made.settle(key);
                }
            }))
        }
        _ => None,
    };
    (reply(id, err), after)
}

/// Wait (at most a minute) for a non-blocking connect to finish; connected?
fn wait_connected(sock: &OwnedFd) -> bool {
    let mut p = [PollFd::new(sock.as_fd(), PollFlags::POLLOUT)];
    if !matches!(poll(&mut p, PollTimeout::from(60_000u16)), Ok(n) if n > 0) {
        return false;
    }
    nix::sys::socket::getpeername::<nix::sys::socket::SockaddrStorage>(sock.as_raw_fd()).is_ok()
}

/// A refusal: errno, why, what was asked.
type Refusal = (i32, &'static str, Option<String>);

/// Read the sockaddr once (from /proc/PID/mem, after which the notification must still
/// be pending) and decide on this copy: the allowed port, or why not.
fn decide(
    listener: RawFd,
    req: &libc::seccomp_notif,
    rules: &ConnectRules,
) -> Result<u16, Refusal> {
    let raw = read_sockaddr(req.pid, req.data.args[1], req.data.args[2] as usize)
        .map_err(|_| (libc::EFAULT, "cannot read the address", None))?;
    if !still_pending(listener, req.id) {
        return Err((libc::ESRCH, "the caller is gone", None));
    }
    let Some((ip, port)) = parse(&raw) else {
        return Err((libc::ECONNREFUSED, "not an IPv4 or IPv6 address", None));
    };
    let shown = format!("{ip}:{port}");
    if !is_loopback_one(&ip) {
        return Err((
            libc::ECONNREFUSED,
            "only the proxy on 127.0.0.1 is reachable",
            Some(shown),
        ));
    }
    if let Some((_, to)) = rules.map.iter().find(|(from, _)| *from == port) {
        return Ok(*to);
    }
    if !rules.any_port && !rules.ports.contains(&port) {
        return Err((
            libc::ECONNREFUSED,
            "not the proxy's (or a declared) port",
            Some(shown),
        ));
    }
    Ok(port)
}

/// Up to 128 bytes of the caller's memory at `addr` (its sockaddr), by /proc/PID/mem (no
/// process_vm_readv, which Docker's default seccomp profile refuses without
/// CAP_SYS_PTRACE).
fn read_sockaddr(pid: u32, addr: u64, len: usize) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(format!("/proc/{pid}/mem"))?;
    let mut raw = vec![0u8; len.min(128)];
    let n = f.read_at(&mut raw, addr)?;
    raw.truncate(n);
    Ok(raw)
}

/// 127.0.0.1, ::1 or ::ffff:127.0.0.1.
fn is_loopback_one(ip: &std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => *v4 == Ipv4Addr::LOCALHOST,
        std::net::IpAddr::V6(v6) => {
            *v6 == Ipv6Addr::LOCALHOST || v6.to_ipv4_mapped() == Some(Ipv4Addr::LOCALHOST)
        }
    }
}

/// An AF_INET or AF_INET6 sockaddr (network byte order) → address and port.
fn parse(raw: &[u8]) -> Option<(std::net::IpAddr, u16)> {
    let family = u16::from_ne_bytes(raw.get(0..2)?.try_into().ok()?);
    let port = u16::from_be_bytes(raw.get(2..4)?.try_into().ok()?);
    match i32::from(family) {
        libc::AF_INET => {
            let a: [u8; 4] = raw.get(4..8)?.try_into().ok()?;
            Some((Ipv4Addr::from(a).into(), port))
        }
        libc::AF_INET6 => {
            let a: [u8; 16] = raw.get(8..24)?.try_into().ok()?;
            Some((Ipv6Addr::from(a).into(), port))
        }
        _ => None,
    }
}

/// connect(fd, 127.0.0.1:port) (as ::ffff:127.0.0.1 for an AF_INET6 socket); the errno,
/// or 0.
fn connect_loopback(fd: RawFd, domain: i32, port: u16) -> i32 {
    let r = if domain == libc::AF_INET {
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(Ipv4Addr::LOCALHOST).to_be(),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: connect reads the sockaddr_in we own.
        unsafe {
            libc::connect(
                fd,
                (&sa as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        }
    } else {
        let sa = libc::sockaddr_in6 {
            sin6_family: libc::AF_INET6 as libc::sa_family_t,
            sin6_port: port.to_be(),
            sin6_flowinfo: 0,
            sin6_addr: libc::in6_addr {
                s6_addr: Ipv4Addr::LOCALHOST.to_ipv6_mapped().octets(),
            },
            sin6_scope_id: 0,
        };
        // SAFETY: connect reads the sockaddr_in6 we own.
        unsafe {
            libc::connect(
                fd,
                (&sa as *const libc::sockaddr_in6).cast(),
                std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            )
        }
    };
    if r == 0 {
        0
    } else {
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::ECONNREFUSED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddrs_are_parsed_and_only_127_0_0_1_counts() {
        let mut v4 = [0u8; 16];
        v4[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        v4[2..4].copy_from_slice(&3128u16.to_be_bytes());
        v4[4..8].copy_from_slice(&[127, 0, 0, 1]);
        let (ip, port) = parse(&v4).expect("v4");
        assert_eq!(port, 3128);
        assert!(is_loopback_one(&ip));
        v4[7] = 2;
        assert!(!is_loopback_one(&parse(&v4).expect("v4").0));
        let mut v6 = [0u8; 28];
        v6[0..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
        v6[2..4].copy_from_slice(&80u16.to_be_bytes());
        v6[8..24].copy_from_slice(&Ipv4Addr::LOCALHOST.to_ipv6_mapped().octets());
        assert!(is_loopback_one(&parse(&v6).expect("v6").0));
        v6[8..24].copy_from_slice(&Ipv6Addr::LOCALHOST.octets());
        assert!(is_loopback_one(&parse(&v6).expect("v6").0));
        // Too short, or another family.
        assert_eq!(parse(&v4[..6]), None);
        let mut unix = v4;
        unix[0..2].copy_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
        assert_eq!(parse(&unix), None);
    }
}
