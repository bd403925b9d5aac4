"""CSPNeXt: the convolutional backbone of RTMDet, RTMPose and DWPose (Lyu et al., "RTMDet", 2022).

A 3-layer stem (stride 2) and four stages, each a stride-2 3x3 convolution and a CSP layer; the last
stage has a spatial-pyramid pooling block (parallel 5/9/13 max pools) before its CSP layer. A CSP
layer splits the input into a main branch (CSPNeXt blocks: a 3x3 convolution then a 5x5 depthwise +
1x1 pointwise pair, with a residual in all but the last stage) and a shortcut branch, concatenates
them, re-weights the channels (channel attention: global average pool, 1x1 conv, hard sigmoid) and
fuses them with a 1x1 convolution. Every convolution is conv (no bias) + BatchNorm + SiLU.

Sizes (``P5`` arch: stage widths 128/256/512/1024 and depths 3/6/6/3, scaled): ``widen_factor``
multiplies the widths, ``deepen_factor`` the depths (``max(round(d x f), 1)`` blocks).

Module names follow mmdet's ``CSPNeXt`` (``stem.0.conv``, ``stage4.2.blocks.0.conv2.depthwise_conv.bn``
...), so mmpose checkpoints load by stripping their ``backbone.`` prefix.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import torch
from torch import nn

from ...errors import PoseforgeError
from ...registry import BACKBONES
from ..config import BackboneConfig, FeatureInfo

__all__ = ["CSPNeXtConfig", "CSPNeXt", "CSPNEXT_ARCHS"]

# (in channels, out channels, CSP blocks, residual in the blocks, spatial pyramid pooling) per stage.
CSPNEXT_ARCHS: dict[str, tuple[tuple[int, int, int, bool, bool], ...]] = {
    "P5": ((64, 128, 3, True, False), (128, 256, 6, True, False), (256, 512, 6, True, False),
           (512, 1024, 3, False, True)),
    "P6": ((64, 128, 3, True, False), (128, 256, 6, True, False), (256, 512, 6, True, False),
           (512, 768, 3, True, False), (768, 1024, 3, False, True)),
}


@dataclasses.dataclass(frozen=True)
class CSPNeXtConfig(BackboneConfig):
    """CSPNeXt configuration (the RTMPose sizes live in the zoo).

    Attributes:
        arch: ``"P5"`` (4 stages, stride 32) or ``"P6"`` (5 stages, stride 64).
        deepen_factor, widen_factor: depth and width multipliers (RTMPose-t 0.167/0.375, s 0.33/0.5,
            m 0.67/0.75, l 1/1, x 1.33/1.25).
        expand_ratio: hidden width of a CSP layer's branches as a fraction of its output width.
        out_indices: which maps to return: 0 is the stem (stride 2), ``i`` is stage ``i`` (stride
            ``2 ** (i + 1)``). RTMPose uses the last stage only.
        channel_attention: re-weight each CSP layer's concatenated channels.
        spp_kernel_sizes: max-pool kernels of the pyramid pooling block of the last stage.
        block_kernel_size: kernel of the depthwise convolution in every CSPNeXt block.
        bn_eps, bn_momentum: BatchNorm settings (RTMPose's SyncBN: PyTorch's 1e-5 / 0.1; RTMDet:
            1e-3 / 0.03).
        frozen_stages: keep the stem and the first ``frozen_stages`` stages in eval mode without
            gradients (-1: none; 0: the stem).
    """

    arch: str = "P5"
    deepen_factor: float = 1.0
    widen_factor: float = 1.0
    expand_ratio: float = 0.5
    out_indices: tuple[int, ...] = (4,)
    channel_attention: bool = True
    spp_kernel_sizes: tuple[int, ...] = (5, 9, 13)
    block_kernel_size: int = 5
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    frozen_stages: int = -1
    type: str = "cspnext"

    def __post_init__(self) -> None:
        where = "CSPNeXtConfig"
        if self.arch not in CSPNEXT_ARCHS:
            raise PoseforgeError(f"{where}.arch: expected one of {', '.join(CSPNEXT_ARCHS)}, got {self.arch!r}")
        if not self.deepen_factor > 0 or not self.widen_factor > 0 or not 0 < self.expand_ratio <= 1:
            raise PoseforgeError(f"{where}: deepen_factor and widen_factor must be > 0 and expand_ratio in (0, 1], got "
                                 f"{self.deepen_factor}, {self.widen_factor}, {self.expand_ratio}")
        stages = len(CSPNEXT_ARCHS[self.arch])
        if not self.out_indices or any(not 0 <= i <= stages for i in self.out_indices):
            raise PoseforgeError(f"{where}.out_indices: expected indices in 0..{stages}, got {self.out_indices}")
        if self.block_kernel_size % 2 == 0 or any(k % 2 == 0 for k in self.spp_kernel_sizes):
            raise PoseforgeError(f"{where}: kernel sizes must be odd, got {self.block_kernel_size} and {self.spp_kernel_sizes}")
        if not -1 <= self.frozen_stages <= stages:
            raise PoseforgeError(f"{where}.frozen_stages: expected -1..{stages}, got {self.frozen_stages}")

    def stage_settings(self) -> list[tuple[int, int, int, bool, bool]]:
        """Scaled (in, out, blocks, residual, pyramid pooling) per stage."""
        return [(int(i * self.widen_factor), int(o * self.widen_factor), max(round(n * self.deepen_factor), 1), res, spp)
                for i, o, n, res, spp in CSPNEXT_ARCHS[self.arch]]

    def stem_channels(self) -> int:
        return int(CSPNEXT_ARCHS[self.arch][0][0] * self.widen_factor)

    def feature_info(self, input_size: tuple[int, int]) -> list[FeatureInfo]:
        """One :class:`FeatureInfo` per ``out_indices`` entry (every level halves the size, rounding up)."""
        channels = [self.stem_channels()] + [s[1] for s in self.stage_settings()]
        infos = []
        for i in self.out_indices:
            w, h = input_size
            for _ in range(i + 1):
                w, h = (w + 1) // 2, (h + 1) // 2
            infos.append(FeatureInfo(channels[i], 2 ** (i + 1), (w, h)))
        return infos


class ConvBNAct(nn.Module):
    """Convolution without bias + BatchNorm + SiLU (mmcv's ``ConvModule`` keys: ``conv``, ``bn``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1,
                 bn_eps: float = 1e-5, bn_momentum: float = 0.1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=bn_momentum)
        self.act = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class DepthwiseSeparable(nn.Module):
    """Depthwise ``k x k`` then pointwise 1x1, each conv + BN + SiLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, **bn: float) -> None:
        super().__init__()
        self.depthwise_conv = ConvBNAct(in_channels, in_channels, kernel_size, groups=in_channels, **bn)
        self.pointwise_conv = ConvBNAct(in_channels, out_channels, 1, **bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise_conv(self.depthwise_conv(x))


class CSPNeXtBlock(nn.Module):
    """3x3 conv, then a large-kernel depthwise-separable conv, plus the input when ``residual``."""

    def __init__(self, channels: int, residual: bool, kernel_size: int, **bn: float) -> None:
        super().__init__()
        self.conv1 = ConvBNAct(channels, channels, 3, **bn)
        self.conv2 = DepthwiseSeparable(channels, channels, kernel_size, **bn)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x))
        return out + x if self.residual else out


class ChannelAttention(nn.Module):
    """``x * hardsigmoid(conv1x1(mean over H, W of x))`` (the pooled mean in float32 under autocast)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, 1, bias=True)
        self.act = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.float().mean(dim=(2, 3), keepdim=True).to(x.dtype)
        return x * self.act(self.fc(pooled))


class CSPLayer(nn.Module):
    """Cross-stage partial layer: ``final_conv(attention(cat(blocks(main_conv(x)), short_conv(x))))``."""

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, residual: bool, expand_ratio: float,
                 channel_attention: bool, kernel_size: int, **bn: float) -> None:
        super().__init__()
        mid = int(out_channels * expand_ratio)
        self.main_conv = ConvBNAct(in_channels, mid, 1, **bn)
        self.short_conv = ConvBNAct(in_channels, mid, 1, **bn)
        self.final_conv = ConvBNAct(2 * mid, out_channels, 1, **bn)
        self.blocks = nn.Sequential(*[CSPNeXtBlock(mid, residual, kernel_size, **bn) for _ in range(num_blocks)])
        self.attention = ChannelAttention(2 * mid) if channel_attention else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        merged = torch.cat((self.blocks(self.main_conv(x)), self.short_conv(x)), dim=1)
        return self.final_conv(self.attention(merged))


class SpatialPyramidPooling(nn.Module):
    """1x1 conv to half the channels, parallel stride-1 max pools concatenated with it, 1x1 conv."""

    def __init__(self, in_channels: int, out_channels: int, kernel_sizes: Sequence[int], **bn: float) -> None:
        super().__init__()
        mid = in_channels // 2
        self.conv1 = ConvBNAct(in_channels, mid, 1, **bn)
        self.poolings = nn.ModuleList(nn.MaxPool2d(k, stride=1, padding=k // 2) for k in kernel_sizes)
        self.conv2 = ConvBNAct(mid * (len(kernel_sizes) + 1), out_channels, 1, **bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        return self.conv2(torch.cat([x] + [pool(x) for pool in self.poolings], dim=1))


@BACKBONES.register("cspnext")
class CSPNeXt(nn.Module):
    """``forward(images [B,3,H,W]) -> [features ...]``, one map per ``out_indices`` entry (``feature_info``)."""

    config_class = CSPNeXtConfig

    def __init__(self, config: CSPNeXtConfig, input_size: tuple[int, int] = (192, 256)) -> None:
        super().__init__()
        self.config = config
        self.feature_info = config.feature_info(input_size)
        bn = {"bn_eps": config.bn_eps, "bn_momentum": config.bn_momentum}
        stem = config.stem_channels()
        self.stem = nn.Sequential(ConvBNAct(3, stem // 2, 3, stride=2, **bn), ConvBNAct(stem // 2, stem // 2, 3, **bn),
                                  ConvBNAct(stem // 2, stem, 3, **bn))
        self.stage_names = ["stem"]
        for i, (cin, cout, blocks, residual, spp) in enumerate(config.stage_settings()):
            layers: list[nn.Module] = [ConvBNAct(cin, cout, 3, stride=2, **bn)]
            if spp:
                layers.append(SpatialPyramidPooling(cout, cout, config.spp_kernel_sizes, **bn))
            layers.append(CSPLayer(cout, cout, blocks, residual, config.expand_ratio, config.channel_attention,
                                   config.block_kernel_size, **bn))
            self.add_module(f"stage{i + 1}", nn.Sequential(*layers))
            self.stage_names.append(f"stage{i + 1}")
        self.last_index = max(config.out_indices)
        self._freeze()

    def _frozen_modules(self) -> list[nn.Module]:
        return [getattr(self, name) for name in self.stage_names[:self.config.frozen_stages + 1]]

    def _freeze(self) -> None:
        for module in self._frozen_modules():
            module.requires_grad_(False)

    def train(self, mode: bool = True) -> "CSPNeXt":
        super().train(mode)
        for module in self._frozen_modules():  # frozen stages keep their running statistics
            module.eval()
        return self

    @property
    def num_layers(self) -> int:
        """Stem + stages, for layer-wise LR decay (depth 0 is the stem)."""
        return len(self.stage_names)

    def layer_id(self, name: str) -> int:
        """Depth of parameter ``name``: 0 the stem, ``i`` stage ``i``."""
        head = name.split(".", 1)[0]
        return self.stage_names.index(head) if head in self.stage_names else len(self.stage_names)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = images
        outputs = []
        for i, name in enumerate(self.stage_names[:self.last_index + 1]):
            x = getattr(self, name)(x)
            if i in self.config.out_indices:
                outputs.append(x)
        return outputs
