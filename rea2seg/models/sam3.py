"""SAM 3 through transformers: ``Sam3TrackerModel`` for point and box prompts (SAM 2's API) and ``Sam3Model`` for text
(concept) prompts, both from the one published checkpoint ``facebook/sam3`` (model_type ``sam3_video``).

The checkpoint stores SAM 3's ViT once; both heads read it. Here both hold one module (``SharedBackbone``), and an
image's ViT output is computed once and kept with its embedding, so concept prompts on an embedded image cost only the
concept head (its neck, the text encoder, the DETR encoder/decoder and the mask head). The concept head is loaded on
first use: a SAM 3 driven only by points never holds it.
"""
from __future__ import annotations

import contextlib
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from .sam2 import HFEmbedding, PromptableSegmenter, load_hf_model, load_hf_processor


class SharedBackbone(torch.nn.Module):
    """SAM 3's ViT as a module both heads hold. Inside ``serve(output)`` a call returns ``output`` (the ViT output
    already computed for this image, in this thread) instead of running the ViT again."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner
        self._served = threading.local()

    def forward(self, pixel_values, **kwargs):
        served = getattr(self._served, "output", None)
        return served if served is not None else self.inner(pixel_values, **kwargs)

    def get_input_embeddings(self):
        return self.inner.get_input_embeddings()

    @contextlib.contextmanager
    def serve(self, output):
        prev = getattr(self._served, "output", None)
        self._served.output = output
        try:
            yield
        finally:
            self._served.output = prev


@dataclass
class ConceptMasks:
    """One phrase's instances: logits (K, s, s) in the segmenter's low-resolution convention (``upscale`` turns them
    into the masks SAM 3's ``post_process_instance_segmentation`` gives: sigmoid > 0.5 after bilinear resizing), scores
    (K,) sigmoid(logit) x sigmoid(presence), best first."""

    logits: torch.Tensor
    scores: np.ndarray


@dataclass(eq=False)
class Sam3Segmenter(PromptableSegmenter):
    """SAM 3: points and boxes through the tracker (``PromptableSegmenter``), noun phrases through ``segment_concepts``.
    has_detector: the checkpoint holds the concept detector (the published ``sam3_video`` one does)."""

    has_detector: bool = True
    _detector: object = field(default=None, repr=False)
    _text_processor: object = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    backend = "sam3"

    @property
    def supports_concepts(self) -> bool:
        return self.has_detector

    @property
    def backbone(self) -> SharedBackbone:
        return self.model.vision_encoder.backbone

    def to(self, device: torch.device) -> "Sam3Segmenter":
        super().to(device)
        if self._detector is not None:
            self._detector.to(device)
        return self

    @torch.inference_mode()
    def embed(self, image: np.ndarray) -> HFEmbedding:
        """image: (H, W, 3) uint8 RGB -> the tracker's embedding, with the ViT output and the pixel values kept for
        the concept head (so a concept prompt never runs the ViT again)."""
        pv = self.pixel_values(image)
        vit = self.backbone.inner(pv)
        with self.backbone.serve(vit):
            feats = self.model.get_image_embeddings(pv)
        return HFEmbedding(list(feats), (int(image.shape[0]), int(image.shape[1])),
                           extra={"vit": vit, "pixel_values": pv})

    def detector(self):
        """SAM 3's concept detector (``Sam3Model``) and its processor (CLIP tokenizer), loaded once on first use and
        given the tracker's ViT (the checkpoint holds one)."""
        if not self.has_detector:
            raise InputError(f"{self.source} has no concept detector (a SAM 3 tracker-only checkpoint); concept "
                             f"candidates need the full facebook/sam3 checkpoint")
        with self._lock:
            if self._detector is None:
                from transformers import Sam3Model, Sam3Processor

                det = load_hf_model(Sam3Model, self.path, "SAM 3's concept detector")
                det.vision_encoder.backbone = self.backbone
                det.to(self.device)
                self._text_processor = load_hf_processor(Sam3Processor, self.path, "SAM 3 text")
                self._detector = det
            return self._detector, self._text_processor

    @torch.inference_mode()
    def segment_concepts(self, emb: HFEmbedding, phrases: list[str], threshold: float = 0.3, max_instances: int = 4
                         ) -> list[ConceptMasks]:
        """Every phrase as one SAM 3 text prompt on the embedded image, all phrases in one batched call. Per phrase:
        the instances scoring at least ``threshold``, always the best one, at most ``max_instances``."""
        from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

        if not phrases:
            return []
        det, proc = self.detector()
        with self.backbone.serve(emb.extra["vit"]):
            vision = det.get_vision_features(pixel_values=emb.extra["pixel_values"])
        k = len(phrases)
        if k > 1:  # the detector needs one vision row per text row; expand is a view, not a copy
            vision = Sam3VisionEncoderOutput(
                last_hidden_state=vision.last_hidden_state.expand(k, *vision.last_hidden_state.shape[1:]),
                fpn_hidden_states=tuple(x.expand(k, *x.shape[1:]) for x in vision.fpn_hidden_states),
                fpn_position_encoding=tuple(x.expand(k, *x.shape[1:]) for x in vision.fpn_position_encoding))
        # the processor pads every phrase to CLIP's 32 positions but cannot truncate: tokenize here
        length = int(det.config.text_config.max_position_embeddings)
        text = proc.tokenizer(list(phrases), padding="max_length", max_length=length, truncation=True,
                              return_tensors="pt")
        out = det(vision_embeds=vision, input_ids=text["input_ids"].to(self.device),
                  attention_mask=text["attention_mask"].to(self.device))
        scores = out.pred_logits.float().sigmoid()
        if out.presence_logits is not None:
            scores = scores * out.presence_logits.float().sigmoid()
        result = []
        for i in range(k):
            order = torch.argsort(scores[i], descending=True)
            good = order[scores[i][order] >= threshold][:max_instances]
            keep = good if good.numel() else order[:1]
            # sigmoid(x) - 0.5 + threshold: bilinear resizing is linear, so "upscaled value > mask_threshold" is
            # exactly SAM 3's "upscaled probability > 0.5"
            low = out.pred_masks[i, keep].float().sigmoid() - 0.5 + self.mask_threshold
            result.append(ConceptMasks(low, scores[i, keep].cpu().numpy()))
        return result


def load_sam3(directory: Path, source: str, device=None) -> Sam3Segmenter:
    """Load SAM 3 from a checkpoint directory: the published ``sam3_video`` one (tracker + concept detector), or a
    tracker-only ``sam3_tracker`` one (points and boxes only)."""
    from transformers import Sam3TrackerModel, Sam3TrackerProcessor

    from .device import resolve_device

    dev = resolve_device(device)
    model_type = json.loads((directory / "config.json").read_text()).get("model_type")
    tracker = load_hf_model(Sam3TrackerModel, directory, "SAM 3's tracker")
    tracker.vision_encoder.backbone = SharedBackbone(tracker.vision_encoder.backbone)
    processor = load_hf_processor(Sam3TrackerProcessor, directory, "SAM 3")
    tracker.to(dev)
    return Sam3Segmenter(tracker, processor, Path(str(source).rstrip("/")).name or directory.name, str(source),
                         directory, dev, has_detector=model_type == "sam3_video")
