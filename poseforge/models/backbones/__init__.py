"""Backbones, registered by config ``type`` in ``poseforge.registry.BACKBONES``."""
from .cspnext import CSPNEXT_ARCHS, CSPNeXt, CSPNeXtConfig
from .vit import ATTENTION_KINDS, ViTConfig, VisionTransformer

__all__ = ["CSPNEXT_ARCHS", "CSPNeXt", "CSPNeXtConfig", "ATTENTION_KINDS", "ViTConfig", "VisionTransformer"]
