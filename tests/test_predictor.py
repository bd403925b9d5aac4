"""The Predictor: crop geometry end to end (a "dot finder" model), inputs, boxes, results, folders, the
bundled model's accuracy on synthetic scenes, and ``poseforge predict`` on images, folders and the real photos."""
from __future__ import annotations

import copy
import json
import logging
import types

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from poseforge.cli import main
from poseforge.errors import PoseforgeError
from poseforge.inference.predictor import Predictor, as_rgb_image
from poseforge.models import create_model
from poseforge.outputs import Heatmaps


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: small kernels, one intra-op thread


def _dot_model(codec: str = "udp"):
    """A pose 'model' whose heatmaps are the crop's brightness: every keypoint lands on the brightest spot.
    Keypoints found in image pixels then test cropping, flip test, decoding and mapping back together."""
    model = create_model("vitpose-tiny", input_size=(48, 64), codec=codec).eval()

    def forward(self, x, task=None):
        bright = (x[:, :1].float() + 3).clamp(min=0)
        if codec != "udp":  # MSRA: heatmap cell j stands for crop pixel 4j (UDP: 47/11 j), so centre the pooling there
            bright = F.pad(bright, (2, 2, 2, 2))[..., :-4, :-4]
        return Heatmaps(F.avg_pool2d(bright, 4).repeat(1, self.keypoint_set.num_keypoints, 1, 1))

    model.forward = types.MethodType(forward, model)
    return model


def _dots_image(points: list[tuple[int, int]], size=(320, 240)) -> np.ndarray:
    image = np.zeros((size[1], size[0], 3), np.uint8)
    for x, y in points:
        cv2.circle(image, (x, y), 3, (255, 255, 255), -1)
    return cv2.GaussianBlur(image, (7, 7), 2)


@pytest.mark.parametrize("codec", ["udp", "msra"])
@pytest.mark.parametrize("flip", [False, True])
def test_keypoints_land_where_the_crop_content_is(codec, flip):
    dots = [(60, 70), (200, 150), (285, 40)]
    boxes = np.array([[30, 20, 100, 120], [150, 100, 260, 230], [250, 5, 315, 90]], float)  # xyxy, a dot inside each
    image = _dots_image(dots)
    predictor = Predictor(_dot_model(codec), detector=None, device="cpu", flip_test=flip)
    result = predictor.predict(image, boxes=boxes)
    assert result.keypoints.shape == (3, 17, 2)
    errors = np.linalg.norm(result.keypoints - np.array(dots, float)[:, None, :], axis=-1)
    # a heatmap pixel is 4 crop pixels; the crop spans 1.25 x the box (aspect-fixed) over 48 pixels
    side = np.maximum(boxes[:, 2] - boxes[:, 0], (boxes[:, 3] - boxes[:, 1]) * 48 / 64) * 1.25
    heatmap_pixel = 4 * side / 48
    assert (errors.max(1) < 0.4 * heatmap_pixel).all(), (errors.max(1), heatmap_pixel)
    # chunked model calls give the same answer
    chunked = Predictor(_dot_model(codec), detector=None, device="cpu", flip_test=flip, batch_size=1).predict(image, boxes=boxes)
    assert np.allclose(chunked.keypoints, result.keypoints, atol=1e-4)
    # xywh boxes are the same boxes
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1)
    assert np.allclose(predictor.predict(image, boxes=xywh, box_format="xywh").keypoints, result.keypoints, atol=1e-4)


def test_input_kinds_give_the_same_result(tmp_path):
    image = _dots_image([(100, 100)])
    path = tmp_path / "dot.png"
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    predictor = Predictor(_dot_model(), detector=None, device="cpu", flip_test=False)
    box = [[60, 50, 150, 170]]
    ref = predictor.predict(image, boxes=box)
    variants = [str(path), path, torch.from_numpy(image).permute(2, 0, 1), image[..., 0]]
    pil = pytest.importorskip("PIL.Image")
    variants.append(pil.fromarray(image))
    for v in variants:
        r = predictor.predict(v, boxes=box)
        assert np.allclose(r.keypoints, ref.keypoints, atol=1e-4), type(v)
    assert predictor.predict(str(path), boxes=box).source == str(path)
    with pytest.raises(PoseforgeError, match="expected an image path"):
        predictor.predict(12.5)
    with pytest.raises(PoseforgeError, match="uint8"):
        as_rgb_image(image.astype(np.float32))
    with pytest.raises(PoseforgeError, match="positive size"):
        predictor.predict(image, boxes=[[10, 10, 5, 50]])
    with pytest.raises(PoseforgeError, match="2 scores for 1 boxes"):
        predictor.predict(image, boxes=box, box_scores=[1, 2])


def test_whole_image_box_and_empty_detections():
    image = _dots_image([(160, 120)])
    whole = Predictor(_dot_model(), detector=None, device="cpu").predict(image)
    assert whole.boxes.tolist() == [[0, 0, 320, 240]] and np.abs(whole.keypoints - [160, 120]).max() < 6

    class Nobody:
        input_kind = "numpy"

        def detect_batch(self, frames, keys=None):
            from poseforge.inference.detectors import Detections

            return [Detections.empty() for _ in frames]

    from poseforge.inference.detectors.base import Detector

    Detector.register(Nobody)
    empty = Predictor(_dot_model(), detector=Nobody(), device="cpu").predict(image)
    assert len(empty) == 0 and empty.keypoints.shape == (0, 17, 2) and empty.to_coco(1) == []
    assert empty.draw().shape == image.shape


def test_result_exports_and_drawing(tmp_path):
    image = _dots_image([(60, 70), (200, 150)])
    predictor = Predictor(_dot_model(), detector=None, device="cpu")
    r = predictor.predict(image, boxes=[[30, 20, 100, 120], [150, 100, 260, 230]], box_scores=[0.9, 0.5])
    records = r.to_coco(image_id=7)
    assert [rec["image_id"] for rec in records] == [7, 7] and len(records[0]["keypoints"]) == 51
    assert records[0]["bbox_score"] == pytest.approx(0.9)
    assert records[0]["score"] == pytest.approx(0.9 * r.keypoint_scores[0][r.keypoint_scores[0] > 0.2].mean(), rel=1e-5)
    data = json.loads(r.to_json(tmp_path / "r.json"))
    assert json.loads((tmp_path / "r.json").read_text()) == data
    assert data["width"] == 320 and len(data["people"]) == 2 and len(data["people"][1]["keypoints"]) == 17
    assert data["people"][0]["box"] == [30, 20, 100, 120] and data["keypoint_names"][0] == "nose"
    drawn = r.draw(threshold=0.0)
    assert drawn.shape == image.shape and (drawn != image).any()
    assert not (r.draw(threshold=2.0, boxes=False) != image).any()  # nothing above threshold, no boxes
    r.image = None
    with pytest.raises(PoseforgeError, match="no image"):
        r.draw()


def test_folder_skips_bad_files_with_one_line_each(tmp_path, caplog):
    good = _dots_image([(100, 100)])
    cv2.imwrite(str(tmp_path / "a.png"), good)
    cv2.imwrite(str(tmp_path / "c.jpg"), good)
    (tmp_path / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "sub").mkdir()
    predictor = Predictor(_dot_model(), detector=None, device="cpu")
    with caplog.at_level(logging.WARNING, logger="poseforge"):
        results = list(predictor.stream(tmp_path))
    assert [r.source.split("/")[-1] for r in results] == ["a.png", "c.jpg"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3 and all("\n" not in w for w in warnings)
    assert any("b.jpg" in w and "cannot decode" in w for w in warnings)
    assert any("empty.png" in w and "empty file" in w for w in warnings)
    assert any("notes.txt" in w and "unsupported file type" in w for w in warnings)


def test_detection_file_boxes(peer_data):
    """Boxes from mmpose's AP-56 detection file, looked up by the COCO file name."""
    predictor = Predictor(_dot_model(), detector=peer_data / "coco" / "test_coco_det_AP_H_56.json", device="cpu",
                          box_score_threshold=0.5)
    r = predictor.predict(peer_data / "coco" / "000000196141.jpg")
    records = json.loads((peer_data / "coco" / "test_coco_det_AP_H_56.json").read_text())
    expected = [d for d in records if d["image_id"] == 196141 and d["score"] > 0.5]
    assert len(r) == len(expected) > 0
    assert np.allclose(sorted(r.box_scores.tolist()), sorted(d["score"] for d in expected), atol=1e-6)


# ---------------------------------------------------------------------------------------------- bundled model
def _bundled_on_held_out_scenes(model="bundled"):
    """Poses of ``model`` in the ground-truth boxes of held-out scenes (a seed no training run used):
    ``(ground truth, results, median keypoint error / box height)``."""
    from poseforge.data.coco import CocoKeypoints
    from poseforge.data.synth import SyntheticPoseDataset

    dataset = SyntheticPoseDataset(12, seed=3_000_029, image_size=(640, 480), people=(1, 3))
    rendered = dataset.render_batch(range(12))
    predictor = Predictor(model, detector=None, device="cpu")
    assert predictor.model.dtype == torch.float32
    results, instances, errors = [], [], []
    for r in rendered:
        boxes = np.stack([i.bbox for i in r.instances])
        found = predictor.predict(r.image, boxes=boxes, box_format="xywh")
        results += found.to_coco(image_id=r.index)
        instances += [i.copy(image=None, extras={}) for i in r.instances]
        for inst, keypoints in zip(r.instances, found.keypoints):
            labeled = np.asarray(inst.visibility) > 0
            error = np.linalg.norm(keypoints[:, :2] - np.asarray(inst.keypoints)[:, :2], axis=1)[labeled]
            errors.append(error.mean() / inst.bbox[3])
    ks = predictor.keypoint_set
    gt = CocoKeypoints("scenes", ks, {r.index: dataset.image_info(r.index) for r in rendered}, instances,
                       [{"id": 1, "name": "person", "keypoints": list(ks.names)}])
    return gt, results, float(np.median(errors))


def test_bundled_model_is_trained():
    """The bundled weights localize far better than the same network untrained (measured: 0.061 vs 0.582
    of the box height, median), through the whole predictor path (boxes, crops, flip test, decoding)."""
    from poseforge.models import load_model
    from poseforge.models import build_model

    _, _, trained = _bundled_on_held_out_scenes()
    torch.manual_seed(0)
    untrained = build_model(load_model("bundled").config).eval()  # same config, fresh random weights
    _, _, baseline = _bundled_on_held_out_scenes(untrained)
    assert trained < 0.5 * baseline, (trained, baseline)


def test_bundled_model_is_far_above_chance_on_synthetic_scenes():
    """Held-out scenes, ground-truth boxes: measured AP 0.323 / AP50 0.69 (the model at the mean pose: ~0.001)."""
    from poseforge.evaluation import coco_metric

    gt, results, _ = _bundled_on_held_out_scenes()
    stats = coco_metric(gt, results, "coco17")
    assert stats["AP"] > 0.05 and stats["AP50"] > 0.35, stats


def test_bundled_models_ship_small_with_their_training_record():
    """Each bundled model says how it was trained and what it scored; the pose weights are fp16 and <= 25 MB."""
    from safetensors import safe_open

    from poseforge.assets import asset_path

    for name in ("pose", "detector"):
        record = json.loads((asset_path(name) / "training.json").read_text())
        assert record["command"].startswith(("poseforge ", "python ")), record["command"]
        assert 0.0 < record["validation"]["AP"] <= 1.0
    weights = asset_path("pose") / "model.safetensors"
    assert weights.stat().st_size <= 25 * 2**20
    with safe_open(str(weights), "pt") as f:
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
    assert {d for d in dtypes if d.startswith(("F", "BF"))} == {"F16"}, dtypes  # integer buffers stay as they are


# ---------------------------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("model")
    create_model("vitpose-tiny", input_size=(48, 64)).save_pretrained(path)
    return path


def test_cli_predict_image_and_folder(tmp_path, tiny_model_dir, capsys, caplog):
    images = tmp_path / "in"
    images.mkdir()
    frame = _dots_image([(100, 100)])
    cv2.imwrite(str(images / "one.jpg"), frame)
    cv2.imwrite(str(images / "two.png"), frame)
    (images / "broken.jpg").write_bytes(b"garbage")
    out = tmp_path / "out"
    assert main(["predict", str(images / "one.jpg"), "--out", str(out), "--model", str(tiny_model_dir), "--detector", "none"]) == 0
    data = json.loads((out / "one.jpg.json").read_text())
    assert len(data["people"]) == 1 and cv2.imread(str(out / "one.jpg.poses.jpg")).shape == (240, 320, 3)
    out2 = tmp_path / "out2"
    with caplog.at_level(logging.WARNING, logger="poseforge"):
        assert main(["predict", str(images), "--out", str(out2), "--model", str(tiny_model_dir), "--detector", "none"]) == 0
    assert sorted(p.name for p in out2.iterdir()) == ["one.jpg.json", "one.jpg.poses.jpg", "predictions.json",
                                                      "two.png.json", "two.png.poses.jpg"]
    assert len(json.loads((out2 / "predictions.json").read_text())) == 2
    assert [r.getMessage().split(":")[0] for r in caplog.records if r.levelno == logging.WARNING] == \
        [f"skipping {images / 'broken.jpg'}"]
    assert main(["predict", str(tmp_path / "missing.jpg"), "--out", str(out2)]) == 2
    assert "no such file" in capsys.readouterr().err


def test_cli_predict_real_photos_with_rtmdet(tmp_path, peer_data, tiny_model_dir):
    pytest.importorskip("onnxruntime")
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("000000000785.jpg", "000000040083.jpg", "000000196141.jpg", "000000197388.jpg"):
        (photos / name).write_bytes((peer_data / "coco" / name).read_bytes())
    out = tmp_path / "out"
    rc = main(["predict", str(photos), "--out", str(out), "--model", str(tiny_model_dir),
               "--detector", str(peer_data / "models" / "rtmdet-nano-person.onnx"), "--no-flip"])
    assert rc == 0
    counts = [len(r["people"]) for r in json.loads((out / "predictions.json").read_text())]
    assert counts == [1, 2, 4, 5]
    from poseforge.data.transforms import bbox_xywh_to_center_scale

    for r in json.loads((out / "predictions.json").read_text()):
        for person in r["people"]:
            x1, y1, x2, y2 = person["box"]
            center, scale = bbox_xywh_to_center_scale(np.array([x1, y1, x2 - x1, y2 - y1]), 48 / 64, 1.25)
            k = np.array(person["keypoints"])[:, :2]
            # keypoints come from the crop around the box (padded, aspect-fixed): inside it
            assert (np.abs(k - center) <= scale / 2 + 1).all()


def test_cli_predict_real_photos_with_bundled_models(tmp_path, peer_data):
    out = tmp_path / "out"
    assert main(["predict", str(peer_data / "coco" / "000000196141.jpg"), "--out", str(out)]) == 0
    data = json.loads((out / "000000196141.jpg.json").read_text())
    assert data["keypoint_set"] == "coco17" and data["width"] == 640


def test_predictor_agrees_with_the_evaluator():
    """Two crop implementations (the predictor's batched grid_sample, the evaluator's per-box cv2.warpAffine)
    give the same keypoints for the same model and boxes, up to interpolation rounding."""
    from poseforge.data.evalsets import synthetic_eval_set
    from poseforge.evaluation.evaluator import predict_dataset

    data = synthetic_eval_set(num_images=6, seed=3_000_041, image_size=(320, 240), people=(1, 3))
    predictor = Predictor("bundled", detector=None, device="cpu", flip_test=True)
    reference = predict_dataset(predictor.model, data, flip_test=True, batch_size=16).raw_results()
    images = data.load_images([int(i) for i in np.unique(data.image_ids)])
    ours = []
    for image_id in dict.fromkeys(data.image_ids.tolist()):
        rows = data.image_ids == image_id
        # the evaluator clips ground-truth boxes to the image before cropping; so does this call
        xywh = data.boxes[rows]
        x1, y1 = np.clip(xywh[:, 0], 0, 319), np.clip(xywh[:, 1], 0, 239)
        x2, y2 = np.clip(xywh[:, 0] + xywh[:, 2], 0, 319), np.clip(xywh[:, 1] + xywh[:, 3], 0, 239)
        ours += predictor.predict(images[image_id], boxes=np.stack([x1, y1, x2, y2], 1)).to_coco(image_id=image_id)
    assert len(ours) == len(reference)
    a = np.array([r["keypoints"] for r in ours]).reshape(-1, 17, 3)
    b = np.array([r["keypoints"] for r in reference]).reshape(-1, 17, 3)
    distance = np.linalg.norm(a[..., :2] - b[..., :2], axis=-1)
    assert np.median(distance) < 0.5 and np.mean(distance < 2.0) > 0.95, np.percentile(distance, [50, 95, 100])
    assert np.abs(a[..., 2] - b[..., 2]).mean() < 0.02


def test_predictor_runs_convolutions_in_nhwc_with_the_same_poses():
    model = create_model("vitpose-tiny", input_size=(48, 64), stem="conv", stem_depth=2, patch_size=8, embed_dim=32,
                         depth=1, num_heads=2).eval()
    reference = copy.deepcopy(model)
    predictor = Predictor(model, detector=None, device="cpu")
    stem = predictor.model.backbone.patch_embed.stem[0].weight
    assert stem.is_contiguous(memory_format=torch.channels_last) and not stem.is_contiguous()
    image = np.random.default_rng(0).integers(0, 256, (120, 90, 3), dtype=np.uint8)
    boxes = np.array([[10.0, 5.0, 60.0, 100.0], [30.0, 20.0, 40.0, 70.0]])
    found = predictor.predict(image, boxes=boxes, box_format="xywh")
    expected = Predictor(reference, detector=None, device="cpu")
    expected.model.to(memory_format=torch.contiguous_format)
    assert expected.model.backbone.patch_embed.stem[0].weight.is_contiguous()
    want = expected.predict(image, boxes=boxes, box_format="xywh")
    np.testing.assert_allclose(found.keypoints, want.keypoints, atol=1e-3)
    np.testing.assert_allclose(found.keypoint_scores, want.keypoint_scores, atol=1e-4)
