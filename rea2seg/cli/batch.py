"""``rea2seg batch``: segment a folder of images, a CSV/JSONL of image + question, or a parquet set (the work is in
``rea2seg.eval.batch``; on Ray with ``--ray``)."""
from __future__ import annotations

import functools
import json

from ..config import SCORING_MODES
from .common import add_model_arguments, add_ray_arguments, build_pipeline, model_info, ray_options


def register_cli(subparsers) -> None:
    """Add the ``batch`` sub-command to the top-level CLI's subparsers."""
    p = subparsers.add_parser(
        "batch", help="segment many images (folder + one question, CSV/JSONL of image + question, or parquet)",
        description="Segment every image of INPUT into --out: one mask PNG and one JSONL line (the answer's JSON) "
                    "per sample. Re-run the same command to resume; bad rows are reported and skipped, never fatal.")
    p.add_argument("input", help="a folder of images (with --question), a .csv/.jsonl with image and question "
                                 "columns (+ id), or a .parquet file/folder")
    p.add_argument("--question", default=None,
                   help="the question for every image of a folder (or for CSV/JSONL rows without one)")
    p.add_argument("--out", required=True, help="output folder (results.jsonl, masks/, summary.json)")
    p.add_argument("--columns", default=None, metavar="ROLE=COL,...",
                   help="column names when they are not found by name (roles: image, text, id)")
    p.add_argument("--overlays", action="store_true", help="also write OUT/overlays/<id>.png")
    p.add_argument("--top-k", type=int, default=3, help="ranked candidates listed per sample (default 3)")
    p.add_argument("--mode", choices=SCORING_MODES, default=None, help="scoring mode (default: the preset's)")
    p.add_argument("--merge", action="store_true", help="mask = union of the top-k candidates (multi-object)")
    p.add_argument("--limit", type=int, default=None, help="only the first N samples")
    p.add_argument("--force", action="store_true", help="delete an earlier run in --out and start over")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_arguments(p)
    add_ray_arguments(p)
    p.set_defaults(func=run_cli)


def run_cli(args) -> int:
    """Handler of ``rea2seg batch``; returns the exit code. User errors raise ``InputError``."""
    from ..eval.batch import OVERLAYS_DIR, open_batch_input, run_batch
    from ..inputs import check_top_k

    check_top_k(args.top_k)
    ray = ray_options(args)
    source = open_batch_input(args.input, args.question, args.columns)
    try:
        summary = run_batch(None, source, args.out, top_k=args.top_k, mode=args.mode, merge=args.merge,
                            overlays=args.overlays, limit=args.limit, force=args.force,
                            model_info=model_info(args), progress=not args.quiet,
                            pipeline_factory=functools.partial(build_pipeline, args), ray=ray)
    except KeyboardInterrupt:
        return 130
    if args.json:
        print(json.dumps(summary, ensure_ascii=False))
        return 0
    rate = f", {summary['samples_per_second']:.2f} samples/s" if summary["samples_per_second"] else ""
    print(f"batch: {summary['n_done']} segmented, {summary['n_skipped']} skipped, {summary['n_left']} left "
          f"({summary['n_this_run']} this run{rate}); masks in {args.out}/masks"
          + (f", overlays in {args.out}/{OVERLAYS_DIR}" if args.overlays else "")
          + f"; results in {args.out}/results.jsonl")
    for s in summary["skipped"][:10]:
        print(f"  skipped {s['id']}: {s['reason']}")
    if summary["n_skipped"] > 10:
        print(f"  ... {summary['n_skipped'] - 10} more in {args.out}/summary.json")
    for w in summary["warnings"]:
        print(f"warning: {w}")
    return 0
