"""mmpose 1.x RTMPose / DWPose / RTMW checkpoints -> poseforge top-down models.

poseforge's CSPNeXt, CSPNeXt-PAFPN, RTMCC and RTMW modules carry mmpose's module names, so the
tensors load unchanged; what a checkpoint does not say directly is its architecture, which is read from
tensor shapes:

* family: ``backbone.stem.*`` with ``head.gau.*`` is RTMPose / DWPose (RTMCC head); with
  ``neck.reduce_layers.*`` and ``head.final_layer2.*`` it is RTMW (PAFPN neck, RTMW head).
* CSPNeXt: stage count (P5 / P6), widths (``widen_factor``: the stem and stage convolutions), blocks per
  stage (``deepen_factor``: ``max(round(n x d), 1)`` must give every count), CSP expand ratio, channel
  attention and block kernel. The sizes t/s/m/l/x are recognised by their factors.
* heads: keypoint count and kernel from ``final_layer``, token and GAU widths from ``mlp`` / ``gau``;
  input size and split ratio from the ``cls_x`` / ``cls_y`` bins (``w x r``, ``h x r``) together with the
  flattened stride-32 map of ``mlp.1`` (``ceil(w/32) x ceil(h/32)`` cells).

mmengine checkpoints keep their config text in ``meta["cfg"]`` and the dataset's keypoint names in
``meta["dataset_meta"]``; ``input_size``, ``simcc_split_ratio``, ``sigma`` (and DWPose's ``two_dis``)
are read from that text with regular expressions (it is never executed). Explicit options override
both; a setting that stays ambiguous is a one-line :class:`~poseforge.errors.PoseforgeError` naming the
file and the option to pass.

Wrappers: DWPose distiller checkpoints (``student.*``, ``teacher.*``, ``distill_losses.*``) give the
student (first stage: ``dwpose_l_dis_m``) or, for the second stage (``two_dis``, ``dwpose_m-mm``), the
teacher's backbone (and neck) with the student's head, as mmpose's ``pth_transfer.py`` does; the
``data_preprocessor.mean`` / ``std`` buffers, where saved, become the model's normalization;
BatchNorm ``num_batches_tracked`` counters stripped by some tools are restored as 0 (they only matter
to training with cumulative averaging). mmengine's EMA weights are chosen by
:meth:`~poseforge.convert.checkpoint.Checkpoint.weights`.
"""
from __future__ import annotations

import math
import re
from typing import Any, Callable, Mapping, Sequence

import torch

from ..errors import PoseforgeError
from ..keypoints import match_keypoint_set
from ..models.backbones.cspnext import CSPNEXT_ARCHS, CSPNeXtConfig
from ..models.config import IMAGENET_MEAN, IMAGENET_STD, TopDownConfig
from ..models.estimators import Estimator
from ..models.heads.rtmcc import RTMCC_HEAD, RTMCCHeadConfig
from ..models.heads.rtmw import RTMW_HEAD, RTMWHeadConfig
from ..models.loading import model_from_state_dict
from ..models.necks.cspnext_pafpn import CSPNeXtPAFPNConfig
from ..models.zoo import RTMPOSE_BACKBONES, RTMW_NECK, rtmpose_codec, rtmpose_config, rtmw_config, sync_codec
from .vitpose import require_tensor, resolve_keypoint_set

__all__ = ["rtmpose_family", "rtmpose_from_state_dict", "select_weights", "config_hints", "infer_cspnext"]

# Split ratios tried when neither the options nor the checkpoint's config give one (steps of 0.5;
# every shipped mmpose config uses 2.0).
_SPLIT_RATIOS = tuple(k / 2 for k in range(1, 17))
_WRAPPER_PREFIXES = ("student.", "teacher.", "module.")


def _strip_wrappers(key: str) -> str:
    for prefix in _WRAPPER_PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


def rtmpose_family(keys: Any) -> str | None:
    """``"rtmw"``, ``"rtmpose"`` (RTMPose or DWPose) or ``None`` from a state dict's key names (distiller
    ``student.`` / ``teacher.`` and ``module.`` prefixes allowed)."""
    names = {_strip_wrappers(k) for k in keys}
    if "backbone.stem.0.conv.weight" not in names:
        return None
    if "head.final_layer2.conv.weight" in names and "neck.reduce_layers.0.conv.weight" in names:
        return "rtmw"
    if "head.gau.uv.weight" in names and "head.final_layer.weight" in names:
        return "rtmpose"
    return None


# ----------------------------------------------------------------------------- the config text in meta
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_SIZE_RE = re.compile(r"(?<![\w.])input_size\s*=\s*[(\[]\s*(\d+)\s*,\s*(\d+)\s*,?\s*[)\]]")
_RATIO_RE = re.compile(rf"(?<![\w.])simcc_split_ratio\s*=\s*({_NUMBER})")
_SIGMA_PAIR_RE = re.compile(rf"(?<![\w.])sigma\s*=\s*[(\[]\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,?\s*[)\]]")
_SIGMA_ONE_RE = re.compile(rf"(?<![\w.])sigma\s*=\s*({_NUMBER})\s*[,)\n]")
_TWO_DIS_RE = re.compile(r"(?<![\w.])two_dis\s*=\s*(True|False)")


def _unique(values: list[Any]) -> Any:
    """The one value a config text gives for a setting (``None`` if absent, or if occurrences disagree)."""
    distinct = set(values)
    return values[0] if len(distinct) == 1 else None


def config_hints(meta: Mapping[str, Any] | None) -> dict[str, Any]:
    """Settings found in an mmengine checkpoint's ``meta``: ``input_size`` ``(w, h)``, ``split_ratio``,
    ``sigma`` ``(x, y)``, ``two_dis``, ``dwpose`` (a DWPose distiller config) and ``keypoint_names``
    (``dataset_meta``'s, in id order). Only keys that were found (and agree where repeated) are set."""
    hints: dict[str, Any] = {}
    meta = meta if isinstance(meta, Mapping) else {}
    text = meta.get("cfg")
    if isinstance(text, str):
        size = _unique([(int(w), int(h)) for w, h in _SIZE_RE.findall(text)])
        ratio = _unique([float(r) for r in _RATIO_RE.findall(text)])
        sigma = _unique([(float(x), float(y)) for x, y in _SIGMA_PAIR_RE.findall(text)]
                        + [(float(s), float(s)) for s in _SIGMA_ONE_RE.findall(text)])
        two_dis = _unique([v == "True" for v in _TWO_DIS_RE.findall(text)])
        for key, value in (("input_size", size), ("split_ratio", ratio), ("sigma", sigma), ("two_dis", two_dis)):
            if value is not None:
                hints[key] = value
        if "DWPoseDistiller" in text:
            hints["dwpose"] = True
    dataset = meta.get("dataset_meta")
    if isinstance(dataset, Mapping) and isinstance(dataset.get("keypoint_id2name"), Mapping):
        id2name = dataset["keypoint_id2name"]
        try:
            hints["keypoint_names"] = [str(id2name[i]) for i in sorted(int(k) for k in id2name)]
        except (KeyError, TypeError, ValueError):
            pass  # a malformed table: the keypoint count decides instead
    return hints


# ----------------------------------------------------------------------------- wrappers and extra keys
def select_weights(state_dict: Mapping[str, torch.Tensor], distill_stage: int | None = None,
                   two_dis: bool | None = None, source: str = "checkpoint") -> tuple[dict[str, torch.Tensor], bool]:
    """The pose model's tensors of an mmpose checkpoint and whether it came from a DWPose distiller.

    A distiller's ``student.*`` (first stage) or its ``teacher.*`` backbone / neck plus ``student.head.*``
    (second stage, ``two_dis``) are kept, its ``distill_losses.*`` dropped; other checkpoints pass through.
    ``distill_stage`` (1 or 2) overrides ``two_dis`` (from the config text); without either, a distiller
    whose teacher and student have the same shapes is ambiguous.
    """
    state = dict(state_dict)
    student = {k[len("student."):]: v for k, v in state.items() if k.startswith("student.")}
    if not student:
        if distill_stage is not None:
            raise PoseforgeError(f"{source}: distill_stage applies to DWPose distiller checkpoints (student.* / "
                                 "teacher.* keys) only")
        return state, False
    if distill_stage not in (None, 1, 2):
        raise PoseforgeError(f"{source}: distill_stage must be 1 (the student) or 2 (teacher backbone + student head), "
                             f"got {distill_stage!r}")
    teacher = {k[len("teacher."):]: v for k, v in state.items() if k.startswith("teacher.")}
    rest = {k: v for k, v in state.items()
            if not k.startswith(("student.", "teacher.", "distill_losses."))}  # e.g. data_preprocessor.*
    stage = distill_stage if distill_stage is not None else (2 if two_dis else 1 if two_dis is not None else None)
    if stage is None:
        same = teacher.keys() == student.keys() and all(teacher[k].shape == student[k].shape for k in teacher)
        if teacher and same:
            raise PoseforgeError(f"{source}: a DWPose distiller checkpoint whose teacher and student have the same "
                                 "architecture and no config text saying which stage; pass distill_stage=1 (the "
                                 "student) or 2 (teacher backbone + student head, two_dis)")
        stage = 1
    if stage == 1:
        return {**rest, **student}, True
    if not teacher:
        raise PoseforgeError(f"{source}: distill_stage=2 needs the teacher's backbone, but the checkpoint has no "
                             "teacher.* keys")
    # Second stage (mmpose's pth_transfer.py --two_dis): the student head was trained on the teacher's features.
    body = {k: v for k, v in teacher.items() if not k.startswith("head.")}
    head = {k: v for k, v in student.items() if k.startswith("head.")}
    return {**rest, **body, **head}, True


def _pop_normalization(state: dict[str, torch.Tensor],
                       source: str) -> tuple[tuple[float, float, float], tuple[float, float, float]] | None:
    """``data_preprocessor.mean`` / ``std`` (RGB, 0-255), removed from ``state``; ``None`` when not saved."""
    mean, std = state.pop("data_preprocessor.mean", None), state.pop("data_preprocessor.std", None)
    if mean is None and std is None:
        return None
    if mean is None or std is None or mean.numel() != 3 or std.numel() != 3:
        shapes = [None if t is None else list(t.shape) for t in (mean, std)]
        raise PoseforgeError(f"{source}: data_preprocessor.mean / std must both be saved with 3 values, got "
                             f"{shapes[0]} and {shapes[1]}")
    as_tuple = lambda t: tuple(float(v) for v in t.flatten())  # noqa: E731
    return as_tuple(mean), as_tuple(std)  # type: ignore[return-value]


def _restore_bn_counters(state: dict[str, torch.Tensor]) -> None:
    """Add a zero ``num_batches_tracked`` beside every BatchNorm ``running_mean`` that lacks one."""
    for key in [k for k in state if k.endswith(".running_mean")]:
        state.setdefault(key[:-len("running_mean")] + "num_batches_tracked", torch.tensor(0, dtype=torch.long))


# ----------------------------------------------------------------------------- architecture from shapes
def key_indices(state: Mapping[str, torch.Tensor], pattern: str) -> list[int]:
    """The sorted distinct integers that ``pattern``'s first group matches at the start of ``state``'s keys."""
    regex = re.compile(pattern)
    return sorted({int(m.group(1)) for k in state if (m := regex.match(k))})


def _fit_factor(candidates: Sequence[float], check: Callable[[float], bool]) -> float | None:
    """The first positive candidate that ``check`` accepts."""
    return next((c for c in candidates if c > 0 and check(c)), None)


def infer_cspnext(state: Mapping[str, torch.Tensor], num_outputs: int, source: str) -> CSPNeXtConfig:
    """The CSPNeXt config of the ``backbone.*`` tensors, returning the last ``num_outputs`` stages' maps."""
    stages = key_indices(state, r"backbone\.stage(\d+)\.")
    arch = next((a for a, spec in CSPNEXT_ARCHS.items() if len(spec) == len(stages)), None)
    if arch is None or stages != list(range(1, len(stages) + 1)):
        raise PoseforgeError(f"{source}: backbone stages {stages} match no CSPNeXt arch ({', '.join(CSPNEXT_ARCHS)})")
    spec = CSPNEXT_ARCHS[arch]
    stem = int(require_tensor(state, "backbone.stem.2.conv.weight", source, 4).shape[0])
    widths = [(int(require_tensor(state, f"backbone.stage{i}.0.conv.weight", source, 4).shape[1]),
               int(state[f"backbone.stage{i}.0.conv.weight"].shape[0])) for i in stages]
    csp = [max(key_indices(state, rf"backbone\.stage{i}\.(\d+)\.main_conv\.") or [-1]) for i in stages]
    if -1 in csp:
        raise PoseforgeError(f"{source}: backbone stage {stages[csp.index(-1)]} has no CSP layer (main_conv)")
    blocks = [len(key_indices(state, rf"backbone\.stage{i}\.{j}\.blocks\.(\d+)\.conv1\.")) for i, j in zip(stages, csp)]

    def widen_fits(w: float) -> bool:
        return int(spec[0][0] * w) == stem and all((int(cin * w), int(cout * w)) == got
                                                   for (cin, cout, *_), got in zip(spec, widths))

    zoo = list(RTMPOSE_BACKBONES.values())
    widen = _fit_factor([c.widen_factor for c in zoo] + [stem / spec[0][0]]
                        + [got[1] / s[1] for s, got in zip(spec, widths)], widen_fits)
    if widen is None:
        raise PoseforgeError(f"{source}: backbone widths stem {stem}, stages {[w[1] for w in widths]} fit no CSPNeXt "
                             f"widen_factor (base {spec[0][0]}, {[s[1] for s in spec]})")

    def deepen_fits(d: float) -> bool:
        return all(max(round(n * d), 1) == got for (_, _, n, *_), got in zip(spec, blocks))

    deepen = _fit_factor([c.deepen_factor for c in zoo] + [got / s[2] for s, got in zip(spec, blocks)], deepen_fits)
    if deepen is None:
        raise PoseforgeError(f"{source}: backbone blocks per stage {blocks} fit no CSPNeXt deepen_factor "
                             f"(max(round(n x d), 1) of {[s[2] for s in spec]})")
    last, j_last = stages[-1], csp[-1]
    mids = [int(require_tensor(state, f"backbone.stage{i}.{j}.main_conv.conv.weight", source, 4).shape[0])
            for i, j in zip(stages, csp)]
    expand = _fit_factor([0.5] + [m / w[1] for w, m in zip(widths, mids)],
                         lambda e: all(int(w[1] * e) == m for w, m in zip(widths, mids)))
    if expand is None:
        raise PoseforgeError(f"{source}: backbone CSP hidden widths {mids} fit no single expand_ratio")
    kernel = int(require_tensor(state, f"backbone.stage{last}.{j_last}.blocks.0.conv2.depthwise_conv.conv.weight",
                          source, 4).shape[-1])
    spp_in = require_tensor(state, f"backbone.stage{last}.1.conv2.conv.weight", source, 4).shape[1]
    spp_mid = require_tensor(state, f"backbone.stage{last}.1.conv1.conv.weight", source, 4).shape[0]
    if spp_in != 4 * spp_mid:  # the pool kernels are not in the weights: only the 3-pool (5, 9, 13) block is known
        raise PoseforgeError(f"{source}: backbone.stage{last}.1 pools {spp_in // spp_mid - 1} ways; only CSPNeXt's "
                             "3 pools (5, 9, 13) are supported")
    if not 1 <= num_outputs <= len(stages):
        raise PoseforgeError(f"{source}: {num_outputs} backbone maps requested of {len(stages)} stages")
    # Zoo factors are tried first, so a t/s/m/l/x backbone equals the zoo's config (and gets its name).
    return CSPNeXtConfig(
        arch=arch, deepen_factor=deepen, widen_factor=widen, expand_ratio=expand,
        out_indices=tuple(range(len(stages) - num_outputs + 1, len(stages) + 1)),
        channel_attention=f"backbone.stage1.{csp[0]}.attention.fc.weight" in state, block_kernel_size=kernel)


def _gau_dims(state: Mapping[str, torch.Tensor], hidden: int, source: str) -> dict[str, Any]:
    uv = require_tensor(state, "head.gau.uv.weight", source, 2)
    o = require_tensor(state, "head.gau.o.weight", source, 2)
    e = int(o.shape[1])
    if int(uv.shape[1]) != hidden or int(o.shape[0]) != hidden or int(uv.shape[0]) <= 2 * e:
        raise PoseforgeError(f"{source}: head.gau.uv.weight {list(uv.shape)} and head.gau.o.weight {list(o.shape)} do "
                             f"not fit {hidden}-wide keypoint tokens")
    return {"hidden_dim": hidden, "attention_dim": int(uv.shape[0]) - 2 * e, "expansion": e / hidden}


def _head_shapes(state: Mapping[str, torch.Tensor], family: str,
                 source: str) -> tuple[dict[str, Any], int, int, tuple[int, int]]:
    """Head config fields, keypoint count, flattened stride-32 cells and (x, y) bins of the head tensors."""
    final_key = "head.final_layer.conv.weight" if family == "rtmw" else "head.final_layer.weight"
    final = require_tensor(state, final_key, source, 4)
    mlp = require_tensor(state, "head.mlp.1.weight", source, 2)
    hidden = int(mlp.shape[0]) * (2 if family == "rtmw" else 1)  # RTMW: two half-width token branches
    fields = {"final_kernel_size": int(final.shape[-1]), **_gau_dims(state, hidden, source)}
    bins = (int(require_tensor(state, "head.cls_x.weight", source, 2).shape[0]),
            int(require_tensor(state, "head.cls_y.weight", source, 2).shape[0]))
    return fields, int(final.shape[0]), int(mlp.shape[1]), bins


def _infer_neck(state: Mapping[str, torch.Tensor], source: str) -> tuple[CSPNeXtPAFPNConfig, int]:
    """The PAFPN config (returning its two coarsest levels, as RTMW's head reads) and its input level count."""
    levels = len(key_indices(state, r"neck\.reduce_layers\.(\d+)\.")) + 1
    blocks = len(key_indices(state, r"neck\.top_down_blocks\.0\.blocks\.(\d+)\.conv1\."))
    mid = int(require_tensor(state, "neck.top_down_blocks.0.main_conv.conv.weight", source, 4).shape[0])
    out = int(require_tensor(state, "neck.top_down_blocks.0.final_conv.conv.weight", source, 4).shape[0])
    kernel = require_tensor(state, "neck.top_down_blocks.0.blocks.0.conv2.depthwise_conv.conv.weight", source, 4).shape[-1]
    if levels < 2 or blocks < 1:
        raise PoseforgeError(f"{source}: neck has {levels} levels and {blocks} blocks per CSP layer; "
                             "expected >= 2 and >= 1")
    expand = 0.5 if int(out * 0.5) == mid else mid / out  # RTMW's ratio where it fits (and equals the zoo's config)
    config = CSPNeXtPAFPNConfig(out_indices=(levels - 2, levels - 1), num_csp_blocks=blocks, expand_ratio=expand,
                                block_kernel_size=int(kernel))
    return config, levels


def _resolve_geometry(bins: tuple[int, int], flat: int, cells: Callable[[int, int], int],
                      input_size: tuple[int, int] | None, split_ratio: float | None, given: str,
                      source: str) -> tuple[tuple[int, int], float]:
    """Input size ``(w, h)`` and split ratio consistent with the head's bins and flattened map.

    ``cells(w, h)`` is the stride-32 cell count of an input; ``given`` says where the values came from.
    """
    bx, by = bins
    if split_ratio is not None and (isinstance(split_ratio, bool) or not isinstance(split_ratio, (int, float))
                                    or not math.isfinite(split_ratio) or split_ratio <= 0):
        raise PoseforgeError(f"{source}: split_ratio must be a positive number ({given}), got {split_ratio!r:.40}")
    if input_size is not None and (not isinstance(input_size, (tuple, list)) or len(input_size) != 2
                                   or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in input_size)):
        raise PoseforgeError(f"{source}: input_size must be two positive integers (width, height) ({given}), got {input_size!r:.40}")
    if input_size is None and split_ratio is None:
        fits = [((int(bx / r), int(by / r)), r) for r in _SPLIT_RATIOS
                if (bx / r).is_integer() and (by / r).is_integer() and cells(int(bx / r), int(by / r)) == flat]
        if len(fits) != 1:
            found = "; ".join(f"{w}x{h} at {r:g}" for (w, h), r in fits) or "none"
            raise PoseforgeError(f"{source}: cannot tell the input size from {bx} x bins, {by} y bins and {flat} "
                                 f"head cells (fits: {found}); pass input_size=(w, h) or split_ratio")
        return fits[0]
    if input_size is None:
        w, h = bx / split_ratio, by / split_ratio
        if not (w.is_integer() and h.is_integer()):
            raise PoseforgeError(f"{source}: {bx} x {by} bins at split_ratio {split_ratio:g} ({given}) give no whole "
                                 "input size; pass input_size=(w, h)")
        input_size = (int(w), int(h))
    w, h = int(input_size[0]), int(input_size[1])
    if split_ratio is None:
        split_ratio = bx / w
    expected = (int(round(w * split_ratio)), int(round(h * split_ratio)))
    if expected != (bx, by):
        raise PoseforgeError(f"{source}: head.cls_x / cls_y have {bx} x {by} bins but input {w}x{h} at split_ratio "
                             f"{split_ratio:g} ({given}) gives {expected[0]} x {expected[1]}; pass the input_size and "
                             "split_ratio the checkpoint was trained at")
    if cells(w, h) != flat:
        raise PoseforgeError(f"{source}: head.mlp.1.weight reads {flat} cells but input {w}x{h} ({given}) gives "
                             f"{cells(w, h)}; pass the input_size the checkpoint was trained at")
    return (w, h), float(split_ratio)


def _model_name(family: str, size: str | None, keypoint_set: str, input_size: tuple[int, int]) -> str:
    """The zoo's name for the architecture where it is a zoo size, else ``<family>-custom...``."""
    if size is not None:
        if family == "rtmw":
            return rtmw_config(size, input_size, keypoint_set).name
        return rtmpose_config(size, keypoint_set, input_size, family).name
    suffix = "" if keypoint_set == ("wholebody133" if family == "rtmw" else "coco17") else f"-{keypoint_set}"
    if tuple(input_size) != (192, 256):
        suffix += f"-{input_size[1]}x{input_size[0]}"
    return f"{family}-custom{suffix}"


def rtmpose_from_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    *,
    meta: Mapping[str, Any] | None = None,
    keypoint_set: str | None = None,
    input_size: tuple[int, int] | None = None,
    split_ratio: float | None = None,
    sigma: float | Sequence[float] | None = None,
    distill_stage: int | None = None,
    source: str = "checkpoint",
) -> Estimator:
    """Build a poseforge RTMPose / DWPose / RTMW model holding an mmpose 1.x checkpoint's weights.

    Args:
        state_dict: the checkpoint's tensors (``read_checkpoint(...).weights(raw)``), distiller prefixes,
            ``data_preprocessor.*`` and ``num_batches_tracked`` included.
        meta: the checkpoint's ``meta`` (mmengine: config text and dataset metainfo), used for the settings
            below that are not given.
        keypoint_set: keypoint set name; by default from ``meta``'s keypoint names, else the keypoint count.
        input_size: ``(width, height)`` the checkpoint was trained at; by default from ``meta``, else the
            head's shapes.
        split_ratio: SimCC bins per pixel; by default from ``meta``, else the head's shapes.
        sigma: SimCC label sigma in bins (one value or ``(x, y)``); by default from ``meta``, else RTMPose's
            for the input size.
        distill_stage: for DWPose distiller checkpoints, 1 (the student) or 2 (teacher backbone + student
            head); by default from ``meta``'s ``two_dis``.
    Raises:
        PoseforgeError: an unknown layout, missing, unexpected or mis-shaped keys (all listed), or a setting
            the checkpoint leaves ambiguous (naming the option to pass).
    """
    hints = config_hints(meta)
    state, distilled = select_weights(state_dict, distill_stage, hints.get("two_dis"), source)
    family = rtmpose_family(state.keys())
    if family is None:
        sample = ", ".join(list(state)[:5])
        raise PoseforgeError(f"{source}: not an RTMPose / DWPose / RTMW checkpoint (no backbone.stem.* with an RTMCC "
                             f"or RTMW head; first keys: {sample})")
    normalization = _pop_normalization(state, source)
    _restore_bn_counters(state)

    neck, levels = _infer_neck(state, source) if family == "rtmw" else (None, 1)
    backbone = infer_cspnext(state, levels, source)
    fields, num_keypoints, flat, bins = _head_shapes(state, family, source)

    def cells(w: int, h: int) -> int:
        cw, ch = backbone.feature_info((w, h))[-1].size
        return cw * ch

    # Options win as a pair: either one given ignores both config values (the tensors settle the other).
    if input_size is not None or split_ratio is not None:
        given, size_hint, ratio_hint = "given", input_size, split_ratio
    else:
        given, size_hint, ratio_hint = "the checkpoint's config", hints.get("input_size"), hints.get("split_ratio")
    (w, h), ratio = _resolve_geometry(bins, flat, cells, size_hint, ratio_hint, given, source)

    if keypoint_set is None and len(hints.get("keypoint_names", ())) == num_keypoints:
        match = match_keypoint_set(hints["keypoint_names"], num_keypoints)
        keypoint_set = match.name if match is not None else None
    keypoint_set = resolve_keypoint_set(num_keypoints, keypoint_set, source)

    head = (RTMWHeadConfig if family == "rtmw" else RTMCCHeadConfig)(split_ratio=ratio, **fields)
    # A zoo name only where every part is the zoo's (the split ratio aside): else <family>-custom.
    zoo_head, zoo_neck = (RTMW_HEAD, RTMW_NECK) if family == "rtmw" else (RTMCC_HEAD, None)
    zoo_parts = head.replace(split_ratio=zoo_head.split_ratio) == zoo_head and neck == zoo_neck
    size = next((s for s, c in RTMPOSE_BACKBONES.items()
                 if zoo_parts and c.replace(out_indices=backbone.out_indices) == backbone), None)
    name_family = "rtmw" if family == "rtmw" else "dwpose" if distilled or hints.get("dwpose") else "rtmpose"
    codec = rtmpose_codec((w, h), ratio)
    sigma = sigma if sigma is not None else hints.get("sigma")
    if sigma is not None:
        codec["sigma"] = [float(sigma)] * 2 if isinstance(sigma, (int, float)) else [float(s) for s in sigma]
    mean, std = normalization if normalization is not None else (IMAGENET_MEAN, IMAGENET_STD)
    config = sync_codec(TopDownConfig(
        name=_model_name(name_family, size, keypoint_set, (w, h)), backbone=backbone, neck=neck, head=head,
        codec=codec, keypoint_set=keypoint_set, input_size=(w, h), mean=mean, std=std))
    model = model_from_state_dict(config, state, source)
    model.codec  # noqa: B018  (validates the codec settings before anything is saved)
    return model
