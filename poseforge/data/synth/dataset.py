"""``SyntheticPoseDataset``: procedurally rendered people (or quadrupeds) with exact labels, in memory.

Image ``i`` is a pure function of ``(seed, i)`` and the dataset's settings: rendering it alone, in a
batch, in another order or in a DataLoader worker gives the same pixels and labels. ``dataset[i]``
yields the same :class:`~poseforge.data.records.PoseInstance` records as the COCO reader (plus the
pixels), so training and evaluation use it like any COCO file.

A set is labelled from the figure's own keypoints (the human's are COCO-WholeBody's 133, the
quadruped's AP-10K's 17) matched by joint name (:func:`~poseforge.keypoints.keypoint_mapping`); a
joint of the set the figure does not model is unlabeled (visibility 0, coordinates 0), never guessed.
``coco17`` and ``wholebody133`` are fully labelled. ``sapiens308`` (Sapiens / Goliath) gets 63 of its
308 joints: the 17 body and 6 foot joints, and per hand the 5 fingers' joints 2, 3, 4 and base
(Goliath's ``<finger>_third_joint`` = COCO-WholeBody's ``<finger>1``); its 7 extra arm/neck points
(neck, acromions, olecranons, cubital fossae) and 238 face points stay unlabeled, so each of its
records has at most 63 labelled joints, at the same pixels as the ``wholebody133`` record of the same
image (same seed).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from ...errors import PoseforgeError
from ...keypoints import get_keypoint_set, keypoint_mapping
from ..records import ImageInfo, PoseInstance
from .labels import LabelBatch, compute_labels, expand_labels
from .render import RenderOutput, render
from .rng import Rng
from .scene import SceneConfig, build_scenes, num_figures
from .shapes import to_camera

__all__ = ["SyntheticPoseDataset", "RenderedImage", "SynthBatch", "MAX_FIGURES", "single_threaded"]

MAX_FIGURES = 99  # annotation ids are image_id * 100 + figure slot + 1
_FIGURES = {"coco17": "human", "wholebody133": "human", "sapiens308": "human", "ap10k17": "quadruped"}
# Each figure's own keypoint list (in its order); other sets are labelled from it by joint name.
_FIGURE_KEYPOINTS = {"human": "wholebody133", "quadruped": "ap10k17"}


@dataclass
class SynthBatch:
    """A rendered batch as tensors on the dataset's device (the fast path; B images, P figure slots).

    ``image`` [B,H,W,3] uint8 RGB; dense maps ``parts`` [B,H,W] uint8 (Sapiens classes),
    ``depth`` [B,H,W] float32 camera z in metres (0 = sky/nothing), ``normals`` [B,H,W,3] unit
    camera-space normals (OpenCV axes: x right, y down, z forward; zeros where depth is 0),
    ``instance`` [B,H,W] uint8 (0 = scenery, k = figure slot k-1); ``camera`` [B,3,3] OpenCV
    intrinsics (pixel centres at integers); per slot ``present`` [B,P], ``category`` [B,P],
    ``keypoints`` [B,P,K,2], ``visibility`` [B,P,K], ``keypoints_cam`` [B,P,K,3], ``bbox`` [B,P,4]
    xywh, ``area`` [B,P]; ``indices`` [B] the image indices.
    """

    indices: Tensor
    image: Tensor
    parts: Tensor
    depth: Tensor
    normals: Tensor
    instance: Tensor
    camera: Tensor
    present: Tensor
    category: Tensor
    keypoints: Tensor
    visibility: Tensor
    keypoints_cam: Tensor
    slack: Tensor
    bbox: Tensor
    area: Tensor


@dataclass
class RenderedImage:
    """One rendered image with its records and dense maps (numpy, CPU).

    ``parts``/``depth``/``normals``/``instance_ids`` as in :class:`SynthBatch` for one image;
    ``camera`` the 3x3 OpenCV intrinsics. The records' ``extras`` hold ``"mask"`` (bool HxW visible
    mask), ``"keypoints_cam"`` ([K,3] camera-space metres; 0 for joints the figure does not model),
    ``"slack"`` ([K] depth-test tolerance in metres) and ``"instance_index"`` (its value in
    ``instance_ids``); with ``dense=True`` also the image's shared ``"parts"``, ``"depth"``,
    ``"normals"`` and ``"instance_ids"`` arrays.
    """

    index: int
    image: np.ndarray
    instances: list[PoseInstance]
    parts: np.ndarray
    depth: np.ndarray
    normals: np.ndarray
    instance_ids: np.ndarray
    camera: np.ndarray


@contextmanager
def single_threaded(device: torch.device) -> Iterator[None]:
    """Run CPU rendering on one intra-op thread, then restore the thread count.

    The renderer issues many medium-sized elementwise ops; with OpenMP threads on a busy machine each
    one waits for a core (measured 50x slower on 2 shared cores). One thread per process is fast and
    predictable; parallelism comes from DataLoader workers (or several processes).
    """
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _parse_pair(value: "Sequence[int] | int", what: str) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    try:
        a, b = (int(v) for v in value)
    except (TypeError, ValueError):
        raise PoseforgeError(f"{what}: expected two integers, got {value!r}") from None
    return a, b


class SyntheticPoseDataset(torch.utils.data.Dataset):
    """Procedural people (``coco17``, ``wholebody133``, ``sapiens308``) or quadrupeds (``ap10k17``),
    exactly labelled.

    Args:
        num_images: dataset length.
        seed: image ``i`` is rendered from ``(seed, i)`` alone.
        image_size: ``(width, height)``. ``(192, 256)`` with ``people=(1, 1)`` gives person-centric
            crops (one figure filling the frame, like a top-down training crop).
        people: ``(min, max)`` figures per image (or one int).
        keypoint_set: ``"coco17"``, ``"wholebody133"``, ``"sapiens308"`` (63 of 308 joints labelled, the
            rest visibility 0: see the module doc) or ``"ap10k17"`` (renders quadrupeds).
        dense: also put the dense maps (parts, depth, normals, instance ids) into every record's extras.
        device: ``"cpu"`` or ``"cuda"``; rendering runs there (the records are numpy either way).
        framing: ``"auto"`` (crop when at most one figure), ``"crop"`` or ``"scene"``.
        clutter: add props, wall decorations and occluders.
        photo_backgrounds: probability of a real-photo backdrop per image, and of a photo texture per floor,
            wall, prop box and wall picture (:mod:`~poseforge.data.synth.photos`; needs
            ``pip install poseforge[sim2real]``). 0 (the default) renders exactly as without the option;
            labels are the same for any value.
        photo_clothing: probability of a photo print on each garment of each person (tops, trousers and
            skirts, hats, bags: the photo replaces the garment's colour and pattern, shading stays). 0 (the
            default) renders exactly as without the option; labels are the same for any value.
        facing_camera: share of figures whose front faces the camera (their heading within 90 degrees
            of it; the rest face away). 0.5 (the default) draws every heading equally likely, exactly as
            without the option; photos of people show more fronts than backs.
        batch_size: images per vectorized render call in :meth:`render_batch` (default: by image size).
    """

    def __init__(self, num_images: int, seed: int = 0, image_size: Sequence[int] = (640, 480),
                 people: "Sequence[int] | int" = (1, 4), keypoint_set: str = "coco17", dense: bool = False,
                 device: "str | torch.device" = "cpu", framing: str = "auto", clutter: bool = True,
                 batch_size: int | None = None, photo_backgrounds: float = 0.0,
                 photo_clothing: float = 0.0, facing_camera: float = 0.5) -> None:
        if num_images < 0:
            raise PoseforgeError(f"num_images must be >= 0, got {num_images}")
        width, height = _parse_pair(image_size, "image_size")
        if not (16 <= width <= 8192 and 16 <= height <= 8192):
            raise PoseforgeError(f"image_size: width and height must be in [16, 8192], got {width}x{height}")
        lo, hi = _parse_pair(people, "people")
        if not (1 <= lo <= hi <= MAX_FIGURES):
            raise PoseforgeError(f"people: expected 1 <= min <= max <= {MAX_FIGURES}, got {lo}-{hi}")
        if keypoint_set not in _FIGURES:
            raise PoseforgeError(f"keypoint_set: synthetic data has {', '.join(_FIGURES)}; got '{keypoint_set}'")
        if framing not in ("auto", "crop", "scene"):
            raise PoseforgeError(f"framing: expected auto, crop or scene, got '{framing}'")
        photo_backgrounds, photo_clothing = float(photo_backgrounds), float(photo_clothing)
        facing_camera = float(facing_camera)
        for name, value in (("photo_backgrounds", photo_backgrounds), ("photo_clothing", photo_clothing),
                            ("facing_camera", facing_camera)):
            if not 0.0 <= value <= 1.0:
                raise PoseforgeError(f"{name}: expected a probability in [0, 1], got {value}")
        if photo_backgrounds > 0 or photo_clothing > 0:
            from .photos import require_photos

            require_photos()
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise PoseforgeError("device 'cuda' requested but CUDA is not available")
        self.num_images = int(num_images)
        self.seed = int(seed)
        self.keypoint_set = get_keypoint_set(keypoint_set)
        self.dense = bool(dense)
        self.config = SceneConfig(width=width, height=height, min_figures=lo, max_figures=hi,
                                  figure=_FIGURES[keypoint_set], framing=framing, clutter=clutter,
                                  photo_backgrounds=photo_backgrounds, photo_clothing=photo_clothing,
                                  facing_camera=facing_camera)
        budget = (1 << 21) if self.device.type == "cpu" else (1 << 25)
        self.batch_size = int(batch_size) if batch_size else max(1, min(256, budget // (width * height)))
        shared = keypoint_mapping(_FIGURE_KEYPOINTS[_FIGURES[keypoint_set]], self.keypoint_set)
        self._kp_index = torch.tensor(shared.source_index, dtype=torch.int64, device=self.device)  # figure's keypoints
        # Where they go in the set; None when that is every joint in order (coco17, wholebody133, ap10k17).
        full = shared.target_index == tuple(range(self.keypoint_set.num_keypoints))
        self._kp_target = None if full else torch.tensor(shared.target_index, dtype=torch.int64, device=self.device)

    @property
    def labelled(self) -> np.ndarray:
        """``[K]`` bool: the set's joints the renderer labels (all but ``sapiens308``'s face and extra points)."""
        if self._kp_target is None:
            return np.ones(self.keypoint_set.num_keypoints, dtype=bool)
        out = np.zeros(self.keypoint_set.num_keypoints, dtype=bool)
        out[self._kp_target.cpu().numpy()] = True
        return out

    # -- sizes -----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.num_images

    @property
    def image_size(self) -> tuple[int, int]:
        return self.config.width, self.config.height

    def _check(self, index: int) -> int:
        i = int(index)
        if i < 0:
            i += self.num_images
        if not 0 <= i < self.num_images:
            raise IndexError(f"image index {index} out of range for {self.num_images} images")
        return i

    def num_people(self, index: int) -> int:
        """Figures placed in image ``index`` (no rendering). Records drop figures that end up with no
        visible pixel, which the framing makes rare; ``len(dataset[i])`` can be smaller, never larger."""
        i = self._check(index)
        rng = Rng(self.seed, torch.tensor([i]))
        return int(num_figures(rng, self.config)[0])

    def image_info(self, index: int, file_name: str | None = None) -> ImageInfo:
        """COCO image entry for image ``index`` (``file_name`` defaults to ``{index:08d}.jpg``)."""
        i = self._check(index)
        return ImageInfo(i, file_name or f"{i:08d}.jpg", self.config.width, self.config.height)

    # -- rendering -------------------------------------------------------------------------------
    def render_tensors(self, indices: "Sequence[int] | Tensor") -> SynthBatch:
        """Render images ``indices`` in one vectorized call; every output stays on the device."""
        idx = torch.as_tensor([self._check(i) for i in indices] if not isinstance(indices, Tensor) else indices,
                              dtype=torch.int64)
        idx = idx.to(self.device)
        with single_threaded(self.device), torch.no_grad():
            scene = build_scenes(self.config, self.seed, idx, self.device)
            out = render(scene.inputs, prim_ids=False)  # the primitive map is not a label
            cam = to_camera(scene.inputs.prims, scene.inputs.cam_R, scene.inputs.cam_t, scene.inputs.intr)
            labels = compute_labels(scene, out, cam, self._kp_index)
            if self._kp_target is not None:
                labels = expand_labels(labels, self._kp_target, self.keypoint_set.num_keypoints)
            return _to_batch(idx, scene.inputs.intr, scene.category, out, labels)

    def render_batch(self, indices: Iterable[int]) -> list[RenderedImage]:
        """Render many images (in vectorized chunks of ``batch_size``) into numpy records."""
        indices = [self._check(i) for i in indices]
        result: list[RenderedImage] = []
        for s in range(0, len(indices), self.batch_size):
            batch = self.render_tensors(indices[s:s + self.batch_size])
            result.extend(self._records(batch))
        return result

    def render(self, index: int) -> RenderedImage:
        """Render image ``index`` with its records and dense maps."""
        return self.render_batch([index])[0]

    def __getitem__(self, index: int) -> list[PoseInstance]:
        return self.render(index).instances

    def _records(self, batch: SynthBatch) -> list[RenderedImage]:
        cpu = {name: getattr(batch, name).cpu().numpy() for name in (
            "indices", "image", "parts", "depth", "normals", "instance", "camera", "present", "category", "keypoints",
            "visibility", "keypoints_cam", "slack", "bbox", "area")}
        W, H = self.image_size
        out = []
        for b in range(cpu["indices"].shape[0]):
            i = int(cpu["indices"][b])
            image = np.ascontiguousarray(cpu["image"][b])
            ids = cpu["instance"][b]
            dense = {"parts": cpu["parts"][b], "depth": cpu["depth"][b], "normals": cpu["normals"][b], "instance_ids": ids}
            records = []
            for p in np.flatnonzero(cpu["present"][b]):
                extras = {"mask": ids == p + 1, "keypoints_cam": cpu["keypoints_cam"][b, p],
                          "slack": cpu["slack"][b, p], "instance_index": int(p + 1)}
                if self.dense:
                    extras.update(dense)
                records.append(PoseInstance(
                    image_id=i, image_path=None, image_size=(W, H), bbox=cpu["bbox"][b, p].copy(),
                    keypoints=cpu["keypoints"][b, p].copy(), visibility=cpu["visibility"][b, p].copy(),
                    keypoint_set=self.keypoint_set.name, area=float(cpu["area"][b, p]), iscrowd=False,
                    instance_id=i * 100 + int(p) + 1, category_id=int(cpu["category"][b, p]), image=image, extras=extras))
            out.append(RenderedImage(i, image, records, dense["parts"], dense["depth"], dense["normals"], ids,
                                     cpu["camera"][b]))
        return out


def _to_batch(idx: Tensor, intr: Tensor, category: Tensor, out: RenderOutput, labels: LabelBatch) -> SynthBatch:
    B = intr.shape[0]
    camera = torch.zeros(B, 3, 3, device=intr.device)
    camera[:, 0, 0] = intr[:, 0]
    camera[:, 1, 1] = intr[:, 1]
    camera[:, 0, 2] = intr[:, 2] - 0.5
    camera[:, 1, 2] = intr[:, 3] - 0.5
    camera[:, 2, 2] = 1.0
    return SynthBatch(indices=idx, image=out.image, parts=out.parts, depth=out.depth, normals=out.normals,
                      instance=out.instance, camera=camera, present=labels.present, category=category,
                      keypoints=labels.keypoints, visibility=labels.visibility, keypoints_cam=labels.keypoints_cam,
                      slack=labels.slack, bbox=labels.bbox, area=labels.area)
