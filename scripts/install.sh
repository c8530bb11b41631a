#!/usr/bin/env bash
# Set up .venv for this checkout: torch (CPU build) first, then the exact versions in requirements.lock (the ones
# the committed results were produced with), then workbench itself, editable and --no-deps (its dependencies and
# the dev extra's are all in the lock). Refresh the lock with scripts/lock.sh.
# Idempotent: a second run reuses the environment and reinstalls only when pyproject.toml or requirements.lock
# changed.
# For a GPU: create .venv and install a CUDA build of torch into it before running this script (torch 2.13.0
# matches the lock; other versions may conflict with its pins); the script keeps any torch it finds: pip is
# constrained to the installed torch, so it can never replace it.
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
torch_version() { "$VPY" -c "import importlib.metadata as m; print(m.version('torch'))"; }
stamp=.venv/.workbench-install-stamp
want=$(cat pyproject.toml requirements.lock | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  torch_before=$(torch_version)
  constraints=$(mktemp)
  trap 'rm -f "$constraints"' EXIT
  echo "torch==$torch_before" > "$constraints"
  if ! "$VPY" -m pip install --quiet -r requirements.lock -c "$constraints"; then
    echo "install.sh: requirements.lock does not install beside torch $torch_before (see pip's message above);" \
         "install torch==2.13.0 or refresh the lock with scripts/lock.sh" >&2
    exit 1
  fi
  "$VPY" -m pip install --quiet --no-deps -e .
  torch_after=$(torch_version)
  if [ "$torch_after" != "$torch_before" ]; then
    echo "install.sh: torch changed from $torch_before to $torch_after; it must not (reinstall the one you want)" >&2
    exit 1
  fi
  echo "$want" > "$stamp"
fi
