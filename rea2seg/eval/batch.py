"""``rea2seg batch``: segment many images (a folder with one question, a CSV/JSONL of image + question, or a parquet
set), resumably, in one process or on Ray. The run folder is the eval kit's (``runs.py``):

    run.json          what was run (input, model, settings); the same command resumes, other settings are refused
    results.jsonl     one line per sample: the answer's JSON (``SegmentationResult.to_json``) with ``id``, ``image``,
                      ``mask_path`` (and ``overlay_path``); a bad row is a line ``{"id", "skipped": reason}``, the
                      reason naming the file or the line
    summary.json      counts, the skipped rows with their reasons, throughput
    masks/<id>.png    the masks (0/255, the image's size); overlays/<id>.png with --overlays
"""
from __future__ import annotations

import csv
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from ..errors import InputError
from ..images import load_image, png_bytes
from ..inputs import check_question
from ..render import overlay
from .datasets import (IMAGE_SUFFIXES, EvalDataset, ParquetDataset, Sample, SkippedSample, choose_parquet_files,
                       in_key_order, parquet_copy, parse_column_mapping, safe_key, unique_keys)
from .runs import (RUN_FILE, ResultLog, exclusive, make_out_dir, prepare_out_dir, raise_interrupted, run_samples,
                   select_keys, write_json)
from .work import Outcome, SegmentWork

RESULTS_FILE, SUMMARY_FILE, MASKS_DIR, OVERLAYS_DIR = "results.jsonl", "summary.json", "masks", "overlays"
TABLE_SUFFIXES = (".csv", ".jsonl", ".ndjson")
#: column names tried, in order, in a CSV/JSONL input
IMAGE_COLUMNS = ("image", "image_path", "path", "file", "filename", "file_name", "img")
QUESTION_COLUMNS = ("question", "text", "prompt", "query", "instruction")
ID_COLUMNS = ("id", "sample_id", "uid", "name", "key")


# ---- inputs -------------------------------------------------------------------------------------------------------

class ImageFolder(EvalDataset):
    """Every image under ``folder`` (sub-folders too, sorted), each asked ``question``. Ids: the path inside the
    folder without its suffix (``sub/a.jpg`` -> ``sub_a``)."""

    kind = "images"

    def __init__(self, folder: Path, question: str) -> None:
        super().__init__(folder.name, None)
        self.folder, self.question = folder, check_question(question)
        paths = [p for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                 and not any(part.startswith(".") for part in p.relative_to(folder).parts)]
        if not paths:
            raise InputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
        keys = unique_keys([safe_key(p.relative_to(folder).with_suffix("").as_posix()) for p in paths])
        self._index = list(zip(keys, paths))
        self._pos = {k: i for i, k in enumerate(keys)}

    def identity(self) -> dict:
        return {**super().identity(), "path": str(self.folder.resolve()), "question": self.question}

    def keys(self) -> list[str]:
        return [k for k, _ in self._index]

    def iter_samples(self, keys: Iterable[str] | None = None) -> Iterator[Sample | SkippedSample]:
        for key, path in self._index if keys is None else in_key_order(self._index, keys, self._pos):
            try:
                yield Sample(key, self.question, load_image(path), None, image_path=str(path))
            except InputError as e:
                yield SkippedSample(key, str(e))


class QuestionTable(EvalDataset):
    """A CSV (with a header) or JSONL file, one sample per row: an image path (relative to the file's folder, or
    absolute), a question, optionally an id. ``question`` is used for rows without one. Columns are found by name
    (``image``/``image_path``/``path``..., ``question``/``text``/``prompt``..., ``id``...) or mapped with
    ``columns`` (roles image, text, id). A bad row (no image path, an unreadable image, no question, invalid JSON, a
    repeated id) is reported with its line number, never fatal."""

    kind = "table"

    def __init__(self, path: Path, question: str | None = None, columns: dict[str, str] | None = None) -> None:
        super().__init__(path.stem, None)
        self.path, self.default_question = path, question
        self.columns = dict(columns or {})
        unknown = sorted(set(self.columns) - {"image", "text", "id"})
        if unknown:
            raise InputError(f"--columns {', '.join(unknown)}: a CSV/JSONL input has the roles image, text, id")
        rows = self._read_rows()
        if not rows:
            raise InputError(f"{path} has no rows")
        self._rows = rows  # [(line number, dict | error text)]
        names = {k for _, r in rows if isinstance(r, dict) for k in r}
        self.image_col = self._column("image", IMAGE_COLUMNS, names, required=True)
        self.text_col = self._column("text", QUESTION_COLUMNS, names, required=question is None)
        self.id_col = self._column("id", ID_COLUMNS, names, required=False)
        base, self._dups = [], {}
        seen: dict[str, int] = {}
        for i, (line, r) in enumerate(rows):
            if not isinstance(r, dict):
                base.append(f"line{line}")
                continue
            given = r.get(self.id_col) if self.id_col else None
            if given not in (None, ""):
                key = safe_key(given)
                if key in seen:
                    self._dups[i] = f"id {given!r} is used on line {seen[key]} too; ids must be unique"
                seen.setdefault(key, line)
            else:
                image = r.get(self.image_col)
                key = safe_key(Path(str(image)).stem) if image else f"line{line}"
            base.append(key)
        keys = unique_keys(base)
        self._index = list(zip(keys, range(len(rows))))
        self._pos = {k: i for i, k in enumerate(keys)}

    def _read_rows(self) -> list[tuple[int, dict | str]]:
        try:
            text = self.path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError:
            raise InputError(f"{self.path} is not UTF-8 text; save it as UTF-8") from None
        except OSError as e:
            raise InputError(f"cannot read {self.path}: {e.strerror}") from None
        if self.path.suffix.lower() == ".csv":
            reader = csv.DictReader(text.splitlines())
            if not reader.fieldnames:
                raise InputError(f"{self.path} has no header row; the first line must name the columns, e.g. "
                                 f"image,question")
            return [(reader.line_num, {k: v for k, v in row.items() if k is not None}) for row in reader]
        rows: list[tuple[int, dict | str]] = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as e:
                rows.append((n, f"line {n} is not valid JSON ({e.msg})"))
                continue
            rows.append((n, obj if isinstance(obj, dict) else f"line {n} is not a JSON object"))
        return rows

    def _column(self, role: str, names: tuple[str, ...], present: set, required: bool) -> str | None:
        if role in self.columns:
            if self.columns[role] not in present:
                raise InputError(f"column {self.columns[role]!r} (for {role}) is not in {self.path.name}; it has: "
                                 f"{', '.join(sorted(present))}")
            return self.columns[role]
        lower = {n.lower(): n for n in present}
        hit = next((lower[n] for n in names if n in lower), None)
        if hit is None and required:
            raise InputError(f"{self.path.name} has no {role} column (looked for {', '.join(names)}; it has "
                             f"{', '.join(sorted(present)) or 'none'}); map one with --columns {role}=NAME"
                             + (" or give --question" if role == "text" else ""))
        return hit

    def identity(self) -> dict:
        return {**super().identity(), "path": str(self.path.resolve()), "question": self.default_question,
                "columns": {"image": self.image_col, "text": self.text_col, "id": self.id_col}}

    def keys(self) -> list[str]:
        return [k for k, _ in self._index]

    def iter_samples(self, keys: Iterable[str] | None = None) -> Iterator[Sample | SkippedSample]:
        for key, i in self._index if keys is None else in_key_order(self._index, keys, self._pos):
            try:
                yield self._load(key, i)
            except InputError as e:
                yield SkippedSample(key, str(e))

    def _load(self, key: str, i: int) -> Sample:
        line, row = self._rows[i]
        if not isinstance(row, dict):
            raise InputError(row)
        if i in self._dups:
            raise InputError(f"line {line}: {self._dups[i]}")
        image = row.get(self.image_col)
        if image in (None, ""):
            raise InputError(f"line {line}: no image path in column {self.image_col!r}")
        path = Path(str(image)).expanduser()
        path = path if path.is_absolute() else self.path.parent / path
        question = row.get(self.text_col) if self.text_col else None
        try:
            question = check_question(question if question not in (None, "") else self.default_question or "")
            return Sample(key, question, load_image(path), None, image_path=str(path))
        except InputError as e:
            raise InputError(f"line {line}: {e}") from None


def open_batch_input(path: str | os.PathLike, question: str | None = None, columns: str | dict | None = None
                     ) -> EvalDataset:
    """``rea2seg batch``'s INPUT: a folder of images (one ``question`` for all), a ``.csv`` / ``.jsonl`` of image
    path + question (+ id), or a ``.parquet`` file or folder (image and question columns; masks, if any, are not
    read)."""
    root = Path(path).expanduser()
    cols = parse_column_mapping(columns) if isinstance(columns, str) or columns is None else dict(columns)
    if not root.exists():
        raise InputError(f"input not found: {root}; give a folder of images, a .csv/.jsonl of image + question, "
                         f"or a .parquet file/folder")
    parquet = [root] if root.is_file() and root.suffix.lower() == ".parquet" else \
        sorted(root.rglob("*.parquet")) if root.is_dir() else []
    if root.is_file() and root.suffix.lower() in TABLE_SUFFIXES:
        return QuestionTable(root, question, cols)
    if parquet:
        if question:
            raise InputError("--question is for a folder of images (or rows of a CSV/JSONL without one); a parquet "
                             "set brings its own questions (map the column with --columns text=NAME)")
        files, split = choose_parquet_files(root, parquet, None) if root.is_dir() else (parquet, None)
        return ParquetDataset(files, split, parquet_copy(files[0]).name, cols, "first", False, targets=False)
    if root.is_file():
        raise InputError(f"{root} is not a folder, .csv, .jsonl or .parquet; for one image use `rea2seg segment`")
    if not question:
        raise InputError("a folder of images needs --question (the same question for every image); for one "
                         "question per image give a CSV/JSONL with image and question columns")
    if cols:
        raise InputError("--columns applies to a CSV/JSONL or parquet input, not to a folder of images")
    return ImageFolder(root, question)


# ---- the work -----------------------------------------------------------------------------------------------------

@dataclass
class BatchWork(SegmentWork):
    """One sample of ``rea2seg batch``: the answer's JSON, its mask PNG and (``overlays``) an overlay PNG."""

    overlays: bool = False
    desc = "batch"

    def outcome(self, sample: Sample, result, seconds: float) -> Outcome:
        paths = {"mask_path": f"{MASKS_DIR}/{sample.id}.png"}
        files = {paths["mask_path"]: png_bytes(result.mask)}
        if self.overlays:
            paths["overlay_path"] = f"{OVERLAYS_DIR}/{sample.id}.png"
            files[paths["overlay_path"]] = png_bytes(overlay(result.image, result.mask))
        return Outcome(result.to_json(id=sample.id, image=sample.image_path, **paths), files)

    def postfix(self, record: dict) -> str:
        score = record.get("score")
        return "skipped" if "skipped" in record else "unscored" if score is None else f"score {score:.3f}"


def run_batch(pipe, source: EvalDataset, out_dir: str | os.PathLike, *, top_k: int = 3, mode: str | None = None,
              merge: bool = False, overlays: bool = False, limit: int | None = None, force: bool = False,
              model_info: dict | None = None, progress: bool = True,
              pipeline_factory: Callable[[], object] | None = None, ray=None) -> dict:
    """Segment every sample of ``source`` (``open_batch_input``) into ``out_dir``, resuming a previous run there
    (done ids are skipped). pipe: a ``Rea2Seg``, or None with ``pipeline_factory`` (called only if something is left
    to do; on Ray, once per actor). ray: a ``ray_runner.RayOptions``. Returns the summary (also ``summary.json``)."""
    out = Path(out_dir)
    keys = select_keys(source, limit)
    run_info = {"batch": source.identity(), "model": model_info or {}, "top_k": top_k, "mode": mode,
                "merge": merge, "overlays": overlays}
    make_out_dir(out)
    t0 = time.monotonic()
    with exclusive(out):
        prepare_out_dir(out, run_info, force, (RUN_FILE, RESULTS_FILE, SUMMARY_FILE), (MASKS_DIR, OVERLAYS_DIR))
        log = ResultLog(out / RESULTS_FILE)
        records = log.load()
        before = sum(1 for k in keys if k in records)
        work = BatchWork(top_k=top_k, mode=mode, merge=merge, overlays=overlays)
        interrupted = run_samples(source, keys, out, log, records, work, pipe, pipeline_factory, progress, ray)
        summary = batch_summary([records[k] for k in keys if k in records], len(keys), before,
                                time.monotonic() - t0)
        summary.update({"input": source.identity(), "model": model_info or {},
                        "ray": None if ray is None else {"address": ray.address,
                                                         "actors": [ray.discovery_actors, ray.scorer_actors]}})
        write_json(out / SUMMARY_FILE, summary)
    if interrupted:
        raise_interrupted(summary["n_done"] + summary["n_skipped"], len(keys))
    return summary


def batch_summary(records: list[dict], n_selected: int, n_before: int, seconds: float) -> dict:
    done = [r for r in records if "skipped" not in r]
    scores = [r["score"] for r in done if r.get("score") is not None]
    new = len(records) - n_before
    return {"n_selected": n_selected, "n_done": len(done), "n_skipped": len(records) - len(done),
            "n_left": n_selected - len(records), "complete": len(records) == n_selected,
            "n_this_run": new, "seconds_this_run": round(seconds, 2),
            "samples_per_second": round(new / seconds, 4) if new and seconds > 0 else None,
            "mean_score": round(float(np.mean(scores)), 4) if scores else None,
            "n_empty": sum(1 for r in done if not r.get("mask_area")),
            "warnings": sorted({r["warning"] for r in done if r.get("warning")}),
            "skipped": [{"id": r["id"], "reason": r["skipped"]} for r in records if "skipped" in r]}
