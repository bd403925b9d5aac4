"""Pseudo-labels for self-training: a teacher model labels a folder of unlabeled images as a COCO file.

>>> from poseforge.train.pseudo import pseudo_label
>>> pseudo_label("runs/pose/best", "frames/", "frames_pseudo.json", threshold=0.5)

The teacher predicts every image of the folder and its sub-folders (a :class:`~poseforge.inference.Predictor`:
a top-down teacher estimates poses in the boxes of a person detector, as ``poseforge predict`` does; a
bottom-up one finds the people itself). A keypoint scoring at least ``threshold`` becomes a label
(visibility 2); the others stay unlabeled (visibility 0, x = y = 0, as COCO writes them). A person with
fewer than ``min_keypoints`` labels keeps its box but no labeled keypoint (``num_keypoints`` 0): it gives no
training sample, and a bottom-up loss ignores its region instead of learning it as background. Boxes are
the detector's (top-down) or the keypoints' (bottom-up), clipped to the image. The file's ``info`` records
how it was made (``info["pseudo_labels"]``: teacher, images, threshold, min_keypoints, detector).

Self-training (``poseforge train --unlabeled DIR``, ``data.unlabeled``): before the Trainer builds its
data, :func:`prepare_pseudo_labels` labels the images into the run folder (or reuses the file there: a
resumed run never relabels), and :func:`~poseforge.train.data.build_self_training_source` mixes them
into the training data. Validation stays on the configured held-out set.
"""
from __future__ import annotations

import logging
import os
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..data.coco import write_coco
from ..data.images import load_image
from ..data.records import ImageInfo, PoseInstance
from ..data.synth.parallel import render_progress
from ..errors import PoseforgeError
from ..io import read_json
from .config import TrainConfig, apply_overrides

__all__ = ["pseudo_label", "prepare_pseudo_labels", "image_files", "PseudoLabels", "PSEUDO_LABELS_FILE", "INFO_KEY"]

log = logging.getLogger("poseforge")

PSEUDO_LABELS_FILE = "pseudo_labels.json"  # in the run folder, unless data.unlabeled.labels names another
INFO_KEY = "pseudo_labels"  # the settings record in the file's "info"


@dataclass
class PseudoLabels:
    """What :func:`pseudo_label` wrote: ``images`` labelled, ``people`` kept as training people (at least
    ``min_keypoints`` labels), ``dropped`` people found with fewer, ``keypoints`` labeled in all."""

    path: Path
    images: int
    people: int
    dropped: int
    keypoints: int
    keypoint_set: str
    settings: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        def people(n: int) -> str:
            return f"{n} {'person' if n == 1 else 'people'}"

        return (f"{self.path}: {self.images} images, {people(self.people)} with >= {self.settings.get('min_keypoints')} "
                f"keypoints scoring >= {self.settings.get('threshold')} ({self.keypoints} labeled {self.keypoint_set} "
                f"keypoints), {people(self.dropped)} with fewer (not trained on)")


# ---------------------------------------------------------------------------------------------- inputs
def image_files(folder: str | os.PathLike) -> list[Path]:
    """The images (by extension, :data:`~poseforge.inference.predictor.IMAGE_SUFFIXES`) in ``folder`` and its
    sub-folders, sorted by relative path; hidden files and folders are left out. A missing folder or one
    without images is a one-line :class:`PoseforgeError`."""
    from ..inference.predictor import IMAGE_SUFFIXES

    folder = Path(folder)
    if not folder.is_dir():
        raise PoseforgeError(f"{folder}: {'not a folder' if folder.exists() else 'no such folder'} (the unlabeled images)")
    files = [p for p in folder.rglob("*")
             if p.suffix.lower() in IMAGE_SUFFIXES and not any(part.startswith(".") for part in p.relative_to(folder).parts)
             and p.is_file()]
    if not files:
        raise PoseforgeError(f"{folder}: no images ({', '.join(s.lstrip('.') for s in IMAGE_SUFFIXES[:4])} ...) in the "
                             "folder or below")
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def _check_settings(threshold: Any, min_keypoints: Any) -> tuple[float, int]:
    try:
        t = float(threshold)
    except (TypeError, ValueError):
        t = float("nan")
    if isinstance(threshold, bool) or not 0.0 <= t <= 1.0:
        raise PoseforgeError(f"pseudo-label threshold: expected a keypoint score in [0, 1], got {threshold!r}")
    if isinstance(min_keypoints, bool) or not isinstance(min_keypoints, (int, np.integer)) or min_keypoints < 1:
        raise PoseforgeError(f"pseudo-label min_keypoints: expected a positive integer, got {min_keypoints!r}")
    return t, int(min_keypoints)


# ---------------------------------------------------------------------------------------------- labelling
def _people(result: Any, image_id: int, first_id: int, path: str, threshold: float,
            min_keypoints: int) -> tuple[list[PoseInstance], int, int]:
    """One image's teacher result -> ``(instances, people kept, labeled keypoints)`` (module doc)."""
    scores = np.asarray(result.keypoint_scores, dtype=np.float32)
    labeled = scores >= threshold  # (NaN scores: never a label)
    keep = labeled.sum(1) >= min_keypoints
    labeled &= keep[:, None]
    keypoints = np.where(labeled[..., None], np.asarray(result.keypoints, dtype=np.float32), np.float32(0))
    visibility = np.where(labeled, np.float32(2), np.float32(0))
    width, height = result.image_size
    boxes = np.asarray(result.boxes, dtype=np.float32).reshape(-1, 4)
    boxes = np.clip(np.nan_to_num(boxes), 0, np.array([width, height, width, height], dtype=np.float32))
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1)
    box_scores = np.asarray(result.box_scores, dtype=np.float64).reshape(-1)
    instances = [PoseInstance(image_id, path, (width, height), xywh[i], keypoints[i], visibility[i],
                              result.keypoint_set, area=round(float(xywh[i, 2]) * float(xywh[i, 3]), 2),
                              instance_id=first_id + i, score=float(box_scores[i]) if i < len(box_scores) else 1.0)
                 for i in range(len(scores))]
    return instances, int(keep.sum()), int(labeled.sum())


def pseudo_label(model: Any, image_dir: str | os.PathLike, out: str | os.PathLike, *, threshold: float = 0.5,
                 min_keypoints: int = 5, detector: Any = "auto", device: Any = "auto", flip_test: bool = True,
                 box_score_threshold: float | None = None, force: bool = False, verify: bool | None = None,
                 progress: Callable[[int, int], None] | None = None) -> PseudoLabels:
    """Label every image of ``image_dir`` (and its sub-folders) with the teacher ``model`` and write the
    COCO keypoint file ``out`` atomically (module doc).

    Args:
        model: the teacher: an estimator, a weights name (``"bundled"``, ``"rtmpose-m"`` ...), a model
            folder, ``.safetensors`` or training run folder (what :class:`~poseforge.inference.Predictor` takes).
        threshold: keypoints scoring at least this (in [0, 1]) become labels.
        min_keypoints: people with fewer labels are not training people (kept as box-only annotations).
        detector: person boxes for a top-down teacher: ``"auto"``, ``"bundled"``, ``"rtmdet-nano"``, a
            ``.onnx`` export, a detection results ``.json``, a :class:`~poseforge.inference.detectors.Detector`,
            or ``"none"`` (the whole image is one person); as ``poseforge predict --detector``.
        box_score_threshold: drop detector boxes scoring at or below it (default: the detector's own).
        force: replace an existing ``out`` (otherwise a one-line error, before any model loads).
        progress: ``progress(done, total)`` after each image (default: a rich progress bar on a terminal,
            else a log line every few seconds).

    Raises:
        PoseforgeError: a threshold outside [0, 1], a missing or empty folder, an image that cannot be
            decoded (naming it), an existing ``out`` without ``force``, a teacher without keypoints.
    """
    threshold, min_keypoints = _check_settings(threshold, min_keypoints)
    out = Path(out)
    if out.is_dir():
        raise PoseforgeError(f"{out}: is a folder; the pseudo-labels are one COCO .json file")
    if out.exists() and not force:
        raise PoseforgeError(f"{out}: already exists; use --force (force=True) to replace it or choose another file")
    root = Path(image_dir)
    files = image_files(root)

    from ..inference.detectors.builtin import auto_detector_name
    from ..inference.predictor import Predictor

    if isinstance(detector, (str, os.PathLike)):
        spec = str(detector)
        detector = None if spec.lower() == "none" else auto_detector_name() if spec.lower() == "auto" else spec
    predictor = Predictor(model, detector=detector, device=device, flip_test=flip_test,
                          box_score_threshold=box_score_threshold, tracker=False, verify=verify)
    teacher = str(model) if isinstance(model, (str, os.PathLike)) else predictor.model.config.name
    if predictor.keypoint_set is None:
        raise PoseforgeError(f"{teacher}: predicts no keypoints (a dense model); pseudo-labels need a keypoint model")
    ks = predictor.keypoint_set
    used_detector = None
    if predictor.detector is not None:
        used_detector = detector if isinstance(detector, str) else type(predictor.detector).__name__
    elif predictor.model.needs_boxes:
        used_detector = "none"
    settings = {"teacher": teacher, "images": str(root), "threshold": threshold, "min_keypoints": min_keypoints,
                "detector": used_detector, "flip_test": bool(flip_test)}
    images: list[ImageInfo] = []
    instances: list[PoseInstance] = []
    people = keypoints = 0
    with render_progress(len(files), f"pseudo-labelling {root}") if progress is None else nullcontext(None) as advance:
        for image_id, path in enumerate(files, 1):
            array = load_image(path)  # an undecodable image: a one-line DataError naming it
            result = predictor.predict(array, key=str(path), keep_image=False)
            found, kept, labeled = _people(result, image_id, len(instances) + 1, str(path), threshold, min_keypoints)
            instances += found
            people += kept
            keypoints += labeled
            height, width = array.shape[:2]
            images.append(ImageInfo(image_id, path.relative_to(root).as_posix(), int(width), int(height), str(path)))
            advance(1) if progress is None else progress(image_id, len(files))
    write_coco(out, instances, images, ks, info={INFO_KEY: settings})
    return PseudoLabels(out, len(images), people, len(instances) - people, keypoints, ks.name, settings)


# ---------------------------------------------------------------------------------------------- training runs
def recorded_settings(path: str | os.PathLike) -> dict[str, Any]:
    """The settings a pseudo-label file records (``info["pseudo_labels"]``); empty for other COCO files."""
    doc = read_json(path)
    info = doc.get("info") if isinstance(doc, dict) else None
    settings = info.get(INFO_KEY) if isinstance(info, dict) else None
    return dict(settings) if isinstance(settings, dict) else {}


def _same(key: str, a: Any, b: Any) -> bool:
    if key in ("images", "teacher") and isinstance(a, str) and isinstance(b, str):
        return a == b or (Path(a).exists() and Path(b).exists() and Path(a).resolve() == Path(b).resolve())
    return a == b


def prepare_pseudo_labels(config: TrainConfig, run_dir: str | os.PathLike, *, resume: bool = False,
                          device: Any = "auto", label: bool = True) -> TrainConfig:
    """The pseudo-labels a self-training run (``config.data.unlabeled.images`` set) trains on, and its config
    with what they are recorded: ``data.unlabeled.labels`` (default ``run_dir/pseudo_labels.json``),
    ``teacher`` (default ``model.init``) and ``detector`` (``"auto"`` resolved). Without ``images`` the config
    comes back unchanged.

    An existing labels file is reused (the settings it records must match the config's; a resumed run
    thus trains on the labels it started with); a missing one is written by :func:`pseudo_label` with the
    teacher (``label=False``: not here; the other processes of a distributed run wait for the first) - on
    resume a missing file is an error, never a relabelling.
    """
    u = config.data.unlabeled
    if u.images is None:
        return config
    labels = Path(u.labels) if u.labels else Path(run_dir) / PSEUDO_LABELS_FILE
    teacher = u.teacher or config.model.init
    detector = u.detector
    if detector.lower() == "auto":
        from ..inference.detectors.builtin import auto_detector_name

        detector = auto_detector_name()
    wanted = {"teacher": teacher, "images": u.images, "threshold": u.threshold, "min_keypoints": u.min_keypoints,
              "detector": detector}
    if labels.exists():
        recorded = recorded_settings(labels)
        for key, value in wanted.items():
            if value is not None and recorded.get(key) is not None and not _same(key, recorded[key], value):
                raise PoseforgeError(f"{labels}: pseudo-labels made with {key} {recorded[key]!r}, but the config asks for "
                                     f"{value!r} (data.unlabeled); delete the file to label again, or match the setting")
        teacher = teacher or recorded.get("teacher")
        log.info(f"pseudo-labels: using {labels} (not labelling {u.images} again)")
    elif resume:
        raise PoseforgeError(f"{labels}: the pseudo-labels this run trained on are missing; labelling {u.images} again "
                             "could give other labels: restore the file, or start a new run")
    elif teacher is None:
        raise PoseforgeError(f"--unlabeled {u.images}: no teacher to label the images; give --teacher NAME|RUN "
                             "(data.unlabeled.teacher) or start from trained weights (model.init)")
    elif label:
        log.info(f"pseudo-labels: {teacher} labels {u.images} -> {labels}")
        written = pseudo_label(teacher, u.images, labels, threshold=u.threshold, min_keypoints=u.min_keypoints,
                               detector=detector, device=device)
        log.info(f"pseudo-labels: {written.summary()}")
    return apply_overrides(config, {"data.unlabeled.labels": str(labels), "data.unlabeled.teacher": teacher,
                                    "data.unlabeled.detector": detector})
