"""What a real checkpoint brings, met before any download: the published processor files (the torchvision image
processors transformers loads for them, the published pixel limits), the pixel budget that must hold for every
family, which families discovery can read, loading straight onto the device, and what the presets say they need.

The processor files are the published ones (``rea2seg.testing.published``); the weights are tiny and random (the
processor is what these tests are about)."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rea2seg import errors
from rea2seg.models.prompting import chat_inputs
from rea2seg.models.vlm import budget_kwargs, load_vlm
from rea2seg.testing import FAMILIES, build_tiny_tokenizer, published
from rea2seg.testing.models import PROCESSOR_FILES, QWEN35_CHAT_TEMPLATE

BUDGET = 1024 * 28 * 28  # the pipeline's default (DiscoveryConfig.vlm_max_pixels)
PHOTO = Image.new("RGB", (4000, 3000), (120, 90, 60))  # a 12 MP phone photo
PATCH = {"qwen2_vl": 14, "qwen2_5_vl": 14, "qwen3_vl": 16, "qwen3_5": 16}


def _processor_dir(root: Path, family: str) -> Path:
    """A directory holding what the published checkpoint's processor is loaded from: its preprocessor (and video
    preprocessor) config, a tokenizer and the chat template (no weights: AutoProcessor does not read them)."""
    d = root / family
    build_tiny_tokenizer().save_pretrained(d)
    for name, content in PROCESSOR_FILES[family].items():
        (d / name).write_text(json.dumps(content))
    (d / "chat_template.json").write_text(json.dumps({"chat_template": published.QWEN2_5_VL_CHAT_TEMPLATE}))
    return d


@pytest.fixture(scope="module")
def processor_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("published-processors")
    return {f: _processor_dir(root, f) for f in FAMILIES}


def _image_tokens(processor, image, **kwargs) -> tuple[int, list[int]]:
    text = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text",
                                          "text": "the cup"}]}], tokenize=False, add_generation_prompt=True)
    out = processor(text=[text], images=[image], return_tensors="pt", **kwargs)
    n = int((out["input_ids"] == processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")).sum())
    return n, [int(v) for v in out["image_grid_thw"][0]]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("backend", ["torchvision", "pil"])
def test_photo_stays_within_budget_per_family(processor_dirs, family, backend):
    """AutoProcessor on the published files loads transformers 5's processor, whose limits live in
    ``size["longest_edge"]``; the budget must hold there (the old code set a ``max_pixels`` attribute these classes
    no longer read: Qwen2.5-VL turned a 4000x3000 photo into 15,301 image tokens)."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(processor_dirs[family], backend=backend) if backend == "torchvision" \
        else AutoProcessor.from_pretrained(processor_dirs[family], use_fast=False)
    ip = processor.image_processor
    assert type(ip).__name__ == ("Qwen2VLImageProcessor" if backend == "torchvision" else "Qwen2VLImageProcessorPil")
    assert not hasattr(ip, "max_pixels"), "transformers 5 keeps the limit in size, not in a max_pixels attribute"
    n, (t, gh, gw) = _image_tokens(processor, PHOTO, **budget_kwargs(ip, BUDGET))
    patch = PATCH[family]
    assert n == t * gh * gw // 4
    assert gh * gw * patch * patch <= BUDGET, "the encoder's input is within the budget"
    assert n <= BUDGET // (2 * patch) ** 2 and n >= 0.8 * BUDGET // (2 * patch) ** 2
    # without a budget the published limit (12.8 / 16.8 MP) lets the photo through almost whole
    unlimited = ip.get_number_of_image_patches(3000, 4000) // 4  # the processor's own count, no 15k-token tensors
    assert unlimited > 10 * n and budget_kwargs(ip, None) == {}
    if family == "qwen2_5_vl":
        assert unlimited == 15301


def test_budget_never_raises_the_checkpoint_limit(processor_dirs):
    from transformers import AutoProcessor

    ip = AutoProcessor.from_pretrained(processor_dirs["qwen3_vl"]).image_processor
    assert budget_kwargs(ip, 10 ** 9) == {"size": {"shortest_edge": 65536, "longest_edge": 16777216}}
    assert budget_kwargs(ip, 40000) == {"size": {"shortest_edge": 40000, "longest_edge": 40000}}
    assert budget_kwargs(ip, None) == {}


def _internvl_processor(root: Path, backend: str):
    """InternVL3-8B-hf's published processor files with a tokenizer carrying its image tokens."""
    from transformers import AutoProcessor

    from tiny_internvl import build_tiny_internvl

    d = build_tiny_internvl(root / "internvl")
    (d / "preprocessor_config.json").write_text(json.dumps(published.INTERNVL3_8B_HF_PREPROCESSOR))
    (d / "processor_config.json").write_text(json.dumps(published.INTERNVL3_8B_HF_PROCESSOR))
    kw = {"backend": "torchvision"} if backend == "torchvision" else {"use_fast": False}
    return AutoProcessor.from_pretrained(d, **kw)


@pytest.mark.parametrize("backend", ["torchvision", "pil"])
def test_internvl_tiles_stay_within_budget(tmp_path, backend):
    """InternVL3-hf tiles the image into up to 12 tiles of 448x448 plus a thumbnail, 256 tokens each; the budget caps
    the tile count so tiles + thumbnail fit."""
    processor = _internvl_processor(tmp_path, backend)
    ip = processor.image_processor
    assert type(ip).__name__ == ("GotOcr2ImageProcessor" if backend == "torchvision" else "GotOcr2ImageProcessorPil")
    tok = processor.tokenizer
    text = "<|im_start|>user\n<IMG_CONTEXT>\nthe cup<|im_end|>\n<|im_start|>assistant\n"

    def tokens(image, **kw):
        out = processor(text=[text], images=[image], return_tensors="pt", **kw)
        return int((out["input_ids"] == tok.convert_tokens_to_ids("<IMG_CONTEXT>")).sum()), \
            int(out["pixel_values"].shape[0])

    wide = Image.new("RGB", (4000, 1500), (120, 90, 60))
    assert tokens(PHOTO) == (13 * 256, 13), "12 tiles + thumbnail without a budget"
    kw = budget_kwargs(ip, BUDGET)
    assert kw == {"max_patches": 3, "min_patches": 1}
    for image, tiles in ((PHOTO, 1), (wide, 4)):  # 4:3 fits one tile best; 8:3 three tiles + the thumbnail
        n, got = tokens(image, **kw)
        assert got == tiles and got * 448 * 448 <= BUDGET and n == got * 256, (image.size, got)
    assert budget_kwargs(ip, 448 * 448) == {"max_patches": 1, "min_patches": 1}, "one tile is the least"


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_models_carry_the_published_processor(family_dirs, family):
    """The tiny checkpoints hold the published processor files, so they load the torchvision processor a real
    download loads, with the published limits; the engine's budget is what keeps images small."""
    d = family_dirs[family]
    for name, content in PROCESSOR_FILES[family].items():
        assert json.loads((d / name).read_text()) == content
    want = QWEN35_CHAT_TEMPLATE if family == "qwen3_5" else published.QWEN2_5_VL_CHAT_TEMPLATE  # 3.5: thinks by default
    assert json.loads((d / "chat_template.json").read_text())["chat_template"] == want
    vlm = load_vlm(str(d), device="cpu", max_pixels=BUDGET)
    ip = vlm.processor.image_processor
    assert type(ip).__module__.endswith(".image_processing_qwen2_vl"), "torchvision backend, not the PIL one"
    inputs = chat_inputs(vlm, [[PHOTO, "the cup"]])  # the engine's own input builder applies the budget
    _, gh, gw = (int(v) for v in inputs["image_grid_thw"][0])
    assert gh * gw * PATCH[family] ** 2 <= BUDGET
    with torch.inference_mode():  # the model takes what the torchvision processor made
        out = vlm.model(**chat_inputs(vlm, [[PHOTO.resize((200, 150)), "the cup"]]), logits_to_keep=1)
    assert torch.isfinite(out.logits).all()


def test_torchvision_and_pil_processors_agree(family_dirs):
    """The torchvision processor real checkpoints load and the PIL one the tiny models used to carry resize to the
    same grid and nearly the same pixels (different resampling kernels)."""
    from transformers import AutoImageProcessor

    d = family_dirs["qwen2_5_vl"]
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8))
    tv = AutoImageProcessor.from_pretrained(d, backend="torchvision")(img, return_tensors="pt", size={
        "shortest_edge": 3136, "longest_edge": 448 * 448})
    pil = AutoImageProcessor.from_pretrained(d, backend="pil")(img, return_tensors="pt", size={
        "shortest_edge": 3136, "longest_edge": 448 * 448})
    assert tv["image_grid_thw"].tolist() == pil["image_grid_thw"].tolist()
    diff = (tv["pixel_values"] - pil["pixel_values"]).abs()
    assert diff.mean() < 0.05 and torch.corrcoef(torch.stack([tv["pixel_values"].flatten(),
                                                              pil["pixel_values"].flatten()]))[0, 1] > 0.99


def test_budget_is_per_view_and_the_weights_are_shared(family_dirs):
    a = load_vlm(str(family_dirs["qwen2_5_vl"]), device="cpu", max_pixels=BUDGET)
    b = load_vlm(str(family_dirs["qwen2_5_vl"]), device="cpu", max_pixels=224 * 224)
    assert a is load_vlm(str(family_dirs["qwen2_5_vl"]), device="cpu", max_pixels=BUDGET)
    assert a.model is b.model and a.processor is b.processor and a.lock is b.lock
    na = int((chat_inputs(a, [[PHOTO, "q"]])["input_ids"] == a.image_token_id).sum())
    nb = int((chat_inputs(b, [[PHOTO, "q"]])["input_ids"] == b.image_token_id).sum())
    assert nb <= 224 * 224 // 28 ** 2 < na <= BUDGET // 28 ** 2


# ---- discovery needs a known token layout ------------------------------------------------------------------------

def test_discovery_refuses_internvl_at_load_before_reading_weights(tiny_paths, tmp_path):
    """A discovery VLM whose image tokens are not a known grid is refused with the families that work, before its
    weights are read (here they are garbage: reading them would raise a different error)."""
    from rea2seg import Rea2Seg
    from tiny_internvl import build_tiny_internvl

    d = build_tiny_internvl(tmp_path / "internvl")
    (d / "model.safetensors").write_bytes(b"not weights")
    with pytest.raises(errors.ModelError) as e:
        Rea2Seg.from_pretrained(str(d), str(tiny_paths[1]), device="cpu")
    msg = str(e.value)
    assert "'internvl'" in msg and "discovery" in msg and "--scorer" in msg
    for family in ("Qwen2-VL", "Qwen2.5-VL", "Qwen3-VL"):
        assert family in msg


def test_discovery_refuses_internvl_at_first_discover(tiny_paths, tmp_path, image):
    """Discovery called directly with an InternVL VLM: a clear error, never a heat map from tile tokens reshaped into
    a square (the old fallback) nor a bare RuntimeError."""
    from rea2seg.discovery import attention_grid, discover_candidates
    from rea2seg.models.sam import load_sam
    from tiny_internvl import build_tiny_internvl

    vlm = load_vlm(str(build_tiny_internvl(tmp_path / "internvl")), device="cpu")
    one_tile = Image.fromarray(image[:64, :64])  # 1 tile = 4 tokens: the old code made a 2x2 "grid" of them
    with pytest.raises(errors.ModelError, match="cannot be the discovery VLM"):
        attention_grid(vlm, one_tile, "the cup", [1])
    with pytest.raises(errors.ModelError, match="Qwen2.5-VL"):
        discover_candidates(vlm, load_sam(tiny_paths[1], device="cpu"), image, "the cup")


# ---- loading ----------------------------------------------------------------------------------------------------

def test_weights_are_placed_on_the_device_as_they_load(tiny_paths, monkeypatch, tmp_path):
    """``from_pretrained`` gets ``device_map`` (accelerate places each tensor on the device as it is read) instead
    of building the model in host memory and moving it."""
    import transformers

    seen = {}
    real = transformers.AutoModelForImageTextToText.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        seen.update(kwargs)
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForImageTextToText, "from_pretrained", classmethod(spy))
    d = shutil.copytree(tiny_paths[0], tmp_path / "fresh")  # not in the shared registry yet
    vlm = load_vlm(str(d), device="cpu")
    assert seen.get("device_map") == torch.device("cpu")
    assert {p.device.type for p in vlm.model.parameters()} == {"cpu"}


def test_sam_loads_without_random_init_and_equals_the_checkpoint(tmp_path):
    from safetensors.torch import load_file

    from rea2seg.models.sam import load_sam
    from rea2seg.testing import build_tiny_sam

    path = build_tiny_sam(tmp_path / "sam.safetensors", seed=5)
    sam = load_sam(path, device="cpu")
    state = load_file(str(path))
    for k, v in sam.sam.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert sam.sam.pixel_mean.flatten().tolist() == pytest.approx([123.675, 116.28, 103.53])
    assert sam.sam.pixel_std.flatten().tolist() == pytest.approx([58.395, 57.12, 57.375])
    assert not any(t.is_meta for t in [*sam.sam.parameters(), *sam.sam.buffers()])


# ---- presets say what they need -------------------------------------------------------------------------------

def _stated_gb(text: str) -> float:
    return float(re.search(r"about (\d+(?:\.\d+)?) GB of weights", text).group(1))


def test_preset_memory_statements_add_up():
    """The weights each preset puts on the GPU, from the published architectures built on the meta device: the VLM in
    bf16 and SAM in fp32 (SAM runs in fp32: ViT-H alone is 2.56 GB, which the old text left out)."""
    import transformers as tf

    from rea2seg.models.sam import SAM_ARCHS
    from rea2seg.presets import get_preset

    c = published.QWEN2_5_VL_7B_CONFIG
    with torch.device("meta"):
        vlm = tf.Qwen2_5_VLForConditionalGeneration(tf.Qwen2_5_VLConfig(text_config=c["text"],
                                                                       vision_config=c["vision"], **c["tokens"]))
        sam_h = SAM_ARCHS["vit_h"].build()
    vlm_gb = sum(p.numel() for p in vlm.parameters()) * 2 / 1e9
    sam_gb = sum(p.numel() for p in sam_h.parameters()) * 4 / 1e9
    assert vlm_gb == pytest.approx(16.58, abs=0.01) and sam_gb == pytest.approx(2.56, abs=0.01)
    text = get_preset("default").description
    assert abs(_stated_gb(text) - (vlm_gb + sam_gb)) < 0.5, text
    assert "16.6 GB" in text and "2.6 GB" in text
