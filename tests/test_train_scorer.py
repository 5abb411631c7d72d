"""``rea2seg train-scorer`` on tiny random-weight models: the loss falls on what it is shown, adapters save and load,
adapter == merged outputs, a killed run resumes to the same weights, the CLI trains a scorer the pipeline then uses.
(That a trained scorer ranks better than an untrained one is measured on trained models: testbed/.)"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rea2seg.config import ScoringConfig
from rea2seg.models.vlm import load_vlm
from rea2seg.scoring import score_candidates
from rea2seg.train import scorer as trainer
from rea2seg.train.data import example, n_examples, read_export
from rea2seg.train.scorer import TrainConfig, answer_loss, train_scorer


@pytest.fixture(scope="module")
def export(tmp_path_factory, pipeline):
    from rea2seg.eval.datasets import open_dataset
    from rea2seg.eval.export import export_scoring_data
    from test_eval import make_dataset

    root = tmp_path_factory.mktemp("train-export")
    val = make_dataset(root, n=4)
    out = root / "export"
    export_scoring_data(pipeline, open_dataset(val), out, progress=False)
    return out


@pytest.fixture(scope="module")
def base(tiny_paths):
    return str(tiny_paths[0])


def _all_examples(samples, mode="yesno"):
    return [example(s, j, mode, ScoringConfig(mode=mode), 0.5) for s in samples for j in range(n_examples(s, mode))]


def test_examples_are_what_the_scorer_sees(export):
    from rea2seg.scoring import YESNO_PROMPT, candidate_views

    samples = read_export(export)
    s = samples[0]
    image, cands = s.load()
    ex = example(s, 0, "yesno", ScoringConfig(), 0.5)
    view = candidate_views(image, cands, ScoringConfig())[0]
    assert np.array_equal(np.asarray(ex.turn[0]), view), "the view is scoring.candidate_views' render"
    assert ex.turn[1] == YESNO_PROMPT.format(question=s.question)
    assert ex.answer == ("Yes" if s.ious[0] >= 0.5 else "No") and ex.positive == (s.ious[0] >= 0.5)
    comp = example(s, 0, "comparative", ScoringConfig(), 0.5)
    from rea2seg.parsing import parse_comparative
    got = parse_comparative(comp.answer, cands.numbers)
    assert [round(got[i] * 10) for i in range(len(cands))] == list(s.target_scores)
    from rea2seg.parsing import parse_score
    reason = example(s, 0, "reasoning", ScoringConfig(), 0.5)
    assert parse_score(reason.answer) == pytest.approx(s.target_scores[0] / 10)


def test_labels_cover_only_the_answer(export, base):
    vlm = load_vlm(base, device="cpu", shared=False)
    exs = _all_examples(read_export(export))[:3]
    feed, labels, k = trainer.encode_batch(vlm, exs)
    tok = vlm.tokenizer
    for i, ex in enumerate(exs):
        ids = [int(t) for t in labels[i] if t != -100]
        assert tok.decode(ids).startswith(ex.answer)
        assert feed["input_ids"][i, -len(ids):].tolist() == ids, "answers end every (left-padded) row"
    assert feed["attention_mask"].shape == feed["input_ids"].shape


def test_answer_loss_equals_transformers_causal_lm_loss(export, base):
    """The loss on answer tokens equals transformers' own causal-LM loss (which shifts labels itself) on the full
    sequence with only the answer labelled: the positions that predict the answer are the right ones."""
    vlm = load_vlm(base, device="cpu", shared=False)
    for ex in _all_examples(read_export(export))[:3]:
        feed, labels, k = trainer.encode_batch(vlm, [ex])
        full = torch.full_like(feed["input_ids"], -100)
        full[:, -k:] = labels
        with torch.no_grad():
            ref = vlm.model(**feed, labels=full, use_cache=False).loss
            ours = answer_loss(vlm, [ex], torch.ones(1))
        assert float(ours) == pytest.approx(float(ref), rel=1e-5)


def _relabelled(export, tmp_path, right: bool):
    """A copy of the export in which every candidate is right (IoU 0.95, score 10) or every one wrong."""
    import shutil

    out = tmp_path / f"relabelled-{right}"
    shutil.copytree(export, out)
    lines = []
    for line in (out / "samples.jsonl").read_text().splitlines():
        rec = json.loads(line)
        for c in rec.get("candidates", []):
            c["iou"], c["target_score"] = (0.95, 10) if right else (0.05, 1)
        lines.append(json.dumps(rec))
    (out / "samples.jsonl").write_text("\n".join(lines) + "\n")
    return out


def _mean_score(vlm, samples) -> float:
    scores = []
    for s in samples:
        image, cands = s.load()
        scores += score_candidates(vlm, image, s.question, cands).scores.tolist()
    return float(np.mean(scores))


def test_full_finetune_learns_what_inference_reads(export, base, tmp_path):
    """Trained to answer the opposite of what the untrained model prefers, the scorer then says so through
    scoring.score_candidates (the inference path: the last prompt token's Yes vs No logits): the training targets,
    their positions and the Yes/No ids match inference. (Ranking better than untrained: measured in testbed/.)"""
    vlm = load_vlm(base, device="cpu", shared=False)
    samples = read_export(export)
    untrained = _mean_score(vlm, samples)
    right = untrained < 0.5  # teach the other answer
    data = _relabelled(export, tmp_path, right)
    exs = _all_examples(read_export(data))
    w = torch.ones(len(exs))
    with torch.no_grad():
        before = float(answer_loss(vlm, exs, w))
    summary = train_scorer(base, data, tmp_path / "run", TrainConfig(method="full", epochs=4, lr=1e-2,
                                                                     batch_size=4, val_fraction=0.0),
                           val_dir=data, device="cpu", progress=False, log=lambda *a: None)
    trained = load_vlm(summary["scorer"], device="cpu", shared=False)
    with torch.no_grad():
        after = float(answer_loss(trained, exs, w))
    assert after < 0.5 * before, (before, after)
    score = _mean_score(trained, samples)
    assert (score > 0.8) if right else (score < 0.2), (untrained, score)
    assert summary["last_epoch"]["validation"]["yes_accuracy"] == 1.0
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert len(log) == 4 and log[-1]["train_loss"] < log[0]["train_loss"]
    info = json.loads((tmp_path / "run" / "scorer" / "rea2seg_scorer.json").read_text())
    assert info["method"] == "full" and info["mode"] == "yesno"


def test_lora_adapter_saves_loads_and_equals_merged(export, base, tmp_path):
    summary = train_scorer(base, export, tmp_path / "run", TrainConfig(method="lora", epochs=2, lr=5e-3,
                                                                       lora_r=4, val_fraction=0.5),
                           device="cpu", merge=True, progress=False, log=lambda *a: None)
    adapter_dir = tmp_path / "run" / "scorer"
    assert (adapter_dir / "adapter_config.json").is_file() and not (adapter_dir / "model.safetensors").exists()
    assert summary["last_epoch"]["validation"]["samples"] > 0
    assert 0 <= summary["last_epoch"]["validation"]["ranking_accuracy"] <= 1
    adapter = load_vlm(str(adapter_dir), device="cpu", shared=False)
    merged = load_vlm(summary["merged"], device="cpu", shared=False)
    plain = load_vlm(base, device="cpu", shared=False)
    s = read_export(export)[0]
    image, cands = s.load()
    a = score_candidates(adapter, image, s.question, cands).scores
    m = score_candidates(merged, image, s.question, cands).scores
    p = score_candidates(plain, image, s.question, cands).scores
    assert np.allclose(a, m, atol=1e-5), "adapter and merged scorers answer alike"
    assert not np.allclose(a, p, atol=1e-4), "the adapter changed the scorer"


def test_killed_run_resumes_to_the_same_weights(export, base, tmp_path, monkeypatch):
    cfg = TrainConfig(method="full", epochs=1, lr=1e-3, batch_size=2, val_fraction=0.0, checkpoint_every=1)
    whole = train_scorer(base, export, tmp_path / "whole", cfg, device="cpu", progress=False, log=lambda *a: None)
    real = trainer.answer_loss
    calls = {"n": 0}

    def dies_on_the_third(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(trainer, "answer_loss", dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        train_scorer(base, export, tmp_path / "cut", cfg, device="cpu", progress=False, log=lambda *a: None)
    assert (tmp_path / "cut" / "checkpoint" / "position.json").is_file()
    monkeypatch.setattr(trainer, "answer_loss", real)
    messages = []
    resumed = train_scorer(base, export, tmp_path / "cut", cfg, device="cpu", progress=False, log=messages.append)
    assert any("resuming" in m for m in messages) and resumed["steps"] == whole["steps"]
    from safetensors.torch import load_file
    a = load_file(str(tmp_path / "whole" / "scorer" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "scorer" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_cli_trains_a_scorer_the_pipeline_uses(export, tiny_paths, tmp_path, capsys):
    from rea2seg import Rea2Seg
    from rea2seg.cli.main import main

    vlm_dir, sam_path = tiny_paths
    out = tmp_path / "cli"
    assert main(["train-scorer", str(export), "--out", str(out), "--base", str(vlm_dir), "--method", "lora",
                 "--lora-r", "4", "--epochs", "1", "--quiet", "--json", "--device", "cpu"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    pipe = Rea2Seg.from_pretrained(str(vlm_dir), str(sam_path), scorer=summary["scorer"], device="cpu")
    assert pipe.scorer is not pipe.vlm and pipe.status()["scorer"] == summary["scorer"]
    result = pipe.segment(np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(
        next((export / "images").iterdir())).convert("RGB")), "the bright box")
    assert result.mode == "yesno" and result.mask.ndim == 2
    # a second run with the same settings resumes (nothing left to do); other settings are refused
    assert main(["train-scorer", str(export), "--out", str(out), "--base", str(vlm_dir), "--method", "lora",
                 "--lora-r", "4", "--epochs", "1", "--quiet", "--device", "cpu"]) == 0
    assert main(["train-scorer", str(export), "--out", str(out), "--base", str(vlm_dir), "--epochs", "3",
                 "--quiet"]) == 2
    assert "different settings" in capsys.readouterr().err


def test_trained_scorer_loads_in_the_agent_doors(export, base, tmp_path):
    """--scorer in the MCP server's command line and scorer= in the LangChain toolkit load a train-scorer output
    (here a LoRA adapter), with the scoring settings it was trained with."""
    from mcp_server.cli import build_parser, check_args, pipeline_factory
    from rea2seg_tools import Rea2SegToolkit

    summary = train_scorer(base, export, tmp_path / "run", TrainConfig(method="lora", lora_r=4, epochs=1,
                                                                       val_fraction=0.0),
                           device="cpu", progress=False, log=lambda *a: None)
    parser = build_parser()
    args = parser.parse_args(["--preset", "tiny-random", "--scorer", summary["scorer"], "--device", "cpu"])
    check_args(parser, args)
    pipe = pipeline_factory(args)()
    assert pipe.status()["scorer"] == summary["scorer"] and pipe.config.scoring.mode == "yesno"
    kit = Rea2SegToolkit(preset="tiny-random", scorer=summary["scorer"], device="cpu")
    assert kit.pipeline.scorer.source == summary["scorer"]
