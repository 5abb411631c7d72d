"""Stage 1 with a segmentation MLLM as the candidate generator (LISA, SESAME, the Rea2Seg SESAME generator).

One teacher-forced forward of LISA's conversation (``... ASSISTANT: [SEG].``; or a greedy answer first) gives both
the generator's own answer and the attention discovery reads:

- the final hidden state of the token before each ``[SEG]`` -> ``text_hidden_fcs`` -> the SAM prompt embedding ->
  the generator's mask, a candidate with source ``generator``;
- the attention of that row and of the question rows over CLIP's image tokens (recorded rows only, in the layer
  band) -> the token grid, which covers the centre square CLIP crops -> the same heat map, peaks and SAM prompts as
  VLM discovery (``discovery.prompts_from_peaks`` / ``masks_from_prompts``) -> source ``peak:k`` / ``box:k``.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from .config import DiscoveryConfig, GeneratorConfig
from .discovery import mask_iou_matrix, masks_from_prompts, prompts_from_peaks
from .heatmap import find_peaks, heatmap_from_grids, upsample
from .image_cache import ImageCache, ImageEntry
from .models.attention import layer_band, record_attention
from .models.lisa import LisaGenerator, LisaPrompt, image_token_grid
from .models.sam import PromptBatch, SamModel
from .types import CancelCheck, Candidates, Progress, SegmentationResult, check_cancel, masks_to_boxes


def attention_rows(prompt: LisaPrompt, rows: str) -> dict[str, list[int]]:
    """The query rows whose attention makes the map: "seg" = the row before each ``[SEG]`` (its hidden state is the
    SAM prompt), "question" = the question and ``ASSISTANT:`` rows. Without a ``[SEG]`` only the question rows."""
    groups = {}
    if rows in ("seg", "seg+question") and prompt.seg:
        groups["seg"] = [p - 1 for p in prompt.seg]
    if rows in ("question", "seg+question") or not groups:
        groups["question"] = list(range(prompt.question.start, prompt.question.stop))
    return groups


def generator_pass(gen: LisaGenerator, image: np.ndarray, question: str, config: GeneratorConfig,
                   layers: list[int], entry: ImageEntry) -> tuple[torch.Tensor, torch.Tensor, LisaPrompt]:
    """LISA's conversation for ``question`` through the generator, recording attention. Returns the (g, g) grid map
    (mean over layers and heads, then over each row group, then over the groups), the ``[SEG]`` prompt embeddings
    (n_seg, D) and the prompt as run."""
    def encode():
        with gen.lock:
            return gen.image_features(gen.pixel_values(image))

    features = entry.get_or_compute(("lisa-image-features", id(gen.llava)), encode)
    prompt = gen.prompt(config.system, config.query.format(question=question), config.answer)
    if config.answer is None:
        with gen.lock:
            answer = gen.generate(gen.inputs_embeds(prompt, features), config.max_new_tokens)
        prompt = gen.with_answer(prompt, answer)
    groups = attention_rows(prompt, config.rows)
    rows = sorted({r for g in groups.values() for r in g})
    with gen.lock, record_attention(torch.tensor(rows), prompt.image, set(layers)) as rec:
        hidden = gen.hidden_states(gen.inputs_embeds(prompt, features))
    if not rec.out:
        raise RuntimeError(f"no attention was recorded: {gen.source} does not use Rea2Seg's attention function")
    per_row = torch.stack([rec.out[l][0] for l in sorted(rec.out)]).float().mean(dim=(0, 1)).cpu()  # (R, N)
    index = {r: i for i, r in enumerate(rows)}
    per_token = torch.stack([per_row[[index[r] for r in g]].mean(0) for g in groups.values()]).mean(0)
    return image_token_grid(per_token, gen.grid_size), gen.seg_embeddings(hidden, prompt), prompt


def generator_candidates(gen: LisaGenerator, image: np.ndarray, embeddings: torch.Tensor, heatmap: np.ndarray,
                         entry: ImageEntry) -> Candidates:
    """The generator's own masks (LISA's decoding of each ``[SEG]`` embedding; empty masks dropped), source
    ``generator`` (``generator:i`` for later ``[SEG]``s)."""
    H, W = image.shape[:2]
    if embeddings.shape[0] == 0:
        return Candidates.empty(H, W)
    emb = entry.get_or_compute(("sam-embedding", id(gen.sam)), lambda: gen.sam.embed(image))
    low, iou = gen.seg_masks(emb, embeddings)
    masks = gen.sam.upscale(emb, low)
    keep = np.flatnonzero(masks.reshape(len(masks), -1).any(1))
    masks = masks[keep]
    mass = (masks * heatmap[None]).reshape(len(keep), -1).sum(1) / max(float(heatmap.sum()), 1e-8)
    return Candidates(masks, masks_to_boxes(masks), np.full((len(keep), 2), np.nan), iou.cpu().numpy()[keep], mass,
                      ["generator" if i == 0 else f"generator:{i}" for i in keep])


def heatmap_in_view(grid: torch.Tensor, box: tuple[float, float, float, float], image_hw: tuple[int, int]
                    ) -> np.ndarray:
    """The (h, w) grid as an (H, W) map: upsampled onto the part of the image CLIP saw, zero elsewhere."""
    H, W = image_hw
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(max(x1, x0 + 1), W), min(max(y1, y0 + 1), H)
    out = np.zeros((H, W), np.float32)
    out[y0:y1, x0:x1] = upsample(grid, (y1 - y0, x1 - x0))
    return out


def view_prompts(grid: torch.Tensor, peaks_rc: np.ndarray, box: tuple[float, float, float, float],
                 config: DiscoveryConfig) -> tuple[PromptBatch, list[str], np.ndarray]:
    """``discovery.prompts_from_peaks`` for a grid that covers ``box`` (x0, y0, x1, y1) of the image: the prompts
    and peak points (K, 2) xy in image pixels."""
    x0, y0, x1, y1 = box
    prompts, sources, peaks_xy = prompts_from_peaks(grid, peaks_rc, (y1 - y0, x1 - x0), config)
    shift = np.array([x0, y0], np.float32)
    return (PromptBatch(prompts.points + shift, prompts.labels, prompts.boxes + np.tile(shift, 2)), sources,
            peaks_xy + shift)


def discover_with_generator(gen: LisaGenerator, sam: SamModel, image: np.ndarray, question: str,
                            config: DiscoveryConfig = DiscoveryConfig(),
                            generator: GeneratorConfig = GeneratorConfig(), cache: ImageCache | None = None,
                            progress: Progress | None = None, cancel: CancelCheck | None = None
                            ) -> SegmentationResult:
    """image: (H, W, 3) uint8 RGB; question: the checked question. ``sam`` makes the peak candidates (the generator's
    own SAM unless another was chosen). Returns an answer of kind "discover": the generator's masks first, then the
    peak candidates that do not repeat them (IoU above ``config.nms_iou``), at most ``config.max_candidates`` in all,
    with the heat map, the token grid and the peaks."""
    timings: dict[str, float] = {}
    entry = cache.entry(image) if cache is not None else ImageEntry()
    H, W = image.shape[:2]
    layers = layer_band(gen.num_layers, config.layer_band)

    def stage(name: str, i: int, total: int = 4):
        check_cancel(cancel)
        if progress:
            progress(name, i, total)

    stage("attention", 0)
    t = time.perf_counter()
    grid_q, embeddings, _ = generator_pass(gen, image, question, generator, layers, entry)
    grid_g = None
    if config.relative_to_generic:
        key = ("generator-generic-grid", id(gen.llava), tuple(layers), config.generic_prompt, generator)
        grid_g = entry.get_or_compute(
            key, lambda: generator_pass(gen, image, config.generic_prompt, generator, layers, entry)[0])
    grid = heatmap_from_grids(grid_q, grid_g, config.sink_quantile, config.smooth_sigma)
    box = gen.view_box((H, W))
    heatmap = heatmap_in_view(grid, box, (H, W))
    timings["attention"] = (time.perf_counter() - t) * 1000

    stage("prompts", 1)
    t = time.perf_counter()
    peaks_rc, _ = find_peaks(grid, config.peak_threshold, config.peak_min_distance, config.max_peaks)
    prompts, sources, peaks_xy = view_prompts(grid, peaks_rc, box, config)
    timings["prompts"] = (time.perf_counter() - t) * 1000

    stage("sam_embedding", 2)
    t = time.perf_counter()
    emb = entry.get_or_compute(("sam-embedding", id(sam)), lambda: sam.embed(image))  # any segmenter
    timings["sam_embedding"] = (time.perf_counter() - t) * 1000

    stage("sam_masks", 3)
    t = time.perf_counter()
    own = generator_candidates(gen, image, embeddings, heatmap, entry)
    found = masks_from_prompts(sam, emb, prompts, sources, heatmap, config) if generator.peaks \
        else Candidates.empty(H, W)
    if len(own) and len(found):  # a peak candidate repeating the generator's mask adds nothing
        iou = mask_iou_matrix(np.concatenate([own.masks, found.masks]))[len(own):, :len(own)]
        found = found.subset(np.flatnonzero(iou.max(1) <= config.nms_iou))
    parts = [c for c in (own, found) if len(c)]
    candidates = Candidates.merge(parts).subset(slice(0, config.max_candidates)) if parts else Candidates.empty(H, W)
    timings["sam_masks"] = (time.perf_counter() - t) * 1000
    if progress:
        progress("discovered", 4, 4)
    return SegmentationResult(question, image, candidates, heatmap, kind="discover",
                              grid=grid.cpu().numpy().astype(np.float32), peaks=peaks_xy, timings_ms=timings)
