"""Real model loading: the code a user's checkpoints go through (hub id or local dir; safetensors or weights-only
pickles; atomic, verified downloads; one shared copy of each model in memory)."""
from __future__ import annotations

import hashlib
import re
import importlib
import os
import sys
import threading
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from .errors import CheckpointError, InputError, ModelError, ModelNotFoundError

# ---- where models live ------------------------------------------------------------------------------------------------

def models_home() -> Path:
    """Root of downloaded models: $REA2SEG_MODELS_DIR, else ~/.cache/rea2seg/models. Same layout as ComfyUI's
    models folder: ``LLM/<name>/`` for VLM directories, ``sams/<file>`` for SAM checkpoints."""
    env = os.environ.get("REA2SEG_MODELS_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rea2seg" / "models"


@dataclass(frozen=True)
class SamCheckpoint:
    kind: str
    filename: str
    url: str
    size: int  # bytes, as published

    @property
    def sha256_prefix(self) -> str:
        """Meta's file names end in the first 6 hex digits of the file's SHA-256 (torch.hub convention)."""
        return self.filename.rsplit("_", 1)[-1].split(".")[0]


_SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
SAM_CHECKPOINTS = {
    "vit_h": SamCheckpoint("vit_h", "sam_vit_h_4b8939.pth", _SAM_URL + "sam_vit_h_4b8939.pth", 2_564_550_879),
    "vit_l": SamCheckpoint("vit_l", "sam_vit_l_0b3195.pth", _SAM_URL + "sam_vit_l_0b3195.pth", 1_249_524_607),
    "vit_b": SamCheckpoint("vit_b", "sam_vit_b_01ec64.pth", _SAM_URL + "sam_vit_b_01ec64.pth", 375_042_383),
}
SAM_KINDS = ("vit_h", "vit_l", "vit_b", "tiny", "bench")
# image encoder embed dim -> kind (how a kind is recognised from a state dict)
_SAM_EMBED_DIM = {1280: "vit_h", 1024: "vit_l", 768: "vit_b", 32: "tiny", 128: "bench"}


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


# ---- device / dtype -----------------------------------------------------------------------------------------------------

def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """None/"auto" -> CUDA if available, else MPS, else CPU."""
    if device in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except Exception:
        raise InputError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} asked for, but CUDA is not available here; use --device cpu")
    return dev


_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
           "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """None/"auto" -> bf16 on CUDA (fp16 where bf16 is unsupported), fp16 on MPS, fp32 on CPU (bf16 is ~13x slower on
    CPUs without AVX-512-BF16)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float16 if device.type == "mps" else torch.float32
    if dtype not in _DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; use auto, fp32, fp16 or bf16")
    return _DTYPES[dtype]


# ---- segment_anything import (works with or without a usable torchvision) ------------------------------------------------

def import_segment_anything():
    """Import Meta's ``segment_anything``. Where torchvision is missing or broken (e.g. a CPU torch wheel with a CUDA
    torchvision), install a minimal stand-in for the few torchvision functions it imports, for the import only."""
    if "segment_anything" in sys.modules:
        return sys.modules["segment_anything"]
    try:
        import torchvision  # noqa: F401
        import torchvision.ops  # noqa: F401
        return importlib.import_module("segment_anything")
    except ImportError as e:
        if "segment_anything" in str(e) or "segment-anything" in str(e):
            raise ModelError("the segment-anything package is not installed; run `pip install segment-anything`") \
                from None
    except Exception:
        pass
    for k in [k for k in sys.modules if k.split(".")[0] == "torchvision"]:
        del sys.modules[k]
    from PIL import Image

    names = ["torchvision", "torchvision.transforms", "torchvision.transforms.functional", "torchvision.ops",
             "torchvision.ops.boxes"]
    tv, tr, fn, ops, bx = (types.ModuleType(n) for n in names)
    fn.resize = lambda img, size, *a, **k: img.resize((int(size[1]), int(size[0])), Image.BILINEAR)
    fn.to_pil_image = lambda pic, mode=None: Image.fromarray(pic)

    def box_area(b):
        return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])

    def batched_nms(boxes, scores, idxs, thr):  # only the automatic mask generator uses it; we never call it
        raise NotImplementedError("torchvision is not usable here; install torch and torchvision from the same index")

    bx.box_area, bx.batched_nms = box_area, batched_nms
    tv.transforms, tr.functional, tv.ops, ops.boxes = tr, fn, ops, bx
    shim = dict(zip(names, [tv, tr, fn, ops, bx]))
    sys.modules.update(shim)
    try:
        return importlib.import_module("segment_anything")
    finally:
        for k in shim:
            sys.modules.pop(k, None)


# ---- SAM ------------------------------------------------------------------------------------------------------------------

@dataclass
class SamModel:
    """A loaded SAM (Meta's ``segment_anything.Sam``) with where it came from."""

    sam: Any
    kind: str
    path: Path
    device: torch.device

    @property
    def img_size(self) -> int:
        return int(self.sam.image_encoder.img_size)

    def to(self, device: torch.device) -> "SamModel":
        self.sam.to(device)
        self.device = torch.device(device)
        return self


def infer_sam_kind(path: Path, state: dict | None = None) -> str | None:
    """The SAM kind from the file name (``vit_h``/``vit_l``/``vit_b``/``tiny``/``bench``) or the state dict."""
    name = path.name.lower()
    for kind in SAM_KINDS:
        if kind in name:
            return kind
    if state is not None:
        w = state.get("image_encoder.patch_embed.proj.weight")
        if w is not None:
            return _SAM_EMBED_DIM.get(int(w.shape[0]))
    return None


def read_state_dict(path: Path) -> dict:
    """A checkpoint's tensors: safetensors, or a pickle loaded with ``weights_only=True`` (never runs code)."""
    if not path.exists():
        raise ModelNotFoundError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise InputError(f"{path} is a directory; the SAM checkpoint must be a .pth or .safetensors file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        try:
            return load_file(str(path))
        except Exception as e:
            raise CheckpointError(f"SAM checkpoint {path} is not a valid safetensors file ({e}); it may be truncated: "
                                  f"delete it and download it again") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else e.__class__.__name__
        if "weights only" in str(e).lower() or "weights_only" in str(e).lower() or "unpickl" in str(e).lower():
            raise CheckpointError(f"refusing to load {path}: it contains pickled code or objects, not just tensors "
                                  f"({msg}). Use Meta's original checkpoint or a .safetensors file") from None
        raise CheckpointError(f"SAM checkpoint {path} cannot be read ({msg}); it may be truncated: delete it and "
                              f"download it again") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} is not a SAM state dict (a mapping of names to tensors)")
    return state


def load_sam(path: str | os.PathLike, kind: str | None = None, device: str | torch.device | None = None,
             download: bool = False) -> SamModel:
    """Load a SAM checkpoint (Meta's vit_b/vit_l/vit_h .pth, or .safetensors; the small kinds tiny/bench too).

    ``kind`` is inferred from the file name or the state dict unless given. ``path`` may also be a bare kind
    ("vit_h") or a published file name, which resolves to the models folder (and downloads it with ``download``).
    """
    p = _resolve_sam_path(path, download)
    dev = resolve_device(device)
    state = read_state_dict(p)
    inferred = infer_sam_kind(Path(p.name), state) if kind is None else None
    kind = kind or inferred or infer_sam_kind(p, state)
    if kind not in SAM_KINDS:
        raise CheckpointError(f"cannot tell which SAM kind {p} is; pass kind=/--sam-kind one of {SAM_KINDS}")
    sam = _build_sam(kind)
    try:
        sam.load_state_dict(state, strict=True)
    except RuntimeError as e:
        actual = infer_sam_kind(Path("x"), state)
        hint = f"the file looks like {actual!r}" if actual and actual != kind else "the file does not match"
        raise CheckpointError(f"SAM checkpoint {p} does not fit kind {kind!r} ({hint}); pass the right kind "
                              f"(--sam-kind) or the right file ({str(e).splitlines()[0][:160]})") from None
    sam.to(dev).eval()
    return SamModel(sam, kind, p, dev)


def _build_sam(kind: str):
    if kind in ("tiny", "bench"):
        from .tiny import build_sam_arch
        return build_sam_arch(kind)
    sa = import_segment_anything()
    return sa.sam_model_registry[kind](checkpoint=None)


def _resolve_sam_path(path: str | os.PathLike, download: bool) -> Path:
    raw = str(path)
    ck = SAM_CHECKPOINTS.get(raw) or next((c for c in SAM_CHECKPOINTS.values() if c.filename == raw), None)
    p = Path(raw).expanduser()
    if ck is not None and not p.exists():
        p = models_home() / "sams" / ck.filename
    if p.exists():
        if ck is not None and p.stat().st_size != ck.size:
            raise CheckpointError(f"{p} is {p.stat().st_size:,} bytes but {ck.filename} is {ck.size:,}: the download "
                                  f"is incomplete or corrupt. Delete it and run `rea2seg models download {ck.kind}`")
        return p
    if ck is not None:
        if download:
            return download_sam(ck.kind)
        raise ModelNotFoundError(f"SAM checkpoint not found: expected {p}; run `rea2seg models download {ck.kind}` "
                                 f"(or place {ck.filename} there)")
    raise ModelNotFoundError(f"SAM checkpoint not found: {p}; check the path, or pass a kind (vit_h, vit_l, vit_b) "
                             f"to use the models folder {models_home() / 'sams'}")


def download_sam(kind: str, dest_dir: str | os.PathLike | None = None, url: str | None = None,
                 progress: Callable[[int, int], None] | None = None) -> Path:
    """Download Meta's SAM checkpoint once, atomically (``.part`` then rename) and verified (size and the SHA-256
    prefix in its file name). A partial download never looks complete."""
    ck = SAM_CHECKPOINTS[kind]
    dest = Path(dest_dir) if dest_dir else models_home() / "sams"
    target = dest / ck.filename
    if target.exists() and target.stat().st_size == ck.size:
        return target
    if offline():
        raise ModelNotFoundError(f"SAM checkpoint not found: expected {target}; HF_HUB_OFFLINE is set, so nothing is "
                                 f"downloaded. Run `rea2seg models download {kind}` with network, or fetch "
                                 f"{ck.url} to that path")
    import urllib.request

    dest.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url or ck.url, timeout=60) as r, open(part, "wb") as f:
            total = int(r.headers.get("Content-Length") or ck.size)
            done = 0
            bar = _progress_bar(total, f"downloading {ck.filename}") if progress is None else None
            while chunk := r.read(1 << 20):
                f.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
                else:
                    bar.update(len(chunk))
            if bar is not None:
                bar.close()
    except OSError as e:
        part.unlink(missing_ok=True)
        raise ModelError(f"download of {ck.url} failed ({e}); check the network and run "
                         f"`rea2seg models download {kind}` again, or place {ck.filename} at {target}") from None
    verify_download(part, ck, digest.hexdigest())
    os.replace(part, target)
    return target


def verify_download(path: Path, ck: SamCheckpoint, sha256: str | None = None) -> None:
    """Raise ``CheckpointError`` (and delete ``path``) unless size and SHA-256 prefix match the published file."""
    size = path.stat().st_size
    if sha256 is None:
        sha256 = sha256_file(path)
    if size != ck.size or not sha256.startswith(ck.sha256_prefix):
        path.unlink(missing_ok=True)
        raise CheckpointError(f"downloaded {ck.filename} failed verification (size {size:,} vs {ck.size:,}, sha256 "
                              f"{sha256[:12]}… vs {ck.sha256_prefix}…); it was deleted, run the download again")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _progress_bar(total: int, desc: str):
    try:
        from tqdm import tqdm
        return tqdm(total=total, desc=desc, unit="B", unit_scale=True, file=sys.stderr)
    except ImportError:
        class _Bar:
            def __init__(self):
                self.n = 0

            def update(self, k):
                self.n += k
                print(f"\r{desc}: {self.n / 1e6:.0f}/{total / 1e6:.0f} MB", end="", file=sys.stderr)

            def close(self):
                print(file=sys.stderr)
        return _Bar()


# ---- VLM ------------------------------------------------------------------------------------------------------------------

@dataclass
class VLM:
    """A loaded image-text-to-text model and its processor."""

    model: Any
    processor: Any
    source: str
    device: torch.device
    dtype: torch.dtype
    family: str
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

    def token_id(self, word: str) -> int:
        """The id of the first token of ``word`` (e.g. "Yes")."""
        ids = self.tokenizer.encode(word, add_special_tokens=False)
        if not ids:
            raise ModelError(f"the tokenizer of {self.source} cannot encode {word!r}")
        return int(ids[0])

    def to(self, device: torch.device) -> "VLM":
        self.model.to(device)
        self.device = torch.device(device)
        return self


_VLM_FILES = ("config.json",)
_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json")

_registry: dict[tuple, VLM] = {}
_registry_lock = threading.Lock()


def hub_local_dir(repo_id: str) -> Path:
    """Where ``rea2seg models download`` puts a hub model: ``<models_home>/LLM/<repo name>``."""
    return models_home() / "LLM" / repo_id.split("/")[-1]


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
    if not any((p / f).exists() for f in _PROCESSOR_FILES):
        raise CheckpointError(f"{p} has no preprocessor_config.json: the VLM directory lacks its processor; copy the "
                              f"processor files from the original checkpoint (or re-download it)")
    if not any((p / f).exists() for f in _TOKENIZER_FILES):
        raise CheckpointError(f"{p} has no tokenizer files (tokenizer.json / tokenizer_config.json); re-download it")
    if not any(p.glob("*.safetensors")) and not any(p.glob("*.bin")):
        raise CheckpointError(f"{p} has no weights (*.safetensors); the download is incomplete: run "
                              f"`rea2seg models download <hub id>` again")


def download_vlm(repo_id: str, dest: Path | None = None) -> Path:
    """Fetch a hub model once into ``<models_home>/LLM/<name>`` (huggingface_hub downloads each file to a temporary
    name, verifies it and renames it, with a progress bar)."""
    if offline():
        raise ModelNotFoundError(f"VLM {repo_id} not found at {dest or hub_local_dir(repo_id)} and HF_HUB_OFFLINE is "
                                 f"set; unset it and run `rea2seg models download {repo_id}`")
    from huggingface_hub import snapshot_download

    dest = dest or hub_local_dir(repo_id)
    try:
        snapshot_download(repo_id, local_dir=str(dest),
                          allow_patterns=["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "*.py"])
    except Exception as e:
        raise ModelError(f"download of {repo_id} failed ({e.__class__.__name__}: {str(e)[:200]}); check the network "
                         f"and the id, then run `rea2seg models download {repo_id}` again") from None
    _check_vlm_dir(dest)
    return dest


def _family(config) -> str:
    return str(getattr(config, "model_type", "unknown"))


def load_vlm(source: str | os.PathLike, device: str | torch.device | None = None,
             dtype: str | torch.dtype | None = None, trust_remote_code: bool = False, download: bool = False,
             max_pixels: int | None = None) -> VLM:
    """Load an image-text-to-text VLM with ``AutoModelForImageTextToText`` / ``AutoProcessor`` (Qwen2-VL,
    Qwen2.5-VL, Qwen3-VL, InternVL3-hf, LLaVA ...). One copy per (directory, device, dtype): loading the same model
    twice returns the same object, so discovery and scoring share it."""
    path = resolve_vlm_dir(str(source), download)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    key = (str(path.resolve()), str(dev), str(dt), trust_remote_code)
    with _registry_lock:
        if key in _registry:
            return _registry[key]
        vlm = _load_vlm_uncached(path, str(source), dev, dt, trust_remote_code, max_pixels)
        _registry[key] = vlm
        return vlm


def forget_vlm(vlm: VLM) -> None:
    """Drop a VLM from the shared registry (so its memory can be freed)."""
    with _registry_lock:
        for k in [k for k, v in _registry.items() if v is vlm]:
            del _registry[k]


def _load_vlm_uncached(path: Path, source: str, dev: torch.device, dt: torch.dtype, trust_remote_code: bool,
                       max_pixels: int | None) -> VLM:
    from transformers import AutoConfig, AutoModelForImageTextToText

    from .attention import RECORDING_ATTENTION, register_recording_attention

    register_recording_attention()
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except ValueError as e:
        raise CheckpointError(f"{path}: unsupported model config ({str(e).splitlines()[0][:200]}); if it needs custom "
                              f"code, pass trust_remote_code=True / --trust-remote-code only if you trust it") from None
    processor = load_processor(path, trust_remote_code)
    attn = {"text_config": RECORDING_ATTENTION, "vision_config": "sdpa"} \
        if hasattr(config, "text_config") and hasattr(config, "vision_config") else RECORDING_ATTENTION
    try:
        model = AutoModelForImageTextToText.from_pretrained(path, dtype=dt, attn_implementation=attn,
                                                            trust_remote_code=trust_remote_code)
    except (OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"cannot load the VLM weights in {path} ({str(e).splitlines()[0][:200]}); the checkpoint "
                              f"may be truncated or not an image-text-to-text model: re-download it") from None
    model.to(dev).eval()
    if max_pixels and hasattr(processor, "image_processor"):
        _set_max_pixels(processor.image_processor, max_pixels)
    if hasattr(processor, "tokenizer"):
        processor.tokenizer.padding_side = "left"
    return VLM(model, processor, source, dev, dt, _family(config))


def _set_max_pixels(image_processor, max_pixels: int) -> None:
    if hasattr(image_processor, "max_pixels"):
        cur = getattr(image_processor, "max_pixels", None)
        image_processor.max_pixels = min(cur, max_pixels) if cur else max_pixels
        size = getattr(image_processor, "size", None)
        if isinstance(size, dict) and "longest_edge" in size:
            size["longest_edge"] = image_processor.max_pixels


def load_processor(path: Path, trust_remote_code: bool = False):
    """``AutoProcessor``; where torchvision is unusable (Qwen-VL's video processor needs it), an image-only
    processor of the same class (transformers issue #48558)."""
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    except ImportError:
        return _image_only_processor(path)
    except (OSError, ValueError, TypeError) as e:
        raise CheckpointError(f"cannot load the processor of {path} ({str(e).splitlines()[0][:200]}); the VLM directory "
                              f"needs its preprocessor_config.json and tokenizer files") from None


def _image_only_processor(path: Path):
    import transformers as tf
    from transformers.processing_utils import ProcessorMixin

    config = tf.AutoConfig.from_pretrained(path)
    base = {"qwen2_vl": tf.Qwen2VLProcessor, "qwen2_5_vl": tf.Qwen2_5_VLProcessor,
            "qwen3_vl": tf.Qwen3VLProcessor}.get(config.model_type)
    if base is None:
        raise ModelError(f"the processor for {config.model_type} needs torchvision, which is not usable here; install "
                         f"matching torch and torchvision builds")

    class ImageOnlyProcessor(base):
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kw):
            self.image_token, self.video_token = "<|image_pad|>", "<|video_pad|>"
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
            self.vision_start_token, self.vision_end_token = "<|vision_start|>", "<|vision_end|>"
            self.vision_start_token_id = tokenizer.convert_tokens_to_ids(self.vision_start_token)
            self.vision_end_token_id = tokenizer.convert_tokens_to_ids(self.vision_end_token)
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template, **kw)

    return ImageOnlyProcessor.from_pretrained(path)
