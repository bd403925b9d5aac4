"""Models: configs, backbones, heads, estimators (top-down, bottom-up, dense) and the named zoo.

>>> model = create_model("vitpose-b", keypoint_set="wholebody133", input_size=(288, 384))
>>> model.save_pretrained("out/vitpose-b-wb")
>>> same = load_model("out/vitpose-b-wb")
>>> shipped = load_model("vitpose-tiny.synth")      # named weights (arch.tag); "bundled" is its alias
"""
from .backbones import ViTConfig, VisionTransformer
from .config import (BackboneConfig, FeatureInfo, HeadConfig, ModelConfig, MultiTaskTopDownConfig, NeckConfig,
                     TaskConfig, TopDownConfig, config_from_dict)
from .estimators import (BottomUpConfig, BottomUpEstimator, DenseConfig, DenseEstimator, Estimator,
                         TopDownEstimator)
from .heads import HeatmapHead, HeatmapHeadConfig
from .necks import CSPNeXtPAFPN, CSPNeXtPAFPNConfig
from .loading import build_model, load_model, model_from_state_dict
from .zoo import create_model, list_models, model_config
from . import nas  # noqa: F401,E402  (registers the litepose-supernet model and config type)

__all__ = ["create_model", "load_model", "list_models", "model_config", "build_model", "config_from_dict",
           "model_from_state_dict", "Estimator", "TopDownEstimator", "BottomUpEstimator", "DenseEstimator",
           "ModelConfig", "TopDownConfig", "MultiTaskTopDownConfig", "TaskConfig", "BottomUpConfig", "DenseConfig",
           "BackboneConfig", "HeadConfig", "NeckConfig", "FeatureInfo", "ViTConfig", "VisionTransformer",
           "HeatmapHeadConfig", "HeatmapHead", "CSPNeXtPAFPN", "CSPNeXtPAFPNConfig"]
