//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz, libFuzzer). Not an API.
//!
//! One function per target: each feeds arbitrary bytes to a parser of untrusted input the way
//! its transport does (a header value that `http` accepts, a request body) and checks what must
//! hold of the result; a panic is a finding. The test below replays every committed seed
//! (`fuzz/corpus/<target>/`) and crash input (`fuzz/regressions/<target>/`) through the same
//! functions, so `cargo test` keeps them passing without the fuzzer.

use std::sync::OnceLock;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};
use base64::Engine as _;
use bytes::Bytes;
use storage::model::Timestamp;
use storage::model::{FileTransferId, Party, ResourceConfig, ResourceId};

use crate::api::http::CiObject;
use crate::auth::{Authenticator, DevKey};
use crate::error::ApiError;

/// A fuzz target: takes any bytes, panics on a finding.
pub type Target = fn(&[u8]);

/// The targets by name: the names of the `fuzz/` binaries and of their input directories.
pub const TARGETS: &[(&str, Target)] = &[
    ("range", range),
    ("tus_headers", tus_headers),
    ("json_bodies", json_bodies),
    ("token", token),
    ("timestamp", timestamp),
];

/// The transfer the TUS URLs of [`tus_headers`] belong to (the seeds use it).
pub const TRANSFER: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";

/// The first 8 bytes as a little-endian number (missing bytes are zeros), and the rest.
fn split_u64(data: &[u8]) -> (u64, &[u8]) {
    let n = data.len().min(8);
    let mut bytes = [0u8; 8];
    bytes[..n].copy_from_slice(&data[..n]);
    (u64::from_le_bytes(bytes), &data[n..])
}

/// A header map with `name: value`, if `http` accepts the value (as hyper would have).
fn header(name: &'static str, value: &[u8]) -> Option<HeaderMap> {
    let value = HeaderValue::from_bytes(value).ok()?;
    value.to_str().ok()?;
    let mut headers = HeaderMap::new();
    headers.insert(name, value);
    Some(headers)
}

/// `Range` of a REST download: 8 bytes of file size, then the header value.
pub fn range(data: &[u8]) {
    let (size, value) = split_u64(data);
    let Some(headers) = header("range", value) else { return };
    let value = headers["range"].to_str().expect("checked");
    match crate::api::rest::resolve_range(Some(value), size) {
        Ok(Some((start, len))) => {
            assert!(len >= 1, "{value:?} of {size}: an empty range");
            let end = start.checked_add(len);
            assert!(end.is_some_and(|end| end <= size), "{value:?} of {size}: {start}+{len}");
        }
        Ok(None) => {}
        Err(e) => assert_eq!(e.code, Some(29), "{value:?} of {size}: {e:?}"),
    }
}

/// A date-time query parameter (`from`, `to` of a REST search): parsed, and if it is a date,
/// printed and parsed again to the same instant.
pub fn timestamp(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Some(t) = Timestamp::parse_rfc3339(text) else { return };
    let printed = t.to_rfc3339();
    // Years before 0 print with a sign, which the parser does not take (nor does RFC 3339).
    if !printed.starts_with('-') {
        assert_eq!(Timestamp::parse_rfc3339(&printed), Some(t), "{text:?} printed {printed:?}");
    }
}

/// TUS request headers. The first byte picks the header: `Upload-Offset` (the number parser of
/// `Upload-Offset` and `Upload-Length`), `Upload-Checksum` (whose value ends at the first
/// newline; the rest is the chunk it is checked against) or `Upload-Concat` (a `final;` list
/// of partial upload URLs); the rest is the value.
pub fn tus_headers(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else { return };
    match which % 3 {
        0 => {
            let Some(headers) = header("upload-offset", rest) else { return };
            if let Ok(Some(n)) = crate::api::tus::header_u64(&headers, "upload-offset") {
                let text = headers["upload-offset"].to_str().expect("checked");
                assert_eq!(text.trim().parse::<u64>().ok(), Some(n));
            }
        }
        1 => {
            let (value, chunk) = match rest.iter().position(|b| *b == b'\n') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &[][..]),
            };
            let Some(headers) = header("upload-checksum", value) else { return };
            if let Ok(Some(mut checksum)) = crate::api::tus::Checksum::parse(&headers) {
                checksum.update(chunk);
                let _ = checksum.matches();
            }
        }
        _ => {
            let Some(headers) = header("upload-concat", rest) else { return };
            let value = headers["upload-concat"].to_str().expect("checked").trim();
            let Some(list) = value.strip_prefix("final;") else { return };
            let id: FileTransferId = TRANSFER.parse().expect("a transfer id");
            for url in list.split_whitespace() {
                if let Some(partial) = crate::api::tus::partial_of(url, id) {
                    assert!(!partial.is_empty() && !partial.contains('/'), "{url:?}: {partial:?}");
                    assert!(url.ends_with(partial), "{url:?}: {partial:?}");
                }
            }
        }
    }
}

/// Every property name the REST request bodies read.
const FIELDS: &[&str] = &[
    "fileName",
    "resourceId",
    "sendersFileTransferReference",
    "sender",
    "recipients",
    "propertyList",
    "checksum",
    "disableVirusScan",
    "blake3",
    "name",
    "maxFileTransferSize",
    "fileTransferTimeToLive",
    "purgeFileTransferAfterAllRecipientsConfirmed",
    "purgeFileTransferGracePeriod",
    "useManifestFileShim",
    "externalServiceCodeLegacy",
    "externalServiceEditionCodeLegacy",
    "requiredParty",
    "access",
];

/// A JSON request body, read as the REST handlers read it: the initialize and service owner
/// fields, then the resource fields, which are applied to a resource as `PUT /resource/{id}`
/// does (durations, sizes, parties validated by the model).
pub fn json_bodies(data: &[u8]) {
    let Ok(body) = CiObject::parse(&Bytes::copy_from_slice(data)) else { return };
    for name in FIELDS {
        // Property names match whatever their case (Altinn's JSON settings).
        assert_eq!(body.get(name), body.get(&name.to_ascii_uppercase()), "{name}");
    }
    let _ = initialize_fields(&body);
    let _ = body.required_string("name");
    if let Ok(update) = crate::api::rest::resource_update(&body) {
        let owner = Party::parse("0192:991825827").expect("a party");
        let id = ResourceId::parse("fuzz").expect("a resource id");
        let mut resource = ResourceConfig::new(id, owner, Timestamp::EPOCH);
        let _ = resource.apply(update);
    }
}

/// The fields `POST /filetransfer` reads, with the parties parsed.
fn initialize_fields(body: &CiObject) -> Result<(), ApiError> {
    body.required_string("fileName")?;
    body.required_string("resourceId")?;
    body.string("sendersFileTransferReference")?;
    let _ = Party::parse_lenient(&body.required_string("sender")?);
    for recipient in body.strings("recipients")?.unwrap_or_default() {
        let _ = Party::parse_lenient(&recipient);
    }
    body.string_map("propertyList")?;
    body.string("checksum")?;
    body.bool("disableVirusScan")?;
    body.string("blake3")?;
    Ok(())
}

/// An authenticator that trusts one fixed development key (the same on every run, so a crash
/// input replays), and the key.
fn authenticator() -> &'static (Authenticator, DevKey) {
    static ONCE: OnceLock<(Authenticator, DevKey)> = OnceLock::new();
    ONCE.get_or_init(|| {
        use p256::pkcs8::{EncodePrivateKey as _, LineEnding};
        let dir = std::env::temp_dir().join(format!("ferry-fuzz-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let secret = p256::SecretKey::from_slice(&[0x42; 32]).expect("a valid scalar");
        let pem = secret.to_pkcs8_pem(LineEnding::LF).expect("PEM");
        std::fs::write(dir.join("dev-signing-key.pem"), pem.as_bytes()).expect("write the key");
        let key = DevKey::load_or_create(&dir).expect("the key loads");
        let _ = std::fs::remove_dir_all(&dir);
        let auth = Authenticator::load(&[], Some(&key), Duration::from_secs(60)).expect("keys");
        (auth, key)
    })
}

/// `base64url(header).base64url(payload).signature`, signed with the trusted key.
fn signed(key: &DevKey, header: &[u8], payload: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let message = format!("{}.{}", b64.encode(header), b64.encode(payload));
    let signature = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &key.encoding,
        jsonwebtoken::Algorithm::ES256,
    )
    .expect("signing");
    format!("{message}.{signature}")
}

/// The `Authorization` header of any request. The first byte picks: the rest is the header
/// value itself; or the claims of a token signed with the trusted key (so that the claims are
/// read, not only the signature checked); or `header.claims` (JSON both), signed.
pub fn token(data: &[u8]) {
    let (auth, key) = authenticator();
    let Some((&which, rest)) = data.split_first() else { return };
    let value = match which % 3 {
        0 => match header("authorization", rest) {
            Some(headers) => headers["authorization"].to_str().expect("checked").to_owned(),
            None => return,
        },
        1 => format!("Bearer {}", signed(key, br#"{"alg":"ES256","typ":"JWT"}"#, rest)),
        _ => {
            let (head, claims) = match rest.iter().position(|b| *b == b'.') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &[][..]),
            };
            format!("Bearer {}", signed(key, head, claims))
        }
    };
    if let Ok(caller) = auth.authenticate(Some(&value)) {
        // A remembered token names the same caller as when it was checked.
        assert_eq!(auth.authenticate(Some(&value)), Ok(caller));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every committed seed and crash input of every target, through the target's function.
    #[test]
    fn every_committed_fuzz_input_replays_without_a_finding() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
        let (mut replayed, mut failed) = (0, Vec::new());
        for (name, target) in TARGETS {
            for kind in ["corpus", "regressions"] {
                let Ok(entries) = std::fs::read_dir(root.join(kind).join(name)) else { continue };
                for entry in entries {
                    let path = entry.unwrap().path();
                    let data = std::fs::read(&path).unwrap();
                    replayed += 1;
                    if std::panic::catch_unwind(|| target(&data)).is_err() {
                        failed.push(path.display().to_string());
                    }
                }
            }
        }
        assert!(failed.is_empty(), "fuzz inputs that fail: {failed:?}");
        assert!(replayed >= TARGETS.len(), "no fuzz inputs under {}", root.display());
    }

    #[test]
    fn a_signed_token_with_dev_claims_is_accepted() {
        let claims = br#"{"iss":"ferry-dev","exp":4102444800,"scope":"altinn:broker.read","urn:altinn:orgNumber":"991825827"}"#;
        let (auth, key) = authenticator();
        let header = format!("Bearer {}", signed(key, br#"{"alg":"ES256","typ":"JWT"}"#, claims));
        let caller = auth.authenticate(Some(&header)).unwrap();
        assert_eq!(caller.org, Some(Party::parse("0192:991825827").unwrap()));
    }
}
