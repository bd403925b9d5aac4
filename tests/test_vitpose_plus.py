"""ViTPose++: mixture-of-experts FFN variants (PS / IS / I) against per-sample references, task grouping,
knowledge tokens, the multi-task model (heads, padding, predict, save/load) and the zoo configs."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from poseforge.errors import PoseforgeError
from poseforge.models import MultiTaskTopDownConfig, TopDownEstimator, create_model, list_models, load_model, model_config
from poseforge.models.backbones.vit import ExpertSegments, ViTConfig, VisionTransformer
from poseforge.models.merge import merge_experts


def moe_config(variant: str = "ps", experts: int = 3, **kw) -> ViTConfig:
    base = dict(embed_dim=32, depth=2, num_heads=4, num_experts=experts, moe_variant=variant)
    base.update(kw)
    return ViTConfig(**base)


def perturb(module: torch.nn.Module, scale: float = 0.05) -> torch.nn.Module:
    """Random weights everywhere (experts differ from each other; BN statistics non-trivial)."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * scale)
        for name, b in module.named_buffers():
            if name.endswith("running_var"):
                b.copy_(torch.rand_like(b) + 0.5)
            elif name.endswith("running_mean"):
                b.copy_(torch.randn_like(b) * 0.1)
    return module


def reference_mlp(mlp: torch.nn.Module, variant: str, x: torch.Tensor, task: int) -> torch.Tensor:
    """One sample's FFN written out from the weights (the paper's definitions)."""
    gelu = F.gelu
    if variant == "ps":
        h = gelu(x @ mlp.fc1.weight.T + mlp.fc1.bias)
        e = mlp.experts[task]
        return torch.cat([h @ mlp.fc2.weight.T + mlp.fc2.bias, h @ e.weight.T + e.bias], dim=-1)
    if variant == "is":
        e = mlp.experts[task]
        shared = gelu(x @ mlp.fc1.weight.T + mlp.fc1.bias) @ mlp.fc2.weight.T + mlp.fc2.bias
        own = gelu(x @ e.fc1.weight.T + e.fc1.bias) @ e.fc2.weight.T + e.fc2.bias
        return shared + own
    e = mlp.experts[task]
    return gelu(x @ e.fc1.weight.T + e.fc1.bias) @ e.fc2.weight.T + e.fc2.bias


def reference_backbone(model: VisionTransformer, images: torch.Tensor, tasks: list[int]) -> torch.Tensor:
    """Each sample alone through the blocks, its FFN from :func:`reference_mlp` (a loop over samples)."""
    outs = []
    for i, t in enumerate(tasks):
        x = model.patch_embed(images[i:i + 1])
        _, c, rows, cols = x.shape
        x = x.flatten(2).transpose(1, 2) + model.pos_embed
        for block in model.blocks:
            x = x + block.attn(block.norm1(x), (rows, cols))
            x = x + reference_mlp(block.mlp, model.config.moe_variant, block.norm2(x), t)
        outs.append(model.norm(x).transpose(1, 2).reshape(1, c, rows, cols))
    return torch.cat(outs)


# ----------------------------------------------------------------------------- the FFN variants
@pytest.mark.parametrize("variant", ["ps", "is", "i"])
def test_moe_ffn_matches_the_per_sample_reference_on_a_mixed_batch(variant):
    model = perturb(VisionTransformer(moe_config(variant), input_size=(32, 48))).eval()
    images = torch.randn(5, 3, 48, 32)
    tasks = [2, 0, 1, 0, 2]
    with torch.no_grad():
        (out,) = model(images, torch.tensor(tasks))
        ref = reference_backbone(model, images, tasks)
    assert out.shape == (5, 32, 3, 2)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    # Another expert gives other features: the index really selects.
    with torch.no_grad():
        (other,) = model(images, torch.tensor([(t + 1) % 3 for t in tasks]))
    assert (other - out).abs().max() > 1e-3


def test_ps_ffn_shapes_follow_alpha_and_part_features():
    cfg = ViTConfig(embed_dim=768, num_heads=12, depth=1, num_experts=6)
    assert cfg.expert_width == 192  # alpha 0.25 of 768
    mlp = VisionTransformer(cfg, input_size=(32, 32)).blocks[0].mlp
    assert mlp.fc1.weight.shape == (3072, 768) and mlp.fc2.weight.shape == (576, 3072)
    assert len(mlp.experts) == 6 and mlp.experts[5].weight.shape == (192, 3072)
    assert ViTConfig(embed_dim=768, num_heads=12, num_experts=2, expert_ratio=0.5).expert_width == 384
    assert ViTConfig(embed_dim=384, num_heads=12, num_experts=6, part_features=96).expert_width == 96
    assert ViTConfig(embed_dim=64, num_heads=4, num_experts=2, moe_variant="is").expert_width == 64  # 0.25 x 256 hidden
    with pytest.raises(PoseforgeError, match="part_features: expected 1..767"):
        ViTConfig(embed_dim=768, num_heads=12, num_experts=2, part_features=768)
    with pytest.raises(PoseforgeError, match="unknown variant 'x'"):
        ViTConfig(num_experts=2, moe_variant="x")
    with pytest.raises(PoseforgeError, match="num_experts"):
        ViTConfig(num_experts=0)


def test_grouping_is_one_sort_and_undoes_itself():
    index = torch.tensor([3, 1, 3, 0, 1, 1])
    seg = ExpertSegments.build(index, 6, 4)
    assert seg.segments == ((0, 0, 1), (1, 1, 4), (3, 4, 6))
    x = torch.arange(6.0)[:, None] * 10
    sorted_x = seg.sort(x)
    assert sorted_x[:, 0].tolist() == [30.0, 10.0, 40.0, 50.0, 0.0, 20.0]  # stable: equal tasks keep their order
    torch.testing.assert_close(seg.unsort(sorted_x), x)
    single = ExpertSegments.build(torch.tensor([2, 2, 2]), 3, 4)
    assert single.segments == ((2, 0, 3),) and single.order is None  # one task: no permutation
    assert ExpertSegments.build(1, 5, 4).segments == ((1, 0, 5),)
    assert seg.relabel([7, 8, 9, 10]).segments == ((7, 0, 1), (8, 1, 4), (10, 4, 6))
    with pytest.raises(PoseforgeError, match=r"values must be in 0..3, got \[4, -1\]"):
        ExpertSegments.build(torch.tensor([0, 4, -1]), 3, 4)
    with pytest.raises(PoseforgeError, match="expected 3 values"):
        ExpertSegments.build(torch.tensor([0, 1]), 3, 4)
    with pytest.raises(PoseforgeError, match="integer"):
        ExpertSegments.build(torch.tensor([0.0, 1.0]), 2, 4)
    with pytest.raises(PoseforgeError, match="outside 0..3"):
        ExpertSegments.build(4, 2, 4)


def test_index_is_required_with_experts_and_ignored_without():
    moe = VisionTransformer(moe_config(), input_size=(32, 48)).eval()
    with pytest.raises(PoseforgeError, match="pass dataset_index"):
        moe(torch.randn(1, 3, 48, 32))
    plain = VisionTransformer(ViTConfig(embed_dim=32, depth=1, num_heads=4), input_size=(32, 48)).eval()
    x = torch.randn(2, 3, 48, 32)
    torch.testing.assert_close(plain(x, torch.tensor([5, 9])), plain(x))


def test_only_the_experts_of_the_batch_get_gradients():
    model = perturb(VisionTransformer(moe_config("ps"), input_size=(32, 48)))
    model(torch.randn(4, 3, 48, 32), torch.tensor([0, 2, 2, 0]))[0].square().mean().backward()
    mlp = model.blocks[0].mlp
    assert mlp.experts[0].weight.grad.abs().sum() > 0 and mlp.experts[2].weight.grad.abs().sum() > 0
    assert mlp.experts[1].weight.grad is None and mlp.fc2.weight.grad.abs().sum() > 0


def test_gradient_checkpointing_with_experts_keeps_gradients():
    torch.manual_seed(0)
    a = perturb(VisionTransformer(moe_config("is"), input_size=(32, 48)))
    b = VisionTransformer(moe_config("is", grad_checkpointing=True), input_size=(32, 48))
    b.load_state_dict(a.state_dict())
    x, idx = torch.randn(3, 3, 48, 32), torch.tensor([1, 0, 1])
    for m in (a, b):
        m(x, idx)[0].sum().backward()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        if pa.grad is not None:
            torch.testing.assert_close(pa.grad, pb.grad, msg=name)


# ----------------------------------------------------------------------------- knowledge tokens
def test_knowledge_tokens_join_attention_and_leave_the_feature_map():
    cfg = ViTConfig(embed_dim=32, depth=2, num_heads=4)
    plain = perturb(VisionTransformer(cfg, input_size=(32, 48))).eval()
    tok = VisionTransformer(cfg.replace(knowledge_tokens=2), input_size=(32, 48)).eval()
    tok.load_state_dict({**plain.state_dict(), "knowledge_token": torch.randn(1, 2, 32)})
    x = torch.randn(2, 3, 48, 32)
    with torch.no_grad():
        (out,), (ref,) = tok(x), plain(x)
    assert out.shape == ref.shape and (out - ref).abs().max() > 1e-3  # the tokens are attended to
    with torch.no_grad():
        tok.knowledge_token.zero_()
        (changed,) = tok(x)
    assert (changed - out).abs().max() > 1e-4
    wide = VisionTransformer(cfg.replace(knowledge_tokens=1, knowledge_dim=48), input_size=(32, 48))
    assert wide.knowledge_token.shape == (1, 1, 48) and wide.knowledge_proj.weight.shape == (32, 48)
    assert wide(x)[0].shape == out.shape
    assert wide.layer_id("knowledge_token") == 0 and "knowledge_token" in wide.no_weight_decay()
    with pytest.raises(PoseforgeError, match="full attention"):
        ViTConfig(knowledge_tokens=1, attention="window")


# ----------------------------------------------------------------------------- the multi-task model
def tiny_plus(**kw) -> TopDownEstimator:
    return perturb(create_model("vitpose++-tiny", input_size=(48, 64), depth=2, **kw)).eval()


def test_mixed_batches_equal_single_task_batches_and_pad_with_zeros():
    model = tiny_plus()
    assert model.config.task_names == ("coco", "wholebody", "ap10k")
    x = torch.randn(5, 3, 64, 48)
    index = torch.tensor([1, 0, 2, 0, 1])
    with torch.no_grad():
        mixed = model(x, index).heatmaps
        assert mixed.shape == (5, 133, 16, 12)
        for t, k in enumerate((17, 133, 17)):
            single = model(x, t).heatmaps
            assert single.shape == (5, k, 16, 12)
            rows = (index == t).nonzero().flatten()
            torch.testing.assert_close(mixed[rows, :k], single[rows], rtol=0, atol=1e-5)
            assert bool((mixed[rows, k:] == 0).all())  # padding beyond the task's keypoints
        torch.testing.assert_close(model(x, "ap10k").heatmaps, model(x, 2).heatmaps)
        torch.testing.assert_close(model(x).heatmaps, model(x, 0).heatmaps)  # no index: the first task
    with pytest.raises(PoseforgeError, match="unknown task 'horse'; tasks: 0=coco, 1=wholebody, 2=ap10k"):
        model(x, "horse")


def test_predict_uses_the_task_flip_pairs_and_equals_the_merged_model():
    model = tiny_plus()
    crops = (torch.rand(2, 3, 64, 48) * 255).to(torch.uint8)
    for task in ("coco", "wholebody", "ap10k"):
        got = model.predict(crops, flip_test=True, task=task)
        ref = merge_experts(model, task).eval().predict(crops, flip_test=True)
        assert got.keypoints.shape == ref.keypoints.shape
        torch.testing.assert_close(got.keypoints, ref.keypoints, rtol=0, atol=1e-4)
        torch.testing.assert_close(got.scores, ref.scores, rtol=0, atol=1e-5)
    assert model.keypoint_set_of("wholebody").name == "wholebody133" and model.task_index("wholebody") == 1
    assert model.transform(False, task="wholebody").keypoint_set.name == "wholebody133"
    assert torch.equal(model.flip_index_of(1), torch.as_tensor(model.keypoint_set_of(1).flip_index))


def test_save_and_load_round_trip(tmp_path):
    model = tiny_plus(moe_variant="is")
    model.save_pretrained(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert isinstance(loaded, TopDownEstimator) and isinstance(loaded.config, MultiTaskTopDownConfig)
    assert loaded.config == model.config and loaded.num_tasks == 3
    x, index = torch.randn(3, 3, 64, 48), torch.tensor([2, 1, 0])
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, index).heatmaps, model(x, index).heatmaps)


def test_task_overrides_resize_heads_and_experts():
    model = create_model("vitpose++-tiny", tasks=[("people", "coco17"), ("animals", "ap10k17")], head="simple",
                         input_size=(48, 64), depth=1)
    cfg = model.config
    assert cfg.task_names == ("people", "animals") and cfg.backbone.num_experts == 2 and len(cfg.heads) == 2
    assert all(h.input_upsample == 4 for h in cfg.heads) and cfg.codec["heatmap_size"] == [12, 16]
    assert model(torch.randn(1, 3, 64, 48), "animals").heatmaps.shape == (1, 17, 16, 12)


def test_multitask_config_errors_are_one_line():
    cfg = model_config("vitpose++-tiny")
    with pytest.raises(PoseforgeError, match="duplicate task name"):
        cfg.replace(tasks=(cfg.tasks[0], cfg.tasks[0], cfg.tasks[2]))
    with pytest.raises(PoseforgeError, match=r"heads\[0\]: shared by tasks with different keypoint counts \[17, 133\]"):
        cfg.replace(tasks=(cfg.tasks[0], cfg.tasks[1].replace(head=0), cfg.tasks[2]))
    with pytest.raises(PoseforgeError, match=r"expert 5 outside 0..2"):
        cfg.replace(tasks=(cfg.tasks[0].replace(expert=5), cfg.tasks[1], cfg.tasks[2]))
    with pytest.raises(PoseforgeError, match="unknown keypoint set|no keypoint set"):
        cfg.replace(tasks=(cfg.tasks[0].replace(keypoint_set="cat42"), cfg.tasks[1], cfg.tasks[2]))


# ----------------------------------------------------------------------------- zoo
@pytest.mark.parametrize("size,dim,part,decay", [("s", 384, 96, 0.8), ("b", 768, 192, 0.75), ("l", 1024, 256, 0.8),
                                                 ("h", 1280, 320, 0.8)])
def test_official_vitpose_plus_configs(size, dim, part, decay):
    cfg = model_config(f"vitpose++-{size}")
    assert f"vitpose++-{size}" in list_models("vitpose++-*")
    assert cfg.backbone.embed_dim == dim and cfg.backbone.num_experts == 6 and cfg.backbone.expert_width == part
    assert cfg.backbone.layer_decay == decay and cfg.input_size == (192, 256)
    assert [(t.name, t.keypoint_set) for t in cfg.tasks] == [
        ("coco", "coco17"), ("aic", "aic14"), ("mpii", "mpii16"), ("ap10k", "ap10k17"), ("apt36k", "ap10k17"),
        ("wholebody", "wholebody133")]
    with torch.device("meta"):
        model = create_model(f"vitpose++-{size}")
        plain = create_model(f"vitpose-{size}")
    count = lambda m: sum(p.numel() for p in m.backbone.parameters())  # noqa: E731
    # Five more expert slices of fc2 per block than a plain ViTPose of the same size.
    assert count(model) - count(plain) == cfg.backbone.depth * 5 * (4 * dim * part + part)
    assert [h.final_layer.out_channels for h in model.heads] == [17, 14, 16, 17, 17, 133]
