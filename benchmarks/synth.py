"""Throughput of the synthetic renderer (images/s with every label) against references measured in
the same run on the same scenes.

Headline (always, ``--quick`` runs only this): person-centric 256x192 crops (one person, coco17) with
all labels -- image, keypoints, visibility by the depth test, boxes, masks, body parts, depth, normals
and instance ids -- from this tree and from a reference revision (``--reference``, default 042e68e, the
renderer before the issue-32 speed-up; ``git archive`` into a temporary folder), each in its own child
process (``benchmarks/_synth_driver.py``), measured interleaved (tree, reference, tree, ... so that a
noisy neighbour slows both alike), medians of ``--repeats``:

* 1 process: ``render_tensors`` in one process on one intra-op thread;
* 2 processes: the same batches through a DataLoader with 2 persistent worker processes, every label
  delivered to the main process (shared memory), which is how training uses both cores.

Each line gives crops/s (wall clock) and crops per CPU-second (CPU time of every process involved: what
the renderer costs, whatever else the machine runs); the ratios are this tree against the reference and
2 processes against 1.

The full run (no ``--quick``) adds, in this process:

* 640x480 scenes with 1-4 people, one process;
* naive: the same crops ray-cast without tiles or culling -- every pixel against every primitive of
  its image with the same exact intersection routine (``cast_rays``), z-buffer only. The ratio is
  what bbox binning, tile culling and the per-tile affine ray forms buy;
* decode: reading the same crops back from JPEG bytes with OpenCV (what loading a COCO dataset of
  these images costs per image), so the ratio says how on-the-fly rendering compares with file I/O;
* CUDA (when a GPU is present): the crops at batch 256.

The machine load (1-minute load average) is printed before and after, because the renderer shares the
CPU with whatever else runs.

    PYTHONPATH=. python benchmarks/synth.py --quick          # the headline only (~2 minutes)
    PYTHONPATH=. python benchmarks/synth.py [--repeats 5] [--crops 256] [--batch 32] [--reference REV]
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

import cv2
import numpy as np
import torch

from poseforge.data.synth import SyntheticPoseDataset
from poseforge.data.synth.dataset import single_threaded
from poseforge.data.synth.render import cast_rays
from poseforge.data.synth.scene import build_scenes
from poseforge.data.synth.shapes import to_camera

from _common import cpu_name, load_average  # benchmarks/_common.py (the script's folder is on sys.path)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
REFERENCE = "042e68e"  # the renderer before the issue-32 speed-up


class Driver:
    """A ``_synth_driver.py`` child rendering from ``tree`` (see its docstring for the protocol)."""

    def __init__(self, name: str, tree: Path, batch: int, workers: int, pycache: Path) -> None:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPATH"] = str(tree)
        env["PYTHONPYCACHEPREFIX"] = str(pycache)  # the reference tree's bytecode goes to a temporary folder
        self.name = name
        self.proc = subprocess.Popen([sys.executable, str(HERE / "_synth_driver.py"), str(tree), str(batch), str(workers)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=tree)
        ready = self.proc.stdout.readline().rstrip("\n").split(" ", 1)
        if not ready or ready[0] != "ready":
            raise SystemExit(f"{name}: the renderer child did not start (see the error above)")
        if not Path(ready[1]).resolve().is_relative_to(tree.resolve()):
            raise SystemExit(f"{name}: the child imported poseforge from {ready[1]}, not from {tree}")

    def measure(self, procs: int, start: int, count: int) -> dict[str, float]:
        self.proc.stdin.write(json.dumps({"procs": procs, "start": start, "count": count}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"{self.name}: the renderer child died (see the error above)")
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def reference_tree(rev: str, into: Path) -> tuple[str, Path]:
    """``rev``'s ``poseforge`` package (``git archive``) under ``into``; returns its short name and root."""
    short = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", rev], check=True, capture_output=True,
                           text=True).stdout.strip()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "poseforge"], check=True, capture_output=True).stdout
    into.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return short, into


def interleaved(trees: dict[str, Path], crops: int, batch: int, workers: int, repeats: int,
                pycache: Path) -> dict[str, dict[int, dict[str, float]]]:
    """Median crops/s and crops per CPU-second of every tree with 1 process and with ``workers`` worker
    processes; the trees and process counts take turns within each repeat, on the same crops."""
    drivers = {name: Driver(name, tree, batch, workers, pycache) for name, tree in trees.items()}
    runs: dict[str, dict[int, list[dict[str, float]]]] = {name: {1: [], workers: []} for name in trees}
    try:
        for r in range(repeats):
            order = list(drivers) if r % 2 == 0 else list(drivers)[::-1]
            for name in order:
                for procs in (1, workers) if r % 2 == 0 else (workers, 1):
                    runs[name][procs].append(drivers[name].measure(procs, 1000 + r * crops, crops))
    finally:
        for d in drivers.values():
            d.close()
    return {name: {procs: {"rate": statistics.median(m["crops"] / m["wall"] for m in ms),
                           "per_cpu_s": statistics.median(m["crops"] / m["cpu"] for m in ms)}
                   for procs, ms in per.items()} for name, per in runs.items()}


def images_per_second(ds: SyntheticPoseDataset, start: int, images: int, batch: int, repeats: int) -> tuple[float, float]:
    """Median images/s of ``render_tensors`` over ``repeats`` runs of ``images`` fresh images each:
    per wall-clock second and per CPU-second of this process (what one free core delivers)."""
    ds.render_tensors(range(start - batch, start))  # warm-up (allocations, caches)
    rates, cpu_rates = [], []
    for r in range(repeats):
        first = start + r * images
        sync = torch.cuda.synchronize if ds.device.type == "cuda" else (lambda: None)
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        for s in range(first, first + images, batch):
            out = ds.render_tensors(range(s, min(s + batch, first + images)))
        sync()
        rates.append(images / (time.perf_counter() - t0))
        cpu_rates.append(images / (time.process_time() - c0))
        del out
    return statistics.median(rates), statistics.median(cpu_rates)


def naive_images_per_second(ds: SyntheticPoseDataset, start: int, images: int) -> float:
    """Brute-force z-buffer: every pixel ray against every primitive of its image (same math)."""
    W, H = ds.image_size
    u, v = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    uv1 = torch.tensor(np.stack([u.ravel(), v.ravel()], 1), dtype=torch.float32)
    with single_threaded(ds.device), torch.no_grad():
        t0 = time.perf_counter()
        for i in range(start, start + images):
            scene = build_scenes(ds.config, ds.seed, torch.tensor([i]), ds.device)
            inp = scene.inputs
            cam = to_camera(inp.prims, inp.cam_R, inp.cam_t, inp.intr)
            for s in range(0, H * W, 4096):  # bounded memory: 4096 rays x all primitives at a time
                uv = uv1[s:s + 4096]
                cast_rays(inp.prims, cam, torch.zeros(len(uv), dtype=torch.int64), uv, 1)
        return images / (time.perf_counter() - t0)


def decode_images_per_second(ds: SyntheticPoseDataset, start: int, images: int, repeats: int) -> float:
    blobs = [cv2.imencode(".jpg", cv2.cvtColor(r.image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
             for r in ds.render_batch(range(start, start + images))]
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for blob in blobs:
            cv2.cvtColor(cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        rates.append(len(blobs) / (time.perf_counter() - t0))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="only the interleaved crops comparison, 3 repeats")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved repeats (default: 5; 3 with --quick)")
    parser.add_argument("--crops", type=int, default=None, help="crops per measurement (default: 256; 128 with --quick)")
    parser.add_argument("--batch", type=int, default=32, help="crops per render call / DataLoader item")
    parser.add_argument("--workers", type=int, default=2, help="worker processes of the parallel measurement")
    parser.add_argument("--reference", default=REFERENCE, metavar="REV",
                        help=f"git revision to compare with (default: {REFERENCE}, before the speed-up; 'none' to skip)")
    parser.add_argument("--naive-images", type=int, default=2)
    parser.add_argument("--json", default=None, help="also write the headline figures to this JSON file")
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 5)
    crops = args.crops or (128 if args.quick else 256)
    crops = max(args.batch * args.workers, crops // (args.batch * args.workers) * args.batch * args.workers)
    cv2.setNumThreads(1)
    print(f"poseforge synthetic renderer benchmark ({datetime.date.today()})")
    print(f"machine: {cpu_name()}, {os.cpu_count()} CPUs, torch {torch.__version__}; {load_average()} at start")

    with tempfile.TemporaryDirectory(prefix="synth_bench_") as tmp:
        trees = {"this tree": ROOT}
        if args.reference.lower() != "none":
            name, tree = reference_tree(args.reference, Path(tmp) / "reference")
            trees[name] = tree
        pycache = Path(tmp) / "pycache"
        res = interleaved(trees, crops, args.batch, args.workers, repeats, pycache)
    w = args.workers
    print(f"crops 256x192, 1 person, coco17, every label, batches of {args.batch}: medians of {repeats} interleaved "
          f"repeats of {crops} crops")
    print(f"  {'':12s} {'1 process (1 thread)':>34s}   {f'{w} processes (DataLoader workers)':>48s}")
    for name, r in res.items():
        one, many = r[1], r[w]
        print(f"  {name:12s} {one['rate']:8.1f} crops/s ({one['per_cpu_s']:5.1f} per CPU-second)   "
              f"{many['rate']:8.1f} crops/s ({many['per_cpu_s']:5.1f} per CPU-second, {many['rate'] / one['rate']:.2f}x 1 process)")
    mine = res["this tree"]
    if len(res) > 1:
        ref_name = next(n for n in res if n != "this tree")
        ref = res[ref_name]
        print(f"  speed-up against {ref_name}: 1 process {mine[1]['rate'] / ref[1]['rate']:.2f}x "
              f"({mine[1]['per_cpu_s'] / ref[1]['per_cpu_s']:.2f}x per CPU-second), {w} processes "
              f"{mine[w]['rate'] / ref[w]['rate']:.2f}x ({mine[w]['per_cpu_s'] / ref[w]['per_cpu_s']:.2f}x per CPU-second)")
    print(f"==> {w} processes, this tree: {mine[w]['rate']:.1f} crops/s with every label (goal: >= 100 on an idle "
          f"2-core machine); {load_average()}")
    if args.json:
        Path(args.json).write_text(json.dumps({"load_average": os.getloadavg(), "crops": crops, "batch": args.batch,
                                               "repeats": repeats, "results": res}, indent=1))
    if args.quick:
        return

    crop_rate = mine[1]["rate"]
    crops_ds = SyntheticPoseDataset(10 ** 7, seed=0, image_size=(192, 256), people=(1, 1), keypoint_set="coco17", dense=True)
    scenes = SyntheticPoseDataset(10 ** 7, seed=0, image_size=(640, 480), people=(1, 4), keypoint_set="coco17", dense=True)
    start = 1000
    scene_rate, scene_cpu = images_per_second(scenes, start, max(crops // 8, 8), 4, repeats)
    print(f"scenes 640x480, 1-4 people, all labels, 1 process (1 thread):     {scene_rate:8.1f} images/s "
          f"({scene_cpu:.1f} per CPU-second)")
    naive = naive_images_per_second(crops_ds, start + 2 * 10 ** 5, args.naive_images)
    print(f"reference naive per-pixel ray casting (z-buffer only), crops:   {naive:8.2f} images/s "
          f"-> the renderer with all labels is {crop_rate / naive:.0f}x faster")
    decode = decode_images_per_second(crops_ds, start + 3 * 10 ** 5, crops, repeats)
    print(f"reference JPEG decode (OpenCV, 1 thread) of the same crops:      {decode:8.1f} images/s "
          f"-> rendering with labels costs {decode / crop_rate:.1f}x a decode")
    if torch.cuda.is_available():
        gpu = SyntheticPoseDataset(10 ** 7, seed=0, image_size=(192, 256), people=(1, 1), dense=True, device="cuda")
        g_rate, _ = images_per_second(gpu, start, 4096, 256, repeats)
        print(f"crops 256x192 on {torch.cuda.get_device_name()}, batch 256: {g_rate:8.1f} images/s "
              f"({g_rate / crop_rate:.0f}x one CPU process)")
    else:
        print("CUDA: not available on this machine (the same code runs there; see tests/test_synth.py)")
    print(f"{load_average()} at end")


if __name__ == "__main__":
    main()
