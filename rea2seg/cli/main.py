"""The ``rea2seg`` command line: ``segment`` (here), ``batch`` (``cli/batch.py``), ``eval`` (``cli/eval.py``),
``models`` (``cli/models.py``)."""
from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

from .. import __version__
from ..config import SCORING_MODES
from ..errors import InputError, OutputExistsError, Rea2SegError


# ---- segment ---------------------------------------------------------------------------------------------------------

def _output_paths(args) -> tuple[Path, Path, Path | None]:
    """Mask, overlay and (if asked for) heat-map paths. Unnamed outputs go beside the mask (``-o``), else in the
    current folder, as ``<image stem>_overlay.png`` / ``_heatmap.png``."""
    stem = Path(args.image).stem
    mask = Path(args.output) if args.output else Path.cwd() / f"{stem}_mask.png"
    overlay = Path(args.overlay) if args.overlay else mask.parent / f"{stem}_overlay.png"
    heatmap = None
    if args.heatmap:
        heatmap = mask.parent / f"{stem}_heatmap.png" if args.heatmap is True else Path(args.heatmap)
    return mask, overlay, heatmap


def cmd_segment(args) -> int:
    from ..images import save_image, save_mask
    from ..inputs import check_image, check_mode, check_question, check_top_k
    from ..render import heatmap_overlay, overlay
    from ..types import format_score
    from .common import build_pipeline, stderr_progress

    check_top_k(args.top_k)
    check_mode(args.mode)
    mask_path, overlay_path, heatmap_path = _output_paths(args)
    outputs = [mask_path, overlay_path] + ([heatmap_path] if heatmap_path else [])
    for p in outputs:  # fail before any model work, and write nothing
        if p.exists() and not args.force:
            raise OutputExistsError(f"{p} exists; pass --force to replace it, or choose another name with -o/--overlay")
        if not p.parent.exists():
            raise InputError(f"output folder {p.parent} does not exist; create it first")
    check_question(args.question)
    image = check_image(args.image)
    pipe = build_pipeline(args)
    result = pipe.segment(image, args.question, top_k=args.top_k, mode=args.mode, merge=args.merge,
                          progress=stderr_progress(args.quiet))
    save_mask(mask_path, result.mask, overwrite=args.force)
    save_image(overlay_path, overlay(image, result.mask), overwrite=args.force)
    if heatmap_path:
        save_image(heatmap_path, heatmap_overlay(image, result.heatmap), overwrite=args.force)
    if result.warning:
        print(f"[rea2seg] warning: {result.warning}", file=sys.stderr)
    if args.json:
        print(json.dumps(result.to_json(mask_path=str(mask_path), overlay_path=str(overlay_path),
                                        **({"heatmap_path": str(heatmap_path)} if heatmap_path else {})),
                         ensure_ascii=False))
    else:
        print(f"mask: {mask_path}  overlay: {overlay_path}  score: {format_score(result.score)}  box: "
              f"{[round(float(v)) for v in result.box]}")
    return 0


# ---- main ------------------------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from .batch import register_cli as register_batch
    from .common import add_model_arguments
    from .eval import register_cli as register_eval
    from .models import register_cli as register_models
    from .train import register_cli as register_train

    parser = argparse.ArgumentParser(prog="rea2seg", description="Reasoning segmentation: image + question -> mask.")
    parser.add_argument("--version", action="version", version=f"rea2seg {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="{segment,batch,eval,train-scorer,models}")

    seg = sub.add_parser("segment", help="segment the region of IMAGE that answers QUESTION",
                         description="Segment the region of IMAGE that answers QUESTION; writes the mask PNG "
                                     "(0/255, the image's size) and an overlay PNG.")
    seg.add_argument("image", help="image file (PNG, JPEG, WebP, TIFF, BMP)")
    seg.add_argument("question", help='what to segment, e.g. "the utensil you would spread butter with"')
    add_model_arguments(seg)
    seg.add_argument("--top-k", type=int, default=3, help="how many ranked candidates to report (default 3)")
    seg.add_argument("--mode", choices=SCORING_MODES, default=None,
                     help="scoring mode (default: the preset's, yesno)")
    seg.add_argument("--merge", action="store_true", help="output the union of the top-k masks (multi-object)")
    seg.add_argument("-o", "--output", default=None, metavar="MASK.png",
                     help="mask PNG (default: ./<image stem>_mask.png)")
    seg.add_argument("--overlay", default=None, metavar="OVERLAY.png",
                     help="overlay PNG (default: <image stem>_overlay.png beside the mask)")
    seg.add_argument("--heatmap", nargs="?", const=True, default=None, metavar="HEAT.png",
                     help="also save the attention heat map (default name: <image stem>_heatmap.png beside the mask)")
    seg.add_argument("--json", action="store_true", help="print one JSON object with the result")
    seg.add_argument("--force", action="store_true", help="overwrite existing output files")
    seg.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    seg.set_defaults(func=cmd_segment)

    register_batch(sub)
    register_eval(sub)
    register_train(sub)
    register_models(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    if not sys.stderr.isatty():  # progress bars only on a terminal: logs and pipes get the one-line messages
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except Rea2SegError as e:
        if args.debug:
            traceback.print_exc()
        print(f"rea2seg: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("rea2seg: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # an unexpected failure: one line, the traceback only with --debug
        if args.debug:
            traceback.print_exc()
        print(f"rea2seg: internal error: {e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''} "
              f"(run with --debug for the traceback; please report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
