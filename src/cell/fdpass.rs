//! Passing the cell's listening sockets to the supervisor: SCM_RIGHTS over a socketpair.

use std::io;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};

/// A connected pair (close-on-exec) for one message of fds.
pub fn pair() -> io::Result<(OwnedFd, OwnedFd)> {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(io::Error::from)
}

/// Send `fds` in one message.
pub fn send(sock: &OwnedFd, fds: &[RawFd]) -> io::Result<()> {
    send_with(sock, fds.len() as u32, fds)
}

/// Send `fds` in one message whose data is `word` ([`recv_with`] returns it).
pub fn send_with(sock: &OwnedFd, word: u32, fds: &[RawFd]) -> io::Result<()> {
    let n = word.to_ne_bytes();
    let iov = [IoSlice::new(&n)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)
        .map_err(io::Error::from)?;
    Ok(())
}

/// Most fds passed in one message (the proxy's two listeners and the forwards).
pub const MAX_FDS: usize = crate::plan::net::MAX_LISTENERS;

/// Receive the fds of one message (at most [`MAX_FDS`]); they arrive close-on-exec.
pub fn recv(sock: &OwnedFd) -> io::Result<Vec<OwnedFd>> {
    match recv_with(sock) {
        Ok((_, fds)) => Ok(fds),
        // The peer's end: no fds.
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// [`recv`], with the message's word ([`send_with`]); the end of the peer's socket
/// (no message) is an error.
pub fn recv_with(sock: &OwnedFd) -> io::Result<(u32, Vec<OwnedFd>)> {
    let mut n = [0u8; 4];
    let mut iov = [IoSliceMut::new(&mut n)];
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    let mut out = Vec::new();
    for c in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for fd in fds {
                // SAFETY: the kernel installed these fds in our table for us; we own them.
                out.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
        return Err(io::Error::other(
            "the cell passed more listeners than expected",
        ));
    }
    if msg.bytes == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok((u32::from_ne_bytes(n), out))
}
