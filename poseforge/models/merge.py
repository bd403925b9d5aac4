"""Fold one task of a ViTPose++ model into a plain ViTPose (no experts, one head): same outputs, same speed.

Per block, the task's expert joins the shared FFN weights (``W`` are ``[out, in]`` linear weights):

* PS-FFN: ``fc2 = [fc2_shared; fc2_expert]`` stacked along the outputs (the expert gave the last
  ``P`` channels), ``fc1`` unchanged.
* IS-FFN: ``fc1 = [fc1_shared; fc1_expert]`` along the hidden units, ``fc2 = [fc2_shared, fc2_expert]``
  along its inputs, ``fc2`` biases summed: the two FFNs become one with ``H`` hidden units.
* I-FFN: the task's FFN is the FFN.

The result is a single-task :class:`~poseforge.models.estimators.TopDownEstimator` with a plain ``ViTConfig`` (the
``vitpose-*`` config type), so ``load_model``, the predictor, export and benchmarks treat it as
ViTPose. Knowledge tokens, if any, are kept.
"""
from __future__ import annotations

import re
from typing import Mapping

import torch

from ..errors import PoseforgeError
from .config import MultiTaskTopDownConfig, TopDownConfig
from .estimators import TopDownEstimator
from .loading import model_from_state_dict

__all__ = ["merge_experts", "merge_state_dict"]

_BLOCK_MLP = re.compile(r"backbone\.blocks\.(\d+)\.mlp\.(.+)$")


def merge_state_dict(state: Mapping[str, torch.Tensor], config, task: int) -> dict[str, torch.Tensor]:
    """The plain single-task state dict of task ``task`` of a multi-task ``config``'s weights ``state``."""
    backbone = config.backbone
    variant = backbone.moe_variant if getattr(backbone, "num_experts", 1) > 1 else None
    expert = config.expert_index(task)
    head = config.head_index(task)
    out: dict[str, torch.Tensor] = {}
    mlp: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        m = _BLOCK_MLP.match(key)
        if m and variant is not None:
            mlp.setdefault(int(m.group(1)), {})[m.group(2)] = value
        elif key.startswith("backbone."):
            out[key] = value
        elif key.startswith(f"heads.{head}."):
            out["head." + key[len(f"heads.{head}."):]] = value
        elif not key.startswith("heads."):
            raise PoseforgeError(f"merge: unexpected weight {key} in a multi-task model")
    for block, p in sorted(mlp.items()):
        prefix = f"backbone.blocks.{block}.mlp."
        try:
            if variant == "ps":
                e = f"experts.{expert}."
                fc1_w, fc1_b = p["fc1.weight"], p["fc1.bias"]
                fc2_w = torch.cat([p["fc2.weight"], p[e + "weight"]], dim=0)
                fc2_b = torch.cat([p["fc2.bias"], p[e + "bias"]], dim=0)
            elif variant == "is":
                e = f"experts.{expert}."
                fc1_w = torch.cat([p["fc1.weight"], p[e + "fc1.weight"]], dim=0)
                fc1_b = torch.cat([p["fc1.bias"], p[e + "fc1.bias"]], dim=0)
                fc2_w = torch.cat([p["fc2.weight"], p[e + "fc2.weight"]], dim=1)
                fc2_b = p["fc2.bias"] + p[e + "fc2.bias"]
            else:  # "i"
                e = f"experts.{expert}."
                fc1_w, fc1_b, fc2_w, fc2_b = (p[e + n] for n in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"))
        except KeyError as missing:
            raise PoseforgeError(f"merge: block {block} lacks {prefix}{missing.args[0]}") from None
        out.update({prefix + "fc1.weight": fc1_w, prefix + "fc1.bias": fc1_b,
                    prefix + "fc2.weight": fc2_w, prefix + "fc2.bias": fc2_b})
    return out


def merge_experts(model: TopDownEstimator, task: "int | str") -> TopDownEstimator:
    """The plain ViTPose equal to ``model`` on task ``task`` (index or name), on the model's device.

    Raises:
        PoseforgeError: not a multi-task model, or an unknown task (the message lists the tasks).
    """
    if not isinstance(getattr(model, "config", None), MultiTaskTopDownConfig):
        raise PoseforgeError(f"merge-experts needs a multi-task (ViTPose++) model, got {type(model).__name__} "
                             f"({getattr(getattr(model, 'config', None), 'name', '?')})")
    config = model.config
    t = config.task_index(task)
    task_cfg = config.tasks[t]
    backbone = config.backbone
    if hasattr(backbone, "num_experts"):
        backbone = backbone.replace(num_experts=1, moe_variant="ps", part_features=None)
    merged = TopDownConfig(
        backbone=backbone, head=config.heads[config.head_index(t)], codec=dict(config.codec),
        name=f"{config.name}-{task_cfg.name}", keypoint_set=task_cfg.keypoint_set, input_size=config.input_size,
        mean=config.mean, std=config.std, flip_test=config.flip_test)
    with torch.no_grad():
        state = merge_state_dict({k: v.detach() for k, v in model.state_dict().items()}, config, t)
    device = next(model.parameters()).device
    out = model_from_state_dict(merged, {k: v.clone() for k, v in state.items()}, f"{config.name} task {task_cfg.name}", device)
    out.train(model.training)
    return out
