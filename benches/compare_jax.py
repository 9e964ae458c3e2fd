#!/usr/bin/env python3
"""netfm's train step (ONNX Runtime, CPU) against the same model and batch in jax.jit (CPU),
side by side in one run, alternating rounds, medians.

1. tokenizes the bundled captures with the release netfm (target/bench-flows);
2. `cargo run --release --example train_bench` times netfm's train step on the 32 richest
   flows at `small` size and writes that batch and the initial parameters;
3. benches/jax_model.py runs the same architecture on the same batch and parameters in jax,
   after checking that its first-step loss terms equal netfm's (same model, same data);
4. repeats 2-3 for --rounds rounds; reports the medians and the ratio netfm / jax.

Installs jax from PyPI if missing. Usage: python3 benches/compare_jax.py [--rounds 3]
[--steps 12] [--size small] [--batch 32]
"""
import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
JAX = "jax[cpu]==0.10.2"


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, capture_output=True, cwd=ROOT, **kw)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--size", default="small")
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    try:
        import jax  # noqa: F401
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", JAX], check=True)
    sh(["cargo", "build", "--release", "--bin", "netfm", "--example", "train_bench"])
    flows = ROOT / "target/bench-flows"
    out = ROOT / "target/bench-jax"
    if not flows.exists():
        sh([str(ROOT / "target/release/netfm"), "tokenize", "-q", "--out", str(flows), str(ROOT / "datasets/pcaps")])
    netfm_ms, jax_ms, last = [], [], {}
    for r in range(args.rounds):
        res = json.loads(sh([str(ROOT / "target/release/examples/train_bench"), str(flows), str(out),
                             "--size", args.size, "--batch", str(args.batch), "--steps", str(args.steps)]).stdout)
        jres = json.loads(sh([sys.executable, str(ROOT / "benches/jax_model.py"), str(out),
                              "--steps", str(args.steps)]).stdout)
        for k, want in res["first_losses"].items():
            got = jres["first_losses"][k]
            if abs(got - want) > 1e-4 * max(1.0, abs(want)):
                sys.exit(f"jax and netfm disagree on {k}: {got} vs {want}: not the same model")
        netfm_ms.append(res["median_ms"])
        jax_ms.append(jres["median_ms"])
        last = {"netfm": res, "jax": jres}
        print(f"round {r + 1}: netfm {res['median_ms']:.1f} ms/step, jax {jres['median_ms']:.1f} ms/step", flush=True)
    n, j = statistics.median(netfm_ms), statistics.median(jax_ms)
    res, jres = last["netfm"], last["jax"]
    print(json.dumps({
        "size": args.size, "batch": args.batch, "tokens": res["tokens"], "masked": res["masked"],
        "first_losses_netfm": res["first_losses"], "first_losses_jax": jres["first_losses"],
        "netfm_median_ms": n, "jax_median_ms": j, "ratio_netfm_over_jax": n / j,
        "netfm_steps_per_s": 1e3 / n, "netfm_tokens_per_s": res["tokens"] * 1e3 / n,
        "netfm_graph_build_s": res["graph_build_s"], "netfm_session_s": res["session_s"],
        "jax_compile_and_first_step_s": jres["compile_and_first_step_s"], "jax": jres["jax"],
    }, indent=1))


if __name__ == "__main__":
    main()
