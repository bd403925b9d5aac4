"""Keypoint sets as data: names, flip pairs, OKS sigmas, joint weights, skeleton and draw colors.

The numbers live once, in ``keypoint_sets.json`` beside this file. A model or dataset refers to its
set by name (``"coco17"``) and takes flip pairs, sigmas and drawing from here. Each set's numbers are
the dataset authors' (the file's ``source`` fields say where from); ``sapiens308`` is Meta's Sapiens /
Goliath set as its official config defines it (facebookresearch/sapiens,
``pose/configs/_base_/datasets/goliath.py``, teeth removed): Goliath order, COCO names for the 17 body
and 6 foot joints, hands without a root (the wrist is the root), 7 extra arm/neck points and 238 face
points. It has no ``parts``: Goliath's body part includes the wrists, which sit inside the hand blocks,
so its parts are not the contiguous ranges ``parts`` holds.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import PoseforgeError

__all__ = ["KeypointSet", "KeypointMapping", "get_keypoint_set", "list_keypoint_sets", "match_keypoint_set",
           "canonical_joint_name", "keypoint_mapping", "keypoint_subset"]


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


# ----------------------------------------------------------------------------- mapping between sets
# Spellings of one anatomical joint across sets (after normalizing case, separators and l_/r_ prefixes).
# Deliberately absent: MPII's "upper_neck" / "thorax" vs AIC / CrowdPose "neck" - the datasets place them
# differently, and a wrong pairing would score predictions against another point.
_JOINT_ALIASES = {"top_head": "head_top", "head": "head_top", "headtop": "head_top"}
# Goliath (sapiens308) names each finger's base joint "<finger>_third_joint" (counted from the tip) where
# COCO-WholeBody says "<finger>1": its skeleton chains wrist -> third_joint -> 2 -> 3 -> 4 and its config
# gives it COCO-WholeBody's <finger>1 sigma. (Sapiens' own coco_wholebody2goliath converter matches exact
# names only and so leaves these 10 joints out.)
_JOINT_ALIASES.update({f"{side}_{finger}_third_joint": f"{side}_{finger}1" for side in ("left", "right")
                       for finger in ("thumb", "forefinger", "middle_finger", "ring_finger", "pinky_finger")})


def canonical_joint_name(name: str) -> str:
    """One spelling per joint: ``"L_Shoulder"``, ``"Left Shoulder"`` and ``"left_shoulder"`` all give
    ``"left_shoulder"``; ``"top_head"`` gives ``"head_top"``; Goliath's ``"left_thumb_third_joint"``
    gives COCO-WholeBody's ``"left_thumb1"``."""
    n = re.sub(r"^l_", "left_", re.sub(r"^r_", "right_", _normalize(name)))
    return _JOINT_ALIASES.get(n, n)


@dataclass(frozen=True)
class KeypointMapping:
    """The joints two keypoint sets share: ``source.names[source_index[i]]`` is the same joint as
    ``target.names[target_index[i]]`` (pairs in target order)."""

    source: KeypointSet
    target: KeypointSet
    source_index: tuple[int, ...]
    target_index: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.target_index)

    @property
    def names(self) -> tuple[str, ...]:
        """The shared joints, as the target set names them."""
        return tuple(self.target.names[i] for i in self.target_index)

    @property
    def unmapped_target(self) -> tuple[str, ...]:
        """Target joints the source set lacks (never predicted when the source is the model's set)."""
        shared = set(self.target_index)
        return tuple(n for i, n in enumerate(self.target.names) if i not in shared)

    def convert(self, values: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """``values [..., K_source, ...]`` (keypoint axis -2 for ``[..., K, C]``, -1 for ``[..., K]``) in
        the target set's order; joints the source lacks get ``fill``."""
        values = np.asarray(values)
        axis = values.ndim - 2 if values.ndim >= 2 and values.shape[-2] == self.source.num_keypoints else values.ndim - 1
        if values.shape[axis] != self.source.num_keypoints:
            raise PoseforgeError(f"expected {self.source.num_keypoints} {self.source.name} keypoints on axis {axis}, "
                                 f"got shape {values.shape}")
        shape = list(values.shape)
        shape[axis] = self.target.num_keypoints
        out = np.full(shape, fill, dtype=values.dtype if values.dtype.kind == "f" else np.float64)
        index_out: list = [slice(None)] * values.ndim
        index_in: list = [slice(None)] * values.ndim
        index_out[axis], index_in[axis] = list(self.target_index), list(self.source_index)
        out[tuple(index_out)] = values[tuple(index_in)]
        return out


def keypoint_mapping(source: "str | KeypointSet", target: "str | KeypointSet") -> KeypointMapping:
    """The joints ``source`` and ``target`` share, matched by :func:`canonical_joint_name` (a person set
    and an animal set share none, whatever their joints are called)."""
    src, tgt = get_keypoint_set(source), get_keypoint_set(target)
    pairs: list[tuple[int, int]] = []
    if src.category == tgt.category:
        where = {canonical_joint_name(n): i for i, n in enumerate(src.names)}
        pairs = [(where[c], j) for j, c in enumerate(canonical_joint_name(n) for n in tgt.names) if c in where]
    return KeypointMapping(src, tgt, tuple(i for i, _ in pairs), tuple(j for _, j in pairs))


def keypoint_subset(ks: "str | KeypointSet", indices: "tuple[int, ...] | list[int]", name: str | None = None) -> KeypointSet:
    """The set restricted to ``indices`` (its sigmas, weights, flip pairs and links among them kept);
    parts are dropped. Not registered: refer to it by object, not by name."""
    ks = get_keypoint_set(ks)
    indices = [int(i) for i in indices]
    new = {old: n for n, old in enumerate(indices)}
    return KeypointSet(
        name=name or f"{ks.name}[{len(indices)}]",
        description=f"{ks.description}, {len(indices)} of its joints",
        category=ks.category,
        names=tuple(ks.names[i] for i in indices),
        sigmas=tuple(ks.sigmas[i] for i in indices),
        joint_weights=tuple(ks.joint_weights[i] for i in indices),
        flip_pairs=tuple((new[a], new[b]) for a, b in ks.flip_pairs if a in new and b in new),
        skeleton=tuple((new[a], new[b]) for a, b in ks.skeleton if a in new and b in new),
        keypoint_colors=tuple(ks.keypoint_colors[i] for i in indices),
        link_colors=tuple(c for (a, b), c in zip(ks.skeleton, ks.link_colors) if a in new and b in new),
    )
