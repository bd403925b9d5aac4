"""Backbones, registered by config ``type`` in ``poseforge.registry.BACKBONES``."""
from .cspnext import CSPNEXT_ARCHS, CSPNeXt, CSPNeXtConfig
from .hrnet import HRNet, HRNetConfig
from .mobilenetv2 import LitePoseMobileNetV2, MobileNetV2Config
from .vit import ATTENTION_KINDS, ViTConfig, VisionTransformer

__all__ = ["CSPNEXT_ARCHS", "CSPNeXt", "CSPNeXtConfig", "ATTENTION_KINDS", "ViTConfig", "VisionTransformer",
           "HRNet", "HRNetConfig", "LitePoseMobileNetV2", "MobileNetV2Config"]
