"""LISA-exact gIoU / cIoU, checked against LISA's own code transcribed with torch, and a per-pixel reference."""
import numpy as np
import pytest
import torch

from rea2seg.errors import InputError
from rea2seg.eval.metrics import (SampleResult, ciou, giou, intersection_union, iou_from, sample_iou, scores,
                             summarize)


def lisa_intersection_and_union(output, target, K=2, ignore_index=255):
    """LISA utils/utils.py:intersectionAndUnionGPU (histc needs floats on CPU)."""
    output = output.view(-1).float().clone()
    target = target.view(-1).float()
    output[target == ignore_index] = ignore_index
    intersection = output[output == target]
    area_intersection = torch.histc(intersection, bins=K, min=0, max=K - 1)
    area_output = torch.histc(output, bins=K, min=0, max=K - 1)
    area_target = torch.histc(target, bins=K, min=0, max=K - 1)
    return area_intersection, area_output + area_target - area_intersection


def lisa_validate(preds, targets):
    """LISA train_ds.py:validate, one mask per sample, meters summed: returns (giou, ciou)."""
    inter_sum, union_sum, acc = 0.0, 0.0, []
    for p, t in zip(preds, targets):
        i, u = lisa_intersection_and_union(torch.from_numpy(p.astype(np.int32)), torch.from_numpy(t.astype(np.int32)))
        inter_sum, union_sum = inter_sum + i.numpy(), union_sum + u.numpy()
        a = i / (u + 1e-5)
        a[u == 0] += 1.0
        acc.append(a.numpy())
    return float(np.mean(acc, axis=0)[1]), float((inter_sum / (union_sum + 1e-10))[1])


def pixel_reference(pred, target):
    """Straightforward per-pixel count."""
    inter = union = 0
    for p, t in zip(pred.ravel().tolist(), target.ravel().tolist()):
        if t == 255:
            continue
        inter += bool(p) and t == 1
        union += bool(p) or t == 1
    return inter, union


def random_case(rng, h, w, p_ignore):
    target = (rng.random((h, w)) < rng.uniform(0.05, 0.6)).astype(np.uint8)
    target[rng.random((h, w)) < p_ignore] = 255
    pred = rng.random((h, w)) < rng.uniform(0.0, 0.6)
    return pred, target


def test_matches_lisa_and_pixel_reference_on_random_masks():
    rng = np.random.default_rng(0)
    preds, targets = [], []
    for n in range(60):
        h, w = rng.integers(1, 40, 2)
        pred, target = random_case(rng, h, w, p_ignore=[0.0, 0.1, 0.5][n % 3])
        if n % 10 == 0:
            pred[:] = False  # empty predictions
        if n % 15 == 0:
            target[target == 1] = 0  # empty targets
        preds.append(pred)
        targets.append(target)
        assert intersection_union(pred, target) == pixel_reference(pred, target)
    ours = [intersection_union(p, t) for p, t in zip(preds, targets)]
    ref_giou, ref_ciou = lisa_validate(preds, targets)
    assert giou(ours) == pytest.approx(ref_giou, abs=1e-6)
    assert ciou(ours) == pytest.approx(ref_ciou, abs=1e-6)


def test_edge_cases():
    z = np.zeros((4, 5), np.uint8)
    empty = np.zeros((4, 5), bool)
    full = np.ones((4, 5), bool)
    assert intersection_union(empty, z) == (0, 0)
    assert sample_iou(empty, z) == 1.0  # empty on empty: no-object target counts 1
    assert sample_iou(full, z) == 0.0  # a false positive on an empty target
    t = z.copy()
    t[1:3, 1:3] = 1
    assert intersection_union(empty, t) == (0, 4)
    assert sample_iou(empty, t) == 0.0
    assert sample_iou(t.astype(bool), t) == pytest.approx(4 / (4 + 1e-5))
    all_ignore = np.full((4, 5), 255, np.uint8)
    assert intersection_union(full, all_ignore) == (0, 0)
    assert sample_iou(full, all_ignore) == 1.0  # LISA: nothing left to score -> 1
    assert sample_iou(empty, all_ignore) == 1.0
    # predicting into the ignore region costs nothing
    t2 = t.copy()
    t2[0, :] = 255
    p = t.astype(bool)
    p[0, :] = True
    assert intersection_union(p, t2) == (4, 4)
    # bool targets have no ignore; numeric predictions: non-zero is foreground
    assert intersection_union(np.where(p, 7, 0), t.astype(bool)) == (4, 9)
    # cIoU: an empty prediction adds 0 to I and |GT| to U
    assert ciou([(4, 4), (0, 4)]) == pytest.approx(0.5)
    assert giou([(4, 4), (0, 0)]) == pytest.approx((4 / (4 + 1e-5) + 1.0) / 2)
    assert np.isnan(giou([])) and np.isnan(ciou([]))
    assert ciou([(0, 0)]) == 0.0


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(InputError, match="same size"):
        intersection_union(np.zeros((3, 4), bool), np.zeros((4, 3), np.uint8))
    with pytest.raises(InputError, match="0, 1 or 255"):
        intersection_union(np.zeros((2, 2), bool), np.full((2, 2), 7, np.uint8))


def test_top_k_and_oracle():
    # candidates ranked best first by the method: IoUs 0.2, 0.9, 0.5, 1.0
    cands = [(2, 10), (9, 10), (5, 10), (10, 10)]
    r = SampleResult("a", output=(2, 10), candidates=cands)
    assert r.top_k(1) == (2, 10)
    assert r.top_k(2) == (9, 10)
    assert r.top_k(3) == (9, 10)
    assert r.oracle() == (10, 10)
    bare = SampleResult("b", output=(3, 6))
    assert bare.top_k(3) == bare.oracle() == (3, 6)
    s = scores([r, bare], ks=(3,))
    assert s["n"] == 2
    assert s["giou"] == pytest.approx((iou_from(2, 10) + iou_from(3, 6)) / 2)
    assert s["top_k"]["3"]["giou"] == pytest.approx((iou_from(9, 10) + iou_from(3, 6)) / 2)
    assert s["top_k"]["3"]["ciou"] == pytest.approx(12 / 16)
    assert s["oracle"]["ciou"] == pytest.approx(13 / 16)
    assert s["top_k"]["1"]["giou"] == s["giou"]


def test_summarize_breakdowns():
    rs = [SampleResult("1", (1, 2), category="Spatial", is_sentence=True),
          SampleResult("2", (0, 2), category="Discriminative", is_sentence=False),
          SampleResult("3", (2, 2), category="Spatial", is_sentence=False),
          SampleResult("4", (1, 1), category="Other", is_sentence=None)]
    s = summarize(rs, ks=(3,))
    assert list(s["by_category"]) == ["Discriminative", "Spatial", "Other"]
    assert s["by_category"]["Spatial"]["n"] == 2
    assert s["by_category"]["Spatial"]["ciou"] == pytest.approx(3 / 4)
    assert s["by_query"]["short"]["n"] == 2 and s["by_query"]["long"]["n"] == 1
    assert "by_category" not in summarize([SampleResult("x", (1, 1))])
    assert "by_query" not in summarize([SampleResult("x", (1, 1))])
