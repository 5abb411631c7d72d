"""Measuring tools shared by ``bench.run`` and ``bench.gpu_profile``: side-by-side timing, model-forward accounting,
process memory."""
from __future__ import annotations

import contextlib
import os
import platform
import resource
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import torch


def sync(device: torch.device | str | None = None) -> None:
    """Wait for queued GPU work (a no-op on CPU), so a timer stops when the work is done."""
    if torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda"):
        torch.cuda.synchronize()


def side_by_side(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1,
                 device: torch.device | str | None = None) -> dict[str, list[float]]:
    """Time each function ``repeats`` times, interleaved (A B, then B A, ...) so that drift in the machine's load
    hits every variant alike. Returns seconds per call, per name."""
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for n in (names if r % 2 == 0 else names[::-1]):
            sync(device)
            t = time.perf_counter()
            fns[n]()
            sync(device)
            times[n].append(time.perf_counter() - t)
    return times


def median(xs: list[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def paired_ratio(slow: list[float], fast: list[float]) -> float:
    """Median of the per-repeat ratios slow/fast (each pair was timed back to back)."""
    return median([s / f for s, f in zip(slow, fast) if f > 0])


@dataclass
class ForwardTimer:
    """Accumulates wall time spent inside the outermost forward of the given modules (nested hooked modules are not
    counted twice) and counts the tokens the language model saw: prefill (sequence > 1) and decode (one new token
    per row) positions.

    ``lm`` is the module whose ``input_ids`` are counted (the VLM's top-level model); the time of its outermost
    calls is also split into prefill and decode seconds, for tokens/s, and the time of other outermost calls (e.g.
    the vision tower, which ``generate`` runs before the first forward) goes to ``other_seconds``."""

    modules: list[torch.nn.Module]
    lm: torch.nn.Module | None = None
    device: torch.device | str | None = None
    seconds: float = 0.0
    calls: int = 0
    prefill_tokens: int = 0
    decode_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    other_seconds: float = 0.0
    _kind: str | None = None
    _depth: int = 0
    _start: float = 0.0
    _handles: list = field(default_factory=list)

    def __enter__(self) -> "ForwardTimer":
        for m in self.modules:
            self._handles.append(m.register_forward_pre_hook(self._pre))
            self._handles.append(m.register_forward_hook(self._post))
        if self.lm is not None:
            self._handles.append(self.lm.register_forward_pre_hook(self._count, with_kwargs=True))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._depth = 0

    def reset(self) -> None:
        self.seconds, self.calls, self.prefill_tokens, self.decode_tokens = 0.0, 0, 0, 0
        self.prefill_seconds = self.decode_seconds = self.other_seconds = 0.0

    def _pre(self, module, args) -> None:
        if self._depth == 0:
            sync(self.device)
            self._start = time.perf_counter()
        self._depth += 1

    def _post(self, module, args, output) -> None:
        self._depth -= 1
        if self._depth == 0:
            sync(self.device)
            dt = time.perf_counter() - self._start
            self.seconds += dt
            self.calls += 1
            if self._kind == "prefill":
                self.prefill_seconds += dt
            elif self._kind == "decode":
                self.decode_seconds += dt
            else:
                self.other_seconds += dt
            self._kind = None

    def _count(self, module, args, kwargs) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            return
        outermost = self._depth <= 1 if module in self.modules else self._depth == 0
        if ids.shape[-1] > 1:
            self.prefill_tokens += int(ids.numel())
            self._kind = "prefill" if outermost else self._kind
        else:
            self.decode_tokens += int(ids.numel())
            self._kind = "decode" if outermost else self._kind


@contextlib.contextmanager
def stopwatch(device: torch.device | str | None = None):
    """``with stopwatch() as t: ...`` then ``t()`` is the elapsed seconds."""
    sync(device)
    t0 = time.perf_counter()
    box: list[float] = []
    yield lambda: box[0] if box else time.perf_counter() - t0
    sync(device)
    box.append(time.perf_counter() - t0)


# ---- process memory (Linux) ------------------------------------------------------------------------------------------

def current_rss() -> int:
    """Resident set size now, bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss() -> int:
    """Peak resident set size of this process (since start, or since ``reset_peak_rss``), bytes."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux ``clear_refs`` 5). False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def tensor_bytes(module: torch.nn.Module) -> int:
    """Bytes of a module's parameters and buffers."""
    seen, total = set(), 0
    for t in list(module.parameters()) + list(module.buffers()):
        if t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        total += t.numel() * t.element_size()
    return total


def param_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in module.parameters()}.values())


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def fmt_seconds(s: float) -> str:
    if s != s:
        return "n/a"
    return f"{s * 1000:.0f} ms" if s < 1 else f"{s:.2f} s"
