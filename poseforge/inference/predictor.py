"""Pose prediction for images, folders, videos and webcams, with any estimator kind.

>>> from poseforge import Predictor
>>> predictor = Predictor("bundled", detector="bundled")          # or detector="rtmdet-nano.onnx"
>>> result = predictor("people.jpg")                              # one PoseResult
>>> result.keypoints.shape, result.to_coco(image_id=1)[0]["score"]
>>> for result in predictor.stream("clip.mp4"):                   # frames with stable track ids
...     frame = result.draw()

Per frame: the frame goes to the device once. A model that needs boxes (top-down) gets them from the
given list, the detector (:mod:`poseforge.inference.detectors`) or the whole frame, and
``model.predict(frame, boxes)`` cuts all crops of the frame in one call, runs them in batches (flip
test optional, bf16 autocast on CUDA), decodes and maps the keypoints back - batched tensor
operations on the device. A bottom-up or dense model takes the frame alone (no detector is loaded).
Results come back to the host once per frame as a :class:`PoseResult`.
"""
from __future__ import annotations

import json
import logging
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from ..device import prefer_sleeping_threads

# Before torch loads OpenMP (when this module is imported first): idle workers sleep, as in poseforge predict.
_SLEEPING_THREADS = prefer_sleeping_threads()

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from ..data.records import json_floats  # noqa: E402
from ..device import resolve_device, set_cpu_threads  # noqa: E402
from ..errors import DataError, PoseforgeError  # noqa: E402
from ..io import write_json_atomic  # noqa: E402
from ..keypoints import get_keypoint_set  # noqa: E402
from .detectors.base import Detections, Detector, frame_to_tensor, xywh_to_xyxy  # noqa: E402
from .detectors.builtin import load_detector  # noqa: E402
from .tracking import PoseTracker  # noqa: E402

# Image decoding (OpenCV) and video I/O are imported where they are used: predicting on arrays needs neither,
# and a Predictor's start-up time includes its imports.
if TYPE_CHECKING:
    from .video import VideoFrame

__all__ = ["PoseResult", "Predictor", "IMAGE_SUFFIXES", "as_rgb_image"]

log = logging.getLogger("poseforge")

# Dense map keys -> the task names ``predict --task`` and :meth:`PoseResult.draw` use.
DENSE_TASK_NAMES = {"seg": "seg", "depth": "depth", "normals": "normal"}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".jp2", ".pbm", ".pgm", ".ppm", ".pnm")


# ---------------------------------------------------------------------------------------------- results
@dataclass
class PoseResult:
    """The poses found in one image or video frame (numpy arrays, image pixels).

    Attributes:
        keypoint_set: the set's name (``"coco17"``); gives skeleton, colours and OKS sigmas (``None``
            for dense models).
        image_size: ``(width, height)``.
        boxes: ``[N, 4]`` float32 ``(x1, y1, x2, y2)`` person boxes the poses were estimated in.
        box_scores: ``[N]`` detector (or given) box scores.
        keypoints: ``[N, K, 2]`` float32 ``(x, y)``.
        keypoint_scores: ``[N, K]`` float32 confidence.
        track_ids: ``[N]`` int64 stable ids in videos (-1 without tracking).
        areas: ``[N]`` crop box areas (the object scale OKS-NMS uses, as mmpose).
        source: the file the image came from (or ``None``); ``frame_index`` / ``timestamp`` for video.
        image: the RGB frame (kept for :meth:`draw`; set to ``None`` to free it).
        dense: dense maps at the image's resolution (dense models): ``"seg"`` ``[H, W]`` uint8 class
            labels, ``"depth"`` ``[H, W]`` float32, ``"normals"`` ``[H, W, 3]`` float32 unit vectors.
    """

    keypoint_set: str | None
    image_size: tuple[int, int]
    boxes: np.ndarray
    box_scores: np.ndarray
    keypoints: np.ndarray
    keypoint_scores: np.ndarray
    track_ids: np.ndarray
    areas: np.ndarray
    source: str | None = None
    frame_index: int | None = None
    timestamp: float | None = None
    image: np.ndarray | None = field(default=None, repr=False)
    dense: dict[str, np.ndarray] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @property
    def boxes_xywh(self) -> np.ndarray:
        """``[N, 4]`` ``(x, y, w, h)``."""
        return np.concatenate([self.boxes[:, :2], self.boxes[:, 2:] - self.boxes[:, :2]], axis=1)

    def scores(self, keypoint_score_thr: float = 0.2) -> np.ndarray:
        """Instance scores ``[N]``: box score x mean keypoint score above the threshold (mmpose's
        ``bbox_keypoint`` rescoring, what COCO evaluation ranks by)."""
        from ..evaluation.postprocess import rescore

        if not len(self):
            return np.zeros(0)
        return rescore(self.box_scores, self.keypoint_scores, "bbox_keypoint", keypoint_score_thr)

    def to_coco(self, image_id: Any = None, category_id: int = 1, keypoint_score_thr: float = 0.2) -> list[dict[str, Any]]:
        """COCO keypoint result records (``image_id``, ``category_id``, flat ``keypoints`` x/y/score,
        ``score`` rescored as :meth:`scores`, ``bbox_score``, ``area``; ``track_id`` when tracked)."""
        if image_id is None:
            image_id = self.frame_index if self.frame_index is not None else 0
        scores = self.scores(keypoint_score_thr)
        flat = np.concatenate([self.keypoints.astype(np.float64), self.keypoint_scores.astype(np.float64)[..., None]], -1)
        out = []
        for i in range(len(self)):
            record = {"image_id": image_id, "category_id": int(category_id), "keypoints": json_floats(flat[i].reshape(-1)),
                      "score": float(scores[i]), "bbox_score": float(self.box_scores[i]), "area": float(self.areas[i])}
            if self.track_ids[i] >= 0:
                record["track_id"] = int(self.track_ids[i])
            out.append(record)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: image info and one entry per person (box xyxy, scores, keypoints, track id)."""
        people = []
        scores = self.scores()
        for i in range(len(self)):
            people.append({
                "box": [round(float(v), 2) for v in self.boxes[i]],
                "box_score": round(float(self.box_scores[i]), 4),
                "score": round(float(scores[i]), 4),
                "track_id": int(self.track_ids[i]),
                "keypoints": [[round(float(x), 2), round(float(y), 2), round(float(s), 4)]
                              for (x, y), s in zip(self.keypoints[i], self.keypoint_scores[i])],
            })
        names = list(get_keypoint_set(self.keypoint_set).names) if self.keypoint_set is not None else []
        out: dict[str, Any] = {"source": self.source, "width": int(self.image_size[0]), "height": int(self.image_size[1]),
                               "keypoint_set": self.keypoint_set, "keypoint_names": names, "people": people}
        if self.frame_index is not None:
            out["frame"] = int(self.frame_index)
            out["timestamp"] = None if self.timestamp is None else round(float(self.timestamp), 4)
        return out

    def to_json(self, path: str | os.PathLike | None = None, indent: int | None = 2) -> str:
        """The :meth:`to_dict` JSON text; also written (atomically) to ``path`` when given."""
        data = self.to_dict()
        if path is not None:
            write_json_atomic(path, data, indent=indent)
        return json.dumps(data, indent=indent)

    @property
    def dense_tasks(self) -> tuple[str, ...]:
        """The dense maps this result holds, as ``predict --task`` names them (``seg``, ``depth``, ``normal``)."""
        return tuple(DENSE_TASK_NAMES[k] for k in ("seg", "depth", "normals") if self.dense and k in self.dense)

    def draw(self, image: np.ndarray | None = None, threshold: float = 0.3, boxes: bool = True, labels: bool = True,
             task: str | None = None) -> np.ndarray:
        """An RGB copy of the image (or of ``image``) with skeletons, boxes and track ids drawn; for a dense
        model, ``task`` (``seg``: parts blended over the image; ``depth`` / ``normal``: the image beside its
        colour-mapped depth / normals, human pixels only where a part map says which; default: the first map held)."""
        from .drawing import draw_result

        canvas = self.image if image is None else image
        if canvas is None:
            raise PoseforgeError("PoseResult.draw: the result holds no image (pass image=...)")
        if self.keypoint_set is None:  # a dense model
            return self._draw_dense(canvas, task)
        if task not in (None, "pose"):
            raise PoseforgeError(f"PoseResult.draw: a pose model draws task 'pose', not '{task}'")
        return draw_result(canvas, self.keypoints, self.keypoint_scores, self.keypoint_set,
                           self.boxes if boxes else None, self.box_scores, self.track_ids, threshold, labels=labels,
                           color_by_index=True)

    def _draw_dense(self, canvas: np.ndarray, task: str | None) -> np.ndarray:
        from .drawing import colorize_depth, colorize_normals, colorize_parts

        held = self.dense_tasks
        if not held:
            return canvas.copy()
        task = task or held[0]
        if task not in held:
            raise PoseforgeError(f"this model predicts {', '.join(held)}; it has no '{task}' map to draw")
        seg = self.dense.get("seg")  # type: ignore[union-attr]
        if task == "seg":
            overlay = colorize_parts(seg, num_classes=max(int(seg.max()) + 1, 28))
            blend = np.where((seg > 0)[..., None], 0.45 * canvas + 0.55 * overlay, canvas)
            return blend.round().astype(np.uint8)
        mask = seg > 0 if seg is not None else None  # a part map tells the person from the background
        if task == "depth":
            depth = self.dense["depth"]  # type: ignore[index]
            if mask is None:
                mask = np.isfinite(depth) & (depth > 0)
            colored = colorize_depth(depth, mask)
        else:
            normals = self.dense["normals"]  # type: ignore[index]
            colored = colorize_normals(normals, mask if mask is not None else np.ones(normals.shape[:2], bool))
        return np.concatenate([canvas, colored], axis=1)


# ---------------------------------------------------------------------------------------------- inputs
def as_rgb_image(image: Any, name: str = "image") -> tuple[np.ndarray, str | None]:
    """``(H x W x 3 uint8 RGB array, source path or None)`` from a path, numpy array (RGB, or gray
    H x W), PIL image or ``[3, H, W]`` uint8 tensor; a one-line error for anything else."""
    if isinstance(image, (str, os.PathLike)):
        from ..data.images import load_image

        return load_image(image), str(image)
    if isinstance(image, Tensor):
        if image.ndim != 3 or image.shape[0] != 3:
            raise PoseforgeError(f"{name}: expected a [3, H, W] tensor, got shape {tuple(image.shape)}")
        return image.detach().to("cpu", torch.uint8).permute(1, 2, 0).contiguous().numpy(), None
    if hasattr(image, "convert") and hasattr(image, "mode"):  # PIL.Image, without importing PIL
        return np.array(image.convert("RGB")), None
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        if image.ndim != 3 or image.shape[2] not in (3, 4):
            raise PoseforgeError(f"{name}: expected an H x W x 3 RGB array, got shape {image.shape}")
        if image.dtype != np.uint8:
            raise PoseforgeError(f"{name}: expected uint8 pixels, got {image.dtype} (convert with .astype(np.uint8))")
        return np.ascontiguousarray(image[..., :3]), None
    raise PoseforgeError(f"{name}: expected an image path, numpy array, PIL image or tensor, got {type(image).__name__}")


def _load_pose_model(model: Any, device: torch.device, verify: bool | None = None) -> torch.nn.Module:
    if isinstance(model, torch.nn.Module):  # the caller's model: never changed beyond eval mode
        return model.to(device).eval()
    from ..models import load_model

    # a model loaded here is only predicted with: BatchNorms are folded (conv backbones)
    return load_model(model, device=device, verify=verify).float().prepare_for_inference(fuse_batchnorm=True)


# ---------------------------------------------------------------------------------------------- predictor
class Predictor:
    """Pose estimation (or dense prediction) on images, folders, videos and webcams.

    Args:
        model: an estimator, a weights name (``"vitpose-tiny.synth"``; ``"bundled"`` is its alias), or a
            model folder / ``.safetensors`` / training run folder / training checkpoint.
        detector: where person boxes come from when none are given, for models that need boxes:
            ``"bundled"`` (default), a ``.onnx`` RTMDet/YOLOX export, a COCO detection results ``.json``,
            a :class:`Detector`, or ``None`` (the whole frame is one person). Not loaded for bottom-up
            and dense models.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ...
        flip_test: average with the horizontally flipped crops.
        batch_size: crops per model call.
        bf16: bf16 autocast for the pose model (default: on for CUDA, off elsewhere).
        box_score_threshold: drop detector boxes scoring at or below it (None: the detector's own).
        max_people: keep at most this many boxes per frame (best scores).
        tracker: for :meth:`stream` over videos/webcams: ``True`` (default tracker), ``False``, or a
            :class:`PoseTracker`.
        profile: time each stage (``timings``), synchronizing CUDA between stages.
        task: the task (dataset) of a multi-task model to predict.
        num_threads: torch's intra-op CPU threads, set process-wide (``torch.set_num_threads``); ``None``
            (default) keeps torch's setting.
        verify: check a model folder against its ``checksums.json`` (see :func:`poseforge.models.load_model`):
            ``None`` (default) hashes files up to 2 GiB, ``True`` always, ``False`` never.

    Threads on CPU (the same defaults as ``poseforge predict``, which builds a Predictor; see
    docs/performance.md): torch's own thread count, about one per CPU core (``OMP_NUM_THREADS`` or
    ``num_threads`` change it), and idle OpenMP workers sleep (``OMP_WAIT_POLICY=PASSIVE``) rather than
    spin, which keeps predictions fast when other processes share the cores. OpenMP reads the policy once,
    when torch loads: importing the predictor before torch (``from poseforge import Predictor`` above
    ``import torch``) sets it unless the environment has one; a program that imports torch first sets
    ``OMP_WAIT_POLICY=PASSIVE`` in its environment for the same behaviour.

    Start-up: a model from a name or folder is built without running any weight initializer (the stored
    weights replace them; :func:`poseforge.models.loading.skip_meta_init`), so construction costs little
    more than reading the weights (``benchmarks/predictor_start.py``).
    """

    def __init__(self, model: Any = "bundled", detector: "Detector | str | os.PathLike | None" = "bundled",
                 device: str | torch.device = "auto", flip_test: bool = True, batch_size: int = 64,
                 bf16: bool | None = None, box_score_threshold: float | None = None, max_people: int | None = None,
                 tracker: "bool | PoseTracker" = True, profile: bool = False,
                 task: "int | str" = 0, num_threads: int | None = None, verify: bool | None = None) -> None:
        self.device = resolve_device(device)
        self.num_threads = set_cpu_threads(num_threads)
        if self.device.type == "cpu" and not _SLEEPING_THREADS:
            log.debug("OpenMP workers spin when idle (torch loaded before poseforge without OMP_WAIT_POLICY): "
                      "set OMP_WAIT_POLICY=PASSIVE where other processes share the cores")
        self.model = _load_pose_model(model, self.device, verify)
        if not callable(getattr(self.model, "predict", None)) or not hasattr(self.model, "needs_boxes"):
            raise PoseforgeError(f"Predictor: {type(self.model).__name__} is not a poseforge estimator")
        # NHWC convolution weights (the conv stem, the head): the bundled model's forward is 1.08-1.16x as fast
        # on CPU (oneDNN; benchmarks/predict.py), patchify ViTs the same; numbers change only by float rounding
        self.model.to(memory_format=torch.channels_last)
        self.task = self.model.task_index(task)
        ks = self.model.keypoint_set_of(self.task)
        self.keypoint_set = get_keypoint_set(ks.name) if ks is not None else None
        self.input_size = self.model.input_size
        self.detector = load_detector(detector, self.device, box_score_threshold) if self.model.needs_boxes else None
        self.flip_test = bool(flip_test)
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise PoseforgeError(f"Predictor: batch_size must be >= 1, got {batch_size}")
        self.bf16 = (self.device.type == "cuda") if bf16 is None else bool(bf16)
        self.box_score_threshold = box_score_threshold
        self.max_people = max_people
        self.tracker_setting = tracker
        self.profile = bool(profile)
        self.timings: dict[str, float] = {"detect": 0.0, "crop": 0.0, "model": 0.0, "decode": 0.0}
        self.frames = 0

    def __repr__(self) -> str:
        return (f"Predictor(model={self.model.config.name}, detector={self.detector!r}, device={self.device}, "
                f"flip_test={self.flip_test}, bf16={self.bf16})")

    # ----- timing ---------------------------------------------------------------------------------
    def _mark(self, stage: str, start: float) -> float:
        if self.profile:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            now = time.perf_counter()
            self.timings[stage] += now - start
            return now
        return start

    def reset_timings(self) -> None:
        self.timings = {k: 0.0 for k in self.timings}
        self.frames = 0

    # ----- core -----------------------------------------------------------------------------------
    def _autocast(self):
        if self.bf16 and self.device.type in ("cuda", "cpu"):
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def _stage_marker(self) -> Callable[[str], None] | None:
        """``on_stage`` callback adding each prediction stage's time to ``timings`` (profiling only)."""
        if not self.profile:
            return None
        last = [time.perf_counter()]

        def mark(stage: str) -> None:
            last[0] = self._mark(stage, last[0])

        return mark

    @torch.no_grad()
    def estimate(self, frame: Tensor, boxes: Tensor | None = None) -> Any:
        """The model's :class:`~poseforge.outputs.Predictions` for one ``[3, H, W]`` frame on the device:
        in the xyxy ``boxes [N, 4]`` for models that need boxes, of the whole frame otherwise."""
        with self._autocast():
            return self.model.predict(frame[None], None if boxes is None else [boxes], flip_test=self.flip_test,
                                      task=self.task, batch_size=self.batch_size, on_stage=self._stage_marker())

    def _boxes_for(self, frame: Tensor, array: np.ndarray, key: Any, boxes: Any, box_scores: Any,
                   box_format: str) -> tuple[Tensor, Tensor]:
        t = time.perf_counter() if self.profile else 0.0
        height, width = frame.shape[-2:]
        if boxes is not None:
            b = torch.as_tensor(np.asarray(boxes, dtype=np.float64), device=self.device).reshape(-1, 4)
            if box_format == "xywh":
                b = xywh_to_xyxy(b)
            elif box_format != "xyxy":
                raise PoseforgeError(f"box_format must be 'xyxy' or 'xywh', got '{box_format}'")
            if bool(((b[:, 2:] - b[:, :2]) <= 0).any()) or not bool(torch.isfinite(b).all()):
                bad = b[((b[:, 2:] - b[:, :2]) <= 0).any(1) | ~torch.isfinite(b).all(1)][0].tolist()
                raise PoseforgeError(f"boxes: expected finite boxes with positive size ({box_format}), got {bad}")
            s = torch.ones(b.shape[0], device=self.device) if box_scores is None else \
                torch.as_tensor(np.asarray(box_scores, dtype=np.float32), device=self.device).reshape(-1)
            if s.shape[0] != b.shape[0]:
                raise PoseforgeError(f"box_scores: {s.shape[0]} scores for {b.shape[0]} boxes")
            dets = Detections(b.float(), s)
        elif self.detector is None:
            dets = Detections(torch.tensor([[0.0, 0.0, width, height]], device=self.device), torch.ones(1, device=self.device))
        else:
            given = frame if self.detector.input_kind == "tensor" else array
            dets = self.detector.detect_batch([given], None if key is None else [key])[0].to(self.device)
            if self.box_score_threshold is not None:
                dets = dets.filter(self.box_score_threshold)
        if self.max_people is not None and len(dets) > self.max_people:
            dets = dets.filter(-float("inf"), max_detections=self.max_people)
        self._mark("detect", t)
        return dets.boxes, dets.scores

    def predict(self, image: Any, boxes: Any = None, box_scores: Any = None, *, box_format: str = "xyxy",
                key: Any = None, keep_image: bool = True) -> PoseResult:
        """Poses in one image (path, numpy RGB array, PIL image or ``[3, H, W]`` tensor).

        Args:
            boxes: person boxes ``[N, 4]`` to use instead of the detector (``box_format`` xyxy or xywh).
            box_scores: their scores (default 1).
            key: the image's id or file name for detectors that look boxes up (detection files);
                defaults to the image path.
            keep_image: keep the pixels in the result (for :meth:`PoseResult.draw`).
        """
        array, source = as_rgb_image(image)
        return self._predict_array(array, source, boxes, box_scores, box_format, key if key is not None else source,
                                   keep_image=keep_image)

    __call__ = predict

    def _predict_array(self, array: np.ndarray, source: str | None, boxes: Any, box_scores: Any, box_format: str,
                       key: Any, frame_index: int | None = None, timestamp: float | None = None,
                       keep_image: bool = True) -> PoseResult:
        frame = frame_to_tensor(array, self.device)
        given = self._boxes_for(frame, array, key, boxes, box_scores, box_format) if self.model.needs_boxes else None
        pred = self.estimate(frame, None if given is None else given[0])
        self.frames += 1
        valid = pred.valid[0]
        every = bool(valid.all())  # top-down: always; then no masking copies

        def take(t: Tensor) -> Tensor:  # this frame's instances
            return t[0] if every else t[0][valid]

        keypoints, scores = take(pred.keypoints).float(), take(pred.scores).float()
        n = int(keypoints.shape[0])
        box_t = take(pred.boxes) if pred.boxes is not None else keypoints.new_zeros(n, 4)
        if given is not None:
            score_t = given[1]
        elif pred.instance_scores is not None:
            score_t = take(pred.instance_scores)
        else:
            score_t = scores.mean(-1) if scores.shape[-1] else scores.new_ones(n)
        areas = take(pred.areas) if pred.areas is not None else keypoints.new_zeros(n)
        dense = None
        if pred.dense is not None:
            maps = pred.dense
            dense = {}
            if maps.seg is not None:
                dense["seg"] = maps.seg[0].argmax(0).to(torch.uint8).cpu().numpy()
            if maps.depth is not None:
                dense["depth"] = maps.depth[0, 0].float().cpu().numpy()
            if maps.normals is not None:
                dense["normals"] = maps.normals[0].float().permute(1, 2, 0).cpu().numpy()
        return PoseResult(
            keypoint_set=self.keypoint_set.name if self.keypoint_set is not None else None,
            image_size=(int(array.shape[1]), int(array.shape[0])),
            boxes=box_t.float().cpu().numpy(), box_scores=score_t.float().cpu().numpy(),
            keypoints=keypoints.cpu().numpy(), keypoint_scores=scores.cpu().numpy(),
            track_ids=np.full(n, -1, dtype=np.int64), areas=areas.cpu().numpy().astype(np.float64), source=source,
            frame_index=frame_index, timestamp=timestamp, image=array if keep_image else None, dense=dense)

    # ----- sources --------------------------------------------------------------------------------
    def make_tracker(self) -> PoseTracker | None:
        """A fresh tracker as the ``tracker`` setting asks (None when off)."""
        setting = self.tracker_setting
        if setting is False or setting is None:
            return None
        if isinstance(setting, PoseTracker):
            setting.reset()
            return setting
        if self.keypoint_set is None:  # dense models have no people to track
            return None
        return PoseTracker(self.keypoint_set)

    def predict_folder(self, folder: str | os.PathLike, on_skip: Callable[[Path, str], None] | None = None,
                       keep_image: bool = True) -> Iterator[PoseResult]:
        """Results for the images of a folder (sorted by name, not recursive). Files that are not
        images or cannot be decoded are skipped with a one-line warning (or ``on_skip(path, reason)``)."""
        from ..data.images import load_image
        from .video import is_video_file

        folder = Path(folder)
        if not folder.is_dir():
            raise PoseforgeError(f"{folder}: not a folder")
        skip = on_skip or (lambda p, reason: log.warning(f"skipping {p}: {reason}"))
        for path in sorted(p for p in folder.iterdir() if not p.name.startswith(".")):
            if path.is_dir():
                continue
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                kind = "a video (pass it on its own)" if is_video_file(path) else f"unsupported file type '{path.suffix or path.name}'"
                skip(path, kind)
                continue
            try:
                array = load_image(path)
            except DataError as e:
                skip(path, str(e).removeprefix(f"{path}: "))
                continue
            yield self._predict_array(array, str(path), None, None, "xyxy", str(path), keep_image=keep_image)

    def predict_video(self, path: str | os.PathLike | int, tracker: "PoseTracker | None | bool" = True,
                      max_frames: int | None = None, keep_image: bool = True) -> Iterator[PoseResult]:
        """Results for each frame of a video file (PyAV) or webcam index (OpenCV), with track ids."""
        from .video import VideoReader, webcam_frames

        if tracker is True:
            tracker = self.make_tracker()
        elif isinstance(tracker, PoseTracker):  # (a tracker with no tracks is falsy: test the type)
            tracker.reset()
        else:
            tracker = None
        frames: Iterable[VideoFrame]
        if isinstance(path, int):
            frames, source = webcam_frames(path, max_frames), f"webcam {path}"
        else:
            frames, source = VideoReader(path), str(path)
        for frame in frames:
            if max_frames is not None and frame.index >= max_frames:
                break
            result = self._predict_array(frame.image, source, None, None, "xyxy", frame.index, frame.index,
                                         frame.timestamp, keep_image=keep_image)
            if tracker is not None:
                tracker.update_result(result)
            yield result

    def stream(self, source: Any, **kwargs: Any) -> Iterator[PoseResult]:
        """Results for any source: an image (path, array, PIL), a folder, a video file, a webcam index,
        or a list of those. Extra arguments go to :meth:`predict_folder` / :meth:`predict_video`."""
        if isinstance(source, (list, tuple)):
            for item in source:
                yield from self.stream(item, **kwargs)
            return
        if isinstance(source, int) and not isinstance(source, bool):
            yield from self.predict_video(source, **kwargs)
            return
        if isinstance(source, (str, os.PathLike)):
            from .video import is_video_file

            path = Path(source)
            if path.is_dir():
                yield from self.predict_folder(path, **kwargs)
                return
            if is_video_file(path):
                yield from self.predict_video(path, **kwargs)
                return
        yield self.predict(source)
