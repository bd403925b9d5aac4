"""Training sources: ``load(indices) -> [(record, image)]`` from annotation files, the synthetic renderer
or a ratio-mixed set of sources.

A source serves samples of one of two granularities, chosen when it is built:

* ``per_instance=True`` (top-down models): sample ``i`` is one person, a
  :class:`~poseforge.data.records.PoseInstance`;
* ``per_instance=False`` (bottom-up and dense models): sample ``i`` is one image with every person in
  it (and, from the renderer, its dense labels), an :class:`~poseforge.data.records.ImageRecord`.

Records come with their decoded ``H x W x 3`` uint8 RGB pixels. Sources are picklable and cheap to
rebuild in DataLoader workers.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import PoseforgeError
from .datasets import MixedDataset
from .image_transform import ignored
from .images import load_image
from .readers import read_dataset
from .records import ImageRecord, PoseInstance

__all__ = ["FileSource", "CocoSource", "SyntheticSource", "MixedSource", "trainable"]

log = logging.getLogger("poseforge")

_DENSE_MAPS = {"seg": "parts", "depth": "depth", "normals": "normals"}  # record label -> RenderedImage field
Sample = tuple[Any, np.ndarray]  # (PoseInstance | ImageRecord, H x W x 3 uint8 RGB)


def trainable(instances: Sequence[PoseInstance]) -> list[PoseInstance]:
    """People worth a training sample: not a crowd region, a box of at least 2x2 pixels, a labeled keypoint."""
    return [i for i in instances if not i.iscrowd and i.bbox[2] >= 2 and i.bbox[3] >= 2 and i.num_labeled > 0]


class FileSource:
    """Instances (or images) of an annotation file in any ``poseforge.data.readers`` format (COCO-style
    or MPII); images decoded with OpenCV when loaded."""

    def __init__(self, annotations: str | Path, image_root: str | Path | None = None, fmt: str = "auto",
                 min_labeled: int = 1, keypoint_set: str | None = None, per_instance: bool = True) -> None:
        self.coco = read_dataset(annotations, fmt, image_root, keypoint_set=keypoint_set, skip_crowd=per_instance,
                                 min_labeled=min_labeled if per_instance else 0)
        self.per_instance = per_instance
        for inst in self.coco.instances:  # segmentation polygons are not needed in workers ...
            # ... except the regions a bottom-up loss ignores (crowds, people without labels: ignore_map)
            keep = not per_instance and ignored(inst) and "segmentation" in inst.extras
            inst.extras = {"segmentation": _compact(inst.extras["segmentation"])} if keep else {}
        if per_instance:
            self.units: list[Any] = self.coco.instances
        else:
            by_image = self.coco.instances_by_image()
            self.units = [ImageRecord(i, info.path, (info.width, info.height), self.coco.keypoint_set.name, people)
                          for i, info in self.coco.images.items()
                          for people in [by_image[i]] if any(p.num_labeled >= max(min_labeled, 1) for p in trainable(people))]
        if not self.units:
            raise PoseforgeError(f"{annotations}: no training {'instances' if per_instance else 'images'} "
                                 f"(non-crowd, >= {min_labeled} labeled keypoints)")
        self.keypoint_set = self.coco.keypoint_set
        self.name = str(annotations)

    def __len__(self) -> int:
        return len(self.units)

    def load(self, indices: Sequence[int]) -> list[Sample]:
        out = []
        cache: dict[str, np.ndarray] = {}
        for i in indices:
            unit = self.units[i]
            if unit.image_path not in cache:
                cache[unit.image_path] = load_image(unit.image_path)
            out.append((unit, cache[unit.image_path]))
        return out


def _compact(segmentation: Any) -> Any:
    """COCO polygons as float64 arrays (a tenth of the memory of lists of Python floats, for every worker);
    RLEs as they are."""
    if isinstance(segmentation, list) and all(isinstance(p, list) for p in segmentation):
        try:
            return [np.asarray(p, dtype=np.float64) for p in segmentation]
        except (TypeError, ValueError):  # not numbers: left for ignore_map to report with its record
            return segmentation
    return segmentation


class CocoSource(FileSource):
    """A COCO keypoint file's instances (``per_instance``) or images."""

    def __init__(self, annotations: str | Path, image_root: str | Path | None = None, min_labeled: int = 1,
                 per_instance: bool = True) -> None:
        super().__init__(annotations, image_root, "auto", min_labeled, per_instance=per_instance)


class SyntheticSource:
    """Procedural people: sample ``i`` comes from synthetic image ``i`` (one image per sample, so an
    epoch of ``N`` samples in a fresh stream renders ``N`` new images) - one of its people
    (``per_instance``) or the whole image with its dense labels. ``cache=True`` renders all images once,
    now (on the CPU in ``render_workers`` processes, default one per usable core), and serves them from
    memory. ``render_batch``: images per vectorized render call (default: by size). ``dense``: the dense
    labels whole-image records carry (default all: ``seg``, ``depth``, ``normals``; a bottom-up keypoint
    model needs none: a cached 256x256 image without them takes a seventh of the memory). A
    whole-image record's people without a labeled keypoint keep their visible ``mask`` in ``extras`` (the
    region a bottom-up loss ignores, :func:`~poseforge.data.image_transform.ignore_map`)."""

    def __init__(self, num_images: int, seed: int, image_size: Sequence[int], people: Sequence[int],
                 keypoint_set: str = "coco17", clutter: bool = True, device: str | torch.device = "cpu",
                 cache: bool = False, render_workers: int | None = None, render_batch: int | None = None,
                 per_instance: bool = True, dense: Sequence[str] | None = None, photo_backgrounds: float = 0.0,
                 photo_clothing: float = 0.0, facing_camera: float = 0.5) -> None:
        from .synth import SyntheticPoseDataset

        self.dataset = SyntheticPoseDataset(num_images, seed=seed, image_size=tuple(image_size), people=tuple(people),
                                            keypoint_set=keypoint_set, clutter=clutter, device=device,
                                            batch_size=render_batch, photo_backgrounds=photo_backgrounds,
                                            photo_clothing=photo_clothing, facing_camera=facing_camera)
        self.per_instance = per_instance
        unknown = sorted(set(dense or ()) - set(_DENSE_MAPS))
        if unknown:
            raise PoseforgeError(f"SyntheticSource: unknown dense labels {unknown}; known: {', '.join(_DENSE_MAPS)}")
        self.dense = tuple(_DENSE_MAPS) if dense is None else tuple(dense)
        # What a worker process needs to build the same (uncached, CPU) source.
        self._options = dict(num_images=num_images, seed=seed, image_size=tuple(image_size), people=tuple(people),
                             keypoint_set=keypoint_set, clutter=clutter, render_batch=render_batch,
                             per_instance=per_instance, dense=self.dense, photo_backgrounds=photo_backgrounds,
                             photo_clothing=photo_clothing, facing_camera=facing_camera)
        self.keypoint_set = self.dataset.keypoint_set
        self.name = f"synthetic(seed={seed})"
        self._cache: list[Sample] | None = None
        if cache:  # images without a visible person (rare) are left out of the cached set
            self._cache = self._render_cache(render_workers)
            if not self._cache:
                raise PoseforgeError(f"synthetic training set (seed {seed}): no image with a visible person")

    def _render_cache(self, workers: int | None) -> list[Sample]:
        """Every image's ``(record, image)``, rendered chunk by chunk so that the dense maps (depth,
        normals, parts: ~8x the image bytes) of one chunk at a time are alive, not those of the whole
        set; on the CPU in ``workers`` processes (default: one per usable core, shared among torchrun's
        local ranks), in order."""
        from .synth.parallel import cores_per_process, index_chunks, render_pool, render_progress

        n = len(self.dataset)
        chunks = index_chunks(n, self.dataset.batch_size)
        if self.dataset.device.type != "cpu":
            workers = 0
        workers = min(cores_per_process() if workers is None else workers, len(chunks))
        log.info(f"rendering {n} synthetic training images ({self.name}, "
                 f"{'%d processes' % workers if workers > 1 else 'in-process'})")
        cache: list[Sample] = []
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

    def _sample(self, rendered: Any) -> Sample | None:
        people = trainable(rendered.instances)
        if not people:
            return None
        image = rendered.image.copy()  # not a view of the chunk
        if self.per_instance:
            inst = people[rendered.index % len(people)]
            return inst.copy(image=None, extras={}), image
        people = [i.copy(image=None, extras={"mask": i.extras["mask"].copy()} if ignored(i) and "mask" in i.extras else {})
                  for i in rendered.instances]
        dense = {name: getattr(rendered, _DENSE_MAPS[name]).copy() for name in self.dense}
        return ImageRecord(rendered.index, None, self.dataset.image_size, self.keypoint_set.name, people, dense), image

    def _render(self, indices: Sequence[int], substitute: bool = True) -> list[Any]:
        """``(record, image)`` per index. An image whose figure ended up hidden (rare) is replaced by the
        next image, in steps of 7919, that has a visible person (``substitute``), else gives ``None``."""
        out: list[Any] = []
        for rendered in self.dataset.render_batch(indices):
            sample = self._sample(rendered)
            if sample is None and substitute:
                n = len(self.dataset)
                for k in range(1, 64):
                    sample = self._sample(self.dataset.render((rendered.index + 7919 * k) % n))
                    if sample is not None:
                        break
            out.append(sample)
        if substitute and any(pair is None for pair in out):
            raise PoseforgeError(f"synthetic images (seed {self.dataset.seed}): no visible person near {list(indices)[:4]}")
        return out

    def load(self, indices: Sequence[int]) -> list[Sample]:
        if self._cache is not None:
            return [self._cache[i] for i in indices]
        return self._render(indices)

    def render_on_device(self, indices: Sequence[int]) -> dict[str, Tensor]:
        """Render images on the dataset's device (per-instance sources): ``image`` [B,3,H,W] uint8 and one
        person per image (``bbox`` [B,4], ``keypoints`` [B,K,2], ``visibility`` [B,K])."""
        if not self.per_instance:
            raise PoseforgeError("render_on_device serves one person per image (a per-instance source)")
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
    from .synth.parallel import built_once

    return built_once(SyntheticSource, options)._render(indices, substitute=False)


class MixedSource:
    """Several sources mixed by ratio (:class:`~poseforge.data.datasets.MixedDataset`); source ``k``
    trains task ``tasks[k]``, and every record it gives carries that dataset index."""

    def __init__(self, sources: Sequence[Any], tasks: Sequence[int], ratios: Sequence[float], length: int,
                 seed: int, unbounded: Sequence[bool]) -> None:
        self.sources = list(sources)
        self.tasks = [int(t) for t in tasks]
        self.mix = MixedDataset([None if u else len(s) for s, u in zip(self.sources, unbounded)], ratios, length, seed)
        self.keypoint_sets = [s.keypoint_set for s in self.sources]
        self.name = "mix(" + ", ".join(f"{s.name} x{r:g}" for s, r in zip(self.sources, ratios)) + ")"

    def __len__(self) -> int:
        return len(self.mix)

    def load(self, indices: Sequence[int]) -> list[tuple[Any, np.ndarray, int]]:
        """``(record, image, source)`` triples in the order of ``indices``; each source loads its share at once."""
        source, local = self.mix.locate(indices)
        out: list[Any] = [None] * len(source)
        for k in np.unique(source):
            rows = np.flatnonzero(source == k)
            for row, (record, image) in zip(rows, self.sources[int(k)].load(local[rows].tolist())):
                task = self.tasks[int(k)]
                tagged = (record.copy(dataset_index=task) if isinstance(record, PoseInstance)
                          else dataclasses.replace(record, dataset_index=task))
                out[row] = (tagged, image, int(k))
        return out
