//! `netfm forecast`: reading series onto a grid (`series`) and rolling-origin backtests of
//! netfm's forecaster beside the baselines (`backtest`), Abilene's benchmark and failure
//! scenario included.

use super::{say, step_bar};
use crate::cli::{
    ForecastBacktestArgs, ForecastPredictArgs, ForecastSeriesArgs, ForecastTrainArgs,
    SeriesInputArgs,
};
use crate::forecast::abilene::{self, Abilene, Failure};
use crate::forecast::backtest::{self, parse_duration, Row, Spec};
use crate::forecast::baselines::{self, Forecaster};
use crate::forecast::drift::{self, DriftRow};
use crate::forecast::model::{NetfmForecaster, TrainSettings};
use crate::forecast::series::{self, Corrections, GridSpec, Panel, ValueKind};
use anyhow::{bail, Context};
use netfm_models::forecaster::ForecastConfig;
use serde::Serialize;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// One series set to work on: a week of Abilene, or what the inputs hold.
pub struct Loaded {
    pub label: String,
    pub panel: Panel,
    pub corrections: Option<Corrections>,
    /// Abilene only: the same week without the failure, and the failure.
    pub scenario: Option<(Panel, Failure)>,
    pub inputs: Vec<String>,
}

/// The interval of 5 days, the training part of an Abilene week.
const ABILENE_TRAIN: usize = 5 * 288;

/// Reads what `a` names. `weeks_default`: the Abilene weeks when `--week` is not given.
pub fn load(
    a: &SeriesInputArgs,
    failure: bool,
    weeks_default: &[usize],
) -> anyhow::Result<Vec<Loaded>> {
    match a.dataset.as_deref() {
        Some("abilene") => load_abilene(a, failure, weeks_default),
        Some(other) => bail!("unknown dataset {other:?}: the bundled one is `abilene`"),
        None => {
            if failure {
                bail!("a failure scenario needs --dataset abilene (its demands can be rerouted)");
            }
            if a.input.is_empty() {
                bail!("no series: give --input FILE... or --dataset abilene");
            }
            Ok(vec![load_inputs(a)?])
        }
    }
}

fn load_abilene(
    a: &SeriesInputArgs,
    failure: bool,
    weeks_default: &[usize],
) -> anyhow::Result<Vec<Loaded>> {
    if a.counters.is_some()
        || a.max_gap.is_some()
        || a.scale != 1.0
        || parse_duration(&a.interval)? != abilene::STEP
    {
        bail!("--counters, --max-gap, --scale and --interval apply to --input, not to the Abilene data (5-minute rates in Mbit/s)");
    }
    let dir = match &a.abilene_dir {
        Some(d) => d.clone(),
        None => Abilene::bundled_dir()?,
    };
    let data = Abilene::load(&dir)?;
    let weeks: Vec<usize> = match a.week {
        Some(w) if w == 1 || w == 2 => vec![w],
        Some(w) => bail!("--week is 1 (AbileneTM) or 2 (AbileneTM2), not {w}"),
        None => weeks_default.to_vec(),
    };
    let mut out = Vec::new();
    for w in weeks {
        let (name, tm) = &data.weeks[w - 1];
        let normal = abilene::link_loads(&data.topology, tm, abilene::WEEK_START, None);
        let inputs = vec![
            dir.join("Abilene").display().to_string(),
            dir.join(name).display().to_string(),
        ];
        if failure {
            let busiest = data.busiest_link(w - 1, ABILENE_TRAIN);
            let l = &data.topology.links[busiest];
            let reverse = data
                .topology
                .find(l.to, l.from)
                .context("the busiest link has no reverse")?;
            let f = Failure {
                at: tm.len() - 288,
                links: vec![busiest, reverse],
            };
            let failed = abilene::link_loads(&data.topology, tm, abilene::WEEK_START, Some(&f));
            if failed.unroutable_demand > 0.0 {
                eprintln!(
                    "netfm: {} origin-destination pairs have no path after the failure ({:.1} Mbit/s·intervals unroutable)",
                    failed.unroutable_pairs.len(),
                    failed.unroutable_demand
                );
            }
            out.push(Loaded {
                label: format!("{w}"),
                panel: failed.panel,
                corrections: None,
                scenario: Some((normal.panel, f)),
                inputs,
            });
        } else {
            out.push(Loaded {
                label: format!("{w}"),
                panel: normal.panel,
                corrections: None,
                scenario: None,
                inputs,
            });
        }
    }
    Ok(out)
}

fn load_inputs(a: &SeriesInputArgs) -> anyhow::Result<Loaded> {
    let step = parse_duration(&a.interval).context("--interval")?;
    let kind = match a.counters {
        None => ValueKind::Rate,
        Some(b @ (32 | 64)) => ValueKind::Counter(b),
        Some(b) => bail!("--counters is 32 or 64, not {b}"),
    };
    let max_gap = a
        .max_gap
        .as_deref()
        .map(parse_duration)
        .transpose()
        .context("--max-gap")?
        .map(|s| s as f64);
    if !a.scale.is_finite() || a.scale <= 0.0 {
        bail!("--scale must be a positive number");
    }
    let mut points = Vec::new();
    for p in &a.input {
        let ext = p
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let mut got = match ext.as_deref() {
            Some("csv") => series::read_csv(p)?,
            Some("parquet") => series::read_parquet(p)?,
            Some("json") => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading {}", p.display()))?;
                crate::forecast::prometheus::parse(&text)
                    .with_context(|| format!("{}: a Prometheus query_range result", p.display()))?
            }
            _ => bail!(
                "{}: the kind of file is told by its extension: .csv, .parquet or .json (Prometheus)",
                p.display()
            ),
        };
        points.append(&mut got);
    }
    let (panel, c) = series::to_panel(
        points,
        &GridSpec {
            step,
            kind,
            max_gap,
            scale: a.scale,
        },
    )?;
    Ok(Loaded {
        label: "input".into(),
        panel,
        corrections: Some(c),
        scenario: None,
        inputs: a.input.iter().map(|p| p.display().to_string()).collect(),
    })
}

/// What `forecast series` did.
#[derive(Serialize)]
pub struct SeriesSummary {
    pub out: PathBuf,
    pub series: usize,
    pub intervals: usize,
    pub interval_s: i64,
    pub start: i64,
    pub missing: usize,
    pub corrections: Option<Corrections>,
}

impl fmt::Display for SeriesSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "wrote {}: {} series × {} intervals of {} s from {}; {} missing",
            self.out.display(),
            self.series,
            self.intervals,
            self.interval_s,
            self.start,
            self.missing
        )?;
        if let Some(c) = &self.corrections {
            writeln!(f, "  {}", c.describe())?;
        }
        Ok(())
    }
}

/// `netfm forecast series`.
pub fn series(args: &ForecastSeriesArgs) -> anyhow::Result<SeriesSummary> {
    super::flow_output::check_out(&args.out, args.overwrite)?;
    let mut loaded = load(&args.input, args.failure, &[1])?;
    let l = loaded.remove(0);
    write_panel(&l.panel, &args.out)?;
    Ok(SeriesSummary {
        out: args.out.clone(),
        series: l.panel.values.len(),
        intervals: l.panel.len(),
        interval_s: l.panel.step,
        start: l.panel.start,
        missing: l.panel.missing(),
        corrections: l.corrections,
    })
}

/// Writes a panel as long-format CSV or Parquet (by the extension), whole or not at all.
pub fn write_panel(panel: &Panel, out: &Path) -> anyhow::Result<()> {
    write_panel_with(panel, None, out)
}

/// [`write_panel`] with a second value column from `extra` (same grid and series).
pub fn write_panel_with(
    panel: &Panel,
    extra: Option<(&str, &Panel)>,
    out: &Path,
) -> anyhow::Result<()> {
    let ext = out.extension().and_then(|e| e.to_str());
    if ext != Some("csv") && ext != Some("parquet") {
        bail!("{}: write .csv or .parquet", out.display());
    }
    write_whole(out, |tmp| match ext {
        Some("csv") => {
            use std::io::Write;
            let mut w = std::io::BufWriter::new(std::fs::File::create(tmp)?);
            match extra {
                None => series::write_csv(panel, &mut w)?,
                Some((name, x)) => {
                    writeln!(w, "timestamp,link,value,{name}")?;
                    for i in 0..panel.len() {
                        for (s, link) in panel.names.iter().enumerate() {
                            writeln!(
                                w,
                                "{},{link},{},{}",
                                panel.time(i),
                                panel.values[s][i],
                                x.values[s][i]
                            )?;
                        }
                    }
                }
            }
            w.flush()?;
            Ok(())
        }
        _ => write_parquet(panel, extra, tmp),
    })
}

/// A hidden name beside `out` that keeps its extension (`.partial.NAME`).
fn temp_beside(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map_or("out".into(), |n| n.to_string_lossy().to_string());
    out.with_file_name(format!(".partial.{name}"))
}

/// Runs `write` on a temporary file beside `out`, then renames it to `out`: an output is
/// whole or absent (the temporary file is removed if `write` fails).
pub(crate) fn write_whole(
    out: &Path,
    write: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let tmp = temp_beside(out);
    if let Err(e) = write(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.context(format!("writing {}", out.display())));
    }
    std::fs::rename(&tmp, out).with_context(|| format!("renaming to {}", out.display()))
}

fn write_parquet(panel: &Panel, extra: Option<(&str, &Panel)>, path: &Path) -> anyhow::Result<()> {
    use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::record_batch::RecordBatch;
    use std::sync::Arc;
    let mut fields = vec![
        Field::new("timestamp", DataType::Int64, false),
        Field::new("link", DataType::Utf8, false),
        Field::new("value", DataType::Float64, true),
    ];
    if let Some((name, _)) = extra {
        fields.push(Field::new(name, DataType::Float64, true));
    }
    let schema = Arc::new(Schema::new(fields));
    let file = std::fs::File::create(path)?;
    let mut w = parquet::arrow::ArrowWriter::try_new(file, schema.clone(), None)?;
    let (mut ts, mut names, mut vals, mut more) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..panel.len() {
        for (s, name) in panel.names.iter().enumerate() {
            ts.push(panel.time(i));
            names.push(name.as_str());
            let v = panel.values[s][i];
            vals.push((!v.is_nan()).then_some(v));
            if let Some((_, x)) = extra {
                let v = x.values[s][i];
                more.push((!v.is_nan()).then_some(v));
            }
        }
    }
    let mut cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ts)),
        Arc::new(StringArray::from(names)),
        Arc::new(Float64Array::from(vals)),
    ];
    if extra.is_some() {
        cols.push(Arc::new(Float64Array::from(more)));
    }
    let batch = RecordBatch::try_new(schema, cols)?;
    w.write(&batch)?;
    w.close()?;
    Ok(())
}

/// What `forecast backtest` did.
#[derive(Serialize)]
pub struct BacktestSummary {
    pub rows: Vec<Row>,
    pub failure: Vec<DriftRow>,
    pub spec: Spec,
    pub inputs: Vec<String>,
    pub elapsed_s: f64,
    pub version: &'static str,
}

impl fmt::Display for BacktestSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", backtest::table(&self.rows))?;
        if !self.failure.is_empty() {
            writeln!(
                f,
                "failure of the busiest link and its reverse at the start of the last day; links shifted by more than 20%: {}",
                self.failure[0].shifted_links.join(", ")
            )?;
            writeln!(f, "{}", drift::table(&self.failure))?;
        }
        writeln!(f, "backtest done in {:.1} s", self.elapsed_s)
    }
}

/// netfm's forecaster as the flags describe it.
pub fn forecaster(
    a: &crate::cli::ForecasterArgs,
    seed: u64,
    opts: crate::runtime::RuntimeOptions,
) -> anyhow::Result<NetfmForecaster> {
    if a.steps == 0 {
        bail!("--steps must be at least 1");
    }
    if a.batch == 0 {
        bail!("--batch must be at least 1");
    }
    if !(a.lr.is_finite() && a.lr > 0.0) {
        bail!("--lr must be a positive number");
    }
    let cfg = ForecastConfig {
        context: a.context,
        patch: a.patch,
        horizon: a.model_horizon,
        d_model: a.d_model,
        layers: a.layers,
        heads: a.heads,
        ff: 2 * a.d_model,
        ..ForecastConfig::default()
    };
    cfg.validate()
        .map_err(|e| anyhow::anyhow!("the forecaster's shape: {e}"))?;
    let settings = TrainSettings {
        steps: a.steps,
        batch: a.batch,
        lr: a.lr,
        warmup: (a.steps / 10).min(100),
        seed,
        calendar: a.calendar.parse()?,
        ..Default::default()
    };
    Ok(NetfmForecaster::new(cfg, settings, opts))
}

/// Every model by name, in report order: netfm's, then the baselines.
fn all_models(
    args: &ForecastBacktestArgs,
    season: usize,
) -> anyhow::Result<Vec<Box<dyn Forecaster>>> {
    let opts = args.runtime.to_options()?;
    let netfm: Box<dyn Forecaster> = if args.model.ensemble > 1 {
        let members = (0..args.model.ensemble as u64)
            .map(|i| forecaster(&args.model, args.seed + i, opts.clone()))
            .collect::<anyhow::Result<_>>()?;
        Box::new(crate::forecast::model::Ensemble { members })
    } else {
        Box::new(forecaster(&args.model, args.seed, opts)?)
    };
    let mut out: Vec<Box<dyn Forecaster>> = vec![netfm];
    out.extend(baselines::all(season));
    Ok(out)
}

/// The models to run, by name.
fn models_named(
    args: &ForecastBacktestArgs,
    season: usize,
) -> anyhow::Result<Vec<Box<dyn Forecaster>>> {
    let all = all_models(args, season)?;
    if args.models.is_empty() {
        return Ok(all);
    }
    let known: Vec<String> = all.iter().map(|m| m.name().to_string()).collect();
    let mut out = Vec::new();
    for n in &args.models {
        let mut fresh = all_models(args, season)?;
        let Some(i) = fresh.iter().position(|m| m.name() == n) else {
            bail!("unknown model {n:?}: the models are {}", known.join(", "));
        };
        out.push(fresh.swap_remove(i));
    }
    Ok(out)
}

/// `netfm forecast backtest`.
pub fn backtest(args: &ForecastBacktestArgs) -> anyhow::Result<BacktestSummary> {
    let started = Instant::now();
    let abilene = args.input.dataset.as_deref() == Some("abilene");
    let failure = args.failure.unwrap_or(abilene && args.models.is_empty());
    if let Some(p) = &args.json {
        super::flow_output::check_out(p, true)?;
    }
    let loaded = load(&args.input, failure, &[1, 2])?;
    let step = loaded[0].panel.step;
    let horizons: Vec<i64> = args
        .horizons
        .iter()
        .map(|h| parse_duration(h).with_context(|| format!("--horizons {h}")))
        .collect::<anyhow::Result<_>>()?;
    let mut steps = Vec::new();
    for h in &horizons {
        if h % step != 0 {
            bail!(
                "horizon {} s is not a whole number of {} s intervals",
                h,
                step
            );
        }
        steps.push((h / step) as usize);
    }
    let origin_every = parse_duration(&args.origin_every).context("--origin-every")?;
    if origin_every % step != 0 {
        bail!("--origin-every must be a whole number of intervals ({step} s)");
    }
    let season = (86_400 / step).max(1) as usize;
    let quiet = args.quiet;
    let mut rows = Vec::new();
    let mut failure_rows = Vec::new();
    let mut spec_out = None;
    for l in &loaded {
        let train = match &args.train {
            Some(t) => {
                let s = parse_duration(t).context("--train")?;
                (s / step) as usize
            }
            None if abilene => ABILENE_TRAIN,
            None => l.panel.len() * 7 / 10,
        };
        if train < 2 * season.min(train.max(1)) || train + 1 > l.panel.len() {
            bail!(
                "too little history: {} intervals, {train} of them for training",
                l.panel.len()
            );
        }
        let spec = Spec {
            train,
            origin_every: (origin_every / step) as usize,
            horizon: *steps.iter().max().context("no --horizons")?,
            steps: steps.clone(),
            quantiles: vec![0.1, 0.5, 0.9],
            threads: args.jobs.max(1),
        };
        let mut models = models_named(args, season)?;
        let bar = step_bar(0, 0, quiet);
        bar.set_message(format!("week {}: backtest", l.label));
        let mut progress = |done: u64, total: u64| {
            bar.set_length(total);
            bar.set_position(done);
        };
        // The backtest scores the scenario with the failure only where asked to; the
        // benchmark table is on the week as measured.
        let (bench_panel, scenario) = match &l.scenario {
            Some((normal, f)) => (normal, Some((&l.panel, f))),
            None => (&l.panel, None),
        };
        let mut got = backtest::run(bench_panel, &spec, &mut models, &l.label, &mut progress)?;
        rows.append(&mut got);
        if let Some((failed, f)) = scenario {
            let links = drift::shifted_links(failed, bench_panel, f.at, 24, 0.2);
            say(
                &bar,
                quiet,
                format!(
                    "week {}: links {} and {} fail at interval {}; {} links shift by more than 20%",
                    l.label,
                    failed.names[f.links[0]],
                    failed.names[f.links[1]],
                    f.at,
                    links.len()
                ),
            );
            if !links.is_empty() {
                bar.set_message(format!("week {}: failure", l.label));
                for m in models.iter_mut() {
                    let variants: &[bool] = if m.adaptive() {
                        &[false, true]
                    } else {
                        &[true]
                    };
                    for &adapt in variants {
                        m.set_event(adapt.then_some(f.at));
                        let mut got = drift::run(
                            m.as_ref(),
                            failed,
                            &links,
                            f.at,
                            12 * season / 24,
                            &spec,
                            &l.label,
                            &mut progress,
                        )?;
                        if adapt && m.adaptive() {
                            for r in &mut got {
                                r.model = format!("{} (adapted)", r.model);
                            }
                        }
                        failure_rows.append(&mut got);
                    }
                    m.set_event(None);
                }
            }
        }
        bar.finish_and_clear();
        spec_out = Some(spec);
    }
    let summary = BacktestSummary {
        rows,
        failure: failure_rows,
        spec: spec_out.context("nothing to backtest")?,
        inputs: loaded.iter().flat_map(|l| l.inputs.clone()).collect(),
        elapsed_s: started.elapsed().as_secs_f64(),
        version: env!("CARGO_PKG_VERSION"),
    };
    if let Some(p) = &args.json {
        let text = serde_json::to_string_pretty(&serde_json::json!({
            "records": summary.rows,
            "failure": summary.failure,
            "spec": summary.spec,
            "inputs": summary.inputs,
            "version": summary.version,
        }))?;
        write_whole(p, |tmp| Ok(std::fs::write(tmp, text)?))?;
    }
    Ok(summary)
}

/// The file beside `model.onnx` saying what made the model.
pub const FORECASTER_FILE: &str = "forecaster.json";
pub const MODEL_FILE: &str = "model.onnx";

/// What `forecast train` did.
#[derive(Serialize)]
pub struct TrainSummary {
    pub out: PathBuf,
    pub series: usize,
    pub intervals: usize,
    pub steps: u64,
    pub final_loss: f64,
    pub train_s: f64,
    pub corrections: Option<Corrections>,
}

impl fmt::Display for TrainSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "trained on {} series × {} intervals: {} steps in {:.1} s, final loss {:.4}; model in {}",
            self.series,
            self.intervals,
            self.steps,
            self.train_s,
            self.final_loss,
            self.out.display()
        )?;
        if let Some(c) = &self.corrections {
            writeln!(f, "  {}", c.describe())?;
        }
        Ok(())
    }
}

/// Refuses a folder that holds something other than a forecaster, unless `overwrite`.
fn check_model_dir(out: &Path, overwrite: bool) -> anyhow::Result<()> {
    if out.is_file() {
        bail!("{} is a file; --out names the model folder", out.display());
    }
    if out.is_dir() && std::fs::read_dir(out)?.next().is_some() && !overwrite {
        bail!("{} is not empty; --overwrite replaces it", out.display());
    }
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.is_dir() {
            bail!("{}: no such folder", parent.display());
        }
    }
    Ok(())
}

/// `netfm forecast train`.
pub fn train(args: &ForecastTrainArgs) -> anyhow::Result<TrainSummary> {
    if args.model.ensemble > 1 {
        bail!("--ensemble applies to `forecast backtest`; a saved model is one forecaster");
    }
    check_model_dir(&args.out, args.overwrite)?;
    let mut loaded = load(&args.input, false, &[1])?;
    let l = loaded.remove(0);
    let n = match &args.train {
        Some(t) => (parse_duration(t).context("--train")? / l.panel.step) as usize,
        None => l.panel.len(),
    };
    if n == 0 || n > l.panel.len() {
        bail!(
            "--train covers {n} intervals; the series have {}",
            l.panel.len()
        );
    }
    let panel = l.panel.slice(0, n);
    let mut m = forecaster(&args.model, args.seed, args.runtime.to_options()?)?;
    let bar = step_bar(args.model.steps, 0, args.quiet);
    m.progress = Some(bar.clone());
    m.fit(&panel)?;
    bar.finish_and_clear();
    let onnx = m.onnx().context("no trained model")?;
    // Written beside, then renamed: a model folder is whole or absent.
    let tmp = temp_beside(&args.out);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    std::fs::write(tmp.join(MODEL_FILE), onnx)?;
    let info = serde_json::json!({
        "job": "forecast train",
        "version": env!("CARGO_PKG_VERSION"),
        "config": m.cfg,
        "settings": m.settings,
        "interval_s": panel.step,
        "series": panel.names,
        "intervals": n,
        "start": panel.start,
        "inputs": l.inputs,
        "final_loss": m.final_loss,
        "train_s": m.train_s,
        "corrections": l.corrections,
    });
    std::fs::write(
        tmp.join(FORECASTER_FILE),
        serde_json::to_string_pretty(&info)?,
    )?;
    if args.out.exists() {
        std::fs::remove_dir_all(&args.out)
            .with_context(|| format!("replacing {}", args.out.display()))?;
    }
    std::fs::rename(&tmp, &args.out)
        .with_context(|| format!("renaming to {}", args.out.display()))?;
    Ok(TrainSummary {
        out: args.out.clone(),
        series: panel.values.len(),
        intervals: n,
        steps: m.settings.steps,
        final_loss: m.final_loss,
        train_s: m.train_s,
        corrections: l.corrections,
    })
}

/// A saved forecaster.
pub fn load_model(
    dir: &Path,
    opts: crate::runtime::RuntimeOptions,
) -> anyhow::Result<NetfmForecaster> {
    let info: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join(FORECASTER_FILE)).with_context(|| {
            format!(
                "{}: not a forecaster folder (no {FORECASTER_FILE})",
                dir.display()
            )
        })?,
    )
    .with_context(|| format!("{}/{FORECASTER_FILE}", dir.display()))?;
    if info["job"] != "forecast train" {
        bail!("{}: not a `forecast train` model", dir.display());
    }
    let settings: TrainSettings = serde_json::from_value(info["settings"].clone())
        .with_context(|| format!("{}/{FORECASTER_FILE}: its settings", dir.display()))?;
    let step = info["interval_s"]
        .as_i64()
        .with_context(|| format!("{}/{FORECASTER_FILE}: no interval_s", dir.display()))?;
    let bytes = std::fs::read(dir.join(MODEL_FILE))
        .with_context(|| format!("reading {}/{MODEL_FILE}", dir.display()))?;
    NetfmForecaster::from_onnx(&bytes, settings, step, opts)
        .with_context(|| format!("{}/{MODEL_FILE}", dir.display()))
}

/// What `forecast predict` did.
#[derive(Serialize)]
pub struct PredictSummary {
    pub out: PathBuf,
    pub model: String,
    pub series: usize,
    pub horizon_steps: usize,
    pub quantiles: Vec<f64>,
    /// Reading the model and the series, then forecasting every series.
    pub load_s: f64,
    pub predict_s: f64,
    pub plot: Option<PathBuf>,
}

impl fmt::Display for PredictSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: {} series × {} steps at quantiles {:?} in {:.1} ms (after {:.1} ms loading); wrote {}",
            self.model,
            self.series,
            self.horizon_steps,
            self.quantiles,
            self.predict_s * 1e3,
            self.load_s * 1e3,
            self.out.display()
        )?;
        if let Some(p) = &self.plot {
            writeln!(f, "  plot: {}", p.display())?;
        }
        Ok(())
    }
}

/// `netfm forecast predict`.
pub fn predict(args: &ForecastPredictArgs) -> anyhow::Result<PredictSummary> {
    let t0 = Instant::now();
    super::flow_output::check_out(&args.out, args.overwrite)?;
    if let Some(p) = &args.plot {
        super::flow_output::check_out(p, args.overwrite)?;
    }
    let ext = args.out.extension().and_then(|e| e.to_str()).unwrap_or("");
    if !["csv", "parquet", "json"].contains(&ext) {
        bail!("{}: write .csv, .parquet or .json", args.out.display());
    }
    let mut qs = args.quantiles.clone();
    if qs.is_empty() || qs.iter().any(|q| !(*q > 0.0 && *q < 1.0)) {
        bail!("--quantiles must lie strictly between 0 and 1");
    }
    if qs.windows(2).any(|w| w[1] <= w[0]) {
        bail!("--quantiles must be increasing");
    }
    qs.dedup();
    let mut loaded = load(&args.input, false, &[1])?;
    let l = loaded.remove(0);
    let panel = &l.panel;
    let horizon_s = parse_duration(&args.horizon).context("--horizon")?;
    if horizon_s % panel.step != 0 {
        bail!(
            "--horizon {} is not a whole number of the series' {} s intervals",
            args.horizon,
            panel.step
        );
    }
    let horizon = (horizon_s / panel.step) as usize;
    let season = (86_400 / panel.step).max(1) as usize;
    let event = match &args.event {
        Some(e) => {
            let t =
                series::parse_time(e).with_context(|| format!("--event {e:?} is not a time"))?;
            let i = ((t - panel.start as f64) / panel.step as f64).ceil();
            if i <= 0.0 || i >= panel.len() as f64 {
                bail!("--event {e}: not inside the series' span");
            }
            Some(i as usize)
        }
        None => None,
    };
    let mut model: Box<dyn Forecaster> = match (&args.model, &args.baseline) {
        (Some(dir), _) => {
            let m = load_model(dir, args.runtime.to_options()?)?;
            if m.step() != panel.step {
                bail!(
                    "the model was trained on {} s intervals; these series are on {} s",
                    m.step(),
                    panel.step
                );
            }
            if panel.len() < m.cfg.context {
                bail!(
                    "too little history: the model reads {} intervals, the series have {}",
                    m.cfg.context,
                    panel.len()
                );
            }
            Box::new(m)
        }
        (None, Some(name)) => {
            let mut all = baselines::all(season);
            let known: Vec<String> = all.iter().map(|m| m.name().to_string()).collect();
            let i = all
                .iter()
                .position(|m| m.name() == name)
                .with_context(|| format!("unknown baseline {name:?}: {}", known.join(", ")))?;
            let mut m = all.swap_remove(i);
            m.fit(panel)?;
            m
        }
        (None, None) => bail!("give --model DIR or --baseline NAME"),
    };
    if event.is_some() {
        if !model.adaptive() {
            bail!(
                "--event: the {} baseline does not adapt to events",
                model.name()
            );
        }
        model.set_event(event);
    }
    let load_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let reqs: Vec<(usize, &[f64], i64)> = (0..panel.values.len())
        .map(|s| (s, &panel.values[s][..], panel.time(panel.len())))
        .collect();
    let fc = model.forecast_many(&reqs, horizon, &qs)?;
    let predict_s = t1.elapsed().as_secs_f64();
    write_forecasts(&args.out, panel, &fc, &qs)?;
    let plot = match &args.plot {
        Some(p) => {
            let s = match &args.plot_series {
                Some(name) => panel
                    .names
                    .iter()
                    .position(|n| n == name)
                    .with_context(|| format!("--plot-series {name:?}: no such series"))?,
                None => 0,
            };
            super::plot::forecast_chart(p, panel, s, &fc[s], &qs)?;
            Some(p.clone())
        }
        None => None,
    };
    Ok(PredictSummary {
        out: args.out.clone(),
        model: model.name().to_string(),
        series: panel.values.len(),
        horizon_steps: horizon,
        quantiles: qs,
        load_s,
        predict_s,
        plot,
    })
}

fn q_name(q: f64) -> String {
    format!("q{}", q)
}

/// Forecasts as rows `link, origin, timestamp, step, q…` (CSV, Parquet) or one object per
/// series (JSON), whole or not at all.
fn write_forecasts(
    out: &Path,
    panel: &Panel,
    fc: &[Vec<Vec<f64>>],
    qs: &[f64],
) -> anyhow::Result<()> {
    let origin = panel.time(panel.len());
    let ext = out.extension().and_then(|e| e.to_str()).unwrap_or("");
    write_whole(out, |tmp| {
        match ext {
            "json" => {
                let v: Vec<serde_json::Value> = fc
                    .iter()
                    .enumerate()
                    .map(|(s, f)| {
                        serde_json::json!({
                            "link": panel.names[s],
                            "origin": origin,
                            "forecasts": f.iter().enumerate().map(|(k, q)| {
                                let mut o = serde_json::Map::new();
                                o.insert("timestamp".into(), (origin + k as i64 * panel.step).into());
                                o.insert("step".into(), (k + 1).into());
                                for (qi, &x) in q.iter().enumerate() {
                                    o.insert(q_name(qs[qi]), x.into());
                                }
                                serde_json::Value::Object(o)
                            }).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                std::fs::write(tmp, serde_json::to_string_pretty(&v)?)?;
            }
            "csv" => {
                use std::io::Write;
                let mut w = std::io::BufWriter::new(std::fs::File::create(tmp)?);
                let qn: Vec<String> = qs.iter().map(|&q| q_name(q)).collect();
                writeln!(w, "link,origin,timestamp,step,{}", qn.join(","))?;
                for (s, f) in fc.iter().enumerate() {
                    for (k, q) in f.iter().enumerate() {
                        let vals: Vec<String> = q.iter().map(|x| x.to_string()).collect();
                        writeln!(
                            w,
                            "{},{origin},{},{},{}",
                            panel.names[s],
                            origin + k as i64 * panel.step,
                            k + 1,
                            vals.join(",")
                        )?;
                    }
                }
                w.flush()?;
            }
            _ => {
                use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
                use arrow::datatypes::{DataType, Field, Schema};
                use std::sync::Arc;
                let mut fields = vec![
                    Field::new("link", DataType::Utf8, false),
                    Field::new("origin", DataType::Int64, false),
                    Field::new("timestamp", DataType::Int64, false),
                    Field::new("step", DataType::Int64, false),
                ];
                for &q in qs {
                    fields.push(Field::new(q_name(q), DataType::Float64, false));
                }
                let schema = Arc::new(Schema::new(fields));
                let (mut link, mut org, mut ts, mut st) =
                    (Vec::new(), Vec::new(), Vec::new(), Vec::new());
                let mut cols: Vec<Vec<f64>> = vec![Vec::new(); qs.len()];
                for (s, f) in fc.iter().enumerate() {
                    for (k, q) in f.iter().enumerate() {
                        link.push(panel.names[s].as_str());
                        org.push(origin);
                        ts.push(origin + k as i64 * panel.step);
                        st.push(k as i64 + 1);
                        for (qi, &x) in q.iter().enumerate() {
                            cols[qi].push(x);
                        }
                    }
                }
                let mut arrays: Vec<ArrayRef> = vec![
                    Arc::new(StringArray::from(link)),
                    Arc::new(Int64Array::from(org)),
                    Arc::new(Int64Array::from(ts)),
                    Arc::new(Int64Array::from(st)),
                ];
                for c in cols {
                    arrays.push(Arc::new(Float64Array::from(c)));
                }
                let batch = arrow::record_batch::RecordBatch::try_new(schema.clone(), arrays)?;
                let mut w = parquet::arrow::ArrowWriter::try_new(
                    std::fs::File::create(tmp)?,
                    schema,
                    None,
                )?;
                w.write(&batch)?;
                w.close()?;
            }
        }
        Ok(())
    })
}

/// What `netfm loads` did.
#[derive(Serialize)]
pub struct LoadsSummary {
    pub out: PathBuf,
    pub captures: usize,
    pub series: Vec<String>,
    pub intervals: usize,
    pub interval_s: i64,
    pub frames: u64,
    pub not_ip: u64,
    pub folded_into_other: u64,
    pub warnings: Vec<String>,
    pub elapsed_s: f64,
}

impl fmt::Display for LoadsSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} captures, {} frames ({} not IP, left out): {} series × {} intervals of {} s in {:.2} s; wrote {}",
            self.captures,
            self.frames,
            self.not_ip,
            self.series.len(),
            self.intervals,
            self.interval_s,
            self.elapsed_s,
            self.out.display()
        )?;
        if self.folded_into_other > 0 {
            writeln!(
                f,
                "  {} packets summed into `other` (--max-series reached)",
                self.folded_into_other
            )?;
        }
        for w in &self.warnings {
            writeln!(f, "  warning: {w}")?;
        }
        Ok(())
    }
}

/// `netfm loads`.
pub fn loads(args: &crate::cli::LoadsArgs) -> anyhow::Result<LoadsSummary> {
    use crate::forecast::loads::{from_captures, private_ranges, LoadSpec, Prefix};
    let t = Instant::now();
    super::flow_output::check_out(&args.out, args.overwrite)?;
    let ext = args.out.extension().and_then(|e| e.to_str()).unwrap_or("");
    if ext != "csv" && ext != "parquet" {
        bail!("{}: write .csv or .parquet", args.out.display());
    }
    let local: Vec<Prefix> = if args.local.is_empty() {
        private_ranges()
    } else {
        args.local
            .iter()
            .map(|s| s.parse().with_context(|| format!("--local {s}")))
            .collect::<anyhow::Result<_>>()?
    };
    if args.prefix4 > 32 || args.prefix6 > 128 {
        bail!("--prefix4 is at most 32 and --prefix6 at most 128");
    }
    let expanded = crate::capture::expand_inputs(&args.captures)?;
    if expanded.inputs.is_empty() {
        bail!("no capture files in {:?}", args.captures);
    }
    let spec = LoadSpec {
        step: parse_duration(&args.interval).context("--interval")?,
        by: args.by.parse()?,
        local,
        prefix4: args.prefix4,
        prefix6: args.prefix6,
        max_series: args.max_series.max(1),
        max_intervals: args.max_intervals.max(1),
    };
    let l = from_captures(&expanded.inputs, &spec)?;
    write_panel_with(&l.bits, Some(("packets", &l.packets)), &args.out)?;
    let mut warnings = l.warnings;
    warnings.extend(expanded.skipped.iter().map(|w| w.to_string()));
    Ok(LoadsSummary {
        out: args.out.clone(),
        captures: expanded.inputs.len(),
        series: l.bits.names.clone(),
        intervals: l.bits.len(),
        interval_s: l.bits.step,
        frames: l.frames,
        not_ip: l.not_ip,
        folded_into_other: l.folded,
        warnings,
        elapsed_s: t.elapsed().as_secs_f64(),
    })
}
