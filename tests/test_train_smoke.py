"""It learns: ``poseforge train --config smoke`` then ``poseforge eval`` on a fresh run folder.

The smoke preset trains a tiny ViTPose on cached synthetic people on the CPU; its held-out set is
rendered with another seed. Floors were set from measured runs with a wide margin (see the preset).
"""
from __future__ import annotations

import json

import pytest

from poseforge.cli import main
from poseforge.evaluation.runner import model_height_error
from poseforge.train import get_preset

# The goal for the smoke preset; not reached yet (measured AP 0.0000: the tiny ViT is near
# the mean pose after a minute on the CPU; see benchmarks/RESULTS.md), so it is a strict xfail below.
AP_GOAL = 0.05


def _records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _table_ap(text: str) -> float:
    lines = [line for line in text.splitlines() if line.strip()]
    header = next(i for i, line in enumerate(lines) if line.split()[:1] == ["AP"])
    return float(lines[header + 2].split()[0])


def _check_run(run, capsys):
    import torch

    from poseforge.models import load_model
    from poseforge.models.estimator import build_model
    from poseforge.train.config import load_config
    from poseforge.train.data import build_val_set

    records = _records(run)
    losses = [r["loss"] for r in records if r["kind"] == "train"]
    vals = [r for r in records if r["kind"] == "val"]
    assert losses[-1] < 0.7 * losses[0], losses
    assert vals and all(0.0 <= v["AP"] <= 1.0 for v in vals), vals
    # held-out people: the trained model localizes far better than the same network untrained
    trained = load_model(run / "best").eval()
    val = build_val_set(load_config(run / "config.yaml"), trained.keypoint_set.name)
    torch.manual_seed(0)
    untrained = build_model(trained.config).eval()
    assert model_height_error(trained, val) < 0.6 * model_height_error(untrained, val)
    capsys.readouterr()
    assert main(["eval", "--model", str(run), "--data", "synthetic", "--workers", "0"]) == 0
    best = max(v["AP"] for v in vals)
    assert _table_ap(capsys.readouterr().out) == pytest.approx(best, abs=1e-6)  # the same held-out set and model


def test_smoke_learns_fast(tmp_path, capsys):
    """A shortened smoke run (half the epochs) for the default suite."""
    epochs = get_preset("smoke").schedule.epochs // 2
    run = tmp_path / "smoke"
    shipped = tmp_path / "shipped"
    assert main(["train", "--config", "smoke", "--out", str(run), "--set", f"schedule.epochs={epochs}",
                 "--set", f"val_interval={epochs}", "--export", str(shipped)]) == 0
    _check_run(run, capsys)
    _check_export(run, shipped)


def _check_export(run, shipped):
    """--export ships the best model as fp16 weights that predict like it, with a record of how it was made."""
    import torch
    from safetensors import safe_open

    from poseforge.models import load_model

    with safe_open(str(shipped / "model.safetensors"), "pt") as f:
        dtypes = {f.get_tensor(k).dtype for k in f.keys()}
    assert torch.float16 in dtypes and torch.float32 not in dtypes, dtypes
    record = json.loads((shipped / "training.json").read_text())
    best_ap = max(r["AP"] for r in _records(run) if r["kind"] == "val")
    assert record["validation"]["AP"] == pytest.approx(best_ap)
    assert record["command"].startswith("poseforge train --config smoke") and "--export" in record["command"]
    assert record["config"]["name"] == "smoke" and record["training_minutes"] >= 0
    assert record["setup_minutes"] >= 0  # rendering the cached set, reported apart
    best, exported = load_model(run / "best").eval(), load_model(shipped).float().eval()
    x = torch.rand(2, 3, *reversed(best.config.input_size), generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        reference, output = best(x), exported(x)
    assert (output - reference).abs().max() <= 2e-2 * reference.abs().max() + 1e-4


@pytest.mark.slow
def test_smoke_preset_learns(tmp_path, capsys):
    run = tmp_path / "smoke"
    assert main(["train", "--config", "smoke", "--out", str(run)]) == 0
    _check_run(run, capsys)


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="issue 6's learning problem: the smoke model stays near the mean pose (AP 0.0000)")
def test_smoke_preset_reaches_the_ap_goal(tmp_path):
    run = tmp_path / "smoke"
    assert main(["train", "--config", "smoke", "--out", str(run)]) == 0
    assert max(r["AP"] for r in _records(run) if r["kind"] == "val") > AP_GOAL
