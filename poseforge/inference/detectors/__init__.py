"""Person detectors for the top-down predictor.

* :class:`BuiltinDetector` - poseforge's small CenterNet-style CNN trained on synthetic people
  (``"bundled"`` weights ship with the package);
* :class:`~.onnx.OnnxDetector` - RTMDet / YOLOX end2end ONNX exports (mmdeploy, rtmlib; needs onnxruntime);
* :class:`~.ultralytics.UltralyticsDetector` - an installed ultralytics YOLO model;
* :class:`DetectionFile` - boxes from a COCO detection results file.

:func:`load_detector` picks one from a name or path.
"""
from .base import DetectionFile, Detections, Detector, box_iou, nms, xywh_to_xyxy, xyxy_to_xywh
from .builtin import BuiltinDetector, PersonDetectorConfig, PersonDetectorNet, load_detector

__all__ = ["Detector", "Detections", "DetectionFile", "BuiltinDetector", "PersonDetectorConfig", "PersonDetectorNet",
           "load_detector", "box_iou", "nms", "xyxy_to_xywh", "xywh_to_xyxy", "OnnxDetector", "UltralyticsDetector"]


def __getattr__(name: str):
    # Optional backends: imported on use so a missing onnxruntime / ultralytics costs nothing.
    if name == "OnnxDetector":
        from .onnx import OnnxDetector

        return OnnxDetector
    if name == "UltralyticsDetector":
        from .ultralytics import UltralyticsDetector

        return UltralyticsDetector
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
