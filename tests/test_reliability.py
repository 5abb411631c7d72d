"""Bad input and faults through the engine and the CLI: one clear error type with a message that names the problem,
nothing written on failure. docs/RELIABILITY.md is generated from these cases (REA2SEG_UPDATE_DOCS=1 rewrites it;
otherwise the test fails when it is out of date)."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from rea2seg import Rea2Seg, errors
from rea2seg.image_cache import ImageCache
from reliability_cases import INPUT_CASES, QUESTION, Case  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "RELIABILITY.md"


def engine_outcome(pipeline, case: Case, tmp: Path) -> tuple[str, str]:
    path = case.build(tmp)
    try:
        r = pipeline.segment(path, case.question, top_k=2)
    except errors.Rea2SegError as e:
        return type(e).__name__, str(e).replace(str(tmp), "<dir>")
    assert r.mask.ndim == 2
    return "ok", f"mask {r.mask.shape[1]}x{r.mask.shape[0]}"


@pytest.mark.parametrize("case", INPUT_CASES, ids=[c.id for c in INPUT_CASES])
def test_engine(pipeline, case, tmp_path):
    kind, msg = engine_outcome(pipeline, case, tmp_path)
    assert kind == case.expect, msg
    assert case.needle in msg
    if case.id == "exif":
        assert msg == "mask 40x60", "EXIF rotation must be applied (60x40 stored, shown 40 wide)"


CLI_CASES = [c for c in INPUT_CASES if c.expect != "ok" and isinstance(c.question, str)]


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.id for c in CLI_CASES])
def test_cli_one_line(case, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    path = case.build(src)
    r = subprocess.run([sys.executable, "-m", "rea2seg", "segment", path, case.question, "--preset", "tiny-random",
                        "-o", str(out / "m.png"), "--overlay", str(out / "o.png")],
                       capture_output=True, text=True, env=dict(os.environ), timeout=300)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == errors.InputError.exit_code
    assert len(lines) == 1 and lines[0].startswith("rea2seg: error: ") and case.needle in lines[0], r.stderr
    assert not list(out.iterdir()), "nothing is written on failure"


def test_cli_debug_shows_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "rea2seg", "--debug", "segment", str(tmp_path / "x.png"), "q",
                        "--preset", "tiny-random"], capture_output=True, text=True, env=dict(os.environ), timeout=300)
    assert r.returncode != 0 and "Traceback" in r.stderr


# ---- model faults ------------------------------------------------------------------------------------------------

def model_outcome(fn) -> tuple[str, str]:
    try:
        fn()
    except errors.Rea2SegError as e:
        return type(e).__name__, str(e)
    return "ok", ""


def _model_cases(tiny_paths, tmp: Path) -> list[tuple[str, str, object, str]]:
    import shutil
    from rea2seg.testing import build_tiny_sam
    vlm_dir, sam_path = tiny_paths
    truncated = tmp / "sam_tiny_cut.safetensors"
    truncated.write_bytes(sam_path.read_bytes()[:5000])
    no_proc = tmp / "vlm-no-processor"
    shutil.copytree(vlm_dir, no_proc)
    (no_proc / "preprocessor_config.json").unlink()
    no_weights = tmp / "vlm-no-weights"
    shutil.copytree(vlm_dir, no_weights)
    (no_weights / "model.safetensors").unlink()
    bench_named_tiny = build_tiny_sam(tmp / "sam_vit_b_mislabelled.pth")
    from tiny_internvl import build_tiny_internvl
    internvl = build_tiny_internvl(tmp / "internvl3-hf")
    return [
        ("missing-sam", "a missing SAM checkpoint",
         lambda: Rea2Seg.from_pretrained(str(vlm_dir), str(tmp / "sam_vit_h_4b8939.pth")), "ModelNotFoundError"),
        ("missing-vlm", "a missing VLM (hub id, offline)",
         lambda: Rea2Seg.from_pretrained("Qwen/Qwen2.5-VL-3B-Instruct", str(sam_path)), "ModelNotFoundError"),
        ("truncated-sam", "a truncated SAM checkpoint",
         lambda: Rea2Seg.from_pretrained(str(vlm_dir), str(truncated)), "CheckpointError"),
        ("wrong-sam-kind", "the wrong SAM kind for a checkpoint (a tiny SAM named vit_b)",
         lambda: Rea2Seg.from_pretrained(str(vlm_dir), str(bench_named_tiny)), "CheckpointError"),
        ("vlm-no-processor", "a VLM directory without its processor",
         lambda: Rea2Seg.from_pretrained(str(no_proc), str(sam_path)), "CheckpointError"),
        ("vlm-no-weights", "a VLM directory without weights",
         lambda: Rea2Seg.from_pretrained(str(no_weights), str(sam_path)), "CheckpointError"),
        ("discovery-family", "a discovery VLM whose image tokens are not a known grid (InternVL3-hf)",
         lambda: Rea2Seg.from_pretrained(str(internvl), str(sam_path)), "ModelError"),
        ("unknown-preset", "an unknown preset name", lambda: Rea2Seg.from_preset("huge"), "InputError"),
        ("missing-sam3", "a missing SAM 2.1 / SAM 3 (hub id, offline)",
         lambda: Rea2Seg.from_pretrained(str(vlm_dir), "facebook/sam3"), "ModelNotFoundError"),
        ("not-a-segmenter", "a VLM directory given as the segmenter",
         lambda: Rea2Seg.from_pretrained(str(vlm_dir), str(vlm_dir)), "CheckpointError"),
        ("unknown-source", "an unknown candidate source",
         lambda: Rea2Seg.from_pretrained(str(vlm_dir), str(sam_path), sources="attention,peaks"), "InputError"),
        ("concepts-without-sam3", "concept candidates asked of SAM v1",
         lambda: Rea2Seg.from_pretrained(str(vlm_dir), str(sam_path)).discover(
             np.zeros((32, 32, 3), np.uint8), "the cup", sources=["concepts"]), "InputError"),
    ]


def test_model_faults(tiny_paths, tmp_path, monkeypatch):
    monkeypatch.setenv("REA2SEG_MODELS_DIR", str(tmp_path / "models"))
    for cid, _, fn, expect in _model_cases(tiny_paths, tmp_path):
        kind, msg = model_outcome(fn)
        assert kind == expect, (cid, msg)
        assert len(msg.splitlines()) == 1 and len(msg) < 400, (cid, msg)


def _oom(*a, **k):
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (simulated)")


def test_simulated_gpu_oom(pipeline, image, monkeypatch):
    monkeypatch.setattr(pipeline.sam.sam.image_encoder, "forward", _oom)
    pipeline.clear_cache()
    with pytest.raises(errors.ResourceError, match="out of memory.*batch_size"):
        pipeline.segment(image, QUESTION)


def test_unparsable_replies_fall_back(pipeline, image):
    """Random weights write noise: reasoning mode must still score every candidate (via the yes/no fallback)."""
    r = pipeline.segment(image, QUESTION, mode="reasoning")
    assert not np.isnan(r.candidates.scores).any()
    assert all(s in ("reasoning", "fallback:yesno") for s in r.candidates.scored_by)


# ---- no data lost / concurrency ------------------------------------------------------------------------------------

def test_concurrent_segments_match_sequential(pipeline):
    from conftest import make_image
    imgs = [make_image(96, 128, seed=s) for s in range(3)]
    want = [pipeline.segment(im, QUESTION).mask for im in imgs]
    pipeline.clear_cache()
    got: dict[int, np.ndarray] = {}
    errs: list[BaseException] = []

    def work(i):
        try:
            got[i] = pipeline.segment(imgs[i % 3], QUESTION).mask
        except BaseException as e:  # noqa: BLE001 - collected and re-raised below
            errs.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errs, errs
    for i in range(6):
        assert np.array_equal(got[i], want[i % 3])
    assert len(pipeline.cache) <= pipeline.cache.capacity


def test_image_cache_bounded_under_threads():
    cache = ImageCache(capacity=3)
    calls = []

    def work(seed):
        img = np.full((8, 8, 3), seed % 5, np.uint8)
        cache.entry(img).get_or_compute("k", lambda: calls.append(seed) or seed % 5)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(cache) <= 3


def test_atomic_write_never_clobbers(tmp_path):
    from rea2seg.images import atomic_write_bytes
    p = tmp_path / "keep.png"
    p.write_bytes(b"mine")
    with pytest.raises(errors.OutputExistsError):
        atomic_write_bytes(p, b"theirs")
    assert p.read_bytes() == b"mine" and [x.name for x in tmp_path.iterdir()] == ["keep.png"]
    atomic_write_bytes(p, b"theirs", overwrite=True)
    assert p.read_bytes() == b"theirs"


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_atomic_writes_respect_the_umask(tmp_path, umask):
    """Outputs are created like any new file (0666 less the umask), for a new file and a replaced one."""
    import os

    from rea2seg.images import atomic_write_bytes

    old = os.umask(umask)
    try:
        path = atomic_write_bytes(tmp_path / "out.png", b"data")
        assert (path.stat().st_mode & 0o777) == 0o666 & ~umask
        atomic_write_bytes(path, b"new", overwrite=True)
        assert path.read_bytes() == b"new" and (path.stat().st_mode & 0o777) == 0o666 & ~umask
    finally:
        os.umask(old)
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"], "no temporary file left behind"


def test_trust_remote_code_off_by_default(tiny_paths, tmp_path):
    """A checkpoint that asks for custom code is not run unless the user says so."""
    import json
    import shutil
    d = tmp_path / "remote"
    shutil.copytree(tiny_paths[0], d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["model_type"] = "evil_vl"
    cfg["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForImageTextToText": "evil.EvilModel"}
    (d / "config.json").write_text(json.dumps(cfg))
    marker = tmp_path / "ran"
    (d / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    with pytest.raises(errors.CheckpointError, match="trust_remote_code"):
        Rea2Seg.from_pretrained(str(d), str(tiny_paths[1]))
    assert not marker.exists()


# ---- the document ----------------------------------------------------------------------------------------------------

def _cell(kind: str, msg: str) -> str:
    msg = msg.replace("|", "\\|")
    return f"ok ({msg})" if kind == "ok" else f"`{kind}`: {msg}"


def test_reliability_doc_is_current(pipeline, tiny_paths, tmp_path, monkeypatch):
    monkeypatch.setenv("REA2SEG_MODELS_DIR", "<models>")
    rows = []
    for case in INPUT_CASES:
        d = tmp_path / case.id
        d.mkdir()
        kind, msg = engine_outcome(pipeline, case, d)
        rows.append(f"| {case.what} | {_cell(kind, msg)} |")
    mrows = []
    for cid, what, fn, _ in _model_cases(tiny_paths, tmp_path):
        kind, msg = model_outcome(fn)
        msg = msg.replace(str(tmp_path), "<dir>").replace(str(tiny_paths[0]), "<tiny-vlm>") \
            .replace(str(tiny_paths[1]), "<tiny-sam>")
        mrows.append(f"| {what} | {_cell(kind, msg)} |")
    text = DOC_TEMPLATE.format(inputs="\n".join(rows), models="\n".join(mrows))
    if os.environ.get("REA2SEG_UPDATE_DOCS") == "1":
        DOC.write_text(text)
    assert DOC.exists() and DOC.read_text() == text, \
        "docs/RELIABILITY.md is out of date: run REA2SEG_UPDATE_DOCS=1 pytest tests/test_reliability.py -k doc"


DOC_TEMPLATE = """# Reliability: what bad input and faults get

Generated by `tests/test_reliability.py` from the cases it runs (`REA2SEG_UPDATE_DOCS=1 pytest
tests/test_reliability.py -k doc` rewrites it; the test fails when this file is out of date). Every failure is one
error from a small hierarchy (`rea2seg.errors`: `Rea2SegError` > `InputError`, `ModelError` (`ModelNotFoundError`,
`CheckpointError`), `ResourceError` (`BusyError`), `OutputExistsError`, `Cancelled`) whose message names the problem
and the fix. Each door shows that same message in its own way:

| door | what the user gets |
|---|---|
| Python | the exception (`rea2seg.errors.*`) |
| CLI | one line on stderr, `rea2seg: error: <message>`, exit code 2 (input), 3 (model), 4 (resources), 130 (cancelled); the traceback only with `--debug`; no output file written |
| ComfyUI | the node fails with ComfyUI's normal error, whose text is the message |
| MCP | a tool error result (`isError: true`) whose text is the message |
| LangChain | `ToolException(<message>)`, which the agent sees as the tool's reply |

## Inputs (through `Rea2Seg.segment`; the CLI and agent tests run the same cases)

| input | result |
|---|---|
{inputs}

The pixel cap is `rea2seg.config.MAX_IMAGE_PIXELS` = 64,000,000 pixels, checked from the header before decoding.

## Models

| fault | result |
|---|---|
{models}

Pickled checkpoints are loaded with `torch.load(weights_only=True)`: one carrying code is refused with
`CheckpointError` and its code never runs (`tests/test_loading.py::test_pickled_code_checkpoint_is_refused`).
A checkpoint that needs its own Python code is refused unless `trust_remote_code=True` / `--trust-remote-code`.

## Faults at run time

| fault | result |
|---|---|
| GPU out of memory (simulated `torch.OutOfMemoryError`) | `ResourceError`: out of memory on DEVICE (...); lower vlm_max_pixels or scoring batch_size, use the 'small' preset, or free GPU memory (the image cache is dropped) |
| a model reply with no usable score | not an error: that candidate gets its yes/no probability, `scored_by = "fallback:yesno"` |
| an existing output file | `OutputExistsError` unless `--force`; outputs are written to a temp file and renamed, so a crash never leaves a partial file |
| concurrent requests on one pipeline | answered correctly (same masks as one by one); the per-image cache is bounded and thread-safe |
"""
