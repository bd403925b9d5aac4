"""A synthetic video of two people walking across each other, with exact labels (tests and benchmarks).

Two standing figures are rendered once by the synthetic renderer (person-centric framing, cut out by
their visible masks) and slid in opposite directions over a procedural room; the one further back is
smaller and passes behind the other, so the clip contains a full occlusion crossing - the hard case
for tracking. Every frame comes with both people's boxes, keypoints and visibility (occluded keypoints
get visibility 1) and which person is which.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["CrossingClip", "crossing_clip"]


@dataclass
class CrossingClip:
    """``frames`` [T, H, W, 3] uint8 RGB; per frame and person (0 walks left->right in front, 1 walks
    right->left behind): ``boxes`` [T, 2, 4] xyxy of the visible pixels (zeros when hidden),
    ``keypoints`` [T, 2, K, 2], ``visibility`` [T, 2, K] (2 visible, 1 occluded, 0 unlabeled) and
    ``visible_fraction`` [T, 2] (visible pixels / the person's pixels)."""

    frames: np.ndarray
    boxes: np.ndarray
    keypoints: np.ndarray
    visibility: np.ndarray
    visible_fraction: np.ndarray
    fps: float = 10.0


def _background(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A wall with a floor: two shaded gradients, floor tiles in perspective, light noise."""
    y = np.arange(height, dtype=np.float32)[:, None]
    x = np.arange(width, dtype=np.float32)[None, :]
    horizon = int(height * 0.45)
    wall = np.array(rng.uniform(90, 170, 3), dtype=np.float32)
    floor = np.array(rng.uniform(60, 140, 3), dtype=np.float32)
    image = np.empty((height, width, 3), dtype=np.float32)
    image[:horizon] = wall * (0.85 + 0.15 * y[:horizon, :, None] / horizon)
    depth = (y[horizon:] - horizon + 8) / (height - horizon + 8)  # 0 far .. 1 near
    u = (x - width / 2) / (depth * 40 + 1e-3)
    v = 6.0 / depth
    tiles = ((np.floor(u / 2) + np.floor(v)) % 2)[:, :, None]
    image[horizon:] = floor * (0.75 + 0.25 * depth[:, :, None]) * (0.9 + 0.1 * tiles)
    image += rng.normal(0, 3, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def _figures(seed: int, keypoint_set: str, candidates: int = 24):
    """The two most upright, fully labeled rendered figures: (rgba sprite, keypoints, visibility) each."""
    from ..data.synth import SyntheticPoseDataset

    dataset = SyntheticPoseDataset(candidates, seed=seed, image_size=(240, 320), people=(1, 1), keypoint_set=keypoint_set,
                                   clutter=False)
    scored = []
    for r in dataset.render_batch(range(candidates)):
        if len(r.instances) != 1:
            continue
        inst = r.instances[0]
        x, y, w, h = inst.bbox
        touches = x <= 1 or y <= 1 or x + w >= 239 or y + h >= 319
        labeled = float((inst.visibility > 0).mean())
        scored.append((not touches, labeled >= 0.99, h / max(w, 1.0), r.index, r, inst))
    scored.sort(key=lambda s: (s[0], s[1], s[2], -s[3]), reverse=True)
    out = []
    for *_, r, inst in scored[:2]:
        x, y, w, h = (int(v) for v in inst.bbox)
        mask = inst.extras["mask"][y:y + h, x:x + w]
        sprite = np.concatenate([r.image[y:y + h, x:x + w], (mask * 255).astype(np.uint8)[..., None]], axis=2)
        out.append((sprite, inst.keypoints - np.array([x, y], dtype=np.float32), inst.visibility.copy()))
    return out


def crossing_clip(num_frames: int = 24, size: tuple[int, int] = (640, 480), seed: int = 5,
                  keypoint_set: str = "coco17", fps: float = 10.0) -> CrossingClip:
    """Render the clip (see the module doc). Person 0 is ~62% of the frame height, person 1 ~52%."""
    width, height = int(size[0]), int(size[1])
    rng = np.random.default_rng(seed)
    background = _background(width, height, rng)
    figures = _figures(seed, keypoint_set)
    heights = (0.62 * height, 0.52 * height)
    feet = (0.93 * height, 0.82 * height)
    scaled = []
    for (sprite, kpts, vis), target in zip(figures, heights):
        s = target / sprite.shape[0]
        resized = cv2.resize(sprite, (max(1, round(sprite.shape[1] * s)), max(1, round(sprite.shape[0] * s))),
                             interpolation=cv2.INTER_LINEAR)
        scaled.append((resized, (kpts + 0.5) * s - 0.5, vis))
    t = np.linspace(0.0, 1.0, num_frames)
    centres = np.stack([0.12 * width + 0.76 * width * t, 0.88 * width - 0.76 * width * t], 1)  # [T, 2]
    k = scaled[0][1].shape[0]
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    boxes = np.zeros((num_frames, 2, 4), dtype=np.float32)
    keypoints = np.zeros((num_frames, 2, k, 2), dtype=np.float32)
    visibility = np.zeros((num_frames, 2, k), dtype=np.float32)
    fraction = np.zeros((num_frames, 2), dtype=np.float32)
    for f in range(num_frames):
        canvas = background.astype(np.float32)
        layers = []
        for p in (1, 0):  # back person first
            sprite, kpts, vis = scaled[p]
            x0 = int(round(centres[f, p] - sprite.shape[1] / 2))
            y0 = int(round(feet[p] - sprite.shape[0]))
            layer = np.zeros((height, width), dtype=np.float32)
            xs, ys = max(x0, 0), max(y0, 0)
            xe, ye = min(x0 + sprite.shape[1], width), min(y0 + sprite.shape[0], height)
            alpha = sprite[ys - y0:ye - y0, xs - x0:xe - x0, 3:].astype(np.float32) / 255
            canvas[ys:ye, xs:xe] = canvas[ys:ye, xs:xe] * (1 - alpha) + sprite[ys - y0:ye - y0, xs - x0:xe - x0, :3] * alpha
            layer[ys:ye, xs:xe] = alpha[..., 0]
            layers.append((p, layer, kpts + np.array([x0, y0], dtype=np.float32), vis))
        front = layers[1][1] > 0.5
        for p, layer, kpts, vis in layers:
            own = layer > 0.5
            seen = own & ~front if p == 1 else own
            fraction[f, p] = seen.sum() / max(own.sum(), 1)
            if seen.any():
                ys_, xs_ = np.nonzero(seen)
                boxes[f, p] = [xs_.min(), ys_.min(), xs_.max() + 1, ys_.max() + 1]
            keypoints[f, p] = kpts
            v = vis.copy()
            if p == 1:  # keypoints behind the front person are occluded
                ix = np.clip(np.round(kpts).astype(int), 0, [width - 1, height - 1])
                v[(v > 0) & front[ix[:, 1], ix[:, 0]]] = 1.0
            visibility[f, p] = v
        frames[f] = np.clip(canvas, 0, 255).astype(np.uint8)
    return CrossingClip(frames, boxes, keypoints, visibility, fraction, fps)
