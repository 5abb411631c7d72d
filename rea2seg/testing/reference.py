"""Plain reference implementations that tests and benchmarks compare the engine's fast paths with."""
from __future__ import annotations

import numpy as np
import torch

from ..models.sam import PromptBatch, SamEmbedding, SamModel


@torch.inference_mode()
def predict_one_by_one(sam: SamModel, emb: SamEmbedding, prompts: PromptBatch, multimask: bool = True
                       ) -> tuple[np.ndarray, np.ndarray]:
    """One decoder call per prompt with full-resolution post-processing of every output (what a naive
    ``SamPredictor.predict`` loop does). Returns masks (N, M, H, W) bool and IoU (N, M)."""
    masks, ious = [], []
    for i in range(len(prompts)):
        one = PromptBatch(prompts.points[i:i + 1], prompts.labels[i:i + 1], prompts.boxes[i:i + 1])
        low, iou = sam.decode(emb, one, multimask, chunk=1)
        masks.append(sam.upscale(emb, low[0]))
        ious.append(iou[0].cpu().numpy())
    return np.stack(masks), np.stack(ious)
