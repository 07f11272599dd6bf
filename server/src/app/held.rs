//! Upload sessions a front-end holds between two of its requests.

use std::collections::HashMap;
use std::sync::Mutex;

use storage::model::UploadId;

/// Upload sessions a front-end holds between two of its requests: TUS keeps the live session
/// (with its scan and MD5 tails) between PATCHes, so a chunk never re-reads what came before.
/// The use cases know only that something is held for an upload; a new session for the same
/// upload, the upload's end and shutdown release it.
#[derive(Default)]
pub struct HeldSessions(Mutex<HashMap<UploadId, Box<dyn std::any::Any + Send>>>);

impl HeldSessions {
    /// Holds `session` for `upload` (replacing, and dropping, whatever was held).
    pub fn hold<T: std::any::Any + Send>(&self, upload: UploadId, session: T) {
        self.0.lock().expect("held sessions").insert(upload, Box::new(session));
    }

    /// Takes what is held for `upload`, if it is a `T` (anything else held is dropped).
    pub fn take<T: std::any::Any + Send>(&self, upload: &UploadId) -> Option<T> {
        let held = self.0.lock().expect("held sessions").remove(upload)?;
        held.downcast::<T>().ok().map(|b| *b)
    }

    /// Drops what is held for `upload`.
    pub fn release(&self, upload: &UploadId) {
        self.0.lock().expect("held sessions").remove(upload);
    }

    /// Drops everything held (shutdown).
    pub fn clear(&self) {
        self.0.lock().expect("held sessions").clear();
    }
}

impl std::fmt::Debug for HeldSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("HeldSessions").field(&self.0.lock().map(|m| m.len()).ok()).finish()
    }
}
