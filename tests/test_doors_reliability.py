"""The bad-input matrix (tests/reliability_cases.py) through the agent doors: LangChain answers each with an error
ToolMessage carrying the engine's one-line message, MCP with an error result (real JSON-RPC over memory streams
against the real server object). Good inputs get a result of the image's size. The CLI runs the same cases in
test_reliability.py, the ComfyUI nodes in tests/comfyui."""
from __future__ import annotations

import anyio
import pytest
from langchain_core.messages import ToolMessage

from mcp import Client
from mcp_server.tools import build_server
from rea2seg.serve.paths import AllowedDirs
from rea2seg.serve.service import SegmentationService
from rea2seg_tools import Rea2SegToolkit
from reliability_cases import INPUT_CASES

# JSON text cannot carry invalid UTF-8: that case exists only for the Python API and the CLI.
CASES = [c for c in INPUT_CASES if isinstance(c.question, str)]
# Cases the agent doors' published argument schemas refuse before the engine sees them (minLength 1, maxLength 2000).
SCHEMA_NEEDLES = {"empty-question": "question: String should have at least 1 character",
                  "long-question": "question: String should have at most 2000 characters"}


@pytest.fixture(scope="module")
def case_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("door-cases")
    paths = {}
    for c in CASES:
        d = root / c.id
        d.mkdir()
        paths[c.id] = c.build(d)
    return root, paths


@pytest.fixture(scope="module")
def lc_tool(pipeline, case_files):
    root, _ = case_files
    kit = Rea2SegToolkit(pipeline=pipeline, allowed_dirs=[str(root)])
    return {t.name: t for t in kit.get_tools()}["reasoning_segment"]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_langchain(lc_tool, case_files, case):
    _, paths = case_files
    msg = lc_tool.invoke({"type": "tool_call", "name": "reasoning_segment", "id": "c1",
                          "args": {"image_path": paths[case.id], "question": case.question}})
    assert isinstance(msg, ToolMessage)
    if case.expect == "ok":
        assert msg.status == "success", msg.content
        assert msg.artifact.mask.ndim == 2
    else:
        text = msg.content if isinstance(msg.content, str) else str(msg.content)
        assert msg.status == "error" and "Traceback" not in text
        assert SCHEMA_NEEDLES.get(case.id, case.needle).lower() in text.lower(), text


@pytest.fixture(scope="module")
def mcp_results(pipeline, case_files):
    root, paths = case_files
    server = build_server(SegmentationService(pipeline, AllowedDirs([root])))

    async def go():
        out = {}
        async with Client(server, mode="legacy") as client:  # JSON-RPC over in-memory streams
            for c in CASES:
                with anyio.fail_after(120):
                    out[c.id] = await client.call_tool("segment", {"image_path": paths[c.id],
                                                                   "question": c.question})
        return out
    return anyio.run(go)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_mcp(mcp_results, case):
    r = mcp_results[case.id]
    if case.expect == "ok":
        assert not r.is_error, r.content[0].text
        assert len(r.structured_content["image_size"]) == 2
    else:
        text = r.content[0].text
        assert r.is_error and len(text.splitlines()) == 1 and "Traceback" not in text
        assert SCHEMA_NEEDLES.get(case.id, case.needle).lower() in text.lower(), text
