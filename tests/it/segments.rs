//! Files longer than clamd's stream limit, scanned as overlapping segments: against a real
//! clamd whose `StreamMaxLength` is 8 MiB (so a "large" file is tens of MiB), in memory through
//! the scanner and end to end through the server.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use client::Client;
use client::v1 as pb;
use integration_tests::{ClamdLimits, TestClamd, TestServer, eicar, owner_with_resource};
use scanner::{SegmentPlan, Verdict};

const MIB: u64 = 1 << 20;
/// clamd's stream limit in these tests, and Ferry's segment length.
const LIMIT: u64 = 8 * MIB;

const OWNER: &str = "991825827";
const SENDER: &str = "910753614";
const RECIPIENT: &str = "986252932";
const ALL: &[&str] = &["altinn:broker.write", "altinn:broker.read", "altinn:serviceowner"];

/// A clamd that takes streams and files of at most 8 MiB.
fn small_clamd() -> TestClamd {
    TestClamd::start_with(ClamdLimits {
        stream_max: "8M",
        max_file: "8M",
        max_scan: "8M",
        ..Default::default()
    })
}

/// `len` pseudo-random bytes from `seed`, with EICAR written at each offset in `eicar_at`;
/// byte `i` depends only on `seed` and `i`, so any range can be made on its own.
#[derive(Debug, Clone)]
struct Content {
    seed: u64,
    len: u64,
    eicar_at: Vec<u64>,
    /// For multi-GiB files: one random MiB repeated, each copy stamped with its number (fast
    /// to make in a debug build; no two MiB are alike).
    block: Option<Arc<Vec<u8>>>,
}

impl Content {
    fn new(seed: u64, len: u64) -> Self {
        Self { seed, len, eicar_at: Vec::new(), block: None }
    }

    fn large(seed: u64, len: u64) -> Self {
        let block = integration_tests::payload(seed, MIB as usize);
        Self { block: Some(Arc::new(block)), ..Self::new(seed, len) }
    }

    fn with_eicar_at(mut self, at: u64) -> Self {
        self.eicar_at.push(at);
        self
    }

    /// Bytes `start..start + n` (cut at the end).
    fn range(&self, start: u64, n: u64) -> Vec<u8> {
        let end = (start + n).min(self.len);
        let mut out = vec![0u8; (end - start) as usize];
        match &self.block {
            None => {
                let mut xof = blake3::Hasher::new().update(&self.seed.to_le_bytes()).finalize_xof();
                xof.set_position(start);
                xof.fill(&mut out);
            }
            Some(block) => {
                let (mut pos, mut i) = (start, 0);
                while pos < end {
                    let (n, within) = (pos / MIB, (pos % MIB) as usize);
                    let take = (MIB - within as u64).min(end - pos) as usize;
                    out[i..i + take].copy_from_slice(&block[within..within + take]);
                    for k in within..(within + take).min(8) {
                        out[i + k - within] = n.to_le_bytes()[k];
                    }
                    pos += take as u64;
                    i += take;
                }
            }
        }
        let eicar = eicar();
        for &at in &self.eicar_at {
            for (k, b) in eicar.iter().enumerate() {
                let pos = at + k as u64;
                if (start..end).contains(&pos) {
                    out[(pos - start) as usize] = *b;
                }
            }
        }
        out
    }

    fn bytes(&self) -> Bytes {
        Bytes::from(self.range(0, self.len))
    }

    fn blake3(&self) -> String {
        let mut hasher = blake3::Hasher::new();
        let mut at = 0;
        while at < self.len {
            let piece = self.range(at, 8 * MIB);
            hasher.update(&piece);
            at += piece.len() as u64;
        }
        hasher.finalize().to_hex().to_string()
    }
}

// ---- the scanner on its own ----

#[tokio::test]
async fn eicar_past_the_stream_limit_is_found() {
    let clamd = small_clamd();
    let client = clamd.client_with(|o| o.max_stream_len = LIMIT);
    // A single stream of this file is refused by clamd; its segments are not.
    let file = Content::new(1, 20 * MIB).with_eicar_at(19 * MIB + 4321);
    let plan = client.segment_plan().unwrap();
    assert_eq!(plan.count(file.len), 3);
    let mut seen = Vec::new();
    let outcome = client.scan_file(&file.bytes(), &BTreeSet::new(), |s| seen.push(s.index)).await;
    match &outcome.verdict {
        Verdict::Infected { signature } => assert!(signature.starts_with("Eicar-Test-Signature")),
        other => panic!("EICAR past the limit not found: {other:?}"),
    }
    assert!(seen.contains(&2), "segment 2 holds EICAR: {seen:?}");
}

#[tokio::test]
async fn a_clean_file_of_several_segments_is_clean_segment_by_segment() {
    let clamd = small_clamd();
    let client = clamd.client_with(|o| o.max_stream_len = LIMIT);
    let file = Content::new(2, 30 * MIB + 17);
    let mut seen = Vec::new();
    let outcome = client.scan_file(&file.bytes(), &BTreeSet::new(), |s| seen.push(s.clone())).await;
    assert_eq!(outcome.verdict, Verdict::Clean);
    assert_eq!(outcome.segments, Some(5));
    assert_eq!(outcome.clean, (0..5).collect());
    seen.sort_by_key(|s| s.index);
    assert_eq!(seen.iter().map(|s| s.index).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
    assert!(seen.iter().all(|s| s.verdict == Verdict::Clean));
}

#[tokio::test]
async fn eicar_across_a_segment_boundary_is_found_only_thanks_to_the_overlap() {
    let clamd = small_clamd();
    let client = clamd.client_with(|o| o.max_stream_len = LIMIT);
    let plan = client.segment_plan().unwrap();
    let len = 20 * MIB;
    // EICAR's 68 bytes cross the end of segment 0: 34 bytes on either side.
    let end0 = plan.range(0, len).unwrap().end;
    let at = end0 - 34;
    assert_eq!(plan.holding(at..at + 68, len), [1], "only segment 1 holds it whole");
    let file = Content::new(3, len).with_eicar_at(at).bytes();

    let outcome = client.scan_segments(&file, plan, &BTreeSet::new(), |_| {}).await;
    assert!(matches!(outcome.verdict, Verdict::Infected { .. }), "{outcome:?}");

    // The same cut without the overlap: each segment holds half of EICAR, and clamd finds
    // nothing. The overlap is what finds it.
    let bare = SegmentPlan::with_overlap(LIMIT, 0).unwrap();
    assert!(bare.holding(at..at + 68, len).is_empty());
    let outcome = client.scan_segments(&file, bare, &BTreeSet::new(), |_| {}).await;
    assert_eq!(outcome.verdict, Verdict::Clean, "{outcome:?}");
}

#[tokio::test]
async fn segments_found_clean_before_are_not_scanned_again() {
    let clamd = small_clamd();
    let client = clamd.client_with(|o| o.max_stream_len = LIMIT);
    // EICAR sits in segment 0 only; a scan told that segment 0 is clean does not look at it.
    let file = Content::new(4, 20 * MIB).with_eicar_at(MIB).bytes();
    let mut seen = Vec::new();
    let outcome = client.scan_file(&file, &BTreeSet::from([0]), |s| seen.push(s.index)).await;
    assert_eq!(outcome.verdict, Verdict::Clean);
    seen.sort();
    assert_eq!(seen, [1, 2]);
    assert_eq!(outcome.clean, BTreeSet::from([0, 1, 2]));
}

#[tokio::test]
async fn clamds_thread_pool_bounds_the_parallel_segments() {
    let clamd = small_clamd();
    // The project's clamd configuration has MaxThreads 4.
    assert_eq!(clamd.client().max_threads().await.unwrap(), 4);
}

// ---- through the server ----

struct World {
    server: TestServer,
    sender: Client,
    recipient: Client,
    _dir: tempfile::TempDir,
}

impl World {
    async fn new(clamd: &scanner::ClamdAddress) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let server = TestServer::start_in(dir.path(), clamd, 0, |c| {
            c.clamd.max_stream_bytes = LIMIT;
        })
        .await;
        let owner = server.client(server.token(OWNER, ALL));
        owner_with_resource(&owner, "res", &[SENDER], &[RECIPIENT]).await;
        let sender = server.client(server.token(SENDER, ALL));
        let recipient = server.client(server.token(RECIPIENT, ALL));
        Self { server, sender, recipient, _dir: dir }
    }

    async fn initialize(&self) -> String {
        integration_tests::initialize_transfer(&self.sender, "res", SENDER, &[RECIPIENT])
            .await
            .unwrap()
    }

    /// Uploads `content` in 1 MiB chunks; `at_offset` runs (and is awaited) once the upload has
    /// sent that many bytes.
    async fn upload(
        &self,
        id: &str,
        content: &Content,
        at_offset: Option<(u64, Hook)>,
    ) -> pb::UploadResult {
        let content = content.clone();
        let total = content.len;
        let mut sent = 0u64;
        let mut hook = at_offset;
        let next = move || {
            let due = match &hook {
                Some((at, _)) if sent >= *at => hook.take().map(|(_, f)| f()),
                _ => None,
            };
            let chunk = (sent < content.len).then(|| Bytes::from(content.range(sent, MIB)));
            sent += chunk.as_ref().map_or(0, |c| c.len() as u64);
            async move {
                if let Some(due) = due {
                    due.await;
                }
                Ok(chunk)
            }
        };
        self.sender.upload_once(id, 0, Some(total), next, &mut |_| {}).await.unwrap()
    }

    /// Waits until the transfer is Published or Failed.
    async fn settled(&self, id: &str) -> pb::FileTransferOverview {
        self.settled_within(id, Duration::from_secs(120)).await
    }

    async fn settled_within(&self, id: &str, limit: Duration) -> pb::FileTransferOverview {
        let deadline = Instant::now() + limit;
        loop {
            let overview = self.sender.overview(id).await.unwrap();
            let status = overview.file_transfer_status;
            if status == pb::FileTransferStatus::Published as i32
                || status == pb::FileTransferStatus::Failed as i32
            {
                return overview;
            }
            assert!(Instant::now() < deadline, "{id} stuck in {overview:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `ferry_scan_segments_total`: INSTREAM sessions run to a verdict.
    async fn segments_scanned(&self) -> u64 {
        segments_scanned(&self.server.url()).await
    }

    /// Downloads the transfer and checks it is `content`, byte for byte.
    async fn assert_downloads(&self, id: &str, content: &Content) {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        self.recipient.download_file(id, &out).await.unwrap();
        assert_eq!(std::fs::metadata(&out).unwrap().len(), content.len);
        let mut hasher = blake3::Hasher::new();
        hasher.update_reader(std::fs::File::open(&out).unwrap()).unwrap();
        assert_eq!(hasher.finalize().to_hex().to_string(), content.blake3());
    }
}

/// Something to do in the middle of an upload.
type Hook = Box<dyn FnOnce() -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// `ferry_scan_segments_total` of the server at `url`: INSTREAM sessions run to a verdict since
/// it started.
async fn segments_scanned(url: &str) -> u64 {
    let text = reqwest::get(format!("{url}/metrics")).await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("ferry_scan_segments_total "))
        .expect("the metric is exported")
        .parse()
        .unwrap()
}

/// Waits until transfer `id`'s status text says it waits for the scanner.
async fn waiting_for_the_scanner(sender: &Client, id: &str) -> pb::FileTransferOverview {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let overview = sender.overview(id).await.unwrap();
        if overview.file_transfer_status_text.contains("Waiting for the malware scanner") {
            assert_eq!(
                overview.file_transfer_status,
                pb::FileTransferStatus::UploadProcessing as i32
            );
            return overview;
        }
        assert!(Instant::now() < deadline, "{id} does not wait for clamd: {overview:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn assert_failed_with_eicar(overview: &pb::FileTransferOverview) {
    assert_eq!(overview.file_transfer_status, pb::FileTransferStatus::Failed as i32);
    assert!(
        overview.file_transfer_status_text.contains("Eicar-Test-Signature"),
        "{}",
        overview.file_transfer_status_text
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transfer_with_eicar_past_the_limit_fails_with_the_signature() {
    let clamd = small_clamd();
    let w = World::new(&clamd.address()).await;
    let id = w.initialize().await;
    let content = Content::new(11, 20 * MIB).with_eicar_at(19 * MIB + 99);
    w.upload(&id, &content, None).await;
    assert_failed_with_eicar(&w.settled(&id).await);
    assert_eq!(w.server.files_in("blobs"), 0, "the infected file is still stored");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transfer_with_eicar_across_a_segment_boundary_fails() {
    let clamd = small_clamd();
    let w = World::new(&clamd.address()).await;
    let id = w.initialize().await;
    let plan = SegmentPlan::new(LIMIT).unwrap();
    let len = 20 * MIB;
    let end1 = plan.range(1, len).unwrap().end;
    // Across the end of segment 1: only segment 2 holds it whole.
    assert_eq!(plan.holding(end1 - 30..end1 + 38, len), [2]);
    let content = Content::new(12, len).with_eicar_at(end1 - 30);
    w.upload(&id, &content, None).await;
    assert_failed_with_eicar(&w.settled(&id).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_clean_multi_segment_transfer_is_published_and_downloads_identically() {
    let clamd = small_clamd();
    let w = World::new(&clamd.address()).await;
    let id = w.initialize().await;
    let content = Content::new(13, 30 * MIB + 5);
    let result = w.upload(&id, &content, None).await;
    assert_eq!(result.blake3, content.blake3());
    let overview = w.settled(&id).await;
    assert_eq!(
        overview.file_transfer_status,
        pb::FileTransferStatus::Published as i32,
        "{}",
        overview.file_transfer_status_text
    );
    // Five segments, each scanned once, while the file arrived.
    assert_eq!(w.segments_scanned().await, 5);
    w.assert_downloads(&id, &content).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn clamd_stopped_mid_scan_is_waited_for_and_the_scan_resumes() {
    let clamd = Arc::new(Mutex::new(small_clamd()));
    let address = clamd.lock().unwrap().address();
    let w = World::new(&address).await;
    let id = w.initialize().await;
    let content = Content::new(14, 40 * MIB);
    // clamd goes away when the upload is at 20 MiB: segments 0 and 1 may be done, later ones
    // cannot be.
    let stopper = clamd.clone();
    let stop: Hook = Box::new(move || {
        stopper.lock().unwrap().stop();
        Box::pin(async {})
    });
    w.upload(&id, &content, Some((20 * MIB, stop))).await;
    waiting_for_the_scanner(&w.sender, &id).await;
    clamd.lock().unwrap().restart();
    let overview = w.settled(&id).await;
    assert_eq!(
        overview.file_transfer_status,
        pb::FileTransferStatus::Published as i32,
        "{}",
        overview.file_transfer_status_text
    );
    w.assert_downloads(&id, &content).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scanned_transfer_may_be_50_gb_and_larger_only_on_an_approved_resource_unscanned() {
    let clamd = TestClamd::start();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path(), &clamd.address(), 0, |c| {
        c.clamd.unscanned_resources = vec!["approved".into()];
    })
    .await;
    let owner = server.client(server.token(OWNER, ALL));
    owner.register_service_owner("Owner").await.unwrap();
    let put = |resource: &str, size: i64| {
        owner.put_resource(pb::PutResourceRequest {
            resource_id: resource.into(),
            max_file_transfer_size: Some(size),
            access: Some(pb::AccessRules {
                senders: vec![format!("0192:{SENDER}")],
                recipients: vec![format!("0192:{RECIPIENT}")],
            }),
            ..Default::default()
        })
    };
    put("res", 10_000_000_000).await.unwrap();
    put("res", 50_000_000_000).await.unwrap();
    let refused = put("res", 50_000_000_001).await.unwrap_err();
    assert_eq!(server::api::grpc::altinn_code_of(&refused).as_deref(), Some("BRO-00013"));
    assert!(refused.message().contains("50GB"), "{}", refused.message());
    // The operator approved "approved" for unscanned transfers: it may allow more, but a
    // transfer on it that is scanned is still held to 50 GB.
    put("approved", 60_000_000_000).await.unwrap();
    let sender = server.client(server.token(SENDER, ALL));
    let id = integration_tests::initialize_transfer(&sender, "approved", SENDER, &[RECIPIENT])
        .await
        .unwrap();
    let next = || async { Ok(None) };
    let refused =
        sender.upload_once(&id, 0, Some(60_000_000_000), next, &mut |_| {}).await.unwrap_err();
    assert_eq!(server::api::grpc::altinn_code_of(&refused).as_deref(), Some("BRO-00016"));
    assert!(refused.message().contains("50000000000"), "{}", refused.message());
}

/// The real thing: a clean 2.3 GiB file against clamd's own 2 GiB − 3 ceiling (the project's
/// clamd configuration, `StreamMaxLength 4000M`), Published and downloaded byte for byte. Two
/// segments of 2 GiB − 3. Several minutes in a debug build: runs only with FERRY_LARGE_TESTS=1 (CI sets it).
#[tokio::test(flavor = "multi_thread")]
async fn beyond_2gib_a_clean_file_is_published_and_downloads_identically() {
    if !integration_tests::large_tests_wanted("upload, scan and download 2.3 GiB") {
        return;
    }
    let clamd = TestClamd::start_with(ClamdLimits::project());
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path(), &clamd.address(), 0, |c| {
        c.lifecycle.scan_timeout_secs = 3600;
    })
    .await;
    let owner = server.client(server.token(OWNER, ALL));
    owner_with_resource(&owner, "res", &[SENDER], &[RECIPIENT]).await;
    let sender = server.client(server.token(SENDER, ALL));
    let recipient = server.client(server.token(RECIPIENT, ALL));
    let w = World { server, sender, recipient, _dir: dir };
    let id = w.initialize().await;
    let content = Content::large(21, 2_469_606_195); // 2.3 GiB
    let plan = SegmentPlan::new(scanner::CLAMD_MAX_STREAM).unwrap();
    assert_eq!(plan.count(content.len), 2);
    let started = Instant::now();
    let result = w.upload(&id, &content, None).await;
    let uploaded = started.elapsed();
    assert_eq!(result.size, content.len);
    let overview = w.settled_within(&id, Duration::from_secs(1800)).await;
    eprintln!(
        "2.3 GiB: uploaded in {uploaded:?}, Published {:?} after the last byte",
        started.elapsed() - uploaded
    );
    assert_eq!(
        overview.file_transfer_status,
        pb::FileTransferStatus::Published as i32,
        "{}",
        overview.file_transfer_status_text
    );
    assert_eq!(w.segments_scanned().await, 2);
    assert_eq!(result.blake3, content.blake3());
    w.assert_downloads(&id, &content).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_mid_scan_resumes_at_the_first_segment_not_yet_clean() {
    let clamd = Arc::new(Mutex::new(small_clamd()));
    let address = clamd.lock().unwrap().address();
    let w = World::new(&address).await;
    let id = w.initialize().await;
    let content = Content::new(15, 40 * MIB);
    let plan = SegmentPlan::new(LIMIT).unwrap();
    assert_eq!(plan.count(content.len), 6);
    // At 20 MiB into the upload, once two segments are clean, clamd goes away: the other
    // segments cannot be scanned, and the transfer waits for clamd.
    let (url, stopper) = (w.server.url(), clamd.clone());
    let stop: Hook = Box::new(move || {
        Box::pin(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while segments_scanned(&url).await < 2 {
                assert!(Instant::now() < deadline, "segments 0 and 1 were never scanned");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            stopper.lock().unwrap().stop();
        })
    });
    w.upload(&id, &content, Some((20 * MIB, stop))).await;
    waiting_for_the_scanner(&w.sender, &id).await;

    // The server stops while its scan waits; the segments found clean are in the index.
    let World { mut server, sender, recipient, _dir } = w;
    let (port, data_dir) = (server.addr.port(), server.data_dir.clone());
    server.stop().await;
    let recorded = {
        let storage =
            integration_tests::open_storage(storage::StorageOptions::new(&data_dir)).await;
        let progress = storage.scan_progress(id.parse().unwrap()).unwrap();
        progress.expect("the clean segments are recorded").clean
    };
    assert!(recorded.is_superset(&BTreeSet::from([0, 1])), "{recorded:?}");
    assert!(recorded.len() < 6, "{recorded:?}");

    // clamd and the server come back: the scan resumes with the segments not recorded clean,
    // and only those are scanned.
    clamd.lock().unwrap().restart();
    let server = TestServer::start_in(&data_dir, &address, port, |c| {
        c.clamd.max_stream_bytes = LIMIT;
    })
    .await;
    let w = World { server, sender, recipient, _dir };
    let overview = w.settled(&id).await;
    assert_eq!(
        overview.file_transfer_status,
        pb::FileTransferStatus::Published as i32,
        "{}",
        overview.file_transfer_status_text
    );
    assert_eq!(w.segments_scanned().await, 6 - recorded.len() as u64);
    w.assert_downloads(&id, &content).await;
    // Published: the progress record is gone with the scan.
    let World { mut server, .. } = w;
    server.stop().await;
    let storage = integration_tests::open_storage(storage::StorageOptions::new(&data_dir)).await;
    assert_eq!(storage.scan_progress(id.parse().unwrap()).unwrap(), None);
}

/// The file `ferry-test-large.hsb` in the project's signature database names by its SHA-256:
/// 20 MiB + 7 bytes, the SHA-256 of `ferry-large-hsb` and a counter, block after block.
fn hash_signature_file() -> Vec<u8> {
    use sha2::Digest as _;
    let len = 20 * MIB as usize + 7;
    let mut out = Vec::with_capacity(len + 32);
    for k in 0u64.. {
        if out.len() >= len {
            break;
        }
        let mut h = sha2::Sha256::new();
        h.update(b"ferry-large-hsb");
        h.update(k.to_le_bytes());
        out.extend_from_slice(&h.finalize());
    }
    out.truncate(len);
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_whole_file_hash_signature_matches_a_file_no_segment_can() {
    let clamd = small_clamd();
    let data = hash_signature_file();
    // clamd sees three segments of it; none is the file, so clamd finds nothing.
    let client = clamd.client_with(|o| o.max_stream_len = LIMIT);
    let outcome = client.scan_file(&Bytes::from(data.clone()), &BTreeSet::new(), |_| {}).await;
    assert_eq!(outcome.verdict, Verdict::Clean);
    assert_eq!(outcome.segments, Some(3));

    // Ferry checks the whole file's hash against the database clamd loaded.
    let w = World::new(&clamd.address()).await;
    let id = w.initialize().await;
    let sender = w.sender.clone();
    let chunks: Vec<Bytes> = data.chunks(MIB as usize).map(Bytes::copy_from_slice).collect();
    let mut chunks = chunks.into_iter();
    let next = move || {
        let chunk = chunks.next();
        async move { Ok(chunk) }
    };
    sender.upload_once(&id, 0, Some(data.len() as u64), next, &mut |_| {}).await.unwrap();
    let overview = w.settled(&id).await;
    assert_eq!(overview.file_transfer_status, pb::FileTransferStatus::Failed as i32);
    assert!(
        overview.file_transfer_status_text.contains("Ferry-Test-Large-File-HSB.UNOFFICIAL"),
        "{}",
        overview.file_transfer_status_text
    );
    // One byte more is another file: published.
    let id = w.initialize().await;
    let mut longer = data.clone();
    longer.push(0);
    let content = longer.clone();
    let chunks: Vec<Bytes> = content.chunks(MIB as usize).map(Bytes::copy_from_slice).collect();
    let mut chunks = chunks.into_iter();
    let next = move || {
        let chunk = chunks.next();
        async move { Ok(chunk) }
    };
    w.sender.upload_once(&id, 0, Some(longer.len() as u64), next, &mut |_| {}).await.unwrap();
    let overview = w.settled(&id).await;
    assert_eq!(
        overview.file_transfer_status,
        pb::FileTransferStatus::Published as i32,
        "{}",
        overview.file_transfer_status_text
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_signature_directory_a_large_file_is_not_published() {
    let clamd = small_clamd();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path(), &clamd.address(), 0, |c| {
        c.clamd.max_stream_bytes = LIMIT;
        c.clamd.database_dir = None;
    })
    .await;
    let owner = server.client(server.token(OWNER, ALL));
    owner_with_resource(&owner, "res", &[SENDER], &[RECIPIENT]).await;
    let sender = server.client(server.token(SENDER, ALL));
    let recipient = server.client(server.token(RECIPIENT, ALL));
    let w = World { server, sender, recipient, _dir: dir };
    // Within one stream clamd checks the hashes itself: published.
    let small = w.initialize().await;
    w.upload(&small, &Content::new(16, LIMIT), None).await;
    let overview = w.settled(&small).await;
    assert_eq!(overview.file_transfer_status, pb::FileTransferStatus::Published as i32);
    // Longer: its hash signatures cannot be checked, so it is never clean.
    let large = w.initialize().await;
    w.upload(&large, &Content::new(16, LIMIT + 1), None).await;
    let overview = w.settled(&large).await;
    assert_eq!(overview.file_transfer_status, pb::FileTransferStatus::Failed as i32);
    assert!(
        overview.file_transfer_status_text.contains("database_dir"),
        "{}",
        overview.file_transfer_status_text
    );
}

/// `ferry serve` in its own process, with 8 MiB segments; killed with SIGKILL when dropped.
struct FerryProcess {
    child: std::process::Child,
    url: String,
}

impl FerryProcess {
    fn start(data_dir: &std::path::Path, clamd: &scanner::ClamdAddress) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let db = integration_tests::repo_root().join("scanner/clamd/db");
        let config = data_dir.with_extension("toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{port}\"\ndata_dir = {data_dir:?}\ndev = true\n\n[clamd]\n\
                 address = \"{clamd}\"\nmax_stream_bytes = {LIMIT}\nretry_max_secs = 1\n\
                 database_dir = {db:?}\n"
            ),
        )
        .unwrap();
        let child = std::process::Command::new(crate::cli::ferry())
            .args(["serve", "--config"])
            .arg(&config)
            .envs(integration_tests::pg::metadata_env(data_dir))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "ferry serve did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, url: format!("http://127.0.0.1:{port}") }
    }

    fn kill(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

impl Drop for FerryProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_killed_mid_scan_resumes_at_the_first_segment_not_yet_clean() {
    integration_tests::install_tls_provider();
    let clamd = Arc::new(Mutex::new(small_clamd()));
    let address = clamd.lock().unwrap().address();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let key = server::auth::DevKey::load_or_create(&data_dir).unwrap();
    let token = |org: &str| {
        let party = storage::model::Party::parse_lenient(org).unwrap();
        key.mint(&party, ALL, 3600)
    };
    let mut ferry = FerryProcess::start(&data_dir, &address);
    let client = |url: &str, org: &str| Client::connect_lazy(url, token(org)).unwrap();
    owner_with_resource(&client(&ferry.url, OWNER), "res", &[SENDER], &[RECIPIENT]).await;
    let sender = client(&ferry.url, SENDER);
    let id =
        integration_tests::initialize_transfer(&sender, "res", SENDER, &[RECIPIENT]).await.unwrap();
    let content = Content::new(17, 40 * MIB);
    // clamd goes away at 20 MiB once two of the six segments are clean.
    let (url, stopper) = (ferry.url.clone(), clamd.clone());
    let stop: Hook = Box::new(move || {
        Box::pin(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while segments_scanned(&url).await < 2 {
                assert!(Instant::now() < deadline, "segments 0 and 1 were never scanned");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            stopper.lock().unwrap().stop();
        })
    });
    {
        let total = content.len;
        let content = content.clone();
        let mut sent = 0u64;
        let mut hook = Some((20 * MIB, stop));
        let next = move || {
            let due = match &hook {
                Some((at, _)) if sent >= *at => hook.take().map(|(_, f)| f()),
                _ => None,
            };
            let chunk = (sent < content.len).then(|| Bytes::from(content.range(sent, MIB)));
            sent += chunk.as_ref().map_or(0, |c| c.len() as u64);
            async move {
                if let Some(due) = due {
                    due.await;
                }
                Ok(chunk)
            }
        };
        sender.upload_once(&id, 0, Some(total), next, &mut |_| {}).await.unwrap();
    }
    waiting_for_the_scanner(&sender, &id).await;

    // kill -9 while the scan waits for clamd: what was recorded clean is in the index.
    ferry.kill();
    let recorded = {
        let storage =
            integration_tests::open_storage(storage::StorageOptions::new(&data_dir)).await;
        let progress = storage.scan_progress(id.parse().unwrap()).unwrap();
        progress.expect("the clean segments are recorded").clean
    };
    assert!(recorded.is_superset(&BTreeSet::from([0, 1])), "{recorded:?}");
    assert!(recorded.len() < 6, "{recorded:?}");

    clamd.lock().unwrap().restart();
    let ferry = FerryProcess::start(&data_dir, &address);
    let sender = client(&ferry.url, SENDER);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let overview = sender.overview(&id).await.unwrap();
        if overview.file_transfer_status == pb::FileTransferStatus::Published as i32 {
            break;
        }
        assert_ne!(overview.file_transfer_status, pb::FileTransferStatus::Failed as i32);
        assert!(Instant::now() < deadline, "{overview:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Only the segments not recorded clean were scanned by the new process.
    assert_eq!(segments_scanned(&ferry.url).await, 6 - recorded.len() as u64);
    let out = dir.path().join("out");
    client(&ferry.url, RECIPIENT).download_file(&id, &out).await.unwrap();
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(std::fs::File::open(&out).unwrap()).unwrap();
    assert_eq!(hasher.finalize().to_hex().to_string(), content.blake3());
}
