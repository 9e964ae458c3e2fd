#!/usr/bin/env python3
"""Batch layouts side by side: what a pretraining epoch computes per real token, and the
pretraining and embedding throughput of netfm, with FLOP/s against this machine's measured
single-precision GEMM rate, all in one run.

Needs: a release build (`cargo build --release --bins --examples`), numpy, the labelled set in
../shared/datasets/labelled. Run from the repository root:

    python3 benches/train_layout.py [--rounds 3] [--steps 12] [--json out.json]

What it measures (medians over --rounds interleaved rounds):
1. computed slots per real token (field tokens + one CLS per burst) over one epoch of the
   labelled set's training captures at `small` (examples/layout_stats.rs): dense grids from
   random batches, dense from length-sorted pools, packed from random and from sorted pools;
2. pretraining at `small`: real tokens/s of the dense layout on random batches (what netfm
   did before) and of the packed layout on length-bucketed batches (its default), from the
   steps after the first two of each run (metrics.jsonl), and the step's FLOP/s by formula;
3. the share of the tied masked-token decoder (65,600 rows, at masked positions only) in
   the step's FLOPs;
4. netfm embed flows/s at `tiny` and `small`, batch 1 and 256, on real flows, and its
   FLOP/s;
5. numpy's float32 GEMM rate (2048 x 2048, as many threads as netfm uses).

FLOPs are counted by formula from each batch's shape (multiply-adds count 2): per token
slot, the input projection, q/k/v/o and the feed-forward layers; per slot and row length,
attention inside bursts; per cross-burst grid cell, the flow block and its attention; per
masked position, the decoder's dense layer and its [hidden x vocab] product. A train step
is counted as 3x its forward pass (the backward pass costs two forward passes).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NETFM = ROOT / "target/release/netfm"
STATS = ROOT / "target/release/examples/layout_stats"
LABELLED = ROOT.parent / "shared/datasets/labelled"
VOCAB = 65600
SIZES = {  # hidden, layers, ffn (models/src/config.rs)
    "tiny": (32, 2, 64),
    "small": (256, 4, 1024),
}


def run(cmd, **kw):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{r.stdout}{r.stderr}")
    return r.stdout


def forward_flops(size, slots, slot_row_len, grid, grid_len, bursts, masked):
    h, layers, ffn = SIZES[size]
    per_layer = (
        slots * (8 * h * h + 4 * h * ffn)  # q, k, v, o and the feed-forward layers
        + 4 * slot_row_len * h  # scores and weighted values inside bursts
        + grid * (8 * h * h + 4 * h * ffn)  # the cross-burst block
        + 4 * grid_len * h  # its attention
    )
    embed = slots * 2 * h * h + bursts * (2 * 4 * h + 4 * h * h)
    mlm = masked * (2 * h * h + 2 * h * VOCAB)
    return layers * per_layer + embed + mlm, mlm


def gemm_rate(threads, n=2048, reps=7):
    code = (
        "import numpy as np, time, statistics\n"
        f"a = np.random.rand({n}, {n}).astype(np.float32); b = np.random.rand({n}, {n}).astype(np.float32)\n"
        "a @ b\n"
        "ts = []\n"
        f"for _ in range({reps}):\n"
        "    t = time.perf_counter(); a @ b; ts.append(time.perf_counter() - t)\n"
        f"print(2 * {n}**3 / statistics.median(ts) / 1e9)\n"
    )
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return float(run([sys.executable, "-c", code], env=env))


def pretrain(data, out, size, steps, layout, buckets, threads):
    s = json.loads(
        run([NETFM, "pretrain", "-q", "--json", "--overwrite", "--data", data, "--out", out, "--size", size,
             "--steps", steps, "--val-fraction", "0", "--checkpoint-every", 100000, "--layout", layout,
             "--bucket-batches", buckets, "--threads", threads])
    )
    lines = [json.loads(l) for l in open(Path(out) / "metrics.jsonl")]
    train = [l for l in lines if l["event"] == "train"][2:]  # the first steps warm up
    tok = sum(l["real_tokens"] for l in train)
    secs = sum(l["step_s"] for l in train)
    flops = mlm = 0.0
    for l in train:
        n = l["grid"] / max(l["flows"], 1)
        f, m = forward_flops(size, l["slots"], l["slots"] * l["row_len"], l["grid"], l["grid"] * n, l["bursts"], l["masked"])
        flops += 3 * f
        mlm += 3 * m
    return {
        "real_tokens_per_s": tok / secs,
        "step_s": statistics.median(l["step_s"] for l in train),
        "gflops": flops / secs / 1e9,
        "mlm_share": mlm / flops,
        "slots_per_real_token": sum(l["slots"] for l in train) / tok,
        "summary_tokens_per_s": s["real_tokens_per_s"],
    }


def embed(data, model, batch, out, threads):
    s = json.loads(
        run([NETFM, "embed", "-q", "--json", "--overwrite", "--model", model, "--data", data, "--out", out,
             "--batch-size", batch, "--threads", threads])
    )
    return s


def embed_all(real, work, a):
    """netfm embed flows/s at tiny and small, batch 1 and 256 (medians of --rounds)."""
    emb = {}
    for size in ["tiny", "small"]:
        mdir = work / f"model-{size}"
        run([NETFM, "model", "export", "--size", size, "--out", mdir, "--overwrite"])
        for batch in [1, 256]:
            runs = [embed(real, mdir / "checkpoint.safetensors", batch, work / "emb.parquet", a.threads) for _ in range(a.rounds)]
            s = sorted(runs, key=lambda x: x["flows_per_s"])[len(runs) // 2]
            c = s["cost"]
            f, _ = forward_flops(size, c["slots"], c["slot_row_len"], c["grid"], c["grid_len"], c["bursts"], c["masked"])
            emb[f"{size}_batch{batch}"] = {
                "flows": s["flows"], "flows_per_s": s["flows_per_s"], "setup_s": s["setup_s"],
                "gflops": f / (s["elapsed_s"] - s["setup_s"]) / 1e9,
            }
    return emb


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--json")
    ap.add_argument("--embed-only", action="store_true", help="only the embed measurements")
    ap.add_argument("--embed-set", choices=["labelled", "bundled"], default="labelled",
                    help="embed's flows: the labelled set's 5,625, or the bundled and conformance captures' 239")
    a = ap.parse_args()
    for p in [NETFM, STATS]:
        if not p.exists():
            sys.exit(f"{p} missing: cargo build --release --bins --examples")
    if not LABELLED.is_dir():
        sys.exit(f"{LABELLED} missing (the labelled set)")
    work = Path(tempfile.mkdtemp(prefix="netfm-layout-"))
    train_caps = work / "train-captures"
    train_caps.mkdir()
    for name in (LABELLED / "split_train.txt").read_text().split():
        (train_caps / name).symlink_to(LABELLED / "pcaps" / name)
    ds = work / "train-ds"
    run([NETFM, "tokenize", "-q", "--out", ds, train_caps])
    real = work / "real-ds"  # for embed: every labelled capture (5,625 flows), or the bundled ones
    if a.embed_set == "labelled":
        run([NETFM, "tokenize", "-q", "--out", real, LABELLED / "pcaps"])
    else:  # the bundled and netFound's conformance captures (239 flows)
        run([NETFM, "tokenize", "-q", "--out", real, ROOT / "datasets/pcaps", ROOT.parent / "shared/conformance/netfound/pcaps"])

    result = {"threads": a.threads}
    if a.embed_only:
        result["embed"] = embed_all(real, work, a)
        print(json.dumps(result, indent=1))
        return
    result["epoch_layouts_small"] = json.loads(run([STATS, ds, "--size", "small", "--batch", "32"]))
    rounds = {"dense_random": [], "packed_bucketed": []}
    gemm = []
    for r in range(a.rounds):
        gemm.append(gemm_rate(a.threads))
        for name, layout, buckets in [("dense_random", "dense", 1), ("packed_bucketed", "packed", 16)]:
            rounds[name].append(pretrain(ds, work / f"run-{name}", "small", a.steps, layout, buckets, a.threads))
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]['real_tokens_per_s']:.0f} tok/s" for k, v in rounds.items()), file=sys.stderr)
    med = lambda xs: statistics.median(xs)
    result["gemm_gflops"] = med(gemm)
    result["pretrain_small"] = {
        k: {m: med(x[m] for x in v) for m in v[0]} for k, v in rounds.items()
    }
    result["pretrain_speedup"] = med(
        p["real_tokens_per_s"] / d["real_tokens_per_s"] for p, d in zip(rounds["packed_bucketed"], rounds["dense_random"])
    )
    result["embed"] = emb = embed_all(real, work, a)
    text = json.dumps(result, indent=1)
    print(text)
    if a.json:
        Path(a.json).write_text(text)
    e = result["epoch_layouts_small"]
    ps = result["pretrain_small"]
    print("\n| | dense random | dense bucketed | packed random | packed bucketed |\n|---|---|---|---|---|")
    print("| slots per real token (epoch, small) | " + " | ".join(f"{e[k]['slots_per_real_token']:.2f}" for k in ["dense_random", "dense_bucketed", "packed_random", "packed_bucketed"]) + " |")
    print(f"\npretraining at small: dense random {ps['dense_random']['real_tokens_per_s']:.0f} real tokens/s, "
          f"packed bucketed {ps['packed_bucketed']['real_tokens_per_s']:.0f} (x{result['pretrain_speedup']:.2f}); "
          f"train step {ps['dense_random']['gflops']:.1f} / {ps['packed_bucketed']['gflops']:.1f} GFLOP/s vs GEMM {result['gemm_gflops']:.1f}; "
          f"decoder share {ps['packed_bucketed']['mlm_share']:.2f}")
    for k, v in emb.items():
        print(f"embed {k}: {v['flows_per_s']:.0f} flows/s, {v['gflops']:.1f} GFLOP/s")


if __name__ == "__main__":
    main()
