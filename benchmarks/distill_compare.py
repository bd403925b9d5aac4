"""Distillation on synthetic people: one small student trained alone and with each distillation method
from the same trained teacher, same recipe and budget (epochs, steps, data, seed), all in one run.

Every arm is an ordinary ``poseforge`` command (printed before it runs, so each number can be
reproduced alone):

* ``alone``:  ``poseforge train --config RECIPE --set model.name=STUDENT ...``
* ``output``: ``poseforge distill --teacher T --student STUDENT --method output ...``
* ``token``:  ``poseforge distill ... --method token`` (token learning on the teacher is extra, not
  counted in the student's budget, as in the paper)
* ``both``:   ``poseforge distill ... --method both``

The table scores the teacher and each student's best checkpoint on the recipe's held-out set
(ground-truth boxes): OKS AP, AP50 and PCK@0.2 (box-normalized; tiny synthetic crops make OKS strict),
the differences to the student trained alone, and the minutes each command took.

    PYTHONPATH=. python benchmarks/distill_compare.py --teacher runs/teacher --out runs/distill \\
        --config synth-cpu --student vitpose-tiny --set model.overrides.embed_dim=96 [--methods output,token]
"""
from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

from _common import run_logged  # benchmarks/_common.py (the script's folder is on sys.path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", required=True, help="trained teacher (model folder or run folder)")
    parser.add_argument("--out", required=True, help="folder for the runs of every arm")
    parser.add_argument("--config", default="synth-cpu", help="student training recipe (preset or YAML)")
    parser.add_argument("--student", default="vitpose-tiny", help="student model name")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="recipe overrides shared by every arm (repeatable)")
    parser.add_argument("--methods", default="output,token,both", help="comma-separated distillation arms")
    parser.add_argument("--kd-weight", type=float, default=1.0)
    parser.add_argument("--token-epochs", type=int, default=2)
    parser.add_argument("--token-lr", type=float, default=1e-3)
    args = parser.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cli = [sys.executable, "-m", "poseforge.cli"]
    shared = [x for o in args.overrides for x in ("--set", o)]
    print(f"distill_compare, {datetime.date.today()}: teacher {args.teacher}, student {args.student} "
          f"({' '.join(args.overrides) or 'recipe defaults'}), recipe {args.config}")

    from poseforge.data.evalsets import synthetic_eval_set
    from poseforge.evaluation import evaluate
    from poseforge.models import load_model
    from poseforge.train.config import load_config

    teacher = load_model(args.teacher)
    recipe = load_config(args.config, args.overrides)
    s = recipe.data.synthetic
    arms: dict[str, tuple[Path, float]] = {}
    alone = out / "alone"
    seconds = run_logged(cli + ["train", "--config", args.config, "--out", str(alone), "--set", f"model.name={args.student}",
                         "--set", f"model.overrides.input_size={list(teacher.config.input_size)}"] + shared,
                  out / "alone.log")
    arms["alone"] = (alone, seconds)
    for method in [m for m in args.methods.split(",") if m]:
        folder = out / method
        seconds = run_logged(cli + ["distill", "--teacher", args.teacher, "--student", args.student, "--method", method,
                             "--out", str(folder), "--config", args.config, "--kd-weight", str(args.kd_weight),
                             "--token-epochs", str(args.token_epochs), "--token-lr", str(args.token_lr)] + shared,
                      out / f"{method}.log")
        arms[method] = (folder / "student", seconds)

    # Everyone on the recipe's held-out set (the students' validation set): the teacher and each
    # student's best checkpoint; AP as in training validation, plus PCK@0.2 (box-normalized).
    held_out = synthetic_eval_set(num_images=s.val_images, seed=s.val_seed, image_size=s.image_size, people=s.val_people,
                                  keypoint_set=teacher.keypoint_set.name, clutter=s.clutter)
    scores = {"teacher": evaluate(teacher, held_out, flip_test=recipe.flip_test).stats}
    for name, (folder, _) in arms.items():
        scores[name] = evaluate(load_model(folder), held_out, flip_test=recipe.flip_test).stats
    w, h = teacher.config.input_size
    print(f"\nheld-out set: {held_out.name}; flip test {'on' if recipe.flip_test else 'off'}")
    print(f"teacher {teacher.config.name} ({teacher.num_parameters() / 1e6:.2f}M parameters, {w}x{h}): "
          f"AP {scores['teacher']['AP']:.4f}, AP50 {scores['teacher']['AP50']:.4f}, PCK@0.2 {scores['teacher']['PCK@0.2']:.4f}")
    base = scores["alone"]
    print(f"{'student':<8} {'params':>7} {'AP':>7} {'AP50':>7} {'PCK@0.2':>8} {'AP vs alone':>12} {'PCK vs alone':>13} {'minutes':>8}")
    for name, (folder, seconds) in arms.items():
        sc = scores[name]
        model = load_model(folder)
        print(f"{name:<8} {model.num_parameters() / 1e6:6.2f}M {sc['AP']:7.4f} {sc['AP50']:7.4f} {sc['PCK@0.2']:8.4f} "
              f"{sc['AP'] - base['AP']:+12.4f} {sc['PCK@0.2'] - base['PCK@0.2']:+13.4f} {seconds / 60:8.1f}")


if __name__ == "__main__":
    main()
