"""Training data: sources -> samples (the estimator's transform) -> batches, deterministic and resumable.

Sources (:mod:`poseforge.data.sources`) give ``(record, image)`` pairs for sample indices - one person
each for top-down models, whole images for bottom-up and dense ones (``estimator.needs_boxes``).
:class:`TrainSamples` turns them into samples with the estimator's training transform, on the CPU in
DataLoader workers, or - ``raw=True``, for transforms with a batch path - only decodes, and
:func:`gpu_batch` crops and augments the whole batch on the GPU (``TopDownTransform.apply_batch``).
With ``encoded=True`` as well (training on CUDA with torchvision installed: :func:`jpeg_decoder`) the
workers do not even decode JPEG files: they read their bytes, and :func:`gpu_batch` decodes the batch's
JPEGs in one nvJPEG call on the GPU (``torchvision.io.decode_jpeg``); other formats, and JPEGs whose EXIF
orientation turns them (which nvJPEG ignores), are decoded by OpenCV in the workers as without it.
Synthetic data on CUDA is rendered on the GPU in the main process
(:meth:`~poseforge.data.sources.SyntheticSource.render_on_device`). ``data.sources`` mixes several
datasets by ratio (:class:`~poseforge.data.sources.MixedSource`), each sample carrying its task;
``data.unlabeled`` mixes pseudo-labelled images into a single-task model's training data the same way
(:func:`build_self_training_source`, every source training task 0).

Determinism: :class:`ResumableBatchSampler` yields keys ``(epoch, position, index)``; the epoch order
comes from ``(seed, epoch)`` and each sample's augmentation from ``(seed, epoch, position)``. So no
worker or global RNG is involved, a run resumed mid-epoch sees exactly the batches it would have,
and N processes with batch B see the samples one process with batch N*B sees.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from ..data.batch import Batch, collate
from ..data.images import decode_image_bytes, load_image
from ..data.evalsets import (EvalSet, coco_eval_set, find_coco_split, parse_synthetic_spec, records_eval_set,
                             synthetic_eval_set)
from ..data.readers import read_dataset
from ..data.records import PoseInstance
from ..data.sources import CocoSource, FileSource, MixedSource, SyntheticSource
from ..errors import PoseforgeError
from .config import DataSection, SourceSection, TrainConfig

__all__ = ["TrainSamples", "ResumableBatchSampler", "RawBatch", "ValidationSet", "build_train_source",
           "build_mixed_source", "build_self_training_source", "build_val_sets", "make_loader", "gpu_batch", "jpeg_decoder", "sample_seed", "worker_init",
           "single_threaded_opencv", "SEED_STRIDE", "CocoSource", "SyntheticSource", "FileSource", "MixedSource"]

SEED_STRIDE = 1_000_033  # synthetic source k of a mix renders from seed + k * SEED_STRIDE (k = 0 keeps the base seed)
_STREAM = 1 << 40  # index space of a fresh synthetic stream

log = logging.getLogger("poseforge")

_MASK64 = (1 << 64) - 1


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """A 63-bit seed for one sample's augmentation (SplitMix64 of the three numbers)."""
    x = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + position * 0x94D049BB133111EB + 1) & _MASK64
    for shift, mult in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
        x = ((x ^ (x >> shift)) * mult) & _MASK64
    return (x ^ (x >> 31)) & ((1 << 63) - 1)


# ---------------------------------------------------------------------------------------------- sources
def _train_keypoint_set(estimator: Any, task: int = 0) -> str:
    ks = estimator.keypoint_set_of(task)
    return ks.name if ks is not None else "coco17"  # models without keypoints still train on images of people


def build_train_source(data: DataSection, estimator: Any, total_images: int | None = None,
                       device: str | torch.device = "cpu") -> FileSource | SyntheticSource:
    """The training source a data section names for ``estimator`` (its first task's keypoint set; one
    person per sample for top-down models, whole images otherwise); ``total_images``: synthetic images
    needed in all."""
    keypoint_set = _train_keypoint_set(estimator)
    per_instance = bool(estimator.needs_boxes)
    if data.train.lower() == "synthetic":
        s = data.synthetic
        count = (total_images or s.train_images) if s.fresh else s.train_images
        dense = None if per_instance else getattr(estimator.transform(False), "dense", ())  # only what the model uses
        return SyntheticSource(count, s.seed, s.image_size, s.people, keypoint_set, s.clutter, device,
                               cache=not s.fresh, per_instance=per_instance, dense=dense,
                               photo_backgrounds=s.photo_backgrounds, photo_clothing=s.photo_clothing,
                               facing_camera=s.facing_camera)
    annotations, root = find_coco_split(data.train, "train")
    source = CocoSource(annotations, root, data.min_labeled, per_instance=per_instance)
    if estimator.keypoint_set_of(0) is not None and source.keypoint_set.name != keypoint_set:
        raise PoseforgeError(f"{annotations}: {source.keypoint_set.name} keypoints, but the model predicts {keypoint_set}")
    return source


def _task_of(estimator: Any, source: SourceSection, where: str) -> int:
    try:
        return estimator.task_index(source.task)
    except PoseforgeError as e:
        raise PoseforgeError(f"{where}.task: {e}") from None


def build_mixed_source(config: TrainConfig, estimator: Any) -> MixedSource:
    """The training mix ``config.data.sources`` describes: source ``k`` trains task ``sources[k].task`` of
    ``estimator`` (each source rendered or read with its task's keypoint set)."""
    data = config.data
    s = data.synthetic
    if estimator.num_tasks < 2:
        raise PoseforgeError(f"data.sources (a multi-dataset mix) needs a multi-task model such as vitpose++-tiny, "
                             f"not {config.model.name}")
    per_instance = bool(estimator.needs_boxes)
    sources, tasks, ratios, unbounded = [], [], [], []
    for k, src in enumerate(data.sources):
        where = f"data.sources[{k}]"
        t = _task_of(estimator, src, where)
        ks = _train_keypoint_set(estimator, t)
        if src.train.lower() == "synthetic":
            count = _STREAM if s.fresh else s.train_images
            source: Any = SyntheticSource(count, s.seed + k * SEED_STRIDE, s.image_size, s.people, ks, s.clutter,
                                          cache=not s.fresh, per_instance=per_instance,
                                          photo_backgrounds=s.photo_backgrounds, photo_clothing=s.photo_clothing,
                                          facing_camera=s.facing_camera)
            source.name = f"synthetic {ks} (seed {s.seed + k * SEED_STRIDE})"
            unbounded.append(s.fresh)
        else:
            path = Path(src.train)
            annotations, root = (find_coco_split(path, "train") if path.is_dir() else (path, None))
            source = FileSource(annotations, src.image_root or root, src.format, data.min_labeled, ks, per_instance)
            if source.keypoint_set.name != ks:
                raise PoseforgeError(f"{where}: {annotations} has {source.keypoint_set.name} keypoints but task "
                                     f"'{src.task}' predicts {ks}")
            unbounded.append(False)
        sources.append(source)
        tasks.append(t)
        ratios.append(src.ratio)
    finite = [len(src) for src, u in zip(sources, unbounded) if not u]
    length = sum(finite) if len(finite) == len(sources) else max(s.train_images, 1)
    return MixedSource(sources, tasks, ratios, length, config.seed, unbounded)


def build_self_training_source(config: TrainConfig, estimator: Any) -> MixedSource:
    """The training data mixed with pseudo-labelled images (``data.unlabeled``; the labels file written or
    checked by :func:`poseforge.train.pseudo.prepare_pseudo_labels`): source 0 is what ``data.train`` names
    (a fresh synthetic stream stays a stream), source 1 the labels file's people (images). An epoch is the
    training data's epoch (``data.synthetic.train_images`` for a stream) plus ``ratio`` times as many
    pseudo-labelled samples; both sources train task 0."""
    data, u = config.data, config.data.unlabeled
    if u.labels is None:
        raise PoseforgeError("data.unlabeled.labels: not set (poseforge.train.pseudo.prepare_pseudo_labels writes it)")
    if estimator.num_tasks > 1 or estimator.keypoint_set_of(0) is None:
        raise PoseforgeError(f"data.unlabeled (self-training on pseudo-labels) needs a single-task keypoint model, not "
                             f"{config.model.name}")
    keypoint_set = _train_keypoint_set(estimator)
    stream = data.train.lower() == "synthetic" and data.synthetic.fresh
    base = build_train_source(data, estimator, _STREAM if stream else None)
    pseudo = FileSource(u.labels, u.images, "coco", data.min_labeled, None, bool(estimator.needs_boxes))
    if pseudo.keypoint_set.name != keypoint_set:
        raise PoseforgeError(f"{u.labels}: {pseudo.keypoint_set.name} pseudo-labels, but the model predicts "
                             f"{keypoint_set}: the teacher must predict the keypoints the model learns")
    pseudo.name = f"pseudo-labels {u.labels}"
    labelled = data.synthetic.train_images if stream else len(base)
    length = labelled + max(1, round(u.ratio * labelled))
    return MixedSource([base, pseudo], [0, 0], [1.0, u.ratio], length, config.seed, [stream, False])


@dataclass
class ValidationSet:
    """An evaluation set the trainer validates on: ``name`` (a task name in a mix, else ``None``), the
    model ``task`` it scores and the :class:`~poseforge.data.evalsets.EvalSet`."""

    name: str | None
    task: int
    data: EvalSet


def build_val_sets(config: TrainConfig, estimator: Any) -> list[ValidationSet]:
    """The validation sets: one (the held-out synthetic set, or the val split / file of the data), or with
    ``data.sources`` one per source (its task's held-out synthetic set, or its file's val split)."""
    data = config.data
    if data.sources:
        s = data.synthetic
        out = []
        for k, src in enumerate(data.sources):
            t = _task_of(estimator, src, f"data.sources[{k}]")
            ks = _train_keypoint_set(estimator, t)
            spec = src.val if src.val is not None else src.train
            if spec.lower() == "synthetic":
                eval_set = synthetic_eval_set(num_images=s.val_images, seed=s.val_seed + k * SEED_STRIDE,
                                              image_size=s.image_size, people=s.val_people, keypoint_set=ks,
                                              clutter=s.clutter)
            else:
                path = Path(spec)
                annotations, root = find_coco_split(path, "val") if path.is_dir() else (path, None)
                gt = read_dataset(annotations, src.format, src.image_root or root, keypoint_set=ks)
                if gt.keypoint_set.name != ks:
                    raise PoseforgeError(f"{annotations}: {gt.keypoint_set.name} keypoints, but the task predicts {ks}")
                eval_set = records_eval_set(gt, str(annotations))
            out.append(ValidationSet(estimator.task_names[t], t, eval_set))
        return out
    keypoint_set = _train_keypoint_set(estimator)
    spec = data.val if data.val is not None else data.train
    if spec.lower().startswith("synthetic"):
        s = data.synthetic
        kwargs = parse_synthetic_spec(spec, dict(num_images=s.val_images, seed=s.val_seed, image_size=s.image_size,
                                                 people=s.val_people, keypoint_set=keypoint_set, clutter=s.clutter))
        if kwargs["seed"] == s.seed:
            log.warning(f"validation uses the training seed {s.seed}: it is not a held-out set")
        return [ValidationSet(None, 0, synthetic_eval_set(**kwargs))]
    path = Path(spec)
    boxes = data.val_boxes
    if boxes is not None and not Path(boxes).is_absolute() and not Path(boxes).exists():
        base = path if path.is_dir() else path.parent
        candidate = base / boxes
        if candidate.exists():
            boxes = str(candidate)
        else:
            log.warning(f"detection boxes {boxes} not found (also not in {base}); validating with ground-truth boxes")
            boxes = None
    if path.is_dir():
        annotations, root = find_coco_split(path, "val")
    else:
        annotations, root = path, None
        if data.val is None:
            log.warning(f"validating on the training file {path} (give data.val for a held-out set)")
    return [ValidationSet(None, 0, coco_eval_set(annotations, boxes, image_root=root, keypoint_set=keypoint_set))]


# ---------------------------------------------------------------------------------------------- samples
@dataclass
class RawBatch:
    """Decoded images and records of a batch, for augmentation on the GPU (:func:`gpu_batch`)."""

    images: list[Tensor]  # [3, H_i, W_i] uint8, or a JPEG file's bytes [n] uint8 (decoded by gpu_batch)
    instances: list[PoseInstance]
    seed: int

    def pin_memory(self) -> "RawBatch":
        return RawBatch([im.pin_memory() for im in self.images], self.instances, self.seed)


class TrainSamples(torch.utils.data.Dataset):
    """Keys ``(epoch, position, index)`` -> training samples (see the module doc): each record goes through
    ``transforms[k]``, ``k`` its source in a mix (0 for a single source).

    DataLoader fetches a whole batch through ``__getitems__`` so a synthetic source renders it in one
    vectorized call.
    """

    def __init__(self, source: Any, transforms: Sequence[Any], seed: int, raw: bool = False, encoded: bool = False) -> None:
        self.source, self.transforms, self.seed, self.raw = source, list(transforms), int(seed), raw
        # JPEG bytes instead of pixels: file sources only (the renderer makes pixels)
        self.encoded = encoded and raw and isinstance(source, FileSource)
        if raw and len({id(t) for t in self.transforms}) != 1:
            raise PoseforgeError("raw (GPU-augmented) batches need one transform for all sources")

    @property
    def transform(self) -> Any:
        return self.transforms[0]

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: tuple[int, int, int]) -> dict[str, Tensor]:
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: Sequence[tuple[int, int, int]]) -> list[Any]:
        if self.encoded:
            units = [self.source.units[int(k[2])] for k in keys]
            return [(_file_tensor(unit.image_path), unit, sample_seed(self.seed, e, p)) for unit, (e, p, _) in zip(units, keys)]
        loaded = self.source.load([int(k[2]) for k in keys])
        if self.raw:
            return [(torch.from_numpy(np.ascontiguousarray(item[1].transpose(2, 0, 1))), item[0], sample_seed(self.seed, e, p))
                    for item, (e, p, _) in zip(loaded, keys)]
        samples = []
        for item, (epoch, position, _) in zip(loaded, keys):
            generator = torch.Generator().manual_seed(sample_seed(self.seed, epoch, position))
            k = item[2] if len(item) > 2 else 0
            samples.append(self.transforms[k](item[0], item[1], generator=generator))
        return samples


def collate_raw(items: Sequence[tuple[Tensor, PoseInstance, int]]) -> RawBatch:
    return RawBatch([i[0] for i in items], [i[1] for i in items], int(items[0][2]))


# ---------------------------------------------------------------------------------------------- JPEG bytes
JpegDecoder = Callable[[list[Tensor]], list[Tensor]]


def jpeg_decoder(device: torch.device | str, mode: str = "auto") -> JpegDecoder | None:
    """The batched JPEG decoder :func:`gpu_batch` uses for ``device``: ``torchvision.io.decode_jpeg`` on
    CUDA (nvJPEG) when torchvision is installed (it is optional), else ``None`` (OpenCV in the workers).

    ``mode``: ``"auto"`` (as just said), ``"opencv"`` (always ``None``) or ``"nvjpeg"`` (an error
    where it is unavailable).
    """
    if mode == "opencv":
        return None
    if mode not in ("auto", "nvjpeg"):
        raise PoseforgeError(f"data.decode: expected auto, opencv or nvjpeg, got {mode!r}")
    device = torch.device(device)
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError:
        decode_jpeg = None
    if device.type != "cuda" or decode_jpeg is None:
        if mode == "nvjpeg":
            raise PoseforgeError(f"data.decode=nvjpeg needs CUDA and torchvision (training on {device}"
                                 f"{'' if decode_jpeg is not None else ', torchvision not installed'}); use auto or opencv")
        return None

    def decode(data: list[Tensor]) -> list[Tensor]:
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)

    return decode


def _file_tensor(path: str) -> Tensor:
    """A JPEG file's bytes as a 1-D uint8 tensor for decoding on the device; pixels ``[3, H, W]`` (decoded
    here by OpenCV) for other formats and for JPEGs that EXIF turns. Read errors are the usual DataErrors."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        load_image(path)  # raises the one-line DataError that names the problem (missing, directory ...)
        raise
    if data[:3] == b"\xff\xd8\xff" and _exif_orientation(data) in (0, 1):
        return torch.frombuffer(bytearray(data), dtype=torch.uint8)
    return torch.from_numpy(np.ascontiguousarray(decode_image_bytes(data, path).transpose(2, 0, 1)))


def _exif_orientation(jpeg: bytes) -> int:
    """The EXIF orientation tag of a JPEG (1 upright, 2-8 mirrored / turned; 0 when there is none)."""
    pos = 2
    while pos + 4 <= len(jpeg) and jpeg[pos] == 0xFF:
        marker, length = jpeg[pos + 1], int.from_bytes(jpeg[pos + 2:pos + 4], "big")
        if marker in (0xDA, 0xD9):  # start of scan / end of image: no more metadata segments
            return 0
        segment = jpeg[pos + 4:pos + 2 + length]
        if marker == 0xE1 and segment[:6] == b"Exif\x00\x00":
            tiff = segment[6:]
            order = "little" if tiff[:2] == b"II" else "big"
            ifd = int.from_bytes(tiff[4:8], order)
            count = int.from_bytes(tiff[ifd:ifd + 2], order)
            for entry in range(ifd + 2, min(ifd + 2 + 12 * count, len(tiff) - 11), 12):
                if int.from_bytes(tiff[entry:entry + 2], order) == 0x0112:
                    return int.from_bytes(tiff[entry + 8:entry + 10], order)
            return 0
        pos += 2 + length
    return 0


_NVJPEG_FAILED = False


def _decode_jpegs(data: list[Tensor], decode: JpegDecoder | None, device: torch.device) -> list[Tensor]:
    """Decode JPEG byte tensors on ``device``: one batched call of ``decode`` (nvJPEG), or OpenCV when there
    is none or when it fails (nvJPEG returns nothing for the batch if one image is unsupported, e.g. CMYK)."""
    global _NVJPEG_FAILED
    if decode is not None:
        try:
            return list(decode(data))
        except RuntimeError as error:
            if not _NVJPEG_FAILED:
                log.warning(f"nvJPEG could not decode a batch, decoding it with OpenCV ({str(error).splitlines()[0]})")
                _NVJPEG_FAILED = True
    return [torch.from_numpy(np.ascontiguousarray(decode_image_bytes(d.numpy()).transpose(2, 0, 1))).to(device)
            for d in data]


def gpu_batch(raw: RawBatch | dict[str, Tensor], transform: Any, device: torch.device, seed: int | None = None,
              decode: JpegDecoder | None = None) -> Batch:
    """Crop and augment a raw batch on ``device`` (one generator per batch, seeded from its first sample);
    JPEG bytes in it are decoded first, all in one call of ``decode`` (:func:`jpeg_decoder`)."""
    generator = torch.Generator().manual_seed(raw.seed if isinstance(raw, RawBatch) else int(seed or 0))
    if isinstance(raw, RawBatch):
        images = [im.to(device, non_blocking=True) if im.ndim == 3 else im for im in raw.images]
        encoded = [i for i, im in enumerate(images) if im.ndim == 1]
        if encoded:
            for i, im in zip(encoded, _decode_jpegs([images[i] for i in encoded], decode, device)):
                images[i] = im
        same = len({tuple(im.shape) for im in images}) == 1
        out = transform.apply_batch(torch.stack(images) if same else images, raw.instances, generator=generator)
    else:
        out = transform.apply_batch(raw["image"], bboxes=raw["bbox"], keypoints=raw["keypoints"],
                                    visibility=raw["visibility"], generator=generator)
    return Batch.from_dict(out)


# ---------------------------------------------------------------------------------------------- order
class ResumableBatchSampler(torch.utils.data.Sampler):
    """Batches of keys ``(epoch, position, index)`` for one process, resumable mid-epoch.

    Global batch ``g`` of an epoch covers positions ``[g*B*W, (g+1)*B*W)`` of the epoch order (``B``
    per-process batch, ``W`` processes); process ``r`` takes its ``r``-th slice of ``B``. The order is
    a seeded permutation (``shuffle``) or, with ``fresh``, new indices ``epoch*N + position`` every
    epoch (an endless synthetic stream). Incomplete global batches are dropped.
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int = 0, shuffle: bool = True, rank: int = 0,
                 world_size: int = 1, fresh: bool = False, batches_per_epoch: int | None = None) -> None:
        self.num_samples, self.batch_size, self.seed = int(num_samples), int(batch_size), int(seed)
        self.shuffle, self.rank, self.world_size, self.fresh = shuffle, int(rank), int(world_size), fresh
        full = self.num_samples // (self.batch_size * self.world_size)
        self.batches_per_epoch = int(batches_per_epoch) if batches_per_epoch else full
        if self.batches_per_epoch < 1:
            raise PoseforgeError(f"{num_samples} training samples are fewer than one global batch "
                                 f"({batch_size} x {world_size} processes)")
        if not fresh and self.batches_per_epoch > full:
            raise PoseforgeError(f"{self.batches_per_epoch} batches per epoch need more than the {num_samples} samples")
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Iterate epoch ``epoch`` from its batch ``start_batch`` on."""
        self.epoch, self.start_batch = int(epoch), int(start_batch)

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start_batch

    def _order(self) -> Tensor:
        global_size = self.batches_per_epoch * self.batch_size * self.world_size
        if self.fresh:
            return torch.arange(global_size, dtype=torch.int64) + self.epoch * global_size
        if not self.shuffle:
            return torch.arange(self.num_samples, dtype=torch.int64)
        generator = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, -1))
        return torch.randperm(self.num_samples, generator=generator)

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        order = self._order().tolist()
        step = self.batch_size * self.world_size
        for g in range(self.start_batch, self.batches_per_epoch):
            start = g * step + self.rank * self.batch_size
            yield [(self.epoch, p, order[p] % max(self.num_samples, 1) if not self.fresh else order[p])
                   for p in range(start, start + self.batch_size)]


def worker_init(_: int) -> None:
    """One torch thread per worker: the workers and the training process share the cores."""
    torch.set_num_threads(1)


def single_threaded_opencv() -> None:
    """Make OpenCV single-threaded in this process, before forking workers.

    OpenCV's pthreads pool is not fork-safe: a forked worker that reconfigures the pool it inherited
    (``cv2.setNumThreads`` in the child) can deadlock. Set in the parent, the workers inherit a pool
    of one thread and never touch it.
    """
    import cv2

    cv2.setNumThreads(1)


def make_loader(samples: TrainSamples, sampler: ResumableBatchSampler, num_workers: int, pin_memory: bool,
                persistent: bool = False) -> torch.utils.data.DataLoader:
    """DataLoader over ``sampler``'s batches; its own generator keeps it off the global RNG.

    ``persistent``: its workers live on between epochs (iterate it again after ``sampler.set_epoch``):
    what they compute depends on the keys alone, but they keep the ``samples`` (transforms included) they
    copied at the first iteration."""
    if num_workers > 0:
        single_threaded_opencv()
    return torch.utils.data.DataLoader(
        samples, batch_sampler=sampler, num_workers=num_workers, collate_fn=collate_raw if samples.raw else collate,
        pin_memory=pin_memory, worker_init_fn=worker_init, generator=torch.Generator(),
        persistent_workers=persistent and num_workers > 0, prefetch_factor=4 if num_workers > 0 else None)
