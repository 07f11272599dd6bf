//! Small transfers, the whole life cycle: initialize, upload 4 KiB, scan and publish, download,
//! confirm, with 1, 16 and 64 concurrent clients (issue 6, scenario 5).
//!
//! One process holds the server (real clamd, embedded storage, fresh data directory) and the
//! clients, on loopback. Each client runs complete life cycles back to back; the sender learns
//! of `Published` from one Watch stream shared by all clients (as an integrator would), not by
//! polling. Reported: life cycles per second and p50/p99 of each step.
//!
//! `cargo bench -p benches --bench small_transfers`
//! (`FERRY_BENCH_CLIENTS`, default `1,16,64`; `FERRY_BENCH_TRANSFERS` per level, default 1,000)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use integration_tests::{TestClamd, TestServer, payload};

const OWNER: &str = "991825827";
const SENDER: &str = "910753614";
const RECIPIENT: &str = "986252932";
const ALL: &[&str] = &["altinn:broker.write", "altinn:broker.read", "altinn:serviceowner"];
const SIZE: usize = 4096;
const STEPS: [&str; 5] = ["initialize", "upload", "publish", "download", "confirm"];

/// Transfers waiting for their `Published` event, and those published before anyone waited.
#[derive(Default)]
struct Published {
    waiting: HashMap<String, tokio::sync::oneshot::Sender<()>>,
    early: std::collections::HashSet<String>,
}

impl Published {
    fn arrived(&mut self, id: String) {
        match self.waiting.remove(&id) {
            Some(tx) => {
                let _ = tx.send(());
            }
            None => {
                self.early.insert(id);
            }
        }
    }

    fn wait(&mut self, id: &str) -> Option<tokio::sync::oneshot::Receiver<()>> {
        if self.early.remove(id) {
            return None;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.waiting.insert(id.to_owned(), tx);
        Some(rx)
    }
}

/// Follows the sender's published events into `published`.
async fn follow(sender: client::Client, published: Arc<Mutex<Published>>) {
    use client::v1::watch_response::Message;
    let request = client::v1::WatchRequest {
        after: "0".into(),
        resource_id: "bench".into(),
        types: vec!["no.altinn.broker.published".into()],
        heartbeat_seconds: 30,
    };
    let mut stream = sender.watch(request).await.expect("watch");
    while let Ok(Some(m)) = stream.message().await {
        if let Some(Message::Event(e)) = m.message {
            published.lock().expect("published").arrived(e.resourceinstance);
        }
    }
}

/// One life cycle; the time of each step in microseconds.
async fn life_cycle(
    sender: &client::Client,
    recipient: &client::Client,
    published: &Mutex<Published>,
    data: Bytes,
) -> [u64; 5] {
    let mut times = [0u64; 5];
    let mut step = Instant::now();
    let mut lap = |i: usize| {
        times[i] = step.elapsed().as_micros() as u64;
        step = Instant::now();
    };
    let id = sender
        .initialize(client::v1::InitializeFileTransferRequest {
            file_name: "small.bin".into(),
            resource_id: "bench".into(),
            senders_file_transfer_reference: "bench".into(),
            sender: format!("0192:{SENDER}"),
            recipients: vec![format!("0192:{RECIPIENT}")],
            ..Default::default()
        })
        .await
        .expect("initialize");
    lap(0);
    let mut chunk = Some(data);
    sender
        .upload_once(
            &id,
            0,
            Some(SIZE as u64),
            move || std::future::ready(Ok(chunk.take())),
            &mut |_| {},
        )
        .await
        .expect("upload");
    lap(1);
    let wait = published.lock().expect("published").wait(&id);
    if let Some(rx) = wait {
        tokio::time::timeout(Duration::from_secs(60), rx)
            .await
            .expect("published within 60 s")
            .expect("the watch ended");
    }
    lap(2);
    let (_, bytes) = recipient.download_range(&id, 0, None).await.expect("download");
    assert_eq!(bytes.len(), SIZE);
    lap(3);
    recipient.confirm(&id).await.expect("confirm");
    lap(4);
    times
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let levels: Vec<usize> = std::env::var("FERRY_BENCH_CLIENTS")
        .unwrap_or_else(|_| "1,16,64".into())
        .split(',')
        .map(|n| n.trim().parse().expect("FERRY_BENCH_CLIENTS: numbers"))
        .collect();
    let transfers: usize =
        std::env::var("FERRY_BENCH_TRANSFERS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let clamd = TestClamd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_in(dir.path(), &clamd.address(), 0, |_| {}).await;
    let owner = server.client(server.token(OWNER, ALL));
    integration_tests::owner_with_resource(&owner, "bench", &[SENDER], &[RECIPIENT]).await;
    let published = Arc::new(Mutex::new(Published::default()));
    tokio::spawn(follow(server.client(server.token(SENDER, ALL)), published.clone()));

    println!("small transfers, {SIZE} B each, real clamd, {transfers} life cycles per level");
    println!(
        "{:>7} {:>10}   {}",
        "clients",
        "cycles/s",
        STEPS.map(|s| format!("{s:>10} p50/p99 ms")).join(" ")
    );
    for clients in levels {
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let started = Instant::now();
        let workers: Vec<_> = (0..clients)
            .map(|_| {
                let sender = server.client(server.token(SENDER, ALL));
                let recipient = server.client(server.token(RECIPIENT, ALL));
                let (next, published) = (next.clone(), published.clone());
                tokio::spawn(async move {
                    let mut times = Vec::new();
                    loop {
                        let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if n >= transfers {
                            return times;
                        }
                        let data = Bytes::from(payload(n as u64 ^ (clients as u64) << 32, SIZE));
                        times.push(life_cycle(&sender, &recipient, &published, data).await);
                    }
                })
            })
            .collect();
        let mut all = Vec::new();
        for w in workers {
            all.extend(w.await.expect("client"));
        }
        let rate = transfers as f64 / started.elapsed().as_secs_f64();
        let columns: Vec<String> = (0..STEPS.len())
            .map(|i| {
                let mut step: Vec<u64> = all.iter().map(|t| t[i]).collect();
                step.sort_unstable();
                let ms = |us: u64| us as f64 / 1000.0;
                format!(
                    "{:>10.2}/{:<7.2}   ",
                    ms(percentile(&step, 50.0)),
                    ms(percentile(&step, 99.0))
                )
            })
            .collect();
        println!("{clients:>7} {rate:>10.1}   {}", columns.join(" "));
    }
}
