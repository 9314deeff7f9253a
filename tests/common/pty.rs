//! A terminal for taskcell in tests (tests/pty.rs, tests/agent_clis.rs): a pty the test
//! opens, standing in for the user's terminal; taskcell runs on its slave as a terminal
//! emulator starts a shell, and the test holds the master (the "screen" and "keyboard").

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::termios::{self, LocalFlags};

use super::taskcell;

/// A terminal for taskcell: the test holds the master (the "screen" and "keyboard").
pub struct Term {
    pub master: OwnedFd,
    /// Kept to inspect the input queue of the user's terminal.
    pub slave: OwnedFd,
    pub screen: Arc<Mutex<Vec<u8>>>,
    pub child: Child,
}

impl Term {
    pub fn spawn(ws: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Term {
        let ws_size = nix::pty::Winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let p = nix::pty::openpty(Some(&ws_size), None).expect("openpty");
        let mut cmd = taskcell(ws, args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.env("TERM", "xterm");
        let s = p.slave.try_clone().unwrap();
        cmd.stdin(Stdio::from(s.try_clone().unwrap()))
            .stdout(Stdio::from(s.try_clone().unwrap()))
            .stderr(Stdio::from(s));
        // SAFETY: setsid and TIOCSCTTY in the forked child before exec, as a terminal
        // emulator does for the shell it starts.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn taskcell on a pty");
        let screen = Arc::new(Mutex::new(Vec::new()));
        let reader = p.master.try_clone().unwrap();
        let sc = screen.clone();
        std::thread::spawn(move || {
            let mut f = std::fs::File::from(reader);
            let mut buf = [0u8; 4096];
            loop {
                match f.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => sc.lock().unwrap().extend_from_slice(&buf[..n]),
                }
            }
        });
        Term {
            master: p.master,
            slave: p.slave,
            screen,
            child,
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.screen.lock().unwrap()).into_owned()
    }

    /// The answer code of the last question drawn (`type XY then`).
    pub fn code(&self) -> String {
        let text = self.text();
        let at = text.rfind("? type ").expect("a question on the screen") + 7;
        text[at..at + 2].to_string()
    }

    /// How many times a question was drawn.
    pub fn questions(&self) -> usize {
        self.text()
            .matches("\x1b[2K\x1b[7m taskcell: allow")
            .count()
    }

    pub fn wait_for(&self, needle: &str) -> bool {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(15) {
            if self.text().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn type_bytes(&self, b: &[u8]) {
        nix::unistd::write(&self.master, b).expect("write to the terminal");
    }

    pub fn local_flags(&self) -> LocalFlags {
        termios::tcgetattr(&self.master)
            .expect("tcgetattr")
            .local_flags
    }

    pub fn wait(&mut self) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "taskcell did not end: {}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Bytes waiting in the user's terminal's input queue.
    pub fn pending_input(&self) -> i32 {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes an int we own.
        unsafe { libc::ioctl(self.slave.as_raw_fd(), libc::FIONREAD, &mut n) };
        n
    }
}
