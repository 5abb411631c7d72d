"""``rea2seg train-scorer``: fine-tune a VLM scorer on a mask-scoring export (the work is in ``rea2seg.train``)."""
from __future__ import annotations

import json

from ..config import SCORING_MODES
from ..errors import InputError


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "train-scorer", help="fine-tune a VLM scorer on a mask-scoring export (rea2seg eval --export-scoring)",
        description="Fine-tune a VLM scorer on the candidates of a mask-scoring export, with the renders and prompts "
                    "the scorer sees at inference. LoRA for real models, full fine-tuning for small ones; resumable "
                    "(re-run with the same --out); validation ranking accuracy per epoch. Use the result with "
                    "--scorer OUT/scorer.")
    p.add_argument("export", help="mask-scoring export folder (from `rea2seg eval DATASET --export-scoring DIR`)")
    p.add_argument("--out", required=True, help="output folder (resumed when it holds the same run)")
    p.add_argument("--base", default=None, metavar="ID_OR_DIR",
                   help="VLM to fine-tune: hub id, folder, or an earlier scorer (default: the preset's scorer)")
    p.add_argument("--preset", default=None, help="take the base from this preset's scorer (default: default)")
    p.add_argument("--val", default=None, metavar="EXPORT", help="a separate validation export (default: hold out "
                                                                  "--val-fraction of the training export)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of samples held out (default 0.1)")
    p.add_argument("--mode", choices=SCORING_MODES, default="yesno", help="the scorer to train (default yesno)")
    p.add_argument("--method", choices=("auto", "lora", "full"), default="auto",
                   help="lora adapters, full fine-tuning, or auto: LoRA above 1B parameters (default)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default 2e-4 LoRA, 2e-5 full)")
    p.add_argument("--batch-size", type=int, default=4, help="examples per forward pass (default 4)")
    p.add_argument("--grad-accum", type=int, default=1, help="forward passes per optimizer step (default 1)")
    p.add_argument("--lora-r", type=int, default=16, help="LoRA rank (default 16)")
    p.add_argument("--yes-threshold", type=float, default=0.5, help="IoU at which a candidate is a Yes (default 0.5)")
    p.add_argument("--no-balance", action="store_true", help="do not weight Yes and No examples equally")
    p.add_argument("--two-image", action="store_true", help="train the two-image yes/no layout")
    p.add_argument("--gradient-checkpointing", action="store_true", help="trade compute for activation memory")
    p.add_argument("--freeze-vision", action="store_true", help="full fine-tuning: keep the vision tower fixed")
    p.add_argument("--checkpoint-every", type=int, default=50, help="optimizer steps between resume points")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--dtype", default=None, help="auto, fp32, fp16 or bf16")
    p.add_argument("--download", action="store_true", help="download the base model if missing")
    p.add_argument("--merge", action="store_true", help="also write the LoRA adapter merged into a full model")
    p.add_argument("--force", action="store_true", help="start over in --out instead of resuming")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_cli)


def run_cli(args) -> int:
    from ..config import ScoringConfig
    from ..presets import get_preset
    from ..train.scorer import TrainConfig, train_scorer

    if args.base and args.preset:
        raise InputError("pass either --base or --preset, not both")
    base = args.base
    if base is None:
        preset = get_preset(args.preset or "default")
        if preset.random_weights:
            raise InputError(f"preset {preset.name!r} has random weights; pass --base with a model folder")
        base = preset.scorer or preset.vlm
    cfg = TrainConfig(mode=args.mode, method=args.method, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                      grad_accum=args.grad_accum, lora_r=args.lora_r, lora_alpha=2 * args.lora_r,
                      yes_threshold=args.yes_threshold, balance=not args.no_balance, val_fraction=args.val_fraction,
                      seed=args.seed, max_steps=args.max_steps, gradient_checkpointing=args.gradient_checkpointing,
                      freeze_vision=args.freeze_vision, checkpoint_every=args.checkpoint_every)
    try:
        summary = train_scorer(base, args.export, args.out, cfg, scoring=ScoringConfig(two_image=args.two_image),
                               val_dir=args.val, device=args.device, dtype=args.dtype, merge=args.merge,
                               force=args.force, progress=not args.quiet, download=args.download)
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume from the last checkpoint")
        return 130
    print(json.dumps(summary) if args.json else f"scorer written to {summary['scorer']}; use it with --scorer "
          f"{summary['scorer']}")
    return 0
