"""MAE pretraining (Sapiens): masking, the subset path of the ViT, the masked-only norm-pix loss, training and
resuming through the one Trainer, and the encoder's transfer into task models."""
from __future__ import annotations

import json

import pytest
import torch

from poseforge.errors import PoseforgeError
from poseforge.models import create_model, model_config
from poseforge.models.config import config_from_dict
from poseforge.models.estimators.mae import (MAEConfig, MAEOutput, norm_pix_targets, patchify, random_masking,
                                             unpatchify, visible_count)
from poseforge.train import Trainer, load_config
from poseforge.train.checkpoint import load_checkpoint
from poseforge.train.init import init_backbone

# A narrow MAE at 64x80 (4x5 = 20 tokens of 16 px, 5 seen at ratio 0.75) with a 1-block decoder.
SMALL = dict(input_size=(64, 80), embed_dim=48, depth=2, num_heads=3, decoder_dim=32, decoder_depth=1, decoder_heads=4)
# The tiny preset cut down to seconds: 40 cached 64x80 images, 4 steps of 8 per epoch.
TINY = ["model.overrides={input_size: [64, 80], embed_dim: 48, depth: 2, num_heads: 3, decoder_dim: 32, "
        "decoder_depth: 1, decoder_heads: 4, drop_path_rate: 0.1}",
        "data.synthetic.train_images=40", "schedule.steps_per_epoch=4", "data.synthetic.image_size=[64,80]", "data.batch_size=8",
        "data.num_workers=0", "schedule.epochs=4", "schedule.warmup_iters=2", "log_interval=1", "threads=1",
        "optim.lr=3e-3"]


def small_mae(**changes):
    torch.manual_seed(0)
    return create_model("sapiens-tiny-mae", **{**SMALL, **changes})


def train_losses(run_dir) -> dict[int, float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if r["kind"] == "train"}


def test_masking_keeps_the_right_count_of_unique_tokens_per_sample():
    noise = torch.rand(6, 20, generator=torch.Generator().manual_seed(1))
    for ratio in (0.75, 0.9, 0.95):
        keep, mask, restore = random_masking(noise, ratio)
        n = visible_count(20, ratio)
        assert keep.shape == (6, n) and n == int(20 * (1 - ratio))
        assert all(len(set(row.tolist())) == n for row in keep)  # unique per sample
        assert torch.equal(mask.sum(1), torch.full((6,), 20.0 - n))
        assert torch.all(mask.gather(1, keep) == 0)  # the kept tokens are the visible ones
        assert torch.equal(restore.argsort(1)[:, :n], keep)  # restore undoes the shuffle
    assert not torch.equal(*random_masking(noise, 0.75)[0][:2])  # a different mask per sample


def test_encoder_subset_path_matches_the_normal_forward():
    model = small_mae(fixed_pos_embed=False).eval()
    vit = model.backbone
    x = torch.randn(2, 3, 80, 64)
    feature = vit(x)[0]  # [B, C, rows, cols]
    tokens = feature.flatten(2).transpose(1, 2)
    assert torch.allclose(vit.forward_visible(x), tokens, atol=1e-5)
    keep = torch.stack([torch.randperm(20)[:7] for _ in range(2)])
    subset = vit.forward_visible(x, keep)
    assert subset.shape == (2, 7, 48)
    assert torch.allclose(vit.forward_visible(x, torch.arange(20).expand(2, 20)), tokens, atol=1e-5)
    vit.set_grad_checkpointing(True)
    vit.train()
    x.requires_grad_(True)
    out = vit.forward_visible(x, keep)
    out.sum().backward()
    assert x.grad is not None and torch.allclose(out, subset, atol=1e-5)  # checkpointing: same numbers


def test_patchify_and_norm_pix_targets_match_a_per_patch_loop():
    images = torch.randn(2, 3, 32, 48)
    patches = patchify(images, 16)
    assert patches.shape == (2, 6, 768)
    assert torch.equal(unpatchify(patches, 16, (2, 3)), images)
    targets = norm_pix_targets(patches)
    for b in range(2):
        for r in range(2):
            for c in range(3):
                block = images[b, :, 16 * r:16 * r + 16, 16 * c:16 * c + 16].permute(1, 2, 0).reshape(-1)  # (y, x, c)
                expect = (block - block.mean()) / (block.var() + 1e-6).sqrt()
                assert torch.allclose(targets[b, 3 * r + c], expect, atol=1e-5)


def test_the_loss_counts_hidden_patches_only():
    model = small_mae()
    images = torch.randint(0, 256, (3, 3, 80, 64), dtype=torch.uint8)
    out = model(model.normalize(images), noise=torch.rand(3, 20, generator=torch.Generator().manual_seed(0)))
    assert isinstance(out, MAEOutput) and out.pred.shape == (3, 20, 768)
    loss = model.loss(out, {"image": images})["loss"]
    visible = (out.mask == 0)[..., None]
    changed = MAEOutput(torch.where(visible, torch.randn_like(out.pred) * 100, out.pred), out.mask)
    assert torch.equal(model.loss(changed, {"image": images})["loss"], loss)
    hidden = MAEOutput(torch.where(visible, out.pred, out.pred + 1.0), out.mask)
    assert model.loss(hidden, {"image": images})["loss"] != loss
    target = model.targets(model.normalize(images))
    manual = ((out.pred - target) ** 2).mean(-1)[out.mask.bool()].mean()
    assert torch.allclose(loss, manual, atol=1e-6)


def test_config_round_trip_and_one_line_errors():
    model = small_mae(mask_ratio=0.9)
    config = model.config
    assert isinstance(config, MAEConfig) and config_from_dict(json.loads(json.dumps(config.to_dict()))) == config
    for ratio in (0.0, 1.0, 1.5, -0.2):
        with pytest.raises(PoseforgeError, match="mask_ratio") as error:
            small_mae(mask_ratio=ratio)
        assert "\n" not in str(error.value)
    with pytest.raises(PoseforgeError, match="leaves 0 of 20"):
        small_mae(mask_ratio=0.96)
    with pytest.raises(PoseforgeError, match="patch_padding"):
        small_mae(patch_padding=2)
    with pytest.raises(PoseforgeError, match="multiples of patch_size"):
        small_mae(input_size=(64, 72))


def test_parameter_groups_follow_mae():
    model = small_mae()
    groups = model.param_groups(1e-3, 0.05, 1.0)
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    assert id(model.decoder.mask_token) in no_decay and id(model.decoder.embed.bias) in no_decay
    assert id(model.decoder.embed.weight) not in no_decay
    trained = {id(p) for g in groups for p in g["params"]}
    assert id(model.backbone.pos_embed) not in trained  # MAE's fixed sine-cosine positions
    assert not any(k.startswith("decoder_pos_embed") for k in model.state_dict())  # rebuilt from the config


def test_pretraining_through_the_trainer_lowers_the_loss_and_resumes_exactly(tmp_path):
    full = tmp_path / "full"
    summary = Trainer(load_config("sapiens-tiny-mae-synth", TINY), full, progress=False).fit()
    losses = train_losses(full)
    assert summary["steps"] == 16 and len(losses) == 16
    first, last = sum(losses[s] for s in (1, 2, 3)) / 3, sum(losses[s] for s in (14, 15, 16)) / 3
    assert last < 0.9 * first, losses
    part = tmp_path / "part"
    Trainer(load_config("sapiens-tiny-mae-synth", TINY + ["max_steps=6"]), part, progress=False).fit()
    Trainer(load_config("sapiens-tiny-mae-synth", TINY), part, resume=True, progress=False).fit()
    assert train_losses(part) == losses  # masks and drop path come from the restored RNG: bitwise equal
    a, b = load_checkpoint(full / "last.pt")["model"], load_checkpoint(part / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)

    # the encoder starts a task model with the same ViT widths: equal encoder outputs at the same grid
    task = create_model("vitpose-tiny", input_size=(64, 80), embed_dim=48, depth=2, num_heads=3, patch_padding=0)
    init_backbone(task, str(full))
    mae = __import__("poseforge").load_model(full)
    x = torch.randn(2, 3, 80, 64)
    assert torch.allclose(task.backbone.eval()(x)[0], mae.backbone(x)[0], atol=1e-6)
    # ... and at another input size, the position embeddings resized to its grid (trainer option)
    config = load_config("smoke", ["model.overrides={input_size: [96, 128], embed_dim: 48, depth: 2, num_heads: 3, "
                                   "patch_padding: 0, stem: patch, head: simple}", f"model.backbone_init={full}",
                                   "data.synthetic.train_images=8", "data.synthetic.image_size=[96,128]",
                                   "data.batch_size=8", "val_interval=0", "schedule.epochs=1", "max_steps=1"])
    trainer = Trainer(config, tmp_path / "finetune", progress=False)
    assert trainer.estimator.backbone.pos_embed.shape == (1, 48, 48)
    blocks = {k: v for k, v in trainer.estimator.backbone.state_dict().items() if k != "pos_embed"}
    assert all(torch.equal(v, mae.backbone.state_dict()[k]) for k, v in blocks.items())


def test_backbone_init_errors_name_the_file_and_key(tmp_path):
    model = small_mae()
    model.save_pretrained(tmp_path / "mae")
    wider = create_model("vitpose-tiny", input_size=(64, 80), embed_dim=96, depth=2, num_heads=3, patch_padding=0)
    with pytest.raises(PoseforgeError, match=r"mae/model\.safetensors: backbone key '[^']+' .*(shape|resized)") as error:
        init_backbone(wider, str(tmp_path / "mae"))
    assert "\n" not in str(error.value)
    deeper = create_model("vitpose-tiny", input_size=(64, 80), embed_dim=48, depth=3, num_heads=3, patch_padding=0)
    with pytest.raises(PoseforgeError, match="backbone key 'blocks.2.* is missing"):
        init_backbone(deeper, str(tmp_path / "mae"))
    with pytest.raises(PoseforgeError, match="model.backbone_init: give it or model.init"):
        load_config("smoke", ["model.init=a", "model.backbone_init=b"])


def test_reconstruction_keeps_visible_patches():
    model = small_mae()
    images = torch.randint(0, 256, (2, 3, 80, 64), dtype=torch.uint8)
    parts = model.reconstruct(images, seed=3)
    visible = (parts["mask"] == 0)
    seen = patchify(parts["reconstruction"].float(), 16)[visible]
    assert torch.allclose(seen, patchify(images.float(), 16)[visible], atol=1.0)  # (normalize + back: rounding)
    assert torch.equal(parts["mask"], model.reconstruct(images, seed=3)["mask"])  # seeded


def test_pretrain_command_lists_presets_and_refuses_non_mae_configs(tmp_path, capsys):
    from poseforge.cli import main

    assert main(["pretrain", "--list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("sapiens-tiny-mae-synth", "sapiens-0.3b-mae", "sapiens-2b-mae"))
    assert main(["pretrain", "--config", "smoke", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not an MAE model" in err
    assert main(["pretrain", "--config", "sapiens-tiny-mae-synth", "--set", "val_interval=1"]) == 2
    assert "no validation metric" in capsys.readouterr().err
    recipe = load_config("sapiens-0.3b-mae")  # the official numbers
    assert (recipe.optim.lr, recipe.optim.betas, recipe.optim.weight_decay, recipe.data.batch_size) == \
        (1.5e-4 * 4096 / 256, (0.9, 0.95), 0.05, 512)
    assert recipe.schedule.epochs == 1600 and recipe.schedule.warmup_iters == 40 * recipe.schedule.steps_per_epoch
    config = model_config("sapiens-0.3b-mae")
    assert (config.backbone.embed_dim, config.backbone.depth, config.backbone.num_heads, config.mask_ratio,
            config.decoder_dim, config.decoder_depth, config.decoder_heads, config.input_size) == \
        (1024, 24, 16, 0.75, 512, 8, 16, (1024, 1024))
