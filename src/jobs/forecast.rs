//! `netfm forecast`: reading series onto a grid (`series`) and rolling-origin backtests of
//! netfm's forecaster beside the baselines (`backtest`), Abilene's benchmark and failure
//! scenario included.

use super::{say, step_bar};
use crate::cli::{ForecastBacktestArgs, ForecastSeriesArgs, SeriesInputArgs};
use crate::forecast::abilene::{self, Abilene, Failure};
use crate::forecast::backtest::{self, parse_duration, Row, Spec};
use crate::forecast::baselines::{self, Forecaster};
use crate::forecast::drift::{self, DriftRow};
use crate::forecast::model::{NetfmForecaster, TrainSettings};
use netfm_models::forecaster::ForecastConfig;
use crate::forecast::series::{self, Corrections, GridSpec, Panel, ValueKind};
use anyhow::{bail, Context};
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
    let tmp = temp_beside(out);
    let result = match out.extension().and_then(|e| e.to_str()) {
        Some("csv") => {
            let mut w = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
            series::write_csv(panel, &mut w)
                .and_then(|_| std::io::Write::flush(&mut w))
                .map_err(anyhow::Error::from)
        }
        Some("parquet") => write_parquet(panel, &tmp),
        _ => bail!("{}: write .csv or .parquet", out.display()),
    };
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.context(format!("writing {}", out.display())));
    }
    std::fs::rename(&tmp, out).with_context(|| format!("renaming to {}", out.display()))
}

fn temp_beside(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map_or("out".into(), |n| n.to_string_lossy().to_string());
    out.with_file_name(format!(".{name}.partial"))
}

fn write_parquet(panel: &Panel, path: &Path) -> anyhow::Result<()> {
    use arrow::array::{Float64Array, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::record_batch::RecordBatch;
    use std::sync::Arc;
    let schema = Arc::new(Schema::new(vec![
        Field::new("timestamp", DataType::Int64, false),
        Field::new("link", DataType::Utf8, false),
        Field::new("value", DataType::Float64, true),
    ]));
    let file = std::fs::File::create(path)?;
    let mut w = parquet::arrow::ArrowWriter::try_new(file, schema.clone(), None)?;
    let (mut ts, mut names, mut vals) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..panel.len() {
        for (s, name) in panel.names.iter().enumerate() {
            ts.push(panel.time(i));
            names.push(name.as_str());
            let v = panel.values[s][i];
            vals.push((!v.is_nan()).then_some(v));
        }
    }
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(ts)),
            Arc::new(StringArray::from(names)),
            Arc::new(Float64Array::from(vals)),
        ],
    )?;
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

/// Every model by name, in report order: netfm's, then the baselines.
fn all_models(args: &ForecastBacktestArgs, season: usize) -> anyhow::Result<Vec<Box<dyn Forecaster>>> {
    let mut settings = TrainSettings {
        seed: args.seed,
        ..Default::default()
    };
    if let Some(s) = args.steps {
        if s == 0 {
            bail!("--steps must be at least 1");
        }
        settings.steps = s;
    }
    let mut out: Vec<Box<dyn Forecaster>> = vec![Box::new(NetfmForecaster::new(
        ForecastConfig::default(),
        settings,
        args.runtime.to_options()?,
    ))];
    out.extend(baselines::all(season));
    Ok(out)
}

/// The models to run, by name.
fn models_named(args: &ForecastBacktestArgs, season: usize) -> anyhow::Result<Vec<Box<dyn Forecaster>>> {
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
                    let variants: &[bool] = if m.adaptive() { &[false, true] } else { &[true] };
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
        let tmp = temp_beside(p);
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", p.display()))?;
        std::fs::rename(&tmp, p)?;
    }
    Ok(summary)
}
