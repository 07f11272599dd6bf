//! Identity: bearer JWTs, scopes and the caller's organisation (contract §3).
//!
//! Tokens are validated against keys configured per issuer (PEM files, a JWKS file, a JWKS URL
//! fetched again in the background): signature (RS256 or ES256, the key chosen by `kid` where
//! both name one), issuer, expiry with a small leeway, and the audience only where the issuer's
//! configuration names one (Altinn checks none). The caller's organisation comes from, in order, `authorization_details.systemuser_org.ID`
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
/// Altinn Events' scope for reading events (the feed, Watch, webhook subscriptions).
pub const SCOPE_EVENTS_SUBSCRIBE: &str = "altinn:events.subscribe";

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
    /// A JWKS URL (e.g. Maskinporten's `https://maskinporten.no/jwk`), fetched at start-up and
    /// every `[auth] jwks_refresh_secs`, so the issuer's key rotations need no restart.
    pub jwks_url: Option<String>,
    /// The `aud` its tokens must carry; not checked when unset (as Altinn does).
    pub audience: Option<String>,
}

/// A verification key: its algorithm, its key id if it has one, the key.
#[derive(Clone)]
pub struct VerifyingKey {
    /// RS256 or ES256.
    pub alg: Algorithm,
    /// The JWK `kid`, matched against a token's header `kid` when both have one.
    pub kid: Option<String>,
    /// The key.
    pub key: DecodingKey,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey").field("alg", &self.alg).field("kid", &self.kid).finish()
    }
}

/// What Ferry trusts of one issuer.
#[derive(Clone, Default)]
struct IssuerKeys {
    audience: Option<String>,
    /// From PEM and JWKS files, or Ferry's own signing keys.
    fixed: Vec<VerifyingKey>,
    /// From the JWKS URL, replaced by each refresh.
    fetched: Vec<VerifyingKey>,
    jwks_url: Option<String>,
}

/// Validates tokens.
#[derive(Clone)]
pub struct Authenticator {
    issuers: std::sync::Arc<std::sync::RwLock<HashMap<String, IssuerKeys>>>,
    /// Woken when a token names a key id its issuer's JWKS URL did not have (a new key,
    /// published after the last fetch): the refresher fetches again, rate-limited.
    refresh_wanted: std::sync::Arc<tokio::sync::Notify>,
    leeway: Duration,
    verified: std::sync::Arc<std::sync::Mutex<VerifiedTokens>>,
}

/// A token that passed every check.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    /// Who it names.
    pub caller: Caller,
    /// Its issuer.
    pub issuer: String,
    /// Its expiry (Unix seconds).
    pub exp: i64,
    /// All its claims.
    pub claims: serde_json::Value,
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
        let issuers: Vec<String> =
            self.issuers.read().map(|i| i.keys().cloned().collect()).unwrap_or_default();
        f.debug_struct("Authenticator")
            .field("issuers", &issuers)
            .field("leeway", &self.leeway)
            .finish()
    }
}

/// The signing keys of a JWKS document. Keys for encryption (`use: enc`) and keys this server
/// cannot use (another key type) are skipped, so one odd key does not lose the others; a
/// document without a single usable key is an error (the caller keeps what it had).
pub fn keys_from_jwks(text: &str) -> anyhow::Result<Vec<VerifyingKey>> {
    use jsonwebtoken::jwk::{AlgorithmParameters, PublicKeyUse};
    let document: serde_json::Value = serde_json::from_str(text).context("parsing a JWKS")?;
    let keys: Vec<VerifyingKey> = document["keys"]
        .as_array()
        .context("a JWKS has a `keys` list")?
        .iter()
        .filter_map(|value| serde_json::from_value::<jsonwebtoken::jwk::Jwk>(value.clone()).ok())
        .filter(|jwk| !matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)))
        .filter_map(|jwk| {
            let alg = match &jwk.algorithm {
                AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
                AlgorithmParameters::RSA(_) => Algorithm::RS256,
                _ => return None,
            };
            let key = DecodingKey::from_jwk(&jwk).ok()?;
            Some(VerifyingKey { alg, kid: jwk.common.key_id.clone(), key })
        })
        .collect();
    anyhow::ensure!(!keys.is_empty(), "the JWKS has no RS256 or ES256 signing key");
    Ok(keys)
}

/// A token's claims, read without checking anything (to find its issuer and, once verified,
/// to copy claims).
fn unverified_claims(token: &str) -> Option<serde_json::Value> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// What a refused token did wrong, in words a client's developer can act on.
fn explain(e: &jsonwebtoken::errors::Error, issuer: &str, audience: Option<&str>) -> String {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::ExpiredSignature => "the token has expired".to_owned(),
        K::ImmatureSignature => "the token is not valid yet (nbf)".to_owned(),
        K::InvalidAudience => {
            format!("the token's audience (aud) must be {:?}", audience.unwrap_or_default())
        }
        K::InvalidSignature => format!("the signature does not match a key of {issuer}"),
        K::MissingRequiredClaim(claim) => format!("the token has no {claim} claim"),
        other => format!("{other:?}"),
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
    /// Loads the keys of `issuers` from their files; `dev_key` adds the development key. Keys at
    /// JWKS URLs come with [`Authenticator::refresh_jwks`].
    pub fn load(
        issuers: &[IssuerConfig],
        dev_key: Option<&DevKey>,
        leeway: Duration,
    ) -> anyhow::Result<Self> {
        let mut all: HashMap<String, IssuerKeys> = HashMap::new();
        for issuer in issuers {
            let entry = all.entry(issuer.issuer.clone()).or_default();
            entry.audience = issuer.audience.clone();
            entry.jwks_url = issuer.jwks_url.clone();
            for path in &issuer.pem_files {
                let pem =
                    std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
                let (alg, key) = decoding_key_from_pem(&pem)
                    .with_context(|| format!("key in {}", path.display()))?;
                entry.fixed.push(VerifyingKey { alg, kid: None, key });
            }
            if let Some(path) = &issuer.jwks_file {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                entry
                    .fixed
                    .extend(keys_from_jwks(&text).with_context(|| path.display().to_string())?);
            }
        }
        if let Some(dev) = dev_key {
            all.entry(DEV_ISSUER.to_owned()).or_default().fixed.push(VerifyingKey {
                alg: Algorithm::ES256,
                kid: None,
                key: dev.decoding.clone(),
            });
        }
        Ok(Self {
            issuers: std::sync::Arc::new(std::sync::RwLock::new(all)),
            refresh_wanted: Default::default(),
            leeway,
            verified: Default::default(),
        })
    }

    /// Trusts `keys` for tokens of `issuer` besides whatever it had (Ferry's own exchanged
    /// tokens).
    pub fn trust(&self, issuer: &str, keys: Vec<VerifyingKey>) {
        let mut issuers = self.issuers.write().expect("issuer keys");
        issuers.entry(issuer.to_owned()).or_default().fixed.extend(keys);
    }

    /// Fetches the keys of every issuer with a JWKS URL and replaces what was fetched before.
    /// A failed fetch keeps the previous keys; the failures are returned (to be logged).
    pub async fn refresh_jwks(&self, http: &reqwest::Client) -> Vec<(String, anyhow::Error)> {
        let urls: Vec<(String, String)> = {
            let issuers = self.issuers.read().expect("issuer keys");
            issuers
                .iter()
                .filter_map(|(iss, k)| k.jwks_url.clone().map(|url| (iss.clone(), url)))
                .collect()
        };
        let mut failures = Vec::new();
        for (issuer, url) in urls {
            let fetched = async {
                let response = http.get(&url).send().await?.error_for_status()?;
                keys_from_jwks(&response.text().await?)
            }
            .await;
            match fetched {
                Ok(keys) => {
                    let mut issuers = self.issuers.write().expect("issuer keys");
                    if let Some(entry) = issuers.get_mut(&issuer) {
                        entry.fetched = keys;
                    }
                }
                Err(e) => failures.push((url, e)),
            }
        }
        failures
    }

    /// Completes when a token named a key id that a JWKS URL's issuer did not have.
    pub async fn refresh_wanted(&self) {
        self.refresh_wanted.notified().await;
    }

    /// Whether any issuer has a JWKS URL to refresh.
    pub fn has_jwks_urls(&self) -> bool {
        self.issuers.read().expect("issuer keys").values().any(|k| k.jwks_url.is_some())
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
        let verified = self.verify(token)?;
        let caller = verified.caller;
        self.verified.lock().expect("token cache").insert(
            key,
            caller.clone(),
            verified.exp,
            now,
            leeway,
        );
        Ok(caller)
    }

    /// Checks `token`'s signature (with its issuer's keys, by `kid` where both name one),
    /// issuer, audience (where configured) and expiry.
    pub fn verify(&self, token: &str) -> Result<VerifiedToken, AuthError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| AuthError::Invalid(e.to_string()))?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(AuthError::Invalid(format!(
                "algorithm {:?} is not accepted; use RS256 or ES256",
                header.alg
            )));
        }
        let claims = unverified_claims(token)
            .ok_or_else(|| AuthError::Invalid("the token's payload is not JSON".into()))?;
        let issuer = claims["iss"]
            .as_str()
            .ok_or_else(|| AuthError::Invalid("the token has no iss claim".into()))?
            .to_owned();
        let trusted =
            self.issuers.read().expect("issuer keys").get(&issuer).cloned().ok_or_else(|| {
                AuthError::Invalid(format!("the issuer {issuer:?} is not trusted"))
            })?;
        let candidates: Vec<&VerifyingKey> = trusted
            .fixed
            .iter()
            .chain(&trusted.fetched)
            .filter(|k| k.alg == header.alg)
            .filter(|k| match (&header.kid, &k.kid) {
                (Some(wanted), Some(kid)) => wanted == kid,
                _ => true,
            })
            .collect();
        if candidates.is_empty() {
            if header.kid.is_some() && trusted.jwks_url.is_some() {
                self.refresh_wanted.notify_one();
            }
            return Err(AuthError::Invalid(match &header.kid {
                Some(kid) => format!("{issuer} has no {:?} key with kid {kid:?}", header.alg),
                None => format!("{issuer} has no {:?} key", header.alg),
            }));
        }
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&issuer]);
        validation.leeway = self.leeway.as_secs();
        match &trusted.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                validation.set_required_spec_claims(&["exp", "iss", "aud"]);
            }
            None => {
                validation.validate_aud = false;
                validation.set_required_spec_claims(&["exp", "iss"]);
            }
        }
        let mut last_error = String::new();
        for key in candidates {
            match jsonwebtoken::decode::<Claims>(token, &key.key, &validation) {
                Ok(data) => {
                    let exp = data.claims.exp;
                    return Ok(VerifiedToken {
                        caller: caller_from(data.claims),
                        issuer,
                        exp,
                        claims,
                    });
                }
                Err(e) => last_error = explain(&e, &issuer, trusted.audience.as_deref()),
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
    pem: String,
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
            // Two processes may create it at once (`ferry serve` starting, `ferry token`): the
            // first link wins and both read that one.
            let tmp = data_dir.join(format!("{DEV_KEY_FILE}.{}.tmp", std::process::id()));
            std::fs::write(&tmp, pem.as_bytes())?;
            match std::fs::hard_link(&tmp, &path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e.into());
                }
            }
            std::fs::remove_file(&tmp)?;
        }
        let pem = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let secret: p256::SecretKey = p256::pkcs8::DecodePrivateKey::from_pkcs8_pem(&pem)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let public_pem = secret.public_key().to_public_key_pem(LineEnding::LF)?;
        Ok(Self {
            encoding: EncodingKey::from_ec_pem(pem.as_bytes())?,
            decoding: DecodingKey::from_ec_pem(public_pem.as_bytes())?,
            pem,
        })
    }

    /// The key as PKCS#8 PEM (development mode signs exchanged tokens with it too).
    pub fn pem(&self) -> &str {
        &self.pem
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
