//! Ferry's malware scanner: a clamd client.
//!
//! - [`Clamd`]: PING and VERSION (through the `clamav-client` crate, which is correct for them)
//!   and INSTREAM, implemented here because the crate's version reads the reply only after the
//!   whole stream is written: when clamd refuses an over-long stream it replies and closes, the
//!   crate sees a broken pipe and loses the reply. Ours sends and listens at the same time.
//! - [`ByteSource`]: what a scan reads. The server hands it a reader that tails the upload's
//!   temporary file, so the scan starts with the first chunk and runs beside the upload; a slow
//!   clamd slows only the scan, never the upload, and memory stays at one chunk.
//! - [`SegmentPlan`], [`SegmentInput`], [`Clamd::scan_segments`]: a file longer than clamd's
//!   stream limit scanned as overlapping segments, in parallel, resumable segment by segment.
//! - [`HashDb`]: the whole-file hash signatures (`.hdb`, `.hsb`) of clamd's database, which no
//!   segment can match, checked by Ferry for files too large for one stream.
//! - [`Clamd::scan_members`]: a ZIP/ZIP64, tar or gzip file too large for one stream, scanned
//!   member by member (each member segmented if it is itself too large).
//! - [`Verdict`]: clean, infected, or not scanned with a reason. Only `Clean` may lead to
//!   publication, and no error ever becomes `Clean`.
//!
//! Architecture invariant: this crate knows nothing of storage, gRPC or HTTP.

mod clamd;
mod containers;
mod hashdb;
mod segments;
mod source;
mod verdict;

pub use clamd::{CLAMD_MAX_STREAM, Clamd, ClamdAddress, ClamdOptions, MIN_CHUNK};
pub use containers::{ArchiveKind, MembersVerdict, detect as detect_archive};
pub use hashdb::{FileDigests, HashDb, HashSignatures, Needed};
pub use segments::{
    Limited, MAX_BODY_PATTERN, MIN_SEGMENT, SEGMENT_OVERLAP, SegmentInput, SegmentPlan,
    SegmentVerdict, SegmentedVerdict,
};
pub use source::{ByteSource, ChannelSource};
pub use verdict::{NotScannedReason, ScanError, Verdict};
