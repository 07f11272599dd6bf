#![no_main]
//! See `server::fuzzing::timestamp`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| server::fuzzing::timestamp(data));
