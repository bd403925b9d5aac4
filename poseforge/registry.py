"""Name -> builder tables (models, codecs, datasets, experiment presets), as in timm."""
from __future__ import annotations

import fnmatch
from typing import Any, Callable, Generic, Iterator, TypeVar

from .errors import PoseforgeError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table of builders (or plain values).

    ``register`` works as a decorator (``@MODELS.register("vitpose-b")``) or a call
    (``CODECS.register("udp", UDPHeatmap)``). Names are case-insensitive.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None, *, overwrite: bool = False) -> Any:
        def add(item: T) -> T:
            key = name.lower()
            if key in self._entries and not overwrite:
                raise PoseforgeError(f"{self.kind} '{name}' is already registered")
            self._entries[key] = item
            return item

        return add if obj is None else add(obj)

    def get(self, name: str) -> T:
        try:
            return self._entries[name.lower()]
        except KeyError:
            close = [n for n in self._entries if name.lower().split("-")[0] in n][:8]
            hint = f"; similar: {', '.join(close)}" if close else f"; known: {', '.join(sorted(self._entries))}"
            raise PoseforgeError(f"unknown {self.kind} '{name}'{hint}") from None

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching a shell-style ``pattern`` (e.g. ``"vitpose-*"``), sorted."""
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern.lower()))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)


MODELS: Registry[Callable[..., Any]] = Registry("model")
CODECS: Registry[Callable[..., Any]] = Registry("codec")
DATASETS: Registry[Callable[..., Any]] = Registry("dataset")
PRESETS: Registry[Any] = Registry("experiment preset")
BACKBONES: Registry[Any] = Registry("backbone")  # type name -> nn.Module class with .config_class
HEADS: Registry[Any] = Registry("head")
NECKS: Registry[Any] = Registry("neck")  # type name -> nn.Module class between a backbone and its head
ESTIMATORS: Registry[Any] = Registry("estimator")  # top-level config type -> estimator class (topdown, bottomup, dense)
MODEL_CONFIGS: Registry[Any] = Registry("model config")  # top-level config type -> config class
LOSSES: Registry[Any] = Registry("loss")  # loss name -> nn.Module class (chosen from a codec by default)
WEIGHTS: Registry[Any] = Registry("weights")  # arch.tag -> poseforge.hub.WeightsSpec
