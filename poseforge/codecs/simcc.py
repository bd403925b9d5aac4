"""SimCC: keypoints as two 1-D classifications (x and y bins at ``split_ratio`` bins per pixel).

Semantics follow mmpose 1.3.2 ``SimCCLabel(smoothing_type='gaussian')``: labels are Gaussians
centred at ``round(x * split_ratio)`` over the whole axis, optionally divided by
``sigma * sqrt(2 pi)``; decode takes each axis' argmax and scores a keypoint with the smaller
of the two axis maxima.

With ``decode_window`` set, decode refines each argmax to the mean of the predicted distribution
(``softmax(decode_beta x logits)``, the distribution the KL loss trains) over a window of
``decode_window`` label sigmas either side of it: the mean of a broad peak is a steadier estimate than
its top bin, and the window keeps a second mode (the other wrist, a flipped limb) out of it.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import PoseforgeError
from ..registry import CODECS
from ..outputs import SimCCLogits
from .base import (KeypointCodec, as_tensor, check_flip_index, check_keypoints, check_positive, check_size, rows_argmax,
                   target_weights)

__all__ = ["SimCC", "flip_vectors"]


def flip_vectors(x_vectors: Tensor | np.ndarray, y_vectors: Tensor | np.ndarray,
                 flip_index: Sequence[int] | np.ndarray | Tensor) -> tuple[Tensor, Tensor]:
    """Align SimCC outputs of a horizontally flipped input with the original input: swap
    left/right keypoints and reverse the x bins; y is only swapped (mmpose ``flip_vectors``)."""
    x = as_tensor(x_vectors, "x_vectors")
    y = as_tensor(y_vectors, "y_vectors", device=x.device)
    if x.ndim != 3 or y.ndim != 3 or x.shape[:2] != y.shape[:2]:
        raise PoseforgeError(f"SimCC vectors must be [B, K, Wx] and [B, K, Hy] with equal B, K; got {list(x.shape)} and {list(y.shape)}")
    index = check_flip_index(flip_index, x.shape[1], x.device)
    return x.index_select(1, index).flip(-1), y.index_select(1, index)


class SimCC(KeypointCodec):
    """SimCC labels (RTMPose/DWPose heads).

    Args:
        input_size: model input (w, h) in pixels.
        sigma: Gaussian sigma in bins, one float or (sigma_x, sigma_y); RTMPose uses (4.9, 5.66)
            at 192x256 input.
        split_ratio: bins per input pixel (``simcc_split_ratio``); there are round(w * r) x bins.
        normalize: divide labels by ``sigma * sqrt(2 pi)`` (mmpose's default True; RTMPose
            configs set False).
        decode_window: half-width of the refinement window in label sigmas (0: plain argmax, as
            mmpose; :func:`~poseforge.models.heads.simcc.simcc_codec` sets 6).
        decode_beta: the softmax temperature of the refinement (the KL loss's ``beta``).
    """

    name = "simcc"
    output_type = SimCCLogits

    def __init__(self, input_size: Sequence[int], sigma: float | Sequence[float] = 6.0,
                 split_ratio: float = 2.0, normalize: bool = True, decode_window: float = 0.0,
                 decode_beta: float = 10.0) -> None:
        self.input_size = check_size(input_size, "input_size")
        if isinstance(sigma, (int, float, np.integer, np.floating)) and not isinstance(sigma, bool):
            sx = sy = check_positive(sigma, "sigma")
        else:
            try:
                sx, sy = (check_positive(s, "sigma") for s in sigma)  # type: ignore[union-attr]
            except (TypeError, ValueError):
                raise PoseforgeError(f"sigma must be a number or a (sigma_x, sigma_y) pair, got {sigma!r}") from None
        self.sigma = (sx, sy)
        self.split_ratio = check_positive(split_ratio, "split_ratio")
        self.normalize = bool(normalize)
        self.decode_window = 0.0 if decode_window == 0 else check_positive(decode_window, "decode_window")
        self.decode_beta = check_positive(decode_beta, "decode_beta")
        # np.around like mmpose (round half to even)
        self.num_bins = (int(np.around(self.input_size[0] * self.split_ratio)),
                         int(np.around(self.input_size[1] * self.split_ratio)))

    def encode_keypoints(self, keypoints: Tensor | np.ndarray, visible: Tensor | np.ndarray) -> dict[str, Tensor]:
        """``{"x_labels": [B,K,Wx], "y_labels": [B,K,Hy], "target_weights": [B,K]}`` (float32).

        A keypoint whose 3-sigma range misses the bins entirely gets weight 0 and zero labels.
        """
        kp, vis = check_keypoints(keypoints, visible)
        finite = kp.isfinite().all(-1)
        mu = torch.round(torch.where(finite[..., None], kp, torch.zeros_like(kp)) * self.split_ratio)
        radius = kp.new_tensor(self.sigma) * 3
        bins = kp.new_tensor(self.num_bins)
        touches = ~((mu - radius >= bins) | (mu + radius + 1 < 0)).any(-1)
        weights = target_weights(vis, touches & finite)
        draw = (weights > 0).to(kp.dtype)[..., None]
        labels = []
        for axis, (n, s) in enumerate(zip(self.num_bins, self.sigma)):
            d = torch.arange(n, dtype=kp.dtype, device=kp.device) - mu[..., axis, None]
            g = torch.exp(-(d * d) / (2 * s * s)) * draw
            if self.normalize:
                g = g / (s * math.sqrt(2 * math.pi))
            labels.append(g.float())
        return {"x_labels": labels[0], "y_labels": labels[1], "target_weights": weights}

    def _check_outputs(self, outputs: Any) -> tuple[Tensor, Tensor]:
        if isinstance(outputs, SimCCLogits):
            outputs = (outputs.simcc_x, outputs.simcc_y)
        if not isinstance(outputs, (tuple, list)) or len(outputs) != 2:
            raise PoseforgeError("simcc codec: outputs must be SimCCLogits or a pair (x_logits [B,K,Wx], y_logits [B,K,Hy])")
        x = as_tensor(outputs[0], "x_logits")
        y = as_tensor(outputs[1], "y_logits", device=x.device)
        Wx, Hy = self.num_bins
        if x.ndim != 3 or y.ndim != 3 or x.shape[:2] != y.shape[:2] or x.shape[-1] != Wx or y.shape[-1] != Hy:
            raise PoseforgeError(f"simcc codec: expected x [B, K, {Wx}] and y [B, K, {Hy}], got {list(x.shape)} and {list(y.shape)}")
        return x.float(), y.float()

    def decode(self, outputs: SimCCLogits | tuple[Tensor, Tensor] | Sequence[Any]) -> tuple[Tensor, Tensor]:
        """Keypoints [B,K,2] in input pixels (bin / split_ratio, refined within ``decode_window``;
        -1/r where the score is <= 0) and scores [B,K] = min(max x, max y), as mmpose's
        ``get_simcc_maximum``."""
        x, y = self._check_outputs(outputs)
        B, K = x.shape[:2]
        if B * K == 0:
            return x.new_zeros((B, K, 2)), x.new_zeros((B, K))
        max_x, loc_x = rows_argmax(x.reshape(B * K, -1))
        max_y, loc_y = rows_argmax(y.reshape(B * K, -1))
        scores = torch.minimum(max_x, max_y).view(B, K)
        loc_x, loc_y = loc_x.view(B, K), loc_y.view(B, K)
        if self.decode_window > 0:
            locs = torch.stack((self._window_mean(x, loc_x, self.sigma[0]),
                                self._window_mean(y, loc_y, self.sigma[1])), dim=-1)
        else:
            locs = torch.stack((loc_x, loc_y), dim=-1).float()
        locs = torch.where((scores > 0)[..., None], locs, -1.0)
        return locs / self.split_ratio, scores

    def _window_mean(self, logits: Tensor, peak: Tensor, sigma: float) -> Tensor:
        """Mean bin of ``softmax(beta x logits)`` over ``peak +- window`` (bins past the axis ends left out)."""
        radius = max(1, int(math.ceil(self.decode_window * sigma)))
        offsets = torch.arange(-radius, radius + 1, device=logits.device)
        bins = peak[..., None] + offsets
        inside = (bins >= 0) & (bins < logits.shape[-1])
        bins = bins.clamp(0, logits.shape[-1] - 1)
        window = (self.decode_beta * logits.gather(-1, bins)).masked_fill(~inside, float("-inf"))
        return (torch.softmax(window, dim=-1) * bins.float()).sum(-1)

    def flip_back(self, outputs: SimCCLogits | tuple[Tensor, Tensor] | Sequence[Any],
                  flip_index: Sequence[int] | np.ndarray | Tensor) -> SimCCLogits | tuple[Tensor, Tensor]:
        """SimCC outputs of the flipped input aligned with the original (swap pairs, reverse x); the same
        kind as given. The keypoint maps of :class:`~poseforge.outputs.SimCCLogits` are not carried over."""
        x, y = flip_vectors(*self._check_outputs(outputs), flip_index)
        return SimCCLogits(x, y) if isinstance(outputs, SimCCLogits) else (x, y)

    def config(self) -> dict[str, Any]:
        refine = {"decode_window": self.decode_window, "decode_beta": self.decode_beta} if self.decode_window else {}
        return {"name": self.name, "input_size": list(self.input_size), "sigma": list(self.sigma),
                "split_ratio": self.split_ratio, "normalize": self.normalize, **refine}


CODECS.register("simcc", SimCC)
