"""Associative-embedding grouping in numpy: heatmap peaks of every keypoint type grouped into people by their tags
(HigherHRNet / LitePose's ``match_by_tag``, mmpose's ``AssociativeEmbedding`` decode).

The rule of poseforge's torch codec ``associative-embedding`` (:mod:`poseforge.codecs.associative_embedding`),
which runs this module on CPU tensors (torch's per-operation overhead on small arrays is several times numpy's)
and keeps a torch version of the same steps for accelerators:

1. :func:`find_peaks` - ``nms_kernel`` x ``nms_kernel`` local maxima above the detection threshold, the best
   ``max_people`` of each keypoint type (only the cells above the threshold are tested);
2. :func:`match_tags` - joints in order, each joint's candidates assigned to the people so far by
   ``scipy.optimize.linear_sum_assignment`` on their tag distances;
3. quarter-pixel adjustment of grouped keypoints, and :func:`fill_missing` - each person's missing keypoints
   at the cell minimizing ``round(|tag - mean tag|) * 100 - heatmap`` (many missing keypoints: found exactly
   without scanning every cell for every keypoint, see :func:`_fill_bounded`).

:func:`group_associative_embedding` runs the whole rule on one image; :func:`grouping_options` turns an exported
model's codec settings into its keyword arguments; :func:`aggregate_half_scale` brings 1/4-scale maps to a
1/2-scale heatmap output and averages the heatmaps (HigherHRNet's multi-resolution rule) as the codec does.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..errors import PoseforgeError

__all__ = ["group_associative_embedding", "grouping_options", "check_grouping_options", "aggregate_half_scale",
           "group_image", "find_peaks", "match_tags", "fill_missing", "block_bounds", "tag_cost", "detection_cutoff",
           "max_pool3", "max_filter", "FILL_BLOCK_CELLS"]

BoundsFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]  # keypoint types -> block_bounds
FILL_BLOCK_CELLS = 32  # cells per block of the missing-keypoint search's bounds (a power of two)
_DENSE_BLOCK = 1 << 18  # elements of one [Q, L, HW] block of the exhaustive search (cache-sized)
_SCAN_MIN = 8  # fewer missing keypoints than this (+ the bounds' cost, see fill_missing) are scanned cell by cell
_DEFAULTS: dict[str, Any] = {"max_people": 30, "detection_threshold": 0.1, "tag_threshold": 1.0,
                             "joint_order": None, "nms_kernel": 5, "use_detection_val": True, "adjust": True,
                             "refine": True}  # the torch codec's defaults


# ----------------------------------------------------------------------------------------------- peaks
def max_pool3(maps: np.ndarray) -> np.ndarray:
    """3x3 max filter (stride 1, borders padded with -inf) of ``maps [..., H, W]``: the peak test of NMS."""
    return max_filter(maps, 3)


def max_filter(maps: np.ndarray, kernel: int) -> np.ndarray:
    """``kernel`` x ``kernel`` max filter (stride 1, borders padded with -inf) of ``maps [..., H, W]``: the peak
    test of NMS, equal to ``torch.nn.functional.max_pool2d(maps, kernel, 1, kernel // 2)``."""
    if isinstance(kernel, bool) or not isinstance(kernel, (int, np.integer)) or kernel < 1 or kernel % 2 == 0:
        raise PoseforgeError(f"nms_kernel must be a positive odd integer, got {kernel!r}")
    m = np.asarray(maps)
    r = int(kernel) // 2
    p = np.pad(m, [(0, 0)] * (m.ndim - 2) + [(r, r), (r, r)], constant_values=-np.inf)
    window = np.lib.stride_tricks.sliding_window_view
    return window(window(p, kernel, axis=-1).max(-1), kernel, axis=-2).max(-1)  # separable: rows, then columns


def detection_cutoff(threshold: float) -> np.float32:
    """The float32 ``t`` with ``(v > t) == (float64(v) > threshold)`` for every float32 ``v``: the candidate
    test of :func:`match_tags` (float64, as the references: a float32 0.1 passes ``> 0.1``) on float32 maps."""
    t = np.float32(threshold)
    if float(t) > threshold:
        t = np.nextafter(t, np.float32(-np.inf))
    return t


def find_peaks(heatmaps: np.ndarray, m: int, detection_threshold: float, nms_kernel: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """The references' NMS + ``topk(m)`` restricted to what is grouped: the ``m`` best ``nms_kernel`` x
    ``nms_kernel`` local maxima above ``detection_threshold`` of each map of ``heatmaps [K, H, W]`` (float32).

    Returns values ``[K, m]`` (float32) and flat cells ``[K, m]`` (int64), best first, equal values by cell;
    a map with fewer peaks pads with zeros at cell 0. Only cells above the threshold are tested: against their
    left / right, then upper / lower neighbours (a peak is at least each), then against the whole window
    (neighbours off the map clamp to the nearest cell, which is in the window); dense maps take the full filter.
    """
    k, h, w = heatmaps.shape
    hw = h * w
    flat = heatmaps.reshape(-1)
    above = np.flatnonzero(flat > detection_cutoff(detection_threshold))
    r = nms_kernel // 2
    if r and above.size * nms_kernel ** 2 > flat.size:  # most cells pass: one filter over the maps is cheaper
        above = above[(max_filter(heatmaps, nms_kernel).reshape(-1) == flat)[above]]
    elif r and above.size:
        value = flat[above]
        x = above % w
        keep = (value >= flat[above - (x > 0)]) & (value >= flat[above + (x < w - 1)])
        above, value = above[keep], value[keep]
        y = above % hw // w
        keep = (value >= flat[above - (y > 0) * w]) & (value >= flat[above + (y < h - 1) * w])
        above, value = above[keep], value[keep]
        cell = above % hw
        offsets = np.arange(-r, r + 1)
        rows = np.clip(cell[:, None] // w + offsets, 0, h - 1) * w  # [C, S]
        cols = np.clip(cell[:, None] % w + offsets, 0, w - 1)
        window = (above - cell)[:, None, None] + rows[:, :, None] + cols[:, None, :]  # [C, S, S] flat cells
        above = above[flat[window.reshape(above.size, -1)].max(1) == value]
    value = flat[above]
    joint, cell = np.divmod(above, hw)
    order = np.lexsort((-value, joint))  # by map, best first; stable: equal values keep the cell order
    joint, cell, value = joint[order], cell[order], value[order]
    counts = np.bincount(joint, minlength=k)
    rank = np.arange(joint.size) - (np.cumsum(counts) - counts)[joint]
    sel = rank < m
    values = np.zeros((k, m), np.float32)
    index = np.zeros((k, m), np.int64)
    values[joint[sel], rank[sel]] = value[sel]
    index[joint[sel], rank[sel]] = cell[sel]
    return values, index


# ----------------------------------------------------------------------------------------------- matching
def _joint_order(joint_order: Sequence[int] | None, k: int) -> list[int]:
    if joint_order is None:
        return list(range(k))
    order = [int(j) for j in joint_order]
    if sorted(order) != list(range(k)):
        raise PoseforgeError(f"joint_order must be a permutation of range({k}) (one entry per keypoint), got {order}")
    return order


def match_tags(values: np.ndarray, tags: np.ndarray, *, detection_threshold: float = 0.1,
               tag_threshold: float = 1.0, joint_order: Sequence[int] | None = None,
               use_detection_val: bool = True) -> np.ndarray:
    """Group one image's keypoint candidates into people by their tags: the associative-embedding matching of
    HigherHRNet / LitePose (``match_by_tag``) and mmpose (``_group_keypoints_by_tags``).

    Joints are taken in ``joint_order``; a joint's candidates scoring above ``detection_threshold`` are
    assigned to the people found so far by a minimum-cost assignment (``scipy.optimize.linear_sum_assignment``)
    on the distance between the candidate's tag and each person's mean tag (with ``use_detection_val``:
    ``round(distance) * 100 - score``, so tag distance decides and the score breaks ties); an assigned pair
    closer than ``tag_threshold`` joins the person, every other candidate starts a new person. Exact ties of
    that cost go to the assignment with the smallest sum of ``min(distance, tag_threshold)`` (the references
    leave them to their solver). The sequence over joints is inherent (each joint sees the people its
    predecessors formed); each step is whole-array on a few small arrays.

    Args:
        values: ``[K, M]`` candidate scores of each joint, best first (NMS'd top-``M`` peaks).
        tags: ``[K, M, L]`` their tags.

    Returns:
        ``[P, K]`` int64: the candidate index (into ``M``) of each person's joints, -1 where a person has
        none; people in the order they were formed.
    """
    from scipy.optimize import linear_sum_assignment  # (imported on first use: it takes a while)

    vals = np.asarray(values, dtype=np.float64)  # float64 as the references: a float32 0.1 passes "> 0.1"
    tag = np.asarray(tags, dtype=np.float64)
    if vals.ndim != 2 or tag.ndim != 3 or tag.shape[:2] != vals.shape:
        raise PoseforgeError(f"match_tags: values [K, M] and tags [K, M, L] expected, got {list(vals.shape)} "
                             f"and {list(tag.shape)}")
    k, _, dims = tag.shape
    above = vals > detection_threshold  # [K, M]
    room = int(above.sum())  # at most one new person per candidate
    member = np.full((room, k), -1, dtype=np.int64)
    tag_sum = np.zeros((room, dims))
    count = np.zeros(room)
    people = 0
    for j in _joint_order(joint_order, k):
        cand = np.flatnonzero(above[j])
        c = cand.size
        if c == 0:
            continue
        t, v = tag[j, cand], vals[j, cand]
        if people:
            diff = t[:, None, :] - tag_sum[None, :people] / count[None, :people, None]  # [C, P, L]
            dist = np.sqrt(np.square(diff, out=diff).sum(-1))  # [C, P]
            cost = np.round(dist) * 100 - v[:, None] if use_detection_val else dist.copy()
            # Exact ties of that cost are common (rounded distances add up alike: tags 0 | 2, 4 | 2 cost
            # 2 + 2 either way) and the references break them by solver internals, which can leave a keypoint
            # out of the person whose tag it has. Among tied assignments the smallest sum of min(distance,
            # tag_threshold) wins (most joins, closest first): a term below half the resolution of the scores'
            # float32 sums, so it never outweighs a real cost difference.
            tie = 0.25 * float(np.spacing(np.float32(v.min()))) / (c * tag_threshold)
            cost += tie * np.minimum(dist, tag_threshold)
            if c > people:  # room for every candidate to start a person (the references pad with 1e10:
                # exactly c - people rows take these columns whatever they cost, so 0 keeps the precision)
                cost = np.concatenate([cost, np.zeros((c, c - people))], 1)
            if c == 1:  # one candidate: the assignment is its cheapest person (the first of equal ones)
                rows, cols = np.zeros(1, np.int64), cost[0].argmin(keepdims=True)
            else:
                rows, cols = linear_sum_assignment(cost)  # rows ascending, every row assigned
            join = cols < people
            join[join] = dist[rows[join], cols[join]] < tag_threshold
            joined, by = cols[join], rows[join]
            member[joined, j] = cand[by]
            tag_sum[joined] += t[by]
            count[joined] += 1
            fresh = rows[~join]
            n = fresh.size
            member[people:people + n, j] = cand[fresh]
            tag_sum[people:people + n] = t[fresh]
        else:
            n = c
            member[:n, j] = cand
            tag_sum[:n] = t
        count[people:people + n] = 1
        people += n
    return member[:people]


# ----------------------------------------------------------------------------------------------- filling
def tag_cost(tags: np.ndarray, centre: np.ndarray | float, heat: np.ndarray) -> np.ndarray:
    """``round(|tags - centre|) * 100 - heat`` of tags ``[..., L, n]`` and centres ``[..., L, 1]`` (float32,
    op for op as mmpose's numpy and the torch codec): distances summed over ``L`` in order, ``|x|`` for
    ``L = 1`` (``sqrt(x * x)`` is ``|x|`` exactly in binary floating point), halves rounded to even."""
    diff = tags - centre
    if diff.shape[-2] == 1:
        dist = np.abs(diff[..., 0, :])
    else:
        dist = np.square(diff[..., 0, :])
        for d in range(1, diff.shape[-2]):  # (tag dimensions, 1-4)
            dist += np.square(diff[..., d, :])
        np.sqrt(dist, out=dist)
    np.rint(dist, out=dist)
    dist *= 100
    dist -= heat
    return dist


def block_bounds(heat: np.ndarray, tags: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per block of ``FILL_BLOCK_CELLS`` cells (the last block may be shorter) of ``heat [R, HW]`` and ``tags
    [L, R, HW]``: the heat maximum ``[R, NB]`` and the tag minimum and maximum ``[L, R, NB]`` (what
    :func:`fill_missing` bounds costs with; NaN propagates)."""
    bs = FILL_BLOCK_CELLS
    nb, tail = divmod(heat.shape[-1], bs)

    def reduce(x: np.ndarray, op: np.ufunc) -> np.ndarray:
        parts = []
        if nb:
            v = x[..., :nb * bs].reshape(x.shape[:-1] + (nb, bs))
            while v.shape[-1] > 1:  # pairwise halves: numpy reduces short inner axes slowly
                half = v.shape[-1] // 2
                v = op(v[..., :half], v[..., half:])
            parts.append(v[..., 0])
        if tail:
            parts.append(op.reduce(x[..., nb * bs:], axis=-1)[..., None])
        return np.concatenate(parts, -1) if len(parts) > 1 else parts[0]

    return reduce(heat, np.maximum), reduce(tags, np.minimum), reduce(tags, np.maximum)


def _fill_dense(heat: np.ndarray, tags: np.ndarray, joint: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """:func:`fill_missing` by scanning every cell of each query's map (cache-sized blocks of queries)."""
    dims, _, hw = tags.shape
    best = np.empty(joint.size, dtype=np.int64)
    step = max(1, _DENSE_BLOCK // (dims * hw))
    for s in range(0, joint.size, step):  # blocks bound the memory, not a per-keypoint loop
        j = joint[s:s + step]
        cost = tag_cost(tags[:, j].transpose(1, 0, 2), centre[s:s + step, :, None], heat[j])
        best[s:s + step] = cost.argmin(1)  # the first minimal cell
    return best


def fill_missing(heat: np.ndarray, tags: np.ndarray, joint: np.ndarray, centre: np.ndarray,
                 bounds: BoundsFn | None = None) -> np.ndarray:
    """The first cell minimizing ``round(|tag - centre|) * 100 - heat`` (:func:`tag_cost`) for each missing
    keypoint ``q``: keypoint type ``joint[q]`` of ``heat [K, HW]`` / ``tags [L, K, HW]`` (float32), person mean
    tag ``centre[q] [L]`` (float32). Returns ``[Q]`` int64 flat cells.

    Few keypoints are scanned cell by cell (cache-sized blocks of keypoints); more take :func:`_fill_bounded`,
    which scans only the blocks of cells its bounds cannot rule out: worth it once the keypoints outnumber what
    the bounds cost (``bounds(types)``, when given, computes :func:`block_bounds` of those keypoint types' maps
    from all ``K`` maps with the torch codec's reductions, about one exhaustive scan per map; numpy's own for
    the types needed cost about 2.5). Both searches give the same cells (ties included).
    """
    if joint.size == 0:
        return np.zeros(0, dtype=np.int64)
    types, local = np.unique(joint, return_inverse=True)
    if joint.size < _SCAN_MIN + (heat.shape[0] if bounds is not None else 2.5 * types.size):
        return _fill_dense(heat, tags, joint, centre)
    hmax, tmin, tmax = bounds(types) if bounds is not None else block_bounds(heat[types], tags[:, types])
    return _fill_bounded(heat, tags, joint, centre, (hmax[local], tmin[:, local], tmax[:, local]))


def _fill_bounded(heat: np.ndarray, tags: np.ndarray, joint: np.ndarray, centre: np.ndarray,
                  bounds: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """:func:`fill_missing` without scanning every cell for every keypoint. The maps are cut into blocks of
    ``FILL_BLOCK_CELLS`` cells whose heat maximum and tag range per dimension (``bounds``: :func:`block_bounds`
    of each keypoint's map, ``[Q, NB]``, ``[L, Q, NB]``, ``[L, Q, NB]``) bound the cost of every cell of a block
    from below: ``round(distance from the centre to the tag ranges) * 100 - heat maximum`` (every float32 step of
    the cost is monotonic, so the bound holds for the rounded costs too). Each keypoint scans its blocks best
    bound first and stops where the next bound exceeds the least cost found: every block that may hold a minimal
    cell is scanned (ties included, so the first is the answer), typically a few percent of the map. Non-finite
    maps or centres take the exhaustive scan."""
    hw = tags.shape[2]
    q = joint.size
    q_hmax, q_tmin, q_tmax = bounds[0], bounds[1].transpose(1, 0, 2), bounds[2].transpose(1, 0, 2)  # [Q, (L,) NB]
    c = centre[:, :, None]
    with np.errstate(over="ignore", invalid="ignore"):  # (a sum overflowing to inf only costs the fast path)
        finite = np.isfinite(q_hmax.sum() + q_tmin.sum() + q_tmax.sum() + centre.sum())
    if not finite:
        return _fill_dense(heat, tags, joint, centre)
    gap = np.maximum(q_tmin - c, c - q_tmax)  # no tag of the block is closer to the centre
    np.maximum(gap, 0, out=gap)
    lower = tag_cost(gap, 0, q_hmax)  # [Q, NB]
    bs = FILL_BLOCK_CELLS
    offsets = np.arange(bs)

    def scan(query: np.ndarray, block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Least cost and its first cell in block ``block`` of keypoint ``query`` (index arrays ``[S]``)."""
        cells = np.minimum(block[:, None] * bs + offsets, hw - 1)  # the short last block repeats its last cell
        j = joint[query][:, None]
        cost = tag_cost(tags[:, j, cells].transpose(1, 0, 2), c[query], heat[j, cells])  # [S, bs]
        at = cost.argmin(1)
        return cost[np.arange(at.size), at], block * bs + at

    # best bound first: each keypoint scans its blocks in rounds (8, 16, 32 ... blocks) until its next bound
    # exceeds the least cost found (a round covers every keypoint still searching; typically 1-2 rounds)
    blocks = lower.shape[1]
    order = np.argsort(lower, axis=1)
    sorted_bounds = np.take_along_axis(lower, order, 1)
    best = np.full(q, np.inf, dtype=lower.dtype)
    best_cell = np.full(q, hw, dtype=np.int64)
    active = np.arange(q)
    start, size = 0, 8
    while active.size:
        block = order[active, start:start + size]  # [A, n]
        least, cell = scan(np.repeat(active, block.shape[1]), block.reshape(-1))
        least, cell = least.reshape(block.shape), cell.reshape(block.shape)
        low = least.min(1)
        first = np.where(least == low[:, None], cell, hw).min(1)
        old, old_cell = best[active], best_cell[active]
        better = (low < old) | ((low == old) & (first < old_cell))
        best[active], best_cell[active] = np.where(better, low, old), np.where(better, first, old_cell)
        start, size = start + size, size * 2
        if start >= blocks:
            break
        active = active[sorted_bounds[active, start] <= best[active]]
    return best_cell


# ----------------------------------------------------------------------------------------------- one image
def group_image(heat: np.ndarray, tags: np.ndarray, *, max_people: int, detection_threshold: float,
                tag_threshold: float, joint_order: Sequence[int] | None, nms_kernel: int, use_detection_val: bool,
                adjust: bool, refine: bool, bounds: BoundsFn | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`group_associative_embedding` on checked float32 maps: ``heat [K, H, W]`` (C-contiguous), ``tags
    [L, K, H * W]``; ``bounds(types)``, when given, computes :func:`block_bounds` of those keypoint types' maps
    (the torch codec's reductions are faster than numpy's)."""
    k, h, w = heat.shape
    hw = h * w
    m = min(max_people, hw)
    values, index = find_peaks(heat, m, detection_threshold, nms_kernel)
    cand_tag = tags[:, np.arange(k)[:, None], index].transpose(1, 2, 0)  # [K, M, L]
    member = match_tags(values, cand_tag, detection_threshold=detection_threshold, tag_threshold=tag_threshold,
                        joint_order=joint_order, use_detection_val=use_detection_val)[:max_people]
    found = member >= 0
    joint = np.broadcast_to(np.arange(k), member.shape)
    safe = np.where(found, member, 0)
    at = np.where(found, index[joint, safe], 0)  # flat map position; missing joints sit at (0, 0)
    scores = np.where(found, values[joint, safe], 0.0).astype(np.float64)
    person_scores = scores.mean(1)
    flat = heat.reshape(k, hw)
    xi, yi = at % w, at // w
    x, y = xi.astype(np.float64), yi.astype(np.float64)
    if adjust:  # mmpose refine_keypoints: x needs 1 < x < W-1 (and y > 0), y needs 1 < y < H-1 (and x > 0)
        # (neighbours off the map are the cell itself; those keypoints do not move anyway)
        right, left = flat[joint, at + (xi < w - 1)], flat[joint, at - (xi > 0)]
        below, above = flat[joint, at + (yi < h - 1) * w], flat[joint, at - (yi > 0) * w]
        x += np.where((xi > 1) & (xi < w - 1) & (yi > 0), 0.25 * np.sign(right - left), 0.0)
        y += np.where((yi > 1) & (yi < h - 1) & (xi > 0), 0.25 * np.sign(below - above), 0.0)
    person, missing = np.nonzero(~found) if refine else (np.zeros(0, np.int64),) * 2
    if person.size:
        # each person's mean tag over its grouped joints (float32, as the codec); missing joints go where it fits
        grouped = np.where(found[..., None], cand_tag[joint, safe], np.float32(0))  # [P, K, L]
        mean = grouped.sum(1) / found.sum(1, keepdims=True).astype(np.float32)  # [P, L]
        best = fill_missing(flat, tags, missing, mean[person], bounds)
        x[person, missing], y[person, missing] = best % w, best // w
        scores[person, missing] = flat[missing, best]
    order = np.argsort(-person_scores, kind="stable")
    return np.stack([x, y], -1)[order], scores[order], person_scores[order]


def _check_options(max_people: Any, detection_threshold: Any, tag_threshold: Any, nms_kernel: Any,
                   where: str = "") -> tuple[int, float, float, int]:
    """The numeric grouping settings, checked (one-line errors naming ``where`` + the setting)."""
    def fail(name: str, expected: str, value: Any) -> PoseforgeError:
        return PoseforgeError(f"{where}{name}: expected {expected}, got {value!r}"[:300])

    if isinstance(max_people, bool) or not isinstance(max_people, (int, np.integer)) or max_people < 1:
        raise fail("max_people", "a positive integer", max_people)
    numbers = []
    for name, value in (("detection_threshold", detection_threshold), ("tag_threshold", tag_threshold)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
                or not math.isfinite(float(value)):
            raise fail(name, "a finite number", value)
        numbers.append(float(value))
    if numbers[1] <= 0:
        raise fail("tag_threshold", "a positive number", tag_threshold)
    if isinstance(nms_kernel, bool) or not isinstance(nms_kernel, (int, np.integer)) or nms_kernel < 1 \
            or nms_kernel % 2 == 0:
        raise fail("nms_kernel", "a positive odd integer", nms_kernel)
    return int(max_people), numbers[0], numbers[1], int(nms_kernel)


def check_grouping_options(options: Mapping[str, Any]) -> None:
    """A one-line error (naming the setting) for bad ``max_people``, thresholds or ``nms_kernel`` among keyword
    arguments of :func:`group_associative_embedding` (absent ones take its defaults)."""
    _check_options(options.get("max_people", 30), options.get("detection_threshold", 0.1),
                   options.get("tag_threshold", 1.0), options.get("nms_kernel", 3))


def grouping_options(codec: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of :func:`group_associative_embedding` that decode like the torch codec whose
    ``config()`` is ``codec`` (an exported model's ``meta.codec``); ``{}`` for other codecs. Settings a config
    leaves out (or sets to null) take the codec's defaults; bad ones are a one-line error naming the field."""
    if codec.get("name") != "associative-embedding":
        return {}
    options = {key: default if codec.get(key) is None else codec[key] for key, default in _DEFAULTS.items()}
    _check_options(options["max_people"], options["detection_threshold"], options["tag_threshold"],
                   options["nms_kernel"], where="codec.")
    for key in ("use_detection_val", "adjust", "refine"):
        if not isinstance(options[key], (bool, np.bool_)):
            raise PoseforgeError(f"codec.{key}: expected true or false, got {options[key]!r}"[:300])
        options[key] = bool(options[key])
    order = options["joint_order"]
    if order is not None:
        if isinstance(order, (str, bytes)) or not isinstance(order, Sequence) or not all(
                isinstance(j, (int, np.integer)) and not isinstance(j, bool) for j in order) \
                or sorted(int(j) for j in order) != list(range(len(order))):
            raise PoseforgeError(f"codec.joint_order: expected a permutation of the keypoint indices, got "
                                 f"{order!r}"[:300])
        options["joint_order"] = [int(j) for j in order]
    return options


def group_associative_embedding(heatmaps: np.ndarray, tags: np.ndarray, *, max_people: int = 30,
                                detection_threshold: float = 0.1, tag_threshold: float = 1.0,
                                joint_order: Sequence[int] | None = None, nms_kernel: int = 3,
                                use_detection_val: bool = True, adjust: bool = False, refine: bool = False
                                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group one image's keypoint peaks into people by associative-embedding tags (numpy), by the rule of the
    torch codec ``associative-embedding`` (:mod:`poseforge.codecs.associative_embedding`, which runs this code on
    CPU tensors): pass :func:`grouping_options` of its config to decode exactly like it.

    Peaks are ``nms_kernel`` x ``nms_kernel`` local maxima; each joint keeps its ``max_people`` best peaks and
    :func:`match_tags` groups those above ``detection_threshold``; the first ``max_people`` people formed are
    kept. ``adjust`` moves each grouped keypoint a quarter pixel towards its higher neighbour per axis (mmpose's
    ``refine_keypoints``); ``refine`` fills each person's missing joints with the location minimizing
    ``round(|tag - person's mean tag|) * 100 - heatmap`` (no quarter shift), scored by the heatmap there
    (:func:`fill_missing`). Defaults are the plain rule (3x3 peaks, no adjust / refine).

    Args:
        heatmaps: ``[K, H, W]`` keypoint maps.
        tags: ``[L * K, H, W]`` tag maps, channel ``l * K + k`` (mmpose's layout; flip test concatenates L).

    Returns:
        keypoints ``[P, K, 2]`` (map pixels, float64), scores ``[P, K]`` (0 where a person lacks a joint and
        ``refine`` is off) and person scores ``[P]`` (mean grouped keypoint score), best person first.
    """
    max_people, detection_threshold, tag_threshold, nms_kernel = _check_options(
        max_people, detection_threshold, tag_threshold, nms_kernel)
    heat = np.ascontiguousarray(heatmaps, dtype=np.float32)
    if heat.ndim != 3:
        raise PoseforgeError(f"heatmaps must be [K, H, W], got {list(heat.shape)}")
    k, h, w = heat.shape
    tag = np.asarray(tags, dtype=np.float32)
    if tag.ndim != 3 or tag.shape[-2:] != (h, w) or k == 0 or tag.shape[0] % k or h * w == 0:
        raise PoseforgeError(f"tags {list(tag.shape)} do not fit heatmaps {list(heat.shape)} ([L * K, H, W])")
    order = None if joint_order is None else _joint_order(joint_order, k)
    return group_image(heat, tag.reshape(-1, k, h * w), max_people=max_people,
                       detection_threshold=detection_threshold, tag_threshold=tag_threshold, joint_order=order,
                       nms_kernel=nms_kernel, use_detection_val=bool(use_detection_val), adjust=bool(adjust),
                       refine=bool(refine))


# ----------------------------------------------------------------------------------------------- 1/2 scale
def _linear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of bilinear resizing along one axis with half-pixel centres (torch's
    ``align_corners=False``: source ``(i + 0.5) * n_in / n_out - 0.5``, clamped at 0, float32)."""
    scale = np.float32(n_in / n_out)
    src = np.maximum((np.arange(n_out, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5), 0)
    i0 = src.astype(np.int64)
    l1 = src - i0.astype(np.float32)
    return i0, np.minimum(i0 + 1, n_in - 1), np.float32(1) - l1, l1


def _resize_linear(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``maps [C, h, w]`` bilinearly resized to ``size`` (w, h) with half-pixel centres (float32; torch's
    ``F.interpolate(..., mode="bilinear", align_corners=False)`` up to rounding): columns, then rows."""
    i0, i1, l0, l1 = _linear_taps(maps.shape[-1], size[0])
    cols = maps[..., i0] * l0 + maps[..., i1] * l1
    j0, j1, m0, m1 = _linear_taps(maps.shape[-2], size[1])
    return cols[..., j0, :] * m0[:, None] + cols[..., j1, :] * m1[:, None]


def aggregate_half_scale(heatmaps: np.ndarray, tags: np.ndarray, heatmaps_hr: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray]:
    """HigherHRNet / LitePose's multi-resolution maps as the codec groups them: the 1/4-scale ``heatmaps [K, H,
    W]`` and ``tags [L * K, H, W]`` resized to the 1/2-scale ``heatmaps_hr [K, H2, W2]`` (bilinear, half-pixel
    centres) and the two heatmaps averaged. Returns float32 ``(heatmaps, tags)`` at the 1/2 scale."""
    heat = np.asarray(heatmaps, dtype=np.float32)
    hr = np.asarray(heatmaps_hr, dtype=np.float32)
    if heat.ndim != 3 or hr.ndim != 3 or hr.shape[0] != heat.shape[0] or min(hr.shape[1:]) == 0:
        raise PoseforgeError(f"heatmaps_hr {list(hr.shape)} do not fit heatmaps {list(heat.shape)} ([K, H2, W2])")
    size = (hr.shape[2], hr.shape[1])
    return (_resize_linear(heat, size) + hr) * np.float32(0.5), _resize_linear(np.asarray(tags, np.float32), size)
