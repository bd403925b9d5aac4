"""Multi-dataset training (ViTPose++): a ratio-mixed source over several datasets, each sample carrying
its dataset index (= the model's task index), padded keypoint targets, a task-balanced loss and
per-dataset validation.

The experiment lists its datasets in ``data.sources`` (one :class:`~poseforge.train.config.SourceSection`
each: the model task it trains, where its samples come from, its sampling ratio); the model is a
multi-task one (``vitpose++-*``). Within a batch the keypoints are padded to the largest keypoint set
(visibility 0), the model returns heatmaps padded the same way, and :class:`TaskBalancedHeatmapLoss`
averages each sample's error over its own task's keypoints, which is the official ViTPose++ loss
(the sum over heads of each head's masked MSE over the whole batch).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.datasets import MixedDataset
from ..data.readers import read_dataset
from ..data.records import PoseInstance
from ..data.transforms import TopDownTransform
from ..errors import PoseforgeError
from ..evaluation.runner import EvalSet, _FileImages, _gt_boxes, find_coco_split, synthetic_eval_set
from .config import SourceSection, TrainConfig
from .data import CocoSource, SyntheticSource, sample_seed

__all__ = ["FileSource", "MixedSource", "MixedSamples", "TaskBalancedHeatmapLoss", "build_mixed_source",
           "build_task_val_sets", "evaluate_task", "validate_tasks", "format_task_table", "SEED_STRIDE"]


SEED_STRIDE = 1_000_033  # synthetic source k renders from seed + k * SEED_STRIDE (k = 0 keeps the base seed)
_STREAM = 1 << 40  # index space of a fresh synthetic stream


class FileSource(CocoSource):
    """Instances of an annotation file in any ``poseforge.data.readers`` format (COCO-style or MPII)."""

    def __init__(self, annotations: str | Path, image_root: str | Path | None = None, fmt: str = "auto",
                 min_labeled: int = 1, keypoint_set: str | None = None) -> None:
        self.coco = read_dataset(annotations, fmt, image_root, keypoint_set=keypoint_set, skip_crowd=True,
                                 min_labeled=min_labeled)
        if not self.coco.instances:
            raise PoseforgeError(f"{annotations}: no training instances (non-crowd, >= {min_labeled} labeled keypoints)")
        self.keypoint_set = self.coco.keypoint_set
        self.name = str(annotations)
        for inst in self.coco.instances:
            inst.extras = {}


class MixedSource:
    """Several sources mixed by ratio (:class:`~poseforge.data.datasets.MixedDataset`); source ``k``
    trains task ``tasks[k]``, and every record it gives carries that dataset index."""

    def __init__(self, sources: Sequence[Any], tasks: Sequence[int], ratios: Sequence[float], length: int,
                 seed: int, unbounded: Sequence[bool]) -> None:
        self.sources = list(sources)
        self.tasks = [int(t) for t in tasks]
        self.mix = MixedDataset([None if u else len(s) for s, u in zip(self.sources, unbounded)], ratios, length, seed)
        self.keypoint_sets = [s.keypoint_set for s in self.sources]
        self.name = "mix(" + ", ".join(f"{s.name} x{r:g}" for s, r in zip(self.sources, ratios)) + ")"

    def __len__(self) -> int:
        return len(self.mix)

    def load(self, indices: Sequence[int]) -> list[tuple[PoseInstance, np.ndarray, int]]:
        """``(record, image, source)`` triples in the order of ``indices``; each source loads its share at once."""
        source, local = self.mix.locate(indices)
        out: list[Any] = [None] * len(source)
        for k in np.unique(source):
            rows = np.flatnonzero(source == k)
            for row, (inst, image) in zip(rows, self.sources[int(k)].load(local[rows].tolist())):
                out[row] = (inst.copy(dataset_index=self.tasks[int(k)]), image, int(k))
        return out


class MixedSamples(torch.utils.data.Dataset):
    """Keys ``(epoch, position, index)`` -> top-down samples of a :class:`MixedSource`, each cropped
    with its own keypoint set's transform, keypoints and visibility zero-padded to ``max_keypoints``."""

    raw = False  # crops are made here (CPU workers), never deferred to the GPU

    def __init__(self, source: MixedSource, transforms: Sequence[TopDownTransform], seed: int, max_keypoints: int) -> None:
        self.source, self.transforms, self.seed, self.max_keypoints = source, list(transforms), int(seed), int(max_keypoints)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: tuple[int, int, int]) -> dict[str, Tensor]:
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: Sequence[tuple[int, int, int]]) -> list[dict[str, Tensor]]:
        triples = self.source.load([int(k[2]) for k in keys])
        samples = []
        for (inst, image, k), (epoch, position, _) in zip(triples, keys):
            generator = torch.Generator().manual_seed(sample_seed(self.seed, epoch, position))
            sample = self.transforms[k](inst, image, generator=generator)
            pad = self.max_keypoints - sample["keypoints"].shape[0]
            sample["keypoints"] = F.pad(sample["keypoints"], (0, 0, 0, pad))
            sample["visibility"] = F.pad(sample["visibility"], (0, pad))
            samples.append(sample)
        return samples


class TaskBalancedHeatmapLoss(nn.Module):
    """Heatmap MSE of padded multi-task outputs, each sample averaged over its own task's keypoints.

    ``mean_b( sum_{k < K_b} w_bk * mean_hw((out - target)^2) / K_b )`` with ``w`` the target weights
    (1 when the base loss does not use them). ``targets`` must hold ``dataset_index``.
    """

    def __init__(self, keypoints_per_task: Tensor, use_target_weight: bool = True, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("keypoints_per_task", torch.as_tensor(keypoints_per_task, dtype=torch.float32), persistent=False)
        self.use_target_weight = use_target_weight
        self.loss_weight = loss_weight

    def forward(self, outputs: Tensor, targets: dict[str, Tensor]) -> Tensor:
        heatmaps = targets["heatmaps"]
        if outputs.shape != heatmaps.shape:
            raise PoseforgeError(f"task-balanced loss: outputs {list(outputs.shape)} and targets {list(heatmaps.shape)} differ")
        k = self.keypoints_per_task.to(outputs.device)[targets["dataset_index"].to(outputs.device)]  # [B]
        channels = torch.arange(outputs.shape[1], device=outputs.device)
        weight = (channels[None, :] < k[:, None]).float()
        if self.use_target_weight:
            weight = weight * targets["target_weights"]
        error = (outputs.float() - heatmaps).square().mean(dim=(2, 3))  # [B, K]
        return ((error * weight).sum(1) / k).mean() * self.loss_weight


# ---------------------------------------------------------------------------------------------- building
def _task_of(model: nn.Module, source: SourceSection, where: str) -> int:
    try:
        return model.config.task_index(source.task)
    except PoseforgeError as e:
        raise PoseforgeError(f"{where}.task: {e}") from None


def build_mixed_source(config: TrainConfig, model: nn.Module) -> MixedSource:
    """The training mix ``config.data.sources`` describes, for the multi-task ``model``."""
    data = config.data
    s = data.synthetic
    sources, tasks, ratios, unbounded = [], [], [], []
    for k, src in enumerate(data.sources):
        where = f"data.sources[{k}]"
        t = _task_of(model, src, where)
        ks = model.keypoint_sets[t].name
        if src.train.lower() == "synthetic":
            count = _STREAM if s.fresh else s.train_images
            source = SyntheticSource(count, s.seed + k * SEED_STRIDE, s.image_size, s.people, ks, s.clutter,
                                     cache=not s.fresh)
            source.name = f"synthetic {ks} (seed {s.seed + k * SEED_STRIDE})"
            unbounded.append(s.fresh)
        else:
            path = Path(src.train)
            annotations, root = (find_coco_split(path, "train") if path.is_dir() else (path, None))
            source = FileSource(annotations, src.image_root or root, src.format, data.min_labeled, ks)
            if source.keypoint_set.name != ks:
                raise PoseforgeError(f"{where}: {annotations} has {source.keypoint_set.name} keypoints but task "
                                     f"'{src.task}' predicts {ks}")
            unbounded.append(False)
        sources.append(source)
        tasks.append(t)
        ratios.append(src.ratio)
    finite = [len(src) for src, u in zip(sources, unbounded) if not u]
    length = sum(finite) if len(finite) == len(sources) else max(s.train_images, 1)
    return MixedSource(sources, tasks, ratios, length, config.seed, unbounded)


def mixed_transforms(model: nn.Module, source: MixedSource, use_udp: bool, augment: Any) -> list[TopDownTransform]:
    return [TopDownTransform(tuple(model.config.input_size), ks, use_udp=use_udp, augment=augment)
            for ks in source.keypoint_sets]


def build_task_val_sets(config: TrainConfig, model: nn.Module) -> list[tuple[int, EvalSet]]:
    """One validation set per source: ``(task index, EvalSet)`` (held-out synthetic, or the val split /
    file of the source; ground-truth boxes)."""
    data = config.data
    s = data.synthetic
    out = []
    for k, src in enumerate(data.sources):
        t = _task_of(model, src, f"data.sources[{k}]")
        ks = model.keypoint_sets[t].name
        spec = src.val if src.val is not None else src.train
        if spec.lower() == "synthetic":
            eval_set = synthetic_eval_set(num_images=s.val_images, seed=s.val_seed + k * SEED_STRIDE, image_size=s.image_size,
                                          people=s.val_people, keypoint_set=ks, clutter=s.clutter)
        else:
            path = Path(spec)
            annotations, root = find_coco_split(path, "val") if path.is_dir() else (path, None)
            eval_set = _records_eval_set(annotations, src, root, ks)
        out.append((t, eval_set))
    return out


def _records_eval_set(annotations: Path, src: SourceSection, root: Path | None, keypoint_set: str) -> EvalSet:
    """Ground-truth boxes of an annotation file in any reader format."""
    gt = read_dataset(annotations, src.format, src.image_root or root, keypoint_set=keypoint_set)
    if gt.keypoint_set.name != keypoint_set:
        raise PoseforgeError(f"{annotations}: {gt.keypoint_set.name} keypoints, but the task predicts {keypoint_set}")
    ids, boxes, scores = _gt_boxes(gt)
    return EvalSet(str(annotations), gt, ids, boxes, scores, clip_boxes=True,
                   load_images=_FileImages({i: info.path for i, info in gt.images.items()}))


def evaluate_task(model: nn.Module, eval_set: EvalSet, *, pck_thr: float = 0.2, flip_test: bool | None = None,
                  batch_size: int = 64, num_workers: int = 0, device: Any = None) -> dict[str, float]:
    """COCO OKS AP/AR of ``model`` on ``eval_set`` (as :func:`~poseforge.evaluation.runner.evaluate_model`)
    plus, with ground-truth boxes, ``PCK@thr`` (the share of labeled keypoints within ``thr`` x the box's
    longer side) and ``EPE`` (mean pixel error of the labeled keypoints). Small synthetic crops make
    OKS strict (tiny areas); PCK and EPE show the learning there."""
    from ..evaluation.coco import evaluate_keypoints
    from ..evaluation.pck import keypoint_epe, pck_accuracy
    from ..evaluation.postprocess import oks_nms, rescore_results
    from ..evaluation.runner import predict_boxes

    raw = predict_boxes(model, eval_set, flip_test=flip_test, batch_size=batch_size, num_workers=num_workers, device=device)
    results = oks_nms(rescore_results(raw, "bbox_keypoint", 0.2), 0.9, eval_set.gt.keypoint_set)
    stats = {k: float(v) for k, v in evaluate_keypoints(eval_set.gt, results, eval_set.gt.keypoint_set.name).items()}
    if eval_set.clip_boxes and raw:  # ground-truth boxes: predictions are in the ground truth's box order
        order = {image_id: n for n, image_id in enumerate(eval_set.gt.images)}
        gt = sorted((i for i in eval_set.gt.instances if not i.iscrowd), key=lambda i: order[i.image_id])
        pred = np.stack([np.asarray(r["keypoints"], dtype=np.float64).reshape(-1, 3)[:, :2] for r in raw])
        truth = np.stack([i.keypoints for i in gt])
        mask = np.stack([i.visibility > 0 for i in gt])
        side = np.asarray([max(float(i.bbox[2]), float(i.bbox[3])) for i in gt])
        _, pck, _ = pck_accuracy(pred, truth, mask, thr=pck_thr, normalize=np.stack([side, side], 1))
        stats[f"PCK@{pck_thr:g}"] = float(pck)
        stats["EPE"] = float(keypoint_epe(pred, truth, mask))
    return stats


def validate_tasks(model: nn.Module, val_sets: Sequence[tuple[int, EvalSet]], **kwargs: Any) -> dict[str, float]:
    """COCO AP (and PCK@0.2) of every task on its validation set: ``{"<task>/AP": ..., ...}`` plus
    ``AP`` (and the other summary stats) averaged over the tasks."""
    from .optim import unwrap_model

    estimator = unwrap_model(model)
    stats: dict[str, float] = {}
    per_task: dict[str, dict[str, float]] = {}
    for t, eval_set in val_sets:
        name = estimator.config.tasks[t].name
        per_task[name] = evaluate_task(estimator.task_model(t), eval_set, **kwargs)
        stats.update({f"{name}/{k}": v for k, v in per_task[name].items()})
    for key in ("AP", "AP50", "AP75", "AR", "PCK@0.2", "EPE"):
        values = [v[key] for v in per_task.values() if key in v]
        if values:
            stats[key] = float(np.mean(values))
    return stats


def format_task_table(stats: dict[str, float], title: str = "") -> str:
    """Per-dataset AP table of :func:`validate_tasks` stats (one row per task, then the mean)."""
    tasks = list(dict.fromkeys(k.split("/", 1)[0] for k in stats if "/" in k))
    columns = ("AP", "AP50", "AP75", "AR", "PCK@0.2", "EPE")
    width = max([len(t) for t in tasks] + [len("mean")])
    lines = [title] if title else []
    lines.append(f"{'task':<{width}}  " + "  ".join(f"{c:>7}" for c in columns))
    for t in tasks:
        lines.append(f"{t:<{width}}  " + "  ".join(_cell(stats.get(f"{t}/{c}")) for c in columns))
    lines.append(f"{'mean':<{width}}  " + "  ".join(_cell(stats.get(c)) for c in columns))
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    return f"{value:7.4f}" if value is not None and not math.isnan(value) else f"{'-':>7}"
