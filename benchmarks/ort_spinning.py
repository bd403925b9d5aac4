"""Why ``poseforge.runtime`` turns onnxruntime's thread spinning off: a detector and a pose session in turn.

After a run, onnxruntime's intra-op workers spin-wait for more work by default; with two sessions that take
turns on the same cores (detector, then pose), one session's spinning workers steal the other's cores.
Prints the pose model alone at batch 1 and 8 and RTMDet-nano + pose (2 crops) per frame, with spinning on
and off. The settings alternate in blocks (spinning workers would otherwise steal cores from the other
setting's arms): each round builds one setting's sessions, times every arm, and drops them; medians of
all rounds.

    python benchmarks/ort_spinning.py --detector ../shared/peer-data/models/rtmdet-nano-person.onnx
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from poseforge.export import export_onnx
from poseforge.models import load_model


def session(path: Path, threads: int, spin: bool) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="rtmpose-t.synth")
    parser.add_argument("--detector", required=True, help="an end2end RTMDet ONNX file")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per arm and round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    model = load_model(args.model)
    w, h = model.input_size
    rng = np.random.default_rng(0)
    crops = rng.standard_normal((8, 3, h, w)).astype(np.float32)
    frame = rng.standard_normal((1, 3, 320, 320)).astype(np.float32)
    with tempfile.TemporaryDirectory() as work:
        pose_file = export_onnx(model, Path(work) / "pose.onnx", dynamic_batch=True, with_decode=True)
        times: dict[str, list[float]] = {}
        for _ in range(args.rounds):
            for spin in (True, False):
                pose, det = session(pose_file, args.threads, spin), session(Path(args.detector), args.threads, spin)
                det_input = det.get_inputs()[0].name
                tag = "spinning" if spin else "no spinning"
                arms = {f"pose b1, {tag}": lambda: pose.run(None, {"images": crops[:1]}),
                        f"pose b8, {tag}": lambda: pose.run(None, {"images": crops}),
                        f"detector + pose b2, {tag}": lambda: (det.run(None, {det_input: frame}),
                                                               pose.run(None, {"images": crops[:2]}))}
                for name, fn in arms.items():
                    for _ in range(3):
                        fn()
                    for _ in range(args.repeats):
                        start = time.perf_counter()
                        fn()
                        times.setdefault(name, []).append(time.perf_counter() - start)
                del pose, det, arms
    print(f"{model.config.name}, {args.threads} threads, onnxruntime {ort.__version__}")
    for k, t in times.items():
        print(f"{k:32s} {1000 * statistics.median(t):7.1f} ms")
    for what in ("pose b1", "pose b8", "detector + pose b2"):
        on, off = statistics.median(times[f"{what}, spinning"]), statistics.median(times[f"{what}, no spinning"])
        print(f"{what:20s} no spinning / spinning time: {off / on:.2f}")


if __name__ == "__main__":
    main()
