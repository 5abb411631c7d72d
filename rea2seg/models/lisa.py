"""LISA-family segmentation MLLMs (LISA v1, SESAME, the Rea2Seg SESAME generator) without their remote code.

A LISA-format checkpoint is one Hugging Face directory (``config.json``, ``pytorch_model-*.bin`` shards and their
index, a SentencePiece ``tokenizer.model`` with ``[SEG]``, ``<im_start>``, ``<im_end>`` added) holding three models:

- the LLaVA part (LLaMA + the multimodal projector), loaded into transformers' ``LlavaForConditionalGeneration``;
- SAM (``model.visual_model.*``: Meta's ``segment_anything`` state dict, ViT-H for every published checkpoint);
- ``text_hidden_fcs``: Linear(H, H) -> ReLU -> Linear(H, 256), the ``[SEG]`` hidden state -> SAM prompt embedding.

The CLIP vision tower is not in the checkpoint (LISA drops it when saving): it is the hub model that
``config.json["vision_tower"]`` names (``openai/clip-vit-large-patch14`` for LISA, ``...-336`` for the Rea2Seg
generator), found next to the checkpoint, in the models folder or in the Hugging Face cache.

``KEY_MAP`` is the whole mapping (docs/LISA.md prints it): every tensor of the checkpoint lands in exactly one of the
three models or is a documented drop, and every parameter of the three models comes from exactly one tensor;
anything else is a ``CheckpointError`` naming the keys.
"""
from __future__ import annotations

import contextlib
import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError, ModelError, ModelNotFoundError
from .device import resolve_device, resolve_dtype
from .download import download_hub_dir, hub_local_dir, offline
from .sam import SAM_ARCHS, SamArch, SamEmbedding, SamModel

#: LLaVA's placeholder id for the image in a prompt (``IMAGE_TOKEN_INDEX``); never embedded.
IMAGE_TOKEN_INDEX = -200
SEG_TOKEN, IM_START, IM_END = "[SEG]", "<im_start>", "<im_end>"
#: ``architectures`` of the published configs.
LISA_ARCHITECTURES = ("LISAForCausalLM", "SESAMEForCausalLM")
#: The CLIP towers the published checkpoints name (``rea2seg models download`` fetches them like a LISA would).
CLIP_TOWERS = ("openai/clip-vit-large-patch14", "openai/clip-vit-large-patch14-336")
#: Hub repositories known to be in this format (their downloads also fetch the CLIP tower they name).
LISA_REPOS = ("xinlai/LISA-7B-v1", "xinlai/LISA-7B-v1-explanatory", "xinlai/LISA-13B-llama2-v1",
              "xinlai/LISA-13B-llama2-v1-explanatory", "tsunghanwu/SESAME", "snowball521/Sesame_Generator")

# ---- the key mapping -------------------------------------------------------------------------------------------------

#: (checkpoint key pattern, target model, target key): "llava" = ``LlavaForConditionalGeneration``, "fcs" =
#: ``text_hidden_fcs[0]`` as an ``nn.Sequential``, "sam" = ``segment_anything.Sam``, "drop" = not loaded.
KEY_MAP: tuple[tuple[str, str, str], ...] = (
    (r"model\.embed_tokens\.weight", "llava", r"model.language_model.embed_tokens.weight"),
    (r"model\.layers\.(\d+)\.(.+)", "llava", r"model.language_model.layers.\1.\2"),
    (r"model\.norm\.weight", "llava", r"model.language_model.norm.weight"),
    (r"lm_head\.weight", "llava", r"lm_head.weight"),
    # LISA v1 (LLaVA "linear"): one Linear; the projector's second Linear and activation become identities
    (r"model\.mm_projector\.(weight|bias)", "llava", r"model.multi_modal_projector.linear_1.\1"),
    # SESAME (LLaVA-1.5 "mlp2x_gelu"): Sequential(Linear, GELU, Linear)
    (r"model\.mm_projector\.0\.(weight|bias)", "llava", r"model.multi_modal_projector.linear_1.\1"),
    (r"model\.mm_projector\.2\.(weight|bias)", "llava", r"model.multi_modal_projector.linear_2.\1"),
    (r"model\.text_hidden_fcs\.0\.(0|2)\.(weight|bias)", "fcs", r"\1.\2"),
    (r"model\.visual_model\.(.+)", "sam", r"\1"),
    # RoPE frequencies some transformers versions persisted: recomputed from the config
    (r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq", "drop", ""),
)

#: The CLIP tower's checkpoint (a full ``CLIPModel`` for the openai repos): only the vision model is used.
CLIP_KEY_MAP: tuple[tuple[str, str, str], ...] = (
    (r"vision_model\.embeddings\.position_ids", "drop", ""),
    (r"vision_model\.(.+)", "llava", r"model.vision_tower.\1"),
    (r"(text_model|visual_projection|text_projection|logit_scale)(\..+)?", "drop", ""),
)


def map_keys(keys, table=KEY_MAP) -> tuple[dict[str, tuple[str, str]], list[str], list[str]]:
    """Apply a key table (first match wins; the inv_freq drop is checked first). Returns
    ({checkpoint key: (model, target key)}, dropped keys, unmapped keys)."""
    ordered = sorted(table, key=lambda row: row[1] != "drop")
    compiled = [(re.compile(p), model, target) for p, model, target in ordered]
    mapped, dropped, unmapped = {}, [], []
    for k in keys:
        for rx, model, target in compiled:
            m = rx.fullmatch(k)
            if m:
                if model == "drop":
                    dropped.append(k)
                else:
                    mapped[k] = (model, m.expand(target))
                break
        else:
            unmapped.append(k)
    return mapped, dropped, unmapped


def _few(keys, n: int = 3) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


# ---- recognising and finding checkpoints -----------------------------------------------------------------------------

def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path} is unreadable ({e}); re-download it") from None


def is_lisa_config(cfg: dict) -> bool:
    """A LISA-format ``config.json``: LISA's/SESAME's architecture, or LLaVA fields plus LISA's ``out_dim``."""
    archs = cfg.get("architectures") or []
    return any(a in LISA_ARCHITECTURES for a in archs) or (
        "out_dim" in cfg and ("vision_tower" in cfg or "mm_vision_tower" in cfg))


def is_lisa_dir(path: str | Path) -> bool:
    p = Path(path).expanduser()
    return (p / "config.json").is_file() and is_lisa_config(_read_json(p / "config.json"))


def _is_hub_id(source: str) -> bool:
    return re.fullmatch(r"[\w-][\w.-]*/[\w.-]+", source) is not None


def _local_candidates(source: str) -> list[Path]:
    """Where a source may already be on disk: the path itself, the models folder, the Hugging Face cache."""
    out = [Path(source).expanduser()]
    if _is_hub_id(source):
        out.append(hub_local_dir(source))
        try:
            from huggingface_hub import snapshot_download
            out.append(Path(snapshot_download(source, local_files_only=True)))
        except Exception:
            pass
    return out


def is_lisa_source(source: str | Path) -> bool:
    """Whether ``source`` (a directory or hub id) is a LISA-format checkpoint: judged by its ``config.json`` when it is
    on disk, by ``LISA_REPOS`` otherwise."""
    for p in _local_candidates(str(source)):
        if (p / "config.json").is_file():
            return is_lisa_config(_read_json(p / "config.json"))
    return str(source) in LISA_REPOS


def resolve_lisa_dir(source: str, download: bool = False) -> Path:
    """The local directory of a LISA-format checkpoint (a path, or a hub id in the models folder or the HF cache;
    downloaded with its CLIP tower when ``download``); ``ModelNotFoundError`` naming the path and the fetch command."""
    for p in _local_candidates(source):
        if p.is_dir() and (p / "config.json").is_file():
            check_lisa_dir(p)
            return p
    p = Path(source).expanduser()
    if not _is_hub_id(source):
        raise ModelNotFoundError(f"LISA checkpoint directory not found: {p}; check the path, or pass a Hugging Face "
                                 f"id such as xinlai/LISA-7B-v1")
    if download and not offline():
        return download_lisa(source)
    local = hub_local_dir(source)
    why = "HF_HUB_OFFLINE is set, so nothing is downloaded" if offline() else "it is not downloaded yet"
    raise ModelNotFoundError(f"LISA checkpoint {source} not found: expected {local} ({why}); run `rea2seg models "
                             f"download {source}` (it also fetches the CLIP tower its config names)")


def weight_files(path: Path) -> list[Path]:
    """The checkpoint's weight files: the shards an index lists, else the single weights file."""
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (path / index).is_file():
            shards = sorted(set(_read_json(path / index).get("weight_map", {}).values()))
            missing = [s for s in shards if not (path / s).is_file()]
            if missing or not shards:
                raise CheckpointError(f"{path} is incomplete: {index} lists {', '.join(missing) or 'no shards'} which "
                                      f"{'are' if missing else 'is'} missing; download the checkpoint again")
            return [path / s for s in shards]
    for single in ("model.safetensors", "pytorch_model.bin"):
        if (path / single).is_file():
            return [path / single]
    raise CheckpointError(f"{path} has no weights (pytorch_model*.bin / model*.safetensors with an index); the "
                          f"download is incomplete: download it again")


def check_lisa_dir(path: Path) -> None:
    """``CheckpointError`` naming what was found unless ``path`` has a LISA config, weights and the SentencePiece
    tokenizer with ``[SEG]``."""
    cfg = _read_json(path / "config.json")
    if not is_lisa_config(cfg):
        archs = ", ".join(cfg.get("architectures") or []) or "none"
        raise CheckpointError(f"{path} is not a LISA-format checkpoint: its config.json is model_type "
                              f"{cfg.get('model_type', '?')!r}, architectures {archs}, with no LISA fields (out_dim, "
                              f"vision_tower); expected LISAForCausalLM or SESAMEForCausalLM (e.g. xinlai/LISA-7B-v1)")
    weight_files(path)
    if not (path / "tokenizer.model").is_file():
        raise CheckpointError(f"{path} has no tokenizer.model (LISA's SentencePiece tokenizer); copy the tokenizer "
                              f"files from the original checkpoint (or download it again)")


def download_lisa(repo_id: str, dest: Path | None = None) -> Path:
    """Fetch a LISA-format checkpoint into ``<models_home>/LLM/<name>`` (or ``dest``) and the CLIP tower its config
    names next to it; check both. (LISA's shards are ``.bin`` pickles: they are read with ``weights_only=True``.)"""
    dest = download_hub_dir(repo_id, dest, ("*.json", "*.bin", "*.safetensors", "*.model", "*.txt"))
    check_lisa_dir(dest)
    tower = vision_tower_name(_read_json(dest / "config.json"))
    if _is_hub_id(tower) and _find_clip_dir(tower, dest) is None:
        download_clip(tower, dest.parent / tower.split("/")[-1])
    return dest


def download_clip(tower: str, dest: Path | None = None) -> Path:
    """Fetch a CLIP tower repo (config, processor and tokenizer files, and its weights: safetensors when the repo has
    them, else ``pytorch_model.bin``, as for ``openai/clip-vit-large-patch14-336``)."""
    files = ("*.json", "*.txt", "*.safetensors", "pytorch_model*.bin")
    try:
        from huggingface_hub import HfApi
        if any(n.endswith(".safetensors") for n in HfApi().list_repo_files(tower)):
            files = ("*.json", "*.txt", "*.safetensors")
    except Exception:  # listing failed: fetch both kinds rather than none
        pass
    dest = download_hub_dir(tower, dest, files)
    weight_files(dest)
    return dest


# ---- the CLIP vision tower -------------------------------------------------------------------------------------------

def vision_tower_name(cfg: dict) -> str:
    tower = cfg.get("vision_tower") or cfg.get("mm_vision_tower")
    if not tower:
        raise CheckpointError("the LISA config names no vision tower (vision_tower / mm_vision_tower)")
    return str(tower)


def _find_clip_dir(tower: str, near: Path) -> Path | None:
    """The CLIP directory ``tower`` names: a path, a folder of that name next to the checkpoint (ComfyUI's
    models/LLM), the models folder, or the Hugging Face cache."""
    candidates = [Path(tower).expanduser(), near.parent / tower.split("/")[-1]] + _local_candidates(tower)[1:]
    return next((p for p in candidates if (p / "config.json").is_file()), None)


def resolve_clip_dir(tower: str, near: Path, download: bool = False) -> Path:
    found = _find_clip_dir(tower, near)
    if found is not None:
        return found
    if download and not offline() and _is_hub_id(tower):
        return download_clip(tower, near.parent / tower.split("/")[-1])
    name = tower.split("/")[-1]
    raise ModelNotFoundError(f"CLIP vision tower {tower} (named by {near / 'config.json'}) not found: expected "
                             f"{near.parent / name} or {hub_local_dir(tower)}; run `rea2seg models download {tower}` "
                             f"(or `hf download {tower} --local-dir {near.parent / name}`)")


def clip_dir_of(path: Path, download: bool = False) -> Path:
    """The CLIP directory a LISA-format checkpoint's config names."""
    return resolve_clip_dir(vision_tower_name(_read_json(path / "config.json")), path, download)


# ---- reading weights -------------------------------------------------------------------------------------------------

def read_weights(files: list[Path]) -> dict[str, torch.Tensor]:
    """All tensors of a (sharded) checkpoint: safetensors, or pickles loaded with ``weights_only=True`` and
    memory-mapped (never runs code)."""
    state: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            if f.suffix == ".safetensors":
                from safetensors.torch import load_file
                part = load_file(str(f))
            else:
                try:
                    part = torch.load(f, map_location="cpu", weights_only=True, mmap=True)
                except RuntimeError as e:  # a pre-zip torch.save file cannot be memory-mapped
                    if "mmap" not in str(e):
                        raise
                    part = torch.load(f, map_location="cpu", weights_only=True)
        except Exception as e:
            msg = str(e).splitlines()[0] if str(e) else e.__class__.__name__
            raise CheckpointError(f"cannot read {f} ({msg[:200]}); it may be truncated or contain pickled code: "
                                  f"download it again") from None
        if not isinstance(part, dict) or not all(isinstance(v, torch.Tensor) for v in part.values()):
            raise CheckpointError(f"{f} is not a state dict (a mapping of names to tensors)")
        state.update(part)
    return state


def sam_arch_from_state(state: dict[str, torch.Tensor]) -> tuple[SamArch, str]:
    """The ``segment_anything`` architecture of a SAM state dict, read from its tensor shapes (the mask decoder's
    head count is not in the shapes: 8, as in every published SAM). Returns (arch, "vit_h" | "vit_l" | "vit_b" |
    "custom")."""
    try:
        patch = state["image_encoder.patch_embed.proj.weight"]
        grid = state["image_encoder.pos_embed"].shape[1]
        depth = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("image_encoder.blocks."))
        rel = [state[f"image_encoder.blocks.{i}.attn.rel_pos_h"] for i in range(depth)]
        global_blocks = tuple(i for i, r in enumerate(rel) if r.shape[0] == 2 * grid - 1)
        window = next(((r.shape[0] + 1) // 2 for r in rel if r.shape[0] != 2 * grid - 1), 0)
        embed = int(patch.shape[0])
        arch = SamArch(
            embed_dim=embed, depth=depth, heads=embed // int(rel[0].shape[1]), global_attn_indexes=global_blocks,
            img_size=int(grid * patch.shape[-1]), patch_size=int(patch.shape[-1]), window_size=int(window),
            mlp_ratio=state["image_encoder.blocks.0.mlp.lin1.weight"].shape[0] / embed,
            prompt_dim=int(state["image_encoder.neck.0.weight"].shape[0]),
            decoder_mlp_dim=int(state["mask_decoder.transformer.layers.0.mlp.lin1.weight"].shape[0]),
            iou_head_hidden_dim=int(state["mask_decoder.iou_prediction_head.layers.0.weight"].shape[0]),
            mask_in_chans=int(state["prompt_encoder.mask_downscaling.3.weight"].shape[0]))
    except (KeyError, ValueError, IndexError) as e:
        raise CheckpointError(f"the SAM weights (model.visual_model.*) are incomplete: no {e}") from None
    kind = next((k for k, a in SAM_ARCHS.items() if a == arch), "custom")
    return arch, kind


@contextlib.contextmanager
def parameters_on_meta():
    """Build modules with parameters on the meta device (no memory, no random init) while buffers stay real, so the
    non-persistent ones keep their computed values (RoPE frequencies, CLIP position ids, SAM pixel statistics); the
    parameters are then assigned from the checkpoint (``load_state_dict(assign=True)``)."""
    original = torch.nn.Module.register_parameter

    def register(module, name, param):
        original(module, name, param)
        if param is not None and param.device.type != "meta":
            module._parameters[name] = torch.nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

    torch.nn.Module.register_parameter = register
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = original


def _assign(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str, where: Path) -> None:
    """Load ``state`` into ``module`` (assign: no copy), every parameter from exactly one tensor."""
    want = dict(module.state_dict())
    missing = sorted(set(want) - set(state))
    extra = sorted(set(state) - set(want))
    bad = [k for k in set(want) & set(state) if tuple(want[k].shape) != tuple(state[k].shape)]
    if missing or extra or bad:
        parts = ([f"missing {_few(missing)}"] if missing else []) + ([f"unexpected {_few(extra)}"] if extra else []) \
            + [f"{k} is {tuple(state[k].shape)}, expected {tuple(want[k].shape)}" for k in sorted(bad)[:2]]
        raise CheckpointError(f"{where}: the {what} weights do not fit ({'; '.join(parts)}); the checkpoint is not in "
                              f"the LISA format this loader maps (see docs/LISA.md)")
    module.load_state_dict(state, strict=True, assign=True)


# ---- the tokenizer ---------------------------------------------------------------------------------------------------

class LegacyLlamaTokenizer:
    """LISA's tokenizer as it ran when the checkpoints were trained: transformers 4.31's slow ``LlamaTokenizer`` in
    legacy mode over ``tokenizer.model``.

    Added tokens (``[SEG]``, ``<im_start>``, ``<im_end>``) are never split and strip the whitespace on both sides of
    them; each remaining piece is SentencePiece-encoded on its own (with the dummy-prefix space). transformers 5
    reproduces neither, so this is done here with ``sentencepiece`` directly.
    """

    def __init__(self, directory: Path):
        try:
            import sentencepiece
        except ImportError:
            raise ModelError("LISA checkpoints need the sentencepiece package for their tokenizer.model; run "
                             "`pip install sentencepiece`") from None
        self.sp = sentencepiece.SentencePieceProcessor(model_file=str(directory / "tokenizer.model"))
        n = self.sp.get_piece_size()
        added: dict[str, int] = {}
        if (directory / "added_tokens.json").is_file():
            added.update({str(k): int(v) for k, v in _read_json(directory / "added_tokens.json").items()})
        cfg = _read_json(directory / "tokenizer_config.json") if (directory / "tokenizer_config.json").is_file() else {}
        for i, tok in (cfg.get("added_tokens_decoder") or {}).items():  # files saved by newer transformers
            if int(i) >= n:
                added.setdefault(str(tok["content"]), int(i))
        self.added = added
        self.bos_token_id, self.eos_token_id, self.unk_token_id = self.sp.bos_id(), self.sp.eos_id(), self.sp.unk_id()
        self.pad_token_id = self.unk_token_id  # LISA: pad_token = unk_token
        # bos/eos/unk are never split either, but keep the whitespace around them (AddedToken(lstrip=rstrip=False))
        self._specials = {self.sp.id_to_piece(i): i for i in (self.bos_token_id, self.eos_token_id, self.unk_token_id)
                          if i >= 0}
        words = sorted(set(self.added) | set(self._specials), key=len, reverse=True)
        self._split = re.compile("(" + "|".join(re.escape(w) for w in words) + ")") if words else None

    def __len__(self) -> int:
        return max([self.sp.get_piece_size() - 1, *self.added.values()]) + 1

    def convert_tokens_to_ids(self, token: str) -> int | None:
        if token in self.added:
            return self.added[token]
        i = self.sp.piece_to_id(token)
        return None if i == self.unk_token_id and token != self.sp.id_to_piece(i) else int(i)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids exactly as LISA's ``tokenizer(text).input_ids`` (BOS first with ``add_special_tokens``)."""
        pieces = self._split.split(text) if self._split else [text]
        for i, piece in enumerate(pieces):
            if piece in self.added:  # strip left and right by default (4.31 PreTrainedTokenizer.tokenize)
                if i > 0:
                    pieces[i - 1] = pieces[i - 1].rstrip()
                if i + 1 < len(pieces):
                    pieces[i + 1] = pieces[i + 1].lstrip()
        ids = [self.bos_token_id] if add_special_tokens else []
        for piece in pieces:
            if piece in self.added:
                ids.append(self.added[piece])
            elif piece in self._specials:
                ids.append(self._specials[piece])
            elif piece:
                ids.extend(self.sp.encode(piece))
        return ids

    def encode_text(self, text: str) -> list[int]:
        """Plain text (a user's question): SentencePiece only, so "[SEG]" typed by a user is text, not the token."""
        return list(self.sp.encode(text)) if text else []

    def decode(self, ids) -> str:
        inv = {v: k for k, v in self.added.items()}
        out, run = [], []
        for i in ids:
            if int(i) in inv:
                out.append(self.sp.decode(run))
                out.append(inv[int(i)])
                run = []
            elif int(i) not in (self.bos_token_id, self.eos_token_id, IMAGE_TOKEN_INDEX):
                run.append(int(i))
        out.append(self.sp.decode(run))
        return " ".join(s for s in out if s)


# ---- the loaded model ------------------------------------------------------------------------------------------------

@dataclass
class LisaPrompt:
    """One conversation in LISA's layout. ids: (S,) int64 with the image expanded to its N tokens (value
    ``IMAGE_TOKEN_INDEX``); image: the image tokens' slice; question: the rows after ``<im_end>`` up to the end of the
    prompt (``... ASSISTANT:``); answer_start: where the assistant's answer begins; seg: positions of ``[SEG]`` in
    the answer."""

    ids: torch.Tensor
    image: slice
    question: slice
    answer_start: int
    seg: list[int]


@dataclass
class LisaGenerator:
    """A loaded LISA-format model: the LLaVA part, ``text_hidden_fcs``, its SAM, the tokenizer and CLIP's image
    processor. Discovery calls ``prompt``, ``image_features``, ``hidden_states``, ``generate``, ``seg_embeddings`` and
    ``seg_masks``; the pipeline uses ``device``/``dtype``/``to``/``tokenizer`` like a ``VLM``'s."""

    llava: Any
    text_hidden_fcs: torch.nn.Sequential
    sam: SamModel
    tokenizer: LegacyLlamaTokenizer
    image_processor: Any
    source: str
    path: Path
    variant: str
    device: torch.device
    dtype: torch.dtype
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @property
    def family(self) -> str:
        return self.variant

    @property
    def config(self):
        return self.llava.config

    @property
    def num_layers(self) -> int:
        return int(self.llava.config.text_config.num_hidden_layers)

    @property
    def grid_size(self) -> int:
        """Side of CLIP's patch grid: image_size // patch_size (16 for 224 px, 24 for 336 px)."""
        vc = self.llava.config.vision_config
        return int(vc.image_size) // int(vc.patch_size)

    @property
    def seg_token_id(self) -> int:
        return self._token(SEG_TOKEN)

    def _token(self, token: str) -> int:
        tid = self.tokenizer.convert_tokens_to_ids(token)
        if tid is None or token not in self.tokenizer.added:
            raise CheckpointError(f"the tokenizer of {self.path} has no {token} token (added_tokens.json); it is not a "
                                  f"LISA-format checkpoint")
        return int(tid)

    def to(self, device: torch.device) -> "LisaGenerator":
        self.llava.to(device)
        self.text_hidden_fcs.to(device)
        self.sam.to(device)
        self.device = torch.device(device)
        return self

    # ---- inputs ----------------------------------------------------------------------------------------------------
    def prompt(self, system: str, query: str, answer: str | None) -> LisaPrompt:
        """LISA's conversation (``llava_v1``): ``{system} USER: <im_start><image><im_end>\\n{query} ASSISTANT:`` and,
        when ``answer`` is given, `` {answer}</s>``, tokenised as LISA's ``tokenizer_image_token`` with the 4.31 slow
        tokenizer did (the image placeholder expanded to the N image tokens). ``query`` is plain text."""
        tok = self.tokenizer
        n = self.grid_size ** 2
        head = tok.encode(f"{system} USER: {IM_START}")  # "USER:" loses its space next to <im_start>
        ids = head + [IMAGE_TOKEN_INDEX] * n + [self._token(IM_END)]
        question_start = len(ids)
        ids += tok.encode_text(f"{query.lstrip()} ASSISTANT:")  # whitespace after <im_end> is stripped
        answer_start = len(ids)
        if answer is not None:
            ids += tok.encode(answer, add_special_tokens=False) + [tok.eos_token_id]
        seg = [i for i in range(answer_start, len(ids)) if ids[i] == self.seg_token_id]
        return LisaPrompt(torch.tensor(ids, dtype=torch.long), slice(len(head), len(head) + n),
                          slice(question_start, answer_start), answer_start, seg)

    def with_answer(self, prompt: LisaPrompt, answer_ids: list[int]) -> LisaPrompt:
        """``prompt`` (ending at ``ASSISTANT:``) followed by generated ``answer_ids``."""
        ids = torch.cat([prompt.ids[: prompt.answer_start], torch.tensor(answer_ids, dtype=torch.long)])
        seg = [i for i in range(prompt.answer_start, len(ids)) if int(ids[i]) == self.seg_token_id]
        return LisaPrompt(ids, prompt.image, prompt.question, prompt.answer_start, seg)

    def pixel_values(self, image: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 RGB -> CLIP's input (1, 3, s, s): shortest side resized to s (bicubic), centre-cropped."""
        from PIL import Image

        return self.image_processor(images=Image.fromarray(image), return_tensors="pt")["pixel_values"]

    @torch.inference_mode()
    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """CLIP layer ``mm_vision_select_layer`` without CLS, through the projector: (N, H)."""
        out = self.llava.model.get_image_features(pixel_values=pixel_values.to(self.device, self.dtype))
        feats = out.pooler_output if hasattr(out, "pooler_output") else out
        feats = feats[0] if isinstance(feats, (list, tuple)) else feats
        return feats.reshape(-1, feats.shape[-1])

    def inputs_embeds(self, prompt: LisaPrompt, features: torch.Tensor) -> torch.Tensor:
        """LLaVA's splice (``prepare_inputs_labels_for_multimodal``): token embeddings with the N image features in
        place of the image placeholder. (1, S, H)."""
        ids = prompt.ids.to(self.device)
        emb = self.llava.get_input_embeddings()(ids.clamp(min=0))
        emb[prompt.image] = features.to(emb.dtype)
        return emb[None]

    # ---- forward passes ----------------------------------------------------------------------------------------
    @torch.inference_mode()
    def hidden_states(self, embeds: torch.Tensor) -> torch.Tensor:
        """The LLaMA decoder's last hidden state (after the final norm: what LISA reads), (S, H). Attention recorded by
        ``record_attention`` around this call comes from its layers."""
        out = self.llava.model.language_model(inputs_embeds=embeds, use_cache=False)
        return out.last_hidden_state[0]

    @torch.inference_mode()
    def generate(self, embeds: torch.Tensor, max_new_tokens: int) -> list[int]:
        """Greedy answer ids after the prompt (LISA's / SESAME's inference), ending at ``</s>``."""
        out = self.llava.generate(inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long,
                                                                                  device=self.device),
                                  max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                  pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id)
        return [int(i) for i in out[0]]

    @torch.inference_mode()
    def seg_embeddings(self, hidden: torch.Tensor, prompt: LisaPrompt) -> torch.Tensor:
        """The SAM prompt embedding of each ``[SEG]``: ``text_hidden_fcs`` of the hidden state at the position *before*
        it (the one whose output predicts ``[SEG]``; LISA's one-token offset). (n_seg, prompt_dim) float32."""
        if not prompt.seg:
            return torch.zeros((0, self.text_hidden_fcs[-1].out_features), device=self.device)
        rows = torch.tensor([p - 1 for p in prompt.seg], device=hidden.device)
        return self.text_hidden_fcs(hidden[rows]).float()

    @torch.inference_mode()
    def seg_masks(self, emb: SamEmbedding, embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """LISA's mask decoding: each embedding as the one sparse prompt (``text_embeds``), the no-mask dense
        embedding, one mask per prompt. Returns low-resolution logits (n, s, s) and predicted IoU (n,)."""
        sam = self.sam.sam
        n = embeddings.shape[0]
        pe = sam.prompt_encoder
        h, w = pe.image_embedding_size
        sparse = embeddings.to(self.sam.device, torch.float32)[:, None, :]
        dense = pe.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(n, -1, h, w)
        low, iou = sam.mask_decoder(image_embeddings=emb.features, image_pe=pe.get_dense_pe(),
                                    sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                    multimask_output=False)
        return low[:, 0].float(), iou[:, 0].float()

    # ---- geometry ------------------------------------------------------------------------------------------------
    def view_box(self, image_hw: tuple[int, int]) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) of the part of the image CLIP sees, in image pixels: CLIP resizes the shortest side and
        centre-crops a square, so its grid covers the central square of the image (the same arithmetic as the
        image processor, to within one resized pixel)."""
        H, W = image_hw
        short = int(_field(self.image_processor.size, "shortest_edge"))
        crop_h = int(_field(self.image_processor.crop_size, "height"))
        crop_w = int(_field(self.image_processor.crop_size, "width"))
        scale = min(H, W) / short
        rh, rw = (short, int(short * W / H)) if H <= W else (int(short * H / W), short)
        top, left = (rh - crop_h) // 2, (rw - crop_w) // 2
        return left * scale, top * scale, (left + crop_w) * scale, (top + crop_h) * scale


def _field(size, name: str):
    return size[name] if isinstance(size, dict) else getattr(size, name)


# ---- loading ---------------------------------------------------------------------------------------------------------

def llava_config(cfg: dict, vision_config, linear: bool):
    """The ``LlavaConfig`` for a LISA ``config.json`` and its CLIP tower's vision config: LLaMA from the checkpoint's
    fields, CLIP layer ``mm_vision_select_layer`` without CLS ("patch"), the projector one Linear (LISA v1) or
    Linear-GELU-Linear (SESAME); the decoder records attention through Rea2Seg's function."""
    from transformers import LlamaConfig, LlavaConfig

    from .attention import RECORDING_ATTENTION

    keys = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "rms_norm_eps", "max_position_embeddings", "vocab_size", "hidden_act", "rope_theta", "rope_scaling",
            "bos_token_id", "eos_token_id", "pad_token_id")
    text = LlamaConfig(**{k: cfg[k] for k in keys if cfg.get(k) is not None}, tie_word_embeddings=False)
    select = cfg.get("mm_vision_select_feature", "patch")
    vision = vision_config.to_dict() if hasattr(vision_config, "to_dict") else dict(vision_config)
    llava = LlavaConfig(vision_config=vision, text_config=text.to_dict(),
                        image_token_index=IMAGE_TOKEN_INDEX,  # never looked up: discovery splices the image itself
                        vision_feature_layer=int(cfg.get("mm_vision_select_layer", -2)),
                        vision_feature_select_strategy="default" if select == "patch" else "full",
                        projector_hidden_act="linear" if linear else "gelu",
                        multimodal_projector_bias=True, tie_word_embeddings=False,
                        image_seq_length=(vision["image_size"] // vision["patch_size"]) ** 2)
    llava.text_config._attn_implementation = RECORDING_ATTENTION
    llava.vision_config._attn_implementation = "sdpa"
    llava._attn_implementation = RECORDING_ATTENTION
    return llava


def build_modules(cfg: dict, vision_config, linear: bool, sam_arch: SamArch, out_dim: int):
    """The three models a LISA config describes, parameters on the meta device (to be assigned from the checkpoint):
    ``LlavaForConditionalGeneration`` (for LISA v1 the projector's second Linear and activation are identities),
    ``text_hidden_fcs`` as ``Sequential(Linear(H, H), ReLU, Linear(H, out_dim))`` and the ``segment_anything.Sam``."""
    from transformers import LlavaForConditionalGeneration

    hidden = int(cfg["hidden_size"])
    with parameters_on_meta():
        llava = LlavaForConditionalGeneration(llava_config(cfg, vision_config, linear))
        if linear:
            llava.model.multi_modal_projector.linear_2 = torch.nn.Identity()
            llava.model.multi_modal_projector.act = torch.nn.Identity()
        fcs = torch.nn.Sequential(torch.nn.Linear(hidden, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, out_dim))
        sam = sam_arch.build()
    return llava, fcs, sam


def load_lisa(source: str, device: str | torch.device | None = None, dtype: str | torch.dtype | None = None,
              download: bool = False) -> LisaGenerator:
    """Load a LISA-format checkpoint (LISA v1, SESAME, the Rea2Seg generator) and the CLIP tower it names."""
    from transformers import AutoConfig
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from .attention import register_recording_attention

    path = resolve_lisa_dir(str(source), download)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    cfg = _read_json(path / "config.json")
    state = read_weights(weight_files(path))
    mapped, _, unmapped = map_keys(state)
    if unmapped:
        raise CheckpointError(f"{path} is not a LISA-format checkpoint this loader maps: {len(unmapped)} tensors match "
                              f"no rule ({_few(unmapped)}); see docs/LISA.md for the mapping")
    groups: dict[str, dict[str, torch.Tensor]] = {"llava": {}, "fcs": {}, "sam": {}}
    for k, (model, target) in mapped.items():
        groups[model][target] = state[k]
    for model, prefix in (("sam", "model.visual_model.*"), ("fcs", "model.text_hidden_fcs.*")):
        if not groups[model]:
            raise CheckpointError(f"{path} is not a LISA-format checkpoint: it has no {prefix} tensors (found "
                                  f"{_few(state)})")
    linear = "model.mm_projector.weight" in state
    if not linear and "model.mm_projector.0.weight" not in state:
        raise CheckpointError(f"{path} has no multimodal projector (model.mm_projector.weight or .0.weight)")
    clip_dir = clip_dir_of(path, download)
    clip_state = read_weights(weight_files(clip_dir))
    clip_mapped, _, clip_unmapped = map_keys(clip_state, CLIP_KEY_MAP)
    if clip_unmapped:
        raise CheckpointError(f"{clip_dir} is not a CLIP checkpoint (vision_model.*): {_few(clip_unmapped)}")
    for k, (_, target) in clip_mapped.items():
        groups["llava"][target] = clip_state[k]
    register_recording_attention()
    clip_cfg = AutoConfig.from_pretrained(clip_dir)
    arch, kind = sam_arch_from_state(groups["sam"])
    out_dim = int(groups["fcs"]["2.weight"].shape[0]) if "2.weight" in groups["fcs"] else 0
    llava, fcs, sam = build_modules(cfg, getattr(clip_cfg, "vision_config", clip_cfg), linear, arch, out_dim)
    _assign(llava, {k: v.to(dt) for k, v in groups["llava"].items()}, "LLaVA", path)
    _assign(fcs, {k: v.to(dt) for k, v in groups["fcs"].items()}, "text_hidden_fcs", path)
    _assign(sam, {k: v.float() for k, v in groups["sam"].items()}, "SAM", path)
    llava.to(dev).eval()
    fcs.to(dev).eval()
    sam.to(dev).eval()
    try:
        processor = CLIPImageProcessorPil.from_pretrained(clip_dir)
    except (OSError, ValueError, TypeError) as e:
        raise CheckpointError(f"cannot load CLIP's image processor from {clip_dir} ({str(e).splitlines()[0][:160]}); "
                              f"it needs preprocessor_config.json") from None
    gen = LisaGenerator(llava, fcs, SamModel(sam, kind, path, dev), LegacyLlamaTokenizer(path), processor, str(source),
                        path, "lisa" if linear else "sesame", dev, dt)
    gen.seg_token_id  # noqa: B018 - fails early, naming the file, when the tokenizer lacks [SEG]
    return gen


def image_token_grid(per_token: torch.Tensor, side: int) -> torch.Tensor:
    """(N,) values in CLIP's patch order (row-major) -> (side, side)."""
    if per_token.numel() != side * side:
        raise ValueError(f"{per_token.numel()} image tokens do not fit a {side}x{side} grid")
    return per_token.reshape(side, side)


__all__ = ["CLIP_KEY_MAP", "CLIP_TOWERS", "IMAGE_TOKEN_INDEX", "KEY_MAP", "LISA_ARCHITECTURES", "LISA_REPOS", "LegacyLlamaTokenizer",
           "LisaGenerator", "LisaPrompt", "build_modules", "check_lisa_dir", "clip_dir_of", "download_clip", "download_lisa",
           "image_token_grid", "llava_config",
           "is_lisa_config", "is_lisa_dir", "is_lisa_source", "load_lisa", "map_keys", "parameters_on_meta",
           "read_weights", "resolve_clip_dir", "resolve_lisa_dir", "sam_arch_from_state", "vision_tower_name",
           "weight_files"]
