//! The metadata port's conformance suite: the contract of [`MetadataStore`], [`MetadataRead`]
//! and [`MetadataTxn`] as tests.
//!
//! Cases are async (the macro runs each on a multi-threaded runtime). A case uses fresh stores
//! only, and drops every handle to a store before it reopens it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::digest::{Digest, Md5};
use crate::error::{Error, Result};
use crate::model::{
    EventRole, EventType, FileTransfer, FileTransferId, FileTransferStatus, NewFileTransfer, Party,
    ResourceConfig, ResourceId, ServiceOwner, StoredContent, Timestamp, UploadId,
};
use crate::ports::{Counter, MetadataRead, MetadataStore, MetadataTxn, StoredHistory};
use crate::records::{BlobRecord, EventRecord, Job, JobKind, ScanProgress, UploadRecord, event_id};
use crate::records::{Delivery, Subscription};

/// Makes the stores a case runs against.
pub trait MetadataFixture: Send + 'static {
    /// A new, empty store.
    fn create(&mut self) -> Arc<dyn MetadataStore>;

    /// The store [`MetadataFixture::create`] made last, opened again after every handle to it
    /// was dropped: what the process sees after a restart (or a crash: nothing was shut down).
    fn reopen(&mut self) -> Arc<dyn MetadataStore>;
}

use super::payload;
use crate::ports::transact as write;

/// Runs `f` on a snapshot, as the facade does.
fn read<T>(store: &dyn MetadataStore, f: impl FnOnce(&mut dyn MetadataRead) -> Result<T>) -> T {
    crate::ports::snapshot(store, f).expect("reading a snapshot")
}

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_unix_micros(1_700_000_000_000_000 + seconds * 1_000_000)
}

fn party(n: u32) -> Party {
    Party::parse(&format!("0192:{:09}", 910_000_000 + n)).expect("a valid party")
}

fn resource_id(name: &str) -> ResourceId {
    ResourceId::parse(name).expect("a valid resource id")
}

pub(crate) fn transfer(
    resource: &str,
    sender: u32,
    recipients: &[u32],
    created: Timestamp,
) -> FileTransfer {
    FileTransfer::initialize(
        FileTransferId::new_random(),
        NewFileTransfer {
            resource_id: resource_id(resource),
            file_name: "report.pdf".into(),
            senders_reference: "ref".into(),
            sender: party(sender),
            recipients: recipients.iter().map(|r| party(*r)).collect(),
            property_list: BTreeMap::from([("k".into(), "v".into())]),
            declared_checksum: None,
            declared_blake3: None,
            use_virus_scan: true,
        },
        created,
        Duration::from_secs(86_400),
    )
}

fn store_new(txn: &mut dyn MetadataTxn, t: &FileTransfer) -> Result<()> {
    txn.insert_transfer(t)?;
    txn.put_transfer(t, StoredHistory::default())
}

fn upload_record(name: &str, committed: u64) -> UploadRecord {
    UploadRecord {
        temp_name: name.into(),
        committed,
        created: at(0),
        updated: at(1),
        length: Some(committed * 2),
    }
}

fn event(kind: EventType, transfer: &FileTransfer, to: &Party, role: EventRole) -> EventRecord {
    EventRecord {
        seq: 0,
        id: event_id(kind, transfer.id, role, to),
        kind,
        transfer: transfer.id,
        resource: transfer.resource_id.clone(),
        party: to.clone(),
        role,
        at: at(5),
    }
}

fn subscription(consumer: u32) -> Subscription {
    Subscription {
        id: 0,
        consumer: party(consumer),
        end_point: "https://example.com/hook".into(),
        resource_filter: resource_id("res"),
        subject_filter: party(consumer),
        type_filter: None,
        created: at(0),
        validated: true,
        disabled: None,
        secrets: vec!["s".into()],
        from_seq: 0,
        failing_since: None,
    }
}

fn delivery(id: u64, subscription: u64, due: Timestamp) -> Delivery {
    Delivery { id, subscription, seq: 1, attempts: 0, due, last_error: None }
}

/// Everything a transaction committed is read back after the store was reopened: every kind of
/// record, exactly as written.
pub async fn committed_writes_survive_a_reopen(fixture: &mut dyn MetadataFixture) {
    let store = fixture.create();
    let owner = ServiceOwner { id: party(1), name: "Owner".into(), created: at(0) };
    let resource = ResourceConfig::new(resource_id("res"), party(1), at(0));
    let mut t = transfer("res", 2, &[3, 4], at(10));
    let content = StoredContent { size: 5, blake3: Digest::of(b"bytes"), md5: None };
    let blob = BlobRecord { size: 5, md5: Some(Md5::of(b"bytes")), refs: 2 };
    let upload = UploadId::for_transfer(t.id);
    let progress = ScanProgress {
        blob: content.blake3,
        segment_len: 10,
        overlap: 2,
        clean: BTreeSet::from([0, 2]),
    };
    let job = Job { due: at(100), transfer: t.id, kind: JobKind::Expiry };
    let events = vec![event(EventType::FileTransferInitialized, &t, &party(2), EventRole::Sender)];
    let (o, r, t1, e) = (owner.clone(), resource.clone(), t.clone(), events.clone());
    let (p, u) = (progress.clone(), upload.clone());
    write(&*store, move |txn| {
        txn.insert_service_owner(&o)?;
        txn.put_resource(&r)?;
        store_new(txn, &t1)?;
        txn.put_idempotency_key("org/key", [7; 32], t1.id)?;
        txn.put_blob(&content.blake3, &blob)?;
        txn.queue_gc(&Digest::of(b"gone"))?;
        txn.put_upload(&u, &upload_record("temp-1", 42))?;
        txn.put_scan_progress(t1.id, &p)?;
        txn.append_events(e.clone())?;
        txn.schedule(&job)?;
        txn.put_subscription(&Subscription { id: 9, ..subscription(2) })?;
        txn.put_delivery(&delivery(3, 9, at(50)))?;
        txn.put_dead_letter(&delivery(4, 9, at(60)))?;
        txn.set_fanout_cursor(1)?;
        Ok(())
    })
    .await
    .expect("a transaction over every kind of record commits");
    // A second transaction that extends the transfer's histories.
    t.start_upload(at(20)).unwrap();
    let t2 = t.clone();
    write(&*store, move |txn| txn.put_transfer(&t2, StoredHistory { status: 1, recipient: 2 }))
        .await
        .unwrap();
    drop(store);

    let store = fixture.reopen();
    read(&*store, |r| {
        assert_eq!(r.service_owner(&party(1))?, Some(owner.clone()));
        assert_eq!(r.resource(&resource.id)?, Some(resource.clone()));
        assert_eq!(r.resources()?, vec![resource.clone()]);
        assert_eq!(r.transfer(t.id)?, Some(t.clone()), "a transfer with both histories");
        assert_eq!(r.transfer_ids()?, vec![t.id]);
        assert_eq!(r.idempotency_key("org/key")?, Some(([7; 32], t.id)));
        assert_eq!(r.blob(&content.blake3)?, Some(blob));
        assert_eq!(r.blobs()?, vec![(content.blake3, blob)]);
        assert_eq!(r.pending_gc()?, vec![Digest::of(b"gone")]);
        assert_eq!(r.upload(&upload)?, Some(upload_record("temp-1", 42)));
        assert_eq!(r.uploads()?, vec![(upload.clone(), upload_record("temp-1", 42))]);
        assert_eq!(r.scan_progress(t.id)?, Some(progress.clone()));
        let logged = r.events_after(0, 10)?;
        assert_eq!(logged, vec![EventRecord { seq: 1, ..events[0].clone() }]);
        assert_eq!(r.due_jobs(at(100), 10)?, vec![job]);
        assert_eq!(r.subscription(9)?.map(|s| s.end_point), Some(subscription(2).end_point));
        assert_eq!(r.delivery(3)?, Some(delivery(3, 9, at(50))));
        assert_eq!(r.dead_letters()?, vec![delivery(4, 9, at(60))]);
        assert_eq!(r.fanout_cursor()?, 1);
        Ok(())
    });
}

/// A job that fails commits none of its writes, its error reaches the caller unchanged, and
/// other jobs are unaffected.
pub async fn a_failing_job_commits_nothing(fixture: &mut dyn MetadataFixture) {
    let store = fixture.create();
    let t = transfer("res", 1, &[2], at(0));
    let failed = write(&*store, move |txn| -> Result<()> {
        txn.put_resource(&ResourceConfig::new(resource_id("res"), party(1), at(0)))?;
        store_new(txn, &t)?;
        txn.put_upload(&UploadId::for_transfer(t.id), &upload_record("t", 1))?;
        txn.put_blob(&Digest::of(b"x"), &BlobRecord { size: 1, md5: None, refs: 1 })?;
        txn.append_events(vec![event(EventType::Published, &t, &party(2), EventRole::Recipient)])?;
        txn.next_id(Counter::Delivery)?;
        Err(Error::NotFound("the thing the rule wanted".into()))
    })
    .await;
    assert!(
        matches!(&failed, Err(Error::NotFound(what)) if what == "the thing the rule wanted"),
        "the job's own error reaches the caller: {failed:?}"
    );
    // Jobs running beside failing ones commit.
    let tasks: Vec<_> = (0..16u32)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                write(&*store, move |txn| {
                    txn.insert_service_owner(&ServiceOwner {
                        id: party(100 + i),
                        name: format!("o{i}"),
                        created: at(0),
                    })?;
                    if i % 4 == 0 {
                        return Err(Error::AlreadyExists(format!("refused {i}")));
                    }
                    Ok(())
                })
                .await
            })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        let result = task.await.unwrap();
        assert_eq!(result.is_ok(), i % 4 != 0, "job {i}: {result:?}");
    }
    read(&*store, |r| {
        assert!(r.resources()?.is_empty(), "a failed job's resource");
        assert!(r.transfer_ids()?.is_empty(), "a failed job's transfer");
        assert!(r.uploads()?.is_empty(), "a failed job's upload");
        assert!(r.blobs()?.is_empty(), "a failed job's blob record");
        assert_eq!(r.last_event_seq()?, 0, "a failed job's events");
        for i in 0..16 {
            let owner = r.service_owner(&party(100 + i))?;
            assert_eq!(owner.is_some(), i % 4 != 0, "owner {i}");
        }
        Ok(())
    });
    let next = write(&*store, |txn| txn.next_id(Counter::Delivery)).await.unwrap();
    assert_eq!(next, 1, "a failed job's counter increments are rolled back");
}

/// A store may run a job more than once, but only the last run's effects commit, once.
pub async fn a_retried_job_commits_its_effects_once(fixture: &mut dyn MetadataFixture) {
    let store = fixture.create();
    let runs = Arc::new(AtomicUsize::new(0));
    // Many jobs at once, some failing, so a group-committing store re-runs the others.
    let tasks: Vec<_> = (0..24usize)
        .map(|i| {
            let (store, runs) = (store.clone(), runs.clone());
            tokio::spawn(async move {
                write(&*store, move |txn| {
                    runs.fetch_add(1, Ordering::Relaxed);
                    let id = txn.next_id(Counter::Subscription)?;
                    let seq = txn.fanout_cursor()?;
                    txn.set_fanout_cursor(seq + 1)?;
                    if i % 5 == 0 {
                        return Err(Error::AlreadyExists("refused".into()));
                    }
                    Ok(id)
                })
                .await
            })
        })
        .collect();
    let mut ids = BTreeSet::new();
    for task in tasks {
        if let Ok(id) = task.await.unwrap() {
            assert!(ids.insert(id), "id {id} handed out twice");
        }
    }
    assert!(runs.load(Ordering::Relaxed) >= 24, "every job ran");
    let committed = ids.len() as u64;
    let cursor = read(&*store, |r| r.fanout_cursor());
    assert_eq!(cursor, committed, "each committed job's increment counts once");
    let next = write(&*store, |txn| txn.next_id(Counter::Subscription)).await.unwrap();
    assert_eq!(next, committed + 1, "counters count committed jobs only");
}

/// A snapshot shows a transaction whole or not at all, while writers commit.
pub async fn readers_never_see_half_a_transaction(fixture: &mut dyn MetadataFixture) {
    let store = fixture.create();
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..60u64 {
                write(&*store, move |txn| {
                    txn.put_upload(
                        &UploadId::from_stored(&format!("a{i}")),
                        &upload_record("a", i),
                    )?;
                    txn.put_upload(&UploadId::from_stored(&format!("b{i}")), &upload_record("b", i))
                })
                .await
                .unwrap();
            }
        })
    };
    loop {
        let done = writer.is_finished();
        let uploads = read(&*store, |r| r.uploads());
        let a = uploads.iter().filter(|(_, u)| u.temp_name == "a").count();
        let b = uploads.iter().filter(|(_, u)| u.temp_name == "b").count();
        assert_eq!(a, b, "a snapshot saw half a transaction");
        if done {
            assert_eq!(a, 60);
            break;
        }
        tokio::task::yield_now().await;
    }
    writer.await.unwrap();
}

/// Concurrent writers all commit, and their read-modify-write cycles serialize: no update is
/// lost, no id handed out twice, event sequences stay gap-free.
pub async fn concurrent_writers_all_commit_and_serialize(fixture: &mut dyn MetadataFixture) {
    let store = fixture.create();
    let digest = Digest::of(b"shared");
    let created = BlobRecord { size: 6, md5: None, refs: 0 };
    write(&*store, move |txn| txn.put_blob(&digest, &created)).await.unwrap();
    let tasks: Vec<_> = (0..32u32)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let t = transfer("res", i, &[1000 + i], at(i64::from(i)));
                let e = event(EventType::FileTransferInitialized, &t, &t.sender, EventRole::Sender);
                write(&*store, move |txn| {
                    let mut blob = txn.blob(&digest)?.expect("the shared record");
                    blob.refs += 1;
                    txn.put_blob(&digest, &blob)?;
                    store_new(txn, &t)?;
                    txn.append_events(vec![e.clone()])?;
                    txn.next_id(Counter::Delivery)
                })
                .await
                .unwrap()
            })
        })
        .collect();
    let mut ids = BTreeSet::new();
    for task in tasks {
        assert!(ids.insert(task.await.unwrap()), "an id handed out twice");
    }
    assert_eq!(ids, (1..=32).collect(), "ids are 1, 2, … among committed jobs");
    read(&*store, |r| {
        assert_eq!(r.blob(&digest)?.map(|b| b.refs), Some(32), "a lost update");
        assert_eq!(r.transfer_ids()?.len(), 32);
        let seqs: Vec<u64> = r.events_after(0, 100)?.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=32).collect::<Vec<_>>(), "event sequences are gap-free");
        assert_eq!(r.last_event_seq()?, 32);
        Ok(())
    });
}

/// Inserting a service owner or a transfer whose key is taken fails with `AlreadyExists`.
pub async fn inserts_refuse_taken_keys(fixture: &mut dyn MetadataFixture) {
    let store = fixture.create();
    let owner = ServiceOwner { id: party(1), name: "Owner".into(), created: at(0) };
    let t = transfer("res", 1, &[2], at(0));
    let (o, t1) = (owner.clone(), t.clone());
    write(&*store, move |txn| {
        txn.insert_service_owner(&o)?;
        store_new(txn, &t1)
    })
    .await
    .unwrap();
    let o = ServiceOwner { name: "Other".into(), ..owner.clone() };
    let again = write(&*store, move |txn| txn.insert_service_owner(&o)).await;
    assert!(matches!(again, Err(Error::AlreadyExists(_))), "{again:?}");
    let t1 = t.clone();
    let again = write(&*store, move |txn| txn.insert_transfer(&t1)).await;
    assert!(matches!(again, Err(Error::AlreadyExists(_))), "{again:?}");
    read(&*store, |r| {
        assert_eq!(r.service_owner(&party(1))?, Some(owner.clone()), "the first one stays");
        assert_eq!(r.transfer(t.id)?, Some(t.clone()));
        Ok(())
    });
}

/// History rows are appended after what is stored (a shorter history is refused), and the
/// searches by resource and by party cover `[from, to)`, oldest first, up to their limit.
pub async fn histories_append_and_searches_range(fixture: &mut dyn MetadataFixture) {
    let store = fixture.create();
    let a = transfer("res-a", 1, &[2, 3], at(10));
    let b = transfer("res-a", 2, &[3], at(20));
    let c = transfer("res-b", 1, &[3], at(30));
    let all = [a.clone(), b.clone(), c.clone()];
    write(&*store, move |txn| all.iter().try_for_each(|t| store_new(txn, t))).await.unwrap();

    let mut grown = a.clone();
    let stored = StoredHistory::of(&grown);
    grown.start_upload(at(11)).unwrap();
    grown.fail("stopped", at(12)).unwrap();
    let g = grown.clone();
    write(&*store, move |txn| txn.put_transfer(&g, stored)).await.unwrap();
    let back = read(&*store, |r| r.transfer(a.id)).expect("the transfer");
    assert_eq!(back, grown);
    assert_eq!(back.status(), FileTransferStatus::Failed);
    assert_eq!(back.status_history.len(), 3);

    let shrunk = a.clone();
    let refused = write(&*store, move |txn| {
        txn.put_transfer(&shrunk, StoredHistory { status: 5, recipient: 0 })
    })
    .await;
    assert!(matches!(refused, Err(Error::Corrupt(_))), "a history shrank: {refused:?}");

    read(&*store, |r| {
        let res_a = resource_id("res-a");
        assert_eq!(r.transfers_by_resource(&res_a, at(0), at(100), 10)?, vec![a.id, b.id]);
        assert_eq!(r.transfers_by_resource(&res_a, at(0), at(100), 1)?, vec![a.id], "limit");
        assert_eq!(r.transfers_by_resource(&res_a, at(10), at(20), 10)?, vec![a.id], "[from, to)");
        assert_eq!(r.transfers_by_resource(&res_a, at(11), at(20), 10)?, vec![]);
        assert_eq!(r.transfers_by_resource(&resource_id("res-c"), at(0), at(100), 10)?, vec![]);
        assert_eq!(r.transfers_by_party(&party(1), false, at(0), at(100), 10)?, vec![a.id, c.id]);
        assert_eq!(r.transfers_by_party(&party(1), true, at(0), at(100), 10)?, vec![]);
        assert_eq!(
            r.transfers_by_party(&party(3), true, at(0), at(100), 10)?,
            vec![a.id, b.id, c.id],
            "as recipient, oldest first"
        );
        assert_eq!(r.transfers_by_party(&party(3), true, at(15), at(30), 10)?, vec![b.id]);
        assert_eq!(r.transfer(FileTransferId::new_random())?, None);
        Ok(())
    });
}

/// Events get the next sequences in order, an id already logged is skipped (in the same batch
/// too), and the log reads by sequence, by id and after a cursor.
pub async fn events_are_gap_free_deduplicated_and_ordered(fixture: &mut dyn MetadataFixture) {
    let store = fixture.create();
    let t = transfer("res", 1, &[2, 3], at(0));
    let e1 = event(EventType::FileTransferInitialized, &t, &party(1), EventRole::Sender);
    let e2 = event(EventType::Published, &t, &party(2), EventRole::Recipient);
    let e3 = event(EventType::Published, &t, &party(3), EventRole::Recipient);
    let first = vec![e1.clone(), e2.clone(), e1.clone()];
    let n = write(&*store, move |txn| txn.append_events(first.clone())).await.unwrap();
    assert_eq!(n, 2, "an id twice in one batch is logged once");
    let second = vec![e2.clone(), e3.clone()];
    let n = write(&*store, move |txn| txn.append_events(second.clone())).await.unwrap();
    assert_eq!(n, 1, "an id logged before is skipped");
    assert_eq!(write(&*store, |txn| txn.append_events(Vec::new())).await.unwrap(), 0);
    drop(store);
    let store = fixture.reopen();
    read(&*store, |r| {
        let log = r.events_after(0, 10)?;
        let expected: Vec<EventRecord> = [&e1, &e2, &e3]
            .iter()
            .enumerate()
            .map(|(i, e)| EventRecord { seq: i as u64 + 1, ..(*e).clone() })
            .collect();
        assert_eq!(log, expected, "sequences 1, 2, 3 in append order");
        assert_eq!(r.events_after(1, 1)?, expected[1..2], "after a cursor, up to a limit");
        assert_eq!(r.events_after(3, 10)?, vec![]);
        assert_eq!(r.event(2)?, Some(expected[1].clone()));
        assert_eq!(r.event(4)?, None);
        assert_eq!(r.event_seq(&e3.id)?, Some(3));
        assert_eq!(r.event_seq(&uuid::Uuid::nil())?, None);
        assert_eq!(r.last_event_seq()?, 3);
        Ok(())
    });
}

/// Scheduled jobs come due at or before `now`, earliest first, up to the limit; a job is
/// stored once however often it is scheduled, and unscheduling says whether it was there.
pub async fn jobs_come_due_in_order(fixture: &mut dyn MetadataFixture) {
    let store = fixture.create();
    let (x, y) = (FileTransferId::new_random(), FileTransferId::new_random());
    let jobs = [
        Job { due: at(30), transfer: x, kind: JobKind::GracePurge },
        Job { due: at(10), transfer: x, kind: JobKind::Expiry },
        Job { due: at(20), transfer: y, kind: JobKind::StuckUpload },
        Job { due: at(20), transfer: y, kind: JobKind::StuckUpload },
        Job { due: at(40), transfer: y, kind: JobKind::ScanTimeout },
    ];
    write(&*store, move |txn| jobs.iter().try_for_each(|j| txn.schedule(j))).await.unwrap();
    read(&*store, |r| {
        let due = r.due_jobs(at(30), 10)?;
        assert_eq!(due, vec![jobs[1], jobs[2], jobs[0]], "earliest first, each once");
        assert_eq!(r.due_jobs(at(30), 2)?, vec![jobs[1], jobs[2]], "up to the limit");
        assert_eq!(r.due_jobs(at(9), 10)?, vec![]);
        Ok(())
    });
    let first = write(&*store, move |txn| txn.unschedule(&jobs[1])).await.unwrap();
    let second = write(&*store, move |txn| txn.unschedule(&jobs[1])).await.unwrap();
    assert!(first && !second, "unschedule tells whether the job was there");
    assert_eq!(read(&*store, |r| r.due_jobs(at(100), 10)), vec![jobs[2], jobs[0], jobs[4]]);
}

/// Blob records, the deletion queue, uploads and scan progress: put, replace, remove.
pub async fn blob_records_and_the_deletion_queue(fixture: &mut dyn MetadataFixture) {
    let store = fixture.create();
    let (d1, d2) = (Digest::of(b"one"), Digest::of(b"two"));
    let upload = UploadId::from_stored("u1");
    let id = FileTransferId::new_random();
    let progress =
        ScanProgress { blob: d1, segment_len: 8, overlap: 1, clean: BTreeSet::from([1]) };
    let p = progress.clone();
    let u = upload.clone();
    write(&*store, move |txn| {
        txn.put_blob(&d1, &BlobRecord { size: 3, md5: None, refs: 1 })?;
        txn.put_blob(&d1, &BlobRecord { size: 3, md5: Some(Md5::of(b"one")), refs: 2 })?;
        txn.put_blob(&d2, &BlobRecord { size: 3, md5: None, refs: 1 })?;
        txn.queue_gc(&d2)?;
        txn.queue_gc(&d2)?;
        txn.put_upload(&u, &upload_record("x", 1))?;
        txn.put_upload(&u, &upload_record("x", 7))?;
        txn.put_scan_progress(id, &p)
    })
    .await
    .unwrap();
    read(&*store, |r| {
        assert_eq!(r.blob(&d1)?.map(|b| (b.refs, b.md5)), Some((2, Some(Md5::of(b"one")))));
        assert_eq!(r.blobs()?.len(), 2);
        assert_eq!(r.pending_gc()?, vec![d2], "queued once");
        assert_eq!(r.upload(&upload)?.map(|u| u.committed), Some(7), "put replaces");
        assert_eq!(r.scan_progress(id)?, Some(progress.clone()));
        Ok(())
    });
    let u = upload.clone();
    let removed = write(&*store, move |txn| {
        txn.remove_blob(&d2)?;
        txn.unqueue_gc(&d2)?;
        txn.unqueue_gc(&d1)?; // not queued: fine
        txn.remove_scan_progress(id)?;
        let first = txn.remove_upload(&u)?;
        let second = txn.remove_upload(&u)?;
        Ok((first, second))
    })
    .await
    .unwrap();
    assert_eq!(removed, (Some(upload_record("x", 7)), None), "remove_upload returns the record");
    read(&*store, |r| {
        assert_eq!(r.blob(&d2)?, None);
        assert_eq!(r.blobs()?.len(), 1);
        assert_eq!(r.pending_gc()?, vec![]);
        assert_eq!(r.upload(&upload)?, None);
        assert_eq!(r.scan_progress(id)?, None);
        Ok(())
    });
}

/// Inline blob bytes: stored and read back exactly, committed with their transaction (or not
/// at all), removed once, and kept across a reopen.
pub async fn inline_blobs_commit_with_their_transaction(fixture: &mut dyn MetadataFixture) {
    let store = fixture.create();
    let (small, other) = (payload(21, 4096), payload(22, 64 * 1024));
    let (d1, d2) = (Digest::of(&small), Digest::of(&other));
    let (a, b) = (small.clone(), other.clone());
    write(&*store, move |txn| {
        txn.put_blob(&d1, &BlobRecord { size: a.len() as u64, md5: None, refs: 1 })?;
        txn.put_inline_blob(&d1, &a)?;
        txn.put_inline_blob(&d2, &b)
    })
    .await
    .unwrap();
    let refused = write(&*store, move |txn| {
        txn.put_inline_blob(&Digest::of(b"never"), b"never")?;
        txn.remove_inline_blob(&d2)?;
        Err::<(), _>(crate::Error::Corrupt("refused on purpose".into()))
    })
    .await;
    assert!(refused.is_err());
    read(&*store, |r| {
        assert!(r.inline_blob(&d1)?.is_some_and(|bytes| bytes == small), "reads back exactly");
        assert!(r.inline_blob(&d2)?.is_some(), "a refused transaction removed nothing");
        assert_eq!(r.inline_blob(&Digest::of(b"never"))?, None, "nor stored anything");
        Ok(())
    });
    let removed = write(&*store, move |txn| {
        let first = txn.remove_inline_blob(&d2)?;
        Ok((first, txn.remove_inline_blob(&d2)?))
    })
    .await
    .unwrap();
    assert_eq!(removed, (true, false), "remove_inline_blob says whether there were bytes");
    drop(store);
    let store = fixture.reopen();
    read(&*store, |r| {
        assert!(r.inline_blob(&d1)?.is_some_and(|bytes| bytes == small), "durable");
        assert_eq!(r.inline_blob(&d2)?, None);
        Ok(())
    });
}

/// Subscriptions, pending deliveries (due order), dead letters and the fan-out cursor.
pub async fn webhook_records(fixture: &mut dyn MetadataFixture) {
    let store = fixture.create();
    assert!(!read(&*store, |r| r.has_subscriptions()));
    assert_eq!(read(&*store, |r| r.fanout_cursor()), 0, "the cursor starts at 0");
    let ids = write(&*store, |txn| {
        let a = txn.next_id(Counter::Subscription)?;
        let b = txn.next_id(Counter::Subscription)?;
        let d = txn.next_id(Counter::Delivery)?;
        txn.put_subscription(&Subscription { id: a, ..subscription(1) })?;
        txn.put_subscription(&Subscription { id: b, ..subscription(2) })?;
        txn.put_delivery(&delivery(10, a, at(30)))?;
        txn.put_delivery(&delivery(11, a, at(10)))?;
        txn.put_delivery(&delivery(12, b, at(20)))?;
        txn.put_dead_letter(&delivery(13, b, at(5)))?;
        txn.set_fanout_cursor(7)?;
        Ok((a, b, d))
    })
    .await
    .unwrap();
    assert_eq!(ids, (1, 2, 1), "each counter counts from 1 on its own");
    read(&*store, |r| {
        assert!(r.has_subscriptions()?);
        assert_eq!(r.subscriptions()?.iter().map(|s| s.id).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(r.due_deliveries(at(20), 10)?, vec![11, 12], "due first, up to now");
        assert_eq!(r.due_deliveries(at(100), 2)?, vec![11, 12], "up to the limit");
        assert_eq!(r.deliveries()?.len(), 3);
        assert_eq!(r.dead_letters()?, vec![delivery(13, 2, at(5))]);
        assert_eq!(r.fanout_cursor()?, 7);
        Ok(())
    });
    // A delivery moved to a new due time is found there only.
    let moved = write(&*store, |txn| {
        let mut d = txn.remove_delivery(11)?.expect("pending");
        d.due = at(50);
        txn.put_delivery(&d)?;
        txn.remove_dead_letter(13)?;
        txn.remove_subscription(2)?;
        txn.remove_delivery(99)
    })
    .await
    .unwrap();
    assert_eq!(moved, None, "removing a missing delivery returns nothing");
    read(&*store, |r| {
        assert_eq!(r.due_deliveries(at(40), 10)?, vec![12, 10]);
        assert_eq!(r.due_deliveries(at(50), 10)?, vec![12, 10, 11]);
        assert_eq!(r.delivery(11)?.map(|d| d.due), Some(at(50)));
        assert_eq!(r.dead_letters()?, vec![]);
        assert_eq!(r.subscription(2)?, None);
        assert_eq!(r.subscriptions()?.len(), 1);
        Ok(())
    });
}
