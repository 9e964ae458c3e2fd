//! The offline batch job behind `netfm tokenize`: inputs -> capture -> decode -> flow stage
//! -> sink, one capture file after another, with a summary at the end.
//!
//! This module wires stages; it owns no format or protocol logic. Memory is bounded by the
//! flow stage's configuration and the sinks' batch sizes, never by input size.

use crate::capture::{expand_inputs, CaptureReader, Input};
use crate::dataset::burst_columns::MAX_BATCH_TOKENS;
use crate::dataset::netfound_ipc::{IpcFormat, NetfoundIpcWriter, DEFAULT_BATCH_ROWS};
use crate::dataset::output::{describe, rfc3339, OutMode, OutputDir, RunRecord};
use crate::dataset::parquet::{flow_id_of, source_hash, NativeRow, ParquetSink, ParquetSinkConfig};
use crate::decode::{decode_into, DecodeOptions, DecodedPacket, SkipReason, TunnelMode};
use crate::flow::native::{NativeFlowConfig, NativeFlowTable};
use crate::flow::netfound::NetfoundAssembler;
use crate::flow::{FlowAssembler, FlowRecord, FlowStats};
use crate::process::signals;
use crate::summary::{FileWarning, OutOfOrderFile, RunSummary};
use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use netfm_tokenizer::{BurstConfig, InternalNetworks};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

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
    /// What to do with an `out_dir` that holds files.
    pub out_mode: OutMode,
    /// netFound mode: the Arrow IPC format written.
    pub ipc: IpcFormat,
    /// Native mode: close the open parts (under their final names) at least this often,
    /// so a long capture's flows become readable as it goes.
    pub part_seconds: Option<f64>,
    /// The command line, for the manifest.
    pub command: Vec<String>,
    /// Native mode: strip tunnels or not (netFound mode always decodes as netFound does).
    pub tunnels: TunnelMode,
    /// Native mode: the inputs are one capture cut into files (`tcpdump -C/-G`, ring
    /// buffers): read in order of their first timestamps, which must not overlap, with
    /// flows continuing from one file into the next.
    pub continuous: bool,
}

/// Where one file of a `--continuous` capture starts, and what its flows are labelled.
#[derive(Clone, Debug)]
struct FileStart {
    first_ts: u64,
    source: Arc<str>,
    label: Option<Arc<str>>,
}

/// The file of a continuous capture a flow starting at `ts` began in.
fn file_of(starts: &[FileStart], ts: u64) -> usize {
    starts
        .partition_point(|f| f.first_ts <= ts)
        .saturating_sub(1)
}

/// The first frame's timestamp of a capture (None if it has none or cannot be read).
fn first_timestamp(input: &Input) -> Option<u64> {
    let mut reader = CaptureReader::open(input).ok()?;
    reader.next_frame().map(|f| f.ts_ns)
}

impl TokenizeOptions {
    /// What the output folder holds, as its manifest says.
    pub fn dataset_kind(&self) -> &'static str {
        match self.format {
            OutputFormat::Parquet => "netfm-parquet",
            OutputFormat::Netfound => "netfound-arrow",
        }
    }

    /// Every setting that shapes the rows, as recorded in the manifest and in each
    /// Parquet part's metadata (an appended run must have the same).
    pub fn dataset_settings(&self) -> serde_json::Value {
        let nets: Vec<String> = self
            .internal
            .networks()
            .iter()
            .map(|c| format!("{}/{}", c.addr, c.prefix))
            .collect();
        let mut v = serde_json::json!({
            "format": match self.format {
                OutputFormat::Parquet => "parquet",
                OutputFormat::Netfound => "netfound",
            },
            "token_layout": {
                "tcp_options": self.bursts.layout.tcp_options,
                "payload": self.bursts.layout.payload,
            },
            "max_bursts": self.bursts.max_bursts,
            "max_packets_per_burst": self.bursts.max_packets_per_burst,
            "burst_gap_ns": self.bursts.burst_gap_ns,
            "internal_nets": nets,
            "max_flows": self.native.max_flows,
            "label_from_dir": self.label_from_dir,
            "continuous": self.continuous,
            "tunnels": match self.tunnels {
                TunnelMode::Inner => "inner",
                TunnelMode::Outer => "outer",
                TunnelMode::Netfound => "netfound",
            },
            "vocabulary": netfm_models::config::VocabSpec::netfound(),
            "units": {
                "flow_duration": "microseconds",
                "iats": "microseconds",
                "bytes": "IP bytes (sum of IP total lengths)",
            },
        });
        if self.format == OutputFormat::Parquet {
            v["idle_timeout_ns"] = self.native.idle_timeout_ns.into();
            v["active_timeout_ns"] = self.native.active_timeout_ns.into();
            v["tcp_close_timeout_ns"] = self.native.tcp_close_timeout_ns.into();
        } else {
            v["ipc"] = serde_json::to_value(self.ipc).unwrap_or_default();
        }
        v
    }

    /// Settings that shape the files but not the rows (they may differ between runs of
    /// one dataset).
    fn writer_settings(&self) -> serde_json::Value {
        serde_json::json!({
            "part_rows": self.part_rows,
            "zstd_level": self.zstd_level,
            "part_seconds": self.part_seconds,
            "shard": self.shard.tag(),
        })
    }
}

/// Where finished flows go.
enum Sink {
    Parquet(Box<ParquetSink>, PartClock),
    Netfound(NetfoundIpcWriter),
}

/// When a Parquet sink next closes its open parts (`--part-seconds`).
struct PartClock {
    every: Option<Duration>,
    last: Instant,
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
            Sink::Parquet(p, _) => {
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

    /// Closes the open parts if `--part-seconds` has passed since they were last closed.
    fn tick(&mut self) -> anyhow::Result<()> {
        if let Sink::Parquet(p, clock) = self {
            if clock
                .every
                .is_some_and(|every| clock.last.elapsed() >= every)
            {
                p.close_open_parts()?;
                clock.last = Instant::now();
            }
        }
        Ok(())
    }

    /// The files written, with their rows.
    fn finish(self) -> anyhow::Result<Vec<(PathBuf, u64)>> {
        Ok(match self {
            Sink::Parquet(p, _) => p.finish_with_rows()?,
            Sink::Netfound(w) => {
                let rows = w.rows();
                vec![(w.finish()?, rows)]
            }
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

/// The next part sequence number of shard `tag` in a dataset whose parts are `parts`
/// (`proto=x/part-{tag}-{seq}.parquet`): one past the highest.
fn next_part_seq<'a>(parts: impl Iterator<Item = &'a str>, tag: &str) -> u32 {
    let prefix = format!("part-{tag}-");
    parts
        .filter_map(|p| {
            let name = p.rsplit('/').next()?;
            name.strip_prefix(&prefix)?
                .strip_suffix(".parquet")?
                .parse::<u32>()
                .ok()
        })
        .map(|s| s + 1)
        .max()
        .unwrap_or(0)
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
        summary.packets_dropped.insert(k.to_string(), *v);
    }
}

/// Runs `netfm tokenize`. Damaged or unreadable inputs are reported in the summary's
/// warnings, not as errors; output-side failures are errors.
pub fn run_tokenize(opts: &TokenizeOptions) -> anyhow::Result<RunSummary> {
    let started = Instant::now();
    let started_at = SystemTime::now();
    let expanded = expand_inputs(&opts.inputs)?;
    let mut summary = RunSummary::default();
    for (list, to) in [
        (&expanded.skipped, &mut summary.files_ignored),
        (&expanded.duplicates, &mut summary.files_duplicate),
    ] {
        for w in list {
            to.push(FileWarning {
                file: w.path.display().to_string(),
                byte_offset: None,
                message: w.message.clone(),
            });
        }
    }
    for w in &expanded.unreadable {
        summary.files_failed += 1;
        summary.warnings.push(FileWarning {
            file: w.path.display().to_string(),
            byte_offset: None,
            message: w.message.clone(),
        });
    }
    if expanded.inputs.is_empty() {
        bail!(
            "no capture to read: {} hold{} no pcap or pcapng file{}",
            opts.inputs
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            if opts.inputs.len() == 1 { "s" } else { "" },
            match expanded.skipped.len() {
                0 => String::new(),
                n => format!(" ({n} other file{} ignored)", if n == 1 { "" } else { "s" }),
            }
        );
    }
    if opts.label_from_dir {
        if let Some(k) = expanded.labels.iter().position(Option::is_none) {
            let what = match &expanded.inputs[k] {
                Input::Stdin => "standard input has no folder to take a label from".to_string(),
                Input::File(p) => format!(
                    "{} has no label: labels are the first folder level below a directory argument (netFound's <dir>/<label>/<files> layout), and this file is {}",
                    p.display(),
                    if opts.inputs.iter().any(|a| a == p) {
                        "named on the command line"
                    } else {
                        "directly in a directory argument"
                    }
                ),
            };
            bail!("--label-from-dir: {what}");
        }
    }
    let indices: Vec<usize> = (0..expanded.inputs.len()).collect();
    let selected = opts.shard.select(&indices);
    let inputs: Vec<Input> = selected
        .iter()
        .map(|&k| expanded.inputs[k].clone())
        .collect();
    let labels: Vec<Option<Arc<str>>> = selected
        .iter()
        .map(|&k| {
            if opts.label_from_dir {
                expanded.labels[k].as_deref().map(Arc::from)
            } else {
                None
            }
        })
        .collect();
    let (inputs, labels, starts) = if opts.continuous {
        continuous_order(inputs, labels)?
    } else {
        (inputs, labels, Vec::new())
    };
    let settings = opts.dataset_settings();
    let shard_tag = opts.shard.tag();
    let input_paths: Vec<PathBuf> = inputs.iter().map(Input::path).collect();
    let out = OutputDir::prepare(
        &opts.out_dir,
        opts.out_mode,
        &shard_tag,
        &input_paths,
        opts.dataset_kind(),
        &settings,
    )?;

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
    let previous_runs = out.previous.as_ref().map_or(0, |m| m.runs.len());
    let sinks: Vec<Sink> = match opts.format {
        OutputFormat::Parquet => {
            let first_seq = out.previous.as_ref().map_or(0, |m| {
                next_part_seq(m.parts.iter().map(|p| p.path.as_str()), &shard_tag)
            });
            let metadata = vec![
                (
                    "netfm.version".to_string(),
                    env!("CARGO_PKG_VERSION").to_string(),
                ),
                ("netfm.settings".to_string(), settings.to_string()),
                (
                    "netfm.vocab".to_string(),
                    serde_json::to_string(&netfm_models::config::VocabSpec::netfound())?,
                ),
            ];
            (0..PARQUET_WRITERS)
                .map(|w| -> anyhow::Result<Sink> {
                    let mut cfg = ParquetSinkConfig::new(&out.write_dir);
                    cfg.part_rows = opts.part_rows;
                    cfg.zstd_level = opts.zstd_level;
                    cfg.shard_tag = shard_tag.clone();
                    cfg.part_seq = (first_seq + w as u32, PARQUET_WRITERS as u32);
                    cfg.key_value_metadata = metadata.clone();
                    Ok(Sink::Parquet(
                        Box::new(ParquetSink::new(cfg)?),
                        PartClock {
                            every: opts.part_seconds.map(Duration::from_secs_f64),
                            last: Instant::now(),
                        },
                    ))
                })
                .collect::<anyhow::Result<_>>()?
        }
        OutputFormat::Netfound => {
            let run = if previous_runs == 0 {
                String::new()
            } else {
                format!("-{previous_runs:03}")
            };
            let path = out.write_dir.join(format!(
                "netfound-{shard_tag}{run}.{}",
                opts.ipc.extension()
            ));
            vec![Sink::Netfound(NetfoundIpcWriter::with_format(
                &path,
                opts.ipc,
                DEFAULT_BATCH_ROWS,
                MAX_BATCH_TOKENS,
            )?)]
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

    // SIGINT/SIGTERM from here on end the run cleanly (see `process::signals`); the
    // threads started below inherit the blocked signals, the reader unblocks them.
    let stop = signals::InterruptGuard::install();
    // With --part-seconds, a stream's packets and finished flows are handed on at least this
    // often while packets arrive (not only in full batches), so its parts hold what has
    // ended. Which part a flow lands in then depends on timing.
    let flush_every = opts
        .part_seconds
        .map(|s| Duration::from_secs_f64((s / 2.0).clamp(0.05, 1.0)));
    let decode_opts = match opts.format {
        OutputFormat::Parquet => DecodeOptions {
            tunnels: opts.tunnels,
        },
        OutputFormat::Netfound => DecodeOptions::NETFOUND,
    };
    let (pkt_tx, pkt_rx) = sync_channel::<ReadMsg>(CHANNEL_DEPTH);
    let (recycle_tx, recycle_rx) = sync_channel::<PacketBatch>(CHANNEL_DEPTH + 2);
    let hasher = assembler.key_hasher();
    let mut overlap = None;
    let outputs = std::thread::scope(|scope| -> anyhow::Result<Vec<(PathBuf, u64)>> {
        let (inputs, labels) = (&inputs, &labels);
        let first_ts: Vec<u64> = starts.iter().map(|f| f.first_ts).collect();
        let reader = std::thread::Builder::new()
            .name("netfm-read".into())
            .spawn_scoped(scope, move || {
                signals::unblock_here();
                let plan = ReadPlan {
                    inputs,
                    labels,
                    decode_opts,
                    hasher,
                    flush_every,
                    continuous: first_ts,
                };
                read_inputs(plan, pkt_tx, recycle_rx, bar)
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
                .spawn_scoped(scope, move || -> anyhow::Result<Vec<(PathBuf, u64)>> {
                    loop {
                        match flow_rx.recv_timeout(Duration::from_millis(500)) {
                            Ok(msg) => sink.write(
                                &msg.source,
                                msg.label.as_deref(),
                                msg.first_index,
                                &msg.flows,
                            )?,
                            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                        }
                        sink.tick()?;
                    }
                    sink.finish()
                })
                .context("starting a dataset writer thread")?;
            writers.push(writer);
        }
        let flowed = assemble(
            &mut *assembler,
            &mut summary,
            pkt_rx,
            recycle_tx,
            flow_txs,
            flush_every,
            &starts,
        );
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
        overlap = reads.iter().find_map(|r| r.overlap.clone());
        for r in reads {
            summary.add_file(r);
        }
        for (reason, n) in SkipReason::ALL.iter().zip(skipped) {
            summary.skip(reason.name(), n);
        }
        Ok(outputs)
    });
    summary.interrupted_by = signals::interrupted().map(|s| signals::name(s).to_string());
    drop(stop);
    let outputs = outputs?;
    // A failed run's parts go (a staging folder goes with `out`).
    let discard = || {
        for (p, _) in &outputs {
            let _ = std::fs::remove_file(p);
        }
    };
    if let Some(why) = overlap {
        discard();
        bail!("{why}");
    }
    // Files the reader opened (its failures are counted in `files_failed`, as are the
    // files a directory listing could not read, which never reached it).
    let opened = summary.files + expanded.unreadable.len() as u64 - summary.files_failed;
    if opened == 0 && summary.interrupted_by.is_none() {
        discard();
        let why = summary
            .warnings
            .first()
            .map(|w| {
                // Open errors name their file already.
                if w.message.starts_with(&w.file) {
                    format!(": {}", w.message)
                } else {
                    format!(": {}: {}", w.file, w.message)
                }
            })
            .unwrap_or_default();
        bail!("no capture could be read{why}");
    }
    merge_stats(&mut summary, assembler.stats());
    summary.seconds = started.elapsed().as_secs_f64();
    summary.packets_per_second = if summary.seconds > 0.0 {
        summary.packets_read as f64 / summary.seconds
    } else {
        0.0
    };
    summary.output_files = outputs
        .iter()
        .map(|(p, _)| out.final_path(p).display().to_string())
        .collect();
    let run = RunRecord {
        netfm_version: env!("CARGO_PKG_VERSION").to_string(),
        command: opts.command.clone(),
        started: rfc3339(started_at),
        writer: opts.writer_settings(),
        inputs: inputs.iter().map(describe).collect(),
        summary: serde_json::to_value(&summary)?,
        parts: Vec::new(),
    };
    out.commit(&outputs, opts.dataset_kind(), settings, run)?;
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
    /// Packets earlier than the packet before them, and the largest such step back.
    pub out_of_order: u64,
    pub max_step_back_ns: u64,
    /// `--continuous`: this file overlaps the next in time (the run fails).
    pub overlap: Option<String>,
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
        if r.out_of_order > 0 {
            self.packets_out_of_order += r.out_of_order;
            self.out_of_order_files.push(OutOfOrderFile {
                file: r.name.clone(),
                packets: r.out_of_order,
                max_step_back_us: r.max_step_back_ns / 1000,
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
    /// The current file is done (`interrupted`: because the run is stopping).
    End {
        interrupted: bool,
    },
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
/// What the reader stage reads and how.
struct ReadPlan<'a> {
    inputs: &'a [Input],
    /// Each input's label (None without --label-from-dir).
    labels: &'a [Option<Arc<str>>],
    decode_opts: DecodeOptions,
    /// The flow stage's key hash, computed here for it.
    hasher: Option<fn(&DecodedPacket) -> u64>,
    /// On a stream: hand partial batches on at least this often (`--part-seconds`).
    flush_every: Option<Duration>,
    /// `--continuous`: each input's first timestamp, in reading order (else empty).
    continuous: Vec<u64>,
}

/// Orders the files of a `--continuous` capture by their first timestamps (files without
/// a frame go last) and says where each starts.
#[allow(clippy::type_complexity)]
fn continuous_order(
    inputs: Vec<Input>,
    labels: Vec<Option<Arc<str>>>,
) -> anyhow::Result<(Vec<Input>, Vec<Option<Arc<str>>>, Vec<FileStart>)> {
    if inputs.contains(&Input::Stdin) {
        bail!("--continuous orders files by their first timestamps; standard input cannot be one of them");
    }
    let mut files: Vec<(Option<u64>, Input, Option<Arc<str>>)> = inputs
        .into_iter()
        .zip(labels)
        .map(|(i, l)| (first_timestamp(&i), i, l))
        .collect();
    files.sort_by(|a, b| (a.0.unwrap_or(u64::MAX), &a.1).cmp(&(b.0.unwrap_or(u64::MAX), &b.1)));
    let starts = files
        .iter()
        .map(|(ts, i, l)| FileStart {
            first_ts: ts.unwrap_or(u64::MAX),
            source: Arc::from(i.to_string().as_str()),
            label: l.clone(),
        })
        .collect();
    let (inputs, labels) = files.into_iter().map(|(_, i, l)| (i, l)).unzip();
    Ok((inputs, labels, starts))
}

fn read_inputs(
    plan: ReadPlan<'_>,
    tx: SyncSender<ReadMsg>,
    recycled: Receiver<PacketBatch>,
    bar: Option<ProgressBar>,
) -> (Vec<FileRead>, [u64; SkipReason::ALL.len()]) {
    let ReadPlan {
        inputs,
        labels,
        decode_opts,
        hasher,
        flush_every,
        continuous,
    } = plan;
    // A continuous capture's flows go on from file to file: the flow stage hears of the
    // first file's start and of the last file's end only.
    let mut began = false;
    let decode_opts = &decode_opts;
    let mut reads = Vec::with_capacity(inputs.len());
    let mut skipped = [0u64; SkipReason::ALL.len()];
    let mut done_bytes = 0u64;
    'inputs: for (k, (input, label)) in inputs.iter().zip(labels).enumerate() {
        if signals::interrupted().is_some() {
            break;
        }
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
        if (continuous.is_empty() || !began)
            && tx
                .send(ReadMsg::Begin {
                    source: Arc::from(r.name.as_str()),
                    label: label.clone(),
                })
                .is_err()
        {
            break;
        }
        began = true;
        let mut max_ts = 0u64;
        let mut batch = recycled
            .try_recv()
            .unwrap_or_else(|_| PacketBatch::with_capacity(PACKET_BATCH));
        let mut last_offset = 0u64;
        let mut last_ts = 0u64;
        // Only a stream trickles: files are read in full batches.
        let flush_every = flush_every.filter(|_| *input == Input::Stdin);
        let mut last_send = Instant::now();
        while let Some(frame) = reader.next_frame() {
            r.packets_read += 1;
            last_offset = frame.byte_offset + frame.data.len() as u64;
            if frame.ts_ns < last_ts {
                r.out_of_order += 1;
                r.max_step_back_ns = r.max_step_back_ns.max(last_ts - frame.ts_ns);
            }
            last_ts = frame.ts_ns;
            max_ts = max_ts.max(frame.ts_ns);
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
                    if batch.is_full()
                        || flush_every.is_some_and(|every| last_send.elapsed() >= every)
                    {
                        last_send = Instant::now();
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
            if r.packets_read.is_multiple_of(4096) {
                if signals::interrupted().is_some() {
                    break;
                }
                if let Some(b) = &bar {
                    b.set_position(done_bytes + last_offset.min(file_size));
                }
            }
        }
        if batch.len > 0 && tx.send(ReadMsg::Packets(batch)).is_err() {
            break;
        }
        let interrupted = signals::interrupted().is_some();
        let next_start = continuous.get(k + 1).copied().filter(|_| !interrupted);
        if let Some(next) = next_start {
            if r.packets_read > 0 && next <= max_ts && next != u64::MAX {
                r.overlap = Some(format!(
                    "--continuous: {} ends at {} after {} starts at {}: the files overlap in time (is one capture's part missing or named twice?)",
                    r.name,
                    rfc3339(std::time::UNIX_EPOCH + Duration::from_nanos(max_ts)),
                    inputs[k + 1],
                    rfc3339(std::time::UNIX_EPOCH + Duration::from_nanos(next)),
                ));
                reads.push(r);
                break;
            }
        } else if tx.send(ReadMsg::End { interrupted }).is_err() {
            break;
        }
        // A stream cut by the stop request ends mid-record: that is not damage.
        if let (Some(w), false) = (reader.warning(), interrupted) {
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
    flush_every: Option<Duration>,
    continuous: &[FileStart],
) -> anyhow::Result<()> {
    // `--continuous`: flows are written under the file they began in, numbered per file.
    let mut per_file = vec![0u64; continuous.len()];
    let mut last_flush = Instant::now();
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
            let mut msgs = Vec::new();
            if continuous.is_empty() {
                let n = chunk.len() as u64;
                msgs.push(SinkMsg {
                    source: source.clone(),
                    label: label.clone(),
                    first_index: *index,
                    flows: chunk,
                });
                *index += n;
            } else {
                let mut rest = chunk;
                rest.sort_by_key(|f| file_of(continuous, f.first_ts_ns));
                while let Some(first) = rest.first() {
                    let g = file_of(continuous, first.first_ts_ns);
                    let n = rest
                        .iter()
                        .take_while(|f| file_of(continuous, f.first_ts_ns) == g)
                        .count();
                    let tail = rest.split_off(n);
                    let start = &continuous[g];
                    msgs.push(SinkMsg {
                        source: start.source.clone(),
                        label: start.label.clone(),
                        first_index: per_file[g],
                        flows: std::mem::replace(&mut rest, tail),
                    });
                    per_file[g] += n as u64;
                }
            }
            for msg in msgs {
                txs[sent % txs.len()]
                    .send(msg)
                    .map_err(|_| anyhow::anyhow!("dataset writer stopped"))?;
                sent += 1;
            }
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
                    let due = flush_every.is_some_and(|every| last_flush.elapsed() >= every);
                    if due {
                        last_flush = Instant::now();
                    }
                    send(&mut flows, due, summary, &source, &label, &mut flow_index)?;
                }
                batch.clear();
                let _ = recycle.try_send(batch);
            }
            ReadMsg::End { interrupted } => {
                if interrupted {
                    assembler.interrupt();
                }
                while !assembler.drain(&mut flows, FLUSH_FLOWS) {
                    send(&mut flows, false, summary, &source, &label, &mut flow_index)?;
                }
                send(&mut flows, true, summary, &source, &label, &mut flow_index)?;
            }
        }
    }
    Ok(())
}
