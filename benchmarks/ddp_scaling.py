"""Data-parallel scaling on CPU (gloo): training images/s of 1 process against 2, under DDP and FSDP.

Each run is the real command, ``torchrun --standalone --nproc_per_node N -m poseforge.cli train``, on
a small model (default: the ``smoke`` preset's ViT) and a COCO-format JPEG folder written once by
``poseforge synth`` (every process decodes, crops and augments its own share of each batch, no workers).
The per-process batch is fixed (``--batch``), so N processes train N times the images per step (weak
scaling, as a multi-GPU run does). Throughput is the trainer's own figure (``images_per_s`` in
``metrics.jsonl``: all processes' images per second), the median of the log windows after the first
(start-up, first steps). The configurations run in interleaved rounds (``--repeats``), so a busy
neighbour on a shared machine slows them alike; each line prints its ratio to 1 process.

    PYTHONPATH=. python benchmarks/ddp_scaling.py [--config smoke] [--batch 16] [--steps 40] [--repeats 3] \\
        [--threads 1] [--strategies ddp,fsdp]

``--threads`` is torch's intra-op threads per process (default 1: one core per process, so 2 processes
use 2 cores where 1 uses one; the "1 process, 2 threads" line gives the same 2 cores to one process).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from _common import cpu_name, load_average  # benchmarks/_common.py (the script's folder is on sys.path)

ROOT = Path(__file__).resolve().parents[1]


def torchrun(nproc: int, out: Path, config: str, sets: list[str]) -> subprocess.CompletedProcess:
    """One ``poseforge train`` under torchrun (single node, c10d rendezvous on a free local port)."""
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "poseforge.cli", "train", "--config", config, "--out", str(out)]
    for s in sets:
        argv += ["--set", s]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, timeout=3600)


def window_rates(run_dir: Path) -> list[float]:
    """``images_per_s`` of the run's train records after the first window."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rates = [r["images_per_s"] for r in records if r.get("kind") == "train"]
    if len(rates) < 2:
        raise SystemExit(f"{run_dir}: fewer than 2 log windows; raise --steps")
    return rates[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="smoke", help="preset or YAML file (default: smoke)")
    parser.add_argument("--batch", type=int, default=16, help="images per process and step (default 16)")
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per run (default 40)")
    parser.add_argument("--window", type=int, default=8, help="steps per log window (default 8)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    parser.add_argument("--strategies", default="ddp,fsdp", help="comma-separated: ddp, fsdp")
    parser.add_argument("--images", type=int, default=256, help="JPEG images to write (default 256)")
    parser.add_argument("--set", action="append", default=[], metavar="K=V", help="extra override for every run")
    args = parser.parse_args()

    tmp = tempfile.TemporaryDirectory(prefix="poseforge-ddp-")
    work = Path(tmp.name)
    data = work / "data"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "poseforge.cli", "synth", "--out", str(data), "--num-images", str(args.images),
                    "--size", "192x256", "--people", "1-1", "--keypoints", "coco17"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)})
    common = [f"data.train={data}", "data.num_workers=0", f"data.batch_size={args.batch}", "val_interval=0",
              f"max_steps={args.steps}", f"log_interval={args.window}", "schedule.epochs=1000",
              "schedule.steps_per_epoch=null", *args.set]
    runs: dict[str, tuple[int, list[str]]] = {"1 process": (1, [f"threads={args.threads}"])}
    if args.threads == 1:
        runs["1 process, 2 threads"] = (1, ["threads=2"])
    for strategy in args.strategies.split(","):
        runs[f"2 processes, {strategy.upper()}"] = (2, [f"threads={args.threads}", f"distributed={strategy}"])
    print(f"# ddp_scaling, {datetime.datetime.now():%Y-%m-%d %H:%M}, torch {torch.__version__}, {cpu_name()}, "
          f"{os.cpu_count()} CPUs, {load_average()}; wrote {args.images} JPEGs in {time.perf_counter() - start:.0f} s")
    print(f"# config {args.config}, batch {args.batch} per process, {args.steps} steps per run, medians of the "
          f"{args.window}-step windows after the first, {args.repeats} interleaved rounds, gloo")
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for round_ in range(args.repeats):
        for name, (nproc, sets) in runs.items():
            out = work / f"run-{round_}-{len(rates[name])}-{name.replace(' ', '_').replace(',', '')}"
            result = torchrun(nproc, out, args.config, common + sets)
            if result.returncode != 0:
                raise SystemExit(f"{name} failed:\n{result.stderr[-3000:]}")
            rates[name] += window_rates(out)
    reference = statistics.median(rates["1 process"])
    print(f"{'run':<24} {'img/s (all processes)':>22} {'vs 1 process':>13}")
    for name, values in rates.items():
        median = statistics.median(values)
        print(f"{name:<24} {median:>22.1f} {median / reference:>12.2f}x")
    print(f"# {load_average()} at the end")
    tmp.cleanup()


if __name__ == "__main__":
    main()
