#!/usr/bin/env bash
# The README's main job: install (first run only), then run the demo on the built-in phantom.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/awcl demo "$@"
