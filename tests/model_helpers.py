"""Helpers for tests that compare two models' outputs or fuzz checkpoint converters."""
from __future__ import annotations

import random
from typing import Callable

import torch


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Informative weights: the initialization plus noise and random BatchNorm statistics, so that every layer
    matters and a conversion, fold or cast that drops or misplaces a term shows in the outputs. Eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
    return model.eval()


def mutate_state_dict(base: dict, rng: "random.Random", ops: tuple[str, ...], rename: "Callable[[str], str]",
                      extra_keys: tuple[str, ...] = ()) -> dict:
    """A copy of ``base`` with 1-3 random mutations, for converter fuzz tests: ``drop`` a tensor, change one
    dimension (``shape``), make it ``empty``, ``rename`` its key, cast it (``dtype``: integer, bool or half),
    ``transpose`` it, or add an ``extra`` key from ``extra_keys``."""
    state, keys = dict(base), list(base)
    for _ in range(rng.randint(1, 3)):
        op, key = rng.choice(ops), rng.choice(keys)
        if key not in state:
            continue
        if op == "drop":
            state.pop(key)
        elif op == "shape":
            shape = list(state[key].shape) or [1]
            i = rng.randrange(len(shape))
            shape[i] = max(0, shape[i] + rng.choice([-1, 1, 3]))
            state[key] = torch.zeros(shape)
        elif op == "empty":
            state[key] = torch.zeros([0] * max(1, state[key].ndim))
        elif op == "rename":
            state[rename(key)] = state.pop(key)
        elif op == "dtype":
            state[key] = state[key].to(rng.choice([torch.int64, torch.bool, torch.float16]))
        elif op == "transpose":
            state[key] = state[key].transpose(0, -1).contiguous() if state[key].ndim > 1 else state[key][None]
        elif op == "extra":
            state[rng.choice(extra_keys)] = torch.zeros(4, 32, 1, 1)
        else:
            raise ValueError(f"unknown mutation '{op}'")
    return state
