"""Heads, registered by config ``type`` in ``poseforge.registry.HEADS``."""
from .bottomup import HigherHRNetHead, HigherHRNetHeadConfig, LitePoseHead, LitePoseHeadConfig
from .dense import SAPIENS_DENSE_HEADS, SapiensDenseHead, SapiensDenseHeadConfig
from .heatmap import CLASSIC_DECODER, SIMPLE_DECODER, HeatmapHead, HeatmapHeadConfig
from .rtmcc import RTMCC_HEAD, RTMCCHead, RTMCCHeadConfig
from .rtmw import RTMW_HEAD, RTMWHead, RTMWHeadConfig
from .simcc import SIMCC_HEAD, SimCCHead, SimCCHeadConfig, simcc_codec

__all__ = ["CLASSIC_DECODER", "SIMPLE_DECODER", "HeatmapHead", "HeatmapHeadConfig", "SIMCC_HEAD", "SimCCHead",
           "SimCCHeadConfig", "simcc_codec", "RTMCC_HEAD", "RTMCCHead", "RTMCCHeadConfig",
           "RTMW_HEAD", "RTMWHead", "RTMWHeadConfig",
           "LitePoseHead", "LitePoseHeadConfig", "HigherHRNetHead", "HigherHRNetHeadConfig",
           "SapiensDenseHead", "SapiensDenseHeadConfig", "SAPIENS_DENSE_HEADS"]
