"""ViTPose++ interop: Hugging Face VitPose MoE folders and official ViTPose++ (ViTMoE + TopDownMoE)
checkpoints give the same heatmaps in poseforge for every dataset index (fp32, max abs diff < 1e-4)."""
from __future__ import annotations

import pytest
import torch

from poseforge.cli import main as cli_main
from poseforge.convert import convert_checkpoint, detect_format, vitpose_from_state_dict, vitpose_plus_from_state_dict
from poseforge.errors import PoseforgeError
from poseforge.models import MultiTaskTopDownConfig, load_model

from hf_fixtures import hf_to_official, random_hf_vitpose

TOL = 1e-4


def hf_moe(hidden: int, layers: int, heads: int, experts: int, part: int, num_labels: int = 17,
           image_size: tuple[int, int] = (128, 96), seed: int = 0):
    """A random ``VitPoseForPoseEstimation`` with ``experts`` task experts (noise on every parameter)."""
    return random_hf_vitpose(seed, num_labels, image_size, hidden_size=hidden, num_hidden_layers=layers,
                             num_attention_heads=heads, out_indices=[layers], num_experts=experts, part_features=part)


def hf_heatmaps(model, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x, dataset_index=index).heatmaps


def check_every_index(converted, model, x: torch.Tensor, experts: int) -> None:
    """Sample ``i`` goes through expert ``i % experts``: one mixed HF batch is the reference for our mixed
    batch and for each single-index call on its own sample."""
    index = torch.arange(x.shape[0]) % experts
    ref = hf_heatmaps(model, x, index)
    assert ref.abs().max() > 0.05
    with torch.no_grad():
        mixed = converted(x, index).heatmaps
        assert mixed.shape == ref.shape and (mixed - ref).abs().max().item() < TOL
        for row in range(x.shape[0]):
            single = converted(x[row:row + 1], int(index[row])).heatmaps
            assert (single[0] - ref[row]).abs().max().item() < TOL, f"dataset_index {int(index[row])}"
    # The index matters: the same crops through other experts give other heatmaps.
    assert (hf_heatmaps(model, x, (index + 1) % experts) - ref).abs().max() > 1e-3


# ----------------------------------------------------------------------------- Hugging Face
def test_hugging_face_small_moe(tmp_path):
    model = hf_moe(96, 2, 6, experts=3, part=24)
    model.save_pretrained(tmp_path / "hf")
    converted = convert_checkpoint(tmp_path / "hf")
    cfg = converted.config
    assert isinstance(converted.config, MultiTaskTopDownConfig)
    assert cfg.backbone.num_experts == 3 and cfg.backbone.expert_width == 24 and cfg.input_size == (96, 128)
    assert [t.name for t in cfg.tasks] == ["task0", "task1", "task2"] and {t.head for t in cfg.tasks} == {0}
    check_every_index(converted, model, torch.randn(4, 3, 128, 96), 3)


def test_hugging_face_vitpose_plus_s_shape(tmp_path):
    # ViTPose++-S: 384 wide, 12 blocks, 12 heads, 6 experts of 96 channels (the released width), one COCO head
    # (128x96 crops keep the test fast; the crop size does not touch the expert layout).
    model = hf_moe(384, 12, 12, experts=6, part=96, image_size=(128, 96))
    model.save_pretrained(tmp_path / "hf")
    converted = convert_checkpoint(tmp_path / "hf")
    cfg = converted.config
    assert cfg.name == "vitpose++-s" and cfg.backbone.expert_width == 96 and cfg.backbone.num_heads == 12
    assert cfg.task_names == ("coco", "aic", "mpii", "ap10k", "apt36k", "wholebody")
    assert all(t.keypoint_set == "coco17" and t.head == 0 for t in cfg.tasks)  # HF keeps the COCO head only
    check_every_index(converted, model, torch.randn(6, 3, 128, 96), 6)


def test_expert_width_comes_from_the_weights_not_the_config(tmp_path):
    model = hf_moe(96, 1, 6, experts=2, part=48)
    model.save_pretrained(tmp_path / "hf")
    config_path = tmp_path / "hf" / "config.json"
    config_path.write_text(config_path.read_text().replace('"part_features": 48', '"part_features": 24'))
    converted = convert_checkpoint(tmp_path / "hf")
    assert converted.config.backbone.expert_width == 48
    check_every_index(converted, model, torch.randn(3, 3, 128, 96), 2)


# ----------------------------------------------------------------------------- official ViTPose++ layout
@pytest.fixture(scope="module")
def official_six():
    """Six HF reference models sharing one 6-expert backbone, each with the head of one official task
    (17, 14, 16, 17, 17, 133 keypoints), and the official checkpoint holding all of them."""
    base = hf_moe(96, 2, 6, experts=6, part=24, seed=3)
    references, state = [], {}
    for i, k in enumerate((17, 14, 16, 17, 17, 133)):
        ref = hf_moe(96, 2, 6, experts=6, part=24, num_labels=k, seed=10 + i)
        ref.backbone.load_state_dict(base.backbone.state_dict())
        references.append(ref)
        prefix = "keypoint_head." if i == 0 else f"associate_keypoint_heads.{i - 1}."
        renamed = hf_to_official(ref.state_dict(), prefix)
        state.update({k2: v for k2, v in renamed.items() if k2.startswith(prefix) or i == 0})
    return references, state


def test_official_checkpoint_with_six_heads(tmp_path, official_six):
    references, state = official_six
    assert "backbone.blocks.1.mlp.experts.5.weight" in state and "associate_keypoint_heads.4.final_layer.weight" in state
    assert detect_format(state) == "official"
    path = tmp_path / "vitpose_plus_official.pth"
    torch.save({"state_dict": state, "meta": {"epoch": 210}}, path)
    converted = convert_checkpoint(path, num_heads=6)  # not in the file; 96 wide has no official value
    cfg = converted.config
    assert [(t.name, t.keypoint_set, t.head, t.expert) for t in cfg.tasks] == [
        ("coco", "coco17", 0, 0), ("aic", "aic14", 1, 1), ("mpii", "mpii16", 2, 2), ("ap10k", "ap10k17", 3, 3),
        ("apt36k", "ap10k17", 4, 4), ("wholebody", "wholebody133", 5, 5)]
    x = torch.randn(2, 3, 128, 96)
    for i, ref_model in enumerate(references):
        ref = hf_heatmaps(ref_model, x, torch.full((2,), i))
        with torch.no_grad():
            out = converted(x, i).heatmaps
        assert out.shape == ref.shape and (out - ref).abs().max().item() < TOL, cfg.tasks[i].name
    # A mixed batch: each sample through its own expert and head, padded to 133 channels.
    index = torch.tensor([5, 1])
    with torch.no_grad():
        mixed = converted(x, index).heatmaps
    assert mixed.shape == (2, 133, 32, 24)
    assert (mixed[1, :14] - hf_heatmaps(references[1], x[1:], torch.tensor([1]))[0]).abs().max() < TOL
    assert (mixed[0] - hf_heatmaps(references[5], x[:1], torch.tensor([5]))[0]).abs().max() < TOL


def test_official_single_head_checkpoint_shares_the_head(official_six):
    references, _ = official_six
    state = hf_to_official(references[0].state_dict())
    converted = vitpose_plus_from_state_dict(state, tasks=["people:coco17", "b", "c", "d", "e", "f"], num_heads=6)
    assert converted.config.task_names == ("people", "b", "c", "d", "e", "f")
    check_every_index(converted, references[0], torch.randn(6, 3, 128, 96), 6)


def test_convert_command_names_tasks(tmp_path, official_six, capsys):
    references, state = official_six
    torch.save(state, tmp_path / "plus.pth")
    names = "people:coco17,ai:aic14,mp:mpii16,dogs:ap10k17,cats:ap10k17,wb:wholebody133"
    assert cli_main(["convert", str(tmp_path / "plus.pth"), str(tmp_path / "out"), "--tasks", names,
                     "--num-heads", "6"]) == 0
    assert "6 experts x 24 channels; tasks people (coco17), ai (aic14)" in capsys.readouterr().out
    loaded = load_model(tmp_path / "out")
    assert loaded.config.task_names == ("people", "ai", "mp", "dogs", "cats", "wb")
    x = torch.randn(1, 3, 128, 96)
    with torch.no_grad():
        assert (loaded(x, "wb").heatmaps - hf_heatmaps(references[5], x, torch.tensor([5]))).abs().max() < TOL


def test_moe_conversion_errors(official_six):
    references, state = official_six
    with pytest.raises(PoseforgeError, match="mixture-of-experts"):
        vitpose_from_state_dict(state)  # the plain converter points to the ViTPose++ one
    with pytest.raises(PoseforgeError, match="2 task names given but the checkpoint has 6 tasks"):
        vitpose_plus_from_state_dict(state, tasks=["a", "b"], num_heads=6)
    with pytest.raises(PoseforgeError, match="the head predicts 14 keypoints but 'coco17' has 17"):
        vitpose_plus_from_state_dict(state, tasks=["a", "b:coco17", "c", "d", "e", "f"], num_heads=6)
    bad = dict(state)
    bad["backbone.blocks.1.mlp.experts.2.weight"] = torch.zeros(10, 384)
    with pytest.raises(PoseforgeError, match=r"mis-shaped key\(s\): backbone.blocks.1.mlp.experts.2.weight"):
        vitpose_plus_from_state_dict(bad, num_heads=6)
    missing = {k: v for k, v in state.items() if not k.startswith("backbone.blocks.1.mlp.experts.3.")}
    with pytest.raises(PoseforgeError, match=r"2 missing key\(s\): backbone.blocks.1.mlp.experts.3.weight"):
        vitpose_plus_from_state_dict(missing, num_heads=6)
    plain = {k: v for k, v in hf_to_official(references[0].state_dict()).items() if ".experts." not in k}
    with pytest.raises(PoseforgeError, match="no expert weights"):
        vitpose_plus_from_state_dict(plain, num_heads=6)
