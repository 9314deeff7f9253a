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
    /// (host, port, who refused) "deny for this cell": refused without asking again.
    denied: Vec<(String, u16, String)>,
    pending: Vec<Pending>,
    next_id: u64,
}

#[derive(Debug, Default)]
pub struct Approvals {
    state: Mutex<State>,
    cv: Condvar,
    /// Where requests are asked: an interactive cell's terminal (an overlay on its bottom
    /// line), or the launching user's terminal when it is free (taskcell's stdin is not a
    /// terminal, so the cell is not using it). One question at a time.
    asker: Mutex<Option<crate::tty::Asker>>,
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
    /// Ask on the launching terminal (`/dev/tty`) too (one question at a time).
    pub fn set_terminal(&self, tty: std::fs::File) {
        if let Ok(mut t) = self.asker.lock() {
            *t = Some(crate::tty::Asker::Tty(tty));
        }
    }

    /// Ask on an interactive cell's terminal (an overlay on its bottom line); `master`
    /// is the cell terminal's master.
    pub fn set_overlay(&self, master: std::os::fd::RawFd) {
        if let Ok(mut o) = self.asker.lock() {
            *o = Some(crate::tty::Asker::Overlay { master });
        }
    }

    fn has_overlay(&self) -> bool {
        self.asker
            .lock()
            .map(|o| matches!(*o, Some(crate::tty::Asker::Overlay { .. })))
            .unwrap_or(false)
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

    /// Tell the user one line (the cell's words in it are cleaned): on taskcell's stderr,
    /// or, while an interactive cell owns the screen, queued for after it (listed by
    /// `taskcell sessions` meanwhile, audited).
    pub fn note(&self, line: &str) {
        crate::display::diagnostic(line);
    }

    /// Ask on the terminal, if there is one and it is free, until `id` is answered (here
    /// or elsewhere) or the deadline passes. Returns without waiting when another request
    /// holds the terminal.
    fn prompt(&self, id: u64, host: &str, port: u16, deadline: Instant) {
        let Ok(guard) = self.asker.try_lock() else {
            return;
        };
        let Some(asker) = guard.as_ref() else {
            return;
        };
        let answered = || Instant::now() >= deadline || self.is_answered(id);
        // The host is the cell's word: masked and escaped before it is shown.
        let subject = format!("{}:{port}", crate::display::clean(host));
        let mut q = crate::tty::Question::new(&subject);
        if let Some(choice) = asker.ask(&mut q, &answered) {
            let by = format!("the terminal ({})", choice.describe());
            self.answer_id(id, host, port, choice, &by);
        }
    }

    /// Answer one request; remember the choice for host:port when it says so.
    fn answer_id(&self, id: u64, host: &str, port: u16, choice: crate::tty::Choice, by: &str) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        let allow = choice.allows();
        if choice.remembered() {
            if allow {
                st.approved
                    .push((normalize_host(host), Some(port), by.to_string()));
            } else {
                st.denied.push((normalize_host(host), port, by.to_string()));
            }
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

    /// Who refused `host:port` for the rest of the cell's life, if anyone.
    fn denied(&self, host: &str, port: u16) -> Option<String> {
        let h = normalize_host(host);
        let st = self.state.lock().ok()?;
        st.denied
            .iter()
            .find(|(dh, dp, _)| *dh == h && *dp == port)
            .map(|(_, _, by)| by.clone())
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
        if let Some(by) = self.denied(&h, port) {
            return Answer::Denied(by);
        }
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
        if !self.has_overlay() {
            // The host is the cell's word: masked and escaped.
            let hc = crate::display::clean(&h);
            eprintln!(
                "taskcell: the cell asks to reach {hc}:{port}; answer with `taskcell approve {s} {hc}:{port}` or `taskcell deny {s} {hc}:{port}` (denied in {}s)",
                timeout.as_secs(),
                s = shared.session
            );
        }
        let deadline = Instant::now() + timeout;
        loop {
            self.prompt(id, &h, port, deadline);
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
