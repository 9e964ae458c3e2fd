"""netfm's hierarchical transformer and its pretraining train step, written again in jax, for
benches/compare_jax.py. Reads the batch and initial parameters that
`cargo run --release --example train_bench` wrote (DIR/batch.json, DIR/params.safetensors),
checks that its first-step loss terms equal netfm's, and times `jax.jit(value_and_grad +
AdamW)` steps with donated buffers.

Usage: jax_model.py DIR --steps N [--expect-losses JSON]
Prints one JSON line: first-step loss terms, step times (ms), median.
"""
import argparse
import json
import math
import struct
import time

import numpy as np
import jax
import jax.numpy as jnp

GELU_A = 0.044715
GELU_C = math.sqrt(2.0 / math.pi)
MASKED = -1e9


def read_checkpoint(path):
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    data = raw[8 + n :]
    params = {}
    for key, info in header.items():
        if key.startswith("param."):
            s, e = info["data_offsets"]
            params[key[len("param.") :]] = np.frombuffer(data[s:e], dtype=np.float32).reshape(info["shape"])
    return json.loads(header["__metadata__"]["config"]), params


def gelu(x):
    return 0.5 * x * (1.0 + jnp.tanh(GELU_C * (x + GELU_A * x * x * x)))


def linear(p, name, x):
    return x @ p[name + ".w"] + p[name + ".b"]


def layer_norm(p, name, x, eps):
    mean = x.mean(-1, keepdims=True)
    c = x - mean
    var = (c * c).mean(-1, keepdims=True)
    return c / jnp.sqrt(var + eps) * p[name + ".gamma"] + p[name + ".beta"]


def attention(p, name, x, mask, heads):
    *lead, s, h = x.shape
    dh = h // heads
    def split(t):
        return jnp.swapaxes(t.reshape(*lead, s, heads, dh), -2, -3)
    q = split(linear(p, name + ".q", x)) * (1.0 / math.sqrt(dh))
    k = split(linear(p, name + ".k", x))
    v = split(linear(p, name + ".v", x))
    scores = q @ jnp.swapaxes(k, -1, -2) + mask
    ctx = jax.nn.softmax(scores, axis=-1) @ v
    ctx = jnp.swapaxes(ctx, -2, -3).reshape(*lead, s, h)
    return linear(p, name + ".o", ctx)


def block(p, name, x, mask, cfg):
    eps = cfg["layer_norm_eps"]
    x = x + attention(p, name + ".attn", layer_norm(p, name + ".ln1", x, eps), mask, cfg["heads"])
    f = linear(p, name + ".ffn2", gelu(linear(p, name + ".ffn1", layer_norm(p, name + ".ln2", x, eps))))
    return x + f


def bce(z, y):
    return jnp.maximum(z, 0.0) - z * y + jnp.log(1.0 + jnp.exp(-jnp.abs(z)))


def wmean(x, w):
    return (x * w).sum() / jnp.maximum(w.sum(), 1.0)


def losses(p, b, cfg):
    ids = b["input_ids"]
    pad = cfg["vocab"]["pad"]
    eps = cfg["layer_norm_eps"]
    tok_mask = jnp.where(ids == pad, MASKED, 0.0)[:, :, None, None, :]
    absent = ids[:, :, 0] == pad
    present = jnp.where(absent, 0.0, 1.0)
    flow_mask = jnp.where(absent, MASKED, 0.0)[:, None, None, :]
    tok = linear(p, "embed.proj_token", p["embed.token"][ids])
    proto = (p["embed.protocol"][b["protocol"]] @ p["embed.proj_protocol.w"])[:, None, None, :]
    meta = linear(p, "embed.meta2", gelu(linear(p, "embed.meta1", b["burst_meta"]))) @ p["embed.proj_meta.w"]
    n, l = ids.shape[1], ids.shape[2]  # this batch's bursts and tokens per burst
    x = tok + (meta[:, :, None, :] + proto) + p["embed.position"][:l] + p["embed.burst_position"][:n, None, :]
    x = layer_norm(p, "embed.ln", x, eps)
    for i in range(cfg["layers"]):
        x = block(p, f"layer{i}.burst", x, tok_mask, cfg)
        cls = block(p, f"layer{i}.flow", x[:, :, 0, :], flow_mask, cfg)
        x = jnp.concatenate([cls[:, :, None, :], x[:, :, 1:, :]], axis=2)
    tokens = layer_norm(p, "final_ln", x, eps)
    bursts = tokens[:, :, 0, :]
    swap = linear(p, "head.swap", bursts)[..., 0]
    direction = linear(p, "head.direction", bursts)[..., 0]
    meta_pred = linear(p, "head.meta", bursts)
    sel = tokens.reshape(-1, cfg["hidden"])[b["mlm_index"]]
    t = layer_norm(p, "head.mlm.ln", gelu(linear(p, "head.mlm.dense", sel)), eps)
    logits = t @ p["embed.token"].T + p["head.mlm.bias"]
    labels = b["mlm_labels"]
    valid = labels != -100
    logp = jax.nn.log_softmax(logits, axis=-1)
    picked = jnp.take_along_axis(logp, jnp.where(valid, labels, 0)[:, None], axis=-1)[:, 0]
    mlm = -wmean(picked, valid.astype(logp.dtype))
    l_swap = wmean(bce(swap, b["swap_labels"]), present)
    l_meta = wmean(((meta_pred - b["meta_targets"]) ** 2).mean(-1), b["meta_weight"])
    l_dir = wmean(bce(direction, b["direction_labels"]), b["meta_weight"])
    total = mlm + l_swap + l_meta + l_dir
    return total, {"loss": total, "loss_mlm": mlm, "loss_swap": l_swap, "loss_meta": l_meta, "loss_direction": l_dir}


def make_step(cfg, decay, beta1=0.9, beta2=0.999, eps=1e-8, wd=0.01, clip=1.0, warmup=10.0, total=1000.0, peak=1e-4):
    def step(p, m, v, t, b):
        (_, terms), g = jax.value_and_grad(losses, has_aux=True)(p, b, cfg)
        norm = jnp.sqrt(sum((x * x).sum() for x in g.values()))
        scale = jnp.minimum(clip / (norm + 1e-6), 1.0)
        tf = t.astype(jnp.float32)
        prog = jnp.clip((tf - warmup) / jnp.maximum(total - warmup, 1.0), 0.0, 1.0)
        lr = peak * jnp.minimum(tf / max(warmup, 1.0), 1.0) * 0.5 * (1.0 + jnp.cos(math.pi * prog))
        bc1, bc2 = 1.0 - beta1**tf, 1.0 - beta2**tf
        np_, nm, nv = {}, {}, {}
        for k in p:
            gk = g[k] * scale
            nm[k] = beta1 * m[k] + (1 - beta1) * gk
            nv[k] = beta2 * v[k] + (1 - beta2) * gk * gk
            upd = (nm[k] / bc1) / (jnp.sqrt(nv[k]) / jnp.sqrt(bc2) + eps)
            base = p[k] * (1.0 - lr * wd) if decay[k] else p[k]
            np_[k] = base - lr * upd
        return np_, nm, nv, terms
    return jax.jit(step, donate_argnums=(0, 1, 2))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    cfg, params = read_checkpoint(f"{args.dir}/params.safetensors")
    batch = {
        k: jnp.asarray(np.array(v["values"], dtype=v["dtype"]).reshape(v["dims"]))
        for k, v in json.load(open(f"{args.dir}/batch.json")).items()
    }
    p = {k: jnp.asarray(v) for k, v in params.items()}
    decay = {k: v.ndim >= 2 and not np.all(v == 0) and not np.all(v == 1) for k, v in params.items()}
    m = {k: jnp.zeros_like(v) for k, v in p.items()}
    v = {k: jnp.zeros_like(x) for k, x in p.items()}
    step = make_step(cfg, decay)
    times, first = [], None
    t0 = time.perf_counter()
    for i in range(args.steps):
        t = time.perf_counter()
        p, m, v, terms = step(p, m, v, jnp.asarray(i + 1, dtype=jnp.int32), batch)
        terms = {k: float(x) for k, x in terms.items()}  # waits for the step
        times.append((time.perf_counter() - t) * 1e3)
        if first is None:
            first = terms
            compile_s = time.perf_counter() - t0
    rest = sorted(times[1:]) or times
    print(json.dumps({"first_losses": first, "step_ms": times, "median_ms": rest[len(rest) // 2],
                      "compile_and_first_step_s": compile_s, "jax": jax.__version__}))


if __name__ == "__main__":
    main()
