"""LangChain tools over the shared engine service: ``reasoning_segment``, ``discover_candidates``,
``score_candidates``.

Each answers with ``content_and_artifact``: the content (what the model sees) is a short JSON summary plus, where the
chat model accepts images in tool results, one small JPEG block; the artifact (kept by the program, never sent to the
model) is the engine's answer, a ``SegmentationResult`` with numpy masks.
"""
from __future__ import annotations

import base64
import json
from contextlib import contextmanager
from typing import Any, Callable, Literal

import anyio
from langchain_core.messages.content import create_image_block, create_text_block
from langchain_core.tools import BaseTool, BaseToolkit, ToolException
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from rea2seg.config import CANDIDATE_SOURCES, MAX_QUESTION_CHARS, MAX_TOP_K, CandidateSource, ScoringMode
from rea2seg.errors import InputError, Rea2SegError
from rea2seg.serve.messages import DoorWording, argument_errors
from rea2seg.serve.paths import AllowedDirs, OutputDir
from rea2seg.serve.service import SegmentationService
from rea2seg.types import SegmentationResult

#: The fixes the tools' errors name: the toolkit's own arguments.
LANGCHAIN_WORDING = DoorWording(
    allow_dir="add its folder to the toolkit's allowed_dirs",
    no_dirs="create the toolkit with allowed_dirs=[...] naming the image folders",
    output_dir="saving is not offered by these tools: use the artifact's masks",
    max_queue="create the toolkit with a larger max_queue",
    max_results="create the toolkit with a larger max_results")

ImageContent = Literal["auto", "block", "none"]


def accepts_tool_images(chat_model) -> bool:
    """Whether ``chat_model``'s integration sends image blocks inside a tool result to an API that takes them.

    Measured with each integration's own request conversion (docs/AGENTS.md): ChatAnthropic (tool_result content
    with an image) yes; ChatOpenAI with the Responses API (``use_responses_api=True``: function_call_output with
    input_image) yes; ChatOpenAI with Chat Completions (its default) no, the API takes only text parts in a tool
    message; ChatGoogleGenerativeAI yes (the function response carries the image). Other models: yes (LangChain's
    standard image block; pass ``image_content="none"`` if yours refuses it).
    """
    name = type(chat_model).__name__
    if name in ("ChatOpenAI", "AzureChatOpenAI"):
        decide = getattr(chat_model, "_use_responses_api", None)  # the integration's own choice of API
        if callable(decide):
            try:
                return bool(decide({"tools": [{"type": "function"}]}))
            except Exception:  # another version of the integration: fall back to the explicit setting
                pass
        return bool(getattr(chat_model, "use_responses_api", False))
    return True


def _sources_field():
    return Field(None, description="Where candidates come from (default: the preset's): " + "; ".join(
        f"{k}: {v}" for k, v in CANDIDATE_SOURCES.items()))


class SegmentInput(BaseModel):
    image_path: str = Field(description="Absolute path of a local image file inside the allowed directories")
    question: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS,
                          description="What to find, as a question or description "
                                      "(e.g. 'which object can cut the bread?')")
    top_k: int = Field(3, ge=1, le=MAX_TOP_K, description="How many ranked candidates to report")
    mode: ScoringMode | None = Field(None, description="Scoring: yesno (fast), reasoning (explains), comparative; "
                                                "default from the preset")
    merge: bool = Field(False, description="Answer with the union of the top_k masks")
    sources: list[CandidateSource] | None = _sources_field()


class DiscoverInput(BaseModel):
    image_path: str = Field(description="Absolute path of a local image file inside the allowed directories")
    question: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS,
                          description="What to find, as a question or description")
    sources: list[CandidateSource] | None = _sources_field()


class ScoreInput(BaseModel):
    result_id: str = Field(description="result_id returned by discover_candidates or reasoning_segment")
    question: str | None = Field(None, max_length=MAX_QUESTION_CHARS,
                                 description="Score for this question instead of the original one")
    candidates: list[int] | None = Field(None, description="Only these candidate numbers (as drawn on the candidates "
                                                           "image; default: all)")
    mode: ScoringMode | None = Field(None, description="Scoring: yesno, reasoning or comparative")
    top_k: int = Field(3, ge=1, le=MAX_TOP_K, description="How many ranked candidates to report")
    merge: bool = Field(False, description="Answer with the union of the top_k masks")


@contextmanager
def _tool_errors():
    """Rea2Seg's own errors (bad path, not an image, unknown result id, busy) become ToolException, which the tool
    turns into an error ToolMessage the model can read and act on."""
    try:
        yield
    except Rea2SegError as e:
        raise ToolException(str(e)) from None


def _argument_errors(e: ValidationError) -> str:
    """A pydantic error as one line the model can act on."""
    return argument_errors(e.errors())


class _EngineTool(BaseTool):
    model_config = ConfigDict(arbitrary_types_allowed=True)
    response_format: Literal["content", "content_and_artifact"] = "content_and_artifact"
    handle_tool_error: bool = True
    handle_validation_error: Callable[[ValidationError], str] = _argument_errors
    service: SegmentationService = Field(exclude=True)
    include_image: bool = Field(True, description="Add a preview image block to the content")
    preview_kind: str = "overlay"

    def _job(self, **kwargs):  # -> a job from the service (arguments checked there)
        raise NotImplementedError

    def _respond(self, entry: SegmentationResult) -> tuple[list, SegmentationResult]:
        blocks = [create_text_block(text=json.dumps(entry.to_json(), separators=(",", ":")))]
        preview = self.service.preview(entry, self.preview_kind) if self.include_image else None
        if preview:
            blocks.append(create_image_block(base64=base64.b64encode(preview.data).decode(),
                                             mime_type=preview.mime_type))
        return blocks, entry

    def _run(self, run_manager=None, **kwargs: Any):
        with _tool_errors():
            entry = self.service.run(self._job(**kwargs))
            return self._respond(entry)

    async def _arun(self, run_manager=None, **kwargs: Any):
        # The engine runs in a worker thread behind the service's gate (shared by every tool of the toolkit); the
        # event loop stays free, and cancelling the awaiting task gives up the request's place.
        with _tool_errors():
            entry = await self.service.run_async(self._job(**kwargs))
            return await anyio.to_thread.run_sync(self._respond, entry)


class ReasoningSegmentTool(_EngineTool):
    name: str = "reasoning_segment"
    description: str = (
        "Find the object in an image that answers a question (reasoning segmentation). Input: an absolute image "
        "path and a question. Returns the answer's box [x1, y1, x2, y2], score, the scorer's reasoning, a result_id "
        "and an image of the mask drawn on the picture.")
    args_schema: type[BaseModel] = SegmentInput

    def _job(self, image_path: str, question: str, top_k: int = 3, mode: str | None = None, merge: bool = False,
             sources: list[str] | None = None):
        return self.service.segment_job(question, image_path=image_path, top_k=top_k, mode=mode, merge=merge,
                                        sources=sources)


class DiscoverCandidatesTool(_EngineTool):
    name: str = "discover_candidates"
    description: str = (
        "Stage 1 of reasoning segmentation: candidate object masks from where the vision-language model looks when "
        "reading the question, unscored. Returns numbered candidates (boxes, areas) with a result_id, and an image "
        "of the numbered candidates. Follow with score_candidates(result_id).")
    args_schema: type[BaseModel] = DiscoverInput
    preview_kind: str = "candidates"

    def _job(self, image_path: str, question: str, sources: list[str] | None = None):
        return self.service.discover_job(question, image_path=image_path, sources=sources)


class ScoreCandidatesTool(_EngineTool):
    name: str = "score_candidates"
    description: str = (
        "Stage 2: the vision-language model scores the candidates of an earlier result (all or some, optionally for "
        "another question) and the best one becomes the answer. Returns box, score, reasoning, a new result_id and "
        "an image of the answer.")
    args_schema: type[BaseModel] = ScoreInput

    def _job(self, result_id: str, question: str | None = None, candidates: list[int] | None = None,
             mode: str | None = None, top_k: int = 3, merge: bool = False):
        return self.service.score_job(result_id, question, candidates, mode=mode, top_k=top_k, merge=merge)


class Rea2SegToolkit(BaseToolkit):
    """The three Rea2Seg tools over one engine.

    preset: a model preset name (loaded once, here), or pipeline: an already loaded ``Rea2Seg``; neither means
    preset "default". scorer: a different scoring VLM for the preset (e.g. a ``rea2seg train-scorer`` output folder). allowed_dirs: directories the tools may read images from (the model only ever names paths;
    anything outside, or a symlink leading out, is refused). max_queue: calls that may wait while one runs (async
    use) before "busy". max_results: results kept for score_candidates.
    image_content: whether the content carries a preview image besides the JSON text: "block" always, "none" never
    (text-only models), "auto" (default) when ``chat_model``'s integration accepts images in tool results (see
    ``accepts_tool_images``: not OpenAI's Chat Completions API), or always when no chat_model is given.
    chat_model: the agent's chat model, for image_content="auto".
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)
    preset: str | None = None
    pipeline: Any = None
    scorer: str | None = None
    allowed_dirs: list[str] = Field(default_factory=list)
    device: str | None = None
    max_queue: int = 8
    max_results: int = 32
    image_content: ImageContent = "auto"
    chat_model: Any = None
    _service: SegmentationService = PrivateAttr()

    def __init__(self, **data: Any):
        super().__init__(**data)
        # checked here, after pydantic's own validation, so that a bad setting is the engine's one-line InputError
        # (a ValueError) instead of pydantic's multi-line report
        if self.preset and self.pipeline is not None:
            raise InputError("give either preset= or pipeline=, not both")
        if self.scorer and self.pipeline is not None:
            raise InputError("scorer= goes with preset=; a pipeline= already has its scorer")
        allowed = AllowedDirs([str(d) for d in self.allowed_dirs], setting="allowed_dirs")
        pipeline = self.pipeline
        if pipeline is None:
            from rea2seg import Rea2Seg

            pipeline = Rea2Seg.from_preset(self.preset or "default", device=self.device, scorer=self.scorer)
            self.pipeline = pipeline
        self._service = SegmentationService(pipeline, allowed_dirs=allowed, output_dir=OutputDir(None),
                                            max_queue=self.max_queue, max_results=self.max_results,
                                            wording=LANGCHAIN_WORDING)

    @property
    def service(self) -> SegmentationService:
        return self._service

    @property
    def include_image(self) -> bool:
        """Whether the tools' content carries the preview image (from ``image_content`` and ``chat_model``)."""
        if self.image_content == "auto":
            return self.chat_model is None or accepts_tool_images(self.chat_model)
        return self.image_content == "block"

    def status(self) -> dict:
        """The loaded models (VLM, scorer, segmenter: backend, kind, source, concept support), the default candidate
        sources, the device, and the engine's queue."""
        return self._service.status()

    def get_tools(self) -> list[BaseTool]:
        kw = {"service": self._service, "include_image": self.include_image}
        tools = [ReasoningSegmentTool(**kw), DiscoverCandidatesTool(**kw), ScoreCandidatesTool(**kw)]
        models = self._service.status()["models"]
        if isinstance(models, dict) and "segmenter" in models:  # tell the model what this toolkit's engine can do
            seg = models["segmenter"]
            note = (f" Segmenter here: {seg['backend']} ({seg['kind']}); candidate sources by default: "
                    f"{', '.join(models['sources'])}" + ("" if seg["concepts"] else "; 'concepts' needs SAM 3, not "
                                                         "loaded here") + ".")
            for tool in tools[:2]:
                tool.description += note
        return tools
