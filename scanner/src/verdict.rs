//! Scan outcomes and errors.

use std::io;

/// What a scan concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// clamd read every byte and found nothing.
    Clean,
    /// A signature matched.
    Infected {
        /// The signature, e.g. `Eicar-Test-Signature-NDB.UNOFFICIAL`.
        signature: String,
    },
    /// The bytes were not (completely) scanned. Never to be treated as clean.
    NotScanned {
        /// Why.
        reason: NotScannedReason,
    },
}

impl Verdict {
    /// Only a clean verdict may lead to publication.
    pub fn is_clean(&self) -> bool {
        matches!(self, Self::Clean)
    }

    /// Folds a scan error into a verdict: every error is "not scanned", never clean.
    pub fn from_result(result: Result<Verdict, ScanError>) -> Self {
        match result {
            Ok(verdict) => verdict,
            Err(e) => Self::NotScanned { reason: e.into() },
        }
    }
}

/// Why bytes were not scanned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotScannedReason {
    /// The stream is longer than the scanner accepts (Ferry's limit, or clamd's hard 2 GiB).
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// clamd refused the stream: `INSTREAM size limit exceeded` (its `StreamMaxLength`).
    StreamLimitExceeded,
    /// clamd skipped part of the content because of its own limits
    /// (`Heuristics.Limits.Exceeded.*`, reported thanks to `AlertExceedsMax`).
    ClamdLimits {
        /// The heuristic's name.
        detail: String,
    },
    /// clamd stopped scanning after its `MaxScanTime` (`Heuristics.Limits.Exceeded.MaxScanTime`):
    /// partly a matter of load, so it is tried again a few times, never taken as clean.
    ScanTimeExceeded,
    /// clamd could not be reached.
    Unavailable(String),
    /// clamd did not answer in time.
    Timeout(String),
    /// Anything else (clamd error replies, protocol errors, the source failing).
    Failed(String),
}

impl NotScannedReason {
    /// Whether trying again later may help (scanner down or slow), as opposed to a property of
    /// the file (too large) or a definite clamd refusal.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Timeout(_))
    }
}

impl std::fmt::Display for NotScannedReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooLarge { limit } => {
                write!(f, "the file is larger than the scanner's limit of {limit} bytes")
            }
            Self::StreamLimitExceeded => {
                f.write_str("clamd refused the stream: INSTREAM size limit exceeded")
            }
            Self::ClamdLimits { detail } => {
                write!(f, "clamd could not scan all of the file ({detail})")
            }
            Self::ScanTimeExceeded => {
                f.write_str("clamd ran out of scan time (MaxScanTime) before the end of the file")
            }
            Self::Unavailable(msg) => write!(f, "the scanner is unavailable: {msg}"),
            Self::Timeout(msg) => write!(f, "the scanner timed out: {msg}"),
            Self::Failed(msg) => write!(f, "the scan failed: {msg}"),
        }
    }
}

/// A scan that could not reach a verdict.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScanError {
    /// Connecting to clamd failed (not running, wrong address, refused).
    #[error("clamd at {address} is unavailable: {source}")]
    Unavailable {
        /// Where we tried.
        address: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// clamd did not make progress within the configured time.
    #[error("clamd timed out while {stage}")]
    Timeout {
        /// What we were waiting for.
        stage: &'static str,
    },
    /// clamd answered with an error (other than the stream size limit).
    #[error("clamd replied with an error: {0}")]
    Clamd(String),
    /// clamd's reply could not be understood.
    #[error("unexpected reply from clamd: {0:?}")]
    Protocol(String),
    /// The connection to clamd broke mid-scan without a reply.
    #[error("connection to clamd failed: {0}")]
    Io(#[source] io::Error),
    /// Reading the bytes to scan failed (e.g. the upload was abandoned).
    #[error("reading the bytes to scan failed: {0}")]
    Source(#[source] io::Error),
}

impl From<ScanError> for NotScannedReason {
    fn from(e: ScanError) -> Self {
        match e {
            ScanError::Unavailable { .. } => Self::Unavailable(e.to_string()),
            ScanError::Timeout { .. } => Self::Timeout(e.to_string()),
            ScanError::Io(_) => Self::Unavailable(e.to_string()),
            ScanError::Clamd(_) | ScanError::Protocol(_) | ScanError::Source(_) => {
                Self::Failed(e.to_string())
            }
        }
    }
}

/// Parses clamd's reply to INSTREAM exactly. The trailing NUL (z-commands) or newline is
/// stripped; anything not in clamd's documented forms is a protocol error.
pub(crate) fn parse_instream_reply(raw: &[u8]) -> Result<Verdict, ScanError> {
    let text = String::from_utf8_lossy(raw);
    let text = text.trim_end_matches(['\0', '\n']);
    if text == "INSTREAM size limit exceeded. ERROR" {
        return Ok(Verdict::NotScanned { reason: NotScannedReason::StreamLimitExceeded });
    }
    if let Some(error) = text.strip_suffix(" ERROR") {
        return Err(ScanError::Clamd(error.to_owned()));
    }
    // Replies may carry a session id prefix ("1: stream: OK") in IDSESSION mode; we do not use
    // sessions, so the reply must start with "stream: ".
    let Some(body) = text.strip_prefix("stream: ") else {
        return Err(ScanError::Protocol(text.to_owned()));
    };
    if body == "OK" {
        return Ok(Verdict::Clean);
    }
    match body.strip_suffix(" FOUND") {
        Some("Heuristics.Limits.Exceeded.MaxScanTime") => {
            Ok(Verdict::NotScanned { reason: NotScannedReason::ScanTimeExceeded })
        }
        Some(name) if name.starts_with("Heuristics.Limits.Exceeded") => Ok(Verdict::NotScanned {
            reason: NotScannedReason::ClamdLimits { detail: name.to_owned() },
        }),
        Some(name) if !name.is_empty() => Ok(Verdict::Infected { signature: name.to_owned() }),
        _ => Err(ScanError::Protocol(text.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_reply_form() {
        assert_eq!(parse_instream_reply(b"stream: OK\0").unwrap(), Verdict::Clean);
        assert_eq!(
            parse_instream_reply(b"stream: Eicar-Test-Signature-NDB.UNOFFICIAL FOUND\0").unwrap(),
            Verdict::Infected { signature: "Eicar-Test-Signature-NDB.UNOFFICIAL".into() }
        );
        assert_eq!(
            parse_instream_reply(b"stream: Heuristics.Limits.Exceeded.MaxFileSize FOUND\0")
                .unwrap(),
            Verdict::NotScanned {
                reason: NotScannedReason::ClamdLimits {
                    detail: "Heuristics.Limits.Exceeded.MaxFileSize".into()
                }
            }
        );
        assert_eq!(
            parse_instream_reply(b"stream: Heuristics.Limits.Exceeded.MaxScanTime FOUND\0")
                .unwrap(),
            Verdict::NotScanned { reason: NotScannedReason::ScanTimeExceeded }
        );
        assert_eq!(
            parse_instream_reply(b"INSTREAM size limit exceeded. ERROR\0").unwrap(),
            Verdict::NotScanned { reason: NotScannedReason::StreamLimitExceeded }
        );
        assert!(matches!(
            parse_instream_reply(b"Can't allocate memory ERROR\0"),
            Err(ScanError::Clamd(m)) if m == "Can't allocate memory"
        ));
        for bad in [&b""[..], b"PONG\0", b"stream: \0", b"stream: FOUND\0", b"stream: OKAY\0"] {
            assert!(matches!(parse_instream_reply(bad), Err(ScanError::Protocol(_))), "{bad:?}");
        }
    }

    #[test]
    fn errors_never_become_clean() {
        let errors = [
            ScanError::Unavailable { address: "x".into(), source: io::ErrorKind::NotFound.into() },
            ScanError::Timeout { stage: "waiting" },
            ScanError::Clamd("x".into()),
            ScanError::Protocol("x".into()),
            ScanError::Io(io::ErrorKind::BrokenPipe.into()),
            ScanError::Source(io::ErrorKind::ConnectionAborted.into()),
        ];
        for e in errors {
            let verdict = Verdict::from_result(Err(e));
            assert!(!verdict.is_clean());
            assert!(matches!(verdict, Verdict::NotScanned { .. }));
        }
    }
}
