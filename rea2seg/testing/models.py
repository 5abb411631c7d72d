"""Random-weight models, built offline and saved in the same formats as real checkpoints: tiny ones for tests, CI
and the ``tiny-random`` preset, bench-size ones for benchmarks.

They prove plumbing, shapes and logic, and load back through the same loaders a user's checkpoint takes. Their output
is meaningless: every result made with them carries a warning saying so.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path

import torch

from ..models.sam import SamArch, save_sam
from . import published

MEANINGLESS = "random-weight 'tiny-random' models: this output is meaningless (plumbing check only)"

#: Part of the built models' names: bump it when the builders change what they write, so a cache built by an older
#: version is never mistaken for a current build (e.g. SAM files before their architecture was in the metadata).
BUILD = 3

QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
                 "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
                 "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]

# The published Qwen2.5-VL chat template (the tiny Qwen3-VL uses it too: Qwen3-VL's own is longer, with the same image
# placeholder <|vision_start|><|image_pad|><|vision_end|>).
QWEN_CHAT_TEMPLATE = published.QWEN2_5_VL_CHAT_TEMPLATE

_CORPUS = [
    "Yes", "No", " Yes", " No", "Yes.", "No.", "0 1 2 3 4 5 6 7 8 9 10", "Score: 7/10", '{"scores": {"1": 8, "2": 3}}',
    "You are a helpful assistant.", "system user assistant", "Question:", "Answer Yes or No.",
    "Does the highlighted region answer the question?", "Candidate", "Reasoning:", "the region in the red box",
    "Which object can be used to cut the bread?", "the utensil you would spread butter with",
    "the second car from the left", "Write a general description of the image.", "bbox_2d point_2d [10, 20, 30, 40]",
    "Please find the object with bbox and points.", "the person, the dog, the cup on the table",
]

FAMILIES = ("qwen2_5_vl", "qwen2_vl", "qwen3_vl", "qwen3_5")

# Qwen3.5's chat template thinks by default: the generation prompt opens a <think> block unless the caller passes
# enable_thinking=False (then the block comes pre-closed). The tiny Qwen3.5 does the same, in the image format above.
QWEN35_CHAT_TEMPLATE = QWEN_CHAT_TEMPLATE.replace(
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% if enable_thinking is defined and enable_thinking is "
    "false %}<think>\n\n</think>\n\n{% else %}<think>\n{% endif %}{% endif %}")

#: The processor files each family's published checkpoint carries (file name -> contents).
PROCESSOR_FILES = {
    "qwen2_vl": {"preprocessor_config.json": published.QWEN2_VL_7B_PREPROCESSOR},
    "qwen2_5_vl": {"preprocessor_config.json": published.QWEN2_5_VL_7B_PREPROCESSOR},
    "qwen3_vl": {"preprocessor_config.json": published.QWEN3_VL_8B_PREPROCESSOR,
                 "video_preprocessor_config.json": published.QWEN3_VL_8B_VIDEO_PREPROCESSOR},
    # Qwen3.5 ships Qwen3-VL's processor files unchanged (Qwen3VLProcessor, patch 16, merge 2)
    "qwen3_5": {"preprocessor_config.json": published.QWEN3_VL_8B_PREPROCESSOR,
                "video_preprocessor_config.json": published.QWEN3_VL_8B_VIDEO_PREPROCESSOR},
}


def build_tiny_tokenizer(vocab_size: int = 512, family: str = "qwen2_5_vl", corpus: list[str] | None = None):
    """A byte-level BPE trained offline on a small corpus (``corpus``, default the tiny models'), wrapped as the
    family's real tokenizer class (Qwen2's; Qwen3.5's, with its <think> tokens and thinking chat template, for
    "qwen3_5")."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer, Qwen3_5Tokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(_CORPUS * 20 if corpus is None else corpus, trainers.BpeTrainer(
        vocab_size=vocab_size, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    cls = Qwen3_5Tokenizer if family == "qwen3_5" else Qwen2Tokenizer
    tok = cls(vocab=model["vocab"], merges=merges, unk_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.add_special_tokens({"additional_special_tokens": QWEN_SPECIALS + (["<think>", "</think>"]
                                                                          if family == "qwen3_5" else [])})
    tok.chat_template = QWEN35_CHAT_TEMPLATE if family == "qwen3_5" else QWEN_CHAT_TEMPLATE
    return tok


def build_tiny_vlm(out_dir: str | os.PathLike, family: str = "qwen2_5_vl", seed: int = 0, hidden: int = 64,
                   layers: int = 2, vision_depth: int = 2, vision_hidden: int = 32, heads: int = 4, kv_heads: int = 2,
                   tokenizer=None, head_dim: int | None = None, intermediate: int | None = None,
                   vision_heads: int = 2, vision_intermediate: int | None = None,
                   fullatt_block_indexes: list[int] | None = None, tie_word_embeddings: bool = False,
                   vocab_size: int | None = None) -> Path:
    """Build a random-weight VLM of ``family`` and save it laid out like the published checkpoint: config.json,
    model.safetensors, the tokenizer files, the published preprocessor_config.json (and video_preprocessor_config.json
    where the checkpoint has one: transformers loads the same torchvision processor classes as for the real model)
    and the published chat_template.json. Returns the directory.

    The defaults make the ~0.2M-parameter test model with a tiny BPE tokenizer; ``tokenizer`` puts another one in
    (the real Qwen2.5 tokenizer: the vocabulary, and so the embedding, become the real size; ``vocab_size`` pads the
    embedding as the published config does, 152,064 rows); larger sizes (``hidden``, ``layers``, ``heads``...) make
    bench-size models."""
    import transformers as tf

    if family not in FAMILIES:
        raise ValueError(f"unknown tiny family {family!r}; choose from {FAMILIES}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = tokenizer if tokenizer is not None else build_tiny_tokenizer(family=family)
    ids = {s: tok.convert_tokens_to_ids(s) for s in QWEN_SPECIALS}
    head_dim = head_dim or hidden // heads
    text = dict(vocab_size=max(vocab_size or 0, len(tok)), hidden_size=hidden,
                intermediate_size=intermediate or 2 * hidden,
                num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                max_position_embeddings=8192, tie_word_embeddings=tie_word_embeddings,
                bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    if head_dim * heads != hidden:
        text["head_dim"] = head_dim
    section = [head_dim // 8, (head_dim // 2 - head_dim // 8) // 2]
    section.append(head_dim // 2 - sum(section))
    tokens = dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                  vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
                  tie_word_embeddings=tie_word_embeddings)
    vision_intermediate = vision_intermediate or 2 * vision_hidden
    if family == "qwen2_5_vl":
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 1e6, "mrope_section": section}
        vision = dict(depth=vision_depth, hidden_size=vision_hidden, intermediate_size=vision_intermediate,
                      num_heads=vision_heads, out_hidden_size=hidden, patch_size=14, spatial_merge_size=2,
                      temporal_patch_size=2, window_size=112,
                      fullatt_block_indexes=fullatt_block_indexes or [vision_depth - 1])
        cfg, cls = tf.Qwen2_5_VLConfig(text_config=text, vision_config=vision, **tokens), \
            tf.Qwen2_5_VLForConditionalGeneration
    elif family == "qwen2_vl":
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 1e6, "mrope_section": section}
        vision = dict(depth=vision_depth, embed_dim=vision_hidden, hidden_size=hidden,
                      mlp_ratio=max(1, vision_intermediate // vision_hidden), num_heads=vision_heads, patch_size=14,
                      spatial_merge_size=2, temporal_patch_size=2)
        cfg, cls = tf.Qwen2VLConfig(text_config=text, vision_config=vision, **tokens), \
            tf.Qwen2VLForConditionalGeneration
    elif family == "qwen3_5":
        # hybrid decoder: Gated DeltaNet (linear attention, no softmax map) layers interleaved with full-attention
        # ones; here every second layer is full (the real models: every fourth), so any band of two layers holds one
        rot = 4 * (head_dim // 8)  # rotary dims: a quarter of the 2 * head_dim attention head; sections sum to half
        text.update(head_dim=2 * head_dim, linear_key_head_dim=head_dim, linear_value_head_dim=head_dim,
                    linear_num_key_heads=max(1, kv_heads), linear_num_value_heads=heads,
                    layer_types=["linear_attention" if i % 2 == 0 else "full_attention" for i in range(layers)],
                    rope_parameters={"rope_type": "default", "rope_theta": 1e7, "partial_rotary_factor": 0.25,
                                     "mrope_section": [rot // 4, rot // 8, rot // 8], "mrope_interleaved": True})
        vision = dict(depth=vision_depth, hidden_size=vision_hidden, intermediate_size=vision_intermediate,
                      num_heads=vision_heads, out_hidden_size=hidden, patch_size=16, spatial_merge_size=2,
                      temporal_patch_size=2, num_position_embeddings=144)
        cfg, cls = tf.Qwen3_5Config(text_config=text, vision_config=vision, **tokens), \
            tf.Qwen3_5ForConditionalGeneration
    else:
        text.update(head_dim=head_dim, rope_parameters={"rope_type": "default", "rope_theta": 5e6,
                                                        "mrope_section": section, "mrope_interleaved": True})
        vision = dict(depth=vision_depth, hidden_size=vision_hidden, intermediate_size=vision_intermediate,
                      num_heads=vision_heads, out_hidden_size=hidden, patch_size=16, spatial_merge_size=2,
                      temporal_patch_size=2, num_position_embeddings=144, deepstack_visual_indexes=[0])
        cfg, cls = tf.Qwen3VLConfig(text_config=text, vision_config=vision, **tokens), \
            tf.Qwen3VLForConditionalGeneration
    torch.manual_seed(seed)
    model = cls(cfg).eval()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    for name, content in PROCESSOR_FILES[family].items():
        (out / name).write_text(json.dumps(content, indent=2) + "\n")
    # the published chat template whichever tokenizer was put in (Qwen3.5's thinks by default)
    template = QWEN35_CHAT_TEMPLATE if family == "qwen3_5" else QWEN_CHAT_TEMPLATE
    (out / "chat_template.json").write_text(json.dumps({"chat_template": template}, indent=2) + "\n")
    return out


# ---- SAM ------------------------------------------------------------------------------------------------------------

#: Small SAM architectures (Meta's vit_b/l/h are ``rea2seg.models.sam.SAM_ARCHS``).
TEST_SAM_ARCHS = {
    # ~0.1M params, 256 px encoder: tests
    "tiny": SamArch(img_size=256, patch_size=16, embed_dim=32, depth=2, heads=2, global_attn_indexes=(1,),
                    window_size=4, mlp_ratio=2, prompt_dim=32, decoder_mlp_dim=64, decoder_heads=2,
                    iou_head_hidden_dim=32, mask_in_chans=4),
    # ~5M params, 1024 px encoder like the real ones: benchmarks (encoder compute dominates like real SAM)
    "bench": SamArch(img_size=1024, patch_size=16, embed_dim=128, depth=4, heads=4, global_attn_indexes=(3,),
                     window_size=14, mlp_ratio=2, prompt_dim=128, decoder_mlp_dim=512, decoder_heads=2,
                     iou_head_hidden_dim=32, mask_in_chans=4),
}


def build_tiny_sam(path: str | os.PathLike, kind: str = "tiny", seed: int = 0) -> Path:
    """Build a random-weight SAM of a small architecture and save it to ``path``: ``.safetensors`` carries the
    architecture (loads with ``load_sam(path)``); a ``.pth`` needs ``load_sam(path, arch=TEST_SAM_ARCHS[kind])``."""
    torch.manual_seed(seed)
    arch = TEST_SAM_ARCHS[kind]
    return save_sam(arch.build(), path, arch)


def build_dir_atomically(target: Path, build, marker: str) -> None:
    """``build(tmp)`` into a temporary folder next to ``target`` and rename it into place, unless ``target/marker``
    exists: a crash or a concurrent builder never leaves a half-written model that looks complete."""
    if (target / marker).exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".building-{secrets.token_hex(6)}"
    tmp.mkdir()  # the usual mode (umask), not mkdtemp's 0700: a shared models folder stays readable
    try:
        build(tmp)
        try:
            os.rename(tmp, target)
        except OSError:  # another process finished first
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def ensure_tiny_models(root: str | os.PathLike, family: str = "qwen2_5_vl") -> tuple[Path, Path]:
    """Build (once) the tiny VLM dir and tiny SAM file under ``root``; return (vlm_dir, sam_path).

    Built into a temporary folder and renamed into place, so a crash or a concurrent builder never leaves a
    half-written model that looks complete.
    """
    root = Path(root)
    vlm_dir = root / "LLM" / f"tiny-random-{family}-v{BUILD}"
    sam_path = root / "sams" / f"sam_tiny_random_v{BUILD}.safetensors"
    build_dir_atomically(vlm_dir, lambda d: build_tiny_vlm(d, family), "model.safetensors")
    if not sam_path.exists():
        sam_path.parent.mkdir(parents=True, exist_ok=True)
        tmp_name = sam_path.parent / f".building-{secrets.token_hex(6)}.safetensors"
        try:
            build_tiny_sam(tmp_name)
            os.replace(tmp_name, sam_path)
        finally:
            tmp_name.unlink(missing_ok=True)
    return vlm_dir, sam_path


#: The tiny SAM 2.1 and SAM 3 checkpoints: where each is built under the models root (ComfyUI's folder names).
TINY_SEGMENTERS = {"sam2": f"sam2/tiny-random-sam2.1-v{BUILD}", "sam3": f"sam3/tiny-random-sam3-v{BUILD}"}


def ensure_tiny_segmenter(root: str | os.PathLike, kind: str) -> Path:
    """Build (once) the tiny SAM 2.1 ("sam2") or SAM 3 ("sam3") checkpoint directory, in the hub layout, under
    ``root``; return it."""
    from .segmenters import build_tiny_sam2, build_tiny_sam3

    if kind not in TINY_SEGMENTERS:
        raise ValueError(f"unknown tiny segmenter {kind!r}; choose from {tuple(TINY_SEGMENTERS)}")
    target = Path(root) / TINY_SEGMENTERS[kind]
    build_dir_atomically(target, build_tiny_sam2 if kind == "sam2" else build_tiny_sam3, "model.safetensors")
    return target
