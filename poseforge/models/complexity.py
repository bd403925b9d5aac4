"""Model complexity: multiply-accumulates (MACs) and parameters.

:func:`count_macs` runs one forward pass under PyTorch's :class:`torch.utils.flop_counter.FlopCounterMode`
and halves its FLOPs (2 FLOPs per multiply-accumulate): the true MACs of convolutions (a transposed one
scatters each *input* pixel through its kernel), matrix products and attention; BatchNorm, activations,
additions and resampling are not counted. The pass may run on the meta device: shapes are all a counter
needs, so a model built under ``torch.device("meta")`` is counted in milliseconds without its weights.

Papers count differently, and their figures are only reproduced with their counter's rules, which
``convention`` replays with forward hooks on the leaf modules:

* ``"ptflops"`` - ptflops' PyTorch backend from v0.6.2 (Nov 2020) to v0.7.4 (its 2025 fix), which LitePose
  used (``arch_search/eff_pred.py``): every convolution, *transposed ones included*, costs its per-position
  MACs times the **output** pixels (a stride-2 deconvolution counts 4x its MACs), plus bias adds,
  BatchNorm (2 per element when affine), ReLU / ReLU6 (1 per element), pooling and upsampling.
* ``"hrnet"`` - the ``get_model_summary`` of the HRNet / HigherHRNet code: weight size times output pixels
  for every convolution (transposed ones included) and linear layer, nothing else.
* ``"exact"`` - the same rules as the FLOP counter (input pixels for transposed convolutions, no
  element-wise operations): a cross-check of :func:`count_macs`' default by a second, independent counter.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..errors import PoseforgeError

__all__ = ["count_macs", "count_parameters", "macs_by_module", "CONVENTIONS"]

CONVENTIONS = ("torch", "exact", "ptflops", "hrnet")


def _input_for(model: nn.Module, input_size: Sequence[int], batch_size: int, channels: int) -> torch.Tensor:
    if len(input_size) != 2 or min(int(v) for v in input_size) <= 0:
        raise PoseforgeError(f"count_macs: input_size must be a positive (width, height), got {tuple(input_size)}")
    first = next(iter(model.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    w, h = (int(v) for v in input_size)
    return torch.zeros(batch_size, channels, h, w, device=device, dtype=dtype)


def _run(model: nn.Module, images: torch.Tensor, mode: object | None = None) -> None:
    was_training = model.training
    model.eval()  # BatchNorm in eval mode: no batch statistics (and no error at batch size 1)
    try:
        with torch.no_grad():
            if mode is None:
                model(images)
            else:
                with mode:  # type: ignore[attr-defined]
                    model(images)
    finally:
        model.train(was_training)


def _conv_macs(module: nn.Module, inputs: tuple, output: torch.Tensor, at_output: bool, bias: bool) -> int:
    weight = module.weight  # Conv: [out, in/g, k...]; ConvTranspose: [in, out/g, k...]
    per_position = math.prod(weight.shape)  # kernel x in x out / groups
    transposed = isinstance(module, nn.modules.conv._ConvTransposeNd)
    pixels = output.shape[2:] if (at_output or not transposed) else inputs[0].shape[2:]
    macs = per_position * math.prod(pixels) * output.shape[0]
    if bias and module.bias is not None:
        macs += output.numel()
    return macs


def _hook_macs(model: nn.Module, images: torch.Tensor, convention: str) -> int:
    """MACs by the rules of ``convention`` (module doc), with forward hooks on the leaf modules."""
    total = [0]

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if isinstance(module, (nn.modules.conv._ConvNd)):
            at_output = convention in ("ptflops", "hrnet")
            total[0] += _conv_macs(module, inputs, output, at_output, bias=convention == "ptflops")
        elif isinstance(module, nn.Linear):
            total[0] += module.in_features * output.numel() + (output.numel() if convention == "ptflops" and
                                                               module.bias is not None else 0)
        elif convention != "ptflops":
            return
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            total[0] += inputs[0].numel() * (2 if module.affine else 1)
        elif isinstance(module, (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU)):
            total[0] += output.numel()
        elif isinstance(module, (nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
                                 nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd)):
            total[0] += inputs[0].numel()
        elif isinstance(module, nn.Upsample):
            total[0] += output.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        _run(model, images)
    finally:
        for handle in handles:
            handle.remove()
    return total[0]


def count_macs(model: nn.Module, input_size: Sequence[int], batch_size: int = 1, channels: int = 3,
               convention: str = "torch") -> int:
    """Multiply-accumulates of one ``model(images)`` pass on ``batch_size`` images of ``input_size``
    ``(width, height)``: ``"torch"`` (default) is PyTorch's FLOP counter / 2; ``"exact"``, ``"ptflops"`` and
    ``"hrnet"`` replay other counters' rules (module doc). The model may live on the meta device."""
    if convention not in CONVENTIONS:
        raise PoseforgeError(f"count_macs: unknown convention {convention!r}; known: {', '.join(CONVENTIONS)}")
    images = _input_for(model, input_size, batch_size, channels)
    if convention != "torch":
        return _hook_macs(model, images, convention)
    counter = FlopCounterMode(display=False)
    _run(model, images, counter)
    return counter.get_total_flops() // 2


def macs_by_module(model: nn.Module, input_size: Sequence[int], depth: int = 1, batch_size: int = 1,
                   channels: int = 3) -> dict[str, int]:
    """FLOP-counter MACs per submodule up to ``depth`` name levels (``{"backbone": ..., "head": ...}`` at 1)."""
    counter = FlopCounterMode(display=False)
    _run(model, _input_for(model, input_size, batch_size, channels), counter)
    root = type(model).__name__
    out: dict[str, int] = {}
    for name, by_op in counter.get_flop_counts().items():
        parts = name.split(".")
        if parts[0] == root and len(parts) == depth + 1:
            out[".".join(parts[1:])] = sum(by_op.values()) // 2
    return out


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not; buffers excluded)."""
    return sum(p.numel() for p in model.parameters())
