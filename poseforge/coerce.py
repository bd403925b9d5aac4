"""Typed coercion of plain (YAML / JSON) data to annotated dataclass field types: the one config coercer.

Shared by the model configs (``poseforge.models.config``) and the training configs
(``poseforge.train.config``) so that both accept and reject values by the same rules and messages:
:func:`build_dataclass` builds a config dataclass from a mapping, :func:`coerce` checks one value.
"""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Any, Callable, Mapping, TypeVar, Union

from .errors import PoseforgeError

__all__ = ["coerce", "build_dataclass", "parse_size", "parse_range"]

T = TypeVar("T")

# Builds a config of type ``cls`` from ``value`` (a mapping or an instance); ``where`` names the field.
BuildDataclass = Callable[[type, Any, str], Any]


def coerce(value: Any, tp: Any, where: str, build: BuildDataclass,
           is_nested: Callable[[type], bool] = dataclasses.is_dataclass) -> Any:
    """Check and convert ``value`` to the annotated type ``tp``.

    Lists become tuples, optionals and unions are tried in order, nested config classes (those
    ``is_nested`` accepts) go through ``build``; a mismatch raises a one-line :class:`PoseforgeError`
    naming ``where``.
    """
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(value, arg, where, build, is_nested)
            except PoseforgeError as e:
                errors.append(str(e))
        raise PoseforgeError(errors[0] if errors else f"{where}: unexpected value {value!r}")
    if isinstance(tp, type) and is_nested(tp):
        return build(tp, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise PoseforgeError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(v, args[0], f"{where}[{i}]", build, is_nested) for i, v in enumerate(value))
        if len(args) != len(value):
            raise PoseforgeError(f"{where}: expected {len(args)} values, got {len(value)} ({list(value)})")
        return tuple(coerce(v, a, f"{where}[{i}]", build, is_nested) for i, (a, v) in enumerate(zip(args, value)))
    if tp is dict or origin is dict:
        if not isinstance(value, Mapping):
            raise PoseforgeError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise PoseforgeError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and not value.is_integer()):
            raise PoseforgeError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise PoseforgeError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise PoseforgeError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def build_dataclass(cls: type[T], data: Any, where: str, build: BuildDataclass,
                    is_nested: Callable[[type], bool] = dataclasses.is_dataclass) -> T:
    """``cls(**data)`` with every value coerced to its annotated type; ``data`` may already be a ``cls``.

    Unknown fields, a non-mapping and a missing required field are each a one-line
    :class:`PoseforgeError` naming ``where``; nested config fields go through ``build``.
    """
    if isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        raise PoseforgeError(f"{where}: expected a mapping of {cls.__name__} fields, got {type(data).__name__} {data!r:.60}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(map(str, data)) - set(fields))
    if unknown:
        raise PoseforgeError(f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {name: coerce(value, hints[name], f"{where}.{name}", build, is_nested) for name, value in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:  # a required field is missing
        raise PoseforgeError(f"{where}: {e}") from None


def parse_size(text: str) -> tuple[int, int]:
    """``"192x256"`` (or ``"192,256"``) -> ``(192, 256)``: width, height; a ``ValueError`` otherwise.
    The one size parser of the commands and the ``synthetic:size=...`` specs."""
    parts = re.split(r"[x,]", str(text).strip().lower())
    try:
        w, h = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"expected WIDTHxHEIGHT (e.g. 640x480), got '{text}'") from None
    if w <= 0 or h <= 0:
        raise ValueError(f"expected a positive WIDTHxHEIGHT, got '{text}'")
    return w, h


def parse_range(text: str) -> tuple[int, int]:
    """``"1-4"`` -> ``(1, 4)``, ``"2"`` -> ``(2, 2)``; a ``ValueError`` otherwise."""
    try:
        parts = [int(v) for v in str(text).split("-")]
    except ValueError:
        raise ValueError(f"expected N or MIN-MAX (e.g. 1-4), got '{text}'") from None
    if len(parts) not in (1, 2):
        raise ValueError(f"expected N or MIN-MAX (e.g. 1-4), got '{text}'")
    return (parts[0], parts[0]) if len(parts) == 1 else (parts[0], parts[1])
