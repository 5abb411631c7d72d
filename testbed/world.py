"""The synthetic world: flat shapes with exact masks, and questions that grow by stage.

    stage 1  attribute      "the blue square", "the square", "the green shape"       (unique by colour and/or shape)
    stage 2  size           "the smaller blue square", "the largest triangle"        (compare the matching instances)
    stage 3  position       "the leftmost green shape", "the second triangle from the left"
    stage 4  SGDR-like      discriminative: "the dark triangle that blends into the background" (camouflage),
                            "the thin bar" (thin structure); geometric: "the shape with three corners";
                            spatial: "the shape left of the blue square"; multi-step: "the circle with the same
                            colour as the square"

A scene is 224 x 224 RGB: a dark background with noise and 3-6 non-overlapping shapes. Every shape is a polygon with
integer vertices and its mask is LISA's rasterisation of that polygon (``rea2seg.eval.rasterize``), so the ground
truth ``rea2seg eval`` reads back from the LabelMe JSON is the very mask the image was painted with.

Every sample carries, besides the question and the target, its *attention set*: the objects whose attributes the
question names (for "the smaller blue square": both blue squares). That is what a real MLLM's attention finds (the
category, ambiguous among instances); resolving the ambiguity is the scorer's job. Splits are seeded: sample ``i`` of a
split draws from ``numpy.random.default_rng([SPLIT_SEEDS[split], i])``.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

S = 224  # image side: 8 x 8 merged VLM tokens (patch 14, merge 2); the testbed SAM resizes to 256
BG = (45, 45, 50)
NOISE = 3.0
#: No red, orange or pink: the scorer's highlight is red (``rea2seg.render.HIGHLIGHT``, named in the yes/no prompt),
#: and a red fill and outline on a red object are nearly invisible (docs/TESTBED.md).
COLOURS = {"green": (40, 180, 60), "blue": (40, 90, 235), "yellow": (235, 210, 40), "purple": (150, 60, 200),
           "cyan": (60, 215, 225), "white": (235, 235, 235)}
CAMO = {"gray": (70, 70, 76)}  # close to the background: the camouflaged objects of stage 4
COLOUR_NAMES = list(COLOURS)
ALL_COLOURS = COLOUR_NAMES + list(CAMO)
SHAPES = ["circle", "square", "triangle"]
ALL_SHAPES = SHAPES + ["bar"]
SPLIT_SEEDS = {"train": 1001, "val": 2002, "test": 3003}
SMALL, LARGE = (19, 23), (28, 34)  # half-size ranges (pixels) of the two size classes
TRI = 1.3  # triangles get a larger half-size so their area is comparable with a circle's
MIN_GAP = 10  # pixels between shapes (bounding boxes)

#: question type -> (stage it enters, category written to the JSON; SGDR's names for stage 4)
QTYPES = {"attr": (1, "Attribute"), "size": (2, "Size"), "position": (3, "Position"),
          "camo": (4, "Discriminative"), "thin": (4, "Discriminative"), "geometric": (4, "Geometric"),
          "spatial": (4, "Spatial"), "multistep": (4, "Multi-step")}


def qtypes_for(stage: int) -> list[str]:
    """The question types of ``stage`` and every stage before it."""
    return [q for q, (s, _) in QTYPES.items() if s <= stage]


# ---- shapes -------------------------------------------------------------------------------------------------------------

def _offsets(shape: str, r: int) -> np.ndarray:
    """Integer polygon vertices of ``shape`` of half-size ``r`` around (0, 0)."""
    if shape == "circle":
        t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
        pts = np.stack([r * np.cos(t), r * np.sin(t)], 1)
    elif shape == "square":
        pts = np.array([[-r, -r], [r, -r], [r, r], [-r, r]], float)
    elif shape == "triangle":
        pts = np.array([[0, -r], [r, r], [-r, r]], float)
    elif shape == "bar":  # thin: 6 px wide, 2r + 24 long, horizontal or vertical is set by the caller's sign of r
        h, w = 3, abs(r) + 12
        pts = np.array([[-w, -h], [w, -h], [w, h], [-w, h]], float)
        if r < 0:
            pts = pts[:, ::-1]
    else:
        raise ValueError(shape)
    return np.rint(pts).astype(np.int64)


@functools.lru_cache(maxsize=512)
def _canonical_mask(shape: str, r: int) -> tuple[np.ndarray, int, int]:
    """The rasterised polygon around (0, 0), cropped to its pixels: (crop, x of its left column, y of its top row).
    Masks at other integer centres are shifts of it (LISA's rasterisation is translation invariant for integer shifts
    away from the image border)."""
    from rea2seg.eval.rasterize import rasterize_polygon

    c = 64
    full = rasterize_polygon(_offsets(shape, r) + c, 2 * c, 2 * c)
    ys, xs = np.nonzero(full.any(1))[0], np.nonzero(full.any(0))[0]
    return full[ys[0]:ys[-1] + 1, xs[0]:xs[-1] + 1], int(xs[0]) - c, int(ys[0]) - c


@dataclass
class Obj:
    colour: str
    shape: str
    size: str  # "small" | "large"
    cx: int
    cy: int
    r: int  # half-size (signed for bars: negative = vertical)

    @property
    def polygon(self) -> np.ndarray:
        """(K, 2) integer xy vertices."""
        return _offsets(self.shape, self.r) + np.array([self.cx, self.cy])

    @property
    def half_extent(self) -> tuple[int, int]:
        """Half width and half height of the bounding box."""
        p = _offsets(self.shape, self.r)
        return int(np.abs(p[:, 0]).max()), int(np.abs(p[:, 1]).max())

    def mask(self, size: int = S) -> np.ndarray:
        crop, x0, y0 = _canonical_mask(self.shape, self.r)
        out = np.zeros((size, size), bool)
        y, x = self.cy + y0, self.cx + x0  # placement keeps every shape inside the image
        out[y:y + crop.shape[0], x:x + crop.shape[1]] = crop
        return out

    def to_json(self) -> dict:
        return {"colour": self.colour, "shape": self.shape, "size": self.size, "cx": self.cx, "cy": self.cy,
                "r": self.r}


@dataclass
class Scene:
    """One sample: the image, the objects (with masks), the question, the target's index, the attention set, the
    question type and the objects' masks ``masks`` (N, S, S)."""

    image: np.ndarray
    objects: list[Obj]
    masks: np.ndarray
    question: str
    target: int
    attention: list[int]
    qtype: str

    @property
    def gt(self) -> np.ndarray:
        return self.masks[self.target]

    @property
    def category(self) -> str:
        return QTYPES[self.qtype][1]

    def id_map(self) -> np.ndarray:
        """(S, S) int16: the object index at each pixel, -1 for background."""
        m = np.full((S, S), -1, np.int16)
        for i, mk in enumerate(self.masks):
            m[mk] = i
        return m


# ---- placement and rendering ----------------------------------------------------------------------------------------

def _half_size(rng, shape: str, size: str) -> int:
    lo, hi = SMALL if size == "small" else LARGE
    r = int(rng.integers(lo, hi + 1))
    if shape == "triangle":
        r = int(round(r * TRI))
    if shape == "bar":
        r = r if rng.random() < 0.5 else -r
    return r


def place(rng, specs: list[tuple[str, str, str]], max_tries: int = 300) -> list[Obj] | None:
    """(colour, shape, size) specs -> objects at integer centres, bounding boxes at least ``MIN_GAP`` apart; None if
    they do not fit."""
    objs: list[Obj] = []
    for colour, shape, size in specs:
        r = _half_size(rng, shape, size)
        hw, hh = Obj(colour, shape, size, 0, 0, r).half_extent
        for _ in range(max_tries):
            cx, cy = int(rng.integers(hw + 3, S - hw - 3)), int(rng.integers(hh + 3, S - hh - 3))
            if all(abs(cx - o.cx) > hw + o.half_extent[0] + MIN_GAP or abs(cy - o.cy) > hh + o.half_extent[1] + MIN_GAP
                   for o in objs):
                break
        else:
            return None
        objs.append(Obj(colour, shape, size, cx, cy, r))
    return objs


def render(objs: list[Obj], masks: np.ndarray, rng) -> np.ndarray:
    img = np.empty((S, S, 3), np.float32)
    img[:] = BG
    img += rng.normal(0, NOISE, size=(S, S, 1))
    for o, m in zip(objs, masks):
        img[m] = COLOURS.get(o.colour) or CAMO[o.colour]
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# ---- questions: each maker returns (specs, question, target index, attention set) or a resolver ---------------------

def _pick(rng, xs):
    return xs[int(rng.integers(len(xs)))]


def _size(rng) -> str:
    return _pick(rng, ["small", "large"])


def _spec(rng, avoid=frozenset(), colours=None, shapes=None, size=None):
    colours, shapes = colours or COLOUR_NAMES, shapes or SHAPES
    for _ in range(200):
        c, s = _pick(rng, colours), _pick(rng, shapes)
        if (c, s) not in avoid:
            return c, s, size or _size(rng)
    raise RuntimeError("no object fits the constraints")


def _fillers(rng, n: int, avoid: set) -> list:
    """``n`` objects whose (colour, shape) is not in ``avoid``; many share a colour or a shape with an avoided one
    (so neither attribute alone identifies the target)."""
    out, av = [], sorted(avoid)
    for _ in range(n):
        u = rng.random()
        if av and u < 0.3:
            out.append(_spec(rng, avoid, colours=[_pick(rng, av)[0]]))
        elif av and u < 0.6:
            out.append(_spec(rng, avoid, shapes=[_pick(rng, av)[1]]))
        else:
            out.append(_spec(rng, avoid))
    return out


def _q_attr(rng):
    c, s = _pick(rng, COLOUR_NAMES), _pick(rng, SHAPES)
    form = _pick(rng, ["cs", "cs", "s", "c"])
    n = int(rng.integers(2, 5))
    if form == "cs":
        return [(c, s, _size(rng))] + _fillers(rng, n, {(c, s)}), f"the {c} {s}", 0, [0]
    if form == "s":
        return ([(c, s, _size(rng))] + [_spec(rng, shapes=[x for x in SHAPES if x != s]) for _ in range(n)],
                f"the {s}", 0, [0])
    return ([(c, s, _size(rng))] + [_spec(rng, colours=[x for x in COLOUR_NAMES if x != c]) for _ in range(n)],
            f"the {c} shape", 0, [0])


def _q_size(rng):
    c, s = _pick(rng, COLOUR_NAMES), _pick(rng, SHAPES)
    big = bool(rng.integers(2))
    if rng.random() < 0.6:  # two of a kind, one small one large
        specs = [(c, s, "large" if big else "small"), (c, s, "small" if big else "large")]
        specs += _fillers(rng, int(rng.integers(1, 4)), {(c, s)})
        return specs, f"the {'larger' if big else 'smaller'} {c} {s}", 0, [0, 1]
    k = int(rng.integers(2, 4))  # the largest / smallest of 2-3 of a shape
    cols = [str(x) for x in rng.choice(COLOUR_NAMES, size=k, replace=False)]
    specs = [(cols[0], s, "large" if big else "small")] + [(cols[i], s, "small" if big else "large")
                                                           for i in range(1, k)]
    specs += [_spec(rng, shapes=[x for x in SHAPES if x != s]) for _ in range(int(rng.integers(1, 3)))]
    return specs, f"the {'largest' if big else 'smallest'} {s}", 0, list(range(k))


EXTREMES = {"leftmost": (0, 1), "rightmost": (0, -1), "topmost": (1, 1), "bottommost": (1, -1)}


def _q_position(rng):
    c, s = _pick(rng, COLOUR_NAMES), _pick(rng, SHAPES)
    by_colour = rng.random() < 0.5
    ordinal = rng.random() < 0.35
    k = int(rng.integers(3, 5)) if ordinal else int(rng.integers(2, 4))
    if by_colour:
        matches = [(c, _pick(rng, SHAPES), _size(rng)) for _ in range(k)]
        others = [_spec(rng, colours=[x for x in COLOUR_NAMES if x != c]) for _ in range(int(rng.integers(1, 3)))]
        noun = f"{c} shape"
    else:
        matches = [(str(x), s, _size(rng)) for x in rng.choice(COLOUR_NAMES, size=k, replace=False)]
        others = [_spec(rng, shapes=[x for x in SHAPES if x != s]) for _ in range(int(rng.integers(1, 3)))]
        noun = s
    if ordinal:
        side = _pick(rng, ["left", "right"])
        return matches + others, f"the second {noun} from the {side}", (0, 1 if side == "left" else -1, 1), \
            list(range(k))
    word = _pick(rng, list(EXTREMES))
    return matches + others, f"the {word} {noun}", (*EXTREMES[word], 0), list(range(k))


def _resolve_position(objs: list[Obj], key, members: list[int], margin: int = 14) -> int | None:
    """The member at ``rank`` along the axis, if its neighbours in that order are at least ``margin`` px away."""
    axis, sign, rank = key
    coord = np.array([(objs[i].cx if axis == 0 else objs[i].cy) * sign for i in members], float)
    order = np.argsort(coord)
    vals = coord[order]
    if rank + 1 < len(vals) and vals[rank + 1] - vals[rank] < margin:
        return None
    if rank > 0 and vals[rank] - vals[rank - 1] < margin:
        return None
    return members[int(order[rank])]


RELATIONS = {"left of": (0, -1), "right of": (0, 1), "above": (1, -1), "below": (1, 1)}


def _q_spatial(rng):
    ac, ash = _pick(rng, COLOUR_NAMES), _pick(rng, SHAPES)
    rel = _pick(rng, list(RELATIONS))
    specs = [_spec(rng, {(ac, ash)}), (ac, ash, "large")] + _fillers(rng, int(rng.integers(1, 3)), {(ac, ash)})
    return specs, f"the shape {rel} the {ac} {ash}", rel, [0, 1]


def _resolve_spatial(objs: list[Obj], rel: str) -> int | None:
    """Object 0 must be the only object clearly on the ``rel`` side of the anchor (object 1), within its band."""
    axis, sign = RELATIONS[rel]
    a = objs[1]

    def on_side(o: Obj) -> bool:
        d = ((o.cx - a.cx) if axis == 0 else (o.cy - a.cy)) * sign
        perp = abs((o.cy - a.cy) if axis == 0 else (o.cx - a.cx))
        return d > abs(a.r) + abs(o.r) * 0.5 and perp < abs(a.r) + abs(o.r)

    if not on_side(objs[0]) or any(on_side(o) for o in objs[2:]):
        return None
    return 0


def _q_multistep(rng):
    ts, rs = (str(x) for x in rng.choice(SHAPES, size=2, replace=False))
    c, c2 = (str(x) for x in rng.choice(COLOUR_NAMES, size=2, replace=False))
    third = [x for x in SHAPES if x not in (ts, rs)][0]
    specs = [(c, ts, _size(rng)), (c, rs, _size(rng)), (c2, ts, _size(rng))]
    specs += [(_pick(rng, COLOUR_NAMES), third, _size(rng)) for _ in range(int(rng.integers(0, 2)))]
    return specs, f"the {ts} with the same colour as the {rs}", 0, [0, 2]


def _q_geometric(rng):
    s = _pick(rng, SHAPES)
    desc = {"circle": "the round shape", "square": "the shape with four corners",
            "triangle": "the shape with three corners"}[s]
    specs = [(_pick(rng, COLOUR_NAMES), s, _size(rng))]
    specs += [_spec(rng, shapes=[x for x in SHAPES if x != s]) for _ in range(int(rng.integers(2, 4)))]
    return specs, desc, 0, [0]


def _q_camo(rng):
    s = _pick(rng, SHAPES)
    specs = [("gray", s, "large")] + [_spec(rng) for _ in range(int(rng.integers(2, 4)))]
    return specs, f"the dark {s} that blends into the background", 0, None  # attention: every shape named s


def _q_thin(rng):
    c = _pick(rng, COLOUR_NAMES)
    specs = [(c, "bar", "large")] + [_spec(rng) for _ in range(int(rng.integers(2, 4)))]
    return specs, _pick(rng, ["the thin bar", f"the thin {c} bar"]), 0, [0]


MAKERS = {"attr": _q_attr, "size": _q_size, "position": _q_position, "spatial": _q_spatial,
          "multistep": _q_multistep, "geometric": _q_geometric, "camo": _q_camo, "thin": _q_thin}


def make_scene(rng, qtype: str) -> Scene:
    for _ in range(100):
        specs, question, key, attention = MAKERS[qtype](rng)
        objs = place(rng, specs)
        if objs is None:
            continue
        if qtype == "position":
            target = _resolve_position(objs, key, attention)
        elif qtype == "spatial":
            target = _resolve_spatial(objs, key)
        else:
            target = key
        if target is None:
            continue
        if attention is None:  # camouflage: the question names the shape
            attention = [i for i, o in enumerate(objs) if o.shape == objs[0].shape]
        perm = rng.permutation(len(objs))  # drawing order: the target is not always object 0
        inv = np.argsort(perm)
        objs = [objs[i] for i in perm]
        masks = np.stack([o.mask() for o in objs])
        return Scene(render(objs, masks, rng), objs, masks, question, int(inv[target]),
                     sorted(int(inv[i]) for i in attention), qtype)
    raise RuntimeError(f"could not make a {qtype} scene")


def scene(split: str, i: int, stage: int = 2, qtypes: list[str] | None = None) -> Scene:
    """Sample ``i`` of ``split`` (seeded): its question type is drawn uniformly from the stage's types."""
    rng = np.random.default_rng([SPLIT_SEEDS[split], i])
    types = qtypes or qtypes_for(stage)
    return make_scene(rng, _pick(rng, types))


# ---- ReasonSeg layout ---------------------------------------------------------------------------------------------

def scene_json(sc: Scene, name: str) -> dict:
    """LISA's ReasonSeg annotation (LabelMe): the target polygon labelled "target", the question as ``text``, plus
    the category and the testbed's own facts (objects, target, attention set) under ``testbed``."""
    o = sc.objects[sc.target]
    return {"version": "testbed", "imagePath": f"{name}.png", "imageHeight": S, "imageWidth": S,
            "text": [sc.question], "is_sentence": False, "category": sc.category,
            "shapes": [{"label": "target", "shape_type": "polygon", "points": o.polygon.tolist()}],
            "testbed": {"qtype": sc.qtype, "target": sc.target, "attention": sc.attention,
                        "objects": [x.to_json() for x in sc.objects]}}


def write_split(out_dir: str | Path, split: str, n: int, stage: int, start: int = 0,
                qtypes: list[str] | None = None) -> Path:
    """Write samples ``start .. start + n - 1`` of ``split`` to ``out_dir/<split>/`` in LISA's ReasonSeg layout
    (``<name>.png`` + ``<name>.json``; PNG, not JPEG: the pixels stay exact). Returns the split folder."""
    from PIL import Image

    folder = Path(out_dir) / split
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        sc = scene(split, i, stage, qtypes)
        name = f"{split}_{i:06d}"
        Image.fromarray(sc.image).save(folder / f"{name}.png")
        (folder / f"{name}.json").write_text(json.dumps(scene_json(sc, name)))
    return folder


def corpus() -> list[str]:
    """Every question form (the tokenizer is trained on these, the pipeline's prompts and the chat words)."""
    qs = []
    for c in ALL_COLOURS:
        for s in SHAPES + ["shape", "bar"]:
            qs += [f"the {c} {s}", f"the smaller {c} {s}", f"the larger {c} {s}", f"the thin {c} {s}"]
            qs += [f"the {w} {c} {s}" for w in EXTREMES]
            qs += [f"the second {c} {s} from the {side}" for side in ("left", "right")]
    for s in SHAPES:
        qs += [f"the {s}", f"the largest {s}", f"the smallest {s}", f"the second {s} from the left",
               f"the second {s} from the right", f"the dark {s} that blends into the background"]
        qs += [f"the {w} {s}" for w in EXTREMES]
        qs += [f"the shape {r} the {c} {s}" for r in RELATIONS for c in COLOUR_NAMES]
        qs += [f"the {s} with the same colour as the {s2}" for s2 in SHAPES if s2 != s]
    qs += ["the round shape", "the shape with four corners", "the shape with three corners", "the thin bar"]
    return qs
