//! Exponential smoothing with additive errors (ETS(A,N,N), ETS(A,A,N), ETS(A,Ad,N)), written
//! here so that a model fitted once on the training days can be run forward, with its
//! parameters fixed, through the test days: at each forecast origin the state comes from
//! filtering every observation up to it, the way statsforecast's `forward` (cross-validation
//! with `refit=False`) does, instead of a refit per origin.
//!
//! - State (level `l`, trend `b`): `ŷ = l + φb`, `e = y − ŷ`, `l ← ŷ + αe`,
//!   `b ← φb + βe`. A missing observation updates nothing but the time (`e = 0`).
//! - Fitting: α, β, φ and the initial `l₀`, `b₀` by Nelder–Mead on the sum of squared
//!   one-step errors, within R forecast's usual bounds (`0 < β < α < 1`, `0.8 ≤ φ ≤ 0.98`);
//!   the model is chosen by AICc. Seasonal ETS is not offered: with 288 five-minute intervals
//!   a day, its 288 seasonal states are more than R's and statsforecast's ETS accept
//!   (`m ≤ 24`); daily seasonality is MSTL's job (see `baselines`).
//! - Forecast `h` steps on: `l + (φ + … + φʰ)·b`, variance `σ²(1 + Σ_{j<h} c_j²)` with
//!   `c_j = α + β(φ + … + φʲ)` (Hyndman et al., class 1 models).

/// The trend component.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Trend {
    None,
    Additive,
    Damped,
}

/// A fitted model.
#[derive(Clone, Debug, PartialEq)]
pub struct Ets {
    pub trend: Trend,
    pub alpha: f64,
    pub beta: f64,
    pub phi: f64,
    pub l0: f64,
    pub b0: f64,
    /// Variance of the one-step errors on the fitting data.
    pub sigma2: f64,
    pub aicc: f64,
}

/// The filter's state after some observations.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct State {
    pub level: f64,
    pub trend: f64,
}

impl Ets {
    fn phi_eff(&self) -> f64 {
        match self.trend {
            Trend::None => 0.0,
            Trend::Additive => 1.0,
            Trend::Damped => self.phi,
        }
    }

    /// Runs the filter over `y` from the initial state; returns the final state and the sum
    /// of squared one-step errors and their count.
    pub fn filter(&self, y: &[f64]) -> (State, f64, usize) {
        self.filter_from(
            State {
                level: self.l0,
                trend: self.b0,
            },
            y,
        )
    }

    pub fn filter_from(&self, s: State, y: &[f64]) -> (State, f64, usize) {
        let phi = self.phi_eff();
        let (mut l, mut b) = (s.level, s.trend);
        let (mut sse, mut n) = (0.0, 0);
        for &x in y {
            let yhat = l + phi * b;
            if x.is_nan() {
                l = yhat;
                b *= phi;
                continue;
            }
            let e = x - yhat;
            sse += e * e;
            n += 1;
            l = yhat + self.alpha * e;
            b = phi * b + self.beta * e;
        }
        (State { level: l, trend: b }, sse, n)
    }

    /// Mean and standard deviation of the forecasts 1..=h steps after state `s`.
    pub fn forecast(&self, s: State, h: usize) -> Vec<(f64, f64)> {
        let phi = self.phi_eff();
        let mut out = Vec::with_capacity(h);
        // damp = φ + … + φʰ; var_sum = Σ_{j<h} c_j².
        let (mut damp, mut var_sum, mut pw) = (0.0, 0.0, 1.0);
        for _ in 0..h {
            pw *= phi;
            damp += pw;
            let var = self.sigma2 * (1.0 + var_sum);
            out.push((s.level + damp * s.trend, var.max(0.0).sqrt()));
            let c = self.alpha + self.beta * damp;
            var_sum += c * c;
        }
        out
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Unconstrained vector → a model of `trend`.
fn decode(trend: Trend, p: &[f64], scale: f64, l0: f64) -> Ets {
    let alpha = 1e-4 + (1.0 - 2e-4) * sigmoid(p[0]);
    let (beta, phi, b0) = match trend {
        Trend::None => (0.0, 0.0, 0.0),
        Trend::Additive => (
            1e-4 + (alpha - 2e-4).max(0.0) * sigmoid(p[1]),
            1.0,
            p[3] * scale * 1e-2,
        ),
        Trend::Damped => (
            1e-4 + (alpha - 2e-4).max(0.0) * sigmoid(p[1]),
            0.8 + 0.18 * sigmoid(p[2]),
            p[3] * scale * 1e-2,
        ),
    };
    Ets {
        trend,
        alpha,
        beta,
        phi,
        l0: l0 + p[4] * scale,
        b0,
        sigma2: 0.0,
        aicc: f64::INFINITY,
    }
}

/// Fits one model of `trend` to `y` (NaN = missing). `None` with fewer than 10 observations.
pub fn fit_trend(y: &[f64], trend: Trend) -> Option<Ets> {
    let obs: Vec<f64> = y.iter().copied().filter(|x| !x.is_nan()).collect();
    if obs.len() < 10 {
        return None;
    }
    let mean = obs.iter().sum::<f64>() / obs.len() as f64;
    let scale = (obs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / obs.len() as f64)
        .sqrt()
        .max(1e-9 * mean.abs().max(1.0));
    let head = &obs[..obs.len().min(10)];
    let l0 = head.iter().sum::<f64>() / head.len() as f64;
    let cost = |p: &[f64]| -> f64 {
        let m = decode(trend, p, scale, l0);
        let sse = m.filter(y).1;
        if sse.is_finite() {
            sse
        } else {
            f64::MAX
        }
    };
    let start = [0.0, -1.0, 1.0, 0.0, 0.0];
    let best = nelder_mead(&cost, &start, 0.5, 2000);
    let mut m = decode(trend, &best, scale, l0);
    let (_, sse, n) = m.filter(y);
    let k =
        2 + match trend {
            Trend::None => 0,
            Trend::Additive => 2,
            Trend::Damped => 3,
        } + 1;
    let n = n as f64;
    m.sigma2 = sse / n;
    let loglik = -0.5 * n * ((2.0 * std::f64::consts::PI * m.sigma2).ln() + 1.0);
    let aic = -2.0 * loglik + 2.0 * k as f64;
    m.aicc = aic + 2.0 * (k * (k + 1)) as f64 / (n - k as f64 - 1.0).max(1.0);
    Some(m)
}

/// The best of ETS(A,N,N), (A,A,N), (A,Ad,N) by AICc.
pub fn auto_fit(y: &[f64]) -> Option<Ets> {
    [Trend::None, Trend::Additive, Trend::Damped]
        .into_iter()
        .filter_map(|t| fit_trend(y, t))
        .min_by(|a, b| a.aicc.total_cmp(&b.aicc))
}

/// Minimises `f` from `x0` (Nelder–Mead, standard coefficients).
pub fn nelder_mead(f: &dyn Fn(&[f64]) -> f64, x0: &[f64], step: f64, max_evals: usize) -> Vec<f64> {
    let n = x0.len();
    let mut pts: Vec<Vec<f64>> = vec![x0.to_vec()];
    for i in 0..n {
        let mut p = x0.to_vec();
        p[i] += step;
        pts.push(p);
    }
    let mut vals: Vec<f64> = pts.iter().map(|p| f(p)).collect();
    let mut evals = n + 1;
    while evals < max_evals {
        let mut idx: Vec<usize> = (0..=n).collect();
        idx.sort_by(|&a, &b| vals[a].total_cmp(&vals[b]));
        pts = idx.iter().map(|&i| pts[i].clone()).collect();
        vals = idx.iter().map(|&i| vals[i]).collect();
        if (vals[n] - vals[0]).abs() <= 1e-10 * (vals[0].abs() + 1e-300) {
            break;
        }
        let centroid: Vec<f64> = (0..n)
            .map(|j| pts[..n].iter().map(|p| p[j]).sum::<f64>() / n as f64)
            .collect();
        let along = |t: f64| -> Vec<f64> {
            (0..n)
                .map(|j| centroid[j] + t * (pts[n][j] - centroid[j]))
                .collect()
        };
        let xr = along(-1.0);
        let fr = f(&xr);
        evals += 1;
        if fr < vals[0] {
            let xe = along(-2.0);
            let fe = f(&xe);
            evals += 1;
            if fe < fr {
                pts[n] = xe;
                vals[n] = fe;
            } else {
                pts[n] = xr;
                vals[n] = fr;
            }
        } else if fr < vals[n - 1] {
            pts[n] = xr;
            vals[n] = fr;
        } else {
            let (xc, fc) = if fr < vals[n] {
                let x = along(-0.5);
                let v = f(&x);
                (x, v)
            } else {
                let x = along(0.5);
                let v = f(&x);
                (x, v)
            };
            evals += 1;
            if fc < vals[n].min(fr) {
                pts[n] = xc;
                vals[n] = fc;
            } else {
                for i in 1..=n {
                    pts[i] = (0..n)
                        .map(|j| pts[0][j] + 0.5 * (pts[i][j] - pts[0][j]))
                        .collect();
                    vals[i] = f(&pts[i]);
                }
                evals += n;
            }
        }
    }
    let best = (0..=n)
        .min_by(|&a, &b| vals[a].total_cmp(&vals[b]))
        .unwrap_or(0);
    pts[best].clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nelder_mead_finds_a_quadratic_minimum() {
        let f = |p: &[f64]| (p[0] - 3.0).powi(2) + 2.0 * (p[1] + 1.0).powi(2);
        let x = nelder_mead(&f, &[0.0, 0.0], 1.0, 1000);
        assert!(
            (x[0] - 3.0).abs() < 1e-4 && (x[1] + 1.0).abs() < 1e-4,
            "{x:?}"
        );
    }

    #[test]
    fn a_linear_trend_is_found_and_extrapolated() {
        let y: Vec<f64> = (0..200)
            .map(|i| 10.0 + 0.5 * i as f64 + if i % 2 == 0 { 0.1 } else { -0.1 })
            .collect();
        let m = auto_fit(&y).unwrap();
        assert_ne!(m.trend, Trend::None);
        let (s, _, _) = m.filter(&y);
        let f = m.forecast(s, 10);
        let truth = 10.0 + 0.5 * 209.0;
        assert!((f[9].0 - truth).abs() < 1.0, "{:?} vs {truth}", f[9]);
        // Intervals widen with the horizon.
        assert!(f[9].1 > f[0].1);
    }

    #[test]
    fn a_level_series_gets_simple_smoothing_and_missing_points_are_skipped() {
        let mut rng = netfm_models::params::SplitMix64(7);
        let mut y: Vec<f64> = (0..300)
            .map(|_| 50.0 + 10.0 * rng.uniform() - 5.0)
            .collect();
        y[100] = f64::NAN;
        y[101] = f64::NAN;
        let m = auto_fit(&y).unwrap();
        let (s, _, n) = m.filter(&y);
        assert_eq!(n, 298);
        assert!((s.level - 50.0).abs() < 3.0, "{s:?}");
        // One-step sd about the noise's (uniform on -5..5: 3.2).
        assert!(
            m.sigma2.sqrt() > 2.0 && m.sigma2.sqrt() < 5.0,
            "{}",
            m.sigma2
        );
    }
}
