"""python -m testbed build [--quick] | eval [--quick] [--json] | world OUT_DIR (docs/TESTBED.md)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _recipe(args):
    from .recipe import RECIPES

    recipe = RECIPES["quick" if args.quick else args.recipe]
    return recipe.with_seed(args.seed) if args.seed is not None else recipe


def main(argv: list[str] | None = None) -> int:
    from .mutants import MUTANTS

    ap = argparse.ArgumentParser(prog="python -m testbed", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name, text in (("build", "train the world's models (cached by a hash of the recipe)"),
                       ("eval", "the accuracy table of a build (builds it first if needed)")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--quick", action="store_true", help="the CI recipe (stages 1-2, ~13 min on 2 cores)")
        p.add_argument("--recipe", default="full", choices=("quick", "full"), help="default full")
        p.add_argument("--seed", type=int, default=None, help="move every random stream (robustness checks)")
        p.add_argument("--dir", default=None, help="build folder (default: $REA2SEG_TESTBED_DIR or "
                                                   "~/.cache/rea2seg/testbed, then <recipe>-<hash>)")
        if name == "build":
            p.add_argument("--force", action="store_true", help="rebuild from scratch")
        else:
            p.add_argument("--json", action="store_true", help="print the summary as JSON")
            p.add_argument("--mutant", default=None, choices=MUTANTS,
                           help="evaluate with a deliberately wrong engine step (testbed/mutants.py) to see the "
                                "numbers catch it")
    w = sub.add_parser("world", help="write world scenes in LISA's ReasonSeg layout (rea2seg eval reads them)")
    w.add_argument("out", help="output folder (gets a <split>/ sub-folder)")
    w.add_argument("--split", choices=("train", "val", "test"), default="test")
    w.add_argument("--n", type=int, default=200)
    w.add_argument("--start", type=int, default=0, help="first sample index")
    w.add_argument("--stage", type=int, choices=(1, 2, 3, 4), default=4, help="question stages 1..N")
    w.add_argument("--sgdr", action="store_true", help="only the SGDR-like stage-4 questions (for rea2seg eval "
                                                       "--sgdr)")
    args = ap.parse_args(argv)

    if args.cmd == "world":
        from .world import QTYPES, write_split

        qtypes = [q for q, (s, _) in QTYPES.items() if s == 4] if args.sgdr else None
        folder = write_split(args.out, args.split, args.n, args.stage, args.start, qtypes)
        print(f"wrote {args.n} {args.split} scenes to {folder}; evaluate with: rea2seg eval {folder} --out RUN "
              f"--vlm ... --sam ...{' --sgdr' if args.sgdr else ''}")
        return 0

    from .build import build
    from .recipe import build_dir

    recipe = _recipe(args)
    out = Path(args.dir) if args.dir else build_dir(recipe)
    if args.cmd == "build":
        build(recipe, out, force=args.force)
        print(out)
        return 0
    from .report import markdown, report

    build(recipe, out)
    evals = "eval"
    if args.mutant:
        from .build import evaluate_mutant

        evals = evaluate_mutant(recipe, out, args.mutant).name
    summary = report(out, evals)
    if args.mutant:
        summary["mutant"] = args.mutant
    print(json.dumps(summary) if args.json else markdown(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
