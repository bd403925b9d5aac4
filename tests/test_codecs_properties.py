"""Property tests (hypothesis) for the codecs: keypoints at borders, outside the crop and invisible;
all-zero, flat, negative and spiky outputs; batch of 1 and a single keypoint."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from poseforge.codecs import Codec, SimCC, create_codec

INPUT = (192, 256)
CODECS: dict[str, Codec] = {
    "msra": create_codec("msra", input_size=INPUT, heatmap_size=(48, 64), sigma=2.0),
    "dark": create_codec("dark", input_size=INPUT, heatmap_size=(48, 64), sigma=2.0),
    "udp": create_codec("udp", input_size=INPUT, heatmap_size=(48, 64), sigma=2.0),
    "simcc": create_codec("simcc", input_size=INPUT, sigma=(4.9, 5.66), split_ratio=2.0, normalize=False),
}
PROPERTY = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _coordinate(limit: int) -> st.SearchStrategy[float]:
    """Anywhere from far outside to inside the crop, with extra weight on the exact borders."""
    borders = [0.0, limit - 1.0, -0.5, limit - 0.5, -1.0, float(limit), -30.0, limit + 29.0]
    return st.one_of(st.sampled_from(borders),
                     st.floats(-40.0, limit + 40.0, allow_nan=False, width=32),
                     st.floats(-1e4, 1e4, allow_nan=False, width=32))


@st.composite
def keypoint_batches(draw) -> tuple[torch.Tensor, torch.Tensor]:
    b, k = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    xs = draw(st.lists(_coordinate(INPUT[0]), min_size=b * k, max_size=b * k))
    ys = draw(st.lists(_coordinate(INPUT[1]), min_size=b * k, max_size=b * k))
    vis = draw(st.lists(st.sampled_from([0.0, 1.0, 2.0]), min_size=b * k, max_size=b * k))
    keypoints = torch.tensor(list(zip(xs, ys)), dtype=torch.float32).reshape(b, k, 2)
    return keypoints, torch.tensor(vis).reshape(b, k)


def _planes(encoded: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    return [encoded["heatmaps"]] if "heatmaps" in encoded else [encoded["x_labels"], encoded["y_labels"]]


@PROPERTY
@given(name=st.sampled_from(sorted(CODECS)), batch=keypoint_batches())
def test_encode_targets_and_weights(name, batch):
    codec, (keypoints, visible) = CODECS[name], batch
    encoded = codec.encode(keypoints, visible)
    weights = encoded["target_weights"]
    assert weights.shape == visible.shape and weights.dtype == torch.float32
    assert set(weights.unique().tolist()) <= {0.0, 1.0}
    assert (weights[visible == 0] == 0).all()
    w, h = INPUT
    inside = (keypoints[..., 0] >= 0) & (keypoints[..., 0] <= w - 1) & (keypoints[..., 1] >= 0) & (keypoints[..., 1] <= h - 1)
    assert (weights[inside & (visible > 0)] == 1).all()
    far = (keypoints.abs() > 2000).any(-1)
    assert (weights[far] == 0).all()
    for plane in _planes(encoded):
        assert plane.shape[:2] == visible.shape and plane.dtype == torch.float32
        assert torch.isfinite(plane).all() and plane.min() >= 0 and plane.max() <= 1
        drawn = plane.flatten(2).amax(-1) > 0
        assert torch.equal(drawn, weights > 0)  # a target exactly where the weight is set


@st.composite
def output_maps(draw) -> torch.Tensor:
    """Head outputs [B,K,64,48]: zero, flat, negative, random, single spikes."""
    b, k = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2 ** 16)))
    maps = []
    for _ in range(b * k):
        kind = draw(st.sampled_from(["zero", "flat", "negative", "random", "spike", "low"]))
        if kind == "zero":
            m = torch.zeros(64, 48)
        elif kind == "flat":
            m = torch.full((64, 48), draw(st.floats(1e-6, 10.0)))
        elif kind == "negative":
            m = -torch.rand(64, 48, generator=gen) - 1e-3
        elif kind == "random":
            m = torch.randn(64, 48, generator=gen)
        else:
            m = torch.zeros(64, 48) if kind == "spike" else torch.rand(64, 48, generator=gen) * 1e-3
            m[draw(st.integers(0, 63)), draw(st.integers(0, 47))] = draw(st.floats(1e-3, 5.0))
        maps.append(m)
    return torch.stack(maps).reshape(b, k, 64, 48)


@PROPERTY
@given(name=st.sampled_from(["msra", "dark", "udp"]), maps=output_maps())
def test_heatmap_decode_is_finite_and_scores_are_maxima(name, maps):
    codec = CODECS[name]
    keypoints, scores = codec.decode(maps)
    assert keypoints.shape == maps.shape[:2] + (2,) and torch.isfinite(keypoints).all()
    peak = maps.flatten(2).amax(-1)
    assert torch.equal(scores, peak)
    no_max = peak <= 0
    assert torch.equal(keypoints[no_max], -torch.tensor(codec.scale).expand(int(no_max.sum()), 2))
    # each positive keypoint stays within reach of its argmax for well-formed (spike/flat) maps
    index = maps.flatten(2).argmax(-1)
    start = torch.stack((index % 48, index // 48), -1).float() * torch.tensor(codec.scale)
    spiky = ((maps > 0).flatten(2).sum(-1) == 1)
    assert ((keypoints - start).abs()[spiky] <= max(codec.scale) + 1e-3).all()
    # decoding is per map: the batch gives what each map gives alone
    for b in range(maps.shape[0]):
        for k in range(maps.shape[1]):
            single_kp, single_score = codec.decode(maps[b:b + 1, k:k + 1])
            assert torch.allclose(single_kp[0, 0], keypoints[b, k], atol=1e-4) and single_score[0, 0] == scores[b, k]


@PROPERTY
@given(b=st.integers(1, 2), k=st.integers(1, 3), seed=st.integers(0, 2 ** 16),
       kind=st.sampled_from(["zero", "random", "flat"]))
def test_simcc_decode_is_finite_and_scores_are_the_smaller_axis_maximum(b, k, seed, kind):
    codec = CODECS["simcc"]
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.randn(b, k, 384, generator=gen), torch.randn(b, k, 512, generator=gen)
    if kind == "zero":
        x, y = x * 0, y * 0
    elif kind == "flat":
        x, y = x * 0 + 0.3, y * 0 + 0.3
    keypoints, scores = codec.decode((x, y))
    assert torch.isfinite(keypoints).all()
    assert torch.equal(scores, torch.minimum(x.amax(-1), y.amax(-1)))
    assert (keypoints[scores <= 0] == -1 / codec.split_ratio).all()
    assert (keypoints[scores > 0] >= 0).all()


@PROPERTY
@given(name=st.sampled_from(sorted(CODECS)),
       points=st.lists(st.tuples(st.floats(24, 167, width=32), st.floats(24, 231, width=32)), min_size=1, max_size=4))
def test_round_trip_recovers_keypoints_away_from_the_border(name, points):
    codec = CODECS[name]
    keypoints = torch.tensor(points, dtype=torch.float32)[None]
    encoded = codec.encode(keypoints, torch.ones(keypoints.shape[:2]))
    outputs = (encoded["x_labels"], encoded["y_labels"]) if isinstance(codec, SimCC) else encoded["heatmaps"]
    decoded, _ = codec.decode(outputs)
    bound = {"dark": 0.05, "udp": 0.05, "msra": 0.5 * 4 + 1e-3, "simcc": 0.5 / 2 + 1e-4}[name]
    assert (decoded - keypoints).abs().max() <= bound


@st.composite
def pair_flip_index(draw, k: int) -> np.ndarray:
    """A left/right permutation: disjoint swapped pairs, the rest fixed (like KeypointSet.flip_index)."""
    order = draw(st.permutations(list(range(k))))
    n_pairs = draw(st.integers(0, k // 2))
    index = np.arange(k)
    for i in range(n_pairs):
        a, b = order[2 * i], order[2 * i + 1]
        index[a], index[b] = b, a
    return index


@PROPERTY
@given(data=st.data(), k=st.integers(1, 5), name=st.sampled_from(["udp", "simcc"]))
def test_unshifted_flip_back_is_an_involution_and_commutes_with_encode(data, k, name):
    codec = CODECS[name]
    index = data.draw(pair_flip_index(k))
    xs = data.draw(st.lists(st.floats(30, 161, width=32), min_size=k, max_size=k))
    ys = data.draw(st.lists(st.floats(0, 255, width=32), min_size=k, max_size=k))
    keypoints = torch.tensor(list(zip(xs, ys)), dtype=torch.float32)[None]
    encoded = codec.encode(keypoints, torch.ones(1, k))
    outputs = (encoded["x_labels"], encoded["y_labels"]) if name == "simcc" else encoded["heatmaps"]
    twice = codec.flip_back(codec.flip_back(outputs, index), index)
    for a, b in zip(twice if name == "simcc" else (twice,), outputs if name == "simcc" else (outputs,)):
        assert torch.equal(a, b)
    if name == "udp":  # UDP maps pixel j to W-1-j exactly, so flipping the crop commutes with encoding
        flipped = keypoints.clone()
        flipped[..., 0] = INPUT[0] - 1 - flipped[..., 0]
        flipped_maps = codec.encode(flipped[:, torch.as_tensor(index)], torch.ones(1, k))["heatmaps"]
        assert torch.allclose(codec.flip_back(flipped_maps, index), outputs, atol=1e-5)


@pytest.mark.parametrize("name", sorted(CODECS))
def test_single_person_single_keypoint_shapes(name):
    codec = CODECS[name]
    encoded = codec.encode(np.array([[[96.0, 128.0]]], dtype=np.float32), np.ones((1, 1), dtype=np.float32))
    outputs = (encoded["x_labels"], encoded["y_labels"]) if isinstance(codec, SimCC) else encoded["heatmaps"]
    keypoints, scores = codec.decode(outputs)
    assert keypoints.shape == (1, 1, 2) and scores.shape == (1, 1)
    assert (keypoints - torch.tensor([96.0, 128.0])).abs().max() < 0.5
