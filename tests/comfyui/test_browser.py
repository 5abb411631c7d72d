"""The templates in ComfyUI's real web frontend, as a user meets them: headless Chromium (Debian's ``chromium``,
driven by Playwright) opens the page the server serves (its pinned ``comfyui-frontend-package``), opens the left
sidebar's Templates -> Extensions -> Rea2Seg, clicks each template's card, checks that every node is known, picks
``tiny-random`` in Load Models' preset list (and a small image in Load Image's), presses Run and checks the mask and
overlay previews.

One browser page per ComfyUI version runs the three templates in turn. Screenshots of each step are kept in
``test-artifacts/browser/<version>/`` (git-ignored). Where no browser can be had the tests are skipped with the reason
in the summary, except under CI (``CI`` set), where that is a failure: ``scripts/test.sh`` installs both.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import time
import urllib.parse
import urllib.request

import numpy as np
import pytest
from PIL import Image

from comfy_fixtures import SETUP
from comfyui_harness import REPO_ROOT, TEST_IMAGE, TIMINGS

pytestmark = pytest.mark.slow

ARTIFACTS = REPO_ROOT / "test-artifacts" / "browser"
WORKFLOWS = sorted((REPO_ROOT / "workflows").glob("*.json"))
PACK_LABEL = "Rea2Seg"  # locales/en/main.json: templateWorkflows.category.rea2seg
TIMEOUT_MS = 120_000


def chromium() -> str | None:
    """The system Chromium (Playwright's own browser download is not used: only Debian's package is reachable)."""
    for name in (os.environ.get("REA2SEG_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def no_browser(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run the browser tests (scripts/test.sh installs chromium and playwright)")
    pytest.skip(f"no browser test: {reason} (bash scripts/test.sh installs both)")


def pinned_frontend(version: str) -> str:
    return next(p.split("==")[1] for p in SETUP.VERSIONS[version].packages if p.startswith("comfyui-frontend-package"))


@pytest.fixture(scope="module")
def page(comfy):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        no_browser("the playwright package is not installed")
    exe = chromium()
    if exe is None:
        no_browser("no chromium on PATH (apt-get install chromium)")
    shots = ARTIFACTS / comfy.version
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir(parents=True)
    with sync_playwright() as p:
        t = time.monotonic()
        browser = p.chromium.launch(executable_path=exe, headless=True, args=["--no-sandbox"])
        pg = browser.new_page(viewport={"width": 1600, "height": 1000})
        pg.set_default_timeout(TIMEOUT_MS)
        errors: list[str] = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.goto(comfy.url)
        pg.wait_for_function("() => window.app && window.app.graph && window.app.canvas && window.LiteGraph")
        TIMINGS[f"{comfy.version}: browser start to a ready editor"] = time.monotonic() - t
        pg.shots, pg.errors = shots, errors
        yield pg
        browser.close()


def test_serves_the_pinned_frontend(comfy, page):
    assert page.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__") == pinned_frontend(comfy.version)


def open_template(page, stem: str) -> None:
    """Sidebar Templates -> Extensions -> Rea2Seg -> the card, as a user clicks them."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    pack = page.get_by_text(PACK_LABEL, exact=True).first  # the pack's entry under EXTENSIONS in the dialog
    try:
        pack.wait_for(timeout=3000)  # on a first visit the dialog opens by itself
    except PlaywrightTimeout:
        page.get_by_role("button", name="Templates").first.click()
        pack.wait_for()
    pack.click()
    card = page.locator(f'[data-testid="template-workflow-{stem}"]')
    card.wait_for()
    assert stem in card.inner_text()  # the file name is the card's title
    page.wait_for_function("(el) => [...el.querySelectorAll('img')].some(i => i.complete && i.naturalWidth > 0)",
                           arg=card.element_handle())  # the .jpg thumbnail loaded
    page.screenshot(path=str(page.shots / f"{stem} - 1 cards.png"))
    card.click()


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_template_runs_in_the_browser(comfy, page, path):
    workflow = json.loads(path.read_text())
    types = sorted({n["type"] for n in workflow["nodes"]})
    t = time.monotonic()
    open_template(page, path.stem)
    page.wait_for_function("(types) => JSON.stringify([...new Set(app.graph._nodes.map(n => n.type))].sort()) "
                           "=== JSON.stringify(types)", arg=types)
    missing = page.evaluate("() => app.graph._nodes.filter(n => !LiteGraph.registered_node_types[n.type])"
                            ".map(n => n.type)")
    assert missing == [], f"the editor does not know {missing}"
    assert not page.get_by_text("missing nodes").count() and not page.locator("[data-testid=error-overlay]").count()

    # choose tiny-random in Load Models' preset list and the small test image in Load Image's list (a user picks from
    # the same options), and make the question unique so that no earlier run's outputs come from ComfyUI's cache
    picked = page.evaluate("""([image, stamp]) => {
        const choose = (type, name, value) => {
            const n = app.graph._nodes.find(n => n.type === type);
            const w = n.widgets.find(w => w.name === name);
            if (!w.options.values.includes(value)) return w.options.values;
            w.value = value; w.callback?.(w.value, app.canvas, n);
            return w.value;
        };
        const got = [choose('Rea2Seg_LoadModels', 'preset', 'tiny-random'), choose('LoadImage', 'image', image)];
        if (app.graph._nodes.some(n => n.type === 'Rea2Seg_ScoreCandidates'))
            got.push(choose('Rea2Seg_ScoreCandidates', 'mode', 'yesno'));
        for (const q of app.graph._nodes.flatMap(n => n.widgets || []).filter(w => w.name === 'question' && w.value))
            q.value = q.value + ' ' + stamp;
        app.graph.setDirtyCanvas(true, true);
        return got;
    }""", [TEST_IMAGE, str(time.time_ns())])
    assert picked[:2] == ["tiny-random", TEST_IMAGE] and set(picked[2:]) <= {"yesno"}
    page.evaluate("""() => { window.__ev = [];
        for (const e of ['executed', 'execution_success', 'execution_error', 'execution_interrupted'])
            app.api.addEventListener(e, ev => window.__ev.push({type: e, detail: ev.detail})); }""")
    TIMINGS[f"{comfy.version}: browser {path.stem}: open template"] = time.monotonic() - t
    page.screenshot(path=str(page.shots / f"{path.stem} - 2 loaded.png"))

    t = time.monotonic()
    page.get_by_role("button", name="Run", exact=True).first.click()
    page.wait_for_function("() => window.__ev.some(e => e.type !== 'executed')", timeout=300_000)
    TIMINGS[f"{comfy.version}: browser {path.stem}: Run to success"] = time.monotonic() - t
    page.wait_for_timeout(500)  # let the previews paint for the screenshot
    page.screenshot(path=str(page.shots / f"{path.stem} - 3 done.png"))
    events = page.evaluate("() => window.__ev")
    end = [e for e in events if e["type"] != "executed"]
    assert end[0]["type"] == "execution_success", json.dumps(end[0]["detail"])[:2000]

    titles = {str(n["id"]): n.get("title") or n["type"] for n in workflow["nodes"]}
    images = {titles[str(e["detail"]["node"])]: [view(comfy, im) for im in e["detail"]["output"]["images"]]
              for e in events if e["type"] == "executed" and "images" in (e["detail"]["output"] or {})}
    for title, ims in images.items():
        assert ims and all(im.size == (96, 64) for im in ims), title  # the chosen image's size
    if "Save mask" in images:
        assert set(np.unique(np.asarray(images["Save mask"][0].convert("L")))) <= {0, 255}
    expected = {"Save mask", "Save overlay", "Numbered candidates", "Attention heat map", "Save cut-out (RGBA)",
                "Save background blur", "Top-4 candidates", "Merged overlay"}
    previews = [n.get("title") for n in workflow["nodes"] if n.get("title") in expected]
    assert previews and set(previews) <= set(images), f"no preview from {set(previews) - set(images)}"
    shown = page.evaluate("() => app.graph._nodes.filter(n => (n.imgs || []).some(i => i.naturalWidth > 0))"
                          ".map(n => n.title)")
    assert shown, "the editor shows no preview image on any node"


def view(comfy, image: dict) -> Image.Image:
    """An output image as the editor fetches it (/api/view)."""
    q = urllib.parse.urlencode({k: image.get(k, "") for k in ("filename", "subfolder", "type")})
    with urllib.request.urlopen(f"{comfy.url}/api/view?{q}", timeout=30) as r:
        im = Image.open(io.BytesIO(r.read()))
        im.load()
        return im
