//! The SOCKS5 request parser must never panic on any input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut r = data;
    let _ = taskcell::net::socks::read_request(&mut r);
});
