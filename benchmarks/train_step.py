"""Training-step speed of a preset's model against variants of it, measured in one run.

One step is what the trainer does per batch once the batch is on the device: codec targets, forward,
the preset's loss, backward, gradient clipping, the trainer's AdamW update and the EMA update where a
config turns it on (random crops, keypoints inside them; the same step as ``benchmarks/loader.py``'s
model rate). The data loader, logging and validation are left out, so a variant's ratio here is an
upper bound on its ratio in a real run. Variants are ``--set`` overrides of the preset; the steps are
interleaved so that a noisy neighbour slows every model alike, and throughput is the median images/s.

    PYTHONPATH=. python benchmarks/train_step.py [--config synth-cpu] [--repeats 7] \\
        [--variant "width 96=model.overrides.embed_dim=96;model.overrides.deconv_channels=[96]" ...]
"""
from __future__ import annotations

import argparse
import datetime

import torch

from poseforge.train import load_config

from _common import cpu_name, load_average, race, training_step  # benchmarks/_common.py (on sys.path)

# The synth-cpu probes of benchmarks/RESULTS.md (sc9, sc10, sc12's EMA, sc6's one-conv-per-level stem), two
# other ways to shrink the transformer, the step without the preset's torch.compile and NHWC memory, and the
# fast-path switches (compiled step, AdamW kernel, activation checkpointing).
DEFAULT_VARIANTS = {
    "width 192, 6 heads (sc9)": ["model.overrides.embed_dim=192", "model.overrides.num_heads=6"],
    "width 96 (sc10)": ["model.overrides.embed_dim=96", "model.overrides.deconv_channels=[96]"],
    "depth 4": ["model.overrides.depth=4"],
    "MLP 256": ["model.overrides.mlp_dim=256"],
    "EMA of the weights (sc12)": ["ema.momentum=0.003", "ema.gamma=300"],
    "stem depth 1 (sc6)": ["model.overrides.stem_depth=1"],
    "eager (compile off)": ["compile=false"],
    "NCHW memory (channels_last off)": ["channels_last=false"],
    "eager, NCHW (sc13's step)": ["compile=false", "channels_last=false"],
    "compiled step (compile=step)": ["compile=step"],
    "AdamW for-loop (not fused)": ["optim.implementation=for_loop"],
    "checkpoint all blocks": ["activation_checkpointing=all"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="synth-cpu", help="preset or YAML file (default: synth-cpu)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=K=V;K=V",
                        help="a named variant: ';'-separated --set overrides (default: the probes in RESULTS)")
    parser.add_argument("--batch", type=int, default=None, help="crops per step (default: the preset's batch)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the preset's)")
    args = parser.parse_args()

    preset = load_config(args.config)
    variants = dict(DEFAULT_VARIANTS)
    if args.variant:
        variants = {spec.split("=", 1)[0]: spec.split("=", 1)[1].split(";") for spec in args.variant}
    threads = args.threads or preset.threads
    if threads:
        torch.set_num_threads(threads)
    batch = args.batch or preset.data.batch_size
    print(f"train_step benchmark, {datetime.date.today()}, torch {torch.__version__}, {cpu_name()}, "
          f"{torch.get_num_threads()} threads, {load_average()}; preset {args.config}, batch {batch}")

    runners, params = {}, {}
    for name, overrides in {args.config: [], **variants}.items():
        runners[name], model = training_step(load_config(args.config, overrides), batch)
        params[name] = sum(p.numel() for p in model.parameters())
    speeds = race(runners, items=batch, repeats=args.repeats, warmup=2)
    reference = speeds[args.config]
    for name, speed in speeds.items():
        print(f"{name:28s} {params[name] / 1e6:6.2f}M params {speed:7.1f} img/s  {speed / reference:5.2f}x")


if __name__ == "__main__":
    main()
