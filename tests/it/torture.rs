//! Torture (issue 12): a real `ferry serve --dev` process killed with SIGKILL while gRPC, REST
//! and TUS uploads run at once, while transfers wait for their scan and during a burst of small
//! transfers, then restarted on the same data directory; and clamd killed while it scans.
//!
//! What must hold after every restart: each upload the server acknowledged as complete is
//! `Published` and downloads byte-identical (BLAKE3); each interrupted one kept at least what was
//! acknowledged and resumes from the server's offset (gRPC `GetUploadStatus`, TUS `HEAD`) to an
//! identical `Published` file; no upload temporary is left, and the blob store holds exactly the
//! files that transfers reference. A server restarted while clamd is frozen starts at once and
//! publishes nothing until clamd thaws. With clamd gone nothing is published; once it is back,
//! everything clean is, and EICAR fails.
//!
//! The moments of the kills, the sizes and the protocols are drawn from a seed
//! (`FERRY_TORTURE_SEED`, printed); `FERRY_TORTURE_LONG=1` adds rounds with more and larger
//! files. Everything is real: the `ferry` binary, clamd, loopback sockets, reqwest and tonic.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use client::v1::FileTransferStatus as S;
use futures_util::StreamExt as _;
use integration_tests::{TestClamd, eicar, payload};

const OWNER: &str = "991825827";
const SENDER: &str = "910753614";
const RECIPIENT: &str = "986252932";
const ALL: &[&str] = &["altinn:broker.write", "altinn:broker.read", "altinn:serviceowner"];
const RESOURCE: &str = "torture";
const MB: u64 = 1_000_000;
/// Most uploads in flight at once.
const CONCURRENCY: usize = 20;
/// How long anything may take to settle after a restart.
const SETTLE: Duration = Duration::from_secs(90);

// --- seeded choices ---

/// SplitMix64: small, seeded, good enough to pick sizes and moments.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

fn seed() -> u64 {
    std::env::var("FERRY_TORTURE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(20_261_203)
}

fn long() -> bool {
    std::env::var("FERRY_TORTURE_LONG").is_ok_and(|v| v == "1")
}

// --- the server process ---

/// A real `ferry serve --dev` process on loopback, restartable on the same data directory.
struct Ferry {
    child: Option<Child>,
    url: String,
    work: PathBuf,
    data_dir: PathBuf,
    clamd: String,
    dev_key: server::auth::DevKey,
    starts: u32,
    http: reqwest::Client,
}

impl Ferry {
    async fn start(work: &Path, clamd: &TestClamd) -> Self {
        integration_tests::install_tls_provider();
        let data_dir = work.join("data");
        std::fs::create_dir_all(&data_dir).unwrap();
        // The server trusts the development key of its data directory: create it first so that
        // tokens can be minted here, for every incarnation of the server.
        let dev_key = server::auth::DevKey::load_or_create(&data_dir).unwrap();
        // Rescans while clamd is unavailable back off to at most a second (the default is
        // longer than these tests).
        std::fs::write(work.join("ferry.toml"), "[clamd]\nretry_max_secs = 1\n").unwrap();
        let mut ferry = Self {
            child: None,
            url: String::new(),
            work: work.to_path_buf(),
            data_dir,
            clamd: clamd.address().to_string(),
            dev_key,
            starts: 0,
            http: reqwest::Client::builder().timeout(Duration::from_secs(120)).build().unwrap(),
        };
        ferry.spawn().await;
        ferry
    }

    fn log_path(&self) -> PathBuf {
        self.work.join(format!("server-{}.log", self.starts))
    }

    /// Starts the binary on a fresh port and waits until it serves `/health`.
    async fn spawn(&mut self) {
        assert!(self.child.is_none(), "the server is running");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        self.starts += 1;
        let log = std::fs::File::create(self.log_path()).unwrap();
        let began = Instant::now();
        let child = Command::new(crate::cli::ferry())
            .args(["serve", "--dev", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--config")
            .arg(self.work.join("ferry.toml"))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--clamd")
            .arg(&self.clamd)
            .envs(integration_tests::pg::metadata_env(&self.data_dir))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("ferry serve exited during start-up ({status}):\n{}", self.log_tail());
            }
            let health = self
                .http
                .get(format!("{}/health", self.url))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if health.is_ok_and(|r| r.status() == 200) {
                break;
            }
            assert!(Instant::now() < deadline, "ferry serve did not start:\n{}", self.log_tail());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        eprintln!("torture: server start {} ready in {:?}", self.starts, began.elapsed());
    }

    /// SIGKILL, and wait for the process to be gone.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// SIGTERM: a graceful stop that must end with status 0.
    async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let status = Command::new("kill").arg(child.id().to_string()).status().unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "ferry serve exited with {status}:\n{}", self.log_tail());
                return;
            }
            assert!(Instant::now() < deadline, "ferry serve ignored SIGTERM");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn token(&self, org: &str) -> String {
        let party = storage::model::Party::parse_lenient(org).unwrap();
        self.dev_key.mint(&party, ALL, 3600)
    }

    fn client(&self, org: &str) -> client::Client {
        client::Client::connect_lazy(&self.url, self.token(org)).unwrap()
    }

    /// What the uploads of this incarnation use.
    fn conn(&self, sent: &Arc<AtomicU64>) -> Conn {
        Conn {
            url: self.url.clone(),
            token: self.token(SENDER),
            sender: self.client(SENDER),
            recipient: self.client(RECIPIENT),
            http: self.http.clone(),
            sent: sent.clone(),
        }
    }
}

impl Drop for Ferry {
    fn drop(&mut self) {
        self.kill();
    }
}

// --- uploads ---

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Grpc,
    /// `POST …/filetransfer/{id}/upload`, a streamed body; `declared`: with a Content-Length.
    Rest {
        declared: bool,
    },
    /// TUS creation, then PATCHes of `chunk` bytes.
    Tus {
        chunk: usize,
    },
}

/// One transfer and what the server acknowledged of it.
struct Job {
    via: Via,
    data: Bytes,
    digest: blake3::Hash,
    /// Set once the server acknowledged the initialization.
    id: OnceLock<String>,
    /// The highest offset acknowledged as durable (gRPC acks, TUS 204s).
    acked: AtomicU64,
    /// The server acknowledged the whole upload (gRPC result, REST 200, TUS 204 at the end).
    complete: AtomicBool,
    /// TUS: the creation POST was answered 201.
    created: AtomicBool,
    /// An upload that failed while the server was running, with when.
    failed: Mutex<Option<(Instant, String)>>,
}

impl Job {
    fn new(via: Via, data: Vec<u8>) -> Arc<Self> {
        Arc::new(Self {
            via,
            digest: blake3::hash(&data),
            data: Bytes::from(data),
            id: OnceLock::new(),
            acked: AtomicU64::new(0),
            complete: AtomicBool::new(false),
            created: AtomicBool::new(false),
            failed: Mutex::new(None),
        })
    }

    fn len(&self) -> u64 {
        self.data.len() as u64
    }

    fn id(&self) -> &str {
        self.id.get().expect("an initialized transfer")
    }

    fn describe(&self) -> String {
        format!(
            "{:?} upload of {} ({} bytes, acked {}, complete {})",
            self.via,
            self.id.get().map_or("(not initialized)", String::as_str),
            self.len(),
            self.acked.load(SeqCst),
            self.complete.load(SeqCst)
        )
    }
}

/// The clients of one server incarnation.
#[derive(Clone)]
struct Conn {
    url: String,
    token: String,
    sender: client::Client,
    recipient: client::Client,
    http: reqwest::Client,
    /// Bytes handed to the transports so far (the kill moments are fractions of it).
    sent: Arc<AtomicU64>,
}

/// `data` in pieces of `size` (none if it is empty).
fn pieces(data: Bytes, size: usize) -> Vec<Bytes> {
    (0..data.len()).step_by(size).map(|i| data.slice(i..(i + size).min(data.len()))).collect()
}

/// `data` in pieces of `size`, counted into `sent` as the transport takes them.
fn counted(
    data: Bytes,
    size: usize,
    sent: Arc<AtomicU64>,
) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    futures_util::stream::iter(pieces(data, size)).map(move |piece| {
        sent.fetch_add(piece.len() as u64, SeqCst);
        Ok(piece)
    })
}

impl Conn {
    fn tus_url(&self, id: &str) -> String {
        format!("{}/broker/api/v1/filetransfer/upload/tus/{id}", self.url)
    }

    async fn initialize(&self, job: &Job) -> Result<(), String> {
        let id =
            integration_tests::initialize_transfer(&self.sender, RESOURCE, SENDER, &[RECIPIENT])
                .await
                .map_err(|s| format!("initialize: {s:?}"))?;
        job.id.set(id).expect("initialized once");
        Ok(())
    }

    /// The first attempt: initialize, then upload the whole file.
    async fn first_attempt(&self, job: &Job) -> Result<(), String> {
        self.initialize(job).await?;
        match job.via {
            Via::Grpc => self.grpc_from(job, 0).await,
            Via::Rest { declared } => self.rest(job, declared).await,
            Via::Tus { chunk } => {
                self.tus_create(job).await?;
                self.tus_from(job, 0, chunk).await
            }
        }
    }

    /// gRPC `Upload` from `offset` to the end, with `finish`.
    async fn grpc_from(&self, job: &Job, offset: u64) -> Result<(), String> {
        let mut pieces = pieces(job.data.slice(offset as usize..), 512 * 1024).into_iter();
        let sent = self.sent.clone();
        let next = move || {
            let piece = pieces.next();
            if let Some(piece) = &piece {
                sent.fetch_add(piece.len() as u64, SeqCst);
            }
            std::future::ready(Ok(piece))
        };
        let acked = &job.acked;
        self.sender
            .upload_once(job.id(), offset, Some(job.len()), next, &mut |o| {
                acked.fetch_max(o, SeqCst);
            })
            .await
            .map_err(|s| format!("gRPC upload from {offset}: {s:?}"))?;
        job.complete.store(true, SeqCst);
        Ok(())
    }

    async fn rest(&self, job: &Job, declared: bool) -> Result<(), String> {
        let body = counted(job.data.clone(), 256 * 1024, self.sent.clone());
        let mut request = self
            .http
            .post(format!("{}/broker/api/v1/filetransfer/{}/upload", self.url, job.id()))
            .bearer_auth(&self.token)
            .header("content-type", "application/octet-stream");
        if declared {
            request = request.header("content-length", job.len());
        }
        let r = request
            .body(reqwest::Body::wrap_stream(body))
            .send()
            .await
            .map_err(|e| format!("REST upload: {e:?}"))?;
        let status = r.status();
        if status != 200 {
            return Err(format!("REST upload: {status} {}", r.text().await.unwrap_or_default()));
        }
        job.complete.store(true, SeqCst);
        Ok(())
    }

    fn tus(&self, method: reqwest::Method, id: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.tus_url(id))
            .bearer_auth(&self.token)
            .header("tus-resumable", "1.0.0")
    }

    async fn tus_create(&self, job: &Job) -> Result<(), String> {
        let r = self
            .tus(reqwest::Method::POST, job.id())
            .header("upload-length", job.len())
            .send()
            .await
            .map_err(|e| format!("TUS create: {e:?}"))?;
        if r.status() != 201 {
            return Err(format!(
                "TUS create: {} {}",
                r.status(),
                r.text().await.unwrap_or_default()
            ));
        }
        job.created.store(true, SeqCst);
        if job.len() == 0 {
            job.complete.store(true, SeqCst);
        }
        Ok(())
    }

    /// TUS `HEAD`: the offset to continue at, `None` if there is no such upload (404).
    async fn tus_head(&self, job: &Job) -> Result<Option<u64>, String> {
        let r = self
            .tus(reqwest::Method::HEAD, job.id())
            .send()
            .await
            .map_err(|e| format!("TUS HEAD: {e:?}"))?;
        match r.status().as_u16() {
            404 => Ok(None),
            200 => Ok(Some(header_u64(&r, "upload-offset")?)),
            status => Err(format!("TUS HEAD: {status}")),
        }
    }

    /// PATCHes of `chunk` bytes from `offset` to the end.
    async fn tus_from(&self, job: &Job, mut offset: u64, chunk: usize) -> Result<(), String> {
        while offset < job.len() {
            let end = (offset + chunk as u64).min(job.len());
            let body = counted(
                job.data.slice(offset as usize..end as usize),
                256 * 1024,
                self.sent.clone(),
            );
            let r = self
                .tus(reqwest::Method::PATCH, job.id())
                .header("content-type", "application/offset+octet-stream")
                .header("upload-offset", offset)
                .body(reqwest::Body::wrap_stream(body))
                .send()
                .await
                .map_err(|e| format!("TUS PATCH at {offset}: {e:?}"))?;
            if r.status() != 204 {
                return Err(format!(
                    "TUS PATCH at {offset}: {} {}",
                    r.status(),
                    r.text().await.unwrap_or_default()
                ));
            }
            let now = header_u64(&r, "upload-offset")?;
            if now != end {
                return Err(format!("TUS PATCH {offset}..{end} answered Upload-Offset {now}"));
            }
            job.acked.fetch_max(now, SeqCst);
            offset = now;
        }
        job.complete.store(true, SeqCst);
        Ok(())
    }

    async fn status(&self, job: &Job) -> (i32, String) {
        let o = self.sender.overview(job.id()).await.unwrap_or_else(|s| {
            panic!("the overview of {} failed: {s:?}", job.describe());
        });
        (o.file_transfer_status, o.file_transfer_status_text)
    }

    /// After a restart: checks that what was acknowledged survived, then finishes the upload
    /// the way a client of its protocol would (gRPC: from `GetUploadStatus`; REST uploads are
    /// resumed over gRPC, as the REST API documents; TUS: `HEAD`, then PATCH the rest).
    async fn recover(&self, job: &Job, round: &str) -> Result<(), String> {
        let acked = job.acked.load(SeqCst);
        if job.complete.load(SeqCst) {
            let (status, text) = self.status(job).await;
            assert!(
                status == S::UploadProcessing as i32 || status == S::Published as i32,
                "{round}: the acknowledged {} is {status} ({text}) after the restart",
                job.describe()
            );
            return Ok(());
        }
        match job.via {
            Via::Grpc | Via::Rest { .. } => {
                let status =
                    self.sender.upload_status(job.id()).await.map_err(|s| format!("{s:?}"))?;
                assert!(
                    status.committed_offset >= acked,
                    "{round}: {} lost acknowledged bytes: the server is at {}",
                    job.describe(),
                    status.committed_offset
                );
                if status.status == S::Initialized as i32
                    || status.status == S::UploadStarted as i32
                {
                    self.grpc_from(job, status.committed_offset).await?;
                }
            }
            // A creation that was never answered is sent again, as a TUS client does (the
            // first one may have left an upload without its length: see issue 12, item 8).
            Via::Tus { chunk } if !job.created.load(SeqCst) => {
                self.tus_create(job).await?;
                self.tus_from(job, 0, chunk).await?;
            }
            Via::Tus { chunk } => {
                let offset = self.tus_head(job).await?.unwrap_or_else(|| {
                    panic!("{round}: the created {} is gone after the restart", job.describe())
                });
                assert!(
                    offset >= acked,
                    "{round}: {} lost acknowledged bytes: HEAD says {offset}",
                    job.describe()
                );
                // At Upload-Length a TUS client is done.
                self.tus_from(job, offset, chunk).await?;
            }
        }
        Ok(())
    }
}

fn header_u64(r: &reqwest::Response, name: &str) -> Result<u64, String> {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no {name} header in {}", r.status()))
}

/// Runs `f` for every job, at most `CONCURRENCY` at once, each bounded in time.
async fn for_each<F, Fut>(jobs: &[Arc<Job>], f: F) -> Vec<tokio::task::JoinHandle<()>>
where
    F: Fn(Arc<Job>) -> Fut,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let permits = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    jobs.iter()
        .map(|job| {
            let work = f(job.clone());
            let permits = permits.clone();
            let job = job.clone();
            tokio::spawn(async move {
                let _permit = permits.acquire_owned().await.unwrap();
                let result = match tokio::time::timeout(Duration::from_secs(120), work).await {
                    Ok(result) => result,
                    Err(_) => Err("timed out after 120 s".to_owned()),
                };
                if let Err(e) = result {
                    *job.failed.lock().unwrap() = Some((Instant::now(), e));
                }
            })
        })
        .collect()
}

async fn join(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(150), task).await.unwrap().unwrap();
    }
}

/// No upload may fail while the server is up: only the kill may interrupt them.
fn assert_none_failed_before(jobs: &[Arc<Job>], moment: Instant, round: &str) {
    for job in jobs {
        if let Some((at, e)) = job.failed.lock().unwrap().as_ref()
            && *at < moment
        {
            panic!("{round}: {} failed while the server was up: {e}", job.describe());
        }
    }
}

/// Polls until every job is settled (`Published` or `Failed`); returns their statuses.
async fn settle(conn: &Conn, jobs: &[Arc<Job>], round: &str) -> BTreeMap<String, (i32, String)> {
    let deadline = Instant::now() + SETTLE;
    let mut settled = BTreeMap::new();
    loop {
        for job in jobs {
            if !settled.contains_key(job.id()) {
                let (status, text) = conn.status(job).await;
                if status == S::Published as i32 || status == S::Failed as i32 {
                    settled.insert(job.id().to_owned(), (status, text));
                }
            }
        }
        if settled.len() == jobs.len() {
            return settled;
        }
        if Instant::now() > deadline {
            let mut waiting = Vec::new();
            for job in jobs.iter().filter(|j| !settled.contains_key(j.id())) {
                waiting.push(format!("{} is {:?}", job.describe(), conn.status(job).await));
            }
            panic!("{round}: not settled within {SETTLE:?}:\n{}", waiting.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every job is `Published` and downloads byte-identical.
async fn assert_published_and_identical(conn: &Conn, jobs: &[Arc<Job>], round: &str) {
    for (id, (status, text)) in settle(conn, jobs, round).await {
        assert_eq!(status, S::Published as i32, "{round}: {id} settled as {status}: {text}");
    }
    for job in jobs {
        let (header, bytes) = conn.recipient.download_range(job.id(), 0, None).await.unwrap();
        assert_eq!(header.blake3, job.digest.to_hex().as_str(), "{round}: {}", job.describe());
        assert_eq!(bytes.len() as u64, job.len(), "{round}: {}", job.describe());
        assert!(blake3::hash(&bytes) == job.digest, "{round}: {} differs", job.describe());
    }
}

/// Files under `dir`, as paths relative to it.
fn files_under(dir: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.insert(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

/// The name of `job`'s blob file (its BLAKE3 hex), if its content is stored as a file: content
/// of at most `inline_max_bytes` lives in the index (and was downloaded byte for byte by
/// `assert_published_and_identical` like the rest).
fn blob_file(job: &Job) -> Option<String> {
    (job.data.len() as u64 > storage::DEFAULT_INLINE_MAX).then(|| job.digest.to_hex().to_string())
}

/// No upload temporary is left, and the blob store holds exactly `expected` (BLAKE3 hex).
async fn assert_no_orphans(data_dir: &Path, expected: &BTreeSet<String>, round: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let tmp = files_under(&data_dir.join("tmp"));
        let blobs: BTreeSet<String> = files_under(&data_dir.join("blobs"))
            .iter()
            .map(|p| p.rsplit('/').next().unwrap().to_owned())
            .collect();
        if tmp.is_empty() && blobs == *expected {
            return;
        }
        if Instant::now() > deadline {
            let orphans: Vec<_> = blobs.difference(expected).collect();
            let missing: Vec<_> = expected.difference(&blobs).collect();
            panic!(
                "{round}: left over: temporaries {tmp:?}, blobs no transfer references {orphans:?}; missing blobs {missing:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn setup_resource(ferry: &Ferry) {
    integration_tests::owner_with_resource(&ferry.client(OWNER), RESOURCE, &[SENDER], &[RECIPIENT])
        .await;
}

/// A protocol, drawn: half gRPC, a quarter each REST and TUS.
fn any_via(rng: &mut Rng, tus_chunk: usize) -> Via {
    match rng.range(0, 3) {
        0 | 1 => Via::Grpc,
        2 => Via::Rest { declared: rng.range(0, 1) == 1 },
        _ => Via::Tus { chunk: tus_chunk },
    }
}

/// Kills the server once `kill_now` says so (or when every upload has ended by itself).
async fn kill_when(
    ferry: &mut Ferry,
    tasks: &[tokio::task::JoinHandle<()>],
    mut kill_now: impl FnMut() -> bool,
) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !kill_now() && !tasks.iter().all(|t| t.is_finished()) {
        assert!(Instant::now() < deadline, "the kill moment never came");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    if tasks.iter().all(|t| t.is_finished()) {
        eprintln!("torture: every upload ended before the kill moment");
    }
    let moment = Instant::now();
    ferry.kill();
    moment
}

/// After a kill: restart, check what was acknowledged, resume the rest, and check the result.
async fn restart_and_check(
    ferry: &mut Ferry,
    jobs: &[Arc<Job>],
    published: &mut BTreeSet<String>,
    round: &str,
) {
    let complete = jobs.iter().filter(|j| j.complete.load(SeqCst)).count();
    let untracked = jobs.iter().filter(|j| j.id.get().is_none()).count();
    eprintln!(
        "torture: {round}: killed with {complete} of {} uploads acknowledged complete ({untracked} not yet initialized)",
        jobs.len()
    );
    ferry.restart().await;
    check_recovered(ferry, jobs, published, round).await;
}

/// After a restart: check what was acknowledged, resume the rest, and check the result.
async fn check_recovered(
    ferry: &mut Ferry,
    jobs: &[Arc<Job>],
    published: &mut BTreeSet<String>,
    round: &str,
) {
    let conn = ferry.conn(&Arc::new(AtomicU64::new(0)));
    let tracked: Vec<Arc<Job>> = jobs.iter().filter(|j| j.id.get().is_some()).cloned().collect();
    for job in &tracked {
        job.failed.lock().unwrap().take();
    }
    let recovering = conn.clone();
    let label = round.to_owned();
    let began = Instant::now();
    let tasks = for_each(&tracked, move |job| {
        let conn = recovering.clone();
        let label = label.clone();
        async move { conn.recover(&job, &label).await }
    })
    .await;
    join(tasks).await;
    // Nothing may fail now: the server stays up.
    assert_none_failed_before(&tracked, Instant::now(), round);
    assert_published_and_identical(&conn, &tracked, round).await;
    eprintln!("torture: {round}: resumed and verified in {:?}", began.elapsed());
    published.extend(tracked.iter().filter_map(|j| blob_file(j)));
    assert_no_orphans(&ferry.data_dir, published, round).await;
}

/// Concurrent gRPC, REST and TUS uploads of up to 30 MB; kill -9 once a drawn fraction of
/// their bytes has been sent.
async fn round_mixed(ferry: &mut Ferry, rng: &mut Rng, published: &mut BTreeSet<String>, n: usize) {
    let round = format!("mixed round ({n} uploads)");
    let max = if long() { 30 * MB } else { 20 * MB };
    let jobs: Vec<Arc<Job>> = (0..n)
        .map(|i| {
            let via = match i % 4 {
                0 => Via::Grpc,
                1 => Via::Rest { declared: i % 8 == 1 },
                2 => Via::Tus { chunk: 4 * 1024 * 1024 },
                _ => any_via(rng, 2 * 1024 * 1024),
            };
            // A third are small, so that some complete before the kill.
            let size = if i % 3 == 0 { rng.range(1, 3 * MB) } else { rng.range(MB / 2, max) };
            Job::new(via, payload(rng.next(), size as usize))
        })
        .collect();
    let total: u64 = jobs.iter().map(|j| j.len()).sum();
    let threshold = total * rng.range(30, 80) / 100;
    let sent = Arc::new(AtomicU64::new(0));
    let conn = ferry.conn(&sent);
    let tasks = for_each(&jobs, move |job| {
        let conn = conn.clone();
        async move { conn.first_attempt(&job).await }
    })
    .await;
    // Once the drawn share of the bytes is sent and at least one upload was acknowledged whole,
    // so that every round checks both kinds.
    let moment = kill_when(ferry, &tasks, || {
        sent.load(SeqCst) >= threshold && jobs.iter().any(|j| j.complete.load(SeqCst))
    })
    .await;
    eprintln!("torture: {round}: SIGKILL after {} of {total} bytes sent", sent.load(SeqCst));
    join(tasks).await;
    assert_none_failed_before(&jobs, moment, &round);
    restart_and_check(ferry, &jobs, published, &round).await;
}

/// Uploads complete while clamd is frozen (SIGSTOP) in the middle of scanning them, so the
/// transfers sit in `UploadProcessing`; kill -9 then, thaw clamd, restart: the scans resume.
async fn round_scanning(
    ferry: &mut Ferry,
    clamd: &TestClamd,
    rng: &mut Rng,
    published: &mut BTreeSet<String>,
) {
    let round = "scanning round";
    let jobs = vec![
        Job::new(Via::Grpc, payload(rng.next(), rng.range(20 * MB, 30 * MB) as usize)),
        Job::new(
            Via::Rest { declared: true },
            payload(rng.next(), rng.range(2 * MB, 8 * MB) as usize),
        ),
        Job::new(
            Via::Tus { chunk: 4 * 1024 * 1024 },
            payload(rng.next(), rng.range(2 * MB, 8 * MB) as usize),
        ),
        Job::new(Via::Grpc, payload(rng.next(), rng.range(MB, 3 * MB) as usize)),
    ];
    let total: u64 = jobs.iter().map(|j| j.len()).sum();
    let sent = Arc::new(AtomicU64::new(0));
    let conn = ferry.conn(&sent);
    let uploading = conn.clone();
    let tasks = for_each(&jobs, move |job| {
        let conn = uploading.clone();
        async move { conn.first_attempt(&job).await }
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while sent.load(SeqCst) < total / 4 {
        assert!(Instant::now() < deadline, "{round}: the uploads did not get going");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    clamd.pause();
    join(tasks).await;
    assert_none_failed_before(&jobs, Instant::now(), round);
    assert!(jobs.iter().all(|j| j.complete.load(SeqCst)), "{round}: every upload completes");
    // The large one cannot have been scanned: clamd froze before its last byte was sent.
    let mut processing = 0;
    for job in &jobs {
        let (status, text) = conn.status(job).await;
        assert!(
            status == S::UploadProcessing as i32 || status == S::Published as i32,
            "{round}: {} is {status} ({text})",
            job.describe()
        );
        processing += usize::from(status == S::UploadProcessing as i32);
    }
    assert!(processing >= 1, "{round}: nothing was waiting for its scan");
    tokio::time::sleep(Duration::from_millis(rng.range(50, 600))).await;
    ferry.kill();
    eprintln!("torture: {round}: SIGKILL with {processing} transfers waiting for the frozen clamd");
    // Restarted while clamd is still frozen: start-up does not wait for it (it did, 65 s), and
    // nothing is published or failed meanwhile.
    let began = Instant::now();
    ferry.spawn().await;
    assert!(
        began.elapsed() < Duration::from_secs(15),
        "{round}: a frozen clamd held start-up for {:?}",
        began.elapsed()
    );
    let conn = ferry.conn(&sent);
    let frozen = Instant::now();
    let mut waiting = Vec::new();
    for job in &jobs {
        let (status, text) = conn.status(job).await;
        if status == S::UploadProcessing as i32 {
            waiting.push(job.clone());
        } else {
            assert_eq!(status, S::Published as i32, "{round}: {}: {text}", job.describe());
        }
    }
    assert!(!waiting.is_empty(), "{round}: nothing waits for the frozen clamd");
    while frozen.elapsed() < Duration::from_secs(1) {
        for job in &waiting {
            let (status, text) = conn.status(job).await;
            assert_eq!(status, S::UploadProcessing as i32, "{round}: {}: {text}", job.describe());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    clamd.resume();
    check_recovered(ferry, &jobs, published, round).await;
}

/// 100 transfers of 4 KiB, initialized and uploaded by 20 clients at once; kill -9 after a drawn
/// number of them completed.
async fn round_burst(ferry: &mut Ferry, rng: &mut Rng, published: &mut BTreeSet<String>) {
    let round = "burst round";
    let n = 100;
    let jobs: Vec<Arc<Job>> =
        (0..n).map(|_| Job::new(any_via(rng, 4096), payload(rng.next(), 4096))).collect();
    let kill_after = rng.range(15, 60) as usize;
    let sent = Arc::new(AtomicU64::new(0));
    let conn = ferry.conn(&sent);
    let tasks = for_each(&jobs, move |job| {
        let conn = conn.clone();
        async move { conn.first_attempt(&job).await }
    })
    .await;
    let moment = kill_when(ferry, &tasks, || {
        jobs.iter().filter(|j| j.complete.load(SeqCst)).count() >= kill_after
    })
    .await;
    join(tasks).await;
    assert_none_failed_before(&jobs, moment, round);
    restart_and_check(ferry, &jobs, published, round).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn torture_kill_9_during_uploads_scans_and_bursts_loses_nothing_and_leaves_nothing() {
    let seed = seed();
    eprintln!("torture: seed {seed} (FERRY_TORTURE_SEED), long {}", long());
    let began = Instant::now();
    let mut rng = Rng(seed);
    let clamd = TestClamd::start();
    let work = tempfile::tempdir().unwrap();
    let mut ferry = Ferry::start(work.path(), &clamd).await;
    setup_resource(&ferry).await;
    let mut published = BTreeSet::new();

    round_mixed(&mut ferry, &mut rng, &mut published, 12).await;
    round_scanning(&mut ferry, &clamd, &mut rng, &mut published).await;
    round_burst(&mut ferry, &mut rng, &mut published).await;
    if long() {
        for _ in 0..3 {
            round_mixed(&mut ferry, &mut rng, &mut published, CONCURRENCY).await;
        }
        round_scanning(&mut ferry, &clamd, &mut rng, &mut published).await;
        round_burst(&mut ferry, &mut rng, &mut published).await;
    }

    // A graceful stop, then the index and the files agree (opening the storage here would
    // clean up, so the files were checked above, while the server ran).
    ferry.stop().await;
    let storage =
        integration_tests::open_storage(storage::StorageOptions::new(&ferry.data_dir)).await;
    let problems = storage.check_consistency().await.unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    let recorded: BTreeSet<String> = storage
        .blobs()
        .unwrap()
        .into_iter()
        .filter(|(d, _)| !storage.is_inline(d).unwrap())
        .map(|(d, _)| d.to_hex().to_string())
        .collect();
    assert_eq!(recorded, published, "the index's blob files are the published files");
    eprintln!(
        "torture: {} blob files published across {} server starts in {:?}",
        published.len(),
        ferry.starts,
        began.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn torture_clamd_killed_mid_scan_publishes_nothing_until_it_returns() {
    let seed = seed();
    let mut rng = Rng(seed ^ 0xC1A3D);
    let began = Instant::now();
    let mut clamd = TestClamd::start();
    let work = tempfile::tempdir().unwrap();
    let ferry = Ferry::start(work.path(), &clamd).await;
    setup_resource(&ferry).await;
    let sent = Arc::new(AtomicU64::new(0));
    let conn = ferry.conn(&sent);
    let round = "clamd outage";

    // Uploads being scanned when clamd dies.
    let during: Vec<Arc<Job>> = (0..4)
        .map(|_| Job::new(Via::Grpc, payload(rng.next(), rng.range(4 * MB, 10 * MB) as usize)))
        .collect();
    let total: u64 = during.iter().map(|j| j.len()).sum();
    let uploading = conn.clone();
    let tasks = for_each(&during, move |job| {
        let conn = uploading.clone();
        async move { conn.first_attempt(&job).await }
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while sent.load(SeqCst) < total * 3 / 10 {
        assert!(Instant::now() < deadline, "the uploads did not get going");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    clamd.stop();
    let outage = Instant::now();
    join(tasks).await;
    assert_none_failed_before(&during, Instant::now(), round);

    // Uploads made while clamd is away, EICAR among them.
    let clean = Job::new(Via::Tus { chunk: 1024 * 1024 }, payload(rng.next(), 3 * MB as usize));
    let infected = Job::new(Via::Rest { declared: false }, eicar());
    let after = vec![clean.clone(), infected.clone()];
    let uploading = conn.clone();
    join(
        for_each(&after, move |job| {
            let conn = uploading.clone();
            async move { conn.first_attempt(&job).await }
        })
        .await,
    )
    .await;
    assert_none_failed_before(&after, Instant::now(), round);
    let all: Vec<Arc<Job>> = during.iter().chain(&after).cloned().collect();
    assert!(all.iter().all(|j| j.complete.load(SeqCst)), "uploads go on without clamd");

    // A verdict clamd gave just before it died may still be committing: look after a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut waiting = Vec::new();
    for job in &all {
        let (status, text) = conn.status(job).await;
        if status == S::UploadProcessing as i32 {
            waiting.push(job.clone());
        } else {
            assert_eq!(status, S::Published as i32, "{}: {text}", job.describe());
            assert!(!Arc::ptr_eq(job, &clean) && !Arc::ptr_eq(job, &infected));
        }
    }
    assert!(waiting.len() >= 3, "clamd died before most scans ended: {} waiting", waiting.len());
    // Absent for a few seconds: nothing more is published, nothing fails, and the status text
    // says what the transfer waits for.
    while outage.elapsed() < Duration::from_secs(4) {
        for job in &waiting {
            let (status, text) = conn.status(job).await;
            assert_eq!(
                status,
                S::UploadProcessing as i32,
                "{round}: {} became {status} ({text}) while clamd was gone",
                job.describe()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, text) = conn.status(&clean).await;
    assert!(text.contains("scanner"), "the status text says it waits for the scanner: {text}");

    clamd.restart();
    let clean_jobs: Vec<Arc<Job>> =
        all.iter().filter(|j| !Arc::ptr_eq(j, &infected)).cloned().collect();
    assert_published_and_identical(&conn, &clean_jobs, round).await;
    let settled = settle(&conn, std::slice::from_ref(&infected), round).await;
    let (status, text) = &settled[infected.id()];
    assert_eq!(*status, S::Failed as i32, "EICAR settles as Failed: {text}");
    let expected = clean_jobs.iter().filter_map(|j| blob_file(j)).collect();
    assert_no_orphans(&ferry.data_dir, &expected, round).await;
    eprintln!(
        "torture: {round}: {} scans held and settled in {:?}",
        waiting.len(),
        began.elapsed()
    );
}

/// Issue 12, item 8: a REST upload cut off by kill -9 resumes over TUS: `HEAD` says where, and a
/// PATCH that sends the `Upload-Length` the REST upload never declared continues it.
#[tokio::test(flavor = "multi_thread")]
async fn torture_a_rest_upload_cut_by_kill_9_resumes_over_tus() {
    let clamd = TestClamd::start();
    let work = tempfile::tempdir().unwrap();
    let mut ferry = Ferry::start(work.path(), &clamd).await;
    setup_resource(&ferry).await;
    let sent = Arc::new(AtomicU64::new(0));
    let conn = ferry.conn(&sent);
    let job = Job::new(Via::Rest { declared: false }, payload(8, 12 * MB as usize));
    let uploading = conn.clone();
    let tasks = for_each(std::slice::from_ref(&job), move |job| {
        let conn = uploading.clone();
        async move { conn.first_attempt(&job).await }
    })
    .await;
    let moment = kill_when(&mut ferry, &tasks, || sent.load(SeqCst) >= 6 * MB).await;
    join(tasks).await;
    assert_none_failed_before(std::slice::from_ref(&job), moment, "REST cut");
    assert!(!job.complete.load(SeqCst), "the upload was cut off");
    ferry.restart().await;
    let conn = ferry.conn(&sent);
    let r = conn.tus(reqwest::Method::HEAD, job.id()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let offset = header_u64(&r, "upload-offset").unwrap();
    let r = conn
        .tus(reqwest::Method::PATCH, job.id())
        .header("content-type", "application/offset+octet-stream")
        .header("upload-offset", offset)
        .header("upload-length", job.len())
        .body(job.data.slice(offset as usize..))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap_or_default());
    job.complete.store(true, SeqCst);
    assert_published_and_identical(&conn, std::slice::from_ref(&job), "REST cut").await;
}
