"""CSPNeXt-PAFPN: the path-aggregation neck of RTMDet and RTMW (Lyu et al., "RTMDet", 2022; Jiang et al.,
"RTMW", 2024).

From ``L`` backbone maps (fine to coarse, each half the size of the one before), a top-down path
reduces the coarser map to the finer map's width (1x1 conv), upsamples it (nearest, x2) and fuses the
pair with a CSP layer; a bottom-up path then downsamples the finer result (3x3 conv, stride 2) and
fuses it with the top-down map of the next level. Each output keeps its input's channels and stride;
``out_indices`` picks the levels returned. The CSP layers are CSPNeXt's, without channel attention and
without residuals in their blocks; every convolution is conv (no bias) + BatchNorm + SiLU.

Module names follow mmpose's ``CSPNeXtPAFPN`` (``reduce_layers.i``, ``top_down_blocks.i``,
``downsamples.i``, ``bottom_up_blocks.i``), so mmpose checkpoints load by stripping their ``neck.`` prefix.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import PoseforgeError
from ...registry import NECKS
from ..backbones.cspnext import ConvBNAct, CSPLayer
from ..config import FeatureInfo, NeckConfig

__all__ = ["CSPNeXtPAFPNConfig", "CSPNeXtPAFPN"]


@dataclasses.dataclass(frozen=True)
class CSPNeXtPAFPNConfig(NeckConfig):
    """CSPNeXt-PAFPN configuration; the input widths come from the backbone's ``feature_info``.

    Attributes:
        out_indices: which levels to return, indices into the backbone's maps (RTMW: ``(1, 2)``, the
            stride-16 and stride-32 maps of three).
        num_csp_blocks: CSPNeXt blocks per CSP layer (RTMW: 2).
        expand_ratio: hidden width of a CSP layer's branches as a fraction of its output width.
        block_kernel_size: kernel of the depthwise convolution in every CSPNeXt block.
        bn_eps, bn_momentum: BatchNorm settings (RTMW's SyncBN: PyTorch's 1e-5 / 0.1).
    """

    out_indices: tuple[int, ...] = (0, 1, 2)
    num_csp_blocks: int = 3
    expand_ratio: float = 0.5
    block_kernel_size: int = 5
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    type: str = "cspnext_pafpn"

    def __post_init__(self) -> None:
        where = "CSPNeXtPAFPNConfig"
        if not self.out_indices or len(set(self.out_indices)) != len(self.out_indices) or min(self.out_indices) < 0:
            raise PoseforgeError(f"{where}.out_indices: expected distinct indices >= 0, got {self.out_indices}")
        if self.num_csp_blocks < 1:
            raise PoseforgeError(f"{where}.num_csp_blocks: expected >= 1, got {self.num_csp_blocks}")
        if not 0 < self.expand_ratio <= 1:
            raise PoseforgeError(f"{where}.expand_ratio: expected a value in (0, 1], got {self.expand_ratio}")
        if self.block_kernel_size < 1 or self.block_kernel_size % 2 == 0:
            raise PoseforgeError(f"{where}.block_kernel_size: expected an odd size, got {self.block_kernel_size}")

    def feature_info(self, backbone_info: Sequence[FeatureInfo]) -> list[FeatureInfo]:
        """The maps this neck returns for the backbone's maps (same channels, strides and sizes)."""
        if len(backbone_info) < 2:
            raise PoseforgeError(f"CSPNeXtPAFPNConfig: needs at least 2 backbone maps, got {len(backbone_info)} "
                                 "(set the backbone's out_indices)")
        if max(self.out_indices) >= len(backbone_info):
            raise PoseforgeError(f"CSPNeXtPAFPNConfig.out_indices: {self.out_indices} outside the "
                                 f"{len(backbone_info)} backbone maps")
        return [backbone_info[i] for i in self.out_indices]


@NECKS.register("cspnext_pafpn")
class CSPNeXtPAFPN(nn.Module):
    """``forward([maps fine -> coarse]) -> [maps at out_indices]`` (see the module doc)."""

    config_class = CSPNeXtPAFPNConfig

    def __init__(self, config: CSPNeXtPAFPNConfig, feature_info: Sequence[FeatureInfo],
                 input_size: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.config = config
        self.feature_info = config.feature_info(feature_info)
        channels = [f.channels for f in feature_info]
        levels = len(channels)
        bn = {"bn_eps": config.bn_eps, "bn_momentum": config.bn_momentum}

        def csp(cin: int, cout: int) -> CSPLayer:
            return CSPLayer(cin, cout, config.num_csp_blocks, False, config.expand_ratio, False,
                            config.block_kernel_size, **bn)

        # Top-down: coarsest first (index j handles levels[levels - 1 - j] -> levels[levels - 2 - j]).
        self.reduce_layers = nn.ModuleList(ConvBNAct(channels[i], channels[i - 1], 1, **bn)
                                           for i in range(levels - 1, 0, -1))
        self.top_down_blocks = nn.ModuleList(csp(2 * channels[i - 1], channels[i - 1])
                                             for i in range(levels - 1, 0, -1))
        self.downsamples = nn.ModuleList(ConvBNAct(channels[i], channels[i], 3, stride=2, **bn)
                                         for i in range(levels - 1))
        self.bottom_up_blocks = nn.ModuleList(csp(2 * channels[i], channels[i + 1]) for i in range(levels - 1))
        self.levels = levels

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(features) != self.levels:
            raise PoseforgeError(f"CSPNeXtPAFPN: expected {self.levels} feature maps, got {len(features)}")
        # inner[0] is the map being carried down; the reduced coarse maps stay in inner for the bottom-up path.
        inner = [features[-1]]
        for j, i in enumerate(range(self.levels - 1, 0, -1)):
            high = self.reduce_layers[j](inner[0])
            inner[0] = high
            low = features[i - 1]
            # Nearest upsampling to the finer map's size: x2 exactly where sizes halve evenly (as mmpose).
            up = F.interpolate(high, size=low.shape[-2:], mode="nearest")
            inner.insert(0, self.top_down_blocks[j](torch.cat([up, low], dim=1)))
        outs = [inner[0]]
        for i in range(self.levels - 1):
            down = self.downsamples[i](outs[-1])
            outs.append(self.bottom_up_blocks[i](torch.cat([down, inner[i + 1]], dim=1)))
        return [outs[i] for i in self.config.out_indices]
