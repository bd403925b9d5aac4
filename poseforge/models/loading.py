"""Model loading: one resolver for names, folders and files, used by the API and every command.

:func:`load_model` takes

* a weights name ``arch.tag`` (``"vitpose-tiny.synth"``) or an alias (``"bundled"``), resolved by
  :mod:`poseforge.hub`;
* a model folder or ``.safetensors`` file written by ``save_pretrained``;
* a training run folder (its ``best/`` model, else the weights in ``last.pt``) or a training
  checkpoint ``.pt`` (the EMA weights when the run kept them).

Models are built on the meta device around the stored tensors (no random initialization, every key
and shape checked), configs come from ``config.json`` or the safetensors metadata; nothing is unpickled
except through ``torch.load(weights_only=True)``. While they are built, :func:`skip_meta_init` turns the
initializers' writes into meta tensors into no-ops: the stored weights replace those values anyway, and
``nn.init.normal_`` on a meta tensor alone would cost seconds (its reference implementation imports
``torch._dynamo``, hundreds of modules), most of a model's start-up time.

Integrity: where ``save_pretrained`` left its ``checksums.json`` record beside the files, their size and
sha256 are checked before use (``verify``), so a corrupt or half-written folder is a one-line error rather
than a model that predicts garbage. Folders without a record (older exports, the bundled assets) load
unverified.
"""
from __future__ import annotations

import json
import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch
from torch.overrides import TorchFunctionMode

from ..errors import PoseforgeError
from ..hub import resolve_weights, weights_spec
from ..io import damaged_zip_member, read_json, sha256_file
from ..registry import ESTIMATORS
from .config import ModelConfig, config_from_dict
from .estimators.base import (CHECKSUMS_FORMAT, CHECKSUMS_NAME, CONFIG_METADATA_KEY, CONFIG_NAME, WEIGHTS_NAME,
                              Estimator, check_state_dict)

__all__ = ["build_model", "load_model", "read_saved_model", "model_from_state_dict", "read_training_checkpoint",
           "resolve_model_path", "saved_config", "skip_meta_init", "verify_checksums",
           "CHECKPOINT_VERSION", "VERIFY_MAX_BYTES"]

log = logging.getLogger("poseforge")

CHECKPOINT_VERSION = 1
# ``verify=None`` hashes files up to this size (sha256 runs at ~1-2 GB/s: under ~2 s); bigger ones only get
# the (free) size check.
VERIFY_MAX_BYTES = 2 << 30


def build_model(config: ModelConfig | Mapping[str, Any]) -> Estimator:
    """Build the estimator a config describes (a config object or its ``to_dict()`` form)."""
    if not isinstance(config, ModelConfig):
        config = config_from_dict(config)
    return ESTIMATORS.get(config.type)(config)


def _read_safetensors(path: Path, device: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device=device) as f:
            metadata = f.metadata() or {}
            return {k: f.get_tensor(k) for k in f.keys()}, metadata
    except FileNotFoundError:
        raise PoseforgeError(f"{path}: file not found") from None
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise PoseforgeError(f"{path}: not a readable safetensors file ({e})") from None


def read_training_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a training checkpoint safely (``weights_only=True``); a bad file is a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise PoseforgeError(f"{path}: checkpoint not found")
    if path.stat().st_size <= VERIFY_MAX_BYTES:
        damaged = damaged_zip_member(path)
        if damaged is not None:
            raise PoseforgeError(f"{path}: damaged checkpoint ({damaged} fails its checksum: corrupt or truncated "
                                 "since it was written); resume from another checkpoint")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # unpickling errors of many kinds: report them as one line
        raise PoseforgeError(f"{path}: not a readable training checkpoint ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise PoseforgeError(f"{path}: not a poseforge training checkpoint (no 'model' entry)")
    if state.get("version", 0) > CHECKPOINT_VERSION:
        raise PoseforgeError(f"{path}: checkpoint format {state['version']} is newer than this poseforge ({CHECKPOINT_VERSION})")
    return state


def resolve_model_path(name_or_path: str | os.PathLike) -> Path:
    """The file or folder a model name, folder or file refers to (see the module doc); a training run
    folder resolves to its ``best/`` model or its ``last.pt``."""
    text = str(name_or_path)
    named = resolve_weights(text, "pose")
    if named is not None:
        return named
    path = Path(text)
    if path.is_dir() and not (path / WEIGHTS_NAME).is_file():
        if (path / "best" / WEIGHTS_NAME).is_file():
            return path / "best"
        if (path / "last.pt").is_file():
            return path / "last.pt"
        raise PoseforgeError(f"{path}: not a model folder or training run (no {WEIGHTS_NAME}, best/ or last.pt)")
    if not path.exists():
        hint = "" if "." in text or os.sep in text else "; pretrained names: see poseforge.hub.list_weights()"
        raise PoseforgeError(f"{path}: no such model name, folder or file{hint}")
    return path


def read_saved_model(path: str | os.PathLike, device: torch.device | str = "cpu", *,
                     verify: bool | None = None) -> tuple[ModelConfig | dict, dict[str, torch.Tensor], str]:
    """``(config, state dict, source file)`` of a name, folder or file (see the module doc): what :func:`load_model`
    builds from, for callers that take part of a model (a backbone). The config is a :class:`ModelConfig`, or
    a training checkpoint's dict form of one; ``verify`` as in :func:`load_model`."""
    resolved = resolve_model_path(path)
    if resolved.suffix == ".pt":
        state = read_training_checkpoint(resolved)
        if "model_config" not in state:
            raise PoseforgeError(f"{resolved}: training checkpoint without a model config")
        weights = state["ema"]["module"] if state.get("ema") else state["model"]
        return state["model_config"], weights, str(resolved)
    if resolved.is_dir():
        weights_path, config_path = resolved / WEIGHTS_NAME, resolved / CONFIG_NAME
    else:
        weights_path, config_path = resolved, resolved.with_name(CONFIG_NAME)
    if not weights_path.is_file():
        raise PoseforgeError(f"{weights_path}: file not found (expected a folder written by save_pretrained)")
    if verify is not False:
        verify_checksums(weights_path.parent, [weights_path.name, config_path.name], full=verify)
    tensors, metadata = _read_safetensors(weights_path, str(device))
    return _saved_config(weights_path, config_path, metadata), tensors, str(weights_path)


def load_model(path: str | os.PathLike, device: torch.device | str = "cpu", dtype: torch.dtype | None = None, *,
               verify: bool | None = None) -> Estimator:
    """Rebuild a model from a name, folder or file (see the module doc), in eval mode on ``device``.

    Named weights ship in fp16 and load as float32 unless ``dtype`` says otherwise; other files keep
    their stored dtype unless ``dtype`` is given.

    ``verify``: check the files against the folder's ``checksums.json`` record, when it has one
    (:func:`verify_checksums`): ``True`` always, ``False`` never, ``None`` (default) hashing files up to
    :data:`VERIFY_MAX_BYTES` and only comparing the size of bigger ones. A mismatch is a one-line
    :class:`PoseforgeError`.
    """
    if weights_spec(str(path), "pose") is not None:
        dtype = dtype or torch.float32
    config, tensors, source = read_saved_model(path, device, verify=verify)
    model = model_from_state_dict(config, tensors, source, device)
    if dtype is not None:
        for module in model.children():
            module.to(dtype=dtype)
    return model.eval()


def verify_checksums(directory: str | os.PathLike, names: list[str] | tuple[str, ...], full: bool | None = None) -> int:
    """Check the files ``names`` of a model folder against its ``checksums.json`` record (written by
    ``save_pretrained``) and return how many were hashed.

    A folder without a record, names it does not list and listed files that are absent are not checked
    (nothing to compare, or nothing read). The size is always compared; the sha256 when ``full`` is
    ``True``, or ``None`` and the file is at most :data:`VERIFY_MAX_BYTES`. A mismatch, or a record that
    cannot be read, is a one-line :class:`PoseforgeError` naming the file.
    """
    directory = Path(directory)
    record_path = directory / CHECKSUMS_NAME
    if not record_path.is_file():
        return 0  # an older export or a shipped asset: not verified
    try:
        record = read_json(record_path)
    except PoseforgeError as e:  # the record itself is damaged: say how to get past it
        raise PoseforgeError(f"{e}; re-export the model, or pass verify=False (--no-verify)") from None
    fmt = record.get("format") if isinstance(record, dict) else None
    files = record.get("files") if fmt == CHECKSUMS_FORMAT else None
    if not isinstance(files, dict):
        found = f"format {fmt!r}" if isinstance(fmt, str) else "no format"
        raise PoseforgeError(f"{record_path}: not a checksum record this poseforge reads ({found}, expected "
                             f"{CHECKSUMS_FORMAT!r}); re-export the model, or pass verify=False (--no-verify)")
    hashed = 0
    for name in names:
        entry, path = files.get(name), directory / name
        if entry is None or not path.is_file():
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str) or not isinstance(entry.get("size"), int):
            raise PoseforgeError(f"{record_path}: malformed entry for {name}; re-export the model, or pass verify=False (--no-verify)")
        size = path.stat().st_size
        if size == entry["size"]:
            if full is None and size > VERIFY_MAX_BYTES:
                log.debug(f"{path}: {size} bytes, sha256 not checked (over {VERIFY_MAX_BYTES} bytes; pass verify=True)")
                continue
            hashed += 1
            if sha256_file(path) == entry["sha256"]:
                continue
        raise PoseforgeError(f"{path}: does not match its checksum in {CHECKSUMS_NAME} (corrupt, truncated or changed "
                             "since save_pretrained wrote it): re-download / re-export the model, or pass verify=False (--no-verify)")
    return hashed


def _saved_config(weights_path: Path, config_path: Path, metadata: Mapping[str, str]) -> ModelConfig:
    """The config of saved weights: ``config.json`` beside them, else the safetensors metadata."""
    if config_path.is_file():
        return config_from_dict(read_json(config_path), where=str(config_path))
    if CONFIG_METADATA_KEY not in metadata:
        raise PoseforgeError(f"{weights_path}: no {CONFIG_NAME} beside it and no config in its metadata")
    try:
        data = json.loads(metadata[CONFIG_METADATA_KEY])
    except json.JSONDecodeError as e:
        raise PoseforgeError(f"{weights_path}: corrupt config metadata ({e})") from None
    return config_from_dict(data, where=str(weights_path))


def saved_config(name_or_path: str | os.PathLike) -> ModelConfig:
    """The config of a weights name or model folder / ``.safetensors`` file, without reading the tensors."""
    from safetensors import safe_open

    resolved = resolve_model_path(name_or_path)
    weights_path = resolved / WEIGHTS_NAME if resolved.is_dir() else resolved
    config_path = weights_path.with_name(CONFIG_NAME)
    if config_path.is_file():
        return _saved_config(weights_path, config_path, {})
    try:
        with safe_open(str(weights_path), framework="pt") as f:
            metadata = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise PoseforgeError(f"{weights_path}: not a readable safetensors file ({e})") from None
    return _saved_config(weights_path, config_path, metadata)


# In-place writes of values, all that weight initializers do to a tensor: the public ``torch.nn.init``
# functions (those with a ``__torch_function__`` hook arrive here whole) and the tensor methods they and
# ``reset_parameters`` methods call. None of them changes a shape, dtype or device.
_VALUE_WRITES: frozenset[Callable[..., Any]] = frozenset(
    [getattr(torch.nn.init, n) for n in dir(torch.nn.init) if n.endswith("_") and not n.startswith("_")]
    + [getattr(torch.Tensor, n) for n in (
        "normal_", "uniform_", "fill_", "zero_", "random_", "exponential_", "bernoulli_", "log_normal_", "cauchy_",
        "geometric_", "erfinv_", "clamp_", "clamp_min_", "clamp_max_", "mul_", "div_", "add_", "sub_", "copy_")])


class _SkipMetaValueWrites(TorchFunctionMode):
    """Returns the target of a value write (:data:`_VALUE_WRITES`) to a meta tensor without running it."""

    def __torch_function__(self, func: Callable[..., Any], types: Any, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in _VALUE_WRITES:
            # torch.nn.init functions pass their tensor by keyword, tensor methods as ``self``
            target = args[0] if args else kwargs.get("tensor")
            if isinstance(target, torch.Tensor) and target.is_meta:
                return target
        return func(*args, **kwargs)


@contextmanager
def skip_meta_init() -> Iterator[None]:
    """Within it, weight initialization of meta tensors does nothing (``nn.init.*``, ``Tensor.normal_`` ...).

    A meta tensor holds no values, so skipping the writes changes nothing but the time: building a
    model on the meta device to load stored weights into it (:func:`model_from_state_dict`) then runs no
    initializer at all; ``nn.init.normal_`` alone would import ``torch._dynamo`` (seconds) for its meta
    implementation. Tensors on other devices are initialized as usual. The mode is thread-local.
    """
    with _SkipMetaValueWrites():
        yield


_ALIGNMENT = 64  # bytes: what PyTorch's CPU allocator gives every tensor


def _aligned(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor``, copied where its CPU memory is not 64-byte aligned. A safetensors file read without copying
    leaves each tensor at its offset in the file (8-byte aligned), and oneDNN picks other kernels for
    misaligned weights: on some CPUs (AMD EPYC) the outputs then differ in the last bits from those of the
    model that was saved."""
    if tensor.device.type == "cpu" and tensor.numel() and tensor.data_ptr() % _ALIGNMENT:
        return tensor.clone(memory_format=torch.preserve_format)
    return tensor


def model_from_state_dict(config: ModelConfig | Mapping[str, Any], state_dict: Mapping[str, torch.Tensor],
                          source: str = "checkpoint", device: torch.device | str = "cpu") -> Estimator:
    """Build the model of ``config`` around ``state_dict``'s tensors (no initializer runs, keys checked).

    The model is built on the meta device with :func:`skip_meta_init`; the checkpoint's tensors are then
    assigned (not copied) and the non-persistent buffers (normalization, flip indices) computed from the
    config on ``device``.
    """
    with torch.device("meta"), skip_meta_init():
        model = build_model(config)
    check_state_dict(model, state_dict, source)
    model.load_state_dict({k: _aligned(v.to(device)) for k, v in state_dict.items()}, strict=True, assign=True)
    model._init_buffers(device)  # the non-persistent buffers (normalization, flip index) left on the meta device
    leftover = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if leftover:
        raise PoseforgeError(f"model tensors not restored from the checkpoint: {', '.join(leftover[:8])}")
    return model.eval()
