"""The evaluator: run any estimator over an evaluation set and score it with the estimator's own metric.

It only calls the estimator protocol (:mod:`poseforge.models.estimators.base`): ``needs_boxes`` picks
the records (one per box, or one per image with its people and dense labels), ``transform(train=False)``
turns them into samples in DataLoader workers (decoding and cropping there), ``predict_batch`` predicts
in image pixels (flip test optional, bf16 autocast on CUDA) and ``metric(eval_set)`` scores. Under
``torch.distributed`` every process takes an equal share of the batches and all get the same stats.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..data.batch import collate
from ..data.evalsets import EvalSet
from ..data.records import ImageRecord
from ..device import autocast, unwrap_model

__all__ = ["EvalResult", "evaluate", "evaluation_batches", "predict_dataset", "model_height_error"]

log = logging.getLogger("poseforge")


@dataclasses.dataclass
class EvalResult:
    """Stats of an evaluation, the metric's primary stat and direction, and the scored results
    (COCO keypoint results after rescoring and OKS-NMS; empty for dense models)."""

    stats: dict[str, float]
    results: list[dict[str, Any]] = dataclasses.field(repr=False, default_factory=list)
    primary: str = "AP"
    higher_is_better: bool = True


class _Batches(torch.utils.data.Dataset):
    """Item ``i`` = the samples of records ``order[i*B:(i+1)*B]`` (images decoded or rendered once per item)."""

    def __init__(self, data: EvalSet, records: Sequence[Any], order: np.ndarray, batch_size: int, transform: Any) -> None:
        self.data, self.records, self.order, self.batch_size, self.transform = data, records, order, batch_size, transform
        self.dense = tuple(getattr(transform, "dense", ()))

    def __len__(self) -> int:
        return (len(self.order) + self.batch_size - 1) // self.batch_size

    def __getitem__(self, item: int) -> Any:
        jobs = self.order[item * self.batch_size:(item + 1) * self.batch_size]
        records = [self.records[int(j)] for j in jobs]
        ids = [int(r.image_id) for r in records]
        images = self.data.load_images(ids)
        labels = self.data.load_dense(ids) if self.dense and self.data.load_dense is not None else {}
        samples = []
        for j, record in zip(jobs, records):
            if labels and isinstance(record, ImageRecord):
                record = dataclasses.replace(record, dense=labels[int(record.image_id)])
            sample = self.transform(record, images[int(record.image_id)])
            sample["index"] = torch.tensor(int(j), dtype=torch.int64)
            samples.append(sample)
        return collate(samples)


def _dist_info() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def evaluation_batches(estimator: Any, data: EvalSet, *, task: Any = 0, batch_size: int = 64, num_workers: int = 0,
                       pin_memory: bool = False, rank: int = 0, world: int = 1) -> torch.utils.data.DataLoader:
    """The batches of ``data`` an estimator predicts on (this process's share, padded to equal shares
    by repeating the last record; samples carry their record ``index``)."""
    records = data.box_records() if estimator.needs_boxes else data.image_records()
    n = len(records)
    per_rank = (n + world - 1) // world if n else 0
    per_rank = (per_rank + batch_size - 1) // batch_size * batch_size if world > 1 else per_rank
    order = np.minimum(np.arange(rank * per_rank, (rank + 1) * per_rank), max(n - 1, 0))[: per_rank if n else 0]
    if num_workers > 0:
        import cv2

        cv2.setNumThreads(1)  # before forking: OpenCV's thread pool is not fork-safe (see train.data)
    transform = estimator.transform(False, task=task)
    return torch.utils.data.DataLoader(
        _Batches(data, records, order, batch_size, transform), batch_size=None, num_workers=num_workers,
        generator=torch.Generator(), pin_memory=pin_memory, worker_init_fn=_worker_init, persistent_workers=False)


def predict_dataset(model: torch.nn.Module, data: EvalSet, *, task: Any = 0, flip_test: bool | None = None,
                    batch_size: int = 64, num_workers: int = 0, device: torch.device | str | None = None,
                    progress: Callable[[int, int], None] | None = None, **metric_options: Any) -> Any:
    """Predict everything in ``data`` with ``model`` into its metric (``model.metric(data, task)``), gathered
    from every process under ``torch.distributed``; the metric is not computed yet."""
    estimator = unwrap_model(model)
    metric = estimator.metric(data, task=task, **metric_options)
    device = torch.device(device) if device is not None else next(estimator.parameters()).device
    rank, world = _dist_info()
    loader = evaluation_batches(estimator, data, task=task, batch_size=batch_size, num_workers=num_workers,
                                pin_memory=device.type == "cuda", rank=rank, world=world)
    total, done = len(loader.dataset.order), 0
    was_training = estimator.training
    estimator.eval()
    try:
        for batch in loader:
            batch = batch.to(device, non_blocking=True)
            with torch.no_grad(), autocast(device):
                predictions = estimator.predict_batch(batch, flip_test=flip_test, task=task)
            metric.update(predictions, batch)
            done += len(batch)
            if progress is not None:
                progress(done, total)
    finally:
        estimator.train(was_training)
    if world > 1:
        gathered: list[Any] = [None] * world
        torch.distributed.all_gather_object(gathered, metric.state())
        metric.merge(gathered)
    return metric


def evaluate(model: torch.nn.Module, data: EvalSet, *, task: Any = 0, flip_test: bool | None = None,
             batch_size: int = 64, num_workers: int = 0, device: torch.device | str | None = None,
             progress: Callable[[int, int], None] | None = None, **metric_options: Any) -> EvalResult:
    """Predict everything in ``data`` with ``model`` (an estimator, possibly DDP / compile wrapped) and score
    it with ``model.metric(data, task, **metric_options)``. Under ``torch.distributed`` all processes
    must call it; all get the same result. ``progress(done, total)`` is called after each batch."""
    metric = predict_dataset(model, data, task=task, flip_test=flip_test, batch_size=batch_size,
                             num_workers=num_workers, device=device, progress=progress, **metric_options)
    stats = metric.compute()
    if not data.gt.images:
        log.warning(f"{data.name}: nothing to predict on")
    return EvalResult(stats, list(getattr(metric, "results", [])), metric.primary, metric.higher_is_better)


def model_height_error(model: torch.nn.Module, data: EvalSet, *, flip_test: bool | None = True, task: Any = 0) -> float:
    """Median over people of :func:`~poseforge.evaluation.pck.height_normalized_errors` for a keypoint
    ``model`` in ``data``'s ground-truth boxes: a scale-free localization error that moves long before
    OKS AP does."""
    from ..errors import PoseforgeError
    from .pck import height_normalized_errors

    found = predict_dataset(model, data, task=task, flip_test=flip_test).predictions()
    people = {inst.instance_id: inst for inst in data.gt.instances}
    paired = found["instance_id"] >= 0
    if not paired.any():
        raise PoseforgeError(f"{data.name}: no predictions in ground-truth boxes to score")
    truth = [people[int(i)] for i in found["instance_id"][paired]]
    return float(np.median(height_normalized_errors(
        found["keypoints"][paired], np.stack([np.asarray(t.keypoints)[:, :2] for t in truth]),
        np.stack([np.asarray(t.visibility) > 0 for t in truth]), np.stack([np.asarray(t.bbox) for t in truth]))))
