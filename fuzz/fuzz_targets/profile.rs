//! The profile loader never panics on any text (parse and merge of one file, as `load`
//! does for each file of an `extends` chain), and errors are one line.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = taskcell::profile::from_text("fuzz.toml", text) {
        let _ = e.to_string();
    }
});
