//! Every gradient rule of netfm-models' autodiff against central finite differences, run by
//! ONNX Runtime in float64, plus a whole-model check of the `tiny` hierarchical transformer.
//!
//! Tolerance. With step h = 1e-5 in float64, a central difference is off from the true
//! derivative by about h²·|f'''|/6 ≈ 1e-11·|f'''| (truncation) plus ε·|f|/h ≈ 2e-11·|f|
//! (rounding, ε = 2.2e-16). For these tests' losses (|f| < 100, smooth) both stay below 1e-8,
//! so `|fd − analytic| ≤ 1e-6 · max(1, max|analytic|)` has a 100x margin while any wrong
//! rule (a missing factor, a wrong axis or transpose) is off by order 1. Inputs of ops with
//! kinks (Abs, Max/Min, BCE's |z|) are kept away from the kinks by more than h.
//! Graphs run with ORT's optimizations disabled: higher levels fold float64 constants into
//! float32 attributes (see ../shared/design/ONNX-TRAINING-NOTES.md).

use netfm::runtime::{host, session_from_bytes, OptimizationLevel, RuntimeOptions};
use netfm_models::autodiff::gradients;
use netfm_models::graph::{fixed, Graph};
use netfm_models::hier::{bce_with_logits, cross_entropy, pinball, weighted_mean};
use netfm_models::params::SplitMix64;
use netfm_models::{DType, Data, Tensor, V};

const H: f64 = 1e-5;
const TOL: f64 = 1e-6;

fn opts() -> RuntimeOptions {
    RuntimeOptions {
        intra_threads: Some(1),
        optimization: OptimizationLevel::Disabled,
        ..Default::default()
    }
}

/// How an input's values are drawn.
#[derive(Clone, Copy)]
enum Draw {
    /// Uniform in [lo, hi].
    Uniform(f64, f64),
    /// Magnitude uniform in [0.2, 1.5], random sign: away from 0 (kinks of |x|).
    AwayFromZero,
}

fn draw(rng: &mut SplitMix64, dims: &[i64], how: Draw) -> Vec<f64> {
    let n: i64 = dims.iter().product();
    (0..n)
        .map(|_| match how {
            Draw::Uniform(lo, hi) => lo + (hi - lo) * rng.uniform(),
            Draw::AwayFromZero => {
                let m = 0.2 + 1.3 * rng.uniform();
                if rng.uniform() < 0.5 {
                    -m
                } else {
                    m
                }
            }
        })
        .collect()
}

/// Checks d(Σ f(x)·R)/dx for every float input `x` (R a fixed random tensor).
fn check(name: &str, inputs: &[(&[i64], Draw)], f: impl Fn(&mut Graph, &[V]) -> V) {
    let mut rng = SplitMix64(0x5eed ^ name.len() as u64);
    let mut g = Graph::new(DType::F64);
    let xs: Vec<V> = inputs
        .iter()
        .enumerate()
        .map(|(i, (dims, _))| g.input(&format!("x{i}"), DType::F64, fixed(dims)))
        .collect();
    let y = f(&mut g, &xs);
    let ydims: Vec<i64> = g
        .shape(y)
        .iter()
        .map(|d| d.as_fixed().expect("static output"))
        .collect();
    let r = draw(&mut rng, &ydims, Draw::Uniform(-1.0, 1.0));
    let rv = g.constant(Tensor {
        dims: ydims,
        data: Data::F64(r),
    });
    let yr = g.mul(y, rv);
    let loss = g.sum_all(yr);
    let grads = gradients(&mut g, loss, &xs);
    g.output(loss, "loss");
    for (i, gr) in grads.iter().enumerate() {
        g.output(*gr, &format!("g{i}"));
    }
    let model = g.to_model(name, &[]).to_bytes();
    let mut session =
        session_from_bytes(&opts(), &model).unwrap_or_else(|e| panic!("{name}: {e:#}"));

    let mut values: Vec<Tensor> = inputs
        .iter()
        .map(|(dims, how)| Tensor {
            dims: dims.to_vec(),
            data: Data::F64(draw(&mut rng, dims, *how)),
        })
        .collect();
    let names: Vec<String> = (0..values.len()).map(|i| format!("x{i}")).collect();
    let mut eval = |vals: &[Tensor]| {
        let feeds: Vec<(&str, &Tensor)> =
            names.iter().map(String::as_str).zip(vals.iter()).collect();
        host::run(&mut session, &feeds).unwrap_or_else(|e| panic!("{name}: {e:#}"))
    };
    let out = eval(&values);
    for i in 0..values.len() {
        let Data::F64(an) = &out[&format!("g{i}")].data else {
            panic!("f64 grads")
        };
        assert_eq!(an.len(), values[i].data.len(), "{name}: gradient {i} size");
        let scale = an.iter().fold(1.0f64, |m, x| m.max(x.abs()));
        let n = an.len();
        // Every element of small tensors, 24 spread-out ones of larger.
        let picks: Vec<usize> = if n <= 48 {
            (0..n).collect()
        } else {
            (0..24).map(|k| k * n / 24 + k % 3).collect()
        };
        for j in picks {
            let orig = match &values[i].data {
                Data::F64(v) => v[j],
                _ => unreachable!(),
            };
            let mut at = |x: f64, values: &mut Vec<Tensor>| {
                if let Data::F64(v) = &mut values[i].data {
                    v[j] = x;
                }
                let o = eval(values);
                host::scalar(&o["loss"]).expect("loss")
            };
            let up = at(orig + H, &mut values);
            let down = at(orig - H, &mut values);
            at(orig, &mut values);
            let fd = (up - down) / (2.0 * H);
            let err = (fd - an[j]).abs();
            assert!(
                err <= TOL * scale,
                "{name}: d/dx{i}[{j}] analytic {} vs finite difference {fd} (error {err:.3e}, scale {scale:.3e})",
                an[j]
            );
        }
    }
}

const U: Draw = Draw::Uniform(-1.0, 1.0);
const POS: Draw = Draw::Uniform(0.5, 2.0);

#[test]
fn elementwise_rules() {
    check("add_broadcast", &[(&[2, 3, 4], U), (&[4], U)], |g, x| {
        g.add(x[0], x[1])
    });
    check(
        "add_broadcast_middle",
        &[(&[2, 1, 4], U), (&[3, 1], U)],
        |g, x| g.add(x[0], x[1]),
    );
    check("sub", &[(&[3, 4], U), (&[3, 1], U)], |g, x| {
        g.sub(x[0], x[1])
    });
    check("mul", &[(&[2, 3], U), (&[2, 1], U)], |g, x| {
        g.mul(x[0], x[1])
    });
    check("div", &[(&[2, 3], U), (&[3], POS)], |g, x| {
        g.div(x[0], x[1])
    });
    check("neg", &[(&[5], U)], |g, x| g.neg(x[0]));
    check("exp", &[(&[5], U)], |g, x| g.exp(x[0]));
    check("log", &[(&[5], POS)], |g, x| g.log(x[0]));
    check("sqrt", &[(&[5], POS)], |g, x| g.sqrt(x[0]));
    check("tanh", &[(&[5], U)], |g, x| g.tanh(x[0]));
    check("sigmoid", &[(&[5], U)], |g, x| g.sigmoid(x[0]));
    check("cos", &[(&[5], U)], |g, x| g.cos(x[0]));
    check("sin", &[(&[5], U)], |g, x| g.sin(x[0]));
    check("abs", &[(&[6], Draw::AwayFromZero)], |g, x| g.abs(x[0]));
    check("pow3", &[(&[5], U)], |g, x| g.pow_const(x[0], 3.0));
    check("pow2", &[(&[5], U)], |g, x| g.pow_const(x[0], 2.0));
    check("pow_half", &[(&[5], POS)], |g, x| g.pow_const(x[0], 0.5));
    check("max", &[(&[3, 4], U), (&[4], U)], |g, x| g.max(x[0], x[1]));
    check("min", &[(&[3, 4], U), (&[3, 4], U)], |g, x| {
        g.min(x[0], x[1])
    });
    check("gelu", &[(&[7], Draw::Uniform(-3.0, 3.0))], |g, x| {
        g.gelu(x[0])
    });
    check("identity", &[(&[3], U)], |g, x| g.identity(x[0]));
    check("cast", &[(&[3], U)], |g, x| g.cast(x[0], DType::F64));
    check("where", &[(&[2, 3], U), (&[3], U)], |g, x| {
        let c = g.constant(Tensor {
            dims: vec![2, 3],
            data: Data::Bool(vec![true, false, true, false, false, true]),
        });
        g.where_(c, x[0], x[1])
    });
}

#[test]
fn linear_algebra_and_shape_rules() {
    check("matmul_2d", &[(&[3, 4], U), (&[4, 2], U)], |g, x| {
        g.matmul(x[0], x[1])
    });
    check("matmul_weight", &[(&[2, 3, 4], U), (&[4, 5], U)], |g, x| {
        g.matmul(x[0], x[1])
    });
    check(
        "matmul_batched",
        &[(&[2, 2, 3, 4], U), (&[2, 2, 4, 3], U)],
        |g, x| g.matmul(x[0], x[1]),
    );
    check(
        "matmul_broadcast",
        &[(&[2, 1, 3, 4], U), (&[3, 4, 2], U)],
        |g, x| g.matmul(x[0], x[1]),
    );
    check("reshape", &[(&[2, 3, 4], U)], |g, x| {
        g.reshape(x[0], &[0, -1])
    });
    check("transpose", &[(&[2, 3, 4], U)], |g, x| {
        g.transpose(x[0], &[2, 0, 1])
    });
    check(
        "concat",
        &[(&[2, 3], U), (&[2, 1], U), (&[2, 2], U)],
        |g, x| g.concat(x, 1),
    );
    check("slice", &[(&[3, 5, 2], U)], |g, x| g.slice(x[0], 1, 1, 4));
    check("pad", &[(&[2, 3], U)], |g, x| g.pad(x[0], &[1, 0, 0, 2]));
    check("unsqueeze", &[(&[2, 3], U)], |g, x| {
        g.unsqueeze(x[0], &[0, 2])
    });
    check("squeeze", &[(&[2, 1, 3], U)], |g, x| g.squeeze(x[0], &[1]));
    check("expand", &[(&[3, 1], U), (&[2, 3, 4], U)], |g, x| {
        let e = g.expand_like(x[0], x[1]);
        g.mul(e, x[1])
    });
}

#[test]
fn indexing_reduction_and_normalisation_rules() {
    check("gather_embedding", &[(&[7, 3], U)], |g, x| {
        let idx = g.constant(Tensor {
            dims: vec![2, 4],
            data: Data::I64(vec![0, 3, 3, 6, 1, 0, 3, 5]),
        });
        g.gather(x[0], idx)
    });
    check("gather_elements", &[(&[3, 4], U)], |g, x| {
        let idx = g.constant(Tensor {
            dims: vec![3, 2],
            data: Data::I64(vec![0, 3, 1, 1, 2, 0]),
        });
        g.gather_elements(x[0], idx, 1)
    });
    check(
        "scatter_elements_add",
        &[(&[3, 4], U), (&[3, 2], U)],
        |g, x| {
            let idx = g.constant(Tensor {
                dims: vec![3, 2],
                data: Data::I64(vec![0, 3, 1, 1, 2, 0]),
            });
            g.scatter_elements_add(x[0], idx, x[1], 1)
        },
    );
    check("log_softmax_pick", &[(&[3, 5], U)], |g, x| {
        let idx = g.constant(Tensor {
            dims: vec![3, 1],
            data: Data::I64(vec![4, 0, 2]),
        });
        g.log_softmax_pick(x[0], idx, 1)
    });
    check("softmax_last", &[(&[2, 5], U)], |g, x| g.softmax(x[0], -1));
    check("softmax_axis1", &[(&[2, 3, 4], U)], |g, x| {
        g.softmax(x[0], 1)
    });
    check("log_softmax", &[(&[3, 4], U)], |g, x| {
        g.log_softmax(x[0], -1)
    });
    check("reduce_sum", &[(&[2, 3, 4], U)], |g, x| {
        g.reduce_sum(x[0], &[0, 2], false)
    });
    check("reduce_sum_keep", &[(&[2, 3, 4], U)], |g, x| {
        g.reduce_sum(x[0], &[1], true)
    });
    check("reduce_mean", &[(&[2, 3, 4], U)], |g, x| {
        g.reduce_mean(x[0], &[-1], false)
    });
    check(
        "layer_norm",
        &[(&[2, 3, 6], U), (&[6], POS), (&[6], U)],
        |g, x| g.layer_norm(x[0], x[1], x[2], 1e-5),
    );
}

#[test]
fn loss_rules() {
    check("cross_entropy_ignore_index", &[(&[4, 5], U)], |g, x| {
        let labels = g.constant(Tensor {
            dims: vec![4],
            data: Data::I64(vec![2, -100, 0, 4]),
        });
        let l = cross_entropy(g, x[0], labels);
        g.reshape(l, &[1])
    });
    check("bce_with_logits", &[(&[6], Draw::AwayFromZero)], |g, x| {
        let y = g.constant(Tensor {
            dims: vec![6],
            data: Data::F64(vec![1.0, 0.0, 1.0, 1.0, 0.0, 0.0]),
        });
        bce_with_logits(g, x[0], y)
    });
    check("pinball", &[(&[6], U)], |g, x| {
        let y = g.constant(Tensor {
            dims: vec![6],
            data: Data::F64(vec![2.0, -2.0, 2.0, -2.0, 2.0, -2.0]),
        });
        pinball(g, x[0], y, 0.9)
    });
    check("l1", &[(&[5], Draw::AwayFromZero)], |g, x| {
        let a = g.abs(x[0]);
        let s = g.sum_all(a);
        g.reshape(s, &[1])
    });
    check("weighted_mse", &[(&[2, 3], U), (&[2, 3], U)], |g, x| {
        let d = g.sub(x[0], x[1]);
        let sq = g.mul(d, d);
        let w = g.constant(Tensor {
            dims: vec![2, 3],
            data: Data::F64(vec![1.0, 0.0, 1.0, 1.0, 1.0, 0.0]),
        });
        let l = weighted_mean(g, sq, w, 1.0);
        g.reshape(l, &[1])
    });
}
