"""Memory probes, each run by ``bench.run`` in a fresh process so that one measurement's allocations cannot hide in
another's peak. Prints one JSON line. Run with a fixed ``MALLOC_MMAP_THRESHOLD_`` (as ``bench.run`` does) so that
every large tensor is its own mapping and the resident set follows the live tensors.

    python -m bench.probe attention --vlm DIR --image PATH --question Q --how eager|rows|plain [--max-pixels N]
    python -m bench.probe segment --vlm DIR --sam PATH --image PATH --question Q [--mode yesno] [--max-pixels N]
    python -m bench.probe load (--vlm DIR | --sam PATH) --how new|old
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _attention(args) -> dict:
    import torch
    from PIL import Image

    from bench.instrument import current_rss, peak_rss, reset_peak_rss
    from rea2seg.models.attention import image_token_span, layer_band, record_attention
    from rea2seg.config import DiscoveryConfig
    from rea2seg.models.vlm import load_vlm
    from rea2seg.models.prompting import chat_inputs, to_device

    vlm = load_vlm(args.vlm, "cpu", max_pixels=args.max_pixels)  # this probe's view size
    if args.how == "eager":  # the textbook way: eager attention, every layer's full (H, S, S) probabilities kept
        vlm.model.set_attn_implementation({"text_config": "eager", "vision_config": "sdpa"})
    inputs = chat_inputs(vlm, [[Image.open(args.image).convert("RGB"), args.question]])
    ids = inputs["input_ids"][0]
    s, e = image_token_span(ids, vlm.image_token_id)
    rows = torch.arange(e + 1, ids.shape[0])
    layers = set(layer_band(vlm.num_layers, DiscoveryConfig().layer_band))
    feed = to_device(vlm, inputs)

    def run():
        with torch.inference_mode():
            if args.how == "plain":  # no maps at all: what the forward itself costs
                out = vlm.model(**feed, use_cache=False, logits_to_keep=1)
                return [out.logits], None
            if args.how == "eager":
                out = vlm.model(**feed, output_attentions=True, use_cache=False, logits_to_keep=1)
                kept = list(out.attentions)
                maps = torch.stack([a[0, :, e + 1:, s:e] for a in kept]).mean(dim=(0, 1, 2))  # what a user keeps
                return kept, maps
            with record_attention(rows, slice(s, e), layers) as rec:
                vlm.model(**feed, use_cache=False, logits_to_keep=1)
            kept = [rec.out[k] for k in sorted(rec.out)]
            return kept, torch.stack([k[0] for k in kept]).mean(dim=(0, 1, 2))

    run()  # warm-up: one-off allocations (thread pools, kernels) are not what is compared
    gc.collect()
    _trim()  # freed warm-up memory back to the OS, or the measured run could reuse it unseen
    ok = reset_peak_rss()
    base = current_rss()
    kept, _ = run()
    peak = peak_rss()
    return {"how": args.how, "rss_before": base, "rss_peak": peak, "peak_delta": peak - base, "peak_reset": ok,
            "tensor_bytes": int(sum(t.numel() * t.element_size() for t in kept)), "seq_len": int(ids.shape[0]),
            "image_tokens": e - s, "rows": int(rows.numel()), "layers_kept": len(kept),
            "heads": int(kept[0].shape[1])}


def _segment(args) -> dict:
    from bench.instrument import current_rss, peak_rss, reset_peak_rss, tensor_bytes

    import numpy as np  # noqa: F401  (imports first: the baseline is the interpreter with its libraries)
    import torch  # noqa: F401
    import transformers  # noqa: F401
    from PIL import Image

    from rea2seg import PipelineConfig, Rea2Seg
    from rea2seg.config import DiscoveryConfig, ScoringConfig

    rss_imports = current_rss()
    budget = args.max_pixels or DiscoveryConfig().vlm_max_pixels
    cfg = PipelineConfig(discovery=DiscoveryConfig(vlm_max_pixels=budget),
                         scoring=ScoringConfig(mode=args.mode, max_new_tokens=args.max_new_tokens))
    pipe = Rea2Seg.from_pretrained(args.vlm, args.sam, device="cpu", config=cfg)
    weights = tensor_bytes(pipe.vlm.model) + tensor_bytes(pipe.sam.sam) + \
        (0 if pipe.scorer is pipe.vlm else tensor_bytes(pipe.scorer.model))
    image = np.asarray(Image.open(args.image).convert("RGB"))
    gc.collect()
    rss_loaded = current_rss()
    peak_load = peak_rss()
    # SAM's image encoder alone (its global-attention blocks hold (heads, 4096, 4096) float32 matrices)
    ok = reset_peak_rss()
    pipe.sam.embed(image)
    gc.collect()
    peak_sam_encoder = peak_rss() - rss_loaded
    _trim()
    reset_peak_rss()
    base = current_rss()
    result = pipe.segment(image, args.question)
    peak_segment = peak_rss()
    shared = pipe.scorer is pipe.vlm
    n = len(result.candidates)
    pipe.unload()  # what the ComfyUI offload / unload does with the models' memory on the CPU
    del pipe, result
    gc.collect()
    _trim()
    return {"rss_imports": rss_imports, "rss_loaded": rss_loaded, "peak_load": peak_load, "peak_segment": peak_segment,
            "segment_base": base, "peak_sam_encoder_delta": peak_sam_encoder, "rss_after_unload": current_rss(),
            "peak_reset": ok, "weight_bytes": weights, "scorer_shared": shared, "candidates": n}


def _load(args) -> dict:
    """Host memory while loading one model onto the CPU and reading each weight once: the engine's way (``new``:
    ``device_map`` places each weight as it is read, SAM is built on the meta device and takes the memory-mapped
    checkpoint's tensors) or the way before it (``old``: ``from_pretrained`` then ``.to(device)``; SAM randomly
    initialised on the host, then the checkpoint, read whole, copied in)."""
    import torch  # noqa: F401  (imports first: the baseline is the interpreter with its libraries)
    import transformers  # noqa: F401
    from segment_anything import modeling  # noqa: F401

    from bench.instrument import current_rss, peak_rss, reset_peak_rss, tensor_bytes

    gc.collect()
    _trim()
    base = current_rss()
    ok = reset_peak_rss()
    if args.vlm:
        if args.how == "new":
            from rea2seg.models.vlm import load_vlm

            model = load_vlm(args.vlm, "cpu").model
        else:
            from transformers import AutoModelForImageTextToText

            model = AutoModelForImageTextToText.from_pretrained(args.vlm, dtype=torch.float32,
                                                                attn_implementation="sdpa").to("cpu").eval()
    elif args.how == "new":
        from rea2seg.models.sam import load_sam

        model = load_sam(args.sam, device="cpu").sam
    else:
        from pathlib import Path

        from rea2seg.models.sam import ARCH_METADATA_KEY, SAM_ARCHS, SamArch, kind_from_name

        if args.sam.endswith(".safetensors"):  # read whole (no memory map), as the old loader did
            from safetensors import safe_open
            from safetensors.torch import load

            with safe_open(args.sam, "pt") as f:
                arch = SamArch.from_json(f.metadata()[ARCH_METADATA_KEY])
            state = load(Path(args.sam).read_bytes())
        else:
            state = torch.load(args.sam, map_location="cpu", weights_only=True)
            arch = SAM_ARCHS[kind_from_name(Path(args.sam))]
        model = arch.build()
        model.load_state_dict(state, strict=True)
        del state
        model.to("cpu").eval()
    loaded = current_rss() - base
    with torch.no_grad():  # first use reads every weight (memory-mapped weights become resident)
        for t in [*model.parameters(), *model.buffers()]:
            t.float().sum()
    peak = peak_rss()
    gc.collect()
    return {"how": args.how, "rss_before": base, "peak_delta": peak - base, "loaded_delta": loaded,
            "held_delta": current_rss() - base, "weight_bytes": tensor_bytes(model), "peak_reset": ok}


def _trim() -> None:
    """Hand freed heap memory back to the OS (glibc), so RSS shows what is still in use."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.probe")
    sub = ap.add_subparsers(dest="what", required=True)
    a = sub.add_parser("attention")
    a.add_argument("--vlm", required=True)
    a.add_argument("--image", required=True)
    a.add_argument("--question", required=True)
    a.add_argument("--how", choices=["eager", "rows", "plain"], required=True)
    a.add_argument("--max-pixels", type=int, default=None, help="the VLM's view of the image, in pixels")
    s = sub.add_parser("segment")
    s.add_argument("--vlm", required=True)
    s.add_argument("--sam", required=True)
    s.add_argument("--image", required=True)
    s.add_argument("--question", required=True)
    s.add_argument("--mode", default="yesno")
    s.add_argument("--max-new-tokens", type=int, default=96)
    s.add_argument("--max-pixels", type=int, default=None, help="the VLM's pixel budget (default: the pipeline's)")
    ld = sub.add_parser("load")
    ld.add_argument("--vlm", default=None)
    ld.add_argument("--sam", default=None, help="a published-kind .pth or a .safetensors written by save_sam")
    ld.add_argument("--how", choices=["new", "old"], required=True)
    args = ap.parse_args(argv)
    out = {"attention": _attention, "segment": _segment, "load": _load}[args.what](args)
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
