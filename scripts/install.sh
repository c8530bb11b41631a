#!/usr/bin/env bash
# Set up .venv for this checkout: torch (CPU build) first, then workbench with its dev extra.
# Idempotent: a second run reuses the environment and reinstalls only when pyproject.toml changed.
# For a GPU: create .venv and install a CUDA build of torch into it before running this script
# (torch>=2.4,<2.14); the script keeps any torch it finds.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
VPY=.venv/bin/python
if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
  "$VPY" -m pip install --quiet "torch==${WORKBENCH_TORCH_VERSION:-2.13.0}"
fi
stamp=.venv/.workbench-install-stamp
want=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  "$VPY" -m pip install --quiet -e ".[dev]"
  echo "$want" > "$stamp"
fi
