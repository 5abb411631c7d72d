"""One answer type to every door: what ``SegmentationResult.to_json()`` says is exactly what the CLI prints, the MCP
server returns as structured content and the LangChain tool sends as text (doors add their own keys, such as file
paths or a preview, and never recompute or drop the engine's)."""
from __future__ import annotations

import json

import anyio
import numpy as np
import pytest
from PIL import Image

from mcp import Client
from mcp_server.tools import build_server
from rea2seg.cli.main import main as cli_main
from rea2seg.serve.paths import AllowedDirs
from rea2seg.serve.service import SegmentationService
from rea2seg_tools import Rea2SegToolkit

QUESTION = "the round thing on the left"
VOLATILE = {"timings_ms", "result_id"}  # per call


@pytest.fixture(scope="module")
def scene(tmp_path_factory, pipeline):
    from conftest import make_image

    root = tmp_path_factory.mktemp("answer")
    path = root / "scene.png"
    Image.fromarray(make_image(96, 128, seed=7)).save(path)
    expected = pipeline.segment(str(path), QUESTION, top_k=2).to_json()
    return root, path, expected


def _same(expected: dict, got: dict) -> None:
    missing = set(expected) - set(got)
    assert not missing, f"the door dropped {missing}"
    for key in set(expected) - VOLATILE:
        assert got[key] == expected[key], key


def test_engine_answer_carries_the_fields(scene):
    _, _, expected = scene
    assert {"kind", "question", "box_xyxy", "score", "mask_area", "mask_fraction", "candidates"} <= set(expected)
    assert expected["kind"] == "segment" and len(expected["candidates"]) <= 2
    assert all(isinstance(c["number"], int) for c in expected["candidates"])


def test_cli_prints_the_answer(scene, tmp_path, capsys):
    _, path, expected = scene
    code = cli_main(["segment", str(path), QUESTION, "--preset", "tiny-random", "--top-k", "2", "--json",
                     "--quiet", "-o", str(tmp_path / "m.png"), "--overlay", str(tmp_path / "o.png")])
    assert code == 0
    got = json.loads(capsys.readouterr().out)
    _same(expected, got)
    assert got["mask_path"] == str(tmp_path / "m.png")


def test_mcp_returns_the_answer(scene, pipeline):
    root, path, expected = scene
    server = build_server(SegmentationService(pipeline, AllowedDirs([root])))

    async def go():
        async with Client(server, mode="legacy") as client:
            with anyio.fail_after(120):
                return await client.call_tool("segment", {"image_path": str(path), "question": QUESTION,
                                                          "top_k": 2})
    r = anyio.run(go)
    assert not r.is_error, r.content[0].text
    _same(expected, r.structured_content)
    _same(expected, json.loads(r.content[0].text))


def test_langchain_sends_the_answer(scene, pipeline):
    root, path, expected = scene
    tool = {t.name: t for t in Rea2SegToolkit(pipeline=pipeline, allowed_dirs=[str(root)]).get_tools()}[
        "reasoning_segment"]
    msg = tool.invoke({"type": "tool_call", "name": "reasoning_segment", "id": "c1",
                       "args": {"image_path": str(path), "question": QUESTION, "top_k": 2}})
    assert msg.status == "success"
    _same(expected, json.loads(msg.content[0]["text"]))
    assert np.array_equal(msg.artifact.mask, msg.artifact.candidate_mask(None))
