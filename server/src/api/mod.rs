//! The front-ends: each turns its protocol into calls of the use cases in [`crate::app`] and
//! their results back into its protocol. No business rule lives here.
//!
//! - [`grpc`]: the gRPC services (chunked, resumable uploads; downloads; resources).
//! - [`rest`]: the Altinn-compatible REST facade under `/broker/api/v1`.
//! - [`tus`]: TUS resumable uploads.
//! - [`events`]: the CloudEvents pull feed; [`watch`]: the gRPC watch stream.
//! - [`webhooks`]: the webhook subscription API.
//! - [`exchange`]: Altinn's Maskinporten token exchange and Ferry's OpenID configuration.
//! - [`openapi`]: the OpenAPI document and Swagger UI.
//! - [`console`]: the web console for people, at `/` (HTML pages over the same use cases).
//! - [`http`]: what the HTTP front-ends share (query parsing, ProblemDetails, timeouts);
//!   [`body`]: request bodies with idle timeouts.

pub mod body;
pub mod console;
pub mod events;
pub mod exchange;
pub mod grpc;
pub mod http;
pub mod openapi;
pub mod rest;
pub mod tus;
pub mod watch;
pub mod webhooks;
