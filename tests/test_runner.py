"""The evaluator: boxes -> crops -> model.predict_batch -> image coordinates -> COCO AP.

An "oracle" model predicts from the pixels alone: the test images encode each pixel's own image
coordinates (red = x, green = y, blue = image code), so the oracle recovers every crop's
crop -> image affine (mirrored for the flip-test half) by least squares, picks the ground-truth
person whose box centre is nearest to the crop centre, and outputs that person's perfect heatmaps.
Any error in cropping, batching, flip-back or the mapping back to the image lowers the AP.
"""
from __future__ import annotations

import dataclasses
import json
import types

import numpy as np
import pytest
import torch

from poseforge.cli import main
from poseforge.data.evalsets import (coco_eval_set, find_coco_split, parse_synthetic_spec, read_detections,
                                     synthetic_eval_set)
from poseforge.evaluation import evaluate
from poseforge.evaluation.evaluator import predict_dataset
from poseforge.models import load_model
from poseforge.outputs import Heatmaps
from poseforge.errors import PoseforgeError
from poseforge.models import create_model


class CoordinateImages:
    """Images whose pixels encode (x, y) and the image: the oracle reads crops back to image points."""

    def __init__(self, gt) -> None:
        self.sizes = {i: (info.width, info.height) for i, info in gt.images.items()}
        self.codes = {image_id: 100 + n for n, image_id in enumerate(gt.images)}

    def __call__(self, image_ids):
        out = {}
        for i in dict.fromkeys(image_ids):
            w, h = self.sizes[i]
            ys, xs = np.mgrid[0:h, 0:w]
            image = np.stack([np.round(xs * 255.0 / (w - 1)), np.round(ys * 255.0 / (h - 1)),
                              np.full((h, w), self.codes[i])], -1)
            out[i] = image.astype(np.uint8)
        return out


def oracle_model(eval_set, input_size=(192, 256)):
    """vitpose-tiny whose forward returns the ground truth's heatmaps for whatever crop it is shown."""
    model = create_model("vitpose-tiny", input_size=input_size).eval()
    images = CoordinateImages(eval_set.gt)
    by_code = {code: image_id for image_id, code in images.codes.items()}
    people: dict[int, list] = {}
    for inst in eval_set.gt.instances:
        people.setdefault(inst.image_id, []).append(inst)
    flip_index = torch.as_tensor(model.keypoint_set.flip_index)

    def forward(self, x, task=None):
        pixels = (x.float() * self.pixel_std + self.pixel_mean).round()  # back to 0-255 values
        n, _, h, w = pixels.shape
        vs, us = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
        design = torch.stack([us.reshape(-1), vs.reshape(-1), torch.ones(h * w, dtype=torch.float64)], 1)
        keypoints, visible = [], []
        for crop in pixels.double():
            code = int(torch.mode(crop[2].reshape(-1)).values)
            image_id = by_code[code]
            iw, ih = images.sizes[image_id]
            inside = (crop[2].reshape(-1) == code)  # away from the zero border (bilinear mixes there)
            targets = torch.stack([crop[0].reshape(-1) * (iw - 1) / 255.0, crop[1].reshape(-1) * (ih - 1) / 255.0], 1)
            solution = torch.linalg.lstsq(design[inside], targets[inside]).solution  # [3, 2]: crop -> image
            to_image = solution.T  # [2, 3]
            linear = to_image[:, :2]
            mirrored = torch.linalg.det(linear) < 0
            centre = to_image @ torch.tensor([(w - 1) / 2, (h - 1) / 2, 1.0], dtype=torch.float64)
            person = min(people[image_id], key=lambda p: np.linalg.norm(p.bbox[:2] + p.bbox[2:] / 2 - centre.numpy()))
            kp = torch.as_tensor(person.keypoints, dtype=torch.float64)
            vis = torch.as_tensor(person.visibility, dtype=torch.float64)
            if mirrored:  # a flipped crop shows keypoint flip_index[k] where the model must say k
                kp, vis = kp[flip_index], vis[flip_index]
            to_crop = torch.linalg.inv(torch.cat([to_image, torch.tensor([[0, 0, 1.0]], dtype=torch.float64)]))[:2]
            keypoints.append(kp @ to_crop[:, :2].T + to_crop[:, 2])
            visible.append((vis > 0).double())
        heatmaps = self.codec.encode(torch.stack(keypoints), torch.stack(visible))["heatmaps"]
        return Heatmaps(heatmaps.to(x.device))

    model.forward = types.MethodType(forward, model)
    return model, images


@pytest.mark.parametrize("flip", [False, True])
def test_oracle_on_ground_truth_boxes_scores_one(coco_file, flip):
    eval_set = coco_eval_set(coco_file)
    model, images = oracle_model(eval_set)
    eval_set = dataclasses.replace(eval_set, load_images=images)
    result = evaluate(model, eval_set, flip_test=flip, batch_size=5)
    assert result.stats["AP"] == pytest.approx(1.0)
    assert result.stats["AR"] == pytest.approx(1.0)
    assert {r["image_id"] for r in result.results} == set(eval_set.gt.images)


def test_predictions_are_in_image_pixels(coco_file):
    eval_set = coco_eval_set(coco_file)
    model, images = oracle_model(eval_set)
    eval_set = dataclasses.replace(eval_set, load_images=images)
    raw = predict_dataset(model, eval_set, flip_test=True, batch_size=4).raw_results()
    assert len(raw) == len(eval_set) == sum(not i.iscrowd for i in eval_set.gt.instances)
    by_box = {tuple(i.bbox): i for i in eval_set.gt.instances}
    errors = []
    for record, box in zip(raw, eval_set.boxes):
        truth = by_box[tuple(box)]
        kp = np.asarray(record["keypoints"]).reshape(-1, 3)
        labeled = truth.visibility > 0
        errors.append(np.abs(kp[labeled, :2] - truth.keypoints[labeled]).max(initial=0.0))
        assert record["score"] == 1.0 and record["area"] > 0
    assert max(errors) < 0.75  # sub-pixel: UDP heatmaps decode to within a fraction of a pixel


def test_detection_boxes_file(coco_file, peer_data):
    detections = peer_data / "coco/test_coco_det_AP_H_56.json"
    eval_set = coco_eval_set(coco_file, boxes=detections)
    records = json.loads(detections.read_text())
    assert len(eval_set) == sum(r["category_id"] == 1 for r in records)
    assert not eval_set.clip_boxes
    model, images = oracle_model(eval_set, input_size=(96, 128))
    eval_set = dataclasses.replace(eval_set, load_images=images)
    result = evaluate(model, eval_set, flip_test=False, batch_size=16)
    raw_count = len(eval_set)
    assert 0 < len(result.results) <= raw_count  # OKS-NMS removed duplicate boxes of one person
    assert result.stats["AP"] > 0.85  # perfect keypoints; only false-positive boxes cost AP
    scores = {round(s, 6) for s in eval_set.box_scores}
    assert all(round(r["bbox_score"], 6) in scores for r in result.results)


def test_detection_file_errors_name_the_record(coco_file, tmp_path):
    gt = coco_eval_set(coco_file).gt
    bad = tmp_path / "dets.json"
    bad.write_text(json.dumps([{"image_id": next(iter(gt.images)), "category_id": 1, "bbox": [1, 2, 3], "score": 0.5}]))
    with pytest.raises(PoseforgeError, match=r"dets.json: detection 0: field 'bbox'"):
        read_detections(bad, gt)
    bad.write_text(json.dumps([{"image_id": 123456789, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5}]))
    with pytest.raises(PoseforgeError, match="unknown image id 123456789"):
        read_detections(bad, gt)


def test_synthetic_eval_set_renders_the_same_pixels():
    eval_set = synthetic_eval_set(num_images=3, seed=7, image_size=(96, 128))
    assert len(eval_set) == len(eval_set.gt.instances) == 3  # one person per image
    images = eval_set.load_images([0, 2])
    again = synthetic_eval_set(num_images=3, seed=7, image_size=(96, 128)).load_images([2])
    assert np.array_equal(images[2], again[2]) and images[0].shape == (128, 96, 3)
    assert all(i.image is None and not i.extras for i in eval_set.gt.instances)


def test_parse_synthetic_spec():
    assert parse_synthetic_spec("synthetic", {"seed": 1}) == {"seed": 1}
    assert parse_synthetic_spec("synthetic:seed=5,images=20,size=96x128,people=1-2") == {
        "seed": 5, "num_images": 20, "image_size": (96, 128), "people": (1, 2)}
    with pytest.raises(PoseforgeError, match="bad item 'colour=red'"):
        parse_synthetic_spec("synthetic:colour=red")


def test_find_coco_split_layouts(tmp_path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations/person_keypoints_val2017.json").write_text("{}")
    (tmp_path / "val2017").mkdir()
    assert find_coco_split(tmp_path, "val") == (tmp_path / "annotations/person_keypoints_val2017.json", tmp_path / "val2017")
    synth = tmp_path / "synth"
    (synth / "train/images").mkdir(parents=True)
    (synth / "train/annotations.json").write_text("{}")
    assert find_coco_split(synth, "train") == (synth / "train/annotations.json", synth / "train/images")
    with pytest.raises(PoseforgeError, match="no val annotations found"):
        find_coco_split(synth, "val")


def test_load_model_kinds(tmp_path):
    model = create_model("vitpose-tiny", input_size=(48, 64))
    model.save_pretrained(tmp_path / "m")
    for path in (tmp_path / "m", tmp_path / "m" / "model.safetensors"):
        loaded = load_model(path)
        assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    with pytest.raises(PoseforgeError, match="not a model folder or training run"):
        load_model(tmp_path)


def test_eval_cli_model_errors_are_one_line(tmp_path, capsys):
    assert main(["eval", "--model", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no such model name, folder or file" in err
    assert main(["eval"]) == 2
    assert "--model NAME|RUN_DIR|FILE" in capsys.readouterr().err
