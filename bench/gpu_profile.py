"""Per-stage latency, tokens/s and peak memory of ``segment`` with the full-size architectures (Qwen2.5-VL-7B and
SAM ViT-H) built with random weights directly on a CUDA device: nothing is downloaded, and the compute is the same
as with the real weights (the outputs are meaningless).

    python bench/gpu_profile.py                 # CUDA: 7B VLM in bf16 + SAM ViT-H, 1024 px image, 8 candidates
    python bench/gpu_profile.py --tiny          # the same code path with tiny architectures, on CPU (CI)
    python bench/gpu_profile.py --json          # machine-readable

The tokenizer is Rea2Seg's tiny test tokenizer (a few hundred tokens) while the model keeps the real vocabulary of
152,064 rows: every id stays valid, prompts are a little longer in tokens than with Qwen's tokenizer, and the
embedding/LM-head compute is the real one. Stage boundaries are CUDA-synchronised; every number is from a warm run
(one untimed run first), on a cold image cache (every encoder runs), except the "second question" row.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from rea2seg.testing.published import QWEN2_5_VL_7B_CONFIG  # noqa: E402  (after the path set-up above)

MODES = ("yesno", "reasoning", "comparative")
QUESTION = "the cup of coffee"
SECOND_QUESTION = "the spoon lying on the saucer"
N_CANDIDATES = 8

# Qwen/Qwen2.5-VL-7B-Instruct config.json, as published (token ids come from the tokenizer in use).
QWEN25_VL_7B = {k: v for k, v in QWEN2_5_VL_7B_CONFIG.items() if k != "tokens"}
# The same code path at test size (CPU, seconds).
QWEN25_VL_TINY = dict(
    text=dict(vocab_size=152064, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=8192, rms_norm_eps=1e-6, tie_word_embeddings=False,
              hidden_act="silu", rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                                                  "mrope_section": [2, 3, 3]}),
    vision=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, patch_size=14,
                spatial_merge_size=2, temporal_patch_size=2, window_size=112, fullatt_block_indexes=[1], in_chans=3,
                hidden_act="silu", tokens_per_second=2),
)


@dataclass(frozen=True)
class Setup:
    name: str
    vlm_arch: dict
    sam_kind: str  # a published kind (vit_h/vit_l/vit_b) or a test architecture (tiny/bench)
    device: str
    dtype: str
    image_side: int = 1024
    max_new_tokens: int = 96
    vlm_max_pixels: int | None = None  # None: the pipeline's default (1024 * 28 * 28)


def build_vlm(setup: Setup, workdir: Path):
    """A random-weight Qwen2.5-VL built on the device in the target dtype, with the tiny tokenizer and a real-size
    image processor, wrapped as Rea2Seg's ``VLM``."""
    import torch
    import transformers as tf

    from rea2seg.models.attention import RECORDING_ATTENTION, register_recording_attention
    from rea2seg.config import DiscoveryConfig
    from rea2seg.models.device import resolve_dtype
    from rea2seg.models.vlm import VLM, load_processor
    from rea2seg.testing import QWEN_CHAT_TEMPLATE, QWEN_SPECIALS, build_tiny_tokenizer
    from rea2seg.testing.published import QWEN2_5_VL_7B_PREPROCESSOR

    tok = build_tiny_tokenizer()
    ids = {s: tok.convert_tokens_to_ids(s) for s in QWEN_SPECIALS}
    text = dict(setup.vlm_arch["text"], bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                pad_token_id=ids["<|endoftext|>"])
    cfg = tf.Qwen2_5_VLConfig(text_config=text, vision_config=dict(setup.vlm_arch["vision"]),
                              image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                              vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    assert len(tok) <= cfg.text_config.vocab_size
    dev = torch.device(setup.device)
    dt = resolve_dtype(setup.dtype, dev)
    register_recording_attention()
    torch.manual_seed(0)
    with torch.device(dev):
        model = tf.Qwen2_5_VLForConditionalGeneration._from_config(
            cfg, dtype=dt, attn_implementation={"text_config": RECORDING_ATTENTION, "vision_config": "sdpa"})
    model.eval()
    # the processor files as the checkpoint ships them, loaded the way a user's are; the pipeline's budget applied
    proc_dir = workdir / "processor"
    proc_dir.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(proc_dir)
    (proc_dir / "preprocessor_config.json").write_text(json.dumps(QWEN2_5_VL_7B_PREPROCESSOR))
    (proc_dir / "chat_template.json").write_text(json.dumps({"chat_template": QWEN_CHAT_TEMPLATE}))
    (proc_dir / "config.json").write_text(cfg.to_json_string())
    processor = load_processor(proc_dir)
    processor.tokenizer.padding_side = "left"
    return VLM(model, processor, f"random-init Qwen2.5-VL ({setup.name})", dev, dt, "qwen2_5_vl",
               setup.vlm_max_pixels or DiscoveryConfig().vlm_max_pixels)


def build_sam(setup: Setup):
    import torch

    from rea2seg.models.sam import SAM_ARCHS, SamModel
    from rea2seg.testing import TEST_SAM_ARCHS

    torch.manual_seed(0)
    with torch.device(setup.device):  # built where it runs: no 2.5 GB detour through the CPU for ViT-H
        sam = {**SAM_ARCHS, **TEST_SAM_ARCHS}[setup.sam_kind].build()
    sam.eval()  # fp32, as the engine runs SAM
    return SamModel(sam, setup.sam_kind, Path(f"random-init-{setup.sam_kind}"), torch.device(setup.device))


def top_up(candidates, n: int):
    """Exactly ``n`` candidates: random weights may find fewer, so synthetic ellipses fill the rest (scoring cost
    does not depend on what a mask covers). Returns them and how many are synthetic."""
    import numpy as np

    from bench.run import synthetic_candidates
    from rea2seg.types import Candidates

    if len(candidates) >= n:
        return candidates.subset(np.arange(n)), 0
    k = n - len(candidates)
    return Candidates.merge([candidates, synthetic_candidates(candidates.image_size, k)]), k


def profile_mode(pipe, image, mode: str, device: str) -> dict:
    """One warm, CUDA-synchronised run of discover -> score(mode) -> select (what ``segment`` does) on a cold image
    cache; stage latencies (ms), token counts and rates, peak memory."""
    import torch

    from bench.instrument import ForwardTimer, peak_rss, reset_peak_rss, sync

    events: list[tuple[str, float]] = []

    def progress(stage, done, total):
        if stage in ("attention", "prompts", "sam_embedding", "sam_masks", "discovered"):
            sync(device)
            events.append((stage, time.perf_counter()))

    pipe.clear_cache()
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    rss_reset = reset_peak_rss()
    sync(device)
    t0 = time.perf_counter()
    d = pipe.discover(image, QUESTION, progress=progress)
    cands, synthetic = top_up(d.candidates, N_CANDIDATES)
    t1 = time.perf_counter()
    with ForwardTimer([pipe.scorer.model, pipe.scorer.model.model.visual], lm=pipe.scorer.model,
                      device=device) as ft:
        scored = pipe.score(image, QUESTION, cands, mode=mode)
    sync(device)
    t2 = time.perf_counter()
    result = pipe.select(QUESTION, scored, heatmap=d.heatmap, mode=mode)
    t3 = time.perf_counter()
    stages = {a[0]: (b[1] - a[1]) * 1000 for a, b in zip(events, events[1:])}
    scoring_s = t2 - t1
    out = {
        "mode": mode, "stages_ms": dict(stages, scoring=scoring_s * 1000, selection=(t3 - t2) * 1000,
                                        total=(t3 - t0) * 1000),
        "candidates_found": len(d.candidates), "candidates_synthetic": synthetic, "scored": len(result.candidates),
        "scoring_prefill_tokens": ft.prefill_tokens, "scoring_decode_tokens": ft.decode_tokens,
        "scoring_prefill_tok_s": ft.prefill_tokens / (ft.prefill_seconds + ft.other_seconds)
        if ft.prefill_seconds else None,  # the vision tower counts as prefill (generate runs it separately)
        "scoring_decode_tok_s": ft.decode_tokens / ft.decode_seconds if ft.decode_seconds else None,
        "scoring_fallback_yesno": sum(s == "fallback:yesno" for s in scored.scored_by),
        "peak_gpu_bytes": torch.cuda.max_memory_allocated() if cuda else None,
        "peak_rss_bytes": peak_rss() if rss_reset or not cuda else None,
    }
    # a second question on the same image: SAM embedding, vision features and the image's KV prefix are cached
    sync(device)
    t = time.perf_counter()
    pipe.discover(image, SECOND_QUESTION)
    sync(device)
    out["second_question_discover_ms"] = (time.perf_counter() - t) * 1000
    return out


def measure_offload(pipe, device: str) -> dict | None:
    """What ComfyUI's offload does between runs: every model to the CPU (GPU memory left allocated), then back."""
    import torch

    from bench.instrument import sync

    if torch.device(device).type != "cuda":
        return None
    before = torch.cuda.memory_allocated()
    sync(device)
    t = time.perf_counter()
    pipe.offload("cpu")
    sync(device)
    t_off = time.perf_counter() - t
    after = torch.cuda.memory_allocated()
    t = time.perf_counter()
    pipe.to(device)
    sync(device)
    return {"allocated_before": before, "allocated_after_offload": after, "offload_s": t_off,
            "reload_s": time.perf_counter() - t}


def run(setup: Setup, repeats: int = 1) -> dict:
    import numpy as np
    import torch
    from PIL import Image

    from bench.instrument import cpu_name, param_count, sync
    from rea2seg import PipelineConfig, Rea2Seg
    from rea2seg.config import DiscoveryConfig, ScoringConfig

    root = Path(__file__).resolve().parents[1]
    t_build = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rea2seg-gpu-profile-") as work:
        vlm = build_vlm(setup, Path(work))
        sam = build_sam(setup)
    sync(setup.device)
    build_s = time.perf_counter() - t_build
    config = PipelineConfig(
        discovery=DiscoveryConfig(vlm_max_pixels=setup.vlm_max_pixels or DiscoveryConfig().vlm_max_pixels,
                                  peak_threshold=0.0, max_peaks=6, max_candidates=N_CANDIDATES, min_sam_iou=0.0,
                                  min_stability=0.0),
        scoring=ScoringConfig(batch_size=N_CANDIDATES, max_new_tokens=setup.max_new_tokens))
    pipe = Rea2Seg(vlm, sam, config=config, name=f"gpu-profile-{setup.name}")
    asset = root / "assets" / "coffee.jpg"
    img = Image.open(asset).convert("RGB") if asset.exists() else Image.new("RGB", (600, 400), (120, 90, 60))
    w = setup.image_side
    image = np.asarray(img.resize((w, round(img.height * w / img.width)), Image.BICUBIC))
    if torch.device(setup.device).type == "cuda":
        device_name = f"{torch.cuda.get_device_name(0)} ({torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB)"
    else:
        device_name = f"CPU: {cpu_name()}, {torch.get_num_threads()} threads"
    modes = {}
    for mode in MODES:
        profile_mode(pipe, image, mode, setup.device)  # warm-up (kernels, allocator, autotuning)
        runs = [profile_mode(pipe, image, mode, setup.device) for _ in range(repeats)]
        modes[mode] = min(runs, key=lambda r: r["stages_ms"]["total"])
    offload = measure_offload(pipe, setup.device)
    return {
        "setup": setup.name, "device": device_name, "dtype": str(vlm.dtype).replace("torch.", ""),
        "vlm_params": param_count(vlm.model), "sam_params": param_count(sam.sam), "sam_kind": setup.sam_kind,
        "image": f"{image.shape[1]}x{image.shape[0]}", "candidates": N_CANDIDATES,
        "max_new_tokens": setup.max_new_tokens, "build_s": round(build_s, 1),
        "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "modes": modes, "offload": offload,
        "note": "random weights (compute as real, outputs meaningless): the reasoning and comparative replies carry no "
                "parsable score, so their scoring also runs the yes/no fallback (included, counted above); tiny "
                "tokenizer with the real vocabulary size",
    }


def format_table(res: dict) -> str:
    from bench.instrument import fmt_bytes

    modes = list(res["modes"])
    lines = [f"Rea2Seg GPU profile ({res['setup']}) {res['date']} | {res['device']} | torch {res['torch']}",
             f"VLM {res['vlm_params'] / 1e9:.2f}B params in {res['dtype']} | SAM {res['sam_kind']} "
             f"{res['sam_params'] / 1e6:.1f}M params (fp32) | image {res['image']} | {res['candidates']} candidates | "
             f"max {res['max_new_tokens']} new tokens | warm, synchronised, cold image cache", ""]
    stage_names = ["attention", "prompts", "sam_embedding", "sam_masks", "scoring", "selection", "total"]
    rows = [[s + " (ms)"] + [f"{res['modes'][m]['stages_ms'].get(s, float('nan')):.0f}" for m in modes]
            for s in stage_names]
    rows.append(["second question discover (ms)"] + [f"{res['modes'][m]['second_question_discover_ms']:.0f}"
                                                      for m in modes])

    def rate(v):
        return "-" if v is None else f"{v:,.0f}"

    rows.append(["scoring prefill tokens"] + [f"{res['modes'][m]['scoring_prefill_tokens']:,}" for m in modes])
    rows.append(["scoring prefill tok/s (incl. vision)"] + [rate(res["modes"][m]["scoring_prefill_tok_s"]) for m in modes])
    rows.append(["scoring decoded tokens"] + [f"{res['modes'][m]['scoring_decode_tokens']:,}" for m in modes])
    rows.append(["scoring decode tok/s (in forwards)"] + [rate(res["modes"][m]["scoring_decode_tok_s"]) for m in modes])
    mem_key = "peak_gpu_bytes" if res["modes"][modes[0]]["peak_gpu_bytes"] is not None else "peak_rss_bytes"
    label = "peak GPU memory" if mem_key == "peak_gpu_bytes" else "peak RSS (CPU)"
    rows.append([label] + [fmt_bytes(res["modes"][m][mem_key]) if res["modes"][m][mem_key] else "n/a"
                           for m in modes])
    rows.append(["yes/no fallbacks (no parsable score)"] + [str(res["modes"][m]["scoring_fallback_yesno"])
                                                            for m in modes])
    rows.append(["candidates found / synthetic"] + [f"{res['modes'][m]['candidates_found']} / "
                                                     f"{res['modes'][m]['candidates_synthetic']}" for m in modes])
    header = ["stage"] + modes
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    fmt = "  ".join(["{:<%d}" % widths[0]] + ["{:>%d}" % w for w in widths[1:]])
    lines += [fmt.format(*header), "  ".join("-" * w for w in widths)] + [fmt.format(*r) for r in rows]
    off = res.get("offload")
    if off:
        lines += ["", f"offload(): GPU memory allocated {fmt_bytes(off['allocated_before'])} -> "
                      f"{fmt_bytes(off['allocated_after_offload'])} in {off['offload_s']:.1f} s; back on the GPU in "
                      f"{off['reload_s']:.1f} s"]
    lines += ["", res["note"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python bench/gpu_profile.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="tiny architectures on CPU: proves the script runs (CI)")
    ap.add_argument("--device", default=None, help="default: cuda (cpu with --tiny)")
    ap.add_argument("--dtype", default=None, help="default: bf16 (fp32 with --tiny on CPU)")
    ap.add_argument("--repeats", type=int, default=1, help="timed runs per mode (the fastest is reported)")
    ap.add_argument("--max-new-tokens", type=int, default=None, help="default: 96 (16 with --tiny)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = ap.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from rea2seg.errors import Rea2SegError

    device = args.device or ("cpu" if args.tiny else "cuda")
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device here; the full-size profile needs one (about 20 GiB of GPU memory). "
              "Run `python bench/gpu_profile.py --tiny` for the CPU smoke run.", file=sys.stderr)
        return 2
    dtype = args.dtype or ("fp32" if torch.device(device).type == "cpu" else "bf16")
    if args.tiny:  # small enough for CI: a 448 px view of the 1024 px image and short replies
        setup = Setup("tiny", QWEN25_VL_TINY, "tiny", device, dtype, max_new_tokens=args.max_new_tokens or 16,
                      vlm_max_pixels=448 * 448)
    else:
        setup = Setup("qwen2.5-vl-7b + sam vit_h", QWEN25_VL_7B, "vit_h", device, dtype,
                      max_new_tokens=args.max_new_tokens or 96)
    try:
        res = run(setup, max(1, args.repeats))
    except Rea2SegError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(res, indent=2) if args.json else format_table(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
