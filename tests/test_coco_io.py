import copy
import json

import numpy as np
import pytest

from poseforge import DataError
from poseforge.data import read_coco, write_coco

SAMPLES = ["coco/test_coco.json", "coco/test_coco_wholebody.json", "aic/test_aic.json", "ap10k/test_ap10k.json",
           "coco/test_keypoint_partition_metric.json"]


@pytest.mark.parametrize("rel,keypoint_set,num", [("coco/test_coco.json", "coco17", 14), ("coco/test_coco_wholebody.json", "wholebody133", 14),
                                                   ("aic/test_aic.json", "aic14", 9), ("ap10k/test_ap10k.json", "ap10k17", 2),
                                                   ("coco/test_keypoint_partition_metric.json", "wholebody133", 14)])
def test_reads_real_files(peer_data, rel, keypoint_set, num):
    data = read_coco(peer_data / rel, check_images=True)
    assert data.keypoint_set.name == keypoint_set and len(data) == num and not data.skipped
    raw = json.loads((peer_data / rel).read_text())
    first, ann = data.instances[0], raw["annotations"][0]
    assert first.instance_id == ann["id"] and first.image_id == ann["image_id"]
    assert np.allclose(first.keypoints[: len(ann["keypoints"]) // 3, 0], ann["keypoints"][0::3])
    assert first.bbox.tolist() == ann["bbox"]
    info = data.images[first.image_id]
    assert first.image_size == (info.width, info.height) and info.path.endswith(info.file_name)


def test_wholebody_field_order(peer_data):
    """Split COCO-WholeBody fields merge as body, foot, face, left hand, right hand; the merged file agrees."""
    split = read_coco(peer_data / "coco/test_coco_wholebody.json")
    merged = read_coco(peer_data / "coco/test_keypoint_partition_metric.json")
    raw = json.loads((peer_data / "coco/test_coco_wholebody.json").read_text())["annotations"][0]
    inst = split.instances[0]
    assert np.allclose(inst.keypoints[17:23].reshape(-1), np.asarray(raw["foot_kpts"]).reshape(-1, 3)[:, :2].reshape(-1))
    assert np.allclose(inst.keypoints[112:133, 0], raw["righthand_kpts"][0::3])
    for a, b in zip(split.instances, merged.instances):
        assert np.allclose(a.keypoints, b.keypoints) and np.allclose(a.visibility, b.visibility)


@pytest.mark.parametrize("rel", SAMPLES[:4])
def test_write_round_trip_is_exact(peer_data, tmp_path, rel):
    data = read_coco(peer_data / rel)
    out = tmp_path / "out.json"
    write_coco(out, data.instances, data.images.values(), data.keypoint_set)
    original, written = json.loads((peer_data / rel).read_text()), json.loads(out.read_text())
    for a, b in zip(original["annotations"], written["annotations"]):
        assert {k: a[k] for k in a} == {k: b[k] for k in a}  # every original field back unchanged
    again = read_coco(out, image_root=peer_data / rel.split("/")[0])
    assert [i.instance_id for i in again.instances] == [i.instance_id for i in data.instances]


def test_filters_are_counted(peer_data):
    data = read_coco(peer_data / "coco/test_coco.json", min_labeled=1, skip_crowd=True)
    assert len(data) == 12 and sum(data.skipped.values()) == 2
    assert "skipped 2 with fewer than 1 labeled keypoints" in data.summary()


def _broken(peer_data, tmp_path, mutate):
    doc = json.loads((peer_data / "coco/test_coco.json").read_text())
    mutate(doc)
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(doc).replace("NaN", "NaN"))
    return path


@pytest.mark.parametrize("mutate,pattern", [
    (lambda d: d["annotations"][3].pop("bbox"), r"broken.json: annotation 1202706: field 'bbox': missing"),
    (lambda d: d["annotations"][0]["keypoints"].pop(), r"annotation 442619: field 'keypoints': expected 51 numbers \(17 keypoints x 3 for coco17\), got 50"),
    (lambda d: d["annotations"][0]["keypoints"].__setitem__(4, float("nan")), r"annotation 442619: field 'keypoints': non-finite value nan at position 4"),
    (lambda d: d["annotations"][1]["bbox"].__setitem__(2, -3), r"annotation 198196: field 'bbox': negative size -3x"),
    (lambda d: d["annotations"][2].__setitem__("image_id", 999), r"annotation 230195: field 'image_id': unknown image id 999"),
    (lambda d: d["images"][0].__setitem__("width", 0), r"image 785: field 'width': size must be positive"),
    (lambda d: d["annotations"][0]["bbox"].__setitem__(0, "12"), r"annotation 442619: field 'bbox': expected numbers, found '12'"),
    (lambda d: d["annotations"][5].__setitem__("id", d["annotations"][4]["id"]), r"annotation 460541: field 'id': duplicate annotation id"),
    (lambda d: d.pop("annotations"), r"broken.json: field 'annotations': missing"),
])
def test_bad_input_names_file_record_field(peer_data, tmp_path, mutate, pattern):
    with pytest.raises(DataError, match=pattern):
        read_coco(_broken(peer_data, tmp_path, mutate))


def test_missing_image_file(peer_data, tmp_path):
    path = _broken(peer_data, tmp_path, lambda d: d["images"][1].__setitem__("file_name", "gone.jpg"))
    read_coco(path, image_root=peer_data / "coco")  # not checked unless asked
    with pytest.raises(DataError, match=r"image 40083: field 'file_name': image file not found: .*gone.jpg"):
        read_coco(path, image_root=peer_data / "coco", check_images=True)


def test_not_json(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text("{not json")
    with pytest.raises(Exception, match=r"x.json: not valid JSON"):
        read_coco(bad)


def test_atomic_write_has_usual_permissions(tmp_path):
    import os
    import stat

    from poseforge.io import write_json_atomic

    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "a.json", {"x": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) & 0o044 == 0o044  # group/other readable
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temp file left behind


def test_saved_weights_have_usual_permissions(tmp_path):
    """safetensors recreates the file it writes: the atomic rename must still leave it readable by all."""
    import stat

    from poseforge.models import create_model

    create_model("vitpose-tiny").save_pretrained(tmp_path / "m")
    for name in ("model.safetensors", "config.json"):
        assert stat.S_IMODE((tmp_path / "m" / name).stat().st_mode) & 0o044 == 0o044, name
