"""Bottom-up heads: every person's keypoint heatmaps and associative-embedding tags in one pass
(:class:`~poseforge.outputs.HeatmapsTags`, with ``heatmaps_hr`` at twice the resolution).

* ``litepose-fusion`` - LitePose's fusion deconv head (Wang et al., CVPR 2022, official
  ``pose_mobilenet.py``). Starting from the deepest backbone map, each of ``n`` stride-2 deconvolutions
  is the sum of a deconvolution of the running map ("refined") and of a backbone lateral one level
  shallower ("raw"), then BN + ReLU. After each of the last two deconvolutions a final layer sums a
  depthwise-separable ``5x5`` convolution of the running map and one of the backbone map of the same
  resolution: the first gives ``K`` heatmaps + ``K x D`` tags (stride 4), the second ``K`` heatmaps
  (stride 2; official ``WITH_AE_LOSS: [True, False]``, ``TAG_PER_JOINT: True``). With the LitePose
  backbone (maps at strides 2, 4, 8, 16, 16) the three deconvolutions read strides 16 -> 8 -> 4 -> 2.
* ``higherhrnet`` - HigherHRNet's head (Cheng et al., CVPR 2020): a 1x1 convolution of the stride-4
  map gives ``K`` heatmaps + ``K x D`` tags; their concatenation with the features goes through a 4x4
  deconvolution (+ BN, ReLU) and four basic blocks, and a 1x1 convolution gives ``K`` stride-2 heatmaps.

The heads do not interpret the ``K x D`` tag channels (one convolution makes them); their order is the
codec's (``associative-embedding``: channel ``d x K + k``, mmpose's layout). Parameter names
follow the official modules (``deconv_refined.0``, ``final_raw.1.conv.3``; ``final_layers.0``,
``deconv_layers.0.0.0``), so official checkpoints map one to one.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import torch
from torch import nn

from ...errors import PoseforgeError
from ...outputs import HeatmapsTags
from ...registry import HEADS
from ..backbones.hrnet import BasicBlock
from ..config import FeatureInfo, HeadConfig
from .heatmap import _DECONV_PADDING

__all__ = ["LitePoseHeadConfig", "LitePoseHead", "HigherHRNetHeadConfig", "HigherHRNetHead", "SeparableConv"]


def _check_deconv_kernels(where: str, kernels: Sequence[int]) -> None:
    bad = [k for k in kernels if k not in _DECONV_PADDING]
    if bad:
        raise PoseforgeError(f"{where}: unsupported deconvolution kernel(s) {bad}; use 2, 3 or 4")


def _deconv(cin: int, cout: int, kernel: int) -> nn.ConvTranspose2d:
    """Stride-2 deconvolution that exactly doubles the size (no bias: BN follows)."""
    padding, output_padding = _DECONV_PADDING[kernel]
    return nn.ConvTranspose2d(cin, cout, kernel, stride=2, padding=padding, output_padding=output_padding, bias=False)


@dataclasses.dataclass(frozen=True)
class LitePoseHeadConfig(HeadConfig):
    """LitePose fusion deconv head configuration.

    Attributes:
        deconv_channels: output channels of each stride-2 fusion deconvolution (at least two: the last
            two feed the stride-4 and stride-2 outputs). LitePose-Auto-XS: ``(16, 24, 24)``.
        deconv_kernel_sizes: kernel of each deconvolution (4, 3 or 2; official 4).
        final_kernel_size: depthwise kernel of the final separable convolutions (official 5).
        tag_dim: associative-embedding dimensions per keypoint (``D``; official 1).
    """

    deconv_channels: tuple[int, ...] = (16, 24, 24)
    deconv_kernel_sizes: tuple[int, ...] = (4, 4, 4)
    final_kernel_size: int = 5
    tag_dim: int = 1
    type: str = "litepose-fusion"

    def __post_init__(self) -> None:
        where = "LitePoseHeadConfig"
        if len(self.deconv_channels) < 2 or any(c <= 0 for c in self.deconv_channels):
            raise PoseforgeError(f"{where}.deconv_channels: expected at least two positive widths, "
                                 f"got {self.deconv_channels}")
        if len(self.deconv_kernel_sizes) != len(self.deconv_channels):
            raise PoseforgeError(f"{where}: {len(self.deconv_channels)} deconv_channels but "
                                 f"{len(self.deconv_kernel_sizes)} deconv_kernel_sizes")
        _check_deconv_kernels(f"{where}.deconv_kernel_sizes", self.deconv_kernel_sizes)
        if self.final_kernel_size < 1 or self.final_kernel_size % 2 == 0:
            raise PoseforgeError(f"{where}.final_kernel_size: expected an odd kernel, got {self.final_kernel_size}")
        if self.tag_dim < 1:
            raise PoseforgeError(f"{where}.tag_dim: expected >= 1, got {self.tag_dim}")


class SeparableConv(nn.Module):
    """Depthwise ``k x k`` + BN + ReLU, then a 1x1 convolution without bias (official ``SepConv2d``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 5) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, kernel_size, 1, kernel_size // 2, groups=in_channels, bias=False),
            nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, out_channels, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _check_fusion_sizes(levels: Sequence[FeatureInfo]) -> None:
    """``levels`` deepest first: the first two maps share a size and each later one is exactly twice the
    previous one (a stride-2 deconvolution doubles sizes; its sum with a lateral needs equal shapes)."""
    sizes = [tuple(info.size) for info in levels]
    want = [sizes[0]] + [(sizes[0][0] * 2 ** i, sizes[0][1] * 2 ** i) for i in range(len(sizes) - 1)]
    if sizes != want:
        stride = max(info.stride for info in levels)
        raise PoseforgeError(f"LitePoseHead: backbone maps of sizes {sizes[::-1]} (w, h) do not double level by "
                             f"level; use an input size divisible by {stride}")


@HEADS.register("litepose-fusion")
class LitePoseHead(nn.Module):
    """``forward(features) -> HeatmapsTags`` from a backbone's maps (the last ``len(deconv_channels) + 2``)."""

    config_class = LitePoseHeadConfig

    def __init__(self, config: LitePoseHeadConfig, feature_info: Sequence[FeatureInfo], num_outputs: int,
                 input_size: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.config = config
        self.num_keypoints = num_outputs
        n = len(config.deconv_channels)
        if len(feature_info) < n + 2:
            raise PoseforgeError(f"LitePoseHead: {n} deconvolutions read {n + 2} backbone maps, the backbone gives "
                                 f"{len(feature_info)}")
        # levels[0] is the deepest map; deconvolution i adds lateral levels[i + 1] and its output has the
        # size of levels[i + 2] (the lateral of the next deconvolution, or of a final layer).
        levels = list(feature_info)[::-1][:n + 2]
        _check_fusion_sizes(levels)
        self.deconv_refined = nn.ModuleList()
        self.deconv_raw = nn.ModuleList()
        self.deconv_bnrelu = nn.ModuleList()
        running = levels[0].channels
        for i, (channels, kernel) in enumerate(zip(config.deconv_channels, config.deconv_kernel_sizes)):
            self.deconv_refined.append(_deconv(running, channels, kernel))
            self.deconv_raw.append(_deconv(levels[i + 1].channels, channels, kernel))
            self.deconv_bnrelu.append(nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True)))
            running = channels
        k, d = num_outputs, config.tag_dim
        outs = (k + k * d, k)  # stride 4: heatmaps + tags; stride 2: heatmaps
        self.final_refined = nn.ModuleList(
            SeparableConv(config.deconv_channels[n - 2 + j], outs[j], config.final_kernel_size) for j in range(2))
        self.final_raw = nn.ModuleList(
            SeparableConv(levels[n + j].channels, outs[j], config.final_kernel_size) for j in range(2))
        # Outputs start near zero, as HigherHRNet's heads do (normal, std 0.001): targets are mostly zero,
        # and with PyTorch's default init the first steps only shrink ~0.6 RMS outputs back down.
        for final in (*self.final_refined, *self.final_raw):
            nn.init.normal_(final.conv[-1].weight, std=0.001)

    def forward(self, features: Sequence[torch.Tensor]) -> HeatmapsTags:
        n = len(self.config.deconv_channels)
        levels = list(features)[::-1][:n + 2]  # deepest first
        x = levels[0]
        outputs = []
        for i in range(n):
            x = self.deconv_bnrelu[i](self.deconv_refined[i](x) + self.deconv_raw[i](levels[i + 1]))
            j = i - (n - 2)
            if j >= 0:  # the last two deconvolutions: stride-4 and stride-2 outputs
                outputs.append(self.final_refined[j](x) + self.final_raw[j](levels[i + 2]))
        k = self.num_keypoints
        return HeatmapsTags(heatmaps=outputs[0][:, :k], tags=outputs[0][:, k:], heatmaps_hr=outputs[1])


@dataclasses.dataclass(frozen=True)
class HigherHRNetHeadConfig(HeadConfig):
    """HigherHRNet head configuration (official COCO W32 settings by default).

    Attributes:
        deconv_channels: channels of the deconvolution and its basic blocks (32).
        deconv_kernel_size: kernel of the deconvolution (4, 3 or 2).
        num_basic_blocks: basic blocks after the deconvolution (4).
        final_kernel_size: kernel of the two output convolutions (1 or 3).
        tag_dim: associative-embedding dimensions per keypoint (``D``).
    """

    deconv_channels: int = 32
    deconv_kernel_size: int = 4
    num_basic_blocks: int = 4
    final_kernel_size: int = 1
    tag_dim: int = 1
    type: str = "higherhrnet"

    def __post_init__(self) -> None:
        where = "HigherHRNetHeadConfig"
        _check_deconv_kernels(f"{where}.deconv_kernel_size", (self.deconv_kernel_size,))
        if self.deconv_channels <= 0 or self.num_basic_blocks < 0 or self.tag_dim < 1 or \
                self.final_kernel_size not in (1, 3):
            raise PoseforgeError(f"{where}: expected deconv_channels > 0, num_basic_blocks >= 0, tag_dim >= 1 and "
                                 f"final_kernel_size 1 or 3, got {self.deconv_channels}, {self.num_basic_blocks}, "
                                 f"{self.tag_dim}, {self.final_kernel_size}")


@HEADS.register("higherhrnet")
class HigherHRNetHead(nn.Module):
    """``forward(features) -> HeatmapsTags`` from the backbone's first (stride-4) map."""

    config_class = HigherHRNetHeadConfig

    def __init__(self, config: HigherHRNetHeadConfig, feature_info: Sequence[FeatureInfo], num_outputs: int,
                 input_size: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.config = config
        self.num_keypoints = num_outputs
        channels = feature_info[0].channels
        k, d, c = num_outputs, config.tag_dim, config.deconv_channels
        pad = config.final_kernel_size // 2
        self.final_layers = nn.ModuleList([nn.Conv2d(channels, k + k * d, config.final_kernel_size, padding=pad),
                                           nn.Conv2d(c, k, config.final_kernel_size, padding=pad)])
        self.deconv_layers = nn.ModuleList([nn.Sequential(
            nn.Sequential(_deconv(channels + k + k * d, c, config.deconv_kernel_size), nn.BatchNorm2d(c),
                          nn.ReLU(inplace=True)),
            *[nn.Sequential(BasicBlock(c)) for _ in range(config.num_basic_blocks)])])

    def forward(self, features: Sequence[torch.Tensor]) -> HeatmapsTags:
        x = features[0]
        low = self.final_layers[0](x)
        high = self.final_layers[1](self.deconv_layers[0](torch.cat([x, low], 1)))
        k = self.num_keypoints
        return HeatmapsTags(heatmaps=low[:, :k], tags=low[:, k:], heatmaps_hr=high)
