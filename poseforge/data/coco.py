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


def _number(value: Any, file: str, record: str | None, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise data_error(file, record, name, f"expected a number, got {type(value).__name__} {_show(value)}")
    try:
        number = float(value)
    except OverflowError:  # a JSON integer too large for a float
        raise data_error(file, record, name, f"number out of range: {_show(value)}") from None
    if not math.isfinite(number):
        raise data_error(file, record, name, f"non-finite value {number}")
    return number


def _numbers(value: Any, count: int, file: str, record: str, name: str, what: str) -> np.ndarray:
    if not isinstance(value, (list, tuple)):
        raise data_error(file, record, name, f"expected a list of {count} numbers, got {type(value).__name__}")
    if len(value) != count:
        raise data_error(file, record, name, f"expected {count} numbers ({what}), got {len(value)}")
    # Check the elements before numpy sees them: nested, ragged, bool and huge values would otherwise raise or coerce.
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise data_error(file, record, name, f"expected numbers, found {_show(v)} at position {i}")
        try:
            if not math.isfinite(v):
                raise data_error(file, record, name, f"non-finite value {v} at position {i}")
        except OverflowError:
            raise data_error(file, record, name, f"number out of range at position {i}") from None
    return np.asarray(value, dtype=np.float64)


def _show(value: Any, limit: int = 40) -> str:
    """A short one-line repr of a value from the file, for messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _record(kind: str, value: Any) -> str:
    """``"annotation 42"``; other id types are shown as their short repr so the message stays one line."""
    return f"{kind} {value}" if isinstance(value, int) and not isinstance(value, bool) else f"{kind} {_show(value, 30)}"


def _identifier(obj: dict, key: str, file: str, record: str, *, default: Any = None) -> int | str:
    """An id field: an integer or a string (hashable, comparable), never a float, list or bool."""
    if key not in obj and default is not None:
        return default
    value = _require(obj, key, file, record)
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise data_error(file, record, key, f"expected an integer id, got {type(value).__name__} {_show(value)}")
    return value


def _require(obj: dict, key: str, file: str, record: str) -> Any:
    if key not in obj:
        raise data_error(file, record, key, "missing")
    return obj[key]


def _category_names(doc: dict, file: str) -> list[str] | None:
    """The first category's ``keypoints`` names (checked to be a list of strings), or None."""
    cats = doc.get("categories")
    if cats is None:
        return None
    if not isinstance(cats, list):
        raise data_error(file, None, "categories", f"expected a list, got {type(cats).__name__}")
    for n, cat in enumerate(cats):
        if not isinstance(cat, dict):
            raise data_error(file, f"category {n}", None, f"expected an object, got {type(cat).__name__}")
        names = cat.get("keypoints")
        if names is None or names == []:
            continue
        rec = _record("category", cat.get("id", n))
        if not isinstance(names, list) or not all(isinstance(x, str) for x in names):
            raise data_error(file, rec, "keypoints", f"expected a list of keypoint names, got {_show(names)}")
        return names
    return None


def _resolve_keypoint_set(doc: dict, file: str, requested: "str | KeypointSet | None") -> tuple[KeypointSet, bool]:
    """Pick the keypoint set: the requested one, else the category's keypoint names, else the data.

    The category's keypoint count is authoritative: annotations of another length are reported by the
    reader (record and field), never read as some other set that happens to have that count.
    """
    anns = doc["annotations"]
    split = any(isinstance(a, dict) and ("foot_kpts" in a or "face_kpts" in a) for a in anns[:50])
    if requested is not None:
        ks = get_keypoint_set(requested)
        return ks, split and ks.num_keypoints == 133
    if split:
        return get_keypoint_set("wholebody133"), True
    names = _category_names(doc, file)
    lengths = Counter(len(a["keypoints"]) for a in anns[:1000] if isinstance(a, dict) and isinstance(a.get("keypoints"), list))
    data_count = lengths.most_common(1)[0][0] // 3 if lengths else 0
    if names:
        ks = match_keypoint_set(names, len(names))
        # COCO-WholeBody files merged into one flat list keep the 17 body names in the category.
        if ks is not None and ks.name == "coco17" and data_count == 133:
            return get_keypoint_set("wholebody133"), False
        count = len(names)
    else:
        ks, count = match_keypoint_set(None, data_count), data_count
    if ks is None:
        raise data_error(file, None, "categories", f"cannot tell which {count}-keypoint set this is; pass keypoint_set=")
    return ks, False


def _image_path(root: Path, name: Any, file: str, rec: str, explicit_root: bool, allow_absolute: bool,
                field: str = "file_name") -> str:
    """The image's path under ``root``; refuses file names that escape it (``..``, absolute paths).

    The check is lexical (normalized paths, symlinks not followed) so an image folder that is itself a
    symlink to another disk still works, while a file name can never reach outside the data folder.
    """
    if not isinstance(name, str) or not name:
        raise data_error(file, rec, field, f"expected a file name, got {type(name).__name__} {_show(name)}")
    if "\x00" in name:
        raise data_error(file, rec, field, "contains a NUL character")
    base = os.path.normpath(os.path.abspath(root))
    if os.path.isabs(name):
        if not allow_absolute:
            raise data_error(file, rec, field, f"absolute path {_show(name)} refused (allow_absolute_paths=True reads it)")
        full = os.path.normpath(name)
        if not explicit_root:
            return name
    else:
        full = os.path.normpath(os.path.join(base, name))
    if full == base or os.path.commonpath([base, full]) != base:
        raise data_error(file, rec, field, f"{_show(name)} is outside the image root {base}")
    return name if os.path.isabs(name) else str(root / name)


def read_coco(
    path: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    keypoint_set: "str | KeypointSet | None" = None,
    *,
    skip_crowd: bool = False,
    min_labeled: int = 0,
    check_images: bool = False,
    dataset_index: int = 0,
    allow_absolute_paths: bool = False,
) -> CocoKeypoints:
    """Read and validate a COCO-format keypoint file.

    Args:
        path: the annotation JSON.
        image_root: folder of the images (default: the JSON's folder, or ``images/`` beside it).
        keypoint_set: the set's name; inferred from the category's keypoint names (else the data) when
            omitted. Annotations whose ``keypoints`` length is not 3 x the set's count are errors.
        skip_crowd: drop ``iscrowd`` annotations (for training); counted in ``skipped``.
        min_labeled: drop annotations with fewer labeled keypoints (training uses 1); counted.
        check_images: fail on a referenced image file that does not exist.
        dataset_index: stored in every record (multi-dataset training).
        allow_absolute_paths: accept absolute ``file_name`` values (inside ``image_root`` when one is
            given). Relative names must always stay inside the image root: ``../x.jpg`` is refused.

    Raises:
        DataError / PoseforgeError: one line naming the file, the record (image or annotation id) and the field.
    """
    file = str(path)
    doc = _read_json(path)
    if not isinstance(doc, dict):
        raise data_error(file, None, None, f"expected a COCO object with 'images' and 'annotations', got {type(doc).__name__}")
    for key in ("images", "annotations"):
        if not isinstance(doc.get(key), list):
            raise data_error(file, None, key, "missing" if key not in doc else "expected a list")
    categories = doc.get("categories")
    if categories is not None and not isinstance(categories, list):
        raise data_error(file, None, "categories", f"expected a list, got {type(categories).__name__}")
    root = Path(image_root) if image_root is not None else _default_image_root(Path(path), doc)
    ks, split = _resolve_keypoint_set(doc, file, keypoint_set)

    images: dict[int | str, ImageInfo] = {}
    for n, img in enumerate(doc["images"]):
        if not isinstance(img, dict):
            raise data_error(file, f"image entry {n}", None, f"expected an object, got {type(img).__name__}")
        rec = _record("image", img.get("id", "?"))
        image_id = _identifier(img, "id", file, rec)
        name = _require(img, "file_name", file, rec)
        image_path = _image_path(root, name, file, rec, image_root is not None, allow_absolute_paths)
        width = _number(_require(img, "width", file, rec), file, rec, "width")
        height = _number(_require(img, "height", file, rec), file, rec, "height")
        if width < 1 or height < 1:
            raise data_error(file, rec, "width" if width < 1 else "height", f"size must be positive (at least 1 px), got {width:g}x{height:g}")
        if image_id in images:
            raise data_error(file, rec, "id", "duplicate image id")
        extras = {k: img[k] for k in ("crowdIndex",) if k in img}
        images[image_id] = ImageInfo(image_id, name, int(width), int(height), image_path, extras)

    instances: list[PoseInstance] = []
    skipped: Counter = Counter()
    seen_ids: set = set()
    for n, ann in enumerate(doc["annotations"]):
        if not isinstance(ann, dict):
            raise data_error(file, f"annotation entry {n}", None, f"expected an object, got {type(ann).__name__}")
        rec = _record("annotation", ann.get("id", "?"))
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
        for image_id in sorted(used, key=str):
            info = images[image_id]
            if not os.path.isfile(info.path):
                raise data_error(file, _record("image", image_id), "file_name", f"image file not found: {info.path}")

    data = CocoKeypoints(file, ks, images, instances, list(categories or []), skipped, split)
    if skipped:
        log.info(data.summary())
    return data


def _read_json(path: str | os.PathLike) -> Any:
    """:func:`read_json`, with absurdly deep nesting (RecursionError in the decoder) as a one-line error too."""
    try:
        return read_json(path)
    except RecursionError:
        raise data_error(path, None, None, "not valid JSON (nested too deeply)") from None


def _default_image_root(path: Path, doc: dict) -> Path:
    """Images beside the JSON, or in an ``images/`` folder beside it (the layout ``poseforge synth`` writes)."""
    folder = path.parent
    first = next((i.get("file_name") for i in doc["images"] if isinstance(i, dict) and i.get("file_name")), None)
    if isinstance(first, str) and _exists(folder / "images" / first) and not _exists(folder / first):
        return folder / "images"
    return folder


def _exists(path: Path) -> bool:
    """``path.exists()`` that is False for names the OS cannot even look up (NUL byte, too long)."""
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def _parse_annotation(ann: dict, file: str, rec: str, images: dict[int | str, ImageInfo], ks: KeypointSet,
                      split: bool) -> PoseInstance:
    ann_id = _identifier(ann, "id", file, rec)
    image_id = _identifier(ann, "image_id", file, rec)
    if image_id not in images:
        raise data_error(file, rec, "image_id", f"unknown image id {_show(image_id)}")
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
    given_area = ann.get("area")
    area = float(bbox[2] * bbox[3]) if given_area is None else _number(given_area, file, rec, "area")
    if not math.isfinite(area) or area < 0:
        raise data_error(file, rec, "area", f"expected a finite area >= 0, got {area:g}")
    iscrowd = ann.get("iscrowd", 0)
    if iscrowd not in (0, 1, True, False):
        raise data_error(file, rec, "iscrowd", f"expected 0 or 1, got {_show(iscrowd)}")
    category_id = _identifier(ann, "category_id", file, rec, default=1)
    if not isinstance(category_id, int):
        raise data_error(file, rec, "category_id", f"expected an integer id, got {_show(category_id)}")
    score = _number(ann.get("score", 1.0), file, rec, "score")
    extras = {}
    if split:
        extras["wholebody"] = {k: ann[k] for k in ann if k.endswith(("_box", "_valid"))}
    if "segmentation" in ann:
        extras["segmentation"] = ann["segmentation"]
    # what evaluation needs of the file as it was (CrowdPose ignores people by the file's num_keypoints,
    # which counts visible keypoints only; without an area OKS scales by 0.53 x box area, as xtcocotools)
    count = ann.get("num_keypoints")
    if isinstance(count, int) and not isinstance(count, bool) and count >= 0:
        extras["num_keypoints"] = count
    if given_area is None:
        extras["no_area"] = True
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
        category_id=category_id,
        score=score,
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
    info: dict[str, Any] | None = None,
) -> None:
    """Write instances and images as a COCO keypoint file, atomically.

    ``wholebody_split`` writes the 133 keypoints into COCO-WholeBody's separate fields (the default
    for wholebody133). Extra per-image fields (e.g. ``crowdIndex``) come from ``ImageInfo.extras``.
    ``info``: more fields of the file's ``info`` record (e.g. how pseudo-labels were made).
    """
    ks = get_keypoint_set(keypoint_set)
    split = ks.num_keypoints == 133 if wholebody_split is None else wholebody_split
    image_list = []
    for image in images:
        entry = {"id": image.id, "file_name": image.file_name, "width": image.width, "height": image.height, **image.extras}
        if extra_image_fields and image.id in extra_image_fields:
            entry.update(extra_image_fields[image.id])
        image_list.append(entry)
    names = list(ks.names[:17]) if split else list(ks.names)
    skeleton = [[a + 1, b + 1] for a, b in ks.skeleton if a < len(names) and b < len(names)]
    category_ids = sorted({inst.category_id for inst in instances} or {1})
    categories = [{"id": c, "name": ks.category if len(category_ids) == 1 else f"{ks.category}_{c}",
                   "supercategory": ks.category, "keypoints": names, "skeleton": skeleton} for c in category_ids]
    doc = {
        "info": {"description": f"written by poseforge ({ks.name})", **(info or {})},
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

