"""The benchmark suite keeps running (no timing assertions: speed targets live in bench/, measured side by side), and
the optimisations it measures keep results equal to the plain computation."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], timeout: int) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_bench_quick_prints_the_table_and_json(tmp_path):
    """``python -m bench --quick``: every row measured, a table and strict JSON, exit 0 whether targets are met or
    not. One thread: on a machine shared with other jobs, two OpenMP threads stall on each other (see README)."""
    out = tmp_path / "bench.json"
    p = _run(["-m", "bench", "--quick", "--threads", "1", "--models", str(tmp_path / "models"), "--json-out",
              str(out)], timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    table = p.stdout
    for label in ("reasoning scoring, 8 candidates", "yes/no vs reasoning", "two-image yes/no", "SAM masks",
                  "second question", "attention maps", "time outside model forwards", "peak RSS", "loading the VLM",
                  "loading the SAM", "SAM 2.1 image encoder", "SAM 3 256-d decoder", "discovery with SAM 3"):
        assert label in table, f"row {label!r} missing:\n{table}"
    assert "target" in table and "met" in table
    doc = json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    rows = {r["key"]: r for r in doc["rows"]}
    assert {"reasoning_batched_vs_loop", "yesno_vs_reasoning", "yesno_batched_vs_loop", "two_image_prefix_cache",
            "sam_batched_vs_loop", "sam_decoder_cpu", "second_question", "e2e_outside_yesno", "peak_rss",
            "parquet_mask", "ray_vs_one_process", "load_memory_vlm", "load_memory_sam", "sam2_encoder_share",
            "sam2_decoder_cpu", "sam3_encoder_share", "sam3_decoder_cpu", "concepts_extra"} <= set(rows)
    assert any(k.startswith("attention_memory_") for k in rows)
    for r in rows.values():
        assert r["ratio"] is not None and r["ratio"] > 0, r
        assert r["a"] and r["b"], r
    assert len(rows["reasoning_batched_vs_loop"]["a"]) == doc["meta"]["repeats"]
    # what the rows' checks say: the faster variant computes the same thing
    assert rows["reasoning_batched_vs_loop"]["check"] == "replies identical 8/8"
    assert float(rows["yesno_batched_vs_loop"]["check"].split()[-1]) < 1e-4
    assert float(rows["two_image_prefix_cache"]["check"].split()[-1]) < 1e-4
    assert float(rows["sam_decoder_cpu"]["check"].split()[-1]) < 1e-3
    for backend in ("sam2", "sam3"):
        assert float(rows[f"{backend}_decoder_cpu"]["check"].split()[-1]) < 1e-3
        assert 0 < rows[f"{backend}_encoder_share"]["ratio"] < 1
    assert "concept" in rows["concepts_extra"]["check"]
    assert rows["second_question"]["check"].startswith("max |heat map diff| ")
    assert float(rows["second_question"]["check"].split()[4].rstrip(",")) < 1e-5
    found, kept = rows["sam_batched_vs_loop"]["check"].split()[0].split("/")
    assert found == kept
    assert rows["peak_rss"]["check"].endswith("True"), "scoring must share the discovery VLM object"
    assert rows["parquet_mask"]["check"] == "identical masks: True"
    same, total = rows["ray_vs_one_process"]["check"].split()[-1].split("/")
    assert same == total and int(total) > 0, "a Ray run must give the one-process records"


@pytest.mark.slow
def test_gpu_profile_tiny_runs_on_cpu():
    """``bench/gpu_profile.py --tiny``: the full-size profile's code path with tiny architectures, on CPU."""
    p = _run(["bench/gpu_profile.py", "--tiny", "--threads", "1", "--json"], timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(p.stdout)
    assert set(res["modes"]) == {"yesno", "reasoning", "comparative"}
    for mode, r in res["modes"].items():
        stages = r["stages_ms"]
        assert {"attention", "sam_embedding", "sam_masks", "scoring", "total"} <= set(stages)
        assert all(v >= 0 for v in stages.values())
        assert r["scored"] == 8 and r["candidates_found"] + r["candidates_synthetic"] == 8
        assert r["scoring_prefill_tokens"] > 0
        assert (r["scoring_decode_tokens"] > 0) == (mode != "yesno")
    assert res["modes"]["reasoning"]["scoring_decode_tok_s"] > 0
    assert _run(["bench/gpu_profile.py", "--tiny", "--threads", "1"], timeout=600).stdout.count("(ms)") >= 7


def test_gpu_profile_full_size_architectures_build(tmp_path):
    """The GPU profile's full-size models, built on the meta device (no memory, no GPU): the published sizes of
    Qwen2.5-VL-7B (8.29B parameters with its vision tower) and SAM ViT-H (641M), wired to Rea2Seg's attention."""
    sys.path.insert(0, str(ROOT))
    from bench import gpu_profile
    from bench.instrument import param_count
    from rea2seg.models.attention import RECORDING_ATTENTION

    setup = gpu_profile.Setup("meta", gpu_profile.QWEN25_VL_7B, "vit_h", "meta", "bf16")
    vlm = gpu_profile.build_vlm(setup, tmp_path)
    assert round(param_count(vlm.model) / 1e9, 2) == 8.29
    assert vlm.dtype == torch.bfloat16 and vlm.model.config.get_text_config()._attn_implementation == \
        RECORDING_ATTENTION
    assert vlm.token_id("Yes") < vlm.model.config.get_text_config().vocab_size == 152064
    sam = gpu_profile.build_sam(setup)
    assert round(param_count(sam.sam) / 1e6) == 641 and sam.img_size == 1024


def test_gpu_profile_without_cuda_says_how_to_run(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the no-CUDA message cannot be shown")
    sys.path.insert(0, str(ROOT))
    from bench import gpu_profile

    assert gpu_profile.main([]) == 2


# ---- the cached paths the bench times give the plain computation's result ----------------------------------------

@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen2_vl", "qwen3_vl", "qwen3_5"])
def test_image_prefix_cache_gives_the_full_forward_map(family_dirs, family):
    """Discovery runs the prompt up to the image once per image and reuses its KV cache for every question: the
    attention maps equal those of the full forward pass."""
    from rea2seg.discovery import attention_grid
    from rea2seg.image_cache import ImageEntry
    from rea2seg.models.vlm import load_vlm

    vlm = load_vlm(str(family_dirs[family]), "cpu")
    image = Image.open(ROOT / "assets" / "coffee.jpg").convert("RGB")
    entry = ImageEntry()
    maps = []
    for q in ("the cup", "Write a general description of the image.", "the spoon lying on the saucer, left"):
        full = attention_grid(vlm, image, q, [0, 1], None)
        cached = attention_grid(vlm, image, q, [0, 1], entry)
        spread = float(full.max() - full.min())
        assert spread > 0
        assert float((full - cached).abs().max()) <= 1e-4 * spread, (family, q)
        maps.append(full)
    assert sum(k[0] == "vlm-prefix" for k in entry.values) == 1, "one prefix per image, reused by every question"
    assert not torch.equal(maps[0], maps[1]), "different questions give different maps"


def test_second_question_runs_only_its_own_tokens(pipeline, image):
    """With the prefix cached, a second question's forward sees only the tokens after the image."""
    pipeline.clear_cache()
    seen = []
    h = pipeline.vlm.model.register_forward_pre_hook(
        lambda m, a, kw: seen.append(int(kw["input_ids"].shape[-1])), with_kwargs=True)
    try:
        pipeline.discover(image, "the cup")
        first = list(seen)
        seen.clear()
        pipeline.discover(image, "the plate on the left")
    finally:
        h.remove()
    assert max(first) > 50, first  # the prefix forward: system turn + image tokens
    assert seen and max(seen) < 30, seen
