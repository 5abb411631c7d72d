"""The testbed VLM: a 1M-parameter Qwen2.5-VL (the real architecture class, saved like a hub checkpoint: config,
safetensors, a byte-level BPE tokenizer trained on the world's words, the published Qwen2.5-VL processor and chat
template) and its pretraining.

Pretraining teaches perception and grounding, never the answer to a yes/no question (that is the scorer's
fine-tuning, ``rea2seg train-scorer``). Every input goes through the engine's own prompt builder
(``rea2seg.models.prompting.chat_inputs``: the chat template, the image first, the generation prompt). Losses:

* grounding (what discovery reads): on "{question}" prompts, the attention of the text rows after the image (mean over
  the heads and rows of the band layers: exactly what ``discovery.attention_grid`` records) over the image tokens is
  pulled (KL) toward the question's attention set; the generic prompt's toward uniform.
* looking up (what a scorer needs): on images with a highlighted candidate (``render.candidate_view``) and the
  yes/no prompt's *input* (no answer is given), the last position's attention in the band layers is pulled toward
  the question's target object in half of the heads and toward the highlighted tokens in the other half.
* dense labels: linear heads (not saved) read each image token's colour, shape, size class and "highlighted" from
  the LLM's input and from the band layers' inputs.

Aids (docs/TESTBED.md): fan-in initialisation of the text decoder's linear layers, a hand-set ("planted") part of
the vision patch embedding (patch colour means, quadrant contrasts, edge detectors), flushing denormals.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from . import supervision as sup
from . import world

GENERIC_PROMPT = "Write a general description of the image."  # DiscoveryConfig().generic_prompt
#: The answer words of the pretraining's verification task (false, true): never the scorer's Yes / No.
VERIFY_WORDS = ("false", "true")


@dataclass(frozen=True)
class VlmArch:
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 256
    vision_hidden: int = 64
    vision_depth: int = 2
    vision_heads: int = 2
    rope_theta: float = 1e4
    vocab: int = 640


# ---- building ---------------------------------------------------------------------------------------------------

def build_tokenizer(vocab_size: int):
    """A byte-level BPE trained on the world's questions and the pipeline's prompts, wrapped as the real
    ``Qwen2Tokenizer`` with Qwen's special tokens and the published chat template (``build_tiny_tokenizer``)."""
    from rea2seg.scoring import REASONING_PROMPT, YESNO_PROMPT
    from rea2seg.testing.models import _CORPUS, build_tiny_tokenizer

    qs = world.corpus()
    texts = list(_CORPUS) + qs + [GENERIC_PROMPT, "You are a helpful assistant.", "system user assistant"]
    texts += [YESNO_PROMPT.format(question=q) for q in qs[::7]] + [REASONING_PROMPT.format(question=q) for q in qs[::29]]
    texts += [f"{w}<|im_end|>" for w in VERIFY_WORDS] * 50  # the pretraining's verification answers: one token each
    return build_tiny_tokenizer(vocab_size, "qwen2_5_vl", texts * 10)


def build_vlm(out_dir: str | os.PathLike, arch: VlmArch, seed: int) -> Path:
    """A random-weight Qwen2.5-VL saved laid out like the hub checkpoint. The processor file is the published one
    with the pixel limit set to the world's image size (224 x 224: 8 x 8 merged tokens; zoomed crops come back to
    the same budget)."""
    import transformers as tf

    from rea2seg.testing.models import QWEN_CHAT_TEMPLATE, QWEN_SPECIALS
    from rea2seg.testing.published import QWEN2_5_VL_7B_PREPROCESSOR

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(arch.vocab)
    ids = {s: tok.convert_tokens_to_ids(s) for s in QWEN_SPECIALS}
    head_dim = arch.hidden // arch.heads
    section = [head_dim // 8, (head_dim // 2 - head_dim // 8) // 2]
    section.append(head_dim // 2 - sum(section))
    text = dict(vocab_size=len(tok), hidden_size=arch.hidden, intermediate_size=arch.intermediate,
                num_hidden_layers=arch.layers, num_attention_heads=arch.heads, num_key_value_heads=arch.kv_heads,
                max_position_embeddings=4096, tie_word_embeddings=False, bos_token_id=ids["<|endoftext|>"],
                eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
                rope_parameters={"rope_type": "default", "rope_theta": arch.rope_theta, "mrope_section": section})
    vision = dict(depth=arch.vision_depth, hidden_size=arch.vision_hidden, intermediate_size=2 * arch.vision_hidden,
                  num_heads=arch.vision_heads, out_hidden_size=arch.hidden, patch_size=14, spatial_merge_size=2,
                  temporal_patch_size=2, window_size=112, fullatt_block_indexes=[arch.vision_depth - 1])
    cfg = tf.Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                              video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                              vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = tf.Qwen2_5_VLForConditionalGeneration(cfg).eval()
    fanin_init(model, seed)
    plant_patch_embedding(model)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    processor = dict(QWEN2_5_VL_7B_PREPROCESSOR, max_pixels=world.S * world.S)
    (out / "preprocessor_config.json").write_text(json.dumps(processor, indent=2) + "\n")
    (out / "chat_template.json").write_text(json.dumps({"chat_template": QWEN_CHAT_TEMPLATE}, indent=2) + "\n")
    return out


def fanin_init(model, seed: int) -> None:
    """Every linear layer of the text decoder re-drawn with std 1/sqrt(fan_in): the config's 0.02 gives near-zero
    attention logits at width 128, and text->image attention then learns only foreground vs background."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.model.language_model.modules():
            if isinstance(mod, nn.Linear):
                mod.weight.normal_(0, mod.weight.shape[1] ** -0.5, generator=g)
                if mod.bias is not None:
                    mod.bias.zero_()


def plant_patch_embedding(model) -> int:
    """Hand-set the first filters of the vision patch embedding (Conv3d over 2 x 14 x 14 normalised RGB): the patch's
    mean R, G, B (3); each quadrant's R, G, B minus the patch mean (12); luminance steps across both diagonals (2)
    and across vertical / horizontal lines at 3 offsets (6). The rest are scaled down. All stay trainable. Shapes
    are told apart by their edges: squares by horizontal and vertical steps, triangles by diagonal ones."""
    w = model.model.visual.patch_embed.proj.weight  # (D, 3, 2, P, P)
    P = w.shape[-1]
    one = torch.ones(P, P) / (P * P)
    filters = []
    for c in range(3):
        f = torch.zeros(3, P, P)
        f[c] = one
        filters.append(f)
    h = P // 2
    for c in range(3):
        for r0, r1, c0, c1 in [(0, h, 0, h), (0, h, h, P), (h, P, 0, h), (h, P, h, P)]:
            f = torch.zeros(3, P, P)
            f[c, r0:r1, c0:c1] = 1.0 / (h * h)
            f[c] -= one
            filters.append(2 * f)
    yy, xx = torch.meshgrid(torch.arange(P), torch.arange(P), indexing="ij")
    lum = torch.tensor([0.3, 0.5, 0.2]).view(3, 1, 1)
    for m in [(yy > xx).float() - (yy < xx).float(), (yy + xx < P - 1).float() - (yy + xx > P - 1).float()]:
        filters.append(lum * m / (P * P) * 4)
    for k in (4, 7, 10):
        filters.append(lum * ((xx < k).float() - (xx >= k).float()) / (P * P) * 4)
        filters.append(lum * ((yy < k).float() - (yy >= k).float()) / (P * P) * 4)
    bank = torch.stack(filters)
    k = min(len(bank), w.shape[0])
    with torch.no_grad():
        w[:k] = (bank[:k, :, None] / 2).expand(-1, -1, w.shape[2], -1, -1)  # the same on both temporal frames
        w[k:] *= 0.3
    return k


# ---- pretraining ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PretrainConfig:
    steps: int = 800
    batch: int = 16
    lr: float = 3e-3
    stage: int = 2
    p_lookup: float = 0.4  # share of examples with a highlighted candidate and the yes/no prompt's input
    p_generic: float = 0.15  # of the grounding examples: the generic prompt (target: uniform)
    p_highlight: float = 0.25  # of the grounding examples: a highlighted candidate on the image
    w_dense: float = 1.0
    w_verify: float = 1.0  # the lookup examples' "true" / "false" answer (see the module docstring)
    verify_steps: int = 0  # a second phase (``verify``): lookup + verification on discovery's mined candidates
    verify_p_lookup: float = 0.8
    verify_lr: float = 1e-3
    w_probe: float = 0.5  # the last position's probes (HighlightProbes), in the second phase
    seed: int = 0


class DenseHeads(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.colour = nn.Linear(hidden, sup.N_COLOUR)
        self.shape = nn.Linear(hidden, sup.N_SHAPE)
        self.size = nn.Linear(hidden, sup.N_SIZE)
        self.hl = nn.Linear(hidden, 2)

    def loss(self, h: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict]:
        total, acc = 0.0, {}
        for k in ("colour", "shape", "size", "hl"):
            logits = getattr(self, k)(h)
            total = total + F.cross_entropy(logits, target[k])
            acc[k] = float((logits.argmax(-1) == target[k]).float().mean())
        return total, acc


def _kl(q: torch.Tensor, p: torch.Tensor, normalise: bool = True) -> torch.Tensor:
    """KL(q || p) over the image tokens. ``normalise``: compare with p's distribution over the image tokens only
    (discovery divides maps anyway); otherwise p is the attention itself (summing to 1 over every key), so the loss
    also pulls the head's mass onto the image: -sum(q log p) - H(q)."""
    if normalise:
        p = p / p.sum().clamp(min=1e-8)
    return (q * (q.clamp(min=1e-8).log() - p.clamp(min=1e-8).log())).sum()


class HighlightProbes(nn.Module):
    """Linear probes (not saved) on the last position at the last layer's input: the highlighted object's colour,
    shape and size class, and whether the highlight is the answer (IoU >= 0.5). They make the last position carry what
    a yes/no answer needs in linearly readable form."""

    def __init__(self, hidden: int):
        super().__init__()
        self.colour = nn.Linear(hidden, sup.N_COLOUR)
        self.shape = nn.Linear(hidden, sup.N_SHAPE)
        self.size = nn.Linear(hidden, sup.N_SIZE)
        self.answer = nn.Linear(hidden, 2)

    def loss(self, h: torch.Tensor, exs: list[dict]) -> torch.Tensor:
        t = {k: [] for k in ("colour", "shape", "size", "answer")}
        for e in exs:
            sc, hl = e["scene"], e["highlight"]
            overlap = [np.count_nonzero(hl & m) for m in sc.masks]
            o = sc.objects[int(np.argmax(overlap))] if max(overlap) > 0 else None
            t["colour"].append(world.ALL_COLOURS.index(o.colour) + 1 if o else 0)
            t["shape"].append(world.ALL_SHAPES.index(o.shape) + 1 if o else 0)
            t["size"].append((1 if o.size == "small" else 2) if o else 0)
            t["answer"].append(int(e["correct"]))
        return sum(F.cross_entropy(getattr(self, k)(h), torch.as_tensor(v)) for k, v in t.items())


def _num(x) -> float:
    return float(x.detach()) if torch.is_tensor(x) else float(x)


def pick_highlight(rng, sc: world.Scene) -> np.ndarray:
    """A candidate-like mask, often around the target or another object the question names (the scorer's hard
    cases)."""
    pool = [sc.target] * 2 + sc.attention + list(range(len(sc.objects)))
    return sup.candidate_like(rng, sc, int(pool[int(rng.integers(len(pool)))]))[0]


def make_example(rng, i: int, cfg: PretrainConfig, p_lookup: float) -> dict:
    """One pretraining example from training scene ``i``."""
    from rea2seg.render import candidate_view

    sc = world.scene("train", i, cfg.stage)
    u = rng.random()
    task = "lookup" if u < p_lookup else "generic" if rng.random() < cfg.p_generic else "ground"
    if task == "lookup":
        return lookup_example(sc, pick_highlight(rng, sc))
    highlight, crop, view = None, None, sc.image
    if task == "ground" and rng.random() < cfg.p_highlight:
        highlight = pick_highlight(rng, sc)
        view = candidate_view(sc.image, highlight, sup.ZOOM_BELOW, sup.ALPHA)
        crop = sup.view_box(highlight)
    return {"scene": sc, "task": task, "view": view, "highlight": highlight, "crop": crop,
            "text": GENERIC_PROMPT if task == "generic" else sc.question,
            "correct": highlight is not None and sup.mask_iou(highlight, sc.gt) >= 0.5}


class Trainer:
    """Holds the model (eager attention, for attention probabilities with gradients), the engine's prompt builder
    and the auxiliary heads."""

    def __init__(self, model_dir: Path, cfg: PretrainConfig):
        from transformers import Qwen2_5_VLForConditionalGeneration

        from rea2seg.models.attention import layer_band
        from rea2seg.models.vlm import VLM, load_processor

        self.cfg = cfg
        self.model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            model_dir, dtype=torch.float32, attn_implementation={"text_config": "eager", "vision_config": "sdpa"})
        processor = load_processor(model_dir)
        processor.tokenizer.padding_side = "left"
        self.vlm = VLM(self.model, processor, str(model_dir), torch.device("cpu"), torch.float32, "qwen2_5_vl")
        text = self.model.config.get_text_config()
        self.band = layer_band(text.num_hidden_layers, (0.5, 0.85))  # DiscoveryConfig().layer_band
        self.heads = DenseHeads(text.hidden_size)
        self.probes = HighlightProbes(text.hidden_size)
        self.n_layers = text.num_hidden_layers
        self.image_token = int(self.model.config.image_token_id)
        tok = processor.tokenizer
        self.verify_ids = [tok.convert_tokens_to_ids(w) for w in VERIFY_WORDS]
        if any(i is None or i == tok.unk_token_id for i in self.verify_ids):
            raise RuntimeError(f"the testbed tokenizer lacks single tokens for {VERIFY_WORDS}")

    def inputs(self, exs: list[dict]):
        from rea2seg.models.prompting import chat_inputs

        return chat_inputs(self.vlm, [[Image.fromarray(e["view"]), e["text"]] for e in exs])

    def losses(self, exs: list[dict], probes: bool = False) -> tuple[torch.Tensor, dict]:
        inputs = self.inputs(exs)
        out = self.model(**inputs, output_attentions=True, output_hidden_states=True, use_cache=False,
                         logits_to_keep=1)
        ids = inputs["input_ids"]
        grids = [(int(t[1]) // 2, int(t[2]) // 2) for t in inputs["image_grid_thw"]]
        labels = [sup.token_labels(e["scene"], e["highlight"], e["crop"], gh, gw) for e, (gh, gw) in zip(exs, grids)]
        img = ids == self.image_token
        dense = {k: torch.as_tensor(np.concatenate([lab[k] for lab in labels])) for k in ("colour", "shape", "size",
                                                                                           "hl")}
        l_dense, acc = self.heads.loss(out.hidden_states[0][img], dense)
        for layer in self.band:  # keep the labels readable where the band layers compute their keys
            l_dense = l_dense + 0.5 * self.heads.loss(out.hidden_states[layer][img], dense)[0]
        look = [b for b, e in enumerate(exs) if e["task"] == "lookup"]
        l_verify = 0.0
        if look and self.cfg.w_verify:
            want = torch.as_tensor([self.verify_ids[int(exs[b]["correct"])] for b in look])
            l_verify = F.cross_entropy(out.logits[look, -1].float(), want)
        l_ground, l_look, n_ground, n_look = 0.0, 0.0, 0, 0
        n_heads = out.attentions[self.band[0]].shape[1]
        for b, (e, lab) in enumerate(zip(exs, labels)):
            pos = (ids[b] == self.image_token).nonzero().flatten()
            s, t = int(pos[0]), int(pos[-1]) + 1
            if e["task"] == "lookup":
                q_target = sup.objects_target(lab["cover"], [e["scene"].target])
                hl = lab["hl_frac"]
                for layer in self.band:
                    a = out.attentions[layer][b, :, -1, s:t]  # (H, n_img): the last position
                    if q_target is not None:
                        l_look = l_look + _kl(torch.as_tensor(q_target), a[: n_heads // 2].mean(0), False) / len(
                            self.band)
                    if hl.sum() > 0:
                        l_look = l_look + _kl(torch.as_tensor(hl / hl.sum()), a[n_heads // 2:].mean(0), False) / len(
                            self.band)
                n_look += 1
                continue
            if e["crop"] is not None:
                continue  # a zoomed view: the question's objects may be outside it
            if e["task"] == "generic":
                q = np.full(t - s, 1.0 / (t - s), np.float32)
            else:
                q = sup.objects_target(lab["cover"], e["scene"].attention)
                if q is None:
                    continue
            q = torch.as_tensor(q)
            for layer in self.band:  # rows after <|vision_end|>, as discovery records them
                a = out.attentions[layer][b, :, t + 1:, s:t].mean((0, 1))
                l_ground = l_ground + _kl(q, a) / len(self.band)
            n_ground += 1
        l_ground = l_ground / max(n_ground, 1)
        l_look = l_look / max(n_look, 1)
        l_probe = 0.0
        if look and probes:
            l_probe = self.probes.loss(out.hidden_states[self.n_layers - 1][look, -1], [exs[b] for b in look])
        loss = l_ground + l_look + self.cfg.w_dense * l_dense + self.cfg.w_verify * l_verify + \
            self.cfg.w_probe * l_probe
        return loss, {"ground": _num(l_ground), "lookup": _num(l_look), "dense": _num(l_dense),
                      "verify": _num(l_verify), "probe": _num(l_probe), **acc}


def cosine(step: int, total: int, warm: float = 0.05, floor: float = 0.05) -> float:
    f = step / max(total, 1)
    return min(1.0, f / warm) * (floor + (1 - floor) * 0.5 * (1 + np.cos(np.pi * f)))


def mined_candidates(export_dir: Path) -> list[tuple[int, str, float]]:
    """Discovery's candidates on training scenes, from a mask-scoring export (``export_scoring_data``): (scene
    index, mask file, IoU with the target)."""
    out = []
    for line in (Path(export_dir) / "samples.jsonl").read_text().splitlines():
        rec = json.loads(line) if line.strip() else {}
        if rec.get("id", "").startswith("train_"):
            i = int(rec["id"].split("_")[1])
            out += [(i, str(Path(export_dir) / c["mask"]), float(c["iou"])) for c in rec["candidates"]]
    return out


def lookup_example(sc: world.Scene, highlight: np.ndarray) -> dict:
    from rea2seg.render import candidate_view
    from rea2seg.scoring import YESNO_PROMPT

    return {"scene": sc, "task": "lookup", "view": candidate_view(sc.image, highlight, sup.ZOOM_BELOW, sup.ALPHA),
            "highlight": highlight, "crop": sup.view_box(highlight), "text": YESNO_PROMPT.format(question=sc.question),
            "correct": sup.mask_iou(highlight, sc.gt) >= 0.5}


def balanced_lookup(rng, i: int, cfg: PretrainConfig, want: bool) -> dict:
    """A lookup example on training scene ``i`` whose answer is ``want`` (a few draws; the last one if none fits)."""
    sc = world.scene("train", i, cfg.stage)
    for _ in range(12):
        highlight = pick_highlight(rng, sc)
        if (sup.mask_iou(highlight, sc.gt) >= 0.5) == want:
            break
    return lookup_example(sc, highlight)


def _loop(tr: "Trainer", params, batches, steps: int, lr: float, log, progress, t0, c0, probes: bool, tag: str,
          first: int = 0) -> dict:
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    info: dict = {}
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr * cosine(step, steps)
        loss, info = tr.losses(batches(step), probes)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 25 == 0 or step == steps - 1:
            rec = {"phase": tag, "step": first + step, "loss": round(_num(loss), 4),
                   **{k: round(v, 4) for k, v in info.items()},
                   "wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(time.process_time() - c0, 1)}
            if log:
                log.write(json.dumps(rec) + "\n")
                log.flush()
            progress(f"[testbed] vlm {tag} step {step}/{steps} " + " ".join(f"{k}={v}" for k, v in rec.items()
                                                                            if k not in ("step", "phase")))
    return info


def pretrain(model_dir: Path, cfg: PretrainConfig, log_path: Path | None = None, progress=print) -> dict:
    """Phase 1: pretrain the VLM in ``model_dir`` in place (fresh training scenes every step; the same sequence for
    the same config). Returns timing and the last losses."""
    torch.manual_seed(cfg.seed)
    tr = Trainer(model_dir, cfg)
    params = list(tr.model.parameters()) + list(tr.heads.parameters())
    rng = np.random.default_rng([cfg.seed, 77])
    tr.model.train()
    t0, c0 = time.perf_counter(), time.process_time()
    log = open(log_path, "a") if log_path else None
    info = _loop(tr, params, lambda step: [make_example(rng, step * cfg.batch + j, cfg, cfg.p_lookup)
                                           for j in range(cfg.batch)],
                 cfg.steps, cfg.lr, log, progress, t0, c0, False, "pretrain")
    tr.model.eval()
    tr.model.save_pretrained(model_dir)
    return {"steps": cfg.steps, "wall_s": round(time.perf_counter() - t0, 1),
            "cpu_s": round(time.process_time() - c0, 1), **{k: round(v, 4) for k, v in info.items()}}


def verify(model_dir: Path, export_dir: Path, cfg: PretrainConfig, log_path: Path | None = None,
           progress=print) -> dict:
    """Phase 2, in place: the lookup and "true"/"false" verification task on discovery's own candidates (mined on
    training scenes: the mask-scoring export) and on candidate-like masks, each half positives, plus the last
    position's probes; ``1 - verify_p_lookup`` of each batch keeps the grounding examples (discovery reads the same
    layers). The answer words are never the scorer's Yes / No: that mapping is ``train-scorer``'s job."""
    torch.manual_seed(cfg.seed + 1)
    tr = Trainer(model_dir, cfg)
    params = list(tr.model.parameters()) + list(tr.heads.parameters()) + list(tr.probes.parameters())
    mined = mined_candidates(export_dir)
    pos = [m for m in mined if m[2] >= 0.5]
    neg = [m for m in mined if m[2] < 0.5]
    if not pos or not neg:
        raise RuntimeError(f"the export in {export_dir} needs right and wrong candidates ({len(pos)} / {len(neg)})")
    rng = np.random.default_rng([cfg.seed, 78])
    n_look = round(cfg.batch * cfg.verify_p_lookup)
    start = cfg.steps * cfg.batch  # training scenes after phase 1's

    def batch(step: int) -> list[dict]:
        exs = []
        for j in range(n_look):
            want = j % 2 == 0
            if j < n_look // 2:  # mined
                i, path, _ = (pos if want else neg)[int(rng.integers(len(pos if want else neg)))]
                mask = np.array(Image.open(path)) > 0
                exs.append(lookup_example(world.scene("train", i, cfg.stage), mask))
            else:
                exs.append(balanced_lookup(rng, start + step * cfg.batch + j, cfg, want))
        exs += [make_example(rng, start + step * cfg.batch + j, cfg, 0.0) for j in range(n_look, cfg.batch)]
        return exs

    tr.model.train()
    t0, c0 = time.perf_counter(), time.process_time()
    log = open(log_path, "a") if log_path else None
    info = _loop(tr, params, batch, cfg.verify_steps, cfg.verify_lr, log, progress, t0, c0, True, "verify",
                 first=cfg.steps)
    tr.model.eval()
    tr.model.save_pretrained(model_dir)
    return {"steps": cfg.verify_steps, "mined": len(mined), "mined_positive": len(pos),
            "wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(time.process_time() - c0, 1),
            **{k: round(v, 4) for k, v in info.items()}}
