"""Named experiment presets (registered in ``poseforge.registry.PRESETS``).

* ``vitpose-{s,b,l,h}-coco``: the official ViTPose COCO recipes at 256x192 (mmpose
  ``td-hm_ViTPose-{size}_8xb64-210e_coco-256x192``): AdamW lr 5e-4, betas (0.9, 0.999), weight decay
  0.1 (none on norms, biases, position embeddings), layer-wise LR decay, gradient clipping at 1.0,
  210 epochs, linear warm-up over 500 iterations from 0.001 x lr, steps x0.1 at epochs 170 and 200,
  64 images per GPU x 8 GPUs, UDP heatmaps with sigma 2, flip / half-body / box shift-scale-rotate
  augmentation, flip test, validation every 10 epochs with the AP-56 person detections. The numbers
  tied to the architecture (drop path 0.1/0.3/0.5/0.55, layer decay 0.8/0.75/0.8/0.85, codec) live in
  the model zoo (``poseforge.models.zoo``) and are read from there.
* ``smoke``: a small ViTPose on 4096 synthetic people at 96x128, under 3 minutes on a 2-core CPU: loss
  falls and held-out AP clears a floor (a test in the default suite; AP 0.037 measured).
* ``synth-cpu``: the bundled pose model's recipe, a small ViTPose with a SimCC head trained on synthetic
  people on a 2-core CPU in under an hour (held-out AP 0.714 in 54 minutes measured; the goal was 0.70).
* ``synth-gpu``: ViTPose-S on synthetic people rendered on the GPU, under 20 minutes.
* ``litepose-xs-synth``: LitePose-XS, bottom-up (no detector), at 256x256 on synthetic scenes of 1-6
  people with COCO-17 keypoints, a fresh image per sample, 2-core CPU in 57 minutes measured; held-out
  scenes of the same kind (AP 0.0002: joints found, but its left and right heatmaps are the same maps, so
  left/right pairs collapse onto one point; the 0.50 goal is not met).
* ``rtmpose-{t,s,m,l}-coco``: the official RTMPose COCO recipes at 256x192 (mmpose
  ``rtmpose-{size}_8xb256-420e_coco-256x192``): AdamW lr 4e-3 (no decay on norms and biases), weight
  decay 0.05 for m/l and 0 for t/s, 420 epochs, linear warm-up over 1000 iterations from 1e-5 x lr,
  cosine from epoch 210 to 420 down to 0.05 x lr, 256 images per GPU x 8 GPUs, seed 21, EMA of the
  weights (momentum 0.0002) for m/l, the RTMPose augmentation (box scale 0.6-1.4, rotation 80, HSV,
  blur, one coarse-dropout hole) switched to its milder stage 2 for the last 30 epochs, flip test,
  validation every 10 epochs in ground-truth boxes (the config's detection file is commented out).
* ``rtmpose-t-synth``: RTMPose-t as published, from scratch on synth-cpu's synthetic people and held-out
  set, 2-core CPU: held-out AP 0.440 in 53 minutes measured (``rtmpose-t.synth``; the goal of the
  ViTPose's 0.71 is not met, see benchmarks/RESULTS.md).
* ``sapiens-tiny-{pose,seg,depth,normal}-synth``: a CPU-sized Sapiens fine-tuned on synthetic people for one
  task with Sapiens' optimizer (weight decay 0.1, layer-wise LR decay 0.85), from an MAE run or from scratch.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

from ..data.augment import AugmentConfig
from ..registry import PRESETS
from .config import (DataSection, EMASection, LossSection, ModelSection, OptimSection, ScheduleSection, SyntheticSection,
                     TrainConfig)

__all__ = ["get_preset", "list_presets", "vitpose_coco_recipe", "rtmpose_coco_recipe", "sapiens_tiny_recipe",
           "SAPIENS_TINY_TASKS", "COCO_DETECTIONS"]

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


def rtmpose_coco_recipe(size: str) -> TrainConfig:
    """The official COCO 256x192 recipe of RTMPose-``size`` (t, s, m, l): mmpose
    ``rtmpose-{size}_8xb256-420e_coco-256x192``."""
    heavy = size in ("m", "l")  # t and s train without weight decay and without EMA
    return TrainConfig(
        name=f"rtmpose-{size}-coco",
        description=f"RTMPose-{size} COCO 256x192, official recipe (mmpose rtmpose-{size}_8xb256-420e_coco-256x192)",
        model=ModelSection(name=f"rtmpose-{size}"),
        data=DataSection(train="data/coco", val=None, val_boxes=None, batch_size=256, val_batch_size=64, num_workers=10,
                         augment=AugmentConfig.rtmpose(1), augment_stage2=AugmentConfig.rtmpose(2), stage2_epochs=30),
        optim=OptimSection(lr=4e-3, betas=(0.9, 0.999), weight_decay=0.05 if heavy else 0.0, layer_decay=1.0,
                           clip_grad=0.0, accumulate=1, auto_scale_lr=False, base_batch_size=1024),
        schedule=ScheduleSection(epochs=420, warmup_iters=1000, warmup_start=1e-5, kind="cosine", decay_begin_epoch=210,
                                 min_lr_ratio=0.05, milestones=()),
        ema=EMASection(momentum=0.0002 if heavy else 0.0, gamma=2000.0),
        val_interval=10, flip_test=True, seed=21,
    )


def _synthetic_people(name: str, description: str, model: ModelSection, *, image_size: tuple[int, int],
                      train_images: int, val_images: int, fresh: bool, clutter: bool, augment: AugmentConfig,
                      batch_size: int, val_batch_size: int, num_workers: int, lr: float, layer_decay: float,
                      epochs: int, warmup_iters: int, min_lr_ratio: float, steps_per_epoch: int | None = None,
                      val_interval: int, log_interval: int, threads: int = 0, compile: str = "none",
                      loss: LossSection | None = None, people: tuple[int, int] = (1, 1),
                      weight_decay: float = 0.05) -> TrainConfig:
    """A preset on synthetic people. What the synthetic presets share lives here: ``people`` per image (one
    by default; the held-out images alike), training set from seed 0 and held-out set from seed 1,000,003,
    AdamW (weight decay 0.05 unless given, clipping at 1.0) on a cosine schedule after a warm-up from 0.01 x lr, flip test."""
    return TrainConfig(
        name=name, description=description, model=model,
        data=DataSection(train="synthetic", batch_size=batch_size, val_batch_size=val_batch_size,
                         num_workers=num_workers, augment=augment,
                         synthetic=SyntheticSection(train_images=train_images, val_images=val_images, seed=0,
                                                    val_seed=1_000_003, image_size=image_size, people=people,
                                                    val_people=people, clutter=clutter, fresh=fresh)),
        optim=OptimSection(lr=lr, weight_decay=weight_decay, layer_decay=layer_decay, clip_grad=1.0),
        loss=loss or LossSection(),
        schedule=ScheduleSection(epochs=epochs, steps_per_epoch=steps_per_epoch, warmup_iters=warmup_iters,
                                 warmup_start=0.01, kind="cosine", min_lr_ratio=min_lr_ratio, milestones=()),
        val_interval=val_interval, flip_test=True, log_interval=log_interval, seed=0, threads=threads,
        compile=compile,
    )


def _smoke() -> TrainConfig:
    # synth-cpu's recipe scaled down to learn within 3 CPU minutes (benchmarks/RESULTS.md): 96x128 renders,
    # a narrower and shallower ViT, and batch 16, because early on the number of steps matters more than
    # images per step (AP 0.047 with batch 16 against 0.026 with batch 32 on the same images). No keypoint-map
    # loss (AP 0.034 with it): tests and `poseforge distill` override this preset to heatmap heads, which refuse it.
    return _synthetic_people(
        "smoke", "CPU smoke test: a small ViTPose (conv stem, SimCC head) on 4096 cached synthetic people at "
                 "96x128, under 3 minutes (held-out AP 0.037 measured)",
        ModelSection(name="vitpose-tiny", pos_embed_init="sincos",
                     overrides={"input_size": [96, 128], "stem": "conv", "stem_depth": 2, "patch_size": 16,
                                "embed_dim": 96, "num_heads": 4, "depth": 4, "head": "simcc", "deconv_channels": [96],
                                "deconv_kernel_sizes": [4]}),
        image_size=(96, 128), train_images=4096, val_images=64, fresh=False, clutter=False,
        augment=AugmentConfig(rotate_factor=30.0, rotate_prob=0.1, scale_factor=(0.85, 1.15), half_body_prob=0.0),
        batch_size=16, val_batch_size=64, num_workers=0, lr=1e-3, layer_decay=1.0,
        epochs=5, warmup_iters=10, min_lr_ratio=0.05, val_interval=1, log_interval=16, threads=2)


def _synth_cpu() -> TrainConfig:
    # The bundled pose model's recipe (benchmarks/RESULTS.md): the conv stem learns from scratch on this
    # budget where a 16 px patchify stem stays at the mean pose; the SimCC head localizes finer than
    # heatmaps; 192x256 renders beat 96x128 ones (AP 0.316 vs 0.258 on 500 fresh people, mostly the arms),
    # and the stem down to stride 16 keeps the 12x16 tokens of the 96x128 / stride-8 model. The model
    # underfits (train AP = held-out AP), so light augmentation learns faster (AP 0.46 vs 0.31), two conv
    # layers per stem stride level learn faster still (AP 0.56 vs 0.46, ~7% fewer img/s in the run),
    # torch.compile + NHWC memory pay for 13 epochs instead of 11 in the same time (AP 0.60 vs 0.56), and a
    # dense loss on the SimCC head's keypoint maps makes every epoch teach more (AP 0.63 vs 0.60 with a
    # Gaussian of 8 px, 0.68 with 4 px; no cost); 15 epochs fit the hour (54 min: AP 0.706, 0.714 with the
    # SimCC codec's decode window, against 0.691 / 0.699 for 14 epochs in 53 min).
    return _synthetic_people(
        "synth-cpu", "the bundled model: a small ViTPose (conv stem, SimCC head) at 192x256 on synthetic people, "
                     "2-core CPU, 54 minutes, held-out AP 0.714 measured (goal 0.70)",
        ModelSection(name="vitpose-tiny", pos_embed_init="sincos",
                     overrides={"input_size": [192, 256], "stem": "conv", "stem_depth": 2, "patch_size": 16,
                                "embed_dim": 128, "num_heads": 4, "head": "simcc", "deconv_channels": [128],
                                "deconv_kernel_sizes": [4]}),
        image_size=(192, 256), train_images=8192, val_images=100, fresh=False, clutter=True,
        augment=AugmentConfig(rotate_factor=30.0, rotate_prob=0.1, scale_factor=(0.85, 1.15), half_body_prob=0.0),
        batch_size=32, val_batch_size=64, num_workers=1, lr=1e-3, layer_decay=1.0,
        epochs=15, steps_per_epoch=250, warmup_iters=100, min_lr_ratio=0.02, val_interval=1, log_interval=25,
        threads=2, compile="model", loss=LossSection(keypoint_map_weight=0.1, keypoint_map_sigma=4.0))


def _synth_cpu_photo() -> TrainConfig:
    # Issue 31's sim-to-real lever, ready to compare with synth-cpu on real photos (benchmarks/sim2real.py):
    # synth-cpu's recipe with real-photo backdrops and photo textures on half the training images / surfaces
    # (poseforge.data.synth.photos: scikit-image's and scikit-learn's CC0 / public-domain / CC BY sample photos)
    # and the camera augmentation (colour, white balance, grayscale, Gaussian and motion blur, noise, JPEG).
    # The held-out set stays synth-cpu's (no photos), so its AP compares with the bundled model's 0.714.
    base = _synth_cpu()
    data = dataclasses.replace(base.data, augment=AugmentConfig.camera_sim(base.data.augment),
                               synthetic=dataclasses.replace(base.data.synthetic, photo_backgrounds=0.5))
    return dataclasses.replace(base, name="synth-cpu-photo", data=data, description=(
        "synth-cpu + real-photo backgrounds and textures (p 0.5) + camera augmentation (blur, noise, JPEG, "
        "white balance): the sim-to-real lever of issue 31; needs pip install poseforge[sim2real]"))


def _rtmpose_t_synth() -> TrainConfig:
    # RTMPose-t as published (CSPNeXt-t + RTMCC head at 256x192) on synth-cpu's data and augmentation, so the
    # two shipped models are scored on the same held-out people (benchmarks/RESULTS.md). lr 2e-3 (a CNN with
    # BatchNorm takes twice the ViT's), 11 epochs fit the hour at ~30 img/s, and the keypoint-map term uses
    # 16 px, half a cell of the stride-32 map as 4 px is of the ViT's stride-8 map; one run, AP 0.440.
    return _synthetic_people(
        "rtmpose-t-synth", "RTMPose-t (CSPNeXt-t, RTMCC head) at 192x256 on synthetic people, 2-core CPU, "
                           "53 minutes, held-out AP 0.440 measured",
        ModelSection(name="rtmpose-t"),
        image_size=(192, 256), train_images=8192, val_images=100, fresh=False, clutter=True,
        augment=AugmentConfig(rotate_factor=30.0, rotate_prob=0.1, scale_factor=(0.85, 1.15), half_body_prob=0.0),
        batch_size=32, val_batch_size=64, num_workers=1, lr=2e-3, layer_decay=1.0,
        epochs=11, steps_per_epoch=250, warmup_iters=100, min_lr_ratio=0.02, val_interval=1, log_interval=25,
        threads=2, compile="model", loss=LossSection(keypoint_map_weight=0.1, keypoint_map_sigma=16.0))


def _litepose_xs_synth() -> TrainConfig:
    # LitePose-XS as published (256x256 input, 7x7 kernels, 1/4 + 1/2 scale heatmaps, associative-embedding
    # tags, LitePose's loss weights), from scratch on synthetic scenes of 1-6 people: COCO-17 keypoints, the
    # renderer's set (the zoo's CrowdPose-14 needs head / neck labels it does not draw). A fresh scene every
    # sample, rendered by the one worker while the model trains (1.5% of the step waits for data), so nothing
    # is rendered up front and nothing repeats. The trainer's NHWC layout matters here: PyTorch's NCHW
    # depthwise-convolution backward is slow on CPU, NCHW trains at 0.21x (benchmarks/train_throughput.py).
    # 16 x 68 steps of 16 (17,408 scenes) with validation every 4 epochs: 57 minutes on the 2-core Xeon
    # (2026-12-07). The heatmaps learn in that hour, the associative-embedding tags do not (held-out AP
    # 0.0002; benchmarks/RESULTS.md). Light augmentation: the held-out scenes are framed like the training ones.
    return _synthetic_people(
        "litepose-xs-synth", "LitePose-XS (bottom-up, no detector) at 256x256 on synthetic scenes of 1-6 people, "
                             "COCO-17 keypoints, 2-core CPU, sized for about an hour",
        ModelSection(name="litepose-xs", overrides={"keypoint_set": "coco17"}),
        image_size=(256, 256), people=(1, 6), train_images=16 * 68 * 16, val_images=100, fresh=True, clutter=True,
        augment=AugmentConfig(flip_prob=0.5, half_body_prob=0.0, shift_factor=0.1, shift_prob=0.3,
                              scale_factor=(0.8, 1.25), scale_prob=1.0, rotate_factor=30.0, rotate_prob=0.3),
        batch_size=16, val_batch_size=16, num_workers=1, lr=2e-3, layer_decay=1.0,
        epochs=16, steps_per_epoch=68, warmup_iters=100, min_lr_ratio=0.02, val_interval=4, log_interval=20,
        threads=2)


def _synth_gpu() -> TrainConfig:
    return _synthetic_people(
        "synth-gpu", "ViTPose-S on synthetic people rendered on the GPU, < 20 minutes",
        ModelSection(name="vitpose-s"),
        image_size=(192, 256), train_images=65536, val_images=500, fresh=True, clutter=True,
        augment=AugmentConfig(rotate_factor=40.0),
        batch_size=128, val_batch_size=128, num_workers=4, lr=1e-3, layer_decay=0.9,
        epochs=20, warmup_iters=300, min_lr_ratio=0.02, val_interval=4, log_interval=50)


# Sapiens task -> the zoo model its CPU preset fine-tunes (pose: COCO-17, the set the renderer labels fully).
SAPIENS_TINY_TASKS = {"pose": "sapiens-tiny-pose-coco", "seg": "sapiens-tiny-seg", "depth": "sapiens-tiny-depth",
                      "normal": "sapiens-tiny-normal"}


def sapiens_tiny_recipe(task: str) -> TrainConfig:
    """``sapiens-tiny-{task}-synth``: a CPU-sized Sapiens (``sapiens-tiny-*``, 192x256) fine-tuned on synthetic people
    for one task with Sapiens' optimizer (AdamW, weight decay 0.1, layer-wise LR decay 0.85, clipping at 1.0) and
    losses (segmentation: the Goliath configs' class-weighted cross-entropy).

    Sized for comparisons on 2 cores (6 x 40 steps of 16 over 2,048 cached renders, minutes per run): start
    it from an MAE run's encoder with ``--set model.init=RUN`` or from scratch (sine-cosine positions)."""
    from ..data.synth.classes import SAPIENS_PART_CLASS_WEIGHTS  # (the synth package imports its whole renderer)

    if task not in SAPIENS_TINY_TASKS:
        raise KeyError(task)
    return _synthetic_people(
        f"sapiens-tiny-{task}-synth", f"Sapiens-tiny {task} on synthetic people at 192x256 (Sapiens' fine-tuning "
                                      "optimizer), 2-core CPU, minutes",
        ModelSection(name=SAPIENS_TINY_TASKS[task], pos_embed_init="sincos"),
        image_size=(192, 256), train_images=2048, val_images=64, fresh=False, clutter=True,
        augment=AugmentConfig(rotate_factor=30.0, rotate_prob=0.1, scale_factor=(0.85, 1.15), half_body_prob=0.0),
        batch_size=16, val_batch_size=32, num_workers=1, lr=1e-3, layer_decay=0.85, weight_decay=0.1,
        epochs=6, steps_per_epoch=40, warmup_iters=20, min_lr_ratio=0.02, val_interval=2, log_interval=20, threads=2,
        loss=LossSection(class_weights=SAPIENS_PART_CLASS_WEIGHTS) if task == "seg" else None)


for _task in SAPIENS_TINY_TASKS:
    PRESETS.register(f"sapiens-tiny-{_task}-synth", lambda task=_task: sapiens_tiny_recipe(task))


PRESETS.register("smoke", _smoke)
PRESETS.register("synth-cpu", _synth_cpu)
PRESETS.register("synth-cpu-photo", _synth_cpu_photo)
PRESETS.register("synth-gpu", _synth_gpu)
PRESETS.register("rtmpose-t-synth", _rtmpose_t_synth)
PRESETS.register("litepose-xs-synth", _litepose_xs_synth)


for _size in ("s", "b", "l", "h"):
    PRESETS.register(f"vitpose-{_size}-coco", lambda size=_size: vitpose_coco_recipe(size))


for _size in ("t", "s", "m", "l"):
    PRESETS.register(f"rtmpose-{_size}-coco", lambda size=_size: rtmpose_coco_recipe(size))


def list_presets(pattern: str = "*") -> list[str]:
    """Registered preset names."""
    return PRESETS.names(pattern)


def get_preset(name: str) -> TrainConfig:
    """A fresh copy of the named preset."""
    factory: Callable[[], TrainConfig] = PRESETS.get(name)
    return factory()
