//! Time from `Published` to the webhook's arrival, over many transfers, on loopback.
//!
//! A server (real clamd, embedded storage, default webhook settings) and a webhook receiver
//! run in this process. A recipient subscribes to `no.altinn.broker.published`; senders
//! initialize, upload 1 KiB and let clamd scan, `FERRY_BENCH_CONCURRENCY` at a time (default
//! 8), `FERRY_BENCH_TRANSFERS` in all (default 1,000). For each delivered event the latency is
//! arrival time minus the event's `time` (the moment the status changed, before its commit),
//! so it covers the commit, the fan-out, the dispatcher and the POST.
//!
//! `cargo bench -p benches --bench webhook_latency`

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use integration_tests::{TestClamd, TestServer, payload};
use storage::model::Timestamp;

const OWNER: &str = "991825827";
const SENDER: &str = "910753614";
const RECIPIENT: &str = "986252932";
const ALL: &[&str] = &["altinn:broker.write", "altinn:broker.read", "altinn:serviceowner"];
const PUBLISHED: &str = "no.altinn.broker.published";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Microseconds since the epoch, now.
fn now_micros() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).expect("clock").as_micros() as i64
}

/// Receives webhooks: answers 200 and records (event id, latency in µs) for each published
/// event; the validation handshake is answered and ignored.
async fn receiver(samples: Arc<Mutex<Vec<(String, i64)>>>) -> String {
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: Bytes| {
            let samples = samples.clone();
            async move {
                let arrived = now_micros();
                let event: serde_json::Value = serde_json::from_slice(&body).expect("JSON event");
                if event["type"] == PUBLISHED {
                    let time = event["time"].as_str().expect("time");
                    let at = Timestamp::parse_rfc3339(time).expect("RFC 3339 time");
                    let id = event["id"].as_str().expect("id").to_owned();
                    samples.lock().expect("samples").push((id, arrived - at.as_unix_micros()));
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/hook")
}

/// Initialize, upload 1 KiB (one chunk), and return when the upload is acknowledged.
async fn send(sender: &client::Client, seed: u64) {
    let id = sender
        .initialize(client::v1::InitializeFileTransferRequest {
            file_name: format!("{seed}.bin"),
            resource_id: "bench".into(),
            senders_file_transfer_reference: seed.to_string(),
            sender: format!("0192:{SENDER}"),
            recipients: vec![format!("0192:{RECIPIENT}")],
            ..Default::default()
        })
        .await
        .expect("initialize");
    let mut data = Some(Bytes::from(payload(seed, 1024)));
    sender
        .upload_once(&id, 0, Some(1024), move || std::future::ready(Ok(data.take())), &mut |_| {})
        .await
        .expect("upload");
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(micros: i64) -> String {
    format!("{:.2} ms", micros as f64 / 1000.0)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let transfers = env_or("FERRY_BENCH_TRANSFERS", 1000);
    let concurrency = env_or("FERRY_BENCH_CONCURRENCY", 8).max(1);
    let clamd = TestClamd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    // Default webhook settings, except that the receiver is on loopback.
    let server =
        TestServer::start_in(dir.path(), &clamd.address(), 0, |c| c.webhooks.allow_loopback = true)
            .await;
    let owner = server.client(server.token(OWNER, ALL));
    owner.register_service_owner("Owner").await.expect("service owner");
    owner
        .put_resource(client::v1::PutResourceRequest {
            resource_id: "bench".into(),
            access: Some(client::v1::AccessRules {
                senders: vec![format!("0192:{SENDER}")],
                recipients: vec![format!("0192:{RECIPIENT}")],
            }),
            ..Default::default()
        })
        .await
        .expect("resource");

    let samples = Arc::new(Mutex::new(Vec::new()));
    let hook = receiver(samples.clone()).await;
    let http = reqwest::Client::new();
    let subscriptions = format!("{}/events/api/v1/subscriptions", server.url());
    let recipient_token = server.token(RECIPIENT, ALL);
    let created: serde_json::Value = http
        .post(&subscriptions)
        .bearer_auth(&recipient_token)
        .json(&serde_json::json!({
            "endPoint": hook,
            "resourceFilter": "urn:altinn:resource:bench",
            "typeFilter": PUBLISHED,
        }))
        .send()
        .await
        .expect("subscribe")
        .json()
        .await
        .expect("subscription");
    let view = format!("{subscriptions}/{}", created["id"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v: serde_json::Value = http
            .get(&view)
            .bearer_auth(&recipient_token)
            .send()
            .await
            .expect("view")
            .json()
            .await
            .expect("view JSON");
        if v["validated"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "the subscription was never validated: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let sender = server.client(server.token(SENDER, ALL));
            let next = next.clone();
            tokio::spawn(async move {
                loop {
                    let seed = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if seed >= transfers as u64 {
                        return;
                    }
                    send(&sender, seed).await;
                }
            })
        })
        .collect();
    for w in workers {
        w.await.expect("sender");
    }
    let uploaded = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(120);
    while samples.lock().expect("samples").len() < transfers {
        assert!(Instant::now() < deadline, "not every published event arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all = samples.lock().expect("samples").clone();
    let unique: std::collections::HashSet<_> = all.iter().map(|(id, _)| id.as_str()).collect();
    let mut latencies: Vec<i64> = all.iter().map(|(_, l)| *l).collect();
    latencies.sort_unstable();
    println!(
        "webhook latency, Published → arrival, {transfers} transfers ({concurrency} senders, \
         1 KiB each, real clamd; {:.1} transfers/s published):",
        transfers as f64 / uploaded.as_secs_f64()
    );
    println!(
        "  median {}  p90 {}  p99 {}  max {}  min {}  ({} deliveries, {} distinct events)",
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 90.0)),
        ms(percentile(&latencies, 99.0)),
        ms(*latencies.last().expect("samples")),
        ms(latencies[0]),
        all.len(),
        unique.len(),
    );
}
