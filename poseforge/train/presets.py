"""Named experiment presets (registered in ``poseforge.registry.PRESETS``).

* ``vitpose-{s,b,l,h}-coco``: the official ViTPose COCO recipes at 256x192 (mmpose
  ``td-hm_ViTPose-{size}_8xb64-210e_coco-256x192``): AdamW lr 5e-4, betas (0.9, 0.999), weight decay
  0.1 (none on norms, biases, position embeddings), layer-wise LR decay, gradient clipping at 1.0,
  210 epochs, linear warm-up over 500 iterations from 0.001 x lr, steps x0.1 at epochs 170 and 200,
  64 images per GPU x 8 GPUs, UDP heatmaps with sigma 2, flip / half-body / box shift-scale-rotate
  augmentation, flip test, validation every 10 epochs with the AP-56 person detections. The numbers
  tied to the architecture (drop path 0.1/0.3/0.5/0.55, layer decay 0.8/0.75/0.8/0.85, codec) live in
  the model zoo (``poseforge.models.zoo``) and are read from there.
* ``smoke``: a tiny ViTPose on a small set of synthetic people, CPU, about a minute: loss falls and
  held-out AP rises (a test in the default suite).
* ``synth-cpu``: the bundled pose model's recipe, a small ViTPose with a SimCC head trained on synthetic
  people on a 2-core CPU in under an hour (held-out AP 0.285 measured; the issue's goal is 0.70).
* ``synth-gpu``: ViTPose-S on synthetic people rendered on the GPU, under 20 minutes.
"""
from __future__ import annotations

from typing import Callable

from ..data.augment import AugmentConfig
from ..registry import PRESETS
from .config import (DataSection, EMASection, ModelSection, OptimSection, ScheduleSection, SyntheticSection,
                     TrainConfig)

__all__ = ["get_preset", "list_presets", "vitpose_coco_recipe", "COCO_DETECTIONS"]

# mmpose's val bbox_file, relative to the COCO folder.
COCO_DETECTIONS = "person_detection_results/COCO_val2017_detections_AP_H_56_person.json"


def vitpose_coco_recipe(size: str) -> TrainConfig:
    """The official COCO 256x192 recipe of ViTPose-``size`` (s, b, l, h) with the classic decoder."""
    from ..models.zoo import model_config

    name = f"vitpose-{size}"
    backbone = model_config(name).backbone  # drop path and layer decay of this size (zoo)
    return TrainConfig(
        name=f"{name}-coco",
        description=f"ViTPose-{size.upper()} COCO 256x192, official recipe (mmpose td-hm_ViTPose-*_8xb64-210e_coco-256x192)",
        model=ModelSection(name=name),
        data=DataSection(train="data/coco", val=None, val_boxes=COCO_DETECTIONS, batch_size=64, val_batch_size=32,
                         num_workers=4, augment=AugmentConfig.vitpose()),
        optim=OptimSection(lr=5e-4, betas=(0.9, 0.999), weight_decay=0.1, layer_decay=backbone.layer_decay,
                           clip_grad=1.0, accumulate=1, auto_scale_lr=False, base_batch_size=512),
        schedule=ScheduleSection(epochs=210, warmup_iters=500, warmup_start=0.001, kind="step", milestones=(170, 200),
                                 gamma=0.1),
        val_interval=10, flip_test=True, seed=0,
    )


def _smoke() -> TrainConfig:
    return TrainConfig(
        name="smoke",
        description="CPU smoke test: a tiny ViTPose on 1024 cached synthetic people at 48x64, ~1 minute",
        model=ModelSection(name="vitpose-tiny", overrides={"input_size": [48, 64], "head": "simple"}),
        data=DataSection(train="synthetic", batch_size=32, val_batch_size=64, num_workers=0,
                         augment=AugmentConfig(rotate_factor=30.0, half_body_prob=0.0),
                         synthetic=SyntheticSection(train_images=1024, val_images=64, seed=0, val_seed=1_000_003,
                                                    image_size=(48, 64), people=(1, 1), val_people=(1, 1),
                                                    clutter=False, fresh=False)),
        optim=OptimSection(lr=2e-3, weight_decay=0.05, layer_decay=1.0, clip_grad=1.0),
        schedule=ScheduleSection(epochs=8, warmup_iters=10, warmup_start=0.01, kind="cosine", min_lr_ratio=0.05,
                                 milestones=()),
        val_interval=4, flip_test=True, log_interval=8, seed=0, threads=2,
    )


def _synth_cpu() -> TrainConfig:
    # The bundled pose model's recipe (benchmarks/RESULTS.md): the conv stem down to stride 8 learns from
    # scratch on this budget where the 16 px patchify stem stays at the mean pose; the SimCC head
    # localizes finer than 24x32 heatmaps (AP 0.285 vs 0.198, same budget).
    return TrainConfig(
        name="synth-cpu",
        description="the bundled model: a small ViTPose (conv stem, patch 8, SimCC head) on synthetic people, "
                    "2-core CPU, ~57 minutes, held-out AP 0.285 measured (goal 0.70)",
        model=ModelSection(name="vitpose-tiny", pos_embed_init="sincos",
                           overrides={"input_size": [96, 128], "stem": "conv", "patch_size": 8, "embed_dim": 128,
                                      "num_heads": 4, "head": "simcc", "deconv_channels": [128],
                                      "deconv_kernel_sizes": [4]}),
        data=DataSection(train="synthetic", batch_size=32, val_batch_size=64, num_workers=1,
                         augment=AugmentConfig(rotate_factor=30.0, rotate_prob=0.5, scale_factor=(0.7, 1.3),
                                               half_body_prob=0.15),
                         synthetic=SyntheticSection(train_images=8192, val_images=100, seed=0, val_seed=1_000_003,
                                                    image_size=(96, 128), people=(1, 1), val_people=(1, 1),
                                                    fresh=False)),
        optim=OptimSection(lr=1e-3, weight_decay=0.05, layer_decay=1.0, clip_grad=1.0),
        schedule=ScheduleSection(epochs=13, steps_per_epoch=250, warmup_iters=100, warmup_start=0.01, kind="cosine",
                                 min_lr_ratio=0.02, milestones=()),
        val_interval=1, flip_test=True, log_interval=25, seed=0, threads=2,
    )


def _synth_gpu() -> TrainConfig:
    return TrainConfig(
        name="synth-gpu",
        description="ViTPose-S on synthetic people rendered on the GPU, < 20 minutes",
        model=ModelSection(name="vitpose-s"),
        data=DataSection(train="synthetic", batch_size=128, val_batch_size=128, num_workers=4,
                         augment=AugmentConfig(rotate_factor=40.0),
                         synthetic=SyntheticSection(train_images=65536, val_images=500, seed=0, val_seed=1_000_003,
                                                    image_size=(192, 256), people=(1, 1), val_people=(1, 1))),
        optim=OptimSection(lr=1e-3, weight_decay=0.05, layer_decay=0.9, clip_grad=1.0),
        schedule=ScheduleSection(epochs=20, warmup_iters=300, warmup_start=0.01, kind="cosine", min_lr_ratio=0.02,
                                 milestones=()),
        ema=EMASection(momentum=0.0),
        val_interval=4, flip_test=True, log_interval=50, seed=0,
    )


for _size in ("s", "b", "l", "h"):
    PRESETS.register(f"vitpose-{_size}-coco", lambda size=_size: vitpose_coco_recipe(size))
PRESETS.register("smoke", _smoke)
PRESETS.register("synth-cpu", _synth_cpu)
PRESETS.register("synth-gpu", _synth_gpu)


def list_presets(pattern: str = "*") -> list[str]:
    """Registered preset names."""
    return PRESETS.names(pattern)


def get_preset(name: str) -> TrainConfig:
    """A fresh copy of the named preset."""
    factory: Callable[[], TrainConfig] = PRESETS.get(name)
    return factory()
