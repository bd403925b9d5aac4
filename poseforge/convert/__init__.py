"""Checkpoint interop: official ViTPose (mmpose 0.x), mmpose 1.x (ViTPose, RTMPose, DWPose, RTMW), official
LitePose and Sapiens, and Hugging Face folders -> poseforge.

>>> model = convert_checkpoint("td-hm_ViTPose-base_8xb64-210e_coco-256x192-216eae50_20230314.pth")
>>> model.save_pretrained("vitpose-b-coco")          # or: poseforge convert SRC DST_DIR
>>> rtm = convert_checkpoint("rtmpose-m_simcc-body7_pt-body7_420e-256x192-e48f03d0_20230504.pth")
"""
from __future__ import annotations

import os
from typing import Any

from ..errors import PoseforgeError
from ..models.estimators import Estimator
from ..models.loading import load_model
from ..registry import ESTIMATORS
from .checkpoint import Checkpoint, read_checkpoint
from .litepose import is_litepose_checkpoint, litepose_from_state_dict
from .rtmpose import rtmpose_family, rtmpose_from_state_dict
from .sapiens import is_sapiens_checkpoint, sapiens_from_state_dict
from .vitpose import FORMATS, detect_format, to_poseforge_keys, vitpose_from_state_dict
from .vitpose_plus import is_moe_checkpoint, vitpose_plus_from_state_dict

__all__ = ["convert_checkpoint", "read_checkpoint", "detect_format", "to_poseforge_keys", "vitpose_from_state_dict",
           "vitpose_plus_from_state_dict", "is_moe_checkpoint", "rtmpose_from_state_dict", "rtmpose_family",
           "litepose_from_state_dict", "is_litepose_checkpoint", "sapiens_from_state_dict", "is_sapiens_checkpoint",
           "Checkpoint", "FORMATS", "CHECKPOINT_FORMATS"]

# Every ``format`` convert_checkpoint takes: the ViTPose layouts, "rtmpose" (RTMPose, DWPose, RTMW), "litepose"
# and "sapiens".
CHECKPOINT_FORMATS = ("auto",) + FORMATS + ("rtmpose", "litepose", "sapiens")
_LITEPOSE_OPTIONS = ("keypoint_set", "input_size")
_RTMPOSE_OPTIONS = ("keypoint_set", "input_size", "split_ratio", "sigma", "distill_stage")
_SAPIENS_OPTIONS = ("task", "keypoint_set", "input_size", "num_heads", "patch_padding", "codec", "sigma")


def convert_checkpoint(source: str | os.PathLike, format: str = "auto", raw_weights: bool = False, **options: Any) -> Estimator:
    """Read a checkpoint file or folder and return the equivalent poseforge model (eval mode, CPU).

    ``format`` is ``"auto"`` (from the key names), ``"official"``, ``"mmpose"``, ``"hf"``, ``"poseforge"``,
    ``"rtmpose"``, ``"litepose"`` or ``"sapiens"``. ``raw_weights=True`` converts an mmengine checkpoint's ``ema_state_dict`` entry instead of
    its ``state_dict`` (:meth:`~poseforge.convert.checkpoint.Checkpoint.weights`: mmengine saves the
    averaged weights in ``state_dict``, the raw ones in ``ema_state_dict``). Options left ``None`` take
    their defaults.

    * ViTPose: ``options`` go to :func:`~poseforge.convert.vitpose.vitpose_from_state_dict`
      (``keypoint_set``, ``input_size``, ``num_heads``, ``codec``, ``sigma``). ViTPose++ checkpoints (task
      experts in the blocks) become multi-task models through
      :func:`~poseforge.convert.vitpose_plus.vitpose_plus_from_state_dict` (``tasks`` names them;
      ``keypoint_set`` does not apply).
    * RTMPose / DWPose / RTMW (mmpose 1.x, CSPNeXt backbone): ``options`` go to
      :func:`~poseforge.convert.rtmpose.rtmpose_from_state_dict` (``keypoint_set``, ``input_size``,
      ``split_ratio``, ``sigma``, ``distill_stage``), with the checkpoint's ``meta``.
    * LitePose (mit-han-lab/litepose ``pose_mobilenet`` state dicts): ``options`` go to
      :func:`~poseforge.convert.litepose.litepose_from_state_dict` (``keypoint_set``, ``input_size``).
    * Sapiens (facebookresearch/sapiens pose, segmentation, depth, normal and pretraining checkpoints; told
      from mmpose ViTPose ones by an mmseg ``decode_head``, a pose head with ``conv_layers``, a bare or
      MAE-decoder backbone): ``options`` go to :func:`~poseforge.convert.sapiens.sapiens_from_state_dict`
      (``task``, ``keypoint_set``, ``input_size``, ``num_heads``, ``patch_padding``, ``codec``, ``sigma``).
    """
    if format not in CHECKPOINT_FORMATS:
        raise PoseforgeError(f"unknown checkpoint format '{format}'; known: {', '.join(CHECKPOINT_FORMATS)}")
    ckpt = read_checkpoint(source)
    try:
        return _convert(ckpt, format, raw_weights, options)
    except PoseforgeError as e:  # every message names the file, on one line
        message = " ".join(str(e).split("\n"))
        if str(ckpt.path) not in message:
            raise PoseforgeError(f"{ckpt.path}: {message}") from e
        if message != str(e):
            raise PoseforgeError(message) from e
        raise
    except (RuntimeError, ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
        # Tensors that fit no model (a wrong dtype, a shape the checks above let through): one line, not a traceback.
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise PoseforgeError(f"{ckpt.path}: cannot convert the checkpoint ({type(e).__name__}: {first[:200]})") from e


# Integer tensors a float checkpoint may hold: BatchNorm counters, mmengine's EMA step counter.
_INTEGER_KEYS = ("num_batches_tracked", "steps")


def _check_dtypes(state: dict[str, Any], path: Any) -> None:
    """Weights are floating point (fp32, fp16, bf16); integer or bool ones are no model's."""
    ints = [k for k, v in state.items() if not (v.is_floating_point() or k.endswith(_INTEGER_KEYS))]
    if ints:
        raise PoseforgeError(f"{path}: {len(ints)} weight tensor(s) are not floating point "
                             f"({ints[0]}: {str(state[ints[0]].dtype).replace('torch.', '')}); not a model checkpoint")


def _convert(ckpt: Checkpoint, format: str, raw_weights: bool, options: dict[str, Any]) -> Estimator:
    config = ckpt.hf_config or {}
    if format in ("auto", "poseforge") and "model_type" not in config and config.get("type") in ESTIMATORS:
        if raw_weights:
            raise PoseforgeError(f"{ckpt.path}: a poseforge model folder has no EMA entry; convert it without raw_weights")
        return load_model(ckpt.path)  # already a poseforge folder
    state = ckpt.weights(raw_weights)
    _check_dtypes(state, ckpt.path)
    options = {k: v for k, v in options.items() if v is not None}
    if format == "litepose" or (format == "auto" and is_litepose_checkpoint(state.keys())):
        if options.pop("codec", "associative-embedding") != "associative-embedding":
            raise PoseforgeError(f"{ckpt.path}: LitePose heads use the associative-embedding codec; leave codec unset")
        _reject([n for n in options if n not in _LITEPOSE_OPTIONS], "a LitePose checkpoint", ckpt.path)
        return litepose_from_state_dict(state, source=str(ckpt.path), **options)
    if format == "rtmpose" or (format in ("auto", "mmpose") and rtmpose_family(state.keys()) is not None):
        if options.pop("codec", "simcc") != "simcc":
            raise PoseforgeError(f"{ckpt.path}: RTMPose / DWPose / RTMW heads use the simcc codec; leave codec unset")
        _reject([n for n in options if n not in _RTMPOSE_OPTIONS], "an RTMPose / DWPose / RTMW checkpoint", ckpt.path)
        return rtmpose_from_state_dict(state, meta=ckpt.meta, source=str(ckpt.path), **options)
    if format == "sapiens" or (format in ("auto", "mmpose") and is_sapiens_checkpoint(state.keys())):
        _reject([n for n in options if n not in _SAPIENS_OPTIONS], "a Sapiens checkpoint", ckpt.path)
        return sapiens_from_state_dict(state, source=str(ckpt.path), **options)
    _reject([n for n in ("split_ratio", "distill_stage", "task", "patch_padding") if n in options],
            "a ViTPose checkpoint", ckpt.path)
    if is_moe_checkpoint(state.keys(), ckpt.hf_config):
        if options.get("keypoint_set") is not None:
            raise PoseforgeError(f"{ckpt.path}: a ViTPose++ checkpoint has one keypoint set per task; name them with "
                                 "tasks=['coco:coco17', ...] instead of keypoint_set")
        options.pop("keypoint_set", None)
        return vitpose_plus_from_state_dict(state, format, hf_config=ckpt.hf_config, source=str(ckpt.path), **options)
    options.pop("tasks", None)
    return vitpose_from_state_dict(state, format, hf_config=ckpt.hf_config, source=str(ckpt.path), **options)


def _reject(names: list[str], kind: str, path: Any) -> None:
    """One-line error naming the options that do not apply to this kind of checkpoint."""
    if names:
        raise PoseforgeError(f"{path}: option(s) {', '.join(names)} do not apply to {kind}")
