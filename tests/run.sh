#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine with Rust: installs the oracles and
# consumers the tests use (tshark, tcpdump, xz, Python pyarrow and duckdb), then runs every test of the workspace.
# README.md gives this command; .ci/run runs it.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v tshark >/dev/null 2>&1 || need_apt+=(tshark)
command -v tcpdump >/dev/null 2>&1 || need_apt+=(tcpdump)
command -v xz >/dev/null 2>&1 || need_apt+=(xz-utils)
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
python3 -c "import pyarrow" 2>/dev/null || python3 -m pip install -q "pyarrow>=15"
# DuckDB is a real consumer of the native dataset and of netFound mode's IPC files.
python3 -c "import duckdb" 2>/dev/null || python3 -m pip install -q "duckdb>=1.1"
# Python's onnx checker and onnxruntime are consumers of the exported models (tests/model_training.rs).
python3 -c "import onnx, onnxruntime, numpy" 2>/dev/null \
  || python3 -m pip install -q "onnx==1.23.2" "onnxruntime==1.31.1" numpy

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
