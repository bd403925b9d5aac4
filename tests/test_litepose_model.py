"""LitePose model: the large-kernel MobileNetV2 backbone, the fusion deconv head (heatmaps + tags at 1/4,
heatmaps at 1/2), the HigherHRNet reference, the zoo's published MACs and the model round trip.

MACs are counted on the meta device (shapes only, no weights allocated); forward passes use tiny inputs."""
from __future__ import annotations

import pytest
import torch
from torch.utils import _pytree as pytree

from poseforge.errors import PoseforgeError
from poseforge.models import build_model, config_from_dict, create_model, load_model, model_config
from poseforge.models.backbones.hrnet import HRNetConfig
from poseforge.models.backbones.mobilenetv2 import LitePoseMobileNetV2, MobileNetV2Config, make_divisible
from poseforge.models.complexity import count_macs, count_parameters, macs_by_module
from poseforge.models.heads.bottomup import LitePoseHeadConfig
from poseforge.models.loading import skip_meta_init
from poseforge.models.zoo import LITEPOSE_ARCHS, PUBLISHED_GMACS
from poseforge.outputs import HeatmapsTags, merge_outputs

XS = MobileNetV2Config()  # LitePose-Auto-XS widths are the config defaults


def meta_model(name: str, **overrides):
    with torch.device("meta"), skip_meta_init():
        return build_model(model_config(name, **overrides))


@pytest.mark.parametrize("size", [(64, 96), (70, 45)])
def test_backbone_maps_match_feature_info(one_thread, size):
    net = LitePoseMobileNetV2(XS, input_size=size).eval()
    with torch.no_grad():
        maps = net(torch.randn(1, 3, size[1], size[0]))
    assert [(m.shape[1], m.shape[3], m.shape[2]) for m in maps] == [(i.channels, *i.size) for i in net.feature_info]
    assert [i.stride for i in net.feature_info] == [2, 4, 8, 16, 16]
    assert [i.channels for i in net.feature_info] == [16, 16, 32, 48, 80]
    picked = MobileNetV2Config(out_indices=(1, 3))
    assert picked.feature_info(size) == [net.feature_info[1], net.feature_info[3]]
    with torch.no_grad():
        subset = LitePoseMobileNetV2(picked, size).eval()(torch.randn(1, 3, size[1], size[0]))
    assert [tuple(m.shape) for m in subset] == [tuple(maps[1].shape), tuple(maps[3].shape)]


@pytest.mark.parametrize("tag_dim", [1, 2])
def test_outputs_at_a_quarter_and_half_of_the_input(one_thread, tag_dim):
    model = build_model(model_config("litepose-xs", input_size=(64, 96), tag_dim=tag_dim)).eval()
    k = model.keypoint_set.num_keypoints
    assert k == 14  # the paper's CrowdPose models
    with torch.no_grad():
        out = model(torch.randn(2, 3, 96, 64))
    assert isinstance(out, HeatmapsTags)
    assert tuple(out.heatmaps.shape) == (2, k, 24, 16)
    assert tuple(out.tags.shape) == (2, k * tag_dim, 24, 16)
    assert tuple(out.heatmaps_hr.shape) == (2, k, 48, 32)


def test_every_parameter_gets_a_gradient(one_thread):
    model = build_model(model_config("litepose-xs", input_size=(32, 32))).train()
    out = model(torch.randn(2, 3, 32, 32))
    sum(t.square().mean() for t in out.tensors().values()).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0] == []


def test_official_module_names_and_shapes():
    """Keys and shapes follow mit-han-lab/litepose ``pose_mobilenet.py`` for search-XS.json (CrowdPose, K=14),
    so released checkpoints map by prefixing ``backbone.`` / ``head.``."""
    state = meta_model("litepose-xs").state_dict()
    expected = {
        "backbone.first.0.0.weight": (32, 3, 3, 3), "backbone.first.1.0.weight": (32, 1, 3, 3),
        "backbone.first.2.weight": (16, 32, 1, 1), "backbone.first.3.running_var": (16,),
        "backbone.stage.0.0.inv.0.weight": (96, 16, 1, 1), "backbone.stage.0.0.depth_conv.0.weight": (96, 1, 7, 7),
        "backbone.stage.3.9.point_conv.1.weight": (80,), "backbone.stage.3.0.inv.0.weight": (288, 48, 1, 1),
        "head.deconv_refined.0.weight": (80, 16, 4, 4), "head.deconv_raw.0.weight": (48, 16, 4, 4),
        "head.deconv_raw.2.weight": (16, 24, 4, 4), "head.deconv_bnrelu.2.0.weight": (24,),
        "head.final_refined.0.conv.0.weight": (24, 1, 5, 5), "head.final_refined.0.conv.3.weight": (28, 24, 1, 1),
        "head.final_raw.0.conv.0.weight": (16, 1, 5, 5), "head.final_raw.1.conv.3.weight": (14, 16, 1, 1)}
    assert {k: tuple(state[k].shape) for k in expected if k in state} == expected
    assert sum(k.endswith("depth_conv.0.weight") for k in state) == sum(XS.depths) == 34


def test_kernel_size_option_changes_exactly_the_depthwise_macs():
    """Each depthwise layer costs hidden x k^2 MACs per output pixel; nothing else depends on k."""
    size = (256, 256)
    macs = {k: count_macs(meta_model("litepose-xs", kernel_sizes=(k,) * 4), size) for k in (3, 9)}
    sizes = [info.size for info in XS.feature_info(size)][1:]
    per_k2 = 0
    channels = XS.stem_channels
    for width, depth, expand, (w, h) in zip(XS.widths, XS.depths, XS.expand_ratios, sizes):
        for b in range(depth):
            per_k2 += make_divisible(round((channels if b == 0 else width) * expand)) * w * h
        channels = width
    assert macs[9] - macs[3] == per_k2 * (81 - 9)
    model = meta_model("litepose-xs", kernel_sizes=(3, 5, 7, 9))
    assert [model.backbone.stage[s][0].depth_conv[0].kernel_size for s in range(4)] == [(3, 3), (5, 5), (7, 7), (9, 9)]


@pytest.mark.parametrize("name", list(PUBLISHED_GMACS))
def test_macs_match_the_published_figures(name):
    """Replaying the paper's counter (ptflops of 2022 for LitePose: transposed convolutions charged per output
    pixel, BN / ReLU counted; HRNet's summary for HigherHRNet) gives the published GMACs within 1% (they are
    rounded to 0.1 G, and counter versions differ in such details)."""
    model = meta_model(name)
    published, convention = PUBLISHED_GMACS[name]
    assert count_macs(model, model.input_size, convention=convention) / 1e9 == pytest.approx(published, rel=0.01)


def test_flop_counter_agrees_with_an_independent_counter():
    """torch's FLOP counter (by module) and the hook counter's ``exact`` rules give the same true MACs; the
    papers' conventions over-count them by a quarter and more (their deconvolutions cost 4x)."""
    model = meta_model("litepose-xs")
    parts = macs_by_module(model, (256, 256))
    assert set(parts) == {"backbone", "head"}
    true = sum(parts.values())
    assert true == count_macs(model, (256, 256), convention="exact")
    assert true < 0.8 * PUBLISHED_GMACS["litepose-xs"][0] * 1e9


def test_zoo_architectures_and_inputs():
    assert {n: model_config(f"litepose-{n}").input_size for n in LITEPOSE_ARCHS} == \
        {"xs": (256, 256), "s": (448, 448), "m": (448, 448), "l": (512, 512)}
    config = model_config("litepose-m")
    assert config.backbone.widths == (24, 48, 72, 120) and config.head.deconv_channels == (64, 40, 32)
    assert config.codec == {"name": "associative-embedding", "input_size": [448, 448], "hr_heatmaps": True}
    assert model_config("litepose-m", input_size=(320, 320)).codec["input_size"] == [320, 320]
    assert model_config("litepose-m", keypoint_set="coco17").keypoint_set == "coco17"
    assert round(count_parameters(meta_model("higherhrnet-w32")) / 1e6, 1) == 28.6  # HigherHRNet paper: 28.6M


def test_higherhrnet_reference_outputs(one_thread):
    model = build_model(model_config("higherhrnet-w32", width=8, input_size=(64, 96))).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 96, 64))
    assert [tuple(t.shape) for t in (out.heatmaps, out.tags, out.heatmaps_hr)] == \
        [(1, 17, 24, 16), (1, 17, 24, 16), (1, 17, 48, 32)]
    assert HRNetConfig(multi_scale_output=True).feature_info((64, 96))[-1].stride == 32


def test_save_and_load_round_trip(tmp_path, one_thread):
    model = build_model(model_config("litepose-xs", input_size=(64, 64))).eval()
    for m in model.modules():  # non-trivial statistics: buffers must survive too
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    model.save_pretrained(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert loaded.config == model.config and config_from_dict(model.config.to_dict()) == model.config
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a, b = model(x), loaded(x)
    assert all(torch.equal(a.tensors()[k], b.tensors()[k]) for k in ("heatmaps", "tags", "heatmaps_hr"))


def test_heatmaps_tags_keeps_its_two_field_form():
    h, t = torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4)
    plain = HeatmapsTags(h, t)
    assert plain.heatmaps_hr is None and set(plain.tensors()) == {"heatmaps", "tags"}
    leaves, spec = pytree.tree_flatten(plain)
    assert len(leaves) == 2 and pytree.tree_unflatten(leaves, spec).heatmaps_hr is None
    full = HeatmapsTags(h, t, torch.randn(1, 3, 8, 8))
    merged = merge_outputs(full, full.map(lambda x: -x), lambda a, b: a + b)
    assert torch.equal(merged.heatmaps_hr, torch.zeros(1, 3, 8, 8))
    assert merge_outputs(full, plain, lambda a, b: a).heatmaps_hr is None  # a field one side lacks is dropped
    assert len(pytree.tree_flatten(full)[0]) == 3


def test_bad_configs_are_one_line_errors():
    with pytest.raises(PoseforgeError, match="kernel_sizes"):
        MobileNetV2Config(kernel_sizes=(7, 7, 6, 7))
    with pytest.raises(PoseforgeError, match="depths: 3 entries for 4 stages"):
        MobileNetV2Config(depths=(1, 2, 3))
    with pytest.raises(PoseforgeError, match="at least two"):
        LitePoseHeadConfig(deconv_channels=(16,), deconv_kernel_sizes=(4,))
    with pytest.raises(PoseforgeError, match="divisible by 16"):
        meta_model("litepose-xs", input_size=(72, 64))
    with pytest.raises(PoseforgeError, match="convention"):
        count_macs(meta_model("litepose-xs"), (256, 256), convention="thop")


def test_untrained_outputs_start_near_zero():
    """The final layers start at normal(std=0.001), as HigherHRNet's: targets are mostly zero, so outputs of
    PyTorch's default init (~0.6 RMS) would spend the first steps shrinking."""
    torch.manual_seed(0)
    model = create_model("litepose-xs", input_size=(128, 128)).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 128, 128))
    for maps in (out.heatmaps, out.tags, out.heatmaps_hr):
        assert maps.pow(2).mean().sqrt() < 0.01
