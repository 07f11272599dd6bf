//! Files longer than clamd's stream limit, scanned as overlapping segments.
//!
//! clamd scans at most one stream of `StreamMaxLength` bytes (never more than 2 GiB − 3). A
//! longer file is cut into segments of at most [`SegmentPlan::segment_len`] bytes, each scanned
//! as its own INSTREAM, consecutive segments sharing [`SEGMENT_OVERLAP`] bytes. Every contiguous
//! pattern clamd can match is at most [`MAX_BODY_PATTERN`] bytes long, so one that straddles the
//! end of a segment lies wholly inside the next one (see `ARCHITECTURE.md`, "Large files").
//!
//! - [`SegmentPlan`]: where segment `i` starts and ends, how many a file has, which one holds a
//!   byte range; pure arithmetic.
//! - [`SegmentInput`]: how the driver gets at a segment's bytes (the server: a tail that follows
//!   the upload, or the stored blob); a segment is opened only once the file is known to reach
//!   past the previous one, so a file whose length is not known in advance is segmented as it
//!   arrives.
//! - [`crate::Clamd::scan_segments`]: the driver: segments in parallel over separate clamd
//!   connections (at most `max_parallel_segments`, and never more than clamd's `MaxThreads`),
//!   skipping segments already found clean, reporting each segment's verdict as it comes.

use std::collections::{BTreeSet, VecDeque};
use std::future::Future;
use std::io;
use std::ops::Range;
use std::pin::Pin;

use bytes::Bytes;
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;

use crate::clamd::Clamd;
use crate::source::ByteSource;
use crate::verdict::{NotScannedReason, ScanError, Verdict};

/// The longest contiguous byte pattern clamd can match: 65,535 bytes.
///
/// ClamAV splits a body signature (`.ndb`, `.db`, `.ldb` subsignatures) at its `*` and `{n-m}`
/// wildcards (and `{n}` with n ≥ 128) into parts, and stores each part's length, and the longest
/// of all (`struct cli_matcher::maxpatlen`), as a `uint16_t` (libclamav `matcher-ac.h`
/// `struct cli_ac_patt::length[3]`, `matcher.h` `maxpatlen`; set in `matcher-ac.c`
/// `cli_ac_addsig` and `readdb.c` `cli_add_content_match_pattern`). clamd relies on the same
/// bound itself: it scans a file in `SCANBUFF` (128 KiB) windows that overlap by `maxpatlen`
/// bytes (`matcher.c` `cli_scan_fmap`: `offset += bytes - maxpatlen`).
pub const MAX_BODY_PATTERN: u64 = u16::MAX as u64;

/// Bytes shared by consecutive segments: 1 MiB, 16 × [`MAX_BODY_PATTERN`]. Any contiguous
/// pattern that crosses a segment's end lies wholly in the next segment; a multi-part
/// signature whose parts together span at most this much is found wherever it lies. The cost
/// is 1 MiB rescanned per 2 GiB segment (0.05 %).
pub const SEGMENT_OVERLAP: u64 = 1 << 20;

/// The shortest segment a plan accepts: 4 × [`SEGMENT_OVERLAP`], so each segment brings at
/// least three quarters new bytes.
pub const MIN_SEGMENT: u64 = 4 * SEGMENT_OVERLAP;

/// How a file is cut into segments: segment `i` covers `i × step .. i × step + segment_len`
/// (cut at the end of the file), `step = segment_len − overlap`. A file of at most
/// `segment_len` bytes is one segment: the single stream of a small file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentPlan {
    len: u64,
    overlap: u64,
}

impl SegmentPlan {
    /// Segments of `segment_len` bytes (clamd's stream limit) overlapping by
    /// [`SEGMENT_OVERLAP`]; `None` if `segment_len` is below [`MIN_SEGMENT`].
    pub fn new(segment_len: u64) -> Option<Self> {
        (segment_len >= MIN_SEGMENT).then_some(Self { len: segment_len, overlap: SEGMENT_OVERLAP })
    }

    /// Any overlap below `segment_len` (tests: an overlap of 0 shows what the overlap finds).
    pub fn with_overlap(segment_len: u64, overlap: u64) -> Option<Self> {
        (segment_len > overlap).then_some(Self { len: segment_len, overlap })
    }

    /// The longest segment.
    pub fn segment_len(&self) -> u64 {
        self.len
    }

    /// Bytes shared by consecutive segments.
    pub fn overlap(&self) -> u64 {
        self.overlap
    }

    /// Distance between the starts of consecutive segments.
    pub fn step(&self) -> u64 {
        self.len - self.overlap
    }

    /// Where segment `i` starts.
    pub fn start(&self, i: u64) -> u64 {
        i.saturating_mul(self.step())
    }

    /// Segment `i` is needed only if the file extends past this offset (the end of segment
    /// `i − 1`); segment 0 always is (an empty file is one empty segment).
    pub fn needed_past(&self, i: u64) -> Option<u64> {
        (i > 0).then(|| self.start(i - 1).saturating_add(self.len))
    }

    /// How many segments a file of `file_len` bytes has (at least one).
    pub fn count(&self, file_len: u64) -> u64 {
        if file_len <= self.len { 1 } else { 1 + (file_len - self.len).div_ceil(self.step()) }
    }

    /// The bytes of segment `i` of a file of `file_len` bytes, if it has that segment.
    pub fn range(&self, i: u64, file_len: u64) -> Option<Range<u64>> {
        (i < self.count(file_len))
            .then(|| self.start(i)..self.start(i).saturating_add(self.len).min(file_len))
    }

    /// The segments of a file of `file_len` bytes that hold all of `bytes` (a pattern there is
    /// found by each of them). Empty if no segment does: the pattern crosses a boundary with
    /// less overlap than its length.
    pub fn holding(&self, bytes: Range<u64>, file_len: u64) -> Vec<u64> {
        (0..self.count(file_len))
            .filter(|&i| {
                self.range(i, file_len)
                    .is_some_and(|r| r.start <= bytes.start && bytes.end <= r.end)
            })
            .collect()
    }
}

/// Where the segment driver reads a file's bytes.
pub trait SegmentInput: Send + Sync {
    /// One segment's bytes.
    type Source: ByteSource + 'static;

    /// A source for the bytes from `start` on, at most `len` of them (the driver stops
    /// reading there). If `needed_past` is given, waits until the file is known to extend past
    /// that offset first, and answers `Ok(None)` if it ends at or before it: the segment is not
    /// needed. An error means the bytes cannot be had (the scan is then not clean).
    fn open(
        &self,
        start: u64,
        len: u64,
        needed_past: Option<u64>,
    ) -> impl Future<Output = io::Result<Option<Self::Source>>> + Send;
}

/// A whole file in memory (tests, small payloads).
impl SegmentInput for Bytes {
    type Source = Bytes;

    async fn open(
        &self,
        start: u64,
        len: u64,
        needed_past: Option<u64>,
    ) -> io::Result<Option<Bytes>> {
        let size = self.len() as u64;
        if needed_past.is_some_and(|past| size <= past) {
            return Ok(None);
        }
        let start = start.min(size);
        let end = start.saturating_add(len).min(size);
        Ok(Some(self.slice(start as usize..end as usize)))
    }
}

/// A source cut off after `remaining` bytes.
#[derive(Debug)]
pub struct Limited<S> {
    inner: S,
    remaining: u64,
}

impl<S: ByteSource> Limited<S> {
    /// At most `limit` bytes of `inner`.
    pub fn new(inner: S, limit: u64) -> Self {
        Self { inner, remaining: limit }
    }
}

impl<S: ByteSource> ByteSource for Limited<S> {
    async fn next_chunk(&mut self, max: usize) -> io::Result<Option<Bytes>> {
        if self.remaining == 0 {
            return Ok(None);
        }
        let want = (max as u64).min(self.remaining) as usize;
        let Some(mut chunk) = self.inner.next_chunk(want).await? else { return Ok(None) };
        if chunk.len() > want {
            chunk.truncate(want);
        }
        self.remaining -= chunk.len() as u64;
        Ok(Some(chunk))
    }
}

/// One segment's verdict, as the driver reports it while the others go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentVerdict {
    /// The segment's number (0 for the first).
    pub index: u64,
    /// What clamd concluded for it; scan errors are folded into `NotScanned`.
    pub verdict: Verdict,
}

/// The outcome of a segmented scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentedVerdict {
    /// The file's verdict: `Infected` if any segment is; otherwise `Clean` only if every
    /// segment is; otherwise why not (the most decisive reason: a property of the file before
    /// a scanner error before unavailability).
    pub verdict: Verdict,
    /// Segments known clean (in this run, or skipped as clean already).
    pub clean: BTreeSet<u64>,
    /// How many segments the file has, if the driver got to its end.
    pub segments: Option<u64>,
}

impl SegmentedVerdict {
    /// A failure before any segment could be scanned.
    pub fn not_scanned(reason: NotScannedReason) -> Self {
        Self { verdict: Verdict::NotScanned { reason }, clean: BTreeSet::new(), segments: None }
    }
}

/// How decisive a reason is when several segments fail: a property of the file (too large,
/// clamd's limits) settles the transfer, a scanner error may, unavailability never does.
fn rank(reason: &NotScannedReason) -> u8 {
    match reason {
        NotScannedReason::Unavailable(_) | NotScannedReason::Timeout(_) => 1,
        NotScannedReason::Failed(_) | NotScannedReason::ScanTimeExceeded => 2,
        _ => 3,
    }
}

/// Keeps the most decisive of the failures seen (the first segment's among equals).
fn keep_worst(failure: &mut Option<(u8, u64, NotScannedReason)>, i: u64, reason: NotScannedReason) {
    let r = rank(&reason);
    if failure.as_ref().is_none_or(|(best, at, _)| r > *best || (r == *best && i < *at)) {
        *failure = Some((r, i, reason));
    }
}

type Pending<'a, S> = Pin<Box<dyn Future<Output = Event<S>> + Send + 'a>>;

enum Event<S> {
    Opened(u64, io::Result<Option<S>>),
    Scanned(u64, Verdict),
}

impl Clamd {
    /// How files longer than `max_stream_len` are cut into segments; `None` if
    /// `max_stream_len` is below [`crate::MIN_SEGMENT`] (then a longer file is not scanned).
    pub fn segment_plan(&self) -> Option<SegmentPlan> {
        SegmentPlan::new(self.options().max_stream_len)
    }

    /// Scans the file `input` reads: as the segments of [`Clamd::segment_plan`] (a file within
    /// `max_stream_len` is one segment, a single stream), or, if `max_stream_len` is too short
    /// to segment, as one stream that is not scanned if it is longer.
    pub async fn scan_file<I: SegmentInput>(
        &self,
        input: &I,
        skip: &BTreeSet<u64>,
        on_segment: impl FnMut(&SegmentVerdict) + Send,
    ) -> SegmentedVerdict {
        if let Some(plan) = self.segment_plan() {
            return self.scan_segments(input, plan, skip, on_segment).await;
        }
        let source = match input.open(0, u64::MAX, None).await {
            Ok(Some(source)) => source,
            Ok(None) => {
                return SegmentedVerdict::not_scanned(NotScannedReason::Failed(
                    "the file could not be opened".into(),
                ));
            }
            Err(e) => return SegmentedVerdict::not_scanned(ScanError::Source(e).into()),
        };
        let verdict = Verdict::from_result(self.scan(source).await);
        let clean = if verdict.is_clean() { BTreeSet::from([0]) } else { BTreeSet::new() };
        SegmentedVerdict { verdict, clean, segments: Some(1) }
    }

    /// Scans a stream that can be read only once, front to back (an archive member as it is
    /// decompressed), as the segments of `plan`: one segment streams at a time, each new one
    /// starting with the last `overlap` bytes of the one before (at most that much is held in
    /// memory), while clamd scans the segments already sent. A stream within one segment is one
    /// INSTREAM.
    pub async fn scan_sequential(
        &self,
        mut source: impl ByteSource,
        plan: SegmentPlan,
    ) -> SegmentedVerdict {
        use bytes::BytesMut;
        use tokio::sync::mpsc;
        type Feed = mpsc::Sender<io::Result<Bytes>>;
        let start_segment = |clamd: &Clamd| -> (Feed, tokio::task::JoinHandle<Verdict>) {
            let (tx, source) = crate::ChannelSource::new(8);
            let clamd = clamd.clone();
            (tx, tokio::spawn(async move { Verdict::from_result(clamd.scan(source).await) }))
        };
        let (len, step) = (plan.segment_len(), plan.step());
        let (tx, handle) = start_segment(self);
        let mut current: (u64, Feed) = (0, tx);
        let mut scans = vec![(0u64, handle)];
        // Bytes of the next segment's range sent so far to the current one: the next segment
        // begins with them once the stream is known to go on past the current segment.
        let mut overlap = BytesMut::new();
        let mut pos = 0u64;
        let mut failure: Option<(u8, u64, NotScannedReason)> = None;
        let abort = |scans: &[(u64, tokio::task::JoinHandle<Verdict>)]| {
            for (_, handle) in scans {
                handle.abort();
            }
        };
        'read: loop {
            let mut chunk = match source.next_chunk(self.options().chunk_size).await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => {
                    abort(&scans);
                    return SegmentedVerdict::not_scanned(ScanError::Source(e).into());
                }
            };
            while !chunk.is_empty() {
                let (index, feed) = &current;
                let start = plan.start(*index);
                let end = start + len;
                if pos == end {
                    // The stream goes on past this segment: the next one starts with the
                    // overlap, then takes what follows.
                    let next = index + 1;
                    let (tx, handle) = start_segment(self);
                    scans.push((next, handle));
                    if tx.send(Ok(overlap.split().freeze())).await.is_err() {
                        break 'read;
                    }
                    current = (next, tx);
                    continue;
                }
                let piece = chunk.split_to(((end - pos) as usize).min(chunk.len()));
                let next_start = start + step;
                if pos + piece.len() as u64 > next_start {
                    let from = next_start.saturating_sub(pos) as usize;
                    overlap.extend_from_slice(&piece[from..]);
                }
                pos += piece.len() as u64;
                if feed.send(Ok(piece)).await.is_err() {
                    // That segment's scan ended early: its verdict (clamd refused or found
                    // something) decides below.
                    break 'read;
                }
            }
        }
        drop(current);
        let mut clean = BTreeSet::new();
        let count = scans.len() as u64;
        for k in 0..scans.len() {
            let (i, handle) = &mut scans[k];
            let verdict = handle.await.unwrap_or_else(|e| Verdict::NotScanned {
                reason: NotScannedReason::Failed(format!("a segment's scan stopped: {e}")),
            });
            match verdict {
                Verdict::Clean => {
                    clean.insert(*i);
                }
                Verdict::Infected { signature } => {
                    abort(&scans[k + 1..]);
                    return SegmentedVerdict {
                        verdict: Verdict::Infected { signature },
                        clean,
                        segments: Some(count),
                    };
                }
                Verdict::NotScanned { reason } => keep_worst(&mut failure, *i, reason),
            }
        }
        let verdict = match failure {
            Some((_, _, reason)) => Verdict::NotScanned { reason },
            None => Verdict::Clean,
        };
        SegmentedVerdict { verdict, clean, segments: Some(count) }
    }

    /// Scans the file `input` reads as the segments of `plan`, skipping those in `skip` (found
    /// clean before), calling `on_segment` with each segment's verdict as it comes. Segments
    /// run in parallel on separate connections, at most `max_parallel_segments` at a time and
    /// never more than clamd's `MaxThreads` (asked with STATS once a second segment is
    /// needed). An infected segment ends the scan at once.
    pub async fn scan_segments<I: SegmentInput>(
        &self,
        input: &I,
        plan: SegmentPlan,
        skip: &BTreeSet<u64>,
        mut on_segment: impl FnMut(&SegmentVerdict) + Send,
    ) -> SegmentedVerdict {
        let open = |i: u64| -> Pending<'_, I::Source> {
            Box::pin(async move {
                Event::Opened(
                    i,
                    input.open(plan.start(i), plan.segment_len(), plan.needed_past(i)).await,
                )
            })
        };
        let scan = |i: u64, source: I::Source| -> Pending<'_, I::Source> {
            Box::pin(async move {
                let limited = Limited::new(source, plan.segment_len());
                Event::Scanned(i, Verdict::from_result(self.scan(limited).await))
            })
        };
        let mut pending = FuturesUnordered::new();
        pending.push(open(0));
        // Opened segments waiting for a connection, and the next segment to open once there is
        // room among them.
        let mut ready: VecDeque<(u64, I::Source)> = VecDeque::new();
        let mut deferred_open: Option<u64> = None;
        let mut scanning = 0usize;
        let mut parallel = self.options().max_parallel_segments.max(1);
        let mut clean = BTreeSet::new();
        let mut failure: Option<(u8, u64, NotScannedReason)> = None;
        let mut segments = None;
        while let Some(event) = pending.next().await {
            match event {
                Event::Opened(i, Ok(None)) => segments = Some(i),
                Event::Opened(i, Err(e)) => {
                    // Without these bytes the file's extent is unknown: no further segment.
                    keep_worst(&mut failure, i, ScanError::Source(e).into());
                }
                Event::Opened(i, Ok(Some(source))) => {
                    if i == 1 {
                        parallel = parallel.min(self.max_threads().await.unwrap_or(parallel));
                    }
                    if skip.contains(&i) {
                        clean.insert(i);
                    } else {
                        ready.push_back((i, source));
                    }
                    if ready.len() < parallel.max(1) {
                        pending.push(open(i + 1));
                    } else {
                        deferred_open = Some(i + 1);
                    }
                }
                Event::Scanned(i, verdict) => {
                    scanning -= 1;
                    let report = SegmentVerdict { index: i, verdict };
                    on_segment(&report);
                    match report.verdict {
                        Verdict::Clean => {
                            clean.insert(i);
                        }
                        Verdict::Infected { signature } => {
                            return SegmentedVerdict {
                                verdict: Verdict::Infected { signature },
                                clean,
                                segments,
                            };
                        }
                        Verdict::NotScanned { reason } => keep_worst(&mut failure, i, reason),
                    }
                }
            }
            while scanning < parallel.max(1) {
                let Some((i, source)) = ready.pop_front() else { break };
                scanning += 1;
                pending.push(scan(i, source));
                if let Some(next) = deferred_open.take() {
                    pending.push(open(next));
                }
            }
        }
        let verdict = match failure {
            Some((_, _, reason)) => Verdict::NotScanned { reason },
            None if segments.is_some() => Verdict::Clean,
            // Every future ended without the end of the file being seen: cannot happen, and is
            // never clean.
            None => Verdict::NotScanned {
                reason: NotScannedReason::Failed("the segmented scan ended early".into()),
            },
        };
        SegmentedVerdict { verdict, clean, segments }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn the_overlap_covers_the_longest_pattern() {
        const { assert!(SEGMENT_OVERLAP >= MAX_BODY_PATTERN) };
        const { assert!(MIN_SEGMENT > SEGMENT_OVERLAP) };
        assert!(SegmentPlan::new(MIN_SEGMENT - 1).is_none());
        assert!(SegmentPlan::new(MIN_SEGMENT).is_some());
    }

    #[test]
    fn a_file_within_the_limit_is_one_segment() {
        let plan = SegmentPlan::new(8 * MIB).unwrap();
        for len in [0, 1, 8 * MIB - 1, 8 * MIB] {
            assert_eq!(plan.count(len), 1, "{len}");
            assert_eq!(plan.range(0, len), Some(0..len));
            assert_eq!(plan.range(1, len), None);
        }
        assert_eq!(plan.needed_past(0), None);
        assert_eq!(plan.needed_past(1), Some(8 * MIB));
    }

    #[test]
    fn segments_cover_every_byte_and_overlap_by_the_constant() {
        let plan = SegmentPlan::new(8 * MIB).unwrap();
        for len in [8 * MIB + 1, 15 * MIB, 15 * MIB + 1, 50 * MIB + 12_345, 200 * MIB] {
            let n = plan.count(len);
            let ranges: Vec<_> = (0..n).map(|i| plan.range(i, len).unwrap()).collect();
            assert_eq!(ranges[0].start, 0);
            assert_eq!(ranges.last().unwrap().end, len, "{len}");
            for r in &ranges {
                assert!(r.end - r.start <= plan.segment_len());
                assert!(r.end > r.start);
            }
            for pair in ranges.windows(2) {
                assert_eq!(pair[0].end - pair[1].start, SEGMENT_OVERLAP, "{len}: {pair:?}");
            }
            // The last segment is needed (the one before does not reach the end), the next not.
            assert!(plan.needed_past(n - 1).is_some_and(|past| len > past));
            assert!(plan.needed_past(n).is_some_and(|past| len <= past));
        }
        // 50 GB in clamd's 2 GiB − 3 segments.
        let big = SegmentPlan::new(crate::CLAMD_MAX_STREAM).unwrap();
        assert_eq!(big.count(50_000_000_000), 24);
    }

    #[test]
    fn a_pattern_across_a_boundary_is_held_only_thanks_to_the_overlap() {
        // EICAR (68 bytes) placed across the end of segment 0.
        let len = 20 * MIB;
        let plan = SegmentPlan::new(8 * MIB).unwrap();
        let end0 = plan.range(0, len).unwrap().end;
        let eicar = end0 - 34..end0 + 34;
        assert_eq!(plan.holding(eicar.clone(), len), vec![1]);
        // Without an overlap, no segment holds it whole: clamd would see two halves.
        let bare = SegmentPlan::with_overlap(8 * MIB, 0).unwrap();
        assert!(bare.holding(eicar, len).is_empty());
        // The longest pattern clamd can match, crossing the boundary at any point, is held.
        for cut in [1, MAX_BODY_PATTERN / 2, MAX_BODY_PATTERN - 1] {
            let pattern = end0 - cut..end0 - cut + MAX_BODY_PATTERN;
            assert!(!plan.holding(pattern, len).is_empty(), "{cut}");
        }
    }

    #[tokio::test]
    async fn limited_stops_at_its_limit() {
        let mut source = Limited::new(Bytes::from(vec![7u8; 1000]), 300);
        let mut seen = 0;
        while let Some(chunk) = source.next_chunk(128).await.unwrap() {
            seen += chunk.len();
        }
        assert_eq!(seen, 300);
    }

    #[tokio::test]
    async fn in_memory_input_opens_only_needed_segments() {
        let file = Bytes::from(vec![1u8; 10]);
        assert_eq!(file.open(4, 3, None).await.unwrap().unwrap().len(), 3);
        assert_eq!(file.open(8, 5, Some(9)).await.unwrap().unwrap().len(), 2);
        assert!(file.open(8, 5, Some(10)).await.unwrap().is_none());
    }
}
