"""Evaluation sets: ground truth plus what to predict on (boxes for top-down models, whole images
for bottom-up and dense ones), from a COCO-format file or the synthetic renderer.

* :class:`EvalSet` - ground truth, the boxes to predict in (ground-truth boxes by default, or a COCO
  detection results file) and a picklable image loader (called in DataLoader workers);
  :meth:`EvalSet.box_records` / :meth:`EvalSet.image_records` give what a top-down or a whole-image
  transform takes.
* :func:`coco_eval_set`, :func:`synthetic_eval_set` (held-out synthetic people, rendered on demand,
  optionally with dense labels), :func:`find_coco_split`, :func:`read_detections`,
  :func:`parse_synthetic_spec`.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..coerce import parse_range, parse_size
from ..errors import PoseforgeError, data_error
from ..io import read_json
from .coco import CocoKeypoints, read_coco
from .images import load_image
from .records import ImageInfo, ImageRecord, PoseInstance
from .transforms import clip_bbox_xywh

__all__ = ["EvalSet", "coco_eval_set", "synthetic_eval_set", "find_coco_split", "read_detections",
           "parse_synthetic_spec", "records_eval_set"]

# (annotation file, image folder) candidates inside a dataset folder, per split.
_SPLIT_LAYOUTS = {
    "train": (("annotations/person_keypoints_train2017.json", "train2017"), ("train/annotations.json", "train/images"),
              ("train.json", "images"), ("annotations.json", "images")),
    "val": (("annotations/person_keypoints_val2017.json", "val2017"), ("val/annotations.json", "val/images"),
            ("val.json", "images")),
}


def find_coco_split(path: str | os.PathLike, split: str) -> tuple[Path, Path | None]:
    """``(annotation JSON, image folder or None for the reader's default)`` of a split.

    ``path`` is a COCO keypoint JSON (used as is) or a folder in the COCO 2017 layout
    (``annotations/person_keypoints_{split}2017.json`` + ``{split}2017/``) or the layout
    ``poseforge synth`` writes (``{split}/annotations.json`` + ``{split}/images/``).
    """
    path = Path(path)
    if path.is_file():
        return path, None
    if not path.is_dir():
        raise PoseforgeError(f"{path}: no such dataset file or folder")
    for ann, images in _SPLIT_LAYOUTS[split]:
        if (path / ann).is_file():
            root = path / images
            return path / ann, (root if root.is_dir() else None)
    tried = ", ".join(a for a, _ in _SPLIT_LAYOUTS[split])
    raise PoseforgeError(f"{path}: no {split} annotations found (looked for {tried})")


@dataclass
class EvalSet:
    """Ground truth and what to predict on.

    Attributes:
        name: what to call the set in logs and tables.
        gt: the ground truth (records without pixels).
        image_ids, boxes, box_scores: the boxes (x, y, w, h) a top-down model runs on, grouped by image.
        clip_boxes: clip boxes to the image before cropping (mmpose does for annotations, not detections).
        load_images: ``image ids -> {id: H x W x 3 uint8 RGB}`` (called in DataLoader workers).
        box_instance_ids: the ground-truth annotation id of each box (ground-truth boxes), or ``None``
            (detections); lets a metric pair every prediction with its person (PCK, EPE).
        load_dense: ``image ids -> {id: {"seg": ..., "depth": ..., "normals": ...}}`` dense labels at
            image resolution, where the set has them (``None``: keypoints only).
    """

    name: str
    gt: CocoKeypoints
    image_ids: np.ndarray
    boxes: np.ndarray
    box_scores: np.ndarray
    clip_boxes: bool
    load_images: Callable[[Sequence[int]], dict[int, np.ndarray]]
    box_instance_ids: np.ndarray | None = None
    load_dense: Callable[[Sequence[int]], dict[int, dict[str, np.ndarray]]] | None = None

    def __len__(self) -> int:
        return int(len(self.image_ids))

    @property
    def keypoint_set(self):
        return self.gt.keypoint_set

    def box_records(self) -> list[PoseInstance]:
        """One record per box (top-down models), boxes clipped to the image where ``clip_boxes`` says
        (as mmpose clips annotation boxes), no labels: the ground truth stays with the metric."""
        ks = self.gt.keypoint_set
        k = ks.num_keypoints
        infos = [self.gt.images[int(i)] for i in self.image_ids.tolist()]
        boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        if self.clip_boxes and len(boxes):
            boxes = clip_bbox_xywh(boxes, np.asarray([i.width for i in infos], dtype=np.float64),
                                   np.asarray([i.height for i in infos], dtype=np.float64))
        ids = self.box_instance_ids if self.box_instance_ids is not None else np.full(len(boxes), -1)
        return [PoseInstance(image_id=info.id, image_path=info.path, image_size=(info.width, info.height), bbox=box,
                             keypoints=np.zeros((k, 2)), visibility=np.zeros(k), keypoint_set=ks.name,
                             instance_id=int(instance_id), score=float(score))
                for info, box, score, instance_id in zip(infos, boxes, self.box_scores.tolist(), ids.tolist())]

    def image_records(self) -> list[ImageRecord]:
        """One record per image with its ground-truth people (bottom-up and dense models)."""
        by_image = self.gt.instances_by_image()
        return [ImageRecord(image_id=i, image_path=info.path, image_size=(info.width, info.height),
                            keypoint_set=self.gt.keypoint_set.name, instances=by_image[i])
                for i, info in self.gt.images.items()]


def _gt_boxes(gt: CocoKeypoints) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(image ids, boxes xywh, scores, annotation ids)`` of the non-crowd ground truth, in image order."""
    kept = [i for i in gt.instances if not i.iscrowd]
    order = {image_id: n for n, image_id in enumerate(gt.images)}
    kept.sort(key=lambda i: order[i.image_id])
    ids = np.asarray([i.image_id for i in kept], dtype=np.int64)
    boxes = np.stack([np.asarray(i.bbox, dtype=np.float64) for i in kept]) if kept else np.zeros((0, 4))
    return ids, boxes, np.ones(len(kept)), np.asarray([i.instance_id for i in kept], dtype=np.int64)


def _finite(value: int | float) -> bool:
    """``math.isfinite`` that is False, not an OverflowError, for integers beyond float range."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def read_detections(path: str | os.PathLike, gt: CocoKeypoints, score_threshold: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Person boxes of a COCO detection results file: ``(image_ids, boxes xywh, scores)``.

    Only records of the ground truth's category (person) are used; images absent from the ground
    truth, malformed boxes and scores are a one-line :class:`DataError` naming the record.
    """
    file = str(path)
    try:
        records = read_json(path)
    except RecursionError:
        raise data_error(file, None, None, "not valid JSON (nested too deeply)") from None
    if not isinstance(records, list):
        raise data_error(file, None, None, f"expected a list of COCO detection results, got {type(records).__name__}")
    categories = {int(c["id"]) for c in gt.categories if isinstance(c, dict) and "id" in c} or {1}
    ids, boxes, scores = [], [], []
    for n, r in enumerate(records):
        label = f"detection {n}"
        if not isinstance(r, dict):
            raise data_error(file, label, None, f"expected an object, got {type(r).__name__}")
        for key in ("image_id", "bbox", "score"):
            if key not in r:
                raise data_error(file, label, key, "missing")
        category = r.get("category_id", 1)
        if isinstance(category, bool) or not isinstance(category, int):
            raise data_error(file, label, "category_id", f"expected an integer, got {category!r:.40}")
        if category not in categories:
            continue
        if isinstance(r["image_id"], (list, dict)) or r["image_id"] not in gt.images:
            raise data_error(file, label, "image_id", f"unknown image id {r['image_id']!r:.40} (not in {gt.source})")
        box = r["bbox"]
        if not isinstance(box, (list, tuple)) or len(box) != 4 or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in box):
            raise data_error(file, label, "bbox", f"expected 4 numbers (x, y, width, height), got {box!r:.60}")
        if not all(_finite(v) for v in box) or box[2] <= 0 or box[3] <= 0:
            raise data_error(file, label, "bbox", f"expected a finite box with positive size, got {box!r:.60}")
        score = r["score"]
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not _finite(score):
            raise data_error(file, label, "score", f"expected a number, got {score!r:.40}")
        if score < score_threshold:
            continue
        ids.append(r["image_id"])
        boxes.append(box)
        scores.append(score)
    order = {image_id: n for n, image_id in enumerate(gt.images)}
    idx = sorted(range(len(ids)), key=lambda i: order[ids[i]])
    return (np.asarray([ids[i] for i in idx], dtype=np.int64), np.asarray([boxes[i] for i in idx], dtype=np.float64).reshape(-1, 4),
            np.asarray([scores[i] for i in idx], dtype=np.float64))


class _FileImages:
    """Picklable image loader for DataLoader workers: image id -> decoded file."""

    def __init__(self, paths: dict[int, str]) -> None:
        self.paths = paths

    def __call__(self, image_ids: Sequence[int]) -> dict[int, np.ndarray]:
        return {i: load_image(self.paths[i]) for i in dict.fromkeys(image_ids)}


def coco_eval_set(annotations: str | os.PathLike, boxes: str | os.PathLike | None = None,
                  image_root: str | os.PathLike | None = None, keypoint_set: str | None = None) -> EvalSet:
    """An :class:`EvalSet` of a COCO keypoint file (or dataset folder: its val split) with its
    ground-truth boxes, or the person boxes of a detection results file ``boxes``."""
    path, root = find_coco_split(annotations, "val") if Path(annotations).is_dir() else (Path(annotations), None)
    gt = read_coco(path, image_root=image_root or root, keypoint_set=keypoint_set)
    return records_eval_set(gt, str(path), boxes)


def records_eval_set(gt: CocoKeypoints, name: str, boxes: str | os.PathLike | None = None) -> EvalSet:
    """An :class:`EvalSet` of ground truth already read (any reader format), images from its files."""
    if boxes is None:
        ids, xywh, scores, instance_ids = _gt_boxes(gt)
    else:
        (ids, xywh, scores), instance_ids = read_detections(boxes, gt), None
    paths = {i: info.path for i, info in gt.images.items()}
    name = f"{name}" + (f" + {boxes}" if boxes else "")
    return EvalSet(name, gt, ids, xywh, scores, clip_boxes=boxes is None, load_images=_FileImages(paths),
                   box_instance_ids=instance_ids)


class _SyntheticImages:
    """Picklable renderer of held-out synthetic images (rendered in vectorized groups). The dense labels
    of the images it rendered last are kept for :meth:`dense` (a worker asks for both in turn)."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings
        self._dataset = None
        self._dense: dict[int, dict[str, np.ndarray]] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"settings": self.settings, "_dataset": None, "_dense": {}}

    def dataset(self):
        if self._dataset is None:
            from .synth import SyntheticPoseDataset

            self._dataset = SyntheticPoseDataset(**self.settings)
        return self._dataset

    def __call__(self, image_ids: Sequence[int]) -> dict[int, np.ndarray]:
        unique = list(dict.fromkeys(int(i) for i in image_ids))
        rendered = self.dataset().render_batch(unique)
        self._dense = {r.index: {"seg": r.parts, "depth": r.depth, "normals": r.normals} for r in rendered}
        return {r.index: r.image for r in rendered}

    def dense(self, image_ids: Sequence[int]) -> dict[int, dict[str, np.ndarray]]:
        unique = list(dict.fromkeys(int(i) for i in image_ids))
        if any(i not in self._dense for i in unique):
            self(unique)
        return {i: self._dense[i] for i in unique}


def synthetic_eval_set(num_images: int = 200, seed: int = 1_000_003, image_size: Sequence[int] = (192, 256),
                       people: Sequence[int] = (1, 1), keypoint_set: str = "coco17", clutter: bool = True) -> EvalSet:
    """Held-out synthetic people with ground-truth boxes and dense labels (rendered once here for the
    labels; the pixels are rendered again by the workers, identically, since image ``i`` depends on
    ``(seed, i)`` only)."""
    settings = dict(num_images=int(num_images), seed=int(seed), image_size=tuple(int(v) for v in image_size),
                    people=tuple(int(v) for v in people), keypoint_set=keypoint_set, clutter=bool(clutter))
    renderer = _SyntheticImages(settings)
    dataset = renderer.dataset()
    images: dict[int, ImageInfo] = {}
    instances: list[PoseInstance] = []
    for rendered in dataset.render_batch(range(len(dataset))):
        images[rendered.index] = dataset.image_info(rendered.index)
        for inst in rendered.instances:
            instances.append(inst.copy(image=None, extras={}))
    ks = dataset.keypoint_set
    categories = [{"id": 1, "name": ks.category, "keypoints": list(ks.names)}]
    name = f"synthetic(seed={seed}, images={num_images}, size={settings['image_size'][0]}x{settings['image_size'][1]}, " \
           f"people={settings['people'][0]}-{settings['people'][1]})"
    gt = CocoKeypoints(name, ks, images, instances, categories)
    ids, xywh, scores, instance_ids = _gt_boxes(gt)
    return EvalSet(name, gt, ids, xywh, scores, clip_boxes=True, load_images=renderer, box_instance_ids=instance_ids,
                   load_dense=renderer.dense)


_SPEC_KEYS = {"images": "num_images", "n": "num_images", "seed": "seed", "size": "image_size", "people": "people",
              "clutter": "clutter", "keypoints": "keypoint_set"}


def parse_synthetic_spec(spec: str, defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """``"synthetic"`` or ``"synthetic:seed=7,images=500,size=192x256,people=1-1"`` -> keyword arguments
    of :func:`synthetic_eval_set` (``defaults`` fill what the spec leaves out)."""
    out = dict(defaults or {})
    head, _, rest = spec.partition(":")
    if head.strip().lower() != "synthetic":
        raise PoseforgeError(f"--data {spec}: expected 'synthetic' or 'synthetic:key=value,...'")
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep or key.strip() not in _SPEC_KEYS:
            raise PoseforgeError(f"--data {spec}: bad item '{item}'; keys: {', '.join(sorted(set(_SPEC_KEYS) - {'n'}))}")
        name = _SPEC_KEYS[key.strip()]
        value = value.strip()
        try:
            if name in ("num_images", "seed"):
                out[name] = int(value)
            elif name == "image_size":
                out[name] = parse_size(value)
            elif name == "people":
                out[name] = parse_range(value)
            elif name == "clutter":
                out[name] = value.lower() in ("1", "true", "yes", "on")
            else:
                out[name] = value
        except ValueError:
            raise PoseforgeError(f"--data {spec}: bad value for {key.strip()}: '{value}'") from None
    return out


