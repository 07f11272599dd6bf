//! The storage crate's error type.

use std::io;

use crate::model::{IdError, ResourceError, TransferError};

/// A storage operation failed. Domain rule violations carry the model's error so the server can
/// map them to Altinn's codes; engine failures are wrapped, never re-exported.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The metadata engine (redb, PostgreSQL) failed.
    #[error("index: {0}")]
    Index(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Stored data could not be decoded or contradicts itself.
    #[error("corrupt index record: {0}")]
    Corrupt(String),
    /// No such record.
    #[error("{0} not found")]
    NotFound(String),
    /// A record with this key exists already.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// The state machine refused the change.
    #[error(transparent)]
    Transfer(#[from] TransferError),
    /// The resource configuration was rejected.
    #[error(transparent)]
    Resource(#[from] ResourceError),
    /// An identifier was malformed.
    #[error(transparent)]
    Id(#[from] IdError),
    /// The storage is shutting down.
    #[error("storage is shut down")]
    Closed,
    /// The data directory's filesystem is full (ENOSPC or a quota), or a write would have gone
    /// below [`crate::StorageOptions::min_free_bytes`]. Nothing of the refused write is visible.
    #[error("out of storage space while {context}")]
    StorageFull {
        /// What was being done.
        context: &'static str,
    },
    /// The metadata database cannot be reached (connection refused or lost, the server
    /// restarting); nothing of the refused call committed unless it says the outcome is
    /// unknown. Try again in a moment.
    #[error("the metadata database is unavailable: {0}")]
    Unavailable(String),
    /// The index is being reopened after an I/O failure; try again in a moment.
    #[error("the index is recovering from an I/O error")]
    Recovering,
}

/// Storage results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(context: &'static str) -> impl FnOnce(io::Error) -> Self {
        move |source| {
            if is_out_of_space(&source) {
                Self::StorageFull { context }
            } else {
                Self::Io { context, source }
            }
        }
    }

    /// Whether this is [`Error::StorageFull`].
    pub fn is_storage_full(&self) -> bool {
        matches!(self, Self::StorageFull { .. })
    }
}

fn is_out_of_space(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded)
}

/// redb's engine error, with a full disk told apart from the rest.
fn from_redb_storage(e: redb::StorageError) -> Error {
    match e {
        redb::StorageError::Io(io) if is_out_of_space(&io) => {
            Error::StorageFull { context: "committing to the index" }
        }
        other => Error::Index(Box::new(other)),
    }
}

macro_rules! wrap_redb {
    ($($ty:ty),*) => {$(
        impl From<$ty> for Error {
            fn from(e: $ty) -> Self {
                Self::Index(Box::new(e))
            }
        }
    )*};
}

wrap_redb!(redb::Error, redb::DatabaseError);

impl From<redb::StorageError> for Error {
    fn from(e: redb::StorageError) -> Self {
        from_redb_storage(e)
    }
}

/// The redb errors that wrap an engine error: unwrapped, so a full disk is seen as one.
macro_rules! wrap_redb_storage {
    ($($ty:ident),*) => {$(
        impl From<redb::$ty> for Error {
            fn from(e: redb::$ty) -> Self {
                match e {
                    redb::$ty::Storage(inner) => from_redb_storage(inner),
                    other => Self::Index(Box::new(other)),
                }
            }
        }
    )*};
}

wrap_redb_storage!(TransactionError, TableError, CommitError);

impl From<postcard::Error> for Error {
    fn from(e: postcard::Error) -> Self {
        Self::Corrupt(e.to_string())
    }
}
