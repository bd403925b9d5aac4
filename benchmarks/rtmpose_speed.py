"""CPU forward speed of RTMPose-t/s/m at 256x192 against the mmpose 1.3.2 reference, in the same run.

Three ways of running each model on the same random crops, interleaved repeat by repeat so that a
noisy neighbour slows every one alike (median images/s):

* ``mmpose``: mmpose's own ``TopdownPoseEstimator`` (``mode="tensor"``), run in the oracle venv of
  ``../shared/oracle`` as a persistent subprocess that times its forwards on request (left out,
  with a note, where that venv is absent);
* ``poseforge``: ``create_model("rtmpose-*")`` in eval mode, NCHW, as a user would call it;
* ``poseforge prepared``: what :class:`~poseforge.inference.Predictor` runs: BatchNorms folded into the
  convolutions and NHWC (channels-last) weights.

The bundled ViTPose (``vitpose-tiny.synth``) is timed the same way for the latency comparison with
``rtmpose-t-synth``. Outputs of the poseforge model and mmpose's with the same weights are checked
equal before timing.

    PYTHONPATH=. python benchmarks/rtmpose_speed.py [--repeats 9] [--threads 2] [--sizes t,s,m]
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import copy
import datetime
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from poseforge.models import create_model, load_model

from _common import cpu_name, load_average  # benchmarks/_common.py (the script's folder is on sys.path)

SHARED = Path(__file__).resolve().parents[2] / "shared"
CONFIGS = {"t": "body_2d_keypoint/rtmpose/coco/rtmpose-t_8xb256-420e_coco-256x192.py",
           "s": "body_2d_keypoint/rtmpose/coco/rtmpose-s_8xb256-420e_coco-256x192.py",
           "m": "body_2d_keypoint/rtmpose/coco/rtmpose-m_8xb256-420e_coco-256x192.py"}

# Runs in the oracle venv: builds the models, writes their weights, then answers "size batch" lines with
# the seconds of one forward.
ORACLE_SERVER = r'''
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
import mm_oracle_shim  # noqa: F401
import torch
import mmpose
from mmengine.config import Config
from mmpose.registry import MODELS
from mmpose.utils import register_all_modules
register_all_modules()
torch.set_num_threads(int(sys.argv[3]))
configs, out = json.loads(sys.argv[2]), sys.argv[4]
models = {}
root = os.path.join(os.path.dirname(mmpose.__file__), ".mim", "configs")
for size, rel in configs.items():
    cfg = Config.fromfile(os.path.join(root, rel))
    cfg.model.backbone.init_cfg = None
    torch.manual_seed(0)
    models[size] = MODELS.build(cfg.model).eval()
    torch.save(models[size].state_dict(), os.path.join(out, size + ".pth"))
print("ready", flush=True)
for line in sys.stdin:
    size, batch = line.split()
    x = torch.randn(int(batch), 3, 256, 192, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        start = time.perf_counter()
        y = models[size](x, None, mode="tensor")
        took = time.perf_counter() - start
    print(json.dumps({"seconds": took, "x0": float(y[0].flatten()[0])}), flush=True)
'''


class Oracle:
    """The mmpose models in their own process: ``forward_seconds(size, batch)``."""

    def __init__(self, python: Path, sizes: list[str], threads: int, workdir: Path) -> None:
        self.workdir = workdir
        self.proc = subprocess.Popen(
            [str(python), "-c", ORACLE_SERVER, str(SHARED / "oracle"), json.dumps({s: CONFIGS[s] for s in sizes}),
             str(threads), str(workdir)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"the mmpose oracle did not start ({line!r})")

    def forward(self, size: str, batch: int) -> dict:
        self.proc.stdin.write(f"{size} {batch}\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def poseforge_models(size: str, weights: Path | None) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The plain model (mmpose's weights when given) and its Predictor-prepared copy."""
    model = create_model(f"rtmpose-{size}").eval()
    if weights is not None:
        model.load_state_dict(torch.load(weights, weights_only=True))
    prepared = copy.deepcopy(model).prepare_for_inference(fuse_batchnorm=True)
    prepared.to(memory_format=torch.channels_last)
    return model, prepared


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", default="t,s,m")
    parser.add_argument("--batches", default="1,8")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = args.sizes.split(",")
    batches = [int(b) for b in args.batches.split(",")]
    python = Path(os.environ.get("POSEFORGE_ORACLE_PYTHON", SHARED.parent / "oracle-venv" / "bin" / "python"))
    print(f"{datetime.date.today()}, {cpu_name()}, torch {torch.__version__}, {args.threads} threads, {load_average()}")
    with tempfile.TemporaryDirectory() as tmp:
        oracle = Oracle(python, sizes, args.threads, Path(tmp)) if python.exists() else None
        if oracle is None:
            print(f"(mmpose oracle not found at {python}: poseforge only)")
        runners: dict[tuple[str, int], dict[str, object]] = {}
        for size in sizes:
            model, prepared = poseforge_models(size, Path(tmp) / f"{size}.pth" if oracle else None)
            for batch in batches:
                x = torch.randn(batch, 3, 256, 192, generator=torch.Generator().manual_seed(0))
                with torch.no_grad():
                    ref = model(x).simcc_x
                    assert torch.allclose(prepared(x).simcc_x, ref, atol=1e-5, rtol=1e-4), "prepared model differs"
                if oracle is not None:
                    got = oracle.forward(size, batch)["x0"]
                    assert abs(got - float(ref.flatten()[0])) <= 1e-5 + 1e-4 * abs(got), "poseforge and mmpose differ"
                runners[(f"rtmpose-{size}", batch)] = {"poseforge": (model, x), "poseforge prepared": (prepared, x)}
        bundled = load_model("vitpose-tiny.synth").eval()
        bundled_prepared = copy.deepcopy(bundled).prepare_for_inference(fuse_batchnorm=True)
        bundled_prepared.to(memory_format=torch.channels_last)
        for batch in batches:
            x = torch.randn(batch, 3, 256, 192)
            runners[("vitpose-tiny.synth (bundled)", batch)] = {"poseforge": (bundled, x),
                                                                "poseforge prepared": (bundled_prepared, x)}
        times: dict[tuple[str, int, str], list[float]] = {}
        for repeat in range(args.repeats + 2):  # two warm-up rounds
            for (name, batch), ways in runners.items():
                for way, (model, x) in ways.items():
                    with torch.no_grad():
                        start = time.perf_counter()
                        model(x)
                        took = time.perf_counter() - start
                    if repeat >= 2:
                        times.setdefault((name, batch, way), []).append(took)
                if oracle is not None and name.startswith("rtmpose-"):
                    took = oracle.forward(name.split("-")[1], batch)["seconds"]
                    if repeat >= 2:
                        times.setdefault((name, batch, "mmpose"), []).append(took)
        if oracle is not None:
            oracle.close()
    print(f"after: {load_average()}; median of {args.repeats}, images/s (ratio against mmpose where it ran)\n")
    print("| model | batch | mmpose | poseforge | poseforge prepared |")
    print("|---|---:|---:|---:|---:|")
    for name, batch in runners:
        rate = {way: batch / statistics.median(t) for (n, b, way), t in times.items() if n == name and b == batch}
        base = rate.get("mmpose")
        cells = []
        for way in ("mmpose", "poseforge", "poseforge prepared"):
            if way not in rate:
                cells.append("-")
            else:
                cells.append(f"{rate[way]:.1f}" + (f" ({rate[way] / base:.2f}x)" if base and way != "mmpose" else ""))
        print(f"| {name} | {batch} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    sys.exit(main())
