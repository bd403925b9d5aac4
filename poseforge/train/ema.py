"""Exponential moving average of model weights (mmpose's ``ExpMomentumEMA``, as RTMPose uses it).

The first update copies the weights; update ``n`` (0-based) after that moves every floating
parameter towards the trained one by ``m_n = (1 - momentum) * exp(-(1 + n) / gamma) + momentum``:
large at first (the average follows the fast early changes), ``momentum`` in the long run. Buffers
(BatchNorm statistics) are copied, as mmengine's averaged models do by default.
"""
from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

__all__ = ["ModelEMA"]


class ModelEMA:
    """An averaged copy of a model, updated after each optimizer step.

    Args:
        model: the trained model (unwrapped: not the DDP wrapper).
        momentum: the long-run update weight (mmpose RTMPose: 0.0002).
        gamma: steps over which the early, larger momentum decays.
    """

    def __init__(self, model: nn.Module, momentum: float = 0.0002, gamma: float = 2000.0) -> None:
        if not 0.0 < momentum < 1.0:
            raise ValueError(f"ModelEMA: momentum must be in (0, 1), got {momentum}")
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.momentum = float(momentum)
        self.gamma = float(gamma)
        self.steps = 0

    def current_momentum(self) -> float:
        return (1.0 - self.momentum) * math.exp(-float(1 + self.steps) / self.gamma) + self.momentum

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s current weights (call after ``optimizer.step()``)."""
        averaged = list(self.module.parameters())
        current = [p.detach() for p in model.parameters()]
        if self.steps == 0:
            torch._foreach_copy_(averaged, current)
        else:
            floats = [(a, c) for a, c in zip(averaged, current) if a.is_floating_point()]
            if floats:
                ema_params, new_params = zip(*floats)
                torch._foreach_lerp_(list(ema_params), list(new_params), self.current_momentum())
        for a, c in zip(self.module.buffers(), model.buffers()):
            a.copy_(c)
        self.steps += 1

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "steps": self.steps, "momentum": self.momentum, "gamma": self.gamma}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.steps = int(state["steps"])
