"""Stage 1, candidate discovery: the VLM reads the image and the question, its text->image attention becomes a heat
map, the map's peaks become SAM prompts, and SAM's masks, de-duplicated, are the candidates."""
from __future__ import annotations

import copy
import inspect
import time

import numpy as np
import torch
from PIL import Image

from .config import DiscoveryConfig
from .heatmap import find_peaks, heatmap_from_grids, peak_region_box, upsample
from .image_cache import ImageCache, ImageEntry
from .models.attention import discovery_layout, grid_from_tokens, image_token_span, layer_band, record_attention
from .models.prompting import chat_inputs, to_device
from .models.sam import PromptBatch, SamModel, decoder_chunk, stability_scores
from .models.vlm import VLM
from .parsing import parse_proposals
from .types import CancelCheck, Candidates, Progress, SegmentationResult, check_cancel, masks_to_boxes

DISCOVERY_PROMPT = "{question}"
PROPOSAL_PROMPT = (
    'Please find "{question}" with bboxs and points. Compare the difference between object(s) and find the most '
    "closely matched object(s). Output the bbox(es) and point(s) inside the interested object(s) in JSON format, "
    'i.e., [{{"bbox_2d": [x1, y1, x2, y2], "point_2d": [x, y]}}].')


# ---- VLM attention --------------------------------------------------------------------------------------------------

def _supports_encoder_outputs(vlm: VLM) -> bool:
    return "mm_encoder_outputs" in inspect.signature(vlm.model.forward).parameters


@torch.inference_mode()
def vision_features(vlm: VLM, inputs) -> object:
    """The vision tower's output for the one image in ``inputs`` (cacheable; passed back as
    ``mm_encoder_outputs``)."""
    kwargs = {"image_grid_thw": inputs["image_grid_thw"]} if "image_grid_thw" in inputs else {}
    return vlm.model.model.get_image_features(inputs["pixel_values"].to(vlm.device, vlm.dtype), return_dict=True,
                                             **{k: v.to(vlm.device) for k, v in kwargs.items()})


def _feed_with_cached_features(vlm: VLM, inputs, entry: ImageEntry | None) -> dict:
    """The model inputs on its device, with the vision tower's output taken from (or put in) the image's cache."""
    feed = to_device(vlm, inputs)
    if entry is not None and _supports_encoder_outputs(vlm):
        key = ("vlm-features", id(vlm.model), tuple(inputs["image_grid_thw"][0].tolist())
               if "image_grid_thw" in inputs else None)
        feats = entry.get_or_compute(key, lambda: vision_features(vlm, inputs))
        feed.pop("pixel_values")
        feed["mm_encoder_outputs"] = {"image": feats}
    return feed


@torch.inference_mode()
def _image_prefix_cache(vlm: VLM, inputs, feed: dict, position_ids: torch.Tensor, cut: int):
    """Run the prompt up to and including the image (system turn, user header, image tokens) once; its KV cache."""
    prefix = {k: v[:, :cut] for k, v in feed.items() if k in ("input_ids", "attention_mask", "mm_token_type_ids")}
    extra = {k: feed[k] for k in ("pixel_values", "image_grid_thw", "mm_encoder_outputs") if k in feed}
    with vlm.lock:
        out = vlm.model(**prefix, **extra, position_ids=position_ids[..., :cut], use_cache=True, logits_to_keep=1)
    return getattr(out, "cache", None) or out.past_key_values


@torch.inference_mode()
def attention_grid(vlm: VLM, image: Image.Image, text: str, layers: list[int], entry: ImageEntry | None = None
                   ) -> torch.Tensor:
    """One forward pass recording the attention of the prompt's text rows (after the image) over the image tokens in
    ``layers``; returns the (h, w) token-grid map (mean over layers, heads and rows).

    With an ``entry`` (the image's cache) and a Qwen-VL model, the part of the prompt up to the image is run once per
    image and its KV cache reused: a later question only runs its own tokens (same result, explicit 3-D positions
    over the whole sequence; the model's stateful ``rope_deltas`` are never relied on). A family whose token layout
    is unknown (``attention.TOKEN_LAYOUTS``) is refused before any forward pass."""
    layout = discovery_layout(vlm.config)
    inputs = chat_inputs(vlm, [[image, text]])
    ids = inputs["input_ids"][0]
    s, e = image_token_span(ids, vlm.image_token_id)
    rows = torch.arange(e + 1, ids.shape[0])  # question + template text after <|vision_end|>
    feed = _feed_with_cached_features(vlm, inputs, entry)
    cut = e + 1
    if entry is not None and vlm.has_rope_index and cut < ids.shape[0]:
        rope_kw = {k: feed[k] for k in ("mm_token_type_ids", "image_grid_thw", "attention_mask") if k in feed}
        position_ids, _ = vlm.model.model.get_rope_index(feed["input_ids"], **rope_kw)
        key = ("vlm-prefix", id(vlm.model), tuple(ids[:cut].tolist()))
        prefix = entry.get_or_compute(key, lambda: _image_prefix_cache(vlm, inputs, feed, position_ids, cut))
        suffix = {k: feed[k][:, cut:] for k in ("input_ids", "mm_token_type_ids") if k in feed}
        with vlm.lock, record_attention(rows, slice(s, e), set(layers)) as rec:
            vlm.model(**suffix, attention_mask=feed["attention_mask"], position_ids=position_ids[..., cut:],
                      cache=copy.deepcopy(prefix), use_cache=True, logits_to_keep=1)
    else:
        with vlm.lock, record_attention(rows, slice(s, e), set(layers)) as rec:
            vlm.model(**feed, logits_to_keep=1, use_cache=False)
    if not rec.out:
        raise RuntimeError(f"no attention was recorded: {vlm.source} does not use Rea2Seg's attention function "
                           f"({vlm.model.config.get_text_config()._attn_implementation})")
    probs = torch.stack([rec.out[l][0] for l in sorted(rec.out)])  # (L, H, R, n_img)
    per_token = probs.float().mean(dim=(0, 1, 2)).cpu()
    return grid_from_tokens(per_token, layout, inputs, vlm.merge_size)


# ---- peaks -> prompts -----------------------------------------------------------------------------------------------

def prompts_from_peaks(grid: torch.Tensor, peaks_rc: np.ndarray, image_hw: tuple[int, int], config: DiscoveryConfig
                       ) -> tuple[PromptBatch, list[str], np.ndarray]:
    """Each peak -> a positive point prompt (+ the other peaks as negatives, if asked) and, if asked, a second prompt
    with the same point plus the box of the peak's region. Returns the prompts, their sources, and the peak points
    (K, 2) xy in image pixels."""
    H, W = image_hw
    h, w = grid.shape
    xy = np.stack([(peaks_rc[:, 1] + 0.5) / w * W, (peaks_rc[:, 0] + 0.5) / h * H], 1).astype(np.float32)
    xy[:, 0] = xy[:, 0].clip(0, W - 1)
    xy[:, 1] = xy[:, 1].clip(0, H - 1)
    k = len(xy)
    n_points = k if config.negative_points else 1
    points, labels, boxes, sources = [], [], [], []
    for i in range(k):
        pts = [xy[i]] + ([xy[j] for j in range(k) if j != i] if config.negative_points else [])
        lab = [1] + [0] * (len(pts) - 1)
        pts += [np.zeros(2, np.float32)] * (n_points - len(pts))
        lab += [-1] * (n_points - len(lab))
        points.append(pts)
        labels.append(lab)
        boxes.append([np.nan] * 4)
        sources.append(f"peak:{i}")
        if config.box_prompts:
            rc = (int(round(float(peaks_rc[i, 0]))), int(round(float(peaks_rc[i, 1]))))
            rc = (min(max(rc[0], 0), h - 1), min(max(rc[1], 0), w - 1))
            r0, c0, r1, c1 = peak_region_box(grid, rc, config.box_level)
            points.append(pts)
            labels.append(lab)
            boxes.append([c0 / w * W, r0 / h * H, c1 / w * W, r1 / h * H])
            sources.append(f"box:{i}")
    batch = PromptBatch(np.array(points, np.float32).reshape(len(points), n_points, 2),
                        np.array(labels, np.int64).reshape(len(points), n_points), np.array(boxes, np.float32))
    return batch, sources, xy


def proposal_prompts(vlm: VLM, image: Image.Image, question: str, max_new_tokens: int
                     ) -> tuple[PromptBatch | None, list[str], str]:
    """Ask the VLM for boxes/points in JSON (Seg-Zero / VisionReasoner format) and turn them into SAM prompts in image
    pixels. Qwen2.5-VL answers in the resized input's pixels, Qwen2-VL/Qwen3-VL on a 0..1000 scale. An unparsable
    reply gives no prompts."""
    inputs = chat_inputs(vlm, [[image, PROPOSAL_PROMPT.format(question=question)]])
    with vlm.lock, torch.inference_mode():
        out = vlm.model.generate(**to_device(vlm, inputs), max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=vlm.tokenizer.pad_token_id)
    reply = vlm.processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0]
    W, H = image.size
    if vlm.family == "qwen2_5_vl" and "image_grid_thw" in inputs:
        patch = int(getattr(vlm.config.vision_config, "patch_size", 14))
        _, gh, gw = (int(v) for v in inputs["image_grid_thw"][0])
        sx, sy = W / (gw * patch), H / (gh * patch)
    else:
        sx, sy = W / 1000.0, H / 1000.0
    points, labels, boxes, sources = [], [], [], []
    for i, (box, pts) in enumerate(parse_proposals(reply)):
        pts = [[min(max(x * sx, 0), W - 1), min(max(y * sy, 0), H - 1)] for x, y in pts][:2]
        b = [box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy] if box else [np.nan] * 4
        if not pts and box:
            pts = [[(b[0] + b[2]) / 2, (b[1] + b[3]) / 2]]
        lab = [1] * len(pts) + [-1] * (2 - len(pts))
        pts = pts + [[0.0, 0.0]] * (2 - len(pts))
        points.append(pts)
        labels.append(lab)
        boxes.append(b)
        sources.append(f"vlm:{i}")
    if not points:
        return None, [], reply
    return (PromptBatch(np.array(points, np.float32), np.array(labels, np.int64), np.array(boxes, np.float32)),
            sources, reply)


# ---- SAM masks -> candidates ----------------------------------------------------------------------------------------

def mask_iou_matrix(masks: np.ndarray) -> np.ndarray:
    """(N, H, W) bool -> (N, N) IoU."""
    flat = masks.reshape(masks.shape[0], -1).astype(np.float32)
    inter = flat @ flat.T
    area = flat.sum(1)
    union = area[:, None] + area[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def mask_nms(masks: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS on mask IoU: indices kept, best score first."""
    order = np.argsort(-scores, kind="stable")
    iou = mask_iou_matrix(masks)
    keep: list[int] = []
    for i in order:
        if all(iou[i, j] <= iou_threshold for j in keep):
            keep.append(int(i))
    return np.array(keep, np.int64)


def masks_from_prompts(sam: SamModel, emb, prompts: PromptBatch, sources: list[str], heatmap: np.ndarray,
                       config: DiscoveryConfig) -> Candidates:
    """SAM decoding (prompts batched on an accelerator, one per call on a CPU: ``decoder_chunk``), filtering by
    predicted IoU and stability (per prompt, the best mask always survives), NMS at low resolution, then
    full-resolution post-processing of the survivors only."""
    low, iou = sam.decode(emb, prompts, multimask=config.multimask,
                          chunk=decoder_chunk(emb.features.device, config.sam_chunk))
    stab = stability_scores(low, sam.mask_threshold, config.stability_offset)
    n, m = iou.shape
    iou_np, stab_np = iou.cpu().numpy(), stab.cpu().numpy()
    good = (iou_np >= config.min_sam_iou) & (stab_np >= config.min_stability)
    good[np.arange(n), iou_np.argmax(1)] = True
    pi, mi = np.nonzero(good)
    low_sel = low[pi, mi]
    low_bin = (low_sel > sam.mask_threshold).cpu().numpy()
    nonempty = low_bin.reshape(len(pi), -1).any(1)
    pi, mi, low_sel, low_bin = pi[nonempty], mi[nonempty], low_sel[torch.as_tensor(nonempty)], low_bin[nonempty]
    H, W = emb.original_size
    if len(pi) == 0:
        return Candidates.empty(H, W)
    heat_low = sam.to_low_frame(emb, heatmap, low.shape[-1])
    mass_low = (low_bin * heat_low).reshape(len(pi), -1).sum(1) / max(float(heat_low.sum()), 1e-8)
    rank_score = iou_np[pi, mi] * (0.5 + mass_low)
    keep = mask_nms(low_bin, rank_score, config.nms_iou)[: 2 * config.max_candidates]
    full = sam.upscale(emb, low_sel[torch.as_tensor(keep)])
    areas = full.reshape(len(keep), -1).sum(1)
    ok = areas >= max(1.0, config.min_area_fraction * H * W)
    keep, full = keep[ok], full[ok]
    if len(keep) == 0:  # every mask was below the minimum area
        return Candidates.empty(H, W)
    # NMS again at full resolution (low-res IoU can miss near-duplicates), then cap
    total_heat = max(float(heatmap.sum()), 1e-8)
    mass = (full * heatmap[None]).reshape(len(keep), -1).sum(1) / total_heat
    order = mask_nms(full, iou_np[pi[keep], mi[keep]] * (0.5 + mass), config.nms_iou)[: config.max_candidates]
    keep, full, mass = keep[order], full[order], mass[order]
    pts = prompts.points[pi[keep], 0].copy()
    pts[prompts.labels[pi[keep], 0] != 1] = np.nan
    return Candidates(full, masks_to_boxes(full), pts, iou_np[pi[keep], mi[keep]], mass,
                      [f"{sources[p]}/m{mm}" for p, mm in zip(pi[keep], mi[keep])])


def discover_candidates(vlm: VLM, sam: SamModel, image: np.ndarray, question: str,
                        config: DiscoveryConfig = DiscoveryConfig(), cache: ImageCache | None = None,
                        progress: Progress | None = None, cancel: CancelCheck | None = None) -> SegmentationResult:
    """image: (H, W, 3) uint8 RGB; question: the checked question (``inputs.check_question``). Returns an answer of
    kind "discover": the candidates (at most ``config.max_candidates``, numbered from 1), the heat map, the token grid
    and the peaks. Stages report to ``progress(stage, done, total)``."""
    timings: dict[str, float] = {}
    entry = cache.entry(image) if cache is not None else ImageEntry()
    pil = Image.fromarray(image)
    H, W = image.shape[:2]
    layers = layer_band(vlm.num_layers, config.layer_band)

    def stage(name: str, i: int, total: int = 4):
        check_cancel(cancel)
        if progress:
            progress(name, i, total)

    stage("attention", 0)
    t = time.perf_counter()
    grid_q = attention_grid(vlm, pil, DISCOVERY_PROMPT.format(question=question), layers, entry)
    grid_g = None
    if config.relative_to_generic:
        key = ("generic-grid", id(vlm.model), tuple(layers), config.generic_prompt)
        grid_g = entry.get_or_compute(key, lambda: attention_grid(vlm, pil, config.generic_prompt, layers, entry))
    grid = heatmap_from_grids(grid_q, grid_g, config.sink_quantile, config.smooth_sigma)
    heatmap = upsample(grid, (H, W))
    timings["attention"] = (time.perf_counter() - t) * 1000

    stage("prompts", 1)
    t = time.perf_counter()
    peaks_rc, _ = find_peaks(grid, config.peak_threshold, config.peak_min_distance, config.max_peaks)
    prompts, sources, peaks_xy = prompts_from_peaks(grid, peaks_rc, (H, W), config)
    if config.vlm_proposals:
        extra, extra_sources, _ = proposal_prompts(vlm, pil, question, config.max_new_tokens_proposals)
        if extra is not None:
            prompts, sources = PromptBatch.concat(prompts, extra), sources + extra_sources
    timings["prompts"] = (time.perf_counter() - t) * 1000

    stage("sam_embedding", 2)
    t = time.perf_counter()
    emb = entry.get_or_compute(("sam-embedding", id(sam.sam)), lambda: sam.embed(image))
    timings["sam_embedding"] = (time.perf_counter() - t) * 1000

    stage("sam_masks", 3)
    t = time.perf_counter()
    candidates = masks_from_prompts(sam, emb, prompts, sources, heatmap, config)
    timings["sam_masks"] = (time.perf_counter() - t) * 1000
    if progress:
        progress("discovered", 4, 4)
    return SegmentationResult(question, image, candidates, heatmap, kind="discover",
                              grid=grid.cpu().numpy().astype(np.float32), peaks=peaks_xy, timings_ms=timings)
