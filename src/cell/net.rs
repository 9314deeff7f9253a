//! The cell's network namespace: bring `lo` up for `loopback` mode.

use std::io;
use std::os::fd::AsRawFd;

/// Set IFF_UP on `lo` in the current network namespace.
pub fn loopback_up() -> io::Result<()> {
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(io::Error::from)?;
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
