"""Throughput of the synthetic renderer (images/s with every label) against references measured in
the same run on the same scenes.

Cases:
* person-centric 256x192 crops (one person, coco17) with all labels: image, keypoints, visibility by
  the depth test, boxes, masks, body parts, depth, normals and instance ids
  (``SyntheticPoseDataset.render_tensors``), in one process (one intra-op thread) and in N
  DataLoader worker processes;
* 640x480 scenes with 1-4 people, one process;
* CUDA (when a GPU is present): the crops at batch 256.

References:
* naive: the same crops ray-cast without tiles or culling -- every pixel against every primitive of
  its image with the same exact intersection routine (``cast_rays``), z-buffer only. The ratio is
  what bbox binning, tile culling and the per-tile affine ray forms buy;
* decode: reading the same crops back from JPEG bytes with OpenCV (what loading a COCO dataset of
  these images costs per image), so the ratio says how on-the-fly rendering compares with file I/O.

Throughputs are medians over repeats; the machine load (1-minute load average) is printed before and
after, because the renderer shares the CPU with whatever else runs.

    PYTHONPATH=. python benchmarks/synth.py [--images 128] [--batch 16] [--repeats 5] [--workers 2]
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import time

import cv2
import numpy as np
import torch

from poseforge.data.synth import SyntheticPoseDataset
from poseforge.data.synth.dataset import single_threaded
from poseforge.data.synth.render import cast_rays
from poseforge.data.synth.scene import build_scenes
from poseforge.data.synth.shapes import to_camera

from _common import cpu_name, load_average  # benchmarks/_common.py (the script's folder is on sys.path)



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


class _Batches(torch.utils.data.Dataset):
    """Each item is a whole rendered batch (tensors), so DataLoader workers render in parallel."""

    def __init__(self, ds: SyntheticPoseDataset, batches: list[list[int]]) -> None:
        self.ds, self.batches = ds, batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int):
        b = self.ds.render_tensors(self.batches[i])
        return b.image, b.keypoints, b.visibility, b.parts, b.depth, b.normals, b.instance


def workers_images_per_second(ds: SyntheticPoseDataset, start: int, images: int, batch: int, workers: int,
                              repeats: int) -> float:
    """Median images/s through a DataLoader with ``workers`` processes (worker start-up excluded)."""
    rates = []
    for r in range(repeats):
        first = start + r * (images + workers * batch)
        batches = [list(range(s, s + batch)) for s in range(first, first + images + workers * batch, batch)]
        loader = torch.utils.data.DataLoader(_Batches(ds, batches), batch_size=None, num_workers=workers,
                                             prefetch_factor=2)
        it = iter(loader)
        for _ in range(workers):  # one batch per worker: the workers are up and warm
            next(it)
        t0 = time.perf_counter()
        n = 0
        for item in it:
            n += item[0].shape[0]
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates)


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
    parser.add_argument("--images", type=int, default=128, help="images per timed repeat")
    parser.add_argument("--batch", type=int, default=32, help="images per render call on the CPU")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (0: skip)")
    parser.add_argument("--naive-images", type=int, default=2)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    print(f"poseforge synthetic renderer benchmark ({datetime.date.today()})")
    print(f"machine: {cpu_name()}, {os.cpu_count()} CPUs, torch {torch.__version__}; {load_average()} at start")
    crops = SyntheticPoseDataset(10 ** 7, seed=0, image_size=(192, 256), people=(1, 1), keypoint_set="coco17", dense=True)
    scenes = SyntheticPoseDataset(10 ** 7, seed=0, image_size=(640, 480), people=(1, 4), keypoint_set="coco17", dense=True)
    start = 1000

    crop_rate, crop_cpu = images_per_second(crops, start, args.images, args.batch, args.repeats)
    print(f"crops 256x192, 1 person, all labels, 1 process (1 thread), batch {args.batch}: {crop_rate:8.1f} images/s "
          f"({crop_cpu:.1f} per CPU-second; median of {args.repeats} x {args.images})")
    if args.workers > 0:
        w_rate = workers_images_per_second(crops, start + 10 ** 5, args.images, args.batch, args.workers, args.repeats)
        print(f"crops 256x192, 1 person, all labels, {args.workers} worker processes:      {w_rate:8.1f} images/s "
              f"({w_rate / crop_rate:.2f}x one process)")
    scene_rate, scene_cpu = images_per_second(scenes, start, max(args.images // 4, 8), max(args.batch // 4, 2), args.repeats)
    print(f"scenes 640x480, 1-4 people, all labels, 1 process (1 thread):     {scene_rate:8.1f} images/s "
          f"({scene_cpu:.1f} per CPU-second)")
    naive = naive_images_per_second(crops, start + 2 * 10 ** 5, args.naive_images)
    print(f"reference naive per-pixel ray casting (z-buffer only), crops:   {naive:8.2f} images/s "
          f"-> the renderer with all labels is {crop_rate / naive:.0f}x faster")
    decode = decode_images_per_second(crops, start + 3 * 10 ** 5, args.images, args.repeats)
    print(f"reference JPEG decode (OpenCV, 1 thread) of the same crops:      {decode:8.1f} images/s "
          f"-> rendering with labels costs {decode / crop_rate:.1f}x a decode")
    if torch.cuda.is_available():
        gpu = SyntheticPoseDataset(10 ** 7, seed=0, image_size=(192, 256), people=(1, 1), dense=True, device="cuda")
        g_rate, _ = images_per_second(gpu, start, 4096, 256, args.repeats)
        print(f"crops 256x192 on {torch.cuda.get_device_name()}, batch 256: {g_rate:8.1f} images/s "
              f"({g_rate / crop_rate:.0f}x one CPU process)")
    else:
        print("CUDA: not available on this machine (the same code runs there; see tests/test_synth.py)")
    print(f"{load_average()} at end")


if __name__ == "__main__":
    main()
