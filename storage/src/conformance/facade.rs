//! The facade over any pair of ports: what [`Storage`] promises with them, above all what it
//! finishes at start-up after a crash. Run with a [`MetadataFixture`] and a [`BlobFixture`]
//! whose stores it opens, drops and reopens together.

use std::sync::Arc;

use bytes::Bytes;

use super::blob::BlobFixture;
use super::metadata::MetadataFixture;
use super::payload;
use crate::digest::Digest;
use crate::model::{FileTransferId, Timestamp, UploadId};
use crate::ports::{BlobStore, MetadataStore, TempKind};
use crate::records::UploadRecord;
use crate::{Recovery, Storage, StorageOptions};

fn options() -> StorageOptions {
    // The root only locates the free-space check, which a reserve of 0 turns off.
    StorageOptions { min_free_bytes: 0, ..StorageOptions::new(std::env::temp_dir()) }
}

async fn open(meta: Arc<dyn MetadataStore>, blobs: Arc<dyn BlobStore>) -> Storage {
    Storage::open_with(options(), meta, blobs).await.expect("opening the storage on the ports")
}

/// Runs a blocking call to the blob port on the blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("a blob port call panicked")
}

/// A new transfer (resource `res`, party 1 to party 2), stored.
async fn new_transfer(storage: &Storage) -> FileTransferId {
    let t = super::metadata::transfer("res", 1, &[2], Timestamp::now());
    let id = t.id;
    storage.insert_transfer(t).await.unwrap();
    id
}

/// What a crash leaves is finished when the storage opens again: a temporary no upload claims
/// is deleted, an upload whose temporary is gone is forgotten, a blob whose last reference went
/// is deleted, a blob no record references is deleted; a claimed upload resumes at its
/// committed offset and referenced blobs stay.
pub async fn crash_leftovers_are_swept_at_open(
    meta: &mut dyn MetadataFixture,
    blobs: &mut dyn BlobFixture,
) {
    let (m, b) = (meta.create(), blobs.create());
    let storage = open(m.clone(), b.clone()).await;
    assert_eq!(storage.recovery(), Recovery::default(), "a fresh store has nothing to recover");
    let mut kept = storage.blob_writer().await.unwrap();
    kept.write(Bytes::from(payload(1, 70_000))).await.unwrap();
    let kept = storage.add_blob(kept).await.unwrap();

    // An upload interrupted after a checkpoint.
    let upload_id = UploadId::from_stored("interrupted");
    let mut upload = storage.open_upload(upload_id.clone(), Timestamp::now()).await.unwrap();
    upload.write(Bytes::from(payload(2, 50_000))).await.unwrap();
    let committed = upload.checkpoint(Timestamp::now()).await.unwrap();
    upload.write(Bytes::from(payload(3, 10_000))).await.unwrap();
    drop(upload);

    // A temporary nobody claims, a blob nobody references, a deletion that did not happen,
    // an upload whose temporary is gone: the state between a port call and the next.
    let leftovers = {
        let b = b.clone();
        blocking(move || {
            let mut unclaimed = b.create_temp(TempKind::Resumable).unwrap();
            unclaimed.write(&Bytes::from(payload(4, 1_000))).unwrap();
            unclaimed.sync().unwrap();
            drop(unclaimed);
            let promote = |seed| {
                let mut temp = b.create_temp(TempKind::OneShot).unwrap();
                temp.write(&Bytes::from(payload(seed, 2_000))).unwrap();
                let done = temp.finish().unwrap();
                b.promote(&done).unwrap();
                b.remove_temp(&done.name).unwrap();
                done.content.blake3
            };
            (promote(5), promote(6))
        })
        .await
    };
    let (orphan, collectable) = leftovers;
    let lost = UploadRecord {
        temp_name: "a-temporary-that-is-gone".into(),
        committed: 10,
        created: Timestamp::now(),
        updated: Timestamp::now(),
        length: None,
    };
    crate::ports::transact(&*m, move |txn| {
        txn.put_upload(&UploadId::from_stored("lost"), &lost)?;
        txn.queue_gc(&collectable)
    })
    .await
    .unwrap();
    drop((storage, m, b));

    let (m, b) = (meta.reopen(), blobs.reopen());
    let storage = open(m, b.clone()).await;
    assert_eq!(
        storage.recovery(),
        Recovery {
            temporaries_removed: 1,
            uploads_dropped: 1,
            blobs_collected: 1,
            orphan_blobs_removed: 1,
        }
    );
    assert_eq!(storage.upload(&UploadId::from_stored("lost")).unwrap(), None);
    assert_eq!(storage.upload_offset(&upload_id).unwrap(), Some(committed));
    let upload = storage.open_upload(upload_id, Timestamp::now()).await.unwrap();
    assert_eq!(upload.offset(), committed, "a claimed upload resumes at its committed offset");
    drop(upload);
    let listed = blocking(move || b.list().unwrap()).await;
    assert_eq!(listed, vec![kept.blake3], "only the referenced blob is left");
    assert!(storage.read_blob(&orphan, 0, None).await.is_err());
    assert!(storage.read_blob(&collectable, 0, None).await.is_err());
    assert_eq!(storage.read_blob(&kept.blake3, 0, None).await.unwrap().blob_size(), 70_000);
    assert_eq!(storage.check_consistency().await.unwrap(), Vec::<String>::new());
}

/// A transfer's blob reference moves with the transfer: completing the upload takes it, failing
/// the transfer drops it and deletes the blob; the index and the blobs stay consistent.
pub async fn blob_references_follow_the_transfer(
    meta: &mut dyn MetadataFixture,
    blobs: &mut dyn BlobFixture,
) {
    let storage = open(meta.create(), blobs.create()).await;
    let id = new_transfer(&storage).await;
    storage.update_transfer(id, |t| Ok(t.start_upload(Timestamp::now())?)).await.unwrap();
    let data = payload(9, 300_000);
    let mut upload =
        storage.open_upload(UploadId::for_transfer(id), Timestamp::now()).await.unwrap();
    upload.write(Bytes::copy_from_slice(&data)).await.unwrap();
    let (transfer, _) = storage.complete_upload(id, upload, Timestamp::now()).await.unwrap();
    let digest = Digest::of(&data);
    assert_eq!(transfer.content.map(|c| c.blake3), Some(digest));
    assert_eq!(storage.blob(&digest).unwrap().map(|b| b.refs), Some(1));
    assert!(storage.uploads().unwrap().is_empty(), "a completed upload is forgotten");
    assert!(read_all(&storage, &digest).await == data, "the blob reads back");
    assert_eq!(storage.check_consistency().await.unwrap(), Vec::<String>::new());
    storage.update_transfer(id, |t| Ok(t.fail("stopped", Timestamp::now())?)).await.unwrap();
    assert_eq!(storage.blob(&digest).unwrap(), None, "the last reference went");
    assert!(storage.read_blob(&digest, 0, None).await.is_err(), "and the blob with it");
    assert_eq!(storage.check_consistency().await.unwrap(), Vec::<String>::new());
}

async fn read_all(storage: &Storage, digest: &Digest) -> Vec<u8> {
    let mut range = storage.read_blob(digest, 0, None).await.unwrap();
    let mut back = Vec::new();
    while let Some(chunk) = range.next_chunk(1000).await.unwrap() {
        back.extend_from_slice(&chunk);
    }
    back
}

/// A blob of at most [`StorageOptions::inline_max`] bytes is kept in the metadata store: the
/// blob store never sees it, it reads back (ranges too) and verifies, identical content is
/// stored once, it survives a reopen, and its last reference takes it away in the same
/// transaction (nothing queued for deletion). One byte more is a file.
pub async fn small_blobs_live_inline_and_go_with_their_last_reference(
    meta: &mut dyn MetadataFixture,
    blobs: &mut dyn BlobFixture,
) {
    let (m, b) = (meta.create(), blobs.create());
    let storage = open(m.clone(), b.clone()).await;
    let limit = options().inline_max as usize;
    let id = new_transfer(&storage).await;
    storage.update_transfer(id, |t| Ok(t.start_upload(Timestamp::now())?)).await.unwrap();
    let data = payload(30, limit);
    let mut upload =
        storage.open_upload(UploadId::for_transfer(id), Timestamp::now()).await.unwrap();
    upload.write(Bytes::copy_from_slice(&data[..1000])).await.unwrap();
    upload.write(Bytes::copy_from_slice(&data[1000..])).await.unwrap();
    storage.complete_upload(id, upload, Timestamp::now()).await.unwrap();
    let digest = Digest::of(&data);
    assert!(storage.is_inline(&digest).unwrap(), "a blob of inline_max bytes is inline");
    let twin = {
        let mut ingest = storage.blob_writer().await.unwrap();
        ingest.write(Bytes::copy_from_slice(&data)).await.unwrap();
        storage.add_blob(ingest).await.unwrap()
    };
    assert_eq!(twin.blake3, digest);
    assert_eq!(storage.blob(&digest).unwrap().map(|r| r.refs), Some(2), "stored once");
    let bigger = payload(31, limit + 1);
    let file = {
        let mut ingest = storage.blob_writer().await.unwrap();
        ingest.write(Bytes::copy_from_slice(&bigger)).await.unwrap();
        storage.add_blob(ingest).await.unwrap()
    };
    assert!(!storage.is_inline(&file.blake3).unwrap(), "one byte more is a file");
    let listed = blocking({
        let b = b.clone();
        move || b.list().unwrap()
    })
    .await;
    assert_eq!(listed, vec![file.blake3], "the blob store holds only the larger blob");
    assert!(storage.check_consistency().await.unwrap().is_empty());
    drop((storage, m, b));

    let (m, b) = (meta.reopen(), blobs.reopen());
    let storage = open(m.clone(), b.clone()).await;
    assert_eq!(storage.recovery(), Recovery::default(), "nothing to recover or sweep");
    assert!(read_all(&storage, &digest).await == data, "durable and exact after a reopen");
    let mut range = storage.read_blob(&digest, 500, Some(100)).await.unwrap();
    assert!(range.next_chunk(1000).await.unwrap().unwrap() == data[500..600], "a range");
    assert!(storage.read_blob(&digest, limit as u64 + 1, None).await.is_err());
    assert_eq!(storage.verify_blob(&digest).await.unwrap(), crate::Verification::Intact);

    storage.release_blob(digest).await.unwrap();
    assert!(storage.is_inline(&digest).unwrap(), "still referenced by the transfer");
    storage.update_transfer(id, |t| Ok(t.fail("stopped", Timestamp::now())?)).await.unwrap();
    assert_eq!(storage.blob(&digest).unwrap(), None, "the last reference went");
    assert!(!storage.is_inline(&digest).unwrap(), "and the bytes with it");
    assert!(storage.read_blob(&digest, 0, None).await.is_err());
    let pending = crate::ports::snapshot(&*m, |r| r.pending_gc()).unwrap();
    assert_eq!(pending, vec![], "nothing queued for deletion");
    assert!(storage.check_consistency().await.unwrap().is_empty());
}

/// Beginning a transfer's upload is one transaction: the upload's record and the transfer's
/// `UploadStarted` commit together, and resuming it changes neither.
pub async fn beginning_an_upload_starts_the_transfer_in_the_same_commit(
    meta: &mut dyn MetadataFixture,
    blobs: &mut dyn BlobFixture,
) {
    use crate::model::FileTransferStatus;
    let storage = open(meta.create(), blobs.create()).await;
    let id = new_transfer(&storage).await;
    let commits = storage.index_stats().commits();
    let upload = storage.open_transfer_upload(id, Timestamp::now(), Some(10)).await.unwrap();
    assert_eq!(storage.index_stats().commits(), commits + 1, "one commit");
    assert!(upload.started_transfer());
    let transfer = storage.transfer(id).unwrap().unwrap();
    assert_eq!(transfer.status(), FileTransferStatus::UploadStarted);
    let last = transfer.status_history.last().map(|e| e.status);
    assert_eq!(last, Some(FileTransferStatus::UploadStarted), "in the history");
    assert_eq!(
        storage.upload(&UploadId::for_transfer(id)).unwrap().map(|r| r.length),
        Some(Some(10))
    );
    drop(upload);
    let commits = storage.index_stats().commits();
    let resumed = storage.open_transfer_upload(id, Timestamp::now(), Some(10)).await.unwrap();
    assert_eq!(storage.index_stats().commits(), commits, "resuming commits nothing");
    assert!(!resumed.started_transfer(), "a resumed upload does not say it started the transfer");
    assert_eq!(
        storage.transfer(id).unwrap().unwrap().status_history.len(),
        transfer.status_history.len()
    );
}

/// `inline_max` is a setting an operator may lower. Content kept inline under the old setting
/// and stored again under a lower one stays inline (a blob is a file or inline bytes, never
/// both), so once its last reference goes the blob store holds nothing of it.
pub async fn content_inline_under_a_larger_inline_max_leaves_no_file_behind(
    meta: &mut dyn MetadataFixture,
    blobs: &mut dyn BlobFixture,
) {
    let (m, b) = (meta.create(), blobs.create());
    let data = payload(40, 1_000);
    let add = |storage: Storage, data: Vec<u8>| async move {
        let mut ingest = storage.blob_writer().await.unwrap();
        ingest.write(Bytes::from(data)).await.unwrap();
        storage.add_blob(ingest).await.unwrap().blake3
    };
    let storage = open(m.clone(), b.clone()).await;
    let digest = add(storage.clone(), data.clone()).await;
    assert!(storage.is_inline(&digest).unwrap(), "1000 bytes are inline by default");
    drop(storage);

    // The operator turns inlining off (or lowers it below 1000 bytes) and restarts.
    let lower = StorageOptions { inline_max: 0, ..options() };
    let storage = Storage::open_with(lower, m.clone(), b.clone()).await.unwrap();
    assert_eq!(add(storage.clone(), data).await, digest);
    assert_eq!(storage.blob(&digest).unwrap().map(|r| r.refs), Some(2), "stored once");
    storage.release_blob(digest).await.unwrap();
    storage.release_blob(digest).await.unwrap();
    assert_eq!(storage.blob(&digest).unwrap(), None, "the last reference went");
    assert!(!storage.is_inline(&digest).unwrap());
    let pending = crate::ports::snapshot(&*m, |r| r.pending_gc()).unwrap();
    let listed = blocking({
        let b = b.clone();
        move || b.list().unwrap()
    })
    .await;
    assert_eq!(
        listed,
        vec![],
        "no blob file is left once the last reference went (nothing is queued to delete it: \
         pending_gc = {pending:?})"
    );
}

/// `inline_max` 0 keeps no blob inline, not even the empty one.
pub async fn inline_max_0_keeps_no_blob_inline(
    meta: &mut dyn MetadataFixture,
    blobs: &mut dyn BlobFixture,
) {
    let off = StorageOptions { inline_max: 0, ..options() };
    let storage = Storage::open_with(off, meta.create(), blobs.create()).await.unwrap();
    let ingest = storage.blob_writer().await.unwrap();
    let empty = storage.add_blob(ingest).await.unwrap();
    assert_eq!(empty.size, 0);
    assert!(!storage.is_inline(&empty.blake3).unwrap(), "inline_max 0: every blob is a file");
}
