"""Multi-person pose tracking for video: stable ids by box IoU + keypoint OKS, optional One-Euro smoothing.

Each frame, every live track is moved forward by its velocity (constant-velocity prediction, so two
people who cross keep their ids; box sizes are averaged over frames so that one merged detection
does not derail a track), then compared with every new pose::

    similarity = iou_weight * IoU(boxes) + (1 - iou_weight) * OKS(keypoints)

and the best one-to-one assignment (Hungarian, :func:`linear_assignment`) links them; pairs below
``min_similarity`` stay unlinked. Unlinked poses start new tracks (new ids, never reused); tracks not
seen for more than ``max_age`` frames end. With ``smoothing`` the keypoints of each track go through a
One-Euro filter (Casiez et al., CHI 2012): little lag when moving fast, little jitter when still.

Everything is vectorized over tracks and keypoints; the assignment's inner loop is over tracks only.
``lap`` is used for the assignment when installed; otherwise poseforge's own Hungarian runs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import PoseforgeError
from ..keypoints import KeypointSet, get_keypoint_set

__all__ = ["linear_assignment", "OneEuroFilter", "one_euro_step", "PoseTracker", "box_iou_np", "oks_np"]


# ---------------------------------------------------------------------------------------------- assignment
def linear_assignment(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost one-to-one assignment of a rectangular ``cost [n, m]`` matrix
    (``scipy.optimize.linear_sum_assignment``, checked inputs).

    Returns ``(rows, cols)`` index arrays of the ``min(n, m)`` assigned pairs, rows ascending.
    """
    from scipy.optimize import linear_sum_assignment

    cost = np.asarray(cost, dtype=np.float64)
    if cost.ndim != 2:
        raise PoseforgeError(f"linear_assignment: expected a 2-D cost matrix, got shape {cost.shape}")
    if not np.isfinite(cost).all():
        raise PoseforgeError("linear_assignment: the cost matrix has NaN or infinite entries")
    rows, cols = linear_sum_assignment(cost)
    return rows.astype(np.int64), cols.astype(np.int64)


# ---------------------------------------------------------------------------------------------- similarity
def box_iou_np(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU ``[N, M]`` of xyxy boxes."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(-1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(-1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def oks_np(kpts_a: np.ndarray, valid_a: np.ndarray, kpts_b: np.ndarray, valid_b: np.ndarray, areas_b: np.ndarray,
           sigmas: np.ndarray) -> np.ndarray:
    """OKS ``[N, M]`` between poses ``a [N, K, 2]`` and ``b [M, K, 2]`` over keypoints valid in both,
    with ``b``'s object areas (0 where no keypoint is shared)."""
    d2 = ((kpts_a[:, None] - kpts_b[None]) ** 2).sum(-1)  # [N, M, K]
    var = (2 * sigmas) ** 2
    e = d2 / (2 * var[None, None] * np.maximum(areas_b, 1.0)[None, :, None])
    both = valid_a[:, None] & valid_b[None]
    count = both.sum(-1)
    return np.where(count > 0, (np.exp(-e) * both).sum(-1) / np.maximum(count, 1), 0.0)


# ---------------------------------------------------------------------------------------------- One-Euro
def _alpha(cutoff: np.ndarray | float, dt: np.ndarray | float) -> np.ndarray:
    tau = 1.0 / (2 * math.pi * np.asarray(cutoff))
    return 1.0 / (1.0 + tau / np.asarray(dt))


def one_euro_step(x: np.ndarray, x_prev: np.ndarray, dx_prev: np.ndarray, dt: np.ndarray | float,
                  min_cutoff: float, beta: float, d_cutoff: float) -> tuple[np.ndarray, np.ndarray]:
    """One One-Euro update of points ``x [..., 2]`` given the previous filtered points and speeds.

    ``dt`` broadcasts against ``x[..., 0]``. Returns ``(filtered x, filtered speed)``; the cutoff
    grows with each point's speed (``min_cutoff + beta * |speed|``).
    """
    dt = np.maximum(np.asarray(dt, dtype=np.float64), 1e-6)[..., None]
    dx = (x - x_prev) / dt
    a_d = _alpha(d_cutoff, dt)
    dx_hat = a_d * dx + (1 - a_d) * dx_prev
    speed = np.linalg.norm(dx_hat, axis=-1, keepdims=True)
    a = _alpha(min_cutoff + beta * speed, dt)
    return a * x + (1 - a) * x_prev, dx_hat


@dataclass
class OneEuroFilter:
    """One-Euro settings (units: frames when no timestamps are given, else seconds).

    ``min_cutoff`` lower = smoother when still; ``beta`` higher = less lag when moving.
    """

    min_cutoff: float = 1.0
    beta: float = 0.05
    d_cutoff: float = 1.0

    def step(self, x: np.ndarray, x_prev: np.ndarray, dx_prev: np.ndarray, dt: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        return one_euro_step(x, x_prev, dx_prev, dt, self.min_cutoff, self.beta, self.d_cutoff)


# ---------------------------------------------------------------------------------------------- tracker
@dataclass
class _Tracks:
    """Live tracks as stacked arrays (T tracks, K keypoints)."""

    ids: np.ndarray
    boxes: np.ndarray  # [T, 4] xyxy: last seen centre, size averaged over frames
    keypoints: np.ndarray  # [T, K, 2] (smoothed when smoothing)
    valid: np.ndarray  # [T, K] keypoint seen with a score above the threshold
    velocity: np.ndarray  # [T, 2] box-centre pixels per frame
    age: np.ndarray  # [T] frames since last seen
    last_time: np.ndarray  # [T]
    speed: np.ndarray = field(default=None)  # [T, K, 2] One-Euro speed state

    @classmethod
    def empty(cls, k: int) -> "_Tracks":
        return cls(np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros((0, k, 2)), np.zeros((0, k), bool), np.zeros((0, 2)),
                   np.zeros(0, np.int64), np.zeros(0), np.zeros((0, k, 2)))

    def take(self, index: np.ndarray) -> "_Tracks":
        return _Tracks(*(getattr(self, f)[index] for f in ("ids", "boxes", "keypoints", "valid", "velocity", "age",
                                                              "last_time", "speed")))

    @staticmethod
    def concat(a: "_Tracks", b: "_Tracks") -> "_Tracks":
        return _Tracks(*(np.concatenate([getattr(a, f), getattr(b, f)]) for f in (
            "ids", "boxes", "keypoints", "valid", "velocity", "age", "last_time", "speed")))


class PoseTracker:
    """Give poses stable ids across video frames (see the module doc).

    Args:
        keypoint_set: the set of the poses (OKS sigmas).
        iou_weight: weight of box IoU in the similarity (the rest is OKS); 1.0 tracks by boxes only.
        min_similarity: the lowest similarity that links a pose to a track.
        max_age: frames a track survives without being seen.
        keypoint_threshold: keypoints scoring at or below it are ignored by OKS.
        smoothing: ``True`` or a :class:`OneEuroFilter` to smooth each track's keypoints.
        use_velocity: predict tracks forward by their velocity before matching.
    """

    def __init__(self, keypoint_set: str | KeypointSet = "coco17", iou_weight: float = 0.5, min_similarity: float = 0.2,
                 max_age: int = 15, keypoint_threshold: float = 0.3, smoothing: bool | OneEuroFilter = False,
                 use_velocity: bool = True) -> None:
        self.keypoint_set = get_keypoint_set(keypoint_set)
        if not 0.0 <= iou_weight <= 1.0:
            raise PoseforgeError(f"PoseTracker: iou_weight must be in [0, 1], got {iou_weight}")
        self.iou_weight = float(iou_weight)
        self.min_similarity = float(min_similarity)
        self.max_age = int(max_age)
        self.keypoint_threshold = float(keypoint_threshold)
        self.filter = OneEuroFilter() if smoothing is True else (smoothing or None)
        self.use_velocity = bool(use_velocity)
        self.sigmas = self.keypoint_set.sigmas_array()
        self.reset()

    def reset(self) -> None:
        """Forget every track (ids restart at 0)."""
        self.tracks = _Tracks.empty(self.keypoint_set.num_keypoints)
        self.next_id = 0
        self.frame = 0

    def __len__(self) -> int:
        return int(len(self.tracks.ids))

    def similarity(self, boxes: np.ndarray, keypoints: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """``[N, T]`` similarity of new poses to the live tracks (predicted to this frame)."""
        t = self.tracks
        steps = (t.age + 1).astype(np.float64)[:, None]
        shift = t.velocity * steps if self.use_velocity else np.zeros_like(t.velocity)
        pred_boxes = t.boxes + np.concatenate([shift, shift], 1)
        pred_kpts = t.keypoints + shift[:, None, :]
        sim = box_iou_np(boxes, pred_boxes)
        if self.iou_weight < 1.0:
            areas = np.clip(pred_boxes[:, 2:] - pred_boxes[:, :2], 0, None).prod(-1)
            oks = oks_np(keypoints, valid, pred_kpts, t.valid, areas, self.sigmas)
            sim = self.iou_weight * sim + (1 - self.iou_weight) * oks
        return sim

    def update(self, boxes: np.ndarray, keypoints: np.ndarray | None = None, scores: np.ndarray | None = None,
               timestamp: float | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Link one frame's poses to tracks.

        Args:
            boxes: ``[N, 4]`` xyxy.
            keypoints, scores: ``[N, K, 2]`` and ``[N, K]`` (None: track by boxes only).
            timestamp: the frame time in seconds (default: the frame count), for the smoothing.

        Returns:
            ``(track ids [N], keypoints [N, K, 2] smoothed when smoothing is on, else as given)``.
        """
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        n, k = boxes.shape[0], self.keypoint_set.num_keypoints
        if keypoints is None:
            kpts, valid = np.zeros((n, k, 2)), np.zeros((n, k), bool)
        else:
            kpts = np.asarray(keypoints, dtype=np.float64)
            if kpts.shape != (n, k, 2):
                raise PoseforgeError(f"PoseTracker: expected keypoints [{n}, {k}, 2], got {kpts.shape}")
            sc = np.ones((n, k)) if scores is None else np.asarray(scores, dtype=np.float64).reshape(n, k)
            valid = sc > self.keypoint_threshold
        now = float(self.frame if timestamp is None else timestamp)
        self.frame += 1
        t = self.tracks
        det_idx = trk_idx = np.zeros(0, dtype=np.int64)
        if n and len(t.ids):
            sim = self.similarity(boxes, kpts, valid)
            rows, cols = linear_assignment(1.0 - sim)
            good = sim[rows, cols] >= self.min_similarity
            det_idx, trk_idx = rows[good], cols[good]

        out_ids = np.full(n, -1, dtype=np.int64)
        out_kpts = kpts.copy()
        # matched: update state (velocity from the box-centre move, smoothing from the last filtered points)
        if len(det_idx):
            m = t.take(trk_idx)
            centre_new = (boxes[det_idx, :2] + boxes[det_idx, 2:]) / 2
            centre_old = (m.boxes[:, :2] + m.boxes[:, 2:]) / 2
            steps = (m.age + 1).astype(np.float64)[:, None]
            move = (centre_new - centre_old) / steps
            velocity = 0.5 * m.velocity + 0.5 * move
            new_k = kpts[det_idx]
            speed = m.speed
            if self.filter is not None:
                dt = np.maximum(now - m.last_time, 1e-6)[:, None]
                prev = np.where(m.valid[..., None], m.keypoints, new_k)  # a keypoint never seen starts unfiltered
                filtered, speed = self.filter.step(new_k, prev, m.speed, dt)
                new_k = filtered
                out_kpts[det_idx] = filtered
            # the box size is averaged over frames: one merged or clipped detection (people overlapping)
            # does not distort the track's next prediction
            size = 0.5 * (m.boxes[:, 2:] - m.boxes[:, :2]) + 0.5 * (boxes[det_idx, 2:] - boxes[det_idx, :2])
            t.boxes[trk_idx] = np.concatenate([centre_new - size / 2, centre_new + size / 2], 1)
            t.keypoints[trk_idx] = np.where(valid[det_idx][..., None], new_k, m.keypoints + m.velocity[:, None] * steps[:, None])
            t.valid[trk_idx] = valid[det_idx] | m.valid
            t.velocity[trk_idx] = velocity
            t.speed[trk_idx] = speed
            t.age[trk_idx] = -1  # becomes 0 below
            t.last_time[trk_idx] = now
            out_ids[det_idx] = t.ids[trk_idx]
        t.age += 1
        alive = t.age <= self.max_age
        self.tracks = t.take(np.flatnonzero(alive))
        # unmatched poses start tracks
        new = np.setdiff1d(np.arange(n), det_idx)
        if len(new):
            ids = np.arange(self.next_id, self.next_id + len(new), dtype=np.int64)
            self.next_id += len(new)
            born = _Tracks(ids, boxes[new].copy(), kpts[new].copy(), valid[new].copy(), np.zeros((len(new), 2)),
                           np.zeros(len(new), np.int64), np.full(len(new), now), np.zeros((len(new), k, 2)))
            self.tracks = _Tracks.concat(self.tracks, born)
            out_ids[new] = ids
        return out_ids, out_kpts

    def update_result(self, result) -> None:
        """Set ``result.track_ids`` (and smooth ``result.keypoints``) of a :class:`~.predictor.PoseResult`."""
        ids, kpts = self.update(result.boxes, result.keypoints, result.keypoint_scores, result.timestamp)
        result.track_ids = ids
        if self.filter is not None:
            result.keypoints = kpts.astype(result.keypoints.dtype)
