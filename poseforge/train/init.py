"""Weight initialization choices for training from scratch.

``sincos``: 2-D sine-cosine position embeddings (MAE's fixed embeddings, which every MAE-initialized
ViTPose starts from). A randomly initialized ViT otherwise starts with near-zero position information
and has to discover the token layout before it can localize anything; starting from the sine-cosine
layout makes heatmap training from scratch converge much sooner.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import PoseforgeError
from ..models.backbones.vit import sincos_pos_embed  # (defined with the ViT: MAE pretraining uses it too)

__all__ = ["sincos_pos_embed", "init_position_embeddings", "init_backbone", "POS_EMBED_INITS"]

POS_EMBED_INITS = ("model", "sincos")


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


def _token_grid(config: Any, num_positions: int) -> tuple[int, int] | None:
    """The saved model's token grid, from its config (a ViT's), else guessed from the position count."""
    from ..models.backbones.vit import guess_grid
    from ..models.config import config_from_dict

    saved = config if not isinstance(config, dict) else config_from_dict(config)
    grid = getattr(saved.backbone, "token_grid", None)
    return tuple(grid(tuple(saved.input_size))) if grid is not None else guess_grid(num_positions)


@torch.no_grad()
def init_backbone(model: nn.Module, source: str) -> None:
    """Copy the ``backbone.*`` weights of a saved model (an MAE pretraining run folder, a model folder, a
    ``.safetensors`` file or a ``.pt`` checkpoint) into ``model.backbone``.

    ``pos_embed`` is resized bicubically from the saved token grid to this backbone's; every other backbone
    key must exist on both sides with the same shape (a one-line :class:`PoseforgeError` names the file and
    the first key that does not). The rest of the saved model (an MAE decoder, a pose head) is ignored."""
    from ..models.backbones.vit import resize_pos_embed

    backbone = getattr(model, "backbone", None)
    if backbone is None:
        raise PoseforgeError(f"model.backbone_init: {type(model).__name__} has no backbone")
    from ..models.loading import read_saved_model

    config, weights, where = read_saved_model(source)
    saved = {k[len("backbone."):]: v for k, v in weights.items() if k.startswith("backbone.")}
    if not saved:
        raise PoseforgeError(f"{where}: no backbone.* weights to initialize the backbone from")
    own = backbone.state_dict()
    for key, value in own.items():
        if key not in saved:
            raise PoseforgeError(f"{where}: backbone key '{key}' is missing (the model's backbone has it)")
        if key == "pos_embed" and saved[key].shape != value.shape:
            pos = saved[key]
            grid = getattr(backbone, "pos_grid", None)
            src = _token_grid(config, pos.shape[1]) if pos.ndim == 3 else None
            if grid is None or src is None or src[0] * src[1] != pos.shape[1] or pos.shape[-1] != value.shape[-1]:
                raise PoseforgeError(f"{where}: backbone key 'pos_embed' {list(pos.shape)} cannot be resized to "
                                     f"{list(value.shape)}")
            saved[key] = resize_pos_embed(pos, src, tuple(grid))
        elif tuple(saved[key].shape) != tuple(value.shape):
            raise PoseforgeError(f"{where}: backbone key '{key}' has shape {list(saved[key].shape)}, the model's "
                                 f"{list(value.shape)}")
    extra = sorted(set(saved) - set(own))
    if extra:
        raise PoseforgeError(f"{where}: backbone key '{extra[0]}' is not in the model's backbone"
                             + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""))
    backbone.load_state_dict({k: saved[k].to(v.dtype) for k, v in own.items()}, strict=True)
