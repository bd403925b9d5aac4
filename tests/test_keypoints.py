import json

import numpy as np
import pytest

from poseforge import PoseforgeError, get_keypoint_set, list_keypoint_sets
from poseforge.keypoints import match_keypoint_set

EXPECTED = {"coco17": 17, "crowdpose14": 14, "mpii16": 16, "aic14": 14, "ap10k17": 17, "wholebody133": 133}


def test_all_sets_present_and_consistent():
    assert set(EXPECTED) <= set(list_keypoint_sets())
    for name, k in EXPECTED.items():
        ks = get_keypoint_set(name)
        assert ks.num_keypoints == k == len(ks.sigmas) == len(ks.joint_weights) == len(ks.keypoint_colors)
        assert len(ks.link_colors) == len(ks.skeleton)
        assert all(0 <= a < k and 0 <= b < k for a, b in ks.skeleton)
        idx = ks.flip_index
        assert sorted(idx) == list(range(k))  # a permutation
        assert np.array_equal(idx[idx], np.arange(k))  # an involution: flipping twice is identity
        for a, b in ks.flip_pairs:  # pairs are left/right twins by name
            na, nb = ks.names[a], ks.names[b]
            if ks.name != "wholebody133" or a < 23 or a >= 91:
                assert na.replace("left", "X").replace("right", "X") == nb.replace("right", "X").replace("left", "X")


@pytest.mark.parametrize("name,ref", [("coco17", "coco"), ("wholebody133", "coco_wholebody"), ("crowdpose14", "crowdpose"),
                                      ("mpii16", "mpii"), ("aic14", "aic"), ("ap10k17", "ap10k")])
def test_numbers_equal_upstream_reference(shared_dir, name, ref):
    reference = json.loads((shared_dir / "reference" / "keypoint-sets.json").read_text())["datasets"][ref]
    ks = get_keypoint_set(name)
    assert list(ks.sigmas) == reference["sigmas"]
    assert list(ks.joint_weights) == reference["joint_weights"]
    assert sorted(map(tuple, ks.flip_pairs)) == sorted(map(tuple, reference["flip_pairs"]))
    assert set(map(tuple, reference["skeleton"])) <= set(ks.skeleton)


def test_coco_sigmas_values():
    assert get_keypoint_set("coco17").sigmas[:3] == (0.026, 0.025, 0.025)
    wb = get_keypoint_set("wholebody133")
    assert wb.sigmas[:17] == get_keypoint_set("coco17").sigmas
    assert wb.part_slice("left_hand") == slice(91, 112) and wb.names[91] == "left_hand_root"
    assert wb.flip_index[91 + 5] == 112 + 5


def test_unknown_set_is_clear_error():
    with pytest.raises(PoseforgeError, match="unknown keypoint set 'coco18'"):
        get_keypoint_set("coco18")
    with pytest.raises(PoseforgeError, match="no part 'tail'"):
        get_keypoint_set("coco17").part_slice("tail")


def test_match_by_names_and_count():
    aic = ["Right Shoulder", "Right Elbow", "Right Wrist", "Left Shoulder", "Left Elbow", "Left Wrist", "Right Hip",
           "Right Knee", "Right Ankle", "Left Hip", "Left Knee", "Left Ankle", "Head top", "Neck"]
    assert match_keypoint_set(aic, 14).name == "aic14"
    crowd = list(get_keypoint_set("crowdpose14").names)
    crowd[12] = "head"  # how the CrowdPose json spells it
    assert match_keypoint_set(crowd, 14).name == "crowdpose14"
    assert match_keypoint_set(None, 14) is None  # ambiguous by count alone
    assert match_keypoint_set(None, 16).name == "mpii16"
    ap10k = ["left_eye", "right_eye", "nose", "neck", "root_of_tail", "left_shoulder", "left_elbow", "left_front_paw",
             "right_shoulder", "right_elbow", "right_front_paw", "left_hip", "left_knee", "left_back_paw", "right_hip",
             "right_knee", "right_back_paw"]
    assert match_keypoint_set(ap10k, 17).name == "ap10k17"
    assert match_keypoint_set(None, 17).name == "coco17"
