"""The engine gate (queue bound, FIFO, cancellation) and the result store shared by the agent doors."""
from __future__ import annotations

import threading
import time

import anyio
import pytest

from rea2seg.serve.gate import EngineGate
from rea2seg.errors import BusyError, Cancelled, InputError
from rea2seg.serve.store import ResultStore


def _wait_until(cond, timeout=5.0):
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("condition not reached")
        time.sleep(0.005)


def _blocker(gate: EngineGate):
    """Start a job that holds the gate until the returned event is set."""
    release, started = threading.Event(), threading.Event()

    def job(cancelled):
        started.set()
        release.wait(10)
        return "first"

    out = {}
    t = threading.Thread(target=lambda: out.setdefault("r", gate.run(job)))
    t.start()
    started.wait(5)
    return release, t, out


def test_runs_one_at_a_time_in_arrival_order():
    gate = EngineGate(capacity=1, max_queue=10)
    order, running, peak = [], [0], [0]
    lock = threading.Lock()
    release, t0, _ = _blocker(gate)

    def job_for(i):
        def job(cancelled):
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            time.sleep(0.01)
            order.append(i)
            with lock:
                running[0] -= 1
        return job

    threads = []
    for i in range(5):
        threads.append(threading.Thread(target=gate.run, args=(job_for(i),)))
        threads[-1].start()
        _wait_until(lambda: gate.status()["waiting"] == i + 1)
    release.set()
    for t in [t0, *threads]:
        t.join(5)
    assert order == [0, 1, 2, 3, 4]
    assert peak[0] == 1
    assert gate.status() == {"running": 0, "waiting": 0, "capacity": 1, "max_queue": 10, "finished": 6,
                             "rejected_busy": 0}


def test_queue_bound_gives_busy_at_once():
    gate = EngineGate(capacity=1, max_queue=2)
    release, t0, _ = _blocker(gate)
    waiters = [threading.Thread(target=gate.run, args=(lambda c: None,)) for _ in range(2)]
    for w in waiters:
        w.start()
    _wait_until(lambda: gate.status()["waiting"] == 2)
    t = time.monotonic()
    with pytest.raises(BusyError, match=r"\(max_queue=2\); retry in a moment or allow more waiting requests$"):
        gate.run(lambda c: None)
    assert time.monotonic() - t < 0.5
    release.set()
    for w in [t0, *waiters]:
        w.join(5)
    assert gate.status()["rejected_busy"] == 1
    assert gate.run(lambda c: 42) == 42  # free again


def test_zero_queue_runs_when_free_and_refuses_when_busy():
    gate = EngineGate(capacity=1, max_queue=0)
    assert gate.run(lambda c: 1) == 1
    release, t0, _ = _blocker(gate)
    with pytest.raises(BusyError):
        gate.run(lambda c: None)
    release.set()
    t0.join(5)


def test_sync_cancel_while_waiting_frees_the_slot():
    gate = EngineGate(capacity=1, max_queue=1)
    release, t0, _ = _blocker(gate)
    flag = threading.Event()
    result = {}

    def waiter():
        try:
            gate.run(lambda c: "ran", cancel=flag.is_set)
        except Cancelled as e:
            result["err"] = e

    w = threading.Thread(target=waiter)
    w.start()
    _wait_until(lambda: gate.status()["waiting"] == 1)
    flag.set()
    w.join(5)
    assert isinstance(result.get("err"), Cancelled)
    assert gate.status()["waiting"] == 0
    release.set()
    t0.join(5)


def test_job_sees_cancel_flag_while_running():
    gate = EngineGate()
    flag = threading.Event()

    def job(cancelled):
        flag.set()
        assert cancelled()  # the caller's cancel callable is visible inside the job
        raise Cancelled("stopped between candidates")

    with pytest.raises(Cancelled):
        gate.run(job, cancel=flag.is_set)
    assert gate.status()["running"] == 0


@pytest.mark.anyio
async def test_async_does_not_block_the_loop_and_cancel_frees_slots():
    gate = EngineGate(capacity=1, max_queue=1)
    release = threading.Event()
    seen_cancel = threading.Event()

    def long_job(cancelled):
        while not release.is_set():
            if cancelled():
                seen_cancel.set()
                raise Cancelled("cancelled")
            time.sleep(0.01)
        return "done"

    async with anyio.create_task_group() as tg:
        first = anyio.CancelScope()
        second = anyio.CancelScope()

        async def run_in(scope, job):
            with scope:
                await gate.run_async(job)

        tg.start_soon(run_in, first, long_job)
        with anyio.fail_after(5):
            while gate.status()["running"] != 1:
                await anyio.sleep(0.005)  # the loop keeps running while the job holds the gate
        tg.start_soon(run_in, second, lambda c: "never")
        with anyio.fail_after(5):
            while gate.status()["waiting"] != 1:
                await anyio.sleep(0.005)
        with pytest.raises(BusyError):
            await gate.run_async(lambda c: None)
        second.cancel()  # a waiting request cancelled: its queue slot is free at once
        with anyio.fail_after(5):
            while gate.status()["waiting"] != 0:
                await anyio.sleep(0.005)
        first.cancel()  # the running one: its job sees cancelled() and stops
        with anyio.fail_after(5):
            while gate.status()["running"] != 0:
                await anyio.sleep(0.005)
    assert seen_cancel.is_set()
    assert await gate.run_async(lambda c: "free") == "free"


@pytest.fixture
def anyio_backend():
    return "asyncio"


def test_result_store_is_lru_and_count_bounded():
    store: ResultStore[int] = ResultStore(max_items=3)
    ids = [store.put(i) for i in range(3)]
    assert len(set(ids)) == 3 and all(i.startswith("r") and len(i) == 13 for i in ids)
    assert store.get(ids[0]) == 0  # ids[0] is now the most recent
    new = store.put(3)
    assert len(store) == 3 and store.ids() == [ids[2], ids[0], new]
    with pytest.raises(InputError, match="expired"):
        store.get(ids[1])
    for bad in ("r123", "../../etc", "", None, "R0123456789ab"):
        with pytest.raises(InputError, match="not a result id"):
            store.get(bad)
