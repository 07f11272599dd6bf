//! The downloads area's state: when each recipient last started a ranged download of each
//! transfer, so that a resumed download records one `DownloadStarted` per window.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use storage::model::{FileTransferId, Party};

/// Ranged downloads by the same recipient within this window record one `DownloadStarted`.
pub const DOWNLOAD_DEBOUNCE: Duration = Duration::from_secs(300);

/// Ranged downloads seen in the last [`DOWNLOAD_DEBOUNCE`], by transfer and recipient.
#[derive(Debug, Default)]
pub(super) struct DownloadDebounce(Mutex<HashMap<(FileTransferId, Party), Instant>>);

impl DownloadDebounce {
    /// Whether a ranged download of `id` by `org` now is the first in its window (and so
    /// records `DownloadStarted`).
    pub(super) fn first_in_window(&self, id: FileTransferId, org: &Party) -> bool {
        let mut seen = self.0.lock().expect("debounce map poisoned");
        let now = Instant::now();
        seen.retain(|_, at| now.duration_since(*at) < DOWNLOAD_DEBOUNCE);
        match seen.entry((id, org.clone())) {
            Entry::Occupied(_) => false,
            Entry::Vacant(slot) => {
                slot.insert(now);
                true
            }
        }
    }
}
