"""poseforge's own small person detector: an anchor-free, CenterNet-style CNN trained on synthetic people.

Architecture (``PersonDetectorNet``, ~0.8M parameters, ~0.2 GMAC at 256x192): a plain conv-BN-ReLU
backbone with residual stages at strides 2-32, a top-down FPN merged back to the output stride ``s``
(8), and three 1x1 heads on that map:

* ``heatmap`` [B, 1, H/s, W/s]: logit of "a person's box centre is in this cell";
* ``size``    [B, 2, H/s, W/s]: ``log(w / s), log(h / s)`` of the box centred there;
* ``offset``  [B, 2, H/s, W/s]: the sub-cell position of the centre.

Decoding (batched, on the device): sigmoid, 3x3 max-pool peak picking, top-k, boxes from size and
offset, then mapped back through the letterbox and cleaned by greedy NMS. Frames are letterboxed to
``input_size`` (top-left, padded with the mean colour, i.e. zero after normalization) on the device.

The weights bundled with poseforge are trained by ``python -m poseforge.train.detector`` (see that
module); :func:`load_detector` builds any detector from a name, file or object.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Hashable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import PoseforgeError
from ...hub import is_available, resolve_weights, weights_spec
from ...io import atomic_path, read_json, write_bytes_atomic
from ...models.estimators.base import file_checksum_entry, write_checksums
from ...models.loading import verify_checksums
from ...models.config import IMAGENET_MEAN, IMAGENET_STD, ConfigBase
from .base import Detections, Detector, Frame, frame_to_tensor, nms

log = logging.getLogger(__name__)

__all__ = ["PersonDetectorConfig", "PersonDetectorNet", "BuiltinDetector", "load_detector", "letterbox_tensor",
           "encode_targets", "detector_loss"]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


@dataclasses.dataclass(frozen=True)
class PersonDetectorConfig(ConfigBase):
    """Shape and decoding settings of :class:`PersonDetectorNet`.

    Attributes:
        input_size: network input ``(width, height)``; multiples of 32.
        widths: channels of the stem and the four stages (strides 2, 4, 8, 16, 32).
        blocks: residual blocks after the strided conv of each stage.
        neck_channels: channels of the FPN and the output map.
        output_stride: stride of the output maps (4 or 8).
        score_threshold, nms_threshold, max_detections: decoding defaults.
        mean, std: RGB normalization (0-255 scale).
    """

    input_size: tuple[int, int] = (256, 192)
    widths: tuple[int, int, int, int, int] = (16, 32, 64, 96, 128)
    blocks: tuple[int, int, int, int] = (0, 1, 1, 1)
    neck_channels: int = 64
    output_stride: int = 8
    score_threshold: float = 0.3
    nms_threshold: float = 0.6
    max_detections: int = 100
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    type: str = "centernet-person"

    def __post_init__(self) -> None:
        if any(int(v) % 32 or v <= 0 for v in self.input_size):
            raise PoseforgeError(f"PersonDetectorConfig.input_size: expected positive multiples of 32, got {self.input_size}")
        if self.output_stride not in (4, 8, 16):
            raise PoseforgeError(f"PersonDetectorConfig.output_stride: expected 4, 8 or 16, got {self.output_stride}")

    @property
    def stride(self) -> int:
        return self.output_stride


def _conv(cin: int, cout: int, stride: int = 1, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class _Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv(channels, channels), nn.Conv2d(channels, channels, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(channels))

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x + self.body(x), inplace=True)


class PersonDetectorNet(nn.Module):
    """The CNN: normalized images ``[B, 3, h, w]`` -> ``(heatmap logits, size, offset)`` at stride 4."""

    def __init__(self, config: PersonDetectorConfig) -> None:
        super().__init__()
        self.config = config
        c = config.widths
        self.stem = _conv(3, c[0], stride=2)
        self.stages = nn.ModuleList(
            nn.Sequential(_conv(c[i], c[i + 1], stride=2), *(_Residual(c[i + 1]) for _ in range(config.blocks[i])))
            for i in range(4))
        n = config.neck_channels
        # FPN levels used: the stages at strides output_stride .. 32
        self.first_level = {4: 0, 8: 1, 16: 2}[config.output_stride]
        self.lateral = nn.ModuleList(nn.Conv2d(ch, n, 1) for ch in c[1 + self.first_level:])
        self.smooth = nn.ModuleList(_conv(n, n) for _ in range(len(self.lateral) - 1))
        self.head = _conv(n, n)
        self.heatmap = nn.Conv2d(n, 1, 1)
        self.size = nn.Conv2d(n, 2, 1)
        self.offset = nn.Conv2d(n, 2, 1)
        nn.init.constant_(self.heatmap.bias, -2.19)  # prior 0.1: stable focal loss at the start (CenterNet)
        self.register_buffer("pixel_mean", torch.tensor(config.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config.std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = self.stem(images)
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        features = features[self.first_level:]
        y = self.lateral[-1](features[-1])
        for i in range(len(features) - 2, -1, -1):  # top-down: upsample, add the lateral, smooth
            y = F.interpolate(y, size=features[i].shape[-2:], mode="nearest") + self.lateral[i](features[i])
            y = self.smooth[i](y)
        y = self.head(y)
        return self.heatmap(y), self.size(y), self.offset(y)

    def normalize(self, images: Tensor) -> Tensor:
        """uint8 / 0-255 RGB ``[B, 3, h, w]`` -> normalized float."""
        return (images.float() - self.pixel_mean) / self.pixel_std

    # ----- save / load ----------------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike, dtype: torch.dtype | None = None) -> Path:
        """Write ``model.safetensors`` (optionally cast, e.g. fp16), ``config.json`` and, last, their
        ``checksums.json`` record, each atomically (the layout and order of pose models' folders)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to("cpu", dtype=dtype if (dtype and v.is_floating_point()) else v.dtype).contiguous()
                 for k, v in self.state_dict().items()}
        with atomic_path(directory / WEIGHTS_NAME) as tmp:
            save_file(state, str(tmp), metadata={"format": "pt", "poseforge_config": json.dumps(self.config.to_dict())})
            weights_entry = file_checksum_entry(tmp, sync=True)
        config_bytes = json.dumps(self.config.to_dict(), indent=2).encode()
        write_bytes_atomic(directory / CONFIG_NAME, config_bytes)
        write_checksums(directory, {WEIGHTS_NAME: weights_entry,
                                    CONFIG_NAME: {"sha256": hashlib.sha256(config_bytes).hexdigest(), "size": len(config_bytes)}})
        return directory

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: torch.device | str = "cpu", *,
                        verify: bool | None = None) -> "PersonDetectorNet":
        """Load a folder written by :meth:`save_pretrained` (weights come back as float32); ``verify`` checks
        the files against the folder's ``checksums.json`` as :func:`poseforge.models.load_model` does."""
        from safetensors import safe_open

        path = Path(path)
        folder = path if path.is_dir() else path.parent
        weights = folder / WEIGHTS_NAME if path.is_dir() else path
        if not weights.is_file():
            raise PoseforgeError(f"{weights}: detector weights not found")
        if verify is not False:
            verify_checksums(folder, [weights.name, CONFIG_NAME], full=verify)
        try:
            with safe_open(str(weights), framework="pt", device="cpu") as f:
                state = {k: f.get_tensor(k) for k in f.keys()}
                metadata = f.metadata() or {}
        except Exception as e:  # safetensors has its own error types for corrupt headers
            raise PoseforgeError(f"{weights}: not a readable safetensors file ({e})") from None
        if (folder / CONFIG_NAME).is_file():
            data = read_json(folder / CONFIG_NAME)
        elif "poseforge_config" in metadata:
            data = json.loads(metadata["poseforge_config"])
        else:
            raise PoseforgeError(f"{weights}: no {CONFIG_NAME} beside it and no config in its metadata")
        if data.get("type") != PersonDetectorConfig.type:
            raise PoseforgeError(f"{weights}: not a poseforge person detector (type {data.get('type')!r})")
        model = cls(PersonDetectorConfig.from_dict(data, str(folder / CONFIG_NAME)))
        from ...models.estimators import check_state_dict

        check_state_dict(model, state, str(weights))
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
        return model.to(device).eval()


# ---------------------------------------------------------------------------------------------- letterbox
def letterbox_tensor(frames: Tensor | Sequence[Tensor], size: tuple[int, int], mean: Tensor, std: Tensor) -> tuple[Tensor, Tensor]:
    """Frames ``[3, H_i, W_i]`` (uint8 / 0-255, any sizes, on one device) -> normalized ``[N, 3, h, w]``
    letterboxed top-left (padding = the mean colour, zero after normalization), and per-frame factors
    ``[N, 2]`` (``new_w / W``, ``new_h / H``) to map boxes back."""
    frames = [frames] if isinstance(frames, Tensor) and frames.ndim == 3 else list(frames)
    out_w, out_h = int(size[0]), int(size[1])
    device = frames[0].device
    batch = torch.zeros(len(frames), 3, out_h, out_w, device=device)
    factors = torch.empty(len(frames), 2, dtype=torch.float64, device=device)
    for i, frame in enumerate(frames):  # one resize per frame; frames may differ in size
        h, w = frame.shape[-2:]
        ratio = min(out_w / w, out_h / h)
        new_w, new_h = max(1, int(w * ratio + 0.5)), max(1, int(h * ratio + 0.5))
        x = frame.float()[None]
        if (new_w, new_h) != (w, h):
            x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=ratio < 1)
        batch[i, :, :new_h, :new_w] = ((x - mean) / std)[0]
        factors[i, 0], factors[i, 1] = new_w / w, new_h / h
    return batch, factors


# ---------------------------------------------------------------------------------------------- training targets
def encode_targets(boxes: Tensor, valid: Tensor, output_size: tuple[int, int], stride: int,
                   regress_above: float = 0.3) -> dict[str, Tensor]:
    """CenterNet / TTFNet targets for boxes ``[B, P, 4]`` xyxy (network-input pixels), ``valid [B, P]``.

    * ``heatmap`` [B, 1, h, w]: per box an elliptical Gaussian (sigma = box side / 6 in cells, as
      TTFNet) peaking at 1 in its centre cell; the max over boxes;
    * ``size`` [B, 2, h, w] / ``offset`` [B, 2, h, w]: at every cell, the ``log`` size (in cells) of
      the box whose Gaussian is largest there and the vector from the cell to that box's centre;
    * ``weight`` [B, 1, h, w]: where size and offset are learned - the Gaussian value where it is
      above ``regress_above`` (the central part of each box), else 0. Regressing around the centre
      rather than at the one centre cell gives the size head many samples per person.
    """
    w, h = int(output_size[0]), int(output_size[1])
    b, p = boxes.shape[:2]
    centre = (boxes[..., :2] + boxes[..., 2:]) * 0.5 / stride
    wh = (boxes[..., 2:] - boxes[..., :2]).clamp(min=1.0) / stride
    cell = torch.stack([centre[..., 0].clamp(0, w - 1), centre[..., 1].clamp(0, h - 1)], -1).floor()
    sigma = (wh / 6.0).clamp(min=0.5)
    xs = torch.arange(w, device=boxes.device, dtype=boxes.dtype)
    ys = torch.arange(h, device=boxes.device, dtype=boxes.dtype)
    gx = torch.exp(-((xs - cell[..., 0:1]) ** 2) / (2 * sigma[..., 0:1] ** 2))  # [B, P, w]
    gy = torch.exp(-((ys - cell[..., 1:2]) ** 2) / (2 * sigma[..., 1:2] ** 2))  # [B, P, h]
    g = gy[..., :, None] * gx[..., None, :] * valid[..., None, None]  # [B, P, h, w]
    if p == 0:
        zeros = boxes.new_zeros(b, 1, h, w)
        return {"heatmap": zeros, "size": boxes.new_zeros(b, 2, h, w), "offset": boxes.new_zeros(b, 2, h, w),
                "weight": zeros}
    heatmap, owner = g.max(1)  # [B, h, w]
    take = lambda values: values.gather(1, owner.flatten(1)[..., None].expand(b, h * w, 2))  # noqa: E731  [B, hw, 2]
    size = take(wh.log()).transpose(1, 2).reshape(b, 2, h, w)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(1, h * w, 2)
    offset = (take(centre) - grid).transpose(1, 2).reshape(b, 2, h, w)
    weight = torch.where(heatmap > regress_above, heatmap, torch.zeros_like(heatmap))
    return {"heatmap": heatmap[:, None], "size": size, "offset": offset, "weight": weight[:, None]}


def _dense_boxes(size: Tensor, offset: Tensor) -> Tensor:
    """``[B, h, w, 4]`` xyxy boxes (in cells) that size/offset maps ``[B, 2, h, w]`` describe at each cell."""
    b, _, h, w = size.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=size.device, dtype=size.dtype),
                            torch.arange(w, device=size.device, dtype=size.dtype), indexing="ij")
    cx, cy = xs + offset[:, 0], ys + offset[:, 1]
    half_w, half_h = size[:, 0].exp() / 2, size[:, 1].exp() / 2
    return torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], -1)


def _giou(a: Tensor, b: Tensor) -> Tensor:
    """Generalized IoU of matching xyxy boxes ``[..., 4]``."""
    lt, rb = torch.maximum(a[..., :2], b[..., :2]), torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a, area_b = (a[..., 2:] - a[..., :2]).prod(-1), (b[..., 2:] - b[..., :2]).prod(-1)
    union = area_a + area_b - inter
    hull = (torch.maximum(a[..., 2:], b[..., 2:]) - torch.minimum(a[..., :2], b[..., :2])).prod(-1)
    return inter / union.clamp(min=1e-6) - (hull - union) / hull.clamp(min=1e-6)


def detector_loss(outputs: tuple[Tensor, Tensor, Tensor], targets: dict[str, Tensor], size_weight: float = 1.0,
                  offset_weight: float = 1.0, giou_weight: float = 2.0) -> dict[str, Tensor]:
    """Penalty-reduced focal loss on the heatmap (CenterNet) plus, around each centre and weighted by
    its Gaussian (TTFNet), L1 on size and offset and a GIoU loss on the boxes they describe."""
    logits, size, offset = outputs
    gt = targets["heatmap"]
    pred = torch.sigmoid(logits.float()).clamp(1e-4, 1 - 1e-4)
    pos = gt.eq(1).float()
    pos_loss = torch.log(pred) * (1 - pred) ** 2 * pos
    neg_loss = torch.log(1 - pred) * pred ** 2 * (1 - gt) ** 4 * (1 - pos)
    num_pos = pos.sum().clamp(min=1.0)
    focal = -(pos_loss.sum() + neg_loss.sum()) / num_pos
    weight = targets["weight"]
    denom = weight.sum().clamp(min=1e-6)
    size, offset = size.float(), offset.float()
    size_l1 = ((size - targets["size"]).abs() * weight).sum() / denom
    offset_l1 = ((offset - targets["offset"]).abs() * weight).sum() / denom
    giou = _giou(_dense_boxes(size.clamp(max=10), offset), _dense_boxes(targets["size"], targets["offset"]))
    giou_loss = ((1 - giou) * weight[:, 0]).sum() / denom
    total = focal + size_weight * size_l1 + offset_weight * offset_l1 + giou_weight * giou_loss
    return {"loss": total, "focal": focal.detach(), "size": size_l1.detach(), "offset": offset_l1.detach(),
            "giou": giou_loss.detach()}


# ---------------------------------------------------------------------------------------------- detector
MIN_BOX_SIZE = 1.0  # pixels: narrower or lower decoded boxes (clamped at the image edge) are dropped


class BuiltinDetector(Detector):
    """Runs :class:`PersonDetectorNet` on frames (letterbox, forward and decoding on the device).

    Args:
        model: the network, a folder / file written by ``save_pretrained``, or a weights name (``"bundled"``).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` ...
        score_threshold, nms_threshold, max_detections: override the config's decoding defaults.
    """

    input_kind = "tensor"

    def __init__(self, model: "PersonDetectorNet | str | os.PathLike" = "bundled", device: str | torch.device = "auto",
                 score_threshold: float | None = None, nms_threshold: float | None = None,
                 max_detections: int | None = None) -> None:
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self._device = torch.device(device)
        if isinstance(model, (str, os.PathLike)):
            self.name = str(model)
            model = PersonDetectorNet.from_pretrained(resolve_weights(str(model), "detector") or model, self._device)
        else:
            self.name = "PersonDetectorNet"
        self.model = model.to(self._device).eval()
        c = self.model.config
        self.score_threshold = c.score_threshold if score_threshold is None else float(score_threshold)
        self.nms_threshold = c.nms_threshold if nms_threshold is None else float(nms_threshold)
        self.max_detections = c.max_detections if max_detections is None else int(max_detections)

    @property
    def device(self) -> torch.device:
        return self._device

    @torch.no_grad()
    def detect_batch(self, frames: Sequence[Frame], keys: Sequence[Hashable] | None = None) -> list[Detections]:
        if not frames:
            return []
        tensors = [frame_to_tensor(f, self._device) for f in frames]
        m = self.model
        x, factors = letterbox_tensor(tensors, m.config.input_size, m.pixel_mean, m.pixel_std)
        outputs = m(x)
        sizes = torch.tensor([[t.shape[-1], t.shape[-2]] for t in tensors], dtype=torch.float64, device=self._device)
        return self.decode(outputs, factors, sizes)

    def decode(self, outputs: tuple[Tensor, Tensor, Tensor], factors: Tensor, sizes: Tensor) -> list[Detections]:
        """Network outputs -> detections in frame pixels (peaks, top-k and box maths batched)."""
        logits, size, offset = (o.float() for o in outputs)
        b, _, h, w = logits.shape
        heat = torch.sigmoid(logits)
        peaks = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat)
        k = min(self.max_detections, h * w)
        scores, index = peaks.flatten(1).topk(k, dim=1)  # [B, k]
        ys, xs = (index // w).to(torch.float64), (index % w).to(torch.float64)
        gather = lambda maps: maps.flatten(2).gather(2, index[:, None, :].expand(b, 2, k)).to(torch.float64)  # noqa: E731
        off, wh = gather(offset), gather(size).exp()
        stride = self.model.config.stride
        cx, cy = (xs + off[:, 0]) * stride, (ys + off[:, 1]) * stride
        bw, bh = wh[:, 0] * stride, wh[:, 1] * stride
        boxes = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1)  # [B, k, 4] network pixels
        boxes = boxes / factors.repeat(1, 2)[:, None, :]
        boxes = torch.minimum(boxes.clamp(min=0), sizes.repeat(1, 2)[:, None, :])
        # clamping a peak at the image edge can leave a box of zero (or sub-pixel) width or height: no
        # person to crop there, and such boxes are rejected as results (eval --boxes), so drop them
        wh = boxes[..., 2:] - boxes[..., :2]
        sized = wh.min(-1).values >= MIN_BOX_SIZE
        out = []
        for i in range(b):  # per frame: threshold + NMS (a handful of boxes each)
            keep = (scores[i] > self.score_threshold) & sized[i]
            fb, fs = boxes[i][keep].float(), scores[i][keep]
            kept = nms(fb, fs, self.nms_threshold)
            out.append(Detections(fb[kept], fs[kept]))
        return out


def auto_detector_name() -> str:
    """The detector ``"auto"`` means: the real RTMDet-nano where it is in the cache (or already downloaded),
    else the built-in detector trained on synthetic people (no download without being asked)."""
    return "rtmdet-nano" if is_available("rtmdet-nano", "detector") else "bundled"


def load_detector(spec: "Detector | str | os.PathLike | None", device: str | torch.device = "auto",
                  score_threshold: float | None = None) -> Detector | None:
    """A detector from a spec: a :class:`Detector` (returned as is), ``None``, a weights name
    (``"person-detector.synth"``, alias ``"bundled"``: the built-in network shipped with poseforge;
    ``"rtmdet-nano"``: the real RTMDet-nano ONNX release, downloaded once), ``"auto"`` (see
    :func:`auto_detector_name`), a ``.onnx`` export (:class:`~.onnx.OnnxDetector`), a
    folder / ``.safetensors`` of a built-in detector, a COCO detection results ``.json``
    (:class:`~.base.DetectionFile`) or an ultralytics weights file (``.pt``, needs ultralytics)."""
    if spec is None or isinstance(spec, Detector):
        return spec
    text = str(spec)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if text.lower() == "auto":
        text = auto_detector_name()
        log.info("person detector: %s", text)
    named = weights_spec(text, "detector")
    if named is not None and named.asset is not None:
        return BuiltinDetector(text, device, score_threshold=score_threshold)
    path = resolve_weights(text, "detector") if named is not None else Path(text)  # a release: downloaded once
    if path.suffix.lower() == ".onnx":
        from .onnx import OnnxDetector

        return OnnxDetector(path, device=device, score_threshold=0.3 if score_threshold is None else score_threshold)
    if path.suffix.lower() == ".json" and path.name != CONFIG_NAME:
        from .base import DetectionFile

        return DetectionFile(path, score_threshold=0.0 if score_threshold is None else score_threshold)
    if path.suffix.lower() == ".pt" or text.startswith("yolo"):
        from .ultralytics import UltralyticsDetector

        return UltralyticsDetector(text, device=device, score_threshold=0.3 if score_threshold is None else score_threshold)
    if path.is_dir() or path.suffix.lower() == ".safetensors":
        return BuiltinDetector(path, device, score_threshold=score_threshold)
    raise PoseforgeError(f"{spec}: unknown detector; expected 'bundled', a .onnx export, a detector folder, "
                         "a COCO detection results .json or an ultralytics .pt")
