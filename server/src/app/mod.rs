//! The use cases, independent of transport: gRPC handlers (and the REST facade) unpack a
//! request, call one of these, and map the result. No business rule lives anywhere else.
//!
//! One file per area, each an `impl App` block over the shared [`App`] (`context`):
//! [`resources`], [`transfers`], [`uploads`] (and `held`), [`downloads`] (and `debounce`),
//! [`scanning`], [`lifecycle`], [`events`], [`webhooks`], [`operations`]. They know `storage`,
//! `scanner`, `auth::Caller` and the model — never a front-end or a transport
//! (`scripts/check-modules` fails the build's tests if one does).

mod context;
mod debounce;
pub mod downloads;
pub mod events;
mod held;
pub mod lifecycle;
pub mod operations;
pub mod resources;
pub mod scanning;
pub mod transfers;
pub mod uploads;
pub mod webhooks;

pub use context::{App, AppOptions, Readiness};
pub use downloads::{DOWNLOAD_DEBOUNCE, Download};
pub use held::HeldSessions;
pub use transfers::{
    InitializeRequest, RecipientView, SearchQuery, StatisticsRow, checksum_of, recipient_views,
};
pub use uploads::{CHECKPOINT_BYTES, FRAME_BUFFER, STORAGE_FULL_TEXT, UploadResult, UploadSession};
