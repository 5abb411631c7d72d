"""Model loading through the same code a user's checkpoints take (tiny random-weight models built in fixtures)."""
from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from rea2seg import errors
from rea2seg.models.device import resolve_device, resolve_dtype
from rea2seg.models.download import download_sam
from rea2seg.models.sam import SAM_ARCHS, kind_from_name, kind_from_state, load_sam
from rea2seg.models.vlm import load_vlm, resolve_vlm_dir
from rea2seg.testing import TEST_SAM_ARCHS, build_tiny_sam


def test_local_dir_and_same_object(tiny_paths):
    vlm_dir, _ = tiny_paths
    a = load_vlm(str(vlm_dir), device="cpu")
    b = load_vlm(Path(vlm_dir), device="cpu")
    assert a is b, "discovery and scoring must share one VLM object"
    assert a.family == "qwen2_5_vl" and a.dtype == torch.float32
    assert a.model.config.get_text_config()._attn_implementation == "rea2seg_sdpa_rows"


def test_hub_id_from_models_folder(tiny_paths, tmp_path, monkeypatch):
    vlm_dir, _ = tiny_paths
    monkeypatch.setenv("REA2SEG_MODELS_DIR", str(tmp_path))
    shutil.copytree(vlm_dir, tmp_path / "LLM" / "Tiny-VL")
    assert resolve_vlm_dir("someorg/Tiny-VL") == tmp_path / "LLM" / "Tiny-VL"
    vlm = load_vlm("someorg/Tiny-VL", device="cpu")
    assert vlm.source == "someorg/Tiny-VL"


def test_hub_id_from_hf_cache(tiny_paths, tmp_path, monkeypatch):
    """A hub id resolves through huggingface_hub's own cache layout (models--org--name/snapshots/<rev>)."""
    vlm_dir, _ = tiny_paths
    cache = tmp_path / "hub"
    repo = cache / "models--someorg--cached-vl"
    snap = repo / "snapshots" / ("a" * 40)
    shutil.copytree(vlm_dir, snap)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("REA2SEG_MODELS_DIR", str(tmp_path / "empty"))
    import huggingface_hub.constants as c
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))
    assert Path(resolve_vlm_dir("someorg/cached-vl")).resolve() == snap.resolve()


def test_missing_vlm_names_path_and_command(tmp_path, monkeypatch):
    monkeypatch.setenv("REA2SEG_MODELS_DIR", str(tmp_path))
    with pytest.raises(errors.ModelNotFoundError) as e:
        load_vlm("Qwen/Qwen2.5-VL-7B-Instruct", device="cpu")
    msg = str(e.value)
    assert str(tmp_path / "LLM" / "Qwen2.5-VL-7B-Instruct") in msg
    assert "rea2seg models download Qwen/Qwen2.5-VL-7B-Instruct" in msg


def test_missing_sam_names_path_and_command(tmp_path, monkeypatch):
    monkeypatch.setenv("REA2SEG_MODELS_DIR", str(tmp_path))
    with pytest.raises(errors.ModelNotFoundError) as e:
        load_sam("vit_h")
    assert str(tmp_path / "sams" / "sam_vit_h_4b8939.pth") in str(e.value)
    assert "rea2seg models download vit_h" in str(e.value)


def test_vlm_dir_without_processor(tiny_paths, tmp_path):
    vlm_dir, _ = tiny_paths
    broken = tmp_path / "no-processor"
    shutil.copytree(vlm_dir, broken)
    (broken / "preprocessor_config.json").unlink()
    with pytest.raises(errors.CheckpointError, match="processor"):
        load_vlm(str(broken), device="cpu")


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_sam_formats_round_trip(tmp_path, suffix):
    path = build_tiny_sam(tmp_path / f"sam_tiny{suffix}", seed=3)
    # a .safetensors file carries its architecture; a .pth of a non-published size needs it given
    sam = load_sam(path) if suffix == ".safetensors" else load_sam(path, arch=TEST_SAM_ARCHS["tiny"])
    assert sam.kind == "custom"
    ref = build_tiny_sam(tmp_path / "ref.safetensors", seed=3)
    from safetensors.torch import load_file
    state = load_file(str(ref))
    for k, v in sam.sam.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_sam_kind_from_name_state_and_wrong_kind(tmp_path):
    path = build_tiny_sam(tmp_path / "weights.safetensors")  # nothing in the name: the metadata tells
    assert load_sam(path).kind == "custom"
    assert kind_from_name(Path("sam_vit_b_01ec64.pth")) == "vit_b"
    assert kind_from_state({"image_encoder.patch_embed.proj.weight": torch.zeros(1024, 3, 16, 16)}) == "vit_l"
    with pytest.raises(errors.CheckpointError, match="does not fit kind 'vit_b'"):
        load_sam(path, kind="vit_b")
    pth = build_tiny_sam(tmp_path / "weights.pth")  # no metadata in a pickle, no kind in the name or weights
    with pytest.raises(errors.CheckpointError, match="cannot tell which SAM"):
        load_sam(pth)


def test_published_architectures_match_segment_anything():
    """SamArch builds Meta's three published models exactly as segment_anything's own registry does."""
    from segment_anything import sam_model_registry

    for kind, arch in SAM_ARCHS.items():
        with torch.device("meta"):  # shapes only: no memory, no init time
            ours = {k: tuple(v.shape) for k, v in arch.build().state_dict().items()}
            theirs = {k: tuple(v.shape) for k, v in sam_model_registry[kind]().state_dict().items()}
        assert ours == theirs, kind


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {_Evil.marker}",))


def test_pickled_code_checkpoint_is_refused(tmp_path):
    _Evil.marker = tmp_path / "pwned"
    path = tmp_path / "sam_vit_b_evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"image_encoder.x": _Evil()}, f)
    with pytest.raises(errors.CheckpointError, match="pickled code"):
        load_sam(path)
    assert not _Evil.marker.exists(), "the pickle's code ran"


def test_truncated_checkpoint_is_detected(tmp_path):
    path = build_tiny_sam(tmp_path / "sam_tiny.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(errors.CheckpointError, match="truncated"):
        load_sam(path)
    pth = build_tiny_sam(tmp_path / "sam_tiny.pth")
    pth.write_bytes(pth.read_bytes()[:1000])
    with pytest.raises(errors.CheckpointError):
        load_sam(pth)


def test_offline_download_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(errors.ModelNotFoundError, match="rea2seg models download vit_l"):
        download_sam("vit_l", tmp_path)


def test_device_and_dtype():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_dtype(None, torch.device("cpu")) == torch.float32
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(errors.InputError):
        resolve_dtype("int3", torch.device("cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(errors.InputError, match="CUDA is not available"):
            resolve_device("cuda")


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_5"])
def test_families_load_and_run(family_dirs, family):
    vlm = load_vlm(str(family_dirs[family]), device="cpu")
    assert vlm.family == family
    from rea2seg.models.prompting import chat_inputs, to_device
    from PIL import Image
    inputs = chat_inputs(vlm, [[Image.fromarray(np.zeros((64, 96, 3), np.uint8)), "the cup"]])
    with torch.inference_mode():
        out = vlm.model(**to_device(vlm, inputs), logits_to_keep=1)
    assert out.logits.shape[:2] == (1, 1)
