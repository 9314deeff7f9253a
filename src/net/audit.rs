//! Audit lines from the proxy's threads: same format as [`crate::audit::Audit`] (one JSON
//! object per line, one `write` each, `ts`/`event`/`session` fields).

use std::fs::File;
use std::io::Write;
use std::sync::Mutex;

use serde_json::Value;

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

    pub fn record(&self, event: &str, mut fields: Value) {
        // Host names, header names, reasons come from the cell: masked and escaped.
        crate::display::clean_json(&mut fields);
        if let Value::Object(m) = &mut fields {
            m.insert("ts".into(), Value::String(crate::audit::rfc3339_now()));
            m.insert("event".into(), Value::String(event.into()));
            m.insert("session".into(), Value::String(self.session.clone()));
        }
        tracing::debug!(target: "audit", "{fields}");
        if let Some(f) = &self.file {
            let mut line = fields.to_string();
            line.push('\n');
            if let Ok(mut f) = f.lock() {
                if let Err(e) = f.write_all(line.as_bytes()) {
                    tracing::warn!("writing the audit log: {e}");
                }
            }
        }
    }
}
