"""RTMCC head: RTMPose's SimCC head with a gated attention unit over the keypoint tokens (Jiang et al.,
"RTMPose: Real-Time Multi-Person Pose Estimation based on MMPose", 2023).

``features [B,C,h,w]`` (the last map) -> a large-kernel convolution to one map per keypoint ->
each map flattened to a token -> ScaleNorm + linear to ``hidden_dim`` -> one gated attention unit
(GAU, Hua et al. 2022) across the K keypoint tokens -> two linear classifiers over the x and y bins
(``split_ratio`` bins per input pixel). Decoded by the ``simcc`` codec, trained with the KL loss.

The GAU: ``x' = ScaleNorm(x)``; ``u, v, z = split(SiLU(W_uv x'))`` with ``u, v`` of width
``expansion x hidden`` and ``z`` of width ``s``; ``q, k = z * gamma + beta`` (per-dimension scale and
offset); ``A = relu(q k^T / sqrt(s))^2``; out ``= W_o (u * A v)``, added to ``res_scale * x``.

Parameter names follow mmpose's ``RTMCCHead`` (``final_layer``, ``mlp.0.g``, ``mlp.1``, ``gau.uv``,
``gau.o``, ``gau.gamma``, ``gau.beta``, ``gau.ln.g``, ``gau.res_scale.scale``, ``cls_x``, ``cls_y``).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import PoseforgeError
from ...outputs import SimCCLogits
from ...registry import HEADS
from ..config import FeatureInfo, HeadConfig
from .simcc import SimCCHeadConfig

__all__ = ["RTMCCHeadConfig", "RTMCCHead", "RTMCC_HEAD", "ScaleNorm", "GatedAttentionUnit", "check_gau_head"]

_ACTIVATIONS = {"silu": nn.SiLU, "relu": nn.ReLU}


@dataclasses.dataclass(frozen=True)
class RTMCCHeadConfig(HeadConfig):
    """RTMCC head configuration (RTMPose's values are the defaults; output count follows the keypoint set).

    Attributes:
        final_kernel_size: kernel of the convolution to one map per keypoint (odd; RTMPose: 7).
        hidden_dim: width of the keypoint tokens (``gau_cfg.hidden_dims``).
        attention_dim: width ``s`` of the GAU's shared query/key projection.
        expansion: the GAU's value/gate width as a multiple of ``hidden_dim``.
        activation: ``"silu"`` (RTMPose) or ``"relu"``.
        dropout: dropout on the attention kernel (training only).
        drop_path: stochastic depth of the GAU branch (training only).
        split_ratio: bins per input pixel (the ``simcc`` codec's, kept in step by the model zoo).
    """

    final_kernel_size: int = 7
    hidden_dim: int = 256
    attention_dim: int = 128
    expansion: float = 2.0
    activation: str = "silu"
    dropout: float = 0.0
    drop_path: float = 0.0
    split_ratio: float = 2.0
    type: str = "rtmcc"

    def __post_init__(self) -> None:
        if self.hidden_dim < 1 or self.attention_dim < 1 or not self.expansion > 0:
            raise PoseforgeError("RTMCCHeadConfig: hidden_dim, attention_dim and expansion must be positive")
        check_gau_head(self, "RTMCCHeadConfig")

    num_bins = SimCCHeadConfig.num_bins


def check_gau_head(config: HeadConfig, where: str) -> None:
    """The checks every GAU SimCC head config (RTMCC, RTMW) shares: odd ``final_kernel_size``, a known
    ``activation``, ``dropout`` / ``drop_path`` in [0, 1), positive ``split_ratio``."""
    if config.final_kernel_size < 1 or config.final_kernel_size % 2 == 0:
        raise PoseforgeError(f"{where}.final_kernel_size: expected an odd size >= 1, got {config.final_kernel_size}")
    if config.activation not in _ACTIVATIONS:
        raise PoseforgeError(f"{where}.activation: expected one of {', '.join(_ACTIVATIONS)}, got {config.activation!r}")
    if not 0 <= config.dropout < 1 or not 0 <= config.drop_path < 1:
        raise PoseforgeError(f"{where}: dropout and drop_path must be in [0, 1)")
    if not config.split_ratio > 0:
        raise PoseforgeError(f"{where}.split_ratio: expected > 0, got {config.split_ratio}")


RTMCC_HEAD = RTMCCHeadConfig()


class ScaleNorm(nn.Module):
    """``g * x / max(||x|| / sqrt(dim), eps)`` over the last dimension (one learned scalar ``g``)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.scale = dim ** -0.5
        self.eps = eps
        self.g = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True) * self.scale
        return x / norm.clamp(min=self.eps) * self.g


class Scale(nn.Module):
    """Per-channel learned scale (initialized to 1)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class GatedAttentionUnit(nn.Module):
    """Self-attention GAU over tokens ``[B, N, dim]`` with a residual (see the module doc)."""

    def __init__(self, dim: int, attention_dim: int, expansion: float, activation: str, dropout: float,
                 drop_path: float) -> None:
        super().__init__()
        self.e = int(dim * expansion)
        self.s = attention_dim
        self.ln = ScaleNorm(dim)
        self.uv = nn.Linear(dim, 2 * self.e + self.s, bias=False)
        self.gamma = nn.Parameter(torch.rand(2, self.s))
        self.beta = nn.Parameter(torch.rand(2, self.s))
        self.o = nn.Linear(self.e, dim, bias=False)
        self.res_scale = Scale(dim)
        self.act = _ACTIVATIONS[activation]()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u, v, z = torch.split(self.act(self.uv(self.ln(x))), [self.e, self.e, self.s], dim=-1)
        qk = z.unsqueeze(2) * self.gamma + self.beta  # [B, N, 2, s]
        q, k = qk.unbind(2)
        kernel = self.dropout(F.relu(q @ k.transpose(1, 2) / math.sqrt(self.s)).square())
        out = self.o(u * (kernel @ v))
        if self.training and self.drop_path > 0:
            keep = 1 - self.drop_path
            out = out * x.new_empty(x.shape[0], 1, 1).bernoulli_(keep) / keep
        return self.res_scale(x) + out


@HEADS.register("rtmcc")
class RTMCCHead(nn.Module):
    """``forward([..., features [B,C,h,w]]) -> SimCCLogits(simcc_x [B,K,Wx], simcc_y [B,K,Hy], keypoint_maps
    [B,K,h,w])``; the keypoint maps are the final convolution's (an optional dense loss supervises them)."""

    config_class = RTMCCHeadConfig

    def __init__(self, config: RTMCCHeadConfig, feature_info: Sequence[FeatureInfo], num_outputs: int,
                 input_size: tuple[int, int] | None = None) -> None:
        super().__init__()
        if input_size is None:
            raise PoseforgeError("RTMCCHead needs the model's input_size")
        self.config = config
        self.num_outputs = num_outputs
        last = feature_info[-1]
        k = config.final_kernel_size
        self.final_layer = nn.Conv2d(last.channels, num_outputs, k, padding=k // 2)
        flat = last.size[0] * last.size[1]
        self.mlp = nn.Sequential(ScaleNorm(flat), nn.Linear(flat, config.hidden_dim, bias=False))
        self.gau = GatedAttentionUnit(config.hidden_dim, config.attention_dim, config.expansion, config.activation,
                                      config.dropout, config.drop_path)
        bins_x, bins_y = config.num_bins(input_size)
        self.cls_x = nn.Linear(config.hidden_dim, bins_x, bias=False)
        self.cls_y = nn.Linear(config.hidden_dim, bins_y, bias=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """mmpose's RTMCCHead initialization: normal(0.001) convolution, normal(0.01) linears, zero biases;
        the GAU's scale/offset uniform in [0, 1), its norms and residual scale 1."""
        nn.init.normal_(self.final_layer.weight, std=0.001)
        nn.init.zeros_(self.final_layer.bias)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)
        self.gau.gamma.uniform_()
        self.gau.beta.uniform_()

    def forward(self, features: Sequence[torch.Tensor]) -> SimCCLogits:
        maps = self.final_layer(features[-1])
        tokens = self.gau(self.mlp(maps.flatten(2)))
        return SimCCLogits(self.cls_x(tokens), self.cls_y(tokens), maps)
