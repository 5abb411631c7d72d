"""``rea2seg models``: list the presets and whether their files are present, download them, check them."""
from __future__ import annotations

import sys
from pathlib import Path

from ..errors import Rea2SegError
from ..models.download import SAM_CHECKPOINTS, checkpoint_problem, download_sam, find_sam_checkpoint, models_home
from ..models.lisa import is_lisa_source
from ..presets import PRESETS, get_preset


def register_cli(subparsers) -> None:
    """Add the ``models`` sub-command to the top-level CLI's subparsers."""
    mod = subparsers.add_parser("models", help="list, download or check model files")
    msub = mod.add_subparsers(dest="models_command", metavar="{list,download,check}", required=True)
    msub.add_parser("list", help="presets and whether their files are present")
    dl = msub.add_parser("download", help="download presets, SAM kinds (vit_h/vit_l/vit_b) or hub ids (VLMs, SAM 2.1, "
                                          "SAM 3)")
    dl.add_argument("names", nargs="+",
                    help="preset name, SAM kind or Hugging Face id (e.g. facebook/sam2.1-hiera-large)")
    ck = msub.add_parser("check", help="check that a preset's (or the named) models are present, and that SAM "
                                       "checkpoints are the published files (full SHA-256)")
    ck.add_argument("names", nargs="*", help="SAM kinds / files / SAM 2.1 and SAM 3 ids, or VLM ids / dirs (default: "
                                             "the preset's)")
    ck.add_argument("--preset", default=None, help="preset to check (default: default)")
    ck.add_argument("--device", default="cpu", help="device for the tiny-random load check")
    mod.set_defaults(func=cmd_models)


def _preset_targets(name: str) -> list[tuple[str, str]]:
    p = get_preset(name)
    out = [("vlm", p.vlm)] + ([("sam", p.sam)] if p.sam else [])  # "": the generator's own SAM
    if p.scorer:
        out.append(("scorer", p.scorer))
    return out


def _check_one(kind: str, source: str) -> tuple[bool, str]:
    from ..models.lisa import clip_dir_of
    from ..models.sam import resolve_sam_path
    from ..models.segmenter import resolve_segmenter_dir

    try:
        if kind == "sam":
            return True, str(resolve_segmenter_dir(source) or resolve_sam_path(source, download=False))
        path = _vlm_dir(source)
        if is_lisa_source(source):  # a LISA-format generator also needs the CLIP tower it names
            return True, f"{path} (CLIP: {clip_dir_of(path)})"
        return True, str(path)
    except Rea2SegError as e:
        return False, str(e)


def _vlm_dir(source: str):
    """A VLM's or a LISA-format generator's local directory (ModelNotFoundError if absent)."""
    from ..models.lisa import resolve_lisa_dir
    from ..models.vlm import resolve_vlm_dir

    return resolve_lisa_dir(source) if is_lisa_source(source) else resolve_vlm_dir(source)


def _is_segmenter_name(name: str) -> bool:
    """A SAM v1 kind or file, a SAM 2.1 / SAM 3 hub id, or a directory holding one."""
    from ..models.segmenter import backend_of_dir, is_hub_segmenter

    if Path(name).expanduser().is_dir():
        try:
            backend_of_dir(Path(name).expanduser())
            return True
        except Rea2SegError:
            return False
    return name in SAM_CHECKPOINTS or name.endswith((".pth", ".safetensors")) or is_hub_segmenter(name)


def cmd_models(args) -> int:
    from ..models.segmenter import download_segmenter, is_hub_segmenter
    from ..models.vlm import download_vlm
    from ..testing import tiny_models_dir, tiny_preset_models

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
                    p = PRESETS[name]
                    vlm = tiny_preset_models(p.vlm, p.sam, p.scorer, tiny_models_dir())[0]
                    print(f"{name}: built in {vlm.parent.parent}")
            elif name in SAM_CHECKPOINTS or is_hub_segmenter(name):
                targets = [("sam", name)]
            else:
                targets = [("vlm", name)]
            for kind, source in targets:
                if kind == "sam" and is_hub_segmenter(source):
                    ok, where = _check_one(kind, source)
                    print(f"{source}: {where} (already there)" if ok else f"{source}: {download_segmenter(source)}")
                elif kind == "sam":
                    print(f"{source}: {download_sam(source)}")
                else:
                    ok, where = _check_one(kind, source)
                    print(f"{source}: {where} (already there)" if ok else f"{source}: {download_vlm(source)}")
        return 0
    # check
    if args.preset and get_preset(args.preset).random_weights:
        from ..pipeline import Rea2Seg
        pipe = Rea2Seg.from_preset(args.preset, device=args.device)
        st = pipe.status()
        print(f"{args.preset}: ok  vlm {st['vlm']}  {st['segmenter']['backend']} {st['sam']}  scorer {st['scorer']}  "
              f"device {st['device']}  (random weights: plumbing checks only)")
        return 0
    targets = _preset_targets(args.preset or "default") if not args.names else \
        [("sam" if _is_segmenter_name(n) else "vlm", n) for n in args.names]
    problems = 0
    for kind, source in targets:
        ok, where = _check_one(kind, source)
        line = f"ok {where}" if ok else f"MISSING: {where}"
        if ok and kind == "sam" and not Path(where).is_dir():  # SAM 2.1 / SAM 3 directories: hub-verified files
            ok, line = _verify_sam(Path(where))
        print(f"{kind:6} {source}: {line}")
        problems += not ok
    return 0 if not problems else 3


def _verify_sam(path: Path) -> tuple[bool, str]:
    """A SAM file under a published name must be that file (size and full SHA-256). A mismatch is reported, and
    the file is left alone: it may be the user's own."""
    ck = find_sam_checkpoint(path.name)
    if ck is None:
        return True, f"ok {path} (not a published file name: nothing to verify it against)"
    print(f"verifying {path} (sha256 of {ck.size / 1e9:.1f} GB)...", file=sys.stderr, flush=True)
    problem = checkpoint_problem(path, ck)
    if problem is None:
        return True, f"ok {path} (sha256 verified)"
    return False, (f"WARNING: {path} is not the published {ck.filename} ({problem}); it was left as it is. If it is "
                   f"not your own file, delete it and run `rea2seg models download {ck.kind}`")
