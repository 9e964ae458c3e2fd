//! The command line: argument definitions and their translation into pipeline options.
//! Parsing and validation only; the work is done by [`crate::pipeline`].

use crate::dataset::burst_columns::MAX_PACKETS_PER_FLOW;
use crate::dataset::netfound_ipc::IpcFormat;
use crate::dataset::output::OutMode;
use crate::dataset::parquet::{DEFAULT_ZSTD_LEVEL, ZSTD_LEVELS};
use crate::decode::TunnelMode;
use crate::flow::native::NativeFlowConfig;
use crate::pipeline::{OutputFormat, Shard, TokenizeOptions};
use crate::runtime::{Device, RuntimeOptions};
use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};
use netfm_tokenizer::{BurstConfig, InternalNetworks, TokenLayout};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "netfm",
    version,
    about = "Packets to predictions: netFound-compatible tokenization of captures, fast"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Tokenize capture files (pcap, pcapng, .gz, directories, `-` for stdin) into a flow dataset.
    Tokenize(TokenizeArgs),
    /// Tokenize the bundled captures (datasets/pcaps) and show what came out.
    Demo(DemoArgs),
    /// Check ONNX Runtime: which library, its providers, and whether sessions run on CPU (and CUDA).
    Doctor(DoctorArgs),
    /// Build a model's ONNX graphs (inference, train_step, eval) and its checkpoint.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Pretrain an encoder on tokenized flows with netFound's objectives (masked tokens,
    /// swapped bursts, masked burst metadata, direction).
    Pretrain(Box<PretrainArgs>),
    /// Flow embeddings and anomaly scores: one Parquet row per flow.
    Embed(EmbedArgs),
    /// Fine-tune a flow classifier on labelled flows (a new head on a pretrained encoder).
    Finetune(Box<FinetuneArgs>),
    /// Flow classes from a fine-tuned model: one Parquet row per flow with every class's probability.
    Predict(PredictArgs),
    /// A model as one ONNX file: the inference graph with its weights, config and class names.
    Export(ExportArgs),
    /// A run's loss and validation curves (and confusion matrix) as PNG and SVG.
    Plot(PlotArgs),
    /// Link loads from captures: bits and packets per second per interval, by direction,
    /// subnet pair or file, as a long-format table `forecast` reads.
    Loads(LoadsArgs),
    /// Link-load forecasting: series, backtests, training and forecasts.
    #[command(subcommand)]
    Forecast(ForecastCommand),
}

/// `netfm loads`.
#[derive(Args, Debug, Clone)]
pub struct LoadsArgs {
    /// Capture files or folders (pcap, pcapng, .gz).
    #[arg(required = true)]
    pub captures: Vec<PathBuf>,
    /// The interval (e.g. 1m, 5m).
    #[arg(long, default_value = "5m")]
    pub interval: String,
    /// How packets group into series: direction (in/out/internal/external, relative to
    /// --local), subnet-pair or file.
    #[arg(long, default_value = "direction")]
    pub by: String,
    /// The local networks for --by direction (comma-separated) [default: the private
    /// ranges 10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7, fe80::/10].
    #[arg(long, value_delimiter = ',')]
    pub local: Vec<String>,
    /// --by subnet-pair: the IPv4 prefix length of a subnet.
    #[arg(long, default_value_t = 24)]
    pub prefix4: u8,
    /// --by subnet-pair: the IPv6 prefix length of a subnet.
    #[arg(long, default_value_t = 64)]
    pub prefix6: u8,
    /// At most this many series; further ones are summed into `other` (counted).
    #[arg(long, default_value_t = 10_000)]
    pub max_series: usize,
    /// At most this many intervals from the first packet to the last (a capture spanning
    /// more is refused: a longer --interval fits it).
    #[arg(long, default_value_t = 100_000)]
    pub max_intervals: usize,
    /// The table to write: .csv or .parquet (`timestamp,link,value,packets`: bit/s and
    /// packets/s).
    #[arg(long, short)]
    pub out: PathBuf,
    /// Replace --out if it exists.
    #[arg(long)]
    pub overwrite: bool,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `netfm forecast ...`.
#[derive(Subcommand, Debug, Clone)]
pub enum ForecastCommand {
    /// Read link-load series (tables, counters, Prometheus, or the bundled Abilene data) onto
    /// a time grid and write them as long-format CSV or Parquet.
    Series(ForecastSeriesArgs),
    /// Rolling-origin backtest of netfm's forecaster and the baselines: MAE, RMSE, sMAPE,
    /// MASE and 80% interval coverage per model and horizon (`--dataset abilene`: the whole
    /// Abilene benchmark, failure scenario included).
    Backtest(Box<ForecastBacktestArgs>),
    /// Train netfm's forecaster on series and save it (an ONNX model and its settings).
    Train(Box<ForecastTrainArgs>),
    /// Forecast the next intervals of every series, with quantiles, from a trained model (or
    /// a baseline fitted on the spot).
    Predict(Box<ForecastPredictArgs>),
}

/// `netfm forecast train`.
#[derive(Args, Debug, Clone)]
pub struct ForecastTrainArgs {
    #[command(flatten)]
    pub input: SeriesInputArgs,
    /// Train on this much of each series' start only [default: all of it].
    #[arg(long, value_name = "DURATION")]
    pub train: Option<String>,
    #[command(flatten)]
    pub model: ForecasterArgs,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The model folder to write.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Replace what --out holds.
    #[arg(long)]
    pub overwrite: bool,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// `netfm forecast predict`.
#[derive(Args, Debug, Clone)]
pub struct ForecastPredictArgs {
    #[command(flatten)]
    pub input: SeriesInputArgs,
    /// A `forecast train` model folder.
    #[arg(long, required_unless_present = "baseline")]
    pub model: Option<PathBuf>,
    /// Instead of a model: a baseline fitted on each series' history (naive,
    /// seasonal_naive, ets, mstl, incremental).
    #[arg(long, conflicts_with = "model")]
    pub baseline: Option<String>,
    /// How far ahead (e.g. 1h, 30m).
    #[arg(long, default_value = "1h")]
    pub horizon: String,
    /// The quantiles (comma-separated, each in (0, 1)).
    #[arg(long, default_value = "0.1,0.5,0.9", value_delimiter = ',')]
    pub quantiles: Vec<f64>,
    /// The file to write: .csv, .parquet or .json.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Draw the history, forecast and intervals of one series (.png or .svg).
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// The series --plot draws [default: the first].
    #[arg(long)]
    pub plot_series: Option<String>,
    /// A known level shift (a failure, a reroute) at this time (unix seconds or RFC 3339):
    /// netfm's model renormalizes the history before it to the level since.
    #[arg(long, value_name = "TIME")]
    pub event: Option<String>,
    /// Replace --out (and --plot) if they exist.
    #[arg(long)]
    pub overwrite: bool,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// Where series come from; every `forecast` subcommand flattens this.
#[derive(Args, Debug, Clone)]
pub struct SeriesInputArgs {
    /// A bundled dataset instead of --input: `abilene` (two measured weeks of 5-minute
    /// traffic matrices routed into the loads of its 30 links).
    #[arg(long, conflicts_with = "input")]
    pub dataset: Option<String>,
    /// Abilene: the week (1 = AbileneTM, 2 = AbileneTM2) [default: both where a command
    /// takes several, else 1].
    #[arg(long)]
    pub week: Option<usize>,
    /// Abilene: the folder holding its files [default: the bundled datasets/abilene].
    #[arg(long, value_name = "DIR")]
    pub abilene_dir: Option<PathBuf>,
    /// Long-format tables `timestamp,link,value` (.csv or .parquet) or Prometheus
    /// `/api/v1/query_range` results (.json).
    #[arg(long, num_args = 1..)]
    pub input: Vec<PathBuf>,
    /// The values are raw interface counters of this many bits (32 or 64), e.g. SNMP
    /// ifHCInOctets or node_exporter's *_bytes_total: rates come from their differences,
    /// wraps and resets are detected and counted.
    #[arg(long, value_name = "BITS")]
    pub counters: Option<u32>,
    /// The series' interval (e.g. 5m, 300s, 1h).
    #[arg(long, default_value = "5m")]
    pub interval: String,
    /// Multiply every rate (e.g. 8 for octet counters in bit/s).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Counters: a gap between samples longer than this is missing data [default: 1.5x the
    /// median sample spacing].
    #[arg(long, value_name = "DURATION")]
    pub max_gap: Option<String>,
}

/// `netfm forecast series`.
#[derive(Args, Debug, Clone)]
pub struct ForecastSeriesArgs {
    #[command(flatten)]
    pub input: SeriesInputArgs,
    /// Abilene: the busiest link and its reverse fail at the start of the last day.
    #[arg(long)]
    pub failure: bool,
    /// The file to write: .csv or .parquet.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Replace --out if it exists.
    #[arg(long)]
    pub overwrite: bool,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// netfm's forecaster: its shape and training (`forecast train` and `forecast backtest`).
#[derive(Args, Debug, Clone)]
pub struct ForecasterArgs {
    /// History intervals the model reads.
    #[arg(long, default_value_t = 144)]
    pub context: usize,
    /// Intervals per patch (the context must be a multiple).
    #[arg(long, default_value_t = 12)]
    pub patch: usize,
    /// Steps the model forecasts (the longest horizon it supports).
    #[arg(long, default_value_t = 12)]
    pub model_horizon: usize,
    #[arg(long, default_value_t = 64)]
    pub d_model: usize,
    #[arg(long, default_value_t = 2)]
    pub layers: usize,
    #[arg(long, default_value_t = 4)]
    pub heads: usize,
    /// Train steps.
    #[arg(long, default_value_t = 600)]
    pub steps: u64,
    /// Windows per step.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Peak learning rate (warmup, then cosine decay).
    #[arg(long, default_value_t = 2e-3)]
    pub lr: f64,
    /// Backtest: train this many models (seeds SEED, SEED+1, …) and average their quantiles.
    #[arg(long, default_value_t = 1)]
    pub ensemble: usize,
    /// Calendar features: `none`, `day` (time of day), `week` (and day of week) or `auto`
    /// (`week` when the training data spans two weeks, else `day`). On Abilene's five
    /// training days, `none` forecasts best (benches/README.md).
    #[arg(long, default_value = "none")]
    pub calendar: String,
}

/// `netfm forecast backtest`.
#[derive(Args, Debug, Clone)]
pub struct ForecastBacktestArgs {
    #[command(flatten)]
    pub input: SeriesInputArgs,
    /// Training span at the start of each series [default: 5 days for Abilene, else 70% of
    /// the span].
    #[arg(long, value_name = "DURATION")]
    pub train: Option<String>,
    /// A forecast origin every this long through the test part.
    #[arg(long, default_value = "1h")]
    pub origin_every: String,
    /// The horizons scored (comma-separated); the longest is the forecast length.
    #[arg(long, default_value = "5m,1h", value_delimiter = ',')]
    pub horizons: Vec<String>,
    /// The models (comma-separated) [default: every baseline and netfm].
    #[arg(long, value_delimiter = ',')]
    pub models: Vec<String>,
    /// Abilene: also run the failure scenario (the busiest link and its reverse fail at the
    /// start of the last day) [default: on with --dataset abilene and no --models].
    #[arg(long)]
    pub failure: Option<bool>,
    /// Write one JSON record per model, horizon and week (and the failure scenario's) to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Seed of netfm's model.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[command(flatten)]
    pub model: ForecasterArgs,
    /// Threads for the baselines.
    #[arg(long, default_value_t = 2)]
    pub jobs: usize,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// `netfm plot`.
#[derive(Args, Debug, Clone)]
pub struct PlotArgs {
    /// A `pretrain` or `finetune` run folder.
    pub run_dir: PathBuf,
    /// Where the charts go [default: RUN_DIR/plots].
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `netfm predict`.
#[derive(Args, Debug, Clone)]
pub struct PredictArgs {
    /// The fine-tuned model: a `finetune` run folder.
    #[arg(long)]
    pub model: PathBuf,
    /// Tokenized flow datasets (netfm Parquet or netFound Arrow IPC): folders or files.
    #[arg(long, num_args = 1.., required = true)]
    pub data: Vec<PathBuf>,
    /// The Parquet file to write.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Flows per batch through the model.
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    /// Replace --out if it exists.
    #[arg(long)]
    pub overwrite: bool,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// `netfm export`.
#[derive(Args, Debug, Clone)]
pub struct ExportArgs {
    /// The model: a `pretrain` or `finetune` run folder, or a checkpoint file.
    #[arg(long)]
    pub model: PathBuf,
    /// The ONNX file to write.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Replace --out if it exists.
    #[arg(long)]
    pub overwrite: bool,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `netfm finetune`.
#[derive(Args, Debug, Clone)]
pub struct FinetuneArgs {
    /// The pretrained model: a `pretrain` run folder or a checkpoint file.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Tokenized flow datasets (netfm Parquet or netFound Arrow IPC): folders or files.
    #[arg(long, num_args = 1.., required = true)]
    pub data: Vec<PathBuf>,
    /// `dir-names` (the dataset's labels column, from `tokenize --label-from-dir`) or a CSV file.
    #[arg(long)]
    pub labels: String,
    /// The CSV's label column.
    #[arg(long, default_value = "label")]
    pub label_column: String,
    /// Labels whose flows are left out (comma-separated), e.g. Other,Unknown,Guessed.
    #[arg(long, value_delimiter = ',')]
    pub drop_labels: Vec<String>,
    /// A file naming the capture files held out for evaluation (one per line).
    #[arg(long)]
    pub split_file: Option<PathBuf>,
    /// Without --split-file: the share of flows held out, by capture file.
    #[arg(long, default_value_t = 0.2)]
    pub val_fraction: f64,
    /// Held-out flows evaluated at most.
    #[arg(long, default_value_t = 100_000)]
    pub eval_flows: usize,
    /// The run folder.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Replace what --out holds.
    #[arg(long)]
    pub overwrite: bool,
    /// Train only the classification head; the encoder keeps its pretrained weights.
    #[arg(long)]
    pub freeze_encoder: bool,
    /// Start from random weights (the --model's shape, or --size).
    #[arg(long)]
    pub from_scratch: bool,
    /// Model size with --from-scratch and no --model.
    #[arg(long, default_value = "small")]
    pub size: String,
    /// Train steps.
    #[arg(long, required_unless_present = "epochs", conflicts_with = "epochs")]
    pub steps: Option<u64>,
    /// Passes over the labelled training flows.
    #[arg(long)]
    pub epochs: Option<u64>,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Peak learning rate (10% warmup, cosine decay).
    #[arg(long, default_value_t = 3e-4)]
    pub lr: f64,
    #[arg(long, default_value_t = 0.01)]
    pub weight_decay: f64,
    /// Seed of the head's weights, the split and the shuffling.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Evaluate on the held-out flows every N steps (and at the end).
    #[arg(long, default_value_t = 200)]
    pub eval_every: u64,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// `netfm embed`.
#[derive(Args, Debug, Clone)]
pub struct EmbedArgs {
    /// The model: a `pretrain`/`finetune` run folder or a checkpoint file.
    #[arg(long)]
    pub model: PathBuf,
    /// Tokenized flow datasets (netfm Parquet or netFound Arrow IPC): folders or files.
    #[arg(long, num_args = 1.., required = true)]
    pub data: Vec<PathBuf>,
    /// The Parquet file to write.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Flows per batch through the model.
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    /// Embeddings only: skip the masked pass that computes anomaly_score (left null).
    #[arg(long)]
    pub no_score: bool,
    /// Which flow embedding to write [default: `netfound` for netFound models, `cls` for
    /// netfm's own].
    #[arg(long, value_enum)]
    pub embedding: Option<EmbeddingArg>,
    /// netFound models: pad every batch to netFound's canonical 12 bursts x 73 slots (a
    /// flow's outputs then never depend on its batch), or to the batch's own longest flow
    /// and burst, as netFound's collator does (its `netfound` embedding and swap logits then
    /// change with the other flows of the batch).
    #[arg(long, value_enum, default_value_t = PaddingArg::Canonical)]
    pub padding: PaddingArg,
    /// Replace --out if it exists.
    #[arg(long)]
    pub overwrite: bool,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EmbeddingArg {
    /// netFound's own (what its inference script writes): the mean of the last hidden state
    /// over every slot of the padded grid, padding included (netFound models only).
    Netfound,
    /// The mean of the last hidden state over the flow's real tokens, CLS slots included
    /// (netFound models only; independent of padding).
    Tokens,
    /// The mean of the final CLS states of the flow's bursts (independent of padding).
    Cls,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PaddingArg {
    Canonical,
    Batch,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LayoutArg {
    /// The batch's bursts packed into rows: the cost follows the real tokens.
    Packed,
    /// A [flows, bursts, tokens] grid padded to the longest flow and burst (for comparison).
    Dense,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ScheduleArg {
    Cosine,
    Linear,
    Constant,
}

/// `netfm pretrain`.
#[derive(Args, Debug, Clone)]
pub struct PretrainArgs {
    /// Tokenized flow datasets (netfm Parquet or netFound Arrow IPC): folders or files.
    #[arg(long, num_args = 1.., required_unless_present = "resume", conflicts_with = "resume")]
    pub data: Vec<PathBuf>,
    /// The run folder (settings, metrics, checkpoints).
    #[arg(
        long,
        short,
        required_unless_present = "resume",
        conflicts_with = "resume"
    )]
    pub out: Option<PathBuf>,
    /// Continue the run in this folder where its last checkpoint stopped, with its own
    /// settings (giving another setting with it is an error; --device and --threads may differ).
    #[arg(long, value_name = "RUN_DIR", conflicts_with_all = [
        "size", "max_bursts", "burst_len", "steps", "epochs", "batch_size", "lr",
        "warmup_steps", "schedule", "weight_decay", "loss_weights", "mlm_prob", "swap_prob",
        "meta_mask_prob", "seed", "shuffle_buffer", "bucket_batches", "layout",
        "val_fraction", "val_flows", "eval_every", "checkpoint_every",
    ])]
    pub resume: Option<PathBuf>,
    /// Replace what --out holds.
    #[arg(long, conflicts_with = "resume")]
    pub overwrite: bool,
    /// Model size: tiny, small, netfound-small, base.
    #[arg(long, default_value = "small")]
    pub size: String,
    /// Bursts per flow the model reads (default: the size's).
    #[arg(long)]
    pub max_bursts: Option<usize>,
    /// Tokens per burst including CLS (default: the size's).
    #[arg(long)]
    pub burst_len: Option<usize>,
    /// Train steps (updates).
    #[arg(long, required_unless_present_any = ["epochs", "resume"], conflicts_with = "epochs")]
    pub steps: Option<u64>,
    /// Passes over the training flows (the steps follow from the data's size).
    #[arg(long)]
    pub epochs: Option<u64>,
    /// Flows per batch.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 5e-4)]
    pub lr: f64,
    /// Linear warmup steps [default: 5% of the steps].
    #[arg(long)]
    pub warmup_steps: Option<u64>,
    /// Decay after warmup.
    #[arg(long, value_enum, default_value_t = ScheduleArg::Cosine)]
    pub schedule: ScheduleArg,
    /// AdamW's decoupled weight decay.
    #[arg(long, default_value_t = 0.01)]
    pub weight_decay: f64,
    /// Loss weights: masked tokens, swapped bursts, burst metadata, direction.
    #[arg(long, value_delimiter = ',', num_args = 4, default_values_t = [1.0, 1.0, 1.0, 1.0])]
    pub loss_weights: Vec<f64>,
    /// Share of field tokens selected for the masked-token objective (netFound: 0.3).
    #[arg(long, default_value_t = 0.3)]
    pub mlm_prob: f64,
    /// Share of bursts swapped in from another flow.
    #[arg(long, default_value_t = 0.1)]
    pub swap_prob: f64,
    /// Share of bursts whose metadata is masked (and regressed).
    #[arg(long, default_value_t = 0.15)]
    pub meta_mask_prob: f64,
    /// Seed of the weights, the split, the shuffling and the corruptions.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Flows held in the shuffle buffer.
    #[arg(long, default_value_t = 4096)]
    pub shuffle_buffer: usize,
    /// Batches per length-sorted pool (1: random batches, no length bucketing).
    #[arg(long, default_value_t = 16)]
    pub bucket_batches: usize,
    /// How batches are laid out in the graphs.
    #[arg(long, value_enum, default_value_t = LayoutArg::Packed)]
    pub layout: LayoutArg,
    /// Held-out data for validation instead of a share of --data's capture files.
    #[arg(long, num_args = 1.., conflicts_with = "resume")]
    pub val_data: Vec<PathBuf>,
    /// Share of --data's flows held out for validation, by capture file (0: no validation).
    #[arg(long, default_value_t = 0.1)]
    pub val_fraction: f64,
    /// Validation flows read (the first ones of the held-out files).
    #[arg(long, default_value_t = 1024)]
    pub val_flows: usize,
    /// Evaluate every N steps (and at the end).
    #[arg(long, default_value_t = 100)]
    pub eval_every: u64,
    /// Write a checkpoint every N steps (and at the end, and on SIGINT/SIGTERM).
    #[arg(long, default_value_t = 500)]
    pub checkpoint_every: u64,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

#[derive(Subcommand, Debug)]
pub enum ModelCommand {
    /// Write inference.onnx, train_step.onnx, eval.onnx, config.json and (for a new model)
    /// checkpoint.safetensors; from a checkpoint, the inference graph carries its weights.
    Export(ModelExportArgs),
    /// Import a netFound checkpoint (Hugging Face folder: config.json + model.safetensors,
    /// pretrained or fine-tuned) into a netfm model folder that embed, finetune, predict
    /// and export use.
    Import(ModelImportArgs),
}

#[derive(Args, Debug, Clone)]
pub struct ModelImportArgs {
    /// The netFound checkpoint folder (as `save_pretrained` writes it; downloaded from
    /// Hugging Face outside netfm).
    #[arg(long, value_name = "DIR")]
    pub netfound: PathBuf,
    /// The netfm model folder to write.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Replace what --out holds (a folder holding anything is refused otherwise).
    #[arg(long)]
    pub overwrite: bool,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DTypeArg {
    F32,
    F64,
}

#[derive(Args, Debug, Clone)]
pub struct ModelExportArgs {
    /// Output directory.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Named size: tiny, small, netfound-small, base [default: small; not with --checkpoint].
    #[arg(long)]
    pub size: Option<String>,
    /// Export this checkpoint's model and weights instead of a new one.
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,
    /// Flow classes of the classification head (0: pretraining objectives only); with
    /// --checkpoint, a new seeded head of this many classes on the checkpoint's encoder.
    #[arg(long, default_value_t = 0)]
    pub classes: usize,
    /// Bursts per flow (default: the size's, 12 except tiny).
    #[arg(long)]
    pub max_bursts: Option<usize>,
    /// Tokens per burst including its CLS token (default: the size's, 109 except tiny).
    #[arg(long)]
    pub burst_len: Option<usize>,
    /// Seed of the initial weights.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Replace what --out holds (a folder holding anything is refused otherwise).
    #[arg(long)]
    pub overwrite: bool,
    /// Floating-point type of the graphs [default: f32; not with --checkpoint].
    #[arg(long, value_enum)]
    pub dtype: Option<DTypeArg>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// netfm's Parquet dataset: one row per flow with 5-tuple, times, counts and bursts (zstd).
    Parquet,
    /// netFound's Arrow IPC stream with its exact schema and flow semantics.
    Netfound,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum IpcArg {
    /// The IPC stream format netFound writes (`.arrows`; `pyarrow.ipc.open_stream`).
    Stream,
    /// The IPC file format (`.arrow`, Feather v2: `pyarrow.ipc.open_file`, `pandas.read_feather`, Polars, DuckDB).
    File,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TunnelsArg {
    /// Strip tunnels (GRE, ERSPAN, IP-in-IP, VXLAN, Geneve, GTP-U, ...): flows are keyed and tokenized by the innermost IP packet.
    Inner,
    /// Leave tunnels alone: flows are keyed by the outer header (a VXLAN packet is UDP to port 4789).
    Outer,
}

#[derive(Args, Debug, Clone)]
pub struct TokenizeArgs {
    /// Capture files, directories (all captures below) or `-` (pcap stream on stdin).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Output directory.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Output format and flow semantics.
    #[arg(long, value_enum, default_value_t = FormatArg::Parquet)]
    pub format: FormatArg,
    /// Native mode: key and tokenize tunnelled packets by their innermost or their outer IP packet
    /// (netFound mode decodes as netFound does).
    #[arg(long, value_enum, default_value_t = TunnelsArg::Inner)]
    pub tunnels: TunnelsArg,
    /// Also tokenize the 40 raw TCP option bytes (20 tokens per TCP packet), like netFound's --tcp_options.
    #[arg(long)]
    pub tcp_options: bool,
    /// Leave out the 6 payload tokens per packet.
    #[arg(long)]
    pub no_payload: bool,
    /// Bursts kept per flow (times --max-packets-per-burst: at most 1,048,576 packets).
    #[arg(long, default_value_t = 12)]
    pub max_bursts: usize,
    /// Packets kept per burst (times --max-bursts: at most 1,048,576 packets).
    #[arg(long, default_value_t = 6)]
    pub max_packets_per_burst: usize,
    /// A same-direction gap longer than this (milliseconds) starts a new burst.
    #[arg(long, default_value_t = 10.0)]
    pub burst_gap_ms: f64,
    /// Internal networks (CIDR, repeatable): a flow's forward side is its internal endpoint.
    /// Default: netFound's 127.0.0.0/8 and 169.231.0.0/16.
    #[arg(long = "internal-net", value_name = "CIDR")]
    pub internal_nets: Vec<String>,
    /// Native mode: a flow idle this long (seconds) ends.
    #[arg(long, default_value_t = 120.0)]
    pub idle_timeout: f64,
    /// Native mode: a flow open this long (seconds) is cut.
    #[arg(long, default_value_t = 1800.0)]
    pub active_timeout: f64,
    /// Most flows held at once (memory bound, both modes); beyond it the least recently active flow is written early and counted.
    #[arg(long, default_value_t = 262_144)]
    pub max_flows: usize,
    /// Process only the i-th of N deterministic slices of the input file list (e.g. 0/4).
    #[arg(long, value_parser = parse_shard)]
    pub shard: Option<Shard>,
    /// Parquet: flows per part file.
    #[arg(long, default_value_t = 1_000_000)]
    pub part_rows: usize,
    /// Parquet: zstd level, 1 (fastest, largest parts) to 22 (slowest, smallest).
    #[arg(long, default_value_t = DEFAULT_ZSTD_LEVEL)]
    pub zstd_level: i32,
    /// Label each flow with its capture file's parent directory name (netFound's fine-tuning layout).
    #[arg(long)]
    pub label_from_dir: bool,
    /// Exit non-zero if any input was damaged, unreadable or had frames that could not be decoded.
    #[arg(long)]
    pub strict: bool,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    /// Replace what --out holds, once this run has succeeded (a folder holding anything is
    /// refused otherwise).
    #[arg(long, conflicts_with = "append")]
    pub overwrite: bool,
    /// Add to the dataset in --out, which must have been written with the same settings
    /// (checked from its manifest).
    #[arg(long)]
    pub append: bool,
    /// netFound mode: the Arrow IPC format to write.
    #[arg(long, value_enum, default_value_t = IpcArg::Stream)]
    pub ipc: IpcArg,
    /// Native mode: close the open parts at least this often (seconds), so a long-running
    /// capture's flows become readable as it goes (parts are also closed at --part-rows).
    #[arg(long, value_name = "SECONDS")]
    pub part_seconds: Option<f64>,
    /// Native mode: the inputs are one capture cut into files (tcpdump -C/-G, ring
    /// buffers): read in order of their first timestamps (which must not overlap), with
    /// flows continuing from file to file. Not with --shard.
    #[arg(long)]
    pub continuous: bool,
}

#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Where the demo dataset goes.
    #[arg(long, default_value = "target/netfm-demo")]
    pub out: PathBuf,
}

/// Where and how models run; every subcommand that runs a model flattens this.
#[derive(Args, Debug, Clone)]
pub struct RuntimeArgs {
    /// The ONNX Runtime library to load (libonnxruntime.so.1.31.1); overrides ORT_DYLIB_PATH
    /// and the cached copy.
    #[arg(long, value_name = "PATH")]
    pub ort_lib: Option<PathBuf>,
    /// Where models run: cpu, cuda or cuda:N (CUDA needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    pub device: Device,
    /// Intra-op threads per session [default: all cores].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

impl RuntimeArgs {
    /// Validates the flags and builds the runtime options.
    pub fn to_options(&self) -> anyhow::Result<RuntimeOptions> {
        if self.threads == Some(0) {
            bail!("--threads must be at least 1");
        }
        Ok(RuntimeOptions {
            ort_lib: self.ort_lib.clone(),
            device: self.device,
            intra_threads: self.threads,
            ..RuntimeOptions::default()
        })
    }
}

#[derive(Args, Debug, Clone)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

fn parse_shard(s: &str) -> Result<Shard, String> {
    let (i, n) = s
        .split_once('/')
        .ok_or_else(|| format!("shard `{s}`: expected I/N, e.g. 0/4"))?;
    let index: usize = i
        .trim()
        .parse()
        .map_err(|_| format!("shard `{s}`: `{i}` is not a number"))?;
    let count: usize = n
        .trim()
        .parse()
        .map_err(|_| format!("shard `{s}`: `{n}` is not a number"))?;
    if count == 0 || index >= count {
        return Err(format!("shard `{s}`: need 0 <= I < N"));
    }
    Ok(Shard { index, count })
}

fn seconds_to_ns(what: &str, s: f64) -> anyhow::Result<u64> {
    if !(s.is_finite() && s > 0.0 && s < 1e9) {
        bail!("--{what} must be a positive number of seconds, got {s}");
    }
    Ok((s * 1e9).round() as u64)
}

impl TokenizeArgs {
    /// Validates the flags and builds the pipeline options.
    pub fn to_options(&self) -> anyhow::Result<TokenizeOptions> {
        if self.max_bursts == 0 || self.max_packets_per_burst == 0 {
            bail!("--max-bursts and --max-packets-per-burst must be at least 1");
        }
        if self
            .max_bursts
            .checked_mul(self.max_packets_per_burst)
            .is_none_or(|n| n > MAX_PACKETS_PER_FLOW)
        {
            bail!(
                "--max-bursts x --max-packets-per-burst must be at most {MAX_PACKETS_PER_FLOW} packets per flow, got {} x {}",
                self.max_bursts,
                self.max_packets_per_burst
            );
        }
        if self.max_flows == 0 {
            bail!("--max-flows must be at least 1");
        }
        if self.part_rows == 0 {
            bail!("--part-rows must be at least 1");
        }
        if !ZSTD_LEVELS.contains(&self.zstd_level) {
            bail!(
                "--zstd-level must be {} to {}, got {}",
                ZSTD_LEVELS.start(),
                ZSTD_LEVELS.end(),
                self.zstd_level
            );
        }
        if self.format == FormatArg::Netfound && self.tunnels != TunnelsArg::Inner {
            bail!("--tunnels: netFound mode decodes as netFound does; --tunnels applies to native mode");
        }
        let burst_gap_ns = seconds_to_ns("burst-gap-ms", self.burst_gap_ms / 1e3)?;
        let bursts = BurstConfig {
            max_bursts: self.max_bursts,
            max_packets_per_burst: self.max_packets_per_burst,
            burst_gap_ns,
            layout: TokenLayout {
                tcp_options: self.tcp_options,
                payload: !self.no_payload,
            },
        };
        let internal = if self.internal_nets.is_empty() {
            InternalNetworks::netfound_default()
        } else {
            InternalNetworks::parse(&self.internal_nets).context("--internal-net")?
        };
        let native = NativeFlowConfig {
            idle_timeout_ns: seconds_to_ns("idle-timeout", self.idle_timeout)?,
            active_timeout_ns: seconds_to_ns("active-timeout", self.active_timeout)?,
            max_flows: self.max_flows,
            bursts,
            internal: internal.clone(),
            ..NativeFlowConfig::default()
        };
        if let Some(s) = self.part_seconds {
            seconds_to_ns("part-seconds", s)?;
            if self.format == FormatArg::Netfound {
                bail!("--part-seconds applies to the native Parquet dataset; netFound mode writes one file");
            }
        }
        if self.continuous && self.shard.is_some_and(|s| s.count > 1) {
            bail!("--continuous reads the inputs as one capture; it cannot be combined with --shard, which splits them");
        }
        if self.continuous && self.format == FormatArg::Netfound {
            bail!("--continuous applies to native mode; netFound's flows never span files");
        }
        if self.ipc != IpcArg::Stream && self.format != FormatArg::Netfound {
            bail!("--ipc applies to --format netfound; the native dataset is Parquet");
        }
        Ok(TokenizeOptions {
            inputs: self.inputs.clone(),
            out_dir: self.out.clone(),
            format: match self.format {
                FormatArg::Parquet => OutputFormat::Parquet,
                FormatArg::Netfound => OutputFormat::Netfound,
            },
            bursts,
            internal,
            native,
            shard: self.shard.unwrap_or(Shard { index: 0, count: 1 }),
            part_rows: self.part_rows,
            zstd_level: self.zstd_level,
            label_from_dir: self.label_from_dir,
            progress: !self.quiet && !self.json,
            out_mode: if self.overwrite {
                OutMode::Overwrite
            } else if self.append {
                OutMode::Append
            } else {
                OutMode::New
            },
            ipc: match self.ipc {
                IpcArg::Stream => IpcFormat::Stream,
                IpcArg::File => IpcFormat::File,
            },
            part_seconds: self.part_seconds,
            command: std::env::args().collect(),
            continuous: self.continuous,
            tunnels: match self.tunnels {
                TunnelsArg::Inner => TunnelMode::Inner,
                TunnelsArg::Outer => TunnelMode::Outer,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_parsing() {
        assert_eq!(parse_shard("1/4"), Ok(Shard { index: 1, count: 4 }));
        assert!(parse_shard("4/4").is_err());
        assert!(parse_shard("0/0").is_err());
        assert!(parse_shard("x/2").is_err());
        assert!(parse_shard("3").is_err());
    }

    #[test]
    fn bad_flags_are_errors() {
        let args = |extra: &[&str]| {
            let mut v = vec!["netfm", "tokenize", "a.pcap", "--out", "o"];
            v.extend_from_slice(extra);
            match Cli::try_parse_from(v).expect("parses").command {
                Command::Tokenize(t) => t,
                _ => unreachable!(),
            }
        };
        assert!(args(&["--idle-timeout", "0"]).to_options().is_err());
        assert!(args(&["--burst-gap-ms=-1"]).to_options().is_err());
        assert!(args(&["--internal-net", "10.0.0.0/33"])
            .to_options()
            .is_err());
        assert!(args(&["--max-bursts", "0"]).to_options().is_err());
        for bad in ["0", "23", "-5"] {
            let err = args(&[&format!("--zstd-level={bad}")])
                .to_options()
                .unwrap_err();
            assert!(
                err.to_string().contains("--zstd-level must be 1 to 22"),
                "{err}"
            );
        }
        assert_eq!(args(&[]).to_options().expect("valid").zstd_level, 3);
        assert_eq!(
            args(&["--zstd-level", "19"])
                .to_options()
                .expect("valid")
                .zstd_level,
            19
        );
        // Flows too long for one Arrow record batch are refused up front.
        let err = args(&["--max-bursts", "2000", "--max-packets-per-burst", "1000"])
            .to_options()
            .unwrap_err();
        assert!(err.to_string().contains("2000 x 1000"), "{err}");
        assert!(
            args(&["--max-bursts", "1024", "--max-packets-per-burst", "1024"])
                .to_options()
                .is_ok()
        );
        let ok = args(&["--tcp-options", "--internal-net", "10.0.0.0/8"])
            .to_options()
            .expect("valid");
        assert!(ok.bursts.layout.tcp_options);
        assert_eq!(ok.bursts.burst_gap_ns, 10_000_000);
        assert_eq!(ok.tunnels, TunnelMode::Inner);
        let outer = args(&["--tunnels", "outer"]).to_options().expect("valid");
        assert_eq!(outer.tunnels, TunnelMode::Outer);
        let err = args(&["--format", "netfound", "--tunnels", "outer"])
            .to_options()
            .unwrap_err();
        assert!(
            err.to_string().contains("--tunnels applies to native mode"),
            "{err}"
        );
        assert!(args(&["--format", "netfound"]).to_options().is_ok());
    }

    #[test]
    fn runtime_flags() {
        let doctor = |extra: &[&str]| {
            let mut v = vec!["netfm", "doctor"];
            v.extend_from_slice(extra);
            Cli::try_parse_from(v).map(|cli| match cli.command {
                Command::Doctor(d) => d.runtime,
                _ => unreachable!(),
            })
        };
        let plain = doctor(&[]).expect("parses").to_options().expect("valid");
        assert_eq!(plain.device, Device::Cpu);
        assert_eq!(plain.intra_threads, None);
        let cuda = doctor(&["--device", "cuda:1", "--threads", "3"])
            .expect("parses")
            .to_options()
            .expect("valid");
        assert_eq!(cuda.device, Device::Cuda(1));
        assert_eq!(cuda.intra_threads, Some(3));
        assert!(doctor(&["--device", "tpu"]).is_err());
        assert!(doctor(&["--threads", "0"])
            .expect("parses")
            .to_options()
            .is_err());
    }
}
