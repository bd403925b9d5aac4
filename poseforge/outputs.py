"""Named outputs: what heads return (one small dataclass per kind) and what estimators predict.

Head outputs (raw, in the model-input frame, batch first):

* :class:`Heatmaps` - ``heatmaps [B, K, H, W]`` (ViTPose, SimpleBaseline);
* :class:`SimCCLogits` - ``simcc_x [B, K, Wx]``, ``simcc_y [B, K, Hy]`` and the ``keypoint_maps``
  ``[B, K, h, w]`` the two classifiers read (RTMPose-style heads; the maps feed an optional dense loss);
* :class:`HeatmapsTags` - ``heatmaps [B, K, H, W]`` + associative-embedding ``tags [B, K*D, H, W]``
  (bottom-up: every person of an image at once), optionally ``heatmaps_hr`` at twice the resolution;
* :class:`DenseMaps` - any of ``seg [B, C, H, W]`` (logits), ``depth [B, 1, H, W]``, ``normals [B, 3, H, W]``.

They are registered as pytree nodes, so ``torch.compile``, DDP and ``torch.utils._pytree`` see their
tensors. :meth:`HeadOutput.map` applies a function to every tensor (flip-test merges, dtype casts),
:meth:`HeadOutput.split` cuts the batch.

:class:`Predictions` are decoded results, padded per image: ``keypoints [B, N, K, 2]``,
``scores [B, N, K]``, ``valid [B, N]`` (top-down: N = 1 per crop), optional instance scores, boxes,
areas and track ids, and ``dense`` maps for dense tasks.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, TypeVar

import torch
from torch import Tensor
from torch.utils import _pytree as pytree

from .errors import PoseforgeError

__all__ = ["HeadOutput", "Heatmaps", "SimCCLogits", "HeatmapsTags", "DenseMaps", "Predictions", "merge_outputs"]

O = TypeVar("O", bound="HeadOutput")


class HeadOutput:
    """Base of the named head outputs: dataclasses whose fields are tensors (or ``None``)."""

    def tensors(self) -> dict[str, Tensor]:
        """The fields that hold a tensor, by name."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)  # type: ignore[arg-type]
                if isinstance(getattr(self, f.name), Tensor)}

    def map(self: O, fn: Callable[[Tensor], Tensor]) -> O:
        """A copy with ``fn`` applied to every tensor field (``None`` stays ``None``)."""
        return dataclasses.replace(self, **{k: fn(v) for k, v in self.tensors().items()})  # type: ignore[type-var]

    def float(self: O) -> O:
        return self.map(lambda t: t.float())

    def split(self: O, n: int) -> tuple[O, O]:
        """The first ``n`` samples and the rest."""
        return self.map(lambda t: t[:n]), self.map(lambda t: t[n:])

    @property
    def batch_size(self) -> int:
        first = next(iter(self.tensors().values()), None)
        return 0 if first is None else int(first.shape[0])


def merge_outputs(a: O, b: O, fn: Callable[[Tensor, Tensor], Tensor]) -> O:
    """``fn`` applied field by field to two outputs of one kind; a field missing from either is dropped."""
    if type(a) is not type(b):
        raise PoseforgeError(f"cannot merge {type(a).__name__} with {type(b).__name__}")
    bt = b.tensors()
    changes = {k: (fn(v, bt[k]) if k in bt else None) for k, v in a.tensors().items()}
    return dataclasses.replace(a, **changes)  # type: ignore[type-var]


@dataclasses.dataclass
class Heatmaps(HeadOutput):
    """``heatmaps [B, K, H, W]``: one map per keypoint."""

    heatmaps: Tensor


@dataclasses.dataclass
class SimCCLogits(HeadOutput):
    """``simcc_x [B, K, Wx]`` and ``simcc_y [B, K, Hy]`` bin logits; ``keypoint_maps [B, K, h, w]``
    the per-keypoint maps the classifiers read (``None`` where a head has none, or after a flip merge)."""

    simcc_x: Tensor
    simcc_y: Tensor
    keypoint_maps: Tensor | None = None


@dataclasses.dataclass
class HeatmapsTags(HeadOutput):
    """``heatmaps [B, K, H, W]`` of every person at once and associative-embedding ``tags [B, K*D, H, W]``
    (channel order: the codec's); optional ``heatmaps_hr [B, K, 2H, 2W]`` at half
    the stride of ``heatmaps`` (HigherHRNet / LitePose: stride 2 next to stride 4), ``None`` where a head has none."""

    heatmaps: Tensor
    tags: Tensor
    heatmaps_hr: Tensor | None = None


@dataclasses.dataclass
class DenseMaps(HeadOutput):
    """Dense per-pixel maps; each field is optional.

    As a head output: ``seg [B, C, H, W]`` class logits, ``depth [B, 1, H, W]`` relative depth,
    ``normals [B, 3, H, W]`` surface normals (camera frame, not yet unit length). In
    :class:`Predictions`: ``seg`` holds class probabilities, ``normals`` are unit vectors.
    """

    seg: Tensor | None = None
    depth: Tensor | None = None
    normals: Tensor | None = None


for _cls in (Heatmaps, SimCCLogits, HeatmapsTags, DenseMaps):
    pytree.register_dataclass(_cls)


@dataclasses.dataclass
class Predictions:
    """Decoded predictions of a batch of B inputs, padded to N instances per input.

    Attributes:
        keypoints: ``[B, N, K, 2]`` float (x, y) in image pixels (model-input pixels for crops
            predicted without boxes).
        scores: ``[B, N, K]`` keypoint confidences.
        valid: ``[B, N]`` bool; padding rows are False.
        instance_scores: ``[B, N]`` a score per instance (top-down: the box score; bottom-up: the
            grouping's person score) or ``None`` (1).
        boxes: ``[B, N, 4]`` xyxy image pixels (top-down: the boxes the poses were estimated in).
        areas: ``[B, N]`` object scale for OKS-NMS (top-down: the crop box area, as mmpose).
        track_ids: ``[B, N]`` int64 (video tracking; -1 untracked).
        dense: dense maps (``[B, ...]`` at the resolution the estimator documents).
        task: the task (dataset index) the keypoints belong to, for multi-task models.
    """

    keypoints: Tensor
    scores: Tensor
    valid: Tensor
    instance_scores: Tensor | None = None
    boxes: Tensor | None = None
    areas: Tensor | None = None
    track_ids: Tensor | None = None
    dense: DenseMaps | None = None
    task: int = 0

    def __post_init__(self) -> None:
        if self.keypoints.ndim != 4 or self.keypoints.shape[-1] != 2:
            raise PoseforgeError(f"Predictions.keypoints: expected [B, N, K, 2], got {list(self.keypoints.shape)}")
        if tuple(self.scores.shape) != tuple(self.keypoints.shape[:3]) or tuple(self.valid.shape) != tuple(self.keypoints.shape[:2]):
            raise PoseforgeError(f"Predictions: scores {list(self.scores.shape)} and valid {list(self.valid.shape)} do not "
                                 f"fit keypoints {list(self.keypoints.shape)}")

    def __len__(self) -> int:
        return int(self.keypoints.shape[0])

    @property
    def num_instances(self) -> int:
        """N, the padded instance count per input."""
        return int(self.keypoints.shape[1])

    @classmethod
    def single(cls, keypoints: Tensor, scores: Tensor, **fields: Any) -> "Predictions":
        """One instance per input (top-down crops): ``keypoints [B, K, 2]``, ``scores [B, K]``."""
        valid = torch.ones(keypoints.shape[0], 1, dtype=torch.bool, device=keypoints.device)
        return cls(keypoints[:, None], scores[:, None], valid, **fields)

    def map(self, fn: Callable[[Tensor], Tensor]) -> "Predictions":
        """A copy with ``fn`` applied to every tensor (dense maps included)."""
        changes: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Tensor):
                changes[f.name] = fn(value)
            elif isinstance(value, HeadOutput):
                changes[f.name] = value.map(fn)
        return dataclasses.replace(self, **changes)

    def to(self, device: torch.device | str) -> "Predictions":
        return self.map(lambda t: t.to(device))

    def select(self, index: Tensor | slice) -> "Predictions":
        """The predictions of some inputs (a batch slice or index)."""
        return self.map(lambda t: t[index])
