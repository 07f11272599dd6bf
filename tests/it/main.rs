//! Ferry's integration tests, in one binary (it links once and runs everything).
//!
//! - `blob_store`: write/read/ranges at boundary sizes, dedup under concurrency, verification.
//! - `index`: records, search entries, one-transaction state changes, group commit.
//! - `resume`: interrupted uploads continue with the same digests, across restarts.
//! - `crash`: a writer killed with SIGKILL leaves nothing half-visible and nothing lost.
//! - `scanner`: the clamd client against a real clamd.
//! - `pipeline`: scanning an upload while it arrives.
//! - `server`: the binary's server on a real port: liveness and readiness.
//! - `torture`: a real `ferry serve` killed with SIGKILL during uploads, scans and bursts, and
//!   clamd killed mid-scan: nothing acknowledged is lost, everything resumes, nothing is left.

mod blob_store;
mod cli;
mod crash;
mod disk_full;
mod events;
mod exchange;
mod grpc;
mod http_edges;
mod index;
mod pipeline;
mod protocol_edges;
mod rest;
mod resume;
mod scanner;
mod server;
mod torture;
mod webhooks;
