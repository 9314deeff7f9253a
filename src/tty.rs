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

/// The user's terminal as it was when taskcell started (modes and line discipline), put
/// back when this value is dropped, whatever the cell did (it never gets the terminal
/// itself, and TIOCSETD is refused by the filter: this is the last line).
pub struct TermGuard {
    fd: RawFd,
    termios: Termios,
    ldisc: libc::c_int,
}

impl TermGuard {
    /// Save the first of fds 0, 1, 2 that is a terminal (None when none is).
    pub fn save() -> Option<TermGuard> {
        (0..3).find_map(|fd| {
            // SAFETY: fds 0-2 are open for the whole run (main makes sure).
            let b = unsafe { BorrowedFd::borrow_raw(fd) };
            let termios = termios::tcgetattr(b).ok()?;
            let mut ldisc: libc::c_int = 0;
            // SAFETY: TIOCGETD writes an int we own.
            if unsafe { libc::ioctl(fd, libc::TIOCGETD, &mut ldisc) } != 0 {
                return None;
            }
            Some(TermGuard { fd, termios, ldisc })
        })
    }
}

impl Drop for TermGuard {
    fn drop(&mut self) {
        let mut now: libc::c_int = 0;
        // SAFETY: TIOCGETD writes an int we own; TIOCSETD reads one.
        unsafe {
            if libc::ioctl(self.fd, libc::TIOCGETD, &mut now) == 0 && now != self.ldisc {
                libc::ioctl(self.fd, libc::TIOCSETD, &self.ldisc);
            }
        }
        // SAFETY: the fd is still open (taskcell's own stdio).
        let b = unsafe { BorrowedFd::borrow_raw(self.fd) };
        if termios::tcgetattr(b).ok().as_ref() != Some(&self.termios) {
            let _ = termios::tcsetattr(b, SetArg::TCSADRAIN, &self.termios);
        }
    }
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
        let mut parser = KeyParser::default();
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
            if keys_to_prompt(&mut parser, &buf[..n]) {
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

/// Feed taskcell's stdin (a terminal the cell must not hold) into the cell's stdin pipe
/// `w`, on a thread of its own, until stdin ends or the cell closes its end. Reads only
/// while taskcell is in the terminal's foreground (SIGTTIN is ignored: a background read
/// fails with EIO and is retried later instead of stopping taskcell).
pub fn feed_stdin(w: OwnedFd) {
    // SAFETY: ignoring SIGTTIN installs no handler; the cell was cloned before.
    unsafe {
        libc::signal(libc::SIGTTIN, libc::SIG_IGN);
    }
    let _ = std::thread::Builder::new()
        .name("taskcell-stdin".into())
        .spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                let n = match nix::unistd::read(0, &mut buf) {
                    Ok(0) => return,
                    Ok(n) => n,
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(nix::errno::Errno::EIO | nix::errno::Errno::EAGAIN) => {
                        std::thread::sleep(std::time::Duration::from_millis(200));
                        continue;
                    }
                    Err(_) => return,
                };
                let mut data = &buf[..n];
                while !data.is_empty() {
                    match nix::unistd::write(&w, data) {
                        Ok(k) => data = &data[k..],
                        Err(nix::errno::Errno::EINTR) => {}
                        Err(_) => return,
                    }
                }
            }
        });
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
        if write_screen(out.as_raw_fd(), &buf[..n]).is_err() {
            return Vec::new();
        }
    }
    Vec::new()
}

// ---------------------------------------------------------------------------------------
// taskcell's own questions on a terminal the cell also writes to.
//
// While a question is open: the cell's output to the terminal is held (bounded: the relay
// blocks when the buffer is full, so the cell waits), the line is drawn once from a known
// state and redrawn only when the window size changes, keys go to the question, and
// replies the terminal sends (escape sequences: device attributes, cursor reports, focus,
// bracketed paste) are never taken as the answer but kept for the cell. The answer needs
// a code shown only in the question, so a question the cell draws itself cannot be
// answered with keys that approve anything.

/// Output held while a question is open, at most this much; then the relay waits.
pub const HOLD_MAX: usize = 1 << 20;

struct ScreenState {
    /// A question is open: writes to a terminal are held.
    asking: bool,
    held: Vec<(RawFd, Vec<u8>)>,
    held_len: usize,
}

static SCREEN_STATE: Mutex<ScreenState> = Mutex::new(ScreenState {
    asking: false,
    held: Vec::new(),
    held_len: 0,
});
static SCREEN_CV: std::sync::Condvar = std::sync::Condvar::new();

fn screen() -> std::sync::MutexGuard<'static, ScreenState> {
    match SCREEN_STATE.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

fn write_fd(fd: RawFd, mut data: &[u8]) -> io::Result<()> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    // SAFETY: fd is taskcell's own stdout or stderr, open for the whole run.
    let bfd = unsafe { BorrowedFd::borrow_raw(fd) };
    while !data.is_empty() {
        match nix::unistd::write(bfd, data) {
            Ok(n) => data = &data[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(nix::errno::Errno::EAGAIN) => {
                // Our stdout was left non-blocking by someone else: wait until writable.
                let mut fds = [PollFd::new(bfd, PollFlags::POLLOUT)];
                let _ = poll(&mut fds, PollTimeout::NONE);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The cell may set the user's clipboard (`[terminal] clipboard = true`).
static CLIPBOARD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Let OSC 52 (clipboard writes) through to the user's terminal.
pub fn allow_clipboard(allow: bool) {
    CLIPBOARD.store(allow, std::sync::atomic::Ordering::Relaxed);
}

/// Removes OSC 52 (`ESC ] 52 ; … BEL` or `… ESC \`: set or query the clipboard) from a
/// stream, across chunks; everything else passes unchanged. At most the start of a
/// possible OSC (`ESC ] 5 2`) is held back.
#[derive(Debug, Default)]
pub struct ClipboardFilter {
    state: Osc,
    held: Vec<u8>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Osc {
    #[default]
    Ground,
    Esc,
    /// After `ESC ]`: the number, held.
    Number,
    /// Inside an OSC 52: dropped until its end.
    Drop,
    DropEsc,
}

impl ClipboardFilter {
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                Osc::Ground => match input[i..].iter().position(|&b| b == 0x1b) {
                    None => {
                        out.extend_from_slice(&input[i..]);
                        return;
                    }
                    Some(p) => {
                        out.extend_from_slice(&input[i..i + p]);
                        i += p + 1;
                        self.state = Osc::Esc;
                    }
                },
                Osc::Esc => {
                    if input[i] == b']' {
                        self.held.clear();
                        self.state = Osc::Number;
                    } else {
                        out.push(0x1b);
                        self.state = if input[i] == 0x1b {
                            Osc::Esc
                        } else {
                            out.push(input[i]);
                            Osc::Ground
                        };
                    }
                    i += 1;
                }
                Osc::Number => {
                    let b = input[i];
                    if b == b';' && self.held == b"52" {
                        self.state = Osc::Drop;
                        i += 1;
                    } else if b.is_ascii_digit() && self.held.len() < 4 {
                        self.held.push(b);
                        i += 1;
                    } else {
                        // Another OSC (a title, a colour): passes.
                        out.extend_from_slice(b"\x1b]");
                        out.extend_from_slice(&self.held);
                        self.held.clear();
                        self.state = Osc::Ground;
                    }
                }
                Osc::Drop => match input[i..].iter().position(|&b| b == 0x07 || b == 0x1b) {
                    None => return,
                    Some(p) => {
                        self.state = if input[i + p] == 0x07 {
                            Osc::Ground
                        } else {
                            Osc::DropEsc
                        };
                        i += p + 1;
                    }
                },
                Osc::DropEsc => {
                    // ESC \ ends it; any other ESC also ends the string (as terminals do).
                    self.state = if input[i] == b'\\' {
                        i += 1;
                        Osc::Ground
                    } else {
                        Osc::Esc
                    };
                    // Otherwise this byte is read again, as the one after an ESC.
                }
            }
        }
    }
}

/// Per output fd (1, 2): whether it is a terminal, and its clipboard filter.
static FILTERS: Mutex<[Option<(bool, ClipboardFilter)>; 3]> = Mutex::new([None, None, None]);

/// `data` with OSC 52 removed when `fd` is a terminal and the clipboard is not allowed
/// (None: pass `data` as it is).
fn filtered(fd: RawFd, data: &[u8]) -> Option<Vec<u8>> {
    let idx = usize::try_from(fd).ok().filter(|i| *i < 3)?;
    if CLIPBOARD.load(std::sync::atomic::Ordering::Relaxed) {
        return None;
    }
    let mut g = match FILTERS.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    let slot = g[idx].get_or_insert_with(|| {
        (
            nix::unistd::isatty(fd).unwrap_or(false),
            ClipboardFilter::default(),
        )
    });
    if !slot.0 {
        return None;
    }
    let mut out = Vec::with_capacity(data.len());
    slot.1.push(data, &mut out);
    Some(out)
}

/// Write the cell's output (`data`) to taskcell's `fd` (1 or 2). One writer at a time,
/// so an escape sequence is never cut by a question; on a terminal, clipboard writes
/// (OSC 52) are removed unless allowed; while a question is open, output for a terminal
/// is held (and this call waits when the buffer is full).
pub fn write_screen(fd: RawFd, data: &[u8]) -> io::Result<()> {
    let owned = filtered(fd, data);
    let data = owned.as_deref().unwrap_or(data);
    let mut g = screen();
    loop {
        if !g.asking || !nix::unistd::isatty(fd).unwrap_or(false) {
            return write_fd(fd, data);
        }
        if g.held_len + data.len() <= HOLD_MAX || g.held_len == 0 {
            g.held_len += data.len();
            g.held.push((fd, data.to_vec()));
            return Ok(());
        }
        g = match SCREEN_CV.wait(g) {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
    }
}

/// A question holds the screen while this value lives: the cell's output is held, and
/// written out (in order) when it is dropped.
struct ScreenHold;

impl ScreenHold {
    fn take() -> ScreenHold {
        screen().asking = true;
        ScreenHold
    }

    /// Write taskcell's own bytes while the cell's are held.
    fn draw(&self, fd: RawFd, seq: &[u8]) {
        let _g = screen();
        let _ = write_fd(fd, seq);
    }
}

impl Drop for ScreenHold {
    fn drop(&mut self) {
        let mut g = screen();
        for (fd, data) in std::mem::take(&mut g.held) {
            let _ = write_fd(fd, &data);
        }
        g.held_len = 0;
        g.asking = false;
        SCREEN_CV.notify_all();
    }
}

/// What a byte from the terminal is: typed by the user, or part of an escape sequence
/// (a reply the terminal sends, a function key, a paste).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyClass {
    Typed,
    Sequence,
}

/// Splits the terminal's input into typed keys and escape sequences (CSI, SS3, OSC, DCS,
/// APC, PM, SOS, and everything between bracketed paste markers), byte by byte, across
/// reads.
#[derive(Debug, Default)]
pub struct KeyParser {
    state: KeyState,
    /// Inside `ESC [ 200 ~` … `ESC [ 201 ~`.
    paste: bool,
    /// The current CSI's parameters (to see the paste markers).
    params: Vec<u8>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum KeyState {
    #[default]
    Ground,
    Esc,
    Csi,
    Ss3,
    /// OSC/DCS/APC/PM/SOS: until BEL or ESC \.
    Str,
    StrEsc,
}

impl KeyParser {
    pub fn feed(&mut self, b: u8) -> KeyClass {
        use KeyState::*;
        let (next, class) = match (self.state, b) {
            (Ground, 0x1b) => (Esc, KeyClass::Sequence),
            (Ground, _) if self.paste => (Ground, KeyClass::Sequence),
            (Ground, _) => (Ground, KeyClass::Typed),
            (Esc, b'[') => {
                self.params.clear();
                (Csi, KeyClass::Sequence)
            }
            (Esc, b'O') => (Ss3, KeyClass::Sequence),
            (Esc, b']' | b'P' | b'_' | b'^' | b'X') => (Str, KeyClass::Sequence),
            (Esc, 0x1b) => (Esc, KeyClass::Sequence),
            // ESC + key (Alt-key): a sequence too, never an answer.
            (Esc, _) => (Ground, KeyClass::Sequence),
            (Csi, 0x40..=0x7e) => {
                match (b, self.params.as_slice()) {
                    (b'~', b"200") => self.paste = true,
                    (b'~', b"201") => self.paste = false,
                    _ => {}
                }
                (Ground, KeyClass::Sequence)
            }
            (Csi, _) => {
                if self.params.len() < 64 {
                    self.params.push(b);
                }
                (Csi, KeyClass::Sequence)
            }
            (Ss3, _) => (Ground, KeyClass::Sequence),
            (Str, 0x07) => (Ground, KeyClass::Sequence),
            (Str, 0x1b) => (StrEsc, KeyClass::Sequence),
            (Str, _) => (Str, KeyClass::Sequence),
            (StrEsc, b'\\') => (Ground, KeyClass::Sequence),
            (StrEsc, 0x1b) => (StrEsc, KeyClass::Sequence),
            (StrEsc, _) => (Str, KeyClass::Sequence),
        };
        self.state = next;
        class
    }
}

/// The user's choice for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// This request only.
    Once,
    /// This host:port for the rest of the cell's life.
    Always,
    /// Refuse this request.
    Deny,
    /// Refuse this host:port for the rest of the cell's life, without asking again.
    DenyAlways,
}

impl Choice {
    pub fn allows(self) -> bool {
        matches!(self, Choice::Once | Choice::Always)
    }
    pub fn remembered(self) -> bool {
        matches!(self, Choice::Always | Choice::DenyAlways)
    }
    pub fn describe(self) -> &'static str {
        match self {
            Choice::Once => "once",
            Choice::Always => "for the rest of the cell's life",
            Choice::Deny => "this request",
            Choice::DenyAlways => "for the rest of the cell's life",
        }
    }
}

/// Letters of the answer code: no vowels (no words), none of the choice keys, no y/n.
const CODE_LETTERS: &[u8] = b"cfhjkmprstvwxz";

/// One question: its text, the code the answer must start with, and the keys typed so
/// far. Pure: fed keys, it says when it is answered.
#[derive(Debug)]
pub struct Question {
    /// What is asked for (already cleaned: masked, escaped).
    subject: String,
    code: [u8; 2],
    typed: usize,
}

impl Question {
    /// A question about `subject` (cleaned by the caller) with a fresh random code.
    pub fn new(subject: &str) -> Question {
        let mut r = [0u8; 2];
        // SAFETY: getrandom fills the buffer we own.
        let n = unsafe { libc::getrandom(r.as_mut_ptr().cast(), r.len(), 0) };
        if n != 2 {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(7);
            r = [(t >> 3) as u8, (t >> 11) as u8];
        }
        let pick = |x: u8| CODE_LETTERS[x as usize % CODE_LETTERS.len()];
        Question::with_code(subject, [pick(r[0]), pick(r[1])])
    }

    pub fn with_code(subject: &str, code: [u8; 2]) -> Question {
        Question {
            subject: subject.to_string(),
            code,
            typed: 0,
        }
    }

    pub fn code(&self) -> String {
        String::from_utf8_lossy(&self.code).into_owned()
    }

    /// A typed key (never an escape sequence's byte): `Some` once the code and a choice
    /// were typed. A wrong key starts over; Ctrl-C denies this request.
    pub fn key(&mut self, b: u8) -> Option<Choice> {
        if b == 0x03 {
            return Some(Choice::Deny);
        }
        if self.typed == 2 {
            let c = match b {
                b'o' => Some(Choice::Once),
                b'a' => Some(Choice::Always),
                b'd' => Some(Choice::Deny),
                b'D' => Some(Choice::DenyAlways),
                _ => None,
            };
            if c.is_some() {
                return c;
            }
            self.typed = 0;
        }
        if b == self.code[self.typed] {
            self.typed += 1;
        } else {
            self.typed = usize::from(b == self.code[0]);
        }
        None
    }

    /// The question on one line of at most `cols - 1` columns (never wraps): the subject
    /// is shortened in its middle when the line would be longer.
    pub fn line(&self, cols: u16) -> String {
        let code = self.code();
        let head = " taskcell: allow ";
        let tail = format!("? type {code} then o=once a=always d=deny D=never ");
        let max = usize::from(cols.max(2)) - 1;
        let room = max.saturating_sub(head.len() + tail.len());
        let subject = shorten(&self.subject, room.max(12));
        let line = format!("{head}{subject}{tail}");
        cut_columns(&line, max)
    }
}

/// Columns a character takes (conservative: anything not ASCII counts as two).
fn columns(c: char) -> usize {
    if c.is_ascii() {
        1
    } else {
        2
    }
}

/// At most `max` columns of `s`.
fn cut_columns(s: &str, max: usize) -> String {
    let mut used = 0;
    let mut out = String::new();
    for c in s.chars() {
        used += columns(c);
        if used > max {
            break;
        }
        out.push(c);
    }
    out
}

/// `s` in at most `max` columns: its start and its end (where a host's domain and port
/// are), joined by `..`.
fn shorten(s: &str, max: usize) -> String {
    let total: usize = s.chars().map(columns).sum();
    if total <= max {
        return s.to_string();
    }
    let keep = max.saturating_sub(2);
    let front = keep / 4;
    let back = keep - front;
    let head = cut_columns(s, front);
    let rev: String = s.chars().rev().collect();
    let tail: String = cut_columns(&rev, back).chars().rev().collect();
    format!("{head}..{tail}")
}

/// Keys for the open question on an interactive cell's terminal (the input relay sends
/// them here), and the terminal's replies kept for the cell until it closes.
struct PromptInput {
    keys: std::sync::mpsc::Sender<u8>,
    for_cell: Vec<u8>,
}

static PROMPT: Mutex<Option<PromptInput>> = Mutex::new(None);

fn prompt_lock() -> std::sync::MutexGuard<'static, Option<PromptInput>> {
    match PROMPT.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Route a chunk the user's terminal sent: with a question open, typed keys to it and
/// escape sequences kept for the cell (returns true); otherwise false (all for the cell).
fn keys_to_prompt(parser: &mut KeyParser, data: &[u8]) -> bool {
    let mut g = prompt_lock();
    let Some(p) = g.as_mut() else {
        for &b in data {
            parser.feed(b);
        }
        return false;
    };
    for &b in data {
        match parser.feed(b) {
            KeyClass::Typed => {
                let _ = p.keys.send(b);
            }
            KeyClass::Sequence => {
                if p.for_cell.len() < 64 * 1024 {
                    p.for_cell.push(b);
                }
            }
        }
    }
    true
}

/// Where a question is drawn and how its keys arrive.
pub enum Asker {
    /// An interactive cell's terminal (taskcell's stdin/stdout), shared with the cell:
    /// drawn on the bottom line, keys from the input relay.
    Overlay {
        /// The cell terminal's master: the terminal's replies are passed there after the
        /// question, and its foreground job repaints.
        master: RawFd,
    },
    /// The launching terminal (`/dev/tty`) while the cell does not use it: drawn on a
    /// line of its own, keys read from it in raw mode.
    Tty(std::fs::File),
}

impl std::fmt::Debug for Asker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Asker::Overlay { .. } => f.write_str("Asker::Overlay"),
            Asker::Tty(_) => f.write_str("Asker::Tty"),
        }
    }
}

/// Draw `q` at the bottom of the window from a known state, with the cell's cursor,
/// attributes, character set and origin mode saved before and restored after (DECSC /
/// DECRC); insert mode is reset. Cut to the width: it never wraps or scrolls.
fn overlay_seq(q: &Question, rows: u16, cols: u16) -> String {
    format!(
        "\x1b7\x1b[?6l\x1b[4l\x1b(B\x0f\x1b[0m\x1b[{rows};1H\x1b[2K\x1b[7m{}\x1b[0m\x1b8",
        q.line(cols)
    )
}

impl Asker {
    /// Ask `q`; `Some(choice)` once answered here, `None` when `give_up()` turned true
    /// first (answered elsewhere, timed out) or the terminal is gone.
    pub fn ask(&self, q: &mut Question, give_up: &dyn Fn() -> bool) -> Option<Choice> {
        match self {
            Asker::Overlay { master } => ask_overlay(*master, q, give_up),
            Asker::Tty(tty) => ask_tty(tty, q, give_up),
        }
    }
}

fn ask_overlay(master: RawFd, q: &mut Question, give_up: &dyn Fn() -> bool) -> Option<Choice> {
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let mut g = prompt_lock();
        if g.is_some() {
            // Another question holds the line; the caller waits for other answers.
            return None;
        }
        *g = Some(PromptInput {
            keys: tx,
            for_cell: Vec::new(),
        });
    }
    let hold = ScreenHold::take();
    let size = || {
        window_size(0)
            .map(|w| (w.ws_row, w.ws_col))
            .filter(|(r, c)| *r > 0 && *c > 0)
            .unwrap_or((24, 80))
    };
    let mut drawn = size();
    hold.draw(1, overlay_seq(q, drawn.0, drawn.1).as_bytes());
    let answer = loop {
        match rx.recv_timeout(std::time::Duration::from_millis(200)) {
            Ok(b) => {
                if let Some(c) = q.key(b) {
                    break Some(c);
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if give_up() {
                    break None;
                }
                let now = size();
                if now != drawn {
                    drawn = now;
                    hold.draw(1, overlay_seq(q, now.0, now.1).as_bytes());
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break None,
        }
    };
    // Clear the line (the cell repaints), then the cell's held output, then its replies.
    hold.draw(
        1,
        format!("\x1b7\x1b[?6l\x1b[{};1H\x1b[2K\x1b8", drawn.0).as_bytes(),
    );
    drop(hold);
    let replies = prompt_lock().take().map(|p| p.for_cell).unwrap_or_default();
    // SAFETY: master is the cell terminal's master, open while the cell runs.
    let m = unsafe { BorrowedFd::borrow_raw(master) };
    let mut data = &replies[..];
    while !data.is_empty() {
        match nix::unistd::write(m, data) {
            Ok(n) => data = &data[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => break,
        }
    }
    repaint(master);
    answer
}

fn ask_tty(tty: &std::fs::File, q: &mut Question, give_up: &dyn Fn() -> bool) -> Option<Choice> {
    use std::io::{Read, Write};
    let fd = tty.as_raw_fd();
    let bfd = tty.as_fd_borrowed();
    let saved = termios::tcgetattr(bfd).ok();
    if let Some(t) = &saved {
        let mut raw = t.clone();
        termios::cfmakeraw(&mut raw);
        // Keep output processing: our own lines end in \r\n anyway.
        let _ = termios::tcsetattr(bfd, SetArg::TCSADRAIN, &raw);
    }
    let cols = window_size(fd)
        .map(|w| w.ws_col)
        .filter(|c| *c > 0)
        .unwrap_or(80);
    let hold = ScreenHold::take();
    let mut w = tty;
    let mut drawn = cols;
    hold.draw(fd, format!("\r\n\x1b[0m\x1b[2K{}", q.line(cols)).as_bytes());
    let mut parser = KeyParser::default();
    let answer = 'outer: loop {
        if give_up() {
            break None;
        }
        let now = window_size(fd)
            .map(|w| w.ws_col)
            .filter(|c| *c > 0)
            .unwrap_or(80);
        if now != drawn {
            drawn = now;
            hold.draw(fd, format!("\r\x1b[2K{}", q.line(now)).as_bytes());
        }
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll on one pollfd we own.
        let n = unsafe { libc::poll(&mut pfd, 1, 200) };
        if n <= 0 {
            continue;
        }
        let mut b = [0u8; 256];
        let got = match w.read(&mut b) {
            Ok(0) | Err(_) => break None,
            Ok(n) => n,
        };
        for &c in &b[..got] {
            // The terminal's replies and pastes are never the answer (and no cell reads
            // this terminal: they are dropped).
            if parser.feed(c) == KeyClass::Typed {
                if let Some(ch) = q.key(c) {
                    break 'outer Some(ch);
                }
            }
        }
    };
    let said = match answer {
        Some(c) if c.allows() => format!("allowed ({})", c.describe()),
        Some(c) => format!("denied ({})", c.describe()),
        None => "answered elsewhere or timed out".into(),
    };
    hold.draw(fd, format!("\r\x1b[2K taskcell: {said}\r\n").as_bytes());
    let _ = w.flush();
    drop(hold);
    if let Some(t) = &saved {
        let _ = termios::tcsetattr(bfd, SetArg::TCSADRAIN, t);
    }
    answer
}

trait AsFdBorrowed {
    fn as_fd_borrowed(&self) -> BorrowedFd<'_>;
}

impl AsFdBorrowed for std::fs::File {
    fn as_fd_borrowed(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.as_fd()
    }
}

/// Ask the cell's foreground job to redraw its screen.
fn repaint(master: RawFd) {
    let mut pgrp: libc::pid_t = 0;
    // SAFETY: TIOCGPGRP writes the foreground process group (as a pid of our own PID
    // namespace) into our local.
    if unsafe { libc::ioctl(master, libc::TIOCGPGRP, &mut pgrp) } == 0 && pgrp > 0 {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pgrp),
            nix::sys::signal::Signal::SIGWINCH,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipboard_writes_are_removed_titles_pass() {
        let all = |chunks: &[&[u8]]| {
            let mut f = ClipboardFilter::default();
            let mut out = Vec::new();
            for c in chunks {
                f.push(c, &mut out);
            }
            out
        };
        let input: &[u8] =
            b"a\x1b]52;c;cHduZWQ=\x07b\x1b]0;title\x07c\x1b]52;c;eA==\x1b\\d\x1b[1me";
        let want: &[u8] = b"ab\x1b]0;title\x07cd\x1b[1me";
        assert_eq!(all(&[input]), want);
        // Cut at every position.
        for cut in 0..input.len() {
            assert_eq!(all(&[&input[..cut], &input[cut..]]), want, "cut at {cut}");
        }
        assert_eq!(all(&[b"x\x1b", b"\x1b[2J"]), b"x\x1b\x1b[2J");
        assert_eq!(all(&[b"\x1b]5", b"2;c;?\x07z"]), b"z");
        assert_eq!(all(&[b"\x1b]521;x\x07"]), b"\x1b]521;x\x07");
    }

    #[test]
    fn replies_and_pastes_are_not_keys() {
        let mut p = KeyParser::default();
        let classes = |p: &mut KeyParser, s: &[u8]| -> Vec<KeyClass> {
            s.iter().map(|&b| p.feed(b)).collect()
        };
        // DA reply, CPR, focus in, an OSC reply, a paste: all sequence bytes.
        for s in [
            &b"\x1b[?64;1;2;6;22c"[..],
            b"\x1b[12;40R",
            b"\x1b[I",
            b"\x1b]11;rgb:0000/0000/0000\x1b\\",
            b"\x1b[200~fwo y\r\x1b[201~",
            b"\x1bOA",
        ] {
            assert!(
                classes(&mut p, s).iter().all(|c| *c == KeyClass::Sequence),
                "{s:?}"
            );
        }
        assert_eq!(classes(&mut p, b"y"), vec![KeyClass::Typed]);
        // Split across reads.
        assert_eq!(p.feed(0x1b), KeyClass::Sequence);
        assert_eq!(p.feed(b'['), KeyClass::Sequence);
        assert_eq!(p.feed(b'c'), KeyClass::Sequence);
        assert_eq!(p.feed(b'c'), KeyClass::Typed);
    }

    #[test]
    fn only_the_code_and_a_choice_answer() {
        let mut q = Question::with_code("x.test:443", *b"fw");
        for b in b"y\ryes\r\x0d" {
            assert_eq!(q.key(*b), None);
        }
        assert_eq!(q.key(b'o'), None, "a choice without the code");
        assert_eq!(q.key(b'f'), None);
        assert_eq!(q.key(b'w'), None);
        assert_eq!(q.key(b'a'), Some(Choice::Always));
        let mut q = Question::with_code("x.test:443", *b"ff");
        assert_eq!(q.key(b'f'), None);
        assert_eq!(q.key(b'x'), None);
        assert_eq!(q.key(b'f'), None);
        assert_eq!(q.key(b'f'), None);
        assert_eq!(q.key(b'D'), Some(Choice::DenyAlways));
        assert_eq!(Question::new("h").code().len(), 2);
    }

    #[test]
    fn the_question_fits_one_row() {
        let host = format!("{}.example.test:443", "a".repeat(53));
        assert_eq!(host.len(), 70);
        let q = Question::with_code(&host, *b"fw");
        for cols in [20u16, 40, 80, 132] {
            let l = q.line(cols);
            assert!(l.chars().count() < cols as usize, "{cols}: {l}");
        }
        let l = q.line(80);
        assert!(l.contains("type fw then") && l.contains(".test:443"), "{l}");
        let wide = q.line(200);
        assert!(wide.contains(&host), "{wide}");
    }
}
