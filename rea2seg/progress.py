"""Progress reporting and cancellation hooks that every stage accepts (ComfyUI's ProgressBar and interrupt, MCP
progress notifications and cancellation, the CLI's stderr lines all plug in here)."""
from __future__ import annotations

from typing import Callable

from .errors import Cancelled

#: progress(stage, done, total)
Progress = Callable[[str, int, int], None]
#: cancel() -> True to stop; checked between stages and between candidate batches
CancelCheck = Callable[[], bool]


def check_cancel(cancel: CancelCheck | None) -> None:
    if cancel is not None and cancel():
        raise Cancelled("cancelled by the caller")
