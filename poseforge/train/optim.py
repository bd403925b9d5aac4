"""Optimizer and learning-rate schedule.

* :func:`build_optimizer`: AdamW over ``model.param_groups`` (layer-wise LR decay, no weight decay on
  norms, biases and position embeddings); each group keeps its ``lr_scale``. The update kernel is picked
  by :func:`adamw_implementation` (``optim.implementation``): ``fused`` (one multi-tensor kernel) on
  CUDA and on the CPU, where torch has one, ``foreach`` on other accelerators, the per-tensor loop
  elsewhere. A checkpoint saved by one implementation resumes under another (the saved state is the
  same numbers; the choice is re-applied on load).
* :class:`LRSchedule`: linear warm-up over optimizer steps (mmpose ``LinearLR``, by iteration) times a
  decay evaluated by epoch: multi-step (``MultiStepLR``), cosine or linear (both per iteration, as
  mmpose's ``convert_to_iter_based``), or constant. ``lr(step) = base_lr x lr_scale x factor(step)``;
  the state is one integer, so resuming restores it exactly.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

import torch
from torch import nn

from ..device import unwrap_model
from ..errors import PoseforgeError
from .config import OPTIMIZER_IMPLEMENTATIONS, OptimSection, ScheduleSection

__all__ = ["build_optimizer", "adamw_implementation", "OPTIMIZER_IMPLEMENTATIONS", "LRSchedule"]

# The group keys that pick the update kernel: they describe this process's optimizer, not the saved state.
_KERNEL_KEYS = ("fused", "foreach", "capturable")


def adamw_implementation(device_types: Iterable[str], requested: str = "auto") -> dict[str, bool]:
    """``torch.optim.AdamW`` keyword arguments (``fused`` / ``foreach``) for parameters on ``device_types``.

    ``auto``: fused where torch has a fused AdamW kernel for every device type (CUDA, CPU, XPU, MPS),
    else foreach where it has multi-tensor kernels, else the per-tensor loop. Fused is chosen on the CPU
    too: torch has a fused CPU kernel, while foreach has none there (it falls back to a slower loop);
    ``benchmarks/train_throughput.py`` times the update per kernel.
    """
    from torch.utils._foreach_utils import (_get_foreach_kernels_supported_devices,
                                            _get_fused_kernels_supported_devices)

    if requested not in OPTIMIZER_IMPLEMENTATIONS:
        raise PoseforgeError(f"optim.implementation: expected one of {', '.join(OPTIMIZER_IMPLEMENTATIONS)}, got {requested!r}")
    types = set(device_types) or {"cpu"}
    fused_ok = types <= set(_get_fused_kernels_supported_devices())
    foreach_ok = types <= set(_get_foreach_kernels_supported_devices())
    if requested == "fused" and not fused_ok:
        raise PoseforgeError(f"optim.implementation=fused: torch has no fused AdamW for {', '.join(sorted(types))}")
    choice = requested if requested != "auto" else "fused" if fused_ok else "foreach" if foreach_ok else "for_loop"
    return {"fused": choice == "fused", "foreach": choice == "foreach"}


def build_optimizer(model: nn.Module, config: OptimSection, lr: float | None = None) -> torch.optim.AdamW:
    """AdamW over the model's parameter groups (``model.param_groups`` when it has it).

    ``lr`` overrides ``config.lr`` (e.g. after ``auto_scale_lr``). Every group gets ``initial_lr``
    (``lr x lr_scale``), which :class:`LRSchedule` multiplies. The kernel (fused, foreach, loop) follows
    ``config.implementation`` and the parameters' device (:func:`adamw_implementation`), so build the
    optimizer after the model is on its device.
    """
    base_lr = float(config.lr if lr is None else lr)
    estimator = unwrap_model(model)
    if hasattr(estimator, "param_groups"):
        groups = estimator.param_groups(base_lr, config.weight_decay, config.layer_decay)
    else:  # a plain module: decay on weights (>= 2-D), none on biases and norms
        decay = [p for p in estimator.parameters() if p.requires_grad and p.ndim > 1]
        no_decay = [p for p in estimator.parameters() if p.requires_grad and p.ndim <= 1]
        groups = [{"name": "decay", "params": decay, "lr": base_lr, "lr_scale": 1.0, "weight_decay": config.weight_decay},
                  {"name": "no_decay", "params": no_decay, "lr": base_lr, "lr_scale": 1.0, "weight_decay": 0.0}]
        groups = [g for g in groups if g["params"]]
    if not groups:
        raise PoseforgeError("build_optimizer: the model has no trainable parameters")
    for g in groups:
        g["initial_lr"] = g["lr"]
    kernel = adamw_implementation({p.device.type for g in groups for p in g["params"]}, config.implementation)
    optimizer = torch.optim.AdamW(groups, lr=base_lr, betas=tuple(config.betas), eps=config.eps,
                                  weight_decay=config.weight_decay, **kernel)
    optimizer.register_load_state_dict_pre_hook(_keep_kernel)
    return optimizer


def _keep_kernel(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> dict[str, Any]:
    """Load-state pre-hook: ``Optimizer.load_state_dict`` takes every group option from the saved state,
    the kernel flags included, so a fused run's checkpoint would turn a resumed loop optimizer fused (and
    the reverse). Keep this optimizer's kernel; the flags also decide where ``step`` counters live
    (on the parameters' device for fused), which ``load_state_dict`` then gets right."""
    mine = optimizer.param_groups
    saved = state.get("param_groups", [])
    if len(saved) != len(mine):  # load_state_dict reports the mismatch itself
        return state
    groups = [{**g, **{k: m[k] for k in _KERNEL_KEYS if k in m}} for g, m in zip(saved, mine)]
    # a fused run's step counters are device tensors; the loop and foreach kernels keep them on the CPU
    on_host = {i for g in groups if not (g.get("fused") or g.get("capturable")) for i in g["params"]}
    per_param = {i: ({**s, "step": s["step"].cpu()} if i in on_host and isinstance(s.get("step"), torch.Tensor) else s)
                 for i, s in state.get("state", {}).items()}
    return {**state, "param_groups": groups, "state": per_param}


class LRSchedule:
    """Per-step learning rate: warm-up factor x decay factor, applied to every group's ``initial_lr``.

    Args:
        optimizer: groups must carry ``initial_lr`` (:func:`build_optimizer` sets it).
        config: the schedule section.
        steps_per_epoch: optimizer steps in one epoch (milestones and decays are in epochs).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, config: ScheduleSection, steps_per_epoch: int) -> None:
        if steps_per_epoch < 1:
            raise PoseforgeError(f"LRSchedule: steps_per_epoch must be >= 1, got {steps_per_epoch}")
        self.optimizer = optimizer
        self.config = config
        self.steps_per_epoch = int(steps_per_epoch)
        self.step_count = 0
        for g in optimizer.param_groups:
            g.setdefault("initial_lr", g["lr"])
        self._apply()

    def factor(self, step: int) -> float:
        """Multiplier of the base learning rate at optimizer step ``step`` (0-based)."""
        c = self.config
        warm = 1.0
        if c.warmup_iters > 0 and step < c.warmup_iters:
            warm = c.warmup_start + (1.0 - c.warmup_start) * step / c.warmup_iters
        epoch = step // self.steps_per_epoch
        if c.kind == "step":
            decay = c.gamma ** sum(1 for m in c.milestones if epoch >= m)
        elif c.kind in ("cosine", "linear"):
            begin, end = c.decay_begin_epoch * self.steps_per_epoch, c.epochs * self.steps_per_epoch
            progress = min(max((step - begin) / max(end - begin, 1), 0.0), 1.0)
            if c.kind == "cosine":
                decay = c.min_lr_ratio + (1.0 - c.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
            else:
                decay = 1.0 - (1.0 - c.min_lr_ratio) * progress
        else:
            decay = 1.0
        return warm * decay

    def _apply(self) -> None:
        f = self.factor(self.step_count)
        for g in self.optimizer.param_groups:
            g["lr"] = g["initial_lr"] * f

    def step(self) -> None:
        """Advance one optimizer step and set the groups' learning rates for the next one."""
        self.step_count += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"step_count": self.step_count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_count = int(state["step_count"])
        self._apply()
