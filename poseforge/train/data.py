"""Training data: datasets -> top-down samples -> batches, deterministic and resumable.

Sources (:class:`CocoSource`, :class:`SyntheticSource`) give ``(record, image)`` pairs for sample
indices. :class:`TopDownSamples` turns them into crops with the core
:class:`~poseforge.data.transforms.TopDownTransform`: on the CPU in DataLoader workers
(``cv2.warpAffine``), or - ``raw=True`` - it only decodes, and :func:`gpu_batch` crops and augments
the whole batch on the GPU with ``TopDownTransform.apply_batch``. Synthetic data on CUDA is rendered
on the GPU in the main process (:meth:`SyntheticSource.render_on_device`).

Determinism: :class:`ResumableBatchSampler` yields keys ``(epoch, position, index)``; the epoch order
comes from ``(seed, epoch)`` and each sample's augmentation from ``(seed, epoch, position)``. So no
worker or global RNG is involved, a run resumed mid-epoch sees exactly the batches it would have,
and N processes with batch B see the samples one process with batch N*B sees.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from ..data.coco import read_coco
from ..data.images import load_image
from ..data.records import PoseInstance
from ..data.transforms import Batch, TopDownTransform, collate
from ..errors import PoseforgeError
from ..evaluation.runner import EvalSet, coco_eval_set, find_coco_split, synthetic_eval_set
from .config import DataSection, TrainConfig

__all__ = ["CocoSource", "SyntheticSource", "TopDownSamples", "ResumableBatchSampler", "RawBatch", "build_train_source",
           "build_val_set", "make_loader", "gpu_batch", "sample_seed", "worker_init", "single_threaded_opencv"]

log = logging.getLogger("poseforge")

_MASK64 = (1 << 64) - 1


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """A 63-bit seed for one sample's augmentation (SplitMix64 of the three numbers)."""
    x = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + position * 0x94D049BB133111EB + 1) & _MASK64
    for shift, mult in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
        x = ((x ^ (x >> shift)) * mult) & _MASK64
    return (x ^ (x >> 31)) & ((1 << 63) - 1)


# ---------------------------------------------------------------------------------------------- sources
class CocoSource:
    """Instances of a COCO keypoint file; images decoded with OpenCV when loaded."""

    def __init__(self, annotations: str | Path, image_root: str | Path | None = None, min_labeled: int = 1) -> None:
        self.coco = read_coco(annotations, image_root=image_root, skip_crowd=True, min_labeled=min_labeled)
        if not self.coco.instances:
            raise PoseforgeError(f"{annotations}: no training instances (non-crowd, >= {min_labeled} labeled keypoints)")
        self.keypoint_set = self.coco.keypoint_set
        self.name = str(annotations)
        for inst in self.coco.instances:  # segmentation polygons are not needed in workers
            inst.extras = {}

    def __len__(self) -> int:
        return len(self.coco.instances)

    def load(self, indices: Sequence[int]) -> list[tuple[PoseInstance, np.ndarray]]:
        out = []
        cache: dict[str, np.ndarray] = {}
        for i in indices:
            inst = self.coco.instances[i]
            if inst.image_path not in cache:
                cache[inst.image_path] = load_image(inst.image_path)
            out.append((inst, cache[inst.image_path]))
        return out


class SyntheticSource:
    """Procedural people: sample ``i`` is a person in synthetic image ``i`` (one image per sample, so
    an epoch of ``N`` samples in a fresh stream renders ``N`` new images). ``cache=True`` renders all
    images once, now (on the CPU in ``render_workers`` processes, default one per usable core), and
    serves them from memory. ``render_batch``: images per vectorized render call (default: by size)."""

    def __init__(self, num_images: int, seed: int, image_size: Sequence[int], people: Sequence[int],
                 keypoint_set: str = "coco17", clutter: bool = True, device: str | torch.device = "cpu",
                 cache: bool = False, render_workers: int | None = None, render_batch: int | None = None) -> None:
        from ..data.synth import SyntheticPoseDataset

        self.dataset = SyntheticPoseDataset(num_images, seed=seed, image_size=tuple(image_size), people=tuple(people),
                                            keypoint_set=keypoint_set, clutter=clutter, device=device,
                                            batch_size=render_batch)
        # What a worker process needs to build the same (uncached, CPU) source.
        self._options = dict(num_images=num_images, seed=seed, image_size=tuple(image_size), people=tuple(people),
                             keypoint_set=keypoint_set, clutter=clutter, render_batch=render_batch)
        self.keypoint_set = self.dataset.keypoint_set
        self.name = f"synthetic(seed={seed})"
        self._cache: list[tuple[PoseInstance, np.ndarray]] | None = None
        if cache:  # images without a visible person (rare) are left out of the cached set
            self._cache = self._render_cache(render_workers)
            if not self._cache:
                raise PoseforgeError(f"synthetic training set (seed {seed}): no image with a visible person")

    def _render_cache(self, workers: int | None) -> list[tuple[PoseInstance, np.ndarray]]:
        """Every image's ``(record, image)``, rendered chunk by chunk so that the dense maps (depth,
        normals, parts: ~8x the image bytes) of one chunk at a time are alive, not those of the whole
        set; on the CPU in ``workers`` processes (default: one per usable core, shared among torchrun's
        local ranks), in order."""
        from ..data.synth.parallel import cores_per_process, index_chunks, render_pool, render_progress

        n = len(self.dataset)
        chunks = index_chunks(n, self.dataset.batch_size)
        if self.dataset.device.type != "cpu":
            workers = 0
        workers = min(cores_per_process() if workers is None else workers, len(chunks))
        log.info(f"rendering {n} synthetic training images ({self.name}, "
                 f"{'%d processes' % workers if workers > 1 else 'in-process'})")
        cache: list[tuple[PoseInstance, np.ndarray]] = []
        start = time.perf_counter()
        with render_progress(n, "rendering the training set") as advance, render_pool(workers) as pool:
            parts = (pool.map(_render_chunk, [self._options] * len(chunks), chunks) if pool is not None
                     else (self._render(c, substitute=False) for c in chunks))
            for chunk, pairs in zip(chunks, parts):
                cache.extend(pair for pair in pairs if pair is not None)
                advance(len(chunk))
        log.info(f"rendered {n} images in {time.perf_counter() - start:.0f} s")
        return cache

    def __len__(self) -> int:
        return len(self._cache) if self._cache is not None else len(self.dataset)

    def _render(self, indices: Sequence[int], substitute: bool = True) -> list[Any]:
        """``(record, image)`` per index. An image whose figure ended up hidden (rare) is replaced by the
        next image, in steps of 7919, that has a visible person (``substitute``), else gives ``None``."""
        out: list[Any] = []
        for rendered in self.dataset.render_batch(indices):
            people = _trainable(rendered.instances)
            if not people and substitute:
                n = len(self.dataset)
                for k in range(1, 64):
                    rendered = self.dataset.render((rendered.index + 7919 * k) % n)
                    people = _trainable(rendered.instances)
                    if people:
                        break
            if not people:
                out.append(None)
                continue
            inst = people[rendered.index % len(people)]
            out.append((inst.copy(image=None, extras={}), rendered.image.copy()))  # not a view of the chunk
        if substitute and any(pair is None for pair in out):
            raise PoseforgeError(f"synthetic images (seed {self.dataset.seed}): no visible person near {list(indices)[:4]}")
        return out

    def load(self, indices: Sequence[int]) -> list[tuple[PoseInstance, np.ndarray]]:
        if self._cache is not None:
            return [self._cache[i] for i in indices]
        return self._render(indices)

    def render_on_device(self, indices: Sequence[int]) -> dict[str, Tensor]:
        """Render images on the dataset's device: ``image`` [B,3,H,W] uint8 and one person per image
        (``bbox`` [B,4], ``keypoints`` [B,K,2], ``visibility`` [B,K])."""
        b = self.dataset.render_tensors(list(indices))
        present = b.present.bool()
        count = present.sum(1).clamp(min=1)
        pick = torch.as_tensor(list(indices), device=present.device) % count  # which present slot
        rank = present.long().cumsum(1) - 1
        slot = ((rank == pick[:, None]) & present).float().argmax(1)
        rows = torch.arange(len(slot), device=slot.device)
        bbox = b.bbox[rows, slot].float()
        # An image whose figure ended up hidden (rare) becomes a sample without labels (zero loss weight).
        valid = present.any(1) & (bbox[:, 2] >= 2) & (bbox[:, 3] >= 2)
        w, h = self.dataset.image_size
        whole = bbox.new_tensor([0.0, 0.0, w - 1.0, h - 1.0]).expand_as(bbox)
        return {"image": b.image.permute(0, 3, 1, 2).contiguous(), "bbox": torch.where(valid[:, None], bbox, whole),
                "keypoints": b.keypoints[rows, slot].float(),
                "visibility": b.visibility[rows, slot].float() * valid[:, None]}


def _render_chunk(options: dict[str, Any], indices: list[int]) -> list[Any]:
    """One cache chunk, in a worker process (its source is built once per process)."""
    from ..data.synth.parallel import built_once

    return built_once(SyntheticSource, options)._render(indices, substitute=False)


def _trainable(instances: Sequence[PoseInstance]) -> list[PoseInstance]:
    """People worth a training sample: a box of at least 2x2 pixels and a labeled keypoint."""
    return [i for i in instances if i.bbox[2] >= 2 and i.bbox[3] >= 2 and i.num_labeled > 0]


def build_train_source(data: DataSection, keypoint_set: str, total_images: int | None = None,
                       device: str | torch.device = "cpu") -> CocoSource | SyntheticSource:
    """The training source a data section names (``total_images``: synthetic images needed in all)."""
    if data.train.lower() == "synthetic":
        s = data.synthetic
        count = (total_images or s.train_images) if s.fresh else s.train_images
        return SyntheticSource(count, s.seed, s.image_size, s.people, keypoint_set, s.clutter, device, cache=not s.fresh)
    annotations, root = find_coco_split(data.train, "train")
    source = CocoSource(annotations, root, data.min_labeled)
    if source.keypoint_set.name != keypoint_set:
        raise PoseforgeError(f"{annotations}: {source.keypoint_set.name} keypoints, but the model predicts {keypoint_set}")
    return source


def build_val_set(config: TrainConfig, keypoint_set: str) -> EvalSet | None:
    """The validation set: the held-out synthetic set, or the val split / file of the data."""
    data = config.data
    spec = data.val if data.val is not None else data.train
    if spec.lower().startswith("synthetic"):
        from ..evaluation.runner import parse_synthetic_spec

        s = data.synthetic
        kwargs = parse_synthetic_spec(spec, dict(num_images=s.val_images, seed=s.val_seed, image_size=s.image_size,
                                                 people=s.val_people, keypoint_set=keypoint_set, clutter=s.clutter))
        if kwargs["seed"] == s.seed:
            log.warning(f"validation uses the training seed {s.seed}: it is not a held-out set")
        return synthetic_eval_set(**kwargs)
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
    return coco_eval_set(annotations, boxes, image_root=root, keypoint_set=keypoint_set)


# ---------------------------------------------------------------------------------------------- samples
@dataclass
class RawBatch:
    """Decoded images and records of a batch, for augmentation on the GPU (:func:`gpu_batch`)."""

    images: list[Tensor]  # [3, H_i, W_i] uint8
    instances: list[PoseInstance]
    seed: int

    def pin_memory(self) -> "RawBatch":
        return RawBatch([im.pin_memory() for im in self.images], self.instances, self.seed)


class TopDownSamples(torch.utils.data.Dataset):
    """Keys ``(epoch, position, index)`` -> top-down training samples (see the module doc).

    DataLoader fetches a whole batch through ``__getitems__`` so a synthetic source renders it in one
    vectorized call.
    """

    def __init__(self, source: CocoSource | SyntheticSource, transform: TopDownTransform, seed: int, raw: bool = False) -> None:
        self.source, self.transform, self.seed, self.raw = source, transform, int(seed), raw

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: tuple[int, int, int]) -> dict[str, Tensor]:
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: Sequence[tuple[int, int, int]]) -> list[Any]:
        pairs = self.source.load([int(k[2]) for k in keys])
        if self.raw:
            return [(torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))), inst, sample_seed(self.seed, e, p))
                    for (inst, image), (e, p, _) in zip(pairs, keys)]
        samples = []
        for (inst, image), (epoch, position, _) in zip(pairs, keys):
            generator = torch.Generator().manual_seed(sample_seed(self.seed, epoch, position))
            samples.append(self.transform(inst, image, generator=generator))
        return samples


def collate_raw(items: Sequence[tuple[Tensor, PoseInstance, int]]) -> RawBatch:
    return RawBatch([i[0] for i in items], [i[1] for i in items], int(items[0][2]))


def gpu_batch(raw: RawBatch | dict[str, Tensor], transform: TopDownTransform, device: torch.device, seed: int | None = None) -> Batch:
    """Crop and augment a raw batch on ``device`` (one generator per batch, seeded from its first sample)."""
    generator = torch.Generator().manual_seed(raw.seed if isinstance(raw, RawBatch) else int(seed or 0))
    if isinstance(raw, RawBatch):
        images = [im.to(device, non_blocking=True) for im in raw.images]
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


def make_loader(samples: TopDownSamples, sampler: ResumableBatchSampler, num_workers: int, pin_memory: bool) -> torch.utils.data.DataLoader:
    """DataLoader over ``sampler``'s batches; its own generator keeps it off the global RNG."""
    if num_workers > 0:
        single_threaded_opencv()
    return torch.utils.data.DataLoader(
        samples, batch_sampler=sampler, num_workers=num_workers, collate_fn=collate_raw if samples.raw else collate,
        pin_memory=pin_memory, worker_init_fn=worker_init, generator=torch.Generator(),
        persistent_workers=False, prefetch_factor=4 if num_workers > 0 else None)
