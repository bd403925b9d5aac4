"""Reading foreign checkpoints without executing their code.

``.pth`` files go through ``torch.load(weights_only=True)``. mmengine / mmcv checkpoints often carry
metadata objects (message hubs, numpy arrays in ``dataset_meta``); their classes are mapped to an
inert placeholder so the tensors load while nothing from the file is ever called.
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import PoseforgeError
from ..io import read_json

__all__ = ["Checkpoint", "read_checkpoint"]


@dataclass
class Checkpoint:
    """A foreign checkpoint: its tensors, the JSON config of a Hugging Face folder if any, the ``meta``
    entry of an mmengine / mmcv file, and the tensors of its ``ema_state_dict`` entry if any (mmengine's
    ``EMAHook``; ``module.`` prefixes and the ``steps`` counter removed)."""

    path: Path
    state_dict: dict[str, torch.Tensor]
    hf_config: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    ema_state_dict: dict[str, torch.Tensor] | None = None

    def weights(self, raw: bool = False) -> dict[str, torch.Tensor]:
        """``state_dict``, or with ``raw=True`` the ``ema_state_dict`` entry (the raw training weights).

        mmengine's ``EMAHook`` swaps the two when it saves: ``state_dict`` then holds the averaged
        weights (what mmpose evaluates and publishes) and ``ema_state_dict`` the raw training weights.
        """
        if not raw:
            return self.state_dict
        if self.ema_state_dict is None:
            raise PoseforgeError(f"{self.path}: no ema_state_dict entry (the checkpoint was not saved with an EMA "
                                 "hook); convert it without --raw-weights")
        return self.ema_state_dict


class _Inert:
    """Stands in for any non-tensor object found in a checkpoint's metadata; it never runs code."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __call__(self, *args: Any, **kwargs: Any) -> "_Inert":
        return _Inert(*args)


def _archive_kind(path: Path) -> str | None:
    """``"TorchScript"`` or ``"torch.export"`` for such zip archives (programs, not state dicts), else ``None``."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile, ValueError):
        return None
    if any(n.split("/", 1)[-1] in ("constants.pkl", "code") or "/code/__torch__/" in n for n in names):
        return "TorchScript"
    if any(n.split("/", 1)[-1] in ("archive_format", "serialized_exported_program.json") or "/models/" in n
           and n.endswith(".json") for n in names):
        return "torch.export"
    return None


def _torch_load(path: Path) -> Any:
    kind = _archive_kind(path) if path.is_file() else None
    if kind is not None:  # e.g. Sapiens' *_torchscript.pt2 / *_bfloat16.pt2 releases
        raise PoseforgeError(f"{path}: a {kind} archive (a compiled program, not a state dict) cannot be converted; "
                             "convert the original .pth / .safetensors checkpoint instead")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass
    except IsADirectoryError:
        raise PoseforgeError(f"{path}: is a directory, expected a checkpoint file") from None
    except Exception as e:  # truncated or foreign files fail inside torch's unpickler in many ways
        raise PoseforgeError(f"{path}: not a readable PyTorch checkpoint ({_first_line(e)})") from None
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception as e:  # not a zip checkpoint: legacy formats are not supported
        raise PoseforgeError(f"{path}: not a readable PyTorch checkpoint ({_first_line(e)})") from None
    stubs = [(type(name.rsplit(".", 1)[-1], (_Inert,), {}), name) for name in unsafe]
    try:
        with torch.serialization.safe_globals(stubs):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise PoseforgeError(f"{path}: cannot read the checkpoint safely ({_first_line(e)})") from None


def _first_line(error: BaseException) -> str:
    """An exception as one short line (torch's unpickling errors span many lines)."""
    text = str(error).strip()
    return (text.splitlines()[0][:200] if text else "") or type(error).__name__


def _is_training_checkpoint(obj: Any) -> bool:
    """A poseforge training run's ``last.pt`` / ``best.pt`` (see :mod:`poseforge.train.checkpoint`)."""
    return isinstance(obj, dict) and isinstance(obj.get("model"), dict) and "model_config" in obj and "optimizer" in obj


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """The tensor dict inside a training checkpoint (``state_dict`` / ``model`` / bare)."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "module"):
            if isinstance(obj.get(key), dict) and any(isinstance(v, torch.Tensor) for v in obj[key].values()):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise PoseforgeError(f"{path}: no state dict found (expected a dict of tensors or a 'state_dict' entry)")
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise PoseforgeError(f"{path}: the checkpoint holds no tensors")
    # DataParallel / DDP prefixes.
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


def _ema_tensors(raw: Any) -> dict[str, torch.Tensor] | None:
    """The tensors of an mmengine ``ema_state_dict`` entry without the averaged model's ``module.`` prefix
    and its ``steps`` counter; ``None`` when there is no such entry."""
    ema = raw.get("ema_state_dict") if isinstance(raw, dict) else None
    if not isinstance(ema, dict):
        return None
    tensors = {k[len("module."):] if k.startswith("module.") else k: v for k, v in ema.items()
               if isinstance(k, str) and isinstance(v, torch.Tensor) and k != "steps"}
    return tensors or None


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except FileNotFoundError:
        raise PoseforgeError(f"{path}: file not found") from None
    except Exception as e:
        raise PoseforgeError(f"{path}: not a readable safetensors file ({_first_line(e)})") from None


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a ``.pth``/``.pt``/``.bin``/``.safetensors`` file or a Hugging Face / poseforge folder."""
    path = Path(path)
    if not path.exists():
        raise PoseforgeError(f"{path}: no such file or folder")
    if path.is_dir():
        config_path = path / "config.json"
        config = read_json(config_path) if config_path.is_file() else None
        if (path / "model.safetensors").is_file():
            state = _load_safetensors(path / "model.safetensors")
        elif (path / "model.safetensors.index.json").is_file():
            index = read_json(path / "model.safetensors.index.json")
            files = sorted(set(index.get("weight_map", {}).values()))
            if not files:
                raise PoseforgeError(f"{path / 'model.safetensors.index.json'}: empty weight_map")
            state = {}
            for name in files:
                state.update(_load_safetensors(path / name))
        elif (path / "pytorch_model.bin").is_file():
            state = _unwrap(_torch_load(path / "pytorch_model.bin"), path / "pytorch_model.bin")
        else:
            raise PoseforgeError(f"{path}: folder has no model.safetensors, model.safetensors.index.json or pytorch_model.bin")
        return Checkpoint(path, state, config if isinstance(config, dict) else None)
    if path.suffix == ".safetensors":
        return Checkpoint(path, _load_safetensors(path))
    raw = _torch_load(path)
    if _is_training_checkpoint(raw):
        raise PoseforgeError(f"{path}: a poseforge training checkpoint, not a foreign one: use it directly (poseforge "
                             f"eval / predict --model {path}) or write a model folder with poseforge train --export DIR")
    meta = raw.get("meta") if isinstance(raw, dict) and isinstance(raw.get("meta"), dict) else {}
    return Checkpoint(path, _unwrap(raw, path), None, meta, _ema_tensors(raw))
