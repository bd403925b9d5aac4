"""Training checkpoints: atomic writes and exact resume.

A training checkpoint (``last.pt``, ``best.pt``) is one ``torch.save`` dict of plain tensors, numbers
and strings, so it loads with ``torch.load(weights_only=True)``: model, optimizer, LR schedule, grad
scaler and EMA states, the RNG states (Python, NumPy, torch CPU and CUDA), the data position (epoch,
batches done in it) and counters, plus the experiment and model configs. A model folder (``best/``)
is what ``save_pretrained`` writes and ``load_model`` reads; it is replaced as a whole.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..io import atomic_path
from ..models.loading import CHECKPOINT_VERSION, read_training_checkpoint

__all__ = ["save_checkpoint", "load_checkpoint", "capture_rng_state", "restore_rng_state", "CHECKPOINT_VERSION"]



def capture_rng_state() -> dict[str, Any]:
    """Every global random state the training loop draws from, as tensors and plain numbers."""
    version, keys, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": {"version": version, "keys": torch.tensor(keys, dtype=torch.int64), "gauss": gauss},
        "numpy": {"name": np_name, "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Undo :func:`capture_rng_state`."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(k) for k in py["keys"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state((npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` (with a format version) to ``path`` atomically (temp file, fsync, rename)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            torch.save({"version": CHECKPOINT_VERSION, **state}, f)
            f.flush()
            os.fsync(f.fileno())
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a training checkpoint safely (``weights_only=True``); a bad file is a one-line error."""
    return read_training_checkpoint(path, map_location)
