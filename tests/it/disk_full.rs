//! A full disk (issue 12, items 1–4), on a real small filesystem: a failed index commit heals
//! without a restart, uploads are refused cleanly before they fill the disk, a failed upload's
//! temporary goes, and readiness tells a load balancer.

use std::time::Duration;

use integration_tests::SmallFs;
use storage::model::*;
use storage::{Storage, StorageOptions};

use crate::index::new_transfer;

/// A transfer whose metadata takes some room in the index (so that the index must grow).
fn bulky_transfer() -> FileTransfer {
    let mut t = new_transfer("res", 1, &[2], true);
    t.property_list.insert("padding".into(), "x".repeat(8 * 1024));
    t
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_index_commit_heals_without_a_restart() {
    let Some(fs) = SmallFs::mount(24) else { return };
    let root = fs.path().join("data");
    // No reserve: the filesystem's own ENOSPC reaches the index.
    let options = StorageOptions { min_free_bytes: 0, ..StorageOptions::new(&root) };
    let storage = Storage::open(options).await.unwrap();
    let mut kept = Vec::new();
    for _ in 0..5 {
        let t = bulky_transfer();
        storage.insert_transfer(t.clone()).await.unwrap();
        kept.push(t.id);
    }
    let filler = fs.fill("filler", 0);

    // Writes until the index cannot grow: that commit fails as "out of space".
    let mut failed = None;
    for _ in 0..2_000 {
        let t = bulky_transfer();
        match storage.insert_transfer(t.clone()).await {
            Ok(()) => kept.push(t.id),
            Err(e) => {
                failed = Some((t.id, e));
                break;
            }
        }
    }
    let (lost, error) = failed.expect("the index filled the disk");
    assert!(error.is_storage_full(), "a full disk is reported as such: {error}");

    // Space comes back; without a restart, writes and reads work again.
    std::fs::remove_file(&filler).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let after = bulky_transfer();
    loop {
        match storage.insert_transfer(after.clone()).await {
            Ok(()) => break,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("not yet: {e}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("the index did not recover: {e}"),
        }
    }
    for id in &kept {
        assert!(storage.transfer(*id).unwrap().is_some(), "an acknowledged write survived");
    }
    assert!(storage.transfer(lost).unwrap().is_none(), "the failed write left nothing");
    assert!(storage.transfer(after.id).unwrap().is_some());
    assert!(storage.index_stats().reopens() >= 1, "the writer reopened the database");
    storage.probe_commit().await.unwrap();
}
