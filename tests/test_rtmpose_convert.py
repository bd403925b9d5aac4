"""RTMPose / DWPose / RTMW interop: mmpose 1.x checkpoints convert to poseforge models with the same SimCC
outputs (the mmpose oracle: max |diff| <= 1e-4 x max |reference|), the architecture and settings inferred
from tensor shapes and the checkpoint's config text; EMA, distiller, preprocessor and ambiguous layouts;
the ``poseforge convert`` command; parameter counts equal to mmpose's."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch

from poseforge.cli import main as cli_main
from poseforge.convert import convert_checkpoint, read_checkpoint, rtmpose_family
from poseforge.convert.rtmpose import config_hints, infer_cspnext, rtmpose_from_state_dict
from poseforge.errors import PoseforgeError
from poseforge.keypoints import get_keypoint_set
from poseforge.models import create_model, load_model, model_config
from poseforge.models.backbones.cspnext import CSPNeXtConfig
from poseforge.models.config import config_from_dict
from poseforge.models.heads.rtmcc import RTMCC_HEAD
from poseforge.models.loading import build_model
from poseforge.models.zoo import RTMPOSE_BACKBONES, rtmpose_config, rtmw_config

from model_helpers import randomize

TOL = 1e-4
SHARED = Path(os.environ.get("POSEFORGE_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
SMALL = (96, 128)  # (w, h): a 3 x 4 stride-32 map, 192 x 256 bins - the only fit at a 0.5-step split ratio


# ----------------------------------------------------------------------------- parameter counts (mmpose's)
@pytest.mark.parametrize("name,count", [
    ("rtmpose-t", 3_337_007), ("rtmpose-s", 5_473_251), ("rtmpose-m", 13_587_611), ("rtmpose-l", 27_660_339),
    ("rtmpose-m-wholebody", 17_953_039), ("rtmpose-x-wholebody-384x288", 56_709_919),
    # RTMW: counted by the oracle from mmpose's cocktail14 configs.
    ("rtmw-m", 32_258_207), ("rtmw-l", 57_201_207), ("rtmw-x", 92_041_903),
    ("rtmw-l-384x288", 57_354_295), ("rtmw-x-384x288", 92_194_991)])
def test_parameter_counts(name, count):
    with torch.device("meta"):
        model = create_model(name)
    assert sum(p.numel() for p in model.parameters()) == count


def test_rtmw_config_round_trip():
    """The neck travels through config.json: a config with a neck rebuilds equal."""
    config = model_config("rtmw-l-384x288")
    assert config.neck is not None and config.neck.type == "cspnext_pafpn" and config.head.type == "rtmw"
    assert config_from_dict(config.to_dict()) == config
    assert config.backbone.out_indices == (2, 3, 4) and config.neck.out_indices == (1, 2)
    assert config.codec["sigma"] == [6.0, 6.93] and config.input_size == (288, 384)


# ----------------------------------------------------------------------------- synthetic mmpose checkpoints
def rtm(seed: int = 0, size: str = "t", input_size: tuple[int, int] = SMALL, keypoint_set: str = "coco17"):
    return randomize(build_model(rtmpose_config(size, keypoint_set, input_size)), seed)


def mm_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """An mmpose state dict of a poseforge RTMPose model: the module names are mmpose's."""
    return {k: v.clone() for k, v in model.state_dict().items()}


def outputs(model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        out = model(x)
    return out.simcc_x, out.simcc_y


def assert_same(a, b) -> None:
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v, rtol=0, atol=0)


@pytest.fixture(scope="module")
def x_small() -> torch.Tensor:
    return torch.randn(2, 3, SMALL[1], SMALL[0], generator=torch.Generator().manual_seed(1))


def test_plain_checkpoint(tmp_path, x_small, one_thread):
    model = rtm()
    torch.save({"state_dict": mm_state(model), "meta": {"epoch": 3}}, tmp_path / "rtm.pth")
    converted = convert_checkpoint(tmp_path / "rtm.pth")
    cfg = converted.config
    assert cfg.name == "rtmpose-t-128x96" and cfg.input_size == SMALL and cfg.keypoint_set == "coco17"
    assert cfg.backbone == RTMPOSE_BACKBONES["t"] and cfg.head == model.config.head and cfg.neck is None
    assert cfg.codec == model.config.codec and cfg.codec["split_ratio"] == 2.0
    assert_same(outputs(converted, x_small), outputs(model, x_small))
    assert rtmpose_family(mm_state(model)) == "rtmpose"
    assert rtmpose_family(["backbone.patch_embed.proj.weight", "head.final_layer.weight"]) is None


@pytest.mark.parametrize("size", list(RTMPOSE_BACKBONES))
def test_backbone_sizes_from_shapes(size):
    """Every zoo size is recognised from its tensor shapes alone (meta tensors: shapes only)."""
    with torch.device("meta"):
        state = build_model(rtmpose_config(size)).state_dict()
    assert infer_cspnext(state, 1, "ckpt") == RTMPOSE_BACKBONES[size]


def test_custom_backbone_factors(tmp_path, x_small, one_thread):
    """Factors outside the zoo are inferred too: max(round(n x d), 1) reproduces every stage's blocks."""
    backbone = CSPNeXtConfig(deepen_factor=0.5, widen_factor=0.25)
    assert [s[2] for s in backbone.stage_settings()] == [2, 3, 3, 2]
    model = randomize(build_model(rtmpose_config("t", input_size=SMALL).replace(backbone=backbone)), 3)
    torch.save({"state_dict": mm_state(model)}, tmp_path / "custom.pth")
    converted = convert_checkpoint(tmp_path / "custom.pth")
    got = converted.config.backbone
    assert got.widen_factor == 0.25 and [s[2] for s in got.stage_settings()] == [2, 3, 3, 2]
    assert converted.config.name == "rtmpose-custom-128x96"
    assert_same(outputs(converted, x_small), outputs(model, x_small))


def test_custom_head_dims(tmp_path, x_small, one_thread):
    """Head kernel, token width, GAU width and expansion come from the head tensors; not the zoo's: a custom name."""
    head = RTMCC_HEAD.replace(final_kernel_size=5, hidden_dim=128, attention_dim=64, expansion=1.5)
    model = randomize(build_model(rtmpose_config("t", input_size=SMALL).replace(head=head)), 5)
    torch.save({"state_dict": mm_state(model)}, tmp_path / "head.pth")
    converted = convert_checkpoint(tmp_path / "head.pth")
    assert converted.config.head == head and converted.config.name == "rtmpose-custom-128x96"
    assert_same(outputs(converted, x_small), outputs(model, x_small))


def test_ema_weights(tmp_path, x_small, one_thread):
    """mmengine EMA checkpoints: state_dict by default, ema_state_dict ('module.' keys + 'steps') with raw_weights=True."""
    main, raw = rtm(0), rtm(1)
    ema = {f"module.{k}": v for k, v in mm_state(raw).items()} | {"steps": torch.tensor(120)}
    torch.save({"state_dict": mm_state(main), "ema_state_dict": ema, "meta": {}}, tmp_path / "ema.pth")
    ckpt = read_checkpoint(tmp_path / "ema.pth")
    assert ckpt.ema_state_dict is not None and "steps" not in ckpt.ema_state_dict
    assert_same(outputs(convert_checkpoint(tmp_path / "ema.pth"), x_small), outputs(main, x_small))
    assert_same(outputs(convert_checkpoint(tmp_path / "ema.pth", raw_weights=True), x_small), outputs(raw, x_small))
    torch.save({"state_dict": mm_state(main)}, tmp_path / "plain.pth")
    with pytest.raises(PoseforgeError, match=r"plain\.pth: no ema_state_dict"):
        convert_checkpoint(tmp_path / "plain.pth", raw_weights=True)


def test_dwpose_distiller(tmp_path, x_small, one_thread):
    """First stage: the student (teacher and distill losses dropped); second stage (two_dis): the teacher's
    backbone with the student's head; same-shaped teacher and student without a config are ambiguous."""
    student, big_teacher = rtm(0, "t"), rtm(1, "s")
    distill = {"distill_losses.loss_fea.align.weight": torch.randn(384, 512, 1, 1)}
    state = ({f"student.{k}": v for k, v in mm_state(student).items()}
             | {f"teacher.{k}": v for k, v in mm_state(big_teacher).items()} | distill)
    torch.save({"state_dict": state}, tmp_path / "s1.pth")
    converted = convert_checkpoint(tmp_path / "s1.pth")
    assert converted.config.name == "dwpose-t-128x96"
    assert_same(outputs(converted, x_small), outputs(student, x_small))

    teacher = rtm(2, "t")
    state = ({f"student.{k}": v for k, v in mm_state(student).items()}
             | {f"teacher.{k}": v for k, v in mm_state(teacher).items()})
    torch.save({"state_dict": state}, tmp_path / "s2.pth")
    with pytest.raises(PoseforgeError, match=r"s2\.pth: .*same architecture.*distill_stage=1"):
        convert_checkpoint(tmp_path / "s2.pth")
    expected = mm_state(teacher) | {k: v for k, v in mm_state(student).items() if k.startswith("head.")}
    reference = rtm(9)
    reference.load_state_dict(expected)
    second = convert_checkpoint(tmp_path / "s2.pth", distill_stage=2)
    assert_same(outputs(second, x_small), outputs(reference, x_small))
    assert_same(outputs(convert_checkpoint(tmp_path / "s2.pth", distill_stage=1), x_small), outputs(student, x_small))
    # The config text decides when present (mmengine saves it in meta["cfg"]).
    torch.save({"state_dict": state, "meta": {"cfg": "model = dict(type='DWPoseDistiller', two_dis=True)"}},
               tmp_path / "s2cfg.pth")
    assert_same(outputs(convert_checkpoint(tmp_path / "s2cfg.pth"), x_small), outputs(reference, x_small))


def test_preprocessor_and_bn_counters(tmp_path, x_small, one_thread):
    """data_preprocessor mean / std become the model's normalization; stripped BatchNorm counters come back."""
    model = rtm()
    state = {k: v for k, v in mm_state(model).items() if not k.endswith("num_batches_tracked")}
    mean, std = (120.0, 110.0, 100.0), (50.0, 55.0, 60.0)
    state["data_preprocessor.mean"] = torch.tensor(mean).view(3, 1, 1)
    state["data_preprocessor.std"] = torch.tensor(std).view(3, 1, 1)
    torch.save({"state_dict": state}, tmp_path / "pre.pth")
    converted = convert_checkpoint(tmp_path / "pre.pth")
    assert converted.config.mean == mean and converted.config.std == std
    assert converted.state_dict()["backbone.stem.0.bn.num_batches_tracked"].item() == 0
    assert_same(outputs(converted, x_small), outputs(model, x_small))
    del state["data_preprocessor.std"]
    with pytest.raises(PoseforgeError, match="data_preprocessor.mean / std must both"):
        rtmpose_from_state_dict(state, source="pre.pth")


PRETTY_CFG = """codec = dict(
    input_size=(
        96,
        128,
    ),
    normalize=False,
    sigma=(
        3.5,
        4.25,
    ),
    simcc_split_ratio=2.0,
    type='SimCCLabel',
    use_dark=False)
model = dict(
    head=dict(
        decoder=dict(
            input_size=(
                96,
                128,
            ),
            sigma=(
                3.5,
                4.25,
            ),
            simcc_split_ratio=2.0,
            type='SimCCLabel'),
        in_featuremap_size=(
            3,
            4,
        ),
        input_size=(
            96,
            128,
        ),
        type='RTMCCHead'),
    type='TopdownPoseEstimator')
"""


def test_config_hints():
    hints = config_hints({"cfg": PRETTY_CFG, "dataset_meta": {"keypoint_id2name": {1: "b", 0: "a"}}})
    assert hints == {"input_size": (96, 128), "split_ratio": 2.0, "sigma": (3.5, 4.25), "keypoint_names": ["a", "b"]}
    raw = "input_size = (192, 256)\ncodec = dict(type='SimCCLabel', input_size=input_size, sigma=(4.9, 5.66),\n" \
          "    simcc_split_ratio=2.0)\nmodel = dict(type='DWPoseDistiller', two_dis=False)\n"
    assert config_hints({"cfg": raw}) == {"input_size": (192, 256), "split_ratio": 2.0, "sigma": (4.9, 5.66),
                                          "two_dis": False, "dwpose": True}
    # Occurrences that disagree say nothing.
    assert "input_size" not in config_hints({"cfg": "input_size=(192, 256)\ninput_size=(288, 384)"})
    assert config_hints(None) == {} and config_hints({"cfg": 3}) == {}


def test_settings_from_meta_and_options(tmp_path, x_small, one_thread):
    model = rtm(keypoint_set="coco17")
    names = dict(enumerate(get_keypoint_set("coco17").names))
    meta = {"cfg": PRETTY_CFG, "dataset_meta": {"keypoint_id2name": names}}
    torch.save({"state_dict": mm_state(model), "meta": meta}, tmp_path / "meta.pth")
    converted = convert_checkpoint(tmp_path / "meta.pth")
    assert converted.config.codec["sigma"] == [3.5, 4.25] and converted.config.keypoint_set == "coco17"
    assert convert_checkpoint(tmp_path / "meta.pth", sigma=3.0).config.codec["sigma"] == [3.0, 3.0]
    # The count alone is ambiguous for 17 keypoints only between coco17 and ap10k17: an explicit set wins.
    assert convert_checkpoint(tmp_path / "meta.pth", keypoint_set="ap10k17").config.keypoint_set == "ap10k17"
    # A config text that contradicts the tensors is an error naming the file and what to pass.
    torch.save({"state_dict": mm_state(model), "meta": {"cfg": "input_size=(192, 256)\nsimcc_split_ratio=2.0"}},
               tmp_path / "wrong.pth")
    with pytest.raises(PoseforgeError, match=r"wrong\.pth: head.cls_x / cls_y have 192 x 256 bins but input 192x256"):
        convert_checkpoint(tmp_path / "wrong.pth")
    assert convert_checkpoint(tmp_path / "wrong.pth", input_size=SMALL).config.input_size == SMALL
    with pytest.raises(PoseforgeError, match="do not apply to an RTMPose"):
        convert_checkpoint(tmp_path / "meta.pth", num_heads=8)


def test_ambiguous_geometry(tmp_path, one_thread):
    """A 32x32 input at split ratio 2 has 64 x 64 bins and one stride-32 cell: 16x16 at 4 and 8x8 at 8 fit
    as well, so the converter asks; either option settles it."""
    model = rtm(input_size=(32, 32))
    torch.save({"state_dict": mm_state(model)}, tmp_path / "tiny.pth")
    with pytest.raises(PoseforgeError, match=r"tiny\.pth: cannot tell the input size .*32x32 at 2; 16x16 at 4.*"
                                             r"pass input_size=\(w, h\) or split_ratio"):
        convert_checkpoint(tmp_path / "tiny.pth")
    assert convert_checkpoint(tmp_path / "tiny.pth", input_size=(32, 32)).config.codec["split_ratio"] == 2.0
    other = convert_checkpoint(tmp_path / "tiny.pth", split_ratio=4)
    assert other.config.input_size == (16, 16) and other.config.codec["split_ratio"] == 4.0
    with pytest.raises(PoseforgeError, match=r"tiny\.pth: 64 x 64 bins at split_ratio 3 \(given\) give no whole"):
        convert_checkpoint(tmp_path / "tiny.pth", split_ratio=3)


def test_unknown_keys_are_listed(tmp_path):
    state = mm_state(rtm())
    state["head.extra.weight"] = torch.zeros(2)
    with pytest.raises(PoseforgeError, match=r"1 unexpected key\(s\): head.extra.weight"):
        rtmpose_from_state_dict(state, source="x.pth")
    with pytest.raises(PoseforgeError, match="not an RTMPose / DWPose / RTMW checkpoint"):
        rtmpose_from_state_dict({"backbone.blocks.0.attn.qkv.weight": torch.zeros(3, 1)}, source="x.pth")


def test_rtmw_synthetic(tmp_path, one_thread):
    """A small RTMW (CSPNeXt-t, PAFPN neck, RTMW head, 64x64): converted from its state dict, saved and loaded."""
    model = randomize(build_model(rtmw_config("t", (64, 64), "coco17")), 4)
    torch.save({"state_dict": mm_state(model)}, tmp_path / "rtmw.pth")
    assert rtmpose_family(mm_state(model)) == "rtmw"
    converted = convert_checkpoint(tmp_path / "rtmw.pth")
    assert converted.config == model.config and converted.config.name == "rtmw-t-coco17-64x64"
    x = torch.randn(2, 3, 64, 64)
    assert_same(outputs(converted, x), outputs(model, x))
    converted.save_pretrained(tmp_path / "out")
    assert_same(outputs(load_model(tmp_path / "out"), x), outputs(model, x))


# ----------------------------------------------------------------------------- CLI
def test_convert_command(tmp_path, capsys, x_small, one_thread):
    model = rtm()
    torch.save({"state_dict": mm_state(model)}, tmp_path / "rtm.pth")
    assert cli_main(["convert", str(tmp_path / "rtm.pth"), str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert (f"rtmpose-t-128x96: CSPNeXt-P5 (deepen 0.167, widen 0.375), rtmcc head, "
            f"{model.num_parameters() / 1e6:.1f}M parameters, input 96x128") in printed
    assert "coco17 (17 keypoints), codec simcc (split ratio 2)" in printed
    assert_same(outputs(load_model(tmp_path / "out"), x_small), outputs(model, x_small))
    assert cli_main(["convert", str(tmp_path / "rtm.pth"), str(tmp_path / "out")]) == 2
    assert "already holds a model" in capsys.readouterr().err
    assert cli_main(["convert", str(tmp_path / "rtm.pth"), str(tmp_path / "out"), "--force", "--raw-weights"]) == 2
    assert "no ema_state_dict" in capsys.readouterr().err
    assert cli_main(["convert", str(tmp_path / "rtm.pth"), str(tmp_path / "out"), "--force",
                     "--input-size", "96x128", "--split-ratio", "2", "--sigma", "4"]) == 0
    assert load_model(tmp_path / "out").config.codec["sigma"] == [4.0, 4.0]


# ----------------------------------------------------------------------------- mmpose 1.x oracle
ORACLE_DRIVER = r'''
"""Build mmpose-1.x RTMPose / RTMW models with informative random weights; save checkpoint, input, outputs."""
import os, sys
sys.path.insert(0, sys.argv[1])
import mm_oracle_shim  # noqa: F401  (must precede mmpose)
import torch, mmpose
torch.set_num_threads(1)
from mmengine.config import Config
from mmpose.registry import MODELS
from mmpose.utils import register_all_modules
from mmpose.datasets.datasets.utils import parse_pose_metainfo
register_all_modules()
root = os.path.join(os.path.dirname(mmpose.__file__), ".mim", "configs")
for spec in sys.argv[3:]:
    rel, text = spec.split(":")
    cfg = Config.fromfile(os.path.join(root, rel))
    cfg.model.backbone.init_cfg = None
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).eval()
    with torch.no_grad():  # PyTorch default init plus noise: every layer matters
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
        for n, b in model.named_buffers():
            if n.endswith("running_mean"): b.copy_(torch.randn_like(b) * 0.1)
            if n.endswith("running_var"): b.copy_(torch.rand_like(b) + 0.5)
        w, h = cfg.codec["input_size"]
        x = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(1))
        feats = model.backbone(x)
        if getattr(model, "neck", None) is not None:
            feats = model.neck(feats)
        y = model(x, None, mode="tensor")
    meta = {"config": rel}
    if text != "none":  # mmengine's runner saves cfg.pretty_text (slow for big configs: cfg.text carries the same)
        meta["cfg"] = cfg.pretty_text if text == "pretty" else cfg.text
        meta["dataset_meta"] = parse_pose_metainfo(dict(from_file="configs/_base_/datasets/coco_wholebody.py"))
    out = os.path.join(sys.argv[2], os.path.basename(rel)[:-3])
    os.makedirs(out, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "meta": meta}, f"{out}/checkpoint.pth")
    torch.save(x, f"{out}/input.pt")
    torch.save({"outputs": list(y), "features": list(feats)}, f"{out}/reference.pt")
'''
ORACLE_CONFIGS = {  # config -> how its config text is saved in meta
    "body_2d_keypoint/rtmpose/coco/rtmpose-t_8xb256-420e_coco-256x192.py": "none",
    "wholebody_2d_keypoint/rtmpose/coco-wholebody/rtmpose-m_8xb64-270e_coco-wholebody-256x192.py": "pretty",
    "wholebody_2d_keypoint/rtmpose/cocktail14/rtmw-m_8xb1024-270e_cocktail14-256x192.py": "text",
}


@pytest.fixture(scope="session")
def oracle_outputs(oracle_python, tmp_path_factory) -> Path:
    """One oracle process builds all three models (its imports cost most of the time)."""
    out = tmp_path_factory.mktemp("mm_rtm_oracle")
    (out / "driver.py").write_text(ORACLE_DRIVER)
    proc = subprocess.run([str(oracle_python), str(out / "driver.py"), str(SHARED / "oracle"), str(out),
                           *(f"{rel}:{text}" for rel, text in ORACLE_CONFIGS.items())],
                          capture_output=True, text=True, timeout=600, check=False,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def assert_close_to(got: torch.Tensor, ref: torch.Tensor) -> float:
    assert got.shape == ref.shape
    diff = (got - ref).abs().max().item()
    assert diff <= TOL * ref.abs().max().item(), (diff, ref.abs().max().item())
    # The distributions the KL loss and the decoder read, absolutely.
    assert (got.softmax(-1) - ref.softmax(-1)).abs().max().item() < TOL
    return diff


@pytest.mark.parametrize("config,name,keypoint_set,bins", [
    ("rtmpose-t_8xb256-420e_coco-256x192", "rtmpose-t", "coco17", (384, 512)),
    ("rtmpose-m_8xb64-270e_coco-wholebody-256x192", "rtmpose-m-wholebody", "wholebody133", (384, 512)),
    ("rtmw-m_8xb1024-270e_cocktail14-256x192", "rtmw-m", "wholebody133", (384, 512))])
def test_mmpose_oracle(oracle_outputs, config, name, keypoint_set, bins, one_thread):
    folder = oracle_outputs / config
    text = next(t for rel, t in ORACLE_CONFIGS.items() if rel.endswith(f"/{config}.py"))
    hints = config_hints(read_checkpoint(folder / "checkpoint.pth").meta)
    if text != "none":  # the settings were read from the config text (pretty or plain) and the dataset's names
        assert hints["input_size"] == (192, 256) and hints["split_ratio"] == 2.0 and hints["sigma"] == (4.9, 5.66)
        assert len(hints["keypoint_names"]) == 133
    else:  # ... or inferred from the tensor shapes alone
        assert hints == {}
    model = convert_checkpoint(folder / "checkpoint.pth")
    cfg = model.config
    assert cfg.name == name and cfg.keypoint_set == keypoint_set and cfg.input_size == (192, 256)
    assert cfg.codec["split_ratio"] == 2.0 and cfg.codec["sigma"] == [4.9, 5.66]
    assert cfg == model_config(name)  # the zoo's architecture and settings, exactly
    x = torch.load(folder / "input.pt", weights_only=True)
    reference = torch.load(folder / "reference.pt", weights_only=True)
    with torch.no_grad():
        features = model.backbone(x)
        features = model.neck(features) if model.neck is not None else features
        out = model.head(features)
    for got, ref in zip(features, reference["features"]):
        assert_close_to(got, ref)
    assert (out.simcc_x.shape[-1], out.simcc_y.shape[-1]) == bins
    for got, ref in zip((out.simcc_x, out.simcc_y), reference["outputs"]):
        assert_close_to(got, ref)
    # The comparison is sensitive: a 1% change in one BatchNorm (in the neck for RTMW) shows far above it.
    layer = model.neck.bottom_up_blocks[0] if model.neck is not None else model.backbone.stage3[1]
    with torch.no_grad():
        layer.final_conv.bn.weight.mul_(1.01)
        changed = model(x).simcc_x
    ref_x = reference["outputs"][0]
    assert (changed - ref_x).abs().max().item() > 10 * TOL * ref_x.abs().max().item()
