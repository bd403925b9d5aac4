"""Official Sapiens checkpoints (facebookresearch/sapiens) -> poseforge.

Key names, read from the Sapiens repository's modules and tools:

* backbone (every task): mmpretrain's ``VisionTransformer`` (``with_cls_token=False``, ``out_type='featmap'``):
  ``backbone.patch_embed.projection``, ``backbone.pos_embed`` ``[1, 64 * 48, C]`` (fine-tuned, no class
  position), ``backbone.layers.N.{ln1,attn.qkv,attn.proj,ln2,ffn.layers.0.0,ffn.layers.1}``, ``backbone.ln1``.
  The renaming rules are the ViTPose converter's (:data:`~poseforge.convert.vitpose.MMPRETRAIN_VIT_RULES`).
* pose (``pose/``, mmpose ``HeatmapHead``): ``head.deconv_layers.{0,1,3,4}``, ``head.conv_layers.{0,1,3,4}``
  (BatchNorm after each), ``head.final_layer``.
* segmentation / depth / normals (``seg/``, the mmseg fork's ``VitHead`` / ``VitDepthHead`` / ``VitNormalHead``,
  all a ``BaseDecodeHead``): ``decode_head.deconv_layers.{0,3,6[,9]}.weight`` (no bias; the instance norms have
  no parameters), ``decode_head.conv_layers.{0,3,6}.{weight,bias}``, ``decode_head.conv_seg.{weight,bias}``.
  The task follows from ``conv_seg``'s outputs: 1 depth, 3 normals, otherwise segmentation classes
  (``task="seg"`` for a 3-class segmentation).
* pretraining (``sapiens_{size}_epoch_1600_clean.pth``, written by ``tools/misc/pretrain_clean_checkpoints.py``
  with ``_load_checkpoint_with_prefix('backbone.')``): the MAE backbone's keys without the ``backbone.`` prefix,
  a ``cls_token`` and ``pos_embed`` ``[1, 1 + 64 * 64, C]`` (1024x1024 pretraining). An uncleaned MAE
  checkpoint keeps the prefix and adds the MAE decoder (``neck.{decoder_embed,mask_token,decoder_pos_embed,
  decoder_blocks,ln1,decoder_pred}``). Such a checkpoint has no task head: ``task`` must be given, the zoo
  model's head for it is freshly initialized (seeded: a conversion is reproducible) and the MAE decoder and
  class token are ignored (the fine-tuning configs load the backbone with ``strict=False``, dropping both).

Position embeddings as Sapiens' ``VisionTransformer._prepare_pos_embed`` loads them: a class-token position
(``1 + N`` positions, N a square) is dropped, not added to the patches, and a grid other than the model's is
resized bicubically (``align_corners=False``, in float32) from the square source grid.

What a bare state dict does not record: the patch embedding's padding (Sapiens' configs: 2 for pose and
normals, mmcv's default for segmentation and depth: none, equal for inputs divisible by 16; ``patch_padding``
overrides), the attention head count (the published one for the width, else ``num_heads``) and, for a pose
checkpoint, the keypoint names (the keypoint count picks the set: 308 ``sapiens308``, 17 ``coco17``, 133
``wholebody133``). Released architectures get the zoo's names and settings (``sapiens-1b-seg`` ...; UDP heatmaps
with sigma 6 at 1024x768), others ``sapiens-custom-<task>``. TorchScript / ``torch.export`` releases
(``*_torchscript.pt2``, ``*_bfloat16.pt2``) hold no state dict to read: convert the ``.pth`` release.
"""
from __future__ import annotations

import math
import re
from typing import Iterable, Mapping

import torch

from ..errors import PoseforgeError
from ..models.backbones.vit import ViTConfig, resize_pos_embed, token_grid
from ..models.config import TopDownConfig
from ..models.estimators import Estimator
from ..models.estimators.dense import DenseConfig
from ..models.heads.dense import SapiensDenseHeadConfig
from ..models.loading import build_model, model_from_state_dict
from ..models.zoo import (SAPIENS_BACKBONES, SAPIENS_DENSE_TASKS, SAPIENS_POSE_SETS, sapiens_dense_config,
                          sapiens_pose_config, sync_codec)
from .rtmpose import key_indices
from .vitpose import (_BN, _PARAM, MMPRETRAIN_VIT_RULES, codec_config, infer_backbone, infer_head, rename_keys,
                      require_tensor, resolve_keypoint_set)

__all__ = ["is_sapiens_checkpoint", "sapiens_task", "sapiens_from_state_dict", "SAPIENS_TASKS", "TASK_PADDING"]

# ``task`` values: the zoo suffixes (``sapiens-<size>-<task>``), ``normals`` as an alias of ``normal``.
SAPIENS_TASKS = tuple(SAPIENS_POSE_SETS) + tuple(SAPIENS_DENSE_TASKS)
# Patch embedding padding of the official configs by task.
TASK_PADDING = {"pose": 2, "normal": 2, "seg": 0, "depth": 0}
_DENSE_FINAL = {"seg": "seg_layer", "depth": "depth_layer", "normal": "normal_layer"}
_NUM_HEADS = {cfg.embed_dim: cfg.num_heads for cfg in SAPIENS_BACKBONES.values()}

_HEAD_RULES = [(re.compile(p + "$"), r) for p, r in [
    (rf"head\.(deconv_layers|conv_layers)\.(\d+)\.{_BN}", r"head.\1.\2.\3"),
    (rf"head\.final_layer\.{_PARAM}", r"head.final_layer.\1"),
    (r"decode_head\.deconv_layers\.(\d+)\.weight", r"head.deconv_layers.\1.weight"),
    (rf"decode_head\.conv_layers\.(\d+)\.{_PARAM}", r"head.conv_layers.\1.\2"),
    (rf"decode_head\.conv_seg\.{_PARAM}", r"head.conv_seg.\1"),
]]
# What the fine-tuning configs drop when they load a pretraining checkpoint: the class token and the MAE decoder.
_IGNORED = re.compile(r"(backbone\.cls_token|neck\.(mask_token|decoder_pos_embed|(decoder_embed|decoder_pred|ln1)\."
                      r"(weight|bias)|decoder_blocks\.\d+\..+))$")
_BARE_BACKBONE = ("patch_embed.", "layers.", "ln1.", "pos_embed", "cls_token", "pre_norm.")


def _has(keys: Iterable[str], *prefixes: str) -> bool:
    return any(k.startswith(prefixes) for k in keys)


def is_sapiens_checkpoint(keys: Iterable[str]) -> bool:
    """Whether ``keys`` are a Sapiens checkpoint's rather than another mmpretrain-ViT one's (mmpose ViTPose):
    an mmseg ``decode_head``, a pose head with ``conv_layers`` (ViTPose's heads have none), a bare
    mmpretrain ViT (a cleaned pretraining checkpoint) or one beside the MAE decoder (``neck.decoder_*``)."""
    keys = list(keys)
    vit = _has(keys, "backbone.patch_embed.projection.", "backbone.layers.")
    if _has(keys, "decode_head.") or (vit and _has(keys, "head.conv_layers.")):
        return True
    if vit and _has(keys, "neck.decoder_", "neck.mask_token"):
        return True
    return _has(keys, "patch_embed.projection.") and _has(keys, "layers.") and not _has(keys, "backbone.", "head.")


def sapiens_task(state: Mapping[str, torch.Tensor], task: str | None = None, source: str = "checkpoint") -> str | None:
    """The task of poseforge-renamed Sapiens tensors (``pose``, ``seg``, ``depth``, ``normal``; ``None``: no head),
    checked against a requested ``task`` (a zoo suffix; ``pose-coco`` and ``pose-wholebody`` count as pose)."""
    if task is not None:
        task = "normal" if task == "normals" else task
        if task not in SAPIENS_TASKS:
            raise PoseforgeError(f"{source}: unknown Sapiens task '{task}'; known: {', '.join(SAPIENS_TASKS)}")
    wanted = None if task is None else ("pose" if task.startswith("pose") else task)
    pose, dense = "head.final_layer.weight" in state, "head.conv_seg.weight" in state
    if pose and dense:
        raise PoseforgeError(f"{source}: both a pose head (head.final_layer) and a dense head (decode_head.conv_seg)")
    if pose:
        found = "pose"
    elif dense:
        channels = int(require_tensor(state, "head.conv_seg.weight", source, ndim=4).shape[0])
        found = {1: "depth", 3: "normal"}.get(channels, "seg")
        if wanted == "seg" and channels != 1:
            found = "seg"  # a 3-class segmentation
    elif _has(state, "head."):
        found = "pose" if _pose_layout(state) else "seg"
        missing = "head.final_layer.weight" if found == "pose" else "decode_head.conv_seg.weight"
        raise PoseforgeError(f"{source}: missing key {missing} (the head's last layer)")
    else:
        return task  # backbone only (a pretraining checkpoint)
    if wanted is not None and wanted != found:
        raise PoseforgeError(f"{source}: task '{task}' asked for, but the checkpoint's head is a {found} head")
    return task if task is not None and task.startswith("pose") and found == "pose" else found


def _pose_layout(state: Mapping[str, torch.Tensor]) -> bool:
    """A pose head's tensors (BatchNorm statistics or the heatmap layer) rather than a dense head's."""
    return any(k.startswith("head.") and (k.endswith(("running_mean", "running_var")) or "final_layer" in k)
               for k in state)


def _prepare_pos_embed(state: dict[str, torch.Tensor], grid: tuple[int, int] | None, source: str) -> bool:
    """Sapiens' ``_prepare_pos_embed``: drop a class-token position, resize a square grid to ``grid``
    (``(rows, cols)``; ``None``: keep). Returns whether the class position was dropped."""
    pos = require_tensor(state, "backbone.pos_embed", source, ndim=3)
    if pos.shape[0] != 1 or min(pos.shape) <= 0:
        raise PoseforgeError(f"{source}: backbone.pos_embed has shape {list(pos.shape)}, expected [1, N, C]")
    n = int(pos.shape[1])
    with_cls = "backbone.cls_token" in state or (n % 2 == 1 and math.isqrt(n - 1) ** 2 == n - 1)
    if with_cls:
        pos = pos[:, 1:]
        n -= 1
    if grid is not None and n != grid[0] * grid[1]:
        side = math.isqrt(n)
        if side * side != n or n == 0:
            raise PoseforgeError(f"{source}: backbone.pos_embed has {n} patch positions, not a square grid to "
                                 f"resize to {grid[0]}x{grid[1]} tokens (pass the checkpoint's input_size)")
        pos = resize_pos_embed(pos, (side, side), tuple(grid))
    state["backbone.pos_embed"] = pos.contiguous()
    return with_cls


def _dense_head(state: Mapping[str, torch.Tensor], task: str, source: str) -> SapiensDenseHeadConfig:
    """The dense head config that the renamed ``head.*`` tensors imply."""
    layers = {}
    for name in ("deconv_layers", "conv_layers"):
        ids = key_indices(state, rf"head\.{name}\.(\d+)\.")
        if ids != [3 * i for i in range(len(ids))]:
            raise PoseforgeError(f"{source}: unexpected decode_head.{name} layout (layers at {ids}; expected 0, 3, 6 ...)")
        layers[name] = [require_tensor(state, f"head.{name}.{i}.weight", source, ndim=4).shape for i in ids]
    final = require_tensor(state, "head.conv_seg.weight", source, ndim=4)
    deconvs, convs = layers["deconv_layers"], layers["conv_layers"]
    return SapiensDenseHeadConfig(
        tasks=({"normal": "normals"}.get(task, task),), deconv_channels=tuple(int(s[1]) for s in deconvs),
        deconv_kernel_sizes=tuple(int(s[-1]) for s in deconvs), conv_channels=tuple(int(s[0]) for s in convs),
        conv_kernel_sizes=tuple(int(s[-1]) for s in convs), final_kernel_size=int(final.shape[-1]))


def _zoo_size(backbone: ViTConfig) -> str | None:
    """The released (or tiny) Sapiens size of a backbone's shapes."""
    for size, cfg in SAPIENS_BACKBONES.items():
        if (cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.hidden_dim) == (backbone.embed_dim, backbone.depth,
                                                                      backbone.num_heads, backbone.hidden_dim):
            return size
    return None


def _rename(state_dict: Mapping[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Official keys -> poseforge keys; a bare backbone (cleaned pretraining checkpoint) gets its prefix back."""
    keys = list(state_dict)
    if keys and not _has(keys, "backbone.", "head.", "decode_head.", "neck.") and _has(keys, *_BARE_BACKBONE):
        state_dict = {f"backbone.{k}": v for k, v in state_dict.items()}
    kept, ignored = {}, {}
    for key, value in state_dict.items():
        (ignored if _IGNORED.match(key) else kept)[key] = value
    state = rename_keys(kept, MMPRETRAIN_VIT_RULES + _HEAD_RULES, "sapiens", source)
    if "backbone.cls_token" in ignored:
        state["backbone.cls_token"] = ignored["backbone.cls_token"]  # marks the class position; removed later
    return state


def _check_tensors(state: Mapping[str, torch.Tensor], source: str) -> None:
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise PoseforgeError(f"{source}: '{key}' is not a tensor")
        if not (value.is_floating_point() or key.endswith("num_batches_tracked")):
            raise PoseforgeError(f"{source}: '{key}' is {str(value.dtype).replace('torch.', '')}; Sapiens weights "
                                 "are floating point")
        if value.numel() == 0:
            raise PoseforgeError(f"{source}: '{key}' is empty (shape {list(value.shape)})")


def sapiens_from_state_dict(state_dict: Mapping[str, torch.Tensor], *, task: str | None = None,
                            keypoint_set: str | None = None, input_size: tuple[int, int] | None = None,
                            num_heads: int | None = None, patch_padding: int | None = None,
                            codec: str | dict | None = None, sigma: float | None = None,
                            source: str = "checkpoint") -> Estimator:
    """Build the poseforge model of an official Sapiens checkpoint (pose, segmentation, depth, normals or a
    pretraining backbone; see the module docstring).

    Args:
        state_dict: the checkpoint's tensors (an mmengine file's ``state_dict``; ``module.`` already removed).
        task: ``pose``, ``pose-coco``, ``pose-wholebody``, ``seg``, ``depth`` or ``normal``; by default the
            head's. Needed for a pretraining checkpoint (no head) and for a 3-class segmentation (``seg``).
        keypoint_set: pose checkpoints: by default from the keypoint count (or ``task``'s set).
        input_size: ``(width, height)``; by default from the position grid (fine-tuned) or the zoo's input
            (pretraining checkpoints, whose square grid is resized to it).
        num_heads: attention heads (default: the published count for the width).
        patch_padding: the patch embedding's padding (default: 2 for pose and normals, 0 for seg and depth).
        codec, sigma: pose models' codec (default: UDP, the zoo's sigma: 6 at 1024x768).
    Raises:
        PoseforgeError: on one line naming ``source``: unknown, missing, mis-shaped, empty or integer tensors,
            an ambiguous or conflicting task.
    """
    _check_tensors(state_dict, source)
    state = _rename(state_dict, source)
    task = sapiens_task(state, task, source)
    pretrain = not _has(state, "head.")
    if task is None:
        raise PoseforgeError(f"{source}: a Sapiens pretraining (backbone-only) checkpoint has no task head; pass "
                             f"task ({', '.join(SAPIENS_TASKS)}) to get that model with a fresh head")
    kind = "pose" if task.startswith("pose") else task
    padding = TASK_PADDING[kind] if patch_padding is None else int(patch_padding)
    if padding < 0:
        raise PoseforgeError(f"{source}: patch_padding must be >= 0, got {padding}")
    patch = require_tensor(state, "backbone.patch_embed.proj.weight", source, ndim=4)
    heads = num_heads or _NUM_HEADS.get(int(patch.shape[0]))
    if heads is None:
        raise PoseforgeError(f"{source}: cannot infer the attention head count of a {patch.shape[0]}-wide Sapiens "
                             "ViT; pass num_heads")
    grid = None
    if pretrain:
        if input_size is None:
            size = next((s for s, c in SAPIENS_BACKBONES.items() if c.embed_dim == patch.shape[0]), None)
            input_size = (192, 256) if size == "tiny" else (768, 1024)
        grid = token_grid(tuple(input_size), int(patch.shape[-1]), padding)
    _prepare_pos_embed(state, grid, source)
    state.pop("backbone.cls_token", None)
    backbone, input_size = infer_backbone(state, "mmpose", None, heads, input_size, source, patch_padding=padding)
    size = _zoo_size(backbone)
    if kind == "pose":
        return _pose_model(state, backbone, input_size, size, task, keypoint_set, codec, sigma, pretrain, source)
    if keypoint_set is not None:
        raise PoseforgeError(f"{source}: keypoint_set does not apply to a Sapiens {task} checkpoint")
    if codec is not None or sigma is not None:
        raise PoseforgeError(f"{source}: codec / sigma do not apply to a Sapiens {task} checkpoint (dense maps)")
    return _dense_model(state, backbone, input_size, size, task, pretrain, source)


def _zoo_backbone(backbone: ViTConfig, zoo: ViTConfig) -> ViTConfig:
    """The inferred backbone with the zoo's training settings (not in the weights)."""
    return backbone.replace(drop_path_rate=zoo.drop_path_rate, layer_decay=zoo.layer_decay)


def _pose_model(state: dict[str, torch.Tensor], backbone: ViTConfig, input_size: tuple[int, int], size: str | None,
                task: str, keypoint_set: str | None, codec: str | dict | None, sigma: float | None, pretrain: bool,
                source: str) -> Estimator:
    if keypoint_set is None and task != "pose":
        keypoint_set = SAPIENS_POSE_SETS[task]
    if pretrain:
        num_keypoints = None
        keypoint_set = keypoint_set or SAPIENS_POSE_SETS[task]
    else:
        head, num_keypoints = infer_head(state, "head.", None, 4, source)
        keypoint_set = resolve_keypoint_set(num_keypoints, keypoint_set, source)
    zoo = sapiens_pose_config(size or "tiny", keypoint_set)
    if pretrain:
        head = zoo.head
    backbone = _zoo_backbone(backbone, zoo.backbone)
    released = size is not None and backbone == zoo.backbone and head == zoo.head and input_size == zoo.input_size
    suffix = {v: k for k, v in SAPIENS_POSE_SETS.items()}.get(keypoint_set, f"pose-{keypoint_set}")
    if codec is None and sigma is None:
        codec_cfg = dict(zoo.codec) if released else {"name": "udp", "sigma": 6.0}
    else:
        codec_cfg = codec_config(codec or "udp", 6.0 if sigma is None else sigma)
    config = sync_codec(zoo.replace(name=zoo.name if released else f"sapiens-custom-{suffix}", backbone=backbone,
                                    head=head, input_size=input_size, keypoint_set=keypoint_set,
                                    codec={k: v for k, v in codec_cfg.items() if k not in ("input_size", "heatmap_size")}))
    return _build(config, state, pretrain, source)


def _dense_model(state: dict[str, torch.Tensor], backbone: ViTConfig, input_size: tuple[int, int], size: str | None,
                 task: str, pretrain: bool, source: str) -> Estimator:
    dense_task = "normals" if task == "normal" else task
    if pretrain:
        zoo = sapiens_dense_config(size or "tiny", dense_task)
        head, classes = zoo.head, int(zoo.codec.get("num_classes", 0))
    else:
        head = _dense_head(state, task, source)
        classes = int(state["head.conv_seg.weight"].shape[0]) if task == "seg" else 0
        state[f"head.{_DENSE_FINAL[task]}.weight"] = state.pop("head.conv_seg.weight")
        if "head.conv_seg.bias" in state:
            state[f"head.{_DENSE_FINAL[task]}.bias"] = state.pop("head.conv_seg.bias")
        zoo = sapiens_dense_config(size or "tiny", dense_task, classes or 28)
    backbone = _zoo_backbone(backbone, zoo.backbone)
    released = size is not None and backbone == zoo.backbone and head == zoo.head and input_size == zoo.input_size
    config = DenseConfig(
        name=zoo.name if released else f"sapiens-custom-{task}", backbone=backbone, head=head,
        codec={**zoo.codec, "input_size": list(input_size), "num_classes": classes},
        classes=zoo.classes if classes == len(zoo.classes) else (), input_size=input_size, mean=zoo.mean, std=zoo.std)
    return _build(config, state, pretrain, source)


def _build(config: TopDownConfig | DenseConfig, state: dict[str, torch.Tensor], pretrain: bool, source: str) -> Estimator:
    """The model of ``config`` holding ``state``; a pretraining checkpoint's head is freshly (and reproducibly)
    initialized around its backbone."""
    if pretrain:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            fresh = build_model(config)
        state = {**{k: v for k, v in fresh.state_dict().items() if not k.startswith("backbone.")}, **state}
    model = model_from_state_dict(config, state, source)
    model.codec  # noqa: B018  (validates the codec settings before anything is saved)
    return model.eval()
