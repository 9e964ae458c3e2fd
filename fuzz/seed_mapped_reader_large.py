#!/usr/bin/env python3
"""Seeds for the mapped_reader_large fuzz target: for each classic pcap of datasets/pcaps,
its global header and the whole records that fit in about 3 KB, then the two bytes that
choose how much is cut off the built file (none, and 263 x 16 bytes).

    python3 fuzz/seed_mapped_reader_large.py   # writes fuzz/corpus/mapped_reader_large/
"""
import glob
import os
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fuzz", "corpus", "mapped_reader_large")
LITTLE = (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1")
BIG = (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d")


def main():
    os.makedirs(OUT, exist_ok=True)
    n = 0
    for path in sorted(glob.glob(os.path.join(ROOT, "datasets", "pcaps", "*.pcap"))):
        data = open(path, "rb").read()
        if data[:4] not in LITTLE + BIG:
            continue
        order = "<" if data[:4] in LITTLE else ">"
        pos = 24
        while pos + 16 <= len(data):
            (caplen,) = struct.unpack(order + "I", data[pos + 8 : pos + 12])
            if pos + 16 + caplen > 3024:
                break
            pos += 16 + caplen
        for cut in (b"\x00\x00", b"\x07\x01"):
            with open(os.path.join(OUT, f"seed{n}"), "wb") as f:
                f.write(data[:pos] + cut)
            n += 1
    print(f"{n} seeds in {OUT}")


if __name__ == "__main__":
    main()
