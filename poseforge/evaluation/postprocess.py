"""Top-down result post-processing before COCO evaluation: instance rescoring and OKS-NMS.

Both follow mmpose's ``CocoMetric`` (``score_mode='bbox_keypoint'``, ``keypoint_score_thr=0.2``,
``nms_mode='oks_nms'``, ``nms_thr=0.9``), so that scoring the same predictions gives the same AP.
The array functions (:func:`rescore`, :func:`oks_matrix`, :func:`oks_nms_indices`) are the
vectorized core; :func:`rescore_results` and :func:`oks_nms` apply them to COCO result records.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import PoseforgeError
from ..keypoints import KeypointSet, get_keypoint_set, match_keypoint_set

__all__ = ["SCORE_MODES", "rescore", "rescore_results", "oks_matrix", "oks_nms_indices", "oks_nms", "keypoint_extent_areas"]

SCORE_MODES = ("bbox", "bbox_keypoint", "bbox_rle", "keypoint")


def rescore(box_scores: np.ndarray, keypoint_scores: np.ndarray, score_mode: str = "bbox_keypoint",
            keypoint_score_thr: float = 0.2) -> np.ndarray:
    """Instance scores [N] from box scores [N] and keypoint scores [N, K].

    Modes (mmpose ``CocoMetric``): ``bbox`` the box score; ``keypoint`` the mean keypoint score;
    ``bbox_keypoint`` the box score times the mean of the keypoint scores above
    ``keypoint_score_thr`` (0 when none is); ``bbox_rle`` box + mean + max keypoint score.
    """
    if score_mode not in SCORE_MODES:
        raise PoseforgeError(f"unknown score_mode '{score_mode}'; expected one of {', '.join(SCORE_MODES)}")
    box = np.asarray(box_scores, dtype=np.float64).reshape(-1)
    kpt = np.asarray(keypoint_scores, dtype=np.float64)
    if kpt.ndim != 2 or kpt.shape[0] != box.shape[0]:
        raise PoseforgeError(f"rescore: expected keypoint scores [N, K] for {box.shape[0]} boxes, got shape {kpt.shape}")
    if score_mode == "bbox":
        return box.copy()
    if kpt.shape[1] == 0:
        raise PoseforgeError(f"rescore: score_mode '{score_mode}' needs keypoint scores, got none")
    if score_mode in ("keypoint", "bbox_rle"):
        # mmpose computes these in the precision of the model outputs (float32): do the same for
        # scores that are float32 values, so that near-equal scores round (and rank) alike.
        work = np.float32 if _float32_exact(box) and _float32_exact(kpt) else np.float64
        k = kpt.astype(work)
        if score_mode == "keypoint":
            return k.mean(axis=1).astype(np.float64)
        return (box.astype(work) + k.mean(axis=1) + k.max(axis=1)).astype(np.float64)
    valid = kpt > keypoint_score_thr
    # cumsum adds left to right like mmpose's loop (a pairwise sum can differ in the last bit and
    # reorder equal-looking scores); adding the zeros of invalid keypoints changes nothing.
    total = np.cumsum(np.where(valid, kpt, 0.0), axis=1)[:, -1]
    count = valid.sum(axis=1)
    mean = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    return box * mean


def _float32_exact(values: np.ndarray) -> bool:
    return bool((values.astype(np.float32).astype(np.float64) == values).all())


def _keypoint_array(results: Sequence[Mapping[str, Any]], what: str) -> np.ndarray:
    """[N, K, 3] from the flat ``keypoints`` of result records (all with the same K)."""
    try:
        flat = np.asarray([r["keypoints"] for r in results], dtype=np.float64)
    except KeyError:
        raise PoseforgeError(f"{what}: every result needs a 'keypoints' field") from None
    except (TypeError, ValueError):
        raise PoseforgeError(f"{what}: result keypoints must be flat number lists of one length (K*3)") from None
    if flat.ndim != 2 or flat.shape[1] % 3:
        raise PoseforgeError(f"{what}: result keypoints must be flat lists of K*3 numbers, got shape {flat.shape}")
    return flat.reshape(len(results), -1, 3)


def _number_field(results: Sequence[Mapping[str, Any]], name: str, what: str, fallback: str | None = None) -> np.ndarray:
    try:
        values = [r[name] if (fallback is None or name in r) else r[fallback] for r in results]
        return np.asarray(values, dtype=np.float64).reshape(len(results))
    except KeyError:
        raise PoseforgeError(f"{what}: every result needs a '{name}'" + (f" or '{fallback}'" if fallback else "") + " field") from None
    except (TypeError, ValueError):
        raise PoseforgeError(f"{what}: field '{name}' must be a number in every result") from None


def rescore_results(results: Sequence[Mapping[str, Any]], score_mode: str = "bbox_keypoint",
                    keypoint_score_thr: float = 0.2) -> list[dict[str, Any]]:
    """Return copies of COCO result records with ``score`` recomputed by :func:`rescore`.

    The box score is ``bbox_score`` when a record has one, else its ``score``; it is kept in
    ``bbox_score`` so that rescoring twice gives the same result. Keypoint scores are the third
    number of each ``keypoints`` triple.
    """
    if not results:
        return []
    keypoints = _keypoint_array(results, "rescore_results")
    box = _number_field(results, "bbox_score", "rescore_results", fallback="score")
    scores = rescore(box, keypoints[..., 2], score_mode, keypoint_score_thr)
    return [{**r, "bbox_score": float(b), "score": float(s)} for r, b, s in zip(results, box.tolist(), scores.tolist())]


def keypoint_extent_areas(keypoints: np.ndarray) -> np.ndarray:
    """Area of the box spanned by all keypoints [N, K, >=2] -> [N] (COCO's area of a keypoint result)."""
    kps = np.asarray(keypoints, dtype=np.float64)
    if kps.shape[1] == 0:
        return np.zeros(kps.shape[0])
    span = kps[..., :2].max(axis=1) - kps[..., :2].min(axis=1)
    return span[:, 0] * span[:, 1]


def oks_matrix(keypoints: np.ndarray, areas: np.ndarray, sigmas: np.ndarray, vis_thr: float | None = None) -> np.ndarray:
    """Pairwise OKS [N, N] between instances [N, K, 3] (x, y, score), as mmpose's ``oks_iou``.

    The scale of a pair is the mean of the two areas. With ``vis_thr`` only keypoints scored above
    it in both instances count (a pair with none gets 0). Returned as float32, like mmpose, so
    that comparisons against the NMS threshold round the same way.
    """
    kps = np.asarray(keypoints, dtype=np.float64)
    areas = np.asarray(areas, dtype=np.float64).reshape(-1)
    variances = (np.asarray(sigmas, dtype=np.float64) * 2) ** 2
    if kps.ndim != 3 or kps.shape[2] < 2 or kps.shape[1] != variances.shape[0] or areas.shape[0] != kps.shape[0]:
        raise PoseforgeError(f"oks_matrix: got keypoints {kps.shape}, areas {areas.shape}, {variances.shape[0]} sigmas")
    dx = kps[None, :, :, 0] - kps[:, None, :, 0]  # [anchor, other, K]
    dy = kps[None, :, :, 1] - kps[:, None, :, 1]
    scale = (areas[:, None] + areas[None, :]) / 2 + np.spacing(1)
    e = (dx**2 + dy**2) / variances / scale[..., None] / 2
    similarity = np.exp(-e)
    if vis_thr is None:
        oks = similarity.sum(axis=-1) / kps.shape[1] if kps.shape[1] else np.zeros(scale.shape)
    else:
        visible = kps[..., 2] > vis_thr
        both = visible[:, None, :] & visible[None, :, :]
        count = both.sum(axis=-1)
        total = np.where(both, similarity, 0.0).sum(axis=-1)
        oks = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    return oks.astype(np.float32)


def oks_nms_indices(keypoints: np.ndarray, scores: np.ndarray, areas: np.ndarray, sigmas: np.ndarray,
                    thr: float = 0.9, vis_thr: float | None = None) -> np.ndarray:
    """Greedy OKS-NMS of one image's instances: indices kept, best first.

    An instance is dropped when its OKS with a kept, higher-scored one exceeds ``thr``. Equal
    scores keep mmpose's order (the later instance first). The OKS matrix is computed once; the
    loop runs once per kept instance, on whole rows.
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if scores.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    overlap = oks_matrix(keypoints, areas, sigmas, vis_thr)
    order = np.argsort(scores, kind="stable")[::-1]
    keep = []
    while order.size:
        best = order[0]
        keep.append(best)
        rest = order[1:]
        order = rest[overlap[best, rest] <= thr]
    return np.asarray(keep, dtype=np.int64)


def _sigmas_for(num_keypoints: int, sigmas: "Sequence[float] | np.ndarray | KeypointSet | str | None") -> np.ndarray:
    if sigmas is None:
        ks = match_keypoint_set(None, num_keypoints)
        if ks is None:
            raise PoseforgeError(f"oks_nms: {num_keypoints} keypoints match several keypoint sets; pass sigmas=")
        return ks.sigmas_array()
    if isinstance(sigmas, (str, KeypointSet)):
        return get_keypoint_set(sigmas).sigmas_array()
    array = np.asarray(sigmas, dtype=np.float64).reshape(-1)
    if array.shape[0] != num_keypoints:
        raise PoseforgeError(f"oks_nms: {array.shape[0]} sigmas for {num_keypoints} keypoints")
    return array


def oks_nms(results: Sequence[Mapping[str, Any]], thr: float = 0.9,
            sigmas: "Sequence[float] | np.ndarray | KeypointSet | str | None" = None,
            *, vis_thr: float | None = None) -> list[dict[str, Any]]:
    """OKS-NMS of COCO result records, per image; returns the kept records.

    Records are grouped by ``image_id`` (images in order of first appearance, each image's kept
    records best first). The area of a record is its ``area`` field when present (mmpose uses the
    bbox scale product), else the area spanned by its keypoints. ``sigmas`` may be an array, a
    keypoint set or its name; by default the set is inferred from the keypoint count.
    """
    if not results:
        return []
    keypoints = _keypoint_array(results, "oks_nms")
    sig = _sigmas_for(keypoints.shape[1], sigmas)
    scores = _number_field(results, "score", "oks_nms")
    areas = keypoint_extent_areas(keypoints)
    has_area = np.fromiter(("area" in r for r in results), dtype=bool, count=len(results))
    if has_area.any():
        areas[has_area] = [results[i]["area"] for i in np.flatnonzero(has_area)]
    groups: dict[Any, list[int]] = {}
    for i, r in enumerate(results):
        groups.setdefault(r["image_id"], []).append(i)
    kept: list[dict[str, Any]] = []
    for members in groups.values():
        index = np.asarray(members)
        keep = oks_nms_indices(keypoints[index], scores[index], areas[index], sig, thr, vis_thr)
        kept.extend(dict(results[i]) for i in index[keep])
    return kept
