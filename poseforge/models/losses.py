"""Training losses, chosen from the model's codec so that every family trains with the same loop.

A loss is an ``nn.Module`` called as ``loss(outputs, targets) -> scalar``, where ``outputs`` is a named
head output (:mod:`poseforge.outputs`) and ``targets`` the dict ``model.codec.encode`` returns. A loss may
set ``last_parts`` (named terms, detached) for the training log. Register a new one in ``LOSSES`` under
its codec's name (or map the codec in :data:`CODEC_LOSSES`); it is built with the
:class:`LossConfig` a training config gives.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import PoseforgeError
from ..outputs import DenseMaps, Heatmaps, HeatmapsTags, SimCCLogits
from ..registry import LOSSES

__all__ = ["LossConfig", "KeypointMSELoss", "KLDiscretLoss", "KeypointMapAuxLoss", "TaskBalancedHeatmapLoss",
           "DenseLoss", "AssociativeEmbeddingLoss", "tag_pull_push", "LOSSES", "CODEC_LOSSES", "build_loss"]

# codec name -> default loss name
CODEC_LOSSES: dict[str, str] = {"msra": "keypoint_mse", "dark": "keypoint_mse", "udp": "keypoint_mse",
                                "simcc": "kl_discret", "dense": "dense"}


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Training loss. ``name="auto"`` picks it from the model's codec: heatmap codecs (msra, dark,
    udp) -> ``"keypoint_mse"``, SimCC -> ``"kl_discret"``, dense maps -> ``"dense"``,
    associative embedding -> ``"associative-embedding"``.

    Attributes:
        use_target_weight: weight each keypoint by its target weight (visibility inside the crop).
        beta, label_softmax, label_beta: ``kl_discret`` settings (RTMPose: 10, True, 10).
        loss_weight: multiplies the loss.
        keypoint_map_weight: > 0 adds :class:`KeypointMapAuxLoss` with this weight: the SimCC head's
            keypoint maps learn a Gaussian at each keypoint.
        keypoint_map_sigma: that Gaussian's sigma in input pixels (4, half a cell of a stride-8 map, learned
            best of 8, 4 and 2 in full synth-cpu runs).
        seg_weight, depth_weight, normal_weight: weights of the dense terms (cross-entropy, scale-invariant
            log depth, normal L1 + (1 - cos)).
        keypoint_weights: multiply each keypoint's target weight by its keypoint set's joint weight (mmpose's
            ``GenerateTarget(use_dataset_keypoint_weights=True)``, as the RTMPose body8 recipes; COCO weighs
            elbows and knees 1.2, wrists and ankles 1.5).
        pull_weight, push_weight: weights of the associative-embedding tag terms (LitePose / HigherHRNet: 1e-3
            each; the heatmap MSE of each resolution weighs 1).
        class_weights: per-class weights of the dense segmentation cross-entropy (one per class; empty: equal).
    """

    name: str = "auto"
    use_target_weight: bool = True
    beta: float = 10.0
    label_softmax: bool = True
    label_beta: float = 10.0
    loss_weight: float = 1.0
    keypoint_map_weight: float = 0.0
    keypoint_map_sigma: float = 4.0
    seg_weight: float = 1.0
    depth_weight: float = 1.0
    normal_weight: float = 1.0
    keypoint_weights: bool = False
    pull_weight: float = 1e-3
    push_weight: float = 1e-3
    class_weights: tuple[float, ...] = ()


@LOSSES.register("keypoint_mse")
class KeypointMSELoss(nn.Module):
    """Heatmap MSE with per-keypoint target weights (mmpose 1.x ``KeypointMSELoss``).

    ``mean((output - target)^2 * w)`` over ``B x K x H x W``, with ``w`` the target weight of the
    keypoint (1 when ``use_target_weight`` is off), times ``loss_weight``.
    """

    def __init__(self, use_target_weight: bool = True, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.use_target_weight = use_target_weight
        self.loss_weight = loss_weight

    def forward(self, outputs: Heatmaps | Tensor, targets: Mapping[str, Tensor]) -> Tensor:
        outputs = outputs.heatmaps if isinstance(outputs, Heatmaps) else outputs
        heatmaps = targets["heatmaps"]
        if outputs.shape != heatmaps.shape:
            raise PoseforgeError(f"keypoint_mse: outputs {list(outputs.shape)} and target heatmaps {list(heatmaps.shape)} differ")
        error = (outputs.float() - heatmaps) ** 2
        if self.use_target_weight:
            error = error * targets["target_weights"][..., None, None]
        return error.mean() * self.loss_weight


@LOSSES.register("kl_discret")
class KLDiscretLoss(nn.Module):
    """SimCC loss of RTMPose (mmpose 1.x ``KLDiscretLoss``): KL divergence between the softmax of
    ``beta x logits`` and the labels (softmaxed with ``label_beta`` when ``label_softmax``), averaged
    over bins, weighted per keypoint, summed over the batch and both axes, divided by ``K``."""

    def __init__(self, beta: float = 10.0, label_softmax: bool = True, label_beta: float = 10.0,
                 use_target_weight: bool = True, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.beta, self.label_softmax, self.label_beta = beta, label_softmax, label_beta
        self.use_target_weight = use_target_weight
        self.loss_weight = loss_weight

    def forward(self, outputs: SimCCLogits | tuple[Tensor, Tensor], targets: Mapping[str, Tensor]) -> Tensor:
        if isinstance(outputs, SimCCLogits):
            outputs = (outputs.simcc_x, outputs.simcc_y)
        if not isinstance(outputs, (tuple, list)) or len(outputs) != 2:
            raise PoseforgeError("kl_discret: expected SimCCLogits (or x_logits, y_logits)")
        n, k = outputs[0].shape[:2]
        weight = targets["target_weights"].reshape(-1) if self.use_target_weight else 1.0
        total = outputs[0].new_zeros((), dtype=torch.float32)
        for logits, labels in zip(outputs, (targets["x_labels"], targets["y_labels"])):
            logits = logits.float().reshape(n * k, -1)
            labels = labels.reshape(n * k, -1)
            log_p = F.log_softmax(logits * self.beta, dim=1)
            if self.label_softmax:
                labels = F.softmax(labels * self.label_beta, dim=1)
            kl = F.kl_div(log_p, labels, reduction="none").mean(dim=1)
            total = total + (kl * weight).sum()
        return total / k * self.loss_weight


class KeypointMapAuxLoss(nn.Module):
    """A SimCC loss plus dense supervision of the head's keypoint maps.

    ``main(outputs) + weight x`` the KL divergence from a Gaussian at each keypoint (``sigma`` input
    pixels) to the softmax of its map (``outputs.keypoint_maps [B,K,h,w]``) over all ``h x w`` cells,
    averaged over the batch's keypoints by target weight. The maps of a SimCC head are otherwise free
    to take any shape the classifiers can read; tying them to the keypoint's position gives every cell
    of the backbone's features a direct training signal. ``last_parts`` holds the last weighted map
    term, which the trainer logs next to the total. ``targets`` must hold the crop ``keypoints``.
    """

    def __init__(self, main: nn.Module, input_size: tuple[int, int], weight: float, sigma: float) -> None:
        super().__init__()
        if not weight > 0 or not sigma > 0:
            raise PoseforgeError(f"keypoint map loss: weight and sigma must be > 0, got {weight} and {sigma}")
        self.main, self.input_size, self.weight, self.sigma = main, tuple(input_size), float(weight), float(sigma)

    def forward(self, outputs: SimCCLogits, targets: Mapping[str, Tensor]) -> Tensor:
        if not isinstance(outputs, SimCCLogits) or outputs.keypoint_maps is None:
            raise PoseforgeError("keypoint map loss: expected SimCCLogits with keypoint_maps [B,K,h,w] (a SimCC head)")
        maps = outputs.keypoint_maps.float()
        n, k, h, w = maps.shape
        if "keypoints" not in targets:
            raise PoseforgeError("keypoint map loss: the targets carry no 'keypoints'")
        stride = torch.tensor([self.input_size[0] / w, self.input_size[1] / h], device=maps.device)
        centers = (targets["keypoints"].to(maps.device, torch.float32) + 0.5) / stride - 0.5  # [B,K,2] in cells
        ys = torch.arange(h, device=maps.device, dtype=torch.float32)
        xs = torch.arange(w, device=maps.device, dtype=torch.float32)
        sigma_cells = self.sigma / stride  # [2]
        gx = -((xs - centers[..., :1]) / sigma_cells[0]) ** 2 / 2  # [B,K,w]
        gy = -((ys - centers[..., 1:]) / sigma_cells[1]) ** 2 / 2  # [B,K,h]
        target = torch.softmax((gy[..., :, None] + gx[..., None, :]).reshape(n, k, h * w), dim=-1)
        log_p = F.log_softmax(maps.reshape(n, k, h * w), dim=-1)
        kl = F.kl_div(log_p, target, reduction="none").sum(-1)  # [B,K] nats
        weight = targets["target_weights"].to(kl.dtype)
        aux = self.weight * (kl * weight).sum() / weight.sum().clamp_min(1.0)
        self.last_parts = {"keypoint_map": aux.detach()}
        return self.main(outputs, targets) + aux


class TaskBalancedHeatmapLoss(nn.Module):
    """Heatmap MSE of padded multi-task outputs, each sample averaged over its own task's keypoints.

    ``mean_b( sum_{k < K_b} w_bk * mean_hw((out - target)^2) / K_b )`` with ``w`` the target weights
    (1 when the base loss does not use them): the official ViTPose++ loss (the sum over heads of each
    head's masked MSE over the whole batch). ``targets`` must hold ``dataset_index``.
    """

    def __init__(self, keypoints_per_task: Tensor, use_target_weight: bool = True, loss_weight: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("keypoints_per_task", torch.as_tensor(keypoints_per_task, dtype=torch.float32), persistent=False)
        self.use_target_weight = use_target_weight
        self.loss_weight = loss_weight

    def forward(self, outputs: Heatmaps | Tensor, targets: Mapping[str, Tensor]) -> Tensor:
        outputs = outputs.heatmaps if isinstance(outputs, Heatmaps) else outputs
        heatmaps = targets["heatmaps"]
        if outputs.shape != heatmaps.shape:
            raise PoseforgeError(f"task-balanced loss: outputs {list(outputs.shape)} and targets {list(heatmaps.shape)} differ")
        k = self.keypoints_per_task.to(outputs.device)[targets["dataset_index"].to(outputs.device)]  # [B]
        channels = torch.arange(outputs.shape[1], device=outputs.device)
        weight = (channels[None, :] < k[:, None]).float()
        if self.use_target_weight:
            weight = weight * targets["target_weights"]
        error = (outputs.float() - heatmaps).square().mean(dim=(2, 3))  # [B, K]
        return ((error * weight).sum(1) / k).mean() * self.loss_weight


@LOSSES.register("dense")
class DenseLoss(nn.Module):
    """Losses of :class:`~poseforge.outputs.DenseMaps` at the target resolution (Sapiens' recipes):

    * segmentation: cross-entropy over labeled pixels, optionally class-weighted (``class_weights``);
    * depth: scale-invariant log loss (Eigen et al.) ``mean(d^2) - lambda mean(d)^2``, ``d = log p - log g``
      on pixels with depth, per image;
    * normals: ``L1 + (1 - cos)`` on pixels with a normal.

    Terms are weighted (``seg_weight`` ...) and summed; ``last_parts`` holds each. Outputs are brought to
    the target size bilinearly first.
    """

    def __init__(self, seg_weight: float = 1.0, depth_weight: float = 1.0, normal_weight: float = 1.0,
                 ignore_index: int = 255, class_weights: Tensor | None = None, si_lambda: float = 0.5,
                 loss_weight: float = 1.0) -> None:
        super().__init__()
        self.seg_weight, self.depth_weight, self.normal_weight = seg_weight, depth_weight, normal_weight
        self.ignore_index, self.si_lambda, self.loss_weight = int(ignore_index), float(si_lambda), float(loss_weight)
        self.class_weights = class_weights

    def forward(self, outputs: DenseMaps, targets: Mapping[str, Tensor]) -> Tensor:
        if not isinstance(outputs, DenseMaps):
            raise PoseforgeError(f"dense loss: expected DenseMaps, got {type(outputs).__name__}")
        size = next(t.shape[-2:] for k, t in targets.items() if k in ("seg", "depth", "normals"))
        up = outputs.map(lambda t: t if t.shape[-2:] == size else
                         F.interpolate(t.float(), size=tuple(size), mode="bilinear", align_corners=False))
        zero = next(iter(up.tensors().values())).new_zeros((), dtype=torch.float32)
        parts: dict[str, Tensor] = {}
        if "seg" in targets:
            weight = self.class_weights.to(up.seg.device) if self.class_weights is not None else None
            if weight is not None and weight.numel() != up.seg.shape[1]:
                raise PoseforgeError(f"dense loss: {weight.numel()} class_weights for {up.seg.shape[1]} segmentation classes")
            parts["seg"] = self.seg_weight * F.cross_entropy(up.seg.float(), targets["seg"], weight=weight,
                                                             ignore_index=self.ignore_index)
        if "depth" in targets:
            valid = targets["depth_valid"].float()
            d = (torch.log(up.depth.float().clamp(min=1e-3)) - torch.log(targets["depth"].clamp(min=1e-3))) * valid
            count = valid.sum(dim=(1, 2, 3)).clamp(min=1.0)
            mean, mean_sq = d.sum(dim=(1, 2, 3)) / count, (d * d).sum(dim=(1, 2, 3)) / count
            parts["depth"] = self.depth_weight * (mean_sq - self.si_lambda * mean * mean).mean()
        if "normals" in targets:
            valid = targets["normals_valid"].float()
            p = F.normalize(up.normals.float(), dim=1)
            g = targets["normals"]
            per_pixel = (p - g).abs().sum(1, keepdim=True) + (1 - (p * g).sum(1, keepdim=True))
            parts["normals"] = self.normal_weight * (per_pixel * valid).sum() / valid.sum().clamp(min=1.0)
        self.last_parts = {k: v.detach() for k, v in parts.items()}
        return (sum(parts.values(), zero)) * self.loss_weight


def tag_pull_push(tags: Tensor, keypoint_indices: Tensor, keypoint_weights: Tensor) -> tuple[Tensor, Tensor]:
    """Associative-embedding pull and push terms (Newell et al.; HigherHRNet / LitePose ``AELoss('exp')``),
    batched over images and people with segment means (no loop over people).

    Each person's reference tag is the mean of its labeled keypoints' tags. Pull: the mean squared deviation
    of a person's keypoint tags from its reference (over keypoints and tag dimensions), averaged over the
    image's people. Push: ``0.5 * mean over ordered pairs of people i != j of exp(-|ref_i - ref_j|^2)``
    (0 with fewer than two people). Both are averaged over the images of the batch.

    Args:
        tags: ``[B, L*K, H, W]`` predicted tag maps (channel ``l*K + k``).
        keypoint_indices: ``[B, N, K]`` long, each keypoint's cell ``y * W + x``.
        keypoint_weights: ``[B, N, K]``, > 0 where the keypoint is labeled (its tag counts).

    Returns:
        ``(pull, push)`` scalars.
    """
    b, n, k = keypoint_indices.shape
    if tags.ndim != 4 or tags.shape[0] != b or k == 0 or tags.shape[1] % k:
        raise PoseforgeError(f"tag loss: tags must be [B, L*K, H, W] for {b} images and {k} keypoints, got {list(tags.shape)}")
    dims, hw = tags.shape[1] // k, tags.shape[2] * tags.shape[3]
    flat = keypoint_indices.long() + torch.arange(k, device=tags.device) * hw  # index into the K*HW maps
    picked = tags.float().reshape(b, dims, k * hw).gather(2, flat.reshape(b, 1, n * k).expand(b, dims, n * k))
    picked = picked.reshape(b, dims, n, k)
    w = (keypoint_weights > 0).to(picked.dtype)  # [B, N, K]
    count = w.sum(-1)  # [B, N]
    person = count > 0
    people = person.sum(-1).to(picked.dtype)  # [B]
    ref = (picked * w[:, None]).sum(-1) / count.clamp(min=1)[:, None]  # [B, L, N] segment means
    pull_person = ((picked - ref[..., None]).square() * w[:, None]).sum((1, 3)) / (count.clamp(min=1) * dims)
    pull = (pull_person * person).sum(-1) / people.clamp(min=1)
    d2 = (ref[:, :, :, None] - ref[:, :, None, :]).square().sum(1)  # [B, N, N]
    pairs = person[:, :, None] & person[:, None, :] & ~torch.eye(n, dtype=torch.bool, device=tags.device)
    push = 0.5 * (torch.exp(-d2) * pairs).sum((1, 2)) / (people * (people - 1)).clamp(min=1)
    return pull.mean(), push.mean()


@LOSSES.register("associative-embedding")
class AssociativeEmbeddingLoss(nn.Module):
    """Bottom-up loss of the ``associative-embedding`` codec (HigherHRNet / LitePose ``MultiLossFactory``).

    ``loss_weight x (heatmaps + heatmaps_hr + pull_weight x pull + push_weight x push)``: the heatmap terms
    are ``mean((output - target)^2 x mask)`` over ``B x K x H x W`` at each resolution the codec encodes
    (``mask`` 0 in ignored regions when the batch carried one), pull / push from :func:`tag_pull_push` on the
    1/4-scale tags. ``last_parts`` holds each weighted term.
    """

    def __init__(self, config: LossConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        config = dataclasses.replace(config or LossConfig(), **overrides)
        self.pull_weight, self.push_weight = float(config.pull_weight), float(config.push_weight)
        self.loss_weight = float(config.loss_weight)

    def forward(self, outputs: HeatmapsTags, targets: Mapping[str, Tensor]) -> Tensor:
        if not isinstance(outputs, HeatmapsTags):
            raise PoseforgeError(f"associative-embedding loss: expected HeatmapsTags, got {type(outputs).__name__}")
        parts = {"heatmaps": self._heatmap_term(outputs.heatmaps, targets, "")}
        hr = getattr(outputs, "heatmaps_hr", None)
        if "heatmaps_hr" in targets:
            if hr is None:
                raise PoseforgeError("associative-embedding loss: the codec encodes heatmaps_hr but the head gives none")
            parts["heatmaps_hr"] = self._heatmap_term(hr, targets, "_hr")
        elif hr is not None:
            raise PoseforgeError("associative-embedding loss: the head gives heatmaps_hr but the codec has hr_heatmaps off")
        pull, push = tag_pull_push(outputs.tags, targets["keypoint_indices"], targets["keypoint_weights"])
        parts["pull"], parts["push"] = self.pull_weight * pull, self.push_weight * push
        self.last_parts = {k: v.detach() for k, v in parts.items()}
        return sum(parts.values()) * self.loss_weight

    @staticmethod
    def _heatmap_term(output: Tensor, targets: Mapping[str, Tensor], suffix: str) -> Tensor:
        target = targets["heatmaps" + suffix]
        if output.shape != target.shape:
            raise PoseforgeError(f"associative-embedding loss: heatmaps{suffix} {list(output.shape)} and their targets "
                                 f"{list(target.shape)} differ")
        error = (output.float() - target).square()
        mask = targets.get("heatmap_mask" + suffix)
        if mask is not None:
            error = error * mask[:, None]
        return error.mean()


def build_loss(codec_name: str, config: LossConfig | None = None, **extra: Any) -> nn.Module:
    """The loss ``config.name`` names, or for ``"auto"`` the one the codec ``codec_name`` trains with."""
    config = config or LossConfig()
    name = config.name
    if name == "auto":  # the codec's mapped loss, else a loss registered under the codec's own name
        name = CODEC_LOSSES.get(codec_name, codec_name)
        if name not in LOSSES:
            raise PoseforgeError(f"no default loss for codec '{codec_name}'; set loss.name to one of {', '.join(LOSSES.names())}")
    cls = LOSSES.get(name)
    if cls is KLDiscretLoss:
        return KLDiscretLoss(config.beta, config.label_softmax, config.label_beta, config.use_target_weight, config.loss_weight)
    if cls is DenseLoss:
        weights = torch.tensor(config.class_weights, dtype=torch.float32) if config.class_weights else None
        return DenseLoss(config.seg_weight, config.depth_weight, config.normal_weight, loss_weight=config.loss_weight,
                         class_weights=weights, **extra)
    if cls is KeypointMSELoss:
        return KeypointMSELoss(use_target_weight=config.use_target_weight, loss_weight=config.loss_weight)
    return cls(config, **extra)  # a registered family loss takes the config
