"""Exports of poseforge models to other runtimes: ONNX (:func:`export_onnx`, the ``[onnx]`` extra).

    export_onnx(load_model("bundled"), "bundled.onnx", dynamic_batch=True, with_decode=True)
    read_onnx_metadata("bundled.onnx")["keypoint_set"]["name"]  # 'coco17'

Submodules are imported on first use: the exporter needs torch, tools over exported files may not.
"""
from __future__ import annotations

from typing import Any

__all__ = ["check_onnx_parity", "export_onnx", "onnx_output_shapes", "read_onnx_metadata"]

_LAZY = {name: "poseforge.export.onnx" for name in __all__}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'poseforge.export' has no attribute '{name}'")
