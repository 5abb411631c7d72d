"""Shared fixtures: tiny random-weight models built offline (never a network call), images, a tiny pipeline.

The tiny models prove plumbing, shapes and logic only: nothing a test asserts about their output is a quality claim.
"""
from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

# The real-ComfyUI fixtures (one server per ComfyUI version, shared by tests/comfyui/*) as a plugin: a second
# conftest.py would collide with this one's module name.
sys.path.insert(0, str(Path(__file__).resolve().parent / "comfyui"))
pytest_plugins = ["comfy_fixtures"]

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One build per version of the tiny builder, shared with subprocesses (CLI, MCP server, ComfyUI) through the env.
_builders = sorted((Path(__file__).resolve().parents[1] / "rea2seg" / "testing").glob("*.py"))
_tag = hashlib.sha1(b"".join(p.read_bytes() for p in _builders)).hexdigest()[:10]
os.environ.setdefault("REA2SEG_TINY_DIR", str(Path(tempfile.gettempdir()) / f"rea2seg-tiny-{_tag}"))


@pytest.fixture(scope="session")
def tiny_dir() -> Path:
    from rea2seg.testing import ensure_tiny_models

    ensure_tiny_models(os.environ["REA2SEG_TINY_DIR"])
    return Path(os.environ["REA2SEG_TINY_DIR"])


@pytest.fixture(scope="session")
def tiny_paths(tiny_dir) -> tuple[Path, Path]:
    from rea2seg.testing import ensure_tiny_models

    return ensure_tiny_models(tiny_dir)


@pytest.fixture(scope="session")
def pipeline(tiny_dir):
    from rea2seg import Rea2Seg

    return Rea2Seg.from_preset("tiny-random", device="cpu")


@pytest.fixture(scope="session")
def family_dirs(tmp_path_factory) -> dict[str, Path]:
    """Tiny Qwen2-VL, Qwen2.5-VL and Qwen3-VL checkpoints."""
    from rea2seg.testing import FAMILIES, build_tiny_vlm

    root = tmp_path_factory.mktemp("families")
    return {f: build_tiny_vlm(root / f, f) for f in FAMILIES}


def make_image(h: int = 240, w: int = 320, seed: int = 0) -> np.ndarray:
    """A synthetic RGB scene: a smooth background with a few solid shapes (uint8)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), np.full_like(xx, 90)], -1).astype(np.uint8)
    for _ in range(3):
        cy, cx = rng.integers(h // 5, 4 * h // 5), rng.integers(w // 5, 4 * w // 5)
        r = int(rng.integers(min(h, w) // 10, min(h, w) // 5))
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.integers(0, 255, 3)
    return img


@pytest.fixture
def image() -> np.ndarray:
    return make_image()


@pytest.fixture(scope="session")
def tiny_segmenter_dirs(tiny_dir) -> dict[str, Path]:
    """The tiny SAM 2.1 and SAM 3 checkpoints (hub layout) the tiny-random-sam2/-sam3 presets use."""
    from rea2seg.testing import ensure_tiny_segmenter

    return {k: ensure_tiny_segmenter(tiny_dir, k) for k in ("sam2", "sam3")}


@pytest.fixture(scope="session")
def segmenters(tiny_segmenter_dirs) -> dict:
    """Loaded tiny SAM 2.1 and SAM 3 segmenters (CPU)."""
    from rea2seg.models.segmenter import load_segmenter

    return {k: load_segmenter(str(p), device="cpu") for k, p in tiny_segmenter_dirs.items()}


@pytest.fixture(scope="session")
def pipelines(tiny_segmenter_dirs) -> dict:
    """The tiny-random-sam2 and tiny-random-sam3 presets, loaded once."""
    from rea2seg import Rea2Seg

    return {k: Rea2Seg.from_preset(f"tiny-random-{k}", device="cpu") for k in ("sam2", "sam3")}


# ---- the trained testbed's quick build, started in the background as soon as its tests are collected ------------
# It trains for minutes on one thread per process; started at collection, at the lowest CPU priority (timing-sensitive
# tests come first), it overlaps the rest of the suite instead of adding to it. tests/test_testbed.py waits for it
# (`testbed_build`), then evaluates the cached build; when it was not started (that file not selected, or
# REA2SEG_TESTBED_FOREGROUND=1) the tests build in the foreground.

def pytest_collection_finish(session):
    import subprocess

    wanted = any(item.nodeid.startswith("tests/test_testbed.py") and item.get_closest_marker("slow")
                 for item in session.items)
    if not wanted or os.environ.get("REA2SEG_TESTBED_FOREGROUND") == "1":
        return
    root = Path(__file__).resolve().parents[1]
    home = Path(tempfile.mkdtemp(prefix="rea2seg-testbed-"))
    env = dict(os.environ, REA2SEG_TESTBED_DIR=str(home), PYTHONPATH=str(root))
    log = open(home / "build.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "testbed", "build", "--quick"], cwd=root, env=env, stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=lambda: os.nice(19))
    session.config._testbed_build = (home, proc)


def pytest_unconfigure(config):
    import shutil
    import signal

    build = getattr(config, "_testbed_build", None)
    if build:
        if build[1].poll() is None:
            os.killpg(build[1].pid, signal.SIGTERM)  # the build's step processes too
            build[1].wait(timeout=30)
        shutil.rmtree(build[0], ignore_errors=True)


@pytest.fixture(scope="session")
def testbed_build(request, tmp_path_factory) -> Path:
    """The folder holding the quick build (``REA2SEG_TESTBED_DIR``), finished; built in the background since
    collection when possible."""
    build = getattr(request.config, "_testbed_build", None)
    if build is None:
        return tmp_path_factory.mktemp("testbed")
    home, proc = build
    proc.wait(timeout=1800)
    return home
