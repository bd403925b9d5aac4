"""It learns: ``poseforge train --config smoke`` then ``poseforge eval`` on a fresh run folder.

The smoke preset trains a small ViTPose on cached synthetic people on the CPU in under 3 minutes; its
held-out set is rendered with another seed. Floors were set from measured runs with a wide margin
(see the preset and benchmarks/RESULTS.md).
"""
from __future__ import annotations

import json

import pytest

from poseforge.cli import main
from poseforge.evaluation.evaluator import model_height_error

# Held-out AP floor of the full smoke run: 0.037 measured with the SimCC decode window (2-core CPU, 2.0 minutes;
# 0.027 with the plain argmax); the untrained network scores 0.
AP_FLOOR = 0.015


def _records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _best_ap(run) -> float:
    return max(r["AP"] for r in _records(run) if r["kind"] == "val")


def _table_ap(text: str) -> float:
    lines = [line for line in text.splitlines() if line.strip()]
    header = next(i for i, line in enumerate(lines) if line.split()[:1] == ["AP"])
    return float(lines[header + 2].split()[0])


def _check_run(run, capsys):
    import torch

    from poseforge.models import load_model
    from poseforge.models import build_model
    from poseforge.train.config import load_config
    from poseforge.train.data import build_val_sets

    records = _records(run)
    losses = [r["loss"] for r in records if r["kind"] == "train"]
    vals = [r for r in records if r["kind"] == "val"]
    assert losses[-1] < 0.7 * losses[0], losses
    assert vals and all(0.0 <= v["AP"] <= 1.0 for v in vals), vals
    # held-out people: the trained model localizes far better than the same network untrained
    trained = load_model(run / "best").eval()
    (validation,) = build_val_sets(load_config(run / "config.yaml"), trained)
    val = validation.data
    torch.manual_seed(0)
    untrained = build_model(trained.config).eval()
    assert model_height_error(trained, val) < 0.6 * model_height_error(untrained, val)
    capsys.readouterr()
    assert main(["eval", "--model", str(run), "--data", "synthetic", "--workers", "0"]) == 0
    # the same held-out set and model (the table prints 4 decimals)
    assert _table_ap(capsys.readouterr().out) == pytest.approx(_best_ap(run), abs=5e-5)


def test_smoke_preset_learns(tmp_path, capsys):
    """The whole smoke preset, as a user runs it: its loss falls, its held-out AP clears the floor, and
    ``poseforge eval`` reproduces the AP; ``--export`` ships the best model."""
    run = tmp_path / "smoke"
    shipped = tmp_path / "shipped"
    assert main(["train", "--config", "smoke", "--out", str(run), "--export", str(shipped)]) == 0
    _check_run(run, capsys)
    _check_export(run, shipped)
    assert _best_ap(run) > AP_FLOOR


def _check_export(run, shipped):
    """--export ships the best model as fp16 weights that predict like it, with a record of how it was made."""
    import torch
    from safetensors import safe_open

    from poseforge.models import load_model

    with safe_open(str(shipped / "model.safetensors"), "pt") as f:
        dtypes = {f.get_tensor(k).dtype for k in f.keys()}
    assert torch.float16 in dtypes and torch.float32 not in dtypes, dtypes
    record = json.loads((shipped / "training.json").read_text())
    assert record["validation"]["AP"] == pytest.approx(_best_ap(run))
    assert record["command"].startswith("poseforge train --config smoke") and "--export" in record["command"]
    assert record["config"]["name"] == "smoke" and record["training_minutes"] >= 0
    assert record["setup_minutes"] >= 0  # rendering the cached set, reported apart
    best, exported = load_model(run / "best").eval(), load_model(shipped).float().eval()
    x = torch.rand(2, 3, *reversed(best.config.input_size), generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        references, outputs = best(x).tensors(), exported(x).tensors()
    assert outputs.keys() == references.keys()  # heatmaps, or SimCC's x and y logits (and keypoint maps)
    for reference, output in ((references[k], outputs[k]) for k in references):
        assert (output - reference).abs().max() <= 2e-2 * reference.abs().max() + 1e-4
