"""The VLM (any transformers image-text-to-text model with a chat template): finding its directory (a path, a hub
id in the models folder or the Hugging Face cache, or a download), loading it once per (directory, device, dtype)
straight onto its device so discovery and scoring share one copy, its processor, and the pixel budget every image
it sees is kept within."""
from __future__ import annotations

import dataclasses
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, InputError, ModelError, ModelNotFoundError
from .attention import discovery_layout
from .device import resolve_device, resolve_dtype
from .download import download_hub_dir, hub_local_dir, offline
from .lisa import CLIP_TOWERS, download_clip, download_lisa, is_lisa_dir, is_lisa_source


#: Decoder layer types whose attention is a softmax map the recorder can read. Hybrid models (Qwen3.5) interleave
#: linear-attention (Gated DeltaNet) layers, which have no such map.
SOFTMAX_LAYER_TYPES = ("full_attention", "sliding_attention", "chunked_attention")


@dataclass
class VLM:
    """A loaded image-text-to-text model and its processor. ``max_pixels``: the budget of encoder-input pixels per
    image (None = the checkpoint's own limit), applied to every processor call (``image_kwargs``)."""

    model: Any
    processor: Any
    source: str
    device: torch.device
    dtype: torch.dtype
    family: str
    max_pixels: int | None = None
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @property
    def config(self):
        return self.model.config

    @property
    def image_token_id(self) -> int:
        cfg = self.model.config
        tid = getattr(cfg, "image_token_id", None)
        if tid is None:
            tid = getattr(cfg, "image_token_index", None)
        return int(tid)

    @property
    def merge_size(self) -> int:
        return int(getattr(self.model.config.vision_config, "spatial_merge_size", 1) or 1)

    @property
    def num_layers(self) -> int:
        return int(self.model.config.get_text_config().num_hidden_layers)

    @property
    def attention_layers(self) -> list[int]:
        """Decoder layers with a softmax attention map: every layer, except in hybrid models whose ``layer_types``
        (Qwen3.5: three linear-attention layers, then a full-attention one) name others."""
        types = getattr(self.model.config.get_text_config(), "layer_types", None)
        if not types:
            return list(range(self.num_layers))
        return [i for i, t in enumerate(types) if t in SOFTMAX_LAYER_TYPES]

    @property
    def has_rope_index(self) -> bool:
        """Qwen-VL models: 3-D rope positions can be computed for a whole sequence, so a KV-cached prefix can be
        reused for suffixes (discovery's second question, two-image yes/no)."""
        return hasattr(self.model, "model") and hasattr(self.model.model, "get_rope_index")

    def token_id(self, word: str) -> int:
        """The id of the first token of ``word`` (e.g. "Yes")."""
        ids = self.tokenizer.encode(word, add_special_tokens=False)
        if not ids:
            raise ModelError(f"the tokenizer of {self.source} cannot encode {word!r}")
        return int(ids[0])

    def answer_token_ids(self, word: str) -> list[int]:
        """The ids of every spelling of the one-word answer ``word`` that is a single token of this tokenizer: as
        written, lower case, upper case, each with and without a leading space ("Yes", "yes", "YES", " Yes"...).
        A model may start its answer with any of them, so an answer's probability is the sum over these ids."""
        ids: list[int] = []
        for spelling in dict.fromkeys((word, word.lower(), word.upper(), word.capitalize())):
            for text in (spelling, " " + spelling):
                got = self.tokenizer.encode(text, add_special_tokens=False)
                if len(got) == 1 and int(got[0]) not in ids:
                    ids.append(int(got[0]))
        if not ids:
            raise ModelError(f"the tokenizer of {self.source} has no single token for {word!r} in any spelling; "
                             f"yes/no scoring needs one (use the reasoning or comparative mode)")
        return ids

    def image_kwargs(self) -> dict:
        """Processor-call arguments that keep each image within ``max_pixels`` (see ``budget_kwargs``)."""
        image_processor = getattr(self.processor, "image_processor", None)
        return budget_kwargs(image_processor, self.max_pixels) if image_processor is not None else {}

    def to(self, device: torch.device) -> "VLM":
        self.model.to(device)
        # every budget view of this model (load_vlm) shares it: they all move with it
        for v in [self, *(v for v in _registry.values() if v.model is self.model)]:
            v.device = torch.device(device)
        return self


def budget_kwargs(image_processor, max_pixels: int | None) -> dict:
    """Arguments for a processor call that keep one image within ``max_pixels`` pixels of vision-encoder input, never
    above the checkpoint's own limit (None: the checkpoint's setting).

    - Qwen2-VL / Qwen2.5-VL / Qwen3-VL (``Qwen2VLImageProcessor`` and its PIL twin): the image is resized to a multiple
      of patch x merge with at most ``size["longest_edge"]`` pixels (transformers 5 keeps min/max pixels there), so
      ``longest_edge`` (and ``shortest_edge``, which may not exceed it) become the budget.
    - InternVL3-hf (``GotOcr2ImageProcessor``): the image is cut into up to ``max_patches`` tiles of ``size`` plus a
      thumbnail when there is more than one, so ``max_patches`` is the largest tile count whose tiles and thumbnail
      fit in the budget (at least one tile).
    - Fixed-size processors (CLIP-style) are bounded by design: nothing to pass.
    """
    if not max_pixels:
        return {}
    size = getattr(image_processor, "size", None)
    longest = _size_field(size, "longest_edge")
    if longest and hasattr(image_processor, "merge_size"):
        shortest = _size_field(size, "shortest_edge") or 0
        budget = min(int(longest), int(max_pixels))
        return {"size": {"shortest_edge": min(int(shortest), budget), "longest_edge": budget}}
    height, width = _size_field(size, "height"), _size_field(size, "width")
    if hasattr(image_processor, "max_patches") and hasattr(image_processor, "crop_to_patches") and height and width:
        fit = int(max_pixels) // (int(height) * int(width))  # tiles, thumbnail included
        tiles = max(1, min(int(image_processor.max_patches), fit - 1 if fit >= 3 else 1))
        return {"max_patches": tiles, "min_patches": min(int(getattr(image_processor, "min_patches", 1)), tiles)}
    return {}


def _size_field(size, key: str):
    if size is None:
        return None
    if isinstance(size, dict):
        return size.get(key)
    return getattr(size, key, None)


_VLM_FILES = ("config.json",)
_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json")

_registry: dict[tuple, VLM] = {}
_registry_lock = threading.RLock()


def resolve_vlm_dir(source: str, download: bool = False) -> Path:
    """A local directory for ``source`` (a directory, or a hub id found in the models folder or the HF cache,
    downloaded when ``download``); ``ModelNotFoundError`` naming the expected path and the fetch command otherwise."""
    p = Path(source).expanduser()
    if p.exists():
        if not p.is_dir():
            raise InputError(f"VLM path {p} is a file; pass the model's directory (with config.json)")
        _check_vlm_dir(p)
        return p
    if not re.fullmatch(r"[\w-][\w.-]*/[\w.-]+", source):
        raise ModelNotFoundError(f"VLM directory not found: {p}; check the path, or pass a Hugging Face id such as "
                                 f"Qwen/Qwen2.5-VL-7B-Instruct")
    local = hub_local_dir(source)
    if (local / "config.json").exists():
        _check_vlm_dir(local)
        return local
    try:
        from huggingface_hub import snapshot_download
        cached = snapshot_download(source, local_files_only=True)
        _check_vlm_dir(Path(cached))
        return Path(cached)
    except (ModelError, InputError):
        raise
    except Exception:
        pass
    if download and not offline():
        return download_vlm(source)
    why = "HF_HUB_OFFLINE is set, so nothing is downloaded" if offline() else "it is not downloaded yet"
    raise ModelNotFoundError(f"VLM {source} not found: expected {local} ({why}); run `rea2seg models download "
                             f"{source}` (or `hf download {source} --local-dir {local}`)")


def _check_vlm_dir(p: Path) -> None:
    if not (p / "config.json").exists():
        raise CheckpointError(f"{p} has no config.json; it is not a Hugging Face model directory")
    if is_lisa_dir(p):
        raise InputError(f"{p} is a segmentation MLLM (LISA format): it can be the discovery model (--vlm, with a "
                         f"--scorer VLM) but not a scorer; pass an image-text-to-text VLM here")
    if not any((p / f).exists() for f in _PROCESSOR_FILES):
        raise CheckpointError(f"{p} has no preprocessor_config.json: the VLM directory lacks its processor; copy the "
                              f"processor files from the original checkpoint (or re-download it)")
    if not any((p / f).exists() for f in _TOKENIZER_FILES):
        raise CheckpointError(f"{p} has no tokenizer files (tokenizer.json / tokenizer_config.json); re-download it")
    if not any(p.glob("*.safetensors")) and not any(p.glob("*.bin")):
        raise CheckpointError(f"{p} has no weights (*.safetensors); the download is incomplete: run "
                              f"`rea2seg models download <hub id>` again")


def download_vlm(repo_id: str, dest: Path | None = None) -> Path:
    """Fetch a hub VLM once into ``<models_home>/LLM/<name>`` (or ``dest``) and check it is complete. A LISA-format
    generator (``lisa.LISA_REPOS``) comes with the CLIP tower its config names, in the folder next to it; a CLIP tower
    (``lisa.CLIP_TOWERS``) with its weights in whichever format the repo has."""
    if is_lisa_source(repo_id):
        return download_lisa(repo_id, dest)
    if repo_id in CLIP_TOWERS:  # a LISA checkpoint's vision tower: maybe only pytorch_model.bin, no chat template
        return download_clip(repo_id, dest)
    dest = download_hub_dir(repo_id, dest)
    _check_vlm_dir(dest)
    return dest


def _family(config) -> str:
    return str(getattr(config, "model_type", "unknown"))


def load_vlm(source: str | os.PathLike, device: str | torch.device | None = None,
             dtype: str | torch.dtype | None = None, trust_remote_code: bool = False, download: bool = False,
             max_pixels: int | None = None, discovery: bool = False, shared: bool = True) -> VLM:
    """Load an image-text-to-text VLM with ``AutoModelForImageTextToText`` / ``AutoProcessor`` (Qwen2-VL,
    Qwen2.5-VL, Qwen3-VL, InternVL3-hf, LLaVA ...), straight onto ``device``; or a LoRA adapter directory written by
    ``rea2seg train-scorer`` (its base model loaded and the adapter merged in).

    One copy of the weights per (directory, device, dtype): loading the same model again returns the same object
    for the same ``max_pixels``, and a view sharing the model, processor and lock for another budget, so discovery
    and scoring share it; ``shared=False`` gives a private copy (for training). ``discovery``: refuse (before reading
    any weights) a family whose image tokens discovery cannot map to the image (``attention.discovery_layout``)."""
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    adapter = Path(source).expanduser()
    is_adapter = (adapter / ADAPTER_CONFIG).is_file()
    path = adapter if is_adapter else resolve_vlm_dir(str(source), download)

    def load() -> VLM:
        if is_adapter:
            return _load_adapter(adapter, dev, dt, trust_remote_code, download, max_pixels)
        if discovery:
            discovery_layout(_read_config(path, trust_remote_code))  # fail before the weights are read
        return _load_vlm_uncached(path, str(source), dev, dt, trust_remote_code, max_pixels)

    if not shared:
        vlm = load()
    else:
        base = (str(path.resolve()), str(dev), str(dt), trust_remote_code)
        with _registry_lock:
            vlm = _registry.get((*base, max_pixels))
            if vlm is None:
                same = next((v for k, v in _registry.items() if k[:4] == base), None)
                vlm = load() if same is None else dataclasses.replace(same, max_pixels=max_pixels)
                _registry[(*base, max_pixels)] = vlm
    if discovery:
        discovery_layout(vlm.config)
    return vlm


#: peft's adapter file: a directory holding it is a LoRA adapter over the base model it names
ADAPTER_CONFIG = "adapter_config.json"


def _load_adapter(adapter: Path, dev: torch.device, dt: torch.dtype, trust_remote_code: bool, download: bool,
                  max_pixels: int | None) -> VLM:
    """The base model named in the adapter's config, a private copy, with the adapter merged into its weights."""
    import json

    try:
        from peft import PeftModel
    except ImportError:
        raise ModelError(f"{adapter} is a LoRA adapter; loading it needs peft: pip install 'rea2seg[train]'") from None
    try:
        base = json.loads((adapter / ADAPTER_CONFIG).read_text())["base_model_name_or_path"]
    except (ValueError, KeyError, OSError) as e:
        raise CheckpointError(f"{adapter / ADAPTER_CONFIG} does not name its base model ({e}); re-run "
                              f"`rea2seg train-scorer`") from None
    vlm = load_vlm(base, dev, dt, trust_remote_code, download, max_pixels, shared=False)
    try:
        vlm.model = PeftModel.from_pretrained(vlm.model, str(adapter)).merge_and_unload().eval()
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise CheckpointError(f"cannot apply the adapter {adapter} to {base} ({str(e).splitlines()[0][:200]}); "
                              f"was it trained on that model?") from None
    if any((adapter / f).exists() for f in _PROCESSOR_FILES):
        vlm.processor = load_processor(adapter, trust_remote_code)
        if hasattr(vlm.processor, "tokenizer"):
            vlm.processor.tokenizer.padding_side = "left"
    vlm.source = str(adapter)
    return vlm


def forget_vlm(vlm) -> None:
    """Drop a VLM, and every budget view of its model, from the shared registry (so its memory can be freed). Other
    discovery models (a LISA generator) are not in the registry: nothing to do."""
    model = getattr(vlm, "model", None)
    if model is None:
        return
    with _registry_lock:
        for k in [k for k, v in _registry.items() if v.model is model]:
            del _registry[k]


def _read_config(path: Path, trust_remote_code: bool):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except ValueError as e:
        raise CheckpointError(f"{path}: unsupported model config ({str(e).splitlines()[0][:200]}); if it needs custom "
                              f"code, pass trust_remote_code=True / --trust-remote-code only if you trust it") from None


def _load_vlm_uncached(path: Path, source: str, dev: torch.device, dt: torch.dtype, trust_remote_code: bool,
                       max_pixels: int | None) -> VLM:
    from transformers import AutoModelForImageTextToText

    from .attention import RECORDING_ATTENTION, register_recording_attention

    register_recording_attention()
    config = _read_config(path, trust_remote_code)
    processor = load_processor(path, trust_remote_code)
    attn = {"text_config": RECORDING_ATTENTION, "vision_config": "sdpa"} \
        if hasattr(config, "text_config") and hasattr(config, "vision_config") else RECORDING_ATTENTION
    try:
        model = AutoModelForImageTextToText.from_pretrained(path, dtype=dt, attn_implementation=attn,
                                                            trust_remote_code=trust_remote_code,
                                                            **placement_kwargs(dev))
    except (OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"cannot load the VLM weights in {path} ({str(e).splitlines()[0][:200]}); the checkpoint "
                              f"may be truncated or not an image-text-to-text model: re-download it") from None
    model.to(dev).eval()  # a no-op when the weights were loaded in place
    if hasattr(processor, "tokenizer"):
        processor.tokenizer.padding_side = "left"
    return VLM(model, processor, source, dev, dt, _family(config), max_pixels)


def placement_kwargs(device: torch.device) -> dict:
    """``from_pretrained`` arguments that put each weight on ``device`` as it is read (``device_map``), so the host
    never holds a full copy of a model meant for an accelerator; without ``accelerate`` the model is loaded on the
    host and moved (``model.to``)."""
    from transformers.utils import is_accelerate_available

    return {"device_map": torch.device(device)} if is_accelerate_available() else {}


def load_processor(path: Path, trust_remote_code: bool = False):
    """The checkpoint's own ``AutoProcessor`` (image processor, tokenizer, chat template)."""
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    except ImportError as e:
        raise ModelError(f"the processor of {path} needs a package that is missing or broken ({e}); install torch and "
                         f"torchvision builds that match") from None
    except (OSError, ValueError, TypeError) as e:
        raise CheckpointError(f"cannot load the processor of {path} ({str(e).splitlines()[0][:200]}); the VLM directory "
                              f"needs its preprocessor_config.json and tokenizer files") from None
