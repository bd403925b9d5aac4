"""Run a top-down model over a COCO-format dataset and score it (what ``poseforge eval --model`` and the
trainer's validation do).

* :class:`EvalSet` - ground truth plus the boxes to predict in: a COCO keypoint file (its images are
  decoded with OpenCV) or held-out synthetic people (rendered on demand); ground-truth boxes by
  default, or a COCO detection results file.
* :func:`predict_boxes` - crops every box (``TopDownTransform`` without augmentation, the UDP warp for
  UDP codecs), runs ``model.predict`` in batches (flip test on or off) and maps the keypoints back to
  image pixels with :func:`~poseforge.data.transforms.crop_to_image`. DataLoader workers decode and
  crop; under ``torch.distributed`` every process takes an equal share of the batches.
* :func:`evaluate_model` - predictions -> COCO results -> mmpose's ``CocoMetric`` steps (rescoring by
  box x mean keypoint score over 0.2, OKS-NMS 0.9) -> OKS AP/AR.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..data.coco import CocoKeypoints, read_coco
from ..data.images import load_image
from ..data.records import ImageInfo, PoseInstance, json_floats
from ..data.transforms import TopDownTransform, crop_to_image
from ..errors import PoseforgeError, data_error
from ..io import read_json
from .coco import evaluate_keypoints
from .postprocess import oks_nms, rescore_results

__all__ = ["EvalSet", "EvalResult", "coco_eval_set", "synthetic_eval_set", "find_coco_split", "read_detections",
           "predict_boxes", "evaluate_model", "height_normalized_errors", "model_height_error", "load_eval_model", "parse_synthetic_spec", "run_model_command"]

log = logging.getLogger("poseforge")

# (annotation file, image folder) candidates inside a dataset folder, per split.
_SPLIT_LAYOUTS = {
    "train": (("annotations/person_keypoints_train2017.json", "train2017"), ("train/annotations.json", "train/images"),
              ("train.json", "images"), ("annotations.json", "images")),
    "val": (("annotations/person_keypoints_val2017.json", "val2017"), ("val/annotations.json", "val/images"),
            ("val.json", "images")),
}


def find_coco_split(path: str | os.PathLike, split: str) -> tuple[Path, Path | None]:
    """``(annotation JSON, image folder or None for the reader's default)`` of a split.

    ``path`` is a COCO keypoint JSON (used as is) or a folder in the COCO 2017 layout
    (``annotations/person_keypoints_{split}2017.json`` + ``{split}2017/``) or the layout
    ``poseforge synth`` writes (``{split}/annotations.json`` + ``{split}/images/``).
    """
    path = Path(path)
    if path.is_file():
        return path, None
    if not path.is_dir():
        raise PoseforgeError(f"{path}: no such dataset file or folder")
    for ann, images in _SPLIT_LAYOUTS[split]:
        if (path / ann).is_file():
            root = path / images
            return path / ann, (root if root.is_dir() else None)
    tried = ", ".join(a for a, _ in _SPLIT_LAYOUTS[split])
    raise PoseforgeError(f"{path}: no {split} annotations found (looked for {tried})")


@dataclass
class EvalSet:
    """Ground truth and the boxes to predict in.

    Attributes:
        name: what to call the set in logs and tables.
        gt: the ground truth (records without pixels).
        image_ids, boxes, box_scores: the boxes (x, y, w, h) to run the model on, grouped by image.
        clip_boxes: clip boxes to the image before cropping (mmpose does for annotations, not detections).
        load_images: ``image ids -> {id: H x W x 3 uint8 RGB}`` (called in DataLoader workers).
    """

    name: str
    gt: CocoKeypoints
    image_ids: np.ndarray
    boxes: np.ndarray
    box_scores: np.ndarray
    clip_boxes: bool
    load_images: Callable[[Sequence[int]], dict[int, np.ndarray]]

    def __len__(self) -> int:
        return int(len(self.image_ids))


def _gt_boxes(gt: CocoKeypoints) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    kept = [i for i in gt.instances if not i.iscrowd]
    order = {image_id: n for n, image_id in enumerate(gt.images)}
    kept.sort(key=lambda i: order[i.image_id])
    ids = np.asarray([i.image_id for i in kept], dtype=np.int64)
    boxes = np.stack([np.asarray(i.bbox, dtype=np.float64) for i in kept]) if kept else np.zeros((0, 4))
    return ids, boxes, np.ones(len(kept))


def read_detections(path: str | os.PathLike, gt: CocoKeypoints, score_threshold: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Person boxes of a COCO detection results file: ``(image_ids, boxes xywh, scores)``.

    Only records of the ground truth's category (person) are used; images absent from the ground
    truth, malformed boxes and scores are a one-line :class:`DataError` naming the record.
    """
    file = str(path)
    records = read_json(path)
    if not isinstance(records, list):
        raise data_error(file, None, None, f"expected a list of COCO detection results, got {type(records).__name__}")
    categories = {int(c["id"]) for c in gt.categories if isinstance(c, dict) and "id" in c} or {1}
    ids, boxes, scores = [], [], []
    for n, r in enumerate(records):
        label = f"detection {n}"
        if not isinstance(r, dict):
            raise data_error(file, label, None, f"expected an object, got {type(r).__name__}")
        for key in ("image_id", "bbox", "score"):
            if key not in r:
                raise data_error(file, label, key, "missing")
        if r.get("category_id", 1) not in categories:
            continue
        if r["image_id"] not in gt.images:
            raise data_error(file, label, "image_id", f"unknown image id {r['image_id']!r:.40} (not in {gt.source})")
        box = r["bbox"]
        if not isinstance(box, (list, tuple)) or len(box) != 4 or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in box):
            raise data_error(file, label, "bbox", f"expected 4 numbers (x, y, width, height), got {box!r:.60}")
        if not all(math.isfinite(v) for v in box) or box[2] <= 0 or box[3] <= 0:
            raise data_error(file, label, "bbox", f"expected a finite box with positive size, got {box}")
        score = r["score"]
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise data_error(file, label, "score", f"expected a number, got {score!r:.40}")
        if score < score_threshold:
            continue
        ids.append(r["image_id"])
        boxes.append(box)
        scores.append(score)
    order = {image_id: n for n, image_id in enumerate(gt.images)}
    idx = sorted(range(len(ids)), key=lambda i: order[ids[i]])
    return (np.asarray([ids[i] for i in idx], dtype=np.int64), np.asarray([boxes[i] for i in idx], dtype=np.float64).reshape(-1, 4),
            np.asarray([scores[i] for i in idx], dtype=np.float64))


class _FileImages:
    """Picklable image loader for DataLoader workers: image id -> decoded file."""

    def __init__(self, paths: dict[int, str]) -> None:
        self.paths = paths

    def __call__(self, image_ids: Sequence[int]) -> dict[int, np.ndarray]:
        return {i: load_image(self.paths[i]) for i in dict.fromkeys(image_ids)}


def coco_eval_set(annotations: str | os.PathLike, boxes: str | os.PathLike | None = None,
                  image_root: str | os.PathLike | None = None, keypoint_set: str | None = None) -> EvalSet:
    """An :class:`EvalSet` of a COCO keypoint file (or dataset folder: its val split) with its
    ground-truth boxes, or the person boxes of a detection results file ``boxes``."""
    path, root = find_coco_split(annotations, "val") if Path(annotations).is_dir() else (Path(annotations), None)
    gt = read_coco(path, image_root=image_root or root, keypoint_set=keypoint_set)
    if boxes is None:
        ids, xywh, scores = _gt_boxes(gt)
    else:
        ids, xywh, scores = read_detections(boxes, gt)
    paths = {i: info.path for i, info in gt.images.items()}
    name = f"{path}" + (f" + {boxes}" if boxes else "")
    return EvalSet(name, gt, ids, xywh, scores, clip_boxes=boxes is None, load_images=_FileImages(paths))


class _SyntheticImages:
    """Picklable renderer of held-out synthetic images (rendered in vectorized groups)."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings
        self._dataset = None

    def __getstate__(self) -> dict[str, Any]:
        return {"settings": self.settings, "_dataset": None}

    def dataset(self):
        if self._dataset is None:
            from ..data.synth import SyntheticPoseDataset

            self._dataset = SyntheticPoseDataset(**self.settings)
        return self._dataset

    def __call__(self, image_ids: Sequence[int]) -> dict[int, np.ndarray]:
        unique = list(dict.fromkeys(int(i) for i in image_ids))
        return {r.index: r.image for r in self.dataset().render_batch(unique)}


def synthetic_eval_set(num_images: int = 200, seed: int = 1_000_003, image_size: Sequence[int] = (192, 256),
                       people: Sequence[int] = (1, 1), keypoint_set: str = "coco17", clutter: bool = True) -> EvalSet:
    """Held-out synthetic people with ground-truth boxes (rendered once here for the labels; the
    pixels are rendered again by the workers, identically, since image ``i`` depends on ``(seed, i)`` only)."""
    settings = dict(num_images=int(num_images), seed=int(seed), image_size=tuple(int(v) for v in image_size),
                    people=tuple(int(v) for v in people), keypoint_set=keypoint_set, clutter=bool(clutter))
    renderer = _SyntheticImages(settings)
    dataset = renderer.dataset()
    images: dict[int, ImageInfo] = {}
    instances: list[PoseInstance] = []
    for rendered in dataset.render_batch(range(len(dataset))):
        images[rendered.index] = dataset.image_info(rendered.index)
        for inst in rendered.instances:
            instances.append(inst.copy(image=None, extras={}))
    ks = dataset.keypoint_set
    categories = [{"id": 1, "name": ks.category, "keypoints": list(ks.names)}]
    name = f"synthetic(seed={seed}, images={num_images}, size={settings['image_size'][0]}x{settings['image_size'][1]}, " \
           f"people={settings['people'][0]}-{settings['people'][1]})"
    gt = CocoKeypoints(name, ks, images, instances, categories)
    ids, xywh, scores = _gt_boxes(gt)
    return EvalSet(name, gt, ids, xywh, scores, clip_boxes=True, load_images=renderer)


_SPEC_KEYS = {"images": "num_images", "n": "num_images", "seed": "seed", "size": "image_size", "people": "people",
              "clutter": "clutter", "keypoints": "keypoint_set"}


def parse_synthetic_spec(spec: str, defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """``"synthetic"`` or ``"synthetic:seed=7,images=500,size=192x256,people=1-1"`` -> keyword arguments
    of :func:`synthetic_eval_set` (``defaults`` fill what the spec leaves out)."""
    out = dict(defaults or {})
    head, _, rest = spec.partition(":")
    if head.strip().lower() != "synthetic":
        raise PoseforgeError(f"--data {spec}: expected 'synthetic' or 'synthetic:key=value,...'")
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep or key.strip() not in _SPEC_KEYS:
            raise PoseforgeError(f"--data {spec}: bad item '{item}'; keys: {', '.join(sorted(set(_SPEC_KEYS) - {'n'}))}")
        name = _SPEC_KEYS[key.strip()]
        value = value.strip()
        try:
            if name in ("num_images", "seed"):
                out[name] = int(value)
            elif name in ("image_size", "people"):
                a, b = re.split(r"[x\-]", value)
                out[name] = (int(a), int(b))
            elif name == "clutter":
                out[name] = value.lower() in ("1", "true", "yes", "on")
            else:
                out[name] = value
        except ValueError:
            raise PoseforgeError(f"--data {spec}: bad value for {key.strip()}: '{value}'") from None
    return out


# ---------------------------------------------------------------------------------------------- prediction
class _CropBatches(torch.utils.data.Dataset):
    """Item ``i`` = the crops of boxes ``order[i*B:(i+1)*B]`` (images decoded or rendered once per item)."""

    def __init__(self, data: EvalSet, order: np.ndarray, batch_size: int, transform: TopDownTransform) -> None:
        self.data, self.order, self.batch_size, self.transform = data, order, batch_size, transform
        self.num_keypoints = data.gt.keypoint_set.num_keypoints

    def __len__(self) -> int:
        return (len(self.order) + self.batch_size - 1) // self.batch_size

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        jobs = self.order[item * self.batch_size:(item + 1) * self.batch_size]
        images = self.data.load_images([int(self.data.image_ids[j]) for j in jobs])
        crops, matrices, scales = [], [], []
        k = self.num_keypoints
        for j in jobs:
            image_id = int(self.data.image_ids[j])
            image = images[image_id]
            record = PoseInstance(image_id=image_id, image_path=None, image_size=(image.shape[1], image.shape[0]),
                                  bbox=self.data.boxes[j], keypoints=np.zeros((k, 2)), visibility=np.zeros(k),
                                  keypoint_set=self.data.gt.keypoint_set.name)
            sample = self.transform(record, image)
            crops.append(sample["image"])
            matrices.append(sample["matrix"])
            scales.append(sample["scale"])
        return {"image": torch.stack(crops), "matrix": torch.stack(matrices), "scale": torch.stack(scales),
                "jobs": torch.as_tensor(jobs, dtype=torch.int64)}


def _dist_info() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def predict_boxes(model: torch.nn.Module, data: EvalSet, *, flip_test: bool | None = None, batch_size: int = 64,
                  num_workers: int = 0, device: torch.device | str | None = None,
                  progress: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:
    """Predict keypoints in every box of ``data``; COCO result records (image pixels), box order.

    Each record: ``image_id``, ``category_id``, ``keypoints`` (flat x, y, score), ``score`` (the box
    score; :func:`evaluate_model` rescores), ``area`` (the crop box area, for OKS-NMS). Under
    ``torch.distributed`` every process predicts an equal share (padded) and gets all records back.
    """
    from ..train.optim import unwrap_model

    estimator = unwrap_model(model)
    config = estimator.config
    codec_name = getattr(estimator.codec, "name", "")
    transform = TopDownTransform(tuple(config.input_size), data.gt.keypoint_set, use_udp=codec_name == "udp",
                                 augment=False, clip_bbox=data.clip_boxes)
    if estimator.keypoint_set.name != data.gt.keypoint_set.name:
        raise PoseforgeError(f"{config.name} predicts {estimator.keypoint_set.name} keypoints but {data.name} "
                             f"is labeled with {data.gt.keypoint_set.name}")
    rank, world = _dist_info()
    n = len(data)
    per_rank = (n + world - 1) // world if n else 0
    per_rank = (per_rank + batch_size - 1) // batch_size * batch_size if world > 1 else per_rank
    order = np.arange(rank * per_rank, (rank + 1) * per_rank)
    real = order < n
    order = np.minimum(order, max(n - 1, 0))[: len(order) if n else 0]  # padding repeats the last box
    device = torch.device(device) if device is not None else next(estimator.parameters()).device
    if num_workers > 0:
        import cv2

        cv2.setNumThreads(1)  # before forking: OpenCV's thread pool is not fork-safe (see train.data)
    loader = torch.utils.data.DataLoader(
        _CropBatches(data, order, batch_size, transform), batch_size=None,
        num_workers=num_workers, generator=torch.Generator(), pin_memory=device.type == "cuda",
        worker_init_fn=_worker_init, persistent_workers=False)
    keypoints = np.zeros((len(order), estimator.keypoint_set.num_keypoints, 3))
    areas = np.zeros(len(order))
    done = 0
    was_training = model.training
    model.eval()
    try:
        for batch in loader:
            images = batch["image"].to(device, non_blocking=True)
            with torch.no_grad(), _autocast(device):
                pred = model.predict(images, flip_test=flip_test) if hasattr(model, "predict") else estimator.predict(images, flip_test=flip_test)
            image_xy = crop_to_image(pred.keypoints.float().cpu().double(), batch["matrix"].double())
            rows = slice(done, done + len(images))
            keypoints[rows, :, :2] = image_xy.numpy()
            keypoints[rows, :, 2] = pred.scores.float().cpu().numpy()
            areas[rows] = batch["scale"].double().prod(-1).numpy()
            done += len(images)
            if progress is not None:
                progress(done, len(order))
    finally:
        model.train(was_training)
    keypoints, areas, order = keypoints[real], areas[real], order[real]
    if world > 1:
        gathered: list[Any] = [None] * world
        torch.distributed.all_gather_object(gathered, (order, keypoints, areas))
        order = np.concatenate([g[0] for g in gathered])
        keypoints = np.concatenate([g[1] for g in gathered])
        areas = np.concatenate([g[2] for g in gathered])
    category = int(next((c["id"] for c in data.gt.categories if isinstance(c, dict) and "id" in c), 1))
    return [{"image_id": int(data.image_ids[j]), "category_id": category,
             "keypoints": json_floats(keypoints[i].reshape(-1)), "score": float(data.box_scores[j]), "area": float(areas[i])}
            for i, j in enumerate(order.tolist())]


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


@dataclass
class EvalResult:
    """Stats (``AP``, ``AP50``, ...) and the scored COCO results (rescored, after OKS-NMS)."""

    stats: dict[str, float]
    results: list[dict[str, Any]] = field(repr=False)


def evaluate_model(model: torch.nn.Module, data: EvalSet, *, flip_test: bool | None = None, batch_size: int = 64,
                   num_workers: int = 0, device: torch.device | str | None = None, nms_thr: float | None = 0.9,
                   keypoint_score_thr: float = 0.2, progress: Callable[[int, int], None] | None = None) -> EvalResult:
    """Predict every box of ``data`` and score it like mmpose's ``CocoMetric`` (bbox_keypoint rescoring,
    OKS-NMS ``nms_thr`` per image, OKS AP/AR). Under ``torch.distributed`` all processes must call it;
    all get the same result."""
    raw = predict_boxes(model, data, flip_test=flip_test, batch_size=batch_size, num_workers=num_workers,
                        device=device, progress=progress)
    results = rescore_results(raw, "bbox_keypoint", keypoint_score_thr)
    if nms_thr is not None:
        results = oks_nms(results, nms_thr, data.gt.keypoint_set)
    if not results:
        log.warning(f"{data.name}: no boxes to predict in; stats are -1")
    stats = evaluate_keypoints(data.gt, results, data.gt.keypoint_set.name)
    return EvalResult(stats, results)


# ---------------------------------------------------------------------------------------------- models
def load_eval_model(path: str | os.PathLike, device: torch.device | str = "cpu") -> torch.nn.Module:
    """A model to evaluate: a model folder / ``.safetensors`` file (``save_pretrained``), a training run
    folder (its ``best/`` model, else the weights in ``last.pt``), a training checkpoint ``.pt``, or
    ``"bundled"`` (the pose model shipped with poseforge)."""
    from ..models import load_model

    if str(path) == "bundled":
        return load_model("bundled", device=device)
    path = Path(path)
    if path.is_dir() and not (path / "model.safetensors").is_file():
        if (path / "best" / "model.safetensors").is_file():
            return load_model(path / "best", device=device)
        if (path / "last.pt").is_file():
            path = path / "last.pt"
        else:
            raise PoseforgeError(f"{path}: not a model folder or training run (no model.safetensors, best/ or last.pt)")
    if path.suffix == ".pt":
        from ..models.estimator import model_from_state_dict
        from ..train.checkpoint import load_checkpoint

        state = load_checkpoint(path)
        if "model_config" not in state:
            raise PoseforgeError(f"{path}: training checkpoint without a model config")
        weights = state["ema"]["module"] if state.get("ema") else state["model"]
        return model_from_state_dict(state["model_config"], weights, str(path), device)
    if not path.exists():
        raise PoseforgeError(f"{path}: no such model folder or file")
    return load_model(path, device=device)


# ---------------------------------------------------------------------------------------------- command
def run_model_command(args: Any) -> int:
    """``poseforge eval --model ... --data ...``: predict, print the AP table, optionally write results."""
    from ..io import write_json_atomic as write_json
    from ..train.engine import resolve_device
    from .coco import format_table

    if args.results is not None or args.gt is not None:
        raise PoseforgeError("--model runs a model on --data; it does not take --gt or --results")
    if args.batch_size < 1 or args.workers < 0:
        raise PoseforgeError("--batch-size must be >= 1 and --workers >= 0")
    device = resolve_device(args.device)
    model = load_eval_model(args.model, device=device)
    model.to(memory_format=torch.channels_last)  # NHWC convolutions, as the Predictor and training validation
    data = args.data or "synthetic"
    if data.lower().startswith("synthetic"):
        if args.boxes:
            raise PoseforgeError("--boxes needs a COCO --data (synthetic sets use their ground-truth boxes)")
        eval_set = synthetic_eval_set(**parse_synthetic_spec(data, _synthetic_defaults(args.model, model)))
    else:
        eval_set = coco_eval_set(data, args.boxes, keypoint_set=model.keypoint_set.name)
    result = evaluate_model(model, eval_set, flip_test=args.flip, batch_size=args.batch_size, num_workers=args.workers,
                            device=device)
    flip = model.config.flip_test if args.flip is None else args.flip
    print(format_table(result.stats, title=f"{args.model} on {eval_set.name} (flip test {'on' if flip else 'off'})"))
    if args.out:
        write_json(args.out, result.results)
        log.info(f"wrote {len(result.results)} results to {args.out}")
    if args.json:
        write_json(args.json, result.stats, indent=2)
        log.info(f"wrote {args.json}")
    return 0


def _training_config(folder: Path) -> Any:
    """The training config recorded in ``folder``: a run's ``config.yaml`` or an export's ``training.json``."""
    from ..train.config import config_from_dict, load_config

    if (folder / "config.yaml").is_file():
        return load_config(folder / "config.yaml")
    record = folder / "training.json"
    if record.is_file():
        try:
            data = json.loads(record.read_text())
        except json.JSONDecodeError as err:
            raise PoseforgeError(f"{record}: not valid JSON ({err})") from None
        if isinstance(data, dict) and isinstance(data.get("config"), dict):
            return config_from_dict(data["config"], where=f"{record}: config")
    return None


def _synthetic_defaults(model_path: str, model: torch.nn.Module) -> dict[str, Any]:
    """The held-out set of the training run the model comes from (a run's config.yaml or an exported
    model's training.json), else defaults."""
    defaults = {"keypoint_set": model.keypoint_set.name}
    if str(model_path) == "bundled":
        from ..assets import asset_path

        model_path = asset_path("pose")
    path = Path(model_path)
    for folder in (path, path.parent, path.parent.parent):
        config = _training_config(folder)
        if config is not None:
            s = config.data.synthetic
            defaults.update(num_images=s.val_images, seed=s.val_seed, image_size=s.image_size, people=s.val_people,
                            clutter=s.clutter)
            break
    return defaults


def height_normalized_errors(predicted: np.ndarray, keypoints: np.ndarray, labeled: np.ndarray,
                             boxes: np.ndarray) -> np.ndarray:
    """Per person: mean pixel error of the labeled keypoints / box height (people with none labeled
    are left out). ``predicted``, ``keypoints``: (N, K, 2); ``labeled``: (N, K) bool; ``boxes``: (N, 4) xywh."""
    predicted, keypoints = np.asarray(predicted, np.float64), np.asarray(keypoints, np.float64)
    labeled, boxes = np.asarray(labeled, bool), np.asarray(boxes, np.float64)
    distance = np.linalg.norm(predicted - keypoints, axis=-1)
    per_person = (distance * labeled).sum(1) / np.maximum(labeled.sum(1), 1) / np.maximum(boxes[:, 3], 1e-9)
    return per_person[labeled.any(1)]


def model_height_error(model: torch.nn.Module, data: EvalSet, *, flip_test: bool | None = True) -> float:
    """Median over people of :func:`height_normalized_errors` for ``model`` in ``data``'s ground-truth
    boxes: a scale-free localization error that moves long before OKS AP does."""
    truth = {}
    for inst in data.gt.instances:
        if inst.image_id in truth:
            raise PoseforgeError(f"{data.name}: model_height_error needs one person per image")
        truth[inst.image_id] = inst
    rows = [(np.asarray(r["keypoints"], np.float64).reshape(-1, 3)[:, :2], truth[r["image_id"]])
            for r in predict_boxes(model, data, flip_test=flip_test, num_workers=0)]
    if not rows:
        raise PoseforgeError(f"{data.name}: no boxes to score")
    return float(np.median(height_normalized_errors(
        np.stack([p for p, _ in rows]), np.stack([np.asarray(i.keypoints)[:, :2] for _, i in rows]),
        np.stack([np.asarray(i.visibility) > 0 for _, i in rows]), np.stack([np.asarray(i.bbox) for _, i in rows]))))
