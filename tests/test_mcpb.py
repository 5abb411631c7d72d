"""The one-click Claude Desktop bundle: ``scripts/build_mcpb.py`` stages ``mcpb/``, and ``mcpb validate`` /
``mcpb pack`` (npm's @anthropic-ai/mcpb 2.1.2, from ``.cache/node``) must accept it; the packed file carries only the
bundle; and the settings a host substitutes into the manifest (``getMcpConfigForManifest``, the library's own code)
reach a running server through the bundle's entry point, an unset optional setting included.

The host would run ``uv run`` in the unpacked bundle, installing torch and the rest (several GB): here the entry
point runs on this environment's Python with the bundle's own wheel on its path instead. Without the Node tools the
tests are skipped with the reason in the summary, except under CI (``CI`` set), where that is a failure.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import anyio
import numpy as np
import pytest
from PIL import Image

from mcp import ClientSession, StdioServerParameters, stdio_client

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]
NODE_BIN = REPO_ROOT / ".cache" / "node" / "node_modules" / ".bin"
MCPB_MODULE = REPO_ROOT / ".cache" / "node" / "node_modules" / "@anthropic-ai" / "mcpb" / "dist" / "index.js"
SUBSTITUTE = """
const [,, mod, manifestPath, extensionPath, userConfig] = process.argv;
const { getMcpConfigForManifest } = await import(mod);
const { readFileSync } = await import("fs");
const config = await getMcpConfigForManifest({manifest: JSON.parse(readFileSync(manifestPath)), extensionPath,
    systemDirs: {HOME: process.env.HOME}, userConfig: JSON.parse(userConfig), pathSeparator: "/"});
console.log(JSON.stringify(config));
"""


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    if not (NODE_BIN / "mcpb").exists():
        reason = f"{NODE_BIN / 'mcpb'} is missing (bash scripts/test.sh installs the Node tools from scripts/node/)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    from build_mcpb import build

    return build(tmp_path_factory.mktemp("dist"))  # validate + pack; raises with mcpb's output if either fails


def test_bundle_validates_packs_and_carries_only_the_bundle(bundle):
    with zipfile.ZipFile(bundle) as zf:
        names = sorted(zf.namelist())
        manifest = json.loads(zf.read("manifest.json"))
    version = manifest["version"]
    assert names == ["icon.png", "manifest.json", "pyproject.toml", "src/server.py",
                     f"wheels/rea2seg-{version}-py3-none-any.whl"]
    assert manifest["manifest_version"] == "0.4" and manifest["server"]["type"] == "uv"
    assert {t["name"] for t in manifest["tools"]} == {"segment", "discover_candidates", "score_candidates",
                                                      "get_mask", "server_status"}
    settings = manifest["user_config"]
    assert settings["allowed_dir"]["type"] == "directory" and settings["allowed_dir"]["required"] is True
    assert settings["output_dir"]["type"] == "directory" and not settings["output_dir"]["required"]
    assert settings["preset"]["type"] == "string" and settings["preset"]["default"] == "default"
    from rea2seg.presets import PRESETS
    assert all(name in settings["preset"]["description"] for name in PRESETS)  # no enum in MCPB: listed in words
    with zipfile.ZipFile(bundle) as zf, zipfile.ZipFile(zf.open(names[-1])) as wheel:
        packages = {n.split("/")[0] for n in wheel.namelist() if not n.endswith(".dist-info/")}
    assert {"rea2seg", "mcp_server"} <= packages and "tests" not in packages


def host_config(bundle_dir: Path, user_config: dict) -> dict:
    """What an MCPB host runs for these settings: the manifest's mcp_config after the library's substitution."""
    script = bundle_dir.parent / "substitute.mjs"
    script.write_text(SUBSTITUTE)
    proc = subprocess.run([str(NODE_BIN / "node"), str(script), MCPB_MODULE.as_uri(), str(bundle_dir / "manifest.json"),
                           str(bundle_dir), json.dumps(user_config)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def test_host_settings_reach_the_server(bundle, tmp_path):
    unpacked = tmp_path / "rea2seg"
    with zipfile.ZipFile(bundle) as zf:
        zf.extractall(unpacked)
    pictures = tmp_path / "Pictures"
    pictures.mkdir()
    img = np.full((48, 64, 3), 100, np.uint8)
    img[10:30, 10:30] = (230, 50, 50)
    Image.fromarray(img).save(pictures / "red.png")
    config = host_config(unpacked, {"allowed_dir": str(pictures), "preset": "tiny-random", "download_models": False})
    assert config["command"] == "uv" and config["args"][-1] == "src/server.py"
    env = config["env"]
    assert env["REA2SEG_OUTPUT_DIR"] == "${user_config.output_dir}"  # left empty: the host keeps the placeholder
    wheel = next((unpacked / "wheels").glob("*.whl"))
    env.update({k: v for k, v in os.environ.items() if k.startswith(("HF_", "REA2SEG_TINY"))},
               PYTHONPATH=str(wheel), HOME=str(tmp_path))  # the bundle's wheel, not this checkout

    async def scenario():
        params = StdioServerParameters(command=sys.executable, args=["src/server.py"], env=env, cwd=str(unpacked))
        with anyio.fail_after(180):
            async with stdio_client(params, errlog=open(tmp_path / "stderr.txt", "w")) as (r, w), \
                    ClientSession(r, w) as session:
                await session.initialize()
                seg = await session.call_tool("segment", {"image_path": str(pictures / "red.png"), "question": "red"})
                status = await session.call_tool("server_status", {})
        return seg, status

    seg, status = anyio.run(scenario)
    assert not seg.is_error, seg.content[0].text
    st = status.structured_content
    assert st["allowed_dirs"] == [str(pictures.resolve())] and st["output_dir"] is None
    assert st["models"]["name"] == "tiny-random"
