//! The offline batch job behind `netfm tokenize`: inputs -> capture -> decode -> flow stage
//! -> sink, one capture file after another, with a summary at the end.
//!
//! This module wires stages; it owns no format or protocol logic. Memory is bounded by the
//! flow stage's configuration and the sinks' batch sizes, never by input size.

use crate::capture::{expand_inputs, CaptureReader, Input};
use crate::dataset::netfound_ipc::NetfoundIpcWriter;
use crate::dataset::parquet::{flow_id, NativeRow, ParquetSink, ParquetSinkConfig};
use crate::decode::{decode, SkipReason};
use crate::flow::native::{NativeFlowConfig, NativeFlowTable};
use crate::flow::netfound::NetfoundAssembler;
use crate::flow::{FlowAssembler, FlowRecord, FlowStats};
use crate::summary::{FileWarning, RunSummary};
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use netfm_tokenizer::{BurstConfig, InternalNetworks};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

/// Which flow semantics and output format a run uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// Native flows, Parquet dataset.
    Parquet,
    /// netFound's flow semantics, netFound's Arrow IPC schema.
    Netfound,
}

/// The i-th of N deterministic slices of the input list: input k belongs to shard k mod N.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    pub fn tag(&self) -> String {
        format!("s{}of{}", self.index, self.count)
    }

    pub fn select<T: Clone>(&self, items: &[T]) -> Vec<T> {
        items.iter().enumerate().filter(|(k, _)| k % self.count == self.index).map(|(_, x)| x.clone()).collect()
    }
}

/// Everything a tokenize run needs.
#[derive(Clone, Debug)]
pub struct TokenizeOptions {
    pub inputs: Vec<PathBuf>,
    pub out_dir: PathBuf,
    pub format: OutputFormat,
    pub bursts: BurstConfig,
    pub internal: InternalNetworks,
    pub native: NativeFlowConfig,
    pub shard: Shard,
    pub part_rows: usize,
    pub label_from_dir: bool,
    pub progress: bool,
}

/// Where finished flows go.
enum Sink {
    Parquet(ParquetSink),
    Netfound(NetfoundIpcWriter),
}

impl Sink {
    fn write(&mut self, source: &str, label: Option<&str>, first_index: u64, flows: &[FlowRecord]) -> anyhow::Result<()> {
        match self {
            Sink::Parquet(p) => {
                let rows: Vec<NativeRow<'_>> = flows
                    .iter()
                    .enumerate()
                    .map(|(k, flow)| NativeRow { flow_id: flow_id(source, first_index + k as u64), source, label, flow })
                    .collect();
                p.write(&rows)?;
            }
            Sink::Netfound(w) => {
                for f in flows {
                    w.push(&f.tokens, label)?;
                }
            }
        }
        Ok(())
    }

    fn finish(self) -> anyhow::Result<Vec<PathBuf>> {
        Ok(match self {
            Sink::Parquet(p) => p.finish()?,
            Sink::Netfound(w) => vec![w.finish()?],
        })
    }
}

/// Flows buffered before they are handed to the sink.
const FLUSH_FLOWS: usize = 4096;

fn label_of(input: &Input) -> Option<String> {
    match input {
        Input::File(p) => p.parent().and_then(|d| d.file_name()).map(|n| n.to_string_lossy().into_owned()),
        Input::Stdin => None,
    }
}

/// Adds finished flows to the summary's totals.
fn tally(summary: &mut RunSummary, flows: &[FlowRecord]) {
    summary.flows += flows.len() as u64;
    for f in flows {
        summary.bursts += f.tokens.bursts.len() as u64;
        summary.tokens += f.tokens.token_count() as u64;
    }
}

fn merge_stats(summary: &mut RunSummary, stats: &FlowStats) {
    summary.flows_evicted = stats.flows_evicted;
    for (k, v) in &stats.flows_dropped {
        summary.flows_dropped.insert(k.to_string(), *v);
    }
    for (k, v) in &stats.packets_dropped {
        summary.packets_skipped.insert(format!("netfound_{k}"), *v);
    }
}

/// Runs `netfm tokenize`. Damaged or unreadable inputs are reported in the summary's
/// warnings, not as errors; output-side failures are errors.
pub fn run_tokenize(opts: &TokenizeOptions) -> anyhow::Result<RunSummary> {
    let started = Instant::now();
    let expanded = expand_inputs(&opts.inputs)?;
    let mut summary = RunSummary::default();
    for w in &expanded.skipped {
        summary.warnings.push(FileWarning {
            file: w.path.display().to_string(),
            byte_offset: None,
            message: w.message.clone(),
        });
    }
    let inputs = opts.shard.select(&expanded.inputs);

    let mut assembler: Box<dyn FlowAssembler> = match opts.format {
        OutputFormat::Parquet => Box::new(NativeFlowTable::new(opts.native.clone())),
        OutputFormat::Netfound => Box::new(NetfoundAssembler::new(opts.bursts, opts.internal.clone())),
    };
    let mut sink = match opts.format {
        OutputFormat::Parquet => {
            let mut cfg = ParquetSinkConfig::new(&opts.out_dir);
            cfg.part_rows = opts.part_rows;
            cfg.shard_tag = opts.shard.tag();
            Sink::Parquet(ParquetSink::new(cfg)?)
        }
        OutputFormat::Netfound => {
            std::fs::create_dir_all(&opts.out_dir).with_context(|| format!("creating {}", opts.out_dir.display()))?;
            let path = opts.out_dir.join(format!("netfound-{}.arrow", opts.shard.tag()));
            Sink::Netfound(NetfoundIpcWriter::create(&path)?)
        }
    };

    let total_bytes: u64 = inputs
        .iter()
        .filter_map(|i| match i {
            Input::File(p) => std::fs::metadata(p).ok().map(|m| m.len()),
            Input::Stdin => None,
        })
        .sum();
    let bar = if opts.progress && total_bytes > 64 << 20 {
        let b = ProgressBar::new(total_bytes);
        b.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Some(b)
    } else {
        None
    };

    let mut flows: Vec<FlowRecord> = Vec::with_capacity(FLUSH_FLOWS);
    let mut skipped = [0u64; SkipReason::ALL.len()];
    let mut done_bytes = 0u64;
    for input in &inputs {
        let name = input.to_string();
        let label = if opts.label_from_dir { label_of(input) } else { None };
        summary.files += 1;
        let mut reader = match CaptureReader::open(input) {
            Ok(r) => r,
            Err(e) => {
                summary.files_failed += 1;
                summary.warnings.push(FileWarning { file: name, byte_offset: None, message: e.to_string() });
                continue;
            }
        };
        let file_size = match input {
            Input::File(p) => std::fs::metadata(p).map(|m| m.len()).unwrap_or(0),
            Input::Stdin => 0,
        };
        let mut flow_index = 0u64;
        let mut unsupported: BTreeMap<u32, u64> = BTreeMap::new();
        let mut last_offset = 0u64;
        while let Some(frame) = reader.next_frame() {
            summary.packets_read += 1;
            last_offset = frame.byte_offset;
            match decode(frame.linktype, frame.data, frame.ts_ns, frame.orig_len) {
                Ok(pkt) => {
                    summary.packets_decoded += 1;
                    assembler.push(&pkt, &mut flows);
                }
                Err(reason) => {
                    skipped[reason as usize] += 1;
                    if reason == SkipReason::UnsupportedLinkType {
                        *unsupported.entry(frame.linktype).or_default() += 1;
                    }
                }
            }
            if flows.len() >= FLUSH_FLOWS {
                tally(&mut summary, &flows);
                sink.write(&name, label.as_deref(), flow_index, &flows)?;
                flow_index += flows.len() as u64;
                flows.clear();
            }
            if summary.packets_read % 65_536 == 0 {
                if let Some(b) = &bar {
                    b.set_position(done_bytes + last_offset.min(file_size));
                }
            }
        }
        assembler.end_of_file(&mut flows);
        tally(&mut summary, &flows);
        sink.write(&name, label.as_deref(), flow_index, &flows)?;
        flows.clear();
        if let Some(w) = reader.warning() {
            summary.files_damaged += 1;
            summary.warnings.push(FileWarning {
                file: name.clone(),
                byte_offset: Some(w.byte_offset),
                message: w.message.clone(),
            });
        }
        if !unsupported.is_empty() {
            summary.unsupported_link_types.insert(name, unsupported);
        }
        summary.bytes_read += file_size.max(last_offset);
        done_bytes += file_size;
        if let Some(b) = &bar {
            b.set_position(done_bytes);
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    for (reason, n) in SkipReason::ALL.iter().zip(skipped) {
        summary.skip(reason.name(), n);
    }
    merge_stats(&mut summary, assembler.stats());
    summary.output_files = sink.finish()?.into_iter().map(|p| p.display().to_string()).collect();
    summary.seconds = started.elapsed().as_secs_f64();
    summary.packets_per_second = if summary.seconds > 0.0 { summary.packets_read as f64 / summary.seconds } else { 0.0 };
    Ok(summary)
}
