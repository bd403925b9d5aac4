"""Readers for the datasets ViTPose++ trains on, all giving :class:`~poseforge.data.coco.CocoKeypoints`.

=============  ===============  ==============  ===========================================================
format         file             keypoint set    notes
=============  ===============  ==============  ===========================================================
``coco``       COCO JSON        ``coco17``
``aic``        COCO JSON        ``aic14``       AI Challenger: no ``area`` / ``iscrowd`` (the box area is used)
``crowdpose``  COCO JSON        ``crowdpose14`` per-image ``crowdIndex`` kept in the image extras
``wholebody``  COCO JSON        ``wholebody133`` body / foot / face / hand fields merged in that order
``ap10k``      COCO JSON        ``ap10k17``     animals, 54 species categories
``apt36k``     COCO JSON        ``ap10k17``     AP-10K's keypoints and layout (video frames)
``mpii``       MPII list JSON   ``mpii16``      ``center``, ``scale`` (x 200 px), ``joints``, ``joints_vis``
=============  ===============  ==============  ===========================================================

The MPII list format stores MATLAB (1-based) pixel coordinates and a person scale instead of a box:
joints and center move by -1 into 0-based pixels, the center moves down by ``15 x scale`` px (mmpose's
adjustment, to keep the feet in the crop) and the box is the ``200 x scale`` square around it, so the
usual 1.25 box padding of the top-down transform gives mmpose's crop. Image sizes come from the image
headers (JPEG / PNG; other formats are decoded), or, for a missing image, from the extent of the
annotation.
"""
from __future__ import annotations

import logging
import math
import os
import struct
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PoseforgeError, data_error
from ..keypoints import get_keypoint_set
from .coco import (
    CocoKeypoints,
    _exists,
    _image_path,
    _number,
    _read_json,
    _show,
    read_coco,
)
from .records import ImageInfo, PoseInstance

__all__ = ["DATASET_FORMATS", "read_dataset", "read_mpii", "image_size"]

log = logging.getLogger("poseforge")

# format -> (file layout, keypoint set)
DATASET_FORMATS: dict[str, tuple[str, str]] = {
    "coco": ("coco", "coco17"), "aic": ("coco", "aic14"), "crowdpose": ("coco", "crowdpose14"),
    "wholebody": ("coco", "wholebody133"), "ap10k": ("coco", "ap10k17"), "apt36k": ("coco", "ap10k17"),
    "mpii": ("mpii", "mpii16"),
}
MPII_PIXEL_STD = 200.0  # MPII scales are person heights / 200 px
MPII_CENTER_SHIFT = 15.0  # px per unit of scale that the box center moves down (mmpose)


def read_dataset(path: str | os.PathLike, format: str = "auto", image_root: str | os.PathLike | None = None, *,
                 keypoint_set: str | None = None, dataset_index: int = 0, skip_crowd: bool = False,
                 min_labeled: int = 0, check_images: bool = False, allow_absolute_paths: bool = False) -> CocoKeypoints:
    """Read an annotation file of any :data:`DATASET_FORMATS` format.

    ``format="auto"`` reads a JSON list as MPII and a JSON object as COCO (keypoint set ``keypoint_set``,
    or from the categories and data). Every record carries ``dataset_index`` (its task in a
    multi-dataset mix). Image file names must stay inside the image root; ``allow_absolute_paths``
    accepts absolute ones (see :func:`~poseforge.data.coco.read_coco`).
    """
    if format == "auto":
        doc = _read_json(path)
        if isinstance(doc, list):
            return _mpii(doc, path, image_root, dataset_index, min_labeled, check_images, allow_absolute_paths)
        return read_coco(path, image_root, keypoint_set, skip_crowd=skip_crowd, min_labeled=min_labeled,
                         check_images=check_images, dataset_index=dataset_index, allow_absolute_paths=allow_absolute_paths)
    if format not in DATASET_FORMATS:
        raise data_error(path, None, None, f"unknown dataset format '{format}'; known: auto, {', '.join(DATASET_FORMATS)}")
    layout, keypoint_set = DATASET_FORMATS[format]
    if layout == "mpii":
        return read_mpii(path, image_root, dataset_index=dataset_index, min_labeled=min_labeled,
                         check_images=check_images, allow_absolute_paths=allow_absolute_paths)
    return read_coco(path, image_root, keypoint_set, skip_crowd=skip_crowd, min_labeled=min_labeled,
                     check_images=check_images, dataset_index=dataset_index, allow_absolute_paths=allow_absolute_paths)


def read_mpii(path: str | os.PathLike, image_root: str | os.PathLike | None = None, *, dataset_index: int = 0,
              min_labeled: int = 0, check_images: bool = False, allow_absolute_paths: bool = False) -> CocoKeypoints:
    """Read an MPII list-format annotation file (mmpose's ``mpii_train.json`` / ``mpii_val.json``).

    Args:
        path: the JSON list of ``{"image", "center", "scale", "joints", "joints_vis"}`` entries.
        image_root: image folder (default: beside the JSON, or its ``images/`` folder).
        dataset_index: stored in every record.
        min_labeled: drop people with fewer labeled joints (counted in ``skipped``).
        check_images: fail on a missing image file.
        allow_absolute_paths: accept absolute ``image`` names (inside ``image_root`` when one is given);
            relative names must stay inside the image root.

    Raises:
        DataError / PoseforgeError: one line naming the file, the entry (its index) and the field.
    """
    doc = _read_json(path)
    if not isinstance(doc, list):
        raise data_error(path, None, None, f"expected the MPII list format (a JSON list), got {type(doc).__name__}")
    return _mpii(doc, path, image_root, dataset_index, min_labeled, check_images, allow_absolute_paths)


def _number_list(value: Any, shape: tuple[int, ...], file: str, rec: str, name: str) -> np.ndarray:
    try:
        arr = np.asarray(value)  # no dtype: strings, bools and huge ints must not be coerced to floats
    except (TypeError, ValueError):  # ragged nesting
        raise data_error(file, rec, name, f"expected numbers of shape {list(shape)}, got {_show(value, 60)}") from None
    if arr.dtype.kind not in "iuf":
        raise data_error(file, rec, name, f"expected numbers of shape {list(shape)}, got {_show(value, 60)}")
    if arr.shape != shape:
        raise data_error(file, rec, name, f"expected shape {list(shape)}, got {list(arr.shape)}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise data_error(file, rec, name, "non-finite value")
    return arr


def _mpii(doc: list, path: str | os.PathLike, image_root: str | os.PathLike | None, dataset_index: int,
          min_labeled: int, check_images: bool, allow_absolute_paths: bool = False) -> CocoKeypoints:
    file = str(path)
    ks = get_keypoint_set("mpii16")
    k = ks.num_keypoints
    root = Path(image_root) if image_root is not None else _default_root(Path(path), doc)
    images: dict[int, ImageInfo] = {}
    names: dict[str, int] = {}
    instances: list[PoseInstance] = []
    skipped: Counter = Counter()
    for n, ann in enumerate(doc):
        rec = f"entry {n}"
        if not isinstance(ann, dict):
            raise data_error(file, rec, None, f"expected an object, got {type(ann).__name__}")
        for key in ("image", "center", "scale", "joints", "joints_vis"):
            if key not in ann:
                raise data_error(file, rec, key, "missing")
        name = ann["image"]
        image_path = _image_path(root, name, file, rec, image_root is not None, allow_absolute_paths, field="image")
        center = _number_list(ann["center"], (2,), file, rec, "center")
        scale = _number(ann["scale"], file, rec, "scale")
        if scale <= 0:
            raise data_error(file, rec, "scale", f"expected a positive number, got {scale:g}")
        joints = _number_list(ann["joints"], (k, 2), file, rec, "joints") - 1.0  # MATLAB 1-based -> 0-based
        vis = _number_list(ann["joints_vis"], (k,), file, rec, "joints_vis")
        if ((vis < 0) | (vis > 2)).any():
            raise data_error(file, rec, "joints_vis", f"expected values in [0, 2], got {vis.min():g}..{vis.max():g}")
        side = float(scale) * MPII_PIXEL_STD
        if center[0] == -1:  # no person center in the file: a box around the labeled joints
            labeled = joints[vis > 0]
            if len(labeled) == 0:
                skipped["without a center or labeled joints"] += 1
                continue
            lo, hi = labeled.min(0), labeled.max(0)
            box = np.array([lo[0], lo[1], max(hi[0] - lo[0], 1.0), max(hi[1] - lo[1], 1.0)])
        else:
            cx, cy = center[0] - 1.0, center[1] - 1.0 + MPII_CENTER_SHIFT * float(scale)
            box = np.array([cx - side / 2, cy - side / 2, side, side])
        if not np.isfinite(box).all():  # e.g. scale 1e308: the 200 px box overflows
            raise data_error(file, rec, "scale", f"box out of range for center {center.tolist()} and scale {scale:g}")
        if name not in names:
            image_id = _image_id(name, len(names), set(images))
            names[name] = image_id
            width, height = _image_extent(Path(image_path), box, joints, check_images, file, rec)
            images[image_id] = ImageInfo(image_id, name, width, height, image_path)
        image_id = names[name]
        info = images[image_id]
        inst = PoseInstance(image_id=image_id, image_path=info.path, image_size=(info.width, info.height), bbox=box,
                            keypoints=joints, visibility=vis, keypoint_set=ks.name, area=float(box[2] * box[3]),
                            iscrowd=False, instance_id=n + 1, category_id=1, dataset_index=dataset_index)
        if inst.num_labeled < min_labeled:
            skipped[f"with fewer than {min_labeled} labeled keypoints"] += 1
            continue
        instances.append(inst)
    categories = [{"id": 1, "name": "person", "keypoints": list(ks.names), "skeleton": [list(s) for s in ks.skeleton]}]
    data = CocoKeypoints(file, ks, images, instances, categories, skipped)
    if skipped:
        log.info(data.summary())
    return data


def _default_root(path: Path, doc: list) -> Path:
    folder = path.parent
    first = next((a.get("image") for a in doc if isinstance(a, dict) and isinstance(a.get("image"), str)), None)
    if first and _exists(folder / "images" / first) and not _exists(folder / first):
        return folder / "images"
    return folder


def _image_id(name: str, ordinal: int, used: set[int]) -> int:
    """MPII image ids are the numeric file stems (``005808361.jpg`` -> 5808361), as in mmpose."""
    stem = Path(name).stem
    # ASCII digits only (isdigit also accepts superscripts int() refuses); 18 digits fit an int64 id.
    if stem.isascii() and stem.isdigit() and len(stem) <= 18 and int(stem) not in used:
        return int(stem)
    candidate = ordinal + 1
    while candidate in used:
        candidate += 1
    return candidate


def _image_extent(path: Path, box: np.ndarray, joints: np.ndarray, check: bool, file: str, rec: str) -> tuple[int, int]:
    try:
        present = path.is_file()
    except OSError:  # a name the OS cannot look up (too long): treated as missing
        present = False
    if present:
        try:
            return image_size(path)
        except (PoseforgeError, OSError, struct.error) as e:  # a corrupt or non-image file, named in the message
            raise data_error(file, rec, "image", f"cannot read the image size of {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if check:
        raise data_error(file, rec, "image", f"image file not found: {path}")
    right = max(float(box[0] + box[2]), float(joints[:, 0].max()) + 1.0, 1.0)
    bottom = max(float(box[1] + box[3]), float(joints[:, 1].max()) + 1.0, 1.0)
    return int(math.ceil(right)), int(math.ceil(bottom))


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(width, height)`` of an image file from its header (JPEG, PNG), else by decoding it."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(26)
        if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
            w, h = struct.unpack(">II", head[16:24])
            return int(w), int(h)
        if head[:2] == b"\xff\xd8":
            f.seek(2)
            while True:
                marker = f.read(2)
                if len(marker) < 2 or marker[0] != 0xFF:
                    break
                while marker[1] == 0xFF:  # fill bytes
                    marker = marker[1:] + f.read(1)
                code = marker[1]
                if code in (0xD8, 0x01) or 0xD0 <= code <= 0xD7:
                    continue
                length_bytes = f.read(2)
                if len(length_bytes) < 2:
                    break
                length = struct.unpack(">H", length_bytes)[0]
                if code in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
                    data = f.read(5)
                    h, w = struct.unpack(">HH", data[1:5])
                    return int(w), int(h)
                f.seek(length - 2, os.SEEK_CUR)
    from .images import load_image

    image = load_image(path)
    return int(image.shape[1]), int(image.shape[0])
