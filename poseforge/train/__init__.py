"""Training: one engine for every model family (configs, presets, data, losses, optimizer, checkpoints).

>>> from poseforge.train import Trainer, load_config
>>> config = load_config("smoke", ["schedule.epochs=2"])
>>> summary = Trainer(config, "runs/smoke").fit()
"""
from .config import (DataSection, EMASection, LossSection, ModelSection, OptimSection, ScheduleSection,
                     SyntheticSection, TrainConfig, apply_overrides, config_from_dict, config_to_dict, dump_yaml,
                     load_config)
from .engine import Trainer
from ..models.losses import KeypointMSELoss, KLDiscretLoss, build_loss
from .optim import LRSchedule, build_optimizer
from .presets import get_preset, list_presets
from . import mae  # noqa: F401,E402  (registers the MAE pretraining presets)

__all__ = ["Trainer", "TrainConfig", "ModelSection", "DataSection", "SyntheticSection", "OptimSection",
           "ScheduleSection", "LossSection", "EMASection", "load_config", "apply_overrides", "config_from_dict",
           "config_to_dict", "dump_yaml", "get_preset", "list_presets", "KeypointMSELoss", "KLDiscretLoss",
           "build_loss", "build_optimizer", "LRSchedule"]
