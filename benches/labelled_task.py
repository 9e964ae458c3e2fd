#!/usr/bin/env python3
"""The labelled application-classification task (issue 16, item 3), netfm's side:

(a) pretrained + fine-tuned netfm; (b) the same model fine-tuned from scratch; (c) the
pretrained encoder's frozen embeddings + logistic regression. The random-forest baselines
(d) and (e) are benches/labelled_baselines.py, on the same flows and labels.

Data: ../shared/datasets/labelled (342 real captures, 13 application classes labelled by
nDPI; split by capture file: split_train.txt / split_test.txt; Other, Unknown and Guessed
dropped). Pretraining reads unlabelled traffic only: the train split's captures, the
bundled captures and netFound's conformance captures (never the test split's). Fine-tuning
reads the labels of the train split's flows; every figure is on the test split's flows.

Needs: `cargo build --release`, numpy, pyarrow, scikit-learn (`pip install scikit-learn`). Run from the
repository root:

    python3 benches/labelled_task.py [--size small] [--pretrain-epochs 3] [--finetune-epochs 8] [--json out.json]
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from labelled_common import join_labels  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
NETFM = ROOT / "target/release/netfm"
LABELLED = ROOT.parent / "shared/datasets/labelled"
DROP = ["Other", "Unknown", "Guessed"]


def run(cmd):
    t = time.time()
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{r.stdout}{r.stderr}")
    print(f"  {time.time() - t:7.1f} s  {' '.join(map(str, cmd[:2]))}", file=sys.stderr)
    return r.stdout


def frozen_logistic(emb_path, seed=1):
    """(c): logistic regression on netfm embed's embeddings of the labelled flows, joined
    to their labels by benches/labelled_common.py (the rule the forests of
    labelled_baselines.py use)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.preprocessing import StandardScaler

    flows = pq.read_table(emb_path).to_pandas()
    joined = join_labels(flows, LABELLED / "labels.csv")
    x = np.stack(joined["embedding"].to_numpy()).astype(np.float32)
    y = joined["label"].to_numpy()
    test = (joined["split"] == "test").to_numpy()
    keep = ~test | np.isin(y, list(set(y[~test])))
    x, y, test = x[keep], y[keep], test[keep]
    sc = StandardScaler().fit(x[~test])
    clf = LogisticRegression(max_iter=3000, class_weight="balanced", random_state=seed)
    clf.fit(sc.transform(x[~test]), y[~test])
    pred = clf.predict(sc.transform(x[test]))
    return {
        "accuracy": accuracy_score(y[test], pred),
        "macro_f1": f1_score(y[test], pred, average="macro"),
        "train_flows": int((~test).sum()),
        "test_flows": int(test.sum()),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="small")
    ap.add_argument("--pretrain-epochs", type=int, default=3)
    ap.add_argument("--finetune-epochs", type=int, default=8)
    ap.add_argument("--lr", default="5e-4")
    ap.add_argument("--finetune-lr", default="3e-4")
    ap.add_argument("--seed", default="1")
    ap.add_argument("--work")
    ap.add_argument("--json")
    a = ap.parse_args()
    if not NETFM.exists():
        sys.exit(f"{NETFM} missing: cargo build --release")
    work = Path(a.work or tempfile.mkdtemp(prefix="netfm-labelled-"))
    work.mkdir(parents=True, exist_ok=True)
    caps = work / "train-captures"
    if not caps.exists():
        caps.mkdir()
        for name in (LABELLED / "split_train.txt").read_text().split():
            (caps / name).symlink_to(LABELLED / "pcaps" / name)
    ds = {}
    for name, inputs in [
        ("train", [caps]),
        ("extra", [ROOT / "datasets/pcaps", ROOT.parent / "shared/conformance/netfound/pcaps"]),
        ("all", [LABELLED / "pcaps"]),
    ]:
        ds[name] = work / f"ds-{name}"
        if not ds[name].exists():
            run([NETFM, "tokenize", "-q", "--out", ds[name], *inputs])
    pre = work / "pretrain"
    s_pre = json.loads(run([NETFM, "pretrain", "-q", "--json", "--overwrite", "--data", ds["train"], ds["extra"],
                            "--size", a.size, "--epochs", a.pretrain_epochs, "--lr", a.lr, "--seed", a.seed,
                            "--val-fraction", "0.05", "--eval-every", "100000", "--out", pre]))
    common = ["--data", ds["all"], "--labels", LABELLED / "labels.csv", "--label-column", "coarse_class",
              "--drop-labels", ",".join(DROP), "--split-file", LABELLED / "split_test.txt",
              "--epochs", a.finetune_epochs, "--lr", a.finetune_lr, "--seed", a.seed, "--eval-every", "100000"]
    out = {"size": a.size, "pretrain": {k: s_pre[k] for k in ["steps_done", "real_tokens_per_s", "final_loss", "val", "baseline", "elapsed_s"]}}
    for key, extra in [("a_pretrained_finetuned", []), ("b_from_scratch", ["--from-scratch"])]:
        s = json.loads(run([NETFM, "finetune", "-q", "--json", "--overwrite", "--model", pre, "--out", work / key, *common, *extra]))
        r = s["report"]
        out[key] = {"accuracy": r["accuracy"], "macro_f1": r["macro_f1"], "steps": s["steps_done"],
                    "eval_flows": s["eval_flows"], "per_class_f1": {m["class"]: m["f1"] for m in r["per_class"]}}
    emb = work / "emb.parquet"
    run([NETFM, "embed", "-q", "--overwrite", "--no-score", "--model", pre, "--data", ds["all"], "--out", emb])
    out["c_frozen_logistic"] = frozen_logistic(emb)
    text = json.dumps(out, indent=1)
    print(text)
    if a.json:
        Path(a.json).write_text(text)
    print("\n| | accuracy | macro-F1 |\n|---|---|---|")
    for k in ["a_pretrained_finetuned", "b_from_scratch", "c_frozen_logistic"]:
        print(f"| {k} | {out[k]['accuracy']:.4f} | {out[k]['macro_f1']:.4f} |")


if __name__ == "__main__":
    main()
