"""Codecs: registry/config, encode -> decode round trips, flip-back, edge cases, and equality with
mmpose 1.3.2 (run as a subprocess in the oracle venv when it exists; skipped otherwise)."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from poseforge.codecs import base as codec_base
from poseforge.codecs import heatmap as heatmap_module
from poseforge.codecs import (Codec, MSRAHeatmap, SimCC, UDPHeatmap, blur_heatmaps, blur_kernel_size_for_sigma,
                              create_codec, flip_heatmaps, flip_vectors, gaussian_kernel1d, list_codecs)
from poseforge.errors import PoseforgeError
from poseforge.keypoints import get_keypoint_set
from poseforge.registry import CODECS

INPUT = (192, 256)  # (w, h)
HEATMAP = (48, 64)  # (W, H)
COCO_FLIP = get_keypoint_set("coco17").flip_index


def _codec(name: str, **kw) -> Codec:
    if name == "simcc":
        kw.setdefault("normalize", False)  # as RTMPose configs
        return create_codec("simcc", input_size=INPUT, sigma=kw.pop("sigma", (4.9, 5.66)), split_ratio=2.0, **kw)
    return create_codec(name, input_size=INPUT, heatmap_size=HEATMAP, sigma=kw.pop("sigma", 2.0), **kw)


def _outputs(codec: Codec, encoded: dict):
    return (encoded["x_labels"], encoded["y_labels"]) if isinstance(codec, SimCC) else encoded["heatmaps"]


def _random_keypoints(n: int, k: int, margin: float, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    span = torch.tensor([INPUT[0] - 1 - 2 * margin, INPUT[1] - 1 - 2 * margin])
    return torch.rand(n, k, 2, generator=gen, dtype=torch.float64).float() * span + margin


# ----------------------------------------------------------------------------- registry and config
@pytest.mark.parametrize("name,cls", [("msra", MSRAHeatmap), ("dark", MSRAHeatmap), ("udp", UDPHeatmap), ("simcc", SimCC)])
def test_registry_builds_each_codec_and_config_rebuilds_it(name, cls):
    codec = _codec(name)
    assert isinstance(codec, cls) and codec.name == name and name in CODECS and name in list_codecs()
    assert codec.input_size == INPUT
    cfg = codec.config()
    assert json.loads(json.dumps(cfg)) == cfg and cfg["name"] == name
    rebuilt = create_codec(**cfg)
    assert rebuilt == codec and type(rebuilt) is type(codec) and rebuilt.config() == cfg


def test_config_distinguishes_codecs_and_defaults_follow_mmpose_rules():
    assert _codec("msra") != _codec("dark") != _codec("udp")
    assert _codec("dark", sigma=3.0) != _codec("dark")
    assert _codec("dark", sigma=3.0).blur_kernel_size == 17 and _codec("udp").blur_kernel_size == 11
    assert [blur_kernel_size_for_sigma(s) for s in (1.0, 1.5, 2.0, 3.0)] == [3, 7, 11, 17]
    simcc = create_codec("simcc", input_size=INPUT, sigma=6.0)
    assert simcc.sigma == (6.0, 6.0) and simcc.num_bins == (384, 512) and simcc.normalize


@pytest.mark.parametrize("call", [
    lambda: create_codec("nope", input_size=INPUT),
    lambda: create_codec("udp", input_size=INPUT, heatmap_size=HEATMAP, colour="red"),
    lambda: create_codec("udp", input_size=(192,), heatmap_size=HEATMAP),
    lambda: create_codec("msra", input_size=INPUT, heatmap_size=(48.5, 64)),
    lambda: create_codec("dark", input_size=INPUT, heatmap_size=HEATMAP, sigma=-1),
    lambda: create_codec("dark", input_size=INPUT, heatmap_size=HEATMAP, blur_kernel_size=10),
    lambda: create_codec("simcc", input_size=INPUT, sigma=(1, 2, 3)),
    lambda: create_codec("simcc", input_size=INPUT, split_ratio=0),
])
def test_bad_codec_arguments_raise_one_line_errors(call):
    with pytest.raises(PoseforgeError) as info:
        call()
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["msra", "udp", "simcc"])
def test_bad_shapes_raise_clear_errors(name):
    codec = _codec(name)
    with pytest.raises(PoseforgeError, match="keypoints"):
        codec.encode(torch.zeros(2, 3, 3), torch.ones(2, 3))
    with pytest.raises(PoseforgeError, match="visible"):
        codec.encode(torch.zeros(2, 3, 2), torch.ones(2, 4))
    bad = (torch.zeros(1, 3, 10), torch.zeros(1, 3, 512)) if name == "simcc" else torch.zeros(1, 3, 32, 48)
    with pytest.raises(PoseforgeError, match=name):
        codec.decode(bad)
    good = codec.encode(torch.zeros(1, 17, 2), torch.ones(1, 17))
    with pytest.raises(PoseforgeError, match="flip_index"):
        codec.flip_back(_outputs(codec, good), [0, 0] + list(range(2, 17)))
    with pytest.raises(PoseforgeError, match="flip_index"):
        codec.flip_back(_outputs(codec, good), list(range(16)))


# ----------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("name", ["dark", "udp"])
def test_dark_and_udp_round_trip_sub_pixel_keypoints_within_0_05_px(name):
    codec = _codec(name)
    # away from the border: 3 sigma = 6 heatmap px = 24 input px (the blur's zero padding biases closer in)
    keypoints = _random_keypoints(32, 17, margin=24.0)
    encoded = codec.encode(keypoints, torch.ones(32, 17))
    assert encoded["heatmaps"].shape == (32, 17, 64, 48) and encoded["heatmaps"].dtype == torch.float32
    assert torch.equal(encoded["target_weights"], torch.ones(32, 17))
    decoded, scores = codec.decode(encoded["heatmaps"])
    assert decoded.dtype == torch.float32 and decoded.shape == (32, 17, 2)
    assert (decoded - keypoints).abs().max() < 0.05
    assert torch.allclose(scores, encoded["heatmaps"].flatten(2).amax(-1))


def test_msra_round_trip_is_within_half_a_heatmap_pixel_and_quarter_shift_refines():
    codec, scale = _codec("msra"), INPUT[0] / HEATMAP[0]
    keypoints = _random_keypoints(32, 17, margin=24.0)
    maps = codec.encode(keypoints, torch.ones(32, 17))["heatmaps"]
    decoded, _ = codec.decode(maps)
    # MSRA targets sit on the rounded position: error up to half a heatmap pixel
    err = (decoded - keypoints).abs()
    assert err.max() <= 0.5 * scale + 1e-3 and err.mean() > 0.5
    # On sub-pixel (unbiased) maps, the quarter-pixel shift halves the worst case.
    sub_pixel = _codec("dark").encode(keypoints, torch.ones(32, 17))["heatmaps"]
    decoded, _ = codec.decode(sub_pixel)
    assert (decoded - keypoints).abs().max() <= 0.25 * scale + 1e-3
    index = sub_pixel.flatten(2).argmax(-1)
    unshifted = torch.stack((index % 48, index // 48), -1).float() * scale
    assert (unshifted - keypoints).abs().max() > 0.4 * scale  # the shift is what brought it under 0.25


def test_simcc_round_trip_within_one_bin():
    codec = _codec("simcc")
    keypoints = _random_keypoints(16, 17, margin=0.0)
    encoded = codec.encode(keypoints, torch.ones(16, 17))
    assert encoded["x_labels"].shape == (16, 17, 384) and encoded["y_labels"].shape == (16, 17, 512)
    decoded, scores = codec.decode((encoded["x_labels"], encoded["y_labels"]))
    assert (decoded - keypoints).abs().max() <= 0.5 / codec.split_ratio + 1e-6
    assert torch.allclose(scores, torch.ones(16, 17))  # normalize=False: peak 1


def test_simcc_normalized_labels_integrate_to_one_and_score_is_the_smaller_axis_maximum():
    codec = create_codec("simcc", input_size=INPUT, sigma=(4.0, 6.0), normalize=True)
    encoded = codec.encode(torch.tensor([[[96.0, 128.0]]]), torch.ones(1, 1))
    assert torch.allclose(encoded["x_labels"].sum(-1), torch.ones(1, 1), atol=1e-4)
    assert torch.allclose(encoded["y_labels"].sum(-1), torch.ones(1, 1), atol=1e-4)
    _, scores = codec.decode((encoded["x_labels"], encoded["y_labels"]))
    assert torch.allclose(scores, torch.tensor([[1 / (6.0 * np.sqrt(2 * np.pi))]], dtype=torch.float32))


def _predicted_logits(centres: torch.Tensor, n: int, spread: float, beta: float = 10.0) -> torch.Tensor:
    """Logits whose ``softmax(beta x logits)`` is a Gaussian of ``spread`` bins at each (sub-bin) centre."""
    d = torch.arange(n, dtype=torch.float64) - centres[..., None]
    return (1 - (d * d) / (2 * spread**2) / beta).float()  # peak 1: a positive score


def test_simcc_decode_window_finds_the_sub_bin_centre_the_argmax_misses():
    codec = _codec("simcc", decode_window=6.0)
    plain = _codec("simcc")
    gen = torch.Generator().manual_seed(3)
    centres = torch.rand(4, 17, 2, generator=gen, dtype=torch.float64) * torch.tensor([300.0, 420.0]) + 40
    outputs = (_predicted_logits(centres[..., 0], 384, 4.9), _predicted_logits(centres[..., 1], 512, 5.66))
    refined, scores = codec.decode(outputs)
    argmax, argmax_scores = plain.decode(outputs)
    truth = centres.float() / codec.split_ratio
    assert (refined - truth).abs().max() < 0.01  # pixels; the argmax is off by up to a quarter pixel
    assert (argmax - truth).abs().max() > 0.2
    assert torch.equal(scores, argmax_scores)  # scores stay the axis maxima


def test_simcc_decode_window_keeps_a_second_mode_out():
    codec = _codec("simcc", decode_window=6.0)
    x = torch.logsumexp(torch.stack((_predicted_logits(torch.tensor([[100.3]]), 384, 4.9),
                                     _predicted_logits(torch.tensor([[300.0]]), 384, 4.9) - 0.05)), 0)
    y = _predicted_logits(torch.tensor([[200.0]]), 512, 5.66)
    refined, _ = codec.decode((x, y))
    assert refined[0, 0, 0] == pytest.approx(100.3 / 2, abs=0.01)  # a whole-axis mean lands near 150 / 2
    assert torch.softmax(10 * x, -1)[0, 0, 200:].sum() > 0.3


def test_simcc_decode_window_at_the_axis_ends_stays_on_the_axis():
    codec = _codec("simcc", decode_window=6.0)
    edges = torch.tensor([[0.0, 383.0]])
    outputs = (_predicted_logits(edges, 384, 4.9), _predicted_logits(torch.tensor([[0.0, 511.0]]), 512, 5.66))
    refined, _ = codec.decode(outputs)
    assert ((refined >= 0) & (refined <= torch.tensor([383.0, 511.0]) / 2)).all()
    assert (refined - torch.tensor([[[0.0, 0.0], [191.5, 255.5]]])).abs().max() < 2.5  # one-sided window


def test_simcc_decode_window_config_round_trip_and_validation():
    codec = _codec("simcc", decode_window=6.0, decode_beta=5.0)
    again = create_codec(**codec.config())
    assert (again.decode_window, again.decode_beta) == (6.0, 5.0)
    assert "decode_window" not in _codec("simcc").config()  # mmpose's plain argmax keeps mmpose's config
    for bad in (dict(decode_window=-1.0), dict(decode_window=float("nan")), dict(decode_beta=0.0)):
        with pytest.raises(PoseforgeError, match="decode_"):
            _codec("simcc", **bad)


def test_models_with_a_simcc_head_decode_with_the_window():
    from poseforge.models import create_model

    model = create_model("vitpose-tiny", head="simcc")
    assert model.config.codec["decode_window"] == 6.0 and model.codec.decode_window == 6.0


# ----------------------------------------------------------------------------- flip test
def _flip_keypoints(keypoints: torch.Tensor, flip_index) -> torch.Tensor:
    """Keypoints of the horizontally flipped crop (pixel j -> w-1-j), left/right swapped."""
    flipped = keypoints.clone()
    flipped[..., 0] = INPUT[0] - 1 - flipped[..., 0]
    return flipped[:, torch.as_tensor(flip_index)]


def test_udp_flip_back_of_flipped_targets_equals_the_targets():
    codec = _codec("udp")
    keypoints = _random_keypoints(8, 17, margin=24.0)
    vis = torch.ones(8, 17)
    target = codec.encode(keypoints, vis)["heatmaps"]
    flipped = codec.encode(_flip_keypoints(keypoints, COCO_FLIP), vis)["heatmaps"]
    assert not torch.allclose(flipped, target, atol=1e-2)
    assert torch.allclose(codec.flip_back(flipped, COCO_FLIP), target, atol=1e-5)
    # the flip test averages to the same decoded keypoints
    averaged = (target + codec.flip_back(flipped, COCO_FLIP)) / 2
    assert (codec.decode(averaged)[0] - keypoints).abs().max() < 0.05


@pytest.mark.parametrize("name", ["msra", "dark"])
def test_shifted_flip_back_aligns_to_within_mmpose_one_pixel_convention(name):
    """MSRA-style maps (scale w/W) of a flipped crop, mirrored and shifted one column, equal the
    targets of the keypoints moved +1 input pixel: mmpose's shift over-corrects by exactly that."""
    codec = _codec(name)
    # x = 4n + 0.4 keeps MSRA's rounding identical on both sides (DARK works for any x); n in
    # [8, 40) keeps the 3-sigma windows off the side borders
    gen = torch.Generator().manual_seed(3)
    x = torch.randint(8, 40, (6, 17), generator=gen) * 4.0 + 0.4
    y = torch.rand(6, 17, generator=gen) * 200 + 20
    keypoints, vis = torch.stack((x, y), -1), torch.ones(6, 17)
    flipped = codec.encode(_flip_keypoints(keypoints, COCO_FLIP), vis)["heatmaps"]
    expected = codec.encode(keypoints + torch.tensor([1.0, 0.0]), vis)["heatmaps"]
    back = codec.flip_back(flipped, COCO_FLIP)
    # column 0 is the shift's duplicate of the mirrored column 0, so compare from column 1
    assert torch.allclose(back[..., 1:], expected[..., 1:], atol=1e-5)
    no_shift = flip_heatmaps(flipped, COCO_FLIP, shift=False)
    assert not torch.allclose(no_shift[..., 1:], expected[..., 1:], atol=1e-2)


def test_simcc_flip_back_aligns_to_within_one_bin():
    codec = _codec("simcc")
    gen = torch.Generator().manual_seed(4)
    keypoints = torch.stack((torch.randint(2, 188, (6, 17), generator=gen) + 0.1,
                             torch.rand(6, 17, generator=gen) * 250), -1)
    vis = torch.ones(6, 17)
    flipped = codec.encode(_flip_keypoints(keypoints, COCO_FLIP), vis)
    back_x, back_y = codec.flip_back((flipped["x_labels"], flipped["y_labels"]), COCO_FLIP)
    # reversing Wx = w*r bins maps bin i to Wx-1-i, i.e. x -> w-1-x plus (r-1)/r px (mmpose's convention)
    expected = codec.encode(keypoints + torch.tensor([(codec.split_ratio - 1) / codec.split_ratio, 0.0]), vis)
    assert torch.allclose(back_x, expected["x_labels"], atol=1e-6)
    assert torch.allclose(back_y, expected["y_labels"], atol=1e-6)


def test_flip_helpers_swap_pairs_and_mirror():
    maps = torch.arange(2 * 3 * 2 * 4, dtype=torch.float32).reshape(2, 3, 2, 4)
    idx = [0, 2, 1]
    out = flip_heatmaps(maps, idx, shift=False)
    assert torch.equal(out[:, 1], maps[:, 2].flip(-1)) and torch.equal(out[:, 0], maps[:, 0].flip(-1))
    shifted = flip_heatmaps(maps, idx, shift=True)
    assert torch.equal(shifted[..., 1:], out[..., :-1]) and torch.equal(shifted[..., 0], out[..., 0])
    x, y = torch.randn(2, 3, 8), torch.randn(2, 3, 6)
    fx, fy = flip_vectors(x, y, np.array(idx))
    assert torch.equal(fx[:, 2], x[:, 1].flip(-1)) and torch.equal(fy[:, 2], y[:, 1])
    assert torch.equal(flip_vectors(fx, fy, idx)[0], x)  # an involution for paired indices


# ----------------------------------------------------------------------------- encode edge cases
@pytest.mark.parametrize("name", ["msra", "dark", "udp", "simcc"])
def test_invisible_and_outside_keypoints_get_zero_weight_and_no_target(name):
    codec = _codec(name)
    keypoints = torch.tensor([[[100.0, 100.0], [100.0, 100.0], [-60.0, 100.0], [100.0, 400.0], [0.0, 0.0], [191.0, 255.0]]])
    visible = torch.tensor([[1.0, 0.0, 1.0, 1.0, 2.0, 1.0]])
    encoded = codec.encode(keypoints, visible)
    assert encoded["target_weights"].tolist() == [[1.0, 0.0, 0.0, 0.0, 1.0, 1.0]]
    planes = [encoded["heatmaps"]] if "heatmaps" in encoded else [encoded["x_labels"], encoded["y_labels"]]
    for plane in planes:
        drawn = plane.flatten(2).amax(-1) > 0
        assert drawn.tolist() == [[True, False, False, False, True, True]]


@pytest.mark.parametrize("name", ["msra", "udp"])
def test_gaussian_window_touching_only_the_edge_column_keeps_the_weight(name):
    codec = _codec(name)
    scale = codec.scale[0]
    # heatmap x = -6.4: the 3-sigma window [-12, 1) reaches column 0 -> drawn, weight 1;
    # x = -7.6: window [-14, -1) misses the map -> weight 0 (mmpose keeps weight 1 for [-13, 0) and draws nothing)
    keypoints = torch.tensor([[[-6.4 * scale, 100.0], [-7.6 * scale, 100.0]]])
    encoded = codec.encode(keypoints, torch.ones(1, 2))
    assert encoded["target_weights"].tolist() == [[1.0, 0.0]]
    assert encoded["heatmaps"][0, 0, :, 0].max() > 0 and encoded["heatmaps"][0, 1].max() == 0


def test_numpy_inputs_and_non_finite_keypoints():
    codec = _codec("udp")
    keypoints = np.array([[[50.0, 60.0], [np.nan, 3.0]]], dtype=np.float64)
    encoded = codec.encode(keypoints, np.ones((1, 2)))
    assert isinstance(encoded["heatmaps"], torch.Tensor) and encoded["heatmaps"].dtype == torch.float32
    assert encoded["target_weights"].tolist() == [[1.0, 0.0]] and torch.isfinite(encoded["heatmaps"]).all()
    decoded, scores = codec.decode(encoded["heatmaps"].numpy())
    assert (decoded[0, 0] - torch.tensor([50.0, 60.0])).abs().max() < 0.05


# ----------------------------------------------------------------------------- decode edge cases
@pytest.mark.parametrize("name", ["msra", "dark", "udp", "simcc"])
def test_zero_and_flat_outputs_decode_finite_with_score_zero(name):
    codec = _codec(name)
    enc = codec.encode(torch.zeros(2, 3, 2), torch.zeros(2, 3))
    outputs = _outputs(codec, enc)
    decoded, scores = codec.decode(outputs)
    assert torch.isfinite(decoded).all() and torch.equal(scores, torch.zeros(2, 3))
    flat = tuple(o + 0.5 for o in outputs) if isinstance(outputs, tuple) else outputs + 0.5
    decoded, scores = codec.decode(flat)
    assert torch.isfinite(decoded).all() and torch.allclose(scores, torch.full((2, 3), 0.5))
    # a positive flat map decodes near the first pixel, not to the "no maximum" -1; UDP's edge-padded
    # refinement moves it half a heatmap pixel outwards (the zero-padded blur slopes down at the border)
    assert decoded.min() >= (-0.5 * max(codec.scale) - 1e-3 if name == "udp" else 0.0)


@pytest.mark.parametrize("size", [(48, 64), (47, 63)])  # two-stage block argmax, and plain max
def test_argmax_takes_the_first_maximum_in_row_major_order_like_numpy(size):
    W, H = size
    codec = MSRAHeatmap((W * 4, H * 4), size, sigma=2.0)
    rng = np.random.default_rng(7)
    maps = rng.random((3, 5, H, W)).astype(np.float32)
    maps[0, 0] = 0.5
    maps[0, 1, 10, 40] = maps[0, 1, 30, 5] = 2.0  # tie: row 10 comes first
    maps[0, 2, 20, 3] = maps[0, 2, 20, 30] = 2.0  # tie in one row: column 3 first
    expected = np.stack(np.unravel_index(maps.reshape(15, -1).argmax(1), (H, W))[::-1], -1).reshape(3, 5, 2)
    # undo the quarter shift by comparing to the nearest integer heatmap pixel
    decoded, _ = codec.decode(torch.from_numpy(maps))
    assert np.array_equal(np.round(decoded.numpy() / 4), expected)
    assert decoded[0, 0].tolist() == [0.0, 0.0]  # a flat map: the first pixel, no shift at the border


def test_empty_batch_decodes_to_empty():
    decoded, scores = _codec("dark").decode(torch.zeros(0, 17, 64, 48))
    assert decoded.shape == (0, 17, 2) and scores.shape == (0, 17)


def _reference_refine(maps: np.ndarray, kernel: int, udp: bool) -> np.ndarray:
    """Straightforward per-map numpy/cv2 version of mmpose's DARK / UDP refinement (heatmap px)."""
    out = []
    border = (kernel - 1) // 2
    for hm in maps:
        H, W = hm.shape
        y, x = divmod(int(np.argmax(hm)), W)
        padded = np.zeros((H + 2 * border, W + 2 * border), np.float32)
        padded[border:-border, border:-border] = hm
        blurred = cv2.GaussianBlur(padded, (kernel, kernel), 0)[border:-border, border:-border]
        blurred = blurred * (hm.max() / blurred.max())
        loc = np.array([x, y], np.float64)
        if udp:
            lg = np.pad(np.log(np.clip(blurred, 1e-3, 50.0)), 1, mode="edge")
            py, px = y + 1, x + 1
            i, ix1, ix1_, iy1, iy1_ = lg[py, px], lg[py, px + 1], lg[py, px - 1], lg[py + 1, px], lg[py - 1, px]
            d = np.array([0.5 * (ix1 - ix1_), 0.5 * (iy1 - iy1_)])
            dxy = 0.5 * (lg[py + 1, px + 1] - ix1 - iy1 + 2 * i - ix1_ - iy1_ + lg[py - 1, px - 1])
            hess = np.array([[ix1 - 2 * i + ix1_, dxy], [dxy, iy1 - 2 * i + iy1_]]) + np.finfo(np.float32).eps * np.eye(2)
            loc -= np.linalg.solve(hess, d)
        elif 1 < x < W - 2 and 1 < y < H - 2:
            lg = np.log(np.maximum(blurred, 1e-10))
            d = np.array([0.5 * (lg[y, x + 1] - lg[y, x - 1]), 0.5 * (lg[y + 1, x] - lg[y - 1, x])])
            dxx = 0.25 * (lg[y, x + 2] - 2 * lg[y, x] + lg[y, x - 2])
            dyy = 0.25 * (lg[y + 2, x] - 2 * lg[y, x] + lg[y - 2, x])
            dxy = 0.25 * (lg[y + 1, x + 1] - lg[y - 1, x + 1] - lg[y + 1, x - 1] + lg[y - 1, x - 1])
            if dxx * dyy - dxy ** 2 != 0:
                loc -= np.linalg.solve(np.array([[dxx, dxy], [dxy, dyy]]), d)
        out.append(loc)
    return np.stack(out)


@pytest.mark.parametrize("name", ["dark", "udp"])
def test_refinement_matches_full_blur_reference_on_both_paths(name, monkeypatch):
    """Normal maps take the local-window path; maps where mmpose's max rescaling decides the
    clip (peaks near UDP's 1e-3 floor, negative values beside the peak for DARK's log) force
    the exact full-blur path. Both must equal a straightforward full-map cv2 implementation."""
    codec = _codec(name)
    rng = np.random.default_rng(5)
    keypoints = _random_keypoints(4, 17, margin=0.0, seed=5)  # borders included
    targets = codec.encode(keypoints, torch.ones(4, 17))["heatmaps"].numpy()
    noise = rng.normal(size=targets.shape).astype(np.float32)
    normal = targets + 0.03 * noise
    normal[0, 0] = 0.0
    normal[0, 0, 0, 0] = 1.0  # a spike in the corner
    hard = np.concatenate([0.0015 * targets + 0.00002 * noise, targets - 0.3 + 0.01 * noise])
    full_blurs = []
    real_blur = heatmap_module.blur_heatmaps
    monkeypatch.setattr(heatmap_module, "blur_heatmaps", lambda m, k: full_blurs.append(len(m)) or real_blur(m, k))
    for maps, exact_path in ((normal, False), (hard, True)):
        full_blurs.clear()
        maps = maps.astype(np.float32)
        ours, scores = codec.decode(torch.from_numpy(maps))
        assert bool(full_blurs) == exact_path and (not exact_path or sum(full_blurs) > 4)
        flat_maps = maps.reshape(-1, 64, 48)
        expected = _reference_refine(flat_maps, codec.blur_kernel_size, udp=(name == "udp")) * np.array(codec.scale)
        assert np.abs(ours.reshape(-1, 2).numpy() - expected).max() < 1e-3
        assert np.allclose(scores.reshape(-1).numpy(), flat_maps.reshape(len(flat_maps), -1).max(1))


@pytest.mark.parametrize("name,size,kernel", [("dark", (12, 16), 11), ("udp", (12, 16), 11),
                                               ("dark", (24, 32), 17), ("udp", (8, 8), 17)])
def test_refinement_on_maps_smaller_than_the_blur_patch_matches_the_reference(name, size, kernel):
    """The local blur reads a (window + kernel - 1)^2 patch; maps smaller than that take the padded path."""
    W, H = size
    codec = create_codec(name, input_size=(4 * W, 4 * H), heatmap_size=size, sigma=2.0, blur_kernel_size=kernel)
    gen = torch.Generator().manual_seed(W)
    keypoints = torch.rand(3, 17, 2, generator=gen) * torch.tensor([4.0 * W - 1, 4.0 * H - 1])  # borders included
    maps = codec.encode(keypoints, torch.ones(3, 17))["heatmaps"]
    maps = (maps + 0.01 * torch.randn(maps.shape, generator=gen)).numpy()
    ours, _ = codec.decode(torch.from_numpy(maps))
    expected = _reference_refine(maps.reshape(-1, H, W), kernel, udp=(name == "udp")) * np.array(codec.scale)
    assert np.abs(ours.reshape(-1, 2).numpy() - expected).max() < 1e-3


@pytest.mark.parametrize("name", ["dark", "udp"])
def test_device_resident_path_gives_the_cpu_path_keypoints(name, monkeypatch):
    """Accelerators take the branch-free path (plain max for the argmax; mmpose's rescale from a full
    blur of every map, no host round trip); run on the CPU it must give the CPU path's results, on
    maps that need the exact rescale and maps that do not."""
    codec = _codec(name)
    gen = torch.Generator().manual_seed(11)
    targets = codec.encode(_random_keypoints(3, 17, margin=0.0, seed=11), torch.ones(3, 17))["heatmaps"]
    noise = torch.randn(targets.shape, generator=gen)
    maps = torch.cat([targets + 0.03 * noise, 0.0015 * targets + 2e-5 * noise, targets - 0.3 + 0.01 * noise])
    full_blurs = []
    real_blur = heatmap_module.blur_heatmaps
    monkeypatch.setattr(heatmap_module, "blur_heatmaps", lambda m, k: full_blurs.append(len(m)) or real_blur(m, k))
    expected_kp, expected_scores = codec.decode(maps)
    assert 0 < sum(full_blurs) < maps.shape[0] * maps.shape[1]  # the CPU path blurred only some maps
    full_blurs.clear()
    monkeypatch.setattr(heatmap_module, "_host_branches", lambda device: False)
    monkeypatch.setattr(codec_base, "_numpy_path", lambda tensor: False)
    keypoints, scores = codec.decode(maps)
    assert full_blurs == [maps.shape[0] * maps.shape[1]]  # every map, in one call
    assert torch.equal(scores, expected_scores) and (keypoints - expected_kp).abs().max() < 1e-4


def _decode_steps(codec: Codec, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Heatmap-pixel keypoints and scores of ``flat`` [N, H, W] through the public decode steps."""
    x, y, locs, peak = heatmap_module.heatmap_argmax(flat)
    if codec.name == "msra":
        return heatmap_module.refine_quarter_shift(flat, x, y, locs), peak
    refine = heatmap_module.refine_dark if codec.name == "dark" else heatmap_module.refine_dark_udp
    return refine(flat, x, y, locs, peak, codec.blur_kernel_size), peak


@pytest.mark.parametrize("name", ["msra", "dark", "udp"])
def test_cpu_numpy_path_equals_the_torch_path(name, monkeypatch):
    """CPU float maps decode in numpy (base._numpy_path); the torch code the other devices run must give
    the same keypoints and scores: network-like maps, maxima on the border and in the corners, all-zero,
    negative, near-clip and NaN maps, through decode and through the public steps."""
    codec = _codec(name)
    W, H = HEATMAP
    gen = torch.Generator().manual_seed(3)
    targets = codec.encode(_random_keypoints(4, 17, margin=0.0, seed=3), torch.ones(4, 17))["heatmaps"]
    noise = torch.randn(targets.shape, generator=gen)
    spikes = 0.01 * noise[:1].abs()
    for k, (y, x) in enumerate([(0, 0), (0, W - 1), (H - 1, 0), (H - 1, W - 1), (0, 20), (H - 1, 20), (30, 0),
                                (30, W - 1), (1, 1), (H - 2, W - 2), (2, 2), (H - 3, W - 3), (1, 30), (40, W - 2)]):
        spikes[0, k, y, x] = 1.0
    nan = targets[:1] + 0.03 * noise[:1]
    nan[0, :8, 10, 12] = float("nan")
    nan[0, 8] = float("nan")
    maps = torch.cat([targets + 0.03 * noise, spikes, torch.zeros_like(spikes), -targets[:1] - 0.1,
                      targets[:1] - 0.3 + 0.01 * noise[:1], 0.0015 * targets[:1] + 2e-5 * noise[:1], nan])
    flat = maps.reshape(-1, H, W)
    cpu = codec.decode(maps), _decode_steps(codec, flat)
    monkeypatch.setattr(codec_base, "_numpy_path", lambda tensor: False)
    for (kp, scores), (expected_kp, expected_scores) in zip(cpu, (codec.decode(maps), _decode_steps(codec, flat))):
        torch.testing.assert_close(kp, expected_kp, rtol=0, atol=1e-5, equal_nan=True)
        torch.testing.assert_close(scores, expected_scores, rtol=0, atol=0, equal_nan=True)
    keypoints, scores = cpu[0]
    assert torch.isnan(scores).sum() == 9  # the inputs hold what they should: 9 NaN maps, and 17 + 17 + 9
    assert (keypoints == -torch.tensor(codec.scale)).all(-1).sum() == 43  # all-zero, negative, NaN maps at -1


@pytest.mark.parametrize("name,kwargs", [("msra", {}), ("dark", {}), ("udp", {}), ("simcc", {}),
                                         ("simcc", {"decode_window": 6.0})])
@pytest.mark.parametrize("size", [(48, 64), (12, 16)])
def test_decode_never_leaves_the_device_of_its_input(name, kwargs, size):
    """Meta tensors hold no data: any host round trip in the decode path (.item(), bool() of a tensor,
    .cpu(), numpy) raises on them, so this passes only if every step runs on the input's device."""
    W, H = size
    if name == "simcc":
        codec = create_codec("simcc", input_size=(4 * W, 4 * H), sigma=(4.9, 5.66), **kwargs)
        outputs = tuple(torch.empty(3, 17, n, device="meta") for n in codec.num_bins)
    else:
        codec = create_codec(name, input_size=(4 * W, 4 * H), heatmap_size=size, **kwargs)
        outputs = torch.empty(3, 17, H, W, device="meta")
    keypoints, scores = codec.decode(outputs)
    assert keypoints.device.type == scores.device.type == "meta"
    assert keypoints.shape == (3, 17, 2) and scores.shape == (3, 17)
    assert keypoints.dtype == scores.dtype == torch.float32


@pytest.mark.parametrize("length", [3072, 384, 512, 100])
@pytest.mark.parametrize("path", ["numpy", "torch"])
def test_rows_argmax_returns_the_first_maximum_like_numpy(length, path, monkeypatch):
    """Ties, all-equal rows, rows without a positive value, a maximum of +-0 and NaN rows give numpy's (and
    so mmpose's) first index, on the CPU's numpy path and on the torch path other devices take."""
    if path == "torch":
        monkeypatch.setattr(codec_base, "_numpy_path", lambda tensor: False)
    rng = np.random.default_rng(length)
    rows = rng.random((8, length)).astype(np.float32)
    rows[0] = 0.25  # all equal: index 0
    rows[1, [length - 1, 5]] = 2.0  # a tie across the row
    rows[2, [length // 2 + 1, length // 2]] = 2.0  # neighbours tie
    rows[3] = -rows[3]  # no positive value
    rows[4, -1] = 3.0  # the last value
    rows[5] = -rows[5]
    rows[5, [length - 2, 7, 3]] = [0.0, 0.0, -0.0]  # maximum 0, first as -0.0
    rows[6, [length - 1, 9, 4]] = [5.0, np.nan, np.nan]  # NaN wins over a larger value: the first NaN
    rows[7] = -rows[7]
    rows[7, [11, 2]] = np.nan  # NaN in a row without a positive value
    values, index = codec_base.rows_argmax(torch.from_numpy(rows))
    assert index.dtype == torch.int64
    assert np.array_equal(index.numpy(), rows.argmax(1))
    assert np.array_equal(values.numpy(), rows.max(1), equal_nan=True)
    empty_values, empty_index = codec_base.rows_argmax(torch.zeros(0, length))
    assert empty_values.shape == empty_index.shape == (0,)


def test_blur_kernel_and_full_blur_equal_opencv():
    for size in (3, 5, 7, 11, 17):
        ours = gaussian_kernel1d(size, dtype=torch.float64).numpy()
        assert np.allclose(ours, cv2.getGaussianKernel(size, 0).ravel(), atol=1e-7), size
    maps = np.random.default_rng(1).random((2, 20, 16)).astype(np.float32)
    ours = blur_heatmaps(torch.from_numpy(maps), 7).numpy()
    for got, hm in zip(ours, maps):
        padded = cv2.copyMakeBorder(hm, 3, 3, 3, 3, cv2.BORDER_CONSTANT, value=0)
        assert np.allclose(got, cv2.GaussianBlur(padded, (7, 7), 0)[3:-3, 3:-3], atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("name", ["msra", "dark", "udp", "simcc"])
def test_cuda_matches_cpu(name):
    codec = _codec(name)
    keypoints = _random_keypoints(8, 17, margin=4.0)
    enc = codec.encode(keypoints.cuda(), torch.ones(8, 17, device="cuda"))
    assert all(t.device.type == "cuda" for t in enc.values())
    enc_cpu = codec.encode(keypoints, torch.ones(8, 17))
    for key in enc:
        assert torch.allclose(enc[key].cpu(), enc_cpu[key], atol=1e-5)
    out_gpu, out_cpu = _outputs(codec, enc), _outputs(codec, enc_cpu)
    kp_gpu, sc_gpu = codec.decode(out_gpu)
    kp_cpu, sc_cpu = codec.decode(out_cpu)
    assert kp_gpu.device.type == "cuda" and torch.allclose(kp_gpu.cpu(), kp_cpu, atol=1e-3)
    assert torch.allclose(sc_gpu.cpu(), sc_cpu, atol=1e-6)
    back = codec.flip_back(out_gpu, COCO_FLIP)
    back_cpu = codec.flip_back(out_cpu, COCO_FLIP)
    for g, c in zip(back if isinstance(back, tuple) else (back,), back_cpu if isinstance(back_cpu, tuple) else (back_cpu,)):
        assert torch.allclose(g.cpu(), c)


# ----------------------------------------------------------------------------- mmpose oracle
ORACLE_SCRIPT = r'''
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[3])
import mm_oracle_shim  # noqa: F401  (stubs compiled mmcv ops; must come before mmpose)
import torch
from mmpose.codecs import MSRAHeatmap, SimCCLabel, UDPHeatmap
from mmpose.models.utils.tta import flip_heatmaps, flip_vectors

spec = json.load(open(sys.argv[2]))
data = np.load(sys.argv[1])
types = {"MSRAHeatmap": MSRAHeatmap, "UDPHeatmap": UDPHeatmap, "SimCCLabel": SimCCLabel}
out = {}
for case in spec["codecs"]:
    cid, codec = case["id"], types[case["type"]](**case["kwargs"])
    kp, vis = data[cid + "_kp"], data[cid + "_vis"]
    if case["type"] == "SimCCLabel":
        enc = codec.encode(kp, vis)
        out[cid + "_enc_x"], out[cid + "_enc_y"] = enc["keypoint_x_labels"], enc["keypoint_y_labels"]
        out[cid + "_enc_w"] = enc["keypoint_weights"]
        out[cid + "_dec_kp"], out[cid + "_dec_score"] = codec.decode(data[cid + "_x"], data[cid + "_y"])
    else:
        encs = [codec.encode(kp[i:i + 1], vis[i:i + 1]) for i in range(len(kp))]
        out[cid + "_enc_maps"] = np.stack([e["heatmaps"] for e in encs])
        out[cid + "_enc_w"] = np.concatenate([e["keypoint_weights"] for e in encs])
        decs = [codec.decode(m) for m in data[cid + "_maps"]]
        out[cid + "_dec_kp"] = np.concatenate([d[0] for d in decs])
        out[cid + "_dec_score"] = np.concatenate([d[1] for d in decs])
maps, idx = torch.from_numpy(data["flip_maps"]), [int(i) for i in data["flip_index"]]
out["flip_shift"] = flip_heatmaps(maps.clone(), idx, "heatmap", shift_heatmap=True).numpy()
out["flip_noshift"] = flip_heatmaps(maps.clone(), idx, "heatmap", shift_heatmap=False).numpy()
fx, fy = flip_vectors(torch.from_numpy(data["flip_x"]), torch.from_numpy(data["flip_y"]), idx)
out["flipv_x"], out["flipv_y"] = fx.numpy(), fy.numpy()
np.savez(sys.argv[4], **out)
'''

# (id, mmpose type, mmpose kwargs, poseforge name, poseforge kwargs)
ORACLE_CASES = [
    ("msra", "MSRAHeatmap", dict(input_size=[192, 256], heatmap_size=[48, 64], sigma=2),
     "msra", dict(input_size=(192, 256), heatmap_size=(48, 64), sigma=2)),
    ("msra15", "MSRAHeatmap", dict(input_size=[96, 128], heatmap_size=[24, 32], sigma=1.5),
     "msra", dict(input_size=(96, 128), heatmap_size=(24, 32), sigma=1.5)),
    ("dark", "MSRAHeatmap", dict(input_size=[192, 256], heatmap_size=[48, 64], sigma=2, unbiased=True),
     "dark", dict(input_size=(192, 256), heatmap_size=(48, 64), sigma=2)),
    ("dark3", "MSRAHeatmap", dict(input_size=[96, 128], heatmap_size=[24, 32], sigma=3, unbiased=True, blur_kernel_size=17),
     "dark", dict(input_size=(96, 128), heatmap_size=(24, 32), sigma=3)),
    ("udp", "UDPHeatmap", dict(input_size=[192, 256], heatmap_size=[48, 64], sigma=2),
     "udp", dict(input_size=(192, 256), heatmap_size=(48, 64), sigma=2)),
    ("udp15", "UDPHeatmap", dict(input_size=[96, 128], heatmap_size=[24, 32], sigma=1.5, blur_kernel_size=7),
     "udp", dict(input_size=(96, 128), heatmap_size=(24, 32), sigma=1.5)),
    # maps smaller than the local blur patch (window + kernel - 1): the padded path
    ("dark_tiny", "MSRAHeatmap", dict(input_size=[48, 64], heatmap_size=[12, 16], sigma=2, unbiased=True),
     "dark", dict(input_size=(48, 64), heatmap_size=(12, 16), sigma=2)),
    ("udp_tiny", "UDPHeatmap", dict(input_size=[48, 64], heatmap_size=[12, 16], sigma=2),
     "udp", dict(input_size=(48, 64), heatmap_size=(12, 16), sigma=2)),
    ("simcc", "SimCCLabel", dict(input_size=[192, 256], sigma=[4.9, 5.66], simcc_split_ratio=2.0, normalize=False),
     "simcc", dict(input_size=(192, 256), sigma=(4.9, 5.66), split_ratio=2.0, normalize=False)),
    ("simccn", "SimCCLabel", dict(input_size=[96, 128], sigma=6.0, simcc_split_ratio=1.5, normalize=True),
     "simcc", dict(input_size=(96, 128), sigma=6.0, split_ratio=1.5, normalize=True)),
]


def _oracle_python(shared: Path) -> Path:
    env = os.environ.get("POSEFORGE_ORACLE_PYTHON")
    python = Path(env) if env else shared.parent / "oracle-venv" / "bin" / "python"
    if not python.exists():
        pytest.skip(f"mmpose oracle python not found at {python} (set POSEFORGE_ORACLE_PYTHON; see shared/oracle/README.md)")
    return python


def _oracle_inputs(rng: np.random.Generator) -> tuple[dict[str, np.ndarray], dict[str, Codec]]:
    data, codecs = {}, {}
    for cid, _, _, name, kwargs in ORACLE_CASES:
        codec = codecs[cid] = create_codec(name, **kwargs)
        w, h = codec.input_size
        n, k = 8, 17
        kp = np.stack([rng.uniform(-50, w + 50, (n, k)), rng.uniform(-50, h + 50, (n, k))], -1).astype(np.float32)
        kp[0, :4] = [[0, 0], [w - 1, h - 1], [w - 1, 0], [0, h - 1]]  # crop corners
        data[cid + "_kp"] = kp
        data[cid + "_vis"] = (rng.random((n, k)) < 0.8).astype(np.float32)
        inside = np.stack([rng.uniform(0, w - 1, (6, k)), rng.uniform(0, h - 1, (6, k))], -1).astype(np.float32)
        targets = _outputs(codec, codec.encode(torch.from_numpy(inside), torch.ones(6, k)))
        if isinstance(codec, SimCC):
            data[cid + "_x"] = np.concatenate([targets[0].numpy() + rng.normal(0, 0.05, targets[0].shape),
                                               rng.normal(size=(2, k, targets[0].shape[-1]))]).astype(np.float32)
            data[cid + "_y"] = np.concatenate([targets[1].numpy() + rng.normal(0, 0.05, targets[1].shape),
                                               rng.normal(size=(2, k, targets[1].shape[-1]))]).astype(np.float32)
            continue
        t = targets.numpy()
        maps = [t[:4] + rng.normal(0, 0.03, t[:4].shape),               # network-like
                0.0015 * t[4:5] + rng.normal(0, 2e-5, t[4:5].shape),   # peaks near UDP's 1e-3 clip
                t[5:6] - 0.3 + rng.normal(0, 0.01, t[5:6].shape),      # negative surroundings (DARK's log clamp)
                rng.random((1,) + t.shape[1:])]                        # noise
        if name != "udp":  # mmpose's UDP refinement reads other maps' memory at max <= 0; not compared
            zero = np.zeros((1,) + t.shape[1:])
            zero[0, 1] = -rng.random(t.shape[2:])  # an all-negative map
            maps.append(zero)
        data[cid + "_maps"] = np.concatenate(maps).astype(np.float32)
    data["flip_maps"] = rng.normal(size=(2, 17, 8, 6)).astype(np.float32)
    data["flip_x"] = rng.normal(size=(2, 17, 12)).astype(np.float32)
    data["flip_y"] = rng.normal(size=(2, 17, 10)).astype(np.float32)
    data["flip_index"] = COCO_FLIP.astype(np.int64)
    return data, codecs


@pytest.fixture(scope="module")
def mmpose_reference(shared_dir, tmp_path_factory):
    python = _oracle_python(shared_dir)
    shim_dir = shared_dir / "oracle"
    if not (shim_dir / "mm_oracle_shim.py").exists():
        pytest.skip(f"oracle import shim not found in {shim_dir}")
    work = tmp_path_factory.mktemp("mmpose_codecs")
    data, codecs = _oracle_inputs(np.random.default_rng(2024))
    np.savez(work / "inputs.npz", **data)
    spec = {"codecs": [{"id": cid, "type": t, "kwargs": kw} for cid, t, kw, _, _ in ORACLE_CASES]}
    (work / "spec.json").write_text(json.dumps(spec))
    (work / "oracle.py").write_text(ORACLE_SCRIPT)
    proc = subprocess.run([str(python), str(work / "oracle.py"), str(work / "inputs.npz"), str(work / "spec.json"),
                           str(shim_dir), str(work / "out.npz")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"mmpose oracle failed:\n{proc.stderr[-3000:]}"
    return data, codecs, dict(np.load(work / "out.npz"))


@pytest.mark.parametrize("cid", [c[0] for c in ORACLE_CASES])
def test_encode_matches_mmpose(mmpose_reference, cid):
    data, codecs, ref = mmpose_reference
    codec = codecs[cid]
    enc = codec.encode(data[cid + "_kp"], data[cid + "_vis"])
    if isinstance(codec, SimCC):
        np.testing.assert_array_equal(enc["target_weights"].numpy(), ref[cid + "_enc_w"])
        np.testing.assert_allclose(enc["x_labels"].numpy(), ref[cid + "_enc_x"], atol=1e-4, rtol=0)
        np.testing.assert_allclose(enc["y_labels"].numpy(), ref[cid + "_enc_y"], atol=1e-4, rtol=0)
        return
    ref_maps, ref_w = ref[cid + "_enc_maps"], ref[cid + "_enc_w"].copy()
    if not codec.name == "dark":
        # mmpose keeps weight 1 when the window ends exactly at column/row 0 (nothing drawn); we give 0
        nothing_drawn = ref_maps.reshape(*ref_w.shape, -1).max(-1) == 0
        ref_w[nothing_drawn] = 0
    np.testing.assert_array_equal(enc["target_weights"].numpy(), ref_w)
    assert ref_w.min() == 0 and ref_w.max() == 1  # the inputs cover both cases
    np.testing.assert_allclose(enc["heatmaps"].numpy(), ref_maps, atol=1e-4, rtol=0)


@pytest.mark.parametrize("cid", [c[0] for c in ORACLE_CASES])
def test_decode_matches_mmpose(mmpose_reference, cid):
    data, codecs, ref = mmpose_reference
    codec = codecs[cid]
    expected = ref[cid + "_dec_kp"]
    if isinstance(codec, SimCC):
        kp, scores = codec.decode((data[cid + "_x"], data[cid + "_y"]))
        tolerance = np.full(expected.shape, 1e-3)
    else:
        maps = data[cid + "_maps"]
        kp, scores = codec.decode(maps)
        if codec.name == "udp":  # mmpose returns x_hm * w/(W-1); poseforge the input pixel x_hm * (w-1)/(W-1)
            expected = expected * (np.array(codec.input_size) - 1) / np.array(codec.input_size)
        # On noise maps the Newton step can jump many pixels (up to 100 here); there both float32
        # implementations amplify rounding by the near-singular Hessian, so those compare to 1% of the step.
        flat = maps.reshape(*maps.shape[:2], -1)
        index = flat.argmax(-1)
        start = np.stack((index % maps.shape[-1], index // maps.shape[-1]), -1).astype(np.float64)
        start[flat.max(-1) <= 0] = -1
        step = np.abs(expected - start * np.array(codec.scale)).max(-1, keepdims=True)
        well_posed = step < max(codec.scale)  # refinement moved less than one heatmap pixel
        assert well_posed.mean() > 0.75
        tolerance = np.where(well_posed, 1e-3, 1e-2 * step) * np.ones_like(expected)
    np.testing.assert_array_less(np.abs(kp.numpy() - expected), tolerance)
    np.testing.assert_allclose(scores.numpy(), ref[cid + "_dec_score"], atol=1e-6, rtol=0)


def test_flip_helpers_match_mmpose(mmpose_reference):
    data, codecs, ref = mmpose_reference
    maps, idx = torch.from_numpy(data["flip_maps"]), data["flip_index"]
    assert torch.equal(flip_heatmaps(maps, idx, shift=True), torch.from_numpy(ref["flip_shift"]))
    assert torch.equal(flip_heatmaps(maps, idx, shift=False), torch.from_numpy(ref["flip_noshift"]))
    fx, fy = flip_vectors(torch.from_numpy(data["flip_x"]), torch.from_numpy(data["flip_y"]), idx)
    assert torch.equal(fx, torch.from_numpy(ref["flipv_x"])) and torch.equal(fy, torch.from_numpy(ref["flipv_y"]))
    # each codec's flip_back uses mmpose's test_cfg convention: MSRA/DARK shift, UDP not
    msra, udp = MSRAHeatmap((48, 64), (6, 8)), UDPHeatmap((48, 64), (6, 8))
    assert torch.equal(msra.flip_back(maps, idx), torch.from_numpy(ref["flip_shift"]))
    assert torch.equal(udp.flip_back(maps, idx), torch.from_numpy(ref["flip_noshift"]))


def test_codecs_first_imported_under_the_meta_device_still_decode_on_the_cpu():
    """Counting a model's parameters under ``torch.device("meta")`` (as the docs show) may be the first import of
    the codecs: their module-level and cached CPU constants must not land on the meta device."""
    import sys

    script = (
        "import torch\n"
        "from poseforge.models import create_model\n"
        "with torch.device('meta'):\n"
        "    create_model('vitpose-tiny')\n"
        "model = create_model('vitpose-tiny', input_size=(48, 64)).eval()\n"
        "out = model.predict(torch.rand(1, 3, 64, 48))\n"
        "assert torch.isfinite(out.keypoints).all(), out.keypoints\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parents[1])
    assert run.returncode == 0, run.stderr[-2000:]
