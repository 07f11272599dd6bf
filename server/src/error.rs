//! `ApiError`: every failure a client can see, classified once (a [`Kind`], an HTTP status,
//! Altinn's error number `BRO-000NN` and message where Altinn has one), independent of
//! transport: `crate::api::grpc` turns it into a gRPC status, `crate::api::rest` into
//! ProblemDetails.

/// How a failure is classified, independent of transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// No or bad credentials (gRPC `UNAUTHENTICATED`, HTTP 401).
    Unauthenticated,
    /// Authenticated but not allowed (gRPC `PERMISSION_DENIED`; HTTP 401 for Altinn's error 6,
    /// 403 otherwise).
    PermissionDenied,
    /// No such thing, or not one the caller may know of.
    NotFound,
    /// The request is malformed or breaks a rule (HTTP 400).
    InvalidArgument,
    /// The thing is not in a state that allows this (HTTP 400/403/409 per Altinn).
    FailedPrecondition,
    /// Already exists (HTTP 409).
    AlreadyExists,
    /// A range outside the file (HTTP 416).
    OutOfRange,
    /// Try again later (HTTP 503).
    Unavailable,
    /// Out of a resource: storage space (HTTP 507), a message size limit.
    ResourceExhausted,
    /// Our fault (HTTP 500).
    Internal,
}

/// A failure to report to a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// Classification.
    pub kind: Kind,
    /// Altinn's error number, if one applies.
    pub code: Option<u16>,
    /// What to tell the client.
    pub message: String,
    /// The HTTP status Altinn uses for this error.
    pub http_status: u16,
    /// For validation errors: the request field at fault (Altinn's `errors` key).
    pub field: Option<&'static str>,
}

impl ApiError {
    /// An Altinn error by number, with Altinn's message and status.
    pub fn altinn(code: u16) -> Self {
        let (kind, http_status, message) = altinn_error(code);
        Self { kind, code: Some(code), message: message.to_owned(), http_status, field: None }
    }

    /// An Altinn error with a more specific message.
    pub fn altinn_with(code: u16, message: impl Into<String>) -> Self {
        Self { message: message.into(), ..Self::altinn(code) }
    }

    /// A validation failure of one request field.
    pub fn invalid_field(field: &'static str, message: impl Into<String>) -> Self {
        Self { field: Some(field), ..Self::invalid(message) }
    }

    /// A validation failure without an Altinn number.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self {
            kind: Kind::InvalidArgument,
            code: None,
            message: message.into(),
            http_status: 400,
            field: None,
        }
    }

    /// No or bad token.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self {
            kind: Kind::Unauthenticated,
            code: None,
            message: message.into(),
            http_status: 401,
            field: None,
        }
    }

    /// A valid token without the scope the operation needs.
    pub fn missing_scope(scopes: &[&str]) -> Self {
        Self {
            kind: Kind::PermissionDenied,
            code: None,
            message: format!("the token lacks the scope {}", scopes.join(" or ")),
            http_status: 403,
            field: None,
        }
    }

    /// Try again later.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            kind: Kind::Unavailable,
            code: None,
            message: message.into(),
            http_status: 503,
            field: None,
        }
    }

    /// The server has no room for the bytes: HTTP 507, gRPC `RESOURCE_EXHAUSTED`. No path or
    /// internal detail is told.
    pub fn storage_full() -> Self {
        Self {
            kind: Kind::ResourceExhausted,
            code: None,
            message: "the server is out of storage space; nothing of this request was kept, try again later".into(),
            http_status: 507,
            field: None,
        }
    }

    /// Our fault: logged in full, reported without internals.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "internal error");
        Self {
            kind: Kind::Internal,
            code: None,
            message: "internal error; see the server log".into(),
            http_status: 500,
            field: None,
        }
    }

    /// `BRO-000NN`.
    pub fn code_string(&self) -> Option<String> {
        self.code.map(|c| format!("BRO-{c:05}"))
    }
}

/// Altinn's catalogue (contract §2.5): classification, HTTP status and message. Every number
/// the code uses must be here (a test checks), or it would surface as a 500.
fn altinn_error(code: u16) -> (Kind, u16, &'static str) {
    use Kind::*;
    match code {
        1 => (NotFound, 404, "The requested file transfer was not found"),
        2 => {
            (FailedPrecondition, 400, "Service owner needs to be configured to use the broker API")
        }
        3 => (FailedPrecondition, 400, "No file uploaded yet"),
        4 => (
            FailedPrecondition,
            409,
            "A file transfer has already been, or attempted to be, created. Create a new file transfer resource to try again.",
        ),
        5 => (
            PermissionDenied,
            403,
            "The resource needs to be registered as an Altinn 3 resource and it has to be associated with a service owner",
        ),
        6 => (
            PermissionDenied,
            401,
            "You must use a bearer token that represents a system user with access to the resource in the Resource Rights Registry",
        ),
        7 => (
            FailedPrecondition,
            403,
            "The requested file transfer's file is not ready for download. See file transfer status.",
        ),
        8 => (
            Internal,
            500,
            "Error occurred while uploading file See /details for more information.",
        ),
        9 => (
            InvalidArgument,
            400,
            "The checksum of uploaded file did not match the checksum specified in initialize call.",
        ),
        10 => (
            FailedPrecondition,
            400,
            "A file transfer can only be confirmed to be downloaded when it is published. See file transfer status.",
        ),
        11 => (InvalidArgument, 400, "Max file transfer size cannot be negative"),
        12 => (InvalidArgument, 400, "Max file transfer size cannot be zero"),
        13 => (
            InvalidArgument,
            400,
            "Max file transfer size cannot be set higher than 50GB in production unless the resource has been pre-approved for disabled virus scan. Contact us @ Slack.",
        ),
        14 => (
            InvalidArgument,
            400,
            "Invalid file transfer time to live format. Should follow ISO8601 standard for duration. Example: 'P30D' for 30 days.",
        ),
        15 => (InvalidArgument, 400, "Time to live cannot exceed 365 days"),
        16 => (InvalidArgument, 400, "File size exceeds maximum"),
        17 => (
            InvalidArgument,
            400,
            "Invalid grace period format. Should follow ISO8601 standard for duration. Example: 'PT2H' for 2 hours.",
        ),
        18 => (InvalidArgument, 400, "Grace period cannot exceed 24 hours"),
        22 => (
            InvalidArgument,
            400,
            "Max file transfer size cannot be set higher than 100GB in production because it has not yet been tested for it. Contact us @ Slack if you need it.",
        ),
        23 => (
            InvalidArgument,
            400,
            "In order to use manifest file shim you need to provide external service code and edition code",
        ),
        19 => (FailedPrecondition, 400, "Cannot confirm before the files have been downloaded"),
        20 => (
            InvalidArgument,
            400,
            "In order to use file transfers without virus scan the service resource needs to be approved by Altinn. Please contact us @ Slack.",
        ),
        21 => (Unavailable, 503, "Storage provider is not ready yet. Please try again later."),
        24 => (
            FailedPrecondition,
            400,
            "The service owner associated with the resource has not been configured.",
        ),
        25 => (FailedPrecondition, 400, "The resource has not been configured."),
        26 => (
            InvalidArgument,
            400,
            "The resource requires the service owner party to be present as part of the transaction.",
        ),
        27 => (
            InvalidArgument,
            400,
            "When required party is specified and the required party is not the sender, the number of recipients can only be one.",
        ),
        28 => {
            (InvalidArgument, 400, "All recipients need to be in the access list of the resource.")
        }
        29 => (OutOfRange, 416, "The requested byte range is not satisfiable."),
        6001 => (NotFound, 404, "No file transfers found for report generation"),
        6003 => (
            InvalidArgument,
            400,
            "Invalid year or month. Provide a valid year and a month between 1 and 12.",
        ),
        6005 => {
            (InvalidArgument, 400, "At least one of includeEndUser or includeVendor must be true.")
        }
        7001 => (InvalidArgument, 400, "Caller organization id could not be determined"),
        7002 => (AlreadyExists, 409, "Service owner already exists"),
        7004 => (NotFound, 404, "Service owner not found"),
        _ => (Internal, 500, "Error"),
    }
}

impl From<crate::auth::AuthError> for ApiError {
    /// 401, saying what to send: every front-end reports a refused token the same way.
    fn from(e: crate::auth::AuthError) -> Self {
        match e {
            crate::auth::AuthError::Missing => Self::unauthenticated(
                "a bearer token is required: send `Authorization: Bearer <token>`",
            ),
            crate::auth::AuthError::Invalid(reason) => {
                Self::unauthenticated(format!("invalid token: {reason}"))
            }
        }
    }
}

impl From<storage::Error> for ApiError {
    fn from(e: storage::Error) -> Self {
        use storage::Error as E;
        match e {
            E::Transfer(t) => match t.altinn_code() {
                Some(code) => Self::altinn(code),
                None => match t {
                    storage::model::TransferError::NotARecipient(_) => Self::altinn(1),
                    other => Self {
                        kind: Kind::FailedPrecondition,
                        code: None,
                        message: other.to_string(),
                        http_status: 409,
                        field: None,
                    },
                },
            },
            E::Resource(r) => Self::altinn_with(r.code(), r.to_string()),
            E::Id(id) => Self::invalid(id.to_string()),
            E::StorageFull { context } => {
                tracing::warn!(context, "out of storage space");
                Self::storage_full()
            }
            E::Unavailable(reason) => {
                tracing::warn!(%reason, "the metadata database is unavailable");
                Self::unavailable("the metadata database is unavailable; try again in a moment")
            }
            E::Recovering => Self::unavailable(
                "the server is recovering from a storage failure; try again in a moment",
            ),
            E::AlreadyExists(what) if what.starts_with("a writer for upload") => {
                Self::unavailable(format!("{what} is still active; retry in a moment"))
            }
            other => Self::internal(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_altinn_number_in_use_is_in_the_catalogue() {
        let used = [
            1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24,
            25, 26, 27, 28, 29, 6001, 6003, 6005, 7001, 7002, 7004,
        ];
        for code in used {
            let (kind, status, message) = altinn_error(code);
            assert!(kind != Kind::Internal || code == 8, "{code} is not catalogued");
            assert!(status >= 400 && message != "Error", "{code}");
        }
        // Resource errors come from the model with the same numbers.
        use storage::model::ResourceError as R;
        for e in [R::TimeToLiveCannotExceed365Days, R::NeedServiceCodeForManifestShim] {
            let api = ApiError::from(storage::Error::Resource(e));
            assert_eq!(api.http_status, 400);
            assert_eq!(api.code, Some(e.code()));
        }
    }
}
