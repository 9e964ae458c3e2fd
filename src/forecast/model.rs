//! netfm's forecaster as a [`Forecaster`]: the patch transformer of netfm-models'
//! `forecaster` module, trained by the same train-step path as the packet encoder
//! ([`crate::runtime::Trainer`], AdamW inside the graph) on windows of every series at once
//! (one global model), and run by ONNX Runtime in batches of every series of an origin.
//!
//! - Windows: every `stride`-th origin of the training part with a whole context behind it
//!   and a whole horizon ahead; missing points are masked out of the history (`observed`)
//!   and of the loss (`target_mask`). Batches are drawn with a seeded generator, so a run is
//!   deterministic for a seed.
//! - Calendar features: sine and cosine of the time of day and of the day of the week, at
//!   each patch's last interval and at each forecast step (the weekly pair only when the
//!   training data spans two weeks: see [`TrainSettings::calendar`]).
//! - Drift: once told of an event ([`Forecaster::set_event`]), the model renormalizes each
//!   history that runs past it: the points before the event are rescaled by the ratio of the
//!   load since the event to the load at the same times one day earlier, so the window looks
//!   like one level, the new one (a rerouted link's load is multiplied, not shifted). With
//!   `adapt_steps > 0` it also takes that many fine-tuning steps on the windows that end
//!   after the event, once enough of them exist.

use super::baselines::Forecaster;
use super::series::Panel;
use crate::runtime::trainer::{LrSchedule, Trainer};
use crate::runtime::{host, session_from_bytes, RuntimeOptions};
use anyhow::{bail, Context};
use netfm_models::forecaster::{
    forecast_inference_graph, forecast_init_params, forecast_train_step_graph, ForecastConfig,
};
use netfm_models::optim::AdamWConfig;
use netfm_models::params::SplitMix64;
use netfm_models::{DType, Data, Tensor};
use ort::session::Session;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;

/// How the forecaster is trained.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainSettings {
    pub steps: u64,
    pub batch: usize,
    pub lr: f64,
    pub warmup: u64,
    /// A window every this many intervals.
    pub stride: usize,
    pub seed: u64,
    /// The calendar features. `Auto` becomes `Week` when the training data spans two weeks
    /// or more, else `Day` (with less, some days of the week are never seen in training and
    /// the features cannot generalize to them).
    pub calendar: Calendar,
}

impl Default for TrainSettings {
    fn default() -> Self {
        TrainSettings {
            steps: 600,
            batch: 64,
            lr: 2e-3,
            warmup: 50,
            stride: 1,
            seed: 1,
            calendar: Calendar::Auto,
        }
    }
}

/// Which calendar features the model gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Calendar {
    /// Time of day, and day of week when the training data spans two weeks.
    Auto,
    Day,
    Week,
    None,
}

impl std::str::FromStr for Calendar {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Calendar> {
        Ok(match s {
            "auto" => Calendar::Auto,
            "day" => Calendar::Day,
            "week" => Calendar::Week,
            "none" => Calendar::None,
            _ => bail!("--calendar is auto, day, week or none, not {s:?}"),
        })
    }
}

/// The calendar features of the interval starting at `t` (unix seconds, UTC): sine and
/// cosine of the time of day (zero with `Calendar::None`) and of the day of the week (zero
/// unless `Calendar::Week`).
pub fn calendar(t: i64, which: Calendar) -> [f32; 4] {
    use std::f64::consts::TAU;
    let day = t.rem_euclid(86_400) as f64 / 86_400.0;
    // 1970-01-01 was a Thursday: Monday is day 0 of the week.
    let week = ((t.div_euclid(86_400) + 3).rem_euclid(7) as f64 + day) / 7.0;
    let w = if which == Calendar::Week { 1.0 } else { 0.0 };
    let d = if which == Calendar::None { 0.0 } else { 1.0 };
    [
        d * (TAU * day).sin() as f32,
        d * (TAU * day).cos() as f32,
        w * (TAU * week).sin() as f32,
        w * (TAU * week).cos() as f32,
    ]
}

/// A batch of windows in the graph's layout.
struct Batch {
    b: usize,
    history: Vec<f32>,
    observed: Vec<f32>,
    hist_time: Vec<f32>,
    future_time: Vec<f32>,
    target: Vec<f32>,
    target_mask: Vec<f32>,
}

impl Batch {
    fn new(cap: usize) -> Batch {
        Batch {
            b: 0,
            history: Vec::with_capacity(cap),
            observed: Vec::new(),
            hist_time: Vec::new(),
            future_time: Vec::new(),
            target: Vec::new(),
            target_mask: Vec::new(),
        }
    }

    /// Adds the window of `y` ending before `origin` (interval `origin` starts at time
    /// `t_origin`); the target part only where `y` reaches that far.
    fn push(
        &mut self,
        cfg: &ForecastConfig,
        y: &[f64],
        origin: usize,
        t_origin: i64,
        step: i64,
        weekly: Calendar,
    ) {
        let (c, h, p) = (cfg.context, cfg.horizon, cfg.patch);
        for i in 0..c {
            let x = (origin + i).checked_sub(c).and_then(|j| y.get(j)).copied();
            match x.filter(|x| !x.is_nan()) {
                Some(x) => {
                    self.history.push(x as f32);
                    self.observed.push(1.0);
                }
                None => {
                    self.history.push(0.0);
                    self.observed.push(0.0);
                }
            }
        }
        for k in 0..cfg.patches() {
            // The patch's last interval.
            let t = t_origin - (c as i64 - ((k + 1) * p) as i64 + 1) * step;
            self.hist_time.extend(calendar(t, weekly));
        }
        for s in 0..h {
            self.future_time
                .extend(calendar(t_origin + s as i64 * step, weekly));
            match y.get(origin + s).copied().filter(|x| !x.is_nan()) {
                Some(x) => {
                    self.target.push(x as f32);
                    self.target_mask.push(1.0);
                }
                None => {
                    self.target.push(0.0);
                    self.target_mask.push(0.0);
                }
            }
        }
        self.b += 1;
    }

    fn tensors(&self, cfg: &ForecastConfig) -> Vec<(&'static str, Tensor)> {
        let (b, c, h, p) = (
            self.b as i64,
            cfg.context as i64,
            cfg.horizon as i64,
            cfg.patches() as i64,
        );
        let t = |dims: Vec<i64>, v: &Vec<f32>| Tensor {
            dims,
            data: Data::F32(v.clone()),
        };
        vec![
            ("history", t(vec![b, c], &self.history)),
            ("observed", t(vec![b, c], &self.observed)),
            ("hist_time", t(vec![b, p, 4], &self.hist_time)),
            ("future_time", t(vec![b, h, 4], &self.future_time)),
            ("target", t(vec![b, h], &self.target)),
            ("target_mask", t(vec![b, h], &self.target_mask)),
        ]
    }
}

/// The trained forecaster.
pub struct NetfmForecaster {
    pub cfg: ForecastConfig,
    pub settings: TrainSettings,
    opts: RuntimeOptions,
    params: Option<HashMap<String, Tensor>>,
    session: Option<Mutex<Session>>,
    onnx: Option<Vec<u8>>,
    event: Option<usize>,
    /// The series' interval in seconds (from the training panel).
    step: i64,
    name: String,
    /// Mean training loss over the last tenth of the steps, and the seconds training took.
    pub final_loss: f64,
    /// Shows the training steps, when set.
    pub progress: Option<indicatif::ProgressBar>,
    pub train_s: f64,
}

impl NetfmForecaster {
    pub fn new(
        cfg: ForecastConfig,
        settings: TrainSettings,
        opts: RuntimeOptions,
    ) -> NetfmForecaster {
        NetfmForecaster {
            cfg,
            settings,
            opts,
            params: None,
            session: None,
            onnx: None,
            event: None,
            step: 300,
            name: "netfm".into(),
            final_loss: f64::NAN,
            progress: None,
            train_s: 0.0,
        }
    }

    /// A saved model: its inference graph (`model.onnx`, which carries the config), the
    /// settings it was trained with and its series' interval.
    pub fn from_onnx(
        bytes: &[u8],
        settings: TrainSettings,
        step: i64,
        opts: RuntimeOptions,
    ) -> anyhow::Result<NetfmForecaster> {
        let proto = netfm_models::proto::ModelProto::from_bytes(bytes)
            .context("the model file is not an ONNX model")?;
        let cfg = ForecastConfig::of_model(&proto)
            .context("not a netfm forecaster (no forecast config in its metadata)")?
            .map_err(|e| anyhow::anyhow!("its forecast config: {e}"))?;
        let mut m = NetfmForecaster::new(cfg, settings, opts);
        m.step = step;
        m.session = Some(Mutex::new(session_from_bytes(&m.opts, bytes)?));
        m.onnx = Some(bytes.to_vec());
        Ok(m)
    }

    /// The inference graph with the trained weights (after `fit` or `from_onnx`).
    pub fn onnx(&self) -> Option<&[u8]> {
        self.onnx.as_deref()
    }

    /// The series' interval it was trained on (seconds).
    pub fn step(&self) -> i64 {
        self.step
    }

    pub fn params(&self) -> Option<&HashMap<String, Tensor>> {
        self.params.as_ref()
    }

    /// The name it reports under (e.g. to tell the adapted variant apart).
    pub fn set_name(&mut self, name: &str) {
        self.name = name.to_string();
    }

    fn install(&mut self, params: HashMap<String, Tensor>) -> anyhow::Result<()> {
        let graph = forecast_inference_graph(&self.cfg, &params, DType::F32)
            .map_err(|e| anyhow::anyhow!("building the forecaster's inference graph: {e}"))?;
        let bytes = graph.to_bytes();
        let session = session_from_bytes(&self.opts, &bytes)?;
        self.session = Some(Mutex::new(session));
        self.params = Some(params);
        self.onnx = Some(bytes);
        Ok(())
    }

    /// The quantile indices of the model for the `asked` levels (each must be one of its own).
    fn quantile_index(&self, asked: &[f64]) -> anyhow::Result<Vec<usize>> {
        asked
            .iter()
            .map(|&q| {
                self.cfg
                    .quantiles
                    .iter()
                    .position(|&m| (m - q).abs() < 1e-9)
                    .with_context(|| {
                        format!(
                            "the model predicts the quantiles {:?}, not {q}",
                            self.cfg.quantiles
                        )
                    })
            })
            .collect()
    }

    /// The history renormalized past the event (see the module doc).
    fn adapted<'a>(&self, history: &'a [f64]) -> std::borrow::Cow<'a, [f64]> {
        let day = ((86_400 / self.step.max(1)) as usize).min(history.len());
        let Some(e) = self.event.filter(|&e| e < history.len() && e >= day) else {
            return history.into();
        };
        let n = history.len();
        let mean = |xs: &[f64]| {
            let v: Vec<f64> = xs.iter().copied().filter(|x| !x.is_nan()).collect();
            (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
        };
        let (Some(post), Some(pre)) = (mean(&history[e..n]), mean(&history[e - day..n - day]))
        else {
            return history.into();
        };
        if pre <= 0.0 || post <= 0.0 {
            return history.into();
        }
        let r = post / pre;
        let mut out = history.to_vec();
        for x in &mut out[..e] {
            *x *= r;
        }
        out.into()
    }
}

impl Forecaster for NetfmForecaster {
    fn name(&self) -> &str {
        &self.name
    }

    fn parallel(&self) -> bool {
        false
    }

    fn set_event(&mut self, event: Option<usize>) {
        self.event = event;
    }

    fn adaptive(&self) -> bool {
        true
    }

    fn fit(&mut self, train: &Panel) -> anyhow::Result<()> {
        let started = std::time::Instant::now();
        self.step = train.step;
        if self.settings.calendar == Calendar::Auto {
            self.settings.calendar = if train.len() as i64 * train.step >= 14 * 86_400 {
                Calendar::Week
            } else {
                Calendar::Day
            };
        }
        let cfg = self.cfg.clone();
        let s = self.settings.clone();
        if s.steps == 0 {
            bail!("the forecaster needs at least one train step");
        }
        let mut windows = Vec::new();
        for (si, y) in train.values.iter().enumerate() {
            let mut o = cfg.context;
            while o + cfg.horizon <= y.len() {
                let targets = y[o..o + cfg.horizon].iter().filter(|x| !x.is_nan()).count();
                if targets > 0 {
                    windows.push((si, o));
                }
                o += s.stride.max(1);
            }
        }
        if windows.is_empty() {
            bail!(
                "too little history to train: every window needs {} intervals of context and {} ahead ({} intervals of training data)",
                cfg.context,
                cfg.horizon,
                train.len()
            );
        }
        let params =
            forecast_init_params(&cfg, s.seed, DType::F32).map_err(|e| anyhow::anyhow!("{e}"))?;
        let graph = forecast_train_step_graph(&cfg, &AdamWConfig::default(), DType::F32)
            .map_err(|e| anyhow::anyhow!("building the forecaster's train step: {e}"))?;
        let mut trainer = Trainer::new(&self.opts, &graph.to_bytes(), &params, None)?;
        let lr = LrSchedule {
            peak: s.lr,
            warmup_steps: s.warmup.min(s.steps / 2),
            total_steps: s.steps,
        };
        let mut rng = SplitMix64(s.seed ^ 0x0f0e_ca57);
        let mut tail = Vec::new();
        for step in 0..s.steps {
            let mut b = Batch::new(s.batch * cfg.context);
            for _ in 0..s.batch.min(windows.len().max(1)) {
                let (si, o) = windows[(rng.next_u64() % windows.len() as u64) as usize];
                b.push(
                    &cfg,
                    &train.values[si],
                    o,
                    train.time(o),
                    train.step,
                    self.settings.calendar,
                );
            }
            let t = b.tensors(&cfg);
            let feeds: Vec<(&str, &Tensor)> = t.iter().map(|(n, t)| (*n, t)).collect();
            let r = trainer.step(&feeds, &lr)?;
            if let Some(bar) = &self.progress {
                bar.set_position(step + 1);
                if step % 10 == 0 {
                    bar.set_message(format!("loss {:.4}", r.loss()));
                }
            }
            if step >= s.steps - (s.steps / 10).max(1) {
                tail.push(r.loss());
            }
        }
        self.final_loss = tail.iter().sum::<f64>() / tail.len().max(1) as f64;
        let trained = trainer.params()?;
        self.install(trained)?;
        self.train_s = started.elapsed().as_secs_f64();
        Ok(())
    }

    fn forecast(
        &self,
        series: usize,
        history: &[f64],
        origin: i64,
        horizon: usize,
        quantiles: &[f64],
    ) -> anyhow::Result<Vec<Vec<f64>>> {
        Ok(self
            .forecast_many(&[(series, history, origin)], horizon, quantiles)?
            .remove(0))
    }

    fn forecast_many(
        &self,
        requests: &[(usize, &[f64], i64)],
        horizon: usize,
        quantiles: &[f64],
    ) -> anyhow::Result<Vec<Vec<Vec<f64>>>> {
        if horizon > self.cfg.horizon {
            bail!(
                "a horizon of {horizon} intervals is longer than the model's {} (train one with a longer horizon)",
                self.cfg.horizon
            );
        }
        let qi = self.quantile_index(quantiles)?;
        let session = self
            .session
            .as_ref()
            .context("the forecaster is not trained")?;
        let mut b = Batch::new(requests.len() * self.cfg.context);
        for &(_, h, t) in requests {
            let h = self.adapted(h);
            b.push(&self.cfg, &h, h.len(), t, self.step, self.settings.calendar);
        }
        let t = b.tensors(&self.cfg);
        let feeds: Vec<(&str, &Tensor)> = t
            .iter()
            .filter(|(n, _)| *n != "target" && *n != "target_mask")
            .map(|(n, t)| (*n, t))
            .collect();
        let out = {
            let mut s = session
                .lock()
                .map_err(|_| anyhow::anyhow!("the forecaster's session was poisoned"))?;
            host::run(&mut s, &feeds)?
        };
        let q = out.get("quantiles").context("no quantiles output")?;
        let Data::F32(v) = &q.data else {
            bail!("quantiles are not float32");
        };
        let (hq, nq) = (self.cfg.horizon, self.cfg.quantiles.len());
        Ok((0..requests.len())
            .map(|r| {
                (0..horizon)
                    .map(|s| {
                        qi.iter()
                            .map(|&k| v[(r * hq + s) * nq + k] as f64)
                            .collect()
                    })
                    .collect()
            })
            .collect())
    }
}

/// Several forecasters trained alike but for their seeds, their quantiles averaged
/// (quantile averaging keeps them ordered).
pub struct Ensemble {
    pub members: Vec<NetfmForecaster>,
}

impl Forecaster for Ensemble {
    fn name(&self) -> &str {
        "netfm"
    }

    fn parallel(&self) -> bool {
        false
    }

    fn set_event(&mut self, event: Option<usize>) {
        for m in &mut self.members {
            m.set_event(event);
        }
    }

    fn adaptive(&self) -> bool {
        true
    }

    fn fit(&mut self, train: &Panel) -> anyhow::Result<()> {
        for m in &mut self.members {
            m.fit(train)?;
        }
        Ok(())
    }

    fn forecast(
        &self,
        series: usize,
        history: &[f64],
        origin: i64,
        horizon: usize,
        quantiles: &[f64],
    ) -> anyhow::Result<Vec<Vec<f64>>> {
        Ok(self
            .forecast_many(&[(series, history, origin)], horizon, quantiles)?
            .remove(0))
    }

    fn forecast_many(
        &self,
        requests: &[(usize, &[f64], i64)],
        horizon: usize,
        quantiles: &[f64],
    ) -> anyhow::Result<Vec<Vec<Vec<f64>>>> {
        let mut sum: Option<Vec<Vec<Vec<f64>>>> = None;
        for m in &self.members {
            let f = m.forecast_many(requests, horizon, quantiles)?;
            match &mut sum {
                None => sum = Some(f),
                Some(s) => {
                    for (a, b) in s.iter_mut().zip(&f) {
                        for (x, y) in a.iter_mut().zip(b) {
                            for (u, v) in x.iter_mut().zip(y) {
                                *u += v;
                            }
                        }
                    }
                }
            }
        }
        let k = self.members.len().max(1) as f64;
        let mut s = sum.context("an empty ensemble")?;
        for a in &mut s {
            for x in a {
                for u in x {
                    *u /= k;
                }
            }
        }
        Ok(s)
    }
}
