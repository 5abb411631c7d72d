"""Write the workflow templates in ``workflows/`` (UI format, as the ComfyUI editor saves them) and their thumbnails.

The graphs are declared below; node inputs, outputs and widget order come from a real ComfyUI's ``/object_info``, so a
template always matches the node schemas. Run it after changing a node's inputs or outputs:

    python scripts/setup_comfyui.py && python scripts/build_workflows.py

The thumbnails are drawings of each graph (nodes, titles and typed links), made from the same JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import uuid
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests" / "comfyui"))

from comfyui_harness import ComfyServer, _extra_values, _input_specs, _is_widget  # noqa: E402

OUT_DIR = REPO_ROOT / "workflows"
PACK_ID = "rea2seg"  # the registry id (pyproject [project].name): lets ComfyUI-Manager offer the missing pack
PACK_VERSION = "0.1.0"
COMFY_VERSION = "0.3.75"
FRONTEND_VERSION = "1.32.9"
MODELS = {"preset": "default", "vlm": "(from preset)", "sam": "(from preset)", "device": "auto", "dtype": "auto",
          "keep_loaded": True, "auto_download": True}
QUESTION = "What is the girl wearing?"

# Each template, by its stable slug (the workflow id derives from it): ``file`` is the file name without .json, which
# ComfyUI's template browser shows as the card's title (it reads no title or description from the JSON; the thumbnail
# is ``<file>.jpg``); nodes as (key, type, (x, y), widget values, title or None); links as (from key, output name, to
# key, input name). Widgets not given take the node's default.
TEMPLATES = {
    "rea2seg_basic": dict(
        file="Reasoning segmentation step by step",
        title="Reasoning segmentation, step by step",
        note=("Reasoning segmentation in three stages.\n\n"
              "1. Load Rea2Seg Models: preset 'default' downloads Qwen2.5-VL-7B-Instruct into models/LLM and SAM ViT-H "
              "into models/sams on the first run (auto_download). Choose 'small' for GPUs under 16 GB, or 'custom' "
              "to pick files you already have.\n"
              "2. Discover Candidates: the VLM's attention to the question -> heat map -> SAM masks (numbered "
              "preview).\n3. Score Candidates: the VLM scores each one (text output, best first).\n"
              "4. Select Mask: the best candidate as a MASK, an overlay and its score.\n\n"
              "Change the question and the image; the mask comes out at the image's size."),
        nodes=[
            ("image", "LoadImage", (20, 160), {"image": "example.png"}, None),
            ("models", "Rea2Seg_LoadModels", (20, 560), MODELS, None),
            ("discover", "Rea2Seg_DiscoverCandidates", (400, 160), {"question": QUESTION}, None),
            ("score", "Rea2Seg_ScoreCandidates", (760, 160), {"mode": "yesno"}, None),
            ("select", "Rea2Seg_SelectMask", (1140, 160), {"top_k": 3, "merge": False}, None),
            ("preview_candidates", "PreviewImage", (400, 500), {}, "Numbered candidates"),
            ("preview_heat", "PreviewImage", (760, 500), {}, "Attention heat map"),
            ("show_reasoning", "PreviewAny", (1140, 420), {}, "Scores and reasoning"),
            ("mask_image", "MaskToImage", (1520, 160), {}, None),
            ("save_mask", "SaveImage", (1520, 270), {"filename_prefix": "rea2seg/mask"}, "Save mask"),
            ("save_overlay", "SaveImage", (1860, 160), {"filename_prefix": "rea2seg/overlay"}, "Save overlay"),
            ("show_score", "PreviewAny", (1140, 640), {}, "Score"),
        ],
        links=[
            ("image", "IMAGE", "discover", "image"), ("models", "models", "discover", "models"),
            ("models", "models", "score", "models"), ("discover", "candidates", "score", "candidates"),
            ("discover", "candidates_preview", "preview_candidates", "images"),
            ("discover", "heatmap", "preview_heat", "images"),
            ("score", "scored_candidates", "select", "candidates"), ("score", "reasoning", "show_reasoning", "source"),
            ("select", "mask", "mask_image", "mask"), ("mask_image", "IMAGE", "save_mask", "images"),
            ("select", "overlay", "save_overlay", "images"), ("select", "score", "show_score", "source"),
        ]),
    "rea2seg_cutout": dict(
        file="Cut-out and background blur",
        title="Use the mask downstream: cut-out and background blur",
        note=("The one-node Reasoning Segment answers the question with a MASK, which core nodes then use:\n"
              "- Invert Mask + Join Image with Alpha: a PNG cut-out with a transparent background (Join Image with "
              "Alpha treats its mask as 'transparent here', hence the inversion).\n"
              "- Image Blur + Image Composite Masked: the answer stays sharp over a blurred copy of the image.\n\n"
              "Models: as in the basic template (preset 'default' downloads on first run)."),
        nodes=[
            ("image", "LoadImage", (20, 160), {"image": "example.png"}, None),
            ("models", "Rea2Seg_LoadModels", (20, 560), MODELS, None),
            ("segment", "Rea2Seg_ReasoningSegment", (400, 160),
             {"question": "the girl", "mode": "yesno", "top_k": 3, "merge": False}, None),
            ("invert", "InvertMask", (780, 160), {}, None),
            ("join", "JoinImageWithAlpha", (1080, 160), {}, None),
            ("save_cutout", "SaveImage", (1380, 160), {"filename_prefix": "rea2seg/cutout"}, "Save cut-out (RGBA)"),
            ("blur", "ImageBlur", (780, 420), {"blur_radius": 15, "sigma": 6.0}, None),
            ("composite", "ImageCompositeMasked", (1080, 420), {"x": 0, "y": 0, "resize_source": False}, None),
            ("save_blur", "SaveImage", (1380, 520), {"filename_prefix": "rea2seg/background_blur"},
             "Save background blur"),
            ("show_reasoning", "PreviewAny", (400, 520), {}, "Scores and reasoning"),
        ],
        links=[
            ("image", "IMAGE", "segment", "image"), ("models", "models", "segment", "models"),
            ("segment", "mask", "invert", "mask"), ("image", "IMAGE", "join", "image"),
            ("invert", "MASK", "join", "alpha"), ("join", "IMAGE", "save_cutout", "images"),
            ("image", "IMAGE", "blur", "image"), ("blur", "IMAGE", "composite", "destination"),
            ("image", "IMAGE", "composite", "source"), ("segment", "mask", "composite", "mask"),
            ("composite", "IMAGE", "save_blur", "images"), ("segment", "reasoning", "show_reasoning", "source"),
        ]),
    "rea2seg_compare_topk": dict(
        file="Compare the top-k candidates",
        title="Compare the top-k candidates",
        note=("See the best candidates side by side before trusting one.\n"
              "- Score Candidates in 'reasoning' mode: the VLM explains each score (text output).\n"
              "- Top-k Candidate Masks: the k best as a batch of masks and labelled overlays (rank, candidate "
              "number as in the numbered preview, score).\n"
              "- Select Mask with merge on: the union of the top 3, for answers made of several parts.\n\n"
              "Models: as in the basic template (preset 'default' downloads on first run)."),
        nodes=[
            ("image", "LoadImage", (20, 160), {"image": "example.png"}, None),
            ("models", "Rea2Seg_LoadModels", (20, 560), MODELS, None),
            ("discover", "Rea2Seg_DiscoverCandidates", (400, 160), {"question": QUESTION, "max_candidates": 8},
             None),
            ("score", "Rea2Seg_ScoreCandidates", (760, 160), {"mode": "reasoning"}, None),
            ("topk", "Rea2Seg_CandidateMasks", (1140, 160), {"top_k": 4}, None),
            ("preview_topk", "PreviewImage", (1520, 160), {}, "Top-4 candidates"),
            ("show_ranking", "PreviewAny", (1140, 340), {}, "Ranking"),
            ("merged", "Rea2Seg_SelectMask", (760, 640), {"top_k": 3, "merge": True}, "Union of the top 3"),
            ("preview_merged", "PreviewImage", (1140, 560), {}, "Merged overlay"),
            ("preview_candidates", "PreviewImage", (400, 500), {}, "Numbered candidates"),
            ("show_reasoning", "PreviewAny", (760, 420), {}, "Scores and reasoning"),
        ],
        links=[
            ("image", "IMAGE", "discover", "image"), ("models", "models", "discover", "models"),
            ("models", "models", "score", "models"), ("discover", "candidates", "score", "candidates"),
            ("discover", "candidates_preview", "preview_candidates", "images"),
            ("score", "scored_candidates", "topk", "candidates"), ("topk", "overlays", "preview_topk", "images"),
            ("topk", "ranking", "show_ranking", "source"), ("score", "scored_candidates", "merged", "candidates"),
            ("merged", "overlay", "preview_merged", "images"), ("score", "reasoning", "show_reasoning", "source"),
        ]),
}

IMAGE_NODES = {"PreviewImage", "SaveImage", "LoadImage"}
TEXT_NODES = {"PreviewAny"}


def _spec_type(spec: list) -> str:
    return "COMBO" if isinstance(spec[0], list) else spec[0]


def _default(spec: list):
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if "default" in opts:
        return opts["default"]
    if isinstance(spec[0], list):
        return spec[0][0]
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(spec[0])


def _size(ntype: str, n_sockets: int, n_widgets: int, multiline: bool) -> list[int]:
    if ntype in IMAGE_NODES:
        return [300, 320]
    if ntype in TEXT_NODES:
        return [340, 180]
    width = 340 if ntype.startswith("Rea2Seg_") else 260
    return [width, 46 + 22 * n_sockets + 26 * n_widgets + (80 if multiline else 0)]


def build(name: str, spec: dict, object_info: dict) -> dict:
    keys = [n[0] for n in spec["nodes"]]
    ids = {k: i + 1 for i, k in enumerate(keys)}
    nodes, links = [], []
    out_links: dict[tuple[str, int], list[int]] = {}
    in_link: dict[tuple[str, str], int] = {}
    for lid, (src, out_name, dst, in_name) in enumerate(spec["links"], 1):
        src_type = dict((n[0], n[1]) for n in spec["nodes"])[src]
        info = object_info[src_type]
        names = info.get("output_name") or info["output"]
        slot = list(names).index(out_name)
        dst_type = dict((n[0], n[1]) for n in spec["nodes"])[dst]
        dst_names = [n for n, _ in _input_specs(object_info[dst_type])]
        if in_name not in dst_names:
            raise SystemExit(f"{name}: {dst_type} has no input {in_name!r} ({dst_names})")
        links.append([lid, ids[src], slot, ids[dst], dst_names.index(in_name), info["output"][slot]])
        out_links.setdefault((src, slot), []).append(lid)
        in_link[(dst, in_name)] = lid
    order = _topological(keys, spec["links"])
    for key, ntype, pos, widgets, title in spec["nodes"]:
        info = object_info[ntype]
        inputs, values, n_sockets, n_widgets, multiline = [], [], 0, 0, False
        for in_name, ispec in _input_specs(info):
            link = in_link.get((key, in_name))
            if _is_widget(ispec):
                n_widgets += 1
                multiline |= bool(len(ispec) > 1 and isinstance(ispec[1], dict) and ispec[1].get("multiline"))
                value = widgets[in_name] if in_name in widgets else _default(ispec)
                values.append(value)
                if _extra_values(ispec):
                    values.append("image")  # the upload button's value, as the editor saves LoadImage
                inputs.append({"name": in_name, "type": _spec_type(ispec), "widget": {"name": in_name}, "link": link})
            else:
                n_sockets += 1
                inputs.append({"name": in_name, "type": _spec_type(ispec), "link": link})
        unknown = set(widgets) - {n for n, s in _input_specs(info) if _is_widget(s)}
        if unknown:
            raise SystemExit(f"{name}: {ntype} has no widget {sorted(unknown)}")
        names = info.get("output_name") or info["output"]
        outputs = [{"name": names[i], "type": t, "links": out_links.get((key, i), []), "slot_index": i}
                   for i, t in enumerate(info["output"])]
        node = {"id": ids[key], "type": ntype, "pos": list(pos),
                "size": _size(ntype, max(n_sockets, len(outputs)), n_widgets, multiline), "flags": {},
                "order": order.index(key), "mode": 0, "inputs": inputs, "outputs": outputs,
                "properties": {"Node name for S&R": ntype,
                               **({"cnr_id": PACK_ID, "ver": PACK_VERSION} if ntype.startswith("Rea2Seg_")
                                  else {"cnr_id": "comfy-core", "ver": COMFY_VERSION})},
                "widgets_values": values}
        if title:
            node["title"] = title
        nodes.append(node)
    note_id = len(nodes) + 1
    nodes.append({"id": note_id, "type": "Note", "pos": [20, -120], "size": [740, 240], "flags": {},
                  "order": len(nodes), "mode": 0, "inputs": [], "outputs": [], "properties": {},
                  "widgets_values": [spec["note"]], "title": spec["title"], "color": "#432", "bgcolor": "#653"})
    return {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"rea2seg/workflows/{name}")), "revision": 0,
            "last_node_id": note_id, "last_link_id": len(links), "nodes": nodes, "links": links, "groups": [],
            "config": {}, "extra": {"ds": {"scale": 0.75, "offset": [40, 160]}, "frontendVersion": FRONTEND_VERSION},
            "version": 0.4}


def _topological(keys: list[str], links: list[tuple]) -> list[str]:
    deps = {k: {src for src, _, dst, _ in links if dst == k} for k in keys}
    order: list[str] = []
    while len(order) < len(keys):
        ready = [k for k in keys if k not in order and deps[k] <= set(order)]
        if not ready:
            raise SystemExit("the graph has a cycle")
        order += ready
    return order


# ---- thumbnails: a drawing of the graph ----------------------------------------------------------------------------

LINK_COLORS = {"IMAGE": (100, 181, 246), "MASK": (129, 199, 132), "STRING": (255, 213, 79), "FLOAT": (170, 238, 136),
               "REA2SEG_MODELS": (206, 147, 216), "REA2SEG_CANDIDATES": (255, 138, 101)}


def thumbnail(workflow: dict, path: Path, width: int = 640, height: int = 400) -> None:
    from PIL import Image, ImageDraw, ImageFont

    nodes = {n["id"]: n for n in workflow["nodes"] if n["type"] != "Note"}
    x0 = min(n["pos"][0] for n in nodes.values()) - 20
    y0 = min(n["pos"][1] for n in nodes.values()) - 40
    x1 = max(n["pos"][0] + n["size"][0] for n in nodes.values()) + 20
    y1 = max(n["pos"][1] + n["size"][1] for n in nodes.values()) + 20
    s = min(width / (x1 - x0), (height - 36) / (y1 - y0))
    ox, oy = (width - (x1 - x0) * s) / 2, 36 + (height - 36 - (y1 - y0) * s) / 2

    def pt(x, y):
        return ox + (x - x0) * s, oy + (y - y0) * s

    img = Image.new("RGB", (width, height), (32, 32, 36))
    draw = ImageDraw.Draw(img)
    try:
        font, title_font = ImageFont.load_default(size=11), ImageFont.load_default(size=17)
    except TypeError:  # Pillow < 10.1
        font = title_font = ImageFont.load_default()
    for _, src, slot, dst, dslot, ltype in workflow["links"]:
        a, b = nodes[src], nodes[dst]
        p = pt(a["pos"][0] + a["size"][0], a["pos"][1] + 40 + 22 * slot)
        q = pt(b["pos"][0], b["pos"][1] + 40 + 22 * dslot)
        mid = (p[0] + q[0]) / 2
        curve = [(p[0] + (mid - p[0]) * t * 2 if t < .5 else mid + (q[0] - mid) * (t - .5) * 2,
                  p[1] + (q[1] - p[1]) * (3 * t * t - 2 * t * t * t)) for t in [i / 24 for i in range(25)]]
        draw.line(curve, fill=LINK_COLORS.get(ltype, (200, 200, 200)), width=2)
    for n in nodes.values():
        a, b = pt(*n["pos"]), pt(n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
        ours = n["type"].startswith("Rea2Seg_")
        draw.rounded_rectangle([a, b], radius=5, fill=(58, 52, 70) if ours else (53, 53, 58),
                               outline=(190, 140, 230) if ours else (90, 90, 96))
        draw.rounded_rectangle([a, (b[0], a[1] + 16)], radius=5, fill=(110, 70, 150) if ours else (70, 70, 78))
        label = n.get("title") or n["type"].replace("Rea2Seg_", "")
        draw.text((a[0] + 4, a[1] + 2), label[: max(4, int((b[0] - a[0]) / 6.2))], fill=(240, 240, 240), font=font)
    title = next(n for n in workflow["nodes"] if n["type"] == "Note")["title"]
    draw.text((12, 9), f"Rea2Seg: {title}", fill=(250, 250, 250), font=title_font)
    img.save(path, quality=88)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Write workflows/*.json and *.jpg from the graphs declared here.")
    ap.add_argument("--out", default=str(OUT_DIR))
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    from setup_comfyui import ensure_comfyui

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        (base / "custom_nodes").mkdir()
        (base / "custom_nodes" / PACK_ID).symlink_to(REPO_ROOT, target_is_directory=True)
        comfy_dir, packages = ensure_comfyui(COMFY_VERSION)
        server = ComfyServer(comfy_dir, base, packages).start(ready_node="Rea2Seg_LoadModels")
        try:
            _, object_info = server.get("/object_info", timeout=60)
        finally:
            server.stop()
    out = Path(args.out)
    out.mkdir(exist_ok=True)
    for name, spec in TEMPLATES.items():
        wf = build(name, spec, object_info)
        (out / f"{spec['file']}.json").write_text(json.dumps(wf, indent=2) + "\n")
        thumbnail(wf, out / f"{spec['file']}.jpg")
        print(f"wrote {out / spec['file']}.json and .jpg")
    return 0


if __name__ == "__main__":
    sys.exit(main())
