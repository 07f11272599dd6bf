#![no_main]
//! See `server::fuzzing::json_bodies`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| server::fuzzing::json_bodies(data));
