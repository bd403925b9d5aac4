"""SimCC head: keypoints as two 1-D classifications over x and y bins (Li et al., "SimCC: a Simple
Coordinate Classification Perspective for Human Pose Estimation", ECCV 2022; the head family of
RTMPose / DWPose).

``features [B,C,h,w]`` -> optional stride-2 deconvolutions -> a ``final_kernel_size`` convolution to
one map per keypoint -> each map flattened -> LayerNorm + Linear to ``hidden_dim`` + GELU -> two
linear classifiers over ``round(w_in * split_ratio)`` x bins and ``round(h_in * split_ratio)`` y bins.
Decoded by the ``simcc`` codec (each axis' argmax refined to the mean of its window, ``split_ratio``
bins per input pixel), so localisation is not limited to a heatmap's stride; trained with the KL loss
of RTMPose, optionally plus a dense loss on the keypoint maps (``loss.keypoint_map_weight``; see
:class:`~poseforge.models.losses.KeypointMapAuxLoss`).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ...errors import PoseforgeError
from ...outputs import SimCCLogits
from ...registry import HEADS
from ..config import FeatureInfo, HeadConfig
from .heatmap import check_decoder, deconv_layers

__all__ = ["SimCCHeadConfig", "SimCCHead", "SIMCC_HEAD", "simcc_codec"]


@dataclasses.dataclass(frozen=True)
class SimCCHeadConfig(HeadConfig):
    """SimCC head configuration (output count follows the model's keypoint set).

    Attributes:
        deconv_channels, deconv_kernel_sizes: optional stride-2 deconvolution blocks before the
            keypoint maps (as the heatmap head's); finer maps give the classifiers more to read.
        final_kernel_size: kernel of the convolution to one map per keypoint (odd).
        hidden_dim: width of the per-keypoint feature the classifiers read (0: classify the
            flattened map directly, as the original SimCC head).
        split_ratio: bins per input pixel (the ``simcc`` codec's ``split_ratio``; kept in step by
            the model zoo).
    """

    deconv_channels: tuple[int, ...] = ()
    deconv_kernel_sizes: tuple[int, ...] = ()
    final_kernel_size: int = 1
    hidden_dim: int = 256
    split_ratio: float = 2.0
    type: str = "simcc"

    def __post_init__(self) -> None:
        check_decoder(self)
        if self.hidden_dim < 0:
            raise PoseforgeError(f"SimCCHeadConfig.hidden_dim: expected >= 0, got {self.hidden_dim}")
        if not self.split_ratio > 0:
            raise PoseforgeError(f"SimCCHeadConfig.split_ratio: expected > 0, got {self.split_ratio}")

    def num_bins(self, input_size: tuple[int, int]) -> tuple[int, int]:
        """``(x bins, y bins)`` for an ``(width, height)`` input (rounded half to even, as the codec)."""
        return int(np.around(input_size[0] * self.split_ratio)), int(np.around(input_size[1] * self.split_ratio))


SIMCC_HEAD = SimCCHeadConfig()


def simcc_codec(input_size: tuple[int, int], split_ratio: float = 2.0) -> dict:
    """The ``simcc`` codec settings of RTMPose scaled to ``input_size``: label sigma (4.9, 5.66) bins at
    192x256 input, growing with the square root of the input size, unnormalized labels; decoded with a
    6-sigma refinement window (the bundled model: held-out AP 0.706 -> 0.714, benchmarks/RESULTS.md)."""
    scale = float(np.sqrt(input_size[0] * input_size[1] / (192 * 256)))
    sigma = [round(4.9 * scale * split_ratio / 2, 2), round(5.66 * scale * split_ratio / 2, 2)]
    return {"name": "simcc", "input_size": list(input_size), "sigma": sigma, "split_ratio": split_ratio,
            "normalize": False, "decode_window": 6.0}


@HEADS.register("simcc")
class SimCCHead(nn.Module):
    """``forward([..., features [B,C,h,w]]) -> SimCCLogits(simcc_x [B,K,Wx], simcc_y [B,K,Hy], keypoint_maps
    [B,K,h',w'])`` from the last feature map; the keypoint maps are what the classifiers read (an
    optional dense loss supervises them)."""

    config_class = SimCCHeadConfig

    def __init__(self, config: SimCCHeadConfig, feature_info: Sequence[FeatureInfo], num_outputs: int,
                 input_size: tuple[int, int] | None = None) -> None:
        super().__init__()
        if input_size is None:
            raise PoseforgeError("SimCCHead needs the model's input_size")
        self.config = config
        self.num_outputs = num_outputs
        feature_size = feature_info[-1].size
        self.deconv_layers, channels = deconv_layers(feature_info[-1].channels, config.deconv_channels,
                                                     config.deconv_kernel_sizes)
        k = config.final_kernel_size
        self.final_layer = nn.Conv2d(channels, num_outputs, k, padding=k // 2)
        scale = 2 ** len(config.deconv_channels)
        flat = feature_size[0] * scale * feature_size[1] * scale
        hidden = config.hidden_dim or flat
        self.mlp = (nn.Sequential(nn.LayerNorm(flat), nn.Linear(flat, hidden), nn.GELU()) if config.hidden_dim
                    else nn.LayerNorm(flat))
        bins_x, bins_y = config.num_bins(input_size)
        self.cls_x = nn.Linear(hidden, bins_x)
        self.cls_y = nn.Linear(hidden, bins_y)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Normal(0.001) deconvolutions (as the heatmap head), PyTorch's default for the keypoint-map
        convolution (its maps are layer-normalized next, so they must not start near zero),
        truncated-normal(0.02) linears, zero biases."""
        for m in self.modules():
            if isinstance(m, nn.ConvTranspose2d):
                nn.init.normal_(m.weight, std=0.001)
            elif isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
            elif isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)):
                nn.init.ones_(m.weight)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)

    def forward(self, features: Sequence[torch.Tensor]) -> SimCCLogits:
        maps = self.final_layer(self.deconv_layers(features[-1]))
        x = self.mlp(maps.flatten(2))
        return SimCCLogits(self.cls_x(x), self.cls_y(x), maps)
