"""Activation checkpointing policies for training: which ViT blocks recompute their activations in backward.

Training keeps every block's intermediate activations for the backward pass; for the large ViTs (ViT-L/H/G
with 24-40 blocks, the Sapiens backbones) at a useful batch these, not the weights, fill the accelerator.
A checkpointed block keeps only its input and runs its forward again during backward
(``torch.utils.checkpoint``, non-reentrant, so it composes with DDP, FSDP2 and ``torch.compile``): about
one extra forward of that block per step, for the memory of all its intermediates. The gradients are the
same as without it (the recomputation repeats the same operations, dropout and drop-path draws included:
the checkpoint restores the RNG state).

Policies (``TrainConfig.activation_checkpointing``):

* ``none``: keep everything (fastest when it fits);
* ``all``: every block;
* ``every_K``: every K-th block (blocks 0, K, 2K, ...): 1/K of the blocks' activations saved for 1/K of
  the recomputation, a middle ground when ``all`` is more than needed;
* ``auto``: ``all`` for ViT backbones with >= 24 blocks when training on CUDA (their activations at batch
  64 are tens of GiB), otherwise what the model config asks (``grad_checkpointing``, default off). On the
  CPU memory is rarely the limit, and the recomputation costs step time (``benchmarks/train_throughput.py``
  measures ``all`` against ``none``).
"""
from __future__ import annotations

import logging
import re

import torch
from torch import nn

from ..errors import PoseforgeError

__all__ = ["checkpoint_every", "apply_activation_checkpointing", "AUTO_MIN_DEPTH"]

log = logging.getLogger("poseforge")

# ViT depth from which "auto" checkpoints on CUDA: ViT-L (24), ViT-H (32), ViT-G (40), Sapiens (>= 24).
AUTO_MIN_DEPTH = 24


def _backbone_config(model: nn.Module) -> object | None:
    return getattr(getattr(model, "backbone", None), "config", None)


def checkpoint_every(model: nn.Module, policy: str, device: torch.device | str) -> int:
    """How often ``model``'s ViT blocks recompute under ``policy`` on ``device``: 0 none, 1 every block,
    K every K-th block. A model without a checkpointable backbone gets 0 from ``auto`` and an error from
    the explicit policies."""
    device_type = torch.device(device).type
    config = _backbone_config(model)
    supported = hasattr(getattr(model, "backbone", None), "set_grad_checkpointing")
    if policy == "none":
        return 0
    if policy == "auto":
        if not supported:
            return 0
        depth = int(getattr(config, "depth", 0) or 0)
        if getattr(config, "type", "") == "vit" and depth >= AUTO_MIN_DEPTH and device_type == "cuda":
            return 1
        return int(getattr(config, "grad_checkpointing", 0) or 0)
    match = re.fullmatch(r"all|every_([1-9][0-9]*)", policy)
    if match is None:
        raise PoseforgeError(f"activation_checkpointing: expected none, all, auto or every_K (e.g. every_2), got {policy!r}")
    if not supported:
        raise PoseforgeError(f"activation_checkpointing={policy}: {type(model).__name__}'s backbone has no "
                             "checkpointable blocks (ViT backbones have); use none")
    return 1 if policy == "all" else int(match.group(1))


def apply_activation_checkpointing(model: nn.Module, policy: str, device: torch.device | str) -> int:
    """Set ``model``'s block recomputation for ``policy`` (see the module doc); returns the interval
    (0: off). Call it on the unwrapped model before DDP / FSDP wrap it."""
    every = checkpoint_every(model, policy, device)
    backbone = getattr(model, "backbone", None)
    if backbone is not None and hasattr(backbone, "set_grad_checkpointing"):
        backbone.set_grad_checkpointing(every)
    if every:
        depth = int(getattr(_backbone_config(model), "depth", 0) or 0)
        blocks = len(range(0, depth, every)) if depth else "?"
        log.info(f"activation checkpointing ({policy}): {blocks} of {depth or '?'} blocks recompute in backward")
    return every
