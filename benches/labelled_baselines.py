#!/usr/bin/env python3
"""Non-neural baselines for labelled application classification (issue 16).

The labelled set is nDPI's test captures with nDPI's own labels mapped to 13 coarse
classes (/work/shared/datasets/labelled/README.md). This script

1. tokenizes the captures with netfm into --cache (reused if it already holds them);
2. labels the flows from labels.csv (benches/labelled_common.py: key, rule and counts),
   dropping the classes Other, Unknown and Guessed;
3. trains random forests (scikit-learn, class_weight="balanced") on the train split and
   evaluates them on the test split (the split is by capture file), with 5 fixed seeds:
   - stats / stats+ports: per-flow statistics (packets, bytes each way, duration,
     bursts, packets and bytes per burst, gaps between bursts, protocol), without and
     with the port numbers;
   - tokens K x T: the raw 16-bit field tokens of the first K bursts, the first T tokens
     of each, padded with -1, plus the protocol (the model's token input);
   - tokens+meta K x T: the same plus each of those bursts' direction, bytes, packets
     and gap (the model's burst metadata);
4. prints accuracy and macro-F1 (median over the seeds and their range) and the per-class
   F1 as markdown tables, and writes every number to --json.

Needs: `pip install scikit-learn pandas pyarrow` and a built netfm (cargo build --release).
Run from the repository root:

    python3 benches/labelled_baselines.py --netfm target/release/netfm \\
        --cache /tmp/labelled-ds --json /tmp/labelled_baselines.json
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import labelled_common as lc  # noqa: E402

SEEDS = (0, 1, 2, 3, 4)
TREES = 300
FIRST_BURSTS = 4  # bursts described one by one in the statistics features
PAD = -1


def _pad(values, n):
    """The first n values, padded with PAD."""
    out = np.full(n, PAD, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)[:n]
    out[:len(values)] = values
    return out


def _summary(values):
    """mean, max, min, std of a list (PAD x4 when empty)."""
    if len(values) == 0:
        return [PAD] * 4
    values = np.asarray(values, dtype=np.float64)
    return [values.mean(), values.max(), values.min(), values.std()]


def stats_features(flows, ports):
    """Per-flow statistics, one row per flow; with `ports`, also the two port numbers and
    the lower of them (the usual server port). Returns (matrix, feature names)."""
    rows = []
    for f in flows.itertuples(index=False):
        counts = np.asarray(f.counts, dtype=np.float64)
        sizes = np.asarray(f.bytes, dtype=np.float64)
        forward = np.asarray(f.directions, dtype=bool)
        # The first burst of each direction has no gap (0); the others do.
        first_of_direction = np.zeros(len(forward), dtype=bool)
        for side in (True, False):
            where = np.flatnonzero(forward == side)
            if len(where):
                first_of_direction[where[0]] = True
        gaps = np.asarray(f.iats, dtype=np.float64)[~first_of_direction]
        packets = f.fwd_packets + f.bwd_packets
        row = [
            f.protocol, f.ip_version,
            f.fwd_packets, f.bwd_packets, f.fwd_bytes, f.bwd_bytes, f.flow_duration,
            f.fwd_bytes / f.fwd_packets if f.fwd_packets else PAD,
            f.bwd_bytes / f.bwd_packets if f.bwd_packets else PAD,
            f.fwd_packets / packets,
            len(counts), forward.sum(), (~forward).sum(),
            *_summary(counts), *_summary(sizes), *_summary(gaps),
            *_pad(np.where(forward, sizes, -sizes), FIRST_BURSTS),  # signed: + forward
            *_pad(counts, FIRST_BURSTS),
            *_pad(f.iats, FIRST_BURSTS),
        ]
        if ports:
            src = PAD if f.src_port is None or np.isnan(f.src_port) else f.src_port
            dst = PAD if f.dst_port is None or np.isnan(f.dst_port) else f.dst_port
            row += [src, dst, min(src, dst)]
        rows.append(row)
    names = (["protocol", "ip_version", "fwd_packets", "bwd_packets", "fwd_bytes",
              "bwd_bytes", "flow_duration", "fwd_bytes_per_packet", "bwd_bytes_per_packet",
              "fwd_packet_share", "bursts", "fwd_bursts", "bwd_bursts"]
             + [f"burst_{what}_{s}" for what in ("packets", "bytes", "gap")
                for s in ("mean", "max", "min", "std")]
             + [f"burst{i}_{what}" for what in ("signed_bytes", "packets", "iat")
                for i in range(FIRST_BURSTS)])
    if ports:
        names += ["src_port", "dst_port", "min_port"]
    return np.asarray(rows, dtype=np.float64), names


def token_features(flows, bursts, tokens, meta):
    """The first `tokens` field tokens of each of the first `bursts` bursts (PAD where a
    burst or token is missing), then the protocol; with `meta`, also each of those bursts'
    direction (+1/-1, 0 if missing), bytes, packets and gap. Returns (matrix, names)."""
    rows = []
    for f in flows.itertuples(index=False):
        grid = np.full((bursts, tokens), PAD, dtype=np.float64)
        for i, burst in enumerate(f.burst_tokens[:bursts]):
            burst = burst[:tokens]
            grid[i, :len(burst)] = burst
        row = [*grid.ravel(), f.protocol]
        if meta:
            n = min(bursts, len(f.counts))
            direction = np.zeros(bursts)
            direction[:n] = np.where(np.asarray(f.directions[:n], dtype=bool), 1.0, -1.0)
            row += [*direction, *_pad(f.bytes, bursts), *_pad(f.counts, bursts),
                    *_pad(f.iats, bursts)]
        rows.append(row)
    names = [f"b{i}_t{j}" for i in range(bursts) for j in range(tokens)] + ["protocol"]
    if meta:
        names += [f"b{i}_{what}" for what in ("direction", "bytes", "packets", "iat")
                  for i in range(bursts)]
    return np.asarray(rows, dtype=np.float64), names


def evaluate(name, features, names, y, train, test, classes):
    """Fit one forest per seed; accuracy, macro-F1 and per-class F1 on the test split, and
    the 10 features of highest impurity importance (mean over the seeds)."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import accuracy_score, f1_score

    runs = []
    importance = np.zeros(len(names))
    began = time.perf_counter()
    for seed in SEEDS:
        forest = RandomForestClassifier(n_estimators=TREES, class_weight="balanced",
                                        n_jobs=-1, random_state=seed)
        forest.fit(features[train], y[train])
        predicted = forest.predict(features[test])
        importance += forest.feature_importances_ / len(SEEDS)
        per_class = f1_score(y[test], predicted, labels=classes, average=None, zero_division=0)
        runs.append({
            "seed": seed,
            "accuracy": accuracy_score(y[test], predicted),
            "macro_f1": f1_score(y[test], predicted, labels=classes, average="macro",
                                 zero_division=0),
            "per_class_f1": dict(zip(classes, per_class.tolist())),
        })
    seconds = time.perf_counter() - began
    top = np.argsort(importance)[::-1][:10]
    result = {"features": int(features.shape[1]), "seconds": round(seconds, 1), "runs": runs,
              "top_features": {names[i]: round(float(importance[i]), 4) for i in top}}
    for metric in ("accuracy", "macro_f1"):
        values = [r[metric] for r in runs]
        result[metric] = {"median": statistics.median(values), "min": min(values),
                          "max": max(values)}
    result["per_class_f1_median"] = {
        c: statistics.median(r["per_class_f1"][c] for r in runs) for c in classes}
    print(f"{name}: {features.shape[1]} features, accuracy {result['accuracy']['median']:.3f}, "
          f"macro-F1 {result['macro_f1']['median']:.3f} ({seconds:.0f} s for {len(SEEDS)} seeds)")
    return result


def markdown(results, support):
    """The summary table and the per-class F1 table, as markdown."""
    def spread(m):
        return f"{m['median']:.3f} ({m['min']:.3f}-{m['max']:.3f})"

    lines = ["| features | inputs | accuracy, median (range) | macro-F1, median (range) |",
             "|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['features']} | {spread(r['accuracy'])} | "
                     f"{spread(r['macro_f1'])} |")
    lines += ["", "| class | test flows | " + " | ".join(results) + " |",
              "|---|---|" + "---|" * len(results)]
    for c, n in support.items():
        cells = " | ".join(f"{r['per_class_f1_median'][c]:.3f}" for r in results.values())
        lines.append(f"| {c} | {n} | {cells} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--netfm", default="target/release/netfm", help="netfm binary")
    ap.add_argument("--labelled", default="/work/shared/datasets/labelled",
                    help="the labelled set: pcaps/, labels.csv, split_*.txt")
    ap.add_argument("--cache", required=True, help="folder for the tokenized dataset")
    ap.add_argument("--json", required=True, help="where to write all numbers")
    ap.add_argument("--no-large-tokens", action="store_true",
                    help="skip the 12-burst x 108-token forests")
    args = ap.parse_args()
    try:
        import sklearn  # noqa: F401
    except ImportError:
        sys.exit("error: scikit-learn is missing: pip install scikit-learn pandas pyarrow")

    labelled = lc.require(args.labelled, "labelled set")
    dataset = lc.tokenize_if_needed(args.netfm, labelled / "pcaps", args.cache)
    flows = lc.join_labels(lc.load_flows(dataset), labelled / "labels.csv")
    lc.print_class_counts(flows)

    y = flows["label"].to_numpy()
    train = (flows["split"] == "train").to_numpy()
    test = (flows["split"] == "test").to_numpy()
    classes = sorted(set(y[test]))
    counts = lc.class_counts(flows)

    feature_sets = {
        "stats (no ports)": lambda: stats_features(flows, ports=False),
        "stats + ports": lambda: stats_features(flows, ports=True),
        "tokens 4x36": lambda: token_features(flows, 4, 36, meta=False),
        "tokens+meta 4x36": lambda: token_features(flows, 4, 36, meta=True),
    }
    if not args.no_large_tokens:
        feature_sets["tokens 12x108"] = lambda: token_features(flows, 12, 108, meta=False)
        feature_sets["tokens+meta 12x108"] = lambda: token_features(flows, 12, 108, meta=True)
    results = {}
    for name, build in feature_sets.items():
        features, names = build()
        results[name] = evaluate(name, features, names, y, train, test, classes)

    support = {c: int(counts.loc[c, "test"]) for c in classes}
    table = markdown(results, support)
    print()
    print(table)
    report = {
        "dataset": str(labelled),
        "cache": str(dataset),
        "seeds": list(SEEDS),
        "trees": TREES,
        "join_counts": flows.attrs["join_counts"],
        "class_counts": {c: {"train": int(r["train"]), "test": int(r["test"])}
                         for c, r in counts.iterrows()},
        "results": results,
        "markdown": table,
    }
    Path(args.json).write_text(json.dumps(report, indent=2, default=int))
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
