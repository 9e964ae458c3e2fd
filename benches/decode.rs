//! Criterion bench: capture reading and packet decoding over the bundled real captures.
//!
//! `cargo bench --bench decode`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use netfm::capture::{expand_inputs, CaptureReader};
use netfm::decode::{decode, DecodeOptions};
use std::hint::black_box;

/// (linktype, ts, bytes, orig_len) of every frame of the bundled captures.
fn frames() -> Vec<(u32, u64, Vec<u8>, u32)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/pcaps");
    let inputs = expand_inputs(&[dir]).expect("bundled captures").inputs;
    let mut out = Vec::new();
    for input in &inputs {
        let mut r = CaptureReader::open(input).expect("opens");
        while let Some(f) = r.next_frame() {
            out.push((f.linktype, f.ts_ns, f.data.to_vec(), f.orig_len));
        }
    }
    out
}

fn bench_decode(c: &mut Criterion) {
    let frames = frames();
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(frames.len() as u64));
    g.bench_function("bundled_frames", |b| {
        b.iter(|| {
            let mut ok = 0u32;
            for (lt, ts, data, orig) in &frames {
                ok += decode(*lt, data, *ts, *orig, &DecodeOptions::INNER).is_ok() as u32;
            }
            black_box(ok)
        })
    });
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("datasets/pcaps/tcp_timestamp_long.pcap");
    let bytes = std::fs::read(&file).expect("read capture");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("read_and_decode_tcp_timestamp_long", |b| {
        b.iter(|| {
            let mut r =
                CaptureReader::from_reader("bench", Box::new(std::io::Cursor::new(bytes.clone())))
                    .expect("opens");
            let mut ok = 0u32;
            while let Some(f) = r.next_frame() {
                ok += decode(
                    f.linktype,
                    f.data,
                    f.ts_ns,
                    f.orig_len,
                    &DecodeOptions::INNER,
                )
                .is_ok() as u32;
            }
            black_box(ok)
        })
    });
    g.finish();
}

criterion_group!(benches, bench_decode);
criterion_main!(benches);
