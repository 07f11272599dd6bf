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
    /// The index (redb) failed.
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
}

/// Storage results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(context: &'static str) -> impl FnOnce(io::Error) -> Self {
        move |source| Self::Io { context, source }
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

wrap_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

impl From<postcard::Error> for Error {
    fn from(e: postcard::Error) -> Self {
        Self::Corrupt(e.to_string())
    }
}
