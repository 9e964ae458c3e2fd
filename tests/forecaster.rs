//! The patch transformer forecaster (netfm-models' `forecaster`) end to end through ONNX
//! Runtime: the whole-model gradient against finite differences, training by the unchanged
//! `Trainer` on synthetic daily-seasonal series of very different scales, agreement of the
//! inference and eval graphs, the per-window normalization's invariances, and the config's
//! errors.

use netfm::runtime::trainer::{LrSchedule, TrainGraphInfo, Trainer};
use netfm::runtime::{host, session_from_bytes, OptimizationLevel, RuntimeOptions};
use netfm_models::export::meta_keys;
use netfm_models::forecaster::{
    forecast_eval_graph, forecast_gradient_graph, forecast_inference_graph, forecast_init_params,
    forecast_param_specs, forecast_train_step_graph, ForecastConfig, ForecastConfigError,
    ForecastError, ARCHITECTURE, TARGET_CLIP,
};
use netfm_models::optim::{AdamWConfig, Schedule};
use netfm_models::params::SplitMix64;
use netfm_models::proto::ModelProto;
use netfm_models::{DType, Data, Tensor};
use ort::session::Session;
use std::collections::HashMap;
use std::f64::consts::TAU;

fn opts(level: OptimizationLevel) -> RuntimeOptions {
    RuntimeOptions {
        intra_threads: Some(2),
        optimization: level,
        ..Default::default()
    }
}

fn session(model: &ModelProto, level: OptimizationLevel) -> Session {
    session_from_bytes(&opts(level), &model.to_bytes()).expect("session")
}

fn tensor(dtype: DType, dims: &[usize], vals: Vec<f64>) -> Tensor {
    assert_eq!(vals.len(), dims.iter().product::<usize>());
    let data = match dtype {
        DType::F64 => Data::F64(vals),
        _ => Data::F32(vals.into_iter().map(|x| x as f32).collect()),
    };
    Tensor {
        dims: dims.iter().map(|&d| d as i64).collect(),
        data,
    }
}

fn values(t: &Tensor) -> Vec<f64> {
    match &t.data {
        Data::F32(v) => v.iter().map(|&x| x as f64).collect(),
        Data::F64(v) => v.clone(),
        Data::I64(v) => v.iter().map(|&x| x as f64).collect(),
        Data::Bool(v) => v.iter().map(|&x| x as u8 as f64).collect(),
    }
}

/// A batch of windows as host tensors.
#[derive(Clone)]
struct Windows {
    history: Tensor,
    observed: Tensor,
    hist_time: Tensor,
    future_time: Tensor,
    exo: Option<Tensor>,
    target: Tensor,
    target_mask: Tensor,
}

impl Windows {
    /// The inputs of an inference graph.
    fn inputs(&self) -> Vec<(&str, &Tensor)> {
        let mut f = vec![
            ("history", &self.history),
            ("observed", &self.observed),
            ("hist_time", &self.hist_time),
            ("future_time", &self.future_time),
        ];
        if let Some(e) = &self.exo {
            f.push(("exo", e));
        }
        f
    }

    /// The inputs of train, eval and gradient graphs.
    fn with_targets(&self) -> Vec<(&str, &Tensor)> {
        let mut f = self.inputs();
        f.push(("target", &self.target));
        f.push(("target_mask", &self.target_mask));
        f
    }

    fn batch(&self) -> usize {
        self.history.dims[0] as usize
    }
}

fn with_params<'a>(
    mut feeds: Vec<(&'a str, &'a Tensor)>,
    params: &'a HashMap<String, Tensor>,
) -> Vec<(&'a str, &'a Tensor)> {
    feeds.extend(params.iter().map(|(n, t)| (n.as_str(), t)));
    feeds
}

/// Synthetic link loads: a daily cycle of `PERIOD` points (two harmonics, a weekly
/// modulation, a per-series phase) at the series' own level, plus Gaussian noise.
const PERIOD: usize = 48;

fn calendar(t: usize) -> [f64; 4] {
    let day = (t % PERIOD) as f64 / PERIOD as f64;
    let week = (t % (7 * PERIOD)) as f64 / (7 * PERIOD) as f64;
    [
        (TAU * day).sin(),
        (TAU * day).cos(),
        (TAU * week).sin(),
        (TAU * week).cos(),
    ]
}

fn synthetic_series(levels: &[f64], len: usize, noise: f64, seed: u64) -> Vec<Vec<f64>> {
    let mut rng = SplitMix64(seed);
    levels
        .iter()
        .map(|&level| {
            let phase = 0.6 * (rng.uniform() - 0.5);
            let phase2 = TAU * rng.uniform();
            (0..len)
                .map(|t| {
                    let x = TAU * t as f64 / PERIOD as f64 + phase;
                    let weekday = if (t / PERIOD) % 7 >= 5 { 0.85 } else { 1.0 };
                    let shape = 1.0 + 0.45 * x.sin() + 0.12 * (2.0 * x + phase2).sin();
                    level * (weekday * shape + noise * rng.normal())
                })
                .collect()
        })
        .collect()
}

/// Windows of `series` starting at `(series index, t0)`: `context` points of history, the
/// next `horizon` as target, every point observed.
fn windows_of(
    cfg: &ForecastConfig,
    series: &[Vec<f64>],
    starts: &[(usize, usize)],
    dtype: DType,
) -> Windows {
    let (c, h, p, tf) = (cfg.context, cfg.horizon, cfg.patches(), cfg.time_features);
    assert_eq!(tf, 4, "calendar features");
    let b = starts.len();
    let (mut hist, mut tgt, mut ht, mut ft) = (vec![], vec![], vec![], vec![]);
    for &(s, t0) in starts {
        hist.extend_from_slice(&series[s][t0..t0 + c]);
        tgt.extend_from_slice(&series[s][t0 + c..t0 + c + h]);
        for k in 0..p {
            ht.extend(calendar(t0 + (k + 1) * cfg.patch - 1));
        }
        for k in 0..h {
            ft.extend(calendar(t0 + c + k));
        }
    }
    Windows {
        history: tensor(dtype, &[b, c], hist),
        observed: tensor(dtype, &[b, c], vec![1.0; b * c]),
        hist_time: tensor(dtype, &[b, p, tf], ht),
        future_time: tensor(dtype, &[b, h, tf], ft),
        exo: None,
        target: tensor(dtype, &[b, h], tgt),
        target_mask: tensor(dtype, &[b, h], vec![1.0; b * h]),
    }
}

/// The mean pinball loss of `quantiles [B, H, Q]` (the history's units) against the
/// windows' targets, both normalized with `loc` and `scale` (`[B]`): the graphs' loss,
/// recomputed on the host.
fn host_pinball(
    cfg: &ForecastConfig,
    w: &Windows,
    quantiles: &[f64],
    loc: &[f64],
    scale: &[f64],
) -> f64 {
    let (h, nq) = (cfg.horizon, cfg.quantiles.len());
    let target = values(&w.target);
    let mask = values(&w.target_mask);
    let (mut sum, mut count) = (0.0, 0.0f64);
    for b in 0..w.batch() {
        for k in 0..h {
            if mask[b * h + k] <= 0.0 {
                continue;
            }
            let t = ((target[b * h + k] - loc[b]) / scale[b]).clamp(-TARGET_CLIP, TARGET_CLIP);
            let mut l = 0.0;
            for (j, &q) in cfg.quantiles.iter().enumerate() {
                let e = t - (quantiles[(b * h + k) * nq + j] - loc[b]) / scale[b];
                l += (q * e).max((q - 1.0) * e);
            }
            sum += l / nq as f64;
            count += 1.0;
        }
    }
    sum / count.max(1.0)
}

/// The tiny config of the gradient and normalization checks (exogenous features included).
fn tiny() -> ForecastConfig {
    ForecastConfig {
        context: 8,
        patch: 4,
        horizon: 3,
        d_model: 8,
        layers: 2,
        heads: 2,
        ff: 16,
        quantiles: vec![0.1, 0.5, 0.9],
        time_features: 2,
        exo_features: 1,
    }
}

/// Random windows for the tiny config, with a missing history point and a masked target.
fn random_windows(cfg: &ForecastConfig, b: usize, seed: u64) -> Windows {
    let mut rng = SplitMix64(seed);
    let (c, h, p) = (cfg.context, cfg.horizon, cfg.patches());
    let mut uni = |n: usize, lo: f64, hi: f64| -> Vec<f64> {
        (0..n).map(|_| lo + (hi - lo) * rng.uniform()).collect()
    };
    let hist = uni(b * c, 2.0, 6.0);
    let mut observed = vec![1.0; b * c];
    observed[1] = 0.0;
    observed[c + 5] = 0.0;
    let target = uni(b * h, 1.0, 7.0);
    let mut target_mask = vec![1.0; b * h];
    target_mask[h + 1] = 0.0;
    let d = DType::F64;
    Windows {
        history: tensor(d, &[b, c], hist),
        observed: tensor(d, &[b, c], observed),
        hist_time: tensor(
            d,
            &[b, p, cfg.time_features],
            uni(b * p * cfg.time_features, -1.0, 1.0),
        ),
        future_time: tensor(
            d,
            &[b, h, cfg.time_features],
            uni(b * h * cfg.time_features, -1.0, 1.0),
        ),
        exo: Some(tensor(
            d,
            &[b, p, cfg.exo_features],
            uni(b * p * cfg.exo_features, -1.0, 1.0),
        )),
        target: tensor(d, &[b, h], target),
        target_mask: tensor(d, &[b, h], target_mask),
    }
}

/// Initial parameters moved by N(0, 0.3) noise, so that every path of the model (gains,
/// biases, the zero-initialised linear path) carries a gradient of order one.
fn perturbed_params(cfg: &ForecastConfig, seed: u64) -> HashMap<String, Tensor> {
    let mut params = forecast_init_params(cfg, seed, DType::F64).unwrap();
    let mut rng = SplitMix64(seed ^ 0xabcdef);
    let mut names: Vec<String> = params.keys().cloned().collect();
    names.sort();
    for n in names {
        if let Data::F64(v) = &mut params.get_mut(&n).unwrap().data {
            for x in v.iter_mut() {
                *x += 0.3 * rng.normal();
            }
        }
    }
    params
}

/// Whole-model gradient of the loss against central differences of the eval graph's loss,
/// in float64, for every parameter: every entry of small tensors, the largest-gradient entry
/// and 12 spread-out ones of larger. Tolerance as argued in tests/gradients.rs (h = 1e-5,
/// `|fd − analytic| ≤ 1e-6·max(1, max|analytic|)`); the loss's kinks (pinball at
/// prediction = target, softplus' |x| at 0) are met with probability ~1e-5 per point on
/// random windows, and the normalization's max/min carry no parameter gradient.
#[test]
fn whole_model_gradient_matches_finite_differences() {
    let cfg = tiny();
    let w = random_windows(&cfg, 3, 17);
    let mut params = perturbed_params(&cfg, 3);
    let level = OptimizationLevel::Disabled;
    let mut grad = session(&forecast_gradient_graph(&cfg, DType::F64).unwrap(), level);
    let mut eval = session(&forecast_eval_graph(&cfg, DType::F64).unwrap(), level);
    let out = host::run(&mut grad, &with_params(w.with_targets(), &params)).unwrap();
    let loss = host::scalar(&out["loss"]).unwrap();
    assert!(loss.is_finite() && loss > 0.0, "loss {loss}");
    let specs = forecast_param_specs(&cfg).unwrap();
    let (h, tol) = (1e-5, 1e-6);
    let mut checked = 0;
    for spec in &specs {
        let name = &spec.name;
        let an = values(&out[&format!("grad.{name}")]);
        let scale = an.iter().fold(1.0f64, |m, x| m.max(x.abs()));
        let n = an.len();
        let picks: Vec<usize> = if n <= 16 {
            (0..n).collect()
        } else {
            let top = (0..n)
                .max_by(|&a, &b| an[a].abs().total_cmp(&an[b].abs()))
                .unwrap();
            std::iter::once(top)
                .chain((0..12).map(|k| (k * n / 12 + k % 3).min(n - 1)))
                .collect()
        };
        for j in picks {
            let orig = values(&params[name])[j];
            let mut at = |x: f64, params: &mut HashMap<String, Tensor>| {
                if let Data::F64(v) = &mut params.get_mut(name).unwrap().data {
                    v[j] = x;
                }
                let o = host::run(&mut eval, &with_params(w.with_targets(), params)).unwrap();
                host::scalar(&o["loss"]).unwrap()
            };
            let up = at(orig + h, &mut params);
            let down = at(orig - h, &mut params);
            at(orig, &mut params);
            let fd = (up - down) / (2.0 * h);
            let err = (fd - an[j]).abs();
            assert!(
                err <= tol * scale,
                "{name}[{j}]: analytic {} vs finite difference {fd} (error {err:.3e}, scale {scale:.3e})",
                an[j]
            );
            checked += 1;
        }
    }
    // Every parameter's gradient is live (the check is not vacuous).
    for spec in &specs {
        let g = values(&out[&format!("grad.{}", spec.name)]);
        let norm = g.iter().map(|x| x * x).sum::<f64>().sqrt();
        // The key bias' gradient is zero in theory (softmax is shift-invariant).
        if !spec.name.ends_with("attn.k.b") {
            assert!(norm > 1e-6, "{}: gradient norm {norm}", spec.name);
        }
    }
    assert!(checked >= 200, "checked {checked} entries");
}

/// The small config of the training test: two days of 48-point days, 8 steps ahead.
fn small() -> ForecastConfig {
    ForecastConfig {
        context: 2 * PERIOD,
        patch: 8,
        horizon: 8,
        d_model: 32,
        layers: 2,
        heads: 4,
        ff: 64,
        quantiles: vec![0.1, 0.5, 0.9],
        time_features: 4,
        exo_features: 0,
    }
}

/// The naive forecast (every quantile = the last history value) scored like the model.
fn naive_pinball(cfg: &ForecastConfig, w: &Windows, loc: &[f64], scale: &[f64]) -> f64 {
    let (c, h, nq) = (cfg.context, cfg.horizon, cfg.quantiles.len());
    let hist = values(&w.history);
    let mut q = Vec::new();
    for b in 0..w.batch() {
        q.extend(std::iter::repeat_n(hist[b * c + c - 1], h * nq));
    }
    host_pinball(cfg, w, &q, loc, scale)
}

/// A few hundred `Trainer` steps at f32 on synthetic daily-seasonal series of six scales
/// (0.05 to 300 000) bring the held-out loss well below the initial parameters' and below
/// the naive last-value forecast; the inference graph with the trained parameters gives
/// ordered quantiles, a p50 close to the truth, and the eval graph's forward pass.
#[test]
fn training_beats_the_naive_forecast_and_graphs_agree() {
    let cfg = small();
    let dt = DType::F32;
    let levels = [0.05, 1.0, 40.0, 900.0, 25_000.0, 300_000.0];
    let len = 30 * PERIOD;
    let series = synthetic_series(&levels, len, 0.04, 7);
    let span = cfg.context + cfg.horizon;
    let split = 22 * PERIOD; // training windows end before it, held-out ones start after it
    let mut rng = SplitMix64(99);
    let draw = |lo: usize, hi: usize, n: usize, rng: &mut SplitMix64| -> Vec<(usize, usize)> {
        (0..n)
            .map(|_| {
                let s = (rng.uniform() * levels.len() as f64) as usize;
                let t = lo + (rng.uniform() * (hi - lo) as f64) as usize;
                (s, t)
            })
            .collect()
    };
    let held_out = windows_of(&cfg, &series, &draw(split, len - span, 96, &mut rng), dt);

    let params0 = forecast_init_params(&cfg, 1, dt).unwrap();
    let level = OptimizationLevel::All;
    let mut eval = session(&forecast_eval_graph(&cfg, dt).unwrap(), level);
    let eval_loss = |eval: &mut Session, params: &HashMap<String, Tensor>| {
        let o = host::run(eval, &with_params(held_out.with_targets(), params)).unwrap();
        host::scalar(&o["loss"]).unwrap()
    };
    let initial = eval_loss(&mut eval, &params0);

    let adamw = AdamWConfig {
        schedule: Schedule::Cosine,
        ..AdamWConfig::default()
    };
    let train = forecast_train_step_graph(&cfg, &adamw, dt).unwrap();
    let mut trainer = Trainer::new(&opts(level), &train.to_bytes(), &params0, None).unwrap();
    let steps = 300;
    let lr = LrSchedule {
        peak: 3e-3,
        warmup_steps: 20,
        total_steps: steps,
    };
    let mut first = None;
    for _ in 0..steps {
        let batch = windows_of(&cfg, &series, &draw(0, split - span, 32, &mut rng), dt);
        let r = trainer.step(&batch.with_targets(), &lr).unwrap();
        first.get_or_insert(r.loss());
    }
    let trained = trainer.params().unwrap();
    let after = eval_loss(&mut eval, &trained);

    let inf = forecast_inference_graph(&cfg, &trained, dt).unwrap();
    let mut inf_s = session(&inf, level);
    let out = host::run(&mut inf_s, &held_out.inputs()).unwrap();
    let (q, loc, scale) = (
        values(&out["quantiles"]),
        values(&out["loc"]),
        values(&out["scale"]),
    );
    let naive = naive_pinball(&cfg, &held_out, &loc, &scale);
    println!(
        "held-out pinball: initial {initial:.4}, trained {after:.4}, naive {naive:.4} (first train batch {:.4})",
        first.unwrap()
    );
    assert!(
        after < 0.3 * initial,
        "trained {after} vs initial {initial}"
    );
    assert!(after < 0.7 * naive, "trained {after} vs naive {naive}");

    // Ordered quantiles; p50 close to the truth, in units of each window's scale.
    let (h, nq) = (cfg.horizon, cfg.quantiles.len());
    assert_eq!(out["quantiles"].dims, vec![96, h as i64, nq as i64]);
    for row in q.chunks(nq) {
        assert!(
            row.windows(2).all(|p| p[0] <= p[1]),
            "crossing quantiles {row:?}"
        );
    }
    let p50 = values(&out["p50"]);
    let target = values(&held_out.target);
    let (mut err, mut covered) = (0.0, 0);
    for i in 0..p50.len() {
        let b = i / h;
        err += (p50[i] - target[i]).abs() / scale[b];
        covered += (q[i * nq] <= target[i] && target[i] <= q[i * nq + nq - 1]) as usize;
    }
    let mae = err / p50.len() as f64;
    let coverage = covered as f64 / p50.len() as f64;
    println!("held-out p50 MAE {mae:.4} scales; 10-90% coverage {coverage:.3}");
    assert!(mae < 0.25, "p50 normalized MAE {mae}");
    assert!(
        (0.5..=0.97).contains(&coverage),
        "10-90% coverage {coverage}"
    );

    // The eval graph's forward pass: same quantiles, and its loss is the pinball loss of
    // the inference graph's quantiles.
    let eval_out = host::run(&mut eval, &with_params(held_out.with_targets(), &trained)).unwrap();
    let eq = values(&eval_out["quantiles"]);
    for (i, (a, b)) in q.iter().zip(&eq).enumerate() {
        let s = scale[i / (h * nq)];
        assert!(
            (a - b).abs() <= 1e-4 * s,
            "quantile {i}: inference {a} vs eval {b}"
        );
    }
    let recomputed = host_pinball(&cfg, &held_out, &q, &loc, &scale);
    let e = host::scalar(&eval_out["loss"]).unwrap();
    assert!(
        (recomputed - e).abs() <= 1e-4 * e.max(1e-3),
        "loss from inference outputs {recomputed} vs eval {e}"
    );
}

/// Scaling a window's history by 1000 scales its quantiles by 1000; a constant or empty
/// history gives finite outputs; the filled value of a missing point changes nothing.
#[test]
fn normalization_is_scale_free_and_ignores_missing_points() {
    let cfg = tiny();
    let d = DType::F64;
    let params = perturbed_params(&cfg, 8);
    let inf = forecast_inference_graph(&cfg, &params, d).unwrap();
    let mut s = session(&inf, OptimizationLevel::Disabled);
    let mut run = |w: &Windows| host::run(&mut s, &w.inputs()).unwrap();
    let base = random_windows(&cfg, 3, 5);
    let q0 = values(&run(&base)["quantiles"]);

    let mut scaled = base.clone();
    let hist: Vec<f64> = values(&base.history).iter().map(|x| x * 1000.0).collect();
    scaled.history = tensor(d, &[3, cfg.context], hist);
    let q1 = values(&run(&scaled)["quantiles"]);
    for (a, b) in q0.iter().zip(&q1) {
        assert!(
            (b - 1000.0 * a).abs() <= 1e-9 * b.abs().max(1.0),
            "scaled quantile {b} vs 1000 x {a}"
        );
    }

    // Constant histories (zero, positive, huge) and a history with nothing observed.
    for (value, seen) in [(0.0, 1.0), (5.0, 1.0), (1e9, 1.0), (3.0, 0.0)] {
        let mut w = base.clone();
        w.history = tensor(d, &[3, cfg.context], vec![value; 3 * cfg.context]);
        w.observed = tensor(d, &[3, cfg.context], vec![seen; 3 * cfg.context]);
        let o = run(&w);
        for name in ["quantiles", "p50", "loc", "scale"] {
            assert!(
                values(&o[name]).iter().all(|x| x.is_finite()),
                "{name} not finite for a constant history {value} (observed {seen})"
            );
        }
        if seen == 1.0 {
            // A flat history forecasts close to its level.
            for x in values(&o["p50"]) {
                assert!(
                    (x - value).abs() <= 0.1 * value.abs() + 1e-3,
                    "p50 {x} for {value}"
                );
            }
        }
    }

    // Missing points: base has observed = 0 at (0, 1) and (1, 5); refill them.
    let c = cfg.context;
    for fill in [0.0, -3.0, 1e12, f64::NAN, f64::INFINITY] {
        let mut w = base.clone();
        let mut hist = values(&base.history);
        hist[1] = fill;
        hist[c + 5] = fill;
        w.history = tensor(d, &[3, c], hist);
        let q = values(&run(&w)["quantiles"]);
        assert_eq!(
            q, q0,
            "filling missing points with {fill} changed the forecast"
        );
    }
    // ... while an observed point does change it (the check above is not vacuous).
    let mut w = base.clone();
    let mut hist = values(&base.history);
    hist[2] += 1.0;
    w.history = tensor(d, &[3, c], hist);
    let q = values(&run(&w)["quantiles"]);
    assert!(q[..9].iter().zip(&q0).any(|(a, b)| a != b));
}

/// Any quantile set gives ordered quantiles, even from random parameters and without 0.5
/// (then there is no `p50` output).
#[test]
fn quantiles_never_cross() {
    for quantiles in [vec![0.05, 0.3, 0.6, 0.95], vec![0.25, 0.75], vec![0.9]] {
        let cfg = ForecastConfig {
            quantiles: quantiles.clone(),
            ..tiny()
        };
        let params = perturbed_params(&cfg, 2);
        let inf = forecast_inference_graph(&cfg, &params, DType::F64).unwrap();
        let mut s = session(&inf, OptimizationLevel::Disabled);
        let out = host::run(&mut s, &random_windows(&cfg, 4, 9).inputs()).unwrap();
        assert!(!out.contains_key("p50"), "{quantiles:?}");
        let q = values(&out["quantiles"]);
        assert_eq!(q.len(), 4 * cfg.horizon * quantiles.len());
        for row in q.chunks(quantiles.len()) {
            assert!(
                row.windows(2).all(|p| p[0] < p[1]),
                "{quantiles:?}: {row:?}"
            );
        }
    }
}

#[test]
fn config_errors_are_clear() {
    let ok = ForecastConfig::default();
    ok.validate().unwrap();
    assert_eq!(
        (ok.context, ok.patch, ok.horizon, ok.d_model, ok.layers, ok.heads, ok.ff),
        (576, 24, 12, 64, 2, 4, 128)
    );
    let bad = |f: fn(&mut ForecastConfig)| {
        let mut c = ForecastConfig::default();
        f(&mut c);
        c.validate().unwrap_err()
    };
    let e = bad(|c| c.context = 580);
    assert_eq!(
        e,
        ForecastConfigError::ContextNotMultipleOfPatch {
            context: 580,
            patch: 24
        }
    );
    assert_eq!(
        e.to_string(),
        "forecast config: context 580 is not a multiple of patch 24"
    );
    let e = bad(|c| c.quantiles = vec![0.5, 0.1, 0.9]);
    assert_eq!(e, ForecastConfigError::QuantileOrder(vec![0.5, 0.1, 0.9]));
    assert!(e.to_string().contains("not strictly increasing"), "{e}");
    assert_eq!(
        bad(|c| c.quantiles = vec![0.1, 0.1]),
        ForecastConfigError::QuantileOrder(vec![0.1, 0.1])
    );
    assert_eq!(bad(|c| c.horizon = 0), ForecastConfigError::Zero("horizon"));
    assert_eq!(
        bad(|c| c.horizon = 0).to_string(),
        "forecast config: horizon must be at least 1"
    );
    assert_eq!(
        bad(|c| c.quantiles = vec![0.0, 0.5]),
        ForecastConfigError::QuantileRange(0.0)
    );
    assert!(matches!(
        bad(|c| c.quantiles = vec![0.5, f64::NAN]),
        ForecastConfigError::QuantileRange(q) if q.is_nan()
    ));
    assert_eq!(
        bad(|c| c.quantiles.clear()),
        ForecastConfigError::NoQuantiles
    );
    assert_eq!(
        bad(|c| c.heads = 3),
        ForecastConfigError::Heads {
            d_model: 64,
            heads: 3
        }
    );
    assert_eq!(
        bad(|c| c.time_features = 0),
        ForecastConfigError::Zero("time_features")
    );
    // The graph builders refuse a bad config, and a non-float dtype.
    let c = ForecastConfig {
        patch: 7,
        ..ForecastConfig::default()
    };
    assert!(matches!(
        forecast_train_step_graph(&c, &AdamWConfig::default(), DType::F32),
        Err(ForecastError::Config(
            ForecastConfigError::ContextNotMultipleOfPatch { .. }
        ))
    ));
    assert!(matches!(
        forecast_eval_graph(&ForecastConfig::default(), DType::I64),
        Err(ForecastError::DType(DType::I64))
    ));
    // JSON: round trip, defaults, unknown fields refused.
    let json = ok.to_json();
    assert_eq!(ForecastConfig::from_json(&json).unwrap(), ok);
    let no_exo = json.replace(",\"exo_features\":0", "");
    assert_ne!(no_exo, json);
    assert_eq!(ForecastConfig::from_json(&no_exo).unwrap(), ok);
    let typo = json.replace("\"ff\"", "\"ffn\"");
    assert!(matches!(
        ForecastConfig::from_json(&typo),
        Err(ForecastConfigError::Json(_))
    ));
}

/// The graphs record what netfm reads: kind, architecture, config, dtype, parameters; the
/// train step is what `TrainGraphInfo` accepts; baking in missing parameters is an error.
#[test]
fn graphs_carry_their_metadata() {
    let cfg = ForecastConfig::default();
    let specs = forecast_param_specs(&cfg).unwrap();
    let params = forecast_init_params(&cfg, 4, DType::F32).unwrap();
    let train = forecast_train_step_graph(&cfg, &AdamWConfig::default(), DType::F32).unwrap();
    let eval = forecast_eval_graph(&cfg, DType::F64).unwrap();
    let inf = forecast_inference_graph(&cfg, &params, DType::F32).unwrap();
    for (m, kind) in [(&train, "train_step"), (&eval, "eval"), (&inf, "inference")] {
        assert_eq!(m.metadata(meta_keys::KIND), Some(kind));
        assert_eq!(m.metadata(meta_keys::ARCHITECTURE), Some(ARCHITECTURE));
        assert_eq!(ForecastConfig::of_model(m).unwrap().unwrap(), cfg);
    }
    assert_eq!(eval.metadata(meta_keys::DTYPE), Some("\"f64\""));
    let info = TrainGraphInfo::read(&train).unwrap();
    assert_eq!(info.dtype, DType::F32);
    assert_eq!(info.loss_names, vec!["loss".to_string()]);
    let names: Vec<&str> = info.params.iter().map(|p| p.name.as_str()).collect();
    let want: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, want);
    let outputs: Vec<String> = inf
        .graph
        .as_ref()
        .unwrap()
        .output
        .iter()
        .map(|o| o.name.clone())
        .collect();
    assert_eq!(outputs, ["quantiles", "p50", "loc", "scale"]);

    let mut partial = params.clone();
    partial.remove("skip.w");
    assert!(matches!(
        forecast_inference_graph(&cfg, &partial, DType::F32),
        Err(ForecastError::Missing(m)) if m == ["skip.w"]
    ));
    assert!(matches!(
        forecast_inference_graph(&cfg, &params, DType::F64),
        Err(ForecastError::WrongShape(_))
    ));
}

/// Train-step time at the default (Abilene) config with batch 64: run with
/// `cargo nextest run --test forecaster --run-ignored only --no-capture speed`
/// (`FORECAST_BENCH_THREADS=N` sets the intra-op threads, default 2).
#[test]
#[ignore = "a timing, not a check"]
fn default_config_train_step_speed() {
    let cfg = ForecastConfig::default();
    let dt = DType::F32;
    let series = synthetic_series(&[1.0, 50.0, 3e4], 60 * PERIOD, 0.04, 3);
    let mut rng = SplitMix64(5);
    let span = cfg.context + cfg.horizon;
    let threads = std::env::var("FORECAST_BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(2);
    let o = RuntimeOptions {
        intra_threads: Some(threads),
        optimization: OptimizationLevel::All,
        ..Default::default()
    };
    let batches: Vec<Windows> = (0..4)
        .map(|_| {
            let starts: Vec<(usize, usize)> = (0..64)
                .map(|_| {
                    let s = (rng.uniform() * 3.0) as usize;
                    (s, (rng.uniform() * (60 * PERIOD - span) as f64) as usize)
                })
                .collect();
            windows_of(&cfg, &series, &starts, dt)
        })
        .collect();
    let params = forecast_init_params(&cfg, 1, dt).unwrap();
    let t0 = std::time::Instant::now();
    let train = forecast_train_step_graph(&cfg, &AdamWConfig::default(), dt)
        .unwrap()
        .to_bytes();
    let mut trainer = Trainer::new(&o, &train, &params, None).unwrap();
    println!("graph + session: {:.2} s", t0.elapsed().as_secs_f64());
    let lr = LrSchedule {
        peak: 1e-3,
        warmup_steps: 10,
        total_steps: 1000,
    };
    for b in &batches {
        trainer.step(&b.with_targets(), &lr).unwrap();
    }
    let n = 20;
    let t = std::time::Instant::now();
    for i in 0..n {
        trainer.step(&batches[i % 4].with_targets(), &lr).unwrap();
    }
    let ms = t.elapsed().as_secs_f64() * 1000.0 / n as f64;
    println!("default config, batch 64, {threads} threads: {ms:.1} ms per train step");
}
