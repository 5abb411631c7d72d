"""Scorer training data: a mask-scoring export (``rea2seg eval ... --export-scoring DIR``) read back as samples, and
each sample turned into what the scorer is shown at inference plus the answer it should give.

The views and prompts come from ``rea2seg.scoring`` (``candidate_views``, ``candidate_sheet`` and the ``*_turn``
builders), the same functions scoring calls, so a trained scorer sees at training exactly what it sees in use.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import ScoringConfig
from ..errors import InputError
from ..images import load_image, read_mask
from ..render import candidate_sheet
from ..scoring import (candidate_views, comparative_answer, comparative_turn, reasoning_answer, reasoning_turn,
                       two_image_turn, yesno_answer, yesno_turn)
from ..types import Candidates

SAMPLES_FILE = "samples.jsonl"


@dataclass(frozen=True)
class ExportSample:
    """One sample of an export: its question, files and each candidate's IoU with the ground truth, target score
    (0..10) and optional reasoning text (a dataset with chain-of-thought annotations can add ``reasoning`` per
    candidate)."""

    id: str
    question: str
    image: Path
    masks: tuple[Path, ...]
    ious: tuple[float, ...]
    target_scores: tuple[int, ...]
    reasonings: tuple[str, ...]

    def load(self) -> tuple[np.ndarray, Candidates]:
        """The image (H, W, 3) uint8 and the candidates (numbered 1..N as discovery numbered them)."""
        image = load_image(self.image)
        masks = np.stack([read_mask(p) for p in self.masks]) if self.masks else \
            np.zeros((0, *image.shape[:2]), bool)
        if masks.shape[1:] != image.shape[:2]:
            raise InputError(f"sample {self.id}: candidate masks are {masks.shape[2]}x{masks.shape[1]} but the "
                             f"image is {image.shape[1]}x{image.shape[0]}; re-export the data")
        return image, Candidates.from_masks(masks)


def read_export(folder: str | Path) -> list[ExportSample]:
    """The samples of an export folder that have candidates (skipped and candidate-less samples teach nothing)."""
    folder = Path(folder)
    path = folder / SAMPLES_FILE
    if not path.is_file():
        raise InputError(f"{folder} is not a mask-scoring export (no {SAMPLES_FILE}); make one with "
                         f"`rea2seg eval DATASET --export-scoring {folder}`")
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            raise InputError(f"{path} line {n} is not JSON; the export is damaged: re-run the export") from None
        if "skipped" in rec or not rec.get("candidates"):
            continue
        try:
            cands = rec["candidates"]
            out.append(ExportSample(
                rec["id"], rec["question"], folder / rec["image"], tuple(folder / c["mask"] for c in cands),
                tuple(float(c["iou"]) for c in cands), tuple(int(c["target_score"]) for c in cands),
                tuple(str(c.get("reasoning", "")) for c in cands)))
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"{path} line {n} lacks {e} (not a rea2seg mask-scoring export?)") from None
    if not out:
        raise InputError(f"{path} holds no sample with candidates; nothing to train on")
    return out


def split(samples: list[ExportSample], val_fraction: float) -> tuple[list[ExportSample], list[ExportSample]]:
    """A stable train/validation split by a hash of the sample id (the same ids land on the same side every run)."""
    if not 0.0 <= val_fraction < 1.0:
        raise InputError(f"the validation fraction must be in [0, 1), got {val_fraction}")

    def val(s: ExportSample) -> bool:
        h = int(hashlib.sha1(s.id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        return h < val_fraction

    train = [s for s in samples if not val(s)]
    held = [s for s in samples if val(s)]
    if not train:
        raise InputError("no training samples left after the validation split; lower --val-fraction")
    return train, held


@dataclass
class Example:
    """One training example: a user turn (images and text, as ``chat_inputs`` takes it), the answer, and whether it
    is a positive (for class-balanced loss weights; None where the notion does not apply)."""

    turn: list
    answer: str
    positive: bool | None


def n_examples(sample: ExportSample, mode: str) -> int:
    """How many examples ``sample`` gives in ``mode`` (known without rendering anything)."""
    return 1 if mode == "comparative" else len(sample.masks)


def example(sample: ExportSample, index: int, mode: str, scoring: ScoringConfig, yes_threshold: float,
            same_size: bool = False) -> Example:
    """Example ``index`` of ``sample``: what the scorer of ``mode`` is shown and should answer. yes/no and reasoning
    give one example per candidate (Yes iff IoU >= ``yes_threshold``; "Score: N/10" with N = round(10 IoU)),
    comparative one per sample (a score for every candidate number). ``same_size``: views resized to the image's
    size, as the prefix-cached two-image scorer shows them (``scoring.score_candidates``)."""
    image, cands = sample.load()
    q = sample.question
    if mode == "comparative":
        sheet = candidate_sheet(image, cands, alpha=scoring.alpha)
        return Example(comparative_turn(image, sheet, q, cands.numbers),
                       comparative_answer(cands.numbers, sample.target_scores), None)
    view = candidate_views(image, cands.subset([index]), scoring, same_size=same_size)[0]
    positive = sample.ious[index] >= yes_threshold
    if mode == "yesno":
        turn = two_image_turn(image, view, q) if scoring.two_image else yesno_turn(view, q)
        return Example(turn, yesno_answer(positive), positive)
    return Example(reasoning_turn(view, q), reasoning_answer(sample.target_scores[index], sample.reasonings[index]),
                   positive)
