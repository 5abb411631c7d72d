"""Deliberately wrong versions of three semantic steps of the engine, to show that the testbed's numbers catch them
(``python -m testbed eval --quick --mutant NAME``; docs/TESTBED.md lists what each does to the table).

Each mutant replaces one engine function for the evaluation only: the models stay the ones a correct engine
trained, as a user's published checkpoints are. A mutant's evaluation is written to ``eval-mutant-NAME/``.

* ``yesno-swap``: the scorer reads P(No) as P(Yes) (the Yes and No token ids swapped).
* ``grid-transpose``: the attention over Qwen's image tokens laid out column-major instead of row-major (the heat
  map transposed).
* ``sam-no-transform``: points and boxes handed to SAM in image pixels, without ``ResizeLongestSide``'s scaling to
  SAM's input frame.
"""
from __future__ import annotations

MUTANTS = ("yesno-swap", "grid-transpose", "sam-no-transform")


class _Untransformed:
    """``ResizeLongestSide`` with the coordinate scaling left out (the image itself is still resized)."""

    def __init__(self, inner):
        self.inner = inner

    def apply_coords(self, coords, original_size):
        return coords.copy()

    def apply_boxes(self, boxes, original_size):
        return boxes.copy()

    def __getattr__(self, name):
        return getattr(self.inner, name)


def apply(name: str) -> None:
    """Install mutant ``name`` in this process."""
    if name == "yesno-swap":
        from rea2seg import scoring

        right = scoring._yes_no_ids
        scoring._yes_no_ids = lambda vlm: tuple(reversed(right(vlm)))
    elif name == "grid-transpose":
        from rea2seg.models import attention

        def column_major(per_token, grid_thw, merge):
            t, gh, gw = (int(v) for v in grid_thw)
            h, w = gh // merge, gw // merge
            return per_token.reshape(t, w, h).mean(0).transpose(0, 1)

        attention.token_grid = column_major
    elif name == "sam-no-transform":
        from rea2seg.models.sam import SamModel

        right = SamModel._transform
        SamModel._transform = lambda self: _Untransformed(right(self))
    else:
        raise SystemExit(f"unknown mutant {name!r}; choose one of: {', '.join(MUTANTS)}")
