"""Box -> crop geometry, crop warping and back-mapping in numpy / OpenCV, equal to poseforge's torch path.

The conventions are those of :mod:`poseforge.data.transforms` (which follows mmpose 1.x): pixel centres
at integers, a crop is one image -> crop affine ``matrix [2, 3]``, boxes become ``center, scale`` with
``padding`` 1.25 and the input's aspect ratio, the standard matrix is a similarity sending the centre to
``(w / 2, h / 2)``, the UDP one measures sizes between pixel centres. Everything is batched over boxes
and computed in float64.

Crops are ``cv2.warpAffine`` (bilinear, zero border) of the float32 image, which samples the image at
``inverse(matrix) @ (j, i)`` for crop pixel ``(j, i)`` - the positions ``crop_batch``'s ``grid_sample``
reads - and keeps fractional values as the torch path does (no rounding to uint8). OpenCV 5 samples
at exact positions (crops equal to ``crop_batch`` up to its float32 grid, ~1e-2 of a grey level);
OpenCV 4 rounds positions to 1/32 pixel.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from ..errors import PoseforgeError

__all__ = ["bbox_xyxy_to_center_scale", "get_affine_matrix", "crop_matrices", "fit_matrix", "invert_affine",
           "affine_points", "crops_to_image", "warp_crops"]


def bbox_xyxy_to_center_scale(boxes: np.ndarray, aspect_ratio: float | None,
                              padding: float = 1.25) -> tuple[np.ndarray, np.ndarray]:
    """xyxy ``boxes [N, 4]`` -> ``center [N, 2]`` and ``scale [N, 2]`` (box size x ``padding``, the short
    side grown to ``aspect_ratio`` = input width / height; ``None`` skips that), as mmpose's
    ``GetBBoxCenterScale`` + ``TopdownAffine``."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    wh = b[:, 2:] - b[:, :2]
    center = b[:, :2] + wh * 0.5
    scale = wh * padding
    if aspect_ratio is not None:
        w, h = scale[:, 0], scale[:, 1]
        wide = (w > h * aspect_ratio)[:, None]
        scale = np.where(wide, np.stack([w, w / aspect_ratio], -1), np.stack([h * aspect_ratio, h], -1))
    return center, scale


def get_affine_matrix(center: np.ndarray, scale: np.ndarray, output_size: Sequence[int], use_udp: bool = False,
                      rotation_deg: float | np.ndarray = 0.0) -> np.ndarray:
    """Image -> crop matrices ``[N, 2, 3]`` (float64) of ``center, scale [N, 2]``: mmpose's ``get_warp_matrix``
    (a similarity of factor ``out_w / scale_w``, centre -> ``(out_w / 2, out_h / 2)``) or, with ``use_udp``,
    ``get_udp_warp_matrix`` (factors ``(out - 1) / scale`` per axis, centre ->
    ``((out_w - 1) / 2, (out_h - 1) / 2)``)."""
    c = np.asarray(center, dtype=np.float64).reshape(-1, 2)
    s = np.asarray(scale, dtype=np.float64).reshape(-1, 2)
    rot = np.deg2rad(np.broadcast_to(np.asarray(rotation_deg, dtype=np.float64), c.shape[:1]))
    cos, sin = np.cos(rot), np.sin(rot)
    out_w, out_h = float(output_size[0]), float(output_size[1])
    if use_udp:
        sx, sy = (out_w - 1) / s[:, 0], (out_h - 1) / s[:, 1]
        a, b, d, e = cos * sx, -sin * sx, sin * sy, cos * sy
        dst_x, dst_y = (out_w - 1) / 2, (out_h - 1) / 2
    else:  # mmpose's two matrices turn a rotation in opposite directions; kept so both equal mmpose's
        k = out_w / s[:, 0]
        a, b, d, e = cos * k, sin * k, -sin * k, cos * k
        dst_x, dst_y = out_w / 2, out_h / 2
    tx = dst_x - (a * c[:, 0] + b * c[:, 1])
    ty = dst_y - (d * c[:, 0] + e * c[:, 1])
    return np.stack([np.stack([a, b, tx], -1), np.stack([d, e, ty], -1)], -2)


def crop_matrices(boxes: np.ndarray, input_size: Sequence[int], use_udp: bool,
                  padding: float = 1.25) -> tuple[np.ndarray, np.ndarray]:
    """Image -> crop matrices ``[N, 2, 3]`` and crop-box areas ``[N]`` of xyxy ``boxes [N, 4]`` for a model
    input ``(w, h)`` (poseforge's ``boxes_to_crops``)."""
    w, h = int(input_size[0]), int(input_size[1])
    center, scale = bbox_xyxy_to_center_scale(boxes, w / h, padding)
    return get_affine_matrix(center, scale, (w, h), use_udp), scale.prod(-1)


def fit_matrix(width: int, height: int, input_size: Sequence[int]) -> np.ndarray:
    """Image -> input matrix ``[2, 3]`` fitting a ``width x height`` image into ``input_size`` (aspect ratio
    kept, centred, UDP pixel-centre convention: pixels (0, 0) and (W - 1, H - 1) land on input pixels), as
    poseforge's bottom-up ``ImageTransform.matrix`` without augmentation."""
    w, h = int(input_size[0]), int(input_size[1])
    center = np.array([[(width - 1) / 2, (height - 1) / 2]])
    scale = np.array([[max(width - 1, 1), max(height - 1, 1)]], dtype=np.float64)
    aspect = (w - 1) / max(h - 1, 1)
    sw, sh = scale[:, 0], scale[:, 1]
    scale = np.where((sw > sh * aspect)[:, None], np.stack([sw, sw / aspect], -1), np.stack([sh * aspect, sh], -1))
    return get_affine_matrix(center, scale, (w, h), use_udp=True)[0]


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of affine matrices ``[..., 2, 3]`` (crop -> image for an image -> crop matrix)."""
    m = np.asarray(matrix, dtype=np.float64)
    a, b, tx = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    d, e, ty = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    det = a * e - b * d
    ia, ib, id_, ie = e / det, -b / det, -d / det, a / det
    return np.stack([np.stack([ia, ib, -(ia * tx + ib * ty)], -1),
                     np.stack([id_, ie, -(id_ * tx + ie * ty)], -1)], -2)


def affine_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Affine matrices ``[..., 2, 3]`` applied to points ``[..., K, 2]`` (float64; batch dims broadcast)."""
    p = np.asarray(points, dtype=np.float64)
    m = np.asarray(matrix, dtype=np.float64)
    return p @ np.swapaxes(m[..., :2], -1, -2) + m[..., None, :, 2]


def crops_to_image(keypoints: np.ndarray, matrices: np.ndarray) -> np.ndarray:
    """Keypoints ``[N, K, 2]`` in crop pixels -> image pixels, given each crop's image -> crop
    ``matrices [N, 2, 3]``."""
    return affine_points(keypoints, invert_affine(matrices))


def warp_crops(image: np.ndarray, matrices: np.ndarray, output_size: Sequence[int]) -> np.ndarray:
    """Crops ``[N, h, w, C]`` float32 of an ``H x W x C`` image for image -> crop ``matrices [N, 2, 3]``
    (bilinear, zero border; values kept unrounded, as poseforge's ``crop_batch``)."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3:
        raise PoseforgeError(f"warp_crops: expected an H x W x C image, got shape {image.shape}")
    m = np.asarray(matrices, dtype=np.float64).reshape(-1, 2, 3)
    w, h = int(output_size[0]), int(output_size[1])
    src = image.astype(np.float32, copy=False)  # warping floats: no rounding of the interpolated values
    out = np.empty((len(m), h, w, src.shape[2]), np.float32)
    for i, matrix in enumerate(m):  # one OpenCV call per crop (its pixel loops are native)
        out[i] = cv2.warpAffine(src, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                borderValue=0).reshape(h, w, -1)
    return out
