"""Random augmentations for top-down pose training, batched in torch.

Geometric augmentations act on *parameters* (keypoints, box center and scale, rotation), never on
pixels: the crop matrix absorbs them, so one resampling produces the augmented crop (see
:class:`poseforge.data.transforms.TopDownTransform`). Photometric augmentations act on batched float
image tensors ``[N, 3, H, W]`` holding RGB values in ``[0, 255]``. Every random draw goes through an
optional ``torch.Generator`` (draws are made on the generator's device, CPU by default, then moved to
the data's device), so a seeded generator reproduces a batch exactly.

Defaults follow mmpose 1.x: ``RandomFlip``, ``RandomHalfBody``, ``RandomBBoxTransform``,
``YOLOXHSVRandomAug`` and the Albumentations ``Blur``/``CoarseDropout`` of the RTMPose recipes. The camera
steps (white balance, grayscale, Gaussian and motion blur, sensor noise, JPEG re-compression: issue 31's
sim-to-real levers) are off by default; each is batched over the samples it applies to.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from typing import NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import PoseforgeError
from ..keypoints import KeypointSet, get_keypoint_set

__all__ = [
    "AugmentConfig",
    "ColorJitter",
    "RandomGaussianBlur",
    "RandomGrayscale",
    "RandomJPEG",
    "RandomMotionBlur",
    "RandomNoise",
    "RandomWhiteBalance",
    "RandomBBoxTransform",
    "RandomBlur",
    "RandomErase",
    "RandomFlip",
    "RandomHalfBody",
    "RandomHSV",
    "body_halves",
    "hsv_to_rgb",
    "rgb_to_hsv",
    "truncated_normal",
]


# ----------------------------------------------------------------------------------------------------------
# Random draws


def _rand(shape: Sequence[int], generator: torch.Generator | None, device: torch.device | str | None = None) -> Tensor:
    """Uniform [0, 1) float64 draws made on the generator's device, returned on ``device``."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand(tuple(shape), generator=generator, dtype=torch.float64, device=gen_device)
    return u if device is None else u.to(device)


def _float_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64


def truncated_normal(
    shape: Sequence[int], generator: torch.Generator | None = None, low: float = -1.0, high: float = 1.0,
    device: torch.device | str | None = None,
) -> Tensor:
    """Standard normal draws truncated to ``[low, high]`` (inverse-CDF sampling, float64).

    This is the distribution mmpose's ``RandomBBoxTransform`` samples with ``scipy.stats.truncnorm``.
    """
    cdf = lambda x: 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))  # noqa: E731
    lo, hi = cdf(low), cdf(high)
    p = lo + _rand(shape, generator) * (hi - lo)
    z = math.sqrt(2.0) * torch.erfinv((2.0 * p - 1.0).clamp(-1 + 1e-15, 1 - 1e-15))
    z = z.clamp(low, high)
    return z if device is None else z.to(device)


# ----------------------------------------------------------------------------------------------------------
# Upper / lower body split (half-body augmentation)

_UPPER_TOKENS = {
    "nose", "eye", "eyes", "ear", "ears", "mouth", "lip", "lips", "head", "neck", "shoulder", "elbow", "wrist",
    "hand", "thumb", "finger", "forefinger", "index", "middle", "ring", "pinky", "face", "thorax", "chin", "jaw",
    "brow", "eyebrow", "forehead", "cheek", "chest", "sternum", "throat", "withers", "arm", "forearm", "palm",
}
_LOWER_TOKENS = {
    "hip", "knee", "ankle", "foot", "feet", "toe", "heel", "pelvis", "tail", "leg", "thigh", "buttock", "hoof",
}


def _body_half(name: str) -> str | None:
    """'upper', 'lower' or None for one keypoint name (tokens such as ``left_thumb2`` -> ``thumb``)."""
    tokens = {re.sub(r"\d+$", "", t) for t in re.split(r"[^a-z0-9]+", name.lower()) if t}
    if "paw" in tokens:  # animals: front paws go with the shoulders, back/hind paws with the hips
        if tokens & {"front", "f", "fore"}:
            return "upper"
        if tokens & {"back", "b", "hind", "rear"}:
            return "lower"
    if tokens & _LOWER_TOKENS:
        return "lower"
    if tokens & _UPPER_TOKENS:
        return "upper"
    return None


def body_halves(keypoint_set: str | KeypointSet) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks ``(upper [K], lower [K])`` of a keypoint set, derived from its keypoint names.

    Head, neck, shoulders, arms (and whole-body face and hand points) are upper; hips, legs, feet and
    tails are lower; front paws upper, back paws lower. Names matching neither are in neither half.
    This equals mmpose's ``upper``/``lower`` keypoint types for coco, crowdpose, mpii and aic; it differs
    where mmpose is inconsistent (AP-10K's right front paw is ``lower`` there) or leaves types empty
    (COCO-WholeBody face and hands, which mmpose never uses for half-body crops).
    """
    ks = get_keypoint_set(keypoint_set)
    halves = [_body_half(n) for n in ks.names]
    return np.array([h == "upper" for h in halves]), np.array([h == "lower" for h in halves])


# ----------------------------------------------------------------------------------------------------------
# Geometric augmentations (parameters only)


class FlipResult(NamedTuple):
    keypoints: Tensor  # [N, K, 2] mirrored and pair-swapped where flipped
    visibility: Tensor  # [N, K] pair-swapped where flipped
    center: Tensor  # [N, 2] mirrored where flipped
    flip: Tensor  # [N] bool


class RandomFlip:
    """Horizontal flip with the keypoint set's left/right pairs (mmpose ``RandomFlip``, horizontal).

    Coordinates mirror as ``x -> W - 1 - x`` (pixel centres at integers, as mmpose does), so an image
    mirrored with :meth:`flip_images` and its mirrored keypoints agree exactly; flipping twice is the
    identity. ``flip_index[k]`` is the keypoint whose label keypoint ``k`` takes after the flip.
    """

    def __init__(self, flip_index: Sequence[int] | np.ndarray | Tensor, p: float = 0.5) -> None:
        _check_prob("flip p", p)
        index = torch.as_tensor(np.asarray(flip_index), dtype=torch.long)
        if index.ndim != 1 or not torch.equal(torch.sort(index).values, torch.arange(len(index))):
            raise PoseforgeError(f"RandomFlip: flip_index must be a permutation of 0..K-1, got {index.tolist()}")
        if not torch.equal(index[index], torch.arange(len(index))):
            raise PoseforgeError("RandomFlip: flip_index must be its own inverse (pairs swap)")
        self.flip_index = index
        self.p = float(p)

    @classmethod
    def from_keypoint_set(cls, keypoint_set: str | KeypointSet, p: float = 0.5) -> "RandomFlip":
        return cls(get_keypoint_set(keypoint_set).flip_index, p)

    def sample(self, n: int, generator: torch.Generator | None = None, device: torch.device | str | None = None) -> Tensor:
        """Which of ``n`` samples to flip: bool ``[n]``."""
        return _rand((n,), generator, device) < self.p

    def __call__(
        self, keypoints: Tensor, visibility: Tensor, center: Tensor, image_width: Tensor | float,
        flip: Tensor | None = None, generator: torch.Generator | None = None,
    ) -> FlipResult:
        """Mirror keypoints ``[N, K, 2]``, visibility ``[N, K]`` and box centers ``[N, 2]`` of images
        ``image_width`` pixels wide (scalar or ``[N]``). ``flip`` (bool ``[N]``) is drawn if not given."""
        n = keypoints.shape[0]
        if keypoints.shape[-2] != len(self.flip_index):
            raise PoseforgeError(
                f"RandomFlip: keypoints have {keypoints.shape[-2]} points but flip_index has {len(self.flip_index)}")
        if flip is None:
            flip = self.sample(n, generator, keypoints.device)
        flip = flip.to(keypoints.device, torch.bool)
        width = torch.as_tensor(image_width, dtype=keypoints.dtype, device=keypoints.device).expand(n)
        index = self.flip_index.to(keypoints.device)
        mirrored = keypoints[:, index].clone()
        mirrored[..., 0] = (width - 1)[:, None] - mirrored[..., 0]
        keypoints = torch.where(flip[:, None, None], mirrored, keypoints)
        visibility = torch.where(flip[:, None], visibility[:, index], visibility)
        center = torch.where(flip[:, None], torch.stack([width - 1 - center[:, 0], center[:, 1]], -1), center)
        return FlipResult(keypoints, visibility, center, flip)

    @staticmethod
    def flip_images(images: Tensor, flip: Tensor) -> Tensor:
        """Mirror the images ``[N, C, H, W]`` selected by ``flip`` (bool ``[N]``) left-right."""
        return torch.where(flip.to(images.device).view(-1, 1, 1, 1), images.flip(-1), images)

    @staticmethod
    def image_flip_matrix(image_width: Tensor | float, flip: Tensor, dtype: torch.dtype = torch.float64) -> Tensor:
        """``[N, 2, 3]`` affine maps of the image mirror (``x -> W - 1 - x`` where flipped, identity elsewhere)."""
        n = flip.shape[0]
        width = torch.as_tensor(image_width, dtype=dtype, device=flip.device).expand(n)
        m = torch.zeros(n, 2, 3, dtype=dtype, device=flip.device)
        m[:, 0, 0] = torch.where(flip, -1.0, 1.0)
        m[:, 0, 2] = torch.where(flip, width - 1, 0.0)
        m[:, 1, 1] = 1.0
        return m


class HalfBodyResult(NamedTuple):
    center: Tensor  # [N, 2]
    scale: Tensor  # [N, 2] (not aspect-fixed)
    applied: Tensor  # [N] bool: half-body box used
    upper: Tensor  # [N] bool: the upper half was chosen (meaningful where applied)


class RandomHalfBody:
    """Replace the box by one around the visible upper-body or lower-body keypoints (mmpose defaults).

    A sample qualifies when it has at least ``min_total_keypoints`` labeled keypoints; with probability
    ``p`` its box becomes the padded extent of the chosen half (the upper half with probability
    ``upper_prioritized_prob`` when both halves have enough points, otherwise the half that does).
    """

    def __init__(
        self, keypoint_set: str | KeypointSet | None = None, p: float = 0.3, min_total_keypoints: int = 9,
        min_upper_keypoints: int = 2, min_lower_keypoints: int = 3, padding: float = 1.5,
        upper_prioritized_prob: float = 0.7, *, upper: Sequence[bool] | np.ndarray | None = None,
        lower: Sequence[bool] | np.ndarray | None = None,
    ) -> None:
        """Body halves come from ``keypoint_set`` (see :func:`body_halves`) or are given as boolean masks
        ``upper`` / ``lower`` [K] (which, when given with a set, replace its halves)."""
        _check_prob("half-body p", p)
        _check_prob("half-body upper_prioritized_prob", upper_prioritized_prob)
        if keypoint_set is not None:
            set_upper, set_lower = body_halves(keypoint_set)
            upper = set_upper if upper is None else upper
            lower = set_lower if lower is None else lower
        if upper is None or lower is None:
            raise PoseforgeError("RandomHalfBody: give a keypoint set or both upper and lower masks")
        self.upper = torch.as_tensor(np.asarray(upper, dtype=bool))
        self.lower = torch.as_tensor(np.asarray(lower, dtype=bool))
        if self.upper.shape != self.lower.shape or bool((self.upper & self.lower).any()):
            raise PoseforgeError("RandomHalfBody: upper and lower masks must have one length and not overlap")
        self.p = float(p)
        self.min_total_keypoints = int(min_total_keypoints)
        self.min_upper_keypoints = int(min_upper_keypoints)
        self.min_lower_keypoints = int(min_lower_keypoints)
        self.padding = float(padding)
        self.upper_prioritized_prob = float(upper_prioritized_prob)

    def __call__(
        self, keypoints: Tensor, visibility: Tensor, center: Tensor, scale: Tensor,
        generator: torch.Generator | None = None,
    ) -> HalfBodyResult:
        """Keypoints ``[N, K, 2]``, visibility ``[N, K]`` (``> 0`` = labeled), boxes as center/scale ``[N, 2]``."""
        n, k = visibility.shape
        if k != len(self.upper):
            raise PoseforgeError(f"RandomHalfBody: keypoints have {k} points but the body masks have {len(self.upper)}")
        device = keypoints.device
        u_apply, u_upper = _rand((2, n), generator, device)
        valid = visibility > 0
        upper_valid = valid & self.upper.to(device)
        lower_valid = valid & self.lower.to(device)
        n_upper, n_lower = upper_valid.sum(1), lower_valid.sum(1)
        enough_upper = n_upper >= self.min_upper_keypoints
        enough_lower = n_lower >= self.min_lower_keypoints
        applied = (valid.sum(1) >= self.min_total_keypoints) & (u_apply < self.p) & (enough_upper | enough_lower)
        choose_upper = torch.where(enough_upper & enough_lower, u_upper < self.upper_prioritized_prob, enough_upper)
        selected = torch.where(choose_upper[:, None], upper_valid, lower_valid)  # [N, K]

        count = selected.sum(1).clamp(min=1).to(keypoints.dtype)
        half_center = (keypoints * selected[..., None]).sum(1) / count[:, None]
        inf = torch.tensor(float("inf"), dtype=keypoints.dtype, device=device)
        low = torch.where(selected[..., None], keypoints, inf).amin(1)
        high = torch.where(selected[..., None], keypoints, -inf).amax(1)
        half_scale = (high - low) * self.padding
        # A degenerate half (all chosen points at one spot) would give a zero-size box: keep the original.
        applied = applied & torch.isfinite(half_scale).all(1) & (half_scale.amax(1) > 0)
        center = torch.where(applied[:, None], half_center.to(center.dtype), center)
        scale = torch.where(applied[:, None], half_scale.to(scale.dtype), scale)
        return HalfBodyResult(center, scale, applied, choose_upper)


class BBoxTransformResult(NamedTuple):
    center: Tensor  # [N, 2]
    scale: Tensor  # [N, 2]
    rotation: Tensor  # [N] degrees


class RandomBBoxTransform:
    """Random shift, resize and rotation of the boxes (mmpose ``RandomBBoxTransform`` defaults).

    Each of the four factors is a standard normal truncated to [-1, 1]: the center moves by
    ``t * shift_factor * scale`` (probability ``shift_prob``), the scale is multiplied by
    ``mid + t * half_range`` of ``scale_factor`` (probability ``scale_prob``), the rotation is
    ``t * rotate_factor`` degrees (probability ``rotate_prob``).
    """

    def __init__(
        self, shift_factor: float = 0.16, shift_prob: float = 0.3, scale_factor: tuple[float, float] = (0.5, 1.5),
        scale_prob: float = 1.0, rotate_factor: float = 80.0, rotate_prob: float = 0.6,
    ) -> None:
        for name, value in (("shift_prob", shift_prob), ("scale_prob", scale_prob), ("rotate_prob", rotate_prob)):
            _check_prob(name, value)
        lo, hi = (float(v) for v in scale_factor)
        if not 0 < lo <= hi:
            raise PoseforgeError(f"RandomBBoxTransform: scale_factor must be (low, high) with 0 < low <= high, got {scale_factor}")
        self.shift_factor, self.shift_prob = float(shift_factor), float(shift_prob)
        self.scale_factor, self.scale_prob = (lo, hi), float(scale_prob)
        self.rotate_factor, self.rotate_prob = float(rotate_factor), float(rotate_prob)

    def __call__(self, center: Tensor, scale: Tensor, generator: torch.Generator | None = None) -> BBoxTransformResult:
        n, device = center.shape[0], center.device
        t = truncated_normal((n, 4), generator, device=device).to(center.dtype)
        u = _rand((3, n), generator, device)
        offset = torch.where((u[0] < self.shift_prob)[:, None], t[:, :2] * self.shift_factor, 0.0)
        lo, hi = self.scale_factor
        factor = torch.where(u[1] < self.scale_prob, t[:, 2] * (hi - lo) / 2 + (hi + lo) / 2, 1.0)
        rotation = torch.where(u[2] < self.rotate_prob, t[:, 3] * self.rotate_factor, 0.0)
        return BBoxTransformResult(center + offset * scale, scale * factor[:, None].to(scale.dtype), rotation)


# ----------------------------------------------------------------------------------------------------------
# Photometric augmentations on float images [N, 3, H, W], RGB in [0, 255]


def rgb_to_hsv(images: Tensor) -> Tensor:
    """RGB ``[..., 3, H, W]`` -> HSV with hue in [0, 1) (fraction of a turn), saturation in [0, 1] and
    value in the input's range. Ties pick the red, then green channel as the maximum, as OpenCV does."""
    r, g, b = images.unbind(-3)
    maxc = images.amax(-3)
    minc = images.amin(-3)
    delta = maxc - minc
    safe_delta = torch.where(delta > 0, delta, torch.ones_like(delta))
    hue = torch.where(maxc == r, torch.remainder((g - b) / safe_delta, 6.0),
                      torch.where(maxc == g, (b - r) / safe_delta + 2.0, (r - g) / safe_delta + 4.0))
    hue = torch.where(delta > 0, hue / 6.0, torch.zeros_like(hue))
    sat = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc))
    return torch.stack([hue, sat, maxc], -3)


def hsv_to_rgb(hsv: Tensor) -> Tensor:
    """Inverse of :func:`rgb_to_hsv` (hue taken modulo 1)."""
    h, s, v = hsv.unbind(-3)
    h6 = torch.remainder(h, 1.0) * 6.0
    channels = []
    for n in (5.0, 3.0, 1.0):  # R, G, B: the closed-form HSV -> RGB mapping
        k = torch.remainder(n + h6, 6.0)
        channels.append(v - v * s * torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0))
    return torch.stack(channels, -3)


class RandomHSV:
    """YOLOX-style HSV jitter (mmdet ``YOLOXHSVRandomAug``): each of hue, saturation and value is, with
    probability 1/2, shifted by an integer in ``(-delta, delta)`` in OpenCV's 8-bit HSV units
    (hue 180 per turn, saturation and value 255). Applied to a sample with probability ``p``."""

    def __init__(self, hue_delta: int = 5, saturation_delta: int = 30, value_delta: int = 30, p: float = 1.0) -> None:
        _check_prob("hsv p", p)
        self.deltas = (float(hue_delta), float(saturation_delta), float(value_delta))
        self.p = float(p)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Integer gains ``[n, 3]`` (hue, saturation, value) in OpenCV units, zero where not applied."""
        u = _rand((n, 7), generator)
        gains = (u[:, :3] * 2 - 1) * torch.tensor(self.deltas, dtype=torch.float64)
        gains = torch.trunc(gains * (u[:, 3:6] < 0.5))  # each channel on with probability 1/2; int16 cast truncates
        return gains * (u[:, 6:7] < self.p)

    def apply(self, images: Tensor, gains: Tensor) -> Tensor:
        """Shift images ``[N, 3, H, W]`` (RGB, [0, 255]) by gains ``[N, 3]``."""
        gains = gains.to(images.device, images.dtype)
        hsv = rgb_to_hsv(images)
        h = hsv[:, 0] + gains[:, 0, None, None] / 180.0
        s = (hsv[:, 1] + gains[:, 1, None, None] / 255.0).clamp(0.0, 1.0)
        v = (hsv[:, 2] + gains[:, 2, None, None]).clamp(0.0, 255.0)
        out = hsv_to_rgb(torch.stack([h, s, v], 1))
        return torch.where((gains != 0).any(1).view(-1, 1, 1, 1), out, images)

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self.apply(images, self.sample(images.shape[0], generator))


class ColorJitter:
    """Brightness, contrast and saturation jitter (torchvision semantics: factors drawn uniformly from
    ``[max(0, 1 - x), 1 + x]``; contrast blends with the mean gray level, saturation with the gray image),
    applied in that order to float RGB images in [0, 255]."""

    def __init__(self, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0) -> None:
        for name, value in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
            if value < 0:
                raise PoseforgeError(f"ColorJitter: {name} must be >= 0, got {value}")
        self.strengths = (float(brightness), float(contrast), float(saturation))

    @property
    def active(self) -> bool:
        return any(s > 0 for s in self.strengths)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Factors ``[n, 3]`` (brightness, contrast, saturation); 1 means unchanged."""
        u = _rand((n, 3), generator)
        s = torch.tensor(self.strengths, dtype=torch.float64)
        low = (1 - s).clamp(min=0)
        return low + u * (1 + s - low)

    def apply(self, images: Tensor, factors: Tensor) -> Tensor:
        factors = factors.to(images.device, images.dtype)
        weights = torch.tensor([0.299, 0.587, 0.114], dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        out = (images * factors[:, 0, None, None, None]).clamp(0, 255)
        mean = (out * weights).sum(1, keepdim=True).mean((2, 3), keepdim=True)
        out = (mean + (out - mean) * factors[:, 1, None, None, None]).clamp(0, 255)
        gray = (out * weights).sum(1, keepdim=True)
        return (gray + (out - gray) * factors[:, 2, None, None, None]).clamp(0, 255)

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self.apply(images, self.sample(images.shape[0], generator))


class RandomBlur:
    """Box blur with an odd kernel drawn from ``kernel_sizes`` (Albumentations ``Blur``, default 3..7),
    applied with probability ``p``; borders reflect without repeating the edge, like OpenCV's default."""

    def __init__(self, p: float = 0.1, kernel_sizes: Sequence[int] = (3, 5, 7)) -> None:
        _check_prob("blur p", p)
        if not kernel_sizes or any(k < 1 or k % 2 == 0 for k in kernel_sizes):
            raise PoseforgeError(f"RandomBlur: kernel sizes must be odd positive integers, got {list(kernel_sizes)}")
        self.p = float(p)
        self.kernel_sizes = tuple(int(k) for k in kernel_sizes)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Kernel size per sample ``[n]`` (int64), 0 where no blur is applied."""
        u = _rand((n, 2), generator)
        sizes = torch.tensor(self.kernel_sizes, dtype=torch.long)
        choice = sizes[(u[:, 1] * len(sizes)).long().clamp(max=len(sizes) - 1)]
        return torch.where(u[:, 0] < self.p, choice, 0)

    def apply(self, images: Tensor, kernel_sizes: Tensor) -> Tensor:
        kernel_sizes = kernel_sizes.to(images.device)
        out = images.clone()
        for k in self.kernel_sizes:  # at most a few kernel sizes, each one batched over its samples
            chosen = torch.nonzero(kernel_sizes == k).flatten()
            if k == 1 or chosen.numel() == 0:
                continue
            r = k // 2
            padded = F.pad(images[chosen], (r, r, r, r), mode="reflect")
            # The box filter is separable: one row pass and one column pass.
            blurred = F.avg_pool2d(F.avg_pool2d(padded, (k, 1), stride=1), (1, k), stride=1)
            out[chosen] = blurred
        return out

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self.apply(images, self.sample(images.shape[0], generator))


class RandomErase:
    """One filled rectangle per sample (Albumentations ``CoarseDropout`` with one hole, as in the RTMPose
    recipes): its height and width are fractions in ``size_range`` of the image's, its position uniform."""

    def __init__(self, p: float = 1.0, size_range: tuple[float, float] = (0.2, 0.4), fill: float = 0.0) -> None:
        _check_prob("erase p", p)
        lo, hi = (float(v) for v in size_range)
        if not 0 <= lo <= hi <= 1:
            raise PoseforgeError(f"RandomErase: size_range must satisfy 0 <= low <= high <= 1, got {size_range}")
        self.p, self.size_range, self.fill = float(p), (lo, hi), float(fill)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Fractions ``[n, 4]``: (x0, y0, width, height) relative to the image; width 0 where not applied."""
        u = _rand((n, 5), generator)
        lo, hi = self.size_range
        size = lo + u[:, 2:4] * (hi - lo)
        start = u[:, 0:2] * (1 - size)
        size = size * (u[:, 4:5] < self.p)
        return torch.cat([start, size], 1)

    def apply(self, images: Tensor, boxes: Tensor) -> Tensor:
        h, w = images.shape[-2:]
        boxes = boxes.to(images.device, torch.float64)
        scale = torch.tensor([w, h, w, h], dtype=torch.float64, device=images.device)
        x0, y0, bw, bh = (boxes * scale).round().long().unbind(1)
        xs = torch.arange(w, device=images.device)
        ys = torch.arange(h, device=images.device)
        inside_x = (xs >= x0[:, None]) & (xs < (x0 + bw)[:, None])  # [N, W]
        inside_y = (ys >= y0[:, None]) & (ys < (y0 + bh)[:, None])  # [N, H]
        mask = (inside_y[:, :, None] & inside_x[:, None, :])[:, None]
        return images.masked_fill(mask, self.fill)

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self.apply(images, self.sample(images.shape[0], generator))


# ----------------------------------------------------------------------------------------------------------
# Camera augmentations (sim-to-real): float images [N, 3, H, W], RGB in [0, 255]; each step is off by default


def _grouped_filter(images: Tensor, kernels: Tensor) -> Tensor:
    """Filter each sample of ``images`` [n, 3, H, W] with its own 2-D kernel [n, kh, kw] (odd sizes), one grouped
    convolution for the whole batch; borders reflect like :class:`RandomBlur`."""
    n, c, h, w = images.shape
    kh, kw = kernels.shape[-2:]
    x = F.pad(images.reshape(1, n * c, h, w), (kw // 2, kw // 2, kh // 2, kh // 2), mode="reflect")
    weight = kernels.to(images.dtype)[:, None].repeat_interleave(c, dim=0)  # [n*c, 1, kh, kw]
    return F.conv2d(x, weight, groups=n * c).reshape(n, c, h, w)


def _apply_to(images: Tensor, chosen: Tensor, fn) -> Tensor:
    """``fn`` on the samples ``chosen`` (indices) only; the others are returned unchanged."""
    if chosen.numel() == 0:
        return images
    out = images.clone()
    out[chosen] = fn(images[chosen], chosen)
    return out


class RandomWhiteBalance:
    """Per-channel gains (a white-balance / colour-cast shift): each of R, G, B is multiplied by a factor drawn
    uniformly from ``[1 - strength, 1 + strength]``, with probability ``p`` per sample."""

    def __init__(self, p: float = 0.0, strength: float = 0.15) -> None:
        _check_prob("white balance p", p)
        if not 0 <= strength < 1:
            raise PoseforgeError(f"RandomWhiteBalance: strength must be in [0, 1), got {strength}")
        self.p, self.strength = float(p), float(strength)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Gains ``[n, 3]``; 1 where not applied."""
        u = _rand((n, 4), generator)
        gains = 1.0 + (u[:, :3] * 2 - 1) * self.strength
        return torch.where(u[:, 3:] < self.p, gains, torch.ones_like(gains))

    def apply(self, images: Tensor, gains: Tensor) -> Tensor:
        return (images * gains.to(images.device, images.dtype)[:, :, None, None]).clamp(0, 255)


class RandomGrayscale:
    """Replace the sample by its luma (ITU-R 601 weights) in all three channels, with probability ``p``."""

    def __init__(self, p: float = 0.0) -> None:
        _check_prob("grayscale p", p)
        self.p = float(p)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return _rand((n,), generator) < self.p

    def apply(self, images: Tensor, chosen: Tensor) -> Tensor:
        weights = torch.tensor([0.299, 0.587, 0.114], dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        gray = (images * weights).sum(1, keepdim=True).expand_as(images)
        return torch.where(chosen.to(images.device).view(-1, 1, 1, 1), gray, images)


class RandomGaussianBlur:
    """Gaussian blur (lens defocus) with sigma drawn uniformly from ``sigma`` (pixels), probability ``p``;
    separable, one grouped convolution per axis for all chosen samples."""

    def __init__(self, p: float = 0.0, sigma: tuple[float, float] = (0.5, 2.0)) -> None:
        _check_prob("gaussian blur p", p)
        lo, hi = (float(v) for v in sigma)
        if not 0 < lo <= hi:
            raise PoseforgeError(f"RandomGaussianBlur: sigma must be (low, high) with 0 < low <= high, got {sigma}")
        self.p, self.sigma = float(p), (lo, hi)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Sigma per sample ``[n]``, 0 where not applied."""
        u = _rand((n, 2), generator)
        lo, hi = self.sigma
        return torch.where(u[:, 0] < self.p, lo + u[:, 1] * (hi - lo), 0.0)

    def apply(self, images: Tensor, sigma: Tensor) -> Tensor:
        sigma = sigma.to(images.device)
        radius = int(math.ceil(3 * self.sigma[1]))

        def blur(x: Tensor, chosen: Tensor) -> Tensor:
            s = sigma[chosen].to(x.dtype)
            t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
            k = torch.exp(-0.5 * (t[None] / s[:, None]) ** 2)
            k = k / k.sum(1, keepdim=True)  # [n, K]
            return _grouped_filter(_grouped_filter(x, k[:, None, :]), k[:, :, None])

        return _apply_to(images, torch.nonzero(sigma > 0).flatten(), blur)

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self.apply(images, self.sample(images.shape[0], generator))


class RandomMotionBlur:
    """Linear motion blur: a line kernel of ``length`` pixels (drawn uniformly from the range) at a uniform
    angle, probability ``p``; one grouped convolution for all chosen samples."""

    def __init__(self, p: float = 0.0, length: tuple[float, float] = (3.0, 11.0)) -> None:
        _check_prob("motion blur p", p)
        lo, hi = (float(v) for v in length)
        if not 1 <= lo <= hi:
            raise PoseforgeError(f"RandomMotionBlur: length must be (low, high) with 1 <= low <= high, got {length}")
        self.p, self.length = float(p), (lo, hi)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``[n, 2]``: length in pixels (0 where not applied) and angle in radians."""
        u = _rand((n, 3), generator)
        lo, hi = self.length
        length = torch.where(u[:, 0] < self.p, lo + u[:, 1] * (hi - lo), 0.0)
        return torch.stack([length, u[:, 2] * math.pi], 1)

    def kernels(self, params: Tensor) -> Tensor:
        """Normalized line kernels ``[n, K, K]`` (K odd, fits the longest length)."""
        radius = int(math.ceil(self.length[1] / 2))
        t = torch.arange(-radius, radius + 1, device=params.device, dtype=params.dtype)
        dy, dx = torch.meshgrid(t, t, indexing="ij")
        length, angle = params[:, 0, None, None], params[:, 1, None, None]
        c, s = torch.cos(angle), torch.sin(angle)
        along = (dx * c + dy * s).abs()
        across = (dy * c - dx * s).abs()
        k = (1 - across).clamp(min=0) * (length / 2 + 0.5 - along).clamp(0, 1)
        return k / k.sum((1, 2), keepdim=True).clamp(min=1e-12)

    def apply(self, images: Tensor, params: Tensor) -> Tensor:
        params = params.to(images.device, images.dtype)
        return _apply_to(images, torch.nonzero(params[:, 0] > 0).flatten(),
                         lambda x, chosen: _grouped_filter(x, self.kernels(params[chosen])))

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self.apply(images, self.sample(images.shape[0], generator))


class RandomNoise:
    """Sensor noise: zero-mean Gaussian noise of a standard deviation drawn from ``std`` (0-255 units), per
    pixel and channel, probability ``p``. The noise field is drawn from the generator (on its device)."""

    def __init__(self, p: float = 0.0, std: tuple[float, float] = (2.0, 10.0)) -> None:
        _check_prob("noise p", p)
        lo, hi = (float(v) for v in std)
        if not 0 <= lo <= hi:
            raise PoseforgeError(f"RandomNoise: std must be (low, high) with 0 <= low <= high, got {std}")
        self.p, self.std = float(p), (lo, hi)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Standard deviation per sample ``[n]``, 0 where not applied."""
        u = _rand((n, 2), generator)
        lo, hi = self.std
        return torch.where(u[:, 0] < self.p, lo + u[:, 1] * (hi - lo), 0.0)

    def apply(self, images: Tensor, std: Tensor, generator: torch.Generator | None = None) -> Tensor:
        std = std.to(images.device)

        def noisy(x: Tensor, chosen: Tensor) -> Tensor:
            gen_device = generator.device if generator is not None else torch.device("cpu")
            field = torch.randn(tuple(x.shape), generator=generator, device=gen_device).to(x.device, x.dtype)
            return (x + field * std[chosen].to(x.dtype)[:, None, None, None]).clamp(0, 255)

        return _apply_to(images, torch.nonzero(std > 0).flatten(), noisy)

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self.apply(images, self.sample(images.shape[0], generator), generator)


# The JPEG standard's example quantization tables (ITU-T T.81 Annex K, tables K.1 and K.2), quality 50.
_JPEG_LUMA = (16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
              14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
              49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99)
_JPEG_CHROMA = tuple([17, 18, 24, 47] + [99] * 4 + [18, 21, 26, 66] + [99] * 4 + [24, 26, 56] + [99] * 5
                     + [47, 66] + [99] * 6 + [99] * 32)


def _dct_matrix(dtype: torch.dtype, device: torch.device) -> Tensor:
    """The orthonormal 8-point DCT-II matrix ``D`` (coefficients = D @ block @ D^T)."""
    k = torch.arange(8, dtype=torch.float64)
    d = torch.cos((2 * k[None, :] + 1) * k[:, None] * math.pi / 16) * math.sqrt(2 / 8)
    d[0] = d[0] / math.sqrt(2)
    return d.to(device, dtype)


def jpeg_tables(quality: Tensor) -> tuple[Tensor, Tensor]:
    """Luma and chroma quantization tables ``[n, 8, 8]`` for qualities ``[n]`` (1..100, the IJG scaling)."""
    q = quality.to(torch.float64).clamp(1, 100)
    scale = torch.where(q < 50, 5000 / q, 200 - 2 * q)[:, None, None]
    out = []
    for base in (_JPEG_LUMA, _JPEG_CHROMA):
        t = torch.tensor(base, dtype=torch.float64, device=q.device).view(1, 8, 8)
        out.append(torch.floor((t * scale + 50) / 100).clamp(1, 255))
    return out[0], out[1]


def jpeg_roundtrip(images: Tensor, quality: Tensor) -> Tensor:
    """What baseline JPEG at ``quality`` [n] does to images [n, 3, H, W] (RGB, [0, 255]): YCbCr, 4:2:0 chroma,
    8x8 DCT quantization and back (no entropy coding: it is lossless). Batched, on any device."""
    n, _, h, w = images.shape
    x = images.to(torch.float32)
    ph, pw = (-h) % 16, (-w) % 16
    x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    r, g, b = x.unbind(1)
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = -0.168736 * r - 0.331264 * g + 0.5 * b + 128
    cr = 0.5 * r - 0.418688 * g - 0.081312 * b + 128
    chroma = F.avg_pool2d(torch.stack([cb, cr], 1), 2)
    luma_q, chroma_q = (t.to(x.device, torch.float32) for t in jpeg_tables(quality.to(x.device)))
    d = _dct_matrix(torch.float32, x.device)

    def quantize(plane: Tensor, table: Tensor) -> Tensor:  # plane [n, c, H, W], table [n, 8, 8]
        nn_, c, hh, ww = plane.shape
        blocks = (plane - 128).reshape(nn_, c, hh // 8, 8, ww // 8, 8).transpose(3, 4)  # [n,c,h8,w8,8,8]
        coef = d @ blocks @ d.t()
        tq = table[:, None, None, None]
        coef = torch.round(coef / tq) * tq
        back = d.t() @ coef @ d
        return back.transpose(3, 4).reshape(nn_, c, hh, ww) + 128

    y = quantize(y[:, None], luma_q)[:, 0]
    chroma = quantize(chroma, chroma_q)
    chroma = chroma.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    cb, cr = chroma[:, 0] - 128, chroma[:, 1] - 128
    rgb = torch.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], 1)
    return rgb[:, :, :h, :w].clamp(0, 255).to(images.dtype)


class RandomJPEG:
    """JPEG re-compression artefacts (:func:`jpeg_roundtrip`) at a quality drawn uniformly from ``quality``,
    probability ``p``."""

    def __init__(self, p: float = 0.0, quality: tuple[int, int] = (30, 90)) -> None:
        _check_prob("jpeg p", p)
        lo, hi = (int(v) for v in quality)
        if not 1 <= lo <= hi <= 100:
            raise PoseforgeError(f"RandomJPEG: quality must be (low, high) with 1 <= low <= high <= 100, got {quality}")
        self.p, self.quality = float(p), (lo, hi)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Quality per sample ``[n]``, 0 where not applied."""
        u = _rand((n, 2), generator)
        lo, hi = self.quality
        q = torch.floor(lo + u[:, 1] * (hi - lo + 1)).clamp(max=hi)
        return torch.where(u[:, 0] < self.p, q, 0.0)

    def apply(self, images: Tensor, quality: Tensor) -> Tensor:
        quality = quality.to(images.device)
        return _apply_to(images, torch.nonzero(quality > 0).flatten(), lambda x, chosen: jpeg_roundtrip(x, quality[chosen]))

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self.apply(images, self.sample(images.shape[0], generator))


# ----------------------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation of the top-down pipeline. The defaults are mmpose's (the ViTPose recipe:
    flip, half-body, shift/scale/rotate, no color); :meth:`rtmpose` adds the RTMPose color recipe.
    A probability of 0 (or strengths of 0) switches a step off. The camera steps (``white_balance``,
    ``grayscale``, ``gaussian_blur``, ``motion_blur``, ``noise``, ``jpeg``) are off by default (:meth:`camera_sim`
    turns them on)."""

    flip_prob: float = 0.5
    half_body_prob: float = 0.3
    half_body_min_total_keypoints: int = 9
    half_body_min_upper_keypoints: int = 2
    half_body_min_lower_keypoints: int = 3
    half_body_padding: float = 1.5
    half_body_upper_prioritized_prob: float = 0.7
    shift_factor: float = 0.16
    shift_prob: float = 0.3
    scale_factor: tuple[float, float] = (0.5, 1.5)
    scale_prob: float = 1.0
    rotate_factor: float = 80.0
    rotate_prob: float = 0.6
    hsv_prob: float = 0.0
    hue_delta: int = 5
    saturation_delta: int = 30
    value_delta: int = 30
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    blur_prob: float = 0.0
    erase_prob: float = 0.0
    erase_size: tuple[float, float] = (0.2, 0.4)
    white_balance_prob: float = 0.0
    white_balance_strength: float = 0.15
    grayscale_prob: float = 0.0
    gaussian_blur_prob: float = 0.0
    gaussian_blur_sigma: tuple[float, float] = (0.5, 2.0)
    motion_blur_prob: float = 0.0
    motion_blur_length: tuple[float, float] = (3.0, 11.0)
    noise_prob: float = 0.0
    noise_std: tuple[float, float] = (2.0, 10.0)
    jpeg_prob: float = 0.0
    jpeg_quality: tuple[int, int] = (30, 90)

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name.endswith("_prob"):
                _check_prob(f"AugmentConfig.{f.name}", getattr(self, f.name))

    @classmethod
    def off(cls) -> "AugmentConfig":
        """No augmentation at all (evaluation)."""
        return cls(flip_prob=0.0, half_body_prob=0.0, shift_prob=0.0, scale_prob=0.0, rotate_prob=0.0)

    @classmethod
    def vitpose(cls) -> "AugmentConfig":
        """ViTPose / mmpose top-down heatmap recipe (the defaults)."""
        return cls()

    @classmethod
    def rtmpose(cls, stage: int = 1) -> "AugmentConfig":
        """RTMPose recipe: stage 1 (most epochs) or stage 2 (the final, milder epochs)."""
        if stage == 1:
            return cls(scale_factor=(0.6, 1.4), rotate_factor=80.0, hsv_prob=1.0, blur_prob=0.1, erase_prob=1.0)
        if stage == 2:
            return cls(shift_factor=0.0, scale_factor=(0.75, 1.25), rotate_factor=60.0, hsv_prob=1.0,
                       blur_prob=0.1, erase_prob=0.5)
        raise PoseforgeError(f"AugmentConfig.rtmpose: stage must be 1 or 2, got {stage}")

    @classmethod
    def camera_sim(cls, base: "AugmentConfig | None" = None) -> "AugmentConfig":
        """``base`` (default: the defaults) plus issue 31's camera steps: white balance and grayscale, Gaussian
        and motion blur, sensor noise and JPEG re-compression, each on a part of the samples, and colour
        jitter where ``base`` has none."""
        import dataclasses

        base = base or cls()
        extra = dict(white_balance_prob=0.5, grayscale_prob=0.05, gaussian_blur_prob=0.2, motion_blur_prob=0.15,
                     noise_prob=0.4, jpeg_prob=0.5)
        if not base.photometric:
            extra.update(hsv_prob=1.0, brightness=0.2, contrast=0.2)
        return dataclasses.replace(base, **extra)

    @property
    def camera(self) -> bool:
        """Whether any camera step (white balance, grayscale, Gaussian/motion blur, noise, JPEG) is on."""
        return max(self.white_balance_prob, self.grayscale_prob, self.gaussian_blur_prob, self.motion_blur_prob,
                   self.noise_prob, self.jpeg_prob) > 0

    @property
    def photometric(self) -> bool:
        """Whether any pixel-level step is on."""
        return self.hsv_prob > 0 or self.blur_prob > 0 or self.erase_prob > 0 or max(
            self.brightness, self.contrast, self.saturation) > 0 or self.camera


class Photometric:
    """The pixel-level steps of an :class:`AugmentConfig` (HSV, colour jitter, white balance, grayscale, box
    blur, Gaussian blur, motion blur, noise, JPEG, erase), in that order, on float images ``[N, 3, H, W]`` in
    [0, 255]. Every step's parameters are drawn in a fixed order whether or not the step is on, so turning
    one step on does not change the others' draws; the camera steps' parameters are drawn after the others,
    and only when one of them is on (so configs without them draw exactly what they drew before)."""

    def __init__(self, config: AugmentConfig) -> None:
        self.config = config
        self.hsv = RandomHSV(config.hue_delta, config.saturation_delta, config.value_delta, config.hsv_prob)
        self.color = ColorJitter(config.brightness, config.contrast, config.saturation)
        self.blur = RandomBlur(config.blur_prob)
        self.erase = RandomErase(config.erase_prob, config.erase_size)
        self.white_balance = RandomWhiteBalance(config.white_balance_prob, config.white_balance_strength)
        self.grayscale = RandomGrayscale(config.grayscale_prob)
        self.gaussian_blur = RandomGaussianBlur(config.gaussian_blur_prob, config.gaussian_blur_sigma)
        self.motion_blur = RandomMotionBlur(config.motion_blur_prob, config.motion_blur_length)
        self.noise = RandomNoise(config.noise_prob, config.noise_std)
        self.jpeg = RandomJPEG(config.jpeg_prob, config.jpeg_quality)

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        a = self.config
        if not a.photometric:
            return images
        n = images.shape[0]
        hsv, color, blur, erase = (self.hsv.sample(n, generator), self.color.sample(n, generator),
                                   self.blur.sample(n, generator), self.erase.sample(n, generator))
        if a.camera:
            wb, gray, gauss, motion, noise, jpeg = (
                self.white_balance.sample(n, generator), self.grayscale.sample(n, generator),
                self.gaussian_blur.sample(n, generator), self.motion_blur.sample(n, generator),
                self.noise.sample(n, generator), self.jpeg.sample(n, generator))
        if a.hsv_prob > 0:
            images = self.hsv.apply(images, hsv)
        if self.color.active:
            images = self.color.apply(images, color)
        if a.white_balance_prob > 0:
            images = self.white_balance.apply(images, wb)
        if a.grayscale_prob > 0:
            images = self.grayscale.apply(images, gray)
        if a.blur_prob > 0:
            images = self.blur.apply(images, blur)
        if a.gaussian_blur_prob > 0:
            images = self.gaussian_blur.apply(images, gauss)
        if a.motion_blur_prob > 0:
            images = self.motion_blur.apply(images, motion)
        if a.noise_prob > 0:
            images = self.noise.apply(images, noise, generator)  # the noise field: the generator's last draws
        if a.jpeg_prob > 0:
            images = self.jpeg.apply(images, jpeg)
        if a.erase_prob > 0:
            images = self.erase.apply(images, erase)
        return images


def _check_prob(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and 0.0 <= float(value) <= 1.0):
        raise PoseforgeError(f"{name} must be a probability in [0, 1], got {value!r}")
