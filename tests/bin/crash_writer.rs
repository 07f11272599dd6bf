//! Writes through the storage engine until it is killed; used by the crash tests.
//!
//! Usage: `crash-writer <data dir> <seed>`. Four concurrent workers create transfers, upload
//! files (some with identical content, to exercise dedup), checkpoint as they go, complete,
//! sometimes purge, and sometimes leave an upload half-done. After each acknowledged step a line
//! goes to stdout:
//!
//! - `ack <transfer id> <blake3 hex>`: upload completed and published (durable);
//! - `purged <transfer id>`: purge committed;
//! - `partial <upload id> <committed offset>`: this much of an upload is durable.

use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use integration_tests::payload;
use storage::model::*;
use storage::{Storage, StorageOptions};

fn say(line: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn party(n: u64) -> Party {
    Party::parse(&format!("0192:{:09}", 910_000_000 + n)).expect("valid party")
}

async fn worker(storage: Storage, seed: u64) -> anyhow::Result<()> {
    let mut n = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut next = || {
        n ^= n << 13;
        n ^= n >> 7;
        n ^= n << 17;
        n
    };
    let mut published = Vec::new();
    loop {
        let new = NewFileTransfer {
            resource_id: ResourceId::parse("crash")?,
            file_name: "f.bin".into(),
            senders_reference: "r".into(),
            sender: party(1),
            recipients: vec![party(2 + next() % 3)],
            property_list: Default::default(),
            declared_checksum: None,
            declared_blake3: None,
            use_virus_scan: false,
        };
        let id = FileTransferId::new_random();
        let t = FileTransfer::initialize(id, new, Timestamp::now(), Duration::from_secs(3600));
        storage.insert_transfer(t).await?;
        storage.update_transfer(id, |t| Ok(t.start_upload(Timestamp::now())?)).await?;
        // A few content seeds repeat, so identical content is uploaded concurrently. A quarter
        // are small enough to be kept inline in the index.
        let size = if next() % 4 == 0 {
            (next() % (storage::DEFAULT_INLINE_MAX + 1)) as usize
        } else {
            (next() % (3 * 1024 * 1024)) as usize
        };
        let data = payload(next() % 6, size);
        let upload_id = UploadId::for_transfer(id);
        let mut upload = storage.open_upload(upload_id.clone(), Timestamp::now()).await?;
        let abandon = next() % 5 == 0;
        for chunk in data.chunks(200_000) {
            upload.write(Bytes::copy_from_slice(chunk)).await?;
            let committed = upload.checkpoint(Timestamp::now()).await?;
            say(format!("partial {upload_id} {committed}"));
            if abandon && committed > size as u64 / 2 {
                break;
            }
        }
        if abandon {
            continue;
        }
        let (t, _) = storage.complete_upload(id, upload, Timestamp::now()).await?;
        say(format!("ack {id} {}", t.content.expect("completed").blake3));
        published.push(id);
        if published.len() > 3 && next() % 2 == 0 {
            let victim = published.remove((next() % published.len() as u64) as usize);
            storage.update_transfer(victim, |t| Ok(t.purge(Timestamp::now())?)).await?;
            say(format!("purged {victim}"));
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().expect("data dir");
    let seed: u64 = args.next().expect("seed").parse()?;
    let storage = Storage::open(StorageOptions::new(dir)).await?;
    let workers: Vec<_> =
        (0..4).map(|i| tokio::spawn(worker(storage.clone(), seed * 16 + i + 1))).collect();
    for w in workers {
        w.await??;
    }
    Ok(())
}
