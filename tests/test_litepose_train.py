"""``poseforge train --config litepose-xs-synth`` (shrunk to a couple of steps), then ``poseforge eval`` and
``poseforge predict --model RUN`` on multi-person synthetic scenes and real photos, with no detector."""
from __future__ import annotations

import json

import numpy as np
import pytest

from poseforge.cli import main
from poseforge.train import load_config

pytestmark = pytest.mark.usefixtures("one_thread")

# The preset as it is, shrunk: a 64x64 LitePose-XS with one block per stage, two steps of two scenes.
TINY = ['model.overrides={"keypoint_set": "coco17", "input_size": [64, 64], "depths": [1, 1, 1, 1], "codec": '
        '{"name": "associative-embedding", "hr_heatmaps": true, "max_people": 5}}',
        "data.synthetic.image_size=[64, 64]", "data.synthetic.train_images=4", "data.synthetic.val_images=2",
        "data.batch_size=2", "data.val_batch_size=2", "data.num_workers=0", "schedule.epochs=1",
        "schedule.steps_per_epoch=2", "schedule.warmup_iters=1", "log_interval=1", "threads=1"]


def test_preset_is_litepose_xs_on_multi_person_scenes():
    config = load_config("litepose-xs-synth")
    s = config.data.synthetic
    assert config.model.name == "litepose-xs" and config.model.overrides["keypoint_set"] == "coco17"
    assert s.people == (1, 6) and s.val_people == (1, 6) and s.image_size == (256, 256) and s.val_seed != s.seed
    assert config.data.train == "synthetic" and config.data.augment.half_body_prob == 0.0


def test_train_eval_predict_without_a_detector(tmp_path, capsys, coco_file):
    run = tmp_path / "run"
    args = ["train", "--config", "litepose-xs-synth", "--out", str(run)]
    for item in TINY:
        args += ["--set", item]
    assert main(args) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in records].count("train") == 2 and all(np.isfinite(r["loss"]) for r in records if r["kind"] == "train")
    assert any(r["kind"] == "val" and 0.0 <= r["AP"] <= 1.0 for r in records)
    capsys.readouterr()
    # the run's held-out scenes, then the real COCO photos (every person of each image, no boxes given)
    assert main(["eval", "--model", str(run), "--data", "synthetic", "--workers", "0"]) == 0
    assert "people=1-6" in capsys.readouterr().out
    assert main(["eval", "--model", str(run), "--data", str(coco_file), "--workers", "0", "--no-flip"]) == 0
    assert "AP" in capsys.readouterr().out

    from poseforge.data.synth import SyntheticPoseDataset
    import cv2

    scene = SyntheticPoseDataset(1, seed=3, image_size=(128, 96), people=(3, 3), clutter=False).render(0).image
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "scene.png"), scene[..., ::-1])
    (images / "photo.jpg").symlink_to(coco_file.parent / "000000196141.jpg")
    out = tmp_path / "predictions"
    assert main(["predict", "--model", str(run), "--out", str(out), str(images)]) == 0
    printed = capsys.readouterr().out
    assert "detector" not in printed  # a bottom-up model runs alone
    results = {r["file_name"]: r for r in json.loads((out / "predictions.json").read_text())}
    assert set(results) == {"scene.png", "photo.jpg"}
    assert all(isinstance(r["people"], list) and r["keypoint_set"] == "coco17" for r in results.values())
    assert (out / "photo.jpg.poses.jpg").is_file()


def test_a_small_litepose_memorizes_people_and_their_left_from_right():
    """Targets, loss, flip-free decode and grouping train end to end: a small LitePose fitted to four fixed
    scenes finds every person there with each joint on its own side (a left/right pair swapped, or two people
    mixed, would put joints tens of pixels off)."""
    import torch

    from poseforge.data.synth import SyntheticPoseDataset
    from poseforge.models.zoo import create_model

    torch.manual_seed(0)
    size = 128
    model = create_model("litepose-xs", keypoint_set="coco17", input_size=[size, size], depths=[1, 1, 1, 1],
                         codec={"name": "associative-embedding", "hr_heatmaps": True, "max_people": 5})
    scenes = [SyntheticPoseDataset(4, seed=21, image_size=(size, size), people=(1, 2), framing="scene",
                                   clutter=False).render(i) for i in range(4)]
    people = max(len(s.instances) for s in scenes)
    keypoints = torch.zeros(4, people, 17, 2)
    visibility = torch.zeros(4, people, 17)
    for i, scene in enumerate(scenes):
        for n, person in enumerate(scene.instances):
            keypoints[i, n] = torch.as_tensor(person.keypoints, dtype=torch.float32)
            visibility[i, n] = torch.as_tensor(person.visibility, dtype=torch.float32)
    valid = (visibility > 0).sum(-1) > 0
    images = torch.stack([torch.from_numpy(s.image).permute(2, 0, 1) for s in scenes])
    batch = {"keypoints": keypoints, "visibility": visibility, "valid": valid}
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    for _ in range(300):
        loss = model.loss(model(model.normalize(images.float())), batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    pred = model.predict(images, flip_test=False)
    labeled = visibility > 0
    found, sides = 0, []
    for i in range(4):
        for n in range(people):
            if not valid[i, n]:
                continue
            # the predicted person whose joints are nearest this one's
            err = (pred.keypoints[i] - keypoints[i, n]).norm(dim=-1)  # [M, 17]
            mean_err = (err * labeled[i, n]).sum(-1) / labeled[i, n].sum()
            mean_err[~pred.valid[i]] = float("inf")
            m = int(mean_err.argmin())
            found += bool(mean_err[m] < 4.0)
            for a, b in ((5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)):
                gap = (keypoints[i, n, a] - keypoints[i, n, b]).norm()
                if labeled[i, n, a] and labeled[i, n, b] and gap > 6:
                    sides.append(bool(err[m, a] < (pred.keypoints[i, m, a] - keypoints[i, n, b]).norm()))
    assert found == int(valid.sum()), f"{found} of {int(valid.sum())} people found within 4 px"
    assert len(sides) >= 8 and np.mean(sides) > 0.9, f"sides right {np.mean(sides):.2f} of {len(sides)}"
