"""Experiment configs: presets (the official ViTPose COCO recipes), YAML files and --set overrides."""
from __future__ import annotations

import pytest

from poseforge.cli import main
from poseforge.data.augment import AugmentConfig
from poseforge.errors import PoseforgeError
from poseforge.models import model_config
from poseforge.registry import PRESETS
from poseforge.train import (TrainConfig, apply_overrides, config_from_dict, config_to_dict, dump_yaml, get_preset,
                             list_presets, load_config)

# The official recipes (mmpose td-hm_ViTPose-{size}_8xb64-210e_coco-256x192; see shared/reference/facts.md).
OFFICIAL = {"s": (0.1, 0.8), "b": (0.3, 0.75), "l": (0.5, 0.8), "h": (0.55, 0.85)}  # drop path, layer decay


def test_presets_are_registered():
    names = list_presets()
    for name in ("smoke", "synth-cpu", "synth-gpu", "vitpose-s-coco", "vitpose-b-coco", "vitpose-l-coco", "vitpose-h-coco"):
        assert name in names and name in PRESETS
    assert get_preset("smoke") == get_preset("smoke") and get_preset("smoke") is not get_preset("smoke")


@pytest.mark.parametrize("size", sorted(OFFICIAL))
def test_vitpose_coco_recipes_match_the_official_configs(size):
    c = get_preset(f"vitpose-{size}-coco")
    drop_path, layer_decay = OFFICIAL[size]
    assert c.model.name == f"vitpose-{size}" and c.model.overrides == {}
    assert (c.optim.name, c.optim.lr, c.optim.betas, c.optim.weight_decay) == ("adamw", 5e-4, (0.9, 0.999), 0.1)
    assert c.optim.layer_decay == layer_decay and c.optim.clip_grad == 1.0 and c.optim.base_batch_size == 512
    s = c.schedule
    assert (s.epochs, s.warmup_iters, s.warmup_start, s.kind, s.milestones, s.gamma) == (210, 500, 0.001, "step", (170, 200), 0.1)
    assert c.data.batch_size == 64 and c.data.val_batch_size == 32 and c.val_interval == 10 and c.flip_test
    assert c.data.val_boxes.endswith("COCO_val2017_detections_AP_H_56_person.json")
    a = c.data.augment
    assert (a.flip_prob, a.half_body_prob, a.shift_factor, a.shift_prob, a.scale_factor, a.rotate_factor, a.rotate_prob) == (
        0.5, 0.3, 0.16, 0.3, (0.5, 1.5), 80.0, 0.6)
    assert not a.photometric
    model = model_config(c.model.name, **c.model.overrides)  # what the trainer builds (no weights allocated here)
    assert model.backbone.drop_path_rate == drop_path
    assert model.codec["name"] == "udp" and model.codec["sigma"] == 2.0
    assert tuple(model.input_size) == (192, 256) and tuple(model.codec["heatmap_size"]) == (48, 64)


def test_dict_and_yaml_round_trip(tmp_path):
    for name in list_presets():
        c = get_preset(name)
        assert config_from_dict(config_to_dict(c)) == c
        path = tmp_path / f"{name}.yaml"
        path.write_text(dump_yaml(c))
        assert load_config(path) == c


def test_yaml_with_base_changes_only_what_it_names(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("base: synth-cpu\nname: mine\noptim: {lr: 1e-4}\nschedule:\n  milestones: [3, 4]\n"
                    "model:\n  overrides: {drop_path_rate: 0.1}\n")
    c = load_config(path)
    base = get_preset("synth-cpu")
    assert c.name == "mine" and c.optim.lr == 1e-4 and c.schedule.milestones == (3, 4)
    assert c.model.overrides == {**base.model.overrides, "drop_path_rate": 0.1}
    assert c.optim.weight_decay == base.optim.weight_decay and c.data == base.data


def test_overrides():
    c = apply_overrides(get_preset("smoke"), ["optim.lr=1e-4", "schedule.milestones=[2, 5]", "data.val=null",
                                               "model.overrides.input_size=[96,128]", "data.augment.rotate_factor=10",
                                               "ema.momentum=0.0002", "name=x"])
    assert c.optim.lr == 1e-4 and isinstance(c.optim.lr, float)
    assert c.schedule.milestones == (2, 5) and c.data.val is None and c.name == "x"
    assert c.model.overrides["input_size"] == [96, 128] and c.data.augment.rotate_factor == 10.0
    assert isinstance(c.data.augment, AugmentConfig) and c.ema.momentum == 0.0002
    assert apply_overrides(c, {"optim.lr": 3e-4}).optim.lr == 3e-4


@pytest.mark.parametrize("override, message", [
    ("optim.lrr=1", "unknown config field 'optim.lrr'; fields of optim: name, lr"),
    ("optim.lr=fast", "config.optim.lr: expected a number, got 'fast'"),
    ("schedule.epochs=1.5", "expected an integer, got 1.5"),
    ("amp=fp8", "amp: expected one of auto, bf16, fp16, off"),
    ("schedule.kind=exp", "schedule.kind: expected one of step, cosine, linear, constant"),
    ("data.batch_size=0", "data.batch_size: expected a positive integer"),
    ("optim.lr", "expected KEY=VALUE"),
    ("optim.lr.x=1", "'optim.lr' has no sub-fields"),
    ("data.augment.flip_prob=2", "flip_prob must be a probability"),
    ("loss.keypoint_map_weight=-0.1", "loss.keypoint_map_weight: expected a value >= 0, got -0.1"),
    ("loss.keypoint_map_sigma=0", "loss.keypoint_map_sigma: expected a positive number (pixels), got 0"),
])
def test_bad_overrides_are_one_line_errors(override, message):
    with pytest.raises(PoseforgeError) as e:
        apply_overrides(get_preset("smoke"), [override])
    assert message in str(e.value) and "\n" not in str(e.value)


def test_load_config_errors(tmp_path):
    with pytest.raises(PoseforgeError, match="neither a preset"):
        load_config("no-such-preset")
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: [1, 2\n")
    with pytest.raises(PoseforgeError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("optim: {lr: 1e-3}\nfoo: 1\n")
    with pytest.raises(PoseforgeError, match=r"bad.yaml: unknown field\(s\) foo"):
        load_config(bad)


def test_default_config_is_valid():
    assert TrainConfig().optim.lr == 5e-4


@pytest.mark.parametrize("argv, message", [
    (["train"], "--config NAME|FILE.yaml is required"),
    (["train", "--config", "smoke", "--set", "optim.lrr=1"], "unknown config field 'optim.lrr'"),
    (["train", "--resume"], "--resume needs --out RUN_DIR"),
    (["train", "--config", "nope"], "neither a preset"),
])
def test_train_cli_errors_are_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and err.startswith("poseforge train: error:")


def test_train_cli_resume_without_checkpoint(tmp_path, capsys):
    assert main(["train", "--resume", "--out", str(tmp_path)]) == 2
    assert "nothing to resume (no last.pt)" in capsys.readouterr().err


def test_train_cli_print_config(capsys):
    assert main(["train", "--config", "vitpose-b-coco", "--data", "/data/coco", "--set", "optim.lr=1e-4", "--print-config"]) == 0
    out = capsys.readouterr().out
    c = config_from_dict(__import__("yaml").safe_load(out))
    assert c.data.train == "/data/coco" and c.optim.lr == 1e-4 and c.optim.layer_decay == 0.75


def test_example_config_files_load():
    from pathlib import Path

    files = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
    assert files
    for path in files:
        config = load_config(path)
        assert config.name and config.name != "custom", path


def test_synth_cpu_preset_is_the_bundled_models_recipe():
    """``poseforge train --config synth-cpu`` reproduces the bundled pose model: the preset equals the config
    recorded in the shipped training.json (the description aside: it now states the measured result)."""
    import json

    from poseforge.assets import asset_path

    shipped = json.loads((asset_path("pose") / "training.json").read_text())
    preset = config_to_dict(get_preset("synth-cpu"))
    # read through today's schema: fields added since (with defaults that leave this run unchanged) fill in
    recorded = config_to_dict(config_from_dict(shipped["config"]))
    assert recorded.pop("description") and preset.pop("description")
    assert preset == recorded
