//! What the HTTP front-ends share: ProblemDetails answers, ASP.NET-style JSON bodies and query
//! parameters (as Altinn clients send them), and the idle-timeout answer of an upload body.

use std::collections::{BTreeMap, HashMap};

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};
use storage::model::FileTransferId;

use crate::app::App;
use crate::error::ApiError;

/// Where the Altinn-compatible API lives.
pub const BASE: &str = "/broker/api/v1";

type Result<T, E = ApiError> = std::result::Result<T, E>;

/// A W3C `traceparent`-shaped id for a ProblemDetails answer.
pub(crate) fn trace_id() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("00-{}-{}-01", &id[..32], &id[..16])
}

/// The RFC section a ProblemDetails `type` names for `status`.
pub(crate) fn rfc9110(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "https://tools.ietf.org/html/rfc9110#section-15.5.1",
        401 => "https://tools.ietf.org/html/rfc9110#section-15.5.2",
        403 => "https://tools.ietf.org/html/rfc9110#section-15.5.4",
        404 => "https://tools.ietf.org/html/rfc9110#section-15.5.5",
        405 => "https://tools.ietf.org/html/rfc9110#section-15.5.6",
        408 => "https://tools.ietf.org/html/rfc9110#section-15.5.9",
        409 => "https://tools.ietf.org/html/rfc9110#section-15.5.10",
        410 => "https://tools.ietf.org/html/rfc9110#section-15.5.11",
        412 => "https://tools.ietf.org/html/rfc9110#section-15.5.13",
        413 => "https://tools.ietf.org/html/rfc9110#section-15.5.14",
        415 => "https://tools.ietf.org/html/rfc9110#section-15.5.16",
        416 => "https://tools.ietf.org/html/rfc9110#section-15.5.17",
        503 => "https://tools.ietf.org/html/rfc9110#section-15.6.4",
        507 => "https://tools.ietf.org/html/rfc4918#section-11.5",
        _ => "https://tools.ietf.org/html/rfc9110#section-15.6.1",
    }
}

/// A plain RFC 7807 ProblemDetails answer (no Altinn code), for the HTTP front-ends that are not
/// Altinn's JSON API (TUS, unknown paths).
pub(crate) fn problem_details(status: StatusCode, detail: &str) -> Response {
    let body = json!({
        "type": rfc9110(status),
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
        "traceId": trace_id(),
    });
    problem(status, body)
}

pub(crate) fn problem(status: StatusCode, body: Value) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    response
}

/// A JSON request body read as ASP.NET's web defaults read it, which Altinn clients rely on:
/// property names match case-insensitively (Postman sends `MaxFileTransferSize`), and numbers
/// may be sent as JSON strings (`"maxFileTransferSize": "1112391230"`). A value of the wrong
/// type is refused with ASP.NET's message. Every JSON body of the REST and events APIs goes
/// through it.
pub(crate) struct CiObject(HashMap<String, Value>);

/// ASP.NET's message for a JSON value of the wrong type.
pub(crate) fn not_convertible(name: &'static str, dotnet_type: &str) -> ApiError {
    ApiError::invalid_field(
        name,
        format!("The JSON value could not be converted to {dotnet_type}. Path: $.{name}."),
    )
}

impl CiObject {
    pub(crate) fn parse(body: &Bytes) -> Result<Self> {
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            ApiError::invalid_field("body", format!("The request body is not valid JSON: {e}"))
        })?;
        Self::from_value(value)
    }

    fn from_value(value: Value) -> Result<Self> {
        let Value::Object(map) = value else {
            return Err(ApiError::invalid_field("body", "The request body must be a JSON object"));
        };
        Ok(Self(map.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect()))
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(&name.to_ascii_lowercase()).filter(|v| !v.is_null())
    }

    /// A nested object, read the same way.
    pub(crate) fn object(&self, name: &'static str) -> Result<Option<Self>> {
        match self.get(name) {
            None => Ok(None),
            Some(v @ Value::Object(_)) => Self::from_value(v.clone()).map(Some),
            Some(_) => {
                Err(ApiError::invalid_field(name, format!("The {name} field must be an object.")))
            }
        }
    }

    pub(crate) fn string(&self, name: &'static str) -> Result<Option<String>> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(not_convertible(name, "System.String")),
        }
    }

    pub(crate) fn required_string(&self, name: &'static str) -> Result<String> {
        self.string(name)?
            .ok_or_else(|| ApiError::invalid_field(name, format!("The {name} field is required.")))
    }

    pub(crate) fn bool(&self, name: &'static str) -> Result<Option<bool>> {
        match self.get(name) {
            // As in ASP.NET: `"true"` is not a boolean (only numbers may be strings).
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(not_convertible(name, "System.Boolean")),
        }
    }

    /// An integer: a JSON number, or a string holding one (ASP.NET's `AllowReadingFromString`).
    pub(crate) fn int(&self, name: &'static str) -> Result<Option<i64>> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => {
                n.as_i64().map(Some).ok_or_else(|| not_convertible(name, "System.Int64"))
            }
            Some(Value::String(s)) => {
                s.parse::<i64>().map(Some).map_err(|_| not_convertible(name, "System.Int64"))
            }
            Some(_) => Err(not_convertible(name, "System.Int64")),
        }
    }

    pub(crate) fn strings(&self, name: &'static str) -> Result<Option<Vec<String>>> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .map(Some)
                .ok_or_else(|| {
                    ApiError::invalid_field(
                        name,
                        format!("The {name} field must be a list of strings."),
                    )
                }),
            Some(_) => {
                Err(ApiError::invalid_field(name, format!("The {name} field must be a list.")))
            }
        }
    }

    pub(crate) fn string_map(&self, name: &'static str) -> Result<BTreeMap<String, String>> {
        match self.get(name) {
            None => Ok(BTreeMap::new()),
            Some(Value::Object(map)) => map
                .iter()
                .map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    ApiError::invalid_field(name, format!("The {name} values must be strings."))
                }),
            Some(_) => {
                Err(ApiError::invalid_field(name, format!("The {name} field must be an object.")))
            }
        }
    }
}

/// 408 for an upload body that brought nothing for the idle timeout, closing the connection
/// (the rest of the body is not read): what was received is kept and where to resume is said.
pub(crate) fn timed_out(app: &App, id: FileTransferId, committed: Option<u64>) -> Response {
    let secs = app.options.idle_timeout.as_secs();
    let detail = match committed {
        Some(offset) => format!(
            "the request body brought no data for {secs} s; the first {offset} bytes are kept: resume from offset {offset} with TUS (HEAD {BASE}/filetransfer/upload/tus/{id}) or gRPC"
        ),
        None => format!("the request body brought no data for {secs} s"),
    };
    let mut response = problem_details(StatusCode::REQUEST_TIMEOUT, &detail);
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A query parameter by name, case-insensitively (as ASP.NET binds them).
pub(crate) fn query_param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}
