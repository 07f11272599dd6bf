//! Blob ingest (hash with BLAKE3, write, fsync, link into place, commit to the index)
//! against the disk ceiling measured in the same run: the same bytes written to a file and
//! fdatasync'd, by this process and by `dd conv=fdatasync`.
//!
//! `cargo bench -p benches --bench storage`; `FERRY_BENCH_MIB` sets the size (default 256).

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use benches::{payload_chunks, scratch};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use storage::{Storage, StorageOptions};

const CHUNK: usize = 256 * 1024;

fn size() -> usize {
    std::env::var("FERRY_BENCH_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(256) * 1024 * 1024
}

fn ingest(c: &mut Criterion) {
    let len = size();
    let chunks = payload_chunks(1, len, CHUNK);
    let dir = scratch(env!("CARGO_TARGET_TMPDIR"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let storage =
        runtime.block_on(Storage::open(StorageOptions::new(dir.path().join("store")))).unwrap();

    let mut group = c.benchmark_group("ingest");
    group.throughput(Throughput::Bytes(len as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));

    // Disk ceiling: write_all + fdatasync, as `dd conv=fdatasync` does.
    group.bench_function("plain_write_fdatasync", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let path = dir.path().join("plain.bin");
                let start = Instant::now();
                let mut file = std::fs::File::create(&path).unwrap();
                for chunk in &chunks {
                    file.write_all(chunk).unwrap();
                }
                file.sync_data().unwrap();
                total += start.elapsed();
                std::fs::remove_file(&path).unwrap();
            }
            total
        })
    });

    // The same with dd itself, reading the bytes from a page-cached file.
    let source = dir.path().join("source.bin");
    {
        let mut file = std::fs::File::create(&source).unwrap();
        for chunk in &chunks {
            file.write_all(chunk).unwrap();
        }
    }
    group.bench_function("dd_conv_fdatasync", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let target = dir.path().join("dd.bin");
                let start = Instant::now();
                let status = Command::new("dd")
                    .arg(format!("if={}", source.display()))
                    .arg(format!("of={}", target.display()))
                    .args(["bs=1M", "conv=fdatasync", "status=none"])
                    .status()
                    .unwrap();
                total += start.elapsed();
                assert!(status.success());
                std::fs::remove_file(&target).unwrap();
            }
            total
        })
    });

    // Ferry: hash (BLAKE3), write, fsync, link into place, fsync the directory, commit.
    group.bench_function("blob_ingest", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let mut ingest = storage.blob_writer().await.unwrap();
                    for chunk in &chunks {
                        ingest.write(chunk.clone()).await.unwrap();
                    }
                    let content = storage.add_blob(ingest).await.unwrap();
                    total += start.elapsed();
                    storage.release_blob(content.blake3).await.unwrap();
                }
                total
            })
        })
    });
    // The same, with the MD5 follower tailing the file on the other core (as the server runs
    // it). Timed to the durable commit; the MD5 finishes after, untimed.
    group.bench_function("blob_ingest_with_md5_follower", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let mut ingest = storage.blob_writer().await.unwrap();
                    let md5 = storage::Md5Follower::follow(ingest.tail().unwrap());
                    for chunk in &chunks {
                        ingest.write(chunk.clone()).await.unwrap();
                    }
                    let content = storage.add_blob(ingest).await.unwrap();
                    total += start.elapsed();
                    md5.finish().await.unwrap();
                    storage.release_blob(content.blake3).await.unwrap();
                }
                total
            })
        })
    });
    group.finish();
}

criterion_group!(benches, ingest);
criterion_main!(benches);
