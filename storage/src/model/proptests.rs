//! Property tests: no sequence of operations drives a transfer into an invalid state, and every
//! rejected operation leaves it untouched.

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::digest::{Digest, Md5};

#[derive(Debug, Clone)]
enum Op {
    StartUpload,
    CompleteUpload { matching_checksum: bool, md5_known: bool },
    RecordMd5 { matching_checksum: bool },
    Scan(u8),
    Fail,
    Purge,
    Download(usize),
    Confirm(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::StartUpload),
        3 => (any::<bool>(), any::<bool>())
            .prop_map(|(m, k)| Op::CompleteUpload { matching_checksum: m, md5_known: k }),
        2 => any::<bool>().prop_map(|m| Op::RecordMd5 { matching_checksum: m }),
        3 => (0u8..3).prop_map(Op::Scan),
        1 => Just(Op::Fail),
        1 => Just(Op::Purge),
        4 => (0usize..4).prop_map(Op::Download),
        4 => (0usize..4).prop_map(Op::Confirm),
    ]
}

fn party(i: usize) -> Party {
    Party::parse(&format!("0192:{:09}", 910_000_000 + i)).unwrap()
}

fn transfer(n_recipients: usize, scan: bool, declared: bool) -> FileTransfer {
    FileTransfer::initialize(
        FileTransferId::new_random(),
        NewFileTransfer {
            resource_id: ResourceId::parse("r").unwrap(),
            file_name: "f.txt".into(),
            senders_reference: "ref".into(),
            sender: party(99),
            recipients: (0..n_recipients).map(party).collect(),
            property_list: BTreeMap::new(),
            declared_checksum: declared.then(|| Md5::of(b"content")),
            declared_blake3: None,
            use_virus_scan: scan,
        },
        Timestamp::EPOCH,
        Duration::from_secs(3600),
    )
}

fn apply(t: &mut FileTransfer, op: &Op, at: Timestamp) -> Result<(), TransferError> {
    match op {
        Op::StartUpload => t.start_upload(at),
        Op::CompleteUpload { matching_checksum, md5_known } => {
            let data: &[u8] = if *matching_checksum { b"content" } else { b"other" };
            let content = StoredContent {
                size: data.len() as u64,
                blake3: Digest::of(data),
                md5: md5_known.then(|| Md5::of(data)),
            };
            t.complete_upload(content, at).map(drop)
        }
        Op::RecordMd5 { matching_checksum } => {
            // The MD5 the follower computes is that of the uploaded bytes; a "wrong" one would
            // only come from changed bytes, which `Md5Conflict` guards.
            let uploaded: &[u8] = match t.content {
                Some(c) if c.blake3 == Digest::of(b"other") => b"other",
                Some(_) => b"content",
                None if *matching_checksum => b"content",
                None => b"other",
            };
            t.record_md5(Md5::of(uploaded), at)
        }
        Op::Scan(kind) => {
            let outcome = match kind {
                0 => ScanOutcome::Clean,
                1 => ScanOutcome::Infected { signature: "Eicar".into() },
                _ => ScanOutcome::Unscannable { reason: "too large".into() },
            };
            t.record_scan(&outcome, at)
        }
        Op::Fail => t.fail("broken", at),
        Op::Purge => t.purge(at),
        Op::Download(i) => t.record_download(&party(*i), at),
        Op::Confirm(i) => t.confirm_download(&party(*i), at).map(drop),
    }
}

fn check_invariants(t: &FileTransfer, scanned_clean: bool) {
    use FileTransferStatus::*;
    let history = &t.status_history;
    assert_eq!(history[0].status, Initialized);
    for pair in history.windows(2) {
        assert!(
            pair[0].status.can_transition_to(pair[1].status),
            "illegal step {} → {}",
            pair[0].status,
            pair[1].status
        );
    }
    let reached = |s| history.iter().any(|e| e.status == s);
    if reached(Published) {
        assert!(t.content.is_some(), "published without content");
        assert!(!t.use_virus_scan || scanned_clean, "published without a clean scan");
        if let Some(declared) = t.declared_checksum {
            assert_eq!(
                Some(declared),
                t.content.and_then(|c| c.md5),
                "published with an unchecked or bad checksum"
            );
        }
    }
    if reached(AllConfirmedDownloaded) {
        for r in &t.recipients {
            assert_eq!(t.recipient_status(r), Some(RecipientFileTransferStatus::DownloadConfirmed));
        }
    }
    for r in &t.recipients {
        let statuses: Vec<_> =
            t.recipient_history.iter().filter(|e| &e.recipient == r).map(|e| e.status).collect();
        assert_eq!(statuses[0], RecipientFileTransferStatus::Initialized);
        if let Some(first_confirm) =
            statuses.iter().position(|s| *s == RecipientFileTransferStatus::DownloadConfirmed)
        {
            assert!(
                statuses[..first_confirm].contains(&RecipientFileTransferStatus::DownloadStarted),
                "confirmed before downloading"
            );
        }
        assert!(
            statuses
                .iter()
                .filter(|s| **s == RecipientFileTransferStatus::DownloadConfirmed)
                .count()
                <= 1,
            "confirmed twice"
        );
    }
    assert!(
        !t.holds_blob()
            || matches!(t.status(), UploadProcessing | Published | AllConfirmedDownloaded)
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn no_sequence_of_operations_reaches_an_invalid_state(
        n_recipients in 1usize..4,
        scan in any::<bool>(),
        declared in any::<bool>(),
        ops in proptest::collection::vec(op(), 0..40),
    ) {
        let mut t = transfer(n_recipients, scan, declared);
        let mut scanned_clean = false;
        for (i, op) in ops.iter().enumerate() {
            let before = t.clone();
            let at = Timestamp::from_unix_micros(i as i64 + 1);
            match apply(&mut t, op, at) {
                Ok(()) => {
                    if matches!(op, Op::Scan(0)) {
                        scanned_clean = true;
                    }
                    // The recorded MD5 always describes the uploaded bytes.
                    if let Some(c) = t.content
                        && let Some(md5) = c.md5
                    {
                        let uploaded: &[u8] =
                            if c.blake3 == Digest::of(b"content") { b"content" } else { b"other" };
                        prop_assert_eq!(md5, Md5::of(uploaded));
                    }
                }
                Err(_) => prop_assert_eq!(&t, &before, "a rejected {:?} changed the transfer", op),
            }
            check_invariants(&t, scanned_clean);
        }
    }
}

#[test]
fn the_happy_path_reaches_all_confirmed() {
    let mut t = transfer(2, true, true);
    let at = Timestamp::EPOCH;
    t.start_upload(at).unwrap();
    let content = StoredContent { size: 7, blake3: Digest::of(b"content"), md5: None };
    assert_eq!(t.complete_upload(content, at).unwrap(), UploadOutcome::Processing);
    assert_eq!(t.record_download(&party(0), at), Err(TransferError::NotAvailable));
    // Clean, but the declared checksum is not checked yet: still processing.
    t.record_scan(&ScanOutcome::Clean, at).unwrap();
    assert_eq!(t.status(), FileTransferStatus::UploadProcessing);
    t.record_md5(Md5::of(b"content"), at).unwrap();
    assert_eq!(t.status(), FileTransferStatus::Published);
    assert_eq!(t.confirm_download(&party(0), at), Err(TransferError::ConfirmBeforeDownload));
    t.record_download(&party(0), at).unwrap();
    assert_eq!(t.confirm_download(&party(0), at), Ok(ConfirmOutcome::Confirmed));
    assert_eq!(t.confirm_download(&party(0), at), Ok(ConfirmOutcome::AlreadyConfirmed));
    t.record_download(&party(1), at).unwrap();
    assert_eq!(t.confirm_download(&party(1), at), Ok(ConfirmOutcome::AllConfirmed));
    assert_eq!(t.status(), FileTransferStatus::AllConfirmedDownloaded);
    // Confirming again after everyone confirmed is a no-op, not Altinn's 400.
    assert_eq!(t.confirm_download(&party(1), at), Ok(ConfirmOutcome::AlreadyConfirmed));
    assert_eq!(t.confirm_download(&party(3), at), Err(TransferError::NotARecipient(party(3))));
    assert!(t.holds_blob());
    t.purge(at).unwrap();
    assert!(!t.holds_blob());
    assert!(t.purge(at).is_err());
}

#[test]
fn a_checksum_mismatch_fails_the_transfer() {
    let mut t = transfer(1, false, true);
    t.start_upload(Timestamp::EPOCH).unwrap();
    let content =
        StoredContent { size: 5, blake3: Digest::of(b"other"), md5: Some(Md5::of(b"other")) };
    assert_eq!(t.complete_upload(content, Timestamp::EPOCH), Ok(UploadOutcome::ChecksumMismatch));
    assert_eq!(t.status(), FileTransferStatus::Failed);
    assert_eq!(t.latest_status().display_text(), "Checksum mismatch");
    assert!(!t.holds_blob());
    assert_eq!(t.start_upload(Timestamp::EPOCH), Err(TransferError::AlreadyUploaded));
}

#[test]
fn a_late_md5_that_mismatches_fails_the_transfer() {
    let mut t = transfer(1, false, true);
    t.start_upload(Timestamp::EPOCH).unwrap();
    let content = StoredContent { size: 5, blake3: Digest::of(b"other"), md5: None };
    assert_eq!(t.complete_upload(content, Timestamp::EPOCH), Ok(UploadOutcome::Processing));
    assert!(t.holds_blob());
    t.record_md5(Md5::of(b"other"), Timestamp::EPOCH).unwrap();
    assert_eq!(t.status(), FileTransferStatus::Failed);
    assert!(!t.holds_blob());
    assert!(matches!(
        t.record_md5(Md5::of(b"x"), Timestamp::EPOCH),
        Err(TransferError::Md5Conflict { .. })
    ));
}

#[test]
fn a_declared_blake3_is_checked_at_completion() {
    let mut t = transfer(1, false, false);
    t.declared_blake3 = Some(Digest::of(b"content"));
    t.start_upload(Timestamp::EPOCH).unwrap();
    let content = StoredContent { size: 5, blake3: Digest::of(b"other"), md5: None };
    assert_eq!(t.complete_upload(content, Timestamp::EPOCH), Ok(UploadOutcome::ChecksumMismatch));
    let mut t = transfer(1, false, false);
    t.declared_blake3 = Some(Digest::of(b"content"));
    t.start_upload(Timestamp::EPOCH).unwrap();
    let content = StoredContent { size: 7, blake3: Digest::of(b"content"), md5: None };
    assert_eq!(t.complete_upload(content, Timestamp::EPOCH), Ok(UploadOutcome::Published));
}

#[test]
fn events_follow_the_life_cycle_with_altinns_addressees() {
    use super::event::{EventRole, EventType::*};
    let mut t = transfer(2, true, false);
    let kinds =
        |t: &FileTransfer, from: (usize, usize)| -> Vec<(super::event::EventType, EventRole)> {
            t.events_since(from.0, from.1).into_iter().map(|e| (e.kind, e.role)).collect()
        };
    assert_eq!(kinds(&t, (0, 0)), [(FileTransferInitialized, EventRole::Sender)]);
    let at = Timestamp::EPOCH;
    let mark = |t: &FileTransfer| (t.status_history.len(), t.recipient_history.len());
    t.start_upload(at).unwrap();
    let content = StoredContent { size: 7, blake3: Digest::of(b"content"), md5: None };
    let before = mark(&t);
    t.complete_upload(content, at).unwrap();
    assert_eq!(kinds(&t, before), [(UploadProcessing, EventRole::Sender)]);
    let before = mark(&t);
    t.record_scan(&ScanOutcome::Clean, at).unwrap();
    assert_eq!(
        kinds(&t, before),
        [
            (Published, EventRole::Sender),
            (Published, EventRole::Recipient),
            (Published, EventRole::Recipient)
        ]
    );
    t.record_download(&party(0), at).unwrap();
    let before = mark(&t);
    t.confirm_download(&party(0), at).unwrap();
    assert_eq!(
        kinds(&t, before),
        [(DownloadConfirmed, EventRole::Recipient), (DownloadConfirmed, EventRole::Sender)]
    );
    // Expiry purge with one recipient unconfirmed.
    let before = mark(&t);
    t.purge(at).unwrap();
    assert_eq!(
        kinds(&t, before),
        [
            (FilePurged, EventRole::Sender),
            (FileNeverConfirmedDownloaded, EventRole::Recipient),
            (FileNeverConfirmedDownloaded, EventRole::Sender)
        ]
    );
    let never: Vec<_> = t
        .events_since(before.0, before.1)
        .into_iter()
        .filter(|e| e.role == EventRole::Recipient)
        .collect();
    assert_eq!(never[0].party, party(1));
}

#[test]
fn the_last_confirmation_comes_before_the_all_confirmed_event_it_causes() {
    use super::event::{EventRole, EventType::*};
    let mut t = transfer(1, true, false);
    let at = Timestamp::EPOCH;
    t.start_upload(at).unwrap();
    let content = StoredContent { size: 7, blake3: Digest::of(b"content"), md5: None };
    t.complete_upload(content, at).unwrap();
    t.record_scan(&ScanOutcome::Clean, at).unwrap();
    t.record_download(&party(0), at).unwrap();
    let before = (t.status_history.len(), t.recipient_history.len());
    t.confirm_download(&party(0), at).unwrap();
    let kinds: Vec<_> =
        t.events_since(before.0, before.1).into_iter().map(|e| (e.kind, e.role)).collect();
    assert_eq!(
        kinds,
        [
            (DownloadConfirmed, EventRole::Recipient),
            (DownloadConfirmed, EventRole::Sender),
            (AllConfirmedDownloaded, EventRole::Sender)
        ]
    );
}
