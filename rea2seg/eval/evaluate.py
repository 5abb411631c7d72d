"""``rea2seg eval``: run the pipeline over ReasonSeg / ReasonSeg-SGDR (resumable), or score existing masks, with
LISA's metrics (``metrics.py``); write per-sample JSONL, ``summary.json`` and a Markdown table laid out like the paper.

Output folder (``--out``):
    run.json       what was run (dataset, split, model, mode); a re-run with the same settings resumes
    results.jsonl  one line per sample, appended and fsynced as it goes; a partial last line (killed run) is dropped
    summary.json   gIoU / cIoU, Top-k and candidate oracles, per category and short/long query
    table.md       the same as a Markdown table
    masks/<id>.png the predicted masks (0/255), so the folder can be re-scored with ``--predictions``
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import InputError
from ..images import atomic_write_bytes, png_bytes, read_mask
from .datasets import EvalDataset, Sample, SkippedSample
from .metrics import CONVENTION, SampleResult, category_order, intersection_union, iou_from, summarize
from .runs import (RUN_FILE, ProgressBar, ResultLog, exclusive, make_out_dir, prepare_out_dir, raise_interrupted,
                   run_samples, select_keys, warn, write_json)
from .work import Outcome, SegmentWork

RESULTS_FILE, SUMMARY_FILE, TABLE_FILE, MASKS_DIR = "results.jsonl", "summary.json", "table.md", "masks"
OUTPUT_FILES = (RUN_FILE, RESULTS_FILE, SUMMARY_FILE, TABLE_FILE)


# ---- per-sample records -----------------------------------------------------------------------------------------

def _record_result(rec: dict) -> SampleResult | None:
    if "skipped" in rec:
        return None
    return SampleResult(rec["id"], tuple(rec["output"]), [tuple(c) for c in rec.get("candidates", [])],
                        rec.get("category"), rec.get("is_sentence"))


def _base_record(sample: Sample) -> dict:
    return {"id": sample.id, "question": sample.question, "category": sample.category,
            "is_sentence": sample.is_sentence, "size": list(sample.target.shape)}


def pipeline_record(sample: Sample, result, seconds: float) -> dict:
    """One JSONL record from a ``SegmentationResult``: the output's (I, U) and every candidate's, ranked, with each
    candidate's source and number (discovery's order: number 1 is the candidate discovery ranks first)."""
    inter, union = intersection_union(result.mask, sample.target)
    cands = result.candidates
    overlaps = [list(intersection_union(cands.masks[i], sample.target)) for i in range(len(cands))]
    rec = _base_record(sample)
    rec.update({
        "output": [inter, union], "iou": round(iou_from(inter, union), 6),
        "candidates": overlaps, "candidate_ious": [round(iou_from(i, u), 6) for i, u in overlaps],
        "scores": [None if math.isnan(s) else round(float(s), 6) for s in cands.scores],
        "sources": list(cands.sources), "numbers": [int(n) for n in cands.numbers],
        "mode": getattr(result, "mode", None),
        "timings_ms": {k: round(float(v), 1) for k, v in (getattr(result, "timings_ms", None) or {}).items()},
        "seconds": round(seconds, 3),
    })
    if getattr(result, "warning", None):
        rec["warning"] = result.warning
    return rec


# ---- summary and table --------------------------------------------------------------------------------------------

def build_summary(records: dict[str, dict], keys: Sequence[str], ks: Sequence[int], header: dict) -> dict:
    """Summary over the records of ``keys`` (the selected samples, in dataset order)."""
    present = [records[k] for k in keys if k in records]
    results = [r for r in (_record_result(rec) for rec in present) if r is not None]
    skipped = [{"id": rec["id"], "reason": rec["skipped"]} for rec in present if "skipped" in rec]
    out = dict(header)
    out.update({"convention": CONVENTION, "n_samples": len(results), "n_skipped": len(skipped),
                "n_selected": len(keys), "complete": len(present) == len(keys)})
    out.update(summarize(results, ks) if results else {"giou": None, "ciou": None})
    out["skipped"] = skipped
    seconds = [rec["seconds"] for rec in present if "seconds" in rec]
    if seconds:
        out["seconds_per_sample"] = round(float(np.mean(seconds)), 3)
    warnings = sorted({rec["warning"] for rec in present if rec.get("warning")})
    if warnings:
        out["warnings"] = warnings
    return _finite(out)


def _finite(obj):
    """NaN -> None so the JSON is standard."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def markdown_table(summary: dict, method: str) -> str:
    """The paper's layout: one gIoU/cIoU column pair per SGDR category (+ overall), or short / long / overall query
    (ReasonSeg test; LISA's table shows val as one pair), or the split alone; one row per Top-1, Top-k and the
    candidate oracle."""
    if summary.get("by_category"):
        groups = [(c, summary["by_category"][c]) for c in category_order(summary["by_category"])]
        groups.append(("Overall", summary))
    elif summary.get("by_query") and len(summary["by_query"]) > 1 and summary.get("split") != "val":
        groups = [(f"{q} query", summary["by_query"][q]) for q in ("short", "long") if q in summary["by_query"]]
        groups.append(("overall", summary))
    else:
        groups = [(summary.get("split") or "overall", summary)]
    ks = sorted(int(k) for k in (summary.get("top_k") or {"1": None}))
    rows = [(f"{method} (Top-1)", lambda g: (g.get("giou"), g.get("ciou")))]
    for k in ks:
        if k > 1:
            rows.append((f"{method} (Top-{k})", lambda g, k=k: tuple((g.get("top_k") or {}).get(str(k), {}).get(m)
                                                                      for m in ("giou", "ciou"))))
    if summary.get("oracle"):
        rows.append(("Candidate oracle (all)", lambda g: tuple((g.get("oracle") or {}).get(m)
                                                                 for m in ("giou", "ciou"))))
    head = "| Method | " + " | ".join(f"{name} gIoU | {name} cIoU" for name, _ in groups) + " |"
    sep = "|---|" + "---:|" * (2 * len(groups))
    lines = [head, sep]
    for label, get in rows:
        cells = []
        for _, g in groups:
            gi, ci = get(g)
            cells += [_pct(gi), _pct(ci)]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    ds = summary.get("dataset", {})
    notes = [f"{ds.get('name', '?')} / {summary.get('split') or '-'}: {summary['n_samples']} samples scored, "
             f"{summary['n_skipped']} skipped" + ("" if summary.get("complete", True) else
                                                  f", {summary['n_selected']} selected (run incomplete)"),
             "n per column: " + ", ".join(f"{name} {g.get('n', 0)}" for name, g in groups),
             f"Metric convention: {summary['convention']}"]
    notes += list(ds.get("notes", []))
    notes += [f"Warning: {w}" for w in summary.get("warnings", [])]
    if summary.get("missing_predictions"):
        notes.append(f"{len(summary['missing_predictions'])} samples had no prediction PNG and count as empty")
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"


def _write_reports(out_dir: Path, summary: dict, method: str) -> str:
    table = markdown_table(summary, method)
    write_json(out_dir / SUMMARY_FILE, summary)
    atomic_write_bytes(out_dir / TABLE_FILE, table.encode(), overwrite=True)
    return table


# ---- the three modes ----------------------------------------------------------------------------------------------

@dataclass
class EvalWork(SegmentWork):
    """``rea2seg eval`` on one sample: the pipeline's answer, its (I, U) and every candidate's, and its mask PNG."""

    save_masks: bool = True
    desc = "eval"

    def outcome(self, sample: Sample, result, seconds: float) -> Outcome:
        files = {f"{MASKS_DIR}/{sample.id}.png": png_bytes(result.mask)} if self.save_masks else {}
        return Outcome(pipeline_record(sample, result, seconds), files)

    def postfix(self, record: dict) -> str:
        return f"IoU {record['iou']:.3f}" if "iou" in record else ""


def evaluate_pipeline(pipe, dataset: EvalDataset, out_dir: str | os.PathLike, *, top_k: int = 3,
                      limit: int | None = None, mode: str | None = None, merge: bool = False,
                      save_masks: bool = True, force: bool = False, model_info: dict | None = None,
                      method: str = "Rea2Seg", progress: bool = True,
                      pipeline_factory: Callable[[], object] | None = None, ray=None) -> dict:
    """Run ``pipe.segment`` on every selected sample, appending one record per sample to ``out_dir/results.jsonl``
    (resuming a previous run there), then write ``summary.json`` and ``table.md``. Returns the summary.

    pipe: a ``Rea2Seg`` (or None with ``pipeline_factory``, which is called only if some sample is left to do).
    ray: a ``ray_runner.RayOptions`` to run on Ray instead (discovery and scorer actors, each building its pipeline
    with ``pipeline_factory``); the records are the same.
    """
    out = Path(out_dir)
    keys = select_keys(dataset, limit)
    run_info = {"dataset": dataset.identity(), "model": model_info or {}, "mode": mode, "merge": merge,
                "top_k": top_k if merge else None}
    header = {"dataset": {**dataset.identity(), "notes": dataset.notes}, "split": dataset.split,
              "model": model_info or {}, "method": method, "top_k_reported": top_k}
    ks = sorted({1, top_k})
    make_out_dir(out)
    with exclusive(out):
        prepare_out_dir(out, run_info, force, OUTPUT_FILES, (MASKS_DIR,))
        log = ResultLog(out / RESULTS_FILE)
        records = log.load()
        if save_masks:
            (out / MASKS_DIR).mkdir(exist_ok=True)
        work = EvalWork(top_k=top_k, mode=mode, merge=merge, save_masks=save_masks)
        interrupted = run_samples(dataset, keys, out, log, records, work, pipe, pipeline_factory, progress, ray)
        summary = build_summary(records, keys, ks, header)
        summary.update(dataset.checks())
        _write_reports(out, summary, method)
    if interrupted:
        raise_interrupted(summary["n_samples"] + summary["n_skipped"], len(keys))
    return summary


def score_predictions(dataset: EvalDataset, pred_dir: str | os.PathLike, *, limit: int | None = None,
                      progress: bool = False) -> tuple[dict, list[dict]]:
    """Score existing masks ``pred_dir/<sample id>.png`` (non-zero = foreground) with the same metric code.
    A missing PNG counts as an empty prediction and is listed; a PNG of the wrong size is an error."""
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise InputError(f"predictions folder not found: {pred_dir}; it must hold <sample id>.png masks")
    keys = select_keys(dataset, limit)
    records: dict[str, dict] = {}
    missing: list[str] = []
    bar = ProgressBar(len(keys), 0, "score", progress)
    for sample in dataset.iter_samples(keys):
        if isinstance(sample, SkippedSample):
            warn(f"skipped {sample.id}: {sample.reason}")
            records[sample.id] = {"id": sample.id, "skipped": sample.reason}
            bar.update()
            continue
        path = pred_dir / f"{sample.id}.png"
        if path.is_file():
            try:
                pred = read_mask(path)
            except Exception as e:
                raise InputError(f"cannot read prediction {path}: {e}") from None
            if pred.shape != sample.target.shape:
                h, w = sample.target.shape
                raise InputError(f"prediction {path} is {pred.shape[1]}x{pred.shape[0]} but image {sample.id} is "
                                 f"{w}x{h}; save masks at the image's size")
        else:
            missing.append(sample.id)
            pred = np.zeros(sample.target.shape, bool)
        inter, union = intersection_union(pred, sample.target)
        rec = _base_record(sample)
        rec.update({"output": [inter, union], "iou": round(iou_from(inter, union), 6),
                    "prediction": path.name if sample.id not in missing else None})
        records[sample.id] = rec
        bar.update()
    bar.close()
    scored = [k for k in keys if k in records and "skipped" not in records[k]]
    if scored and len(missing) == len(scored):
        raise InputError(f"none of the {len(scored)} samples has a prediction in {pred_dir} (expected files like "
                         f"{scored[0]}.png)")
    if missing:
        warn(f"{len(missing)} samples have no prediction PNG in {pred_dir} and count as empty masks "
              f"(first: {missing[0]}.png)")
    header = {"dataset": {**dataset.identity(), "notes": dataset.notes}, "split": dataset.split,
              "predictions": str(pred_dir.resolve()), "method": pred_dir.name}
    summary = build_summary(records, keys, (1,), header)
    summary.update(dataset.checks())
    summary["missing_predictions"] = missing
    return summary, [records[k] for k in keys if k in records]
