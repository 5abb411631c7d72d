"""Rea2Seg: reasoning segmentation as a building block (VLM attention -> SAM candidates -> VLM scoring)."""
from __future__ import annotations

__version__ = "0.1.0"

from . import errors  # noqa: E402
from .config import DiscoveryConfig, PipelineConfig, ScoringConfig  # noqa: E402
from .types import Candidates, SegmentationResult  # noqa: E402

__all__ = ["Rea2Seg", "Candidates", "SegmentationResult", "DiscoveryConfig", "PipelineConfig", "ScoringConfig",
           "errors", "__version__"]


def __getattr__(name):  # heavy imports (torch, transformers) only when the pipeline is used
    if name == "Rea2Seg":
        from .pipeline import Rea2Seg
        return Rea2Seg
    raise AttributeError(name)
