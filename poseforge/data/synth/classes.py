"""The 28 body-part classes of Sapiens (Goliath): background + 27 parts, in Sapiens' index order.

This is the one place the list lives; the renderer's part maps and any dense head use these indices.
"""
from __future__ import annotations

__all__ = ["SAPIENS_PART_CLASSES", "SAPIENS_PART_CLASS_WEIGHTS", "part_class_index", "part_flip_index"]

SAPIENS_PART_CLASSES: tuple[str, ...] = (
    "Background",
    "Apparel",
    "Face_Neck",
    "Hair",
    "Left_Foot",
    "Left_Hand",
    "Left_Lower_Arm",
    "Left_Lower_Leg",
    "Left_Shoe",
    "Left_Sock",
    "Left_Upper_Arm",
    "Left_Upper_Leg",
    "Lower_Clothing",
    "Right_Foot",
    "Right_Hand",
    "Right_Lower_Arm",
    "Right_Lower_Leg",
    "Right_Shoe",
    "Right_Sock",
    "Right_Upper_Arm",
    "Right_Upper_Leg",
    "Torso",
    "Upper_Clothing",
    "Lower_Lip",
    "Upper_Lip",
    "Lower_Teeth",
    "Upper_Teeth",
    "Tongue",
)

# The cross-entropy class weights of Sapiens' Goliath segmentation configs (``CLASS_WEIGHT`` in
# ``sapiens_{size}_goliath-1024x768.py``), in the order above: background 0.1, rare small parts up to 10.
SAPIENS_PART_CLASS_WEIGHTS: tuple[float, ...] = (
    0.1, 10, 3, 2, 4, 4, 2, 2, 6, 10, 3, 3, 1, 4, 4, 2, 2, 6, 10, 3, 3, 1, 1, 10, 10, 10, 10, 10)

_INDEX = {name: i for i, name in enumerate(SAPIENS_PART_CLASSES)}


def part_class_index(name: str) -> int:
    """Index of a Sapiens part class by name (``"Left_Hand"`` -> 5)."""
    return _INDEX[name]


def part_flip_index(classes: tuple[str, ...] = SAPIENS_PART_CLASSES) -> tuple[int, ...]:
    """The class of each class in a mirrored image: ``Left_*`` and ``Right_*`` swap, the rest stay."""
    index = {name: i for i, name in enumerate(classes)}
    out = []
    for name in classes:
        side, _, part = name.partition("_")
        other = {"Left": "Right", "Right": "Left"}.get(side)
        out.append(index.get(f"{other}_{part}", index[name]) if other else index[name])
    return tuple(out)
