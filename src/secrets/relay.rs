//! The output relay: the command's stdout and stderr are pipes; one thread per stream
//! reads, masks and writes to taskcell's own stdout/stderr. Order within a stream is
//! kept, bytes are passed through exactly apart from the masked matches, and what the
//! masker holds back (a possible start of a match) is flushed after 50 ms of silence, so
//! a prompt without a newline still appears.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::redact::Redactor;

/// How long the relay waits for more output before it emits a held-back tail.
pub const IDLE_FLUSH: Duration = Duration::from_millis(50);
/// Reads of 128 KiB: the read buffer, the pipe's pages and the masker's work stay in
/// the L2 cache.
const BUF: usize = 128 * 1024;
const PIPE_SIZE: libc::c_int = 256 * 1024;

/// The pipes for one cell: the cell gets the write ends, the relay the read ends.
#[derive(Debug)]
pub struct Pipes {
    pub out_r: OwnedFd,
    pub out_w: OwnedFd,
    pub err_r: OwnedFd,
    pub err_w: OwnedFd,
}

impl Pipes {
    pub fn new() -> io::Result<Pipes> {
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        Ok(Pipes {
            out_r,
            out_w,
            err_r,
            err_w,
        })
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
    // A pipe of 256 KiB (the default is 64 KiB) means fewer wake-ups for bulk output,
    // yet what the cell wrote is still in the cache when the relay reads it (with 1 MiB
    // the relay's read alone cost more CPU than the masking); failure is harmless.
    // SAFETY: fcntl with an integer argument on our fd.
    unsafe {
        libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE);
    }
    Ok((r, w))
}

/// Relay `from` to the fd `to` through a masker until EOF. Returns the masked counts.
/// When `to` stops accepting (EPIPE), the read end is closed so the writer in the cell
/// gets EPIPE/SIGPIPE, as it would without taskcell in between.
pub fn relay(redactor: &Redactor, from: OwnedFd, to: RawFd) -> Vec<(String, u64)> {
    let mut masker = redactor.stream();
    let mut buf = vec![0u8; BUF];
    let mut out: Vec<u8> = Vec::with_capacity(BUF + 4096);
    let mut held = false;
    loop {
        // Only a held-back tail needs a timeout; otherwise the (blocking) read waits.
        if held {
            let timeout =
                PollTimeout::try_from(IDLE_FLUSH.as_millis() as i32).unwrap_or(PollTimeout::MAX);
            let mut fds = [PollFd::new(from.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, timeout) {
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break,
                Ok(0) => {
                    out.clear();
                    masker.flush(&mut out);
                    held = false;
                    if write_all(to, &out).is_err() {
                        break;
                    }
                    continue;
                }
                Ok(_) => {}
            }
        }
        let n = match nix::unistd::read(from.as_raw_fd(), &mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::EAGAIN) => {
                // A non-blocking descriptor: wait for data instead of spinning (with a
                // held tail, the poll at the top of the loop waits, with its timeout).
                if !held {
                    let mut fds = [PollFd::new(from.as_fd(), PollFlags::POLLIN)];
                    let _ = poll(&mut fds, PollTimeout::NONE);
                }
                continue;
            }
            Err(_) => break,
        };
        out.clear();
        // What passes unchanged is written from `buf` itself, not copied first.
        let (masked, passed) = masker.push_split(&buf[..n], &mut out);
        let ok = write_all(to, masked).is_ok() && write_all(to, passed).is_ok();
        held = masker.pending() > 0;
        if !ok {
            drop(from);
            zero(&mut buf);
            zero(&mut out);
            return masker.counts();
        }
    }
    out.clear();
    masker.flush(&mut out);
    let _ = write_all(to, &out);
    zero(&mut buf);
    zero(&mut out);
    masker.counts()
}

fn zero(v: &mut [u8]) {
    zeroize::Zeroize::zeroize(v);
}

fn write_all(fd: RawFd, data: &[u8]) -> Result<(), ()> {
    if data.is_empty() {
        return Ok(());
    }
    // One writer at a time on the user's terminal; held while taskcell asks a question.
    crate::tty::write_screen(fd, data).map_err(|_| ())
}
