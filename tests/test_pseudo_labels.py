"""Self-training on unlabeled images: ``pseudo_label`` (threshold, dropped people, the COCO file), the
``poseforge pseudo-label`` command, and ``poseforge train --unlabeled`` (labels in the run folder, the mix,
validation untouched, resume without relabelling). A few 128x160 synthetic images, 2-step runs: seconds."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

import poseforge.train.pseudo as pseudo
from poseforge.cli import main
from poseforge.data.coco import read_coco
from poseforge.data.sources import FileSource
from poseforge.errors import DataError, PoseforgeError
from poseforge.keypoints import get_keypoint_set
from poseforge.models import create_model, load_model
from poseforge.outputs import Predictions
from poseforge.train import load_config
from poseforge.train.data import TrainSamples, build_self_training_source, build_val_sets, collate_raw, gpu_batch
from poseforge.train.pseudo import prepare_pseudo_labels, pseudo_label

# The tiny training run of tests/test_train_engine.py, 2 steps; the teacher is the bundled model.
TINY = ["model.overrides={input_size: [48, 64], head: simple}", "data.synthetic.train_images=16",
        "data.synthetic.val_images=4", "data.synthetic.image_size=[48,64]", "data.batch_size=4", "data.val_batch_size=4",
        "schedule.epochs=1", "schedule.warmup_iters=2", "val_interval=1", "log_interval=1", "threads=1", "max_steps=2"]
SETS = [a for s in TINY for a in ("--set", s)]
K = 17


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """Four unlabeled frames of one synthetic person each: three JPEGs, a PNG in a sub-folder, and a text file."""
    from poseforge.data.synth import SyntheticPoseDataset

    folder = tmp_path_factory.mktemp("frames")
    (folder / "clip").mkdir()
    for r in SyntheticPoseDataset(4, seed=5, image_size=(128, 160), people=(1, 1), clutter=False).render_batch(range(4)):
        name = f"clip/{r.index}.png" if r.index == 3 else f"{r.index}.jpg"
        assert cv2.imwrite(str(folder / name), cv2.cvtColor(r.image, cv2.COLOR_RGB2BGR))
    (folder / "notes.txt").write_text("not an image")
    return folder


def _fake_teacher(monkeypatch, scores):
    """The bundled model with its predictions replaced: image i gets one person with ``scores[i]`` and
    keypoint k at (10 + k, 20 + k), in the box it was given."""
    model = load_model("bundled")
    queue = iter(scores)

    def predict(images, boxes=None, **kwargs):
        s = torch.tensor(next(queue), dtype=torch.float32)[None, None]
        k = torch.arange(K, dtype=torch.float32)
        keypoints = torch.stack([10 + k, 20 + k], -1)[None, None]
        return Predictions(keypoints, s, torch.ones(1, 1, dtype=torch.bool), boxes=boxes[0][None].float())

    monkeypatch.setattr(model, "predict", predict)
    return model


def test_threshold_and_min_keypoints_make_the_labels(frames, tmp_path, monkeypatch):
    t = np.float32(0.5)
    below, above = float(np.nextafter(t, np.float32(0))), float(np.nextafter(t, np.float32(1)))
    first = [below, float(t), above] + [0.9] * 3 + [0.1] * (K - 6)  # 5 labels: a training person
    few = [0.9] * 4 + [0.2] * (K - 4)  # 4 labels < min_keypoints: kept as a box only
    teacher = _fake_teacher(monkeypatch, [first, few, first, first])
    out = tmp_path / "pseudo.json"
    written = pseudo_label(teacher, frames, out, threshold=0.5, min_keypoints=5, detector="none", device="cpu")
    assert (written.images, written.people, written.dropped, written.keypoints) == (4, 3, 1, 15)

    gt = read_coco(out, image_root=frames, check_images=True)  # poseforge's own reader takes it back
    assert [i.file_name for i in gt.images.values()] == ["0.jpg", "1.jpg", "2.jpg", "clip/3.png"]
    assert all((i.width, i.height) == (128, 160) for i in gt.images.values())
    assert gt.keypoint_set.name == "coco17" and len(gt.instances) == 4
    doc = json.loads(out.read_text())
    assert doc["categories"][0]["keypoints"] == list(get_keypoint_set("coco17").names)
    assert doc["info"]["pseudo_labels"] == {"teacher": "vitpose-tiny", "images": str(frames), "threshold": 0.5,
                                            "min_keypoints": 5, "detector": "none", "flip_test": True}
    people = {i.image_id: i for i in gt.instances}
    expected = np.array([0, 2, 2, 2, 2, 2] + [0] * (K - 6))  # just below the threshold: 0; at and just above: 2
    np.testing.assert_array_equal(people[1].visibility, expected)
    xy = np.stack([10 + np.arange(K), 20 + np.arange(K)], -1) * (expected > 0)[:, None]
    np.testing.assert_allclose(people[1].keypoints, xy)  # unlabeled keypoints are (0, 0, 0), as COCO writes them
    np.testing.assert_allclose(people[1].bbox, [0, 0, 128, 160])  # the box it was predicted in (detector none)
    assert people[1].area == 128 * 160
    assert [a["num_keypoints"] for a in doc["annotations"]] == [5, 0, 5, 5]
    assert people[2].num_labeled == 0 and not people[2].keypoints.any()  # dropped: no label left
    # training takes the three people with labels, not the dropped one
    assert sorted(i.image_id for i in FileSource(out, frames).units) == [1, 3, 4]


def test_bad_input_is_one_line_naming_it(frames, tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("x")
    for threshold in (-0.1, 1.5, float("nan")):
        with pytest.raises(PoseforgeError, match=r"threshold: expected a keypoint score in \[0, 1\]"):
            pseudo_label("bundled", frames, tmp_path / "a.json", threshold=threshold)
    with pytest.raises(PoseforgeError, match=f"{empty}: no images"):
        pseudo_label("bundled", empty, tmp_path / "a.json")
    with pytest.raises(PoseforgeError, match="no such folder"):
        pseudo_label("bundled", tmp_path / "missing", tmp_path / "a.json")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.jpg").write_bytes(cv2.imencode(".jpg", np.zeros((32, 32, 3), np.uint8))[1].tobytes())
    (broken / "b.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=f"{broken / 'b.jpg'}") as error:
        pseudo_label(_fake_teacher(monkeypatch, [[0.9] * K]), broken, tmp_path / "a.json", detector="none", device="cpu")
    assert "\n" not in str(error.value) and not (tmp_path / "a.json").exists()  # nothing written
    assert main(["pseudo-label", "--images", str(empty), "--out", str(tmp_path / "b.json")]) == 2


def test_an_existing_file_is_replaced_only_with_force(frames, tmp_path, monkeypatch, capsys):
    out = tmp_path / "pseudo.json"
    out.write_text("{}")
    with pytest.raises(PoseforgeError, match="already exists; use --force"):
        pseudo_label(_fake_teacher(monkeypatch, []), frames, out, detector="none")
    assert out.read_text() == "{}"
    assert main(["pseudo-label", "--images", str(frames), "--out", str(out), "--detector", "none"]) == 2
    assert "already exists" in capsys.readouterr().err and out.read_text() == "{}"
    pseudo_label(_fake_teacher(monkeypatch, [[0.9] * K] * 4), frames, out, detector="none", device="cpu", force=True)
    assert len(read_coco(out, image_root=frames).instances) == 4


def _train(run, *extra):
    return main(["train", "--config", "smoke", "--out", str(run), *extra, *SETS])


def test_train_unlabeled_labels_mixes_and_resumes(frames, tmp_path, monkeypatch, one_thread):
    run = tmp_path / "run"
    assert _train(run, "--unlabeled", str(frames), "--teacher", "bundled", "--pseudo-threshold", "0.3",
                  "--unlabeled-ratio", "0.5", "--set", "data.unlabeled.detector=bundled") == 0
    labels = run / "pseudo_labels.json"
    config = load_config(run / "config.yaml")
    u = config.data.unlabeled  # the run records what it used
    assert (u.images, u.labels, u.teacher, u.detector, u.threshold, u.ratio) == (
        str(frames), str(labels), "bundled", "bundled", 0.3, 0.5)
    assert json.loads(labels.read_text())["info"]["pseudo_labels"]["teacher"] == "bundled"
    # the training data: 16 synthetic people and half as many pseudo-labelled samples per epoch
    model = create_model(config.model.name, **config.model.overrides)
    source = build_self_training_source(config, model)
    assert len(source) == 24 and len(source.sources[1]) >= 1
    located, _ = source.mix.locate(range(24))
    assert np.bincount(located).tolist() == [16, 8]
    samples = source.load(np.flatnonzero(located == 1)[:2].tolist())
    assert all(r.image_path.startswith(str(frames)) and k == 1 for r, _, k in samples)
    # one transform for both sources: GPU-style batches (cropped by apply_batch) work on the mix
    transform = model.transform(True, config.data.augment)
    raw = collate_raw(TrainSamples(source, [transform, transform], 0, raw=True).__getitems__([(0, p, p) for p in range(4)]))
    assert len(gpu_batch(raw, transform, torch.device("cpu"))) == 4
    # validation: the held-out synthetic set, as without the pseudo-labels
    (val,) = build_val_sets(config, model)
    (plain,) = build_val_sets(config.replace(**{"data.unlabeled.images": None, "data.unlabeled.labels": None,
                                                 "data.unlabeled.teacher": None}), model)
    assert val.data.name == plain.data.name and len(val.data) == len(plain.data) == 4
    assert not any(str(frames) in str(i.path) for i in val.data.gt.images.values())

    # resuming reuses the file, never labels again
    monkeypatch.setattr(pseudo, "pseudo_label", lambda *a, **k: pytest.fail("labelled again on resume"))
    before = labels.read_bytes()
    assert main(["train", "--out", str(run), "--resume", "--set", "max_steps=3"]) == 0
    assert labels.read_bytes() == before
    assert main(["train", "--out", str(run), "--resume", "--pseudo-threshold", "0.4"]) == 2  # settings are the run's
    labels.unlink()
    with pytest.raises(PoseforgeError, match="pseudo-labels this run trained on are missing"):
        prepare_pseudo_labels(config, run, resume=True)


def test_a_labels_file_is_reused_only_with_its_settings(frames, tmp_path, monkeypatch, one_thread, capsys):
    labels = tmp_path / "frames.json"
    assert main(["pseudo-label", "--model", "bundled", "--images", str(frames), "--out", str(labels), "--threshold", "0.3",
                 "--detector", "bundled", "--device", "cpu"]) == 0
    assert "4 images" in capsys.readouterr().out
    monkeypatch.setattr(pseudo, "pseudo_label", lambda *a, **k: pytest.fail("labelled although the file exists"))
    common = ["--unlabeled", str(frames), "--set", f"data.unlabeled.labels={labels}", "--set", "data.unlabeled.detector=bundled"]
    assert _train(tmp_path / "mismatch", *common, "--pseudo-threshold", "0.4") == 2
    err = capsys.readouterr().err
    assert "made with threshold 0.3, but the config asks for 0.4" in err and len(err.strip().splitlines()) == 1
    assert _train(tmp_path / "run", *common, "--pseudo-threshold", "0.3") == 0  # no teacher needed: it is recorded
    assert load_config(tmp_path / "run" / "config.yaml").data.unlabeled.teacher == "bundled"


def test_the_teacher_defaults_to_model_init_and_is_required(frames, tmp_path, monkeypatch, capsys):
    assert _train(tmp_path / "run", "--unlabeled", str(frames)) == 2  # smoke has no model.init
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "give --teacher NAME|RUN" in err and str(frames) in err
    assert not (tmp_path / "run" / "config.yaml").exists()
    calls = []

    def record(teacher, images, out, **kw):
        calls.append((teacher, str(out), kw))
        return pseudo.PseudoLabels(out, 0, 0, 0, 0, "coco17")

    monkeypatch.setattr(pseudo, "pseudo_label", record)
    config = load_config("smoke", [f"data.unlabeled.images={frames}", "model.init=runs/x/best",
                                   "data.unlabeled.detector=none"])
    recorded = prepare_pseudo_labels(config, tmp_path / "run2", device="cpu")
    assert calls[0][:2] == ("runs/x/best", str(tmp_path / "run2" / "pseudo_labels.json"))
    assert calls[0][2]["threshold"] == 0.5 and calls[0][2]["min_keypoints"] == 5
    assert recorded.data.unlabeled.teacher == "runs/x/best"
    # the flags check their values like the config
    assert _train(tmp_path / "run3", "--unlabeled", str(frames), "--teacher", "bundled", "--pseudo-threshold", "1.5") == 2
    assert "data.unlabeled.threshold: expected a keypoint score in [0, 1], got 1.5" in capsys.readouterr().err
    assert _train(tmp_path / "run4", "--teacher", "bundled") == 2
    assert "data.unlabeled.teacher: set data.unlabeled.images" in capsys.readouterr().err
