"""DWPose on synthetic whole-body people (wholebody133): a small RTMPose student trained alone against the
same student trained with DWPose's two stages from a larger teacher, with the same total student epochs.

Every arm is an ordinary ``poseforge`` command (printed before it runs, so each number can be reproduced
alone; an arm whose run is complete is reused, an interrupted one resumed):

* ``teacher``: ``poseforge train --config RECIPE --set model.name=TEACHER ... --set schedule.epochs=TEACHER_EPOCHS``
* ``alone``:   ``poseforge train --config RECIPE --set model.name=STUDENT ... --set schedule.epochs=BUDGET``
* ``dwpose``:  ``poseforge distill --method dwpose --teacher OUT/teacher --student STUDENT ...
  --set schedule.epochs=BUDGET-S2 --stage2-epochs S2`` (stage 1 + stage 2 = BUDGET epochs; S2 defaults to
  BUDGET / 6, the official 60 : 270 split)

The table scores each model on the recipe's held-out whole-body people (ground-truth boxes, the recipe's flip
test): COCO-WholeBody AP per part (body, foot, face, lefthand, righthand) and for the whole body, for the
teacher, the student alone, the DWPose student and its stage-1 student, with DWPose / alone as a ratio and
difference; then the whole body's PCK@0.2 (box-normalized) and mean pixel error, which move before AP does.

    PYTHONPATH=. python benchmarks/dwpose_compare.py --out runs/dwpose-compare            # full: ~3 x recipe time
    PYTHONPATH=. python benchmarks/dwpose_compare.py --out /tmp/dwq --quick               # < 2 min, tiny models
"""
from __future__ import annotations

import argparse
import datetime
import shlex
import sys
from pathlib import Path

from _common import cpu_name, load_average, run_logged  # benchmarks/_common.py (the script's folder is on sys.path)

PARTS = ("body", "foot", "face", "lefthand", "righthand", "wholebody")

# --quick: the smoke recipe with tiny CSPNeXt models on 64x96 crops, one thread, a few steps per arm.
QUICK_SHARED = ["model.pos_embed_init=model", "compile=false", "schedule.steps_per_epoch=null",
                "data.synthetic.train_images=64", "data.synthetic.val_images=8", "data.synthetic.image_size=[64,96]",
                "data.batch_size=8", "data.val_batch_size=8", "schedule.warmup_iters=2", "val_interval=1",
                "log_interval=4", "threads=1", "data.num_workers=0"]
QUICK_MODEL = ("model.overrides={{input_size: [64, 96], keypoint_set: wholebody133, widen_factor: {width}, "
               "deepen_factor: 0.167, hidden_dim: 32, attention_dim: 16}}")


def train_arm(cli: list[str], folder: Path, args: list[str], epochs: int) -> float:
    """``poseforge train`` into ``folder``: reused when complete, resumed when interrupted."""
    from poseforge.models.loading import read_training_checkpoint

    last = folder / "last.pt"
    if last.is_file():
        if int(read_training_checkpoint(last)["epoch"]) >= epochs:
            print(f"(reusing the complete run {folder})")
            return 0.0
        return run_logged(cli + ["train", "--out", str(folder), "--resume"], folder.with_suffix(".log"))
    return run_logged(cli + ["train", "--out", str(folder)] + args, folder.with_suffix(".log"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for the runs of every arm")
    parser.add_argument("--quick", action="store_true", help="tiny models and data, a check that the script runs (< 2 min)")
    parser.add_argument("--config", default=None, help="training recipe of every arm (default rtmpose-t-synth; smoke with --quick)")
    parser.add_argument("--teacher", default="rtmpose-s", help="teacher model name (default rtmpose-s)")
    parser.add_argument("--student", default="rtmpose-t", help="student model name (default rtmpose-t)")
    parser.add_argument("--teacher-epochs", type=int, default=None, help="teacher epochs (default 15; 2 with --quick)")
    parser.add_argument("--budget", type=int, default=None, help="student epochs of each arm (default 15; 3 with --quick)")
    parser.add_argument("--stage2-epochs", type=int, default=None, help="DWPose stage-2 epochs within the budget "
                                                                        "(default budget / 6, at least 1)")
    parser.add_argument("--stage2-head", choices=["fresh", "stage1"], default="fresh",
                        help="DWPose stage 2's head: fresh (mmpose) or the stage-1 head")
    parser.add_argument("--stage2-gt-weight", type=float, default=0.0, help="DWPose stage 2's ground-truth loss weight "
                                                                             "(mmpose: 0)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="recipe override shared by every arm (repeatable)")
    parser.add_argument("--teacher-set", action="append", default=[], metavar="KEY=VALUE", help="teacher-only override")
    parser.add_argument("--student-set", action="append", default=[], metavar="KEY=VALUE",
                        help="override of both students (alone and DWPose)")
    args = parser.parse_args()

    config = args.config or ("smoke" if args.quick else "rtmpose-t-synth")
    teacher_epochs = args.teacher_epochs or (2 if args.quick else 15)
    budget = args.budget or (3 if args.quick else 15)
    stage2 = args.stage2_epochs if args.stage2_epochs is not None else max(1, round(budget / 6))
    if not 0 <= stage2 < budget:
        sys.exit(f"--stage2-epochs must be in 0..{budget - 1} (stage 1 needs at least one of the {budget} epochs)")
    shared = (QUICK_SHARED if args.quick else []) + args.overrides
    if args.quick:
        teacher_model = [QUICK_MODEL.format(width=0.25)]
        student_model = [QUICK_MODEL.format(width=0.125)]
    else:
        teacher_model = student_model = ["model.overrides.keypoint_set=wholebody133"]
    teacher_sets = [f"model.name={args.teacher}"] + teacher_model + shared + args.teacher_set
    student_sets = [f"model.name={args.student}"] + student_model + shared + args.student_set

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cli = [sys.executable, "-m", "poseforge.cli"]
    print(f"dwpose_compare, {datetime.date.today()}, {cpu_name()}, {load_average()}")
    print(f"command: python {shlex.join(sys.argv)}")
    print(f"recipe {config}; teacher {args.teacher} {teacher_epochs} epochs; students {args.student} {budget} epochs "
          f"(DWPose: stage 1 {budget - stage2} + stage 2 {stage2}, {args.stage2_head} head, ground-truth weight "
          f"{args.stage2_gt_weight:g})")

    def sets(items: list[str]) -> list[str]:
        return [x for item in items for x in ("--set", item)]

    minutes: dict[str, float] = {}
    minutes["teacher"] = train_arm(cli, out / "teacher", ["--config", config] + sets(teacher_sets + [f"schedule.epochs={teacher_epochs}"]),
                                   teacher_epochs) / 60
    minutes["alone"] = train_arm(cli, out / "alone", ["--config", config] + sets(student_sets + [f"schedule.epochs={budget}"]),
                                 budget) / 60
    minutes["dwpose"] = run_logged(cli + ["distill", "--method", "dwpose", "--teacher", str(out / "teacher"), "--student", args.student,
                                   "--out", str(out / "dwpose"), "--config", config, "--stage2-epochs", str(stage2),
                                   "--stage2-head", args.stage2_head, "--stage2-gt-weight", str(args.stage2_gt_weight)]
                            + sets(student_sets + [f"schedule.epochs={budget - stage2}"]), out / "dwpose.log") / 60

    # Everyone on the students' held-out set (their validation set), each part scored separately.
    from poseforge.data.evalsets import synthetic_eval_set
    from poseforge.evaluation import evaluate
    from poseforge.models import load_model
    from poseforge.models.loading import read_training_checkpoint
    from poseforge.train.config import load_config

    recipe = load_config(config, student_sets)
    s = recipe.data.synthetic
    held_out = synthetic_eval_set(num_images=s.val_images, seed=s.val_seed, image_size=s.image_size, people=s.val_people,
                                  keypoint_set="wholebody133", clutter=s.clutter)
    folders = {"teacher": out / "teacher", "alone": out / "alone", "dwpose": out / "dwpose" / "student",
               "stage 1": out / "dwpose" / "stage1"}
    models = {name: load_model(folder) for name, folder in folders.items()}
    scores = {name: evaluate(model, held_out, flip_test=recipe.flip_test).stats for name, model in models.items()}
    stage_minutes = [float(read_training_checkpoint(out / "dwpose" / f"stage{i}" / "last.pt").get("elapsed", 0.0)) / 60
                     if (out / "dwpose" / f"stage{i}" / "last.pt").is_file() else 0.0 for i in (1, 2)]

    print(f"\nheld-out set: {held_out.name}, wholebody133; flip test {'on' if recipe.flip_test else 'off'}")
    for name, model in models.items():
        w, h = model.config.input_size
        print(f"  {name:<8} {model.config.name} {model.num_parameters() / 1e6:.2f}M parameters, {w}x{h}")
    columns = list(models)
    print(f"\n{'AP':<10}" + "".join(f"{c:>9}" for c in columns) + f"{'dwpose/alone':>14}{'dwpose-alone':>14}")
    for part in PARTS:
        values = [scores[c].get(f"{part}/AP", float("nan")) for c in columns]
        alone, dwpose = scores["alone"].get(f"{part}/AP", float("nan")), scores["dwpose"].get(f"{part}/AP", float("nan"))
        ratio = f"{dwpose / alone:14.3f}" if alone > 0 else f"{'n/a':>14}"
        print(f"{part:<10}" + "".join(f"{v:9.4f}" for v in values) + ratio + f"{dwpose - alone:+14.4f}")
    # Box-normalized PCK and the pixel error move long before OKS AP does (short budgets, tiny crops).
    for stat, label in (("PCK@0.2", "PCK@0.2"), ("EPE", "EPE px")):
        values = [scores[c].get(stat, float("nan")) for c in columns]
        alone, dwpose = scores["alone"].get(stat, float("nan")), scores["dwpose"].get(stat, float("nan"))
        ratio = f"{dwpose / alone:14.3f}" if alone > 0 else f"{'n/a':>14}"
        print(f"{label:<10}" + "".join(f"{v:9.4f}" for v in values) + ratio + f"{dwpose - alone:+14.4f}")
    print(f"\nminutes (wall, this script's commands; 0 = reused): teacher {minutes['teacher']:.1f}, alone {minutes['alone']:.1f}, "
          f"dwpose {minutes['dwpose']:.1f} (training: stage 1 {stage_minutes[0]:.1f}, stage 2 {stage_minutes[1]:.1f})")


if __name__ == "__main__":
    main()
