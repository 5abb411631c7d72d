"""The MCP server as a client meets it: the ``rea2seg-mcp`` console script in a subprocess, driven by the official SDK
client over stdio and over streamable HTTP on 127.0.0.1, with tiny random-weight models (plumbing only: the masks
mean nothing, the tests check shapes, schemas, sizes, errors and the protocol).

One server per transport for the whole module (model loading dominates); a third, noisy one checks that stdout
carries only protocol.
"""
from __future__ import annotations

import base64
import io
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx
import jsonschema
import numpy as np
import pytest
from anyio.from_thread import start_blocking_portal
from PIL import Image

from mcp import Client, ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from rea2seg import images

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
SCRIPT = BIN / ("rea2seg-mcp.exe" if os.name == "nt" else "rea2seg-mcp")
TOKEN = "test-token-7f3a"
TOOLS = {"segment", "discover_candidates", "score_candidates", "get_mask", "server_status"}
MAX_B64 = 300_000
CALL_TIMEOUT = 120


def server_env() -> dict[str, str]:
    """What the server needs besides the SDK's minimal inherited environment (as Claude Desktop gives it)."""
    env = {k: v for k, v in os.environ.items()
           if k.startswith(("REA2SEG_", "HF_", "TRANSFORMERS_", "XDG_")) or k == "PYTHONPATH"}  # a checkout's tree
    env.pop("REA2SEG_ALLOWED_DIRS", None)
    env.update(HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", HOME=os.environ.get("HOME", "/tmp"))
    return env


def scene(w: int, h: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 120, np.uint8)
    yy, xx = np.mgrid[:h, :w]
    img[(xx - w * 0.3) ** 2 + (yy - h * 0.5) ** 2 < (min(w, h) * 0.2) ** 2] = (220, 40, 40)
    img[int(h * 0.2):int(h * 0.6), int(w * 0.6):int(w * 0.9)] = (40, 60, 220)
    return np.clip(img.astype(int) + rng.integers(-10, 10, img.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("mcp")
    allowed, outside, out = root / "images", root / "outside", root / "out"
    for d in (allowed, outside, out):
        d.mkdir()
    f = {"allowed": allowed, "outside": outside, "out": out}
    f["image"] = allowed / "scene.png"
    Image.fromarray(scene(96, 72)).save(f["image"])
    f["big"] = allowed / "big.png"  # noise compresses badly: the preview must still come back small
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (1200, 1600, 3), dtype=np.uint8)).save(f["big"])
    f["not_image"] = allowed / "notes.png"
    f["not_image"].write_text("not an image, just text with a .png name\n")
    f["secret"] = outside / "secret.png"
    Image.fromarray(scene(40, 30, 2)).save(f["secret"])
    f["escape"] = allowed / "escape.png"
    f["escape"].symlink_to(f["secret"])
    return f


def server_args(files, *extra: str) -> list[str]:
    assert SCRIPT.exists(), f"{SCRIPT} missing: install the package (pip install -e '.[all,test]')"
    return ["--preset", "tiny-random", "--allowed-dir", str(files["allowed"]), "--output-dir", str(files["out"]),
            "--max-base64-bytes", str(MAX_B64), *extra]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@asynccontextmanager
async def stdio_session(files, errlog):
    params = StdioServerParameters(command=str(SCRIPT), args=server_args(files), env=server_env())
    async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
        await session.initialize()  # the 2025-11-25 handshake, as desktop clients do it
        yield session


class Conn:
    """A live client session plus the portal (event-loop thread) that runs its calls for synchronous tests."""

    def __init__(self, name, portal, session):
        self.name, self.portal, self.session = name, portal, session
        self._schemas = None

    def call(self, tool: str, args: dict, progress: list | None = None):
        async def go():
            async def on_progress(p, total, message):
                progress.append((p, message))
            with anyio.fail_after(CALL_TIMEOUT):
                return await self.session.call_tool(tool, args, progress_callback=on_progress if progress is not None
                                                    else None)
        return self.portal.call(go)

    def run(self, fn, *args):
        return self.portal.call(fn, *args)

    def output_schema(self, tool: str) -> dict:
        if self._schemas is None:
            tools = self.portal.call(self.session.list_tools).tools
            self._schemas = {t.name: t.output_schema for t in tools}
        return self._schemas[tool]


@pytest.fixture(scope="module")
def stdio_conn(files, tmp_path_factory):
    errlog = open(tmp_path_factory.mktemp("logs") / "stdio-stderr.txt", "w+")
    with start_blocking_portal() as portal:
        with portal.wrap_async_context_manager(stdio_session(files, errlog)) as session:
            yield Conn("stdio", portal, session)
    errlog.close()


def wait_until_serving(proc: subprocess.Popen, url: str, stderr: Path, timeout: float = 60) -> None:
    """Until the HTTP server at ``url`` answers (403: it refuses a request without the token), or fail with the end
    of its stderr."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"HTTP server exited: {stderr.read_text()[-2000:]}"
        try:
            if httpx.post(url, json={}, timeout=1).status_code == 403:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"HTTP server did not come up in {timeout:.0f} s"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def http_server(files, tmp_path_factory):
    logs = tmp_path_factory.mktemp("logs")
    port = free_port()
    out, err = open(logs / "http-stdout.txt", "w+"), open(logs / "http-stderr.txt", "w+")
    proc = subprocess.Popen([str(SCRIPT), *server_args(files, "--transport", "http", "--port", str(port), "--token",
                                                       TOKEN, "--max-queue", "1")],
                            env={**server_env(), "PATH": os.environ["PATH"]}, stdout=out, stderr=err)
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        wait_until_serving(proc, url, logs / "http-stderr.txt")
        yield {"url": url, "proc": proc, "stdout": logs / "http-stdout.txt", "stderr": logs / "http-stderr.txt"}
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        out.close()
        err.close()


@asynccontextmanager
async def http_session(url):
    async with create_mcp_http_client(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        async with Client(streamable_http_client(url, http_client=http)) as client:  # negotiates the newest protocol
            yield client


@pytest.fixture(scope="module")
def http_conn(http_server):
    with start_blocking_portal() as portal:
        with portal.wrap_async_context_manager(http_session(http_server["url"])) as client:
            yield Conn("http", portal, client)


@pytest.fixture(params=["stdio", "http"], scope="module")
def conn(request):
    return request.getfixturevalue(f"{request.param}_conn")


# ---- helpers ---------------------------------------------------------------------------------------------------------

def ok(result) -> dict:
    assert not result.is_error, result.content[0].text
    return result.structured_content


def error_text(result) -> str:
    assert result.is_error, f"expected an error result, got {result.content[0].text[:300]}"
    text = result.content[0].text
    assert "Traceback" not in text and len(text.splitlines()) == 1
    return text


def decode_image(block, mime_type: str = "image/jpeg") -> Image.Image:
    assert block.type == "image" and block.mime_type == mime_type
    data = base64.b64decode(block.data)
    assert len(data) < 512 * 1024, f"preview is {len(data)} bytes"
    img = Image.open(io.BytesIO(data))
    img.load()
    assert max(img.size) <= 1024
    return img


# ---- both transports -------------------------------------------------------------------------------------------------

def test_lists_tools_with_schemas(conn):
    tools = {t.name: t for t in conn.run(conn.session.list_tools).tools}
    assert set(tools) == TOOLS
    seg = tools["segment"]
    assert {"image_path", "question", "image_base64", "top_k", "mode"} <= set(seg.input_schema["properties"])
    assert seg.input_schema["required"] == ["question"]
    assert {"box_xyxy", "score", "reasoning", "image_size", "result_id"} <= set(seg.output_schema["required"])
    assert seg.annotations.read_only_hint is True
    assert tools["get_mask"].annotations.read_only_hint is False  # it may save a file
    for t in tools.values():
        assert t.output_schema["type"] == "object" and t.description


def test_segment_then_get_mask(conn, files):
    progress = []
    r = conn.call("segment", {"image_path": str(files["image"]), "question": "which object is red?"}, progress)
    data = ok(r)
    jsonschema.validate(data, conn.output_schema("segment"))
    assert [c.type for c in r.content] == ["text", "image"]
    assert json.loads(r.content[0].text) == data
    preview = decode_image(r.content[1])
    assert preview.size == (96, 72) and data["preview"]["width"] == 96
    assert data["image_size"] == [96, 72] and data["kind"] == "segment"
    x1, y1, x2, y2 = data["box_xyxy"]
    assert 0 <= x1 <= x2 <= 96 and 0 <= y1 <= y2 <= 72
    assert data["score"] is None or 0.0 <= data["score"] <= 1.0
    assert isinstance(data["reasoning"], str)
    assert "meaningless" in data["warning"]  # random weights say so
    assert progress and all(isinstance(m, str) and m for _, m in progress)
    assert [p for p, _ in progress] == sorted(p for p, _ in progress)
    rid = data["result_id"]

    rle = ok(conn.call("get_mask", {"result_id": rid, "format": "rle"}))
    jsonschema.validate(rle, conn.output_schema("get_mask"))
    mask = images.rle_decode(rle["rle"])
    assert mask.shape == (72, 96) and int(mask.sum()) == data["mask_area"] == rle["mask_area"]
    if mask.any():
        assert rle["box_xyxy"] == data["box_xyxy"]

    r = conn.call("get_mask", {"result_id": rid})
    assert [c.type for c in r.content] == ["text", "image"]
    assert np.array_equal(np.asarray(decode_image(r.content[1], "image/png")) != 0, mask)

    res = conn.run(conn.session.read_resource, data["mask_uri"])
    blob = res.contents[0]
    assert blob.mime_type == "image/png"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(base64.b64decode(blob.blob)))) != 0, mask)

    name = f"saved-{conn.name}"
    saved = ok(conn.call("get_mask", {"result_id": rid, "save": True, "filename": name}))
    path = Path(saved["saved_path"])
    assert path.parent == files["out"].resolve() and path.name == f"{name}.png"
    assert np.array_equal(images.read_mask(path), mask)
    before = path.read_bytes()
    again = error_text(conn.call("get_mask", {"result_id": rid, "save": True, "filename": name}))
    assert "exists" in again and path.read_bytes() == before  # never overwritten


def test_discover_then_score(conn, files):
    r = conn.call("discover_candidates", {"image_path": str(files["image"]), "question": "the blue box"})
    d = ok(r)
    jsonschema.validate(d, conn.output_schema("discover_candidates"))
    assert d["kind"] == "discover" and d["n_candidates"] == len(d["candidates"]) >= 1
    assert [c.type for c in r.content] == ["text", "image"]
    decode_image(r.content[1])
    assert all(c["score"] is None for c in d["candidates"])  # not scored yet

    assert [c["number"] for c in d["candidates"]] == list(range(1, d["n_candidates"] + 1))  # as drawn on the sheet

    pick = list(range(1, min(2, d["n_candidates"]) + 1))[::-1]
    s = ok(conn.call("score_candidates", {"result_id": d["result_id"], "candidates": pick, "top_k": 1}))
    jsonschema.validate(s, conn.output_schema("score_candidates"))
    assert s["kind"] == "score" and s["result_id"] != d["result_id"] and s["n_candidates"] == len(pick)
    assert s["question"] == "the blue box"
    m = ok(conn.call("get_mask", {"result_id": d["result_id"], "candidate": 1, "format": "rle"}))
    assert m["mask_area"] == d["candidates"][0]["area"]
    res = conn.run(conn.session.read_resource, m["mask_uri"])
    assert m["mask_uri"].endswith("/candidates/1/mask.png")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(base64.b64decode(res.contents[0].blob)))) != 0,
                          images.rle_decode(m["rle"]))
    n = d["n_candidates"]
    for bad in (0, n + 1):
        assert f"candidate {bad} does not exist; the candidates are: 1" in error_text(
            conn.call("get_mask", {"result_id": d["result_id"], "candidate": bad}))
    assert "unscored" in error_text(conn.call("get_mask", {"result_id": d["result_id"]}))


@pytest.mark.parametrize("case, match", [
    ("outside", "outside the allowed directories"),
    ("escape", "symlink"),
    ("not_image", "not a readable image"),
    ("missing", "not found"),
    ("relative", "absolute path"),
])
def test_bad_paths_are_error_results(conn, files, case, match):
    path = {"outside": str(files["secret"]), "escape": str(files["escape"]), "not_image": str(files["not_image"]),
            "missing": str(files["allowed"] / "nope.png"), "relative": "scene.png"}[case]
    assert match in error_text(conn.call("segment", {"image_path": path, "question": "anything"}))


def test_unknown_result_ids_and_bad_arguments(conn):
    for tool in ("get_mask", "score_candidates"):
        assert "unknown result_id" in error_text(conn.call(tool, {"result_id": "r0123456789ab"}))
    assert "not a result id" in error_text(conn.call("get_mask", {"result_id": "../../etc/passwd"}))
    missing = conn.call("segment", {"image_path": "/x.png"})  # the SDK's schema check (its message is pydantic's)
    assert missing.is_error and "question" in missing.content[0].text and "Field required" in missing.content[0].text
    assert "exactly one" in error_text(conn.call("segment", {"image_path": "/x.png", "image_base64": "aGk=",
                                                             "question": "q"}))


def test_base64_input_and_cap(conn, files):
    b64 = base64.b64encode(files["image"].read_bytes()).decode()
    data = ok(conn.call("segment", {"image_base64": b64, "question": "the red disk", "preview": "mask"}))
    assert data["image_size"] == [96, 72] and data["preview"]["kind"] == "mask"
    big = base64.b64encode(b"\x89PNG" + bytes(MAX_B64 + 10)).decode()
    assert "cap" in error_text(conn.call("segment", {"image_base64": big, "question": "q"}))
    assert "not valid base64" in error_text(conn.call("segment", {"image_base64": "%%%", "question": "q"}))


def test_server_status(conn, files):
    st = ok(conn.call("server_status", {}))
    jsonschema.validate(st, conn.output_schema("server_status"))
    assert st["transport"] == conn.name
    assert st["allowed_dirs"] == [str(files["allowed"].resolve())]
    assert st["output_dir"] == str(files["out"].resolve())
    models = st["models"]  # typed: state, names, device (earlier tests in this module loaded the models)
    assert models["state"] == "ready" and models["error"] is None and models["name"] == "tiny-random"
    assert st["engine"]["running"] == 0 and st["engine"]["waiting"] == 0


# ---- HTTP only -------------------------------------------------------------------------------------------------------

def test_http_large_image_preview_stays_small(http_conn, files):
    r = http_conn.call("segment", {"image_path": str(files["big"]), "question": "anything"})
    data = ok(r)
    img = decode_image(r.content[1])
    assert data["image_size"] == [1600, 1200] and max(img.size) <= 1024
    assert sum(len(c.text if c.type == "text" else c.data) for c in r.content) < 1024 * 1024


def test_http_requires_the_token_without_inviting_oauth(http_server):
    """A missing or wrong token: 403 with the server's own one-line message and no WWW-Authenticate (a 401 makes
    TypeScript-SDK clients start OAuth, see mcp_server/http_auth.py); the OAuth metadata paths: 404, token or not."""
    url = http_server["url"]
    for headers, problem in (({}, "no token was sent"), ({"Authorization": "Bearer wrong"}, "the token is wrong"),
                             ({"Authorization": TOKEN}, "the token is wrong")):
        r = httpx.post(url, json={}, headers=headers)
        assert r.status_code == 403 and "www-authenticate" not in r.headers
        assert r.json()["error_description"].startswith(f"{problem}: send the server's token")
    base = url.rsplit("/mcp", 1)[0]
    for path in ("/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource",
                 "/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"):
        assert httpx.get(base + path).status_code == 404
    assert httpx.post(base + "/register", json={}).status_code == 403


def test_http_queue_bound_gives_busy(http_conn, files):
    """--max-queue 1: of four simultaneous requests, one runs, one waits, the others are told the server is busy."""
    async def burst():
        results = []

        async def one():
            with anyio.fail_after(CALL_TIMEOUT):
                results.append(await http_conn.session.call_tool(
                    "segment", {"image_path": str(files["image"]), "question": "q"}))
        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(one)
        return results

    results = http_conn.run(burst)
    busy = [r for r in results if r.is_error]
    assert len(results) == 4 and len(busy) >= 1 and len(busy) <= 2
    assert all("busy" in r.content[0].text and "--max-queue" in r.content[0].text for r in busy)
    st = ok(http_conn.call("server_status", {}))
    assert st["engine"]["rejected_busy"] == len(busy)


def test_http_stdout_stays_empty(http_server, http_conn):
    ok(http_conn.call("server_status", {}))
    assert http_server["stdout"].read_text() == ""  # logs (uvicorn's access log included) went to stderr
    assert "uvicorn" in http_server["stderr"].read_text() or "POST /mcp" in http_server["stderr"].read_text()


def test_refuses_public_bind_without_token(files):
    env = {k: v for k, v in os.environ.items() if k != "REA2SEG_MCP_TOKEN"}
    p = subprocess.run([str(SCRIPT), "--transport", "http", "--host", "0.0.0.0", "--preset", "tiny-random"],
                       capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 2 and "refusing" in p.stderr and "--token" in p.stderr and p.stdout == ""


# ---- stdio only ------------------------------------------------------------------------------------------------------

def test_stdio_cancel_frees_the_slot(stdio_conn, files):
    """A request the client cancels (notifications/cancelled) stops at the engine's next check and frees its slot."""
    async def cancel_one():
        with anyio.move_on_after(0.3):
            await stdio_conn.session.call_tool("segment", {"image_path": str(files["big"]), "question": "q"})
            return False
        return True

    before = ok(stdio_conn.call("server_status", {}))["engine"]["finished"]
    assert stdio_conn.run(cancel_one), "the call finished before it could be cancelled"
    deadline = time.monotonic() + 60
    while True:
        eng = ok(stdio_conn.call("server_status", {}))["engine"]
        if eng["running"] == 0 and eng["waiting"] == 0 and eng["finished"] > before:
            break
        assert time.monotonic() < deadline, f"slot not freed: {eng}"
        time.sleep(0.05)
    ok(stdio_conn.call("segment", {"image_path": str(files["image"]), "question": "q", "preview": "none"}))


def test_stdio_missing_model_is_an_error_result_with_the_fix(files, tmp_path):
    """Models that cannot load (here: paths that do not exist) do not kill the server: every call says why."""
    async def scenario():
        params = StdioServerParameters(
            command=str(SCRIPT), env={**server_env(), "HOME": str(tmp_path)},
            args=["--vlm", str(tmp_path / "no-vlm"), "--sam", str(tmp_path / "no-sam.pth"),
                  "--allowed-dir", str(files["allowed"])])
        with anyio.fail_after(CALL_TIMEOUT):
            async with stdio_client(params, errlog=open(tmp_path / "stderr.txt", "w")) as (r, w), \
                    ClientSession(r, w) as session:
                await session.initialize()
                seg = await session.call_tool("segment", {"image_path": str(files["image"]), "question": "q"})
                status = await session.call_tool("server_status", {})
        return seg, status

    seg, status = anyio.run(scenario)
    msg = error_text(seg)
    assert "no-vlm" in msg and "not found" in msg
    assert "not found" in ok(status)["models"]["error"]


def test_unknown_preset_fails_at_start():
    p = subprocess.run([str(SCRIPT), "--preset", "nope"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "unknown preset 'nope'" in p.stderr and "tiny-random" in p.stderr


def _jsonrpc_lines(stream, sink: "queue.Queue[bytes | None]"):
    for line in iter(stream.readline, b""):
        sink.put(line)
    sink.put(None)


def test_stdout_carries_only_protocol_when_engine_and_libraries_print(files, tmp_path):
    """Raw JSON-RPC over pipes to a server whose engine prints (Python print, unflushed partial writes, os.write on
    fd 1, C printf, a child process, an atexit print): every stdout line must be a JSON-RPC message and the noise
    must show up on stderr instead. The noise comes from tests/noisy_mcp_server.py, which wraps the real engine."""
    helper = Path(__file__).with_name("noisy_mcp_server.py")
    proc = subprocess.Popen([sys.executable, str(helper), *server_args(files)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=open(tmp_path / "stderr.txt", "wb"),
                            env={**server_env(), "PATH": os.environ["PATH"]})
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_jsonrpc_lines, args=(proc.stdout, lines), daemon=True).start()

    def send(msg):
        proc.stdin.write((json.dumps(msg) + "\n").encode())
        proc.stdin.flush()

    def until_response(msg_id, seen):
        while True:
            line = lines.get(timeout=CALL_TIMEOUT)
            assert line is not None, "server closed stdout early"
            msg = json.loads(line)  # a noise line would fail here
            assert msg["jsonrpc"] == "2.0"
            seen.append(msg)
            if msg.get("id") == msg_id:
                return msg

    seen: list = []
    try:
        send({"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                         "clientInfo": {"name": "raw-test", "version": "0"}}})
        assert "serverInfo" in until_response(1, seen)["result"]
        send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        send({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
              "params": {"name": "segment", "arguments": {"image_path": str(files["image"]), "question": "q"},
                         "_meta": {"progressToken": "p1"}}})
        reply = until_response(2, seen)
        assert reply["result"]["isError"] is False and reply["result"]["structuredContent"]["image_size"] == [96, 72]
        assert any(m.get("method") == "notifications/progress" for m in seen)
        proc.stdin.close()  # end of session: the server exits, flushing whatever is still buffered
        assert proc.wait(30) == 0
        while (line := lines.get(timeout=10)) is not None:
            assert json.loads(line)["jsonrpc"] == "2.0"
    finally:
        if proc.poll() is None:
            proc.kill()
    err = (tmp_path / "stderr.txt").read_text(errors="replace")
    for marker in ("LOAD-NOISE", "PY-NOISE", "PARTIAL-NOISE", "FD-NOISE", "C-NOISE", "CHILD-NOISE", "EXIT-NOISE"):
        assert marker in err, f"{marker} missing from stderr: the noise did not happen or went elsewhere"
