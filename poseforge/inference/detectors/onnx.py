"""Run RTMDet / YOLOX "end2end" ONNX exports (mmdeploy, rtmlib) as person detectors of the torch predictor.

A thin adapter: the letterbox, normalization, onnxruntime session and box post-processing live in
:mod:`poseforge.runtime.detector` (numpy, no torch); this class feeds it the predictor's RGB frames and turns
its boxes into :class:`~.base.Detections`. onnxruntime is an optional extra (``pip install poseforge[onnx]``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Hashable, Sequence

import numpy as np
import torch

from ...runtime.detector import PRESETS, Boxes, PersonDetector, letterbox
from .base import Detections, Detector, Frame, frame_to_numpy

__all__ = ["OnnxDetector", "letterbox", "PRESETS"]


class OnnxDetector(Detector):
    """The torch-free :class:`poseforge.runtime.PersonDetector` (end2end RTMDet / YOLOX ONNX exports) as a
    :class:`Detector` of the predictor: same arguments (``path``, ``preset``, ``input_size``, ``mean``, ``std``,
    ``bgr``, ``pad_value``, ``score_threshold``, ``person_label``, ``device``, ``num_threads``, ``batched``),
    boxes returned as :class:`Detections` tensors."""

    input_kind = "numpy"

    def __init__(self, path: str | os.PathLike, preset: str = "auto", input_size: tuple[int, int] | None = None,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None, bgr: bool = True,
                 pad_value: float = 114.0, score_threshold: float = 0.3, person_label: int | None = 0,
                 device: str | torch.device = "cpu", num_threads: int | None = None, batched: bool = False) -> None:
        self.runtime = PersonDetector(path, preset, input_size, mean, std, bgr, pad_value, score_threshold,
                                      person_label, device=torch.device(device).type, num_threads=num_threads,
                                      batched=batched, extra="onnx")
        self.path: Path = self.runtime.path
        self.name = self.runtime.name

    # the runtime detector's settings, read through (tests and callers inspect them)
    preset = property(lambda self: self.runtime.preset)
    session = property(lambda self: self.runtime.session)
    input_size = property(lambda self: self.runtime.input_size)
    fixed_batch = property(lambda self: self.runtime.fixed_batch)
    mean = property(lambda self: self.runtime.mean)
    std = property(lambda self: self.runtime.std)
    bgr = property(lambda self: self.runtime.bgr)
    pad_value = property(lambda self: self.runtime.pad_value)
    person_label = property(lambda self: self.runtime.person_label)
    batched = property(lambda self: self.runtime.batched)

    @property
    def score_threshold(self) -> float:
        return self.runtime.score_threshold

    @score_threshold.setter
    def score_threshold(self, value: float) -> None:
        self.runtime.score_threshold = float(value)

    def preprocess(self, frames: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """RGB frames -> network input ``[N, 3, h, w]`` float32 and per-frame resize factors ``[N, 2]``."""
        return self.runtime.preprocess(frames, rgb=True)

    def detect_batch(self, frames: Sequence[Frame], keys: Sequence[Hashable] | None = None) -> list[Detections]:
        return [_to_detections(b) for b in self.runtime.detect_batch([frame_to_numpy(f) for f in frames], rgb=True)]

    def postprocess(self, dets: np.ndarray, labels: np.ndarray, factors: np.ndarray,
                    sizes: Sequence[tuple[int, int]]) -> list[Detections]:
        """Network outputs -> :class:`Detections` in frame pixels."""
        return [_to_detections(b) for b in self.runtime.postprocess(dets, labels, factors, sizes)]


def _to_detections(boxes: Boxes) -> Detections:
    return Detections(torch.from_numpy(boxes.boxes), torch.from_numpy(boxes.scores),
                      torch.from_numpy(boxes.labels)).filter(max_detections=None)  # best first
