//! The container tier's `connect`s, answered by the supervisor (mechanism).
//!
//! Without a network namespace, Landlock restricts TCP by port but not by address. So
//! every `connect` of the cell stops in a seccomp user notification, and this loop
//! answers it without the classic TOCTOU of user notifications (reading the cell's
//! sockaddr, then letting the kernel re-read it with CONTINUE):
//!
//! 1. the socket is taken from the cell with pidfd_getfd (the same open file
//!    description; where a policy refuses pidfd_getfd, the supervisor connects a socket
//!    of its own and puts it at the caller's fd number with NOTIF_ADDFD instead), and the
//!    notification is checked to be still pending (the pid was
//!    not reused);
//! 2. a TCP socket (AF_INET/AF_INET6, SOCK_STREAM, IPPROTO_TCP) is connected *by this
//!    process* to the address it decided: 127.0.0.1 on an allowed port. The sockaddr is
//!    read from the cell's memory only to learn which port was asked for; what the cell
//!    writes there afterwards changes nothing, since the kernel never reads it again.
//!    The answer is connect()'s own result (0, or -errno: EINPROGRESS for a
//!    non-blocking socket);
//! 3. a unix socket gets CONTINUE: the kernel checks it as for any process (Landlock's
//!    abstract-socket scope). Should another thread swap a TCP socket in at that fd
//!    number in between, the kernel's connect meets Landlock, which refuses TCP connect
//!    on every port in the container tier;
//! 4. anything else, and a TCP connect to another address or port, gets ECONNREFUSED
//!    (EACCES for other socket kinds), and `refused` is told.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::spec::ConnectRules;

/// pidfd_getfd works here (cleared at its first EPERM/ENOSYS).
static GETFD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Told of each refused connect (what was asked, why), for the audit log.
pub type Refused = std::sync::Arc<dyn Fn(serde_json::Value) + Send + Sync>;

/// Serve the listener on a thread until the cell's last process is gone.
pub fn serve(listener: OwnedFd, rules: ConnectRules, refused: Refused) -> io::Result<()> {
    std::thread::Builder::new()
        .name("taskcell-connect".into())
        .spawn(move || serve_loop(std::sync::Arc::new(listener), &rules, &refused))
        .map(|_| ())
}

fn serve_loop(listener: std::sync::Arc<OwnedFd>, rules: &ConnectRules, refused: &Refused) {
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
        // A blocking connect may wait (a full backlog): one thread per call, so one
        // slow connect holds no other back; inline when no thread can be made. Each
        // holds the listener open until it has answered.
        let job = move || {
            let fd = held.as_raw_fd();
            let resp = answer(fd, &req, &rules, &refused);
            send(fd, &resp, sizes.1);
        };
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

fn answer(
    listener: RawFd,
    req: &libc::seccomp_notif,
    rules: &ConnectRules,
    refused: &Refused,
) -> libc::seccomp_notif_resp {
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
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        return reply(id, libc::ESRCH);
    }
    // SAFETY: a new fd the kernel returned to us.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) };
    if !still_pending(listener, id) {
        return reply(id, libc::ESRCH);
    }
    if !GETFD.load(std::sync::atomic::Ordering::Relaxed) {
        return answer_by_replacing(listener, req, rules, &deny);
    }
    // SAFETY: pidfd_getfd returns a new fd (close-on-exec) or -1.
    let sock = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), cell_fd, 0) };
    if sock < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EBADF) => reply(id, libc::EBADF),
            // Refused by a policy (Docker's default seccomp profile without
            // CAP_SYS_PTRACE), or not in this kernel: replace the socket instead, from now on.
            Some(libc::EPERM) | Some(libc::ENOSYS) => {
                if GETFD.swap(false, std::sync::atomic::Ordering::Relaxed) {
                    tracing::debug!(
                        "pidfd_getfd is refused here ({e}): the container tier's connects replace the cell's socket (SECCOMP_IOCTL_NOTIF_ADDFD)"
                    );
                }
                answer_by_replacing(listener, req, rules, &deny)
            }
            _ => deny(
                libc::EACCES,
                &format!("cannot take the socket from the cell: {e}"),
                None,
            ),
        };
    }
    // SAFETY: a new fd the kernel returned to us.
    let sock = unsafe { OwnedFd::from_raw_fd(sock as RawFd) };
    let opt = |name: i32| -> Result<i32, i32> {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes an int into `v`.
        let r = unsafe {
            libc::getsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                name,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EACCES))
        } else {
            Ok(v)
        }
    };
    let domain = match opt(libc::SO_DOMAIN) {
        Ok(d) => d,
        Err(e) => return reply(id, e),
    };
    if domain == libc::AF_UNIX {
        // The kernel decides (see the module's comment for a swapped fd).
        return libc::seccomp_notif_resp {
            id,
            val: 0,
            error: 0,
            flags: libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
        };
    }
    let tcp = (domain == libc::AF_INET || domain == libc::AF_INET6)
        && opt(libc::SO_TYPE) == Ok(libc::SOCK_STREAM)
        && opt(libc::SO_PROTOCOL) == Ok(libc::IPPROTO_TCP);
    if !tcp {
        return deny(libc::EACCES, "not a TCP or unix socket", None);
    }
    let port = match decide(listener, req, rules) {
        Ok(p) => p,
        Err((errno, why, asked)) => return deny(errno, why, asked),
    };
    // This process connects the cell's socket (the same open file description) to the
    // address it decided.
    let err = connect_loopback(sock.as_raw_fd(), domain, port);
    reply(id, err)
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

/// Without pidfd_getfd (Docker's default seccomp profile allows it only with
/// CAP_SYS_PTRACE): this process makes a new TCP socket, connects it to the address it
/// decided, and puts it in the cell at the caller's fd number (SECCOMP_IOCTL_NOTIF_ADDFD
/// with SETFD, Linux 5.9), with the caller's O_NONBLOCK and close-on-exec; the answer is
/// 0. Still no CONTINUE for TCP. Options set on the cell's socket before connect (e.g.
/// TCP_NODELAY) are not carried over.
fn answer_by_replacing(
    listener: RawFd,
    req: &libc::seccomp_notif,
    rules: &ConnectRules,
    deny: &dyn Fn(i32, &str, Option<String>) -> libc::seccomp_notif_resp,
) -> libc::seccomp_notif_resp {
    let id = req.id;
    let pid = req.pid;
    let cell_fd = req.data.args[0] as i32;
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{cell_fd}"));
    let is_socket = match &link {
        Ok(l) => l.to_string_lossy().starts_with("socket:"),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return reply(id, libc::EBADF),
        Err(_) => false,
    };
    if !is_socket {
        return reply(id, libc::ENOTSOCK);
    }
    // The family the cell asked for (its sockaddr's first two bytes).
    let family = match read_sockaddr(pid, req.data.args[1], 2) {
        Ok(b) if b.len() == 2 => i32::from(u16::from_ne_bytes([b[0], b[1]])),
        _ => return reply(id, libc::EFAULT),
    };
    if family == libc::AF_UNIX {
        // The kernel decides; Landlock refuses a TCP connect should the fd be swapped.
        return libc::seccomp_notif_resp {
            id,
            val: 0,
            error: 0,
            flags: libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
        };
    }
    let port = match decide(listener, req, rules) {
        Ok(p) => p,
        Err((errno, why, asked)) => return deny(errno, why, asked),
    };
    let flags = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{cell_fd}"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("flags:"))
                .and_then(|v| i64::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0);
    let domain = if family == libc::AF_INET6 {
        libc::AF_INET6
    } else {
        libc::AF_INET
    };
    // SAFETY: socket() returns a new fd or -1.
    let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return reply(id, libc::ENOBUFS);
    }
    // SAFETY: a new fd we own.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let err = connect_loopback(sock.as_raw_fd(), domain, port);
    if err != 0 {
        return reply(id, err);
    }
    if flags & i64::from(libc::O_NONBLOCK) != 0 {
        // SAFETY: F_SETFL on our own fd.
        unsafe { libc::fcntl(sock.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
    }
    let add = libc::seccomp_notif_addfd {
        id,
        flags: libc::SECCOMP_ADDFD_FLAG_SETFD as u32,
        srcfd: sock.as_raw_fd() as u32,
        newfd: cell_fd as u32,
        newfd_flags: if flags & i64::from(libc::O_CLOEXEC) != 0 {
            libc::O_CLOEXEC as u32
        } else {
            0
        },
    };
    // SAFETY: ADDFD reads the struct we own; the kernel installs a copy of `sock` at
    // `newfd` in the caller (replacing what was there), while its call is pending.
    let r = unsafe { libc::ioctl(listener, libc::SECCOMP_IOCTL_NOTIF_ADDFD as _, &add) };
    if r < 0 {
        return reply(
            id,
            io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EACCES),
        );
    }
    reply(id, 0)
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
