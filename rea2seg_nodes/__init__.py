"""ComfyUI nodes for Rea2Seg (V1 node API: a frozen interface that loads in ComfyUI 0.3.75 and in current releases).

Thin door: the nodes convert ComfyUI types and call the engine in ``rea2seg``. Importing this package loads neither
ComfyUI nor the models; the engine's heavy modules are imported when a node first runs.
"""
from .model_nodes import LoadModels
from .segment_nodes import CandidateMasks, DiscoverCandidates, ReasoningSegment, ScoreCandidates, SelectMask

# Ids are stable (saved workflows refer to them); display names may change.
_NODES = [
    ("Rea2Seg_LoadModels", LoadModels, "Load Rea2Seg Models"),
    ("Rea2Seg_DiscoverCandidates", DiscoverCandidates, "Discover Candidates (Rea2Seg)"),
    ("Rea2Seg_ScoreCandidates", ScoreCandidates, "Score Candidates (Rea2Seg)"),
    ("Rea2Seg_SelectMask", SelectMask, "Select Mask (Rea2Seg)"),
    ("Rea2Seg_CandidateMasks", CandidateMasks, "Top-k Candidate Masks (Rea2Seg)"),
    ("Rea2Seg_ReasoningSegment", ReasoningSegment, "Reasoning Segment (Rea2Seg)"),
]
NODE_CLASS_MAPPINGS = {node_id: cls for node_id, cls, _ in _NODES}
NODE_DISPLAY_NAME_MAPPINGS = {node_id: name for node_id, _, name in _NODES}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
