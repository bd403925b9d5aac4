"""Adapter for an installed ultralytics YOLO detector (optional dependency, never imported otherwise).

``UltralyticsDetector("yolov8n.pt")`` runs the model on RGB frames and keeps its person class (COCO
class 0). ultralytics is not a poseforge dependency: without it the constructor raises a one-line error.
"""
from __future__ import annotations

import os
from typing import Any, Hashable, Sequence

import numpy as np
import torch

from ...errors import PoseforgeError
from .base import Detections, Detector, Frame, frame_to_numpy

__all__ = ["UltralyticsDetector", "ultralytics_available"]


def ultralytics_available() -> bool:
    try:
        import ultralytics  # noqa: F401
    except ImportError:
        return False
    return True


class UltralyticsDetector(Detector):
    """Person boxes from an ultralytics model (a weights path/name or a loaded ``YOLO`` object).

    Args:
        model: e.g. ``"yolov8n.pt"`` or an ``ultralytics.YOLO`` instance.
        device: passed to ultralytics (``"cpu"``, ``"cuda:0"``).
        score_threshold: minimum confidence.
        person_class: the class index of persons (COCO: 0).
        image_size: ultralytics' inference size.
    """

    input_kind = "numpy"

    def __init__(self, model: Any = "yolov8n.pt", device: str | torch.device = "cpu", score_threshold: float = 0.3,
                 person_class: int = 0, image_size: int = 640) -> None:
        try:
            from ultralytics import YOLO
        except ImportError:
            raise PoseforgeError("the ultralytics detector needs the ultralytics package: pip install ultralytics") from None
        self.name = str(model) if isinstance(model, (str, os.PathLike)) else type(model).__name__
        self.model = YOLO(str(model)) if isinstance(model, (str, os.PathLike)) else model
        self._device = str(device)
        self.score_threshold = float(score_threshold)
        self.person_class = int(person_class)
        self.image_size = int(image_size)

    def detect_batch(self, frames: Sequence[Frame], keys: Sequence[Hashable] | None = None) -> list[Detections]:
        if not frames:
            return []
        # ultralytics takes numpy images as BGR (OpenCV order)
        bgr = [np.ascontiguousarray(frame_to_numpy(f)[..., ::-1]) for f in frames]
        results = self.model.predict(bgr, conf=self.score_threshold, classes=[self.person_class], device=self._device,
                                     imgsz=self.image_size, verbose=False)
        out = []
        for r in results:
            boxes = r.boxes
            out.append(Detections(boxes.xyxy.float().cpu(), boxes.conf.float().cpu(),
                                  torch.zeros(len(boxes), dtype=torch.int64)).filter(self.score_threshold))
        return out
