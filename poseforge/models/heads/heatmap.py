"""Heatmap heads: the classic (deconvolution) and simple (bilinear) ViTPose decoders.

* classic: ``n x [ConvTranspose 4x4 stride 2, BN, ReLU]`` then a 1x1 conv to K heatmaps
  (SimpleBaseline / ViTPose; two 256-channel deconvolutions give 4x the feature resolution).
* simple: ReLU, bilinear x4 upsampling, then a 3x3 conv to K heatmaps.
* optional ``conv_channels``: ``[Conv, BN, ReLU]`` blocks after the deconvolutions (mmpose's
  ``HeatmapHead.conv_layers``; Sapiens' pose heads: two 768-channel deconvolutions, two 1x1 convs).

Parameter names (``deconv_layers.{0,1,3,4}``, ``conv_layers.{0,1,3,4}``, ``final_layer``) match mmpose's
heads so converted checkpoints map one to one.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import PoseforgeError
from ...outputs import Heatmaps
from ...registry import HEADS
from ..config import FeatureInfo, HeadConfig

__all__ = ["HeatmapHeadConfig", "HeatmapHead", "CLASSIC_DECODER", "SIMPLE_DECODER", "head_preset", "deconv_layers",
           "conv_layers", "check_decoder"]

# kernel -> (padding, output_padding) giving an exact 2x upsampling with stride 2.
_DECONV_PADDING = {4: (1, 0), 3: (1, 1), 2: (0, 0)}


def deconv_layers(in_channels: int, channels: tuple[int, ...], kernels: tuple[int, ...]) -> tuple[nn.Sequential, int]:
    """``[ConvTranspose stride 2, BN, ReLU]`` per entry (mmpose's layout) and the output channel count."""
    layers: list[nn.Module] = []
    for out_channels, kernel in zip(channels, kernels):
        padding, output_padding = _DECONV_PADDING[kernel]
        layers += [nn.ConvTranspose2d(in_channels, out_channels, kernel, stride=2, padding=padding,
                                      output_padding=output_padding, bias=False),
                   nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]
        in_channels = out_channels
    return nn.Sequential(*layers), in_channels


def conv_layers(in_channels: int, channels: tuple[int, ...], kernels: tuple[int, ...]) -> tuple[nn.Module, int]:
    """``[Conv (size kept), BN, ReLU]`` per entry (mmpose's ``conv_layers``) and the output channel count;
    an identity when there are none."""
    layers: list[nn.Module] = []
    for out_channels, kernel in zip(channels, kernels):
        layers += [nn.Conv2d(in_channels, out_channels, kernel, padding=(kernel - 1) // 2),
                   nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]
        in_channels = out_channels
    return (nn.Sequential(*layers) if layers else nn.Identity()), in_channels


def check_decoder(config: HeadConfig) -> None:
    """One-line errors for a head config's ``deconv_channels`` / ``deconv_kernel_sizes`` /
    ``final_kernel_size`` (the fields the heatmap and SimCC heads share)."""
    name = type(config).__name__
    channels, kernels = config.deconv_channels, config.deconv_kernel_sizes  # type: ignore[attr-defined]
    if len(channels) != len(kernels):
        raise PoseforgeError(f"{name}: {len(channels)} deconv_channels but {len(kernels)} deconv_kernel_sizes")
    bad = [k for k in kernels if k not in _DECONV_PADDING]
    if bad:
        raise PoseforgeError(f"{name}.deconv_kernel_sizes: unsupported kernel(s) {bad}; use 2, 3 or 4")
    convs, conv_kernels = getattr(config, "conv_channels", ()), getattr(config, "conv_kernel_sizes", ())
    if len(convs) != len(conv_kernels):
        raise PoseforgeError(f"{name}: {len(convs)} conv_channels but {len(conv_kernels)} conv_kernel_sizes")
    if any(k % 2 != 1 for k in conv_kernels):
        raise PoseforgeError(f"{name}.conv_kernel_sizes: expected odd kernels, got {list(conv_kernels)}")
    if config.final_kernel_size % 2 != 1:  # type: ignore[attr-defined]
        raise PoseforgeError(f"{name}.final_kernel_size: expected an odd kernel, got {config.final_kernel_size}")  # type: ignore[attr-defined]


@dataclasses.dataclass(frozen=True)
class HeatmapHeadConfig(HeadConfig):
    """Heatmap head configuration (output channels follow the model's keypoint set).

    Attributes:
        deconv_channels: output channels of each stride-2 deconvolution block (``()`` for none).
        deconv_kernel_sizes: kernel of each deconvolution (4, 3 or 2).
        conv_channels: output channels of each ``[Conv, BN, ReLU]`` block after the deconvolutions (``()``: none).
        conv_kernel_sizes: kernel of each of those convolutions (odd; padding keeps the size).
        final_kernel_size: kernel of the last convolution (1 or 3; padding keeps the size).
        input_upsample: if > 1, apply ReLU and bilinear upsampling by this factor first (simple decoder).
    """

    deconv_channels: tuple[int, ...] = (256, 256)
    deconv_kernel_sizes: tuple[int, ...] = (4, 4)
    conv_channels: tuple[int, ...] = ()
    conv_kernel_sizes: tuple[int, ...] = ()
    final_kernel_size: int = 1
    input_upsample: int = 0
    type: str = "heatmap"

    def __post_init__(self) -> None:
        check_decoder(self)

    def output_size(self, feature_size: tuple[int, int]) -> tuple[int, int]:
        """``(width, height)`` of the heatmaps for ``(width, height)`` features."""
        w, h = feature_size
        scale = max(self.input_upsample, 1) * 2 ** len(self.deconv_channels)
        return w * scale, h * scale


CLASSIC_DECODER = HeatmapHeadConfig()
SIMPLE_DECODER = HeatmapHeadConfig(deconv_channels=(), deconv_kernel_sizes=(), final_kernel_size=3, input_upsample=4)


def head_preset(name: str) -> HeatmapHeadConfig:
    """``"classic"`` or ``"simple"`` ViTPose decoder config."""
    presets = {"classic": CLASSIC_DECODER, "simple": SIMPLE_DECODER}
    if name not in presets:
        raise PoseforgeError(f"unknown heatmap head preset '{name}'; known: {', '.join(presets)}")
    return presets[name]


@HEADS.register("heatmap")
class HeatmapHead(nn.Module):
    """``forward([..., features [B,C,h,w]]) -> Heatmaps(heatmaps [B,K,H,W])`` from the last feature map.

    Built from the backbone's ``feature_info`` (it reads the last level), the keypoint count and the
    model's input size (part of the head builder interface; a convolutional head does not need it).
    """

    config_class = HeatmapHeadConfig

    def __init__(self, config: HeatmapHeadConfig, feature_info: Sequence[FeatureInfo], num_outputs: int,
                 input_size: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.config = config
        self.num_outputs = num_outputs
        self.feature_size = tuple(feature_info[-1].size)
        self.deconv_layers, channels = deconv_layers(feature_info[-1].channels, config.deconv_channels,
                                                     config.deconv_kernel_sizes)
        self.conv_layers, channels = conv_layers(channels, config.conv_channels, config.conv_kernel_sizes)
        k = config.final_kernel_size
        self.final_layer = nn.Conv2d(channels, num_outputs, k, padding=k // 2)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """mmpose's initialization: normal(0.001) convolutions, unit BN, zero biases."""
        for m in self.modules():
            if isinstance(m, (nn.ConvTranspose2d, nn.Conv2d)):
                nn.init.normal_(m.weight, std=0.001)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def output_size(self) -> tuple[int, int]:
        """``(width, height)`` of the heatmaps."""
        return self.config.output_size(self.feature_size)

    def forward(self, features: Sequence[torch.Tensor]) -> Heatmaps:
        x = features[-1]
        if self.config.input_upsample > 1:
            x = F.interpolate(F.relu(x), scale_factor=float(self.config.input_upsample), mode="bilinear", align_corners=False)
        return Heatmaps(self.final_layer(self.conv_layers(self.deconv_layers(x))))
