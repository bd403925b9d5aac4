"""Target codecs: keypoints <-> training targets / head outputs, batched torch on the input's device.

``create_codec(name, **kwargs)`` builds one by registry name:

- ``"msra"``  :class:`MSRAHeatmap` — Gaussian heatmaps, argmax + quarter-pixel shift
- ``"dark"``  :class:`MSRAHeatmap` with ``unbiased=True`` — sub-pixel targets, DARK decoding
- ``"udp"``   :class:`UDPHeatmap` — unbiased data processing heatmaps and refinement
- ``"simcc"`` :class:`SimCC` — 1-D classification labels (RTMPose)

Every codec has ``encode(keypoints[B,K,2], visible[B,K])``, ``decode(outputs)``,
``flip_back(outputs_of_flipped_input, flip_index)`` and ``config()``
(``create_codec(**codec.config())`` rebuilds it).
"""
from .base import Codec, create_codec, list_codecs
from .heatmap import (MSRAHeatmap, UDPHeatmap, blur_heatmaps, blur_kernel_size_for_sigma, flip_heatmaps,
                      gaussian_kernel1d)
from .simcc import SimCC, flip_vectors

__all__ = [
    "Codec", "MSRAHeatmap", "UDPHeatmap", "SimCC", "create_codec", "list_codecs",
    "flip_heatmaps", "flip_vectors", "blur_heatmaps", "blur_kernel_size_for_sigma", "gaussian_kernel1d",
]
