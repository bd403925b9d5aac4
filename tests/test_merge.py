"""Expert merging: a ViTPose++ task folded into a plain ViTPose gives the same heatmaps (< 1e-5), is the
plain ViTPose config type with ViTPose's tensor shapes, saves/loads, and ``poseforge merge-experts``."""
from __future__ import annotations

import pytest
import torch

from poseforge.cli import main as cli_main
from poseforge.errors import PoseforgeError
from poseforge.models import TopDownConfig, TopDownEstimator, ViTConfig, create_model, load_model
from poseforge.models.merge import merge_experts

TOL = 1e-5


def trained_like(variant: str) -> torch.nn.Module:
    """A small ViTPose++ with random (informative) weights in every expert and head."""
    torch.manual_seed(1)
    model = create_model("vitpose++-tiny", input_size=(48, 64), depth=3, moe_variant=variant).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


@pytest.mark.parametrize("variant", ["ps", "is", "i"])
def test_merged_task_equals_the_moe_model(variant):
    model = trained_like(variant)
    x = torch.randn(3, 3, 64, 48)
    for task in model.config.task_names:
        merged = merge_experts(model, task).eval()
        with torch.no_grad():
            ref, out = model(x, task).heatmaps, merged(x).heatmaps
        assert ref.abs().max() > 0.05  # a real signal, so the tolerance means something
        assert out.shape == ref.shape and (out - ref).abs().max().item() < TOL
    # Tasks of the same keypoint count (coco, ap10k): the other task's expert and head give other outputs.
    with torch.no_grad():
        assert (model(x, "coco").heatmaps - merge_experts(model, "ap10k")(x).heatmaps).abs().max() > 1e-3


@pytest.mark.parametrize("variant", ["ps", "is", "i"])
def test_merged_model_is_a_plain_vitpose(variant):
    model = trained_like(variant)
    merged = merge_experts(model, "ap10k")
    assert isinstance(merged, TopDownEstimator) and type(merged.config) is TopDownConfig
    assert type(merged.config.backbone) is ViTConfig and merged.config.backbone.num_experts == 1
    assert merged.config.keypoint_set == "ap10k17" and merged.config.name == "vitpose++-tiny-ap10k"
    plain = create_model("vitpose-tiny", input_size=(48, 64), depth=3, keypoint_set="ap10k17")
    assert {k: tuple(v.shape) for k, v in merged.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in plain.state_dict().items()}  # exactly ViTPose's tensors: same speed
    assert merged.config.codec == plain.config.codec


def test_merged_model_saves_and_loads(tmp_path):
    model = trained_like("ps")
    merge_experts(model, "wholebody").save_pretrained(tmp_path / "wb")
    loaded = load_model(tmp_path / "wb")
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        assert (loaded(x).heatmaps - model(x, "wholebody").heatmaps).abs().max().item() < TOL
    assert loaded.keypoint_set.name == "wholebody133"


def test_merge_errors():
    with pytest.raises(PoseforgeError, match="needs a multi-task"):
        merge_experts(create_model("vitpose-tiny", depth=1), "coco")
    with pytest.raises(PoseforgeError, match="unknown task 'horse'"):
        merge_experts(trained_like("ps"), "horse")


def test_merge_experts_command(tmp_path, capsys):
    model = trained_like("ps")
    model.save_pretrained(tmp_path / "plus")
    assert cli_main(["merge-experts", str(tmp_path / "plus"), "--task", "coco", "--out", str(tmp_path / "coco")]) == 0
    printed = capsys.readouterr().out
    assert "coco: vitpose++-tiny-coco" in printed and "max abs heatmap difference" in printed
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        assert (load_model(tmp_path / "coco")(x).heatmaps - model(x, "coco").heatmaps).abs().max().item() < TOL
    assert cli_main(["merge-experts", str(tmp_path / "plus"), "--task", "all", "--out", str(tmp_path / "all")]) == 0
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == ["ap10k", "coco", "wholebody"]
    # Existing output, unknown task, plain model: one line and exit code 2.
    assert cli_main(["merge-experts", str(tmp_path / "plus"), "--task", "coco", "--out", str(tmp_path / "coco")]) == 2
    assert cli_main(["merge-experts", str(tmp_path / "plus"), "--task", "cat", "--out", str(tmp_path / "x")]) == 2
    assert cli_main(["merge-experts", str(tmp_path / "coco"), "--task", "coco", "--out", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err
    assert "already holds a model" in err and "unknown task 'cat'" in err and "not a multi-task" in err
