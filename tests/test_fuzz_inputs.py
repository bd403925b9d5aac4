"""Fuzzed results files, checkpoints and command lines: each is handled or refused with a one-line error.

Targets (issue 30):

* ``results``: COCO keypoint results as ``poseforge eval --gt GT --results RES`` reads them
  (:func:`~poseforge.evaluation.coco.evaluate_keypoints`), mutated from the ground truth fed back as results.
* ``detections``: COCO detection results as ``read_detections`` / ``eval --boxes`` read them.
* ``convert``: :func:`poseforge.convert.convert_checkpoint` on text / empty / random files, ``torch.save`` of
  non-dicts, mutated RTMPose / ViTPose state dicts (dropped keys, wrong shapes, junk keys, int dtypes) and a
  poseforge training checkpoint.
* ``cli``: :func:`poseforge.cli.main` with generated argv that fails fast (bad numbers and sizes, missing files,
  folders for files, unknown flags, empty and unicode strings).

Properties: success, or a ``PoseforgeError`` whose message is one line and names the file (never another
exception type); for the CLI an int exit code, nothing but ``SystemExit`` (argparse) out of ``main`` and at most
one error line on stderr.

The default suite runs ``QUICK`` cases per target; ``pytest -m slow`` runs ``SLOW``.
``python tests/test_fuzz_inputs.py [cases]`` prints a census of the failures by kind (no hypothesis).
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import random
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_fuzz_readers import COCO17, _builtin_coco, census_of, encode, mutate, print_census  # noqa: E402

from poseforge.errors import DataError, PoseforgeError  # noqa: E402

QUICK = 100
SLOW = 1000
PEER = Path(os.environ.get("POSEFORGE_SHARED", Path(__file__).resolve().parents[1].parent / "shared")) / "peer-data"


# ------------------------------------------------------------------------------------------ base documents
def _peer_json(rel: str) -> Any:
    try:
        return json.loads((PEER / rel).read_text())
    except (OSError, ValueError):
        return None


def _ground_truth() -> dict[str, Any]:
    doc = _peer_json("coco/test_coco.json")
    ok = (isinstance(doc, dict) and isinstance(doc.get("images"), list) and isinstance(doc.get("annotations"), list)
          and any(isinstance(a, dict) and len(a.get("keypoints") or []) == 51 for a in doc["annotations"]))
    return doc if ok else _builtin_coco(COCO17)


GT = _ground_truth()


def _results_base() -> list[dict[str, Any]]:
    """The ground truth fed back as results (a few with a bbox and an area, as mmpose writes them)."""
    out = []
    for n, ann in enumerate(a for a in GT["annotations"] if len(a.get("keypoints") or []) == 51):
        rec = {"image_id": ann["image_id"], "category_id": ann.get("category_id", 1),
               "keypoints": [float(v) for v in ann["keypoints"]], "score": 0.9 - 0.01 * n}
        if n % 2 == 0 and "bbox" in ann:
            rec["bbox"] = ann["bbox"]
            rec["area"] = ann.get("area", 100.0)
        out.append(rec)
    return out[:12]


def _detections_base() -> list[dict[str, Any]]:
    image_ids = {img["id"] for img in GT["images"]}
    doc = _peer_json("coco/test_coco_det_AP_H_56.json")
    if isinstance(doc, list):
        doc = [d for d in doc if isinstance(d, dict) and d.get("image_id") in image_ids][:12]
        if doc:
            return doc
    return [{"image_id": a["image_id"], "category_id": 1, "bbox": a["bbox"], "score": 0.9}
            for a in GT["annotations"] if "bbox" in a][:12]


RESULTS = _results_base()
DETECTIONS = _detections_base()


def _check_message(error: BaseException, path: Path | str) -> None:
    message = str(error)
    assert len(message.splitlines()) == 1, f"multi-line message: {message!r}"
    assert str(path) in message, f"message does not name the file: {message!r}"


# ---------------------------------------------------------------------------------------- results files
def _mutate_records(base: list[dict[str, Any]], rng: random.Random) -> Any:
    """``mutate`` plus the results-specific cases: unknown image ids, wrong keypoint lengths, non-list top level."""
    roll = rng.random()
    doc = copy.deepcopy(base)
    if roll < 0.1:
        rec = rng.choice(doc)
        rec["image_id"] = rng.choice([-1, 10**12, "1", 1.5, None, [rec["image_id"]], True])
        return doc
    if roll < 0.2:
        rec = rng.choice(doc)
        field = "keypoints" if "keypoints" in rec else "bbox"
        rec[field] = rec[field][: rng.randrange(len(rec[field]))] + [1.0] * rng.choice([0, 1, 3])
        return doc
    if roll < 0.25:
        return rng.choice([{"annotations": doc}, {}, "results", 1, None, [], [[]], [doc]])
    if roll < 0.3:
        rec = rng.choice(doc)
        rec[rng.choice(["keypoints", "score", "bbox", "area", "bbox_score"])] = rng.choice(
            [float("nan"), float("inf"), [float("nan")] * 51, [float("inf")] * 4, 10**400])
        return doc
    return mutate(doc, rng)


def _write_gt(folder: Path) -> Path:
    path = folder / "gt.json"
    if not path.exists():
        path.write_text(json.dumps(GT))
    return path


def check_results(rng: random.Random, folder: Path) -> None:
    from poseforge.evaluation.coco import evaluate_keypoints

    gt = _write_gt(folder)
    path = folder / "results.json"
    path.write_bytes(encode(_mutate_records(RESULTS, rng), rng))
    try:
        stats = evaluate_keypoints(gt, path)
    except PoseforgeError as e:
        _check_message(e, path)
        return
    assert isinstance(stats, dict)


def check_detections(rng: random.Random, folder: Path) -> None:
    from poseforge.data.coco import read_coco
    from poseforge.data.evalsets import read_detections

    gt = read_coco(_write_gt(folder))
    path = folder / "dets.json"
    path.write_bytes(encode(_mutate_records(DETECTIONS, rng), rng))
    try:
        ids, boxes, scores = read_detections(path, gt)
    except PoseforgeError as e:
        _check_message(e, path)
        return
    assert ids.shape[0] == boxes.shape[0] == scores.shape[0] and boxes.shape[1:] == (4,)


# ------------------------------------------------------------------------------------------- checkpoints
_STATES: dict[str, dict[str, Any]] = {}


def _state(kind: str) -> dict[str, Any]:
    """Small real state dicts: rtmpose-t (mmpose key names), vitpose-tiny (poseforge and official layouts)."""
    if kind not in _STATES:
        import torch

        from poseforge.models import create_model

        torch.manual_seed(0)
        if kind == "rtmpose":
            _STATES[kind] = create_model("rtmpose-t", input_size=(96, 128)).state_dict()
        elif kind == "vitpose":
            _STATES[kind] = create_model("vitpose-tiny", input_size=(48, 64)).state_dict()
        else:  # the ViTAE-Transformer/ViTPose (mmpose 0.x) names of the same tensors
            _STATES[kind] = {k.replace("backbone.norm.", "backbone.last_norm.").replace("head.", "keypoint_head.", 1)
                             if k.startswith(("head.", "backbone.norm.")) else k: v
                             for k, v in _state("vitpose").items()}
    return _STATES[kind]


def _mutate_state(state: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    import torch

    state = dict(state)
    for _ in range(rng.randrange(1, 4)):
        keys = list(state)
        if not keys:
            break
        key = rng.choice(keys)
        op = rng.randrange(8)
        if op == 0:  # drop keys
            for k in rng.sample(keys, min(len(keys), rng.choice([1, 1, 3, 20]))):
                del state[k]
        elif op == 1:  # change one dimension
            t = state[key]
            if t.ndim:
                shape = list(t.shape)
                shape[rng.randrange(t.ndim)] = rng.choice([0, 1, 3, 7, 17, 64])
                state[key] = torch.zeros(shape, dtype=t.dtype)
        elif op == 2:  # add or remove a dimension
            t = state[key]
            state[key] = t[None] if rng.random() < 0.5 or t.ndim == 0 else t.reshape(-1)
        elif op == 3:  # scalar
            state[key] = torch.tensor(rng.choice([0, 1, 5]))
        elif op == 4:  # junk key
            state[rng.choice(["junk", "backbone.extra.weight", "head.gau.extra", "backbone.blocks.99.norm1.weight",
                              "backbone.stage9.0.conv.weight", "module.x", "keypoint_head.x"])] = torch.zeros(rng.choice([1, 3]))
        elif op == 5:  # int dtype
            for k in rng.sample(keys, min(len(keys), rng.choice([1, 5, len(keys)]))):
                if isinstance(state[k], torch.Tensor):
                    state[k] = state[k].to(rng.choice([torch.int64, torch.int8, torch.bool, torch.float16]))
        elif op == 6:  # a non-tensor value
            state[key] = rng.choice([1, "x", None, [1, 2], {"a": torch.zeros(1)}])
        else:  # rename under another prefix
            state[rng.choice(["x.", "module.", "student.", "teacher."]) + key] = state.pop(key)
    return state


def _options(rng: random.Random) -> dict[str, Any]:
    if rng.random() < 0.7:
        return {}
    name = rng.choice(["keypoint_set", "input_size", "num_heads", "sigma", "codec", "split_ratio"])
    value = rng.choice({"keypoint_set": ["coco17", "bogus", "", "mpii16"], "input_size": [(0, -3), (7, 5), (192, 256), (1, 1)],
                        "num_heads": [0, -1, 5, 3], "sigma": [0.0, -1.0, float("nan"), 2.0],
                        "codec": ["bogus", "udp", "simcc", ""], "split_ratio": [0.0, -2.0, float("inf"), 2.0]}[name])
    return {name: value}


def check_convert(rng: random.Random, folder: Path) -> None:
    import torch

    from poseforge.convert import convert_checkpoint

    path = folder / rng.choice(["model.pth", "model.pt", "model.bin", "last.pt", "model.safetensors", "model"])
    if path.is_dir():
        path = folder / "model.pth"
    roll = rng.random()
    if roll < 0.05:
        path.write_text(rng.choice(["hello\n", "{\"state_dict\": 1}", "model.safetensors\n", "é\u2028"]))
    elif roll < 0.08:
        path.write_bytes(b"")
    elif roll < 0.12:
        path.write_bytes(rng.randbytes(rng.choice([1, 8, 100, 5000])))
    elif roll < 0.2:
        torch.save(rng.choice([[torch.zeros(2)], torch.zeros(3), 5, "state", None, {}, {"state_dict": {}},
                               {"state_dict": 3}, {"model": [1]}, {"a": 1}, {"meta": {"x": 1}},
                               {1: torch.zeros(1)}, {"state_dict": {"a": torch.zeros(1)}, "meta": 5},
                               {"state_dict": {"a": torch.zeros(1)}, "ema_state_dict": {"steps": torch.zeros(1)}}]), path)
    elif roll < 0.3:  # a poseforge training run's last.pt
        state = {"version": 1, "model": _state(rng.choice(["rtmpose", "vitpose"])), "optimizer": {}, "step": 3,
                 "epoch": 1, "config": {"model": "x"}, "model_config": {"type": "x"}}
        if rng.random() < 0.3:
            state["model"] = _mutate_state(state["model"], rng)
        torch.save(state, path)
    else:
        state = _mutate_state(_state(rng.choice(["rtmpose", "vitpose", "vitpose-official"])), rng)
        wrapped: Any = rng.choice([state, {"state_dict": state, "meta": {"config": "x"}}, {"state_dict": state, "ema_state_dict": state}])
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            try:
                save_file({k: v.contiguous() for k, v in state.items() if isinstance(v, torch.Tensor)}, str(path))
            except Exception:  # noqa: BLE001 - shared / empty tensors: write a pickle there instead
                torch.save(wrapped, path)
        else:
            torch.save(wrapped, path)
        if rng.random() < 0.05:
            path.write_bytes(path.read_bytes()[: rng.randrange(path.stat().st_size)])
    options = _options(rng)
    raw = rng.random() < 0.05
    try:
        model = convert_checkpoint(path, raw_weights=raw, **options)
    except PoseforgeError as e:
        _check_message(e, path)
        if path.name == "last.pt" and roll >= 0.2 and roll < 0.3:
            assert "training checkpoint" in str(e), str(e)
        return
    assert model is not None


# -------------------------------------------------------------------------------------------------- CLI
def _cli_files(folder: Path) -> dict[str, str]:
    files = {"txt": folder / "note.txt", "empty": folder / "empty.json", "dir": folder / "a dir",
             "gt": folder / "gt.json", "res": folder / "res.json", "missing": folder / "missing.json",
             "bin": folder / "random.pth"}
    if not files["txt"].exists():
        files["txt"].write_text("hello\n")
        files["empty"].write_bytes(b"")
        files["dir"].mkdir()
        files["gt"].write_text(json.dumps(GT))
        files["res"].write_text(json.dumps(RESULTS))
        files["bin"].write_bytes(bytes(range(256)) * 4)
    return {k: str(v) for k, v in files.items()}


_WORDS = ["", " ", "-", "--", "é", "\u2028", "x" * 300, "-1", "0", "nan", "inf", "1e999", "0x-3", "x", "3x", "-5x5",
          "99999999999999999999", "--nope", "-z", "bundled.nope", "../../etc/passwd", "a\nb"]


def _argv(rng: random.Random, folder: Path) -> list[str]:
    """An argv that fails fast (no file it names starts real work)."""
    f = _cli_files(folder)
    out = str(folder / "out")
    word = lambda: rng.choice(_WORDS)  # noqa: E731
    path = lambda: rng.choice([f["txt"], f["empty"], f["dir"], f["missing"], f["bin"], "", "é.json"])  # noqa: E731
    number = lambda: rng.choice(["0", "-1", "1.5", "nan", "x", "", "1e3", "99999999999999999999"])  # noqa: E731
    size = lambda: rng.choice(["0x-3", "8x", "x8", "0x0", "-8x8", "8x8x8", "", "ax b", "1e3x8", "8X8"])  # noqa: E731
    command = rng.choice(["eval", "predict", "convert", "export", "weights", "detect", "synth"])
    if command == "eval":
        argv = ["eval"]
        if rng.random() < 0.6:
            argv += ["--gt", rng.choice([f["gt"], path()]), "--results", rng.choice([f["res"], f["gt"], path()])]
            if rng.random() < 0.3:
                argv += ["--keypoints", rng.choice(["bogus", "mpii16", "", "coco17"])]
            if rng.random() < 0.3:
                argv += ["--json", rng.choice([f["gt"], f["dir"], f["res"]])]
        else:
            argv += ["--model", rng.choice([path(), "bogus-model", "vitpose-huge.nope"]), "--data", rng.choice([path(), "synthetic:images=x", "synthetic:size=0x-3"])]
            if rng.random() < 0.3:
                argv += ["--batch-size", number()]
    elif command == "predict":
        argv = ["predict", rng.choice([f["missing"], f["txt"], f["empty"], "é.jpg", "", "99"]), "--out", out,
                "--model", rng.choice([f["txt"], f["missing"], "nope", f["dir"]])]
        if rng.random() < 0.3:
            argv += [rng.choice(["--box-threshold", "--keypoint-threshold", "--max-people", "--max-frames"]), number()]
    elif command == "convert":
        argv = ["convert", path(), rng.choice([out, f["txt"], f["dir"]])]
        if rng.random() < 0.4:
            argv += [rng.choice(["--input-size", "--sigma", "--num-heads", "--split-ratio", "--distill-stage", "--format"]),
                     rng.choice([size(), number()])]
    elif command == "export":
        argv = ["export", rng.choice([path(), "nope", "bundled.nope"]), "--out", rng.choice([out + ".onnx", f["dir"], f["txt"]])]
        if rng.random() < 0.4:
            argv += [rng.choice(["--batch-size", "--opset", "--calibration-crops", "--int8", "--task"]), number()]
    elif command == "weights":
        argv = ["weights"] + rng.choice([[], [word()], ["--kind", word()], ["--fetch", rng.choice(["nope", "", "é", "../x"])]])
    elif command == "detect":
        argv = ["detect", path(), "--out", rng.choice([out + ".json", f["dir"], f["txt"], f["gt"]]),
                "--detector", rng.choice(["nope", f["txt"], "auto"] if rng.random() < 0.5 else ["nope"])]
        if rng.random() < 0.3:
            argv += ["--score-threshold", number()]
        if rng.random() < 0.3:
            argv += ["--gt", path()]
    else:
        argv = ["synth", "--out", rng.choice([out, f["txt"]]), "--num-images", rng.choice(["0", "-1", "x", "", "1.5", "-99"]),
                "--size", size()]
        if rng.random() < 0.3:
            argv += [rng.choice(["--people", "--seed", "--batch-size", "--workers", "--keypoints", "--format"]), rng.choice([word(), number()])]
    if rng.random() < 0.2:
        argv.insert(rng.randrange(1, len(argv) + 1), word())
    return argv


def check_cli(rng: random.Random, folder: Path) -> None:
    from poseforge.cli import main

    argv = _argv(rng, folder)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse's one-line usage errors
            code = e.code
    text = err.getvalue()
    assert isinstance(code, int), f"exit code {code!r} for {argv!r}"
    assert "Traceback" not in text, f"{argv!r}: {text[-300:]!r}"
    errors = [line for line in text.splitlines() if "error" in line.lower()]
    assert len(errors) <= 1, f"{argv!r}: {len(errors)} error lines: {text[-300:]!r}"
    if code != 0:
        assert errors, f"{argv!r}: exit code {code} without an error line: {text[-300:]!r}"


TARGETS: dict[str, Callable[[random.Random, Path], None]] = {
    "results": check_results, "detections": check_detections, "convert": check_convert, "cli": check_cli,
}


# ------------------------------------------------------------------------------------------------- tests
@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz_inputs")


def _run(target: str, examples: int, folder: Path) -> None:
    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(rng=st.randoms(use_true_random=False))
    def case(rng: random.Random) -> None:
        TARGETS[target](rng, folder)

    case()


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_fuzz_quick(target: str, fuzz_dir: Path, monkeypatch) -> None:
    monkeypatch.chdir(fuzz_dir)
    _run(target, QUICK, fuzz_dir)


@pytest.mark.slow
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_fuzz_slow(target: str, fuzz_dir: Path, monkeypatch) -> None:
    monkeypatch.chdir(fuzz_dir)
    _run(target, SLOW, fuzz_dir)


def _results_file(tmp_path: Path, doc: Any) -> tuple[Path, Path]:
    gt = _write_gt(tmp_path)
    path = tmp_path / "res.json"
    path.write_text(json.dumps(doc))
    return gt, path


@pytest.mark.parametrize("edit,pattern", [
    (lambda d: d[0].__setitem__("keypoints", d[0]["keypoints"][:48]), r"res.json: result 0 \(image \d+\): field 'keypoints': expected 51 numbers"),
    (lambda d: d[1].__setitem__("image_id", 10**12), r"res.json: result 1: field 'image_id': unknown image id"),
    (lambda d: d[0].__setitem__("score", float("nan")), r"res.json: result 0 \(image \d+\): field 'score': non-finite"),
    (lambda d: d[0].pop("score"), r"res.json: result 0: field 'score': missing"),
    (lambda d: d[0].__setitem__("keypoints", "x"), r"res.json: result 0 \(image \d+\): field 'keypoints': expected a list"),
    (lambda d: d[0].__setitem__("bbox", [1, 2, 3]), r"res.json: result 0 \(image \d+\): field 'bbox': expected 4 numbers"),
    (lambda d: d[2]["keypoints"].__setitem__(5, None), r"res.json: result 2 \(image \d+\): field 'keypoints': expected numbers, found None"),
    (lambda d: d[0]["keypoints"].__setitem__(7, 10**400), r"res.json: result 0 \(image \d+\): field 'keypoints': number out of range at position 7"),
    (lambda d: d[0].__setitem__("area", 10**400), r"res.json: result 0 \(image \d+\): field 'area': number out of range"),
])
def test_reported_results_cases(tmp_path: Path, edit: Callable[[Any], None], pattern: str) -> None:
    from poseforge.evaluation.coco import evaluate_keypoints

    doc = copy.deepcopy(RESULTS)
    for rec in doc:
        rec.setdefault("bbox", [1.0, 2.0, 30.0, 40.0])
    edit(doc)
    gt, path = _results_file(tmp_path, doc)
    with pytest.raises(DataError, match=pattern) as info:
        evaluate_keypoints(gt, path)
    assert len(str(info.value).splitlines()) == 1


@pytest.mark.parametrize("doc", [{"annotations": []}, "x", 5])
def test_results_top_level_must_be_a_list(tmp_path: Path, doc: Any) -> None:
    from poseforge.evaluation.coco import evaluate_keypoints

    gt, path = _results_file(tmp_path, doc)
    with pytest.raises(DataError, match=r"res.json: expected a list of COCO keypoint results"):
        evaluate_keypoints(gt, path)


@pytest.mark.parametrize("edit,pattern", [
    (lambda d: d[0].__setitem__("category_id", [1]), r"dets.json: detection 0: field 'category_id': expected an integer"),
    (lambda d: d[1].__setitem__("image_id", {"a": 1}), r"dets.json: detection 1: field 'image_id': unknown image id"),
    (lambda d: d[0].__setitem__("bbox", [1, 2, 10**400, 4]), r"dets.json: detection 0: field 'bbox': expected a finite box"),
    (lambda d: d[0].__setitem__("score", 10**400), r"dets.json: detection 0: field 'score': expected a number"),
])
def test_reported_detection_cases(tmp_path: Path, edit: Callable[[Any], None], pattern: str) -> None:
    from poseforge.data.coco import read_coco
    from poseforge.data.evalsets import read_detections

    doc = copy.deepcopy(DETECTIONS)
    edit(doc)
    path = tmp_path / "dets.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=pattern) as info:
        read_detections(path, read_coco(_write_gt(tmp_path)))
    assert len(str(info.value).splitlines()) == 1


def test_deeply_nested_results_and_detections(tmp_path: Path) -> None:
    from poseforge.data.coco import read_coco
    from poseforge.data.evalsets import read_detections
    from poseforge.evaluation.coco import evaluate_keypoints

    gt, path = _results_file(tmp_path, [])
    path.write_bytes(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(PoseforgeError, match="res.json: .*nest"):
        evaluate_keypoints(gt, path)
    with pytest.raises(PoseforgeError, match="res.json: .*nest"):
        read_detections(path, read_coco(gt))


def test_convert_text_file_and_training_checkpoint(tmp_path: Path) -> None:
    import torch

    from poseforge.convert import convert_checkpoint

    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n")
    with pytest.raises(PoseforgeError, match="notes.txt: not a readable PyTorch checkpoint") as info:
        convert_checkpoint(text)
    assert len(str(info.value).splitlines()) == 1
    last = tmp_path / "last.pt"
    torch.save({"version": 1, "model": _state("vitpose"), "optimizer": {}, "step": 1, "config": {},
                "model_config": {"type": "vitpose"}}, last)
    with pytest.raises(PoseforgeError, match=r"last.pt: a poseforge training checkpoint.*--export") as info:
        convert_checkpoint(last)
    assert len(str(info.value).splitlines()) == 1


@pytest.mark.parametrize("dtype", ["int64", "bool"])
def test_convert_integer_weights_are_refused(tmp_path: Path, dtype: str) -> None:
    import torch

    from poseforge.convert import convert_checkpoint

    state = {k: v.to(getattr(torch, dtype)) for k, v in _state("rtmpose").items()}
    path = tmp_path / "ints.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(PoseforgeError, match=r"ints.pth: .*floating"):
        convert_checkpoint(path)


# ------------------------------------------------------------------------------------------------ census
def census(cases: int, seed: int = 0, targets: list[str] | None = None) -> dict[str, Counter]:
    """Failures by kind (exception type and raising line) per target, over ``cases`` seeded inputs."""
    return census_of(TARGETS, cases, seed, targets)


if __name__ == "__main__":
    import logging

    logging.disable(logging.CRITICAL)
    n_cases = int(sys.argv[1]) if len(sys.argv) > 1 else SLOW
    chosen = sys.argv[2].split(",") if len(sys.argv) > 2 else None
    print_census(census(n_cases, targets=chosen), n_cases)


def test_read_json_deep_nesting_is_one_line(tmp_path):
    from poseforge.errors import PoseforgeError
    from poseforge.io import read_json

    path = tmp_path / "deep.json"
    path.write_bytes(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(PoseforgeError, match="nested too deeply") as e:
        read_json(path)
    assert "\n" not in str(e.value)
