"""Weight initialization choices for training from scratch.

``sincos``: 2-D sine-cosine position embeddings (MAE's fixed embeddings, which every MAE-initialized
ViTPose starts from). A randomly initialized ViT otherwise starts with near-zero position information
and has to discover the token layout before it can localize anything; starting from the sine-cosine
layout makes heatmap training from scratch converge much sooner.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import PoseforgeError

__all__ = ["sincos_pos_embed", "init_position_embeddings", "POS_EMBED_INITS"]

POS_EMBED_INITS = ("model", "sincos")


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


@torch.no_grad()
def init_position_embeddings(model: nn.Module, kind: str) -> None:
    """Set the backbone's ``pos_embed`` [1, rows*cols, C] as ``kind`` says (``"model"`` keeps it)."""
    if kind == "model":
        return
    if kind not in POS_EMBED_INITS:
        raise PoseforgeError(f"unknown position embedding init '{kind}'; known: {', '.join(POS_EMBED_INITS)}")
    backbone = getattr(model, "backbone", None)
    pos = getattr(backbone, "pos_embed", None)
    grid = getattr(backbone, "pos_grid", None)
    if not isinstance(pos, nn.Parameter) or grid is None:
        raise PoseforgeError(f"{type(model).__name__}: no backbone.pos_embed / pos_grid to initialize")
    rows, cols = grid
    pos.copy_(sincos_pos_embed(rows, cols, pos.shape[-1]).to(pos.dtype).unsqueeze(0))
