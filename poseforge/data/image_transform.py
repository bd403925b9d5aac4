"""Whole-image transform of bottom-up and dense models: an image with all its people (and its dense
labels) -> the fixed-size model input.

The image is fitted into ``input_size`` with its aspect ratio kept and centred (zero padding), by one
2x3 ``matrix`` from image to input pixels in the pixel-centre convention of UDP (image pixel ``(0, 0)``
and ``(W - 1, H - 1)`` land on input pixels, so mapping predictions back is exact). Training
augmentation reuses the top-down steps on the whole image: a horizontal flip (left/right keypoints
swap; with ``seg_flip_index`` the part classes too), shift / resize / rotation
(:class:`~poseforge.data.augment.RandomBBoxTransform`) and the photometric steps. Dense labels are
warped with nearest-neighbour sampling (labels never blend), surface normals turned with the image.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
import torch
from torch import Tensor

from ..errors import DataError, PoseforgeError
from ..keypoints import KeypointSet, get_keypoint_set
from .augment import AugmentConfig, Photometric, RandomBBoxTransform, RandomFlip
from .images import load_image
from .records import ImageRecord
from .transforms import affine_points, compose_affine, crop_image, fix_aspect_ratio, get_affine_matrix

__all__ = ["ImageTransform", "DENSE_FIELDS"]

# dense label name -> (border value, dtype)
DENSE_FIELDS = {"seg": 255, "depth": 0.0, "normals": 0.0}


class ImageTransform:
    """Turn an :class:`~poseforge.data.records.ImageRecord` into a model input with all its labels.

    Args:
        input_size: model input ``(width, height)``.
        keypoint_set: the people's keypoint set (flip pairs); ``None`` for images without keypoints.
        augment: False (evaluation), True (mmpose defaults) or an :class:`AugmentConfig` (its half-body
            settings do not apply to whole images).
        dense: the dense labels to carry (``"seg"``, ``"depth"``, ``"normals"``); each must be in the record.
        seg_flip_index: the class of each part class in a mirrored image (left/right swap).
        ignore_index: segmentation label of unlabeled pixels (and of the padding).

    Sample fields: ``image`` uint8 ``[3, h, w]``; ``keypoints`` float32 ``[N, K, 2]`` input pixels
    (pair-swapped when flipped); ``visibility`` float32 ``[N, K]`` (zero outside the input);
    ``valid`` bool ``[N]`` (a person with a labeled keypoint in view); ``matrix`` float32 ``[2, 3]``
    image -> input; ``flipped``; ``image_id``, ``dataset_index`` int64; ``image_size`` int64 ``[2]``;
    and the dense labels: ``seg`` uint8 ``[h, w]``, ``depth`` float32 ``[h, w]``, ``normals`` float32
    ``[3, h, w]``.
    """

    def __init__(self, input_size: tuple[int, int], keypoint_set: str | KeypointSet | None = None,
                 augment: bool | AugmentConfig = False, dense: Sequence[str] = (),
                 seg_flip_index: Sequence[int] | None = None, ignore_index: int = 255) -> None:
        if len(input_size) != 2 or min(int(v) for v in input_size) < 1:
            raise PoseforgeError(f"ImageTransform: input_size must be (width, height) >= 1, got {input_size}")
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.keypoint_set = get_keypoint_set(keypoint_set) if keypoint_set is not None else None
        unknown = sorted(set(dense) - set(DENSE_FIELDS))
        if unknown:
            raise PoseforgeError(f"ImageTransform: unknown dense labels {unknown}; known: {', '.join(DENSE_FIELDS)}")
        self.dense = tuple(dense)
        self.ignore_index = int(ignore_index)
        self.seg_lut = np.arange(256, dtype=np.uint8)
        if seg_flip_index is not None:
            self.seg_lut[: len(seg_flip_index)] = np.asarray(seg_flip_index, dtype=np.uint8)
        self.flip_seg = seg_flip_index is not None
        if augment is True:
            augment = AugmentConfig()
        if augment not in (False, None) and not isinstance(augment, AugmentConfig):
            raise PoseforgeError(f"ImageTransform: augment must be a bool or an AugmentConfig, got {augment!r}")
        self.augment: AugmentConfig | None = augment or None
        if self.augment is not None:
            a = self.augment
            self.flip_prob = a.flip_prob
            self.bbox_transform = RandomBBoxTransform(a.shift_factor, a.shift_prob, a.scale_factor, a.scale_prob,
                                                      a.rotate_factor, a.rotate_prob)
            self.photometric = Photometric(a)

    def __repr__(self) -> str:
        ks = self.keypoint_set.name if self.keypoint_set is not None else None
        return f"ImageTransform(input_size={self.input_size}, keypoint_set={ks!r}, dense={self.dense}, augment={self.augment})"

    def matrix(self, width: int, height: int, generator: torch.Generator | None = None) -> tuple[Tensor, bool]:
        """Image -> input affine ``[2, 3]`` (float64) for a ``width x height`` image, and whether it mirrors."""
        center = torch.tensor([[(width - 1) / 2, (height - 1) / 2]], dtype=torch.float64)
        scale = torch.tensor([[max(width - 1, 1), max(height - 1, 1)]], dtype=torch.float64)
        rotation = torch.zeros(1, dtype=torch.float64)
        flip = False
        if self.augment is not None:
            flip = bool(torch.rand(1, generator=generator) < self.flip_prob)
            center, scale, rotation = self.bbox_transform(center, scale, generator)
        scale = fix_aspect_ratio(scale, (self.input_size[0] - 1) / max(self.input_size[1] - 1, 1))
        crop = get_affine_matrix(center, scale, rotation, self.input_size, use_udp=True)
        if flip:
            crop = compose_affine(crop, RandomFlip.image_flip_matrix(float(width), torch.tensor([True])))
        return crop[0], flip

    def __call__(self, record: ImageRecord, image: np.ndarray | None = None,
                 generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """One sample (see the class doc); ``image`` defaults to the file at ``record.image_path``."""
        where = record.image_path or f"image {record.image_id}"
        if image is None:
            if not record.image_path:
                raise DataError(f"{where}: field 'image_path': no pixels and no image path")
            image = load_image(record.image_path)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise DataError(f"{where}: expected an H x W x 3 uint8 RGB image, got {image.dtype} {image.shape}")
        height, width = image.shape[:2]
        matrix, flipped = self.matrix(width, height, generator)
        m = matrix.numpy()
        w, h = self.input_size
        pixels = torch.from_numpy(np.ascontiguousarray(crop_image(image, m, self.input_size).transpose(2, 0, 1)))
        if self.augment is not None and self.augment.photometric:
            pixels = self.photometric(pixels[None].float(), generator)[0].round().clamp(0, 255).to(torch.uint8)
        sample: dict[str, Tensor] = {"image": pixels, "matrix": matrix.float(), "flipped": torch.tensor(flipped),
                                     "image_id": torch.tensor(int(record.image_id), dtype=torch.int64),
                                     "dataset_index": torch.tensor(int(record.dataset_index), dtype=torch.int64),
                                     "image_size": torch.tensor([width, height], dtype=torch.int64)}
        if self.keypoint_set is not None:
            sample.update(self._people(record, matrix, flipped, where))
        for name in self.dense:
            sample[name] = self._dense(record, name, m, flipped, (width, height), where)
        return sample

    def _people(self, record: ImageRecord, matrix: Tensor, flipped: bool, where: str) -> dict[str, Tensor]:
        ks = self.keypoint_set
        assert ks is not None
        k = ks.num_keypoints
        people = [inst for inst in record.instances if not inst.iscrowd]
        for inst in people:
            if inst.keypoints.shape != (k, 2) or inst.visibility.shape != (k,):
                raise DataError(f"{where}: annotation {inst.instance_id}: field 'keypoints': expected {k} keypoints of "
                                f"set '{ks.name}', got {tuple(inst.keypoints.shape)}")
        if people:
            keypoints = torch.from_numpy(np.stack([np.asarray(i.keypoints, dtype=np.float64) for i in people]))
            visibility = torch.from_numpy(np.stack([np.asarray(i.visibility, dtype=np.float64) for i in people]))
        else:
            keypoints, visibility = torch.zeros(0, k, 2, dtype=torch.float64), torch.zeros(0, k, dtype=torch.float64)
        points = affine_points(keypoints, matrix)
        if flipped:  # labels follow the mirror: the left wrist is now where the right one was
            index = torch.as_tensor(ks.flip_index, dtype=torch.long)
            points, visibility = points[:, index], visibility[:, index]
        w, h = self.input_size
        inside = (points[..., 0] >= 0) & (points[..., 0] < w) & (points[..., 1] >= 0) & (points[..., 1] < h)
        visibility = torch.where(inside, visibility.clamp(0, 1), torch.zeros_like(visibility))
        return {"keypoints": points.float(), "visibility": visibility.float(), "valid": (visibility > 0).any(-1)}

    def _dense(self, record: ImageRecord, name: str, m: np.ndarray, flipped: bool, size: tuple[int, int],
               where: str) -> Tensor:
        if name not in record.dense:
            raise DataError(f"{where}: field '{name}': the record has no {name} labels")
        label = np.asarray(record.dense[name])
        if label.shape[:2] != (size[1], size[0]):
            raise DataError(f"{where}: field '{name}': {label.shape[1]}x{label.shape[0]} labels for a {size[0]}x{size[1]} image")
        border = self.ignore_index if name == "seg" else DENSE_FIELDS[name]
        dtype = np.uint8 if name == "seg" else np.float32
        warped = cv2.warpAffine(np.ascontiguousarray(label.astype(dtype, copy=False)), m, self.input_size,
                                flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                                borderValue=(border, border, border) if label.ndim == 3 else border)
        if name == "seg":
            if flipped and self.flip_seg:
                warped = self.seg_lut[warped]
            return torch.from_numpy(np.ascontiguousarray(warped))
        if name == "normals":  # the normals turn (and mirror) with the image
            linear = m[:, :2] / np.sqrt(abs(np.linalg.det(m[:, :2])))
            xy = warped[..., :2] @ linear.T.astype(np.float32)
            warped = np.concatenate([xy, warped[..., 2:]], -1)
            return torch.from_numpy(np.ascontiguousarray(warped.transpose(2, 0, 1)))
        return torch.from_numpy(np.ascontiguousarray(warped))
