//! Revocation: run a secret's `revoke` argv when the cell has ended, with the value on
//! its stdin (or, for `revoke_needs_value = false`, /dev/null) and a time limit.
//! `{session}` and `{name}` in the argv are replaced.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::redact::Redactor;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub name: String,
    pub ok: bool,
    /// What happened, for the audit log and the user (output masked, never the value).
    pub detail: String,
}

/// Largest part of the revoke command's output kept for the message.
const KEEP: usize = 4096;

pub fn substitute(argv: &[String], session: &str, name: &str) -> Vec<String> {
    argv.iter()
        .map(|a| a.replace("{session}", session).replace("{name}", name))
        .collect()
}

/// Run one revocation. `value`: written to its stdin (None: stdin is /dev/null).
/// `redactor` masks the command's output before it is kept.
pub fn revoke(
    name: &str,
    argv: &[String],
    value: Option<&[u8]>,
    timeout: Duration,
    redactor: Option<&Redactor>,
) -> Revocation {
    let done = |ok: bool, detail: String| Revocation {
        name: name.to_string(),
        ok,
        detail,
    };
    let Some(prog) = argv.first() else {
        return done(false, "empty revoke command".into());
    };
    let mut child = match Command::new(prog)
        .args(&argv[1..])
        .stdin(if value.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            return done(
                false,
                format!("revoke command {prog:?} could not start: {e}"),
            )
        }
    };
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let (status, output) = std::thread::scope(|s| {
        s.spawn(move || {
            if let (Some(mut i), Some(v)) = (stdin, value) {
                let _ = i.write_all(v);
            }
        });
        let collect = |r: Option<Box<dyn Read + Send>>| {
            s.spawn(move || {
                let mut kept = Vec::new();
                if let Some(mut r) = r {
                    let mut buf = [0u8; 8192];
                    loop {
                        match r.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                let room = KEEP.saturating_sub(kept.len());
                                kept.extend_from_slice(&buf[..n.min(room)]);
                            }
                        }
                    }
                }
                kept
            })
        };
        let out_t = collect(stdout.map(|o| Box::new(o) as Box<dyn Read + Send>));
        let err_t = collect(stderr.map(|o| Box::new(o) as Box<dyn Read + Send>));
        let deadline = Instant::now() + timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(st)) => break Ok(st),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break Err(format!(
                        "did not finish within {}s and was killed",
                        timeout.as_secs_f64()
                    ));
                }
                Err(e) => break Err(format!("waiting for it: {e}")),
            }
        };
        let mut output = out_t.join().unwrap_or_default();
        output.extend(err_t.join().unwrap_or_default());
        (status, output)
    });
    let shown = match redactor {
        Some(r) => r.mask_all(&output),
        None => output,
    };
    let text = String::from_utf8_lossy(&shown).trim().to_string();
    let text = if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    };
    match status {
        Ok(st) if st.success() => done(true, format!("revoked ({st}){text}")),
        Ok(st) => done(false, format!("revoke command failed ({st}){text}")),
        Err(e) => done(false, format!("revoke command {e}{text}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders() {
        assert_eq!(
            substitute(
                &["t".into(), "--id={session}".into(), "{name}".into()],
                "abc",
                "TOK"
            ),
            vec!["t", "--id=abc", "TOK"]
        );
    }

    #[test]
    fn gets_value_on_stdin_and_reports() {
        let r = revoke(
            "T",
            &[
                "sh".into(),
                "-c".into(),
                "read v; [ \"$v\" = secret-v ] && echo fine".into(),
            ],
            Some(b"secret-v\n"),
            Duration::from_secs(10),
            None,
        );
        assert!(r.ok, "{r:?}");
        assert!(r.detail.contains("fine"), "{r:?}");
        let r = revoke(
            "T",
            &["sh".into(), "-c".into(), "cat; exit 3".into()],
            Some(b"secret-v"),
            Duration::from_secs(10),
            Some(&Redactor::new(&[("T".into(), b"secret-v".as_slice())]).unwrap()),
        );
        assert!(!r.ok);
        assert!(!r.detail.contains("secret-v"), "{r:?}");
        assert!(r.detail.contains("[taskcell:T]"), "{r:?}");
        let r = revoke(
            "T",
            &["sleep".into(), "5".into()],
            Some(b"x"),
            Duration::from_millis(200),
            None,
        );
        assert!(!r.ok && r.detail.contains("killed"), "{r:?}");
        // Without a value, stdin is /dev/null: an immediate end of file, never a hang.
        let r = revoke(
            "T",
            &[
                "sh".into(),
                "-c".into(),
                "n=$(wc -c); echo got $n; [ -t 0 ] || [ \"$n\" = 0 ]".into(),
            ],
            None,
            Duration::from_secs(10),
            None,
        );
        assert!(r.ok && r.detail.contains("got 0"), "{r:?}");
    }
}
