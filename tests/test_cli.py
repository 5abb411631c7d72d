"""The ``rea2seg`` command line as a user runs it (a real subprocess; tiny random-weight models)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "assets" / "coffee.jpg"


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "rea2seg", *args], capture_output=True, text=True, cwd=cwd,
                          env=dict(os.environ), timeout=300)


def test_version():
    from rea2seg import __version__
    r = run("--version")
    assert r.returncode == 0 and __version__ in r.stdout


def test_models_check_tiny(tiny_dir):
    r = run("models", "check", "--preset", "tiny-random")
    assert r.returncode == 0, r.stderr
    assert "tiny-random: ok" in r.stdout


def test_models_check_missing_names_fix(tmp_path):
    r = subprocess.run([sys.executable, "-m", "rea2seg", "models", "check", "vit_b", "facebook/sam2.1-hiera-large"],
                       capture_output=True, text=True, env=dict(os.environ, REA2SEG_MODELS_DIR=str(tmp_path)))
    assert r.returncode == 3 and "rea2seg models download vit_b" in r.stdout
    assert f"expected {tmp_path / 'sam2' / 'sam2.1-hiera-large'}" in r.stdout
    assert "rea2seg models download facebook/sam2.1-hiera-large" in r.stdout


def test_segment_cli_json(tiny_dir, tmp_path):
    mask, over = tmp_path / "m.png", tmp_path / "o.png"
    r = run("segment", str(EXAMPLE), "the utensil you would stir the coffee with", "--preset", "tiny-random",
            "--top-k", "2", "-o", str(mask), "--overlay", str(over), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert {"mask_path", "overlay_path", "box_xyxy", "score", "reasoning", "candidates", "timings_ms"} <= set(out)
    assert 1 <= len(out["candidates"]) <= 2
    assert all({"box_xyxy", "score", "area"} <= set(c) for c in out["candidates"])
    m = Image.open(mask)
    assert m.mode == "L" and m.size == Image.open(EXAMPLE).size
    assert set(np.unique(np.asarray(m))) <= {0, 255}
    assert Image.open(over).size == m.size
    assert "[rea2seg] scoring" in r.stderr and "meaningless" in r.stderr
    # deterministic
    r2 = run("segment", str(EXAMPLE), "the utensil you would stir the coffee with", "--preset", "tiny-random",
             "--top-k", "2", "-o", str(tmp_path / "m2.png"), "--overlay", str(tmp_path / "o2.png"), "--json")
    assert np.array_equal(np.asarray(Image.open(mask)), np.asarray(Image.open(tmp_path / "m2.png")))
    assert json.loads(r2.stdout)["candidates"] == out["candidates"]


def test_segment_never_overwrites(tiny_dir, tmp_path):
    mask = tmp_path / "m.png"
    mask.write_bytes(b"user data")
    r = run("segment", str(EXAMPLE), "the cup", "--preset", "tiny-random", "-o", str(mask), "--overlay",
            str(tmp_path / "o.png"))
    assert r.returncode != 0 and "--force" in r.stderr
    assert mask.read_bytes() == b"user data" and not (tmp_path / "o.png").exists()
    r = run("segment", str(EXAMPLE), "the cup", "--preset", "tiny-random", "-o", str(mask), "--overlay",
            str(tmp_path / "o.png"), "--force", "--quiet")
    assert r.returncode == 0 and mask.read_bytes() != b"user data"


@pytest.mark.parametrize("image,question,needle", [
    ("missing.png", "the cup", "image not found"),
    (".", "the cup", "directory"),
    ("empty.png", "the cup", "empty (0 bytes)"),
    ("text.png", "the cup", "not a readable image"),
    (str(EXAMPLE), "   ", "question is empty"),
])
def test_segment_bad_input_one_line(tmp_path, image, question, needle):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("hello")
    r = run("segment", image, question, "--preset", "tiny-random", cwd=tmp_path)
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("rea2seg: error:") and needle in lines[0], r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.png", "text.png"], "nothing written on failure"


def test_unnamed_outputs_go_beside_the_mask_with_the_usual_mode(tiny_dir, tmp_path):
    """``-o other/dir/m.png``: the overlay (and ``--heatmap`` without a name) are written beside the mask, not in the
    current folder; every output gets the mode new files get under the umask (0664 under umask 002), not the 0600 of
    a temporary file."""
    out = tmp_path / "other" / "dir"
    out.mkdir(parents=True)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    r = subprocess.run([sys.executable, "-m", "rea2seg", "segment", str(EXAMPLE), "the cup", "--preset",
                        "tiny-random", "-o", str(out / "m.png"), "--heatmap", "--json", "--quiet"], capture_output=True,
                       text=True, cwd=cwd, env=dict(os.environ), timeout=300, preexec_fn=lambda: os.umask(0o002))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["coffee_heatmap.png", "coffee_overlay.png", "m.png"]
    assert not any(cwd.iterdir()), "nothing lands in the current folder"
    doc = json.loads(r.stdout)
    assert doc["overlay_path"] == str(out / "coffee_overlay.png")
    assert doc["heatmap_path"] == str(out / "coffee_heatmap.png")
    for p in out.iterdir():
        assert (p.stat().st_mode & 0o777) == 0o664, (p.name, oct(p.stat().st_mode))


@pytest.mark.parametrize("preset, backend", [("tiny-random-sam2", "sam2"), ("tiny-random-sam3", "sam3")])
def test_segment_cli_with_sam2_and_sam3_presets(tiny_segmenter_dirs, tmp_path, preset, backend):
    mask = tmp_path / "m.png"
    r = run("segment", str(EXAMPLE), "the utensil you would stir the coffee with", "--preset", preset, "--top-k", "8",
            "-o", str(mask), "--overlay", str(tmp_path / "o.png"), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert Image.open(mask).size == Image.open(EXAMPLE).size and "meaningless" in r.stderr
    assert out["candidates"] and {"sam_embedding", "sam_masks", "scoring"} <= set(out["timings_ms"])
    if backend == "sam3":  # the preset's concept source ran: the VLM named phrases, SAM 3 segmented them
        assert {"concepts", "concept_masks"} <= set(out["timings_ms"])


def test_segment_cli_sources(tiny_segmenter_dirs, tmp_path):
    """--sources reaches the pipeline (what each source does: tests/test_sources.py, in-process)."""
    common = ("segment", str(EXAMPLE), "the cup", "-o", str(tmp_path / "m.png"), "--overlay", str(tmp_path / "o.png"),
              "--json", "--force", "--quiet")
    for args, needle in [(("--preset", "tiny-random-sam3", "--sources", "attention,peaks"), "unknown candidate source"),
                         (("--preset", "tiny-random-sam2", "--sources", "concepts"), "needs SAM 3")]:
        r = run(*common, *args)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("[rea2seg] warning")]
        assert r.returncode == 2 and len(lines) == 1 and needle in lines[0], r.stderr
