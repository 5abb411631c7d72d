"""Random-weight SAM 2.1 and SAM 3 checkpoints laid out like the published hub repos, built offline.

``facebook/sam2.1-hiera-*``: config.json (model_type ``sam2_video``), model.safetensors, preprocessor_config.json
(``Sam2ImageProcessorFast``), video_preprocessor_config.json and a small processor_config.json.
``facebook/sam3``: config.json (model_type ``sam3_video``: detector + tracker), one model.safetensors with
``detector_model.*``, ``tracker_model.*`` and ``tracker_neck.*``, a nested processor_config.json and CLIP tokenizer
files. The real geometry is kept (1024 / 1008 px inputs, 256 / 288 px masks); the widths are tiny ("tiny", for tests)
or small ("bench", for benchmarks: real-width 256-d decoders, a small image encoder).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class Sam2Size:
    hidden: int  # Hiera stage-1 width; stages double it
    heads: tuple[int, int, int, int]
    blocks: tuple[int, int, int, int]
    global_blocks: tuple[int, ...]
    decoder: int  # FPN / prompt encoder / mask decoder width (256 in every published SAM 2)
    decoder_mlp: int
    decoder_heads: int


@dataclass(frozen=True)
class Sam3Size:
    vit_hidden: int
    vit_layers: int
    vit_heads: int
    vit_global: tuple[int, ...]
    decoder: int  # every head's width (256 in the published SAM 3)
    text_hidden: int
    text_layers: int
    detr_layers: int
    queries: int
    heads: int


SAM2_SIZES = {
    "tiny": Sam2Size(8, (1, 1, 2, 2), (1, 1, 2, 1), (3,), 32, 64, 2),
    "bench": Sam2Size(32, (1, 2, 4, 8), (1, 2, 3, 1), (4, 5), 256, 2048, 8),  # globals inside stage 3, as Meta
}
SAM3_SIZES = {
    "tiny": Sam3Size(32, 2, 2, (1,), 32, 32, 1, 1, 16, 2),
    "bench": Sam3Size(128, 4, 4, (3,), 256, 256, 2, 2, 200, 8),
}


def _safe_write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def build_tiny_sam2(out_dir: str | os.PathLike, size: str = "tiny", seed: int = 0) -> Path:
    """A random-weight SAM 2.1 in the layout of ``facebook/sam2.1-hiera-*`` (video checkpoint + image processor
    files). Returns the directory."""
    from transformers import (Sam2HieraDetConfig, Sam2VideoConfig, Sam2VideoMaskDecoderConfig, Sam2VideoModel,
                              Sam2VideoPromptEncoderConfig, Sam2VisionConfig)

    s = SAM2_SIZES[size]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dims = [s.hidden * 2 ** i for i in range(4)]
    backbone = Sam2HieraDetConfig(hidden_size=s.hidden, embed_dim_per_stage=dims,
                                  num_attention_heads_per_stage=list(s.heads), blocks_per_stage=list(s.blocks),
                                  global_attention_blocks=list(s.global_blocks))
    vision = Sam2VisionConfig(backbone_config=backbone, backbone_channel_list=dims[::-1], fpn_hidden_size=s.decoder)
    d = s.decoder
    cfg = Sam2VideoConfig(
        vision_config=vision, prompt_encoder_config=Sam2VideoPromptEncoderConfig(hidden_size=d),
        mask_decoder_config=Sam2VideoMaskDecoderConfig(hidden_size=d, mlp_dim=s.decoder_mlp,
                                                       num_attention_heads=s.decoder_heads, iou_head_hidden_dim=d),
        memory_attention_hidden_size=d, memory_attention_num_layers=1, memory_attention_feed_forward_hidden_size=2 * d,
        memory_encoder_hidden_size=d, memory_encoder_output_channels=16, mask_downsampler_embed_dim=d,
        memory_fuser_embed_dim=d, memory_fuser_intermediate_dim=2 * d, memory_fuser_num_layers=1)
    torch.manual_seed(seed)
    Sam2VideoModel(cfg).eval().save_pretrained(out)
    # the processor files exactly as the published repos carry them (written by transformers 4.56)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    common = {"do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": mean,
              "image_std": std, "resample": 2, "rescale_factor": 1 / 255, "size": {"height": 1024, "width": 1024},
              "processor_class": "Sam2VideoProcessor"}
    _safe_write_json(out / "processor_config.json",
                     {"point_pad_value": -10, "processor_class": "Sam2VideoProcessor", "target_size": 1024})
    _safe_write_json(out / "preprocessor_config.json",
                     {**common, "crop_size": None, "data_format": "channels_first", "default_to_square": True,
                      "image_processor_type": "Sam2ImageProcessorFast", "mask_size": {"height": 256, "width": 256}})
    _safe_write_json(out / "video_preprocessor_config.json",
                     {**common, "video_processor_type": "Sam2VideoVideoProcessor"})
    return out


def build_clip_tokenizer(words: tuple[str, ...] = ("red", "circle", "cup", "mug", "spoon", "coffee", "table")):
    """CLIP's byte-level BPE over the 256 byte symbols (and their end-of-word forms), with merges that spell a few
    whole words, and CLIP's two special tokens; 32 positions as SAM 3's text encoder has."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": i + 256 for i, c in enumerate(chars)})
    merges: list[tuple[str, str]] = []
    for w in words:  # left-to-right merges: "c u" -> "cu", "cu p</w>" -> "cup</w>"
        left = w[0]
        for j, ch in enumerate(w[1:], 1):
            right = ch + ("</w>" if j == len(w) - 1 else "")
            if (left, right) not in merges:
                merges.append((left, right))
            left = left + right
            vocab.setdefault(left, len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=32)


def build_tiny_sam3(out_dir: str | os.PathLike, size: str = "tiny", seed: int = 0) -> Path:
    """A random-weight SAM 3 in the layout of ``facebook/sam3`` (one ``sam3_video`` checkpoint holding the concept
    detector and the tracker, a nested processor_config.json, CLIP tokenizer files). Returns the directory."""
    from safetensors.torch import load_file, save_file
    from transformers import (CLIPTextConfig, Sam3Config, Sam3DETRDecoderConfig, Sam3DETREncoderConfig,
                              Sam3GeometryEncoderConfig, Sam3ImageProcessor, Sam3MaskDecoderConfig,
                              Sam3TrackerVideoConfig, Sam3TrackerVideoMaskDecoderConfig,
                              Sam3TrackerVideoPromptEncoderConfig, Sam3VideoConfig, Sam3VideoModel,
                              Sam3VideoProcessor, Sam3VisionConfig, Sam3ViTConfig)
    from transformers.models.sam2_video import Sam2VideoVideoProcessor

    s = SAM3_SIZES[size]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_clip_tokenizer()
    d, h = s.decoder, s.heads
    vit = dict(hidden_size=s.vit_hidden, intermediate_size=2 * s.vit_hidden, num_hidden_layers=s.vit_layers,
               num_attention_heads=s.vit_heads, global_attn_indexes=list(s.vit_global))
    detector = Sam3Config(
        vision_config=Sam3VisionConfig(backbone_config=Sam3ViTConfig(**vit), fpn_hidden_size=d),
        text_config=CLIPTextConfig(vocab_size=len(tok), hidden_size=s.text_hidden,
                                   intermediate_size=2 * s.text_hidden, projection_dim=d,
                                   num_hidden_layers=s.text_layers, num_attention_heads=h,
                                   max_position_embeddings=32, hidden_act="gelu", bos_token_id=tok.bos_token_id,
                                   eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
        geometry_encoder_config=Sam3GeometryEncoderConfig(hidden_size=d, num_layers=1, num_attention_heads=h,
                                                          intermediate_size=2 * d),
        detr_encoder_config=Sam3DETREncoderConfig(hidden_size=d, num_layers=s.detr_layers, num_attention_heads=h,
                                                  intermediate_size=2 * d),
        detr_decoder_config=Sam3DETRDecoderConfig(hidden_size=d, num_layers=s.detr_layers, num_queries=s.queries,
                                                  num_attention_heads=h, intermediate_size=2 * d),
        mask_decoder_config=Sam3MaskDecoderConfig(hidden_size=d, num_attention_heads=h))
    tracker = Sam3TrackerVideoConfig(
        vision_config=Sam3VisionConfig(backbone_config=Sam3ViTConfig(**vit), fpn_hidden_size=d,
                                       backbone_feature_sizes=[[288, 288], [144, 144], [72, 72]]),
        prompt_encoder_config=Sam3TrackerVideoPromptEncoderConfig(hidden_size=d),
        mask_decoder_config=Sam3TrackerVideoMaskDecoderConfig(hidden_size=d, mlp_dim=8 * d, num_attention_heads=h,
                                                              iou_head_hidden_dim=d),
        memory_attention_hidden_size=d, memory_attention_num_layers=1, memory_attention_feed_forward_hidden_size=2 * d,
        memory_encoder_hidden_size=d, memory_encoder_output_channels=16, mask_downsampler_embed_dim=d,
        memory_fuser_embed_dim=d, memory_fuser_intermediate_dim=2 * d, memory_fuser_num_layers=1)
    torch.manual_seed(seed)
    Sam3VideoModel(Sam3VideoConfig(detector_config=detector, tracker_config=tracker)).eval().save_pretrained(out)
    # transformers 5.24 saves the tracker as "tracker_model.tracker_model.*" (it reverse-applies the tracker's own
    # key renaming); the published checkpoint, converted from Meta's, has one prefix: write that layout
    weights = out / "model.safetensors"
    state = {k.replace("tracker_model.tracker_model.", "tracker_model.", 1): v for k, v in load_file(weights).items()}
    save_file(state, str(weights), metadata={"format": "pt"})
    Sam3VideoProcessor(image_processor=Sam3ImageProcessor(),
                       video_processor=Sam2VideoVideoProcessor(size={"height": 1008, "width": 1008},
                                                               image_mean=[0.5] * 3, image_std=[0.5] * 3),
                       tokenizer=tok).save_pretrained(out)
    return out
