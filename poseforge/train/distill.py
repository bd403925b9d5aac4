"""Knowledge distillation of the ViTPose paper: a small student learns from a larger trained teacher.

* **Output distillation** (:class:`OutputDistillation`): the student's outputs are pulled toward the
  teacher's on the same crops, ``loss = gt_loss + weight * D(student, teacher)``; a ``Trainer``
  ``extra_loss`` hook. ``D`` is the MSE for heatmap heads; for SimCC heads, the KL divergence of
  the student's bin distributions from the teacher's (the logit distillation of DWPose); for
  bottom-up heads (LitePose, HigherHRNet), the heatmap MSE at every scale both have plus the tag
  distillation of :func:`heatmaps_tags_distillation_loss`.
* **Knowledge-token distillation**: (1) :func:`learn_knowledge_token` appends learnable tokens to a
  frozen copy of the teacher and trains only them with the ground-truth loss; (2) the student is
  trained with those tokens appended to its patch tokens, frozen (:func:`token_student_setup`, a
  ``Trainer`` ``setup_model`` hook). A teacher of another width reaches the student through a
  trainable linear projection (``ViTConfig.knowledge_dim``); the tokens themselves never change.
* Both together: the token student with the output loss.

The teacher and the student must share the keypoint set and the input size (the teacher sees the
student's training crops or, bottom-up, whole images).
"""
from __future__ import annotations

import os
import types
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import PoseforgeError
from ..models.estimators import Estimator
from ..models.loading import build_model
from ..outputs import HeadOutput, Heatmaps, HeatmapsTags, SimCCLogits
from .config import TrainConfig

__all__ = ["OutputDistillation", "simcc_distillation_loss", "heatmaps_tags_distillation_loss", "learn_knowledge_token",
           "token_student_setup", "check_compatible", "freeze_batchnorm", "teacher_with_tokens", "save_token", "METHODS"]


METHODS = ("output", "token", "both")


def check_compatible(teacher: Estimator, student: Estimator) -> None:
    """The teacher can supervise the student: same keypoint set, input size, codec and heatmap size."""
    problems = []
    t_codec, s_codec = teacher.config.codec, student.config.codec
    if teacher.kind != student.kind:
        problems.append(f"estimator kinds {teacher.kind} vs {student.kind}")
    elif _output_kind(t_codec) != _output_kind(s_codec):
        problems.append(f"codecs {t_codec.get('name')} vs {s_codec.get('name')}")
    elif _output_kind(t_codec) == "simcc" and t_codec.get("split_ratio") != s_codec.get("split_ratio"):
        problems.append(f"SimCC split ratios {t_codec.get('split_ratio')} vs {s_codec.get('split_ratio')}")
    if teacher.keypoint_set.name != student.keypoint_set.name:
        problems.append(f"keypoint sets {teacher.keypoint_set.name} vs {student.keypoint_set.name}")
    if tuple(teacher.config.input_size) != tuple(student.config.input_size):
        problems.append(f"input sizes {tuple(teacher.config.input_size)} vs {tuple(student.config.input_size)}")
    t_out, s_out = getattr(teacher, "output_size", None), getattr(student, "output_size", None)
    if t_out is not None and s_out is not None and tuple(t_out) != tuple(s_out):
        problems.append(f"heatmap sizes {tuple(t_out)} vs {tuple(s_out)}")
    if problems:
        raise PoseforgeError(f"teacher {teacher.config.name} and student {student.config.name} differ: "
                             + "; ".join(problems))


def freeze_batchnorm(model: nn.Module) -> nn.Module:
    """Keep every BatchNorm of a frozen model in eval mode (running statistics), whatever ``train()`` says."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
            module.train = types.MethodType(lambda self, mode=True: nn.Module.train(self, False), module)
    return model


def _output_kind(codec: dict) -> str:
    name = codec.get("name")
    return "simcc" if name == "simcc" else "tags" if name == "associative-embedding" else "heatmap"


def simcc_distillation_loss(student: SimCCLogits | tuple[Tensor, Tensor], teacher: SimCCLogits | tuple[Tensor, Tensor],
                            beta: float = 10.0) -> Tensor:
    """``KL(softmax(beta * teacher) || softmax(beta * student))`` per keypoint and axis, averaged over
    keypoints and the batch, summed over the x and y axes (``beta`` as in the SimCC training loss)."""
    if isinstance(student, SimCCLogits):
        student = (student.simcc_x, student.simcc_y)
    if isinstance(teacher, SimCCLogits):
        teacher = (teacher.simcc_x, teacher.simcc_y)
    total = student[0].new_zeros((), dtype=torch.float32)
    for s, t in zip(student, teacher):
        log_p = F.log_softmax(s.float().flatten(0, 1) * beta, dim=1)
        log_q = F.log_softmax(t.float().flatten(0, 1) * beta, dim=1)
        total = total + F.kl_div(log_p, log_q, reduction="batchmean", log_target=True)
    return total


def heatmaps_tags_distillation_loss(student: HeatmapsTags, teacher: HeatmapsTags,
                                    tag_weight: float = 1.0) -> dict[str, Tensor]:
    """Bottom-up output distillation: ``{"heatmaps", "tags"}`` terms (unweighted by the caller's weight).

    ``heatmaps``: the MSE of the heatmaps, plus that of the 1/2-scale heatmaps where both have them.
    ``tags``: associative-embedding tags mean something only at people's joints and only up to a
    shift per image (the pull/push loss sees tag differences), so the tag term is the squared
    difference of the two models' tags after each removes its own mean tag per image and tag
    dimension, weighted by the teacher's heatmaps (its belief that keypoint ``k`` lies at a pixel),
    times ``tag_weight``. No ignore mask: unlabelled people the teacher sees are what the student
    should learn from it too.
    """
    if student.heatmaps.shape != teacher.heatmaps.shape or student.tags.shape != teacher.tags.shape:
        raise PoseforgeError(f"output distillation: teacher heatmaps {list(teacher.heatmaps.shape)} and tags "
                             f"{list(teacher.tags.shape)} vs student {list(student.heatmaps.shape)} and "
                             f"{list(student.tags.shape)}")
    heatmaps = F.mse_loss(student.heatmaps.float(), teacher.heatmaps.float())
    if student.heatmaps_hr is not None and teacher.heatmaps_hr is not None:
        heatmaps = heatmaps + F.mse_loss(student.heatmaps_hr.float(), teacher.heatmaps_hr.float())
    B, K, H, W = teacher.heatmaps.shape
    if teacher.tags.shape[-2:] != (H, W) or teacher.tags.shape[1] % K:
        raise PoseforgeError(f"output distillation: tags {list(teacher.tags.shape)} do not fit heatmaps {[B, K, H, W]}")
    # weights [B, 1, K, H, W] over tags [B, L, K, H, W] (channel l * K + k)
    weight = teacher.heatmaps.float().clamp(0.0, 1.0)[:, None]
    total = weight.sum(dim=(2, 3, 4), keepdim=True).clamp_min(1e-6)

    def centred(tags: Tensor) -> Tensor:
        tags = tags.float().view(B, -1, K, H, W)
        return tags - (weight * tags).sum(dim=(2, 3, 4), keepdim=True) / total

    squared = (centred(student.tags) - centred(teacher.tags)).square()
    tags = ((weight * squared).sum(dim=(2, 3, 4)) / total.view(B, 1)).mean()
    return {"heatmaps": heatmaps, "tags": tag_weight * tags}


class OutputDistillation:
    """``extra_loss`` hook: ``weight * D(student outputs, teacher outputs)`` on the batch's crops, with
    ``D`` the MSE of heatmaps, for SimCC outputs (a pair of logits) :func:`simcc_distillation_loss`,
    and for bottom-up outputs :func:`heatmaps_tags_distillation_loss` (``tag_weight`` on its tag term;
    its two terms are logged as ``loss_kd_heatmaps`` and ``loss_kd_tags`` in ``metrics.jsonl``).

    The teacher runs in eval mode without gradients, on the device of the batch, normalizing the raw
    crops with its own mean / std.
    """

    def __init__(self, teacher: Estimator, weight: float = 1.0, tag_weight: float = 1.0) -> None:
        if weight < 0 or tag_weight < 0:
            raise PoseforgeError(f"output distillation weights must be >= 0, got {weight} and tag weight {tag_weight}")
        self.teacher = teacher.eval().requires_grad_(False)
        self.weight = float(weight)
        self.tag_weight = float(tag_weight)
        self.last_parts: dict[str, Tensor] = {}

    def teacher_outputs(self, raw_images: Tensor) -> HeadOutput:
        device = raw_images.device
        if next(self.teacher.parameters()).device != device:
            self.teacher.to(device)
        with torch.no_grad():
            return self.teacher(self.teacher.normalize(raw_images)).float()

    def __call__(self, batch: Any, images: Tensor, outputs: HeadOutput) -> Tensor:
        target = self.teacher_outputs(batch.image)
        if type(target) is not type(outputs):
            raise PoseforgeError(f"output distillation: the teacher and the student have different kinds of head "
                                 f"({type(target).__name__} vs {type(outputs).__name__})")
        if isinstance(target, Heatmaps):
            if target.heatmaps.shape != outputs.heatmaps.shape:
                raise PoseforgeError(f"output distillation: teacher heatmaps {list(target.heatmaps.shape)} vs student "
                                     f"{list(outputs.heatmaps.shape)}")
            return self.weight * F.mse_loss(outputs.heatmaps.float(), target.heatmaps)
        if isinstance(target, SimCCLogits):
            shapes = [list(target.simcc_x.shape), list(target.simcc_y.shape)], [list(outputs.simcc_x.shape), list(outputs.simcc_y.shape)]
            if shapes[0] != shapes[1]:
                raise PoseforgeError(f"output distillation: teacher SimCC logits {shapes[0]} vs student {shapes[1]}")
            return self.weight * simcc_distillation_loss(outputs, target)
        if isinstance(target, HeatmapsTags):
            terms = heatmaps_tags_distillation_loss(outputs, target, self.tag_weight)
            self.last_parts = {f"kd_{name}": value.detach() for name, value in terms.items()}
            return self.weight * (terms["heatmaps"] + terms["tags"])
        raise PoseforgeError(f"output distillation: no distillation loss for {type(target).__name__} outputs")


def teacher_with_tokens(teacher: Estimator, tokens: int = 1, seed: int = 0) -> Estimator:
    """A frozen copy of ``teacher`` with ``tokens`` fresh learnable knowledge tokens (drop path off,
    BatchNorm on its running statistics); only ``backbone.knowledge_token`` requires gradients."""
    backbone = teacher.config.backbone
    if not hasattr(backbone, "knowledge_tokens"):
        raise PoseforgeError(f"{teacher.config.name}: knowledge tokens need a ViT backbone")
    config = teacher.config.replace(backbone=backbone.replace(knowledge_tokens=tokens, knowledge_dim=None,
                                                              drop_path_rate=0.0))
    torch.manual_seed(seed)
    model = build_model(config)
    state = {k: v.detach().clone() for k, v in teacher.state_dict().items()}
    state["backbone.knowledge_token"] = model.backbone.knowledge_token.detach().clone()
    model.load_weights(state, source=f"teacher {teacher.config.name}")
    model.requires_grad_(False)
    model.backbone.knowledge_token.requires_grad_(True)
    return freeze_batchnorm(model)


def learn_knowledge_token(teacher: Estimator, config: TrainConfig, run_dir: str | os.PathLike, tokens: int = 1,
                          progress: bool | None = None) -> Tensor:
    """Stage 1 of token distillation: train only the knowledge tokens of a frozen teacher with the
    ground-truth loss (``config`` gives data, epochs and learning rate). Returns the tokens
    ``[1, tokens, teacher width]``; ``run_dir/best`` holds the teacher with its tokens."""
    from .engine import Trainer

    setup: Callable[[nn.Module], nn.Module] = lambda _built: teacher_with_tokens(teacher, tokens, config.seed)  # noqa: E731
    trainer = Trainer(config, run_dir, progress=progress, setup_model=setup)
    trainer.fit()
    token = trainer.estimator.backbone.knowledge_token.detach().cpu().clone()
    drift = [n for n, p in trainer.estimator.named_parameters()
             if n != "backbone.knowledge_token" and not torch.equal(p.detach().cpu(), teacher.state_dict()[n].cpu())]
    if drift:
        raise PoseforgeError(f"token learning changed teacher weights: {', '.join(drift[:5])}")
    return token


def token_student_setup(token: Tensor, teacher: Estimator | None = None) -> Callable[[nn.Module], nn.Module]:
    """``setup_model`` hook of stage 2: put the learned ``token`` into the student (built with
    ``knowledge_tokens`` and ``knowledge_dim`` matching it) and freeze it."""

    def setup(student: nn.Module) -> nn.Module:
        backbone = getattr(student, "backbone", None)
        slot = getattr(backbone, "knowledge_token", None)
        if slot is None:
            raise PoseforgeError(f"student {student.config.name}: built without knowledge tokens "
                                 f"(set model.overrides.knowledge_tokens={token.shape[1]})")
        if tuple(slot.shape) != tuple(token.shape):
            raise PoseforgeError(f"student knowledge token {list(slot.shape)} does not fit the learned one "
                                 f"{list(token.shape)} (knowledge_tokens / knowledge_dim)")
        if teacher is not None:
            check_compatible(teacher, student)
        with torch.no_grad():
            slot.copy_(token.to(slot.device, slot.dtype))
        slot.requires_grad_(False)
        return student

    return setup


def save_token(token: Tensor, path: str | os.PathLike) -> Path:
    """Write the learned tokens as a safetensors file (atomically)."""
    from safetensors.torch import save_file

    from ..io import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file({"knowledge_token": token.contiguous()}, str(tmp))
    return path
