"""The one device helper: pick a device, find the module inside wrappers, autocast where it helps.

Every layer (models, evaluation, inference, train, cli) takes its device through :func:`resolve_device`,
so ``"auto"`` and a CUDA request without CUDA mean the same everywhere.
"""
from __future__ import annotations

import contextlib
from typing import ContextManager

import torch
from torch import nn

from .errors import PoseforgeError

__all__ = ["resolve_device", "unwrap_model", "autocast"]


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (or ``None``): CUDA when available, else CPU. A CUDA request without CUDA is an error."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise PoseforgeError(f"device '{device}': {e}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise PoseforgeError(f"device '{device}' requested but CUDA is not available (use 'auto' or 'cpu')")
    return resolved


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside ``DistributedDataParallel`` / ``torch.compile`` wrappers (the module itself otherwise)."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None or not isinstance(inner, nn.Module):
            return model
        model = inner


def autocast(device: torch.device, enabled: bool | None = None) -> ContextManager:
    """bf16 autocast on CUDA (default on), nothing elsewhere: CPUs without bf16 units run it ~20x slower."""
    if device.type == "cuda" and (enabled is None or enabled):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if device.type == "cpu" and enabled:
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()
