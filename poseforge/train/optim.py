"""Optimizer and learning-rate schedule.

* :func:`build_optimizer`: AdamW over ``model.param_groups`` (layer-wise LR decay, no weight decay on
  norms, biases and position embeddings); each group keeps its ``lr_scale``.
* :class:`LRSchedule`: linear warm-up over optimizer steps (mmpose ``LinearLR``, by iteration) times a
  decay evaluated by epoch: multi-step (``MultiStepLR``), cosine or linear (both per iteration, as
  mmpose's ``convert_to_iter_based``), or constant. ``lr(step) = base_lr x lr_scale x factor(step)``;
  the state is one integer, so resuming restores it exactly.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..device import unwrap_model
from ..errors import PoseforgeError
from .config import OptimSection, ScheduleSection

__all__ = ["build_optimizer", "LRSchedule"]


def build_optimizer(model: nn.Module, config: OptimSection, lr: float | None = None) -> torch.optim.AdamW:
    """AdamW over the model's parameter groups (``model.param_groups`` when it has it).

    ``lr`` overrides ``config.lr`` (e.g. after ``auto_scale_lr``). Every group gets ``initial_lr``
    (``lr x lr_scale``), which :class:`LRSchedule` multiplies.
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
    return torch.optim.AdamW(groups, lr=base_lr, betas=tuple(config.betas), eps=config.eps,
                             weight_decay=config.weight_decay)


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
