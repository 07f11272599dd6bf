//! Chunk framing on the upload path: a data chunk encoded as an `UploadRequest` (what the client
//! does per message) and decoded from the received buffer (what the server does). With
//! `bytes` fields generated as `Bytes`, decoding slices the buffer instead of copying: the
//! decode figure should be far above memory-copy speed and flat in the chunk size.
//!
//! `cargo bench -p benches --bench framing`.

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prost::Message as _;
use proto::v1::{UploadRequest, upload_request::Message};

fn framing(c: &mut Criterion) {
    let mut group = c.benchmark_group("upload_chunk_framing");
    for size in [64 * 1024, 1024 * 1024] {
        let data = benches::payload_chunks(7, size, size).remove(0);
        let request = UploadRequest { message: Some(Message::Data(data.clone())) };
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(format!("encode_{}KiB", size / 1024), |b| {
            let mut buf = BytesMut::with_capacity(size + 16);
            b.iter(|| {
                buf.clear();
                request.encode(&mut buf).expect("capacity");
                std::hint::black_box(&buf);
            });
        });
        let encoded: Bytes = request.encode_to_vec().into();
        group.bench_function(format!("decode_{}KiB", size / 1024), |b| {
            b.iter(|| {
                let decoded = UploadRequest::decode(encoded.clone()).expect("decode");
                std::hint::black_box(decoded);
            });
        });
        // The copy a decode would cost if it did not slice: the reference for the line above.
        group.bench_function(format!("memcpy_{}KiB", size / 1024), |b| {
            b.iter(|| std::hint::black_box(Bytes::copy_from_slice(&data)));
        });
    }
    group.finish();
}

criterion_group!(benches, framing);
criterion_main!(benches);
