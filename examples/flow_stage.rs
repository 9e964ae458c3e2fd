//! Times the native flow stage alone (flow table, bursts, tokens; finished flows are freed
//! on the same thread) on the decoded packets of one capture, without reading, decoding or
//! writing. The packets are decoded into memory first, so the capture's decoded packets
//! must fit (about 180 bytes each: 1.2 GB for the 6.9 M-packet benchmark capture).
//!
//! `cargo run --release --example flow_stage -- CAPTURE [--rounds 5] [--max-packets N]`
//!
//! Prints one line per round (seconds, ns per packet, flows, tokens) and the median. Used to
//! A/B changes to `src/flow/native.rs` and `tokenizer/src/burst.rs`: the whole pipeline's
//! wall time is too noisy on 2 shared cores to show a few percent.

use netfm::capture::CaptureReader;
use netfm::decode::{decode, DecodeOptions, DecodedPacket};
use netfm::flow::native::{flow_hash, NativeFlowConfig, NativeFlowTable};
use netfm::flow::FlowAssembler;
use std::time::Instant;

mod common;
use common::Args;

// The allocator of the netfm binary (its memory settings come with `Args::start`), so that
// the figures carry over.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Packets per `push_batch` call, as the pipeline's reader sends them.
const BATCH: usize = 4096;

fn main() -> anyhow::Result<()> {
    let args = Args::start();
    let input = args.input("flow_stage CAPTURE [--rounds 5] [--max-packets N]")?;
    let rounds: usize = args.parsed("--rounds", 5)?;
    let max_packets: usize = args.parsed("--max-packets", usize::MAX)?;

    let mut reader = CaptureReader::open(&input)?;
    let mut packets: Vec<DecodedPacket> = Vec::new();
    while let Some(f) = reader.next_frame() {
        if let Ok(p) = decode(
            f.linktype,
            f.data,
            f.ts_ns,
            f.orig_len,
            &DecodeOptions::INNER,
        ) {
            packets.push(p);
        }
        if packets.len() >= max_packets {
            break;
        }
    }
    let hashes: Vec<u64> = packets.iter().map(flow_hash).collect();
    println!("{} decoded packets", packets.len());

    let mut times = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let mut table = NativeFlowTable::new(NativeFlowConfig::default());
        let mut out = Vec::new();
        let (mut flows, mut tokens) = (0usize, 0usize);
        let t0 = Instant::now();
        for (pkts, hs) in packets.chunks(BATCH).zip(hashes.chunks(BATCH)) {
            table.push_batch(pkts, hs, &mut out);
            flows += out.len();
            tokens += out.iter().map(|f| f.tokens.token_count()).sum::<usize>();
            out.clear();
        }
        table.end_of_file(&mut out);
        flows += out.len();
        tokens += out.iter().map(|f| f.tokens.token_count()).sum::<usize>();
        drop(out);
        let secs = t0.elapsed().as_secs_f64();
        times.push(secs);
        println!(
            "round {round}: {secs:.3} s, {:.1} ns/packet, {flows} flows, {tokens} tokens",
            secs * 1e9 / packets.len().max(1) as f64
        );
    }
    times.sort_by(f64::total_cmp);
    if let Some(median) = times.get(times.len() / 2) {
        println!("median {median:.3} s");
    }
    Ok(())
}
