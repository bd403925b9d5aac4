"""Evaluation: COCO OKS AP/AR (any keypoint set, whole-body parts, CrowdPose), result
post-processing (rescoring, OKS-NMS) and PCK / AUC / EPE."""
from __future__ import annotations

from .coco import BACKENDS, CROWD_STAT_NAMES, STAT_NAMES, coco_metric, evaluate_keypoints, format_table
from .pck import keypoint_auc, keypoint_epe, normalized_distances, pck_accuracy
from .postprocess import oks_matrix, oks_nms, oks_nms_indices, rescore, rescore_results

__all__ = [
    "BACKENDS", "CROWD_STAT_NAMES", "STAT_NAMES", "coco_metric", "evaluate_keypoints", "format_table",
    "keypoint_auc", "keypoint_epe", "normalized_distances", "pck_accuracy",
    "oks_matrix", "oks_nms", "oks_nms_indices", "rescore", "rescore_results",
]
