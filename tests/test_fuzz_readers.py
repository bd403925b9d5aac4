"""Fuzzed annotation readers: every mutated file is read or refused with a one-line ``PoseforgeError``.

Mutations start from a valid file (the peer sample when present, else a small built-in one, so the suite
never skips): values of the wrong type (int / str / list / dict / None / NaN / inf / huge / negative),
deleted keys, nested lists, duplicated records, wrong lengths, path escapes, truncated and non-UTF-8 bytes.
Properties: no other exception type escapes; the message is one line and names the file; every image path
of a file that reads stays inside the image root.

The default suite runs a quick profile (``QUICK`` cases per reader); ``pytest -m slow`` runs ``SLOW``.
``python tests/test_fuzz_readers.py [cases]`` prints a census of the failures by kind (no hypothesis).
"""
from __future__ import annotations

import copy
import json
import os
import random
import sys
import tempfile
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from poseforge.data.coco import read_coco
from poseforge.data.readers import read_dataset, read_mpii
from poseforge.errors import DataError, PoseforgeError

QUICK = 100
SLOW = 1000
PEER = Path(os.environ.get("POSEFORGE_SHARED", Path(__file__).resolve().parents[1].parent / "shared")) / "peer-data"

COCO17 = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
          "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
          "right_ankle"]
CROWDPOSE14 = ["left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip",
               "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "head", "neck"]


def _builtin_coco(names: list[str], crowd_index: bool = False, area: bool = True) -> dict[str, Any]:
    """A small valid COCO keypoint file: two images, three people."""
    k = len(names)
    images = [{"id": i, "file_name": f"{i:012d}.jpg", "width": 640, "height": 480} for i in (1, 2)]
    if crowd_index:
        for img in images:
            img["crowdIndex"] = 0.25
    anns = []
    for n, image_id in enumerate((1, 1, 2)):
        kps: list[float] = []
        for j in range(k):
            kps += [10.0 + 5 * j + n, 20.0 + 3 * j, 2 if j % 3 else 1]
        ann = {"id": 100 + n, "image_id": image_id, "category_id": 1, "bbox": [5.0, 10.0, 100.0, 200.0],
               "keypoints": kps, "num_keypoints": k}
        if area:
            ann.update(area=20000.0, iscrowd=0)
        anns.append(ann)
    return {"images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "person", "keypoints": names, "skeleton": [[1, 2]]}]}


def _builtin_mpii() -> list[dict[str, Any]]:
    return [{"image": f"{n:09d}.jpg", "center": [300.0 + n, 200.0], "scale": 1.5,
             "joints": [[100.0 + 3 * j, 50.0 + 10 * j] for j in range(16)], "joints_vis": [1] * 15 + [0]}
            for n in (5808361, 4645041, 4645041)]


def _base(rel: str, builtin: Callable[[], Any]) -> Any:
    """The peer sample when it is present and of the expected layout (a shared file can be replaced), else ``builtin()``."""
    fallback = builtin()
    try:
        doc = json.loads((PEER / rel).read_text())
    except (OSError, ValueError):
        return fallback
    if isinstance(fallback, dict):
        usable = isinstance(doc, dict) and isinstance(doc.get("images"), list) and isinstance(doc.get("annotations"), list)
    else:
        usable = isinstance(doc, list) and all(isinstance(a, dict) and "joints" in a for a in doc)
    return doc if usable else fallback


# reader name -> (base document, reader taking (path, image_root))
READERS: dict[str, tuple[Any, Callable[[Path, Path], Any]]] = {
    "coco": (_base("coco/test_coco.json", lambda: _builtin_coco(COCO17)), lambda p, r: read_coco(p, r)),
    "coco-explicit": (_base("coco/test_coco.json", lambda: _builtin_coco(COCO17)),
                      lambda p, r: read_dataset(p, "coco", r, skip_crowd=True, min_labeled=1)),
    "aic": (_base("aic/test_aic.json", lambda: _builtin_coco(CROWDPOSE14[:12] + ["head_top", "neck"], area=False)),
            lambda p, r: read_dataset(p, "aic", r)),
    "crowdpose": (_builtin_coco(CROWDPOSE14, crowd_index=True), lambda p, r: read_dataset(p, "crowdpose", r)),
    "wholebody": (_base("coco/test_coco_wholebody.json", lambda: _builtin_coco(COCO17)), lambda p, r: read_coco(p, r)),
    "mpii": (_base("mpii/test_mpii.json", _builtin_mpii), lambda p, r: read_mpii(p, r)),
    "auto": (_base("mpii/test_mpii.json", _builtin_mpii), lambda p, r: read_dataset(p, "auto", r)),
}

_NAMES = ["../../x.jpg", "/etc/hostname", "..", ".", "", "a/../../b.jpg", "images/../../../etc/passwd", "x\x00.jpg",
          "a\nb.jpg", "ok/./nested.jpg", "x" * 300, "²³.jpg", "9" * 5000 + ".jpg", "test_coco.json", "\udcff.jpg"]


def _bad_value(rng: random.Random) -> Any:
    """A value of a wrong type, or an extreme one."""
    choice = rng.randrange(16)
    if choice == 0:
        return rng.choice([0, 1, -1, 5, 2**31, -(2**63)])
    if choice == 1:
        return 10 ** rng.choice([20, 400])  # huge: overflows float conversions
    if choice == 2:
        return rng.choice([float("nan"), float("inf"), float("-inf"), -0.0, 1e308, -1e308, 0.5])
    if choice == 3:
        return rng.choice(["x", "1", "", "nan", "é\u2028", "a\nb"])
    if choice == 4:
        return rng.choice(_NAMES)
    if choice == 5:
        return None
    if choice == 6:
        return rng.choice([True, False])
    if choice == 7:
        return []
    if choice == 8:
        return {}
    if choice == 9:
        return {"a": 1, "id": [1]}
    if choice == 10:
        return [rng.choice([1, "1", None, [1, 2], {}]) for _ in range(rng.randrange(1, 6))]
    if choice == 11:
        return [float(rng.randrange(-5, 50)) for _ in range(rng.choice([3, 4, 5, 48, 51, 42, 399]))]
    if choice == 12:
        return [[1.0, 2.0]] * rng.randrange(1, 20)
    if choice == 13:
        return [1, [2, [3, [4]]]]
    if choice == 14:
        return rng.choice(COCO17[:5] + [1, 2, 3])
    return -rng.random() * 10 ** rng.randrange(0, 6)  # negative


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Paths to the nodes worth mutating; long number lists contribute themselves and two elements."""
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, prefix + (key,))
    elif isinstance(node, list):
        numbers = len(node) > 4 and all(isinstance(v, (int, float)) for v in node)
        picks = [0, len(node) - 1] if numbers else range(len(node))
        for i in picks:
            out += _paths(node[i], prefix + (i,))
    return out


def _get(doc: Any, path: tuple) -> Any:
    for key in path:
        doc = doc[key]
    return doc


def mutate(doc: Any, rng: random.Random) -> Any:
    """Apply one to three structural or value mutations to a copy of ``doc``."""
    doc = copy.deepcopy(doc)
    for _ in range(rng.randrange(1, 4)):
        paths = _paths(doc)
        path = rng.choice(paths)
        if not path:
            if rng.random() < 0.2:
                return _bad_value(rng)
            continue
        parent, key = _get(doc, path[:-1]), path[-1]
        op = rng.randrange(7)
        if op <= 2:  # a wrong value
            parent[key] = _bad_value(rng)
        elif op == 3:  # delete the key / element
            del parent[key]
        elif op == 4:  # nest one level deeper
            parent[key] = [parent[key]]
        elif op == 5 and isinstance(parent, list):  # duplicate a record (duplicate ids)
            parent.insert(key, copy.deepcopy(parent[key]))
        elif op == 5 and isinstance(parent[key], list) and parent[key]:  # wrong length
            parent[key] = parent[key][: rng.randrange(len(parent[key]))] if rng.random() < 0.5 else parent[key] * 2
        elif op == 6 and isinstance(parent, dict):  # a string key that should be a field name
            parent[rng.choice(["foot_kpts", "face_kpts", "crowdIndex", "score", "segmentation"])] = _bad_value(rng)
        else:
            parent[key] = rng.choice(_NAMES)
    return doc


def encode(doc: Any, rng: random.Random) -> bytes:
    """The mutated document as bytes; sometimes broken JSON, non-UTF-8 bytes or very deep nesting."""
    data = json.dumps(doc).encode("utf-8", "surrogatepass")
    roll = rng.random()
    if roll < 0.04:
        return data[: rng.randrange(len(data) + 1)]
    if roll < 0.07:
        at = rng.randrange(len(data) + 1)
        return data[:at] + bytes([rng.choice([0xFF, 0xC3, 0x80, 0x00])]) + data[at:]
    if roll < 0.08:
        return b"[" * 100_000 + b"]" * 100_000
    if roll < 0.09:
        return b""
    return data


def check_one(reader: str, rng: random.Random, folder: Path) -> None:
    """Write one mutated file into ``folder`` and read it; raise AssertionError on a broken property."""
    base, read = READERS[reader]
    path = folder / "ann.json"
    path.write_bytes(encode(mutate(base, rng), rng))
    root = folder / "images"
    try:
        data = read(path, root)
    except PoseforgeError as e:
        message = str(e)
        assert len(message.splitlines()) == 1, f"multi-line message: {message!r}"
        assert str(path) in message, f"message does not name the file: {message!r}"
        return
    real_root = os.path.normpath(os.path.abspath(root))
    for info in data.images.values():  # path containment: nothing resolves outside the image root
        full = os.path.normpath(os.path.abspath(info.path))
        assert os.path.commonpath([real_root, full]) == real_root and full != real_root, f"escapes the root: {info.path!r}"
    for inst in data.instances:
        assert inst.keypoints.shape[0] == data.keypoint_set.num_keypoints


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "images").mkdir()
    return folder


def _run(reader: str, examples: int, folder: Path) -> None:
    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(rng=st.randoms(use_true_random=False))
    def case(rng: random.Random) -> None:
        check_one(reader, rng, folder)

    case()


@pytest.mark.parametrize("reader", sorted(READERS))
def test_fuzz_quick(reader: str, fuzz_dir: Path) -> None:
    _run(reader, QUICK, fuzz_dir)


@pytest.mark.slow
@pytest.mark.parametrize("reader", sorted(READERS))
def test_fuzz_slow(reader: str, fuzz_dir: Path) -> None:
    _run(reader, SLOW, fuzz_dir)


def _write(folder: Path, doc: Any) -> Path:
    path = folder / "ann.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("mutation,pattern", [
    (lambda d: d["images"][0].__setitem__("file_name", 5), r"ann.json: image 1: field 'file_name': expected a file name"),
    (lambda d: d["annotations"][0].__setitem__("category_id", "x"), r"annotation 100: field 'category_id': expected an integer"),
    (lambda d: d["annotations"][0].__setitem__("bbox", [[1, 2], 3, 4, 5]), r"annotation 100: field 'bbox': expected numbers"),
    (lambda d: d["categories"][0].__setitem__("keypoints", list(range(17))), r"category 1: field 'keypoints': expected a list of keypoint names"),
    (lambda d: d["annotations"][1].__setitem__("keypoints", [1.0] * 48), r"annotation 101: field 'keypoints': expected 51 numbers .*coco17.*got 48"),
    (lambda d: d["images"][0].__setitem__("file_name", "../../x.jpg"), r"image 1: field 'file_name': '../../x.jpg' is outside the image root"),
    (lambda d: d["images"][1].__setitem__("file_name", "/etc/hostname"), r"image 2: field 'file_name': absolute path '/etc/hostname' refused"),
    (lambda d: d["annotations"][0].__setitem__("area", 10**400), r"annotation 100: field 'area': number out of range"),
    (lambda d: d["annotations"][0].__setitem__("id", [1]), r"annotation \[1\]: field 'id': expected an integer id"),
])
def test_reported_cases_are_one_line_errors(tmp_path: Path, mutation: Callable[[Any], None], pattern: str) -> None:
    """The cases of issue 30: each one a DataError naming file, record and field, never a traceback or a silent switch."""
    doc = _builtin_coco(COCO17)
    mutation(doc)
    with pytest.raises(DataError, match=pattern) as info:
        read_coco(_write(tmp_path, doc))
    assert len(str(info.value).splitlines()) == 1


def test_48_numbers_everywhere_is_not_read_as_mpii(tmp_path: Path) -> None:
    """All annotations of 16 keypoints under a 17-name category: an error unless the set is explicit."""
    doc = _builtin_coco(COCO17)
    for ann in doc["annotations"]:
        ann["keypoints"] = ann["keypoints"][:48]
    path = _write(tmp_path, doc)
    with pytest.raises(DataError, match=r"annotation 100: field 'keypoints': expected 51 numbers"):
        read_coco(path)
    assert read_coco(path, keypoint_set="mpii16").keypoint_set.name == "mpii16"  # explicit: the caller decides


def test_absolute_file_names_need_the_option(tmp_path: Path) -> None:
    root = tmp_path / "images"
    root.mkdir()
    doc = _builtin_coco(COCO17)
    doc["images"][0]["file_name"] = str(root / "sub" / "a.jpg")
    doc["images"][1]["file_name"] = "sub/../b.jpg"  # normalizes to a path inside the root: fine
    path = _write(tmp_path, doc)
    with pytest.raises(DataError, match="absolute path"):
        read_coco(path, root)
    data = read_coco(path, root, allow_absolute_paths=True)
    assert data.images[1].path == str(root / "sub" / "a.jpg")
    doc["images"][0]["file_name"] = str(tmp_path / "elsewhere.jpg")  # absolute, but outside the explicit root
    with pytest.raises(DataError, match="outside the image root"):
        read_coco(_write(tmp_path, doc), root, allow_absolute_paths=True)
    assert read_coco(_write(tmp_path, doc), allow_absolute_paths=True).images[1].path == str(tmp_path / "elsewhere.jpg")


def test_mpii_image_names_stay_inside_the_root(tmp_path: Path) -> None:
    doc = _builtin_mpii()
    doc[1]["image"] = "../../etc/passwd"
    path = _write(tmp_path, doc)
    with pytest.raises(DataError, match=r"ann.json: entry 1: field 'image': '../../etc/passwd' is outside the image root"):
        read_mpii(path)
    doc[1]["image"] = "/etc/hostname"
    with pytest.raises(DataError, match=r"entry 1: field 'image': absolute path"):
        read_mpii(_write(tmp_path, doc))


def census_of(targets: dict[str, Callable[[random.Random, Path], None]], cases: int, seed: int = 0,
              names: list[str] | None = None) -> dict[str, Counter]:
    """Failures by kind (exception type and raising line) per target of ``targets`` (each called with a seeded
    generator and a scratch folder, which is also the working folder), over ``cases`` seeded inputs."""
    out: dict[str, Counter] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cwd = os.getcwd()
        os.chdir(folder)
        try:
            for target in names or targets:
                kinds: Counter = Counter()
                for n in range(cases):
                    try:
                        targets[target](random.Random(f"{seed}-{target}-{n}"), folder)
                    except Exception as e:  # noqa: BLE001 - counting every kind of failure is the point
                        frame = traceback.extract_tb(e.__traceback__)[-1]
                        where = f"{Path(frame.filename).name}:{frame.lineno}"
                        text = str(e).splitlines()[0][:90] if str(e) else ""
                        kinds[f"{type(e).__name__} at {where} {text}".strip()] += 1
                out[target] = kinds
        finally:
            os.chdir(cwd)
    return out


def print_census(counts: dict[str, Counter], cases: int) -> None:
    """The census as the fuzz scripts print it: per target its failures by kind, then the total."""
    total_failures = 0
    for name, kinds in counts.items():
        failures = sum(kinds.values())
        total_failures += failures
        print(f"{name}: {cases} cases, {failures} failures, {len(kinds)} kinds")
        for kind, count in kinds.most_common():
            print(f"    {count:5d}  {kind}")
    print(f"total: {total_failures} failures", flush=True)


def census(cases: int, seed: int = 0) -> dict[str, Counter]:
    """Failures by kind (exception type and raising line) per reader, over ``cases`` seeded mutations."""
    out: dict[str, Counter] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "images").mkdir()
        for reader in READERS:
            kinds: Counter = Counter()
            for n in range(cases):
                try:
                    check_one(reader, random.Random(f"{seed}-{reader}-{n}"), folder)
                except Exception as e:  # noqa: BLE001 - counting every kind of failure is the point
                    frame = traceback.extract_tb(e.__traceback__)[-1]
                    where = f"{Path(frame.filename).name}:{frame.lineno}"
                    text = str(e).splitlines()[0][:70] if isinstance(e, AssertionError) else ""
                    kinds[f"{type(e).__name__} at {where} {text}".strip()] += 1
            out[reader] = kinds
    return out


if __name__ == "__main__":
    n_cases = int(sys.argv[1]) if len(sys.argv) > 1 else SLOW
    print_census(census(n_cases), n_cases)
