"""One small error hierarchy. Every message says what was wrong and how to fix it.

Doors map these to their own error channel: the CLI prints ``str(err)`` on one line and exits non-zero, ComfyUI shows
the message, MCP returns an error result, LangChain raises ``ToolException``.
"""
from __future__ import annotations


class Rea2SegError(Exception):
    """Base class for every error Rea2Seg raises on purpose (a user-facing, one-line message)."""

    exit_code = 1


class InputError(Rea2SegError, ValueError):
    """A bad image, question, path or argument supplied by the caller."""

    exit_code = 2


class ModelError(Rea2SegError):
    """A model could not be found, downloaded, verified or loaded."""

    exit_code = 3


class ModelNotFoundError(ModelError, FileNotFoundError):
    """A model file or directory is missing (the message names the exact path and the command that fetches it)."""


class CheckpointError(ModelError):
    """A checkpoint exists but is unusable: truncated, wrong kind, unsafe pickle, missing processor files."""


class ResourceError(Rea2SegError):
    """Out of memory, or the server is busy (queue full). Retry later or with smaller settings."""

    exit_code = 4


class BusyError(ResourceError):
    """More requests are waiting than the configured queue bound."""


class OutputExistsError(InputError, FileExistsError):
    """An output file exists and ``--force`` / ``overwrite=True`` was not given."""


class Cancelled(Rea2SegError):
    """The caller cancelled the run (ComfyUI interrupt, MCP cancellation)."""

    exit_code = 130
