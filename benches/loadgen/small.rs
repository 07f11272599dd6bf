//! Scenario 5, small transfers, the whole life cycle: initialize, upload 4 KiB, scan and
//! publish, download, confirm, with 1, 16 and 64 concurrent clients.
//!
//! Each client runs complete life cycles back to back, on its own connections; the sender
//! learns of `Published` from one Watch stream shared by all clients (as an integrator would),
//! not by polling. Reported: life cycles per second and p50/p99 of each step.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::ferry::{FerryProcess, RECIPIENT, SCANNED, SENDER};
use crate::report::{Report, percentile};

pub(crate) const SIZE: usize = 4096;
const STEPS: [&str; 5] = ["initialize", "upload", "publish", "download", "confirm"];

/// Transfers waiting for their `Published` event, and those published before anyone waited.
#[derive(Default)]
pub(crate) struct Published {
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
pub(crate) async fn follow(sender: client::Client, published: Arc<Mutex<Published>>) {
    use client::v1::watch_response::Message;
    let request = client::v1::WatchRequest {
        after: "0".into(),
        resource_id: SCANNED.into(),
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
pub(crate) async fn life_cycle(
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
    let id = crate::ferry::initialize(sender, SCANNED, "small.bin").await.expect("initialize");
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

/// Runs `transfers` life cycles at each level of `clients`.
pub(crate) async fn run(settings: &crate::Settings, report: &mut Report) -> anyhow::Result<()> {
    let server =
        FerryProcess::start(&settings.ferry, &settings.scratch, &settings.clamd_address).await?;
    let published = Arc::new(Mutex::new(Published::default()));
    tokio::spawn(follow(server.client(SENDER), published.clone()));
    let transfers = settings.small_transfers;
    for &clients in &settings.small_clients {
        let data = benches::payload_chunks(clients as u64, SIZE, SIZE).remove(0);
        let scans = crate::baseline::clamd_small_scans(&settings.clamd, data, transfers, clients);
        report.add(
            &format!("ceiling.clamd_4KiB_scans_{clients}_conns"),
            "scans/s",
            vec![scans.await?],
            None,
        );
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let started = Instant::now();
        let workers: Vec<_> = (0..clients)
            .map(|_| {
                let sender = server.client(SENDER);
                let recipient = server.client(RECIPIENT);
                let (next, published) = (next.clone(), published.clone());
                tokio::spawn(async move {
                    let mut times = Vec::new();
                    loop {
                        let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if n >= transfers {
                            return times;
                        }
                        let seed = (n as u64) ^ ((clients as u64) << 32);
                        let data = benches::payload_chunks(seed, SIZE, SIZE).remove(0);
                        times.push(life_cycle(&sender, &recipient, &published, data).await);
                    }
                })
            })
            .collect();
        let mut all = Vec::new();
        for w in workers {
            all.extend(w.await?);
        }
        let rate = transfers as f64 / started.elapsed().as_secs_f64();
        let ceiling = format!("ceiling.clamd_4KiB_scans_{clients}_conns");
        report.add(&format!("small.{clients}_clients"), "cycles/s", vec![rate], Some(&ceiling));
        let mut worst_call_p99 = 0.0f64;
        for (i, step) in STEPS.iter().enumerate() {
            let mut times: Vec<u64> = all.iter().map(|t| t[i]).collect();
            times.sort_unstable();
            let ms = |us: u64| us as f64 / 1000.0;
            let (p50, p99) = (ms(percentile(&times, 50.0)), ms(percentile(&times, 99.0)));
            report.add(&format!("small.{clients}_clients.{step}_p50"), "ms", vec![p50], None);
            report.add(&format!("small.{clients}_clients.{step}_p99"), "ms", vec![p99], None);
            if *step != "publish" {
                worst_call_p99 = worst_call_p99.max(p99);
            }
        }
        if clients == *settings.small_clients.iter().max().unwrap_or(&clients) {
            let target = format!("small transfers at {clients} clients ≥ 2,000 cycles/s");
            report.check(target, rate, 2000.0, true);
            let target = format!("small transfers at {clients} clients: worst call p99 < 50 ms");
            report.check(target, worst_call_p99, 50.0, false);
        }
    }
    Ok(())
}
