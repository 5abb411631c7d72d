"""``python -m bench``: Rea2Seg's performance claims as ratios measured side by side in one run.

Builds bench-size random-weight models offline (a Qwen2.5-VL-architecture VLM of ~64M parameters seeing the image at
448 px, and a SAM with a 1024 px encoder), then times each pair of variants alternately, median of several repeats,
and prints one table (``--json`` for machines). Random weights: the compute is what is measured, never the quality.
A missed target is reported, not an error: the exit status is non-zero only when something breaks.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
QUESTION = "the cup of coffee"
SECOND_QUESTION = "the spoon lying on the saucer"
N_CANDIDATES = 8


@dataclass(frozen=True)
class BenchSize:
    """Model and workload sizes of one bench run."""

    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    vision_depth: int
    vision_hidden: int
    vlm_side: int  # the VLM sees the image at about this many pixels per side (its pixel budget: side^2)
    sam_kind: str
    image_wh: tuple[int, int]
    max_new_tokens: int
    repeats: int


SIZES = {
    "full": BenchSize("full", hidden=768, layers=10, heads=12, kv_heads=4, vision_depth=6, vision_hidden=384,
                      vlm_side=448, sam_kind="bench", image_wh=(1024, 683), max_new_tokens=96, repeats=3),
    "quick": BenchSize("quick", hidden=256, layers=4, heads=4, kv_heads=2, vision_depth=2, vision_hidden=128,
                       vlm_side=224, sam_kind="bench", image_wh=(1024, 683), max_new_tokens=24, repeats=3),
}


@dataclass
class Row:
    """One line of the table: variant A (the engine's way) against variant B (the naive way)."""

    key: str
    name: str
    a_label: str
    b_label: str
    a: list[float] = field(default_factory=list)  # measurements of A (seconds, or bytes for memory rows)
    b: list[float] = field(default_factory=list)
    ratio: float = float("nan")  # how many times better A is than B (B/A for time, A/B for memory: see `unit`)
    unit: str = "s"  # "s" -> speed-up B/A ("x"); "bytes" -> fraction A/B; "%" -> share; "iou" -> agreement
    target: str = "report"
    share_of: str = "outside"  # for "%" rows: what the share is of
    met: bool | None = None
    check: str = ""  # does A give B's result?
    note: str = ""


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---- models and inputs -------------------------------------------------------------------------------------------------

def _tag(size: BenchSize) -> str:
    builder = b"".join(p.read_bytes() for p in sorted((ROOT / "rea2seg" / "testing").glob("*.py")))
    return hashlib.sha1(builder + json.dumps(asdict(size), sort_keys=True).encode()).hexdigest()[:10]


def models_root(size: BenchSize, root: Path | None = None) -> Path:
    return Path(root) if root else Path(tempfile.gettempdir()) / f"rea2seg-bench-{size.name}-{_tag(size)}"


def build_models(size: BenchSize, root: Path | None = None) -> tuple[Path, Path]:
    """Random-weight bench models, built once per size and builder version into ``root`` (a temp folder by
    default). Returns (vlm_dir, sam_path)."""
    from rea2seg.testing import build_tiny_sam, build_tiny_vlm

    root = models_root(size, root)
    vlm_dir, sam_path = root / "vlm", root / f"sam_{size.sam_kind}.safetensors"
    if not (vlm_dir / "model.safetensors").exists():
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=root))
        try:
            build_tiny_vlm(tmp, "qwen2_5_vl", hidden=size.hidden, layers=size.layers, heads=size.heads,
                           kv_heads=size.kv_heads, vision_depth=size.vision_depth, vision_hidden=size.vision_hidden)
            shutil.rmtree(vlm_dir, ignore_errors=True)
            os.rename(tmp, vlm_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if not sam_path.exists():
        tmp_sam = sam_path.with_name(".building-" + sam_path.name)
        build_tiny_sam(tmp_sam, kind=size.sam_kind)
        os.replace(tmp_sam, sam_path)
    return vlm_dir, sam_path


def bench_image(size: BenchSize, out_dir: Path) -> tuple["object", Path]:
    """The CC0 example photo at the bench size (a synthetic scene if the asset is missing); array and file."""
    import numpy as np
    from PIL import Image

    W, H = size.image_wh
    asset = ROOT / "assets" / "coffee.jpg"
    if asset.exists():
        img = Image.open(asset).convert("RGB").resize((W, H), Image.BICUBIC)
    else:
        yy, xx = np.mgrid[0:H, 0:W]
        arr = np.stack([xx * 255 // W, yy * 255 // H, np.full_like(xx, 90)], -1).astype(np.uint8)
        arr[(yy - H // 2) ** 2 + (xx - W // 2) ** 2 < (H // 5) ** 2] = (200, 40, 40)
        img = Image.fromarray(arr)
    path = out_dir / "bench_image.png"
    img.save(path)
    return np.asarray(img), path


def synthetic_candidates(image_hw: tuple[int, int], n: int = N_CANDIDATES):
    """``n`` elliptical candidate masks on a grid (each 2-5% of the image, so every view is the full highlighted
    image, as for most real candidates). Scoring cost does not depend on what the masks cover."""
    import numpy as np

    from rea2seg.types import Candidates

    H, W = image_hw
    yy, xx = np.mgrid[0:H, 0:W]
    cols = (n + 1) // 2
    masks = []
    for i in range(n):
        cy, cx = H * (1 + 2 * (i // cols)) / 4, W * (1 + 2 * (i % cols)) / (2 * cols)
        ry, rx = H * (0.10 + 0.01 * i), W * 0.09
        masks.append(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1)
    return Candidates.from_masks(np.stack(masks), [f"synthetic:{i}" for i in range(n)])


# ---- rows ----------------------------------------------------------------------------------------------------------------

def _rate(n: int, seconds: float) -> str:
    return f"{n / seconds:.0f}" if seconds > 0 else "n/a"


def _speed_row(row: Row, a: list[float], b: list[float], target: float | None) -> Row:
    from bench.instrument import paired_ratio

    row.a, row.b = a, b
    row.ratio = paired_ratio(b, a)
    if target is not None:
        row.target = f">= {target:g}x"
        row.met = bool(row.ratio >= target)
    return row


def rows_scoring(pipe, image, size: BenchSize, repeats: int) -> list[Row]:
    """Yes/no and reasoning scoring of the same 8 candidates, each batched and one candidate per call, timed in one
    rotation (so the three scoring rows share their measurements)."""
    import numpy as np
    from PIL import Image

    from bench.instrument import ForwardTimer, side_by_side
    from rea2seg.config import ScoringConfig
    from rea2seg.scoring import REASONING_PROMPT, candidate_views, generate_replies, score_candidates

    vlm = pipe.scorer
    cands = synthetic_candidates(image.shape[:2])
    n = len(cands)
    cfg = ScoringConfig(mode="yesno", batch_size=n, max_new_tokens=size.max_new_tokens)
    one = replace(cfg, batch_size=1)
    out: dict[str, object] = {}

    def yesno(c):
        return lambda: out.__setitem__(f"yesno{c.batch_size}", score_candidates(vlm, image, QUESTION, cands, c))

    def reasoning(c):  # the generation the reasoning mode runs (random weights never write a parsable score, so the
        # yes/no fallback that would follow is left out: it is the same for both variants)
        def go():
            views = candidate_views(image, cands, c)
            prompt = REASONING_PROMPT.format(question=QUESTION)
            out[f"reasoning{c.batch_size}"] = generate_replies(
                vlm, [[Image.fromarray(v), prompt] for v in views], c.max_new_tokens, c.batch_size)
        return go

    fns = {"yesno_batched": yesno(cfg), "yesno_loop": yesno(one),
           "reasoning_batched": reasoning(cfg), "reasoning_loop": reasoning(one)}
    tokens = {}
    for name, fn in fns.items():  # the warm-up run, instrumented: token counts and time inside forwards
        with ForwardTimer([vlm.model, vlm.model.model.visual], lm=vlm.model) as ft:
            fn()
        tokens[name] = {"prefill": ft.prefill_tokens, "decode": ft.decode_tokens,
                        "prefill_s": ft.prefill_seconds + ft.other_seconds,  # + the vision tower
                        "decode_s": ft.decode_seconds}
    log(f"scoring: {n} candidates, {repeats} repeats of 4 variants")
    t = side_by_side(fns, repeats, warmup=0)

    ya, yb = out[f"yesno{n}"], out["yesno1"]
    d_yes = float(np.nanmax(np.abs(ya.scores - yb.scores)))
    same = sum(a == b for a, b in zip(out[f"reasoning{n}"], out["reasoning1"]))
    tb, tl = tokens["reasoning_batched"], tokens["reasoning_loop"]
    r1 = _speed_row(Row("reasoning_batched_vs_loop", f"reasoning scoring, {n} candidates",
                        f"batched generate ({n}/call)", "one generate per candidate"),
                    t["reasoning_batched"], t["reasoning_loop"], 3.0)
    r1.check = f"replies identical {same}/{n}"
    r1.note = (f"time in forwards (warm-up run): prefill (vision tower included) of {tb['prefill']} tokens {tb['prefill_s']:.2f} s batched vs "
               f"{tl['prefill_s']:.2f} s loop; decode of {tb['decode']} tokens ({size.max_new_tokens} max each) "
               f"{tb['decode_s']:.2f} s batched ({_rate(tb['decode'], tb['decode_s'])} tok/s) vs {tl['decode_s']:.2f} s "
               f"loop ({_rate(tl['decode'], tl['decode_s'])} tok/s)")
    r2 = _speed_row(Row("yesno_vs_reasoning", f"yes/no vs reasoning scoring, {n} candidates",
                        f"yes/no, batched ({n}/forward)", "reasoning, batched generate"),
                    t["yesno_batched"], t["reasoning_batched"], 10.0)
    r2.check = "different outputs by design"
    r2.note = (f"yes/no: one forward over {tokens['yesno_batched']['prefill']} prompt tokens; reasoning: a "
               f"{tb['prefill']}-token prefill ({tb['prefill_s']:.2f} s in forwards) plus {tb['decode']} decoded "
               f"tokens ({tb['decode_s']:.2f} s)")
    r3 = _speed_row(Row("yesno_batched_vs_loop", f"yes/no scoring, {n} candidates", f"batched ({n}/forward)",
                        "one forward per candidate"), t["yesno_batched"], t["yesno_loop"], None)
    r3.check = f"max |score diff| {d_yes:.1e}"
    return [r1, r2, r3]


def row_two_image(pipe, image, repeats: int) -> Row:
    """Two-image yes/no (original + candidate): the shared prefix (system, original image, question) run once and
    its KV cache reused for all candidates, against full prompts."""
    import numpy as np

    from bench.instrument import side_by_side
    from rea2seg.config import ScoringConfig
    from rea2seg.scoring import candidate_views, yesno_two_image_cached, yesno_two_image_full

    vlm = pipe.scorer
    cands = synthetic_candidates(image.shape[:2])
    views = candidate_views(image, cands, ScoringConfig(), same_size=True)
    res = {}
    fns = {"cached": lambda: res.__setitem__("cached", yesno_two_image_cached(vlm, image, views, QUESTION)),
           "full": lambda: res.__setitem__("full", yesno_two_image_full(vlm, image, views, QUESTION))}
    log(f"two-image yes/no: {len(views)} candidates, {repeats} repeats")
    t = side_by_side(fns, repeats)
    row = _speed_row(Row("two_image_prefix_cache", f"two-image yes/no, {len(views)} candidates",
                         "prefix KV cached once", "full two-image prompts"), t["cached"], t["full"], None)
    row.check = f"max |score diff| {float(np.max(np.abs(res['cached'][0] - res['full'][0]))):.1e}"
    row.note = "the original image's vision tower and prefix run once instead of once per candidate"
    return row


def rows_sam(pipe, image, repeats: int) -> list[Row]:
    """SAM, two rows. (1) The engine's mask making (batched prompts on an accelerator, one prompt per decoder call on
    a CPU; full-resolution post-processing only for the kept masks) against one decoder call per prompt with every
    output post-processed, which is what a ``SamPredictor.predict`` loop does (it still lacks the filtering and NMS
    that A includes, so B is flattered). (2) Why a CPU decodes prompt by prompt: SAM's real 256-d mask decoder
    (the same in vit_b/l/h) on the same prompts, batched against one call per prompt."""
    import numpy as np
    import torch

    from bench.instrument import side_by_side
    from rea2seg.discovery import masks_from_prompts, prompts_from_peaks
    from rea2seg.heatmap import find_peaks
    from rea2seg.models.sam import SAM_ARCHS, SamEmbedding, SamModel, decoder_chunk
    from rea2seg.testing.reference import predict_one_by_one

    cfg = replace(pipe.config.discovery, peak_threshold=0.0)  # the default cap: 6 peaks -> 12 prompts
    d = pipe.discover(image, QUESTION)
    grid = torch.as_tensor(d.grid)
    peaks, _ = find_peaks(grid, cfg.peak_threshold, cfg.peak_min_distance, cfg.max_peaks)
    prompts, sources, _ = prompts_from_peaks(grid, peaks, image.shape[:2], cfg)
    emb = pipe.sam.embed(image)
    res = {}
    fns = {"engine": lambda: res.__setitem__("a", masks_from_prompts(pipe.sam, emb, prompts, sources, d.heatmap,
                                                                     cfg)),
           "loop": lambda: res.__setitem__("b", predict_one_by_one(pipe.sam, emb, prompts, cfg.multimask))}
    log(f"SAM: {len(prompts)} prompts, {repeats} repeats")
    t = side_by_side(fns, repeats)
    kept = res["a"]
    loop_masks = res["b"][0].reshape(-1, *image.shape[:2])
    found = 0
    for m in kept.masks:
        inter = (loop_masks & m).reshape(len(loop_masks), -1).sum(1)
        union = (loop_masks | m).reshape(len(loop_masks), -1).sum(1)
        found += int(np.max(inter / np.maximum(union, 1)) >= 0.99)
    per_call = decoder_chunk(emb.features.device, cfg.sam_chunk)
    r1 = _speed_row(Row("sam_batched_vs_loop", f"SAM masks, {len(prompts)} prompts x {3 if cfg.multimask else 1}",
                        "engine: kept masks only at full size", "one call per prompt, all at full size"),
                    t["engine"], t["loop"], 2.0)
    r1.check = f"{found}/{len(kept)} kept masks in the loop's output (IoU >= 0.99)"
    r1.note = (f"A decodes {per_call} prompt(s) per call here and post-processes {len(kept)} kept masks at full size, "
               f"B all {loop_masks.shape[0]}; image {image.shape[1]}x{image.shape[0]}; bench SAM (128-d decoder)")

    torch.manual_seed(0)
    real = SAM_ARCHS["vit_b"].build()
    real_sam = SamModel(real, "vit_b", Path("random-init-vit_b"), torch.device("cpu"))
    real_emb = SamEmbedding(torch.randn(1, real.prompt_encoder.embed_dim, 64, 64), emb.input_size,
                            emb.original_size)
    n = len(prompts)
    out = {}
    fns = {"one": lambda: out.__setitem__("one", real_sam.decode(real_emb, prompts, cfg.multimask, 1)),
           "batched": lambda: out.__setitem__("batched", real_sam.decode(real_emb, prompts, cfg.multimask, n))}
    log(f"SAM's real decoder: {n} prompts, {repeats} repeats")
    t = side_by_side(fns, repeats)
    boxed = int((~np.isnan(prompts.boxes).any(1)).sum())
    r2 = _speed_row(Row("sam_decoder_cpu", f"SAM real 256-d decoder, {n} prompts (CPU)", "one prompt per call",
                        f"batched ({boxed} boxed + {n - boxed} unboxed, a call each)"), t["one"], t["batched"], None)
    r2.check = f"max |logit diff| {float((out['one'][0] - out['batched'][0]).abs().max()):.1e}"
    r2.note = "why the engine decodes prompt by prompt on a CPU (decoder_chunk); random 64x64x256 embedding"
    del real, real_sam
    return [r1, r2]


def build_segmenters(root: Path) -> dict[str, Path]:
    """Bench-size SAM 2.1 and SAM 3 checkpoints (hub layout; small image encoders, the published 256-d decoders),
    built once into ``root``."""
    from rea2seg.testing.segmenters import build_tiny_sam2, build_tiny_sam3

    out = {}
    for backend, build in (("sam2", build_tiny_sam2), ("sam3", build_tiny_sam3)):
        d = root / f"{backend}-bench"
        if not (d / "model.safetensors").exists():
            tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=root))
            try:
                build(tmp, size="bench")
                shutil.rmtree(d, ignore_errors=True)
                os.rename(tmp, d)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        out[backend] = d
    return out


def rows_segmenters(pipe, image, root: Path, repeats: int, concept_repeats: int | None = None) -> list[Row]:
    """SAM 2.1 and SAM 3 through transformers (bench-size: small image encoders, the published 256-d decoders), on
    the prompts discovery makes for the bench image. Per backend: (1) the image encoder's share of the segmenter's
    work for one image (embedding + every prompt decoded, filtered, de-duplicated, kept masks at full size); (2) the
    decoder, one prompt per call against all prompts in one call (what ``decoder_chunk`` chooses between). Then
    (3) what SAM 3's concept candidates add to a question's discovery: the VLM's short generation naming the object
    and SAM 3's concept head on the cached image (its ViT output is shared with the tracker, so not run again)."""
    import numpy as np
    import torch

    from bench.instrument import median, param_count, side_by_side
    from rea2seg import Rea2Seg
    from rea2seg.discovery import masks_from_prompts, prompts_from_peaks
    from rea2seg.heatmap import find_peaks
    from rea2seg.models.segmenter import load_segmenter

    cfg = replace(pipe.config.discovery, peak_threshold=0.0)  # 6 peaks -> 12 prompts, as rows_sam
    d = pipe.discover(image, QUESTION)
    grid = torch.as_tensor(d.grid)
    peaks, _ = find_peaks(grid, cfg.peak_threshold, cfg.peak_min_distance, cfg.max_peaks)
    prompts, sources, _ = prompts_from_peaks(grid, peaks, image.shape[:2], cfg)
    n = len(prompts)
    rows = []
    segs = {}
    for backend, path in build_segmenters(root).items():
        seg = segs[backend] = load_segmenter(str(path), device="cpu")
        name = {"sam2": "SAM 2.1", "sam3": "SAM 3"}[backend]
        params = param_count(seg.model)
        log(f"{name}: encoder share and decoder, {n} prompts, {repeats} repeats")
        emb = seg.embed(image)
        times = side_by_side({"embed": lambda: seg.embed(image),
                              "all": lambda: masks_from_prompts(seg, seg.embed(image), prompts, sources, d.heatmap,
                                                                cfg)}, repeats)
        share = [e / a for e, a in zip(times["embed"], times["all"]) if a > 0]
        r = Row(f"{backend}_encoder_share", f"{name} image encoder, share of the segmenter's work",
                "image embedding", f"embedding + {n} prompts to candidates", a=share, b=times["all"], unit="%",
                share_of="encoder")
        r.ratio = median(share)
        r.note = (f"bench-size {name}: {params / 1e6:.1f}M params, {seg.input_size} px input; embedding "
                  f"{median(times['embed']) * 1000:.0f} ms. Real models have far larger encoders (SAM 2.1 Hiera-L "
                  f"217M, of which 213M encoder; SAM 3: ViT 446M of 852M), so their share is larger still")
        rows.append(r)
        out = {}
        t = side_by_side({"one": lambda: out.__setitem__("one", seg.decode(emb, prompts, cfg.multimask, 1)),
                          "batched": lambda: out.__setitem__("batched", seg.decode(emb, prompts, cfg.multimask, n))},
                         max(3 * repeats, 9))
        boxed = int((~np.isnan(prompts.boxes).any(1)).sum())
        r = _speed_row(Row(f"{backend}_decoder_cpu", f"{name} 256-d decoder, {n} prompts (CPU)",
                           "one prompt per call", f"batched ({boxed} boxed + {n - boxed} unboxed, a call each)"),
                       t["one"], t["batched"], None)
        r.check = f"max |logit diff| {float((out['one'][0] - out['batched'][0]).abs().max()):.1e}"
        r.note = "the choice of SAM's row above: the engine batches on an accelerator, one prompt per call on a CPU"
        rows.append(r)

    seg = segs["sam3"]
    base = replace(pipe.config, discovery=replace(pipe.config.discovery, sources=("attention",)))
    with_concepts = replace(base.discovery, sources=("attention", "concepts"))
    p3 = Rea2Seg(pipe.vlm, seg, config=base, name="bench-sam3")
    res, stages = {}, []

    def concepts():
        res["b"] = p3.discover(image, QUESTION, config=with_concepts)
        stages.append(res["b"].timings_ms)

    concept_repeats = concept_repeats or repeats
    log(f"SAM 3 concept candidates: {concept_repeats} repeats")
    t = side_by_side({"attention": lambda: res.__setitem__("a", p3.discover(image, QUESTION)),
                      "concepts": concepts}, concept_repeats)
    r = _speed_row(Row("concepts_extra", "discovery with SAM 3, per question (image cached)", "attention peaks only",
                       "attention peaks + concept candidates"), t["attention"], t["concepts"], None)
    tb = {k: median([st.get(k, 0.0) for st in stages[1:]]) for k in ("concepts", "concept_masks")}  # not warm-up
    n_concept = sum(s.startswith("concept:") for s in res["b"].candidates.sources)
    r.check = (f"{len(res['b'].candidates)} candidates with concepts ({n_concept} concept) vs "
               f"{len(res['a'].candidates)} without")
    r.note = (f"extra (medians): the VLM naming the object {tb['concepts']:.0f} ms (random weights never stop early: "
              f"{pipe.config.discovery.max_new_tokens_concepts} new tokens, a real reply is ~10), SAM 3's concept "
              f"head {tb['concept_masks']:.0f} ms for the phrases (ViT output reused); ratio = B/A")
    rows.append(r)
    return rows


def row_second_question(pipe, image, repeats: int) -> Row:
    """A second question on the same image (cached SAM embedding, vision features and the image's KV prefix) vs the
    same work on a cold cache."""
    import numpy as np

    from bench.instrument import median, stopwatch

    cold, warm = [], []
    log(f"second question: {repeats + 1} cold/warm pairs")
    for r in range(repeats + 1):  # the first pair is a warm-up
        pipe.clear_cache()
        with stopwatch() as t:
            pipe.discover(image, QUESTION)
        c = t()
        with stopwatch() as t:
            warm_d = pipe.discover(image, SECOND_QUESTION)
        if r:
            cold.append(c)
            warm.append(t())
    pipe.clear_cache()
    cold_d = pipe.discover(image, SECOND_QUESTION)
    row = _speed_row(Row("second_question", "discovery, second question on the same image",
                         "warm (per-image cache)", "cold"), warm, cold, 3.0)
    row.check = (f"max |heat map diff| {float(np.max(np.abs(warm_d.heatmap - cold_d.heatmap))):.1e}, "
                 f"candidates {len(warm_d.candidates)} vs {len(cold_d.candidates)}")
    row.note = ("warm: " + ", ".join(f"{k} {v:.0f} ms" for k, v in warm_d.timings_ms.items())
                + f" (median total {median(warm) * 1000:.0f} ms)")
    return row


def _probe(args: list[str]) -> dict:
    # a fixed mmap threshold: glibc then maps every large block on its own and unmaps it when freed, so the peak
    # resident set tracks the peak of live tensors (with the default dynamic threshold it varied by +-20%)
    env = dict(os.environ, HF_HUB_OFFLINE="1", MALLOC_MMAP_THRESHOLD_="131072",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, "-m", "bench.probe", *args], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=900)
    if p.returncode != 0:
        raise RuntimeError(f"probe {args[0]} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def rows_attention_memory(vlm_dir: Path, image_path: Path, sides: list[int]) -> list[Row]:
    """Peak memory of the attention-map forward: rows-only recording vs eager ``output_attentions``, each in a fresh
    process (peak RSS above the RSS before the forward; a warm-up forward first, its memory handed back), at each VLM
    view size in ``sides`` (eager maps grow with the square of the sequence, the rest of the forward linearly)."""
    from bench.instrument import fmt_bytes

    out = []
    for side in sides:
        log(f"attention memory at {side} px: 3 fresh processes")
        common = ["--vlm", str(vlm_dir), "--image", str(image_path), "--question", QUESTION, "--max-pixels",
                  str(side * side)]
        eager = _probe(["attention", *common, "--how", "eager"])
        rows = _probe(["attention", *common, "--how", "rows"])
        plain = _probe(["attention", *common, "--how", "plain"])
        row = Row(f"attention_memory_{side}", f"attention maps at {side} px ({eager['seq_len']} tokens): peak memory",
                  "rows-only recording", "eager output_attentions", a=[rows["peak_delta"]], b=[eager["peak_delta"]],
                  unit="bytes")
        row.ratio = rows["peak_delta"] / max(eager["peak_delta"], 1)
        row.target = "<= 0.25x"
        row.met = bool(row.ratio <= 0.25)
        row.check = (f"kept tensors {fmt_bytes(rows['tensor_bytes'])} vs {fmt_bytes(eager['tensor_bytes'])} "
                     f"({rows['tensor_bytes'] / max(eager['tensor_bytes'], 1):.4f}x)")
        resettable = rows["peak_reset"] and eager["peak_reset"]
        row.note = (f"peak RSS above the pre-forward RSS{'' if resettable else ' (peak not resettable here)'}, the "
                    f"forward without maps {fmt_bytes(plain['peak_delta'])}; "
                    f"{eager['image_tokens']} image tokens, {eager['heads']} heads; rows keep {rows['layers_kept']} "
                    f"layers x {rows['rows']} rows, eager {eager['layers_kept']} layers x all {eager['seq_len']} rows")
        out.append(row)
    return out


def rows_end_to_end(pipe, image, size: BenchSize, repeats: int, modes: list[str]) -> list[Row]:
    """``segment`` on a cold image cache: the share of wall time spent outside the models' forward passes."""
    from bench.instrument import ForwardTimer, median

    vlm, sam = pipe.vlm, pipe.sam.sam
    modules = [vlm.model, vlm.model.model.visual, sam.image_encoder, sam.prompt_encoder, sam.mask_decoder]
    if pipe.scorer is not pipe.vlm:
        modules.append(pipe.scorer.model)
    out = []
    for mode in modes:
        totals, shares, stage_ms = [], [], {}
        log(f"end to end ({mode}): {repeats + 1} runs")
        with ForwardTimer(modules) as ft:
            for r in range(repeats + 1):  # the first is a warm-up
                pipe.clear_cache()
                ft.reset()
                res = pipe.segment(image, QUESTION, mode=mode)
                if r:
                    total = res.timings_ms["total"] / 1000
                    totals.append(total)
                    shares.append(max(0.0, total - ft.seconds) / total)
                    stage_ms = res.timings_ms
        row = Row(f"e2e_outside_{mode}", f"segment ({mode}): time outside model forwards", "share outside",
                  "total", a=shares, b=totals, unit="%")
        row.ratio = median(shares)
        row.target = "<= 10%"
        row.met = bool(row.ratio <= 0.10)
        row.note = (f"median total {median(totals):.2f} s; stages " +
                    ", ".join(f"{k} {v:.0f}" for k, v in stage_ms.items() if k != "total") + " ms")
        out.append(row)
    return out


def row_rss(vlm_dir: Path, sam_path: Path, image_path: Path, size: BenchSize) -> Row:
    from bench.instrument import fmt_bytes

    log("peak RSS of segment: 1 fresh process")
    p = _probe(["segment", "--vlm", str(vlm_dir), "--sam", str(sam_path), "--image", str(image_path), "--question",
                QUESTION, "--max-new-tokens", str(size.max_new_tokens), "--max-pixels", str(size.vlm_side ** 2)])
    w = p["weight_bytes"]
    above = p["peak_segment"] - p["rss_imports"]
    sam_peak = p["peak_sam_encoder_delta"]
    row = Row("peak_rss", "segment: peak RSS vs model weights", "peak RSS above imports", "weights",
              a=[above], b=[w], unit="bytes")
    row.ratio = above / w
    row.target = "report"
    row.check = f"scorer is the discovery VLM (one copy): {p['scorer_shared']}"
    row.note = (f"weights {fmt_bytes(w)}; RSS after imports {fmt_bytes(p['rss_imports'])}, after loading "
                f"{fmt_bytes(p['rss_loaded'])}, peak during segment {fmt_bytes(p['peak_segment'])}; the SAM "
                f"encoder alone peaks {fmt_bytes(sam_peak)} above the loaded RSS; RSS after unload() "
                f"{fmt_bytes(p['rss_after_unload'])} (the CPU allocator keeps freed pages)")
    return row


def build_load_models(size: BenchSize, vlm_dir: Path, sam_path: Path, root: Path | None = None) -> tuple[Path, Path]:
    """The models the load-memory rows load. Full size: a ~650 MB Qwen2.5-VL (hidden 1536, 6 layers, vision 8 x 640)
    and a random SAM ViT-B in Meta's .pth layout (375 MB), built once; quick: the bench models."""
    if size.name != "full":
        return vlm_dir, sam_path
    import torch

    from rea2seg.models.sam import SAM_ARCHS
    from rea2seg.testing import build_tiny_vlm

    root = Path(root) / "load" if root else Path(tempfile.gettempdir()) / f"rea2seg-bench-load-{_tag(size)}"
    medium, vit_b = root / "vlm-medium", root / "sam_vit_b_01ec64.pth"
    root.mkdir(parents=True, exist_ok=True)
    if not (medium / "model.safetensors").exists():
        tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=root))
        try:
            build_tiny_vlm(tmp, "qwen2_5_vl", hidden=1536, layers=6, heads=12, kv_heads=2, vision_depth=8,
                           vision_hidden=640, vision_heads=10)
            shutil.rmtree(medium, ignore_errors=True)
            os.rename(tmp, medium)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if not vit_b.exists():
        torch.manual_seed(0)
        torch.save(SAM_ARCHS["vit_b"].build().state_dict(), vit_b.with_suffix(".tmp"))
        os.replace(vit_b.with_suffix(".tmp"), vit_b)
    return medium, vit_b


def rows_load_memory(vlm_dir: Path, sam_path: Path) -> list[Row]:
    """Host peak RSS while loading a model onto the CPU and reading each weight once, each way in a fresh process:
    the engine's loaders against the way before them."""
    from bench.instrument import fmt_bytes

    out = []
    for what, path in (("vlm", vlm_dir), ("sam", sam_path)):
        log(f"load memory ({what}): 2 fresh processes")
        new = _probe(["load", f"--{what}", str(path), "--how", "new"])
        old = _probe(["load", f"--{what}", str(path), "--how", "old"])
        w = new["weight_bytes"]
        row = Row(f"load_memory_{what}", f"loading the {'VLM' if what == 'vlm' else 'SAM'} ({fmt_bytes(w)} of weights):"
                  f" host peak RSS", "straight to the device", "host copy, then moved", a=[new["peak_delta"]],
                  b=[old["peak_delta"]], unit="bytes")
        row.ratio = new["peak_delta"] / max(old["peak_delta"], 1)
        row.check = f"peak / weights: {new['peak_delta'] / w:.2f}x vs {old['peak_delta'] / w:.2f}x"
        if what == "sam":
            row.target = "<= 0.6x"
            row.met = bool(row.ratio <= 0.6)
            row.note = ("old: random init on the host plus the checkpoint read whole (2 copies); new: built on the "
                        "meta device, the memory-mapped checkpoint's tensors become the weights (1 copy)")
        else:
            row.note = ("on a CPU both ways end with the weights in host memory (transformers 5 memory-maps the "
                        "safetensors either way); the saving is on an accelerator, where the old way held the whole "
                        "model in host RAM before .to(device) (16.6 GB for Qwen2.5-VL-7B in bf16) and device_map holds "
                        "one tensor at a time: not measurable on a machine without one")
        out.append(row)
    return out


def rows_sam_precision(sam_path: Path, image, full: bool) -> list[Row]:
    """Masks of SAM run under bf16 / fp16 autocast against fp32, same image and prompts: the planted SAM (masks with
    meaning: clicks on shapes) and the bench SAM (1024 px encoder, random weights: every logit near the threshold
    moves). Why the engine keeps SAM in fp32."""
    import copy

    import numpy as np
    import torch

    from rea2seg.models.sam import PromptBatch, SamModel, load_sam
    from rea2seg.testing.planted import OBJECT_COLOUR, build_planted_sam

    h, w = 480, 640
    scene = np.full((h, w, 3), 128, np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    centres = [((120, 160), 50), ((300, 400), 60), ((380, 120), 40)]
    for (r, c), rad in centres:
        scene[(yy - r) ** 2 + (xx - c) ** 2 < rad ** 2] = OBJECT_COLOUR
    clicks = np.array([[[c + dx, r + dy]] for (r, c), _ in centres for dx, dy in ((0, 0), (12, -9))], np.float32)
    rng = np.random.default_rng(0)
    ih, iw = image.shape[:2]
    points = np.stack([rng.uniform(0, iw - 1, 12), rng.uniform(0, ih - 1, 12)], 1).astype(np.float32)[:, None]
    cases = [("planted SAM, clicks on shapes", SamModel(build_planted_sam(), "planted", Path("planted"),
                                                         torch.device("cpu")), scene, clicks)]
    if full:
        cases.append(("bench SAM, random points", load_sam(sam_path, device="cpu"), image, points))

    def masks(sam, img, pts, dtype):
        sam = copy.deepcopy(sam)
        prompts = PromptBatch(pts, np.ones(pts.shape[:2], np.int64), np.full((len(pts), 4), np.nan, np.float32))
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            emb = sam.embed(img)
            low, _ = sam.decode(emb, prompts, multimask=True)
        return sam.upscale(emb, low.reshape(-1, *low.shape[-2:]).float())

    out = []
    for dtype, name in ((torch.bfloat16, "bf16"), (torch.float16, "fp16")):
        ious, labels = [], []
        for label, sam, img, pts in cases:
            if dtype == torch.float16 and label.startswith("bench"):
                continue  # fp16 matmuls on a CPU take minutes at 1024 px; the planted SAM answers the question
            log(f"SAM precision: {label}, {name}")
            ref, got = masks(sam, img, pts, None), masks(sam, img, pts, dtype)
            ious += [float((a & b).sum() / max((a | b).sum(), 1)) for a, b in zip(ref, got) if (a | b).any()]
            labels.append(label)
        row = Row(f"sam_{name}_masks", f"SAM under {name} autocast: mask IoU with fp32", f"{name} masks",
                  "fp32 masks", a=ious, b=[1.0] * len(ious), unit="iou")
        row.ratio = min(ious)
        row.check = f"median {float(np.median(ious)):.4f} over {len(ious)} masks ({'; '.join(labels)})"
        row.note = ("the engine keeps SAM in fp32: ViT-H is 2.6 GB of the default preset's 19 GB, and fp32 gives "
                    "Meta's SamPredictor masks exactly")
        out.append(row)
    return out


# ---- output ----------------------------------------------------------------------------------------------------------

def _fmt_value(v: float, unit: str) -> str:
    from bench.instrument import fmt_bytes, fmt_seconds

    if unit == "bytes":
        return fmt_bytes(v)
    if unit == "%":
        return f"{v * 100:.1f}%"
    if unit == "iou":
        return f"IoU {v:.4f}"
    return fmt_seconds(v)


def format_table(meta: dict, rows: list[Row]) -> str:
    from bench.instrument import median

    lines = [f"Rea2Seg bench ({meta['size']}) {meta['date']} | {meta['machine']} | load average "
             f"{meta['load_average'][0]} at start, {meta['load_average'][1]} at end",
             f"VLM: {meta['vlm']} | SAM: {meta['sam']} | image {meta['image']} | repeats {meta['repeats']} "
             f"(median, variants interleaved) | random weights: compute only, outputs meaningless", ""]
    header = ("row", "A", "B", "A", "B", "result", "target", "met")
    table = []
    for r in rows:
        if r.unit == "s":
            result = f"{r.ratio:.2f}x faster"
        elif r.unit == "bytes":
            result = f"{r.ratio:.3f}x of B" if r.key != "peak_rss" else f"{r.ratio:.2f}x weights"
        elif r.unit == "iou":
            result = f"IoU >= {r.ratio:.4f}"
        else:
            result = f"{r.ratio * 100:.1f}% {r.share_of}"
        a_v = median(r.a)
        b_v = median(r.b)
        b_unit = "s" if r.unit == "%" else r.unit
        met = "-" if r.met is None else ("yes" if r.met else "NO")
        table.append((r.name, r.a_label, r.b_label, _fmt_value(a_v, r.unit), _fmt_value(b_v, b_unit), result,
                      r.target, met))
    widths = [max(len(str(x[i])) for x in [header] + table) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines.append(fmt.format(*header))
    lines.append("  ".join("-" * w for w in widths))
    lines += [fmt.format(*t) for t in table]
    lines.append("")
    lines.append("checks and notes:")
    for r in rows:
        lines.append(f"- {r.name}: {r.check}{'; ' if r.check and r.note else ''}{r.note}")
    return "\n".join(lines)


def _json_safe(x):
    """NaN/inf -> None, so the output is strict JSON."""
    if isinstance(x, float) and (x != x or x in (float("inf"), float("-inf"))):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def machine() -> str:
    import torch

    from bench.instrument import cpu_name

    dev = f"GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "no GPU"
    return (f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} threads, "
            f"{dev}, Python {platform.python_version()}")


ALL_ROWS = ("scoring", "two_image", "sam", "segmenters", "second_question", "attention_memory", "end_to_end",
            "peak_rss", "parquet_mask", "ray", "load_memory", "sam_precision")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small models, short generations (the CI smoke run, about a minute on 2 cores)")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats per variant (default: 3)")
    ap.add_argument("--only", default=",".join(ALL_ROWS), help=f"comma-separated subset of {','.join(ALL_ROWS)}")
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    ap.add_argument("--json-out", type=Path, default=None, help="also write the JSON to this file")
    ap.add_argument("--models", type=Path, default=None, help="where to build/reuse the bench models")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: torch's choice); on a machine shared with other jobs, 1 thread "
                         "avoids the OpenMP stalls that make small operations many times slower")
    args = ap.parse_args(argv)

    only = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = set(only) - set(ALL_ROWS)
    if unknown:
        ap.error(f"unknown rows {sorted(unknown)}; choose from {', '.join(ALL_ROWS)}")
    size = SIZES["quick" if args.quick else "full"]
    repeats = args.repeats or size.repeats
    if repeats < 1:
        ap.error("--repeats must be >= 1")

    t0 = time.perf_counter()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the memory probes' fresh processes too
    load_start = os.getloadavg()[0]
    from PIL import Image

    from bench.instrument import param_count
    from rea2seg import PipelineConfig, Rea2Seg
    from rea2seg.models.prompting import chat_inputs
    from rea2seg.config import DiscoveryConfig, ScoringConfig

    torch.manual_seed(0)
    log(f"building {size.name} models")
    vlm_dir, sam_path = build_models(size, args.models)
    work = Path(tempfile.mkdtemp(prefix="rea2seg-bench-"))
    try:
        image, image_path = bench_image(size, work)
        config = PipelineConfig(discovery=DiscoveryConfig(vlm_max_pixels=size.vlm_side ** 2),
                                scoring=ScoringConfig(max_new_tokens=size.max_new_tokens))
        pipe = Rea2Seg.from_pretrained(str(vlm_dir), str(sam_path), device="cpu", config=config, name="bench")
        inputs = chat_inputs(pipe.vlm, [[Image.fromarray(image), QUESTION]])
        grid = [int(v) for v in inputs["image_grid_thw"][0]]
        meta = {
            "size": size.name, "date": datetime.date.today().isoformat(), "machine": machine(),
            "vlm": f"Qwen2.5-VL arch, {param_count(pipe.vlm.model) / 1e6:.1f}M params (hidden {size.hidden}, "
                   f"{size.layers} layers, {size.heads} heads; vision {size.vision_depth}x{size.vision_hidden}), "
                   f"image at {grid[2] * 14}x{grid[1] * 14} px = {grid[1] * grid[2] // 4} tokens",
            "sam": f"{size.sam_kind}, {param_count(pipe.sam.sam) / 1e6:.1f}M params, {pipe.sam.img_size} px encoder",
            "image": f"{image.shape[1]}x{image.shape[0]}", "repeats": repeats, "sizes": asdict(size),
        }
        rows: list[Row] = []
        if "scoring" in only:
            rows += rows_scoring(pipe, image, size, repeats)
        if "two_image" in only:
            rows.append(row_two_image(pipe, image, repeats))
        if "sam" in only:
            rows += rows_sam(pipe, image, max(3 * repeats, 9))  # short calls: more repeats for a stable median
        if "segmenters" in only:
            rows += rows_segmenters(pipe, image, models_root(size, args.models), repeats,
                                    1 if args.quick else None)  # SAM 3's concept head is slow on a CPU
        if "second_question" in only:
            rows.append(row_second_question(pipe, image, repeats))
        if "attention_memory" in only:
            sides = [size.vlm_side] if args.quick else [size.vlm_side, 672]
            rows += rows_attention_memory(vlm_dir, image_path, sides)
        if "end_to_end" in only:
            rows += rows_end_to_end(pipe, image, size, repeats, ["yesno"] if args.quick else ["yesno", "reasoning"])
        if "peak_rss" in only:
            rows.append(row_rss(vlm_dir, sam_path, image_path, size))
        if "parquet_mask" in only:
            from bench.scale import row_parquet_mask

            rows.append(row_parquet_mask(3 if args.quick else 12, repeats))
        if "ray" in only:
            from bench.scale import row_ray

            rows.append(row_ray(6 if args.quick else 40, 1 if args.quick else repeats, quick=args.quick))
        if "load_memory" in only:
            rows += rows_load_memory(*build_load_models(size, vlm_dir, sam_path, args.models))
        if "sam_precision" in only:
            rows += rows_sam_precision(sam_path, image, full=not args.quick)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    meta["wall_s"] = round(time.perf_counter() - t0, 1)
    meta["load_average"] = [round(load_start, 2), round(os.getloadavg()[0], 2)]
    doc = _json_safe({"meta": meta, "rows": [asdict(r) for r in rows]})
    if args.json_out:
        args.json_out.write_text(json.dumps(doc, indent=2))
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(format_table(meta, rows))
        print(f"\n(wall time {meta['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
