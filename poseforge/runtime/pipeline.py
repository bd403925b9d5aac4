"""Whole-image pose pipelines on exported models, and the image / folder / video inputs they read.

* :class:`TopDownPipeline` - person boxes (a :class:`~.detector.PersonDetector`, given boxes, or the whole
  image) -> crops (:mod:`.crop`, as poseforge's torch ``predict(frames, boxes)``) -> one session run for all
  crops of the image -> keypoints mapped back to image pixels;
* :class:`BottomUpPipeline` - the image fitted into the model input (as poseforge's bottom-up estimators),
  one run, heatmap peaks grouped into people by their associative-embedding tags, mapped back.

Images are ``H x W x 3`` uint8, BGR as OpenCV reads them unless ``rgb=True``. Results are
:class:`PoseResult` (numpy, image pixels). :func:`iter_frames` streams an image, a folder of images or a
video (``cv2.VideoCapture``: one frame in memory at a time).
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import cv2
import numpy as np

from ..errors import PoseforgeError
from .crop import affine_points, crop_matrices, crops_to_image, fit_matrix, invert_affine, warp_crops
from .detector import PersonDetector
from .grouping import aggregate_half_scale, check_grouping_options, group_associative_embedding, grouping_options
from .session import PoseModel

__all__ = ["PoseResult", "TopDownPipeline", "BottomUpPipeline", "load_pipeline", "Frame", "iter_frames", "read_image",
           "list_inputs", "is_video", "IMAGE_SUFFIXES", "VIDEO_SUFFIXES", "keypoint_boxes"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


@dataclasses.dataclass
class PoseResult:
    """The people found in one image (P people, K keypoints), in image pixels.

    Attributes:
        boxes: ``[P, 4]`` xyxy (top-down: the boxes the poses were estimated in; bottom-up: around each
            person's keypoints).
        box_scores: ``[P]`` (top-down: the detector's box score, 1 for given boxes; bottom-up: the person's
            mean keypoint score).
        keypoints: ``[P, K, 2]`` (x, y).
        scores: ``[P, K]`` keypoint confidences.
    """

    boxes: np.ndarray
    box_scores: np.ndarray
    keypoints: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.keypoints)

    @classmethod
    def empty(cls, num_keypoints: int) -> "PoseResult":
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros((0, num_keypoints, 2)), np.zeros((0, num_keypoints)))

    def to_json(self, decimals: int = 2) -> list[dict[str, Any]]:
        """One JSON-safe dict per person: ``bbox`` (xyxy), ``score``, ``keypoints`` ``[[x, y], ...]``,
        ``keypoint_scores``."""
        r = lambda a, d=decimals: np.round(np.asarray(a, dtype=np.float64), d).tolist()  # noqa: E731
        return [{"bbox": r(b), "score": round(float(s), 4), "keypoints": r(k), "keypoint_scores": r(c, 4)}
                for b, s, k, c in zip(self.boxes, self.box_scores, self.keypoints, self.scores, strict=True)]


def keypoint_boxes(keypoints: np.ndarray, scores: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """xyxy boxes ``[P, 4]`` around each person's keypoints scoring above ``threshold`` (all when none do)."""
    use = scores > threshold
    use = np.where(use.any(-1, keepdims=True), use, True)[..., None]
    lo = np.where(use, keypoints, np.inf).min(-2)
    hi = np.where(use, keypoints, -np.inf).max(-2)
    return np.concatenate([lo, hi], -1).reshape(-1, 4)


def _as_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise PoseforgeError(f"image: expected an H x W x 3 uint8 array, got {image.dtype} {tuple(image.shape)}")
    return image


class _Pipeline:
    """What both pipelines share: running over an image, a folder or a video."""

    def __call__(self, image: np.ndarray, *, rgb: bool = False) -> PoseResult:  # pragma: no cover - abstract
        raise NotImplementedError

    def stream(self, source: str | os.PathLike | Sequence[str | os.PathLike]) -> Iterator[tuple[Frame, PoseResult]]:
        """``(frame, result)`` for every image of ``source`` (an image, a folder of images, a video or a list of
        such files), one frame decoded at a time."""
        for frame in iter_frames(source):
            yield frame, self(frame.image)


class TopDownPipeline(_Pipeline):
    """Top-down pose estimation on exported models: boxes -> crops -> keypoints in image pixels.

    Args:
        pose_model: a top-down :class:`PoseModel` or the path of its ``.onnx`` file.
        detector: a :class:`PersonDetector`, the path of an end2end RTMDet / YOLOX export, or None (then give
            boxes per call; without boxes the whole image is one box).
        flip_test: average in the outputs of mirrored crops (exports with raw outputs).
        score_threshold: the detector's box threshold (when the detector is given as a path).
        num_threads, device: onnxruntime settings of models given as paths.

    ``pipeline(image, boxes=None, rgb=False)`` -> :class:`PoseResult`. All crops of an image go through one
    session run (chunked by a static batch size).
    """

    def __init__(self, pose_model: PoseModel | str | os.PathLike,
                 detector: PersonDetector | str | os.PathLike | None = None, *, flip_test: bool = False,
                 score_threshold: float = 0.3, num_threads: int | None = None, device: str = "cpu") -> None:
        self.model = pose_model if isinstance(pose_model, PoseModel) else PoseModel(pose_model, num_threads=num_threads,
                                                                                     device=device)
        if self.model.kind != "topdown":
            raise PoseforgeError(f"{self.model.path.name} is a {self.model.kind} model, not a top-down one")
        if detector is not None and not isinstance(detector, PersonDetector):
            detector = PersonDetector(detector, score_threshold=score_threshold, num_threads=num_threads, device=device)
        self.detector: PersonDetector | None = detector
        self.flip_test = bool(flip_test)

    def __call__(self, image: np.ndarray, boxes: np.ndarray | None = None, box_scores: np.ndarray | None = None, *,
                 rgb: bool = False) -> PoseResult:
        """The people in ``image``: in ``boxes [N, 4]`` (xyxy image pixels) when given, else in the detector's
        boxes, else in the whole image."""
        image = _as_image(image)
        h, w = image.shape[:2]
        if boxes is None:
            if self.detector is not None:
                found = self.detector(image, rgb=rgb)
                boxes, box_scores = found.boxes, found.scores
            else:
                boxes, box_scores = np.array([[0.0, 0.0, w, h]]), np.ones(1)
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        box_scores = np.ones(len(boxes)) if box_scores is None else np.asarray(box_scores, np.float64).reshape(-1)
        if len(box_scores) != len(boxes):
            raise PoseforgeError(f"boxes: {len(boxes)} boxes but {len(box_scores)} scores")
        bad = ~np.isfinite(boxes).all(1) | (boxes[:, 2:] <= boxes[:, :2]).all(1)
        if bad.any():
            raise PoseforgeError(f"boxes: expected finite xyxy boxes, got {boxes[bad][0].tolist()}")
        k = self.model.num_keypoints or 0
        if len(boxes) == 0:
            return PoseResult.empty(k)
        meta = self.model.meta
        matrices, _ = crop_matrices(boxes, meta.input_size, meta.udp, meta.padding)
        crops = warp_crops(image, matrices, meta.input_size)
        if not rgb:
            crops = crops[..., ::-1]  # the models take RGB; flipping the crops is cheaper than the frame
        keypoints, scores = self.model.predict_crops(crops, flip_test=self.flip_test)
        return PoseResult(boxes, box_scores, crops_to_image(keypoints, matrices), scores.astype(np.float64))


class BottomUpPipeline(_Pipeline):
    """Bottom-up pose estimation on an exported model: the whole image in, every person out.

    The image is fitted into the model input (aspect ratio kept, centred, zero border: poseforge's bottom-up
    ``ImageTransform`` without augmentation); the ``heatmaps`` + ``tags`` outputs (with a ``heatmaps_hr`` output,
    all brought to its 1/2 scale and the heatmaps averaged, :func:`~.grouping.aggregate_half_scale`) are grouped
    by :func:`~.decode.group_associative_embedding` with the settings of the model's ``associative-embedding``
    codec (:func:`~.decode.grouping_options`: an export decodes like the torch model) and mapped back to the
    image. Other codecs group by the plain rule (3x3 peaks, no adjustment or filling).

    Args:
        model: a bottom-up :class:`PoseModel` or the path of its ``.onnx`` file.
        max_people: most people per image (default: the codec's ``max_people``, else 30).
        detection_threshold: keypoint peaks must score above it (default: the codec's, else 0.1).
        tag_threshold: largest tag distance of a keypoint to the person it joins (default: the codec's, else 1).
        min_keypoints: people with fewer keypoints scoring above ``detection_threshold`` are dropped.
        num_threads, device: onnxruntime settings of a model given as a path.
    """

    def __init__(self, model: PoseModel | str | os.PathLike, *, max_people: int | None = None,
                 detection_threshold: float | None = None, tag_threshold: float | None = None, min_keypoints: int = 2,
                 num_threads: int | None = None, device: str = "cpu") -> None:
        self.model = model if isinstance(model, PoseModel) else PoseModel(model, num_threads=num_threads, device=device)
        if self.model.kind != "bottomup":
            raise PoseforgeError(f"{self.model.path.name} is a {self.model.kind} model, not a bottom-up one")
        self._heat, self._tags = self.model._raw["heatmaps"], self.model._raw["tags"]  # chosen and checked there
        self._heat_hr = "heatmaps_hr" if "heatmaps_hr" in self.model.output_names else None
        codec = self.model.meta.codec
        given = {"max_people": max_people, "detection_threshold": detection_threshold, "tag_threshold": tag_threshold}
        try:
            options = grouping_options(codec) or {"max_people": codec.get("max_people", 30), "detection_threshold": 0.1,
                                                  "tag_threshold": 1.0}
            options.update({key: value for key, value in given.items() if value is not None})
            check_grouping_options(options)
        except PoseforgeError as e:
            raise PoseforgeError(f"{self.model.path}: {e}") from None
        self.options: dict[str, Any] = options
        self.min_keypoints = int(min_keypoints)

    @property
    def max_people(self) -> int:
        return int(self.options["max_people"])

    @property
    def detection_threshold(self) -> float:
        return float(self.options["detection_threshold"])

    @property
    def tag_threshold(self) -> float:
        return float(self.options["tag_threshold"])

    def prepare(self, image: np.ndarray, *, rgb: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The normalized network input ``[1, 3, h, w]`` of an image and its image -> input matrix ``[2, 3]``."""
        image = _as_image(image)
        h, w = image.shape[:2]
        matrix = fit_matrix(w, h, self.model.input_size)
        fitted = warp_crops(image, matrix[None], self.model.input_size)
        return self.model.normalize(fitted if rgb else fitted[..., ::-1]), matrix

    def group(self, outputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The people of one image's raw outputs (the session's names, batch of one): keypoints ``[P, K, 2]`` in
        model-input pixels, their scores ``[P, K]`` and person scores ``[P]``, best first (the torch codec's
        ``decode`` for this model's codec)."""
        heat, tags = outputs[self._heat][0], outputs[self._tags][0]
        try:
            if tags.ndim == 4:  # [K, D, H, W] -> channel d * K + k
                tags = tags.transpose(1, 0, 2, 3).reshape(-1, *tags.shape[2:])
            if self._heat_hr is not None:
                heat, tags = aggregate_half_scale(heat, tags, outputs[self._heat_hr][0])
            keypoints, scores, person_scores = group_associative_embedding(heat, tags, **self.options)
        except PoseforgeError as e:  # output shapes the graph's static ones did not announce
            raise PoseforgeError(f"{self.model.path}: {e}") from None
        self.model._check_runtime_keypoints(heat.shape[0])
        # map pixels -> input pixels (pixel centres: cell i covers input [i*s, (i+1)*s))
        in_w, in_h = self.model.input_size
        stride = np.array([in_w / heat.shape[-1], in_h / heat.shape[-2]])
        return (keypoints + 0.5) * stride - 0.5, scores, person_scores

    def __call__(self, image: np.ndarray, *, rgb: bool = False) -> PoseResult:
        """Every person in ``image``, best first."""
        x, matrix = self.prepare(image, rgb=rgb)
        keypoints, scores, person_scores = self.group(self.model.run(x))
        keep = (scores > self.detection_threshold).sum(-1) >= self.min_keypoints
        keypoints, scores, person_scores = keypoints[keep], scores[keep], person_scores[keep]
        points = affine_points(keypoints, invert_affine(matrix))  # input pixels -> image pixels
        return PoseResult(keypoint_boxes(points, scores), person_scores, points, scores)


def load_pipeline(model: str | os.PathLike | PoseModel, detector: str | os.PathLike | PersonDetector | None = None,
                  **options: Any) -> TopDownPipeline | BottomUpPipeline:
    """The pipeline of an exported model's kind (``options`` go to :class:`PoseModel` first, the rest to the
    pipeline: ``num_threads``, ``device``, ``flip_test``, ``score_threshold`` ...)."""
    model_keys = ("input_size", "mean", "std", "split_ratio", "codec", "kind", "keypoint_names", "skeleton",
                  "flip_index", "udp", "padding", "channel_order")
    model_options = {k: v for k, v in ((k, options.pop(k, None)) for k in model_keys) if v is not None}
    if not isinstance(model, PoseModel):
        model = PoseModel(model, num_threads=options.get("num_threads"), device=options.get("device", "cpu"),
                          **model_options)
    if model.kind == "topdown":
        return TopDownPipeline(model, detector, **options)
    if model.kind == "bottomup":
        if detector is not None:
            raise PoseforgeError(f"{model.path.name} is a bottom-up model: it finds every person itself; "
                                 "give no detector")
        options = {k: v for k, v in options.items() if k not in ("flip_test", "score_threshold")}
        return BottomUpPipeline(model, **options)
    raise PoseforgeError(f"{model.path.name} is a {model.kind} model: the runtime pipelines run top-down and "
                         "bottom-up pose models")


# ---------------------------------------------------------------------------------------------- inputs
@dataclasses.dataclass
class Frame:
    """One image to process: ``image`` (``H x W x 3`` uint8 BGR), its ``source`` file, ``index`` (the frame
    number in a video, 0 for images) and ``fps`` (videos)."""

    image: np.ndarray
    source: Path
    index: int = 0
    fps: float | None = None


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as ``H x W x 3`` uint8 BGR (one-line error when it cannot be read)."""
    path = Path(path)
    try:
        data = np.fromfile(str(path), dtype=np.uint8)  # (np.fromfile + imdecode: non-ASCII paths work too)
    except OSError as e:
        raise PoseforgeError(f"{path}: cannot read ({e.strerror or e})") from None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise PoseforgeError(f"{path}: not an image OpenCV can decode")
    return image


def list_inputs(source: str | os.PathLike) -> list[Path]:
    """The files of an input: an image or video file itself, or a folder's images (sorted, not recursive)."""
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise PoseforgeError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        return files
    if not path.is_file():
        raise PoseforgeError(f"{path}: no such file or folder")
    if path.suffix.lower() not in IMAGE_SUFFIXES + VIDEO_SUFFIXES:
        raise PoseforgeError(f"{path}: not an image ({', '.join(IMAGE_SUFFIXES)}) or video "
                             f"({', '.join(VIDEO_SUFFIXES)})")
    return [path]


def is_video(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a video file (by its suffix)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def iter_frames(source: str | os.PathLike | Sequence[str | os.PathLike]) -> Iterator[Frame]:
    """The frames of an image, a folder of images, a video or a list of such files, streamed (a video is
    decoded one frame at a time)."""
    files = [Path(p) for p in source] if isinstance(source, (list, tuple)) else list_inputs(source)
    for path in files:
        if not is_video(path):
            yield Frame(read_image(path), path)
            continue
        capture = cv2.VideoCapture(str(path))
        if not capture.isOpened():
            raise PoseforgeError(f"{path}: OpenCV cannot open this video")
        fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
        try:
            index = 0
            while True:
                ok, image = capture.read()
                if not ok:
                    break
                yield Frame(image, path, index, fps)
                index += 1
            if index == 0:
                raise PoseforgeError(f"{path}: no frames could be decoded")
        finally:
            capture.release()
