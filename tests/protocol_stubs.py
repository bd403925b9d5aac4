"""Two tiny stub families, in tests only, that prove the estimator protocol before the real ones arrive:

* ``stub-bottomup``: a small CNN backbone, a head giving :class:`HeatmapsTags` and a naive
  associative-embedding codec (every person's keypoints in one heatmap per keypoint type; the tag at
  a keypoint is the person's index in its image, so decoding groups a peak into person ``round(tag)``);
* ``stub-dense``: the same backbone and a head giving :class:`DenseMaps` (28 part classes + depth),
  decoded by poseforge's ``dense`` codec and trained with its ``dense`` loss.

Each registers only parts (backbone, heads, a codec and its loss, zoo entries): no trainer, evaluator
or predictor code knows about them.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from poseforge.codecs.base import Codec, check_flip_index, check_size
from poseforge.data.synth import SAPIENS_PART_CLASSES
from poseforge.models.config import BackboneConfig, FeatureInfo, HeadConfig
from poseforge.models.estimators import BottomUpConfig, DenseConfig
from poseforge.outputs import DenseMaps, HeatmapsTags, Predictions
from poseforge.registry import BACKBONES, CODECS, HEADS, LOSSES, MODELS

INPUT = (96, 128)


@dataclasses.dataclass(frozen=True)
class StubCNNConfig(BackboneConfig):
    width: int = 16
    type: str = "stub-cnn"


@BACKBONES.register("stub-cnn")
class StubCNN(nn.Module):
    """Three stride-2 conv layers: maps at strides 4 and 8."""

    config_class = StubCNNConfig

    def __init__(self, config: StubCNNConfig, input_size: tuple[int, int] = INPUT) -> None:
        super().__init__()
        c = config.width
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, 2, 1), nn.BatchNorm2d(c), nn.ReLU(),
                                  nn.Conv2d(c, c, 3, 2, 1), nn.BatchNorm2d(c), nn.ReLU())
        self.down = nn.Sequential(nn.Conv2d(c, 2 * c, 3, 2, 1), nn.BatchNorm2d(2 * c), nn.ReLU())
        w, h = input_size
        self.feature_info = [FeatureInfo(c, 4, (math.ceil(w / 4), math.ceil(h / 4))),
                             FeatureInfo(2 * c, 8, (math.ceil(w / 8), math.ceil(h / 8)))]

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        fine = self.stem(images)
        return [fine, self.down(fine)]


@dataclasses.dataclass(frozen=True)
class StubHeadConfig(HeadConfig):
    outputs: str = "tags"  # "tags" (HeatmapsTags) or "dense" (DenseMaps: seg + depth)
    type: str = "stub-head"


@HEADS.register("stub-head")
class StubHead(nn.Module):
    """Fuses both levels at stride 4 (upsampled coarse + fine), then 1x1 convs to the outputs."""

    config_class = StubHeadConfig

    def __init__(self, config: StubHeadConfig, feature_info: Sequence[FeatureInfo], num_outputs: int,
                 input_size: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.config = config
        fine, coarse = feature_info
        self.fuse = nn.Conv2d(fine.channels + coarse.channels, 32, 3, padding=1)
        if config.outputs == "tags":
            self.heatmaps = nn.Conv2d(32, num_outputs, 1)
            self.tags = nn.Conv2d(32, num_outputs, 1)
        else:
            self.seg = nn.Conv2d(32, num_outputs, 1)
            self.depth = nn.Conv2d(32, 1, 1)

    def forward(self, features: Sequence[torch.Tensor]) -> Any:
        fine, coarse = features
        x = F.relu(self.fuse(torch.cat([fine, F.interpolate(coarse, size=fine.shape[-2:], mode="nearest")], 1)))
        if self.config.outputs == "tags":
            return HeatmapsTags(self.heatmaps(x), self.tags(x))
        return DenseMaps(seg=self.seg(x), depth=F.softplus(self.depth(x)) + 1e-3)


class StubAECodec(Codec):
    """Every person's keypoints as Gaussians in one map per keypoint type (stride ``stride``), tags = the
    person's index; decoding takes the top ``max_people`` peaks of each map and groups each into person
    ``round(tag)`` (the best peak per person and keypoint wins)."""

    name = "stub-ae"
    output_type = HeatmapsTags

    def __init__(self, input_size: Sequence[int], stride: int = 4, sigma: float = 1.5, max_people: int = 4) -> None:
        self.input_size = check_size(input_size, "input_size")
        self.stride, self.sigma, self.max_people = int(stride), float(sigma), int(max_people)
        self.size = (math.ceil(self.input_size[0] / stride), math.ceil(self.input_size[1] / stride))

    def encode_sample(self, sample: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        kp = sample["keypoints"].float()  # [B, N, K, 2]
        vis = (sample["visibility"] > 0) & sample["valid"][..., None]  # [B, N, K]
        b, n, k, _ = kp.shape
        w, h = self.size
        cells = (kp + 0.5) / self.stride - 0.5
        xs = torch.arange(w, device=kp.device, dtype=torch.float32)
        ys = torch.arange(h, device=kp.device, dtype=torch.float32)
        gx = torch.exp(-((xs - cells[..., :1]) ** 2) / (2 * self.sigma ** 2))  # [B, N, K, W]
        gy = torch.exp(-((ys - cells[..., 1:]) ** 2) / (2 * self.sigma ** 2))  # [B, N, K, H]
        maps = gy[..., :, None] * gx[..., None, :] * vis[..., None, None]
        heatmaps = maps.amax(1) if n else kp.new_zeros(b, k, h, w)
        ix = cells[..., 0].round().long().clamp(0, w - 1)
        iy = cells[..., 1].round().long().clamp(0, h - 1)
        index = (iy * w + ix).reshape(b, n * k) + (torch.arange(k, device=kp.device) * h * w).repeat(n)[None]
        person = torch.arange(n, device=kp.device, dtype=torch.float32)[None, :, None].expand(b, n, k).reshape(b, n * k)
        tags = kp.new_zeros(b, k * h * w).scatter(1, index, person * vis.reshape(b, n * k))
        mask = kp.new_zeros(b, k * h * w).scatter(1, index, vis.reshape(b, n * k).float())
        return {"heatmaps": heatmaps, "tags": tags.reshape(b, k, h, w), "tag_mask": mask.reshape(b, k, h, w)}

    def decode_predictions(self, outputs: HeatmapsTags) -> Predictions:
        heat, tags = outputs.heatmaps.float(), outputs.tags.float()
        b, k, h, w = heat.shape
        p = self.max_people
        peaks = heat * (F.max_pool2d(heat, 3, 1, 1) == heat)
        scores, index = peaks.reshape(b, k, h * w).topk(min(p, h * w), dim=-1)  # [B, K, M] candidates
        person = tags.reshape(b, k, h * w).gather(-1, index).round().long().clamp(0, p - 1)
        xy = torch.stack([(index % w).float(), (index // w).float()], -1) * self.stride + (self.stride - 1) / 2
        # Candidate -> slot (person, keypoint); per slot the best-scoring candidate wins (ties: the later one).
        slot = (person * k + torch.arange(k, device=heat.device)[None, :, None]).reshape(b, -1)
        cand = scores.reshape(b, -1)
        best = torch.full((b, p * k), -1.0, device=heat.device).scatter_reduce(1, slot, cand, "amax")
        ids = torch.arange(cand.shape[1], device=heat.device).expand(b, -1)
        winner = torch.full((b, p * k), -1, device=heat.device).scatter_reduce(
            1, slot, torch.where(cand == best.gather(1, slot), ids, -1), "amax")
        found = winner >= 0
        keypoints = xy.reshape(b, -1, 2).gather(1, winner.clamp(min=0)[..., None].expand(-1, -1, 2))
        keypoints = (keypoints * found[..., None]).reshape(b, p, k, 2)
        kp_scores = torch.where(found, best, torch.zeros_like(best)).reshape(b, p, k)
        valid = (kp_scores > 0.1).sum(-1) >= 2
        return Predictions(keypoints, kp_scores, valid, instance_scores=kp_scores.mean(-1))

    def flip_back(self, outputs: HeatmapsTags, flip_index: Any) -> HeatmapsTags:
        index = check_flip_index(flip_index, outputs.heatmaps.shape[1], outputs.heatmaps.device)
        return HeatmapsTags(outputs.heatmaps.flip(-1).index_select(1, index), outputs.tags.flip(-1).index_select(1, index))

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "input_size": list(self.input_size), "stride": self.stride, "sigma": self.sigma,
                "max_people": self.max_people}


CODECS.register("stub-ae", StubAECodec)


@LOSSES.register("stub-ae")
class StubAELoss(nn.Module):
    """Heatmap MSE plus the L1 distance of each labeled keypoint's tag to its person index."""

    def __init__(self, config: Any = None) -> None:
        super().__init__()

    def forward(self, outputs: HeatmapsTags, targets: Mapping[str, torch.Tensor]) -> torch.Tensor:
        heat = F.mse_loss(outputs.heatmaps.float(), targets["heatmaps"])
        mask = targets["tag_mask"]
        tags = ((outputs.tags.float() - targets["tags"]).abs() * mask).sum() / mask.sum().clamp(min=1)
        self.last_parts = {"heatmaps": heat.detach(), "tags": tags.detach()}
        return heat + 0.1 * tags


def bottomup_config() -> BottomUpConfig:
    return BottomUpConfig(backbone=StubCNNConfig(), head=StubHeadConfig("tags"), name="stub-bottomup",
                          codec={"name": "stub-ae", "input_size": list(INPUT)}, input_size=INPUT, flip_test=False)


def dense_config() -> DenseConfig:
    return DenseConfig(backbone=StubCNNConfig(), head=StubHeadConfig("dense"), name="stub-dense",
                       codec={"name": "dense", "input_size": list(INPUT), "num_classes": len(SAPIENS_PART_CLASSES),
                              "depth": True},
                       classes=SAPIENS_PART_CLASSES, input_size=INPUT)


if "stub-bottomup" not in MODELS:
    MODELS.register("stub-bottomup", bottomup_config)
    MODELS.register("stub-dense", dense_config)
