"""ONNX export of poseforge models (the legacy TorchScript exporter, ``dynamo=False``).

The file is a contract that poseforge's torch-free runtime reads:

* one input ``images``: float32 ``[N, 3, h, w]`` (``config.input_size`` is ``(w, h)``), RGB, already
  normalized as ``(pixel - mean) / std`` on the 0-255 scale; ``N`` is the symbolic dim ``"batch"``
  with ``dynamic_batch``, else fixed;
* raw outputs: top-down heatmap heads give ``heatmaps [N, K, H, W]``, SimCC-style heads (simcc, rtmcc,
  rtmw) ``simcc_x [N, K, Wx]`` and ``simcc_y [N, K, Hy]`` (their auxiliary keypoint maps are dropped);
  bottom-up and dense models one output per field of their head output, named after it;
* ``with_decode`` (top-down only): ``keypoints [N, K, 2]`` (x, y in input pixels) and ``scores [N, K]``,
  decoded in the graph exactly as the codec's ``decode`` (no flip test);
* metadata: a ``poseforge`` entry of ``metadata_props`` holding JSON (:func:`export_metadata`), read
  back with :func:`read_onnx_metadata`.

The codecs' torch decoders are written for eager speed, not for tracing: the DARK / UDP refinement
takes a data-dependent branch (an exact rescale only for the rare maps whose clip pattern depends on
it) and they check and convert their inputs in Python. :class:`HeatmapDecoder` and
:class:`SimCCDecoder` compute the same numbers with static control flow (the exact rescale for every
map, selected with ``where``) over ``[N, K, ...]`` tensors, so the batch stays symbolic (their fill
values are Python scalars: the exporter would fold ``*_like`` of a traced tensor into a constant of the
example batch's shape).

``onnx`` and ``onnxruntime`` are the ``[onnx]`` extra, imported on use.
"""
from __future__ import annotations

import copy
import json
import math
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .. import __version__
from ..codecs import MSRAHeatmap, SimCC, UDPHeatmap, gaussian_kernel1d
from ..errors import PoseforgeError
from ..models.estimators.base import Estimator
from ..outputs import HeadOutput, Heatmaps, SimCCLogits

__all__ = ["FORMAT", "FORMAT_VERSION", "INPUT_NAME", "METADATA_KEY", "MIN_OPSET", "HeatmapDecoder", "SimCCDecoder",
           "check_onnx_parity", "export_metadata", "export_onnx", "graph_decoder", "onnx_output_shapes",
           "read_onnx_metadata"]

FORMAT = "poseforge-onnx"
FORMAT_VERSION = 1
METADATA_KEY = "poseforge"
INPUT_NAME = "images"
MIN_OPSET = 13  # the oldest opset the graphs here are checked at (ViT attention needs 14: the exporter says so)
_CROP_PADDING = 1.25  # the box padding of poseforge's top-down crops (TopDownEstimator.predict)
_EPS32 = float(np.finfo(np.float32).eps)


def _require(module: str) -> ModuleType:
    """Import ``onnx`` / ``onnxruntime``, or a one-line error naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise PoseforgeError(f"ONNX export needs {module}: pip install 'poseforge[onnx]'") from None


def _max_opset() -> int:
    """The newest opset the TorchScript exporter of this torch writes."""
    try:
        from torch.onnx import _constants

        return int(getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", _constants.ONNX_MAX_OPSET))
    except (ImportError, AttributeError):  # a torch without the private table: the exporter checks itself
        return 99


# ----------------------------------------------------------------------------- in-graph decoders
def _blur_matrix(n: int, kernel: Tensor) -> Tensor:
    """``[n, n]`` matrix of a zero-padded 1-D convolution with an odd ``kernel`` (as the codecs' banded blur)."""
    r = (kernel.numel() - 1) // 2
    taps = torch.arange(n)[None, :] - torch.arange(n)[:, None] + r
    inside = (taps >= 0) & (taps < kernel.numel())
    return torch.where(inside, kernel[taps.clamp(0, kernel.numel() - 1)], torch.zeros(()))


class HeatmapDecoder(nn.Module):
    """The ``decode`` of a heatmap codec (MSRA quarter shift, DARK, UDP) as a traceable module:
    ``heatmaps [N, K, H, W] -> (keypoints [N, K, 2] input pixels, scores [N, K])``.

    Same rules as :mod:`poseforge.codecs.heatmap`: first-index argmax, maps whose maximum is <= 0 at
    (-1, -1) heatmap pixels, mmpose's border conditions. The DARK / UDP windows are read from the whole
    map blurred with two constant band matrices (the codec blurs only a patch: equal up to rounding).
    """

    def __init__(self, codec: MSRAHeatmap | UDPHeatmap) -> None:
        super().__init__()
        self.width, self.height = codec.heatmap_size
        if isinstance(codec, UDPHeatmap):
            self.mode, self.half, self.clamp = "udp", 1, (1e-3, 50.0)
        elif codec.unbiased:
            self.mode, self.half, self.clamp = "dark", 2, (1e-10, math.inf)
        else:
            self.mode, self.half, self.clamp = "quarter", 0, (0.0, 0.0)
        self.register_buffer("scale", torch.tensor(codec.scale, dtype=torch.float32), persistent=False)
        if self.mode != "quarter":
            kernel = gaussian_kernel1d(codec.blur_kernel_size)
            self.register_buffer("blur_rows", _blur_matrix(self.height, kernel), persistent=False)
            self.register_buffer("blur_cols_t", _blur_matrix(self.width, kernel).T.contiguous(), persistent=False)
            self.register_buffer("offsets", torch.arange(-self.half, self.half + 1), persistent=False)

    def forward(self, heatmaps: Tensor) -> tuple[Tensor, Tensor]:
        W = self.width
        maps = heatmaps.float()
        flat = maps.flatten(2)  # [N, K, H*W]
        peak, index = flat.max(dim=-1)
        x, y = index % W, torch.div(index, W, rounding_mode="floor")
        valid = peak > 0
        locs = torch.where(valid[..., None], torch.stack((x, y), -1).float(), -1.0)
        if self.mode == "quarter":
            offset = self._quarter_shift(flat, x, y, valid)
        else:
            offset = self._newton_step(maps, x, y, peak)
        return (locs + offset) * self.scale, peak

    def _quarter_shift(self, flat: Tensor, x: Tensor, y: Tensor, valid: Tensor) -> Tensor:
        """0.25 px towards the larger neighbour per axis (x needs 1 < x < W-1, y needs 1 < y < H-1)."""
        H, W = self.height, self.width
        xc, yc = (x + 1).clamp(max=W - 1), (y + 1).clamp(max=H - 1)
        xl, yl = (x - 1).clamp(min=0), (y - 1).clamp(min=0)
        around = flat.gather(-1, torch.stack((y * W + xc, y * W + xl, yc * W + x, yl * W + x), -1))  # [N, K, 4]
        # (mmpose's border rules, each axis also asking the other coordinate to be off column / row 0)
        use_x = valid & (x > 1) & (x < W - 1) & (y > 0)
        use_y = valid & (y > 1) & (y < H - 1) & (x > 0)
        dx = torch.where(use_x, around[..., 0] - around[..., 1], 0.0)
        dy = torch.where(use_y, around[..., 2] - around[..., 3], 0.0)
        return 0.25 * torch.stack((dx.sign(), dy.sign()), -1)

    def _newton_step(self, maps: Tensor, x: Tensor, y: Tensor, peak: Tensor) -> Tensor:
        """DARK / UDP: one Newton step on the log of the blurred map around the argmax."""
        H, W = self.height, self.width
        blurred = self.blur_rows @ maps @ self.blur_cols_t  # [N, K, H, W], zero padding
        # The window around the argmax; clamped indices are UDP's edge padding, and DARK only refines
        # maxima at least 2 px inside, where nothing is clamped.
        rows = (y[..., None] + self.offsets).clamp(0, H - 1)
        cols = (x[..., None] + self.offsets).clamp(0, W - 1)
        index = rows[..., :, None] * W + cols[..., None, :]  # [N, K, s, s]
        local = blurred.flatten(2).gather(-1, index.flatten(2)).unflatten(-1, (2 * self.half + 1,) * 2)
        if self.mode == "dark":
            refine = (peak > 0) & (x > 1) & (x < W - 2) & (y > 1) & (y < H - 2)
        else:
            refine = peak > 0
        v = self._log_modulated(local, peak, refine, blurred)
        c = self.half
        if self.mode == "dark":  # mmpose's step-2 second differences
            dx = 0.5 * (v[..., 2, 3] - v[..., 2, 1])
            dy = 0.5 * (v[..., 3, 2] - v[..., 1, 2])
            dxx = 0.25 * (v[..., 2, 4] - 2 * v[..., 2, 2] + v[..., 2, 0])
            dxy = 0.25 * (v[..., 3, 3] - v[..., 1, 3] - v[..., 3, 1] + v[..., 1, 1])
            dyy = 0.25 * (v[..., 4, 2] - 2 * v[..., 2, 2] + v[..., 0, 2])
        else:  # UDP: step-1 differences, Hessian + eps * I
            i, ix1, ix1_, iy1, iy1_ = v[..., c, c], v[..., 1, 2], v[..., 1, 0], v[..., 2, 1], v[..., 0, 1]
            dx, dy = 0.5 * (ix1 - ix1_), 0.5 * (iy1 - iy1_)
            dxx = ix1 - 2 * i + ix1_ + _EPS32
            dyy = iy1 - 2 * i + iy1_ + _EPS32
            dxy = 0.5 * (v[..., 2, 2] - ix1 - iy1 + 2 * i - ix1_ - iy1_ + v[..., 0, 0])
        det = dxx * dyy - dxy * dxy
        refine = refine & (det != 0)
        safe_det = torch.where(refine, det, 1.0)
        offset = -torch.stack((dyy * dx - dxy * dy, dxx * dy - dxy * dx), -1) / safe_det[..., None]
        return torch.where(refine[..., None] & torch.isfinite(offset), offset, 0.0)

    def _log_modulated(self, values: Tensor, peak: Tensor, refine: Tensor, blurred: Tensor) -> Tensor:
        """``log(clip(values * s, lo, hi))`` with the codec's rescale rule: ``s = peak / max(blurred map)``
        where the clip pattern depends on ``s``, else 1 (log-derivatives then do not depend on it)."""
        lo, hi = self.clamp
        lower_bound = values.amax(dim=(-2, -1))
        vmin, vmax = values.amin(dim=(-2, -1)), values.amax(dim=(-2, -1))
        s_max = peak / lower_bound
        unclipped = (vmin >= lo) & (vmax * s_max <= hi)
        all_low = vmax * s_max < lo
        all_high = vmin > hi
        exact_needed = refine & ~((lower_bound > 0) & (unclipped | all_low | all_high))
        blurred_max = blurred.amax(dim=(-2, -1))
        nonzero = blurred_max != 0
        scale = torch.where(exact_needed & nonzero, peak / torch.where(nonzero, blurred_max, 1.0), 1.0)
        scaled = values * scale[..., None, None]
        scaled = scaled.clamp(min=lo) if math.isinf(hi) else scaled.clamp(lo, hi)
        return scaled.log()


class SimCCDecoder(nn.Module):
    """The ``simcc`` codec's ``decode`` as a traceable module: ``(simcc_x [N, K, Wx], simcc_y [N, K, Hy]) ->
    (keypoints [N, K, 2] input pixels, scores [N, K])``: per-axis argmax, refined to the mean of
    ``softmax(beta x logits)`` over the ``decode_window`` when the codec has one; score = min of the axis
    maxima; keypoints at -1 / split_ratio where the score is <= 0."""

    def __init__(self, codec: SimCC) -> None:
        super().__init__()
        self.split_ratio = float(codec.split_ratio)
        self.beta = float(codec.decode_beta)
        self.window = codec.decode_window > 0
        self.num_bins = codec.num_bins
        for axis, sigma in zip("xy", codec.sigma):
            radius = max(1, math.ceil(codec.decode_window * sigma))  # as SimCC._window_mean
            self.register_buffer(f"offsets_{axis}", torch.arange(-radius, radius + 1), persistent=False)

    def forward(self, simcc_x: Tensor, simcc_y: Tensor) -> tuple[Tensor, Tensor]:
        x, y = simcc_x.float(), simcc_y.float()
        max_x, loc_x = x.max(dim=-1)
        max_y, loc_y = y.max(dim=-1)
        scores = torch.minimum(max_x, max_y)
        if self.window:
            locs = torch.stack((self._window_mean(x, loc_x, self.offsets_x, self.num_bins[0]),
                                self._window_mean(y, loc_y, self.offsets_y, self.num_bins[1])), -1)
        else:
            locs = torch.stack((loc_x, loc_y), -1).float()
        locs = torch.where((scores > 0)[..., None], locs, -1.0)
        return locs / self.split_ratio, scores

    def _window_mean(self, logits: Tensor, peak: Tensor, offsets: Tensor, n: int) -> Tensor:
        """Mean bin of ``softmax(beta x logits)`` over ``peak + offsets`` (bins past the ``n`` bins left out)."""
        bins = peak[..., None] + offsets
        inside = (bins >= 0) & (bins < n)
        bins = bins.clamp(0, n - 1)
        window = torch.where(inside, self.beta * logits.gather(-1, bins), -math.inf)
        # peak + mean offset: the same mean, without the rounding of weights times large bin indices
        return peak.float() + (torch.softmax(window, dim=-1) * offsets.float()).sum(-1)


def graph_decoder(codec: Any) -> nn.Module:
    """The traceable decoder of a top-down codec (:class:`HeatmapDecoder` or :class:`SimCCDecoder`)."""
    if isinstance(codec, (MSRAHeatmap, UDPHeatmap)):
        return HeatmapDecoder(codec)
    if isinstance(codec, SimCC):
        return SimCCDecoder(codec)
    raise PoseforgeError(f"no in-graph decoding for the '{getattr(codec, 'name', type(codec).__name__)}' codec "
                         "(export without --with-decode)")


# ----------------------------------------------------------------------------- the exported graph
def _raw_fields(model: Estimator, outputs: HeadOutput) -> tuple[str, ...]:
    """The head-output fields that become graph outputs (see the module doc)."""
    if model.kind == "topdown":
        if isinstance(outputs, Heatmaps):
            return ("heatmaps",)
        if isinstance(outputs, SimCCLogits):
            return ("simcc_x", "simcc_y")
        raise PoseforgeError(f"{model.config.name}: no ONNX layout for top-down outputs of type {type(outputs).__name__}")
    return tuple(outputs.tensors())


class _ExportGraph(nn.Module):
    """``images -> outputs`` of one task: the raw fields, or the keypoints and scores of the decoder."""

    def __init__(self, model: Estimator, task: int | None, fields: tuple[str, ...], decoder: nn.Module | None) -> None:
        super().__init__()
        self.model, self.task, self.fields, self.decoder = model, task, fields, decoder

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        outputs = self.model(images, self.task)
        tensors = tuple(getattr(outputs, f).float() for f in self.fields)
        return tuple(self.decoder(*tensors)) if self.decoder is not None else tensors


def _task_of(model: Estimator, task: int | str | None) -> tuple[int, str | None]:
    """(task index, task name for multi-task models else None); an unknown task is a one-line error."""
    index = model.task_index(task)
    return index, (model.task_names[index] if model.num_tasks > 1 else None)


def export_metadata(model: Estimator, outputs: list[str], *, task: int | str | None = 0, decoded: bool = False,
                    source: str = "") -> dict[str, Any]:
    """The ``poseforge`` metadata entry of an exported model (see the module doc)."""
    t, task_name = _task_of(model, task)
    ks = model.keypoint_set_of(t)
    keypoint_set = None if ks is None else {
        "name": ks.name, "keypoints": list(ks.names), "flip_index": [int(i) for i in ks.flip_index],
        "skeleton": [[int(a), int(b)] for a, b in ks.skeleton], "sigmas": [float(s) for s in ks.sigmas]}
    codec = model.codec if getattr(model.config, "codec", None) else None
    return {
        "format": FORMAT, "version": FORMAT_VERSION, "kind": model.kind, "model": model.config.name, "task": task_name,
        "input_size": [int(v) for v in model.input_size], "mean": [float(v) for v in model.config.mean],
        "std": [float(v) for v in model.config.std], "channel_order": "RGB", "layout": "NCHW", "decoded": bool(decoded),
        "inputs": [INPUT_NAME], "outputs": list(outputs), "codec": None if codec is None else codec.config(),
        "keypoint_set": keypoint_set, "crop": {"padding": _CROP_PADDING, "udp": bool(getattr(codec, "udp_warp", False))},
        "poseforge_version": __version__, "source": str(source)}


def export_onnx(model: Estimator, path: str | os.PathLike, *, dynamic_batch: bool = False, batch_size: int = 1,
                opset: int = 17, with_decode: bool = False, task: int | str | None = 0, source: str = "") -> Path:
    """Write ``model`` as an ONNX file at ``path`` (``.onnx``, replaced atomically) and return the path.

    The model is copied to fp32 on the CPU with its conv + BatchNorm pairs folded (the model passed in is
    left as it was), traced for one ``task`` (multi-task models: by index or name) with the batch
    ``batch_size`` or, with ``dynamic_batch``, the symbolic ``"batch"``; ``with_decode`` (top-down models)
    puts the codec's decoding in the graph. The written model passes ``onnx.checker.check_model``.
    ``source`` (what the model was loaded from) goes into the metadata.
    """
    onnx = _require("onnx")
    path = Path(path)
    if path.suffix != ".onnx":
        raise PoseforgeError(f"{path}: the output of an ONNX export must end in .onnx")
    if path.is_dir():
        raise PoseforgeError(f"{path}: is a directory")
    top = _max_opset()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= top:
        raise PoseforgeError(f"opset must be an integer in {MIN_OPSET}..{top}, got {opset!r}")
    if not dynamic_batch and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise PoseforgeError(f"batch_size must be a positive integer, got {batch_size!r}")
    if with_decode and model.kind != "topdown":
        raise PoseforgeError(f"{model.config.name} is a {model.kind} model: decoding in the graph (--with-decode) is "
                             f"for top-down models; export its raw outputs")
    t, _ = _task_of(model, task)

    # A private fp32 CPU copy: folding BatchNorms makes a model inference-only, the caller's stays as it was.
    with torch.no_grad():
        export_model = copy.deepcopy(model).to("cpu", torch.float32).prepare_for_inference(channels_last=False,
                                                                                           fuse_batchnorm=True)
    w, h = model.input_size
    # Trace with two samples when the batch is symbolic: a batch of one invites size-1 special cases.
    n = 2 if dynamic_batch else batch_size
    example = torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        raw = export_model(example, t)
    fields = _raw_fields(export_model, raw)
    decoder = graph_decoder(export_model.codec) if with_decode else None
    graph = _ExportGraph(export_model, t if model.num_tasks > 1 else None, fields, decoder).eval()
    outputs = ["keypoints", "scores"] if with_decode else list(fields)
    k = int(getattr(raw, fields[0]).shape[1])
    shapes = [[k, 2], [k]] if with_decode else [list(getattr(raw, f).shape[1:]) for f in fields]
    axes = {name: {0: "batch"} for name in [INPUT_NAME, *outputs]} if dynamic_batch else None
    metadata = export_metadata(model, outputs, task=t, decoded=with_decode, source=source)

    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        traced = staging / path.name
        with warnings.catch_warnings(), torch.no_grad():
            # The deprecation notice of the TorchScript exporter (chosen on purpose: onnxscript is not needed)
            # and tracer notes on shape checks of the fixed input size are not news to the user.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            try:
                torch.onnx.export(graph, (example,), str(traced), dynamo=False, opset_version=opset,
                                  input_names=[INPUT_NAME], output_names=outputs, dynamic_axes=axes,
                                  do_constant_folding=True)
            except torch.onnx.errors.OnnxExporterError as e:  # e.g. an operator newer than the opset asked for
                raise PoseforgeError(f"{model.config.name}: ONNX export at opset {opset} failed: "
                                     f"{str(e).strip().splitlines()[0]}") from None
        external = any(p.name != traced.name for p in staging.iterdir())  # > 2 GB: the exporter spilled tensors
        proto = onnx.load(str(traced))
        # The tracer names dims it cannot follow through gathers (``Divkeypoints_dim_1``): state them all.
        for output, shape in zip(proto.graph.output, shapes):
            dims = output.type.tensor_type.shape.dim
            del dims[:]
            first = dims.add()
            if dynamic_batch:
                first.dim_param = "batch"
            else:
                first.dim_value = n
            for size in shape:
                dims.add().dim_value = int(size)
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
        task_text = f", task {metadata['task']}" if metadata["task"] else ""
        proto.graph.doc_string = (f"poseforge {model.config.name} ({model.kind}{task_text}, {w}x{h} input): "
                                  f"{'decoded keypoints and scores' if with_decode else ', '.join(outputs)}")
        final = staging / f"final-{path.name}"
        data_name = f"{path.name}.data"
        if external:
            onnx.save_model(proto, str(final), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=data_name)
        else:
            onnx.save_model(proto, str(final))
        try:  # by path: works for models past protobuf's 2 GB as well; full_check adds strict shape inference
            onnx.checker.check_model(str(final), full_check=True)
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
            raise PoseforgeError(f"{path}: the exported model fails the ONNX checker: {str(e).splitlines()[0]}") from None
        if external:  # the data first: a reader never sees the model without its tensors
            os.replace(staging / data_name, path.parent / data_name)
        os.replace(final, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


# ----------------------------------------------------------------------------- reading back
def _load_proto(path: str | os.PathLike) -> Any:
    onnx = _require("onnx")
    path = Path(path)
    if not path.is_file():
        raise PoseforgeError(f"{path}: file not found")
    from google.protobuf.message import DecodeError  # protobuf comes with onnx

    try:
        return onnx.load(str(path), load_external_data=False)
    except (DecodeError, OSError, ValueError) as e:
        raise PoseforgeError(f"{path}: not a readable ONNX file ({type(e).__name__})") from None


def read_onnx_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The ``poseforge`` metadata of an exported ONNX file (one-line error if it has none)."""
    proto = _load_proto(path)
    for entry in proto.metadata_props:
        if entry.key == METADATA_KEY:
            try:
                data = json.loads(entry.value)
            except json.JSONDecodeError as e:
                raise PoseforgeError(f"{path}: corrupt poseforge metadata ({e})") from None
            if not isinstance(data, dict) or data.get("format") != FORMAT:
                raise PoseforgeError(f"{path}: the '{METADATA_KEY}' metadata is not {FORMAT}")
            return data
    raise PoseforgeError(f"{path}: not a poseforge ONNX export (no '{METADATA_KEY}' metadata)")


def onnx_output_shapes(path: str | os.PathLike) -> dict[str, list[int | str]]:
    """Each graph output's shape (ints, or the name of a symbolic dim such as ``"batch"``)."""
    proto = _load_proto(path)
    return {o.name: [d.dim_param if d.dim_param else int(d.dim_value) for d in o.type.tensor_type.shape.dim]
            for o in proto.graph.output}


def check_onnx_parity(model: Estimator, path: str | os.PathLike, *, batch_size: int | None = None,
                      seed: int = 0) -> dict[str, float]:
    """Max absolute difference of each output of an exported file (onnxruntime, CPU) from ``model`` in PyTorch
    on the same random normalized batch: raw head outputs, or the codec's decoded keypoints and scores.

    ``batch_size`` defaults to the file's fixed batch (2 for a symbolic one); the task is the file's.
    """
    ort = _require("onnxruntime")
    meta = read_onnx_metadata(path)
    fixed = onnx_output_shapes(path)[meta["outputs"][0]][0]
    n = batch_size or (fixed if isinstance(fixed, int) and fixed > 0 else 2)
    w, h = meta["input_size"]
    x = torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(seed))
    task = meta["task"] if meta["task"] is not None else 0
    with torch.no_grad():
        outputs = model.infer(x.to(model.device), flip_test=False, task=model.task_index(task))
        if meta["decoded"]:
            pred = model.codec.decode_predictions(outputs)
            reference = {"keypoints": pred.keypoints[:, 0], "scores": pred.scores[:, 0]}
        else:
            reference = outputs.tensors()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(meta["outputs"], {INPUT_NAME: x.numpy()})
    return {name: float(np.abs(value - reference[name].float().cpu().numpy()).max(initial=0.0))
            for name, value in zip(meta["outputs"], got)}
