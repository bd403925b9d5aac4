"""Person detector interface, detections, box helpers and the detection-file "detector".

A detector turns frames into person boxes. Every adapter (the built-in CNN, ONNX exports, ultralytics)
implements :meth:`Detector.detect_batch` and returns one :class:`Detections` per frame: ``xyxy``
boxes in the frame's pixels (pixel centres at integers, as everywhere in poseforge) and scores, as
tensors. Frames are given as ``H x W x 3`` uint8 RGB numpy arrays or ``[3, H, W]`` uint8 tensors
(the predictor passes the kind named by :attr:`Detector.input_kind`, already on the right device).
"""
from __future__ import annotations

import logging
import math
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Hashable, Mapping, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from ...errors import PoseforgeError, data_error
from ...io import read_json

__all__ = ["Detections", "Detector", "Frame", "DetectionFile", "box_iou", "nms", "xyxy_to_xywh", "xywh_to_xyxy",
           "frame_to_numpy", "frame_to_tensor"]

log = logging.getLogger("poseforge")

Frame = Union[np.ndarray, Tensor]


@dataclass
class Detections:
    """Boxes found in one frame.

    Attributes:
        boxes: ``[N, 4]`` float32 ``(x1, y1, x2, y2)`` in frame pixels.
        scores: ``[N]`` float32 confidence.
        labels: ``[N]`` int64 class index of the detector (0 = person for the adapters here).
    """

    boxes: Tensor
    scores: Tensor
    labels: Tensor | None = None

    def __post_init__(self) -> None:
        self.boxes = torch.as_tensor(self.boxes, dtype=torch.float32).reshape(-1, 4)
        self.scores = torch.as_tensor(self.scores, dtype=torch.float32, device=self.boxes.device).reshape(-1)
        if self.labels is None:
            self.labels = torch.zeros(self.boxes.shape[0], dtype=torch.int64, device=self.boxes.device)
        self.labels = torch.as_tensor(self.labels, dtype=torch.int64, device=self.boxes.device).reshape(-1)
        if not (self.scores.shape[0] == self.labels.shape[0] == self.boxes.shape[0]):
            raise PoseforgeError(f"Detections: {self.boxes.shape[0]} boxes, {self.scores.shape[0]} scores and "
                                 f"{self.labels.shape[0]} labels")

    @classmethod
    def empty(cls, device: torch.device | str = "cpu") -> "Detections":
        return cls(torch.zeros(0, 4, device=device), torch.zeros(0, device=device))

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @property
    def boxes_xywh(self) -> Tensor:
        """``[N, 4]`` ``(x, y, w, h)`` (the COCO layout)."""
        return xyxy_to_xywh(self.boxes)

    def to(self, device: torch.device | str) -> "Detections":
        return Detections(self.boxes.to(device), self.scores.to(device), self.labels.to(device))

    def select(self, index: Tensor) -> "Detections":
        """The detections at ``index`` (a bool mask or indices)."""
        return Detections(self.boxes[index], self.scores[index], self.labels[index])

    def filter(self, score_threshold: float = 0.0, min_size: float = 0.0, max_detections: int | None = None) -> "Detections":
        """Keep boxes scoring above ``score_threshold`` with both sides >= ``min_size``, best first."""
        wh = self.boxes[:, 2:] - self.boxes[:, :2]
        keep = (self.scores > score_threshold) & (wh.min(1).values >= min_size)
        kept = self.select(keep)
        order = torch.argsort(kept.scores, descending=True)
        if max_detections is not None:
            order = order[:max_detections]
        return kept.select(order)


class Detector(ABC):
    """Base class of person detectors.

    Subclasses implement :meth:`detect_batch`; ``detector(frame)`` detects in one frame. ``input_kind``
    tells the predictor which frame form to pass (``"numpy"``: ``H x W x 3`` uint8 RGB on the host,
    ``"tensor"``: ``[3, H, W]`` uint8 on :attr:`device`), so no frame crosses devices needlessly.
    """

    input_kind: ClassVar[str] = "numpy"
    name: str = "detector"

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @abstractmethod
    def detect_batch(self, frames: Sequence[Frame], keys: Sequence[Hashable] | None = None) -> list[Detections]:
        """Detections for each frame. ``keys`` identify the frames (file names, image ids) for
        detectors that look boxes up rather than compute them (:class:`DetectionFile`)."""

    def __call__(self, frame: Frame, key: Hashable | None = None) -> Detections:
        return self.detect_batch([frame], None if key is None else [key])[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"


# ---------------------------------------------------------------------------------------------- frames
def frame_to_numpy(frame: Frame, what: str = "frame") -> np.ndarray:
    """``H x W x 3`` uint8 RGB numpy array (contiguous) from a numpy frame or a ``[3, H, W]`` tensor."""
    if isinstance(frame, Tensor):
        if frame.ndim != 3 or frame.shape[0] != 3:
            raise PoseforgeError(f"{what}: expected a [3, H, W] tensor, got shape {tuple(frame.shape)}")
        frame = frame.detach().to("cpu", torch.uint8).permute(1, 2, 0).numpy()
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise PoseforgeError(f"{what}: expected an H x W x 3 uint8 RGB array, got {frame.dtype} {tuple(frame.shape)}")
    return np.ascontiguousarray(frame)


def frame_to_tensor(frame: Frame, device: torch.device | str, what: str = "frame") -> Tensor:
    """``[3, H, W]`` uint8 tensor on ``device`` from a numpy ``H x W x 3`` frame or a tensor."""
    if isinstance(frame, Tensor):
        if frame.ndim != 3 or frame.shape[0] != 3:
            raise PoseforgeError(f"{what}: expected a [3, H, W] tensor, got shape {tuple(frame.shape)}")
        return frame.to(device)
    array = frame_to_numpy(frame, what)
    if not array.flags.writeable:  # torch.from_numpy needs a writable buffer (PIL arrays are read-only)
        array = array.copy()
    return torch.from_numpy(array).to(device, non_blocking=True).permute(2, 0, 1)


# ---------------------------------------------------------------------------------------------- boxes
def xyxy_to_xywh(boxes: Tensor) -> Tensor:
    return torch.cat([boxes[..., :2], boxes[..., 2:] - boxes[..., :2]], -1)


def xywh_to_xyxy(boxes: Tensor) -> Tensor:
    return torch.cat([boxes[..., :2], boxes[..., :2] + boxes[..., 2:]], -1)


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU matrix ``[N, M]`` of ``xyxy`` boxes ``a [N, 4]`` and ``b [M, 4]``."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return inter / union.clamp(min=1e-9)


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression; indices of the kept boxes, best first.

    Vectorized: ``keep[j] = no kept box ranked before j overlaps it by more than the threshold`` is
    iterated on the whole vector from "all kept" until it stops changing. After pass ``t`` the first
    ``t`` ranks are final, and the only fixed point is the greedy answer, so the result equals the
    sequential algorithm; in practice it converges in a few passes.
    """
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    order = torch.argsort(scores, descending=True)
    overlap = box_iou(boxes[order], boxes[order]) > iou_threshold
    overlap = torch.triu(overlap, diagonal=1)  # [i, j]: i ranked before j and overlapping
    keep = torch.ones(order.shape[0], dtype=torch.bool, device=boxes.device)
    for _ in range(order.shape[0]):
        new = ~(overlap & keep[:, None]).any(0)
        if torch.equal(new, keep):
            break
        keep = new
    return order[keep]


# ---------------------------------------------------------------------------------------------- detection files
class DetectionFile(Detector):
    """Boxes read from a COCO detection results file (``image_id``, ``bbox`` xywh, ``score``,
    ``category_id``), looked up by frame key.

    Keys are image ids, or file names / paths: a file name is turned into an id through a COCO
    ``images`` list (``images=`` a COCO JSON file or its parsed dict), else by reading its stem as an
    integer (COCO's ``000000000785.jpg`` is image 785).

    Args:
        path: the results file.
        images: optional COCO JSON whose ``images`` entries map ``file_name`` to ``id``.
        category_id: the person category to keep (None keeps all).
        score_threshold: drop boxes scoring at or below it.
    """

    def __init__(self, path: str | os.PathLike, images: str | os.PathLike | Mapping[str, Any] | None = None,
                 category_id: int | None = 1, score_threshold: float = 0.0) -> None:
        self.path = Path(path)
        self.name = self.path.name
        records = read_json(self.path)
        if not isinstance(records, list):
            raise data_error(self.path, None, None, f"expected a list of COCO detection results, got {type(records).__name__}")
        by_image: dict[Any, list[tuple[list[float], float]]] = {}
        for n, r in enumerate(records):
            label = f"detection {n}"
            if not isinstance(r, dict):
                raise data_error(self.path, label, None, f"expected an object, got {type(r).__name__}")
            for key in ("image_id", "bbox", "score"):
                if key not in r:
                    raise data_error(self.path, label, key, "missing")
            if category_id is not None and r.get("category_id", category_id) != category_id:
                continue
            box, score = r["bbox"], r["score"]
            if (not isinstance(box, (list, tuple)) or len(box) != 4
                    or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in box)):
                raise data_error(self.path, label, "bbox", f"expected 4 finite numbers (x, y, width, height), got {box!r:.60}")
            if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
                raise data_error(self.path, label, "score", f"expected a number, got {score!r:.40}")
            if score > score_threshold and box[2] > 0 and box[3] > 0:
                by_image.setdefault(r["image_id"], []).append((list(box), float(score)))
        self._boxes = by_image
        self._names: dict[str, Any] = {}
        self._unmatched: set[str] = set()  # file names whose digits named an id absent from the file (warned)
        if images is not None:
            doc = images if isinstance(images, Mapping) else read_json(images)
            for entry in doc.get("images", []) if isinstance(doc, Mapping) else []:
                if isinstance(entry, Mapping) and "file_name" in entry and "id" in entry:
                    self._names[Path(str(entry["file_name"])).name] = entry["id"]

    def image_id(self, key: Hashable) -> Any:
        """The image id a frame key refers to (see the class doc)."""
        if isinstance(key, (int, np.integer)):
            return int(key)
        name = Path(str(key)).name
        if name in self._names:
            return self._names[name]
        stem = Path(name).stem
        if stem.isdigit():
            image_id = int(stem)
            if image_id not in self._boxes and self._boxes and len(self._unmatched) < 3:
                # A guess that found nothing: say so rather than silently predicting nobody
                self._unmatched.add(name)
                shown = ", ".join(str(i) for i in list(self._boxes)[:5]) + (", ..." if len(self._boxes) > 5 else "")
                log.warning(f"{self.path}: no boxes for image id {image_id}, read from the file name '{name}' (ids in "
                            f"the file: {shown}); give the COCO file the ids come from (predict --gt GT.json) to match "
                            "images by file name" + ("; further such images are not reported" if len(self._unmatched) == 3 else ""))
            return image_id
        raise PoseforgeError(f"{self.path}: cannot tell the image id of '{key}' (give images=COCO JSON with file names)")

    def detect_batch(self, frames: Sequence[Frame], keys: Sequence[Hashable] | None = None) -> list[Detections]:
        if keys is None or len(keys) != len(frames):
            raise PoseforgeError(f"{self.path}: boxes from a detection file need each frame's file name or image id")
        out = []
        for key in keys:
            rows = self._boxes.get(self.image_id(key), [])
            xywh = torch.tensor([b for b, _ in rows], dtype=torch.float32).reshape(-1, 4)
            out.append(Detections(xywh_to_xyxy(xywh), torch.tensor([s for _, s in rows], dtype=torch.float32)))
        return out
