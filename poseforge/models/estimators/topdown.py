"""Top-down estimators: person crops in, one keypoint set per task out (ViTPose, RTMPose-style SimCC
heads, and ViTPose++ as a multi-task head set on the same path).

A single-task model (:class:`~poseforge.models.config.TopDownConfig`) is ``backbone -> head``, or
``backbone -> neck -> head`` when its config names a neck (RTMW's PAFPN). A
multi-task model (:class:`~poseforge.models.config.MultiTaskTopDownConfig`, ViTPose++) has task
experts in the backbone and one head per task: ``model(images, task)`` takes the task of the whole
batch (an index or name) or one per sample (a tensor); per-sample tasks group the batch by task once
(each expert and head runs on its group) and give heatmaps zero-padded to the largest keypoint count,
trained with the task-balanced loss. Every other part of the protocol takes a ``task``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ...data.augment import AugmentConfig
from ...data.transforms import (TopDownTransform, bbox_xywh_to_center_scale, crop_batch, crop_to_image,
                                get_affine_matrix)
from ...errors import PoseforgeError
from ...keypoints import KeypointSet, get_keypoint_set
from ...outputs import HeadOutput, Predictions
from ...registry import BACKBONES, ESTIMATORS, HEADS, NECKS
from ..backbones.vit import ExpertSegments
from ..config import MultiTaskTopDownConfig, TopDownConfig
from ..heads.multitask import MultiTaskHeads
from ..losses import KeypointMapAuxLoss, LossConfig, TaskBalancedHeatmapLoss, build_loss
from .base import Estimator, Stage, stack_images

if TYPE_CHECKING:  # evaluation code loads when a model is scored, not to predict
    from ...evaluation.metrics import CocoKeypointMetric

__all__ = ["TopDownEstimator", "boxes_to_crops"]


def boxes_to_crops(boxes: torch.Tensor, input_size: tuple[int, int], use_udp: bool,
                   padding: float = 1.25) -> tuple[torch.Tensor, torch.Tensor]:
    """Image -> crop matrices ``[N, 2, 3]`` (float64 where the device has it) and crop box areas ``[N]`` of
    xyxy ``boxes [N, 4]`` (mmpose's box -> centre/scale with ``padding`` and the input's aspect ratio)."""
    work = torch.float32 if boxes.device.type == "mps" else torch.float64
    b = boxes.to(work)
    xywh = torch.cat([b[:, :2], b[:, 2:] - b[:, :2]], 1)
    w, h = input_size
    center, scale = bbox_xywh_to_center_scale(xywh, w / h, padding)
    return get_affine_matrix(center, scale, 0.0, (w, h), use_udp), scale.prod(-1)


@ESTIMATORS.register("topdown")
@ESTIMATORS.register("topdown-multitask")
class TopDownEstimator(Estimator):
    """Top-down pose model: ``backbone -> [neck ->] head`` (or a head per task), decoded by ``codec``.

    ``model(images, task=None)`` takes normalized float crops ``[B,3,h,w]`` and returns the head's named
    output. ``model.predict(crops)`` decodes uint8 / 0-255 RGB crops (crop pixels);
    ``model.predict(frames, boxes)`` crops every box of every frame and returns image pixels.
    """

    config_class = TopDownConfig
    kind = "topdown"
    needs_boxes = True

    def __init__(self, config: TopDownConfig | MultiTaskTopDownConfig) -> None:
        self.keypoint_sets: tuple[KeypointSet, ...] = tuple(get_keypoint_set(t.keypoint_set) for t in config.task_list())
        super().__init__(config)
        self.keypoint_set = self.keypoint_sets[0]  # the first (default) task's
        self.multitask = isinstance(config, MultiTaskTopDownConfig)
        self.backbone = BACKBONES.get(config.backbone.type)(config.backbone, input_size=config.input_size)
        info = self.backbone.feature_info
        neck = getattr(config, "neck", None)  # single-task configs only
        self.neck = (NECKS.get(neck.type)(neck, feature_info=info, input_size=config.input_size)
                     if neck is not None else None)
        if self.neck is not None:
            info = self.neck.feature_info  # the head reads the neck's maps
        if self.multitask:
            tasks = config.task_list()
            outputs = [next(self.keypoint_sets[i].num_keypoints for i in range(len(tasks)) if config.head_index(i) == h)
                       for h in range(len(config.heads))]
            self.heads = MultiTaskHeads(config.heads, info, outputs, config.input_size)
            self.output_size = self.heads.output_size
        else:
            self.head = HEADS.get(config.head.type)(config.head, feature_info=info,
                                                    num_outputs=self.keypoint_set.num_keypoints,
                                                    input_size=config.input_size)
            # (width, height) of spatial outputs (heatmaps); None for heads without a spatial output.
            self.output_size = getattr(self.head, "output_size", None)
        codec_heatmap = config.codec.get("heatmap_size")
        if codec_heatmap is not None and self.output_size is not None and tuple(codec_heatmap) != tuple(self.output_size):
            raise PoseforgeError(f"{config.name}: codec heatmap_size {tuple(codec_heatmap)} does not match the head "
                                 f"output {tuple(self.output_size)} for input {tuple(config.input_size)}")
        self.max_keypoints = max(ks.num_keypoints for ks in self.keypoint_sets)
        self._head_of = [config.head_index(i) for i in range(len(self.keypoint_sets))]
        self._expert_of = [config.expert_index(i) for i in range(len(self.keypoint_sets))]

    def _init_buffers(self, device: torch.device | str | None = None) -> None:
        super()._init_buffers(device)
        self.register_buffer("flip_index", torch.as_tensor(self.keypoint_sets[0].flip_index, dtype=torch.long, device=device),
                             persistent=False)
        # [tasks, largest keypoint count]: each task's keypoint-set joint weights, zero past its keypoints
        joint = torch.zeros(len(self.keypoint_sets), max(ks.num_keypoints for ks in self.keypoint_sets), device=device)
        for t, ks in enumerate(self.keypoint_sets):
            joint[t, :ks.num_keypoints] = torch.as_tensor(ks.joint_weights_array(), device=device)
        self.register_buffer("joint_weights", joint, persistent=False)

    # ----- tasks --------------------------------------------------------------------------------
    @property
    def task_names(self) -> tuple[str, ...]:
        return self.config.task_names

    def task_index(self, task: "int | str | None") -> int:
        return 0 if task is None else self.config.task_index(task)

    def keypoint_set_of(self, task: "int | str | None" = 0) -> KeypointSet:
        return self.keypoint_sets[self.task_index(task)]

    def num_keypoints_per_task(self) -> torch.Tensor:
        """``[T]`` keypoint counts (for per-task loss normalization of padded outputs)."""
        return torch.as_tensor([ks.num_keypoints for ks in self.keypoint_sets], dtype=torch.float32)

    @property
    def has_unused_parameters(self) -> bool:
        return self.multitask

    def flip_index_of(self, task: int = 0) -> torch.Tensor:
        if task == 0:
            return self.flip_index
        return torch.as_tensor(self.keypoint_sets[task].flip_index, dtype=torch.long, device=self.flip_index.device)

    # ----- forward ------------------------------------------------------------------------------
    def forward(self, images: torch.Tensor, task: "int | str | torch.Tensor | Sequence[int] | None" = None) -> HeadOutput:
        """The head output of normalized crops for one task (the whole batch's; ``None``: task 0) or per-sample
        tasks (a tensor: heatmaps ``[B, K_max, H, W]``, zero beyond each sample's keypoints)."""
        x = images.to(self.dtype)
        if not self.multitask:
            if task is not None and not isinstance(task, torch.Tensor):
                self.config.task_index(task)  # a wrong task is an error, not silently task 0
            features = self.backbone(x)
            return self.head(self.neck(features) if self.neck is not None else features)
        if isinstance(task, torch.Tensor) and task.ndim == 0:
            task = int(task)
        if task is None or isinstance(task, (int, str, np.integer)):
            t = self.config.task_index(0 if task is None else task)
            return self.heads[self._head_of[t]](self.backbone(x, self._expert_of[t]))
        segments = ExpertSegments.build(task, x.shape[0], len(self.keypoint_sets), "task")
        x = segments.sort(x)
        features = self.backbone(x, segments.relabel(self._expert_of))
        out = self.heads.forward_grouped(features, segments.relabel(self._head_of), self.max_keypoints)
        return out.map(segments.unsort)

    # ----- training -----------------------------------------------------------------------------
    def transform(self, train: bool, augment: "bool | AugmentConfig | None" = None,
                  task: "int | str | None" = 0) -> TopDownTransform:
        """Person crops of the task's keypoint set: augmented for training (boxes clipped to the image,
        as mmpose does for annotations; a multi-task model's keypoints zero-padded to its largest set),
        plain for evaluation and prediction."""
        return TopDownTransform(self.input_size, self.keypoint_set_of(task), use_udp=self.codec.udp_warp,
                                augment=(augment if augment is not None else True) if train else False, clip_bbox=train,
                                pad_keypoints=self.max_keypoints if train and self.multitask else 0)

    def build_criterion(self, config: LossConfig) -> nn.Module:
        if self.multitask:  # padded per-sample outputs: each sample averaged over its own task's keypoints
            return TaskBalancedHeatmapLoss(self.num_keypoints_per_task(), config.use_target_weight, config.loss_weight)
        loss = build_loss(self.codec.name, config)
        if config.keypoint_map_weight > 0:
            if getattr(self.config.head, "split_ratio", None) is None:
                raise PoseforgeError(f"loss.keypoint_map_weight needs a head with keypoint maps (simcc, rtmcc), "
                                     f"not {type(self.head).__name__}")
            loss = KeypointMapAuxLoss(loss, self.input_size, config.keypoint_map_weight, config.keypoint_map_sigma)
        return loss

    def loss(self, outputs: HeadOutput, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """The codec's targets of the batch's crop keypoints and the loss on them (``{"loss": total, ...}``)."""
        targets = self.codec.encode(batch)
        targets["keypoints"] = batch["keypoints"]
        if "dataset_index" in batch:
            targets["dataset_index"] = batch["dataset_index"]
        if self.loss_config.keypoint_weights:  # each sample's own task's joint weights
            weights = targets["target_weights"]
            tasks = batch["dataset_index"].to(weights.device).long() if self.multitask and "dataset_index" in batch else 0
            targets["target_weights"] = weights * self.joint_weights[tasks, :weights.shape[-1]]
        return self._loss_terms(outputs, targets)

    # ----- prediction ---------------------------------------------------------------------------
    def _decode(self, x: torch.Tensor, flip_test: bool | None, task: int) -> Predictions:
        return self.codec.decode_predictions(self.infer(x, flip_test, task))

    @torch.no_grad()
    def predict(self, images: Any, boxes: Any = None, *, flip_test: bool | None = None, task: "int | str | None" = 0,
                batch_size: int | None = None, on_stage: Stage = None) -> Predictions:
        """Keypoints of a task (``config.flip_test`` by default).

        * ``boxes=None``: ``images`` are uint8 / 0-255 RGB crops ``[B,3,h,w]`` of the input size; the
          predictions ``[B, 1, K, 2]`` are in crop pixels.
        * ``boxes``: ``images`` are frames (``[B,3,H,W]`` or a list of ``[3,H,W]``) and ``boxes`` one
          ``[N_i, 4]`` xyxy array per frame (or one array for a single frame); every box is cropped
          (padding 1.25, the input's aspect ratio, the UDP warp for UDP codecs), predicted in chunks of
          ``batch_size`` and mapped back: ``[B, max N_i, K, 2]`` image pixels, ``boxes``, crop ``areas``.
        """
        t = self.task_index(task)
        if boxes is None:
            x = self.normalize(images)
            w, h = self.input_size
            if tuple(x.shape[-2:]) != (h, w):
                raise PoseforgeError(f"images: expected {w}x{h} crops (width x height) for {self.config.name}, "
                                     f"got {x.shape[-1]}x{x.shape[-2]} (pass boxes to predict in whole images)")
            return self.codec.decode_predictions(self.check_finite(self.infer(x, flip_test, t)))
        device = self.pixel_mean.device
        frames = stack_images(images, device)
        per_frame = [boxes] if len(frames) == 1 and not _is_box_list(boxes) else list(boxes)
        if len(per_frame) != len(frames):
            raise PoseforgeError(f"boxes: {len(per_frame)} box arrays for {len(frames)} images")
        box_t = [_as_boxes(b, device, i) for i, b in enumerate(per_frame)]
        counts = [len(b) for b in box_t]
        k = self.keypoint_set_of(t).num_keypoints
        crops, matrices, areas = [], [], []
        for frame, b in zip(frames, box_t):
            if len(b):
                matrix, area = boxes_to_crops(b, self.input_size, self.codec.udp_warp)
                crops.append(crop_batch(frame, matrix, self.input_size))
                matrices.append(matrix)
                areas.append(area)
        if on_stage is not None:
            on_stage("crop")
        flat_kp, flat_sc = torch.zeros(0, k, 2, device=device), torch.zeros(0, k, device=device)
        if crops:
            all_crops, all_matrices = torch.cat(crops), torch.cat(matrices)
            step = batch_size or len(all_crops)
            parts = []
            for s in range(0, len(all_crops), step):
                outputs = self.check_finite(self.infer(self.normalize(all_crops[s:s + step]), flip_test, t))
                if on_stage is not None:
                    on_stage("model")
                pred = self.codec.decode_predictions(outputs)
                parts.append((crop_to_image(pred.keypoints[:, 0].float(), all_matrices[s:s + step]).float(),
                              pred.scores[:, 0].float()))
                if on_stage is not None:
                    on_stage("decode")
            flat_kp, flat_sc = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        flat_area = torch.cat(areas) if areas else torch.zeros(0, device=device, dtype=torch.float64)
        flat_box = torch.cat(box_t).float()
        n = max(counts, default=0)
        if len(frames) == 1:  # the Predictor's case: nothing to pad
            return Predictions(flat_kp[None], flat_sc[None], torch.ones(1, n, dtype=torch.bool, device=device),
                               boxes=flat_box[None], areas=flat_area[None], task=t)
        valid = torch.arange(n, device=device)[None, :] < torch.as_tensor(counts, device=device)[:, None]
        keypoints = flat_kp.new_zeros(len(frames), n, k, 2)
        scores = flat_sc.new_zeros(len(frames), n, k)
        padded_boxes = flat_box.new_zeros(len(frames), n, 4)
        padded_areas = flat_area.new_zeros(len(frames), n)
        keypoints[valid], scores[valid], padded_boxes[valid], padded_areas[valid] = flat_kp, flat_sc, flat_box, flat_area
        return Predictions(keypoints, scores, valid, boxes=padded_boxes, areas=padded_areas, task=t)

    @torch.no_grad()
    def predict_batch(self, batch: Mapping[str, Any], *, flip_test: bool | None = None,
                      task: "int | str | None" = 0) -> Predictions:
        """Keypoints in image pixels of an evaluation batch of :meth:`transform` crops (``image``,
        ``matrix``, ``scale``, ``score``, ``bbox``), with each crop's box score and area."""
        t = self.task_index(task)
        pred = self._decode(self.normalize(batch["image"]), flip_test, t)
        keypoints = crop_to_image(pred.keypoints[:, 0].double(), batch["matrix"].double())
        bbox = batch["bbox"].double()
        boxes = torch.cat([bbox[:, :2], bbox[:, :2] + bbox[:, 2:]], 1)
        return Predictions(keypoints[:, None], pred.scores, pred.valid, instance_scores=batch["score"].double()[:, None],
                           boxes=boxes[:, None], areas=batch["scale"].double().prod(-1)[:, None], task=t)

    def metric(self, eval_set: Any, task: "int | str | None" = 0, **options: Any) -> CocoKeypointMetric:
        """COCO OKS AP/AR as mmpose's ``CocoMetric`` (box x keypoint rescoring, OKS-NMS 0.9); ``options``:
        ``keypoint_score_thr``, ``nms_thr``, ``pck_thr``."""
        from ...evaluation.metrics import CocoKeypointMetric

        ks = self.keypoint_set_of(task)
        if ks.name != eval_set.gt.keypoint_set.name:
            raise PoseforgeError(f"{self.config.name} predicts {ks.name} keypoints but {eval_set.name} is labeled "
                                 f"with {eval_set.gt.keypoint_set.name}")
        return CocoKeypointMetric(eval_set.gt, score_mode="bbox_keypoint", **options)


def _is_box_list(boxes: Any) -> bool:
    """Whether ``boxes`` is a sequence of per-frame box arrays rather than one ``[N, 4]`` array."""
    if isinstance(boxes, (torch.Tensor, np.ndarray)):
        return boxes.ndim == 3
    return isinstance(boxes, (list, tuple)) and len(boxes) > 0 and \
        isinstance(boxes[0], (torch.Tensor, np.ndarray, list, tuple)) and np.asarray(boxes[0], dtype=object).ndim == 2


def _as_boxes(boxes: Any, device: torch.device, index: int) -> torch.Tensor:
    """``[N, 4]`` xyxy boxes on ``device``; non-finite or empty (no width and no height) boxes are an error."""
    b = torch.as_tensor(np.asarray(boxes, dtype=np.float64) if not isinstance(boxes, torch.Tensor) else boxes,
                        device=device).reshape(-1, 4)
    size = b[:, 2:] - b[:, :2]
    bad = ~torch.isfinite(b).all(1) | (size <= 0).all(1)
    if bool(bad.any()):
        raise PoseforgeError(f"boxes[{index}]: expected finite xyxy boxes, got {b[bad][0].tolist()}")
    return b
