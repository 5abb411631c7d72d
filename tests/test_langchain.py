"""The LangChain tools in a real tool-calling loop (``langchain.agents.create_agent``) with a scripted chat model
(the only fake here: no real LLM runs offline) over the real engine with tiny random-weight models (plumbing only)."""
from __future__ import annotations

import base64
import io
import json
from typing import Any, Callable

import anyio
import numpy as np
import pytest
from langchain.agents import create_agent
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import BaseTool
from PIL import Image
from pydantic import BaseModel

from rea2seg.types import SegmentationResult
from rea2seg_tools import Rea2SegToolkit

TOOLS = ["reasoning_segment", "discover_candidates", "score_candidates"]


class ScriptedChatModel(BaseChatModel):
    """Plays a fixed script: each turn is a function of the conversation so far returning the next AIMessage (so a
    later tool call can use a result_id an earlier tool returned). Stands in for a tool-calling LLM."""

    script: list[Callable[[list], AIMessage]]
    turn: int = 0

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools, **kwargs):
        self.bound = [t.name if isinstance(t, BaseTool) else t for t in tools]
        return self

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        msg = self.script[self.turn](messages)
        self.turn += 1
        return ChatResult(generations=[ChatGeneration(message=msg)])

    model_config = {"extra": "allow"}


def call(name: str, args: dict, call_id: str = "c1") -> AIMessage:
    return AIMessage("", tool_calls=[{"name": name, "args": args, "id": call_id, "type": "tool_call"}])


def last_tool_json(messages) -> dict:
    tm = [m for m in messages if isinstance(m, ToolMessage)][-1]
    return json.loads(tm.content[0]["text"])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("lc")
    allowed, outside = root / "images", root / "outside"
    allowed.mkdir()
    outside.mkdir()
    img = np.full((72, 96, 3), 110, np.uint8)
    img[20:50, 10:40] = (220, 40, 40)
    img[10:40, 55:90] = (40, 60, 220)
    Image.fromarray(img).save(allowed / "scene.png")
    Image.fromarray(img).save(outside / "secret.png")
    (allowed / "notes.png").write_text("not an image")
    return {"allowed": allowed, "image": allowed / "scene.png", "secret": outside / "secret.png",
            "not_image": allowed / "notes.png"}


@pytest.fixture(scope="module")
def toolkit(files):
    return Rea2SegToolkit(preset="tiny-random", allowed_dirs=[str(files["allowed"])], max_queue=0)


@pytest.fixture(scope="module")
def tools(toolkit):
    return {t.name: t for t in toolkit.get_tools()}


def tool_call(name, args, call_id="t1"):
    return {"type": "tool_call", "name": name, "args": args, "id": call_id}


def test_tools_are_basetools_with_pydantic_schemas(tools):
    assert list(tools) == TOOLS
    for t in tools.values():
        assert isinstance(t, BaseTool) and issubclass(t.args_schema, BaseModel)
        assert t.response_format == "content_and_artifact" and t.description
    props = tools["reasoning_segment"].tool_call_schema.model_json_schema()["properties"]
    assert {"image_path", "question", "top_k", "mode", "merge", "sources"} == set(props)
    assert "service" not in props  # the engine is not a model-visible argument


def test_agent_loop_ends_with_image_and_mask_artifact(tools, files):
    model = ScriptedChatModel(script=[
        lambda m: call("reasoning_segment", {"image_path": str(files["image"]), "question": "which thing is red?"}),
        lambda m: AIMessage(f"The answer is at {last_tool_json(m)['box_xyxy']}."),
    ])
    out = create_agent(model, list(tools.values())).invoke({"messages": [HumanMessage("segment the red thing")]})
    assert model.bound == TOOLS
    tm = [m for m in out["messages"] if isinstance(m, ToolMessage)]
    assert len(tm) == 1 and tm[0].status == "success" and tm[0].name == "reasoning_segment"
    assert [b["type"] for b in tm[0].content] == ["text", "image"]
    summary = json.loads(tm[0].content[0]["text"])
    assert {"box_xyxy", "score", "reasoning", "image_size", "result_id"} <= set(summary)
    assert summary["image_size"] == [96, 72]
    img = Image.open(io.BytesIO(base64.b64decode(tm[0].content[1]["base64"])))
    assert tm[0].content[1]["mime_type"] == "image/jpeg" and img.format == "JPEG" and img.size == (96, 72)
    art = tm[0].artifact
    assert isinstance(art, SegmentationResult) and art.result_id == summary["result_id"]
    assert art.mask.dtype == bool and art.mask.shape == (72, 96)
    assert int(art.mask.sum()) == summary["mask_area"]
    assert isinstance(out["messages"][-1], AIMessage) and "answer is at" in out["messages"][-1].content


def test_agent_two_stage_discover_then_score(tools, files):
    model = ScriptedChatModel(script=[
        lambda m: call("discover_candidates", {"image_path": str(files["image"]), "question": "the blue box"}, "c1"),
        lambda m: call("score_candidates", {"result_id": last_tool_json(m)["result_id"], "top_k": 1}, "c2"),
        lambda m: AIMessage("done"),
    ])
    out = create_agent(model, list(tools.values())).invoke({"messages": [HumanMessage("find the blue box")]})
    disc, score = [m for m in out["messages"] if isinstance(m, ToolMessage)]
    assert disc.status == score.status == "success", (disc.content, score.content)
    d, s = json.loads(disc.content[0]["text"]), json.loads(score.content[0]["text"])
    assert d["kind"] == "discover" and d["n_candidates"] == len(disc.artifact.candidates) >= 1
    assert disc.artifact.mask is None and disc.artifact.candidates.masks.shape[1:] == (72, 96)
    assert s["kind"] == "score" and s["question"] == "the blue box" and score.artifact.mask.shape == (72, 96)


@pytest.mark.parametrize("name, args, match", [
    ("reasoning_segment", {"question": "q", "image_path": "SECRET"}, "outside the allowed directories"),
    ("reasoning_segment", {"question": "q", "image_path": "NOT_IMAGE"}, "not a readable image"),
    ("reasoning_segment", {"question": "q", "image_path": "scene.png"}, "absolute path"),
    ("score_candidates", {"result_id": "r0123456789ab"}, "unknown result_id"),
    ("reasoning_segment", {"question": "q", "image_path": "IMAGE", "top_k": 0}, "top_k"),
])
def test_user_errors_become_error_tool_messages(tools, files, name, args, match):
    args = {k: {"SECRET": str(files["secret"]), "NOT_IMAGE": str(files["not_image"]),
                "IMAGE": str(files["image"])}.get(v, v) if isinstance(v, str) else v for k, v in args.items()}
    msg = tools[name].invoke(tool_call(name, args))
    assert isinstance(msg, ToolMessage) and msg.status == "error"
    assert match in msg.content and "Traceback" not in msg.content


def test_async_calls_share_one_gate(toolkit, tools, files):
    """Three concurrent ainvoke calls, max_queue=0: one runs, the rest are told the engine is busy; then it is free."""
    seg = tools["reasoning_segment"]
    args = {"image_path": str(files["image"]), "question": "q"}

    async def burst():
        out: list[Any] = []

        async def one(i):
            out.append(await seg.ainvoke(tool_call("reasoning_segment", args, f"a{i}")))
        async with anyio.create_task_group() as tg:
            for i in range(3):
                tg.start_soon(one, i)
        return out

    msgs = anyio.run(burst)
    ok = [m for m in msgs if m.status == "success"]
    busy = [m for m in msgs if m.status == "error"]
    assert len(ok) >= 1 and len(busy) >= 1 and len(ok) + len(busy) == 3
    assert all("busy" in m.content for m in busy)
    assert toolkit.service.gate.status()["running"] == 0
    again = anyio.run(seg.ainvoke, tool_call("reasoning_segment", args, "a9"))
    assert again.status == "success" and again.artifact.mask.shape == (72, 96)


def test_toolkit_rejects_bad_configuration(files, toolkit):
    with pytest.raises(ValueError, match="does not exist"):
        Rea2SegToolkit(pipeline=toolkit.pipeline, allowed_dirs=[str(files["allowed"] / "nope")])
    with pytest.raises(ValueError, match="either preset= or pipeline="):
        Rea2SegToolkit(preset="tiny-random", pipeline=toolkit.pipeline)
    shared = Rea2SegToolkit(pipeline=toolkit.pipeline, allowed_dirs=[str(files["allowed"])], image_content="none")
    msg = shared.get_tools()[0].invoke(tool_call("reasoning_segment", {"image_path": str(files["image"]),
                                                                         "question": "q"}))
    assert [b["type"] for b in msg.content] == ["text"] and msg.artifact.mask.shape == (72, 96)


# Stand-ins named like the integrations' classes, with the attribute that decides (no provider package needed).
class ChatOpenAI:
    def __init__(self, use_responses_api=None):
        self.use_responses_api = use_responses_api


class ChatAnthropic:
    pass


class ChatGoogleGenerativeAI:
    pass


@pytest.mark.parametrize("chat_model, image_content, blocks", [
    (None, "auto", ["text", "image"]),
    (ChatAnthropic(), "auto", ["text", "image"]),
    (ChatGoogleGenerativeAI(), "auto", ["text", "image"]),
    (ChatOpenAI(use_responses_api=True), "auto", ["text", "image"]),
    (ChatOpenAI(), "auto", ["text"]),  # Chat Completions takes only text parts in a tool message
    (ChatOpenAI(), "block", ["text", "image"]),
    (ChatAnthropic(), "none", ["text"]),
])
def test_image_content_follows_what_the_chat_model_accepts(toolkit, files, chat_model, image_content, blocks):
    kit = Rea2SegToolkit(pipeline=toolkit.pipeline, allowed_dirs=[str(files["allowed"])], chat_model=chat_model,
                         image_content=image_content)
    msg = kit.get_tools()[0].invoke(tool_call("reasoning_segment", {"image_path": str(files["image"]),
                                                                      "question": "q"}))
    assert [b["type"] for b in msg.content] == blocks


def test_messages_speak_langchain_not_server_flags(toolkit, files, tmp_path):
    """The shared engine service words its fixes for the door: a LangChain user has no server and no flags."""
    seg = {t.name: t for t in toolkit.get_tools()}["reasoning_segment"]
    texts = [seg.invoke(tool_call("reasoning_segment", {"image_path": str(files["secret"]), "question": "q"})).content,
             Rea2SegToolkit(pipeline=toolkit.pipeline).get_tools()[0].invoke(tool_call(
                 "reasoning_segment", {"image_path": str(files["image"]), "question": "q"})).content,
             {t.name: t for t in toolkit.get_tools()}["score_candidates"].invoke(tool_call(
                 "score_candidates", {"result_id": "r0123456789ab"})).content,
             seg.invoke(tool_call("reasoning_segment", {"image_path": str(files["image"]), "question": "q",
                                                        "top_k": 10 ** 9})).content]
    with pytest.raises(ValueError) as missing_dir:
        Rea2SegToolkit(pipeline=toolkit.pipeline, allowed_dirs=[str(tmp_path / "nope")])
    texts.append(str(missing_dir.value))
    for text in texts:
        assert "server" not in text and "--" not in text and "\n" not in text, text
    assert "allowed_dirs" in texts[0] and "allowed_dirs" in texts[1] and "max_results" in texts[2]
    assert texts[3].startswith("invalid arguments: top_k: Input should be less than or equal to 64")
