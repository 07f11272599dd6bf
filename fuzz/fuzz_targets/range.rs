#![no_main]
//! See `server::fuzzing::range`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| server::fuzzing::range(data));
