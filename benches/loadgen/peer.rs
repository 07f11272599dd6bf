//! Scenario "peer" (issue 15): the same TUS work against Ferry and against the official tus
//! server for Node.js (`@tus/server` with `@tus/file-store`, pinned in `benches/peer/`), in one
//! run, interleaved, so that both share the machine's noise.
//!
//! Three arms take turns on every measurement: the peer, Ferry on a resource without scanning
//! (the peer's work plus fsync and hashing) and Ferry scanning with clamd. Their order rotates
//! with each repetition. Measured:
//!
//! - large uploads: one file of `settings.size` in PATCHes of 5 MiB and of 50 MiB, as one upload
//!   and as four concurrent uploads of a quarter each (the same bytes in all), MiB/s until the
//!   last PATCH is acknowledged;
//! - 4 KiB uploads at each client count: creation (`POST`) and one `PATCH` (Ferry has no
//!   creation-with-upload, so both servers do the same two requests), uploads/s and p99 of the
//!   pair; each client has its own reqwest connection pool;
//! - peak RSS (VmHWM) of each server process, and the CPU of the server and of this load
//!   generator during the large uploads and per 4 KiB upload (the check that the generator is
//!   not the limit);
//! - the work: CPU seconds of the server, clamd and this generator from the first request until
//!   the upload is published (per GiB, per 4 KiB upload), and the rate the machine's cores
//!   would reach if they did nothing but that work, all busy (`_cores_bound`): a target above
//!   that bound needs less work per byte, not better scheduling.
//!
//! The page cache: the peer does not fsync (its file store writes with `createWriteStream` and
//! never calls `fsync`, nor for its metadata files), so it leaves dirty pages for whatever runs
//! next. Every large upload follows the disk-ceiling write + delete of the same bytes (the idea
//! of `large.rs`'s `disk_ceiling`) and then `sync`, so each starts with no dirty pages and the
//! same cache state; every 4 KiB level starts after a `sync`.
//!
//! A Ferry transfer must be initialized before its TUS creation: the bench initializes them all
//! before the clock starts (the peer has no such step), and waits after the clock stops until
//! they are published, so that no scan of one arm runs during the next.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;

use crate::Settings;
use crate::ferry::{self, Cpu, FerryProcess, SCANNED, SENDER, UNSCANNED};
use crate::large::Payload;
use crate::report::{Report, mib_per_s, percentile};

const MIB: usize = 1024 * 1024;
/// PATCH sizes of the large uploads.
const CHUNKS: [usize; 2] = [5 * MIB, 50 * MIB];
const SMALL: usize = 4096;

/// Where the peer's `package.json`, lock file and `server.mjs` are.
fn peer_dir() -> PathBuf {
    integration_tests::repo_root().join("benches/peer")
}

fn runs(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Makes sure the peer can run: `Ok(false)` (with the reason printed) if Node.js or npm is
/// absent; installs the pinned packages with `npm ci` if they are not there yet.
pub(crate) fn installed() -> anyhow::Result<bool> {
    if !runs("node") || !runs("npm") {
        eprintln!(
            "peer: SKIPPED, Node.js or npm is not installed (apt-get install nodejs npm); \
             the peer is the official tus server for Node.js"
        );
        return Ok(false);
    }
    let dir = peer_dir();
    if !dir.join("node_modules/@tus/server").exists()
        || !dir.join("node_modules/@tus/file-store").exists()
    {
        eprintln!("peer: installing @tus/server and @tus/file-store (npm ci in {})", dir.display());
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--silent"])
            .current_dir(&dir)
            .status()
            .context("npm ci")?;
        ensure!(status.success(), "npm ci in {} failed ({status})", dir.display());
    }
    Ok(true)
}

/// The peer server in its own process; killed and its directory removed on drop.
#[derive(Debug)]
pub(crate) struct PeerProcess {
    child: Child,
    /// The creation URL (`…/files`).
    url: String,
    _dir: tempfile::TempDir,
}

impl PeerProcess {
    async fn start(scratch: &Path) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir_in(scratch).context("peer directory")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let log = std::fs::File::create(dir.path().join("peer.log"))?;
        let child = Command::new("node")
            .arg(peer_dir().join("server.mjs"))
            .arg(port.to_string())
            .arg(dir.path().join("files"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting node server.mjs")?;
        let mut peer = Self { child, url: format!("http://127.0.0.1:{port}/files"), _dir: dir };
        // Ready when TUS discovery (OPTIONS) answers.
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = peer.child.try_wait()? {
                bail!("the peer exited during start-up ({status}); see its peer.log");
            }
            let ready = http.request(reqwest::Method::OPTIONS, &peer.url).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return Ok(peer);
            }
            ensure!(Instant::now() < deadline, "the peer was not ready within 30 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TUS client on its own connection pool.
#[derive(Debug, Clone)]
struct Tus {
    http: reqwest::Client,
    bearer: Option<String>,
}

impl Tus {
    fn new(bearer: Option<&str>) -> Self {
        Self { http: reqwest::Client::new(), bearer: bearer.map(|t| format!("Bearer {t}")) }
    }

    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, url).header("tus-resumable", "1.0.0");
        match &self.bearer {
            Some(b) => request.header("authorization", b),
            None => request,
        }
    }

    /// Creation, then the file in PATCHes of `chunk` bytes; each PATCH must be acknowledged
    /// (204 at the new offset) before the next one is sent, as a TUS client does.
    async fn upload(&self, create: &str, file: &[Bytes], chunk: usize) -> anyhow::Result<()> {
        let length: u64 = file.iter().map(|c| c.len() as u64).sum();
        let created = self
            .request(reqwest::Method::POST, create)
            .header("upload-length", length)
            .send()
            .await
            .context("TUS creation")?;
        ensure!(created.status() == 201, "TUS creation: {}", created.status());
        let location = created
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .context("TUS creation: no Location")?;
        let target = match location.strip_prefix('/') {
            Some(_) => {
                let origin = create.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
                format!("{origin}{location}")
            }
            None => location.to_owned(),
        };
        let mut offset = 0u64;
        for body in patches(file, chunk) {
            let size: u64 = body.iter().map(|c| c.len() as u64).sum();
            let stream = tokio_stream::iter(body.into_iter().map(Ok::<_, std::io::Error>));
            let patched = self
                .request(reqwest::Method::PATCH, &target)
                .header("upload-offset", offset)
                .header("content-type", "application/offset+octet-stream")
                .header("content-length", size)
                .body(reqwest::Body::wrap_stream(stream))
                .send()
                .await
                .context("TUS PATCH")?;
            ensure!(patched.status() == 204, "TUS PATCH at {offset}: {}", patched.status());
            offset += size;
            let acknowledged = patched.headers().get("upload-offset").and_then(|o| o.to_str().ok());
            ensure!(
                acknowledged == Some(offset.to_string().as_str()),
                "TUS PATCH: Upload-Offset {acknowledged:?}, expected {offset}"
            );
        }
        ensure!(offset == length, "TUS upload: {offset} of {length} bytes sent");
        Ok(())
    }
}

/// `file` cut into PATCH bodies of `chunk` bytes (the last one shorter).
fn patches(file: &[Bytes], chunk: usize) -> Vec<Vec<Bytes>> {
    let mut out = vec![Vec::new()];
    let mut room = chunk;
    for piece in file {
        let mut piece = piece.clone();
        while !piece.is_empty() {
            if room == 0 {
                out.push(Vec::new());
                room = chunk;
            }
            let take = piece.len().min(room);
            out.last_mut().expect("a body").push(piece.split_to(take));
            room -= take;
        }
    }
    out.retain(|b| !b.is_empty());
    out
}

/// Who serves an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arm {
    Peer,
    FerryUnscanned,
    FerryScanned,
}

impl Arm {
    const ALL: [Arm; 3] = [Arm::Peer, Arm::FerryUnscanned, Arm::FerryScanned];

    fn name(self) -> &'static str {
        match self {
            Arm::Peer => "peer",
            Arm::FerryUnscanned => "unscanned",
            Arm::FerryScanned => "scanned",
        }
    }

    /// The three arms, starting at a different one in each repetition.
    fn order(rep: usize) -> [Arm; 3] {
        let mut arms = Self::ALL;
        arms.rotate_left(rep % 3);
        arms
    }
}

/// The two servers of one repetition.
struct Servers {
    peer: PeerProcess,
    ferry: FerryProcess,
}

impl Servers {
    async fn start(settings: &Settings) -> anyhow::Result<Self> {
        let peer = PeerProcess::start(&settings.scratch).await?;
        let ferry =
            FerryProcess::start(&settings.ferry, &settings.scratch, &settings.clamd_address)
                .await?;
        Ok(Self { peer, ferry })
    }

    fn pid(&self, arm: Arm) -> u32 {
        match arm {
            Arm::Peer => self.peer.child.id(),
            _ => self.ferry.pid(),
        }
    }

    fn tus(&self, arm: Arm) -> Tus {
        match arm {
            Arm::Peer => Tus::new(None),
            _ => Tus::new(Some(&self.ferry.token(SENDER))),
        }
    }

    /// `n` creation URLs for `arm`, and Ferry's transfer ids (initialized here, 16 at a time).
    async fn prepare(&self, arm: Arm, n: usize) -> anyhow::Result<(Vec<String>, Vec<String>)> {
        let resource = match arm {
            Arm::Peer => return Ok((vec![self.peer.url.clone(); n], Vec::new())),
            Arm::FerryUnscanned => UNSCANNED,
            Arm::FerryScanned => SCANNED,
        };
        let next = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..16.min(n))
            .map(|_| {
                let (sender, next) = (self.ferry.client(SENDER), next.clone());
                tokio::spawn(async move {
                    let mut ids = Vec::new();
                    while next.fetch_add(1, Ordering::Relaxed) < n {
                        ids.push(ferry::initialize(&sender, resource, "peer.bin").await?);
                    }
                    anyhow::Ok(ids)
                })
            })
            .collect();
        let mut ids = Vec::new();
        for task in tasks {
            ids.extend(task.await??);
        }
        let base = format!("{}/broker/api/v1/filetransfer/upload/tus", self.ferry.url);
        Ok((ids.iter().map(|id| format!("{base}/{id}")).collect(), ids))
    }

    /// Waits until Ferry has published `ids` (16 at a time), so no scan outlives its arm. It
    /// asks every 20 ms: the CPU it costs is inside the arm's work (the `_work_cpu` and `_s_per_gib` figures).
    async fn settle(&self, ids: Vec<String>) -> anyhow::Result<()> {
        let ids = Arc::new(ids);
        let next = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..16.min(ids.len()))
            .map(|_| {
                let (sender, next, ids) = (self.ferry.client(SENDER), next.clone(), ids.clone());
                tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(id) = ids.get(i) else { return anyhow::Ok(()) };
                        ferry::published_polling(&sender, id, Duration::from_millis(20)).await?;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await??;
        }
        Ok(())
    }
}

/// Flushes every dirty page of the machine (`sync(1)`): the peer leaves its uploads in the page
/// cache, and writeback must not land on the next arm's clock.
fn sync() -> anyhow::Result<()> {
    let status = Command::new("sync").status().context("sync")?;
    ensure!(status.success(), "sync failed ({status})");
    Ok(())
}

/// Figures in the order they were first measured, with their units and ratio baselines.
#[derive(Debug, Default)]
struct Series(Vec<(String, &'static str, Option<String>, Vec<f64>)>);

impl Series {
    fn push(&mut self, key: String, unit: &'static str, baseline: Option<String>, value: f64) {
        match self.0.iter_mut().find(|(k, ..)| *k == key) {
            Some((.., samples)) => samples.push(value),
            None => self.0.push((key, unit, baseline, vec![value])),
        }
    }

    fn into_report(self, report: &mut Report) {
        for (key, unit, baseline, samples) in self.0 {
            report.add(&key, unit, samples, baseline.as_deref());
        }
    }
}

/// The peer scenario, `settings.reps` times.
pub(crate) async fn run(
    settings: &Settings,
    payload: &Payload,
    report: &mut Report,
) -> anyhow::Result<()> {
    if !installed()? {
        return Ok(());
    }
    let mut s = Series::default();
    for rep in 0..settings.reps {
        eprintln!("peer: large uploads, repetition {} of {}", rep + 1, settings.reps);
        large(settings, payload, rep, &mut s).await?;
        eprintln!("peer: 4 KiB uploads, repetition {} of {}", rep + 1, settings.reps);
        small(settings, rep, &mut s).await?;
    }
    s.into_report(report);
    for chunk in CHUNKS {
        for uploads in [1, 4] {
            let key = format!("peer.{}_x{uploads}.scanned_vs_peer", label(chunk));
            if let Some(ratio) = report.get(&key) {
                let target = format!(
                    "TUS {} PATCHes × {uploads}: Ferry scanned ≥ 2.5 × the peer (MiB/s)",
                    label(chunk)
                );
                report.check(target, ratio, 2.5, true);
            }
            let key = |k: &str| format!("peer.{}_x{uploads}.{k}", label(chunk));
            if let (Some(bound), Some(peer)) =
                (report.get(&key("scanned_cores_bound")), report.get(&key("peer")))
            {
                let target = format!(
                    "TUS {} PATCHes × {uploads}: the cores, all busy with Ferry scanned's work, \
                     reach 2.5 × the peer (MiB/s)",
                    label(chunk)
                );
                report.check(target, bound, 2.5 * peer, true);
            }
        }
    }
    for &clients in &settings.small_clients {
        let key = |k: &str| format!("peer.4KiB_{clients}c.{k}");
        if let Some(ratio) = report.get(&key("scanned_vs_peer")) {
            let target = format!("4 KiB TUS, {clients} clients: Ferry scanned ≥ 2 × the peer/s");
            report.check(target, ratio, 2.0, true);
        }
        if let (Some(ferry), Some(peer)) =
            (report.get(&key("scanned_p99")), report.get(&key("peer_p99")))
        {
            let target = format!("4 KiB TUS, {clients} clients: Ferry scanned p99 < the peer's ms");
            report.check(target, ferry, peer, false);
        }
        if let (Some(bound), Some(peer)) =
            (report.get(&key("scanned_cores_bound")), report.get(&key("peer")))
        {
            let target = format!(
                "4 KiB TUS, {clients} clients: the cores, all busy with Ferry scanned's work, \
                 reach 2 × the peer/s"
            );
            report.check(target, bound, 2.0 * peer, true);
        }
    }
    Ok(())
}

fn label(bytes: usize) -> String {
    format!("{}MiB", bytes / MIB)
}

/// One repetition of the large uploads: every PATCH size and upload count, each arm in turn.
async fn large(
    settings: &Settings,
    payload: &Payload,
    rep: usize,
    s: &mut Series,
) -> anyhow::Result<()> {
    let servers = Servers::start(settings).await?;
    let size = settings.size;
    let disk_file = settings.scratch.join("peer-ceiling.bin");
    let mut variant = 20_000 + 1000 * rep as u64;
    for chunk in CHUNKS {
        for uploads in [1usize, 4] {
            let key = format!("peer.{}_x{uploads}", label(chunk));
            let mut rates = [0.0f64; 3];
            for arm in Arm::order(rep) {
                let files: Vec<Vec<Bytes>> = (0..uploads)
                    .map(|i| payload.file(size / uploads as u64, variant + i as u64))
                    .collect();
                variant += 10;
                let whole: Vec<Bytes> = files.iter().flatten().cloned().collect();
                let disk = crate::large::disk_ceiling(&disk_file, &whole, true)?;
                s.push(format!("{key}.disk_write_fsync"), "MiB/s", None, mib_per_s(size, disk));
                let (urls, ids) = servers.prepare(arm, uploads).await?;
                sync()?;
                let (pid, clamd) = (servers.pid(arm), settings.clamd_pid);
                let cpu = Cpu::now(pid, clamd)?;
                let started = Instant::now();
                let tasks: Vec<_> = urls
                    .into_iter()
                    .zip(files)
                    .map(|(url, file)| {
                        let tus = servers.tus(arm);
                        tokio::spawn(async move { tus.upload(&url, &file, chunk).await })
                    })
                    .collect();
                for task in tasks {
                    task.await??;
                }
                let seconds = started.elapsed().as_secs_f64();
                let rate = mib_per_s(size, seconds);
                // Cores busy while the bytes arrived: the server's, clamd's and this load
                // generator's (the check that the client is not the limit).
                let busy = cpu.since(pid, clamd)?;
                let name = arm.name();
                s.push(format!("{key}.{name}_server_cores"), "cores", None, busy.server / seconds);
                s.push(format!("{key}.{name}_clamd_cores"), "cores", None, busy.clamd / seconds);
                s.push(format!("{key}.{name}_client_cores"), "cores", None, busy.client / seconds);
                servers.settle(ids).await?;
                let work = cpu.since(pid, clamd)?;
                let gib = size as f64 / (1024.0 * MIB as f64);
                s.push(format!("{key}.{name}_cpu_s_per_gib"), "s/GiB", None, work.total() / gib);
                s.push(format!("{key}.{name}_server_s_per_gib"), "s/GiB", None, work.server / gib);
                s.push(format!("{key}.{name}_clamd_s_per_gib"), "s/GiB", None, work.clamd / gib);
                s.push(format!("{key}.{name}_client_s_per_gib"), "s/GiB", None, work.client / gib);
                let bound = mib_per_s(size, work.total() / ferry::cores());
                s.push(format!("{key}.{name}_cores_bound"), "MiB/s", None, bound);
                let i = Arm::ALL.iter().position(|a| *a == arm).expect("an arm");
                rates[i] = rate;
                let baseline = (arm != Arm::Peer).then(|| format!("{key}.peer"));
                s.push(format!("{key}.{}", arm.name()), "MiB/s", baseline, rate);
            }
            for (i, arm) in Arm::ALL.iter().enumerate().skip(1) {
                s.push(format!("{key}.{}_vs_peer", arm.name()), "×", None, rates[i] / rates[0]);
            }
        }
    }
    for (arm, name) in [(Arm::Peer, "peer"), (Arm::FerryScanned, "ferry")] {
        let mib = ferry::peak_rss(servers.pid(arm))? as f64 / MIB as f64;
        s.push(format!("peer.peak_rss_large.{name}"), "MiB", None, mib);
    }
    Ok(())
}

/// One repetition of the 4 KiB uploads at each client count, each arm in turn.
async fn small(settings: &Settings, rep: usize, s: &mut Series) -> anyhow::Result<()> {
    let servers = Servers::start(settings).await?;
    let n = settings.small_transfers;
    for &clients in &settings.small_clients {
        let key = format!("peer.4KiB_{clients}c");
        let mut rates = [0.0f64; 3];
        for arm in Arm::order(rep) {
            let (urls, ids) = servers.prepare(arm, n).await?;
            let urls = Arc::new(urls);
            sync()?;
            let next = Arc::new(AtomicUsize::new(0));
            let (pid, clamd) = (servers.pid(arm), settings.clamd_pid);
            let cpu = Cpu::now(pid, clamd)?;
            let started = Instant::now();
            let workers: Vec<_> = (0..clients)
                .map(|_| {
                    let (tus, next, urls) = (servers.tus(arm), next.clone(), urls.clone());
                    tokio::spawn(async move {
                        let mut times = Vec::new();
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some(url) = urls.get(i) else { return anyhow::Ok(times) };
                            let seed = 0x7065_6572_0000_0000 ^ ((rep as u64) << 24) ^ i as u64;
                            let data = benches::payload_chunks(seed, SMALL, SMALL);
                            let one = Instant::now();
                            tus.upload(url, &data, SMALL).await?;
                            times.push(one.elapsed().as_micros() as u64);
                        }
                    })
                })
                .collect();
            let mut times = Vec::new();
            for w in workers {
                times.extend(w.await??);
            }
            let seconds = started.elapsed().as_secs_f64();
            let busy = cpu.since(pid, clamd)?;
            servers.settle(ids).await?;
            let work = cpu.since(pid, clamd)?;
            times.sort_unstable();
            let rate = n as f64 / seconds;
            let i = Arm::ALL.iter().position(|a| *a == arm).expect("an arm");
            rates[i] = rate;
            let name = arm.name();
            let baseline = |k: &str| (arm != Arm::Peer).then(|| format!("{key}.peer{k}"));
            s.push(format!("{key}.{name}"), "uploads/s", baseline(""), rate);
            let ms = |us: u64| us as f64 / 1000.0;
            s.push(format!("{key}.{name}_p50"), "ms", None, ms(percentile(&times, 50.0)));
            s.push(
                format!("{key}.{name}_p99"),
                "ms",
                baseline("_p99"),
                ms(percentile(&times, 99.0)),
            );
            let per_upload = |cpu: f64| 1000.0 * cpu / n as f64;
            s.push(format!("{key}.{name}_server_cpu"), "ms/upl", None, per_upload(busy.server));
            s.push(format!("{key}.{name}_client_cpu"), "ms/upl", None, per_upload(busy.client));
            s.push(format!("{key}.{name}_client_cores"), "cores", None, busy.client / seconds);
            // Everything an upload cost until it was published, on all three processes, and
            // the rate at which the machine's cores, all busy, would do that work.
            s.push(format!("{key}.{name}_work_cpu"), "ms/upl", None, per_upload(work.total()));
            s.push(
                format!("{key}.{name}_server_work_cpu"),
                "ms/upl",
                None,
                per_upload(work.server),
            );
            s.push(format!("{key}.{name}_clamd_cpu"), "ms/upl", None, per_upload(work.clamd));
            let bound = ferry::cores() * n as f64 / work.total();
            s.push(format!("{key}.{name}_cores_bound"), "uploads/s", None, bound);
        }
        for (i, arm) in Arm::ALL.iter().enumerate().skip(1) {
            s.push(format!("{key}.{}_vs_peer", arm.name()), "×", None, rates[i] / rates[0]);
        }
    }
    for (arm, name) in [(Arm::Peer, "peer"), (Arm::FerryScanned, "ferry")] {
        let mib = ferry::peak_rss(servers.pid(arm))? as f64 / MIB as f64;
        s.push(format!("peer.peak_rss_4KiB.{name}"), "MiB", None, mib);
    }
    Ok(())
}
