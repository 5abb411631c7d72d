"""Where models live and how they are fetched: the models folder, Meta's SAM checkpoints (atomic, verified downloads)
and Hugging Face model directories."""
from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import CheckpointError, ModelError, ModelNotFoundError


def models_home() -> Path:
    """Root of downloaded models: $REA2SEG_MODELS_DIR, else ~/.cache/rea2seg/models. Same layout as ComfyUI's
    models folder: ``LLM/<name>/`` for VLM directories, ``sams/<file>`` for SAM checkpoints."""
    env = os.environ.get("REA2SEG_MODELS_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rea2seg" / "models"


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


# ---- SAM v1 checkpoints ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SamCheckpoint:
    """A published SAM checkpoint: its file name, URL, size and full SHA-256 (the six hex digits in Meta's file
    names are an MD5 prefix, not a hash a download can be checked against)."""

    kind: str
    filename: str
    url: str
    size: int  # bytes, as published
    sha256: str


_SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
SAM_CHECKPOINTS = {
    "vit_h": SamCheckpoint("vit_h", "sam_vit_h_4b8939.pth", _SAM_URL + "sam_vit_h_4b8939.pth", 2_564_550_879,
                           "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e"),
    "vit_l": SamCheckpoint("vit_l", "sam_vit_l_0b3195.pth", _SAM_URL + "sam_vit_l_0b3195.pth", 1_249_524_607,
                           "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622"),
    "vit_b": SamCheckpoint("vit_b", "sam_vit_b_01ec64.pth", _SAM_URL + "sam_vit_b_01ec64.pth", 375_042_383,
                           "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912"),
}
#: The published SAM v1 kinds.
SAM_KINDS = tuple(SAM_CHECKPOINTS)


def find_sam_checkpoint(name: str) -> SamCheckpoint | None:
    """The published checkpoint a kind ("vit_h") or file name ("sam_vit_h_4b8939.pth") refers to."""
    return SAM_CHECKPOINTS.get(name) or next((c for c in SAM_CHECKPOINTS.values() if c.filename == name), None)


def download_sam(kind: str, dest_dir: str | os.PathLike | None = None, url: str | None = None,
                 progress: Callable[[int, int], None] | None = None) -> Path:
    """Download Meta's SAM checkpoint once into ``<dest>/<file>.part``, check its size and full SHA-256 and rename
    it into place: a file under the final name is always complete. An interrupted download resumes from its
    ``.part`` (an HTTP range request) or, when the server cannot resume, starts over; a ``.part`` that fails the
    check is removed (it was ours), never a file under the final name."""
    ck = SAM_CHECKPOINTS[kind]
    dest = Path(dest_dir) if dest_dir else models_home() / "sams"
    target = dest / ck.filename
    if target.exists() and target.stat().st_size == ck.size:
        return target
    if offline():
        raise ModelNotFoundError(f"SAM checkpoint not found: expected {target}; HF_HUB_OFFLINE is set, so nothing is "
                                 f"downloaded. Run `rea2seg models download {kind}` with network, or fetch "
                                 f"{ck.url} to that path")
    dest.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    source = url or ck.url
    try:
        digest = _fetch(source, part, ck.size, progress, f"downloading {ck.filename}")
    except OSError as e:
        raise ModelError(f"download of {source} failed ({e}); check the network and run `rea2seg models download "
                         f"{kind}` again (it resumes from {part.name}), or place {ck.filename} at {target}") from None
    problem = checkpoint_problem(part, ck, digest)
    if problem:
        part.unlink(missing_ok=True)
        raise CheckpointError(f"downloaded {ck.filename} failed verification ({problem}); the partial file was "
                              f"deleted: run `rea2seg models download {kind}` again")
    os.replace(part, target)
    return target


def _fetch(url: str, part: Path, expected: int, progress, desc: str) -> str:
    """Complete ``part`` from ``url``, resuming after the bytes already there when the server honours a range
    request (206 with the matching Content-Range), else from the start. Returns the SHA-256 of the whole file."""
    import urllib.error
    import urllib.request

    have = part.stat().st_size if part.exists() else 0
    if have > expected:  # not a prefix of this file
        part.unlink()
        have = 0
    digest = hashlib.sha256()
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as e:
        if e.code != 416 or have != expected:  # 416: nothing left to fetch, the .part is already whole
            raise
        _hash_into(digest, part)
        return digest.hexdigest()
    with response as r:
        resumed = have and getattr(r, "status", 200) == 206 and \
            str(r.headers.get("Content-Range", "")).startswith(f"bytes {have}-")
        if resumed:
            _hash_into(digest, part)
        else:
            have = 0
        total = expected
        bar = _progress_bar(total, desc) if progress is None else None
        if bar is not None:
            bar.update(have)
        with open(part, "ab" if resumed else "wb") as f:
            while chunk := r.read(1 << 20):
                f.write(chunk)
                digest.update(chunk)
                have += len(chunk)
                if progress:
                    progress(have, total)
                else:
                    bar.update(len(chunk))
        if bar is not None:
            bar.close()
    if have < expected:  # the server closed the connection early: keep the .part for the next attempt
        raise ConnectionError(f"the connection closed after {have:,} of {expected:,} bytes")
    return digest.hexdigest()


def _hash_into(digest, path: Path) -> None:
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)


def checkpoint_problem(path: Path, ck: SamCheckpoint, sha256: str | None = None) -> str | None:
    """What is wrong with ``path`` as the published ``ck`` (size or SHA-256), or None when it is that file."""
    size = path.stat().st_size
    if size != ck.size:
        return f"size {size:,} bytes, published {ck.size:,}"
    sha256 = sha256 or sha256_file(path)
    if sha256 != ck.sha256:
        return f"sha256 {sha256}, published {ck.sha256}"
    return None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    _hash_into(h, path)
    return h.hexdigest()


def _progress_bar(total: int, desc: str):
    try:
        from tqdm import tqdm
        return tqdm(total=total, desc=desc, unit="B", unit_scale=True, file=sys.stderr)
    except ImportError:
        class _Bar:
            def __init__(self):
                self.n = 0

            def update(self, k):
                self.n += k
                print(f"\r{desc}: {self.n / 1e6:.0f}/{total / 1e6:.0f} MB", end="", file=sys.stderr)

            def close(self):
                print(file=sys.stderr)
        return _Bar()


# ---- Hugging Face model directories ----------------------------------------------------------------------------------

def hub_local_dir(repo_id: str) -> Path:
    """Where ``rea2seg models download`` puts a hub model: ``<models_home>/LLM/<repo name>``."""
    return models_home() / "LLM" / repo_id.split("/")[-1]


#: The files a VLM directory needs (weights as safetensors; no pickles, no other frameworks' weights).
HUB_FILES = ("*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "*.py")


def download_hub_dir(repo_id: str, dest: Path | None = None, files: tuple[str, ...] = HUB_FILES) -> Path:
    """Fetch a hub model once into ``<models_home>/LLM/<name>`` (huggingface_hub downloads each file to a temporary
    name, verifies it and renames it, with a progress bar); ``files``: the name patterns to fetch. The caller checks
    the directory's contents."""
    if offline():
        raise ModelNotFoundError(f"{repo_id} not found at {dest or hub_local_dir(repo_id)} and HF_HUB_OFFLINE is "
                                 f"set; unset it and run `rea2seg models download {repo_id}`")
    from huggingface_hub import snapshot_download

    dest = dest or hub_local_dir(repo_id)
    try:
        snapshot_download(repo_id, local_dir=str(dest), allow_patterns=list(files))
    except Exception as e:
        raise ModelError(f"download of {repo_id} failed ({e.__class__.__name__}: {str(e)[:200]}); check the network "
                         f"and the id, then run `rea2seg models download {repo_id}` again") from None
    return dest
