"""``poseforge bench``: one table of inference speed on this machine, measured in one run.

* the pose model alone, img/s at each batch size: PyTorch eager (as the Predictor runs it: BatchNorms
  folded, channels-last, no flip test) vs onnxruntime fp32 vs onnxruntime int8 (static QDQ, calibrated
  on synthetic crops that are not the evaluation set), each call including the keypoint decode;
* end to end on a 640x480 video of two people (detector + pose per frame): the torch-free runtime with
  the ONNX detector and the fp32 / int8 pose model, and the PyTorch Predictor with the same detector;
* with ``--ap-images N``, held-out synthetic AP of the three pose backends (ground-truth boxes, no flip).

Arms are interleaved (each repeat times every arm once) and medians reported, since a shared machine is
noisy; the thread count is the same for torch and onnxruntime.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from ..errors import PoseforgeError

CALIBRATION_SEED = 2_000_101  # not the presets' held-out seed (1,000,003)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="rtmpose-t.synth",
                        help="pose model: a weights name, folder or run (default: rtmpose-t.synth; speed does not "
                             "depend on the weights)")
    parser.add_argument("--detector", default="auto",
                        help="ONNX person detector for the end-to-end run: rtmdet-nano, PATH.onnx, auto (rtmdet-nano "
                             "where cached) or none (default: auto)")
    parser.add_argument("--batch-sizes", default="1,8", help="pose batch sizes to time (default: 1,8)")
    parser.add_argument("--repeats", type=int, default=15, help="timed repeats per arm (default: 15)")
    parser.add_argument("--frames", type=int, default=60, help="video frames for the end-to-end run (default: 60)")
    parser.add_argument("--threads", type=int, default=None, help="threads for torch and onnxruntime (default: all cores)")
    parser.add_argument("--int8", choices=["dynamic", "static"], default="dynamic",
                        help="int8 method (poseforge.export.quantize; default: dynamic, the faster one on the CPUs "
                             "measured)")
    parser.add_argument("--calibration-crops", type=int, default=128,
                        help="synthetic crops to calibrate static int8 (default: 128)")
    parser.add_argument("--ap-images", type=int, default=0,
                        help="also score each backend on N held-out synthetic people (default: 0, off)")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the figures to FILE")
    parser.add_argument("--force", action="store_true", help="replace an existing --json file")


def _calibration(crops: Any, args: argparse.Namespace) -> Any:
    """Calibration batches of 16 crops (static int8 only)."""
    return (crops[i:i + 16] for i in range(0, args.calibration_crops, 16)) if args.int8 == "static" else None


def _interleaved(arms: dict[str, Callable[[], Any]], repeats: int, warmup: int = 3) -> dict[str, float]:
    """Median seconds per call of each arm, arms interleaved within every repeat."""
    for fn in arms.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(repeats):
        for name, fn in arms.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def run(args: argparse.Namespace) -> int:
    if args.json and Path(args.json).exists() and not args.force:
        raise PoseforgeError(f"{args.json}: exists; pass --force to replace it")
    sizes = sorted({int(s) for s in str(args.batch_sizes).split(",") if s.strip()})
    if not sizes or min(sizes) < 1:
        raise PoseforgeError(f"--batch-sizes: expected positive integers, got {args.batch_sizes!r}")
    # Idle OpenMP threads sleep (as in predict): torch and onnxruntime take turns on the same cores.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch
    from rich.console import Console
    from rich.table import Table

    from ..data.evalsets import synthetic_eval_set
    from ..evaluation.evaluator import evaluation_batches
    from ..export import export_onnx
    from ..export.quantize import quantize_onnx
    from ..inference.detectors.builtin import auto_detector_name
    from ..models import load_model
    from ..runtime import PoseModel

    console = Console()
    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    model = load_model(args.model).float().eval()
    if not model.needs_boxes:
        raise PoseforgeError(f"{args.model}: poseforge bench times top-down models (this one is {model.kind})")
    w, h = model.input_size
    console.print(f"[bold]poseforge bench[/]: {model.config.name} ({w}x{h}), {threads} threads, torch {torch.__version__}")

    # Calibration / timing crops: rendered synthetic people, not the held-out evaluation seed.
    calib_set = synthetic_eval_set(max(args.calibration_crops, max(sizes)), seed=CALIBRATION_SEED, image_size=(w, h))
    crops = torch.cat([b["image"] for b in evaluation_batches(model, calib_set, batch_size=64)])
    normalized = model.normalize(crops).numpy()

    report: dict[str, Any] = {"model": model.config.name, "input_size": [w, h], "threads": threads, "int8": args.int8,
                              "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}
    with tempfile.TemporaryDirectory(prefix="poseforge-bench-") as work:
        work_dir = Path(work)
        with console.status("exporting and quantizing"):
            fp32 = export_onnx(model, work_dir / "pose.onnx", dynamic_batch=True, with_decode=True)
            int8 = quantize_onnx(fp32, work_dir / "pose-int8.onnx", _calibration(normalized, args), method=args.int8)
        report["onnx_mb"] = {"fp32": fp32.stat().st_size / 2**20, "int8": int8.stat().st_size / 2**20}
        prepared = copy.deepcopy(model).prepare_for_inference(fuse_batchnorm=True)  # folds in place: a copy
        sessions = {"ort_fp32": PoseModel(fp32, num_threads=threads), "ort_int8": PoseModel(int8, num_threads=threads)}

        table = Table(title=f"pose model alone (img/s, median of interleaved repeats; decode included; int8 {args.int8})")
        for column in ("batch", "PyTorch eager", "ORT fp32", "ORT int8", "fp32 / eager", "int8 / eager"):
            table.add_column(column, justify="right")
        report["pose_img_per_s"] = {}
        for b in sizes:
            x_np = normalized[:b]
            x_t = torch.from_numpy(x_np.copy())

            def eager() -> None:
                with torch.inference_mode():
                    prepared.codec.decode_predictions(prepared(x_t))

            arms = {"eager": eager,
                    "ort_fp32": lambda: sessions["ort_fp32"].run(x_np),
                    "ort_int8": lambda: sessions["ort_int8"].run(x_np)}
            seconds = _interleaved(arms, args.repeats)
            rate = {k: b / v for k, v in seconds.items()}
            report["pose_img_per_s"][b] = rate
            table.add_row(str(b), f"{rate['eager']:.1f}", f"{rate['ort_fp32']:.1f}", f"{rate['ort_int8']:.1f}",
                          f"{rate['ort_fp32'] / rate['eager']:.2f}x", f"{rate['ort_int8'] / rate['eager']:.2f}x")
        console.print(table)

        detector_name = auto_detector_name() if args.detector == "auto" else args.detector
        if str(detector_name).lower() in ("none", "bundled"):
            console.print("end to end: skipped (needs an ONNX detector: --detector rtmdet-nano or PATH.onnx)")
        else:
            report["end_to_end"] = _end_to_end(args, detector_name, model, fp32, int8, threads, console)

        if args.ap_images > 0:
            report["synthetic_ap"] = _synthetic_ap(args, model, work_dir, normalized, threads, console)
    if args.json:
        from ..io import write_json_atomic

        write_json_atomic(Path(args.json), report, indent=2)
        console.print(f"figures: {args.json}")
    return 0


def _end_to_end(args: argparse.Namespace, detector_name: str, model: Any, fp32: Path, int8: Path, threads: int,
                console: Any) -> dict[str, float]:
    """Frames per second on a 640x480 clip of two people: detector + pose per frame, boxes from the detector."""
    import numpy as np
    from rich.table import Table

    from ..hub import resolve_weights
    from ..inference.predictor import Predictor
    from ..inference.synthetic_video import crossing_clip
    from ..runtime import PersonDetector, TopDownPipeline

    detector_path = resolve_weights(detector_name, "detector") or Path(detector_name)
    if detector_path.suffix.lower() != ".onnx":
        raise PoseforgeError(f"--detector {detector_name}: the end-to-end run needs an ONNX detector")
    with console.status("rendering the clip"):
        clip = crossing_clip(num_frames=args.frames, size=(640, 480))
    frames_bgr = [np.ascontiguousarray(f[..., ::-1]) for f in clip.frames]
    detector = PersonDetector(detector_path, num_threads=threads)
    pipelines = {"runtime fp32": TopDownPipeline(fp32, detector, num_threads=threads),
                 "runtime int8": TopDownPipeline(int8, detector, num_threads=threads)}
    predictor = Predictor(args.model, detector=str(detector_path), device="cpu", flip_test=False, tracker=False)

    def run_all(fn: Callable[[np.ndarray], Any]) -> tuple[float, float]:
        for frame in frames_bgr[:3]:
            fn(frame)
        start = time.perf_counter()
        people = sum(len(fn(frame)) for frame in frames_bgr)
        return len(frames_bgr) / (time.perf_counter() - start), people / len(frames_bgr)

    arms = {name: (lambda p: (lambda frame: p(frame)))(p) for name, p in pipelines.items()}
    arms["PyTorch Predictor"] = lambda frame: predictor.predict(np.ascontiguousarray(frame[..., ::-1]))
    results: dict[str, float] = {}
    people: dict[str, float] = {}
    for name, fn in arms.items():  # whole-clip runs, one arm after another, twice (the better of two)
        runs = [run_all(fn) for _ in range(2)]
        results[name] = max(r[0] for r in runs)
        people[name] = runs[0][1]
    table = Table(title=f"end to end, {args.frames} frames 640x480, 2 people, detector {detector_path.name}")
    for column in ("pipeline", "FPS", "people / frame"):
        table.add_column(column, justify="right")
    for name in arms:
        table.add_row(name, f"{results[name]:.1f}", f"{people[name]:.2f}")
    console.print(table)
    return {**{f"{k} fps": v for k, v in results.items()}, **{f"{k} people": v for k, v in people.items()}}


def _synthetic_ap(args: argparse.Namespace, model: Any, work_dir: Path, calibration: Any, threads: int,
                  console: Any) -> dict[str, float]:
    """Held-out synthetic AP of PyTorch, ORT fp32 and ORT int8 (raw-output exports decoded by the model's codec)."""
    import dataclasses

    import torch
    from rich.table import Table

    from ..data.evalsets import synthetic_eval_set
    from ..evaluation.evaluator import evaluate
    from ..export import export_onnx
    from ..export.quantize import quantize_onnx
    from ..runtime import PoseModel

    w, h = model.input_size
    raw = export_onnx(model, work_dir / "pose-raw.onnx", dynamic_batch=True)
    raw_int8 = quantize_onnx(raw, work_dir / "pose-raw-int8.onnx", _calibration(calibration, args), method=args.int8)
    data = synthetic_eval_set(args.ap_images, image_size=(w, h))
    probe = model(torch.zeros(1, 3, h, w))
    output_type, fields = type(probe), [f.name for f in dataclasses.fields(probe) if getattr(probe, f.name) is not None]
    scores: dict[str, float] = {}
    for name, path in (("PyTorch", None), ("ORT fp32", raw), ("ORT int8", raw_int8)):
        if path is None:
            backend = model
        else:
            session = PoseModel(path, num_threads=threads)
            backend = copy.deepcopy(model)  # same transform / codec / metric; forward replaced by the session
            exported = [f for f in fields if f in session.output_names]  # raw exports drop auxiliary maps

            def forward(x: torch.Tensor, task: Any = None, _s=session, _f=exported) -> Any:
                out = _s.run(x.float().numpy())
                return output_type(**{f: torch.from_numpy(out[f]) for f in _f})

            backend.forward = forward  # type: ignore[method-assign]
        result = evaluate(backend.eval(), data, flip_test=False, batch_size=32)
        scores[name] = float(result.stats["AP"])
    table = Table(title=f"held-out synthetic AP ({args.ap_images} people, ground-truth boxes, no flip test)")
    for column in ("backend", "AP", "change"):
        table.add_column(column, justify="right")
    for name, ap in scores.items():
        table.add_row(name, f"{ap:.3f}", f"{ap - scores['PyTorch']:+.3f}")
    console.print(table)
    return scores
