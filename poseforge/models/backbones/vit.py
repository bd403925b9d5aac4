"""Plain Vision Transformer backbone of ViTPose (and the base of ViTPose++ / Sapiens).

ViTPose's details: a 16x16 stride-16 patch embedding with padding 2 (a 256x192 crop gives 16x12
tokens), absolute position embeddings without a class token (a checkpoint's class-token position is
folded into every patch position, as the official code adds it), pre-norm blocks with drop path,
and a final LayerNorm; the output is the token grid as a feature map ``[B, C, Hp, Wp]``.

Attention per config (the ViTPose ablations, for high-resolution inputs):

* ``"full"``: global attention through :func:`torch.nn.functional.scaled_dot_product_attention`.
* ``"window"``: non-overlapping windows of ``window_size`` tokens (grid padded to a multiple; padded
  tokens are never attended to).
* ``"shifted_window"``: as ``"window"``, every odd block shifted by half a window (Swin-style masks
  keep wrapped-around regions apart).
* ``"pooling_window"``: window attention whose keys/values also hold one average-pooled token per
  window, giving every window a summary of the whole image.
* any windowed kind plus ``global_blocks``: those block indices use full attention (ViTDet-style
  periodic global blocks, e.g. ``(2, 5, 8, 11)``).

ViTPose++ mixture-of-experts FFN (``num_experts > 1``), one expert per task, chosen per sample by a
dataset index; the batch is grouped by expert once per forward (one stable sort, one host sync) and
every block runs each expert on its contiguous group of samples (a loop over experts, never over
samples). Variants (``moe_variant``), all foldable into a plain FFN of the same shape for one task:

* ``"ps"`` (PS-FFN, ViTPose++): ``fc1`` shared; ``fc2`` split into a shared part giving ``C - P``
  channels and one expert per task giving the last ``P`` channels, concatenated (``P = part_features``,
  by default ``expert_ratio * C``: 192 of 768 for ViTPose++-B).
* ``"is"`` (IS-FFN): a shared FFN with ``H - Q`` hidden units plus one independent FFN per task with
  ``Q`` hidden units (``Q = part_features``, by default ``expert_ratio * H``); outputs summed.
* ``"i"`` (I-FFN): an independent FFN per task, nothing shared.

Knowledge tokens (ViTPose's token distillation): ``knowledge_tokens`` learned tokens appended to the
patch tokens (after the position embeddings) and dropped after the last block; a token of another
width (a teacher's) enters through a linear projection.

Without experts everything is static-shaped tensor code (no data-dependent Python branches) so that
``torch.compile(fullgraph=True)`` traces a whole model without graph breaks.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ...errors import PoseforgeError
from ...registry import BACKBONES
from ..config import BackboneConfig, FeatureInfo

__all__ = ["ViTConfig", "VisionTransformer", "ATTENTION_KINDS", "MOE_VARIANTS", "ExpertSegments", "token_grid",
           "sincos_pos_embed", "resize_pos_embed"]

ATTENTION_KINDS = ("full", "window", "shifted_window", "pooling_window")
MOE_VARIANTS = ("ps", "is", "i")


@dataclasses.dataclass(frozen=True)
class ViTConfig(BackboneConfig):
    """ViT backbone configuration (sizes of the official ViTPose configs live in the zoo).

    Attributes:
        embed_dim, depth, num_heads: width, number of blocks, attention heads.
        mlp_dim: hidden width of the MLP; ``None`` means ``4 * embed_dim``.
        patch_size, patch_padding: patch embedding convolution (ViTPose: 16 and 2).
        stem: ``"patch"`` (ViTPose: one ``patch_size`` convolution) or ``"conv"``: stride-2 3x3
            convolution + BatchNorm + ReLU layers down to ``patch_size``, then a 1x1 projection (Xiao et
            al., "Early convolutions help transformers see better", 2021). The convolutional stem is
            for training from scratch, where a patchify stem learns slowly; the token grid is
            ``ceil(size / patch_size)`` and ``patch_padding`` is unused.
        stem_widths: channels of the conv stem's stride levels (``log2(patch_size)`` of them); empty:
            doubling up to ``embed_dim`` (``embed_dim / 8, / 4, / 2, embed_dim`` for patch 16).
        stem_depth: 3x3 conv-BN-ReLU layers per stride level of the conv stem (the first of them
            strided), one number for every level or one per level (finest first); more layers give the
            stem more of the convolutional bias that learns fast.
        qkv_bias: bias in the fused query/key/value projection.
        layer_norm_eps: LayerNorm epsilon (official ViTPose and mmpretrain: 1e-6).
        final_norm: LayerNorm after the last block.
        drop_path_rate: stochastic depth of the last block (linearly increasing from 0).
        attention: one of :data:`ATTENTION_KINDS`.
        window_size: ``(height, width)`` of attention windows in tokens (windowed kinds only).
        global_blocks: indices of blocks that use full attention whatever ``attention`` says.
        grad_checkpointing: recompute block activations in backward (saves memory in training).
        layer_decay: recommended layer-wise LR decay rate (used when ``param_groups`` gets none).
        num_experts: task experts of the mixture-of-experts FFN (``1``: a plain FFN).
        moe_variant: ``"ps"`` (ViTPose++ PS-FFN), ``"is"`` (IS-FFN) or ``"i"`` (I-FFN); see the module doc.
        part_features: width each expert owns (PS: output channels, IS: hidden units); ``None`` means
            ``expert_ratio`` of the embedding (PS) or hidden (IS) width. Checkpoints set it explicitly.
        expert_ratio: the paper's partition ratio alpha (0.25).
        knowledge_tokens: learned tokens appended to the patch tokens (knowledge-token distillation).
        knowledge_dim: width of those tokens (``None``: ``embed_dim``); another width is projected.
        out_indices: blocks whose token grids the backbone returns, as feature maps of stride
            ``patch_size`` (negative counts from the end; the last block's map goes through the final norm).
    """

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_dim: int | None = None
    patch_size: int = 16
    patch_padding: int = 2
    stem: str = "patch"
    stem_widths: tuple[int, ...] = ()
    stem_depth: int | tuple[int, ...] = 1
    in_channels: int = 3
    qkv_bias: bool = True
    layer_norm_eps: float = 1e-6
    final_norm: bool = True
    drop_path_rate: float = 0.0
    attention: str = "full"
    window_size: tuple[int, int] = (8, 8)
    global_blocks: tuple[int, ...] = ()
    grad_checkpointing: bool = False
    layer_decay: float = 0.75
    num_experts: int = 1
    moe_variant: str = "ps"
    part_features: int | None = None
    expert_ratio: float = 0.25
    knowledge_tokens: int = 0
    knowledge_dim: int | None = None
    out_indices: tuple[int, ...] = (-1,)
    type: str = "vit"

    def __post_init__(self) -> None:
        if self.embed_dim <= 0 or self.depth <= 0 or self.num_heads <= 0:
            raise PoseforgeError(f"ViTConfig: embed_dim, depth and num_heads must be positive, got {self.embed_dim}, {self.depth}, {self.num_heads}")
        if self.embed_dim % self.num_heads:
            raise PoseforgeError(f"ViTConfig: embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.stem not in ("patch", "conv"):
            raise PoseforgeError(f"ViTConfig.stem: unknown stem '{self.stem}'; known: patch, conv")
        if self.stem == "conv" and (self.patch_size < 2 or self.patch_size & (self.patch_size - 1)):
            raise PoseforgeError(f"ViTConfig.stem: the conv stem needs a power-of-two patch_size, got {self.patch_size}")
        levels = self.patch_size.bit_length() - 1
        if self.stem_widths and (len(self.stem_widths) != levels or min(self.stem_widths) <= 0):
            raise PoseforgeError(f"ViTConfig.stem_widths: expected {levels} positive widths for patch_size "
                                 f"{self.patch_size}, got {list(self.stem_widths)}")
        depths = self.stem_depths
        if len(depths) != levels or min(depths) < 1:
            raise PoseforgeError(f"ViTConfig.stem_depth: expected >= 1 conv layers per stride level ({levels} levels for "
                                 f"patch_size {self.patch_size}), got {self.stem_depth}")
        if self.attention not in ATTENTION_KINDS:
            raise PoseforgeError(f"ViTConfig.attention: unknown kind '{self.attention}'; known: {', '.join(ATTENTION_KINDS)}")
        if min(self.window_size) <= 0:
            raise PoseforgeError(f"ViTConfig.window_size: expected positive (height, width), got {self.window_size}")
        bad = [i for i in self.global_blocks if not 0 <= i < self.depth]
        if bad:
            raise PoseforgeError(f"ViTConfig.global_blocks: indices {bad} outside 0..{self.depth - 1}")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise PoseforgeError(f"ViTConfig.drop_path_rate: expected a value in [0, 1), got {self.drop_path_rate}")
        if self.num_experts < 1:
            raise PoseforgeError(f"ViTConfig.num_experts: expected a positive count, got {self.num_experts}")
        if self.moe_variant not in MOE_VARIANTS:
            raise PoseforgeError(f"ViTConfig.moe_variant: unknown variant '{self.moe_variant}'; known: {', '.join(MOE_VARIANTS)}")
        if not 0.0 < self.expert_ratio < 1.0:
            raise PoseforgeError(f"ViTConfig.expert_ratio: expected a value in (0, 1), got {self.expert_ratio}")
        if self.num_experts > 1 and self.moe_variant != "i":
            limit = self.embed_dim if self.moe_variant == "ps" else self.hidden_dim
            if not 0 < self.expert_width < limit:
                raise PoseforgeError(f"ViTConfig.part_features: expected 1..{limit - 1} for the {self.moe_variant} "
                                     f"variant, got {self.expert_width}")
        if self.knowledge_tokens < 0 or (self.knowledge_dim is not None and self.knowledge_dim <= 0):
            raise PoseforgeError(f"ViTConfig: knowledge_tokens must be >= 0 and knowledge_dim positive, got "
                                 f"{self.knowledge_tokens}, {self.knowledge_dim}")
        bad = [i for i in self.out_indices if not -self.depth <= i < self.depth]
        if not self.out_indices or bad:
            raise PoseforgeError(f"ViTConfig.out_indices: expected block indices in {-self.depth}..{self.depth - 1}, "
                                 f"got {list(self.out_indices)}")
        if self.knowledge_tokens and self.attention != "full":
            raise PoseforgeError(f"ViTConfig.knowledge_tokens: only supported with full attention, not '{self.attention}'")

    @property
    def hidden_dim(self) -> int:
        return self.mlp_dim if self.mlp_dim is not None else 4 * self.embed_dim

    @property
    def expert_width(self) -> int:
        """Channels (PS) or hidden units (IS) of each task expert; the hidden width for I-FFN."""
        if self.moe_variant == "i":
            return self.hidden_dim
        if self.part_features is not None:
            return self.part_features
        full = self.embed_dim if self.moe_variant == "ps" else self.hidden_dim
        return int(round(self.expert_ratio * full))

    @property
    def stem_depths(self) -> tuple[int, ...]:
        """``stem_depth`` per stride level of the conv stem (finest first)."""
        if isinstance(self.stem_depth, (tuple, list)):
            return tuple(self.stem_depth)
        return (self.stem_depth,) * (self.patch_size.bit_length() - 1)

    def token_grid(self, input_size: tuple[int, int]) -> tuple[int, int]:
        """Token grid ``(rows, cols)`` of an ``(width, height)`` input."""
        if self.stem == "conv":
            w, h = input_size
            return -(-h // self.patch_size), -(-w // self.patch_size)  # each stride-2 layer rounds up
        return token_grid(input_size, self.patch_size, self.patch_padding)

    def feature_size(self, input_size: tuple[int, int]) -> tuple[int, int]:
        """``(width, height)`` of the output feature map for an ``(width, height)`` input."""
        rows, cols = self.token_grid(input_size)
        return cols, rows

    @property
    def block_indices(self) -> tuple[int, ...]:
        """``out_indices`` as non-negative block numbers."""
        return tuple(i % self.depth for i in self.out_indices)

    def feature_info(self, input_size: tuple[int, int]) -> list[FeatureInfo]:
        """One :class:`FeatureInfo` per output map (every map is the token grid: stride ``patch_size``)."""
        return [FeatureInfo(self.embed_dim, self.patch_size, self.feature_size(input_size)) for _ in self.out_indices]


def token_grid(input_size: tuple[int, int], patch_size: int, padding: int) -> tuple[int, int]:
    """Token grid ``(rows, cols)`` that the patch embedding makes of an ``(width, height)`` input."""
    w, h = input_size
    rows = (h + 2 * padding - patch_size) // patch_size + 1
    cols = (w + 2 * padding - patch_size) // patch_size + 1
    if rows <= 0 or cols <= 0:
        raise PoseforgeError(f"input size {w}x{h} is too small for {patch_size}px patches")
    return rows, cols


def sincos_pos_embed(rows: int, cols: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """MAE's 2-D sine-cosine embeddings ``[rows * cols, dim]`` (half the channels per axis; row-major)."""
    if dim % 4:
        raise PoseforgeError(f"sine-cosine position embeddings need a width divisible by 4, got {dim}")
    quarter = dim // 4
    omega = 1.0 / temperature ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    ys, xs = torch.meshgrid(torch.arange(rows, dtype=torch.float64), torch.arange(cols, dtype=torch.float64), indexing="ij")
    parts = []
    for coord in (xs.reshape(-1), ys.reshape(-1)):  # MAE: the first half encodes x (width), the second y
        angles = coord[:, None] * omega[None, :]
        parts += [angles.sin(), angles.cos()]
    return torch.cat(parts, dim=1).float()


class DropPath(nn.Module):
    """Stochastic depth: drop the residual branch of whole samples, rescaling the kept ones."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor, segments: "ExpertSegments | None" = None) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ExpertSegments:
    """A batch laid out by expert: rows ``start:end`` of the (sorted) batch use expert ``expert``.

    Build it with :meth:`build` from a dataset index (an int for the whole batch, or one per sample);
    ``order`` is the stable sort that groups the samples (``None`` when the batch is already grouped),
    :meth:`sort` / :meth:`unsort` apply it and its inverse to any ``[B, ...]`` tensor.
    """

    def __init__(self, segments: Sequence[tuple[int, int, int]], order: torch.Tensor | None = None,
                 inverse: torch.Tensor | None = None) -> None:
        self.segments = tuple((int(e), int(s), int(t)) for e, s, t in segments)
        self.order = order
        self.inverse = inverse

    def __repr__(self) -> str:
        return f"ExpertSegments({list(self.segments)}, sorted={self.order is not None})"

    @classmethod
    def build(cls, index: "int | torch.Tensor | Sequence[int]", batch: int, num: int,
              what: str = "dataset_index") -> "ExpertSegments":
        """Group ``batch`` samples by ``index`` (values in ``0..num-1``); one host sync for a tensor."""
        if isinstance(index, torch.Tensor) and index.ndim == 0:
            index = int(index)
        if isinstance(index, (int, np.integer)):
            i = int(index)
            if not 0 <= i < num:
                raise PoseforgeError(f"{what}: {i} is outside 0..{num - 1}")
            return cls(((i, 0, batch),) if batch else ())
        t = torch.as_tensor(index)
        if t.is_floating_point() or t.dtype == torch.bool:
            raise PoseforgeError(f"{what}: expected integer indices, got {t.dtype}")
        t = t.reshape(-1).long()
        if t.numel() != batch:
            raise PoseforgeError(f"{what}: expected {batch} values (one per sample), got {t.numel()}")
        if batch == 0:
            return cls(())
        valid = (t >= 0) & (t < num)
        counts = torch.bincount(torch.where(valid, t, num), minlength=num + 1).tolist()  # the one sync
        if counts[num]:
            bad = t[~valid][:5].tolist()
            raise PoseforgeError(f"{what}: values must be in 0..{num - 1}, got {bad}")
        used = [(e, c) for e, c in enumerate(counts[:num]) if c]
        if len(used) == 1:
            return cls(((used[0][0], 0, batch),))
        order = torch.argsort(t, stable=True)
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(batch, device=t.device)
        segments, start = [], 0
        for e, c in used:
            segments.append((e, start, start + c))
            start += c
        return cls(segments, order, inverse)

    def relabel(self, table: Sequence[int]) -> "ExpertSegments":
        """The same grouping with labels mapped through ``table`` (e.g. task -> expert), order dropped:
        for a batch that is already sorted."""
        return ExpertSegments([(table[e], s, t) for e, s, t in self.segments])

    def sort(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.order is None else x.index_select(0, self.order.to(x.device))

    def unsort(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.inverse is None else x.index_select(0, self.inverse.to(x.device))

    def apply(self, modules: Sequence[nn.Module], x: torch.Tensor) -> torch.Tensor:
        """``modules[label](rows)`` on every segment of the grouped ``x``, concatenated."""
        if len(self.segments) == 1:
            return modules[self.segments[0][0]](x)
        return torch.cat([modules[e](x[s:t]) for e, s, t in self.segments], dim=0)


class PartiallySharedMlp(nn.Module):
    """PS-FFN (ViTPose++): shared ``fc1``; ``fc2`` = shared ``C - P`` channels + the task expert's ``P``."""

    def __init__(self, dim: int, hidden_dim: int, num_experts: int, part_features: int) -> None:
        super().__init__()
        self.part_features = part_features
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim - part_features)
        self.experts = nn.ModuleList(nn.Linear(hidden_dim, part_features) for _ in range(num_experts))

    def forward(self, x: torch.Tensor, segments: ExpertSegments) -> torch.Tensor:
        h = self.act(self.fc1(x))
        return torch.cat([self.fc2(h), segments.apply(self.experts, h)], dim=-1)


class IndependentSharedMlp(nn.Module):
    """IS-FFN: a shared FFN (``H - Q`` hidden units) plus the task's own FFN (``Q`` hidden units), summed."""

    def __init__(self, dim: int, hidden_dim: int, num_experts: int, part_features: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim - part_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim - part_features, dim)
        self.experts = nn.ModuleList(Mlp(dim, part_features) for _ in range(num_experts))

    def forward(self, x: torch.Tensor, segments: ExpertSegments) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x))) + segments.apply(self.experts, x)


class IndependentMlp(nn.Module):
    """I-FFN: one independent FFN per task."""

    def __init__(self, dim: int, hidden_dim: int, num_experts: int) -> None:
        super().__init__()
        self.experts = nn.ModuleList(Mlp(dim, hidden_dim) for _ in range(num_experts))

    def forward(self, x: torch.Tensor, segments: ExpertSegments) -> torch.Tensor:
        return segments.apply(self.experts, x)


def build_mlp(config: "ViTConfig") -> nn.Module:
    """The FFN of one block: plain, or the configured mixture-of-experts variant."""
    dim, hidden, n = config.embed_dim, config.hidden_dim, config.num_experts
    if n == 1:
        return Mlp(dim, hidden)
    if config.moe_variant == "ps":
        return PartiallySharedMlp(dim, hidden, n, config.expert_width)
    if config.moe_variant == "is":
        return IndependentSharedMlp(dim, hidden, n, config.expert_width)
    return IndependentMlp(dim, hidden, n)


def _window_layout(grid: tuple[int, int], window: tuple[int, int], shift: tuple[int, int],
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-window token region ids and validity, both ``[num_windows, tokens_per_window]``.

    The grid is padded to a multiple of the window, then rolled by ``-shift``. Tokens attend to
    each other only inside one region (Swin's split of wrapped-around parts) and never to padding.
    """
    (rows, cols), (wh, ww), (sh, sw) = grid, window, shift
    hq, wq = rows + (-rows) % wh, cols + (-cols) % ww
    ys = torch.arange(hq, device=device)
    xs = torch.arange(wq, device=device)
    valid = (((ys + sh) % hq) < rows)[:, None] & (((xs + sw) % wq) < cols)[None, :]
    ry = (ys >= hq - wh).long() + (ys >= hq - sh).long() if sh else torch.zeros_like(ys)
    rx = (xs >= wq - ww).long() + (xs >= wq - sw).long() if sw else torch.zeros_like(xs)
    region = ry[:, None] * 3 + rx[None, :]
    nh, nw = hq // wh, wq // ww

    def windows(t: torch.Tensor) -> torch.Tensor:
        return t.view(nh, wh, nw, ww).permute(0, 2, 1, 3).reshape(nh * nw, wh * ww)

    return windows(region), windows(valid)


class Attention(nn.Module):
    """Multi-head self-attention over the token grid: full, windowed, shifted or pooling windows."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, mode: str = "full",
                 window_size: tuple[int, int] = (8, 8), shift: bool = False) -> None:
        super().__init__()
        if mode not in ("full", "window", "pool"):
            raise PoseforgeError(f"attention mode '{mode}' is not one of full, window, pool")
        self.num_heads = num_heads
        self.mode = mode
        self.window_size = tuple(window_size)
        self.shift = shift
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def extra_repr(self) -> str:
        if self.mode == "full":
            return f"heads={self.num_heads}, full"
        return f"heads={self.num_heads}, {self.mode} {self.window_size}, shift={self.shift}"

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        if self.mode == "full":
            b, n, c = x.shape
            q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
            out = F.scaled_dot_product_attention(q, k, v)
            return self.proj(out.transpose(1, 2).reshape(b, n, c))
        return self.proj(self._windowed(x, grid))

    def _windowed(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        b, n, c = x.shape
        rows, cols = grid
        heads, d = self.num_heads, c // self.num_heads
        wh, ww = min(self.window_size[0], rows), min(self.window_size[1], cols)
        sh = wh // 2 if self.shift and rows > wh else 0
        sw = ww // 2 if self.shift and cols > ww else 0
        pad_h, pad_w = (-rows) % wh, (-cols) % ww
        hq, wq = rows + pad_h, cols + pad_w
        nh, nw = hq // wh, wq // ww
        num_windows, tokens = nh * nw, wh * ww

        qkv = self.qkv(x).view(b, rows, cols, 3 * c)
        if pad_h or pad_w:
            qkv = F.pad(qkv, (0, 0, 0, pad_w, 0, pad_h))
        if sh or sw:
            qkv = torch.roll(qkv, shifts=(-sh, -sw), dims=(1, 2))
        qkv = qkv.view(b, nh, wh, nw, ww, 3, heads, d).permute(5, 0, 1, 3, 6, 2, 4, 7)
        q, k, v = qkv.reshape(3, b * num_windows, heads, tokens, d).unbind(0)

        needs_mask = bool(pad_h or pad_w or sh or sw)
        mask = None
        if needs_mask or self.mode == "pool":
            region, valid = _window_layout((rows, cols), (wh, ww), (sh, sw), x.device)
        if needs_mask:
            mask = (region[:, :, None] == region[:, None, :]) & valid[:, None, :]
            # A padded query may have no valid key; letting it see itself avoids NaN rows (it is cropped).
            mask = mask | torch.eye(tokens, dtype=torch.bool, device=x.device)
        if self.mode == "pool":
            weight = valid.to(k.dtype)  # [windows, tokens]
            norm = weight.sum(-1).clamp(min=1.0)
            weight = (weight / norm[:, None]).view(1, num_windows, 1, tokens, 1)

            def pooled(t: torch.Tensor) -> torch.Tensor:  # one mean token per window, shown to every window
                p = (t.view(b, num_windows, heads, tokens, d) * weight).sum(3)  # [b, windows, heads, d]
                p = p.transpose(1, 2).unsqueeze(1).expand(b, num_windows, heads, num_windows, d)
                return p.reshape(b * num_windows, heads, num_windows, d)

            k = torch.cat([k, pooled(k)], dim=2)
            v = torch.cat([v, pooled(v)], dim=2)
            if mask is not None:
                mask = torch.cat([mask, mask.new_ones(num_windows, tokens, num_windows)], dim=-1)
        if mask is not None:
            mask = mask.unsqueeze(0).expand(b, *mask.shape).reshape(b * num_windows, 1, tokens, mask.shape[-1])
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out = out.view(b, nh, nw, heads, wh, ww, d).permute(0, 1, 4, 2, 5, 3, 6).reshape(b, hq, wq, c)
        if sh or sw:
            out = torch.roll(out, shifts=(sh, sw), dims=(1, 2))
        if pad_h or pad_w:
            out = out[:, :rows, :cols]
        return out.reshape(b, n, c)


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, num_heads: int, hidden_dim: int, qkv_bias: bool, eps: float, drop_path: float,
                 attention_mode: str = "full", window_size: tuple[int, int] = (8, 8), shift: bool = False,
                 mlp: nn.Module | None = None) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qkv_bias, attention_mode, window_size, shift)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = mlp if mlp is not None else Mlp(dim, hidden_dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, grid: tuple[int, int], segments: ExpertSegments | None = None) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), grid))
        return x + self.drop_path(self.mlp(self.norm2(x), segments))


class PatchEmbed(nn.Module):
    def __init__(self, in_channels: int, embed_dim: int, patch_size: int, padding: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class ConvStem(nn.Module):
    """``log2(patch_size)`` stride levels of ``depths[level]`` 3x3 conv-BN-ReLU layers each (the first
    layer of a level strided; widths ``widths``, default doubling up to ``embed_dim``), then a 1x1
    projection ``proj`` to ``embed_dim`` (see :class:`ViTConfig` ``stem``)."""

    def __init__(self, in_channels: int, embed_dim: int, patch_size: int, widths: tuple[int, ...],
                 depths: tuple[int, ...]) -> None:
        super().__init__()
        steps = patch_size.bit_length() - 1
        widths = tuple(widths) or tuple(max(embed_dim >> (steps - 1 - i), 8) for i in range(steps))
        layers: list[nn.Module] = []
        for width, level_depth in zip(widths, depths):
            for i in range(level_depth):
                layers += [nn.Conv2d(in_channels, width, 3, stride=2 if i == 0 else 1, padding=1, bias=False),
                           nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
                in_channels = width
        self.stem = nn.Sequential(*layers)
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.stem(x))


def block_attention(config: ViTConfig, index: int) -> tuple[str, bool]:
    """``(mode, shifted)`` of block ``index``: mode is ``full``, ``window`` or ``pool``."""
    if config.attention == "full" or index in config.global_blocks:
        return "full", False
    if config.attention == "pooling_window":
        return "pool", False
    return "window", config.attention == "shifted_window" and index % 2 == 1


@BACKBONES.register("vit")
class VisionTransformer(nn.Module):
    """ViTPose backbone. ``forward(images [B,3,H,W]) -> [features [B, embed_dim, Hp, Wp], ...]``, one map per
    ``out_indices`` entry (by default the last block's, after the final norm), described by ``feature_info``.

    The position embeddings are stored for the token grid of ``input_size`` (``(width, height)``)
    and resized bicubically when an input of another size comes in.
    """

    config_class = ViTConfig

    def __init__(self, config: ViTConfig, input_size: tuple[int, int] = (192, 256)) -> None:
        super().__init__()
        self.config = config
        self.feature_info = config.feature_info(input_size)
        self.grad_checkpointing = int(config.grad_checkpointing)  # recompute every k-th block (0: none)
        if config.stem == "conv":
            self.patch_embed: nn.Module = ConvStem(config.in_channels, config.embed_dim, config.patch_size,
                                                      config.stem_widths, config.stem_depths)
        else:
            self.patch_embed = PatchEmbed(config.in_channels, config.embed_dim, config.patch_size, config.patch_padding)
        self.pos_grid = config.token_grid(input_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.pos_grid[0] * self.pos_grid[1], config.embed_dim))
        rates = [config.drop_path_rate * i / max(config.depth - 1, 1) for i in range(config.depth)]
        blocks = []
        for i in range(config.depth):
            mode, shift = block_attention(config, i)
            blocks.append(Block(config.embed_dim, config.num_heads, config.hidden_dim, config.qkv_bias,
                                config.layer_norm_eps, rates[i], mode, config.window_size, shift, build_mlp(config)))
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.LayerNorm(config.embed_dim, eps=config.layer_norm_eps) if config.final_norm else nn.Identity()
        if config.knowledge_tokens:
            width = config.knowledge_dim or config.embed_dim
            self.knowledge_token = nn.Parameter(torch.zeros(1, config.knowledge_tokens, width))
            self.knowledge_proj = nn.Linear(width, config.embed_dim) if width != config.embed_dim else None
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Initialization of the MAE / ViTPose code: truncated normal(0.02) linears and positions."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.config.knowledge_tokens:
            nn.init.trunc_normal_(self.knowledge_token, std=0.02)
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed.proj.bias)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    # ----- shapes -------------------------------------------------------------------------------
    def feature_size(self, input_size: tuple[int, int]) -> tuple[int, int]:
        """``(width, height)`` of the feature map for an ``(width, height)`` input."""
        return self.config.feature_size(input_size)

    @property
    def num_layers(self) -> int:
        return self.config.depth

    # ----- optimization helpers -----------------------------------------------------------------
    def layer_id(self, name: str) -> int:
        """Depth of parameter ``name`` for layer-wise LR decay: 0 embeddings, i+1 block i, depth+1 rest."""
        if name in ("pos_embed", "knowledge_token") or name.startswith(("patch_embed.", "knowledge_proj.")):
            return 0
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        return self.config.depth + 1

    def no_weight_decay(self) -> set[str]:
        """Parameter names (besides biases and norms) that get no weight decay."""
        return {"pos_embed", "knowledge_token"}

    def set_grad_checkpointing(self, enable: bool | int = True) -> None:
        """Recompute block activations in backward: ``True`` every block, ``k`` every k-th block, ``False`` none."""
        self.grad_checkpointing = int(enable)

    # ----- forward ------------------------------------------------------------------------------
    def interpolated_pos_embed(self, rows: int, cols: int) -> torch.Tensor:
        """Position embeddings ``[1, rows*cols, C]`` for a token grid, resized bicubically if needed."""
        if (rows, cols) == self.pos_grid:
            return self.pos_embed
        return resize_pos_embed(self.pos_embed, self.pos_grid, (rows, cols))

    def expert_segments(self, dataset_index: "int | torch.Tensor | ExpertSegments | None", batch: int) -> ExpertSegments | None:
        """How a batch splits over the experts (``None`` for a plain FFN, where the index is ignored)."""
        if self.config.num_experts == 1:
            return None
        if dataset_index is None:
            raise PoseforgeError(f"this ViT has {self.config.num_experts} task experts: pass dataset_index "
                                 "(an int for the whole batch or one per sample)")
        if isinstance(dataset_index, ExpertSegments):
            return dataset_index
        return ExpertSegments.build(dataset_index, batch, self.config.num_experts)

    def forward(self, images: torch.Tensor,
                dataset_index: "int | torch.Tensor | ExpertSegments | None" = None) -> list[torch.Tensor]:
        """Feature maps ``[B, C, rows, cols]`` of the ``out_indices`` blocks; ``dataset_index`` picks each
        sample's expert (MoE FFN only)."""
        x = self.patch_embed(images)
        b, c, rows, cols = x.shape
        # Tokens [B, N, C] in contiguous memory (free when the patch map is channels-last): the transposed view
        # of an NCHW map would hand its layout on to the whole residual stream (an add takes its first
        # operand's), so that every LayerNorm copied its input and every residual add read across strides.
        x = x.flatten(2).transpose(1, 2).contiguous() + self.interpolated_pos_embed(rows, cols)
        segments = self.expert_segments(dataset_index, b)
        if segments is not None:
            x = segments.sort(x)
        if self.config.knowledge_tokens:
            token = self.knowledge_token if self.knowledge_proj is None else self.knowledge_proj(self.knowledge_token)
            x = torch.cat([x, token.to(x.dtype).expand(b, -1, -1)], dim=1)
        grid = (rows, cols)
        wanted = self.config.block_indices
        last = self.config.depth - 1
        outputs = {}
        for i, block in enumerate(self.blocks):
            if self.grad_checkpointing and i % self.grad_checkpointing == 0 and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, grid, segments, use_reentrant=False)
            else:
                x = block(x, grid, segments)
            if i in wanted:
                outputs[i] = self.norm(x) if i == last else x
        return [self._to_map(outputs[i], segments, b, c, rows, cols) for i in wanted]

    def forward_visible(self, images: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Final-norm tokens ``[B, n, C]`` of the patch tokens ``keep`` ``[B, n]`` (row-major indices into the
        token grid; ``None``: all of them in order), the position embeddings added before the subset is taken.

        The masked-image-modelling path (MAE): only the kept tokens go through the blocks, so the cost falls
        with the mask ratio. Full attention only (a window needs the whole grid) and no experts or knowledge
        tokens; gradient checkpointing applies as in :meth:`forward`, which this leaves untouched."""
        c = self.config
        if c.attention != "full" or c.global_blocks or c.num_experts > 1 or c.knowledge_tokens:
            raise PoseforgeError("ViT.forward_visible: needs full attention, no task experts and no knowledge tokens")
        x = self.patch_embed(images)
        b, dim, rows, cols = x.shape
        x = x.flatten(2).transpose(1, 2).contiguous() + self.interpolated_pos_embed(rows, cols)
        if keep is not None:
            x = torch.gather(x, 1, keep.to(x.device, torch.long)[..., None].expand(-1, -1, dim))
        grid = (rows, cols)  # (full attention ignores it)
        for i, block in enumerate(self.blocks):
            if self.grad_checkpointing and i % self.grad_checkpointing == 0 and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, grid, None, use_reentrant=False)
            else:
                x = block(x, grid, None)
        return self.norm(x)

    def _to_map(self, x: torch.Tensor, segments: ExpertSegments | None, b: int, c: int, rows: int, cols: int) -> torch.Tensor:
        if self.config.knowledge_tokens:
            x = x[:, :rows * cols]
        if segments is not None:
            x = segments.unsort(x)
        # [B, N, C] -> [B, C, rows, cols] as a view: the result is channels_last-strided already.
        return x.transpose(1, 2).reshape(b, c, rows, cols)


def resize_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int], new_grid: tuple[int, int]) -> torch.Tensor:
    """Position embeddings ``[1, rows*cols, C]`` of token grid ``grid`` resized bicubically to ``new_grid``."""
    (r0, c0), (rows, cols) = grid, new_grid
    pe = pos_embed.reshape(1, r0, c0, -1).permute(0, 3, 1, 2)
    pe = F.interpolate(pe.float(), size=(rows, cols), mode="bicubic", align_corners=False).to(pos_embed.dtype)
    return pe.flatten(2).transpose(1, 2)


def fold_cls_pos_embed(pos_embed: torch.Tensor, num_patches: int) -> torch.Tensor:
    """Fold a checkpoint's class-token position into the patch positions (as official ViTPose adds it).

    ``[1, 1 + N, C] -> [1, N, C]``; a ``[1, N, C]`` tensor is returned unchanged.
    """
    if pos_embed.ndim != 3 or pos_embed.shape[0] != 1:
        raise PoseforgeError(f"pos_embed: expected shape [1, N, C], got {list(pos_embed.shape)}")
    if pos_embed.shape[1] == num_patches + 1:
        return pos_embed[:, 1:] + pos_embed[:, :1]
    if pos_embed.shape[1] == num_patches:
        return pos_embed
    raise PoseforgeError(f"pos_embed: {pos_embed.shape[1]} positions do not fit a grid of {num_patches} patches")


def guess_grid(num_positions: int, candidates: Iterable[tuple[int, int]] = ()) -> tuple[int, int] | None:
    """Token grid ``(rows, cols)`` for a position count: ViTPose crops are 4:3 (h:w), else square."""
    for rows, cols in candidates:
        if rows * cols == num_positions:
            return rows, cols
    k = math.isqrt(num_positions // 12) if num_positions % 12 == 0 else 0
    if k and 12 * k * k == num_positions:
        return 4 * k, 3 * k
    s = math.isqrt(num_positions)
    if s * s == num_positions:
        return s, s
    return None
