"""``rea2seg train-scorer``: fine-tune a VLM scorer on a mask-scoring export, the paper's second step (its released
scorer is InternVL3-8B fine-tuned on the mask-scoring conversion of Rea2Seg-16K).

LoRA adapters (peft) on the language model for real models, full fine-tuning for small ones; the loss is on the
answer tokens only (class-balanced for yes/no); resumable checkpoints; validation ranking accuracy per epoch measured
through ``scoring.score_candidates`` itself. The result loads with ``--scorer OUT/scorer`` in every door.

Output folder:
    run.json            what is being trained (a re-run with the same settings resumes)
    log.jsonl           one line per epoch: train loss, validation ranking accuracy, top-1 IoU, yes/no accuracy
    checkpoint/         the latest trainable weights, optimizer and position (resume point)
    scorer/             the trained scorer: a LoRA adapter (adapter_config.json naming its base) or a full model,
                        with the processor files and rea2seg_scorer.json
    scorer-merged/      with --merge: the adapter merged into a full model directory
"""
from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ..config import DiscoveryConfig, ScoringConfig, ScoringMode
from ..errors import InputError, ModelError
from ..eval.runs import ProgressBar, exclusive, make_out_dir, prepare_out_dir, write_json
from ..models.prompting import chat_inputs, to_device
from ..models.vlm import VLM, load_vlm
from ..scoring import score_candidates
from .data import Example, ExportSample, example, n_examples, read_export, split

RUN_FILE, LOG_FILE, CHECKPOINT_DIR, SCORER_DIR, MERGED_DIR = "run.json", "log.jsonl", "checkpoint", "scorer", \
    "scorer-merged"
SCORER_INFO = "rea2seg_scorer.json"
#: Linear layers of the language model that LoRA adapts (the names every supported family uses)
LORA_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


@dataclass(frozen=True)
class TrainConfig:
    """mode: which scorer to train (yes/no, reasoning or comparative answers). method: "lora" (adapters on the
    language model's linear layers; real models), "full" (every weight; small models) or "auto" (LoRA above 1B
    parameters). lr: None = 2e-4 for LoRA, 2e-5 for full. batch_size x grad_accum examples per optimizer step.
    yes_threshold: a candidate is a "Yes" when its IoU with the ground truth reaches it. balance: weight positives and
    negatives equally in the yes/no loss (most candidates are wrong). val_fraction: samples held out (by id) when no
    separate validation export is given. max_steps: stop early (optimizer steps). checkpoint_every: optimizer steps
    between resume points."""

    mode: ScoringMode = "yesno"
    method: Literal["auto", "lora", "full"] = "auto"
    epochs: int = 2
    lr: float | None = None
    batch_size: int = 4
    grad_accum: int = 1
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    yes_threshold: float = 0.5
    balance: bool = True
    val_fraction: float = 0.1
    seed: int = 0
    max_steps: int | None = None
    warmup: float = 0.05
    weight_decay: float = 0.0
    gradient_checkpointing: bool = False
    freeze_vision: bool = False
    checkpoint_every: int = 50

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "grad_accum", "lora_r", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.lr is not None and not self.lr > 0:
            raise InputError(f"the learning rate must be positive, got {self.lr}")


# ---- batches ----------------------------------------------------------------------------------------------------------

def encode_batch(vlm: VLM, batch: list[Example]) -> tuple[dict, torch.Tensor, int]:
    """Model inputs for prompt + answer, left-padded (answers end every row), the labels of the last ``k`` positions
    (-100 outside answers) and ``k``, the longest answer in tokens (answer tokens end with the end-of-turn token)."""
    tok = vlm.tokenizer
    eos = tok.convert_tokens_to_ids("<|im_end|>") if "<|im_end|>" in tok.get_vocab() else tok.eos_token_id
    rows = []
    for ex in batch:
        inputs = chat_inputs(vlm, [ex.turn])
        answer = tok.encode(ex.answer, add_special_tokens=False) + ([int(eos)] if eos is not None else [])
        rows.append((inputs, answer))
    k = max(len(a) for _, a in rows)
    length = max(int(inp["input_ids"].shape[1]) + len(a) for inp, a in rows)
    pad = tok.pad_token_id if tok.pad_token_id is not None else (eos or 0)
    n_prompt = rows[0][0]["input_ids"].shape[1]
    token_keys = [key for key, v in rows[0][0].items()
                  if torch.is_tensor(v) and v.ndim == 2 and v.shape == (1, n_prompt)]
    feed: dict = {}
    labels = torch.full((len(rows), k), -100, dtype=torch.long)
    for key in token_keys:
        parts = []
        for inp, answer in rows:
            value = inp[key][0]
            tail = torch.tensor(answer, dtype=value.dtype) if key == "input_ids" else \
                torch.ones(len(answer), dtype=value.dtype) if key == "attention_mask" else \
                torch.zeros(len(answer), dtype=value.dtype)
            row = torch.cat([value, tail])
            fill = pad if key == "input_ids" else 0
            parts.append(torch.cat([torch.full((length - len(row),), fill, dtype=value.dtype), row]))
        feed[key] = torch.stack(parts)
    for i, (_, answer) in enumerate(rows):
        labels[i, k - len(answer):] = torch.tensor(answer)
    for key, v in rows[0][0].items():
        if key not in token_keys and torch.is_tensor(v):
            feed[key] = torch.cat([inp[key] for inp, _ in rows])
    return feed, labels, k


def answer_loss(vlm: VLM, batch: list[Example], weights: torch.Tensor) -> torch.Tensor:
    """Weighted mean over examples of the mean cross-entropy of each answer's tokens."""
    feed, labels, k = encode_batch(vlm, batch)
    out = vlm.model(**to_device(vlm, feed), logits_to_keep=k + 1, use_cache=False)
    logits = out.logits[:, :-1].float()  # position t predicts token t + 1
    labels = labels.to(logits.device)
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                           ignore_index=-100, reduction="none").view(labels.shape)
    per_example = ce.sum(1) / (labels != -100).sum(1).clamp(min=1)
    w = weights.to(per_example.device)
    return (per_example * w).sum() / w.sum()


# ---- validation -------------------------------------------------------------------------------------------------------

@torch.no_grad()
def validate(vlm: VLM, samples: list[ExportSample], scoring: ScoringConfig, yes_threshold: float) -> dict:
    """Rank each validation sample's candidates with ``scoring.score_candidates`` (what inference does) and report:
    ranking_accuracy (share of samples whose top-scored candidate is their best candidate by IoU), top1_iou (mean IoU
    of the top-scored candidate), best_iou (the ceiling: mean best IoU), first_iou (unranked: candidate 1) and, for
    yes/no, yes_accuracy (P(Yes) > 0.5 agrees with IoU >= yes_threshold, over candidates)."""
    was_training = vlm.model.training
    vlm.model.eval()
    hits, top1, best, first, agree, n_cands = 0, [], [], [], 0, 0
    try:
        for sample in samples:
            image, cands = sample.load()
            scored = score_candidates(vlm, image, sample.question, cands, scoring)
            top = int(scored.ranking()[0])
            ious = np.asarray(sample.ious)
            hits += bool(ious[top] >= ious.max() - 1e-9)
            top1.append(ious[top])
            best.append(ious.max())
            first.append(ious[0])
            if scoring.mode == "yesno":
                agree += int(((scored.scores > 0.5) == (ious >= yes_threshold)).sum())
                n_cands += len(ious)
    finally:
        vlm.model.train(was_training)
    n = max(len(samples), 1)
    out = {"samples": len(samples), "ranking_accuracy": hits / n, "top1_iou": float(np.mean(top1)) if top1 else None,
           "best_iou": float(np.mean(best)) if best else None, "first_iou": float(np.mean(first)) if first else None}
    if n_cands:
        out["yes_accuracy"] = agree / n_cands
    return out


# ---- the run ----------------------------------------------------------------------------------------------------------

def _param_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _prepare_model(vlm: VLM, cfg: TrainConfig) -> str:
    """Make the right weights trainable; returns the method used."""
    method = cfg.method
    if method == "auto":
        method = "lora" if _param_count(vlm.model) > 1e9 else "full"
    if method == "lora":
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError:
            raise ModelError("LoRA training needs peft: pip install 'rea2seg[train]'") from None
        lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=LORA_TARGETS, bias="none")
        vlm.model = get_peft_model(vlm.model, lora)
    else:
        for name, p in vlm.model.named_parameters():
            p.requires_grad_(not (cfg.freeze_vision and _is_vision(name)))
    if cfg.gradient_checkpointing:
        vlm.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    vlm.model.train()
    return method


def _is_vision(name: str) -> bool:
    return any(part in name for part in (".visual.", "vision_tower", "vision_model", "multi_modal_projector"))


def _trainable_state(vlm: VLM, method: str) -> dict:
    if method == "lora":
        from peft import get_peft_model_state_dict
        return {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(vlm.model).items()}
    return {k: v.detach().cpu().contiguous() for k, v in vlm.model.state_dict().items()}


def _load_trainable_state(vlm: VLM, method: str, state: dict) -> None:
    if method == "lora":
        from peft import set_peft_model_state_dict
        set_peft_model_state_dict(vlm.model, state)
    else:
        vlm.model.load_state_dict(state)


def _save_checkpoint(out: Path, vlm: VLM, method: str, optimizer, scheduler, position: dict) -> None:
    """The resume point, replaced atomically (a kill leaves the previous one)."""
    from safetensors.torch import save_file

    tmp, final, old = out / (CHECKPOINT_DIR + ".tmp"), out / CHECKPOINT_DIR, out / (CHECKPOINT_DIR + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    state = _trainable_state(vlm, method)
    save_file({k: v.clone() for k, v in state.items()}, str(tmp / "weights.safetensors"))
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "torch_rng": torch.get_rng_state()}, tmp / "optimizer.pt")
    write_json(tmp / "position.json", position)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def _load_checkpoint(out: Path, vlm: VLM, method: str, optimizer, scheduler) -> dict | None:
    from safetensors.torch import load_file

    ck = out / CHECKPOINT_DIR
    if not (ck / "position.json").is_file():
        return None
    _load_trainable_state(vlm, method, load_file(str(ck / "weights.safetensors")))
    saved = torch.load(ck / "optimizer.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    torch.set_rng_state(saved["torch_rng"])
    return json.loads((ck / "position.json").read_text())


def _epoch_order(train: list[ExportSample], mode: str, seed: int, epoch: int) -> list[tuple[int, int]]:
    """(sample, example) index pairs in this epoch's order (the same every run: resuming skips exactly what was
    done)."""
    pairs = [(i, j) for i, s in enumerate(train) for j in range(n_examples(s, mode))]
    random.Random(seed * 1000 + epoch).shuffle(pairs)
    return pairs


def _class_weights(train: list[ExportSample], cfg: TrainConfig) -> tuple[float, float]:
    if cfg.mode != "yesno" or not cfg.balance:
        return 1.0, 1.0
    labels = [iou >= cfg.yes_threshold for s in train for iou in s.ious]
    pos = sum(labels) / len(labels)
    if pos in (0.0, 1.0):
        return 1.0, 1.0
    return 0.5 / pos, 0.5 / (1 - pos)


def train_scorer(base: str, export_dir: str | Path, out_dir: str | Path, config: TrainConfig = TrainConfig(), *,
                 scoring: ScoringConfig = ScoringConfig(), val_dir: str | Path | None = None, device=None,
                 dtype=None, merge: bool = False, force: bool = False, progress: bool = True,
                 download: bool = False, max_pixels: int | None = DiscoveryConfig().vlm_max_pixels,
                 log=print) -> dict:
    """Fine-tune the VLM ``base`` (hub id, directory, or an earlier scorer) as a scorer on the export in
    ``export_dir``; writes ``out_dir`` (see the module docstring), resuming a run with the same settings there.
    ``max_pixels``: the VLM's pixel budget per image, as the pipeline applies it at inference.
    Returns the summary: method, steps, the last epoch's validation metrics and the scorer's directory."""
    cfg = config
    scoring = replace(scoring, mode=cfg.mode)
    samples = read_export(export_dir)
    if val_dir is not None:
        train, held = samples, read_export(val_dir)
    else:
        train, held = split(samples, cfg.val_fraction)
    out = Path(out_dir)
    run_info = {"base": str(base), "export": str(Path(export_dir).resolve()),
                "validation": str(Path(val_dir).resolve()) if val_dir else f"{cfg.val_fraction} of the export",
                "config": asdict(cfg), "scoring": {k: getattr(scoring, k) for k in ("two_image", "alpha",
                                                                                    "zoom_below")}}
    make_out_dir(out)
    with exclusive(out):
        prepare_out_dir(out, run_info, force, (RUN_FILE, LOG_FILE), (CHECKPOINT_DIR, SCORER_DIR, MERGED_DIR))
        torch.manual_seed(cfg.seed)
        vlm = load_vlm(base, device, dtype, download=download, max_pixels=max_pixels, shared=False)
        method = _prepare_model(vlm, cfg)
        params = [p for p in vlm.model.parameters() if p.requires_grad]
        lr = cfg.lr or (2e-4 if method == "lora" else 2e-5)
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
        per_epoch = math.ceil(sum(n_examples(s, cfg.mode) for s in train) / (cfg.batch_size * cfg.grad_accum))
        total = per_epoch * cfg.epochs if cfg.max_steps is None else min(cfg.max_steps, per_epoch * cfg.epochs)
        warm = max(1, int(cfg.warmup * total))
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: min(1.0, (s + 1) / warm) * max(0.0, 1 - max(0, s - warm) / max(1, total - warm)))
        position = _load_checkpoint(out, vlm, method, optimizer, scheduler) or {"epoch": 0, "batch": 0, "step": 0}
        if position["step"]:
            log(f"[train-scorer] resuming at epoch {position['epoch'] + 1}, step {position['step']}")
        w_pos, w_neg = _class_weights(train, cfg)
        same_size = scoring.two_image and vlm.has_rope_index
        log(f"[train-scorer] {method} on {base}: {sum(p.numel() for p in params):,} trainable parameters; "
            f"{len(train)} training / {len(held)} validation samples; {total} optimizer steps")
        bar = ProgressBar(total, position["step"], "train-scorer", progress)
        step, losses, t0 = position["step"], [], time.monotonic()
        metrics: dict = {}
        try:
            for epoch in range(position["epoch"], cfg.epochs):
                order = _epoch_order(train, cfg.mode, cfg.seed, epoch)
                batches = [order[i:i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
                start = position["batch"] if epoch == position["epoch"] else 0
                for b in range(start, len(batches)):
                    if step >= total:
                        break
                    exs = [example(train[i], j, cfg.mode, scoring, cfg.yes_threshold, same_size)
                           for i, j in batches[b]]
                    weights = torch.tensor([1.0 if e.positive is None else (w_pos if e.positive else w_neg)
                                            for e in exs])
                    loss = answer_loss(vlm, exs, weights) / cfg.grad_accum
                    loss.backward()
                    losses.append(loss.item() * cfg.grad_accum)
                    if (b + 1) % cfg.grad_accum == 0 or b + 1 == len(batches):
                        torch.nn.utils.clip_grad_norm_(params, 1.0)
                        optimizer.step()
                        scheduler.step()
                        optimizer.zero_grad(set_to_none=True)
                        step += 1
                        bar.update(f"loss {np.mean(losses[-20:]):.3f}")
                        if step % cfg.checkpoint_every == 0:
                            _save_checkpoint(out, vlm, method, optimizer, scheduler,
                                             {"epoch": epoch, "batch": b + 1, "step": step})
                metrics = {"epoch": epoch + 1, "step": step, "train_loss": float(np.mean(losses)) if losses else None,
                           "seconds": round(time.monotonic() - t0, 1)}
                if held:
                    metrics["validation"] = validate(vlm, held, scoring, cfg.yes_threshold)
                _append_log(out / LOG_FILE, metrics)
                log(f"[train-scorer] epoch {epoch + 1}: " + json.dumps(metrics))
                losses = []
                _save_checkpoint(out, vlm, method, optimizer, scheduler, {"epoch": epoch + 1, "batch": 0,
                                                                           "step": step})
                if step >= total:
                    break
        finally:
            bar.close()
        scorer_dir = _save_scorer(out, vlm, method, base, cfg, scoring, metrics, merge)
    return {"method": method, "steps": step, "scorer": str(scorer_dir), "last_epoch": metrics,
            **({"merged": str(out / MERGED_DIR)} if merge and method == "lora" else {})}


def _append_log(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def _save_scorer(out: Path, vlm: VLM, method: str, base: str, cfg: TrainConfig, scoring: ScoringConfig,
                 metrics: dict, merge: bool) -> Path:
    """The trained scorer as a directory ``--scorer`` loads: the adapter (naming its base) or the full model, the
    processor, and rea2seg_scorer.json; with ``merge``, also the adapter merged into a full model."""
    target = out / SCORER_DIR
    shutil.rmtree(target, ignore_errors=True)
    vlm.model.eval()
    info = {"base": str(base), "method": method, "mode": cfg.mode, "yes_threshold": cfg.yes_threshold,
            "scoring": {k: getattr(scoring, k) for k in ("two_image", "alpha", "zoom_below")}, "last_epoch": metrics}
    if method == "lora":  # the adapter names its base as the user gave it (an absolute path for a folder)
        vlm.model.peft_config["default"].base_model_name_or_path = \
            str(Path(base).resolve()) if Path(base).exists() else str(base)
        vlm.model.save_pretrained(str(target))
        if merge:
            merged = out / MERGED_DIR
            shutil.rmtree(merged, ignore_errors=True)
            vlm.model.merge_and_unload().save_pretrained(str(merged))
            vlm.processor.save_pretrained(str(merged))
            write_json(merged / SCORER_INFO, {**info, "method": "lora (merged)"})
    else:
        vlm.model.save_pretrained(str(target))
    vlm.processor.save_pretrained(str(target))
    write_json(target / SCORER_INFO, info)
    return target
