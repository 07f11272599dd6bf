//! Identity: bearer JWTs, scopes and the caller's organisation (contract §3).
//!
//! Tokens are validated against keys configured per issuer (PEM files or a JWKS file):
//! signature (RS256 or ES256), issuer, expiry with a small leeway. Audience is not checked, as in
//! Altinn. The caller's organisation comes from, in order, `authorization_details.systemuser_org.ID`
//! (system users), `urn:altinn:orgNumber` (Altinn enterprise tokens) and `consumer.ID`
//! (Maskinporten); scopes from `urn:altinn:scope` or `scope`.
//!
//! In development mode the server creates an ES256 key in its data directory on first start,
//! trusts it under the issuer [`DEV_ISSUER`], and `ferry token` signs tokens with it.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::Deserialize;
use storage::model::Party;

/// The issuer of development tokens.
pub const DEV_ISSUER: &str = "ferry-dev";
const DEV_KEY_FILE: &str = "dev-signing-key.pem";

/// Scope of senders.
pub const SCOPE_WRITE: &str = "altinn:broker.write";
/// Scope of recipients.
pub const SCOPE_READ: &str = "altinn:broker.read";
/// Scope of service owners.
pub const SCOPE_SERVICE_OWNER: &str = "altinn:serviceowner";

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The organisation the caller acts for, if the token names one.
    pub org: Option<Party>,
    /// Granted scopes.
    pub scopes: HashSet<String>,
}

impl Caller {
    /// Whether any of `scopes` was granted.
    pub fn has_any_scope(&self, scopes: &[&str]) -> bool {
        scopes.iter().any(|s| self.scopes.contains(*s))
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No bearer token.
    #[error("a bearer token is required")]
    Missing,
    /// The token is malformed, expired, from an unknown issuer or badly signed.
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// One trusted issuer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The `iss` claim.
    pub issuer: String,
    /// PEM files with public keys (RSA or EC P-256).
    #[serde(default)]
    pub pem_files: Vec<PathBuf>,
    /// A JWKS file.
    pub jwks_file: Option<PathBuf>,
}

/// Validates tokens.
#[derive(Clone)]
pub struct Authenticator {
    keys: HashMap<String, Vec<(Algorithm, DecodingKey)>>,
    leeway: Duration,
    verified: std::sync::Arc<std::sync::Mutex<VerifiedTokens>>,
}

/// Tokens whose signature has been checked, by the BLAKE3 of the whole token, with the caller
/// they name and their expiry. A client sends the same token with every call until it expires,
/// and an ES256 check costs about 0.2 ms of CPU (a quarter of the server's time at 500 small
/// transfers/s): it is done once per token. The key set never changes after start-up, and the
/// expiry is still checked on every call; a token that differs in one byte is another entry.
#[derive(Debug, Default)]
struct VerifiedTokens {
    entries: HashMap<[u8; 32], (Caller, i64)>,
}

/// Most tokens remembered; past it, expired ones go, and if none had expired, all.
const VERIFIED_TOKENS_MAX: usize = 16_384;

impl VerifiedTokens {
    fn get(&self, key: &[u8; 32], now: i64, leeway: i64) -> Option<Caller> {
        let (caller, exp) = self.entries.get(key)?;
        (now <= exp.saturating_add(leeway)).then(|| caller.clone())
    }

    fn insert(&mut self, key: [u8; 32], caller: Caller, exp: i64, now: i64, leeway: i64) {
        if self.entries.len() >= VERIFIED_TOKENS_MAX {
            self.entries.retain(|_, (_, exp)| now <= exp.saturating_add(leeway));
            if self.entries.len() >= VERIFIED_TOKENS_MAX {
                self.entries.clear();
            }
        }
        self.entries.insert(key, (caller, exp));
    }
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("issuers", &self.keys.keys().collect::<Vec<_>>())
            .field("leeway", &self.leeway)
            .finish()
    }
}

#[derive(Debug, Deserialize)]
struct Claims {
    iss: String,
    exp: i64,
    scope: Option<String>,
    #[serde(rename = "urn:altinn:scope")]
    altinn_scope: Option<String>,
    #[serde(rename = "urn:altinn:orgNumber")]
    org_number: Option<String>,
    authorization_details: Option<serde_json::Value>,
    consumer: Option<serde_json::Value>,
}

impl Authenticator {
    /// Loads the keys of `issuers`; `dev_key` adds the development key.
    pub fn load(
        issuers: &[IssuerConfig],
        dev_key: Option<&DevKey>,
        leeway: Duration,
    ) -> anyhow::Result<Self> {
        let mut keys: HashMap<String, Vec<(Algorithm, DecodingKey)>> = HashMap::new();
        for issuer in issuers {
            let entry = keys.entry(issuer.issuer.clone()).or_default();
            for path in &issuer.pem_files {
                let pem =
                    std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
                entry.push(
                    decoding_key_from_pem(&pem)
                        .with_context(|| format!("key in {}", path.display()))?,
                );
            }
            if let Some(path) = &issuer.jwks_file {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let set: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&text)
                    .with_context(|| format!("parsing JWKS {}", path.display()))?;
                for jwk in &set.keys {
                    let key = DecodingKey::from_jwk(jwk).context("JWKS key")?;
                    let alg = match &jwk.algorithm {
                        jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => {
                            Algorithm::ES256
                        }
                        _ => Algorithm::RS256,
                    };
                    entry.push((alg, key));
                }
            }
        }
        if let Some(dev) = dev_key {
            keys.entry(DEV_ISSUER.to_owned())
                .or_default()
                .push((Algorithm::ES256, dev.decoding.clone()));
        }
        Ok(Self { keys, leeway, verified: Default::default() })
    }

    /// Validates the value of an `authorization` header/metadata entry.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Caller, AuthError> {
        let token = authorization
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Missing)?;
        let key = *blake3::hash(token.as_bytes()).as_bytes();
        let now = jsonwebtoken::get_current_timestamp() as i64;
        let leeway = self.leeway.as_secs() as i64;
        if let Some(caller) = self.verified.lock().expect("token cache").get(&key, now, leeway) {
            return Ok(caller);
        }
        let (caller, exp) = self.verify(token)?;
        self.verified.lock().expect("token cache").insert(key, caller.clone(), exp, now, leeway);
        Ok(caller)
    }

    /// Checks `token`'s signature, issuer and expiry; the caller and the expiry.
    fn verify(&self, token: &str) -> Result<(Caller, i64), AuthError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| AuthError::Invalid(e.to_string()))?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(AuthError::Invalid(format!("algorithm {:?} is not accepted", header.alg)));
        }
        let mut last_error = "no trusted issuer matches".to_owned();
        for (issuer, keys) in &self.keys {
            for (alg, key) in keys.iter().filter(|(alg, _)| *alg == header.alg) {
                let mut validation = Validation::new(*alg);
                validation.set_issuer(&[issuer]);
                validation.validate_aud = false;
                validation.leeway = self.leeway.as_secs();
                validation.set_required_spec_claims(&["exp", "iss"]);
                match jsonwebtoken::decode::<Claims>(token, key, &validation) {
                    Ok(data) => {
                        let exp = data.claims.exp;
                        return Ok((caller_from(data.claims), exp));
                    }
                    Err(e) => last_error = e.to_string(),
                }
            }
        }
        Err(AuthError::Invalid(last_error))
    }
}

fn decoding_key_from_pem(pem: &[u8]) -> anyhow::Result<(Algorithm, DecodingKey)> {
    if let Ok(key) = DecodingKey::from_ec_pem(pem) {
        return Ok((Algorithm::ES256, key));
    }
    Ok((Algorithm::RS256, DecodingKey::from_rsa_pem(pem)?))
}

fn caller_from(claims: Claims) -> Caller {
    let _ = &claims.iss;
    let scopes = claims
        .altinn_scope
        .or(claims.scope)
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let id_at = |value: &Option<serde_json::Value>, path: &[&str]| -> Option<String> {
        let mut v = value.as_ref()?;
        // authorization_details may be an object or a one-element array.
        if let Some(first) = v.as_array().and_then(|a| a.first()) {
            v = first;
        }
        for key in path {
            v = v.get(key)?;
        }
        v.as_str().map(str::to_owned)
    };
    let org = id_at(&claims.authorization_details, &["systemuser_org", "ID"])
        .or(claims.org_number)
        .or_else(|| id_at(&claims.consumer, &["ID"]))
        .and_then(|id| Party::parse_lenient(&id).ok());
    Caller { org, scopes }
}

/// The development signing key.
#[derive(Clone)]
pub struct DevKey {
    pub(crate) encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for DevKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DevKey")
    }
}

impl DevKey {
    /// Loads the key from `data_dir`, creating it on first use.
    pub fn load_or_create(data_dir: &Path) -> anyhow::Result<Self> {
        use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
        let path = data_dir.join(DEV_KEY_FILE);
        if !path.exists() {
            std::fs::create_dir_all(data_dir)?;
            let secret = p256::SecretKey::random(&mut rand_core::OsRng);
            let pem = secret.to_pkcs8_pem(LineEnding::LF)?;
            let tmp = data_dir.join(format!("{DEV_KEY_FILE}.tmp"));
            std::fs::write(&tmp, pem.as_bytes())?;
            std::fs::rename(&tmp, &path)?;
        }
        let pem = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let secret: p256::SecretKey = p256::pkcs8::DecodePrivateKey::from_pkcs8_pem(&pem)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let public_pem = secret.public_key().to_public_key_pem(LineEnding::LF)?;
        Ok(Self {
            encoding: EncodingKey::from_ec_pem(pem.as_bytes())?,
            decoding: DecodingKey::from_ec_pem(public_pem.as_bytes())?,
        })
    }

    /// A token for `org` with `scopes`, valid for `ttl` (negative `ttl_secs` make expired tokens
    /// for tests).
    pub fn mint(&self, org: &Party, scopes: &[&str], ttl_secs: i64) -> String {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs()
            as i64;
        let claims = serde_json::json!({
            "iss": DEV_ISSUER,
            "iat": now,
            "exp": now + ttl_secs,
            "scope": scopes.join(" "),
            "consumer": { "authority": "iso6523-actorid-upis", "ID": org.to_string() },
            "urn:altinn:orgNumber": org.org_number(),
        });
        jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &self.encoding)
            .expect("signing with a valid key")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remembered_token_is_refused_once_it_expires_and_a_changed_one_is_checked_again() {
        let dir = tempfile::tempdir().unwrap();
        let key = DevKey::load_or_create(dir.path()).unwrap();
        let auth = Authenticator::load(&[], Some(&key), Duration::ZERO).unwrap();
        let org = Party::parse("0192:991825827").unwrap();
        let token = key.mint(&org, &[SCOPE_WRITE], 1);
        let header = format!("Bearer {token}");
        assert!(auth.authenticate(Some(&header)).is_ok());
        assert!(auth.authenticate(Some(&header)).is_ok(), "a remembered token");
        // One byte of the signature changed: not the remembered token, and not valid.
        let mut tampered = header.clone().into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert!(matches!(auth.authenticate(Some(&tampered)), Err(AuthError::Invalid(_))));
        std::thread::sleep(Duration::from_millis(2100));
        assert!(
            matches!(auth.authenticate(Some(&header)), Err(AuthError::Invalid(_))),
            "an expired token was accepted because it had been verified before"
        );
    }

    #[test]
    fn the_token_memory_stays_bounded() {
        let mut tokens = VerifiedTokens::default();
        let caller = Caller { org: None, scopes: HashSet::new() };
        for i in 0..(VERIFIED_TOKENS_MAX + 10) as u64 {
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&i.to_le_bytes());
            // Every tenth token is already expired at `now` = 1000.
            let exp = if i % 10 == 0 { 10 } else { 5000 };
            tokens.insert(key, caller.clone(), exp, 1000, 0);
            assert!(tokens.entries.len() <= VERIFIED_TOKENS_MAX);
        }
        let mut recent = [0u8; 32];
        recent[..8].copy_from_slice(&((VERIFIED_TOKENS_MAX + 9) as u64).to_le_bytes());
        assert!(tokens.get(&recent, 1000, 0).is_some());
        assert!(tokens.get(&recent, 5001, 0).is_none(), "expired");
    }

    #[test]
    fn dev_tokens_round_trip_and_bad_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = DevKey::load_or_create(dir.path()).unwrap();
        let auth = Authenticator::load(&[], Some(&key), Duration::from_secs(5)).unwrap();
        let org = Party::parse("0192:991825827").unwrap();
        let token = key.mint(&org, &[SCOPE_WRITE, SCOPE_READ], 60);
        let caller = auth.authenticate(Some(&format!("Bearer {token}"))).unwrap();
        assert_eq!(caller.org, Some(org.clone()));
        assert!(caller.has_any_scope(&[SCOPE_READ]));
        assert!(!caller.has_any_scope(&[SCOPE_SERVICE_OWNER]));

        assert_eq!(auth.authenticate(None), Err(AuthError::Missing));
        let expired = key.mint(&org, &[SCOPE_WRITE], -60);
        assert!(matches!(
            auth.authenticate(Some(&format!("Bearer {expired}"))),
            Err(AuthError::Invalid(_))
        ));
        // A key from another data directory is not trusted.
        let other = DevKey::load_or_create(tempfile::tempdir().unwrap().path()).unwrap();
        let foreign = other.mint(&org, &[SCOPE_WRITE], 60);
        assert!(matches!(
            auth.authenticate(Some(&format!("Bearer {foreign}"))),
            Err(AuthError::Invalid(_))
        ));
        // The key persists: loading again gives the same key.
        let again = DevKey::load_or_create(dir.path()).unwrap();
        let token = again.mint(&org, &[SCOPE_WRITE], 60);
        assert!(auth.authenticate(Some(&format!("Bearer {token}"))).is_ok());
    }
}
