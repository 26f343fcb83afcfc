#!/usr/bin/env bash
# The README's test command: set up .venv (CPU PyTorch first) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
set +e
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"  # see src/neurocnn/__init__.py
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure here" >&2
  exit 1
fi
exit "$rc"
