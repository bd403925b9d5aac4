"""`poseforge eval --gt ... --results ...` end to end on the real COCO sample."""
from __future__ import annotations

import json

import numpy as np
import pytest

from poseforge.cli import main
from poseforge.evaluation import STAT_NAMES, coco_metric, evaluate_keypoints


def write_results(path, results):
    path.write_text(json.dumps(results))
    return str(path)


def gt_as_results(coco_file):
    doc = json.loads(coco_file.read_text())
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "keypoints": a["keypoints"], "score": 1.0} for a in doc["annotations"]]


def perturbed(coco_file, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for r in gt_as_results(coco_file):
        k = np.asarray(r["keypoints"], dtype=np.float64).reshape(-1, 3)
        k[:, :2] += rng.normal(0, 4.0, (len(k), 2))
        k[:, 2] = np.where(k[:, 2] > 0, rng.uniform(0.1, 1.0, len(k)), 0.0)
        out.append({**r, "keypoints": k.reshape(-1).tolist(), "score": float(rng.uniform(0.5, 1.0))})
    return out


def table_values(text: str) -> dict[str, float]:
    """The stats of a one-row table: header names -> numbers."""
    lines = [line for line in text.splitlines() if line.strip()]
    header = next(i for i, line in enumerate(lines) if line.split()[:1] == ["AP"])
    return dict(zip(lines[header].split(), map(float, lines[header + 2].split())))


def test_ground_truth_scores_one_and_writes_json(coco_file, tmp_path, capsys):
    results = write_results(tmp_path / "res.json", gt_as_results(coco_file))
    out = tmp_path / "out" / "stats.json"
    assert main(["eval", "--gt", str(coco_file), "--results", results, "--json", str(out)]) == 0
    printed = table_values(capsys.readouterr().out)
    assert printed == {name: 1.0 for name in STAT_NAMES}
    assert json.loads(out.read_text()) == {name: 1.0 for name in STAT_NAMES}


def test_cli_equals_library(coco_file, tmp_path, capsys):
    results = perturbed(coco_file)
    path = write_results(tmp_path / "res.json", results)
    out = tmp_path / "stats.json"
    assert main(["eval", "--gt", str(coco_file), "--results", path, "--json", str(out), "--keypoints", "coco17"]) == 0
    expected = evaluate_keypoints(coco_file, results)
    assert json.loads(out.read_text()) == expected
    printed = table_values(capsys.readouterr().out)
    assert printed == {k: round(v, 4) for k, v in expected.items()}
    assert 0.1 < expected["AP"] < 0.95
    # --rescore: mmpose's rescoring and OKS-NMS first; --no-area: 0.53 x box area
    assert main(["eval", "--gt", str(coco_file), "--results", path, "--json", str(out), "--rescore", "--no-area",
                 "--force"]) == 0
    assert json.loads(out.read_text()) == coco_metric(coco_file, results, use_area=False)
    assert json.loads(out.read_text()) != expected


@pytest.mark.parametrize("mutate,fragment", [
    (lambda r: r[3].__setitem__("keypoints", r[3]["keypoints"][:48]), "result 3 (image {3}): field 'keypoints': expected 51 numbers"),
    (lambda r: r[2].__setitem__("image_id", 12345), "result 2: field 'image_id': unknown image id 12345"),
    (lambda r: r[0]["keypoints"].__setitem__(4, float("nan")), "result 0 (image {0}): field 'keypoints': non-finite value nan at position 4"),
    (lambda r: r[6].__setitem__("score", float("inf")), "result 6 (image {6}): field 'score': non-finite value inf"),
])
def test_bad_results_are_one_line_exit_2(coco_file, tmp_path, capsys, mutate, fragment):
    results = gt_as_results(coco_file)
    fragment = fragment.format(*[r["image_id"] for r in results])
    mutate(results)
    path = write_results(tmp_path / "bad.json", results)
    assert main(["eval", "--gt", str(coco_file), "--results", path]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"poseforge eval: error: {path}: ") and fragment in err


def test_missing_files_and_arguments(coco_file, tmp_path, capsys):
    missing = str(tmp_path / "nope.json")
    assert main(["eval", "--gt", str(coco_file), "--results", missing]) == 2
    assert capsys.readouterr().err.strip() == f"poseforge eval: error: {missing}: file not found"
    assert main(["eval", "--gt", missing, "--results", missing]) == 2
    assert f"{missing}: file not found" in capsys.readouterr().err
    assert main(["eval", "--gt", str(coco_file)]) == 2
    assert "pass --results" in capsys.readouterr().err
    assert main(["eval", "--gt", str(coco_file), "--results", missing, "--keypoints", "coco99"]) == 2
    assert "unknown keypoint set 'coco99'" in capsys.readouterr().err


def test_empty_results_score_zero(coco_file, tmp_path, capsys, caplog):
    path = write_results(tmp_path / "empty.json", [])
    out = tmp_path / "stats.json"
    assert main(["eval", "--gt", str(coco_file), "--results", path, "--json", str(out)]) == 0
    assert json.loads(out.read_text()) == {name: 0.0 for name in STAT_NAMES}
    assert "no results to evaluate" in caplog.text



def test_exported_and_bundled_models_are_scored_on_their_own_held_out_set(tmp_path, capsys):
    """An exported model has no config.yaml; its training.json's config names the held-out set, so
    ``poseforge eval --model EXPORT --data synthetic`` scores what the training run validated on."""
    import shutil
    from pathlib import Path

    from poseforge.assets import asset_path
    from poseforge.cli.eval import synthetic_defaults as _synthetic_defaults
    from poseforge.models import load_model
    from poseforge.train.config import config_to_dict
    from poseforge.train.presets import get_preset

    model = load_model("bundled")
    shipped = Path(asset_path("pose"))
    record = json.loads((shipped / "training.json").read_text())
    bundled = _synthetic_defaults("bundled", model)
    assert record["validation"]["set"].startswith(f"{bundled['num_images']} synthetic images")
    assert bundled["seed"] == record["config"]["data"]["synthetic"]["val_seed"]

    export = tmp_path / "export"
    shutil.copytree(shipped, export)
    data = config_to_dict(get_preset("smoke"))
    data["data"]["synthetic"].update(val_images=7, val_seed=1234, val_people=[1, 2])
    (export / "training.json").write_text(json.dumps({"config": data}))
    defaults = _synthetic_defaults(str(export), model)
    assert {k: defaults[k] for k in ("num_images", "seed", "people", "clutter")} == {
        "num_images": 7, "seed": 1234, "people": (1, 2), "clutter": False}
    assert tuple(defaults["image_size"]) == (96, 128)
    (export / "training.json").write_text("{not json")
    assert main(["eval", "--model", str(export), "--data", "synthetic"]) == 2
    assert "training.json: not valid JSON" in capsys.readouterr().err
