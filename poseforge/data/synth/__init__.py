"""Procedural synthetic people and quadrupeds with exact labels: the embedded default dataset."""
from .classes import SAPIENS_PART_CLASSES, part_class_index
from .dataset import RenderedImage, SynthBatch, SyntheticPoseDataset

__all__ = ["SyntheticPoseDataset", "RenderedImage", "SynthBatch", "SAPIENS_PART_CLASSES", "part_class_index"]
