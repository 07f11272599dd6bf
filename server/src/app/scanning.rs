//! Finishing scans: the pipelined scan's verdict, rescans from the stored blob when the scanner
//! was unavailable (with backoff, never publishing unscanned, resuming at the first segment not
//! yet found clean), and adapters from storage readers to the scanner's `ByteSource` and
//! `SegmentInput`.

use std::collections::BTreeSet;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use scanner::{
    ByteSource, NotScannedReason, ScanError, SegmentInput, SegmentVerdict, SegmentedVerdict,
    Verdict,
};
use storage::model::{FileTransferId, FileTransferStatus, ScanOutcome, StoredContent};
use storage::{BlobRange, BlobTail, Digest, ScanProgress, Storage};
use tokio::sync::{mpsc, oneshot};

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

/// An upload's segments while it is written: segment `i` follows the upload with its own tail
/// from its first byte, once the upload has gone past the end of segment `i − 1`.
#[derive(Debug)]
pub struct TailInput(pub BlobTail);

impl SegmentInput for TailInput {
    type Source = TailSource;

    async fn open(
        &self,
        start: u64,
        _len: u64,
        needed_past: Option<u64>,
    ) -> io::Result<Option<TailSource>> {
        let mut tail = self.0.fork_at(start);
        if let Some(past) = needed_past
            && !tail.wait_past(past).await?
        {
            return Ok(None);
        }
        Ok(Some(TailSource(tail)))
    }
}

/// A stored blob's segments.
#[derive(Debug)]
pub struct StoredInput {
    storage: Storage,
    digest: Digest,
    size: u64,
}

impl SegmentInput for StoredInput {
    type Source = RangeSource;

    async fn open(
        &self,
        start: u64,
        len: u64,
        needed_past: Option<u64>,
    ) -> io::Result<Option<RangeSource>> {
        if needed_past.is_some_and(|past| self.size <= past) {
            return Ok(None);
        }
        let range = self
            .storage
            .read_blob(&self.digest, start, Some(len))
            .await
            .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(Some(RangeSource(range)))
    }
}

/// Scans transfer `id`'s file as `input` reads it (one stream, or segments if it is longer than
/// clamd's limit), skipping the segments in `skip` (found clean before) and telling `progress`
/// each segment found clean.
pub async fn scan_input(
    app: &App,
    id: FileTransferId,
    input: &impl SegmentInput,
    skip: &BTreeSet<u64>,
    progress: Option<&mpsc::UnboundedSender<u64>>,
) -> SegmentedVerdict {
    use std::sync::atomic::Ordering;
    let segments = &app.metrics.scan_segments;
    let outcome = app
        .scanner
        .scan_file(input, skip, |s: &SegmentVerdict| {
            segments.fetch_add(1, Ordering::Relaxed);
            if let Some(progress) = progress
                && s.verdict.is_clean()
            {
                let _ = progress.send(s.index);
            }
            if s.index > 0 || !s.verdict.is_clean() {
                tracing::debug!(transfer = %id, segment = s.index, verdict = ?s.verdict, "segment scanned");
            }
        })
        .await;
    if outcome.segments.is_some_and(|n| n > 1) {
        tracing::info!(transfer = %id, segments = ?outcome.segments, verdict = ?outcome.verdict, "segmented scan");
    }
    outcome
}

/// Records the segments a scan finds clean (the indices sent to the returned channel) in the
/// index as they come, once the file is known (sent to the returned `oneshot`: a pipelined scan's
/// segments count only if the upload completes). Nothing is recorded for a file of one segment:
/// there is nothing to resume. Ends when every sender is gone, after writing what they sent.
pub fn record_progress(
    app: &Arc<App>,
    id: FileTransferId,
) -> (mpsc::UnboundedSender<u64>, oneshot::Sender<StoredContent>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<u64>();
    let (file_tx, file_rx) = oneshot::channel::<StoredContent>();
    let Some(plan) = app.scanner.segment_plan() else { return (tx, file_tx) };
    let task_app = app.clone();
    app.spawn(async move {
        let Ok(file) = file_rx.await else { return };
        if file.size <= plan.segment_len() {
            return;
        }
        while let Some(first) = rx.recv().await {
            let mut clean = BTreeSet::from([first]);
            while let Ok(i) = rx.try_recv() {
                clean.insert(i);
            }
            let progress = ScanProgress {
                blob: file.blake3,
                segment_len: plan.segment_len(),
                overlap: plan.overlap(),
                clean,
            };
            if let Err(e) = task_app.storage.record_scan_progress(id, progress).await {
                tracing::warn!(transfer = %id, error = %e, "recording scan progress failed");
            }
        }
    });
    (tx, file_tx)
}

/// Segments of transfer `id`'s file (`blob`) recorded clean by an earlier scan, if they were cut
/// as the scanner cuts them now.
fn recorded_clean(app: &App, id: FileTransferId, blob: &Digest) -> BTreeSet<u64> {
    let (Some(plan), Ok(Some(progress))) =
        (app.scanner.segment_plan(), app.storage.scan_progress(id))
    else {
        return BTreeSet::new();
    };
    if progress.blob == *blob
        && (progress.segment_len, progress.overlap) == (plan.segment_len(), plan.overlap())
    {
        progress.clean
    } else {
        BTreeSet::new()
    }
}

/// The pipelined scan's outcome when its task failed (panicked or was cancelled).
pub fn lost_scan(e: impl std::fmt::Display) -> SegmentedVerdict {
    SegmentedVerdict::not_scanned(ScanError::Source(io::Error::other(e.to_string())).into())
}

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
/// and again with backoff while the scanner is unavailable, each time only the segments not yet
/// found clean. Persistent scanner errors that are not about availability fail the transfer
/// after a few attempts.
pub async fn finish_scan(app: Arc<App>, id: FileTransferId, first: Option<SegmentedVerdict>) {
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

async fn finish_scan_inner(app: &Arc<App>, id: FileTransferId, first: Option<SegmentedVerdict>) {
    const MAX_HARD_FAILURES: u32 = 3;
    let mut result = first;
    let mut attempt: u32 = 0;
    let mut hard_failures = 0;
    // Segments found clean so far (recorded before a restart too): a rescan skips them.
    let mut clean = match (&result, app.storage.transfer(id).ok().flatten().and_then(|t| t.content))
    {
        (None, Some(content)) => recorded_clean(app, id, &content.blake3),
        _ => BTreeSet::new(),
    };
    if !clean.is_empty() {
        tracing::info!(transfer = %id, clean = ?clean, "resuming a segmented scan");
    }
    loop {
        if app.shutdown.is_cancelled() {
            // The transfer stays in UploadProcessing; the next start resumes its scan.
            return;
        }
        let outcome = match result.take() {
            Some(outcome) => outcome,
            None => tokio::select! {
                // Shutting down: the transfer stays in UploadProcessing and the next start
                // scans it again.
                () = app.shutdown.cancelled() => return,
                outcome = scan_stored(app, id, &clean) => outcome,
            },
        };
        clean.extend(outcome.clean.iter().copied());
        let (verdict, note) = match outcome.verdict {
            Verdict::Clean => tokio::select! {
                () = app.shutdown.cancelled() => return,
                checked = whole_file_checks(app, id, outcome.segments) => checked,
            },
            verdict => (verdict, None),
        };
        if settles(&verdict) {
            return record_verdict(app, id, verdict, note).await;
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
        if !wait_for_scanner(app, id, &reason, delay).await {
            return;
        }
    }
}

/// Every segment is clean: a file too long for one stream must also pass the whole-file hash
/// signatures, which no segment can match, and an archive's members are scanned one by one. The
/// verdict, and a note for the transfer's history (members that could not be scanned).
async fn whole_file_checks(
    app: &Arc<App>,
    id: FileTransferId,
    segments: Option<u64>,
) -> (Verdict, Option<String>) {
    match check_hash_signatures(app, id).await {
        Verdict::Clean => check_members(app, id, segments).await,
        verdict => (verdict, None),
    }
}

/// Records a settled verdict: `UploadProcessing → Published` (or `Failed`).
async fn record_verdict(app: &App, id: FileTransferId, verdict: Verdict, note: Option<String>) {
    let outcome = match verdict {
        Verdict::Clean => match note {
            Some(note) => ScanOutcome::CleanNoted { note },
            None => ScanOutcome::Clean,
        },
        Verdict::Infected { signature } => ScanOutcome::Infected { signature },
        Verdict::NotScanned { reason } => ScanOutcome::Unscannable { reason: reason.to_string() },
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
}

/// The scanner could not scan now: notes why on the transfer (its status text says what it
/// waits for) and sleeps `delay`. Whether to try again (not if the transfer left
/// `UploadProcessing` meanwhile, or the server is shutting down).
async fn wait_for_scanner(
    app: &App,
    id: FileTransferId,
    reason: &scanner::NotScannedReason,
    delay: std::time::Duration,
) -> bool {
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
        return false;
    }
    tokio::select! {
        () = app.shutdown.cancelled() => false,
        () = tokio::time::sleep(delay) => true,
    }
}

async fn scan_stored(app: &Arc<App>, id: FileTransferId, skip: &BTreeSet<u64>) -> SegmentedVerdict {
    let Some(content) = app.storage.transfer(id).ok().flatten().and_then(|t| t.content) else {
        return lost_scan("the transfer's file is gone");
    };
    let input =
        StoredInput { storage: app.storage.clone(), digest: content.blake3, size: content.size };
    let (progress, file) = record_progress(app, id);
    let _ = file.send(content);
    scan_input(app, id, &input, skip, Some(&progress)).await
}

/// The whole-file hash signature verdict for transfer `id`'s file: `Clean` for a file within one
/// stream (clamd checked its hashes itself), `Infected` if a `.hdb`/`.hsb` signature of clamd's
/// database matches, not scanned if the database cannot be read (or is not configured).
async fn check_hash_signatures(app: &App, id: FileTransferId) -> Verdict {
    let Some(content) = app.storage.transfer(id).ok().flatten().and_then(|t| t.content) else {
        return lost_scan("the transfer's file is gone").verdict;
    };
    if content.size <= app.scanner.options().max_stream_len {
        return Verdict::Clean;
    }
    let not_checked = |why: String| Verdict::NotScanned {
        reason: NotScannedReason::Failed(format!(
            "the file's whole-file hash signatures could not be checked: {why}"
        )),
    };
    let Some(db) = app.scanner.hash_db().cloned() else {
        return not_checked("[clamd] database_dir (clamd's signature directory) is not set".into());
    };
    let path = app.storage.blob_path(&content.blake3);
    let started = std::time::Instant::now();
    let found = tokio::task::spawn_blocking(move || {
        let signatures = db.current()?;
        let mut needed = signatures.needed(content.size);
        // The MD5 is usually known already (Altinn's checksum).
        needed.md5 &= content.md5.is_none();
        let mut digests = if needed.any() {
            scanner::FileDigests::compute(std::fs::File::open(path)?, needed)?
        } else {
            scanner::FileDigests::default()
        };
        digests.md5 = digests.md5.or(content.md5.map(|m| *m.as_bytes()));
        Ok::<_, io::Error>((signatures.find(content.size, &digests).map(str::to_owned), needed))
    })
    .await;
    match found {
        Ok(Ok((found, needed))) => {
            tracing::info!(transfer = %id, ?needed, elapsed = ?started.elapsed(), ?found, "whole-file hash signatures checked");
            match found {
                Some(signature) => Verdict::Infected { signature },
                None => Verdict::Clean,
            }
        }
        Ok(Err(e)) => {
            not_checked(format!("reading the signature database or the file failed: {e}"))
        }
        Err(e) => not_checked(e.to_string()),
    }
}

/// For a file too long for one stream: if it is a ZIP/ZIP64, tar or gzip archive, each member
/// scanned as its own stream (segmented if it is itself too long). Returns the verdict and what
/// the `Published` text says about how the file was scanned (`None` for a file within one
/// stream).
async fn check_members(
    app: &App,
    id: FileTransferId,
    segments: Option<u64>,
) -> (Verdict, Option<String>) {
    let Some(content) = app.storage.transfer(id).ok().flatten().and_then(|t| t.content) else {
        return (lost_scan("the transfer's file is gone").verdict, None);
    };
    let Some(plan) = app.scanner.segment_plan().filter(|p| content.size > p.segment_len()) else {
        return (Verdict::Clean, None);
    };
    let n = segments.unwrap_or_else(|| plan.count(content.size));
    let path = app.storage.blob_path(&content.blake3);
    let detect = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || scanner::detect_archive(&path)).await
    };
    let kind = match detect {
        Ok(Ok(Some(kind))) => kind,
        Ok(Ok(None)) => {
            let note = format!(
                "Scanned as {n} overlapping segments; not a ZIP, tar or gzip archive, so its content was not unpacked by Ferry."
            );
            return (Verdict::Clean, Some(note));
        }
        Ok(Err(e)) => {
            return (not_scanned(format!("reading the file to find its format failed: {e}")), None);
        }
        Err(e) => return (not_scanned(e.to_string()), None),
    };
    let started = std::time::Instant::now();
    let members = app
        .scanner
        .scan_members(&path, kind, plan, |name, member| {
            if !member.verdict.is_clean() {
                tracing::info!(transfer = %id, member = name, verdict = ?member.verdict, "archive member");
            }
        })
        .await;
    tracing::info!(transfer = %id, %kind, scanned = members.scanned, unopened = members.unopened.len(), verdict = ?members.verdict, elapsed = ?started.elapsed(), "archive members scanned");
    let plural = if members.scanned == 1 { "" } else { "s" };
    let mut note = format!(
        "Scanned as {n} overlapping segments, and member by member as a {kind} archive ({} member{plural}).",
        members.scanned
    );
    if !members.unopened.is_empty() {
        let shown: Vec<_> = members.unopened.iter().take(5).cloned().collect();
        let more = members.unopened.len().saturating_sub(shown.len());
        note.push_str(&format!(
            " Not unpacked (scanned as raw segments only): {}{}.",
            shown.join(", "),
            if more > 0 { format!(" and {more} more") } else { String::new() }
        ));
    }
    (members.verdict, Some(note))
}

fn not_scanned(why: String) -> Verdict {
    Verdict::NotScanned { reason: NotScannedReason::Failed(why) }
}

/// Backoff for the `attempt`th retry: 1 s doubling up to `max`.
pub fn backoff(attempt: u32, max: Duration) -> Duration {
    Duration::from_secs(1u64 << attempt.min(16)).min(max)
}

impl App {
    /// How long to wait before scan attempt `attempt` while the scanner is unavailable.
    pub(crate) fn scan_retry_delay(&self, attempt: u32) -> Duration {
        backoff(attempt, self.options.scan_retry_max)
    }
}
