"""LitePose-Auto-XS/S/M/L against HigherHRNet-W32 at the same input: MACs, parameters, CPU latency.

For each LitePose size (its zoo input and CrowdPose keypoints) and HigherHRNet-W32 built at that same input
and keypoint set:

* MACs two ways (:func:`poseforge.models.complexity.count_macs`): the true MACs of PyTorch's FLOP counter,
  and the papers' convention (ptflops of 2022 for LitePose, HRNet's model summary for HigherHRNet; both
  charge a stride-2 deconvolution 4x), printed beside the published figure where there is one;
* parameters;
* CPU latency of one image (batch 1) with 1 and 2 intra-op threads: the median of ``--repeats`` forwards
  in eval mode (no BatchNorm folding for either model), LitePose and its HigherHRNet interleaved repeat by
  repeat so that a noisy neighbour slows both alike; random weights (latency does not depend on them).

Ratios are HigherHRNet / LitePose (how many times fewer MACs, how many times lower latency).

    PYTHONPATH=. python benchmarks/litepose_complexity.py [--repeats 7] [--sizes xs,s,m,l] [--threads 1,2]
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import datetime
import statistics

import torch

from poseforge.models import build_model, model_config
from poseforge.models.complexity import count_macs, count_parameters
from poseforge.models.loading import skip_meta_init
from poseforge.models.zoo import LITEPOSE_ARCHS, PUBLISHED_GMACS

from _common import cpu_name, load_average, timed  # benchmarks/_common.py (the script's folder is on sys.path)


def counts(name: str, **overrides: object) -> tuple[int, int, int]:
    """(true MACs, MACs in the paper's convention, parameters) of a zoo model, built on the meta device."""
    with torch.device("meta"), skip_meta_init():
        model = build_model(model_config(name, **overrides))
    convention = "hrnet" if name.startswith("higherhrnet") else "ptflops"
    size = model.input_size
    return count_macs(model, size), count_macs(model, size, convention=convention), count_parameters(model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--sizes", default=",".join(LITEPOSE_ARCHS))
    parser.add_argument("--threads", default="1,2")
    args = parser.parse_args()
    sizes = [s for s in args.sizes.split(",") if s]
    threads = [int(t) for t in args.threads.split(",") if t]

    print(f"# LitePose vs HigherHRNet-W32 - {datetime.datetime.now():%Y-%m-%d %H:%M}, {cpu_name()}, "
          f"torch {torch.__version__}, {load_average()} at start")
    rows = []
    for size in sizes:
        name = f"litepose-{size}"
        lite_config = model_config(name)
        ref_overrides = {"input_size": lite_config.input_size, "keypoint_set": lite_config.keypoint_set}
        rows.append((name, lite_config, counts(name), counts("higherhrnet-w32", **ref_overrides), ref_overrides))
    ref512 = counts("higherhrnet-w32")  # the published setting: COCO, 512x512

    print("\n## MACs and parameters (G = 1e9 MACs; ratio = HigherHRNet-W32 / LitePose at the same input)\n")
    print("| model | input | MACs (true) | MACs (paper's counter) | published | params | "
          "HigherHRNet-W32 MACs (true / paper's) | params | MACs ratio (true / paper's) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, config, (lt, lp, lpar), (rt, rp, rpar), _ in rows:
        pub = PUBLISHED_GMACS.get(name, (None, ""))[0]
        w, h = config.input_size
        print(f"| {name} | {w}x{h} | {lt / 1e9:.2f}G | {lp / 1e9:.2f}G | {pub}G | {lpar / 1e6:.2f}M | "
              f"{rt / 1e9:.1f}G / {rp / 1e9:.1f}G | {rpar / 1e6:.1f}M | {rt / lt:.1f}x / {rp / lp:.1f}x |")
    print(f"| higherhrnet-w32 (COCO) | 512x512 | {ref512[0] / 1e9:.1f}G | {ref512[1] / 1e9:.1f}G | "
          f"{PUBLISHED_GMACS['higherhrnet-w32'][0]}G | {ref512[2] / 1e6:.1f}M | | | |")

    print(f"\n## CPU latency, batch 1, median of {args.repeats} (interleaved; eval mode, no BN folding)\n")
    header = " | ".join(f"LitePose {t}T | HigherHRNet {t}T | speed-up {t}T" for t in threads)
    print(f"| model | input | {header} |")
    print("|---|---|" + "---|" * (3 * len(threads)))
    torch.manual_seed(0)
    results: dict[str, dict[int, tuple[float, float]]] = {}
    for name, config, _, _, ref_overrides in rows:
        lite = build_model(config).eval()
        ref = build_model(model_config("higherhrnet-w32", **ref_overrides)).eval()
        w, h = config.input_size
        x = torch.randn(1, 3, h, w)
        results[name] = {}
        for t in threads:
            torch.set_num_threads(t)
            runners = {"lite": lambda m=lite: m(x), "ref": lambda m=ref: m(x)}  # noqa: B023 (used in this loop)
            times: dict[str, list[float]] = {k: [] for k in runners}
            with torch.inference_mode():
                for fn in runners.values():
                    for _ in range(args.warmup):
                        fn()
                for _ in range(args.repeats):
                    for k, fn in runners.items():
                        times[k].append(timed(fn))
            results[name][t] = (statistics.median(times["lite"]), statistics.median(times["ref"]))
        cells = " | ".join(f"{lt * 1e3:.1f} ms | {rt * 1e3:.1f} ms | {rt / lt:.1f}x"
                           for lt, rt in (results[name][t] for t in threads))
        print(f"| {name} | {w}x{h} | {cells} |", flush=True)
    print(f"\n{load_average()} at end")


if __name__ == "__main__":
    main()
