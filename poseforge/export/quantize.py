"""int8 ONNX models for CPUs: onnxruntime static quantization (QDQ) of an exported poseforge model.

Only the compute-heavy operators (convolutions and matrix products) are quantized, with per-channel
int8 weights and uint8 activations (the U8S8 kernels onnxruntime uses on x86 with AVX2 / AVX-512 VNNI);
everything after them - the SimCC / heatmap outputs and any in-graph decode - stays float, so argmax
and sub-pixel refinement see float logits. Activation ranges come from calibration crops (the caller's:
real crops for real use, synthetic ones for the figures in ``benchmarks/``).
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..errors import PoseforgeError

__all__ = ["quantize_onnx", "QUANTIZED_OPS"]

QUANTIZED_OPS: tuple[str, ...] = ("Conv", "MatMul", "Gemm")
_METADATA_KEY = "poseforge"


def _import_quantization():
    try:
        import onnx
        from onnxruntime import quantization
    except ImportError:
        raise PoseforgeError("int8 quantization needs onnx and onnxruntime: pip install 'poseforge[onnx]'") from None
    return onnx, quantization


def quantize_onnx(source: str | os.PathLike, output: str | os.PathLike, calibration: Iterable[np.ndarray], *,
                  per_channel: bool = True, op_types: Sequence[str] = QUANTIZED_OPS, force: bool = False) -> Path:
    """Write an int8 (QDQ) copy of the ONNX model ``source`` to ``output``.

    Args:
        source: an fp32 ONNX file (e.g. from ``poseforge export``); its metadata is carried over, with a
            ``quantization`` entry added to the ``poseforge`` record.
        output: the int8 file; an existing one is replaced only with ``force`` and never the source.
        calibration: batches of the model's input (``[N, 3, h, w]`` float32, normalized as the model
            expects); a few hundred crops like the ones it will see are enough.
        per_channel: per-output-channel weight scales (more accurate, same speed).
        op_types: operator types to quantize.
    """
    onnx, quantization = _import_quantization()
    source, output = Path(source), Path(output)
    if not source.is_file():
        raise PoseforgeError(f"{source}: ONNX file not found")
    if output.resolve() == source.resolve():
        raise PoseforgeError(f"{output}: the int8 model would replace its source; choose another file")
    if output.exists() and not force:
        raise PoseforgeError(f"{output}: exists; pass --force (force=True) to replace it")
    model = onnx.load(str(source))
    graph_input = model.graph.input[0]
    fixed = graph_input.type.tensor_type.shape.dim[0].dim_value or None  # None: a dynamic batch axis
    batches = list(_rebatch(calibration, fixed))
    if not batches:
        raise PoseforgeError("quantize_onnx: no calibration data")
    count = sum(len(b) for b in batches)

    class Reader(quantization.CalibrationDataReader):
        def __init__(self) -> None:
            self._items = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._items, None)
            return None if batch is None else {graph_input.name: batch}

    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=f".{output.name}.") as work:
        prepared = Path(work) / "prepared.onnx"
        try:  # shape inference + graph optimizations first, as onnxruntime recommends
            quantization.quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        except Exception:  # noqa: BLE001 - some graphs do not pre-process; quantizing the original still works
            prepared = source
        quantized = Path(work) / "int8.onnx"
        quantization.quantize_static(
            str(prepared), str(quantized), Reader(), quant_format=quantization.QuantFormat.QDQ,
            op_types_to_quantize=list(op_types), per_channel=per_channel,
            activation_type=quantization.QuantType.QUInt8, weight_type=quantization.QuantType.QInt8,
            calibrate_method=quantization.CalibrationMethod.MinMax)
        result = onnx.load(str(quantized))
        _carry_metadata(model, result, {"method": "static QDQ (onnxruntime)", "weights": "int8 per-channel"
                                        if per_channel else "int8 per-tensor", "activations": "uint8",
                                        "operators": list(op_types), "calibration_crops": count})
        staged = Path(work) / "final.onnx"
        onnx.save(result, str(staged))
        os.replace(staged, output)
    return output


def _rebatch(calibration: Iterable[np.ndarray], size: int | None) -> Iterable[np.ndarray]:
    """Calibration arrays as the model's batch size (a static-batch model takes exactly ``size`` crops)."""
    pending: list[np.ndarray] = []
    for batch in calibration:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if batch.ndim != 4:
            raise PoseforgeError(f"calibration: expected [N, 3, h, w] batches, got shape {batch.shape}")
        if size is None:
            yield batch
            continue
        pending.extend(batch)
        while len(pending) >= size:
            yield np.stack(pending[:size])
            pending = pending[size:]


def _carry_metadata(source, target, quantization: dict) -> None:
    """Copy the source's metadata onto the quantized model, recording the quantization in poseforge's entry."""
    del target.metadata_props[:]
    for prop in source.metadata_props:
        value = prop.value
        if prop.key == _METADATA_KEY:
            try:
                record = json.loads(value)
            except json.JSONDecodeError:
                record = None
            if isinstance(record, dict):
                record["quantization"] = quantization
                value = json.dumps(record)
        entry = target.metadata_props.add()
        entry.key, entry.value = prop.key, value
    target.doc_string = (source.doc_string + " (int8)").strip()
