"""Solid primitives and their exact ray intersections (batched torch, no host syncs).

Two kinds of primitive cover every body part and prop:

* **round cone** (kind 0): the convex hull of two spheres (centre ``a``, radius ``ra``; centre ``b``,
  radius ``rb``). With ``a == b`` it is a sphere, with ``ra == rb`` a capsule.
* **box** (kind 1): the cube ``[-1, 1]^3``.

Each lives in its own *shape space* and is placed in the world by a rotation, a per-axis scale and a
position: ``x_world = rot @ (scale * q) + pos``. The scale squashes spheres into ellipsoids and
capsules into flattened limbs (a torso, a palm, a foot), so one intersection routine draws them all.
For body parts ``rot``/``pos`` are the joint's world frame, so ``scale * q`` is the hit point in joint
coordinates, which the shader uses for sleeves, stripes and other solid textures.

Rays start at the camera centre and are parametrized by camera depth: ``x_cam = t * d`` with
``d = ((u - cx) / fx, (v - cy) / fy, 1)``, so every ``t`` returned here is the camera-space z of the
hit. In shape space the ray is ``q = o + t * q_d``; the quadratic below is the round-cone intersection
written for a non-normalized direction, so it needs neither a square root per ray nor a division by
the ray length.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Sequence

import torch
from torch import Tensor

from .ops import dot3, matmul3, matvec3, transpose3

__all__ = ["CONE", "BOX", "NEAR", "Prims", "CameraPrims", "to_camera", "cone_constants", "cone_hit", "box_hit",
           "shape_bounds"]

CONE, BOX = 0, 1
NEAR = 0.02  # hits closer than this camera depth (m) are ignored
INF = float("inf")


@dataclass
class Prims:
    """A flat list of primitives for a batch of images (world space) with their labels.

    Geometry: ``image`` [M] batch index, ``kind`` [M] (CONE/BOX), ``rot`` [M,3,3], ``scale`` [M,3],
    ``pos`` [M,3]; cone shape ``a``, ``b`` [M,3], ``ra``, ``rb`` [M] (ignored by boxes).
    Labels: ``instance`` [M] (0 = scenery, k = k-th person/animal of the image, 1-based), ``part``
    [M] body-part class of bare skin/fur, ``mat`` [M] material index, two clothing layers (``layer_cls``,
    ``layer_mat``, ``layer_lo``, ``layer_hi`` [M,2]) that cover the part where ``layer_lo <= s <
    layer_hi`` with ``s = dot(hit_in_joint_frame, s_axis) + s_off`` (0 at the joint, 1 at its child).
    """

    image: Tensor
    kind: Tensor
    rot: Tensor
    scale: Tensor
    pos: Tensor
    a: Tensor
    b: Tensor
    ra: Tensor
    rb: Tensor
    instance: Tensor
    part: Tensor
    mat: Tensor
    layer_cls: Tensor
    layer_mat: Tensor
    layer_lo: Tensor
    layer_hi: Tensor
    s_axis: Tensor
    s_off: Tensor

    def __len__(self) -> int:
        return int(self.image.shape[0])

    @staticmethod
    def cat(items: Sequence["Prims"]) -> "Prims":
        return Prims(**{f.name: torch.cat([getattr(p, f.name) for p in items]) for f in fields(Prims)})

    def select(self, index: Tensor) -> "Prims":
        return Prims(**{f.name: getattr(self, f.name)[index] for f in fields(Prims)})


@dataclass
class CameraPrims:
    """Per-primitive quantities in camera space, shared by the pixel and the keypoint ray casts.

    ``cam_rot`` [M,3,3] maps shape-space directions (after ``scale``) to camera space; ``origin`` [M,3]
    is the camera centre in shape space; ``pix`` [M,3,3] maps a pixel ``(u, v, 1)`` to the shape-space
    ray direction ``q_d`` (columns: u, v, 1).
    """

    cam_rot: Tensor
    cam_pos: Tensor
    origin: Tensor
    pix: Tensor


def to_camera(prims: Prims, cam_R: Tensor, cam_t: Tensor, intr: Tensor) -> CameraPrims:
    """Express primitives in camera space. ``cam_R`` [B,3,3], ``cam_t`` [B,3] (x_cam = R x + t),
    ``intr`` [B,4] = (fx, fy, cx, cy)."""
    R = cam_R[prims.image]
    rot_c = matmul3(R, prims.rot)
    pos_c = matvec3(R, prims.pos) + cam_t[prims.image]
    inv_scale = 1.0 / prims.scale
    rot_t = transpose3(rot_c)
    origin = -matvec3(rot_t, pos_c) * inv_scale
    fx, fy, cx, cy = intr[prims.image].unbind(-1)
    # q_d = diag(1/s) rot_c^T K^-1 (u, v, 1); K^-1 = [[1/fx, 0, -cx/fx], [0, 1/fy, -cy/fy], [0, 0, 1]].
    col_u = rot_t[..., :, 0] / fx[:, None]
    col_v = rot_t[..., :, 1] / fy[:, None]
    col_1 = rot_t[..., :, 2] - rot_t[..., :, 0] * (cx / fx)[:, None] - rot_t[..., :, 1] * (cy / fy)[:, None]
    pix = torch.stack([col_u, col_v, col_1], dim=-1) * inv_scale[..., None]
    return CameraPrims(rot_c, pos_c, origin, pix)


def cone_constants(origin: Tensor, a: Tensor, b: Tensor, ra: Tensor, rb: Tensor) -> dict[str, Tensor]:
    """Per-primitive terms of the round-cone quadratic that do not depend on the ray direction.

    For spheres (``a == b``) ``d2`` is set to -1 so the lateral-surface branch never fires.
    """
    ba = b - a
    oa = origin - a
    ob = origin - b
    m0 = dot3(ba, ba)
    m1 = dot3(ba, oa)
    m5 = dot3(oa, oa)
    m7 = dot3(ob, ob)
    rr = ra - rb
    d2 = m0 - rr * rr
    k0 = d2 * m5 - m1 * m1 + 2.0 * m1 * rr * ra - m0 * ra * ra
    return {
        "ba": ba, "oa": oa, "ob": ob, "d2": torch.where(m0 > 1e-12, d2, -1.0), "k0": k0, "cy": m1 - rr * ra,
        "ea": m5 - ra * ra, "eb": m7 - rb * rb,
    }


def cone_hit(g2: Tensor, g3: Tensor, g6: Tensor, dd: Tensor, d2: Tensor, k0: Tensor, cy: Tensor, ea: Tensor,
             eb: Tensor) -> Tensor:
    """Nearest camera depth of a round cone along rays (``inf`` where missed).

    ``g2 = ba . q_d``, ``g3 = oa . q_d``, ``g6 = ob . q_d``, ``dd = q_d . q_d`` per ray; the rest are
    :func:`cone_constants` broadcast to the rays. The lateral surface solves
    ``k2 t^2 + 2 k1 t + k0 = 0`` (the classic round-cone quadratic in unnormalized form). Where its
    near root lies before ``a`` along the axis (``y <= 0``) the ray can only enter through the sphere
    at ``a``, past ``b`` only through the sphere at ``b``, so one sphere test suffices.
    """
    # In-place ops where a temporary is not needed again: fewer ray-sized allocations, same values.
    k2 = d2 * dd - g2 * g2
    k1 = d2 * g3 - cy * g2
    h = k1 * k1 - k0 * k2
    root = torch.clamp(h, min=0.0).sqrt_()
    t_body = torch.where(k2 > 0, (k1 + root).neg_(), root - k1).div_(k2)
    y = cy + t_body * g2
    body = (h >= 0).logical_and_(y > 0).logical_and_(y < d2)
    cap_a = y <= 0
    g = torch.where(cap_a, g3, g6)
    hc = g * g - dd * torch.where(cap_a, ea, eb)
    t_cap = (g + torch.clamp(hc, min=0.0).sqrt_()).neg_().div_(dd)
    t = torch.where(body, t_body, torch.where(hc >= 0, t_cap, INF))
    return torch.where(t > NEAR, t, INF)


def box_hit(ox: Tensor, oy: Tensor, oz: Tensor, dx: Tensor, dy: Tensor, dz: Tensor) -> Tensor:
    """Nearest camera depth of the cube [-1, 1]^3 along rays ``o + t d`` (``inf`` where missed)."""
    tnear = torch.full_like(dx, -INF)
    tfar = torch.full_like(dx, INF)
    for o, d in ((ox, dx), (oy, dy), (oz, dz)):
        inv = 1.0 / d  # d == 0 gives +-inf slabs, which the min/max logic handles
        t1 = (-1.0 - o) * inv
        t2 = (1.0 - o) * inv
        tnear = torch.maximum(tnear, torch.minimum(t1, t2))
        tfar = torch.minimum(tfar, torch.maximum(t1, t2))
    return torch.where((tnear <= tfar) & (tnear > NEAR), tnear, INF)


def shape_bounds(prims: Prims) -> tuple[Tensor, Tensor]:
    """Shape-space axis-aligned bounds (lo, hi) [M,3] of every primitive."""
    r_a, r_b = prims.ra[:, None], prims.rb[:, None]
    lo = torch.minimum(prims.a - r_a, prims.b - r_b)
    hi = torch.maximum(prims.a + r_a, prims.b + r_b)
    is_box = (prims.kind == BOX)[:, None]
    return torch.where(is_box, -1.0, lo), torch.where(is_box, 1.0, hi)

