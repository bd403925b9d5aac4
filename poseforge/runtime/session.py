"""Exported pose models on onnxruntime: the file's metadata, its session and its decoded predictions.

``poseforge export`` writes one input ``images`` (float32 ``[N, 3, h, w]`` RGB, ``(pixel - mean) / std``) and
a JSON description under the ONNX ``metadata_props`` key ``poseforge`` (:class:`ModelMeta`): the kind
(``topdown`` / ``bottomup`` / ``dense``), input size, normalization, whether the graph decodes
(``keypoints`` + ``scores``) or gives raw head outputs (``heatmaps``, ``simcc_x`` + ``simcc_y``, ``tags`` ...),
the codec settings, the keypoint set and the crop settings. Files without it (rtmlib's RTMPose exports:
input ``input``, outputs ``simcc_x`` / ``simcc_y``) load with the missing facts given as options.

onnxruntime is imported when a session is made, so the rest of :mod:`poseforge.runtime` works without it.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import PoseforgeError
from ._checks import Fields, check_codec, first_line, short

__all__ = ["ModelMeta", "KeypointInfo", "PoseModel", "import_onnxruntime", "create_session", "METADATA_KEY"]

METADATA_KEY = "poseforge"
KINDS = ("topdown", "bottomup", "dense")
CODEC_NAMES = ("simcc", "msra", "dark", "udp")  # what files without metadata can name
HEATMAP_CODECS = ("msra", "dark", "udp")
MAX_THREADS = 1024  # onnxruntime intra-op threads: more is a typo, not a machine


def import_onnxruntime(extra: str = "runtime") -> Any:
    """The ``onnxruntime`` module, or a one-line error naming the pip extra that installs it."""
    try:
        import onnxruntime
    except ImportError:
        raise PoseforgeError(f"this needs onnxruntime: pip install 'poseforge[{extra}]' (or onnxruntime-gpu)") from None
    return onnxruntime


def create_session(path: str | os.PathLike, *, num_threads: int | None = None, device: str = "cpu",
                   what: str = "ONNX model", extra: str = "runtime", spin: bool = False) -> Any:
    """An ``onnxruntime.InferenceSession`` of ``path`` (CPU; ``device="cuda"`` prefers the CUDA provider when
    installed; ``num_threads`` intra-op threads), with one-line errors for missing, unreadable or corrupt files.

    ``spin=False`` lets idle worker threads sleep instead of spin-waiting after a run: a pipeline runs two
    sessions (detector, pose) in turn, and the spinning workers of one steal the cores of the other (RTMDet-nano +
    RTMPose-t on 2 cores: 46 ms a frame spinning, 29 ms not); a session that runs alone is ~1.2x faster with
    ``spin=True`` (``benchmarks/ort_spinning.py``)."""
    ort = import_onnxruntime(extra)
    path = Path(path)
    if path.is_dir():
        raise PoseforgeError(f"{path}: {what} file expected, got a folder")
    if not path.is_file():
        raise PoseforgeError(f"{path}: {what} file not found")
    options = ort.SessionOptions()
    if num_threads is not None:  # 0: onnxruntime's own choice
        options.intra_op_num_threads = Fields(path, None, "option").integer(num_threads, "num_threads", minimum=0,
                                                                            maximum=MAX_THREADS)
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    providers = ["CPUExecutionProvider"]
    if str(device).split(":")[0] == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    # On the CPU alone there is nothing to fall back to: no retry (and no "EP Error" banner on stdout) for a
    # corrupt file. With CUDA, onnxruntime's fallback to the CPU stays on.
    fallback = {} if len(providers) > 1 else {"enable_fallback": 0}
    try:
        session = ort.InferenceSession(str(path), options, providers=providers, **fallback)
    except Exception as e:  # onnxruntime raises its own exception types for unreadable models
        raise PoseforgeError(f"{path}: cannot load ONNX model ({first_line(e)})") from None
    try:  # names and metadata are decoded on access: a corrupt file can hold bytes that are not UTF-8
        for arg in session.get_inputs() + session.get_outputs():
            _ = arg.name, arg.shape, arg.type
        _ = dict(session.get_modelmeta().custom_metadata_map)
    except UnicodeDecodeError:
        raise PoseforgeError(f"{path}: cannot load ONNX model (its names or metadata are not UTF-8 text)") from None
    return session


@dataclasses.dataclass(frozen=True)
class KeypointInfo:
    """The keypoint set of an export: ``names`` (K), ``flip_index`` (left/right partner of each keypoint),
    ``skeleton`` (pairs of keypoint indices to draw) and OKS ``sigmas``; empty where the file does not say."""

    name: str = "custom"
    names: tuple[str, ...] = ()
    flip_index: tuple[int, ...] = ()
    skeleton: tuple[tuple[int, int], ...] = ()
    sigmas: tuple[float, ...] = ()

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None, where: str = "model") -> "KeypointInfo":
        """The metadata's ``keypoint_set`` (one-line errors naming ``where`` and the field)."""
        if data is None:
            return cls()
        f = Fields(where, "poseforge metadata")
        data = f.mapping(data, "keypoint_set")
        names = _names(f, data.get("keypoints"), "keypoint_set.keypoints")
        info = cls(name=str(data.get("name", "custom")), names=names,
                   flip_index=_indices(f, data.get("flip_index"), "keypoint_set.flip_index", None),
                   skeleton=_links(f, data.get("skeleton"), "keypoint_set.skeleton", None),
                   sigmas=tuple(f.number(s, "keypoint_set.sigmas", positive=True)
                                for s in _items(f, data.get("sigmas"), "keypoint_set.sigmas")))
        if names:  # the rest must fit the names (the graph's K is checked by PoseModel)
            info.check(len(names), f, per="keypoint name")
        return info

    def check(self, count: int, fields: Fields, labels: Mapping[str, str] | None = None,
              per: str = "keypoint of the model") -> None:
        """Raise ``fields``' one-line error unless names, flip index, skeleton and sigmas fit ``count`` keypoints
        (``labels``: the field name of each attribute in the messages; default the metadata's)."""
        labels = {**_KEYPOINT_FIELDS, **(labels or {})}
        for attr in ("names", "flip_index", "sigmas"):
            values = getattr(self, attr)
            if values and len(values) != count:
                raise fields.error(labels[attr], f"expected {count} values (one per {per}), got {len(values)}")
        for attr, values in (("flip_index", self.flip_index), ("skeleton", [i for p in self.skeleton for i in p])):
            if values and not 0 <= min(values) <= max(values) < count:
                raise fields.error(labels[attr], f"keypoint index out of range for {count} keypoints: "
                                                 f"{short(max(values) if max(values) >= count else min(values))}")


# the field names of KeypointInfo's attributes in messages: the metadata's, and PoseModel's options
_KEYPOINT_FIELDS = {"names": "keypoint_set.keypoints", "flip_index": "keypoint_set.flip_index",
                    "skeleton": "keypoint_set.skeleton", "sigmas": "keypoint_set.sigmas"}
_OPTION_FIELDS = {"names": "keypoint_names", "flip_index": "flip_index", "skeleton": "skeleton"}


def _items(f: Fields, value: Any, name: str) -> list[Any]:
    return [] if value is None else f.sequence(value, name)


def _names(f: Fields, value: Any, name: str) -> tuple[str, ...]:
    return tuple(f.text(n, name) for n in _items(f, value, name))


def _indices(f: Fields, value: Any, name: str, count: int | None) -> tuple[int, ...]:
    return () if value is None else f.indices(value, name, count)


def _links(f: Fields, value: Any, name: str, count: int | None) -> tuple[tuple[int, int], ...]:
    links = []
    for pair in _items(f, value, name):
        if not isinstance(pair, (list, tuple, np.ndarray)) or len(pair) != 2:
            raise f.error(name, f"expected pairs of keypoint indices, got {short(pair)}")
        a, b = f.indices(pair, name, count)
        links.append((a, b))
    return tuple(links)


@dataclasses.dataclass(frozen=True)
class ModelMeta:
    """What an exported file says about itself (the ``poseforge`` metadata, see the module doc).

    Attributes:
        kind: ``"topdown"``, ``"bottomup"`` or ``"dense"``.
        input_size: model input ``(w, h)``.
        mean, std: per-channel normalization on the 0-255 scale, in ``channel_order`` (RGB for poseforge's).
        decoded: whether the graph outputs ``keypoints`` + ``scores`` (else raw head outputs).
        codec: the codec settings (``name`` and poseforge's codec ``config()``).
        keypoints: the keypoint set.
        padding, udp: top-down crop settings (box padding, UDP warp).
        outputs: the output names, in order.
        model, task, source, poseforge_version: informational.
    """

    kind: str
    input_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    decoded: bool
    codec: Mapping[str, Any]
    keypoints: KeypointInfo
    padding: float = 1.25
    udp: bool = False
    outputs: tuple[str, ...] = ()
    channel_order: str = "RGB"
    model: str = "model"
    task: str | None = None
    source: str | None = None
    poseforge_version: str | None = None

    @classmethod
    def from_json(cls, text: str, where: str = "model") -> "ModelMeta":
        """Parse the ``poseforge`` metadata JSON (one-line errors naming ``where`` and the field: every field the
        runtime uses is checked here, so a corrupt value never surfaces later as a numpy or onnxruntime error)."""
        try:
            data = json.loads(text)
        except RecursionError:
            raise PoseforgeError(f"{where}: the poseforge metadata is not JSON (nested too deeply)") from None
        except ValueError as e:
            raise PoseforgeError(f"{where}: the poseforge metadata is not JSON ({first_line(e)})") from None
        if not isinstance(data, dict) or data.get("format") != "poseforge-onnx":
            raise PoseforgeError(f"{where}: the poseforge metadata does not say format 'poseforge-onnx'")
        version = data.get("version", 0)
        if isinstance(version, bool) or not isinstance(version, (int, float)) or version != 1:
            raise PoseforgeError(f"{where}: poseforge metadata version {short(version)} is not supported "
                                 "(this runtime reads version 1); upgrade poseforge")
        f = Fields(where, "poseforge metadata")
        for key in ("kind", "input_size", "mean", "std"):
            if key not in data:
                raise f.error(key, "missing")
        if not isinstance(data["kind"], str) or data["kind"] not in KINDS:
            raise f.error("kind", f"expected one of {', '.join(KINDS)}, got {short(data['kind'])}")
        layout = data.get("layout", "NCHW")
        if not isinstance(layout, str) or layout.upper() != "NCHW":
            raise f.error("layout", f"{short(layout)} is not supported (NCHW)")
        crop = {} if data.get("crop") is None else f.mapping(data["crop"], "crop")
        codec = {} if data.get("codec") is None else check_codec(data["codec"], f)
        return cls(kind=data["kind"], input_size=f.size(data["input_size"], "input_size"),
                   mean=f.triple(data["mean"], "mean"), std=f.triple(data["std"], "std", positive=True),
                   decoded=f.boolean(data.get("decoded", False), "decoded"), codec=codec,
                   keypoints=KeypointInfo.from_json(data.get("keypoint_set"), where),
                   padding=f.number(crop.get("padding", 1.25), "crop.padding", positive=True),
                   udp=f.boolean(crop["udp"], "crop.udp") if "udp" in crop else codec.get("name") == "udp",
                   outputs=_names(f, data.get("outputs"), "outputs"),
                   channel_order=_channel_order(f, data.get("channel_order", "RGB"), "channel_order"),
                   model=str(data.get("model", "model")), task=data.get("task"),
                   source=None if data.get("source") is None else str(data["source"]),
                   poseforge_version=None if data.get("poseforge_version") is None else str(data["poseforge_version"]))


def _channel_order(f: Fields, value: Any, name: str) -> str:
    order = f.text(value, name).upper()
    if order not in ("RGB", "BGR"):
        raise f.error(name, f"expected RGB or BGR, got {short(value)}")
    return order


def _check_image_input(path: Path, arg: Any) -> None:
    """The graph input must take float32 ``[N, 3, h, w]`` images (static sizes positive)."""
    shape = list(arg.shape)
    if arg.type != "tensor(float)":
        raise PoseforgeError(f"{path}: expected a float32 image input [N, 3, h, w], got {arg.type} {shape}")
    if isinstance(shape[1], int) and shape[1] != 3:
        raise PoseforgeError(f"{path}: expected an image input with 3 channels [N, 3, h, w], got {shape}")
    if any(isinstance(v, int) and v <= 0 for v in shape):
        raise PoseforgeError(f"{path}: the graph input has an empty dimension: {shape}")


class PoseModel:
    """An exported pose model on onnxruntime.

    Args:
        path: the ``.onnx`` file.
        num_threads: onnxruntime intra-op threads (default: its own choice).
        device: ``"cpu"`` or ``"cuda"`` (onnxruntime's CUDA provider when installed).
        input_size, mean, std, split_ratio, codec, kind, keypoint_names, skeleton, flip_index, udp, padding,
        channel_order: for files without poseforge metadata (they override nothing in files that have it, except
            ``keypoint_names`` / ``skeleton`` for drawing). ``codec`` is a codec name (``"simcc"``, ``"msra"``,
            ``"dark"``, ``"udp"``) or settings dict; SimCC outputs need ``split_ratio`` unless the file's static
            shapes tell it, heatmaps need ``codec``.

        spin: let onnxruntime's workers spin-wait between runs (faster for a session running alone; see
            :func:`create_session`).

    ``model.predict_crops(crops)`` decodes top-down crops; :meth:`run` gives the raw outputs by name.
    """

    def __init__(self, path: str | os.PathLike, *, num_threads: int | None = None, device: str = "cpu",
                 input_size: Sequence[int] | None = None, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, split_ratio: float | None = None,
                 codec: str | Mapping[str, Any] | None = None, kind: str | None = None,
                 keypoint_names: Sequence[str] | None = None, skeleton: Sequence[Sequence[int]] | None = None,
                 flip_index: Sequence[int] | None = None, udp: bool | None = None, padding: float = 1.25,
                 channel_order: str = "RGB", spin: bool = False) -> None:
        self.path = Path(path)
        self.session = create_session(self.path, num_threads=num_threads, device=device, what="pose model", spin=spin)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise PoseforgeError(f"{self.path}: expected one [N, 3, h, w] input, got "
                                 f"{[(i.name, i.shape) for i in inputs]}")
        _check_image_input(self.path, inputs[0])
        self.input_name: str = inputs[0].name
        self.output_names: list[str] = [o.name for o in outputs]
        self._output_shapes = {o.name: o.shape for o in outputs}
        batch = inputs[0].shape[0]
        # a static batch dimension (rtmlib's exports: 1) means crops go through in chunks of that size
        self.fixed_batch: int | None = batch if isinstance(batch, int) and batch > 0 else None
        text = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if text is not None:
            meta = ModelMeta.from_json(text, str(self.path))
        else:
            meta = self._meta_from_options(inputs[0].shape, input_size, mean, std, split_ratio, codec, kind,
                                           keypoint_names, skeleton, flip_index, udp, padding, channel_order)
        self.meta: ModelMeta = meta
        static = inputs[0].shape[2:]
        if all(isinstance(v, int) for v in static) and (static[1], static[0]) != meta.input_size:
            raise PoseforgeError(f"{self.path}: the metadata says input {meta.input_size[0]}x{meta.input_size[1]} "
                                 f"but the graph takes {static[1]}x{static[0]} (width x height)")
        self._mean = np.asarray(meta.mean, dtype=np.float32).reshape(1, 3, 1, 1)
        self._std = np.asarray(meta.std, dtype=np.float32).reshape(1, 3, 1, 1)
        # canonical raw output name (simcc_x, simcc_y / heatmaps; bottom-up: heatmaps, tags) -> the file's name
        self._raw: dict[str, str] = {}
        if meta.kind == "topdown" and not meta.decoded:
            self._raw = self._raw_outputs()
        elif meta.kind == "bottomup":
            self._raw = self._bottomup_outputs()
        if meta.kind == "topdown" and meta.decoded and not {"keypoints", "scores"} <= set(self.output_names):
            raise PoseforgeError(f"{self.path}: the metadata says decoded but the outputs are {self.output_names} "
                                 "(expected keypoints and scores)")
        self._check_graph(text is not None)
        if text is not None and (keypoint_names is not None or skeleton is not None):  # the caller's drawing names
            option = Fields(self.path, None, "option")
            kp = dataclasses.replace(meta.keypoints,
                                     names=_names(option, keypoint_names, "keypoint_names") or meta.keypoints.names,
                                     skeleton=_links(option, skeleton, "skeleton", None) or meta.keypoints.skeleton)
            if self.num_keypoints is not None:
                kp.check(self.num_keypoints, option, _OPTION_FIELDS)
            self.meta = dataclasses.replace(meta, keypoints=kp)

    def _raw_outputs(self) -> dict[str, str]:
        """Which outputs a raw top-down model's decode reads: by name, else by the codec and the outputs' ranks
        (rtmlib-style files name theirs freely)."""
        names, codec = self.output_names, self.meta.codec.get("name")
        if {"simcc_x", "simcc_y"} <= set(names):
            mapping = {"simcc_x": "simcc_x", "simcc_y": "simcc_y"}
        elif "heatmaps" in names:
            mapping = {"heatmaps": "heatmaps"}
        elif codec == "simcc" and len(names) == 2:
            mapping = {"simcc_x": names[0], "simcc_y": names[1]}
        elif codec in HEATMAP_CODECS and len(names) == 1 and len(self._output_shapes[names[0]]) == 4:
            mapping = {"heatmaps": names[0]}
        else:
            raise PoseforgeError(f"{self.path}: a top-down model must output keypoints + scores, simcc_x + simcc_y "
                                 f"or heatmaps; this one gives {names}")
        if "heatmaps" in mapping and codec not in HEATMAP_CODECS:
            raise PoseforgeError(f"{self.path}: heatmap outputs need a codec (msra, dark or udp) to decode; "
                                 f"got {codec!r}")
        ranks = {"simcc_x": 3, "simcc_y": 3, "heatmaps": 4}
        for role, name in mapping.items():
            if len(self._output_shapes[name]) != ranks[role]:
                raise PoseforgeError(f"{self.path}: output {name!r} ({role}) has shape {self._output_shapes[name]}; "
                                     f"expected {ranks[role]} dimensions")
        return mapping

    def _bottomup_outputs(self) -> dict[str, str]:
        """The heatmaps ``[N, K, H, W]`` and tags ``[N, K * D, H, W]`` (or ``[N, K, D, H, W]``) outputs of a
        bottom-up model: by name, else the first two."""
        names = self.output_names
        heat, tags = ("heatmaps", "tags") if {"heatmaps", "tags"} <= set(names) else (names + ["", ""])[:2]
        if not tags or len(self._output_shapes[heat]) != 4 or len(self._output_shapes[tags]) not in (4, 5):
            raise PoseforgeError(f"{self.path}: a bottom-up model must output heatmaps [N, K, H, W] and tags "
                                 f"[N, K * D, H, W]; this one gives {[(n, self._output_shapes[n]) for n in names]}")
        return {"heatmaps": heat, "tags": tags}

    def _check_graph(self, from_metadata: bool) -> None:
        """The keypoint set and the SimCC split ratio against the graph's static output shapes: a mismatch is an
        error here, not an index error or silently scaled keypoints later."""
        f = Fields(self.path, "poseforge metadata") if from_metadata else Fields(self.path, None, "option")
        labels = None if from_metadata else _OPTION_FIELDS
        k = self._graph_keypoints()
        if k is not None:
            self.meta.keypoints.check(k, f, labels)
        ratio = self.meta.codec.get("split_ratio")
        if "simcc_x" not in self._raw or ratio is None:
            return
        bins = [self._output_shapes[self._raw[n]][-1] for n in ("simcc_x", "simcc_y")]
        expected = [size * ratio for size in self.meta.input_size]
        if any(isinstance(b, int) and abs(b - e) >= 1 for b, e in zip(bins, expected, strict=True)):
            raise f.error("codec.split_ratio" if from_metadata else "split_ratio",
                          f"{ratio:g} bins per pixel of a {self.meta.input_size[0]}x{self.meta.input_size[1]} input "
                          f"gives {expected[0]:g} x {expected[1]:g} SimCC bins, but the graph outputs {bins[0]} x "
                          f"{bins[1]}")

    def _graph_keypoints(self) -> int | None:
        """K from the graph's static output shapes, else None."""
        for name in ("scores", self._raw.get("simcc_x"), self._raw.get("heatmaps")):
            shape = self._output_shapes.get(name or "")
            if shape is not None and len(shape) >= 2 and isinstance(shape[1], int):
                return shape[1]
        return None

    # ----- files without metadata ----------------------------------------------------------------
    def _meta_from_options(self, input_shape: Sequence[Any], input_size: Sequence[int] | None,
                           mean: Sequence[float] | None, std: Sequence[float] | None, split_ratio: float | None,
                           codec: str | Mapping[str, Any] | None, kind: str | None,
                           keypoint_names: Sequence[str] | None, skeleton: Sequence[Sequence[int]] | None,
                           flip_index: Sequence[int] | None, udp: bool | None, padding: float,
                           channel_order: str) -> ModelMeta:
        """Metadata for a file without poseforge's: the options (each checked, one-line errors naming the file and
        the option), plus what the graph's static shapes tell."""
        f = Fields(self.path, None, "option")
        names = set(self.output_names)
        if kind is not None and (not isinstance(kind, str) or kind not in KINDS):
            raise f.error("kind", f"expected one of {', '.join(KINDS)}, got {short(kind)}")
        kind = kind or ("bottomup" if "tags" in names else "topdown")
        static = input_shape[2:]
        if input_size is not None:
            input_size = f.size(input_size, "input_size")
        elif all(isinstance(v, int) for v in static):
            input_size = (static[1], static[0])
        mean = None if mean is None else f.triple(mean, "mean")
        std = None if std is None else f.triple(std, "std", positive=True)
        if isinstance(codec, str):
            if codec not in CODEC_NAMES:
                raise f.error("codec", f"expected one of {', '.join(CODEC_NAMES)} or codec settings, got "
                                       f"{short(codec)}")
            settings: dict[str, Any] = {"name": codec}
        else:
            settings = check_codec({} if codec is None else codec, f)
        missing = [n for n, v in (("input_size", input_size), ("mean", mean), ("std", std)) if v is None]
        decoded = {"keypoints", "scores"} <= names
        simcc = {"simcc_x", "simcc_y"} <= names or (len(self.output_names) == 2 and not decoded and all(
            len(self._output_shapes[n]) == 3 for n in self.output_names))
        if kind == "topdown" and not decoded and simcc:
            settings.setdefault("name", "simcc")
            if split_ratio is not None:
                settings["split_ratio"] = f.number(split_ratio, "split_ratio", positive=True)
            elif "split_ratio" not in settings:
                bins = self._output_shapes[self.output_names[0]][-1]
                if isinstance(bins, int) and bins > 0 and input_size is not None:
                    settings["split_ratio"] = bins / input_size[0]  # e.g. rtmlib RTMPose: 384 / 192 = 2
                else:
                    missing.append("split_ratio")
        elif kind == "topdown" and not decoded and settings.get("name") not in HEATMAP_CODECS:
            missing.append("codec (msra, dark or udp)")
        if missing:
            raise PoseforgeError(f"{self.path}: no poseforge metadata in the file; give {', '.join(missing)} (e.g. "
                                 "RTMPose: input size 192x256, mean 123.675,116.28,103.53, std 58.395,57.12,57.375)")
        keypoints = KeypointInfo(names=_names(f, keypoint_names, "keypoint_names"),
                                 skeleton=_links(f, skeleton, "skeleton", None),
                                 flip_index=_indices(f, flip_index, "flip_index", None))
        assert input_size is not None and mean is not None and std is not None
        return ModelMeta(kind=kind, input_size=input_size, mean=mean, std=std, decoded=decoded, codec=settings,
                         keypoints=keypoints, padding=f.number(padding, "padding", positive=True),
                         udp=settings.get("name") == "udp" if udp is None else f.boolean(udp, "udp"),
                         outputs=tuple(self.output_names), channel_order=_channel_order(f, channel_order,
                                                                                        "channel_order"),
                         model=self.path.stem, source=str(self.path))

    # ----- running -------------------------------------------------------------------------------
    @property
    def input_size(self) -> tuple[int, int]:
        """Model input ``(w, h)``."""
        return self.meta.input_size

    @property
    def kind(self) -> str:
        return self.meta.kind

    @property
    def num_keypoints(self) -> int | None:
        """K when the metadata or the graph's static shapes tell it, else None."""
        if self.meta.keypoints.names:
            return len(self.meta.keypoints.names)
        return self._graph_keypoints()

    def normalize(self, images: np.ndarray) -> np.ndarray:
        """0-255 RGB ``[N, h, w, 3]`` (any numeric dtype) -> the network input ``[N, 3, h, w]`` float32 (in the
        model's channel order, normalized)."""
        x = np.asarray(images, dtype=np.float32)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[-1] != 3:
            raise PoseforgeError(f"images: expected [N, h, w, 3] RGB, got shape {list(x.shape)}")
        w, h = self.input_size
        if x.shape[1:3] != (h, w):
            raise PoseforgeError(f"images: expected {w}x{h} inputs for {self.path.name}, got {x.shape[2]}x{x.shape[1]}")
        if self.meta.channel_order == "BGR":
            x = x[..., ::-1]
        return (x.transpose(0, 3, 1, 2) - self._mean) / self._std

    def run(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        """Raw outputs by name of normalized inputs ``[N, 3, h, w]`` (chunked by a static batch size)."""
        x = np.ascontiguousarray(inputs, dtype=np.float32)
        if x.ndim != 4 or len(x) == 0:
            raise PoseforgeError(f"{self.path.name}: run: expected inputs [N, 3, h, w] with N > 0, got shape "
                                 f"{list(x.shape)}")
        step = self.fixed_batch or len(x)
        parts = []
        for s in range(0, len(x), step):
            chunk = x[s:s + step]
            if self.fixed_batch and len(chunk) < step:  # a static batch: pad the last chunk, drop the padding
                chunk = np.concatenate([chunk, np.zeros((step - len(chunk),) + chunk.shape[1:], np.float32)])
            try:
                out = self.session.run(self.output_names, {self.input_name: chunk})
            except Exception as e:  # onnxruntime's own exception types: a graph that loads but cannot run
                raise PoseforgeError(f"{self.path}: onnxruntime cannot run this model ({first_line(e)})") from None
            parts.append([o[:len(x) - s] for o in out])
        return {name: np.concatenate([p[i] for p in parts]) if len(parts) > 1 else parts[0][i]
                for i, name in enumerate(self.output_names)}

    def predict_crops(self, crops: np.ndarray, *, flip_test: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Keypoints ``[N, K, 2]`` (crop pixels, float32) and scores ``[N, K]`` of top-down crops (0-255 RGB
        ``[N, h, w, 3]``). ``flip_test`` (raw outputs only) averages in the outputs of the mirrored crops."""
        if self.meta.kind != "topdown":
            raise PoseforgeError(f"{self.path.name} is a {self.meta.kind} model; predict_crops is for top-down models")
        x = self.normalize(crops)
        if self.meta.decoded:
            if flip_test:
                raise PoseforgeError(f"{self.path.name} decodes in the graph: flip test needs an export with raw "
                                     "outputs")
            out = self.run(x)
            return self._checked(out["keypoints"], out["scores"], len(x))
        return self._checked(*self.decode(self.infer(x, flip_test=flip_test)), len(x))

    def _checked(self, keypoints: np.ndarray, scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Decoded keypoints ``[n, K, 2]`` and scores ``[n, K]`` as float32, K agreeing with the keypoint set (a graph
        whose output shapes are symbolic is checked here, on its first outputs)."""
        keypoints, scores = np.asarray(keypoints, np.float32), np.asarray(scores, np.float32)
        k = keypoints.shape[1] if keypoints.ndim == 3 else -1
        if keypoints.shape != (n, k, 2) or scores.shape != (n, k):
            raise PoseforgeError(f"{self.path}: expected keypoints [{n}, K, 2] and scores [{n}, K] from the model, got "
                                 f"{list(keypoints.shape)} and {list(scores.shape)}")
        self._check_runtime_keypoints(k)
        return keypoints, scores

    def _check_runtime_keypoints(self, k: int) -> None:
        if self._graph_keypoints() is None:  # static shapes were checked when the model was loaded
            self.meta.keypoints.check(k, Fields(self.path, "poseforge metadata"))

    def infer(self, inputs: np.ndarray, *, flip_test: bool = False) -> dict[str, np.ndarray]:
        """Raw top-down outputs (``simcc_x`` + ``simcc_y`` or ``heatmaps``) of normalized inputs; with
        ``flip_test`` the mirrored inputs run in the same session call and their re-aligned outputs are averaged
        in (as poseforge's ``Estimator.infer``)."""
        from .decode import flip_back

        if self.meta.kind != "topdown" or not self._raw:
            raise PoseforgeError(f"{self.path.name}: infer is for top-down models with raw outputs")
        n = len(inputs)
        if flip_test:
            if not self.meta.keypoints.flip_index:
                raise PoseforgeError(f"{self.path.name}: flip test needs the keypoint set's flip_index (not in the "
                                     "file)")
            inputs = np.concatenate([inputs, inputs[..., ::-1]])
        out = self.run(inputs)
        raw = {name: out[file_name] for name, file_name in self._raw.items()}
        if not flip_test:
            return raw
        if next(iter(raw.values())).ndim < 2:
            raise PoseforgeError(f"{self.path}: unexpected output shapes {[list(v.shape) for v in raw.values()]}")
        self._check_runtime_keypoints(next(iter(raw.values())).shape[1])
        back = flip_back({k: v[n:] for k, v in raw.items()}, self.meta.keypoints.flip_index,
                         str(self.meta.codec.get("name")))
        return {k: (v[:n] + back[k]) * 0.5 for k, v in raw.items()}

    def decode(self, outputs: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Raw top-down outputs (``simcc_x`` + ``simcc_y`` or ``heatmaps``, as :meth:`infer` gives them; or
        ``keypoints`` + ``scores``) -> keypoints ``[N, K, 2]`` in crop pixels and scores ``[N, K]``."""
        from .decode import decode_topdown

        if "keypoints" in outputs and "scores" in outputs:
            return np.asarray(outputs["keypoints"], np.float32), np.asarray(outputs["scores"], np.float32)
        try:
            return decode_topdown(outputs, self.meta.codec, self.input_size)
        except PoseforgeError as e:  # output shapes the graph's static ones did not announce
            raise PoseforgeError(f"{self.path}: {e}") from None

    def __repr__(self) -> str:
        m = self.meta
        return (f"PoseModel({self.path.name}: {m.kind}, {m.model}, input {m.input_size[0]}x{m.input_size[1]}, "
                f"{'decoded' if m.decoded else m.codec.get('name', 'raw')})")
