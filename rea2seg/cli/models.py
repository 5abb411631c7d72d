"""``rea2seg models``: list the presets and whether their files are present, download them, check them."""
from __future__ import annotations

from ..errors import Rea2SegError
from ..models.download import SAM_CHECKPOINTS, download_sam, models_home
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
    ck = msub.add_parser("check", help="check that a preset's (or the named) models are present and loadable")
    ck.add_argument("names", nargs="*", help="SAM kinds / files / SAM 2.1 and SAM 3 ids, or VLM ids / dirs (default: "
                                             "the preset's)")
    ck.add_argument("--preset", default=None, help="preset to check (default: default)")
    ck.add_argument("--device", default="cpu", help="device for the tiny-random load check")
    mod.set_defaults(func=cmd_models)


def _preset_targets(name: str) -> list[tuple[str, str]]:
    p = get_preset(name)
    out = [("vlm", p.vlm), ("sam", p.sam)]
    if p.scorer:
        out.append(("scorer", p.scorer))
    return out


def _check_one(kind: str, source: str) -> tuple[bool, str]:
    from ..models.sam import resolve_sam_path
    from ..models.segmenter import resolve_segmenter_dir
    from ..models.vlm import resolve_vlm_dir

    try:
        if kind in ("vlm", "scorer"):
            return True, str(resolve_vlm_dir(source))
        return True, str(resolve_segmenter_dir(source) or resolve_sam_path(source, download=False))
    except Rea2SegError as e:
        return False, str(e)


def _is_segmenter_name(name: str) -> bool:
    """A SAM v1 kind or file, a SAM 2.1 / SAM 3 hub id, or a directory holding one."""
    from pathlib import Path

    from ..models.segmenter import backend_of_dir, is_hub_segmenter

    if Path(name).expanduser().is_dir():
        try:
            backend_of_dir(Path(name).expanduser())
            return True
        except Rea2SegError:
            return False
    return name in SAM_CHECKPOINTS or name.endswith((".pth", ".safetensors")) or is_hub_segmenter(name)


def cmd_models(args) -> int:
    from ..models.segmenter import download_segmenter, is_hub_segmenter, resolve_segmenter_dir
    from ..models.vlm import download_vlm, resolve_vlm_dir
    from ..testing import ensure_tiny_models, tiny_models_dir

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
                    print(f"{name}: built in {ensure_tiny_models(tiny_models_dir(), p.vlm, p.sam)[0].parent.parent}")
            elif name in SAM_CHECKPOINTS or is_hub_segmenter(name):
                targets = [("sam", name)]
            else:
                targets = [("vlm", name)]
            for kind, source in targets:
                if kind == "sam" and is_hub_segmenter(source):
                    try:
                        print(f"{source}: {resolve_segmenter_dir(source)} (already there)")
                    except Rea2SegError:
                        print(f"{source}: {download_segmenter(source)}")
                elif kind == "sam":
                    print(f"{source}: {download_sam(source)}")
                else:
                    try:
                        print(f"{source}: {resolve_vlm_dir(source)} (already there)")
                    except Rea2SegError:
                        print(f"{source}: {download_vlm(source)}")
        return 0
    # check
    if args.preset and get_preset(args.preset).random_weights:
        from ..pipeline import Rea2Seg
        pipe = Rea2Seg.from_preset(args.preset, device=args.device)
        st = pipe.status()
        print(f"{args.preset}: ok  vlm {st['vlm']}  {st['segmenter']['backend']} {st['sam']}  device {st['device']}  "
              f"(random weights: plumbing checks only)")
        return 0
    targets = _preset_targets(args.preset or "default") if not args.names else \
        [("sam" if _is_segmenter_name(n) else "vlm", n) for n in args.names]
    missing = 0
    for kind, source in targets:
        ok, where = _check_one(kind, source)
        print(f"{kind:6} {source}: {'ok ' + where if ok else 'MISSING: ' + where}")
        missing += not ok
    return 0 if not missing else 3
