//! Times the reader stage alone: reading a capture, decoding every frame into a batch and
//! hashing its flow key, as the pipeline's reader thread does, packets dropped after. One thread, so
//! wall time is the stage's CPU time.
//!
//! `cargo run --release --example read_stage -- CAPTURE [--rounds 5]`
//!
//! Prints one line per round (seconds, ns per frame) and the median. Used to A/B changes
//! to `src/capture` and `src/decode`.

use netfm::capture::CaptureReader;
use netfm::decode::{decode_into, DecodeOptions, DecodedPacket};
use netfm::flow::native::flow_hash;
use std::time::Instant;

mod common;
use common::Args;

// The allocator of the netfm binary (its memory settings come with `Args::start`), so that
// the figures carry over.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Packets per batch, as the pipeline's reader sends them.
const BATCH: usize = 4096;

fn main() -> anyhow::Result<()> {
    let args = Args::start();
    let input = args.input("read_stage CAPTURE [--rounds 5]")?;
    let rounds: usize = args.parsed("--rounds", 5)?;
    let mut times = Vec::with_capacity(rounds);
    let mut batch: Vec<DecodedPacket> = vec![DecodedPacket::EMPTY; BATCH];
    let mut len = 0;
    let mut hashes: Vec<u64> = Vec::with_capacity(BATCH);
    for round in 0..rounds {
        let t0 = Instant::now();
        let mut reader = CaptureReader::open(&input)?;
        let (mut frames, mut check) = (0u64, 0u64);
        while let Some(f) = reader.next_frame() {
            frames += 1;
            let slot = &mut batch[len];
            if decode_into(
                f.linktype,
                f.data,
                f.ts_ns,
                f.orig_len,
                &DecodeOptions::INNER,
                slot,
            )
            .is_ok()
            {
                hashes.push(flow_hash(slot));
                len += 1;
                if len == BATCH {
                    check = check.wrapping_add(hashes.iter().fold(0, |a, h| a ^ h));
                    len = 0;
                    hashes.clear();
                }
            }
        }
        check = check.wrapping_add(hashes.iter().fold(0, |a, h| a ^ h));
        len = 0;
        hashes.clear();
        let secs = t0.elapsed().as_secs_f64();
        times.push(secs);
        println!(
            "round {round}: {secs:.3} s, {:.1} ns/frame, {frames} frames (check {check:x})",
            secs * 1e9 / frames.max(1) as f64
        );
    }
    times.sort_by(f64::total_cmp);
    if let Some(median) = times.get(times.len() / 2) {
        println!("median {median:.3} s");
    }
    Ok(())
}
