"""``rea2seg eval``: run the pipeline over ReasonSeg / ReasonSeg-SGDR, score existing masks, or export a mask-scoring
training set (the work is in ``rea2seg.eval``)."""
from __future__ import annotations

import functools
import json
from pathlib import Path

from ..config import SCORING_MODES
from ..errors import InputError, OutputExistsError
from .common import add_model_arguments, add_ray_arguments, build_pipeline, model_info, ray_options


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
    p.add_argument("--mode", choices=SCORING_MODES, default=None,
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
    add_ray_arguments(p)
    p.set_defaults(func=run_cli)


def run_cli(args) -> int:
    """Handler of ``rea2seg eval``; returns the exit code. User errors raise ``InputError``."""
    from ..eval.datasets import open_dataset, parse_column_mapping
    from ..eval.evaluate import RESULTS_FILE, SUMMARY_FILE, TABLE_FILE, evaluate_pipeline, markdown_table, \
        score_predictions
    from ..eval.export import export_scoring_data
    from ..eval.runs import make_out_dir, write_json
    from ..images import atomic_write_bytes

    modes = [m for m in ("predictions", "export_scoring") if getattr(args, m)]
    if len(modes) > 1:
        raise InputError("--predictions and --export-scoring are separate modes; use one")
    if args.top_k < 1:
        raise InputError(f"--top-k must be at least 1, got {args.top_k}")
    ray = ray_options(args)
    factory = functools.partial(build_pipeline, args)
    dataset = open_dataset(args.dataset, args.split, kind=args.kind, columns=parse_column_mapping(args.columns),
                           texts=args.texts, sgdr=args.sgdr)
    if args.predictions:
        if ray is not None:
            raise InputError("--predictions scores existing masks without models; --ray does not apply")
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
            write_json(out / SUMMARY_FILE, summary)
            atomic_write_bytes(out / TABLE_FILE, table.encode(), overwrite=True)
        print(json.dumps(summary, ensure_ascii=False) if args.json else table)
        return 0
    if args.export_scoring:
        summary = export_scoring_data(None, dataset, args.export_scoring, limit=args.limit, force=args.force,
                                      model_info=model_info(args), progress=not args.quiet,
                                      pipeline_factory=factory, ray=ray)
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
                                    model_info=model_info(args), method=method, progress=not args.quiet,
                                    pipeline_factory=factory, ray=ray)
    except KeyboardInterrupt:
        return 130
    if args.json:
        print(json.dumps(summary, ensure_ascii=False))
    else:
        print((Path(args.out) / TABLE_FILE).read_text(), end="")
    return 0
