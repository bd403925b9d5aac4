"""Datasets: one instance record from every source, validated COCO I/O, top-down transforms."""
from .coco import CocoKeypoints, read_coco, write_coco, write_coco_results
from .records import ImageInfo, PoseInstance

__all__ = ["CocoKeypoints", "ImageInfo", "PoseInstance", "read_coco", "write_coco", "write_coco_results"]
