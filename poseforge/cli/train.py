"""``poseforge train``: train a model from a preset or a YAML config.

    poseforge train --config smoke --out runs/smoke
    poseforge train --config vitpose-b-coco --data /data/coco --set optim.lr=1e-4 --set data.batch_size=32
    poseforge train --out runs/smoke --resume
    poseforge train --config synth-cpu --out runs/pose --export my-model   # + best model as fp16
    torchrun --nproc_per_node 8 -m poseforge.cli train --config vitpose-l-coco --data /data/coco
    poseforge train --config synth-cpu --set model.init=runs/pose/best --unlabeled my-frames/ --out runs/self

``--unlabeled DIR`` (self-training, an option, never used for the shipped numbers): before training, a
teacher (``--teacher``, default ``model.init``) labels the images of DIR into ``pseudo_labels.json`` in the
run folder (keypoints scoring >= ``--pseudo-threshold``), and training mixes them into the training data;
validation stays on the held-out set, and ``--resume`` reuses the file (docs/sim2real.md).
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from ..errors import PoseforgeError

log = logging.getLogger("poseforge")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="NAME|FILE.yaml",
                        help="a preset (smoke, synth-cpu, synth-gpu, vitpose-{s,b,l,h}-coco) or a YAML config")
    parser.add_argument("--data", metavar="COCO_DIR|synthetic",
                        help="training data: a COCO folder or keypoint JSON, or 'synthetic' (sets data.train; the "
                             "val split is taken from the same folder)")
    parser.add_argument("--out", metavar="RUN_DIR", help="run folder (default: runs/<config name>-<time>)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set optim.lr=1e-4 (repeatable)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    parser.add_argument("--export", metavar="DIR", help="after training, write the best model to DIR as fp16 weights "
                                                        "with a training.json (command, config, validation scores)")
    parser.add_argument("--force", action="store_true", help="replace an existing model in the --export folder")
    group = parser.add_argument_group("self-training on unlabeled images (data.unlabeled; never used for the shipped models)")
    group.add_argument("--unlabeled", metavar="DIR",
                       help="images without labels (searched recursively): a teacher labels them before training "
                            "(RUN_DIR/pseudo_labels.json) and training mixes them into the training data")
    group.add_argument("--teacher", metavar="NAME|RUN",
                       help="the model that labels them: a weights name, model folder or training run (default: model.init)")
    group.add_argument("--pseudo-threshold", type=float, metavar="T",
                       help="keypoints scoring >= T (in [0, 1]) become labels (default 0.5)")
    group.add_argument("--unlabeled-ratio", type=float, metavar="R",
                       help="pseudo-labelled samples per labelled one; an epoch grows by that share (default 0.5)")


# what an export writes (model.safetensors, config.json, training.json): any of them there is a model to keep
_EXPORT_FILES = ("model.safetensors", "config.json", "training.json")


def _check_folders(args: argparse.Namespace, out: Path) -> None:
    """Refuse, before the data is rendered or loaded (tens of seconds to hours), a run folder that already
    holds a run (without --resume) and an --export folder that holds a model (without --force)."""
    if not args.resume and (out / "last.pt").exists():
        raise PoseforgeError(f"{out} already holds a training run (last.pt); continue it with --resume or "
                             "choose another --out")
    if args.export:
        export = Path(args.export)
        if export.resolve() in (out.resolve(), (out / "best").resolve()):
            raise PoseforgeError(f"--export {args.export} is the run folder (or its best/); export to another folder")
        existing = [name for name in _EXPORT_FILES if (export / name).exists()]
        if existing and not args.force:
            raise PoseforgeError(f"{export / existing[0]}: --export {args.export} already holds a model; use --force "
                                 "to replace it or choose another folder")


# flag -> the data.unlabeled field it sets
_SELF_TRAINING = {"unlabeled": "images", "teacher": "teacher", "pseudo_threshold": "threshold", "unlabeled_ratio": "ratio"}


def _self_training(args: argparse.Namespace) -> dict[str, Any]:
    """``data.unlabeled`` overrides of the self-training flags (values as typed, not parsed as YAML)."""
    given = {f"data.unlabeled.{field}": getattr(args, flag) for flag, field in _SELF_TRAINING.items()
             if getattr(args, flag, None) is not None}
    if given and args.resume:
        raise PoseforgeError("--unlabeled, --teacher, --pseudo-threshold and --unlabeled-ratio start a run; --resume "
                             "continues with the pseudo-labels its config.yaml records")
    return given


def run(args: argparse.Namespace) -> int:
    from ..train.config import dump_yaml, load_config

    self_training = _self_training(args)
    if args.resume:
        if not args.out:
            raise PoseforgeError("--resume needs --out RUN_DIR (the run to continue)")
        saved = Path(args.out) / "config.yaml"
        if not (Path(args.out) / "last.pt").is_file():
            raise PoseforgeError(f"{args.out}: nothing to resume (no last.pt)")
        if args.config:
            log.info(f"--resume: using {saved}, not --config {args.config}")
        overrides = list(args.overrides)
        if args.data:
            overrides.append(f"data.train={args.data}")
        config = load_config(saved, overrides)
    else:
        if not args.config:
            raise PoseforgeError("--config NAME|FILE.yaml is required (or --resume --out RUN_DIR)")
        overrides = list(args.overrides)
        if args.data:
            overrides += [f"data.train={args.data}", "data.val=null"]
        config = load_config(args.config, [*overrides, *self_training.items()])  # (checked together)
    if args.print_config:
        print(dump_yaml(config), end="")
        return 0
    out = Path(args.out) if args.out else Path("runs") / f"{config.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    _check_folders(args, out)

    from ..train.engine import Trainer

    trainer = Trainer(config, out, resume=args.resume)
    summary = trainer.fit()
    if trainer.dist.is_main:
        best, metric = summary["best_score"], summary["best_metric"]
        status = "stopped at max_steps" if summary["stopped_early"] else "done"
        print(f"{status}: {summary['epochs']} epochs, {summary['steps']} steps in {summary['seconds'] / 60:.1f} min "
              f"(+ {summary['setup_seconds'] / 60:.1f} min building model and data); "
              + (f"best {metric} {best:.4f} (epoch {summary['best_epoch']}); " if best is not None else "")
              + f"run folder {out}")
        if args.export:
            import shlex

            from ..train.export import export_run

            typed = getattr(args, "command_line", None)
            record = export_run(out, args.export, command=shlex.join(typed) if typed else None)
            print(f"exported {record['what']} to {args.export}")
    from ..train.distributed import cleanup_distributed

    cleanup_distributed()
    return 0
