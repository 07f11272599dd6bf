//! Content digests: [`Digest`] (BLAKE3, the blob store's address) and [`Md5`] (Altinn's checksum).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A BLAKE3 digest: the address of a blob.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Digest([u8; 32]);

impl Digest {
    /// Wraps raw digest bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex, 64 characters.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// The digest of `data` (for tests and small payloads; the store hashes while streaming).
    pub fn of(data: &[u8]) -> Self {
        Self(*blake3::hash(data).as_bytes())
    }
}

impl From<blake3::Hash> for Digest {
    fn from(hash: blake3::Hash) -> Self {
        Self(*hash.as_bytes())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Eight hex digits identify a blob in logs well enough.
        write!(f, "Digest({}…)", &self.to_hex()[..8])
    }
}

impl FromStr for Digest {
    type Err = DigestParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex(s).map(Self)
    }
}

/// An MD5 digest, Altinn's `checksum`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Md5([u8; 16]);

impl Md5 {
    /// Wraps raw digest bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Lowercase hex, 32 characters, as Altinn prints it.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// The MD5 of `data`.
    pub fn of(data: &[u8]) -> Self {
        use md5::Digest as _;
        Self(md5::Md5::digest(data).into())
    }
}

impl fmt::Display for Md5 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Md5 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Md5({})", self.to_hex())
    }
}

impl FromStr for Md5 {
    type Err = DigestParseError;

    /// Accepts hex in either case (Altinn compares checksums case-insensitively).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex(s).map(Self)
    }
}

/// A digest string of the wrong length or with non-hex characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected {expected} hex characters")]
pub struct DigestParseError {
    expected: usize,
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

fn parse_hex<const N: usize>(s: &str) -> Result<[u8; N], DigestParseError> {
    let err = DigestParseError { expected: N * 2 };
    if s.len() != N * 2 {
        return Err(err);
    }
    let mut out = [0u8; N];
    for (i, pair) in s.as_bytes().chunks_exact(2).enumerate() {
        let text = std::str::from_utf8(pair).map_err(|_| err.clone())?;
        out[i] = u8::from_str_radix(text, 16).map_err(|_| err.clone())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        let d = Digest::of(b"ferry");
        assert_eq!(d.to_hex().parse::<Digest>().unwrap(), d);
        let m = Md5::of(b"");
        assert_eq!(m.to_hex(), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!("D41D8CD98F00B204E9800998ECF8427E".parse::<Md5>().unwrap(), m);
        assert!("d41d8cd98f00b204e9800998ecf8427".parse::<Md5>().is_err());
        assert!("g41d8cd98f00b204e9800998ecf8427e".parse::<Md5>().is_err());
    }
}
