"""RTMDet / YOLOX "end2end" ONNX person detectors (mmdeploy, rtmlib exports) with onnxruntime and numpy.

Those files contain the network and its NMS: input ``[N, 3, H, W]`` float, outputs ``dets [N, M, 5]``
(``x1, y1, x2, y2, score`` in input pixels) and ``labels [N, M]``. Pre-processing is the one they were
exported with:

* letterbox: resize keeping the aspect ratio to fit ``input_size``, image at the top-left, the rest
  filled with ``pad_value`` (114), as mmdet's ``Resize(keep_ratio=True)`` + ``Pad`` and rtmlib do;
* channels BGR, then ``(x - mean) / std`` per channel (RTMDet: mean (103.53, 116.28, 123.675), std
  (57.375, 57.12, 58.395); YOLOX: raw 0-255 pixels).

Boxes are mapped back through the letterbox (divided by the per-axis resize factor) and clipped to the
frame. :class:`PersonDetector` returns numpy :class:`Boxes`; poseforge's torch ``OnnxDetector`` adapts it.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from ..errors import PoseforgeError
from ._checks import Fields, first_line
from .session import _check_image_input, create_session

__all__ = ["PersonDetector", "Boxes", "letterbox", "PRESETS", "DEFAULT_SIZES"]

# name -> (mean, std) in BGR order, 0-255 scale
PRESETS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "rtmdet": ((103.53, 116.28, 123.675), (57.375, 57.12, 58.395)),
    "yolox": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}
DEFAULT_SIZES = {"rtmdet": (320, 320), "yolox": (640, 640)}


@dataclasses.dataclass
class Boxes:
    """Detections in one frame, best first: ``boxes [M, 4]`` xyxy frame pixels (float64), ``scores [M]``,
    ``labels [M]`` (int64 class index of the detector; 0 = person)."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.boxes)


def letterbox(image: np.ndarray, size: tuple[int, int],
              pad_value: float = 114.0) -> tuple[np.ndarray, tuple[float, float]]:
    """Resize ``image`` (H x W x C) into ``size`` (w, h) keeping its aspect ratio, top-left aligned, padded
    with ``pad_value``. Returns the padded image and the per-axis factors ``(new_w / w, new_h / h)``."""
    h, w = image.shape[:2]
    out_w, out_h = int(size[0]), int(size[1])
    ratio = min(out_w / w, out_h / h)
    new_w, new_h = max(1, int(w * ratio + 0.5)), max(1, int(h * ratio + 0.5))
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR) if (new_w, new_h) != (w, h) else image
    padded = np.full((out_h, out_w) + image.shape[2:], pad_value, dtype=image.dtype)
    padded[:new_h, :new_w] = resized
    return padded, (new_w / w, new_h / h)


class PersonDetector:
    """A person detector running an end2end RTMDet / YOLOX ONNX export with onnxruntime.

    Args:
        path: the ``.onnx`` file.
        preset: ``"rtmdet"``, ``"yolox"`` or ``"auto"`` (``yolox`` when the file name says so).
        input_size: network input ``(w, h)``; default the file's static size, else 320x320 (RTMDet)
            or 640x640 (YOLOX).
        mean, std: per-channel normalization in the network's channel order (override the preset).
        bgr: the network takes BGR (True for mmdet exports).
        pad_value: letterbox fill.
        score_threshold: keep boxes scoring above it.
        person_label: the class index of persons (None keeps every class).
        device: ``"cpu"`` or ``"cuda"`` (onnxruntime's CUDA provider when installed).
        num_threads: onnxruntime intra-op threads (default: its own choice).
        batched: run several frames per call (only for exports whose NMS handles batches; RTMDet's
            mmdeploy export does not).
        extra: the pip extra named when onnxruntime is missing.

    ``detector(frame)`` / ``detector.detect_batch(frames)`` take ``H x W x 3`` uint8 frames, BGR as OpenCV reads
    them unless ``rgb=True``.
    """

    def __init__(self, path: str | os.PathLike, preset: str = "auto", input_size: tuple[int, int] | None = None,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None, bgr: bool = True,
                 pad_value: float = 114.0, score_threshold: float = 0.3, person_label: int | None = 0,
                 device: str = "cpu", num_threads: int | None = None, batched: bool = False,
                 extra: str = "runtime") -> None:
        self.path = Path(path)
        self.name = self.path.name
        if preset == "auto":
            preset = "yolox" if "yolox" in self.path.name.lower() else "rtmdet"
        if preset not in PRESETS:
            raise PoseforgeError(f"{self.path}: unknown detector preset '{preset}'; known: auto, {', '.join(PRESETS)}")
        self.preset = preset
        self.session = create_session(self.path, num_threads=num_threads, device=device, what="ONNX detector",
                                      extra=extra)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise PoseforgeError(f"{self.path}: expected one [N, 3, H, W] input, got "
                                 f"{[(i.name, i.shape) for i in inputs]}")
        _check_image_input(self.path, inputs[0])
        # dets / labels by name (mmdeploy, rtmlib), else the first two outputs
        by_name = {o.name: o for o in outputs}
        chosen = [by_name["dets"], by_name["labels"]] if {"dets", "labels"} <= set(by_name) else outputs[:2]
        if len(chosen) < 2 or len(chosen[0].shape) != 3 or len(chosen[1].shape) not in (1, 2):
            raise PoseforgeError(f"{self.path}: expected an end2end detector export with outputs dets [N, M, 5] and "
                                 f"labels [N, M] (NMS in the graph), got {[(o.name, o.shape) for o in outputs]}")
        self.input_name = inputs[0].name
        self.output_names = [o.name for o in chosen]
        static = inputs[0].shape[2:]
        option = Fields(self.path, None, "option")
        if input_size is None:
            input_size = (static[1], static[0]) if all(isinstance(v, int) for v in static) else DEFAULT_SIZES[preset]
        self.input_size = option.size(input_size, "input_size")
        batch = inputs[0].shape[0]
        self.fixed_batch = batch if isinstance(batch, int) and batch > 0 else None
        preset_mean, preset_std = PRESETS[preset]
        self.mean = np.asarray(preset_mean if mean is None else option.triple(mean, "mean"),
                               dtype=np.float32).reshape(1, 3, 1, 1)
        self.std = np.asarray(preset_std if std is None else option.triple(std, "std", positive=True),
                              dtype=np.float32).reshape(1, 3, 1, 1)
        self.bgr = bool(bgr)
        self.pad_value = option.number(pad_value, "pad_value")
        self.score_threshold = option.number(score_threshold, "score_threshold")
        self.person_label = None if person_label is None else option.integer(person_label, "person_label")
        self.batched = bool(batched)

    def preprocess(self, frames: Sequence[np.ndarray], rgb: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Frames (``H x W x 3``, RGB if ``rgb`` else BGR) -> network input ``[N, 3, h, w]`` float32 and per-frame
        resize factors ``[N, 2]``."""
        batch = np.empty((len(frames), 3, self.input_size[1], self.input_size[0]), dtype=np.float32)
        factors = np.empty((len(frames), 2), dtype=np.float64)
        swap = rgb == self.bgr  # the frames' channel order differs from the network's
        for i, frame in enumerate(frames):  # one resize per frame (cv2); the arithmetic below is batched
            padded, factors[i] = letterbox(frame[..., ::-1] if swap else frame, self.input_size, self.pad_value)
            batch[i] = padded.transpose(2, 0, 1)
        return (batch - self.mean) / self.std, factors

    def detect_batch(self, frames: Sequence[np.ndarray], rgb: bool = False) -> list[Boxes]:
        """Person boxes of each frame (``H x W x 3`` uint8, RGB if ``rgb`` else BGR), best first."""
        arrays = [_check_frame(f, i) for i, f in enumerate(frames)]
        if not arrays:
            return []
        x, factors = self.preprocess(arrays, rgb=rgb)
        # Many end2end exports run their NMS for batch 1 only: one frame per call unless told otherwise.
        chunk = self.fixed_batch or (len(arrays) if self.batched else 1)
        sizes = [(a.shape[1], a.shape[0]) for a in arrays]
        out: list[Boxes] = []
        for s in range(0, len(arrays), chunk):  # calls may return different numbers of boxes
            part = x[s:s + chunk]
            if self.fixed_batch and len(part) < chunk:  # a static batch: pad the last call, drop the padding
                part = np.concatenate([part, np.zeros((chunk - len(part),) + part.shape[1:], part.dtype)])
            try:
                dets, labels = self.session.run(self.output_names, {self.input_name: part})
            except Exception as e:  # onnxruntime's own exception types: a graph that loads but cannot run
                raise PoseforgeError(f"{self.path}: onnxruntime cannot run this detector ({first_line(e)})") from None
            n = min(chunk, len(arrays) - s)
            if np.ndim(dets) == 3 and np.ndim(labels) >= 1 and len(dets) == len(part) == len(labels) > n:
                dets, labels = dets[:n], labels[:n]
            out.extend(self.postprocess(dets, labels, factors[s:s + n], sizes[s:s + n]))
        return out

    def __call__(self, frame: np.ndarray, rgb: bool = False) -> Boxes:
        """Person boxes of one frame (see :meth:`detect_batch`)."""
        return self.detect_batch([frame], rgb=rgb)[0]

    def postprocess(self, dets: np.ndarray, labels: np.ndarray, factors: np.ndarray,
                    sizes: Sequence[tuple[int, int]]) -> list[Boxes]:
        """Network outputs -> :class:`Boxes` in frame pixels, best first (vectorized over frames and boxes)."""
        dets = np.asarray(dets, dtype=np.float64)
        factors = np.asarray(factors, dtype=np.float64).reshape(-1, 2)
        if dets.ndim != 3 or dets.shape[-1] != 5 or len(dets) != len(factors):
            raise PoseforgeError(f"{self.path}: expected dets [{len(factors)}, M, 5] from the network, got "
                                 f"{list(dets.shape)}")
        labels = np.asarray(labels)
        if labels.size != dets.shape[0] * dets.shape[1]:
            raise PoseforgeError(f"{self.path}: expected labels [{dets.shape[0]}, {dets.shape[1]}] from the network "
                                 f"(one per box), got {list(labels.shape)}")
        labels = labels.reshape(dets.shape[:2])
        if labels.dtype.kind not in "iub":  # float labels (some exports): integral values, -1 where not finite
            labels = np.where(np.isfinite(labels), np.clip(np.round(labels), -1, 2**31), -1)
        labels = labels.astype(np.int64)
        with np.errstate(invalid="ignore", over="ignore"):
            boxes = dets[..., :4] / np.tile(factors, 2)[:, None, :]
        limits = np.tile(np.asarray(sizes, dtype=np.float64), 2)[:, None, :]
        boxes = np.clip(boxes, 0.0, limits)
        # boxes with a non-finite score or corner, or nothing left inside the frame, are not detections
        keep = (dets[..., 4] > self.score_threshold) & np.isfinite(dets).all(-1)
        keep &= (boxes[..., 2:] > boxes[..., :2]).all(-1)
        if self.person_label is not None:
            keep &= labels == self.person_label
        out = []
        for i in range(dets.shape[0]):
            scores = dets[i, :, 4][keep[i]]
            order = np.argsort(-scores, kind="stable")
            out.append(Boxes(boxes[i][keep[i]][order], scores[order], labels[i][keep[i]][order]))
        return out

    def __repr__(self) -> str:
        return f"PersonDetector({self.name}, {self.preset}, input {self.input_size[0]}x{self.input_size[1]})"


def _check_frame(frame: np.ndarray, index: int) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise PoseforgeError(f"frame {index}: expected an H x W x 3 uint8 image, got {frame.dtype} "
                             f"{tuple(frame.shape)}")
    return np.ascontiguousarray(frame)
