"""Which int8 scheme, if any, speeds up poseforge's small models under onnxruntime on this CPU?

For each model: the fp32 export (decoded in the graph, dynamic batch) against onnxruntime quantization
variants - static QDQ of Conv + MatMul + Gemm (what ``poseforge.export.quantize`` writes), static
QOperator, static QDQ of the matrix products only, and dynamic (weights-only) int8 of the matrix
products. Prints img/s at batch 1 and 8 (median of interleaved repeats: every repeat times every
variant once; worker threads do not spin, as in ``poseforge.runtime``) and the median keypoint shift
from fp32 on rendered people.

    python benchmarks/onnx_int8_variants.py --models rtmpose-t.synth bundled
"""
from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from onnxruntime import quantization as q

from poseforge.data.evalsets import synthetic_eval_set
from poseforge.evaluation.evaluator import evaluation_batches
from poseforge.export import export_onnx
from poseforge.models import load_model


class Batches(q.CalibrationDataReader):
    def __init__(self, x: np.ndarray, size: int = 16) -> None:
        self._items = iter([x[i:i + size] for i in range(0, len(x), size)])

    def get_next(self):
        batch = next(self._items, None)
        return None if batch is None else {"images": batch}


def session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def variants(fp32: Path, work: Path, calibration: np.ndarray) -> dict[str, Path]:
    prepared = work / "prepared.onnx"
    q.quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
    static = dict(per_channel=True, activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8)
    out = {"fp32": fp32}
    for name, options in {"static QDQ conv+matmul": dict(quant_format=q.QuantFormat.QDQ, op_types_to_quantize=["Conv", "MatMul", "Gemm"]),
                          "static QOperator conv+matmul": dict(quant_format=q.QuantFormat.QOperator, op_types_to_quantize=["Conv", "MatMul", "Gemm"]),
                          "static QDQ matmul only": dict(quant_format=q.QuantFormat.QDQ, op_types_to_quantize=["MatMul", "Gemm"])}.items():
        path = work / f"{len(out)}.onnx"
        q.quantize_static(str(prepared), str(path), Batches(calibration), **static, **options)
        out[name] = path
    path = work / "dynamic.onnx"
    q.quantize_dynamic(str(prepared), str(path), op_types_to_quantize=["MatMul", "Gemm"], per_channel=True,
                       weight_type=q.QuantType.QInt8)
    out["dynamic matmul only"] = path
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["rtmpose-t.synth", "bundled"])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # onnxruntime's quantizer logs advice on every call
    torch.set_num_threads(args.threads)
    for name in args.models:
        model = load_model(name)
        data = synthetic_eval_set(96, seed=2_000_101, image_size=model.input_size)
        x = model.normalize(torch.cat([b["image"] for b in evaluation_batches(model, data, batch_size=96)])).numpy()
        calibration, test = x[:64], x[64:]
        with tempfile.TemporaryDirectory() as work:
            fp32 = export_onnx(model, Path(work) / "fp32.onnx", dynamic_batch=True, with_decode=True)
            files = variants(fp32, Path(work), calibration)
            sessions = {k: session(v, args.threads) for k, v in files.items()}
            reference = sessions["fp32"].run(["keypoints"], {"images": test})[0]
            shift = {k: float(np.median(np.linalg.norm(s.run(["keypoints"], {"images": test})[0] - reference, axis=-1)))
                     for k, s in sessions.items()}
            rates = {}
            for b in (1, 8):
                xb = test[:b]
                for s in sessions.values():
                    for _ in range(3):
                        s.run(None, {"images": xb})
                times = {k: [] for k in sessions}
                for _ in range(args.repeats):
                    for k, s in sessions.items():
                        start = time.perf_counter()
                        s.run(None, {"images": xb})
                        times[k].append(time.perf_counter() - start)
                rates[b] = {k: b / statistics.median(t) for k, t in times.items()}
        print(f"\n{model.config.name} ({name}), {args.threads} threads, onnxruntime {ort.__version__}")
        print(f"{'variant':30s} {'b1 img/s':>9s} {'b8 img/s':>9s} {'b1 vs fp32':>10s} {'b8 vs fp32':>10s} {'kp shift px':>11s}")
        for k in sessions:
            print(f"{k:30s} {rates[1][k]:9.1f} {rates[8][k]:9.1f} {rates[1][k] / rates[1]['fp32']:9.2f}x "
                  f"{rates[8][k] / rates[8]['fp32']:9.2f}x {shift[k]:11.2f}")


if __name__ == "__main__":
    main()
