"""Model zoo, configs, save/load, predict, parameter groups and inference preparation."""
from __future__ import annotations

import json
import math

import pytest
import torch

import poseforge
from poseforge.errors import PoseforgeError
from poseforge.models import (HeatmapHeadConfig, TopDownConfig, ViTConfig, build_model, config_from_dict, create_model,
                              list_models, load_model, model_config)
from poseforge.models.estimators import CONFIG_NAME, WEIGHTS_NAME
from poseforge.models.estimators.base import CHECKSUMS_NAME

SIZES = ["tiny", "s", "b", "l", "h", "g"]
ALL_NAMES = [f"vitpose-{s}{suffix}" for s in SIZES for suffix in ("", "-simple")]


def tiny(**kw):
    base = dict(input_size=(48, 64))
    base.update(kw)
    return create_model("vitpose-tiny", **base)


# ----------------------------------------------------------------------------- zoo
def test_list_models_has_every_vitpose_size_and_decoder():
    assert set(ALL_NAMES) <= set(list_models())
    assert list_models("vitpose-b*") == ["vitpose-b", "vitpose-b-simple"]
    assert poseforge.list_models("vitpose-h*") == ["vitpose-h", "vitpose-h-simple"]


@pytest.mark.parametrize("name,size", [("vitpose-s", (384, 12, 12)), ("vitpose-b", (768, 12, 12)),
                                       ("vitpose-l", (1024, 24, 16)), ("vitpose-h", (1280, 32, 16))])
def test_official_sizes(name, size):
    bb = model_config(name).backbone
    assert (bb.embed_dim, bb.depth, bb.num_heads) == size
    assert bb.hidden_dim == 4 * bb.embed_dim and bb.patch_size == 16 and bb.patch_padding == 2 and bb.qkv_bias


# Paper (ViTPose, Table 1): S 24M, B 86M, L 307M, H 632M; G ~1B. The S figure counts the classic
# decoder (its backbone alone is 21.7M; mmpose reports 24.29M for the whole S model); B/L/H/G are
# backbone counts.
@pytest.mark.parametrize("name,millions,whole_model", [("vitpose-s", 24, True), ("vitpose-b", 86, False),
                                                       ("vitpose-l", 307, False), ("vitpose-h", 632, False),
                                                       ("vitpose-g", 1000, False)])
def test_parameter_counts_match_the_paper(name, millions, whole_model):
    with torch.device("meta"):
        model = create_model(name)
    count = model.num_parameters() if whole_model else sum(p.numel() for p in model.backbone.parameters())
    assert abs(count / 1e6 - millions) / millions < 0.02, count


def test_s_model_parameter_count_equals_mmpose():
    with torch.device("meta"):
        model = create_model("vitpose-s")
    assert model.num_parameters() == 24_290_193  # params_M printed by the mmpose oracle for td-hm_ViTPose-small


@pytest.mark.parametrize("name", [n for n in ALL_NAMES if n.split("-")[1] in ("tiny", "s", "b")])
def test_small_zoo_models_run_on_cpu(name):
    model = create_model(name, input_size=(48, 64)).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 48)).heatmaps
    assert out.shape == (2, 17, 16, 12) and out.dtype == torch.float32 and torch.isfinite(out).all()


@pytest.mark.parametrize("name", [n for n in ALL_NAMES if n.split("-")[1] in ("l", "h", "g")])
def test_large_zoo_models_run_on_the_meta_device(name):
    with torch.device("meta"):
        model = create_model(name).eval()
        out = model(torch.empty(2, 3, 256, 192)).heatmaps
    assert out.shape == (2, 17, 64, 48)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vitpose-l", "vitpose-h-simple", "vitpose-g"])
def test_large_zoo_models_run_on_cpu(name):
    model = create_model(name, input_size=(48, 64)).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 48)).heatmaps
    assert out.shape == (1, 17, 16, 12) and torch.isfinite(out).all()


# ----------------------------------------------------------------------------- overrides
def test_overrides_follow_keypoint_set_input_size_and_decoder():
    model = create_model("vitpose-tiny", keypoint_set="wholebody133", input_size=(96, 128), head="simple",
                         attention="shifted_window", window_size=(4, 4), global_blocks=(5,), drop_path_rate=0.2,
                         codec="dark", sigma=3)
    cfg = model.config
    assert cfg.keypoint_set == "wholebody133" and model.keypoint_set.num_keypoints == 133
    assert cfg.codec == {"name": "dark", "sigma": 3.0, "input_size": [96, 128], "heatmap_size": [24, 32]}
    assert cfg.head.input_upsample == 4 and cfg.backbone.attention == "shifted_window"
    assert model.backbone.blocks[-1].drop_path.p == pytest.approx(0.2)
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 128, 96)).heatmaps.shape == (1, 133, 32, 24)


def test_unknown_override_is_a_clear_error():
    with pytest.raises(PoseforgeError, match="unknown override 'num_layers'.*depth"):
        create_model("vitpose-tiny", num_layers=3)
    with pytest.raises(PoseforgeError, match="unknown model 'vitpose-x'"):
        create_model("vitpose-x")
    with pytest.raises(PoseforgeError, match="unknown keypoint set"):
        create_model("vitpose-tiny", keypoint_set="nope")
    with pytest.raises(PoseforgeError, match="unknown head 'fancy'"):
        create_model("vitpose-tiny", head="fancy")
    with pytest.raises(PoseforgeError, match="unknown codec 'gauss'"):
        create_model("vitpose-tiny", codec="gauss")


# ----------------------------------------------------------------------------- configs
@pytest.mark.parametrize("name", ALL_NAMES)
def test_configs_round_trip_through_json(name):
    cfg = model_config(name, keypoint_set="mpii16", global_blocks=(1,), attention="window")
    data = json.loads(json.dumps(cfg.to_dict()))
    back = config_from_dict(data)
    assert back == cfg and isinstance(back.backbone, ViTConfig) and isinstance(back.head, HeatmapHeadConfig)
    assert isinstance(back.input_size, tuple) and isinstance(back.backbone.window_size, tuple)


def test_config_loading_errors_name_the_field():
    data = model_config("vitpose-tiny").to_dict()
    with pytest.raises(PoseforgeError, match=r"backbone: unknown field\(s\) depthh"):
        config_from_dict({**data, "backbone": {**data["backbone"], "depthh": 3}})
    with pytest.raises(PoseforgeError, match=r"backbone.depth: expected an integer"):
        config_from_dict({**data, "backbone": {**data["backbone"], "depth": "deep"}})
    with pytest.raises(PoseforgeError, match="unknown backbone 'resnet'"):
        config_from_dict({**data, "backbone": {**data["backbone"], "type": "resnet"}})
    with pytest.raises(PoseforgeError, match="input_size: expected 2 values"):
        config_from_dict({**data, "input_size": [1, 2, 3]})
    with pytest.raises(PoseforgeError, match="missing field 'type'"):
        config_from_dict({k: v for k, v in data.items() if k != "type"})


def test_codec_heatmap_size_must_match_the_head():
    cfg = model_config("vitpose-tiny")
    with pytest.raises(PoseforgeError, match="heatmap_size"):
        build_model(cfg.replace(codec={**cfg.codec, "heatmap_size": [40, 60]}))


# ----------------------------------------------------------------------------- save / load
def test_save_and_load_round_trip(tmp_path):
    model = tiny(keypoint_set="crowdpose14", head="simple").eval()
    with torch.no_grad():
        model.head.final_layer.bias.add_(torch.randn(14))
    model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == sorted([CHECKSUMS_NAME, CONFIG_NAME, WEIGHTS_NAME])
    config = json.loads((tmp_path / "m" / CONFIG_NAME).read_text())
    assert config["type"] == "topdown" and config["backbone"]["type"] == "vit" and config["keypoint_set"] == "crowdpose14"
    loaded = poseforge.load_model(tmp_path / "m")
    assert loaded.config == model.config and not loaded.training
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).heatmaps, model(x).heatmaps, rtol=0, atol=0)
    assert torch.equal(loaded.pixel_mean, model.pixel_mean) and torch.equal(loaded.flip_index, model.flip_index)


def test_loaded_weights_sit_in_aligned_memory(tmp_path):
    """safetensors leaves a tensor read without copying at its 8-byte-aligned offset in the file; oneDNN then picks
    other kernels, whose outputs differ in the last bits on some CPUs (AMD EPYC). Loaded weights are 64-byte aligned
    like any tensor PyTorch allocates."""
    model = tiny(keypoint_set="crowdpose14", head="simple").eval()
    model.save_pretrained(tmp_path / "m")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "m" / WEIGHTS_NAME), framework="pt") as f:  # the file's own layout: misaligned views
        assert any(f.get_tensor(k).data_ptr() % 64 for k in f.keys())
    loaded = poseforge.load_model(tmp_path / "m")
    misaligned = [n for n, t in loaded.state_dict().items() if t.numel() and t.data_ptr() % 64]
    assert not misaligned, misaligned[:5]


def test_classic_head_batchnorm_statistics_survive_save_and_load(tmp_path):
    model = tiny().eval()
    with torch.no_grad():
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn_like(b))
            elif name.endswith("running_var"):
                b.copy_(torch.rand_like(b) + 0.5)
    model.save_pretrained(tmp_path)
    loaded = load_model(tmp_path / WEIGHTS_NAME)
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).heatmaps, model(x).heatmaps, rtol=0, atol=0)


def test_a_lone_safetensors_file_carries_its_config(tmp_path):
    model = tiny().eval()
    model.save_pretrained(tmp_path)
    (tmp_path / CONFIG_NAME).unlink()
    loaded = load_model(tmp_path / WEIGHTS_NAME)
    assert loaded.config == model.config


def test_bfloat16_models_save_and_load_in_bfloat16(tmp_path):
    model = tiny().prepare_for_inference(dtype=torch.bfloat16)
    model.save_pretrained(tmp_path)
    loaded = load_model(tmp_path)
    assert loaded.dtype == torch.bfloat16 and loaded.pixel_mean.dtype == torch.float32
    assert load_model(tmp_path, dtype=torch.float32).dtype == torch.float32


def test_load_errors_are_one_line(tmp_path):
    with pytest.raises(PoseforgeError, match="no such model name, folder or file"):
        load_model(tmp_path / "absent")
    with pytest.raises(PoseforgeError, match=r"not a model folder or training run \(no model.safetensors"):
        load_model(tmp_path)
    model = tiny()
    model.save_pretrained(tmp_path)
    (tmp_path / CHECKSUMS_NAME).unlink()  # the damage below is the point, not the checksum record (test_integrity)
    (tmp_path / CONFIG_NAME).write_text("{not json")
    with pytest.raises(PoseforgeError, match="not valid JSON"):
        load_model(tmp_path)
    # Weights of another architecture: every problem key is listed.
    create_model("vitpose-tiny", input_size=(48, 64), keypoint_set="mpii16").save_pretrained(tmp_path / "other")
    (tmp_path / CONFIG_NAME).write_text(json.dumps(model.config.to_dict()))
    import shutil

    shutil.copy(tmp_path / "other" / WEIGHTS_NAME, tmp_path / WEIGHTS_NAME)
    with pytest.raises(PoseforgeError, match=r"mis-shaped key\(s\): head.final_layer.weight \[16, 128, 1, 1\]"):
        load_model(tmp_path)


# ----------------------------------------------------------------------------- predict
def _peaky(model):
    """Make the untrained model's heatmaps vary with the input so decoded points differ per image."""
    with torch.no_grad():
        model.head.final_layer.weight.normal_(0, 0.05)
    return model.eval()


def test_predict_without_flip_decodes_the_forward_pass():
    model = _peaky(tiny())
    images = torch.randint(0, 256, (3, 3, 64, 48), dtype=torch.uint8)
    pred = model.predict(images, flip_test=False)
    normalized = (images.float() - torch.tensor(model.config.mean).view(1, 3, 1, 1)) / torch.tensor(model.config.std).view(1, 3, 1, 1)
    with torch.no_grad():
        keypoints, scores = model.codec.decode(model(normalized))
    torch.testing.assert_close(pred.keypoints[:, 0], keypoints)
    torch.testing.assert_close(pred.scores[:, 0], scores)
    assert pred.keypoints.shape == (3, 1, 17, 2) and pred.scores.shape == (3, 1, 17) and len(pred) == 3
    assert bool(pred.valid.all()) and pred.valid.shape == (3, 1)
    assert not torch.equal(pred.keypoints[0], pred.keypoints[1])  # per-image results, not a constant


def test_predict_with_flip_averages_the_flipped_back_outputs():
    model = _peaky(tiny())
    images = torch.rand(2, 3, 64, 48) * 255
    pred = model.predict(images)  # config default: flip_test=True
    x = model.normalize(images)
    with torch.no_grad():
        averaged = 0.5 * (model(x).heatmaps + model.codec.flip_back(model(x.flip(-1)).heatmaps, model.keypoint_set.flip_index))
    keypoints, scores = model.codec.decode(averaged)
    torch.testing.assert_close(pred.keypoints[:, 0], keypoints)
    torch.testing.assert_close(pred.scores[:, 0], scores)
    assert not torch.allclose(pred.scores, model.predict(images, flip_test=False).scores)


def test_predict_accepts_uint8_and_float_and_restores_training_mode():
    model = _peaky(tiny()).train()
    images = torch.randint(0, 256, (1, 3, 64, 48), dtype=torch.uint8)
    a = model.predict(images)
    assert model.training
    b = model.predict(images.float().numpy())
    torch.testing.assert_close(a.keypoints, b.keypoints)


def test_predict_rejects_wrong_crops():
    model = tiny()
    with pytest.raises(PoseforgeError, match="expected 48x64 crops"):
        model.predict(torch.zeros(1, 3, 60, 48, dtype=torch.uint8))
    with pytest.raises(PoseforgeError, match=r"expected shape \[B,3,h,w\]"):
        model.predict(torch.zeros(1, 4, 64, 48))
    with pytest.raises(PoseforgeError, match="uint8 or float"):
        model.predict(torch.zeros(1, 3, 64, 48, dtype=torch.int32))


# ----------------------------------------------------------------------------- training helpers
def test_param_groups_apply_layer_decay_and_skip_weight_decay_on_norms_biases_positions():
    model = tiny()
    depth = model.config.backbone.depth
    groups = model.param_groups(lr=1e-3, weight_decay=0.1, layer_decay=0.5)
    seen = [id(p) for g in groups for p in g["params"]]
    assert sorted(seen) == sorted(id(p) for p in model.parameters()) and len(seen) == len(set(seen))
    where = {id(p): g for g in groups for p in g["params"]}
    params = dict(model.named_parameters())

    def group(name):
        return where[id(params[name])]

    assert group("head.final_layer.weight")["lr"] == pytest.approx(1e-3)
    assert group("backbone.norm.weight")["lr"] == pytest.approx(1e-3)
    for i in range(depth):
        g = group(f"backbone.blocks.{i}.attn.qkv.weight")
        assert g["lr"] == pytest.approx(1e-3 * 0.5 ** (depth - i)) and g["weight_decay"] == 0.1
    assert group("backbone.patch_embed.proj.weight")["lr_scale"] == pytest.approx(0.5 ** (depth + 1))
    for name in ("backbone.pos_embed", "backbone.blocks.0.norm1.weight", "backbone.blocks.0.attn.qkv.bias",
                 "head.deconv_layers.1.weight", "head.final_layer.bias"):
        assert group(name)["weight_decay"] == 0.0, name
    assert group("head.deconv_layers.0.weight")["weight_decay"] == 0.1
    default = model.param_groups(lr=1.0, weight_decay=0.0)  # the config's recommended rate
    assert min(g["lr_scale"] for g in default) == pytest.approx(model.config.backbone.layer_decay ** (depth + 1))
    torch.optim.AdamW(groups)  # the groups are valid optimizer input


def test_grad_checkpointing_switch_keeps_gradients():
    torch.manual_seed(0)
    model = tiny().train()
    x = torch.randn(2, 3, 64, 48)
    model(x).heatmaps.sum().backward()
    ref = model.backbone.blocks[0].attn.qkv.weight.grad.clone()
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).heatmaps.sum().backward()
    torch.testing.assert_close(model.backbone.blocks[0].attn.qkv.weight.grad, ref, atol=1e-6, rtol=1e-5)


def test_prepare_for_inference_pure_bfloat16_channels_last():
    model = tiny().eval()
    with torch.no_grad():
        model.head.final_layer.weight.normal_(0, 0.05)
    images = torch.randint(0, 256, (2, 3, 64, 48), dtype=torch.uint8)
    x = model.normalize(images)
    with torch.no_grad():
        ref = model(x).heatmaps
    model.prepare_for_inference(dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert model.head.deconv_layers[0].weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        out = model(x).heatmaps  # fp32 input is cast to the weights' dtype
    assert out.dtype == torch.bfloat16
    assert (out.float() - ref).abs().max() < 0.05 * ref.abs().max()
    assert model.predict(images).keypoints.dtype == torch.float32


def test_head_output_size_rules():
    cfg = HeatmapHeadConfig()
    assert cfg.output_size((12, 16)) == (48, 64)
    assert HeatmapHeadConfig(deconv_channels=(), deconv_kernel_sizes=(), final_kernel_size=3, input_upsample=4).output_size((12, 16)) == (48, 64)
    assert HeatmapHeadConfig(deconv_channels=(8, 8, 8), deconv_kernel_sizes=(4, 3, 2)).output_size((3, 4)) == (24, 32)
    with pytest.raises(PoseforgeError, match="unsupported kernel"):
        HeatmapHeadConfig(deconv_kernel_sizes=(4, 5))
    model = build_model(TopDownConfig(backbone=ViTConfig(embed_dim=32, depth=1, num_heads=2),
                                      head=HeatmapHeadConfig(deconv_channels=(8, 8, 8), deconv_kernel_sizes=(4, 3, 2)),
                                      input_size=(48, 64)))
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 64, 48)).heatmaps.shape == (1, 17, 32, 24)
    assert math.prod(model.output_size) == 32 * 24
