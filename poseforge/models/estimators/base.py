"""The estimator protocol: what the trainer, the evaluator, the predictor and the exporter call.

:class:`Estimator` is an ``nn.Module`` made of a backbone, head(s) and a codec, plus what every kind
shares (config, input normalization, ``save_pretrained``, checked weight loading, layer-wise LR decay
groups, inference preparation, the flip test). Each kind (``TopDownEstimator``, ``BottomUpEstimator``,
``DenseEstimator``) owns its protocol:

* ``forward(images, task=None) -> HeadOutput`` - normalized images in, a named head output out;
* ``transform(train, augment=None, task=0)`` - the sample transform of a training or evaluation
  record (a person crop, or a whole image) with ``__call__(record, image, generator) -> dict``;
  ``needs_boxes`` says which records it takes (one person each, or whole images);
* ``loss(outputs, batch) -> dict`` - ``{"loss": total, <named terms>...}`` (settings from
  :meth:`configure_loss`);
* ``predict(images, boxes=None, ...) -> Predictions`` (raw images) and ``predict_batch(batch, ...)``
  (an evaluation batch of :meth:`transform`) - both in image pixels, the flip test written once here;
* ``metric(eval_set, task=0) -> Metric`` - what scores it and picks the best checkpoint.

Part interface (what a new family registers):

* backbone class in ``BACKBONES`` under its config ``type``: ``config_class``;
  ``__init__(config, input_size=(w, h))``; ``feature_info`` (channels, stride, size per returned map);
  ``forward(images) -> list[Tensor]``. Optional: ``num_layers`` + ``layer_id(param_name)`` (layer-wise
  LR decay), ``no_weight_decay() -> set[str]``, ``set_grad_checkpointing(bool)``.
* head class in ``HEADS``: ``config_class``; ``__init__(config, feature_info, num_outputs,
  input_size=(w, h))``; ``forward(features) -> HeadOutput``. Optional: ``output_size`` for heatmaps.
* codec in ``CODECS`` (``poseforge.codecs``) and, when its targets need a new loss, that loss in
  ``LOSSES`` (:mod:`poseforge.models.losses`).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ...errors import PoseforgeError
from ...io import atomic_path, sha256_file, write_bytes_atomic, write_json_atomic
from ...keypoints import KeypointSet
from ...outputs import HeadOutput, Predictions, merge_outputs
from ..config import ModelConfig
from ..losses import LossConfig

__all__ = ["Estimator", "check_state_dict", "fold_batchnorms", "write_checksums", "WEIGHTS_NAME", "CONFIG_NAME",
           "CONFIG_METADATA_KEY", "CHECKSUMS_NAME", "CHECKSUMS_FORMAT", "Stage"]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
CONFIG_METADATA_KEY = "poseforge_config"
# The integrity record of a model folder: ``{"format": CHECKSUMS_FORMAT, "files": {name: {"sha256", "size"}}}``.
# A sidecar, not a config.json key: config.json is parsed strictly as the architecture (and embedded in the
# weights' metadata), and the record must be written after every file it describes.
CHECKSUMS_NAME = "checksums.json"
CHECKSUMS_FORMAT = "poseforge-checksums/1"

# ``on_stage(name)`` is called as each prediction stage ends (profiling): "crop", "model", "decode".
Stage = Callable[[str], None] | None


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


def file_checksum_entry(path: Path, sync: bool = False) -> dict[str, Any]:
    """``{"sha256", "size"}`` of a file; with ``sync`` its data is flushed to disk first (it is about to be
    renamed into place: the rename must not reach the disk before the bytes do)."""
    if sync:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return {"sha256": sha256_file(path), "size": path.stat().st_size}


def write_checksums(directory: str | os.PathLike, files: Mapping[str, Mapping[str, Any]]) -> Path:
    """Write the ``checksums.json`` record (``files``: name -> ``{"sha256", "size"}``) of a model folder
    atomically. Call it after the files it describes are in place: its presence then means a complete folder."""
    path = Path(directory) / CHECKSUMS_NAME
    write_json_atomic(path, {"format": CHECKSUMS_FORMAT, "files": {k: dict(v) for k, v in files.items()}}, indent=2)
    return path


class Estimator(nn.Module):
    """Base of every poseforge model (see the module doc for the protocol each kind implements).

    Subclasses set ``config_class``, ``kind`` and ``needs_boxes``, register themselves in
    ``ESTIMATORS`` under their config ``type``, build their parts in ``__init__`` and implement the
    protocol methods.
    """

    config_class: ClassVar[type] = ModelConfig
    kind: ClassVar[str] = ""
    needs_boxes: ClassVar[bool] = False

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self._codec: Any = None
        object.__setattr__(self, "_criterion", None)  # not a submodule: never in the state dict
        object.__setattr__(self, "_loss_config", None)
        self._init_buffers()

    # ----- buffers rebuilt from the config (never saved) ------------------------------------------
    def _init_buffers(self, device: torch.device | str | None = None) -> None:
        """(Re)create the non-persistent buffers: input normalization (and what a kind adds)."""
        mean = torch.tensor(self.config.mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        std = torch.tensor(self.config.std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.register_buffer("pixel_mean", mean, persistent=False)
        self.register_buffer("pixel_std", std, persistent=False)

    # ----- properties ---------------------------------------------------------------------------
    @property
    def codec(self) -> Any:
        """The codec built from ``config.codec`` (``poseforge.codecs.create_codec``), made on first use."""
        if self._codec is None:
            if not getattr(self.config, "codec", None):
                raise PoseforgeError(f"{self.config.name}: the config has no codec")
            from ...codecs import create_codec

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

    @property
    def input_size(self) -> tuple[int, int]:
        """Model input ``(width, height)``."""
        return tuple(int(v) for v in self.config.input_size)  # type: ignore[return-value]

    # ----- tasks (one for most models; multi-dataset models have several) -------------------------
    @property
    def task_names(self) -> tuple[str, ...]:
        return ("default",)

    @property
    def num_tasks(self) -> int:
        return len(self.task_names)

    def task_index(self, task: "int | str | None") -> int:
        """Index of a task given by index or name (``None``: task 0)."""
        if task is None or (isinstance(task, (int, np.integer)) and int(task) == 0) or task == self.task_names[0]:
            return 0
        raise PoseforgeError(f"unknown task {task!r}; {self.config.name} has one task ({self.task_names[0]})")

    def keypoint_set_of(self, task: "int | str | None" = 0) -> KeypointSet | None:
        """The keypoint set a task predicts (``None`` for models without keypoints)."""
        return None

    @property
    def has_unused_parameters(self) -> bool:
        """Whether a training step may leave some parameters without gradients (task experts, heads of
        other tasks): DDP must then look for unused parameters."""
        return False

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

    # ----- the protocol -------------------------------------------------------------------------
    def forward(self, images: torch.Tensor, task: Any = None) -> HeadOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def transform(self, train: bool, augment: Any = None, task: "int | str | None" = 0) -> Any:  # pragma: no cover
        raise NotImplementedError

    def loss(self, outputs: HeadOutput, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    def predict(self, images: Any, boxes: Any = None, *, flip_test: bool | None = None,
                task: "int | str | None" = 0, batch_size: int | None = None, on_stage: Stage = None) -> Predictions:  # pragma: no cover
        raise NotImplementedError

    def predict_batch(self, batch: Mapping[str, Any], *, flip_test: bool | None = None,
                      task: "int | str | None" = 0) -> Predictions:  # pragma: no cover
        raise NotImplementedError

    def metric(self, eval_set: Any, task: "int | str | None" = 0) -> Any:  # pragma: no cover
        raise NotImplementedError

    def configure_loss(self, config: LossConfig | None = None) -> None:
        """Set the training loss (:class:`~poseforge.models.losses.LossConfig`; default settings otherwise)."""
        config = config or LossConfig()
        object.__setattr__(self, "_criterion", self.build_criterion(config))
        object.__setattr__(self, "_loss_config", config)

    @property
    def loss_config(self) -> LossConfig:
        """The settings of the training loss (:meth:`configure_loss`)."""
        if self._criterion is None:
            self.configure_loss()
        return self._loss_config

    def build_criterion(self, config: LossConfig) -> nn.Module:
        """The loss module of this model for ``config`` (kinds may wrap or replace the codec's default)."""
        from ..losses import build_loss

        return build_loss(self.codec.name, config)

    @property
    def criterion(self) -> nn.Module:
        if self._criterion is None:
            self.configure_loss()
        return self._criterion  # type: ignore[return-value]

    def _loss_terms(self, outputs: HeadOutput, targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        criterion = self.criterion
        total = criterion(outputs, targets)
        return {"loss": total, **getattr(criterion, "last_parts", {})}

    # ----- the flip test, written once ------------------------------------------------------------
    def flip_index_of(self, task: int = 0) -> torch.Tensor | None:
        """What the codec's ``flip_back`` permutes (left/right keypoints or part classes); ``None``: nothing."""
        return None

    def infer(self, x: torch.Tensor, flip_test: bool | None = None, task: Any = 0) -> HeadOutput:
        """Float head outputs of normalized inputs in eval mode; with ``flip_test`` (default
        ``config.flip_test``) the mirrored inputs go through the same pass and the codec's
        ``flip_back`` of their outputs is averaged in."""
        flip_test = bool(getattr(self.config, "flip_test", False)) if flip_test is None else flip_test
        n = x.shape[0]
        was_training = self.training
        if was_training:  # (train() walks every module: ~1.5 ms each way, so only when it changes anything)
            self.eval()
        try:
            outputs = self(torch.cat([x, x.flip(-1)]) if flip_test else x, task)
        finally:
            if was_training:
                self.train()
        outputs = outputs.float()
        if flip_test:
            plain, flipped = outputs.split(n)
            back = self.codec.flip_back(flipped, self.flip_index_of(self.task_index(task) if not torch.is_tensor(task) else 0))
            merge = getattr(self.codec, "merge_flip", None)  # a codec may merge otherwise (AE tags concatenate)
            outputs = merge(plain, back) if merge is not None else merge_outputs(plain, back, lambda a, b: (a + b) * 0.5)
        return outputs

    def check_finite(self, outputs: HeadOutput) -> HeadOutput:
        """``outputs`` unchanged, or a one-line :class:`PoseforgeError` when they hold NaN/Inf.

        The codecs decode NaN/Inf into plausible-looking numbers (NaN scores drawn as people, NaN keypoints
        with finite scores), so ``predict`` calls this before decoding: one reduction per output tensor on
        the device and a single host sync per batch.
        """
        flags = [torch.isfinite(t).all() for t in outputs.tensors().values() if t.is_floating_point()]
        if flags and not bool(torch.stack(flags).all()):
            raise PoseforgeError(f"{self.config.name} produced non-finite outputs (NaN/Inf): corrupt weights or an "
                                 "input it cannot handle")
        return outputs

    # ----- save / load --------------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike, dtype: torch.dtype | None = None) -> Path:
        """Write ``model.safetensors`` (config also in its metadata), ``config.json`` and, last, the
        ``checksums.json`` record of both (sha256 and size, checked by ``load_model``), each atomically;
        ``dtype`` (e.g. ``torch.float16``, to ship small weights) casts the floating-point tensors."""
        from safetensors.torch import save_file

        if getattr(self, "inference_only", False):
            raise PoseforgeError(f"{self.config.name}: BatchNorms were folded for inference (prepare_for_inference("
                                 "fuse_batchnorm=True)); save the model before preparing it")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = self.config.to_dict()
        state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().to("cpu").contiguous()
                 for k, v in self.state_dict().items()}
        # Order matters: weights, then config, then the checksum record. A crash part-way leaves the old
        # record beside new files (a mismatch load_model reports), so a matching record means a whole folder.
        with atomic_path(directory / WEIGHTS_NAME) as tmp:
            save_file(state, str(tmp), metadata={"format": "pt", CONFIG_METADATA_KEY: json.dumps(config)})
            weights_entry = file_checksum_entry(tmp, sync=True)  # the exact bytes about to be renamed in
        config_bytes = json.dumps(config, indent=2).encode()
        write_bytes_atomic(directory / CONFIG_NAME, config_bytes)
        write_checksums(directory, {WEIGHTS_NAME: weights_entry,
                                    CONFIG_NAME: {"sha256": hashlib.sha256(config_bytes).hexdigest(),
                                                  "size": len(config_bytes)}})
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

    def prepare_for_inference(self, dtype: torch.dtype | None = None, channels_last: bool = True,
                              fuse_batchnorm: bool = False) -> "Estimator":
        """Eval mode, optional pure ``dtype`` weights (e.g. ``torch.bfloat16`` on CUDA), channels-last
        convolutions, and with ``fuse_batchnorm`` every conv + BatchNorm pair folded into one convolution
        (:func:`fold_batchnorms`: a CSPNeXt forward ~1.3-1.7x as fast on CPU, ``benchmarks/rtmpose_speed.py``;
        the model can then no longer train or be saved). Normalization buffers stay fp32; inputs are cast
        to the weights' dtype."""
        self.eval()
        if fuse_batchnorm and fold_batchnorms(self):
            self.inference_only = True
        if dtype is not None:
            for module in self.children():
                module.to(dtype=dtype)
        if channels_last:
            for name, module in self.named_children():
                if name != "backbone":
                    module.to(memory_format=torch.channels_last)
        return self


_CONVS = (nn.Conv2d, nn.ConvTranspose2d)


def _foldable(conv: Any, bn: Any) -> bool:
    """Whether ``bn`` is a BatchNorm with running statistics over the outputs of the convolution ``conv``."""
    return isinstance(conv, _CONVS) and isinstance(bn, nn.modules.batchnorm._BatchNorm) and \
        bn.track_running_stats and bn.running_mean is not None and bn.num_features == conv.out_channels


def _fold_into(conv: nn.Conv2d | nn.ConvTranspose2d, bn: nn.modules.batchnorm._BatchNorm) -> None:
    """Give ``conv`` the weights and bias of ``bn(conv(x))`` (in float64, cast back to the weights' dtype)."""
    scale = (bn.weight.double() if bn.weight is not None else 1.0) / torch.sqrt(bn.running_var.double() + bn.eps)
    shift = bn.bias.double() if bn.bias is not None else 0.0
    weight = conv.weight.double()
    if isinstance(conv, nn.ConvTranspose2d):  # weight [in, out / groups, kh, kw]: output channels are dim 1, by group
        g = conv.groups
        weight = (weight.unflatten(0, (g, -1)) * scale.view(g, 1, -1, 1, 1)).flatten(0, 1)
    else:  # weight [out, in / groups, kh, kw]
        weight = weight * scale.view(-1, 1, 1, 1)
    bias = ((conv.bias.double() if conv.bias is not None else 0.0) - bn.running_mean.double()) * scale + shift
    conv.weight = nn.Parameter(weight.to(conv.weight.dtype))
    conv.bias = nn.Parameter(bias.to(conv.weight.dtype))


@torch.no_grad()
def fold_batchnorms(model: nn.Module) -> int:
    """Fold the running statistics of every BatchNorm that directly follows a convolution (``Conv2d``, grouped
    and depthwise included, or ``ConvTranspose2d``) into that convolution, which gains a bias; the BatchNorm
    becomes an identity (indices and the other parameter names stay). Returns how many were folded.

    The pairs: consecutive children of a plain ``nn.Sequential``; a module's ``conv`` / ``bn`` (mmcv's
    ``ConvModule`` layout of the CNN families) and ``conv<i>`` / ``bn<i>`` attributes (the torchvision / HRNet
    block layout, whose forward applies ``bn<i>`` to the output of ``conv<i>``). Modules that read their
    convolutions' weights and BatchNorms' statistics themselves are left whole, with everything in them: a class
    that sets ``batchnorm_folding = False``, and elastic (once-for-all) modules that run subnets by slicing
    their weights (a ``forward_subnet`` method). Inference only: the running statistics are used."""
    pairs: list[tuple[nn.Module, str, nn.Module, nn.Module]] = []  # (parent, BatchNorm's name, conv, BatchNorm)
    seen: set[int] = set()

    def visit(module: nn.Module) -> None:
        if id(module) in seen or getattr(type(module), "batchnorm_folding", True) is False \
                or callable(getattr(type(module), "forward_subnet", None)):
            return  # (a module shared by two parents is folded once)
        seen.add(id(module))
        children = module._modules
        if type(module) is nn.Sequential:  # (a subclass may have a forward of its own)
            names = list(children)
            pairs.extend((module, b, children[a], children[b]) for a, b in zip(names, names[1:])
                         if _foldable(children[a], children[b]))
        else:
            for name, child in children.items():
                conv = "conv" + name[2:] if name.startswith("bn") and (name == "bn" or name[2:].isdigit()) else None
                if conv is not None and _foldable(children.get(conv), child):
                    pairs.append((module, name, children[conv], child))
        for child in children.values():
            if child is not None:
                visit(child)

    visit(model)
    for parent, name, conv, bn in pairs:
        _fold_into(conv, bn)
        setattr(parent, name, nn.Identity())
    return len(pairs)


def stack_images(images: Any, device: torch.device) -> list[torch.Tensor]:
    """Images as a list of ``[3, H, W]`` tensors on ``device``: a ``[B, 3, H, W]`` / ``[3, H, W]`` tensor
    or array, or a sequence of ``[3, H, W]`` tensors / ``H x W x 3`` arrays."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if isinstance(images, torch.Tensor):
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[1] != 3:
            raise PoseforgeError(f"images: expected [B, 3, H, W], got {list(images.shape)}")
        return list(images.to(device, non_blocking=True).unbind(0))
    if isinstance(images, Sequence) and not isinstance(images, (str, bytes)):
        out = []
        for i, image in enumerate(images):
            if isinstance(image, np.ndarray):
                if image.ndim != 3 or image.shape[2] != 3:
                    raise PoseforgeError(f"images[{i}]: expected an H x W x 3 array, got {image.shape}")
                image = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
            if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] != 3:
                raise PoseforgeError(f"images[{i}]: expected a [3, H, W] tensor or an H x W x 3 array")
            out.append(image.to(device, non_blocking=True))
        return out
    raise PoseforgeError(f"images: expected a tensor [B, 3, H, W] or a list of images, got {type(images).__name__}")
