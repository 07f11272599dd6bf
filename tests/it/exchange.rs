//! Altinn's token exchange (issue 13, part 2): a real RSA issuer shaped like Maskinporten,
//! its JWKS served over HTTP on loopback, a client whose whole flow starts with the exchange,
//! and the refusals, each saying why.

use std::time::{SystemTime, UNIX_EPOCH};

use integration_tests::{TestClamd, TestServer, payload};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const MASKINPORTEN: &str = "https://test.maskinporten.no/";
const AUDIENCE: &str = "https://ferry.example.no/";
const OWNER: &str = "991825827";
const SENDER: &str = "910753614";
const RECIPIENT: &str = "986252932";

/// An RSA key pair like Maskinporten's: signs RS256, published as a JWK.
struct Issuer {
    encoding: EncodingKey,
    jwk: Value,
}

impl Issuer {
    fn generate(kid: &str) -> Self {
        use rsa::pkcs8::{EncodePrivateKey, LineEnding};
        use rsa::traits::PublicKeyParts;
        let private = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap();
        let pem = private.to_pkcs8_pem(LineEnding::LF).unwrap();
        use base64::Engine as _;
        let b64 = |n: &rsa::BigUint| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(n.to_bytes_be())
        };
        let jwk = json!({
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
            "n": b64(private.n()), "e": b64(private.e()),
        });
        Self { encoding: EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(), jwk }
    }

    /// A Maskinporten-shaped token for `org`; `tweak` changes its claims.
    fn token(&self, kid: &str, org: &str, scopes: &str, tweak: impl FnOnce(&mut Value)) -> String {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
        let mut claims = json!({
            "iss": MASKINPORTEN,
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + 120,
            "scope": scopes,
            "consumer": { "authority": "iso6523-actorid-upis", "ID": format!("0192:{org}") },
            "client_id": "4b9d5c8e-client",
            "client_amr": "private_key_jwt",
            "token_type": "Bearer",
            "jti": blake3::hash(format!("{now}{org}{scopes}").as_bytes()).to_hex().to_string(),
        });
        tweak(&mut claims);
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, &claims, &self.encoding).unwrap()
    }
}

/// Serves `jwks` at `/jwk` on loopback until the test ends.
async fn serve_jwks(jwks: Value) -> String {
    serve_jwks_on(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(), jwks).await
}

async fn serve_jwks_on(listener: tokio::net::TcpListener, jwks: Value) -> String {
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/jwk", axum::routing::get(move || std::future::ready(axum::Json(jwks.clone()))));
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/jwk")
}

struct Setup {
    server: TestServer,
    http: reqwest::Client,
    maskinporten: Issuer,
    _clamd: TestClamd,
    _dir: tempfile::TempDir,
}

impl Setup {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.url())
    }

    /// The exchange call: (status, body).
    async fn exchange(&self, token: &str) -> (u16, String) {
        let r = self
            .http
            .get(self.url("/authentication/api/v1/exchange/maskinporten"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// An Altinn token for `org` with `scopes`, the way an Altinn client gets one.
    async fn altinn_token(&self, org: &str, scopes: &str) -> String {
        let (status, body) =
            self.exchange(&self.maskinporten.token("mp-1", org, scopes, |_| {})).await;
        assert_eq!(status, 200, "{body}");
        body
    }
}

async fn setup() -> Setup {
    let maskinporten = Issuer::generate("mp-1");
    let jwks_url = serve_jwks(json!({ "keys": [maskinporten.jwk.clone()] })).await;
    setup_with(maskinporten, jwks_url).await
}

async fn setup_with(maskinporten: Issuer, jwks_url: String) -> Setup {
    let clamd = TestClamd::start();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path(), &clamd.address(), 0, |c| {
        c.auth.issuers.push(server::auth::IssuerConfig {
            issuer: MASKINPORTEN.into(),
            pem_files: Vec::new(),
            jwks_file: None,
            jwks_url: Some(jwks_url),
            audience: Some(AUDIENCE.into()),
        });
        c.auth.exchange.issuers = vec![MASKINPORTEN.into()];
        c.auth.exchange.ttl_secs = 600;
    })
    .await;
    Setup { server, http: reqwest::Client::new(), maskinporten, _clamd: clamd, _dir: dir }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_altinn_client_exchanges_its_maskinporten_token_and_runs_a_whole_transfer() {
    let s = setup().await;
    // The service owner, the sender and the recipient each start with the exchange.
    let owner = s.altinn_token(OWNER, "altinn:serviceowner").await;
    let sender = s.altinn_token(SENDER, "altinn:broker.write altinn:broker.read").await;
    let recipient = s.altinn_token(RECIPIENT, "altinn:broker.read").await;
    let api = |path: &str| s.url(&format!("/broker/api/v1{path}"));

    let r = s.http.post(api("/serviceowner")).bearer_auth(&owner).json(&json!({"name": "Owner"}));
    assert_eq!(r.send().await.unwrap().status(), 200);
    let body = json!({ "access": { "senders": [SENDER], "recipients": [RECIPIENT] } });
    let r = s.http.put(api("/resource/res")).bearer_auth(&owner).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 204);

    // REST: initialize and upload with the exchanged token.
    let r = s
        .http
        .post(api("/filetransfer"))
        .bearer_auth(&sender)
        .json(&json!({
            "fileName": "a.bin", "resourceId": "res", "sendersFileTransferReference": "r",
            "sender": format!("0192:{SENDER}"), "recipients": [format!("0192:{RECIPIENT}")],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let id = r.json::<Value>().await.unwrap()["fileTransferId"].as_str().unwrap().to_owned();
    let data = payload(81, 200_000);
    let r = s
        .http
        .post(api(&format!("/filetransfer/{id}/upload")))
        .bearer_auth(&sender)
        .header("content-type", "application/octet-stream")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    // gRPC: the recipient waits, downloads and confirms with its exchanged token.
    let grpc = s.server.client(recipient.clone());
    assert_eq!(grpc.wait_settled(&id, "res").await.unwrap(), "no.altinn.broker.published");
    let (_, got) = grpc.download_range(&id, 0, None).await.unwrap();
    assert!(got == data);
    grpc.confirm(&id).await.unwrap();
    let overview: Value = s
        .http
        .get(api(&format!("/filetransfer/{id}")))
        .bearer_auth(&sender)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(overview["fileTransferStatus"], "AllConfirmedDownloaded", "{overview}");

    // Another service verifies Ferry's token from the published OpenID configuration.
    let config: Value = s
        .http
        .get(s.url("/authentication/api/v1/openid/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jwks_uri = config["jwks_uri"].as_str().unwrap();
    let jwks: jsonwebtoken::jwk::JwkSet =
        s.http.get(jwks_uri).send().await.unwrap().json().await.unwrap();
    let header = jsonwebtoken::decode_header(&sender).unwrap();
    assert_eq!(header.alg, Algorithm::ES256);
    let jwk = jwks.find(header.kid.as_deref().unwrap()).expect("the token's key is published");
    let mut validation = jsonwebtoken::Validation::new(Algorithm::ES256);
    validation.set_issuer(&[config["issuer"].as_str().unwrap()]);
    validation.validate_aud = false;
    let claims = jsonwebtoken::decode::<Value>(
        &sender,
        &jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap(),
        &validation,
    )
    .unwrap()
    .claims;
    assert_eq!(claims["consumer"]["ID"], format!("0192:{SENDER}"));
    assert_eq!(claims["scope"], "altinn:broker.read altinn:broker.write");
    assert_eq!(claims["client_id"], "4b9d5c8e-client");
    let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert!(
        lifetime > 0 && lifetime <= 600,
        "short-lived, never past the Maskinporten token: {lifetime}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_exchange_refuses_bad_tokens_and_says_why() {
    let s = setup().await;
    let mp = &s.maskinporten;
    let stranger = Issuer::generate("mp-1");
    let scopes = "altinn:broker.write";
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            mp.token("mp-1", SENDER, scopes, |c| {
                c["exp"] = json!(c["iat"].as_i64().unwrap() - 600);
            }),
            "expired",
        ),
        (
            "wrong issuer",
            mp.token("mp-1", SENDER, scopes, |c| c["iss"] = json!("https://maskinporten.evil/")),
            "is not trusted",
        ),
        (
            "wrong audience",
            mp.token("mp-1", SENDER, scopes, |c| c["aud"] = json!("https://someone-else/")),
            "audience",
        ),
        ("unknown key id", mp.token("mp-9", SENDER, scopes, |_| {}), "kid"),
        (
            "a key Maskinporten does not publish",
            stranger.token("mp-1", SENDER, scopes, |_| {}),
            "signature",
        ),
        (
            "no organisation",
            mp.token("mp-1", SENDER, scopes, |c| {
                c.as_object_mut().unwrap().remove("consumer");
            }),
            "organisation",
        ),
        ("no broker scope", mp.token("mp-1", SENDER, "openid", |_| {}), "scopes"),
        ("not a token", "garbage".to_owned(), "invalid token"),
    ];
    for (case, token, says) in cases {
        let r = s
            .http
            .get(s.url("/authentication/api/v1/exchange/maskinporten"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{case}");
        assert_eq!(r.headers()["content-type"], "application/problem+json", "{case}");
        let body: Value = r.json().await.unwrap();
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(says), "{case}: {body}");
    }
    // No token at all.
    let r = s.http.get(s.url("/authentication/api/v1/exchange/maskinporten")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    // Ferry's own token is not exchanged again.
    let altinn = s.altinn_token(SENDER, scopes).await;
    let (status, body) = s.exchange(&altinn).await;
    assert_eq!(status, 401);
    assert!(body.contains("cannot be exchanged"), "{body}");
    // A tampered exchanged token is refused by the broker like any other.
    let r = s
        .http
        .get(s.url("/broker/api/v1/filetransfer?resourceId=res"))
        .bearer_auth(format!("{altinn}x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_issuer_unreachable_at_start_up_is_fetched_again_soon() {
    // The JWKS URL answers nothing when the server starts (a free port, nobody listening)...
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let maskinporten = Issuer::generate("mp-1");
    let jwk = maskinporten.jwk.clone();
    let s = setup_with(maskinporten, format!("http://127.0.0.1:{port}/jwk")).await;
    let token = s.maskinporten.token("mp-1", SENDER, "altinn:broker.write", |_| {});
    assert_eq!(s.exchange(&token).await.0, 401, "no keys yet");
    // ...then comes up: within the backoff (5 s, not the hourly refresh), tokens work.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    serve_jwks_on(listener, json!({ "keys": [{ "kty": "oct", "k": "c2VjcmV0" }, jwk] })).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (status, body) = s.exchange(&token).await;
        if status == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "still refused: {body}");
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}
