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
    kind: str
    filename: str
    url: str
    size: int  # bytes, as published

    @property
    def sha256_prefix(self) -> str:
        """Meta's file names end in the first 6 hex digits of the file's SHA-256 (torch.hub convention)."""
        return self.filename.rsplit("_", 1)[-1].split(".")[0]


_SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
SAM_CHECKPOINTS = {
    "vit_h": SamCheckpoint("vit_h", "sam_vit_h_4b8939.pth", _SAM_URL + "sam_vit_h_4b8939.pth", 2_564_550_879),
    "vit_l": SamCheckpoint("vit_l", "sam_vit_l_0b3195.pth", _SAM_URL + "sam_vit_l_0b3195.pth", 1_249_524_607),
    "vit_b": SamCheckpoint("vit_b", "sam_vit_b_01ec64.pth", _SAM_URL + "sam_vit_b_01ec64.pth", 375_042_383),
}
#: The published SAM v1 kinds.
SAM_KINDS = tuple(SAM_CHECKPOINTS)


def find_sam_checkpoint(name: str) -> SamCheckpoint | None:
    """The published checkpoint a kind ("vit_h") or file name ("sam_vit_h_4b8939.pth") refers to."""
    return SAM_CHECKPOINTS.get(name) or next((c for c in SAM_CHECKPOINTS.values() if c.filename == name), None)


def download_sam(kind: str, dest_dir: str | os.PathLike | None = None, url: str | None = None,
                 progress: Callable[[int, int], None] | None = None) -> Path:
    """Download Meta's SAM checkpoint once, atomically (``.part`` then rename) and verified (size and the SHA-256
    prefix in its file name). A partial download never looks complete."""
    ck = SAM_CHECKPOINTS[kind]
    dest = Path(dest_dir) if dest_dir else models_home() / "sams"
    target = dest / ck.filename
    if target.exists() and target.stat().st_size == ck.size:
        return target
    if offline():
        raise ModelNotFoundError(f"SAM checkpoint not found: expected {target}; HF_HUB_OFFLINE is set, so nothing is "
                                 f"downloaded. Run `rea2seg models download {kind}` with network, or fetch "
                                 f"{ck.url} to that path")
    import urllib.request

    dest.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url or ck.url, timeout=60) as r, open(part, "wb") as f:
            total = int(r.headers.get("Content-Length") or ck.size)
            done = 0
            bar = _progress_bar(total, f"downloading {ck.filename}") if progress is None else None
            while chunk := r.read(1 << 20):
                f.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
                else:
                    bar.update(len(chunk))
            if bar is not None:
                bar.close()
    except OSError as e:
        part.unlink(missing_ok=True)
        raise ModelError(f"download of {ck.url} failed ({e}); check the network and run "
                         f"`rea2seg models download {kind}` again, or place {ck.filename} at {target}") from None
    verify_download(part, ck, digest.hexdigest())
    os.replace(part, target)
    return target


def verify_download(path: Path, ck: SamCheckpoint, sha256: str | None = None) -> None:
    """Raise ``CheckpointError`` (and delete ``path``) unless size and SHA-256 prefix match the published file."""
    size = path.stat().st_size
    if sha256 is None:
        sha256 = sha256_file(path)
    if size != ck.size or not sha256.startswith(ck.sha256_prefix):
        path.unlink(missing_ok=True)
        raise CheckpointError(f"downloaded {ck.filename} failed verification (size {size:,} vs {ck.size:,}, sha256 "
                              f"{sha256[:12]}… vs {ck.sha256_prefix}…); it was deleted, run the download again")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
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
