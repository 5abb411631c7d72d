"""Where Load Models puts what it downloads, without a network: ComfyUI's ``folder_paths`` is a stand-in holding one
models folder, and the engine's downloaders are replaced by recorders. The real server tests (test_comfyui.py) check
the messages and the offline path; this checks the first-run path with a network: the files land in ComfyUI's own
models/LLM and models/sams, where the node looks for them next time."""
from __future__ import annotations

import os
import sys
import types

import pytest


@pytest.fixture
def comfy_models(tmp_path, monkeypatch):
    registered: dict[str, list[str]] = {}
    fp = types.ModuleType("folder_paths")
    fp.models_dir = str(tmp_path / "models")
    fp.folder_names_and_paths = registered
    fp.get_folder_paths = lambda name: registered[name]
    fp.add_model_folder_path = lambda name, path: registered.setdefault(name, []).append(path)

    def listing(name):
        out = []
        for root in registered.get(name, []):
            for d, _, files in os.walk(root):
                out += [os.path.relpath(os.path.join(d, f), root) for f in files]
        return out
    fp.get_filename_list = listing
    monkeypatch.setitem(sys.modules, "folder_paths", fp)
    return tmp_path / "models"


def test_first_run_downloads_into_comfyuis_model_folders(comfy_models, monkeypatch):
    import rea2seg.models.download as download
    import rea2seg.models.vlm as vlm
    from rea2seg_nodes import model_nodes

    calls = []

    def fake_vlm(repo_id, dest):
        calls.append(("vlm", repo_id, dest))
        dest.mkdir(parents=True)
        (dest / "config.json").write_text("{}")
        return dest

    def fake_sam(kind, dest_dir, progress=None):
        calls.append(("sam", kind, dest_dir))
        return dest_dir / download.SAM_CHECKPOINTS[kind].filename
    monkeypatch.setattr(vlm, "download_vlm", fake_vlm)
    monkeypatch.setattr(download, "download_sam", fake_sam)

    got = model_nodes._preset_vlm("Qwen/Qwen2.5-VL-3B-Instruct", True, None)
    assert got == comfy_models / "LLM" / "Qwen2.5-VL-3B-Instruct"
    assert model_nodes._preset_sam("vit_b", True, None) == comfy_models / "sams" / "sam_vit_b_01ec64.pth"
    assert calls == [("vlm", "Qwen/Qwen2.5-VL-3B-Instruct", comfy_models / "LLM" / "Qwen2.5-VL-3B-Instruct"),
                     ("sam", "vit_b", comfy_models / "sams")]
    # the next run finds the downloaded folder (and lists it) instead of downloading again
    assert model_nodes._preset_vlm("Qwen/Qwen2.5-VL-3B-Instruct", True, None) == got and len(calls) == 2
    from rea2seg_nodes import comfy_bridge
    assert comfy_bridge.vlm_dirs() == ["Qwen2.5-VL-3B-Instruct"]
