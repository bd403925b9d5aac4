"""Whole-image transform of bottom-up and dense models: an image with all its people (and its dense
labels) -> the fixed-size model input.

The image is fitted into ``input_size`` with its aspect ratio kept and centred (zero padding), by one
2x3 ``matrix`` from image to input pixels in the pixel-centre convention of UDP (image pixel ``(0, 0)``
and ``(W - 1, H - 1)`` land on input pixels, so mapping predictions back is exact). Training
augmentation reuses the top-down steps on the whole image: a horizontal flip (left/right keypoints
swap; with ``seg_flip_index`` the part classes too), shift / resize / rotation
(:class:`~poseforge.data.augment.RandomBBoxTransform`) and the photometric steps. Dense labels are
warped with nearest-neighbour sampling (labels never blend), surface normals turned with the image.

With people, every sample also carries an ignore ``mask`` (HigherHRNet / LitePose): 0 over image regions
whose people are not labeled - crowd annotations (``iscrowd``: their RLE or polygons) and people without a
labeled keypoint (their segmentation, else the renderer's visible mask, else their box) - 1 elsewhere,
padding included (no person is there). It is rasterized at image resolution (:func:`ignore_map`) and warped
with the sample's own affine (flip included) to ``mask_stride``; a loss drops the heatmap pixels it zeroes.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import DataError, PoseforgeError
from ..keypoints import KeypointSet, get_keypoint_set
from .augment import AugmentConfig, Photometric, RandomBBoxTransform, RandomFlip
from .images import load_image
from .records import ImageRecord, PoseInstance
from .transforms import affine_points, compose_affine, crop_image, fix_aspect_ratio, get_affine_matrix

__all__ = ["ImageTransform", "DENSE_FIELDS", "ignore_map", "ignored"]

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
        ignore_mask: with a keypoint set, add the ignore ``mask`` (see the module doc).
        mask_stride: input pixels per ``mask`` cell (2: the 1/2-scale maps of HigherHRNet / LitePose; a loss
            pools it to coarser maps).

    Sample fields: ``image`` uint8 ``[3, h, w]``; ``keypoints`` float32 ``[N, K, 2]`` input pixels
    (pair-swapped when flipped); ``visibility`` float32 ``[N, K]`` (zero outside the input);
    ``valid`` bool ``[N]`` (a person with a labeled keypoint in view); ``mask`` uint8
    ``[ceil(h / mask_stride), ceil(w / mask_stride)]`` (1 use, 0 ignore; with a keypoint set);
    ``matrix`` float32 ``[2, 3]`` image -> input; ``flipped``; ``image_id``, ``dataset_index`` int64; ``image_size`` int64 ``[2]``;
    and the dense labels: ``seg`` uint8 ``[h, w]``, ``depth`` float32 ``[h, w]``, ``normals`` float32
    ``[3, h, w]``.
    """

    def __init__(self, input_size: tuple[int, int], keypoint_set: str | KeypointSet | None = None,
                 augment: bool | AugmentConfig = False, dense: Sequence[str] = (),
                 seg_flip_index: Sequence[int] | None = None, ignore_index: int = 255, ignore_mask: bool = True,
                 mask_stride: int = 2) -> None:
        if len(input_size) != 2 or min(int(v) for v in input_size) < 1:
            raise PoseforgeError(f"ImageTransform: input_size must be (width, height) >= 1, got {input_size}")
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.keypoint_set = get_keypoint_set(keypoint_set) if keypoint_set is not None else None
        unknown = sorted(set(dense) - set(DENSE_FIELDS))
        if unknown:
            raise PoseforgeError(f"ImageTransform: unknown dense labels {unknown}; known: {', '.join(DENSE_FIELDS)}")
        self.dense = tuple(dense)
        self.ignore_index = int(ignore_index)
        if isinstance(mask_stride, bool) or not isinstance(mask_stride, int) or mask_stride < 1:
            raise PoseforgeError(f"ImageTransform: mask_stride must be a positive integer, got {mask_stride!r}")
        self.mask_stride = mask_stride
        self.ignore_mask = bool(ignore_mask) and self.keypoint_set is not None
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
        if self.ignore_mask:
            sample["mask"] = self._mask(record, m, (width, height), where)
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

    @property
    def mask_size(self) -> tuple[int, int]:
        """``(w, h)`` of the ignore ``mask``."""
        return (math.ceil(self.input_size[0] / self.mask_stride), math.ceil(self.input_size[1] / self.mask_stride))

    def _mask(self, record: ImageRecord, m: np.ndarray, size: tuple[int, int], where: str) -> Tensor:
        w, h = self.mask_size
        regions = ignore_map(record.instances, size[0], size[1], where)
        if regions is None:  # nothing to ignore (most images): no rasterizing, no warp
            return torch.ones(h, w, dtype=torch.uint8)
        import cv2  # imported on use: predicting needs no OpenCV

        # input pixel x -> mask cell (x - (s - 1) / 2) / s: cell c is centred on its s x s input pixels
        s = self.mask_stride
        to_cells = np.array([[1.0 / s, 0.0, -(s - 1) / (2.0 * s)], [0.0, 1.0 / s, -(s - 1) / (2.0 * s)]])
        matrix = to_cells[:, :2] @ m
        matrix[:, 2] += to_cells[:, 2]
        warped = cv2.warpAffine(regions.astype(np.float32), matrix, (w, h), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
        return torch.from_numpy(np.ascontiguousarray(warped < 0.5).astype(np.uint8))

    def _dense(self, record: ImageRecord, name: str, m: np.ndarray, flipped: bool, size: tuple[int, int],
               where: str) -> Tensor:
        if name not in record.dense:
            raise DataError(f"{where}: field '{name}': the record has no {name} labels")
        label = np.asarray(record.dense[name])
        if label.shape[:2] != (size[1], size[0]):
            raise DataError(f"{where}: field '{name}': {label.shape[1]}x{label.shape[0]} labels for a {size[0]}x{size[1]} image")
        import cv2  # imported on use: predicting needs no OpenCV

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


def ignored(instance: PoseInstance) -> bool:
    """Whether a person's image region is left out of a bottom-up loss: a crowd, or no labeled keypoint."""
    return bool(instance.iscrowd) or not bool((np.asarray(instance.visibility) > 0).any())


def ignore_map(instances: Sequence[PoseInstance], width: int, height: int, where: str = "image") -> np.ndarray | None:
    """The ``height x width`` uint8 map (1 = ignore) of the :func:`ignored` people of one image, ``None`` when
    there are none. A person's region is, in this order, its ``extras["segmentation"]`` (COCO polygons or an
    RLE, as pycocotools reads them; HigherHRNet's rule), its ``extras["mask"]`` (a bool ``H x W`` visible mask,
    the renderer's), or its box. All polygons, RLEs and boxes are merged into one RLE and decoded once."""
    people = [p for p in instances if ignored(p)]
    if not people:
        return None
    from faster_coco_eval.core import mask as rle  # the COCO mask utilities (a dependency)

    shapes: list[Any] = []
    boxes: list[np.ndarray] = []
    pixels = np.zeros((height, width), dtype=bool)
    for person in people:  # (collects each person's region; the rasterizing is one merge + decode)
        segmentation = person.extras.get("segmentation")
        visible = person.extras.get("mask")
        if _has_segmentation(segmentation):
            try:
                shape = _compressed_rle(segmentation) or rle.frPyObjects(segmentation, height, width)
            except Exception as error:  # the C extension raises bare TypeError / ValueError / Exception
                raise DataError(f"{where}: annotation {person.instance_id}: field 'segmentation': not COCO polygons "
                                f"or an RLE ({_first_line(error)})") from None
            shapes.extend(shape if isinstance(shape, list) else [shape])
        elif visible is not None:
            visible = np.asarray(visible)
            if visible.shape != (height, width):
                raise DataError(f"{where}: annotation {person.instance_id}: field 'mask': a mask of shape "
                                f"{tuple(visible.shape)} for a {width}x{height} image (expected ({height}, {width}))")
            pixels |= visible.astype(bool)
        else:
            boxes.append(np.asarray(person.bbox, dtype=np.float64).reshape(4))
    if boxes:
        shapes.extend(rle.frPyObjects(np.stack(boxes), height, width))
    for shape in shapes:
        if list(shape.get("size", ())) != [height, width]:
            raise DataError(f"{where}: field 'segmentation': an RLE of size {shape.get('size')} for a "
                            f"{width}x{height} image (size is [height, width])")
    if shapes:
        try:
            pixels |= rle.decode(rle.merge(shapes, 0)).astype(bool).reshape(height, width)
        except Exception as error:  # a malformed compressed RLE string fails only here
            raise DataError(f"{where}: field 'segmentation': not a valid RLE ({_first_line(error)})") from None
    return pixels.astype(np.uint8)


def _first_line(error: Exception) -> str:
    """An exception as one short line (the mask extension's messages run on)."""
    text = str(error).splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}"[:160]


def _compressed_rle(segmentation: Any) -> dict | None:
    """A compressed COCO RLE (``counts`` a string, as json files hold it) with bytes counts, as the mask
    utilities take it; ``None`` for polygons and uncompressed (list) RLEs."""
    if isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), (str, bytes)):
        counts = segmentation["counts"]
        return {"size": list(segmentation.get("size", ())), "counts": counts.encode() if isinstance(counts, str) else counts}
    return None


def _has_segmentation(segmentation: Any) -> bool:
    """A non-empty COCO segmentation: polygons (a list of coordinate lists) or an RLE dict."""
    if isinstance(segmentation, dict):
        return True
    return isinstance(segmentation, (list, tuple)) and len(segmentation) > 0
