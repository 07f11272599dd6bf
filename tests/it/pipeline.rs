use std::time::Duration;

use bytes::Bytes;
use integration_tests::{CHUNK, TailSource, TestClamd, chunks, eicar, payload, temp_storage};
use scanner::{ScanError, Verdict};
use storage::model::{Timestamp, UploadId};

use crate::index::new_transfer;

#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_clamd_never_blocks_the_upload() {
    let clamd = TestClamd::start();
    let (_dir, storage) = temp_storage().await;
    let t = new_transfer("res", 1, &[2], true);
    storage.insert_transfer(t.clone()).await.unwrap();
    storage.update_transfer(t.id, |t| Ok(t.start_upload(Timestamp::now())?)).await.unwrap();
    let mut upload =
        storage.open_upload(UploadId::for_transfer(t.id), Timestamp::now()).await.unwrap();

    let mut data = payload(31, 24 * 1024 * 1024);
    let at = data.len() - 100_000;
    data[at..at + 68].copy_from_slice(&eicar());

    // The scan starts with the upload and follows it.
    let client = clamd.client();
    let tail = TailSource(upload.tail().unwrap());
    let scan = tokio::spawn(async move { client.scan(tail).await });

    clamd.pause();
    // All 24 MiB go in while clamd cannot take a byte: ingest does not wait for the scanner.
    let ingest = async {
        for chunk in chunks(&data, CHUNK) {
            upload.write(chunk).await.unwrap();
        }
        upload.checkpoint(Timestamp::now()).await.unwrap()
    };
    let committed = tokio::time::timeout(Duration::from_secs(60), ingest)
        .await
        .expect("the upload stalled behind a frozen clamd");
    assert_eq!(committed, data.len() as u64);
    assert!(!scan.is_finished(), "the scan cannot have finished while clamd was frozen");
    let (transfer, _) = storage.complete_upload(t.id, upload, Timestamp::now()).await.unwrap();

    clamd.resume();
    let verdict = scan.await.unwrap().unwrap();
    assert!(matches!(verdict, Verdict::Infected { .. }), "{verdict:?}");
    assert_eq!(transfer.content.unwrap().size, data.len() as u64);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scan_running_beside_the_upload_sees_every_byte() {
    let clamd = TestClamd::start();
    let (_dir, storage) = temp_storage().await;
    let t = new_transfer("res", 1, &[2], true);
    storage.insert_transfer(t.clone()).await.unwrap();
    storage.update_transfer(t.id, |t| Ok(t.start_upload(Timestamp::now())?)).await.unwrap();
    let mut upload =
        storage.open_upload(UploadId::for_transfer(t.id), Timestamp::now()).await.unwrap();
    let client = clamd.client();
    let tail = TailSource(upload.tail().unwrap());
    let scan = tokio::spawn(async move { client.scan(tail).await });
    let data = payload(32, 30 * 1024 * 1024);
    for chunk in chunks(&data, 100_000) {
        upload.write(chunk).await.unwrap();
    }
    // Completing the upload ends the tail; the scan then gets its verdict.
    storage.complete_upload(t.id, upload, Timestamp::now()).await.unwrap();
    assert_eq!(scan.await.unwrap().unwrap(), Verdict::Clean);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_abandoned_upload_is_never_scanned_clean() {
    let clamd = TestClamd::start();
    let (_dir, storage) = temp_storage().await;
    let id = UploadId::for_transfer(storage::model::FileTransferId::new_random());
    let mut upload = storage.open_upload(id, Timestamp::now()).await.unwrap();
    let client = clamd.client();
    let tail = TailSource(upload.tail().unwrap());
    let scan = tokio::spawn(async move { client.scan(tail).await });
    upload.write(Bytes::from(payload(33, 2 * 1024 * 1024))).await.unwrap();
    drop(upload); // the client went away mid-upload
    let result = scan.await.unwrap();
    assert!(matches!(result, Err(ScanError::Source(_))), "{result:?}");
    assert!(!Verdict::from_result(result).is_clean());
}
