#!/usr/bin/env bash
# The main job: install, then execute every notebook headlessly at full scale on the embedded default,
# writing results/*.json, results/figures/ and results/summary.md. Extra arguments go to
# `workbench reproduce` (e.g. --only 03 or --retrain).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/workbench reproduce "$@"
