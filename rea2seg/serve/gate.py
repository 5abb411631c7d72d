"""One gate in front of the engine, shared by every door that takes requests concurrently (MCP, LangChain).

The models hold one GPU, so jobs run ``capacity`` at a time (1 by default) in arrival order. At most ``max_queue``
requests wait behind them; one more gets ``BusyError`` at once instead of hanging. A request cancelled while waiting
leaves the queue immediately; one cancelled while running sees its ``cancelled()`` flag turn true (the engine
checks it between candidates) and frees its slot when the engine stops.
"""
from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

from ..errors import BusyError, Cancelled

T = TypeVar("T")

#: A job gets a zero-argument ``cancelled`` callable and passes it to the engine as ``cancel=``.
Job = Callable[[Callable[[], bool]], T]


class _Ticket:
    __slots__ = ("cancelled", "external")

    def __init__(self, external: Callable[[], bool] | None):
        self.cancelled = False
        self.external = external

    def is_cancelled(self) -> bool:
        if not self.cancelled and self.external is not None and self.external():
            self.cancelled = True
        return self.cancelled


class EngineGate:
    """Runs jobs ``capacity`` at a time, FIFO, with at most ``max_queue`` waiting; thread-safe and usable from
    synchronous code (``run``) and from any anyio event loop (``run_async``, which waits in a worker thread)."""

    #: How often a waiting thread re-checks an external cancel callable, in seconds.
    poll_s = 0.2

    def __init__(self, capacity: int = 1, max_queue: int = 8, busy_fix: str = "allow more waiting requests"):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        if max_queue < 0:
            raise ValueError(f"max_queue must be >= 0, got {max_queue}")
        self.capacity = capacity
        self.max_queue = max_queue
        self.busy_fix = busy_fix  # how the operator lets more requests wait, in the door's terms
        self._cond = threading.Condition()
        self._queue: deque[_Ticket] = deque()
        self._active = 0
        self._finished = 0
        self._rejected = 0
        # Jobs run on ``capacity`` long-lived engine threads rather than on whichever worker thread waited: torch then
        # allocates from the same malloc arenas every time, and resident memory stays flat under many clients.
        self._engine = ThreadPoolExecutor(max_workers=capacity, thread_name_prefix="rea2seg-engine")

    def status(self) -> dict:
        with self._cond:
            return {"running": self._active, "waiting": len(self._queue), "capacity": self.capacity,
                    "max_queue": self.max_queue, "finished": self._finished, "rejected_busy": self._rejected}

    # ---- the two entry points -------------------------------------------------------------------------------------

    def run(self, job: Job[T], cancel: Callable[[], bool] | None = None) -> T:
        """Run ``job(cancelled)`` in the calling thread once it is this request's turn.

        cancel: optional callable; when it returns True while waiting, the request leaves the queue and
        ``Cancelled`` is raised; while running, the job's ``cancelled()`` returns True.
        """
        return self._run_ticket(self._admit(cancel), job)

    async def run_async(self, job: Job[T]) -> T:
        """Run ``job(cancelled)`` in a worker thread once it is this request's turn, without blocking the event loop.

        Cancelling the awaiting task (client disconnect, MCP ``notifications/cancelled``) raises at once; the
        request leaves the queue, or, if already running, its ``cancelled()`` flag is set and the slot is freed when
        the engine stops at its next check.
        """
        import anyio  # only the async doors need it (they install it); the engine itself does not

        ticket = self._admit(None)
        try:
            return await anyio.to_thread.run_sync(self._run_ticket, ticket, job, abandon_on_cancel=True)
        except anyio.get_cancelled_exc_class():
            self._abandon(ticket)
            raise

    # ---- internals ------------------------------------------------------------------------------------------------

    def _admit(self, external: Callable[[], bool] | None) -> _Ticket:
        with self._cond:
            free = self._active < self.capacity and not self._queue
            if not free and len(self._queue) >= self.max_queue:
                self._rejected += 1
                raise BusyError(
                    f"busy: {self._active} request(s) running and {len(self._queue)} waiting, the queue limit "
                    f"(max_queue={self.max_queue}); retry in a moment or {self.busy_fix}")
            ticket = _Ticket(external)
            self._queue.append(ticket)
            return ticket

    def _abandon(self, ticket: _Ticket) -> None:
        with self._cond:
            ticket.cancelled = True
            try:
                self._queue.remove(ticket)
            except ValueError:  # already running (or finished): its job sees cancelled() and stops
                pass
            self._cond.notify_all()

    def _run_ticket(self, ticket: _Ticket, job: Job[T]) -> T:
        with self._cond:
            while not (self._queue and self._queue[0] is ticket and self._active < self.capacity):
                if ticket.is_cancelled():
                    if ticket in self._queue:
                        self._queue.remove(ticket)
                        self._cond.notify_all()
                    raise Cancelled("request cancelled while waiting for the engine")
                self._cond.wait(self.poll_s if ticket.external is not None else None)
            self._queue.popleft()
            self._active += 1
            self._cond.notify_all()  # the next in line may start if capacity > 1
        try:
            if ticket.is_cancelled():
                raise Cancelled("request cancelled before the engine started")
            return self._engine.submit(job, ticket.is_cancelled).result()
        finally:
            with self._cond:
                self._active -= 1
                self._finished += 1
                self._cond.notify_all()
