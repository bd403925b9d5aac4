"""Training data: deterministic resumable order, per-sample augmentation keys, CPU and batched paths."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from poseforge.data.augment import AugmentConfig
from poseforge.data.batch import Batch, collate
from poseforge.data.transforms import TopDownTransform
from poseforge.errors import PoseforgeError
from poseforge.train.data import (CocoSource, RawBatch, ResumableBatchSampler, SyntheticSource, TrainSamples,
                                  collate_raw, gpu_batch, make_loader, sample_seed)


def test_sampler_order_is_seeded_and_complete():
    s = ResumableBatchSampler(20, batch_size=4, seed=3)
    s.set_epoch(0)
    first = [k for batch in s for k in batch]
    assert len(first) == 20 and sorted(k[2] for k in first) == list(range(20))
    assert [k[1] for k in first] == list(range(20))  # positions in the epoch order
    s.set_epoch(0)
    assert [k for batch in s for k in batch] == first
    s.set_epoch(1)
    assert [k[2] for batch in s for k in batch] != [k[2] for k in first]


def test_sampler_resumes_mid_epoch():
    s = ResumableBatchSampler(20, batch_size=4, seed=3)
    s.set_epoch(2)
    full = list(s)
    s.set_epoch(2, start_batch=3)
    assert len(s) == 2 and list(s) == full[3:]


def test_ranks_split_the_global_batch():
    single = ResumableBatchSampler(24, batch_size=8, seed=1)
    single.set_epoch(0)
    ranks = [ResumableBatchSampler(24, batch_size=4, seed=1, rank=r, world_size=2) for r in range(2)]
    for r in ranks:
        r.set_epoch(0)
    for whole, part0, part1 in zip(single, *ranks):
        assert part0 + part1 == whole


def test_fresh_stream_and_errors():
    s = ResumableBatchSampler(1000, batch_size=4, fresh=True, batches_per_epoch=2)
    s.set_epoch(3)
    assert [k[2] for b in s for k in b] == list(range(24, 32))
    with pytest.raises(PoseforgeError, match="fewer than one global batch"):
        ResumableBatchSampler(3, batch_size=4)


def test_sample_seed_differs_per_key():
    seeds = {sample_seed(s, e, p) for s in range(3) for e in range(3) for p in range(50)}
    assert len(seeds) == 450 and all(0 <= x < 2 ** 63 for x in seeds)


@pytest.fixture(scope="module")
def synthetic():
    return SyntheticSource(12, seed=5, image_size=(48, 64), people=(1, 1), cache=True)


def test_cached_synthetic_set_is_rendered_in_chunks_and_keeps_only_images(monkeypatch):
    """The cache renders chunk by chunk (the dense maps of a whole set at 192x256 would be ~10 GB), gives
    the same pixels and labels as rendering on demand, and holds no dense maps or chunk-sized views."""
    from poseforge.data.synth import SyntheticPoseDataset

    calls: list[int] = []
    render_batch = SyntheticPoseDataset.render_batch
    monkeypatch.setattr(SyntheticPoseDataset, "render_batch",
                        lambda self, indices: calls.append(len(list(indices))) or render_batch(self, indices))
    cached = SyntheticSource(10, seed=5, image_size=(48, 64), people=(1, 1), cache=True, render_workers=0,
                             render_batch=4)
    assert calls == [4, 4, 2]
    on_demand = SyntheticSource(10, seed=5, image_size=(48, 64), people=(1, 1))
    assert len(cached) == 10
    for (record, image), (expected, expected_image) in zip(cached.load(range(10)), on_demand.load(range(10))):
        assert np.array_equal(image, expected_image) and np.array_equal(record.keypoints, expected.keypoints)
        assert image.base is None and record.extras == {}


def test_cached_synthetic_set_renders_the_same_in_worker_processes():
    """Two render processes give the in-process cache: same images, records and order."""
    options = dict(seed=7, image_size=(48, 64), people=(1, 1), cache=True, render_batch=3)
    alone = SyntheticSource(11, render_workers=0, **options)
    pooled = SyntheticSource(11, render_workers=2, **options)
    assert len(pooled) == len(alone) == 11
    for (record, image), (expected, expected_image) in zip(pooled.load(range(11)), alone.load(range(11))):
        assert np.array_equal(image, expected_image) and np.array_equal(record.keypoints, expected.keypoints)
        assert record.image_id == expected.image_id and np.array_equal(record.bbox, expected.bbox)


def test_torchrun_ranks_on_one_machine_share_the_render_cores(monkeypatch):
    from poseforge.data.synth import parallel

    monkeypatch.setattr(parallel, "usable_cores", lambda: 8)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert parallel.cores_per_process() == 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert parallel.cores_per_process() == 4
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")
    assert parallel.cores_per_process() == 1


def test_samples_depend_only_on_their_key(synthetic):
    transform = TopDownTransform((48, 64), "coco17", augment=AugmentConfig())
    samples = TrainSamples(synthetic, [transform], seed=0)
    a = samples.__getitems__([(0, 5, 2), (0, 6, 3)])
    b = samples.__getitems__([(0, 6, 3)])
    assert torch.equal(a[1]["image"], b[0]["image"]) and torch.equal(a[1]["keypoints"], b[0]["keypoints"])
    c = samples.__getitems__([(1, 6, 3)])  # same image, another epoch: other augmentation
    assert not torch.equal(c[0]["matrix"], b[0]["matrix"])


def test_loader_with_workers_gives_the_same_batches(synthetic):
    transform = TopDownTransform((48, 64), "coco17", augment=AugmentConfig())
    samples = TrainSamples(synthetic, [transform], seed=0)
    batches = []
    for workers in (0, 2):
        sampler = ResumableBatchSampler(len(synthetic), 4, seed=0)
        sampler.set_epoch(1)
        batches.append(list(make_loader(samples, sampler, workers, pin_memory=False)))
    for x, y in zip(*batches):
        assert isinstance(x, Batch) and torch.equal(x.image, y.image) and torch.equal(x.keypoints, y.keypoints)


def test_batched_augmentation_path(synthetic):
    """The GPU path (raw images, crop + augment the batch at once) runs on any device; checked on CPU."""
    transform = TopDownTransform((48, 64), "coco17", augment=AugmentConfig())
    raw = collate_raw(TrainSamples(synthetic, [transform], seed=0, raw=True).__getitems__([(0, p, p) for p in range(4)]))
    assert isinstance(raw, RawBatch) and raw.images[0].dtype == torch.uint8 and raw.images[0].shape == (3, 64, 48)
    batch = gpu_batch(raw, transform, torch.device("cpu"))
    assert batch.image.shape == (4, 3, 64, 48) and batch.image.dtype == torch.uint8
    assert batch.keypoints.shape == (4, 17, 2) and ((batch.visibility >= 0) & (batch.visibility <= 1)).all()
    again = gpu_batch(raw, transform, torch.device("cpu"))
    assert torch.equal(batch.image, again.image)  # seeded by the batch's first sample


def test_render_on_device_picks_one_person_per_image():
    source = SyntheticSource(6, seed=2, image_size=(48, 64), people=(1, 2))
    out = source.render_on_device([0, 1, 2])
    assert out["image"].shape == (3, 3, 64, 48) and out["bbox"].shape == (3, 4)
    assert out["keypoints"].shape == (3, 17, 2) and out["visibility"].shape == (3, 17)
    records = source.dataset.render_batch([0, 1, 2])
    for i, rendered in enumerate(records):
        boxes = [r.bbox for r in rendered.instances]
        assert any(np.allclose(out["bbox"][i].numpy(), b) for b in boxes)
    transform = TopDownTransform((48, 64), "coco17", augment=AugmentConfig())
    assert len(gpu_batch(out, transform, torch.device("cpu"), seed=1)) == 3


def test_coco_source(peer_data):
    source = CocoSource(peer_data / "coco/test_coco.json")
    assert len(source) == 12 and source.keypoint_set.name == "coco17"  # crowd and unlabeled people left out
    (inst, image), = source.load([0])
    assert image.ndim == 3 and image.dtype == np.uint8 and inst.num_labeled > 0
    transform = TopDownTransform((48, 64), "coco17")
    batch = collate(TrainSamples(source, [transform], 0).__getitems__([(0, 0, 0), (0, 1, 1)]))
    assert batch.image.shape == (2, 3, 64, 48)
