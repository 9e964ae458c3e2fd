//! Times the native Parquet writer alone: one capture's flows are built first (reading,
//! decoding and the flow stage, untimed, all flows kept in memory), then each round writes
//! them with one [`ParquetSink`] on this thread, in the pipeline's 4096-flow messages.
//!
//! `cargo run --release --example write_stage -- CAPTURE [--rounds 5] [--out DIR] [--zstd LEVEL]`
//!
//! Prints one line per round (seconds, ns per flow and per token, bytes written) and the
//! median. Used to A/B changes to `src/dataset/parquet.rs`: in the whole pipeline the
//! writers share two cores with the other stages and their share is too noisy to compare.

use netfm::capture::CaptureReader;
use netfm::dataset::parquet::{flow_id_of, source_hash, NativeRow, ParquetSink, ParquetSinkConfig};
use netfm::decode::{decode, DecodeOptions};
use netfm::flow::native::{flow_hash, NativeFlowConfig, NativeFlowTable};
use netfm::flow::{FlowAssembler, FlowRecord};
use std::path::PathBuf;
use std::time::Instant;

mod common;
use common::Args;

// The allocator of the netfm binary (its memory settings come with `Args::start`), so that
// the figures carry over.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Flows per message, as the pipeline's flow stage sends them.
const MESSAGE: usize = 4096;
/// Packets per `push_batch` call, as the pipeline's reader sends them.
const BATCH: usize = 4096;

fn main() -> anyhow::Result<()> {
    let args = Args::start();
    let input = args.input("write_stage CAPTURE [--rounds 5] [--out DIR] [--zstd LEVEL]")?;
    let rounds: usize = args.parsed("--rounds", 5)?;
    let zstd: Option<i32> = args.flag("--zstd").map(str::parse).transpose()?;
    let out_dir = PathBuf::from(args.flag("--out").unwrap_or("/tmp/netfm-write-stage"));

    let source = input.to_string();
    let mut reader = CaptureReader::open(&input)?;
    let mut table = NativeFlowTable::new(NativeFlowConfig::default());
    let mut flows: Vec<FlowRecord> = Vec::new();
    let (mut batch, mut hashes) = (Vec::with_capacity(BATCH), Vec::with_capacity(BATCH));
    loop {
        let frame = reader.next_frame();
        let done = frame.is_none();
        if let Some(f) = frame {
            if let Ok(p) = decode(
                f.linktype,
                f.data,
                f.ts_ns,
                f.orig_len,
                &DecodeOptions::INNER,
            ) {
                hashes.push(flow_hash(&p));
                batch.push(p);
            }
        }
        if batch.len() == BATCH || (done && !batch.is_empty()) {
            table.push_batch(&batch, &hashes, &mut flows);
            batch.clear();
            hashes.clear();
        }
        if done {
            break;
        }
    }
    table.end_of_file(&mut flows);
    let tokens: usize = flows.iter().map(|f| f.tokens.token_count()).sum();
    println!("{} flows, {tokens} tokens", flows.len());

    let mut times = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let _ = std::fs::remove_dir_all(&out_dir);
        let f0 = minflt();
        let t0 = Instant::now();
        let mut cfg = ParquetSinkConfig::new(&out_dir);
        if let Some(level) = zstd {
            cfg.zstd_level = level;
        }
        let mut sink = ParquetSink::new(cfg)?;
        // As the pipeline's writers: the source hashed once per message.
        let source_hash = source_hash(&source);
        for (m, chunk) in flows.chunks(MESSAGE).enumerate() {
            let rows: Vec<NativeRow<'_>> = chunk
                .iter()
                .enumerate()
                .map(|(k, flow)| NativeRow {
                    flow_id: flow_id_of(source_hash, (m * MESSAGE + k) as u64),
                    source: &source,
                    label: None,
                    flow,
                })
                .collect();
            sink.write(&rows)?;
        }
        let parts = sink.finish()?;
        let secs = t0.elapsed().as_secs_f64();
        let bytes: u64 = parts
            .iter()
            .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
            .sum();
        times.push(secs);
        let faults = minflt() - f0;
        println!(
            "round {round}: {faults} page faults, {secs:.3} s, {:.0} ns/flow, {:.1} ns/token, {bytes} bytes in {} parts",
            secs * 1e9 / flows.len().max(1) as f64,
            secs * 1e9 / tokens.max(1) as f64,
            parts.len()
        );
    }
    times.sort_by(f64::total_cmp);
    if let Some(median) = times.get(times.len() / 2) {
        println!("median {median:.3} s");
    }
    Ok(())
}

/// Minor page faults of this process so far.
fn minflt() -> i64 {
    // SAFETY: getrusage writes into the zeroed struct it is given.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru.ru_minflt
    }
}
