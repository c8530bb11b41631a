#!/usr/bin/env bash
# Regenerate requirements.lock: resolve pyproject.toml's ranges (dependencies and the dev extra) afresh in a
# temporary venv that has torch installed first, then pin every package pip installed with `==`, except torch,
# its CUDA packages (nvidia-*, triton, cuda-*) and workbench itself (scripts/install.sh installs those).
# Run it after changing a range in pyproject.toml; then rerun the notebooks (bash scripts/reproduce.sh) and commit
# the lock together with the results it produced.
#
#   bash scripts/lock.sh                          # fresh resolve, writes requirements.lock
#   bash scripts/lock.sh --from-freeze FILE       # lock an existing `pip freeze` (e.g. of the .venv that
#                                                 # produced the committed results) instead of resolving afresh
#   LOCK_OUT=/tmp/x.lock bash scripts/lock.sh     # write somewhere else (to compare with the committed lock)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH=${WORKBENCH_TORCH_VERSION:-2.13.0}
out=${LOCK_OUT:-requirements.lock}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ "${1:-}" = "--from-freeze" ]; then
  [ -f "${2:-}" ] || { echo "lock.sh: --from-freeze needs a pip freeze file" >&2; exit 2; }
  cp "$2" "$work/freeze.txt"
  torch_version=$(grep -i -E '^torch==' "$work/freeze.txt" | cut -d= -f3 || true)
  python_version=$("$PYTHON" -c 'import platform; print(platform.python_version())')
else
  "$PYTHON" -m venv "$work/venv"
  vpy="$work/venv/bin/python"
  "$vpy" -m pip install --quiet "torch==$TORCH"
  torch_version=$("$vpy" -c "import importlib.metadata as m; print(m.version('torch'))")
  # The constraint keeps the torch just installed: the lock is resolved against it.
  echo "torch==$torch_version" > "$work/constraints.txt"
  "$vpy" -m pip install --quiet -e ".[dev]" -c "$work/constraints.txt"
  "$vpy" -m pip freeze --exclude-editable > "$work/freeze.txt"
  python_version=$("$vpy" -c 'import platform; print(platform.python_version())')
fi

# Drop comments, editables, torch, CUDA packages and workbench; keep `name==version` lines only.
grep -v -i -E '^(#|-e |$)|^(torch|workbench)( |==|@)|^(nvidia[-_]|triton|cuda[-_])' "$work/freeze.txt" > "$work/pins.txt" || true
if grep -v -E '^[A-Za-z0-9._-]+==[^ ]+$' "$work/pins.txt"; then
  echo "lock.sh: the lines above are not exact name==version pins (installed from a URL or path?)" >&2
  exit 1
fi
for needed in transformers transformer-lens sae-lens numpy; do
  grep -q -i -E "^${needed}==" "$work/pins.txt" || { echo "lock.sh: $needed missing from the freeze" >&2; exit 1; }
done

{
  echo "# requirements.lock: the exact version of every package workbench needs, the versions the committed results"
  echo "# were produced with (Python $python_version, $(uname -s) $(uname -m), torch ${torch_version:-unknown})."
  echo "# scripts/install.sh installs torch first (torch==2.13.0, a CPU build; or a CUDA build you installed), then"
  echo "# \`pip install -r requirements.lock\`, then \`pip install --no-deps -e .\`; environment.yml does the same."
  echo "# Not listed on purpose: torch, its CUDA packages (nvidia-*, triton) and workbench itself."
  echo "# Refresh: \`bash scripts/lock.sh\` (resolves pyproject.toml's ranges afresh in a temporary venv), then rerun"
  echo "# the notebooks (\`bash scripts/reproduce.sh\`) and commit the lock together with the results. Generated file."
  cat "$work/pins.txt"
} > "$work/lock.txt"
mv "$work/lock.txt" "$out"
echo "wrote $out ($(wc -l < "$work/pins.txt") pins)"
