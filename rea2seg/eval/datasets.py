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

    image: (H, W, 3) uint8. target: (H, W) uint8, 0 background / 1 target / 255 ignore (None for unlabelled input:
    ``rea2seg batch``). is_sentence: LISA's
    long-query flag (None if the data has none). category: e.g. an SGDR category (None if the data has none).
    """

    id: str
    question: str
    image: np.ndarray
    target: np.ndarray | None
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


#: ReasonSeg-SGDR's published sample counts per category (1,190 in all).
SGDR_PUBLISHED_COUNTS = {"Discriminative": 279, "Geometric": 396, "Spatial": 270, "Multi-step": 245}


def check_sgdr_category(category: str, raw) -> None:
    """``InputError`` for a category code outside SGDR's four: such a sample is reported, never a fifth category."""
    if category not in SGDR_CATEGORIES:
        raise InputError(f"category {raw!r} is not one of the four SGDR categories ({', '.join(SGDR_CATEGORIES)}); "
                         f"the sample is reported and left out, not counted as a fifth category (if another "
                         f"column holds the category, map it with --columns category=COLUMN)")


def sgdr_check(raw_values: Sequence) -> dict:
    """Compare a dataset's categories with ReasonSeg-SGDR's published ones: the counts found per category, what
    differs from the published counts, codes outside the four (with their counts), rows without a category."""
    found = {c: 0 for c in SGDR_CATEGORIES}
    unknown: dict[str, int] = {}
    missing = 0
    for raw in raw_values:
        cat = normalize_category(raw)
        if cat is None:
            missing += 1
        elif cat in found:
            found[cat] += 1
        else:
            unknown[str(raw)] = unknown.get(str(raw), 0) + 1
    differences = [f"{c}: {found[c]} found, {n} published ({found[c] - n:+d})"
                   for c, n in SGDR_PUBLISHED_COUNTS.items() if found[c] != n]
    total = len(raw_values)
    if total != sum(SGDR_PUBLISHED_COUNTS.values()):
        differences.append(f"total: {total} rows, {sum(SGDR_PUBLISHED_COUNTS.values())} published")
    differences += [f"category code {code!r} ({n} rows) is not one of the four; those rows are skipped"
                    for code, n in unknown.items()]
    if missing:
        differences.append(f"{missing} rows have no category; they are skipped")
    return {"published": dict(SGDR_PUBLISHED_COUNTS), "found": found, "total": total, "unknown_categories": unknown,
            "no_category": missing, "matches_published": not differences, "differences": differences}


def unique_keys(keys: list[str]) -> list[str]:
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

    def checks(self) -> dict:
        """Facts about the data a report must carry (``sgdr_check`` for ReasonSeg-SGDR), {} if none."""
        return {"sgdr_check": self.sgdr_check} if getattr(self, "sgdr_check", None) else {}

    def run_sgdr_check(self) -> dict:
        """Check the categories against ReasonSeg-SGDR's published ones; the result goes in every report (summary
        ``sgdr_check``, a line of the table's notes)."""
        self.sgdr_check = sgdr_check(self.category_values())
        if self.sgdr_check["matches_published"]:
            self.notes.append("SGDR check: the four categories and their counts match the published ones ("
                              + ", ".join(f"{c} {n}" for c, n in SGDR_PUBLISHED_COUNTS.items()) + ")")
        else:
            self.notes.append("SGDR check: differs from the published counts: "
                              + "; ".join(self.sgdr_check["differences"]))
        return self.sgdr_check

    def category_values(self) -> list:
        """The raw category of every row (None where there is none); for the SGDR check."""
        raise NotImplementedError

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
        keys = unique_keys([k for k, *_ in index])
        return [(k, *rest) for k, (_, *rest) in zip(keys, index)]

    def keys(self) -> list[str]:
        if self._index is None:
            self._index = self._build_index()
        return [k for k, *_ in self._index]

    def iter_samples(self, keys: Iterable[str] | None = None) -> Iterator[Sample | SkippedSample]:
        index = self._index if self._index is not None else self._indexed()
        picks = index if keys is None else in_key_order(index, keys, self._positions())
        for key, json_path, image_path, t in picks:
            try:
                yield self._load(key, json_path, image_path, t)
            except InputError as e:
                yield SkippedSample(key, str(e))

    def _indexed(self):
        self.keys()
        return self._index

    def _positions(self) -> dict[str, int]:
        if getattr(self, "_pos", None) is None:
            self._pos = {k: i for i, (k, *_) in enumerate(self._indexed())}
        return self._pos

    def category_values(self) -> list:
        values = []
        for key, json_path, _, t in self._indexed():
            if t:  # one value per annotation file, not per text (--texts all)
                continue
            try:
                anno = _read_json(json_path) if json_path is not None else {}
                values.append(self._category(anno if isinstance(anno, dict) else {}, json_path)[1])
            except InputError:
                values.append(None)
        return values

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
        category, raw = self._category(anno, json_path)
        if self.require_category:
            if category is None:
                raise InputError(f"{json_path.name} has no category (looked for keys {list(self.CATEGORY_KEYS)} and "
                                 f"category folders); pass the key with --columns category=KEY")
            check_sgdr_category(category, raw)
        return Sample(key, texts[t], image, target, _as_bool(anno.get("is_sentence")), category, str(image_path),
                      texts)

    def _category(self, anno: dict, json_path: Path | None) -> tuple[str | None, object]:
        """(normalised category, raw value) from the JSON key, else from a parent folder named after a category."""
        keys = [self.category_key] if self.category_key else list(self.CATEGORY_KEYS)
        for k in keys:
            if anno.get(k) is not None:
                if normalize_category(anno[k]) is not None or self.category_key:
                    return normalize_category(anno[k]), anno[k]
                break
        if not self.category_key and json_path is not None:
            for part in json_path.relative_to(self.folder).parts[:-1][::-1]:
                if normalize_category(part) in SGDR_CATEGORIES:
                    return normalize_category(part), part
        return None, None


def in_key_order(index: list, keys: Iterable[str], positions: dict[str, int]) -> list:
    """The entries of ``index`` for ``keys`` (unknown keys ignored), in dataset order."""
    return [index[i] for i in sorted({positions[k] for k in keys if k in positions})]


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
                 texts: str = "first", require_category: bool = False, targets: bool = True) -> None:
        super().__init__(name, split)
        import pyarrow.parquet as pq  # noqa: F401  (fail early with a clear error)

        if texts not in ("first", "all"):
            raise InputError(f"texts must be 'first' or 'all', got {texts!r}")
        self.files = files
        self.texts = texts
        self.require_category = require_category
        self.targets = targets  # False: images and questions only (rea2seg batch); Sample.target is None
        self.columns = self._resolve_columns(columns or {})
        if not targets:
            self.columns = {r: c for r, c in self.columns.items() if r not in ("mask", "shapes")}
        self._keys: list[str] | None = None
        self._group = None  # (file index, row group index, its table): the last row group read
        self._starts: dict[int, list[int]] = {}  # file index -> first row of each row group
        if self.targets and "mask" in self.columns and "shapes" not in self.columns:
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
        if self.targets and "mask" not in out and "shapes" not in out:
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
            counts = self._text_counts() if self.texts == "all" else [1] * len(ids)
            base = [safe_key(v) if v else f"row{i:05d}" for i, v in enumerate(ids)]
            if self.texts == "all":
                base = [f"{b}__t{t}" for b, c in zip(base, counts) for t in range(c)]
            self._keys = unique_keys(base)
            rows = [(fi, r) for fi, f in enumerate(self.files) for r in range(self._num_rows(fi))]
            self._where = [(fi, r, t) for (fi, r), c in zip(rows, counts) for t in range(c)]
            self._pos = {k: i for i, k in enumerate(self._keys)}
        return self._keys

    def _num_rows(self, fi: int) -> int:
        import pyarrow.parquet as pq

        return pq.ParquetFile(self.files[fi]).metadata.num_rows

    def _text_counts(self) -> list[int]:
        import pyarrow.parquet as pq

        counts = []
        for f in self.files:
            for v in pq.ParquetFile(f).read(columns=[self.columns["text"]]).column(0).to_pylist():
                counts.append(max(1, len(_as_texts(v))))
        return counts

    def category_values(self) -> list:
        import pyarrow.parquet as pq

        if "category" not in self.columns:
            return [None] * sum(self._num_rows(fi) for fi in range(len(self.files)))
        return [v for f in self.files for v in pq.ParquetFile(f).read(columns=[self.columns["category"]])
                .column(0).to_pylist()]

    def iter_samples(self, keys: Iterable[str] | None = None) -> Iterator[Sample | SkippedSample]:
        """Reads only the row groups that hold ``keys``; the mask column goes to numpy through Arrow's buffers."""
        all_keys = self.keys()
        picks = range(len(all_keys)) if keys is None else sorted({self._pos[k] for k in keys if k in self._pos})
        for i in picks:
            fi, r, t = self._where[i]
            key = all_keys[i]
            try:
                row, mask = self._row(fi, r)
                yield self._load(key, row, mask, t, self.files[fi].parent)
            except InputError as e:
                yield SkippedSample(key, str(e))

    def _row(self, fi: int, r: int):
        """Row ``r`` of file ``fi``: (the other columns as Python values, the mask cell as a length-1 Arrow array).
        The last row group read is kept, so neighbouring rows are read once."""
        import bisect

        import pyarrow.parquet as pq

        if fi not in self._starts:
            meta = pq.ParquetFile(self.files[fi]).metadata
            self._starts[fi] = np.cumsum([0] + [meta.row_group(g).num_rows
                                                for g in range(meta.num_row_groups)]).tolist()
        starts = self._starts[fi]
        g = bisect.bisect_right(starts, r) - 1
        if self._group is None or self._group[:2] != (fi, g):
            cols = list(dict.fromkeys(self.columns.values()))
            self._group = (fi, g, pq.ParquetFile(self.files[fi]).read_row_group(g, columns=cols))
        table, i = self._group[2], r - starts[g]
        mask_col = self.columns.get("mask")
        row = table.select([n for n in table.column_names if n != mask_col]).slice(i, 1).to_pylist()[0]
        mask = None
        if mask_col is not None:
            cell = table.column(mask_col).slice(i, 1)
            mask = cell.chunks[0] if cell.num_chunks == 1 else cell.combine_chunks()
        return row, mask

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_group": None}  # the cached row group stays behind (e.g. on the way to a Ray actor)

    def _load(self, key: str, row: dict, mask, t: int, base: Path) -> Sample:
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
            target = mask_from_arrow(mask)
            if target.shape != (h, w):
                raise InputError(f"mask is {target.shape[1]}x{target.shape[0]} but the image is {w}x{h}")
        elif not self.targets:
            target = None
        else:
            raise InputError("no mask or polygons")
        category = None
        if "category" in c:
            raw = row.get(c["category"])
            category = normalize_category(raw)
            if self.require_category:
                if category is None:
                    raise InputError(f"empty category in column {c.get('category')!r}")
                check_sgdr_category(category, raw)
        elif self.require_category:
            raise InputError("no category column")
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
    if isinstance(cell, (list, tuple)):
        _refuse_list_layouts(cell)
    try:
        arr = np.array(cell)
    except Exception:
        raise InputError("mask cell is not a 2-D array") from None
    if arr.dtype == object:
        raise InputError("mask rows have different lengths")
    return lisa_target_from_array(arr)


_ONE_MASK = ("this loader reads one mask per sample (a 2-D array, PNG bytes or one RLE); merge them into one "
             "column first, or point --columns mask=COLUMN at a column that holds one")


def _refuse_list_layouts(cell: Sequence) -> None:
    """A clear error for list-shaped mask cells that are not one 2-D mask: per-instance masks, RLE lists, COCO
    polygons (they would otherwise fail later as "mask must be 2-D" or "rows have different lengths")."""
    if not len(cell):
        raise InputError("mask cell is an empty list")
    first = cell[0]
    if isinstance(first, dict):
        kind = "RLE masks" if "counts" in first else "objects"
        raise InputError(f"mask cell is a list of {len(cell)} {kind} (per-instance annotations); {_ONE_MASK}")
    if isinstance(first, (list, tuple, np.ndarray)) and len(first) and isinstance(first[0], (list, tuple,
                                                                                             np.ndarray)):
        if len(cell) == 1:
            return  # (1, H, W): one mask
        raise InputError(f"mask cell holds {len(cell)} per-instance masks ({len(cell)}x{len(first)}x"
                         f"{len(first[0])}); {_ONE_MASK}")
    if isinstance(first, (list, tuple, np.ndarray)):
        lengths = {len(r) for r in cell}
        values = [v for r in cell[:8] for v in r[:64]]
        fractional = any(isinstance(v, float) and not float(v).is_integer() for v in values)
        if (len(lengths) > 1 or fractional) and all(n % 2 == 0 for n in lengths):
            raise InputError(f"mask cell holds {len(cell)} COCO polygon(s) (flat x,y lists of {sorted(lengths)} "
                             f"numbers), not a mask; convert them to a mask first, or give LabelMe shapes with "
                             f"--columns shapes=COLUMN")
        if len(lengths) > 1:
            raise InputError(f"mask rows have different lengths ({min(lengths)} to {max(lengths)}); a mask cell "
                             f"must be a 2-D array, one row per image row")


def mask_from_arrow(cell) -> np.ndarray:
    """A parquet mask cell as a length-1 Arrow array -> (H, W) uint8 0/1/255 (as ``decode_mask_cell``).

    The published ReasonSeg copies store masks as ``list<list<bool>>`` (``Sequence(Sequence(bool))``): these go to
    numpy through Arrow's buffers (no Python object per pixel). Other layouts are named in the error."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if cell is None:
        raise InputError("mask missing (no mask column)")
    t = cell.type
    if cell.null_count:
        raise InputError("mask missing (empty cell)")
    if _is_list(t) and _is_list(t.value_type):
        leaf = t.value_type.value_type
        rows = cell.flatten()  # the H rows of this one cell
        if _is_list(leaf):
            inner = rows.flatten()
            if len(rows) != 1:
                width = pc.list_value_length(inner)[0].as_py() if len(inner) else 0
                raise InputError(f"mask cell holds {len(rows)} per-instance masks ({len(rows)}x"
                                 f"{len(inner) // len(rows)}x{width}); {_ONE_MASK}")
            return mask_from_arrow(rows)
        if (pa.types.is_boolean(leaf) or pa.types.is_integer(leaf)) and not rows.null_count:
            lengths = pc.list_value_length(rows).to_numpy(zero_copy_only=False)
            if len(lengths) and (lengths == lengths[0]).all() and lengths[0] > 0:
                flat = rows.flatten()
                if not flat.null_count:
                    return lisa_target_from_array(flat.to_numpy(zero_copy_only=False).reshape(len(lengths),
                                                                                               int(lengths[0])))
    elif _is_list(t) and pa.types.is_struct(t.value_type):
        n = len(cell.flatten())
        names = [f.name for f in t.value_type]
        kind = "RLE masks" if "counts" in names else f"objects with fields {', '.join(names)}"
        raise InputError(f"mask cell is a list of {n} {kind} (per-instance annotations); {_ONE_MASK}")
    return decode_mask_cell(cell.to_pylist()[0])


def _is_list(t) -> bool:
    import pyarrow as pa

    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


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


def _name_split(name: str) -> str | None:
    for token in re.split(r"[^a-z]+", name.lower()):
        if token in _SPLIT_TOKENS:
            return "val" if token in ("validation", "valid") else token
    return None


def parquet_copy(path: Path) -> Path:
    """The folder of the dataset copy a parquet file belongs to: ``<copy>/data/<split>-*.parquet`` (the Hugging Face
    layout) or the file's own folder."""
    return path.parent.parent if path.parent.name == "data" else path.parent


def parquet_split(path: Path) -> tuple[str | None, str]:
    """(split, how it was told) of a parquet file. When the files of its copy do not tell splits apart (all one split
    name, or none) and the copy's own folder names a split, the folder decides: Seg-Zero's ReasonSeg copies
    (``Ricky06662/ReasonSeg_val``, ``..._test``) both name their files ``test-*``, so
    ``ReasonSeg_val/data/test-00000-of-00001.parquet`` is val. Otherwise the file name (or its folder) does."""
    copy = parquet_copy(path)
    from_copy = _name_split(copy.name)
    siblings = {_file_split(f) for f in copy.rglob("*.parquet") if parquet_copy(f) == copy}
    if from_copy is not None and len(siblings - {None}) <= 1:
        told = f"from the folder name {copy.name!r}"
        file_split = _file_split(path)
        if file_split and file_split != from_copy:
            told += f" (its files are named {path.name.split('-')[0]}-*: the copy stores its rows under that split " \
                    f"name)"
        return from_copy, told
    return _file_split(path), f"from the file name {path.name!r}"


def choose_parquet_files(root: Path, files: list[Path], split: str | None) -> tuple[list[Path], str | None]:
    """The files of one split of one copy under ``root``; two copies are never merged."""
    told = {f: parquet_split(f) for f in files}
    if split:
        named = [f for f in files if told[f][0] is not None]
        chosen = [f for f in named if told[f][0] in _split_names(split)] if named else files
        if not chosen:
            found = sorted({f"{told[f][0]} ({parquet_copy(f).name})" for f in named})
            raise InputError(f"no parquet files for split {split!r} under {root}; found splits: {', '.join(found)}")
    else:
        splits = sorted({s for s, _ in told.values() if s})
        if len(splits) > 1:
            raise InputError(f"{root} holds several splits ({', '.join(splits)}); choose one with --split")
        chosen, split = files, (splits[0] if splits else None)
    copies = sorted({parquet_copy(f) for f in chosen})
    if len(copies) > 1:
        names = ", ".join(str(c.relative_to(root)) if c != root else "." for c in copies)
        raise InputError(f"{root} holds {len(copies)} copies of split {split or '(unnamed)'!r} ({names}); they are "
                         f"never merged: point at one of them")
    return chosen, split


def _parquet_dataset(files: list[Path], split: str | None, columns, texts: str, sgdr: bool) -> "ParquetDataset":
    copy = parquet_copy(files[0])
    ds = ParquetDataset(files, split, copy.name, columns, texts, sgdr)
    how = parquet_split(files[0])[1] if split and parquet_split(files[0])[0] == split else "as asked (--split)"
    ds.notes.insert(0, f"read the parquet copy {copy} ({len(files)} file(s), {len(ds):,} samples); split "
                       f"{split or '-'} {how}")
    if sgdr:
        ds.run_sgdr_check()
    return ds


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
        return _parquet_dataset([root], split or parquet_split(root)[0], columns, texts, sgdr)
    parquet = sorted(root.rglob("*.parquet"))
    if kind == "parquet" or (kind == "auto" and parquet and not any(root.glob("*.json"))):
        if not parquet:
            raise InputError(f"no .parquet files under {root}")
        return _parquet_dataset(*choose_parquet_files(root, parquet, split), columns, texts, sgdr)
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
    ds = LabelMeDataset(folder, split, texts, category_key, sgdr)
    if sgdr:
        ds.run_sgdr_check()
    return ds
