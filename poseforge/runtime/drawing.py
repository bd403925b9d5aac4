"""Skeleton overlays with OpenCV for runtime results (BGR images, as OpenCV reads and writes them).

The skeleton comes from the export's metadata (keypoint-index pairs); without one only the keypoints are
drawn. Link ``i`` gets hue ``i / links`` and keypoints their own hues, so every model draws the same way.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from ..errors import PoseforgeError
from .pipeline import PoseResult

__all__ = ["draw_poses", "palette"]

_FAR = 1e6  # pixels: further off the image than any drawing reaches


def palette(n: int) -> np.ndarray:
    """``n`` distinct saturated BGR colours ``[n, 3]`` uint8 (hues evenly spaced)."""
    hues = (np.arange(max(n, 0)) * 180 // max(n, 1)).astype(np.uint8)
    hsv = np.stack([hues, np.full_like(hues, 220), np.full_like(hues, 255)], -1)[None]
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0] if n else np.zeros((0, 3), np.uint8)


def draw_poses(image: np.ndarray, result: PoseResult, skeleton: Sequence[Sequence[int]] = (), *,
               threshold: float = 0.3, boxes: bool = True, radius: int | None = None,
               thickness: int | None = None) -> np.ndarray:
    """A copy of ``image`` (``H x W x 3`` uint8) with each person's box, skeleton links and keypoints scoring
    above ``threshold``; sizes scale with the image unless ``radius`` / ``thickness`` are given."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise PoseforgeError(f"draw_poses: expected an H x W x 3 uint8 image, got {image.dtype} {tuple(image.shape)}")
    out = np.ascontiguousarray(image).copy()
    size = max(out.shape[:2])
    radius = radius or max(2, round(size / 250))
    thickness = thickness or max(1, round(size / 400))
    k = result.keypoints.shape[1] if result.keypoints.ndim == 3 else 0
    try:
        pairs = [(int(a), int(b)) for a, b in skeleton]
    except (TypeError, ValueError, OverflowError):
        raise PoseforgeError(f"draw_poses: skeleton: expected pairs of keypoint indices, got {skeleton!r:.60}"
                             ) from None
    links = [(a, b) for a, b in pairs if 0 <= a < k and 0 <= b < k]
    link_colors, point_colors = palette(len(links)), palette(k)
    for p in range(len(result)):
        if boxes and np.isfinite(result.boxes[p]).all():
            x1, y1, x2, y2 = np.round(np.clip(result.boxes[p], -_FAR, _FAR)).astype(int).tolist()
            cv2.rectangle(out, (x1, y1), (x2, y2), (255, 255, 255), thickness, cv2.LINE_AA)
        points = result.keypoints[p]
        # points far off the image are not drawn (OpenCV takes 32-bit pixel coordinates)
        seen = (result.scores[p] > threshold) & (np.abs(np.nan_to_num(points, nan=np.inf)) < _FAR).all(-1)
        xy = np.round(np.where(seen[:, None], points, 0)).astype(int)
        for (a, b), color in zip(links, link_colors, strict=True):
            if seen[a] and seen[b]:
                cv2.line(out, tuple(xy[a]), tuple(xy[b]), tuple(int(c) for c in color), thickness + 1, cv2.LINE_AA)
        for j in np.flatnonzero(seen):
            cv2.circle(out, tuple(xy[j]), radius, tuple(int(c) for c in point_colors[j]), -1, cv2.LINE_AA)
    return out
