"""Procedural quadrupeds (dog, cat, horse, cow, sheep, deer, zebra, bear-like) labelled with AP-10K's
17 keypoints.

Frame: the animal stands at the origin with its spine along +z (head forward), +y up, +x to its left.
Leg bones point along -y of their joint frames at rest. One skeleton covers every species; species
differ by scale groups (leg length, body length, neck, head, girth), ears, tail and coat.

Part classes reuse the Sapiens list so dense maps share one vocabulary: head and neck ->
``Face_Neck``, body and tail -> ``Torso``, front legs -> ``*_Upper_Arm`` / ``*_Lower_Arm`` /
``*_Hand`` (paw), hind legs -> ``*_Upper_Leg`` / ``*_Lower_Leg`` / ``*_Foot``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor

from .body import hsv_to_rgb, material_rows
from .classes import SAPIENS_PART_CLASSES
from .ops import euler_zxy, sincos
from .rng import Draws, Rng, choice_from
from .skeleton import CompiledFigure, FigureSpec, Joint, Keypoint, Part, mirror_x

__all__ = ["quadruped_spec", "compiled_quadruped", "sample_quadrupeds", "QUAD_MAT_SLOTS", "SPECIES"]

QUAD_MAT_SLOTS = ("fur", "belly", "dark", "eye", "hoof")
GROUPS = ("unit", "body", "neck", "head", "fleg", "hleg", "tail", "ear")
RGROUPS = ("unit", "girth", "neck", "head", "leg", "tail", "ear")
FEATURES = ("ears_up", "ears_down", "horns", "long_tail")

# name, AP-10K category id, probability, scales: body length, leg length, neck, head, girth, tail, ear
SPECIES = (
    ("dog", 8, 0.26, (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)),
    ("cat", 24, 0.14, (0.6, 0.55, 0.6, 0.62, 0.55, 1.1, 0.8)),
    ("horse", 21, 0.14, (2.3, 2.6, 2.6, 2.3, 2.2, 1.4, 1.0)),
    ("cow", 5, 0.12, (2.3, 1.7, 1.6, 2.0, 2.9, 1.3, 1.0)),
    ("sheep", 6, 0.1, (1.3, 1.2, 1.1, 1.2, 1.9, 0.4, 0.9)),
    ("deer", 17, 0.1, (1.7, 2.3, 2.2, 1.6, 1.4, 0.4, 1.3)),
    ("zebra", 22, 0.07, (2.1, 2.3, 2.2, 2.1, 2.0, 1.2, 1.1)),
    ("bear", 50, 0.07, (1.9, 1.3, 1.0, 1.9, 2.6, 0.2, 0.8)),
)


def _sided(items: list) -> list:
    return items + [mirror_x(i) for i in items]


def _joints() -> list[Joint]:
    center = [
        Joint("hips", None),
        Joint("spine", "hips", (0.0, 0.015, 0.24), "body"),
        Joint("chest", "spine", (0.0, 0.015, 0.24), "body"),
        Joint("neck", "chest", (0.0, 0.06, 0.12), "body"),
        Joint("head", "neck", (0.0, 0.16, 0.11), "neck"),
        Joint("tail1", "hips", (0.0, 0.05, -0.1), "body", rest=(-30.0, 0.0, 0.0)),
        Joint("tail2", "tail1", (0.0, 0.0, -0.16), "tail"),
    ]
    left = [
        Joint("l_shoulder", "chest", (0.085, -0.06, 0.02), "body"),
        Joint("l_elbow", "l_shoulder", (0.0, -0.19, -0.03), "fleg"),
        Joint("l_wrist", "l_elbow", (0.0, -0.19, 0.0), "fleg"),
        Joint("l_hip", "hips", (0.075, -0.04, -0.02), "body"),
        Joint("l_knee", "l_hip", (0.0, -0.19, 0.06), "hleg"),
        Joint("l_hock", "l_knee", (0.0, -0.19, -0.07), "hleg"),
    ]
    return center + _sided(left)


def _parts() -> list[Part]:
    P = lambda *a, **k: Part(*a, **{"mat": "fur", **k})  # every part is fur unless it says otherwise
    center = [
        P("rump", "hips", (0.0, 0.01, -0.06), (0.0, 0.02, 0.24), 0.115, 0.12, flat=(0.85, 1.0, 1.0), group="body",
             rgroup="girth", part="Torso"),
        P("barrel", "spine", (0.0, 0.0, 0.0), (0.0, 0.0, 0.26), 0.125, 0.14, flat=(0.85, 1.0, 1.0), group="body",
             rgroup="girth", part="Torso", mat="fur"),
        P("belly", "spine", (0.0, -0.05, 0.12), None, 0.12, flat=(0.82, 0.9, 1.6), group="body", rgroup="girth",
             part="Torso", mat="belly"),
        P("brisket", "chest", (0.0, -0.04, 0.03), None, 0.13, flat=(0.8, 1.0, 1.0), group="body", rgroup="girth",
             part="Torso"),
        P("neck", "neck", (0.0, 0.0, 0.0), (0.0, 0.15, 0.1), 0.075, 0.06, flat=(0.85, 1.0, 1.0), group="neck",
             rgroup="neck", part="Face_Neck"),
        P("skull", "head", (0.0, 0.03, 0.0), None, 0.075, flat=(0.9, 0.85, 1.1), group="head", rgroup="head",
             part="Face_Neck"),
        P("snout", "head", (0.0, 0.005, 0.05), (0.0, -0.015, 0.16), 0.05, 0.03, flat=(0.9, 0.9, 1.0), group="head",
             rgroup="head", part="Face_Neck"),
        P("nose_tip", "head", (0.0, -0.012, 0.185), None, 0.016, flat=(1.2, 0.9, 0.8), group="head", rgroup="head",
             part="Face_Neck", mat="dark"),
        P("tail_base", "tail1", (0.0, 0.0, 0.0), (0.0, 0.0, -0.16), 0.03, 0.02, group="tail", rgroup="tail",
             part="Torso"),
        P("tail_tip", "tail2", (0.0, 0.0, 0.0), (0.0, 0.0, -0.17), 0.02, 0.012, group="tail", rgroup="tail",
             part="Torso", feature="long_tail"),
    ]
    left = [
        P("l_ear_up", "head", (0.045, 0.085, -0.02), None, 0.04, flat=(0.35, 1.2, 0.7), group="head", rgroup="ear",
             part="Face_Neck", feature="ears_up"),
        P("l_ear_down", "head", (0.07, 0.03, -0.01), None, 0.045, flat=(0.3, 1.3, 0.8), group="head", rgroup="ear",
             part="Face_Neck", feature="ears_down"),
        P("l_horn", "head", (0.035, 0.09, -0.01), (0.09, 0.15, -0.05), 0.014, 0.006, group="head", rgroup="head",
             part="Face_Neck", mat="hoof", feature="horns"),
        P("l_eye", "head", (0.038, 0.04, 0.065), None, 0.012, group="head", rgroup="head", part="Face_Neck", mat="eye"),
        P("l_upper_fore", "l_shoulder", (0.0, 0.03, 0.0), (0.0, -0.19, -0.03), 0.06, 0.042, flat=(0.8, 1.0, 1.0),
             group="fleg", rgroup="leg", part="Left_Upper_Arm"),
        P("l_lower_fore", "l_elbow", (0.0, 0.0, 0.0), (0.0, -0.19, 0.0), 0.038, 0.028, group="fleg", rgroup="leg",
             part="Left_Lower_Arm"),
        P("l_fore_paw", "l_wrist", (0.0, -0.015, 0.0), (0.0, -0.045, 0.03), 0.028, 0.027, flat=(1.0, 0.8, 1.0),
             group="fleg", rgroup="leg", part="Left_Hand", mat="hoof"),
        P("l_thigh", "l_hip", (0.0, 0.03, -0.01), (0.0, -0.19, 0.06), 0.085, 0.05, flat=(0.75, 1.0, 1.0), group="hleg",
             rgroup="leg", part="Left_Upper_Leg"),
        P("l_shank", "l_knee", (0.0, 0.0, 0.0), (0.0, -0.19, -0.07), 0.045, 0.03, group="hleg", rgroup="leg",
             part="Left_Lower_Leg"),
        P("l_cannon", "l_hock", (0.0, 0.0, 0.0), (0.0, -0.12, 0.015), 0.028, 0.025, group="hleg", rgroup="leg",
             part="Left_Lower_Leg"),
        P("l_hind_paw", "l_hock", (0.0, -0.135, 0.02), (0.0, -0.14, 0.045), 0.028, 0.026, flat=(1.0, 0.8, 1.0),
             group="hleg", rgroup="leg", part="Left_Foot", mat="hoof"),
    ]
    return center + _sided(left)


def _keypoints() -> list[Keypoint]:
    return [
        Keypoint("left_eye", "head", (0.038, 0.04, 0.077), "head", 0.01, "head"),
        Keypoint("right_eye", "head", (-0.038, 0.04, 0.077), "head", 0.01, "head"),
        Keypoint("nose", "head", (0.0, -0.012, 0.197), "head", 0.01, "head"),
        Keypoint("neck", "neck", (0.0, 0.02, 0.0), "body", 0.1, "girth"),
        Keypoint("root_of_tail", "tail1", slack=0.05, rgroup="girth"),
        Keypoint("left_shoulder", "l_shoulder", slack=0.09, rgroup="girth"),
        Keypoint("left_elbow", "l_elbow", slack=0.05, rgroup="leg"),
        Keypoint("left_front_paw", "l_wrist", (0.0, -0.045, 0.015), "fleg", 0.04, "leg"),
        Keypoint("right_shoulder", "r_shoulder", slack=0.09, rgroup="girth"),
        Keypoint("right_elbow", "r_elbow", slack=0.05, rgroup="leg"),
        Keypoint("right_front_paw", "r_wrist", (0.0, -0.045, 0.015), "fleg", 0.04, "leg"),
        Keypoint("left_hip", "l_hip", slack=0.11, rgroup="girth"),
        Keypoint("left_knee", "l_knee", slack=0.06, rgroup="leg"),
        Keypoint("left_back_paw", "l_hock", (0.0, -0.135, 0.03), "hleg", 0.04, "leg"),
        Keypoint("right_hip", "r_hip", slack=0.11, rgroup="girth"),
        Keypoint("right_knee", "r_knee", slack=0.06, rgroup="leg"),
        Keypoint("right_back_paw", "r_hock", (0.0, -0.135, 0.03), "hleg", 0.04, "leg"),
    ]


@lru_cache(maxsize=1)
def quadruped_spec() -> FigureSpec:
    """The quadruped figure with AP-10K keypoints (in AP-10K order)."""
    return FigureSpec(joints=tuple(_joints()), parts=tuple(_parts()), keypoints=tuple(_keypoints()),
                      part_classes=SAPIENS_PART_CLASSES, mat_slots=QUAD_MAT_SLOTS, roles=(), features=FEATURES,
                      groups=GROUPS, rgroups=RGROUPS)


_COMPILED: dict[str, CompiledFigure] = {}


def compiled_quadruped(device: torch.device | str = "cpu") -> CompiledFigure:
    key = str(torch.device(device))
    if key not in _COMPILED:
        _COMPILED[key] = CompiledFigure(quadruped_spec(), device)
    return _COMPILED[key]


@dataclass
class QuadrupedParams:
    """Sampled animals (N = B*P), with the same fields the scene builder reads from people."""

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
    category: Tensor


# Pose classes: probability and per-joint-angle (mean, std, gait sin amplitude) in degrees.
_QUAD_CLASSES = ("stand", "walk", "run", "sit", "lie")
_QUAD_P = (0.3, 0.3, 0.15, 0.1, 0.15)
_QUAD_DRAWS = (("species", 1), ("size", 4), ("shape", 28), ("ears", 1), ("horns", 1), ("coat_h", 1), ("coat_s", 1),
               ("coat_v", 1), ("coat_pat", 1), ("coat_freq", 1), ("belly_v", 1), ("pose", 1), ("phase", 1),
               ("angles", 4 * 32), ("tail_up", 1))


def sample_quadrupeds(rng: Rng, num_slots: int, device: torch.device) -> QuadrupedParams:
    """Sample ``num_slots`` animals per image for every image of ``rng``."""
    fig = compiled_quadruped(device)
    B, P = rng.batch_size, num_slots
    N = B * P
    d = Draws(rng, "quadruped", (P,), _QUAD_DRAWS)
    flat = lambda t: t.reshape(N, *t.shape[2:])
    u = lambda name: flat(d.u(name))
    species = choice_from(u("species"), [s[2] for s in SPECIES])
    table = torch.tensor([s[3] for s in SPECIES], device=device)[species]  # [N,7]
    cat_ids = torch.tensor([s[1] for s in SPECIES], device=device)[species]
    size = torch.clamp(1.0 + 0.1 * flat(d.normals("size"))[:, 0], 0.75, 1.3)
    var = 1.0 + 0.05 * flat(d.normals("shape"))  # [N,7]
    body, leg, neck, head, girth, tail, ear = (table[:, i] * var[:, i] * size for i in range(7))
    ones = torch.ones_like(size)
    g = {"unit": (ones, ones, ones), "body": (girth, body, body), "neck": (neck, neck, neck), "head": (head, head, head),
         "fleg": (leg, leg, leg), "hleg": (leg, leg, leg), "tail": (tail, tail, tail), "ear": (ear, ear, ear)}
    gscale = torch.stack([torch.stack(g[n], dim=-1) for n in GROUPS], dim=1)
    r = {"unit": ones, "girth": girth, "neck": 0.5 * (neck + girth), "head": head, "leg": 0.5 * (leg + girth),
         "tail": 0.5 * (tail + girth), "ear": ear}
    rscale = torch.stack([r[n] for n in RGROUPS], dim=1)
    name_of = [s[0] for s in SPECIES]
    is_ = lambda *names: torch.zeros_like(species, dtype=torch.bool) | sum(
        (species == name_of.index(n)).to(torch.int64) for n in names).to(torch.bool)
    ears_up = is_("cat", "horse", "deer", "zebra", "bear") | (is_("dog") & (u("ears") < 0.55))
    horns = is_("cow", "sheep") & (u("horns") < 0.5) | is_("deer") & (u("horns") < 0.4)
    features = torch.stack([ears_up, ~ears_up, horns, ~is_("bear", "deer", "sheep")], dim=-1)
    # Coat colours.
    S = len(QUAD_MAT_SLOTS)
    hue = 0.05 + 0.07 * u("coat_h")
    sat = 0.2 + 0.6 * u("coat_s")
    val = 0.12 + 0.75 * u("coat_v")
    fur = hsv_to_rgb(hue, sat, val)
    fur = torch.where(is_("zebra")[:, None], torch.tensor([0.92, 0.91, 0.88], device=device), fur)
    fur = torch.where(is_("sheep")[:, None], hsv_to_rgb(hue, 0.15 * sat, 0.7 + 0.25 * val), fur)
    c1 = torch.zeros(N, S, 3, device=device)
    c2 = torch.zeros(N, S, 3, device=device)
    c1[:, 0] = fur
    c2[:, 0] = torch.where(is_("zebra")[:, None], torch.tensor([0.05, 0.05, 0.05], device=device), fur * 0.35 + 0.6 * (u("coat_pat") < 0.5)[:, None])
    c1[:, 1] = fur * (0.8 + 0.5 * u("belly_v"))[:, None]
    c1[:, 2] = torch.tensor([0.06, 0.05, 0.05], device=device)
    c1[:, 3] = torch.tensor([0.04, 0.03, 0.02], device=device)
    c1[:, 4] = fur * 0.45
    pattern = torch.zeros(N, S, dtype=torch.int64, device=device)
    spotted = is_("cow", "dog") & (u("coat_pat") < 0.35)
    pattern[:, 0] = torch.where(is_("zebra"), 3, torch.where(spotted, 2, 0))  # fine stripes would alias
    freq = torch.zeros(N, S, device=device)
    freq[:, 0] = torch.where(is_("zebra"), 9.0 + 5.0 * u("coat_freq"), 2.5 + 2.0 * u("coat_freq"))
    grain = torch.full((N, S), 0.15, device=device)
    spec = torch.full((N, S), 0.05, device=device)
    spec[:, 3] = 0.6
    materials = material_rows(c1, c2, pattern, freq, grain, spec)
    # Pose: per-joint Euler angles (degrees) from the class table plus a gait phase.
    pose_class = choice_from(u("pose"), _QUAD_P)
    phase = u("phase") * (2 * math.pi)
    s_ph, c_ph = sincos(phase)
    s_op, c_op = -s_ph, -c_ph  # opposite legs
    s_q, c_q = c_ph, -s_ph  # quarter phase for the hind legs
    noise = flat(d.normals("angles"))  # [N,32]
    J = fig.num_joints
    euler = torch.zeros(N, J, 3, device=device)
    ji = fig.joint_index
    cls = [pose_class == i for i in range(len(_QUAD_CLASSES))]
    walk, run, sit = cls[1], cls[2], cls[3]
    amp = torch.where(run, 40.0, torch.where(walk, 22.0, 0.0))
    sel = lambda *pairs: sum(torch.where(c, torch.tensor(float(v), device=device), 0.0) for c, v in zip(cls, pairs))
    rad = math.pi / 180.0
    # Legs: swing about x (negative = forward for a leg hanging down).
    legs = (("l_shoulder", "l_elbow", "l_wrist", s_ph, c_ph, 1.0), ("r_shoulder", "r_elbow", "r_wrist", s_op, c_op, 1.0),
            ("l_hip", "l_knee", "l_hock", s_q, c_q, -1.0), ("r_hip", "r_knee", "r_hock", -s_q, -c_q, -1.0))
    k = 0
    for top, mid, low, s_leg, c_leg, front in legs:
        is_front = front > 0
        base_top = sel(0, 0, 0, -40 if is_front else 75, -75 if is_front else 80)
        base_mid = sel(0, 0, 0, 5 if is_front else -100, 100 if is_front else -110)
        base_low = sel(0, 0, 0, 0 if is_front else 40, -80 if is_front else 40)
        euler[:, ji[top], 0] = (base_top - amp * s_leg + 6.0 * noise[:, k]) * rad
        flex = torch.clamp(c_leg, min=0.0) * amp * 1.2
        euler[:, ji[mid], 0] = (base_mid + (flex if is_front else -flex) + 5.0 * noise[:, k + 1]) * rad
        euler[:, ji[low], 0] = (base_low + (flex * 0.8 if is_front else flex * 0.6) + 5.0 * noise[:, k + 2]) * rad
        euler[:, ji[top], 2] = (3.0 * noise[:, k + 3]) * rad * (1.0 if top.startswith("l_") else -1.0)
        k += 4
    euler[:, ji["neck"], 0] = (sel(-10, -5, 5, -25, 10) + 15.0 * noise[:, 20]) * rad
    euler[:, ji["neck"], 1] = (20.0 * noise[:, 21]) * rad
    euler[:, ji["head"], 0] = (sel(35, 35, 25, 40, 20) + 12.0 * noise[:, 22]) * rad
    euler[:, ji["head"], 1] = (15.0 * noise[:, 23]) * rad
    euler[:, ji["spine"], 0] = (3.0 * noise[:, 24]) * rad
    euler[:, ji["spine"], 1] = (8.0 * noise[:, 25]) * rad
    euler[:, ji["chest"], 1] = (8.0 * noise[:, 26]) * rad
    tail_up = (u("tail_up") - 0.5) * 80.0
    euler[:, ji["tail1"], 0] = (tail_up + 10.0 * noise[:, 27]) * rad
    euler[:, ji["tail1"], 1] = (25.0 * noise[:, 28]) * rad
    euler[:, ji["tail2"], 0] = (15.0 * noise[:, 29]) * rad
    # Sitting tilts the body up at the front; lying lowers it (the legs fold under).
    pitch = torch.where(sit, -35.0, 0.0) + 3.0 * noise[:, 30]
    root_pose = euler_zxy(torch.stack([pitch * rad, torch.zeros_like(pitch), (2.0 * noise[:, 31]) * rad], dim=-1))
    local_rot = euler_zxy(euler)
    height = 0.55 * leg + 0.3 * girth
    empty_i = torch.zeros(N, 1, dtype=torch.int64, device=device)  # one unused clothing role
    empty_f = torch.zeros(N, 1, device=device)
    return QuadrupedParams(local_rot, gscale, rscale, features, empty_i, empty_i, empty_f, empty_f, materials, pose_class,
                           root_pose, height, cat_ids)

