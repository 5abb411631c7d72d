"""Session fixtures for the real-ComfyUI tests (a pytest plugin loaded by ``tests/conftest.py``): one ComfyUI server per
version for the whole session, shared by ``test_comfyui.py`` (HTTP and websocket) and ``test_browser.py`` (the web
frontend), on a version matrix: 0.3.75 always, 0.33.0 where ``../shared/vendor`` has its tarball."""
from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from comfyui_harness import REPO_ROOT, TEST_IMAGE, TIMINGS, ComfyServer

# The tiny models appear in the user's model folders under names of a user's own choosing, so that the tiny-random
# preset (which builds its own copies elsewhere) can be told apart from them.
USER_VLM, USER_SAM = "user-tiny-qwen2_5_vl", "user_sam_tiny.safetensors"
# SAM 2.1 / SAM 3 checkpoint directories in models/sam2, models/sam3 (LoadModels lists them as "<folder>/<dir>")
USER_SAM2, USER_SAM3 = "user-tiny-sam2.1", "user-tiny-sam3"


def _setup_module():
    spec = importlib.util.spec_from_file_location("setup_comfyui", REPO_ROOT / "scripts" / "setup_comfyui.py")
    setup = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = setup  # dataclasses look their module up there
    spec.loader.exec_module(setup)
    return setup


SETUP = _setup_module()
VERSIONS = SETUP.available_versions()


def pytest_report_header(config):
    missing = [v for v in SETUP.VERSIONS if v not in VERSIONS]
    return [f"ComfyUI versions under test: {', '.join(VERSIONS)}"
            + (f" ({', '.join(missing)} absent: no ../shared/vendor tarball)" if missing else "")]


@pytest.fixture(scope="session", params=VERSIONS, ids=[f"comfyui-{v}" for v in VERSIONS])
def comfy_version(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def comfy_install(comfy_version) -> tuple[Path, Path]:
    """(ComfyUI directory, its extra packages folder), fetched and extracted by scripts/setup_comfyui.py (cached)."""
    return SETUP.ensure_comfyui(comfy_version)


@pytest.fixture(scope="session")
def comfy_dir(comfy_install) -> Path:
    return comfy_install[0]


@pytest.fixture(scope="session")
def comfy_base(tmp_path_factory, comfy_version, comfy_dir) -> Path:
    """ComfyUI's base directory: custom_nodes/rea2seg -> this repo, models/{LLM,sams,sam2,sam3} holding the tiny models
    under a user's names, input/ with ComfyUI's own example.png (what the templates load) and a small non-square
    image."""
    from rea2seg.testing import ensure_tiny_models, ensure_tiny_segmenter, tiny_models_dir

    base = tmp_path_factory.mktemp(f"comfyui-{comfy_version}-base")
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / "rea2seg").symlink_to(REPO_ROOT, target_is_directory=True)
    t = time.monotonic()
    vlm_dir, sam_path = ensure_tiny_models(tiny_models_dir())  # the engine's shared tiny cache, built once
    sam2_dir, sam3_dir = (ensure_tiny_segmenter(tiny_models_dir(), k) for k in ("sam2", "sam3"))
    TIMINGS["tiny models ready"] = time.monotonic() - t
    for src, folder, name in ((vlm_dir, "LLM", USER_VLM), (sam_path, "sams", USER_SAM), (sam2_dir, "sam2", USER_SAM2),
                              (sam3_dir, "sam3", USER_SAM3)):
        (base / "models" / folder).mkdir(parents=True)
        (base / "models" / folder / name).symlink_to(src)  # linked into ComfyUI's folders, as a user copies
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
def comfy(comfy_version, comfy_install, comfy_base):
    comfy_dir, packages = comfy_install
    server = ComfyServer(comfy_dir, comfy_base, packages)
    server.start(ready_node="Rea2Seg_LoadModels")
    server.version = comfy_version
    TIMINGS[f"{comfy_version}: ComfyUI start to /object_info"] = server.start_seconds
    yield server
    server.stop()


@pytest.fixture(scope="session")
def object_info(comfy) -> dict:
    status, info = comfy.get("/object_info", timeout=60)
    assert status == 200
    return info


def pytest_terminal_summary(terminalreporter):
    """What the session measured: printed at the end and kept in .cache/comfyui/timings.json."""
    if not TIMINGS:
        return
    out = REPO_ROOT / ".cache" / "comfyui" / "timings.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({k: round(v, 2) for k, v in TIMINGS.items()}, indent=1))
    terminalreporter.write_sep("-", "ComfyUI timings (tiny random-weight models)")
    for name, seconds in TIMINGS.items():
        terminalreporter.write_line(f"{name}: {seconds:.2f} s")
