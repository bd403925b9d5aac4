"""Sapiens interop: official checkpoints (pose, segmentation, depth, normals, MAE pretraining) convert to poseforge
models with the reference outputs (the mmpretrain / mmpose oracle: max |diff| <= 1e-4 x max |reference|), round
trips of the tiny zoo models through the official key layout, auto-detection beside mmpose ViTPose, the
``poseforge convert`` command and one-line errors for mutated state dicts."""
from __future__ import annotations

import os
import random
import re
import subprocess
from pathlib import Path

import pytest
import torch

from poseforge.cli import main as cli_main
from poseforge.convert import convert_checkpoint, is_sapiens_checkpoint
from poseforge.convert.sapiens import sapiens_from_state_dict
from poseforge.errors import PoseforgeError
from poseforge.keypoints import list_keypoint_sets
from poseforge.models import create_model, load_model, model_config
from poseforge.models.backbones.vit import VisionTransformer

from model_helpers import mutate_state_dict, randomize

TOL = 1e-4
SHARED = Path(os.environ.get("POSEFORGE_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
X = torch.randn(2, 3, 256, 192, generator=torch.Generator().manual_seed(1))

_TO_OFFICIAL = [(re.compile(p), r) for p, r in [
    (r"^backbone\.patch_embed\.proj\.", "backbone.patch_embed.projection."),
    (r"^backbone\.blocks\.(\d+)\.norm1\.", r"backbone.layers.\1.ln1."),
    (r"^backbone\.blocks\.(\d+)\.norm2\.", r"backbone.layers.\1.ln2."),
    (r"^backbone\.blocks\.(\d+)\.attn\.", r"backbone.layers.\1.attn."),
    (r"^backbone\.blocks\.(\d+)\.mlp\.fc1\.", r"backbone.layers.\1.ffn.layers.0.0."),
    (r"^backbone\.blocks\.(\d+)\.mlp\.fc2\.", r"backbone.layers.\1.ffn.layers.1."),
    (r"^backbone\.norm\.", "backbone.ln1."),
]]


def official_names(state: dict[str, torch.Tensor], dense: bool = False) -> dict[str, torch.Tensor]:
    """poseforge Sapiens tensors under the official names (mmpretrain backbone; mmpose ``head.*`` for pose, mmseg
    ``decode_head.*`` with ``conv_seg`` for the dense tasks)."""
    out = {}
    for key, value in state.items():
        for pattern, replacement in _TO_OFFICIAL:
            key = pattern.sub(replacement, key)
        if dense:
            key = re.sub(r"^head\.(seg|depth|normal)_layer\.", "decode_head.conv_seg.", key)
            key = re.sub(r"^head\.", "decode_head.", key)
        out[key] = value.clone()
    return out


def to_official(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return official_names(model.state_dict(), model.config.type == "dense")


def pretrain_state(backbone: VisionTransformer, grid: int = 16, seed: int = 0) -> dict[str, torch.Tensor]:
    """An uncleaned MAE checkpoint of ``backbone``'s weights: a class token, ``1 + grid^2`` positions (square
    pretraining) and MAE decoder keys."""
    g = torch.Generator().manual_seed(seed)
    c = backbone.config.embed_dim
    state = official_names({f"backbone.{k}": v for k, v in backbone.state_dict().items()})
    state["backbone.pos_embed"] = torch.randn(1, 1 + grid * grid, c, generator=g) * 0.1
    state["backbone.cls_token"] = torch.randn(1, 1, c, generator=g)
    state.update({"neck.mask_token": torch.zeros(1, 1, 32), "neck.decoder_pos_embed": torch.zeros(1, 1 + grid * grid, 32),
                  "neck.decoder_embed.weight": torch.zeros(32, c), "neck.decoder_embed.bias": torch.zeros(32),
                  "neck.decoder_blocks.0.attn.qkv.weight": torch.zeros(96, 32), "neck.ln1.weight": torch.ones(32),
                  "neck.decoder_pred.weight": torch.zeros(768, 32)})
    return state


def outputs(model, x: torch.Tensor = X) -> list[torch.Tensor]:
    with torch.no_grad():
        out = model(x)
    return [getattr(out, f) for f in ("heatmaps", "seg", "depth", "normals") if getattr(out, f, None) is not None]


# ----------------------------------------------------------------------------- round trips (always run)
@pytest.mark.parametrize("name", ["sapiens-tiny-pose-coco", "sapiens-tiny-pose-wholebody", "sapiens-tiny-seg",
                                  "sapiens-tiny-depth", "sapiens-tiny-normal"])
def test_round_trip_through_the_official_layout(tmp_path, name, one_thread):
    model = randomize(create_model(name), 3)
    state = to_official(model)
    assert is_sapiens_checkpoint(state)
    torch.save({"state_dict": state, "meta": {"epoch": 210}}, tmp_path / "official.pth")
    converted = convert_checkpoint(tmp_path / "official.pth")
    assert converted.config == model_config(name)  # the zoo's architecture, name and settings, exactly
    for got, ref in zip(outputs(converted), outputs(model), strict=True):
        torch.testing.assert_close(got, ref, rtol=0, atol=0)


@pytest.mark.parametrize("size", ["0.3b", "0.6b", "1b", "2b"])
def test_released_checkpoints_get_the_zoo_configs(size, monkeypatch):
    """Shapes only (meta tensors, nothing this size is materialized): every released layout is recognised as its
    zoo model, settings included (1024x768, padding by task, UDP sigma 6, the 28 part classes)."""
    import poseforge.convert.sapiens as sapiens

    monkeypatch.setattr(sapiens, "_build", lambda config, state, pretrain, source: config)
    for task in ("pose-coco", "pose-wholebody", "seg", "depth", "normal"):
        with torch.device("meta"):
            model = create_model(f"sapiens-{size}-{task}")
        assert sapiens_from_state_dict(to_official(model), source="release.pth") == model.config


def test_patch_padding_task_and_safetensors(tmp_path, one_thread):
    from safetensors.torch import save_file

    model = randomize(create_model("sapiens-tiny-normal"), 4)
    save_file(to_official(model), tmp_path / "normal.safetensors")
    assert convert_checkpoint(tmp_path / "normal.safetensors").config.backbone.patch_padding == 2
    padded = convert_checkpoint(tmp_path / "normal.safetensors", patch_padding=0)
    assert padded.config.backbone.patch_padding == 0 and padded.config.name == "sapiens-custom-normal"
    # a 3-class segmentation is told from normals by task=seg
    seg = convert_checkpoint(tmp_path / "normal.safetensors", task="seg")
    assert seg.config.codec["num_classes"] == 3 and seg.config.backbone.patch_padding == 0
    with pytest.raises(PoseforgeError, match=r"normal\.safetensors: task 'depth' asked for, but the checkpoint's "
                                             r"head is a normal head"):
        convert_checkpoint(tmp_path / "normal.safetensors", task="depth")
    with pytest.raises(PoseforgeError, match="do not apply to a Sapiens checkpoint"):
        convert_checkpoint(tmp_path / "normal.safetensors", split_ratio=2.0)


def test_sapiens308_by_keypoint_count(tmp_path):
    """308 keypoints pick ``sapiens308`` once that set exists; until then a clear error names the count."""
    state = to_official(randomize(create_model("sapiens-tiny-pose-coco"), 5))
    channels = state["head.final_layer.weight"].shape[1]
    state["head.final_layer.weight"], state["head.final_layer.bias"] = torch.randn(308, channels, 1, 1), torch.zeros(308)
    if "sapiens308" in list_keypoint_sets():
        converted = sapiens_from_state_dict(state, source="goliath.pth")
        assert converted.config.name == "sapiens-tiny-pose" and converted.config.keypoint_set == "sapiens308"
    else:
        with pytest.raises(PoseforgeError, match="goliath.pth: no known keypoint set has 308 keypoints"):
            sapiens_from_state_dict(state, source="goliath.pth")


def test_pretraining_checkpoints(tmp_path, one_thread):
    """MAE checkpoints: the class position dropped (as Sapiens loads them, not folded), the square grid resized
    bicubically to the model's, the MAE decoder ignored, a fresh (seeded) head for the task given."""
    backbone = randomize(VisionTransformer(model_config("sapiens-tiny-pose-coco").backbone, input_size=(256, 256)), 6)
    raw = pretrain_state(backbone)
    clean = {k[len("backbone."):]: v for k, v in raw.items() if k.startswith("backbone.")}  # pretrain_clean_checkpoints.py
    assert is_sapiens_checkpoint(raw) and is_sapiens_checkpoint(clean)
    torch.save({"state_dict": raw, "meta": {}}, tmp_path / "sapiens_tiny_epoch_1600.pth")
    torch.save(clean, tmp_path / "sapiens_tiny_epoch_1600_clean.pth")
    with pytest.raises(PoseforgeError, match=r"_clean\.pth: a Sapiens pretraining \(backbone-only\) checkpoint has no "
                                             "task head; pass task"):
        convert_checkpoint(tmp_path / "sapiens_tiny_epoch_1600_clean.pth")
    # the reference: the 16x16 grid without the class position, resized at run time by the backbone itself
    with torch.no_grad():
        backbone.pos_embed.copy_(raw["backbone.pos_embed"][:, 1:])
        reference = backbone(X)[-1]
    for path in ("sapiens_tiny_epoch_1600.pth", "sapiens_tiny_epoch_1600_clean.pth"):
        model = convert_checkpoint(tmp_path / path, task="pose-coco")
        assert model.config == model_config("sapiens-tiny-pose-coco")
        with torch.no_grad():
            torch.testing.assert_close(model.backbone(X)[-1], reference, rtol=1e-5, atol=1e-5)
    again = convert_checkpoint(tmp_path / "sapiens_tiny_epoch_1600.pth", task="pose-coco")
    torch.testing.assert_close(outputs(again), outputs(model), rtol=0, atol=0)  # the fresh head is seeded
    seg = convert_checkpoint(tmp_path / "sapiens_tiny_epoch_1600_clean.pth", task="seg")
    assert seg.config == model_config("sapiens-tiny-seg")  # padding 0: a 16x12 grid too
    with pytest.raises(PoseforgeError, match=r"unknown key\(s\) for the sapiens format: neck\.projector\.weight"):
        sapiens_from_state_dict({**raw, "neck.projector.weight": torch.zeros(2, 2)}, task="seg", source="mae.pth")


def test_vitpose_mmpose_checkpoints_are_not_sapiens():
    """A ViTPose head has no conv_layers: mmpose ViTPose checkpoints keep converting as ViTPose."""
    vitpose = to_official(create_model("vitpose-tiny"))
    assert not is_sapiens_checkpoint(vitpose)
    assert is_sapiens_checkpoint(to_official(create_model("sapiens-tiny-pose-coco")))


# ----------------------------------------------------------------------------- the convert command
@pytest.mark.parametrize("name", ["sapiens-tiny-pose-coco", "sapiens-tiny-seg"])
def test_convert_command_and_predict(tmp_path, capsys, name, one_thread):
    model = randomize(create_model(name), 7)
    torch.save({"state_dict": to_official(model), "meta": {}}, tmp_path / "official.pth")
    assert cli_main(["convert", str(tmp_path / "official.pth"), str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert f"{name}: 192-wide x 6 blocks, 3 heads" in printed
    loaded = load_model(tmp_path / "out")
    assert loaded.config == model.config
    for got, ref in zip(outputs(loaded), outputs(model), strict=True):
        torch.testing.assert_close(got, ref, rtol=0, atol=0)
    image = torch.randint(0, 256, (1, 3, 256, 192), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    pred = loaded.predict(image)
    if loaded.kind == "dense":
        assert pred.dense.seg.shape[-2:] == (256, 192)
    else:
        assert pred.keypoints.shape == (1, 1, 17, 2)


def test_torchscript_releases_are_refused_in_one_line(tmp_path):
    scripted = torch.jit.script(torch.nn.Linear(2, 2))
    scripted.save(str(tmp_path / "sapiens_0.3b_goliath_best_goliath_mIoU_7994_epoch_151_torchscript.pt2"))
    with pytest.raises(PoseforgeError, match=r"torchscript\.pt2: a TorchScript archive") as info:
        convert_checkpoint(tmp_path / "sapiens_0.3b_goliath_best_goliath_mIoU_7994_epoch_151_torchscript.pt2")
    assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------- mutations
def test_mutated_state_dicts_give_one_line_errors_only(tmp_path):
    """Dropped, reshaped, emptied, renamed, transposed and integer tensors of pose and dense checkpoints: a model
    or a PoseforgeError of one line naming the file, never another exception."""
    small = dict(embed_dim=32, depth=2, num_heads=2)
    bases = [to_official(create_model(n, input_size=(64, 64), **small)) for n in ("sapiens-tiny-pose-coco", "sapiens-tiny-seg")]
    rng, models, errors = random.Random(0), 0, 0
    for i in range(150):
        state = mutate_state_dict(
            bases[i % 2], rng, ("drop", "shape", "empty", "rename", "dtype", "transpose", "extra"),
            rename=lambda key: re.sub(r"\.(\d+)\.", lambda m: f".{int(m.group(1)) + rng.choice([1, 2, 7])}.", key, count=1),
            extra_keys=("decode_head.conv_seg.weight", "head.conv_layers.9.weight", "neck.x.weight", "backbone.cls_token"))
        path = tmp_path / f"mutant{i}.pth"
        torch.save(state, path)
        try:
            convert_checkpoint(path, num_heads=2)
            models += 1
        except PoseforgeError as e:
            assert "\n" not in str(e) and str(path) in str(e), str(e)
            errors += 1
        path.unlink()
    print(f"mutations: {models} models, {errors} one-line errors")
    assert errors > 100


# ----------------------------------------------------------------------------- the reference implementation
ORACLE_DRIVER = r'''
"""Sapiens' official module graph at a small width: mmpretrain's VisionTransformer (as the Sapiens configs build
it), mmpose's HeatmapHead, the mmseg fork's VitHead layout from mmcv / torch layers (the fork is not installed),
MAE pretraining (MAEViT + MAEPretrainDecoder); random weights; checkpoints, input, reference outputs."""
import sys
sys.path.insert(0, sys.argv[1])
import mm_oracle_shim  # noqa: F401  (must precede the mm packages)
import torch
from torch import nn
from mmcv.cnn import build_conv_layer, build_upsample_layer
from mmpretrain.models import VisionTransformer
from mmpretrain.models.necks import MAEPretrainDecoder
from mmpretrain.models.selfsup import MAEViT
from mmpose.models.heads import HeatmapHead
torch.set_num_threads(1)
out = sys.argv[2]
ARCH = dict(embed_dims=96, num_layers=2, num_heads=3, feedforward_channels=384)
H, W = 128, 96


def backbone(padding):  # the Sapiens configs: patch_cfg=dict(padding=2) for pose / normals, mmcv's default otherwise
    extra = dict(patch_cfg=dict(padding=2)) if padding else {}
    return VisionTransformer(arch=ARCH, img_size=(H, W), patch_size=16, qkv_bias=True, final_norm=True,
                             drop_path_rate=0.0, with_cls_token=False, out_type='featmap', **extra)


class VitHead(nn.Module):  # the fork's VitHead / VitDepthHead / VitNormalHead (BaseDecodeHead's conv_seg), eval
    def __init__(self, in_channels, deconv, conv, classes):
        super().__init__()
        layers = []
        for c in deconv:
            layers += [build_upsample_layer(dict(type='deconv', in_channels=in_channels, out_channels=c, kernel_size=4,
                                                 stride=2, padding=1, output_padding=0, bias=False)),
                       nn.InstanceNorm2d(c), nn.SiLU(inplace=True)]
            in_channels = c
        self.deconv_layers = nn.Sequential(*layers)
        layers = []
        for c in conv:
            layers += [build_conv_layer(dict(type='Conv2d', in_channels=in_channels, out_channels=c, kernel_size=1,
                                             stride=1, padding=0)), nn.InstanceNorm2d(c), nn.SiLU(inplace=True)]
            in_channels = c
        self.conv_layers = nn.Sequential(*layers)
        self.dropout = nn.Dropout2d(0.1)
        self.conv_seg = nn.Conv2d(in_channels, classes, kernel_size=1)

    def forward(self, inputs):
        return self.conv_seg(self.dropout(self.conv_layers(self.deconv_layers(inputs[-1]))))


def noisy(*modules):
    torch.manual_seed(0)
    with torch.no_grad():
        for m in modules:
            for p in m.parameters():
                p.add_(torch.randn_like(p) * 0.02)
            for n, b in m.named_buffers():
                if n.endswith("running_mean"): b.copy_(torch.randn_like(b) * 0.1)
                if n.endswith("running_var"): b.copy_(torch.rand_like(b) + 0.5)
            m.eval()


x = torch.randn(2, 3, H, W, generator=torch.Generator().manual_seed(1))
cases = {
    "pose": (2, "head", HeatmapHead(in_channels=96, out_channels=17, deconv_out_channels=(32, 32),
                                    deconv_kernel_sizes=(4, 4), conv_out_channels=(32, 32), conv_kernel_sizes=(1, 1))),
    "seg": (0, "decode_head", VitHead(96, (32, 32, 32), (32, 32, 32), 28)),
    "depth": (0, "decode_head", VitHead(96, (16, 16, 16, 16), (16, 16), 1)),
    "normal": (2, "decode_head", VitHead(96, (32, 32, 32), (32, 32, 32), 3)),
}
for name, (padding, prefix, head) in cases.items():
    vit = backbone(padding)
    noisy(vit, head)
    with torch.no_grad():
        feats = vit(x)
        y = head(feats)
    state = {**{f"backbone.{k}": v for k, v in vit.state_dict().items()},
             **{f"{prefix}.{k}": v for k, v in head.state_dict().items()}}
    torch.save({"state_dict": state, "meta": {"epoch": 1}}, f"{out}/{name}.pth")
    torch.save({"features": feats[-1], "output": y}, f"{out}/{name}_reference.pt")

# MAE pretraining at 128x128 (an 8x8 grid + class token), loaded as the fine-tuning configs load it into a
# 128x96 pose backbone: the fork's _prepare_pos_embed drops the class position of an odd-length pos_embed (the
# step mmpretrain 1.2.0 lacks), mmpretrain's own hook then resizes the square grid bicubically.
mae = MAEViT(arch=ARCH, img_size=128, patch_size=16)
mae.init_weights()
neck = MAEPretrainDecoder(num_patches=64, patch_size=16, in_chans=3, embed_dim=96, decoder_embed_dim=32,
                          decoder_depth=1, decoder_num_heads=2)
noisy(mae, neck)
raw = {**{f"backbone.{k}": v for k, v in mae.state_dict().items()}, **{f"neck.{k}": v for k, v in neck.state_dict().items()}}
torch.save({"state_dict": raw, "meta": {"epoch": 1600}}, f"{out}/mae.pth")
clean = {k[len("backbone."):]: v for k, v in raw.items() if k.startswith("backbone.")}
torch.save(clean, f"{out}/mae_clean.pth")
vit = backbone(2)
vit.eval()
loaded = dict(clean)
loaded["pos_embed"] = loaded["pos_embed"][:, 1:]
result = vit.load_state_dict(loaded, strict=False)
assert list(result.missing_keys) == [] and list(result.unexpected_keys) == ["cls_token"], result
with torch.no_grad():
    torch.save({"features": vit(x)[-1]}, f"{out}/mae_reference.pt")
torch.save(x, f"{out}/input.pt")
'''


@pytest.fixture(scope="session")
def oracle_outputs(oracle_python, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sapiens_oracle")
    (out / "driver.py").write_text(ORACLE_DRIVER)
    proc = subprocess.run([str(oracle_python), str(out / "driver.py"), str(SHARED / "oracle"), str(out)],
                          capture_output=True, text=True, timeout=600, check=False, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def assert_close_to(got: torch.Tensor, ref: torch.Tensor) -> float:
    assert got.shape == ref.shape
    diff = (got - ref).abs().max().item()
    assert diff <= TOL * ref.abs().max().item(), (diff, ref.abs().max().item())
    return diff


@pytest.mark.parametrize("task,field,padding", [("pose", "heatmaps", 2), ("seg", "seg", 0), ("depth", "depth", 0),
                                                ("normal", "normals", 2)])
def test_reference_implementation(oracle_outputs, task, field, padding, one_thread):
    model = convert_checkpoint(oracle_outputs / f"{task}.pth", num_heads=3)
    cfg = model.config
    assert cfg.backbone.patch_padding == padding and cfg.input_size == (96, 128)
    assert cfg.name == f"sapiens-custom-{'pose-coco' if task == 'pose' else task}"
    x = torch.load(oracle_outputs / "input.pt", weights_only=True)
    reference = torch.load(oracle_outputs / f"{task}_reference.pt", weights_only=True)
    with torch.no_grad():
        features = model.backbone(x)
        out = getattr(model.head(features), field)
    assert_close_to(features[-1], reference["features"])
    diff = assert_close_to(out, reference["output"])
    print(f"{task}: max |diff| {diff:.3g} (max |ref| {reference['output'].abs().max().item():.3g})")
    # the padding a bare state dict does not record matters, far above the tolerance
    wrong = convert_checkpoint(oracle_outputs / f"{task}.pth", num_heads=3, patch_padding=2 - padding)
    with torch.no_grad():
        changed = getattr(wrong(x), field)
    assert (changed - reference["output"]).abs().max().item() > 10 * TOL * reference["output"].abs().max().item()


@pytest.mark.parametrize("file", ["mae.pth", "mae_clean.pth"])
def test_reference_pretraining_load(oracle_outputs, file, one_thread):
    model = convert_checkpoint(oracle_outputs / file, task="pose-coco", num_heads=3, input_size=(96, 128))
    x = torch.load(oracle_outputs / "input.pt", weights_only=True)
    reference = torch.load(oracle_outputs / "mae_reference.pt", weights_only=True)["features"]
    with torch.no_grad():
        diff = assert_close_to(model.backbone(x)[-1], reference)
        # folding the class position into the patches (as ViTPose's converter does) would not match Sapiens
        cls_position = torch.load(oracle_outputs / file, weights_only=True)
        cls_position = cls_position.get("state_dict", cls_position)
        cls_position = next(v for k, v in cls_position.items() if k.endswith("pos_embed"))[:, :1]
        model.backbone.pos_embed.add_(cls_position)
        folded = model.backbone(x)[-1]
    assert (folded - reference).abs().max().item() > 10 * TOL * reference.abs().max().item()
    print(f"{file}: max |diff| {diff:.3g}")


# ----------------------------------------------------------------------------- weights by name
def test_released_pose_weights_resolve_by_name_and_convert(tmp_path, monkeypatch):
    """``--model sapiens-1b-pose-coco`` names the file the official docs link (CC BY-NC 4.0); a release of that
    layout (a tiny one here, from a mirror: no network) downloads, converts with the Sapiens converter and loads."""
    from poseforge.hub import RemoteFile, WeightsSpec, weights_spec
    from poseforge.registry import WEIGHTS

    spec = weights_spec("sapiens-1b-pose-coco")
    assert spec.name == "sapiens-1b-pose-coco.coco" and spec.license == "CC-BY-NC-4.0"
    assert spec.files[0].hf_repo == "noahcao/sapiens-pose-coco"
    assert spec.files[0].hf_filename == "sapiens_host/pose/checkpoints/sapiens_1b/sapiens_1b_coco_best_coco_AP_821.pth"
    assert weights_spec("sapiens-0.3b-pose-wholebody").files[0].filename.endswith("coco_wholebody_AP_620.pth")

    source = randomize(create_model("sapiens-tiny-pose-coco"), 5)
    remote = RemoteFile("sapiens_tiny_coco.pth", hf_repo="test-org/sapiens-pose",
                        hf_filename="sapiens_host/pose/checkpoints/sapiens_tiny/sapiens_tiny_coco.pth")
    released = tmp_path / "mirror" / remote.hf_repo / remote.hf_filename
    released.parent.mkdir(parents=True)
    torch.save({"state_dict": to_official(source), "meta": {"epoch": 210}}, released)
    monkeypatch.setenv("POSEFORGE_MIRROR", str(tmp_path / "mirror"))
    name = "sapiens-tiny-pose-coco.test-release"
    WEIGHTS.register(name, WeightsSpec(name, "pose", license="CC-BY-NC-4.0", source="test", files=(remote,),
                                       converter=spec.converter, convert_options=dict(spec.convert_options)),
                     overwrite=True)
    try:
        model = load_model(name)
    finally:
        WEIGHTS._entries.pop(name, None)
    for got, ref in zip(outputs(model), outputs(source), strict=True):
        torch.testing.assert_close(got, ref, rtol=0, atol=0)
