"""Never lose a user's file: every command that writes refuses to overwrite its own inputs (even with
--force), replaces earlier results only with --force, and says so before any expensive work (issue 30)."""
from __future__ import annotations

import json
import time

import cv2
import numpy as np
import pytest
import torch

from poseforge.cli import main
from poseforge.models import create_model

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: small kernels, one intra-op thread


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("model")
    create_model("vitpose-tiny", input_size=(48, 64)).save_pretrained(path)
    return path


def _photo(path, value: int = 90) -> bytes:
    image = np.full((96, 128, 3), value, np.uint8)
    cv2.circle(image, (64, 48), 12, (250, 250, 250), -1)
    cv2.imwrite(str(path), image)
    return path.read_bytes()


def _predict(*args: str) -> int:
    return main(["predict", *args, "--detector", "none", "--no-flip"])


# ---------------------------------------------------------------------------------------------- predict
def test_predict_refuses_the_input_folder_as_out(tmp_path, tiny_model_dir, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    original = _photo(photos / "photo.jpg")
    assert _predict(str(photos), "--out", str(photos), "--model", str(tiny_model_dir), "--force") == 2
    err = capsys.readouterr().err
    assert "is the input folder" in err and len(err.strip().splitlines()) == 1
    assert (photos / "photo.jpg").read_bytes() == original and sorted(p.name for p in photos.iterdir()) == ["photo.jpg"]


def test_predict_outputs_are_unique_per_input(tmp_path, tiny_model_dir):
    photos = tmp_path / "photos"
    photos.mkdir()
    for n, name in enumerate(("x.jpg", "x.png", "x_1.jpg")):  # the old names x, x_1, x_1 collided
        _photo(photos / name, value=40 + 60 * n)
    out = tmp_path / "out"
    assert _predict(str(photos), "--out", str(out), "--model", str(tiny_model_dir)) == 0
    assert sorted(p.name for p in out.iterdir()) == ["predictions.json", "x.jpg.json", "x.jpg.poses.jpg", "x.png.json",
                                                     "x.png.poses.jpg", "x_1.jpg.json", "x_1.jpg.poses.jpg"]
    for name in ("x.jpg", "x.png", "x_1.jpg"):  # each output is its own input's
        assert json.loads((out / f"{name}.json").read_text())["source"] == str(photos / name)
    assert [e["file_name"] for e in json.loads((out / "predictions.json").read_text())] == ["x.jpg", "x.png", "x_1.jpg"]


def test_predict_replaces_earlier_results_only_with_force_and_checks_first(tmp_path, tiny_model_dir, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    _photo(photos / "a.jpg")
    out = tmp_path / "out"
    assert _predict(str(photos), "--out", str(out), "--model", str(tiny_model_dir)) == 0
    before = (out / "predictions.json").read_bytes()
    capsys.readouterr()
    # a model that does not exist: the refusal must come first (before loading anything)
    assert _predict(str(photos), "--out", str(out), "--model", str(tmp_path / "no-such-model")) == 2
    err = capsys.readouterr().err
    assert "already exists; use --force" in err and "no-such-model" not in err
    assert (out / "predictions.json").read_bytes() == before
    assert _predict(str(photos), "--out", str(out), "--model", str(tiny_model_dir), "--force") == 0


def test_predict_never_writes_over_an_input_even_with_force(tmp_path, tiny_model_dir, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    _photo(photos / "a.jpg")
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"images": [{"id": 7, "file_name": "a.jpg", "width": 128, "height": 96}],
                              "annotations": [], "categories": [{"id": 1, "name": "person"}]}))
    original = gt.read_bytes()
    assert _predict(str(photos), "--out", str(tmp_path / "out"), "--model", str(tiny_model_dir), "--gt", str(gt),
                    "--coco-results", str(gt), "--force") == 2
    assert "is also an input of this command" in capsys.readouterr().err
    assert gt.read_bytes() == original and not (tmp_path / "out").exists()


def test_box_threshold_help_tells_each_detector_kind(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "0.3 for bundled" in text and "0.0 for a detection results .json" in text


# ---------------------------------------------------------------------------------------------- train
def test_train_refuses_an_existing_export_and_run_before_building_anything(tmp_path, monkeypatch, capsys):
    import poseforge.train.engine as engine

    def no_trainer(*args, **kwargs):
        raise AssertionError("the Trainer (data rendering) must not start")

    monkeypatch.setattr(engine, "Trainer", no_trainer)
    export = tmp_path / "my-model"
    export.mkdir()
    (export / "model.safetensors").write_bytes(b"the user's model")
    assert main(["train", "--config", "smoke", "--out", str(tmp_path / "run"), "--export", str(export)]) == 2
    assert "already holds a model; use --force" in capsys.readouterr().err
    assert (export / "model.safetensors").read_bytes() == b"the user's model"
    run = tmp_path / "old-run"
    run.mkdir()
    (run / "last.pt").write_bytes(b"x")
    assert main(["train", "--config", "smoke", "--out", str(run)]) == 2
    assert "already holds a training run" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- convert
def test_convert_keeps_a_users_files_and_never_writes_over_its_source(tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text('{"mine": true}')
    assert main(["convert", str(tiny_model_dir), str(out)]) == 2
    assert "is not empty (config.json)" in capsys.readouterr().err
    assert json.loads((out / "config.json").read_text()) == {"mine": True}
    stamp = (tiny_model_dir / "model.safetensors").stat().st_mtime_ns
    assert main(["convert", str(tiny_model_dir), str(tiny_model_dir), "--force"]) == 2
    assert main(["convert", str(tiny_model_dir / "model.safetensors"), str(tiny_model_dir), "--force"]) == 2
    assert "would overwrite the checkpoint" in capsys.readouterr().err
    assert (tiny_model_dir / "model.safetensors").stat().st_mtime_ns == stamp
    assert main(["convert", str(tiny_model_dir), str(out), "--force"]) == 0  # the user asked for it


# ---------------------------------------------------------------------------------------------- eval
def test_eval_outputs_never_replace_inputs_and_need_force_to_replace(tmp_path, coco_file, capsys):
    gt = tmp_path / "gt.json"
    gt.write_bytes(coco_file.read_bytes())  # a copy: a regression must not destroy the shared sample
    doc = json.loads(gt.read_text())
    results = tmp_path / "res.json"
    results.write_text(json.dumps([{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0}
                                   for a in doc["annotations"] if a.get("num_keypoints", 0) > 0]))
    originals = {p: p.read_bytes() for p in (gt, results)}
    for target in (gt, results):
        assert main(["eval", "--gt", str(gt), "--results", str(results), "--json", str(target), "--force"]) == 2
        assert "is also an input of this command" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in originals} == originals
    stats = tmp_path / "stats.json"
    stats.write_text("earlier")
    assert main(["eval", "--gt", str(gt), "--results", str(results), "--json", str(stats)]) == 2
    assert stats.read_text() == "earlier"
    assert main(["eval", "--gt", str(gt), "--results", str(results), "--json", str(stats), "--force"]) == 0
    assert json.loads(stats.read_text())["AP"] == 1.0


def test_eval_model_run_shows_progress(tmp_path, capsys):
    assert main(["eval", "--model", "bundled", "--data", "synthetic:images=3,size=192x144,people=1-2", "--workers", "0",
                 "--batch-size", "2", "--no-flip"]) == 0
    captured = capsys.readouterr()
    assert "predicting" in captured.err and "/" in captured.err  # the bar's done/total, on stderr
    assert "predicting" not in captured.out and "AP" in captured.out


# ---------------------------------------------------------------------------------------------- demo
def test_demo_refuses_a_users_files_before_rendering(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "ground_truth.json").write_text("the user's labels")
    start = time.perf_counter()
    assert main(["demo", "--out", str(out), "--images", "1", "--size", "320x240"]) == 2
    assert time.perf_counter() - start < 5 and "not from an earlier demo" in capsys.readouterr().err
    assert (out / "ground_truth.json").read_text() == "the user's labels"


# ---------------------------------------------------------------------------------------------- detector
def test_builtin_detector_drops_zero_size_boxes_at_the_edge():
    from poseforge.inference.detectors.builtin import BuiltinDetector

    detector = BuiltinDetector("bundled", device="cpu")
    h, w = 24, 32
    logits = torch.full((1, 1, h, w), -10.0)
    size = torch.zeros((1, 2, h, w))  # boxes of one stride (8 px) square
    offset = torch.zeros((1, 2, h, w))
    logits[0, 0, 5, 0] = 10.0  # centre pushed 5 cells left of the frame: clamped to a zero-width box
    offset[0, 0, 5, 0] = -5.0
    logits[0, 0, 12, 16] = 10.0  # an ordinary box inside the frame
    dets = detector.decode((logits, size, offset), torch.ones(1, 2, dtype=torch.float64),
                           torch.tensor([[w * 8.0, h * 8.0]], dtype=torch.float64))[0]
    sides = dets.boxes[:, 2:] - dets.boxes[:, :2]
    assert len(dets) == 1 and bool((sides >= 1).all())
    assert dets.boxes[0].tolist() == pytest.approx([124.0, 92.0, 132.0, 100.0])
