"""Bottom-up estimators: a whole image in, every person in it out, no detector (LitePose, HigherHRNet,
associative embedding).

The image is fitted into the input size (:class:`~poseforge.data.image_transform.ImageTransform`),
the head predicts every person's keypoints at once (e.g. :class:`~poseforge.outputs.HeatmapsTags`) and
the codec groups them into people (``decode_predictions``); the estimator maps the people back to the
image. Scored with COCO OKS AP, instances ranked by their mean keypoint score and kept without
OKS-NMS (mmpose's associative-embedding evaluation).
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Mapping

import torch

from ...data.augment import AugmentConfig
from ...data.image_transform import ImageTransform
from ...data.transforms import affine_points, crop_batch, invert_affine
from ...errors import PoseforgeError
from ...keypoints import KeypointSet, get_keypoint_set
from ...outputs import HeadOutput, Predictions
from ...registry import BACKBONES, ESTIMATORS, HEADS, MODEL_CONFIGS
from ..config import IMAGENET_MEAN, IMAGENET_STD, BackboneConfig, HeadConfig, ModelConfig
from .base import Estimator, Stage, stack_images

if TYPE_CHECKING:  # evaluation code loads when a model is scored, not to predict
    from ...evaluation.metrics import CocoKeypointMetric

__all__ = ["BottomUpConfig", "BottomUpEstimator", "keypoint_boxes"]


@dataclasses.dataclass(frozen=True)
class BottomUpConfig(ModelConfig):
    """A bottom-up multi-person model: a whole image in, every person's keypoints out.

    Attributes:
        backbone, head: part configs (their ``type`` picks the class).
        codec: ``poseforge.codecs.create_codec`` keyword arguments (the grouping codec), with ``"name"``.
        name: zoo name (informational).
        keypoint_set: the people's keypoint set.
        input_size: model input ``(width, height)``; images are fitted into it.
        mean, std: RGB normalization on the 0-255 scale.
        flip_test: default of ``predict(flip_test=None)``.
    """

    backbone: BackboneConfig
    head: HeadConfig
    codec: dict = dataclasses.field(default_factory=dict, hash=False)
    name: str = "custom"
    keypoint_set: str = "coco17"
    input_size: tuple[int, int] = (512, 512)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    flip_test: bool = True
    type: str = "bottomup"

    def __post_init__(self) -> None:
        if min(self.input_size) <= 0:
            raise PoseforgeError(f"BottomUpConfig.input_size: expected positive (width, height), got {self.input_size}")
        get_keypoint_set(self.keypoint_set)


MODEL_CONFIGS.register("bottomup", BottomUpConfig)


def keypoint_boxes(keypoints: torch.Tensor, scores: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """xyxy boxes ``[..., 4]`` around each instance's keypoints scoring above ``threshold`` (all when none do)."""
    use = (scores > threshold)[..., None]
    use = torch.where(use.any(-2, keepdim=True), use, torch.ones_like(use))
    big = torch.finfo(keypoints.dtype).max
    lo = torch.where(use, keypoints, torch.full_like(keypoints, big)).amin(-2)
    hi = torch.where(use, keypoints, torch.full_like(keypoints, -big)).amax(-2)
    return torch.cat([lo, hi], -1)


@ESTIMATORS.register("bottomup")
class BottomUpEstimator(Estimator):
    """Bottom-up pose model: ``backbone -> head``, people grouped by ``codec``."""

    config_class = BottomUpConfig
    kind = "bottomup"
    needs_boxes = False

    def __init__(self, config: BottomUpConfig) -> None:
        super().__init__(config)
        self.keypoint_set: KeypointSet = get_keypoint_set(config.keypoint_set)
        self.backbone = BACKBONES.get(config.backbone.type)(config.backbone, input_size=config.input_size)
        self.head = HEADS.get(config.head.type)(config.head, feature_info=self.backbone.feature_info,
                                                num_outputs=self.keypoint_set.num_keypoints, input_size=config.input_size)

    def _init_buffers(self, device: torch.device | str | None = None) -> None:
        super()._init_buffers(device)
        ks = get_keypoint_set(self.config.keypoint_set)
        self.register_buffer("flip_index", torch.as_tensor(ks.flip_index, dtype=torch.long, device=device), persistent=False)

    def keypoint_set_of(self, task: "int | str | None" = 0) -> KeypointSet:
        self.task_index(task)
        return self.keypoint_set

    def flip_index_of(self, task: int = 0) -> torch.Tensor:
        return self.flip_index

    def forward(self, images: torch.Tensor, task: Any = None) -> HeadOutput:
        return self.head(self.backbone(images.to(self.dtype)))

    def transform(self, train: bool, augment: "bool | AugmentConfig | None" = None,
                  task: "int | str | None" = 0) -> ImageTransform:
        """Whole images with all their people (augmented for training)."""
        return ImageTransform(self.input_size, self.keypoint_set_of(task),
                              augment=(augment if augment is not None else True) if train else False)

    def loss(self, outputs: HeadOutput, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """The codec's targets of every person in the batch's images and the loss on them."""
        return self._loss_terms(outputs, self.codec.encode(batch))

    def _to_image(self, pred: Predictions, matrix: torch.Tensor) -> Predictions:
        """Input-pixel predictions mapped to image pixels with each image's inverse ``matrix [B, 2, 3]``."""
        back = invert_affine(matrix.double())
        keypoints = affine_points(pred.keypoints.double(), back[:, None]).to(pred.keypoints.dtype)
        boxes = keypoint_boxes(keypoints, pred.scores)
        area = (boxes[..., 2:] - boxes[..., :2]).clamp(min=0).prod(-1)
        return Predictions(keypoints, pred.scores, pred.valid, instance_scores=pred.instance_scores,
                           boxes=boxes.float(), areas=area.double(), task=pred.task)

    @torch.no_grad()
    def predict(self, images: Any, boxes: Any = None, *, flip_test: bool | None = None, task: "int | str | None" = 0,
                batch_size: int | None = None, on_stage: Stage = None) -> Predictions:
        """Every person in uint8 / 0-255 RGB images (``[B,3,H,W]`` or a list of ``[3,H,W]``), in image pixels."""
        if boxes is not None:
            raise PoseforgeError(f"{self.config.name} is a bottom-up model: it finds every person itself; pass no boxes")
        device = self.pixel_mean.device
        frames = stack_images(images, device)
        transform = self.transform(False, task=task)
        matrices = torch.stack([transform.matrix(int(f.shape[-1]), int(f.shape[-2]))[0] for f in frames]).to(device)
        inputs = torch.cat([crop_batch(f, m[None], self.input_size) for f, m in zip(frames, matrices)])
        if on_stage is not None:
            on_stage("crop")
        step = batch_size or len(inputs)
        parts = []
        for s in range(0, len(inputs), step):
            outputs = self.check_finite(self.infer(self.normalize(inputs[s:s + step]), flip_test, task))
            if on_stage is not None:
                on_stage("model")
            parts.append(self._to_image(self.codec.decode_predictions(outputs), matrices[s:s + step]))
            if on_stage is not None:
                on_stage("decode")
        return _concat(parts)

    @torch.no_grad()
    def predict_batch(self, batch: Mapping[str, Any], *, flip_test: bool | None = None,
                      task: "int | str | None" = 0) -> Predictions:
        outputs = self.infer(self.normalize(batch["image"]), flip_test, task)
        return self._to_image(self.codec.decode_predictions(outputs), batch["matrix"])

    def metric(self, eval_set: Any, task: "int | str | None" = 0, **options: Any) -> CocoKeypointMetric:
        """COCO OKS AP/AR, instances ranked by their mean keypoint score, no OKS-NMS (mmpose's AE metric)."""
        from ...evaluation.metrics import CocoKeypointMetric

        ks = self.keypoint_set_of(task)
        if ks.name != eval_set.gt.keypoint_set.name:
            raise PoseforgeError(f"{self.config.name} predicts {ks.name} keypoints but {eval_set.name} is labeled "
                                 f"with {eval_set.gt.keypoint_set.name}")
        return CocoKeypointMetric(eval_set.gt, **{"score_mode": "keypoint", "nms_thr": None, **options})


def _concat(parts: list[Predictions]) -> Predictions:
    """Predictions of several chunks as one (padded to the largest instance count)."""
    if len(parts) == 1:
        return parts[0]
    n = max(p.num_instances for p in parts)

    def pad(t: torch.Tensor | None, value: float = 0.0) -> torch.Tensor | None:
        if t is None:
            return None
        shape = list(t.shape)
        shape[1] = n - t.shape[1]
        return torch.cat([t, t.new_full(shape, value)], 1)

    fields = ("keypoints", "scores", "valid", "instance_scores", "boxes", "areas")
    merged = {f: [pad(getattr(p, f)) for p in parts] for f in fields}
    return Predictions(**{f: (torch.cat(v) if v[0] is not None else None) for f, v in merged.items()}, task=parts[0].task)
