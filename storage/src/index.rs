//! The index: the metadata port ([`crate::ports::MetadataStore`]) on one redb database, with
//! one writer.
//!
//! - [`tables`]: every table definition, with versioned names.
//! - [`writer`]: [`RedbIndex`], the single owner of write transactions. Writes are closures
//!   queued to it; it runs whatever has queued up in one transaction and one fsync (group
//!   commit), and answers each caller only after that commit is durable.
//! - [`ops`]: the port's record operations on redb tables, for read and write transactions.
//!
//! Architecture invariant: redb types never leave this module tree.

pub(crate) mod ops;
pub(crate) mod tables;
mod writer;

pub use writer::RedbIndex;
