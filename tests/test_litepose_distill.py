"""LitePose distillation from a larger bottom-up teacher: heatmap + tag KD through ``poseforge distill``."""
from __future__ import annotations

import json

import pytest
import torch

from poseforge.cli import main
from poseforge.errors import PoseforgeError
from poseforge.models import create_model, load_model
from poseforge.outputs import HeatmapsTags
from poseforge.train.distill import OutputDistillation, check_compatible, heatmaps_tags_distillation_loss

pytestmark = pytest.mark.usefixtures("one_thread")


def _outputs(seed: int, batch: int = 2, joints: int = 3, dims: int = 2, size: int = 8) -> HeatmapsTags:
    gen = torch.Generator().manual_seed(seed)
    return HeatmapsTags(heatmaps=torch.rand(batch, joints, size, size, generator=gen),
                        tags=torch.randn(batch, dims * joints, size, size, generator=gen),
                        heatmaps_hr=torch.rand(batch, joints, 2 * size, 2 * size, generator=gen))


def test_tag_term_sees_tags_only_up_to_a_shift_and_only_where_the_teacher_sees_joints():
    teacher = _outputs(0)
    same = heatmaps_tags_distillation_loss(teacher, teacher)
    assert float(same["heatmaps"]) == 0.0 and float(same["tags"]) == 0.0
    # a constant per image and tag dimension does not change which people the tags group
    shift = torch.tensor([3.0, -7.0])[:, None, None, None]
    moved = HeatmapsTags(teacher.heatmaps, teacher.tags + shift, teacher.heatmaps_hr)
    assert float(heatmaps_tags_distillation_loss(moved, teacher)["tags"]) < 1e-10
    # tags where every teacher heatmap is zero carry no meaning: changing them costs nothing
    teacher.heatmaps[:, :, :4] = 0.0
    student = HeatmapsTags(teacher.heatmaps, teacher.tags.clone(), teacher.heatmaps_hr)
    student.tags[:, :, :4] += torch.randn(student.tags[:, :, :4].shape)
    assert float(heatmaps_tags_distillation_loss(student, teacher)["tags"]) < 1e-10
    student.tags[:, :, 5] += 1.0  # one joint row changed where the teacher sees joints
    assert float(heatmaps_tags_distillation_loss(student, teacher)["tags"]) > 1e-3
    # the heatmap term covers both scales
    hr_only = HeatmapsTags(teacher.heatmaps, teacher.tags, teacher.heatmaps_hr + 0.5)
    assert float(heatmaps_tags_distillation_loss(hr_only, teacher)["heatmaps"]) == pytest.approx(0.25)


def test_weights_scale_the_terms_and_shapes_must_agree():
    teacher, student = _outputs(0), _outputs(1)
    plain = heatmaps_tags_distillation_loss(student, teacher)
    weighted = heatmaps_tags_distillation_loss(student, teacher, tag_weight=3.0)
    assert torch.isclose(weighted["tags"], 3 * plain["tags"]) and torch.equal(weighted["heatmaps"], plain["heatmaps"])
    with pytest.raises(PoseforgeError, match="teacher heatmaps"):
        heatmaps_tags_distillation_loss(_outputs(1, joints=4), teacher)


def test_a_bottom_up_teacher_fits_a_bottom_up_student_only():
    teacher = create_model("litepose-s", input_size=(64, 64), keypoint_set="coco17")
    check_compatible(teacher, create_model("litepose-xs", input_size=(64, 64), keypoint_set="coco17"))
    with pytest.raises(PoseforgeError, match="estimator kinds bottomup vs topdown"):
        check_compatible(teacher, create_model("vitpose-tiny", input_size=(64, 64), keypoint_set="coco17"))
    with pytest.raises(PoseforgeError, match="input sizes"):
        check_compatible(teacher, create_model("litepose-xs", input_size=(96, 96), keypoint_set="coco17"))


def test_hook_pulls_a_litepose_student_toward_its_teacher():
    torch.manual_seed(0)
    teacher = create_model("litepose-s", input_size=(64, 64), keypoint_set="coco17", depths=(1, 1, 1, 1))
    student = create_model("litepose-xs", input_size=(64, 64), keypoint_set="coco17", depths=(1, 1, 1, 1)).train()
    hook = OutputDistillation(teacher, weight=2.0, tag_weight=0.5)
    images = torch.rand(2, 3, 64, 64) * 255
    batch = type("Batch", (), {"image": images})()
    outputs = student(student.normalize(images)).float()
    loss = hook(batch, student.normalize(images), outputs)
    expected = heatmaps_tags_distillation_loss(outputs, teacher(teacher.normalize(images)).float(), 0.5)
    assert torch.isclose(loss, 2.0 * (expected["heatmaps"] + expected["tags"]))
    assert set(hook.last_parts) == {"kd_heatmaps", "kd_tags"} and float(hook.last_parts["kd_tags"]) > 0
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in student.parameters())  # the whole student learns from it


def test_distill_command_trains_a_litepose_student(tmp_path, capsys):
    teacher_dir = tmp_path / "teacher"
    create_model("litepose-s", input_size=(64, 64), keypoint_set="coco17", depths=(1, 1, 1, 1)).save_pretrained(teacher_dir)
    tiny = ["data.synthetic.image_size=[64, 64]", "data.synthetic.train_images=4", "data.synthetic.val_images=2",
            "data.batch_size=2", "data.val_batch_size=2", "data.num_workers=0", "schedule.epochs=1",
            "schedule.steps_per_epoch=2", "schedule.warmup_iters=1", "log_interval=1", "threads=1",
            "model.overrides.depths=[1, 1, 1, 1]"]
    args = ["distill", "--teacher", str(teacher_dir), "--student", "litepose-xs", "--method", "output",
            "--out", str(tmp_path / "kd"), "--kd-tag-weight", "0.5"]
    for item in tiny:
        args += ["--set", item]
    assert main(args) == 0  # the recipe defaults to litepose-xs-synth for a bottom-up teacher
    assert "distill (output): student litepose-xs" in capsys.readouterr().out
    records = [json.loads(line) for line in (tmp_path / "kd" / "student" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert len(train) == 2 and all(r["loss_kd_heatmaps"] > 0 and r["loss_kd_tags"] > 0 for r in train)
    student = load_model(tmp_path / "kd" / "student")
    assert student.kind == "bottomup" and student.config.name.startswith("litepose-xs")
    # knowledge tokens are a ViT's: one line, nothing trained
    assert main(["distill", "--teacher", str(teacher_dir), "--student", "litepose-xs", "--method", "token",
                 "--out", str(tmp_path / "token")]) != 0
    assert "needs a top-down teacher" in capsys.readouterr().err and not (tmp_path / "token").exists()
