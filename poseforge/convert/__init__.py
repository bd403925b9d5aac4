"""Checkpoint interop: official ViTPose (mmpose 0.x), mmpose 1.x and Hugging Face folders -> poseforge.

>>> model = convert_checkpoint("td-hm_ViTPose-base_8xb64-210e_coco-256x192-216eae50_20230314.pth")
>>> model.save_pretrained("vitpose-b-coco")          # or: poseforge convert SRC DST_DIR
"""
from __future__ import annotations

import os
from typing import Any

from ..errors import PoseforgeError
from ..models.estimators import Estimator
from ..models.loading import load_model
from ..registry import ESTIMATORS
from .checkpoint import Checkpoint, read_checkpoint
from .vitpose import FORMATS, detect_format, to_poseforge_keys, vitpose_from_state_dict
from .vitpose_plus import is_moe_checkpoint, vitpose_plus_from_state_dict

__all__ = ["convert_checkpoint", "read_checkpoint", "detect_format", "to_poseforge_keys", "vitpose_from_state_dict",
           "vitpose_plus_from_state_dict", "is_moe_checkpoint", "Checkpoint", "FORMATS"]


def convert_checkpoint(source: str | os.PathLike, format: str = "auto", **options: Any) -> Estimator:
    """Read a checkpoint file or folder and return the equivalent poseforge model (eval mode, CPU).

    ``format`` is ``"auto"`` (from the key names), ``"official"``, ``"mmpose"``, ``"hf"`` or
    ``"poseforge"``; ``options`` go to :func:`~poseforge.convert.vitpose.vitpose_from_state_dict`
    (``keypoint_set``, ``input_size``, ``num_heads``, ``codec``, ``sigma``). ViTPose++ checkpoints (task
    experts in the blocks) become multi-task models through
    :func:`~poseforge.convert.vitpose_plus.vitpose_plus_from_state_dict` (``tasks`` names them;
    ``keypoint_set`` does not apply).
    """
    ckpt = read_checkpoint(source)
    config = ckpt.hf_config or {}
    if format in ("auto", "poseforge") and "model_type" not in config and config.get("type") in ESTIMATORS:
        return load_model(ckpt.path)  # already a poseforge folder
    if is_moe_checkpoint(ckpt.state_dict.keys(), ckpt.hf_config):
        if options.get("keypoint_set") is not None:
            raise PoseforgeError(f"{ckpt.path}: a ViTPose++ checkpoint has one keypoint set per task; name them with "
                                 "tasks=['coco:coco17', ...] instead of keypoint_set")
        options.pop("keypoint_set", None)
        return vitpose_plus_from_state_dict(ckpt.state_dict, format, hf_config=ckpt.hf_config, source=str(ckpt.path),
                                            **options)
    options.pop("tasks", None)
    return vitpose_from_state_dict(ckpt.state_dict, format, hf_config=ckpt.hf_config, source=str(ckpt.path), **options)
