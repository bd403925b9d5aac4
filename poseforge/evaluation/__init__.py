"""Evaluation: COCO OKS AP/AR (any keypoint set, whole-body parts, CrowdPose), result post-processing
(rescoring, OKS-NMS), PCK / AUC / EPE, box AP, dense scores (mIoU, depth, normals), the metrics
estimators name, and the evaluator that runs any estimator over an evaluation set."""
from __future__ import annotations

from .boxes import evaluate_boxes
from .coco import BACKENDS, CROWD_STAT_NAMES, STAT_NAMES, coco_metric, evaluate_keypoints, format_table
from .dense import DepthScores, NormalScores, SegmentationScores
from .evaluator import EvalResult, evaluate
from .metrics import CocoKeypointMetric, DenseMetric, Metric
from .pck import keypoint_auc, keypoint_epe, normalized_distances, pck_accuracy
from .postprocess import oks_matrix, oks_nms, oks_nms_indices, rescore, rescore_results

__all__ = [
    "BACKENDS", "CROWD_STAT_NAMES", "STAT_NAMES", "coco_metric", "evaluate_keypoints", "format_table",
    "keypoint_auc", "keypoint_epe", "normalized_distances", "pck_accuracy",
    "oks_matrix", "oks_nms", "oks_nms_indices", "rescore", "rescore_results", "evaluate_boxes",
    "SegmentationScores", "DepthScores", "NormalScores", "Metric", "CocoKeypointMetric", "DenseMetric",
    "EvalResult", "evaluate",
]
