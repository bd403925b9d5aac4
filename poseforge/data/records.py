"""The one instance record that every dataset yields (COCO files, the synthetic renderer, folders)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np


@dataclass
class ImageInfo:
    """One image of a dataset. ``path`` is resolved (absolute or relative to the working directory)."""

    id: int
    file_name: str
    width: int
    height: int
    path: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)  # e.g. CrowdPose "crowdIndex"


@dataclass
class PoseInstance:
    """One annotated (or detected) instance: a person or an animal in one image.

    Coordinates are image pixels; arrays are float64 when read from files (so that writing them back
    gives the same numbers) and float32 when rendered. ``visibility`` follows COCO: 0 unlabeled, 1 labeled but occluded,
    2 visible; some files store confidences in (0, 1] instead, so it is a float and ``> 0`` means
    labeled. ``image`` holds the pixels (H x W x 3 uint8 RGB) when the source renders in memory.
    """

    image_id: int
    image_path: str | None
    image_size: tuple[int, int]  # (width, height)
    bbox: np.ndarray  # [4] (x, y, w, h)
    keypoints: np.ndarray  # [K, 2]
    visibility: np.ndarray  # [K]
    keypoint_set: str
    area: float = 0.0
    iscrowd: bool = False
    instance_id: int = -1  # annotation id
    category_id: int = 1
    score: float = 1.0  # box score: 1 for ground truth, the detector's for detections
    dataset_index: int = 0  # which source of a multi-dataset mix
    image: np.ndarray | None = None
    extras: dict[str, Any] = field(default_factory=dict)  # masks, part maps, depth ...

    @property
    def num_keypoints(self) -> int:
        return int(self.keypoints.shape[0])

    @property
    def num_labeled(self) -> int:
        return int((self.visibility > 0).sum())

    def copy(self, **changes: Any) -> "PoseInstance":
        """A copy whose arrays may be modified without touching this record."""
        out = replace(self, **changes)
        for name in ("bbox", "keypoints", "visibility"):
            if name not in changes:
                setattr(out, name, getattr(self, name).copy())
        if "extras" not in changes:
            out.extras = dict(self.extras)
        return out


@dataclass
class ImageRecord:
    """One image with every instance in it: what bottom-up and dense samples are made of.

    ``dense`` holds per-pixel labels at the image's resolution where the source has them: ``"seg"``
    (H x W uint8 part classes, 255 unlabeled), ``"depth"`` (H x W float32, 0 where none) and
    ``"normals"`` (H x W x 3 float32 unit camera-space normals, zero where none).
    """

    image_id: int
    image_path: str | None
    image_size: tuple[int, int]  # (width, height)
    keypoint_set: str
    instances: list[PoseInstance] = field(default_factory=list)
    dense: dict[str, np.ndarray] = field(default_factory=dict)
    dataset_index: int = 0


def json_floats(values: np.ndarray) -> list[float]:
    """Numbers for JSON: float64 exactly, float32 by their shortest decimal form (280.79, not 280.790009)."""
    values = np.asarray(values).reshape(-1)
    if values.dtype == np.float64 or values.dtype.kind in "iub":
        return [float(v) for v in values.tolist()]
    return [float(np.format_float_positional(v, unique=True, trim="-")) for v in values.astype(np.float32)]


def keypoints_to_coco(keypoints: np.ndarray, visibility: np.ndarray) -> list[float]:
    """[K, 2] + [K] -> COCO's flat ``[x1, y1, v1, x2, ...]`` list."""
    keypoints, visibility = np.asarray(keypoints), np.asarray(visibility)
    dtype = np.result_type(keypoints.dtype, visibility.dtype)
    flat = np.concatenate([keypoints.astype(dtype), visibility.astype(dtype)[:, None]], axis=1)
    return json_floats(flat)
