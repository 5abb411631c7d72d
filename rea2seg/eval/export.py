"""Mask-scoring training data (the paper converts its CoT data into a mask-scoring set): for every sample, the
candidates discovery finds, each candidate's IoU with the ground truth (LISA's metric), the visual prompt the scorer
sees for it, and a target score ``round(10 * IoU)``. Written as JSONL + PNGs, resumable like ``rea2seg eval``.

Layout of the output folder:
    run.json                       what produced it (dataset, model)
    samples.jsonl                  one line per sample (see ``sample_record``)
    summary.json                   counts, target-score histogram, candidate recall
    images/<id>.png                the image
    targets/<id>.png               ground truth, LISA encoding (0 background, 1 target, 255 ignore)
    masks/<id>_c<k>.png            candidate k (0/255)
    prompts/<id>_c<k>.png          candidate k as the yes/no and reasoning scorers see it (``scoring.candidate_views``)
    prompts/<id>_sheet.png         all candidates numbered on one image (the comparative scorer's view)
The scorer's text prompts for the question are in each record's ``prompts``.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..images import png_bytes
from ..render import candidate_sheet
from ..scoring import REASONING_PROMPT, YESNO_PROMPT, candidate_views, comparative_prompt
from .datasets import EvalDataset, Sample
from .metrics import intersection_union, iou_from
from .runs import (RUN_FILE, ResultLog, exclusive, make_out_dir, prepare_out_dir, raise_interrupted, run_samples,
                   select_keys, write_json)
from .work import Outcome, SampleWork

SAMPLES_FILE, EXPORT_SUMMARY_FILE = "samples.jsonl", "summary.json"
EXPORT_DIRS = ("images", "targets", "masks", "prompts")


def target_score(iou: float, scale: int = 10) -> int:
    """IoU in [0, 1] -> integer score 0..scale, rounding halves up (0.25 -> 3 for scale 10)."""
    return int(math.floor(min(max(iou, 0.0), 1.0) * scale + 0.5))


def scorer_views(pipe, image: np.ndarray, candidates) -> tuple[list[np.ndarray], np.ndarray | None]:
    """Exactly what the pipeline's scorer is shown: one view per candidate (highlight, or a zoomed crop for a small
    candidate) for the yes/no and reasoning modes, and the numbered sheet for the comparative mode."""
    config = pipe.config.scoring
    views = candidate_views(image, candidates, config)
    return views, candidate_sheet(image, candidates, alpha=config.alpha) if len(candidates) else None


def scorer_prompts(question: str, numbers) -> dict:
    """The scorer's text prompts for this question and candidates numbered ``numbers`` (so a fine-tuning set can pair
    them with the views)."""
    return {"yesno": YESNO_PROMPT.format(question=question), "reasoning": REASONING_PROMPT.format(question=question),
            "comparative": comparative_prompt(question, numbers) if len(numbers) else None}


def sample_record(sample: Sample, candidates, scale: int = 10) -> dict:
    """The JSONL record of one sample (paths relative to the export folder)."""
    sid = sample.id
    cands = []
    for k in range(len(candidates)):
        inter, union = intersection_union(candidates.masks[k], sample.target)
        iou = iou_from(inter, union)
        cands.append({
            "index": k, "mask": f"masks/{sid}_c{k}.png", "prompt": f"prompts/{sid}_c{k}.png",
            "iou": round(iou, 6), "target_score": target_score(iou, scale), "intersection": inter, "union": union,
            "box_xyxy": [round(float(v), 1) for v in candidates.boxes[k]], "area": int(candidates.masks[k].sum()),
            "source": candidates.sources[k], "sam_score": round(float(candidates.sam_scores[k]), 4),
            "attention_score": round(float(candidates.attention_scores[k]), 4),
        })
    best = max(range(len(cands)), key=lambda k: cands[k]["iou"]) if cands else None
    return {"id": sid, "question": sample.question, "texts": sample.texts, "category": sample.category,
            "is_sentence": sample.is_sentence, "size": list(sample.target.shape), "image": f"images/{sid}.png",
            "target": f"targets/{sid}.png", "sheet": f"prompts/{sid}_sheet.png" if cands else None,
            "score_scale": scale, "best_index": best, "candidates": cands}


def sample_files(sample: Sample, candidates, views: list[np.ndarray], sheet) -> dict[str, bytes]:
    """The PNGs of one sample (paths relative to the export folder -> bytes)."""
    sid = sample.id
    files = {f"images/{sid}.png": png_bytes(sample.image), f"targets/{sid}.png": png_bytes(sample.target)}
    for k in range(len(candidates)):
        files[f"masks/{sid}_c{k}.png"] = png_bytes(np.asarray(candidates.masks[k], bool))
        files[f"prompts/{sid}_c{k}.png"] = png_bytes(views[k])
    if sheet is not None:
        files[f"prompts/{sid}_sheet.png"] = png_bytes(sheet)
    return files


@dataclass
class ExportWork(SampleWork):
    """The mask-scoring export on one sample: discovery only (no scorer), the candidates' IoUs, the scorer's views."""

    scale: int = 10
    needs_scorer = False
    desc = "export"

    def finish(self, pipe, sample: Sample, found) -> Outcome:
        views, sheet = scorer_views(pipe, found.image, found.candidates)
        rec = sample_record(sample, found.candidates, self.scale)
        rec["prompts"] = scorer_prompts(sample.question, found.candidates.numbers)
        return Outcome(rec, sample_files(sample, found.candidates, views, sheet))


def export_scoring_data(pipe, dataset: EvalDataset, out_dir: str | os.PathLike, *, limit: int | None = None,
                        force: bool = False, model_info: dict | None = None, scale: int = 10,
                        progress: bool = True, pipeline_factory: Callable[[], object] | None = None,
                        ray=None) -> dict:
    """Run discovery on every selected sample and write the mask-scoring set to ``out_dir`` (resuming a previous
    export there); on Ray with ``ray`` (a ``ray_runner.RayOptions``: discovery actors, each building its pipeline
    with ``pipeline_factory``). Returns the summary: n_samples, n_skipped, n_candidates, score_histogram (count per
    target score), candidate_recall (mean over samples of the best candidate IoU, 0 without candidates),
    n_without_candidates."""
    out = Path(out_dir)
    keys = select_keys(dataset, limit)
    run_info = {"export": "mask-scoring", "dataset": dataset.identity(), "model": model_info or {}, "scale": scale}
    make_out_dir(out)
    with exclusive(out):
        prepare_out_dir(out, run_info, force, files=(RUN_FILE, SAMPLES_FILE, EXPORT_SUMMARY_FILE), dirs=EXPORT_DIRS)
        for d in EXPORT_DIRS:
            (out / d).mkdir(exist_ok=True)
        log = ResultLog(out / SAMPLES_FILE)
        records = log.load()
        interrupted = run_samples(dataset, keys, out, log, records, ExportWork(scale=scale), pipe, pipeline_factory,
                                  progress, ray)
        summary = export_summary([records[k] for k in keys if k in records], scale)
        summary.update({"dataset": dataset.identity(), "split": dataset.split, "model": model_info or {},
                        "complete": all(k in records for k in keys)})
        summary.update(dataset.checks())
        write_json(out / EXPORT_SUMMARY_FILE, summary)
    if interrupted:
        raise_interrupted(summary["n_samples"] + summary["n_skipped"], len(keys))
    return summary


def export_summary(records: list[dict], scale: int = 10) -> dict:
    done = [r for r in records if "skipped" not in r]
    scores = [c["target_score"] for r in done for c in r["candidates"]]
    # a sample without candidates has recall 0
    best = [max((c["iou"] for c in r["candidates"]), default=0.0) for r in done]
    return {"n_samples": len(done), "n_skipped": len(records) - len(done), "n_candidates": len(scores),
            "n_without_candidates": sum(1 for r in done if not r["candidates"]),
            "score_histogram": np.bincount(np.asarray(scores, int), minlength=scale + 1).tolist(),
            "candidate_recall": round(float(np.mean(best)), 6) if best else None,
            "skipped": [{"id": r["id"], "reason": r["skipped"]} for r in records if "skipped" in r]}
