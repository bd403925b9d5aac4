"""Run exported poseforge models (and RTMDet / YOLOX ONNX person detectors) with onnxruntime, numpy and
OpenCV only: nothing here imports torch (``pip install 'poseforge[runtime]'``).

>>> from poseforge.runtime import TopDownPipeline
>>> pipeline = TopDownPipeline("rtmpose-t.onnx", detector="rtmdet-nano-person.onnx")
>>> result = pipeline(cv2.imread("people.jpg"))        # BGR, as OpenCV reads it
>>> result.keypoints, result.scores                     # [P, K, 2] image pixels, [P, K]

* :class:`PoseModel` - an exported model, its metadata (:class:`ModelMeta`) and decoded predictions;
* :class:`PersonDetector` - end2end RTMDet / YOLOX exports (letterbox, NMS in the graph);
* :class:`TopDownPipeline`, :class:`BottomUpPipeline` (:func:`load_pipeline` picks by the model's kind);
* :mod:`.crop` (box -> crop affine, warp, back-mapping), :mod:`.decode` (SimCC, MSRA / DARK / UDP heatmaps,
  associative-embedding grouping), :func:`draw_poses`, and the ``poseforge-rt`` command (:mod:`.cli`).
"""
from .crop import crop_matrices, crops_to_image, fit_matrix, warp_crops
from .decode import decode_heatmaps, decode_simcc, decode_topdown, group_associative_embedding
from .detector import Boxes, PersonDetector, letterbox
from .drawing import draw_poses
from .pipeline import BottomUpPipeline, Frame, PoseResult, TopDownPipeline, iter_frames, load_pipeline, read_image
from .session import KeypointInfo, ModelMeta, PoseModel

__all__ = ["PoseModel", "ModelMeta", "KeypointInfo", "PersonDetector", "Boxes", "letterbox", "TopDownPipeline",
           "BottomUpPipeline", "PoseResult", "load_pipeline", "Frame", "iter_frames", "read_image", "draw_poses",
           "crop_matrices", "crops_to_image", "fit_matrix", "warp_crops", "decode_simcc", "decode_heatmaps",
           "decode_topdown", "group_associative_embedding"]
