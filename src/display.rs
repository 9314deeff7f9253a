//! Text that came from the cell, made safe to show or record.
//!
//! Everything taskcell prints or records that the cell chose (a host name it asked for, a
//! path it wrote, a header name, a reason that quotes them) goes through [`clean`]: first
//! the same masker as the cell's output (a secret's value and its encodings become
//! `[taskcell:NAME]`), then every byte that could act on a terminal is shown escaped
//! (`\x1b`, `\r`, `\u{202e}`), invalid UTF-8 as `\xNN`, and `\` as `\\` so an escape
//! written by the cell cannot pass for one written here.
//!
//! The masker is set once per process by the secrets session ([`set_masker`]); taskcell
//! runs one cell per process. [`clean_with`] takes it explicitly (tests, tools).
//!
//! Diagnostics (`tracing` output) go through [`Diagnostics`]: cleaned line by line, and
//! while an interactive cell owns the screen ([`hold_diagnostics`]) queued instead of
//! written into its full-screen UI; [`take_held`] returns them for the end summary and
//! the audit log.

use std::io::Write;
use std::sync::{Arc, Mutex, RwLock};

/// What masks a secret's value (the cell's `secrets::redact::Redactor`; a trait here so
/// that this module, used by the audit log, imports nothing of the secrets).
pub trait Mask: Send + Sync {
    /// `text` with every secret's value (and its encodings) replaced.
    fn mask(&self, text: &[u8]) -> Vec<u8>;
}

static MASKER: RwLock<Option<Arc<dyn Mask>>> = RwLock::new(None);

/// Use `r` for every [`clean`] from now on (the cell's secrets).
pub fn set_masker(r: Arc<dyn Mask>) {
    match MASKER.write() {
        Ok(mut g) => *g = Some(r),
        Err(p) => *p.into_inner() = Some(r),
    }
}

/// The masker set by [`set_masker`], if any.
pub fn masker() -> Option<Arc<dyn Mask>> {
    match MASKER.read() {
        Ok(g) => g.clone(),
        Err(p) => p.into_inner().clone(),
    }
}

/// Mask (with the process's masker) and escape `text`, for stderr, a question or a log.
pub fn clean(text: impl AsRef<[u8]>) -> String {
    clean_with(masker().as_deref(), text.as_ref())
}

/// Mask with `r` (when given), then [`escape`].
pub fn clean_with(r: Option<&dyn Mask>, text: &[u8]) -> String {
    match r {
        Some(r) => escape(&zeroize::Zeroizing::new(r.mask(text))),
        None => escape(text),
    }
}

/// A path for display: its bytes, cleaned.
pub fn clean_path(p: &std::path::Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    clean(p.as_os_str().as_bytes())
}

/// Show every byte that could act on a terminal (C0, DEL, C1, bidirectional and other
/// invisible format characters, line/paragraph separators) escaped; invalid UTF-8 as
/// `\xNN`; `\` as `\\`. Printable text passes unchanged.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                    out.push_str(&format!("\\x{:02x}", c as u32))
                }
                c if is_invisible(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// C1 controls and the format characters that reorder or hide text.
fn is_invisible(c: char) -> bool {
    matches!(c as u32,
        0x80..=0x9f
        | 0xad
        | 0x200b..=0x200f
        | 0x2028..=0x202e
        | 0x2060..=0x2069
        | 0xfeff
        | 0xfff9..=0xfffb)
}

/// Clean every string (and object key) in a JSON value, in place: what the audit log
/// writes never holds a secret's value or a raw control byte.
pub fn clean_json(v: &mut serde_json::Value) {
    use serde_json::Value;
    let r = masker();
    clean_json_with(r.as_deref(), v);
    fn clean_json_with(r: Option<&dyn Mask>, v: &mut Value) {
        match v {
            Value::String(s) => {
                let c = clean_with(r, s.as_bytes());
                if c != *s {
                    *s = c;
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|x| clean_json_with(r, x)),
            Value::Object(m) => {
                let old = std::mem::take(m);
                for (k, mut x) in old {
                    clean_json_with(r, &mut x);
                    m.insert(clean_with(r, k.as_bytes()), x);
                }
            }
            _ => {}
        }
    }
}

/// Diagnostics written while an interactive cell owns the screen (at most this many
/// are kept; the count of dropped ones is reported).
const HELD_MAX: usize = 256;

struct Held {
    on: bool,
    lines: Vec<String>,
    dropped: usize,
    /// Every diagnostic of the run (bounded), for the audit log.
    all: Vec<String>,
    /// Every line since the start (bounded), for `taskcell sessions`.
    recent: std::collections::VecDeque<String>,
}

static HELD: Mutex<Held> = Mutex::new(Held {
    on: false,
    lines: Vec::new(),
    dropped: 0,
    all: Vec::new(),
    recent: std::collections::VecDeque::new(),
});

fn held() -> std::sync::MutexGuard<'static, Held> {
    match HELD.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// From now on (until [`take_held`]), diagnostics are queued instead of written to
/// stderr: an interactive cell's full-screen UI is on the terminal.
pub fn hold_diagnostics() {
    held().on = true;
}

/// Stop holding; return the queued diagnostics (with a line for any dropped ones).
pub fn take_held() -> Vec<String> {
    let mut h = held();
    h.on = false;
    let mut v = std::mem::take(&mut h.lines);
    if h.dropped > 0 {
        v.push(format!("({} more diagnostics were dropped)", h.dropped));
        h.dropped = 0;
    }
    v
}

/// Every diagnostic of the run so far (at most the first 256), once: for the audit log.
pub fn take_notices() -> Vec<String> {
    std::mem::take(&mut held().all)
}

/// The last diagnostics of this run (for `taskcell sessions`).
pub fn recent() -> Vec<String> {
    held().recent.iter().cloned().collect()
}

/// Write one diagnostic line (already without a trailing newline): cleaned, then to
/// stderr, or queued while held.
pub fn diagnostic(line: &str) {
    let line = clean(line.trim_end_matches('\n'));
    let mut h = held();
    if h.recent.len() >= 32 {
        h.recent.pop_front();
    }
    h.recent.push_back(line.clone());
    if h.all.len() < HELD_MAX {
        h.all.push(line.clone());
    }
    if h.on {
        if h.lines.len() < HELD_MAX {
            h.lines.push(line);
        } else {
            h.dropped += 1;
        }
        return;
    }
    drop(h);
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// A `tracing_subscriber` writer: each event is collected, then passed to
/// [`diagnostic`] line by line.
#[derive(Default)]
pub struct Diagnostics {
    buf: Vec<u8>,
}

impl Write for Diagnostics {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() < 64 * 1024 {
            self.buf.extend_from_slice(b);
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Diagnostics {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.buf);
        for line in text.trim_end_matches('\n').split('\n') {
            diagnostic(line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::redact::Redactor;

    #[test]
    fn control_bytes_are_escaped() {
        assert_eq!(escape(b"a\x1b]0;x\x07b\rc"), "a\\x1b]0;x\\x07b\\rc");
        assert_eq!(
            escape("x\u{202e}y\u{9b}z".as_bytes()),
            "x\\u{202e}y\\u{9b}z"
        );
        assert_eq!(escape(b"\xff\\n"), "\\xff\\\\n");
        assert_eq!(escape("é.example.test".as_bytes()), "é.example.test");
    }

    #[test]
    fn values_are_masked_then_escaped() {
        let r = Redactor::new(&[("TOKEN".into(), b"s3cr3tvalue".as_slice())]).unwrap();
        let out = clean_with(Some(&r), b"s3cr3tvalue.example.test\x1b[2J");
        assert!(!out.contains("s3cr3tvalue"), "{out}");
        assert!(out.contains("[taskcell:TOKEN]"), "{out}");
        assert!(!out.contains('\x1b'), "{out}");
        let mut v = serde_json::json!({"host": "s3cr3tvalue.x", "l": ["\r"], "s3cr3tvalue": 1});
        set_masker(Arc::new(r));
        clean_json(&mut v);
        let s = v.to_string();
        assert!(!s.contains("s3cr3tvalue"), "{s}");
        assert_eq!(v["l"][0], "\\r");
    }
}
