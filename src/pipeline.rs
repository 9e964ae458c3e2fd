//! The offline batch job behind `netfm tokenize`: inputs -> capture -> decode -> flow stage
//! -> sink, one capture file after another, with a summary at the end.
//!
//! This module wires stages; it owns no format or protocol logic. Memory is bounded by the
//! flow stage's configuration and the sinks' batch sizes, never by input size.

use crate::capture::{expand_inputs, CaptureReader, Input};
use crate::dataset::netfound_ipc::NetfoundIpcWriter;
use crate::dataset::parquet::{flow_id_of, source_hash, NativeRow, ParquetSink, ParquetSinkConfig};
use crate::decode::{decode_into, DecodeOptions, DecodedPacket, SkipReason, TunnelMode};
use crate::flow::native::{NativeFlowConfig, NativeFlowTable};
use crate::flow::netfound::NetfoundAssembler;
use crate::flow::{FlowAssembler, FlowRecord, FlowStats};
use crate::summary::{FileWarning, RunSummary};
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use netfm_tokenizer::{BurstConfig, InternalNetworks};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
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
        items
            .iter()
            .enumerate()
            .filter(|(k, _)| k % self.count == self.index)
            .map(|(_, x)| x.clone())
            .collect()
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
    /// zstd level of the Parquet parts.
    pub zstd_level: i32,
    pub label_from_dir: bool,
    pub progress: bool,
    /// Native mode: strip tunnels or not (netFound mode always decodes as netFound does).
    pub tunnels: TunnelMode,
}

/// Where finished flows go.
enum Sink {
    Parquet(Box<ParquetSink>),
    Netfound(NetfoundIpcWriter),
}

impl Sink {
    fn write(
        &mut self,
        source: &str,
        label: Option<&str>,
        first_index: u64,
        flows: &[FlowRecord],
    ) -> anyhow::Result<()> {
        match self {
            Sink::Parquet(p) => {
                let source_hash = source_hash(source);
                let rows: Vec<NativeRow<'_>> = flows
                    .iter()
                    .enumerate()
                    .map(|(k, flow)| NativeRow {
                        flow_id: flow_id_of(source_hash, first_index + k as u64),
                        source,
                        label,
                        flow,
                    })
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

/// Flows buffered before they are handed to a writer, and the most one message holds.
const FLUSH_FLOWS: usize = 4096;
/// Parquet writer threads (native mode).
const PARQUET_WRITERS: usize = 2;

/// Size of a file input on disk (0 for stdin or when unknown), for the progress bar.
fn input_size(input: &Input) -> u64 {
    match input {
        Input::File(p) => std::fs::metadata(p).map(|m| m.len()).unwrap_or(0),
        Input::Stdin => 0,
    }
}

fn label_of(input: &Input) -> Option<String> {
    match input {
        Input::File(p) => p
            .parent()
            .and_then(|d| d.file_name())
            .map(|n| n.to_string_lossy().into_owned()),
        Input::Stdin => None,
    }
}

/// Adds finished flows to the summary's totals.
fn tally(summary: &mut RunSummary, flows: &[FlowRecord]) {
    summary.flows += flows.len() as u64;
    for f in flows {
        summary.bursts += f.tokens.bursts.len() as u64;
        summary.tokens += f.tokens.token_count() as u64;
        summary.late_packets_inexact += f.tokens.inexact_late_packets;
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
        summary.files_ignored.push(FileWarning {
            file: w.path.display().to_string(),
            byte_offset: None,
            message: w.message.clone(),
        });
    }
    let inputs = opts.shard.select(&expanded.inputs);

    let mut assembler: Box<dyn FlowAssembler> = match opts.format {
        OutputFormat::Parquet => Box::new(NativeFlowTable::new(opts.native.clone())),
        OutputFormat::Netfound => Box::new(NetfoundAssembler::with_max_flows(
            opts.bursts,
            opts.internal.clone(),
            opts.native.max_flows,
        )),
    };
    // Native mode encodes Parquet on PARQUET_WRITERS threads, each writing its own parts
    // (the encoder is the costliest stage, and a capture's end hands it every live flow at
    // once); netFound mode writes its single Arrow file on one.
    let sinks: Vec<Sink> = match opts.format {
        OutputFormat::Parquet => (0..PARQUET_WRITERS)
            .map(|w| -> anyhow::Result<Sink> {
                let mut cfg = ParquetSinkConfig::new(&opts.out_dir);
                cfg.part_rows = opts.part_rows;
                cfg.zstd_level = opts.zstd_level;
                cfg.shard_tag = opts.shard.tag();
                cfg.part_seq = (w as u32, PARQUET_WRITERS as u32);
                Ok(Sink::Parquet(Box::new(ParquetSink::new(cfg)?)))
            })
            .collect::<anyhow::Result<_>>()?,
        OutputFormat::Netfound => {
            std::fs::create_dir_all(&opts.out_dir)
                .with_context(|| format!("creating {}", opts.out_dir.display()))?;
            let path = opts
                .out_dir
                .join(format!("netfound-{}.arrow", opts.shard.tag()));
            vec![Sink::Netfound(NetfoundIpcWriter::create(&path)?)]
        }
    };

    let total_bytes: u64 = inputs.iter().map(input_size).sum();
    let bar = if opts.progress && total_bytes > 64 << 20 {
        let b = ProgressBar::new(total_bytes);
        b.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Some(b)
    } else {
        None
    };

    let label_from_dir = opts.label_from_dir;
    let decode_opts = match opts.format {
        OutputFormat::Parquet => DecodeOptions {
            tunnels: opts.tunnels,
        },
        OutputFormat::Netfound => DecodeOptions::NETFOUND,
    };
    let (pkt_tx, pkt_rx) = sync_channel::<ReadMsg>(CHANNEL_DEPTH);
    let (recycle_tx, recycle_rx) = sync_channel::<PacketBatch>(CHANNEL_DEPTH + 2);
    let hasher = assembler.key_hasher();
    let outputs = std::thread::scope(|scope| -> anyhow::Result<Vec<PathBuf>> {
        let reader = std::thread::Builder::new()
            .name("netfm-read".into())
            .spawn_scoped(scope, move || {
                read_inputs(
                    &inputs,
                    label_from_dir,
                    &decode_opts,
                    hasher,
                    pkt_tx,
                    recycle_rx,
                    bar,
                )
            })
            .context("starting the capture reader thread")?;
        let depth = CHANNEL_DEPTH.div_ceil(sinks.len()).max(1);
        let mut flow_txs = Vec::with_capacity(sinks.len());
        let mut writers = Vec::with_capacity(sinks.len());
        for mut sink in sinks {
            let (flow_tx, flow_rx) = sync_channel::<SinkMsg>(depth);
            flow_txs.push(flow_tx);
            let writer = std::thread::Builder::new()
                .name("netfm-write".into())
                .spawn_scoped(scope, move || -> anyhow::Result<Vec<PathBuf>> {
                    for msg in flow_rx {
                        sink.write(
                            &msg.source,
                            msg.label.as_deref(),
                            msg.first_index,
                            &msg.flows,
                        )?;
                    }
                    sink.finish()
                })
                .context("starting a dataset writer thread")?;
            writers.push(writer);
        }
        let flowed = assemble(&mut *assembler, &mut summary, pkt_rx, recycle_tx, flow_txs);
        let read = reader
            .join()
            .map_err(|_| anyhow::anyhow!("capture reader thread panicked"))?;
        let mut outputs = Vec::new();
        let mut first_error = None;
        for writer in writers {
            match writer
                .join()
                .map_err(|_| anyhow::anyhow!("dataset writer thread panicked"))
                .and_then(|r| r)
            {
                Ok(paths) => outputs.extend(paths),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        // A writer's error explains a stopped flow stage; report it first.
        if let Some(e) = first_error {
            return Err(e);
        }
        flowed?;
        outputs.sort();
        let (reads, skipped) = read;
        for r in reads {
            summary.add_file(r);
        }
        for (reason, n) in SkipReason::ALL.iter().zip(skipped) {
            summary.skip(reason.name(), n);
        }
        Ok(outputs)
    })?;
    merge_stats(&mut summary, assembler.stats());
    summary.output_files = outputs
        .into_iter()
        .map(|p| p.display().to_string())
        .collect();
    summary.seconds = started.elapsed().as_secs_f64();
    summary.packets_per_second = if summary.seconds > 0.0 {
        summary.packets_read as f64 / summary.seconds
    } else {
        0.0
    };
    Ok(summary)
}

/// Packets per message from the reader to the flow stage.
const PACKET_BATCH: usize = 4096;
/// Packets the flow stage takes at a time between hand-offs of finished flows.
const PUSH_SLICE: usize = 512;
/// Messages in flight between two stages (the memory bound of the hand-offs).
const CHANNEL_DEPTH: usize = 4;

/// What one input yielded, reported when the reader is done with it.
#[derive(Debug, Default)]
pub struct FileRead {
    pub name: String,
    pub failed: Option<String>,
    pub warning: Option<(u64, String)>,
    pub packets_read: u64,
    pub packets_decoded: u64,
    pub bytes_read: u64,
    pub unsupported: BTreeMap<u32, u64>,
}

impl RunSummary {
    fn add_file(&mut self, r: FileRead) {
        self.files += 1;
        self.packets_read += r.packets_read;
        self.packets_decoded += r.packets_decoded;
        self.bytes_read += r.bytes_read;
        if let Some(message) = r.failed {
            self.files_failed += 1;
            self.warnings.push(FileWarning {
                file: r.name.clone(),
                byte_offset: None,
                message,
            });
        }
        if let Some((offset, message)) = r.warning {
            self.files_damaged += 1;
            self.warnings.push(FileWarning {
                file: r.name.clone(),
                byte_offset: Some(offset),
                message,
            });
        }
        if !r.unsupported.is_empty() {
            self.unsupported_link_types.insert(r.name, r.unsupported);
        }
    }
}

enum ReadMsg {
    /// A file's flows start; flows never span files.
    Begin {
        source: Arc<str>,
        label: Option<Arc<str>>,
    },
    Packets(PacketBatch),
    /// The current file is done.
    End,
}

/// Decoded packets in capture order and, when the flow stage takes them, their key hashes
/// (computed here on the reader thread, off the flow stage's critical path). The packet
/// slots exist up front, so the reader decodes straight into them.
struct PacketBatch {
    slots: Vec<DecodedPacket>,
    /// Slots filled, from the first.
    len: usize,
    hashes: Vec<u64>,
}

impl PacketBatch {
    fn with_capacity(n: usize) -> Self {
        PacketBatch {
            slots: vec![DecodedPacket::EMPTY; n.max(1)],
            len: 0,
            hashes: Vec::with_capacity(n),
        }
    }

    fn packets(&self) -> &[DecodedPacket] {
        &self.slots[..self.len]
    }

    fn is_full(&self) -> bool {
        self.len == self.slots.len()
    }

    fn clear(&mut self) {
        self.len = 0;
        self.hashes.clear();
    }
}

struct SinkMsg {
    source: Arc<str>,
    label: Option<Arc<str>>,
    first_index: u64,
    flows: Vec<FlowRecord>,
}

/// Stage 1 (own thread): read and decode every input, in order, in batches.
fn read_inputs(
    inputs: &[Input],
    label_from_dir: bool,
    decode_opts: &DecodeOptions,
    hasher: Option<fn(&DecodedPacket) -> u64>,
    tx: SyncSender<ReadMsg>,
    recycled: Receiver<PacketBatch>,
    bar: Option<ProgressBar>,
) -> (Vec<FileRead>, [u64; SkipReason::ALL.len()]) {
    let mut reads = Vec::with_capacity(inputs.len());
    let mut skipped = [0u64; SkipReason::ALL.len()];
    let mut done_bytes = 0u64;
    'inputs: for input in inputs {
        let mut r = FileRead {
            name: input.to_string(),
            ..FileRead::default()
        };
        let mut reader = match CaptureReader::open(input) {
            Ok(reader) => reader,
            Err(e) => {
                r.failed = Some(e.to_string());
                reads.push(r);
                continue;
            }
        };
        let file_size = input_size(input);
        let label = if label_from_dir {
            label_of(input).map(Arc::from)
        } else {
            None
        };
        if tx
            .send(ReadMsg::Begin {
                source: Arc::from(r.name.as_str()),
                label,
            })
            .is_err()
        {
            break;
        }
        let mut batch = recycled
            .try_recv()
            .unwrap_or_else(|_| PacketBatch::with_capacity(PACKET_BATCH));
        let mut last_offset = 0u64;
        while let Some(frame) = reader.next_frame() {
            r.packets_read += 1;
            last_offset = frame.byte_offset + frame.data.len() as u64;
            let slot = &mut batch.slots[batch.len];
            match decode_into(
                frame.linktype,
                frame.data,
                frame.ts_ns,
                frame.orig_len,
                decode_opts,
                slot,
            ) {
                Ok(()) => {
                    r.packets_decoded += 1;
                    if let Some(hash) = hasher {
                        batch.hashes.push(hash(slot));
                    }
                    batch.len += 1;
                    if batch.is_full() {
                        let next = recycled
                            .try_recv()
                            .unwrap_or_else(|_| PacketBatch::with_capacity(PACKET_BATCH));
                        if tx
                            .send(ReadMsg::Packets(std::mem::replace(&mut batch, next)))
                            .is_err()
                        {
                            break 'inputs;
                        }
                    }
                }
                Err(reason) => {
                    skipped[reason as usize] += 1;
                    if reason == SkipReason::UnsupportedLinkType {
                        *r.unsupported.entry(frame.linktype).or_default() += 1;
                    }
                }
            }
            if r.packets_read.is_multiple_of(65_536) {
                if let Some(b) = &bar {
                    b.set_position(done_bytes + last_offset.min(file_size));
                }
            }
        }
        if batch.len > 0 && tx.send(ReadMsg::Packets(batch)).is_err() {
            break;
        }
        if tx.send(ReadMsg::End).is_err() {
            break;
        }
        if let Some(w) = reader.warning() {
            r.warning = Some((w.byte_offset, w.message.clone()));
        }
        r.bytes_read = last_offset;
        done_bytes += file_size;
        if let Some(b) = &bar {
            b.set_position(done_bytes);
        }
        reads.push(r);
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    (reads, skipped)
}

/// Stage 2 (calling thread): group packets into flows and hand finished flows to the
/// writers, in messages of at most FLUSH_FLOWS flows, round robin (so which writer, and
/// so which part file, a flow lands in depends on the input alone).
fn assemble(
    assembler: &mut dyn FlowAssembler,
    summary: &mut RunSummary,
    rx: Receiver<ReadMsg>,
    recycle: SyncSender<PacketBatch>,
    txs: Vec<SyncSender<SinkMsg>>,
) -> anyhow::Result<()> {
    let mut flows: Vec<FlowRecord> = Vec::with_capacity(FLUSH_FLOWS);
    let mut source: Arc<str> = Arc::from("");
    let mut label: Option<Arc<str>> = None;
    let mut flow_index = 0u64;
    let mut sent = 0usize;
    // Sends the finished flows in messages of FLUSH_FLOWS, round robin. Mid-file (`all`
    // false) only full messages go and the rest waits for more flows: sending the few
    // flows past a full message on their own would hand one writer all the full messages
    // and the other only crumbs.
    let mut send = |flows: &mut Vec<FlowRecord>,
                    all: bool,
                    summary: &mut RunSummary,
                    source: &Arc<str>,
                    label: &Option<Arc<str>>,
                    index: &mut u64|
     -> anyhow::Result<()> {
        let ready = if all {
            flows.len()
        } else {
            flows.len() / FLUSH_FLOWS * FLUSH_FLOWS
        };
        if ready == 0 {
            return Ok(());
        }
        // One pass over the ready flows (a capture's end hands over every live flow at once).
        let rest = flows.split_off(ready);
        let mut ready = std::mem::replace(flows, rest).into_iter();
        loop {
            let chunk: Vec<FlowRecord> = ready.by_ref().take(FLUSH_FLOWS).collect();
            if chunk.is_empty() {
                break;
            }
            tally(summary, &chunk);
            let n = chunk.len() as u64;
            let msg = SinkMsg {
                source: source.clone(),
                label: label.clone(),
                first_index: *index,
                flows: chunk,
            };
            *index += n;
            txs[sent % txs.len()]
                .send(msg)
                .map_err(|_| anyhow::anyhow!("dataset writer stopped"))?;
            sent += 1;
        }
        if flows.capacity() < FLUSH_FLOWS {
            flows.reserve(FLUSH_FLOWS - flows.len());
        }
        Ok(())
    };
    for msg in rx {
        match msg {
            ReadMsg::Begin {
                source: s,
                label: l,
            } => {
                source = s;
                label = l;
                flow_index = 0;
            }
            ReadMsg::Packets(mut batch) => {
                // In slices, handing full messages on between them: a slice can end many
                // flows (a quiet stretch idles out the table), and the writers should
                // start on them while the flow stage goes on.
                let pkts = batch.packets();
                let hashes = &batch.hashes;
                for (k, slice) in pkts.chunks(PUSH_SLICE).enumerate() {
                    let hashed = if hashes.len() == pkts.len() {
                        &hashes[k * PUSH_SLICE..k * PUSH_SLICE + slice.len()]
                    } else {
                        &[]
                    };
                    assembler.push_batch(slice, hashed, &mut flows);
                    send(&mut flows, false, summary, &source, &label, &mut flow_index)?;
                }
                batch.clear();
                let _ = recycle.try_send(batch);
            }
            ReadMsg::End => {
                while !assembler.drain(&mut flows, FLUSH_FLOWS) {
                    send(&mut flows, false, summary, &source, &label, &mut flow_index)?;
                }
                send(&mut flows, true, summary, &source, &label, &mut flow_index)?;
            }
        }
    }
    Ok(())
}
