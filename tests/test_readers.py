"""Dataset readers (MPII list format, AIC, CrowdPose, AP-10K / APT-36K, COCO-WholeBody) and the
ratio-mixed multi-dataset index (MixedDataset)."""
from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from poseforge.data.datasets import MixedDataset, split_by_ratio
from poseforge.data.images import load_image
from poseforge.data.readers import DATASET_FORMATS, image_size, read_dataset, read_mpii
from poseforge.data.transforms import bbox_xywh_to_center_scale
from poseforge.errors import DataError, PoseforgeError


# ----------------------------------------------------------------------------- MPII
def test_mpii_list_format(peer_data):
    data = read_mpii(peer_data / "mpii" / "test_mpii.json", dataset_index=2)
    assert len(data) == 5 and data.keypoint_set.name == "mpii16"
    raw = json.loads((peer_data / "mpii" / "test_mpii.json").read_text())
    inst = next(i for i in data.instances if i.image_id == 5808361)  # "005808361.jpg"
    entry = next(e for e in raw if e["image"] == "005808361.jpg")
    side = entry["scale"] * 200
    cx, cy = entry["center"][0] - 1, entry["center"][1] - 1 + 15 * entry["scale"]
    np.testing.assert_allclose(inst.bbox, [cx - side / 2, cy - side / 2, side, side])
    np.testing.assert_allclose(inst.keypoints, np.asarray(entry["joints"]) - 1)
    np.testing.assert_array_equal(inst.visibility, entry["joints_vis"])
    image = load_image(peer_data / "mpii" / "005808361.jpg")
    assert inst.image_size == (image.shape[1], image.shape[0]) and inst.dataset_index == 2
    assert data.images[5808361].path.endswith("005808361.jpg")


ORACLE = r'''
import json, sys
sys.path.insert(0, sys.argv[2])
import mm_oracle_shim  # noqa: F401  (stubs compiled mmcv ops; must come before mmpose)
from mmpose.datasets import MpiiDataset
ds = MpiiDataset(ann_file=sys.argv[1], data_root="", data_prefix=dict(img=""), pipeline=[], test_mode=False)
print(json.dumps([{k: ds.get_data_info(i)[k].tolist() for k in ("bbox_center", "bbox_scale", "keypoints")}
                  for i in range(len(ds))]))
'''


def test_mpii_crops_equal_mmpose(peer_data, shared_dir):
    python = Path(os.environ.get("POSEFORGE_ORACLE_PYTHON", shared_dir.parent / "oracle-venv" / "bin" / "python"))
    if not python.exists():
        pytest.skip(f"mmpose oracle python not found at {python} (see shared/oracle/README.md)")
    path = peer_data / "mpii" / "test_mpii.json"
    run = subprocess.run([str(python), "-c", ORACLE, str(path), str(shared_dir / "oracle")], capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    reference = json.loads(run.stdout.strip().splitlines()[-1])
    ours = read_mpii(path).instances
    assert len(ours) == len(reference)
    for inst, ref in zip(ours, reference):
        center, scale = bbox_xywh_to_center_scale(inst.bbox[None], None, padding=1.25)
        np.testing.assert_allclose(center[0], ref["bbox_center"][0], atol=1e-3)
        np.testing.assert_allclose(scale[0], np.asarray(ref["bbox_scale"][0]) * 1.25, rtol=1e-5)  # mmpose pads by 1.25 later
        np.testing.assert_allclose(inst.keypoints, np.asarray(ref["keypoints"][0]) - 1, atol=1e-4)  # 0-based pixels


def test_mpii_errors_name_the_entry(tmp_path):
    good = {"image": "1.jpg", "center": [50, 60], "scale": 0.5, "joints": [[10, 10]] * 16, "joints_vis": [1] * 16}
    cases = [({**good, "scale": -1}, "entry 1: field 'scale': expected a positive number"),
             ({**good, "joints": [[1, 2]] * 15}, r"entry 1: field 'joints': expected shape \[16, 2\], got \[15, 2\]"),
             ({k: v for k, v in good.items() if k != "center"}, "entry 1: field 'center': missing"),
             ({**good, "joints_vis": [3] * 16}, "entry 1: field 'joints_vis': expected values in")]
    for bad, message in cases:
        path = tmp_path / "mpii.json"
        path.write_text(json.dumps([good, bad]))
        with pytest.raises(DataError, match=message):
            read_mpii(path)
    path.write_text(json.dumps({"images": []}))
    with pytest.raises(DataError, match="expected the MPII list format"):
        read_mpii(path)


def test_mpii_without_images_or_center(tmp_path):
    joints = [[20.0 + i, 30.0 + 2 * i] for i in range(16)]
    entries = [{"image": "a.jpg", "center": [-1, -1], "scale": 1.0, "joints": joints, "joints_vis": [1] * 8 + [0] * 8},
               {"image": "b.jpg", "center": [-1, -1], "scale": 1.0, "joints": joints, "joints_vis": [0] * 16}]
    path = tmp_path / "mpii.json"
    path.write_text(json.dumps(entries))
    data = read_mpii(path)
    assert len(data) == 1 and data.skipped == Counter({"without a center or labeled joints": 1})
    inst = data.instances[0]
    np.testing.assert_allclose(inst.bbox, [19, 29, 7, 14])  # the labeled joints' extent (0-based)
    assert inst.image_size == (35, 60)  # no image file: the extent of all joints (0-based max + 1)
    with pytest.raises(DataError, match="image file not found"):
        read_mpii(path, check_images=True)


# ----------------------------------------------------------------------------- COCO-style formats
def test_coco_style_formats(peer_data):
    aic = read_dataset(peer_data / "aic" / "test_aic.json", dataset_index=1)
    assert aic.keypoint_set.name == "aic14" and len(aic) == 9 and {i.dataset_index for i in aic.instances} == {1}
    assert all(i.area == pytest.approx(i.bbox[2] * i.bbox[3]) for i in aic.instances)  # no area field in AIC
    assert read_dataset(peer_data / "aic" / "test_aic.json", "aic").keypoint_set.name == "aic14"
    apt = read_dataset(peer_data / "ap10k" / "test_ap10k.json", "apt36k", dataset_index=4)
    assert apt.keypoint_set.name == "ap10k17" and len(apt) == 2 and apt.instances[0].dataset_index == 4
    wb = read_dataset(peer_data / "coco" / "test_coco_wholebody.json", "wholebody")
    assert wb.keypoint_set.name == "wholebody133" and wb.instances[0].num_keypoints == 133
    assert read_dataset(peer_data / "mpii" / "test_mpii.json").keypoint_set.name == "mpii16"  # auto: a list
    assert set(DATASET_FORMATS) == {"coco", "aic", "crowdpose", "wholebody", "ap10k", "apt36k", "mpii"}
    with pytest.raises(DataError, match="unknown dataset format 'lsp'"):
        read_dataset(peer_data / "aic" / "test_aic.json", "lsp")


def test_crowdpose_keeps_the_crowd_index(tmp_path):
    doc = {"images": [{"id": 7, "file_name": "7.jpg", "width": 100, "height": 80, "crowdIndex": 0.42}],
           "annotations": [{"id": 1, "image_id": 7, "category_id": 1, "bbox": [10, 10, 40, 50], "iscrowd": 0,
                            "num_keypoints": 14, "keypoints": [20, 30, 1] * 14}],
           "categories": [{"id": 1, "name": "person"}]}
    path = tmp_path / "crowdpose.json"
    path.write_text(json.dumps(doc))
    data = read_dataset(path, "crowdpose")
    assert data.keypoint_set.name == "crowdpose14" and data.images[7].extras == {"crowdIndex": 0.42}
    with pytest.raises(PoseforgeError, match="several|cannot tell"):
        read_dataset(path)  # 14 keypoints without names: AIC or CrowdPose


def test_image_size_from_headers(tmp_path):
    image = np.zeros((37, 53, 3), np.uint8)
    for ext in ("jpg", "png", "bmp"):
        cv2.imwrite(str(tmp_path / f"a.{ext}"), image)
        assert image_size(tmp_path / f"a.{ext}") == (53, 37)
    cv2.imwrite(str(tmp_path / "p.jpg"), image, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert image_size(tmp_path / "p.jpg") == (53, 37)


# ----------------------------------------------------------------------------- mixing
def test_split_by_ratio_is_exact():
    assert split_by_ratio(10, [1, 1, 1]) == [4, 3, 3]
    assert split_by_ratio(100, [2, 1, 1]) == [50, 25, 25]
    assert sum(split_by_ratio(997, [0.3, 0.7, 0.11])) == 997
    with pytest.raises(PoseforgeError, match="positive sum"):
        split_by_ratio(10, [0, 0])


def test_mixed_dataset_ratios_order_and_passes():
    mix = MixedDataset([5, 100, None], ratios=[2, 1, 1], length=40, seed=3)
    assert mix.counts == [20, 10, 10]
    source, local = mix.locate(np.arange(40))
    assert Counter(source.tolist()) == {0: 20, 1: 10, 2: 10}
    assert len(set(source[:8].tolist())) > 1  # a batch mixes the sources
    # The 5-sample source is visited 4 times per cycle, each pass a permutation of all 5.
    firsts = local[source == 0]
    assert sorted(firsts.tolist()) == sorted(list(range(5)) * 4)
    # Next cycle: the stream source gets new indices, the finite one goes on through its data.
    s2, l2 = mix.locate(np.arange(40, 80))
    assert Counter(s2.tolist()) == {0: 20, 1: 10, 2: 10}
    assert set(l2[s2 == 2].tolist()) == set(range(10, 20)) and set(local[source == 2].tolist()) == set(range(10))
    assert not set(l2[s2 == 1].tolist()) & set(local[source == 1].tolist())
    # Pure function of the index and seed.
    np.testing.assert_array_equal(mix.locate([77, 3, 41])[1], MixedDataset([5, 100, None], [2, 1, 1], 40, 3).locate([77, 3, 41])[1])
    assert not np.array_equal(MixedDataset([5, 100, None], [2, 1, 1], 40, 4).locate(np.arange(40))[0], source)


def test_mixed_dataset_errors():
    with pytest.raises(PoseforgeError, match="explicit sampling ratios"):
        MixedDataset([10, None])
    with pytest.raises(PoseforgeError, match="2 sources but 1 ratios"):
        MixedDataset([10, 10], [1])
    with pytest.raises(PoseforgeError, match="at least one sample"):
        MixedDataset([0, 10])
    assert len(MixedDataset([3, 4])) == 7 and MixedDataset([3, 4]).counts == [3, 4]
