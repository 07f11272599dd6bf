//! Compiles `ferry/v1/*.proto` with protox (pure Rust), so building Ferry needs no system `protoc`.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "ferry/v1/common.proto",
    "ferry/v1/events.proto",
    "ferry/v1/file_transfer.proto",
    "ferry/v1/resource.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(PROTOS, ["."])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    // For gRPC reflection.
    std::fs::write(
        out_dir.join("ferry_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        // Data chunks are `bytes::Bytes`: the server hands them to storage without a copy.
        .bytes(".")
        .compile_fds(descriptors)?;
    Ok(())
}
