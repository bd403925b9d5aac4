"""Once-for-all NAS of LitePose: the supernet's subnets extracted exactly, their closed-form MACs equal to the
counter's, the published LitePose-Auto-XS inside the default space, sandwich-rule training through the
estimator's loss (shared weights, BatchNorm statistics, resumable draws), the evolutionary search (within the
budget, deterministic) and the ``poseforge nas train | search | export`` commands end to end (slow)."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from poseforge.errors import PoseforgeError
from poseforge.models import build_model, create_model, load_model, model_config
from poseforge.models.complexity import CONVENTIONS, count_macs
from poseforge.models.loading import skip_meta_init
from poseforge.models.nas import (LitePoseSupernet, SearchSpace, Subnet, SubnetSpace, extract_subnet, litepose_macs,
                                  subnet_config, subnet_macs)
from poseforge.models.nas.evolution import EvolutionSettings, evolution_search
from poseforge.models.zoo import PUBLISHED_GMACS

# a tiny supernet: 4 stages of at most 2 blocks, inputs 32 or 64, kernels 3 / 5 / 7 through OFA's transforms
TINY = dict(keypoint_set="coco17", widths=[16, 24, 32, 40], depths=[2, 2, 2, 2], stem_channels=16,
            deconv_channels=[16, 16, 16], space={"resolutions": [32, 64], "depths": [[1, 2]] * 4})


def tiny_supernet(**changes) -> LitePoseSupernet:
    torch.manual_seed(0)
    return create_model("litepose-supernet", **{**TINY, **changes})


def scramble(model: torch.nn.Module) -> torch.nn.Module:
    """Random BatchNorm statistics and affine terms and non-identity kernel transforms: extraction must copy them."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.randn(m.num_features, generator=g))
                m.bias.copy_(torch.randn(m.num_features, generator=g))
        for p in model.backbone.kernel_transforms.values():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model


def draws(space: SubnetSpace, n: int, seed: int = 0) -> list[Subnet]:
    rng = random.Random(seed)
    return [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(n)]


def test_extracted_subnets_equal_the_supernet_with_them_active(one_thread):
    supernet = scramble(tiny_supernet()).eval()
    for subnet in draws(supernet.subnets, 4):
        supernet.set_active(subnet)
        x = torch.randn(2, 3, subnet.resolution, subnet.resolution)
        plain = extract_subnet(supernet, subnet)
        assert type(plain).__name__ == "BottomUpEstimator" and plain.config.type == "bottomup"
        assert plain.input_size == supernet.input_size == (subnet.resolution,) * 2
        with torch.no_grad():
            want, got = supernet(x).tensors(), plain(x).tensors()
        assert want.keys() == got.keys()
        for name in want:
            assert torch.equal(want[name], got[name]), (subnet.key(), name)


def test_extraction_without_kernel_transforms_crops_the_centre(one_thread):
    supernet = scramble(tiny_supernet(space={**TINY["space"], "kernel_transform": False})).eval()
    assert len(supernet.backbone.kernel_transforms) == 0
    subnet = supernet.subnets.smallest()  # 3x3 kernels: the centre of the 7x7 ones
    plain = extract_subnet(supernet, subnet)
    centre = supernet.backbone.stage[1][0].depth_conv[0].weight[:, :, 2:5, 2:5]
    small = plain.backbone.stage[1][0].depth_conv[0].weight
    assert torch.equal(small, centre[:small.shape[0]])
    x = torch.randn(1, 3, subnet.resolution, subnet.resolution)
    with torch.no_grad():
        assert torch.equal(supernet.set_active(subnet)(x).heatmaps, plain(x).heatmaps)


def test_closed_form_macs_equal_the_counter_on_the_extracted_model():
    supernet = tiny_supernet()
    for subnet in draws(supernet.subnets, 1, seed=2):
        with torch.device("meta"), skip_meta_init():
            plain = build_model(subnet_config(supernet.config, subnet))
        for convention in CONVENTIONS:
            assert subnet_macs(supernet.config, subnet, convention) == \
                count_macs(plain, plain.input_size, convention=convention), (subnet.key(), convention)


def test_litepose_xs_is_a_point_of_the_default_space_at_the_published_budget():
    """LitePose-Auto-XS (zoo) is a subnet of the official supernet: same architecture, and 1.2 GMACs by the
    paper's (ptflops) count - what `nas search --macs 1.2G` budgets."""
    supernet = model_config("litepose-supernet")
    space = SubnetSpace(supernet.space, supernet.backbone, supernet.head)
    xs = model_config("litepose-xs")
    subnet = space.check({"resolution": 256, "stem_channels": 16, "widths": list(xs.backbone.widths),
                          "depths": list(xs.backbone.depths), "kernel_sizes": [7] * 4, "expand_ratios": [6.0] * 4,
                          "deconv_channels": list(xs.head.deconv_channels)})
    plain = subnet_config(supernet, subnet)
    assert plain.backbone == xs.backbone and plain.head == xs.head and plain.input_size == xs.input_size
    macs = subnet_macs(supernet, subnet, "ptflops")
    assert macs == litepose_macs(xs.backbone, xs.head, 14, xs.input_size, "ptflops")
    assert abs(macs / 1e9 - PUBLISHED_GMACS["litepose-xs"][0]) < 0.05
    assert space.largest() == Subnet(512, 24, (32, 64, 96, 160), (6, 8, 10, 10), (7,) * 4, (6.0,) * 4, (64, 48, 32))


def test_active_subnet_sets_resolution_codec_and_predictions(one_thread):
    supernet = tiny_supernet().eval()
    subnet = supernet.subnets.smallest()
    supernet.set_active(subnet)
    assert supernet.input_size == (32, 32) and supernet.codec.input_size == (32, 32)
    assert supernet.transform(False).input_size == (32, 32)
    pred = supernet.predict(torch.zeros(1, 3, 48, 40, dtype=torch.uint8), flip_test=False)
    assert pred.keypoints.shape[-2:] == (17, 2)
    supernet.set_active("largest")
    assert supernet.input_size == (64, 64) and supernet.active == supernet.subnets.largest()


def test_subnets_outside_the_space_are_one_line_errors():
    supernet = tiny_supernet()
    good = supernet.subnets.smallest().to_dict()
    with pytest.raises(PoseforgeError, match=r"resolution=48 not in \[32, 64\].*depths\[0\]=3 not in \[1, 2\]"):
        supernet.set_active({**good, "resolution": 48, "depths": [3, 1, 1, 1]})
    with pytest.raises(PoseforgeError, match="widths has 3 entries, expected 4"):
        supernet.set_active({**good, "widths": [8, 8, 8]})
    with pytest.raises(PoseforgeError, match="must be the backbone's depths"):
        create_model("litepose-supernet", **{**TINY, "space": {"resolutions": [32], "depths": [[1]] * 4}})
    with pytest.raises(PoseforgeError, match="multiples of 16"):
        SearchSpace(resolutions=(40,))


def _batch(supernet: LitePoseSupernet, n: int = 2) -> dict:
    """A training batch at the supernet's largest input: two people with random keypoints per image."""
    g = torch.Generator().manual_seed(3)
    side = supernet.config.input_size[0]
    return {"image": torch.randint(0, 255, (n, 3, side, side), dtype=torch.uint8, generator=g),
            "keypoints": torch.rand(n, 2, 17, 2, generator=g) * (side - 1),
            "visibility": torch.ones(n, 2, 17), "valid": torch.ones(n, 2, dtype=torch.bool)}


def test_sandwich_step_trains_the_shared_weights(one_thread):
    supernet = tiny_supernet().train()
    smallest = supernet.subnets.smallest()
    batch = _batch(supernet)
    bn = supernet.backbone.stage[0][0].inv[1]
    stats_before = bn.running_mean.clone()
    reference = tiny_supernet().train()  # the largest subnet alone, from the same weights
    with torch.no_grad():
        reference(reference.normalize(batch["image"]))
    outputs = supernet(supernet.normalize(batch["image"]))
    assert outputs.heatmaps.shape[-1] == 16  # the largest subnet: 64 / 4
    terms = supernet.loss(outputs.float(), batch)
    assert set(terms) == {"loss", "largest", "smallest", "random"}
    assert torch.isclose(terms["loss"], terms["largest"] + terms["smallest"] + 2 * terms["random"])
    assert int(supernet.sandwich_draws) == 1
    # only the largest subnet moved the running statistics
    assert not torch.equal(bn.running_mean, stats_before)
    assert torch.equal(bn.running_mean, reference.backbone.stage[0][0].inv[1].running_mean)
    terms["loss"].backward()
    # channels only the largest subnet uses, and the transforms only smaller kernels use, get gradients
    inv = supernet.backbone.stage[0][0].inv[0].weight
    assert inv.grad is not None and inv.grad[smallest.widths[0] * 6:].abs().sum() > 0
    transform = supernet.backbone.kernel_transforms["0_0_5to3"]
    assert transform.grad is not None and transform.grad.abs().sum() > 0
    before = {k: v.detach().clone() for k, v in supernet.named_parameters()}
    torch.optim.SGD(supernet.parameters(), lr=0.1).step()
    changed = [k for k, v in supernet.named_parameters() if not torch.equal(v, before[k])]
    assert "backbone.first.2.weight" in changed and "head.final_raw.1.conv.3.weight" in changed


def test_sandwich_draws_depend_only_on_the_seed_and_count():
    a, b = tiny_supernet(), tiny_supernet()
    first = [a.sandwich_subnets() for _ in range(3)]
    assert int(a.sandwich_draws) == 3 and "sandwich_draws" in a.state_dict()
    b.load_state_dict(a.state_dict())  # a resumed run: the count comes back with the weights
    assert b.sandwich_subnets() == a.sandwich_subnets()
    assert len({s.key() for draw in first for s in draw[1:]}) > 1  # the random ones differ between batches
    assert all(draw[0] == a.subnets.smallest() for draw in first)
    c = tiny_supernet(sampler_seed=1)
    assert [c.sandwich_subnets() for _ in range(3)] != first


def test_evolution_respects_the_budget_and_is_deterministic():
    supernet = tiny_supernet()
    space = supernet.subnets
    budget = subnet_macs(supernet.config, space.largest()) * 0.4
    cost = lambda s: subnet_macs(supernet.config, s)
    seen = []

    def fitness(s: Subnet) -> float:  # bigger is better, with a deterministic wobble
        seen.append(s)
        return sum(s.widths) + 0.5 * sum(s.depths) + (hash(s.key()) % 7) / 100 + s.resolution / 8

    settings = EvolutionSettings(population=8, generations=3, seed=5)
    first = evolution_search(space, fitness, cost, budget, settings)
    assert all(cost(s) <= budget for s in seen)
    assert first["best"]["cost"] <= budget and len(first["history"]) == 4
    assert [h["best"] for h in first["history"]] == sorted(h["best"] for h in first["history"])  # elitist
    again = evolution_search(space, fitness, cost, budget, settings)
    assert again["best"] == first["best"] and [h["best"] for h in again["history"]] == \
        [h["best"] for h in first["history"]]
    other = evolution_search(space, fitness, cost, budget, EvolutionSettings(population=8, generations=3, seed=6))
    assert other["tries"] != first["tries"] or other["best"] != first["best"]
    with pytest.raises(PoseforgeError, match="smallest subnet already costs"):
        evolution_search(space, fitness, cost, cost(space.smallest()) - 1, settings)


def test_parse_macs():
    from poseforge.train.nas import parse_macs

    assert parse_macs("1.2G") == 1.2e9 and parse_macs("850M") == 850e6 and parse_macs("1.2e9") == 1.2e9
    with pytest.raises(PoseforgeError, match="--macs 1.2X"):
        parse_macs("1.2X")


def _tiny_run_config(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(json.dumps({
        "name": "nas-tiny",
        "model": {"name": "litepose-supernet", "overrides": {**TINY, "space": {"resolutions": [32], "depths": [[1, 2]] * 4}}},
        "data": {"batch_size": 2, "val_batch_size": 4, "num_workers": 0,
                 "synthetic": {"train_images": 4, "val_images": 2, "image_size": [32, 32], "people": [1, 2],
                               "val_people": [1, 2], "clutter": False}},
        "schedule": {"epochs": 1, "steps_per_epoch": 1, "warmup_iters": 1}, "optim": {"lr": 1e-3},
        "val_interval": 0, "log_interval": 1, "threads": 1}))
    return path


@pytest.mark.slow
def test_cli_train_search_export_end_to_end(tmp_path, capsys, one_thread):
    from poseforge.cli import main

    config = _tiny_run_config(tmp_path)
    run, search, out = tmp_path / "run", tmp_path / "search.json", tmp_path / "model"
    assert main(["nas", "train", "--config", str(config), "--out", str(run)]) == 0
    assert main(["nas", "train", "--config", str(config), "--out", str(run)]) == 2  # an existing run: --resume
    assert "--resume" in capsys.readouterr().err
    args = ["nas", "search", "--supernet", str(run), "--macs", "20M", "--out", str(search), "--population", "3",
            "--generations", "1", "--calib-images", "2", "--seed", "3"]
    assert main(args) == 0
    record = json.loads(search.read_text())
    assert record["best"]["macs"]["ptflops"] <= 20e6 and record["budget"] == {"macs": 20e6, "convention": "ptflops"}
    assert main(args) == 2 and "already exists" in capsys.readouterr().err  # no --force
    assert main(args[:-2] + ["--seed", "3", "--force", "--out", str(tmp_path / "again.json")]) == 0
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["best"] == record["best"] and again["history"] == [
        {**h, "seconds": g["seconds"]} for h, g in zip(record["history"], again["history"])]
    assert main(["nas", "export", "--supernet", str(run), "--subnet", str(search), "--out", str(out),
                 "--calib-images", "2", "--finetune-epochs", "1"]) == 0
    model = load_model(out)
    subnet = Subnet.from_dict(record["best"]["subnet"])
    assert model.config.name == "litepose-nas" and model.input_size == (subnet.resolution,) * 2
    assert count_macs(model, model.input_size, convention="ptflops") == record["best"]["macs"]["ptflops"]
    pred = model.predict(np.zeros((1, 3, 40, 48), np.uint8), flip_test=False)
    assert pred.keypoints.shape[-2:] == (17, 2)
    assert json.loads((out / "nas.json").read_text())["finetune"]["steps"] == 1
    assert main(["nas", "export", "--supernet", str(run), "--subnet", str(search), "--out", str(out)]) == 2
    assert "already holds a model" in capsys.readouterr().err


def test_supernet_training_resumes_exactly(tmp_path, one_thread):
    """Two steps in one go, or one step then --resume: the same weights and the same subnet draws."""
    from poseforge.train import Trainer, load_config

    config = load_config(_tiny_run_config(tmp_path), ["schedule.steps_per_epoch=2"])
    whole = Trainer(config, tmp_path / "whole", progress=False)
    whole.fit()
    Trainer(config.replace(max_steps=1), tmp_path / "split", progress=False).fit()
    split = Trainer(config, tmp_path / "split", resume=True, progress=False)
    split.fit()
    a, b = whole.estimator.state_dict(), split.estimator.state_dict()
    assert int(a["sandwich_draws"]) == 2
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_litepose_recipe_trains_its_supernet():
    from poseforge.train.config import ModelSection, TrainConfig
    from poseforge.train.nas import supernet_train_config

    recipe = TrainConfig(model=ModelSection(name="litepose-xs", overrides={"keypoint_set": "coco17"}), compile="step")
    config = supernet_train_config(recipe)
    assert config.model.name == "litepose-supernet" and config.model.overrides == {"keypoint_set": "coco17"}
    assert config.compile == "model" and config.data == recipe.data and config.optim == recipe.optim
    assert supernet_train_config(config) == config
    with pytest.raises(PoseforgeError, match="not a bottom-up model"):
        supernet_train_config(TrainConfig(model=ModelSection(name="vitpose-tiny")))


def test_cli_errors_are_one_line(tmp_path, capsys):
    from poseforge.cli import main

    assert main(["nas", "search", "--supernet", str(tmp_path), "--macs", "1.2G", "--out", str(tmp_path / "s.json")]) == 2
    assert main(["nas", "search", "--supernet", str(tmp_path), "--macs", "lots", "--out", str(tmp_path / "s.json")]) == 2
    (tmp_path / "bad.json").write_text("{}")
    assert main(["nas", "export", "--supernet", str(tmp_path), "--subnet", str(tmp_path / "bad.json"),
                 "--out", str(tmp_path / "m")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and "not a training run folder" in lines[0] and "--macs lots" in lines[1]
    assert "neither a 'poseforge nas search' result nor a subnet" in lines[2]


def test_a_model_that_finds_nobody_scores_zero(one_thread):
    """An untrained bottom-up model (or a subnet before recalibration) may predict no person in any image:
    that is AP 0, not an error (a search scores many such subnets)."""
    from poseforge.data.evalsets import synthetic_eval_set
    from poseforge.evaluation.evaluator import evaluate

    model = build_model(model_config("litepose-xs", input_size=(64, 64), keypoint_set="coco17")).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    data = synthetic_eval_set(num_images=2, image_size=(64, 64), people=(1, 2), keypoint_set="coco17", clutter=False)
    assert evaluate(model, data, flip_test=False).stats["AP"] == 0.0


def test_recalibration_measures_the_subnets_own_statistics(one_thread):
    """After recalibration every BatchNorm holds the statistics of its input on the calibration images (one batch:
    exactly its batch mean), not the largest subnet's the supernet tracked."""
    from poseforge.train.nas import recalibrate_batchnorm

    supernet = scramble(tiny_supernet()).eval()
    plain = extract_subnet(supernet, supernet.subnets.smallest())
    bn = plain.backbone.stage[2][0].depth_conv[1]
    seen = []
    handle = bn.register_forward_hook(lambda m, inputs, out: seen.append(inputs[0].detach().mean((0, 2, 3))))
    images = torch.randint(0, 255, (4, 3, 64, 64), dtype=torch.uint8)  # resized to the subnet's 32x32
    recalibrate_batchnorm(plain, images, batch_size=4)
    handle.remove()
    assert not plain.training and bn.momentum == 0.1 and len(seen) == 1
    torch.testing.assert_close(bn.running_mean, seen[0], rtol=1e-5, atol=1e-6)
