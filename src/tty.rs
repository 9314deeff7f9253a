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

/// The two directions of an interactive cell's terminal.
pub struct Relay {
    /// Read the cell's screen from here (a duplicate of the master).
    pub output: OwnedFd,
    /// Keystrokes from taskcell's stdin to the cell.
    pub input: Input,
}

impl Relay {
    pub fn new(master: &OwnedFd) -> io::Result<Relay> {
        Ok(Relay {
            output: master.try_clone()?,
            input: Input {
                master: master.try_clone()?,
            },
        })
    }
}

pub struct Input {
    master: OwnedFd,
}

impl Input {
    /// Copy taskcell's stdin to the cell's terminal until the cell's side hangs up (every
    /// process holding it ended) or stdin ends. Keys pass as bytes: in raw mode Ctrl-C is
    /// 0x03, which the cell's terminal turns into SIGINT for the cell's foreground job.
    pub fn run(self) {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        // SAFETY: fd 0 is taskcell's stdin, open for the whole run.
        let stdin = unsafe { BorrowedFd::borrow_raw(0) };
        let mut buf = [0u8; 4096];
        let mut stdin_open = true;
        loop {
            let mut fds = [
                PollFd::new(self.master.as_fd(), PollFlags::empty()),
                PollFd::new(
                    stdin,
                    if stdin_open {
                        PollFlags::POLLIN
                    } else {
                        PollFlags::empty()
                    },
                ),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return,
                Ok(_) => {}
            }
            let hup = fds[0]
                .revents()
                .is_some_and(|r| r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR));
            if hup {
                return;
            }
            if !stdin_open {
                continue;
            }
            let ready = fds[1].revents().unwrap_or(PollFlags::empty());
            if ready.is_empty() {
                continue;
            }
            let n = match nix::unistd::read(0, &mut buf) {
                Ok(0) | Err(_) => {
                    // stdin ended: keep waiting for the cell, forward nothing more.
                    stdin_open = false;
                    continue;
                }
                Ok(n) => n,
            };
            if keys_to_prompt(&buf[..n]) {
                continue;
            }
            let mut data = &buf[..n];
            while !data.is_empty() {
                match nix::unistd::write(&self.master, data) {
                    Ok(w) => data = &data[w..],
                    Err(nix::errno::Errno::EINTR) => {}
                    Err(_) => return,
                }
            }
        }
    }
}

/// Copy the cell's screen to `to` unchanged (no secret to mask) until the cell's side of
/// the terminal is closed.
pub fn copy_out(from: OwnedFd, to: RawFd) -> Vec<(String, u64)> {
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: `to` is taskcell's own stdout, open for the whole run.
    let out = unsafe { BorrowedFd::borrow_raw(to) };
    loop {
        let n = match nix::unistd::read(from.as_raw_fd(), &mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            // EIO: every process holding the cell's terminal has ended.
            Err(_) => break,
        };
        let _g = SCREEN.lock();
        let mut data = &buf[..n];
        while !data.is_empty() {
            match nix::unistd::write(out, data) {
                Ok(w) => data = &data[w..],
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return Vec::new(),
            }
        }
    }
    Vec::new()
}

/// While a prompt of taskcell's own is shown on an interactive cell's terminal, the keys
/// typed go to it instead of the cell.
static PROMPT_KEYS: Mutex<Option<std::sync::mpsc::Sender<u8>>> = Mutex::new(None);

/// Serialises writes to the user's terminal between the cell's output relay and a prompt,
/// so an escape sequence is never cut in two.
pub static SCREEN: Mutex<()> = Mutex::new(());

/// Route `data` (keys from the user) to a pending prompt; returns false when no prompt
/// is waiting (the keys are for the cell).
fn keys_to_prompt(data: &[u8]) -> bool {
    let guard = match PROMPT_KEYS.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    match guard.as_ref() {
        Some(tx) => {
            for b in data {
                let _ = tx.send(*b);
            }
            true
        }
        None => false,
    }
}

/// Asks a yes/no question on the bottom line of an interactive cell's terminal without
/// corrupting the cell's screen: the cursor is saved and restored around each drawing,
/// the line is redrawn while the question waits (the cell may keep printing), and when it
/// is answered the line is cleared and the cell's foreground job gets SIGWINCH to repaint.
#[derive(Debug)]
pub struct Overlay {
    /// The cell terminal's master, to find its foreground job for the repaint.
    master: RawFd,
}

impl Overlay {
    pub fn new(master: RawFd) -> Overlay {
        Overlay { master }
    }

    /// Ask `question`; `Some(answer)` once the user typed y/yes or anything else and
    /// Enter, `None` when `give_up()` turned true first (answered elsewhere, timed out).
    pub fn ask(&self, question: &str, give_up: &dyn Fn() -> bool) -> Option<bool> {
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let mut g = match PROMPT_KEYS.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            if g.is_some() {
                // Another prompt holds the line; the caller waits for other answers.
                return None;
            }
            *g = Some(tx);
        }
        let mut typed = String::new();
        let answer = loop {
            self.draw(&format!(
                "\x1b[7m taskcell: {question} [y/N] \x1b[0m {typed}"
            ));
            match rx.recv_timeout(std::time::Duration::from_millis(200)) {
                Ok(b'\r') | Ok(b'\n') => {
                    let t = typed.trim().to_ascii_lowercase();
                    break Some(t == "y" || t == "yes");
                }
                Ok(0x7f) | Ok(0x08) => {
                    typed.pop();
                }
                // Ctrl-C while asked: no.
                Ok(0x03) => break Some(false),
                Ok(b) if b.is_ascii_graphic() || b == b' ' => {
                    if typed.len() < 16 {
                        typed.push(b as char);
                    }
                }
                Ok(_) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if give_up() {
                        break None;
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break None,
            }
        };
        if let Ok(mut g) = PROMPT_KEYS.lock() {
            *g = None;
        }
        self.draw("");
        self.repaint();
        answer
    }

    /// Show `text` on the bottom line for three seconds (from a thread of its own), then
    /// clear it and let the cell repaint. Unless a question holds the line.
    pub fn note(&self, text: &str) {
        let me = Overlay {
            master: self.master,
        };
        let text = format!("\x1b[7m {text} \x1b[0m");
        let _ = std::thread::Builder::new()
            .name("taskcell-note".into())
            .spawn(move || {
                let asking = PROMPT_KEYS.lock().map(|g| g.is_some()).unwrap_or(true);
                if asking {
                    return;
                }
                me.draw(&text);
                std::thread::sleep(std::time::Duration::from_secs(3));
                me.draw("");
                me.repaint();
            });
    }

    /// Write `text` on the bottom line, cursor saved and restored around it.
    fn draw(&self, text: &str) {
        let rows = window_size(0)
            .map(|w| w.ws_row)
            .filter(|r| *r > 0)
            .unwrap_or(24);
        let seq = format!("\x1b7\x1b[{rows};1H\x1b[2K{text}\x1b8");
        let _g = SCREEN.lock();
        // SAFETY: fd 1 is taskcell's stdout, open for the whole run.
        let out = unsafe { BorrowedFd::borrow_raw(1) };
        let mut data = seq.as_bytes();
        while !data.is_empty() {
            match nix::unistd::write(out, data) {
                Ok(n) => data = &data[n..],
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return,
            }
        }
    }

    /// Ask the cell's foreground job to redraw its screen.
    fn repaint(&self) {
        let mut pgrp: libc::pid_t = 0;
        // SAFETY: TIOCGPGRP writes the foreground process group (as a pid of our own
        // PID namespace) into our local.
        if unsafe { libc::ioctl(self.master, libc::TIOCGPGRP, &mut pgrp) } == 0 && pgrp > 0 {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgrp),
                nix::sys::signal::Signal::SIGWINCH,
            );
        }
    }
}
