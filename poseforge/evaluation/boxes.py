"""COCO box AP of person detections (faster-coco-eval, ``bbox`` mode): how the person detectors are scored."""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["evaluate_boxes"]


def evaluate_boxes(gt_boxes: Sequence[np.ndarray], gt_areas: Sequence[np.ndarray], det_boxes: Sequence[np.ndarray],
                   det_scores: Sequence[np.ndarray]) -> dict[str, float]:
    """COCO box AP/AR of per-image detections (xyxy ``det_boxes`` with ``det_scores``) against xyxy ground
    truth with its areas (the visible pixels, for the size ranges)."""
    from faster_coco_eval import COCO, COCOeval_faster

    images = [{"id": i, "width": 1, "height": 1} for i in range(len(gt_boxes))]
    anns = []
    for i, (boxes, areas) in enumerate(zip(gt_boxes, gt_areas)):
        for b, a in zip(np.asarray(boxes).reshape(-1, 4), np.asarray(areas).reshape(-1)):
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": 1, "iscrowd": 0, "area": float(a),
                         "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]})
    dets = []
    for i, (boxes, scores) in enumerate(zip(det_boxes, det_scores)):
        for b, s in zip(np.asarray(boxes, dtype=np.float64).reshape(-1, 4).tolist(), np.asarray(scores).reshape(-1).tolist()):
            xywh = [b[0], b[1], b[2] - b[0], b[3] - b[1]]
            dets.append({"image_id": i, "category_id": 1, "bbox": xywh, "score": float(s), "area": xywh[2] * xywh[3]})
    quiet = lambda *a, **k: None  # noqa: E731
    categories = [{"id": 1, "name": "person"}]
    gt = COCO({"images": images, "categories": categories, "annotations": anns}, print_function=quiet)
    if not dets:
        return {"AP": 0.0, "AP50": 0.0, "AP75": 0.0, "AR100": 0.0}
    dt = COCO({"images": images, "categories": categories, "annotations": [dict(d, id=n + 1) for n, d in enumerate(dets)]},
              print_function=quiet)
    evaluator = COCOeval_faster(gt, dt, "bbox", print_function=quiet)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    s = evaluator.stats
    return {"AP": float(s[0]), "AP50": float(s[1]), "AP75": float(s[2]), "APs": float(s[3]), "APm": float(s[4]),
            "APl": float(s[5]), "AR100": float(s[8])}
