//! Conformance suites for the two storage ports, written against the traits only: every
//! implementation runs the same tests (the local store and the redb index in this crate's own
//! tests; later backends in theirs). Compiled for this crate's tests and with the cargo feature
//! `conformance`.
//!
//! - [`blob`]: a [`crate::ports::BlobStore`] through a [`blob::BlobFixture`].
//! - [`metadata`]: a [`crate::ports::MetadataStore`] through a [`metadata::MetadataFixture`].
//! - [`facade`]: [`crate::Storage`] on a pair of them ([`crate::Storage::open_with`]): crash
//!   leftovers swept at open, blob references that follow transfers.
//!
//! A backend runs a whole suite as one `#[tokio::test]` per case with the macros
//! [`crate::blob_conformance_tests`], [`crate::metadata_conformance_tests`] and
//! [`crate::storage_conformance_tests`], given expressions that make fixtures (the calling crate needs `tokio` with `macros` and
//! `rt-multi-thread`):
//!
//! ```ignore
//! mod local_blobs {
//!     storage::blob_conformance_tests!(my_backend::Fixture::new());
//! }
//! ```
//!
//! Each case is also a public function, to run one alone. Cases panic on a breach of the
//! contract, with the contract's words in the message. What they cannot see from outside the
//! port (fsyncs reaching the disk, a full disk) is tested against the implementations
//! themselves (`tests/it/crash.rs`, `tests/it/disk_full.rs`).

pub mod blob;
pub mod facade;
pub mod metadata;

#[cfg(test)]
mod tests;

/// Deterministic test bytes: `len` bytes from `seed` (xorshift; incompressible enough).
pub(crate) fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// One `#[tokio::test]` per case of the blob port's suite ([`blob`]), each with a fixture made
/// by `$fixture` (an expression of a type that implements [`blob::BlobFixture`]).
#[macro_export]
macro_rules! blob_conformance_tests {
    ($fixture:expr) => {
        $crate::__blob_conformance_cases! { $fixture;
            a_promoted_blob_is_durable_and_complete,
            identical_content_is_stored_once,
            an_empty_blob_round_trips,
            range_reads_at_the_edges,
            a_resumable_temporary_survives_a_restart_and_resumes_at_its_sync,
            a_temporary_stays_resumable_after_promote_until_removed,
            a_temporary_is_readable_while_it_grows,
            a_one_shot_temporary_never_becomes_visible,
            the_sweep_deletes_only_unclaimed_temporaries,
            removal_is_idempotent_and_final,
            concurrent_writers_each_get_their_blob,
            a_volatile_finish_reports_the_same_digests,
        }
    };
}

/// One `#[tokio::test]` per case of the metadata port's suite ([`metadata`]), each with a
/// fixture made by `$fixture` (an expression of a type that implements
/// [`metadata::MetadataFixture`]).
#[macro_export]
macro_rules! metadata_conformance_tests {
    ($fixture:expr) => {
        $crate::__metadata_conformance_cases! { $fixture;
            committed_writes_survive_a_reopen,
            a_failing_job_commits_nothing,
            a_retried_job_commits_its_effects_once,
            readers_never_see_half_a_transaction,
            concurrent_writers_all_commit_and_serialize,
            inserts_refuse_taken_keys,
            histories_append_and_searches_range,
            events_are_gap_free_deduplicated_and_ordered,
            jobs_come_due_in_order,
            blob_records_and_the_deletion_queue,
            inline_blobs_commit_with_their_transaction,
            webhook_records,
        }
    };
}

/// One `#[tokio::test]` per case of the facade's suite ([`facade`]), each with the fixtures
/// made by `$metadata` and `$blobs`.
#[macro_export]
macro_rules! storage_conformance_tests {
    ($metadata:expr, $blobs:expr) => {
        $crate::__storage_conformance_cases! { $metadata, $blobs;
            crash_leftovers_are_swept_at_open,
            blob_references_follow_the_transfer,
            small_blobs_live_inline_and_go_with_their_last_reference,
            beginning_an_upload_starts_the_transfer_in_the_same_commit,
            content_inline_under_a_larger_inline_max_leaves_no_file_behind,
            inline_max_0_keeps_no_blob_inline,
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __storage_conformance_cases {
    ($metadata:expr, $blobs:expr; $($case:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $case() {
            let (mut metadata, mut blobs) = ($metadata, $blobs);
            $crate::conformance::facade::$case(&mut metadata, &mut blobs).await;
        }
    )*};
}

#[doc(hidden)]
#[macro_export]
macro_rules! __blob_conformance_cases {
    ($fixture:expr; $($case:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $case() {
            let mut fixture = $fixture;
            // The port's methods block: the suite calls them on the blocking pool, as the
            // facade does.
            let run = tokio::task::spawn_blocking(move || {
                $crate::conformance::blob::$case(&mut fixture)
            });
            if let Err(e) = run.await {
                std::panic::resume_unwind(e.into_panic());
            }
        }
    )*};
}

#[doc(hidden)]
#[macro_export]
macro_rules! __metadata_conformance_cases {
    ($fixture:expr; $($case:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $case() {
            let mut fixture = $fixture;
            $crate::conformance::metadata::$case(&mut fixture).await;
        }
    )*};
}
