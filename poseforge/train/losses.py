"""Training losses, chosen from the model's codec so that every family trains with the same loop.

A loss is an ``nn.Module`` called as ``loss(outputs, targets) -> scalar``, where ``outputs`` is the raw
head output (a tensor or a tuple) and ``targets`` the dict ``model.codec.encode`` returns. Register a
new one in :data:`LOSSES` and map its codec in :data:`CODEC_LOSSES`.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import PoseforgeError
from ..registry import Registry
from .config import LossSection

__all__ = ["KeypointMSELoss", "KLDiscretLoss", "KeypointMapAuxLoss", "LOSSES", "CODEC_LOSSES", "build_loss"]

LOSSES: Registry[Any] = Registry("loss")
# codec name -> default loss name
CODEC_LOSSES: dict[str, str] = {"msra": "keypoint_mse", "dark": "keypoint_mse", "udp": "keypoint_mse",
                                "simcc": "kl_discret"}


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

    def forward(self, outputs: Tensor, targets: Mapping[str, Tensor]) -> Tensor:
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

    def forward(self, outputs: tuple[Tensor, Tensor], targets: Mapping[str, Tensor]) -> Tensor:
        if not isinstance(outputs, (tuple, list)) or len(outputs) != 2:
            raise PoseforgeError("kl_discret: expected outputs (x_logits, y_logits)")
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
    """A coordinate loss plus dense supervision of the head's keypoint maps.

    ``outputs = (*coordinate outputs, maps [B,K,h,w])`` (a SimCC head with ``return_maps``):
    ``main(coordinate outputs) + weight x`` the KL divergence from a Gaussian at each keypoint
    (``sigma`` input pixels) to the softmax of its map over all ``h x w`` cells, averaged over the
    batch's keypoints by target weight. The maps of a SimCC head are otherwise free to take any
    shape the classifiers can read; tying them to the keypoint's position gives every cell of the
    backbone's features a direct training signal. ``last_parts`` holds the last weighted map term,
    which the trainer logs next to the total.
    """

    def __init__(self, main: nn.Module, input_size: tuple[int, int], weight: float, sigma: float) -> None:
        super().__init__()
        if not weight > 0 or not sigma > 0:
            raise PoseforgeError(f"keypoint map loss: weight and sigma must be > 0, got {weight} and {sigma}")
        self.main, self.input_size, self.weight, self.sigma = main, tuple(input_size), float(weight), float(sigma)

    def forward(self, outputs: tuple[Tensor, ...], targets: Mapping[str, Tensor]) -> Tensor:
        if not isinstance(outputs, (tuple, list)) or len(outputs) < 2 or outputs[-1].dim() != 4:
            raise PoseforgeError("keypoint map loss: expected outputs (..., keypoint maps [B,K,h,w]); "
                                 "the head must return its maps (SimCCHead.return_maps)")
        maps = outputs[-1].float()
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
        return self.main(tuple(outputs[:-1]), targets) + aux


def build_loss(codec_name: str, config: LossSection | None = None) -> nn.Module:
    """The loss ``config.name`` names, or for ``"auto"`` the one the codec ``codec_name`` trains with."""
    config = config or LossSection()
    name = config.name
    if name == "auto":
        if codec_name not in CODEC_LOSSES:
            raise PoseforgeError(f"no default loss for codec '{codec_name}'; set loss.name to one of {', '.join(LOSSES.names())}")
        name = CODEC_LOSSES[codec_name]
    cls = LOSSES.get(name)
    if cls is KLDiscretLoss:
        return KLDiscretLoss(config.beta, config.label_softmax, config.label_beta, config.use_target_weight, config.loss_weight)
    return cls(use_target_weight=config.use_target_weight, loss_weight=config.loss_weight)
