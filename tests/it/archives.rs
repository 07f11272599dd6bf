//! Archives too large for one clamd stream (8 MiB here): scanned as raw segments, and member by
//! member. Each archive is made on the fly so that EICAR inside it is visible only once a member
//! is decompressed: its deflated bytes cross a segment boundary (no segment holds the member's
//! header with them), so the raw segments alone miss it; the member scan finds it.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::time::{Duration, Instant};

use bytes::Bytes;
use client::v1 as pb;
use integration_tests::{ClamdLimits, TestClamd, TestServer, eicar, owner_with_resource, payload};
use scanner::Verdict;

const MIB: usize = 1 << 20;
const LIMIT: u64 = 8 * MIB as u64;
const OWNER: &str = "991825827";
const SENDER: &str = "910753614";
const RECIPIENT: &str = "986252932";
const ALL: &[&str] = &["altinn:broker.write", "altinn:broker.read", "altinn:serviceowner"];

/// A clamd that takes streams of at most 8 MiB, and unpacks up to 200 MiB from one (as the
/// project's clamd takes 2 GiB streams and unpacks up to 4000 MiB): a raw segment of an archive
/// is an archive clamd partly unpacks itself.
fn small_clamd() -> TestClamd {
    TestClamd::start_with(ClamdLimits {
        stream_max: "8M",
        max_file: "200M",
        max_scan: "200M",
        ..Default::default()
    })
}

/// `len` bytes of hexadecimal digits (4 bits of entropy each: deflate halves them, and codes
/// every byte in bits, so nothing of the original shows in the compressed bytes), with EICAR at
/// `eicar_at`.
fn hex_text(seed: u64, len: usize, eicar_at: Option<usize>) -> Vec<u8> {
    let mut out: Vec<u8> =
        payload(seed, len).iter().map(|b| b"0123456789abcdef"[(b & 15) as usize]).collect();
    if let Some(at) = eicar_at {
        out[at..at + 68].copy_from_slice(&eicar());
    }
    out
}

/// A ZIP: 6 MiB of random bytes stored, then 6 MiB of hex text deflated to about 3 MiB (bytes
/// 6–9 MiB of the archive, across the end of segment 0 at 8 MiB), EICAR near its end.
fn zip_with_eicar_deflated_across_a_boundary() -> Vec<u8> {
    use zip::write::SimpleFileOptions;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let stored = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("random.bin", stored).unwrap();
    zip.write_all(&payload(40, 6 * MIB)).unwrap();
    let deflated =
        SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    zip.start_file("notes.txt", deflated).unwrap();
    zip.write_all(&hex_text(41, 6 * MIB, Some(6 * MIB - 1000))).unwrap();
    zip.finish().unwrap().into_inner()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

#[tokio::test]
async fn raw_segments_miss_eicar_deflated_across_a_boundary_and_the_member_scan_finds_it() {
    let clamd = small_clamd();
    let client = clamd.client_with(|o| o.max_stream_len = LIMIT);
    let zip = zip_with_eicar_deflated_across_a_boundary();
    assert!(zip.len() as u64 > LIMIT, "{}", zip.len());
    // As raw segments the file is clean: EICAR exists only after inflation.
    let raw = client.scan_file(&Bytes::from(zip.clone()), &BTreeSet::new(), |_| {}).await;
    assert_eq!(raw.verdict, Verdict::Clean, "{raw:?}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.zip");
    std::fs::write(&path, &zip).unwrap();
    assert_eq!(scanner::detect_archive(&path).unwrap(), Some(scanner::ArchiveKind::Zip));
    let plan = client.segment_plan().unwrap();
    let mut names = Vec::new();
    let members = client
        .scan_members(&path, scanner::ArchiveKind::Zip, plan, |name, _| names.push(name.to_owned()))
        .await;
    match &members.verdict {
        Verdict::Infected { signature } => assert!(signature.starts_with("Eicar-Test-Signature")),
        other => panic!("EICAR in the deflated member not found: {other:?}"),
    }
    assert_eq!(names, ["random.bin", "notes.txt"]);
}

#[tokio::test]
async fn a_gzip_stream_is_scanned_decompressed_in_segments() {
    let clamd = small_clamd();
    let client = clamd.client_with(|o| o.max_stream_len = LIMIT);
    // 20 MiB of text, EICAR at 15 MiB, compressed to about 10 MiB: three segments of 8 MiB once
    // inflated, scanned one after the other as the stream is inflated.
    let plan = client.segment_plan().unwrap();
    assert_eq!(plan.count(20 * MIB as u64), 3);
    let gz = gzip(&hex_text(42, 20 * MIB, Some(15 * MIB + 5)));
    assert!(gz.len() as u64 > LIMIT);
    let raw = client.scan_file(&Bytes::from(gz.clone()), &BTreeSet::new(), |_| {}).await;
    assert_eq!(raw.verdict, Verdict::Clean, "{raw:?}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.gz");
    std::fs::write(&path, &gz).unwrap();
    assert_eq!(scanner::detect_archive(&path).unwrap(), Some(scanner::ArchiveKind::Gzip));
    let members = client.scan_members(&path, scanner::ArchiveKind::Gzip, plan, |_, _| {}).await;
    assert!(matches!(members.verdict, Verdict::Infected { .. }), "{members:?}");
    // The same text without EICAR is clean, in the same three segments.
    let text = hex_text(42, 20 * MIB, None);
    std::fs::write(&path, gzip(&text)).unwrap();
    let members = client.scan_members(&path, scanner::ArchiveKind::Gzip, plan, |_, _| {}).await;
    assert_eq!(members.verdict, Verdict::Clean);
    assert_eq!(members.scanned, 1);
    let sequential = client.scan_sequential(Bytes::from(text), plan).await;
    assert_eq!(sequential.segments, Some(3));
    assert_eq!(sequential.clean, (0..3).collect());
}

#[tokio::test]
async fn eicar_across_the_segments_of_a_sequential_stream_is_found() {
    let clamd = small_clamd();
    let client = clamd.client_with(|o| o.max_stream_len = LIMIT);
    let plan = client.segment_plan().unwrap();
    let len = 20 * MIB;
    let end0 = plan.range(0, len as u64).unwrap().end as usize;
    let mut data = payload(43, len);
    data[end0 - 34..end0 + 34].copy_from_slice(&eicar());
    let outcome = client.scan_sequential(Bytes::from(data), plan).await;
    assert!(matches!(outcome.verdict, Verdict::Infected { .. }), "{outcome:?}");
}

/// A tar with one member of `data`.
fn tar(name: &str, data: &[u8]) -> Vec<u8> {
    let mut header = [0u8; 512];
    header[..name.len()].copy_from_slice(name.as_bytes());
    header[100..108].copy_from_slice(b"0000644\0");
    header[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
    header[136..148].copy_from_slice(b"00000000000\0");
    header[156] = b'0';
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut out = header.to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512 + 1024, 0);
    out
}

async fn server(clamd: &TestClamd) -> (TestServer, client::Client, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path(), &clamd.address(), 0, |c| {
        c.clamd.max_stream_bytes = LIMIT;
    })
    .await;
    let owner = server.client(server.token(OWNER, ALL));
    owner_with_resource(&owner, "res", &[SENDER], &[RECIPIENT]).await;
    let sender = server.client(server.token(SENDER, ALL));
    (server, sender, dir)
}

async fn send(sender: &client::Client, data: Vec<u8>) -> pb::FileTransferOverview {
    let id =
        integration_tests::initialize_transfer(sender, "res", SENDER, &[RECIPIENT]).await.unwrap();
    let total = data.len() as u64;
    let mut chunks = data.chunks(MIB).map(Bytes::copy_from_slice).collect::<Vec<_>>().into_iter();
    let next = move || {
        let chunk = chunks.next();
        async move { Ok(chunk) }
    };
    sender.upload_once(&id, 0, Some(total), next, &mut |_| {}).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let overview = sender.overview(&id).await.unwrap();
        let status = overview.file_transfer_status;
        if status == pb::FileTransferStatus::Published as i32
            || status == pb::FileTransferStatus::Failed as i32
        {
            return overview;
        }
        assert!(Instant::now() < deadline, "{id} stuck in {overview:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_large_zip_with_eicar_in_a_deflated_member_fails_and_a_clean_one_says_how_it_was_scanned()
{
    let clamd = small_clamd();
    let (_server, sender, _dir) = server(&clamd).await;
    let failed = send(&sender, zip_with_eicar_deflated_across_a_boundary()).await;
    assert_eq!(failed.file_transfer_status, pb::FileTransferStatus::Failed as i32);
    assert!(
        failed.file_transfer_status_text.contains("Eicar-Test-Signature"),
        "{}",
        failed.file_transfer_status_text
    );
    assert!(
        failed.file_transfer_status_text.contains("(in member notes.txt)"),
        "{}",
        failed.file_transfer_status_text
    );

    let clean = send(&sender, tar("data.bin", &payload(44, 12 * MIB))).await;
    assert_eq!(clean.file_transfer_status, pb::FileTransferStatus::Published as i32);
    assert_eq!(
        clean.file_transfer_status_text,
        "Ready for download. Scanned as 2 overlapping segments, and member by member as a tar archive (1 member)."
    );
    let raw = send(&sender, payload(45, 12 * MIB)).await;
    assert_eq!(raw.file_transfer_status, pb::FileTransferStatus::Published as i32);
    assert!(
        raw.file_transfer_status_text.contains("not a ZIP, tar or gzip archive"),
        "{}",
        raw.file_transfer_status_text
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_archive_ferry_cannot_read_to_its_end_is_published_with_what_was_not_unpacked() {
    let clamd = small_clamd();
    let (_server, sender, _dir) = server(&clamd).await;
    // A gzip stream cut short: inflating it fails near its end. What inflated was scanned; the
    // status text says the rest was not unpacked.
    let mut gz = gzip(&hex_text(46, 20 * MIB, None));
    gz.truncate(gz.len() - 100_000);
    let overview = send(&sender, gz).await;
    assert_eq!(
        overview.file_transfer_status,
        pb::FileTransferStatus::Published as i32,
        "{}",
        overview.file_transfer_status_text
    );
    assert!(
        overview.file_transfer_status_text.contains("unreadable"),
        "{}",
        overview.file_transfer_status_text
    );
}

/// Writes a 2.3 GiB ZIP64 at `path`: a 2.25 GiB stored member `big.bin` of random blocks (EICAR
/// at `stored_eicar_at` into it), then a small deflated member `notes.txt` of hex text (EICAR 3
/// MiB into it when `deflated_eicar`).
fn write_zip64(path: &std::path::Path, stored_eicar_at: Option<usize>, deflated_eicar: bool) {
    use zip::write::SimpleFileOptions;
    let file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut zip = zip::ZipWriter::new(file);
    let stored = SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(true);
    zip.start_file("big.bin", stored).unwrap();
    let mut block = payload(47, MIB);
    for n in 0..2304usize {
        block[..8].copy_from_slice(&(n as u64).to_le_bytes());
        match stored_eicar_at {
            Some(at) if at / MIB == n => {
                let mut marked = block.clone();
                marked[at % MIB..at % MIB + 68].copy_from_slice(&eicar());
                zip.write_all(&marked).unwrap();
            }
            _ => zip.write_all(&block).unwrap(),
        }
    }
    let deflated =
        SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    zip.start_file("notes.txt", deflated).unwrap();
    zip.write_all(&hex_text(48, 4 * MIB, deflated_eicar.then_some(3 * MIB))).unwrap();
    zip.finish().unwrap();
    let size = std::fs::metadata(path).unwrap().len();
    assert!(size > scanner::CLAMD_MAX_STREAM, "{size}");
}

/// At the real limit, member by member: a 2.3 GiB ZIP64 whose 2.25 GiB stored member holds EICAR
/// 2.1 GiB into it — past clamd's 2 GiB − 3 stream limit, so the member itself is scanned in two
/// overlapping segments. The member scan finds it and names the member.
#[tokio::test(flavor = "multi_thread")]
async fn beyond_2gib_eicar_in_a_stored_zip64_member_is_found_in_that_member() {
    if !integration_tests::large_tests_wanted("write and scan a 2.3 GiB ZIP64 member by member") {
        return;
    }
    let clamd = TestClamd::start_with(ClamdLimits::project());
    let client = clamd.client();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.zip");
    write_zip64(&path, Some(2150 * MIB + 12_345), false);
    assert_eq!(scanner::detect_archive(&path).unwrap(), Some(scanner::ArchiveKind::Zip));
    let plan = client.segment_plan().unwrap();
    assert_eq!(plan.count(2304 * MIB as u64), 2);
    let mut heard = Vec::new();
    let members = client
        .scan_members(&path, scanner::ArchiveKind::Zip, plan, |name, member| {
            heard.push((name.to_owned(), member.verdict.is_clean()))
        })
        .await;
    match &members.verdict {
        Verdict::Infected { signature } => {
            assert!(signature.starts_with("Eicar-Test-Signature"), "{signature}");
            assert!(signature.ends_with("(in member big.bin)"), "{signature}");
        }
        other => panic!("EICAR in the stored member not found: {other:?}"),
    }
    assert_eq!(heard, [("big.bin".to_owned(), false)]);
}

/// At the real limit: a 2.3 GiB ZIP64 (the project's clamd configuration, segments of
/// 2 GiB − 3) whose 2.25 GiB stored member is clean and whose small deflated member, after it,
/// holds EICAR: Failed, with the signature.
#[tokio::test(flavor = "multi_thread")]
async fn beyond_2gib_a_zip64_with_eicar_in_a_deflated_member_fails() {
    if !integration_tests::large_tests_wanted("write, upload and scan a 2.3 GiB ZIP64") {
        return;
    }
    let clamd = TestClamd::start_with(ClamdLimits::project());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.zip");
    write_zip64(&path, None, true);
    let data_dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(data_dir.path(), &clamd.address(), 0, |c| {
        c.lifecycle.scan_timeout_secs = 3600;
    })
    .await;
    let owner = server.client(server.token(OWNER, ALL));
    owner_with_resource(&owner, "res", &[SENDER], &[RECIPIENT]).await;
    let sender = server.client(server.token(SENDER, ALL));
    let id =
        integration_tests::initialize_transfer(&sender, "res", SENDER, &[RECIPIENT]).await.unwrap();
    sender.upload_file(&id, &path, &mut |_| {}).await.unwrap();
    std::fs::remove_file(&path).unwrap();
    let deadline = Instant::now() + Duration::from_secs(1800);
    let overview = loop {
        let overview = sender.overview(&id).await.unwrap();
        if overview.file_transfer_status == pb::FileTransferStatus::Failed as i32
            || overview.file_transfer_status == pb::FileTransferStatus::Published as i32
        {
            break overview;
        }
        assert!(Instant::now() < deadline, "{overview:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(overview.file_transfer_status, pb::FileTransferStatus::Failed as i32);
    assert!(
        overview.file_transfer_status_text.contains("Eicar-Test-Signature"),
        "{}",
        overview.file_transfer_status_text
    );
}
