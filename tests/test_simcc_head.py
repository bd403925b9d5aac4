"""The SimCC head on a ViT: shapes, codec kept in step, save/load, flip test, a trainable chain."""
from __future__ import annotations

import json

import pytest
import torch

from poseforge.errors import PoseforgeError
from poseforge.models import create_model, load_model
from poseforge.models.heads import SimCCHeadConfig
from poseforge.train import Trainer
from poseforge.models.losses import KLDiscretLoss
from poseforge.outputs import SimCCLogits

SMALL = dict(input_size=(48, 64), stem="conv", patch_size=8, embed_dim=32, depth=2, num_heads=2)


def simcc_model(**overrides):
    torch.manual_seed(0)
    return create_model("vitpose-tiny", head="simcc", **{**SMALL, **overrides})


def test_outputs_one_logit_per_bin_and_the_codec_follows_the_head():
    model = simcc_model(split_ratio=1.5, hidden_dim=16)
    out = model(torch.randn(3, 3, 64, 48))
    x_logits, y_logits = out.simcc_x, out.simcc_y
    assert isinstance(out, SimCCLogits) and x_logits.shape == (3, 17, 72) and y_logits.shape == (3, 17, 96)
    codec = model.codec
    assert codec.name == "simcc" and codec.split_ratio == 1.5 and codec.num_bins == (72, 96)
    assert codec.input_size == (48, 64) and codec.normalize is False
    # A heatmap model switched to SimCC by name: RTMPose's sigma scaled to the input (half of 192x256 here).
    assert create_model("vitpose-tiny", head="simcc", input_size=(96, 128)).config.codec["sigma"] == [2.45, 2.83]


def test_deconvolutions_feed_finer_maps_and_hidden_dim_zero_classifies_the_map():
    model = simcc_model(deconv_channels=(16,), deconv_kernel_sizes=(4,), hidden_dim=0)
    assert model.head.cls_x.in_features == (6 * 2) * (8 * 2)  # 48x64 input, stride 8 tokens, one 2x deconv
    out = model(torch.randn(2, 3, 64, 48))
    x_logits, y_logits = out.simcc_x, out.simcc_y
    assert x_logits.shape == (2, 17, 96) and y_logits.shape == (2, 17, 128)


@pytest.mark.parametrize("bad, message", [
    (dict(deconv_channels=(8,), deconv_kernel_sizes=()), "deconv_kernel_sizes"),
    (dict(deconv_channels=(8,), deconv_kernel_sizes=(5,)), "unsupported kernel"),
    (dict(final_kernel_size=2), "odd kernel"),
    (dict(hidden_dim=-1), "hidden_dim"),
    (dict(split_ratio=0.0), "split_ratio"),
])
def test_bad_head_settings_are_one_line_errors(bad, message):
    with pytest.raises(PoseforgeError, match=message):
        SimCCHeadConfig(**bad)


def test_save_and_load_give_the_same_predictions(tmp_path):
    model = simcc_model().eval()
    model.save_pretrained(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["head"]["type"] == "simcc"
    crops = torch.randint(0, 256, (2, 3, 64, 48), dtype=torch.uint8)
    a, b = model.predict(crops), loaded.predict(crops)
    assert torch.equal(a.keypoints, b.keypoints) and torch.equal(a.scores, b.scores)


def test_flip_test_averages_the_mirrored_pass():
    model = simcc_model().eval()
    crops = torch.randint(0, 256, (2, 3, 64, 48), dtype=torch.uint8)
    with torch.no_grad():
        x = model.normalize(crops)
        plain, mirrored = model(x), model(x.flip(-1))
    xs, ys = plain.simcc_x, plain.simcc_y
    fx, fy = mirrored.simcc_x[:, model.flip_index].flip(-1), mirrored.simcc_y[:, model.flip_index]
    expected = model.codec.decode(((xs + fx) / 2, (ys + fy) / 2))
    got = model.predict(crops, flip_test=True)
    assert torch.equal(got.keypoints[:, 0], expected[0]) and torch.allclose(got.scores[:, 0], expected[1])
    assert not torch.equal(got.keypoints, model.predict(crops, flip_test=False).keypoints)


def test_the_head_learns_keypoints_through_the_codec_and_kl_loss():
    """Overfit 8 crops: if x and y, bins or the label/decode scale disagreed, the error would stay large."""
    torch.manual_seed(0)
    model = simcc_model(hidden_dim=64)
    crops = torch.randn(8, 3, 64, 48)
    keypoints = torch.rand(8, 17, 2) * torch.tensor([47.0, 63.0])
    targets = model.codec.encode(keypoints, torch.ones(8, 17))
    loss_fn = KLDiscretLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(150):
        loss = loss_fn(model(crops), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        decoded, _ = model.codec.decode(model(crops))
    error = (decoded - keypoints).norm(dim=-1)
    assert error.median() < 1.0, f"median error {error.median():.2f} px after overfitting"


def test_the_engine_trains_a_simcc_model_with_the_kl_loss(tmp_path):
    from tests.test_train_engine import tiny_config, train_losses

    overrides = "model.overrides={input_size: [48, 64], stem: conv, patch_size: 8, embed_dim: 32, depth: 2, num_heads: 2, head: simcc}"
    trainer = Trainer(tiny_config(overrides), tmp_path / "run", progress=False)
    assert type(trainer.estimator.criterion).__name__ == "KLDiscretLoss"
    trainer.fit()
    losses = train_losses(tmp_path / "run")
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    model = load_model(tmp_path / "run" / "best")
    assert model.config.head.type == "simcc" and model.config.codec["name"] == "simcc"


def test_multi_task_models_refuse_a_simcc_head_in_one_line():
    with pytest.raises(PoseforgeError, match="multi-task models take heatmap heads, got simcc"):
        create_model("vitpose++-tiny", head="simcc")


def test_switching_back_to_a_heatmap_head_restores_heatmap_codecs():
    from poseforge.models.zoo import apply_overrides, model_config

    simcc = model_config("vitpose-tiny", head="simcc", input_size=(48, 64))
    back = apply_overrides(simcc, {"head": "classic"})
    assert back.codec == {"name": "udp", "sigma": 2.0, "input_size": [48, 64], "heatmap_size": [12, 16]}


def test_the_head_returns_its_keypoint_maps_with_the_logits():
    model = simcc_model(deconv_channels=(16,), deconv_kernel_sizes=(4,), hidden_dim=16)
    crops = torch.randn(2, 3, 64, 48)
    for mode in (True, False):  # one output type in training and in inference
        out = model.train(mode)(crops)
        assert isinstance(out, SimCCLogits)
        assert out.keypoint_maps.shape == (2, 17, 16, 12)  # 48x64 input, stride-8 tokens, one 2x deconv: stride 4
    with torch.no_grad():
        torch.testing.assert_close(model.head.cls_x(model.head.mlp(out.keypoint_maps.flatten(2))), out.simcc_x)
    # The flip test averages the logits; maps of the mirrored pass are not carried over.
    assert model.codec.flip_back(out, model.flip_index).keypoint_maps is None


def keypoint_map_targets(keypoints, weights):
    return {"keypoints": keypoints, "target_weights": weights}


class _NoLoss(torch.nn.Module):
    def forward(self, outputs, targets):
        return outputs.simcc_x.new_zeros(())


def test_the_keypoint_map_loss_is_lowest_for_a_map_peaked_at_the_keypoint():
    """Maps 12x16 for a 48x64 input (stride 4): a peak at the keypoint's cell scores lower than one a
    cell off, which scores lower than a flat map; unweighted keypoints count for nothing."""
    from poseforge.models.losses import KeypointMapAuxLoss

    loss_fn = KeypointMapAuxLoss(_NoLoss(), (48, 64), weight=1.0, sigma=4.0)
    keypoints = torch.tensor([[[21.5, 41.5], [1.5, 1.5]]])  # cell centers (5, 10) and (0, 0)
    weights = torch.tensor([[1.0, 0.0]])
    ys, xs = torch.meshgrid(torch.arange(16.0), torch.arange(12.0), indexing="ij")

    def peaked(cx, cy):  # the log of a Gaussian of sigma 1 cell
        return (-((xs - cx) ** 2 + (ys - cy) ** 2) / 2).expand(1, 2, 16, 12)

    dummy = torch.zeros(1, 2, 4)
    at, off, flat = (float(loss_fn(SimCCLogits(dummy, dummy, maps), keypoint_map_targets(keypoints, weights)))
                     for maps in (peaked(5, 10), peaked(6, 10), torch.zeros(1, 2, 16, 12)))
    # The exact target (sigma 4 px = 1 cell at the keypoint) gives KL 0; a cell off, KL 1/2 nat.
    assert at < 1e-5 and off == pytest.approx(0.5, abs=0.02) and flat > 2.0
    # The second keypoint's weight is 0: its map does not matter.
    moved = peaked(5, 10).clone()
    moved[:, 1] = peaked(11, 15)[:, 1]
    assert float(loss_fn(SimCCLogits(dummy, dummy, moved), keypoint_map_targets(keypoints, weights))) == pytest.approx(at)


def test_the_keypoint_map_loss_refuses_outputs_without_maps_in_one_line():
    from poseforge.models.losses import KeypointMapAuxLoss

    loss_fn = KeypointMapAuxLoss(_NoLoss(), (48, 64), weight=1.0, sigma=4.0)
    with pytest.raises(PoseforgeError, match="expected SimCCLogits with keypoint_maps"):
        loss_fn(SimCCLogits(torch.zeros(1, 2, 4), torch.zeros(1, 2, 4)), keypoint_map_targets(torch.zeros(1, 2, 2), torch.ones(1, 2)))
    with pytest.raises(PoseforgeError, match="weight and sigma must be > 0"):
        KeypointMapAuxLoss(_NoLoss(), (48, 64), weight=0.0, sigma=4.0)


def test_the_engine_supervises_the_keypoint_maps_and_logs_the_term(tmp_path):
    from tests.test_train_engine import tiny_config

    overrides = ("model.overrides={input_size: [48, 64], stem: conv, patch_size: 8, embed_dim: 32, depth: 2, num_heads: 2, "
                 "head: simcc}")
    config = tiny_config(overrides, "loss.keypoint_map_weight=0.5", "loss.keypoint_map_sigma=6")
    trainer = Trainer(config, tmp_path / "run", progress=False)
    criterion = trainer.estimator.criterion
    assert type(criterion).__name__ == "KeypointMapAuxLoss" and criterion.sigma == 6.0
    trainer.fit()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert train and all(0 < r["loss_keypoint_map"] < r["loss"] for r in train)
    model = load_model(tmp_path / "run" / "best")  # saved as a plain SimCC model
    assert model.config.head.type == "simcc" and isinstance(model(torch.randn(1, 3, 64, 48)), SimCCLogits)


def test_the_keypoint_map_loss_needs_a_head_with_maps(tmp_path):
    from tests.test_train_engine import tiny_config

    with pytest.raises(PoseforgeError, match="needs a head with keypoint maps"):
        Trainer(tiny_config("loss.keypoint_map_weight=0.5"), tmp_path / "run", progress=False)
