"""Dense metrics (Sapiens' tasks): segmentation IoU, relative-depth errors, surface-normal angles.

Each is an accumulator of sums over batches (so it merges across processes by adding), fed tensors on
any device:

* :class:`SegmentationScores` - a ``C x C`` confusion matrix: mIoU (over the classes that occur in the
  labels or the predictions), per-class IoU, pixel accuracy;
* :class:`DepthScores` - per image, the prediction scaled to the ground truth's median (relative
  depth has no metric scale), then AbsRel, RMSE and the share within ``delta < 1.25``, averaged over
  images;
* :class:`NormalScores` - per-pixel angular errors in degrees (a 0.05-degree histogram): mean,
  median and the share within 11.25, 22.5 and 30 degrees.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = ["SegmentationScores", "DepthScores", "NormalScores"]


class SegmentationScores:
    """Confusion-matrix segmentation scores over ``num_classes`` classes; ``ignore_index`` pixels skipped."""

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.confusion = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, predicted: Tensor, labels: Tensor) -> None:
        """``predicted`` class indices and ``labels`` of the same shape (any)."""
        keep = labels.reshape(-1) != self.ignore_index
        truth = labels.reshape(-1)[keep].long()
        guess = predicted.reshape(-1)[keep].long()
        counts = torch.bincount(truth * self.num_classes + guess, minlength=self.num_classes ** 2)
        self.confusion += counts.cpu().numpy().reshape(self.num_classes, self.num_classes)

    def merge(self, other: "SegmentationScores") -> None:
        self.confusion += other.confusion

    def compute(self) -> dict[str, float]:
        c = self.confusion.astype(np.float64)
        tp = np.diag(c)
        union = c.sum(0) + c.sum(1) - tp
        present = union > 0
        iou = np.divide(tp, union, out=np.zeros_like(tp), where=present)
        total = c.sum()
        return {"mIoU": float(iou[present].mean()) if present.any() else float("nan"),
                "pixel_acc": float(tp.sum() / total) if total else float("nan")}

    def per_class_iou(self) -> np.ndarray:
        c = self.confusion.astype(np.float64)
        tp = np.diag(c)
        union = c.sum(0) + c.sum(1) - tp
        return np.divide(tp, union, out=np.full_like(tp, np.nan), where=union > 0)


class DepthScores:
    """Relative-depth errors, the prediction median-scaled to the ground truth per image."""

    def __init__(self) -> None:
        self.sums = np.zeros(3)  # AbsRel, RMSE, delta<1.25, each summed over images
        self.images = 0

    def update(self, predicted: Tensor, truth: Tensor, valid: Tensor) -> None:
        """``predicted``, ``truth``, ``valid`` of shape ``[B, ...]``; images without valid pixels are skipped."""
        for p, g, v in zip(predicted.float(), truth.float(), valid.bool()):  # per image: a handful per batch
            p, g = p[v], g[v]
            if g.numel() == 0:
                continue
            p = p * (g.median() / p.median().clamp(min=1e-6))
            p = p.clamp(min=1e-6)
            ratio = torch.maximum(p / g, g / p)
            self.sums += np.array([float(((p - g).abs() / g).mean()), float(((p - g) ** 2).mean().sqrt()),
                                   float((ratio < 1.25).float().mean())])
            self.images += 1

    def merge(self, other: "DepthScores") -> None:
        self.sums += other.sums
        self.images += other.images

    def compute(self) -> dict[str, float]:
        mean = self.sums / self.images if self.images else np.full(3, math.nan)
        return {"AbsRel": float(mean[0]), "RMSE": float(mean[1]), "delta1": float(mean[2])}


class NormalScores:
    """Angular errors of unit normals in degrees, accumulated as a histogram (0.05-degree bins)."""

    BINS = 3600

    def __init__(self) -> None:
        self.histogram = np.zeros(self.BINS, dtype=np.int64)
        self.total_angle = 0.0

    def update(self, predicted: Tensor, truth: Tensor, valid: Tensor) -> None:
        """``predicted``, ``truth`` ``[B, 3, H, W]`` (normalized here), ``valid`` ``[B, 1, H, W]``."""
        p = torch.nn.functional.normalize(predicted.float(), dim=1)
        g = torch.nn.functional.normalize(truth.float(), dim=1)
        cos = (p * g).sum(1).clamp(-1, 1)[valid[:, 0].bool()]
        angle = torch.rad2deg(torch.acos(cos))
        bins = (angle / 180 * self.BINS).long().clamp(max=self.BINS - 1)
        self.histogram += torch.bincount(bins, minlength=self.BINS).cpu().numpy()
        self.total_angle += float(angle.double().sum())

    def merge(self, other: "NormalScores") -> None:
        self.histogram += other.histogram
        self.total_angle += other.total_angle

    def compute(self) -> dict[str, float]:
        n = int(self.histogram.sum())
        if n == 0:
            return {k: math.nan for k in ("normal_mean", "normal_median", "within_11.25", "within_22.5", "within_30")}
        cumulative = np.cumsum(self.histogram)
        width = 180 / self.BINS
        median = (int(np.searchsorted(cumulative, n / 2)) + 0.5) * width
        within = {t: float(cumulative[int(round(t / width)) - 1] / n) for t in (11.25, 22.5, 30.0)}
        return {"normal_mean": self.total_angle / n, "normal_median": median, "within_11.25": within[11.25],
                "within_22.5": within[22.5], "within_30": within[30.0]}
