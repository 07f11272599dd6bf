//! Production sign-in: OpenID Connect's authorization code flow with PKCE (RFC 7636, S256).
//!
//! `/console/oidc/login` sends the browser to the provider with a fresh `state`, `nonce` and
//! code challenge; the three are kept in a short-lived `HttpOnly` cookie scoped to
//! `/console/oidc` (nothing on the server). `/console/oidc/callback` checks `state`, redeems
//! the code with the verifier over the server's HTTP client, and verifies the ID token with
//! the [`crate::auth::Authenticator`] (the provider is one of `[[auth.issuers]]`: its JWKS,
//! issuer, audience = client id, expiry), so its claims map to an organisation and scopes
//! exactly as a bearer token's do; then the nonce. The session is the token
//! [`crate::tokens::TokenIssuer::exchange`] gives for it (the provider must be one of
//! `[auth.exchange] issuers`), like a development sign-in's.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect};
use base64::Engine as _;
use serde::Deserialize;

use super::pages::{self, query as form};
use super::{Console, Early, Page, cookie, html};
use crate::config::OidcConfig;

/// The cookie that carries `state`, `nonce` and the PKCE verifier through the redirect.
const FLOW_COOKIE: &str = "ferry_oidc";
/// How long a person may take at the provider.
const FLOW_SECS: u32 = 600;

/// The provider's endpoints, from its discovery document.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct Discovery {
    authorization_endpoint: String,
    token_endpoint: String,
}

fn random() -> String {
    let mut bytes = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The S256 code challenge of `verifier`.
fn challenge(verifier: &str) -> String {
    use sha2::Digest as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier))
}

impl Console {
    fn redirect_uri(&self) -> String {
        format!("{}/console/oidc/callback", self.app.public_url.trim_end_matches('/'))
    }

    async fn discovery(&self, oidc: &OidcConfig) -> Result<Discovery, String> {
        let discovery = self
            .discovery
            .get_or_try_init(|| async {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    oidc.issuer.trim_end_matches('/')
                );
                let response = self.http.get(&url).send().await.map_err(|e| e.to_string())?;
                let response = response.error_for_status().map_err(|e| e.to_string())?;
                response.json::<Discovery>().await.map_err(|e| e.to_string())
            })
            .await?;
        Ok(discovery.clone())
    }

    pub(super) fn refused(&self, message: &str) -> Early {
        let markup = pages::signin(
            self.dev,
            self.app.token_issuer.is_some(),
            self.oidc_name(),
            Some(message),
        );
        html(StatusCode::BAD_REQUEST, markup).into()
    }

    /// The sign-in button's provider name, if OpenID Connect is configured.
    pub(super) fn oidc_name(&self) -> Option<&str> {
        self.oidc.as_ref().map(|o| o.name.as_deref().unwrap_or("OpenID Connect"))
    }
}

/// Sends the browser to the provider.
pub(super) async fn login(State(console): State<Console>) -> Page {
    let Some(oidc) = console.oidc.clone() else {
        return Err(console.refused("OpenID Connect is not configured on this server"));
    };
    let discovery = console
        .discovery(&oidc)
        .await
        .map_err(|e| console.refused(&format!("the provider's discovery document: {e}")))?;
    let (state, nonce, verifier) = (random(), random(), random());
    let scope = oidc.scopes.join(" ");
    let query = form(&[
        ("response_type", "code"),
        ("client_id", &oidc.client_id),
        ("redirect_uri", &console.redirect_uri()),
        ("scope", &scope),
        ("state", &state),
        ("nonce", &nonce),
        ("code_challenge", &challenge(&verifier)),
        ("code_challenge_method", "S256"),
    ]);
    let separator = if discovery.authorization_endpoint.contains('?') { '&' } else { '?' };
    let mut response =
        Redirect::to(&format!("{}{separator}{query}", discovery.authorization_endpoint))
            .into_response();
    let secure = if console.secure { "; Secure" } else { "" };
    let flow = format!(
        "{FLOW_COOKIE}={state}.{nonce}.{verifier}; Path=/console/oidc; HttpOnly; SameSite=Lax; Max-Age={FLOW_SECS}{secure}"
    );
    response.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&flow).expect("ASCII"));
    Ok(response)
}

#[derive(Debug, Deserialize)]
pub(super) struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TokenResponse {
    id_token: String,
}

/// The provider's answer: code → ID token → session.
pub(super) async fn callback(
    State(console): State<Console>,
    headers: HeaderMap,
    Query(callback): Query<Callback>,
) -> Page {
    let Some(oidc) = console.oidc.clone() else {
        return Err(console.refused("OpenID Connect is not configured on this server"));
    };
    if let Some(error) = callback.error {
        let detail = callback.error_description.unwrap_or_default();
        return Err(console.refused(&format!("the provider refused: {error} {detail}")));
    }
    let flow = cookie(&headers, FLOW_COOKIE).unwrap_or_default();
    let mut parts = flow.splitn(3, '.');
    let (Some(state), Some(nonce), Some(verifier)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(console.refused("the sign-in took too long or began elsewhere; try again"));
    };
    let offered = callback.state.unwrap_or_default();
    if !super::constant_time_eq(offered.as_bytes(), state.as_bytes()) {
        return Err(console.refused("the sign-in's state does not match; try again"));
    }
    let code = callback.code.ok_or_else(|| console.refused("the provider sent no code"))?;
    let discovery = console.discovery(&oidc).await.map_err(|e| console.refused(&e))?;
    let body = form(&[
        ("grant_type", "authorization_code"),
        ("code", &code),
        ("redirect_uri", &console.redirect_uri()),
        ("client_id", &oidc.client_id),
        ("code_verifier", verifier),
    ]);
    let mut request = console
        .http
        .post(&discovery.token_endpoint)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::ACCEPT, "application/json")
        .body(body);
    if let Some(secret) = &oidc.client_secret {
        request = request.basic_auth(&oidc.client_id, Some(secret));
    }
    let answer = request.send().await.map_err(|e| console.refused(&e.to_string()))?;
    if !answer.status().is_success() {
        let text = answer.text().await.unwrap_or_default();
        return Err(console.refused(&format!("the provider's token endpoint refused: {text}")));
    }
    let tokens: TokenResponse = answer.json().await.map_err(|e| console.refused(&e.to_string()))?;
    // Signature, issuer, audience and expiry as for any bearer token; then this flow's nonce.
    let verified = console
        .app
        .auth
        .verify(&tokens.id_token)
        .map_err(|e| console.refused(&format!("the ID token: {e}")))?;
    if verified.issuer.trim_end_matches('/') != oidc.issuer.trim_end_matches('/') {
        return Err(console.refused("the ID token comes from another issuer"));
    }
    if verified.claims.get("nonce").and_then(|n| n.as_str()) != Some(nonce) {
        return Err(console.refused("the ID token's nonce does not match this sign-in"));
    }
    let mut response =
        super::start_session(&console, &verified).map_err(|e| console.refused(&e))?;
    let clear = format!("{FLOW_COOKIE}=; Path=/console/oidc; HttpOnly; SameSite=Lax; Max-Age=0");
    response
        .headers_mut()
        .append(header::SET_COOKIE, HeaderValue::from_str(&clear).expect("ASCII"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_code_challenge_is_rfc_7636s_example() {
        // RFC 7636, appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert_eq!(challenge(verifier), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
    }

    #[test]
    fn forms_encode_everything_outside_the_unreserved_set() {
        assert_eq!(form(&[("a b", "c&d=é"), ("x", "-._~")]), "a%20b=c%26d%3D%C3%A9&x=-._~");
    }
}
