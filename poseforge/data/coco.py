"""Validated reader and writer of COCO-format keypoint files (body, whole body, animal, CrowdPose).

Every problem in a file is reported as one line naming the file, the annotation (or image) and the
field. Instances removed by a filter are counted per reason and reported, never dropped silently.
"""
from __future__ import annotations

import logging
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..errors import data_error
from ..io import read_json, write_json_atomic
from ..keypoints import KeypointSet, get_keypoint_set, match_keypoint_set
from .records import ImageInfo, PoseInstance, json_floats, keypoints_to_coco

__all__ = ["CocoKeypoints", "read_coco", "write_coco", "write_coco_results", "split_wholebody_result", "WHOLEBODY_FIELDS"]

log = logging.getLogger("poseforge")

# COCO-WholeBody stores body, feet, face and hands in separate fields, in this order.
WHOLEBODY_FIELDS = (("keypoints", 17), ("foot_kpts", 6), ("face_kpts", 68), ("lefthand_kpts", 21), ("righthand_kpts", 21))
_WHOLEBODY_BOXES = {"face_kpts": "face", "lefthand_kpts": "lefthand", "righthand_kpts": "righthand"}


@dataclass
class CocoKeypoints:
    """The content of one COCO keypoint file, as poseforge records."""

    source: str
    keypoint_set: KeypointSet
    images: dict[int, ImageInfo]
    instances: list[PoseInstance]
    categories: list[dict[str, Any]]
    skipped: Counter = field(default_factory=Counter)  # reason -> number of annotations
    wholebody_split: bool = False  # True when read from the split COCO-WholeBody fields

    def __len__(self) -> int:
        return len(self.instances)

    def summary(self) -> str:
        """One line: images, instances kept and what each filter removed."""
        text = f"{self.source}: {len(self.images)} images, {len(self.instances)} instances ({self.keypoint_set.name})"
        if self.skipped:
            text += "; skipped " + ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items()))
        return text

    def instances_by_image(self) -> dict[int, list[PoseInstance]]:
        out: dict[int, list[PoseInstance]] = {i: [] for i in self.images}
        for inst in self.instances:
            out[inst.image_id].append(inst)
        return out


def _number(value: Any, file: str, record: str, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise data_error(file, record, name, f"expected a number, got {type(value).__name__} {value!r:.40}")
    if not math.isfinite(value):
        raise data_error(file, record, name, f"non-finite value {value}")
    return float(value)


def _numbers(value: Any, count: int, file: str, record: str, name: str, what: str) -> np.ndarray:
    if not isinstance(value, (list, tuple)):
        raise data_error(file, record, name, f"expected a list of {count} numbers, got {type(value).__name__}")
    if len(value) != count:
        raise data_error(file, record, name, f"expected {count} numbers ({what}), got {len(value)}")
    arr = np.asarray(value)
    if arr.dtype.kind not in "iuf" or arr.ndim != 1:
        bad = next((v for v in value if isinstance(v, bool) or not isinstance(v, (int, float))), value)
        raise data_error(file, record, name, f"expected numbers, found {bad!r:.40}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        i = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise data_error(file, record, name, f"non-finite value {arr[i]} at position {i}")
    return arr


def _require(obj: dict, key: str, file: str, record: str) -> Any:
    if key not in obj:
        raise data_error(file, record, key, "missing")
    return obj[key]


def _resolve_keypoint_set(doc: dict, file: str, requested: "str | KeypointSet | None") -> tuple[KeypointSet, bool]:
    """Pick the keypoint set: the requested one, else from the category's names and the data."""
    anns = doc["annotations"]
    split = any("foot_kpts" in a or "face_kpts" in a for a in anns[:50])
    if requested is not None:
        ks = get_keypoint_set(requested)
        return ks, split and ks.num_keypoints == 133
    if split:
        return get_keypoint_set("wholebody133"), True
    cats = doc.get("categories") or []
    names = next((c.get("keypoints") for c in cats if isinstance(c, dict) and c.get("keypoints")), None)
    lengths = Counter(len(a["keypoints"]) for a in anns[:1000] if isinstance(a, dict) and isinstance(a.get("keypoints"), list))
    count = lengths.most_common(1)[0][0] // 3 if lengths else (len(names) if names else 0)
    ks = match_keypoint_set(names if names and len(names) == count else None, count)
    if ks is None:
        raise data_error(file, None, "categories", f"cannot tell which {count}-keypoint set this is; pass keypoint_set=")
    return ks, False


def read_coco(
    path: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    keypoint_set: "str | KeypointSet | None" = None,
    *,
    skip_crowd: bool = False,
    min_labeled: int = 0,
    check_images: bool = False,
    dataset_index: int = 0,
) -> CocoKeypoints:
    """Read and validate a COCO-format keypoint file.

    Args:
        path: the annotation JSON.
        image_root: folder of the images (default: the JSON's folder, or ``images/`` beside it).
        keypoint_set: the set's name; inferred from the category names and data when omitted.
        skip_crowd: drop ``iscrowd`` annotations (for training); counted in ``skipped``.
        min_labeled: drop annotations with fewer labeled keypoints (training uses 1); counted.
        check_images: fail on a referenced image file that does not exist.
        dataset_index: stored in every record (multi-dataset training).
    """
    file = str(path)
    doc = read_json(path)
    if not isinstance(doc, dict):
        raise data_error(file, None, None, f"expected a COCO object with 'images' and 'annotations', got {type(doc).__name__}")
    for key in ("images", "annotations"):
        if not isinstance(doc.get(key), list):
            raise data_error(file, None, key, "missing" if key not in doc else "expected a list")
    root = Path(image_root) if image_root is not None else _default_image_root(Path(path), doc)
    ks, split = _resolve_keypoint_set(doc, file, keypoint_set)
    num_k = ks.num_keypoints

    images: dict[int, ImageInfo] = {}
    for img in doc["images"]:
        rec = f"image {img.get('id', '?')}" if isinstance(img, dict) else "image entry"
        if not isinstance(img, dict):
            raise data_error(file, rec, None, f"expected an object, got {type(img).__name__}")
        image_id = _require(img, "id", file, rec)
        name = _require(img, "file_name", file, rec)
        width = _number(_require(img, "width", file, rec), file, rec, "width")
        height = _number(_require(img, "height", file, rec), file, rec, "height")
        if width <= 0 or height <= 0:
            raise data_error(file, rec, "width" if width <= 0 else "height", f"size must be positive, got {width:g}x{height:g}")
        if image_id in images:
            raise data_error(file, rec, "id", "duplicate image id")
        extras = {k: img[k] for k in ("crowdIndex",) if k in img}
        images[image_id] = ImageInfo(image_id, str(name), int(width), int(height), str(root / str(name)), extras)

    instances: list[PoseInstance] = []
    skipped: Counter = Counter()
    seen_ids: set = set()
    for ann in doc["annotations"]:
        rec = f"annotation {ann.get('id', '?')}" if isinstance(ann, dict) else "annotation entry"
        if not isinstance(ann, dict):
            raise data_error(file, rec, None, f"expected an object, got {type(ann).__name__}")
        inst = _parse_annotation(ann, file, rec, images, ks, split)
        if inst.instance_id in seen_ids:
            raise data_error(file, rec, "id", "duplicate annotation id")
        seen_ids.add(inst.instance_id)
        inst.dataset_index = dataset_index
        if skip_crowd and inst.iscrowd:
            skipped["crowd"] += 1
        elif inst.num_labeled < min_labeled:
            skipped[f"with fewer than {min_labeled} labeled keypoints"] += 1
        else:
            instances.append(inst)

    if check_images:
        used = {inst.image_id for inst in instances}
        for image_id in sorted(used):
            info = images[image_id]
            if not os.path.isfile(info.path):
                raise data_error(file, f"image {image_id}", "file_name", f"image file not found: {info.path}")

    data = CocoKeypoints(file, ks, images, instances, list(doc.get("categories") or []), skipped, split)
    if skipped:
        log.info(data.summary())
    return data


def _default_image_root(path: Path, doc: dict) -> Path:
    """Images beside the JSON, or in an ``images/`` folder beside it (the layout ``poseforge synth`` writes)."""
    folder = path.parent
    first = next((i.get("file_name") for i in doc["images"] if isinstance(i, dict) and i.get("file_name")), None)
    if first and not (folder / first).exists() and (folder / "images" / first).exists():
        return folder / "images"
    return folder


def _parse_annotation(ann: dict, file: str, rec: str, images: dict[int, ImageInfo], ks: KeypointSet, split: bool) -> PoseInstance:
    ann_id = _require(ann, "id", file, rec)
    image_id = _require(ann, "image_id", file, rec)
    if image_id not in images:
        raise data_error(file, rec, "image_id", f"unknown image id {image_id!r}")
    info = images[image_id]
    bbox = _numbers(_require(ann, "bbox", file, rec), 4, file, rec, "bbox", "x, y, width, height")
    if bbox[2] < 0 or bbox[3] < 0:
        raise data_error(file, rec, "bbox", f"negative size {bbox[2]:g}x{bbox[3]:g}")
    if split:
        parts = []
        for name, count in WHOLEBODY_FIELDS:
            if name not in ann and name != "keypoints":
                parts.append(np.zeros((count, 3)))  # a part absent from the file is unlabeled
                continue
            values = _numbers(_require(ann, name, file, rec), 3 * count, file, rec, name, f"{count} keypoints x 3")
            parts.append(values.reshape(count, 3))
        kps = np.concatenate(parts)
    else:
        kps = _numbers(_require(ann, "keypoints", file, rec), 3 * ks.num_keypoints, file, rec, "keypoints",
                       f"{ks.num_keypoints} keypoints x 3 for {ks.name}").reshape(-1, 3)
    if (kps[:, 2] < 0).any():
        raise data_error(file, rec, "keypoints", f"negative visibility {kps[:, 2].min():g}")
    area = ann.get("area")
    area = float(bbox[2] * bbox[3]) if area is None else _number(area, file, rec, "area")
    if area < 0:
        raise data_error(file, rec, "area", f"negative area {area:g}")
    iscrowd = ann.get("iscrowd", 0)
    if iscrowd not in (0, 1, True, False):
        raise data_error(file, rec, "iscrowd", f"expected 0 or 1, got {iscrowd!r}")
    extras = {}
    if split:
        extras["wholebody"] = {k: ann[k] for k in ann if k.endswith(("_box", "_valid"))}
    if "segmentation" in ann:
        extras["segmentation"] = ann["segmentation"]
    return PoseInstance(
        image_id=image_id,
        image_path=info.path,
        image_size=(info.width, info.height),
        bbox=bbox,
        keypoints=np.ascontiguousarray(kps[:, :2]),
        visibility=np.ascontiguousarray(kps[:, 2]),
        keypoint_set=ks.name,
        area=area,
        iscrowd=bool(iscrowd),
        instance_id=ann_id,
        category_id=int(ann.get("category_id", 1)),
        score=float(ann.get("score", 1.0)),
        extras=extras,
    )


def _annotation_dict(inst: PoseInstance, wholebody_split: bool) -> dict[str, Any]:
    ann: dict[str, Any] = {
        "id": inst.instance_id,
        "image_id": inst.image_id,
        "category_id": inst.category_id,
        "bbox": json_floats(inst.bbox),
        "area": json_floats(np.float64(inst.area))[0],
        "iscrowd": int(inst.iscrowd),
    }
    if wholebody_split:
        start = 0
        for name, count in WHOLEBODY_FIELDS:
            sl = slice(start, start + count)
            ann[name] = keypoints_to_coco(inst.keypoints[sl], inst.visibility[sl])
            start += count
            if name == "keypoints":
                ann["num_keypoints"] = int((inst.visibility[sl] > 0).sum())
                continue
            part = name.replace("_kpts", "")
            given = inst.extras.get("wholebody", {})
            ann[f"{part}_valid"] = bool(given.get(f"{part}_valid", (inst.visibility[sl] > 0).any()))
            ann[f"{part}_box"] = given.get(f"{part}_box", _keypoint_box(inst.keypoints[sl], inst.visibility[sl]))
        ann.pop("foot_box", None)  # the COCO-WholeBody format has no foot box
    else:
        ann["keypoints"] = keypoints_to_coco(inst.keypoints, inst.visibility)
        ann["num_keypoints"] = inst.num_labeled
    if "segmentation" in inst.extras:
        ann["segmentation"] = inst.extras["segmentation"]
    return ann


def _keypoint_box(kps: np.ndarray, vis: np.ndarray) -> list[float]:
    labeled = kps[vis > 0]
    if len(labeled) == 0:
        return [0.0, 0.0, 0.0, 0.0]
    lo, hi = labeled.min(0), labeled.max(0)
    return json_floats(np.array([lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]]))


def write_coco(
    path: str | os.PathLike,
    instances: Sequence[PoseInstance],
    images: Iterable[ImageInfo],
    keypoint_set: "str | KeypointSet",
    *,
    wholebody_split: bool | None = None,
    extra_image_fields: dict[int, dict[str, Any]] | None = None,
) -> None:
    """Write instances and images as a COCO keypoint file, atomically.

    ``wholebody_split`` writes the 133 keypoints into COCO-WholeBody's separate fields (the default
    for wholebody133). Extra per-image fields (e.g. ``crowdIndex``) come from ``ImageInfo.extras``.
    """
    ks = get_keypoint_set(keypoint_set)
    split = ks.num_keypoints == 133 if wholebody_split is None else wholebody_split
    image_list = []
    for info in images:
        entry = {"id": info.id, "file_name": info.file_name, "width": info.width, "height": info.height, **info.extras}
        if extra_image_fields and info.id in extra_image_fields:
            entry.update(extra_image_fields[info.id])
        image_list.append(entry)
    names = list(ks.names[:17]) if split else list(ks.names)
    skeleton = [[a + 1, b + 1] for a, b in ks.skeleton if a < len(names) and b < len(names)]
    category_ids = sorted({inst.category_id for inst in instances} or {1})
    categories = [{"id": c, "name": ks.category if len(category_ids) == 1 else f"{ks.category}_{c}",
                   "supercategory": ks.category, "keypoints": names, "skeleton": skeleton} for c in category_ids]
    doc = {
        "info": {"description": f"written by poseforge ({ks.name})"},
        "categories": categories,
        "images": image_list,
        "annotations": [_annotation_dict(inst, split) for inst in instances],
    }
    write_json_atomic(path, doc)


def write_coco_results(path: str | os.PathLike, results: Sequence[dict[str, Any]],
                       wholebody_split: bool | None = None) -> None:
    """Write COCO keypoint results (``image_id``, ``category_id``, ``keypoints``, ``score``) atomically.

    Results of the 133 COCO-WholeBody keypoints are written in that format's separate fields (``keypoints``
    for the 17 body keypoints, ``foot_kpts``, ``face_kpts``, ``lefthand_kpts``, ``righthand_kpts``), as
    mmpose's ``CocoWholeBodyMetric`` and the official evaluator read them; ``wholebody_split=False`` keeps
    one flat ``keypoints`` list.
    """
    total = sum(count for _, count in WHOLEBODY_FIELDS)
    split = wholebody_split is not False
    write_json_atomic(path, [split_wholebody_result(r) if split and len(r.get("keypoints", ())) == 3 * total else r
                             for r in results])


def split_wholebody_result(result: dict[str, Any]) -> dict[str, Any]:
    """A result with 133 x 3 flat ``keypoints`` in COCO-WholeBody's separate fields (other fields kept)."""
    out = {k: v for k, v in result.items() if k != "keypoints"}
    flat, start = list(result["keypoints"]), 0
    for name, count in WHOLEBODY_FIELDS:
        out[name] = flat[3 * start:3 * (start + count)]
        start += count
    return out

