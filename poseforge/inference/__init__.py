"""Inference: the top-down :class:`Predictor` (images, folders, videos, webcams), person detectors,
tracking, video I/O and drawing (``poseforge.inference.drawing``).

>>> from poseforge.inference import Predictor
>>> result = Predictor("bundled", detector="bundled")("people.jpg")

Submodules are imported on first use, so importing this package stays cheap.
"""
from __future__ import annotations

__all__ = ["Predictor", "PoseResult", "PoseTracker", "OneEuroFilter", "linear_assignment", "load_detector",
           "BuiltinDetector", "OnnxDetector", "DetectionFile", "Detections", "Detector", "VideoReader", "VideoWriter"]

_LAZY = {
    "Predictor": "predictor", "PoseResult": "predictor",
    "PoseTracker": "tracking", "OneEuroFilter": "tracking", "linear_assignment": "tracking",
    "load_detector": "detectors", "BuiltinDetector": "detectors", "OnnxDetector": "detectors",
    "DetectionFile": "detectors", "Detections": "detectors", "Detector": "detectors",
    "VideoReader": "video", "VideoWriter": "video",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
