"""Keep stdout for the protocol only.

Over stdio, one stray line on stdout (a library's print, a progress bar, a C extension's printf) corrupts the JSON-RPC
stream and the client drops the server. So before anything else runs, the real stdout and stdin are duplicated onto
private descriptors that only the transport uses, and fd 1 is pointed at stderr (fd 0 at /dev/null) for the rest of
the process: Python prints, ``os.write(1, ...)``, child processes and C-level ``printf`` all land on stderr, even
output still buffered at exit. Nothing restores fd 1 afterwards, so there is no window in which noise reaches the wire.
"""
from __future__ import annotations

import io
import os
import sys
from dataclasses import dataclass


@dataclass
class ProtocolStreams:
    """Binary streams on private duplicates of the original stdin / stdout."""

    stdin: io.BufferedReader
    stdout: io.BufferedWriter


def claim_protocol_streams() -> ProtocolStreams:
    """Move the real stdin/stdout to private descriptors for the transport; point fd 1 at stderr, fd 0 at /dev/null.

    Call once, first thing in ``main``. Returns the private streams (use them for the stdio transport, or ignore them
    for HTTP, where stdout is then just another log stream).
    """
    sys.stdout.flush()
    wire_out, wire_in = _dup_private(1), _dup_private(0)
    os.dup2(2, 1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    # sys.stdout still wraps fd 1, which is now stderr; line buffering so output interleaves sensibly with logs.
    try:
        sys.stdout.reconfigure(line_buffering=True)
    except (AttributeError, ValueError):
        pass
    return ProtocolStreams(stdin=os.fdopen(wire_in, "rb"), stdout=os.fdopen(wire_out, "wb"))


def _dup_private(fd: int) -> int:
    """A non-inheritable duplicate of ``fd`` outside the standard range 0..2."""
    held = []
    dup = os.dup(fd)
    while dup <= 2:  # a standard descriptor was closed at start-up: keep looking above it
        held.append(dup)
        dup = os.dup(fd)
    for h in held:
        os.close(h)
    return dup
