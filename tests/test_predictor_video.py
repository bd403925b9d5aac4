"""Video: PyAV reading/writing, clear errors, and stable track ids through a crossing of two people in a
rendered video (bundled detector + bundled pose model), through the Python API and ``poseforge predict``."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from poseforge.cli import main
from poseforge.errors import DataError, PoseforgeError
from poseforge.inference.detectors import box_iou
from poseforge.inference.predictor import Predictor
from poseforge.inference.synthetic_video import crossing_clip
from poseforge.inference.tracking import PoseTracker

av = pytest.importorskip("av")

from poseforge.inference.video import VideoReader, VideoWriter  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: small kernels, one intra-op thread


@pytest.fixture(scope="module")
def clip():
    return crossing_clip(num_frames=24, size=(640, 480), seed=5)


@pytest.fixture(scope="module")
def clip_file(clip, tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "crossing.mp4"
    with VideoWriter(path, fps=clip.fps) as writer:
        for frame in clip.frames:
            writer.write(frame)
    return path


def test_writer_reader_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    frames = [np.clip(np.full((67, 91, 3), 40 * i, np.uint8) + rng.integers(0, 20, (67, 91, 3)), 0, 255).astype(np.uint8)
              for i in range(6)]
    path = tmp_path / "clip.mp4"
    with VideoWriter(path, fps=12) as writer:  # odd sizes are padded to even for yuv420p
        for f in frames:
            writer.write(f)
    assert path.is_file() and not list(tmp_path.glob(".*partial*"))
    reader = VideoReader(path)
    assert reader.fps == pytest.approx(12) and reader.size == (92, 68)
    got = list(reader)
    assert [g.index for g in got] == list(range(6))
    assert [g.timestamp for g in got] == pytest.approx([i / 12 for i in range(6)], abs=1e-3)
    for g, f in zip(got, frames):
        assert np.abs(g.image[:67, :91].astype(int) - f).mean() < 12  # lossy, but the same picture
    with pytest.raises(PoseforgeError, match="is 10x10"):
        with VideoWriter(tmp_path / "bad.mp4") as w:
            w.write(frames[0])
            w.write(np.zeros((10, 10, 3), np.uint8))
    assert not (tmp_path / "bad.mp4").exists()  # aborted writes leave nothing behind


def test_video_errors(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="not found"):
        VideoReader(tmp_path / "missing.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 1000)
    with pytest.raises(DataError, match="cannot open video"):
        VideoReader(junk)
    monkeypatch.setitem(sys.modules, "av", None)
    with pytest.raises(PoseforgeError, match=r"pip install 'poseforge\[video\]'"):
        VideoReader(junk)


def _ids_per_person(clip, results) -> dict[int, list[int]]:
    """Track id given to each ground-truth person in every frame where it is clearly visible and detected."""
    ids: dict[int, list[int]] = {0: [], 1: []}
    for f, r in enumerate(results):
        if not len(r):
            continue
        iou = box_iou(torch.from_numpy(clip.boxes[f]), torch.from_numpy(r.boxes))
        for p in (0, 1):
            j = int(iou[p].argmax())
            if clip.visible_fraction[f, p] > 0.9 and iou[p, j] > 0.5 and iou[:, j].argmax() == p:
                ids[p].append(int(r.track_ids[j]))
    return ids


def test_box_weighted_track_ids_survive_a_crossing(clip, clip_file):
    """Detector boxes from the video, a tracker leaning on box IoU (velocity-predicted): one id per person
    through the crossing."""
    predictor = Predictor("bundled", detector="bundled", device="cpu", flip_test=False,
                          tracker=PoseTracker("coco17", iou_weight=0.8))
    results = list(predictor.predict_video(clip_file))
    assert len(results) == len(clip.frames)
    ids = _ids_per_person(clip, results)
    assert len(ids[0]) >= 16 and len(ids[1]) >= 12, ids
    assert len(set(ids[0])) == 1 and len(set(ids[1])) == 1 and set(ids[0]) != set(ids[1]), ids


def test_track_ids_survive_a_crossing(clip, clip_file):
    predictor = Predictor("bundled", detector="bundled", device="cpu", flip_test=False)
    results = list(predictor.predict_video(clip_file))
    assert len(results) == len(clip.frames) and results[3].frame_index == 3
    ids = _ids_per_person(clip, results)
    # both people are identified in most frames, before and after the crossing, each always by one id
    assert len(ids[0]) >= 16 and len(ids[1]) >= 12, ids
    assert len(set(ids[0])) == 1 and len(set(ids[1])) == 1 and set(ids[0]) != set(ids[1]), ids
    # keypoints follow the people: the front person's detected pose is near its true pose
    k = results[0].keypoints[results[0].track_ids == ids[0][0]][0]
    assert np.median(np.linalg.norm(k - clip.keypoints[0, 0], axis=1)) < 0.1 * (clip.boxes[0, 0, 3] - clip.boxes[0, 0, 1])


def test_tracker_keeps_identities_on_the_ground_truth_clip(clip):
    """Ground-truth boxes with the person order shuffled every frame: the tracker restores identities."""
    rng = np.random.default_rng(0)
    tracker = PoseTracker("coco17")
    seen = {0: set(), 1: set()}
    for f in range(len(clip.frames)):
        order = rng.permutation(2)
        ids, _ = tracker.update(clip.boxes[f][order], clip.keypoints[f][order], clip.visibility[f][order])
        for slot, p in enumerate(order):
            seen[int(p)].add(int(ids[slot]))
    assert len(seen[0]) == len(seen[1]) == 1 and seen[0] != seen[1]


def test_cli_predict_video(clip, clip_file, tmp_path):
    out = tmp_path / "out"
    assert main(["predict", str(clip_file), "--out", str(out), "--no-flip", "--smooth", "--max-frames", "12"]) == 0
    data = json.loads((out / f"{clip_file.name}.json").read_text())
    assert len(data["frames"]) == 12 and data["frames"][5]["frame"] == 5
    tracked = {p["track_id"] for fr in data["frames"] for p in fr["people"]}
    assert tracked and min(tracked) >= 0
    written = list(VideoReader(out / f"{clip_file.name}.poses.mp4"))
    assert len(written) == 12 and written[0].image.shape == (480, 640, 3)
