"""RTMPose parts: CSPNeXt shapes and freezing, the RTMCC head's gated attention unit against its formula,
BatchNorm folding, the zoo's codecs, the official recipe presets and the stage-2 augmentation switch."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from poseforge.data.augment import AugmentConfig
from poseforge.errors import PoseforgeError
from poseforge.models import create_model
from poseforge.models.backbones.cspnext import CSPNeXt, CSPNeXtConfig
from poseforge.models.heads.rtmcc import GatedAttentionUnit, RTMCCHead, RTMCCHeadConfig
from poseforge.outputs import SimCCLogits
from poseforge.train import Trainer, load_config

SMALL = CSPNeXtConfig(deepen_factor=0.167, widen_factor=0.125, out_indices=(0, 1, 2, 3, 4))


def small_rtmpose(**overrides):
    """An RTMPose-t shaped model a few times narrower, at 64x96."""
    return create_model("rtmpose-t", widen_factor=0.125, input_size=[64, 96], **overrides)


@pytest.mark.parametrize("size", [(192, 256), (61, 83)])
def test_cspnext_feature_info_matches_the_maps(one_thread, size):
    torch.manual_seed(0)
    net = CSPNeXt(SMALL, input_size=size).eval()
    with torch.no_grad():
        maps = net(torch.randn(1, 3, size[1], size[0]))
    assert len(maps) == 5
    for info, m in zip(net.feature_info, maps):
        assert (m.shape[1], m.shape[3], m.shape[2]) == (info.channels, *info.size)
    assert [i.stride for i in net.feature_info] == [2, 4, 8, 16, 32]


def test_cspnext_sizes_follow_the_factors():
    config = CSPNeXtConfig(deepen_factor=0.67, widen_factor=0.75)  # RTMPose-m
    assert config.stem_channels() == 48
    assert [s[1] for s in config.stage_settings()] == [96, 192, 384, 768]
    assert [s[2] for s in config.stage_settings()] == [2, 4, 4, 2]
    assert [s[4] for s in config.stage_settings()] == [False, False, False, True]
    with pytest.raises(PoseforgeError, match="out_indices"):
        CSPNeXtConfig(out_indices=(5,))


def test_frozen_stages_keep_weights_and_statistics(one_thread):
    torch.manual_seed(0)
    net = CSPNeXt(CSPNeXtConfig(deepen_factor=0.167, widen_factor=0.125, frozen_stages=1), (64, 96)).train()
    frozen = [n for n, p in net.named_parameters() if not p.requires_grad]
    assert frozen and all(n.startswith(("stem.", "stage1.")) for n in frozen)
    assert all(p.requires_grad for n, p in net.named_parameters() if n.startswith(("stage2.", "stage4.")))
    before = copy.deepcopy(net.stage1.state_dict())
    net(torch.randn(2, 3, 96, 64))  # a training-mode forward: frozen BatchNorms must not update
    assert all(torch.equal(before[k], v) for k, v in net.stage1.state_dict().items())
    assert not net.stem[0].bn.training and net.stage2[0].bn.training


def naive_gau(gau: GatedAttentionUnit, x: torch.Tensor) -> torch.Tensor:
    """The GAU written out token by token from its definition (RTMPose / Hua et al.)."""
    d = x.shape[-1]
    out = torch.empty_like(x)
    for b in range(x.shape[0]):
        norms = x[b].norm(dim=-1, keepdim=True) / math.sqrt(d)
        xn = x[b] / norms.clamp(min=1e-5) * gau.ln.g
        hidden = F.silu(xn @ gau.uv.weight.T)
        u, v, z = hidden[:, :gau.e], hidden[:, gau.e:2 * gau.e], hidden[:, 2 * gau.e:]
        q = z * gau.gamma[0] + gau.beta[0]
        k = z * gau.gamma[1] + gau.beta[1]
        for i in range(x.shape[1]):
            weights = torch.stack([torch.relu(q[i] @ k[j] / math.sqrt(gau.s)) ** 2 for j in range(x.shape[1])])
            mixed = (weights[:, None] * v).sum(0)
            out[b, i] = gau.o.weight @ (u[i] * mixed) + gau.res_scale.scale * x[b, i]
    return out


def test_gated_attention_unit_matches_its_formula():
    torch.manual_seed(0)
    gau = GatedAttentionUnit(16, 8, 2.0, "silu", 0.0, 0.0).eval()
    with torch.no_grad():
        gau.res_scale.scale.uniform_(0.5, 1.5)
        gau.ln.g.fill_(1.3)
        x = torch.randn(2, 5, 16)
        assert torch.allclose(gau(x), naive_gau(gau, x), atol=1e-5)


def test_rtmcc_head_outputs_and_bins():
    torch.manual_seed(0)
    config = RTMCCHeadConfig(hidden_dim=32, attention_dim=16, split_ratio=2.0)
    backbone = CSPNeXt(CSPNeXtConfig(deepen_factor=0.167, widen_factor=0.125), (64, 96))
    head = RTMCCHead(config, backbone.feature_info, num_outputs=17, input_size=(64, 96))
    out = head(backbone(torch.randn(2, 3, 96, 64)))
    assert isinstance(out, SimCCLogits)
    assert out.simcc_x.shape == (2, 17, 128) and out.simcc_y.shape == (2, 17, 192)
    assert out.keypoint_maps.shape == (2, 17, 3, 2)
    assert head.cls_x.bias is None and head.mlp[1].bias is None  # mmpose's linears have no bias
    with pytest.raises(PoseforgeError, match="final_kernel_size"):
        RTMCCHeadConfig(final_kernel_size=4)


@pytest.mark.parametrize("name", ["rtmpose-t", "rtmw-m"])
def test_batchnorm_folding_keeps_outputs_and_blocks_saving(one_thread, tmp_path, name):
    torch.manual_seed(0)
    model = create_model(name, widen_factor=0.125, input_size=[64, 96]).eval()  # RTMW: neck and head too
    with torch.no_grad():  # informative statistics, or folding would be trivially exact
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_(1, 0.2)
                m.bias.normal_(0, 0.2)
    x = torch.randn(2, 3, 96, 64)
    with torch.no_grad():
        reference = model(x)
        folded = copy.deepcopy(model).prepare_for_inference(fuse_batchnorm=True)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
        out = folded(x)
    assert torch.allclose(out.simcc_x, reference.simcc_x, atol=1e-5)
    assert torch.allclose(out.simcc_y, reference.simcc_y, atol=1e-5)
    with pytest.raises(PoseforgeError, match="folded"):
        folded.save_pretrained(tmp_path / "folded")


def test_zoo_codecs_follow_the_official_configs():
    m = create_model("rtmpose-m")
    assert m.config.codec == {"name": "simcc", "input_size": [192, 256], "sigma": [4.9, 5.66], "split_ratio": 2.0,
                              "normalize": False}
    big = create_model("rtmpose-l-384x288")
    assert big.config.input_size == (288, 384) and big.config.codec["sigma"] == [6.0, 6.93]
    assert big.head.cls_x.out_features == 576 and big.head.cls_y.out_features == 768
    whole = create_model("dwpose-t")
    assert whole.keypoint_set.name == "wholebody133" and whole.head.final_layer.out_channels == 133
    assert whole.config.backbone == create_model("rtmpose-t-wholebody").config.backbone


def test_keypoint_map_loss_accepts_rtmcc_heads():
    model = small_rtmpose()
    config = load_config("rtmpose-t-synth").loss
    criterion = model.build_criterion(config)
    assert type(criterion).__name__ == "KeypointMapAuxLoss"


def test_official_recipe_presets():
    m = load_config("rtmpose-m-coco")
    assert (m.optim.lr, m.optim.weight_decay, m.schedule.epochs, m.schedule.decay_begin_epoch) == (4e-3, 0.05, 420, 210)
    assert (m.schedule.warmup_iters, m.schedule.warmup_start, m.schedule.min_lr_ratio) == (1000, 1e-5, 0.05)
    assert (m.ema.momentum, m.seed, m.data.batch_size, m.data.stage2_epochs) == (0.0002, 21, 256, 30)
    assert m.data.augment == AugmentConfig.rtmpose(1) and m.data.augment_stage2 == AugmentConfig.rtmpose(2)
    t = load_config("rtmpose-t-coco")
    assert (t.optim.weight_decay, t.ema.momentum) == (0.0, 0.0)
    with pytest.raises(PoseforgeError, match="augment_stage2"):
        load_config("smoke", ["data.stage2_epochs=1"])


def test_stage2_augmentation_switch_takes_the_last_epochs(tmp_path, monkeypatch):
    sets = ["model.overrides={input_size: [48, 64], head: simple}", "data.synthetic.train_images=16",
            "data.synthetic.val_images=2", "data.synthetic.image_size=[48,64]", "data.batch_size=8",
            "schedule.epochs=3", "schedule.warmup_iters=1", "val_interval=0", "log_interval=1", "threads=1",
            "data.stage2_epochs=1", "data.augment_stage2={rotate_factor: 0.0, scale_prob: 0.0, flip_prob: 0.0}"]
    trainer = Trainer(load_config("smoke", sets), tmp_path / "run", progress=False)
    seen: list[tuple[int, float]] = []
    original = Trainer._batches
    monkeypatch.setattr(Trainer, "_batches", lambda self: (yield from _recorded(self, original, seen)))
    trainer.fit()
    assert seen == [(0, 30.0), (1, 30.0), (2, 0.0)]


def _recorded(trainer, original, seen):
    batches = original(trainer)
    first = next(batches)  # the generator has chosen this epoch's transforms once it yields
    seen.append((trainer.epoch, trainer.samples.transforms[0].augment.rotate_factor))
    yield first
    yield from batches


def test_eval_prints_wholebody_parts_for_a_wholebody_model(peer_data, tmp_path, capsys):
    from poseforge.cli import main

    torch.manual_seed(0)
    create_model("dwpose-t", widen_factor=0.125, input_size=[96, 128]).save_pretrained(tmp_path / "model")
    gt = str(peer_data / "coco/test_coco_wholebody.json")
    code = main(["eval", "--model", str(tmp_path / "model"), "--data", gt, "--json", str(tmp_path / "stats.json"),
                 "--out", str(tmp_path / "results.json"), "--workers", "0"])
    assert code == 0
    printed = capsys.readouterr().out
    rows = {line.split()[0] for line in printed.splitlines() if line.strip()}
    assert {"body", "foot", "face", "lefthand", "righthand", "wholebody"} <= rows
    import json
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert {f"{p}/AP" for p in ("body", "foot", "face", "lefthand", "righthand")} <= set(stats)
    # the results come in COCO-WholeBody's separate fields and score the same when read back
    results = json.loads((tmp_path / "results.json").read_text())
    assert [len(results[0][f]) for f in ("keypoints", "foot_kpts", "face_kpts", "lefthand_kpts", "righthand_kpts")] == \
        [51, 18, 204, 63, 63]
    assert main(["eval", "--gt", gt, "--results", str(tmp_path / "results.json"), "--json", str(tmp_path / "again.json")]) == 0
    again = json.loads((tmp_path / "again.json").read_text())
    assert again == {k: v for k, v in stats.items() if k in again} and len(again) >= 60


def test_keypoint_weights_scale_each_joint_of_the_kl_loss(one_thread):
    from poseforge.models.losses import KLDiscretLoss, LossConfig

    torch.manual_seed(0)
    model = small_rtmpose().eval()
    w, h = model.config.input_size
    batch = {"keypoints": torch.rand(3, 17, 2) * torch.tensor([w - 1.0, h - 1.0]), "visibility": torch.ones(3, 17)}
    with torch.no_grad():
        outputs = model(torch.randn(3, 3, h, w))
    model.configure_loss(LossConfig(keypoint_weights=True))
    weighted = model.loss(outputs, batch)["loss"]
    targets = model.codec.encode(batch)
    joint = torch.as_tensor(model.keypoint_set.joint_weights_array())
    assert joint.max() > 1  # COCO weighs wrists and ankles 1.5
    expected = KLDiscretLoss()(outputs, {**targets, "target_weights": targets["target_weights"] * joint})
    assert torch.allclose(weighted, expected)
    model.configure_loss(LossConfig())
    assert not torch.allclose(model.loss(outputs, batch)["loss"], weighted)
