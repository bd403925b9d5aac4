"""``poseforge pretrain``: MAE pretraining of a ViT backbone (Sapiens), through the same Trainer as ``train``.

    poseforge pretrain --list
    poseforge pretrain --config sapiens-tiny-mae-synth --out runs/mae          # ~10 min on 2 CPU cores
    poseforge pretrain --out runs/mae --resume
    poseforge pretrain --config sapiens-0.3b-mae --set data.batch_size=64      # the official recipe
    poseforge train --config synth-cpu --set model.backbone_init=runs/mae ...  # fine-tune the encoder

At the end ``reconstruction.png`` in the run folder shows held-out images: original | masked | reconstruction.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..errors import PoseforgeError
from . import train


def add_arguments(parser: argparse.ArgumentParser) -> None:
    train.add_arguments(parser)
    parser.add_argument("--list", action="store_true", help="list the MAE pretraining presets and exit")
    parser.add_argument("--reconstruction", type=int, default=4, metavar="N",
                        help="held-out images drawn into RUN_DIR/reconstruction.png at the end (0: none)")


def run(args: argparse.Namespace) -> int:
    from ..train.config import load_config
    from ..train.mae import MAE_PRESETS, is_mae_config, write_reconstruction

    if args.list:
        for name in MAE_PRESETS:
            print(f"{name:<24} {load_config(name).description}")
        return 0
    if args.reconstruction < 0:
        raise PoseforgeError(f"--reconstruction: expected a count >= 0, got {args.reconstruction}")
    if args.resume:
        if not args.out:
            raise PoseforgeError("--resume needs --out RUN_DIR (the run to continue)")
        config = load_config(Path(args.out) / "config.yaml", list(args.overrides))
    else:
        if not args.config:
            raise PoseforgeError("--config NAME|FILE.yaml is required (or --resume --out RUN_DIR); see --list")
        config = load_config(args.config, list(args.overrides))
    if not is_mae_config(config):
        raise PoseforgeError(f"--config {args.config or args.out}: model {config.model.name} is not an MAE model; "
                             f"pretrain one of {', '.join(MAE_PRESETS)} (or train it with poseforge train)")
    if config.val_interval:
        raise PoseforgeError(f"val_interval={config.val_interval}: MAE pretraining has no validation metric; set val_interval=0")
    export = args.export
    args.export = None  # (train's --export ships a validated best model; an MAE run has none: saved below)
    if not args.out and not args.print_config:
        args.out = str(Path("runs") / f"{config.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    code = train.run(args)
    if code or args.print_config:
        return code
    out = Path(args.out)
    if export:
        from ..models import load_model

        load_model(out).save_pretrained(export)
        print(f"saved the MAE model to {export}")
    if args.reconstruction:
        path = write_reconstruction(out, out / "reconstruction.png", count=args.reconstruction)
        print(f"reconstructions of {args.reconstruction} held-out images: {path}")
    return 0
