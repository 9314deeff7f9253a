//! Approvals for hosts no rule mentions (`ask = true`): an `approval_command`, or an
//! answer over the control socket (`taskcell approve/deny`). No answer in time: deny.

use std::process::{Command, Stdio};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use super::Shared;
use crate::plan::allowlist::normalize_host;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Allowed; by whom.
    Approved(String),
    /// Refused; by whom.
    Denied(String),
    TimedOut,
}

/// A request waiting for an answer.
#[derive(Debug, Clone)]
pub struct Pending {
    pub id: u64,
    pub host: String,
    pub port: u16,
    pub since: Instant,
    answer: Option<Answer>,
}

#[derive(Debug, Default)]
struct State {
    /// (host, port or any port, who approved): valid for the cell's life.
    approved: Vec<(String, Option<u16>, String)>,
    pending: Vec<Pending>,
    next_id: u64,
}

#[derive(Debug, Default)]
pub struct Approvals {
    state: Mutex<State>,
    cv: Condvar,
    /// The launching user's terminal, when it is free (taskcell's stdin is not a
    /// terminal, so the cell is not using it): requests are also asked there.
    tty: Mutex<Option<std::fs::File>>,
    /// An interactive cell's terminal, shared with the cell: requests are asked on its
    /// bottom line.
    overlay: Mutex<Option<crate::tty::Overlay>>,
}

/// `HOST[:PORT]` as typed after `taskcell approve SESSION`.
pub fn parse_target(s: &str) -> Result<(String, Option<u16>), String> {
    let (h, p) = match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.ends_with(']') => (h, Some(p)),
        _ => (s, None),
    };
    let port = match p {
        Some(p) => Some(
            p.parse::<u16>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("bad port in {s:?}"))?,
        ),
        None => None,
    };
    if h.is_empty() {
        return Err("empty host".into());
    }
    Ok((normalize_host(h), port))
}

impl Approvals {
    /// Ask on this terminal too (one prompt at a time).
    pub fn set_terminal(&self, tty: std::fs::File) {
        if let Ok(mut t) = self.tty.lock() {
            *t = Some(tty);
        }
    }

    /// Whether request `id` has its answer (or is gone).
    fn is_answered(&self, id: u64) -> bool {
        self.state
            .lock()
            .map(|st| {
                st.pending
                    .iter()
                    .find(|p| p.id == id)
                    .is_none_or(|p| p.answer.is_some())
            })
            .unwrap_or(true)
    }

    /// Ask on an interactive cell's terminal (an overlay on its bottom line).
    pub fn set_overlay(&self, overlay: crate::tty::Overlay) {
        if let Ok(mut o) = self.overlay.lock() {
            *o = Some(overlay);
        }
    }

    /// Tell the user one line: on the overlay of an interactive cell (shown for a few
    /// seconds, then the cell repaints), else on taskcell's stderr.
    pub fn note(&self, line: &str) {
        let shown = self
            .overlay
            .lock()
            .ok()
            .and_then(|o| o.as_ref().map(|o| o.note(line)))
            .is_some();
        if !shown {
            eprintln!("{line}");
        }
    }

    /// Ask on the overlay, if there is one, until `id` is answered or the deadline.
    fn prompt_overlay(&self, id: u64, host: &str, port: u16, deadline: Instant) -> bool {
        let Ok(guard) = self.overlay.try_lock() else {
            return false;
        };
        let Some(overlay) = guard.as_ref() else {
            return false;
        };
        let answered = || Instant::now() >= deadline || self.is_answered(id);
        let q = format!("allow the cell to reach {host}:{port} for the rest of its life?");
        if let Some(allow) = overlay.ask(&q, &answered) {
            self.answer_id(id, host, port, allow, "the terminal");
        }
        true
    }

    /// Prompt on the terminal, if it is free, until `id` is answered (here or
    /// elsewhere) or the deadline passes. Returns without waiting when another request
    /// holds the terminal.
    fn prompt(&self, id: u64, host: &str, port: u16, deadline: Instant) {
        use std::io::{Read, Write};
        use std::os::fd::AsRawFd;
        let Ok(mut guard) = self.tty.try_lock() else {
            return;
        };
        let Some(tty) = guard.as_mut() else {
            return;
        };
        let _ = write!(
            tty,
            "\ntaskcell: allow the cell to reach {host}:{port} for the rest of its life? [y/N] "
        );
        let _ = tty.flush();
        let mut line = Vec::new();
        loop {
            if self.is_answered(id) || Instant::now() >= deadline {
                let _ = writeln!(tty, "(answered elsewhere or timed out)");
                return;
            }
            let mut pfd = libc::pollfd {
                fd: tty.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: poll on one pollfd we own.
            let n = unsafe { libc::poll(&mut pfd, 1, 200) };
            if n <= 0 {
                continue;
            }
            let mut b = [0u8; 64];
            let got = match tty.read(&mut b) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            line.extend_from_slice(&b[..got]);
            if let Some(pos) = line.iter().position(|&c| c == b'\n') {
                let text = String::from_utf8_lossy(&line[..pos])
                    .trim()
                    .to_ascii_lowercase();
                let allow = text == "y" || text == "yes";
                self.answer_id(id, host, port, allow, "the terminal");
                return;
            }
        }
    }

    /// Answer one request (and remember an approval for host:port).
    fn answer_id(&self, id: u64, host: &str, port: u16, allow: bool, by: &str) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        if allow {
            st.approved
                .push((normalize_host(host), Some(port), by.to_string()));
        }
        if let Some(p) = st.pending.iter_mut().find(|p| p.id == id) {
            if p.answer.is_none() {
                p.answer = Some(if allow {
                    Answer::Approved(by.to_string())
                } else {
                    Answer::Denied(by.to_string())
                });
            }
        }
        self.cv.notify_all();
    }

    /// Who approved `host:port` earlier in this cell's life, if anyone.
    pub fn approved(&self, host: &str, port: u16) -> Option<String> {
        let h = normalize_host(host);
        let st = self.state.lock().ok()?;
        st.approved
            .iter()
            .find(|(ah, ap, _)| *ah == h && ap.is_none_or(|p| p == port))
            .map(|(_, _, by)| by.clone())
    }

    /// Requests waiting now.
    pub fn pending(&self) -> Vec<Pending> {
        self.state
            .lock()
            .map(|s| {
                s.pending
                    .iter()
                    .filter(|p| p.answer.is_none())
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Answer: approve (remembered for the cell's life) or deny every pending request
    /// for `host` (and `port`, when given). Returns how many were waiting.
    pub fn answer(&self, host: &str, port: Option<u16>, allow: bool, by: &str) -> usize {
        let h = normalize_host(host);
        let Ok(mut st) = self.state.lock() else {
            return 0;
        };
        if allow {
            st.approved.push((h.clone(), port, by.to_string()));
        }
        let mut n = 0;
        for p in st.pending.iter_mut() {
            if p.answer.is_none() && p.host == h && port.is_none_or(|x| x == p.port) {
                p.answer = Some(if allow {
                    Answer::Approved(by.to_string())
                } else {
                    Answer::Denied(by.to_string())
                });
                n += 1;
            }
        }
        self.cv.notify_all();
        n
    }

    /// Ask about `host:port` and wait for the answer (at most the plan's ask_timeout).
    pub fn ask(&self, shared: &Shared, host: &str, port: u16) -> Answer {
        let timeout = shared.plan.ask_timeout;
        if let Some(argv) = &shared.plan.approval_command {
            let a = run_command(argv, host, port, &shared.session, timeout);
            if let Answer::Approved(by) = &a {
                self.answer(host, Some(port), true, by);
            }
            return a;
        }
        let h = normalize_host(host);
        let id = {
            let Ok(mut st) = self.state.lock() else {
                return Answer::TimedOut;
            };
            st.next_id += 1;
            let id = st.next_id;
            st.pending.push(Pending {
                id,
                host: h.clone(),
                port,
                since: Instant::now(),
                answer: None,
            });
            id
        };
        // On an interactive cell's terminal a stray line would corrupt the cell's screen;
        // the overlay asks there instead.
        let interactive = self.overlay.lock().map(|o| o.is_some()).unwrap_or(false);
        if !interactive {
            eprintln!(
                "taskcell: the cell asks to reach {h}:{port}; answer with `taskcell approve {s} {h}:{port}` or `taskcell deny {s} {h}:{port}` (denied in {}s)",
                timeout.as_secs(),
                s = shared.session
            );
        }
        let deadline = Instant::now() + timeout;
        loop {
            if !self.prompt_overlay(id, &h, port, deadline) {
                self.prompt(id, &h, port, deadline);
            }
            let Ok(st) = self.state.lock() else {
                return Answer::TimedOut;
            };
            let idx = st.pending.iter().position(|p| p.id == id);
            let done = idx.is_none_or(|i| st.pending[i].answer.is_some());
            if done || Instant::now() >= deadline {
                break;
            }
            // Wait a little, then offer the terminal again (another prompt may hold it).
            let _ = self.cv.wait_timeout(st, Duration::from_millis(200));
        }
        let Ok(mut st) = self.state.lock() else {
            return Answer::TimedOut;
        };
        loop {
            let idx = st.pending.iter().position(|p| p.id == id);
            if let Some(i) = idx {
                if let Some(a) = st.pending[i].answer.clone() {
                    st.pending.remove(i);
                    return a;
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                if let Some(i) = idx {
                    st.pending.remove(i);
                }
                return Answer::TimedOut;
            }
            st = match self.cv.wait_timeout(st, left) {
                Ok((g, _)) => g,
                Err(_) => return Answer::TimedOut,
            };
        }
    }
}

/// Run the approval command with TASKCELL_HOST, TASKCELL_PORT and TASKCELL_SESSION in
/// its environment; exit 0 approves. Killed when it takes longer than `timeout`.
fn run_command(argv: &[String], host: &str, port: u16, session: &str, timeout: Duration) -> Answer {
    let Some((prog, args)) = argv.split_first() else {
        return Answer::Denied("an empty approval_command".into());
    };
    let child = Command::new(prog)
        .args(args)
        .env("TASKCELL_HOST", host)
        .env("TASKCELL_PORT", port.to_string())
        .env("TASKCELL_SESSION", session)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("approval_command {prog}: {e}");
            return Answer::Denied(format!("approval_command (could not start {prog}: {e})"));
        }
    };
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(st)) if st.success() => return Answer::Approved("approval_command".into()),
            Ok(Some(st)) => return Answer::Denied(format!("approval_command ({st})")),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Answer::TimedOut;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Answer::Denied(format!("approval_command ({e})")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            parse_target("Example.com:443").unwrap(),
            ("example.com".into(), Some(443))
        );
        assert_eq!(
            parse_target("example.com").unwrap(),
            ("example.com".into(), None)
        );
        assert_eq!(
            parse_target("[::1]:22").unwrap(),
            ("[::1]".into(), Some(22))
        );
        assert!(parse_target("x:0").is_err());
        assert!(parse_target(":1").is_err());
    }

    #[test]
    fn approvals_are_remembered_per_host_and_port() {
        let a = Approvals::default();
        assert_eq!(a.approved("x.test", 443), None);
        a.answer("x.test", Some(443), true, "someone");
        assert_eq!(a.approved("X.test", 443).as_deref(), Some("someone"));
        assert_eq!(a.approved("x.test", 80), None);
        a.answer("y.test", None, true, "someone");
        assert!(a.approved("y.test", 8080).is_some());
        a.answer("z.test", None, false, "someone");
        assert!(a.approved("z.test", 443).is_none());
    }
}
