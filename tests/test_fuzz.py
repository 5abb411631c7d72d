"""Property-based fuzzing (hypothesis) of the code that eats untrusted input: RLE encode/decode, polygon
rasterisation, allowed-directory path checks. (Model-reply parsers are fuzzed in test_scoring.py.)"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from rea2seg.eval.rasterize import rasterize_polygon
from rea2seg.errors import InputError
from rea2seg.images import rle_decode, rle_encode
from rea2seg.serve.paths import AllowedDirs

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(arrays(bool, st.tuples(st.integers(0, 40), st.integers(0, 40))))
def test_rle_round_trip(mask):
    rle = rle_encode(mask)
    assert sum(rle["counts"]) == mask.size and rle["size"] == list(mask.shape)
    assert all(c >= 0 for c in rle["counts"])
    assert np.array_equal(rle_decode(rle), mask)


@FUZZ
@given(st.one_of(st.none(), st.integers(), st.text(max_size=20),
                 st.dictionaries(st.sampled_from(["size", "counts", "x"]),
                                 st.one_of(st.lists(st.integers(-5, 50), max_size=6), st.text(max_size=5),
                                           st.integers()), max_size=3)))
def test_rle_decode_garbage_is_a_clear_error(rle):
    try:
        out = rle_decode(rle)
    except InputError:
        return
    assert out.dtype == bool and out.size == sum(int(c) for c in rle["counts"])


coord = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False)


@FUZZ
@given(st.lists(st.tuples(coord, coord), min_size=1, max_size=12), st.integers(1, 48), st.integers(1, 48))
def test_rasterize_polygon_is_total_and_bounded(points, h, w):
    m = rasterize_polygon(points, h, w)
    assert m.shape == (h, w) and m.dtype == bool
    if m.any():  # every drawn pixel lies within the polygon's bounding box (one pixel of rounding)
        ys, xs = np.nonzero(m)
        px, py = [p[0] for p in points], [p[1] for p in points]
        assert xs.min() >= np.floor(min(px)) - 1 and xs.max() <= np.ceil(max(px)) + 1
        assert ys.min() >= np.floor(min(py)) - 1 and ys.max() <= np.ceil(max(py)) + 1


@FUZZ
@given(st.integers(2, 40), st.integers(2, 40))
def test_rasterize_polygon_covering_the_image(h, w):
    assert rasterize_polygon([(-5, -5), (w + 5, -5), (w + 5, h + 5), (-5, h + 5)], h, w).all()


_parts = st.sampled_from(["..", ".", "a", "b", "link", "out", "x.png", "", "ä", " ", "a\x00b", "..."])


@FUZZ
@given(st.lists(_parts, max_size=6), st.booleans())
def test_path_checks_only_allow_files_inside(tmp_path_factory, parts, absolute):
    root = tmp_path_factory.getbasetemp() / "fuzz-paths"
    allowed = root / "allowed"
    if not allowed.exists():
        (allowed / "a").mkdir(parents=True)
        (allowed / "a" / "x.png").write_bytes(b"x")
        (allowed / "x.png").write_bytes(b"x")
        (root / "out").mkdir()
        (root / "out" / "x.png").write_bytes(b"secret")
        (allowed / "link").symlink_to(root / "out")
    path = os.path.join(str(allowed) if absolute else "", *parts) if parts else (str(allowed) if absolute else "")
    try:
        real = AllowedDirs([allowed]).check_file(path)
    except InputError as e:
        assert "Traceback" not in str(e) and len(str(e).splitlines()) == 1
        return
    assert real.is_file() and real.is_relative_to(allowed.resolve())
    assert Path(os.path.realpath(path)) == real
