//! Optimizers as graph nodes: AdamW with bias correction and decoupled weight decay,
//! global gradient-norm clipping, and the learning-rate schedule (linear warmup, then
//! constant, linear or cosine decay), all inside the train-step graph. The step number and
//! the schedule's settings are graph inputs, so one graph serves a whole run.

use crate::graph::{DType, Graph, V};
use serde::{Deserialize, Serialize};

/// Decay after warmup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    Constant,
    Linear,
    Cosine,
}

/// AdamW settings baked into a train-step graph.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Global gradient-norm clip; `None` leaves gradients as they are.
    pub max_grad_norm: Option<f64>,
    pub schedule: Schedule,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            max_grad_norm: Some(1.0),
            schedule: Schedule::Cosine,
        }
    }
}

/// The scalar inputs of a train step (all rank 0).
#[derive(Clone, Copy, Debug)]
pub struct StepInputs {
    /// int64: the number of this update, counting from 1.
    pub step: V,
    /// Peak learning rate.
    pub lr: V,
    pub warmup_steps: V,
    pub total_steps: V,
}

impl StepInputs {
    /// Declares the inputs `step`, `lr`, `warmup_steps` and `total_steps`.
    pub fn declare(g: &mut Graph) -> StepInputs {
        let f = g.float;
        StepInputs {
            step: g.input("step", DType::I64, vec![]),
            lr: g.input("lr", f, vec![]),
            warmup_steps: g.input("warmup_steps", f, vec![]),
            total_steps: g.input("total_steps", f, vec![]),
        }
    }
}

/// One parameter with its AdamW moments.
#[derive(Clone, Copy, Debug)]
pub struct ParamSlot {
    pub param: V,
    pub m: V,
    pub v: V,
    /// Whether weight decay applies (matrices and embeddings; not biases or norms).
    pub decay: bool,
}

/// What one AdamW update produces.
#[derive(Clone, Debug)]
pub struct AdamWUpdate {
    pub params: Vec<V>,
    pub m: Vec<V>,
    pub v: Vec<V>,
    /// The global gradient norm before clipping.
    pub grad_norm: V,
    /// The learning rate the schedule gave this step.
    pub lr: V,
}

/// The scheduled learning rate at `step`: `lr · min(1, step/warmup) · decay(progress)` with
/// `progress = clamp((step − warmup) / (total − warmup), 0, 1)`.
pub fn scheduled_lr(g: &mut Graph, schedule: Schedule, io: &StepInputs) -> V {
    let f = g.float;
    let s = g.cast(io.step, f);
    let one = g.scalar(1.0);
    let zero = g.scalar(0.0);
    let warm_den = g.max(io.warmup_steps, one);
    let warm = g.div(s, warm_den);
    let warm = g.min(warm, one);
    let lr = g.mul(io.lr, warm);
    let decay = match schedule {
        Schedule::Constant => return lr,
        _ => {
            let num = g.sub(s, io.warmup_steps);
            let den = g.sub(io.total_steps, io.warmup_steps);
            let den = g.max(den, one);
            let p = g.div(num, den);
            let p = g.max(p, zero);
            let p = g.min(p, one);
            match schedule {
                Schedule::Linear => g.sub(one, p),
                _ => {
                    let a = g.mul_scalar(p, std::f64::consts::PI);
                    let c = g.cos(a);
                    let c = g.add(c, one);
                    g.mul_scalar(c, 0.5)
                }
            }
        }
    };
    g.mul(lr, decay)
}

/// AdamW over `slots` with gradients `grads`.
pub fn adamw(
    g: &mut Graph,
    cfg: &AdamWConfig,
    slots: &[ParamSlot],
    grads: &[V],
    io: &StepInputs,
) -> AdamWUpdate {
    assert_eq!(slots.len(), grads.len());
    let f = g.float;
    // Global norm over all gradients.
    let mut total = None;
    for &gr in grads {
        let sq = g.mul(gr, gr);
        let s = g.sum_all(sq);
        total = Some(match total {
            Some(t) => g.add(t, s),
            None => s,
        });
    }
    let zero = g.scalar(0.0);
    let grad_norm = g.sqrt(total.unwrap_or(zero));
    let scale = cfg.max_grad_norm.map(|max| {
        let den = g.add_scalar(grad_norm, 1e-6);
        let maxv = g.scalar(max);
        let r = g.div(maxv, den);
        let one = g.scalar(1.0);
        g.min(r, one)
    });

    let lr = scheduled_lr(g, cfg.schedule, io);
    let s = g.cast(io.step, f);
    // Bias corrections 1 − βᵗ = 1 − exp(t·ln β).
    let bc = |g: &mut Graph, beta: f64| {
        let t = g.mul_scalar(s, beta.ln());
        let p = g.exp(t);
        let one = g.scalar(1.0);
        g.sub(one, p)
    };
    let bc1 = bc(g, cfg.beta1);
    let bc2 = bc(g, cfg.beta2);
    let step_size = g.div(lr, bc1);
    let sqrt_bc2 = g.sqrt(bc2);
    let decay_factor = {
        let t = g.mul_scalar(lr, cfg.weight_decay);
        let one = g.scalar(1.0);
        g.sub(one, t)
    };

    let mut out = AdamWUpdate {
        params: Vec::new(),
        m: Vec::new(),
        v: Vec::new(),
        grad_norm,
        lr,
    };
    for (slot, &gr) in slots.iter().zip(grads) {
        let gr = match scale {
            Some(sc) => g.mul(gr, sc),
            None => gr,
        };
        let m1 = g.mul_scalar(slot.m, cfg.beta1);
        let m2 = g.mul_scalar(gr, 1.0 - cfg.beta1);
        let m = g.add(m1, m2);
        let g2 = g.mul(gr, gr);
        let v1 = g.mul_scalar(slot.v, cfg.beta2);
        let v2 = g.mul_scalar(g2, 1.0 - cfg.beta2);
        let v = g.add(v1, v2);
        let sv = g.sqrt(v);
        let den = g.div(sv, sqrt_bc2);
        let den = g.add_scalar(den, cfg.eps);
        let upd = g.div(m, den);
        let upd = g.mul(upd, step_size);
        let base = if slot.decay && cfg.weight_decay != 0.0 {
            g.mul(slot.param, decay_factor)
        } else {
            slot.param
        };
        let p = g.sub(base, upd);
        out.params.push(p);
        out.m.push(m);
        out.v.push(v);
    }
    out
}
