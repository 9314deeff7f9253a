//! Durations (`--timeout`, `grace`, `ttl`, ...) never panic, and what is accepted is
//! within the documented maximum and above zero.
#![no_main]

use libfuzzer_sys::fuzz_target;
use taskcell::profile::{parse_duration, MAX_DURATION};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    match parse_duration(s) {
        Ok(d) => assert!(!d.is_zero() && d <= MAX_DURATION),
        Err(e) => assert!(!e.contains('\n')),
    }
});
