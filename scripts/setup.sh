#!/usr/bin/env bash
# Create .venv and install pgkb with everything the demo and the tests need.
# torch comes first and pinned, so pip takes the CPU build instead of a multi-GB CUDA one.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
stamp=.venv/.pgkb-installed
want=$(cat pyproject.toml | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  pip install -q "torch==2.13.0"
  pip install -q -e ".[local,onnx,dev]"
  echo "$want" > "$stamp"
fi
