"""A tiny random-weight InternVL3 in the transformers ``-hf`` format, built offline for tests.

Laid out like ``OpenGVLab/InternVL3-8B-hf``: ``InternVLForConditionalGeneration`` (InternViT vision tower + Qwen2 text
model) in model.safetensors, a Qwen2 byte-level BPE tokenizer with InternVL's image tokens registered as named special
tokens (what ``InternVLProcessor.__init__`` reads: ``tokenizer.start_image_token``, ``end_image_token``,
``context_image_token``, ``video_token`` and their ids), preprocessor_config.json (GotOcr2 image processor, 448 px
tiles scaled down to 64 px), video_preprocessor_config.json, processor_config.json and an InternVL-format
chat_template.jinja. Random weights: it proves plumbing only.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

# Named special tokens, as the real -hf tokenizer_config.json declares them (model_specific_special_tokens).
INTERNVL_NAMED_TOKENS = {"start_image_token": "<img>", "end_image_token": "</img>",
                         "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"}

# Our own template in InternVL-hf's format: no default system turn; an image is one <IMG_CONTEXT> line, which the
# processor expands to <img> + image_seq_length * tiles * <IMG_CONTEXT> + </img>.
INTERNVL_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<IMG_CONTEXT>\n' }}"
    "{% elif content['type'] == 'video' %}{{ '<video>\n' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{ '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def build_tiny_internvl(out_dir: str | os.PathLike, seed: int = 0, image_size: int = 64, patch_size: int = 16,
                        max_patches: int = 4, init_std: float = 0.3) -> Path:
    """Build the tiny InternVL3-hf into ``out_dir`` (created) and return it. ~0.16M parameters; each 64 px tile is
    (64/16)^2 * 0.5^2 = 4 image tokens; up to ``max_patches`` tiles plus a thumbnail per image. ``init_std`` is large
    on purpose: with the usual 0.02 the greedy reply repeats one token, so comparing batched and one-by-one generation
    would prove little."""
    from transformers import (AutoTokenizer, InternVLConfig, InternVLForConditionalGeneration,
                              InternVLVideoProcessor)
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

    from rea2seg.testing import build_tiny_tokenizer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # The real tokenizer is Qwen2.5-VL's plus InternVL's tokens (transformers' conversion script does the same: load
    # with extra_special_tokens={name: token}, add the tokens, save). The tiny Qwen tokenizer stands in for Qwen's.
    tok = build_tiny_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": list(INTERNVL_NAMED_TOKENS.values())},
                           replace_extra_special_tokens=False)
    tok.save_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out, extra_special_tokens=INTERNVL_NAMED_TOKENS)
    tok.chat_template = INTERNVL_CHAT_TEMPLATE
    tok.save_pretrained(out)

    ids = {s: tok.convert_tokens_to_ids(s) for s in ("<|endoftext|>", "<|im_end|>", "<IMG_CONTEXT>")}
    seq = (image_size // patch_size) ** 2 // 4  # downsample_ratio 0.5 (pixel shuffle) keeps a quarter
    text = dict(model_type="qwen2", vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192, initializer_range=init_std,
                bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    vision = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                  image_size=image_size, patch_size=patch_size, initializer_range=init_std)
    cfg = InternVLConfig(text_config=text, vision_config=vision, image_token_id=ids["<IMG_CONTEXT>"],
                         image_seq_length=seq)
    torch.manual_seed(seed)
    InternVLForConditionalGeneration(cfg).eval().save_pretrained(out)

    # The real checkpoint's files: preprocessor_config.json (GotOcr2, ImageNet mean/std, tiles of `size`),
    # video_preprocessor_config.json, processor_config.json (image_seq_length), chat_template.jinja.
    GotOcr2ImageProcessorPil(size={"height": image_size, "width": image_size}, min_patches=1, max_patches=max_patches,
                             image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
                             do_convert_rgb=True).save_pretrained(out)
    InternVLVideoProcessor(size={"height": image_size, "width": image_size}).save_pretrained(out)
    (out / "processor_config.json").write_text(json.dumps({"image_seq_length": seq,
                                                           "processor_class": "InternVLProcessor"}, indent=2))
    (out / "chat_template.jinja").write_text(INTERNVL_CHAT_TEMPLATE)
    return out
