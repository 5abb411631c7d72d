"""SAM 2.1 and SAM 3 through transformers, against each model's own documented single-prompt call.

Random weights cannot segment anything, so these tests prove the plumbing a wrong implementation would break: the
same masks as ``processor(...) -> model(...) -> post_process_masks`` (coordinates scaled per axis on a non-square
image, the same decoder inputs, the same post-processing), batched decoding equal to one prompt per call, a point on a
planted shape landing on that shape in the low-resolution frame, SAM 3's concept head equal to its documented
``post_process_instance_segmentation``, and loading / resolving / refusing checkpoints.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from rea2seg.errors import CheckpointError, InputError, ModelNotFoundError
from rea2seg.models.sam import PromptBatch
from rea2seg.models.segmenter import Segmenter, load_segmenter, resolve_segmenter_dir
from rea2seg.testing.reference import predict_one_by_one

H, W = 180, 300  # non-square: a swapped axis or a square-padding assumption cannot pass


@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    """A planted red rectangle (x 40..120, y 100..160) on a noisy blue background."""
    rng = np.random.default_rng(3)
    img = np.zeros((H, W, 3), np.uint8)
    img[:] = (40, 70, 160)
    img[100:160, 40:120] = (220, 30, 30)
    return np.clip(img.astype(int) + rng.integers(-15, 15, img.shape), 0, 255).astype(np.uint8)


def _reference(seg, image: np.ndarray, points, labels, box=None):
    """The documented single-prompt use: processor(images, points[, box]) -> model(**inputs) -> post_process_masks.
    Returns masks (3, H, W) bool and predicted IoU (3,)."""
    kw = dict(images=Image.fromarray(image), input_points=[[points]], input_labels=[[labels]], return_tensors="pt")
    if box is not None:
        kw["input_boxes"] = [[box]]
    inputs = seg.processor(**kw)
    with torch.inference_mode():
        out = seg.model(**inputs)
    masks = seg.processor.post_process_masks(out.pred_masks, inputs["original_sizes"])[0][0]
    return masks.numpy(), out.iou_scores[0, 0].numpy()


PROMPTS = [  # (points, labels, box)
    ([[80.0, 130.0], [250.0, 40.0]], [1, 0], None),
    ([[299.0, 0.0]], [1], [200.0, 0.0, 300.0, 60.0]),  # a corner: the scale must be per axis
]


@pytest.fixture(scope="module")
def embedded(segmenters, scene) -> dict:
    """Each segmenter's embedding of the scene (computed once for the module, as discovery caches it)."""
    return {k: seg.embed(scene) for k, seg in segmenters.items()}


@pytest.mark.parametrize("backend", ["sam2", "sam3"])
def test_same_masks_as_the_documented_single_prompt_call(segmenters, embedded, scene, backend):
    seg, emb = segmenters[backend], embedded[backend]
    for points, labels, box in PROMPTS:
        want_masks, want_iou = _reference(seg, scene, points, labels, box)
        batch = PromptBatch(np.array([points], np.float32), np.array([labels], np.int64),
                            np.array([box if box else [np.nan] * 4], np.float32))
        low, iou = seg.decode(emb, batch, multimask=True)
        got = seg.upscale(emb, low[0])
        assert got.shape == want_masks.shape == (3, H, W)
        assert np.abs(iou[0].numpy() - want_iou).max() < 1e-4, (points, box)
        assert (got != want_masks).mean() < 1e-4, (points, box)  # float noise at the 0-logit boundary at most


@pytest.mark.parametrize("backend", ["sam2", "sam3"])
def test_batched_decoding_equals_one_prompt_per_call(segmenters, embedded, backend):
    seg, emb = segmenters[backend], embedded[backend]
    rng = np.random.default_rng(0)
    n = 7
    pts = np.stack([rng.uniform(0, W - 1, (n, 2)), rng.uniform(0, H - 1, (n, 2))], -1).astype(np.float32)
    labels = np.ones((n, 2), np.int64)
    labels[::3, 1] = -1  # some prompts have one point (padded), some two
    labels[1::3, 1] = 0
    boxes = np.full((n, 4), np.nan, np.float32)
    boxes[::2] = np.concatenate([pts[::2, 0] - 25, pts[::2, 0] + 30], 1)
    prompts = PromptBatch(pts, labels, boxes)
    low, iou = seg.decode(emb, prompts, multimask=True, chunk=n)
    batched = seg.upscale(emb, low.reshape(-1, *low.shape[-2:])).reshape(n, 3, H, W)
    single, single_iou = predict_one_by_one(seg, emb, prompts)
    assert np.allclose(iou.numpy(), single_iou, atol=1e-5)
    assert (batched != single).mean() < 1e-4


@pytest.mark.parametrize("backend", ["sam2", "sam3"])
def test_a_point_on_a_planted_shape_lands_on_it(segmenters, embedded, backend):
    """The frame discovery ranks and de-duplicates in: the planted shape, placed in the low-resolution frame with
    ``to_low_frame``, covers the point's position there (x * s / W, y * s / H: the image is stretched, not padded),
    and ``upscale`` maps it back onto the shape. The point prompt itself reaches the decoder at the processor's
    coordinates (the reference test above), so this proves a point on the shape is decoded where the shape is. It
    does not prove the random model segments the shape."""
    seg, emb = segmenters[backend], embedded[backend]
    shape = np.zeros((H, W), np.float32)
    shape[100:160, 40:120] = 1.0
    low, _ = seg.decode(emb, PromptBatch(np.array([[[80.0, 130.0]]], np.float32), np.ones((1, 1), np.int64),
                                         np.full((1, 4), np.nan, np.float32)))
    side = low.shape[-1]
    frame = seg.to_low_frame(emb, shape, side)
    assert frame.shape == (side, side)
    x, y = 80.0 * side / W, 130.0 * side / H
    assert frame[int(y), int(x)] > 0.9
    for px, py in ((250.0, 40.0), (80.0, 20.0), (200.0, 130.0)):  # off the shape
        assert frame[int(py * side / H), int(px * side / W)] < 0.1
    back = seg.upscale(emb, torch.as_tensor(frame - 0.5)[None])[0]  # 0.5 level of the placed shape
    iou = (back & (shape > 0)).sum() / (back | (shape > 0)).sum()
    assert iou > 0.95, iou


def test_sam3_concepts_equal_the_documented_text_prompt_call(segmenters, embedded, scene):
    """``segment_concepts`` on a cached embedding (the ViT run once, shared with the tracker) gives the instances of
    ``processor(images, text) -> Sam3Model -> post_process_instance_segmentation``: same scores, same masks; several
    phrases in one batched call equal one call per phrase."""
    from transformers import Sam3Processor

    seg = segmenters["sam3"]
    det, _ = seg.detector()
    proc = Sam3Processor.from_pretrained(seg.path)
    emb = embedded["sam3"]
    phrases = ["red cup", "the spoon on the table"]
    batched = seg.segment_concepts(emb, phrases, threshold=0.0, max_instances=5)
    for phrase, got in zip(phrases, batched):
        inputs = proc(images=Image.fromarray(scene), text=phrase, return_tensors="pt")
        with torch.inference_mode():
            out = det(**inputs)
        ref = proc.post_process_instance_segmentation(out, threshold=0.0, target_sizes=[[H, W]])[0]
        order = torch.argsort(ref["scores"], descending=True)[:5]
        assert np.allclose(got.scores, ref["scores"][order].numpy(), atol=1e-5), phrase
        masks = seg.upscale(emb, got.logits)
        assert masks.shape == (5, H, W)
        # random weights put much of each mask near probability 0.5: compare wherever float noise cannot decide
        prob = torch.nn.functional.interpolate(out.pred_masks[0, order].sigmoid()[None], size=(H, W),
                                               mode="bilinear", align_corners=False)[0].numpy()
        ours = torch.nn.functional.interpolate(got.logits[None], size=(H, W), mode="bilinear",
                                               align_corners=False)[0].numpy()
        assert np.abs(ours - (prob - 0.5)).max() < 1e-6, phrase  # the same map, shifted so 0 is SAM 3's 0.5
        clear = np.abs(prob - 0.5) > 1e-5
        assert clear.mean() > 0.5
        assert np.array_equal(masks[clear], ref["masks"][order].bool().numpy()[clear]), phrase
        one = seg.segment_concepts(emb, [phrase], threshold=0.0, max_instances=5)[0]
        assert np.allclose(one.scores, got.scores, atol=1e-5) and torch.allclose(one.logits, got.logits, atol=1e-5)


def test_sam3_concepts_keep_the_best_instance_and_those_above_the_threshold(segmenters, embedded):
    seg, emb = segmenters["sam3"], embedded["sam3"]
    everything = seg.segment_concepts(emb, ["red cup"], threshold=0.0, max_instances=100)[0].scores
    assert np.all(np.diff(everything) <= 0), "best first"
    cut = float(everything[2]) - 1e-6  # exactly three instances reach it
    assert len(seg.segment_concepts(emb, ["red cup"], threshold=cut, max_instances=10)[0].scores) == 3
    assert len(seg.segment_concepts(emb, ["red cup"], threshold=cut, max_instances=2)[0].scores) == 2
    best = seg.segment_concepts(emb, ["red cup"], threshold=1.01, max_instances=10)[0].scores
    assert len(best) == 1 and best[0] == pytest.approx(everything[0], abs=1e-6)


def test_sam3_runs_its_vit_once_per_image_for_both_heads(segmenters, scene):
    seg = segmenters["sam3"]
    seg.detector()
    calls = []
    hook = seg.backbone.inner.register_forward_hook(lambda *a: calls.append(1))
    emb = seg.embed(scene)
    seg.segment_concepts(emb, ["red cup", "coffee"])
    seg.decode(emb, PromptBatch(np.array([[[80.0, 130.0]]], np.float32), np.ones((1, 1), np.int64),
                                np.full((1, 4), np.nan, np.float32)))
    hook.remove()
    assert len(calls) == 1


def test_sam3_heads_read_one_vit_the_checkpoint_stores_once(segmenters):
    """The tracker's ViT weights are the checkpoint's ``detector_model.vision_encoder.backbone`` tensors, so sharing
    the module with the concept head changes nothing."""
    from safetensors import safe_open

    seg = segmenters["sam3"]
    det, _ = seg.detector()
    assert det.vision_encoder.backbone is seg.model.vision_encoder.backbone
    with safe_open(str(seg.path / "model.safetensors"), "pt") as f:
        for name, tensor in seg.backbone.inner.state_dict().items():
            assert torch.equal(tensor, f.get_tensor(f"detector_model.vision_encoder.backbone.{name}")), name


# ---- loading ---------------------------------------------------------------------------------------------------------

def test_loaders_follow_the_checkpoint_and_satisfy_the_interface(segmenters, tiny_segmenter_dirs):
    for backend, seg in segmenters.items():
        assert isinstance(seg, Segmenter)
        assert seg.backend == backend and seg.path == tiny_segmenter_dirs[backend]
        cfg = json.loads((seg.path / "config.json").read_text())
        assert cfg["model_type"] == f"{backend}_video"  # the published repos are video checkpoints
    assert type(segmenters["sam2"].model).__name__ == "Sam2Model"
    assert type(segmenters["sam3"].model).__name__ == "Sam3TrackerModel"
    assert segmenters["sam3"].supports_concepts and not segmenters["sam2"].supports_concepts


def test_sam2_loads_from_the_transformers_5_layout_too(tiny_segmenter_dirs, tmp_path, segmenters, embedded, scene):
    """The published repos carry preprocessor_config.json + a small processor_config.json (transformers 4.56);
    ``save_pretrained`` in transformers 5 writes one nested processor_config.json. Both give the same model."""
    from transformers import Sam2ImageProcessor, Sam2VideoProcessor, Sam2VideoVideoProcessor

    src = tiny_segmenter_dirs["sam2"]
    new = tmp_path / "sam2-v5-layout"
    new.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(src / f, new / f)
    Sam2VideoProcessor(image_processor=Sam2ImageProcessor(), video_processor=Sam2VideoVideoProcessor()) \
        .save_pretrained(new)
    assert not (new / "preprocessor_config.json").exists()
    seg = load_segmenter(str(new), device="cpu")
    pts = PromptBatch(np.array([[[80.0, 130.0]]], np.float32), np.ones((1, 1), np.int64),
                      np.full((1, 4), np.nan, np.float32))
    a = segmenters["sam2"].decode(embedded["sam2"], pts)[0]
    b = seg.decode(seg.embed(scene), pts)[0]
    assert torch.allclose(a, b, atol=1e-5)


def test_hub_ids_resolve_in_the_models_folder_and_fail_with_the_fetch_command(tiny_segmenter_dirs, tmp_path,
                                                                             monkeypatch):
    monkeypatch.setenv("REA2SEG_MODELS_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as e:
        load_segmenter("facebook/sam3")
    msg = str(e.value)
    assert str(tmp_path / "sam3" / "sam3") in msg and "rea2seg models download facebook/sam3" in msg
    assert "gated" in msg
    with pytest.raises(ModelNotFoundError, match=str(tmp_path / "sam2" / "sam2.1-hiera-large")):
        load_segmenter("facebook/sam2.1-hiera-large")
    shutil.copytree(tiny_segmenter_dirs["sam2"], tmp_path / "sam2" / "sam2.1-hiera-tiny")
    seg = load_segmenter("facebook/sam2.1-hiera-tiny", device="cpu")
    assert seg.backend == "sam2" and seg.kind == "sam2.1-hiera-tiny" and seg.source == "facebook/sam2.1-hiera-tiny"
    assert seg.path == tmp_path / "sam2" / "sam2.1-hiera-tiny"
    # SAM v1 kinds still go to segment_anything's loader
    with pytest.raises(ModelNotFoundError, match="rea2seg models download vit_b"):
        load_segmenter("vit_b")


def test_download_lands_in_the_backend_folder_and_is_checked(tiny_segmenter_dirs, tmp_path, monkeypatch):
    """The hub download itself is huggingface_hub's (no network here): it is replaced by a copy, complete or not."""
    from rea2seg.models import segmenter as segmod

    monkeypatch.setenv("REA2SEG_MODELS_DIR", str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    fetched = []

    def fake_download(repo_id, dest):
        fetched.append((repo_id, dest))
        shutil.copytree(tiny_segmenter_dirs["sam3"], dest, ignore=shutil.ignore_patterns(*skip))
        return dest

    monkeypatch.setattr(segmod, "download_hub_dir", fake_download)
    skip = ["model.safetensors"]  # an incomplete download is refused
    with pytest.raises(CheckpointError, match="no weights"):
        resolve_segmenter_dir("facebook/sam3", download=True)
    shutil.rmtree(tmp_path / "sam3")
    skip = []
    path = resolve_segmenter_dir("facebook/sam3", download=True)
    assert path == tmp_path / "sam3" / "sam3" and fetched[-1] == ("facebook/sam3", path)
    assert resolve_segmenter_dir("facebook/sam3", download=True) == path and len(fetched) == 2  # not fetched again


@pytest.mark.parametrize("case, error, match", [
    ("no_config", CheckpointError, "no config.json"),
    ("sam_v1_hf", CheckpointError, "SAM v1"),
    ("detector_only", CheckpointError, "combined checkpoint"),
    ("other_model", CheckpointError, "not a segmenter"),
    ("no_processor", CheckpointError, "processor_config.json"),
    ("truncated", CheckpointError, "lacks"),
    ("kind_with_dir", InputError, "SAM v1 checkpoint files only"),
    ("empty", InputError, "no segmenter given"),
])
def test_bad_checkpoints_get_one_clear_error(tiny_segmenter_dirs, tmp_path, case, error, match):
    d = tmp_path / case
    shutil.copytree(tiny_segmenter_dirs["sam2"], d)
    cfg = json.loads((d / "config.json").read_text())
    kind = None
    if case == "no_config":
        (d / "config.json").unlink()
    elif case in ("sam_v1_hf", "detector_only", "other_model"):
        cfg["model_type"] = {"sam_v1_hf": "sam", "detector_only": "sam3", "other_model": "qwen2_5_vl"}[case]
        (d / "config.json").write_text(json.dumps(cfg))
    elif case == "no_processor":
        for f in ("processor_config.json", "preprocessor_config.json"):
            (d / f).unlink()
    elif case == "truncated":  # weights of another (smaller) model: keys missing
        from safetensors.torch import load_file, save_file
        state = load_file(d / "model.safetensors")
        save_file({k: v for k, v in state.items() if not k.startswith("mask_decoder.")}, str(d / "model.safetensors"))
    elif case == "kind_with_dir":
        kind = "vit_b"
    with pytest.raises(error, match=match):
        load_segmenter("" if case == "empty" else str(d), kind=kind, device="cpu")
