"""ViTPose++ (mixture-of-experts) checkpoints -> poseforge multi-task models.

Key names, read from each codebase's modules:

* ``official``: ViTAE-Transformer/ViTPose ``ViTMoE`` + ``TopDownMoE``. The backbone as in ViTPose with
  the PS-FFN in every block: ``backbone.blocks.N.mlp.fc1`` (shared), ``backbone.blocks.N.mlp.fc2``
  (shared part, ``C - P`` outputs) and ``backbone.blocks.N.mlp.experts.M`` (``P`` outputs each). Heads:
  ``keypoint_head.*`` for dataset index 0 and ``associate_keypoint_heads.{i-1}.*`` for index ``i``.
* ``hf``: transformers ``VitPoseForPoseEstimation`` with ``backbone_config.num_experts > 1``:
  ``backbone.encoder.layer.N.mlp.{fc1,fc2,experts.M}``; one head (``head.*``), shared by every
  ``dataset_index`` (the released HF ViTPose++ models keep the COCO head only).

The expert count and width come from the weight shapes (released checkpoints differ from some config
files: ViTPose+-S has 96-wide experts where its config says 192). With six experts the tasks get the
official names in dataset-index order (coco, aic, mpii, ap10k, apt36k, wholebody); otherwise
``task0``, ``task1`` ... unless ``tasks`` names them.
"""
from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import torch

from ..errors import PoseforgeError
from ..keypoints import get_keypoint_set
from ..models.estimators import Estimator
from ..models.loading import model_from_state_dict
from ..models.config import MultiTaskTopDownConfig, TaskConfig
from ..models.zoo import VITPOSE_PLUS_TASKS, sync_codec
from .vitpose import (_COMPILED, _SIZE_NAMES, codec_config, detect_format, infer_backbone, infer_head,
                      resolve_keypoint_set, to_poseforge_keys)

__all__ = ["is_moe_checkpoint", "vitpose_plus_from_state_dict"]

_EXPERT_KEYS = {
    "official": re.compile(r"backbone\.blocks\.(\d+)\.mlp\.experts\.(\d+)\.(weight|bias)$"),
    "hf": re.compile(r"backbone\.encoder\.layer\.(\d+)\.mlp\.experts\.(\d+)\.(weight|bias)$"),
    "poseforge": re.compile(r"backbone\.blocks\.(\d+)\.mlp\.experts\.(\d+)\.(weight|bias)$"),
}
_ASSOCIATE_HEAD = re.compile(r"associate_keypoint_heads\.(\d+)\.(.+)$")


def is_moe_checkpoint(keys: Any, hf_config: Mapping[str, Any] | None = None) -> bool:
    """True for ViTPose++ checkpoints: expert weights in the blocks, or a HF config with experts."""
    backbone = dict((hf_config or {}).get("backbone_config") or {})
    if int(backbone.get("num_experts") or 1) > 1:
        return True
    return any(".mlp.experts." in k for k in keys)


def _parse_tasks(tasks: Sequence[Any] | None, count: int, source: str) -> list[tuple[str, str | None]] | None:
    if tasks is None:
        return None
    out: list[tuple[str, str | None]] = []
    for t in tasks:
        if isinstance(t, str):
            name, _, ks = t.partition(":")
            out.append((name, ks or None))
        elif isinstance(t, (tuple, list)) and len(t) == 2:
            out.append((str(t[0]), None if t[1] is None else str(t[1])))
        else:
            raise PoseforgeError(f"tasks: expected 'name' or 'name:keypoint_set' entries, got {t!r}")
    if len(out) != count:
        raise PoseforgeError(f"{source}: {len(out)} task names given but the checkpoint has {count} tasks")
    return out


def vitpose_plus_from_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    fmt: str = "auto",
    *,
    hf_config: Mapping[str, Any] | None = None,
    tasks: Sequence[Any] | None = None,
    input_size: tuple[int, int] | None = None,
    num_heads: int | None = None,
    codec: str | dict = "udp",
    sigma: float = 2.0,
    simple_upsample: int = 4,
    source: str = "checkpoint",
) -> Estimator:
    """Build a poseforge :class:`~poseforge.models.estimators.TopDownEstimator` (multi-task) from a ViTPose++ checkpoint.

    Args:
        state_dict: the checkpoint's tensors.
        fmt: ``"official"``, ``"hf"``, ``"poseforge"`` or ``"auto"``.
        hf_config: a Hugging Face folder's ``config.json``.
        tasks: task names in dataset-index order, each ``"name"`` or ``"name:keypoint_set"`` (default:
            the official six with six experts, else ``task{i}``; keypoint sets from the head sizes).
        input_size, num_heads, codec, sigma, simple_upsample: as
            :func:`~poseforge.convert.vitpose.vitpose_from_state_dict`.
    Raises:
        PoseforgeError: unknown / missing / mis-shaped keys (all listed), no experts, ambiguous heads.
    """
    if fmt == "auto":
        fmt = detect_format(state_dict.keys(), hf_config)
    if fmt not in _EXPERT_KEYS:
        raise PoseforgeError(f"{source}: ViTPose++ checkpoints come in the official, hf or poseforge layout, not {fmt}")
    experts_pattern = _EXPERT_KEYS[fmt]
    experts: dict[str, torch.Tensor] = {}
    associate: dict[int, dict[str, torch.Tensor]] = {}
    rest: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if m := experts_pattern.match(key):
            experts[f"backbone.blocks.{m.group(1)}.mlp.experts.{m.group(2)}.{m.group(3)}"] = value
        elif fmt == "official" and (m := _ASSOCIATE_HEAD.match(key)):
            associate.setdefault(int(m.group(1)), {})["keypoint_head." + m.group(2)] = value
        else:
            rest[key] = value
    if not experts:
        raise PoseforgeError(f"{source}: no expert weights (mlp.experts.*) found: not a ViTPose++ checkpoint; "
                             "convert it as a plain ViTPose")
    if fmt == "poseforge":
        state = {k: v for k, v in rest.items() if k.startswith("backbone.")}
        heads = {k: v for k, v in rest.items() if k.startswith("heads.")}
        unknown = sorted(set(rest) - set(state) - set(heads))
        if unknown:
            raise PoseforgeError(f"{source}: unknown key(s) for a poseforge multi-task model: {', '.join(unknown[:12])}")
        state.update(heads)
    else:
        renamed = to_poseforge_keys(rest, fmt, source)
        state = {k: v for k, v in renamed.items() if k.startswith("backbone.")}
        state.update({"heads.0." + k[len("head."):]: v for k, v in renamed.items() if k.startswith("head.")})
        for i, head_state in sorted(associate.items()):
            for key, value in head_state.items():
                for pattern, replacement in _COMPILED["official"]:
                    if pattern.match(key):
                        state[f"heads.{i + 1}." + pattern.sub(replacement, key)[len("head."):]] = value
                        break
                else:
                    raise PoseforgeError(f"{source}: unknown key associate_keypoint_heads.{i}.{key[len('keypoint_head.'):]}")
    state.update(experts)

    backbone, input_size = infer_backbone(state, fmt, hf_config, num_heads, input_size, source)
    hf_backbone = dict((hf_config or {}).get("backbone_config") or {})
    if hf_backbone.get("num_experts") not in (None, backbone.num_experts):
        raise PoseforgeError(f"{source}: config.json says {hf_backbone['num_experts']} experts but the weights hold "
                             f"{backbone.num_experts}")
    head_ids = sorted({int(m.group(1)) for k in state if (m := re.match(r"heads\.(\d+)\.", k))})
    if head_ids != list(range(len(head_ids))) or not head_ids:
        raise PoseforgeError(f"{source}: expected heads 0..N-1, found {head_ids or 'none'}")
    head_configs, head_sizes = zip(*(infer_head(state, f"heads.{h}.", hf_config, simple_upsample, source) for h in head_ids))
    num_experts = backbone.num_experts
    if len(head_ids) == num_experts:
        pairs = [(t, t) for t in range(num_experts)]  # task t: expert t, head t (official)
    elif len(head_ids) == 1:
        pairs = [(t, 0) for t in range(num_experts)]  # one shared head (Hugging Face)
    else:
        raise PoseforgeError(f"{source}: {len(head_ids)} heads for {num_experts} experts; expected one head per "
                             "expert or a single shared head")
    given = _parse_tasks(tasks, len(pairs), source)
    official = [name for name, _ in VITPOSE_PLUS_TASKS]
    task_configs = []
    for t, h in pairs:
        k = head_sizes[h]
        if given is not None:
            name, ks = given[t]
        else:
            name = official[t] if num_experts == len(official) else f"task{t}"
            ks = None
            if len(head_ids) == num_experts == len(official):
                official_ks = VITPOSE_PLUS_TASKS[t][1]
                ks = official_ks if get_keypoint_set(official_ks).num_keypoints == k else None
        ks = resolve_keypoint_set(k, ks, f"{source}: task {name} (head {h})")
        task_configs.append(TaskConfig(name=name, keypoint_set=ks, head=h, expert=t))
    size = _SIZE_NAMES.get(backbone.embed_dim, "custom")
    config = sync_codec(MultiTaskTopDownConfig(
        name=f"vitpose++-{size}", backbone=backbone, heads=tuple(head_configs), tasks=tuple(task_configs),
        codec=codec_config(codec, sigma), input_size=input_size))
    model = model_from_state_dict(config, state, source)
    model.codec  # noqa: B018  (validates the codec settings before anything is saved)
    return model
