//! A file over clamd's stream limit (issue 13): the time from its last byte to `Published`,
//! against clamd's own time for the same segments, scanned as Ferry scans them (in parallel,
//! from memory), in the same repetition.

use std::collections::BTreeSet;
use std::io;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use scanner::{ByteSource, SegmentInput, SegmentPlan};

use crate::ferry::{self, FerryProcess, SCANNED, SENDER};
use crate::large::Payload;
use crate::report::{Report, mib_per_s};
use crate::{Settings, baseline};

/// A file held as chunks in memory, read segment by segment.
#[derive(Debug, Clone)]
struct Chunked {
    chunks: Arc<Vec<Bytes>>,
    /// Where each chunk starts.
    starts: Arc<Vec<u64>>,
    len: u64,
}

impl Chunked {
    fn new(chunks: Vec<Bytes>) -> Self {
        let mut starts = Vec::with_capacity(chunks.len());
        let mut at = 0;
        for chunk in &chunks {
            starts.push(at);
            at += chunk.len() as u64;
        }
        Self { chunks: Arc::new(chunks), starts: Arc::new(starts), len: at }
    }
}

#[derive(Debug)]
struct ChunkedSource {
    file: Chunked,
    pos: u64,
    end: u64,
}

impl ByteSource for ChunkedSource {
    async fn next_chunk(&mut self, max: usize) -> io::Result<Option<Bytes>> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let i = self.file.starts.partition_point(|&s| s <= self.pos) - 1;
        let within = (self.pos - self.file.starts[i]) as usize;
        let chunk = &self.file.chunks[i];
        let n = (chunk.len() - within).min(max).min((self.end - self.pos) as usize);
        self.pos += n as u64;
        Ok(Some(chunk.slice(within..within + n)))
    }
}

impl SegmentInput for Chunked {
    type Source = ChunkedSource;

    async fn open(
        &self,
        start: u64,
        len: u64,
        needed_past: Option<u64>,
    ) -> io::Result<Option<ChunkedSource>> {
        if needed_past.is_some_and(|past| self.len <= past) {
            return Ok(None);
        }
        let end = start.saturating_add(len).min(self.len);
        Ok(Some(ChunkedSource { file: self.clone(), pos: start.min(end), end }))
    }
}

/// `settings.reps` times: clamd's parallel time for the segments, then Ferry on the same bytes.
pub(crate) async fn run(
    settings: &Settings,
    payload: &Payload,
    report: &mut Report,
) -> anyhow::Result<()> {
    let (size, segment) = settings.segmented;
    let plan = SegmentPlan::new(segment).expect("segments of at least 4 MiB");
    // The parallelism Ferry uses: its default, within clamd's MaxThreads.
    let parallel = 4.min(settings.clamd.max_threads().await.unwrap_or(4));
    let clamd = settings.clamd.clone();
    let mut ceiling = Vec::new();
    let mut after_last_byte = Vec::new();
    let mut first_byte = Vec::new();
    let mut upload = Vec::new();
    for rep in 0..settings.reps {
        eprintln!(
            "segments: repetition {} of {}, {} in {} segments",
            rep + 1,
            settings.reps,
            crate::human(size),
            plan.count(size)
        );
        let file = payload.file(size, 5000 + rep as u64);
        // clamd's first large scan is slower than the next ones: warm it up as Ferry's own
        // scans will find it.
        baseline::clamd(&clamd, &file[..file.len().min(256)]).await?;
        let input = Chunked::new(file.clone());
        let options = scanner::ClamdOptions {
            max_stream_len: segment,
            max_parallel_segments: parallel,
            ..clamd.options().clone()
        };
        let started = Instant::now();
        let outcome = scanner::Clamd::new(options)
            .scan_segments(&input, plan, &BTreeSet::new(), |_| {})
            .await;
        anyhow::ensure!(outcome.verdict.is_clean(), "clamd: {:?}", outcome.verdict);
        ceiling.push(started.elapsed().as_secs_f64());

        let server = FerryProcess::start_with(
            &settings.ferry,
            &settings.scratch,
            &settings.clamd_address,
            segment,
        )
        .await?;
        let sender = server.client(SENDER);
        let id = ferry::initialize(&sender, SCANNED, "segmented.bin").await?;
        let started = Instant::now();
        ferry::upload(&sender, &id, file).await?;
        let uploaded = started.elapsed().as_secs_f64();
        ferry::published(&sender, &id).await?;
        let total = started.elapsed().as_secs_f64();
        after_last_byte.push(total - uploaded);
        first_byte.push(total);
        upload.push(mib_per_s(size, uploaded));
    }
    report.add("ceiling.clamd_segments_parallel_s", "s", ceiling, None);
    report.add("segments.upload_grpc", "MiB/s", upload, None);
    report.add(
        "segments.after_last_byte_s",
        "s",
        after_last_byte,
        Some("ceiling.clamd_segments_parallel_s"),
    );
    report.add(
        "segments.first_byte_to_published_s",
        "s",
        first_byte,
        Some("ceiling.clamd_segments_parallel_s"),
    );
    let clamd_time = report.get("ceiling.clamd_segments_parallel_s").unwrap_or(f64::NAN);
    report.ratio_check(
        "segmented file: last byte → Published ≤ 1.15 × clamd's parallel time for its segments s",
        "segments.after_last_byte_s",
        false,
        1.15,
        clamd_time,
    );
    Ok(())
}
