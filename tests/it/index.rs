use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use integration_tests::{payload, temp_storage};
use storage::model::*;
use storage::{Error, Storage};

pub(crate) fn party(n: u32) -> Party {
    Party::parse(&format!("0192:{:09}", 910_000_000 + n)).unwrap()
}

pub(crate) fn new_transfer(
    resource: &str,
    sender: u32,
    recipients: &[u32],
    scan: bool,
) -> FileTransfer {
    FileTransfer::initialize(
        FileTransferId::new_random(),
        NewFileTransfer {
            resource_id: ResourceId::parse(resource).unwrap(),
            file_name: "report.pdf".into(),
            senders_reference: "ref-1".into(),
            sender: party(sender),
            recipients: recipients.iter().map(|r| party(*r)).collect(),
            property_list: BTreeMap::from([("k".into(), "v".into())]),
            declared_checksum: None,
            declared_blake3: None,
            use_virus_scan: scan,
        },
        Timestamp::now(),
        Duration::from_secs(86_400),
    )
}

/// A scanned transfer whose sender declared `checksum`, stored.
async fn transfer_declaring(storage: &Storage, checksum: storage::Md5) -> FileTransfer {
    let mut t = new_transfer("res", 1, &[2], true);
    t.declared_checksum = Some(checksum);
    storage.insert_transfer(t.clone()).await.unwrap();
    t
}

/// Uploads `data` as the file of `transfer` through a resumable upload.
pub(crate) async fn upload(storage: &Storage, id: FileTransferId, data: &[u8]) -> UploadOutcome {
    storage.update_transfer(id, |t| Ok(t.start_upload(Timestamp::now())?)).await.unwrap();
    let mut upload =
        storage.open_upload(UploadId::for_transfer(id), Timestamp::now()).await.unwrap();
    upload.write(Bytes::copy_from_slice(data)).await.unwrap();
    storage.complete_upload(id, upload, Timestamp::now()).await.unwrap().1
}

#[tokio::test]
async fn service_owners_and_resources() {
    let (_dir, storage) = temp_storage().await;
    let owner = ServiceOwner { id: party(1), name: "Owner".into(), created: Timestamp::now() };
    storage.create_service_owner(owner.clone()).await.unwrap();
    assert!(matches!(
        storage.create_service_owner(owner.clone()).await,
        Err(Error::AlreadyExists(_))
    ));
    assert_eq!(storage.service_owner(&party(1)).unwrap(), Some(owner));

    let id = ResourceId::parse("res").unwrap();
    let created = storage
        .modify_resource(id.clone(), |current| {
            assert!(current.is_none());
            Ok(ResourceConfig::new(ResourceId::parse("res").unwrap(), party(1), Timestamp::now()))
        })
        .await
        .unwrap();
    // A rejected update changes nothing.
    let err = storage
        .modify_resource(id.clone(), |current| {
            let mut r = current.unwrap();
            r.apply(ResourceUpdate {
                file_transfer_time_to_live: Some("P400D".into()),
                ..Default::default()
            })?;
            Ok(r)
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Resource(e) if e.code() == 15));
    assert_eq!(storage.resource(&id).unwrap(), Some(created));
}

#[tokio::test]
async fn transfers_are_stored_with_histories_and_found_by_search() {
    let (_dir, storage) = temp_storage().await;
    let a = new_transfer("res-a", 1, &[2, 3], true);
    let b = new_transfer("res-b", 2, &[1], true);
    storage.insert_transfer(a.clone()).await.unwrap();
    storage.insert_transfer(b.clone()).await.unwrap();
    assert!(matches!(storage.insert_transfer(a.clone()).await, Err(Error::AlreadyExists(_))));
    assert_eq!(storage.transfer(a.id).unwrap(), Some(a.clone()));

    let all = (Timestamp::EPOCH, Timestamp::from_unix_micros(i64::MAX));
    let res_a = ResourceId::parse("res-a").unwrap();
    assert_eq!(storage.transfers_by_resource(&res_a, all.0, all.1, 100).unwrap(), vec![a.id]);
    assert_eq!(
        storage.transfers_by_party(&party(2), false, all.0, all.1, 100).unwrap(),
        vec![b.id]
    );
    assert_eq!(storage.transfers_by_party(&party(2), true, all.0, all.1, 100).unwrap(), vec![a.id]);
    assert_eq!(storage.transfers_by_party(&party(1), true, all.0, all.1, 100).unwrap(), vec![b.id]);
    let before = Timestamp::from_unix_micros(a.created.as_unix_micros());
    assert!(storage.transfers_by_resource(&res_a, all.0, before, 100).unwrap().is_empty());
}

#[tokio::test]
async fn a_rejected_change_leaves_the_transfer_as_it_was() {
    let (_dir, storage) = temp_storage().await;
    let t = new_transfer("res", 1, &[2], true);
    storage.insert_transfer(t.clone()).await.unwrap();
    let err = storage
        .update_transfer(t.id, |t| Ok(t.record_download(&party(2), Timestamp::now())?))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Transfer(TransferError::NotAvailable)));
    let err = storage
        .update_transfer(t.id, |t| Ok(t.confirm_download(&party(2), Timestamp::now())?))
        .await;
    assert!(err.is_err());
    assert_eq!(storage.transfer(t.id).unwrap(), Some(t));
    let missing = FileTransferId::new_random();
    assert!(matches!(storage.update_transfer(missing, |_| Ok(())).await, Err(Error::NotFound(_))));
}

#[tokio::test]
async fn blob_references_follow_the_transfers() {
    let (dir, storage) = temp_storage().await;
    let data = payload(11, 2 * 1024 * 1024);
    let a = new_transfer("res", 1, &[2], true);
    let b = new_transfer("res", 1, &[2], false);
    let c = new_transfer("res", 1, &[2], true);
    for t in [&a, &b, &c] {
        storage.insert_transfer(t.clone()).await.unwrap();
    }
    assert_eq!(upload(&storage, a.id, &data).await, UploadOutcome::Processing);
    assert_eq!(upload(&storage, b.id, &data).await, UploadOutcome::Published);
    assert_eq!(upload(&storage, c.id, &data).await, UploadOutcome::Processing);
    let digest = storage::Digest::of(&data);
    assert_eq!(storage.blob(&digest).unwrap().unwrap().refs, 3);

    // Infected: the transfer fails and lets go of its blob in the same transaction.
    let infected = ScanOutcome::Infected { signature: "Eicar-Test-Signature".into() };
    let (t, ()) = storage
        .update_transfer(a.id, move |t| Ok(t.record_scan(&infected, Timestamp::now())?))
        .await
        .unwrap();
    assert_eq!(t.status(), FileTransferStatus::Failed);
    assert!(t.latest_status().display_text().contains("Eicar-Test-Signature"));
    assert_eq!(storage.blob(&digest).unwrap().unwrap().refs, 2);

    storage
        .update_transfer(c.id, |t| Ok(t.record_scan(&ScanOutcome::Clean, Timestamp::now())?))
        .await
        .unwrap();
    storage.update_transfer(b.id, |t| Ok(t.purge(Timestamp::now())?)).await.unwrap();
    assert!(storage.blob_path(&digest).exists());
    storage.update_transfer(c.id, |t| Ok(t.purge(Timestamp::now())?)).await.unwrap();
    // Storage is back to its baseline: no blob, no record, no temporary.
    assert!(storage.blob(&digest).unwrap().is_none());
    assert!(!storage.blob_path(&digest).exists());
    assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    assert!(storage.check_consistency().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_checksum_mismatch_keeps_nothing() {
    let (_dir, storage) = temp_storage().await;
    let t = transfer_declaring(&storage, storage::Md5::of(b"something else")).await;
    let data = payload(5, 300_000);
    assert!(data.len() as u64 > storage::INLINE_MD5_LIMIT);
    // The upload completes at disk speed; the MD5 arrives after it and fails the transfer.
    assert_eq!(upload(&storage, t.id, &data).await, UploadOutcome::Processing);
    let digest = storage::Digest::of(&data);
    assert!(storage.blob_path(&digest).exists());
    storage.record_md5(t.id, storage::Md5::of(&data), Timestamp::now()).await.unwrap();
    let stored = storage.transfer(t.id).unwrap().unwrap();
    assert_eq!(stored.status(), FileTransferStatus::Failed);
    assert_eq!(stored.latest_status().display_text(), "Checksum mismatch");
    assert!(storage.blob(&digest).unwrap().is_none());
    assert!(!storage.blob_path(&digest).exists(), "a rejected upload's bytes stayed on disk");
}

#[tokio::test]
async fn a_small_files_checksum_mismatch_fails_it_at_completion_and_keeps_nothing() {
    let (dir, storage) = temp_storage().await;
    let t = transfer_declaring(&storage, storage::Md5::of(b"something else")).await;
    let data = payload(5, 4096);
    // Its MD5 was computed while it was written: no second pass, no late verdict.
    assert_eq!(upload(&storage, t.id, &data).await, UploadOutcome::ChecksumMismatch);
    let stored = storage.transfer(t.id).unwrap().unwrap();
    assert_eq!(stored.status(), FileTransferStatus::Failed);
    assert_eq!(stored.latest_status().display_text(), "Checksum mismatch");
    let digest = storage::Digest::of(&data);
    assert!(storage.blob(&digest).unwrap().is_none());
    assert!(!storage.blob_path(&digest).exists(), "a rejected upload's bytes stayed on disk");
    assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    assert!(storage.check_consistency().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_small_files_md5_is_known_when_its_upload_completes() {
    let (_dir, storage) = temp_storage().await;
    let data = payload(6, 4096);
    let t = transfer_declaring(&storage, storage::Md5::of(&data)).await;
    assert_eq!(upload(&storage, t.id, &data).await, UploadOutcome::Processing);
    let stored = storage.transfer(t.id).unwrap().unwrap();
    assert_eq!(stored.content.unwrap().md5, Some(storage::Md5::of(&data)));
    assert!(!stored.checksum_pending());
    // So the clean scan alone publishes it.
    let (published, ()) = storage
        .update_transfer(t.id, |t| Ok(t.record_scan(&ScanOutcome::Clean, Timestamp::now())?))
        .await
        .unwrap();
    assert_eq!(published.status(), FileTransferStatus::Published);
    let digest = storage::Digest::of(&data);
    assert_eq!(storage.blob(&digest).unwrap().unwrap().md5, Some(storage::Md5::of(&data)));
}

#[tokio::test]
async fn a_matching_checksum_publishes_once_scan_and_md5_are_in() {
    let (_dir, storage) = temp_storage().await;
    let data = payload(6, 300_000);
    let t = transfer_declaring(&storage, storage::Md5::of(&data)).await;
    assert_eq!(upload(&storage, t.id, &data).await, UploadOutcome::Processing);
    let (after_scan, ()) = storage
        .update_transfer(t.id, |t| Ok(t.record_scan(&ScanOutcome::Clean, Timestamp::now())?))
        .await
        .unwrap();
    assert_eq!(after_scan.status(), FileTransferStatus::UploadProcessing);
    let published =
        storage.record_md5(t.id, storage::Md5::of(&data), Timestamp::now()).await.unwrap();
    assert_eq!(published.status(), FileTransferStatus::Published);
    let digest = storage::Digest::of(&data);
    assert_eq!(storage.blob(&digest).unwrap().unwrap().md5, Some(storage::Md5::of(&data)));
}

#[tokio::test]
async fn concurrent_writes_share_commits() {
    let (_dir, storage) = temp_storage().await;
    let transfers: Vec<_> = (0..200).map(|i| new_transfer("res", 1, &[2 + i % 3], true)).collect();
    let commits_before = storage.index_stats().commits();
    let tasks: Vec<_> = transfers
        .iter()
        .map(|t| {
            let storage = storage.clone();
            let t = t.clone();
            tokio::spawn(async move { storage.insert_transfer(t).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let commits = storage.index_stats().commits() - commits_before;
    assert!(commits < 200, "200 concurrent writes took {commits} commits: no grouping");
    for t in &transfers {
        assert_eq!(storage.transfer(t.id).unwrap().as_ref(), Some(t));
    }
}
