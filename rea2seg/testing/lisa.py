"""Tiny random-weight LISA-format checkpoints, built offline in the released checkpoints' layout, and the tiny CLIP
tower they name, so the real loader (``rea2seg.models.lisa``) is what tests and the ``tiny-random-lisa`` preset use.

The layout follows what LISA's ``merge_lora_weights_and_save_hf_model.py`` wrote with transformers 4.31 (see
docs/LISA.md): ``config.json`` with LISA's fields, ``generation_config.json``, ``pytorch_model-0000k-of-0000n.bin``
shards with ``pytorch_model.bin.index.json``, LLaMA and projector tensors in bf16 and SAM / ``text_hidden_fcs`` in
fp32, the slow tokenizer's files (``tokenizer.model``, ``tokenizer_config.json``, ``special_tokens_map.json``,
``added_tokens.json`` with ``[SEG]``, ``<im_start>``, ``<im_end>`` right after the SentencePiece vocabulary). The
CLIP tower copies the ``openai/clip-vit-large-patch14`` repo's files: a full ``CLIPModel`` state dict with
``vision_model.*`` keys (and the ``position_ids`` buffers old transformers saved), its ``config.json`` and the
feature-extractor style ``preprocessor_config.json``.
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
from collections import OrderedDict
from pathlib import Path

import torch

from .models import TEST_SAM_ARCHS, build_dir_atomically

#: LLaVA v1's system prompt (LISA's ``conv_llava_v1``), part of the tokenizer corpus
_SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
           "detailed, and polite answers to the human's questions.")
_CORPUS = [
    _SYSTEM, "USER: ASSISTANT:", "Please output segmentation mask.", "Sure, it is [SEG].", "It is [SEG].",
    "What is the object in this image?", "Which object can be used to cut the bread?", "the cup nearest the laptop",
    "the utensil you would spread butter with", "Write a general description of the image.",
    "No presence of the object detected in this image.", "the second car from the left", "0 1 2 3 4 5 6 7 8 9",
]
#: The tiny SAM inside the tiny LISA: the test SAM with the mask decoder's 8 heads (the loader reads everything else
#: from the tensor shapes, as for the real ViT-H)
TINY_LISA_SAM = dataclasses.replace(TEST_SAM_ARCHS["tiny"], decoder_heads=8)
#: variant -> (architecture, projector, CLIP image size, CLIP folder/hub name)
VARIANTS = {
    "lisa": ("LISAForCausalLM", "linear", 112, "tiny-random-clip-vit-large-patch14"),
    "sesame": ("SESAMEForCausalLM", "mlp2x_gelu", 168, "tiny-random-clip-vit-large-patch14-336"),
}
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def build_tiny_sentencepiece(out_dir: Path, vocab_size: int = 400) -> Path:
    """A SentencePiece BPE model with LLaMA's settings (byte fallback, <unk>=0, <s>=1, </s>=2, dummy prefix, digits
    split, whitespace kept) trained on a small corpus; written as ``tokenizer.model``."""
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_CORPUS * 4), model_writer=buf, vocab_size=vocab_size, model_type="bpe",
        byte_fallback=True, split_digits=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, add_dummy_prefix=True,
        remove_extra_whitespaces=False, normalization_rule_name="identity", character_coverage=1.0,
        allow_whitespace_only_pieces=True, num_threads=1, minloglevel=2)
    path = Path(out_dir) / "tokenizer.model"
    path.write_bytes(buf.getvalue())
    return path


def build_tiny_clip(out_dir: str | os.PathLike, image_size: int = 112, seed: int = 0) -> Path:
    """A random-weight CLIP (vision 32 wide, 3 layers, patch 14) in the openai/clip-vit-large-patch14 repo layout."""
    from safetensors.torch import save_file
    from transformers import CLIPConfig, CLIPModel

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = CLIPConfig(
        text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                         max_position_embeddings=16, vocab_size=64, bos_token_id=0, eos_token_id=1, pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                           image_size=image_size, patch_size=14),
        projection_dim=16)
    torch.manual_seed(seed)
    model = CLIPModel(cfg).eval()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    n_vis = (image_size // 14) ** 2 + 1
    state["vision_model.embeddings.position_ids"] = torch.arange(n_vis)[None]
    state["text_model.embeddings.position_ids"] = torch.arange(16)[None]
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    conf = cfg.to_dict()
    conf.pop("dtype", None)
    conf["architectures"] = ["CLIPModel"]
    (out / "config.json").write_text(json.dumps(conf, indent=2))
    (out / "preprocessor_config.json").write_text(json.dumps({
        "crop_size": image_size, "do_center_crop": True, "do_normalize": True, "do_resize": True,
        "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
        "resample": 3, "size": image_size}, indent=2))
    return out


def _added(content: str) -> dict:
    return {"__type": "AddedToken", "content": content, "lstrip": False, "normalized": False, "rstrip": False,
            "single_word": False}


def build_tiny_lisa(out_dir: str | os.PathLike, variant: str = "lisa", seed: int = 0, hidden: int = 64,
                    layers: int = 2, heads: int = 4, shards: int = 2, vision_tower: str | None = None,
                    tokenizer_model: str | os.PathLike | None = None) -> Path:
    """A random-weight LISA-format checkpoint (``variant`` "lisa": LISA v1, one-Linear projector, 224-style CLIP;
    "sesame": SESAME / the Rea2Seg generator, mlp2x_gelu projector, 336-style CLIP) in the released file layout.
    ``vision_tower`` is what config.json names (default: the tiny CLIP's hub-style id; build that CLIP next to it
    with ``build_tiny_clip``). ``tokenizer_model``: a SentencePiece file to use instead of training a tiny one (e.g.
    LLaMA's, which puts [SEG] at 32000 as in the released checkpoints)."""
    import sentencepiece as spm
    from transformers import LlamaConfig, LlamaForCausalLM

    arch_name, projector, image_size, clip_name = VARIANTS[variant]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if tokenizer_model is not None:
        shutil.copyfile(tokenizer_model, out / "tokenizer.model")
    sp = spm.SentencePieceProcessor(model_file=str(out / "tokenizer.model" if tokenizer_model is not None
                                                   else build_tiny_sentencepiece(out)))
    v0 = sp.get_piece_size()
    added = {"[SEG]": v0, "<im_start>": v0 + 1, "<im_end>": v0 + 2}
    vocab = v0 + 3
    lisa = variant == "lisa"
    text = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                       num_attention_heads=heads, num_key_value_heads=heads,
                       max_position_embeddings=2048 if lisa else 4096, rms_norm_eps=1e-6 if lisa else 1e-5,
                       bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
    torch.manual_seed(seed)
    llama = LlamaForCausalLM(text).eval()
    clip_hidden = 32
    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    lm = llama.state_dict()
    for k, v in lm.items():  # LISA's names for the LLaMA part are LlamaForCausalLM's
        if k != "lm_head.weight":
            state[k] = v.to(torch.bfloat16)
    if lisa:
        proj = torch.nn.Linear(clip_hidden, hidden)
        state["model.mm_projector.weight"] = proj.weight.detach().to(torch.bfloat16)
        state["model.mm_projector.bias"] = proj.bias.detach().to(torch.bfloat16)
    else:
        for i, (a, b) in ((0, (clip_hidden, hidden)), (2, (hidden, hidden))):
            layer = torch.nn.Linear(a, b)
            state[f"model.mm_projector.{i}.weight"] = layer.weight.detach().to(torch.bfloat16)
            state[f"model.mm_projector.{i}.bias"] = layer.bias.detach().to(torch.bfloat16)
    sam = TINY_LISA_SAM.build()
    for k, v in sam.state_dict().items():
        state[f"model.visual_model.{k}"] = v.detach().float()
    out_dim = TINY_LISA_SAM.prompt_dim
    fcs = torch.nn.Sequential(torch.nn.Linear(hidden, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, out_dim))
    for k, v in fcs.state_dict().items():
        state[f"model.text_hidden_fcs.0.{k}"] = v.detach().float()
    state["lm_head.weight"] = lm["lm_head.weight"].to(torch.bfloat16)
    _save_shards(state, out, shards)

    tower = vision_tower or f"rea2seg/{clip_name}"
    cfg = {
        "_name_or_path": f"tiny-random-{variant}", "architectures": [arch_name], "bos_token_id": 1,
        "eos_token_id": 2, "pad_token_id": 0, "freeze_mm_mlp_adapter": True, "hidden_act": "silu",
        "hidden_size": hidden, "image_aspect_ratio": "square", "image_grid_pinpoints": None,
        "initializer_range": 0.02, "intermediate_size": 2 * hidden,
        "max_position_embeddings": text.max_position_embeddings, "max_sequence_length": text.max_position_embeddings,
        "mm_hidden_size": clip_hidden, "mm_use_im_patch_token": False, "mm_use_im_start_end": True,
        "mm_vision_select_feature": "patch", "mm_vision_select_layer": -2, "mm_vision_tower": tower,
        "model_type": "llava", "num_attention_heads": heads, "num_hidden_layers": layers,
        "num_key_value_heads": heads, "out_dim": out_dim, "pretrain_mm_mlp_adapter": None,
        "rms_norm_eps": text.rms_norm_eps, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
        "train_mask_decoder": True, "transformers_version": "4.31.0", "tune_mm_mlp_adapter": False,
        "use_cache": False, "use_mm_proj": True, "vision_tower": tower, "vocab_size": vocab,
    }
    if not lisa:
        cfg["mm_projector_type"] = "mlp2x_gelu"
    (out / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True))
    (out / "generation_config.json").write_text(json.dumps({
        "_from_model_config": True, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
        "transformers_version": "4.31.0"}, indent=2))
    (out / "added_tokens.json").write_text(json.dumps(added, indent=2))
    (out / "special_tokens_map.json").write_text(json.dumps({
        "bos_token": _added("<s>"), "eos_token": _added("</s>"), "pad_token": "<unk>", "unk_token": _added("<unk>")},
        indent=2))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "add_bos_token": True, "add_eos_token": False, "bos_token": _added("<s>"),
        "clean_up_tokenization_spaces": False,
        "eos_token": _added("</s>"), "legacy": None if lisa else True, "model_max_length": 512, "pad_token": None,
        "padding_side": "right", "sp_model_kwargs": {}, "tokenizer_class": "LlamaTokenizer",
        "unk_token": _added("<unk>")}, indent=2))
    return out


def _save_shards(state: "OrderedDict[str, torch.Tensor]", out: Path, shards: int) -> None:
    """``torch.save`` shards of about equal size in state-dict order, and ``pytorch_model.bin.index.json``."""
    total = sum(v.numel() * v.element_size() for v in state.values())
    limit = total / max(shards, 1)
    parts: list[OrderedDict] = [OrderedDict()]
    size = 0
    for k, v in state.items():
        nbytes = v.numel() * v.element_size()
        if parts[-1] and size + nbytes > limit and len(parts) < shards:
            parts.append(OrderedDict())
            size = 0
        parts[-1][k] = v.contiguous()
        size += nbytes
    n = len(parts)
    weight_map = {}
    for i, part in enumerate(parts, 1):
        name = f"pytorch_model-{i:05d}-of-{n:05d}.bin" if n > 1 else "pytorch_model.bin"
        torch.save(part, out / name)
        weight_map.update({k: name for k in part})
    if n > 1:
        (out / "pytorch_model.bin.index.json").write_text(json.dumps(
            {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))


def ensure_tiny_lisa(root: str | os.PathLike, variant: str = "lisa") -> Path:
    """Build (once) ``<root>/LLM/tiny-random-<variant>`` and the tiny CLIP tower it names next to it (where the loader
    looks for a hub-id tower: the checkpoint's sibling folder); return the checkpoint directory."""
    llm = Path(root) / "LLM"
    _, _, image_size, clip_name = VARIANTS[variant]
    build_dir_atomically(llm / clip_name, lambda d: build_tiny_clip(d, image_size), "config.json")
    target = llm / f"tiny-random-{variant}"
    build_dir_atomically(target, lambda d: build_tiny_lisa(d, variant), "config.json")
    return target
