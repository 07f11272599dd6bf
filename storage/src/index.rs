//! The index: every record of Ferry in one redb database, with one writer.
//!
//! - [`tables`]: every table definition, with versioned names.
//! - [`writer`]: the single owner of write transactions. Writes are closures queued to it; it
//!   runs whatever has queued up in one transaction and one fsync (group commit), and answers
//!   each caller only after that commit is durable.
//! - [`ops`]: the record-level operations the storage facade composes, each run inside one
//!   transaction, so a multi-step state change is all-or-nothing.
//!
//! Architecture invariant: redb types never leave this module tree.

pub(crate) mod ops;
pub(crate) mod tables;
mod writer;

pub use writer::IndexStats;
pub(crate) use writer::{Index, IndexOptions};
