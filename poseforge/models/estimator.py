"""Pose estimators: a backbone, a head and a codec behind one ``nn.Module``.

:class:`PoseEstimator` holds what every model family shares: the config, input normalization,
``save_pretrained`` / :func:`load_model` (``model.safetensors`` + ``config.json``, no pickle), checked
weight loading, layer-wise LR decay parameter groups and the inference preparation (pure bf16
weights, channels-last head). :class:`TopDownEstimator` adds the top-down pipeline: person crops in,
raw head outputs from ``forward``, decoded keypoints from ``predict`` (with flip test), whatever the
head and codec are (heatmaps + UDP/MSRA/DARK today, SimCC tomorrow).

Part interface (what a new family registers):

* backbone class in ``BACKBONES`` under its config ``type``: ``config_class``;
  ``__init__(config, input_size=(w, h))``; ``out_channels``; ``feature_size(input_size) -> (w, h)``;
  ``forward(images) -> features``. Optional: ``num_layers`` + ``layer_id(param_name)`` (layer-wise
  LR decay), ``no_weight_decay() -> set[str]``, ``set_grad_checkpointing(bool)``.
* head class in ``HEADS``: ``config_class``; ``__init__(config, in_channels, num_outputs,
  feature_size=(w, h), input_size=(w, h))``; ``forward(features) -> outputs`` (a tensor or a
  tuple of tensors). Optional: ``output_size(feature_size)`` for spatial outputs (heatmaps).
* estimator class in ``ESTIMATORS`` under the top-level config ``type`` (``"topdown"`` here).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping

import numpy as np
import torch
from torch import nn

from ..errors import PoseforgeError
from ..io import atomic_path, read_json, write_json_atomic
from ..keypoints import KeypointSet, get_keypoint_set
from ..registry import BACKBONES, ESTIMATORS, HEADS
from .config import ModelConfig, TopDownConfig, config_from_dict

__all__ = ["Predictions", "PoseEstimator", "TopDownEstimator", "build_model", "load_model", "model_from_state_dict",
           "WEIGHTS_NAME", "CONFIG_NAME", "check_state_dict"]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
_CONFIG_METADATA_KEY = "poseforge_config"


@dataclass
class Predictions:
    """Decoded keypoints of a batch of crops, in crop-input pixel coordinates.

    Attributes:
        keypoints: ``[B, K, 2]`` float (x, y).
        scores: ``[B, K]`` float confidence.
    """

    keypoints: torch.Tensor
    scores: torch.Tensor

    def to(self, device: torch.device | str) -> "Predictions":
        return Predictions(self.keypoints.to(device), self.scores.to(device))

    def __len__(self) -> int:
        return int(self.keypoints.shape[0])


def check_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Raise one :class:`PoseforgeError` listing missing, unexpected and mis-shaped keys, if any."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    misshaped = [f"{k} {list(state_dict[k].shape)} (model: {list(v.shape)})"
                 for k, v in expected.items() if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)]
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
        if keys:
            shown = ", ".join(keys[:12]) + (f", ... ({len(keys) - 12} more)" if len(keys) > 12 else "")
            problems.append(f"{len(keys)} {label} key(s): {shown}")
    if problems:
        raise PoseforgeError(f"{source}: weights do not fit the model: " + "; ".join(problems))


def _split_outputs(outputs: Any, n: int) -> tuple[Any, Any]:
    if isinstance(outputs, torch.Tensor):
        return outputs[:n], outputs[n:]
    if isinstance(outputs, (tuple, list)):
        pairs = [_split_outputs(o, n) for o in outputs]
        return type(outputs)(p[0] for p in pairs), type(outputs)(p[1] for p in pairs)
    raise PoseforgeError(f"cannot split model outputs of type {type(outputs).__name__}")


def _average_outputs(a: Any, b: Any) -> Any:
    if isinstance(a, torch.Tensor):
        return (a + b) * 0.5
    return type(a)(_average_outputs(x, y) for x, y in zip(a, b))


def outputs_to_float(outputs: Any) -> Any:
    """fp32 copies of a head's output: one tensor or a tuple of tensors (SimCC's x and y)."""
    if isinstance(outputs, torch.Tensor):
        return outputs.float()
    return type(outputs)(outputs_to_float(o) for o in outputs)


class PoseEstimator(nn.Module):
    """Base of every poseforge model: config, normalization, save/load and optimizer groups.

    Subclasses set ``config_class`` and register themselves in ``ESTIMATORS`` under the config's
    ``type``; they build their parts in ``__init__`` and implement ``forward`` / ``predict``.
    """

    config_class: ClassVar[type] = ModelConfig

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self._codec: Any = None
        self._init_normalization()

    def _init_normalization(self, device: torch.device | str | None = None) -> None:
        mean = torch.tensor(self.config.mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        std = torch.tensor(self.config.std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        # Not saved: they come from the config.
        self.register_buffer("pixel_mean", mean, persistent=False)
        self.register_buffer("pixel_std", std, persistent=False)

    def _check_codec_heatmap_size(self, output_size: tuple[int, int] | None) -> None:
        """The codec's ``heatmap_size`` (if any) must be the head's spatial ``output_size``."""
        codec_heatmap = getattr(self.config, "codec", {}).get("heatmap_size")
        if codec_heatmap is not None and output_size is not None and tuple(codec_heatmap) != tuple(output_size):
            raise PoseforgeError(f"{self.config.name}: codec heatmap_size {tuple(codec_heatmap)} does not match the head "
                                 f"output {tuple(output_size)} for input {tuple(self.config.input_size)}")

    # ----- properties ---------------------------------------------------------------------------
    @property
    def codec(self) -> Any:
        """The codec built from ``config.codec`` (``poseforge.codecs.create_codec``), made on first use."""
        if self._codec is None:
            if not getattr(self.config, "codec", None):
                raise PoseforgeError(f"{self.config.name}: the config has no codec")
            from ..codecs import create_codec

            # JSON stores sizes as lists; codecs take (w, h) tuples.
            kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in self.config.codec.items()}
            self._codec = create_codec(**kwargs)
        return self._codec

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    # ----- input handling -----------------------------------------------------------------------
    def normalize(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        """uint8 or 0-255 float RGB ``[B,3,h,w]`` -> normalized tensor on the model's device and dtype."""
        if isinstance(images, np.ndarray):
            images = torch.from_numpy(np.ascontiguousarray(images))
        if not isinstance(images, torch.Tensor):
            raise PoseforgeError(f"images: expected a tensor [B,3,h,w], got {type(images).__name__}")
        if images.ndim == 3:
            images = images.unsqueeze(0)
        if images.ndim != 4 or images.shape[1] != len(self.config.mean):
            raise PoseforgeError(f"images: expected shape [B,{len(self.config.mean)},h,w], got {list(images.shape)}")
        if not (images.dtype == torch.uint8 or images.is_floating_point()):
            raise PoseforgeError(f"images: expected uint8 or float pixels, got {images.dtype}")
        x = images.to(self.pixel_mean.device, non_blocking=True).float()
        return ((x - self.pixel_mean) / self.pixel_std).to(self.dtype)

    # ----- save / load --------------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike, dtype: torch.dtype | None = None) -> Path:
        """Write ``model.safetensors`` (config also in its metadata) and ``config.json`` atomically;
        ``dtype`` (e.g. ``torch.float16``, to ship small weights) casts the floating-point tensors."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = self.config.to_dict()
        state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().to("cpu").contiguous()
                 for k, v in self.state_dict().items()}
        with atomic_path(directory / WEIGHTS_NAME) as tmp:
            save_file(state, str(tmp), metadata={"format": "pt", _CONFIG_METADATA_KEY: json.dumps(config)})
        write_json_atomic(directory / CONFIG_NAME, config, indent=2)
        return directory

    def load_weights(self, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
        """Copy weights in after checking every key and shape (one error lists all problems)."""
        check_state_dict(self, state_dict, source)
        self.load_state_dict(state_dict, strict=True)

    # ----- training helpers ---------------------------------------------------------------------
    def param_groups(self, lr: float, weight_decay: float, layer_decay: float | None = None) -> list[dict[str, Any]]:
        """Optimizer parameter groups with layer-wise LR decay (ViTPose / BEiT recipe).

        A parameter at depth ``i`` (0 = embeddings, ``i+1`` = block ``i``, ``L+1`` = final norm and
        head, ``L`` = backbone depth) gets ``lr * layer_decay ** (L + 1 - i)``. Biases, norm weights
        (every 1-D parameter) and the backbone's ``no_weight_decay()`` names get no weight decay.
        ``layer_decay=None`` uses the backbone config's recommended rate (1.0 if it has none).
        Each group carries ``lr_scale`` so schedulers can rescale it.
        """
        backbone = getattr(self, "backbone", None)
        if layer_decay is None:
            layer_decay = float(getattr(getattr(self.config, "backbone", None), "layer_decay", 1.0))
        num_layers = int(getattr(backbone, "num_layers", 0))
        layer_id = getattr(backbone, "layer_id", None)
        skip = set(backbone.no_weight_decay()) if hasattr(backbone, "no_weight_decay") else set()
        groups: dict[tuple[int, bool], dict[str, Any]] = {}
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            if backbone is not None and name.startswith("backbone.") and layer_id is not None:
                sub = name[len("backbone."):]
                depth = layer_id(sub)
                no_decay = param.ndim <= 1 or sub.endswith(".bias") or sub in skip
            else:
                depth = num_layers + 1
                no_decay = param.ndim <= 1 or name.endswith(".bias")
            scale = layer_decay ** (num_layers + 1 - depth)
            key = (depth, no_decay)
            if key not in groups:
                groups[key] = {"name": f"layer_{depth}_{'no_decay' if no_decay else 'decay'}", "params": [],
                               "lr": lr * scale, "lr_scale": scale, "weight_decay": 0.0 if no_decay else weight_decay}
            groups[key]["params"].append(param)
        return [groups[k] for k in sorted(groups)]

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute backbone activations in backward (if the backbone supports it)."""
        backbone = getattr(self, "backbone", None)
        if backbone is None or not hasattr(backbone, "set_grad_checkpointing"):
            raise PoseforgeError(f"{type(self).__name__}: the backbone does not support gradient checkpointing")
        backbone.set_grad_checkpointing(enable)

    # ----- inference ----------------------------------------------------------------------------
    def prepare_for_inference(self, dtype: torch.dtype | None = None, channels_last: bool = True) -> "PoseEstimator":
        """Eval mode, optional pure ``dtype`` weights (e.g. ``torch.bfloat16`` on CUDA), channels-last head.

        Normalization buffers stay fp32; ``predict`` casts the normalized input to the weights' dtype.
        """
        self.eval()
        if dtype is not None:
            for module in self.children():
                module.to(dtype=dtype)
        if channels_last and hasattr(self, "head"):
            self.head.to(memory_format=torch.channels_last)
        return self

    def _predict_crops(self, images: torch.Tensor | np.ndarray, flip_test: bool | None,
                       forward: Callable[[torch.Tensor], Any], flip_index: torch.Tensor) -> Predictions:
        """The shared predict path: normalize and check crops, run ``forward`` in eval mode (on the crops and
        their mirror images when flip testing), fold the flipped output back and decode with the codec."""
        x = self.normalize(images)
        w, h = self.config.input_size
        if tuple(x.shape[-2:]) != (h, w):
            raise PoseforgeError(f"images: expected {w}x{h} crops (width x height) for {self.config.name}, "
                                 f"got {x.shape[-1]}x{x.shape[-2]}")
        flip_test = self.config.flip_test if flip_test is None else flip_test
        n = x.shape[0]
        was_training = self.training
        self.eval()
        try:
            outputs = forward(torch.cat([x, x.flip(-1)]) if flip_test else x)
        finally:
            self.train(was_training)
        outputs = outputs_to_float(outputs)
        if flip_test:
            outputs, flipped = _split_outputs(outputs, n)
            outputs = _average_outputs(outputs, self.codec.flip_back(flipped, flip_index.to(x.device)))
        keypoints, scores = self.codec.decode(outputs)
        return Predictions(keypoints, scores)


@ESTIMATORS.register("topdown")
class TopDownEstimator(PoseEstimator):
    """Top-down pose model: ``backbone -> head``, decoded by ``codec``.

    ``model(images)`` takes normalized float crops ``[B,3,h,w]`` and returns the raw head output
    (heatmaps ``[B,K,H,W]`` for heatmap heads). ``model.predict(crops)`` takes uint8 / 0-255 RGB
    crops and returns :class:`Predictions` in crop-input pixel coordinates.
    """

    config_class = TopDownConfig

    def __init__(self, config: TopDownConfig) -> None:
        super().__init__(config)
        self.keypoint_set: KeypointSet = get_keypoint_set(config.keypoint_set)
        self.backbone = BACKBONES.get(config.backbone.type)(config.backbone, input_size=config.input_size)
        feature_size = self.backbone.feature_size(config.input_size)
        self.head = HEADS.get(config.head.type)(config.head, in_channels=self.backbone.out_channels,
                                                num_outputs=self.keypoint_set.num_keypoints,
                                                feature_size=feature_size, input_size=config.input_size)
        # (width, height) of spatial outputs (heatmaps); None for heads without a spatial output.
        self.output_size = self.head.output_size(feature_size) if hasattr(self.head, "output_size") else None
        self._check_codec_heatmap_size(self.output_size)
        self.register_buffer("flip_index", torch.as_tensor(self.keypoint_set.flip_index, dtype=torch.long), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Raw head output for normalized crops (cast to the weights' dtype)."""
        return self.head(self.backbone(images.to(self.dtype)))

    @torch.no_grad()
    def predict(self, images: torch.Tensor | np.ndarray, flip_test: bool | None = None) -> Predictions:
        """Keypoints of uint8 / 0-255 float RGB crops ``[B,3,h,w]`` (``h, w`` = the config's input size).

        With ``flip_test`` (default: ``config.flip_test``) the horizontally flipped crops go through
        the same forward pass and the codec's ``flip_back`` output is averaged in.
        """
        return self._predict_crops(images, flip_test, self, self.flip_index)


def build_model(config: ModelConfig | Mapping[str, Any]) -> PoseEstimator:
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


def load_model(path: str | os.PathLike, device: torch.device | str = "cpu", dtype: torch.dtype | None = None) -> PoseEstimator:
    """Rebuild a model saved by ``save_pretrained`` from its folder or its ``.safetensors`` file.

    The config comes from ``config.json`` (or, for a lone file, the safetensors metadata); the
    module is built without allocating random weights and the stored tensors are assigned in.
    ``"bundled"`` loads the small ViTPose shipped with poseforge (stored fp16, loaded as float32
    unless ``dtype`` says otherwise).
    """
    if str(path) == "bundled":
        from ..assets import asset_path

        path, dtype = asset_path("pose"), dtype or torch.float32
    path = Path(path)
    if path.is_dir():
        weights, config_path = path / WEIGHTS_NAME, path / CONFIG_NAME
    elif path.suffix == ".safetensors" or path.is_file():
        weights, config_path = path, path.with_name(CONFIG_NAME)
    else:
        raise PoseforgeError(f"{path}: no such model folder or .safetensors file")
    if not weights.is_file():
        raise PoseforgeError(f"{weights}: file not found (expected a folder written by save_pretrained)")
    state, metadata = _read_safetensors(weights, str(device))
    if config_path.is_file():
        data = read_json(config_path)
    elif _CONFIG_METADATA_KEY in metadata:
        try:
            data = json.loads(metadata[_CONFIG_METADATA_KEY])
        except json.JSONDecodeError as e:
            raise PoseforgeError(f"{weights}: corrupt config metadata ({e})") from None
    else:
        raise PoseforgeError(f"{weights}: no {CONFIG_NAME} beside it and no config in its metadata")
    config = config_from_dict(data, where=str(config_path if config_path.is_file() else weights))
    model = model_from_state_dict(config, state, str(weights), device)
    if dtype is not None:
        for module in model.children():
            module.to(dtype=dtype)
    return model.eval()


def model_from_state_dict(config: ModelConfig | Mapping[str, Any], state_dict: Mapping[str, torch.Tensor],
                          source: str = "checkpoint", device: torch.device | str = "cpu") -> PoseEstimator:
    """Build the model of ``config`` around ``state_dict``'s tensors (no random init, keys checked)."""
    with torch.device("meta"):
        model = build_model(config)
    check_state_dict(model, state_dict, source)
    model.load_state_dict({k: v.to(device) for k, v in state_dict.items()}, strict=True, assign=True)
    _materialize_buffers(model, device)
    return model.eval()


def _materialize_buffers(model: PoseEstimator, device: torch.device | str) -> None:
    """Recreate the non-persistent buffers (normalization, flip index) left on the meta device."""
    model._init_normalization(device)
    if isinstance(model, TopDownEstimator):
        model.register_buffer("flip_index", torch.as_tensor(model.keypoint_set.flip_index, dtype=torch.long, device=device),
                              persistent=False)
    leftover = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if leftover:
        raise PoseforgeError(f"model tensors not restored from the checkpoint: {', '.join(leftover[:8])}")
