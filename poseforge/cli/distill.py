"""``poseforge distill``: train a small student from a trained teacher (the ViTPose paper's distillation, or DWPose's).

    poseforge distill --teacher runs/teacher --student vitpose-tiny --method output --out runs/kd \\
        --config synth-cpu --set model.overrides.embed_dim=96
    poseforge distill --teacher runs/teacher --student vitpose-tiny --method token --token-epochs 2 --out runs/kt
    poseforge distill --teacher runs/rtmpose-s --student rtmpose-t --method dwpose --config rtmpose-t-synth --out runs/dw
    poseforge distill --teacher runs/litepose-s --student litepose-xs --method output --out runs/lite-kd

``--method output``: ground-truth loss + ``--kd-weight`` x the distance to the teacher's outputs: MSE of heatmaps,
KL of SimCC bins, and for bottom-up models (LitePose) the heatmap MSE at both scales plus ``--kd-tag-weight`` x
the tag term (tags centred per image, weighted by the teacher's heatmaps).
``--method token``: learn ``--tokens`` knowledge tokens on the frozen teacher (``OUT/token``, ``--token-epochs``
at ``--token-lr``), then train the student with them appended and frozen (``OUT/student``).
``--method both``: the token student with the output loss.
``--method dwpose`` (SimCC models: RTMPose / DWPose): stage 1 (``OUT/stage1``) trains the student with the
teacher's feature and logit losses, decaying over the epochs; stage 2 (``OUT/stage2``, ``--stage2-epochs``,
default ~20 % of stage 1) trains only a new head on the frozen stage-1 backbone against the stage-1 head;
``OUT/student`` is the final student (:mod:`poseforge.train.dwpose`). A complete stage is skipped on a re-run,
an interrupted one resumed.
The student's training recipe is ``--config`` (a preset or YAML; default ``synth-cpu``, ``rtmpose-t-synth`` for
dwpose, ``litepose-xs-synth`` for a bottom-up teacher) with ``--set`` overrides; its keypoint set and input size default to the teacher's.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import PoseforgeError
from .common import add_verify_argument

if TYPE_CHECKING:
    from ..models.estimators import Estimator
    from ..train.config import TrainConfig

log = logging.getLogger("poseforge")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--teacher", required=True, help="trained teacher: model folder, .safetensors or training run folder")
    parser.add_argument("--student", required=True, help="student model name (poseforge.list_models()), e.g. vitpose-tiny")
    parser.add_argument("--method", required=True, choices=["output", "token", "both", "dwpose"], help="distillation method")
    parser.add_argument("--out", required=True, help="output folder (the student's run in OUT/student)")
    parser.add_argument("--config", default=None, metavar="NAME|FILE.yaml",
                        help="student training recipe (default: synth-cpu; rtmpose-t-synth for dwpose)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe field, e.g. --set model.overrides.embed_dim=96 (repeatable)")
    parser.add_argument("--kd-weight", type=float, default=1.0, help="weight of the output distillation loss (default 1)")
    parser.add_argument("--kd-tag-weight", type=float, default=1.0,
                        help="bottom-up teachers: weight of the tag term within the output loss (default 1)")
    parser.add_argument("--tokens", type=int, default=1, help="knowledge tokens to learn (default 1)")
    parser.add_argument("--token-epochs", type=int, default=2, help="epochs of token learning on the teacher (default 2)")
    parser.add_argument("--token-lr", type=float, default=1e-3, help="learning rate of token learning (default 1e-3)")
    parser.add_argument("--stage2-epochs", type=int, default=None,
                        help="dwpose: epochs of stage 2 (default: 60/270 of stage 1, at least 1; 0 skips it)")
    parser.add_argument("--stage2-gt-weight", type=float, default=0.0,
                        help="dwpose: weight of the ground-truth loss in stage 2 (default 0, as mmpose)")
    parser.add_argument("--stage2-head", choices=["fresh", "stage1"], default="fresh",
                        help="dwpose: stage 2's head starts fresh (default, as mmpose) or from the stage-1 head")
    add_verify_argument(parser)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..models import load_model
    from ..models.zoo import model_config
    from ..train.config import load_config
    from ..train.distill import (OutputDistillation, check_compatible, learn_knowledge_token, save_token,
                          token_student_setup)
    from ..train.engine import Trainer

    if args.tokens < 1 or args.token_epochs < 1:
        raise PoseforgeError("--tokens and --token-epochs must be >= 1")
    if args.stage2_epochs is not None and args.stage2_epochs < 0:
        raise PoseforgeError("--stage2-epochs must be >= 0")
    teacher = load_model(args.teacher, verify=args.verify)
    if args.config is None:
        args.config = ("rtmpose-t-synth" if args.method == "dwpose" else
                       "litepose-xs-synth" if teacher.kind == "bottomup" else "synth-cpu")
    if teacher.kind != "topdown" and args.method in ("token", "both", "dwpose"):
        raise PoseforgeError(f"--method {args.method} needs a top-down teacher ({args.teacher} is {teacher.kind}); "
                             "use --method output")
    if teacher.num_tasks > 1:
        raise PoseforgeError(f"{args.teacher}: a multi-task teacher; merge one task first (poseforge merge-experts)")
    if args.method == "dwpose":
        from ..train.dwpose import check_simcc

        check_simcc(teacher, "teacher")  # before the recipe is read or any data rendered
    out = Path(args.out)
    overrides = [f"model.name={args.student}"]
    given = " ".join(args.overrides)
    if "model.overrides.input_size" not in given:
        overrides.append(f"model.overrides.input_size={list(teacher.config.input_size)}")
    if "model.overrides.keypoint_set" not in given:
        overrides.append(f"model.overrides.keypoint_set={teacher.keypoint_set.name}")
    config = load_config(args.config, overrides + list(args.overrides))
    config = config.replace(name=f"{config.name}-distill-{args.method}")
    if args.method == "dwpose":
        return _run_dwpose(args, teacher, config, out)

    setup = None
    if args.method in ("token", "both"):
        token_file = out / "token" / "knowledge_token.safetensors"
        if token_file.is_file():
            from safetensors.torch import load_file

            token = load_file(str(token_file))["knowledge_token"]
            log.info(f"using the knowledge token learned before: {token_file}")
        else:
            token_config = config.replace(**{"name": f"{config.name}-token", "schedule.epochs": args.token_epochs,
                                             "optim.lr": args.token_lr, "optim.weight_decay": 0.0, "ema.momentum": 0.0,
                                             "schedule.milestones": []})
            log.info(f"stage 1: learning {args.tokens} knowledge token(s) on the frozen teacher ({args.token_epochs} epochs)")
            token = learn_knowledge_token(teacher, token_config, out / "token", tokens=args.tokens)
            save_token(token, token_file)
        config = config.replace(**{"model.overrides.knowledge_tokens": int(token.shape[1]),
                                   "model.overrides.knowledge_dim": int(token.shape[2])})
        setup = token_student_setup(token, teacher)
    else:
        def setup(student):  # noqa: E306  (only checks that the teacher fits)
            check_compatible(teacher, student)
            return student

    student_width = getattr(model_config(config.model.name, **config.model.overrides).backbone, "embed_dim", None)
    extra = (OutputDistillation(teacher, args.kd_weight, args.kd_tag_weight) if args.method in ("output", "both")
             else None)
    log.info(f"stage {'2' if setup is not None and args.method != 'output' else '1'}: training the student "
             f"{config.model.name}{f' ({student_width} wide)' if student_width else ''} with {args.method} "
             f"distillation from {teacher.config.name}")
    torch.manual_seed(config.seed)
    trainer = Trainer(config, out / "student", setup_model=setup, extra_loss=extra)
    summary = trainer.fit()
    best, metric = summary["best_score"], summary["best_metric"]
    print(f"distill ({args.method}): student {config.model.name} in {out / 'student'}: "
          + (f"best {metric} {best:.4f} (epoch {summary['best_epoch']}), " if best is not None else "")
          + f"{summary['steps']} steps in {summary['seconds'] / 60:.1f} min")
    return 0


def _run_dwpose(args: argparse.Namespace, teacher: "Estimator", config: "TrainConfig", out: Path) -> int:
    """Both DWPose stages (:func:`poseforge.train.dwpose.distill_dwpose`) and a summary line."""
    from ..train.dwpose import distill_dwpose

    result = distill_dwpose(teacher, config, out, stage2=args.stage2_epochs, stage2_gt_weight=args.stage2_gt_weight,
                            stage2_head=args.stage2_head)

    def describe(summary: dict) -> str:
        best, metric = summary["best_score"], summary["best_metric"]
        return ((f"best {metric} {best:.4f} (epoch {summary['best_epoch']}), " if best is not None else "")
                + f"{summary['steps']} steps in {summary['seconds'] / 60:.1f} min" + (" (done before)" if summary["skipped"] else ""))

    stage2 = result["stage2"]
    print(f"distill (dwpose): student {config.model.name} in {result['student']}; stage 1 ({out / 'stage1'}): "
          f"{describe(result['stage1'])}; stage 2 ({out / 'stage2'}): "
          + (describe(stage2) if stage2 is not None else "skipped (--stage2-epochs 0)"))
    return 0
