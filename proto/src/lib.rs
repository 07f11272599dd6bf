//! Ferry's gRPC wire types, generated from `ferry/v1/*.proto` at build time.
//!
//! Architecture invariant: this crate holds wire types only. It depends on no other workspace
//! crate, so a client can use it without pulling in the storage engine. Domain types live in
//! `storage::model`; the server converts between the two at its edge.

/// Package `ferry.v1`.
#[allow(clippy::all, unreachable_pub, missing_debug_implementations)]
pub mod v1 {
    tonic::include_proto!("ferry.v1");
}

/// The encoded `FileDescriptorSet` of all Ferry protos, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("ferry_descriptor");

pub use prost_types;
