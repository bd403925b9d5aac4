"""Weights by name: ``arch.tag`` entries resolve the same way in ``load_model``, ``create_model(pretrained=True)``,
the predictor and every command's ``--model``; aliases replace the old "bundled" special cases."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from poseforge.cli import main
from poseforge.errors import PoseforgeError
from poseforge.hub import list_weights, resolve_weights, weights_spec
from poseforge.inference.detectors import BuiltinDetector, load_detector
from poseforge.inference.predictor import Predictor
from poseforge.models import create_model, list_models, load_model


def test_names_and_aliases_resolve_to_the_shipped_folders():
    assert "vitpose-tiny.synth" in list_models(pretrained=True) and "vitpose-tiny.synth" not in list_models()
    assert set(list_weights()) >= {"vitpose-tiny.synth", "person-detector.synth"}
    pose = resolve_weights("vitpose-tiny.synth")
    assert resolve_weights("bundled") == pose and (pose / "model.safetensors").is_file()
    assert resolve_weights("bundled", "detector") == resolve_weights("person-detector.synth", "detector") != pose
    spec = weights_spec("vitpose-tiny.synth")
    assert (spec.arch, spec.tag, spec.kind) == ("vitpose-tiny", "synth", "pose") and spec.license and spec.source
    assert resolve_weights("runs/some-folder") is None  # not a name: the caller treats it as a path
    with pytest.raises(PoseforgeError, match="names detector weights, not a pose model"):
        load_model("person-detector.synth")


def test_a_name_loads_the_same_model_everywhere(tmp_path):
    named, alias = load_model("vitpose-tiny.synth"), load_model("bundled")
    assert named.dtype == torch.float32  # shipped in fp16, loaded as float32
    assert all(torch.equal(a, b) for a, b in zip(named.state_dict().values(), alias.state_dict().values()))
    pretrained = create_model("vitpose-tiny.synth", pretrained=True)
    assert all(torch.equal(a, b) for a, b in zip(named.state_dict().values(), pretrained.state_dict().values()))
    # Without pretrained: the architecture of the weights, freshly initialized.
    fresh = create_model("vitpose-tiny.synth")
    assert fresh.config == named.config
    assert not torch.equal(fresh.head.cls_x.weight, named.head.cls_x.weight)
    with pytest.raises(PoseforgeError, match="no weights of that name"):
        create_model("vitpose-g", pretrained=True)  # an architecture without released weights
    with pytest.raises(PoseforgeError, match="take no overrides"):
        create_model("vitpose-tiny.synth", pretrained=True, depth=2)
    predictor = Predictor("vitpose-tiny.synth", detector="person-detector.synth", device="cpu")
    assert predictor.model.config == named.config and isinstance(predictor.detector, BuiltinDetector)
    assert isinstance(load_detector("bundled", "cpu"), BuiltinDetector)


def test_the_commands_take_names(tmp_path, capsys):
    assert main(["eval", "--model", "vitpose-tiny.synth", "--data", "synthetic:images=4", "--workers", "0"]) == 0
    assert "vitpose-tiny.synth on synthetic(seed=1000003, images=4" in capsys.readouterr().out
    image = (np.random.default_rng(0).random((120, 90, 3)) * 255).astype(np.uint8)
    import cv2

    cv2.imwrite(str(tmp_path / "a.png"), image)
    assert main(["predict", str(tmp_path / "a.png"), "--model", "vitpose-tiny.synth", "--detector", "none",
                 "--out", str(tmp_path / "out"), "--no-draw"]) == 0
    assert (tmp_path / "out" / "a.png.json").is_file()
    assert main(["eval", "--model", "vitpose-nope.synth", "--data", "synthetic"]) == 2
    assert "no such model name, folder or file" in capsys.readouterr().err


def test_shipped_rtmpose_t_is_the_zoo_architecture_and_learned(one_thread):
    """rtmpose-t.synth (alias rtmpose-t-synth) is RTMPose-t as published, with its training record; on fresh
    synthetic people it localizes far better than the same architecture untrained."""
    from poseforge.data.evalsets import synthetic_eval_set
    from poseforge.evaluation import evaluate

    assert resolve_weights("rtmpose-t-synth") == resolve_weights("rtmpose-t.synth")
    shipped = load_model("rtmpose-t-synth")
    assert shipped.config.backbone == create_model("rtmpose-t").config.backbone
    assert shipped.num_parameters() == 3_337_007
    assert (resolve_weights("rtmpose-t.synth") / "training.json").is_file()
    people = synthetic_eval_set(num_images=12, seed=424242, image_size=(192, 256), people=(1, 1), keypoint_set="coco17")
    torch.manual_seed(0)
    trained = evaluate(shipped, people, flip_test=False).stats
    untrained = evaluate(create_model("rtmpose-t"), people, flip_test=False).stats
    assert trained["PCK@0.2"] > 0.8 and untrained["PCK@0.2"] < 0.5
    assert trained["AP"] > 0.15 > untrained["AP"]
