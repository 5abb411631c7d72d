"""``python -m testbed build``: world -> SAM || base VLM [-> mining -> verification phase] -> export || untrained
evaluation -> ``train-scorer`` -> trained evaluation. Each step leaves its output in the build folder and is skipped
when that output is there (a stopped build resumes). Every training process runs on one thread: results do not depend
on the machine's load or core count, and the independent steps run side by side, one process per core.

Build folder (``recipe.build_dir``):
    recipe.json          the recipe (and its hash in the folder name)
    world/train, world/test   the scenes in LISA's ReasonSeg layout (PNG + LabelMe JSON)
    sam.safetensors      the SAM (``save_sam``; ``load_sam`` reads it)
    base-phase1/, mined/ with a verification phase: the VLM after phase 1, and discovery's candidates on the
                         training scenes it found (the verification phase's data)
    base/                the pretrained VLM (discovery, and the untrained scorer)
    export/              the mask-scoring export (``export_scoring_data``) + synthetic hard candidates
    scorer-run/          ``train_scorer``'s run folder; the scorer is scorer-run/scorer
    eval/untrained, eval/trained   ``evaluate_pipeline`` run folders on the test scenes
    timings.jsonl        wall and CPU seconds of every step
    build.json           written last: the build is complete
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import sys
import time
from pathlib import Path

from . import WARNING
from .recipe import EXPORT_START, SYNTHETIC_START, Recipe, build_dir, recipe_hash


def say(msg: str) -> None:
    print(f"[testbed] {msg}", file=sys.stderr, flush=True)


def one_thread() -> None:
    import torch

    torch.set_num_threads(1)
    torch.set_flush_denormal(True)  # tiny models drift into denormals after some AdamW steps: 10x slower without


def _timed(out: Path, what: str, fn, *args, **kwargs):
    t0, c0 = time.perf_counter(), time.process_time()
    result = fn(*args, **kwargs)
    rec = {"step": what, "wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(time.process_time() - c0, 1),
           "pid": os.getpid()}
    if isinstance(result, dict):
        rec["result"] = {k: v for k, v in result.items() if isinstance(v, (int, float, str))}
    with open(out / "timings.jsonl", "a") as f:
        f.write(json.dumps(rec) + "\n")
    say(f"{what}: {rec['wall_s']} s wall, {rec['cpu_s']} CPU-s")
    return result


# ---- the steps (each runs in its own process, one thread) -------------------------------------------------------

def step_sam(out: Path, recipe: Recipe) -> None:
    from .sam import click_quality, train_sam

    one_thread()
    tmp = out / "sam.tmp.safetensors"

    def run():
        r = train_sam(tmp, recipe.sam, out / "sam_log.jsonl", progress=lambda m: None)
        r.update(click_quality(tmp))
        return r

    _timed(out, "sam", run)
    os.replace(tmp, out / "sam.safetensors")


def step_vlm(out: Path, recipe: Recipe) -> None:
    from .vlm import build_vlm, pretrain

    one_thread()
    tmp = out / "base.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    build_vlm(tmp, recipe.arch, recipe.vlm.seed)
    _timed(out, "vlm", pretrain, tmp, recipe.vlm, out / "vlm_log.jsonl", progress=lambda m: None)
    os.replace(tmp, out / base_name(recipe))


def base_name(recipe: Recipe) -> str:
    """Where phase 1 leaves the VLM: ``base`` itself, or ``base-phase1`` when a verification phase follows."""
    return "base-phase1" if recipe.vlm.verify_steps else "base"


def step_mine(out: Path, recipe: Recipe) -> None:
    """Discovery's candidates on the training scenes with the phase-1 VLM: the verification phase's data (an export
    like the scorer's, ``mined/``)."""
    from rea2seg.eval.datasets import open_dataset
    from rea2seg.eval.export import export_scoring_data

    one_thread()
    tmp = out / "mined.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    info = {"vlm": str(out / "base-phase1"), "sam": str(out / "sam.safetensors")}
    _timed(out, "mine", export_scoring_data, pipeline(out, base="base-phase1"), open_dataset(out / "world" / "train"),
           tmp, model_info=info, progress=False)
    os.replace(tmp, out / "mined")


def step_verify(out: Path, recipe: Recipe) -> None:
    from .vlm import verify

    one_thread()
    tmp = out / "base.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(out / "base-phase1", tmp)
    _timed(out, "verify", verify, tmp, out / "mined", recipe.vlm, out / "vlm_log.jsonl", progress=lambda m: None)
    os.replace(tmp, out / "base")


def pipeline(out: Path, scorer: Path | None = None, base: str = "base"):
    from rea2seg.pipeline import Rea2Seg

    return Rea2Seg.from_pretrained(str(out / base), str(out / "sam.safetensors"),
                                   scorer=str(scorer) if scorer else None, device="cpu", dtype="fp32",
                                   name="testbed", warning=WARNING)


def step_export(out: Path, recipe: Recipe) -> None:
    from rea2seg.eval.datasets import open_dataset
    from rea2seg.eval.export import export_scoring_data

    from .scoring_data import append_synthetic

    one_thread()
    tmp = out / "export.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    info = {"vlm": str(out / "base"), "sam": str(out / "sam.safetensors")}
    _timed(out, "export", export_scoring_data, pipeline(out), open_dataset(out / "world" / "train"), tmp,
           model_info=info, progress=False)
    if recipe.synthetic_n:
        _timed(out, "synthetic", append_synthetic, tmp, recipe.synthetic_n, recipe.stage, SYNTHETIC_START,
               recipe.seed)
    os.replace(tmp, out / "export")


def eval_dir(mutant: str | None = None) -> str:
    """The build's evaluation folder: ``eval``, or ``eval-mutant-NAME`` for a deliberately wrong engine."""
    return f"eval-mutant-{mutant}" if mutant else "eval"


def step_eval(out: Path, recipe: Recipe, which: str, mutant: str | None = None) -> None:
    from rea2seg.eval.datasets import open_dataset
    from rea2seg.eval.evaluate import evaluate_pipeline

    one_thread()
    if mutant:
        from .mutants import apply

        apply(mutant)
    scorer = out / "scorer-run" / "scorer" if which == "trained" else None
    info = {"vlm": str(out / "base"), "sam": str(out / "sam.safetensors"), "scorer": str(scorer or out / "base"),
            "mutant": mutant}
    _timed(out, f"eval_{which}" + (f"_{mutant}" if mutant else ""), evaluate_pipeline, pipeline(out, scorer),
           open_dataset(out / "world" / "test"), out / eval_dir(mutant) / which, top_k=3, model_info=info,
           method=f"Rea2Seg testbed ({which} scorer)" + (f", mutant {mutant}" if mutant else ""), progress=False)


def evaluate_mutant(recipe: Recipe, out: Path, mutant: str) -> Path:
    """Both evaluations of a complete build again, with mutant ``mutant`` (testbed.mutants) installed."""
    from .mutants import MUTANTS

    if mutant not in MUTANTS:
        raise SystemExit(f"unknown mutant {mutant!r}; choose one of: {', '.join(MUTANTS)}")
    todo = [("step_eval", which, mutant) for which in ("untrained", "trained")
            if not (out / eval_dir(mutant) / which / "summary.json").is_file()]
    if todo:
        in_parallel(out, recipe, *todo)
    return out / eval_dir(mutant)


def step_scorer(out: Path, recipe: Recipe) -> None:
    from rea2seg.train.scorer import TrainConfig, train_scorer

    one_thread()
    s = recipe.scorer
    cfg = TrainConfig(mode="yesno", method="full", epochs=s.epochs, lr=s.lr, batch_size=s.batch_size,
                      max_steps=s.max_steps, freeze_vision=s.freeze_vision, yes_threshold=s.yes_threshold,
                      seed=s.seed)
    _timed(out, "scorer", train_scorer, str(out / "base"), out / "export", out / "scorer-run", cfg, device="cpu",
           dtype="fp32", progress=False, log=lambda m: None)


def _child(fn_name: str, out: str, recipe: dict, *args) -> None:
    from . import recipe as recipes

    fn = globals()[fn_name]
    fn(Path(out), recipes.recipe_from_json(recipe), *args)


def in_parallel(out: Path, recipe: Recipe, *steps: tuple) -> None:
    """Run each (step function name, *args) in its own process (spawned: a clean interpreter, one thread each)."""
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_child, args=(name, str(out), recipe.to_json(), *args), name=name, daemon=True)
             for name, *args in steps]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    failed = [p.name for p in procs if p.exitcode != 0]
    if failed:
        raise SystemExit(f"testbed build step(s) {', '.join(failed)} failed (see the messages above); run the same "
                         f"command again to resume")


def build(recipe: Recipe, out: Path | None = None, force: bool = False) -> Path:
    """Build everything ``recipe`` describes into ``out`` (default: the cache folder for its hash); returns it."""
    from .world import write_split

    out = out or build_dir(recipe)
    if force:
        shutil.rmtree(out, ignore_errors=True)
    if (out / "build.json").is_file():
        say(f"{recipe.name} build {recipe_hash(recipe)} is complete in {out}")
        return out
    out.mkdir(parents=True, exist_ok=True)
    (out / "recipe.json").write_text(json.dumps(recipe.to_json(), indent=1))
    t0 = time.perf_counter()
    say(f"building {recipe.name} ({recipe_hash(recipe)}) in {out}")
    if not (out / "world" / "done").is_file():
        shutil.rmtree(out / "world", ignore_errors=True)
        _timed(out, "world", lambda: (write_split(out / "world", "train", recipe.export_n, recipe.stage, EXPORT_START),
                                      write_split(out / "world", "test", recipe.test_n, recipe.stage)))
        (out / "world" / "done").write_text("")
    first = []
    if not (out / "sam.safetensors").exists():
        first.append("step_sam")
    if not (out / base_name(recipe)).exists() and not (out / "base").exists():
        first.append("step_vlm")
    if first:
        in_parallel(out, recipe, *[(s,) for s in first])
    if not (out / "base").exists():
        if not (out / "mined").exists():
            in_parallel(out, recipe, ("step_mine",))
        in_parallel(out, recipe, ("step_verify",))
    second = []
    if not (out / "export").exists():
        second.append(("step_export",))
    if not (out / "eval" / "untrained" / "summary.json").is_file():
        second.append(("step_eval", "untrained"))
    if second:
        in_parallel(out, recipe, *second)
    if not (out / "scorer-run" / "scorer" / "config.json").is_file():
        in_parallel(out, recipe, ("step_scorer",))
    if not (out / "eval" / "trained" / "summary.json").is_file():
        in_parallel(out, recipe, ("step_eval", "trained"))
    timings = [json.loads(line) for line in (out / "timings.jsonl").read_text().splitlines()]
    info = {"recipe": recipe.name, "hash": recipe_hash(recipe), "wall_s": round(time.perf_counter() - t0, 1),
            "cpu_s": round(sum(t["cpu_s"] for t in timings), 1), "steps": timings}
    (out / "build.json").write_text(json.dumps(info, indent=1))
    say(f"built in {info['wall_s']} s ({info['cpu_s']} CPU-s in all steps)")
    return out
