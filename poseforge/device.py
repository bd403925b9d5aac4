"""The one device helper: pick a device, find the module inside wrappers, autocast where it helps, and
poseforge's CPU threading defaults.

Every layer (models, evaluation, inference, train, cli) takes its device through :func:`resolve_device`,
so ``"auto"`` and a CUDA request without CUDA mean the same everywhere.

CPU threads (the same for :class:`~poseforge.inference.Predictor` and ``poseforge predict``, which builds
one; see docs/performance.md, "Threads on CPU"):

* **how many**: torch's own default (about one intra-op thread per CPU core; ``torch.get_num_threads()``
  says how many, ``OMP_NUM_THREADS`` overrides it) unless ``Predictor(num_threads=N)`` sets it
  (:func:`set_cpu_threads`).
* **idle workers sleep**: ``OMP_WAIT_POLICY=PASSIVE`` (:data:`OMP_WAIT_POLICY_DEFAULT`) unless the
  environment says otherwise. OpenMP reads it once, when torch loads, so :func:`prefer_sleeping_threads`
  runs before torch is imported: in ``poseforge predict`` / ``demo`` and when the predictor module is
  imported first (``from poseforge import Predictor`` before ``import torch``). Spinning workers take the
  cores from the thread that has work when other processes share them (benchmarks/predictor_start.py
  measures both).

This module imports torch only inside its functions, so that :func:`prefer_sleeping_threads` can run
before torch loads.
"""
from __future__ import annotations

import contextlib
import os
import sys
from typing import TYPE_CHECKING, ContextManager

from .errors import PoseforgeError

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["resolve_device", "unwrap_model", "autocast", "prefer_sleeping_threads", "set_cpu_threads",
           "OMP_WAIT_POLICY_DEFAULT"]

OMP_WAIT_POLICY_DEFAULT = "PASSIVE"


def prefer_sleeping_threads() -> bool:
    """Set ``OMP_WAIT_POLICY`` to :data:`OMP_WAIT_POLICY_DEFAULT` unless the environment has it; return
    whether the policy in effect is that default (``False`` when torch loaded OpenMP before without it:
    the policy cannot change after that)."""
    if "torch" in sys.modules:
        return os.environ.get("OMP_WAIT_POLICY", "").upper() == OMP_WAIT_POLICY_DEFAULT
    os.environ.setdefault("OMP_WAIT_POLICY", OMP_WAIT_POLICY_DEFAULT)
    return os.environ["OMP_WAIT_POLICY"].upper() == OMP_WAIT_POLICY_DEFAULT


def set_cpu_threads(num_threads: int | None) -> int:
    """Set torch's intra-op thread count (process-wide) when ``num_threads`` is given, else keep torch's
    setting; return the count in effect. A count below 1 is a one-line error."""
    import torch

    if num_threads is not None:
        if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
            raise PoseforgeError(f"num_threads must be a positive integer or None, got {num_threads!r}")
        if torch.get_num_threads() != num_threads:
            torch.set_num_threads(num_threads)
    return torch.get_num_threads()


def resolve_device(device: "str | torch.device | None" = "auto") -> "torch.device":
    """``"auto"`` (or ``None``): CUDA when available, else CPU. A CUDA request without CUDA is an error."""
    import torch

    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise PoseforgeError(f"device '{device}': {e}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise PoseforgeError(f"device '{device}' requested but CUDA is not available (use 'auto' or 'cpu')")
    return resolved


def unwrap_model(model: "nn.Module") -> "nn.Module":
    """The model inside ``DistributedDataParallel`` / ``torch.compile`` wrappers (the module itself otherwise)."""
    from torch import nn

    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None or not isinstance(inner, nn.Module):
            return model
        model = inner


def autocast(device: "torch.device", enabled: bool | None = None) -> ContextManager:
    """bf16 autocast on CUDA (default on), nothing elsewhere: CPUs without bf16 units run it ~20x slower."""
    import torch

    if device.type == "cuda" and (enabled is None or enabled):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if device.type == "cpu" and enabled:
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()
