//! The storage ports: what a backend must offer for [`crate::Storage`] to keep its invariants.
//!
//! - [`BlobStore`] (`blob.rs`): the bytes. Blobs named by their BLAKE3 digest, and resumable
//!   temporaries that become blobs by [`BlobStore::promote`]. First implementation:
//!   [`crate::LocalBlobStore`].
//! - [`MetadataStore`] (`metadata.rs`): the records. Snapshot reads and atomic write
//!   transactions, as closures over a handle with typed reads and writes of records
//!   ([`MetadataRead`], [`MetadataTxn`]). First implementation: [`crate::RedbIndex`].
//!
//! The facade holds each port as an `Arc<dyn …>`: the backend is chosen when the storage is
//! opened (configuration, not compile time), and the server stays one non-generic type. The
//! cost of dynamic dispatch is one vtable call per chunk on the byte path, where the facade
//! already hops to the blocking pool; nothing per chunk is allocated or locked that was not
//! before.
//!
//! Each contract is written on the trait's methods; the conformance suites
//! (`storage::conformance`, feature `conformance`) test them against any implementation.

pub mod blob;
pub mod metadata;

pub use blob::{BlobReader, BlobStore, FinishedTemp, ReadAt, TempBlob, TempKind, Verification};
pub use metadata::{
    BoxFuture, Counter, IndexStats, MetadataRead, MetadataStore, MetadataTxn, Reply, StoredHistory,
    WriteJob, snapshot, transact,
};
