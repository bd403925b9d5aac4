"""poseforge: human-centric vision in one PyTorch toolkit."""
from __future__ import annotations

__version__ = "0.1.0"

from .errors import DataError, PoseforgeError
from .keypoints import KeypointSet, get_keypoint_set, list_keypoint_sets

__all__ = ["__version__", "DataError", "PoseforgeError", "KeypointSet", "get_keypoint_set", "list_keypoint_sets"]
