//! The user's jobs, one function per subcommand: run the pipeline, report, choose the exit
//! code. Everything a user sees printed comes from here.

use crate::cli::{
    DTypeArg, DemoArgs, DoctorArgs, EmbedArgs, ExportArgs, FinetuneArgs, ModelExportArgs, PlotArgs,
    PredictArgs, PretrainArgs, TokenizeArgs,
};
use crate::dataset::parquet::DEFAULT_ZSTD_LEVEL;
use crate::pipeline::{run_tokenize, OutputFormat};
use crate::runtime::{self, Device, RuntimeOptions};
use crate::summary::RunSummary;
use anyhow::{bail, Context};
use arrow::array::{Array, AsArray};
use arrow::datatypes::{UInt16Type, UInt64Type, UInt8Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// An error and its causes on one line, `outer: cause: cause`, leaving out a cause whose
/// text the message before it already holds (many errors quote their source).
pub fn error_message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn report(summary: &RunSummary, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(summary)?);
    } else {
        eprint!("{summary}");
    }
    Ok(())
}

/// Whether `--strict` should fail the run: an input that was not fully read (damaged,
/// unreadable, or of a link type netfm does not decode). Files below a directory that are
/// no captures at all (a README beside the captures) are listed, not failures.
fn has_input_problems(summary: &RunSummary) -> bool {
    !summary.warnings.is_empty()
        || summary.files_failed > 0
        || !summary.unsupported_link_types.is_empty()
}

/// `netfm tokenize`.
pub fn tokenize(args: &TokenizeArgs) -> anyhow::Result<ExitCode> {
    let opts = args.to_options()?;
    let summary = run_tokenize(&opts)?;
    report(&summary, args.json)?;
    if args.strict && has_input_problems(&summary) {
        eprintln!("netfm: --strict: inputs had problems (see warnings above)");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// The bundled captures: `NETFM_DATASETS`, else `./datasets`, else the source tree's.
fn bundled_pcaps() -> anyhow::Result<PathBuf> {
    let candidates = [
        std::env::var_os("NETFM_DATASETS").map(PathBuf::from),
        Some(PathBuf::from("datasets")),
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets")),
    ];
    for c in candidates.into_iter().flatten() {
        let p = c.join("pcaps");
        if p.is_dir() {
            return Ok(p);
        }
    }
    bail!("bundled captures not found: run from the netfm source tree or set NETFM_DATASETS to its datasets/ folder")
}

const DEMO_MARKER: &str = ".netfm-demo";

/// Empties the demo output folder, refusing to touch a folder the demo did not make.
fn prepare_demo_dir(out: &Path) -> anyhow::Result<()> {
    if out.exists() {
        let empty = std::fs::read_dir(out)
            .with_context(|| format!("reading {}", out.display()))?
            .next()
            .is_none();
        if !empty && !out.join(DEMO_MARKER).exists() {
            bail!(
                "{} exists and was not made by `netfm demo`; choose another --out",
                out.display()
            );
        }
        std::fs::remove_dir_all(out).with_context(|| format!("clearing {}", out.display()))?;
    }
    Ok(())
}

/// `netfm demo`: tokenize the bundled captures into a native dataset and show a few flows.
pub fn demo(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    let pcaps = bundled_pcaps()?;
    prepare_demo_dir(&args.out)?;
    let tokenize_args = TokenizeArgs {
        inputs: vec![pcaps.clone()],
        out: args.out.clone(),
        format: crate::cli::FormatArg::Parquet,
        tunnels: crate::cli::TunnelsArg::Inner,
        tcp_options: false,
        no_payload: false,
        max_bursts: 12,
        max_packets_per_burst: 6,
        burst_gap_ms: 10.0,
        internal_nets: Vec::new(),
        idle_timeout: 120.0,
        active_timeout: 1800.0,
        max_flows: 262_144,
        shard: None,
        part_rows: 1_000_000,
        zstd_level: DEFAULT_ZSTD_LEVEL,
        label_from_dir: false,
        strict: false,
        json: false,
        quiet: true,
        // The demo folder was emptied above (it refuses a folder it did not make).
        overwrite: false,
        append: false,
        ipc: crate::cli::IpcArg::Stream,
        part_seconds: None,
        continuous: false,
    };
    let opts = tokenize_args.to_options()?;
    debug_assert_eq!(opts.format, OutputFormat::Parquet);
    println!(
        "netfm demo: tokenizing the bundled captures in {}",
        pcaps.display()
    );
    let summary = run_tokenize(&opts)?;
    // Marked after the run, which refuses a folder holding anything.
    std::fs::write(args.out.join(DEMO_MARKER), b"made by netfm demo\n")
        .context("writing demo marker")?;
    print!("{summary}");
    println!();
    println!("first flows of each part (forward endpoint first; tokens are netFound's raw 16-bit field tokens):");
    for part in &summary.output_files {
        show_part(Path::new(part), 4)?;
    }
    println!();
    println!(
        "read it from Python: pyarrow.dataset.dataset('{}', partitioning='hive').to_table()",
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn show_part(path: &Path, rows: usize) -> anyhow::Result<()> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)?
        .with_batch_size(rows)
        .build()?;
    println!("  {}", path.display());
    if let Some(batch) = reader.into_iter().next() {
        let batch = batch?;
        let col = |name: &str| {
            batch
                .column_by_name(name)
                .with_context(|| format!("column {name}"))
        };
        let src = col("src_ip")?.as_string::<i32>().clone();
        let dst = col("dst_ip")?.as_string::<i32>().clone();
        let sport = col("src_port")?.as_primitive::<UInt16Type>().clone();
        let dport = col("dst_port")?.as_primitive::<UInt16Type>().clone();
        let proto = col("protocol")?.as_primitive::<UInt8Type>().clone();
        let fwd = col("fwd_packets")?.as_primitive::<UInt64Type>().clone();
        let bwd = col("bwd_packets")?.as_primitive::<UInt64Type>().clone();
        let tokens = col("burst_tokens")?.as_list::<i32>().clone();
        let icmp_type = col("icmp_type")?.as_primitive::<UInt8Type>().clone();
        let icmp_code = col("icmp_code")?.as_primitive::<UInt8Type>().clone();
        for r in 0..batch.num_rows() {
            let bursts = tokens.value(r);
            let bursts = bursts.as_list::<i32>();
            let first: Vec<u16> = if bursts.is_empty() {
                Vec::new()
            } else {
                bursts
                    .value(0)
                    .as_primitive::<UInt16Type>()
                    .values()
                    .iter()
                    .take(12)
                    .copied()
                    .collect()
            };
            // ICMP flows have no ports: their type and code say what they are.
            let (from, to, what) = if sport.is_null(r) {
                (
                    src.value(r).to_string(),
                    dst.value(r).to_string(),
                    format!(
                        "proto {} type {} code {}",
                        proto.value(r),
                        icmp_type.value(r),
                        icmp_code.value(r)
                    ),
                )
            } else {
                (
                    endpoint(src.value(r), sport.value(r)),
                    endpoint(dst.value(r), dport.value(r)),
                    format!("proto {}", proto.value(r)),
                )
            };
            println!(
                "    {from} -> {to} {what} packets {}+{} bursts {} first tokens {:?}",
                fwd.value(r),
                bwd.value(r),
                bursts.len(),
                first
            );
        }
    }
    Ok(())
}

/// `a.b.c.d:port`, or `[v6]:port` as in URLs.
fn endpoint(ip: &str, port: u16) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// `netfm doctor`: which ONNX Runtime is loaded and from where, what it can run on, and a
/// test model run on the CPU (and on CUDA). Fails (exit 2) when the library cannot be loaded,
/// the CPU cannot run the test model, or the `--device` asked for does not work.
pub fn doctor(args: &DoctorArgs) -> anyhow::Result<ExitCode> {
    let opts = args.runtime.to_options()?;
    let rt = runtime::init(opts.ort_lib.as_deref())?;
    println!("ONNX Runtime      {}", rt.version);
    println!("library           {} ({})", rt.path.display(), rt.source);
    let providers = runtime::available_providers(opts.ort_lib.as_deref())?;
    println!("providers         {}", providers.join(", "));
    println!(
        "intra-op threads  {} ({})",
        opts.intra_threads(),
        if opts.intra_threads.is_some() {
            "--threads"
        } else {
            "default: all cores"
        }
    );
    let cpu = RuntimeOptions {
        device: Device::Cpu,
        ..opts.clone()
    };
    runtime::probe(&cpu).context("the CPU cannot run ONNX models")?;
    println!("cpu               ok: ran a test model");
    match opts.device {
        Device::Cuda(_) => {
            runtime::probe(&opts)?;
            println!("{:<17} ok: ran a test model", opts.device.to_string());
        }
        Device::Cpu if cfg!(feature = "cuda") => {
            let cuda = RuntimeOptions {
                device: Device::Cuda(0),
                ..opts.clone()
            };
            match runtime::probe(&cuda) {
                Ok(()) => println!("cuda:0            ok: ran a test model"),
                Err(e) => println!("cuda:0            not usable: {e:#}"),
            }
        }
        Device::Cpu => println!("cuda              not built: {}", runtime::CUDA_NOT_BUILT),
    }
    Ok(ExitCode::SUCCESS)
}

use crate::dataset::output::write_atomic;

/// `netfm model export`.
pub fn model_export(args: &ModelExportArgs) -> anyhow::Result<ExitCode> {
    use netfm_models::checkpoint::Checkpoint;
    use netfm_models::export::{
        eval_graph, inference_graph, param_specs, train_step_graph, Objective, TrainSpec,
    };
    use netfm_models::optim::AdamWConfig;
    use netfm_models::{DType, ModelConfig};

    let (mut cfg, dtype, checkpoint) = match &args.checkpoint {
        Some(path) => {
            // A checkpoint fixes the model's shape and type: a flag that would change them
            // cannot apply.
            let given: Vec<&str> = [
                (args.size.is_some(), "--size"),
                (args.max_bursts.is_some(), "--max-bursts"),
                (args.burst_len.is_some(), "--burst-len"),
                (args.dtype.is_some(), "--dtype"),
            ]
            .iter()
            .filter(|(g, _)| *g)
            .map(|(_, n)| *n)
            .collect();
            if !given.is_empty() {
                bail!(
                    "{} cannot apply with --checkpoint (the checkpoint fixes the model's shape and type)",
                    given.join(", ")
                );
            }
            let bytes =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let ck =
                Checkpoint::from_bytes(&bytes).with_context(|| format!("{}", path.display()))?;
            (ck.config.clone(), ck.dtype, Some(ck))
        }
        None => {
            let mut cfg = ModelConfig::named(args.size.as_deref().unwrap_or("small"))?;
            cfg.num_classes = args.classes;
            if let Some(n) = args.max_bursts {
                cfg.max_bursts = n;
            }
            if let Some(l) = args.burst_len {
                cfg.burst_len = l;
            }
            let dtype = match args.dtype.unwrap_or(DTypeArg::F32) {
                DTypeArg::F32 => DType::F32,
                DTypeArg::F64 => DType::F64,
            };
            (cfg, dtype, None)
        }
    };
    // --classes on a checkpoint puts a new classification head (seeded) on its encoder.
    let new_head = checkpoint.is_some() && args.classes > 0 && args.classes != cfg.num_classes;
    if new_head {
        cfg.num_classes = args.classes;
    }
    cfg.validate().context("model configuration")?;
    let specs = param_specs(&cfg)?;
    let fresh = checkpoint.is_none() || new_head;
    let params = match &checkpoint {
        Some(ck) => {
            let seeded = netfm_models::params::init_params(&specs, args.seed, dtype);
            let mut p = ck.params.clone();
            if new_head {
                p.retain(|n, _| !n.starts_with("head.class"));
                p.extend(
                    seeded
                        .into_iter()
                        .filter(|(n, _)| n.starts_with("head.class")),
                );
            }
            p
        }
        None => netfm_models::params::init_params(&specs, args.seed, dtype),
    };
    let objective = if cfg.num_classes > 0 {
        Objective::Classify
    } else {
        Objective::Pretrain(Default::default())
    };
    let spec = TrainSpec {
        objective,
        adamw: AdamWConfig::default(),
        dtype,
    };
    let inference = inference_graph(&cfg, &params, dtype)
        .context("the checkpoint's parameters do not fit its config")?;
    let train = train_step_graph(&cfg, &spec)?;
    let eval = eval_graph(&cfg, &spec)?;

    let mode = if args.overwrite {
        crate::dataset::output::OutMode::Overwrite
    } else {
        crate::dataset::output::OutMode::New
    };
    let inputs: Vec<PathBuf> = args.checkpoint.iter().cloned().collect();
    let out = crate::dataset::output::OutputDir::prepare(
        &args.out,
        mode,
        "s0of1",
        &inputs,
        "",
        &serde_json::Value::Null,
    )?;
    let dir = out.write_dir.clone();
    let mut written = Vec::new();
    let mut files = Vec::new();
    for (name, model) in [
        ("inference.onnx", &inference),
        ("train_step.onnx", &train),
        ("eval.onnx", &eval),
    ] {
        let bytes = model.to_bytes();
        write_atomic(&dir, name, &bytes)?;
        files.push((dir.join(name), 0));
        let nodes = model.graph.as_ref().map_or(0, |g| g.node.len());
        written.push(format!(
            "{name:<24}{:>12} bytes {nodes:>6} nodes",
            bytes.len()
        ));
    }
    write_atomic(
        &dir,
        "config.json",
        serde_json::to_string_pretty(&cfg)?.as_bytes(),
    )?;
    files.push((dir.join("config.json"), 0));
    if fresh {
        let ck = Checkpoint::new_model(cfg.clone(), dtype, params);
        let bytes = ck.to_bytes();
        write_atomic(&dir, "checkpoint.safetensors", &bytes)?;
        files.push((dir.join("checkpoint.safetensors"), 0));
        written.push(format!(
            "{:<24}{:>12} bytes",
            "checkpoint.safetensors",
            bytes.len()
        ));
    }
    let run = crate::dataset::output::RunRecord {
        netfm_version: env!("CARGO_PKG_VERSION").to_string(),
        command: std::env::args().collect(),
        started: crate::dataset::output::rfc3339(std::time::SystemTime::now()),
        writer: serde_json::json!({"dtype": format!("{dtype:?}"), "seed": args.seed}),
        inputs: inputs
            .iter()
            .map(|p| crate::dataset::output::describe_input(p))
            .collect(),
        summary: serde_json::to_value(&cfg)?,
        parts: Vec::new(),
    };
    out.commit(&files, "netfm-model", serde_json::to_value(&cfg)?, run)?;
    let count: usize = specs.iter().map(|s| s.numel()).sum();
    println!(
        "model   {} ({} hidden, {} layers, {} heads, {} FFN; {} bursts x {} tokens; {} classes; {:?})",
        cfg.size, cfg.hidden, cfg.layers, cfg.heads, cfg.ffn, cfg.max_bursts, cfg.burst_len, cfg.num_classes, dtype
    );
    println!("params  {count} in {} tensors", specs.len());
    for w in written {
        println!("wrote   {}/{w}", args.out.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// `netfm pretrain`.
pub fn pretrain(args: &PretrainArgs) -> anyhow::Result<ExitCode> {
    let opts = args.runtime.to_options()?;
    let summary = crate::jobs::pretrain::run(args, &opts)?;
    print_summary(&summary, args.json)?;
    Ok(ExitCode::SUCCESS)
}

/// Prints a job's summary: JSON on stdout with `--json`, else text on stderr.
fn print_summary<S: serde::Serialize + std::fmt::Display>(s: &S, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(s)?);
    } else {
        eprint!("{s}");
    }
    Ok(())
}

/// `netfm embed`.
pub fn embed(args: &EmbedArgs) -> anyhow::Result<ExitCode> {
    let opts = args.runtime.to_options()?;
    let summary = crate::jobs::embed::run(args, &opts)?;
    print_summary(&summary, args.json)?;
    Ok(ExitCode::SUCCESS)
}

/// `netfm model import`.
pub fn model_import(args: &crate::cli::ModelImportArgs) -> anyhow::Result<ExitCode> {
    let summary = crate::jobs::import::run(args)?;
    print_summary(&summary, args.json)?;
    Ok(ExitCode::SUCCESS)
}

/// `netfm finetune`.
pub fn finetune(args: &FinetuneArgs) -> anyhow::Result<ExitCode> {
    let opts = args.runtime.to_options()?;
    let summary = crate::jobs::finetune::run(args, &opts)?;
    print_summary(&summary, args.json)?;
    Ok(ExitCode::SUCCESS)
}

/// `netfm predict`.
pub fn predict(args: &PredictArgs) -> anyhow::Result<ExitCode> {
    let opts = args.runtime.to_options()?;
    let summary = crate::jobs::predict::predict(args, &opts)?;
    print_summary(&summary, args.json)?;
    Ok(ExitCode::SUCCESS)
}

/// `netfm export`.
pub fn export(args: &ExportArgs) -> anyhow::Result<ExitCode> {
    let summary = crate::jobs::predict::export(args)?;
    print_summary(&summary, args.json)?;
    Ok(ExitCode::SUCCESS)
}

/// `netfm plot`.
pub fn plot(args: &PlotArgs) -> anyhow::Result<ExitCode> {
    let summary = crate::jobs::plot::run(args)?;
    print_summary(&summary, args.json)?;
    Ok(ExitCode::SUCCESS)
}

/// `netfm forecast series`.
pub fn forecast_series(args: &crate::cli::ForecastSeriesArgs) -> anyhow::Result<ExitCode> {
    let summary = crate::jobs::forecast::series(args)?;
    print_summary(&summary, args.json)?;
    Ok(ExitCode::SUCCESS)
}

/// `netfm forecast backtest`.
pub fn forecast_backtest(args: &crate::cli::ForecastBacktestArgs) -> anyhow::Result<ExitCode> {
    let summary = crate::jobs::forecast::backtest(args)?;
    print!("{summary}");
    Ok(ExitCode::SUCCESS)
}

/// `netfm forecast train`.
pub fn forecast_train(args: &crate::cli::ForecastTrainArgs) -> anyhow::Result<ExitCode> {
    let summary = crate::jobs::forecast::train(args)?;
    print_summary(&summary, args.json)?;
    Ok(ExitCode::SUCCESS)
}

/// `netfm forecast predict`.
pub fn forecast_predict(args: &crate::cli::ForecastPredictArgs) -> anyhow::Result<ExitCode> {
    let summary = crate::jobs::forecast::predict(args)?;
    print_summary(&summary, args.json)?;
    Ok(ExitCode::SUCCESS)
}

/// `netfm loads`.
pub fn loads(args: &crate::cli::LoadsArgs) -> anyhow::Result<ExitCode> {
    let summary = crate::jobs::forecast::loads(args)?;
    print_summary(&summary, args.json)?;
    Ok(ExitCode::SUCCESS)
}
