"""Keypoint sets as data: names, flip pairs, OKS sigmas, joint weights, skeleton and draw colors.

The numbers live once, in ``keypoint_sets.json`` beside this file. A model or dataset refers to its
set by name (``"coco17"``) and takes flip pairs, sigmas and drawing from here.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import PoseforgeError

__all__ = ["KeypointSet", "get_keypoint_set", "list_keypoint_sets", "match_keypoint_set"]


@dataclass(frozen=True)
class KeypointSet:
    """One keypoint definition (e.g. COCO-17). Immutable; arrays are returned as fresh copies."""

    name: str
    description: str
    category: str  # "person" or "animal"
    names: tuple[str, ...]
    sigmas: tuple[float, ...]
    joint_weights: tuple[float, ...]
    flip_pairs: tuple[tuple[int, int], ...]
    skeleton: tuple[tuple[int, int], ...]
    keypoint_colors: tuple[tuple[int, int, int], ...]
    link_colors: tuple[tuple[int, int, int], ...]
    parts: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> [start, stop)

    @property
    def num_keypoints(self) -> int:
        return len(self.names)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def flip_index(self) -> np.ndarray:
        """Permutation ``p`` with ``flipped[:, k] = original[:, p[k]]`` for a horizontal flip."""
        index = np.arange(self.num_keypoints)
        for a, b in self.flip_pairs:
            index[a], index[b] = b, a
        return index

    def sigmas_array(self) -> np.ndarray:
        return np.asarray(self.sigmas, dtype=np.float64)

    def joint_weights_array(self) -> np.ndarray:
        return np.asarray(self.joint_weights, dtype=np.float32)

    def index(self, keypoint_name: str) -> int:
        try:
            return self.names.index(keypoint_name)
        except ValueError:
            raise PoseforgeError(f"keypoint set '{self.name}' has no keypoint '{keypoint_name}'") from None

    def part_slice(self, part: str) -> slice:
        """Slice of a named part (wholebody133: body, foot, face, left_hand, right_hand)."""
        if part not in self.parts:
            raise PoseforgeError(f"keypoint set '{self.name}' has no part '{part}' (has: {', '.join(self.parts) or 'none'})")
        start, stop = self.parts[part]
        return slice(start, stop)


def _normalize(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


@lru_cache(maxsize=1)
def _load() -> dict[str, KeypointSet]:
    raw = json.loads((Path(__file__).with_name("keypoint_sets.json")).read_text())["sets"]
    sets = {}
    for name, e in raw.items():
        sets[name] = KeypointSet(
            name=name,
            description=e["description"],
            category=e["category"],
            names=tuple(e["names"]),
            sigmas=tuple(float(s) for s in e["sigmas"]),
            joint_weights=tuple(float(w) for w in e["joint_weights"]),
            flip_pairs=tuple((int(a), int(b)) for a, b in e["flip_pairs"]),
            skeleton=tuple((int(a), int(b)) for a, b in e["skeleton"]),
            keypoint_colors=tuple(tuple(c) for c in e["keypoint_colors"]),
            link_colors=tuple(tuple(c) for c in e["link_colors"]),
            parts={k: (int(v[0]), int(v[1])) for k, v in e.get("parts", {}).items()},
        )
    return sets


def list_keypoint_sets() -> list[str]:
    """Names of every known keypoint set."""
    return sorted(_load())


def get_keypoint_set(name: "str | KeypointSet") -> KeypointSet:
    """Return the keypoint set called ``name`` (or ``name`` itself if it already is one)."""
    if isinstance(name, KeypointSet):
        return name
    sets = _load()
    if name not in sets:
        raise PoseforgeError(f"unknown keypoint set '{name}'; known: {', '.join(sorted(sets))}")
    return sets[name]


# COCO-format files name their keypoints in several spellings ("Right Shoulder", "L_F_Paw").
_ALIASES = {"head": "top_head", "l_f_paw": "left_front_paw", "r_f_paw": "right_front_paw",
            "l_b_paw": "left_back_paw", "r_b_paw": "right_back_paw", "head_top": "head_top"}


def match_keypoint_set(category_keypoint_names: list[str] | None, num_keypoints: int) -> KeypointSet | None:
    """Find the set whose names match a COCO category's ``keypoints`` list, else guess by count.

    Returns ``None`` when the count alone is ambiguous (e.g. 14: CrowdPose or AIC) and names do not decide.
    """
    sets = _load()
    if category_keypoint_names:
        given = [_ALIASES.get(_normalize(n), _normalize(n)) for n in category_keypoint_names]
        for ks in sets.values():
            if len(ks.names) == len(given) and [_ALIASES.get(n, n) for n in ks.names] == given:
                return ks
        # Alias-insensitive fallback on left/right prefixes (l_eye vs left_eye).
        expand = lambda n: re.sub(r"^l_", "left_", re.sub(r"^r_", "right_", n))
        for ks in sets.values():
            if len(ks.names) == len(given) and [expand(n) for n in ks.names] == [expand(n) for n in given]:
                return ks
    by_count = [ks for ks in sets.values() if ks.num_keypoints == num_keypoints]
    if len(by_count) == 1:
        return by_count[0]
    if num_keypoints == 17:  # coco17 and ap10k17: a person file unless names said otherwise
        return sets["coco17"]
    return None
