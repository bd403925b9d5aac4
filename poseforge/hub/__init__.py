"""Weights by name: ``arch.tag`` entries (as timm's ``pretrained_cfg``) that resolve to a model folder or file.

A name is the architecture (a zoo entry or family) and a tag for one set of weights: ``vitpose-tiny.synth``
(trained on synthetic people, shipped inside the package), ``vitpose-b.coco`` (the official ViTPose-B
from the Hugging Face hub), ``rtmpose-m.body7`` (an official RTMPose release). An architecture alone
(``vitpose-b``) means its default weights, and aliases such as ``"bundled"`` or ``"rtmdet-nano"`` are kept
for the names users type. :func:`resolve_weights` turns a name into the folder holding
``model.safetensors`` + ``config.json`` (or, for an ONNX detector, the ``.onnx`` file);
``poseforge.load_model``, ``create_model(name, pretrained=True)``, the predictor's detector and every
command's ``--model`` go through it, so a name means the same everywhere.

Released weights are downloaded once into the cache (:mod:`poseforge.hub.cache`: ``POSEFORGE_HOME``,
offline mode, mirrors, checksums), converted by the entry's ``converter`` into a poseforge model folder,
and stored with a ``provenance.json`` (where every file came from, its sha256, the licence).
"""
from __future__ import annotations

import dataclasses
import datetime
import importlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from ..assets import asset_path
from ..errors import PoseforgeError
from ..io import sha256_file
from ..registry import WEIGHTS
from .cache import RemoteFile, cache_home, fetch_file, is_cached, offline, placement_path

__all__ = ["WeightsSpec", "RemoteFile", "register_weights", "resolve_weights", "weights_spec", "list_weights",
           "is_available", "cache_home", "offline", "placement_path", "ALIASES", "PROVENANCE_NAME"]

PROVENANCE_NAME = "provenance.json"


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
        files: released files to download (:class:`RemoteFile`), for weights not shipped in the package.
        converter: ``"module:function"`` that turns the downloaded files into a poseforge model folder,
            called as ``fn(paths, out_dir, **convert_options)``; ``None``: the single file is used as is
            (an ONNX detector).
        convert_options: keyword arguments for the converter (``{"format": "hf"}``, ``input_size`` ...).
        default: the weights an architecture name alone means (``vitpose-b`` -> ``vitpose-b.coco``).
    """

    name: str
    kind: str
    asset: str | None = None
    description: str = ""
    license: str = "Apache-2.0"
    source: str = ""
    files: tuple[RemoteFile, ...] = ()
    converter: str | None = None
    convert_options: dict = dataclasses.field(default_factory=dict, hash=False, compare=False)
    default: bool = False

    @property
    def arch(self) -> str:
        return self.name.rsplit(".", 1)[0]  # the last dot: architectures may hold one (sapiens-0.3b-pose)

    @property
    def tag(self) -> str:
        return self.name.rsplit(".", 1)[1] if "." in self.name else ""


# Short names kept for the names users type: ``--model bundled``, ``--detector rtmdet-nano``.
ALIASES: dict[tuple[str, str], str] = {("pose", "bundled"): "vitpose-tiny.synth",
                                       ("pose", "rtmpose-t-synth"): "rtmpose-t.synth",  # the recipe's name
                                       ("detector", "bundled"): "person-detector.synth",
                                       ("detector", "rtmdet-nano"): "rtmdet-nano.person"}


def register_weights(spec: WeightsSpec) -> WeightsSpec:
    """Add an entry (third-party packages may register their own releases and converters)."""
    if "." not in spec.name:
        raise PoseforgeError(f"weights name '{spec.name}': expected 'arch.tag'")
    if spec.asset is None and not spec.files:
        raise PoseforgeError(f"weights '{spec.name}': give a bundled asset or the released files")
    if spec.converter is None and len(spec.files) > 1:
        raise PoseforgeError(f"weights '{spec.name}': several files need a converter")
    WEIGHTS.register(spec.name, spec)
    return spec


def weights_spec(name: str, kind: str = "pose") -> WeightsSpec | None:
    """The entry a name refers to: an ``arch.tag``, an alias of ``kind``, or an architecture with default
    weights of ``kind`` (unless a file or folder of that name exists); ``None`` when it is none of these."""
    text = str(name)
    text = ALIASES.get((kind, text.lower()), text)
    if text in WEIGHTS:
        return WEIGHTS.get(text)
    if os.sep not in text and not Path(text).exists():  # (architectures may hold a dot: sapiens-0.3b-pose)
        defaults = [s for s in (WEIGHTS.get(n) for n in WEIGHTS.names(f"{text}.*")) if s.default and s.kind == kind]
        if defaults:
            return defaults[0]
    return None


def is_available(name: str, kind: str = "pose") -> bool:
    """Whether the weights ``name`` names can be used without a download (shipped, converted or cached)."""
    spec = weights_spec(name, kind)
    if spec is None:
        return False
    if spec.asset is not None:
        return True
    if spec.converter is not None and (_converted_folder(spec) / "model.safetensors").is_file():
        return True
    return all(is_cached(f) for f in spec.files)


def resolve_weights(name: str, kind: str = "pose") -> Path | None:
    """The folder (or, for a single-file detector, the file) of the weights ``name`` names, downloaded and
    converted on first use; ``None`` when ``name`` is not a registered name, so a caller can treat it as a
    path. A name of the other kind is a one-line error."""
    spec = weights_spec(name, kind)
    if spec is None:
        return None
    if spec.kind != kind:
        raise PoseforgeError(f"'{name}' names {spec.kind} weights, not a {kind} model")
    if spec.asset is not None:
        return asset_path(spec.asset)
    if spec.converter is None:
        return fetch_file(spec.files[0], spec.name)[0]
    folder = _converted_folder(spec)
    if (folder / "model.safetensors").is_file() and (folder / PROVENANCE_NAME).is_file():
        return folder
    return _convert_release(spec, folder)


def _converted_folder(spec: WeightsSpec) -> Path:
    return cache_home() / "models" / spec.name


def _load_converter(path: str) -> Callable[..., Any]:
    module, _, attr = path.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise PoseforgeError(f"weights converter '{path}' is not importable ({e})") from None


def _convert_release(spec: WeightsSpec, folder: Path) -> Path:
    """Download the release files, convert them into ``folder`` (staged, renamed once) with provenance."""
    fetched = []
    for remote in spec.files:
        try:
            fetched.append(fetch_file(remote, spec.name))
        except PoseforgeError as e:
            missing = [f.filename for f in spec.files if f is not remote and not is_cached(f)]
            if not missing:
                raise
            raise PoseforgeError(f"{e} (the release also needs {', '.join(missing)} beside it)") from None
    convert = _load_converter(spec.converter)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{spec.name}.", dir=folder.parent))
    try:
        convert([p for p, _ in fetched], staging, **spec.convert_options)
        if not (staging / "model.safetensors").is_file():
            raise PoseforgeError(f"{spec.name}: converter {spec.converter} wrote no model.safetensors")
        provenance = {
            "name": spec.name, "description": spec.description, "license": spec.license, "source": spec.source,
            "files": [{"file": f.filename, "url": f.source_url, "sha256": digest, "published_sha256": f.sha256}
                      for f, (_, digest) in zip(spec.files, fetched)],
            "converter": spec.converter, "convert_options": spec.convert_options,
            "model_sha256": sha256_file(staging / "model.safetensors"),
            "converted_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        (staging / PROVENANCE_NAME).write_text(json.dumps(provenance, indent=2, default=str) + "\n")
        if folder.exists():  # an unfinished earlier conversion (no provenance): replaced
            shutil.rmtree(folder)
        os.replace(staging, folder)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return folder


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


from . import releases  # noqa: E402,F401  (the official releases register themselves)
