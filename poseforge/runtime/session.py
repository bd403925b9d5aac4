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

__all__ = ["ModelMeta", "KeypointInfo", "PoseModel", "import_onnxruntime", "create_session", "METADATA_KEY"]

METADATA_KEY = "poseforge"
KINDS = ("topdown", "bottomup", "dense")


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
    installed; ``num_threads`` intra-op threads), with one-line errors for missing or unreadable files.

    ``spin=False`` lets idle worker threads sleep instead of spin-waiting after a run: a pipeline runs two
    sessions (detector, pose) in turn, and the spinning workers of one steal the cores of the other (RTMDet-nano +
    RTMPose-t on 2 cores: 46 ms a frame spinning, 29 ms not); a session that runs alone is ~1.2x faster with
    ``spin=True`` (``benchmarks/ort_spinning.py``)."""
    ort = import_onnxruntime(extra)
    path = Path(path)
    if not path.is_file():
        raise PoseforgeError(f"{path}: {what} file not found")
    options = ort.SessionOptions()
    if num_threads:
        options.intra_op_num_threads = int(num_threads)
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    providers = ["CPUExecutionProvider"]
    if str(device).split(":")[0] == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as e:  # onnxruntime raises its own exception types for unreadable models
        message = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise PoseforgeError(f"{path}: cannot load ONNX model ({message})") from None


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
    def from_json(cls, data: Mapping[str, Any] | None) -> "KeypointInfo":
        data = data or {}
        return cls(name=str(data.get("name", "custom")), names=tuple(str(n) for n in data.get("keypoints", ())),
                   flip_index=tuple(int(i) for i in data.get("flip_index", ()) or ()),
                   skeleton=tuple((int(a), int(b)) for a, b in data.get("skeleton", ()) or ()),
                   sigmas=tuple(float(s) for s in data.get("sigmas", ()) or ()))


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
        """Parse the ``poseforge`` metadata JSON (one-line errors naming ``where`` and the field)."""
        try:
            data = json.loads(text)
        except ValueError as e:
            raise PoseforgeError(f"{where}: the poseforge metadata is not JSON ({e})") from None
        if not isinstance(data, dict) or data.get("format") != "poseforge-onnx":
            raise PoseforgeError(f"{where}: the poseforge metadata does not say format 'poseforge-onnx'")
        if int(data.get("version", 0)) != 1:
            raise PoseforgeError(f"{where}: poseforge metadata version {data.get('version')!r} is not supported "
                                 "(this runtime reads version 1); upgrade poseforge")
        for key in ("kind", "input_size", "mean", "std"):
            if key not in data:
                raise PoseforgeError(f"{where}: poseforge metadata: field '{key}' missing")
        if data["kind"] not in KINDS:
            raise PoseforgeError(f"{where}: poseforge metadata: field 'kind': expected one of {', '.join(KINDS)}, "
                                 f"got {data['kind']!r}")
        if str(data.get("layout", "NCHW")).upper() != "NCHW":
            raise PoseforgeError(f"{where}: poseforge metadata: layout {data.get('layout')!r} is not supported (NCHW)")
        crop = data.get("crop") or {}
        codec = dict(data.get("codec") or {})
        return cls(kind=data["kind"], input_size=_pair(data["input_size"], f"{where}: poseforge metadata: input_size"),
                   mean=_triple(data["mean"], f"{where}: mean"), std=_triple(data["std"], f"{where}: std"),
                   decoded=bool(data.get("decoded", False)), codec=codec,
                   keypoints=KeypointInfo.from_json(data.get("keypoint_set")),
                   padding=float(crop.get("padding", 1.25)),
                   udp=bool(crop.get("udp", codec.get("name") == "udp")),
                   outputs=tuple(data.get("outputs", ())), channel_order=str(data.get("channel_order", "RGB")).upper(),
                   model=str(data.get("model", "model")), task=data.get("task"), source=data.get("source"),
                   poseforge_version=data.get("poseforge_version"))


def _pair(value: Any, what: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in value)
    except (TypeError, ValueError):
        raise PoseforgeError(f"{what}: expected (width, height), got {value!r}") from None
    if w <= 0 or h <= 0:
        raise PoseforgeError(f"{what}: expected positive (width, height), got {value!r}")
    return w, h


def _triple(value: Any, what: str) -> tuple[float, float, float]:
    try:
        a, b, c = (float(v) for v in value)
    except (TypeError, ValueError):
        raise PoseforgeError(f"{what}: expected 3 numbers (one per channel), got {value!r}") from None
    return a, b, c


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
        self.input_name: str = inputs[0].name
        self.output_names: list[str] = [o.name for o in outputs]
        self._output_shapes = {o.name: o.shape for o in outputs}
        batch = inputs[0].shape[0]
        # a static batch dimension (rtmlib's exports: 1) means crops go through in chunks of that size
        self.fixed_batch: int | None = batch if isinstance(batch, int) and batch > 0 else None
        text = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if text is not None:
            meta = ModelMeta.from_json(text, str(self.path))
            if keypoint_names is not None or skeleton is not None:
                kp = dataclasses.replace(meta.keypoints, names=tuple(keypoint_names or meta.keypoints.names),
                                         skeleton=tuple(tuple(p) for p in (skeleton or meta.keypoints.skeleton)))
                meta = dataclasses.replace(meta, keypoints=kp)
        else:
            meta = self._meta_from_options(inputs[0].shape, input_size, mean, std, split_ratio, codec, kind,
                                           keypoint_names, skeleton, flip_index, udp, padding)
            meta = dataclasses.replace(meta, channel_order=str(channel_order).upper())
        if meta.channel_order not in ("RGB", "BGR"):
            raise PoseforgeError(f"{self.path}: channel order {meta.channel_order!r} is not RGB or BGR")
        self.meta: ModelMeta = meta
        static = inputs[0].shape[2:]
        if all(isinstance(v, int) for v in static) and (static[1], static[0]) != meta.input_size:
            raise PoseforgeError(f"{self.path}: the metadata says input {meta.input_size[0]}x{meta.input_size[1]} "
                                 f"but the graph takes {static[1]}x{static[0]} (width x height)")
        self._mean = np.asarray(meta.mean, dtype=np.float32).reshape(1, 3, 1, 1)
        self._std = np.asarray(meta.std, dtype=np.float32).reshape(1, 3, 1, 1)
        # canonical raw output name (simcc_x, simcc_y / heatmaps) -> the file's output name
        self._raw: dict[str, str] = self._raw_outputs() if meta.kind == "topdown" and not meta.decoded else {}
        if meta.kind == "topdown" and meta.decoded and not {"keypoints", "scores"} <= set(self.output_names):
            raise PoseforgeError(f"{self.path}: the metadata says decoded but the outputs are {self.output_names} "
                                 "(expected keypoints and scores)")

    def _raw_outputs(self) -> dict[str, str]:
        """Which outputs a raw top-down model's decode reads: by name, else by the codec and the outputs' ranks
        (rtmlib-style files name theirs freely)."""
        names, codec = self.output_names, self.meta.codec.get("name")
        if {"simcc_x", "simcc_y"} <= set(names):
            return {"simcc_x": "simcc_x", "simcc_y": "simcc_y"}
        if "heatmaps" in names:
            mapping = {"heatmaps": "heatmaps"}
        elif codec == "simcc" and len(names) == 2:
            return {"simcc_x": names[0], "simcc_y": names[1]}
        elif codec in ("msra", "dark", "udp") and len(names) == 1 and len(self._output_shapes[names[0]]) == 4:
            mapping = {"heatmaps": names[0]}
        else:
            raise PoseforgeError(f"{self.path}: a top-down model must output keypoints + scores, simcc_x + simcc_y "
                                 f"or heatmaps; this one gives {names}")
        if codec not in ("msra", "dark", "udp"):
            raise PoseforgeError(f"{self.path}: heatmap outputs need a codec (msra, dark or udp) to decode; "
                                 f"got {codec!r}")
        return mapping

    # ----- files without metadata ----------------------------------------------------------------
    def _meta_from_options(self, input_shape: Sequence[Any], input_size: Sequence[int] | None,
                           mean: Sequence[float] | None, std: Sequence[float] | None, split_ratio: float | None,
                           codec: str | Mapping[str, Any] | None, kind: str | None,
                           keypoint_names: Sequence[str] | None, skeleton: Sequence[Sequence[int]] | None,
                           flip_index: Sequence[int] | None, udp: bool | None, padding: float) -> ModelMeta:
        """Metadata for a file without poseforge's: the options, plus what the graph's static shapes tell."""
        where = f"{self.path}: no poseforge metadata in the file"
        names = set(self.output_names)
        kind = kind or ("bottomup" if "tags" in names else "topdown")
        static = input_shape[2:]
        if input_size is None and all(isinstance(v, int) for v in static):
            input_size = (static[1], static[0])
        missing = [n for n, v in (("input_size", input_size), ("mean", mean), ("std", std)) if v is None]
        settings: dict[str, Any] = ({"name": codec} if isinstance(codec, str) else dict(codec or {}))
        decoded = {"keypoints", "scores"} <= names
        simcc = {"simcc_x", "simcc_y"} <= names or (len(self.output_names) == 2 and not decoded and all(
            len(self._output_shapes[n]) == 3 for n in self.output_names))
        if kind == "topdown" and not decoded and simcc:
            settings.setdefault("name", "simcc")
            if split_ratio is not None:
                settings["split_ratio"] = float(split_ratio)
            elif "split_ratio" not in settings:
                bins = self._output_shapes[self.output_names[0]][-1]
                if isinstance(bins, int) and input_size is not None:
                    settings["split_ratio"] = bins / int(input_size[0])  # e.g. rtmlib RTMPose: 384 / 192 = 2
                else:
                    missing.append("split_ratio")
        elif kind == "topdown" and not decoded and settings.get("name") not in ("msra", "dark", "udp"):
            missing.append("codec (msra, dark or udp)")
        if missing:
            raise PoseforgeError(f"{where}; give {', '.join(missing)} (e.g. RTMPose: input size 192x256, mean "
                                 "123.675,116.28,103.53, std 58.395,57.12,57.375)")
        keypoints = KeypointInfo(names=tuple(keypoint_names or ()), skeleton=tuple(tuple(p) for p in skeleton or ()),
                                 flip_index=tuple(flip_index or ()))
        assert input_size is not None and mean is not None and std is not None
        return ModelMeta(kind=kind, input_size=_pair(input_size, "input_size"), mean=_triple(mean, "mean"),
                         std=_triple(std, "std"), decoded=decoded, codec=settings, keypoints=keypoints,
                         padding=float(padding), udp=bool(udp if udp is not None else settings.get("name") == "udp"),
                         outputs=tuple(self.output_names), model=self.path.stem, source=str(self.path))

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
        for name in ("scores", self._raw.get("simcc_x"), self._raw.get("heatmaps")):
            shape = self._output_shapes.get(name or "")
            if shape is not None and isinstance(shape[1], int):
                return shape[1]
        return None

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
        if len(x) == 0:
            raise PoseforgeError("run: no inputs")
        step = self.fixed_batch or len(x)
        parts = []
        for s in range(0, len(x), step):
            chunk = x[s:s + step]
            if self.fixed_batch and len(chunk) < step:  # a static batch: pad the last chunk, drop the padding
                chunk = np.concatenate([chunk, np.zeros((step - len(chunk),) + chunk.shape[1:], np.float32)])
            out = self.session.run(self.output_names, {self.input_name: chunk})
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
            return out["keypoints"].astype(np.float32), out["scores"].astype(np.float32)
        return self.decode(self.infer(x, flip_test=flip_test))

    def infer(self, inputs: np.ndarray, *, flip_test: bool = False) -> dict[str, np.ndarray]:
        """Raw top-down outputs (``simcc_x`` + ``simcc_y`` or ``heatmaps``) of normalized inputs; with
        ``flip_test`` the mirrored inputs run in the same session call and their re-aligned outputs are averaged
        in (as poseforge's ``Estimator.infer``)."""
        from .decode import flip_back

        if not self._raw:
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
        back = flip_back({k: v[n:] for k, v in raw.items()}, self.meta.keypoints.flip_index,
                         str(self.meta.codec.get("name")))
        return {k: (v[:n] + back[k]) * 0.5 for k, v in raw.items()}

    def decode(self, outputs: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Raw top-down outputs (``simcc_x`` + ``simcc_y`` or ``heatmaps``, as :meth:`infer` gives them; or
        ``keypoints`` + ``scores``) -> keypoints ``[N, K, 2]`` in crop pixels and scores ``[N, K]``."""
        from .decode import decode_topdown

        if "keypoints" in outputs and "scores" in outputs:
            return np.asarray(outputs["keypoints"], np.float32), np.asarray(outputs["scores"], np.float32)
        return decode_topdown(outputs, self.meta.codec, self.input_size)

    def __repr__(self) -> str:
        m = self.meta
        return (f"PoseModel({self.path.name}: {m.kind}, {m.model}, input {m.input_size[0]}x{m.input_size[1]}, "
                f"{'decoded' if m.decoded else m.codec.get('name', 'raw')})")
