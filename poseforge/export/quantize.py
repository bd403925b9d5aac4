"""int8 ONNX models for CPUs: onnxruntime quantization of an exported poseforge model.

Two methods:

* ``"dynamic"`` (default): int8 weights of the matrix products (MatMul / Gemm), activations quantized on
  the fly; no calibration data. On a 2-core AVX-512 VNNI CPU this is the only scheme that was faster than
  fp32 (ViTPose-tiny 1.09-1.12x, RTMPose-t 1.02-1.03x) and it moves keypoints least (0.06 / 0.5 px);
  ``benchmarks/onnx_int8_variants.py`` compares the schemes.
* ``"static"``: QDQ with per-channel int8 weights and uint8 activations (the U8S8 kernels onnxruntime uses
  on x86) of convolutions and matrix products, activation ranges from calibration crops (real crops for
  real use); for CPUs and models where int8 convolutions pay off.

Everything after the quantized operators - the SimCC / heatmap outputs and any in-graph decode - stays
float, so argmax and sub-pixel refinement see float logits.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..errors import PoseforgeError

__all__ = ["quantize_onnx", "QUANTIZED_OPS", "DYNAMIC_OPS", "METHODS"]

QUANTIZED_OPS: tuple[str, ...] = ("Conv", "MatMul", "Gemm")  # static
DYNAMIC_OPS: tuple[str, ...] = ("MatMul", "Gemm")
METHODS = ("dynamic", "static")
_METADATA_KEY = "poseforge"


def _import_quantization():
    try:
        import onnx
        from onnxruntime import quantization
    except ImportError:
        raise PoseforgeError("int8 quantization needs onnx and onnxruntime: pip install 'poseforge[onnx]'") from None
    return onnx, quantization


def quantize_onnx(source: str | os.PathLike, output: str | os.PathLike,
                  calibration: Iterable[np.ndarray] | None = None, *, method: str = "dynamic",
                  per_channel: bool = True, op_types: Sequence[str] | None = None, force: bool = False) -> Path:
    """Write an int8 copy of the ONNX model ``source`` to ``output`` (see the module doc for the methods).

    Args:
        source: an fp32 ONNX file (e.g. from ``poseforge export``); its metadata is carried over, with a
            ``quantization`` entry added to the ``poseforge`` record.
        output: the int8 file; an existing one is replaced only with ``force`` and never the source.
        calibration: ``"static"`` only: batches of the model's input (``[N, 3, h, w]`` float32, normalized as
            the model expects); a few hundred crops like the ones it will see are enough.
        method: ``"dynamic"`` or ``"static"``.
        per_channel: per-output-channel weight scales (more accurate, same speed).
        op_types: operator types to quantize (default: the method's).
    """
    if method not in METHODS:
        raise PoseforgeError(f"quantize_onnx: unknown method {method!r}; known: {', '.join(METHODS)}")
    op_types = tuple(op_types or (DYNAMIC_OPS if method == "dynamic" else QUANTIZED_OPS))
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
    batches = list(_rebatch(calibration, fixed)) if method == "static" and calibration is not None else []
    if method == "static" and not batches:
        raise PoseforgeError("quantize_onnx: static quantization needs calibration data")
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
        quiet = logging.root.manager.disable
        logging.disable(logging.WARNING)  # the quantizer logs a line per tensor it leaves alone
        try:
            _quantize(quantization, method, prepared, quantized, op_types, per_channel, Reader())
        finally:
            logging.disable(quiet)
        if method == "dynamic":
            record = {"method": "dynamic (onnxruntime)", "activations": "uint8, ranges per call"}
        else:
            record = {"method": "static QDQ (onnxruntime)", "activations": "uint8", "calibration_crops": count}
        result = onnx.load(str(quantized))
        _carry_metadata(model, result, {**record, "weights": "int8 per-channel" if per_channel else "int8 per-tensor",
                                        "operators": list(op_types)})
        staged = Path(work) / "final.onnx"
        onnx.save(result, str(staged))
        os.replace(staged, output)
    return output


def _quantize(quantization, method: str, source: Path, output: Path, op_types: Sequence[str], per_channel: bool,
              reader) -> None:
    if method == "dynamic":
        quantization.quantize_dynamic(str(source), str(output), op_types_to_quantize=list(op_types),
                                      per_channel=per_channel, weight_type=quantization.QuantType.QInt8)
    else:
        quantization.quantize_static(
            str(source), str(output), reader, quant_format=quantization.QuantFormat.QDQ,
            op_types_to_quantize=list(op_types), per_channel=per_channel,
            activation_type=quantization.QuantType.QUInt8, weight_type=quantization.QuantType.QInt8,
            calibrate_method=quantization.CalibrationMethod.MinMax)


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
