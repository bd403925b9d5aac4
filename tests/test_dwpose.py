"""DWPose two-stage distillation: the feature and logit losses against mmpose's formulas, the stage-1 decay,
the align convolution (optimized, checkpointed, resumed, never exported), stage 2 training only the head on
the frozen stage-1 backbone, and ``poseforge distill --method dwpose`` end to end on synthetic whole bodies."""
from __future__ import annotations

import pytest
import torch

from poseforge.cli import main as cli_main
from poseforge.errors import PoseforgeError
from poseforge.models import create_model, load_model
from poseforge.models.loading import read_training_checkpoint
from poseforge.outputs import SimCCLogits
from poseforge.train import Trainer, load_config
from poseforge.train.dwpose import (ALPHA_FEA, DWPoseStage1, DWPoseStage2, distillation_decay, dwpose_logit_loss,
                                    feature_distillation_loss, stage2_epochs)

# A CSPNeXt-t a third as wide (two-thirds for the teacher) with a small RTMCC head, on 64x96 crops.
TINY = {"input_size": (64, 96), "deepen_factor": 0.167, "hidden_dim": 32, "attention_dim": 16}
STUDENT_WIDTH, TEACHER_WIDTH = 0.125, 0.25
RECIPE = ["model.pos_embed_init=model", "compile=false", "schedule.steps_per_epoch=null", "data.synthetic.train_images=32",
          "data.synthetic.val_images=4", "data.synthetic.image_size=[64,96]", "data.batch_size=8",
          "data.val_batch_size=4", "schedule.epochs=2", "schedule.warmup_iters=1", "log_interval=1", "threads=1",
          "data.num_workers=0"]


def rtm(width: float, seed: int = 0, **kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("rtmpose-t", widen_factor=width, **{**TINY, **kw})


def trained_like(model: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """``model`` with perturbed weights and BatchNorm statistics (as if trained), in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                scale = 0.05 if "running_var" not in name else 0.2
                tensor.add_((torch.randn(tensor.shape, generator=generator) * scale).abs() if "running_var" in name
                            else torch.randn(tensor.shape, generator=generator) * scale)
    return model.eval()


def model_overrides(keypoint_set: str = "coco17", width: float = STUDENT_WIDTH) -> str:
    return ("model.overrides={input_size: [64, 96], deepen_factor: 0.167, hidden_dim: 32, attention_dim: 16, "
            f"widen_factor: {width}, keypoint_set: {keypoint_set}}}")


def recipe(keypoint_set: str = "coco17", width: float = STUDENT_WIDTH, extra: list[str] = ()):
    """The smoke recipe (synthetic people) with the tiny RTMPose student."""
    return load_config("smoke", ["model.name=rtmpose-t", model_overrides(keypoint_set, width)] + RECIPE + list(extra))


class FakeBatch:
    def __init__(self, image, visibility=None):
        self.image, self.visibility = image, visibility


def crops(n: int = 2) -> torch.Tensor:
    return (torch.rand(n, 3, 96, 64) * 255).round()


# ----------------------------------------------------------------------------- losses
def test_logit_loss_is_mmpose_kdloss():
    n, k, beta, weight = 3, 4, 10.0, 0.1
    s = SimCCLogits(torch.randn(n, k, 12), torch.randn(n, k, 16), None)
    t = SimCCLogits(torch.randn(n, k, 12), torch.randn(n, k, 16), None)
    expected = 0.0
    for ls, lt in ((s.simcc_x, t.simcc_x), (s.simcc_y, t.simcc_y)):  # KDLoss.loss per axis, written out
        q = torch.softmax(beta * lt.reshape(n * k, -1), 1)
        kl = (q * (q.log() - torch.log_softmax(beta * ls.reshape(n * k, -1), 1))).sum(1)
        expected = expected + weight * kl.reshape(n, k).sum(1).mean()
    expected = expected / k
    torch.testing.assert_close(dwpose_logit_loss(s, t, beta, weight), expected)
    assert float(dwpose_logit_loss(t, t, beta, weight)) == pytest.approx(0.0, abs=1e-6)


def test_feature_loss_is_the_summed_squared_error_per_sample():
    s, t = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    torch.testing.assert_close(feature_distillation_loss(s, t), ((s - t) ** 2).sum() / 2 * 0.00007)
    with pytest.raises(PoseforgeError, match="student map"):
        feature_distillation_loss(s, t[:, :2])


def test_decay_is_one_minus_epoch_over_epochs_and_stage2_is_a_fifth():
    assert [distillation_decay(e, 4) for e in range(4)] == [1.0, 0.75, 0.5, 0.25]
    with pytest.raises(PoseforgeError):
        distillation_decay(4, 4)
    assert (stage2_epochs(270), stage2_epochs(10), stage2_epochs(2), stage2_epochs(1)) == (60, 2, 1, 1)


# ----------------------------------------------------------------------------- stage 1 hooks
def test_stage1_loss_is_decayed_features_plus_logits_without_target_weights(one_thread):
    teacher = trained_like(rtm(TEACHER_WIDTH))
    stage = DWPoseStage1(teacher)
    student = stage.setup_model(rtm(STUDENT_WIDTH).train())
    assert isinstance(stage.align, torch.nn.Conv2d) and stage.align.bias is not None
    assert (stage.align.in_channels, stage.align.out_channels) == (128, 256)
    assert sorted(stage.state_dict()) == ["align.bias", "align.weight"]  # the teacher is not part of it
    raw = crops()
    stage.set_epoch(1, 4)
    outputs = student(student.normalize(raw))
    loss = stage(FakeBatch(raw, torch.ones(2, 17)), None, outputs)
    with torch.no_grad():
        fs = student.backbone(student.normalize(raw))[-1]
        ft = teacher.backbone(teacher.normalize(raw))
        target = teacher.head(ft)
        fea = ((stage.align(fs) - ft[-1]) ** 2).sum() / 2 * ALPHA_FEA
        logit = dwpose_logit_loss(outputs, target, 10.0, 0.1)
    torch.testing.assert_close(stage.last_parts["fea"], fea, rtol=1e-4, atol=1e-8)
    torch.testing.assert_close(stage.last_parts["logit"], logit)
    torch.testing.assert_close(loss, 0.75 * (fea + logit), rtol=1e-4, atol=1e-8)
    assert float(stage.last_parts["fea"]) > 0 and float(logit) > 0
    loss.backward()
    assert stage.align.weight.grad.abs().sum() > 0 and student.backbone.stem[0].conv.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())
    # Every keypoint counts, visible or not: invisible keypoints leave the loss as it is.
    student.zero_grad()
    hidden = stage(FakeBatch(raw, torch.zeros(2, 17)), None, student(student.normalize(raw)))
    torch.testing.assert_close(hidden, loss)
    # A teacher as wide as the student needs no align convolution.
    same = DWPoseStage1(trained_like(rtm(STUDENT_WIDTH, seed=3)))
    same.setup_model(rtm(STUDENT_WIDTH))
    assert same.align is None and not list(same.parameters())


def test_stage1_refuses_heatmap_models_and_misfits():
    with pytest.raises(PoseforgeError, match="needs SimCC models .* udp codec"):
        DWPoseStage1(create_model("vitpose-tiny", input_size=(64, 96), head="simple", depth=1))
    stage = DWPoseStage1(rtm(TEACHER_WIDTH))
    with pytest.raises(PoseforgeError, match="keypoint sets coco17 vs wholebody133"):
        stage.setup_model(rtm(STUDENT_WIDTH, keypoint_set="wholebody133"))


def test_stage1_trainer_optimizes_align_tells_the_epoch_and_resumes_exactly(tmp_path, one_thread):
    """``align`` joins the optimizer and last.pt, the hook hears every epoch, and a run stopped after epoch 1
    and resumed ends bit-identical to one that ran through (align included)."""
    teacher = trained_like(rtm(TEACHER_WIDTH))
    config = recipe(extra=["val_interval=0"])
    epochs_seen = []

    def run(folder, resume=False, max_steps=None):
        stage = DWPoseStage1(teacher)
        original = stage.set_epoch
        stage.set_epoch = lambda e, n: (epochs_seen.append((folder, e, n)), original(e, n))[1]
        c = config.replace(max_steps=max_steps)
        trainer = Trainer(c, tmp_path / folder, resume=resume, progress=False, setup_model=stage.setup_model,
                          extra_loss=stage, auxiliary=stage)
        start = stage.align.weight.detach().clone()
        trainer.fit()
        return trainer, stage, start

    trainer, stage, start = run("straight")
    assert [e[1:] for e in epochs_seen] == [(0, 2), (1, 2)]
    assert any(p is stage.align.weight for g in trainer.optimizer.param_groups for p in g["params"])
    assert not torch.equal(stage.align.weight.detach(), start)  # it trained
    saved = read_training_checkpoint(tmp_path / "straight" / "last.pt")
    assert torch.equal(saved["auxiliary"]["align.weight"], stage.align.weight.detach())
    assert not any("align" in k for k in saved["model"])
    records = (tmp_path / "straight" / "metrics.jsonl").read_text()
    assert '"loss_fea"' in records and '"loss_logit"' in records

    run("resumed", max_steps=trainer.steps_per_epoch)
    _, again, _ = run("resumed", resume=True)
    assert [e[1:] for e in epochs_seen if e[0] == "resumed"] == [(0, 2), (1, 2)]
    resumed = read_training_checkpoint(tmp_path / "resumed" / "last.pt")
    assert torch.equal(again.align.weight.detach(), stage.align.weight.detach())
    for k, v in saved["model"].items():
        assert torch.equal(resumed["model"][k], v), k


# ----------------------------------------------------------------------------- stage 2
def test_stage2_trains_only_the_head_on_the_frozen_stage1_backbone(tmp_path, one_thread):
    stage1 = trained_like(rtm(STUDENT_WIDTH, seed=5))
    frozen = {k: v.clone() for k, v in stage1.backbone.state_dict().items()}
    # The stage-1 head run on the captured features is the stage-1 student: a copy of it has nothing to learn.
    copy_hooks = DWPoseStage2(stage1, head_init="stage1")
    twin = copy_hooks.setup_model(rtm(STUDENT_WIDTH, seed=9)).train()
    raw = crops()
    assert float(copy_hooks(FakeBatch(raw), None, twin(twin.normalize(raw))).detach()) == pytest.approx(0.0, abs=1e-6)

    hooks = DWPoseStage2(stage1)
    config = recipe(extra=["val_interval=1", "ema.momentum=0.01", "loss.loss_weight=0"])
    trainer = Trainer(config, tmp_path / "s2", progress=False, setup_model=hooks.setup_model, extra_loss=hooks)
    optimized = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert optimized == {id(p) for p in trainer.estimator.head.parameters()}
    head_start = {k: v.clone() for k, v in trainer.estimator.head.state_dict().items()}
    trainer.fit()
    assert not any(m.training for m in trainer.estimator.backbone.modules())
    for model in (trainer.estimator, load_model(tmp_path / "s2")):  # the trained student and its exported best (EMA)
        for k, v in model.backbone.state_dict().items():  # weights and BatchNorm statistics, bit for bit
            assert torch.equal(v, frozen[k]), k
    head_end = trainer.estimator.head.state_dict()
    assert all(not torch.equal(head_end[k], v) for k, v in head_start.items() if k.endswith("weight"))
    assert float(hooks.last_parts["logit"]) > 0
    with pytest.raises(PoseforgeError, match="head_init"):
        DWPoseStage2(stage1, head_init="teacher")


# ----------------------------------------------------------------------------- command
def test_distill_dwpose_command_on_synthetic_whole_bodies(tmp_path, capsys, one_thread):
    teacher = trained_like(rtm(TEACHER_WIDTH, keypoint_set="wholebody133"))
    teacher.save_pretrained(tmp_path / "teacher")
    out = tmp_path / "dw"
    args = ["distill", "--teacher", str(tmp_path / "teacher"), "--student", "rtmpose-t", "--method", "dwpose",
            "--out", str(out), "--config", "smoke"]
    for item in RECIPE + ["val_interval=1", model_overrides("wholebody133")]:
        args += ["--set", item]
    assert cli_main(args) == 0
    printed = capsys.readouterr().out
    assert "distill (dwpose): student rtmpose-t" in printed and printed.count("best AP") == 2
    for stage in ("stage1", "stage2"):
        assert (out / stage / "best" / "model.safetensors").is_file() and (out / stage / "last.pt").is_file()
    assert "align.weight" in read_training_checkpoint(out / "stage1" / "last.pt")["auxiliary"]
    assert read_training_checkpoint(out / "stage2" / "last.pt")["epoch"] == 1  # 60/270 of 2 epochs, at least 1

    student = load_model(out / "student")
    plain = rtm(STUDENT_WIDTH, keypoint_set="wholebody133")
    assert sorted(student.state_dict()) == sorted(plain.state_dict())  # no teacher, no align
    assert student.keypoint_set.name == "wholebody133" and student.config.input_size == (64, 96)
    stage1 = load_model(out / "stage1")
    for k, v in student.backbone.state_dict().items():
        assert torch.equal(v, stage1.backbone.state_dict()[k]), k
    predictions = student.predict(crops(2).to(torch.uint8))
    assert predictions.keypoints.shape == (2, 1, 133, 2) and torch.isfinite(predictions.keypoints).all()

    # Done stages are skipped on a re-run (of the same recipe only); a heatmap teacher is refused in one line.
    assert cli_main(args) == 0
    assert capsys.readouterr().out.count("(done before)") == 2
    assert cli_main(args + ["--set", "optim.lr=0.01"]) == 2
    assert "holds a run of another recipe (optim.lr: 0.001 -> 0.01)" in capsys.readouterr().err
    create_model("vitpose-tiny", input_size=(64, 96), head="simple", depth=1).save_pretrained(tmp_path / "heatmap")
    assert cli_main(["distill", "--teacher", str(tmp_path / "heatmap"), "--student", "rtmpose-t", "--method", "dwpose",
                     "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "needs SimCC models" in err and len(err.strip().splitlines()) == 1
