"""Where a model loses OKS: per-keypoint errors on a held-out synthetic set, next to OKS's tolerance.

For each model (a model folder, a run folder or a checkpoint) this predicts in the ground-truth boxes
(flip test) and prints, per keypoint: the median pixel error over labeled people, the median OKS
tolerance ``s * 2 * sigma`` (``s`` = sqrt of the person's area; an error of that size gives OKS 0.61)
and the mean per-keypoint OKS. Models are compared on the same people in the same run.

    PYTHONPATH=. python benchmarks/keypoint_errors.py runs/sc3 poseforge/assets/pose --images 100
"""
from __future__ import annotations

import argparse
import datetime

import numpy as np
import torch

from poseforge.evaluation.runner import load_eval_model, predict_boxes, synthetic_eval_set


def keypoint_table(model: torch.nn.Module, data) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per person and keypoint: pixel error (NaN where unlabeled), OKS tolerance and OKS."""
    people = {inst.image_id: inst for inst in data.gt.instances}
    records = predict_boxes(model, data, flip_test=True)
    truth = [people[r["image_id"]] for r in records]
    predicted = np.stack([np.asarray(r["keypoints"], np.float64).reshape(-1, 3)[:, :2] for r in records])
    labels = np.stack([np.asarray(i.keypoints, np.float64)[:, :2] for i in truth])
    labeled = np.stack([np.asarray(i.visibility) > 0 for i in truth])
    scale = np.sqrt(np.array([i.area for i in truth], np.float64))[:, None]
    tolerance = scale * 2 * np.asarray(data.gt.keypoint_set.sigmas, np.float64)[None]
    error = np.where(labeled, np.linalg.norm(predicted - labels, axis=-1), np.nan)
    return error, tolerance, np.exp(-error ** 2 / (2 * tolerance ** 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="model folders, run folders or checkpoints")
    parser.add_argument("--size", default="192x256", help="held-out image size WxH (default 192x256, the synth-cpu preset)")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1_000_003, help="held-out seed (the presets' val_seed)")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))
    data = synthetic_eval_set(args.images, args.seed, size)
    names = data.gt.keypoint_set.names
    print(f"keypoint_errors, {datetime.date.today()}: {data.name}")
    tables = {path: keypoint_table(load_eval_model(path), data) for path in args.models}
    _, tolerance, _ = next(iter(tables.values()))
    print(f"median person scale s = sqrt(area): {np.median(np.sqrt(np.array([i.area for i in data.gt.instances]))):.1f} px")
    header = f"{'keypoint':16s} {'tolerance px':>12s}" + "".join(f" | {p[-18:]:>18s} err px, OKS" for p in args.models)
    print(header)
    for k, name in enumerate(names):
        row = f"{name:16s} {np.median(tolerance[:, k]):12.2f}"
        for error, _, oks in tables.values():
            row += f" | {np.nanmedian(error[:, k]):24.2f}, {np.nanmean(oks[:, k]):.2f}"
        print(row)


if __name__ == "__main__":
    main()
