"""Optimizer groups (layer-wise LR decay, no decay on norms/biases/pos_embed), LR schedules, EMA, losses."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from poseforge.codecs import create_codec
from poseforge.models import create_model
from poseforge.train import (KeypointMSELoss, KLDiscretLoss, LRSchedule, OptimSection, ScheduleSection, build_loss,
                             build_optimizer)
from poseforge.train.config import LossSection
from poseforge.train.ema import ModelEMA


@pytest.fixture(scope="module")
def tiny():
    return create_model("vitpose-tiny", input_size=(48, 64))


def test_layer_decay_groups(tiny):
    decay = 0.8
    opt = build_optimizer(tiny, OptimSection(lr=1e-3, weight_decay=0.1, layer_decay=decay))
    depth = tiny.config.backbone.depth
    where = {id(p): g for g in opt.param_groups for p in g["params"]}
    params = dict(tiny.named_parameters())
    assert sum(len(g["params"]) for g in opt.param_groups) == len(params)  # every parameter exactly once

    def group(name):
        return where[id(params[name])]

    expected = {"backbone.patch_embed.proj.weight": (decay ** (depth + 1), 0.1),
                "backbone.pos_embed": (decay ** (depth + 1), 0.0),
                "backbone.blocks.0.attn.qkv.weight": (decay ** depth, 0.1),
                "backbone.blocks.0.attn.qkv.bias": (decay ** depth, 0.0),
                "backbone.blocks.0.norm1.weight": (decay ** depth, 0.0),
                f"backbone.blocks.{depth - 1}.mlp.fc2.weight": (decay, 0.1),
                "backbone.norm.weight": (1.0, 0.0),
                "head.final_layer.weight": (1.0, 0.1),
                "head.final_layer.bias": (1.0, 0.0),
                "head.deconv_layers.1.weight": (1.0, 0.0)}  # BatchNorm
    for name, (scale, wd) in expected.items():
        g = group(name)
        assert g["lr_scale"] == pytest.approx(scale) and g["lr"] == pytest.approx(1e-3 * scale), name
        assert g["initial_lr"] == g["lr"] and g["weight_decay"] == wd, name


def test_layer_decay_defaults_to_the_backbone_rate(tiny):
    opt = build_optimizer(tiny, OptimSection(lr=1.0, layer_decay=None))
    rate = tiny.config.backbone.layer_decay
    assert min(g["lr_scale"] for g in opt.param_groups) == pytest.approx(rate ** (tiny.config.backbone.depth + 1))


def _schedule(config: ScheduleSection, steps_per_epoch: int = 10) -> LRSchedule:
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    return LRSchedule(opt, config, steps_per_epoch)


def test_warmup_then_multistep_like_mmpose():
    s = _schedule(ScheduleSection(epochs=210, warmup_iters=500, warmup_start=0.001, kind="step", milestones=(170, 200), gamma=0.1))
    assert s.factor(0) == pytest.approx(0.001)
    assert s.factor(250) == pytest.approx(0.001 + 0.999 * 0.5)
    assert s.factor(499) == pytest.approx(0.001 + 0.999 * 499 / 500)
    assert s.factor(500) == 1.0 and s.factor(1699) == 1.0
    assert s.factor(1700) == pytest.approx(0.1) and s.factor(1999) == pytest.approx(0.1)
    assert s.factor(2000) == pytest.approx(0.01)
    assert s.get_last_lr() == [pytest.approx(2.0 * 0.001)]
    for _ in range(1700):
        s.step()
    assert s.get_last_lr() == [pytest.approx(0.2)]


def test_cosine_and_linear_decay():
    cos = _schedule(ScheduleSection(epochs=10, warmup_iters=0, kind="cosine", min_lr_ratio=0.05, decay_begin_epoch=4))
    assert cos.factor(0) == 1.0 and cos.factor(40) == 1.0
    assert cos.factor(70) == pytest.approx(0.05 + 0.95 * 0.5)
    assert cos.factor(100) == pytest.approx(0.05) and cos.factor(500) == pytest.approx(0.05)
    lin = _schedule(ScheduleSection(epochs=10, warmup_iters=0, kind="linear", min_lr_ratio=0.0))
    assert lin.factor(25) == pytest.approx(0.75) and lin.factor(100) == 0.0
    const = _schedule(ScheduleSection(epochs=10, warmup_iters=4, warmup_start=0.5, kind="constant"))
    assert [const.factor(i) for i in (0, 2, 4, 99)] == [0.5, 0.75, 1.0, 1.0]


def test_schedule_state_round_trip():
    a = _schedule(ScheduleSection(epochs=5, warmup_iters=3, kind="cosine"))
    for _ in range(7):
        a.step()
    b = _schedule(ScheduleSection(epochs=5, warmup_iters=3, kind="cosine"))
    b.load_state_dict(a.state_dict())
    assert b.get_last_lr() == a.get_last_lr() and b.step_count == 7


def test_ema_follows_mmpose_exp_momentum():
    model = torch.nn.Linear(3, 2)
    ema = ModelEMA(model, momentum=0.01, gamma=10.0)
    weights = []
    for step in range(4):
        with torch.no_grad():
            model.weight.add_(1.0)
        weights.append(model.weight.detach().clone())
        ema.update(model)
    expected = weights[0].clone()  # the first update copies
    for n in range(1, 4):
        m = (1 - 0.01) * math.exp(-(1 + n) / 10.0) + 0.01
        expected = expected + m * (weights[n] - expected)
    assert torch.allclose(ema.module.weight, expected, atol=1e-6)
    assert not torch.equal(ema.module.weight, model.weight)
    state = ema.state_dict()
    other = ModelEMA(torch.nn.Linear(3, 2), momentum=0.01, gamma=10.0)
    other.load_state_dict(state)
    assert torch.equal(other.module.weight, ema.module.weight) and other.steps == 4


def test_ema_copies_buffers():
    model = torch.nn.BatchNorm1d(3)
    ema = ModelEMA(model, momentum=0.5)
    model.train()(torch.randn(8, 3) * 5)
    ema.update(model)
    assert torch.equal(ema.module.running_var, model.running_var)


def test_keypoint_mse_with_target_weights():
    out, target = torch.rand(2, 3, 4, 5), torch.rand(2, 3, 4, 5)
    weights = torch.tensor([[1.0, 0.0, 1.0], [0.5, 1.0, 0.0]])
    loss = KeypointMSELoss()(out, {"heatmaps": target, "target_weights": weights})
    assert loss == pytest.approx(float(((out - target) ** 2 * weights[..., None, None]).mean()))
    unweighted = KeypointMSELoss(use_target_weight=False)(out, {"heatmaps": target, "target_weights": weights})
    assert unweighted == pytest.approx(float(F.mse_loss(out, target)))


def test_kl_discret_loss():
    codec = create_codec("simcc", input_size=(16, 24), sigma=(2.0, 2.0), split_ratio=2.0, normalize=False)
    kp = torch.tensor([[[3.0, 5.0], [10.0, 20.0]], [[8.0, 2.0], [1.0, 1.0]]])
    targets = codec.encode(kp, torch.ones(2, 2))
    loss = KLDiscretLoss(beta=10.0, label_softmax=True, label_beta=10.0)
    perfect = (targets["x_labels"].clone(), targets["y_labels"].clone())  # same softmax as the labels
    assert loss(perfect, targets) == pytest.approx(0.0, abs=1e-6)
    logits = (torch.randn_like(targets["x_labels"]), torch.randn_like(targets["y_labels"]))
    value = loss(logits, targets)
    manual = 0.0
    for lg, lb in zip(logits, (targets["x_labels"], targets["y_labels"])):
        p = F.softmax(lb.reshape(4, -1) * 10, 1)
        manual += (p * (p.log() - F.log_softmax(lg.reshape(4, -1) * 10, 1))).mean(1).sum()
    assert value == pytest.approx(float(manual / 2), rel=1e-5)
    zero_weight = {**targets, "target_weights": torch.zeros(2, 2)}
    assert loss(logits, zero_weight) == 0.0


def test_loss_follows_the_codec():
    assert isinstance(build_loss("udp"), KeypointMSELoss) and isinstance(build_loss("msra"), KeypointMSELoss)
    assert isinstance(build_loss("simcc"), KLDiscretLoss)
    assert isinstance(build_loss("udp", LossSection(name="kl_discret")), KLDiscretLoss)
    with pytest.raises(Exception, match="no default loss for codec 'weird'"):
        build_loss("weird")
