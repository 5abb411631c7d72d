"""What the real checkpoints ship, typed in as facts: their processor files and configs. The test builders write them
into random-weight model directories, so tests load the processor classes and settings a user's download loads
(transformers' torchvision image processors, the published pixel limits, the published chat template).

Sources (Hugging Face model repositories, main branch):

- Qwen/Qwen2-VL-7B-Instruct: preprocessor_config.json (347 bytes)
- Qwen/Qwen2.5-VL-7B-Instruct: preprocessor_config.json (350 bytes), chat_template.json (1.05 kB; the same template
  as Qwen2-VL-7B-Instruct's first release), config.json
- Qwen/Qwen3-VL-8B-Instruct: preprocessor_config.json (390 bytes), video_preprocessor_config.json (385 bytes)
- OpenGVLab/InternVL3-8B-hf: processor_config.json (72 bytes). Its preprocessor_config.json was not readable here;
  the one below is what transformers' InternVL conversion writes (the same fields and values as the published -hf
  InternVL-family files found: GotOcr2ImageProcessorFast, 448x448 tiles, 1-12 tiles, ImageNet mean/std, bicubic),
  and ``InternVLProcessor`` turns ``crop_to_patches`` on at every call whatever the file says.
"""
from __future__ import annotations

QWEN2_VL_7B_PREPROCESSOR = {
    "min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2,
    "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
    "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2VLProcessor",
}

QWEN2_5_VL_7B_PREPROCESSOR = {
    "min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2,
    "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
    "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2_5_VLProcessor",
}

QWEN3_VL_8B_PREPROCESSOR = {
    "size": {"longest_edge": 16777216, "shortest_edge": 65536}, "patch_size": 16, "temporal_patch_size": 2,
    "merge_size": 2, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
    "processor_class": "Qwen3VLProcessor", "image_processor_type": "Qwen2VLImageProcessorFast",
}

QWEN3_VL_8B_VIDEO_PREPROCESSOR = {
    "size": {"longest_edge": 25165824, "shortest_edge": 4096}, "patch_size": 16, "temporal_patch_size": 2,
    "merge_size": 2, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
    "processor_class": "Qwen3VLProcessor", "video_processor_type": "Qwen3VLVideoProcessor",
}

INTERNVL3_8B_HF_PREPROCESSOR = {
    "crop_size": None, "crop_to_patches": False, "data_format": "channels_first", "default_to_square": True,
    "device": None, "do_center_crop": None, "do_convert_rgb": True, "do_normalize": True, "do_rescale": True,
    "do_resize": True, "image_mean": [0.485, 0.456, 0.406], "image_processor_type": "GotOcr2ImageProcessorFast",
    "image_std": [0.229, 0.224, 0.225], "input_data_format": None, "max_patches": 12, "min_patches": 1,
    "processor_class": "InternVLProcessor", "resample": 3, "rescale_factor": 0.00392156862745098,
    "return_tensors": None, "size": {"height": 448, "width": 448},
}

INTERNVL3_8B_HF_PROCESSOR = {"image_seq_length": 256, "processor_class": "InternVLProcessor"}

#: chat_template.json of Qwen/Qwen2.5-VL-7B-Instruct (and of Qwen/Qwen2-VL-7B-Instruct as first released).
QWEN2_5_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in "
    "content or 'image_url' in content %}{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] "
    "== 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content "
    "%}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}"
    "<|im_start|>assistant\n{% endif %}")

#: Qwen/Qwen2.5-VL-7B-Instruct config.json, as published, in transformers 5's form (token ids: the real tokenizer's).
QWEN2_5_VL_7B_CONFIG = dict(
    text=dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
              num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=128000, rms_norm_eps=1e-6,
              tie_word_embeddings=False, hidden_act="silu",
              rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]}),
    vision=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584, patch_size=14,
                spatial_merge_size=2, temporal_patch_size=2, window_size=112, fullatt_block_indexes=[7, 15, 23, 31],
                in_chans=3, hidden_act="silu", tokens_per_second=2),
    tokens=dict(image_token_id=151655, video_token_id=151656, vision_start_token_id=151652,
                vision_end_token_id=151653, bos_token_id=151643, eos_token_id=151645),
)

#: The Qwen2.5 tokenizer: byte-level BPE (vocab.json: 151,643 tokens; merges.txt: 151,387 merges) and 22 added
#: tokens (151643 <|endoftext|> ... 151664 <|file_sep|>), 151,665 tokens in all. ComfyUI ships these files for
#: Qwen-Image's text encoder (Qwen2.5-VL-7B), in comfy/text_encoders/qwen25_tokenizer/, with four added tokens of its
#: own (151665-151668) that Qwen2.5-VL's tokenizer does not have. SHA-256 of the copy in ComfyUI 0.3.75:
QWEN2_5_TOKENIZER_SIZE = 151665
QWEN2_5_TOKENIZER_SHA256 = {
    "vocab.json": "ca10d7e9fb3ed18575dd1e277a2579c16d108e32f27439684afa0e10b1440910",
    "merges.txt": "8831e4f1a044471340f7c0a83d7bd71306a5b867e95fd870f74d0c5308a904d5",
}
