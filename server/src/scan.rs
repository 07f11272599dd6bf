//! Finishing scans: the pipelined scan's verdict, rescans from the stored blob when the scanner
//! was unavailable (with backoff, never publishing unscanned), and adapters from storage readers
//! to the scanner's `ByteSource`.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use scanner::{ByteSource, NotScannedReason, ScanError, Verdict};
use storage::model::{FileTransferId, FileTransferStatus, ScanOutcome};
use storage::{BlobRange, BlobTail};

use crate::app::App;

/// Reads an upload while it is written.
#[derive(Debug)]
pub struct TailSource(pub BlobTail);

impl ByteSource for TailSource {
    async fn next_chunk(&mut self, max: usize) -> io::Result<Option<Bytes>> {
        self.0.next_chunk(max).await
    }
}

/// Reads a stored blob.
#[derive(Debug)]
pub struct RangeSource(pub BlobRange);

impl ByteSource for RangeSource {
    async fn next_chunk(&mut self, max: usize) -> io::Result<Option<Bytes>> {
        self.0.next_chunk(max).await
    }
}

/// A scan attempt's result.
pub type ScanResult = Result<Verdict, ScanError>;

/// Whether a verdict settles the transfer: clean, infected, or a property of the file (too
/// large). Scanner trouble does not: the file is scanned again.
fn settles(verdict: &Verdict) -> bool {
    match verdict {
        Verdict::Clean | Verdict::Infected { .. } => true,
        Verdict::NotScanned { reason } => matches!(
            reason,
            NotScannedReason::TooLarge { .. }
                | NotScannedReason::StreamLimitExceeded
                | NotScannedReason::ClamdLimits { .. }
        ),
    }
}

/// Drives a transfer in `UploadProcessing` to its scan verdict. `first` is the pipelined scan's
/// result if there was one; otherwise (or if it did not settle) the stored blob is scanned, again
/// and again with backoff while the scanner is unavailable. Persistent scanner errors that are not
/// about availability fail the transfer after a few attempts.
pub async fn finish_scan(app: Arc<App>, id: FileTransferId, first: Option<ScanResult>) {
    use std::sync::atomic::Ordering;
    // A pipelined scan was counted when it started; a rescan after a restart counts now.
    if first.is_none() {
        app.metrics.scans_in_progress.fetch_add(1, Ordering::Relaxed);
    }
    let started = std::time::Instant::now();
    finish_scan_inner(&app, id, first).await;
    app.metrics.scans_in_progress.fetch_sub(1, Ordering::Relaxed);
    app.metrics.scan_finished(started.elapsed());
}

async fn finish_scan_inner(app: &Arc<App>, id: FileTransferId, first: Option<ScanResult>) {
    const MAX_HARD_FAILURES: u32 = 3;
    let mut result = first;
    let mut attempt: u32 = 0;
    let mut hard_failures = 0;
    loop {
        let verdict = match result.take() {
            Some(r) => Verdict::from_result(r),
            None => tokio::select! {
                // Shutting down: the transfer stays in UploadProcessing and the next start
                // scans it again.
                () = app.shutdown.cancelled() => return,
                r = scan_stored(app, id) => Verdict::from_result(r),
            },
        };
        if settles(&verdict) {
            let outcome = match verdict {
                Verdict::Clean => ScanOutcome::Clean,
                Verdict::Infected { signature } => ScanOutcome::Infected { signature },
                Verdict::NotScanned { reason } => {
                    ScanOutcome::Unscannable { reason: reason.to_string() }
                }
            };
            tracing::info!(transfer = %id, ?outcome, "scan finished");
            let at = app.now();
            let recorded = app
                .storage
                .update_transfer(id, move |t| {
                    t.processing_note = None;
                    Ok(t.record_scan(&outcome, at)?)
                })
                .await;
            if let Err(e) = recorded {
                tracing::warn!(transfer = %id, error = %e, "recording the scan failed");
            }
            return;
        }
        let Verdict::NotScanned { reason } = verdict else { unreachable!("settled above") };
        if !reason.is_transient() {
            hard_failures += 1;
            if hard_failures >= MAX_HARD_FAILURES {
                let reason = reason.to_string();
                let at = app.now();
                let _ = app
                    .storage
                    .update_transfer(id, move |t| {
                        Ok(t.record_scan(&ScanOutcome::Unscannable { reason: reason.clone() }, at)?)
                    })
                    .await;
                return;
            }
        }
        let delay = app.scan_retry_delay(attempt);
        attempt = attempt.saturating_add(1);
        tracing::warn!(transfer = %id, %reason, ?delay, "scan not possible; retrying");
        let note = format!(
            "Waiting for the malware scanner: {reason}. Retrying in {}s.",
            delay.as_secs().max(1)
        );
        let still_processing = app
            .storage
            .update_transfer(id, move |t| Ok(t.note_processing(Some(note.clone()))?))
            .await
            .is_ok_and(|(t, ())| t.status() == FileTransferStatus::UploadProcessing);
        if !still_processing {
            return;
        }
        tokio::select! {
            () = app.shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

async fn scan_stored(app: &App, id: FileTransferId) -> ScanResult {
    let transfer = app
        .storage
        .transfer(id)
        .ok()
        .flatten()
        .and_then(|t| t.content)
        .ok_or_else(|| ScanError::Source(io::Error::other("the transfer's file is gone")))?;
    let range = app
        .storage
        .read_blob(&transfer.blake3, 0, None)
        .await
        .map_err(|e| ScanError::Source(io::Error::other(e.to_string())))?;
    app.scanner.scan(RangeSource(range)).await
}

/// Backoff for the `attempt`th retry: 1 s doubling up to `max`.
pub fn backoff(attempt: u32, max: Duration) -> Duration {
    Duration::from_secs(1u64 << attempt.min(16)).min(max)
}
