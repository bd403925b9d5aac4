"""One-line checks of the values the runtime reads from files and options (metadata fields, codec settings,
command-line numbers): each bad value is a :class:`~poseforge.errors.PoseforgeError` naming the file and the
field, never a ``TypeError`` / ``OverflowError`` from deep inside numpy or onnxruntime."""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import PoseforgeError, data_error

__all__ = ["Fields", "check_codec", "short", "first_line", "MAX_INPUT_SIDE"]

# Larger model inputs are certainly a corrupt value: the buffers they would need run out of memory first.
MAX_INPUT_SIDE = 16384
# Heatmap decodes blur with a kernel growing with sigma (20 * sigma / 3 pixels); codecs use sigma 1.5 - 6.
MAX_SIGMA = 50.0
MAX_BLUR_KERNEL = 255


def short(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters (one line: repr escapes newlines and line separators)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def first_line(error: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type name when it has none), cut to ``limit``."""
    text = str(error).strip()
    return text.splitlines()[0][:limit] if text else type(error).__name__


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


class Fields:
    """Checks of one record's fields, raising ``"FILE: RECORD: field 'NAME': PROBLEM"`` (a
    :class:`~poseforge.errors.DataError`) or, with ``label="option"``, ``"FILE: option 'NAME': PROBLEM"``."""

    def __init__(self, file: Any, record: str | None = None, label: str = "field") -> None:
        self.file, self.record, self.label = file, record, label

    def error(self, name: str, problem: str) -> PoseforgeError:
        if self.label == "field":
            return data_error(self.file, self.record, name, problem)
        record = f"{self.record}: " if self.record else ""
        return PoseforgeError(f"{self.file}: {record}{self.label} '{name}': {problem}")

    def number(self, value: Any, name: str, *, positive: bool = False, minimum: float | None = None,
               maximum: float | None = None) -> float:
        """A finite number (bools and strings refused) within the bounds."""
        if not _is_number(value):
            raise self.error(name, f"expected a number, got {short(value)}")
        try:
            number = float(value)
        except OverflowError:
            raise self.error(name, f"number out of range: {short(value)}") from None
        if not math.isfinite(number):
            raise self.error(name, f"expected a finite number, got {short(value)}")
        if positive and number <= 0:
            raise self.error(name, f"expected a positive number, got {short(value)}")
        if minimum is not None and number < minimum:
            raise self.error(name, f"expected a number >= {minimum:g}, got {short(value)}")
        if maximum is not None and number > maximum:
            raise self.error(name, f"expected a number <= {maximum:g}, got {short(value)}")
        return number

    def integer(self, value: Any, name: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
        """An integer (integral floats such as ``48.0`` accepted; bools, strings and fractions refused)."""
        number = self.number(value, name)
        if number != int(number):
            raise self.error(name, f"expected an integer, got {short(value)}")
        if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
            bounds = f"{minimum if minimum is not None else '-inf'}..{maximum if maximum is not None else 'inf'}"
            raise self.error(name, f"expected an integer in {bounds}, got {short(value)}")
        return int(number)

    def boolean(self, value: Any, name: str) -> bool:
        if not isinstance(value, (bool, np.bool_)):
            raise self.error(name, f"expected true or false, got {short(value)}")
        return bool(value)

    def text(self, value: Any, name: str) -> str:
        if not isinstance(value, str):
            raise self.error(name, f"expected a string, got {short(value)}")
        return value

    def sequence(self, value: Any, name: str, length: int | None = None) -> list[Any]:
        """A list or tuple (strings, dicts and sets refused), of ``length`` items when given."""
        if not isinstance(value, (list, tuple, np.ndarray)) or (isinstance(value, np.ndarray) and value.ndim != 1):
            raise self.error(name, f"expected a list, got {short(value)}")
        items = list(value)
        if length is not None and len(items) != length:
            raise self.error(name, f"expected {length} values, got {short(value)}")
        return items

    def mapping(self, value: Any, name: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.error(name, f"expected an object, got {short(value)}")
        return value

    def size(self, value: Any, name: str) -> tuple[int, int]:
        """A model input ``(width, height)``: two positive integers."""
        if not isinstance(value, (list, tuple, np.ndarray)) or len(value) != 2:
            raise self.error(name, f"expected (width, height), got {short(value)}")
        w, h = (self.integer(v, name, minimum=1, maximum=MAX_INPUT_SIDE) for v in value)
        return w, h

    def triple(self, value: Any, name: str, *, positive: bool = False) -> tuple[float, float, float]:
        """Three finite numbers, one per channel (``positive``: each > 0, as a std)."""
        if not isinstance(value, (list, tuple, np.ndarray)) or len(value) != 3:
            raise self.error(name, f"expected 3 numbers (one per channel), got {short(value)}")
        a, b, c = (self.number(v, name, positive=positive) for v in value)
        return a, b, c

    def indices(self, value: Any, name: str, count: int | None) -> tuple[int, ...]:
        """Keypoint indices (in ``0..count - 1`` when ``count`` is known)."""
        out = tuple(self.integer(v, name) for v in self.sequence(value, name))
        bad = [i for i in out if i < 0 or (count is not None and i >= count)]
        if bad:
            among = f" for {count} keypoints" if count is not None else ""
            raise self.error(name, f"keypoint index out of range{among}: {bad[0]}")
        return out


def check_codec(value: Any, fields: Fields, name: str = "codec") -> dict[str, Any]:
    """The codec settings the runtime decodes with (``name``, ``split_ratio``, ``decode_window``,
    ``decode_beta``, ``sigma``, ``blur_kernel_size``, ``max_people``), checked; other keys kept as they are."""
    settings = dict(fields.mapping(value, name))
    if "name" in settings:
        settings["name"] = fields.text(settings["name"], f"{name}.name")
    if "split_ratio" in settings:
        settings["split_ratio"] = fields.number(settings["split_ratio"], f"{name}.split_ratio", positive=True)
    if settings.get("decode_window") is not None:
        settings["decode_window"] = fields.number(settings["decode_window"], f"{name}.decode_window", minimum=0.0)
    if "decode_beta" in settings:
        settings["decode_beta"] = fields.number(settings["decode_beta"], f"{name}.decode_beta", positive=True)
    if "sigma" in settings:
        sigma = settings["sigma"]
        if _is_number(sigma):
            settings["sigma"] = fields.number(sigma, f"{name}.sigma", positive=True, maximum=MAX_SIGMA)
        else:
            values = fields.sequence(sigma, f"{name}.sigma")
            if len(values) not in (1, 2):
                raise fields.error(f"{name}.sigma", f"expected a number or (sigma_x, sigma_y), got {short(sigma)}")
            sigmas = [fields.number(v, f"{name}.sigma", positive=True, maximum=MAX_SIGMA) for v in values]
            settings["sigma"] = sigmas if len(sigmas) == 2 else sigmas[0]  # [s] is s on both axes
    if settings.get("blur_kernel_size") is not None:
        kernel = fields.integer(settings["blur_kernel_size"], f"{name}.blur_kernel_size", minimum=1,
                                maximum=MAX_BLUR_KERNEL)
        if kernel % 2 == 0:
            raise fields.error(f"{name}.blur_kernel_size", f"expected an odd number, got {kernel}")
        settings["blur_kernel_size"] = kernel
    if "max_people" in settings:
        settings["max_people"] = fields.integer(settings["max_people"], f"{name}.max_people", minimum=1)
    return settings
