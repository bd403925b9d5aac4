"""``torch.compile`` for the trainer, with an eager fallback where the backend cannot compile.

Two scopes (``TrainConfig.compile``):

* ``model``: the forward pass of the (possibly DDP-wrapped) model;
* ``step``: everything between the batch and the loss as one graph - normalization, the forward pass,
  the codec's target encoding (Gaussian heatmaps or SimCC labels, batched on the device) and the loss -
  so Inductor fuses target generation and the loss's elementwise work into the step's kernels, and
  AOTAutograd compiles their backward too. The optimizer step stays eager (fused AdamW is one kernel).

Both compute what the eager code computes (to float rounding); a compiled run resumes exactly like an
eager one because the compiled graph holds no state of its own: weights, optimizer, RNG and data
position all live where the eager trainer keeps them.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

import torch
from torch import nn

log = logging.getLogger("poseforge")

__all__ = ["CompiledForward", "COMPILE_MODES"]

COMPILE_MODES = ("none", "model", "step")


class CompiledForward:
    """Calls ``torch.compile(fn)`` (a module or a function); if the compiler backend fails (for instance
    Inductor on a CPU machine without a C++ compiler), warns once and calls ``fn`` eagerly from then on, so
    that a preset with ``compile`` on still trains everywhere, only slower. Errors of the model itself are
    not hidden: the eager call raises them again.

    Training batches keep one shape (incomplete batches are dropped), so one graph serves the run.
    """

    def __init__(self, fn: nn.Module | Callable[..., Any]) -> None:
        self.module = fn  # (named for the module it usually is)
        self.compiled: Any = torch.compile(fn)

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
