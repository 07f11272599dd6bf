use bytes::Bytes;
use integration_tests::{CHUNK, INTERESTING_SIZES, chunks, payload, temp_storage};
use storage::{Digest, INLINE_MD5_LIMIT, Md5, Md5Follower, Storage, Verification};

async fn add(storage: &Storage, data: &[u8], piece: usize) -> storage::model::StoredContent {
    let mut ingest = storage.blob_writer().await.unwrap();
    // MD5 follows the bytes beside the writer, as the server computes it.
    let md5 = Md5Follower::follow(ingest.tail().unwrap());
    for chunk in chunks(data, piece) {
        ingest.write(chunk).await.unwrap();
    }
    let mut content = storage.add_blob(ingest).await.unwrap();
    let followed = md5.finish().await.unwrap();
    if data.len() as u64 <= INLINE_MD5_LIMIT {
        assert_eq!(content.md5, Some(followed), "a small blob gets its MD5 inline");
    } else {
        assert_eq!(content.md5, None, "ingest of a large blob does not wait for MD5");
    }
    content.md5 = Some(followed);
    content
}

async fn read_all(storage: &Storage, digest: &Digest, offset: u64, len: Option<u64>) -> Vec<u8> {
    let mut range = storage.read_blob(digest, offset, len).await.unwrap();
    let mut out = Vec::new();
    while let Some(chunk) = range.next_chunk(CHUNK).await.unwrap() {
        out.extend_from_slice(&chunk);
    }
    out
}

fn files_under(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() { files_under(&e.path()) } else { 1 }
        })
        .sum()
}

#[tokio::test]
async fn blobs_round_trip_at_interesting_sizes() {
    let (_dir, storage) = temp_storage().await;
    for (i, &size) in INTERESTING_SIZES.iter().enumerate() {
        let data = payload(i as u64, size);
        // Odd piece sizes exercise the MD5 thread hand-over at every alignment.
        let content = add(&storage, &data, 100_003).await;
        assert_eq!(content.size, size as u64);
        assert_eq!(content.blake3, Digest::of(&data), "size {size}");
        assert_eq!(content.md5, Some(Md5::of(&data)), "size {size}");
        // Recorded on demand for blobs written without a follower.
        assert_eq!(storage.blob_md5(&content.blake3).await.unwrap(), Md5::of(&data));
        assert_eq!(storage.blob(&content.blake3).unwrap().unwrap().md5, Some(Md5::of(&data)));
        assert_eq!(read_all(&storage, &content.blake3, 0, None).await, data, "size {size}");
        // Ranges: a middle slice, a tail, and a length past the end (clamped).
        if size > 2 {
            let (a, b) = (size / 3, size / 3 + size / 2);
            let got = read_all(&storage, &content.blake3, a as u64, Some((b - a) as u64)).await;
            assert_eq!(got, &data[a..b]);
            let got = read_all(&storage, &content.blake3, b as u64, Some(u64::MAX)).await;
            assert_eq!(got, &data[b..]);
        }
        assert_eq!(read_all(&storage, &content.blake3, size as u64, None).await, Vec::<u8>::new());
        assert!(storage.read_blob(&content.blake3, size as u64 + 1, None).await.is_err());
        assert_eq!(storage.verify_blob(&content.blake3).await.unwrap(), Verification::Intact);
    }
}

#[tokio::test]
async fn identical_content_written_concurrently_is_stored_once() {
    let (dir, storage) = temp_storage().await;
    let data = Bytes::from(payload(7, 5 * 1024 * 1024));
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let storage = storage.clone();
            let data = data.clone();
            // Different piece sizes per writer: the content, not the framing, decides.
            tokio::spawn(async move { add(&storage, &data, 65_536 + i * 4099).await })
        })
        .collect();
    let mut digests = Vec::new();
    for task in tasks {
        digests.push(task.await.unwrap().blake3);
    }
    assert!(digests.iter().all(|d| *d == digests[0]));
    let digest = digests[0];
    assert_eq!(storage.blob(&digest).unwrap().unwrap().refs, 8);
    assert_eq!(files_under(&dir.path().join("blobs")), 1, "content stored more than once");
    assert_eq!(files_under(&dir.path().join("tmp")), 0, "temporaries left behind");

    // The file goes with the last reference, not before.
    for i in 0..8 {
        assert!(storage.blob_path(&digest).exists(), "deleted after {i} releases");
        storage.release_blob(digest).await.unwrap();
    }
    assert!(storage.blob(&digest).unwrap().is_none());
    assert!(!storage.blob_path(&digest).exists());
    assert_eq!(files_under(&dir.path().join("blobs")), 0);
}

#[tokio::test]
async fn verification_catches_a_flipped_byte() {
    let (_dir, storage) = temp_storage().await;
    let data = payload(3, 1024 * 1024 + 5);
    let content = add(&storage, &data, CHUNK).await;
    let path = storage.blob_path(&content.blake3);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[777_777] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    match storage.verify_blob(&content.blake3).await.unwrap() {
        Verification::Corrupt { actual } => assert_eq!(actual, Digest::of(&bytes)),
        other => panic!("corruption not detected: {other:?}"),
    }
    let problems = storage.check_consistency().await.unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    std::fs::remove_file(&path).unwrap();
    assert_eq!(storage.verify_blob(&content.blake3).await.unwrap(), Verification::Missing);
}

#[tokio::test]
async fn an_abandoned_write_leaves_nothing_behind() {
    let (dir, storage) = temp_storage().await;
    let mut ingest = storage.blob_writer().await.unwrap();
    ingest.write(Bytes::from(payload(1, 3 * CHUNK))).await.unwrap();
    assert_eq!(files_under(&dir.path().join("tmp")), 1);
    drop(ingest);
    assert_eq!(files_under(&dir.path().join("tmp")), 0);
    assert_eq!(files_under(&dir.path().join("blobs")), 0);
}
