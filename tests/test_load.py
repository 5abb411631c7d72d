"""Load on the MCP server over streamable HTTP on 127.0.0.1 (tiny random-weight models; bounded in count and time):
K concurrent clients x M requests all answered correctly, none lost; a burst beyond the queue bound gets clear "busy"
errors instead of hanging; resident memory after the run stays near what it was after the first requests."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import anyio
import numpy as np
import pytest
from PIL import Image

from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from test_mcp import SCRIPT, TOKEN, free_port, scene, server_env, wait_until_serving

pytestmark = pytest.mark.slow

CLIENTS, REQUESTS, MAX_QUEUE = 8, 25, 8
CALL_TIMEOUT = 120
RUN_TIMEOUT = 600


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("load")
    imgs = root / "images"
    imgs.mkdir()
    paths = []
    for i, (w, h) in enumerate([(96, 72), (80, 80), (120, 64), (64, 96), (100, 75), (72, 90)]):
        p = imgs / f"img{i}.png"
        Image.fromarray(scene(w, h, seed=i)).save(p)
        paths.append((p, (w, h)))
    port = free_port()
    err = open(root / "stderr.txt", "w+")
    proc = subprocess.Popen([str(SCRIPT), "--preset", "tiny-random", "--allowed-dir", str(imgs), "--transport", "http",
                             "--port", str(port), "--token", TOKEN, "--max-queue", str(MAX_QUEUE),
                             "--max-results", "16"],
                            env={**server_env(), "PATH": os.environ["PATH"]}, stdout=subprocess.DEVNULL, stderr=err)
    url = f"http://127.0.0.1:{port}/mcp"
    wait_until_serving(proc, url, root / "stderr.txt")
    yield {"url": url, "proc": proc, "images": paths}
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    err.close()


async def _run_clients(url, images, n_clients, n_requests, record):
    async def worker(c):
        async with create_mcp_http_client(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
            async with Client(streamable_http_client(url, http_client=http)) as client:
                for r in range(n_requests):
                    path, size = images[(c + r) % len(images)]
                    with anyio.fail_after(CALL_TIMEOUT):
                        res = await client.call_tool("segment", {"image_path": str(path), "question": f"q{c}-{r}",
                                                                 "top_k": 2})
                    record.append((c, r, size, res))
    with anyio.fail_after(RUN_TIMEOUT):
        async with anyio.create_task_group() as tg:
            for c in range(n_clients):
                tg.start_soon(worker, c)


def _check_answer(size, res) -> dict:
    assert not res.is_error, res.content[0].text
    sc = res.structured_content
    assert sc["image_size"] == list(size)
    assert len(sc["box_xyxy"]) == 4 and sc["result_id"]
    return sc


def test_concurrent_clients_all_answered(server):
    images = server["images"]
    warm: list = []
    anyio.run(_run_clients, server["url"], images, 1, 10, warm)  # the first 10 requests
    for _, _, size, res in warm:
        _check_answer(size, res)
    rss_first = rss_kib(server["proc"].pid)

    record: list = []
    t0 = time.monotonic()
    anyio.run(_run_clients, server["url"], images, CLIENTS, REQUESTS, record)
    elapsed = time.monotonic() - t0
    assert len(record) == CLIENTS * REQUESTS, "every request is answered"
    seen = {(c, r) for c, r, _, _ in record}
    assert len(seen) == CLIENTS * REQUESTS, "no request lost or answered twice"
    ids = set()
    for c, r, size, res in record:
        sc = _check_answer(size, res)
        assert sc["question"] == f"q{c}-{r}", "each answer belongs to its request"
        ids.add(sc["result_id"])
    assert len(ids) == CLIENTS * REQUESTS

    rss_after = rss_kib(server["proc"].pid)
    growth = rss_after - rss_first
    print(f"\n{CLIENTS}x{REQUESTS} requests in {elapsed:.1f} s; RSS after 10: {rss_first / 1024:.0f} MiB, "
          f"after all: {rss_after / 1024:.0f} MiB")
    assert growth < max(0.15 * rss_first, 64 * 1024), f"RSS grew by {growth / 1024:.0f} MiB"


def test_burst_beyond_queue_bound_gets_busy(server):
    """2 x MAX_QUEUE simultaneous requests: at most 1 running + MAX_QUEUE waiting are served; the rest are told the
    server is busy at once. Nothing hangs."""
    images = server["images"]
    results: list = []

    async def burst():
        async with create_mcp_http_client(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
            async with Client(streamable_http_client(server["url"], http_client=http)) as client:
                async def one(i):
                    path, size = images[i % len(images)]
                    with anyio.fail_after(CALL_TIMEOUT):
                        results.append((size, await client.call_tool(
                            "segment", {"image_path": str(path), "question": f"burst {i}"})))
                async with anyio.create_task_group() as tg:
                    for i in range(2 * MAX_QUEUE + 4):
                        tg.start_soon(one, i)

    anyio.run(burst)
    assert len(results) == 2 * MAX_QUEUE + 4
    busy = [r for _, r in results if r.is_error]
    served = [(s, r) for s, r in results if not r.is_error]
    assert busy, "requests beyond the queue bound must be refused"
    assert len(served) >= MAX_QUEUE // 2
    for r in busy:
        text = r.content[0].text
        assert "busy" in text and "--max-queue" in text and len(text.splitlines()) == 1
    for size, r in served:
        _check_answer(size, r)
