#![no_main]
//! See `server::fuzzing::tus_headers`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| server::fuzzing::tus_headers(data));
