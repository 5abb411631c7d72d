"""Build the one-click Claude Desktop bundle ``dist/rea2seg-<version>.mcpb`` from ``mcpb/`` (MCPB manifest v0.4, a
``uv`` server): stage the bundle, put the project's wheel in it (the project is not on PyPI; the bundle's
pyproject.toml points uv at the wheel), draw its icon, then ``mcpb validate`` and ``mcpb pack`` with the npm package
``@anthropic-ai/mcpb`` that scripts/test.sh installs into ``.cache/node``.

    python scripts/build_mcpb.py            # prints the path of the .mcpb
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SOURCE = REPO_ROOT / "mcpb"
NODE_BIN = REPO_ROOT / ".cache" / "node" / "node_modules" / ".bin"
STAGE = REPO_ROOT / ".cache" / "mcpb" / "rea2seg"
DIST = REPO_ROOT / "dist"


def project_version() -> str:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]


def draw_icon(path: Path, size: int = 512) -> None:
    """The bundle's icon: a picture with one region picked out by a mask outline (what the tools do)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), (44, 40, 58))
    d = ImageDraw.Draw(img)
    s = size / 512
    d.rounded_rectangle([40 * s, 40 * s, 472 * s, 472 * s], radius=60 * s, fill=(96, 140, 200))
    d.polygon([(40 * s, 380 * s), (200 * s, 230 * s), (320 * s, 330 * s), (472 * s, 210 * s), (472 * s, 472 * s),
               (40 * s, 472 * s)], fill=(70, 120, 80))
    d.ellipse([250 * s, 110 * s, 420 * s, 280 * s], fill=(250, 170, 60), outline=(255, 255, 255), width=int(14 * s))
    img.save(path)


def mcpb(*args: str) -> subprocess.CompletedProcess:
    exe = NODE_BIN / "mcpb"
    if not exe.exists():
        raise SystemExit(f"{exe} is missing: run bash scripts/test.sh (it installs the Node tools from scripts/node/)")
    env = {**os.environ, "PATH": f"{NODE_BIN}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run([str(exe), *args], capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise SystemExit(f"mcpb {' '.join(args)} failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc


def preset_choices() -> str:
    """The preset setting's help, from ``rea2seg.presets`` (MCPB has no enum: the choices are listed in words)."""
    sys.path.insert(0, str(REPO_ROOT))
    from rea2seg.presets import PRESETS
    return "One of: " + "; ".join(f"{p.name}: {p.description}" for p in PRESETS.values()) + "."


def stage(version: str) -> Path:
    """The bundle's folder as it will be packed (under the git-ignored cache)."""
    shutil.rmtree(STAGE, ignore_errors=True)
    shutil.copytree(SOURCE, STAGE)
    manifest = json.loads((STAGE / "manifest.json").read_text())
    manifest["version"] = version
    manifest["user_config"]["preset"]["description"] = preset_choices()
    (STAGE / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    wheels = STAGE / "wheels"
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "--disable-pip-version-check", "-w", str(wheels), str(REPO_ROOT)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"building the wheel failed:\n{proc.stderr[-3000:]}")
    wheel = next(wheels.glob(f"rea2seg-{version}-*.whl"))
    bundle_project = (STAGE / "pyproject.toml").read_text()
    bundle_project = re.sub(r'(?m)^version = ".*"$', f'version = "{version}"', bundle_project)
    bundle_project = re.sub(r'wheels/rea2seg-[^"]+\.whl', f"wheels/{wheel.name}", bundle_project)
    (STAGE / "pyproject.toml").write_text(bundle_project)
    draw_icon(STAGE / "icon.png")
    for leftover in STAGE.rglob("__pycache__"):
        shutil.rmtree(leftover)
    return STAGE


def build(out_dir: Path = DIST) -> Path:
    version = project_version()
    folder = stage(version)
    mcpb("validate", str(folder / "manifest.json"))
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"rea2seg-{version}.mcpb"
    target.unlink(missing_ok=True)
    mcpb("pack", str(folder), str(target))
    return target


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(DIST), help="folder for the .mcpb (default: dist/)")
    print(build(Path(ap.parse_args(argv).out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
