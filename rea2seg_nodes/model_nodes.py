"""Load Models: a preset or an explicit VLM directory + segmenter (a SAM file, or a SAM 2 / SAM 3 directory) from
ComfyUI's model folders -> ``REA2SEG_MODELS``."""
from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from rea2seg.errors import Cancelled, InputError, ModelError, ModelNotFoundError, Rea2SegError

from . import comfy_bridge

CATEGORY = "Rea2Seg"
CUSTOM = "custom"
FROM_PRESET = "(from preset)"
DEVICES = ["auto", "cpu"]
DTYPES = ["auto", "fp32", "fp16", "bf16"]


def engine_call(fn, *args, **kwargs):
    """Call the engine; its errors reach ComfyUI as their one-line message (no engine traceback), and a cancel caused
    by ComfyUI's interrupt becomes ComfyUI's own ``InterruptProcessingException``."""
    try:
        return fn(*args, **kwargs)
    except Cancelled:
        comfy_bridge.raise_if_interrupted()
        raise
    except Rea2SegError as e:
        raise e.with_traceback(None) from None


@dataclass(eq=False)
class LoadedModels:
    """The ``REA2SEG_MODELS`` value: a loaded ``Rea2Seg`` pipeline and how ComfyUI should hold it."""

    pipe: object
    key: tuple
    device: torch.device
    keep_loaded: bool
    nbytes: int
    offloaded: bool = field(default=False)

    @property
    def warning(self) -> str | None:
        return self.pipe.warning

    def describe(self) -> str:
        """One line for the node: what is loaded, and where."""
        s = self.pipe.status()
        names = f"{Path(s['vlm']).name} + {Path(s['sam']).name}"
        if not s["scorer_shared"]:
            names += f", scorer {Path(s['scorer']).name}"
        return f"loaded {names} on {s['device']} ({s['dtype']})" + (" - random weights" if self.warning else "")

    def discovery_config(self, **overrides):
        return replace(self.pipe.config.discovery, **overrides)

    @contextlib.contextmanager
    def use(self):
        """The pipeline on its compute device for the duration of one node; afterwards, unless ``keep_loaded``,
        the models go to ComfyUI's offload device and the caches are cleared."""
        if self.offloaded:
            comfy_bridge.free_memory(self.nbytes, self.device)
            self.pipe.to(self.device)
            self.offloaded = False
        try:
            yield self.pipe
        finally:
            if not self.keep_loaded:
                self.release()

    def release(self) -> None:
        self.pipe.offload(comfy_bridge.offload_device())
        self.offloaded = True
        comfy_bridge.empty_cache()


# One pipeline per Load Models node (bounded by the number of such nodes): when a node loads something else, the
# previous models are offloaded and forgotten instead of staying in memory.
_LOADED: dict[str, LoadedModels] = {}


def _size_of(*paths: Path) -> int:
    """Bytes of weights in model files / folders: what loading them will need on the device (roughly)."""
    total = 0
    for p in paths:
        if p.is_dir():
            total += sum(f.stat().st_size for f in p.iterdir() if f.suffix in (".safetensors", ".bin"))
        elif p.exists():
            total += p.stat().st_size
    return total


def _missing(what: str, folder: str, name: str, fetch: str) -> ModelNotFoundError:
    expected = comfy_bridge.folders(folder)[0] / name
    return ModelNotFoundError(f"{what} not found: expected {expected} (ComfyUI models/{folder}/{name}); {fetch}")


def _hf_download_command(repo_id: str, dest: Path) -> str:
    """A command that fetches ``repo_id`` into ``dest`` with the Python running ComfyUI (huggingface_hub's ``hf`` CLI
    comes with this pack's requirements; ``-m`` works where its script is not on PATH, e.g. the portable build)."""
    return f'"{sys.executable}" -m huggingface_hub.cli.hf download {repo_id} --local-dir "{dest}"'


def _reason(e: ModelError) -> str:
    """Why an engine download failed, without the engine's own advice (which names its CLI, not ComfyUI's)."""
    from rea2seg.models.download import offline

    if offline():
        return "HF_HUB_OFFLINE is set, so nothing is downloaded (unset it for ComfyUI to fetch the files)"
    return str(e).split(";")[0]


def _preset_hub_dir(repo_id: str, folder: str, what: str, download, auto_download: bool, node_id: str | None,
                    note: str = "") -> Path:
    """A preset's hub model as ``<folder>/<repo name>`` in ComfyUI's folders, else downloaded there by
    ``download(repo_id, dest)`` when ``auto_download``; one error naming the place and a command that fetches it."""
    name = repo_id.split("/")[-1]
    found = comfy_bridge.find_in_folders(folder, name)
    if found is not None:
        return found
    dest = comfy_bridge.folders(folder)[0] / name
    manual = f"or download it yourself{note}: {_hf_download_command(repo_id, dest)}"
    if not auto_download:
        raise _missing(f"{what} {repo_id}", folder, name, f"turn on auto_download, {manual}")
    # huggingface_hub reports this download's progress in ComfyUI's console, not on the node
    comfy_bridge.progress_text(node_id, f"downloading {repo_id} into {dest} (progress in the console)")
    try:
        return download(repo_id, dest)
    except ModelError as e:
        raise ModelNotFoundError(f"{what} {repo_id} could not be downloaded into {dest}: {_reason(e)}; {manual}") \
            from None


def _preset_vlm(repo_id: str, auto_download: bool, node_id: str | None) -> Path:
    from rea2seg.models.lisa import clip_dir_of, is_lisa_dir
    from rea2seg.models.vlm import download_vlm

    found = comfy_bridge.find_in_folders(comfy_bridge.VLM_FOLDER, repo_id.split("/")[-1])
    if found is not None and auto_download and is_lisa_dir(found):
        clip_dir_of(found, download=True)  # a LISA-format generator also needs its CLIP tower next to it
    return found or _preset_hub_dir(repo_id, comfy_bridge.VLM_FOLDER, "VLM", download_vlm, auto_download, node_id)


def _preset_hub_segmenter(repo_id: str, auto_download: bool, node_id: str | None) -> Path:
    """A preset's SAM 2.1 / SAM 3 checkpoint in ComfyUI's ``models/sam2`` / ``models/sam3``, downloaded there."""
    from rea2seg.models.segmenter import download_segmenter, segmenter_local_dir

    gated = " (gated: accept its licence on the hub and log in with `hf auth login` first)" \
        if repo_id == "facebook/sam3" else ""
    return _preset_hub_dir(repo_id, segmenter_local_dir(repo_id).parent.name, "segmenter", download_segmenter,
                           auto_download, node_id, gated)


def _preset_sam(kind: str, auto_download: bool, node_id: str | None) -> Path:
    from rea2seg.models.download import SAM_CHECKPOINTS, download_sam
    from rea2seg.models.segmenter import is_hub_segmenter

    if is_hub_segmenter(kind):
        return _preset_hub_segmenter(kind, auto_download, node_id)
    ck = SAM_CHECKPOINTS[kind]
    found = comfy_bridge.find_in_folders(comfy_bridge.SAM_FOLDER, ck.filename)
    if found is not None:
        return found
    dest = comfy_bridge.folders(comfy_bridge.SAM_FOLDER)[0]
    manual = f'or download it yourself: curl -L -o "{dest / ck.filename}" {ck.url}'
    if not auto_download:
        raise _missing(f"SAM checkpoint {ck.filename}", comfy_bridge.SAM_FOLDER, ck.filename,
                       f"turn on auto_download, {manual}")
    bar = comfy_bridge.StageProgress(node_id)
    try:
        return download_sam(kind, dest, progress=lambda done, total: bar(f"downloading {ck.filename}", done, total))
    except ModelError as e:
        raise ModelNotFoundError(f"SAM checkpoint {ck.filename} could not be downloaded into {dest}: {_reason(e)}; "
                                 f"{manual}") from None


def _chosen(kind: str, choice: str, what: str) -> Path:
    if choice == FROM_PRESET:
        where = comfy_bridge.folders(kind)[0]
        raise InputError(f"preset is '{CUSTOM}': choose the {what} (a file or folder in {where}), or choose a preset")
    folder, _, rest = choice.partition("/")
    if kind == comfy_bridge.SAM_FOLDER and folder in comfy_bridge.HUB_SEGMENTER_FOLDERS and rest \
            and not choice.lower().endswith(comfy_bridge.SAM_EXTENSIONS):  # "sam3/<dir>": a SAM 2 / SAM 3 directory
        kind, choice = folder, rest
    found = comfy_bridge.find_in_folders(kind, choice)
    if found is None:
        raise _missing(what, kind, choice, "it was listed but is gone: refresh the lists (press R) and choose again")
    return found


class LoadModels:
    DESCRIPTION = ("Load the VLM and the segmenter for reasoning segmentation: a preset (downloaded into models/LLM "
                   "and models/sams, sam2 or sam3 on first use if auto_download is on) or a VLM folder from models/LLM "
                   "and a SAM checkpoint from models/sams or a SAM 2.1 / SAM 3 folder from models/sam2, models/sam3.")
    CATEGORY = CATEGORY
    FUNCTION = "load"
    RETURN_TYPES = ("REA2SEG_MODELS",)
    RETURN_NAMES = ("models",)
    OUTPUT_TOOLTIPS = ("The loaded models, for the Rea2Seg stage nodes",)

    @classmethod
    def INPUT_TYPES(cls):
        from rea2seg.presets import PRESETS

        return {"required": {
            "preset": ([CUSTOM] + list(PRESETS), {"default": "default", "tooltip": "\n".join(
                [f"{CUSTOM}: the vlm and sam chosen below"]
                + [f"{p.name}: {p.description}" for p in PRESETS.values()])}),
            "vlm": ([FROM_PRESET] + comfy_bridge.vlm_dirs(), {"default": FROM_PRESET, "tooltip": (
                "With preset 'custom': a model folder (with config.json) under models/LLM, e.g. "
                "Qwen2.5-VL-7B-Instruct. Qwen2-VL, Qwen2.5-VL, Qwen3-VL and other image-text-to-text models.")}),
            "sam": ([FROM_PRESET] + comfy_bridge.sam_files() + comfy_bridge.hub_segmenter_dirs(), {
                "default": FROM_PRESET, "tooltip": (
                    "With preset 'custom': a SAM checkpoint under models/sams (Meta's sam_vit_h/l/b .pth or "
                    ".safetensors, shared with other SAM node packs), or a SAM 2.1 / SAM 3 folder in the transformers "
                    "layout under models/sam2 or models/sam3 (e.g. sam3/sam3 from the Hugging Face repo "
                    "facebook/sam3; SAM 3 adds concept candidates).")}),
            "device": (DEVICES, {"default": "auto", "tooltip": "auto: ComfyUI's compute device; cpu: force the CPU"}),
            "dtype": (DTYPES, {"default": "auto",
                               "tooltip": "auto: bf16 on CUDA (fp16 where unsupported), fp32 on CPU"}),
            "keep_loaded": ("BOOLEAN", {"default": True, "tooltip": (
                "On: the models stay on the GPU between runs. Off: after each node they move to ComfyUI's offload "
                "device and caches are cleared (slower, frees VRAM for other models).")}),
            "auto_download": ("BOOLEAN", {"default": True, "tooltip": (
                "Download a preset's missing files into models/LLM and models/sams on first use (several GB; "
                "verified, never half-written). Off: a missing file is an error naming where it should be.")}),
        }, "optional": {
            "scorer": ([FROM_PRESET] + comfy_bridge.vlm_dirs(adapters=True), {"default": FROM_PRESET, "tooltip": (
                "A different VLM for scoring, from models/LLM: e.g. a scorer trained with `rea2seg train-scorer` "
                "(its output folder `scorer`, copied there; LoRA adapters load their base model by themselves).")}),
        }, "hidden": {"node_id": "UNIQUE_ID"}}

    def load(self, preset, vlm, sam, device, dtype, keep_loaded, auto_download, scorer=FROM_PRESET, node_id=None):
        models = engine_call(self._load, preset, vlm, sam, device, dtype, keep_loaded, auto_download, node_id,
                             scorer)
        # the node's text tells what this run loaded (replacing e.g. an earlier run's "downloading ...")
        comfy_bridge.progress_text(node_id, models.describe())
        return (models,)

    @staticmethod
    def _load(preset, vlm, sam, device, dtype, keep_loaded, auto_download, node_id,
              chosen_scorer=FROM_PRESET) -> LoadedModels:
        from rea2seg import Rea2Seg, presets
        from rea2seg.testing import MEANINGLESS, tiny_models_dir, tiny_preset_models

        dev = comfy_bridge.compute_device(device)
        warning, scorer, config, name = None, None, None, preset
        if preset == CUSTOM:
            vlm_path = _chosen(comfy_bridge.VLM_FOLDER, vlm, "VLM folder")
            sam_path = _chosen(comfy_bridge.SAM_FOLDER, sam, "segmenter")
        else:
            p = presets.get_preset(preset)
            config = p.config
            if p.random_weights:  # built where every door builds them, never among the user's models
                vlm_path, sam_path, scorer_path = tiny_preset_models(p.vlm, p.sam, p.scorer, tiny_models_dir())
                scorer = str(scorer_path) if scorer_path else None
                warning = MEANINGLESS
            else:
                vlm_path = _preset_vlm(p.vlm, auto_download, node_id)
                scorer = str(_preset_vlm(p.scorer, auto_download, node_id)) if p.scorer else None
                sam_path = _preset_sam(p.sam, auto_download, node_id) if p.sam else None  # "": the generator's
        if chosen_scorer not in (None, "", FROM_PRESET):
            scorer = str(_chosen(comfy_bridge.VLM_FOLDER, chosen_scorer, "scorer folder"))
        key = (str(vlm_path), str(sam_path), scorer, str(dev), dtype, name)
        prev = _LOADED.get(node_id)
        if prev is not None and prev.key == key:
            prev.keep_loaded = bool(keep_loaded)
            return prev
        if prev is not None:  # this node switched models: let the old ones go
            prev.release()
            prev.pipe.unload()
            del _LOADED[node_id]
        nbytes = _size_of(vlm_path, *([sam_path] if sam_path else []), *([Path(scorer)] if scorer else []))
        comfy_bridge.free_memory(nbytes, dev)
        pipe = Rea2Seg.from_pretrained(str(vlm_path), str(sam_path) if sam_path else None, scorer=scorer, device=dev,
                                       dtype=None if dtype == "auto" else dtype, config=config, name=name,
                                       warning=warning)
        models = LoadedModels(pipe, key, dev, bool(keep_loaded), nbytes)
        if node_id is not None:
            _LOADED[node_id] = models
        return models
