"""Evaluation data: LISA's ReasonSeg layout, parquet / Hugging Face copies, and ReasonSeg-SGDR.

Every loader yields ``Sample`` objects whose ``target`` is LISA's ground-truth encoding: (H, W) uint8 with 0 =
background, 1 = target, 255 = ignore (counted in neither intersection nor union, see ``metrics.py``). Samples that
cannot be used (missing image, no polygon, unreadable mask...) are yielded as ``SkippedSample`` with the reason, so the
caller can report and count them instead of crashing or silently dropping them.

Polygons are rasterised exactly as LISA's ``get_mask_from_json`` does with OpenCV (``cv2.polylines(..., 1)`` then
``cv2.fillPoly``), re-implemented in numpy so that evaluation needs no OpenCV: see ``rasterize.rasterize_polygon``.
"""
from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
from PIL import Image

from ..errors import InputError
from ..images import load_image, rle_decode
from .metrics import SGDR_CATEGORIES
from .rasterize import rasterize_polygon

IGNORE_VALUE = 255
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")

def lisa_mask_from_shapes(shapes: Sequence[dict], height: int, width: int) -> tuple[np.ndarray, int]:
    """LabelMe ``shapes`` -> (LISA ground truth (H, W) uint8 with 0/1/255, number of polygons used).

    As LISA's ``get_mask_from_json``: shapes labelled exactly "flag" (any case) are skipped; polygons are drawn
    largest first (area = rasterised pixel count, order of ``np.argsort(area)[::-1]``), so smaller ones overwrite
    larger ones; a label containing "ignore" (any case) paints 255, any other label paints 1.
    """
    polys, values, areas = [], [], []
    if not isinstance(shapes, (list, tuple)):
        raise InputError(f"'shapes' must be a list of LabelMe shapes, got {type(shapes).__name__}")
    for shape in shapes:
        if not isinstance(shape, dict):
            raise InputError(f"each shape must be an object with 'label' and 'points', got {type(shape).__name__}")
        label = str(shape.get("label", ""))
        if label.lower() == "flag":
            continue
        poly = rasterize_polygon(shape.get("points") or [], height, width)
        polys.append(poly)
        values.append(IGNORE_VALUE if "ignore" in label.lower() else 1)
        areas.append(int(poly.sum()))
    mask = np.zeros((height, width), np.uint8)
    for i in np.argsort(areas)[::-1]:
        mask[polys[i]] = values[i]
    return mask, len(polys)


# ---- samples ------------------------------------------------------------------------------------------------------

@dataclass
class Sample:
    """One evaluation sample.

    image: (H, W, 3) uint8. target: (H, W) uint8, 0 background / 1 target / 255 ignore. is_sentence: LISA's
    long-query flag (None if the data has none). category: e.g. an SGDR category (None if the data has none).
    """

    id: str
    question: str
    image: np.ndarray
    target: np.ndarray
    is_sentence: bool | None = None
    category: str | None = None
    image_path: str | None = None
    texts: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SkippedSample:
    """A sample that could not be used, and why (reported and counted, never silently dropped)."""

    id: str
    reason: str


def safe_key(text: str) -> str:
    """A sample id usable as a file name (``<id>.png`` in a predictions folder)."""
    key = re.sub(r"[^A-Za-z0-9._+=@-]+", "_", str(text)).strip("._")
    return key or "sample"


def _unique(keys: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for k in keys:
        n = seen.get(k, 0)
        seen[k] = n + 1
        out.append(k if n == 0 else f"{k}__{n + 1}")
    return out


def normalize_category(value) -> str | None:
    """Map spellings of the SGDR categories ("multi_step", "D", "geometry", ...) to their canonical names."""
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    flat = re.sub(r"[^a-z]", "", text.lower())
    for prefix, name in (("discrim", "Discriminative"), ("geometr", "Geometric"), ("spatial", "Spatial"),
                         ("multi", "Multi-step")):
        if flat.startswith(prefix):
            return name
    if flat in ("d", "g", "s", "m"):
        return {"d": "Discriminative", "g": "Geometric", "s": "Spatial", "m": "Multi-step"}[flat]
    return text


def _as_texts(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = value.strip()
        if value.startswith("[") and value.endswith("]"):
            try:
                parsed = json.loads(value)
                if isinstance(parsed, list):
                    return [str(t).strip() for t in parsed if str(t).strip()]
            except ValueError:
                pass
        return [value] if value else []
    if isinstance(value, (list, tuple, np.ndarray)):
        return [str(t).strip() for t in value if t is not None and str(t).strip()]
    return [str(value)]


def _as_bool(value) -> bool | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "y", "long", "sentence")
    return bool(value)


# ---- datasets -----------------------------------------------------------------------------------------------------

class EvalDataset:
    """Base class: an ordered list of sample keys and a lazy iterator over them.

    kind: "labelme" | "parquet". name: a short label for reports. notes: conventions the report must state (e.g.
    "ignore regions merged into the target").
    """

    kind = "base"

    def __init__(self, name: str, split: str | None) -> None:
        self.name = name
        self.split = split
        self.notes: list[str] = []

    def keys(self) -> list[str]:
        raise NotImplementedError

    def iter_samples(self, keys: Iterable[str] | None = None) -> Iterator[Sample | SkippedSample]:
        """Yield ``Sample`` or ``SkippedSample`` for ``keys`` (default: all), in dataset order."""
        raise NotImplementedError

    def identity(self) -> dict:
        """What makes two runs comparable (stored in a run's ``run.json``)."""
        return {"kind": self.kind, "name": self.name, "split": self.split}

    def __len__(self) -> int:
        return len(self.keys())


class LabelMeDataset(EvalDataset):
    """LISA's ReasonSeg layout: ``<split>/<name>.jpg`` + ``<name>.json`` with ``text`` (list), ``is_sentence`` and
    LabelMe ``shapes`` (label "target" / "ignore"). Sub-folders are searched too; for ReasonSeg-SGDR extracted to this
    layout the category is read from a JSON key (``category_key``, or the first of "category", "type", ...) or, failing
    that, from a parent folder named after a category.

    texts: "first" (LISA's validation/test protocol: ``text[0]``, one sample per image) or "all" (one sample per text,
    ids ``<name>__t<k>``).
    """

    kind = "labelme"
    CATEGORY_KEYS = ("category", "type", "task", "reasoning_type", "question_type", "dimension", "subset")

    def __init__(self, folder: Path, split: str | None, texts: str = "first", category_key: str | None = None,
                 require_category: bool = False) -> None:
        super().__init__(folder.parent.name if _file_split(folder / "x") else folder.name, split)
        if texts not in ("first", "all"):
            raise InputError(f"texts must be 'first' or 'all', got {texts!r}")
        self.folder = folder
        self.texts = texts
        self.category_key = category_key
        self.require_category = require_category
        self._index: list[tuple[str, Path | None, Path | None, int]] | None = None

    def identity(self) -> dict:
        return {**super().identity(), "path": str(self.folder.resolve()), "texts": self.texts,
                "category_key": self.category_key}

    def _build_index(self) -> list[tuple[str, Path | None, Path | None, int]]:
        stems: dict[Path, dict[str, Path]] = {}
        for path in sorted(self.folder.rglob("*")):
            if path.is_file() and (path.suffix.lower() == ".json" or path.suffix.lower() in IMAGE_SUFFIXES):
                rel = path.relative_to(self.folder).with_suffix("")
                kind = "json" if path.suffix.lower() == ".json" else "image"
                stems.setdefault(rel, {}).setdefault(kind, path)
        if not stems:
            raise InputError(f"no LabelMe JSON or image files in {self.folder}; point at a ReasonSeg split folder "
                             f"(e.g. ReasonSeg/val) that holds <name>.jpg + <name>.json pairs")
        names = [rel.name for rel in stems]
        dup = {n for n in names if names.count(n) > 1}
        index = []
        for rel, files in stems.items():
            base = safe_key(rel.name if rel.name not in dup else "__".join(rel.parts))
            n_texts = 1
            if self.texts == "all" and "json" in files:
                try:
                    n_texts = max(1, len(_as_texts(_read_json(files["json"]).get("text"))))
                except (InputError, AttributeError):
                    n_texts = 1
            for t in range(n_texts):
                key = base if self.texts == "first" else f"{base}__t{t}"
                index.append((key, files.get("json"), files.get("image"), t))
        keys = _unique([k for k, *_ in index])
        return [(k, *rest) for k, (_, *rest) in zip(keys, index)]

    def keys(self) -> list[str]:
        if self._index is None:
            self._index = self._build_index()
        return [k for k, *_ in self._index]

    def iter_samples(self, keys: Iterable[str] | None = None) -> Iterator[Sample | SkippedSample]:
        self.keys()
        wanted = None if keys is None else set(keys)
        for key, json_path, image_path, t in self._index or []:
            if wanted is not None and key not in wanted:
                continue
            try:
                yield self._load(key, json_path, image_path, t)
            except InputError as e:
                yield SkippedSample(key, str(e))

    def _load(self, key: str, json_path: Path | None, image_path: Path | None, t: int) -> Sample:
        if json_path is None:
            raise InputError(f"no annotation JSON next to image {image_path}")
        anno = _read_json(json_path)
        if not isinstance(anno, dict):
            raise InputError(f"{json_path} is not a LabelMe JSON object")
        if image_path is None and anno.get("imagePath"):
            candidate = json_path.parent / str(anno["imagePath"])
            image_path = candidate if candidate.is_file() else None
        if image_path is None:
            raise InputError(f"image missing for {json_path.name} (no {json_path.stem}.jpg/.png next to it)")
        texts = _as_texts(anno.get("text"))
        if not texts:
            raise InputError(f"{json_path.name} has no 'text'")
        if t >= len(texts):
            raise InputError(f"{json_path.name} has {len(texts)} texts, text {t} requested")
        image = load_image(image_path)
        h, w = image.shape[:2]
        shapes = anno.get("shapes") or []
        try:
            target, n_polys = lisa_mask_from_shapes(shapes, h, w)
        except InputError as e:
            raise InputError(f"{json_path.name}: {e}") from None
        if n_polys == 0:
            raise InputError(f"{json_path.name} has no polygon")
        category = None
        if self.category_key:
            category = normalize_category(anno.get(self.category_key))
        else:
            for k in self.CATEGORY_KEYS:
                if anno.get(k) is not None:
                    category = normalize_category(anno[k])
                    break
            if category is None:
                for part in json_path.relative_to(self.folder).parts[:-1][::-1]:
                    if normalize_category(part) in SGDR_CATEGORIES:
                        category = normalize_category(part)
                        break
        if self.require_category and category is None:
            raise InputError(f"{json_path.name} has no category (looked for keys {list(self.CATEGORY_KEYS)} and "
                             f"category folders); pass the key with --columns category=KEY")
        return Sample(key, texts[t], image, target, _as_bool(anno.get("is_sentence")), category, str(image_path),
                      texts)


def _read_json(path: Path):
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror}") from None
    for encoding in ("utf-8", "cp1252"):  # LISA falls back to cp1252 for a few files
        try:
            return json.loads(raw.decode(encoding))
        except (UnicodeDecodeError, ValueError):
            continue
    raise InputError(f"{path} is not valid JSON")


# ---- parquet ------------------------------------------------------------------------------------------------------

#: Column roles -> names tried in order when no explicit mapping is given.
COLUMN_CANDIDATES: dict[str, tuple[str, ...]] = {
    "image": ("image", "img", "image_bytes", "jpg", "png", "picture"),
    "text": ("text", "question", "query", "sentence", "instruction", "prompt", "expression", "texts", "sent"),
    "mask": ("mask", "gt_mask", "masks", "segmentation", "gt", "label_mask"),
    "shapes": ("shapes", "polygons", "annotation", "annotations"),
    "id": ("image_id", "id", "img_id", "sample_id", "image_name", "file_name", "filename", "name", "uid"),
    "category": ("category", "type", "task", "reasoning_type", "question_type", "dimension", "subset", "class"),
    "is_sentence": ("is_sentence",),
}
ROLES = tuple(COLUMN_CANDIDATES)


def parse_column_mapping(spec: str | None) -> dict[str, str]:
    """``"image=img,text=question,category=type"`` -> {"image": "img", ...}; roles: image, text, mask, shapes, id,
    category, is_sentence."""
    out: dict[str, str] = {}
    if not spec:
        return out
    for part in spec.split(","):
        if not part.strip():
            continue
        role, sep, name = part.partition("=")
        role, name = role.strip(), name.strip()
        if not sep or not name:
            raise InputError(f"bad --columns entry {part!r}; write ROLE=COLUMN, e.g. text=question")
        if role not in ROLES:
            raise InputError(f"unknown column role {role!r} in --columns; roles are {', '.join(ROLES)}")
        out[role] = name
    return out


class ParquetDataset(EvalDataset):
    """Parquet copies (Hugging Face layout): one row per sample with an image, a text and a mask or polygons.

    Masks may be a 2-D bool/int array (list of lists), an encoded image (``{"bytes": ...}`` or raw bytes), or COCO
    RLE (``{"size", "counts"}``). A mask with values {0, 1, 255} is read as LISA's encoding (255 = ignore); any other
    mask is binary (non-zero = target). Note that the public HF copies of ReasonSeg store ``mask.astype(bool)``, which
    merges LISA's ignore regions into the target: their scores are not LISA-equivalent (stated in ``notes``). A
    ``shapes`` column (LabelMe shapes as JSON) is rasterised as LISA does and keeps ignore regions.
    """

    kind = "parquet"

    def __init__(self, files: list[Path], split: str | None, name: str, columns: dict[str, str] | None = None,
                 texts: str = "first", require_category: bool = False) -> None:
        super().__init__(name, split)
        import pyarrow.parquet as pq  # noqa: F401  (fail early with a clear error)

        if texts not in ("first", "all"):
            raise InputError(f"texts must be 'first' or 'all', got {texts!r}")
        self.files = files
        self.texts = texts
        self.require_category = require_category
        self.columns = self._resolve_columns(columns or {})
        self._keys: list[str] | None = None
        if "mask" in self.columns and "shapes" not in self.columns:
            self.notes.append("masks read from the parquet mask column; if it was made with mask.astype(bool) "
                              "(the public HF copies of ReasonSeg), LISA's ignore regions count as target")

    def identity(self) -> dict:
        return {**super().identity(), "files": [str(f.resolve()) for f in self.files], "columns": self.columns,
                "texts": self.texts}

    def _resolve_columns(self, explicit: dict[str, str]) -> dict[str, str]:
        import pyarrow.parquet as pq

        schema = pq.read_schema(self.files[0])
        names = list(schema.names)
        lower = {n.lower(): n for n in names}
        out: dict[str, str] = {}
        for role, name in explicit.items():
            if name not in names:
                raise InputError(f"column {name!r} (for {role}) is not in {self.files[0].name}; columns: "
                                 f"{', '.join(names)}")
            out[role] = name
        for role, candidates in COLUMN_CANDIDATES.items():
            if role in out:
                continue
            for c in candidates:
                if c in lower and lower[c] not in out.values():
                    out[role] = lower[c]
                    break
        missing = [r for r in ("image", "text") if r not in out]
        if "mask" not in out and "shapes" not in out:
            missing.append("mask (or shapes)")
        if self.require_category and "category" not in out:
            missing.append("category")
        if missing:
            raise InputError(f"{self.files[0].name}: cannot find the {', '.join(missing)} column(s) among "
                             f"{', '.join(names)}; map them with --columns ROLE=COLUMN (roles: {', '.join(ROLES)})")
        return out

    def _id_values(self) -> list[str | None]:
        import pyarrow.parquet as pq

        out: list[str | None] = []
        for f in self.files:
            pf = pq.ParquetFile(f)
            n = pf.metadata.num_rows
            if "id" in self.columns:
                values = pf.read(columns=[self.columns["id"]]).column(0).to_pylist()
                out.extend(None if v is None else Path(str(v)).stem if "." in str(v) else str(v) for v in values)
                continue
            try:  # an HF Image struct carries the original file name
                values = pf.read(columns=[f"{self.columns['image']}.path"]).column(0).to_pylist()
                paths = [v.get("path") if isinstance(v, dict) else v for v in values]
                out.extend(Path(v).stem if v else None for v in paths)
            except Exception:
                out.extend([None] * n)
        return out

    def keys(self) -> list[str]:
        if self._keys is None:
            ids = self._id_values()
            base = [safe_key(v) if v else f"row{i:05d}" for i, v in enumerate(ids)]
            if self.texts == "all":
                counts = self._text_counts()
                base = [f"{b}__t{t}" for b, c in zip(base, counts) for t in range(c)]
            self._keys = _unique(base)
        return self._keys

    def _text_counts(self) -> list[int]:
        import pyarrow.parquet as pq

        counts = []
        for f in self.files:
            for v in pq.ParquetFile(f).read(columns=[self.columns["text"]]).column(0).to_pylist():
                counts.append(max(1, len(_as_texts(v))))
        return counts

    def iter_samples(self, keys: Iterable[str] | None = None) -> Iterator[Sample | SkippedSample]:
        import pyarrow.parquet as pq

        all_keys = self.keys()
        wanted = None if keys is None else set(keys)
        cols = list(dict.fromkeys(self.columns.values()))
        pos = 0
        for f in self.files:
            pf = pq.ParquetFile(f)
            for batch in pf.iter_batches(batch_size=8, columns=cols):
                for row in batch.to_pylist():
                    n_texts = max(1, len(_as_texts(row.get(self.columns["text"])))) if self.texts == "all" else 1
                    row_keys = all_keys[pos:pos + n_texts]
                    pos += n_texts
                    for t, key in enumerate(row_keys):
                        if wanted is not None and key not in wanted:
                            continue
                        try:
                            yield self._load(key, row, t, f.parent)
                        except InputError as e:
                            yield SkippedSample(key, str(e))

    def _load(self, key: str, row: dict, t: int, base: Path) -> Sample:
        c = self.columns
        texts = _as_texts(row.get(c["text"]))
        if not texts:
            raise InputError("no text")
        image = _decode_image_cell(row.get(c["image"]), base)
        h, w = image.shape[:2]
        if "shapes" in c and row.get(c["shapes"]) is not None:
            shapes = row[c["shapes"]]
            if isinstance(shapes, (str, bytes)):
                try:
                    shapes = json.loads(shapes)
                except ValueError:
                    raise InputError("shapes column is not valid JSON") from None
            if isinstance(shapes, dict):
                shapes = shapes.get("shapes", [])
            target, n = lisa_mask_from_shapes(shapes, h, w)
            if n == 0:
                raise InputError("no polygon")
        elif "mask" in c:
            target = decode_mask_cell(row.get(c["mask"]))
            if target.shape != (h, w):
                raise InputError(f"mask is {target.shape[1]}x{target.shape[0]} but the image is {w}x{h}")
        else:
            raise InputError("no mask or polygons")
        category = normalize_category(row.get(c["category"])) if "category" in c else None
        if self.require_category and category is None:
            raise InputError(f"empty category in column {c.get('category')!r}")
        is_sentence = _as_bool(row.get(c["is_sentence"])) if "is_sentence" in c else None
        return Sample(key, texts[min(t, len(texts) - 1)], image, target, is_sentence, category, None, texts)


def _decode_image_cell(cell, base: Path) -> np.ndarray:
    if cell is None:
        raise InputError("image missing (empty cell)")
    if isinstance(cell, dict):
        data, path = cell.get("bytes"), cell.get("path")
        if data:
            return _decode_bytes(data, "image")
        if path:
            p = Path(path) if Path(path).is_absolute() else base / path
            if not p.is_file():
                raise InputError(f"image missing: {p}")
            return load_image(p)
        raise InputError("image missing (no bytes, no path)")
    if isinstance(cell, (bytes, bytearray)):
        return _decode_bytes(cell, "image")
    if isinstance(cell, str):
        p = Path(cell) if Path(cell).is_absolute() else base / cell
        if not p.is_file():
            raise InputError(f"image missing: {p}")
        return load_image(p)
    raise InputError(f"unsupported image cell type {type(cell).__name__}")


def _decode_bytes(data: bytes, what: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            if what == "image":
                return load_image(img)
            return np.asarray(img.convert("L") if img.mode not in ("L", "1", "P", "I", "I;16") else img)
    except InputError:
        raise
    except Exception as e:
        raise InputError(f"{what} bytes are not a readable image ({e.__class__.__name__})") from None


def lisa_target_from_array(a: np.ndarray) -> np.ndarray:
    """A 2-D mask -> LISA encoding: values within {0, 1, 255} with both 1 and 255 present keep 255 as ignore;
    otherwise binary (non-zero = target)."""
    a = np.asarray(a)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise InputError(f"mask must be 2-D, got shape {a.shape}")
    if a.dtype != bool and a.size:
        values = np.unique(a)
        if set(values.tolist()) <= {0, 1, 255} and 1 in values and 255 in values:
            return a.astype(np.uint8)
    return (a != 0).astype(np.uint8)


def decode_mask_cell(cell) -> np.ndarray:
    """A parquet mask cell (2-D list, image bytes, ``{"bytes": ...}`` or COCO RLE) -> (H, W) uint8 0/1/255."""
    if cell is None:
        raise InputError("mask missing (empty cell)")
    if isinstance(cell, dict):
        if "counts" in cell and "size" in cell:
            counts = cell["counts"]
            if isinstance(counts, (str, bytes)):
                counts = coco_rle_counts(counts)
            return rle_decode({"size": cell["size"], "counts": counts}).astype(np.uint8)
        if cell.get("bytes"):
            return lisa_target_from_array(_decode_bytes(cell["bytes"], "mask"))
        raise InputError("mask cell has neither bytes nor RLE counts")
    if isinstance(cell, (bytes, bytearray)):
        return lisa_target_from_array(_decode_bytes(cell, "mask"))
    if isinstance(cell, str):
        try:
            return decode_mask_cell(json.loads(cell))
        except ValueError:
            raise InputError("mask cell is a string but not JSON RLE") from None
    try:
        arr = np.array(cell)
    except Exception:
        raise InputError("mask cell is not a 2-D array") from None
    if arr.dtype == object:
        raise InputError("mask rows have different lengths")
    return lisa_target_from_array(arr)


def coco_rle_counts(s: str | bytes) -> list[int]:
    """Decode COCO's compressed RLE string (pycocotools ``rleFrString``) into run lengths."""
    data = s.encode() if isinstance(s, str) else bytes(s)
    counts: list[int] = []
    p = 0
    while p < len(data):
        x, k, more = 0, 0, True
        while more:
            c = data[p] - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


# ---- opening ------------------------------------------------------------------------------------------------------

_SPLIT_ALIASES = {"val": ("val", "validation", "valid"), "validation": ("val", "validation", "valid"),
                  "test": ("test",), "train": ("train",)}
_SPLIT_TOKENS = ("train", "val", "validation", "valid", "test")


def _split_names(split: str) -> tuple[str, ...]:
    return _SPLIT_ALIASES.get(split.lower(), (split.lower(),))


def _file_split(path: Path) -> str | None:
    for token in re.split(r"[^a-z]+", path.name.lower()) + [p.lower() for p in path.parent.parts[-1:]]:
        if token in _SPLIT_TOKENS:
            return "val" if token in ("validation", "valid") else token
    return None


def open_dataset(path: str | Path, split: str | None = None, *, kind: str = "auto", columns: dict[str, str] | None
                 = None, texts: str = "first", sgdr: bool = False) -> EvalDataset:
    """Open ``path`` as an evaluation dataset.

    path: a ReasonSeg split folder (``.../ReasonSeg/val``), a folder holding split folders (then ``split`` picks one,
    default "val"), a ``.parquet`` file, or a folder of parquet files (HF layout ``data/<split>-*.parquet``; ``split``
    selects files whose name contains it). kind: "auto" | "labelme" | "parquet". columns: parquet (and, for
    ``category``, LabelMe JSON key) mapping from role to column name. sgdr: ReasonSeg-SGDR, every sample needs a
    category.
    """
    root = Path(path).expanduser()
    if not root.exists():
        raise InputError(f"dataset not found: {root}; give a ReasonSeg split folder or a .parquet file/folder")
    columns = dict(columns or {})
    if kind not in ("auto", "labelme", "parquet"):
        raise InputError(f"dataset kind must be auto, labelme or parquet, got {kind!r}")
    if root.is_file():
        if root.suffix.lower() != ".parquet":
            raise InputError(f"{root} is a file but not .parquet; give a ReasonSeg folder or a parquet file")
        return ParquetDataset([root], split or _file_split(root), root.stem, columns, texts, sgdr)
    parquet = sorted(root.rglob("*.parquet"))
    if kind == "parquet" or (kind == "auto" and parquet and not any(root.glob("*.json"))):
        if not parquet:
            raise InputError(f"no .parquet files under {root}")
        chosen = parquet
        if split:
            named = [f for f in parquet if _file_split(f) is not None]
            chosen = [f for f in named if _file_split(f) in _split_names(split)] if named else parquet
            if not chosen:
                found = sorted({_file_split(f) for f in named})
                raise InputError(f"no parquet files for split {split!r} under {root}; found splits: "
                                 f"{', '.join(found)}")
        else:
            splits = sorted({s for s in (_file_split(f) for f in parquet) if s})
            if len(splits) > 1:
                raise InputError(f"{root} holds several splits ({', '.join(splits)}); choose one with --split")
            split = splits[0] if splits else None
        return ParquetDataset(chosen, split, root.parent.name if root.name == "data" else root.name, columns, texts,
                              sgdr)
    # LabelMe layout
    category_key = columns.pop("category", None)
    unknown = sorted(set(columns) - {"category"})
    if unknown:
        raise InputError(f"--columns {', '.join(unknown)}: column roles only apply to parquet data; for a LabelMe "
                         f"folder only category=KEY is used")
    folder = root
    if not any(root.glob("*.json")):
        names = [split] if split else ["val"]
        candidates = [root / s for n in names for s in _split_names(n)]
        candidates += [root / "ReasonSeg" / s for n in names for s in _split_names(n)]
        candidates += [root / "reason_seg" / "ReasonSeg" / s for n in names for s in _split_names(n)]
        hit = next((c for c in candidates if c.is_dir()), None)
        if hit is None:
            subdirs = sorted(p.name for p in root.iterdir() if p.is_dir())
            if split is None and not any(root.rglob("*.json")):
                raise InputError(f"no LabelMe JSON files or parquet files under {root}")
            if split is not None or not subdirs or any(d.lower() in _SPLIT_TOKENS for d in subdirs):
                raise InputError(f"no split folder {split or 'val'!r} under {root}; sub-folders: "
                                 f"{', '.join(subdirs) or 'none'} (choose one with --split)")
            hit = root  # e.g. SGDR extracted into per-category sub-folders
        folder = hit
        split = split or (hit.name if hit is not root else None)
    else:
        split = split or _file_split(root / "x") or root.name
    return LabelMeDataset(folder, split, texts, category_key, sgdr)
