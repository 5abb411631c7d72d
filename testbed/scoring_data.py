"""The scorer's training data: the mask-scoring export the engine writes (``rea2seg.eval.export_scoring_data``,
i.e. ``rea2seg eval WORLD/train --export-scoring DIR``) of discovery's candidates on training scenes, optionally
followed by synthetic hard candidates written in the very same format (``export.sample_record`` /
``export.sample_files``: same record, same files, same views), so ``rea2seg train-scorer`` reads both alike."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import supervision as sup
from . import world


def synthetic_candidates(rng, sc: world.Scene) -> tuple[np.ndarray, list[str]]:
    """Hard candidates for one scene: the target, the other objects the question names (the instances a scorer must
    tell apart), a part of the target and a loose box or group around the target or a named object."""
    masks, sources = [sc.masks[sc.target].copy()], ["synthetic:target"]
    for j in sc.attention:
        if j != sc.target:
            masks.append(sc.masks[j].copy())
            sources.append("synthetic:named")
    masks.append(sup.part_of(rng, sc, sc.target))
    sources.append("synthetic:part")
    focus = sc.attention[int(rng.integers(len(sc.attention)))]
    m, kind = sup.candidate_like(rng, sc, focus, str(rng.choice(["box", "group"])))
    masks.append(m)
    sources.append(f"synthetic:{kind}")
    order = rng.permutation(len(masks))
    return np.stack([masks[i] for i in order]), [sources[i] for i in order]


def append_synthetic(export_dir: Path, n: int, stage: int, start: int, seed: int) -> int:
    """Append ``n`` synthetic samples (training scenes ``start ..``) to the export in ``export_dir``; returns the
    number of candidates written."""
    from rea2seg.config import ScoringConfig
    from rea2seg.eval.datasets import Sample
    from rea2seg.eval.export import sample_files, sample_record, scorer_prompts
    from rea2seg.render import candidate_sheet
    from rea2seg.scoring import candidate_views
    from rea2seg.types import Candidates

    rng = np.random.default_rng([seed, 4242])
    n_cands = 0
    with open(export_dir / "samples.jsonl", "a") as log:
        for i in range(start, start + n):
            sc = world.scene("train", i, stage)
            masks, sources = synthetic_candidates(rng, sc)
            cands = Candidates.from_masks(masks, sources)
            sample = Sample(f"synthetic_{i:06d}", sc.question, sc.image, sc.gt.astype(np.uint8), False, sc.category,
                            texts=[sc.question])
            views = candidate_views(sc.image, cands, ScoringConfig())
            files = sample_files(sample, cands, views, candidate_sheet(sc.image, cands))
            for rel, data in files.items():
                (export_dir / rel).write_bytes(data)
            rec = sample_record(sample, cands)
            rec["prompts"] = scorer_prompts(sc.question, cands.numbers)
            log.write(json.dumps(rec) + "\n")
            n_cands += len(cands)
    return n_cands
