//! The baselines every netfm forecast is reported beside, each with prediction intervals
//! (any quantiles), all fitted per series on the training part only:
//!
//! - `naive`: the last observed value; intervals `±z·σ·√h`, σ of the one-step changes
//!   (statsforecast's `Naive`).
//! - `seasonal_naive`: the value one day earlier (`m` intervals); `±z·σ·√(⌊(h−1)/m⌋+1)`,
//!   σ of the `m`-step changes (statsforecast's `SeasonalNaive`). Falls back to the last
//!   value where that point is missing.
//! - `ets`: the AICc-best additive-error ETS without season ([`super::ets`]), fitted on the
//!   training days, then run forward with its parameters fixed.
//! - `mstl`: MSTL decomposition (augurs' `augurs-mstl`, daily period) of the history up to
//!   each origin, the seasonal part carried on from the last day, the seasonally adjusted
//!   rest forecast by an ETS fitted on the training days' adjusted series and run forward.
//! - `incremental`: the incremental-learning reference of the drift study (arXiv 2404.05304
//!   compares against models refit on recent data): a direct autoregression per horizon
//!   step (ridge on the last 6 values, the mean of the last hour and the value one day before
//!   the target), refit every `refit` intervals on the newest `window` intervals only;
//!   intervals from the quantiles of its residuals on that window.

use super::ets::{self, Ets};
use super::series::Panel;
use anyhow::Context;

/// A forecasting method: fit on a training panel, then forecast any series from its
/// history.
pub trait Forecaster: Send + Sync {
    fn name(&self) -> &str;
    /// Fits on `train` (every series; the series' order is the one `forecast` is asked in).
    fn fit(&mut self, train: &Panel) -> anyhow::Result<()>;
    /// The forecasts of series `series` for the `horizon` intervals after `history` (its
    /// values from the panel's start up to the origin), at `quantiles` (each in (0, 1)):
    /// `[step][quantile]`.
    fn forecast(
        &self,
        series: usize,
        history: &[f64],
        origin: i64,
        horizon: usize,
        quantiles: &[f64],
    ) -> anyhow::Result<Vec<Vec<f64>>>;
    /// Tells the model where a known event (a failure, a reroute) happened: an interval
    /// index of the panel it forecasts. Models that adapt to drift use it.
    fn set_event(&mut self, _event: Option<usize>) {}
    /// Whether [`Forecaster::set_event`] changes its forecasts (the failure scenario then
    /// reports it with and without).
    fn adaptive(&self) -> bool {
        false
    }
    /// Whether series may be forecast on several threads at once (a model that batches
    /// them itself says no).
    fn parallel(&self) -> bool {
        true
    }
    /// Several forecasts at once (a model that batches overrides this).
    fn forecast_many(
        &self,
        requests: &[(usize, &[f64], i64)],
        horizon: usize,
        quantiles: &[f64],
    ) -> anyhow::Result<Vec<Vec<Vec<f64>>>> {
        requests
            .iter()
            .map(|&(s, h, t)| self.forecast(s, h, t, horizon, quantiles))
            .collect()
    }
}

/// The standard normal quantile (Acklam's rational approximation, relative error below
/// 1.2e-9).
pub fn probit(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.383_577_518_672_69e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e1,
        1.615858368580409e2,
        -1.556989798598866e2,
        6.680131188771972e1,
        -1.328068155288572e1,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-3,
        3.224671290700398e-1,
        2.445134137142996,
        3.754408661907416,
    ];
    if p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if p >= 1.0 {
        return f64::INFINITY;
    }
    let lo = 0.02425;
    if p < lo {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - lo {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        let q = (-2.0 * (1.0 - p).ln()).sqrt();
        -(((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    }
}

/// Gaussian quantiles around `mean` with standard deviation `sd`.
fn gaussian(mean: f64, sd: f64, quantiles: &[f64]) -> Vec<f64> {
    quantiles.iter().map(|&q| mean + sd * probit(q)).collect()
}

fn last_observed(h: &[f64]) -> Option<f64> {
    h.iter().rev().copied().find(|x| !x.is_nan())
}

/// σ of the `lag`-step changes of `y` (over pairs where both are observed).
fn lag_sigma(y: &[f64], lag: usize) -> f64 {
    let d: Vec<f64> = (lag..y.len())
        .map(|i| y[i] - y[i - lag])
        .filter(|x| !x.is_nan())
        .collect();
    if d.len() < 2 {
        return 0.0;
    }
    (d.iter().map(|x| x * x).sum::<f64>() / (d.len() - 1) as f64).sqrt()
}

fn no_history(name: &str, series: usize) -> anyhow::Error {
    anyhow::anyhow!("{name}: series {series} has no observed value before the origin")
}

fn sigma_of(sigmas: &[f64], series: usize, name: &str) -> anyhow::Result<f64> {
    sigmas
        .get(series)
        .copied()
        .with_context(|| format!("{name}: series {series} was not in the training panel"))
}

/// Series `series`'s fitted ETS of `models`.
fn fitted<'a>(models: &'a [Option<Ets>], series: usize, name: &str) -> anyhow::Result<&'a Ets> {
    models
        .get(series)
        .with_context(|| format!("{name}: series {series} was not in the training panel"))?
        .as_ref()
        .with_context(|| format!("{name}: series {series} had too few training points"))
}

/// The last observed value.
#[derive(Default)]
pub struct Naive {
    sigma: Vec<f64>,
}

impl Forecaster for Naive {
    fn name(&self) -> &str {
        "naive"
    }

    fn fit(&mut self, train: &Panel) -> anyhow::Result<()> {
        self.sigma = train.values.iter().map(|v| lag_sigma(v, 1)).collect();
        Ok(())
    }

    fn forecast(
        &self,
        series: usize,
        history: &[f64],
        _origin: i64,
        horizon: usize,
        quantiles: &[f64],
    ) -> anyhow::Result<Vec<Vec<f64>>> {
        let s = sigma_of(&self.sigma, series, self.name())?;
        let last = last_observed(history).ok_or_else(|| no_history(self.name(), series))?;
        Ok((1..=horizon)
            .map(|h| gaussian(last, s * (h as f64).sqrt(), quantiles))
            .collect())
    }
}

/// The value one season (`m` intervals) before.
pub struct SeasonalNaive {
    pub m: usize,
    sigma: Vec<f64>,
}

impl SeasonalNaive {
    pub fn new(m: usize) -> SeasonalNaive {
        SeasonalNaive {
            m,
            sigma: Vec::new(),
        }
    }
}

impl Forecaster for SeasonalNaive {
    fn name(&self) -> &str {
        "seasonal_naive"
    }

    fn fit(&mut self, train: &Panel) -> anyhow::Result<()> {
        self.sigma = train.values.iter().map(|v| lag_sigma(v, self.m)).collect();
        Ok(())
    }

    fn forecast(
        &self,
        series: usize,
        history: &[f64],
        _origin: i64,
        horizon: usize,
        quantiles: &[f64],
    ) -> anyhow::Result<Vec<Vec<f64>>> {
        let s = sigma_of(&self.sigma, series, self.name())?;
        let last = last_observed(history).ok_or_else(|| no_history(self.name(), series))?;
        let n = history.len();
        Ok((1..=horizon)
            .map(|h| {
                let seasons_back = (h - 1) / self.m + 1;
                let at = (n + h - 1).checked_sub(seasons_back * self.m);
                let base = at
                    .map(|i| history[i])
                    .filter(|x| !x.is_nan())
                    .unwrap_or(last);
                gaussian(base, s * (seasons_back as f64).sqrt(), quantiles)
            })
            .collect())
    }
}

/// ETS fitted on the training days, run forward.
#[derive(Default)]
pub struct EtsBaseline {
    models: Vec<Option<Ets>>,
}

impl Forecaster for EtsBaseline {
    fn name(&self) -> &str {
        "ets"
    }

    fn fit(&mut self, train: &Panel) -> anyhow::Result<()> {
        self.models = train.values.iter().map(|v| ets::auto_fit(v)).collect();
        Ok(())
    }

    fn forecast(
        &self,
        series: usize,
        history: &[f64],
        _origin: i64,
        horizon: usize,
        quantiles: &[f64],
    ) -> anyhow::Result<Vec<Vec<f64>>> {
        let m = fitted(&self.models, series, self.name())?;
        let (state, _, _) = m.filter(history);
        Ok(m.forecast(state, horizon)
            .into_iter()
            .map(|(mean, sd)| gaussian(mean, sd, quantiles))
            .collect())
    }
}

/// MSTL with a daily period and an ETS on the seasonally adjusted series.
pub struct Mstl {
    pub period: usize,
    trend: Vec<Option<Ets>>,
}

impl Mstl {
    pub fn new(period: usize) -> Mstl {
        Mstl {
            period,
            trend: Vec::new(),
        }
    }

    /// The seasonally adjusted series (trend + remainder) and the last season of the
    /// seasonal component, of `y` with its missing points filled by linear interpolation
    /// (the decomposition needs every point; the filled points never reach a score).
    fn decompose(&self, y: &[f64]) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
        let filled = interpolate(y).context("mstl: the history has no observed value")?;
        let res = augurs::mstl::stlrs::MstlParams::new()
            .fit(&filled, &[self.period])
            .map_err(|e| anyhow::anyhow!("mstl: {e}"))?;
        let seasonal = &res.seasonal()[0];
        let adjusted: Vec<f64> = y
            .iter()
            .zip(seasonal)
            .map(|(&x, &s)| if x.is_nan() { f64::NAN } else { x - s })
            .collect();
        let last = seasonal[seasonal.len() - self.period..].to_vec();
        Ok((adjusted, last))
    }
}

/// Missing points filled linearly between their observed neighbours (held flat at the
/// ends). `None` if nothing is observed.
pub fn interpolate(y: &[f64]) -> Option<Vec<f64>> {
    let obs: Vec<usize> = (0..y.len()).filter(|&i| !y[i].is_nan()).collect();
    let (&first, &last) = (obs.first()?, obs.last()?);
    let mut out = y.to_vec();
    for x in out.iter_mut().take(first) {
        *x = y[first];
    }
    for x in out.iter_mut().skip(last + 1) {
        *x = y[last];
    }
    for w in obs.windows(2) {
        let (a, b) = (w[0], w[1]);
        for (i, x) in out.iter_mut().enumerate().take(b).skip(a + 1) {
            let f = (i - a) as f64 / (b - a) as f64;
            *x = y[a] + f * (y[b] - y[a]);
        }
    }
    Some(out)
}

impl Forecaster for Mstl {
    fn name(&self) -> &str {
        "mstl"
    }

    fn fit(&mut self, train: &Panel) -> anyhow::Result<()> {
        self.trend.clear();
        for v in &train.values {
            if v.len() < 2 * self.period {
                anyhow::bail!(
                    "mstl needs two periods ({} intervals) of training data, not {}",
                    2 * self.period,
                    v.len()
                );
            }
            let (adjusted, _) = self.decompose(v)?;
            self.trend.push(ets::auto_fit(&adjusted));
        }
        Ok(())
    }

    fn forecast(
        &self,
        series: usize,
        history: &[f64],
        _origin: i64,
        horizon: usize,
        quantiles: &[f64],
    ) -> anyhow::Result<Vec<Vec<f64>>> {
        let m = fitted(&self.trend, series, self.name())?;
        if history.len() < 2 * self.period {
            anyhow::bail!(
                "mstl: {} intervals of history, it needs {}",
                history.len(),
                2 * self.period
            );
        }
        let (adjusted, season) = self.decompose(history)?;
        let (state, _, _) = m.filter(&adjusted);
        Ok(m.forecast(state, horizon)
            .into_iter()
            .enumerate()
            .map(|(h, (mean, sd))| gaussian(mean + season[h % self.period], sd, quantiles))
            .collect())
    }
}

/// The incremental-learning reference: direct ridge autoregressions refit on a sliding
/// window.
pub struct Incremental {
    /// Refit every this many intervals.
    pub refit: usize,
    /// On the newest this many intervals.
    pub window: usize,
    /// One season (the "same time yesterday" feature).
    pub season: usize,
    pub ridge: f64,
}

impl Default for Incremental {
    fn default() -> Self {
        Incremental {
            refit: 12,
            window: 576,
            season: 288,
            ridge: 1e-3,
        }
    }
}

const AR_LAGS: usize = 6;

impl Incremental {
    /// The features for a forecast `h` steps after position `t` (exclusive: values up to
    /// `t−1` are known) of `y`; `None` if one is missing.
    fn features(&self, y: &[f64], t: usize, h: usize, scale: f64) -> Option<Vec<f64>> {
        if t < AR_LAGS.max(12) || t + h < self.season + 1 {
            return None;
        }
        let mut f = vec![1.0];
        for k in 1..=AR_LAGS {
            f.push(y[t - k] / scale);
        }
        let hour: Vec<f64> = y[t - 12..t]
            .iter()
            .copied()
            .filter(|x| !x.is_nan())
            .collect();
        if hour.is_empty() {
            return None;
        }
        f.push(hour.iter().sum::<f64>() / hour.len() as f64 / scale);
        f.push(y[t + h - 1 - self.season] / scale);
        f.iter().all(|x| x.is_finite()).then_some(f)
    }
}

/// Solves the ridge normal equations `(XᵀX + λI) w = Xᵀy` (Cholesky).
fn ridge(rows: &[(Vec<f64>, f64)], lambda: f64) -> Option<Vec<f64>> {
    let k = rows.first()?.0.len();
    let mut a = vec![0.0; k * k];
    let mut b = vec![0.0; k];
    for (x, y) in rows {
        for i in 0..k {
            b[i] += x[i] * y;
            for j in 0..=i {
                a[i * k + j] += x[i] * x[j];
            }
        }
    }
    for i in 0..k {
        a[i * k + i] += lambda * rows.len() as f64;
        for j in 0..i {
            a[j * k + i] = a[i * k + j];
        }
    }
    // Cholesky: a = L Lᵀ.
    let mut l = vec![0.0; k * k];
    for i in 0..k {
        for j in 0..=i {
            let s: f64 = a[i * k + j] - (0..j).map(|m| l[i * k + m] * l[j * k + m]).sum::<f64>();
            if i == j {
                if s <= 0.0 {
                    return None;
                }
                l[i * k + i] = s.sqrt();
            } else {
                l[i * k + j] = s / l[j * k + j];
            }
        }
    }
    let mut z = vec![0.0; k];
    for i in 0..k {
        z[i] = (b[i] - (0..i).map(|m| l[i * k + m] * z[m]).sum::<f64>()) / l[i * k + i];
    }
    let mut w = vec![0.0; k];
    for i in (0..k).rev() {
        w[i] = (z[i] - (i + 1..k).map(|m| l[m * k + i] * w[m]).sum::<f64>()) / l[i * k + i];
    }
    Some(w)
}

/// The `q` quantile of sorted `xs` (linear interpolation).
pub fn quantile_sorted(xs: &[f64], q: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let pos = q * (xs.len() - 1) as f64;
    let (i, f) = (pos.floor() as usize, pos.fract());
    if i + 1 >= xs.len() {
        xs[xs.len() - 1]
    } else {
        xs[i] * (1.0 - f) + xs[i + 1] * f
    }
}

impl Forecaster for Incremental {
    fn name(&self) -> &str {
        "incremental"
    }

    fn fit(&mut self, _train: &Panel) -> anyhow::Result<()> {
        // Nothing global: every forecast refits on its own recent window.
        Ok(())
    }

    fn forecast(
        &self,
        series: usize,
        history: &[f64],
        _origin: i64,
        horizon: usize,
        quantiles: &[f64],
    ) -> anyhow::Result<Vec<Vec<f64>>> {
        let last = last_observed(history).ok_or_else(|| no_history(self.name(), series))?;
        let n = history.len();
        // The model in force was fitted at the last refit point.
        let fit_at = n - n % self.refit.max(1);
        let from = fit_at.saturating_sub(self.window);
        let scale = {
            let obs: Vec<f64> = history[from..fit_at.max(from)]
                .iter()
                .copied()
                .filter(|x| !x.is_nan())
                .collect();
            let m = obs.iter().map(|x| x.abs()).sum::<f64>() / obs.len().max(1) as f64;
            if m > 0.0 {
                m
            } else {
                1.0
            }
        };
        let mut out = Vec::with_capacity(horizon);
        for h in 1..=horizon {
            let rows: Vec<(Vec<f64>, f64)> = (from..fit_at)
                .filter_map(|t| {
                    // Target y[t + h − 1], known before the refit point.
                    let target = *history.get(t + h - 1).filter(|_| t + h - 1 < fit_at)?;
                    if target.is_nan() {
                        return None;
                    }
                    Some((self.features(history, t, h, scale)?, target / scale))
                })
                .collect();
            let fallback = || gaussian(last, 0.0, quantiles);
            let Some(w) = (rows.len() > 20)
                .then(|| ridge(&rows, self.ridge))
                .flatten()
            else {
                out.push(fallback());
                continue;
            };
            let Some(x) = self.features(history, n, h, scale) else {
                out.push(fallback());
                continue;
            };
            let dot = |x: &[f64]| x.iter().zip(&w).map(|(a, b)| a * b).sum::<f64>();
            let mut resid: Vec<f64> = rows.iter().map(|(x, y)| y - dot(x)).collect();
            resid.sort_by(f64::total_cmp);
            let mean = dot(&x);
            out.push(
                quantiles
                    .iter()
                    .map(|&q| (mean + quantile_sorted(&resid, q)) * scale)
                    .collect(),
            );
        }
        Ok(out)
    }
}

/// Every baseline, in report order, with the daily season `m`.
pub fn all(m: usize) -> Vec<Box<dyn Forecaster>> {
    vec![
        Box::new(Naive::default()),
        Box::new(SeasonalNaive::new(m)),
        Box::new(EtsBaseline::default()),
        Box::new(Mstl::new(m)),
        Box::new(Incremental {
            season: m,
            window: 2 * m,
            ..Default::default()
        }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probit_matches_known_quantiles() {
        for (p, z) in [
            (0.5, 0.0),
            (0.9, 1.2815515655446004),
            (0.1, -1.2815515655446004),
            (0.975, 1.959963984540054),
            (0.001, -3.090232306167813),
        ] {
            assert!((probit(p) - z).abs() < 1e-8, "{p}: {} vs {z}", probit(p));
        }
    }

    fn panel(values: Vec<Vec<f64>>) -> Panel {
        Panel {
            start: 0,
            step: 300,
            names: (0..values.len()).map(|i| i.to_string()).collect(),
            values,
        }
    }

    #[test]
    fn naive_and_seasonal_naive_point_forecasts() {
        let y: Vec<f64> = (0..40).map(|i| (i % 10) as f64).collect();
        let p = panel(vec![y.clone()]);
        let mut n = Naive::default();
        n.fit(&p).unwrap();
        let f = n.forecast(0, &y, 0, 3, &[0.1, 0.5, 0.9]).unwrap();
        assert_eq!(f[0][1], 9.0);
        assert!(f[2][2] - f[2][1] > f[0][2] - f[0][1]);
        let mut s = SeasonalNaive::new(10);
        s.fit(&p).unwrap();
        let f = s.forecast(0, &y, 0, 12, &[0.5]).unwrap();
        let pts: Vec<f64> = f.iter().map(|q| q[0]).collect();
        assert_eq!(
            pts,
            vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 0.0, 1.0]
        );
    }

    #[test]
    fn mstl_and_incremental_follow_a_daily_pattern() {
        let m = 48;
        let y: Vec<f64> = (0..m * 6)
            .map(|i| {
                100.0
                    + 40.0 * (i as f64 * 2.0 * std::f64::consts::PI / m as f64).sin()
                    + ((i * 7919) % 7) as f64
                    - 3.0
            })
            .collect();
        let (train, test) = y.split_at(m * 5);
        let p = panel(vec![train.to_vec()]);
        let mut errs = Vec::new();
        for mut f in [
            Box::new(Naive::default()) as Box<dyn Forecaster>,
            Box::new(Mstl::new(m)),
            Box::new(Incremental {
                season: m,
                window: 2 * m,
                ..Default::default()
            }),
        ] {
            f.fit(&p).unwrap();
            let fc = f.forecast(0, train, 0, 12, &[0.1, 0.5, 0.9]).unwrap();
            let mae: f64 = fc
                .iter()
                .zip(test)
                .map(|(q, y)| (q[1] - y).abs())
                .sum::<f64>()
                / 12.0;
            assert!(fc.iter().all(|q| q[0] <= q[1] && q[1] <= q[2]));
            errs.push(mae);
        }
        // Both seasonal methods beat the last value by far on a strong daily cycle.
        assert!(
            errs[1] < 0.3 * errs[0] && errs[2] < 0.3 * errs[0],
            "{errs:?}"
        );
    }

    #[test]
    fn interpolation_fills_between_observed_points() {
        let y = [f64::NAN, 1.0, f64::NAN, 3.0, f64::NAN];
        assert_eq!(interpolate(&y).unwrap(), vec![1.0, 1.0, 2.0, 3.0, 3.0]);
        assert!(interpolate(&[f64::NAN]).is_none());
    }
}
