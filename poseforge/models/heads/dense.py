"""Sapiens' dense heads: body-part segmentation, relative depth and surface normals from a ViT feature map.

Sapiens (``VitHead`` / ``VitDepthHead`` / ``VitNormalHead`` in its mmseg fork) upsamples the token grid
with ``n x [ConvTranspose 4x4 stride 2 (no bias), InstanceNorm, SiLU]``, refines it with ``m x [Conv,
InstanceNorm, SiLU]`` and ends in one 1x1 convolution (``conv_seg``) per model. The instance norms have
no affine parameters, so the only weights are the convolutions'. Published settings (every size):

* segmentation: 3 x 768 deconvolutions (8x the grid), 3 x 768 1x1 convs, 28 classes;
* depth: 4 x 384 deconvolutions (16x), 2 x 384 1x1 convs, 1 channel (raw, no activation);
* normals: 3 x 768 deconvolutions (8x), 3 x 768 1x1 convs, 3 channels (normalized when decoded).

One head here may predict several of the tasks from one trunk: each task in ``tasks`` gets its own final
convolution (``seg_layer``, ``depth_layer``, ``normal_layer``), so a converted single-task checkpoint maps
its ``conv_seg`` onto the one it has.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import torch
from torch import nn

from ...errors import PoseforgeError
from ...outputs import DenseMaps
from ...registry import HEADS
from ..config import FeatureInfo, HeadConfig
from .heatmap import _DECONV_PADDING

__all__ = ["SapiensDenseHeadConfig", "SapiensDenseHead", "DENSE_TASKS", "SAPIENS_DENSE_HEADS"]

DENSE_TASKS = ("seg", "depth", "normals")
_CHANNELS = {"depth": 1, "normals": 3}  # segmentation: the codec's class count
_FINAL_NAMES = {"seg": "seg_layer", "depth": "depth_layer", "normals": "normal_layer"}


@dataclasses.dataclass(frozen=True)
class SapiensDenseHeadConfig(HeadConfig):
    """A Sapiens dense head.

    Attributes:
        tasks: the maps predicted, a subset of ``("seg", "depth", "normals")`` in that order (must match the
            model's ``dense`` codec).
        deconv_channels, deconv_kernel_sizes: the stride-2 upsampling blocks (kernels 4, 3 or 2).
        conv_channels, conv_kernel_sizes: the refinement blocks (odd kernels, size kept).
        final_kernel_size: kernel of each task's last convolution.
        depth_bias_init: initial bias of the depth output, so that a fresh model predicts positive depth
            (the scale-invariant log loss clamps non-positive predictions, which then get no gradient).
    """

    tasks: tuple[str, ...] = ("seg",)
    deconv_channels: tuple[int, ...] = (768, 768, 768)
    deconv_kernel_sizes: tuple[int, ...] = (4, 4, 4)
    conv_channels: tuple[int, ...] = (768, 768, 768)
    conv_kernel_sizes: tuple[int, ...] = (1, 1, 1)
    final_kernel_size: int = 1
    depth_bias_init: float = 1.0
    type: str = "sapiens-dense"

    def __post_init__(self) -> None:
        name = type(self).__name__
        unknown = [t for t in self.tasks if t not in DENSE_TASKS]
        if not self.tasks or unknown or len(set(self.tasks)) != len(self.tasks):
            raise PoseforgeError(f"{name}.tasks: expected distinct tasks from {', '.join(DENSE_TASKS)}, got {list(self.tasks)}")
        if tuple(t for t in DENSE_TASKS if t in self.tasks) != tuple(self.tasks):
            raise PoseforgeError(f"{name}.tasks: list them in the order {', '.join(DENSE_TASKS)}, got {list(self.tasks)}")
        if len(self.deconv_channels) != len(self.deconv_kernel_sizes):
            raise PoseforgeError(f"{name}: {len(self.deconv_channels)} deconv_channels but "
                                 f"{len(self.deconv_kernel_sizes)} deconv_kernel_sizes")
        bad = [k for k in self.deconv_kernel_sizes if k not in _DECONV_PADDING]
        if bad:
            raise PoseforgeError(f"{name}.deconv_kernel_sizes: unsupported kernel(s) {bad}; use 2, 3 or 4")
        if len(self.conv_channels) != len(self.conv_kernel_sizes):
            raise PoseforgeError(f"{name}: {len(self.conv_channels)} conv_channels but {len(self.conv_kernel_sizes)} conv_kernel_sizes")
        if any(k % 2 != 1 for k in (*self.conv_kernel_sizes, self.final_kernel_size)):
            raise PoseforgeError(f"{name}: convolution kernels must be odd, got {list(self.conv_kernel_sizes)} and "
                                 f"final {self.final_kernel_size}")
        if min((*self.deconv_channels, *self.conv_channels), default=1) <= 0:
            raise PoseforgeError(f"{name}: channel counts must be positive")

    @property
    def upsampling(self) -> int:
        """Output stride relative to the feature map (2 per deconvolution)."""
        return 2 ** len(self.deconv_channels)


def sapiens_dense_head(task: str) -> SapiensDenseHeadConfig:
    """The published head of one Sapiens task (``seg``, ``depth`` or ``normals``)."""
    if task == "depth":
        return SapiensDenseHeadConfig(tasks=("depth",), deconv_channels=(384,) * 4, deconv_kernel_sizes=(4,) * 4,
                                      conv_channels=(384, 384), conv_kernel_sizes=(1, 1))
    if task not in DENSE_TASKS:
        raise PoseforgeError(f"unknown Sapiens dense task '{task}'; known: {', '.join(DENSE_TASKS)}")
    return SapiensDenseHeadConfig(tasks=(task,))


SAPIENS_DENSE_HEADS = {task: sapiens_dense_head(task) for task in DENSE_TASKS}


@HEADS.register("sapiens-dense")
class SapiensDenseHead(nn.Module):
    """``forward([..., features [B,C,h,w]]) -> DenseMaps`` at ``upsampling`` x the feature resolution.

    ``num_outputs`` is the segmentation class count (used when ``"seg"`` is a task).
    """

    config_class = SapiensDenseHeadConfig

    def __init__(self, config: SapiensDenseHeadConfig, feature_info: Sequence[FeatureInfo], num_outputs: int,
                 input_size: tuple[int, int] | None = None) -> None:
        super().__init__()
        if "seg" in config.tasks and num_outputs <= 0:
            raise PoseforgeError("sapiens-dense head: segmentation needs num_classes > 0 in the dense codec")
        self.config = config
        self.feature_size = tuple(feature_info[-1].size)
        channels = feature_info[-1].channels
        layers: list[nn.Module] = []
        for out_channels, kernel in zip(config.deconv_channels, config.deconv_kernel_sizes):
            padding, output_padding = _DECONV_PADDING[kernel]
            layers += [nn.ConvTranspose2d(channels, out_channels, kernel, stride=2, padding=padding,
                                          output_padding=output_padding, bias=False),
                       nn.InstanceNorm2d(out_channels), nn.SiLU(inplace=True)]
            channels = out_channels
        self.deconv_layers = nn.Sequential(*layers) if layers else nn.Identity()
        layers = []
        for out_channels, kernel in zip(config.conv_channels, config.conv_kernel_sizes):
            layers += [nn.Conv2d(channels, out_channels, kernel, padding=(kernel - 1) // 2),
                       nn.InstanceNorm2d(out_channels), nn.SiLU(inplace=True)]
            channels = out_channels
        self.conv_layers = nn.Sequential(*layers) if layers else nn.Identity()
        k = config.final_kernel_size
        for task in config.tasks:
            out = num_outputs if task == "seg" else _CHANNELS[task]
            setattr(self, _FINAL_NAMES[task], nn.Conv2d(channels, out, k, padding=k // 2))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Kaiming-normal convolutions (SiLU trunk), zero biases; the depth output starts at ``depth_bias_init``."""
        for m in self.modules():
            if isinstance(m, (nn.ConvTranspose2d, nn.Conv2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for task in self.config.tasks:  # small outputs at first: a stable start for every loss
            final = getattr(self, _FINAL_NAMES[task])
            nn.init.normal_(final.weight, std=0.001)
        if "depth" in self.config.tasks:
            nn.init.constant_(self.depth_layer.bias, self.config.depth_bias_init)

    @property
    def output_size(self) -> tuple[int, int]:
        """``(width, height)`` of the maps."""
        w, h = self.feature_size
        return w * self.config.upsampling, h * self.config.upsampling

    def forward(self, features: Sequence[torch.Tensor]) -> DenseMaps:
        x = self.conv_layers(self.deconv_layers(features[-1]))
        return DenseMaps(**{task: getattr(self, _FINAL_NAMES[task])(x) for task in self.config.tasks})
