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
# The clients the tests drive as users' own: Debian's Chromium (the ComfyUI web frontend, through Playwright) and
# npm's Node tools (MCP Inspector's CLI, the mcpb bundler, a Node 24 runtime) in .cache/node, never global. apt only
# for what is missing (CI runs as root on Debian); elsewhere the tests that need them are skipped and say why.
t0=$SECONDS
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null
  else
    echo "[test.sh] cannot install ${missing[*]} (needs root and apt-get)" >&2
  fi
fi
if command -v npm >/dev/null && ! cmp -s scripts/node/package-lock.json .cache/node/.installed-lock.json; then
  rm -rf .cache/node && mkdir -p .cache/node && cp scripts/node/package.json scripts/node/package-lock.json .cache/node/
  # `npm install` from the lock file (`npm ci` trips over an optional Windows-only package missing from it)
  (cd .cache/node && npm install --no-audit --no-fund --loglevel=error)
  cp scripts/node/package-lock.json .cache/node/.installed-lock.json
fi
echo "[test.sh] browser and Node tools ready in $((SECONDS - t0))s"
.venv/bin/lint-imports --no-cache  # architecture contracts (docs/ARCHITECTURE.md)
t0=$SECONDS
.venv/bin/python scripts/setup_comfyui.py  # every ComfyUI version available here, with its pinned frontend
echo "[test.sh] ComfyUI versions ready in $((SECONDS - t0))s"
export HF_HUB_OFFLINE=1
exec .venv/bin/python -m pytest -q -ra "$@"
