"""poseforge: human-centric vision in one PyTorch toolkit."""
from __future__ import annotations

__version__ = "0.1.0"

from .errors import DataError, PoseforgeError
from .keypoints import KeypointSet, get_keypoint_set, list_keypoint_sets

__all__ = ["__version__", "DataError", "PoseforgeError", "KeypointSet", "get_keypoint_set", "list_keypoint_sets",
           "create_model", "load_model", "list_models", "Predictor"]

# Imported on first use so that `import poseforge` (and the CLI) stays light: models pull in torch.
_LAZY = {"create_model": "poseforge.models", "load_model": "poseforge.models", "list_models": "poseforge.models",
         "Predictor": "poseforge.inference.predictor"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'poseforge' has no attribute '{name}'")
