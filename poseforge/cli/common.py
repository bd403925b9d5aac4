"""``argparse`` types the commands share, over the one size / range parser of :mod:`poseforge.coerce`."""
from __future__ import annotations

import argparse

from ..coerce import parse_range, parse_size

__all__ = ["size_argument", "range_argument"]


def size_argument(text: str) -> tuple[int, int]:
    """``argparse`` type of a ``WIDTHxHEIGHT`` size."""
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def range_argument(text: str) -> tuple[int, int]:
    """``argparse`` type of ``N`` or ``MIN-MAX`` (e.g. people per image)."""
    try:
        return parse_range(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
