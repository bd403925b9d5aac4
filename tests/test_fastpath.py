"""The inference fast path (poseforge.inference.fastpath) and ``poseforge bench --vitpose``: whole models trace
with ``fullgraph=True``, the optimized forward equals the eager one, bf16 stays within bf16 rounding, CUDA
graphs pad and chunk batches (with the capture stubbed on CPU; real captures on CUDA), and the hardware
options fail in one line where the hardware or torchao is missing."""
from __future__ import annotations

import copy
import json
import sys

import pytest
import torch
from torch import nn

from poseforge.cli import main
from poseforge.errors import PoseforgeError
from poseforge.inference import fastpath
from poseforge.inference.fastpath import FastModel, optimize_for_inference, resolve_dtype
from poseforge.models import create_model

from model_helpers import randomize

CUDA = torch.cuda.is_available()
pytestmark = pytest.mark.usefixtures("one_thread")  # small kernels on the shared 2-core machine


def small_vitpose() -> nn.Module:
    """ViTPose-S widths and heads (and the classic deconvolution head), two blocks, small crops."""
    return randomize(create_model("vitpose-s", depth=2, input_size=(64, 96)))


def small_rtmpose() -> nn.Module:
    return randomize(create_model("rtmpose-t", input_size=(64, 96)))


MODELS = {"vitpose-s": small_vitpose, "rtmpose-t": small_rtmpose}


def _assert_outputs_close(a, b, rtol: float) -> None:
    """Every tensor of two head outputs within ``rtol`` of the reference's largest magnitude."""
    ta, tb = a.tensors(), b.tensors()
    assert ta.keys() == tb.keys()
    for k in tb:
        scale = tb[k].abs().max().item()
        err = (ta[k].float() - tb[k].float()).abs().max().item()
        assert err <= rtol * scale, f"{k}: max error {err:.3e} > {rtol} x {scale:.3e}"


@pytest.mark.parametrize("name", list(MODELS))
def test_whole_model_compiles_with_fullgraph_and_matches_eager(name):
    """fullgraph=True raises on any graph break: the estimator (backbone, head, normalization dtype cast) traces
    whole. The eager backend keeps the test fast; Inductor is exercised by the slow test below."""
    model = MODELS[name]()
    w, h = model.input_size
    x = torch.randn(2, 3, h, w)
    with torch.no_grad():
        reference = model(x)
    fast = optimize_for_inference(copy.deepcopy(model), "cpu", compile=True, compile_backend="eager")
    assert fast.compiled and fast.dtype == torch.float32 and fast.device.type == "cpu"
    _assert_outputs_close(fast(x), reference, 1e-5)


@pytest.mark.parametrize("name", list(MODELS))
def test_optimized_forward_equals_eager_fp32(name):
    model = MODELS[name]()
    w, h = model.input_size
    x = torch.randn(3, 3, h, w)
    with torch.no_grad():
        reference = model(x)
    fast = optimize_for_inference(copy.deepcopy(model), "cpu", "auto")
    out = fast(x)
    _assert_outputs_close(out, reference, 1e-5)
    assert all(t.dtype == torch.float32 for t in out.tensors().values())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.model.modules())  # every BatchNorm folded
    conv = next(m for m in fast.model.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not any(p.requires_grad for p in fast.model.parameters())
    with pytest.raises(PoseforgeError, match="folded"):
        fast.model.save_pretrained("unused")  # a folded model is inference-only


def test_the_original_stays_unfolded_when_a_copy_is_optimized():
    model = small_vitpose()
    optimize_for_inference(copy.deepcopy(model), "cpu")
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 2


def test_bf16_on_cpu_runs_and_stays_within_bf16_rounding():
    model = randomize(create_model("vitpose-tiny", depth=1, input_size=(48, 64)))
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        reference = model(x)
    fast = optimize_for_inference(copy.deepcopy(model), "cpu", "bf16")
    out = fast(x)
    assert fast.dtype == torch.bfloat16 and out.heatmaps.dtype == torch.bfloat16
    err = ((out.heatmaps.float() - reference.heatmaps).norm() / reference.heatmaps.norm()).item()
    assert 0 < err < 3e-2, err  # bf16 keeps 8 bits of mantissa: ~0.4% per rounding, a few roundings deep


def test_predict_decodes_crops_as_the_estimator_does():
    model = small_rtmpose()
    w, h = model.input_size
    crops = torch.randint(0, 256, (3, 3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = model.predict(crops, flip_test=False)
    got = optimize_for_inference(copy.deepcopy(model), "cpu").predict(crops)
    torch.testing.assert_close(got.keypoints, reference.keypoints, atol=1e-3, rtol=0)
    torch.testing.assert_close(got.scores, reference.scores, atol=1e-4, rtol=1e-4)
    with pytest.raises(PoseforgeError, match="expected 64x96"):
        optimize_for_inference(copy.deepcopy(model), "cpu").predict(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


def test_takes_a_weights_name():
    fast = optimize_for_inference("rtmpose-t.synth", "cpu")
    assert fast.model.config.name.startswith("rtmpose-t") and not fast.model.training
    crops = torch.randint(0, 256, (2, 3, 256, 192), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    assert fast.predict(crops).keypoints.shape == (2, 1, 17, 2)


def test_dtype_and_options_fail_in_one_line():
    cpu = torch.device("cpu")
    assert resolve_dtype("auto", cpu) == torch.float32 and resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert resolve_dtype("bf16", cpu) == torch.bfloat16 and resolve_dtype(torch.float16, cpu) == torch.float16
    model = create_model("vitpose-tiny", depth=1, input_size=(48, 64))
    with pytest.raises(PoseforgeError, match="unknown 'int8'"):
        optimize_for_inference(model, "cpu", "int8")
    with pytest.raises(PoseforgeError, match="CUDA graphs need a CUDA device, not cpu"):
        optimize_for_inference(model, "cpu", cuda_graphs=True)
    with pytest.raises(PoseforgeError, match="fixed batch sizes are for cuda_graphs"):
        optimize_for_inference(model, "cpu", batch_sizes=(8,))
    with pytest.raises(PoseforgeError, match="runs on bf16 weights"):
        optimize_for_inference(model, "cpu", "fp32", fp8=True)
    with pytest.raises(PoseforgeError, match="expected a normalized float tensor"):
        optimize_for_inference(model, "cpu")(torch.zeros(3, 64, 48))
    with pytest.raises(PoseforgeError, match="expected a poseforge estimator"):
        optimize_for_inference(nn.Linear(2, 2), "cpu")


def test_fp8_says_what_is_missing(monkeypatch):
    model = create_model("vitpose-tiny", depth=1, input_size=(48, 64))
    monkeypatch.setitem(sys.modules, "torchao.quantization", None)  # import fails: torchao is absent
    monkeypatch.setitem(sys.modules, "torchao", None)
    with pytest.raises(PoseforgeError, match=r"fp8: needs torchao \(pip install torchao\)"):
        optimize_for_inference(copy.deepcopy(model), "cpu", "bf16", fp8=True)
    fake = type(sys)("torchao.quantization")  # torchao present, but no FP8 hardware here
    monkeypatch.setitem(sys.modules, "torchao", type(sys)("torchao"))
    monkeypatch.setitem(sys.modules, "torchao.quantization", fake)
    with pytest.raises(PoseforgeError, match="FP8 matmuls need a CUDA GPU of compute capability >= 8.9"):
        optimize_for_inference(copy.deepcopy(model), "cpu", "bf16", fp8=True)


class _ReplayOnCpu:
    """A stand-in for a captured CUDA graph: replay recomputes the forward of the static input and writes it
    into the same static output tensors, as a real replay does."""

    def __init__(self, forward, static_input):
        self.forward, self.static_input = forward, static_input
        self.replays = 0

    def replay(self):
        self.replays += 1
        fresh = self.forward(self.static_input)
        for name, t in self.output.tensors().items():
            t.copy_(fresh.tensors()[name])


def test_graph_batches_pad_up_chunk_and_return_copies(monkeypatch):
    """The CUDA-graph bookkeeping, with the capture stubbed so that it runs on CPU: a smaller batch is padded
    to the nearest captured size, a larger one chunked by the largest, results are copies (not views of the
    static outputs the next replay overwrites) and equal the plain forward."""
    def capture(self, forward, pool):
        graph = _ReplayOnCpu(forward, self.input)
        graph.output = forward(self.input)
        return graph, graph.output

    monkeypatch.setattr(fastpath._CapturedBatch, "_capture", capture)
    monkeypatch.setattr(torch.cuda, "graph_pool_handle", lambda: "pool")
    model = optimize_for_inference(small_vitpose(), "cpu")
    fast = FastModel(model.model, torch.device("cpu"), torch.float32, compiled=False, cuda_graphs=True,
                     batch_sizes=(4, 2), fp8=False, channels_last=True, forward=model.model)
    assert fast.graph_batch_sizes == (2, 4)
    w, h = model.model.input_size
    x = torch.randn(11, 3, h, w)
    with torch.no_grad():
        reference = model.model(x).heatmaps
    first = fast(x[:3]).heatmaps  # padded to 4
    torch.testing.assert_close(first, reference[:3], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast(x).heatmaps, reference, atol=1e-5, rtol=1e-5)  # 4 + 4 + 3 (padded to 4)
    torch.testing.assert_close(fast(x[5:7]).heatmaps, reference[5:7], atol=1e-5, rtol=1e-5)  # exactly 2
    torch.testing.assert_close(first, reference[:3], atol=1e-5, rtol=1e-5)  # not overwritten by later replays
    assert fast._graphs[(4, 0, (3, h, w))].graph.replays == 4 and fast._graphs[(2, 0, (3, h, w))].graph.replays == 1
    lazy = FastModel(model.model, torch.device("cpu"), torch.float32, compiled=False, cuda_graphs=True,
                     batch_sizes=(), fp8=False, channels_last=True, forward=model.model)
    torch.testing.assert_close(lazy(x[:5]).heatmaps, reference[:5], atol=1e-5, rtol=1e-5)
    assert lazy.graph_batch_sizes == (5,)  # captured when first seen
    with pytest.raises(PoseforgeError, match="per-sample tasks"):
        lazy(x[:2], torch.zeros(2, dtype=torch.long))


def test_bench_vitpose_table(tmp_path, capsys):
    pytest.importorskip("transformers")
    out = tmp_path / "bench.json"
    assert main(["bench", "--vitpose", "--sizes", "tiny", "--batch-size", "1", "--repeats", "1", "--warmup", "0",
                 "--no-compile", "--device", "cpu", "--threads", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    rates = report["img_per_s"]["vitpose-tiny/1"]
    assert set(rates) == {"HF eager", "pf eager"} and min(rates.values()) > 0
    check = report["checks"]["vitpose-tiny/1"]
    assert check["max_abs_diff"]["pf eager"] <= 1e-4 * check["reference_max_abs"]  # the same weights
    printed = capsys.readouterr().out
    assert "ViTPose-TINY" in printed and "pf eager" in printed and "HF eager" in printed
    assert main(["bench", "--vitpose", "--sizes", "x", "--device", "cpu"]) == 2
    assert "unknown ViTPose size" in capsys.readouterr().err
    assert main(["bench", "--vitpose", "--fp8", "--device", "cpu", "--sizes", "tiny"]) == 2
    assert "--fp8: FP8 matmuls need a CUDA GPU" in capsys.readouterr().err


def test_bench_vitpose_without_transformers_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    out = tmp_path / "bench.json"
    assert main(["bench", "--vitpose", "--sizes", "tiny", "--batch-size", "1", "--repeats", "1", "--warmup", "0",
                 "--no-compile", "--device", "cpu", "--threads", "1", "--json", str(out)]) == 0
    assert "HF transformers VitPose: skipped (transformers is not installed" in capsys.readouterr().out
    assert set(json.loads(out.read_text())["img_per_s"]["vitpose-tiny/1"]) == {"pf eager"}


@pytest.mark.slow
def test_inductor_compiled_forward_equals_eager():
    """The real compiler (Inductor, C++ on CPU): same outputs as eager, no graph break (fullgraph=True)."""
    model = randomize(create_model("vitpose-tiny", depth=1, input_size=(48, 64)))
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        reference = model(x)
    fast = optimize_for_inference(copy.deepcopy(model), "cpu", compile=True)
    _assert_outputs_close(fast(x), reference, 1e-4)


# ------------------------------------------------------------------------------------------ CUDA only
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_cuda_graphs_and_compile_match_eager_in_bf16():
    model = small_vitpose()
    w, h = model.input_size
    x = torch.randn(9, 3, h, w, device="cuda")
    eager = optimize_for_inference(copy.deepcopy(model), "cuda")
    fast = optimize_for_inference(copy.deepcopy(model), "cuda", compile=True, cuda_graphs=True, batch_sizes=(4, 8))
    assert fast.dtype == torch.bfloat16 and fast.graph_batch_sizes == (4, 8)
    reference = eager(x)
    for n in (3, 8, 9):  # padded, exact, chunked 8 + 1 (padded to 4)
        _assert_outputs_close(fast(x[:n]), reference.map(lambda t, n=n: t[:n]), 3e-2)


@pytest.mark.skipif(not CUDA or torch.cuda.get_device_capability() < (8, 9), reason="needs an FP8 GPU (sm >= 8.9)")
def test_fp8_runs_and_stays_close():
    pytest.importorskip("torchao")
    model = small_vitpose()
    w, h = model.input_size
    x = torch.randn(16, 3, h, w, device="cuda")
    reference = optimize_for_inference(copy.deepcopy(model), "cuda", "fp32")(x).heatmaps
    out = optimize_for_inference(copy.deepcopy(model), "cuda", fp8=True)(x).heatmaps.float()
    assert ((out - reference).norm() / reference.norm()).item() < 0.1


@pytest.mark.parametrize("channels_last", [False, True])
def test_vit_token_stream_is_contiguous_whatever_the_patch_map_layout(channels_last):
    """From an NCHW patch map the tokens were a transposed view, whose layout every residual add passed on
    (and every LayerNorm copied); they are contiguous now."""
    model = create_model("vitpose-tiny", depth=2, input_size=(48, 64)).eval()
    x = torch.randn(2, 3, 64, 48)
    if channels_last:
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    seen = []

    def hook(module, args):
        seen.append(args[0].is_contiguous())

    for block in model.backbone.blocks:
        block.register_forward_pre_hook(hook)
    model.backbone.norm.register_forward_pre_hook(hook)
    with torch.no_grad():
        features = model.backbone(x)[0]
    assert seen == [True, True, True]
    assert features.is_contiguous(memory_format=torch.channels_last)  # the head's input: an NHWC view


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_vit_attention_runs_on_flash_attention_in_bf16():
    """The fused-qkv views are what FlashAttention takes as they are: restricted to the flash kernel, the
    forward runs (no 'no available kernel' error) and matches the default pick."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model = small_vitpose()
    w, h = model.input_size
    x = torch.randn(4, 3, h, w, device="cuda")
    fast = optimize_for_inference(copy.deepcopy(model), "cuda")
    reference = fast(x)
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        _assert_outputs_close(fast(x), reference, 1e-2)
