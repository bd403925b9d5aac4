"""Does data loading keep up with training? Loader images/s next to model training images/s, same run.

For a training config (default: the ``synth-cpu`` preset) this measures, on this machine:

* **loader**: top-down training batches per second out of the DataLoader (decode or render, crop,
  augment, collate; ``--workers`` processes), without a model;
* **model**: optimizer steps per second of the config's model on batches of the same shape (targets
  encoded by the codec, forward, loss, backward, AdamW step);

and prints both in images/s with their ratio (loader / model: >= 1 means the loader keeps up when it
has the cores to itself; on a machine where the workers share the cores with training, the training
process and the workers split them). Each figure is the median of ``--repeats`` timed windows.

Sources: ``--data synthetic`` renders people on the fly (the config's default); ``--data DIR`` reads
a COCO-format folder, e.g. one written by ``poseforge synth`` (``--prerender N`` writes one into a
temporary folder first, to compare rendering with decoding JPEG files).

    PYTHONPATH=. python benchmarks/loader.py [--config synth-cpu] [--workers 1] [--batches 8] [--repeats 5]
    PYTHONPATH=. python benchmarks/loader.py --prerender 512
"""
from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from poseforge.models import create_model
from poseforge.train import load_config
from poseforge.train.data import ResumableBatchSampler, TrainSamples, build_train_source, make_loader
from poseforge.data.transforms import TopDownTransform

from _common import training_step  # benchmarks/_common.py (the script's folder is on sys.path)


def loader_rate(config, workers: int, batches: int, repeats: int) -> float:
    """Median images/s of the DataLoader over ``repeats`` windows of ``batches`` batches (after warm-up)."""
    data = config.data
    batch = data.batch_size
    total = batch * batches * (repeats + 1) * 2
    estimator = create_model(config.model.name, **config.model.overrides)  # the source reads its keypoint set
    source = build_train_source(data, estimator, total_images=total)
    transform = TopDownTransform(tuple(config.model.overrides.get("input_size", (192, 256))), source.keypoint_set,
                                 use_udp=True, augment=data.augment)
    fresh = data.train == "synthetic" and data.synthetic.fresh
    sampler = ResumableBatchSampler(len(source), batch, seed=0, fresh=fresh,
                                    batches_per_epoch=batches * (repeats + 1) * 2 if fresh else None)
    loader = make_loader(TrainSamples(source, [transform], 0), sampler, workers, pin_memory=False)
    it = iter(loader)
    for _ in range(max(workers, 1) * 2):  # warm-up: workers start and fill their queues
        next(it)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(batches):
            next(it)
        rates.append(batches * batch / (time.perf_counter() - start))
    del it
    return statistics.median(rates)


def model_rate(config, batches: int, repeats: int) -> float:
    """Median training images/s of the config's model on random batches of the loader's shape."""
    step, _ = training_step(config)
    b = config.data.batch_size
    for _ in range(2):
        step()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(batches):
            step()
        rates.append(batches * b / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="synth-cpu", help="preset or YAML file (default: synth-cpu)")
    parser.add_argument("--data", default=None, help="'synthetic' or a COCO folder (default: the config's)")
    parser.add_argument("--prerender", type=int, default=0, metavar="N",
                        help="also write N synthetic images with `poseforge synth` and time loading them from disk")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: the config's)")
    parser.add_argument("--batches", type=int, default=8, help="batches per timed window")
    parser.add_argument("--repeats", type=int, default=5, help="timed windows (the median is reported)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads for the model (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = [f"data.train={args.data}"] if args.data else []
    if args.workers is not None:
        overrides.append(f"data.num_workers={args.workers}")
    config = load_config(args.config, overrides)
    workers = config.data.num_workers
    print(f"# loader benchmark, {datetime.date.today()}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} torch threads, torch {torch.__version__}")
    print(f"# config {config.name}: {config.model.name} {config.model.overrides}, batch {config.data.batch_size}, "
          f"{workers} workers, medians of {args.repeats} x {args.batches} batches")
    sources = [(config.data.train, config)]
    tmp = None
    if args.prerender:
        tmp = tempfile.TemporaryDirectory(prefix="poseforge-loader-")
        s = config.data.synthetic
        folder = Path(tmp.name) / "synth"
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "poseforge.cli", "synth", "--out", str(folder), "--num-images",
                        str(args.prerender), "--seed", str(s.seed), "--size", f"{s.image_size[0]}x{s.image_size[1]}",
                        "--people", f"{s.people[0]}-{s.people[1]}", "--keypoints", "coco17"], check=True,
                       stdout=subprocess.DEVNULL)
        print(f"# pre-rendered {args.prerender} images with `poseforge synth` in {time.perf_counter() - start:.1f} s")
        sources.append((f"{folder} (JPEG files)", load_config(args.config, overrides + [f"data.train={folder}"])))
    train = model_rate(config, args.batches, args.repeats)
    print(f"{'source':<44} {'loader img/s':>13} {'model img/s':>12} {'loader/model':>13}")
    for name, cfg in sources:
        loaded = loader_rate(cfg, workers, args.batches, args.repeats)
        print(f"{name:<44} {loaded:>13.1f} {train:>12.1f} {loaded / train:>13.2f}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
