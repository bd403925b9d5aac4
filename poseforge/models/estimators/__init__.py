"""Estimator kinds: each owns its protocol (transform, loss, predict, metric) over backbone + head + codec."""
from .base import CONFIG_NAME, WEIGHTS_NAME, Estimator, check_state_dict
from .bottomup import BottomUpConfig, BottomUpEstimator
from .dense import DenseConfig, DenseEstimator
from .topdown import TopDownEstimator
from .mae import MAEConfig, MAEEstimator  # (registers the 'mae' kind and the MAE models)

__all__ = ["Estimator", "TopDownEstimator", "BottomUpEstimator", "BottomUpConfig", "DenseEstimator", "DenseConfig", "MAEConfig", "MAEEstimator",
           "check_state_dict", "WEIGHTS_NAME", "CONFIG_NAME"]
