"""Heads, registered by config ``type`` in ``poseforge.registry.HEADS``."""
from .heatmap import CLASSIC_DECODER, SIMPLE_DECODER, HeatmapHead, HeatmapHeadConfig

__all__ = ["CLASSIC_DECODER", "SIMPLE_DECODER", "HeatmapHead", "HeatmapHeadConfig"]
