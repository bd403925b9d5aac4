"""Official LitePose checkpoints (mit-han-lab/litepose ``pose_mobilenet`` state dicts) -> poseforge models."""
from __future__ import annotations

import pytest
import torch

from poseforge.cli import main
from poseforge.convert import convert_checkpoint, litepose_from_state_dict
from poseforge.errors import PoseforgeError
from poseforge.models import create_model, load_model

from model_helpers import mutate_state_dict, randomize

pytestmark = pytest.mark.usefixtures("one_thread")


def _official_file(model, path, prefix: str = ""):
    """``model``'s weights as the official code saves them: one module, no backbone./head. split."""
    state = {prefix + k.split(".", 1)[1]: v for k, v in model.state_dict().items()}
    torch.save(state, path)
    return path


def _same_outputs(a, b, size):
    image = torch.rand(1, 3, size[1], size[0], generator=torch.Generator().manual_seed(1)) * 255
    with torch.no_grad():
        out_a, out_b = a(a.normalize(image)), b(b.normalize(image))
    for field in ("heatmaps", "tags", "heatmaps_hr"):
        assert torch.equal(getattr(out_a, field), getattr(out_b, field)), field


def test_a_released_architecture_converts_to_its_zoo_name_with_equal_outputs(tmp_path):
    original = randomize(create_model("litepose-s"))  # crowdpose14, 448x448, as released
    path = _official_file(original, tmp_path / "litepose-auto-s.pth", prefix="module.")  # DataParallel's prefix too
    converted = convert_checkpoint(path)
    assert converted.config.name == "litepose-s" and converted.config.keypoint_set == "crowdpose14"
    assert tuple(converted.config.input_size) == (448, 448)
    assert converted.config.backbone == original.config.backbone and converted.config.head == original.config.head
    small = convert_checkpoint(path, input_size=(128, 128))  # any input: the weights do not fix it
    assert tuple(small.config.input_size) == (128, 128) and small.config.codec["input_size"] == [128, 128]
    _same_outputs(original, small, (128, 128))


def test_a_custom_architecture_is_read_from_the_tensor_shapes(tmp_path):
    original = randomize(create_model("litepose-xs", keypoint_set="coco17", input_size=(64, 64), depths=(1, 2, 1, 2),
                                        kernel_sizes=(3, 5, 7, 9), widths=(16, 24, 40, 64), expand_ratios=(6, 4, 6, 3),
                                        deconv_channels=(16, 16, 24), tag_dim=2))
    converted = convert_checkpoint(_official_file(original, tmp_path / "custom.pth"), input_size=(64, 64))
    assert converted.config.name == "litepose-custom" and converted.config.keypoint_set == "coco17"
    assert converted.config.backbone == original.config.backbone and converted.config.head == original.config.head
    _same_outputs(original, converted, (64, 64))


def test_bad_checkpoints_are_one_line_errors(tmp_path):
    model = create_model("litepose-xs", input_size=(64, 64), depths=(1, 2, 1, 1))
    state = {k.split(".", 1)[1]: v for k, v in model.state_dict().items()}
    mixed = dict(state)  # a supernet-like stage: two kernel sizes in one stage
    mixed["stage.1.1.depth_conv.0.weight"] = torch.zeros(mixed["stage.1.1.depth_conv.0.weight"].shape[0], 1, 5, 5)
    torch.save(mixed, tmp_path / "mixed.pth")
    with pytest.raises(PoseforgeError, match=r"mixed\.pth: stage 1 kernel sizes differ within a stage \(\[7, 5\]\)"):
        convert_checkpoint(tmp_path / "mixed.pth")
    torch.save({**state, "loss.weight": torch.zeros(1)}, tmp_path / "extra.pth")
    with pytest.raises(PoseforgeError, match="unexpected key 'loss.weight'"):
        convert_checkpoint(tmp_path / "extra.pth", format="litepose")
    with pytest.raises(PoseforgeError, match="do not apply to a LitePose checkpoint"):
        convert_checkpoint(tmp_path / "extra.pth", split_ratio=2.0)
    for key, value, message in [("stage.0.0.inv.0.weight", torch.zeros(0, 16, 1, 1), r"shape \[0, 16, 1, 1\]"),
                                ("final_raw.1.conv.3.weight", torch.zeros(0, 16, 1, 1), "sizes are positive"),
                                ("deconv_bnrelu.0.0.bias", torch.zeros(16, dtype=torch.int64), "is int64")]:
        with pytest.raises(PoseforgeError, match=message):  # no ZeroDivisionError or load_state_dict traceback
            litepose_from_state_dict({**state, key: value}, source="fuzzed")
    torch.save({k: v for k, v in state.items() if k != "final_raw.0.conv.3.weight"}, tmp_path / "short.pth")
    with pytest.raises(PoseforgeError, match="short.pth"):
        convert_checkpoint(tmp_path / "short.pth")


def test_convert_command_writes_a_model_folder(tmp_path, capsys):
    path = _official_file(randomize(create_model("litepose-xs")), tmp_path / "litepose-auto-xs.pth")
    assert main(["convert", str(path), str(tmp_path / "model")]) == 0
    printed = capsys.readouterr().out
    assert "litepose-xs: litepose-mobilenetv2 backbone, litepose-fusion head" in printed and "crowdpose14" in printed
    model = load_model(tmp_path / "model")
    assert model.kind == "bottomup" and tuple(model.config.input_size) == (256, 256)


def test_mutated_state_dicts_give_one_line_errors_only():
    """Dropped, reshaped, emptied, renamed and integer tensors: a PoseforgeError of one line or a model, never
    another exception (before this test: ZeroDivisionError on empty layers, load_state_dict tracebacks)."""
    import random

    base = {k.split(".", 1)[1]: v for k, v in create_model("litepose-xs", input_size=(64, 64), depths=(1, 1, 1, 1))
            .state_dict().items()}
    rng = random.Random(0)
    for _ in range(200):
        state = mutate_state_dict(base, rng, ("drop", "shape", "empty", "rename", "dtype"),
                                  rename=lambda key: key.replace("stage.", "stage.9").replace("final_raw.0", "final_raw.7"))
        try:
            litepose_from_state_dict(state, source="fuzzed.pth")
        except PoseforgeError as e:
            assert "\n" not in str(e) and "fuzzed.pth" in str(e)
