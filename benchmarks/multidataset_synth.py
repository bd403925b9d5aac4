"""Multi-dataset ViTPose++ on synthetic data: people (coco17), whole bodies (wholebody133) and
quadrupeds (ap10k17) in one model, then each task merged into a plain ViTPose.

1. ``poseforge train`` a ViTPose++ (one expert and one head per task) on the ratio-mixed synthetic
   sources (``data.sources``); validation reports AP per dataset.
2. ``poseforge merge-experts MODEL --task all``: one plain ViTPose per task.
3. Every merged model is scored on its task's held-out set (OKS AP as ``poseforge eval``, plus PCK@0.2
   and EPE), and its heatmaps are compared with the multi-task model's (max abs difference).

The commands are printed before they run; the final tables list the per-dataset scores of the
multi-task model (its best validation, the checkpoint that is merged) and of each merged model on the
same held-out sets (the numbers should be equal).

    PYTHONPATH=. python benchmarks/multidataset_synth.py --out runs/vitpose++-synth [--set KEY=VALUE ...]
"""
from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
from pathlib import Path

from _common import run_logged  # benchmarks/_common.py (the script's folder is on sys.path)

import torch

# The recipe of the measured run: ViTPose++-tiny at 96x128 (4 blocks, convolutional stem: it learns from
# scratch where the patchify stem does not, see RESULTS.md), three synthetic tasks, CPU.
DEFAULT_SETTINGS = [
    "model.name=vitpose++-tiny", "model.overrides={input_size: [96, 128], depth: 4, stem: conv}",
    "model.pos_embed_init=sincos", "optim.lr=1e-3", "schedule.steps_per_epoch=null",
    "data.augment.rotate_factor=40", "data.augment.rotate_prob=0.6", "data.augment.scale_factor=[0.5,1.5]",
    "data.augment.half_body_prob=0.3",
    "data.sources=[{task: coco}, {task: wholebody}, {task: ap10k}]",
    "data.synthetic.image_size=[96,128]", "data.synthetic.train_images=2048", "data.synthetic.val_images=100",
    "data.synthetic.fresh=false", "data.num_workers=1", "schedule.epochs=8", "val_interval=4",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder (run, merged models, logs)")
    parser.add_argument("--config", default="synth-cpu", help="base recipe (preset or YAML)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="recipe overrides after the defaults of this script (repeatable)")
    parser.add_argument("--reuse", action="store_true", help="report on an existing OUT/run instead of training again")
    args = parser.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cli = [sys.executable, "-m", "poseforge.cli"]
    settings = DEFAULT_SETTINGS + args.overrides
    print(f"multidataset_synth, {datetime.date.today()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    run_dir = out / "run"
    command = cli + ["train", "--config", args.config, "--out", str(run_dir)] + [x for s in settings for x in ("--set", s)]
    if args.reuse and (run_dir / "last.pt").is_file():
        print("$ " + " ".join(shlex.quote(c) for c in command) + "   # reused: already run")
    else:
        run_logged(command, out / "train.log")
    from poseforge.train.checkpoint import load_checkpoint

    train_seconds = float(load_checkpoint(run_dir / "last.pt")["elapsed"])  # training time, startup excluded
    merged_dir = out / "merged"
    run_logged(cli + ["merge-experts", str(run_dir), "--task", "all", "--out", str(merged_dir), "--force"], out / "merge.log")
    print((out / "merge.log").read_text().strip())

    from poseforge.data.evalsets import synthetic_eval_set
    from poseforge.evaluation import evaluate
    from poseforge.models import load_model
    from poseforge.train.config import load_config
    from poseforge.train.data import SEED_STRIDE
    from poseforge.train.engine import format_task_table

    config = load_config(args.config, settings)
    model = load_model(run_dir)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    best = json.loads((run_dir / "best" / "training.json").read_text())
    best_val = [r for r in records if r["kind"] == "val" and r["epoch"] == best["epoch"]][-1]
    s = config.data.synthetic
    merged_stats: dict[str, float] = {}
    diffs = {}
    for k, source in enumerate(config.data.sources):
        task = model.config.tasks[model.config.task_index(source.task)]
        held_out = synthetic_eval_set(num_images=s.val_images, seed=s.val_seed + k * SEED_STRIDE, image_size=s.image_size,
                                      people=s.val_people, keypoint_set=task.keypoint_set, clutter=s.clutter)
        merged = load_model(merged_dir / task.name)
        stats = evaluate(merged, held_out, flip_test=config.flip_test).stats
        merged_stats.update({f"{task.name}/{key}": v for key, v in stats.items()})
        x = (torch.rand(8, 3, *reversed(model.config.input_size), generator=torch.Generator().manual_seed(k)) * 255).round()
        with torch.no_grad():
            diffs[task.name] = (merged(merged.normalize(x)).heatmaps
                                - model(model.normalize(x), task.name).heatmaps).abs().max().item()
    for key in ("AP", "AP50", "AP75", "AR", "PCK@0.2", "EPE"):
        merged_stats[key] = sum(merged_stats[f"{t}/{key}"] for t in diffs) / len(diffs)

    print(f"\nViTPose++ ({model.config.name}, {model.num_parameters() / 1e6:.2f}M parameters, "
          f"{model.config.input_size[0]}x{model.config.input_size[1]}), trained {train_seconds / 60:.1f} min "
          f"({best_val['step']} steps to the best checkpoint, epoch {best['epoch']})")
    print(format_task_table({k: v for k, v in best_val.items() if isinstance(v, float)},
                            "multi-task model, best validation (training run):"))
    print()
    print(format_task_table(merged_stats, "merged plain ViTPose per task, on the same held-out sets:"))
    print("max |merged - multi-task| heatmaps on 8 crops: " + ", ".join(f"{t} {d:.1e}" for t, d in diffs.items()))


if __name__ == "__main__":
    main()
