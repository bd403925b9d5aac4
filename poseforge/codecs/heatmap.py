"""Heatmap codecs: MSRA (argmax + quarter-pixel shift), DARK and UDP, batched torch.

Semantics follow mmpose 1.3.2 (``MSRAHeatmap``, ``MSRAHeatmap(unbiased=True)``, ``UDPHeatmap``
with ``heatmap_type='gaussian'``) so that converted checkpoints decode to the same numbers.
Deliberate differences, each the more sensible reading of the same rule:

- a target weight is 0 when the Gaussian window does not touch the map at all (mmpose keeps the
  weight when the window ends exactly at column/row 0 and draws nothing);
- ``UDPHeatmap.decode`` returns true input-pixel coordinates ``x_hm * (w - 1) / (W - 1)``, the
  inverse of its own encode (mmpose returns ``x_hm * w / (W - 1)``, which its non-UDP inverse
  affine then turns into the right image position). Map UDP predictions back to the image with
  the UDP inverse warp;
- a map whose maximum is <= 0 decodes to (-1, -1) heatmap pixels without refinement (mmpose's
  UDP refinement then reads neighbouring maps' memory).

DARK/UDP compute the blurred log-heatmap only on the few pixels the Newton step reads, from one
small patch per map (equal to mmpose's full-map blur there), in float64 so that flat or noisy maps
do not amplify rounding into the result. On accelerators every step stays on the heatmaps' device
(no host round trip). CPU float32/float64 maps take a CPU path with the same arithmetic: numpy for
the many small steps (a fraction of torch's per-op cost), torch for the gathers and matmuls
(faster there; they follow ``torch.set_num_threads``), and blur weights shared by all maps (one
matmul per axis).
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import PoseforgeError
from ..registry import CODECS
from ..outputs import Heatmaps
from . import base
from .base import (KeypointCodec, as_tensor, check_flip_index, check_kernel_size, check_keypoints,
                   check_positive, check_size, rows_argmax, target_weights)

__all__ = [
    "MSRAHeatmap", "UDPHeatmap", "flip_heatmaps", "blur_heatmaps", "gaussian_kernel1d",
    "blur_kernel_size_for_sigma", "heatmap_argmax", "refine_quarter_shift", "refine_dark",
    "refine_dark_udp",
]

# OpenCV's fixed kernels for sizes <= 7 when sigma <= 0 (getGaussianKernel); cv2.GaussianBlur
# with sigma 0, as mmpose calls it, uses these instead of sampling a Gaussian.
_SMALL_KERNELS = {
    1: (1.0,),
    3: (0.25, 0.5, 0.25),
    5: (0.0625, 0.25, 0.375, 0.25, 0.0625),
    7: (0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125),
}

# Log-heatmap clamps of the two refinements (mmpose: DARK max(h, 1e-10); UDP clip(h, 1e-3, 50)).
_DARK_CLAMP = (1e-10, math.inf)
_UDP_CLAMP = (1e-3, 50.0)
_EPS32 = float(np.finfo(np.float32).eps)


# ----------------------------------------------------------------------------- blur
def blur_kernel_size_for_sigma(sigma: float) -> int:
    """Odd blur kernel size matching a target ``sigma`` (mmpose's rule: 11 for 2, 17 for 3, 7 for 1.5)."""
    size = int((float(sigma) * 20 - 7) // 3)
    size -= int(size % 2 == 0)
    return max(size, 1)


def gaussian_kernel1d(size: int, device: torch.device | str | None = None,
                      dtype: torch.dtype = torch.float32) -> Tensor:
    """The 1-D kernel of ``cv2.GaussianBlur(x, (size, size), 0)``: sigma = 0.3*((size-1)/2-1)+0.8."""
    size = check_kernel_size(size, "kernel size")
    if size in _SMALL_KERNELS:
        values = np.asarray(_SMALL_KERNELS[size], dtype=np.float64)
    else:
        sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
        offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2
        values = np.exp(-(offsets ** 2) / (2 * sigma ** 2))
        values /= values.sum()
    return torch.as_tensor(values, dtype=dtype, device=device)


def _band(rows: int, cols: int, kernel: Tensor, shift: int) -> Tensor:
    """Matrix ``M[i, j] = kernel[j - i + shift]`` (0 outside the kernel): a 1-D convolution as a matmul."""
    taps = torch.arange(cols, device=kernel.device)[None, :] - torch.arange(rows, device=kernel.device)[:, None] + shift
    inside = (taps >= 0) & (taps < kernel.numel())
    return torch.where(inside, kernel[taps.clamp(0, kernel.numel() - 1)], torch.zeros((), dtype=kernel.dtype, device=kernel.device))


def blur_heatmaps(heatmaps: Tensor, kernel_size: int) -> Tensor:
    """Gaussian blur of ``heatmaps`` [..., H, W] with zero padding (mmpose's ``gaussian_blur``
    without its max rescaling). Separable, done as two banded matmuls: on CPU these beat
    depthwise convolution by ~4x for heatmap-sized maps."""
    rows, cols = _blur_bands(*heatmaps.shape[-2:], check_kernel_size(kernel_size, "kernel size"), heatmaps.device,
                             heatmaps.dtype)
    return rows @ heatmaps @ cols


@lru_cache(maxsize=32)
def _blur_bands(H: int, W: int, kernel_size: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """The [H, H] and [W, W] banded matrices of :func:`blur_heatmaps` (cached: no host-to-device copy per call)."""
    with torch.inference_mode(False):  # cached tensors must stay usable outside inference mode
        kernel = gaussian_kernel1d(kernel_size, device, dtype)
        r = (kernel_size - 1) // 2
        return _band(H, H, kernel, r), _band(W, W, kernel, r).T


@lru_cache(maxsize=32)
def _band_table(kernel_size: int, half: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Blur weights over a patch of ``P = 2*half + kernel_size`` pixels, one row per output position:
    row ``d + half`` weighs patch pixels 0..P-1 for the blurred value at patch position ``d``, for every
    ``d`` in ``[-half, P + half)`` a window can ask for (zero where the kernel does not reach). Cached:
    built once per setting."""
    with torch.inference_mode(False):  # cached tensors must stay usable outside inference mode
        kernel = gaussian_kernel1d(kernel_size, device, dtype)
        size = 2 * half + kernel_size
        return _band(size + 2 * half, size, kernel, half + (kernel_size - 1) // 2)


def _refine_dtype(device: torch.device) -> torch.dtype:
    """float64 for the refinement arithmetic, except on devices without it (Apple MPS)."""
    return torch.float32 if device.type == "mps" else torch.float64


def _window_blur(maps: Tensor, y: Tensor, x: Tensor, rows: Tensor, cols: Tensor, half: int,
                 kernel_size: int) -> Tensor:
    """Values of the zero-padded Gaussian blur of ``maps`` [N, H, W] on a small grid per map.

    ``rows`` / ``cols`` [N, R] / [N, C] are map positions within ``half`` of the centre ``(y, x)`` [N].
    Returns [N, R, C]. Only one P x P patch (P = 2*half + kernel_size) per map is read: the
    patch is placed inside the map (so no index leaves it or wraps into the next row) and the blur
    weights of each output row/column come from a table indexed by its position in the patch,
    which also leaves out the pixels past the map's edge exactly as zero padding does. So
    refinement costs O(N), not a full-map blur, and the result equals the full blur there.
    """
    N, H, W = maps.shape
    size = 2 * half + kernel_size
    if H < size or W < size:  # tiny maps: zero rows/columns past the end are the blur's zero padding
        maps = torch.nn.functional.pad(maps, (0, max(size - W, 0), 0, max(size - H, 0)))
        H, W = maps.shape[-2:]
    device = maps.device
    top = (y - (half + (kernel_size - 1) // 2)).clamp(0, H - size)
    left = (x - (half + (kernel_size - 1) // 2)).clamp(0, W - size)
    # Every run of P consecutive values as one overlapping strided view (no copy): the patch is P
    # such runs, one per patch row, copied by a single index_select (~2x faster than indexing a
    # 5-D unfold view, which copies value by value).
    flat = maps.contiguous().view(-1)
    runs = flat.as_strided((flat.numel() - size + 1, size), (1, 1))
    starts = (torch.arange(N, device=device) * (H * W) + top * W + left)[:, None] + torch.arange(size, device=device) * W
    patch = runs.index_select(0, starts.view(-1)).view(N, size, size)
    # float64 from here (on these few values it costs little): the Newton step divides by the
    # Hessian's determinant, which on flat or noisy maps amplifies float32 rounding to ~1e-3 px
    dtype = _refine_dtype(device)
    patch = patch.to(dtype)
    # the blur weights of every output row and column, [N, R + C, P], in one index_select
    R = rows.shape[1]
    position = torch.cat((rows - top[:, None], cols - left[:, None]), dim=1) + half
    weights = _band_table(kernel_size, half, device, dtype).index_select(0, position.view(-1)).view(N, -1, size)
    return torch.bmm(torch.bmm(weights[:, :R], patch), weights[:, R:].transpose(1, 2))


def _host_branches(device: torch.device) -> bool:
    """Whether decoding may branch on tensor values (a host round trip): free on the CPU, where it
    spares full-map blurs; on accelerators (and 'meta') every step stays on the device instead."""
    return device.type == "cpu"


def _log_modulated(window: Tensor, peak: Tensor, refine: Tensor, maps: Tensor, kernel_size: int,
                   clamp: tuple[float, float]) -> Tensor:
    """``log(clip(window * s, lo, hi))`` with mmpose's rescale ``s = peak / max(blurred map)``.

    ``window`` [N, ...] are on-map blurred values near the argmax, so their maximum ``vmax`` bounds
    the blurred map's maximum from below, and the kernel sums to 1, so ``s`` lies in
    ``[1, peak / vmax]`` and the largest scaled window value is at most ``peak``. Log-derivatives
    do not depend on ``s`` unless the clip treats the values differently somewhere in that range;
    only those maps (rare: tiny or negative values beside the peak) need the exact ``s`` of a full
    blur. On the CPU only they are blurred; elsewhere every map is (cheap there), which keeps the
    decode free of host round trips (:func:`_host_branches`).
    """
    lo, hi = clamp
    host = _host_branches(maps.device)
    # the usual case, checked first on the CPU: no window value below the lower clip and no peak
    # above the upper one (then nothing is clipped for any s, which also means vmax > 0)
    if host and bool((window.amin() >= lo) & (peak.amax() <= hi)):
        return window.clamp(lo, hi).log()
    vmin, vmax = torch.aminmax(window.flatten(1), dim=1)
    if math.isinf(hi):  # DARK: only the lower clip
        same_clip = (vmin >= lo) | (peak < lo)
    else:
        same_clip = ((vmin >= lo) & (peak <= hi)) | (peak < lo) | (vmin > hi)
    exact = refine & ~(same_clip & (vmax > 0))
    if host:
        if not bool(exact.any()):
            return window.clamp(lo, hi).log()
        idx = exact.nonzero()[:, 0]
        blurred_max = blur_heatmaps(maps[idx], kernel_size).amax(dim=(-2, -1))
        scale = torch.ones_like(peak).index_put((idx,), torch.where(blurred_max != 0, peak[idx] / blurred_max, 1.0))
    else:
        blurred_max = blur_heatmaps(maps, kernel_size).amax(dim=(-2, -1))
        scale = torch.where(exact & (blurred_max != 0), peak / blurred_max, 1.0)
    return (window * scale.view((-1,) + (1,) * (window.ndim - 1))).clamp(lo, hi).log()


# ----------------------------------------------------------------------------- decode steps
@lru_cache(maxsize=64)
def _constant(values: tuple, device: torch.device, dtype: torch.dtype) -> Tensor:
    """A small constant tensor, built once per device (no host-to-device copy per decode call)."""
    with torch.inference_mode(False):  # cached tensors must stay usable outside inference mode
        return torch.tensor(values, device=device, dtype=dtype)


def heatmap_argmax(heatmaps: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-map maximum of ``heatmaps`` [N, H, W]: (x [N] long, y [N] long, locs [N, 2] float with
    (-1, -1) where the maximum is <= 0, as mmpose marks them, values [N])."""
    if base._numpy_path(heatmaps) and heatmaps.numel():
        from ..runtime.decode import heatmap_argmax as np_heatmap_argmax  # (the runtime package loads OpenCV: on use)

        return _on_numpy(np_heatmap_argmax, heatmaps)
    N, H, W = heatmaps.shape
    values, index = rows_argmax(heatmaps.reshape(N, H * W))
    y = torch.div(index, W, rounding_mode="floor")
    x = index - y * W
    locs = torch.where((values > 0)[:, None], torch.stack((x, y), dim=-1).to(heatmaps.dtype), -1.0)
    return x, y, locs, values


def refine_quarter_shift(heatmaps: Tensor, x: Tensor, y: Tensor, locs: Tensor) -> Tensor:
    """MSRA refinement: move 0.25 px from the maximum towards the larger neighbour, per axis.
    Border rules follow mmpose's ``refine_keypoints`` (x needs 1 < x < W-1, y needs 1 < y < H-1)."""
    if base._numpy_path(heatmaps) and heatmaps.numel():
        from ..runtime.decode import refine_quarter_shift as np_refine_quarter_shift

        return _on_numpy(np_refine_quarter_shift, heatmaps, x, y, locs)
    N, H, W = heatmaps.shape
    xy = torch.stack((x, y), dim=-1)
    # mmpose moves x where 1 < x < W-1 and 0 < y, y where 1 < y < H-1 and 0 < x, and neither where the
    # maximum is <= 0 (locs -1)
    use = (xy > 1) & (xy < _constant((W - 1, H - 1), xy.device, xy.dtype)) & (xy > 0).flip(-1) & (locs >= 0)
    # right, left, below, above in one gather; unused (border) neighbours are clamped into the map
    steps = _constant((1, -1, W, -W), xy.device, xy.dtype)
    near = heatmaps.reshape(N, H * W).gather(1, ((y * W + x)[:, None] + steps).clamp(0, H * W - 1))
    return locs + torch.where(use, 0.25 * (near[:, 0::2] - near[:, 1::2]).sign(), 0.0)


# Finite differences of mmpose's refinements as [window values, 5] matrices: one matmul gives
# (dx, dy, dxx, dxy, dyy) for every map. Window values are row-major, (2h+1) rows of ``columns``
# values (spare columns after the 2h+1 real ones get weight 0), centre at (h, h).
def _difference_weights(half: int, terms: dict[str, dict[tuple[int, int], float]],
                        columns: int | None = None) -> tuple[tuple[float, ...], ...]:
    columns = columns or 2 * half + 1
    rows = [[0.0] * 5 for _ in range((2 * half + 1) * columns)]
    for col, name in enumerate(("dx", "dy", "dxx", "dxy", "dyy")):
        for (dy, dx), weight in terms[name].items():
            rows[(half + dy) * columns + half + dx][col] += weight
    return tuple(tuple(r) for r in rows)


# DARK's window has one spare column (a copy of the centre one): PyTorch's CPU bmm multiplies
# matrices under 400 multiply-adds with a plain loop, ~2x slower than its BLAS path, and the
# 5x15 @ 15x6 column pass of _window_blur is just over that line where 5x15 @ 15x5 is under it.
_DARK_COLUMNS = (-2, -1, 0, 1, 2, 0)
_DARK_TERMS = {  # refine_keypoints_dark: step-2 second differences
    "dx": {(0, 1): 0.5, (0, -1): -0.5}, "dy": {(1, 0): 0.5, (-1, 0): -0.5},
    "dxx": {(0, 2): 0.25, (0, 0): -0.5, (0, -2): 0.25}, "dyy": {(2, 0): 0.25, (0, 0): -0.5, (-2, 0): 0.25},
    "dxy": {(1, 1): 0.25, (-1, 1): -0.25, (1, -1): -0.25, (-1, -1): 0.25}}
_DARK_DIFFERENCES = _difference_weights(2, _DARK_TERMS, columns=len(_DARK_COLUMNS))
_UDP_TERMS = {  # refine_keypoints_dark_udp: step-1 differences
    "dx": {(0, 1): 0.5, (0, -1): -0.5}, "dy": {(1, 0): 0.5, (-1, 0): -0.5},
    "dxx": {(0, 1): 1.0, (0, 0): -2.0, (0, -1): 1.0}, "dyy": {(1, 0): 1.0, (0, 0): -2.0, (-1, 0): 1.0},
    "dxy": {(1, 1): 0.5, (0, 1): -0.5, (1, 0): -0.5, (0, 0): 1.0, (0, -1): -0.5, (-1, 0): -0.5, (-1, -1): 0.5}}
_UDP_DIFFERENCES = _difference_weights(1, _UDP_TERMS)


def _stencil(half: int, terms: dict[str, dict[tuple[int, int], float]]) -> tuple[np.ndarray, np.ndarray, Tensor]:
    """The CPU path's window, values laid out [S, N] (S = (2h+1)^2, row-major): its row and column
    steps [S, 1] and the difference weights [5, S]."""
    steps = np.arange(-half, half + 1)
    # Explicitly on the CPU: the first import may happen inside a model build's ``torch.device("meta")`` context.
    weights = torch.tensor(_difference_weights(half, terms), dtype=torch.float64, device="cpu").T.contiguous()
    return np.repeat(steps, len(steps))[:, None], np.tile(steps, len(steps))[:, None], weights


_DARK_STENCIL = _stencil(2, _DARK_TERMS)
_UDP_STENCIL = _stencil(1, _UDP_TERMS)


# signs that turn the six products of _newton_step into (adjugate @ gradient, det)
_NEWTON_SIGNS = ((1.0, 0.0, 0.0), (-1.0, 0.0, 0.0), (0.0, 1.0, 0.0),
                 (0.0, -1.0, 0.0), (0.0, 0.0, 1.0), (0.0, 0.0, -1.0))


def _newton_step(locs: Tensor, refine: Tensor, derivatives: Tensor) -> Tensor:
    """``locs - H^-1 g`` from ``derivatives`` [N, 5] = (dx, dy, dxx, dxy, dyy) where ``refine`` and the
    Hessian is invertible, else ``locs`` (in ``locs``' dtype)."""
    d, device = derivatives, derivatives.device
    # adjugate times gradient (dyy dx - dxy dy, dxx dy - dxy dx) and det = dxx dyy - dxy^2 from six
    # products and one small matmul: fewer, larger ops than term by term
    products = (d.index_select(1, _constant((4, 3, 2, 3, 2, 3), device, torch.long))
                * d.index_select(1, _constant((0, 1, 1, 0, 4, 3), device, torch.long)))
    terms = products @ _constant(_NEWTON_SIGNS, device, d.dtype)  # [N, 3]
    det = terms[:, 2]
    refine = refine & (det != 0)
    offset = terms[:, :2] / torch.where(refine, det, 1.0)[:, None]
    return torch.where(refine[:, None] & offset.isfinite(), locs - offset, locs).to(locs.dtype)


def refine_dark(heatmaps: Tensor, x: Tensor, y: Tensor, locs: Tensor, peak: Tensor, kernel_size: int) -> Tensor:
    """DARK (distribution-aware) refinement: one Newton step on the log of the blurred heatmap,
    with mmpose's step-2 second differences; maps whose argmax is within 2 px of the border, or
    whose Hessian is singular, are left unrefined (as in mmpose's ``refine_keypoints_dark``)."""
    if base._numpy_path(heatmaps) and heatmaps.numel():
        return _on_numpy(_refine_dark_np, heatmaps, x, y, locs, peak, kernel_size)
    N, H, W = heatmaps.shape
    rows = y[:, None] + torch.arange(-2, 3, device=heatmaps.device)
    cols = x[:, None] + _constant(_DARK_COLUMNS, x.device, x.dtype)
    window = _window_blur(heatmaps, y, x, rows, cols, 2, kernel_size)  # [N, 5, 6]
    xy = torch.stack((x, y), dim=-1)
    # then the 5x5 window lies on the map
    refine = (peak > 0) & ((xy > 1) & (xy < _constant((W - 2, H - 2), xy.device, xy.dtype))).all(-1)
    v = _log_modulated(window, peak, refine, heatmaps, kernel_size, _DARK_CLAMP)
    return _newton_step(locs, refine, v.view(N, -1) @ _constant(_DARK_DIFFERENCES, v.device, v.dtype))


def refine_dark_udp(heatmaps: Tensor, x: Tensor, y: Tensor, locs: Tensor, peak: Tensor, kernel_size: int) -> Tensor:
    """UDP's DARK variant (mmpose ``refine_keypoints_dark_udp``): log of the blurred map clipped to
    [1e-3, 50], edge-padded step-1 differences, Hessian + eps*I, one Newton step, at every map
    (the edge padding makes border maxima refinable)."""
    if base._numpy_path(heatmaps) and heatmaps.numel():
        return _on_numpy(_refine_dark_udp_np, heatmaps, x, y, locs, peak, kernel_size)
    N, H, W = heatmaps.shape
    steps = torch.arange(-1, 2, device=heatmaps.device)
    # edge padding: a neighbour off the map takes the value of the nearest on-map pixel
    rows = (y[:, None] + steps).clamp(0, H - 1)
    cols = (x[:, None] + steps).clamp(0, W - 1)
    refine = peak > 0
    v = _log_modulated(_window_blur(heatmaps, y, x, rows, cols, 1, kernel_size), peak, refine, heatmaps,
                       kernel_size, _UDP_CLAMP)  # [N, 3, 3]
    derivatives = v.view(N, 9) @ _constant(_UDP_DIFFERENCES, v.device, v.dtype)
    # mmpose adds float32's eps to the Hessian's diagonal
    derivatives = derivatives + _constant((0.0, 0.0, _EPS32, 0.0, _EPS32), v.device, v.dtype)
    return _newton_step(locs, refine, derivatives)


# ----------------------------------------------------------------------------- CPU path
# The decode steps above hand CPU float32/float64 maps (base._numpy_path) to these helpers: numpy
# arrays in and out, the torch code's arithmetic. Per-map quantities are laid out [..., N] (maps
# last): numpy runs its inner loops along the last axis, and a short one (5 offsets) costs ~5x more.
def _on_numpy(step: Any, *args: Any) -> Any:
    """``step`` on numpy views of the tensor arguments (zero-copy); its array(s) back as tensors."""
    out = step(*[(a.detach() if a.requires_grad else a).numpy() if isinstance(a, Tensor) else a for a in args])
    return tuple(map(torch.from_numpy, out)) if isinstance(out, tuple) else torch.from_numpy(out)


def _decode_np(maps: np.ndarray, refine: str, kernel_size: int,
               scale: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Argmax, ``refine`` ("quarter", "dark" or "udp") and ``scale`` of numpy maps [N, H, W]: locs [N, 2], peak [N]."""
    from ..runtime.decode import heatmap_argmax as np_heatmap_argmax, refine_quarter_shift as np_refine_quarter_shift

    x, y, locs, peak = np_heatmap_argmax(maps)
    if refine == "quarter":
        locs = np_refine_quarter_shift(maps, x, y, locs)
    else:
        locs = (_refine_dark_np if refine == "dark" else _refine_dark_udp_np)(maps, x, y, locs, peak, kernel_size)
    locs *= np.asarray(scale, locs.dtype)  # as _scaled: in the keypoints' dtype
    return locs, peak


@lru_cache(maxsize=32)
def _window_bands(kernel_size: int, half: int, columns: int) -> tuple[Tensor, Tensor]:
    """float64 weights of :func:`_window_blur_np`: rows [2h+1, P] (offsets -h..h from the P patch rows
    centred on them) and columns [columns, 2h+1 + 2*reach] (every column offset a shifted window asks for)."""
    with torch.inference_mode(False):  # cached tensors must stay usable outside inference mode
        # Explicitly on the CPU: a model built under ``torch.device("meta")`` warms this cache too.
        kernel = gaussian_kernel1d(kernel_size, device="cpu", dtype=torch.float64)
        reach = half + (kernel_size - 1) // 2
        return (_band(2 * half + 1, 2 * reach + 1, kernel, 0),
                _band(2 * half + 1 + 2 * reach, columns, kernel, reach).T.contiguous())


def _window_blur_np(maps: np.ndarray, y: np.ndarray, x: np.ndarray, row_steps: np.ndarray, col_steps: np.ndarray,
                    half: int, kernel_size: int) -> np.ndarray:
    """:func:`_window_blur` of numpy arrays, maps last: the blurred maps at rows ``y + row_steps`` and
    columns ``x + col_steps`` (steps [S, N] or [S, 1], within ``half``) -> [S, N] float64. The blur
    weights are the same for every map, so each pass is one matmul.

    The patch rows are the P centred on ``y`` (those off the map zeroed: the blur's zero padding),
    so one matmul gives the 2h+1 blurred rows around ``y``. The patch columns stay inside the map,
    from ``left``; the second matmul blurs them at every column offset from ``left`` that a window
    can need (columns past the map's edge are the zeros left out), and the wanted values are
    gathered from there.
    """
    maps = np.ascontiguousarray(maps)
    N, H, W = maps.shape
    reach = half + (kernel_size - 1) // 2  # patch pixels either side of the centre
    P, Pc = 2 * reach + 1, min(2 * reach + 1, W)
    row_weights, col_weights = _window_bands(kernel_size, half, Pc)
    left = np.minimum(np.maximum(x - reach, 0), W - Pc)
    # patch rows [P, N], each a run of Pc values; a row off the map reads a dummy run, zeroed after
    rows = y + np.arange(-reach, reach + 1)[:, None]
    starts = rows * W + (np.arange(N) * (H * W) + left)
    off_map = np.flatnonzero(rows.view(np.uint64) >= H)  # negative rows wrap to huge values
    starts.reshape(-1)[off_map] = 0
    flat = torch.from_numpy(maps.reshape(-1))
    # every run of Pc values as one overlapping view (no copy); torch's index_select copies the runs
    # ~2x faster than numpy's fancy indexing
    patch = flat.as_strided((flat.numel() - Pc + 1, Pc), (1, 1)).index_select(0, torch.from_numpy(starts.reshape(-1)))
    patch.numpy()[off_map] = 0
    blurred_rows = row_weights @ patch.view(P, N * Pc).double()  # [2h+1, N * Pc]
    blurred = (blurred_rows.view(-1, Pc) @ col_weights).numpy()  # [(2h+1) * N, 2h+1 + 2*reach]
    # blurred[(row - y + h) * N + n, col - left + h] is the blurred map n at (row, col)
    width = blurred.shape[1]
    return blurred.reshape(-1)[(row_steps + half) * (N * width) + (col_steps + half) + (np.arange(N) * width + x - left)]


def _log_modulated_np(window: np.ndarray, peak: np.ndarray, refine: np.ndarray, maps: np.ndarray,
                      kernel_size: int, clamp: tuple[float, float]) -> np.ndarray:
    """:func:`_log_modulated` of numpy arrays (``window`` [S, N], overwritten): only the maps whose clip
    depends on mmpose's rescale (see there) get a full blur."""
    lo, hi = clamp
    if window.min() >= lo and peak.max() <= hi:  # the usual case (False with NaN, as in torch)
        return np.log(np.minimum(window, hi, out=window), out=window)  # (>= lo already)
    vmin, vmax = window.min(axis=0), window.max(axis=0)
    if math.isinf(hi):  # DARK: only the lower clip
        same_clip = (vmin >= lo) | (peak < lo)
    else:
        same_clip = ((vmin >= lo) & (peak <= hi)) | (peak < lo) | (vmin > hi)
    exact = np.flatnonzero(refine & ~(same_clip & (vmax > 0)))
    scale = np.ones_like(peak)
    if exact.size:
        blurred_max = blur_heatmaps(torch.from_numpy(maps[exact]), kernel_size).amax(dim=(-2, -1)).numpy()
        scale[exact] = np.divide(peak[exact], blurred_max, out=np.ones_like(blurred_max), where=blurred_max != 0)
    return np.log(np.clip(window * scale, lo, hi))


def _derivatives_np(v: np.ndarray, differences: Tensor) -> np.ndarray:
    """(dx, dy, dxx, dxy, dyy) [5, N] of log-values ``v`` [S, N] at a stencil's points. A torch matmul:
    it follows torch's thread setting, where numpy's BLAS may start threads of its own."""
    return (differences @ torch.from_numpy(v)).numpy()


_ADJUGATE_LEFT, _ADJUGATE_RIGHT = np.array((4, 3, 2, 3, 2, 3)), np.array((0, 1, 1, 0, 4, 3))


def _newton_step_np(locs: np.ndarray, refine: np.ndarray, derivatives: np.ndarray) -> np.ndarray:
    """:func:`_newton_step` of numpy arrays (``derivatives`` [5, N])."""
    # adjugate times gradient (dyy dx - dxy dy, dxx dy - dxy dx) and det = dxx dyy - dxy^2, as there
    products = derivatives[_ADJUGATE_LEFT] * derivatives[_ADJUGATE_RIGHT]
    terms = products[0::2] - products[1::2]  # [3, N]
    refine = refine & (terms[2] != 0)
    offsets = terms[:2] / np.where(refine, terms[2], 1.0)
    moved = np.where(refine & np.isfinite(offsets), locs.T - offsets, locs.T)
    return np.ascontiguousarray(moved.T, dtype=locs.dtype)


def _refine_dark_np(maps: np.ndarray, x: np.ndarray, y: np.ndarray, locs: np.ndarray, peak: np.ndarray,
                    kernel_size: int) -> np.ndarray:
    """:func:`refine_dark` of numpy arrays."""
    _, H, W = maps.shape
    row_steps, col_steps, differences = _DARK_STENCIL
    refine = (peak > 0) & (x > 1) & (x < W - 2) & (y > 1) & (y < H - 2)
    with np.errstate(all="ignore"):  # non-finite maps: torch's silent IEEE results, left unrefined
        window = _window_blur_np(maps, y, x, row_steps, col_steps, 2, kernel_size)
        v = _log_modulated_np(window, peak, refine, maps, kernel_size, _DARK_CLAMP)
        return _newton_step_np(locs, refine, _derivatives_np(v, differences))


def _refine_dark_udp_np(maps: np.ndarray, x: np.ndarray, y: np.ndarray, locs: np.ndarray, peak: np.ndarray,
                        kernel_size: int) -> np.ndarray:
    """:func:`refine_dark_udp` of numpy arrays."""
    _, H, W = maps.shape
    row_steps, col_steps, differences = _UDP_STENCIL
    refine = peak > 0
    with np.errstate(all="ignore"):  # non-finite maps: torch's silent IEEE results, left unrefined
        # edge padding: a neighbour off the map takes the value of the nearest on-map pixel
        row_steps = np.minimum(np.maximum(row_steps, -y), H - 1 - y)
        col_steps = np.minimum(np.maximum(col_steps, -x), W - 1 - x)
        window = _window_blur_np(maps, y, x, row_steps, col_steps, 1, kernel_size)
        v = _log_modulated_np(window, peak, refine, maps, kernel_size, _UDP_CLAMP)
        # mmpose adds float32's eps to the Hessian's diagonal
        derivatives = _derivatives_np(v, differences) + np.array((0.0, 0.0, _EPS32, 0.0, _EPS32))[:, None]
        return _newton_step_np(locs, refine, derivatives)


# ----------------------------------------------------------------------------- flip test
def flip_heatmaps(heatmaps: Tensor | np.ndarray, flip_index: Sequence[int] | np.ndarray | Tensor,
                  shift: bool) -> Tensor:
    """Align heatmaps [B,K,H,W] predicted on a horizontally flipped input with the original input:
    mirror along W, swap left/right channels (``flip_index``), and with ``shift`` move one column
    right (column 0 kept), as mmpose's ``flip_heatmaps`` does for non-UDP heatmaps."""
    maps = as_tensor(heatmaps, "heatmaps")
    if maps.ndim != 4:
        raise PoseforgeError(f"heatmaps must have shape [B, K, H, W], got {list(maps.shape)}")
    index = check_flip_index(flip_index, maps.shape[1], maps.device)
    out = maps.flip(-1).index_select(1, index)
    if shift and out.shape[-1] > 1:
        out = torch.cat((out[..., :1], out[..., :-1]), dim=-1)
    return out


# ----------------------------------------------------------------------------- encode steps
def _axis_gaussians(hm_kp: Tensor, size: tuple[int, int], sigma: float, mode: str) -> tuple[Tensor, Tensor, Tensor]:
    """1-D Gaussian profiles along x [B,K,W] and y [B,K,H] whose outer product is each target,
    and whether the Gaussian window touches the map [B,K].

    ``mode``: "msra" (integer centre, 3-sigma window), "udp" (sub-pixel centre drawn in the
    integer-centred window), "unbiased" (sub-pixel centre over the whole map).
    Windows use mmpose's truncating integer casts so targets match it bit for bit in layout.
    """
    dev, dt = hm_kp.device, hm_kp.dtype
    dims = torch.tensor(size, dtype=dt, device=dev)  # (W, H)
    radius = 3.0 * sigma
    if mode == "unbiased":
        left, right = hm_kp - radius, hm_kp + radius + 1
        touches = ~((left >= dims) | (right < 0)).any(-1)
        centre = hm_kp
        window_lo = window_hi = None
    else:
        mu = torch.trunc(hm_kp + 0.5)
        left, right = torch.trunc(mu - radius), torch.trunc(mu + radius + 1)
        touches = ~((left >= dims) | (right <= 0)).any(-1)
        centre = left + float((2 * radius + 1) // 2)
        if mode == "udp":
            centre = centre + (hm_kp - mu)
        window_lo, window_hi = left, right
    profiles = []
    for axis, n in enumerate(size):
        grid = torch.arange(n, dtype=dt, device=dev)
        d = grid - centre[..., axis, None]
        g = torch.exp(-(d * d) / (2 * sigma * sigma))
        if window_lo is not None:
            inside = (grid >= window_lo[..., axis, None]) & (grid < window_hi[..., axis, None])
            g = g * inside.to(dt)
        profiles.append(g)
    return profiles[0], profiles[1], touches


def _encode_heatmaps(keypoints: Any, visible: Any, scale: tuple[float, float], size: tuple[int, int],
                     sigma: float, mode: str) -> dict[str, Tensor]:
    kp, vis = check_keypoints(keypoints, visible)
    finite = kp.isfinite().all(-1)
    hm_kp = torch.where(finite[..., None], kp, torch.zeros_like(kp)) / torch.tensor(scale, dtype=kp.dtype, device=kp.device)
    gx, gy, touches = _axis_gaussians(hm_kp, size, sigma, mode)
    weights = target_weights(vis, touches & finite)
    draw = (weights > 0).to(gx.dtype)[..., None]
    heatmaps = (gy * draw)[..., :, None] * gx[..., None, :]
    return {"heatmaps": heatmaps.float(), "target_weights": weights}


# ----------------------------------------------------------------------------- codecs
def _scaled(locs: Tensor, scale: tuple[float, float]) -> Tensor:
    """``locs`` [..., 2] times (sx, sy) (cached constant: no host-to-device copy of the factors)."""
    return locs * _constant(scale, locs.device, locs.dtype)


class _HeatmapCodec(KeypointCodec):
    """Shared parts of the Gaussian heatmap codecs: sizes, sigma, output checks, flip-back."""

    flip_shift: bool  # whether flip-back moves maps one column (mmpose test_cfg shift_heatmap)
    scale: tuple[float, float]  # input pixels per heatmap pixel, (x, y)
    output_type = Heatmaps

    def __init__(self, input_size: Sequence[int], heatmap_size: Sequence[int], sigma: float,
                 blur_kernel_size: int | None) -> None:
        self.input_size = check_size(input_size, "input_size")
        self.heatmap_size = check_size(heatmap_size, "heatmap_size")
        self.sigma = check_positive(sigma, "sigma")
        self.blur_kernel_size = (blur_kernel_size_for_sigma(self.sigma) if blur_kernel_size is None
                                 else check_kernel_size(blur_kernel_size))

    def _check_outputs(self, outputs: Any) -> Tensor:
        if isinstance(outputs, Heatmaps):
            outputs = outputs.heatmaps
        maps = as_tensor(outputs, "heatmaps")
        W, H = self.heatmap_size
        if maps.ndim != 4 or tuple(maps.shape[-2:]) != (H, W):
            raise PoseforgeError(f"{self.name} codec: heatmaps must have shape [B, K, {H}, {W}], got {list(maps.shape)}")
        return maps.float()

    def _decode_with(self, outputs: Any, refine: str) -> tuple[Tensor, Tensor]:
        """Keypoints [B,K,2] in input pixels and scores [B,K], refined as ``refine`` ("quarter", "dark", "udp")."""
        maps = self._check_outputs(outputs)
        B, K, H, W = maps.shape
        if maps.numel() == 0:
            return maps.new_zeros((B, K, 2)), maps.new_zeros((B, K))
        flat_maps = maps.reshape(B * K, H, W)
        if base._numpy_path(flat_maps):  # all steps in numpy: no tensor round trip between them
            locs, peak = _on_numpy(_decode_np, flat_maps, refine, self.blur_kernel_size, self.scale)
            return locs.reshape(B, K, 2), peak.reshape(B, K)
        x, y, locs, peak = heatmap_argmax(flat_maps)
        if refine == "quarter":
            locs = refine_quarter_shift(flat_maps, x, y, locs)
        elif refine == "dark":
            locs = refine_dark(flat_maps, x, y, locs, peak, self.blur_kernel_size)
        else:
            locs = refine_dark_udp(flat_maps, x, y, locs, peak, self.blur_kernel_size)
        return _scaled(locs, self.scale).reshape(B, K, 2), peak.reshape(B, K)

    def flip_back(self, outputs: Heatmaps | Tensor | np.ndarray,
                  flip_index: Sequence[int] | np.ndarray | Tensor) -> Heatmaps | Tensor:
        """Heatmaps of the flipped input aligned with the original (flip, pair swap, codec shift); the
        same kind as given (:class:`~poseforge.outputs.Heatmaps` or a tensor)."""
        flipped = flip_heatmaps(self._check_outputs(outputs), flip_index, shift=self.flip_shift)
        return Heatmaps(flipped) if isinstance(outputs, Heatmaps) else flipped


class MSRAHeatmap(_HeatmapCodec):
    """Gaussian heatmaps at ``heatmap_size``, scale ``input/heatmap`` (Simple Baselines / HRNet).

    ``unbiased=False`` ("msra"): Gaussians at the rounded position, decode = argmax + quarter-pixel
    shift. ``unbiased=True`` ("dark"): Gaussians at the exact sub-pixel position, decode = DARK
    Taylor refinement on the blurred log-heatmap (``blur_kernel_size`` defaults to mmpose's rule
    for ``sigma``: 11 for sigma 2, 17 for sigma 3). Flip-back shifts by one column.
    """

    flip_shift = True

    def __init__(self, input_size: Sequence[int], heatmap_size: Sequence[int], sigma: float = 2.0,
                 unbiased: bool = False, blur_kernel_size: int | None = None) -> None:
        super().__init__(input_size, heatmap_size, sigma, blur_kernel_size)
        self.unbiased = bool(unbiased)
        self.scale = (self.input_size[0] / self.heatmap_size[0], self.input_size[1] / self.heatmap_size[1])

    @property
    def name(self) -> str:  # type: ignore[override]
        return "dark" if self.unbiased else "msra"

    def encode_keypoints(self, keypoints: Tensor | np.ndarray, visible: Tensor | np.ndarray) -> dict[str, Tensor]:
        """``{"heatmaps": [B,K,H,W] float32, "target_weights": [B,K] float32}``."""
        mode = "unbiased" if self.unbiased else "msra"
        return _encode_heatmaps(keypoints, visible, self.scale, self.heatmap_size, self.sigma, mode)

    def decode(self, outputs: Heatmaps | Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
        """Keypoints [B,K,2] in input pixels and scores (each map's maximum) [B,K]."""
        return self._decode_with(outputs, "dark" if self.unbiased else "quarter")

    def config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {"name": self.name, "input_size": list(self.input_size),
                               "heatmap_size": list(self.heatmap_size), "sigma": self.sigma}
        if self.unbiased:
            cfg["blur_kernel_size"] = self.blur_kernel_size
        return cfg


class UDPHeatmap(_HeatmapCodec):
    """Unbiased Data Processing heatmaps: scale ``(input-1)/(heatmap-1)``, sub-pixel Gaussian
    centres in a 3-sigma window, decode = argmax + UDP's DARK refinement. Flip-back does not shift."""

    name = "udp"
    flip_shift = False
    udp_warp = True

    def __init__(self, input_size: Sequence[int], heatmap_size: Sequence[int], sigma: float = 2.0,
                 blur_kernel_size: int | None = None) -> None:
        super().__init__(input_size, heatmap_size, sigma, blur_kernel_size)
        if min(self.heatmap_size) < 2:
            raise PoseforgeError(f"udp codec: heatmap_size must be at least 2x2, got {list(self.heatmap_size)}")
        self.scale = ((self.input_size[0] - 1) / (self.heatmap_size[0] - 1),
                      (self.input_size[1] - 1) / (self.heatmap_size[1] - 1))

    def encode_keypoints(self, keypoints: Tensor | np.ndarray, visible: Tensor | np.ndarray) -> dict[str, Tensor]:
        """``{"heatmaps": [B,K,H,W] float32, "target_weights": [B,K] float32}``."""
        return _encode_heatmaps(keypoints, visible, self.scale, self.heatmap_size, self.sigma, "udp")

    def decode(self, outputs: Heatmaps | Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
        """Keypoints [B,K,2] in input pixels (UDP convention, see the module notes) and scores [B,K]."""
        return self._decode_with(outputs, "udp")

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "input_size": list(self.input_size), "heatmap_size": list(self.heatmap_size),
                "sigma": self.sigma, "blur_kernel_size": self.blur_kernel_size}


def _build_dark(**kwargs: Any) -> MSRAHeatmap:
    """MSRA Gaussian targets (sub-pixel) with DARK decoding: mmpose ``MSRAHeatmap(unbiased=True)``."""
    return MSRAHeatmap(unbiased=True, **kwargs)


CODECS.register("msra", MSRAHeatmap)
CODECS.register("dark", _build_dark)
CODECS.register("udp", UDPHeatmap)
