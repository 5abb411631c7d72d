"""The node pack in a real ComfyUI 0.3.75 server (headless, 127.0.0.1), driven over HTTP and the websocket as the
editor does. Models are tiny random-weight ones: these tests prove plumbing (types, shapes, sizes, errors, progress,
interrupts), never segmentation quality."""
from __future__ import annotations

import copy
import importlib.util
import io
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rea2seg.config import MAX_TOP_K
from rea2seg.testing.models import BUILD

from comfyui_harness import REPO_ROOT, TEST_IMAGE, TIMINGS, ComfyServer, messages, run_with_events, ui_to_api

pytestmark = pytest.mark.slow

WORKFLOWS = sorted((REPO_ROOT / "workflows").glob("*.json"))
OURS = {"Rea2Seg_LoadModels", "Rea2Seg_DiscoverCandidates", "Rea2Seg_ScoreCandidates", "Rea2Seg_SelectMask",
        "Rea2Seg_CandidateMasks", "Rea2Seg_ReasoningSegment"}
ENGINE_NODES = {"Rea2Seg_DiscoverCandidates", "Rea2Seg_ScoreCandidates", "Rea2Seg_ReasoningSegment"}
TINY_VLM, TINY_SAM = f"tiny-random-qwen2_5_vl-v{BUILD}", f"sam_tiny_random_v{BUILD}.safetensors"
# The templates ship with preset "default" (downloads ~19 GB on first use); here LoadModels points at the tiny models
# placed in ComfyUI's model folders instead. Nothing else in a template is changed.
TINY_MODELS = {"preset": "custom", "vlm": TINY_VLM, "sam": TINY_SAM, "auto_download": False}


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


def assert_success(entry: dict) -> None:
    msgs = messages(entry)
    assert entry["status"]["status_str"] == "success", json.dumps(msgs.get("execution_error"), indent=1)[:3000]


def error_of(entry: dict) -> dict:
    assert entry["status"]["status_str"] == "error"
    return messages(entry)["execution_error"]


# ---- one ComfyUI server for the module: this repo in custom_nodes/, tiny models in models/ -------------------------

@pytest.fixture(scope="module")
def comfy_dir() -> Path:
    """ComfyUI 0.3.75, fetched and extracted by scripts/setup_comfyui.py (cached after the first run)."""
    spec = importlib.util.spec_from_file_location("setup_comfyui", REPO_ROOT / "scripts" / "setup_comfyui.py")
    setup = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(setup)
    return setup.ensure_comfyui()


@pytest.fixture(scope="module")
def comfy_base(tmp_path_factory, comfy_dir) -> Path:
    """ComfyUI's base directory: custom_nodes/rea2seg -> this repo, models/{LLM,sams} with tiny models, input/ with
    ComfyUI's own example.png (what the templates load) and a small non-square image."""
    from rea2seg.testing import tiny_models_dir
    from rea2seg.testing import ensure_tiny_models

    base = tmp_path_factory.mktemp("comfyui-base")
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / "rea2seg").symlink_to(REPO_ROOT, target_is_directory=True)
    t = time.monotonic()
    vlm_dir, sam_path = ensure_tiny_models(tiny_models_dir())  # the engine's shared tiny cache, built once
    TIMINGS["tiny models ready"] = time.monotonic() - t
    for src, folder in ((vlm_dir, "LLM"), (sam_path, "sams")):  # linked into ComfyUI's folders, as a user copies
        (base / "models" / folder).mkdir(parents=True)
        (base / "models" / folder / src.name).symlink_to(src)
    (base / "input").mkdir()
    shutil.copy(comfy_dir / "input" / "example.png", base / "input" / "example.png")
    rng = np.random.default_rng(0)
    img = np.zeros((64, 96, 3), np.uint8)
    img[:] = (90, 140, 200)
    img[20:50, 30:70] = (220, 60, 40)
    img += rng.integers(0, 20, img.shape, dtype=np.uint8)
    Image.fromarray(img).save(base / "input" / TEST_IMAGE)
    return base


@pytest.fixture(scope="module")
def comfy(comfy_dir, comfy_base, pytestconfig):
    server = ComfyServer(comfy_dir, comfy_base)
    server.start(ready_node="Rea2Seg_LoadModels")
    TIMINGS["ComfyUI start to /object_info"] = server.start_seconds
    yield server
    server.stop()
    report_timings(pytestconfig)


@pytest.fixture(scope="module")
def object_info(comfy) -> dict:
    status, info = comfy.get("/object_info", timeout=60)
    assert status == 200
    return info


def report_timings(config) -> None:
    """What this session measured: printed at the end of the module and kept in .cache/comfyui/timings.json."""
    out = REPO_ROOT / ".cache" / "comfyui" / "timings.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({k: round(v, 2) for k, v in TIMINGS.items()}, indent=1))
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():  # fixture teardown output is captured otherwise
            reporter.write_line("")
            reporter.write_sep("-", "ComfyUI timings (tiny random-weight models)")
            for name, seconds in TIMINGS.items():
                reporter.write_line(f"{name}: {seconds:.2f} s")


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
    assert TINY_VLM in load["vlm"][0]  # a directory under models/LLM with a config.json
    assert TINY_SAM in load["sam"][0]  # a file in models/sams
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
    for node_id in OURS:  # every widget explains itself
        for name, spec in req(node_id).items():
            if len(spec) > 1 and name not in ("models", "candidates"):
                assert spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"


def test_templates_are_listed_and_served(comfy):
    names = sorted(p.stem for p in WORKFLOWS)
    assert len(names) >= 3
    status, listing = comfy.get("/api/workflow_templates")
    assert status == 200 and sorted(listing["rea2seg"]) == names
    for path in WORKFLOWS:
        status, body = comfy.get(f"/api/workflow_templates/rea2seg/{path.name}")
        assert status == 200 and body == json.loads(path.read_text())
        thumb = path.with_suffix(".jpg")
        with Image.open(thumb) as im:
            assert im.format == "JPEG" and im.width >= 256
        status, _ = comfy.get(f"/api/workflow_templates/rea2seg/{thumb.name}")
        assert status == 200


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
    TIMINGS[f"template {path.stem} (96x64 image)"] = time.monotonic() - t
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
    prompt = tiny(ui_to_api(json.loads((REPO_ROOT / "workflows" / "rea2seg_basic.json").read_text()), object_info))
    t = time.monotonic()
    entry = comfy.run(prompt)
    TIMINGS["template rea2seg_basic (768x768 example.png)"] = time.monotonic() - t
    assert_success(entry)
    for ims in saved_images(comfy, entry).values():
        assert all(im.size == (768, 768) for im in ims)


def test_basic_template_with_the_tiny_lisa_generator_preset(comfy, object_info):
    """The basic template with LoadModels on preset tiny-random-lisa: a LISA-format generator (built into ComfyUI's
    models/LLM with the CLIP tower it names next to it) for discovery and a tiny Qwen2.5-VL scorer."""
    workflow = json.loads((REPO_ROOT / "workflows" / "rea2seg_basic.json").read_text())
    prompt = with_inputs(ui_to_api(workflow, object_info), "Rea2Seg_LoadModels", preset="tiny-random-lisa",
                         vlm="(from preset)", sam="(from preset)", auto_download=False)
    t = time.monotonic()
    entry = comfy.run(prompt)
    TIMINGS["template rea2seg_basic, preset tiny-random-lisa"] = time.monotonic() - t
    assert_success(entry)
    assert (comfy.base_dir / "models" / "LLM" / "tiny-random-lisa" / "pytorch_model.bin.index.json").exists()
    assert (comfy.base_dir / "models" / "LLM" / "tiny-random-clip-vit-large-patch14" / "config.json").exists()
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


def test_missing_preset_model_names_the_exact_folder_and_file(comfy):
    prompt = discover_prompt("anything", **{"2__preset": "small", "2__vlm": "(from preset)", "2__sam": "(from preset)"})
    err = error_of(comfy.run(prompt))
    expected = comfy.base_dir / "models" / "LLM" / "Qwen2.5-VL-3B-Instruct"
    assert err["node_type"] == "Rea2Seg_LoadModels" and err["exception_type"].endswith("ModelNotFoundError")
    assert err["exception_message"].startswith(f"VLM Qwen/Qwen2.5-VL-3B-Instruct not found: expected {expected} ")
    message = err["exception_message"].rstrip("\n")  # ComfyUI appends a newline
    assert "auto_download" in message and "\n" not in message
    assert not any("rea2seg/models/" in line for line in err["traceback"])  # no engine traceback

    # with auto_download on but no network allowed (HF_HUB_OFFLINE=1 here), it says so, naming the same place
    err = error_of(comfy.run(with_inputs(prompt, "Rea2Seg_LoadModels", auto_download=True)))
    assert str(expected) in err["exception_message"] and "HF_HUB_OFFLINE" in err["exception_message"]


def test_custom_choice_without_a_file_is_an_error(comfy):
    err = error_of(comfy.run(discover_prompt("anything", **{"2__sam": "(from preset)"})))
    assert err["exception_type"].endswith("InputError")
    assert str(comfy.base_dir / "models" / "sams") in err["exception_message"]


def test_sam_file_that_is_gone_is_refused_at_validation(comfy, comfy_base):
    path = comfy_base / "models" / "sams" / "sam_tiny_removed.safetensors"
    path.write_bytes((comfy_base / "models" / "sams" / TINY_SAM).read_bytes())
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
