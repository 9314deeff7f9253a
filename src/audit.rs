//! The audit log: one JSON object per line, appended to `--audit-log FILE`.
//!
//! Records are written with serde_json in a single `write` on an `O_APPEND` file, so a
//! line is never interleaved with another writer's and never filtered by `RUST_LOG`.
//! Each record is also emitted as a `tracing` event (target `audit`) for diagnostics.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::outcome::{Ending, Outcome};
use crate::plan::limits::Enforcement;
use crate::plan::{Access, Plan};

pub struct Audit {
    file: Option<File>,
    pub session: String,
    /// The first failed write (a full disk): said once, loudly, and at start an error.
    write_error: Option<String>,
}

impl Audit {
    /// Open the log (created mode 0600), or a no-op audit when `path` is None. Refused
    /// when it is a symlink, not a regular file, or inside one of `cell_writable` (the
    /// host paths the cell can write: a cell could turn it into a link to any file).
    pub fn open(
        path: Option<&Path>,
        cell_writable: &[std::path::PathBuf],
    ) -> Result<Audit, String> {
        let file = match path {
            Some(p) => Some(crate::hostfile::open(
                p,
                crate::hostfile::Mode::Append,
                cell_writable,
                "the audit log",
            )?),
            None => None,
        };
        Ok(Audit {
            file,
            session: new_session_id(),
            write_error: None,
        })
    }

    /// A second handle on the log file (for the network proxy's threads).
    pub fn clone_file(&self) -> Option<File> {
        self.file.as_ref().and_then(|f| f.try_clone().ok())
    }

    pub fn record(&mut self, event: &str, fields: Value) {
        if let Err(e) = write_record(self.file.as_mut(), &self.session, event, fields) {
            if self.write_error.is_none() {
                // Loud and once: from here on the session's records may be missing.
                eprintln!(
                    "taskcell: WARNING: writing the audit log failed: {e} (is its disk full?); records of this session are being lost"
                );
                self.write_error = Some(e.to_string());
            }
        }
    }

    /// Why a write to the log failed (the first failure), if one did.
    pub fn write_error(&self) -> Option<&str> {
        self.write_error.as_deref()
    }

    /// The first record: the plan's boundary, with each resource limit and the mechanism
    /// that enforces it on this machine (`limits`).
    pub fn session_start(
        &mut self,
        plan: &Plan,
        limits: &Enforcement,
        tier: &crate::plan::tier::TierReport,
    ) {
        // The plan's digest is a hash of its whole JSON form: not worth computing on the
        // launch path when nobody reads it.
        if self.file.is_none() && !tracing::enabled!(target: "audit", tracing::Level::DEBUG) {
            return;
        }
        let list = |a: Access| -> Vec<String> {
            plan.paths
                .iter()
                .filter(|r| r.access == a && r.symlink.is_none())
                .map(|r| r.path.display().to_string())
                .collect()
        };
        let fields = json!({
            "profile": plan.profile,
            "plan_sha256": plan.digest(),
            "command": plan.process.argv,
            "workspace": plan.workspace,
            "boundary": {
                "read": list(Access::Read),
                "write": list(Access::Write),
                "tmpfs": list(Access::Tmpfs),
                "protect": list(Access::Protect),
                "hide": list(Access::Hide),
                "network": plan.net.mode.as_str(),
                "env": plan.process.env.iter().map(|(k, _)| k).collect::<Vec<_>>(),
                "timeout_s": plan.limits.timeout.map(|t| t.as_secs_f64()),
                // Each resource limit with the mechanism that enforces it on this machine.
                "limits": limits.rows,
            },
            "uid": plan.process.uid,
            "gid": plan.process.gid,
            // What this machine gives and what the plan accepts.
            "tier": tier.tier,
            "tier_required": plan.security.require,
            "tier_why": tier.why,
        });
        self.record("session_start", fields);
    }

    pub fn session_end(&mut self, out: &Outcome) {
        let (exit, signal, not_started) = match &out.ending {
            Ending::Exited(c) => (Some(*c), None, None),
            Ending::Signaled(s) => (None, Some(*s), None),
            Ending::NotStarted { code, message } => (Some(*code), None, Some(message.clone())),
            Ending::Lost => (None, None, None),
        };
        let fields = json!({
            "exit_code": out.exit_code(),
            "command_exit": exit,
            "signal": signal,
            "not_started": not_started,
            "timed_out": out.timed_out,
            "duration_ms": out.duration.as_millis() as u64,
            "reason": out.reason(),
            "tier": out.tier,
        });
        self.record("session_end", fields);
    }

    /// The end record of a session stopped before its command ran (a signal to taskcell
    /// while a secret's provider ran, or before the clone).
    pub fn session_stopped(&mut self, reason: &str, exit_code: i32) {
        self.record(
            "session_end",
            json!({ "exit_code": exit_code, "command_exit": null, "reason": reason }),
        );
    }
}

/// The audit log shared by the network proxy's threads: the same records, one `write`
/// each, through a lock.
pub struct Sink {
    file: Option<Mutex<File>>,
    session: String,
}

impl Sink {
    pub fn new(file: Option<File>, session: &str) -> Sink {
        Sink {
            file: file.map(Mutex::new),
            session: session.to_string(),
        }
    }

    pub fn record(&self, event: &str, fields: Value) {
        match &self.file {
            Some(f) => match f.lock() {
                Ok(mut f) => {
                    if let Err(e) = write_record(Some(&mut *f), &self.session, event, fields) {
                        tracing::warn!("writing the audit log: {e}");
                    }
                }
                Err(_) => tracing::warn!("writing the audit log: a writer panicked"),
            },
            None => {
                let _ = write_record(None, &self.session, event, fields);
            }
        }
    }
}

/// The one writer of records: `ts`, `event` and `session` added, one line in one `write`
/// (also a `tracing` event, target `audit`).
fn write_record(
    file: Option<&mut File>,
    session: &str,
    event: &str,
    mut fields: Value,
) -> std::io::Result<()> {
    // Host names, paths, header names, reasons may come from the cell: masked, escaped.
    crate::display::clean_json(&mut fields);
    if let Value::Object(m) = &mut fields {
        m.insert("ts".into(), Value::String(rfc3339_now()));
        m.insert("event".into(), Value::String(event.into()));
        m.insert("session".into(), Value::String(session.to_string()));
    }
    tracing::debug!(target: "audit", "{fields}");
    if let Some(f) = file {
        let mut line = fields.to_string();
        line.push('\n');
        f.write_all(line.as_bytes())?;
    }
    Ok(())
}

fn new_session_id() -> String {
    let mut b = [0u8; 8];
    // SAFETY: getrandom fills the buffer we own.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        b = ((t as u64) ^ (std::process::id() as u64).rotate_left(32)).to_ne_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// UTC time as RFC 3339 with milliseconds.
pub fn rfc3339_now() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() as i64;
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z.rem_euclid(146097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamp_shape() {
        let t = super::rfc3339_now();
        assert_eq!(t.len(), 24, "{t}");
        assert!(t.starts_with("20"), "{t}");
        assert!(t.ends_with('Z'));
    }
}
