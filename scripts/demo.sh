#!/usr/bin/env bash
# The README's main-job command: set up .venv (CPU PyTorch first) and run `neurocnn demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/neurocnn demo "$@"
