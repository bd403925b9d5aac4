"""Ship a trained model: the best checkpoint of a run as small fp16 weights plus ``training.json``.

    poseforge train --config synth-cpu --out runs/pose --export poseforge/assets/pose
    python -m poseforge.train.export runs/pose poseforge/assets/pose   # an existing run

``training.json`` records what reproduces and judges the weights: the training command, the resolved
config, the best validation scores (with the held-out set they were measured on) and the training time.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import torch

from ..errors import PoseforgeError
from ..io import write_json_atomic

__all__ = ["export_run"]


def export_run(run_dir: str | Path, export_dir: str | Path, command: str | None = None,
               dtype: torch.dtype = torch.float16) -> dict[str, Any]:
    """Write the best model of ``run_dir`` to ``export_dir`` in ``dtype`` with a ``training.json``;
    returns that record."""
    from ..models import load_model
    from .checkpoint import load_checkpoint
    from .config import config_to_dict, load_config
    from .curves import read_metrics

    run = Path(run_dir)
    best_dir = run / "best"
    if not (best_dir / "model.safetensors").is_file():
        raise PoseforgeError(f"{run}: no best model to export (best/model.safetensors is missing; was validation on?)")
    config = load_config(run / "config.yaml")
    best = json.loads((best_dir / "training.json").read_text()) if (best_dir / "training.json").is_file() else {}
    records = read_metrics(run / "metrics.jsonl") if (run / "metrics.jsonl").is_file() else []
    vals = [r for r in records if r.get("kind") == "val"]
    best_val = next((r for r in reversed(vals) if r.get("epoch") == best.get("epoch")), vals[-1] if vals else {})
    last = load_checkpoint(run / "last.pt") if (run / "last.pt").is_file() else {}
    seconds, setup = last.get("elapsed"), last.get("setup_seconds")
    model = load_model(best_dir)
    model.save_pretrained(export_dir, dtype=dtype)
    s = config.data.synthetic
    held_out = (f"{s.val_images} synthetic images {s.image_size[0]}x{s.image_size[1]}, {s.val_people[0]}-{s.val_people[1]} "
                f"people, seed {s.val_seed}, ground-truth boxes" if config.data.train == "synthetic" and not config.data.val
                else str(config.data.val or config.data.train))
    record = {
        "what": f"{model.config.name} ({model.num_parameters() / 1e6:.2f}M parameters, "
                f"{model.config.input_size[0]}x{model.config.input_size[1]}), {str(dtype).removeprefix('torch.')} weights",
        "command": command or f"poseforge train --config {run / 'config.yaml'}",
        "training_minutes": round(float(seconds) / 60, 1) if seconds is not None else None,
        # building the model and data (rendering a cached synthetic set) before the first step
        "setup_minutes": round(float(setup) / 60, 1) if setup is not None else None,
        "validation": {"set": held_out, "flip_test": config.flip_test,
                       **{k: v for k, v in best_val.items() if k != "kind"}},
        "config": config_to_dict(config),
    }
    write_json_atomic(Path(export_dir) / "training.json", record, indent=2)
    return record


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m poseforge.train.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="training run folder (with best/, config.yaml, metrics.jsonl)")
    parser.add_argument("out", help="folder to write model.safetensors, config.json and training.json")
    parser.add_argument("--command", default=None, help="the command that trained the run (recorded as given)")
    parser.add_argument("--fp32", action="store_true", help="keep float32 weights (default: fp16)")
    args = parser.parse_args(argv)
    try:
        record = export_run(args.run, args.out, args.command, torch.float32 if args.fp32 else torch.float16)
    except PoseforgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ap = record["validation"].get("AP")
    print(f"exported {record['what']} to {args.out}" + (f"; best held-out AP {ap:.4f}" if ap is not None else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
