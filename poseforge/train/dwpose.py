"""DWPose two-stage distillation (Yang et al., "Effective Whole-body Pose Estimation with Two-stages
Distillation", 2023), as mmpose 1.3's ``DWPoseDistiller`` trains it, for SimCC models (RTMPose / DWPose).

**Stage 1** (:class:`DWPoseStage1`): a frozen teacher and the student see the same crops; the student's
loss is its ground-truth loss plus, both scaled by ``1 - epoch / epochs`` (0-based epoch, so 1 in the
first epoch and ``1 / epochs`` in the last):

* the feature loss :func:`feature_distillation_loss` between the student's last backbone map, mapped
  to the teacher's channels by a trainable 1x1 convolution with bias (``align``, only when the widths
  differ), and the teacher's: ``alpha * sum((align(f_s) - f_t)^2) / N`` with ``alpha = 7e-5``;
* the logit loss :func:`dwpose_logit_loss` (weight 0.1): ``KL(softmax(beta t) || softmax(beta s))``
  over the bins of each keypoint and axis, summed over keypoints and axes, averaged over the batch,
  divided by the keypoint count; every keypoint counts, visible or not (no target weights).

**Stage 2** (:class:`DWPoseStage2`, "head-aware self-KD"): the stage-1 student is the teacher; the new
student shares its backbone, frozen (no gradients, BatchNorm on its running statistics), so the
student's head runs on the teacher's features, and only the head trains, with the logit loss at weight 1
(no decay) and - as mmpose - no ground-truth loss and a freshly initialized head (both can be changed:
``gt_weight``, ``head_init="stage1"``). The official schedule is 60 epochs after 270 (:func:`stage2_epochs`:
about 20 % of stage 1). The result is the teacher's backbone with the new head: an ordinary student.

:func:`distill_dwpose` runs both stages with the :class:`~poseforge.train.engine.Trainer` hooks
(``setup_model``, ``extra_loss`` with ``set_epoch``, ``auxiliary`` for the ``align`` convolution, which
is optimized and checkpointed with the student but never exported) into ``OUT/stage1``, ``OUT/stage2``
and the exported student ``OUT/student``; a stage whose ``last.pt`` is complete is skipped, an
interrupted one resumed.
"""
from __future__ import annotations

import copy
import logging
import math
import os
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import PoseforgeError
from ..models.estimators import Estimator
from ..models.estimators.base import check_state_dict
from ..models.loading import read_training_checkpoint
from ..outputs import SimCCLogits
from ..io import replace_directory
from .config import TrainConfig, config_to_dict
from .distill import check_compatible, simcc_distillation_loss

__all__ = ["ALPHA_FEA", "STAGE1_LOGIT_WEIGHT", "STAGE2_LOGIT_WEIGHT", "STAGE2_FRACTION", "dwpose_logit_loss",
           "feature_distillation_loss", "distillation_decay", "stage2_epochs", "check_simcc", "freeze_module",
           "DWPoseStage1", "DWPoseStage2", "distill_dwpose"]

log = logging.getLogger("poseforge")

ALPHA_FEA = 0.00007  # FeaLoss alpha_fea of every DWPose config
STAGE1_LOGIT_WEIGHT = 0.1  # KDLoss weight of the stage-1 configs
STAGE2_LOGIT_WEIGHT = 1.0  # KDLoss weight of the stage-2 configs
STAGE2_FRACTION = 60 / 270  # stage-2 epochs / stage-1 epochs of the official schedule
HEAD_INITS = ("fresh", "stage1")


# ---------------------------------------------------------------------------------------------- losses
def dwpose_logit_loss(student: SimCCLogits | tuple[Tensor, Tensor], teacher: SimCCLogits | tuple[Tensor, Tensor],
                      beta: float = 10.0, weight: float = 1.0) -> Tensor:
    """DWPose's logit loss (mmpose ``KDLoss``): for each axis, ``sum_bins KL(softmax(beta t) || softmax(beta s))``
    per (sample, keypoint), summed over keypoints and averaged over samples; x plus y, divided by the
    keypoint count K, times ``weight``. That is ``(S_x + S_y) / (N K)`` with ``S`` the KL summed over
    samples and keypoints - :func:`~poseforge.train.distill.simcc_distillation_loss`. No target weights."""
    return weight * simcc_distillation_loss(student, teacher, beta)


def feature_distillation_loss(student: Tensor, teacher: Tensor, alpha: float = ALPHA_FEA) -> Tensor:
    """DWPose's feature loss (mmpose ``FeaLoss`` after its ``align``): ``alpha * sum((s - t)^2) / N``
    over maps ``[N, C, H, W]`` of the same shape."""
    if student.shape != teacher.shape:
        raise PoseforgeError(f"feature distillation: student map {list(student.shape)} vs teacher {list(teacher.shape)}")
    diff = student.float() - teacher.float()
    return diff.square().sum() / teacher.shape[0] * alpha


def distillation_decay(epoch: int, epochs: int) -> float:
    """Stage 1's weight of both distillation terms in 0-based ``epoch`` of ``epochs``: ``1 - epoch / epochs``."""
    if epochs < 1 or not 0 <= epoch < epochs:
        raise PoseforgeError(f"distillation decay: epoch {epoch} outside 0..{epochs - 1}")
    return 1.0 - epoch / epochs


def stage2_epochs(stage1_epochs: int) -> int:
    """Default length of stage 2: the official 60 / 270 of stage 1, rounded, at least 1."""
    return max(1, round(stage1_epochs * STAGE2_FRACTION))


# ---------------------------------------------------------------------------------------------- parts
def check_simcc(model: Estimator, role: str) -> None:
    """``model`` is a single-task top-down model with a SimCC head (RTMPose, DWPose, ViTPose with ``head=simcc``)."""
    codec = getattr(model.config, "codec", None) or {}
    if codec.get("name") != "simcc":
        raise PoseforgeError(f"DWPose distillation needs SimCC models (RTMPose / DWPose); the {role} "
                             f"{model.config.name} has a {codec.get('name', 'non-keypoint')} codec")
    if not isinstance(getattr(model, "head", None), nn.Module) or not isinstance(getattr(model, "backbone", None), nn.Module):
        raise PoseforgeError(f"DWPose distillation needs a single-task model (one backbone, one head); the {role} "
                             f"{model.config.name} is not")


def freeze_module(module: nn.Module) -> nn.Module:
    """No gradients and eval mode for ``module`` and everything in it, whatever ``train()`` later says
    (BatchNorm keeps its running statistics, dropout and drop path stay off)."""
    module.requires_grad_(False)
    module.train = types.MethodType(lambda self, mode=True: nn.Module.train(self, False), module)
    module.train()
    return module


class _LastFeatures:
    """Forward hook of a backbone: keeps the feature list of its latest forward pass with autograd on
    (the training step's; evaluation runs without gradients and leaves it alone)."""

    def __init__(self) -> None:
        self.features: list[Tensor] | None = None

    def __call__(self, module: nn.Module, inputs: Any, output: Sequence[Tensor]) -> None:
        if torch.is_grad_enabled():
            self.features = list(output)

    def pop(self, who: str) -> list[Tensor]:
        if self.features is None:
            raise PoseforgeError(f"{who}: no student backbone features captured (the student must be set up by "
                                 f"this hook's setup_model and run with gradients on)")
        features, self.features = self.features, None
        return features

    def __deepcopy__(self, memo: dict) -> _LastFeatures:
        return self  # the EMA copy of the student shares the hook (it runs without gradients: never writes)


def _teacher_on(model: nn.Module, device: torch.device) -> nn.Module:
    if next(model.parameters()).device != device:
        model.to(device)
    return model


# ---------------------------------------------------------------------------------------------- stage 1
class DWPoseStage1(nn.Module):
    """Stage-1 hooks for the :class:`~poseforge.train.engine.Trainer`: ``setup_model`` (checks the pair, builds
    ``align``, hooks the student's backbone), the ``extra_loss`` (``self(batch, images, outputs)``, decayed by
    the epoch from ``set_epoch``) and the ``auxiliary`` module (this one: its only parameters are ``align``'s).

        stage1 = DWPoseStage1(teacher, beta=config.loss.beta)
        Trainer(config, run_dir, setup_model=stage1.setup_model, extra_loss=stage1, auxiliary=stage1).fit()

    The teacher (frozen, eval mode) is held outside the module's parameters and state. ``last_parts``
    holds the undecayed ``fea`` and ``logit`` terms of the latest call (logged as ``loss_fea``, ``loss_logit``).
    """

    def __init__(self, teacher: Estimator, *, alpha_fea: float = ALPHA_FEA, logit_weight: float = STAGE1_LOGIT_WEIGHT,
                 beta: float = 10.0) -> None:
        super().__init__()
        check_simcc(teacher, "teacher")
        if alpha_fea < 0 or logit_weight < 0:
            raise PoseforgeError(f"DWPose weights must be >= 0, got alpha_fea={alpha_fea}, logit_weight={logit_weight}")
        object.__setattr__(self, "teacher", teacher.eval().requires_grad_(False))  # not a submodule: never saved
        self.alpha_fea, self.logit_weight, self.beta = float(alpha_fea), float(logit_weight), float(beta)
        self.align: nn.Module | None = None
        self.epoch, self.epochs = 0, 1
        self.last_parts: dict[str, Tensor] = {}
        self._capture = _LastFeatures()

    def setup_model(self, student: nn.Module) -> nn.Module:
        """Check the student against the teacher, build ``align`` (student -> teacher channels of the last
        backbone map; none when equal) and capture the student's backbone output."""
        check_simcc(student, "student")  # type: ignore[arg-type]
        check_compatible(self.teacher, student)  # type: ignore[arg-type]
        s, t = student.backbone.feature_info[-1], self.teacher.backbone.feature_info[-1]
        if tuple(s.size) != tuple(t.size):
            raise PoseforgeError(f"DWPose feature distillation: the student's last map is {tuple(s.size)}, the teacher's "
                                 f"{tuple(t.size)} (strides {s.stride} vs {t.stride})")
        self.align = nn.Conv2d(s.channels, t.channels, 1) if s.channels != t.channels else None
        student.backbone.register_forward_hook(self._capture)
        return student

    def set_epoch(self, epoch: int, epochs: int) -> None:
        """The Trainer's 0-based epoch and run length (for the decay)."""
        self.epoch, self.epochs = int(epoch), int(epochs)

    @property
    def decay(self) -> float:
        return distillation_decay(self.epoch, self.epochs)

    def teacher_outputs(self, raw_images: Tensor) -> tuple[list[Tensor], SimCCLogits]:
        """The teacher's backbone maps and head output on raw crops (its own normalization, no gradients)."""
        teacher = _teacher_on(self.teacher, raw_images.device)
        with torch.no_grad():
            features = teacher.backbone(teacher.normalize(raw_images))
            return features, teacher.head(features).float()

    def forward(self, batch: Any, images: Tensor, outputs: SimCCLogits) -> Tensor:
        """``(1 - epoch / epochs) * (feature loss + logit loss)`` of the step whose student outputs are ``outputs``."""
        student_features = self._capture.pop("DWPose stage 1")
        teacher_features, target = self.teacher_outputs(batch.image)
        mapped = student_features[-1].float()
        if self.align is not None:
            mapped = self.align(mapped)
        fea = feature_distillation_loss(mapped, teacher_features[-1], self.alpha_fea)
        logit = dwpose_logit_loss(outputs, target, self.beta, self.logit_weight)
        decay = self.decay
        self.last_parts = {"fea": fea.detach(), "logit": logit.detach()}
        return decay * (fea + logit)


# ---------------------------------------------------------------------------------------------- stage 2
class DWPoseStage2:
    """Stage-2 hooks: ``setup_model`` gives the freshly built student the stage-1 student's backbone, frozen
    (and, with ``head_init="stage1"``, its head too), and the ``extra_loss`` is ``logit_weight`` x the logit
    loss against the stage-1 head run on the same (frozen, hence identical) backbone features - one backbone
    pass per step.

        stage2 = DWPoseStage2(stage1_student, beta=config.loss.beta)
        Trainer(config, run_dir, setup_model=stage2.setup_model, extra_loss=stage2).fit()
    """

    def __init__(self, stage1_student: Estimator, *, logit_weight: float = STAGE2_LOGIT_WEIGHT, beta: float = 10.0,
                 head_init: str = "fresh") -> None:
        check_simcc(stage1_student, "stage-1 student")
        if head_init not in HEAD_INITS:
            raise PoseforgeError(f"DWPose stage 2 head_init: expected one of {', '.join(HEAD_INITS)}, got {head_init!r}")
        if logit_weight < 0:
            raise PoseforgeError(f"DWPose stage 2 logit weight must be >= 0, got {logit_weight}")
        self.teacher = stage1_student
        self.teacher_head = copy.deepcopy(stage1_student.head).eval().requires_grad_(False)
        self.logit_weight, self.beta, self.head_init = float(logit_weight), float(beta), head_init
        self.last_parts: dict[str, Tensor] = {}
        self._capture = _LastFeatures()

    def setup_model(self, student: nn.Module) -> nn.Module:
        """Load the stage-1 backbone (and head) into ``student`` and freeze its backbone."""
        check_simcc(student, "student")  # type: ignore[arg-type]
        check_compatible(self.teacher, student)  # type: ignore[arg-type]
        source = f"DWPose stage 2: stage-1 student {self.teacher.config.name}"
        with torch.no_grad():
            if self.head_init == "stage1":
                student.load_weights(self.teacher.state_dict(), source=source)
            else:
                state = self.teacher.backbone.state_dict()
                check_state_dict(student.backbone, state, source)
                student.backbone.load_state_dict(state, strict=True)
        freeze_module(student.backbone)
        student.backbone.register_forward_hook(self._capture)
        return student

    def __call__(self, batch: Any, images: Tensor, outputs: SimCCLogits) -> Tensor:
        features = self._capture.pop("DWPose stage 2")
        head = _teacher_on(self.teacher_head, features[-1].device)
        dtype = next(head.parameters()).dtype
        with torch.no_grad():
            target = head([f.detach().to(dtype) for f in features]).float()
        logit = dwpose_logit_loss(outputs, target, self.beta, self.logit_weight)
        self.last_parts = {"logit": logit.detach()}
        return logit


# ---------------------------------------------------------------------------------------------- both stages
def _run_stage(config: TrainConfig, run_dir: Path, progress: bool | None, **hooks: Any) -> dict[str, Any]:
    """Train one stage: fresh, resumed from an incomplete ``last.pt``, or skipped when ``last.pt`` is complete."""
    from .engine import Trainer

    last = run_dir / "last.pt"
    resume = last.is_file()
    if resume:
        state = read_training_checkpoint(last)
        changed = _changed_fields(state.get("config", {}), config_to_dict(config))
        if changed:  # a stage is reused or resumed only for the same recipe
            raise PoseforgeError(f"{run_dir} holds a run of another recipe ({', '.join(changed[:4])}); use another output folder")
        done_steps = config.max_steps is not None and int(state["step"]) >= config.max_steps
        if int(state["epoch"]) >= config.schedule.epochs or done_steps:
            log.info(f"{run_dir}: complete ({state['epoch']} epochs, step {state['step']}); skipping this stage")
            best = state.get("best_score")
            return {"run_dir": str(run_dir), "steps": int(state["step"]), "epochs": int(state["epoch"]),
                    "best_score": None if best is None or math.isnan(best) else float(best),
                    "best_metric": state.get("best_metric"), "best_epoch": int(state.get("best_epoch", -1)),
                    "seconds": float(state.get("elapsed", 0.0)), "skipped": True}
        log.info(f"{run_dir}: resuming at epoch {state['epoch']}, step {state['step']}")
        del state
    trainer = Trainer(config, run_dir, resume=resume, progress=progress, **hooks)
    return {**trainer.fit(), "skipped": False}


def _changed_fields(saved: Any, new: Any, prefix: str = "") -> list[str]:
    """``key: saved -> new`` for each field of two config dicts that differs (nested keys dotted)."""
    if isinstance(saved, dict) and isinstance(new, dict):
        return [change for key in dict.fromkeys([*saved, *new])
                for change in _changed_fields(saved.get(key), new.get(key), f"{prefix}{key}.")]
    if isinstance(saved, (list, tuple)) and isinstance(new, (list, tuple)):
        saved, new = list(saved), list(new)
    return [] if saved == new else [f"{prefix[:-1]}: {saved} -> {new}"]


def distill_dwpose(teacher: Estimator, config: TrainConfig, out: str | os.PathLike, *,
                   stage2: int | None = None, alpha_fea: float = ALPHA_FEA, logit_weight: float = STAGE1_LOGIT_WEIGHT,
                   stage2_logit_weight: float = STAGE2_LOGIT_WEIGHT, stage2_gt_weight: float = 0.0,
                   stage2_head: str = "fresh", progress: bool | None = None) -> dict[str, Any]:
    """Both DWPose stages for the student ``config`` describes (its model, data and recipe; stage 1 runs
    ``config.schedule.epochs``), written into ``out``::

        stage1/    stage 1's run (best/, last.pt with the align convolution, metrics.jsonl ...)
        stage2/    stage 2's run: ``stage2`` epochs (default :func:`stage2_epochs`; 0 skips the stage)
        student/   the final student as a model folder (stage 2's best, else stage 1's): backbone + head only

    Stage 2's teacher is stage 1's best model (its ``last.pt`` when it never validated). Stage 2 keeps the
    recipe but for its length, its ground-truth loss weight ``stage2_gt_weight`` (mmpose: 0; the keypoint
    map loss goes with it) and its head's start ``stage2_head`` (mmpose: ``"fresh"``). Returns
    ``{"stage1": summary, "stage2": summary or None, "student": path, "stage2_epochs": n}``.
    """
    from ..models.loading import load_model

    out = Path(out)
    if stage2 is not None and stage2 < 0:
        raise PoseforgeError(f"DWPose stage-2 epochs must be >= 0, got {stage2}")
    if stage2_gt_weight < 0:
        raise PoseforgeError(f"DWPose stage-2 ground-truth weight must be >= 0, got {stage2_gt_weight}")
    if stage2_head == "stage1" and stage2_gt_weight == 0:
        # the head starts equal to its teacher: the logit loss sits at its minimum with zero gradient
        raise PoseforgeError("DWPose stage 2 from the stage-1 head without a ground-truth loss learns nothing; "
                             "use a fresh head or a ground-truth weight > 0")
    epochs2 = stage2_epochs(config.schedule.epochs) if stage2 is None else int(stage2)

    log.info(f"DWPose stage 1: {config.model.name} from {teacher.config.name}, {config.schedule.epochs} epochs")
    stage1 = DWPoseStage1(teacher, alpha_fea=alpha_fea, logit_weight=logit_weight, beta=config.loss.beta)
    base = config.name if "dwpose" in config.name else f"{config.name}-dwpose"
    config1 = config.replace(name=f"{base}-stage1")
    summary1 = _run_stage(config1, out / "stage1", progress, setup_model=stage1.setup_model, extra_loss=stage1,
                          auxiliary=stage1)
    stage1_student = load_model(out / "stage1")

    summary2 = None
    final = stage1_student
    if epochs2 > 0:
        log.info(f"DWPose stage 2: {config.model.name}'s head on the frozen stage-1 backbone, {epochs2} epochs")
        # the head's start is named in the run's config, so a re-run with the other start is not taken for this one
        head_tag = "" if stage2_head == "fresh" else "-stage1-head"
        changes: dict[str, Any] = {"name": f"{base}-stage2{head_tag}", "schedule.epochs": epochs2,
                                   "loss.loss_weight": stage2_gt_weight}
        if stage2_gt_weight == 0:
            changes["loss.keypoint_map_weight"] = 0.0
        hooks2 = DWPoseStage2(stage1_student, logit_weight=stage2_logit_weight, beta=config.loss.beta, head_init=stage2_head)
        summary2 = _run_stage(config.replace(**changes), out / "stage2", progress, setup_model=hooks2.setup_model,
                              extra_loss=hooks2)
        final = load_model(out / "stage2")
        frozen = stage1_student.backbone.state_dict()
        moved = [k for k, v in final.backbone.state_dict().items() if not torch.equal(v, frozen[k])]
        if moved:  # the exported student must be the stage-1 backbone exactly
            raise PoseforgeError(f"DWPose stage 2 changed the frozen backbone: {', '.join(moved[:5])}")
    replace_directory(out / "student", lambda folder: final.save_pretrained(folder))
    return {"stage1": summary1, "stage2": summary2, "student": str(out / "student"), "stage2_epochs": epochs2}
