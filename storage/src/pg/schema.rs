//! The PostgreSQL schema, as versioned migrations applied at start-up.
//!
//! Every table mirrors one redb table of `index/tables.rs`: key columns that PostgreSQL can
//! index and order (text keys in the `"C"` collation, so they sort bytewise as redb's do;
//! 128-bit ids as 16 big-endian bytes; times as microseconds), and the record itself as the
//! same postcard bytes the redb index stores (`data`). A change to a record's shape is a new
//! migration here, as it is a new table name there.
//!
//! Migrations run in order, each in its own transaction, under a session advisory lock, so
//! replicas starting together apply each once; `schema_migrations` records what ran.

/// The migrations, in order: version `i + 1` is `MIGRATIONS[i]`. Never edit one that shipped.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: every record of schema 2 of the redb index.
    r#"
CREATE TABLE service_owners (org text COLLATE "C" PRIMARY KEY, data bytea NOT NULL);
CREATE TABLE resources (id text COLLATE "C" PRIMARY KEY, data bytea NOT NULL);
CREATE TABLE transfers (id bytea PRIMARY KEY, data bytea NOT NULL);
CREATE TABLE status_history (
    transfer bytea NOT NULL, seq integer NOT NULL, data bytea NOT NULL,
    PRIMARY KEY (transfer, seq));
CREATE TABLE recipient_history (
    transfer bytea NOT NULL, seq integer NOT NULL, data bytea NOT NULL,
    PRIMARY KEY (transfer, seq));
CREATE TABLE by_resource (
    resource text COLLATE "C" NOT NULL, created bigint NOT NULL, transfer bytea NOT NULL,
    PRIMARY KEY (resource, created, transfer));
CREATE TABLE by_party (
    org text COLLATE "C" NOT NULL, role smallint NOT NULL, created bigint NOT NULL,
    transfer bytea NOT NULL,
    PRIMARY KEY (org, role, created, transfer));
CREATE TABLE idempotency (key text COLLATE "C" PRIMARY KEY, data bytea NOT NULL);
CREATE TABLE blobs (digest bytea PRIMARY KEY, data bytea NOT NULL);
CREATE TABLE inline_blobs (digest bytea PRIMARY KEY, bytes bytea NOT NULL);
CREATE TABLE blob_gc (digest bytea PRIMARY KEY);
CREATE TABLE uploads (id text COLLATE "C" PRIMARY KEY, data bytea NOT NULL);
CREATE TABLE scan_progress (transfer bytea PRIMARY KEY, data bytea NOT NULL);
CREATE TABLE event_log (seq bigint PRIMARY KEY, id bytea NOT NULL UNIQUE, data bytea NOT NULL);
CREATE TABLE schedule (
    due bigint NOT NULL, transfer bytea NOT NULL, kind smallint NOT NULL,
    PRIMARY KEY (due, transfer, kind));
CREATE TABLE subscriptions (id bigint PRIMARY KEY, data bytea NOT NULL);
CREATE TABLE deliveries (id bigint PRIMARY KEY, due bigint NOT NULL, data bytea NOT NULL);
CREATE INDEX deliveries_due ON deliveries (due, id);
CREATE TABLE dead_letters (id bigint PRIMARY KEY, data bytea NOT NULL);
-- Counters and cursors: the next event sequence, subscription and delivery ids (from 1), and
-- the fan-out cursor (from 0).
CREATE TABLE counters (name text COLLATE "C" PRIMARY KEY, value bigint NOT NULL);
INSERT INTO counters VALUES ('event_seq', 1), ('subscription', 1), ('delivery', 1), ('fanout', 0);
"#,
];

/// The table of applied migrations (created before any migration runs).
pub(crate) const MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY, applied timestamptz NOT NULL DEFAULT now())";
