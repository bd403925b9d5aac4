"""HRNet (Sun et al., "Deep High-Resolution Representation Learning", 2019) as HigherHRNet uses it
(Cheng et al., "HigherHRNet", CVPR 2020): the multi-branch reference LitePose is measured against.

A stem of two stride-2 3x3 convolutions (64 channels, stride 4), ``layer1`` of four bottlenecks (256
channels), then stages 2-4 with 2, 3 and 4 parallel branches of widths ``width x 2^i`` (strides 4, 8,
16, 32). Each stage is ``stage_modules`` high-resolution modules: ``num_blocks`` basic blocks per branch,
then every branch receives the sum of all branches (1x1 conv + nearest upsampling from coarser ones,
strided 3x3 convolutions from finer ones). HigherHRNet keeps only the stride-4 branch of the last
module (``multi_scale_output=False``). W32: ``width=32``, modules 1/4/3, four blocks everywhere.

Module names follow the official ``pose_higher_hrnet.py`` (``conv1``, ``layer1.0.conv1``,
``transition1.1.0.0``, ``stage3.2.fuse_layers.1.0.0.0`` ...), so official checkpoints map one to one.
"""
from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import PoseforgeError
from ...registry import BACKBONES
from ..config import BackboneConfig, FeatureInfo

__all__ = ["HRNetConfig", "HRNet", "BasicBlock", "Bottleneck"]


@dataclasses.dataclass(frozen=True)
class HRNetConfig(BackboneConfig):
    """HRNet configuration.

    Attributes:
        width: channels of the stride-4 branch (W32: 32); branch ``i`` has ``width x 2^i``.
        stage_modules: high-resolution modules of stages 2, 3 and 4.
        num_blocks: basic blocks per branch in every module.
        stem_width: channels of the stem and the bottleneck width of ``layer1`` (64).
        multi_scale_output: return every branch of the last stage (HigherHRNet: only the stride-4 one).
    """

    width: int = 32
    stage_modules: tuple[int, int, int] = (1, 4, 3)
    num_blocks: int = 4
    stem_width: int = 64
    multi_scale_output: bool = False
    type: str = "hrnet"

    def __post_init__(self) -> None:
        if self.width <= 0 or self.stem_width <= 0 or self.num_blocks < 1 or len(self.stage_modules) != 3 \
                or any(m < 1 for m in self.stage_modules):
            raise PoseforgeError(f"HRNetConfig: expected positive width/stem_width, num_blocks >= 1 and three "
                                 f"stage_modules >= 1, got {self.width}, {self.stem_width}, {self.num_blocks}, "
                                 f"{self.stage_modules}")

    def feature_info(self, input_size: tuple[int, int]) -> list[FeatureInfo]:
        """The stride-4 map (and the coarser branches with ``multi_scale_output``)."""
        w, h = input_size
        levels = 4 if self.multi_scale_output else 1
        return [FeatureInfo(self.width * 2 ** i, 4 * 2 ** i, (math.ceil(w / (4 * 2 ** i)), math.ceil(h / (4 * 2 ** i))))
                for i in range(levels)]


class BasicBlock(nn.Module):
    """Two 3x3 conv + BN, ReLU between and after the residual sum."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + x)


class Bottleneck(nn.Module):
    """1x1, 3x3, 1x1 (x4 expansion) with a projected shortcut when the widths differ."""

    def __init__(self, in_channels: int, planes: int) -> None:
        super().__init__()
        out = planes * 4
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (nn.Sequential(nn.Conv2d(in_channels, out, 1, bias=False), nn.BatchNorm2d(out))
                           if in_channels != out else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + (x if self.downsample is None else self.downsample(x)))


def _conv_bn(cin: int, cout: int, kernel: int, stride: int, relu: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class HighResolutionModule(nn.Module):
    """Basic blocks on every branch, then each kept output branch sums all branches resampled to it."""

    def __init__(self, channels: list[int], num_blocks: int, multi_scale_output: bool) -> None:
        super().__init__()
        n = len(channels)
        self.branches = nn.ModuleList(nn.Sequential(*[BasicBlock(c) for _ in range(num_blocks)]) for c in channels)
        fuse_layers = []
        for i in range(n if multi_scale_output else 1):
            row: list[nn.Module | None] = []
            for j in range(n):
                if j > i:  # coarser: 1x1 to this width, upsampled in forward
                    row.append(_conv_bn(channels[j], channels[i], 1, 1, relu=False))
                elif j == i:
                    row.append(None)
                else:  # finer: i - j strided 3x3 convolutions, ReLU between them
                    steps = [_conv_bn(channels[j], channels[j], 3, 2, relu=True) for _ in range(i - j - 1)]
                    steps.append(_conv_bn(channels[j], channels[i], 3, 2, relu=False))
                    row.append(nn.Sequential(*steps))
            fuse_layers.append(nn.ModuleList(row))
        self.fuse_layers = nn.ModuleList(fuse_layers)
        self.relu = nn.ReLU(inplace=False)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        outputs = []
        for i, row in enumerate(self.fuse_layers):
            y = xs[i]
            for j, layer in enumerate(row):
                if j == i:
                    continue
                z = layer(xs[j])
                if j > i:  # nearest upsampling to the finer map's exact size
                    z = F.interpolate(z, size=xs[i].shape[-2:], mode="nearest")
                y = y + z
            outputs.append(self.relu(y))
        return outputs


@BACKBONES.register("hrnet")
class HRNet(nn.Module):
    """``forward(images) -> [stride-4 map]`` (every branch with ``multi_scale_output``), see ``feature_info``."""

    config_class = HRNetConfig

    def __init__(self, config: HRNetConfig, input_size: tuple[int, int] = (512, 512)) -> None:
        super().__init__()
        self.config = config
        self.feature_info = config.feature_info(input_size)
        stem = config.stem_width
        self.conv1 = nn.Conv2d(3, stem, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.conv2 = nn.Conv2d(stem, stem, 3, 2, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(Bottleneck(stem, stem), *[Bottleneck(stem * 4, stem) for _ in range(3)])
        previous = [stem * 4]
        for s, modules in enumerate(config.stage_modules):
            channels = [config.width * 2 ** i for i in range(s + 2)]
            self.add_module(f"transition{s + 1}", self._transition(previous, channels))
            last = s == len(config.stage_modules) - 1
            self.add_module(f"stage{s + 2}", nn.Sequential(*[
                HighResolutionModule(channels, config.num_blocks,
                                     multi_scale_output=not (last and m == modules - 1) or config.multi_scale_output)
                for m in range(modules)]))
            previous = channels

    @staticmethod
    def _transition(previous: list[int], channels: list[int]) -> nn.ModuleList:
        """Per new branch: a 3x3 conv where the width changes (None where it does not); a stride-2 3x3
        conv from the coarsest previous branch for the added one."""
        layers: list[nn.Module | None] = []
        for i, c in enumerate(channels):
            if i < len(previous):
                layers.append(_conv_bn(previous[i], c, 3, 1, relu=True) if previous[i] != c else None)
            else:
                layers.append(nn.Sequential(_conv_bn(previous[-1], c, 3, 2, relu=True)))
        return nn.ModuleList(layers)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = self.relu(self.bn1(self.conv1(images)))
        x = self.layer1(self.relu(self.bn2(self.conv2(x))))
        xs = [x]
        for s in range(len(self.config.stage_modules)):
            transition = getattr(self, f"transition{s + 1}")
            # an unchanged branch passes through; a new one starts from the coarsest previous branch
            xs = [layer(xs[min(i, len(xs) - 1)]) if layer is not None else xs[i] for i, layer in enumerate(transition)]
            xs = getattr(self, f"stage{s + 2}")(xs)
        return xs
