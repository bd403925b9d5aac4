"""Scale-out under ``torchrun``: process group setup, DDP, and FSDP (one shard unit per ViT block).

``torchrun --nproc_per_node N -m poseforge.cli train ...`` sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``;
:func:`init_distributed` joins the group (NCCL on CUDA, gloo on CPU). :func:`wrap_model` then wraps the
model: DDP (BatchNorm converted to SyncBatchNorm where the device supports it: CUDA), or FSDP2
(``torch.distributed.fsdp.fully_shard``) applied to every transformer block and then the whole model,
for the largest ViTs (L/H/G) whose weights, gradients and AdamW states do not fit one device.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from ..errors import PoseforgeError

__all__ = ["DistInfo", "init_distributed", "wrap_model", "choose_strategy", "all_reduce_mean", "barrier",
           "cleanup_distributed", "FSDP_BACKBONES"]

log = logging.getLogger("poseforge")

# ViT depth at and above which "auto" picks FSDP (ViT-L has 24 blocks, ViT-B 12).
_FSDP_MIN_DEPTH = 24
FSDP_BACKBONES = ("vit",)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> DistInfo:
    """Join the torchrun process group if ``WORLD_SIZE > 1`` (a no-op otherwise)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_available():
        raise PoseforgeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))
    return DistInfo(rank, local, world)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over processes (the tensor itself without a process group)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        value = value.detach().clone()
        dist.all_reduce(value)
        value /= dist.get_world_size()
    return value


def choose_strategy(model: nn.Module, requested: str) -> str:
    """``"ddp"`` or ``"fsdp"`` for ``requested`` (``"auto"``: FSDP for ViTs with >= 24 blocks)."""
    if requested != "auto":
        return requested
    backbone = getattr(model, "backbone", None)
    depth = int(getattr(getattr(backbone, "config", None), "depth", 0) or 0)
    kind = getattr(getattr(backbone, "config", None), "type", "")
    return "fsdp" if kind in FSDP_BACKBONES and depth >= _FSDP_MIN_DEPTH else "ddp"


def _shard_units(model: nn.Module) -> list[nn.Module]:
    """The modules FSDP shards one by one: every transformer block of the backbone."""
    blocks = getattr(getattr(model, "backbone", None), "blocks", None)
    if blocks is None:
        raise PoseforgeError(f"FSDP: {type(model).__name__} has no backbone.blocks to shard; use distributed=ddp")
    return list(blocks)


def wrap_model(model: nn.Module, strategy: str, info: DistInfo, device: torch.device, sync_bn: bool = True) -> nn.Module:
    """Wrap ``model`` (already on ``device``) for data-parallel training across the process group.

    DDP returns the DDP wrapper (``.module`` is the model). FSDP shards the model in place (every
    ViT block, then the root) and returns it; its parameters become DTensors sharded over ranks.
    """
    if not info.enabled:
        return model
    if strategy == "ddp":
        if sync_bn and device.type == "cuda" and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        elif any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
            log.info("DDP: BatchNorm statistics are per process (SyncBatchNorm needs CUDA)")
        ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
        # Multi-task models: a batch may leave some task experts and heads unused.
        unused = bool(getattr(model, "has_unused_parameters", False))
        return nn.parallel.DistributedDataParallel(model, device_ids=ids, broadcast_buffers=True,
                                                   find_unused_parameters=unused)
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        # FSDP2 shards contiguous parameters only: channels_last convolution weights (config channels_last)
        # go back to NCHW; the activations can stay NHWC.
        if any(not p.is_contiguous() for p in model.parameters()):
            log.info("FSDP: convolution weights kept in contiguous (NCHW) memory; FSDP shards contiguous parameters")
            model.to(memory_format=torch.contiguous_format)
        for block in _shard_units(model):
            fully_shard(block)
        fully_shard(model)
        return model
    raise PoseforgeError(f"unknown distributed strategy '{strategy}'; use ddp or fsdp")
