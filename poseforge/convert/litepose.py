"""Official LitePose checkpoints (mit-han-lab/litepose ``pose_mobilenet``) -> poseforge.

The released files (``LitePose-Auto-{XS,S,M,L}`` for CrowdPose and COCO) are plain state dicts of one
``PoseMobileNet`` module, loaded there with ``load_state_dict(torch.load(f), strict=True)``; the architecture
lives in a separate ``search-*.json``. poseforge's LitePose keeps the official module names below a
``backbone.`` (``first.*``, ``stage.*``) and a ``head.`` (``deconv_*``, ``final_*``) prefix, so conversion is a
renaming plus reading the architecture back from the tensor shapes: stem and stage widths, stage depths,
expansion ratios and kernel sizes, the deconvolution widths and kernels, the final kernel, the keypoint count
and the tag dimension. Strides are the official 2/2/2/1 (weights do not record them). A ``DataParallel``
``module.`` prefix is dropped.
"""
from __future__ import annotations

from typing import Mapping

import torch

from ..errors import PoseforgeError
from ..models.backbones.mobilenetv2 import MobileNetV2Config
from ..models.estimators import Estimator
from ..models.heads.bottomup import LitePoseHeadConfig
from ..models.loading import model_from_state_dict
from ..models.zoo import LITEPOSE_ARCHS, litepose_config, sync_codec
from .rtmpose import key_indices
from .vitpose import require_tensor, resolve_keypoint_set

__all__ = ["is_litepose_checkpoint", "litepose_from_state_dict"]

_BACKBONE_PREFIXES = ("first.", "stage.")
_HEAD_PREFIXES = ("deconv_refined.", "deconv_raw.", "deconv_bnrelu.", "final_refined.", "final_raw.")


def _strip(key: str) -> str:
    return key[len("module."):] if key.startswith("module.") else key


def is_litepose_checkpoint(keys: object) -> bool:
    """Whether ``keys`` are an official LitePose state dict's (a ``first.*`` stem and ``final_raw.*`` layers)."""
    names = [_strip(k) for k in keys]  # type: ignore[union-attr]
    return any(k.startswith("first.0.") for k in names) and any(k.startswith("final_raw.") for k in names)


def _shape(state: Mapping[str, torch.Tensor], key: str, source: str) -> tuple[int, ...]:
    """``state[key]``'s shape; every size a LitePose layer has is positive."""
    shape = tuple(require_tensor(state, key, source).shape)
    if not shape or min(shape) <= 0:
        raise PoseforgeError(f"{source}: '{key}' has shape {list(shape)}; a LitePose layer's sizes are positive")
    return shape


def _one(values: list[int], what: str, source: str) -> int:
    if len(set(values)) != 1:
        raise PoseforgeError(f"{source}: {what} differ within a stage ({values}); poseforge's LitePose takes one per "
                             "stage (a supernet checkpoint? export a subnet first)")
    return values[0]


def _infer_config(state: Mapping[str, torch.Tensor], source: str) -> tuple[MobileNetV2Config, LitePoseHeadConfig, int]:
    """Backbone and head configs and the keypoint count that the official tensors' shapes imply."""
    stem_hidden = _shape(state, "backbone.first.0.0.weight", source)[0]
    stem = _shape(state, "backbone.first.2.weight", source)[0]
    stages = key_indices(state, r"backbone\.stage\.(\d+)\.")
    if stages != list(range(len(stages))) or not stages:
        raise PoseforgeError(f"{source}: LitePose stages must be numbered 0..n-1, found {stages}")
    widths, depths, ratios, kernels = [], [], [], []
    channels = stem
    for i in stages:
        blocks = key_indices(state, rf"backbone\.stage\.{i}\.(\d+)\.")
        prefix = f"backbone.stage.{i}"
        width = _shape(state, f"{prefix}.0.point_conv.0.weight", source)[0]
        hidden = [_shape(state, f"{prefix}.{j}.inv.0.weight", source)[0] for j in blocks]
        inputs = [channels] + [width] * (len(blocks) - 1)
        ratio_values = [h / c for h, c in zip(hidden, inputs)]
        if max(ratio_values) - min(ratio_values) > 1e-6:
            raise PoseforgeError(f"{source}: expansion ratios differ within stage {i} ({ratio_values})")
        widths.append(width)
        depths.append(len(blocks))
        ratios.append(float(ratio_values[0]))
        kernels.append(_one([_shape(state, f"{prefix}.{j}.depth_conv.0.weight", source)[-1] for j in blocks],
                            f"stage {i} kernel sizes", source))
        channels = width
    deconvs = key_indices(state, r"head\.deconv_refined\.(\d+)\.weight")
    deconv_shapes = [_shape(state, f"head.deconv_refined.{i}.weight", source) for i in deconvs]
    finals = key_indices(state, r"head\.final_raw\.(\d+)\.")
    final_kernel = _shape(state, "head.final_refined.0.conv.0.weight", source)[-1]
    # final layer 0: stride 4, K heatmaps + K x D tags; the last: stride 2, K heatmaps
    num_keypoints = _shape(state, f"head.final_raw.{finals[-1]}.conv.3.weight", source)[0]
    refined = _shape(state, "head.final_raw.0.conv.3.weight", source)[0]
    if refined % num_keypoints or refined <= num_keypoints:
        raise PoseforgeError(f"{source}: the stride-4 output has {refined} channels, not K heatmaps + K x D tags "
                             f"for K = {num_keypoints}")
    backbone = MobileNetV2Config(widths=tuple(widths), depths=tuple(depths), kernel_sizes=tuple(kernels),
                                 expand_ratios=tuple(ratios), stem_channels=stem, stem_hidden=stem_hidden)
    head = LitePoseHeadConfig(deconv_channels=tuple(s[1] for s in deconv_shapes),
                              deconv_kernel_sizes=tuple(s[-1] for s in deconv_shapes), final_kernel_size=final_kernel,
                              tag_dim=refined // num_keypoints - 1)
    return backbone, head, num_keypoints


def litepose_from_state_dict(state_dict: Mapping[str, torch.Tensor], *, keypoint_set: str | None = None,
                             input_size: tuple[int, int] | None = None, source: str = "checkpoint") -> Estimator:
    """Build a poseforge LitePose model holding an official LitePose state dict's weights.

    Args:
        state_dict: the official tensors (``first.*``, ``stage.*``, ``deconv_*``, ``final_*``; ``module.`` allowed).
        keypoint_set: by default from the keypoint count (14: ``crowdpose14``, the CrowdPose releases; 17: ``coco17``).
        input_size: ``(width, height)``; by default the published input of the matching LitePose-Auto size
            (256 for XS, 448 for S and M, 512 for L), else 256.
    Raises:
        PoseforgeError: not a LitePose layout, settings that vary inside a stage, or missing / unexpected /
            mis-shaped keys (listed by the model check), on one line naming ``source``.
    """
    state: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        key = _strip(key)
        if key.startswith(_BACKBONE_PREFIXES):
            state["backbone." + key] = value
        elif key.startswith(_HEAD_PREFIXES):
            state["head." + key] = value
        else:
            raise PoseforgeError(f"{source}: unexpected key '{key}' for a LitePose checkpoint")
        if not (value.is_floating_point() or key.endswith("num_batches_tracked")):
            raise PoseforgeError(f"{source}: '{key}' is {str(value.dtype).replace('torch.', '')}; LitePose weights are "
                                 "floating point")
    try:
        return _build(state, keypoint_set, input_size, source)
    except PoseforgeError as e:  # config checks (e.g. an even kernel) name the config; name the file too
        if source in str(e):
            raise
        raise PoseforgeError(f"{source}: {e}") from e


def _build(state: dict[str, torch.Tensor], keypoint_set: str | None, input_size: tuple[int, int] | None,
           source: str) -> Estimator:
    """The model of a state dict already renamed to poseforge's keys."""
    backbone, head, num_keypoints = _infer_config(state, source)
    if keypoint_set is None and num_keypoints == 14:
        keypoint_set = "crowdpose14"  # the 14-keypoint LitePose releases are CrowdPose's
    keypoint_set = resolve_keypoint_set(num_keypoints, keypoint_set, source)
    size = next((s for s in LITEPOSE_ARCHS
                 if (zoo := litepose_config(s, keypoint_set)).backbone == backbone and zoo.head == head), None)
    config = litepose_config(size or "xs", keypoint_set)
    side = config.input_size if size is not None else (256, 256)
    config = config.replace(name=f"litepose-{size}" if size else "litepose-custom", backbone=backbone, head=head,
                            input_size=tuple(input_size) if input_size is not None else side)
    config = config.replace(codec={**config.codec, "input_size": list(config.input_size)})
    model = model_from_state_dict(sync_codec(config), state, source)
    model.codec  # noqa: B018  (validates the codec settings before anything is saved)
    return model.eval()
