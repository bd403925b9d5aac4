"""Drawing helpers: skeleton overlays, contact sheets, colourized dense maps."""
from __future__ import annotations

import numpy as np
import pytest

from poseforge.errors import PoseforgeError
from poseforge.inference.drawing import colorize_depth, colorize_normals, colorize_parts, contact_sheet, draw_pose, part_palette
from poseforge.keypoints import get_keypoint_set


def test_draw_pose_uses_the_sets_colours_and_respects_the_threshold():
    ks = get_keypoint_set("coco17")
    image = np.zeros((100, 120, 3), dtype=np.uint8)
    kps = np.stack([np.linspace(10, 110, 17), np.linspace(10, 90, 17)], axis=1)[None]
    scores = np.ones((1, 17))
    scores[0, 3] = 0.1  # below the threshold: not drawn
    out = draw_pose(image, kps, scores, "coco17", threshold=0.3, radius=2, thickness=1)
    assert not image.any()  # the input is untouched
    x, y = np.round(kps[0, 0]).astype(int)
    assert tuple(out[y, x]) == ks.keypoint_colors[0]
    x3, y3 = np.round(kps[0, 3]).astype(int)
    assert not out[y3 - 1:y3 + 2, x3 - 1:x3 + 2].any() or tuple(out[y3, x3]) != ks.keypoint_colors[3]
    boxed = draw_pose(image, kps, scores, ks, boxes=np.array([[5, 5, 50, 40]]), thickness=1)
    assert boxed[5, 30].min() > 200 and not out[5, 30].any()  # the box edge is drawn (anti-aliased white)


def test_draw_pose_draws_occluded_points_hollow_and_checks_shapes():
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    kps = np.full((1, 17, 2), 32.0)
    vis = np.zeros((1, 17))
    vis[0, 0] = 1.0  # one labelled point: no links
    hollow = draw_pose(image, kps, vis, "coco17", threshold=0.5, occluded_below=1.5, radius=5, thickness=1)
    filled = draw_pose(image, kps, vis * 2, "coco17", threshold=0.5, occluded_below=1.5, radius=5, thickness=1)
    assert not hollow[32, 32].any() and filled[32, 32].any()
    with pytest.raises(PoseforgeError, match="expected keypoints"):
        draw_pose(image, np.zeros((1, 16, 2)), np.ones((1, 16)), "coco17")
    with pytest.raises(PoseforgeError, match="RGB"):
        draw_pose(np.zeros((4, 4, 4), np.uint8), kps, vis, "coco17")


def test_contact_sheet_tiles_and_letterboxes():
    a = np.full((20, 30, 3), 200, np.uint8)
    b = np.full((10, 30, 3), 100, np.uint8)
    sheet = contact_sheet([a, b, a], cols=2, pad=1, labels=["x", "", "z"])
    assert sheet.shape == (2 * 20 + 3, 2 * 30 + 3, 3)
    assert tuple(sheet[15, 40]) == (100, 100, 100)  # b centred in its 20-high cell
    assert tuple(sheet[2, 31 + 1 + 15]) == (0, 0, 0)  # letterbox band above b
    with pytest.raises(PoseforgeError):
        contact_sheet([], cols=2)


def test_colorize_maps():
    parts = np.array([[0, 1], [27, 5]])
    rgb = colorize_parts(parts)
    assert rgb.shape == (2, 2, 3) and not rgb[0, 0].any() and len({tuple(c) for c in part_palette(28)}) == 28
    with pytest.raises(PoseforgeError):
        colorize_parts(np.array([[28]]))
    depth = np.array([[0.0, 1.0], [2.0, 3.0]], dtype=np.float32)
    d = colorize_depth(depth, near=1.0, far=3.0)
    assert not d[0, 0].any() and d[0, 1].sum() > d[1, 1].sum()  # near is bright, nothing is black
    assert not colorize_depth(depth, np.zeros((2, 2), bool)).any()
    n = np.zeros((1, 2, 3))
    n[0, 1] = [0.0, 0.0, -1.0]
    c = colorize_normals(n)
    assert not c[0, 0].any() and tuple(c[0, 1]) == (128, 128, 0)
