"""Numpy decodes of raw pose-model outputs, equal to poseforge's torch codecs (:mod:`poseforge.codecs`).

Top-down (one person per crop, batched over people ``N`` and keypoints ``K``, no per-keypoint loops):

* :func:`decode_simcc` - SimCC: per-axis argmax / ``split_ratio``, score ``min(max x, max y)``, with the
  optional ``decode_window`` refinement (mean of ``softmax(beta * logits)`` around the argmax);
* :func:`decode_heatmaps` - ``"msra"`` (argmax + quarter-pixel shift), ``"dark"`` (one Newton step on the
  log of the Gaussian-blurred map) and ``"udp"`` (UDP's DARK variant, ``(w - 1) / (W - 1)`` scale);
* :func:`flip_back` - outputs of mirrored crops re-aligned with the originals (flip test).

Bottom-up: :func:`group_associative_embedding` groups heatmap peaks into people by their tags (numpy, from
:mod:`.grouping`, which the torch ``associative-embedding`` codec runs on CPU tensors too).

Coordinates are crop (model-input) pixels with pixel centres at integers; keypoints whose map maximum is
<= 0 come back at ``-1`` map pixels, scaled like the others (as the torch codecs).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import cv2
import numpy as np

from ..errors import PoseforgeError
from .grouping import (  # the bottom-up grouping's public names, importable from here too
    aggregate_half_scale,
    group_associative_embedding,
    grouping_options,
    match_tags,
    max_filter,
    max_pool3,
)

__all__ = ["decode_simcc", "decode_heatmaps", "decode_topdown", "heatmap_argmax", "refine_quarter_shift",
           "refine_dark", "refine_dark_udp", "gaussian_blur", "blur_kernel_size_for_sigma", "flip_back",
           "max_pool3", "max_filter", "match_tags", "grouping_options", "group_associative_embedding",
           "aggregate_half_scale", "HEATMAP_CODECS"]

HEATMAP_CODECS = ("msra", "dark", "udp")
_DARK_CLAMP = (1e-10, np.inf)  # mmpose: log(max(h, 1e-10))
_UDP_CLAMP = (1e-3, 50.0)  # mmpose: log(clip(h, 1e-3, 50))
_EPS32 = float(np.finfo(np.float32).eps)


# ----------------------------------------------------------------------------------------------- SimCC
def decode_simcc(simcc_x: np.ndarray, simcc_y: np.ndarray, split_ratio: float, *, decode_window: float = 0.0,
                 decode_beta: float = 10.0, sigma: float | Sequence[float] = 6.0) -> tuple[np.ndarray, np.ndarray]:
    """SimCC logits ``simcc_x [N, K, Wx]``, ``simcc_y [N, K, Hy]`` -> keypoints ``[N, K, 2]`` (crop pixels,
    float32) and scores ``[N, K]`` = ``min(max x, max y)``; keypoints scoring <= 0 are ``-1 / split_ratio``.

    ``decode_window`` > 0 refines each argmax to the mean bin of ``softmax(decode_beta * logits)`` within
    ``decode_window`` label ``sigma`` (bins; a number or ``(sigma_x, sigma_y)``) either side of it.
    """
    x = np.asarray(simcc_x, dtype=np.float32)
    y = np.asarray(simcc_y, dtype=np.float32)
    if x.ndim != 3 or y.ndim != 3 or x.shape[:2] != y.shape[:2]:
        raise PoseforgeError(f"SimCC outputs must be [N, K, Wx] and [N, K, Hy] with equal N, K; got {list(x.shape)} "
                             f"and {list(y.shape)}")
    n, k = x.shape[:2]
    if n * k == 0:
        return np.zeros((n, k, 2), np.float32), np.zeros((n, k), np.float32)
    loc_x, loc_y = x.argmax(-1), y.argmax(-1)
    max_x = np.take_along_axis(x, loc_x[..., None], -1)[..., 0]
    max_y = np.take_along_axis(y, loc_y[..., None], -1)[..., 0]
    scores = np.minimum(max_x, max_y)
    if decode_window > 0:
        sx, sy = (float(sigma), float(sigma)) if np.isscalar(sigma) else (float(sigma[0]), float(sigma[1]))
        locs = np.stack([_window_mean(x, loc_x, decode_window * sx, decode_beta),
                         _window_mean(y, loc_y, decode_window * sy, decode_beta)], -1)
    else:
        locs = np.stack([loc_x, loc_y], -1).astype(np.float64)
    locs = np.where((scores > 0)[..., None], locs, -1.0)
    return (locs / float(split_ratio)).astype(np.float32), scores


def _window_mean(logits: np.ndarray, peak: np.ndarray, half_width: float, beta: float) -> np.ndarray:
    """Mean bin of ``softmax(beta * logits)`` over ``peak +- ceil(half_width)`` (bins past the ends left out)."""
    # a window wider than the bins adds nothing (bins past the ends are left out): capping it bounds the memory
    radius = max(1, min(int(math.ceil(min(half_width, logits.shape[-1]))), logits.shape[-1]))
    bins = peak[..., None] + np.arange(-radius, radius + 1)
    inside = (bins >= 0) & (bins < logits.shape[-1])
    bins = np.clip(bins, 0, logits.shape[-1] - 1)
    window = np.where(inside, beta * np.take_along_axis(logits, bins, -1).astype(np.float64), -np.inf)
    weights = np.exp(window - window.max(-1, keepdims=True))  # the peak is always inside: max is finite
    return (weights * bins).sum(-1) / weights.sum(-1)


# ----------------------------------------------------------------------------------------------- heatmaps
def blur_kernel_size_for_sigma(sigma: float) -> int:
    """mmpose's DARK blur kernel for a target ``sigma``: 11 for 2, 17 for 3, 7 for 1.5."""
    size = int((float(sigma) * 20 - 7) // 3)
    size -= int(size % 2 == 0)
    return max(size, 1)


def gaussian_blur(maps: np.ndarray, kernel_size: int) -> np.ndarray:
    """``cv2.GaussianBlur(map, (k, k), 0)`` of every map of ``maps [N, H, W]`` with zero padding (mmpose's
    ``gaussian_blur`` without its rescale). The maps are stacked into one tall image with ``k // 2`` zero rows
    and columns around each, so a single OpenCV call blurs them all (cv2 takes at most 128 channels)."""
    m = np.asarray(maps, dtype=np.float32)
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise PoseforgeError(f"blur kernel size must be a positive odd integer, got {kernel_size}")
    n, h, w = m.shape
    r = (kernel_size - 1) // 2
    if n == 0 or r == 0:
        return m.copy()
    canvas = np.zeros((n, h + 2 * r, w + 2 * r), np.float32)
    canvas[:, r:r + h, r:r + w] = m
    out = cv2.GaussianBlur(canvas.reshape(n * (h + 2 * r), w + 2 * r), (kernel_size, kernel_size), 0,
                           borderType=cv2.BORDER_CONSTANT)
    return out.reshape(n, h + 2 * r, w + 2 * r)[:, r:r + h, r:r + w]


def heatmap_argmax(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-map maximum of ``maps [N, H, W]``: ``x [N]``, ``y [N]`` (int), ``locs [N, 2]`` in the maps' float dtype
    (float64 for other maps; ``-1`` where the maximum is <= 0 or NaN, as mmpose marks them) and the maxima ``[N]``.
    Ties: the first index, NaN first (numpy's rule). The torch codecs decode CPU maps with this too."""
    n, h, w = maps.shape
    flat = np.ascontiguousarray(maps).reshape(n, h * w)
    index = flat.argmax(axis=1)
    values = flat.reshape(-1)[index + np.arange(0, n * h * w, h * w)]
    y, x = np.divmod(index, w)
    locs = np.empty((n, 2), maps.dtype if np.issubdtype(maps.dtype, np.floating) else np.float64)
    locs[:, 0], locs[:, 1] = x, y
    locs[~(values > 0)] = -1
    return x, y, locs, values


def refine_quarter_shift(maps: np.ndarray, x: np.ndarray, y: np.ndarray, locs: np.ndarray) -> np.ndarray:
    """MSRA refinement: 0.25 px from the maximum towards the larger neighbour, per axis (mmpose's border rules:
    x needs ``1 < x < W - 1`` and ``y > 0``, y needs ``1 < y < H - 1`` and ``x > 0``; none where ``locs`` is -1)."""
    n, h, w = maps.shape
    xy = np.stack((x, y))
    use = (xy > 1) & (xy < ((w - 1,), (h - 1,))) & (xy[::-1] > 0) & (locs.T >= 0)
    # right, left, below, above [4, N] in one gather; an unused (border) neighbour may read any value
    at = np.arange(0, n * h * w, h * w) + y * w + x
    near = np.ascontiguousarray(maps).reshape(-1).take(at + ((1,), (-1,), (w,), (-w,)), mode="clip")
    return locs + np.where(use, 0.25 * np.sign(near[0::2] - near[1::2]), 0.0).T


def _log_blurred(maps: np.ndarray, peak: np.ndarray, kernel_size: int, clamp: tuple[float, float]) -> np.ndarray:
    """``log(clip(blur(map) * peak / max(blur(map)), lo, hi))`` per map, float64: mmpose's blur, rescaled to
    the map's own maximum, then the log of its clipped values."""
    blurred = gaussian_blur(maps, kernel_size).astype(np.float64)
    top = blurred.reshape(len(blurred), -1).max(1) if blurred.size else np.zeros(0)
    scale = np.where(top != 0, peak / np.where(top != 0, top, 1.0), 1.0)
    with np.errstate(divide="ignore"):
        return np.log(np.clip(blurred * scale[:, None, None], *clamp))


def _newton_offset(dx: np.ndarray, dy: np.ndarray, dxx: np.ndarray, dxy: np.ndarray, dyy: np.ndarray,
                   refine: np.ndarray) -> np.ndarray:
    """``-H^-1 g`` per map where ``refine`` and the Hessian is regular (zeros elsewhere)."""
    det = dxx * dyy - dxy * dxy
    refine = refine & (det != 0)
    safe = np.where(refine, det, 1.0)
    with np.errstate(invalid="ignore", over="ignore"):
        offset = -np.stack([dyy * dx - dxy * dy, dxx * dy - dxy * dx], -1) / safe[:, None]
    return np.where(refine[:, None] & np.isfinite(offset), offset, 0.0)


def refine_dark(maps: np.ndarray, x: np.ndarray, y: np.ndarray, locs: np.ndarray, peak: np.ndarray,
                kernel_size: int) -> np.ndarray:
    """DARK refinement (mmpose's ``refine_keypoints_dark``): a Newton step on the log of the blurred map with
    step-2 second differences; maxima within 2 px of the border and singular Hessians are left unrefined."""
    n, h, w = maps.shape
    refine = (peak > 0) & (x > 1) & (x < w - 2) & (y > 1) & (y < h - 2)
    if not refine.any():
        return locs
    v = _log_blurred(maps, peak, kernel_size, _DARK_CLAMP)
    off = np.arange(-2, 3)
    cy, cx = np.clip(y, 2, h - 3), np.clip(x, 2, w - 3)  # in range wherever refine holds
    v = v[np.arange(n)[:, None, None], (cy[:, None] + off)[:, :, None], (cx[:, None] + off)[:, None, :]]  # [N, 5, 5]
    dx = 0.5 * (v[:, 2, 3] - v[:, 2, 1])
    dy = 0.5 * (v[:, 3, 2] - v[:, 1, 2])
    dxx = 0.25 * (v[:, 2, 4] - 2 * v[:, 2, 2] + v[:, 2, 0])
    dxy = 0.25 * (v[:, 3, 3] - v[:, 1, 3] - v[:, 3, 1] + v[:, 1, 1])
    dyy = 0.25 * (v[:, 4, 2] - 2 * v[:, 2, 2] + v[:, 0, 2])
    return locs + _newton_offset(dx, dy, dxx, dxy, dyy, refine)


def refine_dark_udp(maps: np.ndarray, x: np.ndarray, y: np.ndarray, locs: np.ndarray, peak: np.ndarray,
                    kernel_size: int) -> np.ndarray:
    """UDP's DARK variant (mmpose's ``refine_keypoints_dark_udp``): log of the blurred map clipped to
    [1e-3, 50], edge-padded step-1 differences, Hessian + eps * I, one Newton step at every positive map."""
    n = maps.shape[0]
    refine = peak > 0
    if not refine.any():
        return locs
    v = np.pad(_log_blurred(maps, peak, kernel_size, _UDP_CLAMP), ((0, 0), (1, 1), (1, 1)), mode="edge")
    off = np.arange(3)  # padded coordinates: the window around (y, x) starts at (y, x)
    v = v[np.arange(n)[:, None, None], (y[:, None] + off)[:, :, None], (x[:, None] + off)[:, None, :]]  # [N, 3, 3]
    i = v[:, 1, 1]
    ix1, ix1_ = v[:, 1, 2], v[:, 1, 0]
    iy1, iy1_ = v[:, 2, 1], v[:, 0, 1]
    dx = 0.5 * (ix1 - ix1_)
    dy = 0.5 * (iy1 - iy1_)
    dxx = ix1 - 2 * i + ix1_ + _EPS32
    dyy = iy1 - 2 * i + iy1_ + _EPS32
    dxy = 0.5 * (v[:, 2, 2] - ix1 - iy1 + 2 * i - ix1_ - iy1_ + v[:, 0, 0])
    return locs + _newton_offset(dx, dy, dxx, dxy, dyy, refine)


def decode_heatmaps(heatmaps: np.ndarray, codec: str, input_size: Sequence[int], *, sigma: float = 2.0,
                    blur_kernel_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Heatmaps ``[N, K, H, W]`` -> keypoints ``[N, K, 2]`` (crop pixels, float32) and scores ``[N, K]`` (each
    map's maximum), decoded as poseforge's ``codec`` (``"msra"``, ``"dark"`` or ``"udp"``) for an ``input_size``
    ``(w, h)`` model; ``blur_kernel_size`` defaults to mmpose's rule for ``sigma``."""
    if codec not in HEATMAP_CODECS:
        raise PoseforgeError(f"unknown heatmap codec '{codec}'; known: {', '.join(HEATMAP_CODECS)}")
    maps = np.asarray(heatmaps, dtype=np.float32)
    if maps.ndim != 4:
        raise PoseforgeError(f"heatmaps must be [N, K, H, W], got {list(maps.shape)}")
    n, k, h, w = maps.shape
    if maps.size == 0:
        return np.zeros((n, k, 2), np.float32), np.zeros((n, k), np.float32)
    flat = maps.reshape(n * k, h, w)
    x, y, locs, peak = heatmap_argmax(flat)
    kernel = blur_kernel_size_for_sigma(sigma) if blur_kernel_size is None else int(blur_kernel_size)
    in_w, in_h = float(input_size[0]), float(input_size[1])
    if codec == "msra":
        locs, scale = refine_quarter_shift(flat, x, y, locs), (in_w / w, in_h / h)
    elif codec == "dark":
        locs, scale = refine_dark(flat, x, y, locs, peak, kernel), (in_w / w, in_h / h)
    else:
        if min(h, w) < 2:
            raise PoseforgeError(f"udp heatmaps must be at least 2x2, got {w}x{h}")
        locs, scale = refine_dark_udp(flat, x, y, locs, peak, kernel), ((in_w - 1) / (w - 1), (in_h - 1) / (h - 1))
    return (locs * np.asarray(scale)).reshape(n, k, 2).astype(np.float32), peak.reshape(n, k)


def decode_topdown(outputs: Mapping[str, np.ndarray], codec: Mapping[str, Any],
                   input_size: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Raw top-down outputs by name (``simcc_x`` + ``simcc_y``, or ``heatmaps``) -> keypoints ``[N, K, 2]`` in
    crop pixels and scores ``[N, K]``, with the codec settings of an export's metadata (poseforge's codec
    ``config()``: ``name``, ``split_ratio``, ``decode_window``, ``sigma``, ``blur_kernel_size`` ...)."""
    name = str(codec.get("name", ""))
    if "simcc_x" in outputs and "simcc_y" in outputs:
        if "split_ratio" not in codec:
            raise PoseforgeError("SimCC outputs need the codec's split_ratio (bins per input pixel)")
        return decode_simcc(outputs["simcc_x"], outputs["simcc_y"], float(codec["split_ratio"]),
                            decode_window=float(codec.get("decode_window", 0.0) or 0.0),
                            decode_beta=float(codec.get("decode_beta", 10.0)), sigma=codec.get("sigma", 6.0))
    if "heatmaps" in outputs:
        sigma = codec.get("sigma", 2.0)
        return decode_heatmaps(outputs["heatmaps"], name, input_size,
                               sigma=float(sigma if np.isscalar(sigma) else sigma[0]),
                               blur_kernel_size=codec.get("blur_kernel_size"))
    raise PoseforgeError(f"cannot decode outputs {sorted(outputs)}: expected simcc_x + simcc_y or heatmaps")


def flip_back(outputs: Mapping[str, np.ndarray], flip_index: Sequence[int], codec: str) -> dict[str, np.ndarray]:
    """Raw outputs of horizontally mirrored crops re-aligned with the unmirrored ones (poseforge's codec
    ``flip_back``): left/right keypoints swapped, x reversed; heatmaps of the ``msra`` / ``dark`` codecs move one
    column right (column 0 kept), as mmpose's ``shift_heatmap``."""
    index = np.asarray(flip_index, dtype=np.int64)
    out: dict[str, np.ndarray] = {}
    if "simcc_x" in outputs and "simcc_y" in outputs:
        out["simcc_x"] = outputs["simcc_x"][:, index, ::-1]
        out["simcc_y"] = outputs["simcc_y"][:, index]
    elif "heatmaps" in outputs:
        maps = outputs["heatmaps"][:, index, :, ::-1]
        if codec in ("msra", "dark") and maps.shape[-1] > 1:
            maps = np.concatenate([maps[..., :1], maps[..., :-1]], -1)
        out["heatmaps"] = maps
    else:
        raise PoseforgeError(f"flip test needs simcc_x + simcc_y or heatmaps outputs, got {sorted(outputs)}")
    return {k: np.ascontiguousarray(v) for k, v in out.items()}

