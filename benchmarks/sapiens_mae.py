"""MAE-pretrained against from-scratch fine-tuning of a CPU-sized Sapiens, one arm pair per task, equal budget.

One MAE pretraining run (``poseforge pretrain --config sapiens-tiny-mae-synth``), then for each task (pose,
seg, depth, normal) the task preset ``sapiens-tiny-{task}-synth`` twice with the same recipe, data, seed and
number of steps:

* ``mae``: ``poseforge train --config sapiens-tiny-{task}-synth --set model.backbone_init=<MAE run>``
* ``scratch``: the same command without it (sine-cosine positions, the recipe's from-scratch start)

Every arm is an ordinary ``poseforge`` command, printed before it runs so each number can be reproduced
alone. The table gives each arm's score on the preset's held-out synthetic set after the last epoch
(pose: OKS AP and PCK@0.2 in ground-truth boxes; parts: mIoU; depth: AbsRel and delta < 1.25; normals:
mean angle and % within 11.25 degrees), the difference MAE - scratch, and the minutes each command took.
The pretraining is not counted in the fine-tuning budget (as in the paper's comparison).

    PYTHONPATH=. python benchmarks/sapiens_mae.py --out runs/sapiens-mae-compare [--tasks pose,seg]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path

from _common import cpu_name, load_average, run_logged

# task -> (metric, higher is better) columns of the table
COLUMNS = {"pose": (("AP", True), ("PCK@0.2", True)), "seg": (("mIoU", True), ("pixel_acc", True)),
           "depth": (("AbsRel", False), ("delta1", True)), "normal": (("normal_mean", False), ("within_11.25", True))}


def last_validation(run_dir: Path) -> dict:
    """The last validation record of a run (the score at the end of the budget)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    vals = [r for r in rows if r.get("kind") == "val"]
    if not vals:
        sys.exit(f"{run_dir}: no validation record")
    return vals[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for the pretraining run and every arm")
    parser.add_argument("--tasks", default="pose,seg,depth,normal")
    parser.add_argument("--pretrain", default="sapiens-tiny-mae-synth", help="MAE preset (or an existing run with --reuse)")
    parser.add_argument("--reuse", action="store_true", help="keep runs already in --out (resume a comparison)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="fine-tuning overrides shared by both arms (repeatable)")
    args = parser.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cli = [sys.executable, "-m", "poseforge.cli"]
    shared = [x for o in args.overrides for x in ("--set", o)]
    print(f"sapiens_mae, {datetime.date.today()}, {cpu_name()}, {os.cpu_count()} CPUs, {load_average()}")
    minutes: dict[str, float] = {}
    mae = out / "mae"
    if not (args.reuse and (mae / "last.pt").exists()):
        minutes["pretrain"] = run_logged(cli + ["pretrain", "--config", args.pretrain, "--out", str(mae)],
                                  out / "mae.log") / 60
    results: dict[str, dict[str, dict]] = {}
    for task in [t for t in args.tasks.split(",") if t]:
        if task not in COLUMNS:
            sys.exit(f"unknown task '{task}'; known: {', '.join(COLUMNS)}")
        results[task] = {}
        for arm in ("mae", "scratch"):
            folder = out / f"{task}-{arm}"
            if not (args.reuse and (folder / "metrics.jsonl").exists()):
                init = ["--set", f"model.backbone_init={mae}"] if arm == "mae" else []
                minutes[f"{task}-{arm}"] = run_logged(cli + ["train", "--config", f"sapiens-tiny-{task}-synth", "--out", str(folder)]
                                               + init + shared, out / f"{task}-{arm}.log") / 60
            results[task][arm] = last_validation(folder)

    print(f"\nMAE-pretrained vs from scratch, equal fine-tuning budget ({load_average()}):")
    print(f"{'task':<8}{'metric':<14}{'MAE':>9}{'scratch':>9}{'MAE-scr':>9}  better")
    for task, arms in results.items():
        for metric, higher in COLUMNS[task]:
            a, b = float(arms["mae"][metric]), float(arms["scratch"][metric])
            better = "MAE" if (a > b) == higher and a != b else ("scratch" if a != b else "tie")
            print(f"{task:<8}{metric:<14}{a:>9.4f}{b:>9.4f}{a - b:>+9.4f}  {better}")
    print("minutes: " + ", ".join(f"{k} {v:.1f}" for k, v in minutes.items()))
    (out / "summary.json").write_text(json.dumps({"results": results, "minutes": minutes}, indent=1))


if __name__ == "__main__":
    main()
