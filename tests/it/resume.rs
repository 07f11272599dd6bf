use bytes::Bytes;
use integration_tests::{CHUNK, chunks, payload};
use storage::model::{FileTransferStatus, Timestamp, UploadId, UploadOutcome};
use storage::{Digest, Md5, Md5Follower, Storage, StorageOptions};

use crate::index::new_transfer;

/// Uploads `data`, interrupted after `cut` bytes (of which only up to the last checkpoint is
/// durable), optionally restarting the storage, then resumes from the committed offset.
async fn interrupted_upload(data: &[u8], cut: usize, restart: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut storage = Storage::open(StorageOptions::new(dir.path())).await.unwrap();
    let t = new_transfer("res", 1, &[2], false);
    storage.insert_transfer(t.clone()).await.unwrap();
    storage.update_transfer(t.id, |t| Ok(t.start_upload(Timestamp::now())?)).await.unwrap();
    let upload_id = UploadId::for_transfer(t.id);

    // First attempt: checkpoint every 3 chunks, then stop abruptly after `cut` bytes.
    let mut upload = storage.open_upload(upload_id.clone(), Timestamp::now()).await.unwrap();
    let mut written = 0;
    let mut durable = 0;
    for (i, chunk) in chunks(&data[..cut], CHUNK / 3 + 1).into_iter().enumerate() {
        written += chunk.len();
        upload.write(chunk).await.unwrap();
        if i % 3 == 2 {
            durable = upload.checkpoint(Timestamp::now()).await.unwrap() as usize;
            assert_eq!(durable, written);
        }
    }
    drop(upload);
    if restart {
        drop(storage);
        storage = Storage::open(StorageOptions::new(dir.path())).await.unwrap();
        assert_eq!(storage.recovery().temporaries_removed, 0, "the upload's temporary was swept");
    }

    // The committed offset is what was checkpointed, not what was written.
    assert_eq!(storage.upload_offset(&upload_id).unwrap(), Some(durable as u64));
    let mut upload = storage.open_upload(upload_id.clone(), Timestamp::now()).await.unwrap();
    assert_eq!(upload.offset(), durable as u64);
    // The MD5 follower of the resumed upload reads the committed prefix too.
    let md5 = Md5Follower::follow(upload.tail().unwrap());
    for chunk in chunks(&data[durable..], CHUNK) {
        upload.write(chunk).await.unwrap();
    }
    let (transfer, outcome) =
        storage.complete_upload(t.id, upload, Timestamp::now()).await.unwrap();
    assert_eq!(outcome, UploadOutcome::Published);
    assert_eq!(transfer.status(), FileTransferStatus::Published);
    let content = transfer.content.unwrap();
    assert_eq!(content.blake3, Digest::of(data), "cut {cut}, restart {restart}");
    assert_eq!(md5.finish().await.unwrap(), Md5::of(data), "cut {cut}, restart {restart}");
    assert_eq!(content.size, data.len() as u64);
    assert_eq!(storage.upload_offset(&upload_id).unwrap(), None);
    assert!(storage.check_consistency().await.unwrap().is_empty());
}

#[tokio::test]
async fn an_interrupted_upload_resumes_with_the_same_digest() {
    let data = payload(21, 3 * 1024 * 1024 + 333);
    // Arbitrary cut points: before the first checkpoint, mid-chunk, and past the MD5 thread
    // hand-over (1 MiB).
    for cut in [0, 1000, CHUNK + 17, 1024 * 1024 + 1, 2 * 1024 * 1024 + 99_999, data.len()] {
        interrupted_upload(&data, cut, false).await;
    }
}

#[tokio::test]
async fn an_upload_resumes_after_a_restart() {
    let data = payload(22, 2 * 1024 * 1024 + 5);
    for cut in [0, 700_001, data.len() - 1] {
        interrupted_upload(&data, cut, true).await;
    }
}

#[tokio::test]
async fn torn_bytes_after_the_committed_offset_are_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(StorageOptions::new(dir.path())).await.unwrap();
    let upload_id = UploadId::for_transfer(storage::model::FileTransferId::new_random());
    let mut upload = storage.open_upload(upload_id.clone(), Timestamp::now()).await.unwrap();
    upload.write(Bytes::from_static(b"durable ")).await.unwrap();
    assert_eq!(upload.checkpoint(Timestamp::now()).await.unwrap(), 8);
    upload.write(Bytes::from_static(b"torn")).await.unwrap();
    drop(upload);
    let upload = storage.open_upload(upload_id.clone(), Timestamp::now()).await.unwrap();
    assert_eq!(upload.offset(), 8);
    drop(upload);
    storage.abort_upload(&upload_id).await.unwrap();
    assert_eq!(storage.upload_offset(&upload_id).unwrap(), None);
    assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
}

#[tokio::test]
async fn an_upload_has_one_writer_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(StorageOptions::new(dir.path())).await.unwrap();
    let id = UploadId::for_transfer(storage::model::FileTransferId::new_random());
    let mut first = storage.open_upload(id.clone(), Timestamp::now()).await.unwrap();
    first.write(Bytes::from_static(b"abc")).await.unwrap();
    first.checkpoint(Timestamp::now()).await.unwrap();
    let second = storage.open_upload(id.clone(), Timestamp::now()).await;
    assert!(matches!(second, Err(storage::Error::AlreadyExists(_))), "{second:?}");
    drop(first);
    let resumed = storage.open_upload(id, Timestamp::now()).await.unwrap();
    assert_eq!(resumed.offset(), 3);
}
