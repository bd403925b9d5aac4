"""Top-down transforms: box -> center/scale, affine crop (standard and UDP), augmentation, collate.

Coordinates are pixels with pixel centres at integers (OpenCV's convention): pixel ``(i, j)`` of an
image is the point ``x = j, y = i``. A crop is described by one 2x3 affine ``matrix`` that maps image
points to crop points; predictions go back with :func:`crop_to_image`.

The geometry follows mmpose 1.x exactly: ``GetBBoxCenterScale`` (padding 1.25), ``TopdownAffine``'s
aspect-ratio fix and ``get_warp_matrix`` / ``get_udp_warp_matrix``. Note that mmpose's two matrices
turn a positive ``rotation`` in opposite directions on screen (standard: content counter-clockwise,
UDP: clockwise); this module keeps that, so matrices equal mmpose's for the same parameters.

Two paths produce the same sample fields:

* ``TopDownTransform(...)(instance)`` - one sample on the CPU (a DataLoader worker), cropped with
  ``cv2.warpAffine``;
* ``TopDownTransform(...).apply_batch(images, instances)`` - a whole batch on the images' device
  (GPU augmentation, or the predictor's many people in one frame), cropped with ``grid_sample``.

Array helpers accept numpy arrays or torch tensors and return the same kind (float dtype kept).
"""
from __future__ import annotations

from typing import Any, Sequence, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import DataError, PoseforgeError
from ..keypoints import KeypointSet, get_keypoint_set
from .augment import AugmentConfig, Photometric, RandomBBoxTransform, RandomFlip, RandomHalfBody, _float_dtype
from .images import load_image
from .records import PoseInstance

__all__ = [
    "TopDownTransform",
    "affine_points",
    "bbox_xywh_to_center_scale",
    "clip_bbox_xywh",
    "compose_affine",
    "crop_batch",
    "crop_image",
    "crop_to_image",
    "fix_aspect_ratio",
    "get_affine_matrix",
    "invert_affine",
]

Array = TypeVar("Array", np.ndarray, Tensor)


# ----------------------------------------------------------------------------------------------------------
# numpy / torch dispatch: compute in torch (float64 where the device allows), return the caller's kind


def _work(x: Any, device: torch.device | None = None) -> Tensor:
    """``x`` as a float tensor for computing (float64 unless the device lacks it)."""
    t = torch.from_numpy(np.asarray(x)) if not isinstance(x, Tensor) else x
    if device is not None:
        t = t.to(device)
    return t.to(_float_dtype(t.device))


def _out_dtype(ref: Any) -> torch.dtype | np.dtype:
    if isinstance(ref, Tensor):
        return ref.dtype if ref.is_floating_point() else torch.get_default_dtype()
    ref = np.asarray(ref)
    return ref.dtype if np.issubdtype(ref.dtype, np.floating) else np.dtype(np.float64)


def _restore(t: Tensor, ref: Any) -> Any:
    """``t`` as the same kind (numpy / torch) and float dtype as ``ref``."""
    dtype = _out_dtype(ref)
    if isinstance(ref, Tensor):
        return t.to(dtype)
    return t.detach().cpu().numpy().astype(dtype, copy=False)


# ----------------------------------------------------------------------------------------------------------
# Boxes and matrices


def fix_aspect_ratio(scale: Array, aspect_ratio: float) -> Array:
    """Grow the short side of box sizes ``[..., 2]`` (w, h) so that ``w / h == aspect_ratio`` (mmpose)."""
    s = _work(scale)
    w, h = s[..., 0], s[..., 1]
    fixed = torch.where((w > h * aspect_ratio)[..., None], torch.stack([w, w / aspect_ratio], -1),
                        torch.stack([h * aspect_ratio, h], -1))
    return _restore(fixed, scale)


def clip_bbox_xywh(bbox: Array, width: Array | float, height: Array | float) -> Array:
    """Boxes ``[..., 4]`` (x, y, w, h) clipped to ``[0, W - 1] x [0, H - 1]`` (mmpose clips annotation
    boxes so, not detections); ``width`` / ``height`` broadcast against the boxes' leading dims."""
    b = _work(bbox)
    w, h = _work(width, b.device), _work(height, b.device)
    x1 = torch.minimum(b[..., 0].clamp(min=0), w - 1)
    y1 = torch.minimum(b[..., 1].clamp(min=0), h - 1)
    x2 = torch.minimum((b[..., 0] + b[..., 2]).clamp(min=0), w - 1)
    y2 = torch.minimum((b[..., 1] + b[..., 3]).clamp(min=0), h - 1)
    return _restore(torch.stack([x1, y1, x2 - x1, y2 - y1], -1), bbox)


def bbox_xywh_to_center_scale(
    bbox: Array, aspect_ratio: float | None, padding: float = 1.25
) -> tuple[Array, Array]:
    """Boxes ``[..., 4]`` (x, y, w, h) -> ``(center [..., 2], scale [..., 2])`` in pixels.

    ``scale`` is the box size times ``padding``, then widened or heightened to ``aspect_ratio``
    (the model input's width / height) as mmpose's ``GetBBoxCenterScale`` + ``TopdownAffine`` do.
    ``aspect_ratio=None`` skips that fix (the augmentation applies it after changing the box).
    """
    b = _work(bbox)
    if b.shape[-1] != 4:
        raise PoseforgeError(f"bbox_xywh_to_center_scale: expected boxes [..., 4], got shape {tuple(b.shape)}")
    center = b[..., :2] + b[..., 2:] * 0.5
    scale = b[..., 2:] * padding
    if aspect_ratio is not None:
        scale = fix_aspect_ratio(scale, aspect_ratio)
    return _restore(center, bbox), _restore(scale, bbox)


def get_affine_matrix(
    center: Array, scale: Array, rotation_deg: Array | float, output_size: tuple[int, int], use_udp: bool = False
) -> Array:
    """Image -> crop affine matrices ``[..., 2, 3]``, equal to mmpose's ``get_warp_matrix`` (standard)
    or ``get_udp_warp_matrix`` (``use_udp=True``).

    Standard: a similarity with factor ``out_w / scale_w`` (both axes) that sends ``center`` to
    ``(out_w / 2, out_h / 2)``. UDP measures sizes between pixel centres: factors
    ``(out_w - 1) / scale_w`` and ``(out_h - 1) / scale_h``, ``center`` -> ``((out_w - 1) / 2, (out_h - 1) / 2)``.

    Args:
        center, scale: ``[..., 2]`` box center and size in image pixels (scale already aspect-fixed).
        rotation_deg: degrees, scalar or broadcastable to ``center[..., 0]``.
        output_size: the crop's ``(width, height)``.
    """
    c = _work(center)
    s = _work(scale, c.device)
    rot = torch.deg2rad(_work(rotation_deg, c.device))
    cos, sin = torch.cos(rot), torch.sin(rot)
    out_w, out_h = float(output_size[0]), float(output_size[1])
    if use_udp:
        sx, sy = (out_w - 1) / s[..., 0], (out_h - 1) / s[..., 1]
        a, b, d, e = cos * sx, -sin * sx, sin * sy, cos * sy
        dst_x, dst_y = (out_w - 1) / 2, (out_h - 1) / 2
    else:
        k = out_w / s[..., 0]
        a, b, d, e = cos * k, sin * k, -sin * k, cos * k
        dst_x, dst_y = out_w / 2, out_h / 2
    a, b, d, e = torch.broadcast_tensors(a, b, d, e)
    tx = dst_x - (a * c[..., 0] + b * c[..., 1])
    ty = dst_y - (d * c[..., 0] + e * c[..., 1])
    m = torch.stack([torch.stack([a, b, tx], -1), torch.stack([d, e, ty], -1)], -2)
    return _restore(m, center)


def invert_affine(matrix: Array) -> Array:
    """Inverse of affine matrices ``[..., 2, 3]`` (crop -> image for an image -> crop matrix)."""
    m = _work(matrix)
    a, b, tx = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    d, e, ty = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    det = a * e - b * d
    ia, ib, id_, ie = e / det, -b / det, -d / det, a / det
    inv = torch.stack([
        torch.stack([ia, ib, -(ia * tx + ib * ty)], -1),
        torch.stack([id_, ie, -(id_ * tx + ie * ty)], -1),
    ], -2)
    return _restore(inv, matrix)


def compose_affine(outer: Array, inner: Array) -> Array:
    """``outer ∘ inner`` for affine matrices ``[..., 2, 3]`` (apply ``inner`` first)."""
    o, i = _work(outer), _work(inner)
    i = i.to(o.device)
    linear = o[..., :2] @ i[..., :2]
    shift = (o[..., :2] @ i[..., 2:])[..., 0] + o[..., 2]
    return _restore(torch.cat([linear, shift[..., None]], -1), outer)


def affine_points(points: Array, matrix: Array) -> Array:
    """Apply affine matrices ``[..., 2, 3]`` to points ``[..., K, 2]`` (batch dims broadcast)."""
    p = _work(points)
    m = _work(matrix, p.device)
    out = p @ m[..., :2].transpose(-1, -2) + m[..., None, :, 2]
    return _restore(out, points)


def crop_to_image(keypoints: Array, matrix: Array) -> Array:
    """Map keypoints ``[B, K, 2]`` from crop (model input) pixels back to image pixels, given the
    image -> crop ``matrix [B, 2, 3]`` of each crop (flip, rotation and UDP included)."""
    return affine_points(keypoints, invert_affine(_work(matrix)).to(_work(keypoints).device))


# ----------------------------------------------------------------------------------------------------------
# Cropping


def crop_image(image: np.ndarray, matrix: np.ndarray, output_size: tuple[int, int]) -> np.ndarray:
    """Crop one ``H x W (x C)`` image with an image -> crop ``matrix [2, 3]`` into ``output_size`` (w, h).

    ``cv2.warpAffine`` with bilinear interpolation and a zero border (mmpose's ``TopdownAffine``).
    Same dtype as ``image``.
    """
    import cv2  # imported on use: predicting needs no OpenCV

    m = np.asarray(matrix, dtype=np.float64).reshape(2, 3)
    return cv2.warpAffine(image, m, (int(output_size[0]), int(output_size[1])), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _pad_images(images: Sequence[Tensor]) -> Tensor:
    """Stack ``[C, H_i, W_i]`` images into ``[N, C, H_max, W_max]``, zero-padded at the bottom/right.

    Padding with zeros changes no crop: pixels keep their coordinates and the crop border is zero too.
    """
    if len(images) == 0:
        raise PoseforgeError("crop_batch: empty list of images")
    c = images[0].shape[0]
    if any(im.ndim != 3 or im.shape[0] != c for im in images):
        raise PoseforgeError(f"crop_batch: images must all be [C, H, W] with C={c}, got {[tuple(im.shape) for im in images]}")
    h = max(im.shape[1] for im in images)
    w = max(im.shape[2] for im in images)
    out = images[0].new_zeros((len(images), c, h, w))
    for i, im in enumerate(images):  # one copy per image, no per-pixel work
        out[i, :, : im.shape[1], : im.shape[2]] = im
    return out


def crop_batch(images: Tensor | Sequence[Tensor], matrices: Tensor, output_size: tuple[int, int]) -> Tensor:
    """Crop many boxes at once: ``Tensor[N, C, h, w]`` on the images' device.

    Args:
        images: ``[C, H, W]`` (one frame shared by all N crops, e.g. many people in one image),
            ``[N, C, H, W]`` (one image per crop), or a list of N ``[C, H_i, W_i]`` images of any sizes.
        matrices: ``[N, 2, 3]`` image -> crop matrices.
        output_size: crop ``(width, height)``.

    Returns:
        float32 crops for integer (e.g. uint8) input, the input's dtype for floating input; values keep
        the input's range. Bilinear sampling with a zero border equals ``cv2.warpAffine`` (INTER_LINEAR,
        BORDER_CONSTANT 0) up to OpenCV's 1/32-pixel fixed-point rounding.
    """
    if isinstance(images, (list, tuple)):
        images = _pad_images(images)
    if images.ndim not in (3, 4):
        raise PoseforgeError(f"crop_batch: images must be [C, H, W] or [N, C, H, W], got shape {tuple(images.shape)}")
    device = images.device
    matrices = torch.as_tensor(matrices, device=device)
    if matrices.ndim != 3 or matrices.shape[1:] != (2, 3):
        raise PoseforgeError(f"crop_batch: matrices must be [N, 2, 3], got shape {tuple(matrices.shape)}")
    n = matrices.shape[0]
    shared = images.ndim == 3
    if not shared and images.shape[0] != n:
        raise PoseforgeError(f"crop_batch: {images.shape[0]} images for {n} matrices")
    x = images if images.is_floating_point() else images.to(torch.float32)
    c, in_h, in_w = x.shape[-3:]
    out_w, out_h = int(output_size[0]), int(output_size[1])
    if n == 0:
        return x.new_zeros((0, c, out_h, out_w))

    # theta maps normalized crop coords to normalized image coords (align_corners=False):
    # crop normalized -> crop pixels -> image pixels (inverse matrix) -> image normalized.
    work = _float_dtype(device)
    inv = _work(invert_affine(matrices.to(work)))
    to_pixels = torch.tensor([[out_w / 2, 0, (out_w - 1) / 2], [0, out_h / 2, (out_h - 1) / 2]], dtype=work, device=device)
    to_normalized = torch.tensor([[2 / in_w, 0, 1 / in_w - 1], [0, 2 / in_h, 1 / in_h - 1]], dtype=work, device=device)
    theta = compose_affine(to_normalized.expand(n, 2, 3), compose_affine(inv, to_pixels.expand(n, 2, 3)))
    grid_dtype = x.dtype if x.dtype in (torch.float16, torch.bfloat16, torch.float64) else torch.float32
    grid = F.affine_grid(theta.to(grid_dtype), [n, c, out_h, out_w], align_corners=False)
    source = x.unsqueeze(0).expand(n, c, in_h, in_w) if shared else x  # expand: no copy of the frame
    return F.grid_sample(source, grid.to(x.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)


# ----------------------------------------------------------------------------------------------------------
# The top-down pipeline


class TopDownTransform:
    """Turn pose instances into fixed-size model inputs (mmpose's top-down pipeline).

    Order (as mmpose): box -> center/scale with ``padding`` (boxes clipped to the image first, as
    mmpose does for annotations, when ``clip_bbox``); random flip; half-body; shift/scale/rotate;
    aspect-ratio fix; affine crop (UDP or standard); photometric augmentation. The flip is folded into
    the crop matrix, so no full image is ever mirrored.

    Args:
        input_size: model input ``(width, height)``.
        keypoint_set: name or :class:`KeypointSet` (flip pairs, half-body split).
        use_udp: UDP matrices (ViTPose, mmpose's UDP heatmaps); False for RTMPose/SimCC recipes.
        augment: False (evaluation), True (mmpose defaults) or an :class:`AugmentConfig`.
        padding: box padding factor.
        clip_bbox: clip boxes to ``[0, W - 1] x [0, H - 1]`` first (mmpose clips annotation boxes, not
            detections).
        pad_keypoints: zero-pad ``keypoints`` / ``visibility`` to this many keypoints (a multi-task model's
            largest set, so every sample of a mixed batch has one shape; padding is unlabeled).

    Sample fields (tensors; ``apply_batch`` gives the same with a leading batch dim): ``image`` uint8
    ``[3, h, w]`` RGB; ``keypoints`` float32 ``[K, 2]`` crop pixels (pair-swapped when flipped);
    ``visibility`` float32 ``[K]`` = ``min(v, 1)``, zeroed outside the crop (``0 <= x < w``,
    ``0 <= y < h``); ``matrix`` float32 ``[2, 3]`` original image -> crop; ``center``/``scale``
    float32 ``[2]`` and ``rotation`` float32 ``[]`` describe the crop box in the (mirrored, if
    ``flipped``) image; ``flipped`` bool; meta: ``image_id``, ``instance_id``, ``dataset_index``
    int64, ``bbox`` float32 ``[4]`` (the record's), ``score`` float32, ``image_size`` int64 ``[2]`` (w, h).
    """

    def __init__(
        self, input_size: tuple[int, int], keypoint_set: str | KeypointSet, use_udp: bool = True,
        augment: bool | AugmentConfig = False, padding: float = 1.25, clip_bbox: bool = True,
        pad_keypoints: int = 0,
    ) -> None:
        if len(input_size) != 2 or min(int(v) for v in input_size) < 1:
            raise PoseforgeError(f"TopDownTransform: input_size must be (width, height) >= 1, got {input_size}")
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.aspect_ratio = self.input_size[0] / self.input_size[1]
        self.keypoint_set = get_keypoint_set(keypoint_set)
        self.use_udp = bool(use_udp)
        self.padding = float(padding)
        self.clip_bbox = bool(clip_bbox)
        self.pad_keypoints = int(pad_keypoints)
        if 0 < self.pad_keypoints < self.keypoint_set.num_keypoints:
            raise PoseforgeError(f"TopDownTransform: pad_keypoints {pad_keypoints} is fewer than the "
                                 f"{self.keypoint_set.num_keypoints} keypoints of {self.keypoint_set.name}")
        if augment is True:
            augment = AugmentConfig()
        self.augment: AugmentConfig | None = augment if isinstance(augment, AugmentConfig) else None
        if augment not in (False, None) and self.augment is None:
            raise PoseforgeError(f"TopDownTransform: augment must be a bool or an AugmentConfig, got {augment!r}")
        a = self.augment
        if a is not None:
            self.flip = RandomFlip(self.keypoint_set.flip_index, a.flip_prob)
            self.half_body = RandomHalfBody(
                self.keypoint_set, p=a.half_body_prob, min_total_keypoints=a.half_body_min_total_keypoints,
                min_upper_keypoints=a.half_body_min_upper_keypoints, min_lower_keypoints=a.half_body_min_lower_keypoints,
                padding=a.half_body_padding, upper_prioritized_prob=a.half_body_upper_prioritized_prob)
            self.bbox_transform = RandomBBoxTransform(a.shift_factor, a.shift_prob, a.scale_factor, a.scale_prob,
                                                      a.rotate_factor, a.rotate_prob)
            self.photometric = Photometric(a)

    def __repr__(self) -> str:
        return (f"TopDownTransform(input_size={self.input_size}, keypoint_set='{self.keypoint_set.name}', "
                f"use_udp={self.use_udp}, augment={self.augment}, padding={self.padding})")

    # -- parameters (shared by both paths, so a seeded generator gives both the same draws) -----------------

    def _geometry(
        self, bbox: Tensor, keypoints: Tensor, visibility: Tensor, image_size: Tensor, generator: torch.Generator | None,
        names: Sequence[PoseInstance] | None = None,
    ) -> dict[str, Tensor]:
        """All batched [N, ...] work tensors on one device -> crop parameters and crop keypoints.
        ``names`` (the records, when known) only serve error messages."""
        n = bbox.shape[0]
        width, height = image_size[:, 0].to(bbox.dtype), image_size[:, 1].to(bbox.dtype)
        if self.clip_bbox:
            bbox = clip_bbox_xywh(bbox, width, height)
        center, scale = bbox_xywh_to_center_scale(bbox, None, self.padding)
        rotation = torch.zeros(n, dtype=bbox.dtype, device=bbox.device)
        flip = torch.zeros(n, dtype=torch.bool, device=bbox.device)
        if self.augment is not None:
            keypoints, visibility, center, flip = self.flip(keypoints, visibility, center, width, generator=generator)
            center, scale, _, _ = self.half_body(keypoints, visibility, center, scale, generator)
            center, scale, rotation = self.bbox_transform(center, scale, generator)
        scale = fix_aspect_ratio(scale, self.aspect_ratio)
        if bool((scale <= 0).any()) or not bool(torch.isfinite(scale).all()):
            bad = int(torch.nonzero((scale <= 0).any(1) | ~torch.isfinite(scale).all(1))[0])
            where = _describe(names[bad], "annotation") if names is not None else f"box {bad}"
            raise DataError(f"{where}: field 'bbox': empty box {[round(v, 3) for v in bbox[bad].tolist()]} "
                            "after clipping to the image")
        crop = get_affine_matrix(center, scale, rotation, self.input_size, self.use_udp)
        matrix = compose_affine(crop, RandomFlip.image_flip_matrix(width, flip, crop.dtype))
        crop_keypoints = affine_points(keypoints, crop)
        w, h = self.input_size
        inside = (crop_keypoints[..., 0] >= 0) & (crop_keypoints[..., 0] < w) & (crop_keypoints[..., 1] >= 0) & (
            crop_keypoints[..., 1] < h)
        visibility = torch.where(inside, visibility.clamp(0, 1), torch.zeros_like(visibility))
        return {"keypoints": crop_keypoints, "visibility": visibility, "matrix": matrix, "center": center,
                "scale": scale, "rotation": rotation, "flipped": flip}

    def _photometric(self, images: Tensor, generator: torch.Generator | None) -> Tensor:
        """Float images [N, 3, h, w] in [0, 255] -> augmented, same shape."""
        return images if self.augment is None else self.photometric(images, generator)

    # -- one sample (DataLoader worker) ---------------------------------------------------------------------

    def _check_instance(self, inst: PoseInstance) -> None:
        k = self.keypoint_set.num_keypoints
        if inst.keypoints.shape != (k, 2) or inst.visibility.shape != (k,):
            raise DataError(f"{_describe(inst, 'annotation')}: field 'keypoints': expected {k} keypoints of set "
                            f"'{self.keypoint_set.name}', got {tuple(inst.keypoints.shape)} / visibility "
                            f"{tuple(inst.visibility.shape)}")
        if np.asarray(inst.bbox).shape != (4,):
            raise DataError(f"{_describe(inst, 'annotation')}: field 'bbox': expected 4 numbers, got shape "
                            f"{np.asarray(inst.bbox).shape}")

    def __call__(
        self, instance: PoseInstance, image: np.ndarray | None = None, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """One sample: crop ``image`` (``H x W x 3`` uint8 RGB; default ``instance.image`` or the file at
        ``instance.image_path``) around the instance with ``cv2.warpAffine``. See the class doc for fields."""
        self._check_instance(instance)
        if image is None:
            image = instance.image
        if image is None:
            if not instance.image_path:
                raise DataError(f"{_describe(instance, 'annotation')}: field 'image_path': no pixels and no image path")
            image = load_image(instance.image_path)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise DataError(f"{instance.image_path or 'image'}: expected an H x W x 3 uint8 RGB image, got "
                            f"{image.dtype} {image.shape}")
        height, width = image.shape[:2]
        geo = self._geometry(
            torch.as_tensor(np.asarray(instance.bbox, dtype=np.float64)[None]),
            torch.as_tensor(np.asarray(instance.keypoints, dtype=np.float64)[None]),
            torch.as_tensor(np.asarray(instance.visibility, dtype=np.float64)[None]),
            torch.tensor([[width, height]], dtype=torch.int64), generator, [instance])
        crop = crop_image(image, geo["matrix"][0].numpy(), self.input_size)
        pixels = torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1)))
        if self.augment is not None and self.augment.photometric:
            pixels = _to_uint8(self._photometric(pixels[None].to(torch.float32), generator))[0]
        sample = {"image": pixels}
        for key, value in geo.items():
            sample[key] = value[0] if value.dtype == torch.bool else value[0].to(torch.float32)
        sample.update(_meta_single(instance, width, height))
        return self._pad(sample)

    def _pad(self, sample: dict[str, Tensor]) -> dict[str, Tensor]:
        missing = self.pad_keypoints - self.keypoint_set.num_keypoints
        if missing > 0:
            k = sample["keypoints"].shape[-2]
            sample["keypoints"] = F.pad(sample["keypoints"], (0, 0, 0, self.pad_keypoints - k))
            sample["visibility"] = F.pad(sample["visibility"], (0, self.pad_keypoints - k))
        return sample

    # -- a whole batch (GPU augmentation, predictor) --------------------------------------------------------

    def apply_batch(
        self,
        images: Tensor | Sequence[Tensor],
        instances: Sequence[PoseInstance] | None = None,
        *,
        bboxes: Tensor | np.ndarray | None = None,
        keypoints: Tensor | np.ndarray | None = None,
        visibility: Tensor | np.ndarray | None = None,
        generator: torch.Generator | None = None,
        float_images: bool = False,
    ) -> dict[str, Tensor]:
        """Transform N samples at once on the images' device (crops with :func:`crop_batch`).

        Args:
            images: one frame ``[3, H, W]`` shared by all samples (many people in one image),
                ``[N, 3, H, W]``, or a list of N ``[3, H_i, W_i]`` images; uint8 or float in [0, 255], RGB.
            instances: the N records (boxes, keypoints, meta). Without them give ``bboxes [N, 4]``
                (x, y, w, h) and optionally ``keypoints [N, K, 2]`` / ``visibility [N, K]``.
            generator: random source for augmentation (the same draws as :meth:`__call__` for N = 1).
            float_images: return float32 crops in [0, 255] instead of rounding to uint8.

        Returns:
            the per-sample fields of :meth:`__call__`, stacked (first dim N), on the images' device.
        """
        shared = isinstance(images, Tensor) and images.ndim == 3
        device = images.device if isinstance(images, Tensor) else images[0].device
        work = _float_dtype(device)
        if instances is not None:
            n = len(instances)
            for inst in instances:
                self._check_instance(inst)
            bboxes = np.stack([np.asarray(inst.bbox, dtype=np.float64) for inst in instances]) if n else np.zeros((0, 4))
            keypoints = np.stack([np.asarray(inst.keypoints, dtype=np.float64) for inst in instances]) if n else None
            visibility = np.stack([np.asarray(inst.visibility, dtype=np.float64) for inst in instances]) if n else None
        if bboxes is None:
            raise PoseforgeError("apply_batch: give instances or bboxes")
        bbox_t = _work(bboxes, device).to(work).reshape(-1, 4)
        n = bbox_t.shape[0]
        k = self.keypoint_set.num_keypoints
        kp_t = _work(keypoints, device).to(work) if keypoints is not None else torch.zeros(n, k, 2, dtype=work, device=device)
        vis_t = _work(visibility, device).to(work) if visibility is not None else torch.zeros(n, k, dtype=work, device=device)
        if kp_t.shape != (n, k, 2) or vis_t.shape != (n, k):
            raise PoseforgeError(f"apply_batch: expected keypoints [{n}, {k}, 2] and visibility [{n}, {k}], got "
                                 f"{tuple(kp_t.shape)} and {tuple(vis_t.shape)}")
        if shared:
            sizes = torch.tensor([[images.shape[2], images.shape[1]]], dtype=torch.int64, device=device).expand(n, 2)
        elif isinstance(images, Tensor):
            sizes = torch.tensor([[images.shape[3], images.shape[2]]], dtype=torch.int64, device=device).expand(n, 2)
        else:
            sizes = torch.tensor([[im.shape[2], im.shape[1]] for im in images], dtype=torch.int64, device=device)
        if not shared and sizes.shape[0] != n:
            raise PoseforgeError(f"apply_batch: {sizes.shape[0]} images for {n} samples")

        geo = self._geometry(bbox_t, kp_t, vis_t, sizes, generator, instances)
        crops = crop_batch(images, geo["matrix"], self.input_size)
        if not crops.dtype == torch.float32:
            crops = crops.to(torch.float32)
        crops = self._photometric(crops, generator)
        out: dict[str, Tensor] = {"image": crops.clamp(0, 255) if float_images else _to_uint8(crops)}
        for key, value in geo.items():
            out[key] = value if value.dtype == torch.bool else value.to(torch.float32)
        out.update(_meta_batch(instances, bbox_t, n, sizes, device))
        return self._pad(out)


def _describe(inst: PoseInstance, what: str) -> str:
    """'<image file or id>: annotation <id>' for error messages."""
    source = inst.image_path or f"image {inst.image_id}"
    return f"{source}: {what} {inst.instance_id}"


def _to_uint8(images: Tensor) -> Tensor:
    return images.round().clamp(0, 255).to(torch.uint8)


def _meta_single(inst: PoseInstance, width: int, height: int) -> dict[str, Tensor]:
    return {
        "image_id": torch.tensor(int(inst.image_id), dtype=torch.int64),
        "instance_id": torch.tensor(int(inst.instance_id), dtype=torch.int64),
        "dataset_index": torch.tensor(int(inst.dataset_index), dtype=torch.int64),
        "bbox": torch.as_tensor(np.asarray(inst.bbox, dtype=np.float32)),
        "score": torch.tensor(float(inst.score), dtype=torch.float32),
        "image_size": torch.tensor([width, height], dtype=torch.int64),
    }


def _meta_batch(instances: Sequence[PoseInstance] | None, bbox: Tensor, n: int, sizes: Tensor,
                device: torch.device) -> dict[str, Tensor]:
    def column(name: str, default: float, dtype: torch.dtype) -> Tensor:
        if instances is None:
            return torch.full((n,), default, dtype=dtype, device=device)
        return torch.tensor([getattr(inst, name) for inst in instances], dtype=dtype, device=device)

    return {
        "image_id": column("image_id", -1, torch.int64),
        "instance_id": column("instance_id", -1, torch.int64),
        "dataset_index": column("dataset_index", 0, torch.int64),
        "bbox": bbox.to(torch.float32),
        "score": column("score", 1.0, torch.float32),
        "image_size": sizes.clone(),
    }
