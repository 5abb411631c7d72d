"""Words the agent doors share in their error messages: how a door's user changes a setting an error is about
(``DoorWording``: an MCP server is configured with command-line flags, a LangChain toolkit with constructor
arguments), and argument-validation errors as one line."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DoorWording:
    """The fix each error names, in the door's own terms. The defaults name no door."""

    #: how to allow the folder of a file outside the allowed directories
    allow_dir: str = "add its folder to the allowed directories"
    #: how to allow reading at all, when no directory is allowed
    no_dirs: str = "configure at least one allowed directory"
    #: how to configure where outputs are saved
    output_dir: str = "configure an output directory"
    #: how to let more requests wait
    max_queue: str = "allow more waiting requests"
    #: how to keep more results for follow-up calls
    max_results: str = "keep more results"


def argument_errors(errors: list[dict], limit: int = 60) -> str:
    """Argument-validation errors (pydantic's ``ValidationError.errors()``: dicts with ``loc``, ``msg``, ``input``) as
    one line naming each argument, what is wrong and the value given, e.g. ``invalid arguments: top_k: Input should
    be less than or equal to 64 (got 1000000000)``. No documentation URL, no newline."""
    parts = []
    for err in errors:
        where = ".".join(str(p) for p in err.get("loc", ())) or "arguments"
        msg = " ".join(str(err.get("msg", "invalid")).split())
        got = ""
        if err.get("type") != "missing" and "input" in err:
            shown = repr(err["input"])
            got = f" (got {shown[:limit] + '...' if len(shown) > limit else shown})"
        parts.append(f"{where}: {msg}{got}")
    return "invalid arguments: " + "; ".join(parts)
