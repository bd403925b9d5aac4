"""Soak: the Predictor over many synthetic video frames, with tracking, and its memory staying flat.

Renders a short clip of two people crossing (``crossing_clip``) and feeds its frames round and round to
``Predictor.predict`` (built-in detector + pose model, no flip test) with a ``PoseTracker`` updated every
frame, as ``predict_video`` does. Prints the resident set size (RSS, /proc/self/statm) every
``--every`` frames after a warm-up, the growth from the first sample to the last and the least-squares
slope in MB per 1,000 frames; a leak of one small tensor per frame would show as a steady slope.

    python benchmarks/predictor_soak.py --frames 10000
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from poseforge.inference.predictor import Predictor
from poseforge.inference.synthetic_video import crossing_clip


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--every", type=int, default=500)
    parser.add_argument("--size", default="320x240", help="frame size WxH (default 320x240)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    w, h = (int(v) for v in args.size.split("x"))
    clip = crossing_clip(num_frames=60, size=(w, h))
    predictor = Predictor("bundled", detector="bundled", device="cpu", flip_test=False, tracker=True)
    tracker = predictor.make_tracker()
    samples: list[tuple[int, float]] = []
    people = 0
    start = time.perf_counter()
    for i in range(args.warmup + args.frames):
        result = predictor.predict(clip.frames[i % len(clip.frames)], keep_image=False)
        tracker.update_result(result)
        people += len(result)
        done = i + 1 - args.warmup
        if done >= 0 and done % args.every == 0:
            samples.append((done, rss_mb()))
            print(f"frame {done:6d}  RSS {samples[-1][1]:8.1f} MB", flush=True)
    seconds = time.perf_counter() - start
    frames = np.array([s[0] for s in samples], dtype=np.float64)
    rss = np.array([s[1] for s in samples])
    slope = np.polyfit(frames / 1000.0, rss, 1)[0] if len(samples) > 1 else 0.0
    print(f"{args.frames} frames ({args.size}, {people / (args.warmup + args.frames):.2f} people / frame) in {seconds:.0f} s "
          f"({(args.warmup + args.frames) / seconds:.1f} FPS); RSS {rss[0]:.1f} -> {rss[-1]:.1f} MB "
          f"(growth {rss[-1] - rss[0]:+.1f} MB, max {rss.max():.1f}); slope {slope:+.3f} MB per 1,000 frames")


if __name__ == "__main__":
    main()
