"""Multi-dataset training (ViTPose++): the task-balanced loss equals the official per-head masked loss,
mixed samples carry padded keypoints and their dataset index, a run over people + whole bodies +
quadrupeds trains, validates per dataset and merges into per-task plain models with equal outputs."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from poseforge.data.batch import collate
from poseforge.data.evalsets import synthetic_eval_set
from poseforge.errors import PoseforgeError
from poseforge.evaluation import CocoKeypointMetric
from poseforge.models import load_model
from poseforge.models.losses import TaskBalancedHeatmapLoss
from poseforge.models.merge import merge_experts
from poseforge.outputs import Predictions
from poseforge.train import Trainer, load_config
from poseforge.train.engine import format_task_table

MIX = ["model.name=vitpose++-tiny", "model.overrides={input_size: [48, 64], head: simple, depth: 1}",
       "data.sources=[{task: coco}, {task: wholebody, ratio: 2}, {task: ap10k}]",
       "data.synthetic.train_images=48", "data.synthetic.val_images=4", "schedule.epochs=1", "val_interval=1",
       "data.batch_size=8", "data.val_batch_size=8", "log_interval=1", "schedule.warmup_iters=1"]


def test_task_balanced_loss_equals_the_official_per_head_sum():
    torch.manual_seed(0)
    sizes = torch.tensor([17.0, 133.0, 17.0])
    index = torch.tensor([1, 0, 2, 0, 1])
    kmax, b = 133, len(index)
    outputs, heatmaps = torch.randn(b, kmax, 8, 6), torch.rand(b, kmax, 8, 6)
    weights = (torch.rand(b, kmax) > 0.3).float()
    loss = TaskBalancedHeatmapLoss(sizes)(outputs, {"heatmaps": heatmaps, "target_weights": weights, "dataset_index": index})
    # Official TopDownMoE: every head on the whole batch, targets and weights masked to its samples,
    # JointsMSELoss = mean over the batch and the head's keypoints; the heads' losses summed.
    official = 0.0
    for t, k in enumerate(sizes.long().tolist()):
        mask = (index == t).float()
        err = (outputs[:, :k] - heatmaps[:, :k]).square().mean(dim=(2, 3)) * weights[:, :k] * mask[:, None]
        official = official + err.mean()
    torch.testing.assert_close(loss, official)


def test_mixed_run_trains_reports_per_dataset_ap_and_merges(tmp_path):
    trainer = Trainer(load_config("smoke", MIX), tmp_path / "run", progress=False)
    keys = next(iter(trainer.sampler))
    batch = collate(trainer.samples.__getitems__(keys))
    assert batch.keypoints.shape == (8, 133, 2) and set(batch.dataset_index.tolist()) <= {0, 1, 2}
    body = batch.dataset_index != 1
    assert bool((batch.visibility[body, 17:] == 0).all())  # padding beyond 17 keypoints is never labeled
    summary = trainer.fit()
    stats = summary["last_stats"]
    assert {"coco/AP", "wholebody/AP", "ap10k/AP", "AP"} <= set(stats)
    assert stats["AP"] == pytest.approx((stats["coco/AP"] + stats["wholebody/AP"] + stats["ap10k/AP"]) / 3)
    table = format_task_table(stats)
    assert table.splitlines()[0].split() == ["task", "AP", "AP50", "AP75", "AR", "PCK@0.2", "EPE"] and "wholebody" in table
    assert all(0.0 <= stats[f"{t}/PCK@0.2"] <= 1.0 for t in ("coco", "wholebody", "ap10k"))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any(r["kind"] == "val" and "ap10k/AP" in r for r in records)
    model = load_model(tmp_path / "run" / "best")
    x = (torch.rand(2, 3, 64, 48) * 255).round()
    for task in ("coco", "wholebody", "ap10k"):
        merged = merge_experts(model, task)
        with torch.no_grad():
            assert (merged(merged.normalize(x)).heatmaps - model(model.normalize(x), task).heatmaps).abs().max() < 1e-5


def test_mixed_data_errors(tmp_path):
    with pytest.raises(PoseforgeError, match="needs a multi-task model"):
        Trainer(load_config("smoke", MIX + ["model.name=vitpose-tiny", "model.overrides={input_size: [48, 64]}"]),
                tmp_path / "a", progress=False)
    with pytest.raises(PoseforgeError, match=r"data.sources\[1\].task: unknown task 'horse'"):
        Trainer(load_config("smoke", MIX + ["data.sources=[{task: coco}, {task: horse}]"]), tmp_path / "b", progress=False)
    with pytest.raises(PoseforgeError, match="at least one source needs a positive ratio"):
        load_config("smoke", MIX + ["data.sources=[{task: coco, ratio: 0}]"])


def test_pck_is_computed_against_the_matching_ground_truth():
    eval_set = synthetic_eval_set(num_images=6, seed=5, image_size=(48, 64), people=(1, 2), clutter=False)
    people = {i.instance_id: i for i in eval_set.gt.instances}
    # Oracle predictions in box order: each box's own person, one keypoint shifted by 0.3 x box side.
    keypoints = []
    for instance_id, box in zip(eval_set.box_instance_ids, eval_set.boxes):
        kp = people[int(instance_id)].keypoints.astype(np.float64).copy()
        kp[0, 0] += 0.3 * max(box[2], box[3])
        keypoints.append(kp)
    n = len(keypoints)
    ones = torch.ones(n, 1, dtype=torch.float64)
    predictions = Predictions(torch.as_tensor(np.stack(keypoints))[:, None], torch.ones(n, 1, 17),
                              torch.ones(n, 1, dtype=torch.bool), instance_scores=ones,
                              areas=torch.as_tensor(eval_set.boxes[:, 2] * eval_set.boxes[:, 3])[:, None])
    batch = {"image_id": torch.as_tensor(eval_set.image_ids), "instance_id": torch.as_tensor(eval_set.box_instance_ids),
             "index": torch.arange(n)}
    metric = CocoKeypointMetric(eval_set.gt)
    metric.update(predictions, batch)
    stats = metric.compute()
    labeled = [i for i in eval_set.gt.instances if i.num_labeled]
    nose_labeled = np.mean([i.visibility[0] > 0 for i in labeled])
    # Every keypoint but the nose is exact; PCK averages per keypoint: the nose column is 0 where labeled.
    assert stats["PCK@0.2"] == pytest.approx(16 / 17 if nose_labeled > 0 else 1.0)
    assert stats["AP50"] > 0.9
    # Shuffled instance ids pair predictions with the wrong people: PCK drops.
    wrong = CocoKeypointMetric(eval_set.gt)
    wrong.update(predictions, {**batch, "instance_id": batch["instance_id"].roll(1)})
    assert wrong.compute()["PCK@0.2"] < stats["PCK@0.2"]


def test_mixed_run_on_real_files_of_three_formats(tmp_path, peer_data):
    # COCO, AIC (COCO-style, no area) and MPII (list format) samples: each source trains and validates its task.
    sources = (f"[{{task: coco, train: '{peer_data / 'coco' / 'test_coco.json'}'}}, "
               f"{{task: aic, train: '{peer_data / 'aic' / 'test_aic.json'}', format: aic}}, "
               f"{{task: mpii, train: '{peer_data / 'mpii' / 'test_mpii.json'}', format: mpii}}]")
    config = load_config("smoke", MIX + [f"data.sources={sources}", "data.batch_size=4",
                                         "model.overrides.tasks=[[coco, coco17], [aic, aic14], [mpii, mpii16]]"])
    trainer = Trainer(config, tmp_path / "run", progress=False)
    assert [len(s) for s in trainer.source.sources] == [12, 9, 5] and len(trainer.source) == 26
    keys = next(iter(trainer.sampler))
    batch = collate(trainer.samples.__getitems__(keys))
    assert batch.keypoints.shape == (4, 17, 2)  # padded to the largest set (17)
    stats = trainer.fit()["last_stats"]
    assert {"coco/AP", "aic/AP", "mpii/AP", "mpii/PCK@0.2"} <= set(stats)
