"""Test helper (not collected): ``rea2seg-mcp`` with an engine that writes to stdout every way a library can.

The real pipeline is wrapped, not replaced: loading and ``segment`` run as usual, with noise around them. The wrapping
happens inside the model-loading step, i.e. after the server has started, as a library's own output would. Used by
tests/test_mcp.py::test_stdout_carries_only_protocol_when_engine_and_libraries_print.
"""
from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import os
import subprocess
import sys

import mcp_server.cli as cli


def _noise() -> None:
    print("PY-NOISE from print()")
    sys.stdout.write("PARTIAL-NOISE no newline, not flushed\r")
    os.write(1, b"FD-NOISE written to fd 1\n")
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.printf(b"C-NOISE from printf, left in the C buffer")
    subprocess.run(["echo", "CHILD-NOISE from a child process"], check=False)


def _make_noisy(load):
    def noisy_load():
        from rea2seg import Rea2Seg

        segment = Rea2Seg.segment

        def noisy_segment(self, *args, **kwargs):
            _noise()
            out = segment(self, *args, **kwargs)
            _noise()
            return out

        Rea2Seg.segment = noisy_segment
        print("LOAD-NOISE while loading the models")
        return load()
    return noisy_load


_factory = cli.pipeline_factory
cli.pipeline_factory = lambda args: _make_noisy(_factory(args))
atexit.register(lambda: print("EXIT-NOISE at exit, still buffered", end=""))

if __name__ == "__main__":
    sys.exit(cli.main())
