"""The testbed SAM: Meta's ``segment_anything.Sam`` at 1.4M parameters (``SAM_ARCH``), trained on world scenes and
saved with ``rea2seg.models.sam.save_sam`` (its architecture in the file, so ``load_sam`` reads it with no
arguments).

Prompts are those discovery sends: a click (near an attention peak: inside the object, or a few pixels off its
edge) and the same click with a box (jittered around the object, or snapped outward to the VLM's 28-pixel token
cells, as a peak's region box is). Its three outputs are trained as SAM's granularities: 0 = the part of the object
around the click, 1 = the whole object, 2 = the object with its nearest neighbour when that neighbour is close (else
the whole object again) -- so discovery gets candidates of several granularities to choose from, as with the real
SAM. Loss per output: 20 x BCE + Dice on the 64 x 64 low-resolution logits, plus the IoU head's squared error.

The coordinate transform (``ResizeLongestSide``) is applied here with ``segment_anything``'s own code, not the
engine's ``SamModel.decode``: the engine's transform is what the testbed checks.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import supervision as sup
from . import world

CELL = 28  # the VLM's token cell, in world pixels


def sam_arch():
    from rea2seg.models.sam import SamArch

    return SamArch(img_size=256, patch_size=16, embed_dim=128, depth=4, heads=4, global_attn_indexes=(3,),
                   window_size=8, mlp_ratio=2, prompt_dim=128, decoder_mlp_dim=256, decoder_heads=2,
                   iou_head_hidden_dim=64, mask_in_chans=4)


@dataclass(frozen=True)
class SamConfig:
    steps: int = 300
    batch: int = 8  # scenes per step
    lr: float = 1e-3
    stage: int = 4  # the scenes SAM trains on (every kind of object)
    p_edge_click: float = 0.25
    p_cell_box: float = 0.5
    group_gap: int = 24  # a neighbour closer than this (bounding boxes, pixels) forms a group
    seed: int = 0


def granularity_targets(sc: world.Scene, i: int, click_xy, gap: int) -> list[np.ndarray]:
    """[part around the click, whole object, object + close neighbour (or the whole object)] for object ``i``."""
    m = sc.masks[i]
    o = sc.objects[i]
    yy, xx = np.mgrid[0:world.S, 0:world.S]
    r = max(min(o.half_extent), 4)
    part = m & ((xx - click_xy[0]) ** 2 + (yy - click_xy[1]) ** 2 < (0.6 * r) ** 2)
    if part.sum() < 12:
        part = m
    group = m
    j = sup.nearest(sc, i)
    if j is not None:
        p = sc.objects[j]
        dx = abs(p.cx - o.cx) - o.half_extent[0] - p.half_extent[0]
        dy = abs(p.cy - o.cy) - o.half_extent[1] - p.half_extent[1]
        if max(dx, dy) < gap:
            group = m | sc.masks[j]
    return [part, m, group]


def prompts_for(rng, sc: world.Scene, i: int, cfg: SamConfig) -> tuple[np.ndarray, np.ndarray]:
    """A click (x, y) on or just off object ``i`` and a box (x0, y0, x1, y1) around it, in world pixels."""
    m = sc.masks[i]
    ys, xs = np.nonzero(m)
    k = int(rng.integers(len(xs)))
    click = np.array([xs[k], ys[k]], np.float32) + rng.uniform(-0.5, 0.5, 2).astype(np.float32)
    o = sc.objects[i]
    if rng.random() < cfg.p_edge_click:  # a peak's centroid can sit a few pixels off a small object
        d = click - np.array([o.cx, o.cy], np.float32)
        click = click + d / max(np.linalg.norm(d), 1e-3) * rng.uniform(0, 6)
        click = click.clip(0, world.S - 1)
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    if rng.random() < cfg.p_cell_box:  # a peak region's box: whole token cells, sometimes one more
        box = np.array([x0 // CELL * CELL, y0 // CELL * CELL, -(-x1 // CELL) * CELL, -(-y1 // CELL) * CELL], float)
        if rng.random() < 0.3:
            box[int(rng.integers(4))] += CELL * (1 if rng.random() < 0.5 else -1) * (1 if rng.random() < 0.5 else 0)
    else:
        w, h = x1 - x0, y1 - y0
        box = np.array([x0, y0, x1, y1], float) + rng.uniform(-0.15, 0.15, 4) * np.array([w, h, w, h])
    box = box.clip(0, world.S)
    return click, box.astype(np.float32)


def _low_res(masks: np.ndarray, side: int, img_size: int) -> torch.Tensor:
    """World masks (K, S, S) -> soft targets in SAM's low-resolution frame (side x side over the padded input;
    S < img_size, so the image sits top-left)."""
    t = torch.as_tensor(masks, dtype=torch.float32)[:, None]
    scale = img_size / world.S
    n = round(world.S * scale * side / img_size)
    small = F.interpolate(t, size=(n, n), mode="area")[:, 0]
    out = torch.zeros(len(masks), side, side)
    out[:, :n, :n] = small
    return out


def train_sam(path: Path, cfg: SamConfig, log_path: Path | None = None, progress=print) -> dict:
    from rea2seg.models.sam import save_sam
    from segment_anything.utils.transforms import ResizeLongestSide

    torch.manual_seed(cfg.seed)
    arch = sam_arch()
    sam = arch.build().train()
    tf = ResizeLongestSide(arch.img_size)
    opt = torch.optim.AdamW(sam.parameters(), lr=cfg.lr, weight_decay=1e-4)
    rng = np.random.default_rng([cfg.seed, 1234])
    log = open(log_path, "a") if log_path else None
    t0, c0 = time.perf_counter(), time.process_time()
    qts = world.qtypes_for(cfg.stage)
    rec: dict = {}
    for step in range(cfg.steps):
        f = step / cfg.steps
        for g in opt.param_groups:
            g["lr"] = cfg.lr * min(1.0, f / 0.05) * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * f)))
        scenes = [world.make_scene(rng, qts[int(rng.integers(len(qts)))]) for _ in range(cfg.batch)]
        x = torch.stack([sam.preprocess(torch.as_tensor(tf.apply_image(s.image)).permute(2, 0, 1).float())
                         for s in scenes])
        emb = sam.image_encoder(x)
        pe = sam.prompt_encoder.get_dense_pe()
        loss, ious = 0.0, []
        for b, sc in enumerate(scenes):
            n = len(sc.objects)
            clicks, boxes, targets = [], [], []
            for i in range(n):
                click, box = prompts_for(rng, sc, i, cfg)
                clicks.append(click)
                boxes.append(box)
                targets.append(granularity_targets(sc, i, click, cfg.group_gap))
            pts = torch.as_tensor(tf.apply_coords(np.stack(clicks)[:, None], (world.S, world.S)), dtype=torch.float32)
            bxs = torch.as_tensor(tf.apply_boxes(np.stack(boxes), (world.S, world.S)), dtype=torch.float32)
            lab = torch.ones(n, 1, dtype=torch.int)
            tgt = None
            for use_box in (False, True):
                sparse, dense = sam.prompt_encoder(points=(pts, lab), boxes=bxs if use_box else None, masks=None)
                low, pred_iou = sam.mask_decoder(image_embeddings=emb[b:b + 1], image_pe=pe,
                                                 sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                                 multimask_output=True)
                if tgt is None:
                    tgt = _low_res(np.stack([m for t in targets for m in t]), low.shape[-1],
                                   arch.img_size).view(n, 3, low.shape[-2], low.shape[-1])
                bce = F.binary_cross_entropy_with_logits(low, tgt, reduction="none").mean((-1, -2))
                p = low.sigmoid()
                dice = 1 - (2 * (p * tgt).sum((-1, -2)) + 1) / (p.sum((-1, -2)) + tgt.sum((-1, -2)) + 1)
                with torch.no_grad():
                    hard, tb = (low > 0).float(), (tgt > 0.5).float()
                    inter = (hard * tb).sum((-1, -2))
                    iou = inter / (hard.sum((-1, -2)) + tb.sum((-1, -2)) - inter).clamp(min=1)
                loss = loss + (20 * bce + dice).mean() + F.mse_loss(pred_iou, iou)
                ious.append(iou.mean(0).numpy())
        loss = loss / (2 * cfg.batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 20 == 0 or step == cfg.steps - 1:
            m = np.mean(ious, 0)
            rec = {"step": step, "loss": round(float(loss.detach()), 4), "iou_part": round(float(m[0]), 3),
                   "iou_whole": round(float(m[1]), 3), "iou_group": round(float(m[2]), 3),
                   "wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(time.process_time() - c0, 1)}
            if log:
                log.write(json.dumps(rec) + "\n")
                log.flush()
            progress("[testbed] sam " + " ".join(f"{k}={v}" for k, v in rec.items()))
    sam.eval()
    save_sam(sam, path, arch)
    return {"steps": cfg.steps, "wall_s": round(time.perf_counter() - t0, 1),
            "cpu_s": round(time.process_time() - c0, 1), **{k: v for k, v in rec.items() if k.startswith("iou")}}


@torch.inference_mode()
def click_quality(path: Path, n: int = 30, split: str = "val") -> dict:
    """Through the engine (``load_sam``, ``SamModel.embed/decode/upscale``): for one click at each object's most
    interior pixel, the IoU of output 1 (whole) with the object, and of SAM's most confident output."""
    from rea2seg.models.sam import PromptBatch, load_sam
    from rea2seg.render import _mark_point

    sam = load_sam(path, device="cpu")
    whole, top = [], []
    for i in range(n):
        sc = world.scene(split, i, 4)
        emb = sam.embed(sc.image)
        for m in sc.masks:
            x, y = _mark_point(m)
            p = PromptBatch(np.array([[[x, y]]], np.float32), np.ones((1, 1), np.int64),
                            np.full((1, 4), np.nan, np.float32))
            low, iou = sam.decode(emb, p, True, 1)
            masks = sam.upscale(emb, low[0])
            ious = [sup.mask_iou(mm, m) for mm in masks]
            whole.append(ious[1])
            top.append(ious[int(iou[0].argmax())])
    return {"click_whole_miou": round(float(np.mean(whole)), 3), "click_top_miou": round(float(np.mean(top)), 3),
            "click_whole_ge_0_5": round(float(np.mean(np.array(whole) >= 0.5)), 3)}
