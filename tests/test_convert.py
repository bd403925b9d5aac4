"""Checkpoint interop: Hugging Face, official ViTPose (mmpose 0.x) and mmpose 1.x checkpoints give the
same heatmaps in poseforge (fp32, max abs diff < 1e-4)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from poseforge.cli import main as cli_main
from poseforge.convert import convert_checkpoint, detect_format, read_checkpoint, vitpose_from_state_dict
from poseforge.errors import PoseforgeError
from poseforge.models import load_model

from hf_fixtures import hf_to_official, random_hf_vitpose

TOL = 1e-4


# ----------------------------------------------------------------------------- Hugging Face reference models
def hf_model(hidden: int, layers: int, heads: int, simple: bool, num_labels: int = 17,
             image_size: tuple[int, int] = (256, 192), eps: float = 1e-12, seed: int = 0):
    """A random ``VitPoseForPoseEstimation`` with informative weights (noise on every parameter, random BN stats)."""
    return random_hf_vitpose(seed, num_labels, image_size, hidden_size=hidden, num_hidden_layers=layers,
                             num_attention_heads=heads, out_indices=[layers], layer_norm_eps=eps, use_simple_decoder=simple)


def hf_heatmaps(model, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).heatmaps


def assert_same_heatmaps(model, reference: torch.Tensor, x: torch.Tensor) -> None:
    with torch.no_grad():
        out = model.eval()(x).heatmaps
    assert out.shape == reference.shape
    assert reference.abs().max() > 0.05  # a meaningful signal, so the tolerance below means something
    assert (out - reference).abs().max().item() < TOL


@pytest.mark.parametrize("hidden,heads,simple", [(384, 12, False), (768, 12, True)], ids=["S-classic", "B-simple"])
def test_hugging_face_vitpose_s_and_b(tmp_path, hidden, heads, simple):
    model = hf_model(hidden, 12, heads, simple)
    model.save_pretrained(tmp_path / "hf")
    x = torch.randn(2, 3, 256, 192)
    converted = convert_checkpoint(tmp_path / "hf")
    assert converted.config.backbone.num_heads == heads and converted.config.keypoint_set == "coco17"
    assert converted.config.name == ("vitpose-b-simple" if simple else "vitpose-s")
    assert_same_heatmaps(converted, hf_heatmaps(model, x), x)


@pytest.mark.parametrize("simple", [False, True])
def test_hugging_face_small_custom_shapes(tmp_path, simple):
    # 6 heads on a 96-wide model, a 128x96 crop, 133 keypoints and HF's own LayerNorm epsilon.
    model = hf_model(96, 2, 6, simple, num_labels=133, image_size=(128, 96), eps=1e-12)
    model.save_pretrained(tmp_path)
    converted = convert_checkpoint(tmp_path)
    cfg = converted.config
    assert cfg.input_size == (96, 128) and cfg.keypoint_set == "wholebody133" and cfg.backbone.layer_norm_eps == 1e-12
    assert cfg.codec["heatmap_size"] == [24, 32]
    x = torch.randn(2, 3, 128, 96)
    assert_same_heatmaps(converted, hf_heatmaps(model, x), x)


# ----------------------------------------------------------------------------- official and mmpose-1.x layouts
def official_to_mmpose(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the official layout to mmpose 1.x (mmpretrain VisionTransformer without class token)."""
    out = {}
    for key, value in state.items():
        if key == "backbone.pos_embed":
            value = value[:, 1:] + value[:, :1]
        new = (key.replace("backbone.patch_embed.proj.", "backbone.patch_embed.projection.")
               .replace("backbone.blocks.", "backbone.layers.").replace(".norm1.", ".ln1.").replace(".norm2.", ".ln2.")
               .replace(".mlp.fc1.", ".ffn.layers.0.0.").replace(".mlp.fc2.", ".ffn.layers.1.")
               .replace("backbone.last_norm.", "backbone.ln1.").replace("keypoint_head.", "head."))
        out[new] = value
    return out


@pytest.fixture(scope="module")
def hf_reference():
    """A 384-wide, 12-head (ViTPose-S shaped, 2 blocks) HF model, its input and heatmaps."""
    model = hf_model(384, 2, 12, simple=False)
    x = torch.randn(2, 3, 256, 192)
    return model, x, hf_heatmaps(model, x)


class FakeMessageHub:  # stands for mmengine objects a real checkpoint pickles next to the weights
    def __init__(self):
        self.log = {"loss": [0.1, 0.2]}


def test_official_checkpoint(tmp_path, hf_reference):
    model, x, reference = hf_reference
    state = hf_to_official(model.state_dict())
    assert "backbone.blocks.1.attn.qkv.weight" in state and state["backbone.pos_embed"].shape == (1, 193, 384)
    path = tmp_path / "vitpose_official.pth"
    torch.save({"state_dict": state, "meta": {"hub": FakeMessageHub(), "sigmas": np.ones(17)}}, path)
    assert detect_format(state) == "official"
    converted = convert_checkpoint(path)
    assert converted.config.backbone.num_heads == 12  # not in the file: the official S value
    assert_same_heatmaps(converted, reference, x)


def test_mmpose1_checkpoint(tmp_path, hf_reference):
    model, x, reference = hf_reference
    state = official_to_mmpose(hf_to_official(model.state_dict()))
    assert state["backbone.pos_embed"].shape == (1, 192, 384) and "backbone.ln1.weight" in state
    path = tmp_path / "mmpose.pth"
    torch.save({"state_dict": state, "meta": {"config": "td-hm_ViTPose"}}, path)
    assert detect_format(state) == "mmpose"
    assert_same_heatmaps(convert_checkpoint(path), reference, x)


def test_head_count_matters_and_can_be_given(tmp_path):
    model = hf_model(384, 1, 6, simple=True)  # 6 heads: not the official S value
    state = hf_to_official(model.state_dict())
    x = torch.randn(1, 3, 256, 192)
    reference = hf_heatmaps(model, x)
    with torch.no_grad():
        wrong = vitpose_from_state_dict(state)(x).heatmaps
    assert (wrong - reference).abs().max() > 10 * TOL
    assert_same_heatmaps(vitpose_from_state_dict(state, num_heads=6), reference, x)


# ----------------------------------------------------------------------------- errors
def test_unknown_missing_and_misshaped_keys_are_listed(hf_reference):
    state = hf_to_official(hf_reference[0].state_dict())
    with pytest.raises(PoseforgeError, match=r"1 unknown key\(s\) for the official format: backbone.extra.weight"):
        vitpose_from_state_dict({**state, "backbone.extra.weight": torch.zeros(1)})
    missing = {k: v for k, v in state.items() if not k.startswith("backbone.blocks.1.norm2.")}
    with pytest.raises(PoseforgeError, match=r"2 missing key\(s\): backbone.blocks.1.norm2.weight, backbone.blocks.1.norm2.bias"):
        vitpose_from_state_dict(missing)
    bad = dict(state)
    bad["backbone.blocks.1.mlp.fc2.bias"] = torch.zeros(100)
    with pytest.raises(PoseforgeError, match=r"mis-shaped key\(s\): backbone.blocks.1.mlp.fc2.bias \[100\] \(model: \[384\]\)"):
        vitpose_from_state_dict(bad)
    moe = {**state, "backbone.blocks.0.mlp.experts.0.weight": torch.zeros(1)}
    with pytest.raises(PoseforgeError, match="mixture-of-experts"):
        vitpose_from_state_dict(moe)


def test_keypoint_set_from_the_head_and_its_ambiguities(hf_reference):
    state = hf_to_official(hf_reference[0].state_dict())
    fourteen = dict(state)
    fourteen["keypoint_head.final_layer.weight"] = state["keypoint_head.final_layer.weight"][:14]
    fourteen["keypoint_head.final_layer.bias"] = state["keypoint_head.final_layer.bias"][:14]
    with pytest.raises(PoseforgeError, match=r"14 keypoints fit several keypoint sets \(aic14, crowdpose14\)"):
        vitpose_from_state_dict(fourteen)
    two = {**state, "keypoint_head.final_layer.weight": state["keypoint_head.final_layer.weight"][:2],
           "keypoint_head.final_layer.bias": state["keypoint_head.final_layer.bias"][:2]}
    with pytest.raises(PoseforgeError, match="no known keypoint set has 2 keypoints"):
        vitpose_from_state_dict(two)
    assert vitpose_from_state_dict(fourteen, keypoint_set="aic14").keypoint_set.name == "aic14"
    with pytest.raises(PoseforgeError, match="predicts 17 keypoints but 'mpii16' has 16"):
        vitpose_from_state_dict(state, keypoint_set="mpii16")
    with pytest.raises(PoseforgeError, match="pos_embed has 192 patch positions but a 288x384 input"):
        vitpose_from_state_dict(state, input_size=(288, 384))


def test_unreadable_inputs(tmp_path):
    with pytest.raises(PoseforgeError, match="no such file"):
        read_checkpoint(tmp_path / "absent.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(PoseforgeError, match="junk.pth"):
        read_checkpoint(tmp_path / "junk.pth")
    torch.save({"state_dict": {"foo.bar": torch.zeros(1)}}, tmp_path / "odd.pth")
    with pytest.raises(PoseforgeError, match="unrecognized checkpoint layout"):
        convert_checkpoint(tmp_path / "odd.pth")


# ----------------------------------------------------------------------------- CLI
def test_convert_command(tmp_path, capsys):
    model = hf_model(96, 2, 6, simple=False, image_size=(64, 48))
    model.save_pretrained(tmp_path / "hf")
    assert cli_main(["convert", str(tmp_path / "hf"), str(tmp_path / "out")]) == 0
    assert "vitpose-custom: 96-wide x 2 blocks, 6 heads" in capsys.readouterr().out
    loaded = load_model(tmp_path / "out")
    x = torch.randn(1, 3, 64, 48)
    assert_same_heatmaps(loaded, hf_heatmaps(model, x), x)
    # A second run refuses to overwrite; errors are one line with exit code 2.
    assert cli_main(["convert", str(tmp_path / "hf"), str(tmp_path / "out")]) == 2
    assert "already holds a model" in capsys.readouterr().err
    assert cli_main(["convert", str(tmp_path / "nothing"), str(tmp_path / "o2")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    # A poseforge folder converts to itself.
    again = convert_checkpoint(tmp_path / "out")
    assert again.config == loaded.config
    with torch.no_grad():
        torch.testing.assert_close(again(x).heatmaps, loaded(x).heatmaps, rtol=0, atol=0)


# ----------------------------------------------------------------------------- mmpose 1.x oracle
ORACLE_DRIVER = r'''
"""Build mmpose-1.x models from shipped configs with informative random weights; save checkpoint, input, output."""
import os, sys
sys.path.insert(0, sys.argv[1])
import mm_oracle_shim  # noqa: F401  (must precede mmpose)
import torch, mmpose
from mmengine.config import Config
from mmpose.registry import MODELS
from mmpose.utils import register_all_modules
from mmpretrain.utils import register_all_modules as register_mmpretrain
register_all_modules()
register_mmpretrain(init_default_scope=False)
out_root = sys.argv[2]
for rel in sys.argv[3:]:
    cfg = Config.fromfile(os.path.join(os.path.dirname(mmpose.__file__), ".mim", "configs", rel))
    cfg.model.backbone.init_cfg = None
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).eval()
    with torch.no_grad():  # PyTorch default init plus noise: norms near 1, so every block matters
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
        for n, b in model.named_buffers():
            if n.endswith("running_mean"): b.copy_(torch.randn_like(b) * 0.1)
            if n.endswith("running_var"): b.copy_(torch.rand_like(b) + 0.5)
        w, h = cfg.codec["input_size"]
        x = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(1))
        y = model(x, None, mode="tensor")
    out = os.path.join(out_root, os.path.basename(rel)[:-3])
    os.makedirs(out, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "meta": {"config": rel}}, f"{out}/checkpoint.pth")
    torch.save(x, f"{out}/input.pt")
    torch.save(y, f"{out}/reference.pt")
'''
CONFIGS = "body_2d_keypoint/topdown_heatmap/coco/td-hm_ViTPose-{}_8xb64-210e_coco-256x192.py"


def run_oracle(python: Path, shared_dir: Path, out: Path, *variants: str) -> None:
    script = out / "driver.py"
    out.mkdir(parents=True, exist_ok=True)
    script.write_text(ORACLE_DRIVER)
    configs = [CONFIGS.format(v) for v in variants]
    proc = subprocess.run([str(python), str(script), str(shared_dir / "oracle"), str(out), *configs],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def check_oracle_output(folder: Path, expected_name: str) -> None:
    model = convert_checkpoint(folder / "checkpoint.pth")
    assert model.config.name == expected_name
    x = torch.load(folder / "input.pt", weights_only=True)
    reference = torch.load(folder / "reference.pt", weights_only=True)
    assert_same_heatmaps(model, reference, x)
    # The comparison is sensitive: a 1% change in one block's norm shows far above the tolerance.
    with torch.no_grad():
        model.backbone.blocks[5].norm1.weight.mul_(1.01)
        assert (model(x).heatmaps - reference).abs().max() > 10 * TOL


@pytest.fixture(scope="session")
def oracle_small(oracle_python, shared_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mm_oracle")
    run_oracle(oracle_python, shared_dir, out, "small", "small-simple")
    return out


@pytest.mark.parametrize("variant,name", [("small", "vitpose-s"), ("small-simple", "vitpose-s-simple")])
def test_mmpose_oracle_vitpose_s(oracle_small, variant, name):
    check_oracle_output(oracle_small / os.path.basename(CONFIGS.format(variant))[:-3], name)


def test_mmpose_oracle_reference_script(oracle_python, shared_dir, tmp_path):
    """The shared ``mm_reference.py`` checkpoint (its own weights) converts to the same output."""
    config = CONFIGS.format("small")
    proc = subprocess.run([str(oracle_python), str(shared_dir / "oracle" / "mm_reference.py"), config, str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    model = convert_checkpoint(tmp_path / "checkpoint.pth")
    x = torch.load(tmp_path / "input.pt", weights_only=True)
    reference = torch.load(tmp_path / "reference.pt", weights_only=True)
    with torch.no_grad():
        out = model(x).heatmaps
    assert out.shape == reference.shape == (2, 17, 64, 48)
    assert (out - reference).abs().max().item() < TOL * reference.abs().max().item()


@pytest.mark.slow
@pytest.mark.parametrize("variant,name", [("base", "vitpose-b"), ("base-simple", "vitpose-b-simple"),
                                          ("large", "vitpose-l")])
def test_mmpose_oracle_larger_models(oracle_python, shared_dir, tmp_path, variant, name):
    run_oracle(oracle_python, shared_dir, tmp_path, variant)
    check_oracle_output(tmp_path / os.path.basename(CONFIGS.format(variant))[:-3], name)
