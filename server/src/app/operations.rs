//! What operators look at: the transfers that failed recently, and for whom.
//!
//! **Who sees which failure**: a caller sees a failed transfer if it sent it (`broker.write`), or
//! if the transfer is on a resource its organisation owns (`serviceowner`); never another
//! party's transfer on another party's resource. A service owner sees the sender, the time and
//! the reason (what it needs to help or to fix the resource), not the file's name: that is the
//! sender's and its recipients' business.

use storage::model::*;

use super::context::*;
use crate::auth::{Caller, SCOPE_SERVICE_OWNER, SCOPE_WRITE};

/// How many failures the list shows at most.
pub const MAX_RECENT_FAILURES: usize = 100;
/// How far back the list looks: this many of the latest events (a failure is one event).
pub const FAILURE_LOOKBACK_EVENTS: u64 = 20_000;

/// A transfer that ended `Failed` (its `UploadFailed` event).
#[derive(Debug, Clone)]
pub struct Failure {
    /// The transfer.
    pub transfer: FileTransferId,
    /// Its resource.
    pub resource: ResourceId,
    /// Who sent it.
    pub sender: Party,
    /// Its file name: shown to the sender only.
    pub file_name: Option<String>,
    /// When it failed.
    pub at: Timestamp,
    /// Why (the status text: the scanner's verdict, the checksum mismatch, the stall).
    pub reason: String,
}

impl App {
    /// The transfers that failed most recently, newest first, at most `limit`
    /// ([`MAX_RECENT_FAILURES`] at most), among the last [`FAILURE_LOOKBACK_EVENTS`] events,
    /// that the caller may see (see the module's rule).
    pub fn recent_failures(&self, caller: &Caller, limit: usize) -> Result<Vec<Failure>> {
        require_scope(caller, &[SCOPE_SERVICE_OWNER, SCOPE_WRITE])?;
        let org = caller_org(caller)?;
        let sent_by_caller = caller.has_any_scope(&[SCOPE_WRITE]);
        let owned: Vec<ResourceId> = if caller.has_any_scope(&[SCOPE_SERVICE_OWNER]) {
            let all = self.storage.resources()?;
            all.into_iter().filter(|r| r.service_owner == org).map(|r| r.id).collect()
        } else {
            Vec::new()
        };
        let limit = limit.clamp(1, MAX_RECENT_FAILURES);
        let last = self.storage.last_event_seq()?;
        let floor = last.saturating_sub(FAILURE_LOOKBACK_EVENTS);
        let mut out = Vec::new();
        let mut high = last;
        // Backwards through the log a page at a time, newest first.
        while high > floor && out.len() < limit {
            let low = high.saturating_sub(1000).max(floor);
            let events = self.storage.events_after(low, (high - low) as usize)?;
            for e in events.iter().rev().filter(|e| e.kind == EventType::UploadFailed) {
                let sent = sent_by_caller && e.party == org;
                if !(sent || owned.contains(&e.resource)) {
                    continue;
                }
                // Purged since: nothing left to show.
                let Some(t) = self.storage.transfer(e.transfer)? else { continue };
                let reason = t
                    .status_history
                    .iter()
                    .rev()
                    .find(|s| s.status == FileTransferStatus::Failed)
                    .map_or_else(|| t.status_text().to_owned(), |s| s.display_text().to_owned());
                out.push(Failure {
                    transfer: t.id,
                    resource: t.resource_id,
                    file_name: (t.sender == org && sent_by_caller).then_some(t.file_name),
                    sender: t.sender,
                    at: e.at,
                    reason,
                });
                if out.len() == limit {
                    break;
                }
            }
            high = low;
        }
        Ok(out)
    }
}
