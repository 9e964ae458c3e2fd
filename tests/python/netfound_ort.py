"""Python onnxruntime as a consumer of a netFound model netfm exported.

Usage: netfound_ort.py MODEL.onnx BATCH.safetensors OUTPUTS.safetensors

Feeds netFound's golden batch (netFound's own [B, N*L] per-token layout, turned into the
model's dense inputs here with numpy: [B, N, L] ids and mask, per-burst metadata from each
burst's CLS slot) to the exported model and prints, as JSON, the largest absolute difference
of each output from netFound's own outputs (`embedding`, `swap_logits`, `metadata_pred`,
`direction_logits`, and `class_logits` against `finetune_logits` when the model has a
classifier), plus the outputs' names.
"""

import json
import struct
import sys

import numpy as np
import onnxruntime as ort

DTYPES = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "I32": np.int32}


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    data = raw[8 + n :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        s, e = info["data_offsets"]
        out[name] = np.frombuffer(data[s:e], dtype=DTYPES[info["dtype"]]).reshape(info["shape"])
    return out


def main():
    model, batch_path, outputs_path = sys.argv[1:4]
    batch = read_safetensors(batch_path)
    gold = read_safetensors(outputs_path)
    ids = batch["input_ids"]
    b = ids.shape[0]
    n = batch["dataset_burst_sizes"].shape[1]
    l = ids.shape[1] // n
    cls = (slice(None), slice(None), 0)
    per_burst = lambda k: batch[k].reshape(b, n, l)[cls]
    feeds = {
        "input_ids": ids.reshape(b, n, l),
        "attention_mask": batch["attention_mask"].reshape(b, n, l),
        "burst_meta": np.stack(
            [per_burst("direction"), per_burst("bytes"), per_burst("pkt_count"), per_burst("iats")],
            axis=-1,
        ).astype(np.float32),
        "protocol": batch["protocol"],
    }
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    wanted = {i.name for i in sess.get_inputs()}
    res = dict(zip(names, sess.run(None, {k: v for k, v in feeds.items() if k in wanted})))
    pairs = {
        "embedding": "embedding",
        "swap_logits": "swap_logits",
        "metadata_pred": "metadata_pred",
        "direction_logits": "direction_logits",
        "class_logits": "finetune_logits",
    }
    diffs = {
        ours: float(np.abs(res[ours].astype(np.float64) - gold[theirs]).max())
        for ours, theirs in pairs.items()
        if ours in res
    }
    print(json.dumps({"outputs": names, "max_abs_diff": diffs}))


if __name__ == "__main__":
    main()
