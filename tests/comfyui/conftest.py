"""Fixtures for the real-ComfyUI tests: one ComfyUI 0.3.75 server per session, with this repository linked into its
``custom_nodes/`` and tiny random-weight models in its model folders (random weights: plumbing only)."""
from __future__ import annotations

import importlib.util
import json
import shutil
import time
from pathlib import Path

import pytest

from comfyui_harness import REPO_ROOT, TEST_IMAGE, TIMINGS, ComfyServer


def _setup_module():
    spec = importlib.util.spec_from_file_location("setup_comfyui", REPO_ROOT / "scripts" / "setup_comfyui.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def comfy_dir() -> Path:
    return _setup_module().ensure_comfyui()


@pytest.fixture(scope="session")
def comfy_base(tmp_path_factory, comfy_dir) -> Path:
    """ComfyUI's base directory: custom_nodes/rea2seg -> this repo, models/{LLM,sams} with tiny models, input/ with
    ComfyUI's own example.png (what the templates load) and a small non-square image."""
    import numpy as np
    from PIL import Image

    from rea2seg.presets import tiny_models_dir
    from rea2seg.tiny import ensure_tiny_models

    base = tmp_path_factory.mktemp("comfyui-base")
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / "rea2seg").symlink_to(REPO_ROOT, target_is_directory=True)
    t = time.monotonic()
    vlm_dir, sam_path = ensure_tiny_models(tiny_models_dir())  # the engine's shared tiny cache, built once
    TIMINGS["tiny models ready"] = time.monotonic() - t
    for src, folder in ((vlm_dir, "LLM"), (sam_path, "sams")):  # linked into ComfyUI's folders, as a user copies
        (base / "models" / folder).mkdir(parents=True)
        (base / "models" / folder / src.name).symlink_to(src)
    (base / "input").mkdir()
    shutil.copy(comfy_dir / "input" / "example.png", base / "input" / "example.png")
    rng = np.random.default_rng(0)
    img = np.zeros((64, 96, 3), np.uint8)
    img[:] = (90, 140, 200)
    img[20:50, 30:70] = (220, 60, 40)
    img += rng.integers(0, 20, img.shape, dtype=np.uint8)
    Image.fromarray(img).save(base / "input" / TEST_IMAGE)
    return base


@pytest.fixture(scope="session")
def comfy(comfy_dir, comfy_base):
    server = ComfyServer(comfy_dir, comfy_base)
    server.start(ready_node="Rea2Seg_LoadModels")
    TIMINGS["ComfyUI start to /object_info"] = server.start_seconds
    yield server
    server.stop()


@pytest.fixture(scope="session")
def object_info(comfy) -> dict:
    status, info = comfy.get("/object_info", timeout=60)
    assert status == 200
    return info


def pytest_terminal_summary(terminalreporter):
    if TIMINGS:
        terminalreporter.section("ComfyUI timings (2-core CPU, tiny random-weight models)")
        for name, seconds in TIMINGS.items():
            terminalreporter.write_line(f"{name}: {seconds:.2f} s")
        out = REPO_ROOT / ".cache" / "comfyui" / "timings.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({k: round(v, 2) for k, v in TIMINGS.items()}, indent=1))
