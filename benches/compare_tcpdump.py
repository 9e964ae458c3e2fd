#!/usr/bin/env python3
"""netfm tokenize vs tcpdump -r on the same large capture, side by side in one run.

Builds the release binary and the benchmark capture (benches/make_big_pcap.py) if needed,
warms the page cache, then alternates rounds of

    tcpdump -r big.pcap -w /dev/null
    netfm tokenize big.pcap --out <tmp> --quiet --json          (native Parquet)
    netfm tokenize big.pcap --out <tmp> --quiet --json --format netfound

and prints the median wall time of each, packets/s, peak RSS (from wait4) and the ratio
netfm / tcpdump. The machines are shared and noisy: only ratios from one run mean much.
`--baseline BINARY` adds another netfm build's native Parquet run to every round (e.g.
the previous commit's), so a change's cost is measured side by side too.

    python3 benches/compare_tcpdump.py [--rounds 5] [--capture benches/data/big.pcap] [--baseline OLD/netfm]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def timed(cmd):
    """Runs cmd; returns (wall seconds, peak RSS bytes, stdout)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = p.stdout.read()
    err = p.stderr.read()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({p.returncode}):\n{err.decode(errors='replace')}")
    return wall, ru.ru_maxrss * 1024, out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--capture", default=os.path.join(ROOT, "benches", "data", "big.pcap"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--baseline", help="another netfm binary to time beside this one (native Parquet)")
    args = ap.parse_args()

    if not shutil.which("tcpdump"):
        sys.exit("tcpdump not found (apt-get install tcpdump)")
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    netfm = os.path.join(ROOT, "target", "release", "netfm")
    if not os.path.exists(args.capture):
        subprocess.run([sys.executable, os.path.join(ROOT, "benches", "make_big_pcap.py"), "--out", args.capture], check=True)
    size = os.path.getsize(args.capture)
    with open(args.capture, "rb") as f:  # page cache
        while f.read(1 << 24):
            pass

    runs = {"tcpdump": [], "netfm parquet": [], "netfm netfound": []}
    if args.baseline:
        runs["baseline parquet"] = []
    rss = {k: 0 for k in runs}
    packets = None
    summary = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            cmds = {
                "tcpdump": ["tcpdump", "-r", args.capture, "-w", "/dev/null"],
                "netfm parquet": [netfm, "tokenize", args.capture, "--out", os.path.join(tmp, f"p{r}"), "--quiet", "--json"],
                "netfm netfound": [netfm, "tokenize", args.capture, "--out", os.path.join(tmp, f"n{r}"), "--quiet", "--json", "--format", "netfound"],
            }
            if args.baseline:
                cmds["baseline parquet"] = [args.baseline, "tokenize", args.capture, "--out", os.path.join(tmp, f"b{r}"), "--quiet", "--json"]
            for name, cmd in cmds.items():
                wall, peak, out = timed(cmd)
                runs[name].append(wall)
                rss[name] = max(rss[name], peak)
                if name.startswith("netfm") or name.startswith("baseline"):
                    s = json.loads(out)
                    packets = s["packets_read"]
                    summary[name] = s
                    shutil.rmtree(cmd[4], ignore_errors=True)
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in runs.items()), flush=True)

    med = {k: statistics.median(v) for k, v in runs.items()}
    print()
    print(f"capture: {args.capture}: {size / 1e9:.2f} GB, {packets} packets; {args.rounds} rounds, medians")
    print()
    print("| command | median wall s | packets/s | peak RSS MiB | ratio to tcpdump |")
    print("|---|---|---|---|---|")
    for k in runs:
        print(f"| {k} | {med[k]:.2f} | {packets / med[k] / 1e6:.2f} M | {rss[k] / 2**20:.0f} | {med[k] / med['tcpdump']:.2f} |")
    if args.baseline:
        paired = [a / b for a, b in zip(runs["netfm parquet"], runs["baseline parquet"])]
        print(f"\nnetfm parquet / baseline parquet, paired by round: median {statistics.median(paired):.3f} ({', '.join(f'{x:.3f}' for x in paired)})")
    for k, s in summary.items():
        print(f"\n{k}: flows {s['flows']}, evicted {s['flows_evicted']}, bursts {s['bursts']}, tokens {s['tokens']}, skipped {s['packets_skipped']}")


if __name__ == "__main__":
    main()
