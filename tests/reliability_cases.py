"""The bad-input and fault matrix: each case builds its input in a temp folder; the tests run it through the engine,
the CLI and the agent doors, and docs/RELIABILITY.md is generated from the same list (see test_reliability.py)."""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

QUESTION = "the cup"


def _png(path: Path, img: Image.Image) -> str:
    img.save(path)
    return str(path)


def _bomb(path: Path) -> str:
    """A valid PNG header claiming 100000 x 100000 pixels (10 gigapixels) with almost no data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                     + chunk(b"IEND", b""))
    return str(path)


def _truncated(path: Path) -> str:
    buf = Path(_png(path.with_suffix(".full.png"), Image.new("RGB", (64, 48), (200, 30, 30))))
    data = buf.read_bytes()
    buf.unlink()
    path.write_bytes(data[: len(data) // 2])
    return str(path)


def _rgb(h: int, w: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8))


def _exif_rotated(path: Path) -> str:
    img = _rgb(40, 60)
    exif = img.getexif()
    exif[0x0112] = 6
    img.save(path, exif=exif)
    return str(path)


@dataclass(frozen=True)
class Case:
    id: str
    what: str
    build: Callable[[Path], str]  # tmp dir -> image path
    question: object = QUESTION
    expect: str = "ok"  # "ok" or the Rea2SegError subclass name
    needle: str = ""  # a piece of the message that names the problem


INPUT_CASES = [
    Case("not-an-image", "a text file named .png", lambda d: (d / "a.png").write_text("hello") and str(d / "a.png"),
         expect="InputError", needle="not a readable image"),
    Case("zero-bytes", "a 0-byte file", lambda d: (d / "z.png").write_bytes(b"") or str(d / "z.png"),
         expect="InputError", needle="empty (0 bytes)"),
    Case("truncated", "a PNG cut in half", lambda d: _truncated(d / "t.png"), expect="InputError",
         needle="truncated or corrupt"),
    Case("bomb", "a decompression bomb (PNG header claiming 100000x100000)", lambda d: _bomb(d / "bomb.png"),
         expect="InputError", needle="more pixels than the cap"),
    Case("missing", "a path that does not exist", lambda d: str(d / "nope.png"), expect="InputError",
         needle="not found"),
    Case("directory", "a directory instead of a file", lambda d: str(d), expect="InputError", needle="directory"),
    Case("1x1", "a 1x1 image", lambda d: _png(d / "one.png", _rgb(1, 1)), expect="InputError",
         needle="at least 2 pixels"),
    Case("thin", "a very thin image (3x400)", lambda d: _png(d / "thin.png", _rgb(3, 400))),
    Case("too-thin", "an image over the VLM's 200:1 aspect ratio (2x500)", lambda d: _png(d / "t2.png", _rgb(2, 500)),
         expect="InputError", needle="aspect ratio"),
    Case("grey", "greyscale (L)", lambda d: _png(d / "g.png", _rgb(40, 60).convert("L"))),
    Case("rgba", "RGBA with transparency", lambda d: _png(d / "a.png", _rgb(40, 60).convert("RGBA"))),
    Case("palette", "palette (P)", lambda d: _png(d / "p.png", _rgb(40, 60).convert("P"))),
    Case("16-bit", "16-bit greyscale", lambda d: _png(d / "s.png", Image.fromarray(
        np.arange(2400, dtype=np.uint16).reshape(40, 60) * 20).convert("I;16"))),
    Case("cmyk", "CMYK JPEG", lambda d: (_rgb(40, 60).convert("CMYK").save(d / "c.jpg"), str(d / "c.jpg"))[1]),
    Case("exif", "EXIF-rotated JPEG (orientation 6)", lambda d: _exif_rotated(d / "e.jpg")),
    Case("empty-question", "an empty question", lambda d: _png(d / "q.png", _rgb(40, 60)), question="",
         expect="InputError", needle="question is empty"),
    Case("blank-question", "a whitespace-only question", lambda d: _png(d / "q.png", _rgb(40, 60)),
         question=" \t\n ", expect="InputError", needle="question is empty"),
    Case("long-question", "a question of 10,000 characters", lambda d: _png(d / "q.png", _rgb(40, 60)),
         question="word " * 2000, expect="InputError", needle="shorten it"),
    Case("many-tokens", "a question over the 512-token budget (1,900 characters, under the character cap)",
         lambda d: _png(d / "q.png", _rgb(40, 60)), question="x" * 1900, expect="InputError", needle="tokens long"),
    Case("non-utf8", "a question of non-UTF-8 bytes", lambda d: _png(d / "q.png", _rgb(40, 60)),
         question=b"\xff\xfe\xfa", expect="InputError", needle="UTF-8"),
]
