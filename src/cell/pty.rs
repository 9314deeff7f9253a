//! The cell's side of an interactive cell's terminal: init opens a pseudo-terminal from
//! the cell's own devpts and passes the master out; the worker makes the slave its
//! controlling terminal. The user's side (raw mode, the relay) is `crate::tty`.

use std::io;
use std::os::fd::{OwnedFd, RawFd};

/// In the cell's init, after its /dev is built: a new pseudo-terminal from the cell's own
/// devpts instance, sized `rows` x `cols`. Returns the master and the slave's path
/// (`/dev/pts/N` inside the cell).
pub fn open(rows: u16, cols: u16) -> io::Result<(OwnedFd, std::path::PathBuf)> {
    use std::os::fd::FromRawFd;
    // SAFETY: open with a constant path; the fd is ours.
    let fd = unsafe {
        libc::open(
            c"/dev/ptmx".as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd we own.
    let master = unsafe { OwnedFd::from_raw_fd(fd) };
    let unlock: libc::c_int = 0;
    let mut n: libc::c_uint = 0;
    // SAFETY: TIOCSPTLCK reads an int, TIOCGPTN writes one; both ours.
    unsafe {
        if libc::ioctl(fd, libc::TIOCSPTLCK, &unlock) != 0
            || libc::ioctl(fd, libc::TIOCGPTN, &mut n) != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize we own.
    if unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((master, std::path::PathBuf::from(format!("/dev/pts/{n}"))))
}

/// In the worker, after `setsid`: make `slave` the controlling terminal and stdin,
/// stdout and stderr.
pub fn attach(slave: RawFd) -> io::Result<()> {
    // SAFETY: TIOCSCTTY with 0 on a terminal fd we hold; we are a session leader without
    // a controlling terminal.
    if unsafe { libc::ioctl(slave, libc::TIOCSCTTY, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    for to in 0..3 {
        // SAFETY: dup2 between fds this process holds.
        if unsafe { libc::dup2(slave, to) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
