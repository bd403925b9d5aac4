"""COCO keypoint evaluation against the reference evaluators, post-processing, PCK/AUC/EPE."""
from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from poseforge import DataError, PoseforgeError
from poseforge.data import read_coco
from poseforge.evaluation import (STAT_NAMES, coco_metric, evaluate_keypoints, format_table, keypoint_auc, keypoint_epe,
                                  oks_matrix, oks_nms, oks_nms_indices, pck_accuracy, rescore, rescore_results)
from poseforge.keypoints import get_keypoint_set

PARTS = ("body", "foot", "face", "lefthand", "righthand", "wholebody")
WHOLEBODY_FIELDS = ("keypoints", "foot_kpts", "face_kpts", "lefthand_kpts", "righthand_kpts")
CROWD_STATS = ("AP", "AP50", "AP75", "AR", "AR50", "AR75", "AP(E)", "AP(M)", "AP(H)")  # xtcocotools' crowd order


# ----------------------------------------------------------------------------- reference evaluators
@pytest.fixture(scope="session")
def xtcocotools():
    """xtcocotools' (COCO, COCOeval), imported as the xtcocotools backend does (keypoint evaluation only)."""
    pytest.importorskip("xtcocotools")
    from poseforge.evaluation.coco import _import_xtcocotools
    COCO, COCOeval = _import_xtcocotools()
    return COCO, COCOeval


@pytest.fixture(scope="session")
def pycocotools():
    coco = pytest.importorskip("pycocotools.coco")
    cocoeval = pytest.importorskip("pycocotools.cocoeval")
    return coco.COCO, cocoeval.COCOeval


def xtcocotools_stats(xtcocotools, gt_file, results, sigmas, iou_type="keypoints", use_area=True) -> np.ndarray:
    COCO, COCOeval = xtcocotools
    with contextlib.redirect_stdout(io.StringIO()), np.errstate(all="ignore"):
        gt = COCO(str(gt_file))
        dt = gt.loadRes(copy.deepcopy(results))
        evaluator = COCOeval(gt, dt, iou_type, np.asarray(sigmas), use_area)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return np.asarray(evaluator.stats)


def pycocotools_stats(pycocotools, gt_file, results, sigmas) -> np.ndarray:
    COCO, COCOeval = pycocotools
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_file))
        dt = gt.loadRes(copy.deepcopy(results))
        evaluator = COCOeval(gt, dt, "keypoints")
        evaluator.params.kpt_oks_sigmas = np.asarray(sigmas)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return np.asarray(evaluator.stats)


def as_array(stats: dict, names=STAT_NAMES, prefix: str = "") -> np.ndarray:
    return np.asarray([stats[prefix + n] for n in names])


# ----------------------------------------------------------------------------- result builders
def gt_as_results(doc: dict, fields=("keypoints",)) -> list[dict]:
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "score": 1.0, **{f: a[f] for f in fields}}
            for a in doc["annotations"]]


def scaled(doc: dict, sx: float = 0.98, sy: float = 1.02) -> list[dict]:
    """The README recipe: every x times 0.98, y times 1.02, score 1."""
    out = []
    for a in doc["annotations"]:
        k = np.asarray(a["keypoints"], dtype=np.float64).reshape(-1, 3)
        k[:, 0] *= sx
        k[:, 1] *= sy
        out.append({"image_id": a["image_id"], "category_id": a["category_id"], "keypoints": k.reshape(-1).tolist(), "score": 1.0})
    return out


def noisy(flat, rng, sigma_px: float) -> list[float]:
    """Gaussian-jittered keypoints; labeled ones scored in (0.1, 1), unlabeled ones sometimes scored."""
    k = np.asarray(flat, dtype=np.float64).reshape(-1, 3).copy()
    k[:, :2] += rng.normal(0.0, sigma_px, (len(k), 2))
    k[:, 2] = np.where(k[:, 2] > 0, rng.uniform(0.1, 1.0, len(k)), rng.uniform(0.0, 0.3, len(k)) * (rng.random(len(k)) < 0.5))
    return k.reshape(-1).tolist()


def noisy_results(doc: dict, rng, sigma_px: float, fields=("keypoints",), extra_per_image: int = 1) -> list[dict]:
    """One jittered result per annotation plus a few false positives per image, random scores."""
    out = []
    for a in doc["annotations"]:
        out.append({"image_id": a["image_id"], "category_id": a["category_id"], "score": float(rng.uniform(0.3, 1.0)),
                    **{f: noisy(a[f], rng, sigma_px) for f in fields}})
    by_image = {}
    for a in doc["annotations"]:
        by_image.setdefault(a["image_id"], a)
    for image_id, a in by_image.items():
        for _ in range(extra_per_image):
            out.append({"image_id": image_id, "category_id": a["category_id"], "score": float(rng.uniform(0.0, 0.6)),
                        **{f: noisy(a[f], rng, 8 * sigma_px) for f in fields}})
    return out


@pytest.fixture(scope="module")
def coco_doc(coco_file):
    return json.loads(coco_file.read_text())


# ----------------------------------------------------------------------------- COCO-17
README_PERTURBED = {"AP": 0.5004, "AP50": 0.8630, "AP75": 0.4670, "APm": 0.4248, "APl": 0.6195,
                    "AR": 0.5833, "AR50": 0.9167, "AR75": 0.5833, "ARm": 0.44, "ARl": 0.6857}


def test_ground_truth_as_results_scores_one(coco_file, coco_doc):
    stats = evaluate_keypoints(coco_file, gt_as_results(coco_doc))
    assert list(stats) == list(STAT_NAMES)
    assert stats == {name: 1.0 for name in STAT_NAMES}


def test_perturbed_equals_readme_and_xtcocotools(coco_file, coco_doc, xtcocotools):
    results = scaled(coco_doc)
    stats = evaluate_keypoints(coco_file, results)
    assert {k: round(v, 4) for k, v in stats.items()} == README_PERTURBED
    reference = xtcocotools_stats(xtcocotools, coco_file, results, get_keypoint_set("coco17").sigmas)
    np.testing.assert_allclose(as_array(stats), reference, rtol=0, atol=1e-6)


def test_perturbed_equals_pycocotools_on_scored_results(coco_file, coco_doc, pycocotools, caplog):
    """pycocotools also scores results whose keypoint scores are all 0 (here: copies of the two
    annotations without keypoints); xtcocotools and poseforge drop them, with a warning."""
    results = scaled(coco_doc)
    scored = [r for r in results if any(v > 0 for v in r["keypoints"][2::3])]
    assert len(scored) == len(results) - 2
    with caplog.at_level(logging.WARNING, logger="poseforge"):
        stats = evaluate_keypoints(coco_file, results)
    assert "2 of 14 results" in caplog.text
    reference = pycocotools_stats(pycocotools, coco_file, scored, get_keypoint_set("coco17").sigmas)
    np.testing.assert_allclose(as_array(stats), reference, rtol=0, atol=1e-6)
    assert as_array(evaluate_keypoints(coco_file, scored)).tolist() == as_array(stats).tolist()


@pytest.mark.parametrize("seed", [0, 1])
def test_noisy_results_equal_both_references(coco_file, coco_doc, xtcocotools, pycocotools, seed):
    rng = np.random.default_rng(seed)
    results = noisy_results(coco_doc, rng, sigma_px=4.0, extra_per_image=2)
    stats = evaluate_keypoints(coco_file, results)
    sigmas = get_keypoint_set("coco17").sigmas
    np.testing.assert_allclose(as_array(stats), xtcocotools_stats(xtcocotools, coco_file, results, sigmas), rtol=0, atol=1e-6)
    scored = [r for r in results if any(v > 0 for v in r["keypoints"][2::3])]
    np.testing.assert_allclose(as_array(stats), pycocotools_stats(pycocotools, coco_file, scored, sigmas), rtol=0, atol=1e-6)
    assert 0.1 < stats["AP"] < 0.95  # a discriminating case, not a saturated one


def test_backends_agree(coco_file, coco_doc, xtcocotools):
    results = noisy_results(coco_doc, np.random.default_rng(3), sigma_px=5.0)
    stats = {b: evaluate_keypoints(coco_file, results, backend=b) for b in ("faster", "pycocotools", "xtcocotools")}
    for backend in ("pycocotools", "xtcocotools"):
        np.testing.assert_allclose(as_array(stats[backend]), as_array(stats["faster"]), rtol=0, atol=1e-12)
    with pytest.raises(PoseforgeError, match="unknown evaluation backend"):
        evaluate_keypoints(coco_file, results, backend="nope")


def test_ground_truth_inputs_agree(coco_file, coco_doc):
    results = noisy_results(coco_doc, np.random.default_rng(5), sigma_px=4.0)
    from_path = evaluate_keypoints(coco_file, results)
    assert evaluate_keypoints(read_coco(coco_file), results) == from_path
    assert evaluate_keypoints(copy.deepcopy(coco_doc), results) == from_path


def test_custom_sigmas_and_use_area_change_the_score(coco_file, coco_doc, xtcocotools):
    results = noisy_results(coco_doc, np.random.default_rng(6), sigma_px=4.0)
    sigmas = np.full(17, 0.05)
    stats = evaluate_keypoints(coco_file, results, sigmas=sigmas, use_area=False)
    reference = xtcocotools_stats(xtcocotools, coco_file, results, sigmas, use_area=False)
    np.testing.assert_allclose(as_array(stats), reference, rtol=0, atol=1e-6)
    assert stats["AP"] != evaluate_keypoints(coco_file, results)["AP"]
    with pytest.raises(PoseforgeError, match="17 positive numbers"):
        evaluate_keypoints(coco_file, results, sigmas=np.full(16, 0.05))


# ----------------------------------------------------------------------------- mmpose CocoMetric
def mmpose_topdown_results(doc: dict) -> list[dict]:
    """mmpose's test_topdown_alignment predictions: float32 keypoints x*0.98, y*1.02, scores = visibility*0.8,
    box score 0.98, area = the product of the bbox scale (w*1.25, h*1.25)."""
    out = []
    for a in doc["annotations"]:
        w, h = a["bbox"][2], a["bbox"][3]
        k = np.asarray(a["keypoints"], dtype=np.float32).reshape(-1, 3)
        k[:, 0] = k[:, 0] * 0.98
        k[:, 1] = k[:, 1] * 1.02
        k[:, 2] = k[:, 2] * 0.8
        out.append({"image_id": a["image_id"], "category_id": 1, "keypoints": k.reshape(-1).tolist(),
                    "score": float(np.float32(0.98)), "area": float(np.prod(np.array([w * 1.25, h * 1.25])))})
    return out


# Expected values of mmpose 1.x tests/test_evaluation/test_metrics/test_coco_metric.py (test_topdown_alignment)
MMPOSE_BBOX_KEYPOINT = {"AP": 0.5287458745874587, "AP50": 0.9042904290429042, "AP75": 0.5009900990099009,
                        "APm": 0.42475247524752474, "APl": 0.6219554455445544, "AR": 0.5833333333333333,
                        "AR50": 0.9166666666666666, "AR75": 0.5833333333333334, "ARm": 0.44000000000000006,
                        "ARl": 0.6857142857142857}
MMPOSE_BBOX_RLE = {"AP": 0.5004950495049505, "AP50": 0.8836633663366337, "AP75": 0.4679867986798679,
                   "APm": 0.42475247524752474, "APl": 0.5814108910891089, "AR": 0.5833333333333333,
                   "AR50": 0.9166666666666666, "AR75": 0.5833333333333334, "ARm": 0.44000000000000006,
                   "ARl": 0.6857142857142857}


@pytest.mark.parametrize("score_mode,expected", [("bbox_keypoint", MMPOSE_BBOX_KEYPOINT), ("bbox_rle", MMPOSE_BBOX_RLE)])
def test_coco_metric_reproduces_mmpose(coco_file, coco_doc, score_mode, expected):
    stats = coco_metric(coco_file, mmpose_topdown_results(coco_doc), score_mode=score_mode)
    np.testing.assert_allclose(as_array(stats), as_array(expected), rtol=0, atol=1e-9)


def test_coco_metric_equals_manual_pipeline(coco_file, coco_doc):
    results = mmpose_topdown_results(coco_doc)
    kept = oks_nms(rescore_results(results), thr=0.9, sigmas="coco17")
    assert coco_metric(coco_file, results) == evaluate_keypoints(coco_file, kept)
    # without NMS only the rescoring applies
    assert coco_metric(coco_file, results, nms_thr=None) == evaluate_keypoints(coco_file, rescore_results(results))


# ----------------------------------------------------------------------------- other keypoint sets
def test_aic_without_area_equals_references(peer_data, tmp_path, xtcocotools, pycocotools):
    """AIC has no area and no iscrowd: the scale is 0.53 x box area (xtcocotools use_area=False).
    The references need iscrowd (and pycocotools an area), so they read a completed copy."""
    gt_file = peer_data / "aic/test_aic.json"
    doc = json.loads(gt_file.read_text())
    results = noisy_results(doc, np.random.default_rng(7), sigma_px=3.0)
    stats = evaluate_keypoints(gt_file, results)
    sigmas = get_keypoint_set("aic14").sigmas
    for a in doc["annotations"]:
        a["iscrowd"] = 0
    (tmp_path / "aic_xt.json").write_text(json.dumps(doc))
    np.testing.assert_allclose(as_array(stats), xtcocotools_stats(xtcocotools, tmp_path / "aic_xt.json", results, sigmas, use_area=False),
                               rtol=0, atol=1e-6)
    for a in doc["annotations"]:
        a["area"] = a["bbox"][2] * a["bbox"][3] * 0.53
    (tmp_path / "aic_py.json").write_text(json.dumps(doc))
    scored = [r for r in results if any(v > 0 for v in r["keypoints"][2::3])]
    np.testing.assert_allclose(as_array(stats), pycocotools_stats(pycocotools, tmp_path / "aic_py.json", scored, sigmas), rtol=0, atol=1e-6)
    assert 0.05 < stats["AP"] < 0.95


def test_ap10k_equals_references(peer_data, xtcocotools, pycocotools):
    gt_file = peer_data / "ap10k/test_ap10k.json"
    doc = json.loads(gt_file.read_text())
    results = noisy_results(doc, np.random.default_rng(8), sigma_px=25.0)
    stats = evaluate_keypoints(gt_file, results)
    sigmas = get_keypoint_set("ap10k17").sigmas
    assert sigmas != get_keypoint_set("coco17").sigmas
    np.testing.assert_allclose(as_array(stats), xtcocotools_stats(xtcocotools, gt_file, results, sigmas), rtol=0, atol=1e-6)
    scored = [r for r in results if any(v > 0 for v in r["keypoints"][2::3])]
    np.testing.assert_allclose(as_array(stats), pycocotools_stats(pycocotools, gt_file, scored, sigmas), rtol=0, atol=1e-6)
    assert 0.05 < stats["AP"] < 0.95
    assert evaluate_keypoints(gt_file, gt_as_results(doc))["AP"] == 1.0


# ----------------------------------------------------------------------------- COCO-WholeBody
@pytest.fixture(scope="module")
def wholebody_file(peer_data):
    return peer_data / "coco/test_coco_wholebody.json"


def test_wholebody_ground_truth_scores_one_per_part(wholebody_file):
    doc = json.loads(wholebody_file.read_text())
    stats = evaluate_keypoints(wholebody_file, gt_as_results(doc, WHOLEBODY_FIELDS))
    for part in PARTS:
        values = dict(zip(STAT_NAMES, as_array(stats, prefix=f"{part}/").tolist()))
        # -1 (COCO's "nothing to score") only where a part has no labeled instance of that size
        assert all(values[n] == 1.0 for n in ("AP", "AP50", "AP75", "AR", "AR50", "AR75")), part
        assert set(values.values()) <= {1.0, -1.0}, part
    assert stats["face/APm"] == -1.0 and stats["body/APm"] == 1.0
    assert as_array(stats).tolist() == [1.0] * 10
    # mmpose's CocoWholeBodyMetric pipeline (rescoring + OKS-NMS) on the same input, parsed ground truth
    assert coco_metric(read_coco(wholebody_file), gt_as_results(doc, WHOLEBODY_FIELDS)) == stats


def test_wholebody_parts_equal_xtcocotools(wholebody_file, xtcocotools):
    """mmpose CocoWholeBodyMetric: each part scored by xtcocotools with its slice of the sigmas."""
    doc = json.loads(wholebody_file.read_text())
    results = noisy_results(doc, np.random.default_rng(9), sigma_px=2.0, fields=WHOLEBODY_FIELDS)
    stats = evaluate_keypoints(wholebody_file, results)
    sigmas = np.asarray(get_keypoint_set("wholebody133").sigmas)
    cuts = np.cumsum([0, 17, 6, 68, 21, 21])
    with pytest.warns(UserWarning):  # xtcocotools: "'foot_score' not found, use 'score' instead"
        for i, part in enumerate(PARTS):
            part_sigmas = sigmas if part == "wholebody" else sigmas[cuts[i]:cuts[i + 1]]
            reference = xtcocotools_stats(xtcocotools, wholebody_file, results, part_sigmas, iou_type=f"keypoints_{part}")
            np.testing.assert_allclose(as_array(stats, prefix=f"{part}/"), reference, rtol=0, atol=1e-6, err_msg=part)
    assert as_array(stats).tolist() == as_array(stats, prefix="wholebody/").tolist()
    assert len({stats[f"{p}/AP"] for p in PARTS}) == len(PARTS)  # the parts really differ


def test_wholebody_flat_results_equal_xtcocotools(peer_data, xtcocotools):
    """All 133 keypoints in one 'keypoints' array (the partition-metric file) score as one set."""
    gt_file = peer_data / "coco/test_keypoint_partition_metric.json"
    doc = json.loads(gt_file.read_text())
    results = noisy_results(doc, np.random.default_rng(10), sigma_px=2.0)
    stats = evaluate_keypoints(gt_file, results, parts=False)
    assert set(stats) == set(STAT_NAMES)
    reference = xtcocotools_stats(xtcocotools, gt_file, results, get_keypoint_set("wholebody133").sigmas)
    np.testing.assert_allclose(as_array(stats), reference, rtol=0, atol=1e-6)
    only_face = evaluate_keypoints(gt_file, results, parts=["face"])
    assert {k.split("/")[0] for k in only_face if "/" in k} == {"face", "wholebody"}
    with pytest.raises(PoseforgeError, match="no part 'tail'"):
        evaluate_keypoints(gt_file, results, parts=["tail"])


# ----------------------------------------------------------------------------- CrowdPose
@pytest.fixture(scope="module")
def crowdpose_file(coco_doc, tmp_path_factory):
    """A CrowdPose-style file from the COCO sample: 14 keypoints (COCO 5-16, nose as top of head, left
    eye as neck), crowdIndex on the images, num_keypoints counting only visible (v=2) keypoints."""
    doc = copy.deepcopy(coco_doc)
    order = [5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 0, 1]
    for image, crowd_index in zip(doc["images"], [0.1, 0.5, 0.9, 0.3]):
        image["crowdIndex"] = crowd_index
    for n, ann in enumerate(doc["annotations"]):
        k = np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3)[order]
        if n == 1:  # labeled but occluded everywhere: CrowdPose ignores it
            k[:, 2] = np.minimum(k[:, 2], 1)
        ann["keypoints"] = k.reshape(-1).tolist()
        ann["num_keypoints"] = int((k[:, 2] == 2).sum())
    doc["categories"][0]["keypoints"] = list(get_keypoint_set("crowdpose14").names)
    doc["categories"][0]["skeleton"] = []
    path = tmp_path_factory.mktemp("crowdpose") / "crowdpose.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("use_area", [False, True])
def test_crowdpose_equals_xtcocotools(crowdpose_file, xtcocotools, use_area):
    doc = json.loads(crowdpose_file.read_text())
    assert any(a["num_keypoints"] == 0 and any(a["keypoints"][2::3]) for a in doc["annotations"])
    results = noisy_results(doc, np.random.default_rng(11), sigma_px=5.0)
    stats = evaluate_keypoints(crowdpose_file, results, use_area=use_area)
    assert get_keypoint_set("crowdpose14").sigmas != get_keypoint_set("coco17").sigmas[:14]
    reference = xtcocotools_stats(xtcocotools, crowdpose_file, results, get_keypoint_set("crowdpose14").sigmas,
                                  iou_type="keypoints_crowd", use_area=use_area)
    np.testing.assert_allclose(as_array(stats, CROWD_STATS), reference, rtol=0, atol=1e-6)
    assert len({stats["AP(E)"], stats["AP(M)"], stats["AP(H)"]}) == 3
    plain = evaluate_keypoints(crowdpose_file, results, use_area=use_area, crowdpose=False)
    assert "AP(E)" not in plain and plain["AP"] != stats["AP"]  # the num_keypoints ignore rule matters here


def test_crowdpose_needs_crowd_index_everywhere(coco_file, coco_doc):
    with pytest.raises(DataError, match="crowdIndex"):
        evaluate_keypoints(coco_file, gt_as_results(coco_doc), crowdpose=True)


# ----------------------------------------------------------------------------- bad input
def test_bad_results_name_record_and_field(coco_file, coco_doc, tmp_path):
    good = scaled(coco_doc)
    cases = [
        (lambda r: r[3].__setitem__("keypoints", r[3]["keypoints"][:-1]), r"result 3 \(image \d+\): field 'keypoints': expected 51 numbers"),
        (lambda r: r[2].__setitem__("image_id", 999999), r"result 2: field 'image_id': unknown image id 999999"),
        (lambda r: r[1].__setitem__("score", float("nan")), r"result 1 \(image \d+\): field 'score': non-finite"),
        (lambda r: r[4]["keypoints"].__setitem__(7, float("inf")), r"result 4 \(image \d+\): field 'keypoints': non-finite value inf at position 7"),
        (lambda r: r[5].pop("category_id"), r"result 5: field 'category_id': missing"),
        (lambda r: r[0]["keypoints"].__setitem__(0, "x"), r"result 0 \(image \d+\): field 'keypoints': expected numbers, found 'x'"),
    ]
    for mutate, message in cases:
        results = copy.deepcopy(good)
        mutate(results)
        path = tmp_path / "res.json"
        path.write_text(json.dumps(results))
        with pytest.raises(DataError, match=f"^{path}: {message}"):
            evaluate_keypoints(coco_file, path)
    with pytest.raises(PoseforgeError, match="file not found"):
        evaluate_keypoints(coco_file, tmp_path / "missing.json")
    with pytest.raises(DataError, match="expected a list of COCO keypoint results"):
        evaluate_keypoints(coco_file, {"annotations": []})


def test_empty_results_score_zero_with_warning(coco_file, caplog):
    with caplog.at_level(logging.WARNING, logger="poseforge"):
        stats = evaluate_keypoints(coco_file, [])
    assert stats == {name: 0.0 for name in STAT_NAMES}
    assert "no results" in caplog.text


# ----------------------------------------------------------------------------- rescoring and OKS-NMS
def test_rescore_modes_by_hand():
    box = np.array([0.8, 0.5])
    kpt = np.array([[0.1, 0.5, 0.9], [0.1, 0.2, 0.15]])
    np.testing.assert_allclose(rescore(box, kpt, "bbox_keypoint", 0.2), [0.8 * 0.7, 0.0])
    np.testing.assert_allclose(rescore(box, kpt, "bbox"), box)
    np.testing.assert_allclose(rescore(box, kpt, "keypoint"), [0.5, 0.15])
    np.testing.assert_allclose(rescore(box, kpt, "bbox_rle"), [0.8 + 0.5 + 0.9, 0.5 + 0.15 + 0.2])
    with pytest.raises(PoseforgeError, match="unknown score_mode"):
        rescore(box, kpt, "mean")
    records = [{"image_id": 1, "category_id": 1, "keypoints": [0, 0, 0.1, 1, 1, 0.5, 2, 2, 0.9], "score": 0.8}]
    once = rescore_results(records)
    assert once[0]["score"] == pytest.approx(0.56) and once[0]["bbox_score"] == 0.8
    assert rescore_results(once) == once and records[0]["score"] == 0.8  # idempotent, input untouched


def reference_oks_nms(kpts: np.ndarray, scores: np.ndarray, areas: np.ndarray, sigmas: np.ndarray, thr: float) -> list[int]:
    """Straightforward per-pair OKS-NMS written from the formula, for comparison."""
    variances = (sigmas * 2) ** 2
    order = list(np.argsort(scores, kind="stable")[::-1])
    keep = []
    while order:
        i = order.pop(0)
        keep.append(int(i))
        survivors = []
        for j in order:
            d2 = (kpts[j, :, 0] - kpts[i, :, 0]) ** 2 + (kpts[j, :, 1] - kpts[i, :, 1]) ** 2
            e = d2 / variances / ((areas[i] + areas[j]) / 2 + np.spacing(1)) / 2
            if np.float32(np.sum(np.exp(-e)) / len(e)) <= thr:
                survivors.append(j)
        order = survivors
    return keep


def test_oks_nms_matches_reference_loop():
    rng = np.random.default_rng(12)
    sigmas = np.asarray(get_keypoint_set("coco17").sigmas)
    for _ in range(20):
        n = int(rng.integers(1, 12))
        centers = rng.uniform(0, 200, (3, 1, 2))
        kpts = np.concatenate([centers[rng.integers(0, 3, n)] + rng.normal(0, 6, (n, 17, 2)), rng.uniform(0, 1, (n, 17, 1))], axis=2)
        scores = np.round(rng.uniform(0, 1, n), 1)  # ties included
        areas = rng.uniform(500, 5000, n)
        for thr in (0.3, 0.9):
            assert oks_nms_indices(kpts, scores, areas, sigmas, thr).tolist() == reference_oks_nms(kpts, scores, areas, sigmas, thr)


def test_oks_nms_by_hand():
    base = np.array([[10.0, 10.0, 0.9], [30.0, 10.0, 0.9], [20.0, 40.0, 0.9]])
    far = base + [100.0, 0.0, 0.0]

    def record(image_id, kps, score):
        return {"image_id": image_id, "category_id": 1, "keypoints": kps.reshape(-1).tolist(), "score": score, "area": 900.0}

    results = [record(1, base, 0.5), record(1, base + [0.5, 0, 0], 0.7), record(1, far, 0.6), record(2, base, 0.1)]
    kept = oks_nms(results, thr=0.9, sigmas=[0.05, 0.05, 0.05])
    assert [(r["image_id"], r["score"]) for r in kept] == [(1, 0.7), (1, 0.6), (2, 0.1)]
    overlap = oks_matrix(np.stack([base, base + [0.5, 0, 0]]), np.array([900.0, 900.0]), np.full(3, 0.05))
    expected = np.exp(-0.25 / (0.1**2) / 900 / 2 * np.array([1.0, 1.0, 1.0])).mean()
    assert overlap[0, 0] == 1.0 and overlap[0, 1] == overlap[1, 0] == pytest.approx(expected, abs=1e-7)
    # equal scores: mmpose keeps the later record first
    tie = oks_nms([record(1, base, 0.5), record(1, base, 0.5)], thr=0.9, sigmas=[0.05] * 3)
    assert len(tie) == 1
    assert oks_nms_indices(np.stack([base, base]), np.array([0.5, 0.5]), np.array([900.0, 900.0]), np.full(3, 0.05)).tolist() == [1]


# ----------------------------------------------------------------------------- table
def test_format_table_rows_and_values(wholebody_file):
    doc = json.loads(wholebody_file.read_text())
    text = format_table(evaluate_keypoints(wholebody_file, gt_as_results(doc, WHOLEBODY_FIELDS)))
    lines = text.splitlines()
    for part in PARTS:
        assert any(line.split()[:1] == [part] for line in lines), part
    assert lines[0].split() == ["part", *STAT_NAMES]
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:]}
    assert set(rows) == set(PARTS) and rows["face"][3] == "-1.0000" and rows["lefthand"] == ["1.0000"] * 10
    single = format_table({"AP": 0.51234, "AR": 0.25})
    assert "0.5123" in single and "0.2500" in single and "part" not in single


# ----------------------------------------------------------------------------- PCK / AUC / EPE
def test_pck_by_hand():
    gt = np.zeros((2, 3, 2))
    pred = np.array([[[1.0, 0.0], [3.0, 4.0], [0.0, 0.5]],
                     [[2.0, 0.0], [0.0, 3.0], [9.0, 9.0]]])
    mask = np.array([[True, True, True], [True, True, False]])
    normalize = np.array([[10.0, 10.0], [20.0, 20.0]])
    # normalized distances: [[0.1, 0.5, 0.05], [0.1, 0.15, masked]]
    acc, mean, count = pck_accuracy(pred, gt, mask, thr=0.2, normalize=normalize)
    np.testing.assert_allclose(acc, [1.0, 0.5, 1.0])
    assert mean == pytest.approx(2.5 / 3) and count == 3
    acc, mean, count = pck_accuracy(pred, gt, mask, thr=0.5, normalize=normalize)  # strictly below: 0.5 misses
    np.testing.assert_allclose(acc, [1.0, 0.5, 1.0])
    acc, mean, count = pck_accuracy(pred, gt, mask, thr=0.1, normalize=normalize)
    np.testing.assert_allclose(acc, [0.0, 0.0, 1.0])
    # a keypoint counted nowhere gets -1 and leaves the mean; a zero normalization drops the instance
    acc, mean, count = pck_accuracy(pred, gt, np.array([[True, True, False], [True, True, False]]), thr=0.2,
                                    normalize=np.array([[10.0, 10.0], [0.0, 20.0]]))
    np.testing.assert_allclose(acc, [1.0, 0.0, -1.0])
    assert mean == 0.5 and count == 2
    acc, mean, count = pck_accuracy(pred, gt, np.zeros((2, 3), dtype=bool), thr=0.2, normalize=normalize)
    assert acc.tolist() == [-1.0] * 3 and mean == 0.0 and count == 0


def test_auc_and_epe_by_hand():
    gt = np.zeros((1, 2, 2))
    pred = np.array([[[0.12, 0.0], [0.0, 0.47]]]) * 30.0
    mask = np.ones((1, 2), dtype=bool)
    # thresholds 0, .25, .5, .75 -> PCK 0, .5, 1, 1
    assert keypoint_auc(pred, gt, mask, 30.0, num_thrs=4) == pytest.approx(0.625)
    assert keypoint_auc(pred, gt, mask, np.array([[30.0, 30.0]]), num_thrs=4) == pytest.approx(0.625)
    pred = np.array([[[3.0, 4.0], [6.0, 8.0], [1.0, 1.0]]])
    assert keypoint_epe(pred, np.zeros((1, 3, 2)), np.array([[True, True, False]])) == pytest.approx(7.5)
    assert keypoint_epe(pred, np.zeros((1, 3, 2)), np.zeros((1, 3), dtype=bool)) == 0.0
    with pytest.raises(PoseforgeError, match="expected pred and gt"):
        keypoint_epe(pred, np.zeros((1, 2, 2)), np.ones((1, 3), dtype=bool))


# ----------------------------------------------------------------------------- mmpose oracle (optional)
ORACLE_PYTHON = Path(os.environ.get("POSEFORGE_ORACLE_PYTHON", Path(__file__).resolve().parents[2] / "oracle-venv" / "bin" / "python"))

ORACLE_SCRIPT = """
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import mm_oracle_shim  # noqa: F401  (mmpose on mmcv-lite)
from mmpose.evaluation.functional import keypoint_auc, keypoint_epe, keypoint_pck_accuracy, oks_nms
d = np.load(sys.argv[2])
out = {}
for thr in (0.05, 0.2):
    acc, avg, cnt = keypoint_pck_accuracy(d["pred"], d["gt"], d["mask"], thr, d["norm"].copy())
    out[f"pck{thr}"] = [acc.tolist(), float(avg), int(cnt)]
out["auc"] = float(keypoint_auc(d["pred"], d["gt"], d["mask"], 30.0))
out["epe"] = float(keypoint_epe(d["pred"], d["gt"], d["mask"]))
out["nms"] = []
for g in range(d["groups"].shape[0]):
    db = [{"keypoints": k, "score": s, "area": a} for k, s, a in zip(d["groups"][g], d["scores"][g], d["areas"][g])]
    out["nms"].append([int(i) for i in oks_nms(db, 0.9, d["sigmas"])])
print(json.dumps(out))
"""


def test_pck_auc_epe_nms_equal_mmpose_oracle(shared_dir, tmp_path):
    """Random cases through mmpose 1.3.2's own functions (optional oracle venv, see shared/oracle)."""
    if not ORACLE_PYTHON.exists():
        pytest.skip(f"mmpose oracle venv not found at {ORACLE_PYTHON}")
    rng = np.random.default_rng(13)
    gt = rng.uniform(0, 64, (40, 17, 2))
    pred = gt + rng.normal(0, 4, gt.shape)
    mask = rng.random((40, 17)) < 0.8
    mask[:, 3] = False  # a keypoint that never counts
    norm = rng.uniform(20, 80, (40, 2))
    norm[5] = [0.0, 30.0]  # an instance without a usable normalization
    spread = np.array([0.3, 0.5, 1.0, 2.0, 3.0, 5.0])[:, None, None, None]  # px: from near-duplicates to distinct poses
    groups = np.concatenate([rng.uniform(0, 100, (6, 1, 17, 2)) + spread * rng.normal(0, 1, (6, 8, 17, 2)),
                             rng.uniform(0, 1, (6, 8, 17, 1))], axis=-1)
    scores = np.round(rng.uniform(0, 1, (6, 8)), 1)
    areas = rng.uniform(300, 3000, (6, 8))
    sigmas = np.asarray(get_keypoint_set("coco17").sigmas)
    np.savez(tmp_path / "case.npz", pred=pred, gt=gt, mask=mask, norm=norm, groups=groups, scores=scores, areas=areas, sigmas=sigmas)
    (tmp_path / "oracle.py").write_text(ORACLE_SCRIPT)
    run = subprocess.run([str(ORACLE_PYTHON), str(tmp_path / "oracle.py"), str(shared_dir / "oracle"), str(tmp_path / "case.npz")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    expected = json.loads(run.stdout.strip().splitlines()[-1])
    for thr in (0.05, 0.2):
        acc, avg, cnt = pck_accuracy(pred, gt, mask, thr=thr, normalize=norm)
        np.testing.assert_allclose(acc, expected[f"pck{thr}"][0], rtol=0, atol=1e-12)
        assert avg == pytest.approx(expected[f"pck{thr}"][1], abs=1e-12) and cnt == expected[f"pck{thr}"][2]
    assert keypoint_auc(pred, gt, mask, 30.0) == pytest.approx(expected["auc"], abs=1e-12)
    assert keypoint_epe(pred, gt, mask) == pytest.approx(expected["epe"], abs=1e-5)
    assert any(len(keep) < groups.shape[1] for keep in expected["nms"])  # NMS really suppresses
    for g in range(groups.shape[0]):
        # mmpose orders by numpy's default (SIMD, unstable) quicksort: among equal scores its order depends on
        # the CPU. The same instances must survive, in the same score order.
        kept = oks_nms_indices(groups[g], scores[g], areas[g], sigmas, 0.9).tolist()
        assert sorted(kept) == sorted(expected["nms"][g])
        assert [scores[g][i] for i in kept] == [scores[g][i] for i in expected["nms"][g]]


def test_height_normalized_errors_average_labeled_keypoints_per_person():
    from poseforge.evaluation.pck import height_normalized_errors

    truth = np.zeros((3, 4, 2))
    predicted = truth.copy()
    predicted[0, :, 0] += 10.0  # 10 px off on a 100 px tall box -> 0.1
    predicted[1, 0] += [30.0, 40.0]  # 50 px off on the only labeled keypoint of a 200 px box -> 0.25
    predicted[1, 1:] += 1000.0  # unlabeled keypoints do not count
    labeled = np.array([[True] * 4, [True, False, False, False], [False] * 4])  # the third person has none
    boxes = np.array([[0, 0, 50, 100], [0, 0, 50, 200], [0, 0, 50, 100]], dtype=float)
    np.testing.assert_allclose(height_normalized_errors(predicted, truth, labeled, boxes), [0.1, 0.25])


def test_mean_pose_in_boxes_places_the_average_normalized_pose_in_every_box():
    from poseforge.evaluation.pck import mean_pose_in_boxes

    boxes = np.array([[0, 0, 10, 20], [100, 50, 20, 40]], dtype=float)
    normalized = np.array([[[0.2, 0.4], [0.5, 0.5]], [[0.4, 0.6], [0.9, 0.9]]])  # two people, two joints
    keypoints = normalized * boxes[:, None, 2:] + boxes[:, None, :2]
    labeled = np.array([[True, True], [True, False]])  # the second person's joint 1 is unlabeled: left out
    placed = mean_pose_in_boxes(keypoints, labeled, boxes)
    mean = np.array([[0.3, 0.5], [0.5, 0.5]])
    np.testing.assert_allclose(placed, mean[None] * boxes[:, None, 2:] + boxes[:, None, :2])


def test_left_right_pairs_tell_own_side_swapped_and_collapsed_pairs_apart():
    from poseforge.evaluation.pck import left_right_pairs

    # joints: 0 left shoulder, 1 right shoulder, 2 left hip, 3 right hip; one person 100 px tall per row
    truth = np.array([[[60, 20], [40, 20], [55, 60], [45, 60]]] * 4, dtype=float)
    predicted = truth.copy()
    predicted[1, [0, 1]] = predicted[1, [1, 0]]  # person 1: shoulders swapped
    predicted[2, [0, 1]] = [50, 21]  # person 2: both shoulders on one point (own side by a hair, gap 0)
    predicted[2, 0, 0] += 0.5
    labeled = np.ones((4, 4), bool)
    labeled[3, 3] = False  # person 3: right hip unlabeled, its hip pair is not scored
    boxes = np.array([[0, 0, 100, 100]] * 4, dtype=float)
    own, gap = left_right_pairs(predicted, truth, labeled, boxes, ((0, 1), (2, 3)), min_separation=0.05)
    # pairs in (person, pair) order: p0 (2), p1 (2), p2 (2), p3 (shoulders only)
    np.testing.assert_array_equal(own, [True, True, False, True, True, True, True])
    np.testing.assert_allclose(gap, [1, 1, 1, 1, 0.025, 1, 1])
    # a pair closer than min_separation x box height has no side to get wrong
    own, _ = left_right_pairs(predicted, truth, labeled, boxes, ((0, 1), (2, 3)), min_separation=0.15)
    assert len(own) == 4  # hips (10 px apart) drop out, shoulders (20 px) stay
