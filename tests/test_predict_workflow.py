"""predict -> COCO results -> eval (issue 30): image ids from the ground truth's file names (never from
digits in a name), --boxes gt as top-down evaluation with ground-truth boxes, and eval accepting the file."""
from __future__ import annotations

import json
import logging

import cv2
import numpy as np
import pytest

from poseforge.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: small kernels, one intra-op thread


def test_predict_coco_results_on_the_real_sample_score_as_eval_with_gt_boxes(tmp_path, peer_data, coco_file):
    out, results = tmp_path / "preds", tmp_path / "r.json"
    assert main(["predict", str(peer_data / "coco"), "--gt", str(coco_file), "--boxes", "gt", "--coco-results",
                 str(results), "--no-draw", "--out", str(out)]) == 0
    doc = json.loads(coco_file.read_text())
    persons = {}
    for a in doc["annotations"]:
        if not a.get("iscrowd"):
            persons[a["image_id"]] = persons.get(a["image_id"], 0) + 1
    records = json.loads(results.read_text())
    counts = {}
    for r in records:
        counts[r["image_id"]] = counts.get(r["image_id"], 0) + 1
        assert r["category_id"] == 1 and len(r["keypoints"]) == 17 * 3
    assert counts == persons and len(records) == 14  # one result per non-crowd person, ids from the GT
    ids = {i["file_name"]: i["id"] for i in doc["images"]}
    entries = json.loads((out / "predictions.json").read_text())
    assert {e["file_name"]: e["image_id"] for e in entries} == ids
    assert all(len(e["people"]) == persons[e["image_id"]] for e in entries)

    stats, reference = tmp_path / "stats.json", tmp_path / "reference.json"
    assert main(["eval", "--gt", str(coco_file), "--results", str(results), "--json", str(stats)]) == 0
    # the same model in the same boxes through the evaluator: the plumbing loses or renumbers nothing
    assert main(["eval", "--model", "bundled", "--data", str(coco_file), "--workers", "0", "--json", str(reference)]) == 0
    got, want = json.loads(stats.read_text()), json.loads(reference.read_text())
    assert got["AP"] == pytest.approx(want["AP"], abs=0.01) and got["AR"] == pytest.approx(want["AR"], abs=0.01)


def _scene(path, centres) -> None:
    image = np.full((160, 200, 3), 60, np.uint8)
    for x, y in centres:
        cv2.ellipse(image, (x, y), (14, 40), 0, 0, 360, (220, 200, 180), -1)
    cv2.imwrite(str(path), image)


@pytest.fixture()
def digit_named(tmp_path):
    """Images whose names hold digits that are not their ids, a GT that says otherwise, and one image it lacks."""
    photos = tmp_path / "photos"
    photos.mkdir()
    _scene(photos / "003799.jpg", [(60, 80), (140, 80)])
    _scene(photos / "000002.jpg", [(100, 80)])
    _scene(photos / "extra.jpg", [(100, 80)])
    gt = {"images": [{"id": 1, "file_name": "003799.jpg", "width": 200, "height": 160},
                     {"id": 3799, "file_name": "000002.jpg", "width": 200, "height": 160}],
          "annotations": [
              {"id": 10, "image_id": 1, "category_id": 1, "bbox": [40, 35, 40, 90], "area": 3600, "iscrowd": 0,
               "num_keypoints": 0, "keypoints": [0] * 51},
              {"id": 11, "image_id": 1, "category_id": 1, "bbox": [120, 35, 200, 90], "area": 3600, "iscrowd": 0,
               "num_keypoints": 0, "keypoints": [0] * 51},  # runs past the right edge: clipped
              {"id": 12, "image_id": 1, "category_id": 1, "bbox": [0, 0, 200, 160], "area": 32000, "iscrowd": 1,
               "num_keypoints": 0, "keypoints": [0] * 51},  # a crowd region: no person box
              {"id": 13, "image_id": 3799, "category_id": 1, "bbox": [80, 35, 40, 90], "area": 3600, "iscrowd": 0,
               "num_keypoints": 0, "keypoints": [0] * 51}],
          "categories": [{"id": 1, "name": "person", "keypoints": [f"k{i}" for i in range(17)],
                          "skeleton": []}]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    # detections by GT id: two boxes for image 1 (003799.jpg), one for image 3799 (000002.jpg)
    dets = [{"image_id": 1, "category_id": 1, "bbox": [40, 35, 40, 90], "score": 0.9},
            {"image_id": 1, "category_id": 1, "bbox": [120, 35, 40, 90], "score": 0.8},
            {"image_id": 3799, "category_id": 1, "bbox": [80, 35, 40, 90], "score": 0.7}]
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    return tmp_path


def test_detection_file_boxes_are_matched_by_gt_file_name(digit_named, caplog):
    root = digit_named
    with caplog.at_level(logging.WARNING, logger="poseforge"):
        assert main(["predict", str(root / "photos"), "--gt", str(root / "gt.json"), "--detector", str(root / "dets.json"),
                     "--coco-results", str(root / "r.json"), "--out", str(root / "out"), "--no-draw", "--no-flip"]) == 0
    records = json.loads((root / "r.json").read_text())
    assert sorted((r["image_id"], r["bbox_score"]) for r in records) == [(1, pytest.approx(0.8)), (1, pytest.approx(0.9)),
                                                                         (3799, pytest.approx(0.7))]
    entries = json.loads((root / "out" / "predictions.json").read_text())
    assert [(e["file_name"], e["image_id"], len(e["people"])) for e in entries] == [("000002.jpg", 3799, 1),
                                                                                    ("003799.jpg", 1, 2)]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("extra.jpg" in w and "not in" in w for w in warnings)  # skipped with a word, not renumbered


def test_gt_boxes_are_the_non_crowd_persons_clipped(digit_named):
    root = digit_named
    assert main(["predict", str(root / "photos"), "--gt", str(root / "gt.json"), "--boxes", "gt", "--coco-results",
                 str(root / "r.json"), "--out", str(root / "out"), "--no-draw", "--no-flip"]) == 0
    entries = {e["image_id"]: e for e in json.loads((root / "out" / "predictions.json").read_text())}
    assert sorted(p["box"] for p in entries[1]["people"]) == [[40, 35, 80, 125], [120, 35, 199, 125]]  # mmpose clips to w - 1
    assert [p["box"] for p in entries[3799]["people"]] == [[80, 35, 120, 125]]
    assert len(json.loads((root / "r.json").read_text())) == 3 and not (root / "out" / "extra.jpg.json").exists()


def test_coco_results_and_gt_boxes_need_a_gt(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    _scene(photos / "a.jpg", [(100, 80)])
    assert main(["predict", str(photos), "--coco-results", str(tmp_path / "r.json")]) == 2
    assert "--coco-results needs --gt" in capsys.readouterr().err
    assert main(["predict", str(photos), "--boxes", "gt"]) == 2
    assert "--boxes gt needs --gt" in capsys.readouterr().err
