//! The file transfer service end to end: a real server on loopback, real clamd, the Rust client.

use std::time::{Duration, Instant};

use bytes::Bytes;
use client::Client;
use client::v1 as pb;
use integration_tests::{TestClamd, TestServer, eicar, payload};
use tonic::Code;

const OWNER: &str = "991825827";
const SENDER: &str = "910753614";
const R1: &str = "986252932";
const R2: &str = "910000003";
const OUTSIDER: &str = "910000004";
const NOT_LISTED: &str = "910000006";
const ALL: &[&str] = &["altinn:broker.write", "altinn:broker.read", "altinn:serviceowner"];

fn p(org: &str) -> String {
    format!("0192:{org}")
}

/// A server with a registered owner and a resource `res` on which SENDER may send and R1, R2
/// and OUTSIDER may receive.
struct World {
    server: TestServer,
    owner: Client,
    sender: Client,
    r1: Client,
    r2: Client,
    #[allow(dead_code)]
    outsider: Client,
    _dir: tempfile::TempDir,
}

impl World {
    async fn new(clamd: &TestClamd) -> Self {
        Self::with(clamd, pb::PutResourceRequest::default()).await
    }

    async fn with(clamd: &TestClamd, resource: pb::PutResourceRequest) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let server = TestServer::start_in(dir.path(), &clamd.address(), 0, |_| {}).await;
        let world = Self::around(server, dir).await;
        world.owner.register_service_owner("Owner").await.unwrap();
        world
            .owner
            .put_resource(pb::PutResourceRequest {
                resource_id: "res".into(),
                access: Some(pb::AccessRules {
                    senders: vec![p(SENDER)],
                    recipients: vec![p(R1), p(R2), p(OUTSIDER)],
                }),
                ..resource
            })
            .await
            .unwrap();
        world
    }

    async fn around(server: TestServer, dir: tempfile::TempDir) -> Self {
        let c = |org: &str| server.client(server.token(org, ALL));
        Self {
            owner: c(OWNER),
            sender: c(SENDER),
            r1: c(R1),
            r2: c(R2),
            outsider: c(OUTSIDER),
            server,
            _dir: dir,
        }
    }

    async fn initialize(&self, recipients: &[&str], checksum: Option<String>) -> String {
        self.sender
            .initialize(pb::InitializeFileTransferRequest {
                file_name: "data.bin".into(),
                resource_id: "res".into(),
                senders_file_transfer_reference: "ref".into(),
                sender: p(SENDER),
                recipients: recipients.iter().map(|r| p(r)).collect(),
                checksum,
                ..Default::default()
            })
            .await
            .unwrap()
    }

    async fn upload(&self, id: &str, data: &[u8]) -> Result<pb::UploadResult, tonic::Status> {
        let chunks: Vec<Bytes> = data.chunks(256 * 1024).map(Bytes::copy_from_slice).collect();
        let mut chunks = chunks.into_iter();
        let next = move || {
            let chunk = chunks.next();
            async move { Ok(chunk) }
        };
        self.sender.upload_once(id, 0, Some(data.len() as u64), next, &mut |_| {}).await
    }

    async fn wait_for(&self, id: &str, status: pb::FileTransferStatus) -> pb::FileTransferOverview {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let overview = self.sender.overview(id).await.unwrap();
            if overview.file_transfer_status == status as i32 {
                return overview;
            }
            assert!(Instant::now() < deadline, "{id} stuck in {overview:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn altinn_code(status: &tonic::Status) -> Option<String> {
    server::api::grpc::altinn_code_of(status)
}

#[tokio::test(flavor = "multi_thread")]
async fn two_recipients_download_and_confirm_to_all_confirmed() {
    let clamd = TestClamd::start();
    let w = World::new(&clamd).await;
    let data = payload(1, 3 * 1024 * 1024 + 11);
    let id = w.initialize(&[R1, R2], Some(storage::Md5::of(&data).to_hex())).await;
    let result = w.upload(&id, &data).await.unwrap();
    assert_eq!(result.size, data.len() as u64);
    assert_eq!(result.blake3, storage::Digest::of(&data).to_hex());
    assert_eq!(result.checksum, storage::Md5::of(&data).to_hex());
    let published = w.wait_for(&id, pb::FileTransferStatus::Published).await;
    assert!(published.published.is_some());

    let dir = tempfile::tempdir().unwrap();
    for (i, recipient) in [&w.r1, &w.r2].into_iter().enumerate() {
        let out = dir.path().join(format!("out{i}"));
        recipient.download_file(&id, &out).await.unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), data);
        recipient.confirm(&id).await.unwrap();
    }
    let overview = w.sender.overview(&id).await.unwrap();
    assert_eq!(
        overview.file_transfer_status,
        pb::FileTransferStatus::AllConfirmedDownloaded as i32
    );
    // Confirming again is a no-op success (Altinn answers 400 here).
    w.r1.confirm(&id).await.unwrap();
    let details = w.sender.details(&id).await.unwrap();
    let statuses: Vec<i32> =
        details.file_transfer_status_history.iter().map(|e| e.file_transfer_status).collect();
    use pb::FileTransferStatus as S;
    assert_eq!(
        statuses,
        [
            S::Initialized,
            S::UploadStarted,
            S::UploadProcessing,
            S::Published,
            S::AllConfirmedDownloaded
        ]
        .map(|s| s as i32)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn eicar_inside_a_larger_file_fails_the_transfer_and_leaves_no_blob() {
    let clamd = TestClamd::start();
    let w = World::new(&clamd).await;
    let mut data = payload(2, 4 * 1024 * 1024);
    data[2_000_003..2_000_003 + 68].copy_from_slice(&eicar());
    let id = w.initialize(&[R1], None).await;
    w.upload(&id, &data).await.unwrap();
    let failed = w.wait_for(&id, pb::FileTransferStatus::Failed).await;
    assert!(
        failed.file_transfer_status_text.contains("Eicar-Test-Signature"),
        "{}",
        failed.file_transfer_status_text
    );
    let err = w.r1.download_range(&id, 0, None).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(altinn_code(&err).as_deref(), Some("BRO-00007"));
    assert_eq!(w.server.files_in("blobs"), 0, "the infected file is still stored");
    assert_eq!(w.server.files_in("tmp"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn only_an_operator_approved_resource_may_skip_the_scan_and_only_when_the_sender_asks() {
    let clamd = TestClamd::start();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path(), &clamd.address(), 0, |c| {
        c.clamd.unscanned_resources = vec!["res".into()];
    })
    .await;
    let w = World::around(server, dir).await;
    w.owner.register_service_owner("Owner").await.unwrap();
    let access = pb::AccessRules { senders: vec![p(SENDER)], recipients: vec![p(R1)] };
    for resource in ["res", "other"] {
        let put = pb::PutResourceRequest {
            resource_id: resource.into(),
            access: Some(access.clone()),
            ..Default::default()
        };
        w.owner.put_resource(put).await.unwrap();
    }
    assert!(w.owner.resource("res").await.unwrap().approved_for_disabled_virus_scan);
    assert!(!w.owner.resource("other").await.unwrap().approved_for_disabled_virus_scan);
    let initialize = |resource: &str, disable: bool| pb::InitializeFileTransferRequest {
        file_name: "e.txt".into(),
        resource_id: resource.into(),
        senders_file_transfer_reference: "ref".into(),
        sender: p(SENDER),
        recipients: vec![p(R1)],
        disable_virus_scan: Some(disable),
        ..Default::default()
    };
    let refused = w.sender.initialize(initialize("other", true)).await.unwrap_err();
    assert_eq!(altinn_code(&refused).as_deref(), Some("BRO-00020"));

    // The approved resource still scans unless the sender asks it not to.
    let scanned = w.sender.initialize(initialize("res", false)).await.unwrap();
    w.upload(&scanned, &eicar()).await.unwrap();
    w.wait_for(&scanned, pb::FileTransferStatus::Failed).await;
    let unscanned = w.sender.initialize(initialize("res", true)).await.unwrap();
    w.upload(&unscanned, &eicar()).await.unwrap();
    w.wait_for(&unscanned, pb::FileTransferStatus::Published).await;
}

/// Starts uploading `data` in 1 MiB chunks, `pause` apart, and abandons the attempt (the
/// connection goes with it) at its first durable acknowledgement, whose offset it returns.
async fn upload_until_acked(
    sender: &client::Client,
    id: &str,
    data: &[u8],
    length: Option<u64>,
    pause: Duration,
) -> u64 {
    let (acked_tx, mut acked_rx) = tokio::sync::mpsc::unbounded_channel();
    let (sender, id) = (sender.clone(), id.to_owned());
    let mut chunks =
        data.chunks(1024 * 1024).map(Bytes::copy_from_slice).collect::<Vec<_>>().into_iter();
    let attempt = tokio::spawn(async move {
        let next = move || {
            let chunk = chunks.next();
            async move {
                tokio::time::sleep(pause).await;
                Ok(chunk)
            }
        };
        sender
            .upload_once(&id, 0, length, next, &mut |c| {
                let _ = acked_tx.send(c);
            })
            .await
    });
    let acked = acked_rx.recv().await.expect("an acknowledgement before the cut");
    attempt.abort();
    let _ = attempt.await;
    acked
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_resumes_after_the_connection_is_cut() {
    let clamd = TestClamd::start();
    let w = World::new(&clamd).await;
    let data = payload(3, 40 * 1024 * 1024);
    let id = w.initialize(&[R1], None).await;

    // First attempt: cut the connection once some offset is durable.
    let acked = upload_until_acked(
        &w.sender,
        &id,
        &data,
        Some(data.len() as u64),
        Duration::from_millis(5),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let status = w.sender.upload_status(&id).await.unwrap();
    assert!(status.committed_offset >= acked, "{} < {acked}", status.committed_offset);
    assert!(status.committed_offset < data.len() as u64);

    // The client resumes from the committed offset.
    let path = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(path.path(), &data).unwrap();
    let result = w.sender.upload_file(&id, path.path(), &mut |_| {}).await.unwrap();
    assert_eq!(result.blake3, storage::Digest::of(&data).to_hex());
    // No checksum was declared: the MD5 is recorded beside the scan, by publication.
    let published = w.wait_for(&id, pb::FileTransferStatus::Published).await;
    assert_eq!(published.checksum, storage::Md5::of(&data).to_hex());
    let (_, back) = w.r1.download_range(&id, 0, None).await.unwrap();
    assert!(back == data);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_resumes_after_a_server_restart() {
    let clamd = TestClamd::start();
    let w = World::new(&clamd).await;
    let data = payload(4, 24 * 1024 * 1024);
    let id = w.initialize(&[R1], None).await;
    let acked = upload_until_acked(&w.sender, &id, &data, None, Duration::from_millis(10)).await;

    // Restart the server on the same port and data directory.
    let World { mut server, sender, r1, _dir, .. } = w;
    let port = server.addr.port();
    server.stop().await;
    let server =
        TestServer::start_in(&server.data_dir.clone(), &clamd.address(), port, |_| {}).await;
    // The client's old connection is gone; like any client, retry until the new server answers.
    let mut status = sender.upload_status(&id).await;
    for _ in 0..50 {
        match &status {
            Err(s) if client::is_retryable(s) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                status = sender.upload_status(&id).await;
            }
            _ => break,
        }
    }
    let status = status.unwrap();
    assert!(status.committed_offset >= acked);
    let path = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(path.path(), &data).unwrap();
    let result = sender.upload_file(&id, path.path(), &mut |_| {}).await.unwrap();
    assert_eq!(result.blake3, storage::Digest::of(&data).to_hex());
    let deadline = Instant::now() + Duration::from_secs(60);
    while sender.overview(&id).await.unwrap().file_transfer_status
        != pb::FileTransferStatus::Published as i32
    {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, back) = r1.download_range(&id, 0, None).await.unwrap();
    assert!(back == data);
    drop(server);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_size_limit_cuts_an_upload_without_a_declared_length() {
    let clamd = TestClamd::start();
    let w = World::with(
        &clamd,
        pb::PutResourceRequest { max_file_transfer_size: Some(1024 * 1024), ..Default::default() },
    )
    .await;
    let id = w.initialize(&[R1], None).await;
    let data = payload(5, 3 * 1024 * 1024);
    let mut chunks =
        data.chunks(256 * 1024).map(Bytes::copy_from_slice).collect::<Vec<_>>().into_iter();
    let next = move || {
        let chunk = chunks.next();
        async move { Ok(chunk) }
    };
    let err = w.sender.upload_once(&id, 0, None, next, &mut |_| {}).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(altinn_code(&err).as_deref(), Some("BRO-00016"));
    assert_eq!(w.sender.upload_status(&id).await.unwrap().committed_offset, 0);
    assert_eq!(w.server.files_in("tmp"), 0, "bytes past the limit were kept");
    assert_eq!(w.server.files_in("blobs"), 0);
    // A declared length over the limit is refused before any byte.
    let err = w
        .sender
        .upload_once(&id, 0, Some(2 * 1024 * 1024), || async { Ok(None) }, &mut |_| {})
        .await
        .unwrap_err();
    assert_eq!(altinn_code(&err).as_deref(), Some("BRO-00016"));
    // A file within the limit still goes through.
    let small = payload(6, 512 * 1024);
    w.upload(&id, &small).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_checksum_mismatch_fails_with_error_9() {
    let clamd = TestClamd::start();
    let w = World::new(&clamd).await;
    let data = payload(7, 2 * 1024 * 1024);
    let id = w.initialize(&[R1], Some(storage::Md5::of(b"something else").to_hex())).await;
    let err = w.upload(&id, &data).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(altinn_code(&err).as_deref(), Some("BRO-00009"));
    let overview = w.sender.overview(&id).await.unwrap();
    assert_eq!(overview.file_transfer_status, pb::FileTransferStatus::Failed as i32);
    assert_eq!(overview.file_transfer_status_text, "Checksum mismatch");
    assert_eq!(w.server.files_in("blobs"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_clamd_holds_the_transfer_until_it_returns() {
    let mut clamd = TestClamd::start();
    let w = World::new(&clamd).await;
    let data = payload(8, 5 * 1024 * 1024);
    let id = w.initialize(&[R1], None).await;
    clamd.stop();
    w.upload(&id, &data).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let overview = w.sender.overview(&id).await.unwrap();
    assert_eq!(overview.file_transfer_status, pb::FileTransferStatus::UploadProcessing as i32);
    assert!(
        overview.file_transfer_status_text.contains("Waiting for the malware scanner"),
        "{}",
        overview.file_transfer_status_text
    );
    assert_eq!(
        w.r1.download_range(&id, 0, None).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    clamd.restart();
    let overview = w.wait_for(&id, pb::FileTransferStatus::Published).await;
    assert_eq!(overview.file_transfer_status_text, "Ready for download");
}

#[tokio::test(flavor = "multi_thread")]
async fn identical_content_is_stored_once_and_both_transfers_download() {
    let clamd = TestClamd::start();
    let w = World::new(&clamd).await;
    let data = payload(9, 2 * 1024 * 1024);
    let a = w.initialize(&[R1], None).await;
    let b = w.initialize(&[R2], None).await;
    w.upload(&a, &data).await.unwrap();
    w.upload(&b, &data).await.unwrap();
    w.wait_for(&a, pb::FileTransferStatus::Published).await;
    w.wait_for(&b, pb::FileTransferStatus::Published).await;
    assert_eq!(w.server.files_in("blobs"), 1);
    assert!(w.r1.download_range(&a, 0, None).await.unwrap().1 == data);
    assert!(w.r2.download_range(&b, 0, None).await.unwrap().1 == data);
}

#[tokio::test(flavor = "multi_thread")]
async fn ranged_downloads_record_one_download_started() {
    let clamd = TestClamd::start();
    let w = World::new(&clamd).await;
    let data = payload(10, 3 * 1024 * 1024);
    let id = w.initialize(&[R1], None).await;
    w.upload(&id, &data).await.unwrap();
    w.wait_for(&id, pb::FileTransferStatus::Published).await;
    let (header, part) = w.r1.download_range(&id, 1000, Some(70_000)).await.unwrap();
    assert_eq!((header.offset, header.length, header.file_size), (1000, 70_000, data.len() as u64));
    assert!(part == data[1000..71_000]);
    let (_, tail) = w.r1.download_range(&id, 3 * 1024 * 1024 - 5, None).await.unwrap();
    assert!(tail == data[data.len() - 5..]);
    let err = w.r1.download_range(&id, data.len() as u64 + 1, None).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange);
    assert_eq!(altinn_code(&err).as_deref(), Some("BRO-00029"));
    let details = w.sender.details(&id).await.unwrap();
    let started = details
        .recipient_file_transfer_status_history
        .iter()
        .filter(|e| e.recipient_file_transfer_status_code == 2)
        .count();
    assert_eq!(started, 1, "ranged downloads within the window record one DownloadStarted");
}

#[tokio::test(flavor = "multi_thread")]
async fn search_pages_past_the_cap_and_filters_by_role() {
    let clamd = TestClamd::start();
    let w = World::new(&clamd).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(w.initialize(&[R1], None).await);
    }
    let query = |token: String| pb::SearchFileTransfersRequest {
        resource_id: "res".into(),
        page_size: 2,
        page_token: token,
        order_ascending: true,
        ..Default::default()
    };
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = w.sender.search(query(token)).await.unwrap();
        seen.extend(page.file_transfer_ids);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, ids, "ascending pages give every transfer once, oldest first");
    let as_recipient =
        w.r1.search(pb::SearchFileTransfersRequest {
            resource_id: "res".into(),
            role: pb::Role::Recipient as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(as_recipient.file_transfer_ids.len(), 5);
    let as_sender =
        w.r1.search(pb::SearchFileTransfersRequest {
            resource_id: "res".into(),
            role: pb::Role::Sender as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(as_sender.file_transfer_ids.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idempotency_key_returns_the_same_transfer() {
    let clamd = TestClamd::start();
    let w = World::new(&clamd).await;
    let request = pb::InitializeFileTransferRequest {
        file_name: "a.txt".into(),
        resource_id: "res".into(),
        senders_file_transfer_reference: "r".into(),
        sender: p(SENDER),
        recipients: vec![p(R1)],
        idempotency_key: "key-1".into(),
        ..Default::default()
    };
    let first = w.sender.initialize(request.clone()).await.unwrap();
    let again = w.sender.initialize(request.clone()).await.unwrap();
    assert_eq!(first, again);
    let different = pb::InitializeFileTransferRequest { file_name: "b.txt".into(), ..request };
    assert_eq!(w.sender.initialize(different).await.unwrap_err().code(), Code::AlreadyExists);
}

#[derive(Debug, Clone, Copy)]
enum Rpc {
    Initialize,
    Upload,
    UploadStatus,
    Download,
    Confirm,
    Overview,
    Details,
    Search,
    RegisterServiceOwner,
    GetServiceOwner,
    PutResource,
    GetResource,
}

const RPCS: [Rpc; 12] = [
    Rpc::Initialize,
    Rpc::Upload,
    Rpc::UploadStatus,
    Rpc::Download,
    Rpc::Confirm,
    Rpc::Overview,
    Rpc::Details,
    Rpc::Search,
    Rpc::RegisterServiceOwner,
    Rpc::GetServiceOwner,
    Rpc::PutResource,
    Rpc::GetResource,
];

/// Calls `rpc` as `client` (acting for `org`) on transfer `id`; returns what came back, reduced
/// to "ok with how many ids" for search (the only call that answers with a list).
async fn call(client: &Client, org: &str, rpc: Rpc, id: &str) -> Result<usize, tonic::Status> {
    match rpc {
        Rpc::Initialize => client
            .initialize(pb::InitializeFileTransferRequest {
                file_name: "x".into(),
                resource_id: "res".into(),
                senders_file_transfer_reference: "r".into(),
                sender: p(org),
                recipients: vec![p(R1)],
                ..Default::default()
            })
            .await
            .map(|_| 1),
        Rpc::Upload => client
            .upload_once(
                id,
                0,
                Some(3),
                || async { Ok(Some(Bytes::from_static(b"abc"))) },
                &mut |_| {},
            )
            .await
            .map(|_| 1),
        Rpc::UploadStatus => client.upload_status(id).await.map(|_| 1),
        Rpc::Download => client.download_range(id, 0, None).await.map(|_| 1),
        Rpc::Confirm => client.confirm(id).await.map(|_| 1),
        Rpc::Overview => client.overview(id).await.map(|_| 1),
        Rpc::Details => client.details(id).await.map(|_| 1),
        Rpc::Search => client
            .search(pb::SearchFileTransfersRequest {
                resource_id: "res".into(),
                ..Default::default()
            })
            .await
            .map(|r| r.file_transfer_ids.len()),
        Rpc::RegisterServiceOwner => client.register_service_owner("x").await.map(|_| 1),
        Rpc::GetServiceOwner => client.service_owner().await.map(|_| 1),
        Rpc::PutResource => client
            .put_resource(pb::PutResourceRequest {
                resource_id: "res".into(),
                ..Default::default()
            })
            .await
            .map(|_| 1),
        Rpc::GetResource => client.resource("res").await.map(|_| 1),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_authorization_matrix() {
    let clamd = TestClamd::start();
    let w = World::new(&clamd).await;
    let data = payload(11, 100_000);
    let id = w.initialize(&[R1], None).await;
    w.upload(&id, &data).await.unwrap();
    w.wait_for(&id, pb::FileTransferStatus::Published).await;

    let s = &w.server;
    const NO_RIGHTS: &str = "910000005";
    let other_key =
        server::auth::DevKey::load_or_create(tempfile::tempdir().unwrap().path()).unwrap();
    let party = |org: &str| storage::model::Party::parse_lenient(org).unwrap();
    // A party with every scope but no rights anywhere; registered as a service owner of nothing.
    let no_rights = s.client(s.token(NO_RIGHTS, ALL));
    no_rights.register_service_owner("Nobody").await.unwrap();

    let unauthenticated = [
        ("no token", s.client("")),
        ("expired token", s.client(s.dev_key.mint(&party(R1), ALL, -3600))),
        ("wrong issuer", s.client(other_key.mint(&party(R1), ALL, 3600))),
    ];
    for (case, client) in &unauthenticated {
        for rpc in RPCS {
            let err =
                call(client, R1, rpc, &id).await.expect_err(&format!("{case}: {rpc:?} answered"));
            assert_eq!(err.code(), Code::Unauthenticated, "{case}: {rpc:?}: {err:?}");
        }
    }

    let wrong_scope = s.client(s.token(R1, &["altinn:something.else"]));
    for rpc in RPCS {
        let err = call(&wrong_scope, R1, rpc, &id)
            .await
            .expect_err(&format!("wrong scope: {rpc:?} answered"));
        assert_eq!(err.code(), Code::PermissionDenied, "wrong scope: {rpc:?}: {err:?}");
    }

    // A party with no rights, and one with rights on the resource but not part of the transfer:
    // neither learns anything about the transfer, and neither may act on the resource.
    for (case, client, org) in
        [("no rights", &no_rights, NO_RIGHTS), ("not in the transfer", &w.outsider, OUTSIDER)]
    {
        for rpc in RPCS {
            let result = call(client, org, rpc, &id).await;
            match rpc {
                Rpc::Upload
                | Rpc::UploadStatus
                | Rpc::Download
                | Rpc::Confirm
                | Rpc::Overview
                | Rpc::Details => {
                    let err = result.expect_err(&format!("{case}: {rpc:?} answered"));
                    assert_eq!(err.code(), Code::NotFound, "{case}: {rpc:?}: {err:?}");
                    assert_eq!(altinn_code(&err).as_deref(), Some("BRO-00001"), "{case}: {rpc:?}");
                }
                Rpc::Search => assert_eq!(result.unwrap(), 0, "{case}: search showed transfers"),
                Rpc::Initialize | Rpc::PutResource | Rpc::GetResource => {
                    let err = result.expect_err(&format!("{case}: {rpc:?} answered"));
                    assert_eq!(err.code(), Code::PermissionDenied, "{case}: {rpc:?}: {err:?}");
                    assert_eq!(altinn_code(&err).as_deref(), Some("BRO-00006"), "{case}: {rpc:?}");
                }
                // Acting on one's own service owner registration is not a right on this data.
                Rpc::RegisterServiceOwner | Rpc::GetServiceOwner => {}
            }
        }
    }

    // A recipient may not act as the sender, nor a sender as a recipient.
    let err = call(&w.r1, R1, Rpc::Upload, &id).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = call(&w.sender, SENDER, Rpc::Download, &id).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // And nothing above changed the transfer.
    let overview = w.sender.overview(&id).await.unwrap();
    assert_eq!(overview.file_transfer_status, pb::FileTransferStatus::Published as i32);
    assert_eq!(
        w.sender.details(&id).await.unwrap().recipient_file_transfer_status_history.len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn initialize_validates_like_altinn() {
    let clamd = TestClamd::start();
    let w = World::with(
        &clamd,
        pb::PutResourceRequest { required_party: Some(OWNER.into()), ..Default::default() },
    )
    .await;
    let base = pb::InitializeFileTransferRequest {
        file_name: "a.txt".into(),
        resource_id: "urn:altinn:resource:res".into(),
        senders_file_transfer_reference: "r".into(),
        sender: format!("urn:altinn:organization:identifier-no:{SENDER}"),
        recipients: vec![p(OWNER)],
        ..Default::default()
    };
    // Both party forms and the URN resource form are accepted; the sender is normalised.
    let id = w.sender.initialize(base.clone()).await.unwrap();
    assert_eq!(w.sender.overview(&id).await.unwrap().sender, p(SENDER));

    let many_props = (0..11).map(|i| (format!("k{i}"), "v".to_owned())).collect();
    let cases: Vec<(pb::InitializeFileTransferRequest, Code, Option<&str>, &str)> = vec![
        (
            pb::InitializeFileTransferRequest { file_name: String::new(), ..base.clone() },
            Code::InvalidArgument,
            None,
            "FileName",
        ),
        (
            pb::InitializeFileTransferRequest { resource_id: "a:b".into(), ..base.clone() },
            Code::InvalidArgument,
            None,
            "Invalid Resource identifier format",
        ),
        (
            pb::InitializeFileTransferRequest { sender: "910753614".into(), ..base.clone() },
            Code::InvalidArgument,
            None,
            "Organization numbers should be on the form",
        ),
        (
            pb::InitializeFileTransferRequest { recipients: vec![], ..base.clone() },
            Code::InvalidArgument,
            None,
            "One or more recipients are required",
        ),
        (
            pb::InitializeFileTransferRequest { recipients: vec!["x".into()], ..base.clone() },
            Code::InvalidArgument,
            None,
            "Each recipient should be on the form",
        ),
        (
            pb::InitializeFileTransferRequest { property_list: many_props, ..base.clone() },
            Code::InvalidArgument,
            None,
            "PropertyList can contain at most 10 properties",
        ),
        (
            pb::InitializeFileTransferRequest {
                property_list: [("k".repeat(51), "v".into())].into(),
                ..base.clone()
            },
            Code::InvalidArgument,
            None,
            "PropertyList Key can not be longer than 50",
        ),
        (
            pb::InitializeFileTransferRequest {
                property_list: [("k".into(), "v".repeat(3001))].into(),
                ..base.clone()
            },
            Code::InvalidArgument,
            None,
            "PropertyList Value can not be longer than 3000",
        ),
        (
            pb::InitializeFileTransferRequest { checksum: Some("abc".into()), ..base.clone() },
            Code::InvalidArgument,
            None,
            "length of 32 characters",
        ),
        (
            pb::InitializeFileTransferRequest {
                checksum: Some("D41D8CD98F00B204E9800998ECF8427E".into()),
                ..base.clone()
            },
            Code::InvalidArgument,
            None,
            "in lower case",
        ),
        (
            pb::InitializeFileTransferRequest { disable_virus_scan: Some(true), ..base.clone() },
            Code::InvalidArgument,
            Some("BRO-00020"),
            "approved",
        ),
        (
            pb::InitializeFileTransferRequest { recipients: vec![p(NOT_LISTED)], ..base.clone() },
            Code::InvalidArgument,
            Some("BRO-00028"),
            "access list",
        ),
        (
            pb::InitializeFileTransferRequest { recipients: vec![p(R1)], ..base.clone() },
            Code::InvalidArgument,
            Some("BRO-00026"),
            "service owner party",
        ),
        (
            pb::InitializeFileTransferRequest { recipients: vec![p(OWNER), p(R1)], ..base.clone() },
            Code::InvalidArgument,
            Some("BRO-00027"),
            "only be one",
        ),
        (
            pb::InitializeFileTransferRequest { resource_id: "unknown".into(), ..base.clone() },
            Code::FailedPrecondition,
            Some("BRO-00025"),
            "not been configured",
        ),
        (
            pb::InitializeFileTransferRequest { sender: p(R1), ..base.clone() },
            Code::PermissionDenied,
            Some("BRO-00006"),
            "bearer token",
        ),
    ];
    for (request, code, altinn, message) in cases {
        let err = w
            .sender
            .initialize(request.clone())
            .await
            .expect_err(&format!("{request:?} was accepted"));
        assert_eq!(err.code(), code, "{message}: {err:?}");
        assert_eq!(altinn_code(&err).as_deref(), altinn, "{message}: {err:?}");
        assert!(err.message().contains(message), "{message}: {err:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_declared_blake3_that_does_not_match_fails_with_error_9() {
    let clamd = TestClamd::start();
    let w = World::new(&clamd).await;
    let data = payload(12, 300_000);
    let request = |blake3: String| pb::InitializeFileTransferRequest {
        file_name: "a.bin".into(),
        resource_id: "res".into(),
        senders_file_transfer_reference: "r".into(),
        sender: p(SENDER),
        recipients: vec![p(R1)],
        blake3: Some(blake3),
        ..Default::default()
    };
    let bad = w.sender.initialize(request(storage::Digest::of(b"other").to_hex())).await.unwrap();
    let err = w.upload(&bad, &data).await.unwrap_err();
    assert_eq!(altinn_code(&err).as_deref(), Some("BRO-00009"));
    let good = w.sender.initialize(request(storage::Digest::of(&data).to_hex())).await.unwrap();
    w.upload(&good, &data).await.unwrap();
    w.wait_for(&good, pb::FileTransferStatus::Published).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn search_filters_by_status_and_time_like_altinn() {
    let clamd = TestClamd::start();
    let w = World::new(&clamd).await;
    let first = w.initialize(&[R1], None).await;
    let published = w.initialize(&[R1], None).await;
    w.upload(&published, &payload(13, 1000)).await.unwrap();
    w.wait_for(&published, pb::FileTransferStatus::Published).await;
    let created_first = w.sender.overview(&first).await.unwrap().created.unwrap();
    let search =
        |status: Option<pb::FileTransferStatus>, from, to| pb::SearchFileTransfersRequest {
            resource_id: "res".into(),
            status: status.map(|s| s as i32),
            from,
            to,
            ..Default::default()
        };
    let ids = |r: pb::SearchFileTransfersResponse| r.file_transfer_ids;
    // Status filters on the latest status.
    let found = ids(w
        .sender
        .search(search(Some(pb::FileTransferStatus::Published), None, None))
        .await
        .unwrap());
    assert_eq!(found, vec![published.clone()]);
    let found = ids(w
        .sender
        .search(search(Some(pb::FileTransferStatus::Initialized), None, None))
        .await
        .unwrap());
    assert_eq!(found, vec![first.clone()]);
    // Only `from`: strictly after; both: inclusive.
    let found = ids(w.sender.search(search(None, Some(created_first), None)).await.unwrap());
    assert_eq!(found, vec![published.clone()]);
    let found =
        ids(w.sender.search(search(None, Some(created_first), Some(created_first))).await.unwrap());
    assert_eq!(found, vec![first.clone()]);
    // Newest first by default.
    let found = ids(w.sender.search(search(None, None, None)).await.unwrap());
    assert_eq!(found, vec![published, first]);
    // The recipient sees them too, by its own latest recipient status.
    let initialized = pb::SearchFileTransfersRequest {
        resource_id: "res".into(),
        recipient_status: Some(pb::RecipientFileTransferStatus::Initialized as i32),
        ..Default::default()
    };
    assert_eq!(w.r1.search(initialized).await.unwrap().file_transfer_ids.len(), 2);
}

/// gRPC-Web framing: flag byte, big-endian length, payload.
fn grpc_web_frame(message: &impl prost::Message) -> Vec<u8> {
    let payload = message.encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&payload);
    frame
}

/// Splits a gRPC-Web response body into data frames and the trailer text.
fn grpc_web_frames(body: &[u8]) -> (Vec<Vec<u8>>, String) {
    let (mut data, mut trailers, mut rest) = (Vec::new(), String::new(), body);
    while rest.len() >= 5 {
        let flag = rest[0];
        let len = u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
        let payload = &rest[5..5 + len];
        if flag & 0x80 != 0 {
            trailers.push_str(&String::from_utf8_lossy(payload));
        } else {
            data.push(payload.to_vec());
        }
        rest = &rest[5 + len..];
    }
    (data, trailers)
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_web_unary_and_server_streaming_over_http1() {
    use prost::Message as _;
    let clamd = TestClamd::start();
    let w = World::new(&clamd).await;
    let data = payload(14, 2_500_000);
    let id = w.initialize(&[R1], None).await;
    w.upload(&id, &data).await.unwrap();
    w.wait_for(&id, pb::FileTransferStatus::Published).await;

    let http = reqwest::Client::builder().http1_only().build().unwrap();
    let call = |method: &str, body: Vec<u8>, token: String| {
        http.post(format!("{}/ferry.v1.FileTransferService/{method}", w.server.url()))
            .header("content-type", "application/grpc-web+proto")
            .header("x-grpc-web", "1")
            .bearer_auth(token)
            .body(body)
            .send()
    };
    // Unary.
    let request = pb::GetFileTransferRequest { file_transfer_id: id.clone() };
    let r = call("GetFileTransfer", grpc_web_frame(&request), w.server.token(SENDER, ALL))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("application/grpc-web"));
    let (frames, trailers) = grpc_web_frames(&r.bytes().await.unwrap());
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
    let overview = pb::FileTransferOverview::decode(frames[0].as_slice()).unwrap();
    assert_eq!(overview.file_transfer_id, id);
    assert_eq!(overview.file_transfer_status, pb::FileTransferStatus::Published as i32);
    // Server streaming: a header, then the file.
    let request = pb::DownloadRequest { file_transfer_id: id.clone(), offset: 0, length: None };
    let r = call("Download", grpc_web_frame(&request), w.server.token(R1, ALL)).await.unwrap();
    let (frames, trailers) = grpc_web_frames(&r.bytes().await.unwrap());
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
    let mut received = Vec::new();
    for frame in &frames {
        match pb::DownloadResponse::decode(frame.as_slice()).unwrap().message {
            Some(pb::download_response::Message::Data(bytes)) => received.extend_from_slice(&bytes),
            Some(pb::download_response::Message::Header(h)) => {
                assert_eq!(h.file_size, data.len() as u64)
            }
            None => {}
        }
    }
    assert!(received == data);
    // Errors travel in the trailers.
    let r = call(
        "GetFileTransfer",
        grpc_web_frame(&pb::GetFileTransferRequest { file_transfer_id: id.clone() }),
        String::new(),
    )
    .await
    .unwrap();
    let status = r.headers().get("grpc-status").map(|v| v.to_str().unwrap().to_owned());
    let trailers = grpc_web_frames(&r.bytes().await.unwrap()).1;
    assert!(
        status.as_deref() == Some("16") || trailers.contains("grpc-status:16"),
        "{status:?} {trailers}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cors_allows_configured_origins_only() {
    let clamd = TestClamd::start();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path(), &clamd.address(), 0, |c| {
        c.cors.allowed_origins = vec!["https://portal.example".into()];
    })
    .await;
    let http = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        http.request(
            reqwest::Method::OPTIONS,
            format!("{}/ferry.v1.FileTransferService/GetFileTransfer", server.url()),
        )
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type,x-grpc-web,authorization")
        .send()
    };
    let r = preflight("https://portal.example").await.unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "https://portal.example");
    let r = preflight("https://evil.example").await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
}
