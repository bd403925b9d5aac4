"""What a training epoch pays to start its DataLoader workers: a loader per epoch vs workers that live on.

The trainer keeps one DataLoader per augmentation stage with persistent workers (``make_loader(...,
persistent=True)``); before, it made a loader every epoch, so every epoch started its worker processes
again (a worker that renders people builds the renderer first). For each training config this times,
interleaved repeat by repeat on the config's own training samples and worker count:

* ``first batch``: the median wait for an epoch's first batch, epochs after the first (the first epoch
  starts the workers either way);
* ``epochs``: the wall time of ``--epochs`` epochs of ``--batches`` batches each, with the ratio
  per-epoch loader / persistent workers (> 1: the persistent workers are faster).

    PYTHONPATH=. python benchmarks/epoch_start.py [--config synth-cpu --config litepose-xs-synth] [--epochs 4] [--batches 2]
"""
from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time

import torch

from _common import cpu_name, load_average  # benchmarks/_common.py (the script's folder is on sys.path)

from poseforge.models import create_model
from poseforge.train import load_config
from poseforge.train.data import ResumableBatchSampler, TrainSamples, build_train_source, make_loader


def run_epochs(samples: TrainSamples, sampler: ResumableBatchSampler, workers: int, epochs: int,
               persistent: bool) -> tuple[float, list[float]]:
    """Seconds for ``epochs`` epochs, and each epoch's wait for its first batch."""
    start = time.perf_counter()
    loader = make_loader(samples, sampler, workers, pin_memory=False, persistent=True) if persistent else None
    firsts = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        epoch_loader = loader if persistent else make_loader(samples, sampler, workers, pin_memory=False)
        t0 = time.perf_counter()
        for n, _ in enumerate(epoch_loader):
            if n == 0:
                firsts.append(time.perf_counter() - t0)
        del epoch_loader
    del loader  # the persistent workers exit here, inside the timed window
    return time.perf_counter() - start, firsts


def measure(name: str, epochs: int, batches: int, repeats: int) -> dict[str, float]:
    config = load_config(name)
    data = config.data
    if data.num_workers < 1:
        raise SystemExit(f"{name}: data.num_workers is 0, no worker to start")
    estimator = create_model(config.model.name, **config.model.overrides)
    fresh = data.train == "synthetic" and data.synthetic.fresh
    total = data.batch_size * batches * epochs
    source = build_train_source(data, estimator, total_images=total if fresh else None)
    samples = TrainSamples(source, [estimator.transform(True, data.augment)], config.seed)
    sampler = ResumableBatchSampler(len(source), data.batch_size, seed=config.seed, fresh=fresh, batches_per_epoch=batches)
    results: dict[str, list[float]] = {"per-epoch": [], "persistent": []}
    waits: dict[str, list[float]] = {"per-epoch": [], "persistent": []}
    for _ in range(repeats):
        for mode in results:
            seconds, firsts = run_epochs(samples, sampler, data.num_workers, epochs, mode == "persistent")
            results[mode].append(seconds)
            waits[mode] += firsts[1:]
    out = {f"{mode} s": statistics.median(v) for mode, v in results.items()}
    out.update({f"{mode} first": statistics.median(v) for mode, v in waits.items()})
    out["ratio"] = out["per-epoch s"] / out["persistent s"]
    out["workers"] = data.num_workers
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", dest="configs", action="append", help="preset or YAML (repeatable; default: "
                        "synth-cpu, litepose-xs-synth)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per timed run")
    parser.add_argument("--batches", type=int, default=2, help="batches per epoch (few: the start is what is timed)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each kind, interleaved (median)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"# epoch_start, {datetime.datetime.now():%Y-%m-%d %H:%M}, {cpu_name()}, torch {torch.__version__}, "
          f"{load_average()}")
    print(f"# {' '.join(['python benchmarks/epoch_start.py'] + sys.argv[1:])}")
    print(f"| config | workers | first batch, per-epoch loader | first batch, persistent | {args.epochs} epochs x "
          f"{args.batches} batches, per-epoch loader | persistent | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in args.configs or ["synth-cpu", "litepose-xs-synth"]:
        r = measure(name, args.epochs, args.batches, args.repeats)
        print(f"| {name} | {r['workers']} | {r['per-epoch first']:.2f} s | {r['persistent first']:.2f} s | "
              f"{r['per-epoch s']:.1f} s | {r['persistent s']:.1f} s | {r['ratio']:.2f}x |", flush=True)
    print(f"# {load_average()} after")


if __name__ == "__main__":
    main()
