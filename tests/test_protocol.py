"""The estimator protocol: a bottom-up and a dense stub family (tests/protocol_stubs.py registers only their
parts) train, evaluate and predict through the same Trainer, evaluator and Predictor as ViTPose, and the
pieces the protocol adds (whole-image transform, instance-padded batches, dense metrics) are exact."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from poseforge.cli import main
from poseforge.data.batch import collate
from poseforge.data.evalsets import synthetic_eval_set
from poseforge.data.image_transform import ImageTransform
from poseforge.data.synth import SAPIENS_PART_CLASSES
from poseforge.data.synth.classes import part_flip_index
from poseforge.data.transforms import affine_points, invert_affine
from poseforge.evaluation import CocoKeypointMetric, DenseMetric, evaluate
from poseforge.inference.predictor import Predictor
from poseforge.models import BottomUpEstimator, DenseEstimator, create_model, load_model
from poseforge.outputs import DenseMaps, HeatmapsTags, Predictions
from poseforge.train import Trainer, load_config
from tests import protocol_stubs  # noqa: F401  (registers the stub families)

pytestmark = pytest.mark.usefixtures("one_thread")

STUB_RUN = ["data.synthetic.image_size=[96, 128]", "data.synthetic.people=[1, 3]", "data.synthetic.val_people=[1, 3]",
            "data.synthetic.train_images=8", "data.synthetic.val_images=3", "data.batch_size=4", "data.val_batch_size=4",
            "schedule.epochs=1", "schedule.steps_per_epoch=1", "schedule.warmup_iters=1", "val_interval=1",
            "log_interval=1", "data.num_workers=0", "compile=false", "model.pos_embed_init=model", "model.overrides={}"]


def held_out(people=(1, 3), images=3):
    return synthetic_eval_set(num_images=images, seed=11, image_size=(96, 128), people=people, clutter=False)


def run_stub(name: str, tmp_path, capsys):
    trainer = Trainer(load_config("smoke", [f"model.name={name}", *STUB_RUN]), tmp_path / "run", progress=False)
    assert isinstance(trainer.transform, ImageTransform)  # whole images, chosen by the model, not the trainer
    summary = trainer.fit()
    assert summary["steps"] == 1 and summary["best_score"] is not None
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert train and np.isfinite(train[0]["loss"])
    assert any(r["kind"] == "val" and summary["best_metric"] in r for r in records)
    capsys.readouterr()
    assert main(["eval", "--model", str(tmp_path / "run"), "--data", "synthetic", "--workers", "0"]) == 0
    assert summary["best_metric"] in capsys.readouterr().out
    return summary, load_model(tmp_path / "run")


# ---------------------------------------------------------------------------------------------- bottom-up
def test_bottom_up_stub_trains_evaluates_and_predicts(tmp_path, capsys):
    summary, model = run_stub("stub-bottomup", tmp_path, capsys)
    assert summary["best_metric"] == "AP" and isinstance(model, BottomUpEstimator)
    batch = collate([model.transform(True)(r, i) for r, i in zip(
        held_out().image_records(), held_out().load_images([0, 1, 2]).values())])
    assert batch.keypoints.shape[:1] == (3,) and batch.keypoints.shape[2:] == (17, 2) and batch.valid.dtype == torch.bool
    stats = evaluate(model, held_out(), batch_size=2).stats
    assert {"AP", "AR"} <= set(stats) and "PCK@0.2" not in stats  # no boxes: predictions pair with no one
    predictor = Predictor(tmp_path / "run", detector="bundled", device="cpu")
    assert predictor.detector is None  # a bottom-up model finds people itself
    image = held_out().load_images([1])[1]
    result = predictor.predict(image)
    assert result.keypoints.shape == (len(result), 17, 2) and result.boxes.shape == (len(result), 4)
    assert result.draw().shape == image.shape
    assert all(r["image_id"] == 7 for r in result.to_coco(image_id=7))
    with pytest.raises(Exception, match="finds every person itself"):
        model.predict(torch.zeros(1, 3, 96, 128), [[0, 0, 10, 10]])


def test_bottom_up_codec_groups_ground_truth_people_and_scores_ap_one():
    """Perfect maps of the labels (at stride 1, so no cell rounding): decoding finds every person, maps it
    back to image pixels, and COCO AP is ~1."""
    model = create_model("stub-bottomup", codec={"name": "stub-ae", "stride": 1}).eval()
    data = held_out(people=(2, 3), images=4)
    transform = model.transform(False)
    images = data.load_images(list(data.gt.images))
    records = data.image_records()
    batch = collate([transform(r, images[r.image_id]) for r in records])
    targets = model.codec.encode(batch)
    decoded = model.codec.decode_predictions(HeatmapsTags(targets["heatmaps"], targets["tags"]))
    predictions = model._to_image(decoded, batch.matrix)
    metric = model.metric(data)
    metric.update(predictions, batch)
    stats = metric.compute()
    assert stats["AP"] > 0.95, stats
    # Every labeled keypoint of every person is within a cell of its decoded position.
    for b, record in enumerate(records):
        found = predictions.keypoints[b][predictions.valid[b]].numpy()
        for person in record.instances:
            labeled = person.visibility > 0
            if labeled.sum() < 2:
                continue
            error = np.abs(found[:, labeled] - person.keypoints[labeled][None]).max(-1).max(-1)
            assert error.min() < 1.0 + 1e-6  # within the half-pixel rounding of a map cell


def test_image_transform_maps_people_back_exactly_and_flips_left_and_right():
    data = held_out(people=(2, 2), images=1)
    record = data.image_records()[0]
    image = data.load_images([0])[0]
    sample = ImageTransform((64, 64), "coco17")(record, image)
    back = affine_points(sample["keypoints"].double(), invert_affine(sample["matrix"].double()))
    for n, person in enumerate(p for p in record.instances if not p.iscrowd):
        np.testing.assert_allclose(back[n].numpy(), person.keypoints, atol=1e-3)
    flipped = ImageTransform((64, 64), "coco17", augment=_flip_only())(record, image, torch.Generator().manual_seed(0))
    assert bool(flipped["flipped"])
    plain = sample["keypoints"]
    # The left shoulder (5) of the mirrored image sits where the right shoulder (6) was, mirrored (same
    # aspect ratio both ways: the fit is exact, so mirroring is x -> 63 - x).
    torch.testing.assert_close(flipped["keypoints"][:, 5, 0], 63 - plain[:, 6, 0], atol=1e-3, rtol=0)
    torch.testing.assert_close(flipped["keypoints"][:, 5, 1], plain[:, 6, 1], atol=1e-3, rtol=0)


def _flip_only():
    from poseforge.data.augment import AugmentConfig

    return AugmentConfig(flip_prob=1.0, half_body_prob=0.0, shift_prob=0.0, scale_prob=0.0, rotate_prob=0.0)


# ---------------------------------------------------------------------------------------------- dense
def test_dense_stub_trains_evaluates_and_predicts(tmp_path, capsys):
    summary, model = run_stub("stub-dense", tmp_path, capsys)
    assert summary["best_metric"] == "mIoU" and isinstance(model, DenseEstimator)
    stats = evaluate(model, held_out(), batch_size=2).stats
    assert {"mIoU", "pixel_acc", "AbsRel", "RMSE", "delta1"} <= set(stats) and 0 <= stats["mIoU"] <= 1
    predictor = Predictor(tmp_path / "run", device="cpu")
    assert predictor.detector is None and predictor.keypoint_set is None
    image = held_out().load_images([2])[2]
    result = predictor.predict(image)
    assert len(result) == 0 and result.dense["seg"].shape == image.shape[:2] and result.dense["depth"].shape == image.shape[:2]
    assert result.dense["seg"].max() < len(SAPIENS_PART_CLASSES) and result.draw().shape == image.shape


def test_dense_labels_warp_with_the_image_and_perfect_maps_score_perfectly():
    model = create_model("stub-dense").eval()
    data = held_out(images=2)
    dense = data.load_dense([0, 1])
    images = data.load_images([0, 1])
    records = [dataclasses.replace(r, dense=dense[r.image_id]) for r in data.image_records()]
    batch = collate([model.transform(False)(r, images[r.image_id]) for r in records])
    assert batch.seg.shape == (2, 128, 96) and batch.depth.shape == (2, 128, 96)
    assert int((batch.seg == 255).sum()) == 0  # same aspect ratio: no padding to ignore
    # Perfect predictions: one-hot classes, the true depth (and a scaled copy: relative depth is scale-free).
    onehot = torch.nn.functional.one_hot(batch.seg.long(), len(SAPIENS_PART_CLASSES)).permute(0, 3, 1, 2).float()
    for scale in (1.0, 3.0):
        metric = model.metric(data)
        empty = torch.zeros(2, 0, 0, 2)
        metric.update(Predictions(empty, empty[..., 0], torch.zeros(2, 0, dtype=torch.bool),
                                  dense=DenseMaps(onehot, batch.depth[:, None] * scale)), batch)
        stats = metric.compute()
        assert stats["mIoU"] == pytest.approx(1.0) and stats["AbsRel"] == pytest.approx(0.0, abs=1e-6)
        assert stats["delta1"] == pytest.approx(1.0)
    wrong = DenseMetric(("seg",), len(SAPIENS_PART_CLASSES))
    wrong.update(Predictions(empty, empty[..., 0], torch.zeros(2, 0, dtype=torch.bool), dense=DenseMaps(onehot.roll(1, 1))),
                 batch)
    assert wrong.compute()["mIoU"] < 0.5
    # Flip augmentation swaps left and right part classes with the pixels.
    flipped = model.transform(True, _flip_only())(records[0], images[0], torch.Generator().manual_seed(0))
    left_hand, right_hand = SAPIENS_PART_CLASSES.index("Left_Hand"), SAPIENS_PART_CLASSES.index("Right_Hand")
    plain = batch.seg[0]
    mirrored = flipped["seg"].flip(-1)  # undo the mirror: the classes stay swapped
    swap = torch.arange(256)
    swap[:len(SAPIENS_PART_CLASSES)] = torch.as_tensor(part_flip_index())
    assert swap[left_hand] == right_hand and swap[right_hand] == left_hand and swap[0] == 0
    assert torch.equal(swap[plain.long()], mirrored.long()) and bool((plain == left_hand).any() | (plain == right_hand).any())


def test_keypoint_metric_pairs_predictions_with_people_only_in_ground_truth_boxes():
    data = held_out(images=2)
    metric = CocoKeypointMetric(data.gt)
    n = len(data)
    predictions = Predictions(torch.zeros(n, 1, 17, 2, dtype=torch.float64), torch.ones(n, 1, 17),
                              torch.ones(n, 1, dtype=torch.bool))
    metric.update(predictions, {"image_id": torch.as_tensor(data.image_ids), "index": torch.arange(n)})
    assert "PCK@0.2" not in metric.compute()
