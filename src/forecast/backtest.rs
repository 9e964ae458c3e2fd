//! Rolling-origin backtests: fit every model on the training intervals, then from each
//! origin (every `origin_every` intervals through the test part) forecast `horizon` steps of
//! every series and score the steps asked for against what happened.
//!
//! Scores per model and step, over every (series, origin) whose target is observed:
//! - MAE and RMSE of the p50, in the series' units;
//! - sMAPE, `100 · mean(2|e| / (|y| + |ŷ|))` (0 where both are 0);
//! - MASE, `mean(|e| / s)` with `s` the series' in-sample one-step naive MAE on the
//!   training part (so a MASE of 1 is the naive method's training error);
//! - coverage of the central interval between the lowest and highest quantile asked for
//!   (p10–p90: the 80% interval).

use super::baselines::Forecaster;
use super::series::Panel;
use anyhow::bail;
use serde::Serialize;
use std::time::Instant;

/// How a backtest runs.
#[derive(Clone, Debug, Serialize)]
pub struct Spec {
    /// Intervals of training data at the panel's start.
    pub train: usize,
    /// A forecast origin every this many intervals from the end of training.
    pub origin_every: usize,
    /// Steps forecast from each origin.
    pub horizon: usize,
    /// The steps scored (1 = the next interval).
    pub steps: Vec<usize>,
    /// Sorted; the first and last bound the scored interval.
    pub quantiles: Vec<f64>,
    /// Worker threads for models that forecast series independently.
    pub threads: usize,
}

/// The sums behind one (model, step) row.
#[derive(Clone, Debug, Default)]
pub struct Acc {
    pub n: u64,
    pub abs: f64,
    pub sq: f64,
    pub smape: f64,
    pub mase: f64,
    pub covered: u64,
}

impl Acc {
    pub fn add(&mut self, y: f64, q: &[f64], scale: f64) {
        let p50 = q[q.len() / 2];
        let e = y - p50;
        self.n += 1;
        self.abs += e.abs();
        self.sq += e * e;
        let denom = y.abs() + p50.abs();
        if denom > 0.0 {
            self.smape += 2.0 * e.abs() / denom;
        }
        self.mase += e.abs() / scale;
        if q[0] <= y && y <= q[q.len() - 1] {
            self.covered += 1;
        }
    }

    pub fn mae(&self) -> f64 {
        self.abs / self.n as f64
    }
}

/// One row of results.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub model: String,
    /// The step scored, as a duration (`5m`, `1h`).
    pub horizon: String,
    pub step: usize,
    pub week: String,
    pub mae: f64,
    pub rmse: f64,
    pub smape: f64,
    pub mase: f64,
    pub coverage80: f64,
    pub points: u64,
    /// Seconds to fit the model (training included) and to forecast every origin.
    pub fit_s: f64,
    pub forecast_s: f64,
}

/// A duration in the units people write: `5m`, `1h`, `90s`, `2d`.
pub fn duration_label(secs: i64) -> String {
    if secs % 86_400 == 0 {
        format!("{}d", secs / 86_400)
    } else if secs % 3600 == 0 {
        format!("{}h", secs / 3600)
    } else if secs % 60 == 0 {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

/// Parses `5m`, `1h`, `300s`, `2d` or plain seconds.
pub fn parse_duration(s: &str) -> anyhow::Result<i64> {
    let s = s.trim();
    let (num, mul) = match s.char_indices().last() {
        Some((i, 's')) => (&s[..i], 1),
        Some((i, 'm')) => (&s[..i], 60),
        Some((i, 'h')) => (&s[..i], 3600),
        Some((i, 'd')) => (&s[..i], 86_400),
        Some((i, 'w')) => (&s[..i], 604_800),
        _ => (s, 1),
    };
    let n: i64 = num
        .parse()
        .map_err(|_| anyhow::anyhow!("{s:?} is not a duration (e.g. 300s, 5m, 1h, 2d)"))?;
    if n <= 0 {
        bail!("the duration {s:?} must be positive");
    }
    Ok(n * mul)
}

/// The in-sample one-step naive MAE of each series (MASE's scale); 1 where undefined.
pub fn mase_scales(train: &Panel) -> Vec<f64> {
    train
        .values
        .iter()
        .map(|v| {
            let d: Vec<f64> = v
                .windows(2)
                .map(|w| (w[1] - w[0]).abs())
                .filter(|x| !x.is_nan())
                .collect();
            let m = d.iter().sum::<f64>() / d.len().max(1) as f64;
            if m > 0.0 {
                m
            } else {
                1.0
            }
        })
        .collect()
}

/// The forecast origins of a spec over `len` intervals.
pub fn origins(spec: &Spec, len: usize) -> Vec<usize> {
    (spec.train..len)
        .step_by(spec.origin_every.max(1))
        .collect()
}

/// Every series' forecasts at one origin, `[series][step][quantile]`, spread over threads
/// where the model forecasts series independently.
pub fn forecast_origin(
    model: &dyn Forecaster,
    panel: &Panel,
    origin: usize,
    spec: &Spec,
    parallel: bool,
) -> anyhow::Result<Vec<Vec<Vec<f64>>>> {
    let reqs: Vec<(usize, &[f64], i64)> = (0..panel.values.len())
        .map(|s| (s, &panel.values[s][..origin], panel.time(origin)))
        .collect();
    let threads = if parallel { spec.threads.max(1) } else { 1 };
    if threads == 1 || reqs.len() < 2 {
        return model.forecast_many(&reqs, spec.horizon, &spec.quantiles);
    }
    let chunk = reqs.len().div_ceil(threads);
    std::thread::scope(|sc| {
        let handles: Vec<_> = reqs
            .chunks(chunk)
            .map(|c| sc.spawn(move || model.forecast_many(c, spec.horizon, &spec.quantiles)))
            .collect();
        let mut out = Vec::with_capacity(reqs.len());
        for h in handles {
            out.extend(
                h.join()
                    .map_err(|_| anyhow::anyhow!("a forecasting thread panicked"))??,
            );
        }
        Ok(out)
    })
}

/// Runs `models` over `panel` (its first `spec.train` intervals train them); rows per model
/// and scored step, labelled `week`. `progress(done, total)` after each origin.
pub fn run(
    panel: &Panel,
    spec: &Spec,
    models: &mut [Box<dyn Forecaster>],
    week: &str,
    progress: &mut dyn FnMut(u64, u64),
) -> anyhow::Result<Vec<Row>> {
    if spec.train >= panel.len() {
        bail!(
            "{} training intervals leave nothing to test in {}",
            spec.train,
            panel.len()
        );
    }
    if spec.steps.iter().any(|&s| s == 0 || s > spec.horizon) {
        bail!("the scored steps must lie in 1..={}", spec.horizon);
    }
    let train = panel.slice(0, spec.train);
    let scales = mase_scales(&train);
    let origins = origins(spec, panel.len());
    let total = (origins.len() * models.len()) as u64;
    let mut done = 0;
    let mut rows = Vec::new();
    for model in models.iter_mut() {
        let t = Instant::now();
        model.fit(&train)?;
        let fit_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut acc = vec![Acc::default(); spec.steps.len()];
        for &o in &origins {
            let fc = forecast_origin(model.as_ref(), panel, o, spec, model.parallel())?;
            for (s, f) in fc.iter().enumerate() {
                for (k, &step) in spec.steps.iter().enumerate() {
                    let Some(&y) = panel.values[s].get(o + step - 1) else {
                        continue;
                    };
                    if y.is_nan() {
                        continue;
                    }
                    acc[k].add(y, &f[step - 1], scales[s]);
                }
            }
            done += 1;
            progress(done, total);
        }
        let forecast_s = t.elapsed().as_secs_f64();
        for (k, &step) in spec.steps.iter().enumerate() {
            let a = &acc[k];
            let n = a.n.max(1) as f64;
            rows.push(Row {
                model: model.name().to_string(),
                horizon: duration_label(step as i64 * panel.step),
                step,
                week: week.to_string(),
                mae: a.abs / n,
                rmse: (a.sq / n).sqrt(),
                smape: 100.0 * a.smape / n,
                mase: a.mase / n,
                coverage80: a.covered as f64 / n,
                points: a.n,
                fit_s,
                forecast_s,
            });
        }
    }
    Ok(rows)
}

/// The rows as a Markdown table.
pub fn table(rows: &[Row]) -> String {
    let mut s = String::from(
        "| week | horizon | model | MAE | RMSE | sMAPE % | MASE | 80% coverage | points |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {:.3} | {:.3} | {:.2} | {:.3} | {:.3} | {} |\n",
            r.week, r.horizon, r.model, r.mae, r.rmse, r.smape, r.mase, r.coverage80, r.points
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forecast::baselines::Naive;

    #[test]
    fn durations_round_trip() {
        assert_eq!(parse_duration("5m").unwrap(), 300);
        assert_eq!(parse_duration("1h").unwrap(), 3600);
        assert_eq!(parse_duration("300").unwrap(), 300);
        assert!(parse_duration("0m").is_err());
        assert!(parse_duration("soon").is_err());
        assert_eq!(duration_label(300), "5m");
        assert_eq!(duration_label(3600), "1h");
    }

    #[test]
    fn naive_on_a_ramp_has_the_errors_by_hand() {
        // y = i: the naive forecast h steps ahead is off by exactly h.
        let y: Vec<f64> = (0..40).map(|i| i as f64).collect();
        let panel = Panel {
            start: 0,
            step: 300,
            names: vec!["a".into()],
            values: vec![y],
        };
        let spec = Spec {
            train: 20,
            origin_every: 5,
            horizon: 3,
            steps: vec![1, 3],
            quantiles: vec![0.1, 0.5, 0.9],
            threads: 2,
        };
        let mut models: Vec<Box<dyn Forecaster>> = vec![Box::new(Naive::default())];
        let rows = run(&panel, &spec, &mut models, "w", &mut |_, _| {}).unwrap();
        assert_eq!(rows.len(), 2);
        // Origins 20, 25, 30, 35: every step 1 and 3 target exists.
        assert_eq!(rows[0].points, 4);
        assert_eq!(rows[0].mae, 1.0);
        assert_eq!(rows[1].mae, 3.0);
        assert_eq!(rows[1].mase, 3.0);
        assert_eq!(rows[1].horizon, "15m");
        // σ of one-step changes is 1 (all changes are 1: σ = √(n/(n−1))), so the p90 at
        // step 1 is last + 1.28·1.03 ≥ truth: covered.
        assert_eq!(rows[0].coverage80, 1.0);
    }
}
