//! The console's pages. maud escapes every `(value)` it interpolates, so a file name such as
//! `<script>` or `"onmouseover=` is text on the page, never markup. No inline script or style
//! (the Content-Security-Policy forbids them): behaviour is in `console.js`, keyed by ids.

use std::collections::BTreeMap;
use std::time::Duration;

use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;
use storage::model::{
    AccessRules, FileTransfer, FileTransferStatus, Party, ResourceConfig, ResourceUpdate,
};

use super::{ROLES, Session, downloadable, recipient_label};
use crate::app::operations::Failure;
use crate::app::webhooks::{DeliveryView, SubscriptionDeliveries};
use crate::app::{Readiness, recipient_views};
use crate::cli::size;
use crate::error::ApiError;

const NAV: [(&str, &str); 4] = [
    ("/console/send", "Send"),
    ("/console/inbox", "Inbox"),
    ("/console/resources", "Resources"),
    ("/console/operations", "Operations"),
];

fn layout(session: Option<&Session>, title: &str, current: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(s) = session { meta name="csrf-token" content=(s.csrf()); }
                title { (title) " · Ferry" }
                link rel="icon" href="data:,";
                link rel="stylesheet" href="/console/assets/console.css";
                script src="/console/assets/tus.min.js" defer {}
                script src="/console/assets/console.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/console" { "Ferry" }
                    @if let Some(s) = session {
                        nav aria-label="Main" {
                            @for (href, label) in NAV {
                                @if href == current {
                                    a href=(href) aria-current="page" { (label) }
                                } @else {
                                    a href=(href) { (label) }
                                }
                            }
                        }
                        form.whoami method="post" action="/console/signout" {
                            span #who { (s.org()) " · " (s.role()) }
                            input type="hidden" name="csrf" value=(s.csrf());
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main #main { h1 { (title) } (body) }
            }
        }
    }
}

/// An error page: what went wrong, in the API's words.
pub(super) fn error_page(session: Option<&Session>, title: &str, message: &str) -> Markup {
    layout(session, title, "", html! { p.error role="alert" { (message) } })
}

pub(super) fn signin(
    dev: bool,
    can_issue: bool,
    oidc: Option<&str>,
    error: Option<&str>,
) -> Markup {
    let body = html! {
        @if let Some(e) = error { p.error role="alert" { (e) } }
        @if let Some(name) = oidc.filter(|_| can_issue) {
            p { a.button #oidc href="/console/oidc/login" { "Sign in with " (name) } }
        }
        @if dev && can_issue {
            p { "Development mode: choose the organisation you act for and your role. "
                "The console signs you in with a token from the development issuer, exactly as "
                code { "ferry token" } " would." }
            form.card method="post" action="/console/signin" {
                label for="org" { "Organisation number" }
                input #org name="org" type="text" inputmode="numeric" required
                    placeholder="910753614" autocomplete="organization";
                fieldset {
                    legend { "Role" }
                    @for (i, (id, label, scopes)) in ROLES.iter().enumerate() {
                        label.choice {
                            input type="radio" name="role" value=(id) checked[i == 0];
                            (label) " " small { "(" (scopes.join(", ")) ")" }
                        }
                    }
                }
                button type="submit" { "Sign in" }
            }
        } @else if oidc.is_none() || !can_issue {
            p { "Sign-in is not configured on this server: set " code { "[console.oidc]" }
                " and " code { "[auth.exchange]" } " (see config.example.toml), or use the APIs "
                "with a bearer token." }
        }
    };
    layout(None, "Sign in", "", body)
}

pub(super) fn send(s: &Session, resources: &[String]) -> Markup {
    let body = html! {
        @if resources.is_empty() {
            p.note { "There is no resource you may send on. A service owner lists your "
                "organisation among a resource's senders." }
        } @else {
            form.card #send-form {
                label for="resource" { "Resource" }
                select #resource name="resource" required {
                    @for r in resources { option value=(r) { (r) } }
                }
                label for="recipients" { "Recipients" }
                input #recipients name="recipients" type="text" required
                    placeholder="986252932, 0192:991825827"
                    aria-describedby="recipients-help";
                small #recipients-help { "Organisation numbers, separated by commas or spaces." }
                label for="file" { "File" }
                input #file name="file" type="file" required;
                div.buttons {
                    button #send type="submit" { "Send" }
                    button #pause type="button" hidden { "Pause" }
                    button #resume type="button" hidden { "Resume" }
                }
            }
            section #upload aria-label="Upload" hidden {
                h2 #upload-name {}
                progress #progress max="100" value="0" aria-label="Upload progress" {}
                p #progress-text role="status" aria-live="polite" {}
                p { "Transfer " a #transfer-link href="#" {} }
                p.status { "Status: " strong #status { "Initialized" } " " span #status-text {} }
                ul #recipient-statuses {}
            }
            p.error #send-error role="alert" hidden {}
        }
        @if !s.caller.scopes.contains(crate::auth::SCOPE_WRITE) {
            p.note { "Your role does not send files; sign in as a sender." }
        }
    };
    layout(Some(s), "Send a file", "/console/send", body)
}

pub(super) fn inbox(
    s: &Session,
    resources: &[String],
    resource: Option<&str>,
    status: Option<FileTransferStatus>,
    rows: &[FileTransfer],
    next: Option<&str>,
) -> Markup {
    let body = html! {
        @if resources.is_empty() {
            p.note { "There is no resource you may receive on." }
        } @else {
            form.filters method="get" action="/console/inbox" {
                label for="f-resource" { "Resource" }
                select #f-resource name="resource" {
                    @for r in resources { option value=(r) selected[Some(r.as_str()) == resource] { (r) } }
                }
                label for="f-status" { "Status" }
                select #f-status name="status" {
                    option value="" { "Any" }
                    @for st in FileTransferStatus::ALL {
                        option value=(st.name()) selected[Some(st) == status] { (st.name()) }
                    }
                }
                button type="submit" { "Filter" }
            }
            @if rows.is_empty() {
                p.note #empty { "Nothing here." }
            } @else {
                (table("transfers", &["File", "Size", "Status", "From", "Created (UTC)"], rows.iter().map(|t| html! {
                    td { a href={ "/console/transfers/" (t.id) } { (t.file_name) } }
                    td { (size(t.content.map_or(0, |c| c.size))) }
                    td { (t.status().name()) }
                    td { (t.sender) }
                    td { (t.created.when()) }
                })))
            }
            @if let Some(token) = next {
                a.button #next-page href={ "/console/inbox?" (query(&[
                    ("resource", resource.unwrap_or_default()),
                    ("status", status.map_or("", |s| s.name())),
                    ("page", token),
                ])) } { "Next page" }
            }
        }
    };
    layout(Some(s), "Inbox", "/console/inbox", body)
}

pub(super) fn transfer(s: &Session, t: &FileTransfer) -> Markup {
    let me = s.caller.org.as_ref();
    let recipient = me.is_some_and(|o| t.recipients.contains(o));
    let mine = me.and_then(|o| t.recipient_status(o));
    // The transfer's and its recipients' histories as one timeline.
    let mut timeline: Vec<(storage::model::Timestamp, Markup)> =
        t.status_history
            .iter()
            .map(|e| (e.at, html! { strong { (e.status.name()) } " " (e.display_text()) }))
            .chain(t.recipient_history.iter().map(|e| {
                (e.at, html! { (e.recipient) " " strong { (recipient_label(e.status)) } })
            }))
            .collect();
    timeline.sort_by_key(|(at, _)| *at);
    let body = html! {
        dl.facts {
            dt { "File" } dd #file-name { (t.file_name) }
            dt { "Size" } dd { (size(t.content.map_or(0, |c| c.size))) }
            dt { "Status" } dd #status { (t.status().name()) }
            dt { "Status text" } dd #status-text { (t.status_text()) }
            dt { "Resource" } dd { (t.resource_id.as_str()) }
            dt { "Sender" } dd { (t.sender) }
            dt { "Created (UTC)" } dd { (t.created.when()) }
            dt { "Expires (UTC)" } dd { (t.expiration_time.when()) }
            @if let Some(c) = t.content { dt { "BLAKE3" } dd.hash { (c.blake3.to_hex()) } }
        }
        @if recipient && downloadable(t.status()) {
            div.buttons {
                a.button #download href={ "/console/transfers/" (t.id) "/download" } download { "Download" }
                @if mine != Some(storage::model::RecipientFileTransferStatus::DownloadConfirmed) {
                    form method="post" action={ "/console/transfers/" (t.id) "/confirm" } {
                        input type="hidden" name="csrf" value=(s.csrf());
                        button #confirm type="submit" { "Confirm download" }
                    }
                }
            }
        }
        @if let Some(st) = mine { p #my-status { "Your status: " strong { (recipient_label(st)) } } }
        h2 { "Recipients" }
        ul #recipients {
            @for r in recipient_views(t) {
                li { (r.party) ": " strong { (recipient_label(r.status)) } " (" (r.changed.when()) ")" }
            }
        }
        h2 { "History" }
        ol.timeline {
            @for (at, entry) in &timeline {
                li { time { (at.when()) } " " (entry) }
            }
        }
    };
    layout(Some(s), "Transfer", "/console/inbox", body)
}

pub(super) fn resources(
    s: &Session,
    owner: Option<&storage::model::ServiceOwner>,
    owned: &[ResourceConfig],
) -> Markup {
    let body = html! {
        @match owner {
            None => {
                p { "Your organisation is not registered as a service owner yet." }
                form.card method="post" action="/console/resources" {
                    input type="hidden" name="csrf" value=(s.csrf());
                    label for="owner-name" { "Name of the service owner" }
                    input #owner-name name="name" type="text" required;
                    button type="submit" { "Register" }
                }
            }
            Some(o) => {
                p { "Service owner " strong { (o.name) } " (" (o.id) ")." }
                a.button #new-resource href="/console/resources/edit" { "New resource" }
                @if owned.is_empty() {
                    p.note { "No resources yet." }
                } @else {
                    (table("resources", &["Resource", "Max size", "Time to live", "Senders", "Recipients"], owned.iter().map(|r| html! {
                        td { a href={ "/console/resources/edit?id=" (r.id) } { (r.id) } }
                        td { (r.max_file_transfer_size.map_or("global limit".to_owned(), size)) }
                        td { (iso_duration(r.file_transfer_time_to_live.unwrap_or(ResourceConfig::DEFAULT_TIME_TO_LIVE))) }
                        td { (parties(&r.access.senders)) }
                        td { (parties(&r.access.recipients)) }
                    })))
                }
                p.note { "A resource's page also lists your organisation's webhook subscriptions on it." }
            }
        }
    };
    layout(Some(s), "Resources", "/console/resources", body)
}

/// The resource form, as typed (re-shown with the API's message beside the field at fault).
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct ResourceForm {
    pub(crate) csrf: Option<String>,
    #[serde(default)]
    pub(crate) id: String,
    #[serde(default)]
    max_size: String,
    #[serde(default)]
    ttl: String,
    purge: Option<String>,
    #[serde(default)]
    grace: String,
    #[serde(default)]
    required_party: String,
    #[serde(default)]
    senders: String,
    #[serde(default)]
    recipients: String,
    /// Set when the form edits an existing resource.
    existing: Option<String>,
}

impl ResourceForm {
    pub(crate) fn from_resource(r: &ResourceConfig) -> Self {
        Self {
            csrf: None,
            id: r.id.to_string(),
            max_size: r.max_file_transfer_size.map(|n| n.to_string()).unwrap_or_default(),
            ttl: r.file_transfer_time_to_live.map(iso_duration).unwrap_or_default(),
            purge: r.purge_file_transfer_after_all_recipients_confirmed.then(|| "on".into()),
            grace: r.purge_file_transfer_grace_period.map(iso_duration).unwrap_or_default(),
            required_party: r.required_party.as_ref().map(Party::to_string).unwrap_or_default(),
            senders: parties(&r.access.senders),
            recipients: parties(&r.access.recipients),
            existing: Some("yes".into()),
        }
    }

    /// The update the API's `PUT /resource/{id}` would make of these values; the model
    /// validates them (the console only turns text into the API's types).
    pub(crate) fn update(&self) -> Result<ResourceUpdate, ApiError> {
        let list = |text: &str, field: &'static str| -> Result<Vec<Party>, ApiError> {
            text.split([',', ' ', '\n'])
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| {
                    Party::parse_lenient(p)
                        .map_err(|e| ApiError::invalid_field(field, e.to_string()))
                })
                .collect()
        };
        let text = |t: &str| Some(t.trim().to_owned()).filter(|t| !t.is_empty());
        let max = match text(&self.max_size) {
            None => None,
            Some(n) => Some(n.parse::<i64>().map_err(|_| {
                ApiError::invalid_field(
                    "maxFileTransferSize",
                    "Max file transfer size must be a whole number of bytes",
                )
            })?),
        };
        let required_party = text(&self.required_party)
            .map(|p| {
                Party::parse_lenient(&p)
                    .map_err(|e| ApiError::invalid_field("requiredParty", e.to_string()))
            })
            .transpose()?;
        Ok(ResourceUpdate {
            max_file_transfer_size: max,
            file_transfer_time_to_live: text(&self.ttl),
            purge_file_transfer_after_all_recipients_confirmed: Some(self.purge.is_some()),
            purge_file_transfer_grace_period: text(&self.grace),
            required_party,
            access: Some(AccessRules {
                senders: list(&self.senders, "senders")?,
                recipients: list(&self.recipients, "recipients")?,
            }),
            ..ResourceUpdate::default()
        })
    }
}

/// Which form field an API error belongs beside: by the field it names, else by Altinn's
/// error number (the resource rules, errors 11–18 and 22).
fn field_of(e: &ApiError) -> &'static str {
    match (e.field, e.code) {
        (Some("maxFileTransferSize"), _) | (_, Some(11 | 12 | 13 | 22)) => "max_size",
        (Some("fileTransferTimeToLive"), _) | (_, Some(14 | 15)) => "ttl",
        (Some("purgeFileTransferGracePeriod"), _) | (_, Some(17 | 18)) => "grace",
        (Some("requiredParty"), _) => "required_party",
        (Some("senders"), _) => "senders",
        (Some("recipients" | "access"), _) => "recipients",
        _ => "form",
    }
}

/// A resource's webhook subscriptions, as the subscription API lists them to the session.
#[derive(Debug)]
pub(super) struct Subscriptions {
    /// The subscriptions (the API's JSON), or why none can be listed.
    pub(super) list: Result<Vec<serde_json::Value>, String>,
    /// After a replay: how many dead letters went out again.
    pub(super) replayed: Option<u64>,
    /// Each subscription's pending deliveries and dead letters, or why they cannot be listed.
    pub(super) deliveries: BTreeMap<u64, Result<SubscriptionDeliveries, String>>,
}

/// A subscription's pending deliveries and dead letters: two tables, newest first.
fn deliveries(id: u64, end_point: &str, listed: &Result<SubscriptionDeliveries, String>) -> Markup {
    let event = |d: &DeliveryView| -> (String, String) {
        match &d.event {
            Some(e) => (e.kind.type_string().to_owned(), e.transfer.to_string()),
            None => (format!("event {}", d.seq), String::new()),
        }
    };
    let code = |d: &DeliveryView| d.response_code.map_or("none".to_owned(), |c| c.to_string());
    html! {
        section.deliveries id={ "deliveries-" (id) } aria-label={ "Deliveries to " (end_point) } {
            h3 { "Deliveries to " (end_point) }
            @match listed {
                Err(message) => p.note { (message) },
                Ok(list) => {
                    p {
                        strong.pending-count { (list.n_pending) } " pending, "
                        strong.dead-count { (list.n_dead_letters) } " dead letter(s)"
                        @if list.n_pending > list.pending.len() || list.n_dead_letters > list.dead_letters.len() {
                            " (the newest shown; all of them: " code { "GET /events/api/v1/subscriptions/" (id) "/deliveries" } ")"
                        }
                        ". Delivered events are not kept."
                    }
                    @if !list.pending.is_empty() {
                        (table(&format!("pending-{id}"), &["Event", "Transfer", "State", "Attempts", "Last error", "Response", "Next attempt (UTC)"], list.pending.iter().map(|d| {
                            let (kind, transfer) = event(d);
                            html! {
                                td { (kind) } td { (transfer) } td { (d.state.name()) } td.num { (d.attempts) }
                                td { (d.last_error.as_deref().unwrap_or("")) } td { (code(d)) }
                                td { (d.next_attempt.map(|t| t.when()).unwrap_or_default()) }
                            }
                        })))
                    }
                    @if !list.dead_letters.is_empty() {
                        h4 { "Dead letters" }
                        (table(&format!("dead-{id}"), &["Event", "Transfer", "Attempts", "Last error", "Response"], list.dead_letters.iter().map(|d| {
                            let (kind, transfer) = event(d);
                            html! {
                                td { (kind) } td { (transfer) } td.num { (d.attempts) }
                                td { (d.last_error.as_deref().unwrap_or("")) } td { (code(d)) }
                            }
                        })))
                    }
                }
            }
        }
    }
}

fn subscriptions(s: &Session, resource: &str, subs: &Subscriptions) -> Markup {
    let text = |v: &serde_json::Value| v.as_str().map(str::to_owned).unwrap_or_default();
    html! {
        section #subscriptions aria-label="Webhook subscriptions" {
            h2 { "Webhook subscriptions" }
            @if let Some(n) = subs.replayed { p #replayed role="status" { (n) " dead letter(s) sent again." } }
            @match &subs.list {
                Err(message) => p.note { (message) },
                Ok(list) if list.is_empty() => p.note { "Your organisation has no webhook subscriptions on this resource "
                    "(create them with " code { "POST /events/api/v1/subscriptions" } ")." },
                Ok(list) => (table("subscription-list", &["Endpoint", "Events", "State", ""], list.iter().map(|sub| html! {
                    td { (text(&sub["endPoint"])) }
                    td { (sub["typeFilter"].as_str().unwrap_or("all")) }
                    td {
                        @if let Some(reason) = sub["disabled"].as_str() { "Disabled: " (reason) }
                        @else if sub["validated"] == true { "Delivering" }
                        @else { "Waiting for the endpoint's validation" }
                    }
                    td {
                        form method="post" action={ "/console/subscriptions/" (sub["id"]) "/replay" } {
                            input type="hidden" name="csrf" value=(s.csrf());
                            input type="hidden" name="resource" value=(resource);
                            button type="submit" { "Replay dead letters" }
                        }
                    }
                }))),
            }
            @for sub in subs.list.iter().flatten() {
                @if let Some(listed) = sub["id"].as_u64().and_then(|id| subs.deliveries.get(&id).map(|l| (id, l))) {
                    (deliveries(listed.0, &text(&sub["endPoint"]), listed.1))
                }
            }
        }
    }
}

pub(super) fn resource_form(
    s: &Session,
    f: &ResourceForm,
    error: Option<&ApiError>,
    subs: Option<&Subscriptions>,
) -> Markup {
    let at = error.map(field_of);
    let message = |field: &str| -> Markup {
        html! {
            @if at == Some(field) {
                @if let Some(e) = error {
                    span.field-error id={ (field) "-error" } role="alert" { (e.message) }
                }
            }
        }
    };
    // A labelled text input with the API's message beneath it when it is the one at fault.
    let field = |name: &str, label: &str, value: &str, placeholder: &str| -> Markup {
        html! {
            label for=(name) { (label) }
            input id=(name) name=(name) type="text" value=(value) placeholder=(placeholder)
                aria-invalid=(at == Some(name)) aria-describedby={ (name) "-error" };
            (message(name))
        }
    };
    let editing = f.existing.is_some();
    let body = html! {
        (message("form"))
        form.card #resource-form method="post" action="/console/resources/edit" {
            input type="hidden" name="csrf" value=(s.csrf());
            @if editing { input type="hidden" name="existing" value="yes"; }
            label for="id" { "Resource id" }
            input #id name="id" type="text" required value=(f.id) readonly[editing]
                pattern="[A-Za-z0-9_.\\-]+";
            (field("max_size", "Largest file (bytes; empty: the server's limit)", &f.max_size, ""))
            (field("ttl", "Time to live (ISO 8601, e.g. P30D)", &f.ttl, "P30D"))
            label.choice {
                input #purge name="purge" type="checkbox" checked[f.purge.is_some()];
                "Purge once every recipient has confirmed"
            }
            (field("grace", "Grace period before that purge (ISO 8601, e.g. PT2H)", &f.grace, "PT2H"))
            (field("required_party", "Required party (optional)", &f.required_party, ""))
            (field("senders", "Who may send (organisation numbers)", &f.senders, ""))
            (field("recipients", "Who may receive (organisation numbers)", &f.recipients, ""))
            button #save type="submit" { "Save" }
        }
        @if let Some(subs) = subs { (subscriptions(s, &f.id, subs)) }
    };
    let title = if editing { "Edit resource" } else { "New resource" };
    layout(Some(s), title, "/console/resources", body)
}

pub(super) fn operations(
    s: &Session,
    counts: &BTreeMap<&str, u64>,
    r: &Readiness,
    failures: &Result<Vec<Failure>, String>,
) -> Markup {
    let processing = counts.get(FileTransferStatus::UploadProcessing.name()).copied().unwrap_or(0);
    let failed = counts.get(FileTransferStatus::Failed.name()).copied().unwrap_or(0);
    let body = html! {
        section.cards {
            div.card {
                h2 { "Readiness" }
                p #ready { strong { (if r.is_ready() { "Ready" } else { "Not ready" }) } }
                dl.facts {
                    dt { "Storage" } dd #storage { (match &r.storage { Ok(()) => "ok", Err(e) => e.as_str() }) }
                    dt { "clamd" } dd #clamd { (match &r.scanner { Ok(v) => v.clone(), Err(e) => format!("unavailable: {e}") }) }
                    @if let Some(space) = r.space {
                        dt { "Free space" } dd { (size(space.free)) " (reserve " (size(space.min_free)) ")" }
                    }
                }
            }
            div.card {
                h2 { "Scan queue" }
                p #scan-queue { strong { (processing) } " transfer(s) waiting for or in their scan" }
                p { strong { (failed) } " failed transfer(s) in all" }
            }
        }
        h2 { "Transfers by status" }
        table #counts {
            thead { tr { th { "Status" } th.num { "Transfers" } } }
            tbody {
                @for st in FileTransferStatus::ALL {
                    tr { td { (st.name()) } td.num { (counts.get(st.name()).copied().unwrap_or(0)) } }
                }
            }
        }
        h2 { "Recent failures" }
        @match failures {
            Err(message) => p.note #failures-note { (message) },
            Ok(list) if list.is_empty() => p.note #failures-note { "No recent failures on transfers you sent or on your resources." },
            Ok(list) => {
                p.note { "Transfers you sent, and transfers on resources your organisation owns, that ended Failed; newest first." }
                (table("failures", &["Failed (UTC)", "Resource", "Transfer", "Sender", "Reason"], list.iter().map(|f| html! {
                    td { (f.at.when()) }
                    td { (f.resource.as_str()) }
                    td {
                        @if let Some(name) = &f.file_name {
                            a href={ "/console/transfers/" (f.transfer) } { (name) } br; small { (f.transfer) }
                        } @else { (f.transfer) }
                    }
                    td { (f.sender) }
                    td.reason { (f.reason) }
                })))
            }
        }
        p { "Prometheus metrics: " a href="/metrics" { "/metrics" } "; readiness as JSON: "
            a href="/health/ready" { "/health/ready" } "." }
    };
    layout(Some(s), "Operations", "/console/operations", body)
}

/// A time as people read it: to the second, in UTC (the pages say so).
trait When {
    fn when(&self) -> String;
}

impl When for storage::model::Timestamp {
    fn when(&self) -> String {
        let text = self.to_rfc3339();
        let seconds = text.split(['.', '+', 'Z']).next().unwrap_or(&text);
        seconds.replacen('T', " ", 1)
    }
}

/// `application/x-www-form-urlencoded`, also a URL's query.
pub(super) fn query(pairs: &[(&str, &str)]) -> String {
    let encode = |text: &str| -> String {
        text.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    pairs.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect::<Vec<_>>().join("&")
}

/// A table: its id, column heads, and each row's cells.
fn table(id: &str, heads: &[&str], rows: impl Iterator<Item = Markup>) -> Markup {
    html! {
        div.scroll {
            table id=(id) {
                thead { tr { @for head in heads { th { (head) } } } }
                tbody { @for row in rows { tr { (row) } } }
            }
        }
    }
}

fn parties(list: &[Party]) -> String {
    list.iter().map(Party::to_string).collect::<Vec<_>>().join(", ")
}

/// A duration in ISO 8601, as the API reads it: whole days as `P{n}D`, else `PT{n}S`.
fn iso_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs > 0 && secs.is_multiple_of(86_400) {
        format!("P{}D", secs / 86_400)
    } else if secs > 0 && secs.is_multiple_of(3600) {
        format!("PT{}H", secs / 3600)
    } else {
        format!("PT{secs}S")
    }
}
