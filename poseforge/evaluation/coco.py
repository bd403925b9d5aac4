"""COCO keypoint evaluation: OKS AP/AR for any keypoint set, COCO-WholeBody parts, CrowdPose.

The numbers follow xtcocotools (what mmpose reports), computed by a maintained fast backend
(faster-coco-eval by default; pycocotools and xtcocotools can be selected). Where pycocotools and
xtcocotools disagree, poseforge follows xtcocotools:

- a ground-truth instance with no labeled keypoint is ignored (xtcocotools counts them; pycocotools
  trusts the ``num_keypoints`` field, which only CrowdPose evaluation uses);
- a result whose keypoint scores are all zero is not scored (pycocotools scores it);
- without ``area`` (or with ``use_area=False``) the object scale is 0.53 x the box area.

COCO-WholeBody results get per-part stats (body, foot, face, hands, whole body), each part scored
with its own slice of the sigmas, as mmpose's ``CocoWholeBodyMetric``. Ground truth with CrowdPose
``crowdIndex`` values also gets AP(E)/AP(M)/AP(H) over the easy (< 0.2), medium and hard (>= 0.8)
images, as xtcocotools' ``keypoints_crowd`` mode computes them (rounded to 4 decimals).
"""
from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..data.coco import WHOLEBODY_FIELDS, CocoKeypoints, read_coco
from ..errors import PoseforgeError, data_error
from ..io import read_json, write_json_atomic
from ..keypoints import KeypointSet, get_keypoint_set
from .postprocess import keypoint_extent_areas, oks_nms_indices, rescore

__all__ = ["STAT_NAMES", "CROWD_STAT_NAMES", "BACKENDS", "evaluate_keypoints", "coco_metric", "format_table"]

log = logging.getLogger("poseforge")

STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
CROWD_STAT_NAMES = ("AP(E)", "AP(M)", "AP(H)")
BACKENDS = ("faster", "pycocotools", "xtcocotools")
# (ap, IoU threshold, area range) of each stat, in STAT_NAMES order (COCO's summarize()).
_STAT_SPECS = ((1, None, "all"), (1, 0.5, "all"), (1, 0.75, "all"), (1, None, "medium"), (1, None, "large"),
               (0, None, "all"), (0, 0.5, "all"), (0, 0.75, "all"), (0, None, "medium"), (0, None, "large"))
_CROWD_SPLIT = (0.2, 0.8)  # crowdIndex thresholds of CrowdPose's easy / medium / hard images
_OBJECT_AREA_FACTOR = 0.53  # the scale of a box without a segmentation area (xtcocotools)


# ----------------------------------------------------------------------------- ground truth
@dataclass
class _GroundTruth:
    source: str
    keypoint_set: KeypointSet
    images: list[dict[str, Any]]  # id, width, height
    categories: list[dict[str, Any]]
    crowd_index: dict[Any, float]  # image id -> crowdIndex (CrowdPose)
    ann_ids: list[Any]
    image_ids: list[Any]
    category_ids: list[int]
    bboxes: np.ndarray  # [N, 4]
    keypoints: np.ndarray  # [N, K, 3]
    areas: np.ndarray  # [N]
    iscrowd: np.ndarray  # [N] bool
    num_keypoints_field: np.ndarray  # [N] the file's num_keypoints, -1 where absent
    has_area: bool  # every annotation carries an 'area'


def _load_ground_truth(gt: "str | os.PathLike | CocoKeypoints | Mapping[str, Any]", keypoint_set) -> _GroundTruth:
    raw: Mapping[str, Any] | None = None
    if isinstance(gt, CocoKeypoints):
        data = gt
        if keypoint_set is not None and get_keypoint_set(keypoint_set).name != data.keypoint_set.name:
            raise PoseforgeError(f"{data.source}: ground truth is {data.keypoint_set.name}, not {get_keypoint_set(keypoint_set).name}")
    elif isinstance(gt, Mapping):
        raw = gt
        data = _read_coco_dict(gt, keypoint_set)
    elif isinstance(gt, (str, os.PathLike)):
        raw = read_json(gt)
        data = read_coco(gt, keypoint_set=keypoint_set)
    else:
        raise PoseforgeError(f"ground truth must be a COCO file path, a COCO dict or CocoKeypoints, got {type(gt).__name__}")

    raw_anns = {a.get("id"): a for a in raw.get("annotations", [])} if raw is not None else {}
    instances = data.instances
    num_k = data.keypoint_set.num_keypoints
    if instances:
        keypoints = np.stack([np.concatenate([i.keypoints, i.visibility[:, None]], axis=1) for i in instances])
        bboxes = np.stack([i.bbox for i in instances]).astype(np.float64)
    else:
        keypoints, bboxes = np.zeros((0, num_k, 3)), np.zeros((0, 4))
    # parsed records always carry an area (read_coco fills the box area); the raw file tells, or read_coco's
    # note of it in the records (ground truth given as records: a model's evaluation set)
    if raw is None:
        has_area = not any(i.extras.get("no_area", False) for i in instances)
        num_field = np.asarray([_count_or_missing(i.extras.get("num_keypoints")) for i in instances], dtype=np.int64)
    else:
        has_area = all("area" in raw_anns.get(i.instance_id, {}) for i in instances)
        num_field = np.asarray([_count_or_missing(raw_anns.get(i.instance_id, {}).get("num_keypoints")) for i in instances],
                               dtype=np.int64)
    crowd_index = {image_id: info.extras["crowdIndex"] for image_id, info in data.images.items() if "crowdIndex" in info.extras}
    categories = [c for c in data.categories if isinstance(c, dict) and "id" in c]
    if not categories:  # keep every annotated category scorable when the file lists none
        categories = [{"id": c, "name": str(c)} for c in sorted({i.category_id for i in instances})]
    return _GroundTruth(
        source=data.source,
        keypoint_set=data.keypoint_set,
        images=[{"id": i.id, "width": i.width, "height": i.height} for i in data.images.values()],
        categories=categories,
        crowd_index=crowd_index,
        ann_ids=[i.instance_id for i in instances],
        image_ids=[i.image_id for i in instances],
        category_ids=[i.category_id for i in instances],
        bboxes=bboxes,
        keypoints=keypoints.astype(np.float64),
        areas=np.asarray([i.area for i in instances], dtype=np.float64),
        iscrowd=np.asarray([i.iscrowd for i in instances], dtype=bool),
        num_keypoints_field=num_field,
        has_area=has_area,
    )


def _count_or_missing(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else -1


def _read_coco_dict(doc: Mapping[str, Any], keypoint_set) -> CocoKeypoints:
    """Validate an in-memory COCO dict with the file reader (through a temporary file)."""
    label = "<ground-truth dict>"
    with tempfile.TemporaryDirectory(prefix="poseforge-eval-") as folder:
        path = Path(folder) / "ground_truth.json"
        try:
            write_json_atomic(path, dict(doc))
        except (TypeError, ValueError) as e:
            raise PoseforgeError(f"{label}: not JSON-serializable ({e})") from None
        try:
            data = read_coco(path, keypoint_set=keypoint_set)
        except PoseforgeError as e:
            raise type(e)(str(e).replace(str(path), label)) from None
    data.source = label
    return data


# ----------------------------------------------------------------------------- results
@dataclass
class _Results:
    source: str
    image_ids: list[Any]
    category_ids: list[int]
    keypoints: np.ndarray  # [M, K, 3] (x, y, keypoint score)
    scores: np.ndarray  # [M]
    box_scores: np.ndarray  # [M] bbox_score, else score
    nms_areas: np.ndarray  # [M] the 'area' field, else the area spanned by all keypoints
    boxes: np.ndarray  # [M, 4] what COCO's loadRes takes as the result's box (its area ranks it)

    def __len__(self) -> int:
        return len(self.image_ids)

    def subset(self, index: np.ndarray) -> "_Results":
        take = index.tolist()
        return _Results(self.source, [self.image_ids[i] for i in take], [self.category_ids[i] for i in take],
                        self.keypoints[index], self.scores[index], self.box_scores[index], self.nms_areas[index],
                        self.boxes[index])


def _finite_number(value: Any, file: str, record: str, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise data_error(file, record, name, f"expected a number, got {type(value).__name__} {value!r:.40}")
    try:
        number = float(value)
    except OverflowError:
        raise data_error(file, record, name, f"number out of range ({str(value)[:20]}...)") from None
    if not math.isfinite(number):
        raise data_error(file, record, name, f"non-finite value {value}")
    return number


def _number_rows(rows: list, width: int, file: str, records: list[str], name: str, what: str) -> np.ndarray:
    """Validate equal-length number lists (one per record) and stack them: [len(rows), width]."""
    for row, record in zip(rows, records):
        if not isinstance(row, (list, tuple)):
            raise data_error(file, record, name, f"expected a list of {width} numbers, got {type(row).__name__}")
        if len(row) != width:
            raise data_error(file, record, name, f"expected {width} numbers ({what}), got {len(row)}")
        for value in row:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise data_error(file, record, name, f"expected numbers, found {value!r:.40}")
    try:
        array = np.asarray(rows, dtype=np.float64) if rows else np.zeros((0, width))
    except OverflowError:
        for row, record in zip(rows, records):
            for c, value in enumerate(row):
                if isinstance(value, int) and not -2**1023 < value < 2**1024:
                    raise data_error(file, record, name, f"number out of range at position {c}") from None
        raise data_error(file, None, name, "number out of range") from None
    finite = np.isfinite(array)
    if not finite.all():
        r, c = np.argwhere(~finite)[0]
        raise data_error(file, records[r], name, f"non-finite value {array[r, c]} at position {c}")
    return array


def _read_results_json(path: "str | os.PathLike") -> Any:
    """``read_json``, with a document nested too deeply for the JSON parser as a one-line error too."""
    try:
        return read_json(path)
    except RecursionError:
        raise data_error(path, None, None, "not valid JSON (nested too deeply)") from None


def _load_results(results: "str | os.PathLike | Sequence[Mapping[str, Any]]", gt: _GroundTruth) -> _Results:
    if isinstance(results, (str, os.PathLike)):
        source = str(results)
        records = _read_results_json(results)
    else:
        source = "<results>"
        records = results
    if isinstance(records, (Mapping, str, bytes)) or not isinstance(records, Sequence):
        raise data_error(source, None, None, f"expected a list of COCO keypoint results, got {type(records).__name__}")
    ks = gt.keypoint_set
    num_k = ks.num_keypoints
    image_set = {img["id"] for img in gt.images}
    labels: list[str] = []
    image_ids: list[Any] = []
    category_ids: list[int] = []
    flat: list[Any] = []
    split = np.zeros(len(records), dtype=bool)
    for n, r in enumerate(records):
        label = f"result {n}"
        if not isinstance(r, Mapping):
            raise data_error(source, label, None, f"expected an object, got {type(r).__name__}")
        for key in ("image_id", "category_id", "score"):
            if key not in r:
                raise data_error(source, label, key, "missing")
        image_id = r["image_id"]
        if isinstance(image_id, (list, dict)) or image_id not in image_set:
            raise data_error(source, label, "image_id", f"unknown image id {image_id!r:.40} (not in {gt.source})")
        label = f"result {n} (image {image_id})"
        category = r["category_id"]
        if isinstance(category, bool) or not isinstance(category, int):
            raise data_error(source, label, "category_id", f"expected an integer, got {category!r:.40}")
        labels.append(label)
        image_ids.append(image_id)
        category_ids.append(category)
        if num_k == 133 and "foot_kpts" in r:  # COCO-WholeBody's split fields, as mmpose writes them
            split[n] = True
            parts = []
            for name, count in WHOLEBODY_FIELDS:
                if name not in r:
                    raise data_error(source, label, name, "missing (the record uses COCO-WholeBody's split fields)")
                parts.append(_number_rows([r[name]], 3 * count, source, [label], name, f"{count} keypoints x 3")[0])
            flat.append(np.concatenate(parts).tolist())
        elif "keypoints" not in r:
            raise data_error(source, label, "keypoints", "missing")
        else:
            flat.append(r["keypoints"])
    keypoints = _number_rows(flat, 3 * num_k, source, labels, "keypoints", f"{num_k} keypoints x 3 for {ks.name}").reshape(-1, num_k, 3)
    scores = np.asarray([_finite_number(r["score"], source, lab, "score") for r, lab in zip(records, labels)], dtype=np.float64)
    box_scores = np.asarray([_finite_number(r.get("bbox_score", r["score"]), source, lab, "bbox_score")
                             for r, lab in zip(records, labels)], dtype=np.float64)
    nms_areas = keypoint_extent_areas(keypoints)
    for n, r in enumerate(records):
        if "area" in r:
            nms_areas[n] = _finite_number(r["area"], source, labels[n], "area")
    # COCO's loadRes takes the box from the first record's kind: every 'bbox' if the first has one,
    # else the span of the 'keypoints' field as written (only the body for split whole-body records).
    if records and isinstance(records[0].get("bbox"), (list, tuple)) and len(records[0]["bbox"]) > 0:
        missing = next((lab for r, lab in zip(records, labels) if "bbox" not in r), None)
        if missing is not None:
            raise data_error(source, missing, "bbox", "missing (the first result has a bbox, so every result needs one)")
        boxes = _number_rows([r["bbox"] for r in records], 4, source, labels, "bbox", "x, y, width, height")
    else:
        xy = keypoints[..., :2]
        low, high = xy.min(axis=1), xy.max(axis=1)
        if split.any():
            body = xy[:, : WHOLEBODY_FIELDS[0][1]]
            low = np.where(split[:, None], body.min(axis=1), low)
            high = np.where(split[:, None], body.max(axis=1), high)
        boxes = np.concatenate([low, high - low], axis=1)
    return _Results(source, image_ids, category_ids, keypoints, scores, box_scores, nms_areas, boxes)


# ----------------------------------------------------------------------------- backends
def _quiet():
    """Silence the reference evaluators, which print progress to stdout."""
    return contextlib.redirect_stdout(io.StringIO())


def _import_xtcocotools():
    """xtcocotools' (COCO, COCOeval) for keypoint evaluation.

    Its PyPI wheels ship a mask extension compiled against numpy 1.x, which numpy 2 refuses to load
    ("numpy.dtype size changed"). OKS evaluation never calls the mask functions (only box and
    segmentation IoU do), so the pure-Python evaluator is imported with a stand-in mask module that
    says what to do if anything ever calls it.
    """
    import importlib
    import sys
    import types
    try:
        from xtcocotools.coco import COCO
        from xtcocotools.cocoeval import COCOeval
        return COCO, COCOeval
    except ValueError as e:
        if "dtype size changed" not in str(e) and "binary incompatib" not in str(e):
            raise
    for name in ("xtcocotools.coco", "xtcocotools.cocoeval", "xtcocotools.mask", "xtcocotools._mask"):
        sys.modules.pop(name, None)
    stand_in = types.ModuleType("xtcocotools.mask")

    def _unavailable(name: str):
        raise PoseforgeError(f"xtcocotools' mask extension (needed for '{name}', not for keypoint AP) does not load "
                             "with this numpy; rebuild it: pip install --no-binary xtcocotools --force-reinstall xtcocotools")

    stand_in.__getattr__ = _unavailable  # type: ignore[attr-defined]
    sys.modules["xtcocotools.mask"] = stand_in
    try:
        coco = importlib.import_module("xtcocotools.coco")
        cocoeval = importlib.import_module("xtcocotools.cocoeval")
    finally:
        if sys.modules.get("xtcocotools.mask") is stand_in:
            del sys.modules["xtcocotools.mask"]  # the two modules keep their reference; nothing else sees it
    return coco.COCO, cocoeval.COCOeval


def _import_backend(backend: str):
    try:
        if backend == "faster":
            from faster_coco_eval import COCO, COCOeval_faster as COCOeval
        elif backend == "pycocotools":
            from pycocotools.coco import COCO
            from pycocotools.cocoeval import COCOeval
        elif backend == "xtcocotools":
            COCO, COCOeval = _import_xtcocotools()
        else:
            raise PoseforgeError(f"unknown evaluation backend '{backend}'; expected one of {', '.join(BACKENDS)}")
    except (ImportError, ValueError) as e:  # ValueError: a binary built against another numpy
        package = {"faster": "faster-coco-eval"}.get(backend, backend)
        if "dtype size changed" in str(e) or "binary incompatib" in str(e):
            # the wheel was compiled against a different numpy ABI than the one installed
            fix = f"rebuild it against this numpy: pip install --no-binary {package} --force-reinstall {package}"
        else:
            fix = f"pip install {package}"
        hint = "" if backend == "faster" else "; or use the default --backend faster (faster-coco-eval)"
        raise PoseforgeError(f"evaluation backend '{backend}' is not usable here ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                             f"{fix}{hint}") from None
    return COCO, COCOeval


def _make_coco(COCO, backend: str, dataset: dict[str, Any]):
    if backend == "faster":
        return COCO(dataset, print_function=lambda *a, **k: None)
    coco = COCO()
    coco.dataset = dataset
    with _quiet():
        coco.createIndex()
    return coco


def _run_backend(backend: str, gt_dataset: dict, dt_anns: list[dict], sigmas: np.ndarray, crowd: bool,
                 subsets: Sequence[Sequence[Any]] = ()) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[float]]:
    """Evaluate once; returns precision [T,R,K,A,M], recall [T,K,A,M], IoU thresholds, subset APs."""
    COCO, COCOeval = _import_backend(backend)
    gt = _make_coco(COCO, backend, gt_dataset)
    dt = _make_coco(COCO, backend, {"images": gt_dataset["images"], "categories": gt_dataset["categories"], "annotations": dt_anns})
    with _quiet():
        if backend == "faster":
            evaluator = COCOeval(gt, dt, "keypoints", kpt_oks_sigmas=sigmas, use_area=True, print_function=lambda *a, **k: None)
        elif backend == "xtcocotools":
            # keypoints_crowd: ignore ground truth by the file's num_keypoints, as CrowdPose does
            evaluator = COCOeval(gt, dt, "keypoints_crowd" if crowd else "keypoints", sigmas, True)
        else:
            evaluator = COCOeval(gt, dt, "keypoints")
            evaluator.params.kpt_oks_sigmas = sigmas
        evaluator.evaluate()
        evaluator.accumulate()
        precision = np.array(evaluator.eval["precision"])
        recall = np.array(evaluator.eval["recall"])
        iou_thrs = np.array(evaluator.params.iouThrs)
        area_labels = list(evaluator.params.areaRngLbl)
        if area_labels != ["all", "medium", "large"]:
            raise PoseforgeError(f"evaluation backend '{backend}' uses unexpected area ranges {area_labels}")
        subset_aps = []
        for image_ids in subsets:
            if not image_ids:  # nothing to score: every precision stays -1
                subset_aps.append(-1.0)
                continue
            evaluator.params.imgIds = list(image_ids)
            evaluator.evaluate()
            evaluator.accumulate()
            # xtcocotools' crowd AP: the plain mean over all (incl. -1) entries, rounded to 4 places
            subset_aps.append(float(round(np.mean(np.asarray(evaluator.eval["precision"])[:, :, :, 0, :]), 4)))
    return precision, recall, iou_thrs, subset_aps


def _summarize(precision: np.ndarray, recall: np.ndarray, iou_thrs: np.ndarray) -> dict[str, float]:
    areas = {"all": 0, "medium": 1, "large": 2}
    stats = {}
    for name, (ap, iou_thr, area) in zip(STAT_NAMES, _STAT_SPECS):
        s = precision[..., areas[area], -1] if ap else recall[..., areas[area], -1]
        if iou_thr is not None:
            s = s[np.where(iou_thr == iou_thrs)[0]]
        valid = s[s > -1]
        stats[name] = float(np.mean(valid)) if valid.size else -1.0
    return stats


# ----------------------------------------------------------------------------- evaluation
def _part_slices(ks: KeypointSet, parts) -> list[tuple[str, slice]]:
    """(output name, keypoint slice) of each part to score separately, e.g. ('lefthand', 91:112)."""
    if not ks.parts or parts is False:
        return []
    names = {p.replace("_", ""): p for p in ks.parts}
    if parts is None:
        wanted = list(names)
    else:
        wanted = [p.replace("_", "") for p in ([parts] if isinstance(parts, str) else parts)]
        unknown = [p for p in wanted if p not in names and p != "wholebody"]
        if unknown:
            raise PoseforgeError(f"keypoint set '{ks.name}' has no part {unknown[0]!r} (has: {', '.join(names)}, wholebody)")
    out = [(p, ks.part_slice(names[p])) for p in wanted if p in names]
    if out or "wholebody" in wanted:
        out.append(("wholebody", slice(0, ks.num_keypoints)))
    return out


def _evaluate_slice(gt: _GroundTruth, res: _Results, part: slice, sigmas: np.ndarray, backend: str,
                    use_area: bool, crowd: bool, subsets: Sequence[Sequence[Any]]) -> tuple[dict[str, float], list[float], int]:
    """Stats of one keypoint slice; also the crowd subset APs and how many results were not scored."""
    gt_kps = gt.keypoints[:, part]
    labeled = (gt_kps[..., 2] > 0).sum(axis=1)
    whole = part == slice(0, gt.keypoint_set.num_keypoints)
    num_keypoints = np.where(gt.num_keypoints_field >= 0, gt.num_keypoints_field, labeled) if crowd and whole else labeled
    if use_area:
        areas = gt.areas
    else:
        areas = gt.bboxes[:, 2] * gt.bboxes[:, 3] * _OBJECT_AREA_FACTOR
    annotations = [
        {"id": ann_id, "image_id": image_id, "category_id": cat, "bbox": box, "area": area, "iscrowd": int(crowd_flag),
         "keypoints": kps, "num_keypoints": int(n)}
        for ann_id, image_id, cat, box, area, crowd_flag, kps, n in zip(
            gt.ann_ids, gt.image_ids, gt.category_ids, gt.bboxes.tolist(), areas.tolist(), gt.iscrowd.tolist(),
            gt_kps.reshape(len(gt_kps), 3 * gt_kps.shape[1]).tolist(), num_keypoints.tolist())
    ]
    gt_dataset = {"images": gt.images, "categories": gt.categories, "annotations": annotations}

    dt_kps = res.keypoints[:, part]
    scored = (dt_kps[..., 2] > 0).any(axis=1)  # xtcocotools drops results without a positive score
    index = np.flatnonzero(scored)
    flat = dt_kps[index].reshape(len(index), 3 * dt_kps.shape[1]).tolist()
    boxes = res.boxes[index]
    dt_anns = [
        {"id": n + 1, "image_id": res.image_ids[i], "category_id": res.category_ids[i], "keypoints": kps,
         "score": float(res.scores[i]), "bbox": box, "area": area, "iscrowd": 0}
        for n, (i, kps, box, area) in enumerate(zip(index.tolist(), flat, boxes.tolist(), (boxes[:, 2] * boxes[:, 3]).tolist()))
    ]
    precision, recall, iou_thrs, subset_aps = _run_backend(backend, gt_dataset, dt_anns, sigmas, crowd, subsets)
    return _summarize(precision, recall, iou_thrs), subset_aps, int(len(res) - len(index))


def _evaluate_loaded(gt: _GroundTruth, res: _Results, *, sigmas, use_area: bool, backend: str, parts, crowdpose) -> dict[str, float]:
    ks = gt.keypoint_set
    if backend not in BACKENDS:
        raise PoseforgeError(f"unknown evaluation backend '{backend}'; expected one of {', '.join(BACKENDS)}")
    if sigmas is None:
        sig = ks.sigmas_array()
    else:
        sig = np.asarray(sigmas, dtype=np.float64).reshape(-1)
        if sig.shape[0] != ks.num_keypoints or not np.isfinite(sig).all() or (sig <= 0).any():
            raise PoseforgeError(f"sigmas: expected {ks.num_keypoints} positive numbers for {ks.name}, got {sig.shape[0]}")
    if use_area and not gt.has_area:
        log.info(f"{gt.source}: annotations without 'area'; object scale is {_OBJECT_AREA_FACTOR} x box area (use_area=False)")
        use_area = False
    crowd = bool(gt.crowd_index) if crowdpose is None else bool(crowdpose)
    subsets: list[list[Any]] = []
    if crowd:
        missing = next((img["id"] for img in gt.images if img["id"] not in gt.crowd_index), None)
        if missing is not None:
            raise data_error(gt.source, f"image {missing}", "crowdIndex", "missing (CrowdPose evaluation needs it on every image)")
        first, second = _CROWD_SPLIT
        values = [(img["id"], _finite_number(gt.crowd_index[img["id"]], gt.source, f"image {img['id']}", "crowdIndex"))
                  for img in gt.images]
        subsets = [[i for i, v in values if v < first], [i for i, v in values if first <= v < second],
                   [i for i, v in values if v >= second]]

    if len(res) == 0:
        log.warning(f"{res.source}: no results to evaluate; every AP is 0")
    stats, subset_aps, unscored = _evaluate_slice(gt, res, slice(0, ks.num_keypoints), sig, backend, use_area, crowd, subsets)
    if unscored:
        log.warning(f"{res.source}: {unscored} of {len(res)} results have no keypoint scored above 0 and are not scored (as xtcocotools)")
    known_categories = {c["id"] for c in gt.categories}
    stray = sum(c not in known_categories for c in res.category_ids)
    if stray:
        log.warning(f"{res.source}: {stray} results have a category id absent from {gt.source}; they are not scored")
    if not (gt.keypoints[..., 2] > 0).any(axis=1)[~gt.iscrowd].any():
        log.warning(f"{gt.source}: no ground-truth instance with labeled keypoints; stats are -1")
    if crowd:
        stats.update(zip(CROWD_STAT_NAMES, subset_aps))
    for name, part in _part_slices(ks, parts):
        part_stats = stats if name == "wholebody" else _evaluate_slice(gt, res, part, sig[part], backend, use_area, False, ())[0]
        stats.update({f"{name}/{key}": value for key, value in part_stats.items() if key in STAT_NAMES})
    return stats


def evaluate_keypoints(
    gt: "str | os.PathLike | CocoKeypoints | Mapping[str, Any]",
    results: "str | os.PathLike | Sequence[Mapping[str, Any]]",
    keypoint_set: "str | KeypointSet | None" = None,
    *,
    sigmas: "Sequence[float] | np.ndarray | None" = None,
    use_area: bool = True,
    backend: str = "faster",
    parts: "Sequence[str] | bool | None" = None,
    crowdpose: bool | None = None,
) -> dict[str, float]:
    """COCO OKS keypoint AP/AR of ``results`` against ``gt`` (xtcocotools numbers, see the module doc).

    Args:
        gt: a COCO keypoint file, its parsed :class:`CocoKeypoints` or the COCO dict.
        results: a COCO results file or list of records (``image_id``, ``category_id``,
            ``keypoints`` flat K*3 with keypoint scores, ``score``; optional ``bbox``).
            COCO-WholeBody records may also use the split ``foot_kpts`` ... fields.
        keypoint_set: the set's name; inferred from the ground truth when omitted.
        sigmas: OKS sigmas overriding the set's.
        use_area: scale by the annotation ``area`` (off, or absent from the file: 0.53 x box area).
        backend: ``"faster"`` (faster-coco-eval), ``"pycocotools"`` or ``"xtcocotools"``.
        parts: for sets with parts (wholebody133): None scores every part, a list names some,
            False none. Part stats are keyed ``"<part>/<stat>"`` (``"lefthand/AP"``).
        crowdpose: add AP(E)/AP(M)/AP(H); default: when the ground truth has ``crowdIndex``.

    Returns:
        ``AP, AP50, AP75, APm, APl, AR, AR50, AR75, ARm, ARl`` over all keypoints (-1 where
        nothing is scorable, as COCO), plus ``AP(E), AP(M), AP(H)`` and part stats when they apply.
    """
    ground_truth = _load_ground_truth(gt, keypoint_set)
    loaded = _load_results(results, ground_truth)
    return _evaluate_loaded(ground_truth, loaded, sigmas=sigmas, use_area=use_area, backend=backend, parts=parts, crowdpose=crowdpose)


def coco_metric(
    gt: "str | os.PathLike | CocoKeypoints | Mapping[str, Any]",
    results: "str | os.PathLike | Sequence[Mapping[str, Any]]",
    keypoint_set: "str | KeypointSet | None" = None,
    *,
    score_mode: str = "bbox_keypoint",
    keypoint_score_thr: float = 0.2,
    nms_thr: float | None = 0.9,
    sigmas: "Sequence[float] | np.ndarray | None" = None,
    use_area: bool = True,
    backend: str = "faster",
    parts: "Sequence[str] | bool | None" = None,
    crowdpose: bool | None = None,
) -> dict[str, float]:
    """mmpose ``CocoMetric``: rescore the results, OKS-NMS them per image, then evaluate.

    A record's box score is its ``bbox_score`` (else its ``score``); its NMS area is its ``area``
    field (mmpose: the bbox scale product), else the area its keypoints span. ``nms_thr=None``
    skips NMS. The other arguments are those of :func:`evaluate_keypoints`.
    """
    ground_truth = _load_ground_truth(gt, keypoint_set)
    loaded = _load_results(results, ground_truth)
    sig = ground_truth.keypoint_set.sigmas_array() if sigmas is None else np.asarray(sigmas, dtype=np.float64)
    loaded.scores = rescore(loaded.box_scores, loaded.keypoints[..., 2], score_mode, keypoint_score_thr)
    if nms_thr is not None and len(loaded):
        groups: dict[Any, list[int]] = {}
        for i, image_id in enumerate(loaded.image_ids):
            groups.setdefault(image_id, []).append(i)
        kept = []
        for members in groups.values():
            index = np.asarray(members)
            keep = oks_nms_indices(loaded.keypoints[index], loaded.scores[index], loaded.nms_areas[index], sig, nms_thr)
            kept.append(index[keep])
        loaded = loaded.subset(np.concatenate(kept))
    return _evaluate_loaded(ground_truth, loaded, sigmas=sigmas, use_area=use_area, backend=backend, parts=parts, crowdpose=crowdpose)


# ----------------------------------------------------------------------------- display
def format_table(stats: Mapping[str, float], title: str | None = None) -> str:
    """Render stats as a text table: one row per part (``"body/AP"`` ...), one column per stat."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    rows: dict[str, dict[str, float]] = {}
    for key, value in stats.items():
        group, _, name = key.rpartition("/")
        rows.setdefault(group or "all", {})[name] = value
    if "wholebody" in rows and rows.get("all", {}).keys() <= rows["wholebody"].keys() | set(CROWD_STAT_NAMES):
        extra = {k: v for k, v in rows.pop("all").items() if k not in rows["wholebody"]}
        if extra:
            rows["all"] = extra
    columns = [c for c in STAT_NAMES + CROWD_STAT_NAMES if any(c in r for r in rows.values())]
    columns += sorted({c for r in rows.values() for c in r} - set(columns))
    table = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False)
    if len(rows) > 1 or "all" not in rows:
        table.add_column("part")
    for c in columns:
        table.add_column(c, justify="right")
    for group, values in rows.items():
        cells = [f"{values[c]:.4f}" if c in values else "" for c in columns]
        table.add_row(*([group] if len(rows) > 1 or "all" not in rows else []), *cells)
    buffer = io.StringIO()
    # a wide console never wraps cells; the table itself only takes the room it needs
    Console(file=buffer, width=240, color_system=None, force_terminal=False).print(table)
    return buffer.getvalue().rstrip("\n")
