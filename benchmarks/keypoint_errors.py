"""Where a model loses OKS: per-keypoint errors on a held-out synthetic set, next to OKS's tolerance.

For each model (a model folder, a run folder or a checkpoint) this predicts in the ground-truth boxes
(flip test) and prints, per keypoint: the median pixel error over labeled people, the median OKS
tolerance ``s * 2 * sigma`` (``s`` = sqrt of the person's area; an error of that size gives OKS 0.61)
and the mean per-keypoint OKS. Then, per model, where the per-person OKS (COCO's score) is lost: its
quantiles, the share of people under 0.5, the share that a left/right swap of the whole prediction
would raise by more than 0.2 (side confusions), and the mean OKS of visible and of occluded keypoints.
Last, the COCO AP the same predictions would score with every error scaled by a factor
(``--error-scales``): how much more precise a model must be to reach a target AP. Models are compared
on the same people in the same run.

    PYTHONPATH=. python benchmarks/keypoint_errors.py runs/sc6 poseforge/assets/pose --images 200
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime

import numpy as np
import torch

from poseforge.data.evalsets import synthetic_eval_set
from poseforge.evaluation.coco import evaluate_keypoints
from poseforge.evaluation.evaluator import predict_dataset
from poseforge.evaluation.postprocess import rescore_results
from poseforge.models import load_model


@dataclasses.dataclass
class Predictions:
    """One model's predictions on the held-out people next to their labels, per person and keypoint."""

    predicted: np.ndarray  # [N, K, 2] pixels
    labels: np.ndarray  # [N, K, 2] pixels
    visibility: np.ndarray  # [N, K] COCO flags: 0 unlabeled, 1 occluded, 2 visible
    tolerance: np.ndarray  # [N, K] s * 2 * sigma (pixels)
    records: list[dict]  # the COCO result records (keypoint and box scores)

    def error(self, predicted: np.ndarray | None = None) -> np.ndarray:
        """Pixel error [N, K] (NaN where unlabeled) of ``predicted`` (default: the predictions)."""
        distance = np.linalg.norm((self.predicted if predicted is None else predicted) - self.labels, axis=-1)
        return np.where(self.visibility > 0, distance, np.nan)

    def keypoint_oks(self, predicted: np.ndarray | None = None) -> np.ndarray:
        """Per-keypoint OKS [N, K] (NaN where unlabeled)."""
        return np.exp(-self.error(predicted) ** 2 / (2 * self.tolerance ** 2))

    def person_oks(self, predicted: np.ndarray | None = None) -> np.ndarray:
        """COCO's per-person OKS [N]: the mean over labeled keypoints."""
        return np.nanmean(self.keypoint_oks(predicted), axis=1)


def predict_people(model: torch.nn.Module, data) -> Predictions:
    """Predict every held-out person in its ground-truth box (flip test)."""
    people = {inst.image_id: inst for inst in data.gt.instances}
    records = predict_dataset(model, data, flip_test=True).raw_results()
    truth = [people[r["image_id"]] for r in records]
    scale = np.sqrt(np.array([i.area for i in truth], np.float64))[:, None]
    return Predictions(
        predicted=np.stack([np.asarray(r["keypoints"], np.float64).reshape(-1, 3)[:, :2] for r in records]),
        labels=np.stack([np.asarray(i.keypoints, np.float64)[:, :2] for i in truth]),
        visibility=np.stack([np.asarray(i.visibility) for i in truth]),
        tolerance=scale * 2 * np.asarray(data.gt.keypoint_set.sigmas, np.float64)[None], records=records)


def ap_with_scaled_errors(p: Predictions, data, factor: float) -> float:
    """COCO AP of the predictions moved to ``labels + factor * (predicted - labels)``: the same misses,
    ``factor`` times as large. Scored as ``poseforge eval`` scores (bbox_keypoint rescoring; one person
    per image, so OKS-NMS has nothing to remove): at factor 1 this is the model's AP."""
    moved = p.labels + factor * (p.predicted - p.labels)
    records = []
    for record, points in zip(p.records, moved):
        flat = np.asarray(record["keypoints"], np.float64).reshape(-1, 3).copy()
        flat[:, :2] = points
        records.append({**record, "keypoints": flat.ravel().tolist()})
    return evaluate_keypoints(data.gt, rescore_results(records, "bbox_keypoint", 0.2))["AP"]


def person_summary(p: Predictions, flip_index: np.ndarray) -> dict[str, float]:
    """Where the per-person OKS goes: quantiles, the share under 0.5, side swaps, visible vs occluded."""
    oks = p.person_oks()
    swapped = p.person_oks(p.predicted[:, flip_index])  # left and right labels exchanged
    per_keypoint = p.keypoint_oks()
    q10, q50, q90 = np.quantile(oks, [0.1, 0.5, 0.9])
    return {"mean": float(oks.mean()), "q10": float(q10), "median": float(q50), "q90": float(q90),
            "under_0.5": float(np.mean(oks < 0.5)), "swap_better": float(np.mean(swapped - oks > 0.2)),
            "visible": float(np.nanmean(np.where(p.visibility == 2, per_keypoint, np.nan))),
            "occluded": float(np.nanmean(np.where(p.visibility == 1, per_keypoint, np.nan)))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="model folders, run folders or checkpoints")
    parser.add_argument("--size", default="192x256", help="held-out image size WxH (default 192x256, the synth-cpu preset)")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1_000_003, help="held-out seed (the presets' val_seed)")
    parser.add_argument("--error-scales", default="1,0.8,0.7,0.6,0.5",
                        help="comma-separated factors for the scaled-error AP table (1 = as predicted)")
    args = parser.parse_args()
    factors = [float(v) for v in args.error_scales.split(",")]
    size = tuple(int(v) for v in args.size.lower().split("x"))
    data = synthetic_eval_set(args.images, args.seed, size)
    names = data.gt.keypoint_set.names
    print(f"keypoint_errors, {datetime.date.today()}: {data.name}")
    tables = {path: predict_people(load_model(path), data) for path in args.models}
    tolerance = next(iter(tables.values())).tolerance
    print(f"median person scale s = sqrt(area): {np.median(np.sqrt(np.array([i.area for i in data.gt.instances]))):.1f} px")
    header = f"{'keypoint':16s} {'tolerance px':>12s}" + "".join(f" | {p[-18:]:>18s} err px, OKS" for p in args.models)
    print(header)
    per_model = [(np.nanmedian(p.error(), axis=0), np.nanmean(p.keypoint_oks(), axis=0)) for p in tables.values()]
    for k, name in enumerate(names):
        row = f"{name:16s} {np.median(tolerance[:, k]):12.2f}"
        for error, oks in per_model:
            row += f" | {error[k]:24.2f}, {oks[k]:.2f}"
        print(row)
    flip_index = np.asarray(data.gt.keypoint_set.flip_index)
    print("\nper-person OKS: mean, 10% / 50% / 90% quantiles, share under 0.5, share a left/right swap would "
          "raise by > 0.2; mean keypoint OKS visible / occluded")
    for path, p in tables.items():
        s = person_summary(p, flip_index)
        print(f"{path[-28:]:>28s}: {s['mean']:.3f}, {s['q10']:.2f} / {s['median']:.2f} / {s['q90']:.2f}, "
              f"{s['under_0.5']:.1%} under 0.5, {s['swap_better']:.1%} swapped; "
              f"visible {s['visible']:.2f} / occluded {s['occluded']:.2f}")
    print("\nCOCO AP with every error scaled by a factor: " + ", ".join(f"x{f:g}" for f in factors))
    for path, p in tables.items():
        print(f"{path[-28:]:>28s}: " + ", ".join(f"{ap_with_scaled_errors(p, data, f):.3f}" for f in factors))


if __name__ == "__main__":
    main()
