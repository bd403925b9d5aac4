"""The ``associative-embedding`` codec (LitePose / HigherHRNet bottom-up): targets, the tag loss, grouping exact
on ground-truth maps, flip test, equality with the numpy runtime grouping and with mmpose's decode."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from poseforge.codecs import AssociativeEmbedding, create_codec, list_codecs
from poseforge.errors import PoseforgeError
from poseforge.keypoints import get_keypoint_set
from poseforge.models.losses import AssociativeEmbeddingLoss, LossConfig, build_loss, tag_pull_push
from poseforge.outputs import HeatmapsTags
from poseforge.runtime.decode import group_associative_embedding, grouping_options

INPUT = (128, 96)  # (w, h): 32 x 24 maps at 1/4, 64 x 48 at 1/2
K = 17
COCO_FLIP = get_keypoint_set("coco17").flip_index
COCO_ORDER = [0, 1, 2, 3, 4, 5, 6, 11, 12, 7, 8, 9, 10, 13, 14, 15, 16]  # mmpose's / LitePose's grouping order


def _outputs(heatmaps, tags, heatmaps_hr=None):
    return HeatmapsTags(heatmaps, tags, heatmaps_hr=heatmaps_hr)


def _decode(codec: AssociativeEmbedding, outputs: HeatmapsTags, path: str = "host"):
    """The codec's decode on CPU outputs (``host``: the numpy grouping) or its torch steps for accelerators
    (``device``), run here on the CPU."""
    if path == "host":
        return codec.decode_predictions(outputs)
    return codec._decode_on_device(*codec._maps(outputs))


def _people(rng: np.random.Generator, images: int, people: int, *, stride: int = 4, visible: float = 0.8,
            first_visible: list[int] | None = None) -> dict[str, torch.Tensor]:
    """Random people whose same-type keypoints are >= 3 cells apart at ``stride`` (so each is its own peak)."""
    w, h = INPUT
    kp = np.zeros((images, people, K, 2))
    for b in range(images):
        for n in range(people):
            for k in range(K):
                for _ in range(1000):
                    p = rng.uniform([2, 2], [w - 3, h - 3])
                    cell = np.floor((p + 0.5) / stride)
                    others = np.floor((kp[b, :n, k] + 0.5) / stride)
                    if n == 0 or np.abs(others - cell).max(-1).min() >= 3:
                        break
                else:
                    raise AssertionError("no room for that many people")
                kp[b, n, k] = p
    vis = rng.random((images, people, K)) < visible
    vis[..., 0] |= ~vis.any(-1)  # everyone has a keypoint
    if first_visible is not None:
        vis[..., first_visible] = True
    return {"keypoints": torch.tensor(kp, dtype=torch.float32), "visibility": torch.tensor(vis, dtype=torch.float32),
            "valid": torch.ones(images, people, dtype=torch.bool)}


def _paint_tags(targets: dict[str, torch.Tensor], person_tags: torch.Tensor, size: tuple[int, int],
                background: float = 1000.0) -> torch.Tensor:
    """Tag maps [B, K, H, W]: each labeled keypoint's 3x3 cells hold its person's tag (a network's tags are
    smooth around a person), ``background`` elsewhere."""
    w, h = size
    b, _, k = targets["keypoint_indices"].shape
    tags = torch.full((b, k, h, w), background)
    for bi, ni, ki in targets["keypoint_weights"].nonzero().tolist():
        y, x = divmod(int(targets["keypoint_indices"][bi, ni, ki]), w)
        tags[bi, ki, max(0, y - 1):y + 2, max(0, x - 1):x + 2] = person_tags[bi, ni]
    return tags


def _gt_people(batch: dict[str, torch.Tensor], stride: int) -> list[list[tuple]]:
    """Per image, the sorted people as tuples of (keypoint, x, y) at their cell centres (input pixels)."""
    cells = torch.floor((batch["keypoints"] + 0.5) / stride) * stride + (stride - 1) / 2
    out = []
    for b in range(len(cells)):
        people = [tuple((k, *cells[b, n, k].tolist()) for k in range(K) if batch["visibility"][b, n, k] > 0)
                  for n in range(cells.shape[1]) if batch["valid"][b, n]]
        out.append(sorted(people))
    return out


def _decoded_people(pred) -> list[list[tuple]]:
    out = []
    for b in range(len(pred)):
        people = [tuple((k, *pred.keypoints[b, n, k].tolist()) for k in range(K) if pred.scores[b, n, k] > 0)
                  for n in range(pred.num_instances) if pred.valid[b, n]]
        out.append(sorted(people))
    return out


# ------------------------------------------------------------------------------------------------ codec basics
def test_registered_and_rebuilt_from_its_config():
    codec = create_codec("associative-embedding", input_size=(512, 512), hr_heatmaps=True, joint_order=COCO_ORDER)
    assert isinstance(codec, AssociativeEmbedding) and "associative-embedding" in list_codecs()
    assert codec.heatmap_size == (128, 128) and codec.hr_size == (256, 256)
    config = codec.config()
    assert json.loads(json.dumps(config)) == config and create_codec(**config) == codec
    for bad in ({"max_people": 0}, {"nms_kernel": 4}, {"sigma": -1}, {"tag_threshold": 0},
                {"joint_order": [0, 0, 1]}, {"unknown": 1}):
        with pytest.raises(PoseforgeError) as err:
            create_codec("associative-embedding", input_size=(64, 64), **bad)
        assert "\n" not in str(err.value)


def test_runtime_grouping_options_follow_the_codec():
    """An exported model's codec entry may name only a few settings: the rest are the torch codec's defaults."""
    config = AssociativeEmbedding(INPUT).config()
    options = grouping_options({"name": "associative-embedding", "input_size": list(INPUT)})
    assert options == {key: config[key] for key in options}
    assert grouping_options({**config, "nms_kernel": 3})["nms_kernel"] == 3 and grouping_options({"name": "udp"}) == {}


def test_encode_targets_equal_a_per_person_reference():
    codec = AssociativeEmbedding(INPUT, sigma=1.5, hr_heatmaps=True)
    batch = _people(np.random.default_rng(0), 2, 3)
    batch["keypoints"][0, 1, 2] = torch.tensor([-10.0, 5.0])  # off the input: no target, no tag
    batch["keypoints"][1, 0, 3] = float("nan")
    batch["valid"][1, 2] = False  # a padding person draws nothing
    t = codec.encode(batch)
    for suffix, size in (("", codec.heatmap_size), ("_hr", codec.hr_size)):
        w, h = size
        stride = INPUT[0] / w
        ref = np.zeros((2, K, h, w), dtype=np.float32)
        ys, xs = np.mgrid[0:h, 0:w]
        points = batch["keypoints"].numpy()
        for b, n, k in np.ndindex(2, 3, K):
            p = points[b, n, k]
            if not (batch["valid"][b, n] and batch["visibility"][b, n, k] > 0 and np.isfinite(p).all()):
                continue
            cx, cy = np.floor((p + 0.5) / stride)
            if not (0 <= cx < w and 0 <= cy < h):
                continue
            window = (np.abs(xs - cx) <= 4) & (np.abs(ys - cy) <= 4)  # int(3 sigma)
            ref[b, k] = np.maximum(ref[b, k], np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * 1.5 ** 2)) * window)
        np.testing.assert_allclose(t["heatmaps" + suffix].numpy(), ref, atol=1e-6, rtol=0)
    weights = t["keypoint_weights"]
    assert weights[0, 1, 2] == 0 and weights[1, 0, 3] == 0 and weights[1, 2].sum() == 0
    cells = torch.floor((batch["keypoints"] + 0.5) / 4)
    use = weights > 0
    assert torch.equal(t["keypoint_indices"][use], (cells[..., 1] * 32 + cells[..., 0])[use].long())
    assert t["keypoint_indices"].dtype == torch.int64 and "heatmap_mask" not in t


def test_encode_mask_marks_ignored_cells_at_each_resolution():
    codec = AssociativeEmbedding(INPUT, hr_heatmaps=True)
    batch = _people(np.random.default_rng(1), 1, 2)
    mask = torch.ones(1, INPUT[1], INPUT[0], dtype=torch.bool)
    mask[0, 40:80, 16:64] = False  # a crowd region, in input pixels
    t = codec.encode({**batch, "mask": mask})
    expected = torch.ones(1, 24, 32)
    expected[0, 10:20, 4:16] = 0
    assert torch.equal(t["heatmap_mask"], expected)
    assert torch.equal(t["heatmap_mask_hr"], F.interpolate(expected[None], scale_factor=2.0)[0])


def test_encode_and_decode_reject_bad_input():
    codec = AssociativeEmbedding(INPUT)
    with pytest.raises(PoseforgeError, match="visibility"):
        codec.encode({"keypoints": torch.zeros(1, 2, K, 2)})
    with pytest.raises(PoseforgeError, match=r"\[B, N, K, 2\]"):
        codec.encode({"keypoints": torch.zeros(2, K, 2), "visibility": torch.ones(2, K)})
    with pytest.raises(PoseforgeError, match="heatmaps must be"):
        codec.decode_predictions(HeatmapsTags(torch.zeros(1, K, 10, 10), torch.zeros(1, K, 10, 10)))
    with pytest.raises(PoseforgeError, match="tags must be"):
        codec.decode_predictions(HeatmapsTags(torch.zeros(1, K, 24, 32), torch.zeros(1, K + 1, 24, 32)))
    with pytest.raises(PoseforgeError, match="heatmaps_hr"):  # the codec expects 1/2-scale maps
        AssociativeEmbedding(INPUT, hr_heatmaps=True).decode_predictions(
            HeatmapsTags(torch.zeros(1, K, 24, 32), torch.zeros(1, K, 24, 32)))


# ------------------------------------------------------------------------------------------------ grouping
@pytest.mark.parametrize("path", ["host", "device"])
@pytest.mark.parametrize("people", [1, 2, 3, 4, 5, 6])
def test_grouping_is_exact_on_ground_truth_maps(people, path):
    """Perfect heatmaps + tags (each person its own tag value) decode to every person's keypoints at their cells,
    grouped right, for any visibility pattern (people starting at any joint) and either joint order."""
    rng = np.random.default_rng(people)
    for seed in range(3):
        batch = _people(rng, 2, people, visible=0.5 + 0.15 * seed)
        order = COCO_ORDER if seed % 2 else None
        codec = AssociativeEmbedding(INPUT, adjust=False, refine=False, joint_order=order)
        t = codec.encode(batch)
        person_tags = torch.tensor(rng.permutation(people)[None].repeat(2, 0) * 2.0 - 3.0)
        pred = _decode(codec, HeatmapsTags(t["heatmaps"], _paint_tags(t, person_tags, codec.heatmap_size)), path)
        assert _decoded_people(pred) == _gt_people(batch, 4), (people, seed)
        assert torch.all(pred.scores[pred.scores > 0] == 1.0)
        # quantization only: every keypoint within half a cell of its label
        found = pred.scores > 0
        assert (pred.instance_scores.diff(dim=1)[pred.valid[:, 1:]] <= 0).all()  # best first
        # with the quarter-pixel adjustment: the same people, each keypoint moved 0 or a quarter cell per axis
        adjusted = AssociativeEmbedding(INPUT, refine=False, joint_order=order)
        pred_adj = _decode(adjusted, HeatmapsTags(t["heatmaps"], _paint_tags(t, person_tags, codec.heatmap_size)), path)
        shift = (pred_adj.keypoints - pred.keypoints)[found].abs()
        assert torch.equal(pred_adj.scores, pred.scores) and torch.all((shift == 0) | (shift == 1.0))
        gt = batch["keypoints"][0]
        for n in range(pred.num_instances):  # each decoded person is one labeled person, to half a cell
            if pred.valid[0, n]:
                ks = found[0, n]
                err = (pred.keypoints[0, n, ks][None] - gt[:, ks]).abs().amax((1, 2))
                assert err.min() <= 2.0


def test_grouping_at_half_scale_with_hr_heatmaps():
    """With 1/2-scale heatmaps the 1/4-scale maps are upsampled and averaged in: keypoints at the 1/2-scale cells."""
    rng = np.random.default_rng(7)
    codec = AssociativeEmbedding(INPUT, hr_heatmaps=True, adjust=False, refine=False)
    for people in (2, 5):
        batch = _people(rng, 2, people, visible=0.7)  # 3 cells apart at 1/4: tag patches do not touch
        t = codec.encode(batch)
        tags = _paint_tags(t, torch.arange(people, dtype=torch.float32).repeat(2, 1) * 3, codec.heatmap_size)
        pred = codec.decode_predictions(_outputs(t["heatmaps"], tags, t["heatmaps_hr"]))
        assert _decoded_people(pred) == _gt_people(batch, 2)


def test_refine_fills_a_weak_keypoint_from_the_mean_tag():
    codec = AssociativeEmbedding(INPUT, adjust=False)
    batch = _people(np.random.default_rng(3), 1, 3, visible=1.0)
    batch["visibility"][0, 1, 9] = 0  # person 1's left wrist is too weak to detect ...
    t = codec.encode(batch)
    tags = _paint_tags(t, torch.tensor([[0.0, 2.0, 4.0]]), codec.heatmap_size)
    cell = torch.floor((batch["keypoints"][0, 1, 9] + 0.5) / 4).long()
    heat = t["heatmaps"].clone()
    heat[0, 9, cell[1], cell[0]] = 0.05  # ... a 0.05 peak with the person's tag
    tags[0, 9, cell[1], cell[0]] = 2.0
    pred = codec.decode_predictions(HeatmapsTags(heat, tags))
    n = int(((pred.keypoints[0, :, 0] - (torch.floor((batch["keypoints"][0, 1, 0] + 0.5) / 4) * 4 + 1.5)).abs().sum(-1)
             == 0).nonzero()[0])
    assert pred.scores[0, n, 9] == pytest.approx(0.05)
    assert torch.equal(pred.keypoints[0, n, 9], cell.float() * 4 + 1.5)
    assert pred.instance_scores[0, n] == pytest.approx(16 / 17)  # the person's score counts grouped keypoints only


def _noisy_maps(rng: np.random.Generator, codec: AssociativeEmbedding, images: int, people: int, dims: int = 1,
                first_visible: list[int] | None = None, noise: float = 0.12):
    """Network-like maps: labeled people's Gaussians (random heights), noise peaks up to ``noise`` (above the 0.1
    detection threshold: stray candidates), tags near each person's value."""
    batch = _people(rng, images, people, visible=0.7, first_visible=first_visible)
    t = codec.encode(batch)
    w, h = codec.heatmap_size
    height = torch.tensor(rng.uniform(0.3, 1.0, (images, people, K)), dtype=torch.float32)
    heat = torch.zeros(images, K, h, w)
    for n in range(people):  # each person's Gaussians at their own heights
        one = codec.encode({k: v[:, n:n + 1] for k, v in batch.items()})["heatmaps"]
        heat = torch.maximum(heat, one * height[:, n, :, None, None])
    heat = heat + torch.tensor(rng.uniform(0, noise, heat.shape), dtype=torch.float32)
    tags = []
    for _ in range(dims):
        values = torch.tensor(rng.permutation(people * 3)[:people] * 1.7, dtype=torch.float32).repeat(images, 1)
        painted = _paint_tags(t, values, codec.heatmap_size, background=0.0)
        tags.append(painted + torch.tensor(rng.normal(0, 0.15, painted.shape), dtype=torch.float32))
    return heat, torch.cat(tags, 1), t


@pytest.mark.parametrize("hr", [False, True])
def test_decode_equals_the_numpy_runtime_grouping(hr):
    """The codec on CPU (the numpy grouping), its torch steps for accelerators (batched candidates, adjustment,
    filling) and the runtime's ``group_associative_embedding`` agree on noisy maps."""
    rng = np.random.default_rng(11)
    cases = [(3, 1, True), (6, 2, True)] if hr else [(1, 1, True), (3, 1, True), (6, 2, True), (4, 1, False)]
    for seed, (people, dims, adjust) in enumerate(cases):
        codec = AssociativeEmbedding(INPUT, hr_heatmaps=hr, joint_order=COCO_ORDER if seed % 2 else None, adjust=adjust)
        heat, tags, _ = _noisy_maps(rng, codec, 2, people, dims)
        hr_maps = F.interpolate(heat, scale_factor=2.0, mode="bilinear") if hr else None
        outputs = _outputs(heat, tags, hr_maps)
        maps, tag_maps = codec._maps(outputs)  # what is grouped (1/2-scale averaged maps with hr)
        stride = 2 if hr else 4
        for pred in (_decode(codec, outputs, "host"), _decode(codec, outputs, "device")):
            for b in range(2):
                kp, scores, person = group_associative_embedding(maps[b].numpy(), tag_maps[b].numpy(),
                                                                 **grouping_options(codec.config()))
                valid = pred.valid[b].numpy()
                assert valid.sum() == len(kp) > 0
                np.testing.assert_allclose((pred.keypoints[b][valid].numpy() + 0.5) / stride - 0.5, kp, atol=1e-5)
                np.testing.assert_allclose(pred.scores[b][valid].numpy(), scores, atol=1e-6)
                np.testing.assert_allclose(pred.instance_scores[b][valid].numpy(), person, atol=1e-6)


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_filling_search_is_exact(dims):
    """The missing-keypoint search that scans only the blocks its bounds cannot rule out finds the first minimal
    cell of ``round(|tag - centre|) * 100 - heat`` over the whole map, as the exhaustive scan (numpy and the torch
    one of the accelerator path): coarse values make many exact ties, a 13 x 11 map ends in a short block,
    non-finite maps fall back."""
    import poseforge.codecs.associative_embedding as ae
    from poseforge.runtime import grouping

    rng = np.random.default_rng(dims)
    for trial in range(12):
        k, hw = 5, (143 if trial % 2 else 24 * 32)
        heat = rng.choice([0.0, 0.25, 0.5, 0.75, 1.0], (k, hw)).astype(np.float32)
        tags = (rng.integers(-6, 7, (dims, k, hw)) * 0.5).astype(np.float32)  # distances land on .5: half to even
        if trial % 3 == 0:  # smooth maps, as a network's
            heat = rng.uniform(0, 1, (k, hw)).astype(np.float32) ** 4
            tags = np.cumsum(rng.normal(0, 0.05, (dims, k, hw)), -1).astype(np.float32)
        if trial == 11:
            heat[2, 7] = np.nan
            tags[0, 1, 3] = np.inf
        joint = rng.integers(0, k, 40)
        centre = (rng.integers(-8, 9, (40, dims)) * 0.25).astype(np.float32)
        expected = grouping._fill_dense(heat, tags, joint, centre)
        bounds = grouping.block_bounds(heat[joint], tags[:, joint])
        assert np.array_equal(grouping._fill_bounded(heat, tags, joint, centre, bounds), expected), trial
        assert np.array_equal(grouping.fill_missing(heat, tags, joint, centre), expected), trial
        got = ae._fill_cells(torch.from_numpy(heat)[None], torch.from_numpy(tags)[None], torch.zeros(40, dtype=torch.long),
                             torch.from_numpy(joint), torch.from_numpy(centre))
        assert np.array_equal(got.numpy(), expected), trial
        if trial < 11:  # the codec's bounds (torch reductions of all maps) are numpy's
            torch_bounds = ae._block_bounds(torch.from_numpy(heat)[None], torch.from_numpy(tags)[None])
            assert all(np.array_equal(a[0].numpy(), b) for a, b in zip(torch_bounds, grouping.block_bounds(heat, tags)))


def test_filling_search_keeps_ties_across_rounds():
    """A minimal cost found in the first round and an equal one at an earlier cell whose block bound equals it
    (scanned only because bounds equal to the best cost are scanned too): the earlier cell wins."""
    from poseforge.runtime import grouping

    bs = grouping.FILL_BLOCK_CELLS
    heat = np.zeros((1, 64 * bs), np.float32)
    tags = np.full((1, 1, 64 * bs), 10.0, np.float32)  # far from the centre 0: cost 1000
    for b in [5, *range(40, 47)]:  # eight blocks bounded by -1 (a hot far cell and a cold near one): round one
        heat[0, b * bs], tags[0, 0, b * bs + 1] = 1.0, 0.0
    heat[0, 5 * bs + 3], tags[0, 0, 5 * bs + 3] = 0.5, 0.0  # cost -0.5, found in round one
    heat[0, 7], tags[0, 0, 7] = 0.5, 0.0  # cost -0.5 too, earlier; its block's bound is -0.5: round two
    joint, centre = np.zeros(1, np.int64), np.zeros((1, 1), np.float32)
    assert grouping._fill_dense(heat, tags, joint, centre).tolist() == [7]
    assert grouping._fill_bounded(heat, tags, joint, centre, grouping.block_bounds(heat, tags)).tolist() == [7]


def test_half_scale_aggregation_of_the_runtime_equals_the_codec():
    from poseforge.runtime.grouping import aggregate_half_scale

    g = torch.Generator().manual_seed(0)
    heat, tags, hr = torch.rand(1, K, 24, 32, generator=g), torch.randn(1, 2 * K, 24, 32, generator=g), \
        torch.rand(1, K, 48, 64, generator=g)
    maps, tag_maps = AssociativeEmbedding(INPUT, hr_heatmaps=True)._maps(_outputs(heat, tags, hr))
    got_maps, got_tags = aggregate_half_scale(heat[0].numpy(), tags[0].numpy(), hr[0].numpy())
    assert got_maps.dtype == got_tags.dtype == np.float32
    np.testing.assert_allclose(got_maps, maps[0].numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(got_tags, tag_maps[0].numpy(), rtol=0, atol=1e-5)


def test_grouping_options_reject_bad_codec_settings():
    base = AssociativeEmbedding(INPUT).config()
    for key, value in (("nms_kernel", 4), ("nms_kernel", "5"), ("tag_threshold", 0), ("detection_threshold", "x"),
                       ("max_people", 0), ("joint_order", [0, 0]), ("joint_order", 5), ("adjust", "yes"),
                       ("detection_threshold", float("nan"))):
        with pytest.raises(PoseforgeError, match=f"^codec.{key}: expected") as err:
            grouping_options({**base, key: value})
        assert "\n" not in str(err.value)
    options = grouping_options({"name": "associative-embedding", "nms_kernel": None, "joint_order": COCO_ORDER})
    assert options["nms_kernel"] == 5 and options["joint_order"] == COCO_ORDER


@pytest.mark.parametrize("passing", [0.01, 0.5])  # few cells above the threshold (tested alone) or many (dense)
def test_peaks_equal_max_pool_nms_and_topk(passing):
    g = torch.Generator().manual_seed(int(passing * 100))
    heat = torch.rand(2, K, 24, 32, generator=g) * (torch.rand(2, K, 24, 32, generator=g) < passing)
    heat[0, 3] = 0.5  # a plateau: every cell is its window's maximum
    from poseforge.runtime.grouping import find_peaks

    codec = AssociativeEmbedding(INPUT, nms_kernel=5)
    peaks = heat * (F.max_pool2d(heat, 5, 1, 2) == heat)
    ref_values, ref_index = peaks.reshape(2, K, -1).topk(30, dim=-1)
    used = ref_values > 0.1
    unique = used & (ref_values != 0.5)  # (equal values may come in another order)
    found = [codec._peaks(heat, 30)]
    found.append([torch.from_numpy(np.stack(v)) for v in zip(*(find_peaks(heat[b].numpy(), 30, 0.1, 5) for b in range(2)))])
    for values, index in found:
        assert torch.equal(values[used], ref_values[used]) and torch.equal((values > 0.1), used)
        assert torch.equal(index[unique], ref_index[unique])


def test_match_tags_breaks_rounded_cost_ties_towards_joining():
    """Tags 0 (a new person) and 2 against people at 2 and 4: ``round(d) * 100`` costs 2 + 2 either way; the
    keypoint with tag 2 must join the person at 2 (the references' solver can leave it out)."""
    from poseforge.runtime.decode import match_tags

    values = np.array([[0.9, 0.8], [0.9, 0.7]], dtype=np.float32)
    tags = np.array([[[2.0], [4.0]], [[0.0], [2.0]]], dtype=np.float32)
    member = match_tags(values, tags)
    assert member.tolist() == [[0, 1], [1, -1], [-1, 0]]


# ------------------------------------------------------------------------------------------------ flip test
def test_flip_back_is_an_involution_and_aligns_mirrored_targets():
    codec = AssociativeEmbedding(INPUT, hr_heatmaps=True)
    g = torch.Generator().manual_seed(0)
    out = _outputs(torch.rand(2, K, 24, 32, generator=g), torch.rand(2, 2 * K, 24, 32, generator=g),
                   torch.rand(2, K, 48, 64, generator=g))
    twice = codec.flip_back(codec.flip_back(out, COCO_FLIP), COCO_FLIP)
    for name, value in out.tensors().items():
        assert torch.equal(getattr(twice, name), value), name
    once = codec.flip_back(out, COCO_FLIP)  # tag dimension l of keypoint k is channel l * K + k
    assert torch.equal(once.tags[:, K + 1], out.tags[:, K + 2].flip(-1))
    # the targets of a mirrored image, flipped back, are the targets of the image
    batch = _people(np.random.default_rng(5), 2, 3)
    mirrored = dict(batch, keypoints=batch["keypoints"][:, :, COCO_FLIP] * torch.tensor([-1.0, 1.0])
                    + torch.tensor([INPUT[0] - 1.0, 0.0]), visibility=batch["visibility"][:, :, COCO_FLIP])
    t, tm = codec.encode(batch), codec.encode(mirrored)
    back = codec.flip_back(_outputs(tm["heatmaps"], torch.zeros(2, K, 24, 32), tm["heatmaps_hr"]), COCO_FLIP)
    torch.testing.assert_close(back.heatmaps, t["heatmaps"])
    torch.testing.assert_close(back.heatmaps_hr, t["heatmaps_hr"])


def test_flip_merge_concatenates_tags_and_groups_alike():
    codec = AssociativeEmbedding(INPUT, refine=False)
    batch = _people(np.random.default_rng(9), 1, 4)
    t = codec.encode(batch)
    tags = _paint_tags(t, torch.tensor([[0.0, 2.0, 4.0, 6.0]]), codec.heatmap_size)
    plain = HeatmapsTags(t["heatmaps"], tags)
    flipped = HeatmapsTags(t["heatmaps"].flip(-1)[:, COCO_FLIP], tags.flip(-1)[:, COCO_FLIP] * 0.5 + 7)
    merged = codec.merge_flip(plain, codec.flip_back(flipped, COCO_FLIP))
    assert merged.tags.shape[1] == 2 * K and torch.equal(merged.heatmaps, t["heatmaps"])
    assert _decoded_people(codec.decode_predictions(merged)) == _decoded_people(codec.decode_predictions(plain))


def test_bottomup_estimator_trains_and_predicts_with_the_codec():
    """The protocol end to end: the stub bottom-up model with this codec (loss, backward, flip-test predict)."""
    from poseforge.models import build_model
    from tests import protocol_stubs

    config = dataclasses.replace(protocol_stubs.bottomup_config(), flip_test=True,
                                 codec={"name": "associative-embedding", "input_size": list(protocol_stubs.INPUT)})
    model = build_model(config)
    batch = _people(np.random.default_rng(2), 2, 3)
    batch["keypoints"] = batch["keypoints"] * torch.tensor(protocol_stubs.INPUT) / torch.tensor(INPUT)
    images = torch.randint(0, 256, (2, 3, protocol_stubs.INPUT[1], protocol_stubs.INPUT[0]), dtype=torch.uint8)
    losses = model.loss(model(model.normalize(images)), batch)
    assert set(losses) == {"loss", "heatmaps", "pull", "push"} and losses["loss"].isfinite()
    losses["loss"].backward()
    pred = model.eval().predict(images)
    assert pred.keypoints.shape[0] == 2 and pred.keypoints.shape[2:] == (K, 2)


# ------------------------------------------------------------------------------------------------ loss
def _reference_pull_push(tags, indices, weights):
    """HigherHRNet's per-image, per-person ``singleTagLoss`` ('exp'), averaged over the batch."""
    b, n, k = indices.shape
    dims = tags.shape[1] // k
    flat = tags.reshape(b, dims, k, -1)
    pulls, pushes = [], []
    for i in range(b):
        means, pull = [], 0.0
        for p in range(n):
            picked = [flat[i, :, j, indices[i, p, j]] for j in range(k) if weights[i, p, j] > 0]
            if not picked:
                continue
            picked = torch.stack(picked)  # [J, L]
            means.append(picked.mean(0))
            pull = pull + ((picked - means[-1]) ** 2).mean()
        if not means:
            pulls.append(torch.tensor(0.0))
            pushes.append(torch.tensor(0.0))
            continue
        pulls.append(pull / len(means))
        if len(means) < 2:
            pushes.append(torch.tensor(0.0))
            continue
        m = torch.stack(means)
        push = torch.exp(-((m[:, None] - m[None]) ** 2).sum(-1)).sum() - len(means)
        pushes.append(push / (len(means) * (len(means) - 1)) * 0.5)
    return torch.stack(pulls).mean(), torch.stack(pushes).mean()


def test_pull_and_push_equal_a_per_person_computation():
    g = torch.Generator().manual_seed(0)
    for dims, n in ((1, 5), (2, 3), (1, 1)):
        tags = torch.randn(3, dims * K, 24, 32, generator=g)
        indices = torch.randint(0, 24 * 32, (3, n, K), generator=g)
        weights = (torch.rand(3, n, K, generator=g) > 0.4).float()
        weights[0] = 0  # an image without people
        weights[1, 0] = 0  # a padding person
        got = tag_pull_push(tags, indices, weights)
        ref = _reference_pull_push(tags, indices, weights)
        torch.testing.assert_close(torch.stack(got), torch.stack(ref), rtol=1e-5, atol=1e-7)


def test_loss_is_zero_for_perfect_outputs_and_grows_with_violations():
    codec = AssociativeEmbedding(INPUT, hr_heatmaps=True)
    batch = _people(np.random.default_rng(4), 2, 3)
    t = codec.encode(batch)
    loss = build_loss("associative-embedding", LossConfig(pull_weight=1.0, push_weight=1.0))
    assert isinstance(loss, AssociativeEmbeddingLoss)

    def total(tags, heat=t["heatmaps"]):
        return float(loss(_outputs(heat, tags, t["heatmaps_hr"]), t))

    far = torch.tensor([[0.0, 10.0, 20.0]]).repeat(2, 1)
    perfect = _paint_tags(t, far, codec.heatmap_size)
    assert total(perfect) < 1e-12 and set(loss.last_parts) == {"heatmaps", "heatmaps_hr", "pull", "push"}
    noisy = perfect + 0.3 * torch.randn(perfect.shape, generator=torch.Generator().manual_seed(1))
    close = _paint_tags(t, torch.tensor([[0.0, 0.5, 20.0]]).repeat(2, 1), codec.heatmap_size)
    closer = _paint_tags(t, torch.tensor([[0.0, 0.1, 20.0]]).repeat(2, 1), codec.heatmap_size)
    assert 0 < total(close) < total(closer) and total(noisy) > 0.01
    assert total(perfect, t["heatmaps"] + 0.1) == pytest.approx(0.01, rel=1e-4)
    # ignored (masked) cells do not count
    masked = codec.encode({**batch, "mask": torch.zeros(2, INPUT[1], INPUT[0])})
    assert float(loss(_outputs(t["heatmaps"] + 1, perfect, t["heatmaps_hr"] + 1), masked)) < 1e-12
    # gradients reach the tags
    tags = noisy.clone().requires_grad_()
    loss(_outputs(t["heatmaps"], tags, t["heatmaps_hr"]), t).backward()
    assert tags.grad.abs().sum() > 0
    with pytest.raises(PoseforgeError, match="heatmaps_hr"):
        loss(HeatmapsTags(t["heatmaps"], perfect), t)


def test_default_loss_weights_are_litepose():
    loss = build_loss("associative-embedding")
    assert (loss.pull_weight, loss.push_weight, loss.loss_weight) == (1e-3, 1e-3, 1.0)


# ------------------------------------------------------------------------------------------------ mmpose
ORACLE = r'''
import sys
sys.path.insert(0, sys.argv[3])
import mm_oracle_shim  # noqa: F401
import numpy as np, torch
from mmpose.codecs import AssociativeEmbedding
data = np.load(sys.argv[1])
order = [int(i) for i in data["order"]]
out = {}
for case in [str(c) for c in data["cases"]]:
    heat, tags = torch.from_numpy(data[case + "_heat"]), torch.from_numpy(data[case + "_tags"])
    h, w = heat.shape[-2:]
    codec = AssociativeEmbedding(input_size=(w, h), heatmap_size=(w, h), sigma=2, decode_topk=30,
                                 decode_max_instances=30, decode_keypoint_order=order, decode_center_shift=0.5)
    kps, scores, inst = codec.batch_decode(heat, tags)
    for b in range(len(kps)):
        out[f"{case}_{b}_kp"], out[f"{case}_{b}_score"], out[f"{case}_{b}_inst"] = kps[b], scores[b], inst[b]
np.savez(sys.argv[2], **out)
'''


def test_decode_equals_mmpose(shared_dir, tmp_path):
    """mmpose 1.3.2's ``AssociativeEmbedding.batch_decode`` (Munkres) on the same noisy maps: the same people,
    scores and keypoints (mmpose adds its centre shift of 0.5 to grouped keypoints only)."""
    env = os.environ.get("POSEFORGE_ORACLE_PYTHON")
    python = Path(env) if env else shared_dir.parent / "oracle-venv" / "bin" / "python"
    if not python.exists() or not (shared_dir / "oracle" / "mm_oracle_shim.py").exists():
        pytest.skip(f"mmpose oracle not found at {python} (see shared/oracle/README.md; set POSEFORGE_ORACLE_PYTHON)")
    rng = np.random.default_rng(21)
    codec = AssociativeEmbedding(INPUT, joint_order=COCO_ORDER)
    cases, data = [], {"order": np.array(COCO_ORDER)}
    for i, (people, dims) in enumerate([(1, 1), (4, 1), (6, 1), (5, 2), (7, 1)]):
        # everyone shows the first joint of the order and no noise passes the threshold: every later candidate
        # has its person, so mmpose's rounded cost has no tie (see match_tags) and its Munkres choice is ours
        heat, tags, _ = _noisy_maps(rng, codec, 2, people, dims, first_visible=[COCO_ORDER[0]], noise=0.09)
        cases.append(f"c{i}")
        data[f"c{i}_heat"], data[f"c{i}_tags"] = heat.numpy(), tags.numpy()
    data["cases"] = np.array(cases)
    np.savez(tmp_path / "in.npz", **data)
    proc = subprocess.run([str(python), "-c", ORACLE, str(tmp_path / "in.npz"), str(tmp_path / "out.npz"),
                           str(shared_dir / "oracle")], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ref = np.load(tmp_path / "out.npz")
    grouped_only = AssociativeEmbedding(INPUT, joint_order=COCO_ORDER, refine=False)
    for case in cases:
        outputs = HeatmapsTags(torch.from_numpy(data[case + "_heat"]), torch.from_numpy(data[case + "_tags"]))
        pred, grouped = codec.decode_predictions(outputs), grouped_only.decode_predictions(outputs)
        for b in range(2):
            inst = ref[f"{case}_{b}_inst"]
            order = np.argsort(-inst, kind="stable")  # mmpose lists people as formed; poseforge best first
            valid = pred.valid[b].numpy()
            assert valid.sum() == len(inst), case
            np.testing.assert_allclose(pred.instance_scores[b][valid].numpy(), inst[order], atol=1e-6)
            np.testing.assert_allclose(pred.scores[b][valid].numpy(), ref[f"{case}_{b}_score"][order], atol=1e-6)
            mine = (pred.keypoints[b][valid].numpy() + 0.5) / 4 - 0.5  # map pixels
            shift = np.where((grouped.scores[b][valid].numpy() > 0)[..., None], 0.5, 0.0)
            np.testing.assert_allclose(mine + shift, ref[f"{case}_{b}_kp"][order], atol=1e-4)
