#!/usr/bin/env python3
"""The forecasting benchmarks of issue 17 on this machine, from the bundled Abilene data:

1. `netfm forecast backtest --dataset abilene --week W --failure false` per week, training
   included: wall time (median of --rounds runs) and the table of the last run;
2. the failure scenario of both weeks (`netfm forecast backtest --dataset abilene`);
3. `netfm forecast predict` for all 30 links at 1 h from a model trained on week 1's first
   5 days: the forecast's own time (the summary's predict_s, after loading) and the load
   time, medians of --rounds runs.

Needs `cargo build --release`. Run from the repository root:

    python3 benches/forecast_abilene.py [--rounds 3] [--json out.json]
"""
import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NETFM = ROOT / "target/release/netfm"


def run(cmd):
    t = time.time()
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{r.stdout}{r.stderr}")
    return r.stdout, time.time() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json")
    a = ap.parse_args()
    if not NETFM.exists():
        sys.exit(f"{NETFM} missing: cargo build --release")
    work = Path(tempfile.mkdtemp(prefix="netfm-forecast-"))
    out = {"weeks": {}}
    for week in (1, 2):
        times = []
        for r in range(a.rounds):
            rec = work / f"w{week}.json"
            text, dt = run([NETFM, "forecast", "backtest", "--dataset", "abilene", "--week", week,
                            "--failure", "false", "-q", "--json", rec])
            times.append(dt)
        out["weeks"][week] = {"wall_s": times, "median_s": statistics.median(times),
                              "records": json.loads(rec.read_text())["records"]}
        print(f"week {week}: backtest with training {statistics.median(times):.1f} s (median of {a.rounds}: {', '.join(f'{t:.1f}' for t in times)})")
        print(text)
    rec = work / "failure.json"
    text, dt = run([NETFM, "forecast", "backtest", "--dataset", "abilene", "-q", "--json", rec])
    out["failure"] = json.loads(rec.read_text())["failure"]
    out["failure_run_s"] = dt
    print(text)
    model = work / "model"
    run([NETFM, "forecast", "train", "--dataset", "abilene", "--week", 1, "--train", "5d", "-q", "--out", model])
    pred, load = [], []
    for r in range(max(a.rounds, 5)):
        s, _ = run([NETFM, "forecast", "predict", "--dataset", "abilene", "--week", 1, "--model", model,
                    "--horizon", "1h", "--json", "--overwrite", "--out", work / "p.parquet"])
        s = json.loads(s)
        pred.append(s["predict_s"] * 1e3)
        load.append(s["load_s"] * 1e3)
    out["predict_ms"] = {"forecast": pred, "load": load}
    print(f"forecast predict, 30 links x 12 steps: {statistics.median(pred):.1f} ms after "
          f"{statistics.median(load):.0f} ms loading (medians of {len(pred)})")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
