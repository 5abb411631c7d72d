"""Regenerate ``lisa_polygons.npz``: reference ground-truth masks drawn by OpenCV exactly as LISA draws them.

Needs OpenCV, which the project itself does not use; run it by hand in a scratch environment:
    python -m venv /tmp/cv && /tmp/cv/bin/pip install numpy opencv-python-headless
    /tmp/cv/bin/python tests/data/make_lisa_polygon_fixture.py
The committed file was made with opencv-python-headless 5.0.0 (4.14.0 gives identical masks).
"""
import json
from pathlib import Path

import cv2
import numpy as np


def lisa_get_mask(shapes, height, width):
    """LISA's utils/data_processing.py:get_mask_from_json, minus the file reading."""
    area_list, valid_poly_list = [], []
    for i in shapes:
        if "flag" == i["label"].lower():
            continue
        tmp_mask = np.zeros((height, width), dtype=np.uint8)
        cv2.polylines(tmp_mask, np.array([i["points"]], dtype=np.int32), True, 1, 1)
        cv2.fillPoly(tmp_mask, np.array([i["points"]], dtype=np.int32), 1)
        area_list.append(tmp_mask.sum())
        valid_poly_list.append(i)
    sort_index = list(np.argsort(area_list)[::-1].astype(np.int32))
    mask = np.zeros((height, width), dtype=np.uint8)
    for s_idx in sort_index:
        i = valid_poly_list[s_idx]
        label_value = 255 if "ignore" in i["label"].lower() else 1
        cv2.polylines(mask, np.array([i["points"]], dtype=np.int32), True, label_value, 1)
        cv2.fillPoly(mask, np.array([i["points"]], dtype=np.int32), label_value)
    return mask


def random_points(rng, h, w, kind):
    n = int(rng.integers(1, 10))
    if kind == 0:  # star-shaped, float coordinates
        c = rng.uniform(0, [w, h])
        r = rng.uniform(0.5, max(h, w) / 2, n)
        a = np.sort(rng.uniform(0, 2 * np.pi, n))
        return np.stack([c[0] + r * np.cos(a), c[1] + r * np.sin(a)], 1)
    if kind == 1:  # self-intersecting, partly outside the image
        return rng.uniform(-0.5 * w, [1.5 * w, 1.5 * h], (n, 2))
    if kind == 2:  # integer vertices on and just outside the border
        return rng.integers(-3, [w + 3, h + 3], (n, 2)).astype(float)
    return rng.uniform(-3000, 3000, (n, 2))  # far outside (clipping paths)


def main():
    rng = np.random.default_rng(2026)
    cases = []
    for t in range(400):
        h, w = (int(v) for v in rng.integers(1, 48, 2))
        labels = ["target", "target", "ignore", "Ignore_region", "flag", "TARGET"]
        shapes = [{"label": labels[int(rng.integers(0, len(labels)))] if t % 4 == 0 else "target",
                   "points": random_points(rng, h, w, int(rng.integers(0, 4))).round(2).tolist()}
                  for _ in range(1 if t % 4 else int(rng.integers(1, 5)))]
        cases.append({"height": h, "width": w, "shapes": shapes})
    masks = [lisa_get_mask(c["shapes"], c["height"], c["width"]) for c in cases]
    out = Path(__file__).with_name("lisa_polygons.npz")
    flat = np.concatenate([m.ravel() for m in masks])
    np.savez_compressed(out, cases=np.frombuffer(json.dumps(cases).encode(), np.uint8), masks=flat,
                        opencv=np.frombuffer(cv2.__version__.encode(), np.uint8))
    print(f"wrote {out} ({out.stat().st_size} bytes, {len(cases)} cases)")


if __name__ == "__main__":
    main()
