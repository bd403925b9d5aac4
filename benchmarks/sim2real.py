"""Sim-to-real: how well pose models and person detectors trained only on synthetic people see real people.

The one measurement of issue 31: every change to the renderer or the recipe is judged by this table.
Each ``--model`` (default: the shipped ``vitpose-tiny.synth`` alias ``bundled``, and ``rtmpose-t.synth``;
a weights name, a model folder or a training run) is scored on every real person sample in
``../shared/peer-data`` with ground-truth boxes, exactly as ``poseforge eval --model M --data FILE``
scores it (:func:`poseforge.evaluation.evaluate` with the model's flip-test setting; a file in another
keypoint set is scored on the joints it shares with the model's, by name, with the file's sigmas:
:mod:`poseforge.evaluation.mapping`):

* ``coco``: ``coco/test_coco.json`` (coco17);
* ``coco-wholebody``: ``coco/test_coco_wholebody.json`` (wholebody133, its 17 body joints);
* ``aic``: ``aic/test_aic.json`` (aic14, 12 shared joints; no ``area``: OKS scales by the box area);
* ``mpii``: ``mpii/test_mpii.json`` (the MPII list format, read by poseforge; 12 shared joints).

A ``synthetic`` set comes last (``--synthetic N``, default 100; 0 leaves it out): the trainer's held-out
synthetic people (one person per 192x256 image, seed 1,000,003; with 100 images, the set whose AP a
``synth-cpu`` run reports), scored by the same code, so each column reads against the renderer's own people.

AP-10K (animals) is left out. Columns: OKS AP, AP50, AR; PCK@0.2 (of the box's longer side) and the
median over people of the mean joint error / box height (``err/h``), both on the scored joints; ``L/R sides``,
the share of left/right pairs (both labeled, at least 5% of the box height apart) that the model puts on their
own side, and ``L/R gap``, the median ratio of the predicted to the true distance between a pair's two joints
(:func:`poseforge.evaluation.pck.left_right_pairs`: a model that cannot tell a person's left from right puts
both on one point, gap ~0, or swaps them). The
``mean pose`` row of each set is the reference a model must beat: the average box-normalized pose of
that set's own people placed in every box (an oracle prior, through the same metric).

Detectors are scored on the COCO sample (every non-crowd person, COCO box AP, score threshold 0.05 for
the AP sweep as the detector's training validation): the bundled ``person-detector.synth`` and the real
RTMDet-nano ONNX export in ``peer-data/models`` (and, as a reference, the detection results file that
ships with the sample, from mmpose's AP-H 56 detector).

    PYTHONPATH=. python benchmarks/sim2real.py [--model NAME|RUN|FOLDER ...] [--synthetic N] [--json OUT] [--shared DIR]

Without ``../shared`` (or ``$POSEFORGE_SHARED``) it prints one line and exits 0.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import math
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

# benchmarks/_common.py (the script's folder is on sys.path)
from _common import cpu_name, load_average

from poseforge.data.coco import CocoKeypoints
from poseforge.data.evalsets import EvalSet, records_eval_set, synthetic_eval_set
from poseforge.data.images import load_image
from poseforge.data.readers import read_dataset
from poseforge.errors import PoseforgeError
from poseforge.evaluation.boxes import evaluate_boxes
from poseforge.evaluation.evaluator import predict_dataset
from poseforge.evaluation.mapping import evaluate_shared_joints, project_ground_truth
from poseforge.evaluation.metrics import CocoKeypointMetric
from poseforge.evaluation.pck import height_normalized_errors, left_right_pairs, mean_pose_in_boxes
from poseforge.keypoints import (
    KeypointMapping,
    KeypointSet,
    get_keypoint_set,
    keypoint_mapping,
)
from poseforge.outputs import Predictions

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = ("bundled", "rtmpose-t.synth")
MEAN_POSE = "mean pose"
REFERENCE_SET = "coco17"  # the mean pose is placed in this set (the shipped models')
# name, file under peer-data, reader format
DATASETS: tuple[tuple[str, str, str], ...] = (
    ("coco", "coco/test_coco.json", "coco"),
    ("coco-wholebody", "coco/test_coco_wholebody.json", "wholebody"),
    ("aic", "aic/test_aic.json", "aic"),
    ("mpii", "mpii/test_mpii.json", "mpii"),
)
SKIPPED = {"ap10k/test_ap10k.json": "animals, not people",
           "mpii/test_mpii_trb.json": "MPII-TRB contour points, not a poseforge keypoint set",
           "coco/test_keypoint_partition_metric.json": "the same people as coco/test_coco_wholebody.json"}
DETECTION_IMAGES = "coco/test_coco.json"
DETECTION_RESULTS = "coco/test_coco_det_AP_H_56.json"
RTMDET = "models/rtmdet-nano-person.onnx"
AP_SWEEP_THRESHOLD = 0.05
SYNTHETIC = "synthetic"
SYNTHETIC_SEED = 1_000_003  # the trainer's held-out set (data.synthetic.val_seed)


@dataclass
class PoseRow:
    """One model (or the mean pose) on one real set, ground-truth boxes."""

    dataset: str
    images: int
    people: int  # people with at least one labeled joint among the scored ones
    keypoints: int  # labeled joints scored
    joints: int  # joints per person scored (shared with the model's set)
    model: str
    AP: float
    AP50: float
    AR: float
    PCK: float  # PCK@0.2 of the box's longer side
    err_h: float  # median over people of mean joint error / box height
    sides: float  # share of left/right pairs placed on their own side (pairs >= 5% of the box height apart)
    gap: float  # median predicted / true distance between a pair's two joints (near 0: both on one point)
    seconds: float


@dataclass
class DetectorRow:
    """One person detector on the COCO sample."""

    detector: str
    images: int
    people: int
    AP: float
    AP50: float
    AR: float
    seconds: float


@dataclass
class RealSet:
    """A sample read in its own keypoint set: a real file, or (``load_images`` set) rendered people."""

    name: str
    path: Path
    gt: CocoKeypoints
    load_images: Any = None  # the images' loader where they are not files (rendered on demand)


def synthetic_set(num_images: int, seed: int = SYNTHETIC_SEED) -> RealSet:
    """The trainer's held-out synthetic people (coco17, one person per 192x256 image), for the same columns."""
    rendered = synthetic_eval_set(num_images=num_images, seed=seed)
    return RealSet(SYNTHETIC, Path(rendered.name), rendered.gt, rendered.load_images)


def shared_folder(path: str | os.PathLike | None = None) -> Path:
    """``--shared``, else ``$POSEFORGE_SHARED``, else ``../shared`` beside the repository."""
    return Path(path or os.environ.get("POSEFORGE_SHARED") or ROOT.parent / "shared")


def read_sets(peer: Path, names: Sequence[str] | None = None) -> list[RealSet]:
    """The real person samples of ``peer`` (``peer-data``), all or the ``names`` ones."""
    known = {name for name, _, _ in DATASETS}
    unknown = sorted(set(names or ()) - known)
    if unknown:
        raise PoseforgeError(f"unknown dataset {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return [RealSet(name, peer / file, read_dataset(peer / file, fmt))
            for name, file, fmt in DATASETS if names is None or name in names]


def _mapping(model_set: KeypointSet, gt: CocoKeypoints) -> KeypointMapping | None:
    """The joints the model's set shares with the file's (``None``: same set), as ``poseforge eval``."""
    if gt.keypoint_set.name == model_set.name:
        return None
    mapping = keypoint_mapping(model_set, gt.keypoint_set)
    if not len(mapping):
        raise PoseforgeError(f"{gt.source}: its keypoint set {gt.keypoint_set.name} shares no joint with {model_set.name}")
    return mapping


def _eval_set(real: RealSet, mapping: KeypointMapping | None) -> EvalSet:
    """Ground-truth boxes of ``real``, its truth in the model's set (shared joints only where it differs)."""
    gt = real.gt if mapping is None else project_ground_truth(real.gt, mapping)
    eval_set = records_eval_set(gt, str(real.path))
    return eval_set if real.load_images is None else replace(eval_set, load_images=real.load_images)


def _file_has_area(real: RealSet) -> bool:
    """Whether OKS may scale by the annotation area: every annotation of a COCO file has one (AIC, MPII: no);
    the rule ``poseforge eval`` applies."""
    from poseforge.cli.eval import _file_has_area as has_area

    return real.load_images is not None or has_area(real.path)  # rendered people carry their mask's area


def _score(metric: CocoKeypointMetric, real: RealSet, mapping: KeypointMapping | None, eval_set: EvalSet,
           model: str, seconds: float) -> PoseRow:
    """The row of a filled metric: its stats (or, for another keypoint set, OKS on the shared joints of the
    file's own truth, as ``poseforge eval``), PCK, and the box-height error of the paired predictions."""
    stats = metric.compute()
    if mapping is not None:
        stats = {**evaluate_shared_joints(real.gt, metric.results, mapping, use_area=_file_has_area(real)),
                 **{k: v for k, v in stats.items() if k.startswith(("PCK", "EPE"))}}
    found = metric.predictions()
    people = {inst.instance_id: inst for inst in eval_set.gt.instances}
    paired = found["instance_id"] >= 0
    truth = [people[int(i)] for i in found["instance_id"][paired]]
    errors, own, gap = np.zeros(0), np.zeros(0, bool), np.zeros(0)
    if truth:
        located = (found["keypoints"][paired], np.stack([np.asarray(t.keypoints)[:, :2] for t in truth]),
                   np.stack([np.asarray(t.visibility) > 0 for t in truth]), np.stack([np.asarray(t.bbox) for t in truth]))
        errors = height_normalized_errors(*located)
        own, gap = left_right_pairs(*located, eval_set.gt.keypoint_set.flip_pairs)
    scored = [np.asarray(i.visibility) > 0 for i in eval_set.gt.instances if not i.iscrowd]
    return PoseRow(real.name, len(real.gt.images), sum(int(s.any()) for s in scored), sum(int(s.sum()) for s in scored),
                   len(mapping) if mapping is not None else real.gt.keypoint_set.num_keypoints, model,
                   float(stats["AP"]), float(stats["AP50"]), float(stats["AR"]), float(stats.get("PCK@0.2", math.nan)),
                   float(np.median(errors)) if len(errors) else math.nan,
                   float(own.mean()) if len(own) else math.nan, float(np.median(gap)) if len(gap) else math.nan, seconds)


def score_model(model: torch.nn.Module, name: str, real: RealSet, device: str = "cpu") -> PoseRow:
    """``model`` on ``real`` in its ground-truth boxes (the model's flip-test setting), as ``poseforge eval``."""
    start = time.perf_counter()
    mapping = _mapping(model.keypoint_set_of(0), real.gt)
    eval_set = _eval_set(real, mapping)
    metric = predict_dataset(model, eval_set, device=device)
    return _score(metric, real, mapping, eval_set, name, time.perf_counter() - start)


def score_mean_pose(real: RealSet, keypoint_set: str = REFERENCE_SET) -> PoseRow:
    """The mean pose of ``real``'s own people (in ``keypoint_set``) placed in every ground-truth box, scored
    by the same metric as a model (box and keypoint scores 1)."""
    start = time.perf_counter()
    mapping = _mapping(get_keypoint_set(keypoint_set), real.gt)
    eval_set = _eval_set(real, mapping)
    people = {inst.instance_id: inst for inst in eval_set.gt.instances}
    records = eval_set.box_records()
    truth = [people[r.instance_id] for r in records]
    metric = CocoKeypointMetric(eval_set.gt)  # the metric of the top-down models, its defaults
    if truth:
        keypoints = np.stack([np.asarray(t.keypoints, np.float64)[:, :2] for t in truth])
        labeled = np.stack([np.asarray(t.visibility) > 0 for t in truth])
        boxes = np.stack([np.asarray(t.bbox, np.float64) for t in truth])
        placed = torch.from_numpy(mean_pose_in_boxes(keypoints, labeled, boxes))[:, None]
        n, k = placed.shape[0], placed.shape[2]
        predictions = Predictions(placed, torch.ones(n, 1, k), torch.ones(n, 1, dtype=torch.bool),
                                  instance_scores=torch.ones(n, 1, dtype=torch.float64))
        metric.update(predictions, {"image_id": torch.tensor([r.image_id for r in records]),
                                    "index": torch.arange(n), "instance_id": torch.tensor([r.instance_id for r in records])})
    return _score(metric, real, mapping, eval_set, MEAN_POSE, time.perf_counter() - start)


def person_boxes(gt: CocoKeypoints) -> tuple[list[int], list[np.ndarray], list[np.ndarray]]:
    """Per image of ``gt``: its id, the xyxy boxes and areas of its non-crowd people (with or without joints)."""
    by_image = gt.instances_by_image()
    ids, boxes, areas = [], [], []
    for image_id in gt.images:
        people = [i for i in by_image.get(image_id, []) if not i.iscrowd]
        xywh = np.asarray([i.bbox for i in people], np.float64).reshape(-1, 4)
        ids.append(int(image_id))
        boxes.append(np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1))
        areas.append(np.asarray([i.area for i in people], np.float64))
    return ids, boxes, areas


def score_detector(detector: Any, name: str, gt: CocoKeypoints) -> DetectorRow:
    """COCO box AP of a :class:`~poseforge.inference.detectors.Detector` on the images of ``gt``."""
    start = time.perf_counter()
    ids, boxes, areas = person_boxes(gt)
    found = [detector.detect_batch([load_image(gt.images[i].path)], [i])[0] for i in ids]
    stats = evaluate_boxes(boxes, areas, [d.boxes.cpu().numpy() for d in found], [d.scores.cpu().numpy() for d in found])
    return DetectorRow(name, len(ids), sum(len(b) for b in boxes), stats["AP"], stats["AP50"], stats["AR100"],
                       time.perf_counter() - start)


def default_detectors(peer: Path) -> list[tuple[str, str]]:
    """(label, spec) of the detectors scored by default: the bundled one, RTMDet-nano, the sample's detections."""
    return [("person-detector.synth", "person-detector.synth"), ("rtmdet-nano (ONNX)", str(peer / RTMDET)),
            ("mmpose AP-H 56 detections (file)", str(peer / DETECTION_RESULTS))]


def measure(peer: Path, models: Sequence[str] = DEFAULT_MODELS, detectors: Sequence[tuple[str, str]] | None = None,
            datasets: Sequence[str] | None = None, device: str = "cpu", synthetic: int = 0) -> dict[str, Any]:
    """Every pose row (per set: the mean pose, then each model) and detector row (``None``: the defaults);
    ``synthetic`` > 0 adds that many held-out synthetic people as a last set."""
    from poseforge.inference.detectors import load_detector
    from poseforge.models import load_model

    sets = read_sets(peer, datasets) + ([synthetic_set(synthetic)] if synthetic > 0 else [])
    pose: list[PoseRow] = [score_mean_pose(real) for real in sets]
    for spec in models:
        model = load_model(spec, device=device).eval()
        model.to(memory_format=torch.channels_last)  # as `poseforge eval`
        pose += [score_model(model, spec, real, device) for real in sets]
    order = {real.name: n for n, real in enumerate(sets)}
    pose.sort(key=lambda r: order[r.dataset])  # stable: mean pose first in each set, then the models in order
    boxes: list[DetectorRow] = []
    images = read_dataset(peer / DETECTION_IMAGES, "coco")
    for label, spec in default_detectors(peer) if detectors is None else detectors:
        if spec.endswith((".onnx", ".json")) and not Path(spec).is_file():
            print(f"skipped detector {label}: {spec} not found")
            continue
        if spec.endswith(".onnx") and importlib.util.find_spec("onnxruntime") is None:  # an optional extra
            print(f"skipped detector {label}: needs onnxruntime (pip install 'poseforge[runtime]')")
            continue
        detector = load_detector(spec, device=device, score_threshold=AP_SWEEP_THRESHOLD)
        boxes.append(score_detector(detector, label, images))
    return {"datasets": {real.name: str(real.path if real.load_images is not None else real.path.relative_to(peer))
                         for real in sets}, "skipped": SKIPPED,
            "pose": [asdict(r) for r in pose], "detectors": [asdict(r) for r in boxes]}


def _number(value: float, width: int, digits: int = 3) -> str:
    return f"{value:>{width}.{digits}f}" if math.isfinite(value) else f"{'-':>{width}}"


def format_tables(summary: dict[str, Any]) -> str:
    """The pose table and the detector table, as plain text (Markdown-ready)."""
    lines = ["| dataset | images | people | keypoints (joints) | model | AP | AP50 | AR | PCK@0.2 | err/h | L/R sides | L/R gap |",
             "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in summary["pose"]:
        lines.append(f"| {r['dataset']} | {r['images']} | {r['people']} | {r['keypoints']} ({r['joints']}) | {r['model']} |"
                     f"{_number(r['AP'], 6)} |{_number(r['AP50'], 6)} |{_number(r['AR'], 6)} |"
                     f"{_number(r['PCK'], 6)} |{_number(r['err_h'], 6)} |{_number(r['sides'], 6)} |{_number(r['gap'], 6)} |")
    if summary["detectors"]:
        lines += ["", "| detector (COCO sample) | images | people | box AP | AP50 | AR100 |", "|---|---:|---:|---:|---:|---:|"]
        for r in summary["detectors"]:
            lines.append(f"| {r['detector']} | {r['images']} | {r['people']} |{_number(r['AP'], 6)} |"
                         f"{_number(r['AP50'], 6)} |{_number(r['AR'], 6)} |")
    return "\n".join(lines)


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                               text=True, timeout=10, check=False).stdout.strip()
        return out.stdout.strip() + ("+changes" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", dest="models", action="append", metavar="NAME|RUN|FOLDER",
                        help=f"pose model to score (repeatable; default: {', '.join(DEFAULT_MODELS)})")
    parser.add_argument("--dataset", dest="datasets", action="append", metavar="NAME",
                        help=f"only these sets (repeatable; default all: {', '.join(n for n, _, _ in DATASETS)})")
    parser.add_argument("--synthetic", type=int, default=100, metavar="N",
                        help="also score N of the trainer's held-out synthetic people, same columns "
                             "(default 100, the synth-cpu preset's held-out set; 0: none)")
    parser.add_argument("--no-detectors", action="store_true", help="skip the detector table")
    parser.add_argument("--detector", dest="detectors", action="append", metavar="NAME|FOLDER|ONNX",
                        help="also score this person detector (repeatable), after the default ones")
    parser.add_argument("--shared", metavar="DIR", help="the shared folder (default: $POSEFORGE_SHARED or ../shared)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda ... (default: cpu)")
    parser.add_argument("--json", metavar="OUT", help="also write the summary (header and rows) to this JSON file")
    args = parser.parse_args(argv)
    peer = shared_folder(args.shared) / "peer-data"
    if not peer.is_dir():
        print(f"sim2real: skipped: no real samples at {peer} (set --shared or POSEFORGE_SHARED)")
        return 0
    command = "python benchmarks/sim2real.py" + "".join(f" {shlex.quote(a)}" for a in (sys.argv[1:] if argv is None else argv))
    header = {"date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), "cpu": cpu_name(), "load": load_average(),
              "threads": torch.get_num_threads(), "torch": torch.__version__, "commit": _commit(), "command": command}
    print(f"# sim2real, {header['date']}, {header['cpu']}, {header['threads']} threads, torch {header['torch']}, "
          f"commit {header['commit']}, {header['load']}")
    print(f"# {command}")
    try:
        detectors = [] if args.no_detectors else default_detectors(peer) + [(d, d) for d in args.detectors or []]
        summary = measure(peer, args.models or DEFAULT_MODELS, detectors, args.datasets, args.device, args.synthetic)
    except PoseforgeError as err:
        print(f"sim2real: error: {err}", file=sys.stderr)
        return 1
    print("# ground-truth boxes; OKS on the joints each set shares with the model (by name, the set's sigmas); "
          "mean pose = the set's own average box-normalized pose in every box")
    print(format_tables(summary))
    print("# not scored: " + "; ".join(f"{k} ({v})" for k, v in summary["skipped"].items()))
    if args.json:
        from poseforge.io import write_json_atomic

        write_json_atomic(args.json, {**header, "load_after": load_average(), **summary}, indent=2)
        print(f"# wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
