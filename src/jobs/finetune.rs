//! `netfm finetune`: flow classification on a pretrained encoder (or from scratch).
//!
//! 1. The base model ([`super::model::load`]); with `--from-scratch` only its config is used
//!    (or `--size` without `--model`).
//! 2. The labels ([`super::labels`]) and one pass over the data that matches them, splits the
//!    labelled flows by capture file (`--split-file` names the held-out files, else a seeded
//!    share) and counts everything (`LabelReport`). The classes are the labels of the
//!    training flows, sorted; fewer than two is an error. Held-out flows of a class the
//!    training flows lack are counted and left out of the evaluation.
//! 3. A classification head on the encoder (`head.class_pool`, `head.class`, drawn from the
//!    seed); class weights `n / (classes · n_class)` (scikit-learn's "balanced") in the loss.
//!    `--freeze-encoder` bakes the encoder into the graphs: only the head is trained.
//! 4. Training as in pretraining (shuffled, length-bucketed batches built ahead, AdamW with
//!    warmup and decay), evaluated on the held-out flows every `--eval-every` steps and at
//!    the end: accuracy, macro-F1, per-class precision/recall/F1, confusion matrix.
//! 5. The run folder: `run.json` (settings, classes, label report, final report),
//!    `metrics.jsonl`, `checkpoint.safetensors` (the whole model), `report.json`,
//!    `report.txt` (the table) and `confusion.csv`.

use super::labels::{LabelReport, LabelSource, Labels, Lookup};
use super::model::load;
use crate::cli::FinetuneArgs;
use crate::dataset::output::write_atomic;
use crate::process::signals;
use crate::runtime::trainer::{LrSchedule, Trainer};
use crate::runtime::{host, session_from_bytes, RuntimeOptions};
use crate::train::collate::{classify_batch, Layout};
use crate::train::data::{
    file_name, unit_of, BatchKind, Catalog, EpochStream, Labeler, Producer, ProducerConfig, Split,
    StreamConfig, Take,
};
use crate::train::metrics::ClassReport;
use crate::train::run::{RunDir, RunMode, RUN_FILE};
use anyhow::{bail, Context};
use netfm_models::checkpoint::Checkpoint;
use netfm_models::export::{
    eval_graph_frozen, param_specs, train_step_graph_frozen, Objective, TrainSpec,
};
use netfm_models::optim::AdamWConfig;
use netfm_models::{DType, Data, InputLayout, ModelConfig, Tensor};
use netfm_tokenizer::TokenizedFlow;
use serde::Serialize;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// What a fine-tuning run reports.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FinetuneSummary {
    pub run_dir: PathBuf,
    pub steps_done: u64,
    pub interrupted_by: Option<String>,
    pub classes: Vec<String>,
    pub labels: LabelReport,
    pub train_flows: u64,
    pub eval_flows: u64,
    /// Held-out flows of a class no training flow has (left out of the evaluation).
    pub eval_unknown_class: u64,
    pub elapsed_s: f64,
    pub real_tokens_per_s: f64,
    pub final_loss: f64,
    pub report: Option<ClassReport>,
}

/// Reads the capture-file names of a split list (one per line; `#` comments).
fn read_names(path: &Path) -> anyhow::Result<HashSet<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| file_name(l).to_string())
        .collect())
}

fn class_weights(counts: &[u64]) -> Vec<f64> {
    let n: u64 = counts.iter().sum();
    let c = counts.len() as f64;
    counts
        .iter()
        .map(|&k| {
            if k > 0 {
                n as f64 / (c * k as f64)
            } else {
                0.0
            }
        })
        .collect()
}

/// Runs the eval graph over `flows` and returns the predicted class of each.
fn predict(
    session: &mut ort::session::Session,
    params: &[(String, Tensor)],
    flows: &[(TokenizedFlow, usize)],
    layout: &Layout,
    classes: usize,
) -> anyhow::Result<Vec<usize>> {
    let mut out = Vec::with_capacity(flows.len());
    let ones = vec![1.0; classes];
    for chunk in flows.chunks(256) {
        let refs: Vec<&TokenizedFlow> = chunk.iter().map(|f| &f.0).collect();
        let labels: Vec<i64> = chunk.iter().map(|f| f.1 as i64).collect();
        let batch = classify_batch(&refs, &labels, &ones, layout);
        let mut feeds = batch.feeds();
        feeds.extend(params.iter().map(|(n, t)| (n.as_str(), t)));
        let res = host::run(session, &feeds).context("evaluating the held-out flows")?;
        let logits = res.get("class_logits").context("no class_logits output")?;
        let Data::F32(v) = &logits.data else {
            bail!("class_logits is not float32");
        };
        for row in v.chunks(classes) {
            let best = row
                .iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |b, (i, &x)| if x > b.1 { (i, x) } else { b },
                );
            out.push(best.0);
        }
    }
    Ok(out)
}

pub fn run(args: &FinetuneArgs, opts: &RuntimeOptions) -> anyhow::Result<FinetuneSummary> {
    let started = Instant::now();
    if args.steps == Some(0) || args.epochs == Some(0) {
        bail!("--steps and --epochs must be at least 1");
    }
    if args.batch_size == 0 || args.eval_every == 0 {
        bail!("--batch-size and --eval-every must be at least 1");
    }
    // 1. The base model.
    let base = match &args.model {
        Some(m) => Some(load(m)?),
        None if args.from_scratch => None,
        None => bail!("--model is required (or --from-scratch with --size)"),
    };
    let mut cfg = match &base {
        Some(b) => b.checkpoint.config.clone(),
        None => ModelConfig::named(&args.size)?,
    };
    cfg.layout = InputLayout::Packed;
    if args.freeze_encoder && args.from_scratch {
        bail!("--freeze-encoder with --from-scratch would train a head on a random encoder");
    }

    // 2. Labels, data, split, and the matching pass.
    let source = LabelSource::parse(&args.labels);
    let dropped: Vec<String> = args
        .drop_labels
        .iter()
        .map(|s| s.trim().to_string())
        .collect();
    let labels = Arc::new(Labels::load(&source, &args.label_column, &dropped)?);
    let catalog = Catalog::open(&args.data)?;
    let units = catalog.unit_rows();
    let split = match &args.split_file {
        Some(f) => {
            let names = read_names(f)?;
            let s = Split::by_names(&units, &names);
            if s.held_out.is_empty() {
                bail!(
                    "{}: none of the data's capture files is named there",
                    f.display()
                );
            }
            if s.held_out.len() == units.len() {
                bail!(
                    "{}: names every capture file of the data; nothing is left to train on",
                    f.display()
                );
            }
            s
        }
        None => Split::by_unit(&units, args.val_fraction, args.seed)?,
    };
    let split = Arc::new(split);
    let files = catalog.paths();
    let mut report = LabelReport {
        source: match &source {
            LabelSource::DirNames => "dir-names".into(),
            LabelSource::Csv(p) => p.display().to_string(),
        },
        rows_read: labels.rows_read,
        rows_dropped: labels.rows_dropped,
        ..LabelReport::default()
    };
    let mut matched = vec![false; labels.row_count()];
    let all = StreamConfig {
        batch_size: 1024,
        shuffle_buffer: 1,
        pool_batches: 1,
        seed: args.seed,
    };
    let mut held_flows: Vec<(TokenizedFlow, String)> = Vec::new();
    for batch in EpochStream::new(&files, Take::All, &all, 0) {
        for ex in batch? {
            report.flows += 1;
            let path = &files[ex.file];
            let file = path.display().to_string();
            labels.mark(&ex, &file, &mut matched);
            let held = split.contains(&unit_of(ex.id.source.as_deref(), path));
            match labels.lookup(&ex, &file) {
                Lookup::Label(l) => {
                    report.flows_labelled += 1;
                    let counts = if held {
                        &mut report.held_out_per_class
                    } else {
                        &mut report.train_per_class
                    };
                    *counts.entry(l.clone()).or_default() += 1;
                    if held && held_flows.len() < args.eval_flows {
                        held_flows.push((ex.flow, l));
                    }
                }
                Lookup::None => report.flows_unlabelled += 1,
                Lookup::Ambiguous => report.flows_ambiguous += 1,
                Lookup::Dropped => report.flows_dropped_label += 1,
            }
        }
    }
    report.rows_unmatched = matched.iter().filter(|m| !**m).count() as u64;
    let classes: Vec<String> = report.train_per_class.keys().cloned().collect();
    if classes.len() < 2 {
        bail!(
            "the training flows hold {} class(es) ({}); classification needs at least two ({} flows labelled of {})",
            classes.len(),
            classes.join(", "),
            report.flows_labelled,
            report.flows
        );
    }
    let index: HashMap<String, usize> = classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.clone(), i))
        .collect();
    let counts: Vec<u64> = classes.iter().map(|c| report.train_per_class[c]).collect();
    let class_weight = class_weights(&counts);
    let train_flows: u64 = counts.iter().sum();
    let eval: Vec<(TokenizedFlow, usize)> = held_flows
        .into_iter()
        .filter_map(|(f, l)| index.get(&l).map(|&i| (f, i)))
        .collect();
    let eval_unknown_class = report
        .held_out_per_class
        .iter()
        .filter(|(c, _)| !index.contains_key(*c))
        .map(|(_, n)| n)
        .sum();

    // 3. The model with its head.
    cfg.num_classes = classes.len();
    let specs = param_specs(&cfg)?;
    let fresh = netfm_models::params::init_params(&specs, args.seed, DType::F32);
    let mut params: HashMap<String, Tensor> = HashMap::new();
    for s in &specs {
        let from_base = base
            .as_ref()
            .filter(|_| !args.from_scratch)
            .and_then(|b| b.checkpoint.params.get(&s.name))
            .filter(|t| t.dims == s.dims && !s.name.starts_with("head.class"));
        params.insert(s.name.clone(), from_base.unwrap_or(&fresh[&s.name]).clone());
    }
    let frozen: HashMap<String, Tensor> = if args.freeze_encoder {
        params
            .iter()
            .filter(|(n, _)| !n.starts_with("head.class"))
            .map(|(n, t)| (n.clone(), t.clone()))
            .collect()
    } else {
        HashMap::new()
    };
    let trainable: HashMap<String, Tensor> = params
        .iter()
        .filter(|(n, _)| !frozen.contains_key(*n))
        .map(|(n, t)| (n.clone(), t.clone()))
        .collect();
    let spec = TrainSpec {
        objective: Objective::Classify,
        adamw: AdamWConfig {
            weight_decay: args.weight_decay,
            ..AdamWConfig::default()
        },
        dtype: DType::F32,
    };
    let train_bytes = train_step_graph_frozen(&cfg, &spec, &frozen)?.to_bytes();
    let eval_bytes = eval_graph_frozen(&cfg, &spec, &frozen)?.to_bytes();
    let mut trainer = Trainer::new(opts, &train_bytes, &trainable, None)?;
    let mut eval_session = session_from_bytes(opts, &eval_bytes)?;
    let layout = Layout::of(&cfg, DType::F32);
    let steps = match (args.steps, args.epochs) {
        (Some(s), _) => s,
        (None, Some(e)) => e * train_flows.div_ceil(args.batch_size as u64),
        (None, None) => bail!("--steps or --epochs is required"),
    };

    // The run folder.
    let mode = if args.overwrite {
        RunMode::Overwrite
    } else {
        RunMode::New
    };
    let dir = RunDir::open(&args.out, mode, &args.data)?;
    let mut held_out_list: Vec<&String> = split.held_out.iter().collect();
    held_out_list.sort();
    let mut run_json = json!({
        "job": "finetune",
        "netfm_version": env!("CARGO_PKG_VERSION"),
        "command": std::env::args().collect::<Vec<_>>(),
        "started": crate::dataset::output::rfc3339(std::time::SystemTime::now()),
        "base_model": base.as_ref().map(|b| b.path.clone()),
        "from_scratch": args.from_scratch,
        "freeze_encoder": args.freeze_encoder,
        "classes": classes,
        "class_weight": class_weight,
        "labels": {"source": report.source, "column": args.label_column, "drop": dropped},
        "label_report": report,
        "settings": {
            "model": cfg, "steps": steps, "batch_size": args.batch_size, "lr": args.lr,
            "warmup_steps": steps / 10, "weight_decay": args.weight_decay, "seed": args.seed,
            "eval_every": args.eval_every, "split_file": args.split_file, "val_fraction": args.val_fraction,
        },
        "data": catalog.files.iter().map(|f| json!({"path": f.path, "bytes": f.bytes, "rows": f.rows()})).collect::<Vec<_>>(),
        "split": {"held_out": held_out_list},
        "summary": null,
    });
    dir.write_json(RUN_FILE, &run_json)?;
    let mut metrics = dir.metrics(None)?;

    // 4. Training.
    let lab = labels.clone();
    let idx = index.clone();
    let labeler: Labeler =
        Arc::new(
            move |ex, path: &Path| match lab.lookup(ex, &path.display().to_string()) {
                Lookup::Label(l) => idx.get(&l).map(|&i| i as i64),
                _ => None,
            },
        );
    let lr = LrSchedule {
        peak: args.lr,
        warmup_steps: steps / 10,
        total_steps: steps,
    };
    let stream = StreamConfig {
        batch_size: args.batch_size,
        shuffle_buffer: 4096,
        pool_batches: 16,
        seed: args.seed,
    };
    let mut summary = FinetuneSummary {
        run_dir: dir.path.clone(),
        classes: classes.clone(),
        labels: report.clone(),
        train_flows,
        eval_flows: eval.len() as u64,
        eval_unknown_class,
        ..FinetuneSummary::default()
    };
    // The whole model: what was trained, over what was not (the frozen encoder, and the
    // pretraining heads, which the classification graphs do not use).
    let all_params = |trainer: &Trainer| -> anyhow::Result<HashMap<String, Tensor>> {
        let mut p = params.clone();
        p.extend(trainer.params()?);
        Ok(p)
    };
    let evaluate = |trainer: &Trainer,
                    session: &mut ort::session::Session|
     -> anyhow::Result<Option<ClassReport>> {
        if eval.is_empty() {
            return Ok(None);
        }
        let mut p: Vec<(String, Tensor)> = trainer.params()?.into_iter().collect();
        p.sort_by(|a, b| a.0.cmp(&b.0));
        let pred = predict(session, &p, &eval, &layout, classes.len())?;
        let truth: Vec<usize> = eval.iter().map(|f| f.1).collect();
        Ok(Some(ClassReport::of(&truth, &pred, &classes)))
    };
    let bar = super::step_bar(steps, 0, args.quiet);
    let stop = signals::InterruptGuard::install();
    let mut producer = Producer::spawn(ProducerConfig {
        files: files.clone(),
        take: Take::Rest(split.clone()),
        stream,
        layout: layout.clone(),
        kind: BatchKind::Classify {
            labeler,
            class_weight: class_weight.clone(),
        },
        start_step: 0,
        total_steps: steps,
        ahead: 3,
    })?;
    signals::unblock_here();
    let loop_start = Instant::now();
    let (mut tokens, mut losses) = (0u64, Vec::new());
    while let Some(prepared) = producer.next_batch() {
        let p = prepared?;
        let t0 = Instant::now();
        let r = trainer.step(&p.batch.feeds(), &lr)?;
        tokens += p.batch.real_tokens() as u64;
        losses.push(r.loss());
        metrics.write(&json!({
            "event": "train", "step": r.step, "loss": r.loss(), "grad_norm": r.grad_norm, "lr": r.lr,
            "flows": p.batch.flows, "real_tokens": p.batch.real_tokens(), "slots": p.batch.slots,
            "step_s": t0.elapsed().as_secs_f64(), "elapsed_s": loop_start.elapsed().as_secs_f64(),
        }))?;
        bar.set_position(r.step);
        bar.set_message(format!("loss {:.4}", r.loss()));
        let interrupted = signals::interrupted();
        if r.step % args.eval_every == 0 || r.step == steps || interrupted.is_some() {
            if let Some(rep) = evaluate(&trainer, &mut eval_session)? {
                metrics.write(&json!({"event": "val", "step": r.step, "accuracy": rep.accuracy, "macro_f1": rep.macro_f1}))?;
                let line = format!(
                    "step {:>6}  held-out accuracy {:.4}  macro-F1 {:.4}",
                    r.step, rep.accuracy, rep.macro_f1
                );
                super::say(&bar, args.quiet, line);
                summary.report = Some(rep);
            }
        }
        if let Some(sig) = interrupted {
            summary.interrupted_by = Some(signals::name(sig).to_string());
            break;
        }
    }
    drop(producer);
    drop(stop);
    bar.finish_and_clear();
    summary.steps_done = trainer.step_count();
    if summary.steps_done == 0 {
        bail!("no training batches: no labelled training flows with bursts");
    }
    let st = trainer.optimizer_state()?;
    let ck = Checkpoint {
        config: cfg.clone(),
        dtype: DType::F32,
        step: st.step,
        params: all_params(&trainer)?,
        adam_m: st.m,
        adam_v: st.v,
    };
    dir.save_checkpoint(&ck)?;
    summary.elapsed_s = started.elapsed().as_secs_f64();
    summary.real_tokens_per_s = tokens as f64 / loop_start.elapsed().as_secs_f64().max(1e-9);
    let tail = &losses[losses.len().saturating_sub(20)..];
    summary.final_loss = tail.iter().sum::<f64>() / tail.len().max(1) as f64;
    if let Some(rep) = &summary.report {
        dir.write_json("report.json", &serde_json::to_value(rep)?)?;
        write_atomic(&dir.path, "report.txt", rep.table().as_bytes())?;
        write_atomic(&dir.path, "confusion.csv", rep.confusion_csv().as_bytes())?;
    }
    run_json["summary"] = serde_json::to_value(&summary)?;
    dir.write_json(RUN_FILE, &run_json)?;
    Ok(summary)
}

impl std::fmt::Display for FinetuneSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = match &self.interrupted_by {
            Some(s) => format!(" (stopped by {s})"),
            None => String::new(),
        };
        writeln!(
            f,
            "finetune   {} steps{how} in {:.1} s; {} classes: {}",
            self.steps_done,
            self.elapsed_s,
            self.classes.len(),
            self.classes.join(", ")
        )?;
        write!(f, "{}", self.labels)?;
        writeln!(
            f,
            "data       {} training flows; {} held-out flows evaluated ({} of classes not trained on, left out)",
            self.train_flows, self.eval_flows, self.eval_unknown_class
        )?;
        writeln!(
            f,
            "loss       {:.4} (mean of the last steps)",
            self.final_loss
        )?;
        if let Some(r) = &self.report {
            write!(f, "{}", r.table())?;
        }
        writeln!(f, "run        {}", self.run_dir.display())
    }
}
