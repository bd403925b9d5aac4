"""Child process of ``benchmarks/synth.py``: renders person crops on command, in this process or in
DataLoader worker processes, from the poseforge tree it is given (this checkout or an older revision).

    python benchmarks/_synth_driver.py TREE BATCH WORKERS

imports ``poseforge`` from ``TREE``, builds the benchmark's dataset (256x192 crops, one person, coco17,
every label), warms both paths up, prints ``ready`` and the imported package's path, then answers each
stdin line ``{"procs": 1 | 2, "start": i, "count": n}`` with one JSON line ``{"crops", "wall", "cpu"}``:

* ``procs`` 1: ``render_tensors`` in this process (one intra-op thread);
* ``procs`` 2: the same batches through a ``DataLoader`` with ``WORKERS`` persistent worker processes,
  every label delivered to this process (the training path's parallelism: the workers render, the
  batches come back through shared memory). ``cpu`` counts the workers' CPU time and this process's.

Crops ``start .. start + count - 1`` are rendered in batches of ``BATCH``; ``count`` should be a
multiple of ``BATCH * WORKERS`` so that no worker idles at the end.
"""
from __future__ import annotations

import json
import os
import sys
import time

TREE, BATCH, WORKERS = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
sys.path.insert(0, TREE)

import torch  # noqa: E402

import poseforge  # noqa: E402
from poseforge.data.synth import SyntheticPoseDataset  # noqa: E402

torch.set_num_threads(1)
DATASET = SyntheticPoseDataset(10 ** 7, seed=0, image_size=(192, 256), people=(1, 1), keypoint_set="coco17", dense=True)
LABELS = ("image", "parts", "depth", "normals", "instance", "keypoints", "visibility", "keypoints_cam", "bbox", "area",
          "present")


class CropBatches(torch.utils.data.Dataset):
    """Item ``start``: crops ``start .. start + BATCH - 1`` with every label, as a dict of tensors."""

    def __len__(self) -> int:
        return len(DATASET)

    def __getitem__(self, start: int) -> dict[str, torch.Tensor]:
        batch = DATASET.render_tensors(range(start, start + BATCH))
        return {name: getattr(batch, name) for name in LABELS}


class Starts(torch.utils.data.Sampler):
    """The batch starts of the current measurement (set before each pass over the loader)."""

    def __init__(self) -> None:
        self.starts: list[int] = []

    def __iter__(self):
        return iter(list(self.starts))

    def __len__(self) -> int:
        return len(self.starts)


def children_cpu() -> float:
    """CPU seconds (user + system) of this process's live child processes (Linux ``/proc``; 0 elsewhere)."""
    me, total = str(os.getpid()), 0
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if rest[1] == me:
            total += int(rest[11]) + int(rest[12])
    return total / tick


def in_process(start: int, count: int) -> tuple[float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    for s in range(start, start + count, BATCH):
        DATASET.render_tensors(range(s, s + BATCH))
    return time.perf_counter() - t0, time.process_time() - c0


def in_workers(loader: torch.utils.data.DataLoader, sampler: Starts, start: int, count: int) -> tuple[float, float]:
    sampler.starts = list(range(start, start + count, BATCH))
    c0 = children_cpu() + time.process_time()
    t0 = time.perf_counter()
    crops = sum(item["image"].shape[0] for item in loader)
    wall = time.perf_counter() - t0
    if crops != count:
        raise RuntimeError(f"expected {count} crops, got {crops}")
    return wall, children_cpu() + time.process_time() - c0


def main() -> None:
    sampler = Starts()
    loader = torch.utils.data.DataLoader(CropBatches(), batch_size=None, sampler=sampler, num_workers=WORKERS,
                                         persistent_workers=True, prefetch_factor=2)
    in_process(0, BATCH)  # warm-up: caches, first allocations
    in_workers(loader, sampler, 0, BATCH * WORKERS)  # starts the workers
    print("ready", poseforge.__file__, flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["procs"] == 1:
            wall, cpu = in_process(cmd["start"], cmd["count"])
        else:
            wall, cpu = in_workers(loader, sampler, cmd["start"], cmd["count"])
        print(json.dumps({"crops": cmd["count"], "wall": wall, "cpu": cpu}), flush=True)


if __name__ == "__main__":
    main()
