"""Distillation (ViTPose paper): output distillation loss, knowledge-token learning on a frozen teacher,
the token student, the Trainer hooks they use, and ``poseforge distill``."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from poseforge.cli import main as cli_main
from poseforge.errors import PoseforgeError
from poseforge.models import create_model, load_model
from poseforge.outputs import Heatmaps
from poseforge.train import Trainer, load_config
from poseforge.train.distill import (OutputDistillation, check_compatible, learn_knowledge_token, teacher_with_tokens,
                                     token_student_setup)

from test_train_engine import TINY_MODEL

TINY = [TINY_MODEL, "data.synthetic.train_images=32", "data.synthetic.val_images=4", "schedule.epochs=1",
        "data.batch_size=8", "data.val_batch_size=8", "log_interval=1", "schedule.warmup_iters=1"]


def teacher_model(**kw):
    torch.manual_seed(0)
    model = create_model("vitpose-tiny", **{"input_size": (48, 64), "head": "simple", "depth": 2, **kw}).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def student_model(**kw):
    return create_model("vitpose-tiny", **{"input_size": (48, 64), "head": "simple", "depth": 1, "embed_dim": 96,
                                           "num_heads": 3, **kw})


class FakeBatch:
    def __init__(self, image):
        self.image = image


# ----------------------------------------------------------------------------- output distillation
def distill_once(teacher, student, raw):
    """``OutputDistillation(teacher, weight=0.5)`` and its loss on the student's outputs for ``raw`` pixels,
    with those outputs and the teacher's."""
    kd = OutputDistillation(teacher, weight=0.5)
    outputs = student(student.normalize(raw))
    loss = kd(FakeBatch(raw), None, outputs)
    with torch.no_grad():
        target = teacher(teacher.normalize(raw))
    return kd, loss, outputs, target


def test_output_distillation_is_mse_to_the_teacher_and_trains_only_the_student():
    teacher, student = teacher_model(), student_model().train()
    raw = (torch.rand(3, 3, 64, 48) * 255).round()
    kd, loss, outputs, target = distill_once(teacher, student, raw)
    torch.testing.assert_close(loss, 0.5 * F.mse_loss(outputs.heatmaps, target.heatmaps))
    assert target.heatmaps.abs().max() > 0.05
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert student.head.final_layer.weight.grad.abs().sum() > 0
    # A student equal to the teacher has nothing to learn.
    assert float(kd(FakeBatch(raw), None, target)) == 0.0


def test_teacher_and_student_must_fit():
    teacher = teacher_model()
    with pytest.raises(PoseforgeError, match=r"input sizes \(48, 64\) vs \(96, 128\)"):
        check_compatible(teacher, create_model("vitpose-tiny", input_size=(96, 128), depth=1))
    with pytest.raises(PoseforgeError, match="keypoint sets coco17 vs ap10k17"):
        check_compatible(teacher, student_model(keypoint_set="ap10k17"))
    with pytest.raises(PoseforgeError, match="teacher heatmaps"):
        OutputDistillation(teacher)(FakeBatch(torch.zeros(1, 3, 64, 48)), None, Heatmaps(torch.zeros(1, 17, 8, 6)))


def test_simcc_output_distillation_is_the_kl_of_the_bin_distributions():
    teacher = teacher_model(head="simcc", stem="conv", patch_size=8)
    student = student_model(head="simcc", stem="conv", patch_size=8).train()
    check_compatible(teacher, student)
    raw = (torch.rand(2, 3, 64, 48) * 255).round()
    kd, loss, outputs, target = distill_once(teacher, student, raw)
    expected = 0.0
    for s, t in ((outputs.simcc_x, target.simcc_x), (outputs.simcc_y, target.simcc_y)):  # KL(q || p) per keypoint and axis
        p, q = torch.softmax(10 * s.flatten(0, 1), 1), torch.softmax(10 * t.flatten(0, 1), 1)
        expected = expected + (q * (q.log() - p.log())).sum(1).mean()
    torch.testing.assert_close(loss, 0.5 * expected)
    assert float(loss.detach()) > 0
    loss.backward()
    assert student.head.cls_x.weight.grad.abs().sum() > 0 and all(p.grad is None for p in teacher.parameters())
    assert float(kd(FakeBatch(raw), None, target)) == pytest.approx(0.0, abs=1e-6)


def test_heatmap_and_simcc_models_cannot_distill_into_each_other():
    with pytest.raises(PoseforgeError, match="codecs simcc vs udp"):
        check_compatible(teacher_model(head="simcc"), student_model())
    with pytest.raises(PoseforgeError, match="different kinds of head"):
        OutputDistillation(teacher_model(head="simcc"))(FakeBatch(torch.zeros(1, 3, 64, 48)), None,
                                                        Heatmaps(torch.zeros(1, 17, 16, 12)))


# ----------------------------------------------------------------------------- knowledge tokens
def test_teacher_with_tokens_freezes_everything_but_the_token():
    teacher = teacher_model()
    tokenized = teacher_with_tokens(teacher, tokens=2)
    trainable = [n for n, p in tokenized.named_parameters() if p.requires_grad]
    assert trainable == ["backbone.knowledge_token"] and tokenized.backbone.knowledge_token.shape == (1, 2, 192)
    tokenized.train()
    assert not any(m.training for m in tokenized.modules() if isinstance(m, torch.nn.BatchNorm2d))
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        assert (tokenized(x).heatmaps - teacher(x).heatmaps).abs().max() > 1e-4  # the token takes part in attention


def test_token_learning_changes_only_the_token(tmp_path):
    teacher = teacher_model(head="classic")  # with BatchNorm: its statistics must not move either
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    config = load_config("smoke", TINY + ["model.overrides={input_size: [48, 64]}", "val_interval=0", "optim.lr=0.05"])
    token = learn_knowledge_token(teacher, config, tmp_path / "token", tokens=1, progress=False)
    assert token.shape == (1, 1, 192)
    initial = teacher_with_tokens(teacher, 1, seed=config.seed).backbone.knowledge_token
    assert (token - initial).abs().max() > 1e-4  # it learned
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_token_student_keeps_the_token_frozen_and_trains_the_rest(tmp_path):
    token = torch.randn(1, 1, 192)
    config = load_config("smoke", TINY + ["model.overrides={input_size: [48, 64], depth: 1, embed_dim: 96, num_heads: 3, "
                                          "knowledge_tokens: 1, knowledge_dim: 192}", "val_interval=0"])
    trainer = Trainer(config, tmp_path / "student", progress=False, setup_model=token_student_setup(token, teacher_model()))
    start = {k: v.clone() for k, v in trainer.estimator.state_dict().items()}
    trainer.fit()
    state = trainer.estimator.state_dict()
    assert torch.equal(state["backbone.knowledge_token"], token)
    assert not torch.equal(state["backbone.knowledge_proj.weight"], start["backbone.knowledge_proj.weight"])
    assert not torch.equal(state["backbone.blocks.0.mlp.fc1.weight"], start["backbone.blocks.0.mlp.fc1.weight"])
    with pytest.raises(PoseforgeError, match="built without knowledge tokens"):
        token_student_setup(token)(student_model())
    with pytest.raises(PoseforgeError, match=r"does not fit the learned one \[1, 1, 192\]"):
        token_student_setup(token)(student_model(knowledge_tokens=1))


def test_trainer_extra_loss_hook_adds_the_distillation_term(tmp_path):
    config = load_config("smoke", TINY + ["model.overrides={input_size: [48, 64], depth: 1}", "val_interval=0"])
    kd = OutputDistillation(teacher_model(head="classic", depth=1), weight=2.0)
    teacher_free = Trainer(config, tmp_path / "a", progress=False)
    with_kd = Trainer(config, tmp_path / "b", progress=False, extra_loss=kd)
    batch = next(iter(with_kd._batches()))
    base, _ = teacher_free._forward_loss(batch)
    total, _ = with_kd._forward_loss(batch)  # same seed: the same initial student
    outputs = with_kd.estimator(with_kd.estimator.normalize(batch.image))
    expected = 2.0 * F.mse_loss(outputs.heatmaps, kd.teacher_outputs(batch.image).heatmaps)
    torch.testing.assert_close(total - base, expected, rtol=1e-4, atol=1e-7)


# ----------------------------------------------------------------------------- command
def test_distill_command_both_methods(tmp_path, capsys):
    teacher = teacher_model(head="classic", depth=1)
    teacher.save_pretrained(tmp_path / "teacher")
    args = ["distill", "--teacher", str(tmp_path / "teacher"), "--student", "vitpose-tiny", "--method", "both",
            "--out", str(tmp_path / "kd"), "--config", "smoke", "--token-epochs", "1"]
    for item in TINY + ["model.overrides.depth=1", "model.overrides.embed_dim=96", "model.overrides.num_heads=3",
                        "model.overrides.head=classic"]:
        args += ["--set", item]
    assert cli_main(args) == 0
    printed = capsys.readouterr().out
    assert "distill (both): student vitpose-tiny" in printed and "best AP" in printed
    assert (tmp_path / "kd" / "token" / "knowledge_token.safetensors").is_file()
    student = load_model(tmp_path / "kd" / "student" / "best")
    assert student.config.backbone.knowledge_tokens == 1 and student.config.backbone.embed_dim == 96
    assert student.config.input_size == (48, 64) and student.keypoint_set.name == "coco17"
    from safetensors.torch import load_file

    token = load_file(str(tmp_path / "kd" / "token" / "knowledge_token.safetensors"))["knowledge_token"]
    assert torch.equal(student.backbone.knowledge_token, token)
    saved = json.loads((tmp_path / "kd" / "student" / "best" / "config.json").read_text())
    assert saved["backbone"]["knowledge_dim"] == 192
    # A multi-task teacher is refused with a hint.
    create_model("vitpose++-tiny", depth=1).save_pretrained(tmp_path / "plus")
    assert cli_main(["distill", "--teacher", str(tmp_path / "plus"), "--student", "vitpose-tiny", "--method", "output",
                     "--out", str(tmp_path / "x")]) == 2
    assert "merge one task first" in capsys.readouterr().err
