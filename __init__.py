"""ComfyUI entry point: ComfyUI imports this file when the repository sits in ``ComfyUI/custom_nodes/``.

It only exports the node classes. No model, network or heavy import happens here; the engine loads when a node runs.
The repository root goes on ``sys.path`` (at the end, so ComfyUI's own modules win) unless the ``rea2seg`` engine is
already importable, e.g. after ``pip install -e .``.
"""
import importlib.util
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
_SHADOWED = os.path.join(_HERE, __name__, "__init__.py") if __name__.isidentifier() else ""

if _SHADOWED and os.path.isfile(_SHADOWED):
    # This folder was imported under the name of a package inside it: a checkout named "rea2seg" that a test runner
    # (pytest's rootdir package) imports as "rea2seg". Hand the name to the engine package, which the import then
    # returns; ComfyUI never gets here (it names the module after the folder's full path).
    _spec = importlib.util.spec_from_file_location(__name__, _SHADOWED)
    _module = importlib.util.module_from_spec(_spec)
    sys.modules[__name__] = _module
    _spec.loader.exec_module(_module)
else:
    if importlib.util.find_spec("rea2seg") is None or importlib.util.find_spec("rea2seg_nodes") is None:
        sys.path.append(_HERE)

    from rea2seg_nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402

    __all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
