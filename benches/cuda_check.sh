#!/usr/bin/env bash
# One-shot CUDA check for a machine with an NVIDIA GPU: build netfm with the CUDA execution
# provider, run `netfm doctor` on the GPU, then a few hundred `small` pretraining steps on
# `--device cuda` beside the same run on the CPU, printing real tokens/s and the loss of each.
#
# What it needs (it says which is missing):
# - an NVIDIA driver (nvidia-smi) and the CUDA 13 / cuBLAS 13 runtime libraries;
# - ONNX Runtime's GPU library: onnxruntime-gpu==1.31.1's libonnxruntime.so.1.31.1 and
#   libonnxruntime_providers_cuda.so, found through ORT_DYLIB_PATH, or in an installed
#   onnxruntime-gpu wheel (the wheel is larger than one transfer to a lent machine carries:
#   look at what the machine's image has first);
# - a Rust toolchain to build with `--features cuda`, or NETFM=path/to/a/cuda/build.
#
# Usage: bash benches/cuda_check.sh [STEPS]   (default 300; the CPU run does STEPS/10)
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-300}
OUT=${OUT:-$(mktemp -d)}

need() { echo "cuda_check: $*" >&2; exit 3; }
command -v nvidia-smi >/dev/null || need "no nvidia-smi: this machine has no NVIDIA driver"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

if [ -z "${ORT_DYLIB_PATH:-}" ]; then
  lib=$(python3 - <<'EOF' 2>/dev/null || true
import importlib.util, pathlib
spec = importlib.util.find_spec("onnxruntime")
if spec:
    capi = pathlib.Path(spec.origin).parent / "capi"
    if (capi / "libonnxruntime_providers_cuda.so").exists():
        for f in sorted(capi.glob("libonnxruntime.so*")):
            print(f); break
EOF
)
  [ -n "$lib" ] || need "no ONNX Runtime GPU library: set ORT_DYLIB_PATH to onnxruntime-gpu 1.31.1's libonnxruntime.so.1.31.1 (with libonnxruntime_providers_cuda.so beside it), or pip install onnxruntime-gpu==1.31.1"
  export ORT_DYLIB_PATH=$lib
fi
echo "ONNX Runtime: $ORT_DYLIB_PATH"

if [ -z "${NETFM:-}" ]; then
  command -v cargo >/dev/null || need "no cargo to build with --features cuda; set NETFM to a CUDA build of netfm"
  cargo build --release --features cuda
  NETFM=target/release/netfm
fi

"$NETFM" doctor --device cuda

"$NETFM" tokenize -q --out "$OUT/ds" datasets/pcaps ../shared/conformance/netfound/pcaps
run() { # device steps
  "$NETFM" pretrain -q --json --overwrite --data "$OUT/ds" --out "$OUT/run-$1" --size small \
    --steps "$2" --val-fraction 0 --checkpoint-every 100000 --device "$1" >"$OUT/$1.json"
  python3 - "$OUT/$1.json" "$1" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]:>5}: {s['steps_done']} steps, {s['real_tokens_per_s']:.0f} real tokens/s, "
      f"final loss {s['final_loss']:.4f}, {s['elapsed_s']:.1f} s")
EOF
}
run cuda "$STEPS"
run cpu $(( STEPS / 10 > 1 ? STEPS / 10 : 2 ))
