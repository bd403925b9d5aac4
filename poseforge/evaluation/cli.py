"""``poseforge eval``: score keypoint predictions against COCO-format ground truth.

The predictions come as a COCO results file (``--gt ANN.json --results RES.json``) or from a model
run over a dataset (``--model RUN_DIR_OR_FILE --data COCO_JSON_OR_DIR|synthetic``, see
:mod:`poseforge.evaluation.runner`).
"""
from __future__ import annotations

import argparse
import logging

from ..errors import PoseforgeError
from ..io import write_json_atomic
from .coco import BACKENDS, coco_metric, evaluate_keypoints, format_table

log = logging.getLogger("poseforge")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gt", metavar="ANN.json", help="COCO-format keypoint ground truth (with --results)")
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
    model = parser.add_argument_group("run a model (instead of --gt/--results)")
    model.add_argument("--model", metavar="RUN_DIR_OR_FILE", help="a model folder / .safetensors, a training run folder or a .pt checkpoint")
    model.add_argument("--data", metavar="COCO_JSON_OR_DIR|synthetic",
                       help="ground truth to predict on: a COCO keypoint JSON, a dataset folder (its val split), or "
                            "'synthetic[:seed=S,images=N,size=WxH,people=A-B]' (default: the run's held-out set)")
    model.add_argument("--boxes", metavar="DETECTIONS.json", help="COCO detection results to crop (default: ground-truth boxes)")
    model.add_argument("--flip", dest="flip", action="store_true", default=None, help="flip test (default: the model's setting)")
    model.add_argument("--no-flip", dest="flip", action="store_false", help="no flip test")
    model.add_argument("--out", metavar="RESULTS.json", help="write the scored COCO keypoint results here")
    model.add_argument("--batch-size", type=int, default=64, help="crops per forward pass (default: 64)")
    model.add_argument("--workers", type=int, default=2, help="DataLoader workers decoding and cropping (default: 2)")
    model.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: CUDA when available)")


def run(args: argparse.Namespace) -> int:
    if args.model is not None:
        from .runner import run_model_command

        return run_model_command(args)
    if args.gt is None:
        raise PoseforgeError("pass --gt ANN.json --results RES.json, or --model RUN_DIR_OR_FILE --data ...")
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
