"""Output schemas of the MCP tools (published as ``outputSchema``; ``structured_content`` is validated against them)."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Open(BaseModel):
    # The engine may add keys (e.g. new timings); they pass through instead of failing validation.
    model_config = ConfigDict(extra="allow")


class CandidateInfo(_Open):
    number: int = Field(description="Candidate number within this result, from 1, as drawn on the candidates image "
                                    "(use with get_mask / score_candidates)")
    box_xyxy: list[float] = Field(description="Bounding box [x1, y1, x2, y2] in image pixels")
    area: int = Field(description="Mask area in pixels")
    score: float | None = Field(description="Score in [0, 1] from the VLM; null if not scored")
    source: str = Field(description="Where the candidate came from: peak:<i> / box:<i> (attention peak), vlm:<i> (the "
                                    "VLM's box), concept:<phrase> (SAM 3 concept prompt)")
    reasoning: str = Field("", description="What the scorer wrote about it (reasoning/comparative modes)")


class Preview(_Open):
    kind: str = Field(description="What the image content shows: overlay, mask, candidates or heatmap")
    width: int
    height: int
    mime_type: Literal["image/jpeg", "image/png"] = Field(description="JPEG for pictures, PNG for masks")
    bytes: int = Field(description="Size of the encoded image")


class SegmentOutput(_Open):
    result_id: str = Field(description="Id for follow-up calls (get_mask, score_candidates); recent results only")
    kind: Literal["segment", "score"]
    question: str
    box_xyxy: list[float] = Field(description="Bounding box [x1, y1, x2, y2] of the answer mask, in image pixels")
    score: float | None = Field(description="The answer's score in [0, 1]; null if nothing could be scored")
    reasoning: str = Field(description="The scorer's reasoning for the answer (may be empty in yes/no mode)")
    image_size: list[int] = Field(description="[width, height] of the input image")
    mask_area: int = Field(description="Answer mask area in pixels")
    mode: str = Field(description="Scoring mode used: yesno, reasoning or comparative")
    candidates: list[CandidateInfo] = Field(description="The top candidates, best first")
    n_candidates: int
    timings_ms: dict[str, float]
    warning: str | None = Field(None, description="Set when the output is meaningless or degraded")
    mask_uri: str = Field(description="Resource URI of the full-resolution answer mask (PNG)")
    preview: Preview | None = None


class DiscoverOutput(_Open):
    result_id: str = Field(description="Id for score_candidates / get_mask")
    kind: Literal["discover"]
    question: str
    image_size: list[int] = Field(description="[width, height] of the input image")
    candidates: list[CandidateInfo] = Field(description="Candidate masks found from the VLM's attention, unscored")
    n_candidates: int
    timings_ms: dict[str, float]
    warning: str | None = None
    preview: Preview | None = None


class Rle(BaseModel):
    size: list[int] = Field(description="[height, width]")
    counts: list[int] = Field(description="COCO uncompressed RLE: column-major run lengths, starting with background")


class MaskOutput(_Open):
    result_id: str
    candidate: int | None = Field(description="Candidate number (from 1), or null for the answer mask")
    format: Literal["png", "rle"]
    image_size: list[int] = Field(description="[width, height]")
    mask_area: int
    box_xyxy: list[float]
    mask_uri: str = Field(description="Resource URI of the full-resolution mask PNG")
    rle: Rle | None = Field(None, description="The exact mask as RLE (format='rle')")
    saved_path: str | None = Field(None, description="Where the full-resolution PNG was saved (save=true)")
    preview: Preview | None = None


class ModelStatus(_Open):
    state: Literal["loading", "ready", "error"] = Field(description="Whether the models are still loading, loaded, "
                                                                    "or failed to load")
    error: str | None = Field(None, description="Why loading failed (state 'error')")
    name: str | None = Field(None, description="Preset name, or 'custom'")
    vlm: str | None = Field(None, description="The discovery VLM (hub id or folder)")
    scorer: str | None = Field(None, description="The scoring VLM")
    sam: str | None = Field(None, description="The SAM checkpoint file")
    device: str | None = None
    dtype: str | None = None
    scoring_mode: str | None = Field(None, description="Default scoring mode")
    warning: str | None = Field(None, description="Set when the models' output is meaningless (random weights)")


class StatusOutput(_Open):
    version: str
    transport: str
    models: ModelStatus = Field(description="The models: loading, ready (names, device) or the load error")
    engine: dict[str, int] = Field(description="Requests running / waiting, queue bound, finished, rejected as busy")
    results_kept: int
    max_results: int
    allowed_dirs: list[str]
    output_dir: str | None
    max_base64_bytes: int
