"""Metrics that an estimator names for its evaluation and for picking the best checkpoint.

A :class:`Metric` takes :class:`~poseforge.outputs.Predictions` batch by batch with the batch they came
from (``update``), merges with the states of other processes (``state`` / ``merge``), and ``compute``\\ s
a dict of stats; ``primary`` names the stat that ranks checkpoints and ``higher_is_better`` its
direction.

* :class:`CocoKeypointMetric` - mmpose's ``CocoMetric``: predictions -> COCO results (image pixels),
  rescoring (``bbox_keypoint`` for top-down, ``keypoint`` for bottom-up), per-image OKS-NMS, OKS AP/AR
  against the ground truth; where each prediction belongs to a ground-truth person (top-down in
  ground-truth boxes) also PCK@0.2 of the box's longer side and the mean pixel error (EPE).
* :class:`DenseMetric` - mIoU / pixel accuracy, relative-depth AbsRel / RMSE / delta1, normal angle
  errors, at the model-input resolution against the batch's warped labels.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, Mapping, Sequence

import numpy as np

from ..data.coco import CocoKeypoints
from ..data.records import json_floats
from ..errors import PoseforgeError
from ..outputs import Predictions
from .coco import evaluate_keypoints
from .dense import DepthScores, NormalScores, SegmentationScores
from .pck import keypoint_epe, pck_accuracy
from .postprocess import keypoint_extent_areas, oks_nms, rescore_results

__all__ = ["Metric", "CocoKeypointMetric", "DenseMetric"]


class Metric(ABC):
    """Accumulates predictions and computes stats (see the module doc)."""

    primary: str = "AP"
    higher_is_better: bool = True

    @abstractmethod
    def update(self, predictions: Predictions, batch: Mapping[str, Any]) -> None:
        """Add a batch's predictions (on any device); ``batch`` holds the samples' fields."""

    @abstractmethod
    def state(self) -> Any:
        """A picklable snapshot of what was accumulated (gathered from every process under DDP)."""

    @abstractmethod
    def merge(self, states: Sequence[Any]) -> None:
        """Replace the accumulated state by the union of ``states`` (every process's, this one's included)."""

    @abstractmethod
    def compute(self) -> dict[str, float]:
        """The stats."""

    def better(self, a: float, b: float) -> bool:
        """Whether stat value ``a`` beats ``b`` for the primary stat."""
        if math.isnan(a):
            return False
        if math.isnan(b):
            return True
        return a > b if self.higher_is_better else a < b


class CocoKeypointMetric(Metric):
    """COCO OKS AP/AR of keypoint predictions (see the module doc).

    Args:
        gt: the ground truth.
        score_mode: instance rescoring (``postprocess.SCORE_MODES``): ``bbox_keypoint`` (top-down) or
            ``keypoint`` (bottom-up); the predictions' ``instance_scores`` are the box scores.
        keypoint_score_thr: keypoints above it count in ``bbox_keypoint`` rescoring.
        nms_thr: per-image OKS-NMS threshold (``None``: off).
        pck_thr: PCK threshold (fraction of the box's longer side) where predictions pair with people.
    """

    def __init__(self, gt: CocoKeypoints, score_mode: str = "bbox_keypoint", keypoint_score_thr: float = 0.2,
                 nms_thr: float | None = 0.9, pck_thr: float = 0.2) -> None:
        self.gt = gt
        self.score_mode, self.keypoint_score_thr, self.nms_thr, self.pck_thr = score_mode, keypoint_score_thr, nms_thr, pck_thr
        self.category_id = int(next((c["id"] for c in gt.categories if isinstance(c, dict) and "id" in c), 1))
        self._rows: list[dict[str, np.ndarray]] = []
        self._merged_rows: dict[str, np.ndarray] | None = None  # of _rows, made once per compute
        self._raw: list[dict[str, Any]] | None = None
        self._scored: list[dict[str, Any]] = []

    def update(self, predictions: Predictions, batch: Mapping[str, Any]) -> None:
        valid = predictions.valid.cpu().numpy()
        b, n = valid.shape
        keypoints = predictions.keypoints.detach().cpu().double().numpy()
        scores = predictions.scores.detach().float().cpu().numpy()
        image_ids = np.asarray(batch["image_id"].cpu() if hasattr(batch["image_id"], "cpu") else batch["image_id"]).reshape(b)
        order = np.asarray(batch["index"].cpu()).reshape(b) if "index" in batch else np.full(b, -1)
        instance = np.asarray(batch["instance_id"].cpu()).reshape(b) if "instance_id" in batch and n == 1 else np.full(b, -1)
        box_scores = (predictions.instance_scores.detach().double().cpu().numpy() if predictions.instance_scores is not None
                      else np.ones((b, n)))
        areas = predictions.areas.detach().double().cpu().numpy() if predictions.areas is not None else None
        rows, slots = np.nonzero(valid)
        flat_kp = keypoints[rows, slots]
        self._rows.append({
            "image_id": image_ids[rows], "order": order[rows] * max(n, 1) + slots, "keypoints": flat_kp,
            "scores": scores[rows, slots], "box_score": box_scores[rows, slots],
            "area": areas[rows, slots] if areas is not None else keypoint_extent_areas(flat_kp),
            "instance_id": instance[rows]})
        self._merged_rows, self._raw = None, None

    def state(self) -> list[dict[str, np.ndarray]]:
        return self._rows

    def merge(self, states: Sequence[list[dict[str, np.ndarray]]]) -> None:
        self._rows = [row for state in states for row in state]
        self._merged_rows, self._raw = None, None

    def predictions(self) -> dict[str, np.ndarray]:
        """Everything accumulated, in sample order: ``image_id``, ``keypoints [N, K, 2]``, ``scores [N, K]``,
        ``box_score``, ``area``, ``instance_id`` (the ground-truth person of each prediction, -1 if none)."""
        return self._merged()

    def _merged(self) -> dict[str, np.ndarray]:
        if self._merged_rows is None:
            self._merged_rows = self._merge_rows()
        return self._merged_rows

    def _merge_rows(self) -> dict[str, np.ndarray]:
        k = self.gt.keypoint_set.num_keypoints
        if not self._rows:
            empty = np.zeros(0)
            return {"image_id": empty.astype(np.int64), "order": empty.astype(np.int64), "keypoints": np.zeros((0, k, 2)),
                    "scores": np.zeros((0, k)), "box_score": empty, "area": empty, "instance_id": empty.astype(np.int64)}
        merged = {key: np.concatenate([r[key] for r in self._rows]) for key in self._rows[0]}
        if (merged["order"] >= 0).all():  # sample order, whatever the process split; padding repeats dropped
            _, first = np.unique(merged["order"], return_index=True)
            merged = {key: value[first] for key, value in merged.items()}
        return merged

    def raw_results(self) -> list[dict[str, Any]]:
        """COCO result records before rescoring (``score`` the box score, ``area`` the NMS area)."""
        if self._raw is None:
            m = self._merged()
            flat = np.concatenate([m["keypoints"], m["scores"][..., None].astype(np.float64)], -1).reshape(
                len(m["area"]), 3 * m["scores"].shape[-1])  # (explicit width: no instances at all is valid)
            self._raw = [{"image_id": int(i), "category_id": self.category_id, "keypoints": json_floats(kp),
                          "score": float(s), "area": float(a)}
                         for i, kp, s, a in zip(m["image_id"].tolist(), flat, m["box_score"].tolist(), m["area"].tolist())]
        return self._raw

    @property
    def results(self) -> list[dict[str, Any]]:
        """The scored results of the last :meth:`compute` (rescored, after OKS-NMS)."""
        return self._scored

    def compute(self) -> dict[str, float]:
        raw = self.raw_results()
        results = rescore_results(raw, self.score_mode, self.keypoint_score_thr)
        if self.nms_thr is not None:
            results = oks_nms(results, self.nms_thr, self.gt.keypoint_set)
        self._scored = results
        stats = {k: float(v) for k, v in evaluate_keypoints(self.gt, results, self.gt.keypoint_set.name).items()}
        stats.update(self._paired_errors())
        return stats

    def _paired_errors(self) -> dict[str, float]:
        """PCK and EPE of the predictions that belong to a ground-truth person (none: empty)."""
        m = self._merged()
        paired = m["instance_id"] >= 0
        if not paired.any():
            return {}
        people = {inst.instance_id: inst for inst in self.gt.instances}
        missing = sorted({int(i) for i in m["instance_id"][paired]} - set(people))
        if missing:
            raise PoseforgeError(f"{self.gt.source}: predictions name unknown annotation ids {missing[:5]}")
        truth = [people[int(i)] for i in m["instance_id"][paired]]
        gt_xy = np.stack([np.asarray(t.keypoints, dtype=np.float64) for t in truth])
        mask = np.stack([np.asarray(t.visibility) > 0 for t in truth])
        side = np.asarray([max(float(t.bbox[2]), float(t.bbox[3])) for t in truth])
        predicted = m["keypoints"][paired]
        _, pck, _ = pck_accuracy(predicted, gt_xy, mask, thr=self.pck_thr, normalize=np.stack([side, side], 1))
        return {f"PCK@{self.pck_thr:g}": float(pck), "EPE": float(keypoint_epe(predicted, gt_xy, mask))}


class DenseMetric(Metric):
    """Segmentation, depth and normal scores of dense predictions at the model-input resolution, against
    the batch's labels (``seg``, ``depth``, ``normals``); ``tasks`` says which are predicted."""

    def __init__(self, tasks: Sequence[str], num_classes: int = 0, ignore_index: int = 255) -> None:
        self.tasks = tuple(tasks)
        self.seg = SegmentationScores(num_classes, ignore_index) if "seg" in self.tasks else None
        self.depth = DepthScores() if "depth" in self.tasks else None
        self.normals = NormalScores() if "normals" in self.tasks else None
        self.primary, self.higher_is_better = (("mIoU", True) if self.seg is not None else
                                               ("AbsRel", False) if self.depth is not None else ("normal_mean", False))

    def update(self, predictions: Predictions, batch: Mapping[str, Any]) -> None:
        dense = predictions.dense
        if dense is None:
            raise PoseforgeError("dense metric: the predictions hold no dense maps")
        if self.seg is not None:
            self.seg.update(dense.seg.argmax(1), batch["seg"].to(dense.seg.device))
        if self.depth is not None:
            truth = batch["depth"].to(dense.depth.device).float().reshape(dense.depth.shape)
            self.depth.update(dense.depth, truth, truth > 0)
        if self.normals is not None:
            truth = batch["normals"].to(dense.normals.device).float()
            self.normals.update(dense.normals, truth, truth.abs().sum(1, keepdim=True) > 0)

    def state(self) -> list[Any]:
        return [self.seg, self.depth, self.normals]

    def merge(self, states: Sequence[list[Any]]) -> None:
        parts = [self.seg, self.depth, self.normals]
        for i, part in enumerate(parts):
            if part is None:
                continue
            fresh = type(part)(part.num_classes, part.ignore_index) if isinstance(part, SegmentationScores) else type(part)()
            for state in states:
                fresh.merge(state[i])
            parts[i] = fresh
        self.seg, self.depth, self.normals = parts

    def compute(self) -> dict[str, float]:
        stats: dict[str, float] = {}
        for part in (self.seg, self.depth, self.normals):
            if part is not None:
                stats.update(part.compute())
        return stats
