#!/usr/bin/env bash
# Install everything from the project's own files into ./.venv and run the whole test suite (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
# torch/torchvision: this machine's pip serves torch 2.14.1 + torchvision 0.29.1 (a CUDA build that also runs on the
# CPU). Elsewhere, set TORCH_SPEC to what your platform needs (e.g. TORCH_SPEC="torch torchvision").
TORCH_SPEC="${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}"
quiet_pip() { .venv/bin/python -m pip install -q --disable-pip-version-check "$@" 2>&1 | { grep -v '^WARNING: Location' || true; }; }
[ -x .venv/bin/python ] || "$PY" -m venv .venv
quiet_pip $TORCH_SPEC
quiet_pip -e ".[all,test]"
echo "[test.sh] installed in ${SECONDS}s; venv $(du -sh .venv | cut -f1)"
.venv/bin/lint-imports --no-cache  # architecture contracts (docs/ARCHITECTURE.md)
.venv/bin/python scripts/setup_comfyui.py
export HF_HUB_OFFLINE=1
exec .venv/bin/python -m pytest -q -ra "$@"
