"""int8 ONNX (onnxruntime static QDQ): metadata carried over, keypoints close to fp32 on rendered people,
only the heavy operators quantized, files never overwritten; and ``poseforge bench`` end to end."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnx", reason="int8 export needs the [onnx] extra")
pytest.importorskip("onnxruntime", reason="int8 export needs the [onnx] extra")

import onnx  # noqa: E402

from poseforge.cli import main  # noqa: E402
from poseforge.data.evalsets import synthetic_eval_set  # noqa: E402
from poseforge.errors import PoseforgeError  # noqa: E402
from poseforge.evaluation.evaluator import evaluation_batches  # noqa: E402
from poseforge.export import export_onnx, read_onnx_metadata  # noqa: E402
from poseforge.export.quantize import quantize_onnx  # noqa: E402
from poseforge.models import load_model  # noqa: E402
from poseforge.runtime import PoseModel  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
RTMDET = SHARED / "peer-data" / "models" / "rtmdet-nano-person.onnx"


@pytest.fixture(scope="module")
def rtmpose_crops():
    """The trained rtmpose-t.synth and normalized crops of rendered people (calibration / test split)."""
    model = load_model("rtmpose-t.synth")
    data = synthetic_eval_set(24, seed=77, image_size=model.input_size)
    crops = torch.cat([b["image"] for b in evaluation_batches(model, data, batch_size=24)])
    return model, model.normalize(crops).numpy()


@pytest.mark.parametrize("method", ["static", "dynamic"])
def test_int8_keeps_metadata_and_keypoints(tmp_path, rtmpose_crops, method, one_thread):
    model, x = rtmpose_crops
    fp32 = export_onnx(model, tmp_path / "pose.onnx", dynamic_batch=True, with_decode=True)
    int8 = quantize_onnx(fp32, tmp_path / "pose-int8.onnx", [x[:16]] if method == "static" else None, method=method)
    meta = read_onnx_metadata(int8)
    assert meta["quantization"]["weights"] == "int8 per-channel" and meta["quantization"]["method"].startswith(method)
    assert {k: v for k, v in meta.items() if k != "quantization"} == read_onnx_metadata(fp32)
    ops = {n.op_type for n in onnx.load(str(int8)).graph.node}
    if method == "static":
        assert meta["quantization"]["calibration_crops"] == 16 and {"QuantizeLinear", "DequantizeLinear"} <= ops
        assert int8.stat().st_size < 0.5 * fp32.stat().st_size  # conv weights stored as int8: the file shrinks
    else:
        assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops  # the GAU's matrix products
        assert "ConvInteger" not in ops and "calibration_crops" not in meta["quantization"]
    a = PoseModel(fp32, num_threads=1).run(x[16:])
    b = PoseModel(int8, num_threads=1).run(x[16:])
    error = np.linalg.norm(a["keypoints"] - b["keypoints"], axis=-1)
    confident = a["scores"] > np.median(a["scores"])
    assert np.median(error[confident]) < 4.0  # px in a 192x256 crop: int8 moves confident joints little
    assert np.isfinite(b["scores"]).all()


def test_static_batch_is_calibrated_in_its_own_batches(tmp_path, rtmpose_crops, one_thread):
    model, x = rtmpose_crops
    fp32 = export_onnx(model, tmp_path / "pose-b4.onnx", batch_size=4)
    int8 = quantize_onnx(fp32, tmp_path / "pose-b4-int8.onnx", [x[:3], x[3:10]], method="static")  # 10 -> 2 x 4
    assert read_onnx_metadata(int8)["quantization"]["calibration_crops"] == 8
    assert PoseModel(int8, num_threads=1).run(x[:4])["simcc_x"].shape[0] == 4


def test_files_are_never_overwritten(tmp_path, rtmpose_crops, one_thread):
    model, x = rtmpose_crops
    fp32 = export_onnx(model, tmp_path / "pose.onnx")
    with pytest.raises(PoseforgeError, match="would replace its source"):
        quantize_onnx(fp32, fp32, [x[:1]], force=True)
    (tmp_path / "taken.onnx").write_bytes(b"user data")
    with pytest.raises(PoseforgeError, match="exists; pass --force"):
        quantize_onnx(fp32, tmp_path / "taken.onnx", [x[:1]])
    assert (tmp_path / "taken.onnx").read_bytes() == b"user data"
    with pytest.raises(PoseforgeError, match="needs calibration data"):
        quantize_onnx(fp32, tmp_path / "empty.onnx", [], method="static")
    with pytest.raises(PoseforgeError, match="unknown method"):
        quantize_onnx(fp32, tmp_path / "empty.onnx", method="fp8")
    assert not (tmp_path / "empty.onnx").exists()


@pytest.mark.skipif(not RTMDET.is_file(), reason=f"the real RTMDet-nano ONNX is not at {RTMDET}")
def test_bench_prints_and_writes_every_arm(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--detector", str(RTMDET), "--batch-sizes", "1,2", "--repeats", "1", "--frames", "3",
                 "--int8", "static", "--calibration-crops", "8", "--ap-images", "6", "--threads", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    for arms in report["pose_img_per_s"].values():
        assert set(arms) == {"eager", "ort_fp32", "ort_int8"} and min(arms.values()) > 0
    assert set(report["pose_img_per_s"]) == {"1", "2"}
    e2e = report["end_to_end"]
    assert e2e["runtime int8 fps"] > 0 and e2e["PyTorch Predictor fps"] > 0
    assert e2e["runtime fp32 people"] == pytest.approx(e2e["PyTorch Predictor people"])  # same detector, same boxes
    ap = report["synthetic_ap"]
    assert ap["ORT fp32"] == pytest.approx(ap["PyTorch"], abs=1e-6)  # the same network, exported exactly
    assert 0 <= ap["ORT int8"] <= 1
    printed = capsys.readouterr().out
    assert "ORT int8" in printed and "end to end" in printed
    assert main(["bench", "--json", str(out), "--repeats", "1"]) == 2  # an existing figures file needs --force


def test_export_command_writes_int8(tmp_path, capsys, one_thread):
    out = tmp_path / "pose-int8.onnx"
    assert main(["export", "rtmpose-t.synth", "--out", str(out), "--int8", "static", "--calibration-crops", "16",
                 "--with-decode"]) == 0
    meta = read_onnx_metadata(out)
    assert meta["quantization"]["calibration_crops"] == 16 and meta["decoded"]
    assert "int8 (static)" in capsys.readouterr().out
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # the fp32 intermediate is gone
    assert main(["export", "rtmpose-t.synth", "--out", str(out), "--int8", "dynamic"]) == 2  # exists: --force
    assert main(["export", "rtmpose-t.synth", "--out", str(out), "--int8", "dynamic", "--force"]) == 0
    assert read_onnx_metadata(out)["quantization"]["method"].startswith("dynamic")
