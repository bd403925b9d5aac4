"""Typed experiment configs: frozen dataclasses, YAML files, named presets and ``--set k=v`` overrides.

An experiment is one :class:`TrainConfig`: which model (a zoo name plus ``create_model`` overrides),
which data, the optimizer, the LR schedule, the loss and the loop settings. It round-trips through
plain dicts (``to_dict`` / ``from_dict``) and YAML; every value is type-checked on the way in, and an
unknown field is a one-line :class:`~poseforge.errors.PoseforgeError` that lists the known ones.

A YAML file may start from a preset (``base: synth-cpu``) and change only some fields::

    base: synth-cpu
    optim: {lr: 1.0e-3}
    schedule: {epochs: 30}

Overrides address fields by dotted path; the value is parsed as YAML (``optim.lr=1e-4``,
``schedule.milestones=[20,25]``, ``model.overrides.input_size=[96,128]``, ``data.val=null``).
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Mapping, Sequence, TypeVar

from ..coerce import build_dataclass
from ..data.augment import AugmentConfig
from ..errors import PoseforgeError
from ..io import write_bytes_atomic
from ..models.losses import LossConfig
from ..registry import PRESETS  # filled by poseforge.train.presets (imported with the package)

__all__ = ["ModelSection", "SyntheticSection", "SourceSection", "UnlabeledSection", "DataSection", "OptimSection", "ScheduleSection", "LossSection",
           "EMASection", "TrainConfig", "config_to_dict", "config_from_dict", "apply_overrides", "parse_override",
           "load_config", "dump_yaml", "save_config"]

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class ModelSection:
    """The model to train.

    Attributes:
        name: a registered model name (``poseforge.list_models()``), e.g. ``"vitpose-b"``.
        overrides: ``create_model`` keyword overrides (``input_size``, ``head``, ``drop_path_rate`` ...).
        init: weights to start from: a model folder or ``.safetensors`` file written by
            ``save_pretrained`` (``None``: random initialization).
        pos_embed_init: ``"model"`` (the backbone's own initialization) or ``"sincos"`` (MAE's 2-D
            sine-cosine layout; speeds up training from scratch). Ignored when ``init`` is given.
        backbone_init: the backbone only, from another model's ``backbone.*`` weights (an MAE pretraining run
            folder, a model folder, a ``.safetensors`` file or a ``.pt`` checkpoint): position embeddings resized
            to this model's token grid, every other key and shape must match (:func:`poseforge.train.init.init_backbone`).
            Applied after ``pos_embed_init``; not together with ``init``.
    """

    name: str = "vitpose-tiny"
    overrides: dict = dataclasses.field(default_factory=dict)
    init: str | None = None
    pos_embed_init: str = "model"
    backbone_init: str | None = None


@dataclasses.dataclass(frozen=True)
class SyntheticSection:
    """Synthetic people (``poseforge.data.synth``) used when the data source is ``"synthetic"``.

    Attributes:
        train_images, val_images: number of rendered images per epoch / in the held-out set.
        seed, val_seed: the training set and the held-out set are rendered from different seeds.
        image_size: rendered image ``(width, height)``.
        people, val_people: ``(min, max)`` figures per image.
        clutter: props and occluders in the scenes.
        photo_backgrounds: training images only: probability of a real-photo backdrop per image and of a
            photo texture per floor, wall, prop and occluder (``poseforge.data.synth.photos``; needs
            ``pip install poseforge[sim2real]``). The held-out set stays without photos, so its AP compares
            across recipes.
        photo_clothing: training images only: probability of a photo print on each garment of each person
            (same photos and extra; the held-out set stays without them).
        facing_camera: training images only: share of people whose front faces the camera (0.5: every
            heading equally likely; the held-out set keeps 0.5).
        fresh: render new images every epoch (an endless stream, rendered by the workers); ``False``
            renders ``train_images`` once, keeps them in memory and reuses them every epoch.
    """

    train_images: int = 20000
    val_images: int = 200
    seed: int = 0
    val_seed: int = 1_000_003
    image_size: tuple[int, int] = (192, 256)
    people: tuple[int, int] = (1, 1)
    val_people: tuple[int, int] = (1, 1)
    clutter: bool = True
    fresh: bool = True
    photo_backgrounds: float = 0.0
    photo_clothing: float = 0.0
    facing_camera: float = 0.5


@dataclasses.dataclass(frozen=True)
class SourceSection:
    """One dataset of a multi-dataset mix (``data.sources``; ViTPose++ models).

    Attributes:
        task: the model task it trains (name or index); its samples carry that task's dataset index.
        train: ``"synthetic"`` (rendered with the task's keypoint set and the ``data.synthetic``
            settings) or an annotation file / dataset folder.
        val: its validation set: ``"synthetic"``, a file or folder; ``None`` derives it from ``train``.
        format: file format (``poseforge.data.readers.DATASET_FORMATS``: coco, aic, mpii, crowdpose,
            wholebody, ap10k, apt36k; ``auto`` guesses).
        image_root: image folder (default: beside the annotations).
        ratio: sampling weight in the mix.
    """

    task: str
    train: str = "synthetic"
    val: str | None = None
    format: str = "auto"
    image_root: str | None = None
    ratio: float = 1.0


@dataclasses.dataclass(frozen=True)
class UnlabeledSection:
    """Self-training on unlabeled images (``poseforge train --unlabeled DIR``; off while ``images`` is ``None``).

    Before training, a teacher model labels every image of ``images`` (:func:`poseforge.train.pseudo.pseudo_label`:
    keypoints scoring at least ``threshold`` become labels, people with fewer than ``min_keypoints`` of them
    are not trained on) into the COCO file ``labels``, and training mixes those images into the training
    data. Validation stays on the held-out set. An existing ``labels`` file is reused, never relabelled
    (a resumed run trains on the labels it started with); its recorded settings must match these.

    Attributes:
        images: folder of unlabeled images (searched recursively).
        labels: the pseudo-label file (``None``: ``pseudo_labels.json`` in the run folder; the run's
            ``config.yaml`` records the path written).
        teacher: the model that labels them: a weights name, model folder, ``.safetensors`` or training run
            folder (``None``: ``model.init``; the run's ``config.yaml`` records the one used).
        detector: person boxes for top-down teachers, as ``poseforge predict --detector`` (``"auto"``:
            RTMDet-nano where it is cached, else the bundled detector; the run records which).
        threshold: keypoint score from which a prediction becomes a label (in [0, 1]; SimCC scores can
            exceed 1, such keypoints always pass).
        min_keypoints: people with fewer labeled keypoints are not trained on.
        ratio: pseudo-labelled samples per labelled one: an epoch is the training data's epoch plus
            ``ratio`` times as many samples from the pseudo-labelled images.
    """

    images: str | None = None
    labels: str | None = None
    teacher: str | None = None
    detector: str = "auto"
    threshold: float = 0.5
    min_keypoints: int = 5
    ratio: float = 0.5


@dataclasses.dataclass(frozen=True)
class DataSection:
    """Where samples come from and how they are batched and augmented.

    Attributes:
        train: ``"synthetic"``, a COCO keypoint JSON, or a folder (COCO 2017 layout
            ``annotations/person_keypoints_train2017.json`` + ``train2017/``, or ``train/annotations.json``
            as ``poseforge synth`` writes it).
        val: the same kinds; ``None`` derives it from ``train`` (the held-out synthetic set, or the
            folder's val split).
        val_boxes: a COCO detection results JSON for validation (``None``: ground-truth boxes). A
            relative path is looked up inside the ``train`` folder.
        batch_size: samples per process and step (the global batch is ``batch_size x processes``).
        val_batch_size: crops per forward pass in validation.
        num_workers: DataLoader worker processes (decoding, cropping, rendering).
        augment: training augmentation (``AugmentConfig``; mmpose's defaults).
        augment_stage2, stage2_epochs: the last ``stage2_epochs`` epochs train with ``augment_stage2``
            instead (mmpose's ``PipelineSwitchHook``: RTMPose's milder final augmentation); 0: no switch.
        gpu_augment: crop and augment whole batches on the GPU when training on CUDA.
        decode: JPEG decoding of files when batches are augmented on the GPU: ``"auto"`` (nvJPEG on the
            GPU, one call per batch, where torchvision is installed; OpenCV in the workers otherwise),
            ``"opencv"`` (always in the workers) or ``"nvjpeg"`` (an error where it is unavailable).
        min_labeled: training instances need at least this many labeled keypoints.
        synthetic: synthetic data settings.
        sources: a multi-dataset mix (replaces ``train`` / ``val``); each sample carries its dataset
            index, validation reports AP per dataset (see ``poseforge.train.multitask``).
        unlabeled: self-training on pseudo-labelled images mixed into ``train`` (:class:`UnlabeledSection`).
    """

    train: str = "synthetic"
    val: str | None = None
    val_boxes: str | None = None
    batch_size: int = 32
    val_batch_size: int = 64
    num_workers: int = 2
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    augment_stage2: AugmentConfig | None = None
    stage2_epochs: int = 0
    gpu_augment: bool = True
    decode: str = "auto"
    min_labeled: int = 1
    synthetic: SyntheticSection = dataclasses.field(default_factory=SyntheticSection)
    sources: tuple[SourceSection, ...] = ()
    unlabeled: UnlabeledSection = dataclasses.field(default_factory=UnlabeledSection)


@dataclasses.dataclass(frozen=True)
class OptimSection:
    """AdamW with layer-wise LR decay (groups from ``model.param_groups``).

    Attributes:
        lr, betas, eps, weight_decay: AdamW settings (no decay on norms, biases, position embeddings).
        layer_decay: layer-wise LR decay rate; ``None`` takes the backbone config's (ViTPose-B: 0.75).
        clip_grad: max gradient norm (``0``: no clipping).
        accumulate: micro-batches per optimizer step.
        auto_scale_lr: scale ``lr`` by the global batch / ``base_batch_size`` (mmpose ``auto_scale_lr``).
        base_batch_size: the global batch the recipe's ``lr`` was set for.
        implementation: the AdamW kernel: ``"auto"`` (fused on CUDA and CPU, foreach on other
            accelerators; :func:`~poseforge.train.optim.adamw_implementation`), ``"fused"``, ``"foreach"``
            or ``"for_loop"``. The same arithmetic up to float rounding; checkpoints resume across them.
    """

    name: str = "adamw"
    lr: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.1
    layer_decay: float | None = None
    clip_grad: float = 1.0
    accumulate: int = 1
    auto_scale_lr: bool = False
    base_batch_size: int = 512
    implementation: str = "auto"


@dataclasses.dataclass(frozen=True)
class ScheduleSection:
    """Epochs and learning-rate schedule: linear warm-up (iterations), then a decay by epoch.

    Attributes:
        epochs: training length.
        warmup_iters: optimizer steps of linear warm-up from ``warmup_start x lr``.
        kind: ``"step"`` (x ``gamma`` at each of ``milestones``), ``"cosine"`` (to ``min_lr_ratio x lr``),
            ``"linear"`` (to ``min_lr_ratio x lr``) or ``"constant"``.
        decay_begin_epoch: cosine / linear decay starts here (RTMPose: half-way).
        steps_per_epoch: optimizer steps per epoch; ``None`` = one pass over the training data.
    """

    epochs: int = 210
    warmup_iters: int = 500
    warmup_start: float = 0.001
    kind: str = "step"
    milestones: tuple[int, ...] = (170, 200)
    gamma: float = 0.1
    min_lr_ratio: float = 0.0
    decay_begin_epoch: int = 0
    steps_per_epoch: int | None = None


# The loss settings live with the losses (the estimators build them); the training config names them.
LossSection = LossConfig


@dataclasses.dataclass(frozen=True)
class EMASection:
    """Exponential moving average of the weights (mmpose ``ExpMomentumEMA``): ``momentum`` 0 = off;
    the effective momentum starts high and decays to ``momentum`` over ~``gamma`` steps."""

    momentum: float = 0.0
    gamma: float = 2000.0


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training experiment.

    Attributes:
        name: the preset or experiment name (used for the default run folder).
        amp: ``"auto"`` (bf16 autocast on CUDA, fp32 on CPU), ``"bf16"``, ``"fp16"`` or ``"off"``.
        val_interval: validate (COCO AP) every N epochs and after the last (``0``: never).
        flip_test: flip test in validation.
        save_interval: write the resumable ``last.pt`` every N epochs (and at the end, on a stop).
        checkpoint_steps: also write ``last.pt`` every N optimizer steps (``0``: off).
        log_interval: optimizer steps between log lines / metric records.
        seed: seeds the model initialization, the data order and the augmentation.
        max_steps: stop (resumably) after this many optimizer steps in total.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ...
        distributed: ``"auto"`` (FSDP for ViT-L/H/G backbones, else DDP), ``"ddp"`` or ``"fsdp"``; only
            used under torchrun with more than one process.
        sync_bn: convert BatchNorm to SyncBatchNorm under DDP (where the device supports it: CUDA).
        compile: what ``torch.compile`` compiles (eager, with a warning, where the backend cannot compile):
            ``"none"``, ``"model"`` (the forward pass) or ``"step"`` (normalization, forward, the codec's
            target encoding and the loss as one graph, backward included). ``true`` / ``false`` (older
            configs) mean ``"model"`` / ``"none"``.
        activation_checkpointing: recompute ViT block activations in backward instead of keeping them:
            ``"none"``, ``"all"`` (every block), ``"every_K"`` (every K-th block, e.g. ``every_2``: half the
            saved activations for half the recomputation) or ``"auto"`` (every block for ViTs of depth
            >= 24 - ViT-L/H/G, Sapiens - when training on CUDA, else what the model config says). Gradients
            are the same either way (:mod:`poseforge.train.activations`).
        channels_last: keep the model's convolution weights and the image batches in NHWC memory
            (``torch.channels_last``): a conv-stem model's training step runs ~1.1x as fast on CPU (oneDNN;
            ``benchmarks/train_step.py``); the numbers differ from NCHW only by float rounding.
        threads: CPU intra-op threads (``0``: leave torch's default).
    """

    name: str = "custom"
    description: str = ""
    model: ModelSection = dataclasses.field(default_factory=ModelSection)
    data: DataSection = dataclasses.field(default_factory=DataSection)
    optim: OptimSection = dataclasses.field(default_factory=OptimSection)
    schedule: ScheduleSection = dataclasses.field(default_factory=ScheduleSection)
    loss: LossSection = dataclasses.field(default_factory=LossSection)
    ema: EMASection = dataclasses.field(default_factory=EMASection)
    amp: str = "auto"
    val_interval: int = 10
    flip_test: bool = True
    save_interval: int = 1
    checkpoint_steps: int = 0
    log_interval: int = 50
    seed: int = 0
    max_steps: int | None = None
    device: str = "auto"
    distributed: str = "auto"
    sync_bn: bool = True
    compile: bool | str = "none"
    activation_checkpointing: str = "auto"
    channels_last: bool = True
    threads: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.compile, bool):  # the older switch: one spelling per mode, so configs compare equal
            object.__setattr__(self, "compile", "model" if self.compile else "none")
        _check_config(self)

    def replace(self, **changes: Any) -> "TrainConfig":
        return apply_overrides(self, changes)


# ---------------------------------------------------------------------------------------------- checks
_CHOICES = {"amp": ("auto", "bf16", "fp16", "off"), "distributed": ("auto", "ddp", "fsdp"),
            "compile": ("none", "model", "step")}
OPTIMIZER_IMPLEMENTATIONS = ("auto", "fused", "foreach", "for_loop")
_SCHEDULES = ("step", "cosine", "linear", "constant")


def _check_config(c: TrainConfig) -> None:
    problems = []
    for name, allowed in _CHOICES.items():
        if getattr(c, name) not in allowed:
            problems.append(f"{name}: expected one of {', '.join(allowed)}, got {getattr(c, name)!r}")
    if c.schedule.kind not in _SCHEDULES:
        problems.append(f"schedule.kind: expected one of {', '.join(_SCHEDULES)}, got {c.schedule.kind!r}")
    if c.model.pos_embed_init not in ("model", "sincos"):
        problems.append(f"model.pos_embed_init: expected model or sincos, got {c.model.pos_embed_init!r}")
    if c.model.init and c.model.backbone_init:
        problems.append("model.backbone_init: give it or model.init (the whole model's weights), not both")
    if c.optim.name != "adamw":
        problems.append(f"optim.name: only 'adamw' is supported, got {c.optim.name!r}")
    if c.data.decode not in ("auto", "opencv", "nvjpeg"):
        problems.append(f"data.decode: expected one of auto, opencv, nvjpeg, got {c.data.decode!r}")
    if c.optim.implementation not in OPTIMIZER_IMPLEMENTATIONS:
        problems.append(f"optim.implementation: expected one of {', '.join(OPTIMIZER_IMPLEMENTATIONS)}, got {c.optim.implementation!r}")
    if not re.fullmatch(r"none|all|auto|every_[1-9][0-9]*", c.activation_checkpointing):
        problems.append(f"activation_checkpointing: expected none, all, auto or every_K (K >= 1, e.g. every_2), "
                        f"got {c.activation_checkpointing!r}")
    positive = {"data.batch_size": c.data.batch_size, "data.val_batch_size": c.data.val_batch_size,
                "optim.accumulate": c.optim.accumulate, "schedule.epochs": c.schedule.epochs,
                "optim.base_batch_size": c.optim.base_batch_size, "log_interval": c.log_interval}
    problems += [f"{k}: expected a positive integer, got {v}" for k, v in positive.items() if v < 1]
    non_negative = {"data.num_workers": c.data.num_workers, "val_interval": c.val_interval,
                    "save_interval": c.save_interval, "checkpoint_steps": c.checkpoint_steps,
                    "schedule.warmup_iters": c.schedule.warmup_iters, "threads": c.threads,
                    "optim.clip_grad": c.optim.clip_grad, "ema.momentum": c.ema.momentum,
                    "loss.keypoint_map_weight": c.loss.keypoint_map_weight}
    problems += [f"{k}: expected a value >= 0, got {v}" for k, v in non_negative.items() if v < 0]
    if c.data.stage2_epochs and c.data.augment_stage2 is None:
        problems.append("data.stage2_epochs: set data.augment_stage2 (the augmentation to switch to)")
    if not 0 <= c.data.stage2_epochs <= c.schedule.epochs:
        problems.append(f"data.stage2_epochs: expected 0..schedule.epochs ({c.schedule.epochs}), got {c.data.stage2_epochs}")
    if not c.loss.keypoint_map_sigma > 0:
        problems.append(f"loss.keypoint_map_sigma: expected a positive number (pixels), got {c.loss.keypoint_map_sigma}")
    if not c.optim.lr > 0:
        problems.append(f"optim.lr: expected a positive number, got {c.optim.lr}")
    if c.ema.momentum >= 1:
        problems.append(f"ema.momentum: expected a value in [0, 1), got {c.ema.momentum}")
    if c.max_steps is not None and c.max_steps < 1:
        problems.append(f"max_steps: expected a positive integer or null, got {c.max_steps}")
    if c.schedule.steps_per_epoch is not None and c.schedule.steps_per_epoch < 1:
        problems.append(f"schedule.steps_per_epoch: expected a positive integer or null, got {c.schedule.steps_per_epoch}")
    if list(c.schedule.milestones) != sorted(c.schedule.milestones):
        problems.append(f"schedule.milestones: expected increasing epochs, got {list(c.schedule.milestones)}")
    s = c.data.synthetic
    for name, (lo, hi) in (("people", s.people), ("val_people", s.val_people)):
        if not 1 <= lo <= hi:
            problems.append(f"data.synthetic.{name}: expected 1 <= min <= max, got {[lo, hi]}")
    for k, src in enumerate(c.data.sources):
        if not (src.ratio >= 0 and src.ratio < float("inf")):
            problems.append(f"data.sources[{k}].ratio: expected a number >= 0, got {src.ratio}")
    if c.data.sources and not any(src.ratio > 0 for src in c.data.sources):
        problems.append("data.sources: at least one source needs a positive ratio")
    problems += _unlabeled_problems(c.data)
    if problems:
        raise PoseforgeError("invalid training config: " + "; ".join(problems))


def _unlabeled_problems(data: DataSection) -> list[str]:
    u = data.unlabeled
    problems = []
    if u.images is None:
        problems += [f"data.unlabeled.{name}: set data.unlabeled.images (--unlabeled DIR) too"
                     for name in ("labels", "teacher") if getattr(u, name) is not None]
    elif data.sources:
        problems.append("data.unlabeled: not together with data.sources (a multi-dataset mix)")
    if not 0.0 <= u.threshold <= 1.0:
        problems.append(f"data.unlabeled.threshold: expected a keypoint score in [0, 1], got {u.threshold}")
    if u.min_keypoints < 1:
        problems.append(f"data.unlabeled.min_keypoints: expected a positive integer, got {u.min_keypoints}")
    if not 0.0 < u.ratio < float("inf"):
        problems.append(f"data.unlabeled.ratio: expected a positive number, got {u.ratio}")
    return problems


# ---------------------------------------------------------------------------------------------- dict / YAML
def config_to_dict(config: Any) -> Any:
    """Plain data (dicts, lists, numbers, strings) of a config dataclass, nested ones included."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {f.name: config_to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, (tuple, list)):
        return [config_to_dict(v) for v in config]
    if isinstance(config, Mapping):
        return {str(k): config_to_dict(v) for k, v in config.items()}
    return config


def config_from_dict(data: Mapping[str, Any], cls: type[T] = TrainConfig, where: str = "config") -> T:  # type: ignore[assignment]
    """Build ``cls`` from plain data; missing fields keep their defaults, unknown ones are an error."""
    return _build(cls, data, where)


def _build(cls: type[T], data: Any, where: str) -> T:
    return build_dataclass(cls, data, where, _build)


def parse_override(text: str) -> tuple[str, Any]:
    """``"optim.lr=1e-4"`` -> ``("optim.lr", 0.0001)``; the value is read as YAML."""
    import yaml

    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise PoseforgeError(f"--set {text!r}: expected KEY=VALUE, e.g. optim.lr=1e-4")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise PoseforgeError(f"--set {text!r}: cannot parse the value ({str(e).splitlines()[0]})") from None
    if isinstance(value, str):
        value = _yaml_number(value)
    return key, value


def _yaml_number(text: str) -> Any:
    """YAML 1.1 reads ``1e-4`` as a string; accept the usual float spellings as numbers."""
    try:
        return float(text) if any(c in text for c in ".eE") and text.strip().lower() not in ("e", ".") else text
    except ValueError:
        return text


def apply_overrides(config: TrainConfig, overrides: Mapping[str, Any] | Sequence[str | tuple[str, Any]]) -> TrainConfig:
    """Copy of ``config`` with dotted-path fields replaced: ``{"optim.lr": 1e-4}``, ``["optim.lr=1e-4"]`` or
    ``[("optim.lr", 1e-4)]`` (in order; a pair's value is taken as it is, not parsed as YAML).

    Paths into a ``dict`` field (``model.overrides.input_size``) set keys in it; everything else must
    name an existing field. Values are type-checked like YAML input.
    """
    items = (list(overrides.items()) if isinstance(overrides, Mapping) else
             [parse_override(o) if isinstance(o, str) else (o[0], o[1]) for o in overrides])
    data = config_to_dict(config)
    for key, value in items:
        _set_path(config, data, key, value)
    return config_from_dict(data, type(config))


def _set_path(config: Any, data: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node, obj = data, config
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if dataclasses.is_dataclass(obj):
            names = [f.name for f in dataclasses.fields(obj)]
            if part not in names:
                prefix = ".".join(parts[:i])
                raise PoseforgeError(f"unknown config field '{'.'.join(parts[:i + 1])}'; fields of "
                                     f"{prefix or 'the config'}: {', '.join(names)}")
            if last:
                node[part] = config_to_dict(value)
                return
            obj = getattr(obj, part)
            if isinstance(obj, Mapping):  # free-form dict: the rest of the path is one key (or nested keys)
                sub = node.setdefault(part, {})
                for p in parts[i + 1:-1]:
                    sub = sub.setdefault(p, {})
                    if not isinstance(sub, dict):
                        raise PoseforgeError(f"config field '{key}': '{p}' is not a mapping")
                sub[parts[-1]] = config_to_dict(value)
                return
            if not dataclasses.is_dataclass(obj):
                raise PoseforgeError(f"config field '{'.'.join(parts[:i + 1])}' has no sub-fields (in '{key}')")
            node = node[part]


# ---------------------------------------------------------------------------------------------- files
def dump_yaml(config: TrainConfig) -> str:
    """The config as YAML text (every field, so a run folder's ``config.yaml`` is self-contained)."""
    import yaml

    return yaml.safe_dump(config_to_dict(config), sort_keys=False, default_flow_style=None, width=120)


def save_config(config: TrainConfig, path: str | Path) -> None:
    write_bytes_atomic(path, dump_yaml(config).encode())


def load_config(name_or_path: str | Path, overrides: Sequence[str | tuple[str, Any]] | Mapping[str, Any] = ()) -> TrainConfig:
    """A preset name or a YAML file (optionally ``base: PRESET``), then ``overrides``."""
    text = str(name_or_path)
    path = Path(text)
    if path.suffix.lower() in (".yaml", ".yml") or path.is_file():
        config = _read_yaml_config(path)
    elif text.lower() in PRESETS:
        config = PRESETS.get(text)()
    else:
        raise PoseforgeError(f"--config {text}: neither a preset ({', '.join(PRESETS.names())}) nor a YAML file")
    return apply_overrides(config, overrides) if overrides else config


def _read_yaml_config(path: Path) -> TrainConfig:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise PoseforgeError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise PoseforgeError(f"{path}: cannot read config ({e})") from None
    except yaml.YAMLError as e:
        raise PoseforgeError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PoseforgeError(f"{path}: expected a mapping of config fields, got {type(data).__name__}")
    base = data.pop("base", None)
    if base is None:
        return config_from_dict(data, TrainConfig, where=str(path))
    merged = _deep_merge(config_to_dict(PRESETS.get(str(base))()), data)
    return config_from_dict(merged, TrainConfig, where=str(path))


def _deep_merge(base: dict, changes: Mapping[str, Any]) -> dict:
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out
