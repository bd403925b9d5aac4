"""Model configuration objects: frozen dataclasses that round-trip through plain JSON.

Every model part (backbone, head, whole estimator) has a config dataclass with a ``type`` field; the
``type`` picks the class from a registry (``BACKBONES``, ``NECKS``, ``HEADS``, ``ESTIMATORS``), so a new model
family plugs in by registering its classes, and ``config.json`` files written today load tomorrow.

``to_dict()`` gives JSON-ready data (tuples become lists); ``from_dict()`` types it back (lists become
tuples, nested part configs are rebuilt through their registry) and rejects unknown fields with a
one-line :class:`~poseforge.errors.PoseforgeError` naming the field.
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any, ClassVar, Mapping, TypeVar

from ..coerce import build_dataclass, coerce
import numpy as np

from ..errors import PoseforgeError
from ..keypoints import get_keypoint_set
from ..registry import BACKBONES, HEADS, MODEL_CONFIGS, NECKS, Registry

__all__ = ["ConfigBase", "PartConfig", "BackboneConfig", "NeckConfig", "HeadConfig", "ModelConfig", "TopDownConfig",
           "FeatureInfo",
           "TaskConfig", "TaskLookup", "MultiTaskTopDownConfig",
           "config_from_dict", "IMAGENET_MEAN", "IMAGENET_STD"]

C = TypeVar("C", bound="ConfigBase")

# RGB, 0-255 pixel scale (the ImageNet statistics every ViTPose / RTMPose config uses).
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


@dataclasses.dataclass(frozen=True)
class FeatureInfo:
    """One feature map a backbone returns (as timm's ``feature_info``): ``channels``, ``stride`` (input
    pixels per cell) and ``size`` (``(width, height)`` in cells for the model's input size)."""

    channels: int
    stride: int
    size: tuple[int, int]


class ConfigBase:
    """Mixin for frozen config dataclasses: JSON round trip and validated ``replace``."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (nested configs as dicts, tuples as lists)."""
        return {f.name: _to_plain(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any], where: str = "") -> C:
        """Build from :meth:`to_dict` output; values are coerced back to the annotated types."""
        return cls._build(data, where or cls.__name__)

    @classmethod
    def _build(cls: type[C], data: Mapping[str, Any], where: str) -> C:
        return build_dataclass(cls, data, where, _build_config, _is_config)

    def replace(self: C, **changes: Any) -> C:
        """Copy with some fields changed; unknown names are a :class:`PoseforgeError`."""
        names = {f.name for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        unknown = sorted(set(changes) - names)
        if unknown:
            raise PoseforgeError(f"{type(self).__name__} has no field(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        hints = typing.get_type_hints(type(self))
        typed = {k: _coerce(v, hints[k], f"{type(self).__name__}.{k}") for k, v in changes.items()}
        return dataclasses.replace(self, **typed)  # type: ignore[type-var]


class PartConfig(ConfigBase):
    """A config whose ``type`` field selects its implementation in ``registry``.

    The registered object (an ``nn.Module`` class) names its config dataclass in ``config_class``.
    """

    registry: ClassVar[Registry[Any]]

    @classmethod
    def config_class_of(cls, type_name: str) -> type:
        """The concrete config class of a ``type`` (the registered module's ``config_class``)."""
        return cls.registry.get(type_name).config_class

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any], where: str = "") -> C:
        if cls in _ABSTRACT_PARTS:  # dispatch on "type" to the concrete config class
            where = where or cls.__name__
            if not isinstance(data, Mapping) or "type" not in data:
                raise PoseforgeError(f"{where}: missing field 'type' (one of {', '.join(cls.registry.names())})")
            try:
                concrete = cls.config_class_of(str(data["type"]))
            except PoseforgeError as e:  # name the file and field, as every other config error does
                raise PoseforgeError(f"{where}.type: {e}") from None
            return concrete.from_dict(data, where)
        return cls._build(data, where or cls.__name__)  # type: ignore[attr-defined]


class BackboneConfig(PartConfig):
    """Base of backbone configs (``ViTConfig``, ...); concrete classes are frozen dataclasses."""

    registry = BACKBONES


class NeckConfig(PartConfig):
    """Base of neck configs (``CSPNeXtPAFPNConfig``, ...): an optional part that turns the backbone's maps
    into the maps the head reads. A neck module is built from the backbone's ``feature_info`` and exposes
    its own ``feature_info``; its config's ``feature_info(backbone_info)`` gives the same without building it."""

    registry = NECKS


class HeadConfig(PartConfig):
    """Base of head configs (``HeatmapHeadConfig``, ...)."""

    registry = HEADS


class ModelConfig(PartConfig):
    """Base of whole-model configs (``TopDownConfig``, ...); ``type`` picks the config class in
    ``MODEL_CONFIGS`` and the estimator class in ``ESTIMATORS`` (one estimator kind may take several
    config types: top-down models with one task or several)."""

    registry = MODEL_CONFIGS

    @classmethod
    def config_class_of(cls, type_name: str) -> type:
        return MODEL_CONFIGS.get(type_name)


_ABSTRACT_PARTS = (BackboneConfig, NeckConfig, HeadConfig, ModelConfig, PartConfig)


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


class TaskLookup:
    """Task lookup shared by the top-down configs: a single-task model has one task named after its
    keypoint set, head 0 and no expert; a multi-task model lists its tasks."""

    def task_list(self) -> tuple[TaskConfig, ...]:
        raise NotImplementedError

    def head_configs(self) -> tuple[HeadConfig, ...]:
        raise NotImplementedError

    def head_index(self, task: int) -> int:
        t = self.task_list()[task]
        return task if t.head is None else int(t.head)

    def expert_index(self, task: int) -> int:
        t = self.task_list()[task]
        experts = int(getattr(getattr(self, "backbone", None), "num_experts", 1))
        if experts == 1:
            return 0
        return task if t.expert is None else int(t.expert)

    def task_index(self, task: "int | str") -> int:
        """Index of a task given by index or name (one-line error listing the tasks otherwise)."""
        names = [t.name for t in self.task_list()]
        if isinstance(task, (int, np.integer)) and not isinstance(task, bool):
            if 0 <= int(task) < len(names):
                return int(task)
        elif isinstance(task, str):
            if task in names:
                return names.index(task)
            if task.isdigit() and int(task) < len(names):
                return int(task)
        raise PoseforgeError(f"unknown task {task!r}; tasks: {', '.join(f'{i}={n}' for i, n in enumerate(names))}")

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.task_list())


@dataclasses.dataclass(frozen=True)
class TopDownConfig(TaskLookup, ModelConfig):
    """A top-down single-person model: a person crop in, one keypoint set out.

    Attributes:
        backbone: backbone config (its ``type`` picks the class, e.g. ``"vit"``).
        head: head config (e.g. ``"heatmap"``); its output count follows ``keypoint_set``.
        codec: ``poseforge.codecs.create_codec`` keyword arguments, including ``"name"``.
        name: zoo name the config came from (informational).
        keypoint_set: keypoint set name (``poseforge.keypoints``).
        input_size: crop size ``(width, height)`` in pixels.
        mean, std: RGB normalization on the 0-255 scale, applied inside ``predict``.
        flip_test: default of ``predict(flip_test=None)``.
        neck: optional neck config between backbone and head (e.g. RTMW's ``"cspnext_pafpn"``); the head
            is then built from the neck's maps.
    """

    backbone: BackboneConfig
    head: HeadConfig
    codec: dict = dataclasses.field(default_factory=dict, hash=False)
    name: str = "custom"
    keypoint_set: str = "coco17"
    input_size: tuple[int, int] = (192, 256)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    flip_test: bool = True
    neck: NeckConfig | None = None
    type: str = "topdown"

    def __post_init__(self) -> None:
        w, h = self.input_size
        if w <= 0 or h <= 0:
            raise PoseforgeError(f"TopDownConfig.input_size: expected positive (width, height), got {self.input_size}")

    def task_list(self) -> tuple[TaskConfig, ...]:
        return (TaskConfig(self.keypoint_set, self.keypoint_set),)

    def head_configs(self) -> tuple[HeadConfig, ...]:
        return (self.head,)

    def head_index(self, task: int) -> int:
        return 0


@dataclasses.dataclass(frozen=True)
class MultiTaskTopDownConfig(TaskLookup, ModelConfig):
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

    def task_list(self) -> tuple[TaskConfig, ...]:
        return self.tasks

    def head_configs(self) -> tuple[HeadConfig, ...]:
        return self.heads

    @property
    def keypoint_set(self) -> str:
        """The first (default) task's keypoint set."""
        return self.tasks[0].keypoint_set


MODEL_CONFIGS.register("topdown", TopDownConfig)
MODEL_CONFIGS.register("topdown-multitask", MultiTaskTopDownConfig)


def config_from_dict(data: Mapping[str, Any], where: str = "config") -> ModelConfig:
    """Rebuild any registered model config from its ``to_dict()`` form (``type`` picks the class)."""
    return ModelConfig.from_dict(data, where)


def _to_plain(value: Any) -> Any:
    if isinstance(value, ConfigBase):
        return value.to_dict()
    if isinstance(value, (tuple, list)):
        return [_to_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _to_plain(v) for k, v in value.items()}
    return value


def _build_config(cls: type, value: Any, where: str) -> Any:
    return value if isinstance(value, cls) else cls.from_dict(value, where)


def _is_config(tp: type) -> bool:
    return issubclass(tp, ConfigBase)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Coerce JSON data to the annotated type ``tp`` (tuples, optionals, nested configs)."""
    return coerce(value, tp, where, _build_config, _is_config)