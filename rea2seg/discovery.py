"""Stage 1, candidate discovery: the VLM reads the image and the question, and each candidate source in
``DiscoveryConfig.sources`` turns that into masks: the peaks of its text->image attention become segmenter prompts
("attention"), its own JSON boxes become prompts ("boxes"), the noun phrases it names become SAM 3 concept prompts
("concepts"). All sources' masks are de-duplicated together into the candidates."""
from __future__ import annotations

import copy
import inspect
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .config import DiscoveryConfig
from .errors import InputError
from .heatmap import find_peaks, heatmap_from_grids, peak_region_box, upsample
from .image_cache import ImageCache, ImageEntry
from .models.attention import discovery_layout, grid_from_tokens, image_token_span, layer_band, record_attention
from .models.prompting import chat_inputs, to_device
from .models.sam import PromptBatch, decoder_chunk, stability_scores
from .models.segmenter import Segmenter
from .models.vlm import VLM
from .parsing import parse_concepts, parse_proposals
from .types import CancelCheck, Candidates, Progress, SegmentationResult, check_cancel, masks_to_boxes

DISCOVERY_PROMPT = "{question}"
PROPOSAL_PROMPT = (
    'Please find "{question}" with bboxs and points. Compare the difference between object(s) and find the most '
    "closely matched object(s). Output the bbox(es) and point(s) inside the interested object(s) in JSON format, "
    'i.e., [{{"bbox_2d": [x1, y1, x2, y2], "point_2d": [x, y]}}].')
CONCEPT_PROMPT = (
    'Question: "{question}"\nName the object(s) in the image that answer the question, each as a short noun phrase '
    'of one to four words (for example "red mug" or "dog on the left"), at most {n}. Reply with a JSON list of '
    "strings and nothing else.")


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


def _generate_reply(vlm: VLM, image: Image.Image, prompt: str, max_new_tokens: int) -> tuple[str, object]:
    """One short greedy generation about the image; the reply text and the processor inputs."""
    inputs = chat_inputs(vlm, [[image, prompt]])
    with vlm.lock, torch.inference_mode():
        out = vlm.model.generate(**to_device(vlm, inputs), max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=vlm.tokenizer.pad_token_id)
    reply = vlm.processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0]
    return reply, inputs


def proposal_prompts(vlm: VLM, image: Image.Image, question: str, max_new_tokens: int
                     ) -> tuple[PromptBatch | None, list[str], str]:
    """Ask the VLM for boxes/points in JSON (Seg-Zero / VisionReasoner format) and turn them into SAM prompts in image
    pixels. Qwen2.5-VL answers in the resized input's pixels; Qwen2-VL, Qwen3-VL and Qwen3.5 on a 0..1000 scale of
    the image. An unparsable reply gives no prompts."""
    reply, inputs = _generate_reply(vlm, image, PROPOSAL_PROMPT.format(question=question), max_new_tokens)
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


def concept_phrases(vlm: VLM, image: Image.Image, question: str, max_phrases: int, max_new_tokens: int
                    ) -> tuple[list[str], str]:
    """Ask the VLM to name what the question is about as short noun phrases (SAM 3 concept prompts); the phrases
    parsed from its reply (``parsing.parse_concepts``: none when nothing usable) and the reply."""
    reply, _ = _generate_reply(vlm, image, CONCEPT_PROMPT.format(question=question, n=max_phrases), max_new_tokens)
    return parse_concepts(reply, max_phrases), reply


# ---- segmenter masks -> candidates ----------------------------------------------------------------------------------

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


@dataclass
class LowResMasks:
    """Masks a source kept, before full-resolution post-processing. logits: (K, s, s) in the segmenter's
    low-resolution frame; quality: (K,) SAM's predicted IoU or SAM 3's detection score; labels: (K,) candidate
    sources ("peak:0/m2", "concept:red mug/i0"); points: (K, 2) xy of the positive point prompt (NaN for none)."""

    logits: torch.Tensor
    quality: np.ndarray
    labels: list[str]
    points: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def concat(cls, parts: list["LowResMasks"]) -> "LowResMasks | None":
        """All parts in one (None if there are none); logits resized to the first part's side if they differ."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return None
        side = parts[0].logits.shape[-1]
        logits = [p.logits if p.logits.shape[-1] == side else
                  F.interpolate(p.logits[:, None], size=(side, side), mode="bilinear", align_corners=False)[:, 0]
                  for p in parts]
        return cls(torch.cat([x.to(logits[0].device) for x in logits]), np.concatenate([p.quality for p in parts]),
                   sum((p.labels for p in parts), []), np.concatenate([p.points for p in parts]))


#: Which candidate source a label prefix comes from (other prefixes are their own source).
LABEL_SOURCES = {"peak": "attention", "box": "attention", "vlm": "boxes", "concept": "concepts"}


def source_of(label: str) -> str:
    """The candidate source of a candidate label ("box:2/m0" -> "attention", "concept:red mug/i0" -> "concepts")."""
    prefix = label.split(":", 1)[0]
    return LABEL_SOURCES.get(prefix, prefix)


def cap_keeping_each_source(order: np.ndarray, labels: list[str], cap: int) -> np.ndarray:
    """The first ``cap`` of ``order`` (best first), except that every source keeps its best candidate: one ranked
    beyond the cap takes the place of the lowest-ranked candidate of a source holding several, so no source's masks
    are crowded out before the scorer sees them. Rank order is kept."""
    chosen = list(order[:cap])
    for i in order[cap:]:
        kinds = [source_of(labels[j]) for j in chosen]
        if source_of(labels[i]) in kinds:
            continue
        crowded = [pos for pos, k in enumerate(kinds) if kinds.count(k) > 1]
        if not crowded:
            break
        chosen[crowded[-1]] = i
    rank = {int(j): pos for pos, j in enumerate(order)}
    return np.array(sorted(chosen, key=lambda j: rank[int(j)]), np.int64)


def prompt_masks(sam: Segmenter, emb, prompts: PromptBatch, sources: list[str], config: DiscoveryConfig
                 ) -> LowResMasks:
    """Decode the prompts (batched on an accelerator, one per call on a CPU: ``decoder_chunk``) and keep masks by
    predicted IoU and stability; per prompt, the best mask always survives."""
    low, iou = sam.decode(emb, prompts, multimask=config.multimask, chunk=decoder_chunk(sam.device, config.sam_chunk))
    stab = stability_scores(low, sam.mask_threshold, config.stability_offset)
    n = iou.shape[0]
    iou_np, stab_np = iou.cpu().numpy(), stab.cpu().numpy()
    good = (iou_np >= config.min_sam_iou) & (stab_np >= config.min_stability)
    good[np.arange(n), iou_np.argmax(1)] = True
    pi, mi = np.nonzero(good)
    pts = prompts.points[pi, 0].copy()
    pts[prompts.labels[pi, 0] != 1] = np.nan
    return LowResMasks(low[torch.as_tensor(pi), torch.as_tensor(mi)], iou_np[pi, mi],
                       [f"{sources[p]}/m{m}" for p, m in zip(pi, mi)], pts)


def concept_masks(sam: Segmenter, emb, phrases: list[str], config: DiscoveryConfig) -> LowResMasks:
    """Each phrase as a SAM 3 text prompt (all in one batched call): its instances scoring at least
    ``concept_threshold`` (always the best one), at most ``concept_instances``."""
    found = sam.segment_concepts(emb, phrases, config.concept_threshold, config.concept_instances)
    parts = []
    for phrase, inst in zip(phrases, found):
        k = len(inst.scores)
        parts.append(LowResMasks(inst.logits, np.asarray(inst.scores, np.float32),
                                 [f"concept:{phrase}/i{i}" for i in range(k)], np.full((k, 2), np.nan, np.float32)))
    return LowResMasks.concat(parts) or LowResMasks(torch.zeros(0, 1, 1), np.zeros(0, np.float32), [],
                                                    np.zeros((0, 2), np.float32))


def candidates_from_masks(sam: Segmenter, emb, masks: LowResMasks | None, heatmap: np.ndarray,
                          config: DiscoveryConfig) -> Candidates:
    """Every source's kept masks together: empty ones dropped, NMS at low resolution (ranked by quality weighted by
    the heat map's mass inside), full-resolution post-processing of the survivors only, the minimum area, NMS again
    at full resolution, the cap (each source keeping its best candidate: ``cap_keeping_each_source``)."""
    H, W = emb.original_size
    if masks is None or not len(masks):
        return Candidates.empty(H, W)
    low_bin = (masks.logits > sam.mask_threshold).cpu().numpy()
    nonempty = np.flatnonzero(low_bin.reshape(len(masks), -1).any(1))
    if nonempty.size == 0:
        return Candidates.empty(H, W)
    low_sel, low_bin = masks.logits[torch.as_tensor(nonempty)], low_bin[nonempty]
    quality, points = masks.quality[nonempty], masks.points[nonempty]
    labels = [masks.labels[i] for i in nonempty]
    heat_low = sam.to_low_frame(emb, heatmap, low_sel.shape[-1])
    mass_low = (low_bin * heat_low).reshape(len(nonempty), -1).sum(1) / max(float(heat_low.sum()), 1e-8)
    keep = cap_keeping_each_source(mask_nms(low_bin, quality * (0.5 + mass_low), config.nms_iou), labels,
                                   2 * config.max_candidates)
    full = sam.upscale(emb, low_sel[torch.as_tensor(keep)])
    ok = full.reshape(len(keep), -1).sum(1) >= max(1.0, config.min_area_fraction * H * W)
    keep, full = keep[ok], full[ok]
    if len(keep) == 0:  # every mask was below the minimum area
        return Candidates.empty(H, W)
    # NMS again at full resolution (low-res IoU can miss near-duplicates), then cap
    mass = (full * heatmap[None]).reshape(len(keep), -1).sum(1) / max(float(heatmap.sum()), 1e-8)
    order = cap_keeping_each_source(mask_nms(full, quality[keep] * (0.5 + mass), config.nms_iou),
                                    [labels[i] for i in keep], config.max_candidates)
    keep, full, mass = keep[order], full[order], mass[order]
    return Candidates(full, masks_to_boxes(full), points[keep], quality[keep], mass, [labels[i] for i in keep])


def masks_from_prompts(sam: Segmenter, emb, prompts: PromptBatch, sources: list[str], heatmap: np.ndarray,
                       config: DiscoveryConfig) -> Candidates:
    """Prompts -> candidates: ``prompt_masks`` then ``candidates_from_masks``."""
    return candidates_from_masks(sam, emb, prompt_masks(sam, emb, prompts, sources, config), heatmap, config)


def check_sources_supported(sam: Segmenter, sources: tuple[str, ...]) -> None:
    """``InputError`` when a source needs what the segmenter lacks (concepts need SAM 3's text prompts)."""
    if "concepts" in sources and not getattr(sam, "supports_concepts", False):
        raise InputError(f"the 'concepts' candidate source needs SAM 3's text prompts, but the segmenter is "
                         f"{sam.backend} ({sam.kind}); load SAM 3 (--sam facebook/sam3 or the sam3 preset) or drop "
                         f"'concepts' from the sources")


def discover_candidates(vlm: VLM, sam: Segmenter, image: np.ndarray, question: str,
                        config: DiscoveryConfig = DiscoveryConfig(), cache: ImageCache | None = None,
                        progress: Progress | None = None, cancel: CancelCheck | None = None) -> SegmentationResult:
    """image: (H, W, 3) uint8 RGB; question: the checked question (``inputs.check_question``). Returns an answer of
    kind "discover": the candidates from every source in ``config.sources`` (at most ``config.max_candidates``,
    numbered from 1), the heat map, the token grid and the peaks (a zero heat map, no grid and no peaks when the
    "attention" source is off). Stages report to ``progress(stage, done, total)``."""
    sources = config.sources
    check_sources_supported(sam, sources)
    timings: dict[str, float] = {}
    entry = cache.entry(image) if cache is not None else ImageEntry()
    pil = Image.fromarray(image)
    H, W = image.shape[:2]
    use_attention = "attention" in sources
    layers = layer_band(vlm.num_layers, config.layer_band, vlm.attention_layers) if use_attention else []

    def stage(name: str, i: int, total: int = 4):
        check_cancel(cancel)
        if progress:
            progress(name, i, total)

    stage("attention", 0)
    grid, heatmap = None, np.zeros((H, W), np.float32)
    if use_attention:
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
    prompts, prompt_sources, peaks_xy = None, [], np.zeros((0, 2), np.float32)
    if use_attention:
        peaks_rc, _ = find_peaks(grid, config.peak_threshold, config.peak_min_distance, config.max_peaks)
        prompts, prompt_sources, peaks_xy = prompts_from_peaks(grid, peaks_rc, (H, W), config)
    if "boxes" in sources:
        extra, extra_sources, _ = proposal_prompts(vlm, pil, question, config.max_new_tokens_proposals)
        if extra is not None:
            prompts = extra if prompts is None else PromptBatch.concat(prompts, extra)
            prompt_sources = prompt_sources + extra_sources
    phrases: list[str] = []
    if "concepts" in sources:
        tc = time.perf_counter()
        phrases, _ = concept_phrases(vlm, pil, question, config.max_concepts, config.max_new_tokens_concepts)
        timings["concepts"] = (time.perf_counter() - tc) * 1000
    timings["prompts"] = (time.perf_counter() - t) * 1000

    stage("sam_embedding", 2)
    has_prompts = prompts is not None and len(prompts) > 0
    emb = None
    if has_prompts or phrases:
        t = time.perf_counter()
        emb = entry.get_or_compute(("sam-embedding", id(sam)), lambda: sam.embed(image))
        timings["sam_embedding"] = (time.perf_counter() - t) * 1000

    stage("sam_masks", 3)
    t = time.perf_counter()
    parts = []
    if has_prompts:
        parts.append(prompt_masks(sam, emb, prompts, prompt_sources, config))
    if phrases:
        tc = time.perf_counter()
        parts.append(concept_masks(sam, emb, phrases, config))
        timings["concept_masks"] = (time.perf_counter() - tc) * 1000
    candidates = candidates_from_masks(sam, emb, LowResMasks.concat(parts), heatmap, config) if emb is not None \
        else Candidates.empty(H, W)
    timings["sam_masks"] = (time.perf_counter() - t) * 1000
    if progress:
        progress("discovered", 4, 4)
    return SegmentationResult(question, image, candidates, heatmap, kind="discover",
                              grid=None if grid is None else grid.cpu().numpy().astype(np.float32), peaks=peaks_xy,
                              timings_ms=timings)
