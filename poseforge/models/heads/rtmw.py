"""RTMW head: the SimCC head of RTMW (Jiang et al., "RTMW: Real-Time Multi-Person 2D and 3D Whole-body
Pose Estimation", 2024), reading two maps of a neck: a coarse one (stride 32, ``C`` channels) and a
finer one (stride 16, ``C / 2`` channels in RTMW).

Coarse branch: conv to one map per keypoint (conv + BN + ReLU), each map flattened to a token,
ScaleNorm + linear to ``hidden_dim / 2``. Fine branch: the coarse map pixel-shuffled (x2: ``C / 4``
channels at the fine size), conv + BN + ReLU, concatenated with the fine map, conv to one map per
keypoint, flattened, ScaleNorm + linear to ``hidden_dim / 2``. The two halves are concatenated into
``hidden_dim``-wide keypoint tokens, mixed by one gated attention unit (as RTMCC's) and classified over
the x and y bins (``split_ratio`` bins per input pixel).

Parameter names follow mmpose's ``RTMWHead`` (``final_layer.conv``, ``final_layer.bn``, ``conv_dec``,
``final_layer2``, ``mlp.0.g``, ``mlp.1``, ``mlp2``, ``gau.*``, ``cls_x``, ``cls_y``).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import torch
from torch import nn

from ...errors import PoseforgeError
from ...outputs import SimCCLogits
from ...registry import HEADS
from ..config import FeatureInfo, HeadConfig
from .rtmcc import GatedAttentionUnit, ScaleNorm, check_gau_head
from .simcc import SimCCHeadConfig

__all__ = ["RTMWHeadConfig", "RTMWHead", "RTMW_HEAD"]


@dataclasses.dataclass(frozen=True)
class RTMWHeadConfig(HeadConfig):
    """RTMW head configuration (RTMW's values are the defaults; output count follows the keypoint set).

    Attributes:
        final_kernel_size: kernel of every convolution of the head (odd; RTMW: 7).
        hidden_dim: width of the keypoint tokens (even: each branch gives half).
        attention_dim: width ``s`` of the GAU's shared query/key projection.
        expansion: the GAU's value/gate width as a multiple of ``hidden_dim``.
        activation: the GAU's activation, ``"silu"`` (RTMW) or ``"relu"``.
        dropout, drop_path: the GAU's attention dropout and stochastic depth (training only).
        split_ratio: bins per input pixel (the ``simcc`` codec's, kept in step by the model zoo).
        bn_eps, bn_momentum: BatchNorm settings of the convolutions (PyTorch's defaults, as mmpose).
    """

    final_kernel_size: int = 7
    hidden_dim: int = 256
    attention_dim: int = 128
    expansion: float = 2.0
    activation: str = "silu"
    dropout: float = 0.0
    drop_path: float = 0.0
    split_ratio: float = 2.0
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    type: str = "rtmw"

    def __post_init__(self) -> None:
        if self.hidden_dim < 2 or self.hidden_dim % 2 or self.attention_dim < 1 or not self.expansion > 0:
            raise PoseforgeError(f"RTMWHeadConfig: hidden_dim must be even and >= 2, attention_dim and expansion "
                                 f"positive; got {self.hidden_dim}, {self.attention_dim}, {self.expansion}")
        check_gau_head(self, "RTMWHeadConfig")

    num_bins = SimCCHeadConfig.num_bins


RTMW_HEAD = RTMWHeadConfig()


class ConvBNReLU(nn.Module):
    """Convolution without bias + BatchNorm + ReLU (mmcv's ``ConvModule`` keys: ``conv``, ``bn``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bn_eps: float = 1e-5,
                 bn_momentum: float = 0.1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=bn_momentum)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


@HEADS.register("rtmw")
class RTMWHead(nn.Module):
    """``forward([..., fine [B,C/2,2h,2w], coarse [B,C,h,w]]) -> SimCCLogits(simcc_x [B,K,Wx], simcc_y [B,K,Hy],
    keypoint_maps [B,K,2h,2w])``; the keypoint maps are the fine branch's (an optional dense loss supervises them)."""

    config_class = RTMWHeadConfig

    def __init__(self, config: RTMWHeadConfig, feature_info: Sequence[FeatureInfo], num_outputs: int,
                 input_size: tuple[int, int] | None = None) -> None:
        super().__init__()
        if input_size is None:
            raise PoseforgeError("RTMWHead needs the model's input_size")
        if len(feature_info) < 2:
            raise PoseforgeError(f"RTMWHead: needs two feature maps (a neck's fine and coarse levels), got "
                                 f"{len(feature_info)}")
        fine, coarse = feature_info[-2], feature_info[-1]
        if coarse.channels % 4:
            raise PoseforgeError(f"RTMWHead: the coarse map's {coarse.channels} channels must divide by 4 "
                                 "(pixel shuffle x2)")
        if (2 * coarse.size[0], 2 * coarse.size[1]) != tuple(fine.size):
            raise PoseforgeError(f"RTMWHead: input {tuple(input_size)} gives maps of {tuple(fine.size)} and "
                                 f"{tuple(coarse.size)} cells; the fine map must be twice the coarse "
                                 "(use sizes divisible by 32)")
        self.config = config
        self.num_outputs = num_outputs
        k = config.final_kernel_size
        bn = {"bn_eps": config.bn_eps, "bn_momentum": config.bn_momentum}
        shuffled = coarse.channels // 4
        self.ps = nn.PixelShuffle(2)
        self.conv_dec = ConvBNReLU(shuffled, shuffled, k, **bn)
        self.final_layer = ConvBNReLU(coarse.channels, num_outputs, k, **bn)
        self.final_layer2 = ConvBNReLU(fine.channels + shuffled, num_outputs, k, **bn)
        flat, flat_fine = coarse.size[0] * coarse.size[1], fine.size[0] * fine.size[1]
        half = config.hidden_dim // 2
        self.mlp = nn.Sequential(ScaleNorm(flat), nn.Linear(flat, half, bias=False))
        self.mlp2 = nn.Sequential(ScaleNorm(flat_fine), nn.Linear(flat_fine, half, bias=False))
        self.gau = GatedAttentionUnit(config.hidden_dim, config.attention_dim, config.expansion, config.activation,
                                      config.dropout, config.drop_path)
        bins_x, bins_y = config.num_bins(input_size)
        self.cls_x = nn.Linear(config.hidden_dim, bins_x, bias=False)
        self.cls_y = nn.Linear(config.hidden_dim, bins_y, bias=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """mmpose's RTMWHead initialization: normal(0.001) convolutions, BatchNorm weight 1 / bias 0,
        normal(0.01) linears; the GAU's scale/offset uniform in [0, 1), its norms and residual scale 1."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.001)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)
        self.gau.gamma.uniform_()
        self.gau.beta.uniform_()

    def forward(self, features: Sequence[torch.Tensor]) -> SimCCLogits:
        fine, coarse = features[-2], features[-1]
        tokens_coarse = self.mlp(self.final_layer(coarse).flatten(2))
        maps = self.final_layer2(torch.cat([self.conv_dec(self.ps(coarse)), fine], dim=1))
        tokens_fine = self.mlp2(maps.flatten(2))
        tokens = self.gau(torch.cat([tokens_coarse, tokens_fine], dim=2))
        return SimCCLogits(self.cls_x(tokens), self.cls_y(tokens), maps)
