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
from .base import (KeypointCodec, as_tensor, check_flip_index, check_kernel_size, check_keypoints,
                   check_positive, check_size, target_weights)

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
    kernel = gaussian_kernel1d(kernel_size, heatmaps.device, heatmaps.dtype)
    r = (kernel.numel() - 1) // 2
    H, W = heatmaps.shape[-2:]
    return _band(H, H, kernel, r) @ heatmaps @ _band(W, W, kernel, r).T


@lru_cache(maxsize=32)
def _window_operators(kernel_size: int, half: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Patch offsets [p] and the banded [2h+1, p] matrix of a local blur (cached: built once per setting)."""
    with torch.inference_mode(False):  # cached tensors must stay usable outside inference mode
        kernel = gaussian_kernel1d(kernel_size, device, dtype)
        p = 2 * half + kernel_size
        offsets = torch.arange(p, device=device) - (half + (kernel_size - 1) // 2)
        return offsets, _band(2 * half + 1, p, kernel, 0)


def _blur_at(flat: Tensor, H: int, W: int, cy: Tensor, cx: Tensor, half: int, kernel_size: int) -> Tensor:
    """Blurred values (zero padding) on the (2*half+1)^2 window around (cy, cx) of each map.

    ``flat`` [N, H*W]; returns [N, 2h+1, 2h+1]. Only a (2h+ks)^2 patch per map is read, so
    refinement costs O(N) instead of a full-map blur. Window positions off the map get the value
    the zero-padded convolution would have there; callers replace or ignore them.
    """
    N = flat.shape[0]
    offsets, band = _window_operators(kernel_size, half, flat.device, flat.dtype)
    p = offsets.numel()
    rows = cy[:, None] + offsets  # [N, p]
    cols = cx[:, None] + offsets
    row_ok = ((rows >= 0) & (rows < H)).to(flat.dtype)
    col_ok = ((cols >= 0) & (cols < W)).to(flat.dtype)
    index = (rows.clamp(0, H - 1) * W)[:, :, None] + cols.clamp(0, W - 1)[:, None, :]
    patch = flat.gather(1, index.view(N, p * p)).view(N, p, p)
    # zero padding: patch rows/cols that fall off the map count as 0 (indices were clamped)
    return (band @ (patch * row_ok[:, :, None] * col_ok[:, None, :])) @ band.T


def _log_modulated(values: Tensor, peak: Tensor, lower_bound: Tensor, refine: Tensor, maps: Tensor,
                   kernel_size: int, clamp: tuple[float, float]) -> Tensor:
    """``log(clip(values * s, lo, hi))`` with mmpose's rescale ``s = peak / max(blurred map)``.

    ``values`` [N, ...] are blurred values near the argmax, ``lower_bound`` [N] a lower bound of the
    blurred map's maximum (the largest of them), and the kernel sums to 1, so ``s`` lies in
    ``[1, peak / lower_bound]``. Log-derivatives do not depend on ``s`` unless the clip treats the
    values differently somewhere in that range; only those maps (rare: tiny or negative values
    beside the peak) get a full blur to find the exact ``s``.
    """
    lo, hi = clamp
    vmin, vmax = torch.aminmax(values.flatten(1), dim=1)
    s_max = peak / lower_bound
    # s in [1, s_max]: one clip pattern for every s means the log-derivatives need no exact s
    unclipped = (vmin >= lo) & (vmax * s_max <= hi)
    all_low = vmax * s_max < lo
    all_high = vmin > hi
    exact_needed = refine & ~((lower_bound > 0) & (unclipped | all_low | all_high))
    scale = torch.ones_like(peak)
    if bool(exact_needed.any()):
        idx = exact_needed.nonzero()[:, 0]
        blurred_max = blur_heatmaps(maps[idx], kernel_size).amax(dim=(-2, -1))
        exact = torch.where(blurred_max != 0, peak[idx] / blurred_max, torch.ones_like(blurred_max))
        scale = scale.index_put((idx,), exact)
    view = (-1,) + (1,) * (values.ndim - 1)
    return (values * scale.view(view)).clamp(lo, hi).log()


# ----------------------------------------------------------------------------- decode steps
def _block_length(size: int) -> int | None:
    """A block length for two-stage argmax: a multiple of 16 dividing ``size``, near 2*sqrt(size)."""
    blocks = [n for n in range(16, size, 16) if size % n == 0]
    return min(blocks, key=lambda n: abs(n - 2 * math.sqrt(size))) if blocks else None


def _rows_argmax(flat: Tensor) -> tuple[Tensor, Tensor]:
    """Maximum and FIRST index of the maximum of each row of ``flat`` [N, M] (numpy's argmax rule).

    Two stages (block maxima, then the first block holding the maximum) because a plain
    ``max(dim=1)`` with indices is ~4x slower on CPU than these vectorised reductions.
    """
    N, M = flat.shape
    block = _block_length(M) if flat.device.type == "cpu" else None
    if block is None:
        return flat.max(dim=1)
    blocks = flat.reshape(N, M // block, block)
    block_max = blocks.amax(dim=2)
    first_block = block_max.argmax(dim=1)
    inside = blocks.gather(1, first_block[:, None, None].expand(N, 1, block))[:, 0]
    values, offset = inside.max(dim=1)
    return values, first_block * block + offset


def heatmap_argmax(heatmaps: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-map maximum of ``heatmaps`` [N, H, W]: (x [N] long, y [N] long, locs [N, 2] float with
    (-1, -1) where the maximum is <= 0, as mmpose marks them, values [N])."""
    N, H, W = heatmaps.shape
    values, index = _rows_argmax(heatmaps.reshape(N, H * W))
    x, y = index % W, torch.div(index, W, rounding_mode="floor")
    locs = torch.stack((x, y), dim=-1).to(heatmaps.dtype)
    locs = torch.where((values > 0)[:, None], locs, torch.full_like(locs, -1.0))
    return x, y, locs, values


def refine_quarter_shift(heatmaps: Tensor, x: Tensor, y: Tensor, locs: Tensor) -> Tensor:
    """MSRA refinement: move 0.25 px from the maximum towards the larger neighbour, per axis.
    Border rules follow mmpose's ``refine_keypoints`` (x needs 1 < x < W-1, y needs 1 < y < H-1)."""
    N, H, W = heatmaps.shape
    flat = heatmaps.reshape(N, H * W)
    valid = locs[:, 0] >= 0  # maps with max <= 0 are at -1 and mmpose leaves them there

    def at(yy: Tensor, xx: Tensor) -> Tensor:
        return flat.gather(1, (yy.clamp(0, H - 1) * W + xx.clamp(0, W - 1))[:, None])[:, 0]

    use_x = valid & (x > 1) & (x < W - 1) & (y > 0) & (y < H)
    use_y = valid & (y > 1) & (y < H - 1) & (x > 0) & (x < W)
    dx = torch.where(use_x, at(y, x + 1) - at(y, x - 1), torch.zeros_like(locs[:, 0]))
    dy = torch.where(use_y, at(y + 1, x) - at(y - 1, x), torch.zeros_like(locs[:, 0]))
    return locs + 0.25 * torch.stack((dx.sign(), dy.sign()), dim=-1)


def refine_dark(heatmaps: Tensor, x: Tensor, y: Tensor, locs: Tensor, peak: Tensor, kernel_size: int) -> Tensor:
    """DARK (distribution-aware) refinement: one Newton step on the log of the blurred heatmap,
    with mmpose's step-2 second differences; maps whose argmax is within 2 px of the border, or
    whose Hessian is singular, are left unrefined (as in mmpose's ``refine_keypoints_dark``)."""
    N, H, W = heatmaps.shape
    local = _blur_at(heatmaps.reshape(N, H * W), H, W, y, x, 2, kernel_size)  # [N, 5, 5], centre (2, 2)
    refine = (peak > 0) & (x > 1) & (x < W - 2) & (y > 1) & (y < H - 2)
    v = _log_modulated(local, peak, local.amax(dim=(1, 2)), refine, heatmaps, kernel_size, _DARK_CLAMP)
    dx = 0.5 * (v[:, 2, 3] - v[:, 2, 1])
    dy = 0.5 * (v[:, 3, 2] - v[:, 1, 2])
    dxx = 0.25 * (v[:, 2, 4] - 2 * v[:, 2, 2] + v[:, 2, 0])
    dxy = 0.25 * (v[:, 3, 3] - v[:, 1, 3] - v[:, 3, 1] + v[:, 1, 1])
    dyy = 0.25 * (v[:, 4, 2] - 2 * v[:, 2, 2] + v[:, 0, 2])
    det = dxx * dyy - dxy * dxy
    refine = refine & (det != 0)
    safe_det = torch.where(refine, det, torch.ones_like(det))
    offset = -torch.stack((dyy * dx - dxy * dy, dxx * dy - dxy * dx), dim=-1) / safe_det[:, None]
    offset = torch.where(refine[:, None] & offset.isfinite(), offset, torch.zeros_like(offset))
    return locs + offset


def refine_dark_udp(heatmaps: Tensor, x: Tensor, y: Tensor, locs: Tensor, peak: Tensor, kernel_size: int) -> Tensor:
    """UDP's DARK variant (mmpose ``refine_keypoints_dark_udp``): log of the blurred map clipped to
    [1e-3, 50], edge-padded step-1 differences, Hessian + eps*I, one Newton step, at every map
    (the edge padding makes border maxima refinable)."""
    N, H, W = heatmaps.shape
    local = _blur_at(heatmaps.reshape(N, H * W), H, W, y, x, 1, kernel_size)  # [N, 3, 3], centre (1, 1)
    # Edge padding: a neighbour off the map takes the value of the nearest on-map pixel, which is
    # inside this 3x3 window, so remap window indices instead of padding the map.
    step = torch.arange(-1, 2, device=heatmaps.device)
    ry = (y[:, None] + step).clamp(0, H - 1) - y[:, None] + 1  # [N, 3] in {0, 1, 2}
    rx = (x[:, None] + step).clamp(0, W - 1) - x[:, None] + 1
    local = local.gather(1, ry[:, :, None].expand(N, 3, 3)).gather(2, rx[:, None, :].expand(N, 3, 3))
    refine = peak > 0
    v = _log_modulated(local, peak, local.amax(dim=(1, 2)), refine, heatmaps, kernel_size, _UDP_CLAMP)
    i = v[:, 1, 1]
    ix1, ix1_ = v[:, 1, 2], v[:, 1, 0]
    iy1, iy1_ = v[:, 2, 1], v[:, 0, 1]
    dx = 0.5 * (ix1 - ix1_)
    dy = 0.5 * (iy1 - iy1_)
    dxx = ix1 - 2 * i + ix1_ + _EPS32
    dyy = iy1 - 2 * i + iy1_ + _EPS32
    dxy = 0.5 * (v[:, 2, 2] - ix1 - iy1 + 2 * i - ix1_ - iy1_ + v[:, 0, 0])
    det = dxx * dyy - dxy * dxy
    refine = refine & (det != 0)
    safe_det = torch.where(refine, det, torch.ones_like(det))
    offset = -torch.stack((dyy * dx - dxy * dy, dxx * dy - dxy * dx), dim=-1) / safe_det[:, None]
    offset = torch.where(refine[:, None] & offset.isfinite(), offset, torch.zeros_like(offset))
    return locs + offset


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
class _HeatmapCodec(KeypointCodec):
    """Shared parts of the Gaussian heatmap codecs: sizes, sigma, output checks, flip-back."""

    flip_shift: bool  # whether flip-back moves maps one column (mmpose test_cfg shift_heatmap)
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
        maps = self._check_outputs(outputs)
        B, K, H, W = maps.shape
        if maps.numel() == 0:
            return maps.new_zeros((B, K, 2)), maps.new_zeros((B, K))
        flat_maps = maps.reshape(B * K, H, W)
        x, y, locs, peak = heatmap_argmax(flat_maps)
        if refine == "quarter":
            locs = refine_quarter_shift(flat_maps, x, y, locs)
        elif refine == "dark":
            locs = refine_dark(flat_maps, x, y, locs, peak, self.blur_kernel_size)
        else:
            locs = refine_dark_udp(flat_maps, x, y, locs, peak, self.blur_kernel_size)
        return locs.reshape(B, K, 2), peak.reshape(B, K)

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
        locs, scores = self._decode_with(outputs, "dark" if self.unbiased else "quarter")
        return locs * locs.new_tensor(self.scale), scores

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
        locs, scores = self._decode_with(outputs, "udp")
        return locs * locs.new_tensor(self.scale), scores

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "input_size": list(self.input_size), "heatmap_size": list(self.heatmap_size),
                "sigma": self.sigma, "blur_kernel_size": self.blur_kernel_size}


def _build_dark(**kwargs: Any) -> MSRAHeatmap:
    """MSRA Gaussian targets (sub-pixel) with DARK decoding: mmpose ``MSRAHeatmap(unbiased=True)``."""
    return MSRAHeatmap(unbiased=True, **kwargs)


CODECS.register("msra", MSRAHeatmap)
CODECS.register("dark", _build_dark)
CODECS.register("udp", UDPHeatmap)
