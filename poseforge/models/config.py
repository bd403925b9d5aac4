"""Model configuration objects: frozen dataclasses that round-trip through plain JSON.

Every model part (backbone, head, whole estimator) has a config dataclass with a ``type`` field; the
``type`` picks the class from a registry (``BACKBONES``, ``HEADS``, ``ESTIMATORS``), so a new model
family plugs in by registering its classes, and ``config.json`` files written today load tomorrow.

``to_dict()`` gives JSON-ready data (tuples become lists); ``from_dict()`` types it back (lists become
tuples, nested part configs are rebuilt through their registry) and rejects unknown fields with a
one-line :class:`~poseforge.errors.PoseforgeError` naming the field.
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any, ClassVar, Mapping, TypeVar

from ..coerce import coerce
from ..errors import PoseforgeError
from ..registry import BACKBONES, ESTIMATORS, HEADS, Registry

__all__ = ["ConfigBase", "PartConfig", "BackboneConfig", "HeadConfig", "ModelConfig", "TopDownConfig",
           "config_from_dict", "IMAGENET_MEAN", "IMAGENET_STD"]

C = TypeVar("C", bound="ConfigBase")

# RGB, 0-255 pixel scale (the ImageNet statistics every ViTPose / RTMPose config uses).
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


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
        if not isinstance(data, Mapping):
            raise PoseforgeError(f"{where}: expected an object, got {type(data).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise PoseforgeError(f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(fields)}")
        hints = typing.get_type_hints(cls)
        kwargs = {name: _coerce(value, hints[name], f"{where}.{name}") for name, value in data.items()}
        try:
            return cls(**kwargs)
        except TypeError as e:  # a required field is missing
            raise PoseforgeError(f"{where}: {e}") from None

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
    def from_dict(cls: type[C], data: Mapping[str, Any], where: str = "") -> C:
        if cls in _ABSTRACT_PARTS:  # dispatch on "type" to the concrete config class
            where = where or cls.__name__
            if not isinstance(data, Mapping) or "type" not in data:
                raise PoseforgeError(f"{where}: missing field 'type' (one of {', '.join(cls.registry.names())})")
            concrete = cls.registry.get(str(data["type"])).config_class
            return concrete.from_dict(data, where)
        return cls._build(data, where or cls.__name__)  # type: ignore[attr-defined]


class BackboneConfig(PartConfig):
    """Base of backbone configs (``ViTConfig``, ...); concrete classes are frozen dataclasses."""

    registry = BACKBONES


class HeadConfig(PartConfig):
    """Base of head configs (``HeatmapHeadConfig``, ...)."""

    registry = HEADS


class ModelConfig(PartConfig):
    """Base of whole-model configs (``TopDownConfig``, ...); ``type`` picks the estimator class."""

    registry = ESTIMATORS


_ABSTRACT_PARTS = (BackboneConfig, HeadConfig, ModelConfig, PartConfig)


@dataclasses.dataclass(frozen=True)
class TopDownConfig(ModelConfig):
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
    type: str = "topdown"

    def __post_init__(self) -> None:
        w, h = self.input_size
        if w <= 0 or h <= 0:
            raise PoseforgeError(f"TopDownConfig.input_size: expected positive (width, height), got {self.input_size}")


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