"""Image in, mask out: the conversions every door shares (load, normalise, save atomically, PNG bytes, RLE)."""
from __future__ import annotations

import base64
import io
import os
import secrets
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .config import MAX_IMAGE_PIXELS, MIN_IMAGE_SIDE
from .errors import InputError, OutputExistsError

ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray]


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise InputError(
            f"image is {width}x{height} = {width * height:,} pixels, over the cap of {max_pixels:,}; "
            f"downscale it first (or raise the cap with max_pixels=... / --max-pixels)")


def to_rgb_array(img: Image.Image) -> np.ndarray:
    """PIL image of any mode (1, L, P, RGBA, I;16, I, F, CMYK, LA...) -> (H, W, 3) uint8, EXIF orientation applied."""
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block must not make the image unusable
        pass
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") else max(float(a.max()), 1.0)
        img = Image.fromarray(np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        bg = Image.new("RGBA", img.size, (255, 255, 255, 255))  # composite on white, as viewers show it
        img = Image.alpha_composite(bg, img)
    return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))


def load_image(src: ImageLike, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Load a path, PIL image or numpy array as (H, W, 3) uint8 RGB.

    numpy input: (H, W) grey, (H, W, 1|3|4) uint8, uint16 or float in [0, 1]. Raises ``InputError`` naming the
    problem for anything else (missing file, directory, not an image, truncated, too large, degenerate size).
    """
    if isinstance(src, np.ndarray):
        arr = _array_to_rgb(src)
    elif isinstance(src, Image.Image):
        _check_pixels(src.width, src.height, max_pixels)
        arr = to_rgb_array(src)
    elif isinstance(src, (str, os.PathLike)):
        arr = _load_path(Path(src), max_pixels)
    else:
        raise InputError(f"unsupported image type {type(src).__name__}; pass a file path, a PIL image or a "
                         f"numpy array (H, W, 3) uint8")
    h, w = arr.shape[:2]
    _check_pixels(w, h, max_pixels)
    if min(h, w) < MIN_IMAGE_SIDE:
        raise InputError(f"image is {w}x{h} pixels; each side must be at least {MIN_IMAGE_SIDE} pixels")
    return arr


def _load_path(path: Path, max_pixels: int) -> np.ndarray:
    if not path.exists():
        raise InputError(f"image not found: {path}; check the path")
    if path.is_dir():
        raise InputError(f"{path} is a directory, not an image file; pass the path of one image")
    if path.stat().st_size == 0:
        raise InputError(f"image file is empty (0 bytes): {path}")
    return _decode(path, str(path), max_pixels)


def _decode(source, name: str, max_pixels: int) -> np.ndarray:
    """Open ``source`` (a path or a file object) with PIL under the pixel cap -> (H, W, 3) uint8; ``name`` names it
    in messages."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(source) as img:
                _check_pixels(img.width, img.height, max_pixels)
                img.load()
                return to_rgb_array(img)
        except InputError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise InputError(f"{name} declares more pixels than the cap of {max_pixels:,} (a decompression bomb, or "
                             f"simply too large); downscale it first") from None
        except UnidentifiedImageError as e:
            raise InputError(f"not a readable image: {name} ({e.__class__.__name__}); pass a PNG, JPEG, WebP, "
                             f"TIFF or BMP file") from None
        except (OSError, SyntaxError, ValueError) as e:
            raise InputError(f"image file is truncated or corrupt: {name} ({e}); re-export or re-download it") \
                from None


def _array_to_rgb(a: np.ndarray) -> np.ndarray:
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise InputError(f"image array must be (H, W), (H, W, 3) or (H, W, 4), got shape {a.shape}")
    if a.dtype == np.uint16:
        a = (a.astype(np.float64) / 65535.0 * 255.0 + 0.5).astype(np.uint8)
    elif a.dtype.kind == "f":
        if not np.isfinite(a).all():
            raise InputError("image array contains NaN or infinity")
        a = (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    elif a.dtype == bool:
        a = a.astype(np.uint8) * 255
    elif a.dtype != np.uint8:
        raise InputError(f"image array dtype {a.dtype} is not supported; use uint8, uint16 or float in [0, 1]")
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    elif a.shape[2] == 4:
        alpha = a[:, :, 3:4].astype(np.float32) / 255.0
        a = (a[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha) + 0.5).astype(np.uint8)
    return np.ascontiguousarray(a)


def decode_image_bytes(data: bytes, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Bytes of an encoded image (e.g. from base64) -> (H, W, 3) uint8, with the same checks as a file."""
    if not data:
        raise InputError("image data is empty (0 bytes)")
    arr = _decode(io.BytesIO(data), "image data", max_pixels)
    return load_image(arr, max_pixels)


def decode_base64_image(text: str, max_bytes: int, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """A base64 string (optionally a ``data:image/...;base64,`` URL) -> (H, W, 3) uint8, size-capped."""
    if text.startswith("data:"):
        text = text.split(",", 1)[-1]
    if len(text) * 3 // 4 > max_bytes:
        raise InputError(f"base64 image is over the {max_bytes:,}-byte cap; pass a file path instead or shrink it")
    try:
        data = base64.b64decode(text, validate=True)
    except Exception:
        raise InputError("image_base64 is not valid base64") from None
    return decode_image_bytes(data, max_pixels)


# ---- output -------------------------------------------------------------------------------------------------------

def atomic_write_bytes(path: str | os.PathLike, data: bytes, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` via a temp file in the same folder and a rename: a reader never sees a partial file,
    and an existing file is kept unless ``overwrite``."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"output path {path} is a directory; give a file name")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} exists; pass --force (overwrite=True) to replace it, or choose another name")
    if not path.parent.exists():
        raise InputError(f"output folder {path.parent} does not exist; create it first")
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if someone created the file meanwhile: never clobber
            os.unlink(tmp)
    except FileExistsError:
        os.unlink(tmp)
        raise OutputExistsError(f"{path} exists; pass --force (overwrite=True) to replace it") from None
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _create_temp(path: Path) -> tuple[int, str]:
    """A new temporary file beside ``path`` (opened for writing), with the mode any new file gets here (0666 less
    the umask) rather than ``mkstemp``'s 0600: outputs stay readable by a web server or another user as usual."""
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), str(tmp)
        except FileExistsError:
            continue
    raise OutputExistsError(f"cannot create a temporary file beside {path}")


def png_bytes(array: np.ndarray, max_side: int | None = None) -> bytes:
    """(H, W) bool/uint8 or (H, W, 3) uint8 -> PNG bytes (bool masks become 0/255 mode L). Optionally downscaled so
    the long side is at most ``max_side`` (for agent previews)."""
    a = np.asarray(array)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    img = Image.fromarray(a)
    if max_side and max(img.size) > max_side:
        s = max_side / max(img.size)
        size = (max(1, round(img.width * s)), max(1, round(img.height * s)))
        img = img.resize(size, Image.NEAREST if a.ndim == 2 else Image.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=a.ndim == 2)
    return buf.getvalue()


def jpeg_bytes(image: np.ndarray, max_side: int | None = None, quality: int = 85) -> bytes:
    """(H, W, 3) uint8 -> JPEG bytes, optionally downscaled so the long side is at most ``max_side``. For photos a
    model looks at (5-10x smaller than PNG at the same size); masks stay PNG, whose edges JPEG would blur."""
    img = Image.fromarray(np.asarray(image, np.uint8))
    if max_side and max(img.size) > max_side:
        s = max_side / max(img.size)
        img = img.resize((max(1, round(img.width * s)), max(1, round(img.height * s))), Image.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def save_mask(path: str | os.PathLike, mask: np.ndarray, overwrite: bool = False) -> Path:
    """Save an (H, W) bool mask as a mode-L PNG (0/255) of the image's size, atomically."""
    return atomic_write_bytes(path, png_bytes(np.asarray(mask, bool)), overwrite)


def save_image(path: str | os.PathLike, image: np.ndarray, overwrite: bool = False) -> Path:
    """Save an (H, W, 3) uint8 image as PNG, atomically."""
    return atomic_write_bytes(path, png_bytes(image), overwrite)


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """A mask PNG -> (H, W) bool (non-zero = foreground)."""
    with Image.open(path) as img:
        a = np.asarray(img.convert("L") if img.mode not in ("L", "1", "I", "I;16") else img)
    return a != 0


# ---- RLE (COCO-style uncompressed, column-major counts starting with background) -----------------------------------

def rle_encode(mask: np.ndarray) -> dict:
    """(H, W) bool -> {"size": [H, W], "counts": [...]} (COCO uncompressed RLE, Fortran order, first run = zeros)."""
    m = np.asarray(mask, bool)
    if m.ndim != 2:
        raise InputError(f"mask must be (H, W), got shape {m.shape}")
    flat = m.ravel(order="F").astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    return {"size": [int(m.shape[0]), int(m.shape[1])], "counts": [int(c) for c in counts]}


def rle_decode(rle: dict) -> np.ndarray:
    """Inverse of ``rle_encode``."""
    try:
        h, w = (int(v) for v in rle["size"])
        counts = [int(c) for c in rle["counts"]]
    except Exception:
        raise InputError("RLE must be {'size': [H, W], 'counts': [int, ...]}") from None
    if h < 0 or w < 0 or any(c < 0 for c in counts) or sum(counts) != h * w:
        raise InputError(f"RLE counts sum to {sum(counts)}, expected H*W = {h * w}")
    values = np.zeros(len(counts), bool)
    values[1::2] = True
    flat = np.repeat(values, counts)
    return flat.reshape((h, w), order="F")
