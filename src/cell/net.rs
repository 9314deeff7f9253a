//! The cell's network namespace: made by init's helper thread while init builds the root,
//! `lo` brought up for the `loopback` and `proxy` modes.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// ioctl on a socket: an fd of the socket's network namespace (linux/sockios.h, 4.9+).
const SIOCGSKNS: libc::c_ulong = 0x894C;

/// The cell's network namespace being made by init's helper thread. Creating a network
/// namespace is the costliest part of the cell's clone (0.55–0.6 ms of the 0.7–0.8 here,
/// the same for bubblewrap): cloned without CLONE_NEWNET, init has its [`super::Helper`]
/// create it on the other CPU while it builds the root, and joins it ([`Making::enter`])
/// before anything of the cell's network is used (the listeners) and before the worker
/// starts. Namespaces are per thread: the helper's unshare moves only itself.
pub struct Making(std::sync::mpsc::Receiver<Result<OwnedFd, Failed>>);

/// Why the namespace is not there: `refused` when the kernel (or a seccomp policy)
/// refused to create it, which the supervisor treats like a refused clone.
#[derive(Debug)]
pub struct Failed {
    pub refused: bool,
    pub message: String,
}

impl From<String> for Failed {
    fn from(message: String) -> Failed {
        Failed {
            refused: false,
            message,
        }
    }
}

/// Queue the namespace's making on `helper`; `lo` is brought up in the new namespace
/// when `loopback`. The helper must have been started after init's last change of ids (a
/// thread keeps the credentials it was born with) and this must be its first job.
pub fn start(loopback: bool, helper: &super::Helper) -> Result<Making, Failed> {
    let (tx, rx) = std::sync::mpsc::channel();
    if !helper.run(move || {
        let _ = tx.send(make(loopback));
    }) {
        return Err(
            "starting the thread that makes the cell's network namespace: it has ended"
                .to_string()
                .into(),
        );
    }
    Ok(Making(rx))
}

fn make(loopback: bool) -> Result<OwnedFd, Failed> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| Failed {
        refused: true,
        message: format!(
            "creating the cell's network namespace: {e} (the user namespace was allowed; a seccomp or AppArmor policy that refuses unshare?); run `taskcell doctor`"
        ),
    })?;
    // The namespace's fd from a socket in it: no path (the thread shares init's root,
    // which init is replacing meanwhile).
    let sock = socket().map_err(|e| format!("a socket in the cell's network namespace: {e}"))?;
    if loopback {
        loopback_up(&sock).map_err(|e| format!("bringing up lo: {e}"))?;
    }
    // SAFETY: SIOCGSKNS takes no argument and returns a new fd or -1.
    let fd = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCGSKNS as _) };
    if fd < 0 {
        return Err(format!(
            "opening the cell's network namespace: {}",
            io::Error::last_os_error()
        )
        .into());
    }
    // SAFETY: a fresh fd this thread owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl Making {
    /// Wait for the thread and move the calling thread into the namespace it made.
    pub fn enter(self) -> Result<(), Failed> {
        let ns = self.0.recv().map_err(|_| {
            Failed::from("the thread making the cell's network namespace panicked".to_string())
        })??;
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("entering the cell's network namespace: {e}").into())
    }
}

impl Failed {
    /// The code init reports it with (`cell::NETNS_REFUSED` when refused).
    pub fn code(&self) -> i32 {
        if self.refused {
            super::NETNS_REFUSED
        } else {
            125
        }
    }
}

fn socket() -> io::Result<OwnedFd> {
    nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(io::Error::from)
}

/// Set IFF_UP on `lo` in the network namespace of `sock`.
fn loopback_up(sock: &OwnedFd) -> io::Result<()> {
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in b"lo\0".iter().enumerate() {
        ifr.ifr_name[i] = *b as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads into the ifreq we own.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the union's flags member is what SIOCGIFFLAGS filled in.
    unsafe {
        ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: SIOCSIFFLAGS reads the ifreq we own.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Bind a TCP listener on 127.0.0.1:`port` for each port (and, with `dns`, a UDP socket
/// on 127.0.0.1:53 last), send them all to the supervisor over `sock` (SCM_RIGHTS), and
/// close them here.
pub fn pass_listeners(ports: &[u16], dns: bool, sock: &std::os::fd::OwnedFd) -> Result<(), String> {
    let mut held = Vec::new();
    for &port in ports {
        let l = std::net::TcpListener::bind(("127.0.0.1", port))
            .map_err(|e| format!("binding 127.0.0.1:{port} inside the cell: {e}"))?;
        held.push(std::os::fd::OwnedFd::from(l));
    }
    if dns {
        let u = std::net::UdpSocket::bind(("127.0.0.1", 53))
            .map_err(|e| format!("binding UDP 127.0.0.1:53 inside the cell: {e}"))?;
        held.push(std::os::fd::OwnedFd::from(u));
    }
    let fds: Vec<i32> = held.iter().map(|l| l.as_raw_fd()).collect();
    crate::cell::fdpass::send(sock, &fds)
        .map_err(|e| format!("passing the listeners to the supervisor: {e}"))?;
    Ok(())
}
