"""``poseforge bench``: one table of inference speed on this machine, measured in one run.

* the pose model alone, img/s at each batch size: PyTorch eager (as the Predictor runs it: BatchNorms
  folded, channels-last, no flip test) vs onnxruntime fp32 vs onnxruntime int8 (static QDQ, calibrated
  on synthetic crops that are not the evaluation set), each call including the keypoint decode;
* end to end on a 640x480 video of two people (detector + pose per frame): the torch-free runtime with
  the ONNX detector and the fp32 / int8 pose model, and the PyTorch Predictor with the same detector;
* with ``--ap-images N``, held-out synthetic AP of the three pose backends (ground-truth boxes, no flip).

``--vitpose`` runs one table instead, on whatever device ``--device`` gives: poseforge ViTPose-``--sizes``
through the inference fast path (:func:`poseforge.inference.fastpath.optimize_for_inference`: pure bf16
weights on CUDA, folded BatchNorms, channels-last head; compiled with ``fullgraph=True`` and, on CUDA,
replayed as CUDA graphs) against Hugging Face transformers' ``VitPoseForPoseEstimation`` holding the same
weights (the random HF model converted into poseforge; outputs checked to agree), HF eager and
``torch.compile``-d, in img/s with the ratios. ``--fp8`` adds torchao FP8 matmuls and their output error.

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
    parser.add_argument("--batch-sizes", "--batch-size", default=None,
                        help="pose batch sizes to time (default: 1,8; with --vitpose 256 on CUDA, 8 elsewhere)")
    parser.add_argument("--repeats", type=int, default=15, help="timed repeats per arm (default: 15)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls per arm first (default: 3)")
    parser.add_argument("--frames", type=int, default=60, help="video frames for the end-to-end run (default: 60)")
    parser.add_argument("--threads", type=int, default=None, help="threads for torch and onnxruntime (default: all cores)")
    parser.add_argument("--int8", choices=["dynamic", "static"], default="dynamic",
                        help="int8 method (poseforge.export.quantize; default: dynamic, the faster one on the CPUs "
                             "measured)")
    parser.add_argument("--calibration-crops", type=int, default=128,
                        help="synthetic crops to calibrate static int8 (default: 128)")
    parser.add_argument("--ap-images", type=int, default=0,
                        help="also score each backend on N held-out synthetic people (default: 0, off)")
    vit = parser.add_argument_group("--vitpose: poseforge ViTPose vs Hugging Face transformers VitPose")
    vit.add_argument("--vitpose", action="store_true",
                     help="time poseforge's inference fast path against HF transformers VitPose (eager and compiled) "
                          "instead of the ONNX comparison")
    vit.add_argument("--sizes", default=None,
                     help="ViTPose sizes, comma-separated (tiny, s, b, l, h; default: s,b,l,h on CUDA, s,b elsewhere)")
    vit.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N (default: auto)")
    vit.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp16", "fp32"],
                     help="weights of both models (default: auto = bf16 on CUDA, fp32 elsewhere)")
    vit.add_argument("--no-compile", action="store_true", help="skip the torch.compile arms")
    vit.add_argument("--compile-mode", default=None,
                     help="torch.compile mode of both models (default: torch's; with CUDA graphs poseforge uses the "
                          "no-cudagraphs form of a mode, since it captures its own graphs)")
    vit.add_argument("--no-cuda-graphs", action="store_true", help="compiled poseforge without CUDA graphs")
    vit.add_argument("--fp8", action="store_true",
                     help="add poseforge with torchao FP8 matmuls (CUDA, compute capability >= 8.9) and its output error")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the figures to FILE")
    parser.add_argument("--force", action="store_true", help="replace an existing --json file")


def _calibration(crops: Any, args: argparse.Namespace) -> Any:
    """Calibration batches of 16 crops (static int8 only)."""
    return (crops[i:i + 16] for i in range(0, args.calibration_crops, 16)) if args.int8 == "static" else None


def _interleaved(arms: dict[str, Callable[[], Any]], repeats: int, warmup: int = 3,
                 sync: Callable[[], None] = lambda: None) -> dict[str, float]:
    """Median seconds per call of each arm, arms interleaved within every repeat; ``sync`` (e.g.
    ``torch.cuda.synchronize``) before each clock read, so that asynchronous work is counted."""
    for fn in arms.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(repeats):
        for name, fn in arms.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def _parse_sizes(text: str, flag: str) -> list[int]:
    try:
        sizes = sorted({int(s) for s in str(text).split(",") if s.strip()})
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise PoseforgeError(f"{flag}: expected positive integers, got {text!r}")
    return sizes


def run(args: argparse.Namespace) -> int:
    if args.json and Path(args.json).exists() and not args.force:
        raise PoseforgeError(f"{args.json}: exists; pass --force to replace it")
    if args.repeats < 1 or args.warmup < 0:
        raise PoseforgeError(f"--repeats must be >= 1 and --warmup >= 0, got {args.repeats} and {args.warmup}")
    if args.vitpose:
        return run_vitpose(args)
    sizes = _parse_sizes(args.batch_sizes or "1,8", "--batch-sizes")
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
            seconds = _interleaved(arms, args.repeats, args.warmup)
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


# ----------------------------------------------------------------------------------------------- --vitpose
def hf_vitpose_pair(size: str, seed: int = 0) -> tuple[Any, Any]:
    """A random Hugging Face ``VitPoseForPoseEstimation`` of zoo size ``size`` (classic decoder, COCO-17, the
    zoo's input size) and the poseforge model converted from its weights; ``(None, model)`` with a freshly
    initialized zoo model when transformers is not installed."""
    import torch

    from ..models import create_model, model_config

    config = model_config(f"vitpose-{size}")
    try:
        from transformers import VitPoseBackboneConfig, VitPoseConfig, VitPoseForPoseEstimation
    except ImportError:
        torch.manual_seed(seed)
        return None, create_model(f"vitpose-{size}")
    from ..convert import vitpose_from_state_dict

    bb = config.backbone
    if bb.hidden_dim % bb.embed_dim:
        raise PoseforgeError(f"--sizes {size}: its MLP width {bb.hidden_dim} is no integer ratio of {bb.embed_dim}, "
                             "which HF VitPose cannot express")
    w, h = config.input_size
    torch.manual_seed(seed)
    backbone = VitPoseBackboneConfig(hidden_size=bb.embed_dim, num_hidden_layers=bb.depth, num_attention_heads=bb.num_heads,
                                     mlp_ratio=bb.hidden_dim // bb.embed_dim, image_size=[h, w], qkv_bias=bb.qkv_bias,
                                     patch_size=[bb.patch_size, bb.patch_size], out_indices=[bb.depth],
                                     layer_norm_eps=bb.layer_norm_eps)
    hf = VitPoseForPoseEstimation(VitPoseConfig(backbone_config=backbone, use_simple_decoder=False, num_labels=17)).eval()
    pf = vitpose_from_state_dict(hf.state_dict(), "hf", hf_config=hf.config.to_dict(), source=f"HF VitPose-{size}")
    return hf, pf.eval()


def _relative_error(a: Any, b: Any) -> float:
    """``||a - b|| / ||b||`` in fp32."""
    a, b = a.float(), b.float()
    return float((a - b).norm() / b.norm().clamp(min=1e-12))


def _graph_free_mode(mode: str | None) -> str | None:
    """The ``torch.compile`` mode without Inductor's own CUDA graphs (poseforge captures its own)."""
    return {"reduce-overhead": None, "max-autotune": "max-autotune-no-cudagraphs"}.get(mode, mode) if mode else None


def run_vitpose(args: argparse.Namespace) -> int:
    """``poseforge bench --vitpose``: the one table of poseforge ViTPose vs HF transformers VitPose."""
    if args.json and Path(args.json).exists() and not args.force:
        raise PoseforgeError(f"{args.json}: exists; pass --force to replace it")
    import torch
    from rich.console import Console
    from rich.table import Table

    from ..device import resolve_device
    from ..inference.fastpath import optimize_for_inference, resolve_dtype
    from ..models.zoo import VITPOSE_BACKBONES

    console = Console()
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    dtype = resolve_dtype(args.dtype, device)
    sizes = [s.strip().lower() for s in (args.sizes or ("s,b,l,h" if cuda else "s,b")).split(",") if s.strip()]
    unknown = [s for s in sizes if s not in VITPOSE_BACKBONES]
    if not sizes or unknown:
        raise PoseforgeError(f"--sizes: unknown ViTPose size(s) {unknown or args.sizes!r}; known: {', '.join(VITPOSE_BACKBONES)}")
    batches = _parse_sizes(args.batch_sizes or ("256" if cuda else "8"), "--batch-sizes")
    if args.fp8 and not cuda:
        raise PoseforgeError(f"--fp8: FP8 matmuls need a CUDA GPU (compute capability >= 8.9), not {device}")
    if args.threads:
        torch.set_num_threads(args.threads)
    compile_ = not args.no_compile
    graphs = cuda and compile_ and not args.no_cuda_graphs
    sync = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)
    try:
        import transformers
        hf_version = transformers.__version__
    except ImportError:
        hf_version = None

    where = torch.cuda.get_device_name(device) if cuda else f"CPU, {torch.get_num_threads()} threads"
    dname = str(dtype).replace("torch.", "")
    console.print(f"[bold]poseforge bench --vitpose[/]: {where}, torch {torch.__version__}, "
                  f"transformers {hf_version or 'not installed'}")
    if hf_version is None:
        console.print("HF transformers VitPose: skipped (transformers is not installed: pip install transformers)")

    # "pf" = poseforge through optimize_for_inference; its compiled arm uses fullgraph=True (+ CUDA graphs on CUDA).
    arm_names = (["HF eager"] + (["HF compiled"] if compile_ else []) if hf_version else []) + ["pf eager"]
    arm_names += ["pf compiled"] if compile_ else []
    arm_names += ["pf FP8"] if args.fp8 else []
    reference = "HF eager" if hf_version else "pf eager"
    ratios = [(a, reference) for a in arm_names if a != reference]
    if hf_version and compile_:
        ratios.append(("pf compiled", "HF compiled"))
    pf_how = ", ".join(["optimize_for_inference"] + (["torch.compile fullgraph"] if compile_ else [])
                       + (["CUDA graphs"] if graphs else []) + (["FP8 arm: torchao float8"] if args.fp8 else []))
    table = Table(title=f"ViTPose forward, img/s, {dname} weights, median of {args.repeats} "
                        f"interleaved repeats\npf = poseforge ({pf_how}); HF = transformers VitPoseForPoseEstimation, "
                        "same weights")
    for column in ["model", "batch", *arm_names, *(f"{a} / {b}" for a, b in ratios)]:
        table.add_column(column, justify="right")

    report: dict[str, Any] = {"device": where, "dtype": dname, "torch": torch.__version__, "transformers": hf_version,
                              "compile_mode": args.compile_mode, "cuda_graphs": graphs, "date": time.strftime("%Y-%m-%d"),
                              "img_per_s": {}, "checks": {}}
    for size in sizes:
        with console.status(f"ViTPose-{size.upper()}: building"):
            hf, pf = hf_vitpose_pair(size)
        w, h = pf.input_size
        for batch in batches:
            torch._dynamo.reset()  # the previous models' compiled code is dead: no recompile limit is reached
            x = torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(batch)).to(device, dtype)
            arms: dict[str, Callable[[], Any]] = {}
            hf_model = hf_compiled = None
            if hf is not None:
                hf_model = copy.deepcopy(hf).to(device, dtype)
                arms["HF eager"] = lambda m=hf_model, x=x: m(pixel_values=x).heatmaps
                if compile_:
                    hf_compiled = torch.compile(hf_model, mode=args.compile_mode)
                    arms["HF compiled"] = lambda m=hf_compiled, x=x: m(pixel_values=x).heatmaps
            with console.status(f"ViTPose-{size.upper()} batch {batch}: preparing (compiling, capturing)"):
                fast_eager = optimize_for_inference(copy.deepcopy(pf), device, dtype)
                arms["pf eager"] = lambda f=fast_eager, x=x: f(x).heatmaps
                fast = {}
                if compile_:
                    fast["pf compiled"] = optimize_for_inference(
                        copy.deepcopy(pf), device, dtype, compile=True, cuda_graphs=graphs,
                        batch_sizes=(batch,) if graphs else (),
                        compile_mode=_graph_free_mode(args.compile_mode) if graphs else args.compile_mode)
                if args.fp8:
                    fast["pf FP8"] = optimize_for_inference(
                        copy.deepcopy(pf), device, dtype, compile=compile_, cuda_graphs=graphs,
                        batch_sizes=(batch,) if graphs else (), fp8=True,
                        compile_mode=_graph_free_mode(args.compile_mode) if graphs else args.compile_mode)
                for name, fm in fast.items():
                    arms[name] = lambda f=fm, x=x: f(x).heatmaps
                # Same weights, same outputs (to the dtype's rounding) before anything is timed.
                with torch.inference_mode():
                    outputs = {name: fn() for name, fn in arms.items()}
                    check = {"max_abs_diff": {}, "reference_max_abs": float(outputs[reference].float().abs().max())}
                    for name, out in outputs.items():
                        check["max_abs_diff"][name] = float((out.float() - outputs[reference].float()).abs().max())
                    # A conversion or fast-path bug shows as O(1) differences; rounding stays far below these.
                    tolerance = (1e-3 if dtype == torch.float32 else 0.1) * check["reference_max_abs"]
                    wrong = [n for n, d in check["max_abs_diff"].items() if d > tolerance and n != "pf FP8"]
                    if wrong:
                        raise PoseforgeError(f"ViTPose-{size}: outputs of {', '.join(wrong)} differ from {reference} by "
                                             f"more than {tolerance:.2e}: not the same computation")
                    if args.fp8:  # the accuracy change: output error against an fp32 model on this device
                        exact = optimize_for_inference(copy.deepcopy(pf), device, "fp32")
                        n = min(batch, 32)
                        ref32 = exact(x[:n].float()).heatmaps
                        check["relative_error_vs_fp32"] = {name: _relative_error(outputs[name][:n], ref32)
                                                           for name in ("pf eager", "pf FP8")}
                        del exact
            with console.status(f"ViTPose-{size.upper()} batch {batch}: timing"), torch.inference_mode():
                seconds = _interleaved(arms, args.repeats, args.warmup, sync=sync)
            rate = {k: batch / v for k, v in seconds.items()}
            key = f"vitpose-{size}/{batch}"
            report["img_per_s"][key] = rate
            report["checks"][key] = check
            table.add_row(f"ViTPose-{size.upper()} {h}x{w}", str(batch), *(f"{rate[a]:,.1f}" for a in arm_names),
                          *(f"{rate[a] / rate[b]:.2f}x" for a, b in ratios))
            del arms, fast, fast_eager, hf_model, hf_compiled, outputs
            if cuda:
                torch.cuda.empty_cache()
    console.print(table)
    for key, check in report["checks"].items():
        diffs = ", ".join(f"{name} {d:.2e}" for name, d in check["max_abs_diff"].items() if name != reference)
        line = f"{key}: max |output - {reference}| (outputs up to {check['reference_max_abs']:.2e}): {diffs}"
        if "relative_error_vs_fp32" in check:
            line += "; output error vs fp32: " + ", ".join(f"{n} {e:.2%}" for n, e in check["relative_error_vs_fp32"].items())
        console.print(line)
    if args.json:
        from ..io import write_json_atomic

        write_json_atomic(Path(args.json), report, indent=2)
        console.print(f"figures: {args.json}")
    return 0
