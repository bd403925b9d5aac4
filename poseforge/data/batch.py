"""Batches: sample dicts stacked along a first dimension, for every estimator kind.

A sample is a dict of tensors (and plain values) that a transform made: a top-down crop
(``image``, ``keypoints [K, 2]``, ``visibility [K]``, ``matrix`` ...), a whole image with all its
people (``keypoints [N, K, 2]``, ``valid [N]`` ...) or an image with dense labels (``seg``, ``depth``
...). :func:`collate` stacks them into a :class:`Batch`; tensors whose first dimension differs
between samples (a variable number of people, or of keypoints in a multi-dataset batch) are
zero-padded to the longest, so padding is unlabeled (visibility 0, ``valid`` False).
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import PoseforgeError

__all__ = ["Batch", "collate"]


class Batch(Mapping[str, Any]):
    """Named fields of B stacked samples; read them as attributes (``batch.image``) or keys.

    Tensors have the batch first; non-tensor values are lists of B. ``image`` (uint8 or 0-255 float
    ``[B, 3, h, w]``) is present in every batch and gives its length.
    """

    __slots__ = ("_fields",)

    def __init__(self, fields: Mapping[str, Any]) -> None:
        if "image" not in fields:
            raise PoseforgeError(f"Batch: no 'image' field (fields: {', '.join(sorted(fields))})")
        object.__setattr__(self, "_fields", dict(fields))

    @classmethod
    def from_dict(cls, batched: Mapping[str, Any]) -> "Batch":
        """A Batch from an already batched dict (e.g. ``TopDownTransform.apply_batch``'s result)."""
        return cls(batched)

    def __reduce__(self) -> tuple:
        return Batch, (self._fields,)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "_fields":  # not a field (pickling, copying look these up)
            raise AttributeError(name)
        try:
            return self._fields[name]
        except KeyError:
            raise AttributeError(f"the batch has no field '{name}' (fields: {', '.join(sorted(self._fields))})") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Batch fields are read-only; use replace(**fields)")

    def __getitem__(self, key: str) -> Any:
        return self._fields[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return int(self._fields["image"].shape[0])

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}={list(v.shape) if isinstance(v, Tensor) else type(v).__name__}" for k, v in self._fields.items())
        return f"Batch({shapes})"

    def as_dict(self) -> dict[str, Any]:
        return dict(self._fields)

    def replace(self, **fields: Any) -> "Batch":
        """A copy with some fields added or replaced."""
        return Batch({**self._fields, **fields})

    def _map(self, fn: Callable[[Tensor], Tensor]) -> "Batch":
        return Batch({k: fn(v) if isinstance(v, Tensor) else v for k, v in self._fields.items()})

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        """Every tensor moved to ``device``."""
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "Batch":
        """Called by ``DataLoader(pin_memory=True)``."""
        return self._map(lambda t: t.pin_memory())


def _stack(key: str, values: list[Tensor]) -> Tensor:
    shapes = {tuple(v.shape) for v in values}
    if len(shapes) == 1:
        return torch.stack(values)
    if len({len(s) for s in shapes}) > 1 or len({s[1:] for s in shapes}) > 1:
        raise PoseforgeError(f"collate: field '{key}' has different shapes across samples: {sorted(shapes)}")
    longest = max(v.shape[0] for v in values)
    return torch.stack([F.pad(v, (0, 0) * (v.ndim - 1) + (0, longest - v.shape[0])) if v.shape[0] < longest else v
                        for v in values])


def collate(samples: Sequence[Mapping[str, Any]]) -> Batch:
    """Stack sample dicts into a :class:`Batch` (a DataLoader's ``collate_fn``): tensors are stacked
    (zero-padded along their first dimension where it differs), other values kept as lists."""
    if len(samples) == 0:
        raise PoseforgeError("collate: no samples")
    keys = list(samples[0])
    for i, s in enumerate(samples):
        if set(s) != set(keys):
            raise PoseforgeError(f"collate: sample {i} has keys {sorted(s)}, sample 0 has {sorted(keys)}")
    batched: dict[str, Any] = {}
    for key in keys:
        values = [s[key] for s in samples]
        batched[key] = _stack(key, values) if isinstance(values[0], Tensor) else values
    return Batch(batched)
