//! `netfm pretrain`: netFound's pretraining objectives on tokenized flows.
//!
//! The run, step by step:
//! 1. settings from the flags (or, with `--resume`, from the run folder's `run.json`);
//! 2. the data's catalog and the held-out split by capture file ([`crate::train::data`]);
//! 3. the train-step and eval graphs built from the model's config, the parameters drawn
//!    from the seed (or read from the checkpoint), and a [`Trainer`] holding them;
//! 4. the validation batches and the baselines from a training sample ([`crate::train::eval`]);
//! 5. the batch thread, then one update per batch: metrics logged per step, evaluation every
//!    `eval_every` steps, a checkpoint every `checkpoint_every` steps; SIGINT or SIGTERM end
//!    the run with a checkpoint (exit 0);
//! 6. a final evaluation and checkpoint, and the summary (also into `run.json`).
//!
//! Every draw (weights, split, shuffles, corruptions) comes from the seed, and a batch's
//! corruptions from the seed and its step number, so an interrupted and resumed run computes
//! the same steps as an uninterrupted one.

use crate::cli::{LayoutArg, PretrainArgs, ScheduleArg};
use crate::process::signals;
use crate::runtime::trainer::{LrSchedule, OptimizerState, Trainer};
use crate::runtime::{session_from_bytes, RuntimeOptions};
use crate::train::collate::{Layout, Masking};
use crate::train::data::{BatchKind, Catalog, Producer, ProducerConfig, Split, StreamConfig, Take};
use crate::train::eval::{evaluate, read_flows, BaselineStats, ValMetrics, ValSet};
use crate::train::run::{RunDir, RunMode, CHECKPOINT_FILE, RUN_FILE};
use anyhow::{bail, Context};
use netfm_models::checkpoint::Checkpoint;
use netfm_models::export::{
    eval_graph, param_specs, train_step_graph, Objective, PretrainWeights, TrainSpec,
};
use netfm_models::optim::{AdamWConfig, Schedule};
use netfm_models::{DType, InputLayout, ModelConfig, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// Flows of the training data the baselines are computed from.
const BASELINE_FLOWS: usize = 4096;

/// Everything that determines a pretraining run (stored in `run.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PretrainSettings {
    pub model: ModelConfig,
    pub dtype: DType,
    pub weights: PretrainWeights,
    pub masking: Masking,
    pub adamw: AdamWConfig,
    pub lr: f64,
    pub warmup_steps: u64,
    /// Total updates (from `--steps`, or `--epochs` times the batches per epoch).
    pub steps: u64,
    pub epochs: Option<u64>,
    pub stream: StreamConfig,
    pub data: Vec<PathBuf>,
    pub val_data: Vec<PathBuf>,
    pub val_fraction: f64,
    pub val_flows: usize,
    pub eval_every: u64,
    pub checkpoint_every: u64,
}

/// What a run reports at its end.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PretrainSummary {
    pub run_dir: PathBuf,
    pub steps_done: u64,
    pub steps_total: u64,
    /// Steps done by this invocation (less than `steps_done` after a resume).
    pub steps_this_run: u64,
    pub interrupted_by: Option<String>,
    pub train_flows: u64,
    pub val_flows: usize,
    pub held_out_files: usize,
    pub elapsed_s: f64,
    /// Field tokens plus one CLS per burst, over this invocation's steps.
    pub real_tokens: u64,
    /// Token slots computed (the size of `input_ids`), over this invocation's steps.
    pub slots: u64,
    pub slots_per_real_token: f64,
    pub real_tokens_per_s: f64,
    pub cut_tokens: u64,
    pub cut_bursts: u64,
    /// The mean training loss over the last (up to) 20 steps.
    pub final_loss: f64,
    pub val: Option<ValMetrics>,
    pub baseline: Option<ValMetrics>,
    pub checkpoint: PathBuf,
}

fn settings_from_args(a: &PretrainArgs) -> anyhow::Result<(PretrainSettings, PathBuf, RunMode)> {
    let mut model = ModelConfig::named(&a.size)?;
    if let Some(n) = a.max_bursts {
        model.max_bursts = n;
    }
    if let Some(l) = a.burst_len {
        model.burst_len = l;
    }
    model.layout = match a.layout {
        LayoutArg::Packed => InputLayout::Packed,
        LayoutArg::Dense => InputLayout::Dense,
    };
    model.validate().context("model configuration")?;
    if a.steps == Some(0) || a.epochs == Some(0) {
        bail!("--steps and --epochs must be at least 1");
    }
    if a.batch_size == 0 || a.eval_every == 0 || a.checkpoint_every == 0 {
        bail!("--batch-size, --eval-every and --checkpoint-every must be at least 1");
    }
    if !(a.lr > 0.0 && a.lr.is_finite()) {
        bail!("--lr must be a positive number, not {}", a.lr);
    }
    for (name, p) in [
        ("--mlm-prob", a.mlm_prob),
        ("--swap-prob", a.swap_prob),
        ("--meta-mask-prob", a.meta_mask_prob),
    ] {
        if !(0.0..=1.0).contains(&p) {
            bail!("{name} must be between 0 and 1, not {p}");
        }
    }
    if a.loss_weights.iter().any(|w| !(w.is_finite() && *w >= 0.0)) {
        bail!("--loss-weights must be four non-negative numbers");
    }
    let [mlm, swap, meta, direction] = a.loss_weights[..] else {
        bail!("--loss-weights takes four numbers: masked tokens, swap, metadata, direction");
    };
    let out = a.out.clone().context("--out is required")?;
    let mode = if a.overwrite {
        RunMode::Overwrite
    } else {
        RunMode::New
    };
    let s = PretrainSettings {
        model,
        dtype: DType::F32,
        weights: PretrainWeights {
            mlm,
            swap,
            meta,
            direction,
        },
        masking: Masking {
            mlm_prob: a.mlm_prob,
            swap_prob: a.swap_prob,
            meta_mask_prob: a.meta_mask_prob,
            ..Masking::default()
        },
        adamw: AdamWConfig {
            weight_decay: a.weight_decay,
            schedule: match a.schedule {
                ScheduleArg::Cosine => Schedule::Cosine,
                ScheduleArg::Linear => Schedule::Linear,
                ScheduleArg::Constant => Schedule::Constant,
            },
            ..AdamWConfig::default()
        },
        lr: a.lr,
        warmup_steps: a.warmup_steps.unwrap_or(u64::MAX), // resolved once the steps are known
        steps: a.steps.unwrap_or(0),
        epochs: a.epochs,
        stream: StreamConfig {
            batch_size: a.batch_size,
            shuffle_buffer: a.shuffle_buffer.max(1),
            pool_batches: a.bucket_batches.max(1),
            seed: a.seed,
        },
        data: a.data.clone(),
        val_data: a.val_data.clone(),
        val_fraction: if a.val_data.is_empty() {
            a.val_fraction
        } else {
            0.0
        },
        val_flows: a.val_flows,
        eval_every: a.eval_every,
        checkpoint_every: a.checkpoint_every,
    };
    Ok((s, out, mode))
}

fn files_json(c: &Catalog) -> serde_json::Value {
    json!(c
        .files
        .iter()
        .map(|f| json!({"path": f.path, "bytes": f.bytes, "rows": f.rows()}))
        .collect::<Vec<_>>())
}

/// The mean of the last `n` values.
fn tail_mean(v: &[f64], n: usize) -> f64 {
    let t = &v[v.len().saturating_sub(n)..];
    if t.is_empty() {
        f64::NAN
    } else {
        t.iter().sum::<f64>() / t.len() as f64
    }
}

fn val_line(m: &ValMetrics, b: &ValMetrics) -> String {
    let loss = m.losses.first().map_or(f64::NAN, |l| l.1);
    format!(
        "val loss {loss:.4} | masked-token acc {:.3} (baseline {:.3}) | swap acc {:.3} ({:.3}) | direction acc {:.3} ({:.3}) | metadata L1 {:.3} ({:.3})",
        m.mlm_acc, b.mlm_acc, m.swap_acc, b.swap_acc, m.direction_acc, b.direction_acc, m.meta_l1, b.meta_l1
    )
}

fn metrics_json(m: &ValMetrics) -> serde_json::Value {
    let mut v = json!({
        "mlm_acc": m.mlm_acc, "swap_acc": m.swap_acc,
        "direction_acc": m.direction_acc, "meta_l1": m.meta_l1,
    });
    for (n, x) in &m.losses {
        v[n] = json!(x);
    }
    v
}

/// Runs `netfm pretrain`.
pub fn run(args: &PretrainArgs, opts: &RuntimeOptions) -> anyhow::Result<PretrainSummary> {
    let started = Instant::now();
    // 1. Settings and the run folder.
    let (mut settings, dir, resuming) = match &args.resume {
        Some(dir) => {
            let rd = RunDir::open(dir, RunMode::Resume, &[])?;
            let run = rd.read_json(RUN_FILE)?;
            if run["job"] != "pretrain" {
                bail!(
                    "{}: not a pretraining run (its job is {})",
                    dir.display(),
                    run["job"]
                );
            }
            let s: PretrainSettings = serde_json::from_value(run["settings"].clone())
                .with_context(|| {
                    format!("{}/{RUN_FILE}: reading the run's settings", dir.display())
                })?;
            (s, rd, Some(run))
        }
        None => {
            let (s, out, mode) = settings_from_args(args)?;
            let mut inputs = s.data.clone();
            inputs.extend(s.val_data.iter().cloned());
            (s, RunDir::open(&out, mode, &inputs)?, None)
        }
    };

    // 2. Data and split.
    let catalog = Catalog::open(&settings.data)?;
    let val_catalog = if settings.val_data.is_empty() {
        None
    } else {
        Some(Catalog::open(&settings.val_data)?)
    };
    let unit_rows = catalog.unit_rows();
    let split = Arc::new(Split::by_unit(
        &unit_rows,
        settings.val_fraction,
        settings.stream.seed,
    )?);
    let held_rows: u64 = unit_rows
        .iter()
        .filter(|(u, _)| split.contains(u))
        .map(|(_, n)| n)
        .sum();
    let train_rows = catalog.rows() - held_rows;
    if train_rows == 0 {
        bail!(
            "the training data holds no flows ({} dataset files)",
            catalog.files.len()
        );
    }
    if let Some(run) = &resuming {
        let recorded = &run["data"];
        if *recorded != files_json(&catalog) {
            bail!(
                "the run's data changed since it started (files, sizes or rows differ from {}); resuming would not continue the same run",
                RUN_FILE
            );
        }
    } else {
        let per_epoch = train_rows.div_ceil(settings.stream.batch_size as u64);
        if let Some(e) = settings.epochs {
            settings.steps = e * per_epoch;
        }
        if settings.warmup_steps == u64::MAX {
            settings.warmup_steps = settings.steps / 20;
        }
    }

    // 3. Graphs, parameters, trainer.
    let cfg = settings.model.clone();
    let spec = TrainSpec {
        objective: Objective::Pretrain(settings.weights.clone()),
        adamw: settings.adamw.clone(),
        dtype: settings.dtype,
    };
    let train_bytes = train_step_graph(&cfg, &spec)?.to_bytes();
    let eval_bytes = eval_graph(&cfg, &spec)?.to_bytes();
    let specs = param_specs(&cfg)?;
    let (params, state) = if resuming.is_some() {
        let ck = dir.load_checkpoint()?;
        if ck.config.hidden != cfg.hidden || ck.step > settings.steps {
            bail!(
                "{}/{CHECKPOINT_FILE} does not belong to this run's settings",
                dir.path.display()
            );
        }
        let state = OptimizerState {
            m: ck.adam_m,
            v: ck.adam_v,
            step: ck.step,
        };
        (ck.params, Some(state))
    } else {
        (
            netfm_models::params::init_params(&specs, settings.stream.seed, settings.dtype),
            None,
        )
    };
    let mut trainer = Trainer::new(opts, &train_bytes, &params, state.as_ref())?;
    let start_step = trainer.step_count();
    let layout = Layout::of(&cfg, settings.dtype);

    // 4. Validation batches and baselines.
    let train_take = Take::Rest(split.clone());
    let (val_files, val_take) = match &val_catalog {
        Some(c) => (c.paths(), Take::All),
        None => (catalog.paths(), Take::Held(split.clone())),
    };
    let validating = val_catalog.is_some() || !split.held_out.is_empty();
    let bs = settings.stream.batch_size;
    let (val, baseline) = if validating {
        let groups = read_flows(
            &val_files,
            val_take,
            settings.val_flows,
            bs,
            settings.stream.seed,
        )?;
        let val = ValSet::build(&groups, &layout, &settings.masking, settings.stream.seed);
        if val.flows == 0 {
            bail!("the validation data holds no flows with bursts");
        }
        let sample = read_flows(
            &catalog.paths(),
            train_take.clone(),
            BASELINE_FLOWS,
            bs,
            settings.stream.seed,
        )?;
        let base = BaselineStats::from_training(
            &sample,
            &layout,
            &settings.masking,
            settings.stream.seed,
        )?;
        (Some(val), Some(base))
    } else {
        (None, None)
    };
    let mut eval_session = match &val {
        Some(_) => Some(session_from_bytes(opts, &eval_bytes)?),
        None => None,
    };
    let loss_names: Vec<String> = Objective::Pretrain(settings.weights.clone())
        .loss_names()
        .iter()
        .map(|s| s.to_string())
        .collect();

    // run.json: what made the run (kept from the first invocation on resume).
    let mut held_out_list: Vec<&String> = split.held_out.iter().collect();
    held_out_list.sort();
    let mut run_json = match resuming.clone() {
        Some(r) => r,
        None => json!({
            "job": "pretrain",
            "netfm_version": env!("CARGO_PKG_VERSION"),
            "started": crate::dataset::output::rfc3339(std::time::SystemTime::now()),
            "settings": settings,
            "data": files_json(&catalog),
            "val_data": val_catalog.as_ref().map(files_json),
            "split": {
                "held_out": held_out_list,
                "train_rows": train_rows,
                "held_out_rows": held_rows,
            },
            "invocations": [],
            "summary": null,
        }),
    };
    if let Some(list) = run_json["invocations"].as_array_mut() {
        list.push(json!({
            "command": std::env::args().collect::<Vec<_>>(),
            "started": crate::dataset::output::rfc3339(std::time::SystemTime::now()),
            "from_step": start_step,
            "device": opts.device.to_string(),
            "threads": opts.intra_threads(),
        }));
    }
    dir.write_json(RUN_FILE, &run_json)?;
    let mut metrics = dir.metrics(resuming.as_ref().map(|_| start_step))?;

    // 5. The loop.
    let mut summary = PretrainSummary {
        run_dir: dir.path.clone(),
        steps_total: settings.steps,
        train_flows: train_rows,
        val_flows: val.as_ref().map_or(0, |v| v.flows),
        held_out_files: split.held_out.len(),
        checkpoint: dir.path.join(CHECKPOINT_FILE),
        ..PretrainSummary::default()
    };
    let save = |trainer: &Trainer| -> anyhow::Result<()> {
        let st = trainer.optimizer_state()?;
        let ck = Checkpoint {
            config: cfg.clone(),
            dtype: settings.dtype,
            step: st.step,
            params: trainer.params()?,
            adam_m: st.m,
            adam_v: st.v,
        };
        dir.save_checkpoint(&ck)
    };
    let run_eval = |trainer: &Trainer,
                    session: &mut ort::session::Session|
     -> anyhow::Result<(ValMetrics, ValMetrics)> {
        let p = trainer.params()?;
        let mut params: Vec<(String, Tensor)> = p.into_iter().collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        evaluate(
            session,
            &params,
            &loss_names,
            val.as_ref().expect("validation set"),
            &layout,
            baseline.as_ref().expect("baseline"),
        )
    };
    let lr = LrSchedule {
        peak: settings.lr,
        warmup_steps: settings.warmup_steps,
        total_steps: settings.steps,
    };
    let bar = super::step_bar(settings.steps, start_step, args.quiet);
    let stop = signals::InterruptGuard::install();
    let mut producer = Producer::spawn(ProducerConfig {
        files: catalog.paths(),
        take: train_take,
        stream: settings.stream.clone(),
        layout: layout.clone(),
        kind: BatchKind::Pretrain(settings.masking.clone()),
        start_step,
        total_steps: settings.steps,
        ahead: 3,
    })?;
    // The batch thread keeps SIGINT/SIGTERM blocked; this thread takes them.
    signals::unblock_here();
    let loop_start = Instant::now();
    let mut losses = Vec::new();
    let mut last_eval = None;
    while let Some(prepared) = producer.next_batch() {
        let p = prepared?;
        let t0 = Instant::now();
        let report = trainer.step(&p.batch.feeds(), &lr)?;
        let dt = t0.elapsed().as_secs_f64();
        summary.real_tokens += p.batch.real_tokens() as u64;
        summary.slots += p.batch.slots as u64;
        summary.cut_tokens += p.batch.cut_tokens as u64;
        summary.cut_bursts += p.batch.cut_bursts as u64;
        summary.steps_this_run += 1;
        losses.push(report.loss());
        let (row_len, grid) = p.batch.shape_stats();
        let mut line = json!({
            "event": "train", "step": report.step, "epoch": p.epoch,
            "grad_norm": report.grad_norm, "lr": report.lr,
            "flows": p.batch.flows, "bursts": p.batch.bursts, "real_tokens": p.batch.real_tokens(),
            "slots": p.batch.slots, "row_len": row_len, "grid": grid,
            "masked": p.batch.masked_flow.len(),
            "step_s": dt, "tokens_per_s": p.batch.real_tokens() as f64 / dt.max(1e-9),
            "elapsed_s": loop_start.elapsed().as_secs_f64(),
        });
        for (n, v) in &report.losses {
            line[n] = json!(v);
        }
        metrics.write(&line)?;
        let rate = summary.real_tokens as f64 / loop_start.elapsed().as_secs_f64().max(1e-9);
        bar.set_position(report.step);
        bar.set_message(format!(
            "loss {:.4}  {} tok/s",
            report.loss(),
            super::thousands(rate as u64)
        ));
        let interrupted = signals::interrupted();
        let last = report.step == settings.steps;
        if val.is_some() && (report.step % settings.eval_every == 0 || last) {
            let session = eval_session.as_mut().expect("eval session");
            let (m, b) = run_eval(&trainer, session)?;
            metrics.write(&json!({"event": "val", "step": report.step, "model": metrics_json(&m), "baseline": metrics_json(&b)}))?;
            let text = format!("step {:>6}  {}", report.step, val_line(&m, &b));
            super::say(&bar, args.quiet, text);
            last_eval = Some((m, b));
        }
        if report.step % settings.checkpoint_every == 0 || last || interrupted.is_some() {
            save(&trainer)?;
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
    if summary.steps_this_run == 0 && summary.steps_done < settings.steps {
        bail!("no batches were produced (the training data holds no flows with bursts?)");
    }
    if summary.steps_this_run == 0 {
        save(&trainer)?;
    }
    summary.elapsed_s = started.elapsed().as_secs_f64();
    let loop_s = loop_start.elapsed().as_secs_f64().max(1e-9);
    summary.real_tokens_per_s = summary.real_tokens as f64 / loop_s;
    summary.slots_per_real_token = summary.slots as f64 / (summary.real_tokens as f64).max(1.0);
    summary.final_loss = tail_mean(&losses, 20);
    if let Some((m, b)) = last_eval {
        summary.val = Some(m);
        summary.baseline = Some(b);
    }
    run_json["summary"] = serde_json::to_value(&summary)?;
    dir.write_json(RUN_FILE, &run_json)?;
    Ok(summary)
}

impl std::fmt::Display for PretrainSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = match &self.interrupted_by {
            Some(s) => format!(
                "stopped by {s} at step {} of {}",
                self.steps_done, self.steps_total
            ),
            None => format!("{} of {} steps", self.steps_done, self.steps_total),
        };
        writeln!(
            f,
            "pretrain   {how} ({} this run) in {:.1} s",
            self.steps_this_run, self.elapsed_s
        )?;
        writeln!(
            f,
            "data       {} training flows; {} validation flows ({} held-out capture files)",
            super::thousands(self.train_flows),
            self.val_flows,
            self.held_out_files
        )?;
        writeln!(
            f,
            "throughput {} real tokens/s; {:.2} computed slots per real token",
            super::thousands(self.real_tokens_per_s as u64),
            self.slots_per_real_token
        )?;
        if self.cut_tokens + self.cut_bursts > 0 {
            writeln!(
                f,
                "cut        {} tokens past the model's burst length, {} bursts past its bursts per flow",
                self.cut_tokens, self.cut_bursts
            )?;
        }
        writeln!(
            f,
            "loss       {:.4} (mean of the last steps)",
            self.final_loss
        )?;
        if let (Some(m), Some(b)) = (&self.val, &self.baseline) {
            writeln!(f, "{}", val_line(m, b))?;
        }
        writeln!(f, "checkpoint {}", self.checkpoint.display())
    }
}
