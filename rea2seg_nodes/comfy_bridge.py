"""The only place that touches ComfyUI's own modules (``folder_paths``, ``comfy.model_management``, ``comfy.utils``,
``server``). They are imported inside the functions, so the node pack imports (and its classes can be inspected)
without ComfyUI, and nothing of ComfyUI is loaded at import time."""
from __future__ import annotations

import os
from pathlib import Path

import torch

SAM_FOLDER = "sams"  # shared with Impact Pack and comfyui_segment_anything
VLM_FOLDER = "LLM"  # one sub-directory per model, as Florence2 / QwenVL packs do
# SAM 2 / SAM 3 checkpoints: the folders the SAM 2 / SAM 3 node packs use; Rea2Seg loads transformers-layout
# directories from them (one per model, e.g. models/sam3/sam3 from facebook/sam3)
HUB_SEGMENTER_FOLDERS = ("sam2", "sam3")
SAM_EXTENSIONS = (".pth", ".pt", ".safetensors", ".bin")


def register_model_folders() -> None:
    """Make sure ``models/sams``, ``models/sam2``, ``models/sam3`` and ``models/LLM`` are known model folders (other
    packs may have added them)."""
    import folder_paths

    for name in (SAM_FOLDER, *HUB_SEGMENTER_FOLDERS, VLM_FOLDER):
        default = os.path.join(folder_paths.models_dir, name)
        if name not in folder_paths.folder_names_and_paths or default not in folder_paths.get_folder_paths(name):
            folder_paths.add_model_folder_path(name, default)


def sam_files() -> list[str]:
    """SAM checkpoint files under every ``sams`` folder, relative to it."""
    import folder_paths

    register_model_folders()
    return sorted(f for f in folder_paths.get_filename_list(SAM_FOLDER) if f.lower().endswith(SAM_EXTENSIONS))


def vlm_dirs(adapters: bool = False) -> list[str]:
    """Model directories (those holding a ``config.json``; with ``adapters`` also LoRA scorer adapters, holding an
    ``adapter_config.json``) under every ``LLM`` folder, relative to it, with ``/``."""
    import folder_paths

    register_model_folders()
    names = ("config.json", "adapter_config.json") if adapters else ("config.json",)
    dirs = {os.path.dirname(f).replace(os.sep, "/") for f in folder_paths.get_filename_list(VLM_FOLDER)
            if os.path.basename(f) in names}
    return sorted(d for d in dirs if d)


def hub_segmenter_dirs() -> list[str]:
    """SAM 2 / SAM 3 checkpoint directories (holding a ``config.json``; one or two levels deep) under every ``sam2`` /
    ``sam3`` folder, as "<folder>/<dir>" ("sam3/sam3", "sam2/sam2.1-hiera-large"). Walked here rather than asked of
    ComfyUI: another pack may have registered these folders for its own file extensions only."""
    found = set()
    for kind in HUB_SEGMENTER_FOLDERS:
        for root in folders(kind):
            if not root.is_dir():
                continue
            for cfg in [*root.glob("*/config.json"), *root.glob("*/*/config.json")]:
                found.add(f"{kind}/{cfg.parent.relative_to(root).as_posix()}")
    return sorted(found)


def folders(kind: str) -> list[Path]:
    """The folders registered for ``kind`` (``sams``, ``sam2``, ``sam3`` or ``LLM``); the first is where downloads
    go."""
    import folder_paths

    register_model_folders()
    return [Path(p) for p in folder_paths.get_folder_paths(kind)]


def find_in_folders(kind: str, relative: str) -> Path | None:
    """The first existing ``<folder>/<relative>`` over the folders of ``kind``."""
    for root in folders(kind):
        p = root / relative
        if p.exists():
            return p
    return None


def compute_device(choice: str) -> torch.device:
    """"auto": ComfyUI's compute device (honours --cpu, --directml, ...); "cpu": the CPU."""
    if choice == "cpu":
        return torch.device("cpu")
    import comfy.model_management as mm

    return mm.get_torch_device()


def offload_device() -> torch.device:
    import comfy.model_management as mm

    return mm.unet_offload_device()


def free_memory(nbytes: int, device: torch.device) -> None:
    """Ask ComfyUI to unload its own models until ``nbytes`` fit on ``device`` (no-op on the CPU)."""
    if device.type == "cpu":
        return
    import comfy.model_management as mm

    mm.free_memory(nbytes, device)


def empty_cache() -> None:
    import comfy.model_management as mm

    mm.soft_empty_cache()


def interrupted() -> bool:
    """True once the user pressed Cancel (or ``/interrupt`` was posted)."""
    import comfy.model_management as mm

    return mm.processing_interrupted()


def raise_if_interrupted() -> None:
    """Raise ComfyUI's own ``InterruptProcessingException`` if an interrupt is pending (and clear it)."""
    import comfy.model_management as mm

    mm.throw_exception_if_processing_interrupted()


class StageProgress:
    """The engine's ``progress(stage, done, total)`` callback as ComfyUI progress: one ``ProgressBar`` per stage, over
    the whole image batch (image ``i`` of ``n`` maps to ``i * total + done`` of ``n * total``), and the stage name as
    the node's progress text."""

    def __init__(self, node_id: str | None, n_images: int = 1):
        self.node_id, self.n_images, self.index = node_id, max(1, n_images), 0
        self.stage: str | None = None
        self.bar = None

    def image(self, index: int) -> "StageProgress":
        self.index = index
        return self

    def __call__(self, stage: str, done: int, total: int) -> None:
        import comfy.utils

        total = max(1, int(total))
        if stage != self.stage or self.bar is None:
            self.stage, self.bar = stage, comfy.utils.ProgressBar(self.n_images * total, node_id=self.node_id)
            self._text(stage)
        # in the server, every update is also an interrupt point (ComfyUI's progress hook checks it)
        self.bar.update_absolute(self.index * total + min(int(done), total), self.n_images * total)

    def _text(self, stage: str) -> None:
        suffix = f" (image {self.index + 1}/{self.n_images})" if self.n_images > 1 else ""
        progress_text(self.node_id, f"{stage}{suffix}")


def progress_text(node_id: str | None, text: str) -> None:
    """Show ``text`` on the node while it runs (the editor's progress text)."""
    if node_id is None:
        return
    try:
        from server import PromptServer

        PromptServer.instance.send_progress_text(text, node_id)
    except Exception:  # cosmetic; a server without progress text must not fail the node
        pass
