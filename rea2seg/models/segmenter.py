"""The segmenter interface discovery drives, and one loader for every backend.

Backends: Meta's ``segment_anything`` (SAM v1: a ``.pth`` / ``.safetensors`` file, ``models/sam.py``), SAM 2.1
(``facebook/sam2.1-hiera-*`` through transformers' ``Sam2Model``, ``models/sam2.py``) and SAM 3 (``facebook/sam3``:
``Sam3TrackerModel`` for points and boxes, ``Sam3Model`` for text/concept prompts, ``models/sam3.py``). Each embeds an
image once, decodes batches of point/box prompts into low-resolution logits, and post-processes only the masks
discovery keeps.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from ..errors import CheckpointError, InputError, ModelError, ModelNotFoundError
from .download import download_hub_dir, models_home, offline

#: Backends by the ``model_type`` in a transformers checkpoint's config.json. The published SAM 2.1 and SAM 3 repos
#: are video checkpoints (``sam2_video``, ``sam3_video``); their image models load from them.
HUB_BACKENDS = {"sam2": "sam2", "sam2_video": "sam2", "sam3_video": "sam3", "sam3_tracker": "sam3",
                "sam3_tracker_video": "sam3"}
#: The published hub checkpoints (``rea2seg models download`` knows where each goes without fetching it first).
HUB_SEGMENTERS = {
    **{f"facebook/sam2.1-hiera-{s}": "sam2" for s in ("tiny", "small", "base-plus", "large")},
    **{f"facebook/sam2-hiera-{s}": "sam2" for s in ("tiny", "small", "base-plus", "large")},
    "facebook/sam3": "sam3",
}
#: Folder of each hub backend inside the models folder (and ComfyUI's ``models/``).
BACKEND_FOLDERS = {"sam2": "sam2", "sam3": "sam3"}
_HUB_ID = re.compile(r"[\w-][\w.-]*/[\w.-]+")


@runtime_checkable
class Embedding(Protocol):
    """What ``Segmenter.embed`` returns: backend-specific features, and the image's (H, W)."""

    original_size: tuple[int, int]


@runtime_checkable
class Segmenter(Protocol):
    """What discovery needs from a segmenter.

    backend: "sam" | "sam2" | "sam3"; kind: the model's name (vit_h, sam2.1-hiera-large, sam3 ...); source: what the
    user passed (a kind, a file, a directory or a hub id); path: the file or directory loaded; mask_threshold: the
    logit above which a low-resolution value is foreground; supports_concepts: text prompts (SAM 3's
    ``segment_concepts``) are available.
    """

    backend: str
    kind: str
    source: str
    path: Path
    device: torch.device

    @property
    def mask_threshold(self) -> float: ...

    @property
    def supports_concepts(self) -> bool: ...

    def to(self, device: torch.device) -> "Segmenter": ...

    def embed(self, image: np.ndarray) -> Embedding:
        """image: (H, W, 3) uint8 RGB -> the image embedding (the expensive step; discovery caches it per image)."""

    def decode(self, emb: Embedding, prompts, multimask: bool = True, chunk: int = 32
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """A ``PromptBatch`` of N prompts in image pixels -> low-resolution logits (N, M, s, s) and predicted IoU
        (N, M); M = 3 with ``multimask`` else 1; at most ``chunk`` prompts per decoder call."""

    def upscale(self, emb: Embedding, low: torch.Tensor) -> np.ndarray:
        """(K, s, s) low-resolution logits -> (K, H, W) bool masks at the image's size."""

    def to_low_frame(self, emb: Embedding, values: np.ndarray, side: int) -> np.ndarray:
        """An (H, W) float map placed where the image lies in the (side, side) low-resolution frame."""


def segmenter_summary(seg: Segmenter) -> dict:
    """What status reports show about a segmenter (JSON-ready)."""
    return {"backend": seg.backend, "kind": seg.kind, "source": seg.source, "path": str(seg.path),
            "concepts": bool(seg.supports_concepts), "device": str(seg.device)}


# ---- where hub segmenters live ---------------------------------------------------------------------------------------

def backend_of_dir(path: Path) -> str:
    """The backend of a transformers checkpoint directory, from its config.json ``model_type``."""
    cfg = path / "config.json"
    if not cfg.exists():
        raise CheckpointError(f"{path} has no config.json; a SAM 2.1 / SAM 3 directory is a transformers checkpoint "
                              f"(e.g. facebook/sam2.1-hiera-large, facebook/sam3). SAM v1 is a .pth/.safetensors file")
    try:
        model_type = json.loads(cfg.read_text()).get("model_type")
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{cfg} is unreadable ({e}); re-download the model") from None
    if model_type == "sam":
        raise CheckpointError(f"{path} is a transformers SAM v1 checkpoint (model_type 'sam'); pass Meta's "
                              f"segment_anything checkpoint (.pth / .safetensors) instead, e.g. --sam vit_h")
    if model_type == "sam3":
        raise CheckpointError(f"{path} holds only SAM 3's concept detector (model_type 'sam3'); Rea2Seg needs the "
                              f"combined checkpoint with the point/box tracker too: facebook/sam3 (model_type "
                              f"sam3_video)")
    if model_type not in HUB_BACKENDS:
        raise CheckpointError(f"{path} is a {model_type!r} model, not a segmenter Rea2Seg can drive; use a SAM v1 "
                              f"file, a SAM 2.1 directory (facebook/sam2.1-hiera-*) or SAM 3 (facebook/sam3)")
    return HUB_BACKENDS[model_type]


def _backend_of_id(repo_id: str) -> str | None:
    if repo_id in HUB_SEGMENTERS:
        return HUB_SEGMENTERS[repo_id]
    name = repo_id.split("/")[-1].lower()
    return "sam3" if "sam3" in name else "sam2" if "sam2" in name else None


def is_hub_segmenter(name: str) -> bool:
    """True for a hub id that names a SAM 2 / SAM 3 checkpoint (published, or with sam2/sam3 in its name)."""
    return bool(_HUB_ID.fullmatch(name)) and _backend_of_id(name) is not None


def segmenter_local_dir(repo_id: str, backend: str | None = None) -> Path:
    """Where a hub segmenter is kept: ``<models_home>/sam2/<name>`` or ``<models_home>/sam3/<name>``."""
    backend = backend or _backend_of_id(repo_id) or "sam2"
    return models_home() / BACKEND_FOLDERS[backend] / repo_id.split("/")[-1]


def check_segmenter_dir(path: Path) -> str:
    """Raise ``CheckpointError`` unless ``path`` is a complete SAM 2 / SAM 3 checkpoint; returns its backend."""
    backend = backend_of_dir(path)
    if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        raise CheckpointError(f"{path} has no weights (model.safetensors); the download is incomplete: run "
                              f"`rea2seg models download <hub id>` again")
    if not any((path / f).exists() for f in ("processor_config.json", "preprocessor_config.json")):
        raise CheckpointError(f"{path} has no processor_config.json / preprocessor_config.json: copy the processor "
                              f"files from the original checkpoint (or re-download it)")
    return backend


def download_segmenter(repo_id: str, dest: Path | None = None) -> Path:
    """Fetch a SAM 2.1 / SAM 3 hub checkpoint once into ``<models_home>/sam2|sam3/<name>`` (huggingface_hub writes
    each file under a temporary name, verifies it and renames it) and check it is complete."""
    dest = dest or segmenter_local_dir(repo_id)
    try:
        download_hub_dir(repo_id, dest)
    except ModelError as e:
        if repo_id == "facebook/sam3" or "gated" in str(e).lower() or "401" in str(e) or "403" in str(e):
            raise ModelError(f"{e}. facebook/sam3 is gated: accept its licence on https://huggingface.co/{repo_id} "
                             f"and log in (`hf auth login`) before downloading") from None
        raise
    check_segmenter_dir(dest)
    return dest


def resolve_segmenter_dir(source: str, download: bool = False) -> Path | None:
    """The local checkpoint directory a SAM 2.1 / SAM 3 ``source`` names (a directory, or a hub id found in the
    models folder or the Hugging Face cache, downloaded when ``download``); None when ``source`` is not one (a SAM v1
    kind or file). ``ModelNotFoundError`` naming the expected path and the fetch command for a missing hub id."""
    p = Path(source).expanduser()
    if p.is_dir():
        check_segmenter_dir(p)
        return p
    if p.exists() or not is_hub_segmenter(source):
        return None
    backend = _backend_of_id(source)
    local = segmenter_local_dir(source, backend)
    if (local / "config.json").exists():
        check_segmenter_dir(local)
        return local
    try:
        from huggingface_hub import snapshot_download
        cached = Path(snapshot_download(source, local_files_only=True))
    except Exception:
        cached = None
    if cached is not None and (cached / "config.json").exists():
        check_segmenter_dir(cached)
        return cached
    if download and not offline():
        return download_segmenter(source, local)
    why = "HF_HUB_OFFLINE is set, so nothing is downloaded" if offline() else "it is not downloaded yet"
    gated = " (gated: accept its licence on the hub and `hf auth login` first)" if backend == "sam3" else ""
    raise ModelNotFoundError(f"segmenter {source} not found: expected {local} ({why}); run `rea2seg models download "
                             f"{source}`{gated} (or `hf download {source} --local-dir {local}`)")


def load_segmenter(source: str | os.PathLike, kind: str | None = None, device: str | torch.device | None = None,
                   download: bool = False, arch=None) -> Segmenter:
    """Load any segmenter Rea2Seg drives.

    ``source``: a SAM v1 checkpoint file (``.pth`` / ``.safetensors``) or kind (vit_h, vit_l, vit_b; ``kind`` and
    ``arch`` as in ``load_sam``), or a SAM 2.1 / SAM 3 transformers checkpoint: a local directory or a hub id
    (facebook/sam2.1-hiera-large, facebook/sam3), looked up in ``<models_home>/sam2|sam3`` and the Hugging Face cache,
    downloaded when ``download``. The backend follows the checkpoint's config.json ``model_type``.
    """
    raw = str(source)
    if not raw.strip():
        raise InputError("no segmenter given: pass a SAM checkpoint file or kind (vit_h, vit_l, vit_b), a SAM 2.1 / "
                         "SAM 3 directory, or a hub id such as facebook/sam2.1-hiera-large or facebook/sam3")
    directory = resolve_segmenter_dir(raw, download)
    if directory is None:
        from .sam import load_sam

        return load_sam(raw, kind, device, download, arch)
    if kind is not None or arch is not None:
        raise InputError(f"--sam-kind / arch apply to SAM v1 checkpoint files only; {raw} is a transformers "
                         f"checkpoint whose config.json says what it is")
    backend = backend_of_dir(directory)
    if backend == "sam2":
        from .sam2 import load_sam2

        return load_sam2(directory, raw, device)
    from .sam3 import load_sam3

    return load_sam3(directory, raw, device)
