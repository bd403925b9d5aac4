"""Decode throughput of poseforge's batched DARK and UDP heatmap decoding against a straightforward
per-keypoint numpy implementation (a loop over people and keypoints, as mmpose 0.x decodes),
measured in the same run on the same heatmaps. Both must agree numerically, so the ratio compares
equal work.

    PYTHONPATH=. python benchmarks/codecs.py [--batch 64] [--rounds 9] [--device cpu]
"""
from __future__ import annotations

import argparse
import datetime
import statistics
import time
from typing import Callable

import cv2
import numpy as np
import torch

from poseforge.codecs import MSRAHeatmap, UDPHeatmap

from _common import cpu_name  # benchmarks/_common.py (the script's folder is on sys.path)

INPUT_SIZE = (192, 256)  # (w, h)
HEATMAP_SIZE = (48, 64)  # (W, H)
NUM_KEYPOINTS = 17
SIGMA = 2.0
KERNEL = 11  # blur kernel for sigma 2


# ----------------------------------------------------------------------------- reference (numpy)
def _blur_rescaled(heatmap: np.ndarray, kernel: int) -> np.ndarray:
    """One map: zero-padded cv2 Gaussian blur rescaled to the original maximum (mmpose's rule)."""
    border = (kernel - 1) // 2
    H, W = heatmap.shape
    padded = np.zeros((H + 2 * border, W + 2 * border), dtype=np.float32)
    padded[border:-border, border:-border] = heatmap
    blurred = cv2.GaussianBlur(padded, (kernel, kernel), 0)[border:-border, border:-border]
    return blurred * (heatmap.max() / blurred.max())


def reference_dark(heatmaps: np.ndarray, kernel: int, scale: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    B, K, H, W = heatmaps.shape
    keypoints = np.full((B, K, 2), -1.0, dtype=np.float32)
    scores = np.zeros((B, K), dtype=np.float32)
    for b in range(B):
        for k in range(K):
            hm = heatmaps[b, k]
            y, x = divmod(int(np.argmax(hm)), W)
            scores[b, k] = hm[y, x]
            if hm[y, x] <= 0:
                continue
            keypoints[b, k] = (x, y)
            logmap = np.log(np.maximum(_blur_rescaled(hm, kernel), 1e-10))
            if 1 < x < W - 2 and 1 < y < H - 2:
                dx = 0.5 * (logmap[y, x + 1] - logmap[y, x - 1])
                dy = 0.5 * (logmap[y + 1, x] - logmap[y - 1, x])
                dxx = 0.25 * (logmap[y, x + 2] - 2 * logmap[y, x] + logmap[y, x - 2])
                dxy = 0.25 * (logmap[y + 1, x + 1] - logmap[y - 1, x + 1] - logmap[y + 1, x - 1] + logmap[y - 1, x - 1])
                dyy = 0.25 * (logmap[y + 2, x] - 2 * logmap[y, x] + logmap[y - 2, x])
                hessian = np.array([[dxx, dxy], [dxy, dyy]])
                if dxx * dyy - dxy ** 2 != 0:
                    keypoints[b, k] -= np.linalg.inv(hessian) @ np.array([dx, dy])
    return keypoints * np.asarray(scale, dtype=np.float32), scores


def reference_udp(heatmaps: np.ndarray, kernel: int, scale: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    B, K, H, W = heatmaps.shape
    eps = np.finfo(np.float32).eps
    keypoints = np.full((B, K, 2), -1.0, dtype=np.float32)
    scores = np.zeros((B, K), dtype=np.float32)
    for b in range(B):
        for k in range(K):
            hm = heatmaps[b, k]
            y, x = divmod(int(np.argmax(hm)), W)
            scores[b, k] = hm[y, x]
            if hm[y, x] <= 0:
                continue
            logmap = np.pad(np.log(np.clip(_blur_rescaled(hm, kernel), 1e-3, 50.0)), 1, mode="edge")
            py, px = y + 1, x + 1
            i, ix1, ix1_ = logmap[py, px], logmap[py, px + 1], logmap[py, px - 1]
            iy1, iy1_ = logmap[py + 1, px], logmap[py - 1, px]
            dx, dy = 0.5 * (ix1 - ix1_), 0.5 * (iy1 - iy1_)
            dxx, dyy = ix1 - 2 * i + ix1_, iy1 - 2 * i + iy1_
            dxy = 0.5 * (logmap[py + 1, px + 1] - ix1 - iy1 + 2 * i - ix1_ - iy1_ + logmap[py - 1, px - 1])
            hessian = np.array([[dxx, dxy], [dxy, dyy]]) + eps * np.eye(2)
            keypoints[b, k] = np.array([x, y]) - np.linalg.inv(hessian) @ np.array([dx, dy])
    return keypoints * np.asarray(scale, dtype=np.float32), scores


# ----------------------------------------------------------------------------- harness
def interleaved_medians(reference: Callable[[], object], batched: Callable[[], object], rounds: int,
                        batched_per_round: int) -> tuple[float, float]:
    """Median seconds per call of both, measured in alternating rounds so that load from other
    processes on a shared machine hits both sides alike."""
    reference()
    for _ in range(3):
        batched()
    ref_times, ours_times = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        reference()
        ref_times.append(time.perf_counter() - start)
        for _ in range(batched_per_round):
            start = time.perf_counter()
            batched()
            ours_times.append(time.perf_counter() - start)
    return statistics.median(ref_times), statistics.median(ours_times)


def network_like_heatmaps(codec, batch: int, device: torch.device, seed: int) -> torch.Tensor:
    """Targets at random sub-pixel keypoints plus Gaussian noise (std 0.02), like a trained head's output."""
    gen = torch.Generator().manual_seed(seed)
    w, h = INPUT_SIZE
    margin = 8.0
    keypoints = torch.rand(batch, NUM_KEYPOINTS, 2, generator=gen) * torch.tensor([w - 2 * margin, h - 2 * margin]) + margin
    maps = codec.encode(keypoints, torch.ones(batch, NUM_KEYPOINTS))["heatmaps"]
    maps = maps + 0.02 * torch.randn(maps.shape, generator=gen)
    return maps.to(device)



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=9, help="timed rounds: one reference call each")
    parser.add_argument("--batched-per-round", type=int, default=5, help="timed batched calls per round")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    shape = (args.batch, NUM_KEYPOINTS, HEATMAP_SIZE[1], HEATMAP_SIZE[0])
    print(f"poseforge codec decode benchmark: heatmaps {shape}, sigma {SIGMA}, blur kernel {KERNEL}")
    print(f"machine: {cpu_name()}, {torch.get_num_threads()} torch threads, device {device}; "
          f"torch {torch.__version__}, numpy {np.__version__}, opencv {cv2.__version__}; "
          f"{datetime.datetime.now().isoformat(timespec='seconds')}")
    n_keypoints = args.batch * NUM_KEYPOINTS
    codecs = {
        "DARK": (MSRAHeatmap(INPUT_SIZE, HEATMAP_SIZE, SIGMA, unbiased=True, blur_kernel_size=KERNEL), reference_dark),
        "UDP": (UDPHeatmap(INPUT_SIZE, HEATMAP_SIZE, SIGMA, blur_kernel_size=KERNEL), reference_udp),
    }
    for seed, (label, (codec, reference)) in enumerate(codecs.items()):
        maps = network_like_heatmaps(codec, args.batch, device, seed)
        maps_np = maps.cpu().numpy()

        ours_kp, ours_scores = codec.decode(maps)
        ref_kp, ref_scores = reference(maps_np, KERNEL, codec.scale)
        kp_diff = float(np.abs(ours_kp.cpu().numpy() - ref_kp).max())
        score_diff = float(np.abs(ours_scores.cpu().numpy() - ref_scores).max())
        assert kp_diff < 1e-3 and score_diff < 1e-6, f"{label}: batched and reference decode disagree ({kp_diff} px, {score_diff})"

        def batched() -> None:
            codec.decode(maps)
            sync()

        t_ref, t_ours = interleaved_medians(lambda: reference(maps_np, KERNEL, codec.scale), batched,
                                            args.rounds, args.batched_per_round)
        print(f"{label:4s} reference numpy per-keypoint: {t_ref * 1e3:8.2f} ms/batch {n_keypoints / t_ref:12,.0f} keypoints/s")
        print(f"{label:4s} poseforge batched torch:      {t_ours * 1e3:8.2f} ms/batch {n_keypoints / t_ours:12,.0f} keypoints/s"
              f"  ratio {t_ref / t_ours:6.1f}x  (max |diff| {kp_diff:.1e} px, scores {score_diff:.1e})")


if __name__ == "__main__":
    main()
