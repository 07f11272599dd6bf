//! Altinn's token exchange, so that Altinn clients need no change at all: they fetch a
//! Maskinporten token, call `GET /authentication/api/v1/exchange/maskinporten` with it, and send
//! the token they get back to the broker.
//!
//! The incoming token is checked like any other (signature by its issuer's keys, `iss`, `exp`,
//! `aud` where configured) and must come from an issuer listed in `[auth.exchange] issuers`,
//! name an organisation and grant at least one of Ferry's scopes. The answer is, as in Altinn,
//! the new token as the body: Ferry's own ES256 token with the same organisation and scopes and
//! a short lifetime, which Ferry verifies with its current and earlier signing keys. Its
//! OpenID configuration and JWKS are published at Altinn's paths, so other services can verify
//! Ferry's tokens too.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::App;
use crate::auth::AuthError;
use crate::error::ApiError;

/// Altinn's exchange path.
pub const EXCHANGE_PATH: &str = "/authentication/api/v1/exchange/maskinporten";
/// Altinn's OpenID configuration path.
pub const OPENID_PATH: &str = "/authentication/api/v1/openid/.well-known/openid-configuration";

/// The exchange and the OpenID documents.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route(EXCHANGE_PATH, get(exchange))
        .route(OPENID_PATH, get(openid_configuration))
        .route(&format!("{OPENID_PATH}/jwks"), get(jwks))
        .with_state(app)
}

fn refused(reason: impl Into<String>) -> Response {
    ApiError::unauthenticated(reason).into_response()
}

async fn exchange(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let Some(issuer) = app.token_issuer.as_ref() else {
        return crate::api::http::problem_details(
            StatusCode::NOT_FOUND,
            "the token exchange is not configured on this server ([auth.exchange] issuers)",
        );
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        return ApiError::from(AuthError::Missing).into_response();
    };
    let verified = match app.auth.verify(token) {
        Ok(verified) => verified,
        Err(AuthError::Invalid(reason)) => return refused(format!("invalid token: {reason}")),
        Err(e) => return ApiError::from(e).into_response(),
    };
    match issuer.exchange(&verified) {
        Ok(token) => {
            let mut response = token.into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(reason) => refused(reason),
    }
}

async fn openid_configuration(State(app): State<Arc<App>>) -> Response {
    let Some(issuer) = app.token_issuer.as_ref() else {
        return crate::api::http::problem_details(
            StatusCode::NOT_FOUND,
            "the token exchange is off",
        );
    };
    let base = app.public_url.trim_end_matches('/');
    axum::Json(json!({
        "issuer": issuer.issuer,
        "jwks_uri": format!("{base}{OPENID_PATH}/jwks"),
        "id_token_signing_alg_values_supported": ["ES256"],
        "token_endpoint_auth_signing_alg_values_supported": ["ES256"],
        "response_types_supported": ["token"],
        "subject_types_supported": ["public"],
        "claims_supported": ["iss", "exp", "scope", "consumer", "urn:altinn:orgNumber"],
    }))
    .into_response()
}

async fn jwks(State(app): State<Arc<App>>) -> Response {
    match app.token_issuer.as_ref() {
        Some(issuer) => axum::Json(issuer.jwks()).into_response(),
        None => {
            crate::api::http::problem_details(StatusCode::NOT_FOUND, "the token exchange is off")
        }
    }
}
