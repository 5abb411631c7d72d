"""The MCP tools and resources: typed module-level functions (the SDK's style) that check arguments, run a job on the
engine service the server's lifespan holds, and convert the answer (JSON text + one small PNG + structured content).
``build_server`` registers them on an ``MCPServer``."""
from __future__ import annotations

import asyncio
import base64
import inspect
import json
import logging
from contextlib import asynccontextmanager, contextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any, Literal

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp.types import CallToolResult, ImageContent, Resource, TextContent, ToolAnnotations
from pydantic import BaseModel, Field, ValidationError

from rea2seg import images
from rea2seg.config import CANDIDATE_SOURCES, MAX_QUESTION_CHARS, MAX_TOP_K, CandidateSource, ScoringMode
from rea2seg.errors import Cancelled, Rea2SegError
from rea2seg.serve.messages import DoorWording, argument_errors
from rea2seg.serve.service import JOB_STAGES, PreviewImage, ProgressScale, SegmentationService
from rea2seg.types import SegmentationResult

from .schemas import DiscoverOutput, MaskOutput, Preview, SegmentOutput, StatusOutput

log = logging.getLogger("rea2seg.mcp")

INSTRUCTIONS = (
    "Reasoning segmentation: give an image and a question (e.g. 'what can I cut the bread with?'); the server finds "
    "the object that answers it and returns its mask, box and score. Pass image_path as an ABSOLUTE path of a local "
    "file inside the server's allowed directories (see server_status); images attached to the chat are not visible to "
    "this server. segment does everything in one call; discover_candidates + score_candidates split it in two. "
    "Results are kept under result_id for get_mask and score_candidates.")

#: The fixes this server's errors name: its command-line flags.
MCP_WORDING = DoorWording(
    allow_dir="start the server with --allowed-dir for its folder",
    no_dirs="start the server with --allowed-dir DIR (or set REA2SEG_ALLOWED_DIRS), or pass image_base64",
    output_dir="start the server with --output-dir DIR",
    max_queue="start the server with a larger --max-queue",
    max_results="start the server with a larger --max-results")

MASK_URI = "rea2seg://results/{result_id}/mask.png"
CANDIDATE_URI = "rea2seg://results/{result_id}/candidates/{number}/mask.png"

ImagePath = Annotated[str | None, Field(description="Absolute path of a local image inside the allowed directories")]
ImageB64 = Annotated[str | None, Field(description="The image as base64 (or a data: URL), for programmatic clients; "
                                                   "give either this or image_path")]
Question = Annotated[str, Field(min_length=1, max_length=MAX_QUESTION_CHARS,
                                description="What to find, as a question or description "
                                            "(e.g. 'which object can cut the bread?')")]
TopK = Annotated[int, Field(ge=1, le=MAX_TOP_K, description="How many ranked candidates to report")]
ModeArg = Annotated[ScoringMode | None, Field(description="Scoring: yesno (fast), reasoning (explains), comparative "
                                                          "(all candidates in one prompt); default from the server's "
                                                          "preset")]
Merge = Annotated[bool, Field(description="Answer with the union of the top_k masks")]
Sources = Annotated[list[CandidateSource] | None, Field(
    description="Where candidates come from (default: the server's preset): "
                + "; ".join(f"{k}: {v}" for k, v in CANDIDATE_SOURCES.items()))]
AnswerPreview = Annotated[Literal["overlay", "mask", "none"],
                          Field(description="Image returned: the mask drawn on the image, the bare mask, or none")]

READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)
WRITES_FILES = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False,
                               open_world_hint=False)


def _version() -> str:
    try:
        return version("rea2seg")
    except PackageNotFoundError:
        return "unknown"


def _service(ctx: Context) -> SegmentationService:
    """The engine service this server was built with (held by its lifespan)."""
    return ctx.request_context.lifespan_context


@contextmanager
def _user_errors():
    """Rea2Seg's own errors become a tool error result with their one-line message; anything else is a crash the
    SDK reports as a generic error (traceback on stderr only)."""
    try:
        yield
    except Cancelled as e:
        raise ToolError(f"cancelled: {e}") from None
    except Rea2SegError as e:
        raise ToolError(str(e)) from None


def _progress_reporter(ctx: Context, job: str, sent: list) -> ProgressScale:
    """Engine progress (stage, done, total), called in the engine thread, as MCP progress notifications with a
    ``total`` (the job's stages, one unit each; see ``ProgressScale``), a heartbeat while the models load included.
    Created on the event loop; each notification is posted to it without waiting (in order), so the engine never
    stalls on a busy loop or a slow client; ``sent`` collects them, to be flushed before the result."""
    loop = asyncio.get_running_loop()

    def report(progress: float, total: float, message: str) -> None:
        try:
            sent.append(asyncio.run_coroutine_threadsafe(ctx.report_progress(progress, total, message), loop))
        except Exception:  # the loop may be closing; progress must never fail the job
            pass
    return ProgressScale(JOB_STAGES[job], report)


async def _run(ctx: Context, kind: str, job) -> SegmentationResult:
    sent: list = []
    scale = _progress_reporter(ctx, kind, sent)
    try:
        result = await _service(ctx).run_async(job, progress=scale)
        scale.finish()
        return result
    finally:
        # the last notifications go out before the result: a client drops progress that arrives after it
        with anyio.move_on_after(5):
            for future in sent:
                try:
                    await asyncio.wrap_future(future)
                except Exception:  # a notification that failed (client gone) must not fail the call
                    pass


def _result(model: BaseModel, preview: PreviewImage | None) -> CallToolResult:
    data = model.model_dump(mode="json")
    content: list = [TextContent(type="text", text=json.dumps(data, separators=(",", ":")))]
    if preview:
        content.append(ImageContent(type="image", data=base64.b64encode(preview.data).decode(),
                                    mime_type=preview.mime_type))
    return CallToolResult(content=content, structured_content=data)


def _preview_info(kind: str, preview: PreviewImage | None) -> Preview | None:
    if not preview:
        return None
    return Preview(kind=kind, width=preview.width, height=preview.height, mime_type=preview.mime_type,
                   bytes=len(preview.data))


def _answer_result(service: SegmentationService, answer: SegmentationResult, preview: str) -> CallToolResult:
    image = service.preview(answer, preview)
    out = SegmentOutput.model_validate(answer.to_json(mask_uri=MASK_URI.format(result_id=answer.result_id),
                                                      preview=_preview_info(preview, image)))
    return _result(out, image)


def _discovery_result(service: SegmentationService, found: SegmentationResult, preview: str) -> CallToolResult:
    image = service.preview(found, preview)
    out = DiscoverOutput.model_validate(found.to_json(preview=_preview_info(preview, image)))
    return _result(out, image)


def _mask_result(service: SegmentationService, answer: SegmentationResult, candidate: int | None, format: str,
                 save: bool, filename: str | None) -> CallToolResult:
    info = answer.mask_info(candidate)
    mask = answer.candidate_mask(candidate)
    saved = service.save_mask(answer, candidate, filename) if save or filename else None
    image = service.preview(answer, "mask", candidate) if format == "png" else None
    uri = (MASK_URI.format(result_id=answer.result_id) if candidate is None
           else CANDIDATE_URI.format(result_id=answer.result_id, number=candidate))
    out = MaskOutput(result_id=answer.result_id, format=format, mask_uri=uri, **info,
                     rle=images.rle_encode(mask) if format == "rle" else None,
                     saved_path=str(saved) if saved else None, preview=_preview_info("mask", image))
    return _result(out, image)


# ---- tools ------------------------------------------------------------------------------------------------------------

async def segment(ctx: Context, *, image_path: ImagePath = None, question: Question, image_base64: ImageB64 = None,
                  top_k: TopK = 3, mode: ModeArg = None, merge: Merge = False, preview: AnswerPreview = "overlay",
                  sources: Sources = None) -> Annotated[CallToolResult, SegmentOutput]:
    """Find the object in the image that answers the question; returns its box, score, the scorer's reasoning,
    a result_id, and a preview (JPEG, long side <= 1024 px). Full-resolution mask: get_mask or the mask_uri resource."""
    with _user_errors():
        service = _service(ctx)
        answer = await _run(ctx, "segment", service.segment_job(question, image_path, image_base64, top_k=top_k,
                                                                mode=mode, merge=merge, sources=sources))
        return await anyio.to_thread.run_sync(_answer_result, service, answer, preview)


async def discover_candidates(ctx: Context, *, image_path: ImagePath = None, question: Question,
                              image_base64: ImageB64 = None,
                              preview: Annotated[Literal["candidates", "heatmap", "none"],
                                                 Field(description="Image returned: numbered candidates, the "
                                                                   "attention heat map, or none")] = "candidates",
                              sources: Sources = None) -> Annotated[CallToolResult, DiscoverOutput]:
    """Stage 1 only: candidate masks (from where the VLM looks when reading the question, and the other sources the
    server or ``sources`` turns on), unscored. Follow with score_candidates(result_id) to pick the answer."""
    with _user_errors():
        service = _service(ctx)
        found = await _run(ctx, "discover", service.discover_job(question, image_path, image_base64,
                                                                sources=sources))
        return await anyio.to_thread.run_sync(_discovery_result, service, found, preview)


async def score_candidates(ctx: Context, *,
                           result_id: Annotated[str, Field(description="result_id of an earlier segment or "
                                                                       "discover_candidates call")],
                           question: Annotated[str | None, Field(max_length=MAX_QUESTION_CHARS,
                                                                 description="Score for this question instead of "
                                                                             "the original one")] = None,
                           candidates: Annotated[list[int] | None, Field(
                               description="Only these candidate numbers (as on the candidates image)")] = None,
                           mode: ModeArg = None, top_k: TopK = 3, merge: Merge = False,
                           preview: AnswerPreview = "overlay",
                           ) -> Annotated[CallToolResult, SegmentOutput]:
    """Stage 2: the VLM scores the candidates of an earlier result (all or some, optionally for another question
    or mode) and the best one becomes the answer. Candidates keep their numbers. Returns a new result_id."""
    with _user_errors():
        service = _service(ctx)
        answer = await _run(ctx, "score", service.score_job(result_id, question, candidates, mode=mode, top_k=top_k,
                                                   merge=merge))
        return await anyio.to_thread.run_sync(_answer_result, service, answer, preview)


async def get_mask(ctx: Context, *, result_id: Annotated[str, Field(description="result_id from an earlier call")],
                   candidate: Annotated[int | None,
                                        Field(description="Candidate number; omit for the answer")] = None,
                   format: Annotated[Literal["png", "rle"],
                                     Field(description="png: an image of the mask (long side <= 1024 px; the exact "
                                                       "full-resolution PNG is the mask_uri resource); rle: the exact "
                                                       "mask as COCO RLE")] = "png",
                   save: Annotated[bool, Field(description="Also save the full-resolution PNG in the server's "
                                                           "output directory (never overwriting a file)")] = False,
                   filename: Annotated[str | None, Field(description="File name for save (letters, digits, ._-); "
                                                                     "default <result_id>_mask")]
                   = None,
                   ) -> Annotated[CallToolResult, MaskOutput]:
    """A mask of an earlier result: the answer (default) or one candidate, as PNG or RLE, optionally saved."""
    with _user_errors():
        service = _service(ctx)
        answer = service.get(result_id)
        return await anyio.to_thread.run_sync(_mask_result, service, answer, candidate, format, save, filename)


async def server_status(ctx: Context) -> Annotated[CallToolResult, StatusOutput]:
    """Models and device, requests running/waiting, kept results, allowed directories and output directory."""
    status = _service(ctx).status()
    return _result(StatusOutput.model_validate({"version": _version(), "transport": ctx.mcp_server.transport,
                                                **status}), None)


# ---- resources --------------------------------------------------------------------------------------------------------

def _mask_png(ctx: Context, result_id: str, number: int | None) -> bytes:
    try:
        return images.png_bytes(_service(ctx).get(result_id).candidate_mask(number))
    except Rea2SegError as e:
        raise ResourceError(str(e)) from None


def answer_mask(result_id: str, ctx: Context) -> bytes:
    """Full-resolution answer mask of a kept result."""
    return _mask_png(ctx, result_id, None)


def candidate_mask(result_id: str, number: str, ctx: Context) -> bytes:
    """Full-resolution mask of one candidate."""
    if not number.isdigit():
        raise ResourceError(f"candidate number must be a whole number from 1, got {number!r}")
    return _mask_png(ctx, result_id, int(number))


# ---- the server -------------------------------------------------------------------------------------------------------

class Rea2SegMCPServer(MCPServer):
    """An ``MCPServer`` that remembers which transport serves it (``server_status`` reports it), lists the masks of
    kept results as resources, and reports bad arguments in one line."""

    transport: str = "stdio"
    service: SegmentationService | None = None

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Context | None = None):
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as e:
            # The SDK's text for arguments that fail the input schema is pydantic's multi-line report with a
            # documentation URL; the caller (a model) gets one line naming each argument instead.
            if isinstance(e.__cause__, ValidationError):
                raise ToolError(f"Error executing tool {name}: {argument_errors(e.__cause__.errors())}") \
                    from e.__cause__
            raise

    async def list_resources(self) -> list[Resource]:
        """The full-resolution masks of the kept results, most recently used first: each answer, then its
        candidates."""
        listed = await super().list_resources()
        for r in self.service.results() if self.service is not None else []:
            about = f"{r.question[:60]!r}, {r.image_size[1]}x{r.image_size[0]}"
            if r.mask is not None:
                listed.append(Resource(uri=MASK_URI.format(result_id=r.result_id), name=f"{r.result_id}/mask.png",
                                       title=f"Answer mask of {r.result_id} ({about})", mime_type="image/png"))
            for number in r.candidates.numbers:
                listed.append(Resource(uri=CANDIDATE_URI.format(result_id=r.result_id, number=int(number)),
                                       name=f"{r.result_id}/candidates/{number}/mask.png",
                                       title=f"Candidate {number} of {r.result_id} ({about})",
                                       mime_type="image/png"))
        return listed


def build_server(service: SegmentationService, transport: str = "stdio") -> MCPServer:
    """An MCP server exposing ``service``: tools segment, discover_candidates, score_candidates, get_mask,
    server_status, and the masks of kept results as resources."""

    @asynccontextmanager
    async def lifespan(_server):
        yield service

    mcp = Rea2SegMCPServer("rea2seg", instructions=INSTRUCTIONS, version=_version(), lifespan=lifespan)
    mcp.transport = transport
    mcp.service = service
    for tool in (segment, discover_candidates, score_candidates, server_status, get_mask):
        # the docstring without its source indentation (the SDK would publish it as written)
        mcp.add_tool(tool, description=inspect.cleandoc(tool.__doc__),
                     annotations=WRITES_FILES if tool is get_mask else READ_ONLY)
    mcp.resource(MASK_URI, mime_type="image/png", description=answer_mask.__doc__)(answer_mask)
    mcp.resource(CANDIDATE_URI, mime_type="image/png", description=candidate_mask.__doc__)(candidate_mask)
    return mcp
