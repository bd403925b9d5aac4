"""``poseforge eval``: score keypoint predictions against COCO-format ground truth.

The predictions come as a COCO results file (``--gt ANN.json --results RES.json``) or from a model
run over a dataset (``--model NAME|RUN_DIR|FILE --data COCO_JSON_OR_DIR|synthetic``): any estimator
kind, scored by its own metric (:func:`poseforge.evaluation.evaluate`).
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from ..errors import PoseforgeError
from ..data.coco import write_coco_results
from ..io import write_json_atomic
from ..evaluation.coco import BACKENDS, coco_metric, evaluate_keypoints, format_table
from ..keypoints import get_keypoint_set, keypoint_mapping
from .common import add_verify_argument, progress_bar, refuse_overwrite

log = logging.getLogger("poseforge")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gt", metavar="ANN.json", help="COCO-format keypoint ground truth (with --results)")
    parser.add_argument("--results", metavar="RES.json", help="COCO keypoint results (image_id, category_id, keypoints, score)")
    parser.add_argument("--keypoints", metavar="NAME",
                        help="keypoint set of --gt / --data (coco17, aic14, crowdpose14, wholebody133, ...); inferred from "
                             "the file by default. A model of another set is scored on the joints both share")
    parser.add_argument("--json", metavar="OUT", help="also write the stats to this JSON file")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing --json / --out file (never one of the inputs)")
    parser.add_argument("--rescore", action="store_true",
                        help="rescore (box score x mean keypoint score > 0.2) and OKS-NMS the results first, as mmpose's CocoMetric")
    parser.add_argument("--no-area", dest="use_area", action="store_false",
                        help="scale OKS by 0.53 x box area instead of the annotation area (CrowdPose, AIC)")
    parser.add_argument("--crowdpose", action="store_true", default=None,
                        help="report AP(E)/AP(M)/AP(H) (default: when the images have crowdIndex)")
    parser.add_argument("--backend", choices=BACKENDS, default="faster", help="COCO evaluation backend (default: faster)")
    model = parser.add_argument_group("run a model (instead of --gt/--results)")
    model.add_argument("--model", metavar="NAME|RUN_DIR|FILE",
                       help="weights name (vitpose-tiny.synth, bundled), a model folder / .safetensors, a training run "
                            "folder or a .pt checkpoint")
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
    add_verify_argument(model)


def _check_outputs(args: argparse.Namespace) -> None:
    """Refuse, before any work, an output that is an input (ground truth, results, boxes, model files) or
    that exists without ``--force``, and ``--json`` and ``--out`` naming one file."""
    outputs = [p for p in (args.json, args.out) if p]
    if len(outputs) == 2 and Path(outputs[0]).resolve() == Path(outputs[1]).resolve():
        raise PoseforgeError(f"--json and --out both name {args.json}; give them different files")
    inputs: list[Path] = [Path(p) for p in (args.gt, args.results, args.boxes, args.data) if p]
    if args.model:
        model = Path(args.model)
        inputs += [p for p in model.iterdir() if p.is_file()] if model.is_dir() else [model]
    data = Path(args.data) if args.data else None
    if data is not None and data.is_dir():  # a dataset folder: its annotation files (not a walk over the images)
        inputs += [*data.glob("*.json"), *data.glob("annotations/*.json")]
    refuse_overwrite(outputs, inputs, args.force, what="stats / results")


def run(args: argparse.Namespace) -> int:
    _check_outputs(args)
    if args.model is not None:
        return run_model_command(args)
    if args.gt is None:
        raise PoseforgeError("pass --gt ANN.json --results RES.json, or --model NAME|RUN_DIR|FILE --data ...")
    if args.out:
        raise PoseforgeError("--out writes the results of a model run (--model); with --results there is nothing new to write")
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


def run_model_command(args: argparse.Namespace) -> int:
    """``poseforge eval --model ... --data ...``: predict, print the stats table, optionally write results."""
    import torch

    from ..data.evalsets import parse_synthetic_spec, records_eval_set, synthetic_eval_set
    from ..evaluation.mapping import evaluate_shared_joints, project_ground_truth, shared_joints_line
    from ..device import resolve_device
    from ..evaluation.evaluator import evaluate
    from ..models import load_model

    if args.results is not None or args.gt is not None:
        raise PoseforgeError("--model runs a model on --data; it does not take --gt or --results")
    if args.batch_size < 1 or args.workers < 0:
        raise PoseforgeError("--batch-size must be >= 1 and --workers >= 0")
    device = resolve_device(args.device)
    model = load_model(args.model, device=device, verify=args.verify)
    model.to(memory_format=torch.channels_last)  # NHWC convolutions, as the Predictor and training validation
    keypoint_set = model.keypoint_set_of(0)
    data = args.data or "synthetic"
    if data.lower().startswith("synthetic"):
        if args.boxes:
            raise PoseforgeError("--boxes needs a COCO --data (synthetic sets use their ground-truth boxes)")
        eval_set = synthetic_eval_set(**parse_synthetic_spec(data, synthetic_defaults(args.model, model)))
    native, mapping = None, None
    if not data.lower().startswith("synthetic"):
        native, gt_path = _read_ground_truth(data, args.keypoints, keypoint_set)
        if keypoint_set is not None and native.keypoint_set.name != keypoint_set.name:
            mapping = keypoint_mapping(keypoint_set, native.keypoint_set)
            if not len(mapping):
                raise PoseforgeError(f"{gt_path}: its keypoint set {native.keypoint_set.name} shares no joint with the "
                                     f"model's {keypoint_set.name}")
            # predict in the model's set; scored below on the shared joints, in the file's set
            eval_set = records_eval_set(project_ground_truth(native, mapping), str(gt_path), args.boxes)
        else:
            eval_set = records_eval_set(native, str(gt_path), args.boxes)
    with progress_bar("predicting") as progress:
        result = evaluate(model, eval_set, flip_test=args.flip, batch_size=args.batch_size, num_workers=args.workers,
                          device=device, progress=progress)
    stats = result.stats
    if mapping is not None:
        print(shared_joints_line(mapping))
        use_area = args.use_area and _file_has_area(gt_path)
        stats = evaluate_shared_joints(native, result.results, mapping, use_area=use_area, backend=args.backend,
                                       crowdpose=args.crowdpose)
        # PCK / EPE of the metric: over the labeled joints of the projected truth, i.e. the shared ones
        stats.update({k: v for k, v in result.stats.items() if k.startswith(("PCK", "EPE"))})
    flip = model.config.flip_test if args.flip is None else args.flip
    print(format_table(stats, title=f"{args.model} on {eval_set.name} (flip test {'on' if flip else 'off'})"))
    if args.out:  # 133 whole-body keypoints in COCO-WholeBody's separate fields, as its evaluator reads them
        write_coco_results(args.out, result.results)
        log.info(f"wrote {len(result.results)} results to {args.out}")
    if args.json:
        write_json_atomic(args.json, stats, indent=2)
        log.info(f"wrote {args.json}")
    return 0


def _read_ground_truth(data: str, requested: str | None, model_set: Any) -> tuple[Any, Path]:
    """The ground truth of ``--data`` (a COCO or MPII-list file, or a dataset folder's val split) in its
    own keypoint set: ``--keypoints`` if given, else the file's names; where those are ambiguous
    (14 joints: AIC or CrowdPose), the model's set if it fits."""
    from ..data.evalsets import find_coco_split
    from ..data.readers import read_dataset

    path, root = find_coco_split(data, "val")
    try:
        gt = read_dataset(path, image_root=root, keypoint_set=requested)
    except PoseforgeError as first:
        if requested is not None or model_set is None:
            raise PoseforgeError(str(first).replace("pass keypoint_set=", "pass --keypoints NAME")) from None
        try:
            gt = read_dataset(path, image_root=root, keypoint_set=model_set.name)
        except PoseforgeError:
            raise PoseforgeError(str(first).replace("pass keypoint_set=", "pass --keypoints NAME")) from None
    if requested is not None and gt.keypoint_set.name != get_keypoint_set(requested).name:
        raise PoseforgeError(f"{path}: --keypoints {requested}, but the file is {gt.keypoint_set.name} "
                             f"({gt.keypoint_set.num_keypoints} joints)")
    return gt, path


def _file_has_area(path: Path) -> bool:
    """Whether every annotation of a COCO file carries ``area`` (AIC, MPII lists: no; OKS then scales by
    0.53 x box area, as xtcocotools)."""
    from ..io import read_json

    doc = read_json(path)
    return isinstance(doc, dict) and all(isinstance(a, dict) and "area" in a for a in doc.get("annotations", []))


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


def synthetic_defaults(model_name: str, model: Any) -> dict[str, Any]:
    """The held-out synthetic set of the training run a model comes from (a run's config.yaml or an
    exported model's training.json, named weights included), else the model's keypoint set only."""
    from ..models.loading import resolve_model_path

    keypoint_set = model.keypoint_set_of(0)
    defaults: dict[str, Any] = {"keypoint_set": keypoint_set.name} if keypoint_set is not None else {}
    path = resolve_model_path(model_name)
    for folder in (path, path.parent, path.parent.parent):
        config = _training_config(folder)
        if config is not None:
            s = config.data.synthetic
            defaults.update(num_images=s.val_images, seed=s.val_seed, image_size=s.image_size, people=s.val_people,
                            clutter=s.clutter)
            break
    return defaults
