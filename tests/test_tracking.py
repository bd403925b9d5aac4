"""Tracking: the assignment solver, the tracker's ids through crossings, exits and re-entries, One-Euro smoothing."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from poseforge.errors import PoseforgeError
from poseforge.inference.tracking import OneEuroFilter, PoseTracker, box_iou_np, linear_assignment, one_euro_step, oks_np


def _brute_force(cost: np.ndarray) -> float:
    n, m = cost.shape
    if n <= m:
        return min(cost[np.arange(n), list(p)].sum() for p in itertools.permutations(range(m), n))
    return min(cost[list(p), np.arange(m)].sum() for p in itertools.permutations(range(n), m))


@pytest.mark.parametrize("shape", [(1, 1), (3, 3), (2, 5), (5, 2), (4, 6), (6, 6)])
def test_linear_assignment_is_optimal(shape):
    rng = np.random.default_rng(sum(shape))
    for trial in range(20):
        cost = rng.random(shape) if trial % 2 else rng.integers(0, 3, shape).astype(float)  # ties too
        rows, cols = linear_assignment(cost)
        assert len(rows) == min(shape) and len(set(rows.tolist())) == len(rows) and len(set(cols.tolist())) == len(cols)
        assert np.all(np.diff(rows) > 0)
        assert cost[rows, cols].sum() == pytest.approx(_brute_force(cost))


def test_linear_assignment_takes_every_row_or_column_once_on_larger_problems():
    rng = np.random.default_rng(1)
    for shape in [(20, 20), (15, 30), (30, 12)]:
        cost = rng.normal(size=shape)
        rows, cols = linear_assignment(cost)
        assert len(rows) == min(shape) and np.all(np.diff(rows) > 0) and len(set(cols.tolist())) == len(cols)
        # no swap of two assigned pairs lowers the cost (a necessary condition of optimality)
        c = cost[rows, cols]
        swapped = cost[rows[:, None], cols[None, :]] + cost[rows[None, :], cols[:, None]]
        assert (swapped >= c[:, None] + c[None, :] - 1e-9).all()


def test_linear_assignment_edge_cases():
    rows, cols = linear_assignment(np.zeros((0, 3)))
    assert rows.size == 0 and cols.size == 0
    with pytest.raises(PoseforgeError, match="NaN or infinite"):
        linear_assignment(np.array([[np.nan, 1.0]]))


def test_similarity_measures():
    a = np.array([[0, 0, 10, 10]], float)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], float)
    assert np.allclose(box_iou_np(a, b), [[1.0, 50 / 150, 0.0]])
    k = np.zeros((1, 17, 2))
    sig = np.full(17, 0.1)
    v = np.ones((1, 17), bool)
    same = oks_np(k, v, k, v, np.array([100.0]), sig)
    moved = oks_np(k, v, k + 5.0, v, np.array([100.0]), sig)
    none = oks_np(k, v, k, np.zeros((1, 17), bool), np.array([100.0]), sig)
    assert same[0, 0] == pytest.approx(1.0) and 0 < moved[0, 0] < 1 and none[0, 0] == 0.0


def _person(cx: float, cy: float, height: float, template: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    kpts = np.array([cx, cy]) + template * height
    box = np.array([cx - 0.25 * height, cy - 0.5 * height, cx + 0.25 * height, cy + 0.5 * height])
    return box, kpts


def _template(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.uniform(-0.2, 0.2, 17), np.linspace(-0.45, 0.45, 17)], 1)


@pytest.mark.parametrize("iou_weight", [0.5, 1.0])
def test_ids_stay_with_their_people_through_a_crossing(iou_weight):
    """Two people walk through each other (boxes fully overlap mid-way); one is hidden for 3 frames."""
    rng = np.random.default_rng(0)
    tracker = PoseTracker("coco17", iou_weight=iou_weight)
    templates = [_template(1), _template(2)]
    seen: dict[int, set[int]] = {0: set(), 1: set()}
    for f in range(40):
        xs = [60 + 10 * f, 460 - 10 * f]
        boxes, kpts, who = [], [], []
        for p in (0, 1):
            if p == 1 and 19 <= f <= 21:  # behind person 0 at the crossing: not detected
                continue
            box, k = _person(xs[p], 200 + 3 * p, 160, templates[p])
            boxes.append(box + rng.normal(0, 1.5, 4))
            kpts.append(k + rng.normal(0, 1.5, k.shape))
            who.append(p)
        order = rng.permutation(len(boxes))  # detectors return people in any order
        ids, _ = tracker.update(np.array(boxes)[order], np.array(kpts)[order], np.full((len(boxes), 17), 0.9))
        for i, track in zip(np.array(who)[order], ids):
            seen[int(i)].add(int(track))
    assert len(seen[0]) == 1 and len(seen[1]) == 1 and seen[0] != seen[1]


def test_new_people_get_new_ids_and_lost_tracks_expire():
    tracker = PoseTracker("coco17", max_age=2)
    t = _template(3)
    b0, k0 = _person(100, 100, 100, t)
    b1, k1 = _person(400, 100, 100, t)
    ids, _ = tracker.update(b0[None], k0[None])
    assert ids.tolist() == [0]
    ids, _ = tracker.update(np.stack([b0, b1]), np.stack([k0, k1]))
    assert ids.tolist() == [0, 1]
    for _ in range(3):  # person 1 leaves; after max_age frames its track is gone
        ids, _ = tracker.update(b0[None], k0[None])
        assert ids.tolist() == [0]
    assert len(tracker) == 1
    ids, _ = tracker.update(np.stack([b0, b1]), np.stack([k0, k1]))
    assert ids.tolist() == [0, 2]  # ids are never reused
    tracker.reset()
    assert tracker.update(b1[None], k1[None])[0].tolist() == [0]


def test_far_away_pose_is_not_linked():
    tracker = PoseTracker("coco17", min_similarity=0.3)
    t = _template(4)
    b0, k0 = _person(100, 100, 80, t)
    b1, k1 = _person(500, 300, 80, t)
    tracker.update(b0[None], k0[None])
    assert tracker.update(b1[None], k1[None])[0].tolist() == [1]


def test_boxes_only_tracking_and_shape_errors():
    tracker = PoseTracker("coco17")
    assert tracker.update(np.array([[0, 0, 10, 10.0]]))[0].tolist() == [0]
    assert tracker.update(np.array([[1, 0, 11, 10.0]]))[0].tolist() == [0]
    with pytest.raises(PoseforgeError, match="expected keypoints"):
        tracker.update(np.array([[0, 0, 10, 10.0]]), np.zeros((1, 5, 2)))
    with pytest.raises(PoseforgeError, match="iou_weight"):
        PoseTracker(iou_weight=1.5)


def test_one_euro_reduces_jitter_and_follows_motion():
    rng = np.random.default_rng(0)
    n = 300
    still = 100 + rng.normal(0, 2.0, (n, 1, 2))
    filt = OneEuroFilter(min_cutoff=0.05, beta=0.0)
    x, dx = still[0], np.zeros((1, 2))
    out = [x]
    for f in range(1, n):
        x, dx = filt.step(still[f], x, dx, 1.0)
        out.append(x)
    # with beta = 0 the filter is an exponential average with alpha = 1 / (1 + tau / dt), tau = 1 / (2 pi fc):
    # white noise keeps sqrt(alpha / (2 - alpha)) of its standard deviation
    alpha = 1 / (1 + 1 / (2 * np.pi * 0.05))
    ratio = np.std(np.array(out)[50:]) / np.std(still[50:])
    assert ratio == pytest.approx(np.sqrt(alpha / (2 - alpha)), rel=0.2)
    # a fast ramp: beta > 0 raises the cutoff with speed, so the filter lags less
    ramp = np.stack([np.arange(100, dtype=float) * 8, np.zeros(100)], 1)[:, None, :]
    lags = []
    for beta in (0.0, 0.5):
        x, dx = ramp[0], np.zeros((1, 2))
        for f in range(1, 100):
            x, dx = one_euro_step(ramp[f], x, dx, 1.0, 0.05, beta, 1.0)
        lags.append(float(ramp[-1, 0, 0] - x[0, 0]))
    assert lags[1] < 0.25 * lags[0]


def test_tracker_smoothing_changes_only_keypoints():
    rng = np.random.default_rng(2)
    t = _template(5)
    smooth = PoseTracker("coco17", smoothing=OneEuroFilter(min_cutoff=0.05, beta=0.0))
    raw_track = PoseTracker("coco17")
    jitter_raw, jitter_smooth = [], []
    for f in range(60):
        box, k = _person(200, 200, 120, t)
        noisy = k + rng.normal(0, 2.0, k.shape)
        ids_s, ks = smooth.update(box[None], noisy[None], np.full((1, 17), 0.9))
        ids_r, kr = raw_track.update(box[None], noisy[None], np.full((1, 17), 0.9))
        assert ids_s.tolist() == ids_r.tolist() == [0]
        assert np.array_equal(kr[0], noisy)
        if f >= 20:
            jitter_raw.append(kr[0] - k)
            jitter_smooth.append(ks[0] - k)
    assert np.std(jitter_smooth) < 0.5 * np.std(jitter_raw)
