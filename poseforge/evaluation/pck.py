"""Distance metrics on matched keypoints: PCK@alpha, its AUC and the end-point error (EPE); the box-height
normalized error and the mean-pose reference it is compared with; how left/right pairs are placed (own
side, or swapped / collapsed onto one point).

Semantics of mmpose's ``keypoint_pck_accuracy``, ``keypoint_auc`` and ``keypoint_epe``: a keypoint
counts where ``mask`` is true and its instance's normalization has no zero; normalized distances
are kept in float32 as mmpose does, so threshold comparisons round the same way. All functions are
vectorized over instances, keypoints (and thresholds for the AUC).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import PoseforgeError

__all__ = ["normalized_distances", "pck_accuracy", "keypoint_auc", "keypoint_epe", "height_normalized_errors",
           "mean_pose_in_boxes", "left_right_pairs"]


def _array(x: Any, dtype=np.float64) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor, on any device
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def normalized_distances(pred: Any, gt: Any, mask: Any, normalize: Any) -> tuple[np.ndarray, np.ndarray]:
    """Distances ``|(pred - gt) / normalize|`` [N, K] (float32) and where they count [N, K].

    ``normalize`` is per instance and axis [N, 2] (or anything broadcasting to it: a scalar, [2],
    [N, 1]). Instances whose normalization has a non-positive entry do not count.
    """
    pred, gt = _array(pred), _array(gt)
    mask = _array(mask, dtype=bool)
    if pred.ndim != 3 or pred.shape != gt.shape or mask.shape != pred.shape[:2]:
        raise PoseforgeError(f"expected pred and gt [N, K, D] and mask [N, K], got {pred.shape}, {gt.shape}, {mask.shape}")
    n, _, d = pred.shape
    try:
        norm = np.broadcast_to(_array(normalize), (n, d))
    except ValueError:
        raise PoseforgeError(f"normalize: expected [N, {d}] (N={n}) or a broadcastable shape, got {np.shape(normalize)}") from None
    usable = (norm > 0).all(axis=1)
    safe = np.where(usable[:, None], norm, 1.0)
    distances = np.linalg.norm((pred - gt) / safe[:, None, :], axis=-1).astype(np.float32)
    return distances, mask & usable[:, None]


def _accuracy(distances: np.ndarray, valid: np.ndarray, thr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-threshold per-keypoint accuracy [T, K] (-1 where no keypoint counts), mean [T], count [T]."""
    counted = valid.sum(axis=0)  # [K]
    hits = ((distances[None] < thr[:, None, None]) & valid[None]).sum(axis=1)  # [T, K]
    acc = np.where(counted > 0, hits / np.maximum(counted, 1), -1.0)
    has = counted > 0
    cnt = int(has.sum())
    mean = acc[:, has].mean(axis=1) if cnt else np.zeros(len(thr))
    return acc, mean, np.full(len(thr), cnt)


def pck_accuracy(pred: Any, gt: Any, mask: Any, thr: float = 0.05, normalize: Any = None) -> tuple[np.ndarray, float, int]:
    """PCK: the share of keypoints whose normalized distance is below ``thr``.

    Args:
        pred, gt: keypoints [N, K, 2]. mask: [N, K], true where the keypoint counts.
        thr: threshold on the normalized distance (0.05 for heatmap-scale, 0.2 for bbox-scale PCK).
        normalize: [N, 2] (or broadcastable); required.

    Returns:
        (per-keypoint accuracy [K], -1 where no instance counts; mean over the keypoints that
        count, 0 if none; how many keypoints count).
    """
    if normalize is None:
        raise PoseforgeError("pck_accuracy: normalize is required (e.g. the bbox size or the heatmap size per instance)")
    distances, valid = normalized_distances(pred, gt, mask, normalize)
    acc, mean, cnt = _accuracy(distances, valid, np.asarray([thr], dtype=np.float64))
    return acc[0], float(mean[0]), int(cnt[0])


def keypoint_auc(pred: Any, gt: Any, mask: Any, normalize: Any, num_thrs: int = 20) -> float:
    """Area under the PCK curve over thresholds 0, 1/num_thrs, ..., (num_thrs-1)/num_thrs.

    ``normalize`` is a scalar (mmpose: e.g. 30 px) or per instance [N, 2].
    """
    if num_thrs < 1:
        raise PoseforgeError(f"keypoint_auc: num_thrs must be >= 1, got {num_thrs}")
    distances, valid = normalized_distances(pred, gt, mask, normalize)
    thrs = np.arange(num_thrs, dtype=np.float64) / num_thrs
    _, means, _ = _accuracy(distances, valid, thrs)
    # left-to-right accumulation, as mmpose sums the terms
    return float(np.cumsum(1.0 / num_thrs * means)[-1])


def keypoint_epe(pred: Any, gt: Any, mask: Any) -> float:
    """Mean end-point error (pixel distance) over the keypoints where ``mask`` is true (0 if none)."""
    distances, valid = normalized_distances(pred, gt, mask, 1.0)
    counted = distances[valid]
    return float(counted.astype(np.float64).sum() / max(1, counted.size))


def height_normalized_errors(predicted: np.ndarray, keypoints: np.ndarray, labeled: np.ndarray,
                             boxes: np.ndarray) -> np.ndarray:
    """Per person: mean pixel error of the labeled keypoints / box height (people with none labeled
    are left out). ``predicted``, ``keypoints``: (N, K, 2); ``labeled``: (N, K) bool; ``boxes``: (N, 4) xywh."""
    predicted, keypoints = np.asarray(predicted, np.float64), np.asarray(keypoints, np.float64)
    labeled, boxes = np.asarray(labeled, bool), np.asarray(boxes, np.float64)
    distance = np.linalg.norm(predicted - keypoints, axis=-1)
    per_person = (distance * labeled).sum(1) / np.maximum(labeled.sum(1), 1) / np.maximum(boxes[:, 3], 1e-9)
    return per_person[labeled.any(1)]


def mean_pose_in_boxes(keypoints: np.ndarray, labeled: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """The *mean pose* reference: the average box-normalized pose of these people (each joint averaged
    over the people where it is labeled), placed in every one of their boxes. An oracle prior: a model
    whose error is not below it has learned nothing about the image. ``keypoints``: (N, K, 2);
    ``labeled``: (N, K) bool; ``boxes``: (N, 4) xywh. Returns (N, K, 2) image pixels."""
    keypoints, labeled = np.asarray(keypoints, np.float64), np.asarray(labeled, bool)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    normalized = (keypoints - boxes[:, None, :2]) / np.maximum(boxes[:, None, 2:], 1e-9)
    mean = (normalized * labeled[..., None]).sum(0) / np.maximum(labeled.sum(0), 1)[:, None]
    return mean[None] * boxes[:, None, 2:] + boxes[:, None, :2]


def left_right_pairs(predicted: np.ndarray, keypoints: np.ndarray, labeled: np.ndarray, boxes: np.ndarray,
                     flip_pairs: "tuple[tuple[int, int], ...] | np.ndarray",
                     min_separation: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """How a model places each left/right pair (shoulders, hips, knees ...) of each person, where both joints
    are labeled and lie at least ``min_separation`` x box height apart (closer pairs have no side to get
    wrong). Returns, per such pair, whether the prediction is on its own side (its two joints are nearer
    their own truths than each other's) and the predicted / true distance between the two joints (near 0:
    both put on one point, the mark of a model that cannot tell the sides apart). ``predicted``,
    ``keypoints``: (N, K, 2); ``labeled``: (N, K) bool; ``boxes``: (N, 4) xywh; ``flip_pairs``: (P, 2)."""
    predicted, keypoints = np.asarray(predicted, np.float64), np.asarray(keypoints, np.float64)
    labeled, boxes = np.asarray(labeled, bool), np.asarray(boxes, np.float64).reshape(-1, 4)
    pairs = np.asarray(flip_pairs, np.int64).reshape(-1, 2)
    if not len(pairs) or not len(predicted):
        return np.zeros(0, bool), np.zeros(0)
    a, b = pairs[:, 0], pairs[:, 1]
    true_gap = np.linalg.norm(keypoints[:, a] - keypoints[:, b], axis=-1)  # (N, P)
    scored = labeled[:, a] & labeled[:, b] & (true_gap >= min_separation * np.maximum(boxes[:, 3:4], 1e-9))
    own = (np.linalg.norm(predicted[:, a] - keypoints[:, a], axis=-1)
           + np.linalg.norm(predicted[:, b] - keypoints[:, b], axis=-1))
    swapped = (np.linalg.norm(predicted[:, a] - keypoints[:, b], axis=-1)
               + np.linalg.norm(predicted[:, b] - keypoints[:, a], axis=-1))
    gap = np.linalg.norm(predicted[:, a] - predicted[:, b], axis=-1) / np.maximum(true_gap, 1e-9)
    return (own < swapped)[scored], gap[scored]
