//! Validation during pretraining: a fixed set of held-out batches, the `eval` graph's
//! metrics on them, and next to each metric a baseline computed from the training data, so a
//! user sees at once whether the model learned anything:
//!
//! | metric | model | baseline |
//! |---|---|---|
//! | `mlm_acc` | masked positions whose most likely id is the true one | the most frequent id at that protocol and slot in the training sample |
//! | `swap_acc` | bursts whose swap logit has the label's sign | the training sample's majority class |
//! | `direction_acc` | masked-metadata bursts whose direction logit has the label's sign | the training sample's majority direction |
//! | `meta_l1` | mean absolute error of the three regressed features (log space) | predicting the training sample's mean |
//!
//! The validation batches are corrupted with their own fixed seeds, so every evaluation of a
//! run (and of a resumed run) scores the very same inputs.

use super::collate::{pretrain_batch, Batch, Layout, Masking};
use super::data::{derive_seed, EpochStream, StreamConfig, Take};
use crate::runtime::host;
use anyhow::Context;
use netfm_models::config::{InputLayout, META_TARGETS};
use netfm_models::{Data, Tensor};
use netfm_tokenizer::TokenizedFlow;
use ort::session::Session;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;

/// Reads up to `max_flows` flows of `take` (in a fixed order: epoch 0 of a stream without
/// bucketing) and returns them in batches of `batch_size`.
pub fn read_flows(
    files: &[PathBuf],
    take: Take,
    max_flows: usize,
    batch_size: usize,
    seed: u64,
) -> anyhow::Result<Vec<Vec<TokenizedFlow>>> {
    let cfg = StreamConfig {
        batch_size: batch_size.max(1),
        shuffle_buffer: 1,
        pool_batches: 1,
        seed,
    };
    let mut out = Vec::new();
    let mut n = 0;
    for batch in EpochStream::new(files, take, &cfg, 0) {
        let mut batch: Vec<TokenizedFlow> = batch?.into_iter().map(|ex| ex.flow).collect();
        batch.truncate(max_flows - n);
        n += batch.len();
        out.push(batch);
        if n >= max_flows {
            break;
        }
    }
    Ok(out)
}

/// The fixed validation batches.
pub struct ValSet {
    pub batches: Vec<Batch>,
    pub flows: usize,
}

impl ValSet {
    pub fn build(
        groups: &[Vec<TokenizedFlow>],
        layout: &Layout,
        masking: &Masking,
        seed: u64,
    ) -> ValSet {
        let batches: Vec<Batch> = groups
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let refs: Vec<&TokenizedFlow> = g.iter().collect();
                let mut rng = netfm_models::params::SplitMix64(derive_seed(seed, "val", i as u64));
                pretrain_batch(&refs, layout, masking, &mut rng)
            })
            .collect();
        let flows = batches.iter().map(|b| b.flows).sum();
        ValSet { batches, flows }
    }
}

/// What the training sample says a model that learned nothing would predict.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BaselineStats {
    /// The most frequent model id per (protocol, slot).
    #[serde(skip)]
    pub mode: HashMap<(i64, u32), i64>,
    pub swap_rate: f64,
    pub forward_rate: f64,
    pub meta_mean: [f64; META_TARGETS],
    pub sample_flows: usize,
}

fn ints(t: &Tensor) -> &[i64] {
    match &t.data {
        Data::I64(v) => v,
        _ => &[],
    }
}

fn floats(t: &Tensor) -> Vec<f64> {
    match &t.data {
        Data::F32(v) => v.iter().map(|&x| x as f64).collect(),
        Data::F64(v) => v.clone(),
        Data::I64(v) => v.iter().map(|&x| x as f64).collect(),
        Data::Bool(v) => v.iter().map(|&x| x as u8 as f64).collect(),
    }
}

fn get<'a>(b: &'a Batch, name: &str) -> anyhow::Result<&'a Tensor> {
    b.get(name).with_context(|| format!("batch without {name}"))
}

/// Which entries of a per-burst tensor are real bursts (dense grids have empty cells).
fn burst_cells(b: &Batch, layout: &Layout) -> anyhow::Result<Vec<bool>> {
    Ok(match layout.input {
        InputLayout::Packed => vec![true; b.bursts],
        InputLayout::Dense => {
            let ids = get(b, "input_ids")?;
            let l = ids.dims[2] as usize;
            ints(ids)
                .chunks(l)
                .map(|row| row[0] == layout.vocab.cls as i64)
                .collect()
        }
    })
}

impl BaselineStats {
    /// From training flows, corrupted as in training (`groups` in batches).
    pub fn from_training(
        groups: &[Vec<TokenizedFlow>],
        layout: &Layout,
        masking: &Masking,
        seed: u64,
    ) -> anyhow::Result<BaselineStats> {
        let mut counts: HashMap<(i64, u32), HashMap<i64, u64>> = HashMap::new();
        let shift = layout.vocab.token_shift as i64;
        let mut flows = 0;
        let (mut swapped, mut bursts, mut forward, mut masked) = (0.0, 0.0, 0.0, 0.0);
        let mut meta_sum = [0.0; META_TARGETS];
        for (i, g) in groups.iter().enumerate() {
            for f in g {
                for (_, tokens) in f.bursts_with_tokens().take(layout.max_bursts) {
                    for (j, &t) in tokens.iter().take(layout.burst_len - 1).enumerate() {
                        *counts
                            .entry((f.protocol as i64, j as u32 + 1))
                            .or_default()
                            .entry(t as i64 + shift)
                            .or_default() += 1;
                    }
                }
            }
            flows += g.len();
            let refs: Vec<&TokenizedFlow> = g.iter().collect();
            let mut rng = netfm_models::params::SplitMix64(derive_seed(seed, "baseline", i as u64));
            let b = pretrain_batch(&refs, layout, masking, &mut rng);
            let cells = burst_cells(&b, layout)?;
            let swap = floats(get(&b, "swap_labels")?);
            let weight = floats(get(&b, "meta_weight")?);
            let dir = floats(get(&b, "direction_labels")?);
            let targets = floats(get(&b, "meta_targets")?);
            for (k, &cell) in cells.iter().enumerate() {
                if !cell {
                    continue;
                }
                bursts += 1.0;
                swapped += swap[k];
                if weight[k] > 0.0 {
                    masked += 1.0;
                    forward += dir[k];
                    for (m, s) in meta_sum.iter_mut().enumerate() {
                        *s += targets[k * META_TARGETS + m];
                    }
                }
            }
        }
        let mode = counts
            .into_iter()
            .map(|(key, c)| {
                let best = c
                    .into_iter()
                    .max_by_key(|&(id, n)| (n, std::cmp::Reverse(id)))
                    .map(|x| x.0)
                    .unwrap_or(0);
                (key, best)
            })
            .collect();
        let div = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        Ok(BaselineStats {
            mode,
            swap_rate: div(swapped, bursts),
            forward_rate: div(forward, masked),
            meta_mean: meta_sum.map(|s| div(s, masked)),
            sample_flows: flows,
        })
    }
}

/// One evaluation's figures (model or baseline; the baseline has no losses).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ValMetrics {
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub losses: Vec<(String, f64)>,
    pub mlm_acc: f64,
    pub swap_acc: f64,
    pub direction_acc: f64,
    pub meta_l1: f64,
}

/// Running sums of one evaluation.
#[derive(Default)]
struct Sums {
    losses: Vec<(String, f64)>,
    loss_weight: f64,
    mlm: (f64, f64),
    swap: (f64, f64),
    dir: (f64, f64),
    meta: (f64, f64),
}

impl Sums {
    fn metrics(&self) -> ValMetrics {
        let r = |(a, b): (f64, f64)| if b > 0.0 { a / b } else { f64::NAN };
        ValMetrics {
            losses: self
                .losses
                .iter()
                .map(|(n, v)| (n.clone(), v / self.loss_weight.max(1.0)))
                .collect(),
            mlm_acc: r(self.mlm),
            swap_acc: r(self.swap),
            direction_acc: r(self.dir),
            meta_l1: r(self.meta),
        }
    }
}

/// Runs the eval graph over `val` with `params`; returns the model's and the baseline's
/// metrics. Losses are averaged over batches weighted by their flows.
pub fn evaluate(
    session: &mut Session,
    params: &[(String, Tensor)],
    loss_names: &[String],
    val: &ValSet,
    layout: &Layout,
    base: &BaselineStats,
) -> anyhow::Result<(ValMetrics, ValMetrics)> {
    let mut m = Sums {
        losses: loss_names.iter().map(|n| (n.clone(), 0.0)).collect(),
        ..Sums::default()
    };
    let mut b = Sums::default();
    for batch in &val.batches {
        let mut feeds = batch.feeds();
        feeds.extend(params.iter().map(|(n, t)| (n.as_str(), t)));
        let out = host::run(session, &feeds).context("evaluating on the validation batches")?;
        let w = batch.flows as f64;
        for (name, sum) in m.losses.iter_mut() {
            let t = out
                .get(name.as_str())
                .with_context(|| format!("eval output {name}"))?;
            *sum += host::scalar(t)? * w;
        }
        m.loss_weight += w;
        let out_of = |name: &str| out.get(name).with_context(|| format!("eval output {name}"));
        // Masked tokens.
        let labels = ints(get(batch, "mlm_labels")?);
        let pred = ints(out_of("mlm_pred")?);
        let protocol = ints(get(batch, "protocol")?);
        for (i, &label) in labels.iter().enumerate() {
            m.mlm.0 += (pred[i] == label) as u8 as f64;
            m.mlm.1 += 1.0;
            let key = (protocol[batch.masked_flow[i] as usize], batch.masked_pos[i]);
            b.mlm.0 += (base.mode.get(&key) == Some(&label)) as u8 as f64;
            b.mlm.1 += 1.0;
        }
        // Per-burst heads.
        let cells = burst_cells(batch, layout)?;
        let swap_y = floats(get(batch, "swap_labels")?);
        let swap_z = floats(out_of("swap_logits")?);
        let weight = floats(get(batch, "meta_weight")?);
        let dir_y = floats(get(batch, "direction_labels")?);
        let dir_z = floats(out_of("direction_logits")?);
        let meta_y = floats(get(batch, "meta_targets")?);
        let meta_z = floats(out_of("meta_pred")?);
        let swap_major = (base.swap_rate > 0.5) as u8 as f64;
        let fwd_major = (base.forward_rate > 0.5) as u8 as f64;
        for (k, &cell) in cells.iter().enumerate() {
            if !cell {
                continue;
            }
            m.swap.0 += ((swap_z[k] > 0.0) as u8 as f64 == swap_y[k]) as u8 as f64;
            m.swap.1 += 1.0;
            b.swap.0 += (swap_major == swap_y[k]) as u8 as f64;
            b.swap.1 += 1.0;
            if weight[k] == 0.0 {
                continue;
            }
            m.dir.0 += ((dir_z[k] > 0.0) as u8 as f64 == dir_y[k]) as u8 as f64;
            m.dir.1 += 1.0;
            b.dir.0 += (fwd_major == dir_y[k]) as u8 as f64;
            b.dir.1 += 1.0;
            for j in 0..META_TARGETS {
                let y = meta_y[k * META_TARGETS + j];
                m.meta.0 += (meta_z[k * META_TARGETS + j] - y).abs();
                b.meta.0 += (base.meta_mean[j] - y).abs();
            }
            m.meta.1 += META_TARGETS as f64;
            b.meta.1 += META_TARGETS as f64;
        }
    }
    Ok((m.metrics(), b.metrics()))
}
