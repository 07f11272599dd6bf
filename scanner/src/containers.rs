//! Archives too large for one clamd stream, scanned member by member.
//!
//! clamd unpacks an archive only when it receives the whole of it. A ZIP, tar or gzip file
//! longer than the stream limit reaches clamd only as raw segments, and a member compressed
//! across a segment boundary (or larger than a segment) is then never seen decompressed. So for
//! such a file Ferry opens the archive itself and streams each member's content to clamd as its
//! own stream, segmented if the member is itself too long ([`crate::Clamd::scan_sequential`]):
//!
//! - ZIP and ZIP64: the central directory (the `zip` crate); stored and deflated members.
//!   Members in other methods, or encrypted, cannot be opened and are listed as such.
//! - tar (ustar, GNU, pax): every regular file, sizes in octal or GNU base-256.
//! - gzip: the decompressed stream, as one member (a `.tar.gz` is not unpacked further: clamd
//!   reads the tar inside each segment of it).
//!
//! The archive is read on a blocking thread; members flow to the scan through a bounded channel,
//! so memory stays at a few chunks (plus one segment overlap).

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::clamd::Clamd;
use crate::segments::{SegmentPlan, SegmentVerdict};
use crate::source::ByteSource;
use crate::verdict::{NotScannedReason, ScanError, Verdict};

/// An archive format Ferry opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveKind {
    /// ZIP or ZIP64.
    Zip,
    /// POSIX or GNU tar.
    Tar,
    /// gzip.
    Gzip,
}

impl std::fmt::Display for ArchiveKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Zip => "ZIP",
            Self::Tar => "tar",
            Self::Gzip => "gzip",
        })
    }
}

/// What the file at `path` is, from its first bytes (and, for ZIP, its central directory).
pub fn detect(path: &Path) -> io::Result<Option<ArchiveKind>> {
    let mut file = File::open(path)?;
    let mut head = [0u8; 512];
    let n = read_up_to(&mut file, &mut head)?;
    let head = &head[..n];
    if head.starts_with(&[0x1f, 0x8b]) {
        return Ok(Some(ArchiveKind::Gzip));
    }
    if n >= 263 && (&head[257..262] == b"ustar") {
        return Ok(Some(ArchiveKind::Tar));
    }
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        file.seek(SeekFrom::Start(0))?;
        return Ok(zip::ZipArchive::new(BufReader::new(file)).is_ok().then_some(ArchiveKind::Zip));
    }
    Ok(None)
}

/// The outcome of scanning an archive's members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembersVerdict {
    /// Infected if any member is (the signature names the member), clean if every member that
    /// could be opened is, else why not.
    pub verdict: Verdict,
    /// Members scanned.
    pub scanned: u64,
    /// Members that could not be opened (encrypted, another compression method), by name.
    pub unopened: Vec<String>,
}

enum Event {
    Member(String),
    Data(Bytes),
    End,
    Unopened(String, String),
}

/// One member's bytes, as the reader thread sends them. A member that cannot be read to its end
/// (corrupt, truncated) ends where the reader stopped; `error` says why.
struct MemberSource<'a> {
    rx: &'a mut mpsc::Receiver<io::Result<Event>>,
    /// Set once the member's end (or an error) was read.
    done: &'a mut bool,
    error: &'a mut Option<io::Error>,
}

/// Whether an error reading an archive is the disk's (the scan cannot go on: not scanned) rather
/// than the archive's (corrupt or of a kind Ferry does not read: what was read counts, the rest
/// is named as not unpacked).
fn is_io_failure(e: &io::Error) -> bool {
    e.raw_os_error().is_some()
}

impl ByteSource for MemberSource<'_> {
    async fn next_chunk(&mut self, _max: usize) -> io::Result<Option<Bytes>> {
        if *self.done {
            return Ok(None);
        }
        match self.rx.recv().await {
            Some(Ok(Event::Data(data))) => return Ok(Some(data)),
            Some(Ok(Event::End)) => {}
            Some(Ok(_)) => {
                *self.error = Some(io::Error::other("the archive reader lost its place"))
            }
            Some(Err(e)) => *self.error = Some(e),
            None => *self.error = Some(io::Error::other("the archive reader stopped")),
        }
        *self.done = true;
        Ok(None)
    }
}

impl Clamd {
    /// Scans each member of the `kind` archive at `path` as its own stream (segmented by
    /// `plan` if longer), one after the other; `on_member` hears each member's verdict. An
    /// infected member ends the scan at once.
    pub async fn scan_members(
        &self,
        path: &Path,
        kind: ArchiveKind,
        plan: SegmentPlan,
        mut on_member: impl FnMut(&str, &SegmentVerdict) + Send,
    ) -> MembersVerdict {
        let (tx, mut rx) = mpsc::channel::<io::Result<Event>>(8);
        let chunk = self.options().chunk_size;
        let path: PathBuf = path.to_owned();
        let reader = tokio::task::spawn_blocking(move || {
            let result = match kind {
                ArchiveKind::Zip => read_zip(&path, chunk, &tx),
                ArchiveKind::Tar => read_tar(BufReader::new(File::open(&path)?), chunk, &tx),
                ArchiveKind::Gzip => {
                    let gz = flate2::read::MultiGzDecoder::new(BufReader::new(File::open(&path)?));
                    send_member(&tx, "(gzip content)", gz, chunk)
                }
            };
            if let Err(e) = result
                && e.kind() != io::ErrorKind::BrokenPipe
            {
                let _ = tx.blocking_send(Err(e));
            }
            Ok::<_, io::Error>(())
        });
        let mut scanned = 0;
        let mut unopened = Vec::new();
        let mut failure: Option<(String, NotScannedReason)> = None;
        let outcome = loop {
            match rx.recv().await {
                None => break None,
                Some(Err(e)) if is_io_failure(&e) => break Some(ScanError::Source(e).into()),
                Some(Err(e)) => {
                    unopened.push(format!("the rest of the archive ({e})"));
                    break None;
                }
                Some(Ok(Event::Unopened(name, why))) => {
                    unopened.push(format!("{} ({why})", shown(&name)));
                }
                Some(Ok(Event::Member(name))) => {
                    let (mut done, mut error) = (false, None);
                    let source = MemberSource { rx: &mut rx, done: &mut done, error: &mut error };
                    let result = self.scan_sequential(source, plan).await;
                    // A scan that stopped early leaves the rest of its member behind: skip it.
                    while !done {
                        match rx.recv().await {
                            Some(Ok(Event::Data(_))) => {}
                            Some(Err(e)) => {
                                error = Some(e);
                                done = true;
                            }
                            _ => done = true,
                        }
                    }
                    let unreadable = match error {
                        Some(e) if is_io_failure(&e) => break Some(ScanError::Source(e).into()),
                        // What was read of the member was scanned; the rest is not, and the
                        // reader has stopped: no member after it is opened either.
                        Some(e) => {
                            Some(format!("{} and what follows it (unreadable: {e})", shown(&name)))
                        }
                        None => None,
                    };
                    scanned += 1;
                    let report = SegmentVerdict { index: scanned - 1, verdict: result.verdict };
                    on_member(&name, &report);
                    match report.verdict {
                        Verdict::Clean => {}
                        Verdict::Infected { signature } => {
                            reader.abort();
                            let signature = format!("{signature} (in member {})", shown(&name));
                            return MembersVerdict {
                                verdict: Verdict::Infected { signature },
                                scanned,
                                unopened,
                            };
                        }
                        Verdict::NotScanned { reason } => {
                            if failure.is_none() {
                                failure = Some((name, reason));
                            }
                        }
                    }
                    if let Some(unreadable) = unreadable {
                        unopened.push(unreadable);
                        break None;
                    }
                }
                Some(Ok(_)) => {
                    break Some(NotScannedReason::Failed("archive reader out of step".into()));
                }
            }
        };
        let _ = reader.await;
        let verdict = match (outcome, failure) {
            (Some(reason), _) | (None, Some((_, reason))) => Verdict::NotScanned { reason },
            (None, None) => Verdict::Clean,
        };
        MembersVerdict { verdict, scanned, unopened }
    }
}

/// A member's name as a status text may show it: the sender chose it, so control characters are
/// dropped and it is cut at 120 characters.
fn shown(name: &str) -> String {
    let clean: String = name.chars().filter(|c| !c.is_control()).collect();
    if clean.chars().count() > 120 {
        format!("{}…", clean.chars().take(120).collect::<String>())
    } else {
        clean
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the scan stopped reading")
}

/// Sends one member: its name, its bytes in chunks of `chunk`, its end.
fn send_member(
    tx: &mpsc::Sender<io::Result<Event>>,
    name: &str,
    mut reader: impl Read,
    chunk: usize,
) -> io::Result<()> {
    tx.blocking_send(Ok(Event::Member(name.to_owned()))).map_err(|_| closed())?;
    loop {
        let mut buf = vec![0u8; chunk];
        let n = read_up_to(&mut reader, &mut buf)?;
        if n == 0 {
            break;
        }
        buf.truncate(n);
        tx.blocking_send(Ok(Event::Data(Bytes::from(buf)))).map_err(|_| closed())?;
        if n < chunk {
            break;
        }
    }
    tx.blocking_send(Ok(Event::End)).map_err(|_| closed())
}

fn read_zip(path: &Path, chunk: usize, tx: &mpsc::Sender<io::Result<Event>>) -> io::Result<()> {
    let mut archive = zip::ZipArchive::new(BufReader::new(File::open(path)?))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    for i in 0..archive.len() {
        let member = match archive.by_index(i) {
            Ok(member) => member,
            Err(e) => {
                let why = e.to_string();
                tx.blocking_send(Ok(Event::Unopened(format!("member {i}"), why)))
                    .map_err(|_| closed())?;
                continue;
            }
        };
        if member.is_dir() {
            continue;
        }
        let name = member.name().map(|n| n.into_owned()).unwrap_or_else(|_| format!("member {i}"));
        if member.encrypted() {
            tx.blocking_send(Ok(Event::Unopened(name, "encrypted".into())))
                .map_err(|_| closed())?;
            continue;
        }
        let method = member.compression();
        if !matches!(method, zip::CompressionMethod::Stored | zip::CompressionMethod::Deflated) {
            let why = format!("compressed with {method:?}");
            tx.blocking_send(Ok(Event::Unopened(name, why))).map_err(|_| closed())?;
            continue;
        }
        send_member(tx, &name, member, chunk)?;
    }
    Ok(())
}

fn read_tar(
    mut tar: impl Read,
    chunk: usize,
    tx: &mpsc::Sender<io::Result<Event>>,
) -> io::Result<()> {
    let mut header = [0u8; 512];
    let mut long_name: Option<String> = None;
    loop {
        if read_up_to(&mut tar, &mut header)? < 512 || header.iter().all(|&b| b == 0) {
            return Ok(());
        }
        let size = tar_size(&header[124..136])
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "a bad tar header"))?;
        let padding = size.div_ceil(512) * 512 - size;
        let kind = header[156];
        let name = long_name.take().unwrap_or_else(|| {
            let end = header[..100].iter().position(|&b| b == 0).unwrap_or(100);
            String::from_utf8_lossy(&header[..end]).into_owned()
        });
        match kind {
            0 | b'0' | b'7' => send_member(tx, &name, (&mut tar).take(size), chunk)?,
            b'L' => {
                let mut name = Vec::new();
                (&mut tar).take(size).read_to_end(&mut name)?;
                let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
                long_name = Some(String::from_utf8_lossy(&name[..end]).into_owned());
            }
            _ => {
                io::copy(&mut (&mut tar).take(size), &mut io::sink())?;
            }
        }
        // A member the scan stopped reading early is skipped to its end here.
        io::copy(&mut (&mut tar).take(padding), &mut io::sink())?;
    }
}

/// A tar size field: octal, or GNU base-256 (first byte 0x80) for sizes of 8 GiB and more.
fn tar_size(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 != 0 {
        let mut n: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            n = n.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(n);
    }
    let text = std::str::from_utf8(field).ok()?;
    let text = text.trim_matches(|c: char| c == '\0' || c == ' ');
    if text.is_empty() { Some(0) } else { u64::from_str_radix(text, 8).ok() }
}

use crate::hashdb::read_up_to;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_sizes_in_octal_and_base_256() {
        assert_eq!(tar_size(b"00000001750\0"), Some(1000));
        assert_eq!(tar_size(b"           \0"), Some(0));
        let mut big = [0u8; 12];
        big[0] = 0x80;
        big[8..].copy_from_slice(&(10u32 << 28).to_be_bytes()[..4]);
        assert_eq!(tar_size(&big), Some(u64::from(10u32 << 28)));
    }
}
