"""The inference fast path: one call turns an estimator into its fastest forward on a device.

>>> fast = optimize_for_inference(create_model("vitpose-b"), "cuda", compile=True, cuda_graphs=True,
...                               batch_sizes=(256,))
>>> heatmaps = fast(normalized_crops).heatmaps      # [B, 17, 64, 48], bf16 on CUDA
>>> predictions = fast.predict(uint8_crops)         # decoded keypoints of person crops

What :func:`optimize_for_inference` does, each step optional where it changes numbers or needs hardware:

* **eval, inference mode, device**: the model moves to ``device`` (``"auto"``: CUDA when there is one);
  every call runs under ``torch.inference_mode``.
* **pure low-precision weights** (``dtype``): ``"auto"`` is bf16 on CUDA (tensor cores; no autocast casts
  per call) and fp32 on CPU (CPUs without bf16 units run bf16 many times slower). Input normalization
  buffers stay fp32.
* **BatchNorm folding** (``fold_batchnorm``): every convolution or transposed convolution followed by a
  BatchNorm (the ViTPose deconvolution head, CSPNeXt's conv modules, the ViT conv stem) becomes one
  convolution with a bias: one pass over the largest activations of the model less. The model is then
  inference-only (``save_pretrained`` refuses it).
* **channels_last** (``channels_last``): NHWC convolution weights and inputs, the layout cuDNN and
  oneDNN convolve fastest; the ViT already hands its token grid to the head as a channels-last view.
* **torch.compile** (``compile``) with ``fullgraph=True``: a graph break is an error, not a silent slow
  path (the ViT and CSPNeXt families trace whole; ``tests/test_fastpath.py`` keeps it so).
* **CUDA graphs** (``cuda_graphs``, CUDA only): one graph per fixed batch size (``batch_sizes`` captured
  up front, else each new size when first seen), replayed from a static input buffer; a smaller batch
  is padded up to the nearest captured size, a larger one runs in chunks of the largest. Replaying
  removes the per-kernel launch cost, which dominates small batches.
* **FP8 matmuls** (``fp8``, needs ``torchao`` and a GPU of compute capability >= 8.9 such as an H100):
  torchao's dynamic float8 (e4m3, per-row scales) inference quantization of the transformer's linear
  layers. It changes the outputs; ``poseforge bench --vitpose --fp8`` reports by how much.

The ViT's attention is already the fast kind (one fused ``qkv`` projection, then
``scaled_dot_product_attention``, which picks FlashAttention or the memory-efficient kernel on CUDA).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..device import resolve_device
from ..errors import PoseforgeError
from ..outputs import HeadOutput, Predictions

__all__ = ["FastModel", "optimize_for_inference", "resolve_dtype", "DTYPES"]

DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
FP8_MIN_CAPABILITY = (8, 9)  # Ada / Hopper: the first GPUs with FP8 tensor cores
_GRAPH_WARMUP = 3  # eager calls on a side stream before a capture (cuBLAS / cuDNN / Triton lazy setup)


def resolve_dtype(dtype: "str | torch.dtype", device: torch.device) -> torch.dtype:
    """``"auto"`` -> bf16 on CUDA, fp32 elsewhere; ``"bf16"`` / ``"fp16"`` / ``"fp32"`` or a torch dtype as given."""
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise PoseforgeError(f"dtype: expected a floating-point dtype, got {dtype}")
        return dtype
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise PoseforgeError(f"dtype: unknown '{dtype}'; known: auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def _concat(outputs: Sequence[HeadOutput]) -> HeadOutput:
    """Head outputs of consecutive chunks of one batch as one."""
    if len(outputs) == 1:
        return outputs[0]
    fields = outputs[0].tensors()
    return dataclasses.replace(outputs[0], **{k: torch.cat([o.tensors()[k] for o in outputs]) for k in fields})  # type: ignore[type-var]


class _CapturedBatch:
    """One CUDA graph of ``forward`` at a fixed input shape: a static input buffer and the static outputs it
    writes. ``__call__`` copies a batch of at most that size in (rows past it keep stale, finite data: every
    sample of an eval-mode model is computed independently of the others), replays, and returns copies of
    the first rows: the next replay of any graph in the shared pool may reuse the static outputs' memory."""

    def __init__(self, forward: Callable[[torch.Tensor], HeadOutput], example: torch.Tensor, pool: Any) -> None:
        self.size = int(example.shape[0])
        self.input = example.clone()
        self.graph, self.output = self._capture(forward, pool)

    def _capture(self, forward: Callable[[torch.Tensor], HeadOutput], pool: Any) -> tuple[Any, HeadOutput]:
        """Warm up on a side stream (lazy cuBLAS / cuDNN / Triton setup must not happen during capture), then
        record one forward of the static input."""
        device = self.input.device
        side = torch.cuda.Stream(device=device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(_GRAPH_WARMUP):
                forward(self.input)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool):
            output = forward(self.input)
        return graph, output

    def __call__(self, x: torch.Tensor) -> HeadOutput:
        n = x.shape[0]
        self.input[:n].copy_(x)
        self.graph.replay()
        return self.output.map(lambda t: t[:n].clone())


class FastModel:
    """An estimator prepared by :func:`optimize_for_inference`: ``fast(images, task=None) -> HeadOutput`` on
    normalized crops / images ``[B, 3, H, W]`` (any device and float dtype: moved and cast here), in the
    fast path's dtype; :meth:`predict` decodes person crops.

    Attributes:
        model: the prepared estimator (eval mode, on ``device``, weights in ``dtype``).
        forward: what runs a batch (the compiled model when ``compiled``, else the model).
    """

    def __init__(self, model: nn.Module, device: torch.device, dtype: torch.dtype, *, compiled: bool,
                 cuda_graphs: bool, batch_sizes: Sequence[int], fp8: bool, channels_last: bool,
                 forward: Callable[..., HeadOutput]) -> None:
        self.model = model
        self.device = device
        self.dtype = dtype
        self.compiled = compiled
        self.cuda_graphs = cuda_graphs
        self.fp8 = fp8
        self.channels_last = channels_last
        self.forward = forward
        self._graphs: dict[tuple[int, Any, tuple[int, ...]], _CapturedBatch] = {}
        self._pool: Any = None  # one memory pool for all graphs, made at the first capture
        self._fixed_sizes = tuple(sorted({int(b) for b in batch_sizes}))
        if cuda_graphs and self._fixed_sizes:
            w, h = getattr(model, "input_size", (None, None))
            if w is None:
                raise PoseforgeError("batch_sizes: the model has no input_size to capture CUDA graphs for; "
                                     "leave batch_sizes empty (graphs are captured when each size is first seen)")
            example = torch.zeros(1, len(model.config.mean), h, w)
            with torch.inference_mode():
                for size in reversed(self._fixed_sizes):  # largest first: smaller graphs reuse its pool memory
                    self._graph_for(self._prepare(example.expand(size, -1, -1, -1)), 0)

    def __repr__(self) -> str:
        name = getattr(getattr(self.model, "config", None), "name", type(self.model).__name__)
        return (f"FastModel({name}, device={self.device}, dtype={str(self.dtype).replace('torch.', '')}, "
                f"compiled={self.compiled}, cuda_graphs={self.cuda_graphs}, fp8={self.fp8})")

    @property
    def graph_batch_sizes(self) -> tuple[int, ...]:
        """Batch sizes with a captured CUDA graph."""
        return tuple(sorted({key[0] for key in self._graphs}))

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            raise PoseforgeError(f"images: expected a normalized float tensor [B, C, H, W], got "
                                 f"{list(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}")
        if not images.is_floating_point():
            raise PoseforgeError(f"images: expected normalized float pixels, got {images.dtype} (see predict for uint8 crops)")
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        return images.to(self.device, self.dtype, non_blocking=True, memory_format=memory_format)

    def _graph_for(self, x: torch.Tensor, task: Any) -> _CapturedBatch:
        key = (int(x.shape[0]), task, tuple(x.shape[1:]))
        graph = self._graphs.get(key)
        if graph is None:
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
            graph = self._graphs[key] = _CapturedBatch(lambda t: self.forward(t, task), x, self._pool)
        return graph

    def _run_graphs(self, x: torch.Tensor, task: Any) -> HeadOutput:
        if isinstance(task, torch.Tensor):
            raise PoseforgeError("cuda_graphs: per-sample tasks regroup the batch on the host; pass one task "
                                 "(int or name) or use cuda_graphs=False")
        n = x.shape[0]
        sizes = self._fixed_sizes
        if not sizes:  # capture each batch size when first seen
            return self._graph_for(x, task)(x)
        largest = sizes[-1]
        outputs = []
        for start in range(0, n, largest):
            chunk = x[start:start + largest]
            size = next(s for s in sizes if s >= chunk.shape[0])  # pad up to the nearest captured size
            graph = self._graphs.get((size, task, tuple(chunk.shape[1:])))
            if graph is None:  # another task or input shape than captured up front: capture it now
                graph = self._graph_for(torch.cat([chunk, chunk.new_zeros(size - chunk.shape[0], *chunk.shape[1:])]), task)
            outputs.append(graph(chunk))
        return _concat(outputs)

    def __call__(self, images: torch.Tensor, task: Any = None) -> HeadOutput:
        """Head outputs of normalized ``images [B, C, H, W]`` (in the fast path's dtype; a CUDA-graph result
        is a copy, safe to keep across calls)."""
        if not isinstance(task, torch.Tensor):
            task = self.model.task_index(task)  # one key per task for graphs and compile guards (None is 0)
        with torch.inference_mode():
            x = self._prepare(images)
            if self.cuda_graphs:
                return self._run_graphs(x, task)
            return self.forward(x, task)

    def predict(self, crops: Any, task: Any = None) -> Predictions:
        """Keypoints of uint8 / 0-255 RGB person crops ``[B, 3, h, w]`` at the model's input size, in crop pixels
        (top-down models; no flip test: whole frames with boxes go through the estimator's ``predict``)."""
        if not getattr(self.model, "needs_boxes", False):
            raise PoseforgeError(f"{self.model.config.name}: FastModel.predict takes person crops of a top-down "
                                 f"model (this one is {getattr(self.model, 'kind', '?')}); call it on normalized images")
        with torch.inference_mode():
            x = self.model.normalize(crops)
            w, h = self.model.input_size
            if tuple(x.shape[-2:]) != (h, w):
                raise PoseforgeError(f"crops: expected {w}x{h} (width x height) for {self.model.config.name}, "
                                     f"got {x.shape[-1]}x{x.shape[-2]}")
            t = self.model.task_index(task)
            outputs = self.model.check_finite(self(x, t).float())
            return self.model.codec.decode_predictions(outputs)


def _apply_fp8(model: nn.Module, device: torch.device) -> int:
    """torchao dynamic float8 quantization of the linear layers whose sizes the FP8 GEMMs take (multiples of
    16); returns how many. One-line errors without torchao or an FP8-capable GPU."""
    try:
        import torchao.quantization as tq
    except ImportError:
        raise PoseforgeError("fp8: needs torchao (pip install torchao), which is not installed") from None
    if device.type != "cuda":
        raise PoseforgeError(f"fp8: FP8 matmuls need a CUDA GPU of compute capability >= 8.9 (H100, L4, RTX 40xx), "
                             f"not {device.type}")
    capability = torch.cuda.get_device_capability(device)
    if capability < FP8_MIN_CAPABILITY:
        raise PoseforgeError(f"fp8: {torch.cuda.get_device_name(device)} (compute capability "
                             f"{capability[0]}.{capability[1]}) has no FP8 tensor cores; needs >= 8.9")
    config_class = getattr(tq, "Float8DynamicActivationFloat8WeightConfig", None)
    config = (config_class(granularity=tq.PerRow()) if config_class is not None  # torchao >= 0.10
              else tq.float8_dynamic_activation_float8_weight(granularity=tq.PerRow()))

    def eligible(module: nn.Module, name: str) -> bool:
        return isinstance(module, nn.Linear) and module.in_features % 16 == 0 and module.out_features % 16 == 0

    count = sum(eligible(m, n) for n, m in model.named_modules())
    if count == 0:
        raise PoseforgeError("fp8: the model has no linear layer that FP8 GEMMs take (sizes multiples of 16)")
    tq.quantize_(model, config, filter_fn=eligible)
    return count


def optimize_for_inference(model: "nn.Module | str", device: "str | torch.device | None" = "auto",
                           dtype: "str | torch.dtype" = "auto", *, compile: bool = False, cuda_graphs: bool = False,
                           batch_sizes: Sequence[int] = (), fp8: bool = False, channels_last: bool = True,
                           fold_batchnorm: bool = True, compile_mode: str | None = None,
                           compile_backend: str = "inductor") -> FastModel:
    """The fastest forward of ``model`` on ``device`` (see the module doc for each step).

    The estimator is prepared **in place** (moved, cast, BatchNorms folded, possibly quantized): pass a copy
    (``copy.deepcopy``) to keep the original trainable and saveable.

    Args:
        model: a poseforge estimator, or a weights name / model folder (``load_model``).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ...
        dtype: ``"auto"`` (bf16 on CUDA, fp32 elsewhere), ``"bf16"``, ``"fp16"``, ``"fp32"`` or a torch dtype.
        compile: ``torch.compile(fullgraph=True)`` (static shapes with ``cuda_graphs``).
        cuda_graphs: replay CUDA graphs per batch size (CUDA only: elsewhere a one-line error).
        batch_sizes: sizes to capture up front (smaller batches are padded up to the nearest, larger ones
            chunked); empty: capture each batch size when it is first seen.
        fp8: torchao float8 matmuls in the linear layers (CUDA, compute capability >= 8.9).
        channels_last: NHWC convolution weights and inputs.
        fold_batchnorm: fold BatchNorms into the convolutions before them.
        compile_mode, compile_backend: passed to ``torch.compile`` (``mode``, ``backend``).
    Raises:
        PoseforgeError: an unknown dtype, ``cuda_graphs`` or ``fp8`` without the hardware, fp8 without
            torchao, or bad batch sizes (one line each).
    """
    device = resolve_device(device)
    if isinstance(model, str):
        from ..models import load_model

        model = load_model(model)
    if not isinstance(model, nn.Module) or not hasattr(model, "prepare_for_inference"):
        raise PoseforgeError(f"optimize_for_inference: expected a poseforge estimator or weights name, got "
                             f"{type(model).__name__}")
    torch_dtype = resolve_dtype(dtype, device)
    if cuda_graphs and device.type != "cuda":
        raise PoseforgeError(f"cuda_graphs: CUDA graphs need a CUDA device, not {device}; pass cuda_graphs=False")
    sizes = tuple(int(b) for b in batch_sizes)
    if any(b < 1 for b in sizes):
        raise PoseforgeError(f"batch_sizes: expected positive sizes, got {list(batch_sizes)}")
    if sizes and not cuda_graphs:
        raise PoseforgeError("batch_sizes: fixed batch sizes are for cuda_graphs=True")
    if fp8 and torch_dtype != torch.bfloat16:
        raise PoseforgeError(f"fp8: the FP8 path runs on bf16 weights, not {str(torch_dtype).replace('torch.', '')} "
                             "(use dtype='bf16' or 'auto' on CUDA)")

    model.to(device).eval()
    # BatchNorms are folded (fold_batchnorms: every conv / deconv + BN pair) before the dtype cast: a bf16 fold
    # would round twice; a folded model is marked inference-only (save_pretrained refuses it).
    model.prepare_for_inference(dtype=torch_dtype, channels_last=False, fuse_batchnorm=fold_batchnorm)
    if channels_last:  # 4-D tensors only: convolution weights (the ViT's linear layers are unaffected)
        model.to(memory_format=torch.channels_last)
    for p in model.parameters():
        p.requires_grad_(False)
    if fp8:
        _apply_fp8(model, device)
    forward: Callable[..., HeadOutput] = model
    if compile:
        # Static shapes when graphs fix the batch sizes: kernels specialized to each captured shape.
        forward = torch.compile(model, fullgraph=True, dynamic=False if cuda_graphs else None, mode=compile_mode,
                                backend=compile_backend)
    return FastModel(model, device, torch_dtype, compiled=compile, cuda_graphs=cuda_graphs, batch_sizes=sizes,
                     fp8=fp8, channels_last=channels_last, forward=forward)
