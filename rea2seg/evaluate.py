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

import contextlib
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from .cli_common import add_model_arguments, build_pipeline
from .datasets import EvalDataset, Sample, SkippedSample, open_dataset, parse_column_mapping
from .errors import InputError, OutputExistsError
from .images import atomic_write_bytes, read_mask, save_mask
from .metrics import CONVENTION, SampleResult, category_order, intersection_union, iou_from, summarize

RUN_FILE, RESULTS_FILE, SUMMARY_FILE, TABLE_FILE, MASKS_DIR = "run.json", "results.jsonl", "summary.json", \
    "table.md", "masks"
OUTPUT_FILES = (RUN_FILE, RESULTS_FILE, SUMMARY_FILE, TABLE_FILE)


# ---- the append-only result log ---------------------------------------------------------------------------------

class ResultLog:
    """JSONL with one record per sample, written with a single ``write`` + ``fsync`` per line, so a killed run loses
    at most the line being written. ``load`` drops a partial last line; a corrupt line elsewhere is an error."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, dict]:
        if not self.path.exists():
            return {}
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):  # the tail of a line cut by a kill: drop it so the sample is redone
            with open(self.path, "r+b") as f:
                f.truncate(end)
            data = data[:end]
        records: dict[str, dict] = {}
        for n, line in enumerate(data.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                key = rec["id"]
            except (ValueError, KeyError, TypeError):
                raise InputError(f"{self.path} line {n} is corrupt; delete that line or pass --force to start "
                                 f"over") from None
            records.setdefault(key, rec)
        return records

    def append(self, record: dict) -> None:
        data = (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _exclusive(out_dir: Path) -> Iterator[None]:
    """One writer per output folder (an OS lock, released automatically if the process dies)."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory lock; running two evals on one folder is the user's call
        yield
        return
    fd = os.open(out_dir / ".lock", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise InputError(f"another `rea2seg eval` is writing to {out_dir}; wait for it or choose another "
                             f"--out") from None
        yield
    finally:
        os.close(fd)


def _write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode(), overwrite=True)


def make_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"output folder {out_dir} is a file; give a folder")
    out_dir.mkdir(parents=True, exist_ok=True)


def prepare_out_dir(out_dir: Path, run_info: dict, force: bool, files: Sequence[str] = OUTPUT_FILES,
                    dirs: Sequence[str] = (MASKS_DIR,)) -> None:
    """Create ``out_dir`` for a run described by ``run_info``; resume if it holds the same run, refuse otherwise
    (unless ``force``, which deletes this tool's ``files`` and ``dirs`` there, nothing else, and starts over)."""
    make_out_dir(out_dir)
    run_path = out_dir / RUN_FILE
    ours = [out_dir / f for f in files if (out_dir / f).exists()]
    if force:
        for p in ours:
            p.unlink()
        for d in dirs:
            if (out_dir / d).is_dir():
                shutil.rmtree(out_dir / d)
    elif run_path.exists():
        try:
            previous = json.loads(run_path.read_text())
        except ValueError:
            raise InputError(f"{run_path} is corrupt; pass --force to start over") from None
        diff = [k for k in sorted(set(previous) | set(run_info)) if previous.get(k) != run_info.get(k)]
        if diff:
            raise OutputExistsError(f"{out_dir} holds a run with different settings ({', '.join(diff)}); choose "
                                    f"another --out, or pass --force to delete it and start over")
        return
    elif ours:
        raise OutputExistsError(f"{out_dir} already has {', '.join(p.name for p in ours)} from something else; "
                                f"choose another --out, or pass --force to replace them")
    _write_json(run_path, run_info)


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
    """One JSONL record from a ``SegmentationResult``: the output's (I, U) and every candidate's, ranked."""
    inter, union = intersection_union(result.mask, sample.target)
    cands = result.candidates
    overlaps = [list(intersection_union(cands.masks[i], sample.target)) for i in range(len(cands))]
    rec = _base_record(sample)
    rec.update({
        "output": [inter, union], "iou": round(iou_from(inter, union), 6),
        "candidates": overlaps, "candidate_ious": [round(iou_from(i, u), 6) for i, u in overlaps],
        "scores": [None if math.isnan(s) else round(float(s), 6) for s in cands.scores],
        "sources": list(cands.sources), "mode": getattr(result, "mode", None),
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
    _write_json(out_dir / SUMMARY_FILE, summary)
    atomic_write_bytes(out_dir / TABLE_FILE, table.encode(), overwrite=True)
    return table


# ---- progress -----------------------------------------------------------------------------------------------------

class _Progress:
    """tqdm when installed, else one stderr line per sample with an ETA."""

    def __init__(self, total: int, initial: int, desc: str, enabled: bool = True) -> None:
        self.total, self.done, self.start_done = total, initial, initial
        self.t0 = time.monotonic()
        self.bar = None
        self.enabled = enabled
        if not enabled:
            return
        try:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit="sample", file=sys.stderr,
                            dynamic_ncols=True)
        except ImportError:
            self.desc = desc

    def update(self, postfix: str = "") -> None:
        self.done += 1
        if not self.enabled:
            return
        if self.bar is not None:
            if postfix:
                self.bar.set_postfix_str(postfix, refresh=False)
            self.bar.update(1)
            return
        elapsed = time.monotonic() - self.t0
        rate = elapsed / max(1, self.done - self.start_done)
        eta = rate * (self.total - self.done)
        print(f"{self.desc} {self.done}/{self.total} [{elapsed:.0f}s elapsed, ETA {eta:.0f}s, {rate:.2f} s/sample] "
              f"{postfix}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr, flush=True)


# ---- the three modes ----------------------------------------------------------------------------------------------

def evaluate_pipeline(pipe, dataset: EvalDataset, out_dir: str | os.PathLike, *, top_k: int = 3,
                      limit: int | None = None, mode: str | None = None, merge: bool = False,
                      save_masks: bool = True, force: bool = False, model_info: dict | None = None,
                      method: str = "Rea2Seg", progress: bool = True,
                      pipeline_factory: Callable[[], object] | None = None) -> dict:
    """Run ``pipe.segment`` on every selected sample, appending one record per sample to ``out_dir/results.jsonl``
    (resuming a previous run there), then write ``summary.json`` and ``table.md``. Returns the summary.

    pipe: a ``Rea2Seg`` (or None with ``pipeline_factory``, which is called only if some sample is left to do).
    """
    out = Path(out_dir)
    keys = _select(dataset, limit)
    run_info = {"dataset": dataset.identity(), "model": model_info or {}, "mode": mode, "merge": merge,
                "top_k": top_k if merge else None}
    header = {"dataset": {**dataset.identity(), "notes": dataset.notes}, "split": dataset.split,
              "model": model_info or {}, "method": method, "top_k_reported": top_k}
    ks = sorted({1, top_k})
    make_out_dir(out)
    with _exclusive(out):
        prepare_out_dir(out, run_info, force)
        log = ResultLog(out / RESULTS_FILE)
        records = log.load()
        todo = [k for k in keys if k not in records]
        if save_masks:
            (out / MASKS_DIR).mkdir(exist_ok=True)
        pipe = ensure_pipeline(pipe, pipeline_factory, bool(todo))

        def work(sample: Sample) -> dict:
            t0 = time.perf_counter()
            result = pipe.segment(sample.image, sample.question, top_k=top_k, mode=mode, merge=merge)
            rec = pipeline_record(sample, result, time.perf_counter() - t0)
            if save_masks:
                save_mask(out / MASKS_DIR / f"{sample.id}.png", result.mask, overwrite=True)
            return rec

        interrupted = run_samples(dataset, keys, log, records, work, "eval", progress)
        summary = build_summary(records, keys, ks, header)
        _write_reports(out, summary, method)
    if interrupted:
        print(f"interrupted: {summary['n_samples'] + summary['n_skipped']}/{len(keys)} samples done; run the same "
              f"command again to resume", file=sys.stderr)
        raise KeyboardInterrupt
    return summary


def ensure_pipeline(pipe, factory: Callable[[], object] | None, needed: bool):
    """``pipe``, or one built by ``factory`` (only when some sample is left to do, so a finished run loads nothing)."""
    if pipe is None and needed:
        pipe = factory() if factory else None
        if pipe is None:
            raise InputError("no pipeline given")
    return pipe


def run_samples(dataset: EvalDataset, keys: Sequence[str], log: ResultLog, records: dict[str, dict],
                work: Callable[[Sample], dict], desc: str, progress: bool) -> bool:
    """Process the ``keys`` not yet in ``records`` with ``work``, appending each record to ``log`` as it is made.
    Unusable samples, and samples the pipeline refuses with an ``InputError``, are recorded as skipped with the
    reason. Returns True if interrupted by Ctrl-C (everything recorded so far is kept)."""
    todo = [k for k in keys if k not in records]
    bar = _Progress(len(keys), len(keys) - len(todo), desc, progress)
    try:
        for sample in dataset.iter_samples(todo):
            if isinstance(sample, SkippedSample):
                rec = {"id": sample.id, "skipped": sample.reason}
            else:
                try:
                    rec = work(sample)
                except InputError as e:  # e.g. a degenerate image: counted, not fatal
                    rec = {"id": sample.id, "skipped": f"pipeline refused it: {e}"}
            if "skipped" in rec:
                _warn(f"skipped {rec['id']}: {rec['skipped']}")
            log.append(rec)
            records[rec["id"]] = rec
            bar.update(f"IoU {rec['iou']:.3f}" if "iou" in rec else "")
    except KeyboardInterrupt:
        return True
    finally:
        bar.close()
    return False


def _select(dataset: EvalDataset, limit: int | None) -> list[str]:
    keys = dataset.keys()
    if limit is not None:
        if limit < 1:
            raise InputError(f"--limit must be at least 1, got {limit}")
        keys = keys[:limit]
    return keys


def score_predictions(dataset: EvalDataset, pred_dir: str | os.PathLike, *, limit: int | None = None,
                      progress: bool = False) -> tuple[dict, list[dict]]:
    """Score existing masks ``pred_dir/<sample id>.png`` (non-zero = foreground) with the same metric code.
    A missing PNG counts as an empty prediction and is listed; a PNG of the wrong size is an error."""
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise InputError(f"predictions folder not found: {pred_dir}; it must hold <sample id>.png masks")
    keys = _select(dataset, limit)
    records: dict[str, dict] = {}
    missing: list[str] = []
    bar = _Progress(len(keys), 0, "score", progress)
    for sample in dataset.iter_samples(keys):
        if isinstance(sample, SkippedSample):
            _warn(f"skipped {sample.id}: {sample.reason}")
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
        _warn(f"{len(missing)} samples have no prediction PNG in {pred_dir} and count as empty masks "
              f"(first: {missing[0]}.png)")
    header = {"dataset": {**dataset.identity(), "notes": dataset.notes}, "split": dataset.split,
              "predictions": str(pred_dir.resolve()), "method": pred_dir.name}
    summary = build_summary(records, keys, (1,), header)
    summary["missing_predictions"] = missing
    return summary, [records[k] for k in keys if k in records]


# ---- CLI ----------------------------------------------------------------------------------------------------------

def register_cli(subparsers) -> None:
    """Add the ``eval`` sub-command to the top-level CLI's subparsers."""
    p = subparsers.add_parser(
        "eval", help="evaluate on ReasonSeg / ReasonSeg-SGDR (gIoU, cIoU, Top-k), or score existing masks",
        description="Evaluate on ReasonSeg or ReasonSeg-SGDR with LISA's gIoU/cIoU. Runs the pipeline (resumable: "
                    "re-run with the same --out to continue), or with --predictions scores existing masks, or with "
                    "--export-scoring writes a mask-scoring training set.")
    p.add_argument("dataset", help="ReasonSeg folder (LISA layout: <name>.jpg + <name>.json) or parquet file/folder")
    p.add_argument("--split", default=None, help="val, test, ... (default: the folder given, or val)")
    p.add_argument("--kind", choices=("auto", "labelme", "parquet"), default="auto", help="dataset layout")
    p.add_argument("--sgdr", action="store_true", help="ReasonSeg-SGDR: every sample needs a category; report per "
                                                        "category")
    p.add_argument("--columns", default=None, metavar="ROLE=COL,...",
                   help="column mapping for parquet data (roles: image, text, mask, shapes, id, category, "
                        "is_sentence); for LabelMe JSON only category=KEY")
    p.add_argument("--texts", choices=("first", "all"), default="first",
                   help="first: LISA's val/test protocol (text[0]); all: one sample per text")
    p.add_argument("--limit", type=int, default=None, help="only the first N samples")
    p.add_argument("--top-k", type=int, default=3, help="also report the Top-k oracle (default 3)")
    p.add_argument("--mode", choices=("yesno", "reasoning", "comparative"), default=None,
                   help="scoring mode (default: the preset's)")
    p.add_argument("--merge", action="store_true", help="output the union of the top-k candidates")
    p.add_argument("--out", default=None, help="output folder (required unless --predictions)")
    p.add_argument("--force", action="store_true", help="replace results already in --out instead of resuming")
    p.add_argument("--no-masks", action="store_true", help="do not save predicted masks under OUT/masks")
    p.add_argument("--name", default=None, help="method name in the table")
    p.add_argument("--predictions", default=None, metavar="PRED_DIR",
                   help="score existing masks PRED_DIR/<sample id>.png (non-zero = foreground) instead of running "
                        "the pipeline")
    p.add_argument("--export-scoring", default=None, metavar="DIR",
                   help="write a mask-scoring training set (candidates, IoUs, rendered prompts, target scores) to "
                        "DIR instead of evaluating")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object instead of the table")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_arguments(p)
    p.set_defaults(func=run_cli)


def _model_info(args) -> dict:
    """The model choice recorded in run.json (a resumed run must use the same)."""
    info = {k: getattr(args, k, None) for k in ("preset", "vlm", "sam", "sam_kind", "scorer", "dtype")}
    return {k: v for k, v in info.items() if v is not None}


def run_cli(args) -> int:
    """Handler of ``rea2seg eval``; returns the exit code. User errors raise ``InputError``."""
    modes = [m for m in ("predictions", "export_scoring") if getattr(args, m)]
    if len(modes) > 1:
        raise InputError("--predictions and --export-scoring are separate modes; use one")
    if args.top_k < 1:
        raise InputError(f"--top-k must be at least 1, got {args.top_k}")
    dataset = open_dataset(args.dataset, args.split, kind=args.kind, columns=parse_column_mapping(args.columns),
                           texts=args.texts, sgdr=args.sgdr)
    if args.predictions:
        summary, records = score_predictions(dataset, args.predictions, limit=args.limit, progress=not args.quiet)
        table = markdown_table(summary, args.name or summary["method"])
        if args.out:
            out = Path(args.out)
            make_out_dir(out)
            existing = [f for f in (RESULTS_FILE, SUMMARY_FILE, TABLE_FILE) if (out / f).exists()]
            if existing and not args.force:
                raise OutputExistsError(f"{out} already has {', '.join(existing)}; pass --force to replace them")
            lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
            atomic_write_bytes(out / RESULTS_FILE, lines.encode(), overwrite=True)
            _write_json(out / SUMMARY_FILE, summary)
            atomic_write_bytes(out / TABLE_FILE, table.encode(), overwrite=True)
        print(json.dumps(summary, ensure_ascii=False) if args.json else table)
        return 0
    if args.export_scoring:
        from .export import export_scoring_data

        summary = export_scoring_data(None, dataset, args.export_scoring, limit=args.limit, force=args.force,
                                      model_info=_model_info(args), progress=not args.quiet,
                                      pipeline_factory=lambda: build_pipeline(args))
        print(json.dumps(summary, ensure_ascii=False) if args.json else
              f"wrote {summary['n_samples']} samples, {summary['n_candidates']} candidates to "
              f"{args.export_scoring} ({summary['n_skipped']} skipped)")
        return 0
    if not args.out:
        raise InputError("--out DIR is required to run the pipeline (results are written there and resumed from "
                         "there); or pass --predictions PRED_DIR to score existing masks")
    method = args.name or f"Rea2Seg/{args.preset or Path(args.vlm or 'default').name}"
    try:
        summary = evaluate_pipeline(None, dataset, args.out, top_k=args.top_k, limit=args.limit, mode=args.mode,
                                    merge=args.merge, save_masks=not args.no_masks, force=args.force,
                                    model_info=_model_info(args), method=method, progress=not args.quiet,
                                    pipeline_factory=lambda: build_pipeline(args))
    except KeyboardInterrupt:
        return 130
    if args.json:
        print(json.dumps(summary, ensure_ascii=False))
    else:
        print((Path(args.out) / TABLE_FILE).read_text(), end="")
    return 0


__all__ = ["ResultLog", "build_summary", "evaluate_pipeline", "markdown_table", "pipeline_record", "prepare_out_dir",
           "register_cli", "run_cli", "score_predictions"]
