#!/usr/bin/env bash
# The README's test command: install (first run only), lint, then the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/ruff check src tests benchmarks
exec .venv/bin/python -m pytest "$@"
