"""The ``rea2seg`` command line: segment, eval, models."""
from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

from . import __version__
from .errors import InputError, OutputExistsError, Rea2SegError


def _stderr_progress(quiet: bool):
    if quiet:
        return None
    last = {}

    def progress(stage: str, done: int, total: int) -> None:
        if last.get(stage) == done:
            return
        last[stage] = done
        print(f"[rea2seg] {stage} {done}/{total}", file=sys.stderr, flush=True)
    return progress


# ---- segment ---------------------------------------------------------------------------------------------------------

def _default_out(image: str, suffix: str) -> Path:
    return Path.cwd() / f"{Path(image).stem}_{suffix}.png"


def cmd_segment(args) -> int:
    from .cli_common import build_pipeline
    from .images import check_aspect_ratio, load_image, save_image, save_mask
    from .questions import clean_question
    from .render import heatmap_overlay, overlay

    if args.top_k < 1:
        raise InputError(f"--top-k must be at least 1, got {args.top_k}")
    mask_path = Path(args.output) if args.output else _default_out(args.image, "mask")
    overlay_path = Path(args.overlay) if args.overlay else _default_out(args.image, "overlay")
    outputs = [mask_path, overlay_path] + ([Path(args.heatmap)] if args.heatmap else [])
    for p in outputs:  # fail before any model work, and write nothing
        if p.exists() and not args.force:
            raise OutputExistsError(f"{p} exists; pass --force to replace it, or choose another name with -o/--overlay")
        if not p.parent.exists():
            raise InputError(f"output folder {p.parent} does not exist; create it first")
    clean_question(args.question)
    image = check_aspect_ratio(load_image(args.image))
    pipe = build_pipeline(args)
    result = pipe.segment(image, args.question, top_k=args.top_k, mode=args.mode, merge=args.merge,
                          progress=_stderr_progress(args.quiet))
    save_mask(mask_path, result.mask, overwrite=args.force)
    save_image(overlay_path, overlay(image, result.mask), overwrite=args.force)
    if args.heatmap:
        save_image(args.heatmap, heatmap_overlay(image, result.heatmap), overwrite=args.force)
    if result.warning:
        print(f"[rea2seg] warning: {result.warning}", file=sys.stderr)
    if args.json:
        print(json.dumps(result.to_json(mask_path=str(mask_path), overlay_path=str(overlay_path),
                                        **({"heatmap_path": str(args.heatmap)} if args.heatmap else {})),
                         ensure_ascii=False))
    else:
        score = "unscored" if result.score != result.score else f"{result.score:.3f}"
        print(f"mask: {mask_path}  overlay: {overlay_path}  score: {score}  box: "
              f"{[round(float(v)) for v in result.box]}")
    return 0


# ---- models ----------------------------------------------------------------------------------------------------------

def _preset_targets(name: str) -> list[tuple[str, str]]:
    from .presets import get_preset
    p = get_preset(name)
    out = [("vlm", p.vlm), ("sam", p.sam)]
    if p.scorer:
        out.append(("scorer", p.scorer))
    return out


def _check_one(kind: str, source: str) -> tuple[bool, str]:
    from .loading import _resolve_sam_path, resolve_vlm_dir
    try:
        path = resolve_vlm_dir(source) if kind in ("vlm", "scorer") else _resolve_sam_path(source, download=False)
        return True, str(path)
    except Rea2SegError as e:
        return False, str(e)


def cmd_models(args) -> int:
    from .loading import SAM_CHECKPOINTS, download_sam, download_vlm, models_home, resolve_vlm_dir
    from .presets import PRESETS, get_preset, tiny_models_dir

    if args.models_command == "list":
        print(f"models folder: {models_home()}  (set REA2SEG_MODELS_DIR to change it)")
        for p in PRESETS.values():
            print(f"\n{p.name}: {p.description}")
            if p.random_weights:
                print(f"  built offline into {tiny_models_dir()}")
                continue
            for kind, source in _preset_targets(p.name):
                ok, where = _check_one(kind, source)
                print(f"  {kind:6} {source:32} {'ok  ' + where if ok else 'missing'}")
        return 0
    if args.models_command == "download":
        for name in args.names:
            if name in PRESETS:
                targets = _preset_targets(name) if not PRESETS[name].random_weights else []
                if PRESETS[name].random_weights:
                    from .tiny import ensure_tiny_models
                    print(f"tiny-random: built in {ensure_tiny_models(tiny_models_dir())[0].parent.parent}")
            elif name in SAM_CHECKPOINTS:
                targets = [("sam", name)]
            else:
                targets = [("vlm", name)]
            for kind, source in targets:
                if kind == "sam":
                    print(f"{source}: {download_sam(source)}")
                else:
                    try:
                        print(f"{source}: {resolve_vlm_dir(source)} (already there)")
                    except Rea2SegError:
                        print(f"{source}: {download_vlm(source)}")
        return 0
    # check
    if args.preset and get_preset(args.preset).random_weights:
        from .pipeline import Rea2Seg
        pipe = Rea2Seg.from_preset(args.preset, device=args.device)
        st = pipe.status()
        print(f"tiny-random: ok  vlm {st['vlm']}  sam {st['sam']}  device {st['device']}  (random weights: "
              f"plumbing checks only)")
        return 0
    targets = _preset_targets(args.preset or "default") if not args.names else \
        [("sam" if n in SAM_CHECKPOINTS or n.endswith((".pth", ".safetensors")) else "vlm", n) for n in args.names]
    missing = 0
    for kind, source in targets:
        ok, where = _check_one(kind, source)
        print(f"{kind:6} {source}: {'ok ' + where if ok else 'MISSING: ' + where}")
        missing += not ok
    return 0 if not missing else 3


# ---- main ------------------------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from .cli_common import add_model_arguments

    parser = argparse.ArgumentParser(prog="rea2seg", description="Reasoning segmentation: image + question -> mask.")
    parser.add_argument("--version", action="version", version=f"rea2seg {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="{segment,eval,models}")

    seg = sub.add_parser("segment", help="segment the region of IMAGE that answers QUESTION",
                         description="Segment the region of IMAGE that answers QUESTION; writes the mask PNG "
                                     "(0/255, the image's size) and an overlay PNG.")
    seg.add_argument("image", help="image file (PNG, JPEG, WebP, TIFF, BMP)")
    seg.add_argument("question", help='what to segment, e.g. "the utensil you would spread butter with"')
    add_model_arguments(seg)
    seg.add_argument("--top-k", type=int, default=3, help="how many ranked candidates to report (default 3)")
    seg.add_argument("--mode", choices=("yesno", "reasoning", "comparative"), default=None,
                     help="scoring mode (default: the preset's, yesno)")
    seg.add_argument("--merge", action="store_true", help="output the union of the top-k masks (multi-object)")
    seg.add_argument("-o", "--output", default=None, metavar="MASK.png",
                     help="mask PNG (default: ./<image stem>_mask.png)")
    seg.add_argument("--overlay", default=None, metavar="OVERLAY.png",
                     help="overlay PNG (default: ./<image stem>_overlay.png)")
    seg.add_argument("--heatmap", default=None, metavar="HEAT.png", help="also save the attention heat map")
    seg.add_argument("--json", action="store_true", help="print one JSON object with the result")
    seg.add_argument("--force", action="store_true", help="overwrite existing output files")
    seg.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    seg.set_defaults(func=cmd_segment)

    try:
        from .evaluate import register_cli
        register_cli(sub)
    except ImportError:  # the eval harness ships with the engine; this only guards partial installs
        pass

    mod = sub.add_parser("models", help="list, download or check model files")
    msub = mod.add_subparsers(dest="models_command", metavar="{list,download,check}", required=True)
    msub.add_parser("list", help="presets and whether their files are present")
    dl = msub.add_parser("download", help="download presets, SAM kinds (vit_h/vit_l/vit_b) or hub ids")
    dl.add_argument("names", nargs="+", help="preset name, SAM kind or Hugging Face id")
    ck = msub.add_parser("check", help="check that a preset's (or the named) models are present and loadable")
    ck.add_argument("names", nargs="*", help="SAM kinds / files or VLM ids / dirs (default: the preset's)")
    ck.add_argument("--preset", default=None, help="preset to check (default: default)")
    ck.add_argument("--device", default="cpu", help="device for the tiny-random load check")
    mod.set_defaults(func=cmd_models)
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
