"""The node pack in real ComfyUI servers (0.3.75, and 0.33.0 where its tarball is present; headless, 127.0.0.1),
driven over HTTP and the websocket as the editor does. Models are tiny random-weight ones: these tests prove plumbing
(types, shapes, sizes, errors, progress, interrupts), never segmentation quality."""
from __future__ import annotations

import copy
import io
import json
import os
import re
import subprocess
import sys
import time
import urllib.parse

import numpy as np
import pytest
from PIL import Image

from rea2seg.config import MAX_TOP_K

from comfy_fixtures import USER_SAM, USER_SAM2, USER_SAM3, USER_VLM
from comfyui_harness import REPO_ROOT, TEST_IMAGE, TIMINGS, messages, run_with_events, ui_to_api

pytestmark = pytest.mark.slow

WORKFLOWS = sorted((REPO_ROOT / "workflows").glob("*.json"))
OURS = {"Rea2Seg_LoadModels", "Rea2Seg_DiscoverCandidates", "Rea2Seg_ScoreCandidates", "Rea2Seg_SelectMask",
        "Rea2Seg_CandidateMasks", "Rea2Seg_ReasoningSegment"}
ENGINE_NODES = {"Rea2Seg_DiscoverCandidates", "Rea2Seg_ScoreCandidates", "Rea2Seg_ReasoningSegment"}
BASIC = REPO_ROOT / "workflows" / "Reasoning segmentation step by step.json"
# The templates ship with preset "default" (downloads ~19 GB on first use); here LoadModels points at the tiny models
# placed in ComfyUI's model folders instead. Nothing else in a template is changed.
TINY_MODELS = {"preset": "custom", "vlm": USER_VLM, "sam": USER_SAM, "auto_download": False}


def with_inputs(prompt: dict, class_type: str, **inputs) -> dict:
    prompt = copy.deepcopy(prompt)
    for node in prompt.values():
        if node["class_type"] == class_type:
            node["inputs"].update(inputs)
    return prompt


def tiny(prompt: dict) -> dict:
    return with_inputs(prompt, "Rea2Seg_LoadModels", **TINY_MODELS)


def models_node(**inputs) -> dict:
    return {"class_type": "Rea2Seg_LoadModels", "inputs": {**TINY_MODELS, "device": "auto", "dtype": "auto",
                                                           "keep_loaded": True, **inputs}}


def saved_images(comfy, entry: dict) -> dict[str, list[Image.Image]]:
    """Every image a prompt wrote (SaveImage / PreviewImage outputs), by node id, fetched through ``/view``."""
    out = {}
    for node_id, node_out in entry["outputs"].items():
        if "images" in node_out:
            out[node_id] = [Image.open(io.BytesIO(comfy.view(im))) for im in node_out["images"]]
    return out


def assert_final_texts(prompt: dict, events: list, cached: set = frozenset()) -> None:
    """The last text each of our nodes showed is what it produced ("loaded ...", "found 3 candidates", "scored ...",
    "score ..."), not the label of a stage it went through ("discovered", "scoring", "downloading ...")."""
    last = {e["data"]["node"]: e["data"]["text"] for e in events if e["type"] == "progress_text"}
    for nid, node in prompt.items():
        if node["class_type"] in ENGINE_NODES | {"Rea2Seg_LoadModels"} and nid not in cached:
            assert re.match(r"(loaded|found|scored|score) ", last.get(nid, "")), (node["class_type"], last.get(nid))


def assert_success(entry: dict) -> None:
    msgs = messages(entry)
    assert entry["status"]["status_str"] == "success", json.dumps(msgs.get("execution_error"), indent=1)[:3000]


def error_of(entry: dict) -> dict:
    assert entry["status"]["status_str"] == "error"
    return messages(entry)["execution_error"]


# The servers (one per ComfyUI version for the session), their base directories and /object_info come from
# comfy_fixtures.py.

# ---- start-up and node definitions -----------------------------------------------------------------------------------

def test_pack_import_is_light():
    """Importing the pack (what ComfyUI does at start-up) loads neither transformers, the engine's pipeline, nor any
    ComfyUI module, and touches no network."""
    code = ("import sys; sys.path.insert(0, %r); import rea2seg_nodes; "
            "heavy = [m for m in ('transformers', 'rea2seg.pipeline', 'rea2seg.models.vlm', 'folder_paths', "
            "'comfy', 'segment_anything', 'huggingface_hub') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code % str(REPO_ROOT)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_object_info_declares_our_nodes(comfy, object_info):
    assert OURS <= set(object_info), f"missing: {OURS - set(object_info)}\n{comfy.log_tail()}"
    pack = str(comfy.base_dir / "custom_nodes" / "rea2seg")
    assert not [line for line in comfy.log_text().splitlines()
                if pack in line and ("IMPORT FAILED" in line or "Cannot import" in line)]
    for node_id in OURS:
        info = object_info[node_id]
        assert info["category"] == "Rea2Seg"
        assert info["python_module"] == "custom_nodes.rea2seg"
        assert info["description"] and info["display_name"]
    want_outputs = {
        "Rea2Seg_LoadModels": (["REA2SEG_MODELS"], ["models"]),
        "Rea2Seg_DiscoverCandidates": (["REA2SEG_CANDIDATES", "IMAGE", "IMAGE"],
                                       ["candidates", "candidates_preview", "heatmap"]),
        "Rea2Seg_ScoreCandidates": (["REA2SEG_CANDIDATES", "STRING"], ["scored_candidates", "reasoning"]),
        "Rea2Seg_SelectMask": (["MASK", "IMAGE", "FLOAT"], ["mask", "overlay", "score"]),
        "Rea2Seg_CandidateMasks": (["MASK", "IMAGE", "STRING"], ["masks", "overlays", "ranking"]),
        "Rea2Seg_ReasoningSegment": (["MASK", "IMAGE", "FLOAT", "STRING"], ["mask", "overlay", "score", "reasoning"]),
    }
    for node_id, (types, names) in want_outputs.items():
        assert object_info[node_id]["output"] == types
        assert object_info[node_id]["output_name"] == names

    def req(node_id):
        return object_info[node_id]["input"]["required"]

    load = req("Rea2Seg_LoadModels")
    assert {"custom", "default", "small", "tiny-random", "tiny-random-lisa", "lisa-7b", "sesame"} \
        <= set(load["preset"][0])
    assert USER_VLM in load["vlm"][0]  # a directory under models/LLM with a config.json
    assert USER_SAM in load["sam"][0]  # a file in models/sams
    # transformers checkpoints in models/sam2, models/sam3
    assert {f"sam2/{USER_SAM2}", f"sam3/{USER_SAM3}"} <= set(load["sam"][0])
    assert {"sam2", "sam3", "tiny-random-sam2", "tiny-random-sam3"} <= set(load["preset"][0])
    assert load["device"][0] == ["auto", "cpu"] and load["keep_loaded"][0] == "BOOLEAN"
    assert load["auto_download"][0] == "BOOLEAN"
    discover = req("Rea2Seg_DiscoverCandidates")
    assert discover["image"][0] == "IMAGE" and discover["models"][0] == "REA2SEG_MODELS"
    assert discover["question"][0] == "STRING" and discover["question"][1]["multiline"] is True
    assert {k: discover["max_candidates"][1][k] for k in ("min", "max", "default")} == {"min": 1, "max": 32,
                                                                                        "default": 8}
    assert (discover["peak_threshold"][1]["min"], discover["peak_threshold"][1]["max"]) == (0.05, 1.0)
    score = req("Rea2Seg_ScoreCandidates")
    assert score["candidates"][0] == "REA2SEG_CANDIDATES"
    assert score["mode"][0] == ["yesno", "reasoning", "comparative"]
    select = req("Rea2Seg_SelectMask")
    assert select["candidates"][0] == "REA2SEG_CANDIDATES"
    assert (select["top_k"][1]["min"], select["top_k"][1]["max"]) == (1, MAX_TOP_K) and select["merge"][0] == "BOOLEAN"
    assert set(req("Rea2Seg_ReasoningSegment")) == {"image", "question", "models", "mode", "top_k", "merge"}
    for node_id in ("Rea2Seg_DiscoverCandidates", "Rea2Seg_ReasoningSegment"):  # optional: old workflows load
        optional = object_info[node_id]["input"]["optional"]
        assert {"source_attention", "source_concepts"} <= set(optional)
        assert optional["source_concepts"][0] == ["from preset", "on", "off"]
        assert optional["source_concepts"][1]["default"] == "from preset"
    assert "source_boxes" in object_info["Rea2Seg_ReasoningSegment"]["input"]["optional"]
    assert "source_boxes" not in object_info["Rea2Seg_DiscoverCandidates"]["input"]["optional"]  # vlm_proposals
    for node_id in OURS:  # every widget explains itself
        specs = {**req(node_id), **object_info[node_id]["input"].get("optional", {})}
        for name, spec in specs.items():
            if len(spec) > 1 and name not in ("models", "candidates"):
                assert spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"


def test_templates_are_listed_and_served(comfy):
    names = sorted(p.stem for p in WORKFLOWS)
    assert len(names) >= 3
    status, listing = comfy.get("/api/workflow_templates")
    assert status == 200 and sorted(listing["rea2seg"]) == names
    for path in WORKFLOWS:
        # the file name is the card's title in the template browser: words, not a slug
        assert re.fullmatch(r"[A-Z][a-z-]+( [a-z-]+)+", path.stem), path.stem
        quoted = urllib.parse.quote(path.name)  # as the frontend requests it
        status, body = comfy.get(f"/api/workflow_templates/rea2seg/{quoted}")
        assert status == 200 and body == json.loads(path.read_text())
        thumb = path.with_suffix(".jpg")  # the only thumbnail name the frontend asks a pack for
        with Image.open(thumb) as im:
            assert im.format == "JPEG" and im.width >= 256
        status, _ = comfy.get(f"/api/workflow_templates/rea2seg/{urllib.parse.quote(thumb.name)}")
        assert status == 200


def test_template_category_is_named_by_the_pack(comfy):
    """The frontend names a pack's entry under Templates -> Extensions with templateWorkflows.category.<folder> from
    the merged /i18n locales (else it shows the bare folder name)."""
    status, i18n = comfy.get("/i18n")
    assert status == 200
    assert i18n["en"]["templateWorkflows"]["category"]["rea2seg"] == "Rea2Seg"


# ---- the templates, converted to API format and queued ---------------------------------------------------------------

@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_template_runs(comfy, object_info, path):
    workflow = json.loads(path.read_text())
    assert workflow["version"] == 0.4 and workflow["links"]
    prompt = ui_to_api(workflow, object_info)
    loaders = [n for n in prompt.values() if n["class_type"] == "Rea2Seg_LoadModels"]
    assert loaders and all(n["inputs"]["preset"] == "default" and n["inputs"]["auto_download"] for n in loaders)
    assert {n["class_type"] for n in prompt.values() if n["class_type"] == "LoadImage"} == {"LoadImage"}
    prompt = with_inputs(tiny(prompt), "LoadImage", image=TEST_IMAGE)  # 96x64: a height/width swap cannot pass

    t = time.monotonic()
    entry, events = run_with_events(comfy, prompt)
    TIMINGS[f"{comfy.version}: template {path.stem} (96x64 image)"] = time.monotonic() - t
    assert_success(entry)

    output_nodes = {nid for nid, n in prompt.items() if object_info[n["class_type"]]["output_node"]}
    assert set(entry["outputs"]) == output_nodes  # every preview / save node produced something
    images = saved_images(comfy, entry)
    assert images
    for node_id, ims in images.items():
        for im in ims:
            assert im.size == (96, 64), f"{prompt[node_id]['_meta']['title']}: {im.size}"
    for node_id, node_out in entry["outputs"].items():
        if "text" in node_out:
            assert node_out["text"] and node_out["text"][0].strip()
    cached = set(messages(entry)["execution_cached"]["nodes"])
    progressed = {e["data"]["node"] for e in events if e["type"] == "progress"}
    for nid, node in prompt.items():
        if node["class_type"] in ENGINE_NODES and nid not in cached:
            assert nid in progressed, f"no progress from {node['class_type']}"
    assert_final_texts(prompt, events, cached)
    for nid, node_out in entry["outputs"].items():
        for text in node_out.get("text", []):
            title = prompt[nid]["_meta"]["title"]
            if title == "Score":  # rounded as JSON shows scores, not 0.5393660664558411
                assert re.fullmatch(r"\d+(\.\d{1,4})?", text.strip()), text
            elif title in ("Scores and reasoning", "Ranking"):  # one Markdown list item per candidate
                items = [line for line in text.splitlines() if line.strip() and not line.startswith("Warning: ")]
                assert items and all(re.match(r"\d+\. candidate \d+: score ", line) for line in items), text

    titles = {prompt[nid]["_meta"]["title"]: ims for nid, ims in images.items()}
    if "Save mask" in titles:  # the MASK output, saved through MaskToImage: binary, the input's size
        mask = np.asarray(titles["Save mask"][0].convert("L"))
        assert set(np.unique(mask)) <= {0, 255}
    if "Save cut-out (RGBA)" in titles:
        cutout = titles["Save cut-out (RGBA)"][0]
        assert cutout.mode == "RGBA" and set(np.unique(np.asarray(cutout)[..., 3])) <= {0, 255}
    if "Top-4 candidates" in titles:
        assert 1 <= len(titles["Top-4 candidates"]) <= 4


def test_basic_template_as_shipped_with_comfyuis_example_image(comfy, object_info):
    """The basic template exactly as saved (LoadImage: example.png, as in every ComfyUI install), models aside."""
    prompt = tiny(ui_to_api(json.loads(BASIC.read_text()), object_info))
    t = time.monotonic()
    entry = comfy.run(prompt)
    TIMINGS[f"{comfy.version}: template {BASIC.stem} (768x768 example.png)"] = time.monotonic() - t
    assert_success(entry)
    for ims in saved_images(comfy, entry).values():
        assert all(im.size == (768, 768) for im in ims)


def test_basic_template_with_the_tiny_lisa_generator_preset(comfy, object_info):
    """The basic template with LoadModels on preset tiny-random-lisa: a LISA-format generator (with the CLIP tower it
    names next to it) for discovery and a tiny Qwen2.5-VL scorer, built where every door builds tiny models, never
    among the user's models."""
    workflow = json.loads(BASIC.read_text())
    prompt = with_inputs(ui_to_api(workflow, object_info), "Rea2Seg_LoadModels", preset="tiny-random-lisa",
                         vlm="(from preset)", sam="(from preset)", auto_download=False)
    t = time.monotonic()
    entry = comfy.run(prompt)
    TIMINGS["template rea2seg_basic, preset tiny-random-lisa"] = time.monotonic() - t
    assert_success(entry)
    assert not (comfy.base_dir / "models" / "LLM" / "tiny-random-lisa").exists()
    images = saved_images(comfy, entry)
    assert images and all(im.size == (768, 768) for ims in images.values() for im in ims)


def test_image_batch_is_processed_per_image(comfy):
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": TEST_IMAGE}},
        "2": {"class_type": "RepeatImageBatch", "inputs": {"image": ["1", 0], "amount": 3}},
        "3": models_node(),
        "4": {"class_type": "Rea2Seg_DiscoverCandidates",
              "inputs": {"image": ["2", 0], "question": "the red box, in a batch", "models": ["3", 0],
                         "max_candidates": 4, "peak_threshold": 0.3, "vlm_proposals": False}},
        "5": {"class_type": "Rea2Seg_SelectMask", "inputs": {"candidates": ["4", 0], "top_k": 2, "merge": True}},
        "6": {"class_type": "MaskToImage", "inputs": {"mask": ["5", 0]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "batch/mask"}},
        "8": {"class_type": "PreviewImage", "inputs": {"images": ["4", 2]}},
        "9": {"class_type": "Rea2Seg_CandidateMasks", "inputs": {"candidates": ["4", 0], "top_k": 2}},
        "10": {"class_type": "PreviewImage", "inputs": {"images": ["9", 1]}},
    }
    entry = comfy.run(prompt)
    assert_success(entry)
    images = saved_images(comfy, entry)
    assert len(images["7"]) == 3 and len(images["8"]) == 3  # one mask and one heat map per image
    assert 3 <= len(images["10"]) <= 6  # up to 2 candidates per image
    assert all(im.size == (96, 64) for ims in images.values() for im in ims)


def test_tiny_random_preset_says_its_output_is_meaningless(comfy):
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": TEST_IMAGE}},
        "2": models_node(preset="tiny-random", vlm="(from preset)", sam="(from preset)", keep_loaded=False),
        "3": {"class_type": "Rea2Seg_ReasoningSegment",
              "inputs": {"image": ["1", 0], "question": "the red box", "models": ["2", 0], "mode": "comparative",
                         "top_k": 3, "merge": False}},
        "4": {"class_type": "PreviewAny", "inputs": {"source": ["3", 3]}},
        "5": {"class_type": "MaskPreview", "inputs": {"mask": ["3", 0]}},
    }
    entry = comfy.run(prompt)
    assert_success(entry)
    assert "meaningless" in entry["outputs"]["4"]["text"][0]
    assert saved_images(comfy, entry)["5"][0].size == (96, 64)


def test_sam2_and_sam3_from_the_model_folders_and_presets(comfy):
    """SAM 2.1 / SAM 3 directories chosen from models/sam2 and models/sam3, the tiny-random-sam2 preset, and the
    candidate-source switches (SAM 3's concept candidates on, attention off)."""
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": TEST_IMAGE}},
        "2": models_node(sam=f"sam3/{USER_SAM3}"),
        "3": {"class_type": "Rea2Seg_DiscoverCandidates",
              "inputs": {"image": ["1", 0], "question": "the red box", "models": ["2", 0], "max_candidates": 4,
                         "peak_threshold": 0.3, "vlm_proposals": False, "source_attention": "off",
                         "source_concepts": "on"}},
        "4": {"class_type": "Rea2Seg_SelectMask", "inputs": {"candidates": ["3", 0], "top_k": 1, "merge": False}},
        "5": {"class_type": "MaskPreview", "inputs": {"mask": ["4", 0]}},
        "6": {"class_type": "LoadImage", "inputs": {"image": TEST_IMAGE}},
        "7": models_node(preset="tiny-random-sam2", vlm="(from preset)", sam="(from preset)"),
        "8": {"class_type": "Rea2Seg_ReasoningSegment",
              "inputs": {"image": ["6", 0], "question": "the red box", "models": ["7", 0], "mode": "yesno",
                         "top_k": 2, "merge": False}},
        "9": {"class_type": "PreviewAny", "inputs": {"source": ["8", 3]}},
        "10": {"class_type": "MaskPreview", "inputs": {"mask": ["8", 0]}},
    }
    t = time.monotonic()
    entry = comfy.run(prompt)
    TIMINGS[f"{comfy.version}: SAM 3 concepts + tiny-random-sam2 preset"] = time.monotonic() - t
    assert_success(entry)
    images = saved_images(comfy, entry)
    assert images["5"][0].size == images["10"][0].size == (96, 64)
    assert "meaningless" in entry["outputs"]["9"]["text"][0]

    err = error_of(comfy.run(with_inputs(prompt, "Rea2Seg_ReasoningSegment", source_concepts="on")))
    assert err["node_type"] == "Rea2Seg_ReasoningSegment" and "needs SAM 3" in err["exception_message"]


def test_missing_sam2_of_a_preset_names_its_folder(comfy, comfy_base):
    """The sam2 preset's VLM is there (a stand-in linked under its name), its SAM 2.1 is not: the error names
    models/sam2/<name> and a download command that puts it there."""
    link = comfy_base / "models" / "LLM" / "Qwen2.5-VL-7B-Instruct"
    link.symlink_to(comfy_base / "models" / "LLM" / USER_VLM)
    try:
        err = error_of(comfy.run(discover_prompt("anything", **{
            "2__preset": "sam2", "2__vlm": "(from preset)", "2__sam": "(from preset)", "2__auto_download": False})))
    finally:
        link.unlink()
    expected = comfy.base_dir / "models" / "sam2" / "sam2.1-hiera-large"
    assert err["exception_type"].endswith("ModelNotFoundError")
    assert err["exception_message"].startswith(f"segmenter facebook/sam2.1-hiera-large not found: expected {expected} ")
    assert f'download facebook/sam2.1-hiera-large --local-dir "{expected}"' in err["exception_message"]


# ---- error paths: ComfyUI's own errors -------------------------------------------------------------------------------

def discover_prompt(question: str, **overrides) -> dict:
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": TEST_IMAGE}},
        "2": models_node(),
        "3": {"class_type": "Rea2Seg_DiscoverCandidates",
              "inputs": {"image": ["1", 0], "question": question, "models": ["2", 0], "max_candidates": 8,
                         "peak_threshold": 0.3, "vlm_proposals": False}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 1]}},
    }
    for key, value in overrides.items():
        node, name = key.split("__")
        prompt[node]["inputs"][name] = value
    return prompt


def test_missing_preset_model_names_the_exact_folder_and_a_command_that_works_there(comfy):
    prompt = discover_prompt("anything", **{"2__preset": "small", "2__vlm": "(from preset)", "2__sam": "(from preset)",
                                            "2__auto_download": False})
    err = error_of(comfy.run(prompt))
    expected = comfy.base_dir / "models" / "LLM" / "Qwen2.5-VL-3B-Instruct"
    command = f'-m huggingface_hub.cli.hf download Qwen/Qwen2.5-VL-3B-Instruct --local-dir "{expected}"'
    assert err["node_type"] == "Rea2Seg_LoadModels" and err["exception_type"].endswith("ModelNotFoundError")
    assert err["exception_message"].startswith(f"VLM Qwen/Qwen2.5-VL-3B-Instruct not found: expected {expected} ")
    message = err["exception_message"][:-1]  # ComfyUI itself appends "\n" to every node's message (execution.py)
    assert "auto_download" in message and command in message and "\n" not in message
    assert "rea2seg models" not in message  # a CLI a requirements.txt install does not have
    assert not any("rea2seg/models/" in line for line in err["traceback"])  # no engine traceback

    # The first run of a template (auto_download on), here without network (HF_HUB_OFFLINE=1): it says where the
    # node downloads to and how to fetch the same files by hand, with the Python that runs ComfyUI.
    entry, events = run_with_events(comfy, with_inputs(prompt, "Rea2Seg_LoadModels", auto_download=True))
    err = error_of(entry)
    assert err["exception_message"].startswith(f"VLM Qwen/Qwen2.5-VL-3B-Instruct could not be downloaded into "
                                                f"{expected}: HF_HUB_OFFLINE is set")
    assert command in err["exception_message"] and "rea2seg models" not in err["exception_message"]
    assert [e["data"]["text"] for e in events if e["type"] == "progress_text"] == [
        f"downloading Qwen/Qwen2.5-VL-3B-Instruct into {expected} (progress in the console)"]
    # the same command, run with the Python that runs ComfyUI, parses (it is the hub's own CLI)
    help_out = subprocess.run([sys.executable, "-m", "huggingface_hub.cli.hf", "download", "--help"],
                              capture_output=True, text=True, timeout=60)
    assert help_out.returncode == 0 and "--local-dir" in help_out.stdout

    # a later run that succeeds replaces the "downloading ..." text on the node with what it loaded
    entry, events = run_with_events(comfy, discover_prompt("the red box, after a failed download"))
    assert_success(entry)
    cached = set(messages(entry)["execution_cached"]["nodes"])
    assert "2" not in cached  # Load Models ran again (a failed node is never cached)
    assert_final_texts(discover_prompt("x"), events, cached)


def test_missing_sam_names_its_url_and_folder(comfy, comfy_base):
    """The VLM of preset 'small' present, its SAM not: the hint names Meta's URL and models/sams."""
    vlm = comfy_base / "models" / "LLM" / "Qwen2.5-VL-3B-Instruct"
    vlm.symlink_to(comfy_base / "models" / "LLM" / USER_VLM)
    try:
        err = error_of(comfy.run(discover_prompt(
            "anything", **{"2__preset": "small", "2__vlm": "(from preset)", "2__sam": "(from preset)",
                           "2__auto_download": True})))
    finally:
        vlm.unlink()
    expected = comfy.base_dir / "models" / "sams"
    assert err["exception_message"].startswith(f"SAM checkpoint sam_vit_b_01ec64.pth could not be downloaded into "
                                                f"{expected}: HF_HUB_OFFLINE is set")
    assert (f'curl -L -o "{expected / "sam_vit_b_01ec64.pth"}" '
            f"https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth") in err["exception_message"]


def test_tiny_random_preset_stays_out_of_the_users_model_lists(comfy, comfy_base):
    """tiny-random builds its models where every door does (REA2SEG_TINY_DIR / ~/.cache/rea2seg/tiny-random), never
    in models/LLM or models/sams, so the vlm and sam lists keep showing only the user's own files."""
    before = {d: sorted(os.listdir(comfy_base / "models" / d)) for d in ("LLM", "sams")}
    prompt = discover_prompt("the red box, tiny-random", **{"2__preset": "tiny-random", "2__vlm": "(from preset)",
                                                            "2__sam": "(from preset)", "2__keep_loaded": False})
    assert_success(comfy.run(prompt))
    assert {d: sorted(os.listdir(comfy_base / "models" / d)) for d in ("LLM", "sams")} == before
    _, info = comfy.get("/object_info/Rea2Seg_LoadModels")
    required = info["Rea2Seg_LoadModels"]["input"]["required"]
    assert required["vlm"][0] == ["(from preset)", USER_VLM]
    assert required["sam"][0] == ["(from preset)", USER_SAM, f"sam2/{USER_SAM2}", f"sam3/{USER_SAM3}"]


def test_custom_choice_without_a_file_is_an_error(comfy):
    err = error_of(comfy.run(discover_prompt("anything", **{"2__sam": "(from preset)"})))
    assert err["exception_type"].endswith("InputError")
    assert str(comfy.base_dir / "models" / "sams") in err["exception_message"]


def test_sam_file_that_is_gone_is_refused_at_validation(comfy, comfy_base):
    path = comfy_base / "models" / "sams" / "sam_tiny_removed.safetensors"
    path.write_bytes((comfy_base / "models" / "sams" / USER_SAM).read_bytes())
    status, info = comfy.get("/object_info/Rea2Seg_LoadModels")
    assert path.name in info["Rea2Seg_LoadModels"]["input"]["required"]["sam"][0]
    path.unlink()
    time.sleep(0.05)
    status, body = comfy.queue(discover_prompt("anything", **{"2__sam": path.name}))
    assert status == 400
    errors = body["node_errors"]["2"]["errors"]
    assert errors[0]["type"] == "value_not_in_list" and path.name in errors[0]["details"]


def test_wrong_link_type_and_out_of_range_widget_are_refused(comfy):
    status, body = comfy.queue(discover_prompt("anything", **{"3__models": ["1", 0]}))  # IMAGE into models
    assert status == 400
    assert body["node_errors"]["3"]["errors"][0]["type"] == "return_type_mismatch"
    assert "REA2SEG_MODELS" in body["node_errors"]["3"]["errors"][0]["details"]

    status, body = comfy.queue(discover_prompt("anything", **{"3__max_candidates": 0}))
    assert status == 400
    assert body["node_errors"]["3"]["errors"][0]["type"] == "value_smaller_than_min"


def test_engine_error_reaches_comfyui_as_its_message(comfy):
    err = error_of(comfy.run(discover_prompt("   ")))
    assert err["node_type"] == "Rea2Seg_DiscoverCandidates"
    assert err["exception_type"] == "rea2seg.errors.InputError"
    assert err["exception_message"].startswith("the question is empty")
    assert not any("rea2seg/pipeline.py" in line or "rea2seg/inputs.py" in line for line in err["traceback"])


def test_interrupt_mid_run_stops_between_candidates(comfy):
    """/interrupt (the editor's Cancel) during Discover on a batch of images stops it early with ComfyUI's own
    'interrupted' status; the server then runs the next prompt normally."""
    prompt = discover_prompt("the red box, to be interrupted")
    prompt["5"] = {"class_type": "RepeatImageBatch", "inputs": {"image": ["1", 0], "amount": 24}}
    prompt["3"]["inputs"]["image"] = ["5", 0]
    entry, events = run_with_events(
        comfy, prompt, interrupt_on=lambda e: e["type"] == "progress" and e["data"]["node"] == "3")
    assert entry["status"]["status_str"] == "error"
    msgs = messages(entry)
    assert "execution_interrupted" in msgs and "execution_success" not in msgs
    assert msgs["execution_interrupted"]["node_id"] == "3"
    assert msgs["execution_interrupted"]["node_type"] == "Rea2Seg_DiscoverCandidates"
    progress = [e["data"] for e in events if e["type"] == "progress" and e["data"]["node"] == "3"]
    assert progress and max(p["value"] for p in progress) < progress[0]["max"]  # it did not run to the end

    assert_success(comfy.run(discover_prompt("the red box, after the interrupt")))
