"""Top-down transforms: geometry against mmpose's formulas (and mmpose itself when the oracle venv exists),
crops against OpenCV, augmentation semantics and determinism, the two pipeline paths, collate."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from poseforge.data.augment import (
    AugmentConfig,
    ColorJitter,
    RandomBBoxTransform,
    RandomBlur,
    RandomErase,
    RandomFlip,
    RandomHalfBody,
    RandomHSV,
    body_halves,
    hsv_to_rgb,
    rgb_to_hsv,
    truncated_normal,
)
from poseforge.data.coco import read_coco
from poseforge.data.images import load_image
from poseforge.data.records import PoseInstance
from poseforge.data.batch import Batch, collate
from poseforge.data.transforms import (
    TopDownTransform,
    affine_points,
    bbox_xywh_to_center_scale,
    compose_affine,
    crop_batch,
    crop_image,
    crop_to_image,
    get_affine_matrix,
    invert_affine,
)
from poseforge.errors import DataError, PoseforgeError
from poseforge.keypoints import get_keypoint_set

ROOT = Path(__file__).resolve().parents[1]
COCO_FLIP = [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]
NO_AUG = AugmentConfig.off()


def make_instance(rng: np.random.Generator, width: int = 320, height: int = 240, k: int = 17,
                  with_image: bool = True) -> PoseInstance:
    """A person-like record: keypoints spread inside a random box, a few unlabeled."""
    x, y = rng.uniform(0, width * 0.4), rng.uniform(0, height * 0.3)
    w, h = rng.uniform(0.2, 0.5) * width, rng.uniform(0.3, 0.6) * height
    keypoints = np.stack([x + rng.uniform(0, w, k), y + rng.uniform(0, h, k)], 1)
    visibility = np.where(rng.uniform(size=k) < 0.15, 0.0, 2.0)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8) if with_image else None
    return PoseInstance(image_id=int(rng.integers(1, 1000)), image_path=None, image_size=(width, height),
                        bbox=np.array([x, y, w, h]), keypoints=keypoints, visibility=visibility, keypoint_set="coco17",
                        instance_id=int(rng.integers(1, 10**6)), score=float(rng.uniform(0.5, 1)), image=image)


def smooth_image(rng: np.random.Generator, height: int, width: int, channels: int = 3) -> np.ndarray:
    small = rng.uniform(0, 255, (max(height // 8, 2), max(width // 8, 2), channels)).astype(np.float32)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC).clip(0, 255)


# ---------------------------------------------------------------------------------------------------------
# center / scale and matrices


def test_center_scale_follows_mmpose_formula():
    # A 100x200 box at (10, 20), padding 1.25: center (60, 120), padded size (125, 250); for a 0.75
    # aspect (192x256 input) the width grows: 250 * 0.75 = 187.5.
    center, scale = bbox_xywh_to_center_scale(np.array([10.0, 20.0, 100.0, 200.0]), aspect_ratio=0.75)
    np.testing.assert_allclose(center, [60.0, 120.0])
    np.testing.assert_allclose(scale, [187.5, 250.0])
    # A wide box: 300x100 -> padded (375, 125); height grows to 375 / 0.75 = 500.
    _, scale = bbox_xywh_to_center_scale(np.array([0.0, 0.0, 300.0, 100.0]), aspect_ratio=0.75)
    np.testing.assert_allclose(scale, [375.0, 500.0])
    # No aspect fix, other padding.
    _, scale = bbox_xywh_to_center_scale(np.array([0.0, 0.0, 300.0, 100.0]), aspect_ratio=None, padding=1.0)
    np.testing.assert_allclose(scale, [300.0, 100.0])


def test_center_scale_keeps_kind_dtype_and_batch_shape():
    boxes = np.random.default_rng(0).uniform(1, 100, (2, 3, 4)).astype(np.float32)
    c_np, s_np = bbox_xywh_to_center_scale(boxes, 0.75)
    assert isinstance(c_np, np.ndarray) and c_np.dtype == np.float32 and c_np.shape == (2, 3, 2)
    c_t, s_t = bbox_xywh_to_center_scale(torch.from_numpy(boxes), 0.75)
    assert isinstance(c_t, torch.Tensor) and c_t.dtype == torch.float32 and s_t.shape == (2, 3, 2)
    np.testing.assert_allclose(c_t.numpy(), c_np)
    np.testing.assert_allclose(s_t.numpy(), s_np)
    np.testing.assert_allclose(s_np[..., 0] / s_np[..., 1], 0.75, rtol=1e-6)
    assert (s_np >= boxes[..., 2:] * 1.25 - 1e-4).all()  # only ever grows


def test_affine_matrix_known_numbers():
    c, s = np.array([100.0, 50.0]), np.array([60.0, 80.0])
    # Standard: factor 192/60 = 3.2 on both axes, center -> (96, 128).
    np.testing.assert_allclose(get_affine_matrix(c, s, 0.0, (192, 256)), [[3.2, 0, 96 - 320], [0, 3.2, 128 - 160]], atol=1e-9)
    # Rotated 90 degrees: x' = 3.2 (y - 50) + 96, y' = -3.2 (x - 100) + 128.
    np.testing.assert_allclose(get_affine_matrix(c, s, 90.0, (192, 256)), [[0, 3.2, -64], [-3.2, 0, 448]], atol=1e-9)
    # UDP: factors 191/60 and 255/80, center -> (95.5, 127.5).
    sx, sy = 191 / 60, 255 / 80
    np.testing.assert_allclose(get_affine_matrix(c, s, 0.0, (192, 256), use_udp=True),
                               [[sx, 0, 95.5 - 100 * sx], [0, sy, 127.5 - 50 * sy]], atol=1e-9)
    np.testing.assert_allclose(get_affine_matrix(c, s, 90.0, (192, 256), use_udp=True),
                               [[0, -sx, 95.5 + 50 * sx], [sy, 0, 127.5 - 100 * sy]], atol=1e-9)


def test_affine_matrix_batched_torch_equals_numpy():
    rng = np.random.default_rng(1)
    c, s, r = rng.uniform(0, 500, (5, 2)), rng.uniform(50, 300, (5, 2)), rng.uniform(-90, 90, 5)
    for udp in (False, True):
        m_np = get_affine_matrix(c, s, r, (48, 64), use_udp=udp)
        m_t = get_affine_matrix(torch.from_numpy(c).float(), torch.from_numpy(s).float(), torch.from_numpy(r).float(),
                                (48, 64), use_udp=udp)
        assert m_np.shape == (5, 2, 3) and m_t.dtype == torch.float32
        np.testing.assert_allclose(m_t.numpy(), m_np, rtol=1e-5, atol=1e-3)
        for i in range(5):
            np.testing.assert_allclose(get_affine_matrix(c[i], s[i], r[i], (48, 64), use_udp=udp), m_np[i], atol=1e-9)


@pytest.mark.parametrize("use_udp", [False, True])
def test_round_trip_image_crop_image(use_udp):
    rng = np.random.default_rng(2)
    n, k = 64, 17
    center, scale = rng.uniform(0, 2000, (n, 2)), rng.uniform(20, 800, (n, 2))
    rotation = rng.uniform(-180, 180, n)
    m = get_affine_matrix(torch.from_numpy(center), torch.from_numpy(scale), torch.from_numpy(rotation), (192, 256), use_udp)
    flip = torch.from_numpy(rng.uniform(size=n) < 0.5)
    m = compose_affine(m, RandomFlip.image_flip_matrix(torch.full((n,), 2000.0), flip))
    points = torch.from_numpy(center[:, None] + rng.uniform(-1, 1, (n, k, 2)) * scale[:, None])
    crop = affine_points(points.float(), m.float())  # float32 end to end, as the pipeline stores them
    back = crop_to_image(crop, m.float())
    assert (back.double() - points).abs().max() < 1e-3
    # The inverse is exact in float64.
    np.testing.assert_allclose((invert_affine(m) @ torch.cat([m, torch.tensor([0, 0, 1.0]).double().expand(n, 1, 3)], 1)).numpy(),
                               np.tile(np.eye(3)[:2], (n, 1, 1)), atol=1e-9)


def test_pipeline_round_trip_with_augmentation():
    rng = np.random.default_rng(3)
    for use_udp in (False, True):
        t = TopDownTransform((96, 128), "coco17", use_udp=use_udp, augment=AugmentConfig(flip_prob=0.5, half_body_prob=0.5))
        g = torch.Generator().manual_seed(0)
        instances = [make_instance(rng, 1280, 960, with_image=False) for _ in range(24)]
        images = torch.zeros(3, 960, 1280, dtype=torch.uint8)
        out = t.apply_batch(images, instances, generator=g)
        assert out["flipped"].any() and (~out["flipped"]).any() and (out["rotation"] != 0).any()
        expected = np.stack([inst.keypoints[COCO_FLIP] if f else inst.keypoints for inst, f in zip(instances, out["flipped"])])
        back = crop_to_image(out["keypoints"], out["matrix"])
        assert np.abs(back.double().numpy() - expected).max() < 1e-3


# ---------------------------------------------------------------------------------------------------------
# cropping


def _cv2_crops(image: np.ndarray, matrices: np.ndarray, size) -> np.ndarray:
    return np.stack([crop_image(image, m, size) for m in matrices])


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_crop_batch_equals_cv2(dtype):
    rng = np.random.default_rng(4)
    h, w, n, size = 90, 120, 6, (40, 56)
    image = smooth_image(rng, h, w).astype(dtype)
    center = rng.uniform([0, 0], [w, h], (n, 2))
    scale = rng.uniform(20, 150, (n, 2))
    m = get_affine_matrix(center, scale, rng.uniform(-60, 60, n), size, use_udp=bool(dtype == np.uint8))
    m = compose_affine(m, RandomFlip.image_flip_matrix(w, torch.tensor([False, True] * 3)).numpy())  # some mirrored
    expected = _cv2_crops(image, m, size).astype(np.float32).transpose(0, 3, 1, 2)
    got = crop_batch(torch.from_numpy(image).permute(2, 0, 1), torch.from_numpy(m), size)
    assert got.dtype == torch.float32 and got.shape == (n, 3, size[1], size[0])
    diff = np.abs(got.numpy() - expected)
    # OpenCV rounds sample positions to 1/32 px (and uint8 results to integers).
    assert diff.mean() < 0.3 and diff.max() < 3.0, (diff.mean(), diff.max())
    # The border is zero like cv2's: a crop entirely outside the image is black.
    far = get_affine_matrix(np.array([-500.0, -500.0]), np.array([50.0, 50.0]), 0.0, size)[None]
    assert crop_batch(torch.from_numpy(image).permute(2, 0, 1), torch.from_numpy(far), size).abs().max() == 0


def test_crop_batch_noise_image_close_to_cv2():
    rng = np.random.default_rng(5)
    image = rng.uniform(0, 255, (64, 80, 3)).astype(np.float32)
    m = get_affine_matrix(rng.uniform(10, 70, (4, 2)), rng.uniform(30, 90, (4, 2)), rng.uniform(-30, 30, 4), (32, 48))
    expected = _cv2_crops(image, m, (32, 48)).transpose(0, 3, 1, 2)
    got = crop_batch(torch.from_numpy(image).permute(2, 0, 1), torch.from_numpy(m), (32, 48)).numpy()
    diff = np.abs(got - expected)
    assert diff.mean() < 1.0 and diff.max() < 12.0, (diff.mean(), diff.max())  # worst case 255 * 1/32 px
    # Against an exact float64 bilinear sampler the torch crop is exact.
    inv = invert_affine(m)
    ys, xs = np.mgrid[0:48, 0:32]
    grid = np.stack([xs, ys], -1).reshape(-1, 2).astype(np.float64)
    for i in range(4):
        exact = _bilinear(image, affine_points(grid, inv[i])).reshape(48, 32, 3)
        assert np.abs(got[i].transpose(1, 2, 0) - exact).max() < 1e-2
        assert np.abs(expected[i].transpose(1, 2, 0) - exact).mean() < 1.0  # the reference sampler agrees with OpenCV


def _bilinear(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Exact bilinear sampling with a zero border (float64)."""
    h, w = image.shape[:2]
    padded = np.zeros((h + 2, w + 2, image.shape[2]))
    padded[1:-1, 1:-1] = image
    x, y = points[:, 0] + 1, points[:, 1] + 1
    inside = (x > -1) & (x < w + 1) & (y > -1) & (y < h + 1)
    x, y = np.clip(x, 0, w + 1 - 1e-9), np.clip(y, 0, h + 1 - 1e-9)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    x1, y1 = np.minimum(x0 + 1, w + 1), np.minimum(y0 + 1, h + 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    out = (padded[y0, x0] * (1 - fx) * (1 - fy) + padded[y0, x1] * fx * (1 - fy)
           + padded[y1, x0] * (1 - fx) * fy + padded[y1, x1] * fx * fy)
    return out * inside[:, None]


def test_crop_batch_shared_frame_stacked_and_list_agree():
    rng = np.random.default_rng(6)
    frame = torch.from_numpy(smooth_image(rng, 50, 70)).permute(2, 0, 1).contiguous()
    m = torch.from_numpy(get_affine_matrix(rng.uniform(0, 60, (3, 2)), rng.uniform(20, 60, (3, 2)), 0.0, (16, 24)))
    shared = crop_batch(frame, m, (16, 24))
    stacked = crop_batch(frame.expand(3, -1, -1, -1).contiguous(), m, (16, 24))
    torch.testing.assert_close(shared, stacked, rtol=0, atol=0)
    # Different image sizes: each crop equals cropping its own image alone.
    images = [torch.from_numpy(smooth_image(rng, hh, ww)).permute(2, 0, 1) for hh, ww in ((30, 40), (60, 20), (45, 45))]
    together = crop_batch(images, m, (16, 24))
    for i, im in enumerate(images):
        alone = crop_batch(im, m[i:i + 1], (16, 24))
        torch.testing.assert_close(together[i:i + 1], alone, rtol=0, atol=1e-4)
    assert crop_batch(frame, m[:0], (16, 24)).shape == (0, 3, 24, 16)


def test_crop_batch_rejects_bad_shapes():
    with pytest.raises(PoseforgeError, match="matrices must be"):
        crop_batch(torch.zeros(3, 10, 10), torch.zeros(2, 3, 3), (4, 4))
    with pytest.raises(PoseforgeError, match="2 images for 3 matrices"):
        crop_batch(torch.zeros(2, 3, 10, 10), torch.zeros(3, 2, 3), (4, 4))


# ---------------------------------------------------------------------------------------------------------
# flip, half-body, box transform


def test_flip_swaps_pairs_and_mirrors_exactly():
    rng = np.random.default_rng(7)
    width = 50
    kp = torch.from_numpy(rng.integers(0, width, (4, 17, 2)).astype(np.float64))
    vis = torch.from_numpy(rng.integers(0, 3, (4, 17)).astype(np.float64))
    center = torch.from_numpy(rng.uniform(0, width, (4, 2)))
    flip = RandomFlip(COCO_FLIP, p=0.5)
    do = torch.tensor([True, False, True, True])
    k1, v1, c1, f1 = flip(kp, vis, center, width, flip=do)
    # Flipped samples: label k takes the mirrored position of its partner.
    for i in range(4):
        if do[i]:
            np.testing.assert_array_equal(k1[i, :, 0].numpy(), width - 1 - kp[i, COCO_FLIP, 0].numpy())
            np.testing.assert_array_equal(k1[i, :, 1].numpy(), kp[i, COCO_FLIP, 1].numpy())
            np.testing.assert_array_equal(v1[i].numpy(), vis[i, COCO_FLIP].numpy())
            assert c1[i, 0] == width - 1 - center[i, 0] and c1[i, 1] == center[i, 1]
        else:
            assert torch.equal(k1[i], kp[i]) and torch.equal(v1[i], vis[i]) and torch.equal(c1[i], center[i])
    # Twice is the identity.
    k2, v2, c2, _ = flip(k1, v1, c1, width, flip=do)
    assert torch.equal(k2, kp) and torch.equal(v2, vis) and torch.equal(c2, center)
    # The image mirror agrees with the keypoint mirror pixel for pixel: paint each keypoint with its label.
    image = torch.zeros(4, 1, width, width)
    for i in range(4):
        image[i, 0, kp[i, :, 1].long(), kp[i, :, 0].long()] = torch.arange(1, 18, dtype=torch.float32)
    mirrored = RandomFlip.flip_images(image, do)
    for i in np.flatnonzero(do.numpy()):
        labels = mirrored[i, 0, k1[i, :, 1].long(), k1[i, :, 0].long()]
        painted = image[i, 0, kp[i, :, 1].long(), kp[i, :, 0].long()]  # a label may be painted over
        assert torch.equal(labels, painted[COCO_FLIP])
    assert torch.equal(RandomFlip.flip_images(mirrored, do), image)


def test_flip_folded_into_matrix_equals_cropping_the_mirrored_image():
    rng = np.random.default_rng(8)
    image = torch.from_numpy(smooth_image(rng, 60, 90)).permute(2, 0, 1)
    width = image.shape[2]
    center, scale = torch.tensor([[30.0, 25.0]]), torch.tensor([[40.0, 50.0]])
    flip = torch.tensor([True])
    c_flipped = torch.stack([width - 1 - center[:, 0], center[:, 1]], 1)
    for udp in (False, True):
        m = get_affine_matrix(c_flipped.double(), scale.double(), torch.tensor([20.0]).double(), (24, 32), udp)
        on_mirror = crop_batch(RandomFlip.flip_images(image[None], flip), m, (24, 32))
        folded = crop_batch(image, compose_affine(m, RandomFlip.image_flip_matrix(width, flip)), (24, 32))
        torch.testing.assert_close(folded, on_mirror, rtol=0, atol=1e-3)


def test_flip_rejects_bad_index():
    with pytest.raises(PoseforgeError, match="permutation"):
        RandomFlip([0, 0, 1])
    with pytest.raises(PoseforgeError, match="own inverse"):
        RandomFlip([1, 2, 0])


def test_body_halves_match_mmpose_types():
    # Types from mmpose's dataset_info files (configs/_base_/datasets/*.py): U upper, L lower.
    expected = {
        "coco17": "UUUUUUUUUUULLLLLL",
        "crowdpose14": "UUUUUULLLLLLUU",
        "mpii16": "LLLLLLLUUUUUUUUU",
        "aic14": "UUUUUULLLLLLUU",
        # mmpose marks AP-10K's right front paw 'lower' (its left one is 'upper'); here both are upper.
        "ap10k17": "UUUULUUUUUULLLLLL",
    }
    for name, types in expected.items():
        upper, lower = body_halves(name)
        assert "".join("U" if u else "L" if l else "-" for u, l in zip(upper, lower)) == types, name
    upper, lower = body_halves("wholebody133")
    ks = get_keypoint_set("wholebody133")
    assert upper[:11].all() and lower[11:23].all() and not lower[:11].any()  # body + feet as mmpose
    assert upper[ks.part_slice("face")].all() and upper[ks.part_slice("left_hand")].all() and upper[ks.part_slice("right_hand")].all()


def test_half_body_picks_only_upper_or_lower_keypoints():
    rng = np.random.default_rng(9)
    upper, lower = body_halves("coco17")
    kp = torch.from_numpy(rng.uniform(0, 100, (3, 17, 2)))
    vis = torch.ones(3, 17, dtype=torch.float64)
    vis[1, 11:14] = 0  # sample 1: only 3 lower points remain -> still enough for lower
    vis[2, 12:] = 0  # sample 2: 1 lower point -> upper even when lower is preferred
    center, scale = torch.full((3, 2), 50.0, dtype=torch.float64), torch.full((3, 2), 100.0, dtype=torch.float64)
    for prefer_upper, expect_upper in ((1.0, [True, True, True]), (0.0, [False, False, True])):
        hb = RandomHalfBody(upper=upper, lower=lower, p=1.0, upper_prioritized_prob=prefer_upper)
        out = hb(kp, vis, center, scale)
        assert out.applied.all()
        for i in range(3):
            part = torch.from_numpy(upper if expect_upper[i] else lower) & (vis[i] > 0)
            pts = kp[i][part]
            torch.testing.assert_close(out.center[i], pts.mean(0))
            torch.testing.assert_close(out.scale[i], (pts.amax(0) - pts.amin(0)) * 1.5)
    # Too few labeled keypoints (< 9) or p = 0: the box is kept.
    few = vis.clone()
    few[:, 8:] = 0
    out = RandomHalfBody("coco17", p=1.0)(kp, few, center, scale)
    assert not out.applied.any() and torch.equal(out.center, center) and torch.equal(out.scale, scale)
    out = RandomHalfBody("coco17", p=0.0)(kp, vis, center, scale)
    assert not out.applied.any()


def test_truncated_normal_matches_scipy():
    from scipy.stats import truncnorm

    z = truncated_normal((200_000,), torch.Generator().manual_seed(0))
    assert z.min() >= -1 and z.max() <= 1
    assert abs(z.mean().item()) < 0.01
    assert abs(z.std().item() - truncnorm.std(-1, 1)) < 0.005


def test_bbox_transform_ranges_and_probabilities():
    n = 20_000
    center = torch.full((n, 2), 100.0, dtype=torch.float64)
    scale = torch.tensor([[40.0, 80.0]], dtype=torch.float64).expand(n, 2)
    c, s, r = RandomBBoxTransform()(center, scale, torch.Generator().manual_seed(1))
    shift = (c - center) / scale
    assert shift.abs().max() <= 0.16 + 1e-12
    assert abs((shift.abs().sum(1) > 0).double().mean().item() - 0.3) < 0.02
    factor = s / scale
    assert torch.allclose(factor[:, 0], factor[:, 1]) and factor.min() >= 0.5 and factor.max() <= 1.5
    assert abs(factor[:, 0].mean().item() - 1.0) < 0.01
    assert r.abs().max() <= 80 and abs((r != 0).double().mean().item() - 0.6) < 0.02


# ---------------------------------------------------------------------------------------------------------
# photometric


def test_hsv_round_trip_and_opencv_agreement():
    rng = np.random.default_rng(10)
    image = rng.uniform(0, 255, (2, 3, 16, 20)).astype(np.float32)
    image[0, :, 0, :4] = 128.0  # gray pixels: zero saturation, hue defined as 0
    t = torch.from_numpy(image)
    torch.testing.assert_close(hsv_to_rgb(rgb_to_hsv(t)), t, rtol=0, atol=1e-3)
    gains = torch.tensor([[4.0, -20.0, 13.0], [-3.0, 25.0, -29.0]])
    got = RandomHSV().apply(t, gains).numpy()
    for i in range(2):
        # OpenCV float HSV: hue in degrees, saturation in [0, 1], value in the input's range.
        hsv = cv2.cvtColor(np.ascontiguousarray(image[i].transpose(1, 2, 0)) / 255.0, cv2.COLOR_RGB2HSV)
        hsv[..., 0] = np.mod(hsv[..., 0] + gains[i, 0].item() * 2, 360)
        hsv[..., 1] = np.clip(hsv[..., 1] + gains[i, 1].item() / 255, 0, 1)
        hsv[..., 2] = np.clip(hsv[..., 2] + gains[i, 2].item() / 255, 0, 1)
        expected = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255
        np.testing.assert_allclose(got[i].transpose(1, 2, 0), expected, atol=0.05)


def test_hsv_gains_are_integers_within_deltas():
    gains = RandomHSV(5, 30, 30).sample(4000, torch.Generator().manual_seed(2))
    assert torch.equal(gains, gains.trunc())
    assert (gains.abs() < torch.tensor([5.0, 30.0, 30.0])).all()
    assert abs((gains != 0).double().mean().item() - 0.5) < 0.05  # each channel on half the time


def test_blur_matches_opencv():
    rng = np.random.default_rng(11)
    image = rng.uniform(0, 255, (3, 3, 20, 24)).astype(np.float32)
    blur = RandomBlur(p=1.0)
    sizes = torch.tensor([3, 0, 7])
    got = blur.apply(torch.from_numpy(image), sizes).numpy()
    for i, k in enumerate(sizes.tolist()):
        expected = image[i] if k == 0 else cv2.blur(image[i].transpose(1, 2, 0), (k, k)).transpose(2, 0, 1)
        np.testing.assert_allclose(got[i], expected, atol=1e-3)


def test_erase_and_color_jitter():
    images = torch.full((2, 3, 20, 30), 100.0)
    out = RandomErase().apply(images, torch.tensor([[0.1, 0.2, 0.5, 0.25], [0.0, 0.0, 0.0, 0.0]]))
    assert (out[0] == 0).all(0).sum() == 15 * 5 and (out[0, :, 4:9, 3:18] == 0).all()
    assert torch.equal(out[1], images[1])
    boxes = RandomErase(p=1.0).sample(1000, torch.Generator().manual_seed(3))
    assert (boxes[:, 2:] >= 0.2).all() and (boxes[:, 2:] <= 0.4).all() and (boxes[:, :2] + boxes[:, 2:] <= 1 + 1e-9).all()
    jitter = ColorJitter(0.4, 0.4, 0.4)
    rgb = torch.rand(2, 3, 8, 8) * 200
    # Brightness only: a plain product.
    torch.testing.assert_close(jitter.apply(rgb, torch.tensor([[1.2, 1.0, 1.0], [0.5, 1.0, 1.0]])),
                               (rgb * torch.tensor([1.2, 0.5]).view(2, 1, 1, 1)).clamp(0, 255))
    # Saturation 0: gray image, all channels equal.
    gray = jitter.apply(rgb, torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]]))
    assert torch.allclose(gray[:, 0], gray[:, 1]) and torch.allclose(gray[:, 1], gray[:, 2])
    f = jitter.sample(1000, torch.Generator().manual_seed(4))
    assert (f >= 0.6).all() and (f <= 1.4).all()


# ---------------------------------------------------------------------------------------------------------
# the pipeline


def test_eval_transform_places_keypoints_by_formula():
    inst = make_instance(np.random.default_rng(12))
    for use_udp in (False, True):
        out = TopDownTransform((48, 64), "coco17", use_udp=use_udp)(inst)
        x, y, w, h = inst.bbox
        center = np.array([x + w / 2, y + h / 2])
        scale = np.array([w, h]) * 1.25
        scale = np.array([scale[0], scale[0] / 0.75]) if scale[0] > scale[1] * 0.75 else np.array([scale[1] * 0.75, scale[1]])
        if use_udp:
            expected = (inst.keypoints - center) * (np.array([47, 63]) / scale) + np.array([23.5, 31.5])
        else:
            expected = (inst.keypoints - center) * (48 / scale[0]) + np.array([24, 32])
        np.testing.assert_allclose(out["keypoints"].numpy(), expected, atol=1e-3)
        np.testing.assert_allclose(out["center"].numpy(), center, rtol=1e-6)
        np.testing.assert_allclose(out["scale"].numpy(), scale, rtol=1e-6)
        assert out["image"].dtype == torch.uint8 and out["image"].shape == (3, 64, 48)
        assert not out["flipped"] and out["rotation"] == 0
        np.testing.assert_array_equal(out["visibility"].numpy(), np.minimum(inst.visibility, 1))


def test_boxes_are_clipped_to_the_image_like_mmpose_annotations():
    inst = make_instance(np.random.default_rng(19), 320, 240)
    inst.bbox = np.array([250.0, -10.0, 100.0, 100.0])  # crosses the right and top edges
    out = TopDownTransform((48, 64), "coco17")(inst)
    # mmpose: x1 = clip(x, 0, W-1), x2 = clip(x + w, 0, W-1) -> (250, 0, 319, 90)
    np.testing.assert_allclose(out["center"].numpy(), [284.5, 45.0])
    np.testing.assert_allclose(out["scale"].numpy(), [69 * 1.25, 69 * 1.25 / 0.75])  # 69 wide: width decides
    np.testing.assert_allclose(out["bbox"].numpy(), inst.bbox)  # the record's box is reported unchanged
    unclipped = TopDownTransform((48, 64), "coco17", clip_bbox=False)(inst)
    np.testing.assert_allclose(unclipped["center"].numpy(), [300.0, 40.0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_apply_batch_on_cuda_matches_cpu():
    rng = np.random.default_rng(20)
    instances = [make_instance(rng, 160, 120) for _ in range(4)]
    images = [torch.from_numpy(inst.image).permute(2, 0, 1) for inst in instances]
    t = TopDownTransform((48, 64), "coco17", augment=AugmentConfig.rtmpose(1))
    cpu = t.apply_batch(images, instances, generator=torch.Generator().manual_seed(0))
    gpu = t.apply_batch([im.cuda() for im in images], instances, generator=torch.Generator().manual_seed(0))
    for key, value in cpu.items():
        assert gpu[key].device.type == "cuda", key
        if key == "image":
            assert (gpu[key].cpu().float() - value.float()).abs().mean() < 0.5
        else:
            torch.testing.assert_close(gpu[key].cpu(), value, rtol=1e-5, atol=1e-4, msg=key)


def test_visibility_zeroed_outside_the_crop():
    inst = make_instance(np.random.default_rng(13))
    t = TopDownTransform((48, 64), "coco17")
    matrix = t(inst)["matrix"].double().numpy()
    # Place keypoints at chosen crop positions: the crop covers 0 <= x < 48, 0 <= y < 64.
    crop_points = np.array([[-0.01, 30], [48.01, 30], [20, -0.01], [20, 64.01],  # just outside each edge
                            [0.01, 0.01], [47.99, 63.99], [24, 32]])  # inside (margins above float32 error)
    inst.keypoints[:7] = crop_to_image(crop_points[None], matrix[None])[0]
    inst.visibility[:7] = 2
    out = t(inst)
    np.testing.assert_allclose(out["keypoints"][:7].numpy(), crop_points, atol=2e-3)
    np.testing.assert_array_equal(out["visibility"][:7].numpy(), [0, 0, 0, 0, 1, 1, 1])


def test_augmentation_is_deterministic_with_a_seeded_generator():
    rng = np.random.default_rng(14)
    instances = [make_instance(rng, 160, 120) for _ in range(3)]
    t = TopDownTransform((32, 40), "coco17", augment=AugmentConfig.rtmpose(1))

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        return [t(inst, generator=g) for inst in instances]

    a, b, c = run(5), run(5), run(6)
    for x, y in zip(a, b):
        for key in x:
            assert torch.equal(x[key], y[key]), key
    assert any(not torch.equal(x["matrix"], z["matrix"]) for x, z in zip(a, c))
    assert any(not torch.equal(x["image"], z["image"]) for x, z in zip(a, c))


def test_single_and_batched_paths_agree():
    rng = np.random.default_rng(15)
    inst = make_instance(rng, 200, 150)
    image = torch.from_numpy(inst.image).permute(2, 0, 1)
    for config in (AugmentConfig(), AugmentConfig(flip_prob=1.0, rotate_prob=1.0), AugmentConfig.rtmpose(2)):
        t = TopDownTransform((48, 64), "coco17", use_udp=True, augment=config)
        for seed in range(3):
            single = t(inst, generator=torch.Generator().manual_seed(seed))
            batched = t.apply_batch(image, [inst], generator=torch.Generator().manual_seed(seed))
            assert set(single) == set(batched)
            for key in single:
                if key == "image":
                    diff = (single[key].float() - batched[key][0].float()).abs()
                    assert diff.mean() < 1.5 and batched[key].dtype == torch.uint8, diff.mean()
                else:
                    torch.testing.assert_close(batched[key][0], single[key], rtol=1e-6, atol=1e-4, msg=key)


def test_apply_batch_without_instances_for_prediction():
    rng = np.random.default_rng(16)
    frame = torch.from_numpy(smooth_image(rng, 120, 160).astype(np.uint8)).permute(2, 0, 1)
    boxes = torch.tensor([[10.0, 20.0, 40.0, 80.0], [90.0, 5.0, 50.0, 100.0]])
    t = TopDownTransform((48, 64), "coco17", use_udp=False)
    out = t.apply_batch(frame, bboxes=boxes, float_images=True)
    assert out["image"].dtype == torch.float32 and out["image"].shape == (2, 3, 64, 48)
    center, scale = bbox_xywh_to_center_scale(boxes, 0.75)
    torch.testing.assert_close(out["center"], center)
    torch.testing.assert_close(out["scale"], scale)
    expected = crop_image(frame.permute(1, 2, 0).numpy(), out["matrix"][1].numpy(), (48, 64)).transpose(2, 0, 1)
    assert (out["image"][1] - torch.from_numpy(expected).float()).abs().mean() < 1.0
    assert (out["instance_id"] == -1).all() and (out["visibility"] == 0).all()


def test_collate_and_batch():
    rng = np.random.default_rng(17)
    t = TopDownTransform((32, 40), "coco17", augment=True)
    samples = [t(make_instance(rng, 100, 80), generator=torch.Generator().manual_seed(i)) for i in range(4)]
    batch = collate(samples)
    assert isinstance(batch, Batch) and len(batch) == 4
    assert batch.image.shape == (4, 3, 40, 32) and batch.keypoints.shape == (4, 17, 2) and batch.matrix.shape == (4, 2, 3)
    for i, s in enumerate(samples):
        assert torch.equal(batch.keypoints[i], s["keypoints"]) and batch.image_id[i] == s["image_id"]
    assert batch.to("cpu").image is not None and set(batch.as_dict()) == set(samples[0])
    loader = torch.utils.data.DataLoader(samples, batch_size=2, collate_fn=collate)
    assert [len(b) for b in loader] == [2, 2]
    # A leading (keypoint / instance) dimension that differs is zero-padded: a multi-dataset batch.
    short = dict(samples[1], keypoints=torch.ones(14, 2), visibility=torch.ones(14))
    mixed = collate([samples[0], short])
    assert mixed.keypoints.shape == (2, 17, 2) and torch.equal(mixed.keypoints[1, :14], torch.ones(14, 2))
    assert not mixed.keypoints[1, 14:].any() and not mixed.visibility[1, 14:].any()  # padding is unlabeled
    bad = dict(samples[1], keypoints=torch.zeros(17, 3))
    with pytest.raises(PoseforgeError, match="'keypoints' has different shapes"):
        collate([samples[0], bad])


def test_bad_records_raise_one_line_errors():
    inst = make_instance(np.random.default_rng(18))
    t = TopDownTransform((32, 40), "coco17")
    with pytest.raises(DataError, match="expected 17 keypoints"):
        t(inst.copy(keypoints=np.zeros((14, 2)), visibility=np.zeros(14)))
    with pytest.raises(DataError, match=f"annotation {inst.instance_id}: field 'bbox': empty box"):
        t(inst.copy(bbox=np.array([10.0, 10.0, 0.0, 0.0])))
    with pytest.raises(DataError, match="x.jpg: annotation .*: field 'bbox': empty box"):  # entirely outside the image
        t.apply_batch(torch.zeros(3, 240, 320, dtype=torch.uint8), [inst, inst.copy(bbox=np.array([400.0, 300, 50, 50]),
                                                                                     image_path="x.jpg")])
    with pytest.raises(DataError, match=f"image {inst.image_id}: annotation {inst.instance_id}: field 'image_path'"):
        t(inst.copy(image=None))
    with pytest.raises(PoseforgeError, match="augment must be"):
        TopDownTransform((32, 40), "coco17", augment="yes")


# ---------------------------------------------------------------------------------------------------------
# real data


def test_real_coco_image_crops_around_the_box(peer_data):
    data = read_coco(peer_data / "coco" / "test_coco.json")
    inst = max(data.instances, key=lambda i: i.num_labeled)
    image = load_image(inst.image_path)
    assert image.shape[:2] == (inst.image_size[1], inst.image_size[0])
    out = TopDownTransform((192, 256), "coco17", use_udp=False)(inst)
    crop = out["image"].permute(1, 2, 0).numpy()
    labeled = inst.visibility > 0
    # Every labeled keypoint of the annotated box lands inside the padded crop, where the formula puts it.
    x, y, w, h = inst.bbox
    scale = max(w * 1.25, h * 1.25 * 0.75)
    expected = (inst.keypoints - [x + w / 2, y + h / 2]) * (192 / scale) + [96, 128]
    np.testing.assert_allclose(out["keypoints"].numpy()[labeled], expected[labeled], atol=1e-3)
    assert (out["visibility"].numpy()[labeled] == 1).all()
    # The crop's pixels are the box's pixels: the central half of the crop, area-averaged to 12x16,
    # equals the image region it maps to (averaged the same way), RGB channel for channel.
    a, b = np.array([48, 64]), np.array([144, 192])  # crop pixels [a, b), i.e. the area [a - 0.5, b - 0.5)
    to_image = lambda p: (p - 0.5 - [96, 128]) * (scale / 192) + [x + w / 2, y + h / 2]  # noqa: E731
    (x0, y0), (x1, y1) = np.round(to_image(a) + 0.5).astype(int), np.round(to_image(b) + 0.5).astype(int)
    original = cv2.resize(image[y0:y1, x0:x1], (12, 16), interpolation=cv2.INTER_AREA).astype(float)
    cropped = cv2.resize(np.ascontiguousarray(crop[a[1]:b[1], a[0]:b[0]]), (12, 16), interpolation=cv2.INTER_AREA)
    error = np.abs(original - cropped).mean()
    assert error < 4, error
    assert np.abs(original - cropped[..., ::-1]).mean() > 3 * error  # channel order matters: RGB, not BGR


# ---------------------------------------------------------------------------------------------------------
# mmpose oracle

ORACLE_SCRIPT = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import mm_oracle_shim  # noqa: F401  (stubs compiled ops before mmpose imports)
import numpy as np
from mmpose.utils import register_all_modules
from mmpose.structures.bbox import get_warp_matrix, get_udp_warp_matrix
from mmpose.datasets import CocoDataset
register_all_modules()
req = json.load(open(sys.argv[2]))
out = {}
for i, (c, s, r, size) in enumerate(req["matrices"]):
    out[f"std_{i}"] = get_warp_matrix(np.array(c), np.array(s), r, tuple(size))
    out[f"udp_{i}"] = get_udp_warp_matrix(np.array(c), np.array(s), r, tuple(size))
variants = {
    "std": [], "udp": [], "std_flip": [dict(type="RandomFlip", prob=1.0)], "udp_flip": [dict(type="RandomFlip", prob=1.0)],
    "udp_upper": [dict(type="RandomHalfBody", prob=1.0, upper_prioritized_prob=1.0)],
    "udp_lower": [dict(type="RandomHalfBody", prob=1.0, upper_prioritized_prob=0.0)],
}
for name, aug in variants.items():
    pipeline = [dict(type="LoadImage"), dict(type="GetBBoxCenterScale")] + aug + [
        dict(type="TopdownAffine", input_size=(192, 256), use_udp=name.startswith("udp"))]
    ds = CocoDataset(ann_file=req["ann_file"], data_root=req["data_root"], data_prefix=dict(img=""),
                     data_mode="topdown", test_mode=True, pipeline=pipeline)
    for j in range(len(ds)):
        r = ds[j]
        key = f"{name}_{r['id']}"
        out[key + "_img"] = r["img"]
        out[key + "_kp"] = r["transformed_keypoints"][0]
        out[key + "_center"] = r["input_center"]
        out[key + "_scale"] = r["input_scale"]
np.savez(sys.argv[3], **out)
"""


def _oracle_python() -> Path | None:
    env = os.environ.get("POSEFORGE_ORACLE_PYTHON")
    candidates = [Path(env)] if env else [ROOT.parent / "oracle-venv" / "bin" / "python",
                                          Path.home() / ".cache" / "poseforge-mm-oracle" / "bin" / "python"]
    return next((c for c in candidates if c.is_file()), None)


ORACLE_MATRICES = [
    ([100.0, 50.0], [60.0, 80.0], 0.0, [192, 256]),
    ([100.0, 50.0], [60.0, 80.0], 90.0, [192, 256]),
    ([321.5, 77.25], [150.0, 200.0], -37.5, [48, 64]),
    ([10.0, 400.0], [333.0, 111.0], 12.0, [288, 384]),
    ([640.0, 480.0], [96.0, 128.0], 179.0, [192, 256]),
]


@pytest.fixture(scope="module")
def mmpose_reference(shared_dir, tmp_path_factory):
    python = _oracle_python()
    if python is None:
        pytest.skip("mmpose oracle venv not found (../oracle-venv, ~/.cache/poseforge-mm-oracle or $POSEFORGE_ORACLE_PYTHON); "
                    "build it with ../shared/oracle/setup.sh")
    work = tmp_path_factory.mktemp("oracle")
    request = {"matrices": ORACLE_MATRICES, "ann_file": "test_coco.json", "data_root": str(shared_dir / "peer-data" / "coco")}
    (work / "request.json").write_text(json.dumps(request))
    result = subprocess.run([str(python), "-c", ORACLE_SCRIPT, str(shared_dir / "oracle"), str(work / "request.json"),
                             str(work / "out.npz")], capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        pytest.fail(f"mmpose oracle failed:\n{result.stderr[-3000:]}")
    return dict(np.load(work / "out.npz"))


def test_matrices_equal_mmpose(mmpose_reference):
    for i, (c, s, r, size) in enumerate(ORACLE_MATRICES):
        for kind, udp in (("std", False), ("udp", True)):
            ours = get_affine_matrix(np.array(c), np.array(s), r, tuple(size), use_udp=udp)
            ref = mmpose_reference[f"{kind}_{i}"]
            # mmpose works in float32; compare to its precision
            np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-4 * max(1.0, np.abs(ref).max()), err_msg=f"{kind} {i}")


@pytest.mark.parametrize("variant", ["std", "udp", "std_flip", "udp_flip", "udp_upper", "udp_lower"])
def test_pipeline_equals_mmpose_on_real_images(mmpose_reference, peer_data, variant):
    config = {
        "std": NO_AUG, "udp": NO_AUG,
        "std_flip": dataclasses.replace(NO_AUG, flip_prob=1.0), "udp_flip": dataclasses.replace(NO_AUG, flip_prob=1.0),
        "udp_upper": dataclasses.replace(NO_AUG, half_body_prob=1.0, half_body_upper_prioritized_prob=1.0),
        "udp_lower": dataclasses.replace(NO_AUG, half_body_prob=1.0, half_body_upper_prioritized_prob=0.0),
    }[variant]
    t = TopDownTransform((192, 256), "coco17", use_udp=variant.startswith("udp"), augment=config)
    data = read_coco(peer_data / "coco" / "test_coco.json")
    compared = 0
    for inst in data.instances:
        key = f"{variant}_{inst.instance_id}"
        if key + "_img" not in mmpose_reference:  # mmpose drops annotations without keypoints
            continue
        out = t(inst, generator=torch.Generator().manual_seed(0))
        np.testing.assert_allclose(out["center"].numpy(), mmpose_reference[key + "_center"], rtol=1e-5, err_msg=key)
        np.testing.assert_allclose(out["scale"].numpy(), mmpose_reference[key + "_scale"], rtol=1e-5, err_msg=key)
        np.testing.assert_allclose(out["keypoints"].numpy(), mmpose_reference[key + "_kp"], atol=2e-3, err_msg=key)
        ref_rgb = mmpose_reference[key + "_img"][..., ::-1].astype(np.float64)  # mmpose crops BGR
        diff = np.abs(out["image"].permute(1, 2, 0).numpy() - ref_rgb)
        # Same matrix, same decoder; OpenCV 4.x (oracle) and 5.x warpAffine round differently (mean ~0.13).
        assert diff.mean() < 0.3 and diff.max() <= 8, (key, diff.mean(), diff.max())
        compared += 1
    assert compared == 12
