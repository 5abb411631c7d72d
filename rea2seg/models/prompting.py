"""Chat-formatted VLM inputs shared by discovery and scoring."""
from __future__ import annotations

from PIL import Image

from .vlm import VLM


def _no_thinking(vlm: VLM) -> dict:
    """``enable_thinking=False`` for chat templates that read it (Qwen3.5 thinks unless told not to); nothing for the
    others (transformers would take an unknown template variable for a processor argument)."""
    tpl = getattr(vlm.processor, "chat_template", None) or getattr(vlm.tokenizer, "chat_template", None)
    text = tpl if isinstance(tpl, str) else " ".join(map(str, tpl.values())) if isinstance(tpl, dict) else ""
    return {"enable_thinking": False} if "enable_thinking" in text else {}


def chat_inputs(vlm: VLM, conversations: list[list[Image.Image | str]]):
    """Processor inputs (left-padded batch) for one user turn per conversation; each turn is a list of PIL images and
    strings in order. The generation prompt is appended, without a thinking block: templates that think by default
    (Qwen3.5) get ``enable_thinking=False``, so the answer (or the yes/no token) comes first. Every image is kept
    within the VLM's pixel budget."""
    texts, images = [], []
    template_kwargs = _no_thinking(vlm)
    for turn in conversations:
        content = []
        for part in turn:
            if isinstance(part, str):
                content.append({"type": "text", "text": part})
            else:
                content.append({"type": "image"})
                images.append(part)
        texts.append(vlm.processor.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                                       add_generation_prompt=True, **template_kwargs))
    return vlm.processor(text=texts, images=images or None, padding=True, return_tensors="pt",
                         **(vlm.image_kwargs() if images else {}))


def to_device(vlm: VLM, inputs) -> dict:
    """Move processor outputs to the model's device; pixel values to its dtype."""
    feed = {k: v.to(vlm.device) if hasattr(v, "to") else v for k, v in inputs.items()}
    if "pixel_values" in feed:
        feed["pixel_values"] = feed["pixel_values"].to(vlm.dtype)
    return feed
