"""Per-task decoders of a multi-dataset model (ViTPose++): one head per keypoint set.

:class:`MultiTaskHeads` holds the heads (any registered head type, built from its config) and runs
each on its own group of a batch that is already grouped by task, so a mixed batch costs one pass of
each head over its own samples, not every head over every sample.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import PoseforgeError
from ...outputs import Heatmaps
from ...registry import HEADS
from ..backbones.vit import ExpertSegments
from ..config import FeatureInfo, HeadConfig

__all__ = ["MultiTaskHeads", "pad_channels"]


def pad_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Zero-pad dim 1 of ``[B, K, ...]`` to ``channels`` (padded outputs of a mixed batch)."""
    missing = channels - x.shape[1]
    if missing < 0:
        raise PoseforgeError(f"cannot pad {x.shape[1]} channels down to {channels}")
    if missing == 0:
        return x
    return F.pad(x, (0, 0) * (x.ndim - 2) + (0, missing))


class MultiTaskHeads(nn.ModuleList):
    """Heads ``0..N-1``; head ``i`` predicts ``num_outputs[i]`` keypoints.

    Args:
        configs: one head config per head.
        feature_info: the backbone's feature maps.
        num_outputs: keypoints of each head.
        input_size: ``(width, height)``, passed to every head builder.
    """

    def __init__(self, configs: Sequence[HeadConfig], feature_info: Sequence[FeatureInfo], num_outputs: Sequence[int],
                 input_size: tuple[int, int]) -> None:
        if len(configs) != len(num_outputs):
            raise PoseforgeError(f"MultiTaskHeads: {len(configs)} head configs but {len(num_outputs)} output counts")
        # Mixed batches are zero-padded to one keypoint count and trained with the task-balanced heatmap loss.
        other = sorted({c.type for c in configs} - {"heatmap"})
        if other:
            raise PoseforgeError(f"MultiTaskHeads: multi-task models take heatmap heads, got {', '.join(other)}")
        super().__init__(HEADS.get(c.type)(c, feature_info=feature_info, num_outputs=int(k), input_size=input_size)
                         for c, k in zip(configs, num_outputs))
        self.num_outputs = tuple(int(k) for k in num_outputs)

    @property
    def output_size(self) -> tuple[int, int] | None:
        """``(width, height)`` of the heatmaps (all heads must agree); ``None`` for non-spatial heads."""
        sizes = {tuple(h.output_size) if hasattr(h, "output_size") else None for h in self}
        if len(sizes) != 1:
            raise PoseforgeError(f"the task heads give different output sizes {sorted(map(str, sizes))}; "
                                 "one codec needs one heatmap size")
        return sizes.pop()

    def forward_grouped(self, features: Sequence[torch.Tensor], segments: ExpertSegments, channels: int) -> Heatmaps:
        """Run head ``label`` on every segment of the grouped ``features``; heatmaps zero-padded to
        ``channels`` keypoints and concatenated in the (grouped) batch order."""
        outs = [pad_channels(self[h]([f[s:t] for f in features]).heatmaps, channels) for h, s, t in segments.segments]
        return Heatmaps(outs[0] if len(outs) == 1 else torch.cat(outs, dim=0))
