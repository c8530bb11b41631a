#!/usr/bin/env bash
# Install, then run the whole test suite (unit tests and every notebook at smoke scale).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/python -m pytest "$@"
