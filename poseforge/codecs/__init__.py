"""Target codecs: keypoints <-> training targets / head outputs, batched torch on the input's device.

``create_codec(name, **kwargs)`` builds one by registry name:

- ``"msra"``  :class:`MSRAHeatmap` — Gaussian heatmaps, argmax + quarter-pixel shift
- ``"dark"``  :class:`MSRAHeatmap` with ``unbiased=True`` — sub-pixel targets, DARK decoding
- ``"udp"``   :class:`UDPHeatmap` — unbiased data processing heatmaps and refinement
- ``"simcc"`` :class:`SimCC` — 1-D classification labels (RTMPose)
- ``"dense"`` :class:`DenseCodec` — part segmentation, relative depth, surface normals (Sapiens)
- ``"associative-embedding"`` :class:`AssociativeEmbedding` — bottom-up heatmaps + tags, grouped by tag (LitePose)

Every codec has ``encode(sample)`` (targets of a batch of samples), ``decode_predictions(outputs)``
(named head outputs -> :class:`~poseforge.outputs.Predictions`), ``flip_back(outputs_of_flipped_input,
flip_index)`` and ``config()`` (``create_codec(**codec.config())`` rebuilds it). The single-instance
keypoint codecs also take ``encode(keypoints[B,K,2], visible[B,K])`` and ``decode(outputs) -> (keypoints, scores)``.
"""
from .associative_embedding import AssociativeEmbedding
from .base import Codec, KeypointCodec, create_codec, list_codecs
from .dense import DenseCodec
from .heatmap import (MSRAHeatmap, UDPHeatmap, blur_heatmaps, blur_kernel_size_for_sigma, flip_heatmaps,
                      gaussian_kernel1d)
from .simcc import SimCC, flip_vectors

__all__ = [
    "Codec", "KeypointCodec", "DenseCodec", "AssociativeEmbedding", "MSRAHeatmap", "UDPHeatmap", "SimCC",
    "create_codec", "list_codecs",
    "flip_heatmaps", "flip_vectors", "blur_heatmaps", "blur_kernel_size_for_sigma", "gaussian_kernel1d",
]
