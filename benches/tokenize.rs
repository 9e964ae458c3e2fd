//! Criterion bench: tokenization of decoded packets — the per-packet field tokens, the
//! native flow table with bursts, and netFound mode — over the bundled real captures.
//!
//! `cargo bench --bench tokenize`

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use netfm::capture::{expand_inputs, CaptureReader};
use netfm::decode::{decode, DecodeOptions, DecodedPacket};
use netfm::flow::native::{NativeFlowConfig, NativeFlowTable};
use netfm::flow::netfound::NetfoundAssembler;
use netfm::flow::FlowAssembler;
use netfm_tokenizer::{BurstConfig, InternalNetworks, TokenLayout};
use std::hint::black_box;

/// Decoded packets of each bundled capture (flows never span files).
fn packets() -> Vec<Vec<DecodedPacket>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/pcaps");
    let inputs = expand_inputs(&[dir]).expect("bundled captures").inputs;
    inputs
        .iter()
        .map(|input| {
            let mut r = CaptureReader::open(input).expect("opens");
            let mut v = Vec::new();
            while let Some(f) = r.next_frame() {
                if let Ok(p) = decode(
                    f.linktype,
                    f.data,
                    f.ts_ns,
                    f.orig_len,
                    &DecodeOptions::INNER,
                ) {
                    v.push(p);
                }
            }
            v
        })
        .collect()
}

/// Runs every file through a flow stage; returns the number of flows.
fn assemble_all(mut stage: impl FlowAssembler, files: &[Vec<DecodedPacket>]) -> usize {
    let mut flows = Vec::new();
    for file in files {
        for p in file {
            stage.push(p, &mut flows);
        }
        stage.end_of_file(&mut flows);
    }
    black_box(flows.len())
}

fn bench_tokenize(c: &mut Criterion) {
    let files = packets();
    let n: usize = files.iter().map(Vec::len).sum();
    let mut g = c.benchmark_group("tokenize");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("packet_tokens", |b| {
        let mut out = Vec::with_capacity(64);
        b.iter(|| {
            let mut total = 0usize;
            for p in files.iter().flatten() {
                out.clear();
                p.fields.push_tokens(TokenLayout::default(), &mut out);
                total += out.len();
            }
            black_box(total)
        })
    });
    g.bench_function("native_flows", |b| {
        b.iter_batched(
            || NativeFlowTable::new(NativeFlowConfig::default()),
            |t| assemble_all(t, &files),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("netfound_flows", |b| {
        b.iter_batched(
            || NetfoundAssembler::new(BurstConfig::default(), InternalNetworks::netfound_default()),
            |a| assemble_all(a, &files),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench_tokenize);
criterion_main!(benches);
