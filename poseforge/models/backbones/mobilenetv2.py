"""LitePose's single-branch backbone: MobileNetV2 inverted residuals with large depthwise kernels
(Wang et al., "Lite Pose: Efficient Architecture Design for 2D Human Pose Estimation", CVPR 2022).

The stem (a stride-2 3x3 convolution to ``stem_hidden`` channels, a 3x3 depthwise convolution and a
linear 1x1 projection to ``stem_channels``) is followed by stages of inverted residual blocks: 1x1
expansion to ``make_divisible(round(in x expand_ratio), 8)`` channels, a ``k x k`` depthwise
convolution (stride on the first block of a stage), a linear 1x1 projection, and the input added when
shapes agree. Convolutions have no bias; BatchNorm follows each, ReLU6 all but the projections.

The LitePose-Auto architectures (``mobile_configs/search-*.json`` of mit-han-lab/litepose) all have four
stages of strides 2/2/2/1 (the last two share stride 16), expansion 6 and 7x7 kernels; their widths and
depths live in the zoo. Every stage's width, depth, stride, kernel and expansion is a config field,
and each block is a plain module, so a once-for-all supernet can reuse the layout and slice weights.

``forward`` returns the stem map (stride 2) and every stage's output (``out_indices`` 0..4), the levels
the fusion deconv head reads. Module names follow the official ``pose_mobilenet.py`` (``first.0.0``,
``stage.2.5.depth_conv.0`` ...), so official checkpoints load after stripping nothing but a prefix.
"""
from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from ...errors import PoseforgeError
from ...registry import BACKBONES
from ..config import BackboneConfig, FeatureInfo

__all__ = ["MobileNetV2Config", "LitePoseMobileNetV2", "InvertedResidual", "make_divisible"]


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """``value`` rounded to the nearest multiple of ``divisor`` (at least ``min_value``), never more than 10%
    below it (the rounding of MobileNetV2 and of the official LitePose code)."""
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


@dataclasses.dataclass(frozen=True)
class MobileNetV2Config(BackboneConfig):
    """LitePose backbone configuration (the LitePose-Auto sizes live in the zoo).

    Attributes:
        widths: output channels of each stage.
        depths: inverted residual blocks of each stage.
        strides: stride of each stage's first block (1 or 2).
        kernel_sizes: depthwise kernel of each stage's blocks (odd; LitePose: 7, its ablation 3/5/7/9).
        expand_ratios: hidden width of each stage's blocks as a multiple of their input width.
        stem_channels: channels of the stem's output (the official ``input_channel``).
        stem_hidden: channels of the stem's first two convolutions (32 in every official model).
        out_indices: maps to return: 0 the stem (stride 2), ``i`` stage ``i``.
        bn_eps, bn_momentum: BatchNorm settings (PyTorch's defaults, as the official code).
    """

    widths: tuple[int, ...] = (16, 32, 48, 80)
    depths: tuple[int, ...] = (6, 8, 10, 10)
    strides: tuple[int, ...] = (2, 2, 2, 1)
    kernel_sizes: tuple[int, ...] = (7, 7, 7, 7)
    expand_ratios: tuple[float, ...] = (6.0, 6.0, 6.0, 6.0)
    stem_channels: int = 16
    stem_hidden: int = 32
    out_indices: tuple[int, ...] = (0, 1, 2, 3, 4)
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    type: str = "litepose-mobilenetv2"

    def __post_init__(self) -> None:
        where = "MobileNetV2Config"
        n = len(self.widths)
        problems = []
        if n == 0:
            problems.append("widths: at least one stage is needed")
        for name in ("depths", "strides", "kernel_sizes", "expand_ratios"):
            if len(getattr(self, name)) != n:
                problems.append(f"{name}: {len(getattr(self, name))} entries for {n} stages")
        if any(w <= 0 for w in self.widths) or self.stem_channels <= 0 or self.stem_hidden <= 0:
            problems.append(f"widths, stem_channels and stem_hidden must be positive, got {self.widths}, "
                            f"{self.stem_channels}, {self.stem_hidden}")
        if any(d < 1 for d in self.depths):
            problems.append(f"depths: every stage needs at least one block, got {self.depths}")
        if any(s not in (1, 2) for s in self.strides):
            problems.append(f"strides: expected 1 or 2 per stage, got {self.strides}")
        if any(k < 1 or k % 2 == 0 for k in self.kernel_sizes):
            problems.append(f"kernel_sizes: expected odd kernels (3, 5, 7, 9 ...), got {self.kernel_sizes}")
        if any(not e > 0 for e in self.expand_ratios):
            problems.append(f"expand_ratios: expected positive ratios, got {self.expand_ratios}")
        if not self.out_indices or any(not 0 <= i <= n for i in self.out_indices) or \
                list(self.out_indices) != sorted(set(self.out_indices)):
            problems.append(f"out_indices: expected increasing indices in 0..{n}, got {self.out_indices}")
        if problems:
            raise PoseforgeError(f"{where}: " + "; ".join(problems))

    def level_channels(self) -> list[int]:
        """Channels of every level: the stem, then each stage."""
        return [self.stem_channels, *self.widths]

    def level_strides(self) -> list[int]:
        """Stride of every level: 2 for the stem, then each stage's cumulative stride."""
        strides = [2]
        for s in self.strides:
            strides.append(strides[-1] * s)
        return strides

    def feature_info(self, input_size: tuple[int, int]) -> list[FeatureInfo]:
        """One :class:`FeatureInfo` per ``out_indices`` entry (a stride-2 layer halves a size, rounding up)."""
        w, h = input_size
        sizes = [(math.ceil(w / 2), math.ceil(h / 2))]
        for s in self.strides:
            pw, ph = sizes[-1]
            sizes.append((math.ceil(pw / s), math.ceil(ph / s)))
        channels, strides = self.level_channels(), self.level_strides()
        return [FeatureInfo(channels[i], strides[i], sizes[i]) for i in self.out_indices]


def conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1,
            activation: bool = True, bn_eps: float = 1e-5, bn_momentum: float = 0.1) -> nn.Sequential:
    """Convolution without bias + BatchNorm (+ ReLU6): the official ``convbnrelu`` keys ``0``, ``1``."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=bn_momentum)]
    if activation:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """1x1 expansion, ``k x k`` depthwise (``stride``), linear 1x1 projection; plus the input when the
    shapes agree. A plain module: an elastic (supernet) version slices these same weights."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, kernel_size: int = 7,
                 expand_ratio: float = 6.0, bn_eps: float = 1e-5, bn_momentum: float = 0.1) -> None:
        super().__init__()
        hidden = make_divisible(round(in_channels * expand_ratio), 8)
        bn = {"bn_eps": bn_eps, "bn_momentum": bn_momentum}
        self.inv = conv_bn(in_channels, hidden, 1, **bn)
        self.depth_conv = conv_bn(hidden, hidden, kernel_size, stride, groups=hidden, **bn)
        self.point_conv = conv_bn(hidden, out_channels, 1, activation=False, **bn)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.point_conv(self.depth_conv(self.inv(x)))
        return out + x if self.residual else out


@BACKBONES.register("litepose-mobilenetv2")
class LitePoseMobileNetV2(nn.Module):
    """``forward(images [B,3,H,W]) -> [features ...]``, one map per ``out_indices`` entry (``feature_info``)."""

    config_class = MobileNetV2Config

    def __init__(self, config: MobileNetV2Config, input_size: tuple[int, int] = (256, 256)) -> None:
        super().__init__()
        self.config = config
        self.feature_info = config.feature_info(input_size)
        bn = {"bn_eps": config.bn_eps, "bn_momentum": config.bn_momentum}
        hidden = config.stem_hidden
        self.first = nn.Sequential(conv_bn(3, hidden, 3, stride=2, **bn),
                                   conv_bn(hidden, hidden, 3, groups=hidden, **bn),
                                   *conv_bn(hidden, config.stem_channels, 1, activation=False, **bn))
        stages = []
        channels = config.stem_channels
        for width, depth, stride, kernel, expand in zip(config.widths, config.depths, config.strides,
                                                         config.kernel_sizes, config.expand_ratios):
            blocks = []
            for b in range(depth):
                blocks.append(InvertedResidual(channels, width, stride if b == 0 else 1, kernel, expand, **bn))
                channels = width
            stages.append(nn.Sequential(*blocks))
        self.stage = nn.ModuleList(stages)
        self.last_index = max(config.out_indices)

    @property
    def num_layers(self) -> int:
        """Stem + stages, for layer-wise LR decay (depth 0 is the stem)."""
        return 1 + len(self.stage)

    def layer_id(self, name: str) -> int:
        """Depth of parameter ``name``: 0 the stem, ``i`` stage ``i``."""
        parts = name.split(".")
        if parts[0] == "stage" and len(parts) > 1 and parts[1].isdigit():
            return int(parts[1]) + 1
        return 0 if parts[0] == "first" else self.num_layers

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = self.first(images)
        levels = [x]
        for stage in self.stage[:self.last_index]:
            x = stage(x)
            levels.append(x)
        return [levels[i] for i in self.config.out_indices]
