//! Events as a party reads them, whatever the channel (pull feed, gRPC Watch, webhooks): who
//! may read, which events match a reader's filter, cursors, and the CloudEvent form.

use serde_json::{Value, json};
use storage::EventRecord;

use super::App;
use crate::auth::{SCOPE_EVENTS_SUBSCRIBE, SCOPE_READ, SCOPE_WRITE};
use crate::error::ApiError;

/// An event as CloudEvents 1.0 JSON with Altinn's attribute names, plus `sequence`.
pub fn cloud_event(app: &App, e: &EventRecord) -> Value {
    json!({
        "specversion": "1.0",
        "id": e.id.to_string(),
        "type": e.kind.type_string(),
        "time": e.at.to_rfc3339(),
        "resource": e.resource.to_urn(),
        "resourceinstance": e.transfer.to_string(),
        "subject": e.party.to_urn(),
        "source": format!("{}/broker/api/v1/filetransfer", app.public_url.trim_end_matches('/')),
        "data": { "Role": e.role.name() },
        "sequence": format!("{:020}", e.seq),
    })
}

/// Who reads events (feed, Watch, subscriptions): an authenticated caller acting for its
/// organisation, with Altinn Events' scope `altinn:events.subscribe` or a broker scope
/// (`altinn:broker.read`, `altinn:broker.write`): whoever may send or receive transfers may see
/// their events. `altinn:serviceowner` alone is not enough (it configures resources).
pub(crate) fn event_reader(
    app: &App,
    authorization: Option<&str>,
) -> Result<storage::model::Party, ApiError> {
    subscriber(&app.auth.authenticate(authorization)?)
}

/// The organisation an authenticated caller reads events for, by [`event_reader`]'s rule.
pub(crate) fn subscriber(caller: &crate::auth::Caller) -> Result<storage::model::Party, ApiError> {
    let scopes = [SCOPE_EVENTS_SUBSCRIBE, SCOPE_READ, SCOPE_WRITE];
    if !caller.has_any_scope(&scopes) {
        return Err(ApiError::missing_scope(&scopes));
    }
    caller.org.clone().ok_or_else(|| ApiError::altinn(7001))
}

/// Which events a reader sees: its own organisation's, optionally narrowed.
#[derive(Debug, Clone)]
pub(crate) struct EventFilter {
    pub(crate) org: storage::model::Party,
    pub(crate) resource: Option<storage::model::ResourceId>,
    pub(crate) types: Vec<String>,
}

impl EventFilter {
    pub(crate) fn matches(&self, e: &EventRecord) -> bool {
        e.party == self.org
            && self.resource.as_ref().is_none_or(|r| &e.resource == r)
            && (self.types.is_empty()
                || self.types.iter().any(|t| t.eq_ignore_ascii_case(e.kind.type_string())))
    }
}

/// A cursor (`0`, an event id or `seq:<n>`) as a log position. Unknown: an error.
pub(crate) fn parse_cursor(app: &App, cursor: &str) -> Result<u64, ApiError> {
    match cursor {
        "" | "0" => Ok(0),
        cursor => match cursor.strip_prefix("seq:") {
            Some(n) => n.parse().map_err(|_| cursor_error()),
            None => {
                let id: uuid::Uuid = cursor.parse().map_err(|_| cursor_error())?;
                app.storage.event_seq(&id)?.ok_or_else(cursor_error)
            }
        },
    }
}

fn cursor_error() -> ApiError {
    ApiError {
        kind: crate::error::Kind::InvalidArgument,
        code: None,
        message: "after: cursor not found or expired; start from after=0 or a cursor from the next header"
            .into(),
        http_status: 400,
        field: Some("after"),
    }
}
