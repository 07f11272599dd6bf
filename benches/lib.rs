//! Shared helpers for Ferry's benchmarks: seeded payloads and scratch directories on the same
//! filesystem as the build (so every figure in one run hits the same disk).

use std::path::PathBuf;

use bytes::Bytes;

/// `len` pseudo-random bytes from `seed`, as `Bytes` chunks of `chunk` (BLAKE3 XOF: fast and
/// reproducible, and incompressible, so no layer can cheat).
pub fn payload_chunks(seed: u64, len: usize, chunk: usize) -> Vec<Bytes> {
    let mut data = vec![0u8; len];
    blake3::Hasher::new().update(&seed.to_le_bytes()).finalize_xof().fill(&mut data);
    let data = Bytes::from(data);
    (0..len).step_by(chunk).map(|start| data.slice(start..(start + chunk).min(len))).collect()
}

/// A fresh scratch directory under `dir` (the bench's target tmpdir).
pub fn scratch(dir: &str) -> tempfile::TempDir {
    let base = PathBuf::from(dir);
    std::fs::create_dir_all(&base).expect("bench tmpdir");
    tempfile::tempdir_in(base).expect("scratch dir")
}
