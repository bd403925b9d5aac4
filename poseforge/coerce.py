"""Typed coercion of plain (YAML / JSON) data to annotated dataclass field types.

Shared by the model configs (``poseforge.models.config``) and the training configs
(``poseforge.train.config``) so that both accept and reject values by the same rules and messages.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Callable, Mapping, Union

from .errors import PoseforgeError

__all__ = ["coerce"]

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
