"""``poseforge export MODEL --format onnx --out FILE.onnx``: a model (weights name, folder or training run) as
an ONNX file for runtimes without PyTorch (raw head outputs, or decoded keypoints with ``--with-decode``)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import PoseforgeError
from .common import add_verify_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="weights name (bundled, rtmpose-t.synth, ...), model folder or training run")
    parser.add_argument("--format", default="onnx", choices=["onnx"], help="export format (default: onnx)")
    parser.add_argument("--out", required=True, metavar="FILE.onnx", help="the file to write")
    batch = parser.add_mutually_exclusive_group()
    batch.add_argument("--dynamic-batch", action="store_true", help="a symbolic batch dimension (default: fixed)")
    batch.add_argument("--batch-size", type=int, default=1, metavar="N", help="the fixed batch size (default: 1)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default: 17)")
    parser.add_argument("--with-decode", action="store_true",
                        help="top-down models: decode in the graph, outputs keypoints [N, K, 2] (input pixels) and "
                             "scores [N, K] (default: the raw head outputs)")
    parser.add_argument("--task", default=None,
                        help="multi-task models (ViTPose++): the task to export, by name or index (default: the first)")
    parser.add_argument("--int8", choices=["dynamic", "static"], default=None,
                        help="write an int8 model (onnxruntime quantization): dynamic = int8 matrix-product weights, "
                             "no calibration; static = int8 convolutions too, calibrated on --calibration-crops "
                             "rendered people (for real crops use poseforge.export.quantize_onnx) (default: fp32)")
    parser.add_argument("--calibration-crops", type=int, default=256, metavar="N",
                        help="static int8: rendered crops to calibrate on (default: 256)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output file")
    add_verify_argument(parser)


def _own_files(model: str) -> set[Path]:
    """The files a model argument loads from (an export must never replace one of them)."""
    from ..models.estimators import CONFIG_NAME, WEIGHTS_NAME
    from ..models.loading import resolve_model_path

    resolved = resolve_model_path(model)
    if resolved.is_dir():
        return {(resolved / WEIGHTS_NAME).resolve(), (resolved / CONFIG_NAME).resolve()}
    return {resolved.resolve(), resolved.with_name(CONFIG_NAME).resolve()}


def run(args: argparse.Namespace) -> int:
    from ..export.onnx import check_onnx_parity, export_onnx, onnx_output_shapes
    from ..models import load_model

    out = Path(args.out)
    if out.exists() and not args.force:
        raise PoseforgeError(f"{out}: already exists (use --force to overwrite)")
    if out.resolve() in _own_files(args.model):
        raise PoseforgeError(f"{out}: is a file of the model {args.model} itself; choose another output")
    task = int(args.task) if args.task is not None and args.task.isdigit() else args.task
    model = load_model(args.model, verify=args.verify)
    options = dict(dynamic_batch=args.dynamic_batch, batch_size=args.batch_size, opset=args.opset,
                   with_decode=args.with_decode, task=0 if task is None else task, source=args.model)
    if args.int8:
        _export_int8(model, out, args, options)
    else:
        export_onnx(model, out, **options)
    shapes = onnx_output_shapes(out)
    data = out.with_name(out.name + ".data")  # the tensors of a model past 2 GB
    size = out.stat().st_size + (data.stat().st_size if data.exists() else 0)
    task_text = f", task {model.task_names[model.task_index(task)]}" if model.num_tasks > 1 else ""
    w, h = model.input_size
    batch = "dynamic batch" if args.dynamic_batch else f"batch {args.batch_size}"
    print(f"{args.model} -> {out} ({size / 1e6:.1f} MB, opset {args.opset}, {batch})")
    n = "'batch'" if args.dynamic_batch else args.batch_size
    print(f"  {model.config.name} ({model.kind}{task_text}), input images [{n}, 3, {h}, {w}] normalized RGB")
    print("  outputs: " + ", ".join(f"{name} {list(shape)}" for name, shape in shapes.items()))
    if args.int8:  # on random inputs the int8 differences say nothing; the AP change does
        print(f"  int8 ({args.int8}); its accuracy change: poseforge bench --model {args.model} --int8 {args.int8} "
              "--ap-images 100")
        return 0
    diffs = check_onnx_parity(model, out)
    print("  onnxruntime vs PyTorch, max |difference|: " + ", ".join(f"{k} {v:.2g}" for k, v in diffs.items()))
    return 0


def _export_int8(model, out: Path, args: argparse.Namespace, options: dict) -> None:
    """fp32 export in a temporary folder, then the int8 copy written to ``out``."""
    import tempfile

    from ..export.onnx import export_onnx
    from ..export.quantize import quantize_onnx

    calibration = None
    if args.int8 == "static":
        if args.calibration_crops < 1:
            raise PoseforgeError("--calibration-crops: expected a positive number")
        if not model.needs_boxes:
            raise PoseforgeError(f"{args.model}: static int8 calibrates on person crops (top-down models); use "
                                 "--int8 dynamic or poseforge.export.quantize_onnx with your own inputs")
        import torch

        from ..data.evalsets import synthetic_eval_set
        from ..evaluation.evaluator import evaluation_batches

        data = synthetic_eval_set(args.calibration_crops, seed=2_000_101, image_size=model.input_size)
        crops = torch.cat([b["image"] for b in evaluation_batches(model, data, batch_size=64)])
        normalized = model.normalize(crops).numpy()
        calibration = [normalized[i:i + 16] for i in range(0, len(normalized), 16)]
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as work:
        fp32 = export_onnx(model, Path(work) / "fp32.onnx", **options)
        quantize_onnx(fp32, out, calibration, method=args.int8, force=True)
