"""CPU latency of bottom-up models with their BatchNorms folded into the convolutions before them
(``prepare_for_inference(fuse_batchnorm=True)``, what ``Predictor`` and the ONNX export run) against the same model
unfolded, in the same run.

Each model (random weights with informative BatchNorm statistics) runs a batch of one at its zoo input; the
unfolded and the folded copy alternate repeat by repeat (a noisy neighbour slows both alike); medians. The outputs
are checked equal first. Both run NCHW (``channels_last=False``), so the fold is the only difference.

    PYTHONPATH=. python benchmarks/batchnorm_folding.py [--models litepose-xs] [--repeats 15] [--threads 1]
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import copy
import datetime
import statistics

import torch
from torch import nn

from poseforge.models import create_model

from _common import cpu_name, load_average, timed  # benchmarks/_common.py (the script's folder is on sys.path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="litepose-xs", help="comma-separated zoo names")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{datetime.date.today()}, {cpu_name()}, torch {torch.__version__}, {args.threads} thread(s), "
          f"{load_average()}")
    rows = []
    for name in args.models.split(","):
        torch.manual_seed(0)
        model = create_model(name).eval()
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():  # statistics away from their init: a fold that dropped a term would show
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                    m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
        folded = copy.deepcopy(model).prepare_for_inference(channels_last=False, fuse_batchnorm=True)
        left = sum(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
        total = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
        w, h = model.input_size
        x = torch.randn(1, 3, h, w, generator=g)
        with torch.inference_mode():
            ref, out = model(x), folded(x)
            diff = max(float((out.tensors()[k] - v).abs().max() / v.abs().max()) for k, v in ref.tensors().items())
            assert diff < 1e-4, (name, diff)
            ways = {"unfolded": lambda m=model, x=x: m(x), "folded": lambda m=folded, x=x: m(x)}
            for fn in ways.values():  # warm-up
                for _ in range(3):
                    fn()
            times: dict[str, list[float]] = {way: [] for way in ways}
            for _ in range(args.repeats):
                for way, fn in ways.items():
                    times[way].append(timed(fn))
        ms = {way: 1e3 * statistics.median(t) for way, t in times.items()}
        rows.append(f"| {name} | {w}x{h} | {total - left} of {total} | {ms['unfolded']:.1f} | {ms['folded']:.1f} | "
                    f"{ms['unfolded'] / ms['folded']:.2f}x | {diff:.1e} |")
    print(f"after: {load_average()}; median of {args.repeats}, batch 1, NCHW\n")
    print("| model | input | BatchNorms folded | unfolded ms | folded ms | speed-up | max rel. diff |")
    print("|---|---|---:|---:|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
