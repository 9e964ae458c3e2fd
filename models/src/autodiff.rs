//! Reverse-mode automatic differentiation over [`Graph`]: the backward pass is appended to
//! the same graph as ordinary nodes. Every operator's gradient rule is in [`rule`], one arm
//! per operator; `tests` in the netfm package check each against central finite differences
//! run by ONNX Runtime.

use crate::graph::{Graph, Op, GELU_A, GELU_C, V};
use std::collections::HashMap;

/// Gradients of the rank-0 `loss` with respect to each of `wrt`, appended to `g`. A value in
/// `wrt` that the loss does not depend on gets a zero gradient.
pub fn gradients(g: &mut Graph, loss: V, wrt: &[V]) -> Vec<V> {
    assert!(
        g.rank(loss) == 0,
        "loss must be a scalar, got rank {}",
        g.rank(loss)
    );
    assert!(g.dtype(loss).is_float(), "loss must be a float");
    let n_nodes = g.nodes().len();

    // Forward: which values depend on something in `wrt`.
    let mut needs = vec![false; g.value_count()];
    for &w in wrt {
        needs[w.index()] = true;
    }
    for node in &g.nodes()[..n_nodes] {
        if node.op.is_differentiable() && node.inputs.iter().any(|x| needs[x.index()]) {
            for o in &node.outputs {
                if g.dtype(*o).is_float() {
                    needs[o.index()] = true;
                }
            }
        }
    }

    let mut grads: HashMap<V, V> = HashMap::new();
    let one = g.scalar_of(g.dtype(loss), 1.0);
    grads.insert(loss, one);
    for i in (0..n_nodes).rev() {
        let node = g.nodes()[i].clone();
        let out_grads: Vec<Option<V>> =
            node.outputs.iter().map(|o| grads.get(o).copied()).collect();
        if out_grads[0].is_none() {
            continue;
        }
        let need: Vec<bool> = node
            .inputs
            .iter()
            .map(|x| needs[x.index()] && g.dtype(*x).is_float())
            .collect();
        if !need.iter().any(|&n| n) || !node.op.is_differentiable() {
            continue;
        }
        let gy = out_grads[0].expect("checked");
        let in_grads = rule(g, &node.op, &node.inputs, &node.outputs, gy, &need);
        for ((x, gx), n) in node.inputs.iter().zip(in_grads).zip(&need) {
            let Some(gx) = gx else { continue };
            if !n {
                continue;
            }
            debug_assert_eq!(g.shape(gx), g.shape(*x), "gradient shape of {:?}", node.op);
            let acc = match grads.get(x) {
                Some(&prev) => g.add(prev, gx),
                None => gx,
            };
            grads.insert(*x, acc);
        }
    }
    wrt.iter()
        .map(|w| match grads.get(w) {
            Some(&gw) => gw,
            None => g.zeros_like(*w),
        })
        .collect()
}

/// Sum `grad` down to `target`'s shape over the axes that broadcasting expanded.
pub fn unbroadcast(g: &mut Graph, grad: V, target: V) -> V {
    let gs = g.shape(grad).clone();
    let ts = g.shape(target).clone();
    if gs == ts {
        return grad;
    }
    let lead = gs.len() - ts.len();
    let mut axes: Vec<i64> = (0..lead as i64).collect();
    for (i, t) in ts.iter().enumerate() {
        if t.is_one() && !gs[lead + i].is_one() {
            axes.push((lead + i) as i64);
        }
    }
    let mut r = if axes.is_empty() {
        grad
    } else {
        g.reduce_sum(grad, &axes, true)
    };
    if lead > 0 {
        let lead_axes: Vec<i64> = (0..lead as i64).collect();
        r = g.squeeze(r, &lead_axes);
    }
    assert_eq!(g.shape(r), &ts, "unbroadcast");
    r
}

/// The gradient rule of one operator: input gradients from the output gradient `gy`
/// (gradients of secondary outputs never flow: they feed backward passes only). Only inputs
/// with `need[i]` are computed.
fn rule(g: &mut Graph, op: &Op, x: &[V], y: &[V], gy: V, need: &[bool]) -> Vec<Option<V>> {
    let y0 = y[0];
    let when = |i: usize| need.get(i).copied().unwrap_or(false);
    match op {
        Op::Add => {
            let a = when(0).then(|| unbroadcast(g, gy, x[0]));
            let b = when(1).then(|| unbroadcast(g, gy, x[1]));
            vec![a, b]
        }
        Op::Sub => {
            let a = when(0).then(|| unbroadcast(g, gy, x[0]));
            let b = when(1).then(|| {
                let n = g.neg(gy);
                unbroadcast(g, n, x[1])
            });
            vec![a, b]
        }
        Op::Mul => {
            let a = when(0).then(|| {
                let t = g.mul(gy, x[1]);
                unbroadcast(g, t, x[0])
            });
            let b = when(1).then(|| {
                let t = g.mul(gy, x[0]);
                unbroadcast(g, t, x[1])
            });
            vec![a, b]
        }
        Op::Div => {
            // d(a/b)/da = 1/b, d(a/b)/db = -(a/b)/b.
            let ga = g.div(gy, x[1]);
            let a = when(0).then(|| unbroadcast(g, ga, x[0]));
            let b = when(1).then(|| {
                let t = g.mul(ga, y0);
                let t = g.neg(t);
                unbroadcast(g, t, x[1])
            });
            vec![a, b]
        }
        Op::Neg => vec![Some(g.neg(gy))],
        Op::Exp => vec![Some(g.mul(gy, y0))],
        Op::Log => vec![Some(g.div(gy, x[0]))],
        Op::Sqrt => {
            let t = g.div(gy, y0);
            vec![Some(g.mul_scalar(t, 0.5))]
        }
        Op::Tanh => {
            let y2 = g.mul(y0, y0);
            let one = g.scalar_of(g.dtype(y0), 1.0);
            let d = g.sub(one, y2);
            vec![Some(g.mul(gy, d))]
        }
        Op::Sigmoid => {
            let one = g.scalar_of(g.dtype(y0), 1.0);
            let c = g.sub(one, y0);
            let d = g.mul(y0, c);
            vec![Some(g.mul(gy, d))]
        }
        Op::Cos => {
            let s = g.sin(x[0]);
            let t = g.mul(gy, s);
            vec![Some(g.neg(t))]
        }
        Op::Sin => {
            let c = g.cos(x[0]);
            vec![Some(g.mul(gy, c))]
        }
        Op::Abs => {
            let s = g.sign(x[0]);
            vec![Some(g.mul(gy, s))]
        }
        Op::PowConst(p) => {
            let d = if *p == 2.0 {
                x[0]
            } else {
                g.pow_const(x[0], p - 1.0)
            };
            let d = g.mul_scalar(d, *p);
            vec![Some(g.mul(gy, d)), None]
        }
        Op::Max | Op::Min => {
            // Ties go to the first operand.
            let other_wins = if *op == Op::Max {
                g.less(x[0], x[1])
            } else {
                g.greater(x[0], x[1])
            };
            let zero = g.scalar_of(g.dtype(gy), 0.0);
            let a = when(0).then(|| {
                let t = g.where_(other_wins, zero, gy);
                unbroadcast(g, t, x[0])
            });
            let b = when(1).then(|| {
                let t = g.where_(other_wins, gy, zero);
                unbroadcast(g, t, x[1])
            });
            vec![a, b]
        }
        Op::MatMul => matmul_rule(g, x[0], x[1], gy, when(0), when(1)),
        Op::Reshape => vec![Some(g.reshape_like(gy, x[0])), None],
        Op::Transpose(perm) => {
            let mut inv = vec![0i64; perm.len()];
            for (i, &p) in perm.iter().enumerate() {
                inv[p as usize] = i as i64;
            }
            vec![Some(g.transpose(gy, &inv))]
        }
        Op::Concat(axis) => {
            let mut off = 0;
            x.iter()
                .enumerate()
                .map(|(i, &xi)| {
                    let n = g.dim(xi, *axis);
                    let r = when(i).then(|| g.slice(gy, *axis, off, off + n));
                    off += n;
                    r
                })
                .collect()
        }
        Op::Slice { axis, start, end } => {
            let rank = g.rank(x[0]);
            let n = g.dim(x[0], *axis);
            let mut pads = vec![0i64; 2 * rank];
            pads[*axis as usize] = *start;
            pads[rank + *axis as usize] = n - end;
            vec![Some(g.pad(gy, &pads)), None, None, None]
        }
        Op::Pad(pads) => {
            let rank = g.rank(x[0]);
            let mut r = gy;
            for ax in 0..rank {
                let (b, e) = (pads[ax], pads[rank + ax]);
                if b != 0 || e != 0 {
                    let n = g.dim(r, ax as i64);
                    r = g.slice(r, ax as i64, b, n - e);
                }
            }
            vec![Some(r), None]
        }
        Op::Gather => {
            // Embedding lookup: scatter-add the rows' gradients into a zero table.
            let zeros = g.zeros_like(x[0]);
            let idx = g.unsqueeze(x[1], &[-1]);
            vec![Some(g.scatter_nd_add(zeros, idx, gy)), None]
        }
        Op::GatherElements(axis) => {
            let zeros = g.zeros_like(x[0]);
            vec![Some(g.scatter_elements_add(zeros, x[1], gy, *axis)), None]
        }
        Op::LogSoftmaxPick(axis) => {
            // d/dx = onehot(idx)·g − softmax(x)·g, with g the picked entries' gradient.
            let p = g.exp(y[1]);
            let ng = g.neg(gy);
            let t = g.mul(p, ng);
            vec![Some(g.scatter_elements_add(t, x[1], gy, *axis)), None]
        }
        Op::ScatterElementsAdd(axis) => {
            let d = when(0).then_some(gy);
            let u = when(2).then(|| g.gather_elements(gy, x[1], *axis));
            vec![d, None, u]
        }
        Op::ScatterNdAdd => {
            assert!(
                !when(2),
                "no gradient rule for ScatterND's updates (not used by any model)"
            );
            vec![Some(gy), None, None]
        }
        Op::Softmax(axis) => {
            let t = g.mul(gy, y0);
            let s = g.reduce_sum(t, &[*axis], true);
            let d = g.sub(gy, s);
            vec![Some(g.mul(y0, d))]
        }
        Op::LogSoftmax(axis) => {
            let p = g.exp(y0);
            let s = g.reduce_sum(gy, &[*axis], true);
            let t = g.mul(p, s);
            vec![Some(g.sub(gy, t))]
        }
        Op::ReduceSum { axes, keepdims } | Op::ReduceMean { axes, keepdims } => {
            let mut t = if *keepdims { gy } else { g.unsqueeze(gy, axes) };
            if matches!(op, Op::ReduceMean { .. }) {
                let count: i64 = axes.iter().map(|&a| g.dim(x[0], a)).product();
                t = g.mul_scalar(t, 1.0 / count as f64);
            }
            vec![Some(g.expand_like(t, x[0])), None]
        }
        Op::LayerNorm { eps } => layer_norm_rule(g, x, y, gy, *eps, need),
        Op::Gelu => {
            // gelu'(x) = ½(1+t) + ½·x·(1−t²)·c·(1+3a·x²), t = tanh(c·(x + a·x³)).
            let xv = x[0];
            let x2 = g.mul(xv, xv);
            let x3 = g.mul(x2, xv);
            let ax3 = g.mul_scalar(x3, GELU_A);
            let inner = g.add(xv, ax3);
            let arg = g.mul_scalar(inner, GELU_C);
            let t = g.tanh(arg);
            let one = g.scalar_of(g.dtype(xv), 1.0);
            let left = g.add(one, t);
            let left = g.mul_scalar(left, 0.5);
            let t2 = g.mul(t, t);
            let sech2 = g.sub(one, t2);
            let poly = g.mul_scalar(x2, 3.0 * GELU_A);
            let poly = g.add(one, poly);
            let poly = g.mul_scalar(poly, 0.5 * GELU_C);
            let right = g.mul(xv, sech2);
            let right = g.mul(right, poly);
            let d = g.add(left, right);
            vec![Some(g.mul(gy, d))]
        }
        Op::Where => {
            let zero = g.scalar_of(g.dtype(gy), 0.0);
            let a = when(1).then(|| {
                let t = g.where_(x[0], gy, zero);
                unbroadcast(g, t, x[1])
            });
            let b = when(2).then(|| {
                let t = g.where_(x[0], zero, gy);
                unbroadcast(g, t, x[2])
            });
            vec![None, a, b]
        }
        Op::Cast(_) => {
            let dt = g.dtype(x[0]);
            vec![dt.is_float().then(|| g.cast(gy, dt))]
        }
        Op::Unsqueeze(axes) => vec![Some(g.squeeze(gy, axes)), None],
        Op::Squeeze(axes) => vec![Some(g.unsqueeze(gy, axes)), None],
        Op::Expand => vec![Some(unbroadcast(g, gy, x[0])), None],
        Op::Identity => vec![Some(gy)],
        Op::Sign
        | Op::Equal
        | Op::Less
        | Op::Greater
        | Op::Not
        | Op::Shape
        | Op::Range
        | Op::ConstantOfShape(_)
        | Op::ArgMax(_) => vec![None; x.len()],
    }
}

fn matmul_rule(g: &mut Graph, a: V, b: V, gy: V, need_a: bool, need_b: bool) -> Vec<Option<V>> {
    let (ra, rb) = (g.rank(a), g.rank(b));
    let ga = need_a.then(|| {
        let bt = g.transpose_last2(b);
        let t = g.matmul(gy, bt);
        unbroadcast(g, t, a)
    });
    let gb = need_b.then(|| {
        if rb == 2 && ra > 2 {
            // A weight applied to a batch: fold the batch axes into rows, one matmul.
            let k = g.dim(a, -1);
            let n = g.dim(gy, -1);
            let a2 = g.reshape(a, &[-1, k]);
            let g2 = g.reshape(gy, &[-1, n]);
            let a2t = g.transpose(a2, &[1, 0]);
            g.matmul(a2t, g2)
        } else {
            let at = g.transpose_last2(a);
            let t = g.matmul(at, gy);
            unbroadcast(g, t, b)
        }
    });
    vec![ga, gb]
}

fn layer_norm_rule(
    g: &mut Graph,
    x: &[V],
    y: &[V],
    gy: V,
    eps: f64,
    need: &[bool],
) -> Vec<Option<V>> {
    let (xv, gamma) = (x[0], x[1]);
    // x̂ and 1/σ: from the forward node's Mean/InvStdDev outputs in float32, recomputed in
    // float64 (ORT's LayerNormalization returns its statistics in float32 only).
    let (xhat, inv) = if y.len() == 3 {
        let c = g.sub(xv, y[1]);
        (g.mul(c, y[2]), y[2])
    } else {
        let mean = g.reduce_mean(xv, &[-1], true);
        let c = g.sub(xv, mean);
        let c2 = g.mul(c, c);
        let var = g.reduce_mean(c2, &[-1], true);
        let ve = g.add_scalar(var, eps);
        let sd = g.sqrt(ve);
        let one = g.scalar_of(g.dtype(xv), 1.0);
        let inv = g.div(one, sd);
        (g.mul(c, inv), inv)
    };
    let lead: Vec<i64> = (0..g.rank(xv) as i64 - 1).collect();
    let gx = need[0].then(|| {
        let gh = g.mul(gy, gamma);
        let m1 = g.reduce_mean(gh, &[-1], true);
        let ghx = g.mul(gh, xhat);
        let m2 = g.reduce_mean(ghx, &[-1], true);
        let t = g.mul(xhat, m2);
        let d = g.sub(gh, m1);
        let d = g.sub(d, t);
        g.mul(d, inv)
    });
    let ggamma = need[1].then(|| {
        let t = g.mul(gy, xhat);
        if lead.is_empty() {
            t
        } else {
            g.reduce_sum(t, &lead, false)
        }
    });
    let gbeta = need.get(2).copied().unwrap_or(false).then(|| {
        if lead.is_empty() {
            gy
        } else {
            g.reduce_sum(gy, &lead, false)
        }
    });
    vec![gx, ggamma, gbeta]
}
