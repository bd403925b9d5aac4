"""``torch.compile`` for the trainer, with an eager fallback where the backend cannot compile."""
from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

log = logging.getLogger("poseforge")

__all__ = ["CompiledForward"]


class CompiledForward:
    """Calls ``torch.compile(module)``; if the compiler backend fails (for instance Inductor on a CPU
    machine without a C++ compiler), warns once and calls ``module`` eagerly from then on, so that a
    preset with ``compile: true`` still trains everywhere, only slower. Errors of the model itself are
    not hidden: the eager call raises them again."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.compiled: Any = torch.compile(module)

    @property
    def is_compiled(self) -> bool:
        """False once the fallback to eager mode has happened."""
        return self.compiled is not None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.compiled is not None:
            try:
                return self.compiled(*args, **kwargs)
            except torch._dynamo.exc.BackendCompilerFailed as error:
                reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                log.warning(f"torch.compile failed, training without it (config 'compile'): {reason}")
                self.compiled = None
        return self.module(*args, **kwargs)
