"""What MCP clients see of the server object, over real JSON-RPC on memory streams (the SDK's ``Client``) with the
tiny random-weight pipeline: previews (JPEG photos, PNG masks), one-line argument errors, published schema limits,
typed status, clean tool descriptions, resources of kept results, progress with a total and a heartbeat while the
models load, stable candidate numbers across score_candidates, timings. The subprocess server over stdio and HTTP is
tests/test_mcp.py; foreign clients (MCP Inspector) are tests/test_clients.py."""
from __future__ import annotations

import base64
import io
import threading

import anyio
import numpy as np
import pytest
from PIL import Image

from conftest import make_image
from mcp import Client
from mcp_server.tools import MCP_WORDING, build_server
from rea2seg.config import MAX_QUESTION_CHARS, MAX_TOP_K
from rea2seg.serve.paths import AllowedDirs, OutputDir
from rea2seg.serve.service import PREVIEW_MAX_BYTES, SegmentationService


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("mcp-protocol")
    allowed, out = root / "images", root / "out"
    allowed.mkdir()
    out.mkdir()
    rng = np.random.default_rng(0)
    # a 3000x2000 "photo": smooth colour fields with texture, which PNG cannot fit in the byte budget at 1024 px
    yy, xx = np.mgrid[0:2000, 0:3000]
    photo = np.stack([xx * 255 // 2999, yy * 255 // 1999, (xx + yy) * 255 // 4998], -1)
    photo = np.clip(photo + rng.normal(0, 12, photo.shape), 0, 255).astype(np.uint8)
    Image.fromarray(photo).save(allowed / "photo.png")
    small = np.full((72, 96, 3), 110, np.uint8)
    small[20:50, 10:40] = (220, 40, 40)
    Image.fromarray(small).save(allowed / "scene.png")
    Image.fromarray(make_image()).save(allowed / "shapes.png")  # several candidates even with the tiny models
    return {"allowed": allowed, "out": out, "photo": allowed / "photo.png", "scene": allowed / "scene.png",
            "shapes": allowed / "shapes.png"}


@pytest.fixture(scope="module")
def service(pipeline, files):
    return SegmentationService(pipeline, AllowedDirs([files["allowed"]]), OutputDir(files["out"]),
                               wording=MCP_WORDING)


def session(server, fn):
    """Run ``fn(client)`` in a fresh client session on ``server``."""
    async def go():
        async with Client(server, mode="legacy") as client:
            with anyio.fail_after(300):
                return await fn(client)
    return anyio.run(go)


def call(server, tool: str, args: dict, progress: list | None = None):
    async def on_progress(p, total, message):
        progress.append((p, total, message))
    return session(server, lambda c: c.call_tool(tool, args, progress_callback=on_progress
                                                 if progress is not None else None))


def one_line_error(result) -> str:
    assert result.is_error, result.content[0].text[:300]
    text = result.content[0].text
    assert "\n" not in text and "Traceback" not in text and "http" not in text, text
    return text


def test_photo_preview_is_jpeg_at_full_preview_size_and_masks_stay_png(service, files):
    server = build_server(service)
    r = call(server, "segment", {"image_path": str(files["photo"]), "question": "the bright corner"})
    assert not r.is_error, r.content[0].text
    image = r.content[1]
    assert image.mime_type == "image/jpeg"
    data = base64.b64decode(image.data)
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "JPEG" and im.size == (1024, 683)  # not shrunk to fit a PNG budget (was 576x384)
    assert len(data) <= PREVIEW_MAX_BYTES
    preview = r.structured_content["preview"]
    assert preview == {"kind": "overlay", "width": 1024, "height": 683, "mime_type": "image/jpeg",
                       "bytes": len(data)}
    m = call(server, "get_mask", {"result_id": r.structured_content["result_id"]})
    assert m.content[1].mime_type == "image/png"
    with Image.open(io.BytesIO(base64.b64decode(m.content[1].data))) as im:
        assert im.format == "PNG" and im.mode == "L" and set(np.unique(np.asarray(im))) <= {0, 255}


@pytest.mark.parametrize("args, names", [
    ({"top_k": 10 ** 9}, ["top_k", "less than or equal to 64", "1000000000"]),
    ({"mode": "fast"}, ["mode", "'yesno', 'reasoning' or 'comparative'", "'fast'"]),
    ({"question": "q" * (MAX_QUESTION_CHARS + 1)}, ["question", f"at most {MAX_QUESTION_CHARS} characters"]),
    ({"question": ""}, ["question", "at least 1 character"]),
])
def test_bad_argument_types_are_one_line_errors(service, files, args, names):
    server = build_server(service)
    text = one_line_error(call(server, "segment", {"image_path": str(files["scene"]), "question": "q", **args}))
    assert text.startswith("Error executing tool segment: invalid arguments: ")
    for name in names:
        assert name in text, text


def test_get_mask_save_maybe_is_a_one_line_error(service):
    text = one_line_error(call(build_server(service), "get_mask", {"result_id": "r0123456789ab", "save": "maybe"}))
    assert "save: Input should be a valid boolean" in text and "'maybe'" in text


def test_schemas_publish_the_limits_and_clean_descriptions(service):
    tools = {t.name: t for t in session(build_server(service), lambda c: c.list_tools()).tools}
    question = tools["segment"].input_schema["properties"]["question"]
    assert (question["minLength"], question["maxLength"]) == (1, MAX_QUESTION_CHARS)
    assert tools["score_candidates"].input_schema["properties"]["question"]["anyOf"][0]["maxLength"] == \
        MAX_QUESTION_CHARS
    assert tools["segment"].input_schema["properties"]["top_k"]["maximum"] == MAX_TOP_K
    for t in tools.values():
        assert not any(line.startswith(" ") for line in t.description.splitlines()), t.description
    models = tools["server_status"].output_schema["properties"]["models"]
    ref = models["$ref"].split("/")[-1]
    status_schema = tools["server_status"].output_schema["$defs"][ref]
    assert status_schema["type"] == "object" and status_schema["properties"]["state"]["enum"] == \
        ["loading", "ready", "error"]


def test_refused_overwrite_names_the_argument_get_mask_has(service, files):
    server = build_server(service)

    async def go(c):
        r = await c.call_tool("segment", {"image_path": str(files["scene"]), "question": "q", "preview": "none"})
        rid = r.structured_content["result_id"]
        first = await c.call_tool("get_mask", {"result_id": rid, "save": True})
        again = await c.call_tool("get_mask", {"result_id": rid, "save": True})
        return first, again
    first, again = session(server, go)
    assert not first.is_error
    text = one_line_error(again)
    assert "never overwritten" in text and "another filename" in text and "--force" not in text


def test_resources_list_the_masks_of_kept_results(pipeline, files):
    service = SegmentationService(pipeline, AllowedDirs([files["allowed"]]))
    server = build_server(service)

    async def go(c):
        before = (await c.list_resources()).resources
        d = await c.call_tool("discover_candidates", {"image_path": str(files["scene"]), "question": "red",
                                                      "preview": "none"})
        s = await c.call_tool("score_candidates", {"result_id": d.structured_content["result_id"],
                                                   "preview": "none"})
        listed = (await c.list_resources()).resources
        blob = await c.read_resource(str(listed[0].uri))
        return before, d.structured_content, s.structured_content, listed, blob
    before, d, s, listed, blob = session(server, go)
    assert before == []
    uris = [str(r.uri) for r in listed]
    n = d["n_candidates"]
    assert uris[0] == s["mask_uri"]  # the most recent answer first
    assert sorted(uris) == sorted(
        [s["mask_uri"]] + [f"rea2seg://results/{rid}/candidates/{k}/mask.png"
                           for rid in (s["result_id"], d["result_id"]) for k in range(1, n + 1)])
    assert all(r.mime_type == "image/png" for r in listed)
    assert blob.contents[0].mime_type == "image/png"


def test_progress_has_a_total_grows_and_beats_while_models_load(pipeline, files, monkeypatch):
    """Models that take ~5 s to load: the waiting call hears "loading models" heartbeats, then every stage, with
    one fixed total and a progress value that only grows."""
    import rea2seg.serve.service as service_module

    monkeypatch.setattr(service_module, "HEARTBEAT_S", 1.0)
    release = threading.Event()

    def slow_load():
        release.wait(5)
        return pipeline
    service = SegmentationService(slow_load, AllowedDirs([files["allowed"]]))
    service.start_loading()
    progress: list = []
    r = call(build_server(service), "segment", {"image_path": str(files["scene"]), "question": "q",
                                                "preview": "none"}, progress)
    assert not r.is_error, r.content[0].text
    values = [p for p, _, _ in progress]
    assert values == sorted(values) and len(set(values)) == len(values)  # strictly increasing
    assert {t for _, t, _ in progress} == {3.0}  # loading, discovery, scoring
    loading = [m for p, _, m in progress if p < 1]
    assert len(loading) >= 3 and all(m.startswith("loading models (") for m in loading), progress
    stages = [m for p, _, m in progress if 1 <= p < 2]
    assert stages[:4] == ["attention", "prompts", "sam_embedding", "sam_masks"], progress
    assert progress[-1] == (3.0, 3.0, "done")


def test_score_candidates_keeps_candidate_numbers_and_reports_timings(service, files):
    server = build_server(service)

    async def go(c):
        d = await c.call_tool("discover_candidates", {"image_path": str(files["shapes"]), "question": "the disk",
                                                      "preview": "none"})
        rid = d.structured_content["result_id"]
        n = d.structured_content["n_candidates"]
        assert n >= 3, "the test needs several candidates"
        pick = [n, 1]  # out of order, and not the first ones: renumbering 1..k would give other masks
        s = await c.call_tool("score_candidates", {"result_id": rid, "candidates": pick, "top_k": MAX_TOP_K,
                                                   "preview": "none"})
        masks = {}
        for k in pick:
            a = await c.call_tool("get_mask", {"result_id": rid, "candidate": k, "format": "rle"})
            b = await c.call_tool("get_mask", {"result_id": s.structured_content["result_id"], "candidate": k,
                                               "format": "rle"})
            masks[k] = (a.structured_content["rle"], b.structured_content["rle"])
        return d.structured_content, s.structured_content, pick, masks
    d, s, pick, masks = session(server, go)
    before = {c["number"]: c for c in d["candidates"]}
    assert sorted(c["number"] for c in s["candidates"]) == sorted(pick)
    for c in s["candidates"]:  # the same number names the same mask in both answers
        assert (c["box_xyxy"], c["area"]) == (before[c["number"]]["box_xyxy"], before[c["number"]]["area"])
    for k, (a, b) in masks.items():
        assert a == b, f"candidate {k} is another mask after scoring"
    assert s["timings_ms"]["scoring"] > 0 and s["timings_ms"]["total"] >= s["timings_ms"]["scoring"]
