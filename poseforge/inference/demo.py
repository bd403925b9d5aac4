"""The demo (``poseforge demo``): the whole pipeline on fresh synthetic scenes, scored, in well under two minutes on a CPU.

1. render ``--images`` scenes of 1-4 synthetic people (a seed no training run used);
2. find people with the bundled detector and estimate their poses with the bundled ViTPose (flip test);
3. score COCO keypoint AP twice - in the ground-truth boxes and in the detected boxes - with mmpose's
   protocol (box x keypoint rescoring, OKS-NMS 0.9, OKS AP), and the detector's box AP;
4. write into ``--out``: ``overlays/scene_*.jpg`` (poses drawn), ``contact_sheet.jpg``,
   ``ground_truth.json`` (COCO), ``results_gt_boxes.json`` / ``results_detected.json`` (COCO results;
   ``poseforge eval --gt ... --results ... --rescore`` reproduces the APs) and ``summary.json``.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..errors import PoseforgeError
from ..io import write_bytes_atomic, write_json_atomic

__all__ = ["DEMO_SEED", "TRAINING_SEEDS", "DemoReport", "run_demo"]

log = logging.getLogger("poseforge")

DEMO_SEED = 7_000_007
# seeds of the bundled models' training and validation renders (pose: 0 / 1_000_003, detector: 0 / 2_000_003)
TRAINING_SEEDS = (0, 1_000_003, 2_000_003)
_JPEG_QUALITY = 90


@dataclass
class DemoReport:
    """What :func:`run_demo` measured and wrote."""

    out: Path
    num_images: int
    num_people: int
    pose_ap_gt_boxes: dict[str, float]
    pose_ap_detected: dict[str, float]
    detector_box_ap: dict[str, float]
    seconds: dict[str, float] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)


def _encode_jpeg(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY])
    if not ok:
        raise PoseforgeError("could not encode a JPEG image")
    return data.tobytes()


def run_demo(out: str | os.PathLike = "poseforge-demo", num_images: int = 48, seed: int = DEMO_SEED,
             image_size: tuple[int, int] = (640, 480), people: tuple[int, int] = (1, 4), model: Any = "bundled",
             detector: Any = "bundled", device: str = "auto", sheet_images: int = 12, console: Any = None) -> DemoReport:
    """Render, detect, estimate, score and draw (see the module doc). Prints progress to ``console``
    (a ``rich`` console; None = quiet)."""
    import torch

    from ..data.coco import CocoKeypoints, write_coco
    from ..data.synth import SyntheticPoseDataset
    from ..evaluation.boxes import evaluate_boxes
    from ..evaluation.coco import coco_metric
    from .drawing import add_banner, contact_sheet, put_label
    from .predictor import Predictor

    if num_images < 1:
        raise PoseforgeError(f"--images must be >= 1, got {num_images}")
    if seed in TRAINING_SEEDS:
        log.warning(f"seed {seed} was used to train the bundled models; the scores will be optimistic")
    say = console.print if console is not None else (lambda *a, **k: None)
    out = Path(out)
    seconds: dict[str, float] = {}
    start = time.perf_counter()

    # 1. scenes
    t = time.perf_counter()
    dataset = SyntheticPoseDataset(num_images, seed=seed, image_size=image_size, people=people)
    rendered = dataset.render_batch(range(num_images))
    seconds["render"] = time.perf_counter() - t
    num_people = sum(len(r.instances) for r in rendered)
    say(f"[bold]scenes [/]  {num_images} images {image_size[0]}x{image_size[1]}, {num_people} people, seed {seed} "
        f"[dim]({seconds['render']:.1f}s)[/]")

    # 2. models
    t = time.perf_counter()
    predictor = Predictor(model, detector=detector, device=device, flip_test=True, tracker=False)
    seconds["load"] = time.perf_counter() - t
    pose_cfg = predictor.model.config
    pose_params = sum(p.numel() for p in predictor.model.parameters()) / 1e6
    detector_params = sum(p.numel() for p in getattr(predictor.detector, "model", torch.nn.Module()).parameters()) / 1e6
    detector_name = "built-in detector" if type(predictor.detector).__name__ == "BuiltinDetector" else \
        getattr(predictor.detector, "name", "detector")
    say(f"[bold]models [/]  {pose_cfg.name} {pose_cfg.input_size[0]}x{pose_cfg.input_size[1]} ({pose_params:.1f}M) + "
        f"{detector_name}" + (f" ({detector_params:.1f}M)" if detector_params else "") + f", {predictor.device} "
        f"[dim]({seconds['load']:.1f}s)[/]")

    # 3. predict: ground-truth boxes and detected boxes
    t = time.perf_counter()
    ks = predictor.keypoint_set
    results_gt: list[dict[str, Any]] = []
    results_det: list[dict[str, Any]] = []
    detections: list[tuple[np.ndarray, np.ndarray]] = []
    overlays: list[np.ndarray] = []
    captions: list[str] = []
    for r in rendered:
        gt_boxes = np.stack([inst.bbox for inst in r.instances]) if r.instances else np.zeros((0, 4))
        by_gt = predictor.predict(r.image, boxes=gt_boxes, box_format="xywh", keep_image=False)
        found = predictor.predict(r.image)
        results_gt.extend(by_gt.to_coco(image_id=r.index))
        results_det.extend(found.to_coco(image_id=r.index))
        detections.append((found.boxes, found.box_scores))
        overlays.append(found.draw())
        captions.append(f"scene {r.index}: {len(found)} detected, {len(r.instances)} people")
    seconds["predict"] = time.perf_counter() - t
    say(f"[bold]predict[/]  poses in {len(results_gt)} true + {len(results_det)} detected boxes "
        f"[dim]({seconds['predict']:.1f}s)[/]")

    # 4. evaluate
    t = time.perf_counter()
    images = {r.index: dataset.image_info(r.index, f"scene_{r.index:04d}.jpg") for r in rendered}
    instances = [inst.copy(image=None, extras={}) for r in rendered for inst in r.instances]
    categories = [{"id": 1, "name": ks.category, "keypoints": list(ks.names)}]
    gt = CocoKeypoints(f"demo(seed={seed})", ks, images, instances, categories)
    stats_gt = coco_metric(gt, results_gt, ks.name) if results_gt else {"AP": 0.0}
    stats_det = coco_metric(gt, results_det, ks.name) if results_det else {"AP": 0.0}
    gt_xyxy = [np.asarray([[*i.bbox[:2], i.bbox[0] + i.bbox[2], i.bbox[1] + i.bbox[3]] for i in r.instances]).reshape(-1, 4)
               for r in rendered]
    gt_area = [np.asarray([i.area for i in r.instances]) for r in rendered]
    box_stats = evaluate_boxes(gt_xyxy, gt_area, [d[0] for d in detections], [d[1] for d in detections])
    seconds["evaluate"] = time.perf_counter() - t

    # 5. write
    t = time.perf_counter()
    files = []
    (out / "overlays").mkdir(parents=True, exist_ok=True)
    for r, image in zip(rendered, overlays):
        write_bytes_atomic(out / "overlays" / f"scene_{r.index:04d}.jpg", _encode_jpeg(image))
    files.append(f"{out / 'overlays'}/ ({len(overlays)} images)")
    shown = min(sheet_images, len(overlays))
    tiles = []
    for image, caption in zip(overlays[:shown], captions[:shown]):  # captions bottom-left: box tags sit top-left
        tiles.append(put_label(image.copy(), caption, (4, image.shape[0] - 4), (24, 24, 28), scale=image.shape[0] / 700))
    sheet = contact_sheet(tiles, cols=4 if shown >= 4 else shown, pad=4, background=(24, 24, 28))
    title = (f"poseforge demo  |  pose AP {stats_gt['AP']:.3f} in ground-truth boxes, {stats_det['AP']:.3f} in detected "
             f"boxes  |  detector box AP {box_stats['AP']:.3f}")
    sheet = add_banner(sheet, title)
    write_bytes_atomic(out / "contact_sheet.jpg", _encode_jpeg(sheet))
    files.append(str(out / "contact_sheet.jpg"))
    write_coco(out / "ground_truth.json", instances, images.values(), ks)
    write_json_atomic(out / "results_gt_boxes.json", results_gt)
    write_json_atomic(out / "results_detected.json", results_det)
    files += [str(out / n) for n in ("ground_truth.json", "results_gt_boxes.json", "results_detected.json")]
    seconds["write"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - start
    report = DemoReport(out, num_images, num_people, stats_gt, stats_det, box_stats, seconds, files)
    write_json_atomic(out / "summary.json", {
        "seed": seed, "images": num_images, "image_size": list(image_size), "people": num_people,
        "pose_model": pose_cfg.name, "detector": repr(predictor.detector), "device": str(predictor.device),
        "pose_ap_gt_boxes": stats_gt, "pose_ap_detected_boxes": stats_det, "detector_box_ap": box_stats,
        "seconds": {k: round(v, 2) for k, v in seconds.items()}}, indent=2)
    files.append(str(out / "summary.json"))
    return report
