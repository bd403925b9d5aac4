"""Dense per-pixel targets: body-part segmentation, relative depth and surface normals (Sapiens' tasks).

Samples carry the labels at the model-input resolution (``seg [B, H, W]`` class indices with
``ignore_index`` where unlabeled, ``depth [B, H, W]`` with 0 where there is none, ``normals
[B, 3, H, W]`` unit vectors, zero where there are none). A head may predict at a lower resolution:
:meth:`DenseCodec.upsample` brings its :class:`~poseforge.outputs.DenseMaps` to the input size
(bilinear), which the dense losses and the decoding both use. Decoding gives class probabilities,
depth and unit normals; flip-back mirrors the maps, swaps left/right classes and negates the normals' x.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import PoseforgeError
from ..outputs import DenseMaps, Predictions
from ..registry import CODECS
from .base import Codec, check_flip_index, check_size

__all__ = ["DenseCodec"]


class DenseCodec(Codec):
    """Targets and decoding of :class:`~poseforge.outputs.DenseMaps`.

    Args:
        input_size: model input ``(width, height)``.
        num_classes: segmentation classes (0: no segmentation).
        depth, normals: whether the model predicts them.
        ignore_index: the label of unlabeled pixels in ``seg``.
    """

    name = "dense"
    output_type = DenseMaps

    def __init__(self, input_size: Sequence[int], num_classes: int = 0, depth: bool = False, normals: bool = False,
                 ignore_index: int = 255) -> None:
        self.input_size = check_size(input_size, "input_size")
        if int(num_classes) < 0 or (int(num_classes) == 0 and not depth and not normals):
            raise PoseforgeError("dense codec: predict something (num_classes > 0, depth or normals)")
        self.num_classes = int(num_classes)
        self.depth = bool(depth)
        self.normals = bool(normals)
        self.ignore_index = int(ignore_index)

    @property
    def tasks(self) -> tuple[str, ...]:
        """The dense tasks predicted: a subset of ``("seg", "depth", "normals")``."""
        return tuple(t for t, on in (("seg", self.num_classes > 0), ("depth", self.depth), ("normals", self.normals)) if on)

    def encode_sample(self, sample: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``seg`` long [B,H,W] (``ignore_index`` kept), ``depth`` [B,1,H,W] and ``depth_valid``,
        ``normals`` [B,3,H,W] and ``normals_valid`` [B,1,H,W] - those the codec predicts."""
        w, h = self.input_size
        out: dict[str, Tensor] = {}
        for task in self.tasks:
            if task not in sample:
                raise PoseforgeError(f"dense codec: the samples carry no '{task}' labels")
            value = sample[task]
            if tuple(value.shape[-2:]) != (h, w):
                raise PoseforgeError(f"dense codec: '{task}' labels are {list(value.shape)}, expected {w}x{h} maps")
        if self.num_classes:
            out["seg"] = sample["seg"].long()
        if self.depth:
            depth = sample["depth"].float().reshape(-1, 1, h, w)
            out["depth"], out["depth_valid"] = depth, depth > 0
        if self.normals:
            normals = sample["normals"].float().reshape(-1, 3, h, w)
            out["normals"], out["normals_valid"] = normals, normals.abs().sum(1, keepdim=True) > 0
        return out

    def upsample(self, outputs: DenseMaps) -> DenseMaps:
        """The maps at the input resolution (bilinear; unchanged when already there)."""
        w, h = self.input_size

        def resize(t: Tensor) -> Tensor:
            return t if tuple(t.shape[-2:]) == (h, w) else F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)

        return outputs.map(resize)

    def _check(self, outputs: Any) -> DenseMaps:
        if not isinstance(outputs, DenseMaps):
            raise PoseforgeError(f"dense codec: expected DenseMaps, got {type(outputs).__name__}")
        missing = [t for t in self.tasks if getattr(outputs, t) is None]
        if missing:
            raise PoseforgeError(f"dense codec: the head gave no {', '.join(missing)}")
        if self.num_classes and outputs.seg.shape[1] != self.num_classes:
            raise PoseforgeError(f"dense codec: {outputs.seg.shape[1]} segmentation channels, expected {self.num_classes}")
        return outputs

    def decode_predictions(self, outputs: DenseMaps) -> Predictions:
        """Class probabilities, depth and unit normals at the input resolution (no keypoints: K = N = 0)."""
        maps = self.upsample(self._check(outputs).float())
        seg = maps.seg.softmax(1) if self.num_classes else None
        normals = F.normalize(maps.normals, dim=1) if self.normals else None
        b = maps.batch_size
        device = next(iter(maps.tensors().values())).device
        return Predictions(torch.zeros(b, 0, 0, 2, device=device), torch.zeros(b, 0, 0, device=device),
                           torch.zeros(b, 0, dtype=torch.bool, device=device),
                           dense=DenseMaps(seg, maps.depth if self.depth else None, normals))

    def flip_back(self, outputs: DenseMaps, flip_index: Sequence[int] | np.ndarray | Tensor | None = None) -> DenseMaps:
        """Maps of a mirrored input aligned with the original: flipped along W, segmentation channels
        permuted by ``flip_index`` (left/right classes; ``None`` keeps them), normals' x negated."""
        maps = self._check(outputs).map(lambda t: t.flip(-1))
        seg, normals = maps.seg, maps.normals
        if seg is not None and flip_index is not None:
            seg = seg.index_select(1, check_flip_index(flip_index, seg.shape[1], seg.device))
        if normals is not None:
            normals = torch.cat([-normals[:, :1], normals[:, 1:]], 1)
        return DenseMaps(seg, maps.depth, normals)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "input_size": list(self.input_size), "num_classes": self.num_classes,
                "depth": self.depth, "normals": self.normals, "ignore_index": self.ignore_index}


CODECS.register("dense", DenseCodec)
