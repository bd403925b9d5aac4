"""``poseforge merge-experts MODEL --task NAME --out DIR``: a ViTPose++ task as a plain ViTPose model folder.

    poseforge merge-experts runs/vitpose++-synth --task coco --out models/people
    poseforge merge-experts vitpose-plus-b/ --task all --out merged/     # one folder per task

Each merged model is checked against the multi-task model on a random batch; the largest absolute
heatmap difference is printed (and must stay under ``--tolerance``).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import PoseforgeError
from .common import add_verify_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="ViTPose++ model folder / .safetensors file, or a training run folder")
    parser.add_argument("--task", required=True, action="append",
                        help="task name or index to keep (repeatable; 'all' = every task into OUT/<task>)")
    parser.add_argument("--out", required=True, help="output model folder (with several tasks: a parent folder)")
    parser.add_argument("--tolerance", type=float, default=1e-5, help="max abs heatmap difference allowed (default 1e-5)")
    parser.add_argument("--force", action="store_true", help="overwrite existing model folders")
    add_verify_argument(parser)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..models import load_model
    from ..models.config import MultiTaskTopDownConfig
    from ..models.estimators import WEIGHTS_NAME
    from ..models.merge import merge_experts

    model = load_model(args.model, verify=args.verify)
    if not isinstance(model.config, MultiTaskTopDownConfig):
        raise PoseforgeError(f"{args.model}: not a multi-task (ViTPose++) model ({model.config.name}); nothing to merge")
    names = list(model.config.task_names) if "all" in args.task else args.task
    tasks = [model.config.task_index(t) for t in names]
    several = len(tasks) > 1
    out_root = Path(args.out)
    w, h = model.config.input_size
    x = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(0))
    for t in tasks:
        name = model.config.tasks[t].name
        out = out_root / name if several else out_root
        if (out / WEIGHTS_NAME).exists() and not args.force:
            raise PoseforgeError(f"{out}: already holds a model (use --force to overwrite)")
        merged = merge_experts(model, t).eval()
        with torch.no_grad():
            diff = float((merged(x).heatmaps - model(x, t).heatmaps).abs().max())
        if not diff <= args.tolerance:
            raise PoseforgeError(f"task {name}: merged heatmaps differ by {diff:.3g} (> {args.tolerance:g})")
        merged.save_pretrained(out)
        print(f"{name}: {merged.config.name} -> {out} ({merged.num_parameters() / 1e6:.2f}M parameters, "
              f"{merged.keypoint_set.name}); max abs heatmap difference {diff:.2e}")
    return 0
