//! Sizes, counts, cores and memory shares never panic; accepted values are within the
//! documented maxima.
#![no_main]

use libfuzzer_sys::fuzz_target;
use taskcell::plan::limits::{check, parse_cores, parse_count, parse_memory, parse_size, MAX_SIZE};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(Some(b)) = parse_size(s, true) {
        assert!(b <= MAX_SIZE);
    }
    let _ = parse_count(s);
    let _ = parse_cores(s);
    let _ = parse_memory(s);
    for key in taskcell::plan::limits::KEYS {
        if let Err(e) = check(key, s) {
            assert!(!e.contains('\n'));
        }
    }
});
