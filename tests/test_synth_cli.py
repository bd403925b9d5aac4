"""``poseforge synth``: files on disk, COCO validity, AP 1.0 against itself, byte-identical reruns."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from poseforge.cli import main
from poseforge.data.coco import read_coco
from poseforge.data.synth import SyntheticPoseDataset
from poseforge.evaluation import evaluate_keypoints


def _synth(out: Path, *extra: str) -> int:
    return main(["synth", "--out", str(out), *extra])


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _as_results(gt_path: Path) -> list[dict]:
    data = read_coco(gt_path)
    return [{"image_id": i.image_id, "category_id": i.category_id, "score": 1.0,
             "keypoints": np.concatenate([i.keypoints, (i.visibility > 0)[:, None]], 1).reshape(-1).tolist()}
            for i in data.instances]


def test_synth_writes_a_valid_coco_dataset_that_scores_ap_1(tmp_path, capsys):
    out = tmp_path / "ds"
    assert _synth(out, "--num-images", "6", "--size", "160x120", "--people", "1-3", "--seed", "3", "--dense") == 0
    assert "wrote 6 images" in capsys.readouterr().out
    ann = out / "annotations.json"
    data = read_coco(ann, check_images=True)  # images are found under DIR/images
    assert len(data.images) == 6 and len(data.instances) >= 6
    assert data.keypoint_set.name == "coco17"
    stats = evaluate_keypoints(ann, _as_results(ann))
    assert stats["AP"] == pytest.approx(1.0) and stats["AR"] == pytest.approx(1.0)
    # The file holds exactly what the dataset renders.
    ds = SyntheticPoseDataset(6, seed=3, image_size=(160, 120), people=(1, 3))
    want = [i for r in ds.render_batch(range(6)) for i in r.instances]
    assert [i.instance_id for i in data.instances] == [i.instance_id for i in want]
    for got, exp in zip(data.instances, want):
        assert np.allclose(got.keypoints, exp.keypoints, atol=1e-4)
        assert np.array_equal(got.visibility, exp.visibility) and np.array_equal(got.bbox, exp.bbox)
        assert got.area == exp.area
    # Images decode to the rendered pixels up to JPEG loss; masks round-trip through RLE.
    from pycocotools import mask as mask_utils

    first = ds.render(0)
    img = cv2.cvtColor(cv2.imread(str(out / "images" / "00000000.jpg")), cv2.COLOR_BGR2RGB)
    assert np.abs(img.astype(int) - first.image).mean() < 4
    seg = data.instances[0].extras["segmentation"]
    decoded = mask_utils.decode({"size": seg["size"], "counts": seg["counts"].encode()}).astype(bool)
    assert np.array_equal(decoded, first.instances[0].extras["mask"])
    # Dense maps decode back to the arrays.
    parts = cv2.imread(str(out / "dense" / "00000000_parts.png"), cv2.IMREAD_UNCHANGED)
    depth = cv2.imread(str(out / "dense" / "00000000_depth.png"), cv2.IMREAD_UNCHANGED)
    inst = cv2.imread(str(out / "dense" / "00000000_instances.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(parts, first.parts) and np.array_equal(inst, first.instance_ids)
    assert depth.dtype == np.uint16 and np.abs(depth / 1000.0 - first.depth).max() <= 0.0006
    normals = cv2.cvtColor(cv2.imread(str(out / "dense" / "00000000_normals.png")), cv2.COLOR_BGR2RGB)
    fg = first.depth > 0
    assert np.abs(normals[fg] / 127.5 - 1.0 - first.normals[fg]).max() < 0.01


def test_two_runs_with_one_seed_are_byte_identical(tmp_path):
    args = ("--num-images", "4", "--size", "96x72", "--people", "1-2", "--seed", "7", "--dense")
    assert _synth(tmp_path / "a", *args) == 0
    assert _synth(tmp_path / "b", *args) == 0
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert len(a) == 1 + 4 + 16 and a == b
    assert _synth(tmp_path / "c", *args[:-2], "8", "--dense") == 0
    assert _files(tmp_path / "c") != a
    # Rendering in worker processes writes the very same files.
    assert _synth(tmp_path / "d", *args, "--workers", "2", "--batch-size", "1") == 0
    assert _files(tmp_path / "d") == a


def test_wholebody_is_written_in_split_fields_and_round_trips(tmp_path):
    out = tmp_path / "wb"
    assert _synth(out, "--num-images", "3", "--size", "96x128", "--people", "1", "--keypoints", "wholebody133") == 0
    doc = json.loads((out / "annotations.json").read_text())
    ann = doc["annotations"][0]
    for field, n in (("keypoints", 17), ("foot_kpts", 6), ("face_kpts", 68), ("lefthand_kpts", 21), ("righthand_kpts", 21)):
        assert len(ann[field]) == 3 * n
    assert "face_box" in ann and "lefthand_valid" in ann
    data = read_coco(out / "annotations.json", check_images=True)
    assert data.keypoint_set.name == "wholebody133" and data.wholebody_split
    want = SyntheticPoseDataset(3, image_size=(96, 128), people=(1, 1), keypoint_set="wholebody133")[0][0]
    assert np.allclose(data.instances[0].keypoints, want.keypoints, atol=1e-4)
    assert np.array_equal(data.instances[0].visibility, want.visibility)


def test_quadrupeds_are_written_with_ap10k_categories(tmp_path):
    out = tmp_path / "animals"
    assert _synth(out, "--num-images", "3", "--size", "128x96", "--people", "1-2", "--keypoints", "ap10k17") == 0
    data = read_coco(out / "annotations.json", check_images=True)
    assert data.keypoint_set.name == "ap10k17"
    assert {i.category_id for i in data.instances} <= {8, 24, 21, 5, 6, 17, 22, 50}
    assert evaluate_keypoints(out / "annotations.json", _as_results(out / "annotations.json"))["AP"] == pytest.approx(1.0)


def test_contact_sheets_are_written(tmp_path):
    out = tmp_path / "sheet"
    assert _synth(out, "--num-images", "5", "--size", "96x72", "--people", "1-2", "--contact-sheet", "--format", "png") == 0
    for name in ("contact_sheet.jpg", "dense_sheet.jpg"):
        img = cv2.imread(str(out / name))
        assert img is not None and img.shape[0] > 72 and img.shape[1] > 96 * 3
    assert (out / "images" / "00000004.png").is_file()


@pytest.mark.parametrize("args, message", [
    (("--num-images", "0"), "--num-images"),
    (("--num-images", "2", "--people", "4-1"), "people"),
])
def test_bad_arguments_fail_with_one_line(tmp_path, capsys, args, message):
    assert _synth(tmp_path / "x", *args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err


def test_unparsable_size_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        _synth(tmp_path / "x", "--num-images", "2", "--size", "big")
    assert exc.value.code == 2
    assert "WIDTHxHEIGHT" in capsys.readouterr().err
