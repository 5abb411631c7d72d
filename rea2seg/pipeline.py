"""``Rea2Seg``: the pipeline every door calls (discover -> score -> select, or ``segment`` for all three)."""
from __future__ import annotations

import functools
import gc
import time
from dataclasses import replace

import numpy as np
import torch

from .config import DiscoveryConfig, PipelineConfig, ScoringConfig, check_sources
from .discovery import check_sources_supported, discover_candidates
from .errors import InputError, ResourceError
from .generator_discovery import discover_with_generator
from .image_cache import ImageCache
from .images import ImageLike
from .inputs import check_image, check_mode, check_question, check_question_tokens, check_top_k
from .models.lisa import LisaGenerator, is_lisa_source, load_lisa
from .models.attention import discovery_layout
from .models.segmenter import Segmenter, load_segmenter, segmenter_summary
from .models.vlm import VLM, forget_vlm, load_vlm
from .presets import get_preset
from .scoring import score_candidates
from .selection import select_mask
from .types import CancelCheck, Candidates, Progress, SegmentationResult


def _friendly_errors(fn):
    """Turn out-of-memory errors into one clear ``ResourceError``."""

    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        try:
            return fn(self, *args, **kwargs)
        except torch.OutOfMemoryError as e:
            self.clear_cache()
            raise ResourceError(f"out of memory on {self.vlm.device} ({str(e).splitlines()[0][:120]}); lower "
                                f"vlm_max_pixels or scoring batch_size, use the 'small' preset, or free GPU memory") \
                from None
    return wrapper


def _with_scorer_settings(config: PipelineConfig, scorer: str | None) -> PipelineConfig:
    """``config`` with the scoring settings a trained scorer records in its rea2seg_scorer.json (what it was shown in
    training), if ``scorer`` is such a directory."""
    import json
    from pathlib import Path

    info = Path(scorer).expanduser() / "rea2seg_scorer.json" if scorer else None
    if info is None or not info.is_file():
        return config
    try:
        saved = json.loads(info.read_text())
        scoring = replace(config.scoring, mode=saved["mode"], **saved.get("scoring", {}))
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"{info} is unreadable ({e}); re-run `rea2seg train-scorer` or remove the file") from None
    return replace(config, scoring=scoring)


def _with_sources(config: PipelineConfig, sources) -> PipelineConfig:
    """``config`` with its candidate sources replaced (None: unchanged)."""
    if sources is None:
        return config
    return replace(config, discovery=replace(config.discovery, sources=check_sources(sources)))


class Rea2Seg:
    """Reasoning segmentation: image + question -> mask.

    vlm: the discovery model: a VLM (and the scorer unless ``scorer`` is given) or a ``LisaGenerator`` (a
    segmentation MLLM: its own masks and its attention are the candidates; it needs a ``scorer``); sam: a loaded
    segmenter (SAM, SAM 2.1 or SAM 3: ``models.segmenter.load_segmenter``); config: pipeline settings. Build it with
    ``Rea2Seg.from_preset(name)`` or ``Rea2Seg.from_pretrained(vlm=...)``.
    """

    def __init__(self, vlm: VLM | LisaGenerator, sam: Segmenter, scorer: VLM | None = None,
                 config: PipelineConfig | None = None, name: str = "custom", warning: str | None = None):
        if isinstance(vlm, LisaGenerator):
            if scorer is None:
                raise InputError(f"{vlm.source} is a segmentation MLLM (LISA format): it finds candidates but cannot "
                                 f"score them; pass a scorer VLM too (e.g. --scorer Qwen/Qwen2.5-VL-7B-Instruct)")
        else:
            discovery_layout(vlm.config)  # a family discovery cannot read fails here, not at the first image
        self.vlm = vlm
        self.sam = sam
        self.scorer = scorer or vlm
        self.config = config or PipelineConfig()
        self.name = name
        self.warning = warning
        self.cache = ImageCache(self.config.cache_images)

    # ---- construction ----------------------------------------------------------------------------------------------
    @classmethod
    def from_preset(cls, name: str = "default", *, device=None, dtype=None, config: PipelineConfig | None = None,
                    download: bool = False, scorer: str | None = None,
                    sources: str | list[str] | tuple[str, ...] | None = None) -> "Rea2Seg":
        """A named preset (``rea2seg.presets``); ``scorer`` replaces its scoring VLM (e.g. a ``train-scorer``
        output), ``config`` its settings, ``sources`` only its candidate sources."""
        preset = get_preset(name)
        config = _with_sources(config or preset.config, sources)
        if preset.random_weights:
            from .testing import MEANINGLESS, tiny_models_dir, tiny_preset_models

            vlm, sam, tiny_scorer = tiny_preset_models(preset.vlm, preset.sam, preset.scorer, tiny_models_dir())
            return cls.from_pretrained(str(vlm), str(sam) if sam else None,
                                       scorer=scorer or (str(tiny_scorer) if tiny_scorer else None), device=device,
                                       dtype=dtype, config=config, name=name, warning=MEANINGLESS)
        return cls.from_pretrained(preset.vlm, preset.sam, scorer=scorer or preset.scorer, device=device,
                                   dtype=dtype, config=config, download=download, name=name)

    @classmethod
    def from_pretrained(cls, vlm: str, sam: str | None = None, *, sam_kind: str | None = None,
                        scorer: str | None = None, device=None, dtype=None, config: PipelineConfig | None = None,
                        download: bool = False, trust_remote_code: bool = False, name: str = "custom",
                        warning: str | None = None, sources: str | list[str] | tuple[str, ...] | None = None
                        ) -> "Rea2Seg":
        """vlm: hub id or local directory of a VLM, or of a LISA-format segmentation MLLM (LISA, SESAME: then
        ``scorer`` is required); sam: the segmenter, a SAM checkpoint path or kind (vit_h / vit_l / vit_b) or a SAM
        2.1 / SAM 3 hub id or directory (facebook/sam2.1-hiera-large, facebook/sam3); None / "": the generator's own
        SAM, or the default preset's for a VLM; scorer: another VLM for stage 2 (the same object is reused when it
        names the same model). A scorer trained by ``rea2seg train-scorer`` brings the scoring settings it was
        trained with (mode, views). sources: the candidate sources (default: the config's)."""
        config = _with_sources(_with_scorer_settings(config or PipelineConfig(), scorer), sources)
        max_pixels = config.discovery.vlm_max_pixels
        if is_lisa_source(vlm):
            if not scorer:
                raise InputError(f"{vlm} is a segmentation MLLM (LISA format): it finds candidates but cannot score "
                                 f"them; pass a scorer VLM too (e.g. --scorer Qwen/Qwen2.5-VL-7B-Instruct)")
            gen = load_lisa(vlm, device, dtype, download)
            s = load_segmenter(sam, sam_kind, gen.device, download) if sam else gen.sam
            sc = load_vlm(scorer, device, dtype, trust_remote_code, download, max_pixels)
            return cls(gen, s, sc, config, name, warning)
        sam = sam or get_preset("default").sam
        v = load_vlm(vlm, device, dtype, trust_remote_code, download, max_pixels, discovery=True)
        s = load_segmenter(sam, sam_kind, v.device, download)
        sc = load_vlm(scorer, device, dtype, trust_remote_code, download, max_pixels) if scorer else None
        return cls(v, s, sc, config, name, warning)

    # ---- stages ----------------------------------------------------------------------------------------------------
    def _question(self, question) -> str:
        return check_question_tokens(check_question(question), self.vlm.tokenizer)

    def _discovery_config(self, config: DiscoveryConfig | None, sources) -> DiscoveryConfig:
        cfg = config or self.config.discovery
        if sources is not None:
            if isinstance(self.vlm, LisaGenerator):
                raise InputError(f"candidate sources choose what a VLM's discovery makes; {self.vlm.source} is a "
                                 f"LISA-format generator, whose candidates are its own masks and attention peaks "
                                 f"(GeneratorConfig.peaks); drop the sources")
            cfg = replace(cfg, sources=check_sources(sources))
        if not isinstance(self.vlm, LisaGenerator):
            check_sources_supported(self.sam, cfg.sources)
        return cfg

    @_friendly_errors
    def discover(self, image: ImageLike, question: str, *, config: DiscoveryConfig | None = None,
                 sources: str | list[str] | tuple[str, ...] | None = None, progress: Progress | None = None,
                 cancel: CancelCheck | None = None) -> SegmentationResult:
        """Stage 1 on ``image`` (path, PIL or (H, W, 3) uint8): an answer of kind "discover" holding the candidates
        (unscored, numbered from 1), the heat map and the peaks. ``sources`` (e.g. ["attention", "concepts"]) replaces
        the configured candidate sources for this call."""
        cfg = self._discovery_config(config, sources)
        arr = check_image(image)
        q = self._question(question)
        found = self._discover(arr, q, cfg, progress, cancel)
        found.warning = self.warning
        return found

    @_friendly_errors
    def score(self, image: ImageLike, question: str, candidates: Candidates, *, mode: str | None = None,
              config: ScoringConfig | None = None, progress: Progress | None = None,
              cancel: CancelCheck | None = None) -> Candidates:
        """Stage 2: a scored copy of ``candidates`` (mode: yesno | reasoning | comparative)."""
        cfg = self._scoring_config(mode, config)
        arr = check_image(image)
        if len(candidates) and candidates.image_size != arr.shape[:2]:
            raise InputError(f"candidates are for a {candidates.image_size[1]}x{candidates.image_size[0]} image but "
                             f"the image is {arr.shape[1]}x{arr.shape[0]}; score them on the image they came from")
        return score_candidates(self.scorer, arr, self._question(question), candidates, cfg, progress, cancel)

    def select(self, question: str, candidates: Candidates, *, top_k: int | None = None, merge: bool = False,
               heatmap: np.ndarray | None = None, timings_ms: dict | None = None, mode: str | None = None,
               image: ImageLike | None = None) -> SegmentationResult:
        """Stage 3: rank and pick (``merge`` unions the top-k masks for multi-object questions)."""
        arr = None if image is None else check_image(image)
        found = SegmentationResult(check_question(question), arr, candidates, heatmap,
                                   mode=check_mode(mode) or self.config.scoring.mode,
                                   timings_ms=dict(timings_ms or {}), warning=self.warning)
        return select_mask(found, check_top_k(top_k or self.config.top_k), merge)

    @_friendly_errors
    def segment(self, image: ImageLike, question: str, *, top_k: int | None = None, mode: str | None = None,
                merge: bool = False, sources: str | list[str] | tuple[str, ...] | None = None,
                progress: Progress | None = None, cancel: CancelCheck | None = None) -> SegmentationResult:
        """All three stages. Returns the mask, its box, score and reasoning, every candidate ranked with scores, the
        heat map and per-stage timings (ms). ``sources`` replaces the configured candidate sources for this call."""
        t0 = time.perf_counter()
        cfg = self._scoring_config(mode, None)
        discovery = self._discovery_config(None, sources)
        top_k = check_top_k(top_k or self.config.top_k)
        if self.config.seed is not None:
            torch.manual_seed(self.config.seed)
        arr = check_image(image)
        q = self._question(question)
        found = self._discover(arr, q, discovery, progress, cancel)
        t = time.perf_counter()
        found.candidates = score_candidates(self.scorer, arr, q, found.candidates, cfg, progress, cancel)
        found.timings_ms["scoring"] = (time.perf_counter() - t) * 1000
        found.mode, found.warning = cfg.mode, self.warning
        t = time.perf_counter()
        result = select_mask(found, top_k, merge)
        result.timings_ms["selection"] = (time.perf_counter() - t) * 1000
        result.timings_ms["total"] = (time.perf_counter() - t0) * 1000
        return result

    def _discover(self, image: np.ndarray, question: str, config: DiscoveryConfig, progress, cancel
                  ) -> SegmentationResult:
        if isinstance(self.vlm, LisaGenerator):
            return discover_with_generator(self.vlm, self.sam, image, question, config, self.config.generator,
                                           self.cache, progress, cancel)
        return discover_candidates(self.vlm, self.sam, image, question, config, self.cache, progress, cancel)

    def _scoring_config(self, mode: str | None, config: ScoringConfig | None) -> ScoringConfig:
        cfg = config or self.config.scoring
        if check_mode(mode) is not None:
            cfg = replace(cfg, mode=mode)
        return cfg

    # ---- memory ----------------------------------------------------------------------------------------------------
    def clear_cache(self) -> None:
        self.cache.clear()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def offload(self, device: str = "cpu") -> None:
        """Move the models to ``device`` (e.g. between ComfyUI runs) and drop cached per-image work."""
        self.clear_cache()
        for m in {id(x): x for x in (self.vlm, self.scorer)}.values():
            m.to(torch.device(device))
        self.sam.to(torch.device(device))
        self.clear_cache()

    def to(self, device) -> "Rea2Seg":
        for m in {id(x): x for x in (self.vlm, self.scorer)}.values():
            m.to(torch.device(device))
        self.sam.to(torch.device(device))
        self.cache.clear()
        return self

    def unload(self) -> None:
        """Forget the models (the shared registry too) so their memory can be freed."""
        for m in (self.vlm, self.scorer):
            forget_vlm(m)
        self.clear_cache()

    def status(self) -> dict:
        return {
            "name": self.name,
            "vlm": self.vlm.source, "vlm_family": self.vlm.family,
            "scorer": self.scorer.source, "scorer_shared": self.scorer is self.vlm,
            "sam": str(self.sam.path), "sam_kind": self.sam.kind, "segmenter": segmenter_summary(self.sam),
            "sources": list(self.config.discovery.sources),
            "device": str(self.vlm.device), "dtype": str(self.vlm.dtype).replace("torch.", ""),
            "scoring_mode": self.config.scoring.mode, "top_k": self.config.top_k,
            "cache": self.cache.stats(),
            **({"warning": self.warning} if self.warning else {}),
        }
