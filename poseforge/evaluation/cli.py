"""``poseforge eval``: score keypoint predictions against COCO-format ground truth.

Today the predictions come as a COCO results file (``--results``); the command is laid out so that
other sources (a model run on a dataset) are further branches of :func:`run`.
"""
from __future__ import annotations

import argparse
import logging

from ..errors import PoseforgeError
from ..io import write_json_atomic
from .coco import BACKENDS, coco_metric, evaluate_keypoints, format_table

log = logging.getLogger("poseforge")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gt", required=True, metavar="ANN.json", help="COCO-format keypoint ground truth")
    parser.add_argument("--results", metavar="RES.json", help="COCO keypoint results (image_id, category_id, keypoints, score)")
    parser.add_argument("--keypoints", metavar="NAME", help="keypoint set (coco17, wholebody133, ...); inferred from --gt by default")
    parser.add_argument("--json", metavar="OUT", help="also write the stats to this JSON file")
    parser.add_argument("--rescore", action="store_true",
                        help="rescore (box score x mean keypoint score > 0.2) and OKS-NMS the results first, as mmpose's CocoMetric")
    parser.add_argument("--no-area", dest="use_area", action="store_false",
                        help="scale OKS by 0.53 x box area instead of the annotation area (CrowdPose, AIC)")
    parser.add_argument("--crowdpose", action="store_true", default=None,
                        help="report AP(E)/AP(M)/AP(H) (default: when the images have crowdIndex)")
    parser.add_argument("--backend", choices=BACKENDS, default="faster", help="COCO evaluation backend (default: faster)")


def run(args: argparse.Namespace) -> int:
    if args.results is not None:
        stats = _evaluate_results_file(args)
    else:
        raise PoseforgeError("nothing to evaluate: pass --results RES.json")
    print(format_table(stats, title=f"{args.results} vs {args.gt}"))
    if args.json:
        write_json_atomic(args.json, stats, indent=2)
        log.info(f"wrote {args.json}")
    return 0


def _evaluate_results_file(args: argparse.Namespace) -> dict[str, float]:
    options = dict(use_area=args.use_area, backend=args.backend, crowdpose=args.crowdpose)
    if args.rescore:
        return coco_metric(args.gt, args.results, args.keypoints, **options)
    return evaluate_keypoints(args.gt, args.results, args.keypoints, **options)
