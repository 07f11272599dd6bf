//! Prometheus metrics at `/metrics`, from a small registry of atomics (no metrics framework: the
//! set is fixed and small).
//!
//! - `ferry_http_requests_total{route,status}`: every request, by matched route template (gRPC:
//!   the method path) and HTTP status;
//! - `ferry_upload_bytes_total`, `ferry_download_bytes_total`: payload bytes in and out;
//! - `ferry_uploads_in_progress`: live upload sessions;
//! - `ferry_scans_in_progress` (the scan queue) and `ferry_scan_duration_seconds` (histogram);
//! - `ferry_scan_segments_total`: INSTREAM sessions run to a verdict (one per segment);
//! - `ferry_file_transfers{status}`: transfers by current status, counted at scrape time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

const SCAN_BUCKETS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0];

/// The registry.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    /// Upload payload bytes received.
    pub upload_bytes: AtomicU64,
    /// Download payload bytes sent.
    pub download_bytes: AtomicU64,
    /// Live upload sessions.
    pub uploads_in_progress: AtomicI64,
    /// Scans queued or running.
    pub scans_in_progress: AtomicI64,
    /// INSTREAM sessions run to a verdict: one per small file, one per segment of a large one.
    pub scan_segments: AtomicU64,
    scan_buckets: [AtomicU64; SCAN_BUCKETS.len()],
    scan_count: AtomicU64,
    scan_sum_micros: AtomicU64,
}

impl Metrics {
    /// Counts a request.
    pub fn request(&self, route: &str, status: u16) {
        let mut requests = self.requests.lock().expect("metrics lock");
        *requests.entry((route.to_owned(), status)).or_default() += 1;
    }

    /// Records a finished scan's duration.
    pub fn scan_finished(&self, duration: Duration) {
        let secs = duration.as_secs_f64();
        for (bucket, bound) in self.scan_buckets.iter().zip(SCAN_BUCKETS) {
            if secs <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.scan_count.fetch_add(1, Ordering::Relaxed);
        self.scan_sum_micros.fetch_add(duration.as_micros() as u64, Ordering::Relaxed);
    }

    /// The text exposition format; `transfers` are counts by status name.
    pub fn render(&self, transfers: &BTreeMap<&'static str, u64>) -> String {
        let mut out = String::new();
        out.push_str("# HELP ferry_http_requests_total Requests by route and HTTP status.\n");
        out.push_str("# TYPE ferry_http_requests_total counter\n");
        for ((route, status), n) in self.requests.lock().expect("metrics lock").iter() {
            let route = route.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(
                out,
                "ferry_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
        };
        let gauge = |out: &mut String, name: &str, help: &str, value: i64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
        };
        counter(
            &mut out,
            "ferry_upload_bytes_total",
            "Upload payload bytes received.",
            self.upload_bytes.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "ferry_download_bytes_total",
            "Download payload bytes sent.",
            self.download_bytes.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "ferry_uploads_in_progress",
            "Live upload sessions.",
            self.uploads_in_progress.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "ferry_scans_in_progress",
            "Scans queued or running.",
            self.scans_in_progress.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "ferry_scan_segments_total",
            "INSTREAM sessions run to a verdict: one per file within clamd's limit, one per segment of a larger one.",
            self.scan_segments.load(Ordering::Relaxed),
        );
        out.push_str(
            "# HELP ferry_scan_duration_seconds Time from the start of a scan to its verdict.\n",
        );
        out.push_str("# TYPE ferry_scan_duration_seconds histogram\n");
        for (bucket, bound) in self.scan_buckets.iter().zip(SCAN_BUCKETS) {
            let _ = writeln!(
                out,
                "ferry_scan_duration_seconds_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.scan_count.load(Ordering::Relaxed);
        let _ = writeln!(out, "ferry_scan_duration_seconds_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "ferry_scan_duration_seconds_sum {}",
            self.scan_sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "ferry_scan_duration_seconds_count {count}");
        out.push_str("# HELP ferry_file_transfers File transfers by current status.\n");
        out.push_str("# TYPE ferry_file_transfers gauge\n");
        for (status, n) in transfers {
            let _ = writeln!(out, "ferry_file_transfers{{status=\"{status}\"}} {n}");
        }
        out
    }
}
