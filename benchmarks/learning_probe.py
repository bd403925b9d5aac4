"""Does a training config learn poses, or only the mean pose? A short run scored against two references.

Trains ``--config`` (default ``synth-cpu``, with ``--set`` overrides) for ``--steps`` optimizer steps,
then on the config's held-out synthetic set (ground-truth boxes, flip test) prints the median over
people of the mean labeled-keypoint error divided by the box height, for

* the trained model,
* the same network untrained (fresh weights, same seed),
* the *mean pose*: the average box-normalized pose of the held-out set itself placed in every box
  (an oracle prior; a model that beats it has learned something about the image),

and the trained model's OKS AP. Ratios are against the mean pose measured in the same run.

    PYTHONPATH=. python benchmarks/learning_probe.py --steps 300 \\
        --set data.synthetic.image_size=[96,128] --set "model.overrides={input_size: [96, 128]}"
"""
from __future__ import annotations

import argparse
import datetime
import logging
import platform
import tempfile
import time

import numpy as np
import torch

from poseforge.data.evalsets import EvalSet
from poseforge.evaluation import evaluate
from poseforge.evaluation.evaluator import model_height_error
from poseforge.evaluation.pck import height_normalized_errors, mean_pose_in_boxes
from poseforge.models import build_model
from poseforge.train.config import load_config
from poseforge.train.engine import Trainer


def _truth(val: EvalSet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    instances = val.gt.instances
    keypoints = np.stack([np.asarray(i.keypoints, dtype=np.float64)[:, :2] for i in instances])
    labeled = np.stack([np.asarray(i.visibility) > 0 for i in instances])
    boxes = np.stack([np.asarray(i.bbox, dtype=np.float64) for i in instances])
    return keypoints, labeled, boxes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="synth-cpu")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    overrides = ["data.synthetic.fresh=false", "val_interval=0", "data.num_workers=0", *args.overrides,
                 f"max_steps={args.steps}"]
    config = load_config(args.config, overrides)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(config, run_dir, progress=False)
        start = time.perf_counter()
        trainer.fit()
        seconds = time.perf_counter() - start
    trained = trainer.estimator.eval()
    val_config = load_config(args.config, [*overrides, "val_interval=1"])
    from poseforge.train.data import build_val_sets

    val = build_val_sets(val_config, trained)[0].data
    torch.manual_seed(config.seed)
    untrained = build_model(trained.config).eval()
    keypoints, labeled, boxes = _truth(val)
    mean_error = float(np.median(height_normalized_errors(mean_pose_in_boxes(keypoints, labeled, boxes),
                                                          keypoints, labeled, boxes)))
    rows = [("trained", model_height_error(trained, val)), ("untrained network", model_height_error(untrained, val)),
            ("mean pose (oracle prior)", mean_error)]
    ap = evaluate(trained, val).stats["AP"]
    print(f"# learning probe, {datetime.date.today()}, {platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"# {config.name} {' '.join(args.overrides)}: {args.steps} steps x batch {config.data.batch_size} "
          f"in {seconds:.0f} s ({args.steps * config.data.batch_size / seconds:.1f} img/s); held-out {len(val)} boxes")
    print(f"{'model':<28}{'median error / box height':>27}{'vs mean pose':>14}")
    for name, error in rows:
        print(f"{name:<28}{error:>27.3f}{error / mean_error:>13.2f}x")
    print(f"trained model OKS AP: {ap:.4f}")


if __name__ == "__main__":
    main()
