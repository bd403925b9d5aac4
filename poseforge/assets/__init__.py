"""Weights shipped inside the package (fp16 safetensors + config.json folders).

* ``pose/`` - the bundled ViTPose (``poseforge.load_model("bundled")``), trained on synthetic people;
* ``rtmpose_t/`` - RTMPose-t trained on synthetic people (``poseforge.load_model("rtmpose-t.synth")``);
* ``detector/`` - the bundled person detector (``BuiltinDetector("bundled")``), trained on synthetic people.

Each folder's ``training.json`` records the command that trained the weights, its settings and the
held-out validation scores.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import PoseforgeError

__all__ = ["ASSETS_DIR", "asset_path"]

ASSETS_DIR = Path(__file__).resolve().parent
_NAMES = ("pose", "rtmpose_t", "detector")


def asset_path(name: str) -> Path:
    """The folder of a bundled model (``"pose"``, ``"rtmpose_t"`` or ``"detector"``); a clear error when it is missing."""
    if name not in _NAMES:
        raise PoseforgeError(f"unknown bundled asset '{name}'; known: {', '.join(_NAMES)}")
    folder = ASSETS_DIR / name
    if not (folder / "model.safetensors").is_file():
        raise PoseforgeError(f"the bundled {name} weights are missing from this installation ({folder}); "
                             "reinstall poseforge or pass a model path")
    return folder
