//! The user's terminal and the cell's pseudo-terminal (mechanism only).
//!
//! In pty mode the command gets a new pseudo-terminal as its controlling terminal; the
//! supervisor puts the user's terminal in raw mode, relays both ways, and copies window
//! size changes to the cell's pty. The user's terminal settings are restored on every
//! exit path: [`RawMode`]'s drop, a panic hook, and [`restore_saved`] for the paths that
//! end the process without unwinding.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Mutex;

use nix::sys::termios::{self, SetArg, Termios};

/// The settings to put back, shared with the panic hook.
static SAVED: Mutex<Option<(RawFd, Termios)>> = Mutex::new(None);

/// Whether both stdin and stdout are terminals (pty mode's default).
pub fn stdio_is_terminal() -> bool {
    // SAFETY: isatty only inspects the fd.
    unsafe { libc::isatty(0) == 1 && libc::isatty(1) == 1 }
}

/// The user's terminal in raw mode for as long as this value lives.
pub struct RawMode {
    fd: RawFd,
}

impl RawMode {
    /// Save `fd`'s settings and switch it to raw mode (no echo, no line editing, no
    /// signals from keys: Ctrl-C and Ctrl-Z become bytes for the cell's own terminal).
    pub fn enter(fd: RawFd) -> io::Result<RawMode> {
        // SAFETY: fd is the launcher's stdin, open for the whole run.
        let bfd = unsafe { BorrowedFd::borrow_raw(fd) };
        let orig = termios::tcgetattr(bfd).map_err(io::Error::from)?;
        let mut raw = orig.clone();
        termios::cfmakeraw(&mut raw);
        if let Ok(mut g) = SAVED.lock() {
            *g = Some((fd, orig));
        }
        install_panic_hook();
        termios::tcsetattr(bfd, SetArg::TCSADRAIN, &raw).map_err(io::Error::from)?;
        Ok(RawMode { fd })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = self.fd;
        restore_saved();
    }
}

/// Put the user's terminal back as it was, if it was changed. Safe to call any number of
/// times, from any exit path.
pub fn restore_saved() {
    let saved = match SAVED.lock() {
        Ok(mut g) => g.take(),
        Err(p) => p.into_inner().take(),
    };
    if let Some((fd, t)) = saved {
        // SAFETY: fd is the launcher's stdin, still open.
        let bfd = unsafe { BorrowedFd::borrow_raw(fd) };
        let _ = termios::tcsetattr(bfd, SetArg::TCSADRAIN, &t);
    }
}

fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_saved();
            prev(info);
        }));
    });
}

/// The window size of `fd`, if it is a terminal.
pub fn window_size(fd: RawFd) -> Option<libc::winsize> {
    // SAFETY: winsize is plain data; TIOCGWINSZ fills it.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes into the winsize we own.
    let r = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
    (r == 0).then_some(ws)
}

/// Set the window size of the terminal `fd` (the kernel then sends SIGWINCH to its
/// foreground process group).
pub fn set_window_size(fd: RawFd, ws: &libc::winsize) -> io::Result<()> {
    // SAFETY: TIOCSWINSZ reads the winsize we own.
    if unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, ws) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A new pseudo-terminal pair, sized like `size`. Both ends are close-on-exec; the cell
/// inherits the slave at clone and makes it its controlling terminal.
pub fn open_pty(size: Option<libc::winsize>) -> io::Result<(OwnedFd, OwnedFd)> {
    let ws = size.map(|w| nix::pty::Winsize {
        ws_row: w.ws_row,
        ws_col: w.ws_col,
        ws_xpixel: w.ws_xpixel,
        ws_ypixel: w.ws_ypixel,
    });
    let p = nix::pty::openpty(ws.as_ref(), None).map_err(io::Error::from)?;
    for fd in [&p.master, &p.slave] {
        nix::fcntl::fcntl(
            fd.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .map_err(io::Error::from)?;
    }
    Ok((p.master, p.slave))
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
