"""Chat-formatted VLM inputs shared by discovery and scoring."""
from __future__ import annotations

from PIL import Image

from .vlm import VLM


def chat_inputs(vlm: VLM, conversations: list[list[Image.Image | str]]):
    """Processor inputs (left-padded batch) for one user turn per conversation; each turn is a list of PIL images and
    strings in order. The generation prompt is appended; every image is kept within the VLM's pixel budget."""
    texts, images = [], []
    for turn in conversations:
        content = []
        for part in turn:
            if isinstance(part, str):
                content.append({"type": "text", "text": part})
            else:
                content.append({"type": "image"})
                images.append(part)
        texts.append(vlm.processor.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                                       add_generation_prompt=True))
    return vlm.processor(text=texts, images=images or None, padding=True, return_tensors="pt",
                         **(vlm.image_kwargs() if images else {}))


def to_device(vlm: VLM, inputs) -> dict:
    """Move processor outputs to the model's device; pixel values to its dtype."""
    feed = {k: v.to(vlm.device) if hasattr(v, "to") else v for k, v in inputs.items()}
    if "pixel_values" in feed:
        feed["pixel_values"] = feed["pixel_values"].to(vlm.dtype)
    return feed
