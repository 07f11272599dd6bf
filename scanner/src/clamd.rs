//! The clamd client.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::time::timeout;

use crate::source::ByteSource;
use crate::verdict::{NotScannedReason, ScanError, Verdict, parse_instream_reply};

/// The most clamd can scan: 2 GiB − 3 bytes (2,147,483,645). libclamav clamps `MaxFileSize` to
/// `INT_MAX − 2` (`others.c`, `cl_engine_set_num`), and a longer stream comes back `OK`
/// unscanned (or `Heuristics.Limits.Exceeded.MaxFileSize` with `AlertExceedsMax`: a 2 GiB − 2
/// stream does, measured).
/// Ferry never sends more than this and calls anything longer not scanned.
pub const CLAMD_MAX_STREAM: u64 = i32::MAX as u64 - 2;
/// The smallest INSTREAM chunk Ferry sends (except the last): smaller chunks make clamd 3–5×
/// slower.
pub const MIN_CHUNK: usize = 64 * 1024;

/// Where clamd listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClamdAddress {
    /// A unix socket path.
    Unix(PathBuf),
    /// `host:port`.
    Tcp(String),
}

impl FromStr for ClamdAddress {
    type Err = String;

    /// `unix:/path`, `tcp:host:port`, or a bare absolute path.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix:") {
            Ok(Self::Unix(path.into()))
        } else if let Some(addr) = s.strip_prefix("tcp:") {
            Ok(Self::Tcp(addr.to_owned()))
        } else if s.starts_with('/') {
            Ok(Self::Unix(s.into()))
        } else {
            Err(format!("'{s}' is not a clamd address: use unix:/path/to/socket or tcp:host:port"))
        }
    }
}

impl fmt::Display for ClamdAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
            Self::Tcp(addr) => write!(f, "tcp:{addr}"),
        }
    }
}

/// How to talk to clamd.
#[derive(Debug, Clone)]
pub struct ClamdOptions {
    /// Where clamd listens.
    pub address: ClamdAddress,
    /// Longest wait for a connection.
    pub connect_timeout: Duration,
    /// Longest wait for clamd to accept one chunk (clamd pushes back while it spools).
    pub write_timeout: Duration,
    /// Longest wait for the verdict after the last chunk: clamd scans only then.
    pub reply_timeout: Duration,
    /// INSTREAM chunk size (at least [`MIN_CHUNK`]).
    pub chunk_size: usize,
    /// Longest stream Ferry sends; capped at [`CLAMD_MAX_STREAM`]. A longer file is scanned
    /// as overlapping segments of this length ([`crate::SegmentPlan`]); a single
    /// [`Clamd::scan`] calls it not scanned.
    pub max_stream_len: u64,
    /// Most segments of one file scanned at the same time, each on its own connection; never
    /// more than clamd's `MaxThreads` (asked with STATS).
    pub max_parallel_segments: usize,
    /// clamd's `DatabaseDirectory`: Ferry checks a file too long for one stream against its
    /// whole-file hash signatures ([`crate::HashDb`]). Without it such a file is not scanned.
    pub database_dir: Option<PathBuf>,
}

impl ClamdOptions {
    /// Defaults for `address`.
    pub fn new(address: ClamdAddress) -> Self {
        Self {
            address,
            connect_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(60),
            reply_timeout: Duration::from_secs(600),
            chunk_size: 256 * 1024,
            max_stream_len: CLAMD_MAX_STREAM,
            max_parallel_segments: 4,
            database_dir: None,
        }
    }
}

/// A clamd client. Each scan uses its own connection (clamd scans one stream per connection).
#[derive(Debug, Clone)]
pub struct Clamd {
    options: ClamdOptions,
    hash_db: Option<std::sync::Arc<crate::HashDb>>,
}

trait Connection: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Connection for T {}

impl Clamd {
    /// A client with `options`.
    pub fn new(mut options: ClamdOptions) -> Self {
        options.chunk_size = options.chunk_size.max(MIN_CHUNK);
        options.max_stream_len = options.max_stream_len.min(CLAMD_MAX_STREAM);
        options.max_parallel_segments = options.max_parallel_segments.max(1);
        let hash_db =
            options.database_dir.clone().map(|d| std::sync::Arc::new(crate::HashDb::new(d)));
        Self { options, hash_db }
    }

    /// The whole-file hash signatures of clamd's database, if its directory is configured.
    pub fn hash_db(&self) -> Option<&std::sync::Arc<crate::HashDb>> {
        self.hash_db.as_ref()
    }

    /// clamd's thread pool size (`MaxThreads`), from its STATS reply (`THREADS: live 1 idle 0
    /// max 4 ...`).
    pub async fn max_threads(&self) -> Result<usize, ScanError> {
        let stats = async {
            let mut connection = self.connect().await?;
            connection.write_all(b"zSTATS\0").await.map_err(ScanError::Io)?;
            let mut reply = Vec::with_capacity(512);
            let mut buf = [0u8; 512];
            loop {
                let n = connection.read(&mut buf).await.map_err(ScanError::Io)?;
                reply.extend_from_slice(&buf[..n]);
                if n == 0 || reply.contains(&0) || reply.len() > 64 * 1024 {
                    break;
                }
            }
            Ok::<_, ScanError>(String::from_utf8_lossy(&reply).into_owned())
        };
        let deadline = self.options.connect_timeout + self.options.write_timeout;
        let reply = timeout(deadline, stats)
            .await
            .map_err(|_| ScanError::Timeout { stage: "answering STATS" })??;
        parse_max_threads(&reply).ok_or(ScanError::Protocol(reply))
    }

    /// The options in force.
    pub fn options(&self) -> &ClamdOptions {
        &self.options
    }

    fn unavailable(&self, source: io::Error) -> ScanError {
        ScanError::Unavailable { address: self.options.address.to_string(), source }
    }

    /// Sends PING; `Ok` only on PONG.
    pub async fn ping(&self) -> Result<(), ScanError> {
        let reply = self.simple_command(Command::Ping).await?;
        if reply.trim_end_matches(['\0', '\n']) == "PONG" {
            Ok(())
        } else {
            Err(ScanError::Protocol(reply))
        }
    }

    /// clamd's VERSION string, e.g. `ClamAV 1.4.6/27000/…`.
    pub async fn version(&self) -> Result<String, ScanError> {
        let reply = self.simple_command(Command::Version).await?;
        Ok(reply.trim_end_matches(['\0', '\n']).to_owned())
    }

    async fn simple_command(&self, command: Command) -> Result<String, ScanError> {
        use clamav_client::tokio as clamav;
        let deadline = self.options.connect_timeout + self.options.write_timeout;
        let result = match &self.options.address {
            ClamdAddress::Unix(path) => {
                let socket = clamav::Socket { socket_path: path.as_path() };
                match command {
                    Command::Ping => timeout(deadline, clamav::ping(socket)).await,
                    Command::Version => timeout(deadline, clamav::get_version(socket)).await,
                }
            }
            ClamdAddress::Tcp(addr) => {
                let tcp = clamav::Tcp { host_address: addr.as_str() };
                match command {
                    Command::Ping => timeout(deadline, clamav::ping(tcp)).await,
                    Command::Version => timeout(deadline, clamav::get_version(tcp)).await,
                }
            }
        };
        let bytes = result
            .map_err(|_| ScanError::Timeout { stage: command.stage() })?
            .map_err(|e| self.unavailable(e))?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    async fn connect(&self) -> Result<Box<dyn Connection>, ScanError> {
        let connect = async {
            Ok::<Box<dyn Connection>, io::Error>(match &self.options.address {
                ClamdAddress::Unix(path) => Box::new(UnixStream::connect(path).await?),
                ClamdAddress::Tcp(addr) => {
                    let stream = TcpStream::connect(addr.as_str()).await?;
                    stream.set_nodelay(true)?;
                    Box::new(stream)
                }
            })
        };
        timeout(self.options.connect_timeout, connect)
            .await
            .map_err(|_| ScanError::Timeout { stage: "connecting" })?
            .map_err(|e| self.unavailable(e))
    }

    /// Scans everything `source` yields, as it yields it (INSTREAM).
    ///
    /// Sending and listening run together: if clamd refuses the stream mid-way it replies and
    /// closes, and that reply is read and reported even though the next write fails.
    pub async fn scan(&self, source: impl ByteSource) -> Result<Verdict, ScanError> {
        let connection = self.connect().await?;
        let (mut reader, mut writer) = tokio::io::split(connection);
        let send = self.send_stream(source, &mut writer);
        let receive = read_reply(&mut reader);
        tokio::pin!(send, receive);

        // Drive both until the sender is done; if the reply comes first (clamd gave up on the
        // stream), it decides.
        let sent = tokio::select! {
            biased;
            reply = &mut receive => return self.reply_before_end(reply),
            sent = &mut send => sent,
        };
        match sent {
            Ok(SendOutcome::Complete) => {}
            Ok(SendOutcome::TooLong) => {
                return Ok(Verdict::NotScanned {
                    reason: NotScannedReason::TooLarge { limit: self.options.max_stream_len },
                });
            }
            // The connection broke while sending: clamd may have said why before closing.
            Err(SendError::Connection(e)) => {
                return match timeout(self.options.write_timeout, receive).await {
                    Ok(Ok(reply)) if !reply.is_empty() => parse_instream_reply(&reply),
                    _ => Err(ScanError::Io(e)),
                };
            }
            Err(SendError::Source(e)) => return Err(ScanError::Source(e)),
            Err(SendError::Timeout) => {
                return Err(ScanError::Timeout { stage: "sending data" });
            }
        }
        let reply = timeout(self.options.reply_timeout, receive)
            .await
            .map_err(|_| ScanError::Timeout { stage: "waiting for the verdict" })?
            .map_err(ScanError::Io)?;
        parse_instream_reply(&reply)
    }

    fn reply_before_end(&self, reply: io::Result<Vec<u8>>) -> Result<Verdict, ScanError> {
        match reply {
            Ok(reply) if !reply.is_empty() => match parse_instream_reply(&reply)? {
                // A verdict before we finished sending can only be a refusal: an early "OK"
                // would cover bytes clamd never saw.
                Verdict::Clean => {
                    Err(ScanError::Protocol("clamd answered OK before the stream ended".into()))
                }
                verdict => Ok(verdict),
            },
            Ok(_) => Err(ScanError::Io(io::ErrorKind::UnexpectedEof.into())),
            Err(e) => Err(ScanError::Io(e)),
        }
    }

    async fn send_stream(
        &self,
        mut source: impl ByteSource,
        writer: &mut (impl AsyncWrite + Unpin),
    ) -> Result<SendOutcome, SendError> {
        let write_timeout = self.options.write_timeout;
        let chunk_size = self.options.chunk_size;
        with_timeout(write_timeout, writer.write_all(b"zINSTREAM\0")).await?;
        let mut sent: u64 = 0;
        let mut small = BytesMut::new();
        loop {
            let next = source.next_chunk(chunk_size).await.map_err(SendError::Source)?;
            let Some(chunk) = next else { break };
            if chunk.is_empty() {
                continue;
            }
            sent += chunk.len() as u64;
            if sent > self.options.max_stream_len {
                return Ok(SendOutcome::TooLong);
            }
            // Pieces smaller than MIN_CHUNK are gathered; large ones go out without a copy.
            if small.is_empty() && chunk.len() >= MIN_CHUNK {
                put_chunk(writer, chunk, write_timeout).await?;
            } else {
                small.put(chunk);
                if small.len() >= MIN_CHUNK {
                    put_chunk(writer, small.split().freeze(), write_timeout).await?;
                }
            }
        }
        if !small.is_empty() {
            put_chunk(writer, small.split().freeze(), write_timeout).await?;
        }
        with_timeout(write_timeout, writer.write_all(&0u32.to_be_bytes())).await?;
        with_timeout(write_timeout, writer.flush()).await?;
        Ok(SendOutcome::Complete)
    }
}

#[derive(Debug, Clone, Copy)]
enum Command {
    Ping,
    Version,
}

impl Command {
    fn stage(self) -> &'static str {
        match self {
            Self::Ping => "answering PING",
            Self::Version => "answering VERSION",
        }
    }
}

enum SendOutcome {
    Complete,
    TooLong,
}

enum SendError {
    Connection(io::Error),
    Source(io::Error),
    Timeout,
}

/// Sends one INSTREAM chunk: its big-endian length, then the bytes (not copied).
async fn put_chunk(
    writer: &mut (impl AsyncWrite + Unpin),
    data: Bytes,
    limit: Duration,
) -> Result<(), SendError> {
    let header = u32::try_from(data.len()).expect("chunks are far below 4 GiB").to_be_bytes();
    with_timeout(limit, async {
        writer.write_all(&header).await?;
        writer.write_all(&data).await
    })
    .await
}

async fn with_timeout(
    limit: Duration,
    f: impl Future<Output = io::Result<()>>,
) -> Result<(), SendError> {
    match timeout(limit, f).await {
        Err(_) => Err(SendError::Timeout),
        Ok(result) => result.map_err(SendError::Connection),
    }
}

/// The `max` figure of the `THREADS:` line of a STATS reply.
fn parse_max_threads(stats: &str) -> Option<usize> {
    let line = stats.lines().find_map(|l| l.strip_prefix("THREADS:"))?;
    let mut words = line.split_whitespace();
    words.find(|w| *w == "max")?;
    words.next()?.parse().ok().filter(|&n| n > 0)
}

/// Reads one NUL-terminated reply (or until EOF), at most 4 KiB.
async fn read_reply(reader: &mut (impl AsyncRead + Unpin)) -> io::Result<Vec<u8>> {
    let mut reply = Vec::with_capacity(128);
    let mut buf = [0u8; 512];
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            return Ok(reply);
        }
        reply.extend_from_slice(&buf[..n]);
        if reply.contains(&0) || reply.len() > 4096 {
            return Ok(reply);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_max_threads_from_stats() {
        let stats = "POOLS: 1\n\nSTATE: VALID PRIMARY\nTHREADS: live 1  idle 0 max 4 idle-timeout 30\nQUEUE: 0 items\n\tSTATS 0.000004 \n\nEND\0";
        assert_eq!(parse_max_threads(stats), Some(4));
        assert_eq!(parse_max_threads("THREADS: live 1 idle 0 max 0\n"), None);
        assert_eq!(parse_max_threads("PONG\0"), None);
    }
}
