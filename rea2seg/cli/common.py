"""What every command line shares (rea2seg segment/eval, rea2seg-mcp): model-choice arguments, pipeline construction,
progress lines on stderr."""
from __future__ import annotations

import argparse
import sys

from ..config import CANDIDATE_SOURCES
from ..errors import InputError
from ..models.download import SAM_KINDS
from ..presets import PRESETS


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("models")
    g.add_argument("--preset", default=None, help=f"named preset: {', '.join(PRESETS)} (default: default)")
    g.add_argument("--vlm", default=None, metavar="ID_OR_DIR",
                   help="discovery model, Hugging Face id or local directory: a VLM, or a LISA-format segmentation "
                        "MLLM (LISA, SESAME; needs --scorer)")
    g.add_argument("--sam", default=None, metavar="PATH_OR_ID",
                   help="segmenter: a SAM checkpoint (.pth / .safetensors) or kind (vit_h, vit_l, vit_b) from the "
                        "models folder, or a SAM 2.1 / SAM 3 hub id or directory (facebook/sam2.1-hiera-large, "
                        "facebook/sam3) (default: vit_h, or a LISA-format model's own SAM)")
    g.add_argument("--sam-kind", default=None, choices=SAM_KINDS,
                   help="SAM v1 kind when neither the file name nor the weights tell")
    g.add_argument("--sources", default=None, metavar="NAME,...",
                   help=f"candidate sources, comma-separated: {', '.join(CANDIDATE_SOURCES)} (default: the preset's; "
                        f"concepts needs SAM 3)")
    g.add_argument("--scorer", default=None, metavar="ID_OR_DIR", help="a different VLM for scoring (default: --vlm)")
    g.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    g.add_argument("--dtype", default=None, help="auto, fp32, fp16 or bf16 (default: bf16 on CUDA, fp32 on CPU)")
    g.add_argument("--download", action="store_true", help="download missing models (otherwise: a clear error)")
    g.add_argument("--trust-remote-code", action="store_true",
                   help="allow the VLM's own Python code to run (only for checkpoints you trust)")


def add_ray_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("running on Ray (docs/SCALE.md)")
    g.add_argument("--ray", nargs="?", const="auto", default=None, metavar="ADDRESS",
                   help="run on Ray: `--ray auto` starts a local Ray (or joins the one `ray start` runs here); "
                        "`--ray HOST:6379` joins a cluster (needs pip install 'rea2seg[ray]')")
    g.add_argument("--actors", default="1", metavar="N|D,S",
                   help="actors per stage: N discovery and N scorer actors, or D,S (default 1)")
    g.add_argument("--num-gpus-per-actor", default=None, metavar="G|D,S",
                   help="GPUs each actor reserves, or D,S per pool (default: 1 if the cluster has GPUs, else 0; "
                        "0.5 = two actors per GPU)")
    g.add_argument("--num-cpus-per-actor", type=float, default=1.0, metavar="C",
                   help="CPUs each actor reserves (default 1)")


def ray_options(args: argparse.Namespace):
    """The ``RayOptions`` the Ray arguments ask for, or None without --ray."""
    if not getattr(args, "ray", None):
        for flag, value, default in (("--actors", args.actors, "1"), ("--num-gpus-per-actor",
                                     args.num_gpus_per_actor, None), ("--num-cpus-per-actor",
                                     args.num_cpus_per_actor, 1.0)):
            if value != default:
                raise InputError(f"{flag} only applies with --ray (e.g. --ray auto)")
        return None
    from ..eval.ray_runner import RayOptions, parse_pair

    discovery, scorer = parse_pair(args.actors, "--actors")
    gpus = (None, None) if args.num_gpus_per_actor is None else \
        parse_pair(args.num_gpus_per_actor, "--num-gpus-per-actor", float)
    return RayOptions(address=args.ray, discovery_actors=discovery, scorer_actors=scorer, discovery_gpus=gpus[0],
                      scorer_gpus=gpus[1], num_cpus_per_actor=args.num_cpus_per_actor)


def model_info(args: argparse.Namespace) -> dict:
    """The model choice recorded in a run's run.json (a resumed run must use the same)."""
    info = {k: getattr(args, k, None) for k in ("preset", "vlm", "sam", "sam_kind", "scorer", "dtype", "sources")}
    return {k: v for k, v in info.items() if v is not None}


def build_pipeline(args: argparse.Namespace, config=None):
    """The ``Rea2Seg`` the model arguments ask for: --vlm/--sam (explicit) or --preset (default 'default'), with
    --sources applied."""
    from ..pipeline import Rea2Seg
    from ..presets import get_preset

    preset = getattr(args, "preset", None)
    sources = getattr(args, "sources", None) or None
    vlm, sam = getattr(args, "vlm", None), getattr(args, "sam", None)
    device, dtype = getattr(args, "device", None), getattr(args, "dtype", None)
    download = bool(getattr(args, "download", False))
    if vlm or sam:
        if preset:
            raise InputError("pass either --preset or --vlm/--sam, not both")
        base = get_preset("default")
        return Rea2Seg.from_pretrained(vlm or base.vlm, sam, sam_kind=getattr(args, "sam_kind", None),
                                       scorer=getattr(args, "scorer", None), device=device, dtype=dtype,
                                       config=config, download=download, sources=sources,
                                       trust_remote_code=bool(getattr(args, "trust_remote_code", False)))
    return Rea2Seg.from_preset(preset or "default", device=device, dtype=dtype, config=config, download=download,
                               scorer=getattr(args, "scorer", None), sources=sources)


def stderr_progress(quiet: bool):
    """A ``Progress`` printing one line per stage step on stderr (None when ``quiet``)."""
    if quiet:
        return None
    last = {}

    def progress(stage: str, done: int, total: int) -> None:
        if last.get(stage) == done:
            return
        last[stage] = done
        print(f"[rea2seg] {stage} {done}/{total}", file=sys.stderr, flush=True)
    return progress
