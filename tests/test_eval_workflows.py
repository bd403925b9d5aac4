"""Evaluation workflows on the real sample files of ../shared/peer-data (issue 30): keypoint-set mapping
(AIC, MPII ground truth for a coco17 model), COCO-WholeBody per-part AP, ``poseforge detect`` feeding
``eval --boxes``, and the xtcocotools backend's numpy ABI error."""
from __future__ import annotations

import builtins
import json
from pathlib import Path

import numpy as np
import pytest

from poseforge.cli import main
from poseforge.keypoints import canonical_joint_name, keypoint_mapping

PEER = Path(__file__).resolve().parents[1].parent / "shared" / "peer-data"
needs_peer = pytest.mark.skipif(not PEER.is_dir(), reason="../shared/peer-data (real sample files) is absent")


def test_keypoint_mapping_by_joint_names() -> None:
    m = keypoint_mapping("coco17", "aic14")
    assert len(m) == 12 and m.unmapped_target == ("head_top", "neck")
    assert m.source.names[m.source_index[0]] == m.target.names[m.target_index[0]] == "right_shoulder"
    assert canonical_joint_name("L_Shoulder") == canonical_joint_name("Left Shoulder") == "left_shoulder"
    assert canonical_joint_name("top_head") == "head_top"
    assert len(keypoint_mapping("aic14", "crowdpose14")) == 14  # top_head / head_top aliased, neck shared
    assert len(keypoint_mapping("coco17", "mpii16")) == 12
    assert len(keypoint_mapping("coco17", "ap10k17")) == 0  # person vs animal: nothing shared


@needs_peer
def test_aic_ground_truth_as_coco17_results_scores_one_on_shared_joints() -> None:
    from poseforge.data.readers import read_dataset
    from poseforge.evaluation.mapping import evaluate_shared_joints, project_ground_truth

    gt = read_dataset(PEER / "aic" / "test_aic.json")
    mapping = keypoint_mapping("coco17", gt.keypoint_set)
    coco = project_ground_truth(gt, mapping)  # AIC truth as coco17 "predictions", nose/eyes/ears unset
    results = [{"image_id": i.image_id, "category_id": 1, "score": 1.0,
                "keypoints": np.concatenate([i.keypoints, i.visibility[:, None]], 1).ravel().tolist()}
               for i in coco.instances]
    stats = evaluate_shared_joints(gt, results, mapping, use_area=False)
    assert stats["AP"] == pytest.approx(1.0) and stats["AR"] == pytest.approx(1.0)


@needs_peer
@pytest.mark.parametrize("file, other", [("aic/test_aic.json", "aic14"), ("mpii/test_mpii.json", "mpii16")])
def test_eval_model_on_another_keypoint_set(file: str, other: str, capsys, tmp_path: Path) -> None:
    stats_file = tmp_path / "stats.json"
    rc = main(["eval", "--model", "bundled", "--data", str(PEER / file), "--workers", "0", "--json", str(stats_file)])
    out = capsys.readouterr().out
    assert rc == 0
    assert f"scored on the 12 joints coco17 and {other} share: " in out
    stats = json.loads(stats_file.read_text())
    assert 0.0 <= stats["AP"] <= 1.0 and "PCK@0.2" in stats


@needs_peer
def test_eval_keypoints_option_names_the_file_set(capsys) -> None:
    # 14 joints in the file's order, read as CrowdPose because the user says so: no longer ignored
    rc = main(["eval", "--model", "bundled", "--data", str(PEER / "aic" / "test_aic.json"), "--keypoints", "crowdpose14",
               "--workers", "0"])
    assert rc == 0 and "scored on the 12 joints coco17 and crowdpose14 share: " in capsys.readouterr().out


@needs_peer
def test_wholebody_ground_truth_as_results_prints_every_part(tmp_path: Path, capsys) -> None:
    gt = PEER / "coco" / "test_coco_wholebody.json"
    fields = ("keypoints", "foot_kpts", "face_kpts", "lefthand_kpts", "righthand_kpts")
    results = [{"image_id": a["image_id"], "category_id": a["category_id"], "score": 1.0, **{f: a[f] for f in fields}}
               for a in json.loads(gt.read_text())["annotations"]]
    res = tmp_path / "res.json"
    res.write_text(json.dumps(results))
    out_json = tmp_path / "stats.json"
    assert main(["eval", "--gt", str(gt), "--results", str(res), "--json", str(out_json)]) == 0
    table = capsys.readouterr().out
    stats = json.loads(out_json.read_text())
    for part in ("body", "foot", "face", "lefthand", "righthand", "wholebody"):
        assert stats[f"{part}/AP"] == pytest.approx(1.0)
        assert any(line.split()[:2] == [part, "1.0000"] for line in table.splitlines())


@needs_peer
def test_xtcocotools_backend_works_in_dev_and_agrees(tmp_path: Path, capsys) -> None:
    """The [dev] install's xtcocotools wheel has a mask extension built for numpy 1.x; keypoint AP needs
    none of it, so the backend must work and agree with the default one."""
    pytest.importorskip("xtcocotools")
    gt = PEER / "coco" / "test_coco.json"
    res = tmp_path / "res.json"
    rng = np.random.default_rng(0)
    results = []
    for a in json.loads(gt.read_text())["annotations"]:
        k = np.asarray(a["keypoints"], float).reshape(-1, 3)
        k[:, :2] += rng.normal(0, 4, (len(k), 2))
        results.append({"image_id": a["image_id"], "category_id": 1, "keypoints": k.ravel().round(2).tolist(),
                        "score": float(rng.uniform(0.5, 1))})
    res.write_text(json.dumps(results))
    tables = {}
    for backend in ("faster", "xtcocotools"):
        assert main(["eval", "--gt", str(gt), "--results", str(res), "--backend", backend]) == 0
        out = capsys.readouterr().out
        tables[backend] = [line for line in out.splitlines() if line.split()[:1] in (["AP"], ["AP50"], ["AR"])]
    assert tables["xtcocotools"] and tables["xtcocotools"] == tables["faster"]


@needs_peer
def test_missing_backend_is_one_line_with_the_fix(tmp_path: Path, capsys, monkeypatch) -> None:
    gt = PEER / "coco" / "test_coco.json"
    res = tmp_path / "res.json"
    res.write_text(json.dumps([{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0}
                               for a in json.loads(gt.read_text())["annotations"]]))
    real_import = builtins.__import__

    def not_installed(name, *args, **kwargs):
        if name.startswith("pycocotools"):
            raise ImportError("No module named 'pycocotools'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", not_installed)
    rc = main(["eval", "--gt", str(gt), "--results", str(res), "--backend", "pycocotools"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert "pip install pycocotools" in err and "--backend faster" in err


RTMDET = PEER / "models" / "rtmdet-nano-person.onnx"


@pytest.mark.skipif(not RTMDET.is_file(), reason="../shared/peer-data/models/rtmdet-nano-person.onnx is absent")
def test_detect_writes_boxes_that_eval_takes(tmp_path: Path, capsys) -> None:
    pytest.importorskip("onnxruntime")
    gt = PEER / "coco" / "test_coco.json"
    dets = tmp_path / "dets.json"
    assert main(["detect", str(PEER / "coco"), "--out", str(dets), "--detector", str(RTMDET), "--gt", str(gt)]) == 0
    records = json.loads(dets.read_text())
    gt_ids = {i["id"] for i in json.loads(gt.read_text())["images"]}
    assert len(records) >= 10 and {r["image_id"] for r in records} == gt_ids  # people found in all four images
    assert all(r["category_id"] == 1 and len(r["bbox"]) == 4 and r["bbox"][2] > 0 and 0 < r["score"] <= 1 for r in records)
    capsys.readouterr()
    # an existing output needs --force; an input never is one
    assert main(["detect", str(PEER / "coco"), "--out", str(dets), "--detector", str(RTMDET)]) == 2
    assert "already exists" in capsys.readouterr().err
    image = tmp_path / "000000000785.jpg"  # a copy: a failing check must never touch ../shared
    image.write_bytes((PEER / "coco" / image.name).read_bytes())
    assert main(["detect", str(image), "--out", str(image), "--detector", str(RTMDET), "--force"]) == 2
    assert "is also an input" in capsys.readouterr().err and image.read_bytes()[:2] == b"\xff\xd8"
    assert main(["eval", "--model", "bundled", "--data", str(gt), "--boxes", str(dets), "--workers", "0"]) == 0
    assert "AP" in capsys.readouterr().out
