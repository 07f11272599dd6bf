//! Life-cycle jobs (contract §10.3, §11): expiry, purge after the grace period, uploads stuck in
//! `UploadStarted`, scans that do not finish. The schedule lives in redb and is written in the
//! same transaction as the change that calls for a job, so it survives restarts; each job runs
//! in one transaction with the change it makes (and the events that change causes). Time is an
//! argument: the server passes the clock, tests move it.

use std::sync::Arc;
use std::time::Duration;

use storage::model::*;
use storage::{Job, JobKind};

use crate::app::App;

/// Status text of a transfer failed because its upload stalled (Altinn's).
pub const STUCK_TEXT: &str =
    "File transfer was stuck in UploadStarted as it failed upload mid-request.";

/// Runs every job due at `now`; returns how many ran.
pub async fn run_due(app: &Arc<App>, now: Timestamp) -> anyhow::Result<usize> {
    let mut n = 0;
    loop {
        let jobs = app.storage.due_jobs(now, 256)?;
        if jobs.is_empty() {
            return Ok(n);
        }
        for job in jobs {
            run(app, job, now).await?;
            n += 1;
        }
    }
}

async fn run(app: &Arc<App>, job: Job, now: Timestamp) -> anyhow::Result<()> {
    let id = job.transfer;
    match job.kind {
        JobKind::Expiry => {
            app.storage
                .run_job(job, move |t, resource| {
                    // In the grace period after all confirmed, the grace purge does it.
                    let grace_pending = t.status() == FileTransferStatus::AllConfirmedDownloaded
                        && resource
                            .is_some_and(|r| r.purge_file_transfer_after_all_recipients_confirmed);
                    if t.status() != FileTransferStatus::Purged && !grace_pending {
                        t.purge(now)?;
                    }
                    Ok(None)
                })
                .await?;
            forget_upload(app, id).await;
        }
        JobKind::GracePurge => {
            app.storage
                .run_job(job, move |t, _| {
                    if t.status() != FileTransferStatus::Purged {
                        t.purge(now)?;
                    }
                    Ok(None)
                })
                .await?;
        }
        JobKind::StuckUpload => stuck_upload(app, job, now).await?,
        JobKind::ScanTimeout => {
            let timeout = app.lifecycle.scan_timeout;
            app.storage
                .run_job(job, move |t, _| {
                    if t.status() == FileTransferStatus::UploadProcessing && t.use_virus_scan && !t.scan_passed {
                        t.processing_note = None;
                        t.fail(
                            format!(
                                "Malware scan failed: the scan did not complete within {} minutes; the file was not published",
                                timeout.as_secs() / 60
                            ),
                            now,
                        )?;
                    }
                    Ok(None)
                })
                .await?;
        }
    }
    Ok(())
}

/// Fails an upload that brought nothing for `stuck_upload_after`, or moves its job to that time
/// after its last sign of life.
async fn stuck_upload(app: &Arc<App>, job: Job, now: Timestamp) -> anyhow::Result<()> {
    let id = job.transfer;
    let stuck_after = app.lifecycle.stuck_upload_after;
    // The last sign of life: the upload's last checkpoint, else when the upload started.
    let last_activity = app.storage.upload(&UploadId::for_transfer(id))?.map(|u| u.updated);
    app.storage
        .run_job(job, move |t, _| {
            if t.status() != FileTransferStatus::UploadStarted {
                return Ok(None);
            }
            let since = last_activity.unwrap_or(job.due);
            if now.saturating_duration_since(since) < stuck_after {
                return Ok(Some(since.saturating_add(stuck_after)));
            }
            t.fail(STUCK_TEXT, now)?;
            Ok(None)
        })
        .await?;
    if app.storage.transfer(id)?.is_some_and(|t| t.status() == FileTransferStatus::Failed) {
        forget_upload(app, id).await;
    }
    Ok(())
}

/// Drops what is left of an upload (its temporary, a parked TUS session).
async fn forget_upload(app: &Arc<App>, id: FileTransferId) {
    let upload_id = UploadId::for_transfer(id);
    app.held.release(&upload_id);
    if let Err(e) = app.storage.abort_upload(&upload_id).await {
        tracing::warn!(transfer = %id, error = %e, "removing an upload's temporary failed");
    }
}

/// Runs due jobs every `interval` until shutdown.
pub async fn run_forever(app: Arc<App>, interval: Duration) {
    loop {
        if let Err(e) = run_due(&app, app.now()).await {
            tracing::error!(error = %e, "life-cycle jobs failed; retrying");
        }
        tokio::select! {
            () = app.shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}
