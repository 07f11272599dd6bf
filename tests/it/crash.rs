use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use storage::model::{FileTransferId, FileTransferStatus, UploadId};
use storage::{Digest, Storage, StorageOptions, Verification};

#[derive(Default)]
struct Acknowledged {
    published: HashMap<FileTransferId, Digest>,
    purged: HashSet<FileTransferId>,
    partial: HashMap<String, u64>,
}

/// Runs the crash writer on `dir` for `run_for`, then kills it with SIGKILL.
fn run_and_kill(dir: &std::path::Path, seed: u64, run_for: Duration, acked: &mut Acknowledged) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_crash-writer"))
        .arg(dir)
        .arg(seed.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn crash-writer");
    let stdout = child.stdout.take().unwrap();
    let (first_tx, first_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.is_empty() {
                let _ = first_tx.send(());
            }
            lines.push(line);
        }
        lines
    });
    // The kill lands `run_for` after the first acknowledgement, wherever the writer then is: a
    // busy machine may take longer to start it, never to make it write less.
    let started = first_rx.recv_timeout(Duration::from_secs(20));
    assert!(started.is_ok(), "crash-writer acknowledged nothing in 20 s");
    std::thread::sleep(run_for);
    assert!(child.try_wait().unwrap().is_none(), "crash-writer stopped by itself");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let lines = reader.join().unwrap();
    assert!(!lines.is_empty(), "crash-writer acknowledged nothing");
    for line in lines {
        let parts: Vec<_> = line.split(' ').collect();
        match parts.as_slice() {
            ["ack", id, digest] => {
                acked.published.insert(id.parse().unwrap(), digest.parse().unwrap());
            }
            ["purged", id] => {
                acked.purged.insert(id.parse().unwrap());
            }
            ["partial", id, offset] => {
                acked.partial.insert((*id).to_owned(), offset.parse().unwrap());
            }
            _ => panic!("unexpected line from crash-writer: {line:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_writer_killed_mid_write_leaves_a_consistent_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut acked = Acknowledged::default();
    for (round, millis) in [450u64, 800, 300, 650].into_iter().enumerate() {
        run_and_kill(dir.path(), round as u64, Duration::from_millis(millis), &mut acked);

        let storage = Storage::open(StorageOptions::new(dir.path())).await.unwrap();
        // Nothing half-written is visible, and the index agrees with the files.
        let problems = storage.check_consistency().await.unwrap();
        assert!(problems.is_empty(), "round {round}: {problems:?}");
        let uploads = storage.uploads().unwrap();
        let claimed: HashSet<_> = uploads.iter().map(|(_, r)| r.temp_name.clone()).collect();
        for entry in std::fs::read_dir(dir.path().join("tmp")).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            assert!(
                claimed.contains(&name),
                "round {round}: stray temporary {name} survived start-up"
            );
        }
        // Blob files are exactly the recorded blobs that are not inline (small blobs live in
        // the index; check_consistency above verified those bytes).
        let on_disk = walk(&dir.path().join("blobs"));
        let recorded: HashSet<_> = storage
            .blobs()
            .unwrap()
            .into_iter()
            .map(|(d, _)| d)
            .filter(|d| !storage.is_inline(d).unwrap())
            .collect();
        assert_eq!(on_disk, recorded, "round {round}: blob files and records differ");

        assert_outbox_matches_transfers(&storage, round);

        // Everything acknowledged survived.
        for (id, digest) in &acked.published {
            let t = storage.transfer(*id).unwrap().unwrap_or_else(|| panic!("acked {id} lost"));
            assert_eq!(t.content.unwrap().blake3, *digest);
            // An acknowledged purge must have happened; an unacknowledged one (committed just
            // before the kill, its line never printed) may have.
            let status = t.status();
            if acked.purged.contains(id) {
                assert_eq!(status, FileTransferStatus::Purged, "round {round}: {id}");
            } else {
                assert!(
                    matches!(status, FileTransferStatus::Published | FileTransferStatus::Purged),
                    "round {round}: acked {id} is {status}"
                );
            }
            if status == FileTransferStatus::Published {
                let stored = storage.verify_blob(digest).await.unwrap();
                assert_eq!(stored, Verification::Intact, "round {round}: blob of {id}");
            }
        }
        for (upload, offset) in &acked.partial {
            let id = UploadId::from_stored(upload);
            let durable = storage.upload_offset(&id).unwrap();
            // Either still in progress with at least the acked offset, or completed since.
            let transfer: FileTransferId = upload.parse().unwrap();
            let completed =
                storage.transfer(transfer).unwrap().is_some_and(|t| t.content.is_some());
            assert!(
                completed || durable.is_some_and(|d| d >= *offset),
                "round {round}: upload {upload} acked at {offset}, now {durable:?}"
            );
        }
    }
    assert!(acked.published.len() > 4, "too little work to be a test: {}", acked.published.len());
}

/// The transactional outbox after a crash: every transfer's events in the log are exactly those
/// its history calls for (no change without its event), and every event belongs to a transfer
/// that exists (no event without its change). Sequences are gap-free.
fn assert_outbox_matches_transfers(storage: &Storage, round: usize) {
    let key = |kind, role, party: &storage::model::Party| format!("{kind:?} {role:?} {party}");
    let mut logged: HashMap<FileTransferId, Vec<String>> = HashMap::new();
    let events = storage.events_after(0, usize::MAX).unwrap();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1, "round {round}: a gap in the event sequence");
        logged.entry(e.transfer).or_default().push(key(e.kind, e.role, &e.party));
    }
    let resource = storage::model::ResourceId::parse("crash").unwrap();
    let far = storage::model::Timestamp::from_unix_micros(i64::MAX);
    let transfers = storage
        .transfers_by_resource(&resource, storage::model::Timestamp::EPOCH, far, usize::MAX)
        .unwrap();
    for id in &transfers {
        let t = storage.transfer(*id).unwrap().unwrap();
        let expected: Vec<_> =
            t.events_since(0, 0).iter().map(|e| key(e.kind, e.role, &e.party)).collect();
        let got = logged.remove(id).unwrap_or_default();
        assert_eq!(got, expected, "round {round}: transfer {id}'s events and history differ");
    }
    assert!(logged.is_empty(), "round {round}: events of unknown transfers: {logged:?}");
}

fn walk(dir: &std::path::Path) -> HashSet<Digest> {
    let mut out = HashSet::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            out.extend(walk(&entry.path()));
        } else {
            out.insert(entry.file_name().to_string_lossy().parse().unwrap());
        }
    }
    out
}
