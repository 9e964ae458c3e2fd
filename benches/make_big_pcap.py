#!/usr/bin/env python3
"""Builds a large, realistic benchmark capture from the bundled real captures.

Every Ethernet classic pcap in datasets/pcaps is read; their packets form a template (each
file's timestamps shifted to start at 0, files merged by time). The output holds N copies of
the template; copy k starts k * --interval-ms later and has every IPv4/IPv6 address XORed
with k in its bytes 2-3, so each copy's flows are distinct flows (real headers, real
payloads, a realistic protocol mix, many thousands of concurrently open flows). Copies are
merged by time, so the result is a time-ordered capture. Deterministic: same inputs, same
bytes out.

    python3 benches/make_big_pcap.py --out benches/data/big.pcap --min-bytes 1.1e9 --min-packets 3.2e6
"""

import argparse
import heapq
import os
import struct
import sys

MAGIC_US = 0xA1B2C3D4
MAGIC_NS = 0xA1B23C4D


def read_pcap(path):
    """Lists (ts_ns, frame bytes, original length) of an Ethernet classic pcap; None if it is something else."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        return None
    for endian in ("<", ">"):
        magic, _vmaj, _vmin, _tz, _sig, _snap, linktype = struct.unpack(endian + "IHHiIII", data[:24])
        if magic in (MAGIC_US, MAGIC_NS):
            break
    else:
        return None
    if linktype != 1:
        return None
    scale = 1 if magic == MAGIC_NS else 1000
    out, off = [], 24
    while off + 16 <= len(data):
        sec, frac, incl, orig = struct.unpack(endian + "IIII", data[off : off + 16])
        off += 16
        if off + incl > len(data):
            break
        out.append((sec * 1_000_000_000 + frac * scale, data[off : off + incl], orig))
        off += incl
    return out


def ip_offsets(frame):
    """(offset of the IP header, version) after Ethernet and any VLAN tags, or None."""
    off, ethertype = 12, None
    while off + 2 <= len(frame):
        ethertype = struct.unpack(">H", frame[off : off + 2])[0]
        if ethertype in (0x8100, 0x88A8, 0x9100):
            off += 4
            continue
        off += 2
        break
    if ethertype == 0x0800 and off + 20 <= len(frame):
        return off, 4
    if ethertype == 0x86DD and off + 40 <= len(frame):
        return off, 6
    return None


def template(pcap_dir):
    files = sorted(f for f in os.listdir(pcap_dir) if f.endswith(".pcap"))
    packets = []
    for name in files:
        pkts = read_pcap(os.path.join(pcap_dir, name))
        if not pkts:
            continue
        t0 = min(p[0] for p in pkts)
        for ts, frame, orig in pkts:
            packets.append((ts - t0, frame, ip_offsets(frame), orig))
    packets.sort(key=lambda p: p[0])
    return packets


def rewrite(frame, ip, k):
    if ip is None or k == 0:
        return frame
    off, version = ip
    b = bytearray(frame)
    hi, lo = (k >> 8) & 0xFF, k & 0xFF
    addrs = (off + 12, off + 16) if version == 4 else (off + 8, off + 24)
    for a in addrs:
        b[a + 2] ^= hi
        b[a + 3] ^= lo
    return bytes(b)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pcaps", default=os.path.join(os.path.dirname(__file__), "..", "datasets", "pcaps"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--min-bytes", type=float, default=1.1e9)
    ap.add_argument("--min-packets", type=float, default=3.2e6)
    ap.add_argument("--interval-ms", type=float, default=20.0)
    args = ap.parse_args()

    tpl = template(args.pcaps)
    if not tpl:
        sys.exit("no Ethernet classic pcaps found in " + args.pcaps)
    tpl_bytes = sum(16 + len(p[1]) for p in tpl)
    copies = int(max(args.min_bytes / tpl_bytes, args.min_packets / len(tpl))) + 1
    if copies > 65535:
        sys.exit("too many copies for 16-bit address rewriting; raise the template size")
    step = int(args.interval_ms * 1e6)
    base = 1_700_000_000 * 1_000_000_000

    def copy(k):
        for i, p in enumerate(tpl):
            ts = p[0]
            yield base + k * step + ts, k, i

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    n = size = 0
    with open(tmp, "wb", buffering=1 << 22) as f:
        f.write(struct.pack("<IHHiIII", MAGIC_NS, 2, 4, 0, 0, 262144, 1))
        for ts, k, i in heapq.merge(*(copy(k) for k in range(copies))):
            _, frame, ip, orig = tpl[i]
            frame = rewrite(frame, ip, k)
            f.write(struct.pack("<IIII", ts // 1_000_000_000, ts % 1_000_000_000, len(frame), orig))
            f.write(frame)
            n += 1
            size += 16 + len(frame)
    os.replace(tmp, args.out)
    print(f"{args.out}: {n} packets, {size + 24} bytes, {copies} copies of {len(tpl)} template packets")


if __name__ == "__main__":
    main()
