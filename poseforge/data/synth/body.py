"""The procedural human: skeleton, solid body parts, anatomical keypoints, and batched sampling of
body shape (sex, age, height, build), clothing, hair and pose.

Frames: a person stands at the origin facing +z, +y up, +x to the person's LEFT (right-handed). All
lengths are metres for a canonical 1.75 m adult man and are scaled per person by groups (torso,
arms, legs, head, ...). Limb bones point along -y of their joint frame at rest; the hand frame has the
palm facing +z and the thumb on +x (left hand; mirrored for the right).

Keypoints follow COCO-WholeBody order (body 17, feet 6, face 68 in the iBUG-68 layout, left hand 21,
right hand 21); the first 17 are COCO-17. Body keypoints sit at joint centres (shoulder = gleno-humeral
joint, hip = hip-joint centre ...), eyes/nose/ears and face/foot/fingertip points on the surface.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor

from .classes import SAPIENS_PART_CLASSES
from .ops import deg, euler_zxy
from .rng import Draws, Rng, choice_from
from .skeleton import CompiledFigure, FigureSpec, Joint, Keypoint, Part, mirror_x

__all__ = ["human_spec", "compiled_human", "HumanParams", "sample_humans", "POSE_CLASSES", "MAT_SLOTS", "ROLES"]

MAT_SLOTS = ("skin", "hair", "sclera", "iris", "lips", "teeth", "tongue", "mouth", "brows", "top", "bottom", "shoes",
             "socks", "hat", "bag")
ROLES = ("top", "top_abd", "bottom", "bottom_abd", "sleeve_u", "sleeve_f", "pants_thigh", "pants_shin", "ankle", "shoes")
FEATURES = ("female", "belly", "hair_cap", "hair_long", "ponytail", "bun", "hat", "bag", "skirt")
GROUPS = ("unit", "pelvis", "spine", "neck", "head", "clav", "uarm", "farm", "hand", "thigh", "shin", "foot", "skirt")
RGROUPS = ("unit", "torso", "hip", "chest", "belly", "breast", "neck", "head", "arm", "hand", "leg", "foot", "hair", "body")

_BODY = "body"  # slack radius group: scales with height and build


def _sided(items: list) -> list:
    """Left entries followed by their mirrored right twins."""
    return items + [mirror_x(i) for i in items]


def _joints() -> list[Joint]:
    center = [
        Joint("pelvis", None),
        Joint("spine", "pelvis", (0.0, 0.11, -0.015), "spine"),
        Joint("chest", "spine", (0.0, 0.16, 0.0), "spine"),
        Joint("neck", "chest", (0.0, 0.225, -0.02), "spine"),
        Joint("head", "neck", (0.0, 0.095, 0.02), "neck"),
        Joint("jaw", "head", (0.0, 0.02, -0.005), "head"),
    ]
    left = [
        Joint("l_clav", "chest", (0.02, 0.165, 0.035), "clav"),
        Joint("l_shoulder", "l_clav", (0.155, -0.01, -0.045), "clav"),
        Joint("l_elbow", "l_shoulder", (0.0, -0.29, 0.0), "uarm"),
        Joint("l_wrist", "l_elbow", (0.0, -0.25, 0.0), "farm", rest=(0.0, -90.0, 0.0)),
        Joint("l_hip", "pelvis", (0.088, -0.07, 0.005), "pelvis"),
        Joint("l_knee", "l_hip", (0.0, -0.43, 0.0), "thigh"),
        Joint("l_ankle", "l_knee", (0.0, -0.425, -0.01), "shin"),
    ]
    hand = [
        Joint("l_thumb1", "l_wrist", (0.022, -0.028, 0.012), "hand", rest=(-20.0, -30.0, 35.0)),
        Joint("l_thumb2", "l_thumb1", (0.0, -0.045, 0.0), "hand"),
        Joint("l_thumb3", "l_thumb2", (0.0, -0.032, 0.0), "hand"),
    ]
    for name, x, y, lengths, spread in _FINGERS:
        hand.append(Joint(f"l_{name}1", "l_wrist", (x, y, 0.0), "hand", rest=(0.0, 0.0, spread)))
        hand.append(Joint(f"l_{name}2", f"l_{name}1", (0.0, -lengths[0], 0.0), "hand"))
        hand.append(Joint(f"l_{name}3", f"l_{name}2", (0.0, -lengths[1], 0.0), "hand"))
    return center + _sided(left) + _sided(hand)


# name, MCP x, MCP y (hand frame, left hand), phalanx lengths (prox, mid, dist), rest spread (deg)
_FINGERS = (
    ("index", 0.026, -0.088, (0.042, 0.025, 0.019), 5.0),
    ("middle", 0.008, -0.092, (0.046, 0.029, 0.020), 0.0),
    ("ring", -0.010, -0.088, (0.043, 0.027, 0.019), -4.0),
    ("pinky", -0.026, -0.080, (0.034, 0.020, 0.017), -9.0),
)
# radii (prox start, prox end = mid start, mid end = dist start, dist end)
_FINGER_RADII = {"index": (0.0102, 0.0094, 0.0085, 0.0076), "middle": (0.0106, 0.0097, 0.0088, 0.0078),
                 "ring": (0.0100, 0.0091, 0.0082, 0.0073), "pinky": (0.0090, 0.0081, 0.0073, 0.0065)}
_THUMB = ((0.045, 0.032, 0.024), (0.0150, 0.0118, 0.0106, 0.0092))


def _head_to_jaw(p: tuple[float, float, float]) -> tuple[float, float, float]:
    """Head-frame coordinates -> jaw-frame coordinates (the jaw's rest rotation is identity)."""
    return (p[0], p[1] - 0.02, p[2] + 0.005)


def _parts() -> list[Part]:
    top, bottom = ("top",), ("bottom",)
    center = [
        Part("pelvis", "pelvis", (0.0, -0.035, -0.01), None, 0.11, flat=(1.5, 1.0, 1.05), group="pelvis", rgroup="hip",
             part="Torso", layers=bottom),
        Part("abdomen", "spine", (0.0, -0.05, 0.0), (0.0, 0.13, 0.0), 0.125, 0.125, flat=(1.0, 1.0, 0.7), group="spine",
             rgroup="torso", part="Torso", layers=("top_abd", "bottom_abd"), s_axis=(0.0, 1.0, 0.0), s_len=0.18, s_start=-0.05),
        Part("belly", "spine", (0.0, 0.0, 0.04), None, 0.1, flat=(1.15, 1.0, 1.0), group="spine", rgroup="belly",
             part="Torso", layers=("top_abd", "bottom_abd"), s_axis=(0.0, 1.0, 0.0), s_len=0.18, s_start=-0.05,
             feature="belly"),
        Part("chest", "chest", (0.0, 0.03, 0.0), (0.0, 0.135, -0.01), 0.135, 0.15, flat=(1.07, 0.62, 0.68), group="spine",
             rgroup="chest", part="Torso", layers=top),
        Part("backpack", "chest", (0.0, 0.0, -0.16), (0.0, 0.14, -0.16), 0.12, 0.12, flat=(1.12, 1.0, 0.52), group="spine",
             rgroup="torso", part="Apparel", mat="bag", feature="bag"),
        Part("neck", "neck", (0.0, -0.02, 0.0), (0.0, 0.10, 0.02), 0.054, 0.05, flat=(1.0, 1.0, 0.95), group="neck",
             rgroup="neck", part="Face_Neck"),
        Part("skirt", "pelvis", (0.0, 0.0, -0.005), (0.0, -0.36, 0.0), 0.15, 0.23, flat=(1.1, 1.0, 0.85), group="skirt",
             rgroup="hip", part="Lower_Clothing", mat="bottom", feature="skirt"),
        # Head (head frame: the atlas joint at the top of the neck).
        Part("cranium", "head", (0.0, 0.07, -0.005), None, 0.094, flat=(0.78, 0.98, 1.02), group="head", rgroup="head",
             part="Face_Neck"),
        Part("cheeks", "head", (0.0, 0.028, 0.03), None, 0.055, flat=(1.2, 0.9, 1.0), group="head", rgroup="head",
             part="Face_Neck"),
        Part("jaw", "jaw", _head_to_jaw((0.0, 0.015, 0.02)), _head_to_jaw((0.0, -0.052, 0.062)), 0.055, 0.022,
             flat=(1.12, 1.0, 1.0), group="head", rgroup="head", part="Face_Neck"),
        Part("nose", "head", (0.0, 0.040, 0.084), (0.0, 0.002, 0.104), 0.0075, 0.0105, group="head", rgroup="head",
             part="Face_Neck"),
        Part("nostrils", "head", (0.0, 0.0, 0.093), None, 0.011, flat=(1.6, 0.85, 1.0), group="head", rgroup="head",
             part="Face_Neck"),
        Part("mouth", "head", (0.0, -0.033, 0.073), None, 0.008, flat=(2.5, 1.1, 0.6), group="head", rgroup="head",
             part="Face_Neck", mat="mouth"),
        Part("upper_lip", "head", (0.0, -0.026, 0.077), None, 0.0075, flat=(3.1, 0.8, 1.1), group="head", rgroup="head",
             part="Upper_Lip", mat="lips"),
        Part("lower_lip", "jaw", _head_to_jaw((0.0, -0.037, 0.076)), None, 0.008, flat=(2.7, 0.8, 1.05), group="head",
             rgroup="head", part="Lower_Lip", mat="lips"),
        Part("upper_teeth", "head", (0.0, -0.030, 0.071), None, 0.006, flat=(2.6, 0.8, 1.0), group="head", rgroup="head",
             part="Upper_Teeth", mat="teeth"),
        Part("lower_teeth", "jaw", _head_to_jaw((0.0, -0.036, 0.069)), None, 0.0055, flat=(2.5, 0.8, 1.0), group="head",
             rgroup="head", part="Lower_Teeth", mat="teeth"),
        Part("tongue", "jaw", _head_to_jaw((0.0, -0.038, 0.058)), None, 0.012, flat=(1.3, 0.5, 1.2), group="head",
             rgroup="head", part="Tongue", mat="tongue"),
        Part("hair_cap", "head", (0.0, 0.085, -0.016), None, 0.1, flat=(0.80, 0.94, 1.0), group="head", rgroup="hair",
             part="Hair", mat="hair", feature="hair_cap"),
        Part("hair_long", "head", (0.0, 0.07, -0.045), (0.0, -0.13, -0.06), 0.085, 0.065, flat=(1.0, 1.0, 0.62),
             group="head", rgroup="hair", part="Hair", mat="hair", feature="hair_long"),
        Part("ponytail", "head", (0.0, 0.06, -0.105), (0.0, -0.08, -0.125), 0.022, 0.014, group="head", rgroup="head",
             part="Hair", mat="hair", feature="ponytail"),
        Part("bun", "head", (0.0, 0.14, -0.07), None, 0.036, group="head", rgroup="head", part="Hair", mat="hair",
             feature="bun"),
        Part("hat", "head", (0.0, 0.098, -0.012), None, 0.1, flat=(0.84, 0.78, 1.05), group="head", rgroup="head",
             part="Apparel", mat="hat", feature="hat"),
        Part("hat_brim", "head", (0.0, 0.092, 0.075), None, 0.07, flat=(1.0, 0.12, 0.85), group="head", rgroup="head",
             part="Apparel", mat="hat", feature="hat"),
    ]
    left = [
        Part("l_glute", "pelvis", (0.065, -0.075, -0.045), None, 0.08, flat=(1.0, 1.05, 0.95), group="pelvis", rgroup="hip",
             part="Torso", layers=bottom),
        Part("l_breast", "chest", (0.052, 0.07, 0.085), None, 0.052, flat=(1.0, 0.9, 0.85), group="spine", rgroup="breast",
             part="Torso", layers=top, feature="female"),
        Part("l_trapezius", "l_clav", (0.0, 0.005, -0.02), (0.15, -0.005, -0.05), 0.045, 0.045, flat=(1.0, 0.9, 1.0),
             group="clav", rgroup="torso", part="Torso", layers=top),
        Part("l_deltoid", "l_shoulder", (0.005, -0.005, 0.0), None, 0.052, group="uarm", rgroup="arm",
             part="Left_Upper_Arm", layers=("sleeve_u",), s_len=0.29),
        Part("l_upper_arm", "l_shoulder", (0.0, 0.0, 0.0), (0.0, -0.29, 0.0), 0.047, 0.037, group="uarm", rgroup="arm",
             part="Left_Upper_Arm", layers=("sleeve_u",), s_len=0.29),
        Part("l_forearm", "l_elbow", (0.0, 0.0, 0.0), (0.0, -0.25, 0.0), 0.039, 0.026, flat=(1.0, 1.0, 0.82), group="farm",
             rgroup="arm", part="Left_Lower_Arm", layers=("sleeve_f",), s_len=0.25),
        Part("l_forearm_muscle", "l_elbow", (0.0, -0.06, 0.0), None, 0.041, flat=(1.05, 1.6, 0.85), group="farm",
             rgroup="arm", part="Left_Lower_Arm", layers=("sleeve_f",), s_len=0.25),
        Part("l_palm", "l_wrist", (0.002, -0.025, 0.0), (0.002, -0.070, 0.0), 0.024, 0.026, flat=(1.55, 1.0, 0.55),
             group="hand", rgroup="hand", part="Left_Hand"),
        Part("l_thigh", "l_hip", (0.0, 0.0, 0.0), (0.0, -0.43, 0.0), 0.082, 0.053, group="thigh", rgroup="leg",
             part="Left_Upper_Leg", layers=("pants_thigh",), s_len=0.43),
        Part("l_knee", "l_knee", (0.0, 0.0, 0.01), None, 0.052, group="shin", rgroup="leg", part="Left_Lower_Leg",
             layers=("pants_shin", "ankle"), s_len=0.425, side="L"),
        Part("l_shin", "l_knee", (0.0, 0.0, 0.0), (0.0, -0.425, -0.01), 0.052, 0.034, group="shin", rgroup="leg",
             part="Left_Lower_Leg", layers=("pants_shin", "ankle"), s_len=0.425, side="L"),
        Part("l_calf", "l_knee", (0.0, -0.13, -0.025), None, 0.05, flat=(0.95, 1.7, 1.0), group="shin", rgroup="leg",
             part="Left_Lower_Leg", layers=("pants_shin", "ankle"), s_len=0.425, side="L"),
        Part("l_foot", "l_ankle", (0.0, -0.04, -0.04), (0.0, -0.05, 0.135), 0.036, 0.032, flat=(1.15, 0.75, 1.0),
             group="foot", rgroup="foot", part="Left_Foot", layers=("shoes",), side="L"),
        # Face features with a left/right twin.
        Part("l_ear", "head", (0.074, 0.035, -0.012), None, 0.03, flat=(0.33, 1.0, 0.62), group="head", rgroup="head",
             part="Face_Neck"),
        Part("l_eye", "head", (0.031, 0.041, 0.066), None, 0.0125, flat=(1.45, 0.78, 1.0), group="head", rgroup="head",
             part="Face_Neck", mat="sclera"),
        Part("l_iris", "head", (0.031, 0.041, 0.0745), None, 0.0055, group="head", rgroup="head", part="Face_Neck",
             mat="iris"),
        Part("l_brow", "head", (0.013, 0.060, 0.0875), (0.049, 0.061, 0.066), 0.0038, 0.0034, flat=(1.0, 0.8, 1.0),
             group="head", rgroup="head", part="Face_Neck", mat="brows"),
    ]
    lengths, radii = _THUMB
    left.append(Part("l_thumb_meta", "l_thumb1", (0.0, 0.0, 0.0), (0.0, -lengths[0], 0.0), radii[0], radii[1],
                     flat=(1.0, 1.0, 0.9), group="hand", rgroup="hand", part="Left_Hand"))
    left.append(Part("l_thumb_prox", "l_thumb2", (0.0, 0.0, 0.0), (0.0, -lengths[1], 0.0), radii[1], radii[2],
                     flat=(1.0, 1.0, 0.9), group="hand", rgroup="hand", part="Left_Hand"))
    left.append(Part("l_thumb_dist", "l_thumb3", (0.0, 0.0, 0.0), (0.0, -lengths[2], 0.0), radii[2], radii[3],
                     flat=(1.0, 1.0, 0.85), group="hand", rgroup="hand", part="Left_Hand"))
    for name, _, _, lens, _ in _FINGERS:
        r = _FINGER_RADII[name]
        for k in range(3):
            left.append(Part(f"l_{name}_{k + 1}", f"l_{name}{k + 1}", (0.0, 0.0, 0.0), (0.0, -lens[k], 0.0), r[k], r[k + 1],
                             flat=(1.0, 1.0, 0.88), group="hand", rgroup="hand", part="Left_Hand"))
    return center + _sided(left)


def _surface_hits(parts: list[Part], joint_offsets: dict[str, tuple[float, float, float]],
                  rays: list[tuple[tuple[float, float, float], tuple[float, float, float]]]) -> list[tuple[tuple[float, float, float], str]]:
    """First hits of rays (origin, unit direction; in the reference frame) on the canonical parts.

    ``joint_offsets`` maps each joint the parts hang from to its origin in the reference frame (rest
    rotations are identity here). Returns per ray the hit point in the hit part's joint frame and that
    joint's name, so the point moves with the right bone.
    """
    from .shapes import cone_constants, cone_hit

    o = torch.tensor([r[0] for r in rays], dtype=torch.float64)
    d = torch.tensor([r[1] for r in rays], dtype=torch.float64)
    best = torch.full((len(rays),), float("inf"), dtype=torch.float64)
    owner = [""] * len(rays)
    for part in parts:
        off = torch.tensor(joint_offsets[part.joint], dtype=torch.float64)
        flat = torch.tensor(part.flat, dtype=torch.float64)
        a = torch.tensor(part.a, dtype=torch.float64) / flat
        b = torch.tensor(part.b if part.b is not None else part.a, dtype=torch.float64) / flat
        ra = torch.tensor(part.ra, dtype=torch.float64)
        rb = torch.tensor(part.rb if part.rb is not None else part.ra, dtype=torch.float64)
        origin = (o - off) / flat
        qd = d / flat
        c = cone_constants(origin, a.expand_as(origin), b.expand_as(origin), ra.expand(len(rays)), rb.expand(len(rays)))
        dot = lambda u, v: (u * v).sum(-1)
        t = cone_hit(dot(c["ba"], qd), dot(c["oa"], qd), dot(c["ob"], qd), dot(qd, qd), c["d2"], c["k0"], c["cy"],
                     c["ea"], c["eb"])
        for i in torch.nonzero(t < best).squeeze(1).tolist():
            best[i] = t[i]
            owner[i] = part.joint
    out = []
    for i in range(len(rays)):
        if not torch.isfinite(best[i]):
            raise ValueError(f"surface keypoint ray {i} misses the figure")
        p = o[i] + best[i] * d[i] - torch.tensor(joint_offsets[owner[i]], dtype=torch.float64)
        out.append((tuple(float(v) for v in p), owner[i]))
    return out


def _unit(v: tuple[float, float, float]) -> tuple[float, float, float]:
    n = math.sqrt(sum(c * c for c in v))
    return (v[0] / n, v[1] / n, v[2] / n)


def _face_rays() -> list[tuple[str, tuple[float, float, float], tuple[float, float, float]]]:
    """(name, origin, direction) in the head frame for the COCO face points and the iBUG-68 layout."""
    front = (0.0, 0.0, -1.0)
    rays: list[tuple[str, tuple[float, float, float], tuple[float, float, float]]] = []

    def from_front(name: str, x: float, y: float) -> None:
        rays.append((name, (x, y, 0.4), front))

    from_front("nose", 0.0, 0.002)
    from_front("left_eye", 0.031, 0.041)
    from_front("right_eye", -0.031, 0.041)
    rays.append(("left_ear", (0.4, 0.035, -0.012), (-1.0, 0.0, 0.0)))
    rays.append(("right_ear", (-0.4, 0.035, -0.012), (1.0, 0.0, 0.0)))
    # Jaw contour 0..16: horizontal rays toward the face axis, from the subject's right over the chin.
    heights = [(90.0, 0.025), (67.5, -0.002), (45.0, -0.031), (22.5, -0.054), (0.0, -0.066)]
    for k in range(17):
        ang = -90.0 + 11.25 * k
        a = abs(ang)
        for (a0, y0), (a1, y1) in zip(heights[::-1][:-1], heights[::-1][1:]):
            if a0 <= a <= a1:
                y = y0 + (y1 - y0) * (a - a0) / (a1 - a0)
        dirn = (math.sin(math.radians(ang)), 0.0, math.cos(math.radians(ang)))
        center = (0.0, y, 0.02)
        rays.append((f"face_{k}", tuple(center[i] + 0.4 * dirn[i] for i in range(3)), tuple(-c for c in dirn)))
    # Brows 17-21 (right, outer -> inner), 22-26 (left, inner -> outer).
    for k in range(5):
        from_front(f"face_{17 + k}", -(0.048 - 0.0085 * k), 0.0615)
    for k in range(5):
        from_front(f"face_{22 + k}", 0.014 + 0.0085 * k, 0.0615)
    # Nose bridge 27-30 (top -> tip), nostril base 31-35 (right -> left) seen from below the front.
    for k, y in enumerate((0.040, 0.027, 0.015, 0.002)):
        from_front(f"face_{27 + k}", 0.0, y)
    below = _unit((0.0, -0.7, 1.0))
    for k, x in enumerate((-0.016, -0.008, 0.0, 0.008, 0.016)):
        target = (x, -0.006, 0.094)
        rays.append((f"face_{31 + k}", tuple(target[i] + 0.4 * below[i] for i in range(3)), tuple(-c for c in below)))
    # Eyes: right 36-41 (outer corner, upper x2, inner corner, lower x2), left 42-47 (inner, upper x2, outer, lower x2).
    right = [(-0.0115, 0.0), (-0.004, 0.0048), (0.004, 0.0048), (0.0115, 0.0), (0.004, -0.0042), (-0.004, -0.0042)]
    left = [(-0.0115, 0.0), (-0.004, 0.0048), (0.004, 0.0048), (0.0115, 0.0), (0.004, -0.0042), (-0.004, -0.0042)]
    for k, (dx, dy) in enumerate(right):
        from_front(f"face_{36 + k}", -0.031 + dx, 0.041 + dy)
    for k, (dx, dy) in enumerate(left):
        from_front(f"face_{42 + k}", 0.031 + dx, 0.041 + dy)
    # Outer lips 48-59 (right corner, upper lip to the left corner, lower lip back), inner lips 60-67.
    outer = [(-0.0225, -0.031), (-0.015, -0.0245), (-0.006, -0.0222), (0.0, -0.0232), (0.006, -0.0222), (0.015, -0.0245),
             (0.0225, -0.031), (0.015, -0.0395), (0.006, -0.0415), (0.0, -0.042), (-0.006, -0.0415), (-0.015, -0.0395)]
    inner = [(-0.018, -0.031), (-0.007, -0.0295), (0.0, -0.0295), (0.007, -0.0295), (0.018, -0.031), (0.007, -0.0325),
             (0.0, -0.0325), (-0.007, -0.0325)]
    for k, (x, y) in enumerate(outer + inner):
        from_front(f"face_{48 + k}", x, y)
    return rays


def _keypoints() -> list[Keypoint]:
    parts = _parts()
    head_parts = [p for p in parts if p.joint in ("head", "jaw") and p.feature is None]
    face = _surface_hits(head_parts, {"head": (0.0, 0.0, 0.0), "jaw": (0.0, 0.02, -0.005)},
                         [(o, d) for _, o, d in _face_rays()])
    surface = {name: hit for (name, _, _), hit in zip(_face_rays(), face)}

    # Surface points lie exactly on the surface: a few millimetres of slack absorb rounding only.
    def on_face(name: str, slack: float = 0.003) -> Keypoint:
        p, joint = surface[name]
        return Keypoint(name, joint, p, "head", slack, "head")

    body = [
        on_face("nose"), on_face("left_eye"), on_face("right_eye"), on_face("left_ear"), on_face("right_ear"),
        Keypoint("left_shoulder", "l_shoulder", slack=0.08, rgroup=_BODY),
        Keypoint("right_shoulder", "r_shoulder", slack=0.08, rgroup=_BODY),
        Keypoint("left_elbow", "l_elbow", slack=0.06, rgroup=_BODY),
        Keypoint("right_elbow", "r_elbow", slack=0.06, rgroup=_BODY),
        Keypoint("left_wrist", "l_wrist", slack=0.045, rgroup=_BODY),
        Keypoint("right_wrist", "r_wrist", slack=0.045, rgroup=_BODY),
        Keypoint("left_hip", "l_hip", slack=0.17, rgroup=_BODY),
        Keypoint("right_hip", "r_hip", slack=0.17, rgroup=_BODY),
        Keypoint("left_knee", "l_knee", slack=0.08, rgroup=_BODY),
        Keypoint("right_knee", "r_knee", slack=0.08, rgroup=_BODY),
        Keypoint("left_ankle", "l_ankle", slack=0.06, rgroup=_BODY),
        Keypoint("right_ankle", "r_ankle", slack=0.06, rgroup=_BODY),
    ]
    feet = []
    foot = {p.joint: p for p in parts if p.name in ("l_foot", "r_foot")}
    for side, sx in (("left", 1.0), ("right", -1.0)):
        j = f"{side[0]}_ankle"
        hits = _surface_hits([foot[j]], {j: (0.0, 0.0, 0.0)},
                             [((-0.020 * sx, -0.052, 0.4), (0.0, 0.0, -1.0)), ((0.028 * sx, -0.055, 0.4), (0.0, 0.0, -1.0)),
                              ((0.0, -0.058, -0.4), (0.0, 0.0, 1.0))])
        for name, (p, _) in zip(("big_toe", "small_toe", "heel"), hits):
            feet.append(Keypoint(f"{side}_{name}", j, p, "foot", 0.003, _BODY))
    face_kps = [on_face(f"face_{k}") for k in range(68)]
    hands = []
    for side in ("left", "right"):
        s = side[0]
        lens, radii = _THUMB
        kps = [Keypoint(f"{side}_hand_root", f"{s}_wrist", slack=0.045, rgroup=_BODY),
               Keypoint(f"{side}_thumb1", f"{s}_thumb1", slack=0.02, rgroup="hand"),
               Keypoint(f"{side}_thumb2", f"{s}_thumb2", slack=0.016, rgroup="hand"),
               Keypoint(f"{side}_thumb3", f"{s}_thumb3", slack=0.014, rgroup="hand"),
               Keypoint(f"{side}_thumb4", f"{s}_thumb3", (0.0, -(lens[2] + radii[3] * 0.8), 0.0), "hand", 0.006, "hand")]
        names = {"index": "forefinger", "middle": "middle_finger", "ring": "ring_finger", "pinky": "pinky_finger"}
        for fname, _, _, flens, _ in _FINGERS:
            label = names[fname]
            tip = flens[2] + _FINGER_RADII[fname][3] * 0.8
            kps += [Keypoint(f"{side}_{label}1", f"{s}_{fname}1", slack=0.015, rgroup="hand"),
                    Keypoint(f"{side}_{label}2", f"{s}_{fname}2", slack=0.013, rgroup="hand"),
                    Keypoint(f"{side}_{label}3", f"{s}_{fname}3", slack=0.012, rgroup="hand"),
                    Keypoint(f"{side}_{label}4", f"{s}_{fname}3", (0.0, -tip, 0.0), "hand", 0.006, "hand")]
        hands += kps
    return body + feet + face_kps + hands


@lru_cache(maxsize=1)
def human_spec() -> FigureSpec:
    """The human figure (joints, parts, COCO-WholeBody keypoints)."""
    return FigureSpec(
        joints=tuple(_joints()), parts=tuple(_parts()), keypoints=tuple(_keypoints()),
        part_classes=SAPIENS_PART_CLASSES, mat_slots=MAT_SLOTS, roles=ROLES, features=FEATURES, groups=GROUPS,
        rgroups=RGROUPS, free_limbs=("l_shoulder", "r_shoulder"),
    )


_COMPILED: dict[str, CompiledFigure] = {}


def compiled_human(device: torch.device | str = "cpu") -> CompiledFigure:
    key = str(torch.device(device))
    if key not in _COMPILED:
        _COMPILED[key] = CompiledFigure(human_spec(), device)
    return _COMPILED[key]


# ----------------------------------------------------------------------------------------------
# Pose: anatomical degrees of freedom, limits and pose classes.

# name -> (joint (left version for sided DOFs), euler axis 0=x 1=y 2=z, sign, lo, hi) in degrees.
_CENTER_DOFS = {
    "pelvis_tilt": ("pelvis", 0, 1.0, -30.0, 95.0), "pelvis_twist": ("pelvis", 1, 1.0, -30.0, 30.0),
    "pelvis_side": ("pelvis", 2, 1.0, -20.0, 20.0),
    "spine_flex": ("spine", 0, 1.0, -25.0, 60.0), "spine_twist": ("spine", 1, 1.0, -30.0, 30.0),
    "spine_side": ("spine", 2, 1.0, -25.0, 25.0),
    "chest_flex": ("chest", 0, 1.0, -20.0, 40.0), "chest_twist": ("chest", 1, 1.0, -30.0, 30.0),
    "chest_side": ("chest", 2, 1.0, -20.0, 20.0),
    "neck_flex": ("neck", 0, 1.0, -35.0, 45.0), "neck_twist": ("neck", 1, 1.0, -50.0, 50.0),
    "neck_side": ("neck", 2, 1.0, -25.0, 25.0),
    "head_flex": ("head", 0, 1.0, -30.0, 30.0), "head_twist": ("head", 1, 1.0, -35.0, 35.0),
    "head_side": ("head", 2, 1.0, -20.0, 20.0),
    "jaw_open": ("jaw", 0, 1.0, 0.0, 22.0),
}
_SIDED_DOFS = {
    "clav_up": ("clav", 2, 1.0, -10.0, 30.0), "clav_fwd": ("clav", 1, -1.0, -15.0, 20.0),
    "shoulder_flex": ("shoulder", 0, -1.0, -60.0, 180.0), "shoulder_abd": ("shoulder", 2, 1.0, -30.0, 170.0),
    "shoulder_twist": ("shoulder", 1, 1.0, -80.0, 80.0),
    "elbow_flex": ("elbow", 0, -1.0, 0.0, 150.0), "forearm_twist": ("elbow", 1, 1.0, -80.0, 80.0),
    "wrist_flex": ("wrist", 0, -1.0, -60.0, 70.0), "wrist_dev": ("wrist", 2, 1.0, -25.0, 30.0),
    "hip_flex": ("hip", 0, -1.0, -25.0, 125.0), "hip_abd": ("hip", 2, 1.0, -25.0, 50.0),
    "hip_twist": ("hip", 1, 1.0, -35.0, 40.0),
    "knee_flex": ("knee", 0, 1.0, 0.0, 150.0),
    "ankle_flex": ("ankle", 0, 1.0, -30.0, 45.0), "ankle_inv": ("ankle", 2, 1.0, -15.0, 15.0),
}
DOF_NAMES = tuple(_CENTER_DOFS) + tuple(f"l_{n}" for n in _SIDED_DOFS) + tuple(f"r_{n}" for n in _SIDED_DOFS)

# Default spread (deg) of every DOF not named by a class.
_DEFAULT_STD = {"neck_twist": 25.0, "neck_flex": 10.0, "head_twist": 12.0, "head_flex": 10.0, "head_side": 6.0,
                "neck_side": 6.0, "forearm_twist": 30.0, "wrist_flex": 15.0, "wrist_dev": 8.0, "shoulder_twist": 15.0,
                "hip_twist": 6.0, "jaw_open": 4.0, "clav_up": 4.0, "clav_fwd": 4.0}

# Pose classes: probability and per-DOF (mean, std, gait sin, gait relu(cos), gait relu(-sin)) in
# degrees. A key without a side prefix applies to both sides; the gait phase of the right side is
# shifted by pi, so walking alternates. "root" is the body orientation: (pitch, roll) presets.
_STAND_LEGS = {"hip_flex": (3, 5), "hip_abd": (4, 4), "knee_flex": (5, 5), "ankle_flex": (0, 5)}
_RELAXED_ARMS = {"shoulder_flex": (5, 14), "shoulder_abd": (10, 8), "elbow_flex": (18, 16)}
POSE_CLASSES: dict[str, tuple[float, dict]] = {
    "stand": (0.15, {**_STAND_LEGS, **_RELAXED_ARMS, "spine_flex": (3, 5)}),
    "walk": (0.15, {"hip_flex": (6, 4, 24), "knee_flex": (8, 4, 0, 42), "ankle_flex": (0, 5, -8),
                    "shoulder_flex": (4, 6, -22), "shoulder_abd": (8, 5), "elbow_flex": (18, 8, 0, 0, 25),
                    "spine_twist": (0, 3, 6), "spine_flex": (3, 3), "hip_abd": (2, 2)}),
    "run": (0.08, {"hip_flex": (18, 6, 42), "knee_flex": (28, 8, 0, 80), "ankle_flex": (0, 6, -14),
                   "shoulder_flex": (8, 8, -45), "shoulder_abd": (10, 5), "elbow_flex": (85, 12),
                   "spine_flex": (12, 5), "spine_twist": (0, 3, 10), "hip_abd": (3, 3)}),
    "sit_chair": (0.08, {"hip_flex": (88, 8), "hip_abd": (8, 6), "knee_flex": (88, 15), "ankle_flex": (0, 10),
                         "spine_flex": (6, 8), "shoulder_flex": (25, 20), "shoulder_abd": (10, 8), "elbow_flex": (65, 25)}),
    "sit_floor": (0.03, {"hip_flex": (112, 6), "hip_abd": (14, 8), "hip_twist": (5, 8), "knee_flex": (148, 4),
                         "spine_flex": (12, 8), "shoulder_flex": (35, 20), "shoulder_abd": (12, 10), "elbow_flex": (45, 30),
                         "ankle_flex": (10, 10)}),
    "sit_long": (0.02, {"hip_flex": (86, 6), "hip_abd": (10, 6), "knee_flex": (6, 8), "spine_flex": (10, 8),
                        "shoulder_flex": (-25, 15), "shoulder_abd": (18, 8), "elbow_flex": (8, 8), "ankle_flex": (20, 10)}),
    "crouch": (0.07, {"hip_flex": (112, 10), "hip_abd": (18, 10), "knee_flex": (125, 15), "ankle_flex": (-24, 8),
                      "spine_flex": (22, 10), "shoulder_flex": (45, 25), "shoulder_abd": (12, 10), "elbow_flex": (50, 30)}),
    "kneel": (0.05, {"l_hip_flex": (80, 12), "l_knee_flex": (88, 12), "l_ankle_flex": (0, 8), "r_hip_flex": (2, 10),
                     "r_knee_flex": (95, 10), "r_ankle_flex": (38, 8), **_RELAXED_ARMS, "spine_flex": (5, 6)}),
    "arms_up": (0.08, {**_STAND_LEGS, "shoulder_flex": (25, 25), "shoulder_abd": (150, 20), "elbow_flex": (20, 22),
                       "clav_up": (15, 8), "neck_flex": (-10, 10)}),
    "bend": (0.07, {"pelvis_tilt": (50, 18), "hip_flex": (0, 6), "knee_flex": (10, 10), "spine_flex": (22, 10),
                    "chest_flex": (12, 8), "shoulder_flex": (55, 25), "shoulder_abd": (10, 8), "elbow_flex": (20, 20),
                    "neck_flex": (-20, 10)}),
    "lie": (0.07, {"hip_flex": (8, 15), "hip_abd": (10, 10), "knee_flex": (15, 20), "shoulder_flex": (15, 40),
                   "shoulder_abd": (35, 30), "elbow_flex": (30, 30), "neck_flex": (5, 15), "root": (1, 0)}),
    "gesture": (0.13, {**_STAND_LEGS, "shoulder_flex": (50, 55), "shoulder_abd": (50, 45), "shoulder_twist": (0, 35),
                       "elbow_flex": (60, 45), "spine_twist": (0, 10), "spine_side": (0, 6)}),
    "sports": (0.02, {"hip_flex": (30, 45), "hip_abd": (15, 18), "knee_flex": (45, 40), "shoulder_flex": (60, 60),
                      "shoulder_abd": (60, 50), "elbow_flex": (60, 45), "spine_flex": (15, 20), "spine_twist": (0, 15),
                      "spine_side": (0, 10), "ankle_flex": (0, 15)}),
}
CLASS_NAMES = tuple(POSE_CLASSES)
_CLASS_INDEX = {n: i for i, n in enumerate(CLASS_NAMES)}


@lru_cache(maxsize=None)
def _pose_tables(device: str) -> dict[str, Tensor]:
    C, D = len(CLASS_NAMES), len(DOF_NAMES)
    coef = torch.zeros(C, D, 5)
    dof_index = {n: i for i, n in enumerate(DOF_NAMES)}
    for i, d in enumerate(DOF_NAMES):
        base = d[2:] if d[:2] in ("l_", "r_") else d
        coef[:, i, 1] = _DEFAULT_STD.get(base, 3.0)
    for c, name in enumerate(CLASS_NAMES):
        for key, val in POSE_CLASSES[name][1].items():
            if key == "root":
                continue
            targets = [key] if key in dof_index else [f"l_{key}", f"r_{key}"]
            for t in targets:
                coef[c, dof_index[t], : len(val)] = torch.tensor(val, dtype=torch.float32)
    lo, hi = torch.zeros(D), torch.zeros(D)
    for i, d in enumerate(DOF_NAMES):
        spec = _CENTER_DOFS[d] if d in _CENTER_DOFS else _SIDED_DOFS[d[2:]]
        lo[i], hi[i] = spec[3], spec[4]
    probs = torch.tensor([POSE_CLASSES[n][0] for n in CLASS_NAMES])
    return {"coef": coef.to(device), "lo": lo.to(device), "hi": hi.to(device), "probs": probs}


def _dof_to_euler(fig: CompiledFigure, dofs: Tensor) -> Tensor:
    """[N,D] anatomical degrees -> [N,J,3] Euler radians (x, y, z per joint)."""
    N = dofs.shape[0]
    euler = torch.zeros(N, fig.num_joints, 3, device=dofs.device)
    cols_j, cols_a, cols_s, cols_d = [], [], [], []
    for i, d in enumerate(DOF_NAMES):
        if d in _CENTER_DOFS:
            joint, axis, sign = _CENTER_DOFS[d][:3]
        else:
            side, base = d[:2], d[2:]
            jbase, axis, sign = _SIDED_DOFS[base][:3]
            joint = f"{side}{jbase}"
            if side == "r_" and axis in (1, 2):
                sign = -sign  # mirror: rotations about y and z change sign on the right side
        cols_j.append(fig.joint_index[joint])
        cols_a.append(axis)
        cols_s.append(sign)
        cols_d.append(i)
    j = torch.tensor(cols_j, device=dofs.device)
    a = torch.tensor(cols_a, device=dofs.device)
    s = torch.tensor(cols_s, device=dofs.device, dtype=torch.float32)
    euler[:, j, a] = dofs * (s * (math.pi / 180.0))
    return euler


# ----------------------------------------------------------------------------------------------
# Sampling people.

@dataclass
class HumanParams:
    """Sampled people for a batch, [B, P] slots flattened to N = B*P figures.

    ``local_rot`` [N,J,3,3], ``gscale`` [N,G,3], ``rscale`` [N,RG], ``features`` [N,F] bool,
    ``roles_*`` [N,R] clothing, ``materials`` [N, S, F] material rows, ``pose_class`` [N],
    ``root_pose`` [N,3,3] (lying etc.), ``height`` [N] metres.
    """

    local_rot: Tensor
    gscale: Tensor
    rscale: Tensor
    features: Tensor
    role_cls: Tensor
    role_mat: Tensor
    role_lo: Tensor
    role_hi: Tensor
    materials: Tensor
    pose_class: Tensor
    root_pose: Tensor
    height: Tensor
    dofs: Tensor


# Explicitly on the CPU: the first import may happen inside a model build's ``torch.device("meta")`` context.
_SKIN = torch.tensor([[0.98, 0.86, 0.77], [0.93, 0.76, 0.64], [0.87, 0.68, 0.54], [0.78, 0.57, 0.42],
                      [0.66, 0.45, 0.31], [0.52, 0.34, 0.23], [0.40, 0.26, 0.18], [0.29, 0.19, 0.14]], device="cpu")
_HAIR = torch.tensor([[0.05, 0.04, 0.04], [0.14, 0.09, 0.06], [0.28, 0.17, 0.09], [0.45, 0.30, 0.16],
                      [0.78, 0.64, 0.40], [0.55, 0.22, 0.10], [0.62, 0.61, 0.60], [0.88, 0.87, 0.85]], device="cpu")
_HAIR_P = (0.30, 0.25, 0.17, 0.08, 0.08, 0.04, 0.05, 0.03)
_IRIS = torch.tensor([[0.18, 0.10, 0.05], [0.30, 0.18, 0.08], [0.25, 0.40, 0.55], [0.30, 0.42, 0.25], [0.08, 0.06, 0.05]],
                     device="cpu")


_GARMENTS = ("top", "bottom", "shoes", "socks", "hat", "bag")
_SIDES = ("l_", "r_")
# Every uniform the human sampler uses, in a fixed order (append new names at the end).
_HUMAN_DRAWS: tuple[tuple[str, int], ...] = (
    ("sex", 1), ("age", 1), ("h", 4), ("hc", 1), ("build", 4), ("prop", 24), ("skirt_len", 1), ("breast", 1),
    ("hair_vol", 1), ("hair_style", 1), ("long", 1), ("pony", 1), ("bun", 1), ("hat", 1), ("bag", 1), ("top", 1),
    ("bottom", 1), ("pose", 1), ("shoes", 1), ("boots", 1), ("socks", 1), ("sleeve", 1), ("cuff", 1), ("shirt_lo", 1),
    ("waist", 1), ("shorts", 1), ("hem", 1), ("boot_top", 1), ("sock_top", 1), ("skin", 1), ("skin_tint", 3),
    ("hair_col", 1), ("gray", 1), ("white", 1), ("hair_shade", 1), ("iris", 1),
    *((f"{g}_{k}", 1) for g in _GARMENTS for k in ("h", "s", "v", "neutral", "h2", "s2", "v2", "pat", "freq", "grain")),
    ("jeans", 1), ("denim_h", 1), ("denim_s", 1), ("denim_v", 1), ("shoe_dark", 1), ("phase", 1),
    *((f"gesture_{s}", 1) for s in _SIDES),
    *((f"gesture_{s}{d}", 1) for s in _SIDES for d in ("shoulder_flex", "shoulder_abd", "shoulder_twist", "elbow_flex")),
    ("swap_lr", 1), ("lie_kind", 1), ("lie_side", 1),
    *((f"{k}_{s}", 1) for s in ("l", "r") for k in ("grip", "spread")),
    *((f"finger_{s}{k}", 3) for s in ("l", "r") for k in range(4)),
    *((f"thumb_{s}", 3) for s in ("l", "r")),
)


def hsv_to_rgb(h: Tensor, s: Tensor, v: Tensor) -> Tensor:
    """HSV in [0, 1] -> RGB [..., 3] (basic arithmetic only)."""
    k = torch.stack([torch.full_like(h, 5.0), torch.full_like(h, 3.0), torch.full_like(h, 1.0)], dim=-1)
    kk = k + h[..., None] * 6.0
    kk = kk - torch.floor(kk / 6.0) * 6.0
    f = torch.clamp(torch.minimum(kk, 4.0 - kk), 0.0, 1.0)
    return v[..., None] - v[..., None] * s[..., None] * f


def material_rows(c1: Tensor, c2: Tensor, pattern: Tensor, freq: Tensor, grain: Tensor, spec: Tensor) -> Tensor:
    """Build material rows [..., F] from colours and a pattern code.

    pattern: 0 solid, 1 horizontal stripes, 2 plaid, 3 vertical stripes, 4 fine stripes.
    """
    from .render import MAT_FIELDS as F, NUM_MAT_FIELDS

    shape = c1.shape[:-1]
    rows = torch.zeros(*shape, NUM_MAT_FIELDS, device=c1.device)
    rows[..., F["c1"]] = c1
    rows[..., F["c2"]] = c2
    zero = torch.zeros_like(freq)
    horiz = torch.stack([zero, freq, zero], dim=-1)
    vert = torch.stack([freq, zero, freq * 0.7], dim=-1)
    is_h = (pattern == 1) | (pattern == 2) | (pattern == 4)
    is_v = (pattern == 3) | (pattern == 2)
    rows[..., F["k1"]] = torch.where(is_h[..., None], horiz, 0.0)
    rows[..., F["duty1"]] = torch.where(pattern == 4, 0.25, 0.5)
    rows[..., F["w1"]] = torch.where(is_h, 1.0, 0.0)
    rows[..., F["k2"]] = torch.where(is_v[..., None], vert, 0.0)
    rows[..., F["duty2"]] = torch.where(pattern == 2, 0.3, 0.5)
    rows[..., F["w2"]] = torch.where(is_v, torch.where(pattern == 2, 0.6, 1.0), 0.0)
    rows[..., F["grain"]] = grain
    rows[..., F["grain_freq"]] = 180.0
    rows[..., F["spec"]] = spec
    return rows


def sample_humans(rng: Rng, num_slots: int, device: torch.device) -> HumanParams:
    """Sample ``num_slots`` people per image for every image of ``rng`` (N = B * num_slots)."""
    fig = compiled_human(device)
    B, P = rng.batch_size, num_slots
    N = B * P
    shp = (P,)
    flat = lambda t: t.reshape(N, *t.shape[2:])
    draws = Draws(rng, "human", shp, _HUMAN_DRAWS)
    u = lambda name, *_: flat(draws.u(name))
    nrm = lambda name, *_: flat(draws.normals(name)).squeeze(-1) if name != "prop" else flat(draws.normals(name))
    pick = lambda name, probs: choice_from(u(name), probs)

    # --- body shape ---------------------------------------------------------------------------
    female = u("sex") < 0.5
    age = pick("age", (0.10, 0.08, 0.70, 0.12))  # child, teen, adult, elderly
    child, teen, elderly = age == 0, age == 1, age == 3
    adult_h = torch.where(female, 1.63 + 0.065 * nrm("h"), 1.76 + 0.07 * nrm("h"))
    height = torch.where(child, 1.05 + 0.4 * u("hc"), torch.where(teen, 1.45 + 0.3 * u("hc"), adult_h - 0.03 * elderly))
    h = height / 1.75
    build = torch.clamp(nrm("build") * 0.8 + 0.15 * elderly, -1.5, 2.2)
    build = torch.where(child, torch.clamp(build, -1.5, 0.8), build)
    fem = female.to(torch.float32)
    young = (child | teen).to(torch.float32)
    dh = h - 1.0
    head_s = (1.0 + dh * (0.35 + dh * (-0.11375 + 0.0626 * dh))) * (1.0 - 0.03 * fem)  # ~ h ** 0.35
    var = nrm("prop", 6) * 0.03
    ones = torch.ones_like(h)
    limb = 1.0 - 0.05 * child.to(torch.float32)
    g = {
        "unit": (ones, ones, ones),
        "pelvis": (h * (0.97 + 0.09 * fem) * (1 + 0.05 * build), h, h),
        "spine": (h * (1 + var[:, 0]), h * (1 + var[:, 0]), h * (1 + var[:, 0])),
        "neck": (h, h * (1 + var[:, 1]), h),
        "head": (head_s, head_s, head_s),
        "clav": (h * (1.0 - 0.12 * fem - 0.06 * young) * (1 + var[:, 2]), h, h),
        "uarm": (h, h * (1 + var[:, 3]) * limb, h),
        "farm": (h, h * (1 + var[:, 3]) * limb, h),
        "hand": (h * (1 - 0.08 * fem), h * (1 - 0.08 * fem), h * (1 - 0.08 * fem)),
        "thigh": (h, h * (1 + var[:, 4]) * limb, h),
        "shin": (h, h * (1 + var[:, 4]) * limb, h),
        "foot": (h * (1 - 0.07 * fem), h * (1 - 0.07 * fem), h * (1 - 0.07 * fem)),
        "skirt": (h, h * (0.55 + 0.6 * u("skirt_len")), h),
    }
    gscale = torch.stack([torch.stack(g[name], dim=-1) for name in GROUPS], dim=1)
    thin = 1 + 0.11 * build
    r = {
        "unit": ones, "torso": h * thin * (1 - 0.07 * fem), "hip": h * (1 + 0.09 * build) * (1 + 0.03 * fem),
        "chest": h * (1 + 0.08 * build) * (1 - 0.1 * fem), "belly": h * torch.clamp(0.45 + 0.35 * build, 0.3, 1.3),
        "breast": h * (0.8 + 0.5 * u("breast")), "neck": h * thin * (1 - 0.12 * fem), "head": head_s,
        "arm": h * (1 + 0.13 * build) * (1 - 0.13 * fem) * (1 - 0.08 * young), "hand": h * (1 + 0.04 * build) * (1 - 0.08 * fem),
        "leg": h * (1 + 0.12 * build) * (1 - 0.04 * fem) * (1 - 0.08 * young), "foot": h * (1 - 0.05 * fem),
        "hair": head_s * (0.97 + 0.09 * u("hair_vol")), "body": h * (1 + 0.1 * torch.clamp(build, min=0.0)),
    }
    rscale = torch.stack([r[name] for name in RGROUPS], dim=1)

    # --- hair, clothes, accessories -------------------------------------------------------------
    hair_style = u("hair_style")
    bald = torch.where(female, hair_style < 0.01, hair_style < torch.where(elderly, 0.3, 0.08))
    long_hair = female & (u("long") < 0.6) | (~female & (u("long") < 0.04))
    pony = female & ~long_hair & (u("pony") < 0.35)
    bun = female & ~long_hair & ~pony & (u("bun") < 0.25)
    hat = u("hat") < 0.12
    bag = u("bag") < 0.1
    top_kind = pick("top", (0.04, 0.10, 0.42, 0.30, 0.14))  # bare, tank, tee, long, jacket
    top_kind = torch.where(female & (top_kind == 0), 1, top_kind)
    bottom_kind = pick("bottom", (0.50, 0.20, 0.10, 0.20))  # long pants, shorts, capri, skirt
    bottom_kind = torch.where(~female & (bottom_kind == 3), 0, bottom_kind)
    pose_class = pick("pose", tuple(p for p, _ in POSE_CLASSES.values()))
    skirt_pose_ok = torch.zeros_like(pose_class, dtype=torch.bool)
    for name in ("stand", "walk", "arms_up", "gesture"):
        skirt_pose_ok |= pose_class == _CLASS_INDEX[name]
    bottom_kind = torch.where((bottom_kind == 3) & ~skirt_pose_ok, 0, bottom_kind)
    skirt = bottom_kind == 3
    belly = build > 0.5
    features = torch.stack([female & ~child, belly, ~bald, long_hair & ~bald, pony & ~hat,
                            bun & ~hat, hat, bag, skirt], dim=-1)
    big = 9.0
    zero = torch.zeros_like(h)
    shoes = u("shoes") > 0.04
    boots = shoes & (u("boots") < 0.12) & (bottom_kind != 0)
    socks = shoes & ~boots & (u("socks") < 0.6)
    sleeve_u = torch.where(top_kind <= 1, 0.0, torch.where(top_kind == 2, 0.3 + 0.35 * u("sleeve"), big))
    sleeve_f_hi = torch.where(top_kind >= 3, 0.85 + 0.15 * u("cuff"), 0.0)
    shirt_lo = torch.where(top_kind == 4, -0.6, -0.45 + 0.6 * u("shirt_lo"))
    waist = 0.15 + 0.3 * u("waist")
    pants_thigh = torch.where(bottom_kind == 1, 0.3 + 0.45 * u("shorts"), torch.where(skirt, 0.0, big))
    pants_shin = torch.where(bottom_kind == 0, 0.92 + 0.1 * u("hem"), torch.where(bottom_kind == 2, 0.4 + 0.3 * u("hem"), 0.0))
    ankle_lo = torch.where(boots, 0.55 + 0.25 * u("boot_top"), 0.6 + 0.32 * u("sock_top"))
    from .classes import part_class_index as pci
    R = len(ROLES)
    role_cls = torch.zeros(N, R, dtype=torch.int64, device=device)
    role_mat = torch.zeros(N, R, dtype=torch.int64, device=device)
    role_lo = torch.zeros(N, R, device=device)
    role_hi = torch.zeros(N, R, device=device)
    has_top = top_kind > 0
    slot = {m: i for i, m in enumerate(MAT_SLOTS)}

    def set_role(name: str, cls: "int | Tensor", mat: "int | Tensor", lo: "float | Tensor", hi: "float | Tensor",
                 on: Tensor) -> None:
        k = ROLES.index(name)
        role_cls[:, k] = torch.as_tensor(cls, device=device)
        role_mat[:, k] = torch.as_tensor(mat, device=device)
        role_lo[:, k] = torch.where(on, torch.as_tensor(lo, device=device, dtype=torch.float32), 0.0)
        role_hi[:, k] = torch.where(on, torch.as_tensor(hi, device=device, dtype=torch.float32), 0.0)

    upper, lower = pci("Upper_Clothing"), pci("Lower_Clothing")
    set_role("top", upper, slot["top"], -big, big, has_top)
    set_role("top_abd", upper, slot["top"], shirt_lo, big, has_top)
    set_role("bottom", lower, slot["bottom"], -big, big, torch.ones_like(has_top))
    set_role("bottom_abd", lower, slot["bottom"], -big, waist, torch.ones_like(has_top))
    set_role("sleeve_u", upper, slot["top"], -big, sleeve_u, has_top & (sleeve_u > 0))
    set_role("sleeve_f", upper, slot["top"], -big, sleeve_f_hi, has_top & (sleeve_f_hi > 0))
    set_role("pants_thigh", lower, slot["bottom"], -big, pants_thigh, pants_thigh > 0)
    set_role("pants_shin", lower, slot["bottom"], -big, pants_shin, pants_shin > 0)
    set_role("ankle", torch.where(boots, pci("Left_Shoe"), pci("Left_Sock")), torch.where(boots, slot["shoes"], slot["socks"]),
             ankle_lo, big, boots | socks)
    set_role("shoes", pci("Left_Shoe"), slot["shoes"], -big, big, shoes)

    # --- materials ----------------------------------------------------------------------------
    dev_skin, dev_hair, dev_iris = _SKIN.to(device), _HAIR.to(device), _IRIS.to(device)
    t = u("skin") * (len(_SKIN) - 1)
    i0 = torch.clamp(torch.floor(t).to(torch.int64), 0, len(_SKIN) - 2)
    w = (t - i0.to(torch.float32))[:, None]
    skin = dev_skin[i0] * (1 - w) + dev_skin[i0 + 1] * w
    skin = skin * (1 + 0.06 * (u("skin_tint", 3) - 0.5))
    hair_idx = pick("hair_col", _HAIR_P)
    hair_idx = torch.where(elderly & (u("gray") < 0.6), 6 + (u("white") < 0.3).to(torch.int64), hair_idx)
    hair = dev_hair[hair_idx] * (0.85 + 0.3 * u("hair_shade"))[:, None]
    iris = dev_iris[torch.clamp(torch.floor(u("iris") * len(_IRIS)).to(torch.int64), 0, len(_IRIS) - 1)]
    S = len(MAT_SLOTS)
    c1 = torch.zeros(N, S, 3, device=device)
    c2 = torch.zeros(N, S, 3, device=device)
    pattern = torch.zeros(N, S, dtype=torch.int64, device=device)
    freq = torch.zeros(N, S, device=device)
    grain = torch.full((N, S), 0.04, device=device)
    spec = torch.full((N, S), 0.05, device=device)
    c1[:, slot["skin"]] = skin
    spec[:, slot["skin"]] = 0.12
    c1[:, slot["hair"]] = hair
    c2[:, slot["hair"]] = hair * 0.7
    grain[:, slot["hair"]] = 0.2  # strands as grain: fine stripes would alias into rings
    spec[:, slot["hair"]] = 0.25
    c1[:, slot["brows"]] = hair * 0.8
    c1[:, slot["sclera"]] = torch.tensor([0.93, 0.92, 0.9], device=device)
    spec[:, slot["sclera"]] = 0.4
    c1[:, slot["iris"]] = iris
    spec[:, slot["iris"]] = 0.5
    c1[:, slot["lips"]] = skin * torch.tensor([0.85, 0.55, 0.55], device=device)
    c1[:, slot["teeth"]] = torch.tensor([0.92, 0.9, 0.84], device=device)
    c1[:, slot["tongue"]] = torch.tensor([0.75, 0.35, 0.38], device=device)
    c1[:, slot["mouth"]] = torch.tensor([0.25, 0.08, 0.08], device=device)
    # Garments: random hue/saturation/value, jeans for many trousers, darker shoes.
    for name in ("top", "bottom", "shoes", "socks", "hat", "bag"):
        k = slot[name]
        hue, sat, val = u(f"{name}_h"), u(f"{name}_s"), u(f"{name}_v")
        neutral = u(f"{name}_neutral") < 0.35
        sat = torch.where(neutral, sat * 0.12, 0.25 + 0.7 * sat)
        val = 0.12 + 0.83 * val
        col = hsv_to_rgb(hue, sat, val)
        hue2 = hue + 0.5 * (u(f"{name}_h2") - 0.5)
        col2 = hsv_to_rgb(hue2 - torch.floor(hue2), torch.clamp(sat + 0.3 * (u(f"{name}_s2") - 0.5), 0, 1),
                          torch.clamp(1.1 - val + 0.2 * (u(f"{name}_v2") - 0.5), 0.05, 1.0))
        c1[:, k] = col
        c2[:, k] = col2
        pat = pick(f"{name}_pat", (0.66, 0.16, 0.11, 0.07, 0.0))
        pattern[:, k] = pat if name in ("top", "bottom", "hat", "bag", "socks") else 0
        freq[:, k] = 4.0 + 18.0 * u(f"{name}_freq")
        grain[:, k] = 0.05 + 0.12 * u(f"{name}_grain")
    jeans = (u("jeans") < 0.45) & (bottom_kind <= 2)
    denim = hsv_to_rgb(0.6 + 0.03 * u("denim_h"), 0.45 + 0.3 * u("denim_s"), 0.25 + 0.4 * u("denim_v"))
    c1[:, slot["bottom"]] = torch.where(jeans[:, None], denim, c1[:, slot["bottom"]])
    c2[:, slot["bottom"]] = torch.where(jeans[:, None], denim * 0.8, c2[:, slot["bottom"]])
    pattern[:, slot["bottom"]] = torch.where(jeans, 0, pattern[:, slot["bottom"]])
    grain[:, slot["bottom"]] = torch.where(jeans, 0.22, grain[:, slot["bottom"]])
    c1[:, slot["shoes"]] = c1[:, slot["shoes"]] * torch.where(u("shoe_dark") < 0.5, 0.4, 1.0)[:, None]
    materials = material_rows(c1, c2, pattern, freq, grain, spec)

    # --- pose ---------------------------------------------------------------------------------
    tab = _pose_tables(str(device))
    coef = tab["coef"][pose_class]  # [N,D,5]
    D = len(DOF_NAMES)
    phase = u("phase") * (2 * math.pi)
    from .ops import sincos
    s_l, c_l = sincos(phase)
    sided_right = torch.tensor([d.startswith("r_") for d in DOF_NAMES], device=device)
    s_d = torch.where(sided_right[None], -s_l[:, None], s_l[:, None])
    c_d = torch.where(sided_right[None], -c_l[:, None], c_l[:, None])
    noise = flat(rng.normal("human/dof", shp + (D,)))
    dofs = (coef[..., 0] + coef[..., 1] * noise + coef[..., 2] * s_d + coef[..., 3] * torch.clamp(c_d, min=0.0)
            + coef[..., 4] * torch.clamp(-s_d, min=0.0))
    # Arm gestures on top of calm poses, per arm.
    calm = torch.zeros_like(pose_class, dtype=torch.bool)
    for name in ("stand", "walk", "sit_chair", "sit_floor", "kneel", "crouch"):
        calm |= pose_class == _CLASS_INDEX[name]
    idx = {n: i for i, n in enumerate(DOF_NAMES)}
    for side in ("l_", "r_"):
        gest = calm & (u(f"gesture_{side}") < 0.3)
        for dof, lo, hi in (("shoulder_flex", -30, 170), ("shoulder_abd", -10, 160), ("shoulder_twist", -60, 60),
                            ("elbow_flex", 0, 145)):
            k = idx[side + dof]
            dofs[:, k] = torch.where(gest, lo + (hi - lo) * u(f"gesture_{side}{dof}"), dofs[:, k])
    # Mirror asymmetric poses half of the time.
    swap = u("swap_lr") < 0.5
    left_cols = torch.tensor([idx[d] for d in DOF_NAMES if d.startswith("l_")], device=device)
    right_cols = torch.tensor([idx["r_" + d[2:]] for d in DOF_NAMES if d.startswith("l_")], device=device)
    l_vals, r_vals = dofs[:, left_cols], dofs[:, right_cols]
    dofs[:, left_cols] = torch.where(swap[:, None], r_vals, l_vals)
    dofs[:, right_cols] = torch.where(swap[:, None], l_vals, r_vals)
    # Hips flex relative to the vertical: a forward-tilted pelvis keeps the legs upright.
    for side in ("l_", "r_"):
        dofs[:, idx[side + "hip_flex"]] = dofs[:, idx[side + "hip_flex"]] + dofs[:, idx["pelvis_tilt"]]
    dofs = torch.minimum(torch.maximum(dofs, tab["lo"]), tab["hi"])
    euler = _dof_to_euler(fig, dofs)
    euler = _hands(euler, fig, u, device)
    local_rot = euler_zxy(euler)

    # Body orientation presets: lying on the back, front or side.
    lie = pose_class == _CLASS_INDEX["lie"]
    lie_kind = u("lie_kind")
    pitch = torch.where(lie, torch.where(lie_kind < 0.5, -90.0, torch.where(lie_kind < 0.75, 90.0, 0.0)), 0.0)
    roll = torch.where(lie & (lie_kind >= 0.75), torch.where(u("lie_side") < 0.5, 90.0, -90.0), 0.0)
    root_pose = euler_zxy(torch.stack([deg(1.0) * pitch, zero, deg(1.0) * roll], dim=-1))
    return HumanParams(local_rot, gscale, rscale, features, role_cls, role_mat, role_lo, role_hi, materials, pose_class,
                       root_pose, height, dofs)


def _hands(euler: Tensor, fig: CompiledFigure, u, device: torch.device) -> Tensor:
    """Finger and thumb angles from a per-hand grip (open ... fist) and spread."""
    euler = euler.clone()
    rad = math.pi / 180.0
    for side in ("l", "r"):
        grip = u(f"grip_{side}")
        grip = grip * grip * (3 - 2 * grip)  # more open and closed hands than half-closed ones
        spread = u(f"spread_{side}")
        sgn = 1.0 if side == "l" else -1.0
        for k, (name, _, _, _, _) in enumerate(_FINGERS):
            jit = u(f"finger_{side}{k}", 3) - 0.5
            curl = torch.clamp(grip + 0.25 * jit[:, 0], 0.0, 1.0)
            j1, j2, j3 = (fig.joint_index[f"{side}_{name}{i}"] for i in (1, 2, 3))
            euler[:, j1, 0] = -(curl * 80.0 + 8 * jit[:, 1]) * rad
            euler[:, j1, 2] = sgn * (spread - 0.3) * (12.0 - 8.0 * k) * rad
            euler[:, j2, 0] = -(curl * 95.0) * rad
            euler[:, j3, 0] = -(curl * 65.0 + 6 * jit[:, 2]) * rad
        tj = u(f"thumb_{side}", 3)
        t1, t2, t3 = (fig.joint_index[f"{side}_thumb{i}"] for i in (1, 2, 3))
        euler[:, t1, 0] = -(grip * 25.0 + 15.0 * tj[:, 0]) * rad
        euler[:, t2, 0] = -(grip * 35.0 + 10.0 * tj[:, 1]) * rad
        euler[:, t3, 0] = -(grip * 45.0 + 15.0 * tj[:, 2]) * rad
    return euler
