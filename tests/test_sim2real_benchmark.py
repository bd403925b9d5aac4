"""benchmarks/sim2real.py (issue 31's measurement): its core on the real samples in ../shared with a tiny
random model, its agreement with ``poseforge eval``, the detector table, and the clean skip without the data."""
from __future__ import annotations

import importlib
import json
import math
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture()
def sim2real(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # as when run as a script: its folder on sys.path (_common)
    return importlib.import_module("sim2real")


@pytest.fixture(scope="module")
def random_model(tmp_path_factory) -> str:
    from poseforge.models import create_model

    folder = tmp_path_factory.mktemp("sim2real") / "vitpose-tiny-random"
    create_model("vitpose-tiny").save_pretrained(folder)
    return str(folder)


def test_every_real_set_gets_a_model_row_and_a_mean_pose_row(sim2real, peer_data, random_model, one_thread):
    summary = sim2real.measure(peer_data, [random_model], detectors=[])
    names = [name for name, _, _ in sim2real.DATASETS]
    assert list(summary["datasets"]) == names
    for name in names:
        rows = [r for r in summary["pose"] if r["dataset"] == name]
        assert [r["model"] for r in rows] == [sim2real.MEAN_POSE, random_model], name
        for r in rows:
            assert r["images"] > 0 and r["people"] > 0 and r["keypoints"] > 0, r
            for key in ("AP", "AP50", "AR", "PCK", "err_h", "sides", "gap"):
                assert math.isfinite(r[key]) and r[key] >= 0, (name, key, r)
            assert r["AP"] <= 1 and r["AP50"] <= 1 and r["PCK"] <= 1 and r["sides"] <= 1
    coco = {r["model"]: r for r in summary["pose"] if r["dataset"] == "coco"}
    assert coco[sim2real.MEAN_POSE]["joints"] == 17 and coco[sim2real.MEAN_POSE]["people"] == 12  # 2 of 14 unlabeled
    assert {r["joints"] for r in summary["pose"] if r["dataset"] in ("aic", "mpii")} == {12}  # joints shared by name
    assert "ap10k/test_ap10k.json" in summary["skipped"]
    table = sim2real.format_tables(summary)
    assert table.count(f"| {sim2real.MEAN_POSE} |") == len(names) and summary["detectors"] == []


@pytest.mark.parametrize("dataset", ["coco", "aic"])
def test_pose_rows_agree_with_poseforge_eval(sim2real, peer_data, random_model, tmp_path, dataset, one_thread):
    """The benchmark scores exactly as `poseforge eval --model M --data FILE` (same set, other set)."""
    from poseforge.cli import main

    file = {n: f for n, f, _ in sim2real.DATASETS}[dataset]
    out = tmp_path / "stats.json"
    assert main(["eval", "--model", random_model, "--data", str(peer_data / file), "--workers", "0",
                 "--json", str(out)]) == 0
    expected = json.loads(out.read_text())
    summary = sim2real.measure(peer_data, [random_model], detectors=[], datasets=[dataset])
    row = next(r for r in summary["pose"] if r["model"] == random_model)
    for key, stat in (("AP", "AP"), ("AP50", "AP50"), ("AR", "AR"), ("PCK", "PCK@0.2")):
        assert row[key] == pytest.approx(expected[stat], abs=1e-9), key


def test_mean_pose_is_scored_by_the_models_metric(sim2real, peer_data):
    """The mean pose goes through the models' metric: a low OKS AP on the COCO sample, yet most joints within 0.2 of the box."""
    real = sim2real.read_sets(peer_data, ["coco"])[0]
    row = sim2real.score_mean_pose(real)
    assert row.model == sim2real.MEAN_POSE and 0 <= row.AP < 0.2 and 0.5 < row.PCK <= 1 and 0 < row.err_h < 0.3
    # The average pose faces the camera, as most of the sample's people do: most pairs on their own side, at
    # about their true width.
    assert 0.6 < row.sides < 1 and 0.5 < row.gap < 1.5


def test_detector_rows_score_box_ap_on_the_coco_sample(sim2real, peer_data):
    """A detection results file (no network to run): mmpose's detections of the sample are a strong detector."""
    summary = sim2real.measure(peer_data, [], detectors=[("file", str(peer_data / sim2real.DETECTION_RESULTS))],
                               datasets=["coco"])
    (row,) = summary["detectors"]
    assert row["images"] == 4 and row["people"] == 14
    assert 0.5 < row["AP"] <= 1 and 0 < row["AR"] <= 1


def test_skips_in_one_line_without_the_shared_folder(sim2real, tmp_path, capsys):
    assert sim2real.main(["--shared", str(tmp_path / "absent")]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("sim2real: skipped: no real samples at")


def test_unknown_dataset_is_a_one_line_error(sim2real, peer_data, capsys):
    assert sim2real.main(["--shared", str(peer_data.parent), "--dataset", "nope", "--no-detectors"]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "sim2real: error: unknown dataset nope; known: aic, coco, coco-wholebody, mpii"]


def test_extra_detectors_get_their_own_rows(sim2real, peer_data, random_model, capsys, one_thread):
    """``--detector SPEC`` scores one more detector after the defaults, in a row of its own."""
    extra = str(peer_data / sim2real.DETECTION_RESULTS)
    assert sim2real.main(["--shared", str(peer_data.parent), "--dataset", "coco", "--model", str(random_model),
                          "--detector", extra, "--synthetic", "0"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "| 4 | 14 |" in line]
    assert rows[0].startswith("| person-detector.synth |") and rows[-1].startswith(f"| {extra} |")


def test_synthetic_rows_score_the_trainers_held_out_people_as_poseforge_eval(sim2real, peer_data, random_model, tmp_path,
                                                                             one_thread):
    """``--synthetic N``: the trainer's held-out people in a last set, scored exactly as `poseforge eval --data
    synthetic:images=N` scores them, with every column of the real sets."""
    from poseforge.cli import main

    out = tmp_path / "stats.json"
    assert main(["eval", "--model", random_model, "--data", "synthetic:images=6", "--workers", "0", "--json", str(out)]) == 0
    expected = json.loads(out.read_text())
    summary = sim2real.measure(peer_data, [random_model], detectors=[], datasets=["coco"], synthetic=6)
    assert list(summary["datasets"]) == ["coco", sim2real.SYNTHETIC]
    rows = {r["model"]: r for r in summary["pose"] if r["dataset"] == sim2real.SYNTHETIC}
    assert list(rows) == [sim2real.MEAN_POSE, random_model]
    row = rows[random_model]
    assert row["images"] == 6 and row["joints"] == 17 and row["people"] >= 6
    for key, stat in (("AP", "AP"), ("AP50", "AP50"), ("AR", "AR"), ("PCK", "PCK@0.2")):
        assert row[key] == pytest.approx(expected[stat], abs=1e-9), key
    for r in rows.values():
        assert 0 <= r["sides"] <= 1 and math.isfinite(r["gap"]) and math.isfinite(r["err_h"])
