"""Fuzzed exported-model runtime (:mod:`poseforge.runtime`, ``poseforge-rt``): every input is handled or refused
with a one-line error, never a traceback.

Targets (issue 30):

* ``metadata``: the ``poseforge`` metadata JSON of small real exports (top-down SimCC, a UDP heatmap model with a
  static batch, decoding in the graph, bottom-up) mutated (``mutate`` / ``encode`` of ``test_fuzz_readers`` plus
  field-specific bad values: split ratios, flip indices, skeletons, padding, codec names ...) and read by
  :meth:`ModelMeta.from_json`, or written back into the file and loaded and run by :class:`PoseModel` and a pipeline
  (flip test, drawing);
* ``options``: a file without metadata loaded with fuzzed options (``input_size``, ``mean``, ``std``,
  ``split_ratio``, ``codec``, ``kind``, keypoint names, skeleton, flip index, padding, channel order), or one
  with metadata and the caller's keypoint names / skeleton;
* ``files``: truncated, byte-flipped, overwritten, random, text and empty ``.onnx`` files, folders, missing
  files and models of the other kind, through :class:`PoseModel`, :class:`PersonDetector` and ``load_pipeline``
  (and run on an image when they load);
* ``detector``: end2end detector graphs whose outputs are fuzzed (shapes, dtypes, NaN / inf / inverted boxes,
  label shapes, output order and count) and whose inputs have odd shapes, through :class:`PersonDetector` and a
  top-down pipeline;
* ``cli``: :func:`poseforge.runtime.cli.main` with generated argv on a tiny image folder (bad numbers and
  sizes, missing files, folders for files, non-ONNX and corrupt models, images that are not images, empty
  folders, unicode names): it fails fast or succeeds.

Properties: success (with sane outputs), or a ``PoseforgeError`` whose message is one line and names the file;
for the CLI an int exit code, nothing but ``SystemExit`` (argparse) out of ``main``, at most one error line on
stderr, and no exception other than ``PoseforgeError`` (or an ``OSError`` naming its file) reaching ``main``'s
catch-all.

The default suite runs ``QUICK`` cases per target; ``pytest -m slow`` runs ``SLOW``.
``python tests/test_fuzz_runtime.py [cases] [targets]`` prints a census of the failures by kind (no hypothesis).
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import random
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_fuzz_readers import _bad_value, census_of, encode, mutate, print_census  # noqa: E402

from poseforge.errors import PoseforgeError  # noqa: E402

pytest.importorskip("onnxruntime", reason="poseforge.runtime needs onnxruntime (the [runtime] extra)")
pytest.importorskip("onnx", reason="exporting test models needs onnx (the [onnx] extra)")

QUICK = 100
SLOW = 1000
IMAGE_SIZES = ((56, 40), (30, 50))  # (w, h) of the test images: wider and taller than the model inputs' aspect


# ------------------------------------------------------------------------------------------ exported models
class _Models:
    """Small real exports (made once per process, in a private temporary folder) and their metadata."""

    def __init__(self) -> None:
        import onnx
        import torch

        import poseforge
        try:  # one module object whichever way the tests run: a second import would register the stubs twice
            from tests import protocol_stubs  # noqa: F401 - registers stub-bottomup
        except ImportError:  # run as a script from tests/
            import protocol_stubs  # noqa: F401
        from poseforge.export import export_onnx

        self._tmp = tempfile.TemporaryDirectory(prefix="fuzz-runtime-models-")
        folder = Path(self._tmp.name)
        small = {"input_size": (48, 64), "depth": 1, "embed_dim": 32, "num_heads": 2}
        torch.manual_seed(0)
        simcc = poseforge.create_model("vitpose-tiny", head="simcc", **small).eval()
        heatmap = poseforge.create_model("vitpose-tiny", **small).eval()  # UDP heatmaps
        bottomup = poseforge.create_model("stub-bottomup").eval()
        self.paths: dict[str, Path] = {
            "simcc": export_onnx(simcc, folder / "simcc.onnx", dynamic_batch=True),
            "heatmap": export_onnx(heatmap, folder / "heatmap.onnx", batch_size=1),
            "decoded": export_onnx(simcc, folder / "decoded.onnx", dynamic_batch=True, with_decode=True),
            "bottomup": export_onnx(bottomup, folder / "bottomup.onnx", dynamic_batch=True),
        }
        self.meta: dict[str, dict[str, Any]] = {}
        self.bare: dict[str, bytes] = {}  # the graphs without metadata, serialized
        for name, path in self.paths.items():
            proto = onnx.load(str(path))
            self.meta[name] = json.loads(next(e.value for e in proto.metadata_props if e.key == "poseforge"))
            del proto.metadata_props[:]
            self.bare[name] = proto.SerializeToString()
        for name in ("simcc", "heatmap"):
            self.paths[f"bare-{name}"] = folder / f"bare-{name}.onnx"
            self.paths[f"bare-{name}"].write_bytes(self.bare[name])
        dets = np.array([[[4.0, 3.0, 20.0, 28.0, 0.9], [10.0, 2.0, 30.0, 30.0, 0.5]]], np.float32)
        self.paths["detector"] = folder / "rtmdet-fake.onnx"
        self.paths["detector"].write_bytes(detector_bytes(dets, np.zeros((1, 2), np.int64)))
        self.bytes = {name: path.read_bytes() for name, path in self.paths.items()}


_MODELS: list[_Models] = []


def models() -> _Models:
    if not _MODELS:
        _MODELS.append(_Models())
    return _MODELS[0]


def detector_bytes(dets: np.ndarray, labels: np.ndarray, *, input_shape: list[Any] | None = None,
                   input_type: int | None = None, outputs: tuple[str, ...] = ("dets", "labels")) -> bytes:
    """An end2end-detector-like ONNX graph (input ``input``) whose outputs are the given constants."""
    from onnx import TensorProto, helper, numpy_helper

    arrays = {"dets": np.asarray(dets), "labels": np.asarray(labels)}
    nodes, values = [], []
    for name in outputs:
        array = arrays.get(name, np.zeros((1, 1), np.float32))
        nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(array)))
        values.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(array.dtype),
                                                    list(array.shape)))
    graph = helper.make_graph(nodes, "detector", [helper.make_tensor_value_info(
        "input", TensorProto.FLOAT if input_type is None else input_type,
        [1, 3, 32, 32] if input_shape is None else input_shape)], values)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def with_metadata(bare: bytes, text: str | None, key: str = "poseforge") -> bytes:
    """A serialized graph with ``text`` as its ``key`` metadata entry."""
    import onnx

    proto = onnx.ModelProto()
    proto.ParseFromString(bare)
    if text is not None:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, text
    return proto.SerializeToString()


def _image(rng: random.Random, size: tuple[int, int] | None = None) -> np.ndarray:
    w, h = size or rng.choice(IMAGE_SIZES)
    return np.random.default_rng(rng.randrange(2**32)).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _check_message(error: BaseException, path: Path | str) -> None:
    message = str(error)
    assert len(message.splitlines()) == 1, f"multi-line message: {message!r}"
    assert Path(path).name in message, f"message does not name the file: {message!r}"


def _check_result(result: Any, k: int | None) -> None:
    p = len(result)
    assert result.keypoints.ndim == 3 and result.keypoints.shape[0] == p and result.keypoints.shape[2] == 2
    assert result.scores.shape == result.keypoints.shape[:2] and result.boxes.shape == (p, 4)
    assert result.box_scores.shape == (p,)
    if k is not None:
        assert result.keypoints.shape[1] == k, (result.keypoints.shape, k)
    assert np.isfinite(result.boxes).all(), result.boxes
    json.dumps(result.to_json())


def _run_pipeline(source: Any, rng: random.Random, valid: bool = False, **options: Any) -> None:
    """Load ``source`` (a path or a :class:`PoseModel`) as a pipeline, run it on an image (sometimes with the flip
    test, without a flip index too unless ``valid`` says the case must work) and draw the result."""
    from poseforge.runtime import TopDownPipeline, draw_poses, load_pipeline

    pipeline = load_pipeline(source, num_threads=1, **options)
    if isinstance(pipeline, TopDownPipeline):  # (rarely without a flip index: that is an error to check too)
        able = not pipeline.model.meta.decoded and (pipeline.model.meta.keypoints.flip_index or
                                                    (not valid and rng.random() < 0.1))
        pipeline.flip_test = bool(able) and rng.random() < 0.4
    image = _image(rng)
    boxes = None
    if isinstance(pipeline, TopDownPipeline) and rng.random() < 0.3:
        boxes = np.array([[2.0, 3.0, 30.0, 36.0], [0.0, 0.0, 5.0, 5.0]])[: rng.randrange(3)]
    result = pipeline(image, boxes) if boxes is not None else pipeline(image)
    _check_result(result, pipeline.model.num_keypoints)
    drawn = draw_poses(image, result, pipeline.model.meta.keypoints.skeleton)
    assert drawn.shape == image.shape


# ------------------------------------------------------------------------------------------------ metadata
def _meta_edit(doc: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """One plausible-looking but wrong value in a field the runtime uses."""
    doc = copy.deepcopy(doc)
    codec, kp, crop = doc.setdefault("codec", {}), doc.setdefault("keypoint_set", {}), doc.setdefault("crop", {})
    k = len(kp.get("keypoints") or []) or 17
    def bad_number() -> Any:
        return rng.choice([0, -1, 0.0, -2.5, float("nan"), float("inf"), 1e-30, 1e30, 10**400, "2", True, None, [2.0],
                           10**20])
    if rng.random() < 0.2:  # any wrong value in a field the runtime reads
        section, key = rng.choice([(doc, "input_size"), (doc, "mean"), (doc, "std"), (doc, "kind"), (doc, "decoded"),
                                   (doc, "codec"), (doc, "keypoint_set"), (doc, "crop"), (codec, "split_ratio"),
                                   (codec, "sigma"), (kp, "keypoints"), (kp, "flip_index"), (kp, "skeleton"),
                                   (crop, "padding"), (crop, "udp")])
        section[key] = _bad_value(rng)
        return doc
    field = rng.randrange(16)
    if field == 0:
        codec["split_ratio"] = bad_number()
    elif field == 1:
        codec["name"] = rng.choice(["bogus", "", "simcc", "msra", "dark", "udp", "stub-ae", 5, None, ["udp"]])
    elif field == 2:
        codec[rng.choice(["sigma", "decode_window", "decode_beta", "blur_kernel_size", "max_people"])] = rng.choice(
            [bad_number(), [], [1.0], [1.0, 2.0, 3.0], [float("nan"), 1.0], 2, 4, 1e6, 10**9])
    elif field == 3:
        kp["flip_index"] = rng.choice([list(range(k))[::-1], list(range(k + 1)), [0] * (k - 1), [k] * k, [-1] * k,
                                       [-(k + 1)] * k, [1.5] * k, ["1"] * k, [10**20] * k, [], 7])
    elif field == 4:
        kp["skeleton"] = rng.choice([[[0, k]], [[-1, 0]], [[0, 10**20]], [[0]], [[0, 1, 2]], [["a", "b"]], [[1.5, 2]],
                                     [[None, 1]], [1, 2], "ab", [[0, 1]] * 3, [[k - 1, 0]]])
    elif field == 5:
        kp["keypoints"] = rng.choice([["a"] * (k - 1), ["a"] * (k + 1), [], [1] * k, [None] * k, "abc", ["é"] * k])
    elif field == 6:
        kp["sigmas"] = rng.choice([[0.1] * (k - 1), [float("nan")] * k, ["x"] * k, [None], [-1.0] * k, 3])
    elif field == 7:
        crop["padding"] = bad_number()
    elif field == 8:
        crop["udp"] = rng.choice(["false", "true", 0, 1, None, [], 2])
    elif field == 9:
        doc["input_size"] = rng.choice([[64, 48], [48, 64, 1], [0, 64], [-48, 64], [48.5, 64], [1e9, 1e9], [10**20, 1],
                                        ["48", "64"], [True, 64], [float("nan"), 64], "48x64", [48]])
    elif field == 10:
        doc[rng.choice(["mean", "std"])] = rng.choice([[0.0, 0.0, 0.0], [float("nan")] * 3, [float("inf")] * 3,
                                                        [1.0, 2.0], [10**400] * 3, ["1", "2", "3"], [-1.0] * 3,
                                                        [True, False, True], "123"])
    elif field == 11:
        doc["kind"] = rng.choice(["topdown", "bottomup", "dense", "TopDown", "", None, 1])
    elif field == 12:
        doc["decoded"] = rng.choice(["false", "true", 0, 1, None, [], not doc.get("decoded")])
    elif field == 13:
        doc["outputs"] = rng.choice([[], ["x"], "simcc_x", [1, 2], None, ["keypoints", "scores"], ["heatmaps", "tags"]])
    elif field == 14:
        doc[rng.choice(["channel_order", "layout", "model", "task", "source", "poseforge_version"])] = rng.choice(
            ["BGR", "bgr", "XYZ", "", "NHWC", "nchw", None, 5, [1], {"a": 1}, "é\u2028", "x" * 1000])
    else:
        doc[rng.choice(["version", "format"])] = rng.choice([1, 1.0, "1", 2, 0, True, None, [1], 10**400,
                                                             "poseforge-onnx", "onnx", ""])
    return doc


def _meta_valid_edit(doc: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """Other values that are right for the same graph: the file must still load and run."""
    doc = copy.deepcopy(doc)
    codec, kp, crop = doc["codec"], doc["keypoint_set"], doc["crop"]
    k = len(kp["keypoints"])
    for _ in range(rng.randrange(1, 4)):
        field = rng.randrange(9)
        if field == 0:
            kp["keypoints"] = [f"joint {i} é" for i in range(k)]
        elif field == 1:
            links = kp.get("skeleton", [])
            kp["skeleton"] = rng.sample(links, rng.randrange(len(links) + 1))
        elif field == 2:
            kp["flip_index"] = rng.choice([list(range(k)), list(range(k))[::-1]])
        elif field == 3:
            kp.pop(rng.choice(["sigmas", "flip_index", "skeleton", "name"]), None)
        elif field == 4:
            crop["padding"], crop["udp"] = rng.uniform(1.0, 2.0), rng.random() < 0.5
        elif field == 5:
            doc["mean"], doc["std"] = [rng.uniform(0, 255) for _ in range(3)], [rng.uniform(1, 100) for _ in range(3)]
            doc["channel_order"] = rng.choice(["RGB", "BGR", "rgb"])
        elif field == 6 and codec.get("name") == "simcc":
            codec["decode_window"], codec["sigma"] = rng.uniform(0, 10), rng.choice([5.0, [4.9, 5.66], [3.0]])
        elif field == 6 and codec.get("name") in ("msra", "dark", "udp"):
            codec["blur_kernel_size"] = rng.choice([1, 3, 11, 25, None])
            codec["name"] = rng.choice(["msra", "dark", "udp"])
        elif field == 6:
            codec["max_people"] = rng.randrange(1, 40)
        elif field == 7:
            for key in rng.sample(["model", "task", "source", "poseforge_version", "outputs", "layout", "inputs"], 3):
                doc.pop(key, None)
        else:
            doc["version"] = rng.choice([1, 1.0])
    return doc


def check_metadata(rng: random.Random, folder: Path) -> None:
    from poseforge.runtime import ModelMeta, PoseModel

    m = models()
    name = rng.choice(["simcc", "heatmap", "decoded", "bottomup"])
    base = m.meta[name]
    roll = rng.random()
    valid = roll < 0.3
    if valid:
        text = json.dumps(_meta_valid_edit(base, rng))
    else:
        doc = _meta_edit(base, rng) if roll < 0.65 else mutate(_meta_edit(base, rng) if roll < 0.75 else base, rng)
        text = encode(doc, rng).decode("utf-8", "replace")
    path = folder / "fuzzed-meta.onnx"
    if rng.random() < 0.6:  # the parser alone
        try:
            meta = ModelMeta.from_json(text, str(path))
        except PoseforgeError as e:
            assert not valid, f"a valid variant refused: {e}"
            _check_message(e, path)
            return
        assert meta.kind in ("topdown", "bottomup", "dense")
        assert all(isinstance(v, int) and v > 0 for v in meta.input_size)
        assert len(meta.mean) == len(meta.std) == 3
        return
    path.write_bytes(with_metadata(m.bare[name], text))
    try:
        model = PoseModel(path, num_threads=1)
        if model.kind == "dense":
            return
        _run_pipeline(path if rng.random() < 0.5 else model, rng, valid)
    except PoseforgeError as e:
        assert not valid, f"a valid variant refused: {e}"
        _check_message(e, path)


# ------------------------------------------------------------------------------------------------- options
def _option_value(name: str, rng: random.Random) -> Any:
    nan, inf = float("nan"), float("inf")
    values: dict[str, list[Any]] = {
        "input_size": [(48, 64), (48, 64), [48.0, 64], (64, 48), (0, 0), (-1, 5), (10**9, 1), ("a", "b"), (48,),
                       (48.5, 64), (nan, 1), (inf, 64), "48x64", 48, (48, 64, 3)],
        "mean": [(123.675, 116.28, 103.53), (0, 0, 0), (nan, 0, 0), (1, 2), ("a", "b", "c"), 5, (inf, 1, 1),
                 (10**400, 1, 1)],
        "std": [(58.395, 57.12, 57.375), (1, 1, 1), (0, 0, 0), (-1, 1, 1), (nan, 1, 1), (1, 2), (inf, 1, 1), "abc"],
        "split_ratio": [2.0, 2.0, 1.0, 0.0, -1.0, nan, inf, 1e-30, "x", 10**400, 1e30],
        "codec": ["simcc", "msra", "dark", "udp", {"name": "dark", "sigma": 2.0, "blur_kernel_size": 11}, "bogus", "",
                  {}, {"name": "simcc", "split_ratio": 0}, {"name": "simcc", "decode_window": nan},
                  {"name": "udp", "sigma": -1}, {"name": "dark", "sigma": []},
                  {"name": "msra", "blur_kernel_size": 4}, 5, ["simcc"]],
        "kind": ["topdown", "topdown", None, "bottomup", "dense", "bogus", "", 5],
        "keypoint_names": [["a"] * 17, [f"k{i}" for i in range(17)], ["a"] * 3, [], "abc", [1, 2]],
        "skeleton": [[(0, 1)], [[15, 13], [13, 11]], [], [(0, 99)], [(-1, 0)], [("a", "b")], [(0,)], [(1.5, 2)], "ab"],
        "flip_index": [list(range(17))[::-1], list(range(17)), list(range(17)), list(range(16)), [99] * 17, [-1] * 17,
                       ["a"] * 17, [1.5] * 17],
        "udp": [True, False, None, "no"],
        "padding": [1.25, 1.0, 1.5, 0.0, -1.0, nan, inf, 1e30, "x"],
        "channel_order": ["RGB", "BGR", "bgr", "xyz", "", 5],
    }
    return rng.choice(values[name])


def check_options(rng: random.Random, folder: Path) -> None:
    from poseforge.runtime import PoseModel

    m = models()
    name = rng.choice(["simcc", "heatmap", "with-metadata"])
    path = folder / "options.onnx"
    # (with metadata: the options are ignored, but keypoint names and skeleton replace the file's for drawing)
    path.write_bytes(m.bytes["simcc"] if name == "with-metadata" else m.bare[name])
    options: dict[str, Any] = {}
    if rng.random() < 0.8:  # the needed ones, mostly right
        options["mean"], options["std"] = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
        if name == "heatmap":
            options["codec"] = rng.choice(["msra", "dark", "udp"])
    names = ["input_size", "mean", "std", "split_ratio", "codec", "kind", "keypoint_names", "skeleton", "flip_index",
             "udp", "padding", "channel_order"]
    for option in rng.sample(names, rng.randrange(0, 3)):
        options[option] = _option_value(option, rng)
    try:
        model = PoseModel(path, num_threads=1, **options)
        if model.kind == "dense":
            return
        _run_pipeline(model, rng)
    except PoseforgeError as e:
        _check_message(e, path)


# --------------------------------------------------------------------------------------------------- files
def _corrupt(data: bytes, rng: random.Random) -> bytes:
    roll = rng.random()
    if roll < 0.25:  # truncated
        return data[: rng.choice([0, 1, 4, 16, 100, rng.randrange(len(data)), len(data) - 1])]
    if roll < 0.55:  # a few flipped bytes (mostly in the graph's head: the structure, not the weights)
        out = bytearray(data)
        head = rng.random() < 0.6
        for _ in range(rng.choice([1, 1, 2, 5, 20])):
            at = rng.randrange(min(len(out), 4096) if head else len(out))
            out[at] ^= 1 << rng.randrange(8) if rng.random() < 0.7 else rng.randrange(1, 256)
        return bytes(out)
    if roll < 0.7:  # a range overwritten with random bytes
        at = rng.randrange(len(data))
        n = rng.choice([1, 8, 64, 1000])
        return data[:at] + rng.randbytes(n) + data[at + n:]
    if roll < 0.8:
        return rng.randbytes(rng.choice([1, 7, 100, 5000, 100_000]))
    if roll < 0.9:
        return rng.choice([b"hello\n", b"{\"poseforge\": 1}", b"<html></html>", "é\u2028".encode(), b"\x00" * 64,
                           b"ONNX", b"\n\x08"])
    return b""


def check_files(rng: random.Random, folder: Path) -> None:
    from poseforge.runtime import PersonDetector, PoseModel

    m = models()
    path = folder / rng.choice(["model.onnx", "é model.onnx", "模型.onnx", "model.txt", "yolox.onnx"])
    if path.is_dir():
        path.rmdir()
    source = rng.choice(["simcc", "heatmap", "decoded", "bottomup", "bare-simcc", "detector"])
    roll = rng.random()
    if roll < 0.8:
        path.write_bytes(_corrupt(m.bytes[source], rng))
    elif roll < 0.9:  # intact: a model of the other kind, or one without metadata
        path.write_bytes(m.bytes[source])
    elif roll < 0.95:  # a folder
        path.unlink(missing_ok=True)
        path.mkdir()
    else:
        path.unlink(missing_ok=True)
    as_detector = rng.random() < 0.35
    try:
        if as_detector:
            detector = PersonDetector(path, num_threads=1)
            found = detector(_image(rng))
            assert len(found.boxes) == len(found.scores) == len(found.labels)
        elif rng.random() < 0.5:
            PoseModel(path, num_threads=1).run(np.zeros((1, 3, 64, 48), np.float32))
        else:
            _run_pipeline(path, rng)
    except PoseforgeError as e:
        _check_message(e, path)
    finally:
        if path.is_dir():
            path.rmdir()


# ------------------------------------------------------------------------------------------------ detector
def _fuzzed_detections(rng: random.Random) -> tuple[np.ndarray, np.ndarray]:
    m = rng.choice([0, 1, 3, 20])
    nrng = np.random.default_rng(rng.randrange(2**32))
    xy = nrng.uniform(-5, 40, (1, m, 2))
    dets = np.concatenate([xy, xy + nrng.uniform(-3, 25, (1, m, 2)), nrng.uniform(0, 1, (1, m, 1))], -1)
    labels = nrng.integers(0, 2, (1, m))
    roll = rng.random()
    if roll < 0.25 and m:  # odd values
        dets[0, rng.randrange(m), rng.randrange(5)] = rng.choice([float("nan"), float("inf"), -float("inf"), -1e30,
                                                                    1e30, -3.0, 2.0])
    elif roll < 0.31:  # odd last dim / rank
        dets = rng.choice([dets[..., :4], np.concatenate([dets, dets[..., :1]], -1), dets[0], dets[None],
                           dets.reshape(1, -1)])
    elif roll < 0.35:  # a batch that is not the frame count
        dets, labels = np.concatenate([dets, dets]), np.concatenate([labels, labels])
    if rng.random() < 0.1:
        labels = rng.choice([labels[:, :max(m - 1, 0)], np.concatenate([labels, labels], 1), labels[0],
                             labels[..., None], np.zeros((1,), np.int64), labels.astype(np.float32) + 0.5,
                             np.full(labels.shape, np.nan, np.float32), labels.astype(bool)])
    dtype = rng.choice([np.float32] * 6 + [np.float16, np.float64, np.int64])
    with np.errstate(invalid="ignore", over="ignore"):
        return dets.astype(dtype), np.asarray(labels)


def check_detector(rng: random.Random, folder: Path) -> None:
    from onnx import TensorProto

    from poseforge.runtime import PersonDetector, TopDownPipeline

    dets, labels = _fuzzed_detections(rng)
    input_shape = rng.choice([[1, 3, 32, 32]] * 10 + [["batch", 3, "h", "w"]] * 3 + [[1, 3, 32, 48], [2, 3, 32, 32],
                                                                                    [1, 1, 32, 32], [1, 3, 32],
                                                                                    [1, 3, 0, 32], [1, 3, 1, 1]])
    input_type = rng.choice([None] * 20 + [TensorProto.UINT8, TensorProto.FLOAT16])
    outputs = rng.choice([("dets", "labels")] * 16 + [("labels", "dets"), ("dets",), ("dets", "labels", "extra")])
    path = folder / rng.choice(["rtmdet.onnx", "yolox-fake.onnx"])
    path.write_bytes(detector_bytes(dets, labels, input_shape=input_shape, input_type=input_type, outputs=outputs))
    frames = [_image(rng) for _ in range(rng.choice([1, 1, 2]))]
    try:
        detector = PersonDetector(path, num_threads=1, person_label=rng.choice([0, 0, None, 1]),
                                  batched=rng.random() < 0.3, score_threshold=rng.choice([0.3, 0.0, 0.99]))
        if rng.random() < 0.3:
            pipeline = TopDownPipeline(models().paths["simcc"], detector, num_threads=1)
            _check_result(pipeline(frames[0]), 17)
            return
        found = detector.detect_batch(frames)
    except PoseforgeError as e:
        _check_message(e, path)
        return
    assert len(found) == len(frames)
    for boxes, frame in zip(found, frames, strict=True):
        h, w = frame.shape[:2]
        assert boxes.boxes.shape == (len(boxes), 4) and boxes.scores.shape == boxes.labels.shape == (len(boxes),)
        assert np.isfinite(boxes.boxes).all() and np.isfinite(boxes.scores).all(), boxes
        assert (boxes.boxes >= 0).all() and (boxes.boxes[:, [0, 2]] <= w).all() and (boxes.boxes[:, [1, 3]] <= h).all()
        assert (np.diff(boxes.scores) <= 0).all()


# ----------------------------------------------------------------------------------------------------- CLI
def _cli_files(folder: Path) -> dict[str, str]:
    """Inputs of the generated command lines (made once per folder)."""
    import cv2

    f = {"images": folder / "images", "empty": folder / "empty", "png": folder / "images" / "a.png",
         "unicode": folder / "ünï cødé" / "人.png", "fake_jpg": folder / "fake.jpg", "txt": folder / "note.txt",
         "dir_jpg": folder / "dir.jpg", "video": folder / "clip.mp4", "bad_video": folder / "bad.mp4",
         "mixed": folder / "mixed", "missing": folder / "missing.png", "out_file": folder / "out.json",
         "corrupt": folder / "corrupt.onnx", "dir_onnx": folder / "dir.onnx", "text_onnx": folder / "text.onnx"}
    if not f["images"].exists():
        rng = random.Random(0)
        f["images"].mkdir()
        for i, size in enumerate(IMAGE_SIZES):
            cv2.imwrite(str(f["images"] / f"{'ab'[i]}.png"), _image(rng, size))
        f["empty"].mkdir()
        f["unicode"].parent.mkdir()
        f["unicode"].write_bytes((f["images"] / "a.png").read_bytes())
        f["fake_jpg"].write_text("not an image\n")
        f["txt"].write_text("hello\n")
        f["dir_jpg"].mkdir()
        f["mixed"].mkdir()
        (f["mixed"] / "ok.png").write_bytes((f["images"] / "b.png").read_bytes())
        (f["mixed"] / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
        writer = cv2.VideoWriter(str(f["video"]), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (56, 40))
        for _ in range(2):
            writer.write(_image(rng, (56, 40)))
        writer.release()
        f["bad_video"].write_bytes(f["video"].read_bytes()[:200] if f["video"].exists() else b"\x00" * 200)
        f["out_file"].write_text("{}")
        f["corrupt"].write_bytes(models().bytes["simcc"][:5000])
        f["dir_onnx"].mkdir()
        f["text_onnx"].write_text("not onnx\n")
    return {k: str(v) for k, v in f.items()}


_WORDS = ["", " ", "-", "--", "é", "\u2028", "x" * 300, "-1", "0", "nan", "inf", "1e999", "--nope", "-z", "a\nb"]


def _argv(rng: random.Random, folder: Path) -> list[str]:
    """A command line: mostly one that fails fast (bad numbers, missing or wrong files), else a working one."""
    f = _cli_files(folder)
    m = models()
    numbers = ["0", "-1", "1.5", "nan", "inf", "x", "", "1e3", "0.5", "1", "99999999999999999999", "-0"]
    sizes = ["48x64", "64x48", "0x-3", "8x", "x8", "0x0", "-8x8", "8x8x8", "", "ax b", "1e3x8", "48X64", "nanx64",
             "infxinf", "1e30x1e30", "48.5x64"]
    triples = ["123.675,116.28,103.53", "58.395,57.12,57.375", "0,0,0", "1,2", "a,b,c", "", "nan,nan,nan", "inf,1,1",
               "-1,1,1", "1,,2", "1;2;3", "1e999,1,1"]
    codecs = ["simcc", "msra", "dark", "udp", "bogus", ""]
    if rng.random() < 0.45:
        return _good_argv(rng, folder, f)
    source = rng.choice([f["images"]] * 4 + [f["png"], f["unicode"], f["empty"], f["fake_jpg"], f["txt"], f["dir_jpg"],
                                             f["video"], f["bad_video"], f["mixed"], f["missing"], ""])
    model = rng.choice([str(m.paths["simcc"])] * 3 + [str(m.paths[n]) for n in ("heatmap", "decoded", "bottomup",
                                                                              "bare-simcc", "bare-heatmap", "detector")]
                       + [f["corrupt"], f["dir_onnx"], f["text_onnx"], f["txt"], f["missing"], ""])
    argv = [source, "--model", model]
    if rng.random() < 0.25:
        argv += ["--detector", rng.choice([str(m.paths["detector"])] * 3 + [str(m.paths["simcc"]), f["corrupt"],
                                                                           f["txt"], f["missing"], f["dir_onnx"], ""])]
    out = rng.choice([str(folder / "out")] * 6 + [f["out_file"], f["images"], f["png"], str(folder / "ñ out"), ""])
    argv += ["--out", out]
    if rng.random() < 0.8:
        argv.append("--force")
    if rng.random() < 0.5:
        argv.append("--no-draw")
    for flag, values in (("--boxes-threshold", numbers), ("--keypoint-threshold", numbers), ("--threads", numbers),
                         ("--input-size", sizes), ("--mean", triples), ("--std", triples), ("--split-ratio", numbers),
                         ("--codec", codecs)):
        if rng.random() < 0.12:
            argv += [flag, rng.choice(values)]
    if rng.random() < 0.15:
        argv.append("--flip-test")
    if rng.random() < 0.1:
        argv.insert(rng.randrange(len(argv) + 1), rng.choice(_WORDS))
    return argv


def _good_argv(rng: random.Random, folder: Path, f: dict[str, str]) -> list[str]:
    """A command line that works (sometimes with one value made bad)."""
    m = models()
    model = rng.choice(["simcc", "heatmap", "decoded", "bottomup", "bare-simcc", "bare-heatmap"])
    argv = [rng.choice([f["images"], f["png"], f["unicode"], f["video"]]), "--model", str(m.paths[model]),
            "--out", str(folder / rng.choice(["out", "ñ out"])), "--force"]
    if model.startswith("bare"):
        argv += ["--mean", "123.675,116.28,103.53", "--std", "58.395,57.12,57.375"]
        if model == "bare-heatmap":
            argv += ["--codec", rng.choice(["msra", "dark", "udp"])]
        elif rng.random() < 0.3:
            argv += ["--split-ratio", "2", "--input-size", "48x64"]
    if model != "bottomup" and rng.random() < 0.3:
        argv += ["--detector", str(m.paths["detector"]), "--boxes-threshold", rng.choice(["0", "0.3", "0.7", "1"])]
    if model in ("simcc", "heatmap") and rng.random() < 0.3:
        argv.append("--flip-test")
    argv += ["--threads", rng.choice(["1", "1", "2"])]  # (one thread: the shared test machine)
    argv += rng.choice([[], ["--no-draw"], ["--keypoint-threshold", rng.choice(["0", "0.5", "1"])]])
    if rng.random() < 0.3:  # one bad value
        at = rng.randrange(len(argv))
        argv[at] = rng.choice(_WORDS + [f["missing"], f["txt"], f["dir_onnx"], f["corrupt"], "nan", "0x0"])
    return argv


def check_cli(rng: random.Random, folder: Path) -> None:
    from poseforge.runtime import cli

    argv = _argv(rng, folder)
    escaped: list[BaseException] = []
    run = cli.run

    def recording_run(args: Any) -> int:  # what main's catch-all would turn into an anonymous one-liner
        try:
            return run(args)
        except PoseforgeError:
            raise
        except OSError as e:
            if not e.filename:
                escaped.append(e)
            raise
        except Exception as e:
            escaped.append(e)
            raise

    err = io.StringIO()
    cli.run = recording_run
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = cli.main(argv)
            except SystemExit as e:  # argparse's one-line usage errors
                code = e.code
    finally:
        cli.run = run
    if escaped:
        raise escaped[0]
    text = err.getvalue()
    assert isinstance(code, int), f"exit code {code!r} for {argv!r}"
    assert "Traceback" not in text, f"{argv!r}: {text[-300:]!r}"
    errors = [line for line in text.splitlines() if "error" in line.lower()]
    assert len(errors) <= 1, f"{argv!r}: {len(errors)} error lines: {text[-300:]!r}"
    if code != 0:
        assert errors, f"{argv!r}: exit code {code} without an error line: {text[-300:]!r}"


TARGETS: dict[str, Callable[[random.Random, Path], None]] = {
    "metadata": check_metadata, "options": check_options, "files": check_files, "detector": check_detector,
    "cli": check_cli,
}


# ------------------------------------------------------------------------------------------------- tests
@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory) -> Path:
    models()  # the exports, once per process
    return tmp_path_factory.mktemp("fuzz_runtime")


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


def _meta_file(folder: Path, name: str, edit: Callable[[dict[str, Any]], Any]) -> Path:
    doc = copy.deepcopy(models().meta[name])
    edit(doc)
    path = folder / "edited.onnx"
    path.write_bytes(with_metadata(models().bare[name], json.dumps(doc)))
    return path


@pytest.mark.parametrize("name,edit,pattern", [
    ("simcc", lambda d: d["codec"].__setitem__("split_ratio", "2"),
     r"edited.onnx: poseforge metadata: field 'codec.split_ratio': expected a number, got '2'"),
    ("simcc", lambda d: d["codec"].__setitem__("split_ratio", 3.0),
     r"edited.onnx: poseforge metadata: field 'codec.split_ratio': 3 bins per pixel .* graph outputs 96 x 128"),
    ("simcc", lambda d: d["keypoint_set"].__setitem__("flip_index", list(range(16))),
     r"field 'keypoint_set.flip_index': expected 17 values"),
    ("simcc", lambda d: d["keypoint_set"].__setitem__("skeleton", [[0, 17]]),
     r"field 'keypoint_set.skeleton': keypoint index out of range for 17 keypoints: 17"),
    ("simcc", lambda d: d["keypoint_set"].__setitem__("keypoints", ["a"] * 16),
     r"field 'keypoint_set.flip_index': expected 16 values \(one per keypoint name\), got 17"),
    ("simcc", lambda d: d["keypoint_set"].update(keypoints=["a"] * 16, flip_index=list(range(16)), sigmas=[0.1] * 16,
                                                         skeleton=[[0, 1]]),
     r"field 'keypoint_set.keypoints': expected 17 values \(one per keypoint of the model\), got 16"),
    ("heatmap", lambda d: d.__setitem__("std", [1.0, 0.0, 1.0]), r"field 'std': expected a positive number, got 0.0"),
    ("heatmap", lambda d: d.__setitem__("input_size", [48.5, 64]), r"field 'input_size': expected an integer"),
    ("heatmap", lambda d: d["crop"].__setitem__("padding", float("nan")), r"field 'crop.padding': expected a finite"),
    ("heatmap", lambda d: d.__setitem__("decoded", "false"), r"field 'decoded': expected true or false, got 'false'"),
    ("heatmap", lambda d: d["codec"].__setitem__("blur_kernel_size", 4), r"field 'codec.blur_kernel_size': .*odd"),
    ("bottomup", lambda d: d["codec"].__setitem__("max_people", [4]), r"field 'codec.max_people': expected a number"),
    ("bottomup", lambda d: d.__setitem__("version", [1]), r"poseforge metadata version \[1\] is not supported"),
])
def test_reported_metadata_cases(tmp_path: Path, name: str, edit: Callable[[dict[str, Any]], Any],
                                 pattern: str) -> None:
    """The cases the fuzzer found (tracebacks before): one line naming the file and the field, at load time."""
    from poseforge.runtime import PoseModel

    path = _meta_file(tmp_path, name, edit)
    with pytest.raises(PoseforgeError, match=pattern) as info:
        PoseModel(path, num_threads=1)
    assert len(str(info.value).splitlines()) == 1 and str(path) in str(info.value)


def test_metadata_nesting_and_options(tmp_path: Path) -> None:
    from poseforge.runtime import ModelMeta, PoseModel

    with pytest.raises(PoseforgeError, match=r"^m.onnx: the poseforge metadata is not JSON \(nested too deeply\)$"):
        ModelMeta.from_json("[" * 100_000 + "]" * 100_000, "m.onnx")
    bare = models().paths["bare-simcc"]
    rgb = dict(mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375))
    for options, pattern in [({"input_size": (0, 64)}, r"option 'input_size': expected an integer in 1..16384"),
                             ({"std": (1, 0, 1)}, r"option 'std': expected a positive number, got 0"),
                             ({"split_ratio": float("nan")}, r"option 'split_ratio': expected a finite number"),
                             ({"codec": "bogus"}, r"option 'codec': expected one of simcc, msra, dark, udp"),
                             ({"flip_index": [99] * 17}, r"option 'flip_index': keypoint index out of range"),
                             ({"padding": 0.0}, r"option 'padding': expected a positive number")]:
        with pytest.raises(PoseforgeError, match=pattern) as info:
            PoseModel(bare, num_threads=1, **{**rgb, **options})
        assert str(info.value).startswith(f"{bare}: ") and "\n" not in str(info.value)


def test_corrupt_files_are_one_line_errors(tmp_path: Path, capfd) -> None:
    """Broken files: onnxruntime's own exceptions become one line naming the file, with no 'EP Error' retry
    banner on stdout."""
    from poseforge.runtime import PersonDetector, PoseModel

    data = models().bytes["simcc"]
    for n, content in enumerate([data[: len(data) // 2], b"", b"hello\n", bytes(range(256))]):
        path = tmp_path / f"broken {n}.onnx"
        path.write_bytes(content)
        for load in (PoseModel, PersonDetector):
            with pytest.raises(PoseforgeError, match=r"cannot load ONNX model") as info:
                load(path, num_threads=1)
            assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)
    (tmp_path / "folder.onnx").mkdir()
    with pytest.raises(PoseforgeError, match=r"folder.onnx: pose model file expected, got a folder"):
        PoseModel(tmp_path / "folder.onnx")
    assert "EP Error" not in capfd.readouterr().out


def test_detector_outputs(tmp_path: Path) -> None:
    """Non-finite and empty boxes are dropped; a static batch of 2 runs single frames (padded); a graph that
    cannot run, a dets / labels size mismatch and a non-float input are one-line errors naming the file."""
    from onnx import TensorProto, helper

    from poseforge.runtime import PersonDetector

    frame = np.zeros((40, 56, 3), np.uint8)
    dets = np.array([[[1, 2, 20, 30, 0.9], [np.nan, 2, 20, 30, 0.95], [1, 2, 20, 30, np.inf], [60, 2, 70, 30, 0.8],
                      [5, 5, 9, 9, 0.5]]], np.float32)
    path = tmp_path / "det.onnx"
    path.write_bytes(detector_bytes(np.concatenate([dets, dets]), np.zeros((2, 5), np.int64),
                                    input_shape=[2, 3, 32, 32]))
    found = PersonDetector(path, num_threads=1)(frame)  # one frame through a batch-2 graph
    assert found.scores.tolist() == pytest.approx([0.9, 0.5])  # NaN corner, inf score, box right of the frame: out
    path.write_bytes(detector_bytes(dets, np.zeros((1, 4), np.int64)))
    with pytest.raises(PoseforgeError, match=r"det.onnx: expected labels \[1, 5\] .*got \[1, 4\]"):
        PersonDetector(path, num_threads=1)(frame)
    path.write_bytes(detector_bytes(dets, np.zeros((1, 5), np.int64), input_type=TensorProto.UINT8))
    with pytest.raises(PoseforgeError, match=r"det.onnx: expected a float32 image input"):
        PersonDetector(path, num_threads=1)
    graph = helper.make_graph(  # dets = input reshaped to [1, -1, 7]: 3 x 320 x 320 values do not split into sevens
        [helper.make_node("Reshape", ["input", "shape"], ["dets"]), helper.make_node("Constant", [], ["labels"],
         value=helper.make_tensor("l", TensorProto.INT64, [1, 1], [0]))], "bad",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, "h", "w"])],
        [helper.make_tensor_value_info("dets", TensorProto.FLOAT, [1, None, 5]),
         helper.make_tensor_value_info("labels", TensorProto.INT64, [1, 1])],
        [helper.make_tensor("shape", TensorProto.INT64, [3], [1, -1, 7])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    with pytest.raises(PoseforgeError, match=r"det.onnx: onnxruntime cannot run this detector") as info:
        PersonDetector(path, num_threads=1)(frame)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("flags,pattern", [
    (["--input-size", "nanx64"], r"--input-size: expected 2 positive numbers separated by 'x', got 'nanx64'"),
    (["--input-size", "48.5x64"], r"--input-size: expected WIDTHxHEIGHT in pixels"),
    (["--threads", "99999999999999999999"], r"--threads: expected a number of threads in 1..1024"),
    (["--std", "1,0,1"], r"--std: expected 3 positive numbers"),
    (["--split-ratio", "inf"], r"--split-ratio: expected a positive number, got inf"),
])
def test_cli_bad_numbers_fail_fast(tmp_path: Path, capsys, flags: list[str], pattern: str) -> None:
    from poseforge.runtime.cli import main

    image = tmp_path / "a.png"
    image.write_bytes(b"")  # never read: the flags fail first
    assert main([str(image), "--model", str(models().paths["bare-simcc"]), "--out", str(tmp_path / "o"), *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert __import__("re").search(pattern, err), err


# ------------------------------------------------------------------------------------------------ census
def census(cases: int, seed: int = 0, targets: list[str] | None = None) -> dict[str, Counter]:
    """Failures by kind (exception type and raising line) per target, over ``cases`` seeded inputs."""
    models()
    return census_of(TARGETS, cases, seed, targets)


if __name__ == "__main__":
    import logging

    logging.disable(logging.CRITICAL)
    n_cases = int(sys.argv[1]) if len(sys.argv) > 1 else SLOW
    chosen = sys.argv[2].split(",") if len(sys.argv) > 2 else None
    print_census(census(n_cases, targets=chosen), n_cases)
