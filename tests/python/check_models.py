"""Python's onnx and onnxruntime as consumers of netfm's exported models.

Usage: check_models.py DIR, where DIR holds inference.onnx, train_step.onnx, eval.onnx,
params.safetensors (netfm checkpoint), batch.json and expect.json written by
tests/model_training.rs. Exits non-zero with a message on any mismatch.
"""
import json
import struct
import sys

import numpy as np
import onnx
import onnxruntime as ort

d = sys.argv[1]
for name in ["inference", "train_step", "eval"]:
    onnx.checker.check_model(onnx.load(f"{d}/{name}.onnx"), full_check=True)
    print(f"{name}: onnx.checker full_check ok")


def read_safetensors(path):
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    data = raw[8 + n :]
    out = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        s, e = info["data_offsets"]
        dt = {"F32": np.float32, "F64": np.float64}[info["dtype"]]
        out[key] = np.frombuffer(data[s:e], dtype=dt).reshape(info["shape"])
    return header["__metadata__"], out


meta, tensors = read_safetensors(f"{d}/params.safetensors")
assert meta["format"] == "netfm-checkpoint-1", meta
params = {k[len("param."):]: v for k, v in tensors.items() if k.startswith("param.")}
batch = {
    k: np.array(v["values"], dtype=v["dtype"]).reshape(v["dims"])
    for k, v in json.load(open(f"{d}/batch.json")).items()
}
expect = json.load(open(f"{d}/expect.json"))

so = ort.SessionOptions()
inf = ort.InferenceSession(f"{d}/inference.onnx", so, providers=["CPUExecutionProvider"])
names = [i.name for i in inf.get_inputs()]
outs = inf.run(None, {k: batch[k] for k in names})
for o, value in zip(inf.get_outputs(), outs):
    want = np.array(expect["inference"][o.name]).reshape(value.shape)
    err = float(np.max(np.abs(value - want)))
    assert err < 1e-5, f"inference output {o.name}: max difference {err}"
    print(f"inference {o.name} {value.shape}: max |python - rust| = {err:.2e}")

train = ort.InferenceSession(f"{d}/train_step.onnx", so, providers=["CPUExecutionProvider"])
feeds = {}
for i in train.get_inputs():
    n = i.name
    if n in batch:
        feeds[n] = batch[n]
    elif n in params:
        feeds[n] = params[n]
    elif n.startswith("m.") or n.startswith("v."):
        feeds[n] = np.zeros_like(params[n[2:]])
    elif n == "step":
        feeds[n] = np.array(1, dtype=np.int64)
    else:
        feeds[n] = np.array(expect[n], dtype=np.float32)
res = dict(zip([o.name for o in train.get_outputs()], train.run(None, feeds)))
loss = float(res["loss"])
assert abs(loss - expect["loss"]) <= 1e-5 * max(1.0, abs(loss)), (loss, expect["loss"])
w = res["new.head.swap.w"].ravel()
err = float(np.max(np.abs(w - np.array(expect["new.head.swap.w"]))))
assert err < 1e-6, f"updated head.swap.w differs by {err}"
print(f"train_step: loss {loss:.6f} (rust {expect['loss']:.6f}); updated parameter max difference {err:.2e}")
print("all checks passed")
