#![no_main]
//! See `server::fuzzing::token`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| server::fuzzing::token(data));
