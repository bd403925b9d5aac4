"""Multi-dataset top-down models (ViTPose++): one backbone with task experts, one head per task.

A task is a dataset family with its keypoint set (COCO people, whole bodies, AP-10K animals ...).
:class:`MultiTaskTopDownConfig` lists the tasks; each names its keypoint set, its head (an index into
``heads``) and its backbone expert (``ViTConfig.num_experts``). Official ViTPose++ pairs task ``i``
with expert ``i`` and head ``i``; Hugging Face VitPose++ checkpoints share their one (COCO) head
between all experts, which the head index expresses without copies.

``model(images, dataset_index)`` takes the task per sample (an int or name for the whole batch, or a
tensor with one task index per sample): a single task gives that head's output ``[B, K_t, H, W]``; a
per-sample tensor gives ``[B, K_max, H, W]`` where each sample's channels beyond its own ``K_t`` are
zero (the batch is grouped by task once; each expert and head runs on its group).
``model.predict(crops, task=...)`` decodes one task; :meth:`MultiTaskTopDownEstimator.task_model`
gives a single-task view that the evaluation runner and predictor use like a plain model, and
:func:`poseforge.models.merge.merge_experts` folds one task into a plain ViTPose.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import PoseforgeError
from ..keypoints import KeypointSet, get_keypoint_set
from ..registry import BACKBONES, ESTIMATORS
from .backbones.vit import ExpertSegments
from .config import IMAGENET_MEAN, IMAGENET_STD, BackboneConfig, ConfigBase, HeadConfig, ModelConfig, TopDownConfig
from .estimator import PoseEstimator, Predictions
from .heads.multitask import MultiTaskHeads

__all__ = ["TaskConfig", "MultiTaskTopDownConfig", "MultiTaskTopDownEstimator", "TaskModel"]


@dataclasses.dataclass(frozen=True)
class TaskConfig(ConfigBase):
    """One task of a multi-dataset model.

    Attributes:
        name: the task's name (``"coco"``, ``"wholebody"``, ``"ap10k"`` ...), unique in the model.
        keypoint_set: its keypoint set (``poseforge.keypoints``).
        head: index into the model's ``heads`` (``None``: the task's own index).
        expert: backbone expert of the task (``None``: the task's own index; ignored without experts).
    """

    name: str
    keypoint_set: str
    head: int | None = None
    expert: int | None = None


@dataclasses.dataclass(frozen=True)
class MultiTaskTopDownConfig(ModelConfig):
    """A top-down model predicting several keypoint sets, one per task (ViTPose++).

    Attributes:
        backbone: the backbone config (a ``ViTConfig`` with ``num_experts`` task experts).
        heads: head configs; their output counts follow the tasks that use them.
        tasks: the tasks, in dataset-index order.
        codec: one codec for all tasks (``poseforge.codecs.create_codec`` keyword arguments).
        name, input_size, mean, std, flip_test: as in :class:`~poseforge.models.config.TopDownConfig`.
    """

    backbone: BackboneConfig
    heads: tuple[HeadConfig, ...]
    tasks: tuple[TaskConfig, ...]
    codec: dict = dataclasses.field(default_factory=dict, hash=False)
    name: str = "custom"
    input_size: tuple[int, int] = (192, 256)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    flip_test: bool = True
    type: str = "topdown-multitask"

    def __post_init__(self) -> None:
        where = "MultiTaskTopDownConfig"
        if not self.tasks:
            raise PoseforgeError(f"{where}.tasks: at least one task is needed")
        names = [t.name for t in self.tasks]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise PoseforgeError(f"{where}.tasks: duplicate task name(s) {', '.join(duplicates)}")
        experts = int(getattr(self.backbone, "num_experts", 1))
        for i, task in enumerate(self.tasks):
            get_keypoint_set(task.keypoint_set)  # unknown names fail here, naming the known ones
            h = self.head_index(i)
            if not 0 <= h < len(self.heads):
                raise PoseforgeError(f"{where}.tasks[{i}] ({task.name}): head {h} outside 0..{len(self.heads) - 1}")
            e = self.expert_index(i)
            if experts > 1 and not 0 <= e < experts:
                raise PoseforgeError(f"{where}.tasks[{i}] ({task.name}): expert {e} outside 0..{experts - 1}")
        for h in range(len(self.heads)):
            counts = {get_keypoint_set(t.keypoint_set).num_keypoints for i, t in enumerate(self.tasks) if self.head_index(i) == h}
            if not counts:
                raise PoseforgeError(f"{where}.heads[{h}]: no task uses this head")
            if len(counts) > 1:
                raise PoseforgeError(f"{where}.heads[{h}]: shared by tasks with different keypoint counts {sorted(counts)}")
        w, h = self.input_size
        if w <= 0 or h <= 0:
            raise PoseforgeError(f"{where}.input_size: expected positive (width, height), got {self.input_size}")

    # ----- task lookup -------------------------------------------------------------------------
    def head_index(self, task: int) -> int:
        t = self.tasks[task]
        return task if t.head is None else int(t.head)

    def expert_index(self, task: int) -> int:
        t = self.tasks[task]
        experts = int(getattr(self.backbone, "num_experts", 1))
        if experts == 1:
            return 0
        return task if t.expert is None else int(t.expert)

    def task_index(self, task: "int | str") -> int:
        """Index of a task given by index or name (one-line error listing the tasks otherwise)."""
        names = [t.name for t in self.tasks]
        if isinstance(task, (int, np.integer)) and not isinstance(task, bool):
            if 0 <= int(task) < len(self.tasks):
                return int(task)
        elif isinstance(task, str):
            if task in names:
                return names.index(task)
            if task.isdigit() and int(task) < len(names):
                return int(task)
        raise PoseforgeError(f"unknown task {task!r}; tasks: {', '.join(f'{i}={n}' for i, n in enumerate(names))}")

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tasks)

    @property
    def keypoint_set(self) -> str:
        """The first (default) task's keypoint set."""
        return self.tasks[0].keypoint_set


@ESTIMATORS.register("topdown-multitask")
class MultiTaskTopDownEstimator(PoseEstimator):
    """Backbone with task experts + one head per task; see the module doc for inputs and outputs."""

    config_class = MultiTaskTopDownConfig
    takes_dataset_index = True  # the training engine passes each sample's dataset index

    def __init__(self, config: MultiTaskTopDownConfig) -> None:
        super().__init__(config)
        self.keypoint_sets: tuple[KeypointSet, ...] = tuple(get_keypoint_set(t.keypoint_set) for t in config.tasks)
        self.keypoint_set = self.keypoint_sets[0]  # the default task's (single-model tools read this)
        self.backbone = BACKBONES.get(config.backbone.type)(config.backbone, input_size=config.input_size)
        feature_size = self.backbone.feature_size(config.input_size)
        outputs = [next(self.keypoint_sets[i].num_keypoints for i in range(len(config.tasks)) if config.head_index(i) == h)
                   for h in range(len(config.heads))]
        self.heads = MultiTaskHeads(config.heads, self.backbone.out_channels, outputs, feature_size, config.input_size)
        self.output_size = self.heads.output_size(feature_size)
        self._check_codec_heatmap_size(self.output_size)
        self.max_keypoints = max(ks.num_keypoints for ks in self.keypoint_sets)
        self._head_of = [config.head_index(i) for i in range(len(config.tasks))]
        self._expert_of = [config.expert_index(i) for i in range(len(config.tasks))]

    @property
    def num_tasks(self) -> int:
        return len(self.config.tasks)

    def num_keypoints_per_task(self) -> torch.Tensor:
        """``[T]`` keypoint counts (for per-task loss normalization of padded outputs)."""
        return torch.as_tensor([ks.num_keypoints for ks in self.keypoint_sets], dtype=torch.float32)

    # ----- forward ------------------------------------------------------------------------------
    def forward(self, images: torch.Tensor, dataset_index: "int | str | torch.Tensor | Sequence[int] | None" = None) -> torch.Tensor:
        """Heatmaps of normalized crops for one task (``[B, K_t, H, W]``) or per-sample tasks (``[B, K_max, H, W]``,
        zero beyond each sample's keypoints). ``None`` means task 0."""
        x = images.to(self.dtype)
        if isinstance(dataset_index, torch.Tensor) and dataset_index.ndim == 0:
            dataset_index = int(dataset_index)
        if dataset_index is None or isinstance(dataset_index, (int, str, np.integer)):
            task = self.config.task_index(0 if dataset_index is None else dataset_index)
            return self.heads[self._head_of[task]](self.backbone(x, self._expert_of[task]))
        segments = ExpertSegments.build(dataset_index, x.shape[0], self.num_tasks, "dataset_index")
        x = segments.sort(x)
        features = self.backbone(x, segments.relabel(self._expert_of))
        out = self.heads.forward_grouped(features, segments.relabel(self._head_of), self.max_keypoints)
        return segments.unsort(out)

    @torch.no_grad()
    def predict(self, images: torch.Tensor | np.ndarray, flip_test: bool | None = None, task: "int | str" = 0) -> Predictions:
        """Keypoints of task ``task`` in uint8 / 0-255 RGB crops ``[B,3,h,w]`` (flip test as ``TopDownEstimator``)."""
        t = self.config.task_index(task)
        flip_index = torch.as_tensor(self.keypoint_sets[t].flip_index, dtype=torch.long)
        return self._predict_crops(images, flip_test, lambda x: self(x, t), flip_index)

    def task_model(self, task: "int | str") -> "TaskModel":
        """A single-task view (shares this model's weights) usable wherever a plain top-down model is."""
        return TaskModel(self, self.config.task_index(task))

    def prepare_for_inference(self, dtype: torch.dtype | None = None, channels_last: bool = True) -> "MultiTaskTopDownEstimator":
        super().prepare_for_inference(dtype, channels_last=False)
        if channels_last:
            self.heads.to(memory_format=torch.channels_last)
        return self


class TaskModel(nn.Module):
    """One task of a :class:`MultiTaskTopDownEstimator`, behaving like a single-task top-down model
    (``forward``, ``predict``, ``normalize``, ``codec``, ``keypoint_set``, ``config``). Not saved by
    itself: save the multi-task model, or :func:`~poseforge.models.merge.merge_experts` it."""

    def __init__(self, model: MultiTaskTopDownEstimator, task: int) -> None:
        super().__init__()
        self.multitask = model
        self.task = int(task)
        self.keypoint_set = model.keypoint_sets[self.task]

    @property
    def config(self) -> TopDownConfig:
        parent: MultiTaskTopDownConfig = self.multitask.config
        return TopDownConfig(backbone=parent.backbone, head=parent.heads[parent.head_index(self.task)],
                             codec=dict(parent.codec), name=f"{parent.name}[{parent.tasks[self.task].name}]",
                             keypoint_set=self.keypoint_set.name, input_size=parent.input_size, mean=parent.mean,
                             std=parent.std, flip_test=parent.flip_test)

    @property
    def codec(self) -> Any:
        return self.multitask.codec

    @property
    def output_size(self) -> tuple[int, int] | None:
        return self.multitask.output_size

    @property
    def device(self) -> torch.device:
        return self.multitask.device

    @property
    def dtype(self) -> torch.dtype:
        return self.multitask.dtype

    def normalize(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        return self.multitask.normalize(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.multitask(images, self.task)

    def predict(self, images: torch.Tensor | np.ndarray, flip_test: bool | None = None) -> Predictions:
        return self.multitask.predict(images, flip_test=flip_test, task=self.task)
