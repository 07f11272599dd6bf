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

const OWNER: &str = "991825827";
const SENDER: &str = "910753614";
const RECIPIENT: &str = "986252932";
const ALL: &[&str] = &["altinn:broker.write", "altinn:broker.read", "altinn:serviceowner"];
const MIB: u64 = 1024 * 1024;

/// `total` bytes in 1 MiB chunks, without holding them (`None`: an endless stream).
fn chunk_source(
    total: Option<u64>,
) -> impl FnMut() -> std::future::Ready<std::io::Result<Option<bytes::Bytes>>> + Send + 'static {
    let chunk = bytes::Bytes::from(integration_tests::payload(7, MIB as usize));
    let mut sent = 0u64;
    move || {
        let done = total.is_some_and(|t| sent >= t);
        sent += MIB;
        std::future::ready(Ok((!done).then(|| chunk.clone())))
    }
}

/// A raw HTTP/1.1 request (headers, then `body`), whatever the server does with the body;
/// returns (status, body).
async fn raw_http(addr: std::net::SocketAddr, head: &str, body: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let _ = stream.write_all(body).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await;
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status line");
    (status, response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

async fn ready(addr: std::net::SocketAddr) -> (u16, serde_json::Value) {
    let (status, body) =
        raw_http(addr, "GET /health/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"")
            .await;
    (status, serde_json::from_str(&body).unwrap_or_default())
}

async fn status_of(client: &client::Client, id: &str) -> (i32, String) {
    let o = client.overview(id).await.unwrap();
    (o.file_transfer_status, o.file_transfer_status_text)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_refuses_uploads_cleanly_and_keeps_serving() {
    use client::v1::FileTransferStatus as S;
    let Some(fs) = SmallFs::mount(300) else { return };
    let clamd = integration_tests::TestClamd::start();
    let data = fs.path().join("data");
    let server = integration_tests::TestServer::start_in(&data, &clamd.address(), 0, |c| {
        c.storage.min_free_bytes = 32 * MIB;
    })
    .await;
    let c = |org: &str| server.client(server.token(org, ALL));
    let (owner, sender, recipient) = (c(OWNER), c(SENDER), c(RECIPIENT));
    integration_tests::owner_with_resource(&owner, "res", &[SENDER], &[RECIPIENT]).await;
    let new_transfer =
        || integration_tests::initialize_transfer(&sender, "res", SENDER, &[RECIPIENT]);

    // 1. 100 MB fit and publish.
    let first = new_transfer().await.unwrap();
    let bytes = integration_tests::payload(1, 100_000_000);
    let upload = bytes::Bytes::from(bytes.clone());
    let mut parts = integration_tests::chunks(&upload, MIB as usize).into_iter();
    sender
        .upload_once(
            &first,
            0,
            Some(upload.len() as u64),
            move || std::future::ready(Ok(parts.next())),
            &mut |_| {},
        )
        .await
        .unwrap();
    assert_eq!(sender.wait_settled(&first, "res").await.unwrap(), "no.altinn.broker.published");

    // 2. 400 MB declared up front: refused before the first byte, nothing failed or kept.
    let declared = new_transfer().await.unwrap();
    let error = sender
        .upload_once(&declared, 0, Some(400_000_000), chunk_source(Some(400_000_000)), &mut |_| {})
        .await
        .unwrap_err();
    assert_eq!(error.code(), tonic::Code::ResourceExhausted, "{error:?}");
    assert!(error.message().contains("out of storage space"), "{error:?}");
    assert!(!error.message().contains(fs.path().to_str().unwrap()), "no path leaks: {error:?}");
    assert_eq!(status_of(&sender, &declared).await.0, S::Initialized as i32);
    let token = server.token(SENDER, ALL);
    let (status, body) = raw_http(
        server.addr,
        &format!(
            "POST /broker/api/v1/filetransfer/{declared}/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/octet-stream\r\nContent-Length: 400000000\r\n\r\n"
        ),
        &[0u8; 4096],
    )
    .await;
    assert_eq!(status, 507, "{body}");
    assert!(body.contains("out of storage space"), "{body}");

    // 3. 400 MB without a declared length: it runs into the reserve, fails with a reason, and
    //    its partial file goes at once.
    let unknown = new_transfer().await.unwrap();
    let error = sender
        .upload_once(&unknown, 0, None, chunk_source(Some(400_000_000)), &mut |_| {})
        .await
        .unwrap_err();
    assert_eq!(error.code(), tonic::Code::ResourceExhausted, "{error:?}");
    let (status, text) = status_of(&sender, &unknown).await;
    assert_eq!(status, S::Failed as i32, "{text}");
    assert!(text.contains("ran out of storage space"), "{text}");
    assert_eq!(server.files_in("tmp"), 0, "the failed upload's temporary is gone");
    // The file is unlinked at once; its space returns when the last reader of it (the scan
    // tailing the upload) has let go, a moment later on a busy machine.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while integration_tests::free_bytes(fs.path()) <= 150 * MIB {
        assert!(std::time::Instant::now() < deadline, "its space is free again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Everything else goes on, without a restart.
    let (code, body) = ready(server.addr).await;
    assert_eq!(code, 200, "{body}");
    let (_, got) = recipient.download_range(&first, 0, None).await.unwrap();
    assert!(got == bytes, "the first transfer downloads intact");
    let after = new_transfer().await.unwrap();
    // A TUS upload under way when the disk fills up.
    let http = reqwest::Client::new();
    let tus_id = new_transfer().await.unwrap();
    let tus_url = format!("{}/broker/api/v1/filetransfer/upload/tus/{tus_id}", server.url());
    let tus = |method: reqwest::Method, url: &str| {
        http.request(method, url).bearer_auth(&token).header("tus-resumable", "1.0.0")
    };
    let r =
        tus(reqwest::Method::POST, &tus_url).header("upload-length", "10").send().await.unwrap();
    assert_eq!(r.status(), 201);
    let r = tus(reqwest::Method::PATCH, &tus_url)
        .header("content-type", "application/offset+octet-stream")
        .header("upload-offset", "0")
        .body("01234")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);

    // 4. Below the reserve (something else filled the disk): not ready, uploads refused before
    //    they start, reads and confirmations served.
    let filler = fs.fill("filler", 16 * MIB);
    let (code, body) = ready(server.addr).await;
    assert_eq!(code, 503, "{body}");
    assert!(body["storage"].as_str().unwrap().starts_with("full"), "{body}");
    let error = sender
        .upload_once(&after, 0, Some(10), chunk_source(Some(10)), &mut |_| {})
        .await
        .unwrap_err();
    assert_eq!(error.code(), tonic::Code::ResourceExhausted, "{error:?}");
    assert_eq!(status_of(&sender, &after).await.0, S::Initialized as i32, "refused, not failed");
    recipient.confirm(&first).await.unwrap();
    assert!(recipient.download_range(&first, 0, Some(10)).await.is_ok());
    assert!(new_transfer().await.is_ok(), "initialize is a small write: served");
    // A TUS partial that cannot fit is refused up front; a TUS upload can be terminated.
    let r = tus(reqwest::Method::POST, &tus_url)
        .header("upload-concat", "partial")
        .header("upload-length", (100 * MIB).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 507);
    assert_eq!(tus(reqwest::Method::DELETE, &tus_url).send().await.unwrap().status(), 204);
    assert_eq!(server.files_in("tmp"), 0, "the terminated upload's temporary is gone");

    // Space comes back: ready again, and the refused upload goes through.
    std::fs::remove_file(filler).unwrap();
    let (code, body) = ready(server.addr).await;
    assert_eq!(code, 200, "{body}");
    let mut small = Some(bytes::Bytes::from_static(b"0123456789"));
    sender
        .upload_once(&after, 0, Some(10), move || std::future::ready(Ok(small.take())), &mut |_| {})
        .await
        .unwrap();
    assert_eq!(sender.wait_settled(&after, "res").await.unwrap(), "no.altinn.broker.published");
}
