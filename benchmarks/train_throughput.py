"""Training throughput of the real trainer loop and the data loader's share of it, per fast-path variant.

For a training config (default ``synth-cpu``) and two data sources - the synthetic renderer (people
rendered on the fly by the DataLoader workers; on CUDA in the training process) and COCO-format JPEG
files (640x480 scenes of 1-4 people written by ``poseforge synth`` into a temporary folder, or ``--coco
DIR``: decoded, cropped and augmented by the workers) - this builds one :class:`~poseforge.train.Trainer`
per variant (``--set`` overrides: AdamW kernel, ``compile`` mode, activation checkpointing ...) and
measures, per timed window of ``--steps`` optimizer steps:

* **train img/s**: images through the full training step (loading included) per second;
* **data share**: the part of the window the loop waited for its next batch (``Trainer.data_seconds``);
  on CUDA the host runs ahead of the GPU, so there ``--profile`` adds the **GPU busy** share (kernel time
  over wall time, ``torch.profiler``), the figure the goal "> 95 % busy" is about;
* **compute img/s**: images per second of the time not spent waiting for data, what the step would give
  with a loader that never makes it wait.

It then times the AdamW update alone per kernel (``optim.implementation``: for-loop, foreach, fused) on
``--adamw-models``, interleaved, to show the kernel's effect apart from the noise of whole steps.

Windows are whole epochs (``schedule.steps_per_epoch = --steps``): the loader's workers start at each
window's start and are shut down at its end, as the trainer runs an epoch, so no variant's workers load
ahead while another variant is timed. The first step of each window (worker start-up, the first batch)
is left out of the timing, and the variants' windows are interleaved: ``--repeats`` rounds of every
variant, after one untimed warm-up window each (``torch.compile`` compiles there). Figures are medians
over the rounds, and each variant's ratio is against the config as it is (the first row), measured in
the same rounds.

    PYTHONPATH=. python benchmarks/train_throughput.py [--config synth-cpu] [--steps 10] [--repeats 3] \\
        [--sources renderer,jpeg] [--variant "NAME=K=V;K=V" ...] [--coco DIR] [--profile]
"""
from __future__ import annotations

import argparse
import datetime
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from poseforge.device import resolve_device
from poseforge.train import Trainer, load_config

from _common import cpu_name, load_average, race  # benchmarks/_common.py (the script's folder is on sys.path)

# What the fast path changes, each against the config as it is: the AdamW kernel, the compile scope,
# activation checkpointing.
DEFAULT_VARIANTS = {
    "AdamW for-loop (unfused)": ["optim.implementation=for_loop"],
    "compile none (eager)": ["compile=none"],
    "compile step": ["compile=step"],
    "checkpoint all blocks": ["activation_checkpointing=all"],
}


def _window(trainer: Trainer, profile: bool) -> dict[str, float]:
    """One timed epoch of ``trainer`` (its first step untimed): images/s, data share, GPU busy share."""
    steps = trainer._epoch_steps()  # the trainer's own loop: loader, transfer, step, optimizer, logging
    cuda = trainer.device.type == "cuda"
    try:
        next(steps)  # workers start, first batch, first step
        if cuda:
            torch.cuda.synchronize(trainer.device)
        start, data0, step0 = time.perf_counter(), trainer.data_seconds, trainer.step
        profiler = _gpu_profiler() if profile and cuda else None
        if profiler is not None:
            profiler.__enter__()
        for _ in steps:
            pass
        if cuda:
            torch.cuda.synchronize(trainer.device)
        seconds = time.perf_counter() - start
        busy = _gpu_busy_seconds(profiler) / seconds if profiler is not None else float("nan")
    finally:
        steps.close()
    trainer.epoch += 1  # as the trainer's epoch end, without validation or checkpoint writing
    trainer.batch_in_epoch = 0
    images = (trainer.step - step0) * trainer.config.data.batch_size * trainer.config.optim.accumulate
    data = trainer.data_seconds - data0
    return {"img_s": images / seconds, "data_share": data / seconds,
            "compute_img_s": images / max(seconds - data, 1e-9), "gpu_busy": busy}


def _gpu_profiler() -> Any:
    from torch.profiler import ProfilerActivity, profile

    return profile(activities=[ProfilerActivity.CUDA])


def _gpu_busy_seconds(profiler: Any) -> float:
    """Seconds in which at least one GPU kernel or copy ran (the union of their intervals)."""
    profiler.__exit__(None, None, None)
    intervals = sorted((e.time_range.start, e.time_range.end) for e in profiler.events()
                       if e.device_type == torch.autograd.DeviceType.CUDA)
    busy, end = 0.0, float("-inf")
    for a, b in intervals:  # microseconds
        if b > end:
            busy += b - max(a, end)
            end = b
    return busy / 1e6


def adamw_update_rates(model_names: list[str], repeats: int, device: torch.device) -> None:
    """The AdamW update alone (random gradients) per kernel, interleaved: what ``optim.implementation``
    changes, on the config's model and on larger ones (the update's share of a step grows with the model)."""
    from poseforge.models import create_model
    from poseforge.train import OptimSection, build_optimizer

    print(f"\n## AdamW update alone on {device} (median of {repeats} interleaved steps per kernel)")
    print(f"{'model':<22} {'params':>8} " + " ".join(f"{k + ' ms':>14}" for k in ("for_loop", "foreach", "fused"))
          + f" {'fused vs for_loop':>18}")
    for name in model_names:
        torch.manual_seed(0)
        model = create_model(name).to(device)
        runners = {}
        for kernel in ("for_loop", "foreach", "fused"):
            copy = create_model(name).to(device)
            copy.load_state_dict(model.state_dict())
            for p in copy.parameters():
                p.grad = torch.randn_like(p)
            runners[kernel] = build_optimizer(copy, OptimSection(lr=1e-4, implementation=kernel)).step
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        speeds = race(runners, items=1, repeats=repeats, warmup=1, sync=sync)
        ms = {k: 1e3 / v for k, v in speeds.items()}
        params = sum(p.numel() for p in model.parameters()) / 1e6
        print(f"{name:<22} {params:>7.1f}M " + " ".join(f"{ms[k]:>14.1f}" for k in ("for_loop", "foreach", "fused"))
              + f" {ms['for_loop'] / ms['fused']:>17.2f}x")


def _write_jpeg_dataset(folder: Path, images: int, seed: int) -> None:
    subprocess.run([sys.executable, "-m", "poseforge.cli", "synth", "--out", str(folder), "--num-images", str(images),
                    "--seed", str(seed), "--size", "640x480", "--people", "1-4", "--keypoints", "coco17",
                    "--format", "jpg"], check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="synth-cpu", help="preset or YAML file (default: synth-cpu)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=K=V;K=V",
                        help="a named variant: ';'-separated --set overrides (default: the fast-path switches)")
    parser.add_argument("--set", action="append", default=[], metavar="K=V", help="override for every variant")
    parser.add_argument("--sources", default="renderer,jpeg", help="comma-separated: renderer, jpeg")
    parser.add_argument("--coco", default=None, metavar="DIR", help="a COCO-format folder instead of rendered JPEGs")
    parser.add_argument("--jpeg-images", type=int, default=256, help="640x480 JPEG scenes to write (default 256)")
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per timed window (default 10)")
    parser.add_argument("--repeats", type=int, default=3, help="timed windows per variant (the median is reported)")
    parser.add_argument("--profile", action="store_true", help="on CUDA: GPU busy share from torch.profiler")
    parser.add_argument("--adamw-models", default="vitpose-tiny,vitpose-b",
                        help="models whose AdamW update alone is timed per kernel ('' to skip)")
    args = parser.parse_args()
    logging.getLogger("poseforge").setLevel(logging.WARNING)

    variants = {"as configured": []}
    variants.update({spec.split("=", 1)[0]: spec.split("=", 1)[1].split(";") for spec in args.variant}
                    if args.variant else DEFAULT_VARIANTS)
    windows = args.repeats + 1  # + the warm-up window
    common = list(args.set) + [f"schedule.steps_per_epoch={args.steps}", f"schedule.epochs={windows + 1}",
                               "val_interval=0", f"log_interval={args.steps}"]
    work = tempfile.TemporaryDirectory(prefix="poseforge-throughput-")
    sources: dict[str, list[str]] = {}
    for name in args.sources.split(","):
        if name == "renderer":
            sources["renderer (fresh synthetic)"] = ["data.train=synthetic", "data.synthetic.fresh=true",
                                                     "data.synthetic.train_images=100000"]
        elif name == "jpeg":
            folder = Path(args.coco) if args.coco else Path(work.name) / "coco"
            if not args.coco:
                start = time.perf_counter()
                _write_jpeg_dataset(folder, args.jpeg_images, seed=0)
                print(f"# wrote {args.jpeg_images} 640x480 JPEG scenes (1-4 people) in {time.perf_counter() - start:.0f} s")
            sources[f"COCO-format JPEGs ({folder.name})"] = [f"data.train={folder}"]
        else:
            raise SystemExit(f"--sources: unknown source {name!r} (renderer, jpeg)")

    base = load_config(args.config, common)
    print(f"# train_throughput, {datetime.datetime.now():%Y-%m-%d %H:%M}, torch {torch.__version__}, {cpu_name()}, "
          f"{load_average()}")
    print(f"# config {args.config}: {base.model.name}, batch {base.data.batch_size} x {base.optim.accumulate}, "
          f"{base.data.num_workers} workers, threads {base.threads or torch.get_num_threads()}, compile {base.compile}, "
          f"device {base.device}; medians of {args.repeats} windows of {args.steps} steps (first step untimed)")
    for source, source_sets in sources.items():
        trainers: dict[str, Trainer] = {}
        for name, sets in variants.items():
            config = load_config(args.config, common + source_sets + sets)
            trainers[name] = Trainer(config, Path(work.name) / "runs" / f"{len(trainers)}-{source[:8]}", progress=False)
        for trainer in trainers.values():
            trainer.model.train()  # (as fit() starts)
        results: dict[str, list[dict[str, float]]] = {name: [] for name in trainers}
        for round_ in range(windows):
            for name, trainer in trainers.items():
                result = _window(trainer, args.profile)
                if round_ > 0:  # round 0 warms up (compilation, caches)
                    results[name].append(result)
        print(f"\n## {source}")
        print(f"{'variant':<28} {'train img/s':>11} {'ratio':>6} {'data share':>10} {'compute img/s':>13} {'GPU busy':>8}")
        reference = statistics.median(r["img_s"] for r in results["as configured"])
        for name, rs in results.items():
            img_s = statistics.median(r["img_s"] for r in rs)
            share = statistics.median(r["data_share"] for r in rs)
            compute = statistics.median(r["compute_img_s"] for r in rs)
            busy = statistics.median(r["gpu_busy"] for r in rs)
            print(f"{name:<28} {img_s:>11.1f} {img_s / reference:>5.2f}x {share:>10.1%} {compute:>13.1f} "
                  f"{'-' if busy != busy else f'{busy:.1%}':>8}")
        del trainers
    if args.adamw_models:
        adamw_update_rates(args.adamw_models.split(","), max(args.repeats, 5), resolve_device(base.device))
    print(f"# {load_average()} at the end")
    work.cleanup()


if __name__ == "__main__":
    main()
