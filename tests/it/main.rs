//! Ferry's integration tests, in one binary (it links once and runs everything).
//!
//! - `archives`: ZIP, gzip and tar files over clamd's limit, scanned member by member.
//! - `blob_store`: write/read/ranges at boundary sizes, dedup under concurrency, verification.
//! - `index`: records, search entries, one-transaction state changes, group commit.
//! - `resume`: interrupted uploads continue with the same digests, across restarts.
//! - `crash`: a writer killed with SIGKILL leaves nothing half-visible and nothing lost.
//! - `scanner`: the clamd client against a real clamd.
//! - `postgres`: the metadata port on a real PostgreSQL: conformance, two writers, outages.
//! - `pipeline`: scanning an upload while it arrives.
//! - `segments`: files longer than clamd's stream limit, scanned as overlapping segments.
//! - `server`: the binary's server on a real port: liveness and readiness.
//! - `console`: the web console end to end in headless Chromium (tests/console/*.mjs).
//! - `torture`: a real `ferry serve` killed with SIGKILL during uploads, scans and bursts, and
//!   clamd killed mid-scan: nothing acknowledged is lost, everything resumes, nothing is left.

mod archives;
mod blob_store;
mod cli;
mod console;
mod crash;
mod disk_full;
mod events;
mod exchange;
mod grpc;
mod http_edges;
mod index;
mod pipeline;
mod postgres;
mod protocol_edges;
mod rest;
mod resume;
mod scanner;
mod segments;
mod server;
mod torture;
mod webhooks;
