"""``poseforge pseudo-label``: a teacher model labels a folder of unlabeled images as a COCO keypoint file.

    poseforge pseudo-label --model runs/pose/best --images my-frames/ --out my-frames.json
    poseforge pseudo-label --model bundled --images my-frames/ --out my-frames.json --threshold 0.7

Keypoints scoring at least ``--threshold`` become labels (visibility 2), the others stay unlabeled (0);
people with fewer than ``--min-keypoints`` labels keep a box but are not trained on
(:mod:`poseforge.train.pseudo`). Top-down models take person boxes from ``--detector`` as
``poseforge predict`` does; bottom-up models find people themselves. Train on the file with
``poseforge train --unlabeled DIR --set data.unlabeled.labels=FILE`` (its settings must match), or label
and train in one go with ``poseforge train --unlabeled DIR`` (docs/sim2real.md).
"""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from .common import add_verify_argument, progress_bar, refuse_overwrite

log = logging.getLogger("poseforge")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="bundled",
                        help="the teacher: a weights name (vitpose-b, rtmpose-m ...), bundled, a model folder / "
                             ".safetensors, or a training run folder (default: bundled, trained on synthetic people)")
    parser.add_argument("--images", required=True, metavar="DIR", help="the unlabeled images (searched recursively)")
    parser.add_argument("--out", required=True, metavar="FILE.json", help="the COCO keypoint file to write")
    parser.add_argument("--threshold", type=float, default=0.5, metavar="T",
                        help="keypoints scoring >= T (in [0, 1]) become labels (default 0.5)")
    parser.add_argument("--min-keypoints", type=int, default=5, metavar="N",
                        help="people with fewer labeled keypoints are not trained on (default 5)")
    parser.add_argument("--detector", default="auto",
                        help="person boxes for top-down models, as poseforge predict --detector: auto (rtmdet-nano where "
                             "downloaded, else bundled), bundled, rtmdet-nano, PATH.onnx, or none (default: auto)")
    parser.add_argument("--box-threshold", type=float, default=None, metavar="T",
                        help="drop detector boxes scoring at or below T (default: the detector's own)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: CUDA when available)")
    parser.add_argument("--no-flip", dest="flip", action="store_false", help="no flip test (faster, less accurate labels)")
    parser.add_argument("--force", action="store_true", help="replace an existing --out (never an input)")
    add_verify_argument(parser)


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP, as poseforge predict
    from ..train.pseudo import image_files, pseudo_label

    files = image_files(args.images)  # a missing or empty folder: one line, before any model loads
    inputs = [p for spec in (args.model, args.detector) for p in [Path(str(spec))] if p.is_file()]
    refuse_overwrite([args.out], [*files, *inputs], args.force, what="pseudo-labels")
    with progress_bar("pseudo-labelling") as progress:
        written = pseudo_label(args.model, args.images, args.out, threshold=args.threshold,
                               min_keypoints=args.min_keypoints, detector=args.detector, device=args.device,
                               flip_test=args.flip, box_score_threshold=args.box_threshold, force=args.force,
                               verify=args.verify, progress=progress)
    print(f"wrote {written.summary()}")
    if not written.people:
        log.warning(f"{args.images}: no person with {args.min_keypoints} keypoints scoring >= {args.threshold}: nothing "
                    "to train on (lower --threshold / --min-keypoints, or use a stronger --model)")
    return 0
