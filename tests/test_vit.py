"""ViT backbone: patch grid, position embeddings, attention variants against naive references,
drop path, gradient checkpointing and compile-friendliness."""
from __future__ import annotations

import math

import pytest
import torch

from poseforge.errors import PoseforgeError
from poseforge.models.backbones.vit import (Attention, DropPath, ViTConfig, VisionTransformer, block_attention,
                                            fold_cls_pos_embed, guess_grid, token_grid)


def small_config(**kw) -> ViTConfig:
    base = dict(embed_dim=32, depth=4, num_heads=4, drop_path_rate=0.0)
    base.update(kw)
    return ViTConfig(**base)


# ----------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("input_size,grid", [((192, 256), (16, 12)), ((288, 384), (24, 18)), ((432, 576), (36, 27))])
def test_patch_grid_of_vitpose_inputs(input_size, grid):
    assert token_grid(input_size, 16, 2) == grid
    model = VisionTransformer(small_config(depth=1), input_size=input_size)
    w, h = input_size
    (out,) = model(torch.randn(1, 3, h, w))
    assert out.shape == (1, 32, *grid)
    assert model.feature_info[0].stride == 16 and model.feature_info[0].size == grid[::-1]
    assert model.pos_embed.shape == (1, grid[0] * grid[1], 32)


def test_feature_map_is_the_token_sequence_laid_out_row_major():
    model = VisionTransformer(small_config(depth=1, final_norm=False), input_size=(48, 64)).eval()
    captured = {}
    model.blocks[0].register_forward_hook(lambda m, i, o: captured.setdefault("tokens", o))
    (out,) = model(torch.randn(2, 3, 64, 48))
    tokens = captured["tokens"]  # [B, N, C]
    rows, cols = out.shape[-2:]
    torch.testing.assert_close(out.permute(0, 2, 3, 1).reshape(2, rows * cols, -1), tokens)


def test_position_embeddings_are_interpolated_for_other_input_sizes():
    model = VisionTransformer(small_config(depth=1), input_size=(192, 256)).eval()
    assert model.interpolated_pos_embed(16, 12) is model.pos_embed  # native grid: no resampling
    with torch.no_grad():
        model.pos_embed.copy_(torch.linspace(-1, 1, 32).expand(1, 192, 32))  # the same vector at every position
    resized = model.interpolated_pos_embed(20, 16)
    assert resized.shape == (1, 320, 32)
    torch.testing.assert_close(resized, torch.linspace(-1, 1, 32).expand(1, 320, 32))  # bicubic keeps constants
    assert model(torch.randn(1, 3, 320, 256))[0].shape == (1, 32, 20, 16)


def test_cls_position_fold_and_grid_guess():
    pos = torch.randn(1, 1 + 6, 8)
    folded = fold_cls_pos_embed(pos, 6)
    torch.testing.assert_close(folded, pos[:, 1:] + pos[:, :1])
    assert fold_cls_pos_embed(folded, 6) is folded
    with pytest.raises(PoseforgeError, match="do not fit"):
        fold_cls_pos_embed(pos, 5)
    assert guess_grid(192) == (16, 12) and guess_grid(432) == (24, 18) and guess_grid(256) == (16, 16)
    assert guess_grid(7) is None


def test_config_validation():
    with pytest.raises(PoseforgeError, match="divisible"):
        ViTConfig(embed_dim=100, num_heads=12)
    with pytest.raises(PoseforgeError, match="unknown kind"):
        ViTConfig(attention="sparse")
    with pytest.raises(PoseforgeError, match="global_blocks"):
        ViTConfig(depth=4, global_blocks=(4,))


# ----------------------------------------------------------------------------- attention
def reference_attention(attn: Attention, x: torch.Tensor, grid: tuple[int, int], window: tuple[int, int],
                        shift: bool, pool: bool) -> torch.Tensor:
    """Per-query softmax attention over an explicitly enumerated key set (slow, obvious).

    Windows are defined in original coordinates: along each axis a token's group is
    ``floor((y - shift) / window)``; a shifted grid thus has a partial first group and wrapped-around
    tokens never meet. Pooling adds one mean key/value per (unshifted) window.
    """
    b, n, c = x.shape
    rows, cols = grid
    heads, d = attn.num_heads, c // attn.num_heads
    q, k, v = attn.qkv(x).view(b, n, 3, heads, d).unbind(2)
    wh, ww = min(window[0], rows), min(window[1], cols)
    sh = wh // 2 if shift and rows > wh else 0
    sw = ww // 2 if shift and cols > ww else 0
    group = [((i // cols - sh) // wh, (i % cols - sw) // ww) for i in range(n)]
    pooled_k = pooled_v = None
    if pool:
        windows = sorted(set(group))
        members = [[j for j in range(n) if group[j] == g] for g in windows]
        pooled_k = torch.stack([k[:, m].mean(1) for m in members], 1)
        pooled_v = torch.stack([v[:, m].mean(1) for m in members], 1)
    out = torch.zeros(b, n, heads, d)
    for i in range(n):
        keys = [j for j in range(n) if group[j] == group[i]]
        kk, vv = k[:, keys], v[:, keys]
        if pool:
            kk, vv = torch.cat([kk, pooled_k], 1), torch.cat([vv, pooled_v], 1)
        scores = torch.einsum("bhd,bjhd->bhj", q[:, i], kk) / math.sqrt(d)
        out[:, i] = torch.einsum("bhj,bjhd->bhd", scores.softmax(-1), vv)
    return attn.proj(out.reshape(b, n, c))


@pytest.mark.parametrize("grid,window,mode,shift", [
    ((4, 6), (2, 3), "window", False),       # exact tiling
    ((5, 7), (2, 3), "window", False),       # padding on both axes
    ((4, 6), (2, 2), "window", True),        # shifted, exact tiling
    ((5, 7), (4, 4), "window", True),        # shifted + padding
    ((3, 8), (4, 4), "window", True),        # window clamped to the grid on one axis (no shift there)
    ((4, 6), (2, 3), "pool", False),         # pooling windows
    ((5, 7), (2, 3), "pool", False),         # pooling windows with padding
])
def test_windowed_attention_matches_reference(grid, window, mode, shift):
    attn = Attention(16, 2, True, mode, window, shift).eval()
    x = torch.randn(2, grid[0] * grid[1], 16)
    expected = reference_attention(attn, x, grid, window, shift, pool=mode == "pool")
    torch.testing.assert_close(attn(x, grid), expected, atol=1e-5, rtol=1e-5)


def test_window_covering_the_grid_is_full_attention():
    full = Attention(16, 4, True, "full")
    windowed = Attention(16, 4, True, "window", (8, 8), shift=True)
    windowed.load_state_dict(full.state_dict())
    x = torch.randn(2, 12, 16)
    torch.testing.assert_close(windowed(x, (4, 3)), full(x, (4, 3)), atol=1e-6, rtol=1e-5)
    # A real window changes the result: the test above is not vacuous.
    small = Attention(16, 4, True, "window", (2, 2))
    small.load_state_dict(full.state_dict())
    assert (small(x, (4, 3)) - full(x, (4, 3))).abs().max() > 1e-3


def test_block_attention_pattern():
    cfg = ViTConfig(depth=6, attention="shifted_window", global_blocks=(2, 5))
    assert [block_attention(cfg, i) for i in range(6)] == [
        ("window", False), ("window", True), ("full", False), ("window", True), ("window", False), ("full", False)]
    assert block_attention(ViTConfig(attention="pooling_window"), 3) == ("pool", False)
    assert block_attention(ViTConfig(), 3) == ("full", False)
    model = VisionTransformer(small_config(attention="window", global_blocks=(1,), window_size=(2, 2)), input_size=(48, 64))
    assert [b.attn.mode for b in model.blocks] == ["window", "full", "window", "window"]


# ----------------------------------------------------------------------------- regularization / memory
def test_drop_path_drops_whole_samples_and_rescales():
    layer = DropPath(0.5).train()
    out = layer(torch.ones(4000, 3, 2))
    per_sample = out[:, 0, 0]
    assert set(per_sample.unique().tolist()) <= {0.0, 2.0}
    assert (out == per_sample[:, None, None]).all()
    assert abs(per_sample.mean().item() - 1.0) < 0.1
    assert torch.equal(layer.eval()(torch.ones(5, 3)), torch.ones(5, 3))


def test_drop_path_rates_increase_linearly_to_the_configured_rate():
    model = VisionTransformer(small_config(depth=5, drop_path_rate=0.4), input_size=(48, 64))
    rates = [getattr(b.drop_path, "p", 0.0) for b in model.blocks]
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    plain = VisionTransformer(small_config(), input_size=(48, 64)).train()
    ckpt = VisionTransformer(small_config(grad_checkpointing=True), input_size=(48, 64)).train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 48)
    plain(x)[0].square().mean().backward()
    ckpt(x)[0].square().mean().backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), ckpt.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=1e-5, msg=name)


def test_layer_ids_for_layerwise_decay():
    model = VisionTransformer(small_config(depth=3), input_size=(48, 64))
    assert model.layer_id("pos_embed") == 0 and model.layer_id("patch_embed.proj.weight") == 0
    assert model.layer_id("blocks.0.attn.qkv.weight") == 1 and model.layer_id("blocks.2.mlp.fc2.bias") == 3
    assert model.layer_id("norm.weight") == 4


@pytest.mark.parametrize("attention", ["full", "window", "shifted_window", "pooling_window"])
def test_compiles_without_graph_breaks(attention):
    model = VisionTransformer(small_config(depth=2, attention=attention, window_size=(3, 3)), input_size=(80, 112)).eval()
    x = torch.randn(2, 3, 112, 80)
    compiled = torch.compile(model, backend="eager", fullgraph=True)  # fullgraph raises on any graph break
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x))


# ---------------------------------------------------------------------------------------------- conv stem
@pytest.mark.parametrize("size", [(96, 128), (100, 70)])
def test_conv_stem_makes_the_grid_it_announces(size):
    config = ViTConfig(embed_dim=64, depth=2, num_heads=2, stem="conv")
    vit = VisionTransformer(config, input_size=size).eval()
    (features,) = vit(torch.randn(2, 3, size[1], size[0]))
    assert tuple(features.shape[-2:]) == config.token_grid(size) == vit.pos_grid
    assert config.token_grid(size) == (math.ceil(size[1] / 16), math.ceil(size[0] / 16))
    widths = [m.out_channels for m in vit.patch_embed.stem if isinstance(m, torch.nn.Conv2d)]
    assert widths == [8, 16, 32, 64]  # four stride-2 layers for 16 px patches, doubling to the width
    assert vit.layer_id("patch_embed.stem.0.weight") == vit.layer_id("pos_embed")  # decayed like patchify


@pytest.mark.parametrize("size", [(96, 128), (100, 70)])
def test_deeper_wider_conv_stem_keeps_the_grid(size):
    config = ViTConfig(embed_dim=64, depth=2, num_heads=2, stem="conv", patch_size=8, stem_widths=(12, 24, 48),
                       stem_depth=2)
    vit = VisionTransformer(config, input_size=size).eval()
    assert tuple(vit(torch.randn(2, 3, size[1], size[0]))[0].shape[-2:]) == config.token_grid(size)
    convs = [m for m in vit.patch_embed.stem if isinstance(m, torch.nn.Conv2d)]
    assert [(m.out_channels, m.stride[0]) for m in convs] == [(12, 2), (12, 1), (24, 2), (24, 1), (48, 2), (48, 1)]
    assert vit.patch_embed.proj.in_channels == 48 and vit.patch_embed.proj.out_channels == 64


def test_conv_stem_depth_per_level():
    config = ViTConfig(embed_dim=64, depth=1, num_heads=2, stem="conv", patch_size=8, stem_widths=(12, 24, 48),
                       stem_depth=(1, 3, 2))
    vit = VisionTransformer(config, input_size=(96, 128)).eval()
    convs = [m for m in vit.patch_embed.stem if isinstance(m, torch.nn.Conv2d)]
    assert [(m.out_channels, m.stride[0]) for m in convs] == [(12, 2), (24, 2), (24, 1), (24, 1), (48, 2), (48, 1)]
    assert tuple(vit(torch.randn(1, 3, 128, 96))[0].shape[-2:]) == (16, 12)


def test_deeper_conv_stem_survives_save_and_load(tmp_path):
    from poseforge.models import create_model, load_model

    model = create_model("vitpose-tiny", input_size=(48, 64), stem="conv", patch_size=8, embed_dim=32, depth=1,
                         num_heads=2, stem_widths=[8, 16, 24], stem_depth=[2, 1, 2]).eval()
    model.save_pretrained(tmp_path)
    loaded = load_model(tmp_path)
    assert (loaded.config.backbone.stem_widths, loaded.config.backbone.stem_depth) == ((8, 16, 24), (2, 1, 2))
    crops = torch.randint(0, 256, (2, 3, 64, 48)).float()
    with torch.no_grad():
        torch.testing.assert_close(loaded(loaded.normalize(crops)).heatmaps, model(model.normalize(crops)).heatmaps, rtol=0, atol=0)


def test_conv_stem_errors():
    with pytest.raises(PoseforgeError, match="stem"):
        ViTConfig(stem="hybrid")
    with pytest.raises(PoseforgeError, match="power-of-two"):
        ViTConfig(stem="conv", patch_size=14)
    with pytest.raises(PoseforgeError, match="stem_widths: expected 4"):
        ViTConfig(stem="conv", stem_widths=(16, 32, 64))
    with pytest.raises(PoseforgeError, match="stem_depth"):
        ViTConfig(stem="conv", stem_depth=0)
    with pytest.raises(PoseforgeError, match="stem_depth: .*4 levels"):
        ViTConfig(stem="conv", stem_depth=(2, 2, 2))
    with pytest.raises(PoseforgeError, match="stem_depth"):
        ViTConfig(stem="conv", stem_depth=(2, 0, 2, 2))


def test_out_indices_return_intermediate_blocks_described_by_feature_info():
    config = small_config(depth=3, out_indices=(0, -1))
    model = VisionTransformer(config, input_size=(48, 64)).eval()
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        first, last = model(x)
    assert [(f.channels, f.stride, f.size) for f in model.feature_info] == [(32, 16, (3, 4)), (32, 16, (3, 4))]
    assert first.shape == last.shape == (2, 32, 4, 3)
    # The last map is the normed output of the whole stack; block 0's map is the raw tokens after it.
    reference = VisionTransformer(small_config(depth=3), input_size=(48, 64)).eval()
    reference.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(last, reference(x)[0])
        tokens = model.patch_embed(x).flatten(2).transpose(1, 2) + model.pos_embed
        tokens = model.blocks[0](tokens, (4, 3))
    torch.testing.assert_close(first, tokens.transpose(1, 2).reshape(2, 32, 4, 3))
    with pytest.raises(PoseforgeError, match="out_indices"):
        small_config(depth=3, out_indices=(3,))
