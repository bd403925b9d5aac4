"""Weights by name: ``arch.tag`` entries (as timm's ``pretrained_cfg``) that resolve to a model folder.

A name is the architecture (a zoo entry or family) and a tag for one set of weights, e.g.
``vitpose-tiny.synth`` (the small ViTPose trained on synthetic people that ships inside the package).
:func:`resolve_weights` turns a name, or an alias such as ``"bundled"``, into the folder holding
``model.safetensors`` + ``config.json``; ``poseforge.load_model``, ``create_model(name, pretrained=True)``,
the predictor's detector and every command's ``--model`` go through it, so a name means the same
everywhere. Entries record where the weights come from and under which licence.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from .assets import asset_path
from .errors import PoseforgeError
from .registry import WEIGHTS

__all__ = ["WeightsSpec", "register_weights", "resolve_weights", "weights_spec", "list_weights", "ALIASES"]


@dataclasses.dataclass(frozen=True)
class WeightsSpec:
    """One named set of weights.

    Attributes:
        name: ``arch.tag`` (``"vitpose-tiny.synth"``).
        kind: ``"pose"`` (any estimator ``load_model`` builds) or ``"detector"`` (a person detector).
        asset: folder under ``poseforge/assets`` for weights shipped inside the package.
        description: what the weights are and how well they do (with the figure's source).
        license: the weights' licence.
        source: where they come from (the command that trained them, or the upstream release).
    """

    name: str
    kind: str
    asset: str | None = None
    description: str = ""
    license: str = "Apache-2.0"
    source: str = ""

    @property
    def arch(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def tag(self) -> str:
        return self.name.split(".", 1)[1] if "." in self.name else ""


# Short names kept for the commands users already type: ``--model bundled``, ``detector="bundled"``.
ALIASES: dict[tuple[str, str], str] = {("pose", "bundled"): "vitpose-tiny.synth",
                                       ("pose", "rtmpose-t-synth"): "rtmpose-t.synth",  # the recipe's name
                                       ("detector", "bundled"): "person-detector.synth"}


def register_weights(spec: WeightsSpec) -> WeightsSpec:
    if "." not in spec.name:
        raise PoseforgeError(f"weights name '{spec.name}': expected 'arch.tag'")
    WEIGHTS.register(spec.name, spec)
    return spec


def weights_spec(name: str, kind: str = "pose") -> WeightsSpec | None:
    """The entry a name (or an alias of ``kind``) refers to; ``None`` when it is not a weights name."""
    name = ALIASES.get((kind, str(name).lower()), str(name))
    return WEIGHTS.get(name) if name in WEIGHTS else None


def resolve_weights(name: str, kind: str = "pose") -> Path | None:
    """The folder of the weights ``name`` names (``None`` when ``name`` is not a registered name, so a
    caller can treat it as a path). A name of the other kind is a one-line error."""
    spec = weights_spec(name, kind)
    if spec is None:
        return None
    if spec.kind != kind:
        raise PoseforgeError(f"'{name}' names {spec.kind} weights, not a {kind} model")
    if spec.asset is None:
        raise PoseforgeError(f"'{spec.name}': no local copy of these weights")
    return asset_path(spec.asset)


def list_weights(pattern: str = "*", kind: str | None = None) -> list[str]:
    """Registered weights names matching a shell pattern (optionally of one kind)."""
    return [n for n in WEIGHTS.names(pattern) if kind is None or WEIGHTS.get(n).kind == kind]


register_weights(WeightsSpec(
    "vitpose-tiny.synth", "pose", asset="pose",
    description="small ViTPose (conv stem, SimCC head, 192x256) trained 54 CPU minutes on synthetic people; "
                "held-out synthetic AP 0.714 (benchmarks/RESULTS.md)",
    source="poseforge train --config synth-cpu (poseforge/assets/pose/training.json)"))
register_weights(WeightsSpec(
    "rtmpose-t.synth", "pose", asset="rtmpose_t",
    description="RTMPose-t (CSPNeXt-t + RTMCC head, 192x256) trained 53 CPU minutes from scratch on synthetic people; "
                "held-out synthetic AP 0.440 (benchmarks/RESULTS.md); alias rtmpose-t-synth",
    source="poseforge train --config rtmpose-t-synth (poseforge/assets/rtmpose_t/training.json)"))
register_weights(WeightsSpec(
    "person-detector.synth", "detector", asset="detector",
    description="poseforge's CenterNet-style person detector trained on synthetic scenes; held-out box AP 0.456",
    source="python -m poseforge.train.detector (poseforge/assets/detector/training.json)"))
