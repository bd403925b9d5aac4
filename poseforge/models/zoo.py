"""Named model configurations and ``create_model`` / ``list_models``.

ViTPose sizes follow the official configs (ViTAE-Transformer/ViTPose and mmpose 1.x):

======  =========  =====  =====  =========  ===========
name    embed dim  depth  heads  drop path  layer decay
======  =========  =====  =====  =========  ===========
S       384        12     12     0.1        0.8
B       768        12     12     0.3        0.75
L       1024       24     16     0.5        0.8
H       1280       32     16     0.55       0.85
G       1408       40     16     0.6 (*)    0.9 (*)
======  =========  =====  =====  =========  ===========

G is the ViT-g/14 shape of Zhai et al. (MLP 6144, ~1.0B backbone parameters) with ViTPose's 16px
padded patches; (*) marks poseforge's choices where no official recipe exists. ``vitpose-tiny`` is a
poseforge-only small model for tests and CPU demos. Every name exists with the classic decoder and
as ``-simple``; the default codec is UDP heatmaps, sigma 2, heatmaps at 1/4 of the input size.

ViTPose++ (``vitpose++-{s,b,l,h}``) follows the official multi-dataset configs
(``vitPose+_{size}_coco+aic+mpii+ap10k+apt36k+wholebody_256x192_udp.py``): six tasks in dataset-index
order (coco, aic, mpii, ap10k, apt36k, wholebody), one PS-FFN expert and one classic decoder per
task, expert width ``part_features`` S 96, B 192, L 256, H 320 (alpha = 0.25; the official ViTPose+-S
config file says 192, the released S checkpoint has 96), drop path 0.1 / 0.3 / 0.5 / 0.55 and layer
decay 0.8 / 0.75 / 0.8 / 0.8. ``vitpose++-tiny`` is poseforge's small CPU model for the three
synthetic tasks (people ``coco17``, whole bodies ``wholebody133``, quadrupeds ``ap10k17``).

RTMPose (``rtmpose-{t,s,m,l,x}``) follows mmpose's ``rtmpose-{size}_8xb256-420e_coco-256x192`` configs:
a CSPNeXt P5 backbone (deepen / widen t 0.167/0.375, s 0.33/0.5, m 0.67/0.75, l 1/1, x 1.33/1.25,
expand ratio 0.5, channel attention, the stride-32 map only) and the RTMCC head (7x7 convolution,
256-wide tokens, GAU with s = 128 and expansion 2, SiLU), SimCC labels at split ratio 2 with sigma
(4.9, 5.66) at 256x192 and (6, 6.93) at 384x288, unnormalized, decoded by argmax as mmpose.
``-384x288`` names take the larger input; ``rtmpose-*-wholebody`` and ``dwpose-*`` predict the 133
COCO-WholeBody keypoints (DWPose is RTMPose distilled: the same architecture). RTMW (``rtmw-{m,l,x}``,
``rtmw-{l,x}-384x288``, mmpose's cocktail14 configs) adds a CSPNeXt-PAFPN neck and the two-level RTMW head.

LitePose (``litepose-{xs,s,m,l}``) follows mit-han-lab/litepose's ``mobile_configs/search-{XS,S,M,L}.json``
(the LitePose-Auto architectures) and its ``mobilenet/mobile.yaml``: the large-kernel MobileNetV2 backbone
and the fusion deconv head, heatmaps + one tag per keypoint at 1/4, heatmaps at 1/2, square inputs
256 / 448 / 448 / 512 (L is 512 in search-L.json; at 640 it would count 21.4 GMACs, not the published
13.7), CrowdPose keypoints (``keypoint_set="coco17"`` gives the COCO models). ``higherhrnet-w32`` is the
HigherHRNet reference at 512 (COCO). Published MACs are in :data:`PUBLISHED_GMACS`.

Sapiens (``sapiens-{0.3b,0.6b,1b,2b}-{mae,pose,pose-coco,pose-wholebody,seg,depth,normal}``) follows
facebookresearch/sapiens' configs (``sapiens_{size}-210e_{goliath,coco,coco_wholebody}-1024x768.py``,
``sapiens_{size}_goliath-1024x768.py``, ``..._render_people-1024x768.py``): mmpretrain's ViT shapes

======  =========  =====  =====  ===========================
size    embed dim  depth  heads  backbone parameters (ours)
======  =========  =====  =====  ===========================
0.3b    1024       24     16     see tests/test_sapiens_zoo.py
0.6b    1280       32     16
1b      1536       40     24
2b      1920       48     32
======  =========  =====  =====  ===========================

with MLP 4x, 16px patches, no class token, final LayerNorm, native input 1024x768 (a 64x48 token grid);
pose and normal models pad the patch embedding by 2 (``patch_cfg=dict(padding=2)``), segmentation and depth
models do not. Heads: pose - mmpose's heatmap head with two 768 deconvolutions and two 768 1x1 convs, UDP
heatmaps at 256x192 (sigma 6), keypoints ``sapiens308`` (Goliath), ``coco17`` or ``wholebody133``; dense -
:mod:`poseforge.models.heads.dense` (segmentation 28 classes, depth, normals). Layer-wise LR decay 0.85
(pose 1b: 0.95), AdamW weight decay 0.1. ``sapiens-tiny-*`` is poseforge's CPU-sized model of the same
design (192 wide, 6 blocks, narrow heads) for tests and the MAE-versus-scratch comparison.
"""
from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any, Callable

from ..errors import PoseforgeError
from ..hub import list_weights, weights_spec
from ..registry import MODELS
from .backbones.cspnext import CSPNeXtConfig
from .backbones.hrnet import HRNetConfig
from .backbones.mobilenetv2 import MobileNetV2Config
from .backbones.vit import ViTConfig
from .config import (IMAGENET_MEAN, IMAGENET_STD, HeadConfig, ModelConfig, MultiTaskTopDownConfig, TaskConfig,
                     TopDownConfig)
from .estimators.base import Estimator
from .estimators.bottomup import BottomUpConfig
from .estimators.dense import DenseConfig
from .estimators.mae import MAEConfig
from .heads.bottomup import HigherHRNetHeadConfig, LitePoseHeadConfig
from .heads.dense import SAPIENS_DENSE_HEADS, SapiensDenseHeadConfig
from .heads.heatmap import CLASSIC_DECODER, SIMPLE_DECODER, HeatmapHeadConfig
from .heads.rtmcc import RTMCC_HEAD
from .heads.rtmw import RTMW_HEAD
from .heads.simcc import SIMCC_HEAD, simcc_codec
from .loading import build_model, load_model, saved_config
from .necks.cspnext_pafpn import CSPNeXtPAFPNConfig

__all__ = ["create_model", "list_models", "model_config", "apply_overrides", "sync_codec", "VITPOSE_BACKBONES", "HEAD_PRESETS",
           "VITPOSE_PLUS_TASKS", "VITPOSE_PLUS_PART_FEATURES", "SYNTHETIC_TASKS", "vitpose_plus_config",
           "RTMPOSE_BACKBONES", "RTMPOSE_SIGMAS", "rtmpose_config", "rtmpose_codec", "RTMW_NECK", "rtmw_config",
           "LITEPOSE_ARCHS", "litepose_config", "higherhrnet_config", "PUBLISHED_GMACS",
           "SAPIENS_BACKBONES", "SAPIENS_POSE_SETS", "SAPIENS_DENSE_TASKS", "sapiens_pose_config", "sapiens_dense_config",
           "sapiens_mae_config"]

VITPOSE_BACKBONES: dict[str, ViTConfig] = {
    "tiny": ViTConfig(embed_dim=192, depth=6, num_heads=3, drop_path_rate=0.0, layer_decay=0.8),
    "s": ViTConfig(embed_dim=384, depth=12, num_heads=12, drop_path_rate=0.1, layer_decay=0.8),
    "b": ViTConfig(embed_dim=768, depth=12, num_heads=12, drop_path_rate=0.3, layer_decay=0.75),
    "l": ViTConfig(embed_dim=1024, depth=24, num_heads=16, drop_path_rate=0.5, layer_decay=0.8),
    "h": ViTConfig(embed_dim=1280, depth=32, num_heads=16, drop_path_rate=0.55, layer_decay=0.85),
    "g": ViTConfig(embed_dim=1408, depth=40, num_heads=16, mlp_dim=6144, drop_path_rate=0.6, layer_decay=0.9),
}

# Head shorthands accepted by ``create_model(..., head="simple")``; later families add theirs.
# ``simcc`` switches the codec to SimCC as well (see ``sync_codec``).
HEAD_PRESETS: dict[str, HeadConfig] = {"classic": CLASSIC_DECODER, "simple": SIMPLE_DECODER, "simcc": SIMCC_HEAD,
                                       "rtmcc": RTMCC_HEAD}

_TINY_HEAD = dataclasses.replace(CLASSIC_DECODER, deconv_channels=(128, 128))


def vitpose_config(size: str, head: str = "classic") -> TopDownConfig:
    """Config of ViTPose-``size`` (tiny, s, b, l, h, g) with the ``classic`` or ``simple`` decoder at 256x192."""
    head_config = HEAD_PRESETS[head]
    if size == "tiny" and head == "classic":
        head_config = _TINY_HEAD
    suffix = "" if head == "classic" else f"-{head}"
    config = TopDownConfig(
        name=f"vitpose-{size}{suffix}", backbone=VITPOSE_BACKBONES[size], head=head_config,
        codec={"name": "udp", "sigma": 2.0, "input_size": [192, 256], "heatmap_size": [48, 64]},
        keypoint_set="coco17", input_size=(192, 256), mean=IMAGENET_MEAN, std=IMAGENET_STD)
    return sync_codec(config)


for _size in VITPOSE_BACKBONES:
    MODELS.register(f"vitpose-{_size}", partial(vitpose_config, _size, "classic"))
    MODELS.register(f"vitpose-{_size}-simple", partial(vitpose_config, _size, "simple"))


# Official ViTPose++ tasks in dataset-index order: (name, keypoint set). APT-36K uses AP-10K's keypoints.
VITPOSE_PLUS_TASKS: tuple[tuple[str, str], ...] = (
    ("coco", "coco17"), ("aic", "aic14"), ("mpii", "mpii16"), ("ap10k", "ap10k17"), ("apt36k", "ap10k17"),
    ("wholebody", "wholebody133"))
# Expert width of the released checkpoints (alpha = 0.25 of the embedding width).
VITPOSE_PLUS_PART_FEATURES = {"s": 96, "b": 192, "l": 256, "h": 320}
_VITPOSE_PLUS_LAYER_DECAY = {"s": 0.8, "b": 0.75, "l": 0.8, "h": 0.8}
# The synthetic mix poseforge renders: people, whole bodies, quadrupeds.
SYNTHETIC_TASKS: tuple[tuple[str, str], ...] = (("coco", "coco17"), ("wholebody", "wholebody133"), ("ap10k", "ap10k17"))


def vitpose_plus_config(size: str, tasks: tuple[tuple[str, str], ...] = VITPOSE_PLUS_TASKS,
                        moe_variant: str = "ps") -> MultiTaskTopDownConfig:
    """Config of ViTPose++-``size`` (tiny, s, b, l, h): one expert and one classic decoder per task at 256x192."""
    base = VITPOSE_BACKBONES[size]
    part = VITPOSE_PLUS_PART_FEATURES.get(size)
    backbone = base.replace(num_experts=len(tasks), moe_variant=moe_variant,
                            part_features=part if moe_variant == "ps" else None,
                            layer_decay=_VITPOSE_PLUS_LAYER_DECAY.get(size, base.layer_decay))
    head = _TINY_HEAD if size == "tiny" else CLASSIC_DECODER
    config = MultiTaskTopDownConfig(
        name=f"vitpose++-{size}", backbone=backbone, heads=(head,) * len(tasks),
        tasks=tuple(TaskConfig(name, ks) for name, ks in tasks),
        codec={"name": "udp", "sigma": 2.0, "input_size": [192, 256], "heatmap_size": [48, 64]},
        input_size=(192, 256), mean=IMAGENET_MEAN, std=IMAGENET_STD)
    return sync_codec(config)


for _size in ("s", "b", "l", "h"):
    MODELS.register(f"vitpose++-{_size}", partial(vitpose_plus_config, _size))
MODELS.register("vitpose++-tiny", partial(vitpose_plus_config, "tiny", SYNTHETIC_TASKS))


# CSPNeXt sizes of the RTMPose configs: (deepen_factor, widen_factor); the head reads 1024 x widen channels.
RTMPOSE_BACKBONES: dict[str, CSPNeXtConfig] = {
    size: CSPNeXtConfig(deepen_factor=d, widen_factor=w)
    for size, (d, w) in {"t": (0.167, 0.375), "s": (0.33, 0.5), "m": (0.67, 0.75), "l": (1.0, 1.0), "x": (1.33, 1.25)}.items()}
# Official SimCC label sigmas (x, y) in bins by input (width, height).
RTMPOSE_SIGMAS: dict[tuple[int, int], tuple[float, float]] = {(192, 256): (4.9, 5.66), (288, 384): (6.0, 6.93)}


def rtmpose_codec(input_size: tuple[int, int], split_ratio: float = 2.0) -> dict:
    """The ``simcc`` codec of the RTMPose configs for ``input_size``: official sigmas where they exist
    (:data:`RTMPOSE_SIGMAS`, else :func:`~poseforge.models.heads.simcc.simcc_codec`'s scaling), unnormalized
    labels, mmpose's argmax decoding."""
    codec = simcc_codec(input_size, split_ratio)
    official = RTMPOSE_SIGMAS.get(tuple(input_size))
    if official is not None:
        codec["sigma"] = [s * split_ratio / 2 for s in official]
    codec.pop("decode_window", None)
    return codec


def rtmpose_config(size: str, keypoint_set: str = "coco17", input_size: tuple[int, int] = (192, 256),
                   family: str = "rtmpose") -> TopDownConfig:
    """Config of RTMPose-``size`` (t, s, m, l, x) for a keypoint set and input ``(width, height)``;
    ``family="dwpose"`` names the same architecture as DWPose."""
    suffix = "-wholebody" if keypoint_set == "wholebody133" and family == "rtmpose" else ""
    if tuple(input_size) != (192, 256):
        suffix += f"-{input_size[1]}x{input_size[0]}"
    config = TopDownConfig(
        name=f"{family}-{size}{suffix}", backbone=RTMPOSE_BACKBONES[size], head=RTMCC_HEAD,
        codec=rtmpose_codec(input_size), keypoint_set=keypoint_set, input_size=tuple(input_size),
        mean=IMAGENET_MEAN, std=IMAGENET_STD)
    return sync_codec(config)


for _size in RTMPOSE_BACKBONES:
    MODELS.register(f"rtmpose-{_size}", partial(rtmpose_config, _size))
    MODELS.register(f"rtmpose-{_size}-wholebody", partial(rtmpose_config, _size, "wholebody133"))
for _size in ("m", "l", "x"):
    MODELS.register(f"rtmpose-{_size}-384x288", partial(rtmpose_config, _size, "coco17", (288, 384)))
for _size in ("m", "l", "x"):
    MODELS.register(f"rtmpose-{_size}-wholebody-384x288", partial(rtmpose_config, _size, "wholebody133", (288, 384)))
for _size in ("t", "s", "m", "l"):
    MODELS.register(f"dwpose-{_size}", partial(rtmpose_config, _size, "wholebody133", family="dwpose"))
for _size in ("m", "l"):
    MODELS.register(f"dwpose-{_size}-384x288", partial(rtmpose_config, _size, "wholebody133", (288, 384), "dwpose"))


# ----- RTMW (mmpose's ``rtmw-{size}_..._cocktail14`` configs): RTMPose's CSPNeXt with its stride-8/16/32 maps,
# a CSPNeXt-PAFPN neck (2 blocks per CSP layer) returning the stride-16 and -32 levels, and the RTMW head;
# 133 COCO-WholeBody keypoints, SimCC as RTMPose's.
RTMW_NECK = CSPNeXtPAFPNConfig(out_indices=(1, 2), num_csp_blocks=2, expand_ratio=0.5)


def rtmw_config(size: str, input_size: tuple[int, int] = (192, 256),
                keypoint_set: str = "wholebody133") -> TopDownConfig:
    """Config of RTMW-``size`` (m, l, x; any RTMPose CSPNeXt size builds) for an input ``(width, height)``."""
    suffix = "" if keypoint_set == "wholebody133" else f"-{keypoint_set}"
    if tuple(input_size) != (192, 256):
        suffix += f"-{input_size[1]}x{input_size[0]}"
    config = TopDownConfig(
        name=f"rtmw-{size}{suffix}", backbone=RTMPOSE_BACKBONES[size].replace(out_indices=(2, 3, 4)), neck=RTMW_NECK,
        head=RTMW_HEAD, codec=rtmpose_codec(input_size), keypoint_set=keypoint_set, input_size=tuple(input_size),
        mean=IMAGENET_MEAN, std=IMAGENET_STD)
    return sync_codec(config)


for _size in ("m", "l", "x"):
    MODELS.register(f"rtmw-{_size}", partial(rtmw_config, _size))
for _size in ("l", "x"):
    MODELS.register(f"rtmw-{_size}-384x288", partial(rtmw_config, _size, (288, 384)))
# ----- end RTMW


# ----- LitePose (mit-han-lab/litepose, mobile_configs/search-*.json): size -> (input side, stem channels,
# stage widths, deconv widths); every official model has stage depths 6/8/10/10, strides 2/2/2/1, expansion 6 and
# 7x7 kernels, three 4x4 deconvolutions and 5x5 separable final layers.
LITEPOSE_ARCHS: dict[str, tuple[int, int, tuple[int, ...], tuple[int, ...]]] = {
    "xs": (256, 16, (16, 32, 48, 80), (16, 24, 24)),
    "s": (448, 16, (16, 32, 48, 120), (32, 24, 32)),
    "m": (448, 16, (24, 48, 72, 120), (64, 40, 32)),
    "l": (512, 24, (24, 64, 96, 160), (64, 40, 32)),
}
# Published GMACs at the zoo input and keypoint set, and the counter convention of the paper
# (``poseforge.models.complexity.count_macs``): LitePose README (CrowdPose models, ptflops of 2022) and the
# HigherHRNet paper (COCO, 512x512, HRNet's model summary).
PUBLISHED_GMACS: dict[str, tuple[float, str]] = {
    "litepose-xs": (1.2, "ptflops"), "litepose-s": (5.0, "ptflops"), "litepose-m": (7.8, "ptflops"),
    "litepose-l": (13.7, "ptflops"), "higherhrnet-w32": (47.9, "hrnet")}


def _ae_codec(input_size: tuple[int, int]) -> dict:
    """The associative-embedding grouping codec with the 1/2-scale heatmaps both heads give (built on first use,
    not at model build); its defaults are the official test settings (sigma 2, 30 people, NMS 5, threshold 0.1)."""
    return {"name": "associative-embedding", "input_size": list(input_size), "hr_heatmaps": True}


def litepose_config(size: str, keypoint_set: str = "crowdpose14") -> BottomUpConfig:
    """Config of LitePose-Auto-``size`` (xs, s, m, l) at its published square input."""
    side, stem, widths, deconv = LITEPOSE_ARCHS[size]
    config = BottomUpConfig(
        name=f"litepose-{size}", backbone=MobileNetV2Config(widths=widths, stem_channels=stem),
        head=LitePoseHeadConfig(deconv_channels=deconv), codec=_ae_codec((side, side)), keypoint_set=keypoint_set,
        input_size=(side, side))
    return sync_codec(config)


def higherhrnet_config(keypoint_set: str = "coco17", input_size: tuple[int, int] = (512, 512)) -> BottomUpConfig:
    """Config of HigherHRNet-W32 (the multi-branch reference LitePose is compared with) at ``input_size``."""
    config = BottomUpConfig(name="higherhrnet-w32", backbone=HRNetConfig(width=32), head=HigherHRNetHeadConfig(),
                            codec=_ae_codec(input_size), keypoint_set=keypoint_set, input_size=tuple(input_size))
    return sync_codec(config)


for _size in LITEPOSE_ARCHS:
    MODELS.register(f"litepose-{_size}", partial(litepose_config, _size))
MODELS.register("higherhrnet-w32", higherhrnet_config)
# ----- end LitePose


# ----- Sapiens (facebookresearch/sapiens; see the module docstring)
SAPIENS_BACKBONES: dict[str, ViTConfig] = {
    "0.3b": ViTConfig(embed_dim=1024, depth=24, num_heads=16, layer_decay=0.85),
    "0.6b": ViTConfig(embed_dim=1280, depth=32, num_heads=16, layer_decay=0.85),
    "1b": ViTConfig(embed_dim=1536, depth=40, num_heads=24, layer_decay=0.85),
    "2b": ViTConfig(embed_dim=1920, depth=48, num_heads=32, layer_decay=0.85),
    "tiny": ViTConfig(embed_dim=192, depth=6, num_heads=3, layer_decay=0.85),
}
# Zoo suffix -> keypoint set of the pose models.
SAPIENS_POSE_SETS = {"pose": "sapiens308", "pose-coco": "coco17", "pose-wholebody": "wholebody133"}
# Zoo suffix -> dense task.
SAPIENS_DENSE_TASKS = {"seg": "seg", "depth": "depth", "normal": "normals"}
_SAPIENS_INPUT = (768, 1024)
_SAPIENS_TINY_INPUT = (192, 256)
_SAPIENS_POSE_HEAD = HeatmapHeadConfig(deconv_channels=(768, 768), deconv_kernel_sizes=(4, 4),
                                       conv_channels=(768, 768), conv_kernel_sizes=(1, 1))
_SAPIENS_TINY_POSE_HEAD = HeatmapHeadConfig(deconv_channels=(128, 128), conv_channels=(128,), conv_kernel_sizes=(1,))


def _sapiens_backbone(size: str, padding: int, layer_decay: float | None = None) -> ViTConfig:
    if size not in SAPIENS_BACKBONES:
        raise PoseforgeError(f"unknown Sapiens size '{size}'; known: {', '.join(SAPIENS_BACKBONES)}")
    base = SAPIENS_BACKBONES[size]
    return base.replace(patch_padding=padding, layer_decay=layer_decay or base.layer_decay)


def sapiens_pose_config(size: str, keypoint_set: str = "sapiens308") -> TopDownConfig:
    """Config of a Sapiens-``size`` top-down pose model (1024x768; tiny: 256x192) for a keypoint set."""
    tiny = size == "tiny"
    input_size = _SAPIENS_TINY_INPUT if tiny else _SAPIENS_INPUT
    suffix = {v: k for k, v in SAPIENS_POSE_SETS.items()}.get(keypoint_set, f"pose-{keypoint_set}")
    config = TopDownConfig(
        name=f"sapiens-{size}-{suffix}",
        backbone=_sapiens_backbone(size, 2, 0.95 if size == "1b" else None),
        head=_SAPIENS_TINY_POSE_HEAD if tiny else _SAPIENS_POSE_HEAD,
        codec={"name": "udp", "sigma": 2.0 if tiny else 6.0}, keypoint_set=keypoint_set, input_size=input_size,
        mean=IMAGENET_MEAN, std=IMAGENET_STD)
    return sync_codec(config)


def sapiens_dense_config(size: str, task: str = "seg", num_classes: int = 28) -> DenseConfig:
    """Config of a Sapiens-``size`` dense model for ``task`` (``seg``, ``depth`` or ``normals``) at 1024x768
    (tiny: 256x192); segmentation predicts the 28 Goliath part classes."""
    from ..data.synth.classes import SAPIENS_PART_CLASSES  # the class list is data shared with the renderer

    tiny = size == "tiny"
    head = SAPIENS_DENSE_HEADS[task]
    if tiny:  # CPU-sized: maps at 1/4 of the input (a 1/2-scale stage costs 3-9x the step on 2 cores)
        head = head.replace(deconv_channels=(64, 64), deconv_kernel_sizes=(4, 4), conv_channels=(64,),
                            conv_kernel_sizes=(1,))
    suffix = {v: k for k, v in SAPIENS_DENSE_TASKS.items()}[task]
    seg = task == "seg"
    return DenseConfig(
        name=f"sapiens-{size}-{suffix}", backbone=_sapiens_backbone(size, 2 if task == "normals" else 0), head=head,
        codec={"name": "dense", "input_size": list(_SAPIENS_TINY_INPUT if tiny else _SAPIENS_INPUT),
               "num_classes": num_classes if seg else 0, "depth": task == "depth", "normals": task == "normals"},
        classes=SAPIENS_PART_CLASSES if seg and num_classes == len(SAPIENS_PART_CLASSES) else (),
        input_size=_SAPIENS_TINY_INPUT if tiny else _SAPIENS_INPUT, mean=IMAGENET_MEAN, std=IMAGENET_STD)


def sapiens_mae_config(size: str) -> MAEConfig:
    """Config of Sapiens-``size`` MAE pretraining (``mae_sapiens_{size}-p16_8xb512-coslr-1600e_humans_300m_test.py``):
    the encoder at 1024x1024 without patch padding, mask ratio 0.75, ``MAEPretrainDecoder`` 512 wide, 8 blocks,
    16 heads, normalized-pixel loss. ``tiny`` (CPU): 128x160, a 128-wide 2-block decoder with 4 heads."""
    tiny = size == "tiny"
    backbone = _sapiens_backbone(size, 0).replace(drop_path_rate=0.0, layer_decay=1.0)
    return MAEConfig(backbone=backbone, mask_ratio=0.75, decoder_dim=128 if tiny else 512,
                     decoder_depth=2 if tiny else 8, decoder_heads=4 if tiny else 16, name=f"sapiens-{size}-mae",
                     input_size=(128, 160) if tiny else (1024, 1024))


for _size in SAPIENS_BACKBONES:
    MODELS.register(f"sapiens-{_size}-mae", partial(sapiens_mae_config, _size))
    for _suffix, _set in SAPIENS_POSE_SETS.items():
        MODELS.register(f"sapiens-{_size}-{_suffix}", partial(sapiens_pose_config, _size, _set))
    for _suffix, _task in SAPIENS_DENSE_TASKS.items():
        MODELS.register(f"sapiens-{_size}-{_suffix}", partial(sapiens_dense_config, _size, _task))
# ----- end Sapiens


def list_models(pattern: str = "*", pretrained: bool = False) -> list[str]:
    """Names of the registered models matching a shell pattern, e.g. ``list_models("vitpose-*")``;
    ``pretrained=True``: the ``arch.tag`` names of the weights there are (``vitpose-tiny.synth``)."""
    if pretrained:
        return list_weights(pattern, kind="pose")
    return MODELS.names(pattern)


def model_config(name: str, **overrides: Any) -> ModelConfig:
    """The config ``create_model(name, **overrides)`` would build (``name``: a zoo entry or an ``arch.tag``
    weights name, whose architecture is the weights' own config)."""
    if name not in MODELS and weights_spec(name) is not None:
        return apply_overrides(saved_config(name), overrides)
    factory: Callable[[], ModelConfig] = MODELS.get(name)
    return apply_overrides(factory(), overrides)


def create_model(name: str, pretrained: bool = False, **overrides: Any) -> Estimator:
    """Build a registered model with freshly initialized weights, or - ``pretrained=True`` with an
    ``arch.tag`` weights name such as ``"vitpose-tiny.synth"`` - with those weights (as :func:`load_model`).

    ``overrides`` may name any field of the model config (``keypoint_set="wholebody133"``,
    ``input_size=(288, 384)`` as (width, height), ``flip_test``, ``mean``/``std``), of its backbone
    config (``drop_path_rate``, ``attention="window"``, ``window_size``, ``global_blocks``,
    ``grad_checkpointing`` ...) or of its head config; plus ``head="simple"|"classic"|"simcc"`` (or a
    head config; ``simcc`` also switches the codec to SimCC), ``codec="udp"|"msra"|"dark"`` (or a
    full codec dict) and ``sigma``. The head's output count follows the keypoint set; the codec's
    input and heatmap sizes follow the input size. Pretrained weights take no overrides.
    """
    if pretrained:
        if weights_spec(name) is None:
            raise PoseforgeError(f"create_model('{name}', pretrained=True): no weights of that name; "
                                 f"known: {', '.join(list_weights(kind='pose')) or 'none'}")
        if overrides:
            raise PoseforgeError(f"create_model('{name}', pretrained=True): pretrained weights take no overrides "
                                 f"({', '.join(overrides)})")
        return load_model(name)
    model = build_model(model_config(name, **overrides))
    if getattr(model.config, "codec", None):
        model.codec  # noqa: B018  (built now so a bad codec name or setting fails here, not at predict time)
    return model


def apply_overrides(config: ModelConfig, overrides: dict[str, Any]) -> ModelConfig:
    """Apply ``create_model`` style overrides to a config (see :func:`create_model`)."""
    top_fields = {f.name for f in dataclasses.fields(config)}
    backbone = getattr(config, "backbone", None)
    head = getattr(config, "head", None)
    heads = config.heads if isinstance(config, MultiTaskTopDownConfig) else None  # head overrides apply to every head
    if head is None and heads:
        head = heads[0]
    if isinstance(overrides.get("head"), str) and overrides["head"] in HEAD_PRESETS:
        head = HEAD_PRESETS[overrides["head"]]  # head field overrides apply to the new head
    backbone_fields = {f.name for f in dataclasses.fields(backbone)} if backbone is not None else set()
    head_fields = {f.name for f in dataclasses.fields(head)} if head is not None else set()
    top: dict[str, Any] = {}
    backbone_changes: dict[str, Any] = {}
    head_changes: dict[str, Any] = {}
    codec_changes: dict[str, Any] = {}
    for key, value in overrides.items():
        if key == "head" and isinstance(value, str):
            if value not in HEAD_PRESETS:
                raise PoseforgeError(f"unknown head '{value}'; known: {', '.join(HEAD_PRESETS)}")
            if heads:
                top["heads"] = (HEAD_PRESETS[value],) * len(heads)
            else:
                top["head"] = HEAD_PRESETS[value]
        elif key == "codec" and isinstance(value, str):
            codec_changes["name"] = value
        elif key == "codec" and isinstance(value, dict):
            top["codec"] = dict(value)
        elif key == "sigma":
            codec_changes["sigma"] = float(value)
        elif key in top_fields and key != "type":
            top[key] = value
        elif key in backbone_fields and key != "type":
            backbone_changes[key] = value
        elif key in head_fields and key != "type":
            head_changes[key] = value
        else:
            known = sorted((top_fields | backbone_fields | head_fields | {"sigma"}) - {"type"})
            raise PoseforgeError(f"create_model: unknown override '{key}'; known: {', '.join(known)}")
    if heads and "tasks" in top:  # new tasks: one head (like the first) and one expert each, unless given
        top["tasks"] = tuple(TaskConfig(*t) if isinstance(t, (tuple, list)) else t for t in top["tasks"])
        n = len(top["tasks"])
        new_heads = tuple(top.get("heads") or heads)
        top["heads"] = new_heads if len(new_heads) == n else new_heads[:1] * n
        if getattr(config.backbone, "num_experts", 1) > 1 and "num_experts" not in backbone_changes:
            backbone_changes["num_experts"] = n
    if backbone_changes:  # together with the top-level changes: tasks are checked against the experts
        top["backbone"] = config.backbone.replace(**backbone_changes)
    if top:
        config = config.replace(**top)
    if head_changes:
        if heads:
            config = config.replace(heads=tuple(h.replace(**head_changes) for h in config.heads))
        else:
            config = config.replace(head=config.head.replace(**head_changes))
    if codec_changes:
        config = config.replace(codec={**config.codec, **codec_changes})
    return sync_codec(config)


def sync_codec(config: ModelConfig) -> ModelConfig:
    """Set the codec's ``input_size`` (and ``heatmap_size`` for heatmap heads) from the model's shapes.

    A SimCC head needs the ``simcc`` codec: a heatmap codec is replaced by RTMPose's SimCC settings
    for the input size (:func:`~poseforge.models.heads.simcc.simcc_codec`), and the codec's
    ``split_ratio`` follows the head's. A heatmap head given back a ``simcc`` codec gets ViTPose's UDP
    heatmaps (sigma 2).
    """
    codec = dict(getattr(config, "codec", {}) or {})
    if not codec:
        return config
    backbone, head = getattr(config, "backbone", None), getattr(config, "head", None)
    if head is None and isinstance(config, MultiTaskTopDownConfig):
        head = config.heads[0]
    if getattr(head, "split_ratio", None) is not None:  # a SimCC-type head (simcc, rtmcc)
        if codec.get("name") != "simcc":
            codec = simcc_codec(config.input_size, head.split_ratio)
        codec["split_ratio"] = head.split_ratio
    elif codec.get("name") == "simcc" and hasattr(head, "output_size"):
        codec = {"name": "udp", "sigma": 2.0}
    codec["input_size"] = list(config.input_size)
    if hasattr(backbone, "feature_info") and hasattr(head, "output_size"):  # a spatial (heatmap) head
        info = backbone.feature_info(config.input_size)
        if getattr(config, "neck", None) is not None:  # the head reads the neck's maps
            info = config.neck.feature_info(info)
        codec["heatmap_size"] = list(head.output_size(info[-1].size))
    return config.replace(codec=codec)
