"""The tiny-random-sam2 and tiny-random-sam3 presets through the agent doors: MCP (the real SDK client, connected to
the server in-process) and LangChain (the toolkit's tools invoked as an agent calls them). Random weights: plumbing
only. The CLI runs them in tests/test_cli.py, ComfyUI in tests/comfyui/test_comfyui.py."""
from __future__ import annotations

import json

import anyio
import numpy as np
import pytest
from PIL import Image

from mcp import Client
from rea2seg.serve.paths import AllowedDirs, OutputDir
from rea2seg.serve.service import SegmentationService


@pytest.fixture(scope="module")
def scene_path(tmp_path_factory):
    d = tmp_path_factory.mktemp("doors")
    img = np.full((72, 96, 3), 110, np.uint8)
    img[20:50, 10:40] = (220, 40, 40)
    Image.fromarray(img).save(d / "scene.png")
    return d / "scene.png"


def _mcp_calls(pipe, scene_path, calls: list[tuple[str, dict]]):
    from mcp_server.tools import build_server

    service = SegmentationService(pipe, allowed_dirs=AllowedDirs([str(scene_path.parent)]), output_dir=OutputDir(None))

    async def go():
        async with Client(build_server(service)) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            return tools, [await client.call_tool(name, args) for name, args in calls]
    return anyio.run(go)


@pytest.mark.parametrize("backend", ["sam2", "sam3"])
def test_mcp_segment_discover_and_status(pipelines, scene_path, backend):
    pipe = pipelines[backend]
    image = str(scene_path)
    tools, (status, seg, found, only_attention, bad) = _mcp_calls(pipe, scene_path, [
        ("server_status", {}),
        ("segment", {"image_path": image, "question": "the red box", "top_k": 8}),
        ("discover_candidates", {"image_path": image, "question": "the red box", "preview": "none"}),
        ("segment", {"image_path": image, "question": "the red box", "sources": ["attention"], "preview": "none"}),
        ("segment", {"image_path": image, "question": "the red box", "sources": ["concepts"]}),
    ])
    props = tools["segment"].input_schema["properties"]
    assert "sources" in props and "sources" in tools["discover_candidates"].input_schema["properties"]
    assert "concepts" in json.dumps(props["sources"])  # the names are published to the client
    models = status.structured_content["models"]
    assert models["segmenter"]["backend"] == backend and models["segmenter"]["kind"] == pipe.sam.path.name
    assert models["sources"] == (["attention", "concepts"] if backend == "sam3" else ["attention"])
    for r in (seg, found, only_attention):
        assert not r.is_error, r.content[0].text
    data = seg.structured_content
    assert data["image_size"] == [96, 72] and data["candidates"] and "meaningless" in data["warning"]
    assert ("concept_masks" in data["timings_ms"]) == (backend == "sam3")
    assert "concepts" not in only_attention.structured_content["timings_ms"]
    if backend == "sam2":
        assert bad.is_error and "needs SAM 3" in bad.content[0].text
    else:
        assert not bad.is_error and "attention" not in bad.structured_content["timings_ms"]


def test_mcp_refuses_unknown_sources_before_running(pipelines, scene_path):
    _, (r,) = _mcp_calls(pipelines["sam2"], scene_path, [
        ("segment", {"image_path": str(scene_path), "question": "q", "sources": ["peaks"]})])
    assert r.is_error and "sources" in r.content[0].text  # the SDK's schema check: not one of the published names


@pytest.mark.parametrize("backend", ["sam2", "sam3"])
def test_langchain_tools_with_sources(pipelines, scene_path, backend):
    from rea2seg_tools import Rea2SegToolkit

    toolkit = Rea2SegToolkit(pipeline=pipelines[backend], allowed_dirs=[str(scene_path.parent)])
    tools = {t.name: t for t in toolkit.get_tools()}
    assert f"Segmenter here: {backend}" in tools["discover_candidates"].description
    assert ("'concepts' needs SAM 3" in tools["reasoning_segment"].description) == (backend == "sam2")
    assert toolkit.status()["models"]["segmenter"]["backend"] == backend
    call = {"type": "tool_call", "name": "discover_candidates", "id": "c1",
            "args": {"image_path": str(scene_path), "question": "the red box", "sources": ["attention"]}}
    msg = tools["discover_candidates"].invoke(call)
    assert msg.status == "success", msg.content
    summary = json.loads(msg.content[0]["text"])
    assert summary["kind"] == "discover" and "concepts" not in summary["timings_ms"]
    call = {"type": "tool_call", "name": "reasoning_segment", "id": "c2",
            "args": {"image_path": str(scene_path), "question": "the red box", "sources": ["attention", "concepts"]}}
    msg = tools["reasoning_segment"].invoke(call)
    if backend == "sam2":
        assert msg.status == "error" and "needs SAM 3" in msg.content
    else:
        assert msg.status == "success" and "concept_masks" in json.loads(msg.content[0]["text"])["timings_ms"]
        assert msg.artifact.mask.shape == (72, 96)


def test_mcp_server_command_line_sources(tiny_segmenter_dirs):
    """``rea2seg-mcp --sources``: checked before anything loads, then the server's default for every call."""
    from mcp_server.cli import build_parser, check_args, pipeline_factory

    p = build_parser()
    args = p.parse_args(["--preset", "tiny-random-sam3", "--sources", "concepts"])
    check_args(p, args)
    assert pipeline_factory(args)().config.discovery.sources == ("concepts",)
    args = p.parse_args(["--preset", "tiny-random-sam3", "--sources", "attention,peaks"])
    with pytest.raises(SystemExit):
        check_args(p, args)
