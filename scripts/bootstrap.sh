#!/usr/bin/env bash
# Create .venv (once) with a CPU torch and awcl installed in editable mode.
# Never pulls CUDA wheels: torch and torchvision are pinned together and installed first;
# afterwards awcl's own ranges (torch>=2.1) are already satisfied.
# Override with AWCL_TORCH="torch==X torchvision==Y" (e.g. a CUDA build on a GPU machine).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${AWCL_VENV:-.venv}
PY=${PYTHON:-python3}
TORCH_SPEC=${AWCL_TORCH:-"torch==2.13.0 torchvision==0.28.0"}
stamp="$VENV/.awcl-installed"
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }
echo "awcl: installing into $VENV (first run only; a minute or two)" >&2
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  # shellcheck disable=SC2086
  if ! pip install $TORCH_SPEC 2>/dev/null; then
    # No local CPU wheel: take the CPU builds from PyTorch's own index.
    # shellcheck disable=SC2086
    pip install $TORCH_SPEC --index-url https://download.pytorch.org/whl/cpu
  fi
fi
pip install -e ".[dev]"
touch "$stamp"
