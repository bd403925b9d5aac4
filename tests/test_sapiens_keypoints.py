"""The sapiens308 (Sapiens / Goliath) keypoint set: its data, name mapping to COCO sets, synthetic
labels, drawing and ``poseforge synth --keypoints sapiens308``."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from poseforge.cli import main
from poseforge.data.coco import read_coco
from poseforge.data.synth import SyntheticPoseDataset
from poseforge.evaluation import evaluate_keypoints
from poseforge.inference.drawing import draw_pose
from poseforge.keypoints import canonical_joint_name, get_keypoint_set, keypoint_mapping, match_keypoint_set

ORANGE, BLUE = (255, 128, 0), (51, 153, 255)  # poseforge's left / right colours


def _side(name: str) -> str:
    """'L', 'R' or '' from Goliath's spellings (left_x, l_x, x_of_l_eyebrow, x_of_r_nostril)."""
    if re.search(r"(^|_)(left|l)_", name):
        return "L"
    if re.search(r"(^|_)(right|r)_", name):
        return "R"
    return ""


# ---------------------------------------------------------------------------------------------- the data
def test_sapiens308_is_consistent():
    ks = get_keypoint_set("sapiens308")
    K = 308
    assert ks.num_keypoints == K == len(set(ks.names)) == len(ks.sigmas) == len(ks.joint_weights) == len(ks.keypoint_colors)
    assert len({canonical_joint_name(n) for n in ks.names}) == K  # name mapping never merges two joints
    assert ks.category == "person" and ks.parts == {}
    assert len(ks.skeleton) == len(ks.link_colors) == 65
    assert all(0 <= a < K and 0 <= b < K and a != b for a, b in ks.skeleton)
    assert len(set(map(frozenset, ks.skeleton))) == 65
    flat = [i for pair in ks.flip_pairs for i in pair]
    assert len(flat) == len(set(flat)) == 2 * 146  # each joint in at most one pair
    idx = ks.flip_index
    assert sorted(idx) == list(range(K)) and np.array_equal(idx[idx], np.arange(K))  # a permutation and an involution
    for a, b in ks.flip_pairs:  # twins sit on opposite sides (the lip midpoints name no side)
        assert {_side(ks.names[a]), _side(ks.names[b])} in ({"L", "R"}, {""}), (ks.names[a], ks.names[b])
    unpaired = [n for k, n in enumerate(ks.names) if idx[k] == k]
    assert len(unpaired) == 16 and not any(_side(n) for n in unpaired) and {"nose", "neck", "tip_of_nose"} <= set(unpaired)
    flipped = [ks.skeleton.index(l) if l in ks.skeleton else ks.skeleton.index(l[::-1])
               for l in ((int(idx[a]), int(idx[b])) for a, b in ks.skeleton)]
    assert sorted(flipped) == list(range(65))  # the skeleton is mirror-symmetric
    assert all(0 < s <= 0.107 for s in ks.sigmas) and set(ks.joint_weights) == {1.0}


def test_sapiens308_spot_values_from_the_goliath_config():
    ks = get_keypoint_set("sapiens308")
    coco = get_keypoint_set("coco17")
    # The first joints are COCO's, in COCO's order up to the elbows; then Goliath's own order.
    assert ks.names[:9] == coco.names[:9]
    assert ks.names[9:15] == ("left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle")
    assert ks.names[15:21] == ("left_big_toe", "left_small_toe", "left_heel", "right_big_toe", "right_small_toe", "right_heel")
    assert ks.names[21:25] == ("right_thumb4", "right_thumb3", "right_thumb2", "right_thumb_third_joint")
    assert (ks.names[41], ks.names[62], ks.names[69], ks.names[70]) == ("right_wrist", "left_wrist", "neck", "center_of_glabella")
    assert ks.names[-1] == "r_border_of_pupil_midpoint_2"
    assert [int(ks.flip_index[k]) for k in range(9)] == [0, 2, 1, 4, 3, 6, 5, 8, 7]
    assert ks.flip_index[41] == 62 and ks.flip_index[21] == 42 and ks.flip_index[63] == 64
    # Swaps that are not a plain l/r rename (Goliath's own numbering).
    assert ks.names[ks.flip_index[ks.index("l_point_2_of_inner_helix")]] == "r_point_8_of_inner_helix"
    assert ks.names[ks.flip_index[ks.index("upper_midpoint_2_of_r_eyebrow")]] == "upper_midpoint_3_of_l_eyebrow"
    assert ks.sigmas[:9] == coco.sigmas[:9] and ks.sigmas[9] == 0.107 and ks.sigmas[41] == 0.062
    assert ks.sigmas[15:21] == (0.068, 0.066, 0.066, 0.092, 0.094, 0.094)  # COCO-WholeBody's (asymmetric) foot sigmas
    assert ks.sigmas[ks.index("neck")] == 0.079 and ks.sigmas[ks.index("left_olecranon")] == 0.072
    assert ks.sigmas[ks.index("left_thumb_third_joint")] == 0.022 and ks.sigmas[ks.index("left_forefinger_third_joint")] == 0.026
    assert set(ks.sigmas[70:]) == {0.01}
    assert ks.skeleton[0] == (13, 11) and ks.skeleton[-1] == (38, 37)  # left ankle-knee ... right pinky 3-4
    assert (62, 45) in ks.skeleton  # left wrist -> left thumb base: Goliath hands have no separate root
    # Drawing colours follow poseforge's palette (left orange, right blue, wholebody133's per-finger hues).
    wb = get_keypoint_set("wholebody133")
    assert ks.keypoint_colors[1] == ORANGE and ks.keypoint_colors[2] == BLUE
    assert ks.keypoint_colors[ks.index("left_forefinger2")] == wb.keypoint_colors[wb.index("left_forefinger2")]
    assert ks.link_colors[0] == ORANGE


def test_sapiens308_is_found_by_its_names_or_count():
    names = list(get_keypoint_set("sapiens308").names)
    assert match_keypoint_set(names, 308).name == "sapiens308"
    assert match_keypoint_set(None, 308).name == "sapiens308"


# ---------------------------------------------------------------------------------------------- mapping
def test_coco17_and_wholebody133_map_to_sapiens308_by_joint_name():
    s = get_keypoint_set("sapiens308")
    m = keypoint_mapping("coco17", "sapiens308")
    assert len(m) == 17 and sorted(m.source_index) == list(range(17))
    assert all(s.names[t] == get_keypoint_set("coco17").names[c] for c, t in zip(m.source_index, m.target_index))
    coco = np.arange(17 * 2, dtype=np.float64).reshape(17, 2) + 1
    out = m.convert(coco)
    assert out.shape == (308, 2) and np.array_equal(out[62], coco[9]) and np.array_equal(out[41], coco[10])
    assert np.count_nonzero(out.any(-1)) == 17
    back = keypoint_mapping("sapiens308", "coco17").convert(out)
    assert np.array_equal(back, coco)

    wb = get_keypoint_set("wholebody133")
    m = keypoint_mapping("wholebody133", "sapiens308")
    assert len(m) == 63 == len(keypoint_mapping("sapiens308", "wholebody133"))
    pairs = {wb.names[a]: s.names[b] for a, b in zip(m.source_index, m.target_index)}
    assert pairs["left_wrist"] == "left_wrist" and pairs["right_heel"] == "right_heel"
    assert pairs["left_thumb1"] == "left_thumb_third_joint" and pairs["right_pinky_finger1"] == "right_pinky_finger_third_joint"
    assert pairs["left_middle_finger4"] == "left_middle_finger4"
    assert not {"left_hand_root", "right_hand_root"} & set(pairs)  # Goliath's hand root is the wrist itself
    assert not any(n.startswith("face_") for n in pairs)  # iBUG-68 and Goliath's face points are named apart
    assert set(m.unmapped_target) == set(s.names[63:])  # the 7 extra points and 238 face points
    assert len(m.unmapped_target) == 245


def test_other_sets_map_to_sapiens308_like_the_sapiens_converters():
    # Sapiens' aic2goliath / crowdpose2goliath converters match exact names, neck included;
    # MPII's upper_neck / thorax stay unmatched, as poseforge never pairs them with a neck.
    for name, n in (("crowdpose14", 13), ("aic14", 13), ("mpii16", 12)):
        m = keypoint_mapping(name, "sapiens308")
        assert len(m) == n and ("neck" in m.names) == (name != "mpii16")
    assert len(keypoint_mapping("ap10k17", "sapiens308")) == 0  # animals share nothing with people


# ---------------------------------------------------------------------------------------------- synthetic labels
@pytest.mark.parametrize("people, size", [((1, 1), (96, 128)), ((2, 3), (160, 120))])
def test_synthetic_sapiens308_labels_are_the_wholebody_labels_of_shared_joints(people, size):
    kw = dict(seed=7, image_size=size, people=people)
    sap = SyntheticPoseDataset(4, keypoint_set="sapiens308", **kw)
    wb = SyntheticPoseDataset(4, keypoint_set="wholebody133", **kw)
    coco = SyntheticPoseDataset(4, keypoint_set="coco17", **kw)
    m = keypoint_mapping("wholebody133", "sapiens308")
    src, dst = list(m.source_index), list(m.target_index)
    labelled = sap.labelled
    assert labelled.sum() == 63 and np.array_equal(np.flatnonzero(labelled), np.sort(dst))
    assert wb.labelled.all() and coco.labelled.all()
    from_coco = keypoint_mapping("coco17", "sapiens308")
    coco_src, coco_dst = list(from_coco.source_index), list(from_coco.target_index)
    seen = 0
    for rs, rw, rc in zip(sap.render_batch(range(3)), wb.render_batch(range(3)), coco.render_batch(range(3))):
        assert np.array_equal(rs.image, rw.image) and len(rs.instances) == len(rw.instances) == len(rc.instances)
        for s, w, c in zip(rs.instances, rw.instances, rc.instances):
            assert s.keypoint_set == "sapiens308" and s.keypoints.shape == (308, 2) and s.visibility.shape == (308,)
            assert np.array_equal(s.keypoints[dst], w.keypoints[src]) and np.array_equal(s.visibility[dst], w.visibility[src])
            assert np.array_equal(s.extras["keypoints_cam"][dst], w.extras["keypoints_cam"][src])
            assert np.array_equal(s.keypoints[coco_dst], c.keypoints[coco_src])
            assert np.array_equal(s.visibility[coco_dst], c.visibility[coco_src])
            # Joints the figure does not model: unlabeled, never a position.
            assert not s.visibility[~labelled].any() and not s.keypoints[~labelled].any()
            assert not s.extras["keypoints_cam"][~labelled].any() and not s.extras["slack"][~labelled].any()
            assert np.array_equal(s.bbox, w.bbox) and s.area == w.area
            seen += int((s.visibility == 2).sum())
    assert seen > 40  # real labels were compared, not only zeros


def test_synthetic_sapiens308_hands_and_feet_are_labelled():
    ds = SyntheticPoseDataset(6, seed=1, image_size=(144, 192), people=(1, 1), keypoint_set="sapiens308")
    ks = ds.keypoint_set
    vis = np.stack([i.visibility for r in ds.render_batch(range(6)) for i in r.instances])
    for name in ("left_big_toe", "right_heel", "left_thumb_third_joint", "right_forefinger4", "left_wrist"):
        assert (vis[:, ks.index(name)] > 0).any(), name
    assert not vis[:, ks.index("neck")].any() and not vis[:, 70:].any()


# ---------------------------------------------------------------------------------------------- drawing and CLI
def test_draw_pose_draws_sapiens308_with_its_colours():
    ks = get_keypoint_set("sapiens308")
    image = np.zeros((120, 120, 3), dtype=np.uint8)
    kps = np.zeros((1, 308, 2))
    vis = np.zeros((1, 308))
    for name, xy in (("left_shoulder", (30, 20)), ("left_elbow", (30, 60)), ("neck", (90, 90)), ("tip_of_nose", (60, 100))):
        kps[0, ks.index(name)] = xy
        vis[0, ks.index(name)] = 2
    out = draw_pose(image, kps, vis, "sapiens308", threshold=0.5, radius=3, thickness=3)
    assert tuple(out[40, 30]) == ORANGE  # the left upper-arm link
    assert tuple(out[90, 90]) == (0, 200, 80) and tuple(out[100, 60]) == (240, 240, 240)  # centre and face points
    assert not out[5:15, 100:115].any()  # unlabeled joints draw nothing


def test_synth_cli_writes_a_sapiens308_coco_dataset(tmp_path):
    out = tmp_path / "sap"
    assert main(["synth", "--out", str(out), "--num-images", "3", "--size", "96x128", "--people", "1",
                 "--keypoints", "sapiens308", "--seed", "2", "--contact-sheet"]) == 0
    doc = json.loads((out / "annotations.json").read_text())
    assert doc["categories"][0]["keypoints"] == list(get_keypoint_set("sapiens308").names)
    ann = doc["annotations"][0]
    assert len(ann["keypoints"]) == 3 * 308 and "face_kpts" not in ann
    assert ann["num_keypoints"] == int((np.asarray(ann["keypoints"][2::3]) > 0).sum()) <= 63
    data = read_coco(out / "annotations.json", check_images=True)
    assert data.keypoint_set.name == "sapiens308"
    want = [i for r in SyntheticPoseDataset(3, seed=2, image_size=(96, 128), people=(1, 1),
                                            keypoint_set="sapiens308").render_batch(range(3)) for i in r.instances]
    assert len(data.instances) == len(want)
    for got, exp in zip(data.instances, want):
        assert np.allclose(got.keypoints, exp.keypoints, atol=1e-4) and np.array_equal(got.visibility, exp.visibility)
    results = [{"image_id": i.image_id, "category_id": i.category_id, "score": 1.0,
                "keypoints": np.concatenate([i.keypoints, (i.visibility > 0)[:, None]], 1).reshape(-1).tolist()}
               for i in data.instances]
    assert evaluate_keypoints(out / "annotations.json", results)["AP"] == pytest.approx(1.0)
    assert (out / "contact_sheet.jpg").is_file()
