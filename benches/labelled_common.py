"""Shared helpers for the labelled flow-classification benchmarks (issue 16).

The labelled set (`/work/shared/datasets/labelled/`, see its README.md) holds nDPI's test
captures and one label row per flow nDPI reports (`labels.csv`). These helpers

- tokenize the captures with netfm into a cache folder, reusing it when it already holds
  the same captures (`tokenize_if_needed`);
- read a netfm Parquet dataset into a pandas DataFrame (`load_flows`);
- give each netfm flow its nDPI label and the split of its capture file (`join_labels`).

Needs `pip install pandas pyarrow`.

The join key is (capture file name, IP protocol number, unordered endpoint pair
{(src_ip, src_port), (dst_ip, dst_port)}), ports 0 for portless protocols. Two details
make the two sides' keys comparable:

- nDPI prints IPv6 addresses with inet_ntop and then replaces every ":0:" by "::"
  (ndpiReader's patchIPv6Address, "for consistency across platforms"), so a single zero
  group prints as "::" and an address can even hold two "::" ("2600:1901::7a0b::" is
  2600:1901:0:7a0b::). netfm's addresses are turned into that same text before matching.
- netfm keys ICMP flows by address pair and type or echo identifier, nDPI by address pair
  only, and netfm cuts flows at its idle/active timeouts: one label row may therefore
  cover several netfm flows. All of them get the row's label.

Rule where several label rows share one key (the capture repeats a 5-tuple that nDPI
kept apart, e.g. on different VLANs or tunnels): each netfm flow takes the row whose
first_seen_epoch is nearest its start_time; rows without first_seen_epoch come last, and
ties go to the row first in labels.csv.
"""
import ipaddress
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

# labels.csv's l4_proto names -> IP protocol numbers (netfm's `protocol` column).
PROTO_NUMBERS = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58, "igmp": 2, "esp": 50, "ah": 51}

DEFAULT_DROP = ("Other", "Unknown", "Guessed")


def require(path, what):
    """Return `path` as a Path, or exit with a clear message if it does not exist."""
    path = Path(path)
    if not path.exists():
        sys.exit(f"error: {what} not found: {path}")
    return path


def _capture_files(pcap_dir):
    """{file name: size} of the capture files directly in `pcap_dir`."""
    return {p.name: p.stat().st_size for p in Path(pcap_dir).iterdir() if p.is_file()}


def _manifest_inputs(manifest):
    """{file name: size} of every input recorded in a netfm dataset manifest."""
    return {
        Path(inp["path"]).name: inp["size"]
        for run in manifest.get("runs", [])
        for inp in run.get("inputs", [])
    }


def tokenize_if_needed(netfm, pcap_dir, cache_dir):
    """Tokenize the captures of `pcap_dir` into `cache_dir` with `netfm tokenize` (default
    settings) unless `cache_dir` already holds a netfm dataset of exactly those files
    (same names and sizes, read from its `_manifest.json`). Returns `cache_dir` as a Path.

    A cache folder that exists, is not empty and has no manifest is refused rather than
    overwritten: it is not a netfm dataset and may hold something else."""
    netfm = require(netfm, "netfm binary")
    pcap_dir = require(pcap_dir, "capture folder")
    cache_dir = Path(cache_dir)
    wanted = _capture_files(pcap_dir)
    if not wanted:
        sys.exit(f"error: no capture files in {pcap_dir}")
    manifest_path = cache_dir / "_manifest.json"
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if _manifest_inputs(manifest) == wanted:
            print(f"reusing the tokenized dataset in {cache_dir} ({len(wanted)} captures)")
            return cache_dir
        print(f"{cache_dir} holds other captures: tokenizing again")
    elif cache_dir.exists() and any(cache_dir.iterdir()):
        sys.exit(f"error: {cache_dir} is not empty and is not a netfm dataset (no _manifest.json)")
    cmd = [str(netfm), "tokenize", str(pcap_dir), "--out", str(cache_dir),
           "--overwrite", "--quiet", "--json"]
    print("running:", " ".join(cmd))
    run = subprocess.run(cmd, text=True, capture_output=True)
    if run.returncode != 0:
        sys.exit(f"error: netfm tokenize failed ({run.returncode}):\n{run.stderr}")
    summary = json.loads(run.stdout)
    print(f"tokenized {summary['files']} captures: {summary['packets_read']} packets read, "
          f"{summary['packets_decoded']} decoded, skipped {summary['packets_skipped']}")
    return cache_dir


def load_flows(dataset_dir):
    """Read a netfm Parquet dataset (`proto=<name>/part-*.parquet`, hive partitioning)
    into a DataFrame, one row per flow. List columns (burst_tokens, directions, bytes,
    iats, counts) come back as object columns holding numpy arrays."""
    import pyarrow.dataset as ds

    dataset_dir = require(dataset_dir, "netfm dataset")
    # Files starting with "_" (the manifest) are skipped by pyarrow's default.
    table = ds.dataset(dataset_dir, format="parquet", partitioning="hive").to_table()
    if table.num_rows == 0:
        sys.exit(f"error: the dataset in {dataset_dir} holds no flows")
    return table.to_pandas()


def ndpi_ip_text(ip):
    """An address as ndpiReader prints it: IPv4 unchanged; IPv6 as inet_ntop writes it
    (RFC 5952: the longest run of two or more zero groups becomes "::", Python's
    `compressed` does the same), then one left-to-right pass replacing each ":0:" by
    "::" (after a replacement the scan resumes behind the second colon's place)."""
    if ":" not in ip:
        return ip
    s = ipaddress.IPv6Address(ip).compressed
    out, i = [], 0
    while i < len(s):
        if s[i:i + 3] == ":0:":
            out.append("::")
            i += 3
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def _keys(pcap, protocol, src_ip, src_port, dst_ip, dst_port):
    """Join keys: (file name, protocol, the two (ip, port) endpoints in sorted order)."""
    return [
        (f, int(p)) + tuple(sorted([(a, int(b)), (c, int(d))]))
        for f, p, a, b, c, d in zip(pcap, protocol, src_ip, src_port, dst_ip, dst_port)
    ]


def _read_labels(labels_csv):
    """labels.csv with its split checked against split_train.txt / split_test.txt (next
    to it, where present) and a `protocol` number column."""
    labels_csv = require(labels_csv, "labels file")
    labels = pd.read_csv(labels_csv)
    unknown = set(labels["l4_proto"]) - set(PROTO_NUMBERS)
    if unknown:
        sys.exit(f"error: {labels_csv}: l4_proto values with no protocol number: {sorted(unknown)}")
    labels["protocol"] = labels["l4_proto"].map(PROTO_NUMBERS)
    for side in ("train", "test"):
        listed = labels_csv.parent / f"split_{side}.txt"
        if not listed.exists():
            continue
        files = set(listed.read_text().split())
        disagree = labels[labels["pcap"].isin(files) & (labels["split"] != side)]
        if len(disagree):
            sys.exit(f"error: {len(disagree)} rows of {labels_csv} disagree with {listed}")
    return labels


def join_labels(flows, labels_csv, label_column="coarse_class", drop=DEFAULT_DROP):
    """Label the netfm flows from labels.csv (rule: module docstring). Returns the labelled
    flows whose class is not in `drop`, with the columns `label` (from `label_column`),
    `split`, `pcap`, `label_row` (the labels.csv row index) and nDPI's `ndpi_protocol` and
    `ndpi_confidence`. The join's counts are printed and kept in `.attrs["join_counts"]`."""
    labels = _read_labels(labels_csv)
    if label_column not in labels.columns:
        sys.exit(f"error: {labels_csv} has no column {label_column!r}")

    flows = flows.copy()
    flows["pcap"] = flows["source"].map(os.path.basename)
    flow_keys = _keys(
        flows["pcap"], flows["protocol"],
        flows["src_ip"].map(ndpi_ip_text), flows["src_port"].fillna(0),
        flows["dst_ip"].map(ndpi_ip_text), flows["dst_port"].fillna(0))
    label_keys = _keys(labels["pcap"], labels["protocol"], labels["src_ip"],
                       labels["src_port"], labels["dst_ip"], labels["dst_port"])

    rows_of_key = {}
    for row, key in zip(labels.index, label_keys):
        rows_of_key.setdefault(key, []).append(row)

    # Each flow's label row: the only row of its key, or the nearest in first_seen_epoch.
    starts = flows["start_time"].astype("int64").to_numpy() / 1e6  # µs -> Unix seconds
    epochs = labels["first_seen_epoch"]
    assigned = []
    for key, start in zip(flow_keys, starts):
        rows = rows_of_key.get(key)
        if not rows:
            assigned.append(-1)
        elif len(rows) == 1:
            assigned.append(rows[0])
        else:
            assigned.append(min(rows, key=lambda r: (
                abs(epochs[r] - start) if pd.notna(epochs[r]) else np.inf, r)))
    flows["label_row"] = assigned

    flows_per_key = Counter(flow_keys)
    key_has_flow = np.array([k in flows_per_key for k in label_keys])
    row_has_flow = labels.index.isin(set(flows["label_row"]) - {-1})
    multi_flow_keys = [k for k, rows in rows_of_key.items() if flows_per_key[k] > 1]
    labelled = flows[flows["label_row"] >= 0]
    labelled = labelled.join(
        labels[[label_column, "split", "ndpi_protocol", "ndpi_confidence"]],
        on="label_row").rename(columns={label_column: "label"})
    dropped = labelled["label"].isin(drop)

    counts = {
        "label_rows": int(len(labels)),
        "label_rows_matched": int(row_has_flow.sum()),
        "label_rows_without_flow": int((~key_has_flow).sum()),
        "label_rows_without_flow_by_l4_proto":
            labels[~key_has_flow]["l4_proto"].value_counts().to_dict(),
        "label_rows_without_flow_by_class":
            labels[~key_has_flow][label_column].value_counts().to_dict(),
        "label_rows_key_matched_but_no_flow_assigned": int((key_has_flow & ~row_has_flow).sum()),
        "label_keys_with_several_rows": int(sum(len(r) > 1 for r in rows_of_key.values())),
        "flows": int(len(flows)),
        "flows_labelled": int(len(labelled)),
        "flows_without_label": int((flows["label_row"] < 0).sum()),
        "label_keys_with_several_flows": len(multi_flow_keys),
        "flows_in_label_keys_with_several_flows":
            int(sum(flows_per_key[k] for k in multi_flow_keys)),
        "label_rows_dropped_by_class": int(labels[label_column].isin(drop).sum()),
        "flows_dropped_by_class": int(dropped.sum()),
        "flows_dropped_by_class_each": labelled[dropped]["label"].value_counts().to_dict(),
        "flows_kept": int((~dropped).sum()),
    }
    print("join counts:")
    for name, value in counts.items():
        print(f"  {name}: {value}")

    joined = labelled[~dropped].reset_index(drop=True)
    joined.attrs["join_counts"] = counts
    return joined


def class_counts(joined):
    """Flows per class and split (columns train, test), classes sorted by name."""
    return (joined.groupby(["label", "split"]).size().unstack(fill_value=0)
            .reindex(columns=["train", "test"], fill_value=0).sort_index())


def print_class_counts(joined):
    """Print the per-class flow counts of the train and test splits."""
    table = class_counts(joined)
    print(f"{'class':<14}{'train':>7}{'test':>7}")
    for name, row in table.iterrows():
        print(f"{name:<14}{row['train']:>7}{row['test']:>7}")
    print(f"{'total':<14}{table['train'].sum():>7}{table['test'].sum():>7}")
