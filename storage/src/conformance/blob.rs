//! The blob port's conformance suite: the contract of [`BlobStore`] as tests.
//!
//! Every case is a blocking function (the port's methods block; the macro runs each case on
//! tokio's blocking pool, inside a runtime, so an implementation may `block_on` its client).
//! A case uses fresh stores only, and drops every handle to a store before it reopens it.

use std::collections::HashSet;
use std::io;
use std::sync::Arc;

use bytes::Bytes;

use super::payload;
use crate::digest::{Digest, Md5};
use crate::ports::Verification;
use crate::ports::{BlobStore, FinishedTemp, TempBlob, TempKind};

/// Makes the stores a case runs against.
pub trait BlobFixture: Send + 'static {
    /// A new, empty store.
    fn create(&mut self) -> Arc<dyn BlobStore>;

    /// The store [`BlobFixture::create`] made last, opened again after every handle to it was
    /// dropped: what the process sees after a restart (or a crash: nothing was shut down).
    fn reopen(&mut self) -> Arc<dyn BlobStore>;
}

/// Writes `data` to `temp` in pieces of `piece` bytes.
fn write_all(temp: &mut dyn TempBlob, data: &[u8], piece: usize) {
    for chunk in data.chunks(piece) {
        temp.write(&Bytes::copy_from_slice(chunk)).expect("writing a chunk");
    }
}

/// A one-shot temporary holding `data`, finished.
fn finished(store: &dyn BlobStore, data: &[u8]) -> FinishedTemp {
    let mut temp = store.create_temp(TempKind::OneShot).expect("creating a temporary");
    write_all(&mut *temp, data, 64 * 1024 + 7);
    temp.finish().expect("finishing a temporary")
}

/// Stores `data` as a blob and returns its digest.
fn put(store: &dyn BlobStore, data: &[u8]) -> Digest {
    let done = finished(store, data);
    store.promote(&done).expect("promoting a finished temporary");
    store.remove_temp(&done.name).expect("removing a promoted temporary");
    done.content.blake3
}

/// Every byte of the blob `digest`.
fn read_blob(store: &dyn BlobStore, digest: &Digest) -> Vec<u8> {
    let opened = store.open(digest).expect("opening a promoted blob");
    let size = usize::try_from(opened.size).expect("a test blob fits in memory");
    opened.reader.read_at(0, size).expect("reading a whole blob").to_vec()
}

fn kind_of<T>(result: io::Result<T>) -> Option<io::ErrorKind> {
    result.err().map(|e| e.kind())
}

/// `finish` reports the size and BLAKE3 of every byte written (and an MD5, if any, of the same
/// bytes); after `promote` the blob is listed, reads back exactly and verifies, also after the
/// store was reopened.
pub fn a_promoted_blob_is_durable_and_complete(fixture: &mut dyn BlobFixture) {
    // Past 1 MiB: stores may hash large temporaries differently from small ones.
    let sizes = [1, 4096, 300 * 1024, 3 * 1024 * 1024 + 17];
    let data: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, &n)| payload(i as u64, n)).collect();
    let store = fixture.create();
    let mut digests = Vec::new();
    for bytes in &data {
        let done = finished(&*store, bytes);
        assert_eq!(done.content.size, bytes.len() as u64, "finish reports the bytes written");
        assert_eq!(done.content.blake3, Digest::of(bytes), "finish reports their BLAKE3");
        if let Some(md5) = done.content.md5 {
            assert_eq!(md5, Md5::of(bytes), "an MD5 finish reports is that of the bytes");
        }
        store.promote(&done).unwrap();
        store.remove_temp(&done.name).unwrap();
        digests.push(done.content.blake3);
    }
    drop(store);
    let store = fixture.reopen();
    let listed: HashSet<Digest> = store.list().unwrap().into_iter().collect();
    assert_eq!(listed, digests.iter().copied().collect(), "list shows exactly the promoted blobs");
    for (digest, bytes) in digests.iter().zip(&data) {
        assert_eq!(store.open(digest).unwrap().size, bytes.len() as u64);
        assert!(read_blob(&*store, digest) == *bytes, "a promoted blob reads back after reopen");
        assert_eq!(store.verify(digest).unwrap(), Verification::Intact);
    }
}

/// Promoting content that is stored already changes nothing: one blob, still readable.
pub fn identical_content_is_stored_once(fixture: &mut dyn BlobFixture) {
    let store = fixture.create();
    let data = payload(7, 200_000);
    let first = finished(&*store, &data);
    let second = finished(&*store, &data);
    assert_ne!(first.name, second.name, "every temporary gets a fresh name");
    store.promote(&first).unwrap();
    store.promote(&second).expect("promoting content stored already succeeds");
    store.remove_temp(&first.name).unwrap();
    store.remove_temp(&second.name).unwrap();
    assert_eq!(store.list().unwrap(), vec![Digest::of(&data)], "content is stored once");
    assert!(read_blob(&*store, &Digest::of(&data)) == data);
}

/// A temporary of no bytes finishes, promotes and reads as the empty blob.
pub fn an_empty_blob_round_trips(fixture: &mut dyn BlobFixture) {
    let store = fixture.create();
    let temp = store.create_temp(TempKind::OneShot).unwrap();
    assert!(temp.is_empty());
    let done = temp.finish().unwrap();
    assert_eq!((done.content.size, done.content.blake3), (0, Digest::of(b"")));
    store.promote(&done).unwrap();
    let opened = store.open(&Digest::of(b"")).unwrap();
    assert_eq!(opened.size, 0);
    assert!(opened.reader.read_at(0, 0).unwrap().is_empty());
}

/// `read_at` returns exactly the bytes asked for, an empty chunk for no bytes, and fails for
/// bytes past the end; `open` of a missing blob is `NotFound`.
pub fn range_reads_at_the_edges(fixture: &mut dyn BlobFixture) {
    let store = fixture.create();
    let data = payload(3, 100_000);
    let n = data.len();
    let digest = put(&*store, &data);
    let reader = store.open(&digest).unwrap().reader;
    let at = |offset: usize, len: usize| reader.read_at(offset as u64, len);
    assert_eq!(at(0, 10).unwrap(), &data[..10], "the start");
    assert_eq!(at(n - 10, 10).unwrap(), &data[n - 10..], "the end");
    assert_eq!(at(12_345, 50_000).unwrap(), &data[12_345..62_345], "the middle");
    assert!(at(0, 0).unwrap().is_empty(), "nothing at the start");
    assert!(at(n, 0).unwrap().is_empty(), "nothing at the end");
    assert!(at(n, 1).is_err(), "a byte past the end");
    assert!(at(n - 5, 10).is_err(), "a range that runs past the end");
    assert!(at(n + 100, 1).is_err(), "a range that starts past the end");
    // Concurrent readers of one blob do not disturb each other.
    std::thread::scope(|s| {
        for i in 0..4 {
            let (reader, data) = (&reader, &data);
            s.spawn(move || {
                for j in 0..20 {
                    let offset = (i * 20_000 + j * 1_000) % (n - 1_000);
                    assert_eq!(
                        reader.read_at(offset as u64, 1_000).unwrap(),
                        &data[offset..][..1_000]
                    );
                }
            });
        }
    });
    let missing = Digest::of(b"never stored");
    assert_eq!(kind_of(store.open(&missing)), Some(io::ErrorKind::NotFound));
    assert_eq!(store.verify(&missing).unwrap(), Verification::Missing);
}

/// A resumable temporary outlives its writer and the store: after a reopen it exists, resumes
/// at the length a `sync` returned (bytes written after it are discarded), and its digests
/// cover every byte as if it had been written at once. Resuming past what it holds fails.
pub fn a_resumable_temporary_survives_a_restart_and_resumes_at_its_sync(
    fixture: &mut dyn BlobFixture,
) {
    let store = fixture.create();
    let data = payload(11, 1024 * 1024 + 20_003);
    // What follows the sync is shorter than the torn bytes it replaces.
    let (head, rest) = data.split_at(1024 * 1024 + 3);
    let mut temp = store.create_temp(TempKind::Resumable).unwrap();
    let name = temp.name().to_owned();
    write_all(&mut *temp, head, 100_003);
    let committed = temp.sync().unwrap();
    assert_eq!(committed, head.len() as u64, "sync returns the bytes written");
    write_all(&mut *temp, &payload(99, 70_000), 70_000); // never synced: may be torn
    drop(temp);
    drop(store);

    let store = fixture.reopen();
    assert!(store.temp_exists(&name).unwrap(), "a resumable temporary survives a restart");
    assert!(
        store.resume_temp(&name, committed + 10_000_000).is_err(),
        "resuming past what the temporary holds fails"
    );
    let mut temp = store.resume_temp(&name, committed).unwrap();
    assert_eq!(temp.name(), name);
    assert_eq!(temp.len(), committed, "a resumed temporary continues at the committed length");
    write_all(&mut *temp, rest, 6_000);
    let done = temp.finish().unwrap();
    assert_eq!(done.content.size, data.len() as u64);
    assert_eq!(done.content.blake3, Digest::of(&data), "digests cover every byte exactly once");
    if let Some(md5) = done.content.md5 {
        assert_eq!(md5, Md5::of(&data));
    }
    store.promote(&done).unwrap();
    assert!(read_blob(&*store, &Digest::of(&data)) == data, "bytes after the sync are discarded");
    assert!(store.resume_temp("no-such-temporary", 0).is_err(), "resuming a missing temporary");
    assert!(!store.temp_exists("no-such-temporary").unwrap());
}

/// After `promote` the temporary is still there, readable and resumable, until `remove_temp`
/// (which is idempotent); the blob stays when it goes.
pub fn a_temporary_stays_resumable_after_promote_until_removed(fixture: &mut dyn BlobFixture) {
    let store = fixture.create();
    let data = payload(5, 300_000);
    let mut temp = store.create_temp(TempKind::Resumable).unwrap();
    write_all(&mut *temp, &data, 40_000);
    let committed = temp.sync().unwrap();
    let done = temp.finish().unwrap();
    store.promote(&done).unwrap();
    drop(store);
    // A crash between promote and the metadata commit: the upload must still resume.
    let store = fixture.reopen();
    assert!(store.temp_exists(&done.name).unwrap(), "promote keeps the temporary");
    let opened = store.open_temp(&done.name).unwrap();
    assert_eq!(opened.size, data.len() as u64);
    assert_eq!(opened.reader.read_at(0, data.len()).unwrap(), data);
    let resumed = store.resume_temp(&done.name, committed).unwrap();
    assert_eq!(resumed.finish().unwrap().content.blake3, Digest::of(&data));
    store.remove_temp(&done.name).unwrap();
    store.remove_temp(&done.name).expect("removing a temporary twice is fine");
    assert!(!store.temp_exists(&done.name).unwrap());
    assert!(read_blob(&*store, &Digest::of(&data)) == data, "the blob outlives its temporary");
}

/// A reader of a temporary sees every byte whose write returned, also bytes written after the
/// reader was opened.
pub fn a_temporary_is_readable_while_it_grows(fixture: &mut dyn BlobFixture) {
    let store = fixture.create();
    let data = payload(13, 600_000);
    let mut temp = store.create_temp(TempKind::Resumable).unwrap();
    temp.write(&Bytes::copy_from_slice(&data[..100_000])).unwrap();
    let reader = store.open_temp(temp.name()).unwrap().reader;
    assert_eq!(reader.read_at(0, 100_000).unwrap(), &data[..100_000]);
    let mut written = 100_000;
    for piece in data[100_000..].chunks(125_000) {
        temp.write(&Bytes::copy_from_slice(piece)).unwrap();
        assert_eq!(reader.read_at(written as u64, piece.len()).unwrap(), piece);
        written += piece.len();
    }
    assert_eq!(temp.len(), data.len() as u64);
    assert_eq!(reader.read_at(0, data.len()).unwrap(), data);
}

/// A one-shot temporary dropped unfinished never becomes a blob, and is gone after a sweep at
/// the latest; a finished but unpromoted one is no blob either.
pub fn a_one_shot_temporary_never_becomes_visible(fixture: &mut dyn BlobFixture) {
    let store = fixture.create();
    let mut temp = store.create_temp(TempKind::OneShot).unwrap();
    let name = temp.name().to_owned();
    write_all(&mut *temp, &payload(17, 50_000), 10_000);
    drop(temp);
    let unpromoted = finished(&*store, &payload(18, 1_000));
    assert!(store.list().unwrap().is_empty(), "no temporary is listed as a blob");
    assert_eq!(kind_of(store.open(&unpromoted.content.blake3)), Some(io::ErrorKind::NotFound));
    store.sweep_temporaries(&|_| false).unwrap();
    assert!(!store.temp_exists(&name).unwrap(), "a dropped one-shot temporary is swept");
    assert!(!store.temp_exists(&unpromoted.name).unwrap());
}

/// At start-up the sweep deletes the temporaries `keep` rejects, says how many, and leaves the
/// others resumable; blobs are not temporaries and stay.
pub fn the_sweep_deletes_only_unclaimed_temporaries(fixture: &mut dyn BlobFixture) {
    let store = fixture.create();
    let blob = put(&*store, &payload(21, 10_000));
    let names: Vec<(String, u64)> = (0..3)
        .map(|i| {
            let mut temp = store.create_temp(TempKind::Resumable).unwrap();
            write_all(&mut *temp, &payload(30 + i, 20_000), 20_000);
            (temp.name().to_owned(), temp.sync().unwrap())
        })
        .collect();
    drop(store);
    let store = fixture.reopen();
    let claimed = names[1].0.clone();
    let removed = store.sweep_temporaries(&|name| name == claimed).unwrap();
    assert_eq!(removed, 2, "the sweep counts what it deleted");
    assert!(!store.temp_exists(&names[0].0).unwrap());
    assert!(!store.temp_exists(&names[2].0).unwrap());
    assert!(store.temp_exists(&claimed).unwrap(), "a claimed temporary stays");
    let resumed = store.resume_temp(&claimed, names[1].1).unwrap();
    assert_eq!(resumed.finish().unwrap().content.blake3, Digest::of(&payload(31, 20_000)));
    assert_eq!(store.list().unwrap(), vec![blob], "blobs are not swept");
    assert_eq!(store.sweep_temporaries(&|name| name == claimed).unwrap(), 0);
}

/// `remove` deletes a blob for good (after a reopen too) and is idempotent.
pub fn removal_is_idempotent_and_final(fixture: &mut dyn BlobFixture) {
    let store = fixture.create();
    let gone = put(&*store, &payload(41, 5_000));
    let kept = put(&*store, &payload(42, 5_000));
    store.remove(&gone).unwrap();
    store.remove(&gone).expect("removing a blob twice is fine");
    assert_eq!(kind_of(store.open(&gone)), Some(io::ErrorKind::NotFound));
    assert_eq!(store.verify(&gone).unwrap(), Verification::Missing);
    drop(store);
    let store = fixture.reopen();
    assert_eq!(store.list().unwrap(), vec![kept], "a removed blob stays removed");
    assert_eq!(kind_of(store.open(&gone)), Some(io::ErrorKind::NotFound));
    store.remove(&Digest::of(b"never stored")).expect("removing a missing blob is fine");
}

/// Writers on several threads, each with its own temporary, each get their own blob.
pub fn concurrent_writers_each_get_their_blob(fixture: &mut dyn BlobFixture) {
    let store = fixture.create();
    let handle = tokio::runtime::Handle::try_current().ok();
    let data: Vec<Vec<u8>> =
        (0..8).map(|i| payload(50 + i, 200_000 + i as usize * 10_007)).collect();
    let digests: Vec<Digest> = std::thread::scope(|s| {
        let tasks: Vec<_> = data
            .iter()
            .map(|bytes| {
                let (store, handle) = (store.clone(), handle.clone());
                s.spawn(move || {
                    // Inside the runtime, as the facade's blocking-pool threads are.
                    let _entered = handle.as_ref().map(|h| h.enter());
                    put(&*store, bytes)
                })
            })
            .collect();
        tasks.into_iter().map(|t| t.join().expect("a writer panicked")).collect()
    });
    let listed: HashSet<Digest> = store.list().unwrap().into_iter().collect();
    assert_eq!(listed.len(), data.len());
    for (digest, bytes) in digests.iter().zip(&data) {
        assert_eq!(*digest, Digest::of(bytes));
        assert!(listed.contains(digest));
        assert!(read_blob(&*store, digest) == *bytes);
    }
}

/// `finish_volatile` reports what `finish` does for the same bytes, and its temporary reads
/// back until it is removed.
pub fn a_volatile_finish_reports_the_same_digests(fixture: &mut dyn BlobFixture) {
    let store = fixture.create();
    for len in [0, 1, 4096, 64 * 1024] {
        let data = payload(40 + len as u64, len);
        let durable = finished(&*store, &data);
        let mut temp = store.create_temp(TempKind::OneShot).unwrap();
        if !data.is_empty() {
            temp.write(&Bytes::copy_from_slice(&data)).unwrap();
        }
        let volatile = temp.finish_volatile().unwrap();
        assert_eq!(volatile.content.size, durable.content.size);
        assert_eq!(volatile.content.blake3, durable.content.blake3);
        let opened = store.open_temp(&volatile.name).unwrap();
        assert_eq!(opened.size, len as u64);
        assert!(opened.reader.read_at(0, len).unwrap() == data, "the temporary reads back");
        store.remove_temp(&volatile.name).unwrap();
        store.remove_temp(&durable.name).unwrap();
    }
}
