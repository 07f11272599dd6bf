//! The metadata port on PostgreSQL (cargo feature `postgres`): [`PgIndex`].
//!
//! - [`schema`]: the tables, as versioned migrations applied at start-up.
//! - [`store`]: [`PgIndex`], with one group-committing writer and pooled snapshot readers.
//! - [`ops`]: the port's record operations as SQL statements.
//!
//! Records are stored as the same postcard bytes as in redb, beside key columns that
//! PostgreSQL indexes and orders: the rules stay in the facade, and a deployment moves between
//! the engines record for record (`ferry admin migrate`).
//!
//! Architecture invariant: `tokio-postgres` types never leave this module tree.

mod ops;
mod schema;
mod store;

pub use store::{PgIndex, PgOptions, WRITE_ATTEMPTS};

use crate::error::Error;

impl From<tokio_postgres::Error> for Error {
    /// A failure PostgreSQL reported about the statement is an engine error; anything else (the
    /// connection refused, lost or closed, the server shutting down) means the database is
    /// unreachable for now: [`Error::Unavailable`].
    fn from(e: tokio_postgres::Error) -> Self {
        use tokio_postgres::error::SqlState;
        let lost = e.is_closed()
            || std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
        let shutting_down = e.code().is_some_and(|code| {
            code.code().starts_with("08")
                || [
                    SqlState::ADMIN_SHUTDOWN,
                    SqlState::CRASH_SHUTDOWN,
                    SqlState::CANNOT_CONNECT_NOW,
                ]
                .contains(code)
        });
        let unavailable = lost || shutting_down;
        if unavailable { Self::Unavailable(e.to_string()) } else { Self::Index(Box::new(e)) }
    }
}
