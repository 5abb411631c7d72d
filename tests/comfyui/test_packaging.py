"""How ComfyUI and ComfyUI-Manager see the repository, without a server: the root ``__init__.py`` as ComfyUI loads it,
the same file when a test runner imports the checkout as a package, and the install metadata."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib

from comfyui_harness import REPO_ROOT

NODE_IDS = ["Rea2Seg_LoadModels", "Rea2Seg_DiscoverCandidates", "Rea2Seg_ScoreCandidates", "Rea2Seg_SelectMask",
            "Rea2Seg_CandidateMasks", "Rea2Seg_ReasoningSegment"]


def run_python(code: str, cwd) -> str:
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip()


def test_root_init_loads_the_way_comfyui_loads_it(tmp_path):
    """ComfyUI 0.3.75 (nodes.py:load_custom_node) imports custom_nodes/<folder>/__init__.py with
    spec_from_file_location under the folder's full path as module name; the pack must export its V1 mappings."""
    pack = tmp_path / "custom_nodes" / "rea2seg"
    pack.parent.mkdir()
    pack.symlink_to(REPO_ROOT, target_is_directory=True)
    code = f"""
import importlib.util, json, sys
path = {str(pack)!r}
name = path.replace(".", "_x_")
spec = importlib.util.spec_from_file_location(name, path + "/__init__.py")
module = importlib.util.module_from_spec(spec)
sys.modules[name] = module
spec.loader.exec_module(module)
print(json.dumps({{"ids": list(module.NODE_CLASS_MAPPINGS), "names": module.NODE_DISPLAY_NAME_MAPPINGS,
                  "v3": hasattr(module, "comfy_entrypoint")}}))
"""
    got = json.loads(run_python(code, tmp_path))
    assert got["ids"] == NODE_IDS and set(got["names"]) == set(NODE_IDS) and not got["v3"]


def test_checkout_named_like_the_engine_still_imports_the_engine(tmp_path):
    """pytest imports a rootdir holding __init__.py as a package named after the folder; a checkout named "rea2seg"
    must then still give the engine package for ``import rea2seg``, not the ComfyUI entry point."""
    checkout = tmp_path / "rea2seg"
    checkout.mkdir()
    (checkout / "__init__.py").write_text((REPO_ROOT / "__init__.py").read_text())
    (checkout / "rea2seg").symlink_to(REPO_ROOT / "rea2seg", target_is_directory=True)
    code = f"""
import sys
sys.path.insert(0, {str(tmp_path)!r})
import rea2seg
from rea2seg.errors import InputError
print(rea2seg.__file__)
"""
    assert run_python(code, tmp_path) == str(checkout / "rea2seg" / "__init__.py")


def test_install_metadata_for_manager_and_registry():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    deps = [d for d in project["project"]["dependencies"]
            if re.split(r"[<>=!~ \[]", d)[0] not in ("torch", "torchvision")]
    lines = [line.strip() for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines == deps  # what ComfyUI-Manager installs == what pip install -e . installs, ComfyUI's torch aside
    comfy = project["tool"]["comfy"]
    assert comfy["PublisherId"] and comfy["DisplayName"] and "workflows" in comfy["includes"]
    for path in (REPO_ROOT / "workflows").glob("*.json"):  # templates name the pack so the Manager can offer it
        ours = [n for n in json.loads(path.read_text())["nodes"] if n["type"].startswith("Rea2Seg_")]
        assert ours and all(n["properties"]["cnr_id"] == project["project"]["name"] for n in ours)
