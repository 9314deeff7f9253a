//! Moving bytes between two connected sockets with `splice(2)` through a pipe per
//! direction (no copy through user space), driven by `poll` so that idle and half-open
//! connections time out.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Bytes moved each way.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    /// From the first socket (the client in the cell) to the second.
    pub up: u64,
    pub down: u64,
}

struct Dir {
    from: RawFd,
    to: RawFd,
    pipe_r: OwnedFd,
    pipe_w: OwnedFd,
    in_pipe: usize,
    /// The pipe's capacity: reading from the source waits while the pipe is full.
    cap: usize,
    /// The last read found the pipe (probably) full: wait for the destination instead.
    stalled: bool,
    eof: bool,
    closed: bool,
    moved: u64,
}

const CHUNK: usize = 1 << 20;

/// splice(2) without offsets.
fn splice(
    from: RawFd,
    to: RawFd,
    len: usize,
    flags: libc::c_uint,
) -> Result<usize, nix::errno::Errno> {
    // SAFETY: splice between two fds the caller keeps open; null offsets (both are
    // sockets or pipes).
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            flags,
        )
    };
    if n < 0 {
        Err(nix::errno::Errno::last())
    } else {
        Ok(n as usize)
    }
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on an fd the caller keeps open for the duration of the call.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        if fl < 0 || libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn shutdown_write(fd: RawFd) {
    // SAFETY: shutdown on an fd the caller keeps open; the result is best effort.
    unsafe {
        libc::shutdown(fd, libc::SHUT_WR);
    }
}

impl Dir {
    fn new(from: RawFd, to: RawFd) -> io::Result<Dir> {
        let (r, w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
                .map_err(io::Error::from)?;
        // SAFETY: F_GETPIPE_SZ only queries the pipe we just made.
        let cap = unsafe { libc::fcntl(w.as_raw_fd(), libc::F_GETPIPE_SZ) };
        Ok(Dir {
            stalled: false,
            cap: if cap > 0 { cap as usize } else { 4096 },
            from,
            to,
            pipe_r: r,
            pipe_w: w,
            in_pipe: 0,
            eof: false,
            closed: false,
            moved: 0,
        })
    }

    fn wants_read(&self) -> bool {
        !self.eof && self.in_pipe < self.cap && !(self.stalled && self.in_pipe > 0)
    }

    /// Move what can be moved without blocking. Err on a broken destination.
    fn pump(&mut self) -> io::Result<bool> {
        let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
        let mut progressed = false;
        loop {
            let mut step = false;
            if !self.eof && self.in_pipe < self.cap {
                match splice(self.from, self.pipe_w.as_raw_fd(), CHUNK, flags) {
                    Ok(0) => {
                        self.eof = true;
                        step = true;
                    }
                    Ok(n) => {
                        self.in_pipe += n;
                        step = true;
                    }
                    Err(nix::errno::Errno::EAGAIN) => self.stalled = self.in_pipe > 0,
                    Err(nix::errno::Errno::EINTR) => step = true,
                    // A reset from the source ends this direction like an EOF.
                    Err(_) => {
                        self.eof = true;
                        step = true;
                    }
                }
            }
            if self.in_pipe > 0 {
                match splice(self.pipe_r.as_raw_fd(), self.to, self.in_pipe, flags) {
                    Ok(n) => {
                        self.in_pipe -= n;
                        self.moved += n as u64;
                        if n > 0 {
                            self.stalled = false;
                        }
                        step = step || n > 0;
                    }
                    Err(nix::errno::Errno::EAGAIN) => {}
                    Err(nix::errno::Errno::EINTR) => step = true,
                    Err(e) => return Err(io::Error::from(e)),
                }
            }
            if self.eof && self.in_pipe == 0 && !self.closed {
                shutdown_write(self.to);
                self.closed = true;
                step = true;
            }
            progressed |= step;
            if !step || self.closed {
                return Ok(progressed);
            }
        }
    }
}

/// Relay until both directions are finished, one side breaks, nothing moves for
/// `idle`, or one direction has been finished for `half_open`.
pub fn relay(
    a: &impl AsRawFd,
    b: &impl AsRawFd,
    idle: Duration,
    half_open: Duration,
) -> io::Result<Moved> {
    let (fa, fb) = (a.as_raw_fd(), b.as_raw_fd());
    set_nonblocking(fa)?;
    set_nonblocking(fb)?;
    let mut up = Dir::new(fa, fb)?;
    let mut down = Dir::new(fb, fa)?;
    let moved = |u: &Dir, d: &Dir| Moved {
        up: u.moved,
        down: d.moved,
    };
    loop {
        let r1 = up.pump();
        let r2 = down.pump();
        if r1.is_err() || r2.is_err() {
            return Ok(moved(&up, &down));
        }
        if up.closed && down.closed {
            return Ok(moved(&up, &down));
        }
        let ev = |read: bool, write: bool| {
            let mut f: libc::c_short = 0;
            if read {
                f |= libc::POLLIN;
            }
            if write {
                f |= libc::POLLOUT;
            }
            f
        };
        // A socket with nothing to wait for is left out (a negative fd), so that a
        // hangup on it cannot make poll return at once forever.
        let pfd = |fd: RawFd, events: libc::c_short| libc::pollfd {
            fd: if events == 0 { -1 } else { fd },
            events,
            revents: 0,
        };
        let mut fds = [
            pfd(fa, ev(up.wants_read(), down.in_pipe > 0)),
            pfd(fb, ev(down.wants_read(), up.in_pipe > 0)),
        ];
        let wait = if up.closed || down.closed {
            half_open.min(idle)
        } else {
            idle
        };
        let t = wait.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: poll on an array of pollfd we own.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, t) };
        match n {
            0 => return Ok(moved(&up, &down)),
            n if n > 0 => {
                let bad = |f: &libc::pollfd| f.revents & (libc::POLLERR | libc::POLLNVAL) != 0;
                if bad(&fds[0]) || bad(&fds[1]) {
                    let _ = up.pump();
                    let _ = down.pump();
                    return Ok(moved(&up, &down));
                }
            }
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    #[test]
    fn moves_both_ways_and_propagates_half_close() {
        // client <-> (a, b) relay <-> server
        let (mut client, a) = UnixStream::pair().expect("pair");
        let (b, mut server) = UnixStream::pair().expect("pair");
        let t = std::thread::spawn(move || {
            relay(&a, &b, Duration::from_secs(30), Duration::from_secs(30)).expect("relay")
        });
        let big = vec![7u8; 3 * 1024 * 1024];
        let big2 = big.clone();
        let w = std::thread::spawn(move || {
            client.write_all(&big2).expect("write");
            client
                .shutdown(std::net::Shutdown::Write)
                .expect("shutdown");
            let mut back = Vec::new();
            client.read_to_end(&mut back).expect("read back");
            back
        });
        let mut got = Vec::new();
        server.read_to_end(&mut got).expect("read"); // EOF arrives: the half-close passed
        assert_eq!(got.len(), big.len());
        server.write_all(b"reply").expect("reply");
        server
            .shutdown(std::net::Shutdown::Write)
            .expect("shutdown");
        assert_eq!(w.join().expect("join"), b"reply");
        let m = t.join().expect("join");
        assert_eq!(
            m,
            Moved {
                up: big.len() as u64,
                down: 5
            }
        );
    }

    #[test]
    fn idle_connections_end() {
        let (_client, a) = UnixStream::pair().expect("pair");
        let (b, _server) = UnixStream::pair().expect("pair");
        let m = relay(&a, &b, Duration::from_millis(50), Duration::from_millis(50)).expect("relay");
        assert_eq!(m, Moved::default());
    }
}
