"""ComfyUI entry point: ComfyUI imports this file when the repository sits in ``ComfyUI/custom_nodes/``.

It only exports the node classes. No model, network or heavy import happens here; the engine loads when a node runs.
The repository root goes on ``sys.path`` (at the end, so ComfyUI's own modules win) unless the ``rea2seg`` engine is
already importable, e.g. after ``pip install -e .``.
"""
import importlib.util
import os
import sys

if importlib.util.find_spec("rea2seg") is None or importlib.util.find_spec("rea2seg_nodes") is None:
    sys.path.append(os.path.dirname(os.path.abspath(__file__)))

from rea2seg_nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
