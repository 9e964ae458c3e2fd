//! The AdamW train-step nodes against a plain Rust AdamW (PyTorch's `AdamW` semantics:
//! bias-corrected moments, decoupled weight decay `p ← p·(1 − lr·wd)`, then global-norm
//! clipping as `torch.nn.utils.clip_grad_norm_`), with warmup and cosine or linear decay,
//! over several steps in float64.

use netfm::runtime::{host, session_from_bytes, OptimizationLevel, RuntimeOptions};
use netfm_models::autodiff::gradients;
use netfm_models::graph::{fixed, Graph};
use netfm_models::optim::{adamw, AdamWConfig, ParamSlot, Schedule, StepInputs};
use netfm_models::{DType, Data, Tensor};

fn t(dims: &[i64], v: Vec<f64>) -> Tensor {
    Tensor {
        dims: dims.to_vec(),
        data: Data::F64(v),
    }
}

fn vals(t: &Tensor) -> Vec<f64> {
    match &t.data {
        Data::F64(v) => v.clone(),
        _ => panic!("f64 expected"),
    }
}

/// The reference schedule: linear warmup, then the decay.
fn lr_at(cfg: &AdamWConfig, peak: f64, step: f64, warmup: f64, total: f64) -> f64 {
    let warm = (step / warmup.max(1.0)).min(1.0);
    let p = ((step - warmup) / (total - warmup).max(1.0)).clamp(0.0, 1.0);
    let decay = match cfg.schedule {
        Schedule::Constant => 1.0,
        Schedule::Linear => 1.0 - p,
        Schedule::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * p).cos()),
    };
    peak * warm * decay
}

fn check(schedule: Schedule) {
    let cfg = AdamWConfig {
        schedule,
        weight_decay: 0.1,
        max_grad_norm: Some(1.0),
        ..AdamWConfig::default()
    };
    // loss = Σ c1·p1 + Σ c2·p2²: gradients c1 and 2·c2·p2 (norm above 1 at first: clipped).
    let (c1, c2) = (vec![0.9, -1.7, 0.4], vec![0.8, -0.3]);
    let mut g = Graph::new(DType::F64);
    let p1 = g.input("p1", DType::F64, fixed(&[3]));
    let p2 = g.input("p2", DType::F64, fixed(&[2]));
    let k1 = g.constant(t(&[3], c1.clone()));
    let k2 = g.constant(t(&[2], c2.clone()));
    let a = g.mul(p1, k1);
    let sq = g.mul(p2, p2);
    let b = g.mul(sq, k2);
    let (sa, sb) = (g.sum_all(a), g.sum_all(b));
    let loss = g.add(sa, sb);
    let grads = gradients(&mut g, loss, &[p1, p2]);
    let slots = [
        ParamSlot {
            param: p1,
            m: g.input("m1", DType::F64, fixed(&[3])),
            v: g.input("v1", DType::F64, fixed(&[3])),
            decay: true,
        },
        ParamSlot {
            param: p2,
            m: g.input("m2", DType::F64, fixed(&[2])),
            v: g.input("v2", DType::F64, fixed(&[2])),
            decay: false,
        },
    ];
    let io = StepInputs::declare(&mut g);
    let upd = adamw(&mut g, &cfg, &slots, &grads, &io);
    for (i, n) in ["1", "2"].iter().enumerate() {
        g.output(upd.params[i], &format!("new_p{n}"));
        g.output(upd.m[i], &format!("new_m{n}"));
        g.output(upd.v[i], &format!("new_v{n}"));
    }
    g.output(upd.grad_norm, "grad_norm");
    g.output(upd.lr, "lr_used");
    let model = g.to_model("adamw", &[]).to_bytes();
    let opts = RuntimeOptions {
        intra_threads: Some(1),
        optimization: OptimizationLevel::Disabled,
        ..Default::default()
    };
    let mut s = session_from_bytes(&opts, &model).unwrap();

    let (peak, warmup, total) = (0.05, 2.0, 6.0);
    // Reference state.
    let mut rp = [vec![0.5, -0.2, 1.0], vec![1.5, -2.0]];
    let mut rm = [vec![0.0; 3], vec![0.0; 2]];
    let mut rv = [vec![0.0; 3], vec![0.0; 2]];
    // Graph state.
    let mut gp = [t(&[3], rp[0].clone()), t(&[2], rp[1].clone())];
    let mut gm = [t(&[3], vec![0.0; 3]), t(&[2], vec![0.0; 2])];
    let mut gv = [t(&[3], vec![0.0; 3]), t(&[2], vec![0.0; 2])];
    let mut clipped_steps = 0;
    for step in 1..=6i64 {
        let scalars = [
            (
                "step",
                Tensor {
                    dims: vec![],
                    data: Data::I64(vec![step]),
                },
            ),
            ("lr", t(&[], vec![peak])),
            ("warmup_steps", t(&[], vec![warmup])),
            ("total_steps", t(&[], vec![total])),
        ];
        let mut feeds: Vec<(&str, &Tensor)> = vec![
            ("p1", &gp[0]),
            ("p2", &gp[1]),
            ("m1", &gm[0]),
            ("m2", &gm[1]),
            ("v1", &gv[0]),
            ("v2", &gv[1]),
        ];
        feeds.extend(scalars.iter().map(|(n, x)| (*n, x)));
        let out = host::run(&mut s, &feeds).unwrap();

        // Reference step.
        let grads = [
            c1.clone(),
            rp[1]
                .iter()
                .zip(&c2)
                .map(|(p, c)| 2.0 * c * p)
                .collect::<Vec<_>>(),
        ];
        let norm = grads.iter().flatten().map(|x| x * x).sum::<f64>().sqrt();
        let scale = (1.0 / (norm + 1e-6)).min(1.0);
        clipped_steps += (scale < 1.0) as usize;
        let lr = lr_at(&cfg, peak, step as f64, warmup, total);
        let (bc1, bc2) = (
            1.0 - cfg.beta1.powi(step as i32),
            1.0 - cfg.beta2.powi(step as i32),
        );
        for k in 0..2 {
            for j in 0..rp[k].len() {
                let gr = grads[k][j] * scale;
                rm[k][j] = cfg.beta1 * rm[k][j] + (1.0 - cfg.beta1) * gr;
                rv[k][j] = cfg.beta2 * rv[k][j] + (1.0 - cfg.beta2) * gr * gr;
                let decayed = if k == 0 {
                    rp[k][j] * (1.0 - lr * cfg.weight_decay)
                } else {
                    rp[k][j]
                };
                rp[k][j] =
                    decayed - (lr / bc1) * rm[k][j] / (rv[k][j].sqrt() / bc2.sqrt() + cfg.eps);
            }
        }
        let close = |a: f64, b: f64, what: &str| {
            assert!(
                (a - b).abs() <= 1e-12 * b.abs().max(1e-3),
                "{schedule:?} step {step} {what}: graph {a} vs reference {b}"
            );
        };
        close(host::scalar(&out["grad_norm"]).unwrap(), norm, "grad norm");
        close(host::scalar(&out["lr_used"]).unwrap(), lr, "lr");
        for k in 0..2 {
            let n = k + 1;
            for (what, got, want) in [
                ("p", &out[&format!("new_p{n}")], &rp[k]),
                ("m", &out[&format!("new_m{n}")], &rm[k]),
                ("v", &out[&format!("new_v{n}")], &rv[k]),
            ] {
                for (a, b) in vals(got).iter().zip(want) {
                    close(*a, *b, &format!("{what}{n}"));
                }
            }
        }
        gp = [out["new_p1"].clone(), out["new_p2"].clone()];
        gm = [out["new_m1"].clone(), out["new_m2"].clone()];
        gv = [out["new_v1"].clone(), out["new_v2"].clone()];
    }
    assert!(clipped_steps >= 1, "the test must exercise clipping");
}

#[test]
fn adamw_cosine_matches_the_reference() {
    check(Schedule::Cosine);
}

#[test]
fn adamw_linear_matches_the_reference() {
    check(Schedule::Linear);
}

#[test]
fn adamw_constant_matches_the_reference() {
    check(Schedule::Constant);
}
