//! Ferry's own tokens: the keys that sign them (one signing key, earlier keys still verifying)
//! and the issuer that mints exchanged tokens (`crate::api::exchange` serves the exchange and
//! the OpenID documents over HTTP).

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde_json::{Value, json};

use crate::auth::{
    SCOPE_EVENTS_SUBSCRIBE, SCOPE_READ, SCOPE_SERVICE_OWNER, SCOPE_WRITE, VerifyingKey,
};

/// The scopes an exchanged token is for: one of them is required.
const BROKER_SCOPES: [&str; 4] =
    [SCOPE_WRITE, SCOPE_READ, SCOPE_SERVICE_OWNER, SCOPE_EVENTS_SUBSCRIBE];

/// An EC P-256 key that signs tokens.
#[derive(Clone)]
pub struct SigningKey {
    encoding: EncodingKey,
    public: p256::PublicKey,
    kid: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid).finish()
    }
}

/// A key id: the BLAKE3 of the SEC1 public key, shortened. Stable across restarts.
fn kid_of(public: &p256::PublicKey) -> String {
    let point = p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(public, false);
    blake3::hash(point.as_bytes()).to_hex()[..16].to_owned()
}

/// The public key as a verification key.
fn verifying(public: &p256::PublicKey) -> anyhow::Result<VerifyingKey> {
    use p256::pkcs8::{EncodePublicKey, LineEnding};
    let pem = public.to_public_key_pem(LineEnding::LF)?;
    Ok(VerifyingKey {
        alg: Algorithm::ES256,
        kid: Some(kid_of(public)),
        key: DecodingKey::from_ec_pem(pem.as_bytes())?,
    })
}

/// The public key as a JWK.
fn jwk(public: &p256::PublicKey) -> Value {
    let point = p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(public, false);
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    json!({
        "kty": "EC",
        "crv": "P-256",
        "x": b64(point.x().map(|x| &x[..]).unwrap_or_default()),
        "y": b64(point.y().map(|y| &y[..]).unwrap_or_default()),
        "kid": kid_of(public),
        "use": "sig",
        "alg": "ES256",
    })
}

impl SigningKey {
    /// A PKCS#8 PEM EC P-256 private key.
    pub fn from_pkcs8_pem(pem: &str) -> anyhow::Result<Self> {
        let secret: p256::SecretKey = p256::pkcs8::DecodePrivateKey::from_pkcs8_pem(pem)
            .map_err(|e| anyhow::anyhow!("not a PKCS#8 EC P-256 private key: {e}"))?;
        let public = secret.public_key();
        Ok(Self {
            encoding: EncodingKey::from_ec_pem(pem.as_bytes())?,
            kid: kid_of(&public),
            public,
        })
    }
}

/// Issues exchanged tokens and publishes the keys that verify them.
#[derive(Debug)]
pub struct TokenIssuer {
    /// The `iss` of Ferry's tokens.
    pub issuer: String,
    signing: SigningKey,
    /// Public keys of earlier signing keys.
    previous: Vec<p256::PublicKey>,
    /// Issuers whose tokens may be exchanged.
    accepts: Vec<String>,
    ttl_secs: i64,
}

impl TokenIssuer {
    /// An issuer named `issuer` signing with `signing`, also publishing `previous`, exchanging
    /// tokens of `accepts`, for `ttl_secs`.
    pub fn new(
        issuer: String,
        signing: SigningKey,
        previous: Vec<p256::PublicKey>,
        accepts: Vec<String>,
        ttl_secs: u64,
    ) -> Self {
        Self { issuer, signing, previous, accepts, ttl_secs: ttl_secs.max(1) as i64 }
    }

    /// Reads a PEM public key (an earlier signing key).
    pub fn public_key_from_pem(pem: &str) -> anyhow::Result<p256::PublicKey> {
        p256::pkcs8::DecodePublicKey::from_public_key_pem(pem)
            .map_err(|e| anyhow::anyhow!("not a PEM EC P-256 public key: {e}"))
    }

    /// The keys that verify Ferry's tokens: current first.
    pub fn verifying_keys(&self) -> anyhow::Result<Vec<VerifyingKey>> {
        std::iter::once(&self.signing.public).chain(&self.previous).map(verifying).collect()
    }

    /// The JWKS document.
    pub fn jwks(&self) -> Value {
        let keys: Vec<Value> =
            std::iter::once(&self.signing.public).chain(&self.previous).map(jwk).collect();
        json!({ "keys": keys })
    }

    /// Ferry's token for a verified incoming token, or why not.
    pub fn exchange(&self, token: &crate::auth::VerifiedToken) -> Result<String, String> {
        if !self.accepts.contains(&token.issuer) {
            return Err(format!(
                "tokens of {:?} cannot be exchanged here; exchange a Maskinporten token",
                token.issuer
            ));
        }
        let org = token.caller.org.as_ref().ok_or(
            "the token names no organisation (consumer or authorization_details.systemuser_org)",
        )?;
        if !token.caller.has_any_scope(&BROKER_SCOPES) {
            return Err(format!(
                "the token grants none of the scopes {}",
                BROKER_SCOPES.join(", ")
            ));
        }
        let now = jsonwebtoken::get_current_timestamp() as i64;
        let mut scopes: Vec<&str> = token.caller.scopes.iter().map(String::as_str).collect();
        scopes.sort_unstable();
        let mut claims = json!({
            "iss": self.issuer,
            "iat": now,
            "nbf": now,
            // Never outlives the token it was exchanged for.
            "exp": (now + self.ttl_secs).min(token.exp.max(now)),
            "jti": uuid::Uuid::new_v4().to_string(),
            "scope": scopes.join(" "),
            "consumer": { "authority": "iso6523-actorid-upis", "ID": org.to_string() },
            "urn:altinn:orgNumber": org.org_number(),
            "urn:altinn:authenticatemethod": "maskinporten",
            "urn:altinn:authlevel": 3,
        });
        for copied in ["authorization_details", "client_id", "client_amr"] {
            if let Some(value) = token.claims.get(copied) {
                claims[copied] = value.clone();
            }
        }
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.signing.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.signing.encoding).map_err(|e| e.to_string())
    }
}
