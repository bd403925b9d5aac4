"""Models: configs, backbones, heads, estimators and the named zoo.

>>> model = create_model("vitpose-b", keypoint_set="wholebody133", input_size=(288, 384))
>>> model.save_pretrained("out/vitpose-b-wb")
>>> same = load_model("out/vitpose-b-wb")
"""
from .backbones import ViTConfig, VisionTransformer
from .config import BackboneConfig, HeadConfig, ModelConfig, TopDownConfig, config_from_dict
from .estimator import PoseEstimator, Predictions, TopDownEstimator, build_model, load_model
from .heads import HeatmapHead, HeatmapHeadConfig
from .multitask import MultiTaskTopDownConfig, MultiTaskTopDownEstimator, TaskConfig, TaskModel
from .zoo import create_model, list_models, model_config

__all__ = ["create_model", "load_model", "list_models", "model_config", "build_model", "config_from_dict",
           "PoseEstimator", "TopDownEstimator", "Predictions", "ModelConfig", "TopDownConfig", "BackboneConfig",
           "HeadConfig", "ViTConfig", "VisionTransformer", "HeatmapHeadConfig", "HeatmapHead",
           "MultiTaskTopDownConfig", "MultiTaskTopDownEstimator", "TaskConfig", "TaskModel"]
