"""MAE pretraining of the ViT backbone (Sapiens): presets and the reconstruction picture.

The model is the ``mae`` estimator kind (:mod:`poseforge.models.estimators.mae`), so the ordinary
:class:`~poseforge.train.engine.Trainer` pretrains it - AdamW (no weight decay on norms, biases, the mask
token and the position embeddings), warm-up + cosine, clipping, AMP, activation checkpointing, exact resume,
DDP / FSDP - on whole synthetic images (or any COCO-format image set: the labels are not read).
``poseforge pretrain --config NAME`` runs it and draws ``reconstruction.png``; a task model then starts from
the encoder with ``model.backbone_init=<run folder>`` (:func:`poseforge.train.init.init_backbone`).

Presets:

* ``sapiens-tiny-mae-synth``: ``sapiens-tiny-mae`` (ViT 192 wide, 6 blocks, 3 heads, patch 16, 128x160, mask
  ratio 0.75, a 128-wide 2-block decoder) on 4096 cached synthetic images of 1-2 people, 5 epochs of 127 steps
  of 32: 8.1 min training + 0.9 min rendering on the shared 2-core CPU (2026-12-07), loss 1.12 -> 0.50.
* ``sapiens-{0.3b,0.6b,1b,2b}-mae``: the official Sapiens MAE recipe (facebookresearch/sapiens
  ``pretrain/configs/sapiens_mae/humans_300m_test/mae_sapiens_{size}-p16_8xb512-coslr-1600e_humans_300m_test.py``):
  1024x1024 inputs, mask ratio 0.75, AdamW lr 1.5e-4 x 4096 / 256 for a global batch of 4096 (512 per GPU x
  8, ``auto_scale_lr`` to other batches), betas (0.9, 0.95), weight decay 0.05, clipping at 1.0, 1600
  epochs: linear warm-up from 1e-4 x lr over 40 epochs, then cosine to 0; flip + random resized crop. The
  data is poseforge's fresh synthetic people (Humans-300M is not public), 100 steps per epoch (the config's
  "about 100 iters in one epoch").
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.augment import AugmentConfig
from ..errors import PoseforgeError
from ..io import write_bytes_atomic
from ..models.estimators.mae import MAE_AUGMENT
from ..models.zoo import SAPIENS_BACKBONES
from ..registry import PRESETS
from .config import DataSection, ModelSection, OptimSection, ScheduleSection, SyntheticSection, TrainConfig

__all__ = ["MAE_PRESETS", "sapiens_mae_recipe", "reconstruction_figure", "write_reconstruction", "is_mae_config"]

log = logging.getLogger("poseforge")

_SIZES = tuple(size for size in SAPIENS_BACKBONES if size != "tiny")
MAE_PRESETS = ("sapiens-tiny-mae-synth", *(f"sapiens-{size}-mae" for size in _SIZES))


def _tiny_synth() -> TrainConfig:
    return TrainConfig(
        name="sapiens-tiny-mae-synth",
        description="MAE pretraining of a tiny ViT (192 wide, 6 blocks) at 128x160 on synthetic people, 2-core CPU, "
                    "8 minutes + 1 rendering (loss 1.12 -> 0.50 measured); writes reconstruction.png",
        model=ModelSection(name="sapiens-tiny-mae"),
        data=DataSection(train="synthetic", batch_size=32, val_batch_size=32, num_workers=1, augment=MAE_AUGMENT,
                         synthetic=SyntheticSection(train_images=4096, val_images=8, seed=0, val_seed=1_000_003,
                                                    image_size=(128, 160), people=(1, 2), val_people=(1, 2),
                                                    clutter=True, fresh=False)),
        optim=OptimSection(lr=1.5e-3, betas=(0.9, 0.95), weight_decay=0.05, layer_decay=1.0, clip_grad=1.0),
        schedule=ScheduleSection(epochs=5, warmup_iters=60, warmup_start=0.01, kind="cosine", min_lr_ratio=0.05,
                                 milestones=()),
        val_interval=0, flip_test=False, log_interval=16, seed=0, threads=2,
    )


def sapiens_mae_recipe(size: str) -> TrainConfig:
    """The official Sapiens MAE recipe for ``sapiens-{size}-mae`` (see the module doc)."""
    if size not in _SIZES:
        raise PoseforgeError(f"unknown Sapiens size '{size}'; known: {', '.join(_SIZES)}")
    steps_per_epoch = 100
    return TrainConfig(
        name=f"sapiens-{size}-mae",
        description=f"Sapiens-{size} MAE pretraining, official recipe (sapiens pretrain/configs/sapiens_mae/"
                    f"humans_300m_test/mae_sapiens_{size}-p16_8xb512-coslr-1600e_humans_300m_test.py) on synthetic people",
        model=ModelSection(name=f"sapiens-{size}-mae"),
        data=DataSection(train="synthetic", batch_size=512, val_batch_size=64, num_workers=8,
                         augment=AugmentConfig(flip_prob=0.5, half_body_prob=0.0, shift_factor=0.2, shift_prob=1.0,
                                         scale_factor=(0.45, 1.0), scale_prob=1.0, rotate_prob=0.0),
                         synthetic=SyntheticSection(train_images=512 * 8 * steps_per_epoch, val_images=16,
                                                    image_size=(1024, 1024), people=(1, 3), val_people=(1, 3),
                                                    clutter=True, fresh=True)),
        # lr = 1.5e-4 x 4096 / 256 at the base batch 4096 (auto_scale_lr = dict(base_batch_size=4096, enable=True))
        optim=OptimSection(lr=1.5e-4 * 4096 / 256, betas=(0.9, 0.95), weight_decay=0.05, layer_decay=1.0,
                           clip_grad=1.0, auto_scale_lr=True, base_batch_size=4096),
        # LinearLR(start_factor=1e-4, epochs 0-40) then CosineAnnealingLR(T_max=1560, epochs 40-1600), by iteration
        schedule=ScheduleSection(epochs=1600, steps_per_epoch=steps_per_epoch, warmup_iters=40 * steps_per_epoch,
                                 warmup_start=1e-4, kind="cosine", decay_begin_epoch=40, min_lr_ratio=0.0,
                                 milestones=()),
        val_interval=0, flip_test=False, save_interval=5, log_interval=10, seed=0,
    )


PRESETS.register("sapiens-tiny-mae-synth", _tiny_synth)
for _size in _SIZES:
    PRESETS.register(f"sapiens-{_size}-mae", lambda size=_size: sapiens_mae_recipe(size))


def is_mae_config(config: TrainConfig) -> bool:
    """Whether the config trains an MAE model (estimator kind ``mae``)."""
    from ..models import model_config

    return model_config(config.model.name, **config.model.overrides).type == "mae"


def held_out_images(config: TrainConfig, model: Any, count: int) -> torch.Tensor:
    """``count`` held-out synthetic images (the config's ``val_seed``) at the model's input size, uint8 ``[B,3,H,W]``."""
    from ..data.sources import SyntheticSource

    s = config.data.synthetic
    source = SyntheticSource(count, s.val_seed, s.image_size, s.val_people, "coco17", s.clutter, per_instance=False,
                             dense=())
    transform = model.transform(False)
    generator = torch.Generator().manual_seed(0)
    return torch.stack([transform(record, image, generator)["image"] for record, image in source.load(range(count))])


def reconstruction_figure(model: Any, images: torch.Tensor, seed: int = 0, scale: int = 2) -> np.ndarray:
    """An RGB uint8 picture: one row per image, ``original | masked | reconstruction`` (MAE's figure), each
    panel enlarged ``scale`` times (nearest neighbour) with a 4 px white gutter."""
    parts = model.reconstruct(images.to(model.device), seed=seed)
    columns = [parts["original"], parts["masked"], parts["reconstruction"]]
    gap = 4
    rows = []
    for i in range(images.shape[0]):
        panels = [c[i].permute(1, 2, 0).cpu().numpy() for c in columns]
        panels = [np.repeat(np.repeat(p, scale, 0), scale, 1) for p in panels]
        h = panels[0].shape[0]
        white = np.full((h, gap, 3), 255, np.uint8)
        row = np.concatenate([x for p in panels for x in (p, white)][:-1], axis=1)
        rows += [row, np.full((gap, row.shape[1], 3), 255, np.uint8)]
    return np.concatenate(rows[:-1], axis=0)


def write_reconstruction(model_or_run: Any, path: str | Path, config: TrainConfig | None = None, count: int = 4,
                         seed: int = 0) -> Path:
    """Draw :func:`reconstruction_figure` of ``count`` held-out synthetic images into the PNG ``path``;
    ``model_or_run``: an MAE model or a run folder / model path (``config`` defaults to the run's config.yaml)."""
    import cv2

    from ..models import load_model
    from .config import load_config

    model = model_or_run
    if not isinstance(model_or_run, torch.nn.Module):
        run = Path(model_or_run)
        model = load_model(run)
        if config is None and (run / "config.yaml").is_file():
            config = load_config(run / "config.yaml")
    if getattr(model, "kind", "") != "mae":
        raise PoseforgeError(f"{getattr(model.config, 'name', model)}: not an MAE model (kind '{getattr(model, 'kind', '')}')")
    config = config or TrainConfig()
    figure = reconstruction_figure(model, held_out_images(config, model, count), seed)
    ok, data = cv2.imencode(".png", np.ascontiguousarray(figure[..., ::-1]))
    if not ok:
        raise PoseforgeError(f"{path}: could not encode the PNG")
    write_bytes_atomic(path, data.tobytes())
    return Path(path)
