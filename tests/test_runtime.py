"""poseforge.runtime: exported models run with onnxruntime + numpy + OpenCV, no torch.

Checked against the PyTorch path on the same inputs: crop geometry and warps (``boxes_to_crops``, ``crop_batch``,
``crop_to_image``, the bottom-up ``ImageTransform``), the numpy decodes (the torch codecs on random maps),
whole-image top-down keypoints (``model.predict(frames, boxes)`` of the trained bundled model and of a UDP
heatmap model), the associative-embedding grouping (the stub family's codec), the RTMDet detector (the torch
``OnnxDetector`` adapter), and a child process in which importing torch fails.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import poseforge
from poseforge.errors import PoseforgeError
from poseforge.runtime import (BottomUpPipeline, PersonDetector, PoseModel, TopDownPipeline, crop_matrices,
                               crops_to_image, decode_heatmaps, decode_simcc, fit_matrix, group_associative_embedding,
                               warp_crops)
from poseforge.runtime.cli import main as rt_main
from poseforge.runtime.decode import flip_back
from tests import protocol_stubs  # registers the stub families (stub-bottomup)

pytest.importorskip("onnxruntime", reason="poseforge.runtime needs onnxruntime (the [runtime] extra)")
pytest.importorskip("onnx", reason="exporting test models needs onnx (the [onnx] extra)")

from poseforge.export.onnx import export_onnx  # noqa: E402  (needs onnx)

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one intra-op thread on the shared 2-core machine


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def clip():
    """Three frames of two synthetic people crossing, with their exact boxes (RGB frames)."""
    from poseforge.inference.synthetic_video import crossing_clip

    return crossing_clip(num_frames=3)


@pytest.fixture(scope="module")
def bundled():
    """The bundled (trained) ViTPose-tiny with a SimCC head."""
    return poseforge.load_model("bundled").eval()


@pytest.fixture(scope="module")
def exports(tmp_path_factory, bundled):
    """The bundled model exported with raw outputs (symbolic batch) and decoded in the graph (static batch 1)."""
    folder = tmp_path_factory.mktemp("exports")
    return {"raw": export_onnx(bundled, folder / "pose-raw.onnx", dynamic_batch=True),
            "decoded": export_onnx(bundled, folder / "pose-decoded.onnx", batch_size=1, with_decode=True)}


def _torch_predict(model, frame_rgb: np.ndarray, boxes: np.ndarray, flip_test: bool):
    pred = model.predict([torch.from_numpy(frame_rgb).permute(2, 0, 1)], torch.from_numpy(boxes), flip_test=flip_test)
    return pred.keypoints[0].numpy(), pred.scores[0].numpy()


# ---------------------------------------------------------------------------------------------- (c) geometry, decodes
def test_crop_geometry_and_warp_equal_the_torch_path():
    from poseforge.data.image_transform import ImageTransform
    from poseforge.data.transforms import crop_batch, crop_to_image
    from poseforge.models.estimators.topdown import boxes_to_crops

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)  # noise: the sharpest test of sample positions
    boxes = np.array([[10.3, 20.7, 100.1, 200.9], [150, 25, 310, 235], [-20, -10, 60, 50], [300, 200, 350, 260]])
    for udp in (False, True):
        matrices, areas = crop_matrices(boxes, (48, 64), udp)
        ref_m, ref_a = boxes_to_crops(torch.from_numpy(boxes), (48, 64), udp)
        np.testing.assert_allclose(matrices, ref_m.numpy(), rtol=0, atol=1e-12)
        np.testing.assert_allclose(areas, ref_a.numpy(), rtol=1e-12)
        crops = warp_crops(image, matrices, (48, 64))
        ref = crop_batch(torch.from_numpy(image).permute(2, 0, 1), ref_m, (48, 64)).permute(0, 2, 3, 1).numpy()
        # OpenCV 5 samples where grid_sample does; what is left is grid_sample's float32 grid (~1e-2 grey levels)
        tolerance = 0.05 if int(cv2.__version__.split(".")[0]) >= 5 else 8.0  # OpenCV 4: 1/32-pixel positions
        assert np.abs(crops - ref).max() < tolerance
        points = rng.uniform(0, 64, (4, 17, 2))
        ref_points = crop_to_image(torch.from_numpy(points), ref_m).numpy()
        np.testing.assert_allclose(crops_to_image(points, matrices), ref_points, atol=1e-9)
    for width, height in ((320, 240), (100, 300), (96, 128), (1, 1)):
        np.testing.assert_allclose(fit_matrix(width, height, (96, 128)),
                                   ImageTransform((96, 128)).matrix(width, height)[0].numpy(), atol=1e-12)


def _bumpy_maps(rng: np.random.Generator, n: int, k: int, h: int, w: int) -> np.ndarray:
    """Smooth random maps with one Gaussian bump each (some centred off the map or at its border) and one
    all-negative map: every branch of the refinements."""
    noise = rng.random((n * k, h, w)).astype(np.float32)
    noise = cv2.GaussianBlur(noise.reshape(n * k * h, w), (0, 0), 1.5).reshape(n * k, h, w) * 0.3
    ys, xs = np.mgrid[0:h, 0:w]
    cx, cy = rng.uniform(-2, w + 1, n * k), rng.uniform(-2, h + 1, n * k)
    bumps = np.exp(-((xs - cx[:, None, None]) ** 2 + (ys - cy[:, None, None]) ** 2) / 8.0).astype(np.float32)
    maps = noise + bumps
    maps[0] -= 5.0
    return maps.reshape(n, k, h, w)


def test_numpy_decodes_equal_the_torch_codecs():
    from poseforge.codecs import create_codec

    rng = np.random.default_rng(0)
    flip_index = list(poseforge.get_keypoint_set("coco17").flip_index)
    x = rng.normal(size=(6, 17, 384)).astype(np.float32)
    y = rng.normal(size=(6, 17, 512)).astype(np.float32)
    x[0, 0] -= 10  # a keypoint scoring <= 0
    for window in (0.0, 6.0):
        codec = create_codec("simcc", input_size=(192, 256), sigma=(4.9, 5.66), split_ratio=2.0, decode_window=window)
        ref_k, ref_s = codec.decode((torch.from_numpy(x), torch.from_numpy(y)))
        k, s = decode_simcc(x, y, 2.0, decode_window=window, sigma=(4.9, 5.66))
        assert np.abs(k - ref_k.numpy()).max() < 1e-4 and np.array_equal(s, ref_s.numpy())
    back = flip_back({"simcc_x": x, "simcc_y": y}, flip_index, "simcc")
    ref_x, ref_y = codec.flip_back((torch.from_numpy(x), torch.from_numpy(y)), flip_index)
    assert np.array_equal(back["simcc_x"], ref_x.numpy()) and np.array_equal(back["simcc_y"], ref_y.numpy())

    maps = _bumpy_maps(rng, 6, 17, 64, 48)
    measured = {}
    for name in ("msra", "dark", "udp"):
        codec = create_codec(name, input_size=(192, 256), heatmap_size=(48, 64), sigma=2.0)
        ref_k, ref_s = codec.decode(torch.from_numpy(maps))
        k, s = decode_heatmaps(maps, name, (192, 256), sigma=2.0)
        measured[name] = np.abs(k - ref_k.numpy()).max()
        assert np.array_equal(s, ref_s.numpy()), name
        back = flip_back({"heatmaps": maps}, flip_index, name)["heatmaps"]
        assert np.array_equal(back, codec.flip_back(torch.from_numpy(maps), flip_index).numpy()), name
    # measured: msra 0, dark ~2e-5, udp ~3e-5 px
    assert measured["msra"] < 1e-4 and measured["dark"] < 1e-3 and measured["udp"] < 1e-3, measured


# ---------------------------------------------------------------------------------------------- (b) top-down
def test_topdown_keypoints_equal_torch_predict(clip, bundled, exports):
    """The trained bundled model on two overlapping people: runtime == model.predict(frames, boxes)."""
    frame, boxes = clip.frames[1], clip.boxes[1].astype(np.float64)
    pipeline = TopDownPipeline(exports["raw"])
    assert pipeline.model.meta.codec["decode_window"] == 6.0 and pipeline.model.num_keypoints == 17
    for flip_test in (False, True):
        pipeline.flip_test = flip_test
        result = pipeline(frame, boxes, rgb=True)
        ref_k, ref_s = _torch_predict(bundled, frame, boxes, flip_test)
        # measured: 7e-5 px (no flip), 6e-5 px (flip); the scores to 2e-6
        assert np.abs(result.keypoints - ref_k).max() < 1e-3, flip_test
        assert np.abs(result.scores - ref_s).max() < 1e-4
        assert np.array_equal(result.boxes, boxes) and np.array_equal(result.box_scores, np.ones(2))
    # OpenCV's BGR frames give the same people as RGB with the flag
    pipeline.flip_test = False
    rgb = pipeline(frame, boxes, rgb=True)
    bgr = pipeline(np.ascontiguousarray(frame[..., ::-1]), boxes)
    assert np.array_equal(bgr.keypoints, rgb.keypoints)
    # decoded in the graph, static batch 1: two people -> two session runs, the same keypoints
    decoded = TopDownPipeline(exports["decoded"])
    assert decoded.model.fixed_batch == 1 and decoded.model.meta.decoded
    assert np.abs(decoded(frame, boxes, rgb=True).keypoints - rgb.keypoints).max() < 1e-3
    with pytest.raises(PoseforgeError, match="raw outputs"):
        TopDownPipeline(exports["decoded"], flip_test=True)(frame, boxes, rgb=True)
    # no people, no run
    assert len(pipeline(frame, np.zeros((0, 4)))) == 0
    with pytest.raises(PoseforgeError, match="finite xyxy"):
        pipeline(frame, np.array([[10.0, 10, 10, 10]]))


def test_topdown_udp_heatmap_model_equals_torch_predict(clip, tmp_path):
    """A ViTPose heatmap head with UDP crops and UDP decoding (random weights), flip test included."""
    model = poseforge.create_model("vitpose-tiny-simple").eval()
    path = export_onnx(model, tmp_path / "udp.onnx", dynamic_batch=True)
    pipeline = TopDownPipeline(path)
    assert pipeline.model.meta.udp and pipeline.model.meta.codec["name"] == "udp"
    frame, boxes = clip.frames[0], clip.boxes[0].astype(np.float64)
    for flip_test in (False, True):
        pipeline.flip_test = flip_test
        result = pipeline(frame, boxes, rgb=True)
        ref_k, ref_s = _torch_predict(model, frame, boxes, flip_test)
        # measured: 4e-4 px, 8e-3 px with flip (random maps: the Newton step amplifies the ORT / torch difference)
        assert np.abs(result.keypoints - ref_k).max() < 0.05, flip_test
        assert np.abs(result.scores - ref_s).max() < 1e-4


def test_files_without_metadata(exports, clip, tmp_path):
    """An rtmlib-style file (input 'input', no poseforge metadata; outputs renamed too): missing facts are one
    clear error; given, the file predicts as the exported one."""
    import onnx

    proto = onnx.load(str(exports["raw"]))
    del proto.metadata_props[:]
    rename = {"images": "input", "simcc_x": "logits_x", "simcc_y": "logits_y"}
    for node in proto.graph.node:
        node.input[:] = [rename.get(n, n) for n in node.input]
        node.output[:] = [rename.get(n, n) for n in node.output]
    for value in list(proto.graph.input) + list(proto.graph.output):
        value.name = rename.get(value.name, value.name)
    bare = tmp_path / "rtmlib-style.onnx"
    onnx.save(proto, str(bare))
    with pytest.raises(PoseforgeError, match=r"no poseforge metadata.*give mean, std") as error:
        PoseModel(bare)
    assert "\n" not in str(error.value)
    mean, std = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
    plain = PoseModel(bare, mean=mean, std=std)  # input size and split ratio 2 read from the static shapes
    assert plain.input_size == (192, 256) and plain.meta.codec["split_ratio"] == 2.0 and not plain.meta.udp
    frame, boxes = clip.frames[1], clip.boxes[1].astype(np.float64)
    matrices, _ = crop_matrices(boxes, (192, 256), False)
    crops = warp_crops(frame, matrices, (192, 256))
    exported = PoseModel(exports["raw"])
    raw = exported.run(exported.normalize(crops))
    assert plain.output_names == ["logits_x", "logits_y"]
    assert np.array_equal(plain.run(plain.normalize(crops))["logits_x"], raw["simcc_x"])
    k, _ = plain.predict_crops(crops)  # no window refinement without the codec settings: plain argmax
    assert np.array_equal(k, decode_simcc(raw["simcc_x"], raw["simcc_y"], 2.0)[0])
    windowed = PoseModel(bare, mean=mean, std=std, codec={"name": "simcc", "decode_window": 6.0, "sigma": [4.9, 5.66]})
    assert np.array_equal(windowed.predict_crops(crops)[0], exported.predict_crops(crops)[0])


# ---------------------------------------------------------------------------------------------- (d) detector
def test_rtmdet_runtime_detector_equals_the_torch_adapter(peer_data, exports):
    from poseforge.data.images import load_image
    from poseforge.inference.detectors.onnx import OnnxDetector

    path = peer_data / "models" / "rtmdet-nano-person.onnx"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    runtime, adapter = PersonDetector(path), OnnxDetector(path)
    gt = json.loads((peer_data / "coco" / "test_coco.json").read_text())
    expected = {785: 1, 40083: 2, 196141: 4, 197388: 5}
    images = []
    for entry in gt["images"]:
        file = peer_data / "coco" / entry["file_name"]
        bgr = cv2.imread(str(file))
        found = runtime(bgr)
        ref = adapter(load_image(file))
        assert len(found) == expected[entry["id"]] == len(ref), entry["file_name"]
        np.testing.assert_allclose(found.boxes, ref.boxes.numpy(), atol=1e-4)  # float32 Detections
        np.testing.assert_allclose(found.scores, ref.scores.numpy(), atol=1e-6)
        images.append(bgr)
    # a batch gives the same boxes as frame by frame
    batch = runtime.detect_batch(images)
    assert all(np.array_equal(a.boxes, runtime(b).boxes) for a, b in zip(batch, images, strict=True))
    # the detector feeds the top-down pipeline: one person per box
    result = TopDownPipeline(exports["raw"], detector=runtime)(images[3])
    assert len(result) == expected[gt["images"][3]["id"]] and result.keypoints.shape[1:] == (17, 2)


# ---------------------------------------------------------------------------------------------- (f) bottom-up
def _encoded_people(codec, generator: torch.Generator, people: int):
    kp = torch.rand(1, people, 17, 2, generator=generator) * torch.tensor([88.0, 120.0]) + 4
    vis = (torch.rand(1, people, 17, generator=generator) > 0.2).float()
    return codec.encode_sample({"keypoints": kp, "visibility": vis, "valid": torch.ones(1, people, dtype=torch.bool)})


def _people(keypoints: np.ndarray, scores: np.ndarray) -> list[tuple]:
    """People as comparable tuples: keypoints scoring above 0.1, (-1, -1) for the others."""
    shown = np.where((scores > 0.1)[..., None], np.round(keypoints, 3), -1.0)
    return sorted(tuple(p.ravel().tolist()) for p in shown)


def test_grouping_equals_the_stub_codec_on_clear_maps():
    from poseforge.outputs import HeatmapsTags

    codec = protocol_stubs.StubAECodec((96, 128))
    g = torch.Generator().manual_seed(0)
    for trial in range(20):
        t = _encoded_people(codec, g, 1 + trial % 4)
        ref = codec.decode_predictions(HeatmapsTags(t["heatmaps"], t["tags"]))
        keypoints, scores, person_scores = group_associative_embedding(t["heatmaps"][0].numpy(), t["tags"][0].numpy(),
                                                                       max_people=4, tag_threshold=0.5)
        keep = (scores > 0.1).sum(-1) >= 2
        valid = ref.valid[0].numpy()
        assert _people(keypoints[keep] * 4 + 1.5, scores[keep]) == \
            _people(ref.keypoints[0].numpy()[valid], ref.scores[0].numpy()[valid]), trial
        assert np.all(np.diff(person_scores) <= 0)  # best first


class _FixedHead(torch.nn.Module):
    """Gives the same clear maps for every input (kept in the graph through a zero-weighted feature term)."""

    def __init__(self, heatmaps: torch.Tensor, tags: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("heatmaps", heatmaps)
        self.register_buffer("tags", tags)

    def forward(self, features):
        from poseforge.outputs import HeatmapsTags

        zero = features[0].mean((1, 2, 3))[:, None, None, None] * 0
        return HeatmapsTags(self.heatmaps + zero, self.tags + zero)


def test_bottomup_pipeline_equals_the_stub_model(tmp_path):
    model = poseforge.create_model("stub-bottomup").eval()
    frame = np.random.default_rng(1).integers(0, 256, (150, 200, 3), dtype=np.uint8)  # wider than the 96x128 input
    # the random-weight export: same network input as the torch path, same raw outputs
    path = export_onnx(model, tmp_path / "stub.onnx", dynamic_batch=True)
    pipeline = BottomUpPipeline(path, tag_threshold=0.5)
    assert pipeline.max_people == 4  # from the codec settings in the metadata
    x, matrix = pipeline.prepare(frame, rgb=True)
    transform = model.transform(False)
    ref_matrix = transform.matrix(200, 150)[0]
    np.testing.assert_allclose(matrix, ref_matrix.numpy(), atol=1e-12)
    from poseforge.data.transforms import crop_batch

    ref_x = model.normalize(crop_batch(torch.from_numpy(frame).permute(2, 0, 1), ref_matrix[None], (96, 128)))
    assert np.abs(x - ref_x.numpy()).max() < 1e-3
    with torch.no_grad():
        ref_out = model(ref_x)
    out = pipeline.model.run(x)
    assert np.abs(out["heatmaps"] - ref_out.heatmaps.numpy()).max() < 1e-3
    # clear maps of three people through both whole pipelines: the same people in image pixels
    t = _encoded_people(protocol_stubs.StubAECodec((96, 128)), torch.Generator().manual_seed(3), 3)
    model.head = _FixedHead(t["heatmaps"], t["tags"])
    fixed = BottomUpPipeline(export_onnx(model, tmp_path / "fixed.onnx", batch_size=1), tag_threshold=0.5)
    result = fixed(frame, rgb=True)
    pred = model.predict([torch.from_numpy(frame).permute(2, 0, 1)])
    valid = pred.valid[0].numpy()
    assert len(result) == valid.sum() == 3
    ref_people = _people(pred.keypoints[0].numpy()[valid], pred.scores[0].numpy()[valid])
    ours = _people(result.keypoints, result.scores)
    assert np.abs(np.array(ours) - np.array(ref_people)).max() < 1e-3
    assert np.allclose(result.box_scores, result.scores.mean(1))
    assert (result.boxes[:, :2] <= result.boxes[:, 2:]).all()


# ---------------------------------------------------------------------------------------------- (e) CLI
def _write_video(path: Path, frames: np.ndarray, fps: float = 5.0) -> None:
    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert writer.isOpened()
    for f in frames:
        writer.write(np.ascontiguousarray(f[..., ::-1]))
    writer.release()


def test_cli_folder_and_video(clip, exports, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(2):
        cv2.imwrite(str(folder / f"frame{i}.png"), clip.frames[i][..., ::-1])
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    assert rt_main([str(folder), "--model", str(exports["raw"]), "--out", str(out), "--threads", "1"]) == 0
    doc = json.loads((out / "predictions.json").read_text())
    assert [r["file_name"] for r in doc["images"]] == ["frame0.png", "frame1.png"]
    assert doc["keypoints"][0] == "nose" and doc["skeleton"] and doc["bbox_format"] == "xyxy"
    person = doc["images"][0]["persons"][0]  # no detector: the whole image is the box
    assert person["bbox"] == [0.0, 0.0, 640.0, 480.0] and len(person["keypoints"]) == 17
    assert len(person["keypoint_scores"]) == 17 and person["score"] == 1.0
    drawn = cv2.imread(str(out / "frame0.png"))
    assert drawn.shape == (480, 640, 3) and not np.array_equal(drawn, clip.frames[0][..., ::-1])

    # an existing output is replaced only with --force; outputs never overwrite inputs, even with --force
    capsys.readouterr()
    assert rt_main([str(folder), "--model", str(exports["raw"]), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "exists (pass --force" in err and err.count("\n") == 1 and "Traceback" not in err
    assert rt_main([str(folder), "--model", str(exports["raw"]), "--out", str(folder), "--force"]) == 2
    err = capsys.readouterr().err
    assert "would overwrite the input" in err and err.count("\n") == 1
    assert sorted(p.name for p in folder.iterdir()) == ["frame0.png", "frame1.png", "notes.txt"]

    # a video: streamed frame by frame, a drawn video with every frame, one record per frame
    video = tmp_path / "walk.mp4"
    _write_video(video, clip.frames)
    assert rt_main([str(video), "--model", str(exports["decoded"]), "--out", str(tmp_path / "v"), "--no-draw"]) == 0
    assert not (tmp_path / "v" / "walk.mp4").exists()
    assert rt_main([str(video), "--model", str(exports["raw"]), "--out", str(tmp_path / "v"), "--force"]) == 0
    doc = json.loads((tmp_path / "v" / "predictions.json").read_text())
    assert [(r["file_name"], r["frame"]) for r in doc["images"]] == [("walk.mp4", i) for i in range(3)]
    capture = cv2.VideoCapture(str(tmp_path / "v" / "walk.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    capture.release()
    assert rt_main([str(video), "--model", str(exports["raw"]), "--out", str(tmp_path), "--force"]) == 2
    assert "would overwrite the input" in capsys.readouterr().err

    # one-line errors: a missing model, a usage error, no onnxruntime
    assert rt_main([str(video), "--model", str(tmp_path / "missing.onnx"), "--out", str(tmp_path / "m")]) == 2
    missing = tmp_path / "missing.onnx"
    assert capsys.readouterr().err.strip() == f"poseforge-rt: error: {missing}: pose model file not found"
    assert rt_main([str(video)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert rt_main([str(video), "--model", str(exports["raw"]), "--out", str(tmp_path / "m")]) == 2
    assert "pip install 'poseforge[runtime]'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- (a) no torch
_BLOCK_TORCH = """
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
        return None
sys.meta_path.insert(0, _NoTorch())
"""

_RUN_WITHOUT_TORCH = """
import json
try:
    import poseforge.models  # the blocker itself must work: the torch side of poseforge cannot load
except ImportError:
    pass
else:
    raise SystemExit("the torch blocker let torch in")
import cv2, numpy as np
from poseforge.runtime import BottomUpPipeline, TopDownPipeline, decode_heatmaps, group_associative_embedding
from poseforge.runtime.cli import main
image_path, pose, stub, out = sys.argv[1], sys.argv[3], sys.argv[4], sys.argv[5]
boxes = np.array(json.loads(sys.argv[2]))
image = cv2.imread(image_path)
result = TopDownPipeline(pose, flip_test=True)(image, boxes)
people = BottomUpPipeline(stub)(image)
maps = np.random.default_rng(0).random((2, 17, 64, 48)).astype(np.float32)
for codec in ("msra", "dark", "udp"):
    decode_heatmaps(maps, codec, (192, 256))
assert main([image_path, "--model", pose, "--out", out]) == 0
assert "torch" not in sys.modules, "something imported torch"
print(json.dumps(result.keypoints.tolist()))
"""


def test_the_runtime_runs_without_torch(clip, exports, bundled, tmp_path):
    image = tmp_path / "frame.png"
    cv2.imwrite(str(image), clip.frames[1][..., ::-1])
    boxes = clip.boxes[1].astype(np.float64)
    stub = export_onnx(poseforge.create_model("stub-bottomup").eval(), tmp_path / "stub.onnx", dynamic_batch=True)
    code = _BLOCK_TORCH + textwrap.dedent(_RUN_WITHOUT_TORCH)
    proc = subprocess.run([sys.executable, "-c", code, str(image), json.dumps(boxes.tolist()), str(exports["raw"]),
                           str(stub), str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    keypoints = np.array(json.loads(proc.stdout.strip().splitlines()[-1]))
    ref, _ = _torch_predict(bundled, clip.frames[1], boxes, flip_test=True)  # the PNG is lossless: the same pixels
    assert np.abs(keypoints - ref).max() < 1e-3
    assert (tmp_path / "out" / "predictions.json").is_file()


def test_sessions_do_not_spin_unless_asked(tmp_path):
    """Detector and pose sessions take turns on the same cores: idle workers must sleep (ort_spinning.py)."""
    pytest.importorskip("onnxruntime")
    from poseforge.export import export_onnx
    from poseforge.models import load_model
    from poseforge.runtime import PoseModel

    path = export_onnx(load_model("rtmpose-t.synth"), tmp_path / "pose.onnx")
    key = "session.intra_op.allow_spinning"
    assert PoseModel(path).session.get_session_options().get_session_config_entry(key) == "0"
    assert PoseModel(path, spin=True).session.get_session_options().get_session_config_entry(key) == "1"
