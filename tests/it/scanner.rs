use std::time::Duration;

use bytes::Bytes;
use integration_tests::{ClamdLimits, TestClamd, eicar, payload};
use scanner::{ChannelSource, NotScannedReason, ScanError, Verdict};

fn assert_eicar(verdict: &Verdict) {
    match verdict {
        // The test database is unofficial, so clamd appends `.UNOFFICIAL`: assert the prefix.
        Verdict::Infected { signature } => {
            assert!(signature.starts_with("Eicar-Test-Signature"), "{signature}");
            assert!(signature.ends_with(".UNOFFICIAL"), "{signature}");
        }
        other => panic!("EICAR not found: {other:?}"),
    }
}

#[tokio::test]
async fn ping_and_version() {
    let clamd = TestClamd::start();
    let client = clamd.client();
    client.ping().await.unwrap();
    let version = client.version().await.unwrap();
    assert!(version.starts_with("ClamAV "), "{version}");
}

#[tokio::test]
async fn clamd_is_reachable_over_tcp_too() {
    let clamd = TestClamd::start_with(ClamdLimits { tcp: true, ..Default::default() });
    let address = clamd.tcp_address().unwrap();
    let client = scanner::Clamd::new(scanner::ClamdOptions::new(address));
    client.ping().await.unwrap();
    assert!(client.version().await.unwrap().starts_with("ClamAV "));
    assert_eicar(&client.scan(Bytes::from(eicar())).await.unwrap());
    let verdict = client.scan(Bytes::from(payload(9, 3 * 1024 * 1024))).await.unwrap();
    assert_eq!(verdict, Verdict::Clean);
}

#[tokio::test]
async fn eicar_alone_is_found() {
    let clamd = TestClamd::start();
    let verdict = clamd.client().scan(Bytes::from(eicar())).await.unwrap();
    assert_eicar(&verdict);
}

#[tokio::test]
async fn eicar_buried_in_20_mib_of_random_data_is_found() {
    let clamd = TestClamd::start();
    let mut data = payload(1, 20 * 1024 * 1024);
    let at = 10 * 1024 * 1024 + 12_345; // not aligned to any chunk boundary
    data[at..at + 68].copy_from_slice(&eicar());
    let verdict = clamd.client().scan(Bytes::from(data)).await.unwrap();
    assert_eicar(&verdict);
}

#[tokio::test]
async fn fifty_mib_of_random_data_is_clean() {
    let clamd = TestClamd::start();
    let verdict = clamd.client().scan(Bytes::from(payload(2, 50 * 1024 * 1024))).await.unwrap();
    assert_eq!(verdict, Verdict::Clean);
}

#[tokio::test]
async fn a_stream_over_ferrys_limit_is_never_clean() {
    let clamd = TestClamd::start();
    let client = clamd.client_with(|o| o.max_stream_len = 1024 * 1024);
    let verdict = client.scan(Bytes::from(payload(3, 3 * 1024 * 1024))).await.unwrap();
    assert_eq!(
        verdict,
        Verdict::NotScanned { reason: NotScannedReason::TooLarge { limit: 1024 * 1024 } }
    );
    // At the limit exactly, it is scanned.
    let verdict = client.scan(Bytes::from(payload(3, 1024 * 1024))).await.unwrap();
    assert_eq!(verdict, Verdict::Clean);
}

#[tokio::test]
async fn a_stream_over_clamds_stream_limit_is_never_clean() {
    // clamd replies "INSTREAM size limit exceeded. ERROR" and closes; we see a broken pipe while
    // sending and must still read that reply.
    let clamd = TestClamd::start_with(ClamdLimits { stream_max: "1M", ..Default::default() });
    let verdict = clamd.client().scan(Bytes::from(payload(4, 8 * 1024 * 1024))).await.unwrap();
    assert_eq!(verdict, Verdict::NotScanned { reason: NotScannedReason::StreamLimitExceeded });
}

#[tokio::test]
async fn a_file_over_clamds_scan_limits_is_never_clean() {
    // The same mechanism that flags files past clamd's 2 GiB ceiling (AlertExceedsMax), on a
    // clamd whose MaxFileSize is 1 MiB so the test needs only 3 MiB.
    let clamd = TestClamd::start_with(ClamdLimits {
        stream_max: "10M",
        max_file: "1M",
        max_scan: "1M",
        ..Default::default()
    });
    let verdict = clamd.client().scan(Bytes::from(payload(5, 3 * 1024 * 1024))).await.unwrap();
    match verdict {
        Verdict::NotScanned { reason: NotScannedReason::ClamdLimits { detail } } => {
            assert!(detail.starts_with("Heuristics.Limits.Exceeded"), "{detail}");
        }
        other => panic!("over-limit file not flagged: {other:?}"),
    }
}

#[tokio::test]
async fn a_stopped_clamd_gives_a_typed_error() {
    let mut clamd = TestClamd::start();
    let client = clamd.client();
    client.ping().await.unwrap();
    clamd.stop();
    assert!(matches!(client.ping().await, Err(ScanError::Unavailable { .. })));
    let result = client.scan(Bytes::from(eicar())).await;
    assert!(matches!(result, Err(ScanError::Unavailable { .. })), "{result:?}");
    let verdict = Verdict::from_result(result);
    assert!(!verdict.is_clean());
    assert!(matches!(verdict, Verdict::NotScanned { reason } if reason.is_transient()));
}

#[tokio::test]
async fn a_clamd_that_never_answers_times_out() {
    // Fault injection: a socket that accepts and reads but never replies. A real clamd cannot
    // be made to do this on demand.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("silent.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut sink = tokio::io::sink();
                let _ = tokio::io::copy(&mut socket, &mut sink).await;
                std::future::pending::<()>().await;
            });
        }
    });
    let client = scanner::Clamd::new(scanner::ClamdOptions {
        reply_timeout: Duration::from_millis(300),
        ..scanner::ClamdOptions::new(scanner::ClamdAddress::Unix(path))
    });
    let result = client.scan(Bytes::from(payload(6, 100_000))).await;
    assert!(matches!(result, Err(ScanError::Timeout { .. })), "{result:?}");
}

#[tokio::test]
async fn a_failing_source_fails_the_scan() {
    let clamd = TestClamd::start();
    let (tx, source) = ChannelSource::new(4);
    tokio::spawn(async move {
        tx.send(Ok(Bytes::from(payload(7, 300_000)))).await.unwrap();
        tx.send(Err(std::io::Error::other("upload dropped"))).await.unwrap();
    });
    let result = clamd.client().scan(source).await;
    assert!(matches!(result, Err(ScanError::Source(_))), "{result:?}");
}

#[tokio::test]
async fn small_pieces_are_gathered_into_large_chunks() {
    // 4 KiB pieces (what a naive client sends) must still find a signature split across them.
    let clamd = TestClamd::start();
    let mut data = payload(8, 1024 * 1024);
    data[500_000..500_068].copy_from_slice(&eicar());
    let (tx, source) = ChannelSource::new(8);
    tokio::spawn(async move {
        for piece in data.chunks(4096) {
            tx.send(Ok(Bytes::copy_from_slice(piece))).await.unwrap();
        }
    });
    assert_eicar(&clamd.client().scan(source).await.unwrap());
}
