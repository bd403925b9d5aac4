"""Person detectors: box helpers, NMS, the ONNX adapter (a synthetic end2end graph and the real RTMDet-nano on
the COCO sample photos), detection files, the built-in CenterNet-style detector and its training loop."""
from __future__ import annotations

import dataclasses
import json
import sys

import numpy as np
import pytest
import torch

from poseforge.errors import DataError, PoseforgeError
from poseforge.inference.detectors import (BuiltinDetector, DetectionFile, Detections, PersonDetectorConfig,
                                           PersonDetectorNet, box_iou, load_detector, nms, xywh_to_xyxy)
from poseforge.inference.detectors.builtin import detector_loss, encode_targets, letterbox_tensor
from poseforge.inference.detectors.onnx import letterbox


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: small kernels, one intra-op thread


# ---------------------------------------------------------------------------------------------- boxes, NMS
def _greedy_nms(boxes: torch.Tensor, scores: torch.Tensor, thr: float) -> list[int]:
    iou = box_iou(boxes, boxes).tolist()
    keep: list[int] = []
    for i in torch.argsort(scores, descending=True).tolist():
        if all(iou[i][j] <= thr for j in keep):
            keep.append(i)
    return keep


def test_nms_equals_sequential_greedy():
    g = torch.Generator().manual_seed(0)
    for trial in range(30):
        n = int(torch.randint(1, 40, (1,), generator=g))
        xy = torch.rand(n, 2, generator=g) * 100
        wh = torch.rand(n, 2, generator=g) * 40 + 5
        boxes = torch.cat([xy, xy + wh], 1)
        scores = torch.rand(n, generator=g)
        for thr in (0.3, 0.5, 0.7):
            assert nms(boxes, scores, thr).tolist() == _greedy_nms(boxes, scores, thr)
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).numel() == 0


def test_box_helpers_and_filter():
    a = torch.tensor([[0.0, 0, 10, 10]])
    b = torch.tensor([[0.0, 0, 10, 10], [5, 5, 15, 15], [20, 20, 30, 30]])
    assert torch.allclose(box_iou(a, b), torch.tensor([[1.0, 25 / 175, 0.0]]))
    assert torch.equal(xywh_to_xyxy(torch.tensor([[1.0, 2, 3, 4]])), torch.tensor([[1.0, 2, 4, 6]]))
    d = Detections(torch.tensor([[0, 0, 10, 10], [0, 0, 2, 50], [5, 5, 30, 30.0]]), torch.tensor([0.5, 0.9, 0.8]))
    kept = d.filter(score_threshold=0.6, min_size=3)
    assert kept.scores.tolist() == pytest.approx([0.8]) and len(d.filter(max_detections=2)) == 2
    assert torch.allclose(d.boxes_xywh[0], torch.tensor([0.0, 0, 10, 10]))
    with pytest.raises(PoseforgeError, match="boxes"):
        Detections(torch.zeros(2, 4), torch.zeros(3))


# ---------------------------------------------------------------------------------------------- ONNX adapter
def test_letterbox_geometry():
    image = np.arange(480 * 640 * 3, dtype=np.uint8).reshape(480, 640, 3)
    padded, factors = letterbox(image, (320, 320))
    assert padded.shape == (320, 320, 3) and factors == (0.5, 0.5)
    assert (padded[240:] == 114).all() and not (padded[:240] == 114).all()
    tall, f2 = letterbox(np.zeros((100, 50, 3), np.uint8), (320, 320))
    assert f2 == (3.2, 3.2) and (tall[:, 160:] == 114).all()


def _fixed_dets_onnx(path, dets: np.ndarray, labels: np.ndarray) -> None:
    """An 'end2end detector' ONNX graph that outputs the same dets/labels for every image of the batch."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    m = dets.shape[0]
    nodes = [
        helper.make_node("Shape", ["input"], ["shape"]),
        helper.make_node("Slice", ["shape", "zero", "one"], ["batch"]),
        helper.make_node("Concat", ["batch", "dets_tail"], ["dets_shape"], axis=0),
        helper.make_node("Concat", ["batch", "labels_tail"], ["labels_shape"], axis=0),
        helper.make_node("Expand", ["dets_const", "dets_shape"], ["dets"]),
        helper.make_node("Expand", ["labels_const", "labels_shape"], ["labels"]),
    ]
    inits = [numpy_helper.from_array(np.array([0], np.int64), "zero"), numpy_helper.from_array(np.array([1], np.int64), "one"),
             numpy_helper.from_array(np.array([m, 5], np.int64), "dets_tail"),
             numpy_helper.from_array(np.array([m], np.int64), "labels_tail"),
             numpy_helper.from_array(dets[None].astype(np.float32), "dets_const"),
             numpy_helper.from_array(labels[None].astype(np.int64), "labels_const")]
    graph = helper.make_graph(nodes, "fixed", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, "h", "w"])],
                              [helper.make_tensor_value_info("dets", TensorProto.FLOAT, ["batch", m, 5]),
                               helper.make_tensor_value_info("labels", TensorProto.INT64, ["batch", m])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 7
    onnx.save(model, str(path))


def test_onnx_adapter_maps_boxes_back_through_the_letterbox(tmp_path):
    pytest.importorskip("onnxruntime")
    from poseforge.inference.detectors.onnx import OnnxDetector

    dets = np.array([[10, 20, 110, 220, 0.9], [0, 0, 50, 50, 0.8], [30, 30, 40, 40, 0.2], [5, 5, 300, 300, 0.95]])
    labels = np.array([0, 1, 0, 0])
    path = tmp_path / "fixed.onnx"
    _fixed_dets_onnx(path, dets, labels)
    detector = OnnxDetector(path, score_threshold=0.3)
    assert detector.input_size == (320, 320)
    wide = np.zeros((480, 640, 3), np.uint8)  # factor 0.5
    small = np.zeros((160, 160, 3), np.uint8)  # factor 2
    out = detector.detect_batch([wide, small])
    # label 1 and the 0.2 box are dropped; best first; boxes divided by the factor and clipped to the frame
    assert out[0].scores.tolist() == pytest.approx([0.95, 0.9])
    assert torch.allclose(out[0].boxes, torch.tensor([[10.0, 10, 600, 480], [20, 40, 220, 440]]))
    assert torch.allclose(out[1].boxes, torch.tensor([[2.5, 2.5, 150, 150], [5, 10, 55, 110]]))
    # pre-processing: BGR, (x - mean) / std, pad 114 at the bottom / right
    image = np.zeros((100, 200, 3), np.uint8)
    image[..., 0] = 200  # red
    x, factors = detector.preprocess([image])
    assert factors[0].tolist() == [1.6, 1.6]
    assert x[0, 2, 0, 0] == pytest.approx((200 - 123.675) / 58.395)  # channel 2 = R in BGR
    assert x[0, 0, 0, 0] == pytest.approx((0 - 103.53) / 57.375)
    assert x[0, 0, 319, 0] == pytest.approx((114 - 103.53) / 57.375)


def test_onnx_adapter_errors(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    from poseforge.inference.detectors.onnx import OnnxDetector

    with pytest.raises(PoseforgeError, match="not found"):
        OnnxDetector(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(PoseforgeError, match="cannot load ONNX model"):
        OnnxDetector(bad)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(PoseforgeError, match=r"pip install 'poseforge\[onnx\]'"):
        OnnxDetector(bad)


def test_rtmdet_nano_finds_the_people_in_the_coco_sample_photos(peer_data):
    """The real RTMDet-nano export: 1/1, 2/3, 4/5 and 5/5 people at score > 0.3, each box on a person."""
    pytest.importorskip("onnxruntime")
    from poseforge.data.images import load_image
    from poseforge.inference.detectors.onnx import OnnxDetector

    detector = load_detector(peer_data / "models" / "rtmdet-nano-person.onnx", device="cpu")
    assert isinstance(detector, OnnxDetector) and detector.input_size == (320, 320)
    gt = json.loads((peer_data / "coco" / "test_coco.json").read_text())
    expected = {785: 1, 40083: 2, 196141: 4, 197388: 5}
    frames, truths = [], []
    for image in gt["images"]:
        frames.append(load_image(peer_data / "coco" / image["file_name"]))
        boxes = [a["bbox"] for a in gt["annotations"] if a["image_id"] == image["id"] and not a.get("iscrowd")]
        truths.append(xywh_to_xyxy(torch.tensor(boxes, dtype=torch.float32)))
    for image, frame, truth, dets in zip(gt["images"], frames, truths, detector.detect_batch(frames)):
        assert len(dets) == expected[image["id"]], image["file_name"]
        iou = box_iou(dets.boxes, truth)
        assert (iou.max(1).values > 0.75).all(), (image["file_name"], iou)
        assert len(set(iou.argmax(1).tolist())) == len(dets)  # one detection per person
        assert (dets.boxes[:, 2] <= frame.shape[1]).all() and (dets.boxes[:, 3] <= frame.shape[0]).all()
    # frame by frame (batch of one) gives the same boxes as the batch
    single = detector(frames[3])
    assert torch.allclose(single.boxes, detector.detect_batch(frames)[3].boxes, atol=1e-3)


# ---------------------------------------------------------------------------------------------- detection files
def test_detection_file(tmp_path):
    path = tmp_path / "dets.json"
    path.write_text(json.dumps([
        {"image_id": 785, "category_id": 1, "bbox": [10, 20, 30, 40], "score": 0.9},
        {"image_id": 785, "category_id": 2, "bbox": [0, 0, 5, 5], "score": 0.9},
        {"image_id": 785, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.05},
        {"image_id": 7, "category_id": 1, "bbox": [1, 1, 2, 2], "score": 0.5}]))
    d = DetectionFile(path, score_threshold=0.1)
    found = d(np.zeros((4, 4, 3), np.uint8), key="/photos/000000000785.jpg")
    assert torch.allclose(found.boxes, torch.tensor([[10.0, 20, 40, 60]])) and found.scores.tolist() == pytest.approx([0.9])
    assert len(d(np.zeros((4, 4, 3), np.uint8), key=12345)) == 0
    named = DetectionFile(path, images={"images": [{"id": 7, "file_name": "a/cat.png"}]})
    assert len(named(np.zeros((4, 4, 3), np.uint8), key="cat.png")) == 1
    with pytest.raises(PoseforgeError, match="image id"):
        d(np.zeros((4, 4, 3), np.uint8), key="holiday.jpg")
    path.write_text(json.dumps([{"image_id": 1, "bbox": [1, 2, 3], "score": 1}]))
    with pytest.raises(DataError, match=r"detection 0: field 'bbox'"):
        DetectionFile(path)


def test_detection_file_warns_when_a_file_name_guess_finds_no_boxes(tmp_path, caplog):
    """003799.jpg read as image 3799 while the file's ids come from a GT that says 1: warned (with the fix),
    not silently zero people; a guess that finds boxes, and images beyond the third, are quiet."""
    path = tmp_path / "dets.json"
    path.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [10, 20, 30, 40], "score": 0.9},
                                {"image_id": 2, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.8}]))
    frame = np.zeros((4, 4, 3), np.uint8)
    d = DetectionFile(path)
    with caplog.at_level("WARNING", logger="poseforge"):
        assert len(d(frame, key="photos/003799.jpg")) == 0
        assert len(d(frame, key="000001.jpg")) == 1
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert "image id 3799" in message and "003799.jpg" in message and "--gt" in message and "1, 2" in message
    with caplog.at_level("WARNING", logger="poseforge"):
        for n in range(10):
            d(frame, key=f"{100 + n}.jpg")
    assert len(caplog.records) == 3 and "further such images are not reported" in caplog.records[-1].getMessage()


def test_load_detector_dispatch(tmp_path):
    assert load_detector(None) is None
    with pytest.raises(PoseforgeError, match="unknown detector"):
        load_detector(tmp_path / "weights.bin")
    assert isinstance(load_detector("bundled", device="cpu"), BuiltinDetector)


# ---------------------------------------------------------------------------------------------- built-in detector
def _tiny_config(**changes) -> PersonDetectorConfig:
    return PersonDetectorConfig(input_size=(128, 96), widths=(8, 16, 16, 24, 32), neck_channels=16, **changes)


def test_targets_decode_back_to_the_boxes():
    """Perfect network outputs (built from the targets) decode to the original boxes in frame pixels."""
    config = _tiny_config()
    detector = BuiltinDetector(PersonDetectorNet(config), device="cpu", score_threshold=0.5)
    s = config.stride
    out_w, out_h = config.input_size[0] // s, config.input_size[1] // s
    boxes = torch.tensor([[[10.3, 12.1, 40.7, 80.2], [70.0, 20.0, 120.5, 90.0]], [[50.0, 40.0, 60.0, 70.0], [0, 0, 0, 0]]])
    valid = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    t = encode_targets(boxes, valid, (out_w, out_h), s)
    logits = torch.logit(t["heatmap"].clamp(1e-6, 1 - 1e-6))
    size, offset = t["size"], t["offset"]
    assert (t["weight"] > 0).sum() > 3 * 3  # size and offset are learned around each centre, not at one cell
    factors = torch.tensor([[0.5, 0.5], [2.0, 2.0]], dtype=torch.float64)  # network input = frame x factor
    frame_sizes = torch.tensor([[256.0, 192.0], [64.0, 48.0]], dtype=torch.float64)
    dets = detector.decode((logits, size, offset), factors, frame_sizes)
    assert len(dets[0]) == 2 and len(dets[1]) == 1
    got = dets[0].boxes[torch.argsort(dets[0].boxes[:, 0])]
    assert torch.allclose(got, boxes[0] / 0.5, atol=1e-3)
    assert torch.allclose(dets[1].boxes, boxes[1, :1] / 2.0, atol=1e-3)


def test_letterbox_tensor_pads_with_the_mean():
    mean = torch.tensor([10.0, 20.0, 30.0]).view(1, 3, 1, 1)
    std = torch.ones(1, 3, 1, 1)
    frames = [torch.full((3, 50, 100), 200, dtype=torch.uint8), torch.full((3, 100, 50), 200, dtype=torch.uint8)]
    x, factors = letterbox_tensor(frames, (64, 64), mean, std)
    assert factors.tolist() == [[0.64, 0.64], [0.64, 0.64]]
    assert x.shape == (2, 3, 64, 64)
    assert torch.allclose(x[0, :, :32, :], (200 - mean[0]).expand(3, 32, 64)) and (x[0, :, 32:] == 0).all()
    assert (x[1, :, :, 32:] == 0).all()


def test_save_load_round_trip_fp16(tmp_path):
    net = PersonDetectorNet(_tiny_config())
    net.save_pretrained(tmp_path / "det", dtype=torch.float16)
    back = PersonDetectorNet.from_pretrained(tmp_path / "det")
    assert back.config == net.config
    for (k, a), (_, b) in zip(net.state_dict().items(), back.state_dict().items()):
        assert b.dtype == a.dtype
        assert torch.allclose(a.float(), b.float(), atol=1e-2, rtol=1e-3), k
    assert json.loads((tmp_path / "det" / "checksums.json").read_text())["files"].keys() == {"model.safetensors", "config.json"}
    weights = tmp_path / "det" / "model.safetensors"
    flipped = bytearray(weights.read_bytes())
    flipped[-5] ^= 0x10  # one bit in the last tensor's data: still a readable file
    weights.write_bytes(bytes(flipped))
    with pytest.raises(PoseforgeError, match="does not match its checksum"):
        PersonDetectorNet.from_pretrained(tmp_path / "det")
    PersonDetectorNet.from_pretrained(tmp_path / "det", verify=False)  # the opt-out for huge files
    weights.write_bytes(b"junk")
    with pytest.raises(PoseforgeError, match="not a readable safetensors"):
        PersonDetectorNet.from_pretrained(tmp_path / "det", verify=False)


def test_a_few_steps_fit_a_fixed_batch():
    """The losses and targets train: a tiny net overfits four rendered scenes."""
    from poseforge.train.detector import augment, render_scenes

    torch.manual_seed(0)
    images, boxes, valid, _ = render_scenes(4, seed=11, size=(128, 96), people=(1, 2))
    config = _tiny_config()
    net = PersonDetectorNet(config)
    g = torch.Generator().manual_seed(0)
    x, b, keep = augment(images, boxes, valid, net, (1.0, 1.0), g)
    targets = encode_targets(b, keep.float(), (config.input_size[0] // config.stride, config.input_size[1] // config.stride),
                             config.stride)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        loss = detector_loss(net(x), targets)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]


def test_bundled_detector_finds_synthetic_people():
    """Held-out scenes (a seed no training used): box AP well above chance."""
    from poseforge.train.detector import evaluate_detector, render_scenes

    detector = BuiltinDetector("bundled", device="cpu")
    scenes = render_scenes(16, seed=3_000_017, size=(320, 240), people=(1, 3))
    stats = evaluate_detector(detector, *scenes)
    assert stats["AP50"] > 0.75 and stats["AP"] > 0.45, stats
    # frames of other sizes: boxes scale with the frame
    frame = scenes[0][0]
    big = torch.nn.functional.interpolate(frame[None].float(), scale_factor=2, mode="bilinear")[0].round().byte()
    small_dets, big_dets = detector(frame), detector(big)
    if len(small_dets) and len(big_dets):
        assert box_iou(small_dets.boxes[:1] * 2, big_dets.boxes).max() > 0.8


# ---------------------------------------------------------------------------------------------- ultralytics
def test_ultralytics_adapter_needs_the_package(monkeypatch):
    from poseforge.inference.detectors.ultralytics import UltralyticsDetector

    monkeypatch.setitem(sys.modules, "ultralytics", None)
    with pytest.raises(PoseforgeError, match="pip install ultralytics"):
        UltralyticsDetector("yolov8n.pt")


def test_ultralytics_adapter_on_a_photo(peer_data, tmp_path):
    pytest.importorskip("ultralytics")
    from poseforge.data.images import load_image
    from poseforge.inference.detectors.ultralytics import UltralyticsDetector

    weights = next(iter(sorted(peer_data.parent.glob("**/yolo*.pt"))), None)
    if weights is None:
        pytest.skip("no ultralytics weights available offline")
    dets = UltralyticsDetector(weights)(load_image(peer_data / "coco" / "000000000785.jpg"))
    assert len(dets) >= 1 and (dets.labels == 0).all()


# ----------------------------------------------------------------------------- detector training: exact resume
def _tiny_detector_run(**changes):
    from poseforge.train.detector import DetectorTrainConfig

    return DetectorTrainConfig(train_images=16, val_images=4, render_size=(128, 96), epochs=3, batch_size=8,
                               warmup_iters=2, val_interval=1, threads=1, model=_tiny_config(), **changes)


def test_detector_training_resumes_exactly(tmp_path, monkeypatch):
    """A run stopped during epoch 2 and resumed ends with the weights, best record and history of a run
    that was never stopped; a folder holding a run is refused without --resume."""
    import poseforge.train.detector as trainer

    config = _tiny_detector_run()
    whole = trainer.train_detector(config, tmp_path / "whole")

    real_augment, calls = trainer.augment, {"n": 0}

    def stop_in_epoch_two(*args, **kwargs):  # 2 steps per epoch: the 5th call is epoch 2's first step
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real_augment(*args, **kwargs)

    monkeypatch.setattr(trainer, "augment", stop_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        trainer.train_detector(config, tmp_path / "split")
    monkeypatch.setattr(trainer, "augment", real_augment)
    with pytest.raises(PoseforgeError, match="already holds a detector run"):
        trainer.train_detector(config, tmp_path / "split")
    with pytest.raises(PoseforgeError, match="other settings"):
        trainer.train_detector(_tiny_detector_run(lr=1e-3), tmp_path / "split", resume=True)
    resumed = trainer.train_detector(config, tmp_path / "split", resume=True)

    drop = lambda stats: {k: v for k, v in stats.items() if k != "minutes"}  # noqa: E731
    assert drop(resumed) == drop(whole)
    for folder in ("best", "last"):
        a = PersonDetectorNet.from_pretrained(tmp_path / "whole" / folder).state_dict()
        b = PersonDetectorNet.from_pretrained(tmp_path / "split" / folder).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), folder
    history = lambda run: [{k: v for k, v in json.loads(line).items() if k != "time"}  # noqa: E731
                           for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
    assert history("split") == history("whole")
    assert [r["epoch"] for r in history("split") if r["kind"] == "val"] == [0, 1, 2]


def test_detector_photo_backgrounds_and_camera_steps_keep_the_boxes():
    """Issue 31's levers for the detector: photo backdrops change the pixels, not the labels; the camera steps
    change the crops, not the boxes, and draw after every other step (a run without them is unchanged)."""
    pytest.importorskip("skimage")
    pytest.importorskip("sklearn")
    import dataclasses

    from poseforge.data.augment import AugmentConfig, Photometric
    from poseforge.train.detector import augment, render_scenes

    plain = render_scenes(3, seed=5, size=(128, 96), people=(1, 2))
    photo = render_scenes(3, seed=5, size=(128, 96), people=(1, 2), photo_backgrounds=1.0)
    prints = render_scenes(3, seed=5, size=(128, 96), people=(1, 2), photo_clothing=1.0)
    for a, b, c in zip(plain[1:], photo[1:], prints[1:]):
        assert torch.equal(a, b) and torch.equal(a, c)
    assert (plain[0].float() - photo[0].float()).abs().mean() > 5
    assert (plain[0] != prints[0]).any()
    net = PersonDetectorNet(_tiny_config())
    camera = Photometric(dataclasses.replace(AugmentConfig.camera_sim(), hsv_prob=0.0, brightness=0.0, contrast=0.0,
                                             noise_prob=1.0, jpeg_prob=1.0))
    x0, b0, k0 = augment(*plain[:3], net, (0.6, 1.5), torch.Generator().manual_seed(3))
    x1, b1, k1 = augment(*plain[:3], net, (0.6, 1.5), torch.Generator().manual_seed(3), camera)
    assert torch.equal(b0, b1) and torch.equal(k0, k1) and torch.isfinite(x1).all()
    assert (x0 - x1).abs().mean() > 0.01


def test_detector_runs_from_before_the_photo_options_resume(tmp_path):
    """A training state written before photo_backgrounds / photo_clothing / camera_sim existed resumes with their defaults and is
    refused for a run that turns one on."""
    import poseforge.train.detector as trainer
    from poseforge.train.checkpoint import load_checkpoint, save_checkpoint

    config = dataclasses.replace(_tiny_detector_run(), epochs=1, train_images=8)
    trainer.train_detector(config, tmp_path / "run")
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    for key in ("photo_backgrounds", "photo_clothing", "camera_sim"):
        del state["settings"][key]
    save_checkpoint(tmp_path / "run" / "last.pt", state)
    trainer.train_detector(config, tmp_path / "run", resume=True)
    with pytest.raises(PoseforgeError, match="other settings"):
        trainer.train_detector(dataclasses.replace(config, camera_sim=True), tmp_path / "run", resume=True)
