"""ViTPose checkpoints from other codebases -> poseforge models.

Formats (key names read from each codebase's modules):

* ``official``: ViTAE-Transformer/ViTPose (mmpose 0.x). ``backbone.patch_embed.proj``,
  ``backbone.pos_embed`` ``[1, 1+N, C]`` (class position added to every patch),
  ``backbone.blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``, ``backbone.last_norm``,
  ``keypoint_head.deconv_layers.*``, ``keypoint_head.final_layer``.
* ``mmpose``: mmpose 1.x with mmpretrain's VisionTransformer. ``backbone.patch_embed.projection``,
  ``backbone.pos_embed`` ``[1, N, C]``, ``backbone.layers.N.{ln1,attn.qkv,attn.proj,ln2,
  ffn.layers.0.0,ffn.layers.1}``, ``backbone.ln1``, ``head.deconv_layers.*``, ``head.final_layer``.
* ``hf``: Hugging Face transformers ``VitPoseForPoseEstimation`` folders. ``backbone.embeddings.
  {patch_embeddings.projection,position_embeddings}``, ``backbone.encoder.layer.N.{layernorm_before,
  attention.attention.{query,key,value},attention.output.dense,layernorm_after,mlp.fc1,mlp.fc2}``,
  ``backbone.layernorm``, ``head.{deconv1,batchnorm1,deconv2,batchnorm2,conv}``.

The architecture (width, depth, MLP width, qkv bias, patch size, token grid, decoder type and
keypoint count) is read from tensor shapes. The attention head count is not in a bare state dict:
the official configs' value for the width is used (S 12, B 12, L 16, H 16) unless given.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

import torch

from ..errors import PoseforgeError
from ..keypoints import get_keypoint_set, list_keypoint_sets, match_keypoint_set
from ..models.backbones.vit import ViTConfig, fold_cls_pos_embed, guess_grid, token_grid
from ..models.config import TopDownConfig
from ..models.estimators import Estimator
from ..models.loading import model_from_state_dict
from ..models.heads.heatmap import HeatmapHeadConfig
from ..models.zoo import VITPOSE_BACKBONES, sync_codec

__all__ = ["FORMATS", "detect_format", "to_poseforge_keys", "vitpose_from_state_dict", "OFFICIAL_NUM_HEADS",
           "infer_backbone", "infer_head", "resolve_keypoint_set", "codec_config", "require_tensor", "rename_keys",
           "MMPRETRAIN_VIT_RULES"]

FORMATS = ("official", "mmpose", "hf", "poseforge")

# Official ViTPose head counts by width (ViTPose-S uses 12 heads, not the usual ViT-S 6).
OFFICIAL_NUM_HEADS = {cfg.embed_dim: cfg.num_heads for cfg in VITPOSE_BACKBONES.values()}
_SIZE_NAMES = {cfg.embed_dim: size for size, cfg in VITPOSE_BACKBONES.items() if size != "tiny"}

_PARAM = r"(weight|bias)"
_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"

# (pattern, replacement) pairs: foreign key -> poseforge key. Keys matching no rule are unknown.
_RULES: dict[str, list[tuple[str, str]]] = {
    "official": [
        (rf"backbone\.patch_embed\.proj\.{_PARAM}", r"backbone.patch_embed.proj.\1"),
        (r"backbone\.pos_embed", r"backbone.pos_embed"),
        (rf"backbone\.blocks\.(\d+)\.(norm1|norm2)\.{_PARAM}", r"backbone.blocks.\1.\2.\3"),
        (rf"backbone\.blocks\.(\d+)\.attn\.(qkv|proj)\.{_PARAM}", r"backbone.blocks.\1.attn.\2.\3"),
        (rf"backbone\.blocks\.(\d+)\.mlp\.(fc1|fc2)\.{_PARAM}", r"backbone.blocks.\1.mlp.\2.\3"),
        (rf"backbone\.last_norm\.{_PARAM}", r"backbone.norm.\1"),
        (rf"keypoint_head\.deconv_layers\.(\d+)\.{_BN}", r"head.deconv_layers.\1.\2"),
        (rf"keypoint_head\.final_layer\.{_PARAM}", r"head.final_layer.\1"),
    ],
    "mmpose": [
        (rf"backbone\.patch_embed\.projection\.{_PARAM}", r"backbone.patch_embed.proj.\1"),
        (r"backbone\.pos_embed", r"backbone.pos_embed"),
        (rf"backbone\.layers\.(\d+)\.ln1\.{_PARAM}", r"backbone.blocks.\1.norm1.\2"),
        (rf"backbone\.layers\.(\d+)\.ln2\.{_PARAM}", r"backbone.blocks.\1.norm2.\2"),
        (rf"backbone\.layers\.(\d+)\.attn\.(qkv|proj)\.{_PARAM}", r"backbone.blocks.\1.attn.\2.\3"),
        (rf"backbone\.layers\.(\d+)\.ffn\.layers\.0\.0\.{_PARAM}", r"backbone.blocks.\1.mlp.fc1.\2"),
        (rf"backbone\.layers\.(\d+)\.ffn\.layers\.1\.{_PARAM}", r"backbone.blocks.\1.mlp.fc2.\2"),
        (rf"backbone\.ln1\.{_PARAM}", r"backbone.norm.\1"),
        (rf"head\.deconv_layers\.(\d+)\.{_BN}", r"head.deconv_layers.\1.\2"),
        (rf"head\.final_layer\.{_PARAM}", r"head.final_layer.\1"),
    ],
    "hf": [
        (rf"backbone\.embeddings\.patch_embeddings\.projection\.{_PARAM}", r"backbone.patch_embed.proj.\1"),
        (r"backbone\.embeddings\.position_embeddings", r"backbone.pos_embed"),
        (rf"backbone\.encoder\.layer\.(\d+)\.layernorm_before\.{_PARAM}", r"backbone.blocks.\1.norm1.\2"),
        (rf"backbone\.encoder\.layer\.(\d+)\.layernorm_after\.{_PARAM}", r"backbone.blocks.\1.norm2.\2"),
        # q, k and v are fused into one qkv projection afterwards.
        (rf"backbone\.encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)\.{_PARAM}", r"backbone.blocks.\1.attn.\2.\3"),
        (rf"backbone\.encoder\.layer\.(\d+)\.attention\.output\.dense\.{_PARAM}", r"backbone.blocks.\1.attn.proj.\2"),
        (rf"backbone\.encoder\.layer\.(\d+)\.mlp\.(fc1|fc2)\.{_PARAM}", r"backbone.blocks.\1.mlp.\2.\3"),
        (rf"backbone\.layernorm\.{_PARAM}", r"backbone.norm.\1"),
        (rf"head\.deconv1\.{_PARAM}", r"head.deconv_layers.0.\1"),
        (rf"head\.batchnorm1\.{_BN}", r"head.deconv_layers.1.\1"),
        (rf"head\.deconv2\.{_PARAM}", r"head.deconv_layers.3.\1"),
        (rf"head\.batchnorm2\.{_BN}", r"head.deconv_layers.4.\1"),
        (rf"head\.conv\.{_PARAM}", r"head.final_layer.\1"),
    ],
}
_COMPILED = {fmt: [(re.compile(p + r"$"), r) for p, r in rules] for fmt, rules in _RULES.items()}
# mmpretrain's VisionTransformer (mmpose 1.x ViTPose, Sapiens): the backbone rules of the mmpose layout.
MMPRETRAIN_VIT_RULES = [(p, r) for p, r in _COMPILED["mmpose"] if p.pattern.startswith(r"backbone\.")]


def detect_format(keys: Any, hf_config: Mapping[str, Any] | None = None) -> str:
    """Guess the checkpoint format from its key names (and a Hugging Face config, if any)."""
    keys = list(keys)
    if hf_config is not None and str(hf_config.get("model_type", "")).startswith("vitpose"):
        return "hf"
    has = lambda prefix: any(k.startswith(prefix) for k in keys)  # noqa: E731
    if has("backbone.embeddings.") or has("backbone.encoder.layer."):
        return "hf"
    if has("keypoint_head.") or has("backbone.last_norm."):
        return "official"
    if has("backbone.layers.") or has("backbone.patch_embed.projection."):
        return "mmpose"
    if has("backbone.blocks.") and (has("head.final_layer.") or has("backbone.norm.")):
        return "poseforge"
    if has("backbone.blocks."):
        return "official"
    sample = ", ".join(keys[:5])
    raise PoseforgeError(f"unrecognized checkpoint layout (first keys: {sample}); pass the format explicitly "
                         f"(one of {', '.join(FORMATS)})")


def _show(keys: list[str], limit: int = 12) -> str:
    return ", ".join(keys[:limit]) + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def to_poseforge_keys(state_dict: Mapping[str, torch.Tensor], fmt: str, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Rename a foreign state dict to poseforge keys (fusing Hugging Face q/k/v); unknown keys raise."""
    if fmt == "poseforge":
        return dict(state_dict)
    if fmt not in _COMPILED:
        raise PoseforgeError(f"unknown checkpoint format '{fmt}'; known: {', '.join(FORMATS)}")
    out = rename_keys(state_dict, _COMPILED[fmt], fmt, source)
    if fmt == "hf":
        out = _fuse_qkv(out, source)
    return out


def rename_keys(state_dict: Mapping[str, torch.Tensor], rules: list[tuple[re.Pattern, str]], fmt: str,
                source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Rename keys by the first matching ``(compiled pattern, replacement)`` rule; keys no rule matches are
    listed in one error (``fmt`` names the layout in it)."""
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state_dict.items():
        for pattern, replacement in rules:
            if pattern.match(key):
                out[pattern.sub(replacement, key)] = value
                break
        else:
            unknown.append(key)
    if unknown:
        hint = (" (a ViTPose++ mixture-of-experts checkpoint: convert it with convert_checkpoint or "
                "vitpose_plus_from_state_dict)") if any(".experts." in k for k in unknown) else ""
        raise PoseforgeError(f"{source}: {len(unknown)} unknown key(s) for the {fmt} format: {_show(unknown)}{hint}")
    return out


def _fuse_qkv(state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    parts = re.compile(r"(backbone\.blocks\.\d+\.attn)\.(query|key|value)\.(weight|bias)$")
    grouped: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    out = {}
    for key, value in state.items():
        m = parts.match(key)
        if m:
            grouped.setdefault((m.group(1), m.group(3)), {})[m.group(2)] = value
        else:
            out[key] = value
    for (prefix, kind), qkv in grouped.items():
        missing = [p for p in ("query", "key", "value") if p not in qkv]
        if missing:
            raise PoseforgeError(f"{source}: missing key(s) {', '.join(f'{prefix}.{p}.{kind}' for p in missing)}")
        shapes = {tuple(t.shape) for t in qkv.values()}
        if len(shapes) != 1:
            raise PoseforgeError(f"{source}: {prefix} query/key/value {kind} shapes differ: {sorted(shapes)}")
        out[f"{prefix}.qkv.{kind}"] = torch.cat([qkv["query"], qkv["key"], qkv["value"]], dim=0)
    return out


def require_tensor(state: Mapping[str, torch.Tensor], key: str, source: str, ndim: int | None = None) -> torch.Tensor:
    """``state[key]``, checked to exist (and to have ``ndim`` dimensions): a one-line error naming the file otherwise."""
    if key not in state:
        raise PoseforgeError(f"{source}: missing key {key} (needed to infer the architecture)")
    t = state[key]
    if ndim is not None and t.ndim != ndim:
        raise PoseforgeError(f"{source}: {key} has shape {list(t.shape)}, expected {ndim} dimensions")
    return t


def vitpose_from_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    fmt: str = "auto",
    *,
    hf_config: Mapping[str, Any] | None = None,
    keypoint_set: str | None = None,
    input_size: tuple[int, int] | None = None,
    num_heads: int | None = None,
    codec: str | dict = "udp",
    sigma: float = 2.0,
    simple_upsample: int = 4,
    source: str = "checkpoint",
) -> Estimator:
    """Build a poseforge ViTPose model holding a foreign checkpoint's weights.

    Args:
        state_dict: the checkpoint's tensors (``read_checkpoint(...).state_dict``).
        fmt: ``"official"``, ``"mmpose"``, ``"hf"``, ``"poseforge"`` or ``"auto"``.
        hf_config: a Hugging Face folder's ``config.json`` (gives heads, image size, LayerNorm eps).
        keypoint_set: keypoint set name; by default guessed from the head's output count.
        input_size: ``(width, height)`` the checkpoint was trained at; by default guessed from the
            position embeddings (4:3 crops, else square).
        num_heads: attention heads; by default from ``hf_config`` or the official configs.
        codec, sigma: codec of the converted model (ViTPose: UDP, sigma 2).
        simple_upsample: bilinear factor of a simple decoder (ViTPose: 4).
    Raises:
        PoseforgeError: unknown, missing or mis-shaped keys (all listed), or an ambiguous setting.
    """
    if fmt == "auto":
        fmt = detect_format(state_dict.keys(), hf_config)
    state = to_poseforge_keys(state_dict, fmt, source)
    hf_backbone = dict((hf_config or {}).get("backbone_config") or {})
    if hf_backbone.get("num_experts", 1) not in (1, None):
        raise PoseforgeError(f"{source}: ViTPose++ mixture-of-experts checkpoint (num_experts="
                             f"{hf_backbone['num_experts']}): convert it with convert_checkpoint or "
                             f"poseforge.convert.vitpose_plus.vitpose_plus_from_state_dict")
    backbone, input_size = infer_backbone(state, fmt, hf_config, num_heads, input_size, source)
    head, num_keypoints = infer_head(state, "head.", hf_config, simple_upsample, source)
    keypoint_set = resolve_keypoint_set(num_keypoints, keypoint_set, source)
    size = _SIZE_NAMES.get(backbone.embed_dim, "custom")
    simple = not head.deconv_channels
    config = sync_codec(TopDownConfig(
        name=f"vitpose-{size}{'-simple' if simple else ''}", backbone=backbone, head=head,
        codec=codec_config(codec, sigma), keypoint_set=keypoint_set, input_size=input_size))
    model = model_from_state_dict(config, state, source)
    model.codec  # noqa: B018  (validates the codec settings before anything is saved)
    return model


def codec_config(codec: str | dict, sigma: float) -> dict:
    """Codec settings of a converted model: a full dict, or a name plus sigma."""
    return dict(codec) if isinstance(codec, dict) else {"name": codec, "sigma": float(sigma)}


def infer_backbone(state: dict[str, torch.Tensor], fmt: str, hf_config: Mapping[str, Any] | None,
                   num_heads: int | None, input_size: tuple[int, int] | None,
                   source: str, patch_padding: int = 2) -> tuple[ViTConfig, tuple[int, int]]:
    """ViT config and input size ``(w, h)`` from poseforge-named backbone tensors (shapes, ``hf_config``).

    ``patch_padding`` is the patch embedding's padding (ViTPose 2; a bare state dict does not record it).

    Folds a class-token position of ``official`` / ``hf`` checkpoints into ``state["backbone.pos_embed"]``.
    The MLP is read from ``blocks.0``: its ``fc1`` gives the hidden width; task experts
    (``mlp.experts.M``) make a PS-FFN whose expert width comes from the expert weights.
    """
    hf_backbone = dict((hf_config or {}).get("backbone_config") or {})
    if hf_backbone.get("hidden_act", "gelu") != "gelu":
        raise PoseforgeError(f"{source}: hidden_act '{hf_backbone['hidden_act']}' is not supported (ViTPose uses gelu)")
    patch = require_tensor(state, "backbone.patch_embed.proj.weight", source, ndim=4)
    embed_dim, in_channels, ph, pw = patch.shape
    if ph != pw:
        raise PoseforgeError(f"{source}: non-square patches {ph}x{pw} are not supported")
    block_ids = sorted({int(m.group(1)) for k in state if (m := re.match(r"backbone\.blocks\.(\d+)\.", k))})
    if not block_ids:
        raise PoseforgeError(f"{source}: no transformer blocks found")
    depth = block_ids[-1] + 1
    fc1 = require_tensor(state, "backbone.blocks.0.mlp.fc1.weight", source, ndim=2)
    if num_heads is None:
        num_heads = hf_backbone.get("num_attention_heads") or OFFICIAL_NUM_HEADS.get(int(embed_dim))
    if num_heads is None:
        raise PoseforgeError(f"{source}: cannot infer the attention head count of a {embed_dim}-wide ViT; pass num_heads")
    eps = float(hf_backbone.get("layer_norm_eps", 1e-6))
    hidden = int(fc1.shape[0])
    experts = sorted({int(m.group(1)) for k in state if (m := re.match(r"backbone\.blocks\.0\.mlp\.experts\.(\d+)\.weight$", k))})
    moe: dict[str, Any] = {}
    if experts:
        if experts != list(range(len(experts))):
            raise PoseforgeError(f"{source}: expert indices {experts} of block 0 are not 0..{len(experts) - 1}")
        width = require_tensor(state, "backbone.blocks.0.mlp.experts.0.weight", source, ndim=2)
        moe = {"num_experts": len(experts), "moe_variant": "ps", "part_features": int(width.shape[0])}
    backbone = ViTConfig(
        embed_dim=int(embed_dim), depth=depth, num_heads=int(num_heads),
        mlp_dim=None if hidden == 4 * embed_dim else hidden, patch_size=int(ph), patch_padding=int(patch_padding),
        in_channels=int(in_channels), qkv_bias="backbone.blocks.0.attn.qkv.bias" in state,
        layer_norm_eps=eps, final_norm="backbone.norm.weight" in state,
        **_size_defaults(int(embed_dim), depth), **moe)

    pos = require_tensor(state, "backbone.pos_embed", source, ndim=3)
    if input_size is None and hf_backbone.get("image_size"):
        h, w = hf_backbone["image_size"] if isinstance(hf_backbone["image_size"], (list, tuple)) else (hf_backbone["image_size"],) * 2
        input_size = (int(w), int(h))
    positions = int(pos.shape[1])
    with_cls = fmt in ("official", "hf")  # both store a class-token position in front
    num_patches = positions - 1 if with_cls else positions
    if input_size is not None:
        rows, cols = token_grid(tuple(input_size), int(ph), int(patch_padding))
        if rows * cols != num_patches:
            raise PoseforgeError(f"{source}: backbone.pos_embed has {num_patches} patch positions but a "
                                 f"{input_size[0]}x{input_size[1]} input gives {rows}x{cols} tokens")
    else:
        grid = guess_grid(num_patches)
        if grid is None:
            raise PoseforgeError(f"{source}: cannot infer the input size from {num_patches} positions; pass input_size")
        rows, cols = grid
        input_size = (cols * int(ph), rows * int(ph))  # the grid of this size for any padding below half a patch
    state["backbone.pos_embed"] = fold_cls_pos_embed(pos, num_patches) if with_cls else pos
    return backbone, (int(input_size[0]), int(input_size[1]))


def infer_head(state: Mapping[str, torch.Tensor], prefix: str, hf_config: Mapping[str, Any] | None,
               simple_upsample: int, source: str) -> tuple[HeatmapHeadConfig, int]:
    """Heatmap head config and keypoint count of the poseforge-named head tensors under ``prefix``."""
    final = require_tensor(state, f"{prefix}final_layer.weight", source, ndim=4)
    pattern = re.compile(re.escape(prefix) + r"deconv_layers\.(\d+)\.weight$")
    deconv_ids = sorted(int(m.group(1)) for k, v in state.items() if (m := pattern.match(k)) and v.ndim == 4)
    if deconv_ids != [3 * i for i in range(len(deconv_ids))]:
        raise PoseforgeError(f"{source}: unexpected deconvolution layout (layers at {deconv_ids})")
    channels = tuple(int(state[f"{prefix}deconv_layers.{i}.weight"].shape[1]) for i in deconv_ids)
    kernels = tuple(int(state[f"{prefix}deconv_layers.{i}.weight"].shape[-1]) for i in deconv_ids)
    # mmpose HeatmapHead's conv_layers ([Conv, BN, ReLU] blocks after the deconvolutions; Sapiens' pose heads)
    pattern = re.compile(re.escape(prefix) + r"conv_layers\.(\d+)\.weight$")
    conv_ids = sorted(int(m.group(1)) for k, v in state.items() if (m := pattern.match(k)) and v.ndim == 4)
    if conv_ids != [3 * i for i in range(len(conv_ids))]:
        raise PoseforgeError(f"{source}: unexpected convolution layout (conv_layers at {conv_ids})")
    conv_channels = tuple(int(state[f"{prefix}conv_layers.{i}.weight"].shape[0]) for i in conv_ids)
    conv_kernels = tuple(int(state[f"{prefix}conv_layers.{i}.weight"].shape[-1]) for i in conv_ids)
    upsample = 0
    if not deconv_ids:
        upsample = int((hf_config or {}).get("scale_factor", simple_upsample))
    head = HeatmapHeadConfig(deconv_channels=channels, deconv_kernel_sizes=kernels, conv_channels=conv_channels,
                             conv_kernel_sizes=conv_kernels, final_kernel_size=int(final.shape[-1]),
                             input_upsample=upsample)
    return head, int(final.shape[0])


def resolve_keypoint_set(num_keypoints: int, keypoint_set: str | None, source: str) -> str:
    """The requested keypoint set (checked against the head) or the one the keypoint count implies."""
    if keypoint_set is None:
        match = match_keypoint_set(None, num_keypoints)
        if match is None:
            fitting = [n for n in list_keypoint_sets() if get_keypoint_set(n).num_keypoints == num_keypoints]
            if fitting:
                raise PoseforgeError(f"{source}: {num_keypoints} keypoints fit several keypoint sets "
                                     f"({', '.join(fitting)}); pass keypoint_set")
            raise PoseforgeError(f"{source}: no known keypoint set has {num_keypoints} keypoints "
                                 f"(known: {', '.join(list_keypoint_sets())})")
        return match.name
    if get_keypoint_set(keypoint_set).num_keypoints != num_keypoints:
        raise PoseforgeError(f"{source}: the head predicts {num_keypoints} keypoints but '{keypoint_set}' has "
                             f"{get_keypoint_set(keypoint_set).num_keypoints}")
    return get_keypoint_set(keypoint_set).name


def _size_defaults(embed_dim: int, depth: int) -> dict[str, Any]:
    """Training defaults (drop path, layer decay) of the matching official size, if any."""
    for cfg in VITPOSE_BACKBONES.values():
        if cfg.embed_dim == embed_dim and cfg.depth == depth:
            return {"drop_path_rate": cfg.drop_path_rate, "layer_decay": cfg.layer_decay}
    return {}
