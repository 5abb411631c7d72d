"""LangChain tools for Rea2Seg: ``Rea2SegToolkit(preset=..., allowed_dirs=[...]).get_tools()``."""
from .toolkit import (DiscoverCandidatesTool, DiscoverInput, ReasoningSegmentTool, Rea2SegToolkit, ScoreCandidatesTool,
                      ScoreInput, SegmentInput)

__all__ = ["Rea2SegToolkit", "ReasoningSegmentTool", "DiscoverCandidatesTool", "ScoreCandidatesTool", "SegmentInput",
           "DiscoverInput", "ScoreInput"]
