//! The HTTP proxy's request parser must never panic, and what it accepts must be
//! consistent (head within the limits, an origin-form head for absolute requests).
#![no_main]

use libfuzzer_sys::fuzz_target;
use taskcell::net::http::{origin_head, parse, Target, MAX_HEAD};

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = parse(data) {
        assert!(req.head_len <= data.len() && req.head_len <= MAX_HEAD);
        match &req.target {
            Target::Connect { port, .. } => assert!(*port > 0),
            Target::Absolute { path, port, .. } => {
                assert!(*port > 0);
                assert!(path.starts_with('/'));
                let head = origin_head(&req);
                assert!(head.ends_with(b"\r\n\r\n"));
            }
        }
    }
});
