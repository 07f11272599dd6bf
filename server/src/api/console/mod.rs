//! The web console: Ferry for people, in the browser, on the server's own port (`/`).
//!
//! A front-end like the REST and gRPC APIs: every page and action authenticates a
//! [`Caller`] with the same [`crate::auth::Authenticator`] and calls the same `App` use cases,
//! so the rules (who may send, receive, see or configure what) are the APIs' own; the console
//! holds none. HTML is rendered on the server ([`pages`], maud escapes every interpolated
//! string); the little JavaScript there is (`server/console/console.js`, tus-js-client) runs
//! the upload and follows a transfer's status, embedded in the binary.
//!
//! - **Session**: signing in sets an `HttpOnly; SameSite=Lax` cookie (`Secure` when the public
//!   URL is https) holding a token Ferry's own [`crate::tokens::TokenIssuer`] signed: nothing
//!   is kept on the server, so replicas behind a load balancer need nothing shared. In
//!   development mode a person picks an organisation and a role and gets the token the
//!   development issuer would have been exchanged for.
//! - **CSRF**: every state-changing request must come from this origin (`Sec-Fetch-Site`,
//!   else `Origin`) and carry the session's CSRF token (a hash of the session token, which
//!   another site cannot read); the APIs stay bearer-only, so a cookie never authorises them.
//! - **Uploads and status** go to the APIs themselves (TUS, the overview, the event feed) with
//!   the session's bearer token, which the page fetches from a CSRF-protected endpoint and
//!   keeps in memory only. Downloads are a cookie-authenticated GET that runs the REST download
//!   (Range included).
//! - **Headers**: a strict Content-Security-Policy (no inline script or style), no framing,
//!   `nosniff`, no caching of pages.

mod oidc;
mod pages;

pub use crate::config::{ConsoleConfig, OidcConfig};

use std::sync::Arc;

use axum::Router;
use axum::extract::{Form, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use storage::model::{FileTransferId, FileTransferStatus, Party, RecipientFileTransferStatus};

use crate::app::{App, InitializeRequest, SearchQuery};
use crate::auth::{Caller, SCOPE_EVENTS_SUBSCRIBE, SCOPE_READ, SCOPE_SERVICE_OWNER, SCOPE_WRITE};
use crate::error::ApiError;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "ferry_session";
/// The header the page's `fetch` calls carry the CSRF token in.
const CSRF_HEADER: &str = "x-csrf-token";

/// Longest wait for the OpenID provider's answer.
const OIDC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// What the console's routes share.
#[derive(Debug, Clone)]
struct Console {
    app: Arc<App>,
    /// Development mode: sign-in picks an organisation and a role.
    dev: bool,
    /// The cookie gets `Secure` (the public URL is https).
    secure: bool,
    /// OpenID Connect sign-in, when configured.
    oidc: Option<OidcConfig>,
    /// The provider's endpoints, fetched once.
    discovery: Arc<tokio::sync::OnceCell<oidc::Discovery>>,
    /// The client the OpenID Connect calls go out with (no redirects).
    http: reqwest::Client,
}

/// The roles a person signs in as, with the scopes the token gets (Altinn's).
pub const ROLES: [(&str, &str, &[&str]); 3] = [
    ("sender", "Sender", &[SCOPE_WRITE, SCOPE_READ]),
    ("recipient", "Recipient", &[SCOPE_READ]),
    // Service owners also read their own events (webhook subscriptions on their resources).
    ("owner", "Service owner", &[SCOPE_SERVICE_OWNER, SCOPE_EVENTS_SUBSCRIBE]),
];

/// The console's routes: `/`, `/console/…`.
pub fn router(app: Arc<App>, config: &crate::Config) -> Router {
    let secure = config.public_url.as_deref().is_some_and(|u| u.starts_with("https://"));
    let console = Console {
        app,
        dev: config.dev,
        secure,
        oidc: config.console.oidc.clone(),
        discovery: Arc::default(),
        http: crate::app::webhooks::http_client(OIDC_TIMEOUT),
    };
    Router::new()
        .route("/", get(home))
        .route("/console", get(home))
        .route("/console/signin", get(signin_page).post(signin))
        .route("/console/signout", post(signout))
        .route("/console/oidc/login", get(oidc::login))
        .route("/console/oidc/callback", get(oidc::callback))
        .route("/console/send", get(send_page))
        .route("/console/inbox", get(inbox))
        .route("/console/transfers/{id}", get(transfer_page))
        .route("/console/transfers/{id}/download", get(download))
        .route("/console/transfers/{id}/confirm", post(confirm))
        .route("/console/resources", get(resources).post(register_owner))
        .route("/console/resources/edit", get(resource_form).post(save_resource))
        .route("/console/subscriptions/{id}/replay", post(replay))
        .route("/console/operations", get(operations))
        .route("/console/api/initialize", post(initialize))
        .route("/console/api/token", post(token))
        .route("/console/assets/{name}", get(asset))
        .layer(middleware::from_fn(same_origin_writes))
        .layer(middleware::from_fn(security_headers))
        .with_state(console)
}

// --- sessions ---

/// A signed-in person: the token in the cookie and who it names.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    token: String,
    caller: Caller,
}

impl Session {
    fn from_headers(app: &App, headers: &HeaderMap) -> Option<Self> {
        let token = cookie(headers, SESSION_COOKIE)?;
        let caller = app.auth.authenticate(Some(&format!("Bearer {token}"))).ok()?;
        Some(Self { token, caller })
    }

    /// The session's CSRF token: derived from the session token, which only this origin's
    /// pages see (the cookie is HttpOnly; the pages carry this hash, never the token).
    pub(crate) fn csrf(&self) -> String {
        let hash = blake3::Hasher::new_derive_key("ferry web console csrf token v1")
            .update(self.token.as_bytes())
            .finalize();
        hash.to_hex()[..32].to_owned()
    }

    fn check_csrf(&self, offered: Option<&str>) -> Result<(), Early> {
        match offered {
            Some(token) if constant_time_eq(token.as_bytes(), self.csrf().as_bytes()) => Ok(()),
            _ => {
                Err(forbidden("the form is stale or came from another site; reload the page")
                    .into())
            }
        }
    }

    /// `headers` with this session's token as the bearer: for the API handlers the console
    /// runs as they are (download, webhook subscriptions).
    fn as_bearer(&self, headers: HeaderMap) -> HeaderMap {
        let mut headers = headers;
        let bearer = HeaderValue::from_str(&format!("Bearer {}", self.token)).expect("ASCII token");
        headers.insert(header::AUTHORIZATION, bearer);
        headers
    }

    fn org(&self) -> String {
        self.caller.org.as_ref().map(Party::to_string).unwrap_or_default()
    }

    /// The role names this session's scopes add up to, for the header.
    fn role(&self) -> &'static str {
        ROLES
            .iter()
            .find(|(_, _, scopes)| {
                scopes.len() == self.caller.scopes.len()
                    && scopes.iter().all(|s| self.caller.scopes.contains(*s))
            })
            .map_or("signed in", |(_, label, _)| label)
    }

    fn can(&self, scope: &str) -> bool {
        self.caller.scopes.contains(scope)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A cookie's value from the request's `Cookie` headers.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
        .filter(|v| !v.is_empty())
}

fn set_cookie(console: &Console, value: &str, max_age: i64) -> HeaderValue {
    let secure = if console.secure { "; Secure" } else { "" };
    let text = format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
    );
    HeaderValue::from_str(&text).expect("a token is ASCII")
}

/// The session, or the sign-in page.
fn session(console: &Console, headers: &HeaderMap) -> Result<Session, Early> {
    Session::from_headers(&console.app, headers)
        .ok_or_else(|| Redirect::to("/console/signin").into_response().into())
}

// --- middleware ---

/// Refuses state-changing requests from other sites: by `Sec-Fetch-Site` where the browser
/// sends it, else by `Origin` against `Host`. Reading (GET, HEAD) is never refused here.
async fn same_origin_writes(request: Request, next: Next) -> Response {
    if matches!(*request.method(), Method::GET | Method::HEAD) {
        return next.run(request).await;
    }
    let authority = request.uri().authority().map(|a| a.as_str().to_owned());
    if !from_this_origin(request.headers(), authority.as_deref()) {
        return forbidden("cross-site requests are refused; use the console's own pages");
    }
    next.run(request).await
}

/// Whether a request comes from a page of this origin: `Sec-Fetch-Site: same-origin` where the
/// browser sends it, else an `Origin` naming this host (`Host`, or HTTP/2's authority).
fn from_this_origin(headers: &HeaderMap, authority: Option<&str>) -> bool {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    match (text("sec-fetch-site"), text("origin")) {
        (Some(site), _) => site == "same-origin",
        (None, Some(origin)) => {
            let host = text("host").or(authority);
            host.is_some()
                && origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"))
                    == host
        }
        // Neither: not a browser's cross-site request (browsers send Origin on every POST).
        (None, None) => true,
    }
}

/// The console's response headers.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; base-uri 'none'; object-src 'none'; \
             frame-ancestors 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

// --- responses ---

/// A response that ends a handler early (a redirect to sign in, a refusal, an error page);
/// boxed, as a `Response` is large.
#[derive(Debug)]
struct Early(Box<Response>);

impl From<Response> for Early {
    fn from(response: Response) -> Self {
        Self(Box::new(response))
    }
}

impl IntoResponse for Early {
    fn into_response(self) -> Response {
        *self.0
    }
}

/// What a page handler answers.
type Page = Result<Response, Early>;

fn html(status: StatusCode, markup: maud::Markup) -> Response {
    (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], markup.into_string())
        .into_response()
}

fn forbidden(message: &str) -> Response {
    html(StatusCode::FORBIDDEN, pages::error_page(None, "Refused", message))
}

/// A use case's answer, its error as a page.
fn page<T>(session: &Session, result: Result<T, ApiError>) -> Result<T, Early> {
    result.map_err(|e| error_response(session, &e))
}

/// An API error as a page, with the API's status and message.
fn error_response(session: &Session, e: &ApiError) -> Early {
    let status = StatusCode::from_u16(e.http_status).unwrap_or(StatusCode::BAD_REQUEST);
    let title = match e.kind {
        crate::error::Kind::NotFound => "Not found",
        crate::error::Kind::PermissionDenied | crate::error::Kind::Unauthenticated => "Not allowed",
        _ => "Could not do that",
    };
    html(status, pages::error_page(Some(session), title, &e.message)).into()
}

fn json_error(e: &ApiError) -> Early {
    let status = StatusCode::from_u16(e.http_status).unwrap_or(StatusCode::BAD_REQUEST);
    (status, axum::Json(serde_json::json!({ "message": e.message, "field": e.field })))
        .into_response()
        .into()
}

// --- sign-in ---

async fn home(State(console): State<Console>, headers: HeaderMap) -> Response {
    match Session::from_headers(&console.app, &headers) {
        Some(s) if s.can(SCOPE_WRITE) => Redirect::to("/console/send").into_response(),
        Some(s) if s.can(SCOPE_SERVICE_OWNER) => Redirect::to("/console/resources").into_response(),
        Some(_) => Redirect::to("/console/inbox").into_response(),
        None => Redirect::to("/console/signin").into_response(),
    }
}

async fn signin_page(State(console): State<Console>) -> Response {
    let can_issue = console.app.token_issuer.is_some();
    html(StatusCode::OK, pages::signin(console.dev, can_issue, console.oidc_name(), None))
}

#[derive(Debug, Deserialize)]
struct SignIn {
    org: String,
    role: String,
}

/// Development sign-in: the session is the token the development issuer's token for this
/// organisation and role is exchanged for (the exchange's own checks apply).
async fn signin(State(console): State<Console>, Form(form): Form<SignIn>) -> Page {
    if !console.dev {
        return Err(
            forbidden("development sign-in is off: the server runs in production mode").into()
        );
    }
    let org = Party::parse_lenient(form.org.trim())
        .map_err(|e| console.refused(&format!("Organisation: {e}")))?;
    let Some((_, _, scopes)) = ROLES.iter().find(|(id, _, _)| *id == form.role) else {
        return Err(console.refused("Role: choose sender, recipient or service owner"));
    };
    let incoming = crate::auth::VerifiedToken {
        caller: Caller { org: Some(org), scopes: scopes.iter().map(|s| (*s).to_owned()).collect() },
        issuer: crate::auth::DEV_ISSUER.to_owned(),
        exp: jsonwebtoken::get_current_timestamp() as i64 + 8 * 3600,
        claims: serde_json::json!({}),
    };
    start_session(&console, &incoming).map_err(|reason| console.refused(&reason))
}

/// Signs in with Ferry's exchanged token for `incoming`: the session cookie, lasting as long
/// as the token, and off to the person's first page.
fn start_session(
    console: &Console,
    incoming: &crate::auth::VerifiedToken,
) -> Result<Response, String> {
    let issuer =
        console.app.token_issuer.as_ref().ok_or(
            "sign-in needs the token exchange: set [auth.exchange] (development mode has it)",
        )?;
    let token = issuer.exchange(incoming)?;
    let exp = console.app.auth.verify(&token).map_err(|e| e.to_string())?.exp;
    let max_age = exp - jsonwebtoken::get_current_timestamp() as i64;
    let mut response = Redirect::to("/console").into_response();
    response.headers_mut().insert(header::SET_COOKIE, set_cookie(console, &token, max_age));
    Ok(response)
}

#[derive(Debug, Deserialize)]
struct CsrfOnly {
    csrf: Option<String>,
}

async fn signout(
    State(console): State<Console>,
    headers: HeaderMap,
    Form(form): Form<CsrfOnly>,
) -> Page {
    if let Some(s) = Session::from_headers(&console.app, &headers) {
        s.check_csrf(form.csrf.as_deref())?;
    }
    let mut response = Redirect::to("/console/signin").into_response();
    response.headers_mut().insert(header::SET_COOKIE, set_cookie(&console, "", 0));
    Ok(response)
}

/// The ids of the resources the session's organisation may use as `may` says.
fn resources_where(
    console: &Console,
    s: &Session,
    may: fn(&storage::model::ResourceConfig, &Party) -> bool,
) -> Result<Vec<String>, Early> {
    let all = page(s, console.app.visible_resources(&s.caller))?;
    let Some(org) = &s.caller.org else { return Ok(Vec::new()) };
    Ok(all.into_iter().filter(|r| may(r, org)).map(|r| r.id.to_string()).collect())
}

// --- send ---

async fn send_page(State(console): State<Console>, headers: HeaderMap) -> Page {
    let s = session(&console, &headers)?;
    let resources = if s.can(SCOPE_WRITE) {
        resources_where(&console, &s, storage::model::ResourceConfig::may_send)?
    } else {
        Vec::new()
    };
    Ok(html(StatusCode::OK, pages::send(&s, &resources)))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct InitializeBody {
    resource_id: String,
    recipients: Vec<String>,
    file_name: String,
}

/// The session of a `fetch` from the page: signed in, with the page's CSRF token.
fn fetch_session(console: &Console, headers: &HeaderMap) -> Result<Session, Early> {
    let s = Session::from_headers(&console.app, headers)
        .ok_or_else(|| json_error(&ApiError::unauthenticated("sign in again")))?;
    s.check_csrf(headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()))?;
    Ok(s)
}

/// Initializes a transfer for the Send page (the upload itself then goes over TUS).
async fn initialize(
    State(console): State<Console>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<InitializeBody>,
) -> Page {
    let s = fetch_session(&console, &headers)?;
    let request = InitializeRequest {
        file_name: body.file_name,
        resource_id: body.resource_id,
        senders_file_transfer_reference: "web console".into(),
        sender: s.org(),
        recipients: body.recipients,
        ..InitializeRequest::default()
    };
    let id = console.app.initialize(&s.caller, request).await.map_err(|e| json_error(&e))?;
    Ok(axum::Json(serde_json::json!({ "fileTransferId": id.to_string() })).into_response())
}

/// The session's bearer token, for the page's TUS upload and status calls (same origin, CSRF
/// token required: another site can neither call this nor read the answer).
async fn token(State(console): State<Console>, headers: HeaderMap) -> Page {
    let s = fetch_session(&console, &headers)?;
    Ok(axum::Json(serde_json::json!({ "token": s.token })).into_response())
}

// --- inbox and transfers ---

#[derive(Debug, Deserialize, Default)]
struct InboxQuery {
    resource: Option<String>,
    status: Option<String>,
    page: Option<String>,
}

async fn inbox(
    State(console): State<Console>,
    headers: HeaderMap,
    Query(q): Query<InboxQuery>,
) -> Page {
    let s = session(&console, &headers)?;
    let resources = resources_where(&console, &s, storage::model::ResourceConfig::may_receive)?;
    let resource =
        q.resource.clone().filter(|r| !r.is_empty()).or_else(|| resources.first().cloned());
    let status = q
        .status
        .as_deref()
        .and_then(|name| FileTransferStatus::ALL.into_iter().find(|s| s.name() == name));
    let mut rows = Vec::new();
    let mut next = None;
    if let Some(resource) = &resource {
        let query = SearchQuery {
            resource_id: resource.clone(),
            status,
            as_recipient: Some(true),
            page_token: q.page.clone(),
            page_size: Some(25),
            ..SearchQuery::default()
        };
        let (ids, token) = page(&s, console.app.search(&s.caller, query))?;
        next = token;
        for id in ids {
            rows.push(page(&s, console.app.transfer(&s.caller, id))?);
        }
    }
    let markup = pages::inbox(&s, &resources, resource.as_deref(), status, &rows, next.as_deref());
    Ok(html(StatusCode::OK, markup))
}

fn parse_id(s: &Session, id: &str) -> Result<FileTransferId, Early> {
    id.parse().map_err(|_| error_response(s, &ApiError::altinn(3)))
}

async fn transfer_page(
    State(console): State<Console>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Page {
    let s = session(&console, &headers)?;
    let t = page(&s, console.app.transfer(&s.caller, parse_id(&s, &id)?))?;
    Ok(html(StatusCode::OK, pages::transfer(&s, &t)))
}

/// The REST download (Range, Content-Disposition, the download use case) with the session's
/// token as its bearer; an error the download would answer as JSON is a page here.
async fn download(
    State(console): State<Console>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Page {
    let s = session(&console, &headers)?;
    // A download records DownloadStarted: another site may not make a browser start one (a
    // link from elsewhere carries the Lax cookie on a top-level navigation).
    let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if matches!(site, Some("cross-site" | "same-site")) {
        return Err(forbidden("open the download from the console's own transfer page").into());
    }
    page(&s, console.app.transfer(&s.caller, parse_id(&s, &id)?))?;
    let headers = s.as_bearer(headers);
    page(&s, super::rest::download(State(console.app.clone()), Path(id), headers).await)
}

async fn confirm(
    State(console): State<Console>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<CsrfOnly>,
) -> Page {
    let s = session(&console, &headers)?;
    s.check_csrf(form.csrf.as_deref())?;
    let id = parse_id(&s, &id)?;
    page(&s, console.app.confirm_download(&s.caller, id).await)?;
    Ok(Redirect::to(&format!("/console/transfers/{id}")).into_response())
}

// --- resources ---

#[derive(Debug, Deserialize)]
struct RegisterOwner {
    csrf: Option<String>,
    name: String,
}

async fn resources(State(console): State<Console>, headers: HeaderMap) -> Page {
    let s = session(&console, &headers)?;
    if !s.can(SCOPE_SERVICE_OWNER) {
        return Err(error_response(&s, &ApiError::missing_scope(&[SCOPE_SERVICE_OWNER])));
    }
    let owner = console.app.service_owner(&s.caller).ok();
    let owned: Vec<_> = page(&s, console.app.visible_resources(&s.caller))?
        .into_iter()
        .filter(|r| Some(&r.service_owner) == s.caller.org.as_ref())
        .collect();
    Ok(html(StatusCode::OK, pages::resources(&s, owner.as_ref(), &owned)))
}

async fn register_owner(
    State(console): State<Console>,
    headers: HeaderMap,
    Form(form): Form<RegisterOwner>,
) -> Page {
    let s = session(&console, &headers)?;
    s.check_csrf(form.csrf.as_deref())?;
    page(&s, console.app.register_service_owner(&s.caller, form.name).await)?;
    Ok(Redirect::to("/console/resources").into_response())
}

#[derive(Debug, Deserialize, Default)]
struct ResourceQuery {
    id: Option<String>,
    /// After a replay: how many dead letters went out again.
    replayed: Option<u64>,
}

async fn resource_form(
    State(console): State<Console>,
    headers: HeaderMap,
    Query(q): Query<ResourceQuery>,
) -> Page {
    let s = session(&console, &headers)?;
    let Some(id) = q.id.as_deref().filter(|id| !id.is_empty()) else {
        let form = pages::ResourceForm::default();
        return Ok(html(StatusCode::OK, pages::resource_form(&s, &form, None, None)));
    };
    let resource = page(&s, console.app.resource(&s.caller, id))?;
    let form = pages::ResourceForm::from_resource(&resource);
    // The organisation's webhook subscriptions on this resource, as the subscription API lists
    // them to this session's token (its message instead, if it lists none to it).
    let listed = super::webhooks::list(State(console.app.clone()), s.as_bearer(headers)).await;
    let subscriptions: Result<Vec<serde_json::Value>, String> = match listed {
        Ok(response) => {
            let body = axum::body::to_bytes(response.into_body(), 1 << 22).await;
            let all: serde_json::Value =
                body.ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
            let urn = resource.id.to_urn();
            let mine = all["subscriptions"].as_array().cloned().unwrap_or_default();
            Ok(mine.into_iter().filter(|sub| sub["resourceFilter"] == urn.as_str()).collect())
        }
        Err(e) => Err(e.message),
    };
    // Each one's pending deliveries and dead letters, by the subscription API's own use case.
    let mut deliveries = std::collections::BTreeMap::new();
    for id in subscriptions.iter().flatten().filter_map(|sub| sub["id"].as_u64()) {
        let listed = console.app.subscription_deliveries(&s.caller, id, LISTED_DELIVERIES);
        deliveries.insert(id, listed.map_err(|e| e.message));
    }
    let view = pages::Subscriptions { list: subscriptions, replayed: q.replayed, deliveries };
    Ok(html(StatusCode::OK, pages::resource_form(&s, &form, None, Some(&view))))
}

/// How many pending deliveries and dead letters a resource's page shows per subscription.
const LISTED_DELIVERIES: usize = 20;

#[derive(Debug, Deserialize)]
struct Replay {
    csrf: Option<String>,
    resource: String,
}

/// Re-sends a subscription's dead letters (the subscription API's replay).
async fn replay(
    State(console): State<Console>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<Replay>,
) -> Page {
    let s = session(&console, &headers)?;
    s.check_csrf(form.csrf.as_deref())?;
    let answer =
        super::webhooks::replay(State(console.app.clone()), Path(id), s.as_bearer(headers));
    let response = page(&s, answer.await)?;
    let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap_or_default();
    let replayed = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["replayed"].as_u64())
        .unwrap_or(0);
    let back = format!(
        "/console/resources/edit?{}",
        pages::query(&[("id", &form.resource), ("replayed", &replayed.to_string()),])
    );
    Ok(Redirect::to(&back).into_response())
}

async fn save_resource(
    State(console): State<Console>,
    headers: HeaderMap,
    Form(form): Form<pages::ResourceForm>,
) -> Page {
    let s = session(&console, &headers)?;
    s.check_csrf(form.csrf.as_deref())?;
    let result = match form.update() {
        Ok(update) => console.app.put_resource(&s.caller, form.id.trim(), update).await.map(|_| ()),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => Ok(Redirect::to("/console/resources").into_response()),
        // The API's validation message, beside the field it concerns.
        Err(e) if e.http_status == 400 => {
            Ok(html(StatusCode::BAD_REQUEST, pages::resource_form(&s, &form, Some(&e), None)))
        }
        Err(e) => Err(error_response(&s, &e)),
    }
}

// --- operations ---

/// How many recent failures the Operations page lists.
const RECENT_FAILURES: usize = 20;

async fn operations(State(console): State<Console>, headers: HeaderMap) -> Page {
    let s = session(&console, &headers)?;
    // The same figures `/metrics` and `/health/ready` publish to anyone who can reach them.
    let counts = page(&s, console.app.transfers_by_status())?;
    let readiness = console.app.readiness().await;
    // The failures this person may see (their own, those on their resources), or why none.
    let failures =
        console.app.recent_failures(&s.caller, RECENT_FAILURES).map_err(|e| match e.kind {
            crate::error::Kind::PermissionDenied => "Recent failures are shown to senders (the \
            transfers they sent) and to service owners (the transfers on their resources); \
            your role is neither."
                .to_owned(),
            _ => e.message,
        });
    Ok(html(StatusCode::OK, pages::operations(&s, &counts, &readiness, &failures)))
}

// --- assets ---

/// The console's files, embedded at compile time.
const ASSETS: [(&str, &str, &str); 3] = [
    ("console.css", "text/css; charset=utf-8", include_str!("../../../console/console.css")),
    ("console.js", "text/javascript; charset=utf-8", include_str!("../../../console/console.js")),
    (
        "tus.min.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../console/vendor/tus.min.js"),
    ),
];

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(file, _, _)| *file == name) {
        Some((_, content_type, body)) => (
            [(header::CONTENT_TYPE, *content_type), (header::CACHE_CONTROL, "public, max-age=300")],
            *body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}

/// Whether `status` is where a recipient may still download.
pub(crate) fn downloadable(status: FileTransferStatus) -> bool {
    status.is_downloadable()
}

/// A recipient's status as people read it.
pub(crate) fn recipient_label(status: RecipientFileTransferStatus) -> &'static str {
    match status {
        RecipientFileTransferStatus::Initialized => "Not downloaded",
        RecipientFileTransferStatus::DownloadStarted => "Downloading",
        RecipientFileTransferStatus::DownloadConfirmed => "Confirmed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (header::HeaderName::from_static(k), HeaderValue::from_static(v)))
            .collect()
    }

    #[test]
    fn only_this_origins_pages_may_write() {
        let this = |pairs| from_this_origin(&headers(pairs), None);
        assert!(this(&[("sec-fetch-site", "same-origin"), ("origin", "http://other")]));
        // Another port of the same host is same-site, not same-origin: refused.
        assert!(!this(&[("sec-fetch-site", "same-site")]));
        assert!(!this(&[("sec-fetch-site", "cross-site")]));
        assert!(!this(&[("sec-fetch-site", "none")]));
        // Without Sec-Fetch-Site, Origin must name the host.
        assert!(this(&[("origin", "http://127.0.0.1:8080"), ("host", "127.0.0.1:8080")]));
        assert!(!this(&[("origin", "http://127.0.0.1:9999"), ("host", "127.0.0.1:8080")]));
        assert!(!this(&[("origin", "null"), ("host", "127.0.0.1:8080")]));
        assert!(!this(&[("origin", "http://evil.example")]));
        assert!(from_this_origin(
            &headers(&[("origin", "https://ferry.example")]),
            Some("ferry.example")
        ));
    }

    #[test]
    fn the_csrf_token_belongs_to_its_session_and_reveals_nothing_of_it() {
        let caller = Caller { org: None, scopes: Default::default() };
        let a = Session { token: "token-a".into(), caller: caller.clone() };
        let b = Session { token: "token-b".into(), caller };
        assert_eq!(a.csrf(), a.csrf());
        assert_ne!(a.csrf(), b.csrf());
        assert!(!a.csrf().contains("token"));
        assert!(a.check_csrf(Some(&a.csrf())).is_ok());
        assert!(a.check_csrf(Some(&b.csrf())).is_err());
        assert!(a.check_csrf(None).is_err());
    }

    #[test]
    fn the_session_cookie_is_read_among_others() {
        let h = headers(&[("cookie", "a=1; ferry_session=abc.def; b=2")]);
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("abc.def"));
        assert_eq!(cookie(&headers(&[("cookie", "ferry_session=")]), SESSION_COOKIE), None);
    }
}
