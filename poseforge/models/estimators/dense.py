"""Dense estimators: a whole image in, per-pixel maps out (Sapiens' body-part segmentation, relative
depth and surface normals).

The image is fitted into the input size (:class:`~poseforge.data.image_transform.ImageTransform`,
labels warped with it), the head predicts :class:`~poseforge.outputs.DenseMaps` and the ``dense`` codec
decodes them (class probabilities, depth, unit normals at the input resolution). ``predict`` maps them
back onto the image; evaluation compares them with the warped labels at the input resolution.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Mapping

import torch

from ...data.augment import AugmentConfig
from ...data.image_transform import ImageTransform
from ...data.transforms import crop_batch, invert_affine
from ...errors import PoseforgeError
from ...outputs import DenseMaps, HeadOutput, Predictions
from ...registry import BACKBONES, ESTIMATORS, HEADS, MODEL_CONFIGS
from ..config import IMAGENET_MEAN, IMAGENET_STD, BackboneConfig, HeadConfig, ModelConfig
from .base import Estimator, Stage, stack_images

if TYPE_CHECKING:  # evaluation code loads when a model is scored, not to predict
    from ...evaluation.metrics import DenseMetric

__all__ = ["DenseConfig", "DenseEstimator"]


@dataclasses.dataclass(frozen=True)
class DenseConfig(ModelConfig):
    """A dense model: a whole image in, segmentation / depth / normal maps out.

    Attributes:
        backbone, head: part configs (the head's outputs follow ``codec``: classes, depth, normals).
        codec: ``dense`` codec arguments (``num_classes``, ``depth``, ``normals``; ``input_size`` is synced).
        classes: segmentation class names (``Left_*`` / ``Right_*`` pairs swap in the flip test and flip
            augmentation); empty: no names, no swapping.
        name, input_size, mean, std, flip_test: as the other model configs.
    """

    backbone: BackboneConfig
    head: HeadConfig
    codec: dict = dataclasses.field(default_factory=dict, hash=False)
    classes: tuple[str, ...] = ()
    name: str = "custom"
    input_size: tuple[int, int] = (192, 256)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    flip_test: bool = False
    type: str = "dense"

    def __post_init__(self) -> None:
        if min(self.input_size) <= 0:
            raise PoseforgeError(f"DenseConfig.input_size: expected positive (width, height), got {self.input_size}")
        classes = int(self.codec.get("num_classes", 0))
        head_tasks = getattr(self.head, "tasks", None)
        codec_tasks = tuple(t for t, on in (("seg", classes > 0), ("depth", self.codec.get("depth")),
                                            ("normals", self.codec.get("normals"))) if on)
        if head_tasks is not None and self.codec and tuple(head_tasks) != codec_tasks:
            raise PoseforgeError(f"DenseConfig: the head predicts {list(head_tasks)} but the codec decodes {list(codec_tasks)}")
        if self.classes and classes and len(self.classes) != classes:
            raise PoseforgeError(f"DenseConfig.classes: {len(self.classes)} names for {classes} segmentation classes")


MODEL_CONFIGS.register("dense", DenseConfig)


@ESTIMATORS.register("dense")
class DenseEstimator(Estimator):
    """Dense model: ``backbone -> head`` giving :class:`~poseforge.outputs.DenseMaps`, decoded by the ``dense`` codec."""

    config_class = DenseConfig
    kind = "dense"
    needs_boxes = False

    def __init__(self, config: DenseConfig) -> None:
        super().__init__(config)
        self.backbone = BACKBONES.get(config.backbone.type)(config.backbone, input_size=config.input_size)
        self.head = HEADS.get(config.head.type)(config.head, feature_info=self.backbone.feature_info,
                                                num_outputs=int(config.codec.get("num_classes", 0)),
                                                input_size=config.input_size)

    def _init_buffers(self, device: torch.device | str | None = None) -> None:
        super()._init_buffers(device)
        from ...data.synth.classes import part_flip_index  # (the synth package imports its whole renderer)

        flip = part_flip_index(self.config.classes) if self.config.classes else ()
        self.register_buffer("seg_flip_index", torch.as_tensor(flip, dtype=torch.long, device=device), persistent=False)

    def flip_index_of(self, task: int = 0) -> torch.Tensor | None:
        return self.seg_flip_index if self.seg_flip_index.numel() else None

    def forward(self, images: torch.Tensor, task: Any = None) -> HeadOutput:
        return self.head(self.backbone(images.to(self.dtype)))

    def transform(self, train: bool, augment: "bool | AugmentConfig | None" = None,
                  task: "int | str | None" = 0) -> ImageTransform:
        """Whole images with the labels the codec predicts (augmented for training)."""
        from ...data.synth.classes import part_flip_index

        self.task_index(task)
        flip = self.config.classes and part_flip_index(self.config.classes)
        return ImageTransform(self.input_size, None, augment=(augment if augment is not None else True) if train else False,
                              dense=self.codec.tasks, seg_flip_index=flip or None, ignore_index=self.codec.ignore_index)

    def loss(self, outputs: HeadOutput, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        return self._loss_terms(outputs, self.codec.encode(batch))

    @torch.no_grad()
    def predict(self, images: Any, boxes: Any = None, *, flip_test: bool | None = None, task: "int | str | None" = 0,
                batch_size: int | None = None, on_stage: Stage = None) -> Predictions:
        """Dense maps of uint8 / 0-255 RGB images (``[B,3,H,W]`` or a list of same-size ``[3,H,W]``) at the
        images' resolution: ``dense.seg`` class probabilities, ``dense.depth``, ``dense.normals``."""
        if boxes is not None:
            raise PoseforgeError(f"{self.config.name} is a dense model: it takes whole images; pass no boxes")
        device = self.pixel_mean.device
        frames = stack_images(images, device)
        sizes = {tuple(f.shape[-2:]) for f in frames}
        if len(sizes) > 1:
            raise PoseforgeError(f"dense predict: images of one call must share a size, got {sorted(sizes)}")
        height, width = sizes.pop()
        transform = self.transform(False, task=task)
        matrix = transform.matrix(width, height)[0].to(device)
        inputs = torch.cat([crop_batch(f, matrix[None], self.input_size) for f in frames])
        if on_stage is not None:
            on_stage("crop")
        step = batch_size or len(inputs)
        maps = []
        for s in range(0, len(inputs), step):
            pred = self.codec.decode_predictions(self.check_finite(self.infer(self.normalize(inputs[s:s + step]),
                                                                              flip_test, task)))
            if on_stage is not None:
                on_stage("model")
            back = invert_affine(matrix.double())[None].expand(len(pred), 2, 3)
            maps.append(pred.dense.map(lambda t: crop_batch(t.float(), back, (width, height))))
            if on_stage is not None:
                on_stage("decode")
        dense = DenseMaps(**{k: torch.cat([getattr(m, k) for m in maps]) if getattr(maps[0], k) is not None else None
                             for k in ("seg", "depth", "normals")})
        if dense.normals is not None:
            dense = DenseMaps(dense.seg, dense.depth, torch.nn.functional.normalize(dense.normals, dim=1))
        empty = torch.zeros(len(frames), 0, 0, 2, device=device)
        return Predictions(empty, empty[..., 0], torch.zeros(len(frames), 0, dtype=torch.bool, device=device), dense=dense)

    @torch.no_grad()
    def predict_batch(self, batch: Mapping[str, Any], *, flip_test: bool | None = None,
                      task: "int | str | None" = 0) -> Predictions:
        """Dense maps of an evaluation batch at the input resolution (where its labels are)."""
        return self.codec.decode_predictions(self.infer(self.normalize(batch["image"]), flip_test, task))

    def metric(self, eval_set: Any, task: "int | str | None" = 0, **options: Any) -> DenseMetric:
        from ...evaluation.metrics import DenseMetric

        if getattr(eval_set, "load_dense", None) is None:
            raise PoseforgeError(f"{eval_set.name}: no dense labels to score {self.config.name} against")
        codec = self.codec
        return DenseMetric(codec.tasks, codec.num_classes, codec.ignore_index)
