"""ONNX export (``poseforge.export.onnx``, ``poseforge export``): every model family exports, onnxruntime gives
the PyTorch model's outputs (raw and decoded in the graph), the metadata contract round-trips, and the command
refuses what it must."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from poseforge.cli import main
from poseforge.codecs import create_codec
from poseforge.errors import PoseforgeError
from poseforge.export.onnx import check_onnx_parity, export_onnx, graph_decoder, onnx_output_shapes, read_onnx_metadata
from poseforge.models import build_model, create_model, load_model
from tests import protocol_stubs  # registers the stub families (stub-bottomup, stub-dense)

onnx = pytest.importorskip("onnx", reason="ONNX export needs the [onnx] extra (onnx)")
ort = pytest.importorskip("onnxruntime", reason="ONNX export tests run the files with the [onnx] extra (onnxruntime)")

TOL = 1e-4  # max abs difference, fp32
# One torch thread (small kernels on a shared 2-core machine: no OpenMP spin-wait stalls, ~10x faster here); the
# tests export decoders alone with the TorchScript exporter, whose notices export_onnx silences itself.
pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export"),
              pytest.mark.filterwarnings("ignore:The feature will be removed")]


# ----------------------------------------------------------------------------- models
def _randomize_batchnorms(model: nn.Module, seed: int = 1) -> nn.Module:
    """Non-trivial running statistics and affine terms, so that folding them into the convolutions shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.05 + 0.1 * torch.rand(n, generator=g))  # positive: ReLUs after it stay alive
    return model.eval()


class _Peaked(nn.Module):
    """A heatmap head's final layer plus one fixed Gaussian bump per keypoint."""

    def __init__(self, layer: nn.Module, bumps: torch.Tensor) -> None:
        super().__init__()
        self.layer = layer
        self.register_buffer("bumps", bumps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x) + self.bumps


def _peaked(head: nn.Module, seed: int = 1) -> None:
    """Give a random heatmap head one clear peak per map, as a trained one has, with the network's output (gain
    10, std ~0.1) moving it: DARK / UDP's Newton step on noise-only maps is ill-conditioned (a 1e-6 relative
    change of the maps moves the PyTorch decode itself by up to ~1 px), which would hide what the test checks."""
    g = torch.Generator().manual_seed(seed)
    k = head.final_layer.out_channels
    w, h = head.output_size
    centres = torch.rand(k, 2, generator=g) * torch.tensor([w - 5.0, h - 5.0]) + 2.0
    xs, ys = torch.arange(w).float(), torch.arange(h).float()
    bumps = torch.exp(-((xs - centres[:, :1, None]) ** 2 + (ys[:, None] - centres[:, 1:, None]) ** 2) / 8.0)
    with torch.no_grad():
        head.final_layer.weight.mul_(10.0)
    head.final_layer = _Peaked(head.final_layer, bumps[None])


SMALL_VIT = {"depth": 2, "input_size": (48, 64)}


def _build(family: str) -> tuple[nn.Module, int | str]:
    """(model, task) of a family: small random-weight configs, fixed seeds."""
    torch.manual_seed(0)
    task: int | str = 0
    if family == "vitpose-udp":
        model = create_model("vitpose-tiny", **SMALL_VIT)
    elif family in ("vitpose-msra", "vitpose-dark"):
        model = create_model("vitpose-tiny", codec=family.split("-")[1], **SMALL_VIT)
    elif family == "vitpose-simple":
        model = create_model("vitpose-tiny-simple", **SMALL_VIT)
    elif family == "vitpose-simcc":  # the simcc head and codec with its decode window
        model = create_model("vitpose-tiny", head="simcc", **SMALL_VIT)
    elif family == "vitpose++":  # a task other than the first: its own expert and head
        model, task = create_model("vitpose++-tiny", **SMALL_VIT), "ap10k"
    elif family == "rtmpose":
        model = _randomize_batchnorms(create_model("rtmpose-t", input_size=(96, 128)))
    elif family == "rtmw":  # RTMW-m's parts (CSPNeXt + PAFPN + RTMW head) at CSPNeXt-t widths and a small input
        model = _randomize_batchnorms(create_model("rtmw-m", deepen_factor=0.167, widen_factor=0.25, keypoint_set="coco17",
                                                   input_size=(64, 96), hidden_dim=64, attention_dim=32))
    elif family == "bottomup":
        model = _randomize_batchnorms(build_model(protocol_stubs.bottomup_config()))
    elif family == "dense":
        model = _randomize_batchnorms(build_model(protocol_stubs.dense_config()))
    else:  # pragma: no cover
        raise KeyError(family)
    return model.eval(), task


RAW_LAYOUT = {
    "vitpose-udp": ["heatmaps"], "vitpose-msra": ["heatmaps"], "vitpose-dark": ["heatmaps"],
    "vitpose-simple": ["heatmaps"], "vitpose++": ["heatmaps"], "vitpose-simcc": ["simcc_x", "simcc_y"],
    "rtmpose": ["simcc_x", "simcc_y"], "rtmw": ["simcc_x", "simcc_y"], "bottomup": ["heatmaps", "tags"],
    "dense": ["seg", "depth"],
}
TOPDOWN_DECODED = ["vitpose-udp", "vitpose-msra", "vitpose-dark", "vitpose-simcc", "vitpose++", "rtmpose", "rtmw"]


def _inputs(model: nn.Module, n: int, seed: int) -> torch.Tensor:
    w, h = model.input_size
    return torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _run(path: Path, *inputs: torch.Tensor) -> dict[str, np.ndarray]:
    """onnxruntime (CPU) outputs by name, the inputs fed in the graph's order."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    feed = {i.name: t.numpy() for i, t in zip(session.get_inputs(), inputs)}
    return dict(zip(names, session.run(names, feed)))


def _max_diff(a: np.ndarray, b: torch.Tensor) -> float:
    return float(np.abs(a - b.float().numpy()).max())


# ----------------------------------------------------------------------------- parity with PyTorch
@pytest.mark.parametrize("family", list(RAW_LAYOUT))
def test_raw_outputs_match_pytorch(family, tmp_path):
    """Raw head outputs (BatchNorms folded in the file) equal the unfolded PyTorch model's: batch 1 fixed,
    batch 7 through a dynamic-batch export; names and shapes follow the contract (SimCC's keypoint maps dropped)."""
    model, task = _build(family)
    t = model.task_index(task)
    if family.startswith("vitpose") and model.codec.name != "simcc":  # O(1) maps, not a fresh head's ~1e-5
        _peaked(model.heads[model._head_of[t]] if model.multitask else model.head)
    fixed = export_onnx(model, tmp_path / "fixed.onnx", task=task)
    dynamic = export_onnx(model, tmp_path / "dynamic.onnx", task=task, dynamic_batch=True)
    for path, n in ((fixed, 1), (dynamic, 7)):
        x = _inputs(model, n, seed=n)
        with torch.no_grad():
            reference = model(x, t).tensors()
        got = _run(path, x)
        assert list(got) == RAW_LAYOUT[family]
        for name, value in got.items():
            assert value.shape == tuple(reference[name].shape)
            # absolute, and relative to the output's scale (so that small random-weight outputs prove something)
            diff, scale = _max_diff(value, reference[name]), float(reference[name].abs().max())
            assert diff < TOL and diff < TOL * scale, (family, name, n, diff, scale)
    assert onnx_output_shapes(dynamic)[RAW_LAYOUT[family][0]][0] == "batch"
    assert onnx_output_shapes(fixed)[RAW_LAYOUT[family][0]][0] == 1


@pytest.mark.parametrize("family", TOPDOWN_DECODED)
def test_decoded_outputs_match_the_codec(family, tmp_path):
    """With the decode in the graph: keypoints [N, K, 2] and scores [N, K] equal the codec's decode of the PyTorch
    outputs, at batch 1 and 7 of one dynamic-batch export."""
    model, task = _build(family)
    t = model.task_index(task)
    if model.codec.name != "simcc":
        _peaked(model.heads[model._head_of[t]] if model.multitask else model.head)
    path = export_onnx(model, tmp_path / "decoded.onnx", task=task, dynamic_batch=True, with_decode=True)
    assert read_onnx_metadata(path)["outputs"] == ["keypoints", "scores"]
    for n in (1, 7):
        x = _inputs(model, n, seed=10 + n)
        with torch.no_grad():
            outputs = model(x, t)
        for name in ("heatmaps", "simcc_x", "simcc_y"):  # no ties: the first-index argmax is then well defined
            if hasattr(outputs, name):
                top2 = getattr(outputs, name).flatten(2).topk(2, dim=-1).values
                assert bool((top2[..., 0] > top2[..., 1]).all())
        pred = model.codec.decode_predictions(outputs)
        got = _run(path, x)
        assert got["keypoints"].shape == (n, model.keypoint_set_of(t).num_keypoints, 2)
        assert got["keypoints"].dtype == np.float32 and got["scores"].dtype == np.float32
        assert _max_diff(got["keypoints"], pred.keypoints[:, 0]) < TOL, family
        assert _max_diff(got["scores"], pred.scores[:, 0]) < TOL, family


def _heatmaps(n: int, k: int, h: int, w: int, g: torch.Generator) -> torch.Tensor:
    """Gaussian peaks at sub-pixel spots plus noise, with the cases the decoders branch on: peaks at the
    borders, maps shifted below zero around the peak (clipped logs), all-negative maps, nearly flat maps."""
    cx, cy = torch.rand(n, k, generator=g) * (w - 1), torch.rand(n, k, generator=g) * (h - 1)
    cx[:, 0], cy[:, 1], cx[:, 2] = 0.3, h - 1.2, w - 1.6
    xs, ys = torch.arange(w).float(), torch.arange(h).float()
    maps = torch.exp(-((xs - cx[..., None, None]) ** 2 + (ys[:, None] - cy[..., None, None]) ** 2) / 8.0)
    maps = maps + 0.01 * torch.randn(n, k, h, w, generator=g)
    maps[:, 3] -= 0.5
    maps[:, 4] -= 2.0
    maps[:, 5] *= 1e-4
    return maps


def _logits(n: int, k: int, bins: int, g: torch.Generator) -> torch.Tensor:
    """SimCC logits: a bump per keypoint (some at the axis ends, where the window is cut) plus noise; keypoint 3
    entirely negative (score <= 0: decoded at -1)."""
    centre = torch.rand(n, k, 1, generator=g) * bins
    centre[:, 0], centre[:, 1] = 0.5, bins - 1.5
    logits = 2.0 * torch.exp(-((torch.arange(bins).float() - centre) ** 2) / 50.0) + 0.1 * torch.randn(n, k, bins, generator=g)
    logits[:, 3] -= 5.0
    return logits


CODECS = {
    "msra": {"name": "msra", "input_size": (48, 64), "heatmap_size": (12, 16)},
    "dark": {"name": "dark", "input_size": (48, 64), "heatmap_size": (12, 16)},
    "udp": {"name": "udp", "input_size": (48, 64), "heatmap_size": (12, 16)},
    "simcc": {"name": "simcc", "input_size": (48, 64), "sigma": [4.9, 5.66], "split_ratio": 2.0, "normalize": False},
    "simcc-window": {"name": "simcc", "input_size": (48, 64), "sigma": [4.9, 5.66], "split_ratio": 2.0,
                     "normalize": False, "decode_window": 6.0},
}


@pytest.mark.parametrize("name", list(CODECS))
def test_every_codec_decodes_in_the_graph_as_in_torch(name, tmp_path, monkeypatch):
    """Each codec's graph decoder, eager and as ONNX (traced at batch 2, run at 7), equals ``codec.decode``,
    including the DARK / UDP maps that need the exact rescale (a branch the torch decoder takes per batch)."""
    from poseforge.codecs import heatmap

    codec = create_codec(**CODECS[name])
    decoder = graph_decoder(codec).eval()
    g = torch.Generator().manual_seed(3)
    if codec.name == "simcc":
        make = lambda n: (_logits(n, 6, codec.num_bins[0], g), _logits(n, 6, codec.num_bins[1], g))
        names = ["simcc_x", "simcc_y"]
    else:
        make = lambda n: (_heatmaps(n, 6, 16, 12, g),)
        names = ["heatmaps"]
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(decoder, make(2), str(path), dynamo=False, input_names=names, output_names=["keypoints", "scores"],
                      dynamic_axes={n: {0: "batch"} for n in [*names, "keypoints", "scores"]})
    # The torch decoder blurs whole maps only on its exact-rescale branch: count that it was taken.
    exact_branch = []
    blur = heatmap.blur_heatmaps
    monkeypatch.setattr(heatmap, "blur_heatmaps", lambda *a: exact_branch.append(True) or blur(*a))
    inputs = make(7)
    keypoints, scores = codec.decode(inputs if codec.name == "simcc" else inputs[0])
    eager = decoder(*inputs)
    got = _run(path, *inputs)
    assert (eager[0] - keypoints).abs().max() < TOL and torch.equal(eager[1], scores)
    assert _max_diff(got["keypoints"], keypoints) < TOL and _max_diff(got["scores"], scores) < TOL
    assert bool((keypoints < 0).any()) and bool((keypoints > 0).any())  # the -1 rule and real positions
    assert exact_branch == ([True] if name in ("dark", "udp") else [])


def test_trained_models_export_with_their_batchnorms_folded(tmp_path):
    """rtmpose-t.synth (trained BatchNorm statistics, folded in the file: no BatchNormalization node left) decodes
    in the graph as in PyTorch (the bundled model: test_cli_exports_the_bundled_model)."""
    rtm = load_model("rtmpose-t.synth")
    path = export_onnx(rtm, tmp_path / "rtm.onnx", dynamic_batch=True, with_decode=True, source="rtmpose-t.synth")
    assert "BatchNormalization" not in {node.op_type for node in onnx.load(str(path)).graph.node}
    assert any(isinstance(m, nn.BatchNorm2d) for m in rtm.modules())  # the model passed in is left as it was
    diffs = check_onnx_parity(rtm, path, batch_size=7)
    assert max(diffs.values()) < TOL, diffs


def test_the_model_passed_in_is_not_changed(tmp_path):
    model, _ = _build("rtmpose")
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export_onnx(model, tmp_path / "m.onnx")
    assert model.training and not getattr(model, "inference_only", False)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


# ----------------------------------------------------------------------------- the file format
def test_metadata_round_trips_and_the_checker_is_clean(tmp_path):
    model, _ = _build("vitpose-udp")
    path = export_onnx(model, tmp_path / "m.onnx", dynamic_batch=True, with_decode=True, source="somewhere/model")
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    meta = read_onnx_metadata(path)
    assert set(meta) == {"format", "version", "kind", "model", "task", "input_size", "mean", "std", "channel_order",
                         "layout", "decoded", "inputs", "outputs", "codec", "keypoint_set", "crop", "poseforge_version",
                         "source"}
    ks = model.keypoint_set
    assert meta["format"] == "poseforge-onnx" and meta["version"] == 1 and meta["kind"] == "topdown"
    assert meta["model"] == "vitpose-tiny" and meta["task"] is None and meta["source"] == "somewhere/model"
    assert meta["input_size"] == [48, 64] and meta["channel_order"] == "RGB" and meta["layout"] == "NCHW"
    assert meta["mean"] == pytest.approx(list(model.config.mean)) and meta["std"] == pytest.approx(list(model.config.std))
    assert meta["decoded"] is True and meta["inputs"] == ["images"] and meta["outputs"] == ["keypoints", "scores"]
    assert meta["codec"] == model.codec.config() and meta["codec"]["name"] == "udp"
    assert create_codec(**meta["codec"]) == model.codec  # the codec rebuilds from the file alone
    assert meta["keypoint_set"] == {"name": "coco17", "keypoints": list(ks.names), "flip_index": ks.flip_index.tolist(),
                                    "skeleton": [list(p) for p in ks.skeleton], "sigmas": list(ks.sigmas)}
    assert meta["crop"] == {"padding": 1.25, "udp": True}
    assert [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == ["batch", 3, 64, 48]
    assert onnx_output_shapes(path) == {"keypoints": ["batch", 17, 2], "scores": ["batch", 17]}
    assert proto.graph.doc_string and "\n" not in proto.graph.doc_string
    assert json.loads(json.dumps(meta)) == meta


def test_metadata_of_a_task_and_of_other_kinds(tmp_path):
    multi, task = _build("vitpose++")
    meta = read_onnx_metadata(export_onnx(multi, tmp_path / "m.onnx", task=task))
    assert meta["task"] == "ap10k" and meta["keypoint_set"]["name"] == "ap10k17" and meta["model"] == "vitpose++-tiny"
    assert onnx_output_shapes(tmp_path / "m.onnx")["heatmaps"] == [1, 17, 16, 12]
    dense, _ = _build("dense")
    meta = read_onnx_metadata(export_onnx(dense, tmp_path / "d.onnx"))
    assert meta["kind"] == "dense" and meta["keypoint_set"] is None and meta["outputs"] == ["seg", "depth"]
    assert meta["codec"]["name"] == "dense" and meta["crop"]["udp"] is False and meta["decoded"] is False
    bottomup, _ = _build("bottomup")
    meta = read_onnx_metadata(export_onnx(bottomup, tmp_path / "b.onnx"))
    assert meta["kind"] == "bottomup" and meta["keypoint_set"]["name"] == "coco17" and meta["outputs"] == ["heatmaps", "tags"]


def test_static_batch_and_opset(tmp_path):
    model, _ = _build("vitpose-msra")
    path = export_onnx(model, tmp_path / "m.onnx", batch_size=3, opset=14)
    proto = onnx.load(str(path))
    assert {o.domain: o.version for o in proto.opset_import}[""] == 14
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 3
    assert onnx_output_shapes(path)["heatmaps"] == [3, 17, 16, 12]
    assert _run(path, _inputs(model, 3, 0))["heatmaps"].shape == (3, 17, 16, 12)
    with pytest.raises(Exception, match="(?i)dimension|shape"):
        _run(path, _inputs(model, 2, 0))
    assert {o.domain: o.version for o in onnx.load(str(export_onnx(model, tmp_path / "n.onnx"))).opset_import}[""] == 17
    with pytest.raises(PoseforgeError) as e:  # ViT attention needs opset 14: the exporter's complaint in one line
        export_onnx(model, tmp_path / "old.onnx", opset=13)
    assert "opset 13" in _one_line(e) and "scaled_dot_product_attention" in str(e.value)
    assert not (tmp_path / "old.onnx").exists()


# ----------------------------------------------------------------------------- errors and writing
def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_errors_are_one_line(tmp_path, monkeypatch):
    bottomup, _ = _build("bottomup")
    with pytest.raises(PoseforgeError) as e:
        export_onnx(bottomup, tmp_path / "b.onnx", with_decode=True)
    assert "top-down" in _one_line(e)
    model, _ = _build("vitpose-udp")
    for kwargs, text in (({"opset": 9}, "opset"), ({"opset": 99}, "opset"), ({"batch_size": 0}, "batch_size"),
                         ({"task": "aic"}, "aic")):
        with pytest.raises(PoseforgeError) as e:
            export_onnx(model, tmp_path / "m.onnx", **kwargs)
        assert text in _one_line(e)
    with pytest.raises(PoseforgeError, match=r"\.onnx"):
        export_onnx(model, tmp_path / "model.safetensors")
    with pytest.raises(PoseforgeError, match="no 'poseforge' metadata"):
        bare = tmp_path / "bare.onnx"
        torch.onnx.export(nn.Identity(), (torch.zeros(1),), str(bare), dynamo=False)
        read_onnx_metadata(bare)
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(PoseforgeError) as e:
        export_onnx(model, tmp_path / "m.onnx")
    assert "pip install 'poseforge[onnx]'" in _one_line(e)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bare.onnx"]


def test_a_failed_export_leaves_the_old_file(tmp_path, monkeypatch):
    model, _ = _build("vitpose-udp")
    out = tmp_path / "m.onnx"
    out.write_bytes(b"old")

    def broken(*args, **kwargs):
        raise onnx.checker.ValidationError("simulated")

    monkeypatch.setattr(onnx.checker, "check_model", broken)
    with pytest.raises(PoseforgeError, match="checker"):
        export_onnx(model, out)
    assert out.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


# ----------------------------------------------------------------------------- the command
def test_cli_exports_the_bundled_model(tmp_path, capsys):
    """``poseforge export bundled``: decoded in the graph with a dynamic batch, the file predicts what
    ``model.predict(crops)`` does from the same uint8 crops normalized as the metadata says."""
    out = tmp_path / "bundled.onnx"
    assert main(["export", "bundled", "--format", "onnx", "--out", str(out), "--dynamic-batch", "--with-decode"]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "keypoints ['batch', 17, 2]" in printed and "onnxruntime vs PyTorch" in printed
    meta = read_onnx_metadata(out)
    assert meta["source"] == "bundled" and meta["model"] == "vitpose-tiny" and meta["codec"]["name"] == "simcc"
    model = load_model("bundled")
    w, h = meta["input_size"]
    crops = torch.randint(0, 256, (7, 3, h, w), generator=torch.Generator().manual_seed(5), dtype=torch.uint8)
    mean, std = torch.tensor(meta["mean"]).view(1, 3, 1, 1), torch.tensor(meta["std"]).view(1, 3, 1, 1)
    got = _run(out, (crops.float() - mean) / std)
    pred = model.predict(crops, flip_test=False)
    assert _max_diff(got["keypoints"], pred.keypoints[:, 0]) < TOL and _max_diff(got["scores"], pred.scores[:, 0]) < TOL
    # an existing file is refused (one line, exit code 2) before the model is even loaded
    assert main(["export", "bundled", "--format", "onnx", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "already exists" in err and "--force" in err


def test_cli_on_a_saved_bottomup_model(tmp_path, capsys):
    model, _ = _build("bottomup")
    folder = model.save_pretrained(tmp_path / "stub")
    out = tmp_path / "stub.onnx"
    assert main(["export", str(folder), "--out", str(out), "--with-decode"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bottomup model" in err and not out.exists()
    assert main(["export", str(folder), "--out", str(out)]) == 0
    assert main(["export", str(folder), "--out", str(out), "--force", "--opset", "14"]) == 0
    assert {o.domain: o.version for o in onnx.load(str(out)).opset_import}[""] == 14
    # the output may never be the model's own file, even a weights file named .onnx
    weights = folder / "weights.onnx"
    shutil.copy(folder / "model.safetensors", weights)
    capsys.readouterr()
    assert main(["export", str(weights), "--out", str(weights), "--force"]) == 2
    assert "model" in capsys.readouterr().err and weights.read_bytes() == (folder / "model.safetensors").read_bytes()
