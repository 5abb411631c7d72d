"""Drive a real, headless ComfyUI server from tests: start/stop it, talk HTTP and websocket, convert UI workflows.

The server is an unmodified ComfyUI (0.3.75, and 0.33.0 where its tarball is present) fetched by
``scripts/setup_comfyui.py``, started as a subprocess on 127.0.0.1 with its own base directory (models, input, output,
custom_nodes) and its version's extra packages (the pinned web frontend among them) on ``PYTHONPATH``. Nothing here
imports ComfyUI in-process.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
TEST_IMAGE = "rea2seg_test_96x64.png"  # non-square, so a height/width swap cannot pass
TIMINGS: dict[str, float] = {}  # what the session measured, printed at the end

# Frontend-only node types: they never reach the backend.
VIRTUAL_NODES = {"Note", "MarkdownNote"}
# Widgets that serialise one extra value after their own (the frontend's upload button / seed control).
UPLOAD_OPTIONS = ("image_upload", "video_upload", "audio_upload", "animated_image_upload")
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    """A ComfyUI subprocess. ``start()`` returns once ``ready_node`` is listed by ``/object_info`` (which proves our
    pack imported: an import failure is only logged, ComfyUI keeps running)."""

    def __init__(self, comfy_dir: Path, base_dir: Path, packages: Path | None = None, port: int | None = None,
                 env: dict | None = None):
        self.comfy_dir = Path(comfy_dir).resolve()
        self.packages = packages
        self.base_dir = Path(base_dir).resolve()
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.base_dir / "comfyui.log"
        self.env = env or {}
        self.proc: subprocess.Popen | None = None
        self.start_seconds: float | None = None

    def start(self, ready_node: str, timeout: float = 180.0) -> "ComfyServer":
        # the web UI is the version's pinned comfyui-frontend-package from ``packages`` (none: an empty front end)
        front_end = []
        if self.packages is None:
            (self.base_dir / "empty-frontend").mkdir(parents=True, exist_ok=True)
            front_end = ["--front-end-root", str(self.base_dir / "empty-frontend")]
        # an in-memory database: 0.33's default file lives in the ComfyUI tree, ignoring --base-directory
        cmd = [sys.executable, str(self.comfy_dir / "main.py"), "--cpu", "--listen", "127.0.0.1",
               "--port", str(self.port), "--base-directory", str(self.base_dir), *front_end,
               "--disable-auto-launch", "--disable-api-nodes", "--dont-print-server",
               "--database-url", "sqlite:///:memory:"]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **self.env}
        if self.packages is not None:
            env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), str(self.packages)) if p)
        t0 = time.monotonic()
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=self.comfy_dir, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with code {self.proc.returncode} during start-up:\n"
                                   f"{self.log_tail()}")
            try:
                status, body = self.get(f"/object_info/{ready_node}", timeout=5)
                if status == 200 and ready_node in body:
                    break
                if status == 200:  # server up, but our node is missing: the pack failed to import
                    raise RuntimeError(f"ComfyUI started but does not list {ready_node}; the node pack did not "
                                       f"load:\n{self.log_tail()}")
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.monotonic() - t0 > timeout:
                self.stop()
                raise RuntimeError(f"ComfyUI did not answer within {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.25)
        self.start_seconds = time.monotonic() - t0
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # our own process group (start_new_session), nothing else
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=15)
        self._log.close()
        self.proc = None

    def log_text(self) -> str:
        try:
            return re.sub(r"\x1b\[[0-9;]*m", "", self.log_path.read_text(errors="replace"))  # 0.33 colours its log
        except OSError:
            return ""

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])

    # ---- HTTP ------------------------------------------------------------------------------------------------------

    def request(self, method: str, path: str, body=None, timeout: float = 30.0) -> tuple[int, dict | list | bytes]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                status, raw = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        try:
            return status, json.loads(raw or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError):  # not JSON: an image, a page
            return status, raw

    def get(self, path: str, timeout: float = 30.0):
        return self.request("GET", path, timeout=timeout)

    def post(self, path: str, body=None, timeout: float = 30.0):
        return self.request("POST", path, body if body is not None else {}, timeout=timeout)

    def queue(self, prompt: dict, client_id: str | None = None) -> tuple[int, dict]:
        """POST /prompt. Returns (HTTP status, body): 200 with ``prompt_id``, or 400 with ``error``/``node_errors``."""
        return self.post("/prompt", {"prompt": prompt, "client_id": client_id or uuid.uuid4().hex})

    def wait_history(self, prompt_id: str, timeout: float = 120.0) -> dict:
        """The ``/history`` entry of a prompt once it finished (success, error or interrupted)."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            status, body = self.get(f"/history/{prompt_id}")
            if status == 200 and prompt_id in body and body[prompt_id].get("status", {}).get("completed") is not None:
                entry = body[prompt_id]
                if entry["status"].get("status_str") in ("success", "error"):
                    return entry
            time.sleep(0.1)
        raise TimeoutError(f"prompt {prompt_id} not finished after {timeout} s:\n{self.log_tail()}")

    def run(self, prompt: dict, timeout: float = 120.0) -> dict:
        status, body = self.queue(prompt)
        if status != 200:
            raise AssertionError(f"/prompt refused the prompt ({status}): {json.dumps(body)[:3000]}")
        return self.wait_history(body["prompt_id"], timeout)

    def view(self, image: dict) -> bytes:
        """The bytes of an output file listed in a history entry (``{"filename", "subfolder", "type"}``)."""
        q = urllib.parse.urlencode({k: image.get(k, "") for k in ("filename", "subfolder", "type")})
        with urllib.request.urlopen(f"{self.url}/view?{q}", timeout=30) as r:
            return r.read()


def messages(entry: dict) -> dict[str, dict]:
    """The status messages of a history entry by event name (``execution_error``, ``execution_interrupted``...)."""
    return {name: data for name, data in entry["status"].get("messages", [])}


# ---- UI (litegraph) workflow -> API prompt ---------------------------------------------------------------------------

def _input_specs(info: dict, with_group: bool = False) -> list[tuple]:
    spec = info["input"]
    order = info.get("input_order") or {k: list(spec.get(k, {})) for k in ("required", "optional")}
    return [(name, spec[group][name], group) if with_group else (name, spec[group][name])
            for group in ("required", "optional") for name in order.get(group, [])]


def _is_widget(spec: list) -> bool:
    kind = spec[0]
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    return (isinstance(kind, list) or kind in WIDGET_TYPES) and not opts.get("forceInput")


def _extra_values(spec: list) -> int:
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    return int(any(opts.get(k) for k in UPLOAD_OPTIONS) or bool(opts.get("control_after_generate")))


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    """Convert a workflow saved by the ComfyUI editor (UI format, ``version`` 0.4) into the API prompt that ``/prompt``
    takes, the way the frontend does: widget values are matched to the node's widget inputs in ``/object_info``
    order, links become ``[source_id, slot]``. Refuses what it cannot convert faithfully (bypassed nodes, subgraphs,
    unknown types, a widget-count mismatch)."""
    if workflow.get("definitions", {}).get("subgraphs"):
        raise ValueError("subgraphs are not supported by this converter")
    links = {link[0]: link for link in workflow.get("links", [])}
    prompt: dict[str, dict] = {}
    for node in workflow["nodes"]:
        ntype, nid = node["type"], str(node["id"])
        if ntype in VIRTUAL_NODES or node.get("mode", 0) == 2:  # notes, muted nodes
            continue
        if node.get("mode", 0) != 0:
            raise ValueError(f"node {nid} ({ntype}) has mode {node['mode']}; only normal and muted nodes convert")
        if ntype not in object_info:
            raise ValueError(f"node {nid}: type {ntype!r} is not known to this ComfyUI (missing node pack?)")
        inputs: dict = {}
        values = node.get("widgets_values", [])
        linked = {}
        for slot in node.get("inputs", []):
            if slot.get("link") is not None:
                link = links[slot["link"]]
                linked[slot["name"]] = [str(link[1]), link[2]]
        widgets = [(n, s, g) for n, s, g in _input_specs(object_info[ntype], with_group=True) if _is_widget(s)]
        if isinstance(values, dict):
            inputs.update({n: values[n] for n, _, _ in widgets if n in values})
        else:
            i = 0
            for k, (name, spec, group) in enumerate(widgets):
                if i >= len(values):
                    # a workflow saved before the node gained optional inputs: the editor leaves them at their
                    # defaults (they are not sent); a missing required widget is an error
                    if all(g == "optional" for _, _, g in widgets[k:]):
                        break
                    raise ValueError(f"node {nid} ({ntype}): {len(values)} widget values for widgets "
                                     f"{[n for n, _, _ in widgets]}")
                inputs[name] = values[i]
                i += 1 + _extra_values(spec)
            if i != len(values):
                raise ValueError(f"node {nid} ({ntype}): {len(values)} widget values, expected {i} for widgets "
                                 f"{[n for n, _, _ in widgets]}")
        inputs.update(linked)
        prompt[nid] = {"class_type": ntype, "inputs": inputs,
                       "_meta": {"title": node.get("title") or object_info[ntype].get("display_name", ntype)}}
    return prompt


def progress_text_event(data: bytes) -> dict | None:
    """A binary websocket message of type 3 (``send_progress_text``: 4-byte type, 4-byte node id length, node id, UTF-8
    text) as ``{"type": "progress_text", "data": {"node", "text"}}``; None for other binary messages (previews)."""
    if len(data) < 8 or int.from_bytes(data[:4], "big") != 3:
        return None
    n = int.from_bytes(data[4:8], "big")
    return {"type": "progress_text", "data": {"node": data[8:8 + n].decode(), "text": data[8 + n:].decode()}}


# ---- websocket: run a prompt and collect its events ------------------------------------------------------------------

def run_with_events(server: ComfyServer, prompt: dict, timeout: float = 120.0, interrupt_on=None) -> tuple[dict, list]:
    """Queue ``prompt`` while listening on ``/ws``; returns (history entry, JSON events of this prompt, and the nodes'
    progress texts as ``progress_text`` events).

    ``interrupt_on(event) -> bool``: POST ``/interrupt`` the first time it returns True (e.g. on the first progress
    event of a given node), which is how the editor's Cancel button stops a run.
    """
    import asyncio

    import aiohttp

    async def go():
        client_id = uuid.uuid4().hex
        events: list[dict] = []
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"ws://127.0.0.1:{server.port}/ws?clientId={client_id}") as ws:
                async with session.post(f"{server.url}/prompt",
                                        json={"prompt": prompt, "client_id": client_id}) as r:
                    body = await r.json()
                    if r.status != 200:
                        raise AssertionError(f"/prompt refused the prompt ({r.status}): {json.dumps(body)[:3000]}")
                prompt_id = body["prompt_id"]
                interrupted = False
                async for msg in ws:
                    if msg.type == aiohttp.WSMsgType.BINARY:
                        text = progress_text_event(msg.data)
                        if text is not None:
                            events.append(text)
                        continue
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        continue
                    event = json.loads(msg.data)
                    data = event.get("data") or {}
                    if data.get("prompt_id") not in (None, prompt_id):
                        continue
                    events.append(event)
                    if interrupt_on is not None and not interrupted and interrupt_on(event):
                        interrupted = True
                        async with session.post(f"{server.url}/interrupt", json={}) as r:
                            assert r.status == 200
                    if event["type"] in ("execution_success", "execution_error", "execution_interrupted"):
                        break
        return prompt_id, events

    prompt_id, events = asyncio.run(asyncio.wait_for(go(), timeout))
    return server.wait_history(prompt_id, timeout), events
