"""The real Qwen2.5 tokenizer, and a tiny Qwen2.5-VL whose vocabulary is that tokenizer's, for tests.

The tokenizer files come from the ComfyUI copy the ComfyUI tests already fetch (``scripts/setup_comfyui.py``:
``comfy/text_encoders/qwen25_tokenizer/``, the Qwen2.5-VL-7B tokenizer ComfyUI uses for Qwen-Image); ComfyUI's own four
extra added tokens (ids 151665-151668) are dropped, leaving Qwen2.5-VL's 151,665 tokens. The model directory then holds
exactly what the hub checkpoint holds (config.json, model.safetensors, tokenizer files, the published
preprocessor_config.json and chat_template.json); only the weights are tiny and random.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
from pathlib import Path

from rea2seg.testing import build_tiny_vlm, published

REPO_ROOT = Path(__file__).resolve().parents[1]


def comfyui_tokenizer_dir() -> Path:
    """ComfyUI's copy of the Qwen2.5 tokenizer (fetched once with scripts/setup_comfyui.py), its files checked."""
    spec = importlib.util.spec_from_file_location("setup_comfyui", REPO_ROOT / "scripts" / "setup_comfyui.py")
    setup = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(setup)
    d = Path(setup.ensure_comfyui()[0]) / "comfy" / "text_encoders" / "qwen25_tokenizer"
    for name, digest in published.QWEN2_5_TOKENIZER_SHA256.items():
        got = hashlib.sha256((d / name).read_bytes()).hexdigest()
        assert got == digest, f"{d / name} is not the Qwen2.5 tokenizer file these tests know (sha256 {got})"
    return d


def qwen25_tokenizer(work: Path):
    """The Qwen2.5-VL tokenizer: ComfyUI's files without ComfyUI's four extra added tokens."""
    from transformers import AutoTokenizer

    src = comfyui_tokenizer_dir()
    d = work / "qwen25-tokenizer"
    d.mkdir(parents=True, exist_ok=True)
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(src / name, d / name)
    cfg = json.loads((src / "tokenizer_config.json").read_text())
    cfg["added_tokens_decoder"] = {k: v for k, v in cfg["added_tokens_decoder"].items()
                                   if int(k) < published.QWEN2_5_TOKENIZER_SIZE}
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    tok = AutoTokenizer.from_pretrained(d)
    assert len(tok) == published.QWEN2_5_TOKENIZER_SIZE
    return tok


def build_real_vocab_qwen25_vl(out: Path, work: Path) -> Path:
    """A tiny Qwen2.5-VL (hidden 16) with the real tokenizer and the published 152,064-row vocabulary."""
    return build_tiny_vlm(out, "qwen2_5_vl", tokenizer=qwen25_tokenizer(work), hidden=16, heads=2, kv_heads=1,
                          intermediate=32, vision_hidden=16, vision_heads=2, vision_depth=2,
                          vocab_size=published.QWEN2_5_VL_7B_CONFIG["text"]["vocab_size"])
