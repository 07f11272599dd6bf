//! Index commits per second: each write waiting for its own fsync'd commit, against the same
//! writes issued concurrently so the single writer groups them into shared commits.
//!
//! `cargo bench -p benches --bench index`.

use std::time::{Duration, Instant};

use benches::scratch;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use storage::model::*;
use storage::{Storage, StorageOptions};

const N: usize = 256;

fn transfer(i: usize) -> FileTransfer {
    FileTransfer::initialize(
        FileTransferId::new_random(),
        NewFileTransfer {
            resource_id: ResourceId::parse("bench").unwrap(),
            file_name: "f.bin".into(),
            senders_reference: format!("ref-{i}"),
            sender: Party::parse("0192:910000001").unwrap(),
            recipients: vec![Party::parse("0192:910000002").unwrap()],
            property_list: Default::default(),
            declared_checksum: None,
            declared_blake3: None,
            use_virus_scan: true,
        },
        Timestamp::now(),
        Duration::from_secs(3600),
    )
}

fn commits(c: &mut Criterion) {
    let dir = scratch(env!("CARGO_TARGET_TMPDIR"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let storage =
        runtime.block_on(Storage::open(StorageOptions::new(dir.path().join("store")))).unwrap();
    let mut group = c.benchmark_group("index_commits");
    group.throughput(Throughput::Elements(N as u64));
    group.sample_size(10);

    group.bench_function("one_by_one", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let transfers: Vec<_> = (0..N).map(transfer).collect();
                    let start = Instant::now();
                    for t in transfers {
                        storage.insert_transfer(t).await.unwrap();
                    }
                    total += start.elapsed();
                }
                total
            })
        })
    });

    group.bench_function("grouped", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let transfers: Vec<_> = (0..N).map(transfer).collect();
                    let commits_before = storage.index_stats().commits();
                    let start = Instant::now();
                    let tasks: Vec<_> = transfers
                        .into_iter()
                        .map(|t| {
                            let storage = storage.clone();
                            tokio::spawn(async move { storage.insert_transfer(t).await })
                        })
                        .collect();
                    for task in tasks {
                        task.await.unwrap().unwrap();
                    }
                    total += start.elapsed();
                    let n_commits = storage.index_stats().commits() - commits_before;
                    assert!(n_commits < N as u64, "{N} concurrent writes took {n_commits} commits");
                }
                total
            })
        })
    });
    group.finish();
}

criterion_group!(benches, commits);
criterion_main!(benches);
