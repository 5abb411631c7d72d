"""The recipes: every setting of a build, in one frozen object per preset. A build is cached under a hash of its
recipe and of the testbed's own source (``build_dir``)."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .sam import SamConfig
from .vlm import PretrainConfig, VlmArch

#: Bump when a build's layout changes in a way the source hash would not show.
LAYOUT = 1
#: Scene indices of the training split used by each consumer (disjoint: pretraining draws from 0 upwards).
EXPORT_START, SYNTHETIC_START = 500_000, 900_000


@dataclass(frozen=True)
class ScorerRecipe:
    """``rea2seg train-scorer`` settings (``TrainConfig``) for the testbed's scorer."""

    lr: float = 1e-3
    batch_size: int = 16
    epochs: int = 4
    max_steps: int | None = None
    freeze_vision: bool = True
    yes_threshold: float = 0.5
    seed: int = 0


@dataclass(frozen=True)
class Recipe:
    name: str
    stage: int  # the question stages the VLM, the export and the test set use (1-4)
    sam: SamConfig
    vlm: PretrainConfig
    arch: VlmArch = field(default_factory=VlmArch)
    export_n: int = 200  # training scenes run through discovery for the mask-scoring export
    synthetic_n: int = 0  # extra training scenes with synthetic hard candidates, in the export's format
    scorer: ScorerRecipe = field(default_factory=ScorerRecipe)
    test_n: int = 150
    seed: int = 0

    def with_seed(self, seed: int) -> "Recipe":
        """The same recipe with every random stream moved (to check a result is not one seed's luck)."""
        return dataclasses.replace(self, seed=seed, sam=dataclasses.replace(self.sam, seed=seed),
                                   vlm=dataclasses.replace(self.vlm, seed=seed),
                                   scorer=dataclasses.replace(self.scorer, seed=seed))

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


RECIPES = {
    # CI: stages 1-2 (attribute and size questions); ~13 min on an idle 2-core machine
    "quick": Recipe("quick", stage=2, sam=SamConfig(steps=260),
                    vlm=PretrainConfig(steps=700, stage=2, verify_steps=800, verify_lr=2e-3),
                    export_n=200, synthetic_n=0, scorer=ScorerRecipe(epochs=10), test_n=150),
    # the full table in docs/TESTBED.md: stages 1-4
    "full": Recipe("full", stage=4, sam=SamConfig(steps=600),
                   vlm=PretrainConfig(steps=2000, stage=4, verify_steps=1600, verify_lr=2e-3),
                   export_n=600, synthetic_n=0, scorer=ScorerRecipe(epochs=6), test_n=400),
}


#: The testbed's files that shape what a build trains (reporting and the mutants do not).
BUILD_SOURCES = ("build.py", "recipe.py", "sam.py", "scoring_data.py", "supervision.py", "vlm.py", "world.py")


def source_hash() -> str:
    """The testbed's own training code: a change to it is a new recipe. (The engine's code is not hashed: after
    changing discovery, export or train-scorer, rebuild with ``--force``.)"""
    h = hashlib.sha256()
    for p in (Path(__file__).parent / name for name in BUILD_SOURCES):
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def recipe_hash(recipe: Recipe) -> str:
    text = json.dumps({"recipe": recipe.to_json(), "source": source_hash(), "layout": LAYOUT}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def testbed_home() -> Path:
    """$REA2SEG_TESTBED_DIR, else ~/.cache/rea2seg/testbed."""
    env = os.environ.get("REA2SEG_TESTBED_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rea2seg" / "testbed"


def build_dir(recipe: Recipe) -> Path:
    return testbed_home() / f"{recipe.name}-{recipe_hash(recipe)}"


def recipe_from_json(d: dict) -> Recipe:
    """The inverse of ``Recipe.to_json``."""
    return Recipe(**{**d, "sam": SamConfig(**d["sam"]), "vlm": PretrainConfig(**d["vlm"]),
                     "arch": VlmArch(**d["arch"]), "scorer": ScorerRecipe(**d["scorer"])})
