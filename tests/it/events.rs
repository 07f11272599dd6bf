//! Events (the outbox and the pull feed) and the life-cycle jobs.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use integration_tests::{TestClamd, TestServer, payload};
use serde_json::{Value, json};
use server::app::InitializeRequest;
use server::auth::Caller;
use storage::model::*;

const OWNER: &str = "991825827";
const SENDER: &str = "910753614";
const R1: &str = "986252932";
const R2: &str = "910000003";
const ALL: &[&str] = &["altinn:broker.write", "altinn:broker.read", "altinn:serviceowner"];

async fn feed(
    http: &reqwest::Client,
    server: &TestServer,
    org: &str,
    query: &str,
) -> (Vec<Value>, String) {
    let r = http
        .get(format!("{}/events/api/v1/events?{query}", server.url()))
        .bearer_auth(server.token(org, ALL))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{query}");
    let next = r.headers()["next"].to_str().unwrap().to_owned();
    (r.json().await.unwrap(), next)
}

fn types(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["type"].as_str().unwrap().trim_start_matches("no.altinn.broker.").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn events_follow_the_life_cycle_and_the_feed_serves_each_party_its_own() {
    let clamd = TestClamd::start();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path(), &clamd.address(), 0, |_| {}).await;
    let c = |org: &str| server.client(server.token(org, ALL));
    integration_tests::owner_with_resource(&c(OWNER), "res", &[SENDER], &[R1, R2]).await;
    let id = c(SENDER)
        .initialize(client::v1::InitializeFileTransferRequest {
            file_name: "e.bin".into(),
            resource_id: "res".into(),
            senders_file_transfer_reference: "r".into(),
            sender: format!("0192:{SENDER}"),
            recipients: vec![format!("0192:{R1}"), format!("0192:{R2}")],
            ..Default::default()
        })
        .await
        .unwrap();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), payload(61, 100_000)).unwrap();
    c(SENDER).upload_file(&id, file.path(), &mut |_| {}).await.unwrap();
    for _ in 0..600 {
        if c(SENDER).overview(&id).await.unwrap().file_transfer_status
            == client::v1::FileTransferStatus::Published as i32
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c(R1).download_range(&id, 0, None).await.unwrap();
    c(R1).confirm(&id).await.unwrap();

    let http = reqwest::Client::new();
    let resource = "resource=urn:altinn:resource:res";
    let (sender_events, _) = feed(&http, &server, SENDER, &format!("{resource}&after=0")).await;
    assert_eq!(
        types(&sender_events),
        ["filetransferinitialized", "uploadprocessing", "published", "downloadconfirmed"]
    );
    let e = &sender_events[2];
    assert_eq!(e["specversion"], "1.0");
    assert_eq!(e["subject"], format!("urn:altinn:organization:identifier-no:{SENDER}"));
    assert_eq!(e["resource"], "urn:altinn:resource:res");
    assert_eq!(e["resourceinstance"], id.as_str());
    assert_eq!(e["data"]["Role"], "Sender");
    assert!(e["source"].as_str().unwrap().ends_with("/broker/api/v1/filetransfer"));
    let seqs: Vec<String> =
        sender_events.iter().map(|e| e["sequence"].as_str().unwrap().to_owned()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

    let (r1_events, _) = feed(&http, &server, R1, resource).await;
    assert_eq!(types(&r1_events), ["published", "downloadconfirmed"]);
    assert!(r1_events.iter().all(|e| e["data"]["Role"] == "Recipient"));
    let (r2_events, r2_next) = feed(&http, &server, R2, resource).await;
    assert_eq!(types(&r2_events), ["published"]);
    // Paging with `next`.
    let (first, next) = feed(&http, &server, SENDER, &format!("{resource}&size=1")).await;
    assert_eq!(types(&first), ["filetransferinitialized"]);
    let (second, _) =
        feed(&http, &server, SENDER, &format!("{resource}&size=2&after={next}")).await;
    assert_eq!(types(&second), ["uploadprocessing", "published"]);
    // An unknown cursor is an error, not a replay from the start.
    let r = http
        .get(format!(
            "{}/events/api/v1/events?after=00000000-0000-4000-8000-000000000000",
            server.url()
        ))
        .bearer_auth(server.token(R2, ALL))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Long-poll: R2 waits for its next event, which arrives when it confirms.
    let wait_url =
        format!("{}/events/api/v1/events?{resource}&after={r2_next}&wait=20", server.url());
    let r2_token = server.token(R2, ALL);
    let waiting = tokio::spawn({
        let http = http.clone();
        async move {
            http.get(wait_url)
                .bearer_auth(r2_token)
                .send()
                .await
                .unwrap()
                .json::<Vec<Value>>()
                .await
                .unwrap()
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the long-poll answered before anything happened");
    c(R2).download_range(&id, 0, None).await.unwrap();
    c(R2).confirm(&id).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), waiting).await.unwrap().unwrap();
    assert_eq!(types(&got), ["downloadconfirmed"]);
    let (sender_all, _) = feed(&http, &server, SENDER, resource).await;
    assert_eq!(types(&sender_all).last().unwrap(), "allconfirmeddownloaded");
    // Ids are deterministic: the same (type, transfer, role, party) gives the same id.
    let published_id = storage::event_id(
        EventType::Published,
        id.parse().unwrap(),
        EventRole::Sender,
        &Party::parse(&format!("0192:{SENDER}")).unwrap(),
    );
    assert_eq!(sender_events[2]["id"], published_id.to_string());
}

/// An in-process app on a clock the test moves.
struct Clocked {
    app: Arc<server::App>,
    now: Arc<AtomicI64>,
    sender: Caller,
    r1: Caller,
    r2: Caller,
    /// When the test started (its clock's first reading).
    started: Timestamp,
    _dir: tempfile::TempDir,
}

impl Clocked {
    async fn new(clamd: &TestClamd) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let storage =
            integration_tests::open_storage(storage::StorageOptions::new(dir.path())).await;
        let key = server::auth::DevKey::load_or_create(dir.path()).unwrap();
        let auth =
            server::auth::Authenticator::load(&[], Some(&key), Duration::from_secs(30)).unwrap();
        let now = Arc::new(AtomicI64::new(Timestamp::now().as_unix_micros()));
        let clock = now.clone();
        let app = Arc::new(
            server::App::new(
                storage,
                clamd.client(),
                auth,
                server::app::AppOptions {
                    scan_retry_max: Duration::from_millis(200),
                    ..Default::default()
                },
            )
            .with_clock(move || Timestamp::from_unix_micros(clock.load(Ordering::SeqCst))),
        );
        let caller = |org: &str| Caller {
            org: Some(Party::parse_lenient(org).unwrap()),
            scopes: ALL.iter().map(|s| s.to_string()).collect(),
        };
        app.register_service_owner(&caller(OWNER), "Owner".into()).await.unwrap();
        let access = AccessRules {
            senders: vec![Party::parse_lenient(SENDER).unwrap()],
            recipients: vec![Party::parse_lenient(R1).unwrap(), Party::parse_lenient(R2).unwrap()],
        };
        app.put_resource(
            &caller(OWNER),
            "res",
            ResourceUpdate { access: Some(access), ..Default::default() },
        )
        .await
        .unwrap();
        let started = Timestamp::from_unix_micros(now.load(Ordering::SeqCst));
        Self {
            app,
            now,
            sender: caller(SENDER),
            r1: caller(R1),
            r2: caller(R2),
            started,
            _dir: dir,
        }
    }

    /// The service owner's statistics for the month the test started in.
    fn statistics(&self) -> Vec<server::app::StatisticsRow> {
        let owner = Caller {
            org: Some(Party::parse_lenient(OWNER).unwrap()),
            scopes: ALL.iter().map(|s| s.to_string()).collect(),
        };
        let started = self.started.to_rfc3339();
        let (year, month) = (started[0..4].parse().unwrap(), started[5..7].parse().unwrap());
        self.app.monthly_statistics(&owner, year, month, Some("res")).unwrap()
    }

    fn advance(&self, d: Duration) -> Timestamp {
        self.now.fetch_add(d.as_micros() as i64, Ordering::SeqCst);
        self.app.now()
    }

    async fn run_due(&self) -> usize {
        server::app::lifecycle::run_due(&self.app, self.app.now()).await.unwrap()
    }

    async fn transfer(&self, recipients: &[&str]) -> FileTransferId {
        self.app
            .initialize(
                &self.sender,
                InitializeRequest {
                    file_name: "f".into(),
                    resource_id: "res".into(),
                    senders_file_transfer_reference: "r".into(),
                    sender: format!("0192:{SENDER}"),
                    recipients: recipients.iter().map(|r| format!("0192:{r}")).collect(),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
    }

    async fn upload(&self, id: FileTransferId, seed: u64) {
        let mut session = self.app.begin_upload(&self.sender, id, Some(0), None).await.unwrap();
        session.write(Bytes::from(payload(seed, 50_000))).await.unwrap();
        session.checkpoint().await.unwrap();
        session.finish().await.unwrap();
    }

    async fn wait_status(&self, id: FileTransferId, status: FileTransferStatus) {
        for _ in 0..400 {
            if self.app.storage.transfer(id).unwrap().unwrap().status() == status {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("{id} never reached {status}");
    }

    fn status(&self, id: FileTransferId) -> FileTransfer {
        self.app.storage.transfer(id).unwrap().unwrap()
    }

    fn event_types(&self, id: FileTransferId) -> Vec<(EventType, EventRole)> {
        self.app
            .storage
            .events_after(0, 10_000)
            .unwrap()
            .into_iter()
            .filter(|e| e.transfer == id)
            .map(|e| (e.kind, e.role))
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn expiry_and_grace_purges_on_an_injected_clock() {
    let clamd = TestClamd::start();
    let w = Clocked::new(&clamd).await;
    // A: published, one of two recipients confirms; then it expires.
    let a = w.transfer(&[R1, R2]).await;
    w.upload(a, 1).await;
    w.wait_status(a, FileTransferStatus::Published).await;
    w.app.download(&w.r1, a, 0, None).await.unwrap();
    w.app.confirm_download(&w.r1, a).await.unwrap();
    // B: everyone confirms: purged after the grace period (2 h default).
    let b = w.transfer(&[R2]).await;
    w.upload(b, 2).await;
    w.wait_status(b, FileTransferStatus::Published).await;
    w.app.download(&w.r2, b, 0, None).await.unwrap();
    w.app.confirm_download(&w.r2, b).await.unwrap();
    assert_eq!(w.status(b).status(), FileTransferStatus::AllConfirmedDownloaded);
    // The month's statistics: (sender, recipient) → transfers, uploads, attempts, confirmed.
    let stats = w.statistics();
    let counts: Vec<_> = stats
        .iter()
        .map(|r| {
            let row = (r.total_file_transfers, r.upload_count);
            (
                r.recipient.clone(),
                row,
                r.total_transfer_download_attempts,
                r.transfers_with_download_confirmed,
            )
        })
        .collect();
    assert_eq!(
        counts,
        [(format!("0192:{R2}"), (2, 2), 1, 1), (format!("0192:{R1}"), (1, 1), 1, 1)]
    );

    w.advance(Duration::from_secs(3600));
    w.run_due().await;
    assert_eq!(
        w.status(b).status(),
        FileTransferStatus::AllConfirmedDownloaded,
        "purged before the grace period ended"
    );
    w.advance(Duration::from_secs(3601));
    w.run_due().await;
    assert_eq!(w.status(b).status(), FileTransferStatus::Purged);
    assert_eq!(w.event_types(b).last(), Some(&(EventType::FilePurged, EventRole::Sender)));
    assert_eq!(w.status(a).status(), FileTransferStatus::Published, "A expires later");

    // 30 days on: A expires; the unconfirmed recipient and the sender hear of it.
    w.advance(Duration::from_secs(30 * 86_400));
    w.run_due().await;
    let expired = w.status(a);
    assert_eq!(expired.status(), FileTransferStatus::Purged);
    let tail: Vec<_> = w.event_types(a).into_iter().rev().take(3).collect();
    assert_eq!(
        tail,
        [
            (EventType::FileNeverConfirmedDownloaded, EventRole::Sender),
            (EventType::FileNeverConfirmedDownloaded, EventRole::Recipient),
            (EventType::FilePurged, EventRole::Sender),
        ]
    );
    // B's expiry came due too and was a no-op; nothing is left on disk.
    assert_eq!(w.event_types(b).iter().filter(|(k, _)| *k == EventType::FilePurged).count(), 1);
    assert!(w.app.storage.blobs().unwrap().is_empty(), "storage did not return to its baseline");
    assert_eq!(w.statistics(), stats, "purging changed the statistics of the month");
    assert_eq!(w.run_due().await, 0);
    w.app.close(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stuck_uploads_and_stalled_scans_fail_on_an_injected_clock() {
    let mut clamd = TestClamd::start();
    let w = Clocked::new(&clamd).await;
    // C: an upload that stops half-way.
    let c = w.transfer(&[R1]).await;
    let mut session = w.app.begin_upload(&w.sender, c, Some(0), None).await.unwrap();
    session.write(Bytes::from(payload(3, 10_000))).await.unwrap();
    session.checkpoint().await.unwrap();
    drop(session);
    w.advance(Duration::from_secs(23 * 3600));
    w.run_due().await;
    assert_eq!(
        w.status(c).status(),
        FileTransferStatus::UploadStarted,
        "failed before a day without activity"
    );
    w.advance(Duration::from_secs(2 * 3600));
    w.run_due().await;
    let stuck = w.status(c);
    assert_eq!(stuck.status(), FileTransferStatus::Failed);
    assert_eq!(stuck.status_text(), server::app::lifecycle::STUCK_TEXT);
    assert_eq!(w.event_types(c).last(), Some(&(EventType::UploadFailed, EventRole::Sender)));
    assert!(w.app.storage.uploads().unwrap().is_empty(), "the stuck upload's temporary was kept");

    // D: the scanner is down and never comes back within the scan timeout.
    clamd.stop();
    let d = w.transfer(&[R1]).await;
    w.upload(d, 4).await;
    assert_eq!(w.status(d).status(), FileTransferStatus::UploadProcessing);
    w.advance(Duration::from_secs(2 * 3600 + 1));
    w.run_due().await;
    let timed_out = w.status(d);
    assert_eq!(timed_out.status(), FileTransferStatus::Failed);
    assert!(
        timed_out.status_text().contains("did not complete within 120 minutes"),
        "{}",
        timed_out.status_text()
    );
    assert!(w.app.storage.blobs().unwrap().is_empty());
    w.app.close(Duration::from_secs(5)).await;
    let _ = json!(null);
}

#[tokio::test(flavor = "multi_thread")]
async fn recent_failures_show_each_caller_its_own_and_its_resources_only() {
    let clamd = TestClamd::start();
    let w = &Clocked::new(&clamd).await;
    let with = |org: &str, scopes: &[&str]| Caller {
        org: Some(Party::parse_lenient(org).unwrap()),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
    };
    let infected = |id: FileTransferId| async move {
        let mut session = w.app.begin_upload(&w.sender, id, Some(0), None).await.unwrap();
        session.write(Bytes::from(integration_tests::eicar())).await.unwrap();
        session.checkpoint().await.unwrap();
        session.finish().await.unwrap();
        w.wait_status(id, FileTransferStatus::Failed).await;
    };
    // EICAR on the owner's resource, a clean transfer beside it.
    let on_res = w.transfer(&[R1]).await;
    infected(on_res).await;
    let clean = w.transfer(&[R1]).await;
    w.upload(clean, 5).await;
    w.wait_status(clean, FileTransferStatus::Published).await;
    // EICAR on another owner's resource, by the same sender.
    const OTHER_OWNER: &str = "910000009";
    let other_owner = with(OTHER_OWNER, ALL);
    w.app.register_service_owner(&other_owner, "Other".into()).await.unwrap();
    let access = AccessRules {
        senders: vec![Party::parse_lenient(SENDER).unwrap()],
        recipients: vec![Party::parse_lenient(R2).unwrap()],
    };
    let update = ResourceUpdate { access: Some(access), ..Default::default() };
    w.app.put_resource(&other_owner, "other", update).await.unwrap();
    let request = InitializeRequest {
        file_name: "other.txt".into(),
        resource_id: "other".into(),
        senders_file_transfer_reference: "r".into(),
        sender: format!("0192:{SENDER}"),
        recipients: vec![format!("0192:{R2}")],
        ..Default::default()
    };
    let on_other = w.app.initialize(&w.sender, request).await.unwrap();
    infected(on_other).await;

    let failures = |caller: &Caller, limit: usize| w.app.recent_failures(caller, limit);
    // The sender: both, newest first, with the files' names.
    let sent = failures(&with(SENDER, &["altinn:broker.write"]), 10).unwrap();
    let ids: Vec<_> = sent.iter().map(|f| f.transfer).collect();
    assert_eq!(ids, [on_other, on_res]);
    assert_eq!(sent[0].file_name.as_deref(), Some("other.txt"));
    assert!(sent[1].reason.contains("Eicar"), "{}", sent[1].reason);
    assert_eq!(failures(&with(SENDER, ALL), 1).unwrap().len(), 1, "bounded by the limit");
    // Each service owner: the failure on its own resource, without the file's name.
    let owned = failures(&with(OWNER, &["altinn:serviceowner"]), 10).unwrap();
    assert_eq!(owned.iter().map(|f| f.transfer).collect::<Vec<_>>(), [on_res]);
    assert_eq!(owned[0].sender, Party::parse_lenient(SENDER).unwrap());
    assert_eq!(owned[0].file_name, None);
    assert!(owned[0].reason.contains("Eicar"), "{}", owned[0].reason);
    let theirs = failures(&with(OTHER_OWNER, &["altinn:serviceowner"]), 10).unwrap();
    assert_eq!(theirs.iter().map(|f| f.transfer).collect::<Vec<_>>(), [on_other]);
    // A service owner of nothing, and a recipient: nothing of anyone's.
    assert!(failures(&with("910000010", &["altinn:serviceowner"]), 10).unwrap().is_empty());
    assert!(failures(&with(R1, ALL), 10).unwrap().is_empty(), "R1 sent nothing, owns nothing");
    let denied = failures(&with(R1, &["altinn:broker.read"]), 10).unwrap_err();
    assert_eq!(denied.http_status, 403);
    w.app.close(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_watch_replays_then_follows_with_heartbeats() {
    use client::v1::watch_response::Message;
    let clamd = TestClamd::start();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path(), &clamd.address(), 0, |_| {}).await;
    let c = |org: &str| server.client(server.token(org, ALL));
    integration_tests::owner_with_resource(&c(OWNER), "res", &[SENDER], &[R1]).await;
    let sender = c(SENDER);
    let init = || {
        sender.initialize(client::v1::InitializeFileTransferRequest {
            file_name: "w.bin".into(),
            resource_id: "res".into(),
            senders_file_transfer_reference: "r".into(),
            sender: format!("0192:{SENDER}"),
            recipients: vec![format!("0192:{R1}")],
            ..Default::default()
        })
    };
    let first = init().await.unwrap();
    let request = client::v1::WatchRequest {
        after: "0".into(),
        resource_id: "res".into(),
        types: vec![],
        heartbeat_seconds: 1,
    };
    let mut stream = c(SENDER).watch(request).await.unwrap();
    // Replay: the first transfer's initialized event.
    let Some(Message::Event(e)) = stream.message().await.unwrap().unwrap().message else {
        panic!("expected an event")
    };
    assert_eq!(
        (e.r#type.as_str(), e.resourceinstance.as_str()),
        ("no.altinn.broker.filetransferinitialized", first.as_str())
    );
    // Caught up: a heartbeat with the cursor.
    let Some(Message::Heartbeat(beat)) = stream.message().await.unwrap().unwrap().message else {
        panic!("expected a heartbeat")
    };
    assert_eq!(beat.cursor, format!("seq:{}", e.sequence));
    // Live: a new transfer arrives as it commits.
    let second = init().await.unwrap();
    let live = loop {
        if let Some(Message::Event(e)) = stream.message().await.unwrap().unwrap().message {
            break e;
        }
    };
    assert_eq!(live.resourceinstance, second);
    // A recipient's watch shows none of the sender's events; an unknown cursor is refused.
    let request =
        client::v1::WatchRequest { after: "0".into(), heartbeat_seconds: 1, ..Default::default() };
    let mut theirs = c(R1).watch(request).await.unwrap();
    let Some(Message::Heartbeat(_)) = theirs.message().await.unwrap().unwrap().message else {
        panic!("R1 saw an event")
    };
    let bad = client::v1::WatchRequest {
        after: "00000000-0000-4000-8000-000000000000".into(),
        ..Default::default()
    };
    assert_eq!(c(R1).watch(bad).await.unwrap_err().code(), tonic::Code::InvalidArgument);
    // A heartbeat outside its documented 1–300 s is refused, not silently changed.
    let slow = client::v1::WatchRequest { heartbeat_seconds: 1000, ..Default::default() };
    let status = c(R1).watch(slow).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("1–300"), "{status:?}");
    // `send --wait`'s helper: settles on the published event.
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), payload(71, 20_000)).unwrap();
    c(SENDER).upload_file(&second, file.path(), &mut |_| {}).await.unwrap();
    let settled =
        tokio::time::timeout(Duration::from_secs(30), c(SENDER).wait_settled(&second, "res"))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(settled, "no.altinn.broker.published");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_watcher_is_closed_with_its_cursor_and_resumes_without_loss() {
    use client::v1::watch_response::Message;
    const WORKERS: usize = 16;
    const N: usize = WORKERS * 190;
    let clamd = TestClamd::start();
    let dir = tempfile::tempdir().unwrap();
    let server =
        TestServer::start_in(dir.path(), &clamd.address(), 0, |c| c.limits.watch_stall_secs = 1)
            .await;
    let c = |org: &str| server.client(server.token(org, ALL));
    integration_tests::owner_with_resource(&c(OWNER), "res", &[SENDER], &[]).await;
    // More events than the queue and both HTTP/2 buffers hold: one per initialized transfer.
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..WORKERS {
        let sender = c(SENDER);
        workers.spawn(async move {
            for _ in 0..N / WORKERS {
                integration_tests::initialize_transfer(&sender, "res", SENDER, &[OWNER])
                    .await
                    .unwrap();
            }
        });
    }
    workers.join_all().await;

    // A reader with a small HTTP/2 window that stops reading.
    let channel = tonic::transport::Endpoint::from_shared(server.url())
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap();
    let mut events = proto::v1::event_service_client::EventServiceClient::new(channel);
    let token = server.token(SENDER, ALL);
    let watch = |after: String| {
        let mut request = tonic::Request::new(client::v1::WatchRequest {
            after,
            resource_id: "res".into(),
            types: vec![],
            heartbeat_seconds: 60,
        });
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        request
    };
    let mut stream = events.watch(watch("0".into())).await.unwrap().into_inner();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut seqs = Vec::new();
    let status = loop {
        match stream.message().await {
            Ok(Some(m)) => {
                if let Some(Message::Event(e)) = m.message {
                    seqs.push(e.sequence);
                }
            }
            Ok(None) => panic!("the stream ended without a status after {} events", seqs.len()),
            Err(status) => break status,
        }
    };
    // Closed with where to resume: the last event it received, every earlier one delivered.
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(seqs.len() < N, "never stalled: all {N} events fit in the buffers");
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    let last = *seqs.last().unwrap();
    assert!(status.message().contains(&format!("after=seq:{last}")), "{}", status.message());

    // Resuming from that cursor brings the rest, none twice, none missing.
    let mut stream = events.watch(watch(format!("seq:{last}"))).await.unwrap().into_inner();
    while seqs.len() < N {
        let m = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("the resumed watch went quiet")
            .unwrap()
            .unwrap();
        if let Some(Message::Event(e)) = m.message {
            seqs.push(e.sequence);
        }
    }
    assert_eq!(seqs, (1..=N as u64).collect::<Vec<_>>());
}
