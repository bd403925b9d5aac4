"""Exceptions that the CLI turns into one clear line and a non-zero exit code."""
from __future__ import annotations


class PoseforgeError(Exception):
    """Base class of every error poseforge raises on purpose (bad input, bad configuration)."""


class DataError(PoseforgeError, ValueError):
    """Invalid dataset content. The message names the file, the record and the field.

    Build it with :func:`data_error` so every message has the same shape:
    ``"ann.json: annotation 42: field 'keypoints': expected 51 numbers, got 50"``.
    """


def data_error(file: object, record: str | None, field: str | None, problem: str) -> DataError:
    """Return a :class:`DataError` whose message locates the problem precisely."""
    parts = [str(file)]
    if record is not None:
        parts.append(record)
    if field is not None:
        parts.append(f"field '{field}'")
    parts.append(problem)
    return DataError(": ".join(parts))
