"""Backbones, registered by config ``type`` in ``poseforge.registry.BACKBONES``."""
from .vit import ATTENTION_KINDS, ViTConfig, VisionTransformer

__all__ = ["ATTENTION_KINDS", "ViTConfig", "VisionTransformer"]
