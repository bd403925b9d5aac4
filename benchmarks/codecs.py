"""Decode speed of poseforge's codecs against mmpose 1.3.2's own numpy codecs, in the same run.

mmpose's ``MSRAHeatmap`` (MSRA: ``unbiased=False``; DARK: ``unbiased=True, blur_kernel_size=11``),
``UDPHeatmap`` and ``SimCCLabel`` run in the oracle venv of ``../shared/oracle`` (or
``$POSEFORGE_ORACLE_PYTHON``) as a persistent subprocess that decodes and times on request, on the
very heatmaps / SimCC vectors poseforge decodes (written to .npy files in a temp folder). mmpose is
called the way its heads call a codec (``BaseHead.decode``: one ``codec.decode`` per instance of the
batch); for SimCC, whose mmpose decode also takes a whole batch at once, that one-call use is timed
too. Before any timing, poseforge's keypoints must equal mmpose's to 1e-3 input pixels and its scores
to 1e-6 on every instance (UDP compared in poseforge's convention ``x_hm * (w-1)/(W-1)``, i.e.
mmpose's ``x_hm * w/(W-1)`` times ``(w-1)/w``). Then both are timed interleaved, round by round (each side: one untimed call, then ``--calls``
timed ones, each input read just before, as a head's output is in cache right after the forward), so a busy neighbour slows both alike: the table gives medians and their ratio.

Each thread count runs in its own process with ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` (and
``torch.set_num_threads``, ``cv2.setNumThreads``) set on both sides. Inputs are network-like: codec
targets at random keypoints plus Gaussian noise (std 0.02), 64 crops x 17 keypoints by default.
Without the oracle the script says so and times poseforge alone.

    PYTHONPATH=. python benchmarks/codecs.py [--threads 1,2] [--batch 64] [--rounds 15] [--calls 5]
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

SHARED = Path(__file__).resolve().parents[2] / "shared"
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
INPUT_SIZE = (192, 256)  # (w, h)
HEATMAP_SIZE = (48, 64)  # (W, H)
NUM_KEYPOINTS = 17
SIMCC_SIGMA = (4.9, 5.66)  # RTMPose at 192x256
GOALS = {"MSRA": 10.0, "DARK": 20.0, "UDP": 20.0}  # issue 32: one-thread ratios against mmpose

# (label, mmpose class, mmpose kwargs, poseforge codec name, poseforge kwargs)
CASES = [
    ("MSRA", "MSRAHeatmap", dict(input_size=INPUT_SIZE, heatmap_size=HEATMAP_SIZE, sigma=2.0),
     "msra", dict(input_size=INPUT_SIZE, heatmap_size=HEATMAP_SIZE, sigma=2.0)),
    ("DARK", "MSRAHeatmap", dict(input_size=INPUT_SIZE, heatmap_size=HEATMAP_SIZE, sigma=2.0, unbiased=True,
                                 blur_kernel_size=11),
     "dark", dict(input_size=INPUT_SIZE, heatmap_size=HEATMAP_SIZE, sigma=2.0, blur_kernel_size=11)),
    ("UDP", "UDPHeatmap", dict(input_size=INPUT_SIZE, heatmap_size=HEATMAP_SIZE, sigma=2.0, blur_kernel_size=11),
     "udp", dict(input_size=INPUT_SIZE, heatmap_size=HEATMAP_SIZE, sigma=2.0, blur_kernel_size=11)),
    ("SimCC", "SimCCLabel", dict(input_size=INPUT_SIZE, sigma=SIMCC_SIGMA, simcc_split_ratio=2.0, normalize=False),
     "simcc", dict(input_size=INPUT_SIZE, sigma=SIMCC_SIGMA, split_ratio=2.0, normalize=False)),
]

# Runs in the oracle venv. Requests (one JSON line each): "load" a codec with its inputs (.npy paths),
# "decode" it once into an .npz, or "time" ``calls`` decodes of the whole batch after one untimed call,
# each with its input read just before (untimed); the reply is one JSON line.
ORACLE_SERVER = r'''
import json, sys, time
sys.path.insert(0, sys.argv[1])
import mm_oracle_shim  # noqa: F401  (stubs compiled mmcv ops; must come before mmpose)
import cv2, numpy as np, torch
threads = int(sys.argv[2])
torch.set_num_threads(threads)
cv2.setNumThreads(threads)
from mmpose.codecs import MSRAHeatmap, SimCCLabel, UDPHeatmap
TYPES = {"MSRAHeatmap": MSRAHeatmap, "UDPHeatmap": UDPHeatmap, "SimCCLabel": SimCCLabel}
cases = {}

def run(name, way):
    codec, inputs = cases[name]
    if way == "batch":  # SimCCLabel.decode also takes [N, K, bins] at once
        return codec.decode(*inputs)
    # as mmpose's BaseHead.decode calls a codec: one instance of the batch at a time
    outs = [codec.decode(*sample) for sample in zip(*inputs)]
    return np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs])

print("ready", flush=True)
for line in sys.stdin:
    req = json.loads(line)
    reply = {}
    if req["op"] == "load":
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in req["kwargs"].items()}
        cases[req["name"]] = (TYPES[req["type"]](**kwargs), [np.load(p) for p in req["inputs"]])
    elif req["op"] == "decode":
        keypoints, scores = run(req["name"], req["way"])
        np.savez(req["out"], keypoints=keypoints, scores=scores)
    else:
        run(req["name"], req["way"])  # untimed
        reply = {"seconds": [], "cpu_seconds": []}
        for _ in range(req["calls"]):
            for array in cases[req["name"]][1]:
                array.sum()  # the input in cache, as a head's output is right after the forward
            start, cpu = time.perf_counter(), time.process_time()
            run(req["name"], req["way"])
            reply["seconds"].append(time.perf_counter() - start)
            reply["cpu_seconds"].append(time.process_time() - cpu)
    print(json.dumps(reply), flush=True)
'''


class Oracle:
    """mmpose's codecs in their own process (the oracle venv), with ``threads`` threads."""

    def __init__(self, python: Path, threads: int) -> None:
        env = {**os.environ, **{v: str(threads) for v in THREAD_VARS}, "OMP_WAIT_POLICY": "PASSIVE"}
        self.proc = subprocess.Popen([str(python), "-c", ORACLE_SERVER, str(SHARED / "oracle"), str(threads)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env)
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"the mmpose oracle did not start: {self.proc.stderr.read()[-2000:]}")

    def ask(self, **request: object) -> dict:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the mmpose oracle stopped: {self.proc.stderr.read()[-2000:]}")
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def oracle_python() -> Path | None:
    """The oracle venv's python, or None (with the reason printed) where it is absent."""
    python = Path(os.environ.get("POSEFORGE_ORACLE_PYTHON", SHARED.parent / "oracle-venv" / "bin" / "python"))
    if not python.exists() or not (SHARED / "oracle" / "mm_oracle_shim.py").exists():
        print(f"mmpose oracle not found ({python}; shim in {SHARED / 'oracle'}): timing poseforge only. "
              "Build it with ../shared/oracle/setup.sh and set POSEFORGE_ORACLE_PYTHON to compare.")
        return None
    return python


def network_like_outputs(codec, batch: int, seed: int):
    """Targets of ``codec`` at random keypoints inside the crop plus Gaussian noise (std 0.02), like a
    trained head's outputs: heatmaps [B, K, H, W], or SimCC (x [B, K, Wx], y [B, K, Hy])."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    w, h = INPUT_SIZE
    margin = 8.0
    keypoints = torch.rand(batch, NUM_KEYPOINTS, 2, generator=gen) * torch.tensor([w - 2 * margin, h - 2 * margin]) + margin
    targets = codec.encode(keypoints, torch.ones(batch, NUM_KEYPOINTS))
    names = ("x_labels", "y_labels") if codec.name == "simcc" else ("heatmaps",)
    return tuple(targets[n] + 0.02 * torch.randn(targets[n].shape, generator=gen) for n in names)


def run_one_thread_count(args: argparse.Namespace, threads: int) -> None:
    """Check and time every codec with ``threads`` threads (this process's thread variables are set)."""
    import cv2
    import numpy as np
    import torch

    from poseforge.codecs import create_codec

    from _common import cpu_name, load_average  # benchmarks/_common.py (the script's folder is on sys.path)

    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    device = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    print(f"\n## {threads} thread{'s' if threads > 1 else ''}: {datetime.datetime.now().isoformat(timespec='seconds')}, "
          f"{cpu_name()}, torch {torch.__version__}, device {device}, {load_average()}")
    python = oracle_python()
    with tempfile.TemporaryDirectory() as tmp:
        oracle = Oracle(python, threads) if python else None
        runs: dict[str, dict] = {}
        for seed, (label, mm_type, mm_kwargs, name, kwargs) in enumerate(CASES):
            codec = create_codec(name, **kwargs)
            outputs = network_like_outputs(codec, args.batch, seed)
            inputs = [str(Path(tmp) / f"{label}_{i}.npy") for i in range(len(outputs))]
            for path, tensor in zip(inputs, outputs):
                np.save(path, tensor.numpy())
            on_device = tuple(t.to(device) for t in outputs)
            decode_input = on_device if name == "simcc" else on_device[0]
            keypoints, scores = codec.decode(decode_input)
            ways = ["instances", "batch"] if name == "simcc" else ["instances"]
            check = ""
            if oracle is not None:
                worst = 0.0
                oracle.ask(op="load", name=label, type=mm_type, kwargs=mm_kwargs, inputs=inputs)
                for way in ways:
                    out = Path(tmp) / f"{label}_{way}.npz"
                    oracle.ask(op="decode", name=label, way=way, out=str(out))
                    ref = np.load(out)
                    ref_kp = ref["keypoints"].reshape(keypoints.shape).astype(np.float64)
                    if name == "udp":  # mmpose's x_hm * w/(W-1) in poseforge's x_hm * (w-1)/(W-1)
                        ref_kp = ref_kp * (np.array(INPUT_SIZE) - 1.0) / np.array(INPUT_SIZE)
                    kp_diff = float(np.abs(keypoints.cpu().double().numpy() - ref_kp).max())
                    score_diff = float(np.abs(scores.cpu().double().numpy() - ref["scores"].reshape(scores.shape)).max())
                    if not (kp_diff <= 1e-3 and score_diff <= 1e-6):
                        raise SystemExit(f"{label}: poseforge and mmpose ({way}) disagree: keypoints by {kp_diff:.2e} px, "
                                         f"scores by {score_diff:.2e}")
                    worst = max(worst, kp_diff)
                check = f"{worst:.1e}"

            def ours(codec=codec, decode_input=decode_input) -> None:
                codec.decode(decode_input)
                sync()

            shape = "x".join(str(s) for s in outputs[0].shape) + (
                f" + {'x'.join(str(s) for s in outputs[1].shape)}" if len(outputs) > 1 else "")
            timed = ["poseforge"] + (ways if oracle else [])
            def touch(inputs=on_device) -> None:
                for tensor in inputs:
                    tensor.sum()
                sync()

            runs[label] = {"ours": ours, "touch": touch, "ways": ways if oracle else [], "shape": shape, "check": check,
                           "wall": {w: [] for w in timed}, "cpu": {w: [] for w in timed}}
        # interleaved rounds: per codec, mmpose then poseforge, each one untimed call and then `calls`
        # timed ones, each timed call with its input read just before (untimed). Decoding follows the
        # model's forward, which has just written the heatmaps: they are in cache. Left idle, they are
        # not: on this shared host, 60 ms of sleep leaves poseforge's next MSRA decode 3x slower (13 MB
        # back from memory) and mmpose's, bound by its per-instance Python, barely slower.
        for round_ in range(args.rounds + args.warmup):
            for label, run in runs.items():
                for way in run["ways"]:
                    reply = oracle.ask(op="time", name=label, way=way, calls=args.calls)
                    if round_ >= args.warmup:
                        run["wall"][way] += reply["seconds"]
                        run["cpu"][way] += reply["cpu_seconds"]
                run["ours"]()
                for _ in range(args.calls):
                    run["touch"]()
                    start, cpu = time.perf_counter(), time.process_time()
                    run["ours"]()
                    if round_ >= args.warmup:
                        run["wall"]["poseforge"].append(time.perf_counter() - start)
                        run["cpu"]["poseforge"].append(time.process_time() - cpu)
        if oracle is not None:
            oracle.close()
    n = args.batch * NUM_KEYPOINTS
    print(f"after: {load_average()}; medians of {args.rounds * args.calls} calls each ({args.rounds} rounds of "
          f"{args.calls} after an untimed one), {n} keypoints per call; ratio = mmpose / poseforge wall time (CPU-time ratio: the same with "
          f"process CPU time, which time slices lost to other processes do not inflate)\n")
    print("| codec | input | mmpose ms | poseforge ms | ratio | CPU-time ratio | goal | max abs diff (px) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for label, run in runs.items():
        ours_ms = statistics.median(run["wall"]["poseforge"]) * 1e3
        ours_cpu = statistics.median(run["cpu"]["poseforge"])
        if not run["ways"]:
            print(f"| {label} | {run['shape']} | - | {ours_ms:.2f} | - | - | - | - |")
        for way in run["ways"]:
            ref_ms = statistics.median(run["wall"][way]) * 1e3
            cpu_ratio = statistics.median(run["cpu"][way]) / ours_cpu if ours_cpu > 0 else float("nan")
            goal = f"{GOALS[label]:g}x" if label in GOALS and threads == 1 else "-"
            name = label if way == "instances" else f"{label} (mmpose: whole batch in one call)"
            print(f"| {name} | {run['shape']} | {ref_ms:.2f} | {ours_ms:.2f} | {ref_ms / ours_ms:.1f}x | {cpu_ratio:.1f}x "
                  f"| {goal} | {run['check']} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts, each in its own process")
    parser.add_argument("--batch", type=int, default=64, help="crops per decode call (17 keypoints each)")
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds, interleaved: mmpose then poseforge")
    parser.add_argument("--calls", type=int, default=5, help="timed calls per codec, side and round (after an untimed one)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    parser.add_argument("--device", default="cpu", help="poseforge's device (mmpose's numpy codecs run on the CPU)")
    args = parser.parse_args()
    counts = [int(t) for t in args.threads.split(",")]
    if len(counts) > 1 or os.environ.get("OMP_NUM_THREADS") != str(counts[0]):
        # one child per count: the OpenMP/MKL thread variables must be set before torch is imported
        argv = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k != "threads"]
        for threads in counts:
            env = {**os.environ, **{v: str(threads) for v in THREAD_VARS}, "OMP_WAIT_POLICY": "PASSIVE"}
            code = subprocess.call([sys.executable, __file__, *argv, f"--threads={threads}"], env=env)
            if code:
                sys.exit(code)
        return
    run_one_thread_count(args, counts[0])


if __name__ == "__main__":
    main()
