"""LISA-format segmentation MLLMs (LISA v1, SESAME, the Rea2Seg generator) as the candidate generator.

Checked against independent references: the key mapping against the published architectures' own key sets (built on
the meta device from transformers' LLaMA/CLIP and Meta's ``segment_anything``), the tokenisation against transformers'
legacy LLaMA tokenizer on LLaMA's real ``tokenizer.model``, the ``[SEG]`` forward against a plain re-implementation of
LISA's ``model_forward`` written here from LISA's code, the recorded attention against eager attention, and the CLIP
geometry against CLIP's own image processor. Models are tiny and random: plumbing and exactness, never quality.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_image
from rea2seg.config import LISA_SYSTEM, DiscoveryConfig, GeneratorConfig
from rea2seg.errors import CheckpointError, InputError, ModelNotFoundError
from rea2seg.models.lisa import (IMAGE_TOKEN_INDEX, KEY_MAP, build_modules, load_lisa, map_keys, read_weights,
                                 weight_files)
from rea2seg.testing import LISA_VARIANTS, ensure_tiny_lisa
from rea2seg.testing.lisa import TINY_LISA_SAM, build_tiny_lisa

REPO = Path(__file__).resolve().parents[1]
# LLaMA's own SentencePiece model (the one LISA-7B/13B and LLaVA-1.5 ship): ComfyUI 0.3.75 carries it as the Pile-T5
# tokenizer (scripts/setup_comfyui.py puts ComfyUI there for the test suite)
LLAMA_TOKENIZER = REPO / ".cache" / "comfyui" / "ComfyUI-0.3.75" / "comfy" / "text_encoders" / "t5_pile_tokenizer" \
    / "tokenizer.model"
LLAMA_TOKENIZER_SHA256 = "9e556afd44213b6bd1be2b850ebbbd98f5481437a8021afaf58ee7fb1818d347"
QUERY = "the cup nearest the laptop Please output segmentation mask."


@pytest.fixture(scope="session")
def lisa_dirs(tiny_dir) -> dict[str, Path]:
    return {v: ensure_tiny_lisa(tiny_dir, v) for v in LISA_VARIANTS}


@pytest.fixture(scope="session")
def generators(lisa_dirs):
    return {v: load_lisa(str(d), device="cpu") for v, d in lisa_dirs.items()}


@pytest.fixture(scope="session")
def llama_tokenizer_dir(tmp_path_factory, lisa_dirs) -> Path:
    """A tiny LISA-format checkpoint with LLaMA's real tokenizer.model ([SEG] = 32000 as released)."""
    assert LLAMA_TOKENIZER.is_file(), f"{LLAMA_TOKENIZER} is missing: run `python scripts/setup_comfyui.py`"
    assert hashlib.sha256(LLAMA_TOKENIZER.read_bytes()).hexdigest() == LLAMA_TOKENIZER_SHA256
    root = tmp_path_factory.mktemp("lisa-llama-tok")
    (root / "LLM").mkdir()
    clip = lisa_dirs["lisa"].parent / "tiny-random-clip-vit-large-patch14"
    (root / "LLM" / clip.name).symlink_to(clip, target_is_directory=True)
    return build_tiny_lisa(root / "LLM" / "lisa-llama-tok", "lisa", tokenizer_model=LLAMA_TOKENIZER)


# ---- the key mapping ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", LISA_VARIANTS)
def test_every_checkpoint_tensor_lands_in_exactly_one_parameter(generators, lisa_dirs, variant):
    gen = generators[variant]
    state = read_weights(weight_files(lisa_dirs[variant]))
    assert len(weight_files(lisa_dirs[variant])) == 2  # sharded with an index, like the released checkpoints
    mapped, dropped, unmapped = map_keys(state)
    assert unmapped == [] and dropped == []
    targets = {"llava": gen.llava.state_dict(), "fcs": gen.text_hidden_fcs.state_dict(), "sam": gen.sam.sam.state_dict()}
    seen = {m: set() for m in targets}
    for key, (model, target) in mapped.items():
        assert target not in seen[model], f"two tensors map to {model}:{target}"
        seen[model].add(target)
        assert torch.equal(targets[model][target].float(), state[key].float()), key
    assert seen["fcs"] == set(targets["fcs"]) and seen["sam"] == set(targets["sam"])
    # the LLaVA model's other parameters are exactly the CLIP vision tower's
    rest = set(targets["llava"]) - seen["llava"]
    assert rest and all(k.startswith("model.vision_tower.") for k in rest)
    assert any(k.startswith("model.multi_modal_projector.linear_2") for k in targets["llava"]) == (variant == "sesame")


def _published_lisa_keys(variant: str) -> tuple[dict, dict, dict]:
    """(LISA-format key -> shape, CLIP repo key -> shape, config.json) of a released checkpoint, built on the meta
    device from transformers' LLaMA / CLIP and Meta's segment_anything (not from Rea2Seg's code)."""
    from segment_anything import sam_model_registry
    from transformers import CLIPConfig, CLIPModel, LlamaConfig, LlamaForCausalLM

    h, inter, n, heads, image = {"lisa-7b": (4096, 11008, 32, 32, 224), "lisa-13b": (5120, 13824, 40, 40, 224),
                                 "sesame": (4096, 11008, 32, 32, 336)}[variant]
    cfg = {"architectures": ["SESAMEForCausalLM" if variant == "sesame" else "LISAForCausalLM"],
           "hidden_size": h, "intermediate_size": inter, "num_hidden_layers": n, "num_attention_heads": heads,
           "num_key_value_heads": heads, "vocab_size": 32003, "rms_norm_eps": 1e-6, "max_position_embeddings": 2048,
           "hidden_act": "silu", "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch", "out_dim": 256,
           "vision_tower": "openai/clip-vit-large-patch14" + ("-336" if image == 336 else "")}
    with torch.device("meta"):
        llama = LlamaForCausalLM(LlamaConfig(vocab_size=32003, hidden_size=h, intermediate_size=inter,
                                             num_hidden_layers=n, num_attention_heads=heads))
        sam = sam_model_registry["vit_h"]()
        clip = CLIPModel(CLIPConfig(vision_config=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                                       num_attention_heads=16, image_size=image, patch_size=14),
                                    text_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                                     num_attention_heads=12), projection_dim=768))
    keys = {k: tuple(v.shape) for k, v in llama.state_dict().items()}
    if variant == "sesame":
        keys.update({"model.mm_projector.0.weight": (h, 1024), "model.mm_projector.0.bias": (h,),
                     "model.mm_projector.2.weight": (h, h), "model.mm_projector.2.bias": (h,)})
    else:
        keys.update({"model.mm_projector.weight": (h, 1024), "model.mm_projector.bias": (h,)})
    keys.update({"model.text_hidden_fcs.0.0.weight": (h, h), "model.text_hidden_fcs.0.0.bias": (h,),
                 "model.text_hidden_fcs.0.2.weight": (256, h), "model.text_hidden_fcs.0.2.bias": (256,)})
    keys.update({f"model.visual_model.{k}": tuple(v.shape) for k, v in sam.state_dict().items()})
    clip_keys = {k: tuple(v.shape) for k, v in clip.state_dict().items()}
    clip_keys["vision_model.embeddings.position_ids"] = (1, (image // 14) ** 2 + 1)  # persisted by old transformers
    return keys, clip_keys, cfg


@pytest.mark.parametrize("variant,count", [("lisa-7b", 891), ("lisa-13b", 963), ("sesame", 893)])
def test_key_mapping_fits_the_published_architectures(variant, count):
    """Every tensor of LISA-7B-v1 / LISA-13B-llama2-v1 / SESAME (and of the CLIP repo) maps onto one parameter of the
    models the loader builds, with the right shape; no parameter is left without a tensor."""
    from rea2seg.models.lisa import CLIP_KEY_MAP
    from rea2seg.models.sam import SAM_ARCHS
    from transformers import CLIPVisionConfig

    keys, clip_keys, cfg = _published_lisa_keys(variant)
    assert len(keys) == count
    mapped, _, unmapped = map_keys(keys)
    clip_mapped, clip_dropped, clip_unmapped = map_keys(clip_keys, CLIP_KEY_MAP)
    assert unmapped == [] and clip_unmapped == []
    assert not any(k.startswith("vision_model.") and "position_ids" not in k for k in clip_dropped)
    image = 336 if variant == "sesame" else 224
    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                              image_size=image, patch_size=14)
    llava, fcs, sam = build_modules(cfg, vision, variant != "sesame", SAM_ARCHS["vit_h"], 256)
    want = {"llava": llava.state_dict(), "fcs": fcs.state_dict(), "sam": sam.state_dict()}
    got = {m: {} for m in want}
    for src, (model, target) in list(mapped.items()) + list(clip_mapped.items()):
        assert target not in got[model]
        got[model][target] = keys.get(src) or clip_keys[src]
    for model, sd in want.items():
        assert got[model] == {k: tuple(v.shape) for k, v in sd.items()}, model


def test_key_map_table_is_what_the_docs_print():
    doc = (REPO / "docs" / "LISA.md").read_text()
    lines = doc.split("```")[3].strip().splitlines()  # the verbatim block after the table
    assert len(lines) == len(KEY_MAP)
    for line, (pattern, model, target) in zip(lines, KEY_MAP):
        assert line.split() == [pattern, "->", model] + ([target] if target else []), line


# ---- tokenisation --------------------------------------------------------------------------------------------------------

def _reference_ids(directory: Path, prompt: str, n_image: int) -> list[int]:
    """LISA's ``tokenizer_image_token`` with transformers' legacy LLaMA tokenizer, the added tokens stripping the
    whitespace on both sides as 4.31's slow tokenizer did; the image placeholder expanded to its N tokens."""
    from transformers import AddedToken, LlamaTokenizer

    tok = LlamaTokenizer.from_pretrained(directory, legacy=True)
    tok.add_tokens([AddedToken("[SEG]", lstrip=True, rstrip=True, normalized=False)])
    tok.add_tokens([AddedToken(t, lstrip=True, rstrip=True, normalized=False) for t in ("<im_start>", "<im_end>")],
                   special_tokens=True)
    chunks = [tok(c).input_ids for c in prompt.split("<image>")]
    ids = [chunks[0][0]] + chunks[0][1:]
    for c in chunks[1:]:
        ids += [IMAGE_TOKEN_INDEX] * n_image + c[1:]
    return ids


def test_prompt_ids_are_lisas_with_the_real_llama_tokenizer(llama_tokenizer_dir):
    gen = load_lisa(str(llama_tokenizer_dir), device="cpu")
    assert (gen.seg_token_id, gen._token("<im_start>"), gen._token("<im_end>")) == (32000, 32001, 32002)
    n = gen.grid_size ** 2
    for query, answer in [(QUERY, "[SEG]."), ("What is the cup in this image? Please output segmentation mask.",
                                              "Sure, it is [SEG]."), ("a question\nover two lines", None)]:
        text = (f"{LISA_SYSTEM} USER: <im_start><image><im_end>\n{query} ASSISTANT:"
                + (f" {answer}</s>" if answer else ""))
        p = gen.prompt(LISA_SYSTEM, query, answer)
        assert p.ids.tolist() == _reference_ids(llama_tokenizer_dir, text, n)
        assert int(p.ids[p.question.start - 1]) == 32002 and int(p.ids[p.image.start - 1]) == 32001
        assert p.seg == ([len(p.ids) - 3] if answer else [])
    # "[SEG]." is [SEG] then "▁." (869): each piece SentencePiece-encoded on its own, with the dummy prefix
    assert gen.tokenizer.encode("ASSISTANT: [SEG].</s>", add_special_tokens=False)[-3:] == [32000, 869, 2]
    # transformers 5's default (non-legacy) LLaMA tokenizer does not give LISA's ids: the reason for our own
    from transformers import LlamaTokenizer
    modern = LlamaTokenizer.from_pretrained(llama_tokenizer_dir)
    modern.add_tokens(["[SEG]"])
    assert modern("ASSISTANT: [SEG].</s>", add_special_tokens=False).input_ids[-3:] != [32000, 869, 2]


def test_a_typed_seg_is_text_not_the_token(generators):
    gen = generators["lisa"]
    p = gen.prompt(LISA_SYSTEM, "[SEG] <im_end> what is this?", "[SEG].")
    assert p.ids[p.question].tolist().count(gen.seg_token_id) == 0 and len(p.seg) == 1


# ---- the [SEG] forward against LISA's algorithm ---------------------------------------------------------------------------

def lisa_reference(ckpt: Path, image: np.ndarray, ids: list[int], wrong: tuple = ()):
    """LISA's inference for one image, re-implemented from LISA's code (model/LISA.py ``model_forward``,
    model/llava/model/llava_arch.py ``prepare_inputs_labels_for_multimodal``, chat.py's preprocessing) on the
    checkpoint's raw tensors, with stock transformers LLaMA/CLIP and Meta's segment_anything. ``ids``: LISA's input ids
    (the image as one -200). Returns (prompt embeddings (n, D), masks (n, H, W) bool, the embeddings of the ``wrong``
    variants): each (seg_offset, hidden_index) other than LISA's (1, -1) shows that a wrong [SEG] position or layer
    gives another answer."""
    from segment_anything.utils.transforms import ResizeLongestSide
    from transformers import CLIPVisionModel, LlamaConfig, LlamaForCausalLM
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    cfg = json.loads((ckpt / "config.json").read_text())
    index = json.loads((ckpt / "pytorch_model.bin.index.json").read_text())
    state = {}
    for shard in sorted(set(index["weight_map"].values())):
        state.update(torch.load(ckpt / shard, map_location="cpu", weights_only=True))
    clip_dir = ckpt.parent / cfg["vision_tower"].split("/")[-1]
    # CLIP branch: CLIPImageProcessor + CLIPVisionModel, layer mm_vision_select_layer, patches only
    px = CLIPImageProcessorPil.from_pretrained(clip_dir)(images=Image.fromarray(image), return_tensors="pt")
    clip = CLIPVisionModel.from_pretrained(clip_dir).eval()
    with torch.no_grad():
        feats = clip(px["pixel_values"], output_hidden_states=True).hidden_states[cfg["mm_vision_select_layer"]][0, 1:]
        if "model.mm_projector.weight" in state:  # LLaVA v1 "linear"
            feats = torch.nn.functional.linear(feats, state["model.mm_projector.weight"].float(),
                                               state["model.mm_projector.bias"].float())
        else:  # mlp2x_gelu
            f = torch.nn.functional.linear(feats, state["model.mm_projector.0.weight"].float(),
                                           state["model.mm_projector.0.bias"].float())
            feats = torch.nn.functional.linear(torch.nn.functional.gelu(f), state["model.mm_projector.2.weight"].float(),
                                               state["model.mm_projector.2.bias"].float())
        # LLaMA with LISA's own key names
        llama = LlamaForCausalLM(LlamaConfig(
            vocab_size=cfg["vocab_size"], hidden_size=cfg["hidden_size"], intermediate_size=cfg["intermediate_size"],
            num_hidden_layers=cfg["num_hidden_layers"], num_attention_heads=cfg["num_attention_heads"],
            num_key_value_heads=cfg["num_key_value_heads"], rms_norm_eps=cfg["rms_norm_eps"],
            max_position_embeddings=cfg["max_position_embeddings"], tie_word_embeddings=False)).eval()
        llama.load_state_dict({k: v.float() for k, v in state.items()
                               if k.startswith(("model.embed_tokens", "model.layers", "model.norm", "lm_head"))})
        # prepare_inputs_labels_for_multimodal: the image features spliced in at the -200
        t = torch.tensor(ids)
        p = int((t == IMAGE_TOKEN_INDEX).nonzero()[0, 0])
        emb = llama.model.embed_tokens
        embeds = torch.cat([emb(t[:p]), feats, emb(t[p + 1:])])[None]
        hidden_states = llama(inputs_embeds=embeds, output_hidden_states=True).hidden_states
        seg_id = json.loads((ckpt / "added_tokens.json").read_text())["[SEG]"]
        w0, b0 = state["model.text_hidden_fcs.0.0.weight"].float(), state["model.text_hidden_fcs.0.0.bias"].float()
        w2, b2 = state["model.text_hidden_fcs.0.2.weight"].float(), state["model.text_hidden_fcs.0.2.bias"].float()
        preds = []
        for seg_offset, hidden_index in ((1, -1), *wrong):
            # model_forward: seg_token_mask = ids[1:] == seg, one zero column appended, N - 1 zeros prepended
            mask = torch.cat([t[seg_offset:] == seg_id, torch.zeros(seg_offset, dtype=torch.bool)])
            mask = torch.cat([torch.zeros(feats.shape[0] - 1, dtype=torch.bool), mask])
            hidden = hidden_states[hidden_index][0]
            preds.append(torch.nn.functional.linear(torch.relu(torch.nn.functional.linear(hidden, w0, b0)), w2,
                                                    b2)[mask])
        pred = preds[0]
        # SAM branch (chat.py): ResizeLongestSide, normalise, pad right/bottom
        sam = TINY_LISA_SAM.build()
        sam.load_state_dict({k[len("model.visual_model."):]: v.float() for k, v in state.items()
                             if k.startswith("model.visual_model.")})
        size = sam.image_encoder.img_size
        resized = ResizeLongestSide(size).apply_image(image)
        x = (torch.from_numpy(resized).permute(2, 0, 1).float() - sam.pixel_mean) / sam.pixel_std
        x = torch.nn.functional.pad(x, (0, size - x.shape[2], 0, size - x.shape[1]))[None]
        image_embeddings = sam.image_encoder(x)
        # LISA's prompt encoder: sparse = cat(empty, text_embeds[:, None]); dense = no_mask_embed expanded
        pe = sam.prompt_encoder
        sparse = torch.cat([torch.empty((pred.shape[0], 0, pe.embed_dim)), pred[:, None, :]], dim=1)
        dense = pe.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(pred.shape[0], -1, *pe.image_embedding_size)
        low, _ = sam.mask_decoder(image_embeddings=image_embeddings, image_pe=pe.get_dense_pe(),
                                  sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                  multimask_output=False)
        masks = sam.postprocess_masks(low, input_size=resized.shape[:2], original_size=image.shape[:2])[:, 0]
    return pred, (masks > 0).numpy(), preds[1:]


def _lisa_input_ids(prompt) -> list[int]:
    """Our expanded ids back in LISA's form (the image as one -200)."""
    ids = prompt.ids.tolist()
    return ids[: prompt.image.start] + [IMAGE_TOKEN_INDEX] + ids[prompt.image.stop:]


@pytest.mark.parametrize("variant", LISA_VARIANTS)
def test_seg_embedding_and_mask_equal_lisas_forward(generators, lisa_dirs, variant):
    gen = generators[variant]
    image = make_image(150, 260, seed=3)
    prompt = gen.prompt(LISA_SYSTEM, QUERY, "Sure, it is [SEG].")
    hidden = gen.hidden_states(gen.inputs_embeds(prompt, gen.image_features(gen.pixel_values(image))))
    ours = gen.seg_embeddings(hidden, prompt)
    emb = gen.sam.embed(image)
    low, _ = gen.seg_masks(emb, ours)
    ours_mask = gen.sam.upscale(emb, low)

    # the comparison can fail: LISA's row one token later, or the layer below the final norm, is another embedding
    ref_pred, ref_mask, wrong = lisa_reference(lisa_dirs[variant], image, _lisa_input_ids(prompt), ((0, -1), (1, -2)))
    assert ours.shape == ref_pred.shape == (1, TINY_LISA_SAM.prompt_dim)
    torch.testing.assert_close(ours, ref_pred, atol=1e-5, rtol=1e-5)
    assert ours_mask.any() and np.array_equal(ours_mask, ref_mask)
    assert all((bad - ours).abs().max() > 1e-2 for bad in wrong)


# ---- attention ------------------------------------------------------------------------------------------------------

def test_recorded_rows_equal_eager_attention_and_make_the_grid(generators):
    from rea2seg.generator_discovery import attention_rows, generator_pass
    from rea2seg.image_cache import ImageEntry
    from rea2seg.models.attention import record_attention

    gen = generators["sesame"]
    image = make_image(140, 200, seed=5)
    prompt = gen.prompt(LISA_SYSTEM, QUERY, "Sure, it is [SEG].")
    embeds = gen.inputs_embeds(prompt, gen.image_features(gen.pixel_values(image)))
    rows = torch.arange(prompt.question.start, len(prompt.ids))
    with record_attention(rows, prompt.image, None) as rec:
        gen.hidden_states(embeds)
    eager = copy.deepcopy(gen.llava.model.language_model)
    eager.config._attn_implementation = "eager"
    with torch.no_grad():
        att = eager(inputs_embeds=embeds, output_attentions=True, use_cache=False).attentions
    assert sorted(rec.out) == list(range(gen.num_layers))
    for layer, a in enumerate(att):
        torch.testing.assert_close(rec.out[layer][0], a[0][:, rows][..., prompt.image].float(), atol=1e-6, rtol=1e-5)

    # the grid: mean over layers and heads, per row group (the row before [SEG]; the question rows), then the groups
    config = GeneratorConfig()
    layers = [1]
    grid, _, run = generator_pass(gen, image, QUERY.replace(" Please output segmentation mask.", ""), config, layers,
                                  ImageEntry())
    groups = attention_rows(run, "seg+question")
    assert groups["seg"] == [run.seg[0] - 1] and groups["question"][-1] == run.answer_start - 1
    per_row = att[1][0].float().mean(0)[:, run.image]
    want = torch.stack([per_row[g].mean(0) for g in groups.values()]).mean(0).reshape(gen.grid_size, gen.grid_size)
    torch.testing.assert_close(grid, want, atol=1e-6, rtol=1e-5)
    shifted = torch.stack([per_row[[r + 1 for r in g]].mean(0) for g in groups.values()]).mean(0)
    assert not torch.allclose(shifted.reshape_as(want), want, atol=1e-6, rtol=1e-5)  # the check tells rows apart


# ---- geometry: the CLIP grid covers the centre square -------------------------------------------------------------------

@pytest.mark.parametrize("variant", LISA_VARIANTS)
@pytest.mark.parametrize("hw", [(150, 260), (260, 150), (120, 120)])
def test_grid_cells_map_to_what_clip_sees_there(generators, variant, hw):
    """A dot painted where ``view_prompts`` puts a peak of cell (r, c) lands in CLIP's patch (r, c)."""
    from rea2seg.generator_discovery import heatmap_in_view, view_prompts

    gen = generators[variant]
    g = gen.grid_size
    box = gen.view_box(hw)
    patch = gen.image_processor.crop_size["height"] // g
    config = DiscoveryConfig(box_prompts=False)
    for r, c in [(0, 0), (g - 1, g - 1), (1, g - 2), (g // 2, 1)]:
        grid = torch.zeros(g, g)
        grid[r, c] = 1.0
        prompts, _, _ = view_prompts(grid, np.array([[r, c]], np.float32), box, config)
        x, y = prompts.points[0, 0]
        img = np.zeros((*hw, 3), np.uint8)
        img[max(int(y) - 1, 0): int(y) + 2, max(int(x) - 1, 0): int(x) + 2] = 255
        px = gen.pixel_values(img)[0].mean(0)
        cells = px.reshape(g, patch, g, patch).mean((1, 3))
        assert divmod(int(cells.argmax()), g) == (r, c), (r, c, x, y)
        heat = heatmap_in_view(grid, box, hw)
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        assert heat[:y0].sum() == 0 and heat[y1:].sum() == 0 and heat[:, :x0].sum() == 0 and heat[:, x1:].sum() == 0


# ---- discovery and the pipeline -------------------------------------------------------------------------------------------

def test_generator_mask_is_a_candidate_with_peak_candidates(generators, lisa_dirs):
    from rea2seg.generator_discovery import discover_with_generator

    gen = generators["lisa"]
    image = make_image(180, 240, seed=7)
    question = "the cup nearest the laptop"
    found = discover_with_generator(gen, gen.sam, image, question, DiscoveryConfig(min_sam_iou=0.0,
                                                                                   min_stability=0.0))
    sources = found.candidates.sources
    assert sources[0] == "generator" and any(s.startswith(("peak:", "box:")) for s in sources[1:])
    assert list(found.candidates.numbers) == list(range(1, len(sources) + 1))
    prompt = gen.prompt(LISA_SYSTEM, GeneratorConfig().query.format(question=question), "[SEG].")
    _, ref_mask, _ = lisa_reference(lisa_dirs["lisa"], image, _lisa_input_ids(prompt))
    assert np.array_equal(found.candidates.masks[0], ref_mask[0])
    x0, y0, x1, y1 = (int(round(v)) for v in gen.view_box(image.shape[:2]))
    assert found.heatmap[:, :x0].sum() == 0 and found.heatmap[:, x1:].sum() == 0 and found.heatmap.max() > 0
    assert found.grid.shape == (gen.grid_size, gen.grid_size)
    assert ((found.peaks[:, 0] >= x0) & (found.peaks[:, 0] <= x1)).all()
    # only the generator's masks when peaks are off; a generated answer without [SEG] gives no generator mask
    own = discover_with_generator(gen, gen.sam, image, question, generator=GeneratorConfig(peaks=False))
    assert own.candidates.sources == ["generator"]
    assert np.array_equal(own.candidates.masks[0], found.candidates.masks[0])
    none = discover_with_generator(gen, gen.sam, image, question, generator=GeneratorConfig(answer="No.", peaks=False))
    assert len(none.candidates) == 0


def test_generated_answers_are_greedy_and_their_seg_is_used(generators, monkeypatch):
    from rea2seg.generator_discovery import discover_with_generator

    gen = generators["sesame"]
    image = make_image(120, 160, seed=8)
    prompt = gen.prompt(LISA_SYSTEM, QUERY, None)
    embeds = gen.inputs_embeds(prompt, gen.image_features(gen.pixel_values(image)))
    want = []  # greedy decoding by hand: full forward, argmax of the last logits
    with torch.no_grad():
        e = embeds
        for _ in range(5):
            nxt = int(gen.llava(inputs_embeds=e, use_cache=False).logits[0, -1].argmax())
            want.append(nxt)
            if nxt == gen.tokenizer.eos_token_id:
                break
            e = torch.cat([e, gen.llava.get_input_embeddings()(torch.tensor([[nxt]]))], 1)
    assert gen.generate(embeds, 5) == want
    # a generated "Sure, it is [SEG]." gives the mask the same answer gives teacher-forced
    answer = gen.tokenizer.encode("Sure, it is [SEG].", add_special_tokens=False) + [gen.tokenizer.eos_token_id]
    monkeypatch.setattr(gen, "generate", lambda embeds, max_new_tokens: answer)
    generated = discover_with_generator(gen, gen.sam, image, "the cup", generator=GeneratorConfig(
        answer=None, peaks=False))
    forced = discover_with_generator(gen, gen.sam, image, "the cup", generator=GeneratorConfig(
        answer="Sure, it is [SEG].", peaks=False))
    assert generated.candidates.sources == ["generator"]
    assert np.array_equal(generated.candidates.masks, forced.candidates.masks)
    np.testing.assert_array_equal(generated.grid, forced.grid)


def test_bf16_generator_runs_and_stays_close(lisa_dirs, generators):
    gen16 = load_lisa(str(lisa_dirs["lisa"]), device="cpu", dtype="bf16")
    assert gen16.llava.dtype == torch.bfloat16 and gen16.sam.sam.image_encoder.pos_embed.dtype == torch.float32
    image = make_image(120, 160, seed=9)
    out = {}
    for name, gen in (("bf16", gen16), ("fp32", generators["lisa"])):
        prompt = gen.prompt(LISA_SYSTEM, QUERY, "[SEG].")
        hidden = gen.hidden_states(gen.inputs_embeds(prompt, gen.image_features(gen.pixel_values(image))))
        out[name] = gen.seg_embeddings(hidden, prompt)
        low, _ = gen.seg_masks(gen.sam.embed(image), out[name])
        assert low.dtype == torch.float32 and low.shape[0] == 1
    assert out["bf16"].dtype == torch.float32
    torch.testing.assert_close(out["bf16"], out["fp32"], atol=0.05, rtol=0.05)


def test_pipeline_preset_runs_discover_score_select(tiny_dir):
    from rea2seg import Rea2Seg

    pipe = Rea2Seg.from_preset("tiny-random-lisa", device="cpu")
    assert pipe.status()["vlm_family"] == "lisa" and not pipe.status()["scorer_shared"]
    image = make_image(120, 160, seed=1)
    result = pipe.segment(image, "the cup nearest the laptop", top_k=8)
    assert "generator" in [c["source"] for c in result.to_json()["candidates"]]
    assert result.mask.shape == (120, 160) and not np.isnan(result.score)
    assert "meaningless" in result.warning


# ---- errors ------------------------------------------------------------------------------------------------------------

def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def test_a_vlm_directory_is_not_lisa_format(tiny_paths):
    with pytest.raises(CheckpointError, match=r"not a LISA-format checkpoint: its config.json is model_type "
                                              r"'qwen2_5_vl', architectures Qwen2_5_VLForConditionalGeneration"):
        load_lisa(str(tiny_paths[0]), device="cpu")


def test_unmapped_or_missing_tensors_are_named(lisa_dirs, tmp_path):
    d = _copy(lisa_dirs["lisa"], tmp_path / "LLM" / "extra")
    shard = d / "pytorch_model-00002-of-00002.bin"
    part = torch.load(shard, weights_only=True)
    part["model.some_new_head.weight"] = torch.zeros(2)
    torch.save(part, shard)
    shutil.copytree(lisa_dirs["lisa"].parent / "tiny-random-clip-vit-large-patch14",
                    tmp_path / "LLM" / "tiny-random-clip-vit-large-patch14")
    with pytest.raises(CheckpointError, match=r"1 tensors match no rule \(model\.some_new_head\.weight\)"):
        load_lisa(str(d), device="cpu")
    del part["model.some_new_head.weight"]
    del part["lm_head.weight"]
    torch.save(part, shard)
    with pytest.raises(CheckpointError, match=r"LLaVA weights do not fit \(missing lm_head\.weight\)"):
        load_lisa(str(d), device="cpu")


def test_missing_clip_tower_names_the_path_and_the_command(lisa_dirs, tmp_path):
    d = _copy(lisa_dirs["lisa"], tmp_path / "alone" / "tiny-random-lisa")
    env_dir = tmp_path / "models"
    old = os.environ.get("REA2SEG_MODELS_DIR")
    os.environ["REA2SEG_MODELS_DIR"] = str(env_dir)
    try:
        with pytest.raises(ModelNotFoundError, match=r"CLIP vision tower rea2seg/tiny-random-clip-vit-large-patch14 "
                                                     r".* run `rea2seg models download rea2seg/tiny-random-clip"):
            load_lisa(str(d), device="cpu")
    finally:
        if old is None:
            os.environ.pop("REA2SEG_MODELS_DIR")
        else:
            os.environ["REA2SEG_MODELS_DIR"] = old


def test_missing_seg_token_and_missing_shard(lisa_dirs, tmp_path):
    d = _copy(lisa_dirs["lisa"], tmp_path / "LLM" / "noseg")
    (tmp_path / "LLM" / "tiny-random-clip-vit-large-patch14").symlink_to(
        lisa_dirs["lisa"].parent / "tiny-random-clip-vit-large-patch14")
    added = json.loads((d / "added_tokens.json").read_text())
    (d / "added_tokens.json").write_text(json.dumps({k: v for k, v in added.items() if k != "[SEG]"}))
    with pytest.raises(CheckpointError, match=r"has no \[SEG\] token"):
        load_lisa(str(d), device="cpu")
    (d / "pytorch_model-00001-of-00002.bin").unlink()
    with pytest.raises(CheckpointError, match=r"incomplete: pytorch_model.bin.index.json lists "
                                              r"pytorch_model-00001-of-00002.bin"):
        load_lisa(str(d), device="cpu")


def test_generator_needs_a_scorer_and_cannot_be_one(lisa_dirs, tiny_paths):
    from rea2seg import Rea2Seg

    with pytest.raises(InputError, match="cannot score them; pass a scorer VLM"):
        Rea2Seg.from_pretrained(str(lisa_dirs["lisa"]), device="cpu")
    with pytest.raises(InputError, match="segmentation MLLM .* not a scorer"):
        Rea2Seg.from_pretrained(str(tiny_paths[0]), str(tiny_paths[1]), scorer=str(lisa_dirs["lisa"]), device="cpu")


def test_download_fetches_the_checkpoint_and_its_bin_only_clip_tower(lisa_dirs, tmp_path, monkeypatch):
    """``rea2seg models download`` of a LISA repo: the .bin shards and tokenizer, then the CLIP tower its config names
    next to it (only pytorch_model.bin there, as in openai/clip-vit-large-patch14-336); both then load from the models
    folder by hub id. The hub is a local stand-in honouring ``allow_patterns``."""
    import fnmatch

    import huggingface_hub
    from rea2seg.models.vlm import download_vlm
    from safetensors.torch import load_file

    repos = {"xinlai/LISA-7B-v1": _copy(lisa_dirs["lisa"], tmp_path / "hub" / "lisa"),
             "openai/clip-vit-large-patch14-336": tmp_path / "hub" / "clip"}
    cfg = json.loads((repos["xinlai/LISA-7B-v1"] / "config.json").read_text())
    cfg["vision_tower"] = cfg["mm_vision_tower"] = "openai/clip-vit-large-patch14-336"
    (repos["xinlai/LISA-7B-v1"] / "config.json").write_text(json.dumps(cfg))
    clip = repos["openai/clip-vit-large-patch14-336"]
    shutil.copytree(lisa_dirs["lisa"].parent / "tiny-random-clip-vit-large-patch14", clip)
    torch.save(load_file(str(clip / "model.safetensors")), clip / "pytorch_model.bin")
    (clip / "model.safetensors").unlink()
    (clip / "tf_model.h5").write_bytes(b"not wanted")
    fetched = []

    def fake_snapshot_download(repo_id, local_dir=None, allow_patterns=None, local_files_only=False, **kw):
        if local_files_only or repo_id not in repos:
            raise FileNotFoundError(repo_id)
        for f in repos[repo_id].iterdir():
            if any(fnmatch.fnmatch(f.name, pat) for pat in allow_patterns):
                Path(local_dir).mkdir(parents=True, exist_ok=True)
                shutil.copy(f, Path(local_dir) / f.name)
                fetched.append(f"{repo_id}/{f.name}")
        return local_dir

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files",
                        lambda self, repo_id, **kw: [f.name for f in repos[repo_id].iterdir()])
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("REA2SEG_MODELS_DIR", str(tmp_path / "models"))
    path = download_vlm("xinlai/LISA-7B-v1")
    assert path == tmp_path / "models" / "LLM" / "LISA-7B-v1"
    assert "xinlai/LISA-7B-v1/pytorch_model-00001-of-00002.bin" in fetched
    assert "openai/clip-vit-large-patch14-336/pytorch_model.bin" in fetched
    assert not any(f.endswith("tf_model.h5") for f in fetched)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    gen = load_lisa("xinlai/LISA-7B-v1", device="cpu")
    assert gen.path == path and gen.grid_size == 8


# ---- the doors ---------------------------------------------------------------------------------------------------------

def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "rea2seg", *args], capture_output=True, text=True, cwd=cwd,
                          env=dict(os.environ), timeout=300)


@pytest.mark.slow
def test_cli_segment_and_eval_with_the_tiny_lisa_preset(tiny_dir, tmp_path, capsys):
    from rea2seg.cli.main import main

    img = tmp_path / "img.png"
    Image.fromarray(make_image(150, 200, seed=2)).save(img)
    r = _cli("segment", str(img), "the cup nearest the laptop", "--preset", "tiny-random-lisa", "--top-k", "8",
             "--json", "--quiet", cwd=tmp_path)  # as a user runs it
    assert r.returncode == 0, r.stderr
    sources = [c["source"] for c in json.loads(r.stdout)["candidates"]]
    assert "generator" in sources and any(s.startswith(("peak:", "box:")) for s in sources), sources

    val = tmp_path / "ReasonSeg" / "val"
    val.mkdir(parents=True)
    for i in range(2):
        Image.fromarray(make_image(64, 96, seed=i)).save(val / f"s{i}.jpg")
        (val / f"s{i}.json").write_text(json.dumps({"text": [f"the round shape {i}"], "is_sentence": False, "shapes": [
            {"label": "target", "points": [[10, 10], [40, 10], [40, 40], [10, 40]]}]}))
    assert main(["eval", str(val), "--preset", "tiny-random-lisa", "--out", str(tmp_path / "run"), "--quiet",
                 "--json"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["n_samples"] == 2 and summary["complete"]
    capsys.readouterr()
    assert main(["models", "check", "--preset", "tiny-random-lisa"]) == 0
    assert "tiny-random-lisa: ok" in capsys.readouterr().out


def test_langchain_and_mcp_take_the_preset(tiny_dir, tmp_path):
    pytest.importorskip("langchain_core")
    from mcp_server.cli import build_parser
    from rea2seg_tools import Rea2SegToolkit

    img = tmp_path / "img.png"
    Image.fromarray(make_image(100, 140, seed=4)).save(img)
    tools = {t.name: t for t in Rea2SegToolkit(preset="tiny-random-lisa", allowed_dirs=[str(tmp_path)]).get_tools()}
    msg = tools["reasoning_segment"].invoke({"type": "tool_call", "id": "1", "name": "reasoning_segment", "args": {
        "image_path": str(img), "question": "the cup nearest the laptop", "top_k": 8}})
    assert "generator" in json.dumps(msg.artifact.to_json())
    args = build_parser().parse_args(["--preset", "tiny-random-lisa"])
    assert args.preset == "tiny-random-lisa"
